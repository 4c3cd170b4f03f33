"""Labels through a real project: answers CSVs (all or nothing), "none of these", the validation set, and
the first query before any model (random, read-only)."""

from __future__ import annotations

import csv
import math
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from store_checks import label_history

from alwb.errors import AlwbError, EmptyPoolError, LabelError
from alwb.project import NONE_LABEL, Project, draw_validation

N_IMAGES = 20
PROPS = settings(deadline=None, max_examples=30, derandomize=True, database=None)


# ---------------------------------------------------------------------------- helpers
def make_images(folder: Path, n: int = N_IMAGES, seed: int = 0) -> list[Path]:
    """``n`` distinct 16x16 random RGB PNGs in a flat folder."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        px = rng.integers(0, 256, size=(16, 16, 3), dtype=np.uint8)
        p = folder / f"img_{i:02d}.png"
        Image.fromarray(px, "RGB").save(p)
        paths.append(p)
    return paths


def write_csv(path: Path, header: list[str], rows: list[list[object]]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)
    return path


def dump(project: Project) -> list[str]:
    """Every table's content, through a separate plain connection."""
    con = sqlite3.connect(project.store.path)
    try:
        return list(con.iterdump())
    finally:
        con.close()


def label_rows(project: Project) -> int:
    return project.store.con.execute("SELECT COUNT(*) FROM labels").fetchone()[0]


def path_of(project: Project, item_id: int) -> str:
    return project.store.item(item_id)["path"]


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("images") / "imgs"
    make_images(d)
    return d


@pytest.fixture
def project(tmp_path: Path, image_dir: Path) -> Project:
    p = Project.create(tmp_path / "p", classes=["cat", "dog"])
    report = p.add_images(image_dir, progress=False, workers=1)
    assert report.added == N_IMAGES and not report.rejected
    yield p
    p.close()


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory, image_dir: Path) -> Project:
    """A project for tests that must not change it."""
    p = Project.create(tmp_path_factory.mktemp("shared") / "p", classes=["cat", "dog"])
    p.add_images(image_dir, progress=False, workers=1)
    yield p
    p.close()


# ---------------------------------------------------------------------------- the project under test
def test_images_are_ingested_and_validation_is_drawn(project: Project, image_dir: Path) -> None:
    st_ = project.store
    assert st_.item_count() == N_IMAGES
    assert {Path(r["path"]) for r in st_.items()} == {p.resolve() for p in image_dir.iterdir()}
    target = project.validation_target()
    assert target == 10  # 10% of 20 is below the floor of 10, and at most half the items
    val = sorted(st_.val_item_ids())
    assert len(val) == target
    assert set(val) <= set(st_.item_ids())
    assert len(st_.unlabeled_item_ids(split="pool")) == N_IMAGES - target
    # a random draw, not the first or last items
    ids = st_.item_ids()
    assert val != ids[:target] and val != ids[-target:]
    # the library's draw rule, seeded by the project's seed, over every item (none was labeled yet)
    assert val == sorted(draw_validation(ids, target, project.config.seed).tolist())
    # topping up again does nothing
    assert project.ensure_validation() == 0
    assert sorted(st_.val_item_ids()) == val


def test_validation_draw_is_reproducible(tmp_path: Path, image_dir: Path) -> None:
    drawn = []
    for name in ("a", "b"):
        with Project.create(tmp_path / name, classes=["cat", "dog"]) as p:
            p.add_images(image_dir, progress=False, workers=1)
            drawn.append(sorted(Path(p.store.item(i)["path"]).name for i in p.store.val_item_ids()))
    assert drawn[0] == drawn[1]


def test_validation_respects_the_size_setting(tmp_path: Path, image_dir: Path) -> None:
    with Project.create(tmp_path / "p", classes=["cat", "dog"]) as p:
        p.set_config(val_size=4)
        p.add_images(image_dir, progress=False, workers=1)
        assert len(p.store.val_item_ids()) == 4
        p.set_config(val_size=6)
        assert p.ensure_validation() == 2
        assert len(p.store.val_item_ids()) == 6


