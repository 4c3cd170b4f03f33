"""Sign-in in the workbench (AppTest, no browser) and ``alwb ui`` refusing a non-local address without users."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import make_shapes

pytest.importorskip("streamlit")
import streamlit as st  # noqa: E402
from store_checks import label_history
from streamlit.testing.v1 import AppTest  # noqa: E402

from alwb.cli import main  # noqa: E402
from alwb.project import Project  # noqa: E402
from alwb.team import users  # noqa: E402

APP = Path(__file__).resolve().parents[2] / "ui" / "app.py"
CHEAP = users.PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)


@pytest.fixture(autouse=True)
def _fresh(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("ALWB_PROJECT", raising=False)
    monkeypatch.setattr(users, "_hasher", CHEAP)
    st.cache_data.clear()
    st.cache_resource.clear()
    yield
    st.cache_data.clear()
    st.cache_resource.clear()


@pytest.fixture
def project(tmp_path: Path, store_location) -> Path:  # noqa: ANN001
    make_shapes(tmp_path / "shapes", 8, layout="flat")
    root = tmp_path / "proj"
    url = store_location if isinstance(store_location, str) else None
    with Project.create(root, classes=["circle", "square", "triangle"], store_url=url) as proj:
        proj.add_images(tmp_path / "shapes")
        users.add_user(proj.store, "ann", "annotator pw", "annotator")
        users.add_user(proj.store, "rev", "reviewer pw", "reviewer")
    return root


def ok(at: AppTest) -> AppTest:
    assert not at.exception, [e.value for e in at.exception]
    return at


def _sign_in(at: AppTest, name: str, password: str) -> AppTest:
    at.text_input(key="signin_name").input(name)
    at.text_input(key="signin_password").input(password)
    return ok(at.button[0].click().run())


def test_a_project_with_users_asks_for_a_sign_in_and_labels_carry_the_user(project: Path) -> None:
    at = AppTest.from_file(str(APP), default_timeout=90)
    at.query_params["project"] = str(project)
    at.query_params["annotator"] = "someone-else"  # the URL cannot choose who labels once there are accounts
    ok(at.run())
    assert [t.value for t in at.title] == ["Sign in"]
    assert not [s for s in at.selectbox if s.key and s.key.startswith("ans_")]  # no images before signing in

    _sign_in(at, "ann", "wrong password")
    assert any("wrong name or password" in e.value for e in at.error)
    assert [t.value for t in at.title] == ["Sign in"]

    _sign_in(at, "ann", "annotator pw")
    assert [t.value for t in at.title] == ["Label"]
    assert any("Signed in as ann (annotator)" in c.value for c in at.sidebar.caption)
    boxes = [s for s in at.selectbox if s.key and s.key.startswith("ans_")]
    first = int(boxes[0].key.split("_")[1])
    boxes[0].select("square")
    ok(at.button(key="submit").click().run())
    with Project.open(project) as proj:
        (row,) = [r for r in proj.store.current_labels() if r["item_id"] == first]
        assert (row["class"], row["annotator"]) == ("square", "ann")

    # signing out (or a session that ended) brings the form back
    ok(at.sidebar.button[0].click().run())
    assert [t.value for t in at.title] == ["Sign in"]


def test_a_disabled_account_is_signed_out_at_the_next_click(project: Path) -> None:
    at = AppTest.from_file(str(APP), default_timeout=90)
    at.query_params["project"] = str(project)
    ok(at.run())
    _sign_in(at, "rev", "reviewer pw")
    assert [t.value for t in at.title] == ["Review"]  # a reviewer lands on Review: no labeling batch is leased
    with Project.open(project) as proj:
        from alwb.team import leases

        assert leases.held(proj.store, "rev") == []
        users.set_disabled(proj.store, "rev")
    ok(at.run())
    assert [t.value for t in at.title] == ["Sign in"]
    assert any("session ended" in i.value for i in at.info)


def test_ui_refuses_a_network_address_without_users(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from alwb.uilaunch import check_exposure

    root = tmp_path / "proj"
    Project.create(root).close()
    assert main(["ui", str(root), "--host", "0.0.0.0"]) == 2
    assert "refusing to serve on 0.0.0.0 without sign-in" in capsys.readouterr().err
    assert main(["ui", "--host", "0.0.0.0"]) == 2  # no project: nobody to sign in either
    check_exposure(root, "127.0.0.1")  # this machine only: fine
    check_exposure(root, "0.0.0.0", no_auth=True)  # on purpose: fine
    with Project.open(root) as proj:
        users.add_user(proj.store, "adm", "admin password", "admin")
    check_exposure(root, "0.0.0.0")  # everyone signs in now


def test_two_signed_in_annotators_get_disjoint_batches(project: Path) -> None:
    from alwb.team import leases

    with Project.open(project) as proj:
        leases.set_overlap_share(proj.store, 0.0)
        users.add_user(proj.store, "bob", "bobs password", "annotator")
    seen = {}
    for name, pw in (("ann", "annotator pw"), ("bob", "bobs password")):
        at = AppTest.from_file(str(APP), default_timeout=90)
        at.query_params["project"] = str(project)
        ok(at.run())
        _sign_in(at, name, pw)
        assert [t.value for t in at.title] == ["Label"]
        seen[name] = {int(s.key.split("_")[1]) for s in at.selectbox if s.key and s.key.startswith("ans_")}
    assert seen["ann"] and seen["bob"] and not seen["ann"] & seen["bob"]
    with Project.open(project) as proj:
        assert set(leases.held(proj.store, "ann")) == seen["ann"] and set(leases.held(proj.store, "bob")) == seen["bob"]


def _review_script() -> None:
    from ui.views import review

    review.render()


def test_a_reviewer_decides_a_disagreement_on_the_review_page(project: Path) -> None:
    from alwb.store import LabelRow
    from alwb.team import agreement

    with Project.open(project) as proj:
        a, b = proj.store.item_ids()[:2]
        proj.store.add_labels([LabelRow(a, "circle"), LabelRow(b, "square")], annotator="ann")
        proj.store.add_labels([LabelRow(a, "square"), LabelRow(b, "square")], annotator="bob")
    at = AppTest.from_function(_review_script, default_timeout=90)
    at.query_params["project"] = str(project)
    at.session_state["alwb_signin"] = ("not checked by this page", "rev")
    ok(at.run())
    assert any("Fleiss' kappa" in c.value and "2 item(s)" in c.value for c in at.caption), [c.value for c in at.caption]
    assert any("1 disagreement(s) to decide" in c.value for c in at.caption)
    at.selectbox(key=f"dec_{a}").select("triangle")
    submit = [btn for btn in at.button if btn.label == "Save decisions"]
    ok(submit[0].click().run())
    with Project.open(project) as proj:
        assert label_history(proj.store, a)[-1]["class"] == "triangle"
        assert label_history(proj.store, a)[-1]["annotator"] == "rev"
        assert agreement.review_queue(proj.store) == []


def _progress_script() -> None:
    from ui.views import progress

    progress.render()


def test_progress_shows_annotators_and_their_agreement_with_reviews(project: Path) -> None:
    from alwb.store import LabelRow
    from alwb.team import agreement

    with Project.open(project) as proj:
        a, b = proj.store.item_ids()[:2]
        proj.store.add_labels([LabelRow(a, "circle"), LabelRow(b, "square")], annotator="ann")
        proj.store.add_labels([LabelRow(a, "square")], annotator="bob")
        agreement.decide(proj.store, a, "rev", "square")
        session = users.sign_in(proj.store, "rev", "reviewer pw")
    at = AppTest.from_function(_progress_script, default_timeout=90)
    at.query_params["project"] = str(project)
    at.session_state["alwb_signin"] = (session.token, "rev")  # the page runs behind app.py's gate: signed in
    ok(at.run())
    assert "Annotators" in [h.value for h in at.subheader]
    table = at.dataframe[-1].value
    assert dict(zip(table["annotator"], table["agreed with the reviewer"], strict=True)) == {"ann": 0, "bob": 1}


def test_a_reload_signs_in_again_from_the_cookie_and_a_sign_out_ends_it(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A new Streamlit session (a reload, a new tab) finds the sign-in in the browser's cookie
    (``st.context.cookies``: stood in for here); after a sign-out that cookie no longer signs anyone in."""
    from ui import state
    from ui.views import signin

    jar: dict[str, str] = {}
    monkeypatch.setattr(state, "cookie", jar.get)
    at = AppTest.from_file(str(APP), default_timeout=90)
    at.query_params["project"] = str(project)
    ok(at.run())
    _sign_in(at, "ann", "annotator pw")
    token = at.session_state["alwb_signin"][0]
    scripts = [e.proto.body for e in at.get("html")]
    with Project.open(project) as proj:
        name = signin.cookie_name(proj)
    assert any(f"{name}={token}" in s and "SameSite=Strict" in s for s in scripts), scripts
    assert token not in str(at.query_params), "the token never goes into the URL"

    jar[name] = token  # what the browser sends when the reloaded page connects
    again = AppTest.from_file(str(APP), default_timeout=90)
    again.query_params["project"] = str(project)
    ok(again.run())
    assert [t.value for t in again.title] == ["Label"]
    assert any("Signed in as ann (annotator)" in c.value for c in again.sidebar.caption)

    ok(again.sidebar.button[0].click().run())  # sign out
    assert [t.value for t in again.title] == ["Sign in"]
    assert any("max-age=0" in e.proto.body and name in e.proto.body for e in again.get("html"))
    third = AppTest.from_file(str(APP), default_timeout=90)  # the cookie, had it stayed, signs nobody in
    third.query_params["project"] = str(project)
    ok(third.run())
    assert [t.value for t in third.title] == ["Sign in"]


