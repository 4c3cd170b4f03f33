"""One round of training: seeded, warm-started or from scratch, on CUDA (bf16 autocast) / MPS / CPU."""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from ..config import TrainConfig
from .data import normalise, random_shift_flip, train_transform
from .models import BACKBONE_PREFIX, SMALL_ARCHS, Classifier, choose_arch, get_model

log = logging.getLogger(__name__)

ProgressFn = Callable[[int, int, float], None]


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` picks CUDA, then MPS, then CPU; an explicit device that is missing is an error."""
    from ..errors import AlwbError

    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise AlwbError("--device cuda was asked for but no CUDA GPU is available")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise AlwbError("--device mps was asked for but MPS is not available")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU runs are then reproducible)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


#: above this many labels the small CNN's step budget grows in proportion (constant epochs), up to 4×
STEPS_SCALE_FROM = 1000


def auto_epochs(
    n_labels: int, batch_size: int, *, warm: bool, cfg: TrainConfig, arch: str = "cnn6", image_size: int = 28
) -> int:
    """Epochs for about 800 optimiser steps from scratch for images up to 32 px (fewer for larger images and
    ResNet-18, half when warm-started), 3 to 150 epochs.

    For the small CNN the budget grows with the labels beyond :data:`STEPS_SCALE_FROM` (up to 4×), so every label
    keeps getting as many passes (``docs/results.md``, 2,000 labels)."""
    if cfg.epochs:
        return cfg.epochs
    steps_per_epoch = max(1, math.ceil(n_labels / batch_size))
    arch = recipe_arch(arch)
    # about 800 steps for small images; the small CNN's cost grows with the pixel count, so fewer above 32 px
    base = 800 / max(1.0, (image_size / 32) ** 2) if arch in SMALL_ARCHS else 300
    target = max(100.0, base) * (cfg.warm_epochs_ratio if warm else 1.0)
    if arch in SMALL_ARCHS:
        target *= min(4.0, max(1.0, n_labels / STEPS_SCALE_FROM))
    return int(min(150, max(3, math.ceil(target / steps_per_epoch))))


#: images up to this side are augmented a whole batch at a time on the device; larger ones per sample
BATCH_AUGMENT_MAX_PX = 64


def uses_tta(cfg: TrainConfig) -> bool:
    """Whether a model trained with ``cfg`` is scored with flip test-time augmentation: when it trained on
    mirrored images (``augment`` ``crop+flip``): the mean of the probabilities of an image and its mirror image."""
    return cfg.augment == "crop+flip"


def recipe_arch(arch: str) -> str:
    """The architecture whose recipe trains ``arch``: a backbone of :mod:`alwb.learning.backbones` that trains like
    one of
    :mod:`alwb.learning.models` (:attr:`~alwb.learning.backbones.BackboneSpec.trains_like`) takes that model's, else
    ``arch``."""
    if arch.startswith(BACKBONE_PREFIX):
        from .backbones import trains_like

        return trains_like(arch[len(BACKBONE_PREFIX) :]) or arch
    return arch


def auto_lr(arch: str, cfg: TrainConfig) -> float:
    """The configured peak learning rate, or for ``lr`` 0: 0.04 for the small CNNs (AdamW, one-cycle; chosen with
    ``bench/research/train_recipes.py``, ``docs/experiments.md``), 2e-3 for ResNet-18, whose pretrained weights a
    large rate would wash out, and 1e-4 for a fine-tuned backbone of :mod:`alwb.learning.backbones` (unless it trains
    like
    a small CNN: :func:`recipe_arch`)."""
    if cfg.lr:
        return cfg.lr
    arch = recipe_arch(arch)
    if arch.startswith(BACKBONE_PREFIX):  # fine-tuning a pretrained backbone: the usual small rate
        return 1e-4
    return 0.04 if arch in SMALL_ARCHS else 2e-3


@dataclass
class TrainResult:
    """What :func:`train_model` returns."""

    model: Classifier
    epochs: int
    seconds: float
    device: str
    amp: bool
    warm: bool
    losses: list[float] = field(default_factory=list)


#: The product's loss on a labeled batch's logits: ``(logits, labels, sample weights) -> loss``.
SupervisedFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class StepContext:
    """What a training step needs besides the batch: the device, the normalisation, whether inputs are channels-last,
    and ``supervised``, the product's weighted cross-entropy on logits."""

    device: torch.device
    mean: torch.Tensor
    std: torch.Tensor
    channels_last: bool
    supervised: SupervisedFn


class StepLoss(Protocol):
    """The loss of one training step, from the model and a labeled batch (inputs normalised, on the device).

    ``prepare`` is called once before training; the step calls the model and returns the loss to minimise. The
    product's own step is :class:`SupervisedStep`; research steps (:mod:`alwb.experimental`) add to it.
    """

    def prepare(self, model: nn.Module, ctx: StepContext) -> None: ...

    def __call__(
        self, model: nn.Module, xb: torch.Tensor, yb: torch.Tensor, wb: torch.Tensor, *, amp: bool
    ) -> torch.Tensor: ...


class SupervisedStep:
    """The product's training step: the labeled batch through the model, its weighted cross-entropy."""

    def prepare(self, model: nn.Module, ctx: StepContext) -> None:
        self.supervised = ctx.supervised

    def __call__(
        self, model: nn.Module, xb: torch.Tensor, yb: torch.Tensor, wb: torch.Tensor, *, amp: bool
    ) -> torch.Tensor:
        with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=amp):
            logits = model(xb).float()
        return self.supervised(logits, yb, wb)


def shrink_perturb(model: nn.Module, fresh: nn.Module, shrink: float, perturb: float) -> None:
    """Ash & Adams (2020): ``θ ← shrink·θ + perturb·θ_fresh`` for every trainable parameter."""
    with torch.no_grad():
        for p, q in zip(model.parameters(), fresh.parameters(), strict=True):
            p.mul_(shrink).add_(q, alpha=perturb)


def build_model(arch: str, *, channels: int, num_classes: int, image_size: int, pretrained: str = "none") -> Classifier:
    """Wrapper over :func:`alwb.learning.models.get_model`."""
    return get_model(arch, channels=channels, num_classes=num_classes, image_size=image_size, pretrained=pretrained)


def train_model(
    x: np.ndarray,
    y: npt.NDArray[np.int64],
    *,
    arch: str,
    num_classes: int,
    mean: list[float],
    std: list[float],
    cfg: TrainConfig,
    init_state: dict[str, torch.Tensor] | None = None,
    class_weights: npt.NDArray[np.float64] | None = None,
    sample_weights: npt.NDArray[np.float64] | None = None,
    progress: ProgressFn | None = None,
    pause: Callable[[], None] | None = None,
    step: StepLoss | None = None,
) -> TrainResult:
    """Train a model on uint8 pixels ``x`` ``(N, C, S, S)`` and labels ``y`` ``(N,)``.

    ``init_state`` (a previous round's state_dict) warm-starts the model with shrink-and-perturb; a head of the
    wrong shape (classes added) is re-initialised. ``sample_weights`` scale each sample's loss (pseudo-labels).
    ``pause`` is called before every step (a background round gives way to the person there). ``step`` computes each
    step's loss (:class:`StepLoss`; the product's :class:`SupervisedStep` by default).
    """
    t0 = time.perf_counter()
    seed_everything(cfg.seed)
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    device = resolve_device(cfg.device)
    channels, size = int(x.shape[1]), int(x.shape[2])
    model = build_model(
        arch,
        channels=channels,
        num_classes=num_classes,
        image_size=size,
        pretrained=cfg.pretrained if init_state is None else "none",
    )
    warm = False
    if init_state is not None:
        fresh = build_model(arch, channels=channels, num_classes=num_classes, image_size=size)
        own = model.state_dict()
        usable = {k: v for k, v in init_state.items() if k in own and own[k].shape == v.shape}
        model.load_state_dict(usable, strict=False)
        shrink_perturb(model, fresh, cfg.shrink, cfg.perturb)
        warm = True
    # channels-last convolutions train faster on the CPU (bench/research/train_recipes.py --speed, docs/speed.md)
    channels_last = device.type == "cpu"
    model.to(device, memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    epochs = auto_epochs(len(y), cfg.batch_size, warm=warm, cfg=cfg, arch=arch, image_size=size)

    gen = torch.Generator().manual_seed(cfg.seed)
    batches = _BatchIterator(x, y, sample_weights, cfg=cfg, size=size, generator=gen)
    lr = auto_lr(choose_arch(arch, size), cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=cfg.weight_decay)
    steps = max(1, epochs * len(batches))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.15)
    cw = None if class_weights is None else torch.as_tensor(class_weights, dtype=torch.float32, device=device)
    loss_fn = nn.CrossEntropyLoss(weight=cw, label_smoothing=cfg.label_smoothing, reduction="none")
    m = torch.tensor(mean, device=device)
    s = torch.tensor(std, device=device)
    amp = device.type == "cuda"

    def supervised(logits: torch.Tensor, yb: torch.Tensor, wb: torch.Tensor) -> torch.Tensor:
        return (loss_fn(logits, yb) * wb).sum() / wb.sum().clamp_min(1e-8)

    step = step or SupervisedStep()
    step.prepare(model, StepContext(device, m, s, channels_last, supervised))
    losses: list[float] = []
    model.train()
    for epoch in range(epochs):
        total, count = 0.0, 0
        for xb, yb, wb in batches:
            if pause is not None:
                pause()
            xb = normalise(xb.to(device, non_blocking=True), m, s)
            if channels_last:
                xb = xb.contiguous(memory_format=torch.channels_last)
            yb = yb.to(device, non_blocking=True)
            wb = wb.to(device, non_blocking=True)
            loss = step(model, xb, yb, wb, amp=amp)
            if not torch.isfinite(loss):
                from ..errors import AlwbError

                raise AlwbError(f"training diverged: loss is {loss.item()} in epoch {epoch + 1}")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(yb)
            count += len(yb)
        losses.append(total / max(count, 1))
        if progress is not None:
            progress(epoch + 1, epochs, losses[-1])
    model.eval()
    return TrainResult(
        model=model,
        epochs=epochs,
        seconds=time.perf_counter() - t0,
        device=str(device),
        amp=amp,
        warm=warm,
        losses=losses,
    )


class _BatchIterator:
    """Shuffled, augmented mini-batches of (uint8 images, labels, sample weights), reproducible per seed.

    Every sample is used once an epoch, in ``ceil(N / batch_size)`` batches of nearly equal size (900 samples: 15
    of 60, not 14 of 64 and one of 4): a small trailing batch would make BatchNorm's last update of its running
    statistics, and the last optimiser step, from a handful of images (``docs/results.md``). Small images (≤ 64 px)
    are augmented a whole batch at a time (:func:`random_shift_flip`); larger ones
    per sample with torchvision's random resized crop.
    """

    def __init__(
        self,
        x: np.ndarray,
        y: npt.NDArray[np.int64],
        w: npt.NDArray[np.float64] | None,
        *,
        cfg: TrainConfig,
        size: int,
        generator: torch.Generator,
    ) -> None:
        self.x = torch.from_numpy(np.array(x, dtype=np.uint8))
        self.y = torch.from_numpy(np.asarray(y, dtype=np.int64))
        self.w = torch.ones(len(y)) if w is None else torch.as_tensor(w, dtype=torch.float32)
        self.bs = min(cfg.batch_size, len(y))
        self.gen = generator
        self.augment = cfg.augment
        self.size = size
        self.per_sample = train_transform(cfg.augment, size) if size > BATCH_AUGMENT_MAX_PX else None

    def __len__(self) -> int:
        return -(-len(self.y) // self.bs)

    def __iter__(self):  # noqa: ANN204 - generator
        perm = torch.randperm(len(self.y), generator=self.gen)
        for idx in torch.tensor_split(perm, len(self)):
            xb = self.x[idx]
            if self.augment != "none":
                if self.per_sample is not None:
                    xb = torch.stack([self.per_sample(img) for img in xb])
                else:
                    pad = max(2, self.size // 8)
                    xb = random_shift_flip(xb, pad=pad, flip=self.augment == "crop+flip", generator=self.gen)
            yield xb, self.y[idx], self.w[idx]


def inference_copy(model: Classifier, device: torch.device) -> Classifier:
    """An eval-mode copy for scoring: Conv+BatchNorm pairs folded into the conv, channels-last on the CPU.

    Same outputs as ``model.eval()`` up to float rounding, and faster to run (``docs/speed.md``).
    """
    import copy

    from torch.nn.utils.fusion import fuse_conv_bn_eval

    m = copy.deepcopy(model).eval()
    for mod in m.modules():
        if isinstance(mod, nn.Sequential):
            kids = list(mod.children())
            for i in range(len(kids) - 1):
                if isinstance(kids[i], nn.Conv2d) and isinstance(kids[i + 1], nn.BatchNorm2d):
                    mod[i] = fuse_conv_bn_eval(kids[i], kids[i + 1])
                    mod[i + 1] = nn.Identity()
    m = m.to(device)
    if device.type == "cpu":
        m = m.to(memory_format=torch.channels_last)
    return m


@torch.inference_mode()
def predict_batches(
    model: Classifier,
    pixels: np.ndarray,
    *,
    mean: list[float],
    std: list[float],
    device: torch.device | str = "cpu",
    batch_size: int = 0,
    out_probs: np.ndarray | None = None,
    out_emb: np.ndarray | None = None,
    progress: ProgressFn | None = None,
    pause: Callable[[], None] | None = None,
    tta_flip: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Class probabilities ``(N, K)`` and embeddings ``(N, D)`` of uint8 ``pixels``, eval mode.

    ``pixels`` may be a memory map; it is read in chunks, and results go into ``out_probs`` / ``out_emb`` when given
    (memory maps, so a large pool need not fit in RAM). ``batch_size`` 0 chooses :func:`score_chunk`.
    ``tta_flip`` averages the probabilities of each image and its mirror image (for models trained with flips;
    the embeddings stay those of the image itself).
    """
    device = torch.device(device)
    batch_size = batch_size or score_chunk(device, int(pixels.shape[-1]) * int(pixels.shape[-2]))
    model = inference_copy(model, device)
    n = len(pixels)
    k = model.head.out_features
    probs = out_probs if out_probs is not None else np.zeros((n, k), dtype=np.float32)
    emb = out_emb if out_emb is not None else np.zeros((n, model.emb_dim), dtype=np.float32)
    m = torch.tensor(mean, device=device)
    s = torch.tensor(std, device=device)
    amp = device.type == "cuda"
    for start in range(0, n, batch_size):
        if pause is not None:
            pause()
        xb = torch.from_numpy(np.array(pixels[start : start + batch_size])).to(device)
        if device.type == "cpu":
            xb = xb.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=amp):
            xn = normalise(xb, m, s)
            e = model.embed(xn)
            p = torch.softmax(model.head(e).float(), dim=1)
            if tta_flip:
                p = (p + torch.softmax(model(xn.flip(-1)).float(), dim=1)) / 2
        probs[start : start + len(xb)] = p.cpu().numpy()
        emb[start : start + len(xb)] = e.float().cpu().numpy()
        if progress is not None:
            progress(min(n, start + batch_size), n, 0.0)
    return probs, emb


def score_chunk(device: torch.device, pixels_per_image: int) -> int:
    """Images scored per forward pass: 1,024 on a GPU; on a CPU about 200,000 pixels (256 images of 28×28, 16 of
    112×112 or more), so the activations stay in the caches (chosen with ``bench/speed/score_chunks.py``,
    ``docs/speed.md``)."""
    if device.type != "cpu":
        return 1024
    return int(min(256, max(16, 200_704 // max(1, pixels_per_image))))