def test_validation_never_takes_human_labeled_items(tmp_path: Path, image_dir: Path) -> None:
    with Project.create(tmp_path / "p", classes=["cat", "dog"]) as p:
        p.set_config(val_size=2)
        p.add_images(image_dir, progress=False, workers=1)
        pool = p.store.unlabeled_item_ids(split="pool")
        p.label([(i, "cat") for i in pool])
        p.set_config(val_size=10)
        assert p.ensure_validation() == 0
        assert not set(p.store.val_item_ids()) & set(pool)


# ---------------------------------------------------------------------------- answers CSV
def test_label_file_by_absolute_path(project: Project, tmp_path: Path) -> None:
    ids = project.store.item_ids()[:4]
    rows = [[path_of(project, i), c] for i, c in zip(ids, ["cat", "dog", "dog", "cat"], strict=True)]
    f = write_csv(tmp_path / "answers.csv", ["path", "label"], rows)
    batch, n = project.label_file(f, annotator="ann")
    assert n == 4 and batch
    cur = {r["item_id"]: (r["class"], r["source"], r["annotator"]) for r in project.store.current_labels()}
    assert cur == {i: (c, "human", "ann") for i, c in zip(ids, ["cat", "dog", "dog", "cat"], strict=True)}
    # undo the whole file
    assert project.undo(batch) == 4
    assert project.store.current_labels(include_none=True) == []


