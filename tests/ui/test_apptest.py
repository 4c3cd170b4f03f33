"""The workbench pages driven headless by Streamlit's ``AppTest`` (no browser, no network, CPU only).

How pages are reached: ``ui/app.py`` registers callable pages with ``st.navigation``, and
``AppTest.switch_page`` only accepts *file* pages, so

* Start and Label are run through the real entry point ``ui/app.py``: its hidden default page calls
  ``st.switch_page`` to Label (a project is open) or Start, which AppTest follows;
* Progress, Review, Settings and Export are run with ``AppTest.from_function`` on a two-line script that imports
  ``ui.views.<page>`` and calls its ``render()``, the same function ``st.navigation`` runs.

The project is given as ``?project=`` like in the browser. Streamlit caches are global to the process, so they are
cleared around every test.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
from conftest import make_shapes

pytest.importorskip("streamlit")
import streamlit as st  # noqa: E402
from store_checks import label_history
from streamlit.testing.v1 import AppTest  # noqa: E402

from alwb.cli import main as cli_main  # noqa: E402
from alwb.jobs import is_training, local_runner  # noqa: E402
from alwb.project import Project  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
UI = REPO / "ui"
APP = UI / "app.py"
TIMEOUT = 60  # seconds per script run (the first one imports torch)
SHAPES = ["circle", "square", "triangle"]
NONE = "(none of these)"
SKIP = "(skip)"


# ---------------------------------------------------------------------- fixtures and helpers
@pytest.fixture(autouse=True)
def _fresh_streamlit(monkeypatch: pytest.MonkeyPatch):
    """No project from the environment; no cached thumbnails or resources from an earlier test."""
    monkeypatch.delenv("ALWB_PROJECT", raising=False)
    st.cache_data.clear()
    st.cache_resource.clear()
    yield
    st.cache_data.clear()
    st.cache_resource.clear()


def _project(tmp_path: Path, classes: list[str] = SHAPES) -> tuple[Path, dict[str, str]]:
    """A project over 60 flat shape images (20 per class) with ``classes``; returns (root, {path: true class})."""
    truth = make_shapes(tmp_path / "shapes", 20, layout="flat")
    root = tmp_path / "proj"
    with Project.create(root, classes=classes) as proj:
        proj.add_images(tmp_path / "shapes")
    return root, truth


@pytest.fixture
def project(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    return _project(tmp_path)


@pytest.fixture
def trained(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A project with every validation item and 30 pool items labeled, and one finished round."""
    root, truth = _project(tmp_path)
    with Project.open(root) as proj:
        val = proj.store.val_item_ids()
        pool = proj.store.unlabeled_item_ids(split="pool")[:30]
        answers = [(i, truth[proj.store.item(i)["path"]]) for i in [*val, *pool]]
        proj.label(answers, annotator="fixture")
        proj.train(epochs=2, device="cpu")
    return root, truth


def app(root: Path | None = None, **params: str) -> AppTest:
    """Run ``ui/app.py`` once (with ``?project=root`` and other query parameters when given)."""
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT)
    if root is not None:
        at.query_params["project"] = str(root)
    at.query_params.update(params)
    return ok(at.run())


def _page_script(page: str) -> None:
    import importlib

    importlib.import_module(f"ui.views.{page}").render()


def page(name: str, root: Path) -> AppTest:
    """Run one page's ``render()`` with ``?project=root``."""
    at = AppTest.from_function(_page_script, kwargs={"page": name}, default_timeout=TIMEOUT)
    at.query_params["project"] = str(root)
    return ok(at.run())


def ok(at: AppTest) -> AppTest:
    """The run raised nothing."""
    assert not at.exception, [e.value for e in at.exception]
    return at


def says(elements, text: str) -> None:
    """One of the messages reads ``text`` (the pages backslash-escape Markdown in messages: undone here)."""
    bodies = [re.sub(r"\\(.)", r"\1", e.value) for e in elements]
    assert any(text in b for b in bodies), (text, bodies)


def item_ids(at: AppTest) -> list[int]:
    """Ids of the batch on the Label page, in screen order (from the answer widgets' keys ``ans_<id>_v<n>``)."""
    return [int(s.key.split("_")[1]) for s in at.selectbox if s.key and s.key.startswith("ans_")]


def answer_box(at: AppTest, item_id: int):  # noqa: ANN201
    """The answer box of an item (its key carries a version that changes when a key press sets the answer)."""
    boxes = [s for s in at.selectbox if s.key and s.key.startswith(f"ans_{item_id}_v")]
    assert len(boxes) == 1, [s.key for s in at.selectbox]
    return boxes[0]


