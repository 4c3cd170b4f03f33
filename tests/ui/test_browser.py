"""End to end in a real browser: ``alwb ui`` served by Streamlit, driven by Chromium through Playwright.

The walk-through goes through the workbench the way a person does: label a batch with the mouse, a batch with the
keyboard, let background training run two rounds, look at the accuracy chart, export and download both zip files.
It runs on drawn shapes and on real photos (``../shared/datasets/hymenoptera``, skipped where that folder is
missing). A full-page screenshot of every page lands in ``tmp_path/screenshots`` (and in
``$ALWB_SCREENSHOTS/<shapes|hymenoptera>`` when set).

Needs Debian's ``/usr/bin/chromium`` (``.ci/run`` installs it) and the ``playwright`` package; Playwright's own
browser download is never used.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import _uiserver
import pytest
from conftest import CHROMIUM, CHROMIUM_ARGS, SHAPES, make_shapes

from alwb.jobs import stop_training

BATCH = 12
TIMEOUT_MS = 60_000  # one page load or rerun on a slow 2-core machine
ROUNDS_WAIT_S = 150

pytest.importorskip("playwright", reason="playwright is not installed (pip install -e '.[test]')")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not Path(CHROMIUM).is_file(), reason=f"{CHROMIUM} is missing (apt-get install chromium)"),
]


# ---------------------------------------------------------------------- project and server
@pytest.fixture
def project(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A project of 60 shape images (3 classes), small batches, quick CPU rounds; and the true classes."""
    from alwb.project import Project

    truth = make_shapes(tmp_path / "shapes", 20, layout="flat")
    root = tmp_path / "project"
    proj = Project.create(root, classes=list(SHAPES))
    try:
        proj.add_images(tmp_path / "shapes")
        proj.set_config(batch_size=BATCH, retrain_every=BATCH)
        proj.set_train_config(epochs=3, device="cpu")
    finally:
        proj.close()
    return root, truth


def serve(project: Path | None, log_path: Path) -> contextlib.AbstractContextManager[str]:
    """``alwb ui [PROJECT]`` on a free port (:func:`_uiserver.serve`); yields its address."""
    return _uiserver.serve(project, log_path)


@pytest.fixture
def server(project: tuple[Path, dict[str, str]], tmp_path: Path) -> Iterator[str]:
    """``alwb ui PROJECT`` on the shape project; a round it started is stopped afterwards."""
    root, _ = project
    try:
        with serve(root, tmp_path / "server.log") as url:
            yield url
    finally:
        stop_training(root)


def _read(path: Path) -> str:
    return path.read_text(errors="replace")[-4000:] if path.is_file() else ""


# ---------------------------------------------------------------------- browser helpers
@pytest.fixture
def browser_page() -> Iterator:
    """A page of Debian's Chromium, headless, that accepts downloads; waits and expectations time out after 60 s."""
    from playwright import sync_api

    sync_api.expect.set_options(timeout=TIMEOUT_MS)
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
            context.set_default_timeout(TIMEOUT_MS)
            page = context.new_page()
            yield page
            context.close()
        finally:
            browser.close()


def settle(page) -> None:
    """Wait until Streamlit has finished the current run and drawn it: no running indicator, no stale element,
    no skeleton placeholder, every image loaded."""
    page.wait_for_function(
        """() => !document.querySelector('[data-testid="stStatusWidget"]')
            && !document.querySelector('[data-stale="true"]')
            && !document.querySelector('[data-testid="stSkeleton"]')
            && Array.from(document.images).every(i => i.complete)""",
        timeout=TIMEOUT_MS,
    )


def open_page(page, url: str, title: str) -> None:
    """Load a page and wait for its title and the end of its first run."""
    page.goto(url)
    page.get_by_role("heading", name=title, exact=True).wait_for()
    settle(page)


MAIN_HEIGHT = "() => { const m = document.querySelector('[data-testid=\"stMain\"]'); return m ? m.scrollHeight : 0; }"


