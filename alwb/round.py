"""One training round, as a sequence of named steps over a shared :class:`RoundState`.

::

    gather_training_data → warm_start_state → pseudo_labels → fit → balance_head
        → save_model → score → metrics → commit              (any failure: rollback)

Each step reads what earlier steps left in the state and adds its own part. Nothing a round writes counts until
``commit``: the model file and the scores are written beside their final names and the store records the round in
one transaction; ``rollback`` removes every file the round wrote and records the round as failed with its error,
so the previous model and scores stay current. :meth:`alwb.loop.Project.train` is the front door.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from .config import TrainConfig
from .data import PixelCache
from .errors import NoLabelsError
from .evaluate import classification_metrics
from .plan import Geometry
from .scores import Scores, ScoreWriter, discard_round_scores, prune_scores

if TYPE_CHECKING:
    from .loop import Project
    from .train import TrainResult

Progress = Callable[[str, int, int], None]
log = logging.getLogger(__name__)


@dataclass
class RoundSummary:
    """What :meth:`alwb.loop.Project.train` reports."""

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


@dataclass
class RoundState:
    """What the steps of one round share. The first block is set up front; each step fills in its own fields."""

    project: Project
    cfg: TrainConfig
    number: int
    geo: Geometry
    classes: list[str]
    from_scratch: bool = False
    progress: Progress | None = None
    pause: Callable[[], None] | None = None
    verbose: bool = False
    t_start: float = field(default_factory=time.perf_counter)
    notes: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    #: when steps ended or began, for the timings (not stored)
    marks: dict[str, float] = field(default_factory=dict)
    # gather_training_data: the labeled pool items, their class positions and pixels
    cache: PixelCache | None = None
    ids: npt.NDArray[np.int64] = field(default_factory=lambda: np.zeros(0, np.int64))
    y: npt.NDArray[np.int64] = field(default_factory=lambda: np.zeros(0, np.int64))
    x: np.ndarray | None = None
    # warm_start_state
    init_state: dict[str, Any] | None = None
    # pseudo_labels: what the model trains on (the human labels, then pseudo-labels)
    x_train: np.ndarray | None = None
    y_train: npt.NDArray[np.int64] | None = None
    sample_weights: npt.NDArray[np.float64] | None = None
    pseudo_rows: list[tuple[int, str, float]] = field(default_factory=list)
    #: whether the validation sample let this round use pseudo-labels, and why (:func:`check_pseudo`)
    pseudo_check: dict[str, Any] | None = None
    # fit
    result: TrainResult | None = None
    #: head mode: the loaded backbone, its embedding cache and the fitted head
    backbone: Any = None
    head: Any = None
    # save_model
    model_path: Path | None = None
    # score
    scores: Scores | None = None
    writer: ScoreWriter | None = None
    # metrics
    metrics: dict[str, Any] = field(default_factory=dict)

    def fit_info(self) -> dict[str, Any]:
        """How the model was fitted: epochs, warm start, device, mixed precision (a head: one fit on the CPU)."""
        if self.result is None:
            return {"epochs_run": 1, "warm": False, "device_used": "cpu", "amp": False}
        res = self.result
        return {"epochs_run": res.epochs, "warm": res.warm, "device_used": res.device, "amp": res.amp}

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
        return self.project.root / "models" / f"round_{self.number:04d}.safetensors"


# ---------------------------------------------------------------------------------------------------- the steps
def gather_training_data(r: RoundState) -> None:
    """The pixel cache at the model's geometry (synced with the store), its normalisation, and the labeled pool
    items' pixels and classes. Items rejected while decoding leave the store here, so labels are read after."""
    t0 = time.perf_counter()
    r.cache = r.project.pixel_cache(r.geo, progress=r.verbose)
    if r.geo.mean is None:
        mean, std = r.cache.stats(seed=r.cfg.seed)
        r.geo = replace(r.geo, mean=tuple(mean), std=tuple(std))
    _read_labeled(r, t0)


