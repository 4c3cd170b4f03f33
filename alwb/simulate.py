"""The simulator: the workbench's engine with an oracle that answers from a labeled dataset.

``DATASET/train`` (or a ``--train-manifest`` CSV) is the pool; ``DATASET/test`` (or ``val``) is never imported into
the project, so it is never trained on, queried or pseudo-labelled: it only measures each round's model. Every run
(strategy × seed) is a real project under ``OUT/runs/``; rows go to ``OUT/curve.csv`` as rounds finish, and a run
that was interrupted resumes from its store.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .config import TrainConfig
from .errors import AlwbError, ConfigError
from .intake.images import is_image_path, load_array
from .intake.ingest import scan
from .learning.advice import advise
from .learning.evaluate import classification_metrics
from .learning.plan import Geometry
from .learning.pretrain import POOL_BACKBONE, PretrainSettings, pretrain
from .learning.query import FEATURE_STRATEGIES, list_strategies
from .learning.typicality import select_typical
from .project import Project

#: the mode of a simulation's rounds on the pool's own backbone when ``--mode`` is left at ``auto``: ``finetune``
#: (trained like ``cnn6``), 26 points over ``head`` on CIFAR-10 at 1,000 labels (docs/experiments.md E26, E30)
PRETRAINED_MODE = "finetune"

CURVE_COLUMNS = [
    "strategy",
    "setting",
    "seed",
    "round",
    "n_labeled",
    "n_pseudo",
    "test_accuracy",
    "test_macro_f1",
    "test_balanced_accuracy",
    # the test split's per-class recalls weighted by the pool's class shares: the accuracy on images distributed like
    # the pool (which the validation sample, drawn from the pool, estimates); test_accuracy when the test split is
    # distributed like the pool, not when a long-tailed pool is tested on a balanced split
    "test_accuracy_pool_mix",
    "val_accuracy",
    "val_accuracy_low",
    "val_accuracy_high",
    "val_n",
    "train_seconds",
    "score_seconds",
    "query_seconds",
    "round_seconds",
    "epochs",
    "warm",
    # the stop advice after the round (alwb.learning.advice): kappa and changed share against the previous round's
    # predictions on the stop set, and the recommendation
    "kappa",
    "changed",
    "advice_stop",
    "advice",
]


@dataclass(frozen=True)
class SimSettings:
    """One simulated setting (shared by its strategies and seeds): the simulator's own fields and the training
    settings every run uses. Defaults are the product's defaults (:class:`TrainConfig`, ``seed`` set per run)."""

    initial: int = 100
    batch: int = 100
    budget: int = 1000
    val_size: int = 500
    #: minutes of self-supervised pretraining on the pool before the runs (:mod:`alwb.learning.pretrain`; 0: none). The
    #: runs then train on backbone ``pool-simclr`` (``mode`` ``auto`` means :data:`PRETRAINED_MODE`).
    pretrain_minutes: float = 0.0
    train: TrainConfig = TrainConfig()

    def __post_init__(self) -> None:
        if self.initial < 1 or self.batch < 1 or self.budget < self.initial or self.val_size < 0:
            raise ConfigError("the simulation needs initial ≥ 1, batch ≥ 1, budget ≥ initial and val_size ≥ 0")
        if self.pretrain_minutes < 0:
            raise ConfigError(f"pretrain minutes must be ≥ 0 (got {self.pretrain_minutes:g})")
        if self.pretrain_minutes and (self.train.backbone != POOL_BACKBONE or self.train.mode == "auto"):
            mode = PRETRAINED_MODE if self.train.mode in ("auto", "scratch") else self.train.mode
            object.__setattr__(self, "train", self.train.with_(backbone=POOL_BACKBONE, mode=mode))

    @property
    def name(self) -> str:
        """What differs from plain training, e.g. ``pseudo+smote``, ``pseudo+cap2+steps3+th0.9`` or ``scratch``."""
        t, d = self.train, TrainConfig()
        parts = [f"ssl{self.pretrain_minutes:g}", t.mode] if self.pretrain_minutes else []
        parts += ["pseudo"] if t.pseudo else []
        for prefix, key in (("cap", "pseudo_cap"), ("steps", "pseudo_steps"), ("th", "pseudo_threshold")):
            if t.pseudo and getattr(t, key) != getattr(d, key):
                parts.append(f"{prefix}{getattr(t, key):g}")
        parts += [t.balance] if t.balance != "none" else []
        parts += [] if t.warm_start else ["scratch"]
        parts += [f"warm{t.warm_epochs_ratio:g}"] if t.warm_start and t.warm_epochs_ratio != d.warm_epochs_ratio else []
        return "+".join(parts) or "plain"

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form, as recorded in ``OUT/settings.json`` (the per-run seed left out)."""
        d = asdict(self)
        d["train"].pop("seed")
        return d


def _flat(d: dict[str, Any]) -> dict[str, Any]:
    """``{"train": {"lr": 0}}`` → ``{"lr": 0}``: the recorded settings as one level."""
    return {k2: v2 for k, v in d.items() for k2, v2 in (v.items() if isinstance(v, dict) else [(k, v)])}


def _test_dir(dataset: Path) -> Path:
    for name in ("test", "val"):
        if (dataset / name).is_dir():
            return dataset / name
    raise AlwbError(f"{dataset} has no test/ or val/ folder")


def _template(dataset: Path, out: Path, train_manifest: Path | None, s: SimSettings) -> tuple[Path, dict[int, int]]:
    """Import the pool once (unlabeled) with its pixel cache; return the template folder and item -> class oracle."""
    tdir = out / "template"
    oracle_file = tdir / "oracle.json"
    if oracle_file.is_file():
        return tdir, {int(k): v for k, v in json.loads(oracle_file.read_text()).items()}
    shutil.rmtree(tdir, ignore_errors=True)
    src = train_manifest if train_manifest is not None else dataset / "train"
    if not src.exists():
        raise AlwbError(f"training pool not found: {src}")
    found = scan(src)
    truth = {c.path: c.label for c in found.candidates if c.refused is None and c.label is not None}
    if not truth:
        refused = Counter(c.refused for c in found.candidates if c.refused is not None)
        why = "; ".join(f"{n} refused: {reason}" for reason, n in refused.most_common(3))
        raise AlwbError(
            f"{src} has no labels for the oracle (need class folders or a label column)" + (f" ({why})" if why else "")
        )
    classes = sorted({v for v in truth.values()})
    with Project.create(tdir, classes=classes) as proj:
        proj.set_config(val_size=s.val_size)
        rep = proj.add_images(src, unlabeled=True, progress=sys.stderr.isatty())
        print(f"pool: {rep.added} images, {len(rep.rejected)} rejected, {len(classes)} classes", file=sys.stderr)
        t = s.train
        if s.pretrain_minutes:  # features from the pool's own images, before any label (its time kept apart)
            pre = pretrain(proj, PretrainSettings(minutes=s.pretrain_minutes), device=t.device)
            print(pre.summary() + " (before the rounds; not in their times)", file=sys.stderr)
            (tdir / "pretrain.json").write_text(
                json.dumps({k: v for k, v in asdict(pre).items() if k != "losses"}, indent=1)
            )
        proj.set_train_config(augment=t.augment, model=t.model, mode=t.mode, backbone=t.backbone, device=t.device)
        geo = proj.geometry(fetch=True)
        if not geo.is_head:  # head rounds read embeddings, not pixels
            proj.pixel_cache(geo, progress=sys.stderr.isatty())
        if geo.uses_backbone:  # embedded once for every run: typicality picks the first labels
            from .learning import backbones
            from .learning.embed import embed_items, items_from_store

            bb = backbones.load(str(geo.backbone), download=False, quiet=True, framing=geo.framing)
            embed_items(tdir, items_from_store(proj.store), bb, threads=1)
        proj.store.set_meta("geometry", geo.to_dict())
        pos = {c: i for i, c in enumerate(classes)}
        oracle = {int(r["id"]): pos[truth[r["path"]]] for r in proj.store.items() if r["path"] in truth}
    oracle_file.write_text(json.dumps(oracle))
    return tdir, oracle


def held_out_files(dataset: Path, classes: list[str]) -> list[tuple[Path, int]]:
    """The test split's image files and their class positions, in a fixed order."""
    tdir = _test_dir(dataset)
    pos = {c: i for i, c in enumerate(classes)}
    files = []
    for cdir in sorted(p for p in tdir.iterdir() if p.is_dir()):
        if cdir.name not in pos:
            raise AlwbError(f"test class {cdir.name!r} is not a training class")
        files += [(f, pos[cdir.name]) for f in sorted(cdir.rglob("*")) if f.is_file() and is_image_path(f)]
    if not files:
        raise AlwbError(f"no test images in {tdir}")
    return files


