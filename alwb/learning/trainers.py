"""One trainer per training mode, behind one small interface, and the typed state a round shares with it.

A round (:mod:`alwb.learning.round`) is one sequence of named steps; where the modes differ, a step calls the round's
:class:`Trainer`, chosen once from the plan's :class:`alwb.learning.plan.Geometry` by :func:`trainer_for`:

- :class:`ScratchTrainer`: a CNN on the pixel cache (``cnn6`` / ``resnet18``), warm-started from the previous round;
  with SMOTE / ADASYN its linear head is refitted on resampled embeddings.
- :class:`FinetuneTrainer`: the same on a pretrained backbone's network (``bb:NAME``), saying when a CPU makes it slow.
- :class:`HeadTrainer`: a logistic-regression head on the backbone's cached embeddings (the pool embedded a share a
  round); no network is trained.

Every trainer answers ``gather`` (the labeled items' inputs), ``rows`` (inputs of other items: pseudo-labels),
``warm_start``, ``fit``, ``save`` and ``score``; nothing in a step asks which mode it is in. A round gets what it
needs from its project up front (:class:`RoundInputs`) and never reaches back into :class:`alwb.project.Project`.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import numpy.typing as npt

from ..config import ProjectConfig, TrainConfig
from .data import PixelCache
from .plan import Geometry
from .scores import Scores, ScoreWriter

if TYPE_CHECKING:
    from ..store import Store
    from .embed import EmbeddingCache
    from .head import LinearHead
    from .train import TrainResult

Progress = Callable[[str, int, int], None]
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RoundInputs:
    """What a round takes from its project (:meth:`alwb.project.Project.round_inputs`), read before it starts."""

    root: Path
    store: Store
    classes: list[str]
    #: the project's settings (seed, strategy, batch size …) and the round's training settings
    config: ProjectConfig
    cfg: TrainConfig
    #: how this round trains (the plan's decision) and how the last round did
    geometry: Geometry
    previous_geometry: Geometry | None
    #: the last finished round's model record (its path absolute) and scores; None before the first round
    previous_model: dict[str, Any] | None
    previous_scores: Scores | None


@dataclass
class RoundState:
    """What the steps of one round and its trainer share. The first block is set up front; each step fills in its
    own fields."""

    inp: RoundInputs
    trainer: Trainer
    cfg: TrainConfig
    number: int
    geo: Geometry
    from_scratch: bool = False
    progress: Progress | None = None
    pause: Callable[[], None] | None = None
    verbose: bool = False
    t_start: float = field(default_factory=time.perf_counter)
    notes: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    #: when steps ended or began, for the timings (not stored)
    marks: dict[str, float] = field(default_factory=dict)
    # gather: the labeled pool items, their class positions and inputs (pixels or embeddings)
    ids: npt.NDArray[np.int64] = field(default_factory=lambda: np.zeros(0, np.int64))
    y: npt.NDArray[np.int64] = field(default_factory=lambda: np.zeros(0, np.int64))
    x: np.ndarray | None = None
    # pseudo_labels: what the model trains on (the human labels, then pseudo-labels)
    x_train: np.ndarray | None = None
    y_train: npt.NDArray[np.int64] | None = None
    sample_weights: npt.NDArray[np.float64] | None = None
    pseudo_rows: list[tuple[int, str, float]] = field(default_factory=list)
    #: whether the validation sample let this round use pseudo-labels, and why
    # (:func:`alwb.learning.round.check_pseudo`)
    pseudo_check: dict[str, Any] | None = None
    # save_model
    model_path: Path | None = None
    # score
    scores: Scores | None = None
    writer: ScoreWriter | None = None
    # metrics
    metrics: dict[str, Any] = field(default_factory=dict)

    @property
    def classes(self) -> list[str]:
        """Class names in model order."""
        return self.inp.classes

    def pause_here(self) -> None:
        """Give way to a person labeling (background rounds), if the round was asked to."""
        if self.pause is not None:
            self.pause()

    def tick(self, phase: str) -> Callable[[int, int, float], None] | None:
        """A training/scoring progress callback reporting ``phase``, or None without a progress sink."""
        if self.progress is None:
            return None
        progress = self.progress

        def tick(done: int, total: int, _value: float) -> None:
            progress(phase, done, total)

        return tick

    @property
    def model_file(self) -> Path:
        """Where this round's model lives once saved."""
        return self.inp.root / "models" / f"round_{self.number:04d}.safetensors"

    def read_labeled(self, rows: Callable[[npt.NDArray[np.int64]], np.ndarray], t0: float) -> None:
        """The labeled pool items, their class positions and their inputs (``rows``); the data step's time since
        ``t0``. Called by a trainer's ``gather`` once its cache holds them (items rejected meanwhile are gone)."""
        labels = self.inp.store.current_labels(split="pool")
        self.ids = np.asarray([row["item_id"] for row in labels], dtype=np.int64)
        self.y = np.asarray([row["position"] for row in labels], dtype=np.int64)
        self.x = rows(self.ids)
        self.marks["data_done"] = time.perf_counter()
        self.timings["data_seconds"] = self.marks["data_done"] - t0
        self.pause_here()