def _read_labeled(r: RoundState, t0: float) -> None:
    """The labeled pool items, their class positions and their rows of ``r.cache`` (pixels or embeddings); the data
    step's time since ``t0``."""
    assert r.cache is not None
    labels = r.project.store.current_labels(split="pool")
    r.ids = np.asarray([row["item_id"] for row in labels], dtype=np.int64)
    r.y = np.asarray([row["position"] for row in labels], dtype=np.int64)
    r.x = r.cache.rows(r.ids)
    r.marks["data_done"] = time.perf_counter()
    r.timings["data_seconds"] = r.marks["data_done"] - t0
    r.pause_here()


def warm_start_state(r: RoundState) -> None:
    """The previous round's weights, when warm starting and the model's architecture and input are unchanged."""
    prev = r.project.current_model()
    if r.from_scratch or not r.cfg.warm_start or prev is None:
        return
    from safetensors.torch import load_file

    pgeo = prev["config"].get("geometry") or {}
    same = all(pgeo.get(k) == getattr(r.geo, k) for k in ("arch", "image_size", "channels"))
    if same and Path(prev["path"]).is_file():
        r.init_state = load_file(prev["path"])
    else:
        r.notes.append("model settings changed: trained from scratch")


def pseudo_labels(r: RoundState) -> None:
    """With ``cfg.pseudo``: confident unlabeled pool items under the previous model join the training data, and
    (unless the epochs are fixed) add training steps instead of taking them from the human labels."""
    r.x_train, r.y_train = r.x, r.y
    if not r.cfg.pseudo:
        return
    check = check_pseudo(r.project, r.cfg)
    r.pseudo_check = check
    if not check["use"]:
        r.notes.append(f"pseudo-labels off this round: {check['reason']}")
        return
    pid, pcls, pconf = choose_pseudo(r.project, r.cfg, r.y, len(r.classes), r.number)
    if not pid.size:
        return
    assert r.cache is not None and r.x is not None
    r.x_train = np.concatenate([r.x, r.cache.rows(pid)])
    r.y_train = np.concatenate([r.y, pcls])
    r.sample_weights = np.concatenate([np.ones(len(r.y)), np.ones(len(pid))])
    r.pseudo_rows = [(int(i), r.classes[int(c)], float(p)) for i, c, p in zip(pid, pcls, pconf, strict=True)]
    if not r.cfg.epochs:
        epochs = epochs_with_extra(len(r.y), len(r.y_train), r.cfg, r.geo, r.init_state)
        r.cfg = r.cfg.with_(epochs=epochs)


#: A CPU fine-tuning round expected to train longer than this (seconds) is announced before the person waits.
SLOW_ROUND_S = 60.0


def training_estimate(t0: float, epoch_ends: Sequence[float], total: int) -> float:
    """Seconds a training run of ``total`` epochs that started at ``t0`` will take in all, from the times its
    first epochs ended: the epochs still to come at the pace of the latest one (the first carries start-up costs)."""
    if not epoch_ends:
        raise ValueError("no epoch has ended yet")
    per = epoch_ends[-1] - (epoch_ends[-2] if len(epoch_ends) > 1 else t0)
    return epoch_ends[-1] - t0 + per * max(0, total - len(epoch_ends))


def _with_estimate(
    r: RoundState, progress: Callable[[int, int, float], None] | None
) -> Callable[[int, int, float], None]:
    """A training progress callback that, after the second epoch, says how long the round's training will take
    when that is over :data:`SLOW_ROUND_S` (fine-tuning on a CPU is slow: the person should know before waiting)."""
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


