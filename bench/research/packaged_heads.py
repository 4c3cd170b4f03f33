"""E39: a better head on a packaged backbone's cached embeddings (docs/experiments.md), margin sampling replayed.

    python bench/research/packaged_heads.py --sim /work/scratch/sim/caltech_lite0 --dataset /work/scratch/caltech \\
        --seeds 0,1,2 [--csv bench/results/caltech_lite0_heads.csv]

Reads what ``alwb simulate`` left in ``SIM``: the template's embeddings of the pool (``template/cache/emb_*.npy``),
its validation sample (left out of the pool, as the simulator does), the oracle, and the test split's embeddings
(``test_embeddings/``, in the order of :func:`alwb.simulate.held_out_files`). For each seed and head: 100 random labels,
then batches of 100 chosen by that head's own margin (modAL's margin through alwb.learning.query), to 1,000; test
accuracy
at each count. Heads:

- ``logreg``: the workbench's head (:func:`alwb.learning.head.fit_head`, standardised on the pool, C = 0.1);
- ``c0.3``, ``c0.03``, ``c1`` (E52): the same with another C;
- ``spread``: ``LabelSpreading`` (kNN graph, k = 10, alpha 0.2) over the standardised pool + labels; its pool
  predictions above 0.9 confidence join the logistic head's training as pseudo-labels;
- ``flip`` (E45): ``logreg`` on the mean of each image's embedding and its mirror image's, pool and test alike (the
  mirror images embedded once into ``SIM/flip_pool/`` and ``SIM/flip_test/`` through
  :func:`alwb.learning.embed.embed_items`, the backbone's own preprocessing followed by a left-right flip).
- ``sqrt`` (E47): ``logreg`` on the square root of the embeddings (pooled after ReLU6, so ≥ 0: power normalisation);
- ``res288`` (E47): ``logreg`` on embeddings of 288 px centre crops (shorter side resized to 329 px) instead of the
  backbone's own size (embedded once into ``SIM/res288_pool/`` and ``SIM/res288_test/``);
- ``s224``, ``s160``, ``s128`` (E48): ``logreg`` on embeddings of the whole image resized to 224 / 160 / 128 px
  (no crop; ``SIM/s224_pool/`` …), for small images;
- ``multi`` (E47): ``logreg`` on the last block's pooled output (320-d for EfficientNet-Lite) concatenated to the
  pooled head features (``SIM/multi_pool/``, ``SIM/multi_test/``).

``--heads`` picks some of them (default: all).

``--ceiling`` (E58) asks instead how far the features go: ``logreg`` fitted on every image of the training split
(pool and validation sample) with its true label, at each C of ``--cs``, and on random subsets of ``--sizes`` labels
(each seed of ``--seeds``), test accuracy on the test split.

The first 100 labels of a seed are the same for every head; a head's later batches are its own. Prints mean ± std
and the gain over ``logreg`` paired by seed with a 95% t-interval, and the mean seconds a round (fit + score).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from alwb.learning.head import LinearHead, fit_head, standardiser
from alwb.project import Project
from alwb.simulate import held_out_files

HEADS = ("logreg", "c0.3", "c0.03", "c1", "spread", "flip", "sqrt", "res288", "multi", "s224", "s160", "s128")


def _cache(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    (emb_path,) = [p for p in (folder / "cache").glob("emb_*.npy") if not p.name.endswith((".ids.npy", ".state.npy"))]
    ids = np.load(emb_path.with_name(emb_path.stem + ".ids.npy"))
    state = np.load(emb_path.with_name(emb_path.stem + ".state.npy"))
    emb = np.load(emb_path, mmap_mode="r")
    done = state == 1
    return ids[done].astype(np.int64), np.asarray(emb[done], dtype=np.float32)


def fit(head: str, lab: np.ndarray, y_lab: np.ndarray, pool: np.ndarray, k: int, seed: int) -> LinearHead:
    """Fit ``head`` on the pool rows ``lab`` (labels ``y_lab``); the returned head scores any embeddings."""
    c = {"c0.3": 0.3, "c0.03": 0.03, "c1": 1.0}.get(head, 0.1)
    x_lab = pool[lab]
    if head == "spread":
        from sklearn.semi_supervised import LabelSpreading

        mean, scale = standardiser(pool, seed=seed)
        labels = np.full(len(pool), -1)
        labels[lab] = y_lab
        ls = LabelSpreading(kernel="knn", n_neighbors=10, alpha=0.2, max_iter=50).fit((pool - mean) / scale, labels)
        dist = ls.label_distributions_
        pick = np.setdiff1d(np.flatnonzero(dist.max(1) >= 0.9), lab)
        x_lab = np.concatenate([x_lab, pool[pick]])
        y_lab = np.concatenate([y_lab, ls.classes_[dist[pick].argmax(1)]])
    return fit_head(x_lab, y_lab, k, c=c, seed=seed, standardise_with=pool)


def _view_embeddings(sim: Path, dataset: Path, classes: list[str], view: str) -> tuple[Path, Path]:
    """Embed the template's pool and the test split as ``view`` (``flip``, ``res288``, ``multi``, ``sNNN``), once."""
    import dataclasses

    import torch

    from alwb.learning import backbones
    from alwb.learning.embed import embed_items, items_from_store

    class Mirror(torch.nn.Module):
        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.inner(torch.flip(x, dims=[3]))

    class TwoBlocks(torch.nn.Module):
        """timm EfficientNet: pooled last-block output ++ pooled head features."""

        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            m = self.inner
            x = m.blocks(m.bn1(m.conv_stem(x)))
            last = x.mean(dim=(2, 3))
            return torch.cat([last, m.bn2(m.conv_head(x)).mean(dim=(2, 3))], dim=1)

    settings = json.loads((sim / "settings.json").read_text())
    name = (settings.get("train") or {}).get("backbone") or "efficientnet_lite0"
    bb = backbones.load(name, download=False, quiet=True)
    if view == "flip":
        bb = dataclasses.replace(bb, model=Mirror(bb.model).eval())
    elif view == "res288":
        bb = dataclasses.replace(bb, preprocess=dataclasses.replace(bb.preprocess, resize=329, crop=288))
    elif view in ("s224", "s160", "s128"):
        size = int(view[1:])
        bb = dataclasses.replace(bb, preprocess=dataclasses.replace(bb.preprocess, resize=size, crop=size))
    elif view == "multi":
        model = TwoBlocks(bb.model).eval()
        with torch.no_grad():
            dim = int(model(torch.zeros(1, 3, 64, 64)).shape[1])
        bb = dataclasses.replace(bb, model=model, spec=dataclasses.replace(bb.spec, embedding_dim=dim))
    else:
        raise ValueError(view)
    pool_dir, test_dir = sim / f"{view}_pool", sim / f"{view}_test"
    t0 = time.perf_counter()
    with Project.open(sim / "template") as proj:
        items = items_from_store(proj.store)
    rep = embed_items(pool_dir, items, bb, threads=2)
    files = held_out_files(dataset, classes)
    rep2 = embed_items(test_dir, [(i, str(f)) for i, (f, _) in enumerate(files, 1)], bb, threads=2)
    print(
        f"{view} embeddings: {rep.embedded} pool + {rep2.embedded} test in {time.perf_counter() - t0:.0f} s "
        f"({rep.runtime}, {rep2.runtime})",
        flush=True,
    )
    return pool_dir, test_dir


