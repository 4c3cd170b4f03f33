"""Import speed and one round's training/scoring time on a large pool (default: Fashion-MNIST train, 60,000).

    python bench/speed/round_speed.py --pool ../shared/datasets/fashion-mnist/train --labels 1000

Prints: files per second for the first import and for re-importing the same folder (adds nothing), then for one
round with LABELS labels chosen at random (the folder names answer): pixel-cache decode, training and scoring
seconds, and the validation accuracy.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from alwb.project import Project


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pool", type=Path, default=Path("../shared/datasets/fashion-mnist/train"))
    ap.add_argument("--labels", type=int, default=1000)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--workdir", type=Path, default=None, help="project folder (default: a temporary one)")
    ap.add_argument("--epochs", type=int, default=0, help="0 = automatic")
    args = ap.parse_args()

    work = args.workdir or Path(tempfile.mkdtemp(prefix="alwb-bench-"))
    if work.exists():
        shutil.rmtree(work)
    print(f"pool {args.pool}, project {work}, torch threads {torch.get_num_threads()}")
    proj = Project.create(work)
    proj.store.add_classes(sorted(d.name for d in args.pool.iterdir() if d.is_dir()))
    t = time.perf_counter()
    rep = proj.add_images(args.pool, unlabeled=True, progress=True)
    dt = time.perf_counter() - t
    print(f"import: {rep.added} images in {dt:.1f} s = {rep.added / dt:.0f} files/s ({len(rep.rejected)} rejected)")
    t = time.perf_counter()
    rep2 = proj.add_images(args.pool, unlabeled=True, progress=False)
    dt2 = time.perf_counter() - t
    print(f"re-import: {rep2.added} added, {rep2.already_known} already known, in {dt2:.1f} s")

    rng = np.random.default_rng(0)
    truth = {r["id"]: Path(r["path"]).parent.name for r in proj.store.items()}
    val = proj.store.val_item_ids()
    pool = proj.store.unlabeled_item_ids(split="pool")
    chosen = rng.choice(pool, size=args.labels, replace=False)
    proj.label([(int(i), truth[int(i)]) for i in val], annotator="oracle")
    proj.label([(int(i), truth[int(i)]) for i in chosen], annotator="oracle")
    if args.epochs:
        proj.set_train_config(epochs=args.epochs)
    s = proj.train(device=args.device, verbose=True)
    tm = s.timings
    v = s.metrics["val"]
    print(
        f"round 1 ({s.n_labeled} labels, {s.epochs} epochs on {s.device}): pixel cache {tm['data_seconds']:.1f} s, "
        f"train {tm['train_seconds']:.1f} s, score {len(proj.store.item_ids())} items {tm['score_seconds']:.1f} s, "
        f"round {tm['round_seconds']:.1f} s; val accuracy {v['accuracy']:.3f} (n={v['n']})"
    )
    s2 = proj.train(device=args.device)
    tm = s2.timings
    print(
        f"round 2 (warm start, cache ready, {s2.epochs} epochs): train {tm['train_seconds']:.1f} s, "
        f"score {tm['score_seconds']:.1f} s, round {tm['round_seconds']:.1f} s"
    )
    t = time.perf_counter()
    q = proj.query(100, "margin")
    print(f"query 100 by margin over {len(pool)} items: {time.perf_counter() - t:.2f} s ({len(q.items)} items)")
    proj.close()
    if args.workdir is None:
        shutil.rmtree(work)


if __name__ == "__main__":
    main()
