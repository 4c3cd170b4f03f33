"""Benchmarks of alwb.insight: label errors, near-duplicates, timings at 50,000 items, the 2-D map.

Run from the repository root:

    .venv/bin/python bench/research/insight.py embed-cifar --data /work/scratch/cifar10 --n 2000
    .venv/bin/python bench/research/insight.py labels
    .venv/bin/python bench/research/insight.py duplicates --photos ../shared/datasets/hymenoptera
    .venv/bin/python bench/research/insight.py scale --rows 50000
    .venv/bin/python bench/research/insight.py map --rows 10000,100000
    .venv/bin/python bench/research/insight.py bulk --n 200
    .venv/bin/python bench/research/insight.py project --template PROJECT   # an embedded ImageFolder project

Embeddings are EfficientNet-Lite0's (the backbone that comes with alwb), computed through
alwb.learning.embed.embed_items
(one CPU thread) and kept under bench/out/insight/. ``scale`` and ``map`` need more rows than were embedded: they
draw them from the real embeddings (a random real row plus Gaussian noise of 0.3 of each dimension's spread, so the
rows keep the real marginal scale and cluster structure) and say so.
"""

from __future__ import annotations

import argparse
import io
import random
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

OUT = Path("bench/out/insight")
BACKBONE = "efficientnet_lite0"


def _embed(paths: list[str], cache_dir: Path) -> np.ndarray:
    from alwb.learning import backbones
    from alwb.learning.embed import EmbeddingCache, embed_items

    loaded = backbones.load(BACKBONE, device="cpu", download=False, quiet=True)
    items = list(enumerate(paths, start=1))
    t0 = time.perf_counter()
    rep = embed_items(cache_dir, items, loaded, device="cpu", threads=1, workers=0, batch_size=32)
    dt = time.perf_counter() - t0
    print(f"embedded {rep.embedded} ({rep.already} cached) in {dt:.1f} s: {rep.summary()}", flush=True)
    cache = EmbeddingCache.for_backbone(cache_dir, loaded)
    return cache.rows([i for i, _ in items])


def cmd_embed_cifar(args: argparse.Namespace) -> None:
    root = Path(args.data) / "train"
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    rng = random.Random(0)
    per = args.n // len(classes)
    paths, y = [], []
    for k, c in enumerate(classes):
        files = sorted(str(p) for p in (root / c).iterdir())
        for f in rng.sample(files, per):
            paths.append(f)
            y.append(k)
    emb = _embed(paths, OUT / f"cifar{args.n}")
    np.savez(OUT / f"cifar{args.n}.npz", emb=emb, y=np.asarray(y), classes=np.asarray(classes), paths=np.asarray(paths))
    print(f"saved {OUT / f'cifar{args.n}.npz'}: {emb.shape}")


