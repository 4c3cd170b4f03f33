"""A training round that fails (exception, NaN loss, out of memory, a failed file or store write) changes nothing
the user relies on: round 1's model, file and scores stay current, queries still work, the failed round is recorded
with its error, and no partial file of the failed round is left behind.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_shapes
from reliability_figures import report_figures
from safetensors.torch import load_file
from store_checks import integrity_ok

import alwb.learning.train
import alwb.store
from alwb.errors import AlwbError
from alwb.project import Project


def _digest(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Project:
    """A 60-image project with every pool item labelled and round 1 trained (2 epochs, CPU)."""
    base = tmp_path_factory.mktemp("failing_round")
    truth = make_shapes(base / "img", 20, size=20, layout="flat", seed=3)
    p = Project.create(base / "proj", classes=["circle", "square", "triangle"])
    p.add_images(base / "img", progress=False, workers=1)
    ids = {r["path"]: r["id"] for r in p.store.items()}
    val = set(p.store.val_item_ids())
    p.label([(ids[path], cls) for path, cls in truth.items() if ids[path] not in val])
    p.set_train_config(num_threads=2)
    summary = p.train(epochs=2, device="cpu")
    assert summary.round == 1 and p.store.current_round() == 1
    yield p
    p.close()


# ---------------------------------------------------------------------------- the ways round 2 fails
def _raise_in_training(mp: pytest.MonkeyPatch) -> None:
    def boom(*_a: object, **_k: object) -> None:
        raise RuntimeError("simulated failure inside training")

    mp.setattr(alwb.learning.train, "train_model", boom)


def _nan_loss(mp: pytest.MonkeyPatch) -> None:
    real = torch.nn.CrossEntropyLoss.forward

    def nan_forward(self: torch.nn.CrossEntropyLoss, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return real(self, input, target) * float("nan")  # still in the autograd graph

    mp.setattr(torch.nn.CrossEntropyLoss, "forward", nan_forward)


def _torch_oom(mp: pytest.MonkeyPatch) -> None:
    """The first optimiser step runs out of memory (after a real forward and backward pass)."""

    def oom(*_a: object, **_k: object) -> None:
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (simulated)")

    mp.setattr(torch.optim.AdamW, "step", oom)


def _memory_error_while_scoring(mp: pytest.MonkeyPatch) -> None:
    """Scoring (after the model file was written) runs out of host memory half-way."""

    def half_then_fail(model, pixels, *, out_probs=None, out_emb=None, **_k):  # noqa: ANN001, ANN202
        if out_probs is not None:
            out_probs[: len(out_probs) // 2] = 0.5
        raise MemoryError("simulated: cannot allocate scoring buffer")

    mp.setattr(alwb.learning.train, "predict_batches", half_then_fail)


def _store_fails_at_the_end(mp: pytest.MonkeyPatch) -> None:
    """Everything was written (model file, scores) but recording the round fails."""

    def fail(*_a: object, **_k: object) -> None:
        raise alwb.store.sqlite3.OperationalError("disk I/O error (simulated)")

    mp.setattr(alwb.store.Store, "finish_round", fail)


MODEL_RENAMES: list[tuple[str, str, bool]] = []


def _model_replace_fails(mp: pytest.MonkeyPatch) -> None:
    """The atomic rename of the model file fails: the final name must never appear."""
    real = os.replace

    def replace(src: str | os.PathLike[str], dst: str | os.PathLike[str], **kw: object) -> None:
        if str(dst).endswith(".safetensors"):
            # the weights were written completely under a temporary name first
            MODEL_RENAMES.append((str(src), str(dst), Path(src).is_file() and Path(src).stat().st_size > 0))
            raise OSError(28, "No space left on device (simulated)")
        real(src, dst, **kw)

    mp.setattr(os, "replace", replace)


FAILURES: dict[str, tuple[Callable[[pytest.MonkeyPatch], None], type[BaseException], str]] = {
    "exception": (_raise_in_training, RuntimeError, "simulated failure inside training"),
    "nan_loss": (_nan_loss, AlwbError, "training diverged"),
    "torch_oom": (_torch_oom, torch.OutOfMemoryError, "out of memory"),
    "memory_error_scoring": (_memory_error_while_scoring, MemoryError, "cannot allocate"),
    "store_write_fails": (_store_fails_at_the_end, alwb.store.sqlite3.OperationalError, "disk I/O error"),
    "model_rename_fails": (_model_replace_fails, OSError, "No space left"),
}


def _leftovers(root: Path, number: int) -> list[str]:
    stem = f"round_{number:04d}"
    return sorted(
        str(p.relative_to(root))
        for d in ("models", "scores")
        if (root / d).exists()
        for p in (root / d).glob(stem + "*")
    )


@pytest.mark.parametrize("how", list(FAILURES))
def test_a_failed_round_keeps_the_previous_model(
    trained: Project, how: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    p = trained
    inject, exc_type, text = FAILURES[how]
    base = p.store.current_round()
    model = p.current_model()
    model_digest = _digest(model["path"])
    scores = p.scores()
    probs_before = np.array(scores.probs)
    query_before = [i.id for i in p.query(8).items]

    with monkeypatch.context() as mp:
        inject(mp)
        with pytest.raises(exc_type, match=text):
            p.train(epochs=2, device="cpu")

    failed = base + 1
    # the previous round stays current, with its file, weights and scores
    assert p.store.current_round() == base
    cur = p.current_model()
    assert cur["id"] == model["id"] and cur["path"] == model["path"]
    assert Path(cur["path"]).is_file() and _digest(cur["path"]) == model_digest
    state = load_file(cur["path"])
    assert state and all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())
    again = p.scores()
    assert again is not None and again.round == base
    np.testing.assert_array_equal(np.asarray(again.probs), probs_before)
    # the query still works, and (read-only, seeded) proposes the same items
    assert [i.id for i in p.query(8).items] == query_before
    # the failed round is recorded with its error
    rounds = {r["number"]: r for r in p.status()["rounds"]}
    assert rounds[failed]["status"] == "failed"
    assert exc_type.__name__ in rounds[failed]["error"] and text in rounds[failed]["error"]
    assert rounds[base]["status"] == "done"
    # nothing of the failed round is left on disk
    assert _leftovers(p.root, failed) == []
    assert integrity_ok(p.store)
    if how == "model_rename_fails":
        ((src, dst, complete),) = MODEL_RENAMES
        assert src.endswith(".tmp") and Path(dst).name == f"round_{failed:04d}.safetensors" and complete
    report_figures(tmp_path, f"failing_round_{how}", {"error": rounds[failed]["error"], "current_round": base})


def test_training_works_again_after_failures(trained: Project) -> None:
    base = trained.store.current_round()
    summary = trained.train(epochs=1, device="cpu")
    assert summary.round == base + 1 and trained.store.current_round() == base + 1
    assert Path(summary.model_path).is_file() and trained.scores().round == base + 1
    assert [r["status"] for r in trained.store.rounds()] == ["done"] * (base + 1)
