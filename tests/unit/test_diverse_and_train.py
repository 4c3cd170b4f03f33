"""Diverse batches, batched augmentation, the inference copy, warm starts, epochs, devices, reproducible training."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from alwb.config import TrainConfig
from alwb.errors import AlwbError, EmptyPoolError
from alwb.learning import models
from alwb.learning.data import random_shift_flip
from alwb.learning.query import select_diverse, uncertainty_scores
from alwb.learning.train import (
    auto_epochs,
    inference_copy,
    predict_batches,
    resolve_device,
    shrink_perturb,
    train_model,
)

PROPS = settings(deadline=None, max_examples=40, derandomize=True, database=None)


# ---------------------------------------------------------------------------------------------- diverse batches
def margin_of(proba: np.ndarray) -> np.ndarray:
    top = -np.sort(-proba, axis=1)
    return top[:, 0] - top[:, 1]


def two_class_proba(margins: np.ndarray) -> np.ndarray:
    return np.stack([(1 + margins) / 2, (1 - margins) / 2], axis=1)


def duplicate_clusters_pool(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Cluster A: the 10 most uncertain items, near-duplicates; cluster B: the next 10, near-duplicates elsewhere;
    80 confident items scattered. Margin sampling alone would take every item of a batch of 2..10 from A."""
    rng = np.random.default_rng(seed)
    n = 100
    margins = np.concatenate([rng.uniform(0.00, 0.05, 10), rng.uniform(0.10, 0.15, 10), rng.uniform(0.6, 0.99, 80)])
    emb = np.concatenate(
        [
            np.array([10.0, 0, 0, 0]) + rng.normal(scale=1e-3, size=(10, 4)),
            np.array([0, 10.0, 0, 0]) + rng.normal(scale=1e-3, size=(10, 4)),
            rng.normal(scale=3.0, size=(80, 4)),
        ]
    )
    ids = rng.permutation(np.arange(1000, 1000 + n))  # ids not in row order
    perm = rng.permutation(n)
    cluster = np.repeat([0, 1, 2], [10, 10, 80])
    return two_class_proba(margins)[perm], emb[perm], ids, cluster[perm], margins[perm]


def test_diverse_picks_from_both_duplicate_clusters() -> None:
    proba, emb, ids, cluster, _ = duplicate_clusters_pool()
    by_id = dict(zip(ids.tolist(), cluster.tolist(), strict=True))
    # margin alone would take both from cluster A
    margin_only = ids[np.argsort(margin_of(proba), kind="stable")[:2]]
    assert {by_id[int(i)] for i in margin_only} == {0}
    got, scores = select_diverse(proba, emb, ids, 2, candidates_per_item=10, seed=0)
    assert sorted(by_id[int(i)] for i in got) == [0, 1]
    # and each is the most uncertain item of its cluster
    for i in got:
        members = cluster == by_id[int(i)]
        assert int(i) == int(ids[members][np.argmin(margin_of(proba)[members])])
    np.testing.assert_allclose(scores, -margin_of(proba)[[list(ids).index(int(i)) for i in got]])


def test_diverse_batch_larger_than_clusters_still_covers_both() -> None:
    proba, emb, ids, cluster, _ = duplicate_clusters_pool(seed=1)
    by_id = dict(zip(ids.tolist(), cluster.tolist(), strict=True))
    got, _ = select_diverse(proba, emb, ids, 4, candidates_per_item=5, seed=0)  # 20 candidates = A and B
    assert len(set(got.tolist())) == 4
    assert {by_id[int(i)] for i in got} == {0, 1}


@st.composite
def pools(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray, np.ndarray, int, int, int]:
    size = draw(st.integers(1, 60))
    k = draw(st.integers(2, 4))
    seed = draw(st.integers(0, 2**16))
    rng = np.random.default_rng(seed)
    raw = rng.random((size, k)) ** 3
    proba = raw / raw.sum(1, keepdims=True)
    emb = rng.normal(size=(size, 3))
    if draw(st.booleans()):  # many exact duplicates: k-means finds fewer distinct clusters
        emb = emb[rng.integers(0, 3, size)]
    ids = rng.choice(10_000, size=size, replace=False).astype(np.int64)
    return proba, emb, ids, draw(st.integers(1, 12)), draw(st.integers(1, 6)), seed