def _test_pixels(
    dataset: Path, out: Path, classes: list[str], size: int, channels: int
) -> tuple[np.ndarray, np.ndarray]:
    cache = out / f"test_{channels}x{size}.npz"
    if cache.is_file():
        d = np.load(cache)
        return d["x"], d["y"]
    files = held_out_files(dataset, classes)
    x = np.stack([load_array(f, size, channels) for f, _ in files])
    y = np.asarray([c for _, c in files], dtype=np.int64)
    np.savez(cache, x=x, y=y)
    return x, y


def _evaluate_head(proj: Project, cur: dict[str, Any], dataset: Path, out: Path) -> dict[str, Any]:
    """Test metrics of a head round: the test split embedded once per backbone (``OUT/test_embeddings/``, the
    backbone's own preprocessing and framing, as the pool was), then the round's head on those embeddings."""
    from .learning import backbones
    from .learning.embed import EmbeddingCache, embed_items
    from .learning.head import LinearHead

    geo = Geometry.from_dict(cur["config"]["geometry"])
    bb = backbones.load(str(geo.backbone), download=False, quiet=True, framing=geo.framing)
    files = held_out_files(dataset, proj.classes)
    where = out / "test_embeddings"
    rep = embed_items(where, [(i, str(f)) for i, (f, _) in enumerate(files, 1)], bb, threads=1)
    keep = np.asarray([i for i in range(1, len(files) + 1) if i not in rep.unreadable], dtype=np.int64)
    emb = EmbeddingCache.for_backbone(where, bb).rows(keep)
    probs = LinearHead.load(cur["path"]).predict_proba(emb)
    y = np.asarray([files[i - 1][1] for i in keep], dtype=np.int64)
    return classification_metrics(y, probs.argmax(1), proj.classes)