def labels(root: Path) -> dict[int, dict]:
    with Project.open(root) as proj:
        return {r["item_id"]: dict(r) for r in proj.store.current_labels(include_none=True)}


def path_of(root: Path, item_id: int) -> str:
    with Project.open(root) as proj:
        return proj.store.item(item_id)["path"]


# ---------------------------------------------------------------------- 1. the library never imports streamlit
def test_library_does_not_import_streamlit() -> None:
    code = (
        "import importlib, pkgutil, sys, alwb\n"
        "mods = pkgutil.walk_packages(alwb.__path__, 'alwb.')\n"
        "names = [m.name for m in mods if not m.name.endswith('__main__')]\n"
        "for n in names: importlib.import_module(n)\n"
        "want = {'alwb.project', 'alwb.cli', 'alwb.learning.round', 'alwb.team.worker', 'alwb.io.export'}\n"
        "assert want <= set(names), sorted(want - set(names))\n"
        "bad = sorted(m for m in sys.modules if m in ('streamlit', 'ui') or m.startswith(('streamlit.', 'ui.')))\n"
        "assert not bad, bad\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, env=env, timeout=120)
    assert res.returncode == 0, res.stderr


def test_pages_read_and_write_through_project_never_the_store() -> None:
    """The UI is a thin shell over ``Project``: no store method is called from ``ui/`` (reads go through
    ``Project.reads``, writes through ``Project``'s methods) and no page imports ``alwb.store`` (the sign-in gate
    hands ``Project.store`` to ``alwb.team.users``, whose ``open_store`` it uses for its light check)."""
    import ast

    for f in UI.rglob("*.py"):
        tree = ast.parse(f.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute) and node.value.attr == "store":
                raise AssertionError(f"{f.relative_to(REPO)}:{node.lineno} calls the store: .store.{node.attr}")
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("alwb.store"):
                raise AssertionError(f"{f.relative_to(REPO)}:{node.lineno} imports {node.module}")
            if isinstance(node, ast.Import) and any(a.name.startswith("alwb.store") for a in node.names):
                raise AssertionError(f"{f.relative_to(REPO)}:{node.lineno} imports alwb.store")


def test_ui_is_a_package_imported_without_path_tricks(tmp_path: Path) -> None:
    """``ui`` is installed with alwb: its modules import as ``ui.…`` from any folder; none of them edits sys.path."""
    for f in UI.rglob("*.py"):
        assert "sys.path" not in f.read_text(), f
    code = "import ui, ui.keyboard, ui.text, ui.views.label, ui.views.progress; print(ui.__file__)"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    res = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120
    )
    assert res.returncode == 0, res.stderr
    assert Path(res.stdout.strip()).parts[-2:] == ("ui", "__init__.py")


# ---------------------------------------------------------------------- 2. start page
def test_start_page_creates_a_project(tmp_path: Path) -> None:
    make_shapes(tmp_path / "shapes", 5, layout="flat")
    at = app()
    assert [t.value for t in at.title] == ["alwb workbench"]
    assert [t.label for t in at.tabs] == ["Open a project", "Create a project"]
    assert at.button[0].label == "Open" and at.button[0].disabled

    root = tmp_path / "new-project"
    at.text_input[1].input(str(root))  # New project folder
    at.text_input[2].input(str(tmp_path / "shapes"))  # Image folder or CSV manifest
    at.text_input[3].input("circle, square,triangle")
    ok(at.run())  # leaving a text box reruns the page: "Create project" is enabled once a folder is typed
    assert not at.button[1].disabled
    ok(at.button[1].click().run())  # Create project

    assert (root / "alwb.sqlite").is_file()
    assert at.query_params.get("project") == str(root.resolve())
    with Project.open(root) as proj:
        assert proj.classes == SHAPES
        assert proj.store.item_count() == 15
    # the app reruns on the open project: the Start page now shows it
    assert "Open project" in [s.value for s in at.subheader]
    says(at.success, "15")


def test_start_page_keeps_a_created_project_when_its_import_fails(tmp_path: Path) -> None:
    make_shapes(tmp_path / "shapes", 3)  # class folders circle/square/triangle, none of them a class given below
    at = app()
    root = tmp_path / "p"
    at.text_input[1].input(str(root))
    at.text_input[2].input(str(tmp_path / "shapes"))
    at.text_input[3].input("cat, dog")
    ok(at.run())
    ok(at.button[1].click().run())
    assert at.query_params.get("project") == str(root.resolve())  # opened: images can be added from here
    assert "Open project" in [s.value for s in at.subheader]
    says(at.error, "Project created, but no images were imported")
    says(at.error, "not among")
    with Project.open(root) as proj:
        assert proj.classes == ["cat", "dog"]
        assert proj.store.item_count() == 0