def screenshot(page, folder: Path, name: str) -> Path:
    """A full-page screenshot: Streamlit scrolls inside its main block, so grow the window to the block's height."""
    settle(page)
    size = page.viewport_size
    try:
        height = size["height"]
        for _ in range(4):  # charts and columns may reflow at the new height
            wanted = min(max(size["height"], int(page.evaluate(MAIN_HEIGHT))), 10_000)
            if wanted <= height:
                break
            height = wanted
            page.set_viewport_size({"width": size["width"], "height": height})
            page.wait_for_function(f"() => window.innerHeight === {height}")
            settle(page)
        path = folder / f"{name}.png"
        page.screenshot(path=str(path), full_page=True)
    finally:
        page.set_viewport_size(size)
    return path


def cell(page, j: int):
    """The j-th image card of the batch on screen (``st.container(key="cell_j")``)."""
    return page.locator(f".st-key-cell_{j}")


def wait_for_answer(page, j: int, value: str) -> None:
    """Wait until card ``j`` shows ``value`` as its answer. A key press draws the card's answer box anew (a new
    widget key), and for a moment the old box and the new one are both in the card; this waits past that."""
    page.wait_for_function(
        """([j, value]) => {
            const boxes = document.querySelectorAll(`.st-key-cell_${j} input[role="combobox"]`);
            return boxes.length === 1 && boxes[0].value === value;
        }""",
        arg=[j, value],
        timeout=TIMEOUT_MS,
    )


def choose_with_mouse(page, box, option: str) -> None:
    """Open a selectbox with a click and click one of its options.

    The list closes when the page scrolls, so the box is first scrolled to the middle of the window; a list that
    did not open (a click during a rerun) is tried again.
    """
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    from playwright.sync_api import expect

    for attempt in range(3):
        box.evaluate("e => e.scrollIntoView({block: 'center'})")
        box.click()
        choice = page.get_by_role("option", name=option, exact=True)
        try:
            choice.wait_for(state="visible", timeout=5_000)
        except PlaywrightTimeout:
            if attempt == 2:
                raise
            page.keyboard.press("Escape")
            settle(page)
            continue
        choice.click()
        break
    expect(box).to_have_value(option)


def expected_batch(root: Path) -> list[int]:
    """The item ids of the batch the Label page shows: the query is deterministic for a given store state."""
    from alwb.project import Project

    with Project.open(root) as proj:
        return [it.id for it in proj.query(BATCH).items]


def human_labels(root: Path) -> list[tuple[int, str | None, str]]:
    """(item id, class, batch id) of every current human label."""
    from alwb.project import Project

    with Project.open(root) as proj:
        rows = proj.store.con.execute(
            "SELECT l.item_id, c.name, l.batch_id FROM labels l LEFT JOIN classes c ON c.id=l.class_id"
            " WHERE l.superseded_at IS NULL AND l.source='human' ORDER BY l.item_id"
        ).fetchall()
    return [(int(r[0]), r[1], r[2]) for r in rows]


def done_rounds(root: Path) -> list[dict]:
    from alwb.project import Project

    with Project.open(root) as proj:
        return [r for r in proj.store.rounds() if r["status"] == "done"]


def item_paths(root: Path, ids: list[int]) -> list[str]:
    from alwb.project import Project

    with Project.open(root) as proj:
        return [str(Path(proj.store.item(i)["path"]).resolve()) for i in ids]


# ---------------------------------------------------------------------- the walk-through
# A real browser against a real server on a busy 2-core runner: a websocket reconnect starts a new Streamlit
# session, which drops answers chosen but not yet submitted (saved labels are never affected). Reruns with a
# fresh project and server keeps such a hiccup from failing CI; three failures in a row still do.
@pytest.mark.flaky(reruns=2, reruns_delay=5)
def test_workbench_in_a_browser(project, server, browser_page, tmp_path: Path) -> None:
    _recorded(
        browser_page,
        tmp_path,
        "shapes",
        lambda shots: _walk_through(browser_page, server, project, list(SHAPES), shots),
    )


HYMENOPTERA = Path(__file__).resolve().parents[2].parent / "shared" / "datasets" / "hymenoptera" / "train"


