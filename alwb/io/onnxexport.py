"""Export a project's model to ONNX (``torch.onnx.export(..., dynamo=True)``) and check it against ONNX Runtime.

The graph is the whole model, from pixels to probabilities: ``pixels`` float32 ``(batch, C, S, S)`` with values
0-255 (resized and centre-cropped as ``preprocess.json`` says) → normalisation → the network (the small CNN, the
fine-tuned backbone, or the frozen backbone followed by the round's linear head) → softmax → the average with the
mirror image's probabilities when the model was trained on mirrored images (what the workbench's scores do). The
batch dimension is dynamic.

Before the file is kept, ONNX Runtime and PyTorch classify images of the project: every probability must agree
within :data:`PARITY_ATOL` and every top-1 class must be the same, else :class:`OnnxParityError` and no file.
"""

from __future__ import annotations

import contextlib
import io
import logging
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from ..errors import AlwbError

#: The largest difference allowed between a probability from PyTorch and from ONNX Runtime.
PARITY_ATOL = 1e-4
#: The ONNX opset asked of the exporter.
OPSET = 18
INPUT_NAME, OUTPUT_NAME = "pixels", "probabilities"


class OnnxParityError(AlwbError):
    """ONNX Runtime does not reproduce the PyTorch model's probabilities: the ONNX file is not written."""


@dataclass(frozen=True)
class Parity:
    """How ONNX Runtime compared with PyTorch: images checked, largest probability difference, top-1 mismatches."""

    n_images: int
    max_abs_diff: float
    top1_mismatches: int

    def to_dict(self) -> dict[str, Any]:
        """For ``preprocess.json``."""
        return {"n_images": self.n_images, "max_abs_diff": self.max_abs_diff, "top1_mismatches": self.top1_mismatches}


def compare(reference: npt.ArrayLike, candidate: npt.ArrayLike, *, atol: float = PARITY_ATOL) -> Parity:
    """Compare two ``(N, K)`` probability arrays; raises :class:`OnnxParityError` unless every value agrees within
    ``atol`` and every row has the same arg-max."""
    ref = np.asarray(reference, dtype=np.float64)
    got = np.asarray(candidate, dtype=np.float64)
    if ref.shape != got.shape or ref.ndim != 2:
        raise OnnxParityError(f"ONNX model gives shape {got.shape}, PyTorch {ref.shape}: model.onnx not written")
    diff = float(np.abs(ref - got).max()) if ref.size else 0.0
    mism = int((ref.argmax(1) != got.argmax(1)).sum()) if len(ref) else 0
    if not np.isfinite(got).all() or diff > atol or mism:
        raise OnnxParityError(
            f"ONNX Runtime disagrees with PyTorch on {len(ref)} image(s) of the project: largest probability "
            f"difference {diff:.2e} (allowed {atol:.0e}), {mism} different top-1 class(es); model.onnx not written"
        )
    return Parity(len(ref), diff, mism)