def fit(r: RoundState) -> None:
    """Train the model (warm-started from ``init_state`` when there is one), with class weights if asked for."""
    from .train import resolve_device, train_model

    assert r.x_train is not None and r.y_train is not None
    class_weights = None
    if r.cfg.balance == "weights":
        from .balance import class_weights as cw

        class_weights = cw(r.y_train, len(r.classes))
    progress = r.tick("train")
    if r.geo.mode == "finetune" and str(resolve_device(r.cfg.device)) == "cpu":
        progress = _with_estimate(r, progress)
    r.result = train_model(
        r.x_train,
        r.y_train,
        arch=r.geo.arch,
        num_classes=len(r.classes),
        mean=r.geo.mean,
        std=r.geo.std,
        cfg=r.cfg,
        init_state=r.init_state,
        class_weights=class_weights,
        sample_weights=r.sample_weights,
        progress=progress,
        pause=r.pause,
    )
    if r.geo.mode == "finetune" and r.result.device == "cpu":
        r.notes.append(
            f"fine-tuning {r.geo.backbone} on the CPU took {r.result.seconds:.0f} s for {r.result.epochs} epoch(s) "
            f"over {len(r.y_train)} images; a round with as many labels will take about as long (mode head is faster)"
        )


def balance_head(r: RoundState) -> None:
    """With ``balance`` smote or adasyn: resample the labeled items' embeddings and refit the model's head on them
    (logistic regression), so the pool is scored by a head trained on balanced classes."""
    if r.cfg.balance in ("smote", "adasyn"):
        import torch

        from .balance import fit_linear_head, resample_embeddings
        from .train import predict_batches, resolve_device

        assert r.result is not None and r.x is not None
        model = r.result.model
        _, emb = predict_batches(model, r.x, mean=r.geo.mean, std=r.geo.std, device=resolve_device(r.cfg.device))
        xr, yr = resample_embeddings(emb, r.y, method=r.cfg.balance, seed=r.cfg.seed)
        w, b = fit_linear_head(xr, yr, len(r.classes), seed=r.cfg.seed)
        with torch.no_grad():
            model.head.weight.copy_(torch.as_tensor(w, dtype=model.head.weight.dtype))
            model.head.bias.copy_(torch.as_tensor(b, dtype=model.head.bias.dtype))
    r.timings["train_seconds"] = time.perf_counter() - r.marks["data_done"]


def save_model(r: RoundState) -> None:
    """The weights as safetensors, written beside the final name and renamed into place."""
    from safetensors.torch import save_file

    assert r.result is not None
    r.marks["save_start"] = time.perf_counter()
    path = r.model_file
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    state = {k: v.detach().cpu().contiguous() for k, v in r.result.model.state_dict().items()}
    save_file(state, str(tmp), metadata={"arch": r.geo.arch, "classes": json.dumps(r.classes)})
    os.replace(tmp, path)
    r.model_path = path


