"""Workbench speed in a real browser: submit-to-next-batch latency and page-open times.

    python bench/speed/ui_latency.py --project data/demo/project --batches 20 [--train] [--think 3]

Starts ``alwb ui`` on PROJECT, drives Debian's Chromium with Playwright, submits batches (answers = the model's
preselected guesses, each batch submitted ``--think`` seconds after it is on screen) and measures, for each one,
the time from pressing Submit until the whole next batch is on
screen (every image loaded and nothing stale left, so the next click meets a settled page, as a person's would).
Automatic retraining is switched off in the project for the measurement; with ``--train`` a training round runs
in the background the whole time instead (restarted whenever it ends). Then opens every page and measures the
time until it has rendered.
First of all it measures the first page: from ``alwb ui`` printing its address to the Label page's grid on screen
(``--first-page-only`` stops there; run it a few times, each start is one sample).
Prints p50 / p95 / max. The labels it submits are real: use a copy of a project you care about.

With ``--keys`` the "person" answers by keyboard only, as a new user on the digits demo does: one key per card
(the model's guess when the card shows one, else the next digit in turn: the answers are not the true ones), about
``--key-gap`` seconds apart, then Enter; it measures Enter → the next batch on screen, and with ``--auto-retrain``
(the project's own retrain_every kept, rounds started by the page as for a person) the answers given before the
first model-ranked batch (a batch whose cards show "model:").

    python bench/speed/ui_latency.py --project COPY_OF_DEMO --batches 20 --keys --auto-retrain
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--no-first-run",
    "--disable-component-update",
    "--disable-sync",
]


def _rounds(project: Path) -> int:
    """Rounds finished so far (to tell which samples had a new model land in them)."""
    from alwb.project import Project

    with Project.open(project) as proj:
        return sum(r["status"] == "done" for r in proj.store.rounds())


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(q * (len(xs) - 1)))]


def summary(name: str, xs: list[float]) -> str:
    return (
        f"{name}: n={len(xs)} p50={pct(xs, 0.5):.3f} s p95={pct(xs, 0.95):.3f} s max={max(xs):.3f} s "
        f"mean={statistics.mean(xs):.3f} s"
    )


def image_srcs(page) -> list[str]:  # noqa: ANN001
    """The image URLs of the batch on screen."""
    return page.evaluate("() => [...document.querySelectorAll('[data-testid=stImage] img')].map(i => i.src)")


#: The next batch is on screen: as many images as before, none of them an old one, all loaded, nothing stale left.
NEXT_BATCH_SHOWN = """old => {
  const imgs = [...document.querySelectorAll('[data-testid=stImage] img')];
  return imgs.length >= old.length && imgs.every(i => !old.includes(i.src) && i.complete && i.naturalWidth > 0)
    && !document.querySelector('[data-stale=true]');
}"""


#: The page asked before skipping a batch with nothing answered.
ASKED = """() => [...document.querySelectorAll('[data-testid=stAlert]')]
  .some(a => a.innerText.includes('No image of this batch is answered'))"""


#: The first batch is on screen: images there, every one loaded, nothing stale left.
GRID_SHOWN = """() => {
  const imgs = [...document.querySelectorAll('[data-testid=stImage] img')];
  return imgs.length > 0 && imgs.every(i => i.complete && i.naturalWidth > 0)
    && !document.querySelector('[data-stale=true]');
}"""


def wait_address(log_path: Path, timeout: float = 120) -> float:
    """``perf_counter()`` when the server's output first shows the address ``alwb ui`` prints."""
    end = time.time() + timeout
    while time.time() < end:
        if "alwb workbench: http" in log_path.read_text(errors="replace"):
            return time.perf_counter()
        time.sleep(0.02)
    raise SystemExit("the workbench printed no address")


#: A page is shown: its title is there, every image has loaded, nothing stale is left and no script run is going on.
PAGE_SHOWN = """title => {
  const h = document.querySelector('h1');
  return h && h.textContent.trim() === title
    && [...document.querySelectorAll('img')].every(i => i.complete)
    && !document.querySelector('[data-stale=true]') && !document.querySelector('[data-testid=stStatusWidget]');
}"""


