"""Scoring speed against the number of images per forward pass, on this machine's CPU (or GPU).

    python bench/speed/score_chunks.py [--images 8192] [--repeats 3] [--device auto]

Prints images per second for the two small CNNs (``cnn6``, the default, and ``smallcnn``) on 28×28 grey images
and ResNet-18 on 112×112 colour images, for several chunk sizes and for the size :func:`alwb.learning.train.score_chunk`
chooses ("auto"). The sizes are timed in turn, ``--repeats`` times over, and each prints the median: one pass in
a fixed order read later sizes faster on two shared cores.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from alwb.learning.models import cnn6, resnet18, small_cnn
from alwb.learning.train import predict_batches, resolve_device, score_chunk


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=8192)
    ap.add_argument("--repeats", type=int, default=3, help="passes over the chunk sizes (the median is printed)")
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()
    device = resolve_device(args.device)
    rng = np.random.default_rng(0)
    print(f"device {device}, torch threads {torch.get_num_threads()}")
    cases = [
        ("cnn6, 28×28×1", cnn6(1, 10), (args.images, 1, 28, 28)),
        ("smallcnn, 28×28×1", small_cnn(1, 10), (args.images, 1, 28, 28)),
        ("ResNet-18, 112×112×3", resnet18(3, 10, image_size=112, pretrained="none"), (args.images // 8, 3, 112, 112)),
    ]
    for name, model, shape in cases:
        model = model.eval()
        x = rng.integers(0, 256, shape, dtype=np.uint8)
        ch = shape[1]
        predict_batches(model, x[:64], mean=[0.5] * ch, std=[0.25] * ch, device=device)  # warm up
        auto = score_chunk(device, shape[2] * shape[3])
        sizes = sorted({16, 64, 128, 256, 512, 1024, auto})
        rates: dict[int, list[float]] = {bs: [] for bs in sizes}
        for _ in range(max(1, args.repeats)):
            for bs in sizes:
                t = time.perf_counter()
                predict_batches(model, x, mean=[0.5] * ch, std=[0.25] * ch, device=device, batch_size=bs)
                rates[bs].append(len(x) / (time.perf_counter() - t))
        for bs in sizes:
            label = f"{bs} (auto)" if bs == auto else str(bs)
            r = rates[bs]
            print(f"{name}: chunk {label:>10}: {statistics.median(r):8.0f} images/s (range {min(r):.0f}-{max(r):.0f})")


if __name__ == "__main__":
    main()
