"""One training round, as one sequence of named steps over a shared :class:`alwb.learning.trainers.RoundState`.

::

    gather → warm_start → pseudo_labels → fit → save_model → score → metrics → commit      (any failure: rollback)

Where the modes differ (pixels or embeddings, a network or a head), a step calls the round's trainer
(:mod:`alwb.learning.trainers`: one per mode, chosen from the plan's geometry); no step asks which mode it is in. The
round
takes what it needs from its project up front (:class:`alwb.learning.trainers.RoundInputs`, built by
:meth:`alwb.project.Project.round_inputs`) and never calls back into the project. Nothing a round writes counts until
``commit``: the model file and the scores are written beside their final names and the store records the round in
one transaction; ``rollback`` removes every file the round wrote and records the round as failed with its error,
so the previous model and scores stay current. :meth:`alwb.project.Project.train` is the front door.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from ..config import TrainConfig
from ..errors import NoLabelsError
from ..store import Store
from .evaluate import classification_metrics
from .plan import Geometry, typical_first
from .scores import Scores, discard_round_scores, prune_scores
from .trainers import Progress, RoundInputs, RoundState, stop_items, trainer_for

log = logging.getLogger(__name__)


@dataclass
class RoundSummary:
    """What :meth:`alwb.project.Project.train` reports."""

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


# ---------------------------------------------------------------------------------------------------- the steps
def gather(r: RoundState) -> None:
    """The inputs of every item (the pixel cache, or the backbone's embeddings) and the labeled pool items'."""
    r.trainer.gather(r)


def warm_start(r: RoundState) -> None:
    """The previous round's model, where the mode starts from it and the model is unchanged."""
    r.trainer.warm_start(r)


def pseudo_labels(r: RoundState) -> None:
    """With ``cfg.pseudo``: confident unlabeled pool items under the previous model join the training data, and
    (unless the epochs are fixed) add training steps instead of taking them from the human labels."""
    r.x_train, r.y_train = r.x, r.y
    if not r.cfg.pseudo:
        return
    check = check_pseudo(r.inp, r.cfg)
    r.pseudo_check = check
    if not check["use"]:
        r.notes.append(f"pseudo-labels off this round: {check['reason']}")
        return
    pid, pcls, pconf = choose_pseudo(r.inp, r.cfg, r.y, len(r.classes), r.number)
    if not pid.size:
        return
    assert r.x is not None
    r.x_train = np.concatenate([r.x, r.trainer.rows(pid)])
    r.y_train = np.concatenate([r.y, pcls])
    r.sample_weights = np.concatenate([np.ones(len(r.y)), np.ones(len(pid))])
    r.pseudo_rows = [(int(i), r.classes[int(c)], float(p)) for i, c, p in zip(pid, pcls, pconf, strict=True)]
    if not r.cfg.epochs:
        epochs = epochs_with_extra(len(r.y), len(r.y_train), r.cfg, r.geo, r.trainer.warm_state)
        r.cfg = r.cfg.with_(epochs=epochs)


def fit(r: RoundState) -> None:
    """Train the mode's model on the training data (balancing as the settings ask)."""
    r.trainer.fit(r)
    r.timings["train_seconds"] = time.perf_counter() - r.marks["data_done"]


def _write_beside(path: Path, write: Callable[[Path], None]) -> None:
    """Write a file beside ``path`` and rename it into place (a reader never sees it half-written)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    write(tmp)
    os.replace(tmp, path)


def save_model(r: RoundState) -> None:
    """The model as safetensors, written beside the final name and renamed into place."""
    r.marks["save_start"] = time.perf_counter()
    _write_beside(r.model_file, lambda tmp: r.trainer.save(r, tmp))
    r.model_path = r.model_file


def score(r: RoundState) -> None:
    """Probabilities and embeddings of every item (or of the labeled and validation items, the stop set and a
    sample of the unlabeled pool, with ``score_limit``), into memory-mapped files."""
    r.trainer.score(r)
    r.timings["score_seconds"] = time.perf_counter() - r.marks["save_start"]


def metrics(r: RoundState) -> None:
    """Accuracy on the training labels and the validation metrics (with their interval) of the scored model."""
    assert r.scores is not None
    r.metrics = round_metrics(r.inp.store, r.scores, r.ids, r.y, r.classes)
    if r.pseudo_check is not None:
        r.metrics["pseudo_check"] = r.pseudo_check
    st = round_stability(r.inp, r.scores, r.ids, r.cfg)
    if st is not None:
        r.metrics["stability"] = st
    if r.inp.config.strategy == "auto" and typical_first(r.geo.mode, r.geo.backbone):
        r.metrics["handover"] = handover(r.inp, r.scores, r.ids, r.y, len(r.classes), r.number)
        r.notes.append(f"auto strategy: {r.metrics['handover']['reason']}")
    r.timings["round_seconds"] = time.perf_counter() - r.t_start


def commit(r: RoundState) -> None:
    """Publish the scores, then record the round, its model and its pseudo-labels in one transaction."""
    assert r.writer is not None and r.model_path is not None
    config = {**r.cfg.to_dict(), "geometry": r.geo.to_dict(), **r.trainer.fit_info()}
    r.writer.publish()
    store = r.inp.store
    store.set_meta("geometry", r.geo.to_dict())
    with store.transaction():  # pseudo-labels and the round's result land together or not at all
        store.replace_pseudo_labels(r.pseudo_rows, r.number)
        store.finish_round(
            r.number,
            model_path=r.model_path.relative_to(r.inp.root).as_posix(),
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
    discard_round_scores(r.inp.root, r.number)
    r.model_file.with_suffix(".tmp").unlink(missing_ok=True)
    r.model_file.unlink(missing_ok=True)
    r.inp.store.fail_round(r.number, f"{type(exc).__name__}: {exc}")


#: the steps of a round, in order (every mode: the trainer does what differs)
STEPS: tuple[Callable[[RoundState], None], ...] = (
    gather,
    warm_start,
    pseudo_labels,
    fit,
    save_model,
    score,
    metrics,
    commit,
)


def check_trainable(store: Store) -> None:
    """Raise :class:`NoLabelsError` unless the pool's labels span at least two classes."""
    labels = store.current_labels(split="pool")
    if not labels:
        raise NoLabelsError("no labels to train on yet: label some items first ('alwb query', 'alwb label')")
    if len({row["class"] for row in labels}) < 2:
        raise NoLabelsError("training needs labels of at least two classes")


def run_round(
    inp: RoundInputs,
    *,
    from_scratch: bool = False,
    strategy: str | None = None,
    progress: Progress | None = None,
    verbose: bool = False,
    pause: Callable[[], None] | None = None,
    t_start: float | None = None,
) -> RoundSummary:
    """Start a round in the store and run :data:`STEPS` with the plan's trainer; see the module doc. The caller
    checked there is something to train on (:func:`check_trainable`)."""
    geo = inp.geometry
    number = inp.store.start_round(strategy or inp.config.strategy)
    r = RoundState(
        inp=inp,
        trainer=trainer_for(geo),
        cfg=inp.cfg,
        number=number,
        geo=geo,
        from_scratch=from_scratch,
        progress=progress,
        pause=pause,
        verbose=verbose,
        t_start=time.perf_counter() if t_start is None else t_start,
    )
    if geo != inp.previous_geometry and geo.mode_reason:
        r.notes.append(f"training: {geo.mode} ({geo.mode_reason})")
    try:
        for step in STEPS:
            step(r)
    except BaseException as exc:
        rollback(r, exc)
        raise
    prune_scores(inp.root, number)
    assert r.model_path is not None
    info = r.trainer.fit_info()
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


def round_stability(
    inp: RoundInputs, scores: Scores, labeled: npt.ArrayLike, cfg: TrainConfig
) -> dict[str, Any] | None:
    """Kappa and changed share between the previous finished round's predictions and ``scores`` on the stop set's
    items that are unlabeled now; None for the first round or when the previous scores are gone."""
    from .advice import stability
    from .scores import read_scores

    done = [r["number"] for r in inp.store.rounds() if r["status"] == "done" and r["number"] < scores.round]
    prev = read_scores(inp.root, done[-1]) if done else None
    if prev is None:
        return None
    items = np.setdiff1d(stop_items(inp, cfg), np.asarray(labeled, np.int64))
    return stability(prev, scores, items)


#: pseudo-labels are used only while the previous model's confident guesses on the validation sample are right at
#: least this often (the lower end of their 95% Wilson interval), over at least :data:`PSEUDO_CHECK_MIN` of them
PSEUDO_PRECISION = 0.90
PSEUDO_CHECK_MIN = 30


def check_pseudo(inp: RoundInputs, cfg: TrainConfig) -> dict[str, Any]:
    """Whether this round's pseudo-labels can be trusted, from the validation sample (never the test split).

    The previous round's model scored the labeled validation items; the pseudo-labels of this round are its guesses
    at probability ``pseudo_threshold`` or more, so its guesses on validation items at that confidence say how often
    the pseudo-labels are right. They are used only when the lower end of that rate's interval reaches
    :data:`PSEUDO_PRECISION`: a weak model's confident mistakes (natural images from scratch) cost accuracy.
    """
    from .evaluate import wilson_interval

    scores = inp.previous_scores
    if scores is None or scores.classes != inp.classes:
        return {"use": False, "reason": "no previous model to take them from"}
    val = inp.store.current_labels(split="val")
    vids = np.asarray([row["item_id"] for row in val], dtype=np.int64)
    vy = np.asarray([row["position"] for row in val], dtype=np.int64)
    rows = scores.rows(vids)
    probs = scores.probs_at(rows[rows >= 0]) if (rows >= 0).any() else np.zeros((0, len(inp.classes)))
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
    inp: RoundInputs, cfg: TrainConfig, y: npt.NDArray[np.int64], num_classes: int, number: int
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.float64]]:
    """Confident unlabeled pool items under the previous round's scores (never validation items)."""
    from .pseudo import choose_pseudo_labels

    empty = (np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0))
    scores = inp.previous_scores
    if scores is None or scores.classes != inp.classes:
        return empty
    pool = np.asarray(inp.store.unlabeled_item_ids(split="pool"), dtype=np.int64)
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
    inp: RoundInputs,
    scores: Scores,
    train_ids: npt.NDArray[np.int64],
    y_train: npt.NDArray[np.int64],
    num_classes: int,
    number: int,
) -> dict[str, Any]:
    """The ``auto`` strategy's decision for the next batches (:func:`alwb.learning.typicality.probe_handover` on this
    round's
    embeddings); once margin sampling took over it stays."""
    from .typicality import probe_handover

    for prev in reversed(inp.store.rounds()):
        if prev["status"] == "done" and prev["number"] < number:
            before = prev["metrics"].get("handover") or {}
            if before.get("use") == "margin":
                since = before.get("since", prev["number"])
                return {**before, "since": since, "reason": f"margin sampling since round {since}"}
            break
    val = inp.store.current_labels(split="val")
    vids = np.asarray([row["item_id"] for row in val], dtype=np.int64)
    vy = np.asarray([row["position"] for row in val], dtype=np.int64)
    vrows, trows = scores.rows(vids), scores.rows(train_ids)
    cfg = inp.config
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
    store: Store,
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
    val = store.current_labels(split="val")
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
