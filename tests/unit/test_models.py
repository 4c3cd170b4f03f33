"""Model registry, geometry choice, offline pretrained weights and safe loading of model files."""

from __future__ import annotations

import logging
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from alwb.errors import AlwbError, UnsafeModelFileError
from alwb.io.export import load_state_dict_file
from alwb.learning.models import choose_arch, get_model, list_models


@pytest.mark.parametrize(
    ("arch", "size", "channels"),
    [
        ("cnn6", 28, 1),
        ("cnn6", 16, 3),
        ("smallcnn", 28, 1),
        ("smallcnn", 16, 3),
        ("resnet18", 32, 1),
        ("resnet18", 96, 3),
        ("resnet18", 96, 1),
    ],
)
def test_models_give_logits_and_embeddings(arch: str, size: int, channels: int) -> None:
    m = get_model(arch, channels=channels, num_classes=4, image_size=size).eval()
    x = torch.randn(2, channels, size, size)
    with torch.no_grad():
        assert m(x).shape == (2, 4)
        assert m.embed(x).shape == (2, m.emb_dim)
        assert torch.allclose(m.head(m.embed(x)), m(x))


def test_registry_and_auto_choice() -> None:
    assert list_models() == ["cnn6", "resnet18", "smallcnn"]
    # a from-scratch round is from scratch at every size: pretrained features are the training plan's
    # (alwb.learning.plan)
    assert choose_arch("auto", 28) == "cnn6" and choose_arch("auto", 160) == "cnn6"
    assert choose_arch("smallcnn", 28) == "smallcnn"  # the earlier default stays available (and older projects keep it)
    assert choose_arch("resnet18", 160) == "resnet18"
    with pytest.raises(AlwbError, match="unknown model"):
        choose_arch("vit", 28)


def test_pretrained_weights_missing_offline_warns_and_starts_random(tmp_path: Path, monkeypatch, caplog) -> None:
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    with caplog.at_level(logging.WARNING, logger="alwb.learning.models"):
        m = get_model("resnet18", channels=3, num_classes=2, image_size=96, pretrained="auto")
    assert "not available offline" in caplog.text and "random initialisation" in caplog.text
    assert m(torch.randn(1, 3, 96, 96)).shape == (1, 2)


def test_pretrained_resnet18_weights_are_hash_checked(tmp_path: Path, monkeypatch) -> None:
    """``pretrained="auto"`` takes ResNet-18's weights only through alwb.learning.backbones: a file under the
    published name
    whose SHA-256 is not the published one is not loaded (it was, unchecked, before); a file added with
    ``alwb weights add`` is, by its recorded hash; an explicit path is loaded as given."""
    from torchvision.models import resnet18
    from weights_helpers import isolate_hub

    from alwb.learning import backbones

    torch.manual_seed(1)
    ref = resnet18(weights=None)
    ckpt = isolate_hub(monkeypatch, tmp_path)
    ckpt.mkdir(parents=True)
    torch.save(ref.state_dict(), ckpt / backbones.get_spec("resnet18").file_name)  # the name, not the content
    torch.manual_seed(2)
    m = get_model("resnet18", channels=3, num_classes=2, image_size=96, pretrained="auto")
    assert not torch.equal(m.backbone.layer1[0].conv1.weight, ref.layer1[0].conv1.weight)
    explicit = tmp_path / "w.pt"
    torch.save(ref.state_dict(), explicit)
    assert backbones.add("resnet18", explicit).kind == "custom"
    m = get_model("resnet18", channels=3, num_classes=2, image_size=96, pretrained="auto")
    assert torch.equal(m.backbone.layer1[0].conv1.weight, ref.layer1[0].conv1.weight)
    grey = get_model("resnet18", channels=1, num_classes=2, image_size=96, pretrained="auto")
    assert torch.allclose(grey.backbone.conv1.weight[:, 0], ref.conv1.weight.mean(dim=1))
    m2 = get_model("resnet18", channels=3, num_classes=2, image_size=96, pretrained=str(explicit))
    assert torch.equal(m2.backbone.layer4[1].conv2.weight, ref.layer4[1].conv2.weight)
    with pytest.raises(AlwbError, match="not found"):
        get_model("resnet18", channels=3, num_classes=2, image_size=96, pretrained=str(tmp_path / "nope.pt"))


class _Evil:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):  # noqa: ANN204 - pickle protocol
        return (open, (self.marker, "w"))