# ---------------------------------------------------------------------- 3. label page with the mouse
def test_label_page_submits_the_chosen_answers(project) -> None:
    root, _ = project
    at = app(root, annotator="alice")
    assert [t.value for t in at.title] == ["Label"]
    # the home page's st.switch_page clears the URL's parameters; the session puts the project back
    assert at.query_params.get("project") == str(root)
    ids = item_ids(at)
    assert len(ids) == 16 == len(set(ids))
    assert any("no model yet" in i.value and "random" in i.value for i in at.info), [i.value for i in at.info]
    assert answer_box(at, ids[0]).options == [*SHAPES, SKIP, NONE]
    assert all(answer_box(at, i).value is None for i in ids)
    # the default strategy says what it uses now: small shapes train from scratch, so margin
    says(at.caption, "strategy auto, now margin ·")

    chosen = {ids[0]: "circle", ids[1]: "square", ids[2]: "triangle", ids[3]: NONE, ids[4]: SKIP}
    for item_id, value in chosen.items():
        answer_box(at, item_id).select(value)
    ok(at.button(key="submit").click().run())

    stored = labels(root)
    assert set(stored) == {ids[0], ids[1], ids[2], ids[3]}
    assert {i: r["class"] for i, r in stored.items()} == {
        ids[0]: "circle",
        ids[1]: "square",
        ids[2]: "triangle",
        ids[3]: None,
    }
    assert {r["source"] for r in stored.values()} == {"human"}
    assert {r["annotator"] for r in stored.values()} == {"alice"}
    with Project.open(root) as proj:
        batches = {label_history(proj.store, i)[-1]["batch_id"] for i in stored}
    assert len(batches) == 1 and None not in batches
    says(at.success, "Saved 4 label(s)")

    # a fresh batch without the answered items (nor the ones skipped in this session)
    new_ids = item_ids(at)
    assert len(new_ids) == 16
    assert not set(new_ids) & set(ids)


def test_label_page_without_classes_or_items_left(tmp_path: Path) -> None:
    make_shapes(tmp_path / "shapes", 2, layout="flat")
    root = tmp_path / "proj"
    with Project.create(root) as proj:
        proj.add_images(tmp_path / "shapes")
    at = app(root)
    assert any("no classes yet" in w.value for w in at.warning), [w.value for w in at.warning]

    with Project.open(root) as proj:
        proj.store.add_classes(SHAPES)
        proj.label([(i, "circle") for i in proj.store.item_ids()])
    at = app(root)
    says(at.success, "Nothing left to label")
    assert not item_ids(at)


# ---------------------------------------------------------------------- 4. keyboard shortcuts
def test_keyboard_buttons_answer_the_focused_image(project) -> None:
    root, _ = project
    at = app(root)
    ids = item_ids(at)
    assert at.text[0].value.startswith("▶ #1")

    for key in ["key_1", "key_2", "key_none", "key_skip", "key_left", "key_3"]:
        ok(at.button(key=key).click().run())
    # 1 → circle on #1, 2 → square on #2, N → none on #3, S → skip on #4, ◀ back to #4, 3 → triangle on #4
    values = [answer_box(at, i).value for i in ids[:6]]
    assert values == ["circle", "square", NONE, "triangle", None, None]
    assert at.text[4].value.startswith("▶ #5")

    ok(at.button(key="submit").click().run())
    stored = labels(root)
    assert {i: r["class"] for i, r in stored.items()} == {
        ids[0]: "circle",
        ids[1]: "square",
        ids[2]: None,
        ids[3]: "triangle",
    }
    says(at.success, "Saved 4 label(s)")