class Trainer(Protocol):
    """How one training mode gathers its inputs, trains, saves and scores (the steps of :mod:`alwb.learning.round`)."""

    def gather(self, r: RoundState) -> None:
        """Make the inputs of every item available and read the labeled ones (:meth:`RoundState.read_labeled`)."""

    def rows(self, ids: npt.NDArray[np.int64]) -> np.ndarray:
        """Inputs of these items (pseudo-labelled ones join the training data)."""

    def warm_start(self, r: RoundState) -> None:
        """Start from the previous round's model where the mode can."""

    @property
    def warm_state(self) -> dict[str, Any] | None:
        """The weights the fit starts from (None: a cold start)."""

    def fit(self, r: RoundState) -> None:
        """Train on ``r.x_train`` / ``r.y_train`` (with ``r.sample_weights``)."""

    def save(self, r: RoundState, path: Path) -> None:
        """Write the trained model to ``path`` (safetensors)."""

    def score(self, r: RoundState) -> None:
        """Probabilities and embeddings of the items to score, into ``r.writer`` (then ``r.scores``)."""

    def fit_info(self) -> dict[str, Any]:
        """How the model was fitted: epochs, warm start, device, mixed precision."""


# -------------------------------------------------------------------------------------------- networks on pixels
class ScratchTrainer:
    """A network trained on the pixel cache at the model's geometry (the from-scratch CNN)."""

    def __init__(self) -> None:
        self.cache: PixelCache | None = None
        self.result: TrainResult | None = None
        self.init_state: dict[str, Any] | None = None

    def gather(self, r: RoundState) -> None:
        """The pixel cache at the model's geometry (synced with the store) and, the first time, its normalisation.
        Items rejected while decoding leave the store here, so labels are read after."""
        t0 = time.perf_counter()
        self.cache = PixelCache(r.inp.root, r.geo.image_size, r.geo.channels)
        self.cache.sync(r.inp.store, progress=r.verbose)
        if r.geo.mean is None:
            mean, std = self.cache.stats(seed=r.cfg.seed)
            r.geo = replace(r.geo, mean=tuple(mean), std=tuple(std))
        r.read_labeled(self.rows, t0)

    def rows(self, ids: npt.NDArray[np.int64]) -> np.ndarray:
        assert self.cache is not None
        return self.cache.rows(ids)

    def warm_start(self, r: RoundState) -> None:
        """The previous round's weights, when warm starting and the architecture and input are unchanged."""
        prev = r.inp.previous_model
        if r.from_scratch or not r.cfg.warm_start or prev is None:
            return
        from safetensors.torch import load_file

        pgeo = prev["config"].get("geometry") or {}
        same = all(pgeo.get(k) == getattr(r.geo, k) for k in ("arch", "image_size", "channels"))
        if same and Path(prev["path"]).is_file():
            self.init_state = load_file(prev["path"])
        else:
            r.notes.append("model settings changed: trained from scratch")

    @property
    def warm_state(self) -> dict[str, Any] | None:
        return self.init_state

    def _progress(self, r: RoundState) -> Callable[[int, int, float], None] | None:
        return r.tick("train")

    def fit(self, r: RoundState) -> None:
        """Train (warm-started when there is a state), with class weights if asked for; with ``balance`` smote or
        adasyn, refit the network's linear head on resampled embeddings of the labeled items (logistic
        regression), so the pool is scored by a head trained on balanced classes."""
        from .train import train_model

        assert r.x_train is not None and r.y_train is not None
        class_weights = None
        if r.cfg.balance == "weights":
            from .balance import class_weights as cw

            class_weights = cw(r.y_train, len(r.classes))
        self.result = train_model(
            r.x_train,
            r.y_train,
            arch=r.geo.arch,
            num_classes=len(r.classes),
            mean=r.geo.mean,
            std=r.geo.std,
            cfg=r.cfg,
            init_state=self.init_state,
            class_weights=class_weights,
            sample_weights=r.sample_weights,
            progress=self._progress(r),
            pause=r.pause,
        )
        self._after_fit(r)
        if r.cfg.balance in ("smote", "adasyn"):
            self._balance_head(r)

    def _after_fit(self, r: RoundState) -> None:
        """What a mode says once its network trained (nothing for the small CNN)."""

    def _balance_head(self, r: RoundState) -> None:
        import torch

        from .balance import fit_linear_head, resample_embeddings
        from .train import predict_batches, resolve_device

        assert self.result is not None and r.x is not None
        model = self.result.model
        _, emb = predict_batches(model, r.x, mean=r.geo.mean, std=r.geo.std, device=resolve_device(r.cfg.device))
        xr, yr = resample_embeddings(emb, r.y, method=r.cfg.balance, seed=r.cfg.seed)
        w, b = fit_linear_head(xr, yr, len(r.classes), seed=r.cfg.seed)
        with torch.no_grad():
            model.head.weight.copy_(torch.as_tensor(w, dtype=model.head.weight.dtype))
            model.head.bias.copy_(torch.as_tensor(b, dtype=model.head.bias.dtype))

    def save(self, r: RoundState, path: Path) -> None:
        from safetensors.torch import save_file

        assert self.result is not None
        state = {k: v.detach().cpu().contiguous() for k, v in self.result.model.state_dict().items()}
        save_file(state, str(path), metadata={"arch": r.geo.arch, "classes": json.dumps(r.classes)})

    def score(self, r: RoundState) -> None:
        """Every item (or the labeled and validation items, the stop set and a sample of the unlabeled pool, with
        ``score_limit``) through the network in eval mode, into memory-mapped files."""
        import torch

        from .train import predict_batches, resolve_device, uses_tta

        assert self.cache is not None and self.result is not None
        score_ids = ids_to_score(r.inp, self.cache.ids, r.cfg, r.number)
        sampled = len(score_ids) < len(self.cache.ids)
        emb_dim = self.result.model.emb_dim
        r.writer = ScoreWriter(r.inp.root, r.number, score_ids, r.classes, emb_dim, sampled=sampled)
        with torch.inference_mode():
            predict_batches(
                self.result.model,
                _CacheRows(self.cache, score_ids) if sampled else self.cache.pixels,
                mean=r.geo.mean,
                std=r.geo.std,
                device=resolve_device(r.cfg.device),
                out_probs=r.writer.probs,
                out_emb=r.writer.emb,
                progress=r.tick("score"),
                pause=r.pause,
                tta_flip=uses_tta(r.cfg),
            )
        r.scores = r.writer.finish()

    def fit_info(self) -> dict[str, Any]:
        assert self.result is not None
        res = self.result
        return {"epochs_run": res.epochs, "warm": res.warm, "device_used": res.device, "amp": res.amp}


