"""Screenshots of the workbench for the README: the Label page and the Progress page of the digits demo.

    python bench/screenshots.py [--out docs/img] [--rounds 2] [--batches 3] [--keep DIR]

Builds the demo project (:func:`alwb.demo.build_demo`) in a temporary folder, labels ``--batches`` batches a round
with the digits' own labels and trains ``--rounds`` rounds on the CPU through the library
(:class:`alwb.project.Project`:
query, label, train), starts the workbench on it (``alwb ui PROJECT`` on a free port, as ``tests/ui/test_browser.py``
does), and drives Debian's Chromium through Playwright to save ``OUT/label.png`` and ``OUT/progress.png``. The server
is always stopped (its whole process group). Needs ``/usr/bin/chromium`` (``apt-get install -y chromium``).
"""

from __future__ import annotations

import argparse
import contextlib
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
TIMEOUT_MS = 120_000
#: Streamlit scrolls inside this block; the screenshot grows the window to its height.
MAIN_HEIGHT = "() => { const m = document.querySelector('[data-testid=\"stMain\"]'); return m ? m.scrollHeight : 0; }"
SETTLED = """() => !document.querySelector('[data-testid="stStatusWidget"]')
    && !document.querySelector('[data-stale="true"]')
    && !document.querySelector('[data-testid="stSkeleton"]')
    && Array.from(document.images).every(i => i.complete)"""


def build_project(folder: Path, *, rounds: int, batches: int) -> Path:
    """The demo project with ``rounds`` trained rounds of ``batches`` oracle-labeled batches each."""
    from alwb.demo import build_demo, read_oracle
    from alwb.project import Project

    project = build_demo(folder, device="cpu")
    oracle = read_oracle(folder / "oracle.csv")
    with Project.open(project) as proj:
        for r in range(rounds):
            for _ in range(batches):
                res = proj.query()
                proj.label([(it.id, oracle[it.path]) for it in res.items], annotator="screenshots")
            summary = proj.train(device="cpu")
            print(f"round {summary.round}: {summary.n_labeled} labels ({r + 1} of {rounds})", flush=True)
    return project


@contextlib.contextmanager
def serve(project: Path, log_path: Path, *, startup_s: float = 120) -> Iterator[str]:
    """``alwb ui PROJECT`` on a free port of this machine; yields its address; always stopped with its children."""
    from alwb.errors import AlwbError
    from alwb.uilaunch import served_ui

    try:
        with served_ui(project, log_path, startup_s=startup_s) as ui:
            yield ui.url
    except AlwbError as exc:
        raise SystemExit(f"{exc}\n(log: {log_path})") from None


def settle(page) -> None:
    """Wait until Streamlit has finished its run and drawn it (no running indicator, stale element or skeleton,
    every image loaded)."""
    page.wait_for_function(SETTLED, timeout=TIMEOUT_MS)


def shoot(page, url: str, heading: str, path: Path, *, extra_wait_s: float = 1.0) -> None:
    """Open ``url``, wait for its ``heading`` and the end of its run, and save a full-page screenshot."""
    page.goto(url)
    page.get_by_role("heading", name=heading, exact=True).wait_for(timeout=TIMEOUT_MS)
    settle(page)
    time.sleep(extra_wait_s)  # charts draw after the run ends
    settle(page)
    size = page.viewport_size
    height = size["height"]
    try:
        for _ in range(4):  # charts and columns may reflow at the new height
            wanted = min(max(size["height"], int(page.evaluate(MAIN_HEIGHT))), 6000)
            if wanted <= height:
                break
            height = wanted
            page.set_viewport_size({"width": size["width"], "height": height})
            page.wait_for_function(f"() => window.innerHeight === {height}")
            settle(page)
        page.screenshot(path=str(path), full_page=True)
    finally:
        page.set_viewport_size(size)
    print(f"saved {path}", flush=True)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path("docs/img"), help="where label.png and progress.png go")
    ap.add_argument("--rounds", type=int, default=2, help="training rounds before the pictures (default 2)")
    ap.add_argument("--batches", type=int, default=3, help="labeled batches per round (default 3)")
    ap.add_argument("--width", type=int, default=1400, help="browser window width in pixels (default 1400)")
    ap.add_argument("--height", type=int, default=900, help="browser window height in pixels (default 900)")
    ap.add_argument("--keep", type=Path, default=None, help="build the demo here and keep it (default: a temp folder)")
    args = ap.parse_args(argv)
    if not Path(CHROMIUM).is_file():
        raise SystemExit(f"{CHROMIUM} is missing: apt-get install -y chromium")
    from playwright.sync_api import sync_playwright

    args.out.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        if args.keep is None:
            folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="alwb_shots_")))
        else:
            folder = args.keep
        project = build_project(folder / "demo", rounds=args.rounds, batches=args.batches)
        url = stack.enter_context(serve(project, folder / "server.log"))
        pw = stack.enter_context(sync_playwright())
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        stack.callback(browser.close)
        page = browser.new_page(viewport={"width": args.width, "height": args.height})
        page.set_default_timeout(TIMEOUT_MS)
        shoot(page, f"{url}/label", "Label", args.out / "label.png")
        shoot(page, f"{url}/progress", "Progress", args.out / "progress.png", extra_wait_s=2.0)


if __name__ == "__main__":
    main()