def _flip(y: np.ndarray, frac: float, mode: str, confusion: np.ndarray | None, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    k = int(y.max()) + 1
    noisy = y.copy()
    idx = rng.choice(len(y), int(round(frac * len(y))), replace=False)
    for i in idx:
        if mode == "random":
            noisy[i] = rng.choice([c for c in range(k) if c != y[i]])
        else:  # the class the true class is most often taken for (out-of-sample confusion on the clean labels)
            row = confusion[y[i]].astype(float).copy()
            row[y[i]] = -1
            noisy[i] = int(row.argmax())
    return noisy


def cmd_labels(args: argparse.Namespace) -> None:
    from alwb.insight.label_issues import find_issues, out_of_sample_probs

    z = np.load(OUT / f"cifar{args.n}.npz")
    emb, y = z["emb"], z["y"]
    k = int(y.max()) + 1
    t0 = time.perf_counter()
    clean_probs = out_of_sample_probs(emb, y, k)
    print(f"clean out-of-sample accuracy {np.mean(clean_probs.argmax(1) == y):.3f} ({time.perf_counter() - t0:.1f} s)")
    confusion = np.zeros((k, k), int)
    np.add.at(confusion, (y, clean_probs.argmax(1)), 1)
    print(
        "| flips | seed | flipped | flagged | precision top 100 | recall top 100 | precision all flags "
        "| recall all flags | seconds |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for mode in ("random", "confusable"):
        for seed in range(args.seeds):
            noisy = _flip(y, 0.05, mode, confusion, seed)
            wrong = set(np.flatnonzero(noisy != y).tolist())
            t0 = time.perf_counter()
            probs = out_of_sample_probs(emb, noisy, k, seed=seed)
            found = find_issues(noisy, probs)
            dt = time.perf_counter() - t0
            top = found.rows[:100].tolist()
            hit = len(wrong & set(top))
            hit_all = len(wrong & set(found.rows.tolist()))
            print(
                f"| {mode} | {seed} | {len(wrong)} | {found.rows.size} | {hit / max(1, len(top)):.2f} | "
                f"{hit / len(wrong):.2f} | {hit_all / max(1, found.rows.size):.2f} | {hit_all / len(wrong):.2f} | "
                f"{dt:.1f} |",
                flush=True,
            )


def _variant(img, kind: str, rng: np.random.Generator):
    from PIL import Image, ImageEnhance

    w, h = img.size
    if kind == "crop":
        f = rng.uniform(0.8, 0.9)
        cw, ch = int(w * f), int(h * f)
        x0, y0 = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
        return img.crop((x0, y0, x0 + cw, y0 + ch))
    if kind == "resize":
        f = rng.uniform(0.4, 0.6)
        return img.resize((max(8, int(w * f)), max(8, int(h * f))), Image.BILINEAR)
    if kind == "jpeg":
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=int(rng.integers(20, 41)))
        return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")
    if kind == "colour":
        img = ImageEnhance.Color(img).enhance(rng.uniform(0.6, 1.4))
        return ImageEnhance.Brightness(img).enhance(rng.uniform(0.8, 1.2))
    raise ValueError(kind)


def cmd_duplicates(args: argparse.Namespace) -> None:
    from PIL import Image

    from alwb.insight import duplicates, neighbours

    photos = sorted(p for p in Path(args.photos).rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    rng = np.random.default_rng(0)
    work = OUT / "dups"
    work.mkdir(parents=True, exist_ok=True)
    kinds = ("crop", "resize", "jpeg", "colour")
    chosen = rng.choice(len(photos), min(args.pairs, len(photos)), replace=False)
    paths = [str(p) for p in photos]
    pairs = set()
    kind_of = {}
    for j, i in enumerate(sorted(chosen.tolist())):
        kind = kinds[j % len(kinds)]
        out = work / f"v{j:04d}_{kind}.png"
        if not out.exists():
            _variant(Image.open(photos[i]).convert("RGB"), kind, rng).save(out)
        paths.append(str(out))
        pairs.add((i, len(paths) - 1))
        kind_of[(i, len(paths) - 1)] = kind
    print(f"{len(photos)} photos, {len(pairs)} made near-copies ({', '.join(kinds)}), {len(paths)} images")
    emb = _embed(paths, work)
    t0 = time.perf_counter()
    x = neighbours.prepare(emb)
    dist, idx = neighbours.knn(x, 10)
    print(f"neighbours: {time.perf_counter() - t0:.2f} s")
    print(
        "| factor | threshold | groups | predicted pairs | precision | recall | recall crop / resize / jpeg / colour |"
    )
    print("|---|---|---|---|---|---|---|")
    for factor in (0.13, 0.3, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0):
        g = duplicates.near_duplicates(dist, idx, factor)
        pred = set()
        for grp in g.groups:
            m = sorted(grp.tolist())
            pred |= {(a, b) for ai, a in enumerate(m) for b in m[ai + 1 :]}
        tp = pred & pairs
        by_kind = [
            sum(1 for p in tp if kind_of[p] == kd) / max(1, sum(1 for p in pairs if kind_of[p] == kd)) for kd in kinds
        ]
        print(
            f"| {factor} | {g.threshold:.3f} | {len(g.groups)} | {len(pred)} | {len(tp) / max(1, len(pred)):.2f} | "
            f"{len(tp) / len(pairs):.2f} | {' / '.join(f'{r:.2f}' for r in by_kind)} |"
        )


def _rows(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    src = sorted(OUT.glob("cifar*.npz"))
    z = np.load(src[-1])
    emb, y = z["emb"].astype(np.float32), z["y"]
    rng = np.random.default_rng(seed)
    pick = rng.integers(0, len(emb), n)
    noise = rng.standard_normal((n, emb.shape[1]), dtype=np.float32) * (0.3 * emb.std(axis=0))
    print(f"{n} rows drawn from {len(emb)} real {src[-1].name} embeddings (+ noise of 0.3 of each dimension's spread)")
    return emb[pick] + noise, y[pick]


def cmd_scale(args: argparse.Namespace) -> None:
    from alwb.insight import duplicates, neighbours, outliers
    from alwb.insight.label_issues import find_issues, out_of_sample_probs

    for n in [int(v) for v in args.rows.split(",")]:
        emb, y = _rows(n)
        t0 = time.perf_counter()
        probs = out_of_sample_probs(emb, y, int(y.max()) + 1)
        t1 = time.perf_counter()
        found = find_issues(y, probs)
        t2 = time.perf_counter()
        x = neighbours.prepare(emb)
        t3 = time.perf_counter()
        dist, idx = neighbours.knn(x, 10)
        t4 = time.perf_counter()
        g = duplicates.near_duplicates(dist, idx)
        o = outliers.flag_outliers(outliers.outlier_scores(dist))
        t5 = time.perf_counter()
        print(
            f"| {n:,} | {t1 - t0:.1f} | {t2 - t1:.1f} | {t3 - t2:.1f} | {t4 - t3:.1f} | {t5 - t4:.2f} | "
            f"{t5 - t0:.1f} | {found.rows.size} flags, {len(g.groups)} groups, {len(o)} outliers |",
            flush=True,
        )


def cmd_map(args: argparse.Namespace) -> None:
    from alwb.insight.layout import layout_2d

    for n in [int(v) for v in args.rows.split(",")]:
        emb, _ = _rows(n)
        for method in args.methods.split(","):
            xy, used, secs = layout_2d(emb, method=method, seed=None)
            print(f"| {n:,} | {used} | {secs:.1f} |", flush=True)


def cmd_bulk(args: argparse.Namespace) -> None:
    """A lasso of N points -> bulk label saved: the time of alwb.insight.label_items (one transaction) on a project
    of 10,000 items, SQLite."""
    import shutil

    from alwb import insight
    from alwb.project import Project

    root = OUT / "bulk_project"
    shutil.rmtree(root, ignore_errors=True)
    with Project.create(root, classes=["a", "b", "c"]) as proj:
        with proj.store.transaction():
            proj.store.con.executemany(
                "INSERT INTO items(id, path, sha256, size, width, height, status, added_at)"
                " VALUES(?, ?, ?, 1, 64, 64, 'ok', 0)",
                [(i, f"/img/{i:05d}.png", f"{i:064x}") for i in range(1, 10_001)],
            )
        rng = np.random.default_rng(0)
        times = []
        for rep in range(args.repeats):
            ids = rng.choice(np.arange(1, 10_001), args.n, replace=False).tolist()
            t0 = time.perf_counter()
            _, n = insight.label_items(proj, ids, ["a", "b", "c"][rep % 3], "bench")
            times.append(time.perf_counter() - t0)
            assert n <= args.n
        batches = proj.store.con.execute("SELECT COUNT(DISTINCT batch_id) FROM labels").fetchone()[0]
    print(
        f"{args.n} items labeled in one transaction: median {np.median(times) * 1000:.0f} ms, max "
        f"{max(times) * 1000:.0f} ms over {args.repeats} selections ({batches} batches written)"
    )


def cmd_project(args: argparse.Namespace) -> None:
    """A real project end to end: label every item of a COPY of an embedded ImageFolder project by its folder, flip
    a share at random, train one round, run ``alwb issues --json`` and score its flags against the flips."""
    import json
    import shutil
    import subprocess

    from alwb.project import Project

    root = OUT / "project"
    shutil.rmtree(root, ignore_errors=True)
    shutil.copytree(args.template, root, ignore=shutil.ignore_patterns("insight*", "round_*", "models"))
    rng = np.random.default_rng(args.seed)
    with Project.open(root) as p:
        rows = p.store.items()
        classes = p.classes
        truth = {int(r["id"]): Path(r["path"]).parent.name for r in rows}
        ids = sorted(truth)
        flip = set(rng.choice(ids, int(args.flip * len(ids)), replace=False).tolist())
        answers = [(i, str(rng.choice([k for k in classes if k != truth[i]])) if i in flip else truth[i]) for i in ids]
        p.label(answers, annotator="bench")
        t0 = time.perf_counter()
        p.train(device="cpu")
        print(f"{len(ids)} items, {len(flip)} labels flipped; one head round {time.perf_counter() - t0:.1f} s")
        images = p.store.image_root()
        by_path = {str(images.locate(r["path"])): int(r["id"]) for r in rows}
    t0 = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-m", "alwb", "-q", "issues", str(root), "--json"], capture_output=True, text=True
    )
    secs = time.perf_counter() - t0
    d = json.loads(out.stdout)
    flagged = [by_path[x["path"]] for x in d["label_issues"]]
    top = flagged[:100]
    print(
        f"alwb issues --json {secs:.1f} s: {len(flagged)} flags, precision of the top 100 "
        f"{sum(i in flip for i in top) / max(1, len(top)):.2f}, "
        f"recall of all flags {len(flip & set(flagged)) / len(flip):.2f}"
    )
    groups = [[by_path[x] for x in g] for g in d["near_duplicates"]]
    mixed = sum(len({truth[i] for i in g}) > 1 for g in groups)
    print(
        f"{len(groups)} near-duplicate groups, {sum(map(len, groups))} items, "
        f"largest {max(map(len, groups), default=0)}, {mixed} mixing true classes;"
        f" {len(d['outliers'])} outliers; leakage {d['leakage']}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("embed-cifar")
    p.add_argument("--data", required=True)
    p.add_argument("--n", type=int, default=2000)
    p.set_defaults(func=cmd_embed_cifar)
    p = sub.add_parser("labels")
    p.add_argument("--n", type=int, default=2000)
    p.add_argument("--seeds", type=int, default=3)
    p.set_defaults(func=cmd_labels)
    p = sub.add_parser("duplicates")
    p.add_argument("--photos", required=True)
    p.add_argument("--pairs", type=int, default=150)
    p.set_defaults(func=cmd_duplicates)
    p = sub.add_parser("scale")
    p.add_argument("--rows", default="50000")
    p.set_defaults(func=cmd_scale)
    p = sub.add_parser("map")
    p.add_argument("--rows", default="10000,100000")
    p.add_argument("--methods", default="umap")
    p.set_defaults(func=cmd_map)
    p = sub.add_parser("project")
    p.add_argument("--template", required=True, help="an embedded ImageFolder project (its folders are the truth)")
    p.add_argument("--flip", type=float, default=0.05)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_project)
    p = sub.add_parser("bulk")
    p.add_argument("--n", type=int, default=200)
    p.add_argument("--repeats", type=int, default=5)
    p.set_defaults(func=cmd_bulk)
    OUT.mkdir(parents=True, exist_ok=True)
    args = ap.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()