#: A CPU fine-tuning round expected to train longer than this (seconds) is announced before the person waits.
SLOW_ROUND_S = 60.0


def training_estimate(t0: float, epoch_ends: Sequence[float], total: int) -> float:
    """Seconds a training run of ``total`` epochs that started at ``t0`` will take in all, from the times its
    first epochs ended: the epochs still to come at the pace of the latest one (the first carries start-up costs)."""
    if not epoch_ends:
        raise ValueError("no epoch has ended yet")
    per = epoch_ends[-1] - (epoch_ends[-2] if len(epoch_ends) > 1 else t0)
    return epoch_ends[-1] - t0 + per * max(0, total - len(epoch_ends))


class FinetuneTrainer(ScratchTrainer):
    """A pretrained backbone's whole network trained on the pixel cache; on a CPU it says how long it takes."""

    def _progress(self, r: RoundState) -> Callable[[int, int, float], None] | None:
        """After the second epoch, say how long the round's training will take when that is over
        :data:`SLOW_ROUND_S` (fine-tuning on a CPU is slow: the person should know before waiting)."""
        from .train import resolve_device

        progress = r.tick("train")
        if str(resolve_device(r.cfg.device)) != "cpu":
            return progress
        t0 = time.perf_counter()
        ends: list[float] = []

        def tick(done: int, total: int, loss: float) -> None:
            ends.append(time.perf_counter())
            if done == 2 and total > 2:
                seconds = training_estimate(t0, ends, total)
                if seconds > SLOW_ROUND_S:
                    msg = (
                        f"fine-tuning {r.geo.backbone} on the CPU: about {seconds / 60:.1f} min for this round's "
                        f"{total} epochs"
                    )
                    r.notes.append(msg)
                    log.warning("%s (mode head is much faster on a CPU)", msg)
            if progress is not None:
                progress(done, total, loss)

        return tick

    def _after_fit(self, r: RoundState) -> None:
        assert self.result is not None and r.y_train is not None
        if self.result.device == "cpu":
            r.notes.append(
                f"fine-tuning {r.geo.backbone} on the CPU took {self.result.seconds:.0f} s for {self.result.epochs} "
                f"epoch(s) over {len(r.y_train)} images; a round with as many labels will take about as long (mode "
                "head is faster)"
            )