@pytest.fixture
def photo_project(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A project of the hymenoptera training photos (ants and bees, JPEGs of varied sizes, a GIF, a file name with
    a space), imported unlabeled from a flat copy of the folder, as a person's photos would be; the true classes."""
    from alwb.project import Project

    flat = tmp_path / "photos"
    flat.mkdir()
    truth: dict[str, str] = {}
    for f in sorted(HYMENOPTERA.glob("*/*")):
        shutil.copy2(f, flat / f.name)
        truth[str((flat / f.name).resolve())] = f.parent.name
    root = tmp_path / "bees-project"
    with Project.create(root, classes=["ants", "bees"]) as proj:
        rep = proj.add_images(flat)
        assert rep.added == len(truth) and not rep.rejected, rep.summary()
        proj.set_config(batch_size=BATCH, retrain_every=BATCH)
        proj.set_train_config(epochs=3, device="cpu")
    return root, truth


@pytest.mark.skipif(not HYMENOPTERA.is_dir(), reason=f"{HYMENOPTERA} is missing (../shared/datasets)")
@pytest.mark.flaky(reruns=2, reruns_delay=5)
def test_real_photos_in_a_browser(photo_project, browser_page, tmp_path: Path) -> None:
    """The same walk-through on real photos: 245 unlabeled ants and bees."""
    root, _ = photo_project
    try:
        with serve(root, tmp_path / "server.log") as url:
            _recorded(
                browser_page,
                tmp_path,
                "hymenoptera",
                lambda shots: _walk_through(browser_page, url, photo_project, ["ants", "bees"], shots),
            )
    finally:
        stop_training(root)


def _recorded(browser_page, tmp_path: Path, name: str, body) -> None:  # noqa: ANN001
    """Run ``body(shots)``; on failure keep what the page showed; copy screenshots to ``$ALWB_SCREENSHOTS/name``."""
    shots = tmp_path / "screenshots"
    shots.mkdir(exist_ok=True)
    t0 = time.monotonic()
    try:
        body(shots)
    except BaseException:
        with contextlib.suppress(Exception):  # what the page showed when it went wrong
            browser_page.screenshot(path=str(shots / "failure.png"), full_page=True)
            (shots / "failure.html").write_text(browser_page.content())
        raise
    finally:
        out = os.environ.get("ALWB_SCREENSHOTS")
        out = str(Path(out) / name) if out else None
        if out:
            Path(out).mkdir(parents=True, exist_ok=True)
            for f in shots.iterdir():
                shutil.copy2(f, Path(out) / f.name)
        print(f"\nscreenshots: {shots}" + (f" (copied to {out})" if out else ""))
        print(f"browser walk-through: {time.monotonic() - t0:.0f} s")


def _walk_through(page, server: str, project: tuple[Path, dict[str, str]], classes: list[str], shots: Path) -> None:
    from playwright.sync_api import expect

    root, truth = project
    downloads = shots.parent / "downloads"
    t0 = time.monotonic()

    def lap(what: str) -> None:
        print(f"  {time.monotonic() - t0:5.1f} s  {what}")

    # --- Start
    open_page(page, f"{server}/start", "alwb workbench")
    expect(page.get_by_text(f"{len(truth)} images · 0 answered")).to_be_visible()
    screenshot(page, shots, "1_start")

    # --- Label, batch 1 with the mouse: open each card's selectbox and click the true class
    ids1 = expected_batch(root)
    truth1 = [truth[p] for p in item_paths(root, ids1)]
    open_page(page, f"{server}/label", "Label")
    expect(cell(page, BATCH - 1)).to_be_visible()
    expect(cell(page, BATCH)).to_have_count(0)
    screenshot(page, shots, "2_label")
    for j, cls in enumerate(truth1):
        choose_with_mouse(page, cell(page, j).get_by_role("combobox"), cls)
        settle(page)
    page.get_by_role("button", name=f"Submit batch of {BATCH}").click()
    expect(page.get_by_text(f"Saved {BATCH} label(s) to the store")).to_be_visible()
    labels = human_labels(root)
    assert [(i, c) for i, c, _ in labels] == sorted(zip(ids1, truth1, strict=True))
    assert len({b for _, _, b in labels}) == 1, "one batch, one transaction"
    # the first round starts after the first batch (issue 36: the model comes early)
    expect(page.get_by_text("Retraining started in the background")).to_be_visible()
    lap("batch 1 labeled with the mouse")
    deadline = time.monotonic() + ROUNDS_WAIT_S
    while len(done_rounds(root)) < 1:  # batch 2 comes from the first model (else the round would replace it)
        assert time.monotonic() < deadline, f"no round finished:\n{_read(root / 'train.log')}"
        time.sleep(0.5)
    open_page(page, f"{server}/label", "Label")

    # --- Label, batch 2 with the keyboard: a digit answers the focused card and moves the focus on; Enter submits
    ids2 = expected_batch(root)
    assert not set(ids2) & set(ids1)
    truth2 = [truth[p] for p in item_paths(root, ids2)]
    expect(cell(page, 0).get_by_text("▶ #1")).to_be_visible()
    page.evaluate("() => document.activeElement && document.activeElement.blur()")
    # as fast as a person who knows the answers types: no waiting for the page between presses (Streamlit merges
    # rerun requests that come during a run, and a run can be interrupted before it draws a card: every press must
    # still land on its own card, in order, and no answer may be lost to the browser's older value of a card)
    for cls in truth2[:-1]:
        page.keyboard.press(str(classes.index(cls) + 1))
    for j, cls in enumerate(truth2[:-1]):
        wait_for_answer(page, j, cls)
    expect(cell(page, BATCH - 1).get_by_text(f"▶ #{BATCH}")).to_be_visible()
    # the last answer and Enter at once: the submit waits for the answer before it
    page.keyboard.press(str(classes.index(truth2[-1]) + 1))
    page.keyboard.press("Enter")
    expect(page.get_by_text(f"Saved {BATCH} label(s) to the store")).to_be_visible()
    labels = human_labels(root)
    assert [(i, c) for i, c, _ in labels] == sorted(zip(ids1 + ids2, truth1 + truth2, strict=True))
    batches = {b for _, _, b in labels}
    assert len(batches) == 2, "each submitted batch is one transaction with its own batch id"
    # 12 answers since the first round (validation answers count) = retrain_every: a round started by itself
    expect(page.get_by_text("Retraining started in the background")).to_be_visible()
    lap("batch 2 labeled with the keyboard")

    # --- two finished rounds: the automatic one, then "Retrain now"
    deadline = time.monotonic() + ROUNDS_WAIT_S
    clicked = False
    while len(done_rounds(root)) < 2:
        assert time.monotonic() < deadline, f"rounds done: {len(done_rounds(root))}:\n{_read(root / 'train.log')}"
        failed = [r for r in _all_rounds(root) if r["status"] == "failed"]
        assert not failed, f"a round failed: {failed[-1]['error']}\n{_read(root / 'train.log')}"
        if len(done_rounds(root)) == 1 and not clicked and not _training(root):
            settle(page)
            page.get_by_role("button", name="Retrain now").click()
            expect(page.get_by_text(re.compile(r"^Training started in the background"))).to_be_visible()
            clicked = True
        time.sleep(0.5)
    rounds = done_rounds(root)
    assert [r["n_labeled"] for r in rounds] == [9, 18]  # pool labels (a quarter of each batch is validation)
    assert all(r["metrics"]["val"]["accuracy"] is not None for r in rounds), "each round is a point of the curve"
    lap("two rounds done")

    # --- Label again: the batch now comes from the model (margin), with its guesses filled in
    open_page(page, f"{server}/label", "Label")
    expect(cell(page, 0).get_by_text("model:")).to_be_visible()
    screenshot(page, shots, "2b_label_with_model")

    # --- Progress: the accuracy curve has two points
    open_page(page, f"{server}/progress", "Progress")
    expect(page.get_by_role("heading", name="Accuracy by labels given")).to_be_visible()
    chart = page.locator('[data-testid="stVegaLiteChart"]').first
    expect(chart.locator("canvas, svg").first).to_be_visible()
    expect(page.get_by_text("No round has finished yet")).to_have_count(0)
    screenshot(page, shots, "3_progress")
    lap("progress")

    # --- Review and Settings: they render without an error
    for name, title in (("review", "Review"), ("settings", "Settings")):
        open_page(page, f"{server}/{name}", title)
        expect(page.locator('[data-testid="stException"]')).to_have_count(0)
        screenshot(page, shots, f"4_{name}" if name == "review" else f"5_{name}")

    # --- Export: prepare, then download both zip files through the browser
    open_page(page, f"{server}/export", "Export")
    page.get_by_role("button", name="Prepare export").click()
    expect(page.get_by_text("Exported 24 image(s)")).to_be_visible()
    settle(page)
    for name in ("dataset.zip", "model.zip"):
        with page.expect_download(timeout=TIMEOUT_MS) as info:
            page.get_by_role("button", name=f"Download {name}").click()
        info.value.save_as(downloads / name)
        settle(page)
    screenshot(page, shots, "6_export")

    with zipfile.ZipFile(downloads / "dataset.zip") as zf:
        names = set(zf.namelist())
        assert {"manifest.csv", "manifest.parquet"} <= names
        images = sorted(n for n in names if n.startswith("dataset/") and not n.endswith("metadata.jsonl"))
        assert len(images) == 2 * BATCH
        assert {n.split("/")[1] for n in images} <= {"train", "validation"}
        assert {n.split("/")[2] for n in images} <= set(classes)
        manifest = zf.read("manifest.csv").decode()
    for path, cls in zip(item_paths(root, ids1 + ids2), truth1 + truth2, strict=True):
        name = Path(path).name
        assert any(n.split("/")[2] == cls and n.endswith(f"_{name}") for n in images), (name, cls)
        assert path in manifest
    with zipfile.ZipFile(downloads / "model.zip") as zf:
        names = set(zf.namelist())
    for f in ("weights.safetensors", "labels.json", "preprocess.json", "model.torchscript.pt", "MODEL_CARD.md"):
        assert f"model/{f}" in names, sorted(names)
    lap("export downloaded and checked")


def _all_rounds(root: Path) -> list[dict]:
    from alwb.project import Project

    with Project.open(root) as proj:
        return proj.store.rounds()


def _training(root: Path) -> bool:
    from alwb.jobs import is_training

    return is_training(root)


def test_a_project_from_uploaded_zips_in_a_browser(browser_page, tmp_path: Path) -> None:
    """Start page in the browser: create a project from an uploaded zip (class folders name the labels), then add a
    second zip of unlabeled images; the page stays on one connection throughout (no reload, nothing lost)."""
    from playwright.sync_api import expect

    from alwb.project import Project

    page = browser_page
    make_shapes(tmp_path / "first", 4, layout="imagefolder")
    make_shapes(tmp_path / "second", 3, layout="flat", seed=1)
    first = shutil.make_archive(str(tmp_path / "first"), "zip", tmp_path, "first")
    second = shutil.make_archive(str(tmp_path / "more shapes"), "zip", tmp_path, "second")
    root = tmp_path / "from-zip"
    sockets: list[str] = []
    page.on("websocket", lambda ws: sockets.append(ws.url))
    shots = tmp_path / "screenshots"
    shots.mkdir()

    with serve(None, tmp_path / "server.log") as url:
        open_page(page, f"{url}/start", "alwb workbench")
        page.get_by_role("tab", name="Create a project").click()
        page.get_by_label("New project folder").fill(str(root))
        page.get_by_label("New project folder").press("Enter")
        settle(page)
        page.get_by_text("Upload a zip of images").click()
        settle(page)
        create = page.get_by_role("button", name="Create project")
        expect(create).to_be_disabled()  # waits for the upload: a project must not start empty
        page.locator('input[type="file"]').set_input_files(str(first))
        expect(page.get_by_text("first.zip")).to_be_visible()
        expect(create).to_be_enabled()
        settle(page)
        create.click()
        expect(page.get_by_text("12 images · 12 answered")).to_be_visible()
        settle(page)
        screenshot(page, shots, "zip_created")

        page.get_by_text("Add images").click()
        page.locator('input[type="file"]').set_input_files(str(second))
        expect(page.get_by_text("more shapes.zip")).to_be_visible()
        settle(page)
        page.get_by_role("button", name="Import").click()
        expect(page.get_by_text("21 images · 12 answered")).to_be_visible()
        settle(page)
        screenshot(page, shots, "zip_added")
        expect(page.locator('[data-testid="stException"]')).to_have_count(0)

    with Project.open(root) as proj:
        assert proj.classes == sorted(SHAPES)
        assert proj.store.item_count() == 21
        assert len(proj.store.current_labels()) == 12, "the first zip's class folders are its labels"
        images = proj.store.image_root()  # stored paths are relative to the image root (the first upload)
        for row in proj.store.items():
            here = images.locate(row["path"]).resolve()
            assert here.is_file() and here.is_relative_to((root / "uploads").resolve()), row["path"]
    assert len(sockets) == 1, f"the page reconnected: {sockets}"
