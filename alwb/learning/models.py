"""Model registry: a small CNN for small images and torchvision's ResNet-18, split into backbone and head.

Every model takes normalised float images ``(B, C, H, W)`` and returns logits; ``embed`` returns the
penultimate-layer features used for pseudo-labels, balancing and diverse batches.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

log = logging.getLogger(__name__)


class Classifier(nn.Module):
    """``backbone`` (images -> ``emb_dim`` features) followed by a linear ``head``."""

    def __init__(self, backbone: nn.Module, emb_dim: int, num_classes: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(emb_dim, num_classes)
        self.emb_dim = emb_dim

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate-layer features, shape ``(B, emb_dim)``."""
        return self.backbone(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits, shape ``(B, num_classes)``."""
        return self.head(self.backbone(x))


def _conv_bn(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


def small_cnn(channels: int, num_classes: int, width: int = 32) -> Classifier:
    """Three 3×3 conv-BN-ReLU stages (``width``, 2×, 4× channels; max-pool between) and global average pooling.

    About 0.1 M parameters and 7.5 M multiply-adds for a 28×28 image: cheap enough to score a 60,000-image pool
    on two CPU cores every round.
    """
    w = width
    backbone = nn.Sequential(
        _conv_bn(channels, w),
        nn.MaxPool2d(2),
        _conv_bn(w, 2 * w),
        nn.MaxPool2d(2),
        _conv_bn(2 * w, 4 * w),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Dropout(0.2),
    )
    return Classifier(backbone, 4 * w, num_classes)


def cnn6(channels: int, num_classes: int, width: int = 16) -> Classifier:
    """Three stages of two 3×3 conv-BN-ReLU layers each (``width``, 2×, 4× channels; max-pool between) and global
    average pooling: the default for images of 64 px or less.

    About 0.07 M parameters and 7.3 M multiply-adds for a 28×28 image, as many as :func:`small_cnn` (the earlier
    default, which older projects keep), with twice its depth (the comparison is in ``docs/results.md``).
    """
    w = width
    backbone = nn.Sequential(
        _conv_bn(channels, w),
        _conv_bn(w, w),
        nn.MaxPool2d(2),
        _conv_bn(w, 2 * w),
        _conv_bn(2 * w, 2 * w),
        nn.MaxPool2d(2),
        _conv_bn(2 * w, 4 * w),
        _conv_bn(4 * w, 4 * w),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Dropout(0.2),
    )
    return Classifier(backbone, 4 * w, num_classes)


#: the small convolutional networks (trained with a large learning rate and a step budget that grows with the labels)
SMALL_ARCHS = ("cnn6", "smallcnn")


def resnet18(channels: int, num_classes: int, *, image_size: int, pretrained: str = "auto") -> Classifier:
    """torchvision's ResNet-18; for inputs under 64 px the stem is a 3×3 stride-1 conv without max-pool.

    ``pretrained``: ``auto`` uses ImageNet weights when the verified file of backbone ``resnet18`` is on this
    machine (:func:`alwb.learning.backbones.resolve_weights`: its SHA-256 checked, nothing downloaded), ``none`` never
    does,
    anything else is a path to a state_dict file. Weights load with ``weights_only=True``.
    """
    from torchvision.models import resnet18 as tv_resnet18

    from . import backbones

    net = tv_resnet18(weights=None)
    state = None
    if pretrained != "none":
        path: Path | None = Path(pretrained)
        if pretrained == "auto":
            try:
                path = Path(backbones.resolve_weights("resnet18", download=False, quiet=True).file)
            except backbones.WeightsError:
                path = None
        if path is not None and path.is_file():
            state = torch.load(path, map_location="cpu", weights_only=True)
            net.load_state_dict(state)
            log.info("loaded pretrained ResNet-18 weights from %s", path)
        elif pretrained != "auto":
            from ..errors import AlwbError

            raise AlwbError(f"pretrained weights file not found: {pretrained}")
        else:
            log.warning(
                "ImageNet weights for ResNet-18 are not available offline (looked in %s); "
                "starting from random initialisation",
                _hub_dir(),
            )
    small = image_size < 64
    if small:
        net.conv1 = nn.Conv2d(channels, 64, 3, stride=1, padding=1, bias=False)
        net.maxpool = nn.Identity()  # type: ignore[assignment]
    elif channels != 3:
        w = net.conv1.weight.detach()
        net.conv1 = nn.Conv2d(channels, 64, 7, stride=2, padding=3, bias=False)
        if state is not None:
            with torch.no_grad():
                net.conv1.weight.copy_(w.mean(dim=1, keepdim=True).repeat(1, channels, 1, 1))
    emb_dim = net.fc.in_features
    net.fc = nn.Identity()  # type: ignore[assignment]
    return Classifier(net, emb_dim, num_classes)


def _hub_dir() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints"


_REGISTRY: dict[str, Callable[..., Classifier]] = {
    "cnn6": lambda channels, num_classes, image_size, pretrained: cnn6(channels, num_classes),
    "smallcnn": lambda channels, num_classes, image_size, pretrained: small_cnn(channels, num_classes),
    "resnet18": lambda channels, num_classes, image_size, pretrained: resnet18(
        channels, num_classes, image_size=image_size, pretrained=pretrained
    ),
}


#: prefix of the models that fine-tune a pretrained backbone of :mod:`alwb.learning.backbones` (``bb:resnet50``)
BACKBONE_PREFIX = "bb:"


def backbone_classifier(name: str, num_classes: int, *, pretrained: str = "auto") -> Classifier:
    """A pretrained backbone of :mod:`alwb.learning.backbones` with a linear head, for fine-tuning.

    ``pretrained`` ``none`` builds the architecture only (a warm start or an exported file loads the weights);
    otherwise the backbone's verified weights file on this machine is loaded (the round fetched it before).
    """
    from . import backbones

    spec = backbones.get_spec(name)
    state = None
    if pretrained != "none":
        state = backbones.read_spec_state_dict(spec, backbones.resolve_weights(name, download=False, quiet=True).file)
    extractor = backbones.build_extractor(spec, state).train()
    extractor.requires_grad_(True)
    return Classifier(extractor, spec.embedding_dim, num_classes)


def list_models() -> list[str]:
    """Names accepted by :func:`get_model`."""
    return sorted(_REGISTRY)


def choose_arch(name: str, image_size: int) -> str:
    """Resolve ``auto``: :func:`cnn6`, whatever the image size. A from-scratch round is from scratch: pretrained
    features are the training plan's business (:mod:`alwb.learning.plan`), which sends photos to a backbone when one is
    here; ``resnet18`` is there when asked for."""
    if name == "auto":
        return "cnn6"
    if name.startswith(BACKBONE_PREFIX):
        return name
    if name not in _REGISTRY:
        from ..errors import AlwbError

        raise AlwbError(f"unknown model {name!r} (choose from: auto, {', '.join(list_models())})")
    return name


def get_model(name: str, *, channels: int, num_classes: int, image_size: int, pretrained: str = "none") -> Classifier:
    """Build a registered model."""
    arch = choose_arch(name, image_size)
    if arch.startswith(BACKBONE_PREFIX):
        return backbone_classifier(arch[len(BACKBONE_PREFIX) :], num_classes, pretrained=pretrained)
    return _REGISTRY[arch](channels, num_classes, image_size, pretrained)