# ---------------------------------------------------------------------------------------- a head on embeddings
#: A ``head`` round embeds at most this many images beyond the labeled ones and the stop set, drawn at random (seeded
#: by the round): on a CPU (about 100 images/s with ONNX Runtime) the first round on a large folder fits its head
#: within a minute or so instead of after the whole pool, and the next rounds embed the rest the same way.
EMBED_PER_ROUND = 5000


class HeadTrainer:
    """A logistic-regression head on the backbone's cached embeddings: the backbone is fixed, so there is no warm
    start and no network pass when scoring."""

    def __init__(self) -> None:
        self.backbone: Any = None
        self.cache: EmbeddingCache | None = None
        self.head: LinearHead | None = None

    def _embed_this_round(self, r: RoundState, items: list[tuple[int, str]]) -> list[tuple[int, str]]:
        """The items this round embeds: every one when what is missing fits :data:`EMBED_PER_ROUND`; else the
        labeled items (validation ones too) and the stop set, plus that many others at random."""
        from .embed import EmbeddingCache

        have = set(EmbeddingCache.for_backbone(r.inp.root, self.backbone).embedded_ids().tolist())
        pending = [(i, p) for i, p in items if i not in have]
        if len(pending) <= EMBED_PER_ROUND:
            return pending
        must = set(r.inp.store.labeled_item_ids()) | set(stop_items(r.inp, r.cfg).tolist())
        rest = [(i, p) for i, p in pending if i not in must]
        rng = np.random.default_rng([r.cfg.seed, r.number, 17])
        pick = rng.choice(len(rest), size=min(EMBED_PER_ROUND, len(rest)), replace=False)
        chosen = [(i, p) for i, p in pending if i in must] + [rest[k] for k in sorted(pick.tolist())]
        left = len(pending) - len(chosen)
        r.notes.append(
            f"embedded {len(have) + len(chosen)} of {len(items)} images so far (the labeled ones first); the next "
            f"rounds embed the other {left}, {EMBED_PER_ROUND} a round"
        )
        return sorted(chosen)

    def gather(self, r: RoundState) -> None:
        """Embed the items not yet in the project's cache for the backbone (at most :data:`EMBED_PER_ROUND` of the
        unlabeled ones a round, so that a large folder's first head round comes early; later rounds embed the rest
        and then only new items), mark unreadable images rejected with their reason, and read the labeled items'
        embeddings."""
        from . import backbones
        from .embed import EmbeddingCache, digests_from_store, embed_items, items_from_store
        from .train import resolve_device

        t0 = time.perf_counter()
        store = r.inp.store
        device = str(resolve_device(r.cfg.device))
        self.backbone = backbones.load(
            str(r.geo.backbone), device=device, download=False, quiet=True, framing=r.geo.framing
        )
        todo = self._embed_this_round(r, items_from_store(store, located=False))
        report = embed_items(
            r.inp.root,
            todo,
            self.backbone,
            device=device,
            progress=r.progress,
            threads=1 if device == "cpu" else None,
            images=store.image_root(),
            digests=digests_from_store(store),  # a file replaced since import is never embedded
        )
        if report.unreadable:
            store.reject_items(sorted(report.unreadable.items()))
            r.notes.append(f"{len(report.unreadable)} unreadable image(s) rejected while embedding")
        if report.embedded and report.runtime == "onnxruntime":
            r.notes.append(
                f"embedded {report.embedded} image(s) with ONNX Runtime at {report.images_per_second:.0f} images/s "
                f"(largest difference from PyTorch on this run's check: {report.parity:.1e})"
            )
        r.timings["embedded"] = float(report.embedded)
        self.cache = EmbeddingCache.for_backbone(r.inp.root, self.backbone)
        r.read_labeled(self.rows, t0)

    def rows(self, ids: npt.NDArray[np.int64]) -> np.ndarray:
        assert self.cache is not None
        return self.cache.rows(ids)

    def warm_start(self, r: RoundState) -> None:
        """Nothing: a head is refitted on the fixed backbone's embeddings each round."""

    @property
    def warm_state(self) -> dict[str, Any] | None:
        return None

    def fit(self, r: RoundState) -> None:
        """Logistic regression on the embeddings (class weights, SMOTE or ADASYN on them with ``balance``)."""
        from .head import DEFAULT_C
        from .head import fit_head as fit

        assert r.x_train is not None and r.y_train is not None and self.cache is not None
        _, pool = self.cache.all()
        self.head = fit(
            r.x_train,
            r.y_train,
            len(r.classes),
            balance=r.cfg.balance,
            c=self.backbone.spec.head_c or DEFAULT_C,  # the backbone's own strength where it has one
            seed=r.cfg.seed,
            standardise_with=pool,
            meta={**self.backbone.card(), "classes": r.classes, "mode": "head"},
        )

    def save(self, r: RoundState, path: Path) -> None:
        """The head alone (the backbone's weights are the verified file named in the round's geometry)."""
        assert self.head is not None
        self.head.save(path)

    def score(self, r: RoundState) -> None:
        """Probabilities from the cached embeddings (no network pass); the embeddings are the backbone's, for the
        ``diverse`` strategy."""
        assert self.cache is not None and self.head is not None
        embedded = self.cache.embedded_ids()
        score_ids = ids_to_score(r.inp, np.sort(embedded), r.cfg, r.number)
        sampled = len(score_ids) < len(embedded)
        dim = self.backbone.embedding_dim
        r.writer = ScoreWriter(r.inp.root, r.number, score_ids, r.classes, dim, sampled=sampled)
        chunk = 8192
        for start in range(0, len(score_ids), chunk):
            r.pause_here()
            emb = self.cache.rows(score_ids[start : start + chunk])
            r.writer.emb[start : start + len(emb)] = emb
            r.writer.probs[start : start + len(emb)] = self.head.predict_proba(emb)
        r.scores = r.writer.finish()

    def fit_info(self) -> dict[str, Any]:
        return {"epochs_run": 1, "warm": False, "device_used": "cpu", "amp": False}


