"""Embeddings computed by ONNX Runtime on the CPU, where it runs a backbone several times faster than PyTorch eager.

On two quiet cores EfficientNet-Lite0 embedded 291 images/s with ONNX Runtime against 44 with PyTorch eager
(``bench/speed/embed_runtimes.py``, docs/speed.md). :func:`alwb.learning.embed.embed_items` uses this module on the CPU:

- the backbone (its normalisation inside the graph, pixels 0-255 in) is exported once per backbone and weights
  file with ``torch.onnx.export(dynamo=True)`` to ``PROJECT/cache/<cache key>.onnx``; a JSON file beside it records
  the file's SHA-256 and the PyTorch / ONNX Runtime versions, and the export is redone when either differs;
- every call checks ONNX Runtime against PyTorch on real images of the run before it embeds anything: embeddings
  that differ by more than :data:`EMBED_ATOL` anywhere mean PyTorch embeds the run instead (a warning says why), so
  the cache never mixes embeddings that disagree;
- anything that goes wrong (no ONNX Runtime, an export error, an unreadable file) leaves PyTorch to do the work.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from .backbones import LoadedBackbone

log = logging.getLogger(__name__)

#: The largest difference allowed between an embedding value from ONNX Runtime and from PyTorch (issue 35).
EMBED_ATOL = 1e-4
#: Below this many images to embed, exporting costs more than it saves (unless an export is already cached).
MIN_IMAGES = 128
#: Images of a run compared between the two runtimes before ONNX Runtime embeds it.
PARITY_IMAGES = 4
INPUT, OUTPUT = "pixels", "embedding"


class OnnxEmbedder:
    """``embedder(x)``: uint8 ``(B, 3, S, S)`` pixels → float32 ``(B, D)`` embeddings, with ONNX Runtime."""

    def __init__(self, path: Path, threads: int) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = max(1, int(threads))
        opts.inter_op_num_threads = 1
        self.path = path
        self.threads = int(threads)
        self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])

    def __call__(self, x: np.ndarray) -> np.ndarray:
        out = self.session.run([OUTPUT], {INPUT: np.ascontiguousarray(x, dtype=np.float32)})[0]
        return np.asarray(out, dtype=np.float32).reshape(len(x), -1)


def _versions() -> dict[str, str]:
    import onnxruntime as ort
    import torch

    return {"torch": torch.__version__, "onnxruntime": ort.__version__}


def _module(backbone: LoadedBackbone) -> Any:
    """The backbone with its normalisation in front: float pixels 0-255 → embeddings."""
    import torch

    class Normalised(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = backbone.model
            pre = backbone.preprocess
            self.register_buffer("mean", torch.tensor(pre.mean, dtype=torch.float32).view(1, 3, 1, 1))
            self.register_buffer("std", torch.tensor(pre.std, dtype=torch.float32).view(1, 3, 1, 1))

        def forward(self, pixels: torch.Tensor) -> torch.Tensor:
            return self.net((pixels / 255.0 - self.mean) / self.std).flatten(1)

    return Normalised().eval()


def _export(backbone: LoadedBackbone, dest: Path) -> None:
    import torch

    from ..io.onnxexport import write_onnx

    size = int(backbone.preprocess.crop)
    example = torch.zeros((2, 3, size, size), dtype=torch.float32)
    tmp = dest.with_name(f"{dest.name}.{os.getpid()}.tmp")
    try:
        with torch.inference_mode(False):
            write_onnx(_module(backbone), example, tmp, INPUT, OUTPUT)
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


def onnx_file(cache_dir: Path, key: str) -> Path:
    """Where the export of the backbone whose embedding cache is ``key`` lives."""
    return Path(cache_dir) / f"{key}.onnx"


def load_or_export(cache_dir: Path, key: str, backbone: LoadedBackbone, *, threads: int) -> OnnxEmbedder | None:
    """An ONNX Runtime embedder for ``backbone``: the cached export when its hash and versions check, else a new
    export. None (with a log line) when ONNX Runtime is not installed or the export fails: PyTorch embeds then."""
    from .backbones import sha256_file as _sha256

    path = onnx_file(cache_dir, key)
    meta_path = path.with_name(path.name + ".json")
    try:
        versions = _versions()
    except ImportError:
        return None
    try:
        meta = json.loads(meta_path.read_text()) if meta_path.is_file() and path.is_file() else None
        if not (
            isinstance(meta, dict)
            and meta.get("versions") == versions
            and meta.get("weights_sha256") == backbone.origin.sha256
            and meta.get("sha256") == _sha256(path)
        ):
            path.parent.mkdir(parents=True, exist_ok=True)
            _export(backbone, path)
            meta = {"sha256": _sha256(path), "weights_sha256": backbone.origin.sha256, "versions": versions}
            tmp = meta_path.with_name(f"{meta_path.name}.{os.getpid()}.tmp")
            tmp.write_text(json.dumps(meta, indent=1))
            os.replace(tmp, meta_path)
        return OnnxEmbedder(path, threads)
    except Exception as exc:  # the exporter raises many types; PyTorch is always there to do the work
        log.warning("ONNX Runtime will not embed with %s (%s: %s); PyTorch does", key, type(exc).__name__, exc)
        return None


def parity(embedder: OnnxEmbedder, backbone: LoadedBackbone, pixels: np.ndarray) -> float:
    """Largest absolute difference between ONNX Runtime's and PyTorch's embeddings of ``pixels`` (uint8 batch)."""
    import torch

    with torch.inference_mode():
        x = torch.from_numpy(np.ascontiguousarray(pixels)).to(backbone.device)
        ref = backbone.model(backbone.preprocess.normalise(x)).float().cpu().numpy().reshape(len(pixels), -1)
    got = embedder(pixels)
    if got.shape != ref.shape or not np.isfinite(got).all():
        return float("inf")
    return float(np.abs(got - ref).max()) if ref.size else 0.0