def _history_script() -> None:
    from ui.views import history

    history.render()


def test_the_history_page_lists_the_signed_in_persons_own_labels(project: Path) -> None:
    from alwb.store import LabelRow
    from alwb.team import agreement

    with Project.open(project) as proj:
        a, b, c = proj.store.item_ids()[:3]
        proj.store.add_labels([LabelRow(a, "circle"), LabelRow(b, "square")], annotator="ann", batch_id="x1")
        proj.store.add_labels([LabelRow(a, "square"), LabelRow(c, "circle")], annotator="bob", batch_id="x2")
        agreement.decide(proj.store, a, "rev", "triangle")
    at = AppTest.from_function(_history_script, default_timeout=90)
    at.query_params["project"] = str(project)
    at.session_state["alwb_signin"] = ("not checked by this page", "ann")
    ok(at.run())
    assert [t.value for t in at.title] == ["History"]
    counts = " ".join(x.value for x in at.caption).replace("\\", "")
    assert "2 answer(s) by ann in 1 batch(es)" in counts and "1 changed by a reviewer" in counts
    texts = [t.value for t in at.text]
    with Project.open(project) as proj:
        mine = {Path(proj.store.item(i)["path"]).name for i in (a, b)}
        theirs = Path(proj.store.item(c)["path"]).name
    assert mine <= set(texts) and theirs not in texts
    assert any("changed by rev to triangle" in w.value for w in at.warning)
