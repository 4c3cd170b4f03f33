"""alwb.learning.head: the logistic-regression head on embeddings (fit, balance, predict_proba, safetensors, torch
module)
and choose_mode."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from alwb.errors import ConfigError, NoLabelsError
from alwb.learning.head import LinearHead, choose_mode, compose, fit_head


def blobs(n_per: list[int], dim: int = 32, seed: int = 0, spread: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(len(n_per), dim)) * 2.0
    x = np.concatenate([centres[k] + spread * rng.normal(size=(n, dim)) for k, n in enumerate(n_per)])
    y = np.concatenate([np.full(n, k) for k, n in enumerate(n_per)])
    return (x * 5 + 3).astype(np.float32), y  # off-centre, large scale: standardisation matters


def test_fits_and_predicts() -> None:
    x, y = blobs([40, 40, 40])
    xt, yt = blobs([200, 200, 200], seed=0)
    head = fit_head(x, y, 4, meta={"backbone": "t"})  # class 3 has no labels
    proba = head.predict_proba(xt)
    assert proba.shape == (600, 4) and proba.dtype == np.float32
    assert np.allclose(proba.sum(axis=1), 1, atol=1e-5)
    assert (head.predict(xt) == yt).mean() > 0.95
    assert proba[:, 3].max() < 1e-6
    assert head.meta["backbone"] == "t" and head.meta["labels"] == 120


def test_scores_a_memmap_in_chunks(tmp_path: Path) -> None:
    x, y = blobs([30, 30])
    head = fit_head(x, y, 2)
    pool = np.lib.format.open_memmap(tmp_path / "e.npy", mode="w+", dtype=np.float32, shape=(1000, 32))
    pool[:] = blobs([500, 500], seed=3)[0]
    pool.flush()
    ro = np.load(tmp_path / "e.npy", mmap_mode="r")
    assert np.allclose(head.predict_proba(ro, chunk=64), head.predict_proba(np.asarray(ro)), atol=1e-6)


@pytest.mark.parametrize("balance", ["weights", "smote", "adasyn"])
def test_balancing_helps_a_rare_class(balance: str) -> None:
    x, y = blobs([300, 8], dim=16, spread=2.2, seed=1)
    xt, yt = blobs([1000, 1000], dim=16, spread=2.2, seed=1)
    plain = fit_head(x, y, 2)
    bal = fit_head(x, y, 2, balance=balance)
    rare = yt == 1
    assert (bal.predict(xt)[rare] == 1).mean() >= (plain.predict(xt)[rare] == 1).mean()
    assert bal.meta["balance"] == balance


def test_single_class_and_bad_input() -> None:
    x, y = blobs([10])
    head = fit_head(x, y, 3)
    assert (head.predict(x) == 0).all()
    with pytest.raises(NoLabelsError):
        fit_head(np.zeros((0, 4), np.float32), np.zeros(0, int), 2)
    with pytest.raises(ConfigError, match="balance"):
        fit_head(x, y, 3, balance="tomek")
    with pytest.raises(ValueError, match=r"0\.\.2"):
        fit_head(x, y + 5, 3)


def test_save_load_and_torch_module(tmp_path: Path) -> None:
    x, y = blobs([20, 20, 20])
    head = fit_head(x, y, 3, meta={"backbone": "resnet18", "classes": ["a", "b", "c"]})
    path = head.save(tmp_path / "heads" / "round_1.safetensors")
    back = LinearHead.load(path)
    assert back.meta == head.meta
    assert np.array_equal(back.predict_proba(x), head.predict_proba(x))
    with torch.no_grad():
        logits = head.to_module()(torch.from_numpy(x)).numpy()
    assert np.allclose(logits, head.logits(x), atol=1e-3)
    feat = torch.nn.Linear(8, 32)
    model = compose(feat, head)
    inp = torch.randn(4, 8)
    with torch.no_grad():
        assert np.allclose(model(inp).numpy(), head.logits(feat(inp).numpy()), atol=1e-3)
    (tmp_path / "x.safetensors").write_bytes((tmp_path / "heads" / "round_1.safetensors").read_bytes()[:20])
    with pytest.raises(Exception):  # noqa: B017 - safetensors' own error type
        LinearHead.load(tmp_path / "x.safetensors")


@pytest.mark.parametrize(
    ("requested", "size", "device", "weights", "mode", "words"),
    [
        ("auto", 224, "cpu", True, "head", "cached embeddings"),
        ("auto", 224, "cuda", True, "finetune", "GPU"),
        ("auto", 28, "cuda", True, "head", "small colour images (28 px)"),
        ("auto", 32, "cpu", False, "scratch", "small colour images (32 px), but no ImageNet"),
        ("auto", 500, "cpu", False, "scratch", "alwb weights fetch"),
        ("head", 28, "cpu", True, "head", "as asked"),
        ("finetune", 224, "cpu", True, "finetune", "minutes"),
        ("head", 224, "cpu", False, "scratch", "not on this machine"),
        ("scratch", 224, "cuda", True, "scratch", "as asked"),
        ("auto", 65, "cuda:1", True, "finetune", "GPU"),
        ("auto", 64, "cpu", True, "head", "small colour images"),
    ],
)
def test_choose_mode(requested: str, size: int, device: str, weights: bool, mode: str, words: str) -> None:
    got, reason = choose_mode(requested, size, device, weights)
    assert got == mode and words in reason and "\n" not in reason


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_small_greyscale_images_train_from_scratch_under_auto(device: str) -> None:
    got, reason = choose_mode("auto", 28, device, True, grey=True)
    assert got == "scratch" and "small greyscale images (28 px)" in reason
    assert choose_mode("head", 28, device, True, grey=True)[0] == "head"  # asked for: as asked


def test_a_small_backbone_fine_tunes_on_the_cpu_without_the_minutes_warning() -> None:
    got, reason = choose_mode("finetune", 32, "cpu", True, small_backbone=True)
    assert got == "finetune" and "small CNN" in reason and "minutes" not in reason
    assert choose_mode("finetune", 32, "cuda", True, small_backbone=True)[1].endswith("on the GPU, as asked")
    assert choose_mode("auto", 32, "cpu", True, small_backbone=True)[0] == "scratch"  # auto never picks it


def test_choose_mode_refuses_unknown() -> None:
    with pytest.raises(ConfigError, match="head, finetune, scratch"):
        choose_mode("linear", 224, "cpu", True)


def test_choose_mode_auto_device() -> None:
    mode, _ = choose_mode("auto", 224, "auto", True)
    assert mode == ("finetune" if torch.cuda.is_available() else "head")