@PROPS
@given(pools())
def test_diverse_property(pool: tuple[np.ndarray, np.ndarray, np.ndarray, int, int, int]) -> None:
    import warnings

    proba, emb, ids, n, per_item, seed = pool
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # k-means warns when duplicates leave fewer distinct clusters
        got, scores = select_diverse(proba, emb, ids, n, candidates_per_item=per_item, seed=seed)
    want = min(n, len(ids))
    assert len(got) == want and len(set(got.tolist())) == want
    assert set(got.tolist()) <= set(ids.tolist())
    assert got.dtype == np.int64
    # every pick is among the candidates_per_item * n most uncertain items (margin; ties may go either way)
    m = min(len(ids), max(want, per_item * want))
    margins = margin_of(proba)
    cutoff = np.sort(margins)[m - 1]
    pos = {int(i): r for r, i in enumerate(ids)}
    picked = np.array([pos[int(i)] for i in got])
    assert np.all(margins[picked] <= cutoff + 1e-12)
    # scores are the negated margins, ordered most informative first, ties by id
    np.testing.assert_allclose(scores, uncertainty_scores(proba[picked], "margin"))
    np.testing.assert_allclose(scores, -margins[picked], atol=1e-12)
    order = np.lexsort((got, -scores))
    np.testing.assert_array_equal(order, np.arange(len(got)))


def test_diverse_takes_all_when_n_covers_the_pool() -> None:
    proba = two_class_proba(np.array([0.5, 0.1, 0.3]))
    got, scores = select_diverse(proba, np.zeros((3, 2)), [7, 8, 9], 5)
    assert got.tolist() == [8, 9, 7]
    np.testing.assert_allclose(scores, [-0.1, -0.3, -0.5])


def test_diverse_empty_pool() -> None:
    with pytest.raises(EmptyPoolError):
        select_diverse(np.zeros((0, 2)), np.zeros((0, 2)), [], 3)


# ---------------------------------------------------------------------------------------------- augmentation
def reference_shift_flip(x: np.ndarray, pad: int, flip: bool, gen: torch.Generator) -> np.ndarray:
    """torchvision's padded RandomCrop + RandomHorizontalFlip, one sample at a time, with the same random draws."""
    b, _, h, w = x.shape
    dy = torch.randint(0, 2 * pad + 1, (b,), generator=gen).numpy()
    dx = torch.randint(0, 2 * pad + 1, (b,), generator=gen).numpy()
    mirror = (torch.rand(b, generator=gen) < 0.5).numpy() if flip else np.zeros(b, dtype=bool)
    out = np.empty_like(x)
    for i in range(b):
        padded = np.pad(x[i], ((0, 0), (pad, pad), (pad, pad)))  # zero fill
        crop = padded[:, dy[i] : dy[i] + h, dx[i] : dx[i] + w]
        out[i] = crop[:, :, ::-1] if mirror[i] else crop
    return out


def all_shifts(img: np.ndarray, pad: int, flip: bool) -> list[np.ndarray]:
    _, h, w = img.shape
    padded = np.pad(img, ((0, 0), (pad, pad), (pad, pad)))
    out = []
    for dy in range(2 * pad + 1):
        for dx in range(2 * pad + 1):
            crop = padded[:, dy : dy + h, dx : dx + w]
            out.append(crop)
            if flip:
                out.append(crop[:, :, ::-1])
    return out


@pytest.mark.parametrize(
    ("pad", "flip", "channels", "h", "w"), [(2, True, 1, 8, 8), (3, False, 3, 7, 9), (1, True, 2, 5, 6)]
)
def test_random_shift_flip_matches_reference(pad: int, flip: bool, channels: int, h: int, w: int) -> None:
    rng = np.random.default_rng(pad)
    x = rng.integers(1, 256, size=(12, channels, h, w), dtype=np.uint8)  # no zeros: the fill is visible
    got = random_shift_flip(torch.from_numpy(x), pad=pad, flip=flip, generator=torch.Generator().manual_seed(7))
    assert got.shape == x.shape and got.dtype == torch.uint8
    want = reference_shift_flip(x, pad, flip, torch.Generator().manual_seed(7))
    np.testing.assert_array_equal(got.numpy(), want)
    for i in range(len(x)):  # independently of the draw order: each output is a shifted (mirrored) copy
        assert any(np.array_equal(got[i].numpy(), c) for c in all_shifts(x[i], pad, flip))
    # seeded: the same generator state gives the same batch
    again = random_shift_flip(torch.from_numpy(x), pad=pad, flip=flip, generator=torch.Generator().manual_seed(7))
    assert torch.equal(got, again)