def score(r: RoundState) -> None:
    """Probabilities and embeddings of every item (or of the labeled and validation items and a sample of the
    unlabeled pool, with ``score_limit``), eval mode, into memory-mapped files."""
    import torch

    from .train import predict_batches, resolve_device, uses_tta

    assert r.cache is not None and r.result is not None
    score_ids = ids_to_score(r.project, r.cache.ids, r.cfg, r.number)
    sampled = len(score_ids) < len(r.cache.ids)
    r.writer = ScoreWriter(r.project.root, r.number, score_ids, r.classes, r.result.model.emb_dim, sampled=sampled)
    with torch.inference_mode():
        predict_batches(
            r.result.model,
            _CacheRows(r.cache, score_ids) if sampled else r.cache.pixels,
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
    r.timings["score_seconds"] = time.perf_counter() - r.marks["save_start"]


def metrics(r: RoundState) -> None:
    """Accuracy on the training labels and the validation metrics (with their interval) of the scored model."""
    assert r.scores is not None
    r.metrics = round_metrics(r.project, r.scores, r.ids, r.y, r.classes)
    if r.pseudo_check is not None:
        r.metrics["pseudo_check"] = r.pseudo_check
    st = round_stability(r.project, r.scores, r.ids, r.cfg)
    if st is not None:
        r.metrics["stability"] = st
    if r.project.config.strategy == "auto":
        r.metrics["handover"] = handover(r.project, r.scores, r.ids, r.y, len(r.classes), r.number)
        r.notes.append(f"auto strategy: {r.metrics['handover']['reason']}")
    r.timings["round_seconds"] = time.perf_counter() - r.t_start


def commit(r: RoundState) -> None:
    """Publish the scores, then record the round, its model and its pseudo-labels in one transaction."""
    assert r.writer is not None and r.model_path is not None
    config = {**r.cfg.to_dict(), "geometry": r.geo.to_dict(), **r.fit_info()}
    r.writer.publish()
    store = r.project.store
    store.set_meta("geometry", r.geo.to_dict())
    with store.transaction():  # pseudo-labels and the round's result land together or not at all
        store.replace_pseudo_labels(r.pseudo_rows, r.number)
        store.finish_round(
            r.number,
            model_path=r.model_path.relative_to(r.project.root).as_posix(),
            arch=r.geo.arch,
            config=config,
            metrics=r.metrics,
            timings=r.timings,
            n_labeled=len(r.ids),
            n_pseudo=len(r.pseudo_rows),
            n_val=int(r.metrics.get("val", {}).get("n") or 0),
        )


def rollback(r: RoundState, exc: BaseException) -> None:
    """Remove every file the round wrote (half-written or already renamed) and record it as failed."""
    discard_round_scores(r.project.root, r.number)
    r.model_file.with_suffix(".tmp").unlink(missing_ok=True)
    r.model_file.unlink(missing_ok=True)
    r.project.store.fail_round(r.number, f"{type(exc).__name__}: {exc}")


# ------------------------------------------------------------------------------ head mode: a classifier on embeddings
#: A ``head`` round embeds at most this many images beyond the labeled ones and the stop set, drawn at random (seeded
#: by the round): on a CPU (about 100 images/s with ONNX Runtime) the first round on a large folder fits its head
#: within a minute or so instead of after the whole pool, and the next rounds embed the rest the same way.
EMBED_PER_ROUND = 5000


def _embed_this_round(
    r: RoundState, items: list[tuple[int, str]], embedded: npt.NDArray[np.int64]
) -> list[tuple[int, str]]:
    """The items this round embeds: every one when what is missing fits :data:`EMBED_PER_ROUND`; else the labeled
    items (validation ones too) and the stop set, plus that many others at random."""
    have = set(embedded.tolist())
    pending = [(i, p) for i, p in items if i not in have]
    if len(pending) <= EMBED_PER_ROUND:
        return pending
    must = set(r.project.store.labeled_item_ids()) | set(_stop_items(r.project, r.cfg).tolist())
    rest = [(i, p) for i, p in pending if i not in must]
    rng = np.random.default_rng([r.cfg.seed, r.number, 17])
    pick = rng.choice(len(rest), size=min(EMBED_PER_ROUND, len(rest)), replace=False)
    chosen = [(i, p) for i, p in pending if i in must] + [rest[k] for k in sorted(pick.tolist())]
    left = len(pending) - len(chosen)
    r.notes.append(
        f"embedded {len(have) + len(chosen)} of {len(items)} images so far (the labeled ones first); the next rounds "
        f"embed the other {left}, {EMBED_PER_ROUND} a round"
    )
    return sorted(chosen)


def gather_embeddings(r: RoundState) -> None:
    """Embed the items not yet in the project's cache for the backbone (at most :data:`EMBED_PER_ROUND` of the
    unlabeled ones a round, so that a large folder's first head round comes early; later rounds embed the rest and
    then only new items), mark unreadable images rejected with their reason, and read the labeled items'
    embeddings."""
    from . import backbones
    from .embed import EmbeddingCache, digests_from_store, embed_items, items_from_store
    from .train import resolve_device

    t0 = time.perf_counter()
    device = str(resolve_device(r.cfg.device))
    r.backbone = backbones.load(str(r.geo.backbone), device=device, download=False, quiet=True)
    items = items_from_store(r.project.store, located=False)
    todo = _embed_this_round(r, items, EmbeddingCache.for_backbone(r.project.root, r.backbone).embedded_ids())
    report = embed_items(
        r.project.root,
        todo,
        r.backbone,
        device=device,
        progress=r.progress,
        threads=1 if device == "cpu" else None,
        images=r.project.store.image_root(),
        digests=digests_from_store(r.project.store),  # a file replaced since import is never embedded
    )
    if report.unreadable:
        r.project.store.reject_items(sorted(report.unreadable.items()))
        r.notes.append(f"{len(report.unreadable)} unreadable image(s) rejected while embedding")
    if report.embedded and report.runtime == "onnxruntime":
        r.notes.append(
            f"embedded {report.embedded} image(s) with ONNX Runtime at {report.images_per_second:.0f} images/s "
            f"(largest difference from PyTorch on this run's check: {report.parity:.1e})"
        )
    r.timings["embedded"] = float(report.embedded)
    r.cache = EmbeddingCache.for_backbone(r.project.root, r.backbone)
    _read_labeled(r, t0)


def fit_head(r: RoundState) -> None:
    """A logistic-regression head on the embeddings (class weights, SMOTE or ADASYN on them with ``balance``)."""
    from .head import DEFAULT_C
    from .head import fit_head as fit

    assert r.x_train is not None and r.y_train is not None and r.cache is not None
    _, pool = r.cache.all()
    r.head = fit(
        r.x_train,
        r.y_train,
        len(r.classes),
        balance=r.cfg.balance,
        c=r.backbone.spec.head_c or DEFAULT_C,  # the backbone's own strength where it has one (EfficientNet-Lite)
        seed=r.cfg.seed,
        standardise_with=pool,
        meta={**r.backbone.card(), "classes": r.classes, "mode": "head"},
    )
    r.timings["train_seconds"] = time.perf_counter() - r.marks["data_done"]


def save_head(r: RoundState) -> None:
    """The head as safetensors (the backbone's weights are the verified file named in the round's geometry)."""
    r.marks["save_start"] = time.perf_counter()
    path = r.model_file
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    r.head.save(tmp)
    os.replace(tmp, path)
    r.model_path = path


def score_head(r: RoundState) -> None:
    """Probabilities of the scored items from their cached embeddings (no network pass); the embeddings are the
    backbone's, for the ``diverse`` strategy."""
    assert r.cache is not None and r.head is not None
    score_ids = ids_to_score(r.project, np.sort(r.cache.embedded_ids()), r.cfg, r.number)
    sampled = len(score_ids) < len(r.cache.embedded_ids())
    r.writer = ScoreWriter(r.project.root, r.number, score_ids, r.classes, r.backbone.embedding_dim, sampled=sampled)
    chunk = 8192
    for start in range(0, len(score_ids), chunk):
        r.pause_here()
        emb = r.cache.rows(score_ids[start : start + chunk])
        r.writer.emb[start : start + len(emb)] = emb
        r.writer.probs[start : start + len(emb)] = r.head.predict_proba(emb)
    r.scores = r.writer.finish()
    r.timings["score_seconds"] = time.perf_counter() - r.marks["save_start"]


#: the steps of a ``head`` round: the backbone is fixed, so there is no warm start and no separate balancing
HEAD_STEPS: tuple[Callable[[RoundState], None], ...] = (
    gather_embeddings,
    pseudo_labels,
    fit_head,
    save_head,
    score_head,
    metrics,
    commit,
)

#: the steps of a round, in order
STEPS: tuple[Callable[[RoundState], None], ...] = (
    gather_training_data,
    warm_start_state,
    pseudo_labels,
    fit,
    balance_head,
    save_model,
    score,
    metrics,
    commit,
)


def run_round(
    project: Project,
    *,
    from_scratch: bool = False,
    epochs: int | None = None,
    device: str | None = None,
    strategy: str | None = None,
    progress: Progress | None = None,
    verbose: bool = False,
    pause: Callable[[], None] | None = None,
) -> RoundSummary:
    """Check there is something to train on, start a round in the store, run :data:`STEPS`; see the module doc."""
    if pause is not None:
        pause()
    cfg = project.train_config.with_(epochs=epochs, device=device)
    t_start = time.perf_counter()
    labels = project.store.current_labels(split="pool")
    if not labels:
        raise NoLabelsError("no labels to train on yet: label some items first ('alwb query', 'alwb label')")
    if len({row["class"] for row in labels}) < 2:
        raise NoLabelsError("training needs labels of at least two classes")
    classes = project.classes
    before = project.stored_geometry()
    geo = project.geometry(cfg, fetch=True)
    number = project.store.start_round(strategy or project.config.strategy)
    r = RoundState(
        project=project,
        cfg=cfg,
        number=number,
        geo=geo,
        classes=classes,
        from_scratch=from_scratch,
        progress=progress,
        pause=pause,
        verbose=verbose,
        t_start=t_start,
    )
    if geo != before and geo.mode_reason:
        r.notes.append(f"training: {geo.mode} ({geo.mode_reason})")
    try:
        for step in HEAD_STEPS if geo.is_head else STEPS:
            step(r)
    except BaseException as exc:
        rollback(r, exc)
        raise
    prune_scores(project.root, number)
    assert r.model_path is not None
    info = r.fit_info()
    return RoundSummary(
        round=number,
        n_labeled=len(r.ids),
        n_val=int(r.metrics.get("val", {}).get("n") or 0),
        metrics=r.metrics,
        timings=r.timings,
        model_path=str(r.model_path),
        device=info["device_used"],
        epochs=info["epochs_run"],
        warm=info["warm"],
        notes=r.notes,
    )


# ------------------------------------------------------------------------------------------- what the steps use
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


def epochs_with_extra(
    n_human: int, n_all: int, cfg: TrainConfig, geo: Geometry, init_state: dict[str, Any] | None
) -> int:
    """Epochs over ``n_all`` samples that give the ``n_human`` human labels as many passes as without the extra
    (pseudo-labelled) samples, up to ``cfg.pseudo_steps`` times the steps of a round without them."""
    from .train import auto_epochs

    per_epoch = max(1, math.ceil(n_human / cfg.batch_size))
    human_epochs = auto_epochs(
        n_human, cfg.batch_size, warm=init_state is not None, cfg=cfg, arch=geo.arch, image_size=geo.image_size
    )
    steps = human_epochs * per_epoch * min(cfg.pseudo_steps, n_all / max(1, n_human))
    return max(1, math.ceil(steps / max(1, math.ceil(n_all / cfg.batch_size))))


def unlabeled_sample(
    project: Project, cfg: TrainConfig, rng_key: list[int]
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64] | None]:
    """The unlabeled pool ids, and a random sample of ``score_limit`` of them (``None`` when that covers them all
    or there is no limit)."""
    unlabeled = np.asarray(project.store.unlabeled_item_ids(split="pool"), np.int64)
    if not cfg.score_limit or unlabeled.size <= cfg.score_limit:
        return unlabeled, None
    return unlabeled, np.random.default_rng(rng_key).choice(unlabeled, size=cfg.score_limit, replace=False)