def test_unsubmitted_answers_survive_a_reload_and_stay_per_annotator(project) -> None:
    """Answers chosen but not submitted are drafts in the store: a new session (reload, lost websocket, second tab)
    shows them again; another annotator does not get them; submitting the batch drops them."""
    root, _ = project
    at = app(root, annotator="alice")
    ids = item_ids(at)
    answer_box(at, ids[0]).select("triangle")
    ok(at.run())
    ok(at.button(key="key_right").click().run())
    ok(at.button(key="key_none").click().run())  # "none of these" for #2 by keyboard
    with Project.open(root) as proj:
        assert proj.store.drafts("alice", ids) == {ids[0]: "triangle", ids[1]: NONE}

    again = app(root, annotator="alice")  # a reload is a new session
    assert item_ids(again) == ids
    assert answer_box(again, ids[0]).value == "triangle"
    assert answer_box(again, ids[1]).value == NONE
    assert answer_box(again, ids[2]).value is None

    bob = app(root, annotator="bob")
    assert answer_box(bob, ids[0]).value is None

    ok(again.button(key="submit").click().run())
    assert {i: r["class"] for i, r in labels(root).items()} == {ids[0]: "triangle", ids[1]: None}
    with Project.open(root) as proj:
        assert proj.store.drafts("alice", ids) == {}


# ---------------------------------------------------------------------- 5. undo
def test_undo_last_batch(project) -> None:
    root, _ = project
    at = app(root)
    first = item_ids(at)
    answer_box(at, first[0]).select("circle")
    ok(at.button(key="submit").click().run())
    second = item_ids(at)
    answer_box(at, second[0]).select("square")
    answer_box(at, second[1]).select("triangle")
    ok(at.button(key="submit").click().run())
    assert set(labels(root)) == {first[0], second[0], second[1]}

    ok(at.button(key="undo").click().run())
    assert {i: r["class"] for i, r in labels(root).items()} == {first[0]: "circle"}
    says(at.info, "2 label(s) removed")


# ---------------------------------------------------------------------- 6. background retraining
def test_the_label_page_readies_the_first_round_and_its_submit_starts_it(project, monkeypatch) -> None:
    """No model yet: drawing the first batch starts the first round's process, which waits (the page says the
    model trains as soon as the batch is submitted); the submit wakes it and the page says training started."""
    monkeypatch.setenv("ALWB_PRESTART", "1")
    root, truth = project
    with Project.open(root) as proj:
        proj.set_train_config(epochs=2, device="cpu")
    try:
        at = app(root)
        assert is_training(root)  # the process is there, imports under way, nothing trained
        deadline = time.monotonic() + 60
        while "ready and waiting" not in " ".join(c.value for c in at.caption):
            assert time.monotonic() < deadline, [c.value for c in at.caption]
            time.sleep(0.5)
            ok(at.run())
        for i in item_ids(at):
            answer_box(at, i).select(truth[path_of(root, i)])
        ok(at.button(key="submit").click().run())
        says(at.success, "Retraining started in the background")
        deadline = time.monotonic() + 120
        while is_training(root):
            assert time.monotonic() < deadline, (root / "train.log").read_text()
            time.sleep(0.3)
        with Project.open(root) as proj:
            assert [r["status"] for r in proj.store.rounds()] == ["done"]
    finally:
        from alwb.jobs import stop_training

        stop_training(root)


def test_submit_starts_background_training_then_progress_shows_it(project) -> None:
    root, truth = project
    with Project.open(root) as proj:
        proj.set_config(retrain_every=10)
        proj.set_train_config(epochs=3, device="cpu")
    at = label = app(root)
    ids = item_ids(at)
    for i in ids:  # 12 pool + 4 validation items, answered truthfully
        answer_box(at, i).select(truth[path_of(root, i)])
    ok(at.button(key="submit").click().run())
    says(at.success, "Retraining started in the background")

    deadline = time.monotonic() + 120
    while True:
        with Project.open(root) as proj:
            rounds = proj.store.rounds()
            current = proj.store.current_round()
        if current == 1 and not is_training(root):
            break
        log = root / "train.log"
        assert not any(r["status"] == "failed" for r in rounds), log.read_text() if log.exists() else rounds
        assert time.monotonic() < deadline, "no finished round after 120 s: " + (
            log.read_text() if log.exists() else ""
        )
        time.sleep(0.5)
    with Project.open(root) as proj:  # the round reported through the store's one progress channel
        assert proj.store.progress_of(local_runner(root))["phase"] == "done"
        assert proj.training_progress().running is None

    at = page("progress", root)
    assert [m.label for m in at.metric] == [
        "Validation accuracy",
        "95% interval",
        "Training labels",
        "Validation labels",
    ]
    assert at.metric[2].value == "12"
    assert len(at.get("vega_lite_chart")) >= 3

    # the Label page of the same session drops its untouched batch (queried before the model) for one by the model
    ok(label.run())
    assert not any("no model yet" in i.value for i in label.info)
    assert any("model:" in t.value for t in label.text), [t.value for t in label.text]


