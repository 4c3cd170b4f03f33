"""Where pseudo-labels come from: the classifier's confident guesses against labels spread over the embeddings.

    python bench/research/pseudo_sources.py --sim bench/out/c6/plain --run margin-plain-seed0 --train

Takes one simulator run's human labels and its last round's scores (probabilities and embeddings of the scored
unlabeled pool items), then compares two sources of pseudo-labels against the oracle: the classifier's own
(probability ≥ 0.95 as in the loop, or each of ``--thresholds``; one per human label of the class) and scikit-
learn's ``LabelSpreading`` over a k-nearest-neighbour graph of the L2-normalised embeddings (Iscen et al. 2019). It
prints the accuracy of each on the scored pool, the precision of each one's most confident items, and the chosen
sets per class. With ``--train`` it trains from scratch on the human labels alone and with each set of pseudo-labels
(``--train-seeds``, ``--sets`` to train only some; a pseudo-label set gets the loop's step budget,
:func:`alwb.learning.round.epochs_with_extra`) and prints the test accuracy with flip test-time augmentation.
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

import numpy as np
from _runs import human_labels, scored_unlabeled, train_and_test
from sklearn.exceptions import ConvergenceWarning
from sklearn.semi_supervised import LabelSpreading

from alwb.config import TrainConfig
from alwb.learning.pseudo import choose_pseudo_labels
from alwb.learning.round import epochs_with_extra
from alwb.project import Project


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sim", type=Path, required=True, help="a simulator output folder (template/, runs/, test_*.npz)")
    ap.add_argument("--run", default="margin-plain-seed0")
    ap.add_argument("--neighbors", type=int, default=10)
    ap.add_argument(
        "--thresholds",
        default="0.95",
        help="classifier pseudo-labels drawn at random from items at or above each of these top probabilities",
    )
    ap.add_argument("--train", action="store_true", help="also train from scratch with each pseudo-label set")
    ap.add_argument("--train-seeds", default="0,1")
    ap.add_argument("--sets", default="", help="train only the sets whose names start with one of these (comma list)")
    args = ap.parse_args()
    oracle = {int(k): v for k, v in json.loads((args.sim / "template" / "oracle.json").read_text()).items()}
    with Project.open(args.sim / "runs" / args.run) as proj:
        sc = proj.scores()
        if proj.current_model() is None or sc is None:
            raise SystemExit(f"{args.run} has no finished round with scores")
        run = human_labels(proj)
        ids, y = run.ids, run.y
        if (sc.rows(ids) < 0).any():
            raise SystemExit(f"{args.run} has labels its last round did not score: train a round first")
        pool, rows = scored_unlabeled(proj, sc)
        probs, emb = np.asarray(sc.probs)[rows], np.asarray(sc.emb)[rows]
        emb_labeled = np.asarray(sc.emb)[sc.rows(ids)]
        truth = np.asarray([oracle[int(i)] for i in pool])
        k = probs.shape[1]
        counts = np.bincount(y, minlength=k)
        print(f"{args.run}: {len(y)} human labels, {len(pool)} scored unlabeled items, round {sc.round} scores")

        xs = np.concatenate([emb_labeled, emb])
        xs /= np.linalg.norm(xs, axis=1, keepdims=True)
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            spread = LabelSpreading(kernel="knn", n_neighbors=args.neighbors, alpha=0.99, max_iter=100)
            spread.fit(xs, np.concatenate([y, -np.ones(len(pool), np.int64)]))
        dist = spread.label_distributions_[len(y) :]
        print(f"label spreading: {time.perf_counter() - t0:.1f} s")
        for name, p in (("classifier", probs), ("spreading", dist)):
            conf, cls = p.max(1), p.argmax(1)
            order = np.argsort(-conf)
            tops = ", ".join(f"top {n}: {(cls[order[:n]] == truth[order[:n]]).mean():.4f}" for n in (1000, 3000, 10000))
            print(f"  {name:10s} right on {(cls == truth).mean():.4f} of the pool; precision {tops}")

        agree = (probs.argmax(1) == dist.argmax(1)) & (probs.max(1) >= 0.95)
        sets = {
            **{
                f"classifier {t:g}": choose_pseudo_labels(
                    probs, pool, counts, threshold=t, rng=np.random.default_rng(7)
                )
                for t in (float(v) for v in args.thresholds.split(","))
            },
            "spreading x1": choose_pseudo_labels(dist, pool, counts, threshold=1e-9),
            "spreading x3": choose_pseudo_labels(dist, pool, counts, threshold=1e-9, cap_ratio=3),
            "both agree x3": choose_pseudo_labels(
                np.where(agree[:, None], dist, 0.0) + 1e-12, pool, counts, threshold=1e-9, cap_ratio=3
            ),
        }
        where = {int(i): j for j, i in enumerate(pool)}
        for name, (pid, pcls, _) in sets.items():
            right = (pcls == truth[[where[int(i)] for i in pid]]).mean()
            print(
                f"  {name:14s} {len(pid):5d} pseudo-labels, {right:.4f} right; "
                f"per class {np.bincount(pcls, minlength=k)}"
            )
        print(f"  human labels per class {counts}")
        if not args.train:
            return
        geo, cache, x = run.geo, run.cache, run.x
        test = np.load(next(args.sim.glob("test_*.npz")))
        only = tuple(v for v in args.sets.split(",") if v)
        for name in ["none", *(n for n in sets if not only or n.startswith(only))]:
            for seed in (int(s) for s in args.train_seeds.split(",")):
                cfg = TrainConfig(augment="crop+flip", seed=seed)
                xx, yy = x, y
                if name != "none":
                    pid, pcls, _ = sets[name]
                    xx, yy = np.concatenate([x, cache.rows(pid)]), np.concatenate([y, pcls])
                    cfg = cfg.with_(epochs=epochs_with_extra(len(y), len(yy), cfg, geo, None))
                res, acc, seconds = train_and_test(xx, yy, run, cfg, test)
                print(
                    f"  pseudo-labels {name:14s} seed {seed}: {res.epochs} epochs, {seconds:4.0f} s, "
                    f"test accuracy {acc:.4f}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