def test_random_shift_flip_varies_and_flips() -> None:
    x = torch.from_numpy(np.random.default_rng(0).integers(1, 256, size=(64, 1, 6, 6), dtype=np.uint8))
    got = random_shift_flip(x, pad=2, flip=True, generator=torch.Generator().manual_seed(0))
    kinds = set()
    for i in range(len(x)):
        cands = all_shifts(x[i].numpy(), 2, True)
        kinds.add(next(j for j, c in enumerate(cands) if np.array_equal(got[i].numpy(), c)))
    assert len(kinds) > 10  # many different shifts
    assert any(k % 2 == 1 for k in kinds) and any(k % 2 == 0 for k in kinds)  # mirrored and not


def test_random_shift_flip_identity() -> None:
    x = torch.from_numpy(np.random.default_rng(1).integers(0, 256, size=(5, 3, 4, 7), dtype=np.uint8))
    got = random_shift_flip(x, pad=0, flip=False, generator=torch.Generator().manual_seed(3))
    assert torch.equal(got, x) and got.dtype == x.dtype


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 400), batch=st.integers(2, 128), seed=st.integers(0, 3))
def test_batches_are_even_and_cover_every_sample_once(n: int, batch: int, seed: int) -> None:
    """An epoch uses every sample once, in ceil(n / batch) batches whose sizes differ by at most one: no trailing
    batch of a few images (900 labels in batches of 64 used to end each epoch on a batch of 4)."""
    from alwb.learning.train import _BatchIterator

    x = np.arange(n, dtype=np.uint8).reshape(n, 1, 1, 1) % 251
    y = np.arange(n, dtype=np.int64)
    it = _BatchIterator(
        x,
        y,
        None,
        cfg=TrainConfig(batch_size=batch, augment="none"),
        size=1,
        generator=torch.Generator().manual_seed(seed),
    )
    sizes, seen = [], []
    for xb, yb, wb in it:
        assert len(xb) == len(yb) == len(wb)
        sizes.append(len(yb))
        seen.extend(yb.tolist())
    assert len(sizes) == len(it) == -(-n // min(batch, n))
    assert sorted(seen) == list(range(n))
    assert max(sizes) <= batch and max(sizes) - min(sizes) <= 1


# ---------------------------------------------------------------------------------------------- inference copy
def _trained(
    model: models.Classifier, channels: int, size: int, *, steps: int = 3, batch: int = 12
) -> tuple[models.Classifier, torch.Tensor]:
    """A few SGD steps on offset inputs so that BatchNorm running statistics move well away from (0, 1)."""
    torch.manual_seed(0)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = 0.5  # fewer steps for the same drift of the statistics
    x = torch.randn(batch, channels, size, size) * 3.0 + 2.0
    y = torch.arange(batch) % 3
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    model.train()
    for _ in range(steps):
        loss = torch.nn.functional.cross_entropy(model(x), y)
        assert torch.isfinite(loss)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns and max(float(m.running_mean.abs().max()) for m in bns) > 0.1  # non-trivial statistics
    assert max(float((m.running_var - 1).abs().max()) for m in bns) > 0.1
    return model, torch.randn(4, channels, size, size) * 3.0 + 2.0


@pytest.mark.parametrize(
    ("arch", "channels", "size", "steps"),
    [("cnn6", 1, 16, 3), ("smallcnn", 1, 16, 3), ("smallcnn", 3, 20, 3), ("resnet18", 1, 32, 1)],
)
def test_inference_copy_matches_eval_model(arch: str, channels: int, size: int, steps: int) -> None:
    model = models.get_model(arch, channels=channels, num_classes=3, image_size=size)
    model, x = _trained(model, channels, size, steps=steps, batch=12 if arch != "resnet18" else 4)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        want_e = model.embed(x)
        want_p = torch.softmax(model.head(want_e), 1)
    copy = inference_copy(model, torch.device("cpu"))
    assert not copy.training
    layouts = [x.contiguous(memory_format=torch.channels_last)] + ([x] if arch != "resnet18" else [])
    with torch.no_grad():
        for xb in layouts:  # channels-last as predict_batches feeds it, and plain contiguous
            got_e = copy.embed(xb)
            got_p = torch.softmax(copy.head(got_e), 1)
            torch.testing.assert_close(got_p, want_p, atol=1e-5, rtol=0)
            torch.testing.assert_close(got_e, want_e, atol=1e-4, rtol=1e-4)
    # the original is untouched and still has its BatchNorm layers
    assert model.state_dict().keys() == before.keys()
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    if arch != "resnet18":  # every conv-BN pair was folded
        assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in copy.modules())