# ---------------------------------------------------------------------- 7. the other pages after a round
def test_progress_page(trained) -> None:
    root, _ = trained
    at = page("progress", root)
    assert len(at.metric) == 4
    assert at.metric[2].value == "30" and at.metric[3].value == "10"
    assert "Confusion matrix (validation, last round)" in [s.value for s in at.subheader]
    # the accuracy chart: x = labels given, the round in the tooltip, the y-axis fitted to the scores
    acc = json.loads(at.get("vega_lite_chart")[0].proto.spec)["layer"][1]["encoding"]
    assert acc["x"]["field"] == "labels" and acc["x"]["title"] == "training labels"
    assert "round" in [t["field"] for t in acc["tooltip"]]
    low, high = acc["y"]["scale"]["domain"]
    assert 0 <= low < high <= 1 and (low, high) != (0, 1)


def test_progress_page_without_rounds_and_after_a_failed_one(project) -> None:
    root, _ = project
    at = page("progress", root)
    says(at.info, "No round has finished yet")

    with Project.open(root) as proj:
        proj.store.fail_round(proj.store.start_round("margin"), "RuntimeError: out of **memory**")
    at = page("progress", root)
    says(at.error, "The last training round failed")
    says(at.error, "out of **memory**")  # shown as written, not as bold
    assert "**memory**" not in at.error[0].value


def test_settings_page_saves_the_strategy(trained) -> None:
    root, _ = trained
    at = page("settings", root)
    strategy = at.selectbox[0]
    assert strategy.label == "Query strategy" and strategy.value == "auto"  # a new project's default (E54)
    assert "entropy" in strategy.options
    # each strategy says what it does, auto what it does on which plan
    assert "**auto**: alwb's measured choice" in strategy.help and "margin sampling when training from scratch" in (
        strategy.help
    )
    strategy.select("entropy")
    ok(at.button[0].click().run())  # Save settings
    with Project.open(root) as proj:
        assert proj.config.strategy == "entropy"
        assert proj.train_config.device == "auto"  # untouched fields keep their values
    says(at.success, "Settings saved")


def test_settings_page_shows_values_set_outside_its_ranges(project) -> None:
    root, _ = project
    with Project.open(root) as proj:
        proj.set_config(batch_size=64, retrain_every=20000)
        proj.set_train_config(epochs=900)
    at = page("settings", root)
    assert at.slider[0].value == 64
    counts = [
        n.value for n in at.number_input if n.label in ("Epochs per round (0: automatic)",) or "Retrain" in n.label
    ]
    assert counts == [20000, 900]
    ok(at.button[0].click().run())  # saving unchanged keeps them
    with Project.open(root) as proj:
        assert (proj.config.batch_size, proj.config.retrain_every, proj.train_config.epochs) == (64, 20000, 900)


def test_settings_page_offers_mode_and_backbone_and_says_why(project, monkeypatch, tmp_path: Path) -> None:
    from weights_helpers import isolate_hub, save_state_dict

    from alwb.learning import backbones
    from alwb.learning.plan import choose_backbone

    root, _ = project
    isolate_hub(monkeypatch, tmp_path)
    backbones.add("resnet18", save_state_dict(tmp_path / "made" / "r18.pth", seed=2))  # a custom file
    at = page("settings", root)
    says(at.info, "These images are small and greyscale (20 px), so each round trains a small network from scratch")
    assert all("`" not in i.value and "http" not in i.value for i in at.info)
    mode = next(s for s in at.selectbox if s.label == "Training mode")
    backbone = next(s for s in at.selectbox if s.label == "Pretrained backbone")
    assert mode.options == ["auto", "head", "finetune", "scratch"] and mode.value == "auto"
    assert len(backbone.options) == len(backbones.backbone_names()) + 1
    best = choose_backbone("auto", backbones.weights_available)  # efficientnet_lite0 at least: alwb depends on it
    assert best is not None and backbone.value == "auto" and f"auto (the best here: {best})" in backbone.options
    assert "efficientnet_lite0 (weights here, packaged)" in backbone.options
    assert "resnet18 (weights here, custom)" in backbone.options
    assert "resnet50 (no weights here)" in backbone.options
    mode.select("head")
    backbone.select("resnet18")
    ok(at.button[0].click().run())  # Save settings
    with Project.open(root) as proj:
        assert (proj.train_config.mode, proj.train_config.backbone) == ("head", "resnet18")
        assert proj.config.strategy == "auto"  # the rest saved as it was
    says(at.success, "Settings saved")
    says(at.info, "Each round fits a classifier on the features of the pretrained ResNet-18 (224 px)")
    assert "Import a weights file" in [h.value for h in at.subheader], "local mode: the one person may import"


