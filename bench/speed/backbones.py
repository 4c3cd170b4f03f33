"""Backbone embedding throughput, the ``head`` round on a 60,000-item pool, and the head choice (logistic
regression vs a small MLP).

    python bench/speed/backbones.py throughput [--backbones resnet18,...] [--batch 16] [--seconds 6] [--device cpu]
    python bench/speed/backbones.py head-round [--pool 60000] [--labels 1000] [--classes 10] [--repeats 3]
    python bench/speed/backbones.py heads --fmnist ../shared/datasets/fashion-mnist [--labels 1000] [--seeds 0,1,2]
    python bench/speed/backbones.py cnn6 --fmnist ../shared/datasets/fashion-mnist [--seeds 0,1,2]
    python bench/speed/backbones.py all

``throughput``: images per second of each backbone's forward pass (normalisation included) at its own input size,
on random uint8 images, with **random weights** (speed does not depend on them), after one warm-up batch. Decoding
JPEGs is measured apart (``--decode DIR`` times alwb.intake.images + the backbone's resize/crop on real photos).

``head-round``: one ``head`` round as alwb runs it: standardise from the pool, fit the logistic-regression head on
LABELS labelled embeddings, then score the whole pool (predict_proba) from a memory-mapped ``.npy`` on disk, for
each backbone's embedding size; synthetic Gaussian-cluster embeddings (only the time is meaningful).

``heads``: accuracy and time of the two candidate heads on a real stand-in for pretrained features (no
pretrained weights can be downloaded here): Fashion-MNIST pixels projected on their first 256 principal components
(PCA fitted on the unlabelled train pool), LABELS random labels, test on the 10,000 test images. Logistic regression
with alwb's defaults (C = 0.03, one thread); MLP D-512-K, 60 epochs of minibatches of 64, one torch thread. These
are *not* pretrained features; the comparison only says which head to keep.

``cnn6``: the stand-in for pretrained features that the issue asks for. Round A trains a ``cnn6`` on 500 random
Fashion-MNIST labels (alwb.learning.train.train_model, default TrainConfig); round B adds 500 more random labels
(1,000) and
either fits the ``head`` on round A's cached embeddings (logistic regression; the MLP too) or trains a full ``cnn6``
round warm-started from A, as alwb does today. Test accuracy on the 10,000 test images (no flip TTA for either),
and the seconds of round B (head: fit + scoring the 60,000-item pool; cnn6: training + scoring the pool).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from alwb.learning import backbones
from alwb.learning.head import DEFAULT_C, fit_head


def _threads() -> str:
    return f"torch threads {torch.get_num_threads()}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}"


def throughput(names: list[str], *, batch: int, seconds: float, device: str) -> None:
    print(f"# embedding throughput, random weights, batch {batch}, {device}; {_threads()}")
    print(f"{'backbone':<16} {'input':>5} {'D':>5} {'img/s':>8}")
    for name in names:
        spec = backbones.get_spec(name)
        model = backbones.build_extractor(spec).to(device)
        pre = spec.preprocess()
        x = torch.randint(0, 256, (batch, 3, spec.input_size, spec.input_size), dtype=torch.uint8, device=device)
        amp = device.startswith("cuda")

        def step(model=model, pre=pre, x=x, amp=amp) -> None:
            with torch.inference_mode(), torch.autocast("cuda", dtype=torch.float16, enabled=amp):
                model(pre.normalise(x)).float().cpu()

        step()  # warm-up
        n, t0 = 0, time.perf_counter()
        while True:
            step()
            n += batch
            el = time.perf_counter() - t0
            if el >= seconds and n >= 2 * batch:
                break
        print(f"{name:<16} {spec.input_size:>5} {spec.embedding_dim:>5} {n / el:>8.1f}", flush=True)


def decode(folder: Path, name: str, limit: int) -> None:
    from alwb.intake.images import load_image

    pre = backbones.get_spec(name).preprocess()
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))[:limit]
    t0 = time.perf_counter()
    for p in files:
        pre.to_uint8(load_image(p, 3))
    el = time.perf_counter() - t0
    print(f"# decode + resize/crop ({name} preprocessing), 1 process: {len(files) / el:.1f} img/s on {folder}")


def _synthetic(n: int, dim: int, classes: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(classes, dim)).astype(np.float32)
    y = rng.integers(0, classes, n)
    x = np.empty((n, dim), dtype=np.float32)
    for s in range(0, n, 10000):
        e = min(n, s + 10000)
        x[s:e] = centres[y[s:e]] * 0.5 + rng.standard_normal((e - s, dim), dtype=np.float32)
    return np.abs(x), y  # ReLU-like features: non-negative, off-centre


def head_round(pool: int, labels: int, classes: int, repeats: int, dims: list[int], c: float = DEFAULT_C) -> None:
    print(f"# head round: fit on {labels} labels (C = {c:g}) + score a {pool}-item pool from a memmap; {_threads()}")
    print(f"{'D':>5} {'fit s':>7} {'score s':>8} {'round s':>8}  (median of {repeats})")
    with tempfile.TemporaryDirectory() as tmp:
        for dim in dims:
            x, y = _synthetic(pool, dim, classes, seed=dim)
            path = Path(tmp) / f"emb_{dim}.npy"
            np.save(path, x)
            del x
            emb = np.load(path, mmap_mode="r")
            fits, scores = [], []
            rng = np.random.default_rng(0)
            for _ in range(repeats):
                lab = np.sort(rng.choice(pool, labels, replace=False))
                t0 = time.perf_counter()
                head = fit_head(np.asarray(emb[lab]), y[lab], classes, c=c, standardise_with=emb)
                t1 = time.perf_counter()
                proba = head.predict_proba(emb)
                t2 = time.perf_counter()
                assert proba.shape == (pool, classes)
                fits.append(t1 - t0)
                scores.append(t2 - t1)
            f, s = float(np.median(fits)), float(np.median(scores))
            print(f"{dim:>5} {f:>7.2f} {s:>8.2f} {f + s:>8.2f}", flush=True)
            del emb, proba


def _load_fmnist(root: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    cache = Path(tempfile.gettempdir()) / "alwb_bench_fmnist.npz"
    if cache.is_file():
        d = np.load(cache)
        return d["xtr"], d["ytr"], d["xte"], d["yte"]
    from PIL import Image

    def split(name: str) -> tuple[np.ndarray, np.ndarray]:
        xs, ys = [], []
        for c in range(10):
            for p in sorted((root / name / str(c)).glob("*.png")):
                xs.append(np.asarray(Image.open(p), dtype=np.uint8).reshape(-1))
                ys.append(c)
        return np.stack(xs), np.asarray(ys)

    xtr, ytr = split("train")
    xte, yte = split("test")
    np.savez(cache, xtr=xtr, ytr=ytr, xte=xte, yte=yte)
    return xtr, ytr, xte, yte


def _fit_mlp(x: np.ndarray, y: np.ndarray, classes: int, seed: int, epochs: int = 60) -> torch.nn.Module:
    """The candidate MLP head: D -> 512 -> K, ReLU, dropout 0.3, AdamW, minibatches of 64, on standardised x."""
    torch.manual_seed(seed)
    xt = torch.from_numpy(x.astype(np.float32))
    yt = torch.from_numpy(y.astype(np.int64))
    net = torch.nn.Sequential(
        torch.nn.Linear(x.shape[1], 512), torch.nn.ReLU(), torch.nn.Dropout(0.3), torch.nn.Linear(512, classes)
    )
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=1e-2)
    g = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        perm = torch.randperm(len(xt), generator=g)
        for s in range(0, len(xt), 64):
            idx = perm[s : s + 64]
            loss = torch.nn.functional.cross_entropy(net(xt[idx]), yt[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return net.eval()


def heads(root: Path, labels: int, seeds: list[int]) -> None:
    from sklearn.decomposition import PCA

    xtr, ytr, xte, yte = _load_fmnist(root)
    t0 = time.perf_counter()
    pca = PCA(256, random_state=0).fit(xtr.astype(np.float32) / 255.0)
    ftr = pca.transform(xtr.astype(np.float32) / 255.0).astype(np.float32)
    fte = pca.transform(xte.astype(np.float32) / 255.0).astype(np.float32)
    print(f"# head choice on Fashion-MNIST PCA-256 pixel features (PCA {time.perf_counter() - t0:.1f} s); {_threads()}")
    print(f"# {labels} random labels, test 10,000; fit time includes standardisation; score = 60,000-item pool")
    print(f"{'head':<8} {'seed':>4} {'acc':>7} {'fit s':>7} {'score s':>8}")
    res: dict[str, list[tuple[float, float, float]]] = {"logreg": [], "mlp": []}
    for seed in seeds:
        lab = np.random.default_rng(seed).choice(len(ftr), labels, replace=False)
        t0 = time.perf_counter()
        head = fit_head(ftr[lab], ytr[lab], 10, standardise_with=ftr, seed=seed)
        t1 = time.perf_counter()
        head.predict_proba(ftr)
        t2 = time.perf_counter()
        acc = float((head.predict(fte) == yte).mean())
        res["logreg"].append((acc, t1 - t0, t2 - t1))
        print(f"{'logreg':<8} {seed:>4} {acc:>7.4f} {t1 - t0:>7.2f} {t2 - t1:>8.2f}", flush=True)
        mean, scale = head.mean, head.scale
        threads = torch.get_num_threads()
        torch.set_num_threads(
            1
        )  # the same single thread as the logistic regression's fit (alwb.learning.head.HEAD_THREADS)
        t0 = time.perf_counter()
        net = _fit_mlp((ftr[lab] - mean) / scale, ytr[lab], 10, seed)
        t1 = time.perf_counter()
        torch.set_num_threads(threads)
        with torch.inference_mode():
            torch.softmax(net(torch.from_numpy((ftr - mean) / scale)), 1)
            pred = net(torch.from_numpy((fte - mean) / scale)).argmax(1).numpy()
        t2 = time.perf_counter()
        acc = float((pred == yte).mean())
        res["mlp"].append((acc, t1 - t0, t2 - t1))
        print(f"{'mlp':<8} {seed:>4} {acc:>7.4f} {t1 - t0:>7.2f} {t2 - t1:>8.2f}", flush=True)
    for k, v in res.items():
        a = np.asarray(v)
        print(
            f"{k:<8} mean acc {a[:, 0].mean():.4f} ± {a[:, 0].std():.4f}, fit {a[:, 1].mean():.2f} s, "
            f"score {a[:, 2].mean():.2f} s"
        )


def cnn6_standin(root: Path, seeds: list[int], first: int = 500, second: int = 500) -> None:
    from alwb.config import TrainConfig
    from alwb.learning.train import predict_batches, train_model

    xtr, ytr, xte, yte = _load_fmnist(root)
    pool = xtr.reshape(-1, 1, 28, 28)
    test = xte.reshape(-1, 1, 28, 28)
    mean, std = [float(pool.mean() / 255.0)], [float(pool.std() / 255.0)]
    print(f"# cnn6 stand-in on Fashion-MNIST: round A {first} labels, round B {first + second}; {_threads()}")
    print(f"{'round B':<14} {'seed':>4} {'acc':>7} {'seconds':>8}")
    rows: dict[str, list[tuple[float, float]]] = {"head (logreg)": [], "head (mlp)": [], "cnn6 round": []}
    for seed in seeds:
        rng = np.random.default_rng(seed)
        order = rng.permutation(len(pool))
        a, b = np.sort(order[:first]), np.sort(order[: first + second])
        cfg = TrainConfig(model="cnn6", seed=seed, image_size=28, channels=1)
        res_a = train_model(pool[a], ytr[a], arch="cnn6", num_classes=10, mean=mean, std=std, cfg=cfg)
        _, emb_pool = predict_batches(res_a.model, pool, mean=mean, std=std)
        _, emb_test = predict_batches(res_a.model, test, mean=mean, std=std)
        t0 = time.perf_counter()
        head = fit_head(emb_pool[b], ytr[b], 10, standardise_with=emb_pool, seed=seed)
        head.predict_proba(emb_pool)
        el = time.perf_counter() - t0
        acc = float((head.predict(emb_test) == yte).mean())
        rows["head (logreg)"].append((acc, el))
        print(f"{'head (logreg)':<14} {seed:>4} {acc:>7.4f} {el:>8.2f}", flush=True)
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        t0 = time.perf_counter()
        net = _fit_mlp((emb_pool[b] - head.mean) / head.scale, ytr[b], 10, seed)
        with torch.inference_mode():
            net(torch.from_numpy((np.asarray(emb_pool) - head.mean) / head.scale)).softmax(1)
            pred = net(torch.from_numpy((emb_test - head.mean) / head.scale)).argmax(1).numpy()
        el = time.perf_counter() - t0
        torch.set_num_threads(threads)
        acc = float((pred == yte).mean())
        rows["head (mlp)"].append((acc, el))
        print(f"{'head (mlp)':<14} {seed:>4} {acc:>7.4f} {el:>8.2f}", flush=True)
        t0 = time.perf_counter()
        res_b = train_model(
            pool[b],
            ytr[b],
            arch="cnn6",
            num_classes=10,
            mean=mean,
            std=std,
            cfg=cfg,
            init_state=res_a.model.state_dict(),
        )
        predict_batches(res_b.model, pool, mean=mean, std=std)
        el = time.perf_counter() - t0
        probs, _ = predict_batches(res_b.model, test, mean=mean, std=std)
        acc = float((probs.argmax(1) == yte).mean())
        rows["cnn6 round"].append((acc, el))
        print(f"{'cnn6 round':<14} {seed:>4} {acc:>7.4f} {el:>8.2f}", flush=True)
    for k, v in rows.items():
        arr = np.asarray(v)
        print(f"{k:<14} mean acc {arr[:, 0].mean():.4f} ± {arr[:, 0].std():.4f}, round B {arr[:, 1].mean():.2f} s")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["throughput", "head-round", "heads", "cnn6", "all"])
    ap.add_argument("--backbones", default=",".join(backbones.BACKBONES))
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seconds", type=float, default=6.0)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: leave torch's default)")
    ap.add_argument("--decode", type=Path, default=None, help="a folder of photos to time decoding on")
    ap.add_argument("--pool", type=int, default=60000)
    ap.add_argument("--labels", type=int, default=1000)
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--dims", default="", help="embedding sizes for head-round (default: the backbones')")
    ap.add_argument("--c", type=float, default=DEFAULT_C, help="the head's C for head-round (EfficientNet-Lite: 0.1)")
    ap.add_argument("--fmnist", type=Path, default=Path("../shared/datasets/fashion-mnist"))
    ap.add_argument("--seeds", default="0,1,2")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    names = [n for n in args.backbones.split(",") if n]
    if args.what in ("throughput", "all"):
        throughput(names, batch=args.batch, seconds=args.seconds, device=args.device)
        if args.decode:
            decode(args.decode, names[0], 300)
    if args.what in ("head-round", "all"):
        dims = [int(d) for d in args.dims.split(",") if d] or sorted(
            {backbones.get_spec(n).embedding_dim for n in names}
        )
        head_round(args.pool, args.labels, args.classes, args.repeats, dims, args.c)
    if args.what in ("heads", "all"):
        heads(args.fmnist, args.labels, [int(s) for s in args.seeds.split(",")])
    if args.what in ("cnn6", "all"):
        cnn6_standin(
            args.fmnist, [int(s) for s in args.seeds.split(",")], args.labels // 2, args.labels - args.labels // 2
        )
    sys.stdout.flush()


if __name__ == "__main__":
    main()
