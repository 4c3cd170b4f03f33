"""A team in a real browser, on PostgreSQL: two ``alwb ui`` servers serve one project, two annotators sign in (one
on each server) and label batches that overlap only on the overlap items, a reviewer settles a disagreement, a
training worker (``alwb worker``, a process of its own) trains the round asked for from the page while the page
shows its progress, a reload keeps the annotator signed in (and a sign-out does not survive one), and the History
page lists the annotator's own labels only.

Needs Debian's ``/usr/bin/chromium``, the ``playwright`` package and PostgreSQL's server binaries (the throw-away
cluster of ``tests/_postgres.py``). Every wait is bounded (``TIMEOUT_MS``, ``ROUND_WAIT_S``, ``TOTAL_S``).
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import CHROMIUM, CHROMIUM_ARGS, SHAPES, make_shapes

pytest.importorskip("playwright", reason="playwright is not installed (pip install -e '.[test]')")
from store_checks import label_history
from test_browser import TIMEOUT_MS, open_page, serve, settle, wait_for_answer  # noqa: E402

BATCH = 6
SHARE = 0.5  # half the items go to two annotators: both first batches hold some of them
ROUND_WAIT_S = 240
TOTAL_S = 900
PASSWORDS = {"ann": "ann password", "bob": "bob password", "rev": "rev password"}

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not Path(CHROMIUM).is_file(), reason=f"{CHROMIUM} is missing (apt-get install chromium)"),
]


@pytest.fixture
def team_project(tmp_path: Path, pg_url: str) -> Path:
    """60 shapes on a PostgreSQL store; two annotators and a reviewer; rounds only when asked for."""
    from alwb.project import Project
    from alwb.team import leases, users

    make_shapes(tmp_path / "shapes", 20, layout="flat")
    root = tmp_path / "team"
    with Project.create(root, classes=list(SHAPES), store_url=pg_url) as proj:
        proj.add_images(tmp_path / "shapes")
        proj.set_config(batch_size=BATCH, retrain_every=0)
        proj.set_train_config(epochs=60, device="cpu")
        leases.set_overlap_share(proj.store, SHARE)
        users.add_user(proj.store, "ann", PASSWORDS["ann"], "annotator")
        users.add_user(proj.store, "bob", PASSWORDS["bob"], "annotator")
        users.add_user(proj.store, "rev", PASSWORDS["rev"], "reviewer")
    return root


@contextlib.contextmanager
def worker(root: Path, log_path: Path) -> Iterator[subprocess.Popen]:
    """``alwb worker ROOT`` in a process of its own; stopped (SIGTERM, then SIGKILL) afterwards."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    log = open(log_path, "wb")  # noqa: SIM115 - closed in the finally below
    proc = subprocess.Popen(
        [sys.executable, "-m", "alwb", "worker", str(root), "--poll", "0.5", "--device", "cpu"],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env=env,
        start_new_session=True,
    )
    try:
        yield proc
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGCONT)  # a worker stopped by the test must run to hear SIGTERM
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=15)
        log.close()


def _store(root: Path):  # noqa: ANN202
    from alwb.project import Project

    return Project.open(root)


def sign_in(page, url: str, name: str) -> None:
    """Open the Label page and sign in as ``name``."""
    page.goto(f"{url}/label")
    page.get_by_role("heading", name="Sign in", exact=True).wait_for()
    settle(page)
    page.get_by_role("textbox", name="Name").fill(name)
    page.get_by_role("textbox", name="Password").fill(PASSWORDS[name])
    page.get_by_role("button", name="Sign in").click()
    page.get_by_text(f"Signed in as {name}").wait_for()  # on Label, or on Review for a reviewer
    settle(page)


def shown_cards(page) -> int:
    """How many image cards the Label page shows, once it shows its batch (under load a run can end, and the page
    look settled, a moment before the run that draws the batch)."""
    cards = page.locator('[class*="st-key-cell_"]')
    cards.first.wait_for()
    settle(page)
    return cards.count()


def answer_batch(page, n: int, key: str, cls: str) -> None:
    """Answer the ``n`` cards with the keyboard (``key`` each) and submit with Enter."""
    from playwright.sync_api import expect

    page.evaluate("() => document.activeElement && document.activeElement.blur()")
    for j in range(n):
        page.keyboard.press(key)
        wait_for_answer(page, j, cls)
    page.keyboard.press("Enter")
    expect(page.get_by_text(f"Saved {n} label(s) to the store")).to_be_visible()
    settle(page)


