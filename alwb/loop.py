"""The labeling session: the only orchestrator of ingest → store → train/score → query → label → retrain.

A :class:`Project` is a folder holding ``alwb.sqlite`` (the store), ``cache/`` (decoded pixels), ``models/``
(one safetensors file per round) and ``scores/`` (memory-mapped probabilities and embeddings per round).
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import shutil
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from .config import ProjectConfig, TrainConfig
from .data import PixelCache, choose_geometry
from .errors import AlwbError, EmptyPoolError, LabelError, NoLabelsError, ProjectError
from .evaluate import classification_metrics
from .ingest import IngestReport, ingest
from .models import choose_arch
from .query import NEEDS_EMBEDDINGS, list_strategies, select, select_diverse
from .store import LabelRow, Store

log = logging.getLogger(__name__)

STORE_FILE = "alwb.sqlite"
NONE_LABEL = "<none>"
KEEP_SCORE_ROUNDS = 3


@dataclass(frozen=True)
class QueryItem:
    """One item proposed for labeling."""

    id: int
    path: str
    score: float | None
    predicted: str | None
    probability: float | None
    reason: str  # the strategy's name, "random" or "validation"


@dataclass
class QueryResult:
    """The items to label next, and how they were chosen."""

    items: list[QueryItem]
    strategy: str
    round: int
    note: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return {
            "strategy": self.strategy,
            "round": self.round,
            "note": self.note,
            "items": [asdict(i) for i in self.items],
        }


@dataclass
class Scores:
    """Probabilities ``(N, K)`` and embeddings ``(N, D)`` of every item, as scored by one round's model."""

    round: int
    ids: npt.NDArray[np.int64]
    probs: np.ndarray
    emb: np.ndarray
    classes: list[str]
    #: True when the round scored a random sample of the unlabeled pool (``TrainConfig.score_limit``)
    sampled: bool = False

    def rows(self, item_ids: npt.ArrayLike) -> npt.NDArray[np.int64]:
        """Row positions of item ids (-1 where an item was not scored)."""
        ids = np.asarray(item_ids, dtype=np.int64)
        pos = np.searchsorted(self.ids, ids)
        pos = np.minimum(pos, max(len(self.ids) - 1, 0))
        ok = (len(self.ids) > 0) & (self.ids[pos] == ids) if len(self.ids) else np.zeros(ids.shape, bool)
        return np.where(ok, pos, -1)


def _epochs_with_extra(n_human: int, n_all: int, cfg: TrainConfig, geo: dict[str, Any], init_state: Any) -> int:
    """Epochs over ``n_all`` samples that give the ``n_human`` human labels as many passes as without the extra
    (pseudo-labelled) samples, up to ``cfg.pseudo_steps`` times the steps of a round without them."""
    import math

    from .train import auto_epochs

    per_epoch = max(1, math.ceil(n_human / cfg.batch_size))
    human_epochs = auto_epochs(
        n_human, cfg.batch_size, warm=init_state is not None, cfg=cfg, arch=geo["arch"], image_size=geo["image_size"]
    )
    steps = human_epochs * per_epoch * min(cfg.pseudo_steps, n_all / max(1, n_human))
    return max(1, math.ceil(steps / max(1, math.ceil(n_all / cfg.batch_size))))


def draw_validation(pool_ids: npt.ArrayLike, size: int, seed: int) -> npt.NDArray[np.int64]:
    """``size`` item ids drawn uniformly at random without replacement from ``pool_ids`` (all of them when there are
    fewer): the validation sample. The same seed and the same set of ids give the same draw, whatever their order."""
    pool = np.sort(np.asarray(pool_ids, dtype=np.int64))
    return np.random.default_rng(seed).choice(pool, size=min(int(size), pool.size), replace=False)


class _CacheRows:
    """Read-only, sliceable view of some rows of a pixel cache (what :func:`predict_batches` reads in chunks)."""

    def __init__(self, cache: PixelCache, ids: npt.NDArray[np.int64]) -> None:
        self.cache, self.ids = cache, ids

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def shape(self) -> tuple[int, ...]:
        """``(rows, C, H, W)``, like the arrays it stands for."""
        return (len(self.ids), *self.cache.pixels.shape[1:])

    def __getitem__(self, index: slice) -> np.ndarray:
        return self.cache.rows(self.ids[index])