def test_the_plan_sentence_says_greyscale_only_of_greyscale_images(tmp_path: Path) -> None:
    """Small colour images trained from scratch because the person asked for it are not called greyscale."""
    from PIL import Image

    from ui.views.common import plan_sentence

    folder = tmp_path / "colour"
    folder.mkdir()
    for i in range(12):
        Image.new("RGB", (24, 24), (20 * i, 200, 40)).save(folder / f"c{i}.png")
    with Project.create(tmp_path / "p", classes=["a", "b"]) as proj:
        proj.add_images(folder)
        assert proj.image_shape() == (24, False)
        proj.set_train_config(mode="scratch")
        sentence, todo = plan_sentence(proj)
        assert todo is None
        assert sentence == "Each round trains a small network from scratch on your labels (24 px images)."
        proj.set_train_config(mode="auto")
        assert plan_sentence(proj)[0].startswith("Each round fits a classifier on the features of the pretrained")


def test_review_page_corrects_a_label_and_keeps_history(trained) -> None:
    root, _ = trained
    at = page("review", root)
    fixes = [s for s in at.selectbox if s.key and s.key.startswith("fix_")]
    assert len(fixes) == 18  # one page
    target = fixes[0]
    item_id = int(target.key.removeprefix("fix_"))
    old = target.value
    new = next(c for c in SHAPES if c != old)
    target.select(new)
    ok(at.button[0].click().run())  # Save corrections (the form's submit button)

    with Project.open(root) as proj:
        history = label_history(proj.store, item_id)
        current = {r["item_id"]: r["class"] for r in proj.store.current_labels()}
    assert current[item_id] == new
    assert [h["class"] for h in history] == [old, new]  # oldest first: the fixture's label is kept
    assert history[0]["superseded_at"] is not None and history[1]["superseded_at"] is None
    says(at.success, "Saved 1 corrected label(s)")


def test_export_page_matches_the_cli(trained, tmp_path: Path) -> None:
    root, _ = trained
    at = page("export", root)
    assert not at.get("download_button")
    ok(at.button[0].click().run())  # Prepare export
    says(at.success, "Exported 40 image(s)")
    assert len(at.get("download_button")) == 2

    cli_out = tmp_path / "cli-export"
    assert cli_main(["-q", "export", str(root), str(cli_out)]) == 0  # `alwb export`, in this process

    def files(base: Path, *tops: str) -> set[str]:
        return {p.relative_to(base).as_posix() for t in tops for p in [base / t, *(base / t).rglob("*")] if p.is_file()}

    with zipfile.ZipFile(root / "exports" / "dataset.zip") as ds, zipfile.ZipFile(root / "exports" / "model.zip") as md:
        assert set(ds.namelist()) == files(
            cli_out, "dataset", "manifest.csv", "manifest.parquet", "labelstudio.json", "labelstudio.xml"
        )
        assert sum(n.startswith("dataset/") and not n.endswith("/metadata.jsonl") for n in ds.namelist()) == 40
        assert "dataset/metadata.jsonl" in ds.namelist()
        assert set(md.namelist()) == files(cli_out, "model")
        assert {
            "model/weights.safetensors",
            "model/labels.json",
            "model/preprocess.json",
            "model/model.torchscript.pt",
            "model/MODEL_CARD.md",
            "model/model.onnx",
        } <= set(md.namelist())
        same = [n for n in ds.namelist() if n.startswith("dataset/")] + ["manifest.csv"]
        for name in same:
            assert ds.read(name) == (cli_out / name).read_bytes(), name
        for name in ["model/weights.safetensors", "model/labels.json", "model/preprocess.json"]:
            assert md.read(name) == (cli_out / name).read_bytes(), name


# ---------------------------------------------------------------------- 8. text from users is never markup
HOSTILE = ["<b>bold<b>", "**star**", ":red[x]"]  # "/" is not allowed in a class name


def test_md_escape() -> None:
    from ui.text import md_escape

    assert md_escape("plain text 12") == "plain text 12"
    for ch in "\\`*_{}[]()#+-.!|~<>$:&":
        assert md_escape(ch) == "\\" + ch
    assert md_escape("<b>bold</b>") == r"\<b\>bold\</b\>"
    assert md_escape("**star**") == r"\*\*star\*\*"
    assert md_escape(":red[x]") == r"\:red\[x\]"
    assert md_escape("$x$ and `code`") == r"\$x\$ and \`code\`"
    assert md_escape("two\nlines") == "two lines"
    assert md_escape(3) == "3"


