"""Snapshot ensembles of a run's warm-started chain: the last rounds' models averaged, against the last alone.

    python bench/research/snapshot_ensemble.py --sim bench/out/c6/pseudo --runs margin-pseudo-seed0,margin-pseudo-seed1

Every round of a simulator run keeps its model (``runs/RUN/models/round_NNNN.safetensors``); this scores the
simulator's test split (``SIM/test_*.npz``) with flip test-time augmentation using the last model, and the mean
class probabilities of the last 2, 3, ... (``--members``) rounds' models, and prints the test accuracy of each.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from _runs import human_labels, load_model

from alwb.learning.train import predict_batches
from alwb.project import Project


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sim", type=Path, required=True, help="a simulator output folder (runs/, test_*.npz)")
    ap.add_argument("--runs", required=True, help="comma list of run names under SIM/runs")
    ap.add_argument("--members", default="1,2,3", help="ensemble sizes: the last N rounds' models")
    args = ap.parse_args()
    test = np.load(next(args.sim.glob("test_*.npz")))
    sizes = [int(v) for v in args.members.split(",")]
    for run in args.runs.split(","):
        with Project.open(args.sim / "runs" / run) as proj:
            labels = human_labels(proj)
            geo = labels.geo
            paths = sorted((proj.root / "models").glob("round_*.safetensors"))[-max(sizes) :][::-1]
            probs = []
            for path in paths:
                model = load_model(path, geo, labels.num_classes)
                p, _ = predict_batches(model, test["x"], mean=geo.mean, std=geo.std, tta_flip=True)
                probs.append(p)
        figures = ", ".join(
            f"last {n}: {(np.mean(probs[:n], axis=0).argmax(1) == test['y']).mean():.4f}" for n in sizes
        )
        print(f"{run}: {figures}", flush=True)


if __name__ == "__main__":
    main()