def test_a_pickled_model_file_is_refused_and_never_runs(tmp_path: Path) -> None:
    marker = tmp_path / "pwned.txt"
    bad = tmp_path / "evil.pt"
    with open(bad, "wb") as fh:
        pickle.dump({"weight": _Evil(str(marker))}, fh)
    with pytest.raises(UnsafeModelFileError, match="refused"):
        load_state_dict_file(bad)
    assert not marker.exists()
    good = tmp_path / "good.pt"
    torch.save({"w": torch.ones(2)}, good)
    assert torch.equal(load_state_dict_file(good)["w"], torch.ones(2))


def test_weights_only_false_appears_nowhere_in_the_code() -> None:
    root = Path(__file__).resolve().parents[2]
    needle = "weights_only=" + "False"
    offenders = [p for d in ("alwb", "ui", "bench") for p in (root / d).rglob("*.py") if needle in p.read_text()]
    assert offenders == []


def test_geometry_follows_the_images(tmp_path: Path) -> None:
    from PIL import Image

    from alwb.learning.data import choose_geometry
    from alwb.project import Project

    grey, rgb = tmp_path / "grey", tmp_path / "rgb"
    grey.mkdir()
    rgb.mkdir()
    for i in range(3):
        Image.new("L", (8 + i, 9), i * 40).save(grey / f"g{i}.png")
        Image.new("RGB", (300, 200 + i), (i * 40, 0, 0)).save(rgb / f"c{i}.png")
    with Project.create(tmp_path / "p1") as p:
        p.add_images(grey)
        assert choose_geometry(p.store) == (16, 1)
        assert choose_geometry(p.store, 24, 3) == (24, 3)
    with Project.create(tmp_path / "p2") as p:
        p.add_images(rgb)
        assert choose_geometry(p.store) == (64, 3)  # photos from scratch: the small CNN at 64 px
        assert choose_geometry(p.store, model="resnet18") == (160, 3)
        p.set_train_config(mode="scratch")
        assert p.geometry().arch == "cnn6"
        p.set_train_config(mode="auto")  # the packaged EfficientNet-Lite0 (a dependency) is here: photos use it
        geo = p.geometry()
        assert geo.mode in ("head", "finetune") and geo.backbone.startswith("efficientnet_lite")


def test_a_project_keeps_the_model_it_started_with(tmp_path: Path) -> None:
    """A project whose first rounds trained the earlier default (``smallcnn``) goes on with it under ``auto``:
    its stored weights warm-start the next round and load for scoring and export. New projects get ``cnn6``."""
    from PIL import Image

    from alwb.project import Project

    folder = tmp_path / "img"
    folder.mkdir()
    for i in range(4):
        Image.new("L", (28, 28), i * 60).save(folder / f"g{i}.png")
    with Project.create(tmp_path / "old") as p:
        p.add_images(folder)
        geo = p.geometry()
        assert geo.arch == "cnn6"
        p.store.set_meta("geometry", {**geo.to_dict(), "arch": "smallcnn", "mean": [0.5], "std": [0.25]})
        assert p.geometry().arch == "smallcnn"
        p.set_train_config(model="cnn6")  # asked for explicitly: the next round switches
        assert p.geometry().arch == "cnn6"


def test_exported_torchscript_matches_the_weights(tmp_path: Path, shapes_flat) -> None:
    import subprocess
    import sys

    from alwb.io.export import Predictor, export_project
    from alwb.project import Project

    folder, truth = shapes_flat
    with Project.create(tmp_path / "p", classes=["circle", "square", "triangle"]) as p:
        p.add_images(folder)
        p.label([(i, truth[p.store.item(i)["path"]]) for i in p.store.item_ids()[:30]])
        p.train(epochs=2, device="cpu")
        export_project(p, tmp_path / "out")
    mdir = tmp_path / "out" / "model"
    pred = Predictor(mdir)
    x = torch.randn(5, 1, 20, 20)
    with torch.no_grad():
        expected = pred.model(x).numpy()
    np.save(tmp_path / "x.npy", x.numpy())
    code = (
        "import numpy as np, torch, sys; m = torch.jit.load(sys.argv[1]); x = torch.from_numpy(np.load(sys.argv[2]));"
        "np.save(sys.argv[3], m(x).detach().numpy())"
    )
    subprocess.run(
        [
            sys.executable,
            "-c",
            code,
            str(mdir / "model.torchscript.pt"),
            str(tmp_path / "x.npy"),
            str(tmp_path / "y.npy"),
        ],
        check=True,
        timeout=120,
    )
    assert np.allclose(np.load(tmp_path / "y.npy"), expected, atol=1e-5)