def test_label_page_shows_class_names_as_text(tmp_path: Path) -> None:
    from ui.text import md_escape

    root, _ = _project(tmp_path, classes=HOSTILE)
    at = app(root)
    ids = item_ids(at)
    assert answer_box(at, ids[0]).options == [*HOSTILE, SKIP, NONE]  # options are plain text
    labels_by_key = {b.key: b.label for b in at.button}
    for k, name in zip("123", HOSTILE, strict=True):
        assert labels_by_key[f"key_{k}"] == f"{k} · {md_escape(name)}"

    # every element whose body Streamlit renders as Markdown: no raw tag, emphasis or colour directive
    rendered = [
        *(b.label for b in at.button),
        *(m.value for m in at.markdown),
        *(c.value for c in at.caption),
        *(t.value for t in at.title),
        *(e.value for kind in (at.info, at.success, at.warning, at.error) for e in kind),
        *(s.label for s in at.selectbox),
    ]
    for body in rendered:
        assert "<b>" not in body and "**star**" not in body and ":red[" not in body, body

    # the names still round-trip into the store untouched
    answer_box(at, ids[0]).select(HOSTILE[0])
    ok(at.button(key="key_2").click().run())  # focus is on #1 → overrides with the 2nd class
    ok(at.button(key="key_3").click().run())  # #2 → the 3rd class
    ok(at.button(key="submit").click().run())
    assert {i: r["class"] for i, r in labels(root).items()} == {ids[0]: HOSTILE[1], ids[1]: HOSTILE[2]}


def test_digit_classes_are_answered_by_their_own_key(tmp_path: Path) -> None:
    """Where class names are keys (the digits demo), the key is the name: 1 answers "1", and the page shows it."""
    root, _ = _project(tmp_path, classes=["0", "1", "2"])
    at = app(root)
    ids = item_ids(at)
    labels_by_key = {b.key: b.label for b in at.button}
    assert [labels_by_key[f"key_{d}"] for d in "012"] == ["0", "1", "2"]
    ok(at.button(key="key_1").click().run())  # #1 → class "1"
    ok(at.button(key="key_0").click().run())  # #2 → class "0"
    ok(at.button(key="submit").click().run())
    assert {i: r["class"] for i, r in labels(root).items()} == {ids[0]: "1", ids[1]: "0"}


def test_start_page_errors_show_user_text_as_text(tmp_path: Path) -> None:
    at = app()
    at.text_input[1].input(str(tmp_path / "p"))
    at.text_input[3].input("**x**/y")  # a class name that is refused: the message quotes it
    ok(at.run())
    ok(at.button[1].click().run())
    bodies = [e.value for e in at.error]
    assert bodies and "contains a path separator" in bodies[0].replace("\\", "")
    assert "**x**" not in bodies[0] and r"\*\*x\*\*" in bodies[0]


def test_thumbnails_enlarge_small_images_without_blur_and_shrink_photos(tmp_path: Path) -> None:
    import io

    import numpy as np
    from PIL import Image

    from alwb.intake.images import ImageRoot
    from ui import state

    rng = np.random.default_rng(0)
    small = rng.integers(0, 256, (28, 28), dtype=np.uint8)
    Image.fromarray(small, "L").save(tmp_path / "small.png")
    data, fmt = state.thumbnail(str(tmp_path / "small.png"), 0.0, 192, _sha(tmp_path / "small.png"))
    assert fmt == "PNG"  # sent as it is (st.image would re-encode anything else, and JPEG would smear the pixels)
    shown = np.asarray(Image.open(io.BytesIO(data)).convert("L"))
    assert shown.shape == (168, 168)  # the largest whole factor that fits: 6×
    assert np.array_equal(shown, np.kron(small, np.ones((6, 6), np.uint8)))  # every pixel a 6×6 block, no blur

    photo = rng.integers(0, 256, (400, 600, 3), dtype=np.uint8)
    Image.fromarray(photo, "RGB").save(tmp_path / "photo.png")
    data, fmt = state.thumbnail(str(tmp_path / "photo.png"), 0.0, 192, _sha(tmp_path / "photo.png"))
    assert fmt == "JPEG"
    assert Image.open(io.BytesIO(data)).size == (192, 128)
    assert state.image_bytes(ImageRoot.of(None, ""), str(tmp_path / "gone.png"), 192, "0" * 64) is None
    assert state.image_bytes(ImageRoot.of(None, ""), str(tmp_path / "photo.png"), 192, None) is None  # not an item
    assert state.image_bytes(ImageRoot.of(None, ""), str(tmp_path / "photo.png"), 192, "0" * 64) is None  # changed
    assert state.image_problem(ImageRoot.of(None, ""), str(tmp_path / "photo.png"), "0" * 64).startswith(
        "not shown: the file changed since it was imported"
    )


