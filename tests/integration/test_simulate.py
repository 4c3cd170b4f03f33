"""The simulator end to end on tiny shape images: curve.csv, separation of test and validation data, resuming,
pseudo-labels with SMOTE, a manifest pool, interruptions, and the CLI."""

from __future__ import annotations

import csv
import json
import sqlite3
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from conftest import make_shapes

import alwb.learning.pseudo
import alwb.learning.round
from alwb.cli import main
from alwb.config import TrainConfig
from alwb.project import Project
from alwb.simulate import SimSettings, simulate

REQUIRED = [
    "strategy",
    "seed",
    "round",
    "n_labeled",
    "n_pseudo",
    "test_accuracy",
    "test_macro_f1",
    "test_balanced_accuracy",
    "test_accuracy_pool_mix",
    "val_accuracy",
    "val_accuracy_low",
    "val_accuracy_high",
    "train_seconds",
    "query_seconds",
    "round_seconds",
]


def sim(initial: int = 9, batch: int = 6, budget: int = 15, val_size: int = 12, **train: object) -> SimSettings:
    """Simulator settings with ``train`` changing the product's training defaults (CPU, 1 epoch unless given)."""
    train = {"epochs": 1, "device": "cpu", **train}
    return SimSettings(initial=initial, batch=batch, budget=budget, val_size=val_size, train=TrainConfig(**train))


SETTINGS = sim(budget=21, epochs=3)
QUICK = sim()


def rows_of(curve: Path) -> list[dict[str, str]]:
    with open(curve, newline="") as fh:
        return list(csv.DictReader(fh))


def store_rows(db: Path, sql: str) -> list[tuple]:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("sim") / "DATASET"
    make_shapes(root / "train", 30, seed=1)
    make_shapes(root / "test", 10, seed=2)
    return root


