"""Classify images with an exported ``model.onnx`` through ONNX Runtime: no PyTorch needed.

The exported graph takes ``pixels``, float32 ``(N, C, S, S)`` with values 0-255 (the image after its resize and
centre crop, not normalised: the normalisation, the softmax and the mirror-image average are in the graph) and
returns ``probabilities`` ``(N, K)``. ``preprocess.json`` beside it says how to resize and crop (its ``onnx``
section names the input and output). This module imports NumPy, Pillow and onnxruntime only; a test runs it in a
process where ``import torch`` fails.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import AlwbError, ImageRejected

ONNX_FILE = "model.onnx"


def has_onnx(model_dir: str | Path) -> bool:
    """True when ``model_dir`` holds an exported ONNX model."""
    return (Path(model_dir) / ONNX_FILE).is_file() and (Path(model_dir) / "preprocess.json").is_file()


def onnxruntime_available() -> bool:
    """True when onnxruntime can be imported here."""
    import importlib.util

    return importlib.util.find_spec("onnxruntime") is not None


def pixels_for(path: str | Path, pre: dict[str, Any]) -> np.ndarray:
    """One image as the model's uint8 ``(C, S, S)`` input, prepared as ``preprocess.json`` says (the workbench's
    own geometry functions: the same resize and crop it scored with)."""
    from ..intake.images import load_array, load_image

    bpre = pre.get("backbone_preprocess")
    if bpre is None:
        return load_array(path, int(pre["image_size"]), int(pre["channels"]))
    from ..learning.backbones import Preprocess  # NumPy and Pillow only at import time

    return Preprocess.from_dict(bpre).to_uint8(load_image(path, 3))


def prediction_rows(
    paths: Sequence[str | Path],
    pre: dict[str, Any],
    probs: Callable[[np.ndarray], np.ndarray],
    classes: Sequence[str],
) -> list[dict[str, Any]]:
    """For each path, prepared by :func:`pixels_for`: ``predicted``, ``probability`` and ``probabilities`` from
    ``probs`` (uint8 pixels → ``(N, K)``), or the ``error`` reading it. Both runtimes' ``predict_paths``."""
    arrays, ok, out = [], [], []
    for i, p in enumerate(paths):
        try:
            arrays.append(pixels_for(p, pre))
            ok.append(i)
            out.append({"path": str(p)})
        except ImageRejected as exc:
            out.append({"path": str(p), "error": exc.reason})
    if arrays:
        pr = probs(np.stack(arrays))
        for j, i in enumerate(ok):
            k = int(pr[j].argmax())
            out[i].update(
                {
                    "predicted": classes[k],
                    "probability": float(pr[j, k]),
                    "probabilities": {c: float(v) for c, v in zip(classes, pr[j], strict=True)},
                }
            )
    return out


class OnnxPredictor:
    """An exported model folder's ``model.onnx``, run by ONNX Runtime on the CPU."""

    def __init__(self, model_dir: str | Path, *, threads: int = 0) -> None:
        d = Path(model_dir)
        for name in ("labels.json", "preprocess.json", ONNX_FILE):
            if not (d / name).is_file():
                raise AlwbError(f"{d} is not an exported alwb ONNX model (missing {name})")
        try:
            import onnxruntime as ort
        except ImportError:
            raise AlwbError(
                "onnxruntime is not installed: pip install onnxruntime (or run the PyTorch model: --runtime torch)"
            ) from None
        self.classes: list[str] = json.loads((d / "labels.json").read_text())
        self.pre: dict[str, Any] = json.loads((d / "preprocess.json").read_text())
        info = self.pre.get("onnx") or {}
        self.input_name = str(info.get("input", "pixels"))
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
        opts.log_severity_level = 3  # warnings about unused initialisers are not the user's business
        try:
            self.session = ort.InferenceSession(
                str(d / ONNX_FILE), sess_options=opts, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime raises its own exception types for malformed files
            raise AlwbError(f"cannot load {d / ONNX_FILE}: {exc}") from None
        self.batch_size = 32

    def probs(self, pixels: np.ndarray) -> np.ndarray:
        """Class probabilities ``(N, K)`` of uint8 (or float 0-255) ``pixels`` ``(N, C, S, S)``."""
        out = []
        for start in range(0, len(pixels), self.batch_size):
            x = np.ascontiguousarray(pixels[start : start + self.batch_size], dtype=np.float32)
            out.append(self.session.run(None, {self.input_name: x})[0])
        k = len(self.classes)
        return np.concatenate(out) if out else np.zeros((0, k), dtype=np.float32)

    def predict_paths(self, paths: Sequence[str | Path]) -> list[dict[str, Any]]:
        """For each path: predicted class and probability, or the error reading it (as ``Predictor``)."""
        return prediction_rows(paths, self.pre, self.probs, self.classes)