def _sha(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_start_page_checks_the_source_and_the_classes_before_creating_anything(tmp_path: Path) -> None:
    """Issue 36: a missing folder, an empty one, a folder of non-images and a class list with a duplicate or an empty
    name are refused with a plain message, and no project is created (so a retry is not refused either)."""
    (tmp_path / "empty").mkdir()
    (tmp_path / "texts").mkdir()
    (tmp_path / "texts" / "notes.txt").write_text("not an image")
    (tmp_path / "texts" / "broken.png").write_bytes(b"not a png")
    make_shapes(tmp_path / "shapes", 2, layout="flat")
    cases = [
        (tmp_path / "missing", "", "There is no folder or file at"),
        (tmp_path / "empty", "", "holds no image files"),
        (tmp_path / "texts", "", "None of the files in"),
        (tmp_path / "shapes", "ants,bees,ants", "appear more than once: ants"),
        (tmp_path / "shapes", ",,,", "A class name is empty"),
    ]
    for i, (source, classes, message) in enumerate(cases):
        at = app()
        root = tmp_path / f"p{i}"
        at.text_input[1].input(str(root))
        at.text_input[2].input(str(source))
        at.text_input[3].input(classes)
        ok(at.run())
        ok(at.button[1].click().run())
        says(at.error, message)
        assert not root.exists() or not any(root.iterdir()), f"{source}: nothing is created"
        assert all("alwb add" not in e.value and "`" not in e.value for e in at.error)
    # the broken PNG is named with its reason
    at = app()
    at.text_input[1].input(str(tmp_path / "p9"))
    at.text_input[2].input(str(tmp_path / "texts"))
    ok(at.run())
    ok(at.button[1].click().run())
    says(at.error, "broken.png")


def test_label_page_says_plainly_why_there_is_nothing_to_label(tmp_path: Path) -> None:
    """Issue 36, item 7: an empty project points to Start (not "every item is answered"); a batch with nothing
    answered asks once before it is skipped; a pool all skipped in this session says so and offers it again."""
    with Project.create(tmp_path / "empty", classes=SHAPES):
        pass
    at = app(tmp_path / "empty")
    says(at.info, "This project has no images yet")
    assert not any("answered" in s.value for s in at.success)

    make_shapes(tmp_path / "six", 2, layout="flat")
    root = tmp_path / "p"
    with Project.create(root, classes=SHAPES) as proj:
        proj.add_images(tmp_path / "six")
        proj.set_config(batch_size=6, retrain_every=0)
    at = app(root)
    assert len(item_ids(at)) == 6
    ok(at.button(key="submit").click().run())
    says(at.warning, "No image of this batch is answered")
    assert len(item_ids(at)) == 6, "nothing skipped yet: the same batch"
    ok(at.button(key="submit").click().run())
    says(at.success, "Skipped 6 image(s); no label was saved.")
    says(at.info, "were all skipped in this session")
    with Project.open(root) as proj:
        assert proj.store.current_labels(include_none=True) == []
    ok(at.button(key="unskip").click().run())
    assert len(item_ids(at)) == 6, "the skipped images come back"


def test_a_replaced_image_is_never_shown_under_its_item(trained) -> None:
    """Issue 34: a file replaced after import (same name, other content) is not shown on the Label page nor in the
    Review grid; the card says the file changed since it was imported, and the other cards show their images."""
    from PIL import Image

    root, _ = trained
    colours = iter([(250, 0, 250), (0, 250, 250)])
    for at in (app(root, annotator="alice"), page("review", root)):
        ids = item_ids(at) or [
            int(s.key.removeprefix("fix_")) for s in at.selectbox if (s.key or "").startswith("fix_")
        ]
        with Project.open(root) as proj:
            path = proj.store.image_root().locate(proj.store.item(ids[0])["path"])
        shown_before = len(at.get("image"))
        Image.new("RGB", (24, 24), next(colours)).save(path)  # same name, other content
        at = ok(at.run())
        says([*at.warning, *at.caption], "not shown: the file changed since it was imported")
        assert len(at.get("image")) == shown_before - 1
