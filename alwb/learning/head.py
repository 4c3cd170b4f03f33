"""The classifier head trained on cached embeddings each round, and the choice of training mode.

The head is a multinomial logistic regression (scikit-learn, through :func:`alwb.learning.balance.fit_linear_head`) on
standardised embeddings. It was measured against a small torch MLP (D-512-K, 60 epochs; ``bench/speed/backbones.py
heads`` and ``cnn6``, 1,000 labels, three seeds, a shared 2-core CPU) and kept:

- Fashion-MNIST PCA-256 features: logistic regression 0.736 ± 0.006, fit 0.13 s; MLP 0.740 ± 0.007, fit 9.9 s.
- embeddings of a cnn6 trained on 500 labels: logistic regression and MLP within 0.002 of each other on every seed
  (0.82 on average); the MLP round took about 1.9 s against 0.04 s.

The MLP's gain is inside the seed-to-seed spread and costs 50-75 times the time, past the 2 s round budget.

Class imbalance: ``balance="weights"`` weights the loss with :func:`alwb.learning.balance.class_weights`;
``balance="smote"``/``"adasyn"`` oversamples minority classes in embedding space with
:func:`alwb.learning.balance.resample_embeddings` (both existing functions, reused as they are).

A fitted head scores the pool from the embedding cache alone (no CNN pass), saves to and loads from one safetensors
file, and turns into a torch module (:meth:`LinearHead.to_module`, :func:`compose`) for export with its backbone.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from ..errors import ConfigError, NoLabelsError
from .plan import SMALL_IMAGE_PX

MODES: tuple[str, ...] = ("auto", "head", "finetune", "scratch")
BALANCE: tuple[str, ...] = ("none", "weights", "smote", "adasyn")
HEAD_FORMAT = "alwb-linear-head/1"
#: inverse L2 strength on standardised embeddings: best or within 0.01 of best at 64, 256 and 784 dimensions on
#: Fashion-MNIST stand-in features at 1,000 labels (C = 1 lost 0.02-0.04), and converges in fewer iterations
DEFAULT_C = 0.03
#: BLAS / OpenMP threads for fitting: the problem is small, and with the UI and other processes on the same cores
#: more threads only fight (1 thread: 0.36 s, 2 threads: 2.1 s for one fit on a loaded 2-core machine)
HEAD_THREADS = 1


@dataclass
class LinearHead:
    """A linear classifier on standardised embeddings: ``softmax(((e - mean) / scale) @ weight.T + bias)``.

    Attributes
    ----------
    weight : float32 ``(K, D)``.
    bias : float32 ``(K,)``.
    mean, scale : float32 ``(D,)`` standardisation of the embeddings.
    meta : JSON-able facts saved with the head (backbone, weights hash, classes, balance ...).
    """

    weight: npt.NDArray[np.float32]
    bias: npt.NDArray[np.float32]
    mean: npt.NDArray[np.float32]
    scale: npt.NDArray[np.float32]
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        """K."""
        return int(self.weight.shape[0])

    @property
    def dim(self) -> int:
        """D."""
        return int(self.weight.shape[1])

    def _fold(self) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
        """Weight and bias acting on raw embeddings (standardisation folded in)."""
        w = (self.weight / self.scale[None, :]).astype(np.float32)
        b = (self.bias - w @ self.mean).astype(np.float32)
        return w, b

    def logits(self, emb: npt.ArrayLike, *, chunk: int = 65536) -> npt.NDArray[np.float32]:
        """float32 ``(N, K)`` logits of raw embeddings ``(N, D)`` (a memmap is read in chunks)."""
        w, b = self._fold()
        n = len(emb)  # type: ignore[arg-type]
        out = np.empty((n, self.num_classes), dtype=np.float32)
        for s in range(0, n, chunk):
            block = np.asarray(emb[s : s + chunk], dtype=np.float32)  # type: ignore[index]
            if block.ndim != 2 or block.shape[1] != self.dim:
                raise ValueError(f"embeddings must be (N, {self.dim}), got {block.shape}")
            np.matmul(block, w.T, out=out[s : s + len(block)])
        out += b
        return out

    def predict_proba(self, emb: npt.ArrayLike, *, chunk: int = 65536) -> npt.NDArray[np.float32]:
        """float32 ``(N, K)`` class probabilities of raw embeddings ``(N, D)``; rows sum to 1."""
        z = self.logits(emb, chunk=chunk)
        z -= z.max(axis=1, keepdims=True)
        np.exp(z, out=z)
        z /= z.sum(axis=1, keepdims=True)
        return z

    def predict(self, emb: npt.ArrayLike) -> npt.NDArray[np.int64]:
        """``(N,)`` most probable class index."""
        return np.asarray(self.logits(emb).argmax(axis=1), dtype=np.int64)

    # ------------------------------------------------------------------------------------------ files

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write one safetensors file (tensors ``weight, bias, mean, scale``; ``meta`` as JSON metadata)."""
        import torch
        from safetensors.torch import save_file

        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        tensors = {k: torch.from_numpy(np.ascontiguousarray(getattr(self, k), dtype=np.float32)) for k in _TENSORS}
        tmp = p.with_name(f"{p.name}.{os.getpid()}.tmp")
        save_file(tensors, str(tmp), metadata={"format": HEAD_FORMAT, "meta": json.dumps(self.meta)})
        os.replace(tmp, p)
        return p

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> LinearHead:
        """Read a head written by :meth:`save`."""
        from safetensors import safe_open

        with safe_open(str(path), framework="np") as f:
            md = f.metadata() or {}
            if md.get("format") != HEAD_FORMAT:
                raise ValueError(f"{path} is not an alwb head file (format {md.get('format')!r})")
            arrays = {k: f.get_tensor(k).astype(np.float32) for k in _TENSORS}
        return cls(meta=json.loads(md.get("meta", "{}")), **arrays)

    def to_module(self) -> Any:
        """A ``torch.nn.Module`` mapping raw embeddings ``(N, D)`` to logits ``(N, K)`` (for export)."""
        import torch

        w, b = self._fold()
        lin = torch.nn.Linear(self.dim, self.num_classes)
        with torch.no_grad():
            lin.weight.copy_(torch.from_numpy(w))
            lin.bias.copy_(torch.from_numpy(b))
        return lin.eval()