def probability_module(model: Any, mean: list[float], std: list[float], *, tta_flip: bool) -> Any:
    """``model`` (normalised images -> logits) wrapped as pixels 0-255 -> probabilities (see the module doc)."""
    import torch

    class Probabilities(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = model
            self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
            self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

        def forward(self, pixels: torch.Tensor) -> torch.Tensor:
            x = (pixels / 255.0 - self.mean) / self.std
            p = torch.softmax(self.net(x).float(), dim=1)
            if tta_flip:
                p = (p + torch.softmax(self.net(x.flip(-1)).float(), dim=1)) / 2
            return p

    return Probabilities().eval()


def export_onnx(
    model: Any,
    pixels: np.ndarray,
    dest: str | Path,
    *,
    mean: list[float],
    std: list[float],
    tta_flip: bool,
    atol: float = PARITY_ATOL,
) -> dict[str, Any]:
    """Write ``dest`` (``model.onnx``) from ``model`` after checking it on ``pixels`` (uint8 ``(N, C, S, S)``,
    images of the project, N ≥ 1); returns the ``onnx`` section of ``preprocess.json``.

    Raises :class:`OnnxParityError` (nothing written) when ONNX Runtime and PyTorch disagree.
    """
    import onnxruntime as ort
    import torch

    if len(pixels) == 0:
        raise AlwbError("no image of the project to check the ONNX model on")
    dest = Path(dest)
    wrapped = probability_module(model.eval(), mean, std, tta_flip=tta_flip)
    c, s = int(pixels.shape[1]), int(pixels.shape[-1])
    example = torch.from_numpy(np.ascontiguousarray(np.resize(pixels, (2, c, s, s)), dtype=np.float32))
    tmp = dest.with_name(dest.name + ".tmp")
    try:
        write_onnx(wrapped, example, tmp, INPUT_NAME, OUTPUT_NAME)
    except Exception as exc:  # the exporter raises many types; the user needs one line and a way on
        tmp.unlink(missing_ok=True)
        text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).strip()  # the exporter colours its messages
        first = text.splitlines()[0][:300] if text else ""
        raise AlwbError(
            f"the model could not be exported to ONNX ({type(exc).__name__}: {first}); "
            "'alwb export --no-onnx' writes the rest"
        ) from None
    try:
        session = ort.InferenceSession(str(tmp), providers=["CPUExecutionProvider"])
        x = pixels.astype(np.float32)
        got, ref = [], []
        with torch.inference_mode():
            for start in range(0, len(x), 32):
                xb = np.ascontiguousarray(x[start : start + 32])
                got.append(session.run([OUTPUT_NAME], {INPUT_NAME: xb})[0])
                ref.append(wrapped(torch.from_numpy(xb)).numpy())
        parity = compare(np.concatenate(ref), np.concatenate(got), atol=atol)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    tmp.replace(dest)
    return {
        "file": dest.name,
        "input": INPUT_NAME,
        "input_shape": ["batch", c, s, s],
        "input_dtype": "float32",
        "input_range": "0-255: the resized, centre-cropped image; the graph normalises it",
        "output": OUTPUT_NAME,
        "output_shape": ["batch", "num_classes"],
        "output_meaning": "class probabilities in labels.json order"
        + (" (the image and its mirror image averaged)" if tta_flip else ""),
        "opset": OPSET,
        "parity": {**parity.to_dict(), "atol": atol},
    }


def write_onnx(module: Any, example: Any, path: str | Path, input_name: str, output_name: str) -> None:
    """``torch.onnx.export(dynamo=True)`` of ``module`` with a dynamic batch (1 to 4,096) from ``example``, one input
    and one output, opset :data:`OPSET`, the weights inside the file, saved to ``path``; the exporter kept quiet."""
    import torch

    batch = torch.export.Dim("batch", min=1, max=4096)
    with _quiet():
        program = torch.onnx.export(
            module,
            (example,),
            dynamo=True,
            dynamic_shapes=({0: batch},),
            input_names=[input_name],
            output_names=[output_name],
            opset_version=OPSET,
            external_data=False,
            verbose=False,
        )
        program.save(str(path))


@contextlib.contextmanager
def _quiet():  # noqa: ANN202 - a context manager
    """The exporter prints its progress and warns about things the user cannot act on."""
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "onnxscript", "onnx_ir", "torch.export", "torch._dynamo")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, lv in zip(loggers, levels, strict=True):
            lg.setLevel(lv)


def project_pixels(project: Any, pre: dict[str, Any], n: int = 64) -> np.ndarray:
    """Up to ``n`` images of the project (labeled ones first, by id), prepared as :mod:`alwb.io.onnxpredict` prepares
    an image for the ONNX model: uint8 ``(N, C, S, S)``. Files that cannot be read here are passed over."""
    from ..errors import ImageRejected
    from .onnxpredict import pixels_for

    images = project.store.image_root()
    labeled = {int(r["item_id"]) for r in project.store.current_labels()}
    rows = sorted(project.store.items(), key=lambda r: (int(r["id"]) not in labeled, int(r["id"])))
    out: list[np.ndarray] = []
    for r in rows:
        if len(out) >= n:
            break
        try:
            out.append(pixels_for(images.locate(r["path"]), pre))
        except (ImageRejected, OSError, AlwbError):
            continue
    if not out:
        raise AlwbError("no image of the project could be read to check the ONNX model on")
    return np.stack(out)