def test_predict_batches_matches_eval_model() -> None:
    from alwb.learning.data import normalise

    model, _ = _trained(models.get_model("smallcnn", channels=1, num_classes=3, image_size=12), 1, 12)
    pixels = np.random.default_rng(0).integers(0, 256, size=(37, 1, 12, 12), dtype=np.uint8)
    mean, std = [0.4], [0.2]
    probs, emb = predict_batches(model, pixels, mean=mean, std=std, batch_size=8)
    with torch.no_grad():
        x = normalise(torch.from_numpy(pixels), torch.tensor(mean), torch.tensor(std))
        want = torch.softmax(model(x), 1).numpy()
    np.testing.assert_allclose(probs, want, atol=1e-5)
    assert probs.shape == (37, 3) and emb.shape == (37, model.emb_dim)


# ---------------------------------------------------------------------------------------------- warm start, epochs
def test_shrink_perturb_formula() -> None:
    torch.manual_seed(0)
    model = models.get_model("smallcnn", channels=1, num_classes=2, image_size=8)
    fresh = models.get_model("smallcnn", channels=1, num_classes=2, image_size=8)
    old = [p.detach().clone() for p in model.parameters()]
    buffers = {k: v.clone() for k, v in model.named_buffers()}
    shrink_perturb(model, fresh, 0.6, 0.01)
    for p, q, o in zip(model.parameters(), fresh.parameters(), old, strict=True):
        torch.testing.assert_close(p.detach(), 0.6 * o + 0.01 * q.detach())
    for k, v in model.named_buffers():  # BatchNorm statistics are not parameters
        assert torch.equal(v, buffers[k])
    # shrink 1, perturb 0 is the identity
    snap = [p.detach().clone() for p in model.parameters()]
    shrink_perturb(model, fresh, 1.0, 0.0)
    assert all(torch.equal(p.detach(), s) for p, s in zip(model.parameters(), snap, strict=True))


@PROPS
@given(
    n=st.integers(1, 200_000),
    batch=st.integers(1, 512),
    ratio=st.sampled_from([0.1, 0.25, 0.5, 1.0]),
)
def test_auto_epochs_bounds(n: int, batch: int, ratio: float) -> None:
    cfg = TrainConfig(warm_epochs_ratio=ratio)
    cold = auto_epochs(n, batch, warm=False, cfg=cfg)
    warm = auto_epochs(n, batch, warm=True, cfg=cfg)
    assert 3 <= warm <= cold <= 150
    assert isinstance(cold, int) and isinstance(warm, int)


def test_auto_epochs_examples() -> None:
    cfg = TrainConfig()
    assert auto_epochs(10, 64, warm=False, cfg=cfg) == 150  # 1 step per epoch: capped
    assert auto_epochs(1_000_000, 64, warm=False, cfg=cfg) == 3  # floor
    assert auto_epochs(1_000_000, 64, warm=False, cfg=cfg, arch="resnet18", image_size=224) == 3
    # 64 labels per step, 1,000 labels -> 16 steps per epoch -> 800 / 16 = 50 epochs cold, 25 warm
    assert auto_epochs(1000, 64, warm=False, cfg=cfg) == 50
    assert auto_epochs(1000, 64, warm=True, cfg=cfg) == 25
    assert auto_epochs(1000, 64, warm=True, cfg=cfg) < auto_epochs(1000, 64, warm=False, cfg=cfg)
    # beyond 1,000 labels the small CNN keeps its epochs (more steps), up to four times the steps
    assert auto_epochs(2000, 64, warm=True, cfg=cfg) == 25  # 800 steps of 32
    assert auto_epochs(4000, 64, warm=False, cfg=cfg) == 51  # 3,200 steps of 63
    assert auto_epochs(8000, 64, warm=False, cfg=cfg) == 26  # capped at 3,200 steps of 125
    for arch in ("cnn6", "smallcnn"):  # both small CNNs share the budget
        assert auto_epochs(4000, 64, warm=False, cfg=cfg, arch=arch) == 51
    # ResNet-18 keeps its fixed budget: 300 steps
    assert auto_epochs(2000, 64, warm=False, cfg=cfg, arch="resnet18", image_size=224) == 10
    explicit = TrainConfig(epochs=7)
    assert auto_epochs(10, 64, warm=False, cfg=explicit) == 7
    assert auto_epochs(10**6, 64, warm=True, cfg=explicit) == 7
    assert auto_epochs(5, 64, warm=False, cfg=TrainConfig(epochs=400)) == 400  # explicit is not clipped


