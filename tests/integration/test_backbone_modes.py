"""Photos on a pretrained backbone: ``head`` and ``finetune`` round trips on the hymenoptera photos (init → train →
query → label → train → export → predict) with a backbone file the test makes, and the offline fallback.

The backbone's weights are random (made here from torchvision's ResNet-18 architecture and imported with
``alwb weights add``'s function): these tests check the plumbing, never accuracy.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from weights_helpers import hide_packaged_weights, isolate_hub, save_state_dict

from alwb.io.export import Predictor, export_project
from alwb.io.onnxpredict import OnnxPredictor
from alwb.learning import backbones
from alwb.project import Project

PHOTOS = Path(__file__).resolve().parents[2].parent / "shared" / "datasets" / "hymenoptera" / "train"
pytestmark = pytest.mark.skipif(not PHOTOS.is_dir(), reason=f"{PHOTOS} is missing (../shared beside the checkout)")


def photos(dest: Path, per_class: int) -> dict[str, str]:
    """``per_class`` ants and bees copied into one flat folder (as a person's photos would be); path -> class."""
    dest.mkdir(parents=True)
    truth = {}
    for cls in ("ants", "bees"):
        for f in sorted((PHOTOS / cls).glob("*.jpg"))[:per_class]:
            shutil.copy2(f, dest / f"{cls}_{f.name}")
            truth[str((dest / f"{cls}_{f.name}").resolve())] = cls
    return truth


@pytest.fixture
def resnet18_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """ResNet-18 weights made by the test, imported as a custom file into an isolated hub; offline otherwise."""
    isolate_hub(monkeypatch, tmp_path)
    monkeypatch.setenv(backbones.OFFLINE_ENV, "1")
    f = save_state_dict(tmp_path / "made" / "resnet18-own.pth", seed=3)
    origin = backbones.add("resnet18", f)
    assert origin.kind == "custom"
    return f


def label_batch(proj: Project, truth: dict[str, str], n: int) -> list[int]:
    q = proj.query(n)
    proj.label([(it.id, truth[proj.store.item(it.id)["path"]]) for it in q.items])
    return [it.id for it in q.items]


def predictions_match_the_project(proj: Project, out: Path, ids: list[int]) -> None:
    rep = export_project(proj, out)
    pred = Predictor(rep.model_dir)
    paths = [proj.store.item(i)["path"] for i in ids]
    got = pred.predict_paths(paths)
    scores = proj.scores()
    assert scores is not None
    mine = scores.probs_at(scores.rows(np.asarray(ids)))
    theirs = np.asarray([[g["probabilities"][c] for c in proj.classes] for g in got])
    np.testing.assert_allclose(theirs, mine, atol=2e-3)
    # the ONNX model is the whole model (backbone and head), run by onnxruntime: the PyTorch model's probabilities
    onnx = OnnxPredictor(rep.model_dir).predict_paths(paths)
    assert [o["predicted"] for o in onnx] == [g["predicted"] for g in got]
    from_onnx = np.asarray([[o["probabilities"][c] for c in proj.classes] for o in onnx])
    np.testing.assert_allclose(from_onnx, theirs, atol=1e-4)
    card = (rep.model_dir / "MODEL_CARD.md").read_text()
    assert "backbone: resnet18" in card and backbones.sha256_file(backbones.resolve_weights("resnet18").file) in card


def test_head_round_trip_embeds_once_and_predicts_what_the_project_scored(resnet18_file: Path, tmp_path: Path) -> None:
    truth = photos(tmp_path / "photos", 12)
    with Project.create(tmp_path / "p", classes=["ants", "bees"]) as proj:
        proj.set_config(val_size=4)
        proj.set_train_config(mode="head", backbone="resnet18", device="cpu")
        proj.add_images(tmp_path / "photos")
        label_batch(proj, truth, 10)
        first = proj.train()
        geo = proj.geometry()
        assert (geo.mode, geo.backbone, geo.image_size, geo.arch) == (
            "head",
            "resnet18",
            224,
            "head:resnet18",
        )
        assert any("training: head" in n for n in first.notes)
        rounds = proj.store.rounds()
        assert rounds[-1]["timings"]["embedded"] == 24  # every photo, once
        caches = list((proj.root / "cache").glob("emb_resnet18_*.npy"))
        assert caches
        q = proj.query(6)
        assert q.note is None and all(it.predicted in ("ants", "bees") for it in q.items if it.reason != "validation")
        label_batch(proj, truth, 6)
        second = proj.train()
        assert proj.store.rounds()[-1]["timings"]["embedded"] == 0  # the next round reads the cache
        assert second.round == 2 and second.metrics["val"]["n"] > 0
        predictions_match_the_project(proj, tmp_path / "out", sorted(proj.scores().ids.tolist())[:8])


def test_a_large_folder_is_embedded_a_share_a_round_and_the_first_round_comes_early(
    resnet18_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With more images to embed than a round's share (``EMBED_PER_ROUND``, 10 here for 40 photos), the first head
    round embeds the labeled ones, the stop set and a random share, fits and scores those; the model ranks them
    at once, and the next rounds embed the rest."""
    from alwb.learning import advice, trainers
    from alwb.learning.embed import EmbeddingCache

    monkeypatch.setattr(trainers, "EMBED_PER_ROUND", 10)
    monkeypatch.setattr(advice, "STOP_SET_SIZE", 6)
    truth = photos(tmp_path / "photos", 20)
    with Project.create(tmp_path / "p", classes=["ants", "bees"]) as proj:
        proj.set_config(val_size=4)
        proj.set_train_config(mode="head", backbone="resnet18", device="cpu")
        proj.add_images(tmp_path / "photos")
        labeled = label_batch(proj, truth, 8)
        first = proj.train()
        bb = backbones.load("resnet18", download=False, quiet=True)
        done = set(EmbeddingCache.for_backbone(proj.root, bb).embedded_ids().tolist())
        stop = set(trainers.stop_items(proj.round_inputs(), proj.train_config).tolist())
        assert set(labeled) | stop <= done and len(done) < 40  # the labeled ones and the stop set first, not all
        assert len(done) <= len(set(labeled) | stop) + 10
        assert any("the next rounds embed the other" in n for n in first.notes)
        scored = set(proj.scores().ids.tolist())
        assert scored <= done and scored  # scores only what is embedded
        q = proj.query(4)
        pool = [it for it in q.items if it.reason != "validation"]
        assert pool and all(it.id in done and it.predicted in ("ants", "bees") for it in pool)  # ranked at once
        for _ in range(4):  # later rounds embed the rest, a share each
            label_batch(proj, truth, 2)
            proj.train()
        done = set(EmbeddingCache.for_backbone(proj.root, bb).embedded_ids().tolist())
        assert done == set(proj.store.item_ids())
        assert set(proj.scores().ids.tolist()) == done


def test_finetune_round_trip_warm_starts_and_predicts_what_the_project_scored(
    resnet18_file: Path, tmp_path: Path
) -> None:
    truth = photos(tmp_path / "photos", 6)
    with Project.create(tmp_path / "p", classes=["ants", "bees"]) as proj:
        proj.set_config(val_size=2)
        proj.set_train_config(mode="finetune", backbone="resnet18", device="cpu", epochs=2, batch_size=8)
        proj.add_images(tmp_path / "photos")
        label_batch(proj, truth, 6)
        first = proj.train()
        geo = proj.geometry()
        assert (geo.mode, geo.arch, geo.image_size) == ("finetune", "bb:resnet18", 224)
        assert not first.warm
        assert not any("min for this round's" in n for n in first.notes)  # seconds of training: no warning
        label_batch(proj, truth, 4)
        second = proj.train()
        assert second.warm  # warm-started from the last round
        predictions_match_the_project(proj, tmp_path / "out", sorted(proj.scores().ids.tolist())[:6])


def test_offline_without_weights_trains_from_scratch_and_says_how_to_get_them(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    isolate_hub(monkeypatch, tmp_path)
    hide_packaged_weights(monkeypatch)  # a machine where alwb's EfficientNet-Lite0 package is not installed
    monkeypatch.setenv(backbones.OFFLINE_ENV, "1")
    truth = photos(tmp_path / "photos", 6)
    with Project.create(tmp_path / "p", classes=["ants", "bees"]) as proj:
        proj.set_config(val_size=2)
        proj.set_train_config(device="cpu", epochs=1)
        proj.add_images(tmp_path / "photos")
        label_batch(proj, truth, 6)
        t0 = time.perf_counter()
        geo = proj.geometry(fetch=True)
        assert time.perf_counter() - t0 < 5  # one clear line, no hang
        assert geo.mode == "scratch" and geo.weights_missing
        assert "alwb weights fetch" in geo.mode_reason and "dinov2_vits14" in geo.mode_reason
        summary = proj.train()
        assert proj.geometry().arch == "cnn6" and summary.round == 1
        # weights arrive (imported here): the next round moves the photos to the backbone
        backbones.add("resnet18", save_state_dict(tmp_path / "made" / "r18.pth"))
        proj.set_train_config(backbone="resnet18")
        assert proj.geometry().mode == "head"  # auto on a CPU, weights on this machine now
        assert proj.train().round == 2 and proj.store.get_meta("geometry")["mode"] == "head"


def test_the_simulator_measures_head_rounds_on_embedded_test_images(resnet18_file: Path, tmp_path: Path) -> None:
    from alwb.config import TrainConfig
    from alwb.simulate import SimSettings, simulate

    data = tmp_path / "D"
    for split, n, skip in (("train", 8, 0), ("test", 3, 8)):
        for cls in ("ants", "bees"):
            (data / split / cls).mkdir(parents=True)
            for f in sorted((PHOTOS / cls).glob("*.jpg"))[skip : skip + n]:
                shutil.copy2(f, data / split / cls / f.name)
    train = TrainConfig(mode="head", backbone="resnet18", device="cpu")
    s = SimSettings(initial=4, batch=4, budget=8, val_size=2, train=train)
    curve = simulate(data, tmp_path / "out", strategies=["margin"], seeds=[0], settings=s, log=False)
    import csv

    with open(curve, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [int(r["n_labeled"]) for r in rows] == [4, 8]
    assert all(0.0 <= float(r["test_accuracy"]) <= 1.0 for r in rows)
    assert list((tmp_path / "out" / "test_embeddings" / "cache").glob("emb_resnet18_*.npy"))
    with Project.open(tmp_path / "out" / "runs" / "margin-plain-seed0") as proj:
        assert proj.geometry().mode == "head"
