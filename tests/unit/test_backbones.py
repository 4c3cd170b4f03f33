"""alwb.learning.backbones: registry facts, verified downloads from a local server, mirror, offline message, add,
load."""

from __future__ import annotations

import dataclasses
import shutil
import socket
import time
from pathlib import Path

import pytest
import torch
from weights_helpers import isolate_hub, register_test_spec, save_state_dict, serve

from alwb.errors import AlwbError, ConfigError
from alwb.learning import backbones
from alwb.learning.backbones import WeightsRejected, WeightsUnavailable

TV_WEIGHTS = {
    "resnet18": "ResNet18_Weights",
    "resnet50": "ResNet50_Weights",
    "efficientnet_b0": "EfficientNet_B0_Weights",
    "convnext_tiny": "ConvNeXt_Tiny_Weights",
}


@pytest.fixture(scope="module")
def r18_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A random-init ResNet-18 state_dict file (the real architecture) and its SHA-256."""
    path = save_state_dict(tmp_path_factory.mktemp("weights") / "r18.pth", "resnet18", seed=0)
    return path, backbones.sha256_file(path)


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    return isolate_hub(monkeypatch, tmp_path)


@pytest.fixture
def spec(r18_file: tuple[Path, str]):  # noqa: ANN201
    s = register_test_spec("t_resnet18", r18_file[1])
    yield s
    backbones.unregister(s.name)


def _served(tmp_path: Path, spec: backbones.BackboneSpec, src: Path) -> Path:
    folder = tmp_path / "server"
    folder.mkdir(exist_ok=True)
    shutil.copyfile(src, folder / spec.file_name)
    return folder


# ------------------------------------------------------------------------------------------------ registry


@pytest.mark.parametrize("name", list(TV_WEIGHTS))
def test_torchvision_entries_match_the_weights_api(name: str) -> None:
    import torchvision.models as tvm

    spec = backbones.get_spec(name)
    w = getattr(tvm, TV_WEIGHTS[name]).DEFAULT
    t = w.transforms()
    assert spec.url == w.url
    assert spec.file_name == w.url.rsplit("/", 1)[-1]
    assert spec.hash_is_full
    assert spec.file_name.rsplit("-", 1)[-1].startswith(spec.sha256[:8])  # torchvision's published prefix
    assert (spec.input_size, spec.resize_size) == (t.crop_size[0], t.resize_size[0])
    assert spec.interpolation == t.interpolation.value
    assert spec.mean == tuple(t.mean) and spec.std == tuple(t.std)
    assert spec.size_mb == pytest.approx(w.meta["_file_size"] * 1.048576, abs=0.01)  # meta is in MiB


def test_dinov2_entry_matches_timm() -> None:
    import timm

    spec = backbones.get_spec("dinov2_vits14")
    cfg = timm.models.get_pretrained_cfg("vit_small_patch14_dinov2.lvd142m")
    assert spec.hf_repo == cfg.hf_hub_id and spec.hash_is_full
    assert spec.mean == tuple(cfg.mean) and spec.std == tuple(cfg.std)
    assert cfg.license in spec.licence.lower()
    assert spec.url == f"https://huggingface.co/{cfg.hf_hub_id}/resolve/main/model.safetensors"


def test_unknown_backbone_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="resnet18"):
        backbones.get_spec("vgg99")


def test_list_shows_every_backbone_uncached(hub: Path) -> None:
    rows = {r.name: r for r in backbones.list_backbones()}
    assert {"resnet18", "resnet50", "efficientnet_b0", "convnext_tiny", "dinov2_vits14"} <= set(rows)
    assert not rows["resnet18"].cached and rows["resnet18"].kind is None
    assert rows["resnet18"].licence and rows["resnet18"].size_mb > 40


# ------------------------------------------------------------------------------------------------ download


def test_mirror_download_is_verified_cached_and_used(
    hub: Path, spec: backbones.BackboneSpec, r18_file: tuple[Path, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with serve(_served(tmp_path, spec, r18_file[0])) as (base, requested):
        monkeypatch.setenv(backbones.MIRROR_ENV, base + "/")
        loaded = backbones.load(spec.name, quiet=True)
        assert requested == [f"/{spec.file_name}"]
        assert loaded.origin.kind == "mirror" and loaded.origin.sha256 == r18_file[1]
        assert Path(loaded.origin.file) == hub / spec.file_name and (hub / spec.file_name).is_file()
        assert not list(hub.glob("*.part"))
        # the weights in the file are the ones used
        ref = torch.load(r18_file[0], weights_only=True)
        assert torch.equal(loaded.model.conv1.weight, ref["conv1.weight"])
        with torch.no_grad():
            out = loaded.model(torch.zeros(2, 3, 64, 64))
        assert out.shape == (2, 512)
        again = backbones.load(spec.name, quiet=True)  # from the cache: no second request
        assert requested == [f"/{spec.file_name}"] and again.origin.kind == "mirror"
    row = next(r for r in backbones.list_backbones() if r.name == spec.name)
    assert row.cached and row.kind == "mirror"


def test_public_url_download_with_progress(
    hub: Path, r18_file: tuple[Path, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[tuple[str, int, int]] = []
    with serve(tmp_path) as (base, requested):
        s = register_test_spec("t_public", r18_file[1], url=f"{base}/files/r18.pth")
        try:
            (tmp_path / "files").mkdir()
            shutil.copyfile(r18_file[0], tmp_path / "files" / "r18.pth")
            origin = backbones.fetch(s.name, quiet=True, progress=lambda *a: seen.append(a))
        finally:
            backbones.unregister(s.name)
    assert origin.kind == "published" and origin.url == f"{base}/files/r18.pth"
    assert (hub / s.file_name).is_file() and requested == ["/files/r18.pth"]
    assert seen and seen[-1][0] == "download" and seen[-1][1] == seen[-1][2] == r18_file[0].stat().st_size


def test_tampered_file_is_refused_and_deleted(
    hub: Path, spec: backbones.BackboneSpec, r18_file: tuple[Path, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bad = save_state_dict(tmp_path / "other.pth", "resnet18", seed=1)  # right architecture, other bytes
    with serve(_served(tmp_path, spec, bad)) as (base, _):
        monkeypatch.setenv(backbones.MIRROR_ENV, base)
        with pytest.raises(WeightsRejected) as err:
            backbones.load(spec.name, quiet=True)
    msg = str(err.value)
    assert "\n" not in msg and spec.name in msg and "deleted" in msg and r18_file[1] in msg
    assert not (hub / spec.file_name).exists() and not list(hub.glob("*.part"))


def test_cached_file_that_changed_is_deleted(
    hub: Path, spec: backbones.BackboneSpec, r18_file: tuple[Path, str], tmp_path: Path
) -> None:
    hub.mkdir(parents=True)
    shutil.copyfile(save_state_dict(tmp_path / "x.pth", "resnet18", seed=2), hub / spec.file_name)
    with pytest.raises(WeightsUnavailable, match="wrong SHA-256"):
        backbones.load(spec.name, download=False)
    assert not (hub / spec.file_name).exists()


def _assert_one_line_fix(msg: str, name: str, hub: Path) -> None:
    assert "\n" not in msg and "Traceback" not in msg
    assert f"backbone {name}" in msg and str(hub) in msg
    assert f"alwb weights fetch {name}" in msg and f"alwb weights add {name} FILE" in msg


def test_missing_on_the_server_gives_one_clear_line(
    hub: Path, spec: backbones.BackboneSpec, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with serve(tmp_path) as (base, _):
        monkeypatch.setenv(backbones.MIRROR_ENV, base)
        with pytest.raises(WeightsUnavailable) as err:
            backbones.load(spec.name, quiet=True)
    _assert_one_line_fix(str(err.value), spec.name, hub)
    assert "HTTP 404" in str(err.value)
    assert isinstance(err.value, AlwbError)


def test_closed_port_fails_fast(hub: Path, spec: backbones.BackboneSpec, monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens once closed
    monkeypatch.setenv(backbones.MIRROR_ENV, f"http://127.0.0.1:{port}")
    t0 = time.perf_counter()
    with pytest.raises(WeightsUnavailable) as err:
        backbones.load(spec.name, quiet=True)
    assert time.perf_counter() - t0 < 5
    _assert_one_line_fix(str(err.value), spec.name, hub)


def test_unresponsive_server_times_out(
    hub: Path, spec: backbones.BackboneSpec, monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket() as s:  # accepts connections (backlog) but never answers
        s.bind(("127.0.0.1", 0))
        s.listen(8)
        monkeypatch.setenv(backbones.MIRROR_ENV, f"http://127.0.0.1:{s.getsockname()[1]}")
        monkeypatch.setenv(backbones.TIMEOUT_ENV, "0.5")
        t0 = time.perf_counter()
        with pytest.raises(WeightsUnavailable, match="timed out"):
            backbones.load(spec.name, quiet=True)
        assert time.perf_counter() - t0 < 4


def test_offline_setting_never_connects(hub: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(backbones.OFFLINE_ENV, "1")
    monkeypatch.setenv(backbones.MIRROR_ENV, "http://127.0.0.1:9")
    t0 = time.perf_counter()
    with pytest.raises(WeightsUnavailable) as err:
        backbones.load("resnet18")
    assert time.perf_counter() - t0 < 2
    _assert_one_line_fix(str(err.value), "resnet18", hub)
    assert not backbones.weights_available("resnet18")


# ------------------------------------------------------------------------------------------------ add


def test_add_a_custom_file_from_the_real_architecture(hub: Path, r18_file: tuple[Path, str]) -> None:
    origin = backbones.add("resnet18", r18_file[0])  # random init: not the published hash
    assert origin.kind == "custom" and origin.sha256 == r18_file[1]
    assert Path(origin.file).parent == hub / backbones.CUSTOM_DIR and Path(origin.file).is_file()
    row = next(r for r in backbones.list_backbones() if r.name == "resnet18")
    assert row.cached and row.kind == "custom" and row.sha256 == r18_file[1]
    loaded = backbones.load("resnet18", download=False)
    assert loaded.origin == origin and loaded.embedding_dim == 512
    table = backbones.format_list()
    assert "cached (custom)" in table and origin.sha256 in table and str(hub) in table
    card = loaded.card()
    assert card["weights"]["kind"] == "custom" and card["weights"]["sha256"] == r18_file[1]
    assert card["preprocess"]["crop"] == 224 and card["published_sha256"] == backbones.get_spec("resnet18").sha256
    assert backbones.remove_custom("resnet18") and not backbones.weights_available("resnet18")


def test_add_the_published_file(hub: Path, spec: backbones.BackboneSpec, r18_file: tuple[Path, str]) -> None:
    origin = backbones.add(spec.name, r18_file[0])
    assert origin.kind == "published" and Path(origin.file) == hub / spec.file_name
    assert backbones.load(spec.name, download=False).origin.kind == "published"


def test_add_accepts_safetensors_and_another_classifier(hub: Path, tmp_path: Path) -> None:
    from safetensors.torch import save_file
    from torchvision.models import resnet18

    sd = resnet18(weights=None, num_classes=5).state_dict()  # fine-tuned for 5 classes: fc is ignored
    save_file(sd, str(tmp_path / "mine.safetensors"))
    origin = backbones.add("resnet18", tmp_path / "mine.safetensors")
    assert origin.kind == "custom" and origin.file.endswith(".safetensors")
    loaded = backbones.load("resnet18", download=False)
    assert torch.equal(loaded.model.layer1[0].conv1.weight, sd["layer1.0.conv1.weight"])


def test_add_refuses_wrong_keys_and_shapes(hub: Path, r18_file: tuple[Path, str], tmp_path: Path) -> None:
    sd = torch.load(r18_file[0], weights_only=True)
    missing = dict(sd)
    del missing["layer4.1.bn2.weight"]
    torch.save(missing, tmp_path / "missing.pth")
    with pytest.raises(WeightsRejected, match=r"1 missing key\(s\): layer4.1.bn2.weight"):
        backbones.add("resnet18", tmp_path / "missing.pth")
    shaped = dict(sd)
    shaped["conv1.weight"] = torch.zeros(64, 1, 7, 7)
    torch.save(shaped, tmp_path / "shape.pth")
    with pytest.raises(WeightsRejected, match=r"conv1.weight \(64, 1, 7, 7\) instead of \(64, 3, 7, 7\)"):
        backbones.add("resnet18", tmp_path / "shape.pth")
    with pytest.raises(WeightsRejected, match="does not fit backbone efficientnet_b0"):
        backbones.add("efficientnet_b0", r18_file[0])
    assert not (hub / backbones.CUSTOM_DIR).exists() or not list((hub / backbones.CUSTOM_DIR).iterdir())


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_add_refuses_pickled_objects_and_junk(hub: Path, tmp_path: Path) -> None:
    import pickle

    class Evil:
        def __reduce__(self):  # noqa: ANN204
            return (print, ("unpickled!",))

    (tmp_path / "evil.pth").write_bytes(pickle.dumps({"conv1.weight": Evil()}))
    with pytest.raises(WeightsRejected, match="not a weights-only state_dict"):
        backbones.add("resnet18", tmp_path / "evil.pth")
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(WeightsRejected):
        backbones.add("resnet18", tmp_path / "junk.safetensors")
    with pytest.raises(WeightsRejected, match="not found"):
        backbones.add("resnet18", tmp_path / "nope.pth")


def test_custom_file_changed_after_add_is_refused(hub: Path, r18_file: tuple[Path, str], tmp_path: Path) -> None:
    origin = backbones.add("resnet18", r18_file[0])
    shutil.copyfile(save_state_dict(tmp_path / "y.pth", "resnet18", seed=3), origin.file)
    with pytest.raises(WeightsRejected, match="changed since it was added"):
        backbones.load("resnet18", download=False)


def test_preprocess_matches_torchvision() -> None:
    import numpy as np
    from PIL import Image
    from torchvision.models import ResNet18_Weights

    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 256, (300, 400, 3), dtype=np.uint8))
    ours = backbones.get_spec("resnet18").preprocess()(img)
    ref = ResNet18_Weights.DEFAULT.transforms()(img)
    assert ours.shape == ref.shape == (3, 224, 224)
    assert torch.allclose(ours, ref, atol=0.05)  # same PIL resize; torchvision rounds through its own crop


def test_small_images_framed_whole_keep_their_edges() -> None:
    """A 32 px image framed ``whole`` reaches the network entire (enlarged to the input size); the photos' centre
    crop cuts its outer eighth; the two framings never share an embedding cache."""
    import numpy as np
    from PIL import Image

    from alwb.learning.embed import cache_key

    px = np.zeros((32, 32, 3), dtype=np.uint8)
    px[:, :1] = (255, 0, 0)  # a red column down the left edge
    img = Image.fromarray(px)
    spec = backbones.get_spec("efficientnet_lite0")
    whole, crop = spec.preprocess("whole"), spec.preprocess()
    assert (whole.resize, whole.crop, whole.framing) == (224, 224, "whole") and (crop.resize, crop.crop) == (256, 224)
    a, b = whole.to_uint8(img), crop.to_uint8(img)
    assert a.shape == b.shape == (3, 224, 224)
    assert a[0, 112, 0] > 200 and a[1, 112, 0] < 60  # the red edge is there
    assert b[0, 112, :4].max() < 60  # cropped away
    # what an exported folder stores reads back the same, and stays readable by versions without framing
    assert "framing" not in whole.to_dict() and backbones.Preprocess(**whole.to_dict()).resize == 224
    assert backbones.Preprocess.from_dict({**whole.to_dict(), "framing": "whole", "later": 1}) == whole
    with pytest.raises(ValueError, match="framing"):
        spec.preprocess("squash")
    sha = "ab" * 32
    assert cache_key("efficientnet_lite0", sha) == "emb_efficientnet_lite0_abababab"  # unchanged for photos
    assert cache_key("efficientnet_lite0", sha, "whole") == "emb_efficientnet_lite0_abababab_whole"


def test_spec_is_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        backbones.get_spec("resnet18").sha256 = "0"  # type: ignore[misc]


def test_unfrozen_load_for_fine_tuning(hub: Path, r18_file: tuple[Path, str]) -> None:
    backbones.add("resnet18", r18_file[0])
    frozen = backbones.load("resnet18", download=False)
    assert not any(p.requires_grad for p in frozen.model.parameters())
    trainable = backbones.load("resnet18", download=False, frozen=False)
    assert all(p.requires_grad for p in trainable.model.parameters())


def test_modules_import_neither_streamlit_nor_timm() -> None:
    import subprocess
    import sys

    code = (
        "import sys, alwb.learning.backbones, alwb.learning.embed, alwb.learning.head; "
        "print('streamlit' in sys.modules, 'timm' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "False"]