def ids_to_score(
    project: Project, all_ids: npt.NDArray[np.int64], cfg: TrainConfig, number: int
) -> npt.NDArray[np.int64]:
    """Sorted ids to score this round: everything, or with ``score_limit`` every labeled and validation item, a
    random sample (new each round, seeded) of that many unlabeled pool items, and the fixed stop set (no larger than
    ``score_limit`` either): at most twice ``score_limit`` unlabeled items."""
    unlabeled, sampled = unlabeled_sample(project, cfg, [cfg.seed, number])
    if sampled is None:
        return all_ids
    # the fixed stop set is scored every round, so consecutive rounds' predictions can be compared (alwb.advice)
    keep = np.union1d(np.setdiff1d(all_ids, unlabeled, assume_unique=True), sampled)
    keep = np.union1d(keep, _stop_items(project, cfg))
    return keep[np.isin(keep, all_ids)]


def _stop_items(project: Project, cfg: TrainConfig) -> npt.NDArray[np.int64]:
    """The project's stop set (:func:`alwb.advice.stop_set` of the pool, validation items left out), no larger than
    ``score_limit`` so a small limit keeps scoring small."""
    from .advice import STOP_SET_SIZE, stop_set

    pool = np.setdiff1d(np.asarray(project.store.item_ids(), np.int64), project.store.val_item_ids())
    size = min(STOP_SET_SIZE, cfg.score_limit) if cfg.score_limit else STOP_SET_SIZE
    return stop_set(pool, project.config.seed, size=size)


