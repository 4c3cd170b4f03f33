"""Training recipes on a fixed label set: what buys accuracy per second of CPU.

    python bench/research/train_recipes.py --sim bench/out/fmnist/plain --run margin-plain-seed0 \\
        --recipes '[{"lr": 0.002}, {"lr": 0.04}, {"lr": 0.04, "epochs": 100}]'

Takes the human labels of one simulator run (``SIM/runs/RUN``: e.g. the 1,000 labels margin sampling chose) and the
simulator's test split (``SIM/test_*.npz``), trains each recipe from scratch with
:func:`alwb.learning.train.train_model`
(``TrainConfig`` fields as JSON; ``augment`` defaults to ``crop+flip`` as in the simulator) and prints seconds and
test accuracy without and with flip test-time augmentation. With ``--teacher`` the run's last model is the teacher
of recipes with ``consistency`` > 0: its probabilities on the unlabeled images are soft targets (distillation,
``teacher_view`` ``strong`` or ``weak`` in the recipe) instead of the model's own confident guesses. ``--speed``
instead prints the training step time with and without channels-last memory layout (median of alternating runs).
The figures this produced are in ``alwb.learning.train.auto_lr`` and the README.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from _runs import human_labels, load_model, test_accuracy

from alwb.config import TrainConfig
from alwb.experimental.semi import ConsistencyLoss
from alwb.learning.train import inference_copy, train_model
from alwb.project import Project


def step_times(repeats: int = 5, epochs: int = 8) -> dict[str, float]:
    """Median ms per step (batch 64, 28×28 greyscale) with and without channels-last."""
    import alwb.learning.train as T

    rng = np.random.default_rng(0)
    x = rng.integers(0, 255, (1024, 1, 28, 28), dtype=np.uint8)
    y = rng.integers(0, 10, 1024)
    cfg = TrainConfig(augment="crop+flip", epochs=epochs)
    times: dict[str, list[float]] = {"channels_last": [], "contiguous": []}
    original = torch.channels_last
    try:
        for _ in range(repeats):
            for name in times:
                T.torch.channels_last = original if name == "channels_last" else torch.contiguous_format
                t0 = time.perf_counter()
                train_model(x, y, arch="smallcnn", num_classes=10, mean=[0.3], std=[0.35], cfg=cfg)
                times[name].append((time.perf_counter() - t0) / (epochs * 16) * 1000)
    finally:
        T.torch.channels_last = original
    return {k: float(np.median(v)) for k, v in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sim", type=Path, help="a simulator output folder (holds template/, runs/, test_*.npz)")
    ap.add_argument("--run", default="margin-plain-seed0")
    ap.add_argument("--recipes", default='[{"lr": 0.002}, {"lr": 0.04}]', help="JSON list of TrainConfig fields")
    ap.add_argument(
        "--unlabeled",
        type=int,
        default=20_000,
        help="unlabeled pool images (a seeded random sample) handed to recipes with consistency > 0",
    )
    ap.add_argument(
        "--teacher", action="store_true", help="distil from the run's last model (recipes with consistency)"
    )
    ap.add_argument("--speed", action="store_true", help="time training steps, channels-last against contiguous")
    args = ap.parse_args()
    if args.speed:
        print(json.dumps({k: round(v, 1) for k, v in step_times().items()}), "ms per step")
        return
    if args.sim is None:
        raise SystemExit("--sim is required (or --speed)")
    with Project.open(args.sim / "runs" / args.run) as proj:
        run = human_labels(proj)
        geo, x, y, num_classes = run.geo, run.x, run.y, run.num_classes
        recipes = json.loads(args.recipes)
        xu = np.zeros((0, *x.shape[1:]), dtype=np.uint8)
        if any(r.get("consistency", 0) > 0 for r in recipes):  # only those recipes read unlabeled images
            pool = np.asarray(proj.store.unlabeled_item_ids(split="pool"), dtype=np.int64)
            if args.unlabeled and pool.size > args.unlabeled:
                pool = np.sort(np.random.default_rng(0).choice(pool, size=args.unlabeled, replace=False))
            xu = run.cache.rows(pool)
        teacher = None
        if args.teacher:
            teacher = inference_copy(load_model(proj.current_model()["path"], geo, num_classes), torch.device("cpu"))
    test = np.load(next(args.sim.glob("test_*.npz")))
    print(f"{len(y)} labels from {args.run}; {len(xu)} unlabeled; test split {len(test['y'])}")
    semi_keys = ("consistency", "consistency_ratio", "teacher_view")
    for recipe in recipes:
        fields = {k: v for k, v in recipe.items() if k not in semi_keys}
        cfg = TrainConfig(augment="crop+flip").with_(**fields)
        extra = None
        if recipe.get("consistency", 0) > 0:  # the research loss of alwb.experimental (seeded as it was in train)
            extra = ConsistencyLoss(
                xu,
                weight=recipe["consistency"],
                ratio=recipe.get("consistency_ratio", 2),
                threshold=cfg.pseudo_threshold,
                flip=cfg.augment == "crop+flip",
                seed=cfg.seed + 1,
                teacher=teacher,
                teacher_view=recipe.get("teacher_view", "strong"),
            )
        t0 = time.perf_counter()
        res = train_model(
            x,
            y,
            arch=geo["arch"],
            num_classes=num_classes,
            mean=geo["mean"],
            std=geo["std"],
            cfg=cfg,
            step=extra,
        )
        seconds = time.perf_counter() - t0
        acc = {tta: test_accuracy(res.model, test, geo, tta=tta) for tta in (False, True)}
        print(
            f"{json.dumps(recipe):50s} epochs {res.epochs:4d}  {seconds:6.1f} s  "
            f"test accuracy {acc[False]:.4f}  with flip TTA {acc[True]:.4f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