def _phase(project: str) -> str:
    """The training round's phase and step as the workbench sees it (alwb.progress), e.g. ``train 3/40``."""
    from alwb.project import Project

    with Project.open(project) as proj:
        status = proj.training_progress()
    run = status.running
    return "ready" if status.waiting else "-" if run is None else f"{run.phase} {run.done}/{run.total}"


def _keyboard_person(page, args: argparse.Namespace) -> None:  # noqa: ANN001
    """The ``--keys`` measurement (see the module's docstring)."""
    lat: list[float] = []
    answers = 0
    first_ranked: int | None = None
    notes: list[str] = []
    digit = 0
    t_start = time.perf_counter()
    page.evaluate("() => document.activeElement && document.activeElement.blur()")
    for b in range(args.batches):
        heads = page.evaluate("() => [...document.querySelectorAll('[class*=\"st-key-cell_\"]')].map(c => c.innerText)")
        ranked = any("model:" in h for h in heads)
        if ranked and first_ranked is None:
            first_ranked = answers
            print(
                f"first model-ranked batch: batch {b + 1}, after {answers} answers, "
                f"{time.perf_counter() - t_start:.0f} s into labeling"
            )
        for h in heads:
            guess = h.split("model: ", 1)[1].split(" ", 1)[0] if "model: " in h else None
            if guess is None or not guess.isdigit():
                guess = str(digit % 10)
                digit += 1
            page.keyboard.press(guess)
            time.sleep(args.key_gap)
        page.wait_for_function(
            "n => [...document.querySelectorAll('[class*=\"st-key-cell_\"] input[role=combobox]')]"
            ".filter(i => i.value).length >= n && !document.querySelector('[data-stale=true]')",
            arg=len(heads),
            timeout=60_000,
        )
        time.sleep(args.think)
        old = image_srcs(page)
        notes.append(_phase(args.project))
        t0 = time.perf_counter()
        page.keyboard.press("Enter")
        page.wait_for_function(NEXT_BATCH_SHOWN, arg=old, timeout=60_000)
        lat.append(time.perf_counter() - t0)
        answers += len(heads)
    print(summary("Enter -> next batch (keyboard, rounds as for a person)", lat))
    print("round progress at each Enter: " + ", ".join(f"#{i + 1} {n}" for i, n in enumerate(notes)))
    slow = sorted(range(len(lat)), key=lat.__getitem__, reverse=True)[:5]
    print("slowest: " + ", ".join(f"#{i + 1} {lat[i]:.3f} s ({notes[i]})" for i in slow))
    print(
        f"rounds finished: {_rounds(args.project)}; answers given: {answers}; first model-ranked batch after "
        f"{first_ranked if first_ranked is not None else 'none within the run'} answers"
    )