def pool_mix(recall: dict[str, float | None], oracle: dict[int, int], classes: Sequence[str]) -> float | None:
    """Per-class test recalls weighted by each class's share of the pool (``oracle``: item id → class index); the
    classes without a test image are left out and the shares of the others renormalised."""
    counts = np.bincount(np.fromiter(oracle.values(), dtype=np.int64), minlength=len(classes)).astype(float)
    shares = [(counts[i], recall.get(c)) for i, c in enumerate(classes) if recall.get(c) is not None]
    total = sum(w for w, _ in shares)
    return None if total == 0 else float(sum(w * float(r) for w, r in shares) / total)


def _recorded(curve: Path) -> list[dict[str, str]]:
    if not curve.is_file():
        return []
    with open(curve, newline="") as fh:
        return list(csv.DictReader(fh))


def _append(curve: Path, row: dict[str, Any]) -> None:
    new = not curve.is_file()
    columns = CURVE_COLUMNS
    if not new:  # a curve begun by an older version keeps its columns (the ones it lacks are left out)
        with open(curve, newline="") as fh:
            columns = next(csv.reader(fh), None) or CURVE_COLUMNS
    with open(curve, "a", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=columns, extrasaction="ignore")
        if new:
            w.writeheader()
        w.writerow({k: row.get(k) for k in columns})
        fh.flush()


def _evaluate(
    proj: Project, x_test: np.ndarray, y_test: np.ndarray, device: str, *, dataset: Path, out: Path
) -> dict[str, Any]:
    from .io.export import build_classifier, load_state_dict_file
    from .learning.train import predict_batches, resolve_device, uses_tta

    cur = proj.current_model()
    assert cur is not None
    geo = Geometry.from_dict(cur["config"]["geometry"])
    if geo.is_head:
        return _evaluate_head(proj, cur, dataset, out)
    model = build_classifier(geo, len(proj.classes))
    model.load_state_dict(load_state_dict_file(cur["path"]))
    probs, _ = predict_batches(
        model,
        x_test,
        mean=geo.mean,
        std=geo.std,
        device=resolve_device(device),
        tta_flip=uses_tta(TrainConfig.from_dict(cur["config"])),
    )
    return classification_metrics(y_test, probs.argmax(1), proj.classes)


