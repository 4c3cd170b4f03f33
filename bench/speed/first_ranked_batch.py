"""From ``alwb init`` on a folder of photos to the first model-ranked batch, step by step (issue 35).

What a person meets on a fresh photo project with the packaged backbone (EfficientNet-Lite0, ``head`` mode on a
CPU): the import, a first batch that is random (no model yet) answered from the folder names, the first round
(every photo embedded once, then a classifier fitted on the embeddings), and the first batch chosen after it (by
the default strategy, ``auto``: typical photos on the round's embeddings, margin sampling once it pays).
The photos are ``N`` drawn at random (seed 0) from an ImageFolder tree, copied into a work folder and imported
without their folder labels; the folder names answer. Prints the time of each step and the total.

    .venv/bin/python bench/speed/first_ranked_batch.py --photos /tmp/caltech/train --n 2000 --work /tmp/frb
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import time
from pathlib import Path


def _copy_sample(src: Path, dest: Path, n: int, seed: int) -> dict[str, str]:
    """Copy ``n`` photos of the ImageFolder tree ``src`` into ``dest`` (same layout); {file name in dest: class}."""
    files = sorted(p for p in src.rglob("*") if p.is_file() and p.parent != src)
    random.Random(seed).shuffle(files)
    truth: dict[str, str] = {}
    for p in files[:n]:
        cls = p.parent.name
        (dest / cls).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(p, dest / cls / p.name)
        truth[str((dest / cls / p.name).resolve())] = cls
    return truth


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--photos", type=Path, required=True, help="an ImageFolder tree of photos (class folders)")
    ap.add_argument("--n", type=int, default=2000, help="photos in the project")
    ap.add_argument("--work", type=Path, required=True, help="a scratch folder outside the repository (emptied)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    shutil.rmtree(args.work, ignore_errors=True)
    images = args.work / "photos"
    truth = _copy_sample(args.photos, images, args.n, args.seed)
    classes = sorted(set(truth.values()))
    print(f"{len(truth)} photos of {len(classes)} classes copied to {images}", flush=True)

    t_all = time.perf_counter()
    from alwb.project import Project

    steps: dict[str, float] = {}
    t = time.perf_counter()
    proj = Project.create(args.work / "project", classes=classes)
    rep = proj.add_images(images, unlabeled=True, progress=False)
    steps["init: create and import"] = time.perf_counter() - t
    try:
        plan, _ = proj.plan()
        print(f"imported {rep.added}; plan: {plan.mode}, {plan.backbone} ({plan.why})", flush=True)
        t = time.perf_counter()
        first = proj.query()
        locate = proj.store.image_root().locate
        answers = [(it.id, truth[str(locate(it.path).resolve())]) for it in first.items]
        proj.label(answers, annotator="bench")
        steps["first batch (random) queried and answered"] = time.perf_counter() - t
        t = time.perf_counter()
        summary = proj.train(device="cpu")
        steps["first round (embed every photo, fit the head, score)"] = time.perf_counter() - t
        t = time.perf_counter()
        ranked = proj.query()
        steps["first ranked batch queried"] = time.perf_counter() - t
        reasons = sorted({it.reason for it in ranked.items})
        total = time.perf_counter() - t_all
        for name, s in steps.items():
            print(f"{name}: {s:.1f} s", flush=True)
        print(
            f"total from init to the first ranked batch: {total:.1f} s; round {summary.round} on "
            f"{len(answers)} labels; the ranked batch's reasons: {', '.join(reasons)}; load average "
            f"{os.getloadavg()[0]:.1f}",
            flush=True,
        )
        print(
            json.dumps(
                {
                    "photos": len(truth),
                    "steps_s": {k: round(v, 1) for k, v in steps.items()},
                    "total_s": round(total, 1),
                    "labels": len(answers),
                }
            )
        )
    finally:
        proj.close()


if __name__ == "__main__":
    main()