@dataclass
class RoundSummary:
    """What :meth:`Project.train` reports."""

    round: int
    n_labeled: int
    n_val: int
    metrics: dict[str, Any]
    timings: dict[str, float]
    model_path: str
    device: str
    epochs: int
    warm: bool
    notes: list[str] = field(default_factory=list)


class Project:
    """A project folder and its store. Open one per thread or process."""

    def __init__(self, root: str | Path, store: Store) -> None:
        self.root = Path(root).resolve()
        self.store = store

    # ------------------------------------------------------------------ lifecycle
    @classmethod
    def create(cls, root: str | Path, *, classes: Sequence[str] | None = None) -> Project:
        """Create the folder and its store; fails if a store is already there."""
        root = Path(root)
        if (root / STORE_FILE).exists():
            raise ProjectError(f"{root} already holds an alwb project (use 'alwb add' to add images)")
        if root.exists() and not root.is_dir():
            raise ProjectError(f"{root} exists and is not a folder")
        root.mkdir(parents=True, exist_ok=True)
        store = Store(root / STORE_FILE, create=True)
        store.set_meta("created_at", time.time())
        store.set_meta("project", ProjectConfig().to_dict())
        store.set_meta("train", TrainConfig().to_dict())
        if classes:
            store.add_classes(classes)
        return cls(root, store)

    @classmethod
    def open(cls, root: str | Path) -> Project:
        """Open an existing project."""
        root = Path(root)
        if not (root / STORE_FILE).is_file():
            raise ProjectError(f"{root} is not an alwb project (no {STORE_FILE}; run 'alwb init' first)")
        return cls(root, Store(root / STORE_FILE))

    def close(self) -> None:
        """Close the store connection."""
        self.store.close()

    def __enter__(self) -> Project:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ settings
    @property
    def config(self) -> ProjectConfig:
        """Project settings (validation size, default strategy and batch)."""
        return ProjectConfig.from_dict(self.store.get_meta("project"))

    def set_config(self, **changes: Any) -> ProjectConfig:
        """Change project settings."""
        cfg = ProjectConfig.from_dict({**self.config.to_dict(), **{k: v for k, v in changes.items() if v is not None}})
        self.store.set_meta("project", cfg.to_dict())
        return cfg

    @property
    def train_config(self) -> TrainConfig:
        """Training settings."""
        return TrainConfig.from_dict(self.store.get_meta("train"))

    def set_train_config(self, **changes: Any) -> TrainConfig:
        """Change training settings (validated)."""
        cfg = self.train_config.with_(**changes)
        self.store.set_meta("train", cfg.to_dict())
        return cfg

    @property
    def classes(self) -> list[str]:
        """Class names in model order."""
        return self.store.classes()

    # ------------------------------------------------------------------ ingest
    def add_images(
        self,
        src: str | Path,
        *,
        classes: Sequence[str] | None = None,
        unlabeled: bool = False,
        progress: bool = False,
        workers: int | None = None,
    ) -> IngestReport:
        """Import a folder or manifest, then top up the validation set."""
        report = ingest(self.store, src, classes=classes, unlabeled=unlabeled, progress=progress, workers=workers)
        self.ensure_validation()
        return report

    def validation_target(self) -> int:
        """Size of the validation set: the setting, or 10% of the items (at least 10, at most 200)."""
        cfg = self.config
        if cfg.val_size:
            return int(cfg.val_size)
        n = self.store.item_count()
        return int(min(200, max(10, round(0.1 * n)), n // 2))

    def ensure_validation(self) -> int:
        """Draw validation items at random from the pool until the target size; returns how many were added."""
        target = self.validation_target()
        current = len(self.store.val_item_ids())
        if current >= target:
            return 0
        pool = np.asarray(
            self.store.unlabeled_item_ids(split="pool")
            + [r["item_id"] for r in self.store.current_labels(split="pool") if r["source"] == "import"],
            dtype=np.int64,
        )
        if pool.size == 0:
            return 0
        chosen = draw_validation(pool, target - current, self.config.seed + current)
        self.store.mark_validation(chosen.tolist())
        return int(chosen.size)

    def current_model(self) -> dict[str, Any] | None:
        """The last finished round's model record, its file path made absolute (stored relative to the project,
        so a moved or renamed project folder keeps working)."""
        cur = self.store.current_model()
        if cur is not None:
            cur["path"] = str(self.root / cur["path"])
        return cur

    # ------------------------------------------------------------------ scores
    def scores(self, round_number: int | None = None) -> Scores | None:
        """Memory-mapped scores of a finished round (default: the latest), or None before any model."""
        rnd = self.store.current_round() if round_number is None else round_number
        if rnd <= 0:
            return None
        d = self.root / "scores" / f"round_{rnd:04d}"
        if not (d / "ids.npy").is_file():
            return None
        meta = json.loads((d / "meta.json").read_text())
        return Scores(
            round=rnd,
            ids=np.load(d / "ids.npy"),
            probs=np.load(d / "probs.npy", mmap_mode="r"),
            emb=np.load(d / "emb.npy", mmap_mode="r"),
            classes=meta["classes"],
            sampled=bool(meta.get("sampled", False)),
        )

    # ------------------------------------------------------------------ query
    def query(
        self, n: int | None = None, strategy: str | None = None, *, exclude: Sequence[int] = (), seed: int | None = None
    ) -> QueryResult:
        """The next items to label, most informative first; read-only.

        Pending validation items (a random sample, see :meth:`ensure_validation`) take up to ``val_share`` of the
        batch; the rest comes from ``strategy``. Before any model, the rest is random and ``note`` says so.
        """
        cfg = self.config
        n = int(n or cfg.batch_size)
        strategy = strategy or cfg.strategy
        if strategy not in list_strategies():
            raise AlwbError(f"unknown strategy {strategy!r} (choose from: {', '.join(list_strategies())})")
        if n < 1:
            raise AlwbError("-n must be at least 1")
        excluded = set(int(i) for i in exclude)
        rnd = self.store.current_round()
        rng = np.random.default_rng((cfg.seed if seed is None else seed) * 1_000_003 + rnd)
        pending_val = [i for i in self.store.unlabeled_item_ids(split="val") if i not in excluded]
        all_pool = np.asarray(self.store.unlabeled_item_ids(split="pool"), np.int64)
        if excluded:
            all_pool = all_pool[~np.isin(all_pool, np.fromiter(excluded, np.int64, len(excluded)))]
        pool = all_pool
        if not pending_val and pool.size == 0:
            raise EmptyPoolError("every item is labeled: nothing left to query")
        # validation items take up to val_share of the batch, and fill it when the pool runs short
        k_val = min(len(pending_val), max(math.ceil(n * cfg.val_share), n - int(pool.size)))
        k_pool = min(n - k_val, int(pool.size))
        scores = self.scores()
        note = None
        items: list[QueryItem] = []
        if k_pool:
            probs = None
            use = strategy
            if strategy != "random":
                if scores is None:
                    use, note = "random", f"no model yet: {k_pool} item(s) chosen at random, not by {strategy}"
                else:
                    rows = scores.rows(pool)
                    if np.any(rows < 0):
                        pool = pool[rows >= 0]
                        rows = rows[rows >= 0]
                        if not scores.sampled:
                            note = "some new items are not scored yet (train again to score them)"
                        if pool.size == 0:  # nothing of the scored sample is left: fall back to random
                            pool = all_pool
                            use, note, probs = (
                                "random",
                                "the scored items are all answered: random until the next round",
                                None,
                            )
                    if use != "random":
                        probs = np.asarray(scores.probs[np.sort(rows)])[np.argsort(np.argsort(rows))]
            if use in NEEDS_EMBEDDINGS and probs is not None and scores is not None:
                emb = np.asarray(scores.emb[np.sort(rows)])[np.argsort(np.argsort(rows))]
                ids, sc = select_diverse(probs, emb, pool, k_pool, seed=int(rng.integers(2**31)))
            else:
                ids, sc = select(probs, pool, k_pool, use, rng=rng)
            items += self._describe(ids, sc, scores, reason=use)
        if k_val:
            vids = rng.choice(np.asarray(pending_val, dtype=np.int64), size=k_val, replace=False)
            items += self._describe(vids, None, scores, reason="validation")
        return QueryResult(items=items, strategy=strategy, round=rnd, note=note)

    def _describe(
        self, ids: npt.NDArray[np.int64], sc: npt.NDArray[np.float64] | None, scores: Scores | None, *, reason: str
    ) -> list[QueryItem]:
        out = []
        rows = scores.rows(ids) if scores is not None else None
        for j, item_id in enumerate(ids):
            path = self.store.item(int(item_id))["path"]
            pred = prob = None
            if scores is not None and rows is not None and rows[j] >= 0:
                p = np.asarray(scores.probs[rows[j]])
                pred, prob = scores.classes[int(p.argmax())], float(p.max())
            out.append(
                QueryItem(
                    id=int(item_id),
                    path=path,
                    score=None if sc is None else float(sc[j]),
                    predicted=pred,
                    probability=prob,
                    reason=reason,
                )
            )
        return out

    # ------------------------------------------------------------------ labels
    def label(
        self, answers: Sequence[tuple[int, str | None]], *, annotator: str | None = None, batch_id: str | None = None
    ) -> tuple[str, int]:
        """Save a batch of ``(item_id, class or None for "none of these")`` in ONE transaction.

        Returns ``(batch_id, labels written)``. Unknown items or classes raise :class:`LabelError`, nothing written.
        """
        batch_id = batch_id or uuid.uuid4().hex
        classes = set(self.classes)
        for item_id, cls in answers:
            row = self.store.item(int(item_id))
            if row is None or row["status"] != "ok":
                raise LabelError(f"item {item_id} does not exist or was rejected")
            if cls is not None and cls not in classes:
                raise LabelError(f"unknown class {cls!r} (classes: {', '.join(sorted(classes))})")
        n = self.store.add_labels(
            [LabelRow(int(i), c) for i, c in answers], source="human", annotator=annotator, batch_id=batch_id
        )
        return batch_id, n

    def label_file(self, csv_path: str | Path, *, annotator: str | None = None) -> tuple[str, int]:
        """Apply an answers CSV (``id`` or ``path``, and ``label``) as one transaction.

        Every bad line (unknown path, id or class, empty label) is reported with its line number, and then
        nothing is written. ``label`` may be ``<none>`` for "none of these classes".
        """
        csv_path = Path(csv_path)
        try:
            fh = open(csv_path, newline="", encoding="utf-8-sig")  # noqa: SIM115 - closed by the with below
        except OSError as exc:
            raise LabelError(f"cannot read {csv_path}: {exc.strerror or exc}") from None
        errors: list[str] = []
        answers: list[tuple[int, str | None]] = []
        classes = set(self.classes)
        with fh:
            reader = csv.DictReader(fh)
            cols = [c.strip().lower() for c in (reader.fieldnames or [])]
            if "label" not in cols or not ({"id", "path"} & set(cols)):
                raise LabelError(f"{csv_path}: needs a 'label' column and an 'id' or 'path' column")
            reader.fieldnames = cols
            seen: dict[int, int] = {}
            for row in reader:
                line = reader.line_num
                label = (row.get("label") or "").strip()
                item_id = self._resolve_answer_item(row, csv_path.parent)
                if isinstance(item_id, str):
                    errors.append(f"line {line}: {item_id}")
                    continue
                if not label:
                    errors.append(f"line {line}: empty label")
                    continue
                if label != NONE_LABEL and label not in classes:
                    errors.append(f"line {line}: unknown class {label!r}")
                    continue
                if item_id in seen:
                    errors.append(f"line {line}: item already answered on line {seen[item_id]}")
                    continue
                seen[item_id] = line
                answers.append((item_id, None if label == NONE_LABEL else label))
        if errors:
            more = f" (and {len(errors) - 10} more)" if len(errors) > 10 else ""
            raise LabelError(f"{csv_path}: nothing written; " + "; ".join(errors[:10]) + more)
        if not answers:
            raise LabelError(f"{csv_path}: no answers in the file")
        return self.label(answers, annotator=annotator)

    def _resolve_answer_item(self, row: dict[str, str | None], base: Path) -> int | str:
        raw_id = (row.get("id") or "").strip()
        if raw_id:
            if not (raw_id.isascii() and raw_id.isdecimal()):
                return f"id {raw_id!r} is not a number"
            item = self.store.item(int(raw_id))
            if item is None or item["status"] != "ok":
                return f"unknown item id {raw_id}"
            return int(raw_id)
        raw = (row.get("path") or "").strip()
        if not raw:
            return "neither id nor path given"
        p = Path(raw)
        candidates = [p] if p.is_absolute() else [base / p, Path.cwd() / p]
        for c in candidates:
            item = self.store.item_by_path(str(c.resolve()))
            if item is not None:
                if item["status"] != "ok":
                    return f"{raw} was rejected at import ({item['reason']})"
                return int(item["id"])
        return f"unknown path {raw!r}"

    def undo(self, batch_id: str) -> int:
        """Undo one saved batch (labels it changed go back to what they were)."""
        return self.store.undo_batch(batch_id)

    # ------------------------------------------------------------------ training
    def geometry(self, cfg: TrainConfig | None = None) -> dict[str, Any]:
        """The model's input geometry and architecture (fixed at the first round unless settings change)."""
        cfg = cfg or self.train_config
        geo = self.store.get_meta("geometry")
        size, channels = choose_geometry(self.store, cfg.image_size, cfg.channels, cfg.model)
        if (
            geo
            and (not cfg.image_size or geo["image_size"] == size)
            and (not cfg.channels or geo["channels"] == channels)
            and (cfg.model in ("auto", geo["arch"]))
        ):
            return geo
        arch = choose_arch(cfg.model, size)
        return {"image_size": size, "channels": channels, "arch": arch, "mean": None, "std": None}

    def pixel_cache(self, geo: dict[str, Any] | None = None, *, progress: bool = False) -> PixelCache:
        """The pixel cache at the model's geometry, synced with the store."""
        geo = geo or self.geometry()
        cache = PixelCache(self.root, geo["image_size"], geo["channels"])
        cache.sync(self.store, progress=progress)
        return cache

    def train(
        self,
        *,
        from_scratch: bool = False,
        epochs: int | None = None,
        device: str | None = None,
        strategy: str | None = None,
        progress: Callable[[str, int, int], None] | None = None,
        verbose: bool = False,
        pause: Callable[[], None] | None = None,
    ) -> RoundSummary:
        """One round: train on the current labels, score every item, record the round.

        ``pause`` is called between training steps and scoring chunks (a background round gives way to the
        person labeling there: :func:`alwb.jobs.give_way`).

        On any failure the round is recorded as failed with its error, the previous model and scores stay current,
        and the exception is raised again.
        """
        import torch
        from safetensors.torch import load_file, save_file

        from .train import predict_batches, resolve_device, train_model, uses_consistency, uses_tta

        if pause is not None:
            pause()
        cfg = self.train_config.with_(epochs=epochs, device=device)
        t_start = time.perf_counter()
        labels = self.store.current_labels(split="pool")
        if not labels:
            raise NoLabelsError("no labels to train on yet: label some items first ('alwb query', 'alwb label')")
        classes = self.classes
        if len({r["class"] for r in labels}) < 2:
            raise NoLabelsError("training needs labels of at least two classes")
        geo = self.geometry(cfg)
        number = self.store.start_round(strategy or self.config.strategy)
        model_dir = self.root / "models"
        score_dir = self.root / "scores" / f"round_{number:04d}"
        tmp_dir = score_dir.with_name(score_dir.name + ".tmp")
        model_path = model_dir / f"round_{number:04d}.safetensors"
        tmp_model = model_path.with_suffix(".tmp")
        try:
            t0 = time.perf_counter()
            cache = self.pixel_cache(geo, progress=verbose)
            if geo.get("mean") is None:
                geo["mean"], geo["std"] = cache.stats(seed=cfg.seed)
            labels = self.store.current_labels(split="pool")  # items rejected while decoding are gone now
            ids = np.asarray([r["item_id"] for r in labels], dtype=np.int64)
            y = np.asarray([r["position"] for r in labels], dtype=np.int64)
            x = cache.rows(ids)
            t_data = time.perf_counter() - t0
            if pause is not None:
                pause()

            init_state = None
            prev = self.current_model()
            notes: list[str] = []
            if not from_scratch and cfg.warm_start and prev is not None:
                pcfg = prev["config"]
                if (
                    pcfg.get("geometry", {}).get("arch") == geo["arch"]
                    and pcfg["geometry"].get("image_size") == geo["image_size"]
                    and pcfg["geometry"].get("channels") == geo["channels"]
                    and (Path(prev["path"]).is_file())
                ):
                    init_state = load_file(prev["path"])
                else:
                    notes.append("model settings changed: trained from scratch")
            x_train, y_train, sample_weights = x, y, None
            pseudo_rows: list[tuple[int, str, float]] = []
            if cfg.pseudo:
                pid, pcls, pconf = self._choose_pseudo(cfg, y, len(classes), number)
                if pid.size:
                    x_train = np.concatenate([x, cache.rows(pid)])
                    y_train = np.concatenate([y, pcls])
                    sample_weights = np.concatenate([np.ones(len(y)), np.ones(len(pid))])
                    pseudo_rows = [
                        (int(i), classes[int(c)], float(p)) for i, c, p in zip(pid, pcls, pconf, strict=True)
                    ]
                    if not cfg.epochs:  # pseudo-labels add steps instead of taking them from the human labels
                        cfg = cfg.with_(epochs=_epochs_with_extra(len(y), len(y_train), cfg, geo, init_state))
            unlabeled = None
            if uses_consistency(cfg, geo["image_size"]):
                unlabeled = cache.rows(self._consistency_sample(cfg, number))
            class_weights = None
            if cfg.balance == "weights":
                from .balance import class_weights as cw

                class_weights = cw(y_train, len(classes))
            tick = None
            if progress is not None:

                def tick(done: int, total: int, _loss: float) -> None:
                    progress("train", done, total)

            result = train_model(
                x_train,
                y_train,
                arch=geo["arch"],
                num_classes=len(classes),
                mean=geo["mean"],
                std=geo["std"],
                cfg=cfg,
                init_state=init_state,
                class_weights=class_weights,
                sample_weights=sample_weights,
                progress=tick,
                pause=pause,
                unlabeled=unlabeled,
            )
            if cfg.balance in ("smote", "adasyn"):
                self._refit_head(result.model, x, y, len(classes), geo, cfg)
            t_train = time.perf_counter() - t0 - t_data

            t1 = time.perf_counter()
            model_dir.mkdir(parents=True, exist_ok=True)
            state = {k: v.detach().cpu().contiguous() for k, v in result.model.state_dict().items()}
            save_file(state, str(tmp_model), metadata={"arch": geo["arch"], "classes": json.dumps(classes)})
            os.replace(tmp_model, model_path)

            shutil.rmtree(tmp_dir, ignore_errors=True)
            tmp_dir.mkdir(parents=True)
            score_ids = self._ids_to_score(cache.ids, cfg, number)
            sampled = len(score_ids) < len(cache.ids)
            n_all = len(score_ids)
            probs = np.lib.format.open_memmap(tmp_dir / "probs.npy", "w+", np.float32, (n_all, len(classes)))
            emb = np.lib.format.open_memmap(tmp_dir / "emb.npy", "w+", np.float32, (n_all, result.model.emb_dim))
            sprog = None
            if progress is not None:

                def sprog(done: int, total: int, _x: float) -> None:
                    progress("score", done, total)

            with torch.inference_mode():
                predict_batches(
                    result.model,
                    _CacheRows(cache, score_ids) if sampled else cache.pixels,
                    mean=geo["mean"],
                    std=geo["std"],
                    device=resolve_device(cfg.device),
                    out_probs=probs,
                    out_emb=emb,
                    progress=sprog,
                    pause=pause,
                    tta_flip=uses_tta(cfg),
                )
            probs.flush()
            emb.flush()
            np.save(tmp_dir / "ids.npy", score_ids)
            (tmp_dir / "meta.json").write_text(json.dumps({"classes": classes, "round": number, "sampled": sampled}))
            t_score = time.perf_counter() - t1

            scores = Scores(number, score_ids, probs, emb, classes, sampled)
            metrics = self._round_metrics(scores, ids, y, classes)
            timings = {
                "data_seconds": t_data,
                "train_seconds": t_train,
                "score_seconds": t_score,
                "round_seconds": time.perf_counter() - t_start,
            }
            config = {
                **cfg.to_dict(),
                "geometry": geo,
                "epochs_run": result.epochs,
                "warm": result.warm,
                "device_used": result.device,
                "amp": result.amp,
            }
            if score_dir.exists():
                shutil.rmtree(score_dir)
            os.replace(tmp_dir, score_dir)
            self.store.set_meta("geometry", geo)
            with self.store.transaction():  # pseudo-labels and the round's result land together or not at all
                self.store.replace_pseudo_labels(pseudo_rows, number)
                self.store.finish_round(
                    number,
                    model_path=model_path.relative_to(self.root).as_posix(),
                    arch=geo["arch"],
                    config=config,
                    metrics=metrics,
                    timings=timings,
                    n_labeled=len(ids),
                    n_pseudo=len(pseudo_rows),
                    n_val=int(metrics.get("val", {}).get("n") or 0),
                )
        except BaseException as exc:
            # nothing of the failed round may stay behind: half-written or already renamed files alike
            shutil.rmtree(tmp_dir, ignore_errors=True)
            shutil.rmtree(score_dir, ignore_errors=True)
            tmp_model.unlink(missing_ok=True)
            model_path.unlink(missing_ok=True)
            self.store.fail_round(number, f"{type(exc).__name__}: {exc}")
            raise
        self._prune_scores(number)
        return RoundSummary(
            round=number,
            n_labeled=len(ids),
            n_val=int(metrics.get("val", {}).get("n") or 0),
            metrics=metrics,
            timings=timings,
            model_path=str(model_path),
            device=result.device,
            epochs=result.epochs,
            warm=result.warm,
            notes=notes,
        )

    def _ids_to_score(self, all_ids: npt.NDArray[np.int64], cfg: TrainConfig, number: int) -> npt.NDArray[np.int64]:
        """Sorted ids to score this round: everything, or with ``score_limit`` every labeled and validation item
        plus a random sample (new each round, seeded) of that many unlabeled pool items."""
        unlabeled, sampled = self._unlabeled_sample(cfg, [cfg.seed, number])
        if sampled is None:
            return all_ids
        keep = np.union1d(np.setdiff1d(all_ids, unlabeled, assume_unique=True), sampled)
        return keep[np.isin(keep, all_ids)]

    def _consistency_sample(self, cfg: TrainConfig, number: int) -> npt.NDArray[np.int64]:
        """Sorted ids of the unlabeled pool images a consistency round trains on: all of them, or with
        ``score_limit`` a random sample (new each round, seeded) of that many. Never validation items."""
        unlabeled, sampled = self._unlabeled_sample(cfg, [cfg.seed, number, 11])
        return np.sort(unlabeled if sampled is None else sampled)

    def _unlabeled_sample(
        self, cfg: TrainConfig, rng_key: list[int]
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64] | None]:
        """The unlabeled pool ids, and a random sample of ``score_limit`` of them (``None`` when that covers them
        all or there is no limit)."""
        unlabeled = np.asarray(self.store.unlabeled_item_ids(split="pool"), np.int64)
        if not cfg.score_limit or unlabeled.size <= cfg.score_limit:
            return unlabeled, None
        return unlabeled, np.random.default_rng(rng_key).choice(unlabeled, size=cfg.score_limit, replace=False)

    def _choose_pseudo(
        self, cfg: TrainConfig, y: npt.NDArray[np.int64], num_classes: int, number: int
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.float64]]:
        """Confident unlabeled pool items under the previous model (never validation items)."""
        from .pseudo import choose_pseudo_labels

        empty = (np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0))
        scores = self.scores()
        if scores is None or scores.classes != self.classes:
            return empty
        pool = np.asarray(self.store.unlabeled_item_ids(split="pool"), dtype=np.int64)
        rows = scores.rows(pool)
        pool, rows = pool[rows >= 0], rows[rows >= 0]
        if pool.size == 0:
            return empty
        probs = np.asarray(scores.probs[np.sort(rows)])[np.argsort(np.argsort(rows))]
        counts = np.bincount(y, minlength=num_classes)
        rng = np.random.default_rng([cfg.seed, number, 7])
        return choose_pseudo_labels(
            probs,
            pool,
            counts,
            threshold=cfg.pseudo_threshold,
            cap_ratio=cfg.pseudo_cap,
            rng=rng,
            flat=cfg.pseudo_flat,
        )

    def _refit_head(
        self, model: Any, x: np.ndarray, y: npt.NDArray[np.int64], num_classes: int, geo: dict, cfg: TrainConfig
    ) -> None:
        """SMOTE / ADASYN on the labeled items' embeddings, then a logistic-regression head that scores the pool."""
        import torch

        from .balance import fit_linear_head, resample_embeddings
        from .train import predict_batches, resolve_device

        _, emb = predict_batches(model, x, mean=geo["mean"], std=geo["std"], device=resolve_device(cfg.device))
        xr, yr = resample_embeddings(emb, y, method=cfg.balance, seed=cfg.seed)
        w, b = fit_linear_head(xr, yr, num_classes, seed=cfg.seed)
        with torch.no_grad():
            model.head.weight.copy_(torch.as_tensor(w, dtype=model.head.weight.dtype))
            model.head.bias.copy_(torch.as_tensor(b, dtype=model.head.bias.dtype))

    def _round_metrics(
        self, scores: Scores, train_ids: npt.NDArray[np.int64], y_train: npt.NDArray[np.int64], classes: list[str]
    ) -> dict[str, Any]:
        rows = scores.rows(train_ids)
        keep = rows >= 0
        pred_train = np.asarray(scores.probs[rows[keep]]).argmax(1)
        out: dict[str, Any] = {"train_accuracy": float((pred_train == y_train[keep]).mean()) if keep.any() else None}
        val = self.store.current_labels(split="val")
        if val:
            vids = np.asarray([r["item_id"] for r in val], dtype=np.int64)
            vy = np.asarray([r["position"] for r in val], dtype=np.int64)
            vrows = scores.rows(vids)
            keep = vrows >= 0
            pred = np.asarray(scores.probs[vrows[keep]]).argmax(1)
            out["val"] = classification_metrics(vy[keep], pred, classes)
        else:
            out["val"] = {"n": 0}
        return out

    def _prune_scores(self, number: int) -> None:
        base = self.root / "scores"
        for d in sorted(base.glob("round_*")):
            if d.name.endswith(".tmp"):
                continue
            try:
                n = int(d.name.split("_")[1])
            except ValueError:
                continue
            if n <= number - KEEP_SCORE_ROUNDS:
                shutil.rmtree(d, ignore_errors=True)

    # ------------------------------------------------------------------ status
    def status(self) -> dict[str, Any]:
        """Everything ``alwb status`` shows, JSON-able."""
        st = self.store
        total = st.item_count("ok")
        labeled = st.current_labels(include_none=True)
        by_source = Counter(r["source"] for r in labeled)
        rej = st.rejected()
        reasons = Counter(r["reason"] for r in rej)
        model = self.current_model()
        return {
            "project": str(self.root.resolve()),
            "items": {
                "total": total,
                "labeled": len(labeled),
                "labeled_by_source": dict(by_source),
                "none_of_these": sum(1 for r in labeled if r["class"] is None),
                "unlabeled": total - len(labeled),
                "validation": {
                    "size": len(st.val_item_ids()),
                    "labeled": len(st.current_labels(split="val", include_none=True)),
                },
                "pseudo": len(st.pseudo_labels()),
                "rejected": len(rej),
                "rejected_reasons": dict(reasons.most_common()),
                "rejected_files": [{"path": r["path"], "reason": r["reason"]} for r in rej[:50]],
            },
            "classes": {c: v for c, v in st.label_counts().items()},
            "rounds": [
                {
                    k: r[k]
                    for k in (
                        "number",
                        "strategy",
                        "status",
                        "n_labeled",
                        "n_pseudo",
                        "n_val",
                        "metrics",
                        "timings",
                        "error",
                        "started_at",
                        "finished_at",
                    )
                }
                for r in st.rounds()
            ],
            "model": None
            if model is None
            else {
                "round": model["round"],
                "path": model["path"],
                "arch": model["arch"],
                "geometry": model["config"].get("geometry"),
                "device": model["config"].get("device_used"),
            },
        }
