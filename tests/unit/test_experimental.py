"""alwb.experimental: research losses that left the product (FixMatch consistency, distillation)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from alwb.config import TrainConfig
from alwb.experimental.semi import ConsistencyLoss
from alwb.learning.train import predict_batches, train_model


def test_nothing_in_the_product_imports_the_experimental_package() -> None:
    import subprocess
    import sys

    code = (
        "import sys, alwb.project, alwb.cli, alwb.simulate, alwb.io.export, alwb.learning.round\n"
        "print(any(m.startswith('alwb.experimental') for m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_strong_augment_keeps_shape_cuts_a_hole_and_is_seeded() -> None:
    from alwb.experimental.semi import strong_augment

    x = torch.full((16, 1, 12, 12), 200, dtype=torch.uint8)
    a = strong_augment(x, pad=2, flip=True, generator=torch.Generator().manual_seed(5))
    b = strong_augment(x, pad=2, flip=True, generator=torch.Generator().manual_seed(5))
    assert a.shape == x.shape and a.dtype == torch.uint8 and torch.equal(a, b)
    # without a shift, the only zeros are the cutout: a 7x7 square (half the side, centred anywhere), clipped at
    # the border to no less than its 4x4 quarter
    unshifted = strong_augment(x, pad=0, flip=False, generator=torch.Generator().manual_seed(5))
    zeros = (unshifted == 0).flatten(1).sum(1)
    assert bool(((zeros >= 4 * 4) & (zeros <= 7 * 7)).all()) and bool((zeros == 49).any())
    # brightness and contrast differ between images: the kept pixels do not all have one value
    kept = [img[img > 0] for img in a]
    assert len({int(k.float().mean().round()) for k in kept}) > 4
    c = strong_augment(x, pad=2, flip=True, generator=torch.Generator().manual_seed(6))
    assert not torch.equal(a, c)


def _consistency_data() -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, object]]:
    rng = np.random.default_rng(2)
    x = rng.integers(0, 256, size=(24, 1, 16, 16), dtype=np.uint8)
    y = (np.arange(24) % 2).astype(np.int64)
    u = rng.integers(0, 256, size=(50, 1, 16, 16), dtype=np.uint8)
    return x, y, u, {"arch": "cnn6", "num_classes": 2, "mean": [0.5], "std": [0.25]}


def test_consistency_loss_uses_the_unlabeled_images_reproducibly() -> None:
    x, y, u, kw = _consistency_data()
    cfg = TrainConfig(device="cpu", epochs=2, augment="crop+flip", seed=1)
    plain = train_model(x, y, cfg=cfg, **kw)
    # threshold 0.5 with two classes: every unlabeled image gets a target, and the loss includes them
    a = train_model(x, y, cfg=cfg, step=ConsistencyLoss(u, threshold=0.5, seed=2), **kw)
    b = train_model(x, y, cfg=cfg, step=ConsistencyLoss(u, threshold=0.5, seed=2), **kw)
    assert a.losses == b.losses and a.losses != plain.losses
    # weight 0: the unlabeled images add nothing to the loss, the loss values are the plain one's
    off = train_model(x, y, cfg=cfg, step=ConsistencyLoss(u, weight=0.0, seed=2), **kw)
    assert len(off.losses) == len(plain.losses)
    sa, sb = a.model.state_dict(), b.model.state_dict()
    assert all(torch.equal(v, sb[k]) for k, v in sa.items())


class _ConstantTeacher(torch.nn.Module):
    """A teacher sure that every image is of class 1."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tensor([-6.0, 6.0]).expand(len(x), 2)


@pytest.mark.parametrize("view", ["strong", "weak"])
def test_a_teacher_s_soft_targets_pull_unlabeled_images_towards_its_classes(view: str) -> None:
    x, _, u, kw = _consistency_data()
    y = np.zeros(len(x), dtype=np.int64)
    y[:4] = 1  # the labels say mostly class 0; the teacher says class 1 for every unlabeled image
    cfg = TrainConfig(device="cpu", epochs=4, augment="crop+flip", seed=1)
    plain = train_model(x, y, cfg=cfg, **kw)

    def teach() -> ConsistencyLoss:
        return ConsistencyLoss(u, weight=3.0, seed=2, teacher=_ConstantTeacher(), teacher_view=view)

    taught = train_model(x, y, cfg=cfg, step=teach(), **kw)
    again = train_model(x, y, cfg=cfg, step=teach(), **kw)
    assert taught.losses == again.losses
    share = {}
    for name, res in (("plain", plain), ("taught", taught)):
        p, _ = predict_batches(res.model, u, mean=[0.5], std=[0.25])
        share[name] = float((p.argmax(1) == 1).mean())
    assert share["plain"] < 0.5 < 0.9 < share["taught"], share
    with pytest.raises(ValueError, match="teacher_view"):
        ConsistencyLoss(u, teacher=_ConstantTeacher(), teacher_view="medium")
