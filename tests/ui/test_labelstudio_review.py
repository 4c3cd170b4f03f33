"""Annotators' disagreements imported from Label Studio show on the Review page, on both store backends."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import make_shapes

pytest.importorskip("streamlit")
import streamlit as st  # noqa: E402
from streamlit.testing.v1 import AppTest  # noqa: E402

from alwb.io.labelstudio import import_labelstudio  # noqa: E402
from alwb.project import Project  # noqa: E402
from alwb.team import agreement  # noqa: E402


@pytest.fixture(autouse=True)
def _fresh(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("ALWB_PROJECT", raising=False)
    st.cache_data.clear()
    st.cache_resource.clear()
    yield
    st.cache_data.clear()
    st.cache_resource.clear()


def _review_script() -> None:
    from ui.views import review

    review.render()


def _task(name: str, *answers: tuple[str, int, str]) -> dict:
    return {
        "data": {"image": f"/data/upload/1/0a1b2c3d-{name}"},
        "annotations": [
            {
                "completed_by": {"id": who, "email": f"user{who}@example.org"},
                "created_at": when,
                "result": [{"from_name": "choice", "to_name": "image", "type": "choices", "value": {"choices": [c]}}],
            }
            for c, who, when in answers
        ],
    }


def test_labelstudio_disagreements_go_to_review(tmp_path: Path, store_location) -> None:  # noqa: ANN001
    make_shapes(tmp_path / "shapes", 2, layout="flat")
    tasks = [
        _task("circle_000.png", ("circle", 1, "2024-01-01T10:00:00Z"), ("square", 2, "2024-01-01T11:00:00Z")),
        _task("square_000.png", ("square", 1, "2024-01-01T10:00:00Z"), ("square", 2, "2024-01-01T11:00:00Z")),
        _task("triangle_001.png", ("triangle", 2, "2024-01-01T12:00:00Z")),
    ]
    (tmp_path / "ls.json").write_text(json.dumps(tasks))
    root = tmp_path / "proj"
    url = store_location if isinstance(store_location, str) else None
    with Project.create(root, classes=["circle", "square", "triangle"], store_url=url) as proj:
        rep = import_labelstudio(proj, tmp_path / "ls.json", tmp_path / "shapes")
        assert rep.labels == 5 and rep.disagreements == 1 and rep.skipped_tasks == []
        (d,) = agreement.review_queue(proj.store)
        assert d.answers == {"user1@example.org": "circle", "user2@example.org": "square"}
        pairs = agreement.pairwise_kappa(proj.store)
        assert [(p.a, p.b, p.n_items, p.agreement) for p in pairs] == [
            ("user1@example.org", "user2@example.org", 2, 0.5)
        ]
    at = AppTest.from_function(_review_script, default_timeout=90)
    at.query_params["project"] = str(root)
    at.session_state["alwb_signin"] = ("not checked by this page", "rev")
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert any("1 disagreement(s) to decide" in c.value for c in at.caption), [c.value for c in at.caption]
    assert any("user1@example.org: circle · user2@example.org: square" in t.value for t in at.text)