def round_stability(
    project: Project, scores: Scores, labeled: npt.ArrayLike, cfg: TrainConfig
) -> dict[str, Any] | None:
    """Kappa and changed share between the previous finished round's predictions and ``scores`` on the stop set's
    items that are unlabeled now; None for the first round or when the previous scores are gone."""
    from .advice import stability
    from .scores import read_scores

    done = [r["number"] for r in project.store.rounds() if r["status"] == "done" and r["number"] < scores.round]
    prev = read_scores(project.root, done[-1]) if done else None
    if prev is None:
        return None
    items = np.setdiff1d(_stop_items(project, cfg), np.asarray(labeled, np.int64))
    return stability(prev, scores, items)


#: pseudo-labels are used only while the previous model's confident guesses on the validation sample are right at
#: least this often (the lower end of their 95% Wilson interval), over at least :data:`PSEUDO_CHECK_MIN` of them
PSEUDO_PRECISION = 0.90
PSEUDO_CHECK_MIN = 30


def check_pseudo(project: Project, cfg: TrainConfig) -> dict[str, Any]:
    """Whether this round's pseudo-labels can be trusted, from the validation sample (never the test split).

    The previous round's model scored the labeled validation items; the pseudo-labels of this round are its guesses
    at probability ``pseudo_threshold`` or more, so its guesses on validation items at that confidence say how often
    the pseudo-labels are right. They are used only when the lower end of that rate's interval reaches
    :data:`PSEUDO_PRECISION`: a weak model's confident mistakes (natural images from scratch) cost accuracy.
    """
    from .evaluate import wilson_interval

    scores = project.scores()
    if scores is None or scores.classes != project.classes:
        return {"use": False, "reason": "no previous model to take them from"}
    val = project.store.current_labels(split="val")
    vids = np.asarray([row["item_id"] for row in val], dtype=np.int64)
    vy = np.asarray([row["position"] for row in val], dtype=np.int64)
    rows = scores.rows(vids)
    probs = scores.probs_at(rows[rows >= 0]) if (rows >= 0).any() else np.zeros((0, len(project.classes)))
    vy = vy[rows >= 0]
    confident = probs.max(axis=1) >= cfg.pseudo_threshold if len(probs) else np.zeros(0, bool)
    n = int(confident.sum())
    right = int((probs[confident].argmax(axis=1) == vy[confident]).sum()) if n else 0
    out: dict[str, Any] = {"n": n, "right": right, "threshold": cfg.pseudo_threshold}
    if n < max(PSEUDO_CHECK_MIN, 1):
        return {
            **out,
            "use": False,
            "reason": f"only {n} validation item(s) are guessed with probability ≥ {cfg.pseudo_threshold:g} "
            f"(the check needs {PSEUDO_CHECK_MIN})",
        }
    low, high = wilson_interval(right, n)
    out.update(low=low, high=high)
    rate = f"{right}/{n} confident guesses right on the validation sample ({low:.0%}–{high:.0%})"
    if low < PSEUDO_PRECISION:
        return {**out, "use": False, "reason": f"{rate}, under {PSEUDO_PRECISION:.0%}"}
    return {**out, "use": True, "reason": rate}