_TENSORS = ("weight", "bias", "mean", "scale")


def standardiser(emb: npt.ArrayLike, *, max_rows: int = 5000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Per-dimension ``(mean, scale)`` (float32 ``(D,)``) of embeddings, from at most ``max_rows`` random rows.

    5,000 rows put the mean within about 1.4% of a standard deviation and cost 0.06 s at D = 2048 on a memmap
    (20,000 rows: 0.6 s, a third of the round's budget).
    """
    n = len(emb)  # type: ignore[arg-type]
    if n == 0:
        raise ValueError("no embeddings to standardise")
    idx = np.arange(n) if n <= max_rows else np.sort(np.random.default_rng(seed).choice(n, max_rows, replace=False))
    x = np.asarray(emb[idx], dtype=np.float32)  # type: ignore[index]
    mean = x.mean(axis=0, dtype=np.float64)
    scale = x.std(axis=0, dtype=np.float64)
    scale[scale < 1e-6] = 1.0
    return mean.astype(np.float32), scale.astype(np.float32)


def fit_head(
    emb: npt.ArrayLike,
    y: npt.ArrayLike,
    num_classes: int,
    *,
    balance: str = "none",
    c: float = DEFAULT_C,
    seed: int = 0,
    threads: int | None = HEAD_THREADS,
    standardise_with: npt.ArrayLike | None = None,
    meta: dict[str, Any] | None = None,
) -> LinearHead:
    """Fit the head on labelled embeddings.

    Parameters
    ----------
    emb : ``(n, D)`` embeddings of the labelled items (from :meth:`alwb.learning.embed.EmbeddingCache.rows`).
    y : ``(n,)`` class indices in ``0..num_classes-1``.
    balance : ``none``, ``weights`` (loss weights from :func:`alwb.learning.balance.class_weights`), ``smote`` or
        ``adasyn`` (:func:`alwb.learning.balance.resample_embeddings`, in the standardised space).
    c : inverse L2 regularisation strength of the logistic regression (:data:`DEFAULT_C`).
    standardise_with : embeddings to take the standardisation from (e.g. the whole pool's cached embeddings, so
        that it does not move with each round's labels); default: ``emb`` itself.
    meta : saved with the head (backbone name, weights hash, class names ...).
    threads : BLAS / OpenMP threads while fitting (None: leave the libraries' default).

    Returns
    -------
    LinearHead
        Classes absent from ``y`` are never predicted.
    """
    from .balance import class_weights, fit_linear_head, resample_embeddings

    if balance not in BALANCE:
        raise ConfigError(f"balance must be one of {', '.join(BALANCE)}, not {balance!r}")
    x = np.asarray(emb, dtype=np.float32)
    yy = np.asarray(y, dtype=np.int64)
    if x.ndim != 2 or len(x) != len(yy):
        raise ValueError(f"emb must be (n, D) with n = len(y) = {len(yy)}, got {x.shape}")
    if yy.size == 0:
        raise NoLabelsError("the head needs at least one labelled item")
    if yy.min() < 0 or yy.max() >= num_classes:
        raise ValueError(f"labels must be in 0..{num_classes - 1}")
    from threadpoolctl import threadpool_limits

    mean, scale = standardiser(x if standardise_with is None else standardise_with, seed=seed)
    z = (x - mean) / scale
    sample_weight = None
    with threadpool_limits(limits=threads):
        if balance == "weights":
            sample_weight = class_weights(yy, num_classes)[yy]
        elif balance in ("smote", "adasyn"):
            z, yy = resample_embeddings(z, yy, method=balance, seed=seed)
        w, b = fit_linear_head(z, yy, num_classes, seed=seed, c=c, sample_weight=sample_weight)
    info = {"kind": "logreg", "c": c, "balance": balance, "labels": int(len(x)), "num_classes": int(num_classes)}
    info.update(meta or {})
    return LinearHead(w.astype(np.float32), b.astype(np.float32), mean, scale, info)


def compose(extractor: Any, head: LinearHead) -> Any:
    """``torch.nn.Sequential(extractor, head)``: normalised images ``(N, 3, S, S)`` -> logits ``(N, K)``."""
    import torch

    return torch.nn.Sequential(extractor, head.to_module()).eval()


# ---------------------------------------------------------------------------------------------------- modes


def _cuda(device: str) -> bool:
    if device in ("auto", "", None):
        import torch

        return bool(torch.cuda.is_available())
    return str(device).startswith("cuda")


def choose_mode(
    requested: str,
    image_size: int,
    device: str,
    weights_available: bool,
    *,
    small_backbone: bool = False,
    grey: bool = False,
) -> tuple[str, str]:
    """The training mode and a short sentence saying why (shown by ``alwb status`` and the Settings page).

    Parameters
    ----------
    requested : ``auto``, ``head``, ``finetune`` or ``scratch``.
    image_size : the images' typical (median) shorter side in pixels.
    device : ``auto``, ``cpu``, ``cuda``, ``cuda:1`` ... (``auto``: CUDA when available).
    weights_available : whether the chosen backbone's weights are on this machine
        (:func:`alwb.learning.backbones.weights_available`, or a successful
        :func:`alwb.learning.backbones.resolve_weights`).
    small_backbone : the backbone is a small CNN that trains like one from scratch (the project's own, with
        :attr:`~alwb.learning.backbones.BackboneSpec.trains_like`): fine-tuning it on a CPU takes seconds, not minutes.
    grey : most images are greyscale (small greyscale images train from scratch under ``auto``).

    Returns
    -------
    (mode, reason)
        ``mode`` is ``head``, ``finetune`` or ``scratch``. ``auto``: images larger than 64 px with weights ->
        ``head`` on a CPU, ``finetune`` on CUDA; small colour images with weights -> ``head`` on any device (the
        measured choice, docs/experiments.md E37 and E40); small greyscale images or no weights -> ``scratch``. An
        explicit ``head`` or ``finetune`` without weights also falls back to ``scratch`` (the reason says how to
        get them).
    """
    if requested not in MODES:
        raise ConfigError(f"mode must be one of {', '.join(MODES)}, not {requested!r}")
    cuda = _cuda(device)
    where = "the GPU" if cuda else "the CPU"
    if requested == "scratch":
        return "scratch", "from-scratch model, as asked (no pretrained backbone)"
    if requested in ("head", "finetune") and not weights_available:
        return "scratch", (
            f"{requested} asked for, but the backbone's weights are not on this machine: training from scratch "
            "(see `alwb weights list`)"
        )
    if requested == "head":
        return "head", f"classifier head on cached embeddings, as asked (on {where})"
    if requested == "finetune":
        if cuda:
            return "finetune", "fine-tuning the pretrained backbone on the GPU, as asked"
        if small_backbone:
            return "finetune", (
                "fine-tuning the project's own small CNN on the CPU, as asked: about as fast as training it from "
                "scratch"
            )
        return "finetune", (
            "fine-tuning the pretrained backbone on the CPU, as asked: each round trains the whole network and takes "
            "minutes (head takes seconds)"
        )
    if image_size <= SMALL_IMAGE_PX and grey:
        return "scratch", (
            f"small greyscale images ({image_size} px): the from-scratch CNN learns them better than ImageNet features"
        )
    if image_size <= SMALL_IMAGE_PX and weights_available and not small_backbone:
        return "head", (
            f"small colour images ({image_size} px) with pretrained weights: a classifier head on the backbone's "
            f"features of the images enlarged to its input size (on {where}; on CIFAR-10 13 points better than the "
            "from-scratch CNN at 1,000 labels)"
        )
    if image_size <= SMALL_IMAGE_PX:
        return "scratch", (
            f"small colour images ({image_size} px), but no ImageNet backbone's weights on this machine: training "
            "from scratch"
        )
    if not weights_available:
        return "scratch", (
            "photos, but no pretrained weights on this machine: training from scratch (`alwb weights fetch NAME` "
            "on a networked machine, or `alwb weights add NAME FILE`)"
        )
    if cuda:
        return "finetune", f"photos ({image_size} px) with pretrained weights and a GPU: fine-tuning the backbone"
    return "head", (
        f"photos ({image_size} px) with pretrained weights on a CPU: a classifier head on cached embeddings "
        "(seconds per round)"
    )