def labels_by(root: Path) -> dict[str, dict[int, str | None]]:
    """{annotator: {item: answer}} over every human label (the history included)."""
    out: dict[str, dict[int, str | None]] = {}
    with _store(root) as proj:
        rows = proj.store.con.execute(
            "SELECT l.item_id, l.annotator, c.name FROM labels l LEFT JOIN classes c ON c.id=l.class_id"
            " WHERE l.source='human' ORDER BY l.id"
        ).fetchall()
    for item_id, who, cls in rows:
        out.setdefault(str(who), {})[int(item_id)] = cls
    return out


def held(root: Path, name: str) -> set[int]:
    from alwb.team import leases

    with _store(root) as proj:
        return set(leases.held(proj.store, name))


@pytest.mark.flaky(reruns=1, reruns_delay=5)
def test_a_team_on_two_servers_with_a_worker(team_project: Path, tmp_path: Path) -> None:
    from playwright import sync_api
    from playwright.sync_api import expect

    from alwb.team.leases import is_overlap

    root = team_project
    t0 = time.monotonic()

    def lap(what: str) -> None:
        print(f"  {time.monotonic() - t0:5.1f} s  {what}")
        assert time.monotonic() - t0 < TOTAL_S, f"the team walk-through took over {TOTAL_S} s"

    sync_api.expect.set_options(timeout=TIMEOUT_MS)
    with (
        serve(root, tmp_path / "server_a.log") as url_a,
        serve(root, tmp_path / "server_b.log") as url_b,
        worker(root, tmp_path / "worker.log") as wproc,
        sync_api.sync_playwright() as pw,
    ):
        assert url_a != url_b
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        contexts = {n: browser.new_context(viewport={"width": 1400, "height": 1000}) for n in ("ann", "bob", "rev")}
        pages = {}
        for n, ctx in contexts.items():
            ctx.set_default_timeout(TIMEOUT_MS)
            pages[n] = ctx.new_page()
        ann, bob, rev = pages["ann"], pages["bob"], pages["rev"]
        try:
            # --- two annotators sign in, one on each server: their batches overlap only on overlap items
            sign_in(ann, url_a, "ann")
            sign_in(bob, url_b, "bob")
            lap("ann signed in on server A, bob on server B")
            assert any(c["name"].startswith("alwb_session_") for c in contexts["ann"].cookies())
            batches: dict[str, list[set[int]]] = {"ann": [], "bob": []}
            for rnd in range(2):
                for name, page, key, cls in (("ann", ann, "1", SHAPES[0]), ("bob", bob, "2", SHAPES[1])):
                    n = shown_cards(page)
                    mine = held(root, name)
                    assert len(mine) == n > 0, (name, rnd, mine, n)
                    batches[name].append(mine)
                    answer_batch(page, n, key, cls)
                a_now, b_now = batches["ann"][-1], batches["bob"][-1]
                assert all(is_overlap(i, SHARE) for i in a_now & b_now), "only overlap items go to both"
            lap("two batches each labeled")
            a_all, b_all = set().union(*batches["ann"]), set().union(*batches["bob"])
            shared = a_all & b_all
            assert shared, "the overlap items went to both annotators"
            assert all(is_overlap(i, SHARE) for i in shared)
            given = labels_by(root)
            assert set(given["ann"]) == a_all and set(given["bob"]) == b_all, "each label carries its annotator"
            assert set(given["ann"].values()) == {SHAPES[0]} and set(given["bob"].values()) == {SHAPES[1]}

            # --- the reviewer settles a disagreement (on server A)
            sign_in(rev, url_a, "rev")
            open_page(rev, f"{url_a}/review", "Review")
            rev.get_by_role("tab", name="Disagreements").click()
            expect(rev.get_by_text(f"{len(shared)} disagreement(s) to decide")).to_be_visible()
            decided = min(shared)
            box = rev.locator(f".st-key-dec_{decided}").get_by_role("combobox")
            box.click()
            rev.get_by_role("option", name=SHAPES[2], exact=True).click()
            rev.get_by_role("button", name="Save decisions").click()
            expect(rev.get_by_text("Saved 1 decision(s)")).to_be_visible()
            with _store(root) as proj:
                last = label_history(proj.store, decided)[-1]
                assert (last["class"], last["annotator"]) == (SHAPES[2], "rev")
            lap("reviewer decided a disagreement")

            # --- a round asked for on ann's page is trained by the worker; the page shows its progress and result
            deadline = time.monotonic() + 120
            with _store(root) as proj:
                while not proj.store.worker_rows():
                    assert wproc.poll() is None, (tmp_path / "worker.log").read_text()
                    assert time.monotonic() < deadline, "the worker did not register"
                    time.sleep(0.5)
            open_page(ann, f"{url_a}/label", "Label")
            ann.get_by_role("button", name="Retrain now").click()
            expect(ann.get_by_text("Round queued for the training worker")).to_be_visible()
            # the worker takes it; stopped (SIGSTOP) while it trains, it goes silent with its round in progress
            deadline = time.monotonic() + 120
            with _store(root) as proj:
                while (proj.store.progress_of((req := proj.store.round_requests()[0])["worker"] or "") or {}).get(
                    "phase"
                ) != "train":
                    assert req["status"] in ("queued", "running"), f"the round ended before it trained: {req}"
                    assert time.monotonic() < deadline, f"the worker did not start training: {req}"
                    time.sleep(0.05)
            os.killpg(wproc.pid, signal.SIGSTOP)
            try:
                expect(
                    ann.get_by_text(
                        re.compile(r"Round 1 in progress: training \d+/\d+ \(\d+%\) · worker .*, heard from \d+ s ago")
                    )
                ).to_be_visible()
                silent = ann.get_by_text(re.compile(r"Worker \S+ has not been heard from for \d+ s"))
                expect(silent).to_be_visible(timeout=60_000)
                seen = ann.get_by_text(re.compile(r"Round 1 in progress")).first.inner_text()
            finally:
                os.killpg(wproc.pid, signal.SIGCONT)
            lap(f"the page showed the worker's round and its silence: {seen!r}")
            result = ann.get_by_text(re.compile(r"Round 1 trained by worker "))
            expect(result).to_be_visible(timeout=ROUND_WAIT_S * 1000)
            expect(silent).to_have_count(0)
            with _store(root) as proj:
                (req,) = proj.store.round_requests()
                assert (req["status"], req["round"], req["requested_by"]) == ("done", 1, "ann")
                assert proj.current_model()["round"] == 1
            lap("the worker trained round 1; the page showed the result")

            # --- a reload and a new tab keep ann signed in
            ann.reload()
            ann.get_by_role("heading", name="Label", exact=True).wait_for()
            expect(ann.get_by_text("Signed in as ann")).to_be_visible()
            tab = contexts["ann"].new_page()
            open_page(tab, f"{url_a}/label", "Label")
            expect(tab.get_by_text("Signed in as ann")).to_be_visible()
            tab.close()
            lap("a reload and a new tab kept ann signed in")

            # --- History: ann's own labels only, with the reviewer's change
            open_page(ann, f"{url_a}/history", "History")
            expect(ann.get_by_text(f"{len(a_all)} answer(s) by ann in 2 batch(es)")).to_be_visible()
            cards = ann.locator('[class*="st-key-hcard_"]')
            expect(cards).to_have_count(len(a_all))
            with _store(root) as proj:
                names = {Path(proj.store.item(i)["path"]).name for i in a_all}
                others = {Path(proj.store.item(i)["path"]).name for i in b_all - a_all}
            texts = cards.evaluate_all("els => els.map(e => e.innerText)")
            shown = {m.group(0) for t in texts for m in [re.search(r"\w+_\d{3}\.png", t)] if m}
            assert shown == names and not shown & others, (shown, names)
            expect(ann.get_by_text(f"changed by rev to {SHAPES[2]}")).to_be_visible()
            lap("history lists ann's labels only")

            # --- signing out ends it for good: a reload asks for the sign-in again
            ann.get_by_role("button", name="Sign out").click()
            ann.get_by_role("heading", name="Sign in", exact=True).wait_for()
            settle(ann)
            ann.wait_for_function("() => !document.cookie.includes('alwb_session_')")
            ann.reload()
            ann.get_by_role("heading", name="Sign in", exact=True).wait_for()
            lap("signed out: a reload asks again")
        except BaseException:
            for n, page in pages.items():
                with contextlib.suppress(Exception):
                    page.screenshot(path=str(tmp_path / f"failure_{n}.png"), full_page=True)
            for log in ("server_a.log", "server_b.log", "worker.log"):
                with contextlib.suppress(Exception):
                    print(f"--- {log}\n" + (tmp_path / log).read_text(errors="replace")[-3000:])
            raise
        finally:
            browser.close()