def _aligned(ids: np.ndarray, other: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """The rows of ``other`` (ids, rows) for the items ``ids``, in that order."""
    o_ids, o_emb = other
    pos = {int(i): k for k, i in enumerate(o_ids)}
    return o_emb[[pos[int(i)] for i in ids]]


def _load(sim: Path, dataset: Path) -> tuple[list[str], set[int], tuple, tuple]:
    """What ``alwb simulate`` left in ``sim``: the classes, the validation item ids, the template's cached
    embeddings ``(ids, rows, true labels)`` (pool and validation sample) and the test split's."""
    tdir = sim / "template"
    oracle = {int(k): v for k, v in json.loads((tdir / "oracle.json").read_text()).items()}
    with Project.open(tdir) as proj:
        classes = proj.classes
        val = set(int(i) for i in proj.store.val_item_ids())
    ids, emb = _cache(tdir)
    files = held_out_files(dataset, classes)
    t_ids, t_emb = _cache(sim / "test_embeddings")
    y = np.asarray([oracle[int(i)] for i in ids])
    y_test = np.asarray([files[int(i) - 1][1] for i in t_ids])
    return classes, val, (ids, emb, y), (t_ids, t_emb, y_test)


def run(
    sim: Path, dataset: Path, seeds: list[int], initial: int, batch: int, budget: int, heads: tuple[str, ...] = HEADS
) -> pd.DataFrame:
    classes, val, (ids, emb, y), (t_ids, t_emb, y_test) = _load(sim, dataset)
    keep = np.asarray([i not in val for i in ids])
    ids, pool, y_pool = ids[keep], emb[keep], y[keep]
    k = len(classes)
    views = {"": (pool, t_emb)}
    if "flip" in heads:
        pool_dir, test_dir = _view_embeddings(sim, dataset, classes, "flip")
        views["flip"] = ((pool + _aligned(ids, _cache(pool_dir))) / 2, (t_emb + _aligned(t_ids, _cache(test_dir))) / 2)
    if "sqrt" in heads:
        views["sqrt"] = (np.sqrt(np.maximum(pool, 0)), np.sqrt(np.maximum(t_emb, 0)))
    for view in ("res288", "multi", "s224", "s160", "s128"):
        if view in heads:
            pool_dir, test_dir = _view_embeddings(sim, dataset, classes, view)
            views[view] = (_aligned(ids, _cache(pool_dir)), _aligned(t_ids, _cache(test_dir)))
    rows = []
    for seed in seeds:
        first = np.random.default_rng(seed).choice(len(pool), initial, replace=False)
        for head in heads:
            x_pool, x_test = views.get(head, views[""])
            labelled = list(first)
            while True:
                t0 = time.perf_counter()
                lab = np.asarray(labelled)
                h = fit(head, lab, y_pool[lab], x_pool, k, seed)
                probs = h.predict_proba(x_pool)
                secs = time.perf_counter() - t0
                acc = float((h.predict(x_test) == y_test).mean())
                rows.append({"head": head, "seed": seed, "n_labeled": len(lab), "test_accuracy": acc, "seconds": secs})
                print(f"{head} seed {seed} {len(lab)} labels: {acc:.4f} ({secs:.1f} s)", flush=True)
                if len(lab) >= budget:
                    break
                top2 = np.sort(probs, axis=1)[:, -2:]
                margin = top2[:, 1] - top2[:, 0]
                margin[lab] = np.inf
                labelled += list(np.argsort(margin, kind="stable")[:batch])
    return pd.DataFrame(rows)


def ceiling(sim: Path, dataset: Path, seeds: list[int], cs: list[float], sizes: list[int]) -> pd.DataFrame:
    """The head on every training image (and on random subsets of ``sizes``) with true labels, at each C."""
    classes, _, (ids, emb, y), (_, t_emb, y_test) = _load(sim, dataset)
    rows = []
    for c in cs:
        draws = [(len(ids), -1, np.arange(len(ids)))]
        draws += [(n, s, np.random.default_rng(s).choice(len(ids), n, replace=False)) for n in sizes for s in seeds]
        for n, seed, pick in draws:
            t0 = time.perf_counter()
            h = fit_head(emb[pick], y[pick], len(classes), c=c, seed=max(seed, 0), standardise_with=emb)
            acc = float((h.predict(t_emb) == y_test).mean())
            secs = time.perf_counter() - t0
            rows.append({"c": c, "n_labeled": n, "seed": seed, "test_accuracy": acc, "seconds": secs})
            print(f"C {c:g} {n} labels (seed {seed}): {acc:.4f} ({secs:.1f} s)", flush=True)
    return pd.DataFrame(rows)


def report(df: pd.DataFrame, at: list[int]) -> None:
    base = df[df["head"] == "logreg"].set_index(["seed", "n_labeled"])["test_accuracy"]
    for head in dict.fromkeys(df["head"]):
        sub = df[df["head"] == head]
        for n in at:
            v = sub[sub["n_labeled"] == n].set_index("seed")["test_accuracy"]
            line = f"{head:>7} {n:>5}: {v.mean():.4f} ± {v.std(ddof=1):.4f}"
            if head != "logreg":
                d = np.asarray([v[s] - base[(s, n)] for s in v.index]) * 100
                half = stats.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / np.sqrt(len(d)) if len(d) > 1 else np.nan
                line += f"  gain {d.mean():+.1f} [{d.mean() - half:+.1f}, {d.mean() + half:+.1f}]"
            print(line)
        print(f"{head:>7} mean seconds a round: {sub['seconds'].mean():.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sim", type=Path, required=True)
    ap.add_argument("--dataset", type=Path, required=True)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--initial", type=int, default=100)
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--budget", type=int, default=1000)
    ap.add_argument("--heads", default=",".join(HEADS), help=f"some of {', '.join(HEADS)} (logreg first)")
    ap.add_argument("--csv", type=Path)
    ap.add_argument("--ceiling", action="store_true", help="E58: the head with every training label, and subsets")
    ap.add_argument("--cs", default="0.03,0.1,0.3,1", help="--ceiling: the head's C values")
    ap.add_argument("--sizes", default="1000,2000", help="--ceiling: random subset sizes")
    args = ap.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    if args.ceiling:
        cs = [float(c) for c in args.cs.split(",")]
        df = ceiling(args.sim, args.dataset, seeds, cs, [int(n) for n in args.sizes.split(",") if n])
        if args.csv:
            df.to_csv(args.csv, index=False)
        print(df.groupby(["c", "n_labeled"])["test_accuracy"].agg(["mean", "std", "count"]).round(4).to_string())
        return
    heads = tuple(h for h in args.heads.split(",") if h)
    if not heads or heads[0] != "logreg" or not set(heads) <= set(HEADS):
        ap.error(f"--heads: logreg first, then any of {', '.join(HEADS)}")
    df = run(args.sim, args.dataset, seeds, args.initial, args.batch, args.budget, heads)
    if args.csv:
        df.to_csv(args.csv, index=False)
    report(df, [100, 200, 300, 500, 1000])


if __name__ == "__main__":
    main()