def choose_pseudo(
    project: Project, cfg: TrainConfig, y: npt.NDArray[np.int64], num_classes: int, number: int
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.float64]]:
    """Confident unlabeled pool items under the previous round's scores (never validation items)."""
    from .pseudo import choose_pseudo_labels

    empty = (np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0))
    scores = project.scores()
    if scores is None or scores.classes != project.classes:
        return empty
    pool = np.asarray(project.store.unlabeled_item_ids(split="pool"), dtype=np.int64)
    rows = scores.rows(pool)
    pool, rows = pool[rows >= 0], rows[rows >= 0]
    if pool.size == 0:
        return empty
    counts = np.bincount(y, minlength=num_classes)
    rng = np.random.default_rng([cfg.seed, number, 7])
    return choose_pseudo_labels(
        scores.probs_at(rows), pool, counts, threshold=cfg.pseudo_threshold, cap_ratio=cfg.pseudo_cap, rng=rng
    )


def handover(
    project: Project,
    scores: Scores,
    train_ids: npt.NDArray[np.int64],
    y_train: npt.NDArray[np.int64],
    num_classes: int,
    number: int,
) -> dict[str, Any]:
    """The ``auto`` strategy's decision for the next batches (:func:`alwb.typicality.probe_handover` on this round's
    embeddings); once margin sampling took over it stays."""
    from .typicality import probe_handover

    for prev in reversed(project.store.rounds()):
        if prev["status"] == "done" and prev["number"] < number:
            before = prev["metrics"].get("handover") or {}
            if before.get("use") == "margin":
                since = before.get("since", prev["number"])
                return {**before, "since": since, "reason": f"margin sampling since round {since}"}
            break
    val = project.store.current_labels(split="val")
    vids = np.asarray([row["item_id"] for row in val], dtype=np.int64)
    vy = np.asarray([row["position"] for row in val], dtype=np.int64)
    vrows, trows = scores.rows(vids), scores.rows(train_ids)
    cfg = project.config
    decision = probe_handover(
        scores.emb_at(trows[trows >= 0]),
        y_train[trows >= 0],
        scores.emb_at(vrows[vrows >= 0]),
        vy[vrows >= 0],
        cfg.retrain_every or cfg.batch_size,
        num_classes=num_classes,
        seed=cfg.seed + number,
    ).to_dict()
    if decision["use"] == "margin":
        decision["since"] = number
    return decision


def round_metrics(
    project: Project,
    scores: Scores,
    train_ids: npt.NDArray[np.int64],
    y_train: npt.NDArray[np.int64],
    classes: list[str],
) -> dict[str, Any]:
    """``train_accuracy`` on the labels trained on, and ``val``: :func:`classification_metrics` on the labeled
    validation items (``{"n": 0}`` without any)."""
    rows = scores.rows(train_ids)
    keep = rows >= 0
    pred_train = np.asarray(scores.probs[rows[keep]]).argmax(1)
    out: dict[str, Any] = {"train_accuracy": float((pred_train == y_train[keep]).mean()) if keep.any() else None}
    val = project.store.current_labels(split="val")
    if val:
        vids = np.asarray([row["item_id"] for row in val], dtype=np.int64)
        vy = np.asarray([row["position"] for row in val], dtype=np.int64)
        vrows = scores.rows(vids)
        keep = vrows >= 0
        pred = np.asarray(scores.probs[vrows[keep]]).argmax(1)
        out["val"] = classification_metrics(vy[keep], pred, classes)
    else:
        out["val"] = {"n": 0}
    return out