def simulate(
    dataset: str | Path,
    out: str | Path,
    *,
    strategies: Sequence[str] = ("margin", "random"),
    seeds: Sequence[int] = (0, 1, 2),
    settings: SimSettings = SimSettings(),
    train_manifest: str | Path | None = None,
    log: bool = True,
) -> Path:
    """Run (or resume) every strategy × seed; returns the path of ``curve.csv``.

    A folder keeps the settings it was made with; only the budget may differ, and a larger one continues its runs.
    """
    dataset, out = Path(dataset), Path(out)
    for s in strategies:
        if s not in list_strategies():
            raise AlwbError(f"unknown strategy {s!r} (choose from: {', '.join(list_strategies())})")
    out.mkdir(parents=True, exist_ok=True)
    recorded = {
        **settings.to_dict(),
        "dataset": str(dataset.resolve()),
        "train_manifest": str(Path(train_manifest).resolve()) if train_manifest else "",
    }
    settings_file = out / "settings.json"
    if settings_file.is_file():
        before = json.loads(settings_file.read_text())
        before = {k: v for k, v in before.items() if k not in ("strategies", "seeds")}
        # a folder made before a setting existed ran with that setting's default
        defaults = SimSettings().to_dict()
        before = {**defaults, **before, "train": {**defaults["train"], **before.get("train", {})}}
        # the budget may change: a larger one continues the runs (their rounds so far are the same), a smaller one
        # adds nothing to runs that already went past it
        flat_before, flat_now = _flat(before), _flat(recorded)
        diff = sorted(
            k for k in set(flat_before) | set(flat_now) if k != "budget" and flat_before.get(k) != flat_now.get(k)
        )
        if diff:
            raise AlwbError(
                f"{out} holds a simulation with other settings ({', '.join(diff)}); use another --out to compare"
            )
    settings_file.write_text(json.dumps(recorded, indent=1))
    tdir, oracle = _template(dataset, out, Path(train_manifest) if train_manifest else None, settings)
    with Project.open(tdir) as t:
        classes, geo = t.classes, t.stored_geometry()
    assert geo is not None  # the template recorded it
    if geo.is_head:  # measured on embeddings of the test images (_evaluate_head)
        x_test, y_test = np.zeros((0,), np.uint8), np.zeros((0,), np.int64)
    else:
        x_test, y_test = _test_pixels(dataset, out, classes, geo.image_size, geo.channels)
    curve = out / "curve.csv"
    for strategy in strategies:
        for seed in seeds:
            _run(tdir, oracle, out, curve, strategy, int(seed), settings, x_test, y_test, dataset=dataset, log=log)
    plot_curve(curve, out / "curve.png")
    return curve


