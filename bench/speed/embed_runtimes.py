"""Embedding speed of a packaged backbone on the CPU: PyTorch eager, eager channels-last, ONNX Runtime.

    python bench/speed/embed_runtimes.py --photos ../shared/datasets/hymenoptera/val [--backbone efficientnet_lite0]
        [--threads 2] [--batch 32] [--images 64] [--repeats 5] [--compile]

The backbone with its real weights (alwb.learning.backbones.load), the registry's preprocessing done once beforehand
(decoding
is not timed), normalisation inside every runtime. Methods are run in turns (one pass of each, REPEATS times) so that
a machine shared with other jobs slows them alike; the median pass gives images per second. Each method's embeddings
are compared with eager PyTorch's on the same images (largest absolute difference); issue 35 asks for 1e-4.
ONNX: ``torch.onnx.export(dynamo=True)`` with a dynamic batch, run by onnxruntime's CPU provider with
``intra_op_num_threads = THREADS``. ``--compile`` adds ``torch.compile`` (its compile time is printed apart).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from alwb.intake.images import load_image
from alwb.learning import backbones


class Normalised(torch.nn.Module):
    """uint8-range float ``(N, 3, S, S)`` -> embeddings: the backbone's normalisation, then the backbone."""

    def __init__(self, model: torch.nn.Module, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1) * 255.0)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1) * 255.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model((x - self.mean) / self.std)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--photos", type=Path, required=True)
    ap.add_argument("--backbone", default="efficientnet_lite0")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--images", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--compile", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    bb = backbones.load(args.backbone, download=False, quiet=True)
    files = sorted(p for p in args.photos.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))[: args.images]
    x = torch.from_numpy(np.stack([bb.preprocess.to_uint8(load_image(f, 3)) for f in files])).float()
    net = Normalised(bb.model, bb.spec.mean, bb.spec.std).eval()

    def batches(fn):  # noqa: ANN001, ANN202
        def run() -> np.ndarray:
            return np.concatenate([fn(x[s : s + args.batch]) for s in range(0, len(x), args.batch)])

        return run

    methods = {}
    with torch.inference_mode():
        methods["torch eager"] = batches(lambda b: net(b).numpy())
        cl = Normalised(bb.spec.extractor(bb.spec.builder()), bb.spec.mean, bb.spec.std).eval()
        cl.load_state_dict(net.state_dict())
        cl = cl.to(memory_format=torch.channels_last)
        methods["torch channels-last"] = batches(lambda b: cl(b.contiguous(memory_format=torch.channels_last)).numpy())
    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "embed.onnx")
        t0 = time.perf_counter()
        batch = torch.export.Dim("batch", min=1, max=4096)
        torch.onnx.export(net, (x[:2],), dynamo=True, dynamic_shapes=({0: batch},), verbose=False).save(path)
        print(f"ONNX export {time.perf_counter() - t0:.1f} s")
        so = ort.SessionOptions()
        so.intra_op_num_threads = args.threads
        so.inter_op_num_threads = 1
        sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
        name = sess.get_inputs()[0].name
        methods["onnxruntime"] = batches(lambda b: sess.run(None, {name: b.numpy()})[0])
        if args.compile:
            t0 = time.perf_counter()
            comp = torch.compile(net)
            with torch.inference_mode():
                comp(x[: args.batch])
            print(f"torch.compile first call {time.perf_counter() - t0:.1f} s")

            def run_comp(b: torch.Tensor) -> np.ndarray:
                with torch.inference_mode():
                    return comp(b).numpy()

            methods["torch.compile"] = batches(run_comp)
        with torch.inference_mode():
            ref = methods["torch eager"]()
            outs = {k: m() for k, m in methods.items()}  # warm-up and parity
            times: dict[str, list[float]] = {k: [] for k in methods}
            for _ in range(args.repeats):
                for k, m in methods.items():
                    t0 = time.perf_counter()
                    m()
                    times[k].append(time.perf_counter() - t0)
    load = os.getloadavg()[0]
    print(
        f"# {args.backbone} at {bb.spec.input_size} px, {len(x)} photos, batch {args.batch}, {args.threads} threads, "
        f"load average {load:.1f}"
    )
    print(f"{'method':<22} {'images/s':>9} {'max |diff|':>11}")
    for k in methods:
        rate = len(x) / float(np.median(times[k]))
        print(f"{k:<22} {rate:>9.1f} {float(np.abs(outs[k] - ref).max()):>11.2e}")


if __name__ == "__main__":
    main()