@pytest.fixture(scope="module")
def main_run(dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    import torch

    torch.set_num_threads(2)
    out = tmp_path_factory.mktemp("sim_out")
    curve = simulate(dataset, out, strategies=["margin", "random"], seeds=[0], settings=SETTINGS, log=False)
    return out, curve


def check_separation(out: Path, dataset: Path) -> None:
    """No test image in any store; validation items are labeled once at the start, never queried or pseudo-labeled."""
    test_dir = str((dataset / "test").resolve())
    dbs = sorted(out.glob("runs/*/alwb.sqlite")) + [out / "template" / "alwb.sqlite"]
    assert len(dbs) >= 2
    for db in dbs:
        paths = [p for (p,) in store_rows(db, "SELECT path FROM items")]
        assert paths and not any(p.startswith(test_dir) or "/test/" in p for p in paths), db
    for db in sorted(out.glob("runs/*/alwb.sqlite")):
        val = store_rows(db, "SELECT id FROM items WHERE split='val'")
        assert len(val) == 12
        labels = store_rows(db, "SELECT i.split, l.annotator, l.round FROM labels l JOIN items i ON i.id = l.item_id")
        on_val = [r for r in labels if r[0] == "val"]
        assert len(on_val) == 12 and {r[1] for r in on_val} == {"oracle-val"} and {r[2] for r in on_val} == {0}
        assert {r[1] for r in labels if r[0] == "pool"} == {"oracle"}
        pseudo_on_val = store_rows(
            db, "SELECT p.item_id FROM pseudo_labels p JOIN items i ON i.id = p.item_id WHERE i.split = 'val'"
        )
        assert pseudo_on_val == []
        pseudo_on_labeled = store_rows(
            db,
            "SELECT p.item_id FROM pseudo_labels p JOIN labels l ON l.item_id = p.item_id"
            " WHERE l.superseded_at IS NULL",
        )
        assert pseudo_on_labeled == []


def test_curve_columns_rounds_and_plot(main_run: tuple[Path, Path]) -> None:
    out, curve = main_run
    assert curve == out / "curve.csv"
    rows = rows_of(curve)
    with open(curve, newline="") as fh:
        header = next(csv.reader(fh))
    assert set(REQUIRED) <= set(header)
    assert len(rows) == 6
    for strategy in ("margin", "random"):
        mine = [r for r in rows if r["strategy"] == strategy]
        assert [int(r["n_labeled"]) for r in mine] == [9, 15, 21]
        assert [int(r["round"]) for r in mine] == [1, 2, 3]
        assert {r["seed"] for r in mine} == {"0"}
        for r in mine:
            assert int(r["n_pseudo"]) == 0
            for col in (
                "test_accuracy",
                "test_macro_f1",
                "test_balanced_accuracy",
                "test_accuracy_pool_mix",
                "val_accuracy",
            ):
                assert 0.0 <= float(r[col]) <= 1.0
            assert float(r["val_accuracy_low"]) <= float(r["val_accuracy"]) <= float(r["val_accuracy_high"])
            assert float(r["train_seconds"]) > 0 and float(r["round_seconds"]) >= float(r["train_seconds"])
            assert float(r["query_seconds"]) >= 0
            assert int(r["epochs"]) == 3
        # the stop advice after each round: kappa against the round before (none for the first), the sentence
        assert mine[0]["kappa"] == "" and all(-1 <= float(r["kappa"]) <= 1 for r in mine[1:])
        assert mine[-1]["advice"].startswith("keep labeling: 1 more round(s) with a validation accuracy")
    png = out / "curve.png"
    assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(out.glob("runs/*.tmp"))


def test_test_split_and_validation_stay_apart(main_run: tuple[Path, Path], dataset: Path) -> None:
    out, _ = main_run
    check_separation(out, dataset)
    # the pool labels are exactly the budget; the validation labels do not count against it
    for db in sorted(out.glob("runs/*/alwb.sqlite")):
        n_pool = store_rows(
            db,
            "SELECT COUNT(*) FROM labels l JOIN items i ON i.id = l.item_id"
            " WHERE i.split = 'pool' AND l.superseded_at IS NULL",
        )
        assert n_pool == [(21,)]


def test_resume_adds_nothing_then_restores_a_deleted_row(main_run: tuple[Path, Path], dataset: Path) -> None:
    out, curve = main_run
    before = rows_of(curve)
    simulate(dataset, out, strategies=["margin", "random"], seeds=[0], settings=SETTINGS, log=False)
    assert rows_of(curve) == before
    # drop each run's last row (as if the process stopped after the round but before writing the row)
    lines = curve.read_text().splitlines(keepends=True)
    kept = [ln for ln in lines if not (ln.startswith(("margin,plain,0,3,", "random,plain,0,3,")))]
    assert len(kept) == len(lines) - 2
    curve.write_text("".join(kept))
    simulate(dataset, out, strategies=["margin", "random"], seeds=[0], settings=SETTINGS, log=False)
    after = rows_of(curve)
    assert len(after) == len(before)
    key = ("strategy", "setting", "seed", "round")
    old = {tuple(r[k] for k in key): r for r in before}
    new = {tuple(r[k] for k in key): r for r in after}
    assert old.keys() == new.keys()
    for k, r in new.items():
        assert r["n_labeled"] == old[k]["n_labeled"]
        assert float(r["test_accuracy"]) == pytest.approx(float(old[k]["test_accuracy"]))
        assert r["val_accuracy"] == old[k]["val_accuracy"]


def test_interrupted_setup_resumes(dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An interruption while a run is being set up (before its first labels) must not break the resume."""
    out = tmp_path / "out"

    def interrupted(*_a: object, **_k: object) -> None:
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(Project, "label", interrupted)
        with pytest.raises(KeyboardInterrupt):
            simulate(dataset, out, strategies=["random"], seeds=[0], settings=QUICK, log=False)
    curve = simulate(dataset, out, strategies=["random"], seeds=[0], settings=QUICK, log=False)
    assert [int(r["n_labeled"]) for r in rows_of(curve)] == [9, 15]


def test_a_larger_budget_continues_the_runs(dataset: Path, tmp_path: Path) -> None:
    """A finished folder run again with a larger budget keeps its rounds and adds the new ones; other settings are
    still refused."""
    from dataclasses import replace

    from alwb.errors import AlwbError

    out = tmp_path / "out"
    curve = simulate(dataset, out, strategies=["margin"], seeds=[0], settings=QUICK, log=False)
    before = rows_of(curve)
    assert [int(r["n_labeled"]) for r in before] == [9, 15]
    simulate(dataset, out, strategies=["margin"], seeds=[0], settings=replace(QUICK, budget=21), log=False)
    after = rows_of(curve)
    assert [int(r["n_labeled"]) for r in after] == [9, 15, 21]
    assert after[:2] == before
    # a smaller budget adds nothing; another setting is refused
    simulate(dataset, out, strategies=["margin"], seeds=[0], settings=QUICK, log=False)
    assert rows_of(curve) == after
    with pytest.raises(AlwbError, match="other settings"):
        simulate(dataset, out, strategies=["margin"], seeds=[0], settings=replace(QUICK, budget=21, batch=3), log=False)


def test_budget_larger_than_pool_stops_when_pool_is_labeled(tmp_path: Path) -> None:
    data = tmp_path / "D"
    make_shapes(data / "train", 6, seed=3)  # 18 images: 6 validation, 12 in the pool
    make_shapes(data / "test", 2, seed=4)
    s = sim(initial=6, batch=4, budget=100, val_size=6, augment="none")
    curve = simulate(data, tmp_path / "out", strategies=["margin"], seeds=[0], settings=s, log=False)
    assert [int(r["n_labeled"]) for r in rows_of(curve)] == [6, 10, 12]


def test_pseudo_labels_with_smote(dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[np.ndarray, np.ndarray]] = []
    real = alwb.learning.pseudo.choose_pseudo_labels

    def low_threshold(proba, item_ids, human_counts, **kw):  # noqa: ANN001, ANN202
        # a one-epoch model on 15 shapes is close to uniform, nowhere 95% sure: let every item qualify (the cap per
        # class still limits them), so that pseudo-labels happen and the plumbing is what is tested
        kw["threshold"] = 0.01
        out = real(proba, item_ids, human_counts, **kw)
        seen.append((np.asarray(item_ids), out[0]))
        return out

    monkeypatch.setattr(alwb.learning.pseudo, "choose_pseudo_labels", low_threshold)
    # and the validation check lets them through (the check is tested on its own in test_auto_strategy.py)
    monkeypatch.setattr(
        alwb.learning.round, "check_pseudo", lambda project, cfg: {"use": True, "reason": "plumbing test"}
    )
    s = sim(pseudo=True, balance="smote")
    assert s.name == "pseudo+smote"
    curve = simulate(dataset, tmp_path / "out", strategies=["margin"], seeds=[0], settings=s, log=False)
    rows = rows_of(curve)
    assert [int(r["n_labeled"]) for r in rows] == [9, 15]
    assert {r["setting"] for r in rows} == {"pseudo+smote"}
    assert int(rows[0]["n_pseudo"]) == 0  # no model yet in round 1
    assert len(seen) == 1 and int(rows[1]["n_pseudo"]) == len(seen[0][1]) > 0
    run = tmp_path / "out" / "runs" / "margin-pseudo+smote-seed0"
    with Project.open(run) as proj:
        val = set(proj.store.val_item_ids())
        labeled = {r["item_id"] for r in proj.store.current_labels()}
        candidates, chosen = seen[0]
        assert not val & set(candidates.tolist())  # validation items are never candidates
        assert set(chosen.tolist()) <= set(candidates.tolist())
        assert not labeled & {r["item_id"] for r in proj.store.pseudo_labels()}
        assert len(proj.store.pseudo_labels()) == int(rows[1]["n_pseudo"])
    check_separation(tmp_path / "out", dataset)


def test_train_manifest_pool(dataset: Path, tmp_path: Path) -> None:
    manifest = dataset / "pool.csv"  # paths relative to the manifest's folder
    lines = ["path,label"] + [
        f"{p.relative_to(dataset).as_posix()},{p.parent.name}" for p in sorted((dataset / "train").rglob("*.png"))
    ]
    manifest.write_text("\n".join(lines) + "\n")
    try:
        curve = simulate(
            dataset,
            tmp_path / "out",
            strategies=["random"],
            seeds=[1],
            settings=QUICK,
            train_manifest=manifest,
            log=False,
        )
    finally:
        manifest.unlink()
    rows = rows_of(curve)
    assert [int(r["n_labeled"]) for r in rows] == [9, 15]
    assert {r["seed"] for r in rows} == {"1"}
    n_items = store_rows(tmp_path / "out" / "template" / "alwb.sqlite", "SELECT COUNT(*) FROM items")
    assert n_items == [(90,)]
    check_separation(tmp_path / "out", dataset)


def test_cli_simulate(dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cli_out"
    argv = ["-q", "simulate", str(dataset), "--strategy", "diverse", "--seeds", "0", "--initial", "9"]
    argv += ["--pseudo-label", "--pseudo-cap", "2", "--pseudo-threshold", "0.5"]
    argv += [
        "--batch",
        "6",
        "--budget",
        "15",
        "--val-size",
        "12",
        "--epochs",
        "1",
        "--device",
        "cpu",
        "--out",
        str(out),
    ]
    assert main(argv) == 0
    assert "curve.csv" in capsys.readouterr().out
    rows = rows_of(out / "curve.csv")
    assert [(r["strategy"], int(r["n_labeled"])) for r in rows] == [("diverse", 9), ("diverse", 15)]
    assert {r["setting"] for r in rows} == {"pseudo+cap2+th0.5"}
    assert (out / "curve.png").is_file()
    # bad input is a one-line error, exit status 2
    assert main(["-q", "simulate", str(dataset), "--strategy", "nope", "--out", str(out)]) == 2
    assert "unknown strategy" in capsys.readouterr().err


def test_val_coverage_bench_scores_only_items_the_round_did_not_train_on(main_run: tuple[Path, Path]) -> None:
    """bench/research/val_coverage.py: one row per round, the realised check as in curve.csv, and each round's
    population is the pool minus its validation set minus the labels that round trained on."""
    import importlib.util
    import json

    import pandas as pd

    path = Path(__file__).parents[2] / "bench/research/val_coverage.py"
    spec = importlib.util.spec_from_file_location("val_coverage", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    out, curve = main_run
    oracle = {int(k): int(v) for k, v in json.loads((out / "template" / "oracle.json").read_text()).items()}
    df = pd.read_csv(curve)
    for _, run in df.groupby(["strategy", "setting", "seed"]):
        run = run.sort_values("round")
        res = mod.run_coverage(out, run, oracle, draws=300, population=10_000, seed=0)
        assert res["round"].tolist() == run["round"].tolist()
        assert res["n_population"].tolist() == (len(oracle) - SETTINGS.val_size - run["n_labeled"]).tolist()
        inside = (run["val_accuracy_low"] <= run["test_accuracy"]) & (run["test_accuracy"] <= run["val_accuracy_high"])
        assert res["realised"].tolist() == inside.tolist()
        assert res["resampled"].between(0.0, 1.0).all()
        assert np.allclose(res["val_minus_test"], run["val_accuracy"] - run["test_accuracy"])


def test_runs_train_with_todays_defaults_not_the_templates(dataset: Path, tmp_path: Path) -> None:
    """A template made by an older version stores that version's training defaults (a learning rate of 2e-3 was
    one); a new run copies the template but trains with the settings and today's defaults."""
    out = tmp_path / "out"
    simulate(dataset, out, strategies=["random"], seeds=[0], settings=QUICK, log=False)
    with Project.open(out / "template") as t:
        t.set_train_config(lr=0.002, pseudo_cap=5.0, shrink=0.9)
    simulate(dataset, out, strategies=["random"], seeds=[1], settings=QUICK, log=False)
    with Project.open(out / "runs" / "random-plain-seed1") as proj:
        cfg = proj.train_config
    assert (cfg.lr, cfg.pseudo_cap, cfg.shrink, cfg.seed, cfg.epochs) == (0.0, 1.0, 0.6, 1, QUICK.train.epochs)
    rounds = store_rows(out / "runs" / "random-plain-seed1" / "alwb.sqlite", "SELECT config FROM models")
    assert rounds and all('"lr": 0.0' in c for (c,) in rounds)


def test_pseudo_cap_steps_and_threshold_reach_the_runs_and_name_the_setting(dataset: Path, tmp_path: Path) -> None:
    s = sim(pseudo=True)
    s2 = sim(pseudo=True, pseudo_cap=2.0, pseudo_steps=3.0, pseudo_threshold=0.9)
    assert (s.name, s2.name) == ("pseudo", "pseudo+cap2+steps3+th0.9")
    # without pseudo-labels these change nothing
    assert sim(pseudo_cap=2.0, pseudo_threshold=0.9).name == "plain"
    out = tmp_path / "out"
    simulate(dataset, out, strategies=["random"], seeds=[0], settings=s2, log=False)
    with Project.open(out / "runs" / "random-pseudo+cap2+steps3+th0.9-seed0") as proj:
        cfg = proj.train_config
    assert (cfg.pseudo, cfg.pseudo_cap, cfg.pseudo_steps, cfg.pseudo_threshold) == (True, 2.0, 3.0, 0.9)
    assert {r["setting"] for r in rows_of(out / "curve.csv")} == {"pseudo+cap2+steps3+th0.9"}


def test_a_folder_from_before_a_setting_existed_resumes_with_its_default(dataset: Path, tmp_path: Path) -> None:
    """settings.json written before ``pseudo_cap`` (say) existed lacks the key: it ran with the default, so the
    same settings resume there, and other values are still refused."""
    import json

    from alwb.errors import AlwbError

    out = tmp_path / "out"
    simulate(dataset, out, strategies=["random"], seeds=[0], settings=QUICK, log=False)
    recorded = json.loads((out / "settings.json").read_text())
    for key in ("pseudo_cap", "pseudo_steps", "pseudo_threshold", "lr"):
        del recorded["train"][key]
    (out / "settings.json").write_text(json.dumps(recorded))
    n = len(rows_of(out / "curve.csv"))
    simulate(dataset, out, strategies=["random"], seeds=[0], settings=QUICK, log=False)
    assert len(rows_of(out / "curve.csv")) == n
    with pytest.raises(AlwbError, match="other settings"):
        simulate(
            dataset,
            out,
            strategies=["random"],
            seeds=[0],
            settings=sim(lr=0.01),
            log=False,
        )


def test_warm_ratio_and_the_simulator_defaults_reach_the_run(dataset: Path, tmp_path: Path) -> None:
    s = sim(warm_epochs_ratio=1.0)
    assert s.name == "warm1"
    out = tmp_path / "out"
    simulate(dataset, out, strategies=["random"], seeds=[0], settings=s, log=False)
    assert {r["setting"] for r in rows_of(out / "curve.csv")} == {"warm1"}
    with Project.open(out / "runs" / "random-warm1-seed0") as proj:
        cfg = proj.train_config
    assert cfg.warm_epochs_ratio == 1.0
    # the simulator trains as the workbench does: every setting not given is the product's default
    assert cfg == TrainConfig(epochs=1, device="cpu", warm_epochs_ratio=1.0, seed=0)
    assert SimSettings().train == TrainConfig()


def test_invalid_simulator_settings_are_clear_errors() -> None:
    from alwb.errors import ConfigError

    with pytest.raises(ConfigError, match="budget ≥ initial"):
        sim(initial=20, budget=10)
    with pytest.raises(ConfigError, match="setting augment must be one of"):
        sim(augment="sideways")


@pytest.mark.parametrize("mode", ["auto", "head"])
def test_pretrain_learns_features_on_the_pool_before_the_runs(dataset: Path, tmp_path: Path, mode: str) -> None:
    """--pretrain: the template pretrains on the pool (time recorded apart), every run trains on backbone
    pool-simclr (mode auto means finetune), and a typicality strategy picks its first batch from those features."""
    from alwb.learning import backbones
    from alwb.learning.pretrain import POOL_BACKBONE
    from alwb.simulate import PRETRAINED_MODE

    s = replace(QUICK, pretrain_minutes=0.01, train=replace(QUICK.train, mode=mode))
    assert s.train.backbone == POOL_BACKBONE and s.train.mode == (PRETRAINED_MODE if mode == "auto" else mode)
    out = tmp_path / "out"
    try:
        curve = simulate(dataset, out, strategies=["typiclust", "random"], seeds=[0], settings=s, log=False)
    finally:
        backbones.unregister(POOL_BACKBONE)
    pre = json.loads((out / "template" / "pretrain.json").read_text())
    assert pre["finished"] and pre["steps"] >= 20 and pre["images"] == 90
    rows = rows_of(curve)
    name = f"ssl0.01+{s.train.mode}"
    assert {r["setting"] for r in rows} == {name} and len(rows) == 4
    firsts = []
    for strategy in ("typiclust", "random"):
        with Project.open(out / "runs" / f"{strategy}-{name}-seed0") as proj:
            geo = proj.geometry()
            assert (geo.mode, geo.backbone) == (s.train.mode, POOL_BACKBONE)
        sql = "SELECT item_id FROM labels WHERE round = 0 AND annotator = 'oracle'"
        (ids,) = zip(*store_rows(proj.root / "alwb.sqlite", sql), strict=True)
        firsts.append(set(ids))
    assert len(firsts[0]) == len(firsts[1]) >= QUICK.initial and firsts[0] != firsts[1]


def test_a_pool_of_links_to_files_outside_says_why_it_has_no_oracle(dataset: Path, tmp_path: Path) -> None:
    """Images linked from outside the dataset are refused by ingest; the simulator says so instead of only "no
    labels"."""
    from alwb.errors import AlwbError

    linked = tmp_path / "linked"
    for split in ("train", "test"):
        for f in (dataset / split).rglob("*.png"):
            dest = linked / split / f.parent.name / f.name
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.symlink_to(f)
    with pytest.raises(AlwbError, match="refused: symlink points outside the source folder"):
        simulate(linked, tmp_path / "out", settings=SimSettings(initial=3, batch=3, budget=6, val_size=2))
