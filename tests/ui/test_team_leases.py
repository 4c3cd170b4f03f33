"""Leases on the Label page (issue 41): an open page keeps its batch's leases past their time to live (the page's
periodic refresh renews them, checked in Chromium), a late submit on items someone else holds now is refused with a
message while the other answers are saved, and a reviewer's sign-in leases nothing until they choose to label."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from conftest import CHROMIUM, CHROMIUM_ARGS, make_shapes

pytest.importorskip("streamlit")
import streamlit as st  # noqa: E402
from streamlit.testing.v1 import AppTest  # noqa: E402

from alwb.project import Project  # noqa: E402
from alwb.team import leases, users  # noqa: E402

APP = Path(__file__).resolve().parents[2] / "ui" / "app.py"
CHEAP = users.PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
PASSWORDS = {"ann": "ann password", "bob": "bob password", "rev": "rev password"}  # test_team_browser's


@pytest.fixture(autouse=True)
def _fresh(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("ALWB_PROJECT", raising=False)
    monkeypatch.setattr(users, "_hasher", CHEAP)
    st.cache_data.clear()
    st.cache_resource.clear()
    yield
    st.cache_data.clear()
    st.cache_resource.clear()


def _make(tmp_path: Path, url: str | None) -> Path:
    make_shapes(tmp_path / "shapes", 8, layout="flat")
    root = tmp_path / "proj"
    with Project.create(root, classes=["circle", "square", "triangle"], store_url=url) as proj:
        proj.add_images(tmp_path / "shapes")
        proj.set_config(batch_size=6, retrain_every=0)
        leases.set_overlap_share(proj.store, 0.0)
        for name, role in (("ann", "annotator"), ("bob", "annotator"), ("rev", "reviewer")):
            users.add_user(proj.store, name, PASSWORDS[name], role)
    return root


@pytest.fixture
def project(tmp_path: Path, store_location) -> Path:  # noqa: ANN001
    return _make(tmp_path, store_location if isinstance(store_location, str) else None)


def ok(at: AppTest) -> AppTest:
    assert not at.exception, [e.value for e in at.exception]
    return at


def _signed_in(project: Path, name: str) -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=90)
    at.query_params["project"] = str(project)
    ok(at.run())
    at.text_input(key="signin_name").input(name)
    at.text_input(key="signin_password").input(PASSWORDS[name])
    ok(at.button[0].click().run())
    assert [t.value for t in at.title] == ["Label"]
    return at


def _shown(at: AppTest) -> list[int]:
    return [int(s.key.split("_")[1]) for s in at.selectbox if s.key and s.key.startswith("ans_")]


def test_a_late_submit_on_items_someone_else_holds_is_refused_on_the_page(project: Path) -> None:
    at = _signed_in(project, "ann")
    ids = _shown(at)
    assert len(ids) == 6
    lapsed, kept = ids[:4], ids[4:]
    with Project.open(project) as proj:
        # ann's page was away: four of her leases ran out and bob got those items
        proj.store.con.execute(
            f"UPDATE leases SET expires_at=1 WHERE annotator='ann' AND item_id IN ({','.join('?' * 4)})", lapsed
        )
        assert sorted(leases.claim(proj.store, "bob", lapsed, 4)) == sorted(lapsed)
    for box in [s for s in at.selectbox if s.key and s.key.startswith("ans_")]:
        box.select("square")
    ok(at.button(key="submit").click().run())
    said = [m.value.replace("\\", "") for m in (*at.info, *at.success)]
    assert any("Saved 2 label(s)" in m and "4 answer(s) were not saved" in m for m in said), said
    with Project.open(project) as proj:
        mine = {r["item_id"] for r in proj.store.current_labels() if r["annotator"] == "ann"}
        assert mine == set(kept)
        assert sorted(leases.held(proj.store, "bob")) == sorted(lapsed)  # still bob's, unanswered
    assert not set(_shown(at)) & set(ids)  # a new batch


def _label_script() -> None:
    from ui.views import label

    label.render()


def test_a_reviewer_leases_nothing_until_choosing_to_label(project: Path) -> None:
    """A reviewer (who may land on Label, or open it to look) holds no items until pressing "Label a batch"."""
    with Project.open(project) as proj:
        session = users.sign_in(proj.store, "rev", PASSWORDS["rev"])
    at = AppTest.from_function(_label_script, default_timeout=90)
    at.query_params["project"] = str(project)
    at.session_state["alwb_signin"] = (session.token, "rev")
    ok(at.run())
    assert _shown(at) == []
    with Project.open(project) as proj:
        assert leases.held(proj.store, "rev") == []
    ok(at.button(key="start_labeling").click().run())
    ids = _shown(at)
    assert len(ids) == 6
    with Project.open(project) as proj:
        assert sorted(leases.held(proj.store, "rev")) == sorted(ids)
    ok(at.run())  # the choice holds for the session
    assert sorted(_shown(at)) == sorted(ids)


@pytest.mark.slow
@pytest.mark.skipif(not Path(CHROMIUM).is_file(), reason=f"{CHROMIUM} is missing (apt-get install chromium)")
def test_an_idle_open_page_keeps_its_leases_past_their_time_to_live(tmp_path: Path) -> None:
    """Leases of 4 s; the page is left alone for 12 s (three times their life): the refresh renews them, so they
    are the same items and still live all along. Before, only a full rerun renewed them and they lapsed after 4 s."""
    pytest.importorskip("playwright", reason="playwright is not installed (pip install -e '.[test]')")
    from conftest import CHROMIUM_ARGS
    from playwright import sync_api
    from test_browser import TIMEOUT_MS, serve
    from test_team_browser import shown_cards, sign_in

    root = _make(tmp_path, None)
    with Project.open(root) as proj:
        leases.set_lease_ttl(proj.store, 4.0)
    sync_api.expect.set_options(timeout=TIMEOUT_MS)
    with serve(root, tmp_path / "server.log") as url, sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(TIMEOUT_MS)
            sign_in(page, url, "ann")
            assert shown_cards(page) == 6
            with Project.open(root) as proj:
                first = sorted(leases.held(proj.store, "ann"))
            assert len(first) == 6
            checks = []
            t_end = time.monotonic() + 12
            while time.monotonic() < t_end:
                time.sleep(1.0)
                with Project.open(root) as proj:
                    checks.append(sorted(leases.held(proj.store, "ann")))
            assert all(c == first for c in checks), checks
        finally:
            browser.close()


def _progress_script() -> None:
    from ui.views import progress

    progress.render()


def test_the_progress_page_says_how_many_validation_items_are_labeled(tmp_path: Path) -> None:
    make_shapes(tmp_path / "shapes", 8, layout="flat")
    root = tmp_path / "solo"
    with Project.create(root, classes=["circle", "square", "triangle"]) as proj:
        proj.add_images(tmp_path / "shapes")
        val = sorted(proj.store.val_item_ids())
        proj.label([(val[0], "circle"), (val[1], None)])  # "none of these" counts as labeled too
    at = AppTest.from_function(_progress_script, default_timeout=90)
    at.query_params["project"] = str(root)
    ok(at.run())
    shown = [c.value.replace("\\", "") for c in at.caption]
    assert any(f"Validation sample: 2 of {len(val)} item(s) labeled" in c for c in shown), shown


@pytest.mark.slow
@pytest.mark.skipif(not Path(CHROMIUM).is_file(), reason=f"{CHROMIUM} is missing (apt-get install chromium)")
def test_a_closed_tab_or_a_sign_out_gives_the_items_back_and_a_reload_keeps_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reload (a new browser session showing the same batch) keeps the leases and the drafts; signing out, and
    closing the tab, give the items back with their drafts, within ``ui.leasewatch.CHECK_S`` (10 s) and
    ``ALWB_CLOSED_TAB_S`` (2 s here; 20 by default) seconds, instead of when the leases expire (10 minutes)."""
    pytest.importorskip("playwright", reason="playwright is not installed (pip install -e '.[test]')")
    from playwright import sync_api
    from test_browser import TIMEOUT_MS, serve
    from test_team_browser import shown_cards, sign_in

    monkeypatch.setenv("ALWB_CLOSED_TAB_S", "2")
    root = _make(tmp_path, None)

    def held() -> list[int]:
        with Project.open(root) as proj:
            return sorted(leases.held(proj.store, "ann"))

    sync_api.expect.set_options(timeout=TIMEOUT_MS)
    with serve(root, tmp_path / "server.log") as url, sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(viewport={"width": 1400, "height": 1000})
            page = context.new_page()
            page.set_default_timeout(TIMEOUT_MS)
            sign_in(page, url, "ann")
            assert shown_cards(page) == 6
            first = held()
            assert len(first) == 6
            with Project.open(root) as proj:
                proj.store.save_draft("ann", first[0], "square")
            page.reload()  # the cookie signs her in again: a new session, the same batch
            page.get_by_role("heading", name="Label", exact=True).wait_for()
            assert shown_cards(page) == 6
            time.sleep(8)  # well past the old session's grace
            assert held() == first
            with Project.open(root) as proj:
                assert proj.store.drafts("ann", first) == {first[0]: "square"}
            # signing out gives them back too (the tab stays open)
            page.get_by_role("button", name="Sign out").click()
            page.get_by_role("heading", name="Sign in", exact=True).wait_for()
            t0 = time.monotonic()
            while held():
                assert time.monotonic() - t0 < 30, "a signed-out session's items were not given back"
                time.sleep(0.5)
            out_after = time.monotonic() - t0
            with Project.open(root) as proj:
                assert proj.store.drafts("ann", first) == {}
            sign_in(page, url, "ann")
            assert shown_cards(page) == 6
            first = held()
            assert len(first) == 6
            with Project.open(root) as proj:
                proj.store.save_draft("ann", first[0], "circle")
            page.close()
            t0 = time.monotonic()
            while held():
                assert time.monotonic() - t0 < 30, "the closed tab's items were not given back"
                time.sleep(0.5)
            gone_after = time.monotonic() - t0
            with Project.open(root) as proj:
                assert proj.store.drafts("ann", first) == {}
            assert gone_after < 15 and out_after < 20, (gone_after, out_after)
        finally:
            browser.close()
