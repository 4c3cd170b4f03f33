"""Semi-supervised research losses on unlabeled pool images: training steps (:class:`alwb.learning.train.StepLoss`)
for :func:`alwb.learning.train.train_model`'s ``step``, the product's supervised loss plus a term on unlabeled views.

- :class:`ConsistencyLoss` (FixMatch, Sohn et al. 2020): where the model's prediction on a lightly augmented view
  of an unlabeled image reaches a threshold, that class is the target for a strongly augmented view.
- with a ``teacher`` (an eval-mode model) the loss is distillation instead: the teacher's class probabilities on the
  very view the model sees (``teacher_view`` ``strong`` or ``weak``; "consistent teaching", Beyer et al. 2022) are
  the soft target of every unlabeled image, no threshold.

Both work on small images (up to :data:`alwb.learning.train.BATCH_AUGMENT_MAX_PX`), augmented a whole batch at a time.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from ..learning.data import normalise, random_shift_flip
from ..learning.train import StepContext


class ConsistencyLoss:
    """``weight`` × the mean consistency (or distillation) loss on ``ratio`` unlabeled images per labeled image.

    ``unlabeled`` are uint8 pixels ``(U, C, S, S)``; ``seed`` seeds the draws and augmentations (the product's
    training seed + 1 reproduces the runs made before this moved here).
    """

    def __init__(
        self,
        unlabeled: np.ndarray,
        *,
        weight: float = 1.0,
        ratio: int = 2,
        threshold: float = 0.95,
        flip: bool = True,
        seed: int = 1,
        teacher: nn.Module | None = None,
        teacher_view: str = "strong",
    ) -> None:
        if teacher_view not in ("strong", "weak"):
            raise ValueError(f"teacher_view must be 'strong' or 'weak', not {teacher_view!r}")
        if weight < 0 or ratio < 1:
            raise ValueError("weight must be ≥ 0 and ratio ≥ 1")
        self.unl = torch.from_numpy(np.array(unlabeled, dtype=np.uint8))
        self.weight, self.ratio, self.threshold, self.flip = weight, ratio, threshold, flip
        self.gen = torch.Generator().manual_seed(seed)
        self.pad = max(2, int(self.unl.shape[-1]) // 8)
        self.teacher, self.teacher_view = teacher, teacher_view

    def prepare(self, model: nn.Module, ctx: StepContext) -> None:
        """Keep the device, normalisation and the product's loss; move the teacher to the device in eval mode."""
        self.device, self.mean, self.std, self.channels_last = ctx.device, ctx.mean, ctx.std, ctx.channels_last
        self.supervised = ctx.supervised
        if self.teacher is not None:
            self.teacher = self.teacher.to(ctx.device).eval()

    def __call__(
        self, model: nn.Module, xb: torch.Tensor, yb: torch.Tensor, wb: torch.Tensor, *, amp: bool
    ) -> torch.Tensor:
        """The product's loss on the labeled batch plus this one on unlabeled views, in one forward pass."""
        view, uloss_of = self.batch(model, len(yb), amp=amp)
        with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=amp):
            both = model(torch.cat([xb, view]))
        return self.supervised(both[: len(yb)].float(), yb, wb) + uloss_of(both[len(yb) :].float())

    def batch(
        self, model: nn.Module, n_labeled: int, *, amp: bool
    ) -> tuple[torch.Tensor, Callable[[torch.Tensor], torch.Tensor]]:
        """The strongly (or, for a weak-view teacher, lightly) augmented unlabeled views and their loss."""
        gen = self.gen
        ub = self.unl[torch.randint(0, len(self.unl), (self.ratio * n_labeled,), generator=gen)]
        weak = normalise(
            random_shift_flip(ub, pad=self.pad, flip=self.flip, generator=gen).to(self.device), self.mean, self.std
        )
        hard = normalise(
            strong_augment(ub, pad=self.pad, flip=self.flip, generator=gen).to(self.device), self.mean, self.std
        )
        if self.channels_last:
            weak = weak.contiguous(memory_format=torch.channels_last)
            hard = hard.contiguous(memory_format=torch.channels_last)
        # the target of each unlabeled view: the teacher's probabilities on it (soft), or the model's own confident
        # class on the weak view (hard, masked below the threshold)
        view, mask = hard, None
        with torch.no_grad(), torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=amp):
            if self.teacher is not None:
                view = hard if self.teacher_view == "strong" else weak
                target = torch.softmax(self.teacher(view).float(), dim=1)
            else:
                conf, target = torch.softmax(model(weak).float(), dim=1).max(dim=1)
                mask = (conf >= self.threshold).float()

        def loss(ulogits: torch.Tensor) -> torch.Tensor:
            uterm = nn.functional.cross_entropy(ulogits, target, reduction="none")
            return self.weight * (uterm if mask is None else uterm * mask).mean()

        return view, loss


def flat_counts(human_counts: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """Per-class counts for :func:`alwb.learning.pseudo.choose_pseudo_labels` that give every class with a human label
    the
    same pseudo-label cap, the mean of those classes' labels (the same total): uncertainty sampling gives the
    hardest classes the most human labels, and per-class caps copy that skew into the pseudo-labels."""
    counts = np.asarray(human_counts, dtype=np.float64)
    if not (counts > 0).any():
        return counts
    return np.where(counts > 0, counts.sum() / np.count_nonzero(counts), 0.0)


def strong_augment(x: torch.Tensor, *, pad: int, flip: bool, generator: torch.Generator | None = None) -> torch.Tensor:
    """A hard view of uint8 ``(B, C, H, W)`` for consistency training (FixMatch's strong branch, batched): shift
    and flip as :func:`random_shift_flip`, then per image a contrast factor in [0.5, 1.5] and a brightness shift of
    up to ±25% of the range, and a cutout square of about half the image side (2·(h//4)+1 px) at a random place."""
    b, _, h, w = x.shape
    dev = x.device
    out = random_shift_flip(x, pad=pad, flip=flip, generator=generator).float()
    contrast = (0.5 + torch.rand(b, generator=generator)).to(dev).view(b, 1, 1, 1)
    bright = ((torch.rand(b, generator=generator) - 0.5) * 128.0).to(dev).view(b, 1, 1, 1)
    mean = out.mean(dim=(1, 2, 3), keepdim=True)
    out = ((out - mean) * contrast + mean + bright).clamp_(0, 255)
    side = max(1, h // 2)
    cy = torch.randint(0, h, (b,), generator=generator).to(dev)
    cx = torch.randint(0, w, (b,), generator=generator).to(dev)
    ys = torch.arange(h, device=dev).view(1, h, 1)
    xs = torch.arange(w, device=dev).view(1, 1, w)
    hole = ((ys - cy.view(b, 1, 1)).abs() <= side // 2) & ((xs - cx.view(b, 1, 1)).abs() <= side // 2)
    out = out.masked_fill(hole.unsqueeze(1), 0.0)
    return out.round_().to(torch.uint8)