def trainer_for(geo: Geometry) -> Trainer:
    """The trainer of the plan's mode."""
    if geo.is_head:
        return HeadTrainer()
    if geo.mode == "finetune":
        return FinetuneTrainer()
    return ScratchTrainer()


# ------------------------------------------------------------------------------------------ what trainers score
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


def unlabeled_sample(
    store: Store, cfg: TrainConfig, rng_key: list[int]
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64] | None]:
    """The unlabeled pool ids, and a random sample of ``score_limit`` of them (``None`` when that covers them all
    or there is no limit)."""
    unlabeled = np.asarray(store.unlabeled_item_ids(split="pool"), np.int64)
    if not cfg.score_limit or unlabeled.size <= cfg.score_limit:
        return unlabeled, None
    return unlabeled, np.random.default_rng(rng_key).choice(unlabeled, size=cfg.score_limit, replace=False)


def ids_to_score(
    inp: RoundInputs, all_ids: npt.NDArray[np.int64], cfg: TrainConfig, number: int
) -> npt.NDArray[np.int64]:
    """Sorted ids to score this round: everything, or with ``score_limit`` every labeled and validation item, a
    random sample (new each round, seeded) of that many unlabeled pool items, and the fixed stop set (no larger than
    ``score_limit`` either): at most twice ``score_limit`` unlabeled items."""
    unlabeled, sampled = unlabeled_sample(inp.store, cfg, [cfg.seed, number])
    if sampled is None:
        return all_ids
    # the fixed stop set is scored every round, so consecutive rounds' predictions can be compared
    # (alwb.learning.advice)
    keep = np.union1d(np.setdiff1d(all_ids, unlabeled, assume_unique=True), sampled)
    keep = np.union1d(keep, stop_items(inp, cfg))
    return keep[np.isin(keep, all_ids)]


def stop_items(inp: RoundInputs, cfg: TrainConfig) -> npt.NDArray[np.int64]:
    """The project's stop set (:func:`alwb.learning.advice.stop_set` of the pool, validation items left out), no
    larger than
    ``score_limit`` so a small limit keeps scoring small."""
    from .advice import STOP_SET_SIZE, stop_set

    pool = np.setdiff1d(np.asarray(inp.store.item_ids(), np.int64), inp.store.val_item_ids())
    size = min(STOP_SET_SIZE, cfg.score_limit) if cfg.score_limit else STOP_SET_SIZE
    return stop_set(pool, inp.config.seed, size=size)