def _run(
    tdir: Path,
    oracle: dict[int, int],
    out: Path,
    curve: Path,
    strategy: str,
    seed: int,
    s: SimSettings,
    x_test: np.ndarray,
    y_test: np.ndarray,
    *,
    dataset: Path,
    log: bool,
) -> None:
    key = (strategy, s.name, str(seed))
    run_dir = out / "runs" / f"{strategy}-{s.name}-seed{seed}"
    if not (run_dir / "alwb.sqlite").is_file():
        # set the run up in a side folder and move it into place when its first labels are in, so that an
        # interruption here leaves no half-made run (a store without labels) for the resume to trip over
        tmp_dir = run_dir.with_name(run_dir.name + ".tmp")
        shutil.rmtree(run_dir, ignore_errors=True)
        shutil.rmtree(tmp_dir, ignore_errors=True)
        shutil.copytree(tdir, tmp_dir, ignore=shutil.ignore_patterns("oracle.json", "*-wal", "*-shm"))
        with Project.open(tmp_dir) as proj:
            proj.set_config(seed=seed, val_size=s.val_size, strategy=strategy)
            # the whole training config from today's defaults and the settings: a template made by an older
            # version stores that version's defaults (a learning rate, say), which must not leak into new runs
            cfg = s.train.with_(seed=seed)
            proj.store.set_meta("train", cfg.to_dict())
            with proj.store.transaction():
                proj.store.reset_validation()
            proj.ensure_validation()
            classes = proj.classes
            val = proj.store.val_item_ids()
            pool = np.asarray(proj.store.unlabeled_item_ids(split="pool"))
            rng = np.random.default_rng(seed)
            first = rng.choice(pool, size=min(s.initial, pool.size), replace=False)
            use = proj.auto_strategy() if strategy == "auto" else strategy
            feats = proj.features(pool) if use in FEATURE_STRATEGIES else None
            if feats is not None:  # a cold start by typicality on features that exist before any label
                first, _ = select_typical(feats[1], feats[0], min(s.initial, pool.size), seed=seed)
            # the first model needs two classes: draw on (still at random) until a second class appears
            rest = rng.permutation(np.setdiff1d(pool, first))
            while len({oracle[int(i)] for i in first}) < 2 and rest.size:
                first, rest = np.append(first, rest[0]), rest[1:]
            proj.label([(int(i), classes[oracle[int(i)]]) for i in val], annotator="oracle-val")
            proj.label([(int(i), classes[oracle[int(i)]]) for i in first], annotator="oracle")
        os.replace(tmp_dir, run_dir)
    done = {int(r["round"]) for r in _recorded(curve) if (r["strategy"], r["setting"], r["seed"]) == key}
    query_seconds = 0.0
    with Project.open(run_dir) as proj:
        classes = proj.classes
        while True:
            rounds = [r for r in proj.store.rounds() if r["status"] == "done"]
            last = rounds[-1] if rounds else None
            if last is not None and last["number"] not in done:
                m = _evaluate(proj, x_test, y_test, s.train.device, dataset=dataset, out=out)
                val = last["metrics"].get("val") or {}
                t = last["timings"]
                cfg = (proj.current_model() or {}).get("config", {})
                row = {
                    "strategy": strategy,
                    "setting": s.name,
                    "seed": seed,
                    "round": last["number"],
                    "n_labeled": last["n_labeled"],
                    "n_pseudo": last["n_pseudo"],
                    "test_accuracy": m["accuracy"],
                    "test_macro_f1": m["macro_f1"],
                    "test_balanced_accuracy": m["balanced_accuracy"],
                    "test_accuracy_pool_mix": pool_mix(m["recall"], oracle, classes),
                    "val_accuracy": val.get("accuracy"),
                    "val_accuracy_low": val.get("accuracy_low"),
                    "val_accuracy_high": val.get("accuracy_high"),
                    "val_n": val.get("n"),
                    "train_seconds": round(t.get("train_seconds", 0.0), 3),
                    "score_seconds": round(t.get("score_seconds", 0.0), 3),
                    "query_seconds": round(query_seconds, 3),
                    "round_seconds": round(t.get("round_seconds", 0.0) + query_seconds, 3),
                    "epochs": cfg.get("epochs_run"),
                    "warm": cfg.get("warm"),
                }
                adv = advise(proj.store.rounds())
                row["kappa"] = adv["kappa"][-1] if adv["kappa"] else None
                row["changed"] = adv["changed"][-1] if adv["changed"] else None
                row["advice_stop"] = adv["stop"]
                row["advice"] = adv["recommendation"]
                _append(curve, row)
                done.add(last["number"])
                if log:
                    print(
                        f"[{strategy} {s.name} seed {seed}] round {last['number']}: {last['n_labeled']} labels, "
                        f"test accuracy {m['accuracy']:.4f}, macro-F1 {m['macro_f1']:.4f}, val "
                        f"{val.get('accuracy', float('nan')):.4f} [{val.get('accuracy_low', 0):.3f}, "
                        f"{val.get('accuracy_high', 0):.3f}], {row['round_seconds']:.1f} s"
                        + ("" if row["kappa"] is None else f", kappa {row['kappa']:.3f}")
                        + f"; {adv['recommendation']}",
                        file=sys.stderr,
                    )
            n = len(proj.store.current_labels(split="pool"))
            if last is None or n > last["n_labeled"]:
                proj.train(strategy=strategy)
                continue
            if n >= s.budget or not proj.store.unlabeled_item_ids(split="pool"):
                return  # budget spent, or every pool item labeled (a budget larger than the pool)
            t0 = time.perf_counter()
            res = proj.query(min(s.batch, s.budget - n), strategy, seed=seed)
            proj.label([(it.id, classes[oracle[it.id]]) for it in res.items], annotator="oracle")
            query_seconds = time.perf_counter() - t0


def plot_curve(curve: str | Path, png: str | Path) -> None:
    """Mean test accuracy against labels, one line per strategy and setting, with the min–max band over seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    df = pd.read_csv(curve)
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    for (strategy, setting), g in df.groupby(["strategy", "setting"], sort=True):
        agg = g.groupby("n_labeled")["test_accuracy"].agg(["mean", "min", "max", "count"]).reset_index()
        label = strategy if setting == "plain" else f"{strategy} ({setting})"
        ax.plot(agg["n_labeled"], agg["mean"], marker="o", ms=3, label=label)
        ax.fill_between(agg["n_labeled"], agg["min"], agg["max"], alpha=0.2)
    ax.set_xlabel("labels")
    ax.set_ylabel("test accuracy (mean, band = min–max over seeds)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(png)
    plt.close(fig)