# ---------------------------------------------------------------------------------------------- devices
@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
def test_resolve_device_cuda_missing() -> None:
    with pytest.raises(AlwbError, match="cuda"):
        resolve_device("cuda")


def test_resolve_device_cpu_and_auto() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type in ("cpu", "cuda", "mps")


# ---------------------------------------------------------------------------------------------- reproducibility
def test_training_is_reproducible() -> None:
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(40, 1, 16, 16), dtype=np.uint8)
    y = rng.integers(0, 2, size=40).astype(np.int64)
    kw = {"arch": "smallcnn", "num_classes": 2, "mean": [0.5], "std": [0.25]}
    cfg = TrainConfig(device="cpu", epochs=2, augment="crop+flip", seed=3)
    a = train_model(x, y, cfg=cfg, **kw)
    torch.manual_seed(123)  # global state in between must not matter
    np.random.seed(123)
    b = train_model(x, y, cfg=cfg, **kw)
    assert a.epochs == b.epochs == 2 and a.losses == b.losses
    sa, sb = a.model.state_dict(), b.model.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k
    # a different seed trains a different model
    c = train_model(x, y, cfg=cfg.with_(seed=4), **kw)
    assert any(not torch.equal(sa[k], c.model.state_dict()[k]) for k in sa if sa[k].is_floating_point())


def test_warm_start_is_reproducible() -> None:
    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, size=(24, 1, 12, 12), dtype=np.uint8)
    y = (np.arange(24) % 2).astype(np.int64)
    kw = {"arch": "smallcnn", "num_classes": 2, "mean": [0.5], "std": [0.25]}
    cfg = TrainConfig(device="cpu", epochs=1, seed=0)
    init = {
        k: v + 0.01 if v.is_floating_point() else v
        for k, v in train_model(x, y, cfg=cfg, **kw).model.state_dict().items()
    }
    d1 = train_model(x, y, cfg=cfg, init_state=init, **kw)
    d2 = train_model(x, y, cfg=cfg, init_state=init, **kw)
    assert d1.warm and d2.warm
    assert all(torch.equal(v, d2.model.state_dict()[k]) for k, v in d1.model.state_dict().items())


def test_predict_batches_flip_tta_averages_the_image_and_its_mirror() -> None:
    from alwb.learning.data import normalise

    model, _ = _trained(models.get_model("smallcnn", channels=1, num_classes=3, image_size=12), 1, 12)
    pixels = np.random.default_rng(2).integers(0, 256, size=(21, 1, 12, 12), dtype=np.uint8)
    mean, std = [0.4], [0.2]
    plain, emb = predict_batches(model, pixels, mean=mean, std=std, batch_size=8)
    probs, emb_tta = predict_batches(model, pixels, mean=mean, std=std, batch_size=8, tta_flip=True)
    with torch.no_grad():
        x = normalise(torch.from_numpy(pixels), torch.tensor(mean), torch.tensor(std))
        want = ((torch.softmax(model(x), 1) + torch.softmax(model(x.flip(-1)), 1)) / 2).numpy()
    np.testing.assert_allclose(probs, want, atol=1e-5)
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)
    assert np.abs(probs - plain).max() > 1e-3  # the mirror view changed the answer
    np.testing.assert_allclose(emb_tta, emb, atol=1e-6)  # embeddings are the image's own
    # a mirror-symmetric image gets the same probabilities either way
    sym = np.concatenate([pixels[..., :6], pixels[..., :6][..., ::-1]], axis=-1)
    a, _ = predict_batches(model, sym, mean=mean, std=std)
    b, _ = predict_batches(model, sym, mean=mean, std=std, tta_flip=True)
    np.testing.assert_allclose(a, b, atol=1e-5)


def test_tta_follows_flip_training_and_lr_follows_the_model() -> None:
    from alwb.learning.train import auto_lr, uses_tta

    assert uses_tta(TrainConfig(augment="crop+flip"))
    assert not uses_tta(TrainConfig(augment="crop")) and not uses_tta(TrainConfig(augment="none"))
    assert auto_lr("smallcnn", TrainConfig()) == auto_lr("cnn6", TrainConfig()) == 0.04
    assert auto_lr("resnet18", TrainConfig()) == 2e-3  # pretrained weights survive fine-tuning
    assert auto_lr("resnet18", TrainConfig(lr=0.01)) == auto_lr("smallcnn", TrainConfig(lr=0.01)) == 0.01
    from alwb.errors import ConfigError

    with pytest.raises(ConfigError, match="setting lr must be ≥ 0"):
        TrainConfig(lr=-1.0)