def main() -> None:
    from playwright.sync_api import sync_playwright

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--project", type=Path, required=True)
    ap.add_argument("--batches", type=int, default=20)
    ap.add_argument("--train", action="store_true", help="keep a training round running while measuring")
    ap.add_argument(
        "--think",
        type=float,
        default=3.0,
        help="seconds the 'person' looks at a batch before submitting it (16 images take a person longer)",
    )
    ap.add_argument(
        "--first-page-only", action="store_true", help="measure only the first page after the address is printed"
    )
    ap.add_argument("--keys", action="store_true", help="answer every card by keyboard, then Enter")
    ap.add_argument("--key-gap", type=float, default=0.25, help="seconds between key presses with --keys")
    ap.add_argument(
        "--auto-retrain", action="store_true", help="keep the project's retrain_every: rounds start as for a person"
    )
    ap.add_argument("--skip-pages", action="store_true", help="do not measure opening the pages afterwards")
    args = ap.parse_args()
    from alwb.jobs import stop_training
    from alwb.project import Project
    from alwb.uilaunch import spawn_ui

    with Project.open(args.project) as proj:
        retrain_every = proj.config.retrain_every
        ask = proj.config.ask_before_guesses
        if not args.auto_retrain:
            proj.set_config(retrain_every=0)
        if not args.keys:  # the clicking person submits the model's guesses untouched, without the question
            proj.set_config(ask_before_guesses=False)
    log_path = Path("bench/out/ui_latency_server.log")
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log_path.unlink(missing_ok=True)  # wait_address reads this run's output only
    server = spawn_ui(args.project, log_path, host=None)
    port = server.port
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            printed = wait_address(log_path)  # a person opens the address once it is printed
            server.wait_ready(60)
            base = f"http://127.0.0.1:{port}"
            page.goto(base)  # the address printed: the home page opens Label when a project is open
            page.wait_for_function(GRID_SHOWN, timeout=60_000)
            print(f"first page: the grid on screen {time.perf_counter() - printed:.3f} s after the address was printed")
            if args.first_page_only:
                browser.close()
                return
            from alwb.jobs import is_training, start_training

            lat: list[float] = []
            landed: list[bool] = []
            rounds_at_start = _rounds(args.project)
            phases: list[str] = []
            trained_during = 0
            page.screenshot(path="/tmp/uilat_before.png", full_page=True)
            if args.keys:
                _keyboard_person(page, args)
                return
            for _ in range(args.batches):
                if args.train and not is_training(args.project):
                    start_training(args.project)
                    trained_during += 1
                time.sleep(args.think)
                old = image_srcs(page)
                rounds_before = _rounds(args.project)
                phases.append(_phase(args.project))
                t0 = time.perf_counter()
                page.get_by_role("button", name="Submit batch", exact=False).click()
                try:
                    page.wait_for_function(f"old => ({NEXT_BATCH_SHOWN})(old) || ({ASKED})()", arg=old, timeout=30_000)
                    if page.evaluate(ASKED):  # nothing answered (no model yet): submitted again to skip them
                        t0 = time.perf_counter()
                        page.get_by_role("button", name="Submit batch", exact=False).click()
                    page.wait_for_function(
                        NEXT_BATCH_SHOWN,
                        arg=old,
                        timeout=30_000,
                    )
                except Exception:
                    page.screenshot(path="/tmp/uilat_fail.png", full_page=True)
                    raise
                lat.append(time.perf_counter() - t0)
                landed.append(_rounds(args.project) > rounds_before)
            print(summary("submit -> next batch" + (" (training running)" if args.train else ""), lat))
            slow = sorted(range(len(lat)), key=lat.__getitem__, reverse=True)[:5]
            notes = [f"{phases[i]}{', a round landed' if landed[i] else ''}" for i in range(len(lat))]
            print("slowest: " + ", ".join(f"#{i + 1} {lat[i]:.3f} s ({notes[i]})" for i in slow))
            if args.train:
                print(
                    f"training rounds started during the measurement: {trained_during}, finished:"
                    f" {_rounds(args.project) - rounds_at_start} (think time {args.think} s a batch)"
                )
            if args.skip_pages:
                return
            # opening a page: from the sidebar (what a person does in the app; no page reload), and as a fresh
            # load of its address (a new tab or a reload: the browser starts the app and a new session)
            pages = {"label": "Label", "progress": "Progress", "review": "Review", "settings": "Settings"}
            pages |= {"export": "Export", "start": "alwb workbench"}
            nav: dict[str, list[float]] = {}
            fresh: dict[str, list[float]] = {}
            for _ in range(3):
                for name, title in [*pages.items()][1:] + [*pages.items()][:1]:
                    t0 = time.perf_counter()
                    page.locator('[data-testid="stSidebarNav"] a[href$="/' + name + '"]').first.click()
                    page.wait_for_function(PAGE_SHOWN, arg=title, timeout=30_000)
                    nav.setdefault(name, []).append(time.perf_counter() - t0)
            for _ in range(3):
                for name, title in pages.items():
                    t0 = time.perf_counter()
                    page.goto(f"{base}/{name}")
                    page.wait_for_function(PAGE_SHOWN, arg=title, timeout=30_000)
                    fresh.setdefault(name, []).append(time.perf_counter() - t0)
            for name, xs in nav.items():
                print(summary(f"open {name} from the sidebar", xs))
            for name, xs in fresh.items():
                print(summary(f"open {name} as a fresh page load", xs))
            browser.close()
    finally:
        server.stop()
        stop_training(args.project)  # a round left running would skew the next measurement
        with Project.open(args.project) as proj:
            proj.set_config(retrain_every=retrain_every, ask_before_guesses=ask)


if __name__ == "__main__":
    main()
