"""A wider ``cnn6`` for RGB images from scratch: width against accuracy and CPU time, on fixed labels (E28).

    python bench/research/rgb_width.py --sim /work/scratch/sim/c10_scratch \\
        --runs random-plain-seed0,random-plain-seed1 --widths 16,24,32

For each run (``SIM/runs/RUN``: its human labels, e.g. the 1,000 random labels of a CIFAR-10 run) and each width,
trains ``cnn6`` from scratch at the product's defaults (:class:`alwb.config.TrainConfig`, the round's own epochs
and learning rate for ``cnn6``; only the width differs, by swapping the registry's ``cnn6`` builder in this
process) and prints the test accuracy (flip test-time augmentation), the training seconds and the seconds to score
20,000 pool images (what a round adds on top).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from _runs import human_labels, train_and_test

from alwb.config import TrainConfig
from alwb.learning import models
from alwb.learning.train import predict_batches
from alwb.project import Project


def use_width(width: int) -> None:
    """Make the registry's ``cnn6`` this wide (research only: the product's ``cnn6`` is width 16)."""
    models._REGISTRY["cnn6"] = lambda channels, num_classes, image_size, pretrained: models.cnn6(
        channels, num_classes, width=width
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sim", type=Path, required=True)
    ap.add_argument("--runs", default="random-plain-seed0,random-plain-seed1")
    ap.add_argument("--widths", default="16,24,32")
    args = ap.parse_args()
    test = np.load(next(args.sim.glob("test_*.npz")))
    for name in args.runs.split(","):
        with Project.open(args.sim / "runs" / name) as proj:
            run = human_labels(proj)
            cfg = proj.train_config
            pool = np.asarray(proj.store.unlabeled_item_ids(split="pool"), dtype=np.int64)[:20_000]
            xp = run.cache.rows(np.sort(pool))
        for w in (int(v) for v in args.widths.split(",")):
            use_width(w)
            res, acc, secs = train_and_test(run.x, run.y, run, TrainConfig().with_(seed=cfg.seed), test)
            t0 = time.perf_counter()
            predict_batches(res.model, xp, mean=run.geo["mean"], std=run.geo["std"], tta_flip=True)
            score_s = time.perf_counter() - t0
            print(
                f"{name} width {w}: {len(run.y)} labels, test accuracy {acc:.4f}, train {secs:.1f} s,"
                f" score 20k {score_s:.1f} s",
                flush=True,
            )


if __name__ == "__main__":
    main()