def test_label_file_by_path_relative_to_the_csv(
    project: Project, image_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # relative paths are read from the CSV's folder, not the working directory
    csv_dir = image_dir.parent
    ids = project.store.item_ids()[5:8]
    rows = [[str(Path(path_of(project, i)).relative_to(csv_dir.resolve())), "dog"] for i in ids]
    assert all(not Path(r[0]).is_absolute() for r in rows)
    f = write_csv(csv_dir / f"answers_{tmp_path.name}.csv", ["Path", " LABEL "], rows)  # header case/space
    try:
        _, n = project.label_file(f)
    finally:
        f.unlink()
    assert n == 3
    assert sorted(r["item_id"] for r in project.store.current_labels()) == sorted(ids)


def test_label_file_by_id(project: Project, tmp_path: Path) -> None:
    ids = project.store.item_ids()
    f = write_csv(tmp_path / "a.csv", ["id", "label"], [[ids[0], "cat"], [ids[1], "dog"], [f" {ids[2]} ", "cat"]])
    _, n = project.label_file(f)
    assert n == 3
    # relabel one item, keep one, through a second file: only the change counts
    f2 = write_csv(tmp_path / "b.csv", ["id", "label"], [[ids[0], "dog"], [ids[1], "dog"]])
    _, n2 = project.label_file(f2)
    assert n2 == 1
    assert [h["class"] for h in label_history(project.store, ids[0])] == ["cat", "dog"]


def test_label_file_with_utf8_bom(project: Project, tmp_path: Path) -> None:
    ids = project.store.item_ids()
    f = tmp_path / "bom.csv"
    f.write_text(f"id,label\r\n{ids[0]},cat\r\n", encoding="utf-8-sig")
    assert project.label_file(f)[1] == 1


def _good_rows(project: Project) -> list[list[object]]:
    ids = project.store.item_ids()
    return [[ids[i], ["cat", "dog"][i % 2]] for i in range(6)]


BAD_ROWS = {
    "unknown class": lambda p: [p.store.item_ids()[10], "cow"],
    "empty label": lambda p: [p.store.item_ids()[10], "  "],
    "unknown id": lambda p: [999_999, "cat"],
    "non-numeric id": lambda p: ["seven", "cat"],
    "negative id": lambda p: ["-3", "cat"],
    "huge id": lambda p: ["99999999999999999999999", "cat"],
    "duplicate item": lambda p: [p.store.item_ids()[0], "dog"],
}


def _assert_refused(project: Project, f: Path, line: int) -> None:
    before = dump(project)
    n_labels = label_rows(project)
    with pytest.raises(LabelError) as exc:
        project.label_file(f)
    msg = str(exc.value)
    assert f"line {line}:" in msg, msg
    assert "nothing written" in msg
    assert label_rows(project) == n_labels
    assert dump(project) == before
    assert not project.store.con.in_transaction


@pytest.mark.parametrize("kind", sorted(BAD_ROWS))
def test_label_file_one_bad_row_by_id_writes_nothing(shared: Project, tmp_path: Path, kind: str) -> None:
    rows = _good_rows(shared)
    rows.insert(3, BAD_ROWS[kind](shared))  # data line 4 = file line 5
    f = write_csv(tmp_path / "answers.csv", ["id", "label"], rows)
    _assert_refused(shared, f, 5)


@pytest.mark.parametrize("kind", ["unknown path", "unknown class", "empty label", "duplicate item", "no path"])
def test_label_file_one_bad_row_by_path_writes_nothing(shared: Project, tmp_path: Path, kind: str) -> None:
    paths = [path_of(shared, i) for i in shared.store.item_ids()]
    rows: list[list[object]] = [[paths[i], ["cat", "dog"][i % 2]] for i in range(5)]
    bad = {
        "unknown path": [str(tmp_path / "missing.png"), "cat"],
        "unknown class": [paths[12], "Cat"],
        "empty label": [paths[12], ""],
        "duplicate item": [paths[1], "cat"],
        "no path": ["", "cat"],
    }[kind]
    rows.append(bad)  # file line 7
    f = write_csv(tmp_path / "answers.csv", ["path", "label"], rows)
    _assert_refused(shared, f, 7)


def test_label_file_reports_every_bad_line(shared: Project, tmp_path: Path) -> None:
    ids = shared.store.item_ids()
    rows = [[ids[0], "cat"], [ids[1], "cow"], [ids[2], "dog"], ["x", "dog"], [ids[0], "dog"]]
    f = write_csv(tmp_path / "answers.csv", ["id", "label"], rows)
    with pytest.raises(LabelError) as exc:
        shared.label_file(f)
    for line in (3, 5, 6):
        assert f"line {line}:" in str(exc.value)
    assert "line 2:" not in str(exc.value) and "line 4:" not in str(exc.value)


def test_label_file_superscript_digit_id_is_a_bad_line(shared: Project, tmp_path: Path) -> None:
    f = write_csv(tmp_path / "answers.csv", ["id", "label"], [[shared.store.item_ids()[0], "cat"], ["\u00b2", "cat"]])
    _assert_refused(shared, f, 3)


@pytest.mark.parametrize(
    ("header", "rows", "match"),
    [
        (["id", "class"], [["1", "cat"]], "needs a 'label' column"),
        (["file", "label"], [["a.png", "cat"]], "needs a 'label' column"),
        (["id", "label"], [], "no answers"),
    ],
)
def test_label_file_malformed(shared: Project, tmp_path: Path, header: list[str], rows: list, match: str) -> None:
    f = write_csv(tmp_path / "answers.csv", header, rows)
    before = dump(shared)
    with pytest.raises(LabelError, match=match):
        shared.label_file(f)
    assert dump(shared) == before


def test_label_file_missing_file(shared: Project, tmp_path: Path) -> None:
    with pytest.raises(LabelError, match="cannot read"):
        shared.label_file(tmp_path / "nope.csv")


@PROPS
@given(
    st.integers(0, 7),
    st.sampled_from(sorted(BAD_ROWS)),
    st.lists(st.sampled_from(["cat", "dog", NONE_LABEL]), min_size=7, max_size=7),
)
def test_label_file_any_single_bad_row_is_refused(shared: Project, pos: int, kind: str, labels: list[str]) -> None:
    ids = shared.store.item_ids()
    rows: list[list[object]] = [[ids[i + 1], c] for i, c in enumerate(labels)]
    bad = BAD_ROWS[kind](shared)
    if kind == "duplicate item":
        bad = [rows[0][0], "cat"]
    rows.insert(pos, bad)
    line = pos + 2
    if kind == "duplicate item" and pos == 0:
        line = 3  # the second occurrence is the bad one
    f = shared.root / "prop_answers.csv"
    write_csv(f, ["id", "label"], rows)
    _assert_refused(shared, f, line)


# ---------------------------------------------------------------------------- "none of these"
def test_none_of_these_is_an_answer_but_not_a_class_label(project: Project, tmp_path: Path) -> None:
    ids = project.store.item_ids()
    f = write_csv(tmp_path / "a.csv", ["id", "label"], [[ids[0], NONE_LABEL], [ids[1], "cat"]])
    batch, n = project.label_file(f)
    assert n == 2
    row = project.store.con.execute(
        "SELECT class_id FROM labels WHERE item_id=? AND superseded_at IS NULL", (ids[0],)
    ).fetchone()
    assert row["class_id"] is None
    assert [r["item_id"] for r in project.store.current_labels()] == [ids[1]]
    assert {r["item_id"]: r["class"] for r in project.store.current_labels(include_none=True)} == {
        ids[0]: None,
        ids[1]: "cat",
    }
    counts = project.store.label_counts()
    assert sum(sum(v.values()) for v in counts.values()) == 1
    assert counts["cat"] == {"human": 1}
    assert ids[0] in project.store.labeled_item_ids()
    assert ids[0] not in project.store.unlabeled_item_ids(split=None)
    status = project.status()["items"]
    assert status["none_of_these"] == 1 and status["labeled"] == 2
    # "none of these" then a class is a change, kept in the history
    f2 = write_csv(tmp_path / "b.csv", ["id", "label"], [[ids[0], "dog"]])
    assert project.label_file(f2)[1] == 1
    assert [h["class"] for h in label_history(project.store, ids[0])] == [None, "dog"]


def test_label_api_refuses_unknown_items_and_classes(project: Project) -> None:
    ids = project.store.item_ids()
    before = dump(project)
    with pytest.raises(LabelError):
        project.label([(ids[0], "cat"), (999_999, "cat")])
    with pytest.raises(LabelError):
        project.label([(ids[0], "cat"), (ids[1], "cow")])
    assert dump(project) == before
    batch, n = project.label([(ids[0], "cat"), (ids[1], None)], batch_id="mine")
    assert (batch, n) == ("mine", 2)


# ---------------------------------------------------------------------------- the first query
def test_query_before_any_model_is_random_and_read_only(shared: Project) -> None:
    cfg = shared.config
    assert cfg.strategy != "random"
    n = 8
    before = dump(shared)
    changes = shared.store.con.total_changes
    res = shared.query(n)
    assert shared.store.con.total_changes == changes
    assert dump(shared) == before

    assert res.round == 0 and res.strategy == cfg.strategy
    # the default (auto) starts with typical items where the images' features will exist, else with margin sampling:
    # either way nothing is there yet to choose by, so the batch is random and the note says what is missing
    missing = "no features yet" if shared.auto_strategy() == "typiclust" else "no model yet"
    assert res.note is not None and missing in res.note and "random" in res.note
    assert len(res.items) == n
    ids = [i.id for i in res.items]
    assert len(set(ids)) == len(ids)
    val = set(shared.store.val_item_ids())
    k_val = sum(1 for i in res.items if i.reason == "validation")
    assert 1 <= k_val <= math.ceil(n * cfg.val_share)
    for item in res.items:
        assert item.reason in ("random", "validation")
        assert (item.id in val) == (item.reason == "validation")
        assert item.score is None and item.predicted is None and item.probability is None
        assert item.path == path_of(shared, item.id)
    assert res.to_dict()["items"][0]["id"] == res.items[0].id
    # seeded: the same call gives the same answer
    assert [i.id for i in shared.query(n).items] == ids


@pytest.mark.parametrize("strategy", ["entropy", "margin", "least-confidence", "random"])
@pytest.mark.parametrize("n", [1, 3, 16, 40])
def test_query_sizes_and_shares(shared: Project, strategy: str, n: int) -> None:
    n_val = len(shared.store.unlabeled_item_ids(split="val"))
    n_pool = len(shared.store.unlabeled_item_ids(split="pool"))
    res = shared.query(n, strategy)
    ids = [i.id for i in res.items]
    assert len(ids) == len(set(ids))
    # validation items take ceil(n * val_share) places, more when the pool runs short; the rest is from the pool
    expect_val = min(n_val, max(math.ceil(n * shared.config.val_share), n - n_pool))
    expect_pool = min(n - expect_val, n_pool)
    assert sum(1 for i in res.items if i.reason == "validation") == expect_val
    assert sum(1 for i in res.items if i.reason == "random") == expect_pool
    assert len(ids) == expect_val + expect_pool == min(n, n_val + n_pool)
    # the note says when the strategy could not be used
    assert (res.note is not None) == (strategy != "random" and expect_pool > 0)


def test_query_excludes_and_runs_out(project: Project) -> None:
    everything = project.store.item_ids()
    res = project.query(5, exclude=everything[:-3])
    assert {i.id for i in res.items} <= set(everything[-3:])
    assert len(res.items) == 3
    with pytest.raises(EmptyPoolError):
        project.query(5, exclude=everything)
    project.label([(i, "cat") for i in everything])
    with pytest.raises(EmptyPoolError):
        project.query(5)


def test_query_refuses_bad_arguments(shared: Project) -> None:
    with pytest.raises(AlwbError, match="unknown strategy"):
        shared.query(4, "bald")
    with pytest.raises(AlwbError):
        shared.query(-1)


def test_labeled_items_are_not_queried_again(project: Project) -> None:
    first = project.query(6)
    project.label([(i.id, "cat") for i in first.items])
    second = project.query(6)
    assert not {i.id for i in first.items} & {i.id for i in second.items}


def test_a_large_pool_is_scored_through_a_new_random_sample_each_round(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``score_limit``: every labeled and validation item is scored, plus a fresh random sample of the unlabeled
    pool and the fixed stop set (each no larger than the limit); queries and pseudo-labels choose among the scored
    items only, without a "not scored" note."""
    from conftest import make_shapes

    import alwb.learning.round
    from alwb.learning.advice import stop_set

    # every confident guess counts: the validation check lets the pseudo-labels through at this threshold
    monkeypatch.setattr(alwb.learning.round, "PSEUDO_CHECK_MIN", 1)
    monkeypatch.setattr(alwb.learning.round, "PSEUDO_PRECISION", 0.0)
    truth = make_shapes(tmp_path / "shapes", 20, layout="flat")  # 60 images
    with Project.create(tmp_path / "p", classes=["circle", "square", "triangle"]) as proj:
        proj.add_images(tmp_path / "shapes")
        proj.set_train_config(epochs=1, device="cpu", score_limit=10, pseudo=True, pseudo_threshold=0.01)
        by_id = {r["id"]: truth[r["path"]] for r in proj.store.items()}
        val = proj.store.val_item_ids()
        first = proj.store.unlabeled_item_ids()[::4][:12]  # every class among them
        proj.label([(i, by_id[i]) for i in [*val, *first]])
        pool = sorted(set(proj.store.item_ids()) - set(val))
        fixed = set(stop_set(pool, proj.config.seed, size=10).tolist())
        samples = []
        for _ in range(2):
            proj.train()
            sc = proj.scores()
            assert sc is not None and sc.sampled
            scored = set(sc.ids.tolist())
            unlabeled = set(proj.store.unlabeled_item_ids())
            assert set(val) | set(first) <= scored
            assert fixed & unlabeled <= scored
            assert 10 <= len(scored & unlabeled) <= 20 < len(unlabeled)
            assert list(sc.ids) == sorted(sc.ids)
            samples.append(scored & unlabeled)
            res = proj.query(4, "margin")
            pool_items = [it for it in res.items if it.reason != "validation"]
            assert pool_items and all(it.id in scored for it in pool_items)
            assert res.note is None
        assert samples[0] != samples[1]  # a new sample each round
        # pseudo-labels of the second round came from the first round's scored sample
        pseudo = {r["item_id"] for r in proj.store.pseudo_labels()}
        assert pseudo and pseudo <= samples[0]
