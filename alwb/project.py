"""The labeling session: the only orchestrator of ingest → store → train/score → query → label → retrain.

A :class:`Project` is a folder holding ``alwb.sqlite`` (the store), ``cache/`` (decoded pixels), ``models/``
(one safetensors file per round) and ``scores/`` (memory-mapped probabilities and embeddings per round).
"""

from __future__ import annotations

import logging
import math
import os
import time
import uuid
from collections import Counter
from collections.abc import Callable, Collection, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from .config import ProjectConfig, TrainConfig
from .errors import AlwbError, EmptyPoolError, LabelError, ProjectError
from .intake.ingest import IngestReport, ingest
from .io.answers import NONE_LABEL, read_answers
from .learning.data import PixelCache, choose_geometry
from .learning.models import BACKBONE_PREFIX, choose_arch
from .learning.plan import AUTO_BACKBONE, Geometry, TrainingPlan, choose_backbone, typical_first
from .learning.query import Candidates, list_strategies
from .learning.query import strategy as get_strategy
from .learning.round import RoundSummary, check_trainable, run_round
from .learning.scores import Scores, read_scores
from .learning.trainers import RoundInputs
from .reads import ProjectReads
from .store import LabelRow, Store
from .store.location import ENV_URL, POINTER_FILE, STORE_FILE, is_project, store_location, write_pointer

if TYPE_CHECKING:  # pragma: no cover
    from .progress import TrainingStatus
    from .team.leases import Submitted

__all__ = [
    "NONE_LABEL",
    "Project",
    "QueryItem",
    "QueryResult",
    "RoundSummary",
    "STORE_FILE",
    "Scores",
    "batch_mix",
    "draw_validation",
]

log = logging.getLogger(__name__)


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


def batch_mix(n: int, pending_val: int, pool: int, val_share: float) -> tuple[int, int]:
    """How a batch of ``n`` is made, for one person and for a team alike: ``(validation items, pool items)``.

    Pending validation items take ``ceil(n * val_share)`` places (fewer when fewer are pending) and fill the batch
    when the pool has fewer than the rest; the pool gives the rest, as far as it goes."""
    k_val = min(int(pending_val), max(math.ceil(n * val_share), n - int(pool)))
    return k_val, min(n - k_val, int(pool))


def draw_validation(pool_ids: npt.ArrayLike, size: int, seed: int) -> npt.NDArray[np.int64]:
    """``size`` item ids drawn uniformly at random without replacement from ``pool_ids`` (all of them when there are
    fewer): the validation sample. The same seed and the same set of ids give the same draw, whatever their order."""
    pool = np.sort(np.asarray(pool_ids, dtype=np.int64))
    return np.random.default_rng(seed).choice(pool, size=min(int(size), pool.size), replace=False)


class Project:
    """A project folder and its store. Open one per thread or process."""

    def __init__(self, root: str | Path, store: Store) -> None:
        self.root = Path(root).resolve()
        self.store = store
        store.project_dir = self.root  # uploads inside the folder are stored relative to it
        from .learning.pretrain import register_project_backbone

        register_project_backbone(self.root, store)  # a backbone pretrained on the project's images, if any

    # ------------------------------------------------------------------ lifecycle
    @classmethod
    def create(cls, root: str | Path, *, classes: Sequence[str] | None = None, store_url: str | None = None) -> Project:
        """Create the folder and its store; fails if a store is already there.

        The store is ``root/alwb.sqlite``, or the PostgreSQL database at ``store_url`` (default
        ``$ALWB_STORE_URL``), which must not hold a project yet; the folder then points to it (``store.json``).
        """
        import os

        root = Path(root)
        if is_project(root):
            raise ProjectError(f"{root} already holds an alwb project (use 'alwb add' to add images)")
        if root.exists() and not root.is_dir():
            raise ProjectError(f"{root} exists and is not a folder")
        store_url = store_url or os.environ.get(ENV_URL) or None
        root.mkdir(parents=True, exist_ok=True)
        if store_url:
            store = Store(store_url, create=True)
            if store.get_meta("created_at") is not None:
                store.close()
                raise ProjectError(f"the store {store.location} already holds a project")
            write_pointer(root, store_url)
        else:
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
        location = store_location(root)
        if location is None:
            raise ProjectError(
                f"{root} is not an alwb project (no {STORE_FILE} or {POINTER_FILE}; run 'alwb init' first)"
            )
        return cls(root, Store(location))

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

    @property
    def reads(self) -> ProjectReads:
        """What pages read (counts, labels, items, rounds, drafts …): :class:`alwb.reads.ProjectReads`."""
        return ProjectReads(self.store)

    @staticmethod
    def exists(root: str | Path) -> bool:
        """True when ``root`` holds an alwb project (its store file or a pointer to a server)."""
        return is_project(root)

    def edit_classes(self, add: Sequence[str] = (), rename: tuple[str, str] | None = None) -> list[str]:
        """Add classes (those not yet known, in order) and rename one (``(old, new)``; labels follow), in one
        transaction; returns the classes added. Raises :class:`LabelError` on a bad or clashing name."""
        with self.store.transaction():
            added = self.store.add_classes(add) if add else []
            if rename is not None:
                self.store.rename_class(*rename)
        return added

    def set_image_root(self, root: str | Path | None) -> None:
        """Resolve the images' relative paths under ``root`` from now on (stored paths rewritten in one
        transaction: :meth:`alwb.store.Store.set_image_root`)."""
        self.store.set_image_root(root)

    def save_drafts(self, annotator: str, answers: dict[int, str | None]) -> None:
        """Keep answers chosen but not submitted (``None`` forgets one), in one transaction, so a reload or a lost
        connection keeps them."""
        with self.store.transaction():
            for item_id, answer in sorted(answers.items()):
                self.store.save_draft(annotator, int(item_id), answer)

    def reject_pseudo_labels(self, item_ids: Sequence[int]) -> int:
        """Drop these pseudo-labels (rejected in review); returns how many were dropped."""
        return self.store.remove_pseudo_labels(item_ids)

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
        return read_scores(self.root, self.store.current_round() if round_number is None else round_number)

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
        k_val, k_pool = batch_mix(n, len(pending_val), int(pool.size), cfg.val_share)
        scores = self.scores()
        note = None
        items: list[QueryItem] = []
        if k_pool:
            ids, sc, use, pick_note = self._pick_pool(pool, all_pool, k_pool, strategy, scores, rng)
            note = note or pick_note
            items += self._describe(ids, sc, scores, reason=use)
        if k_val:
            vids = rng.choice(np.asarray(pending_val, dtype=np.int64), size=k_val, replace=False)
            items += self._describe(vids, None, scores, reason="validation")
        return QueryResult(items=items, strategy=strategy, round=rnd, note=note)

    def _pick_pool(
        self,
        pool: npt.NDArray[np.int64],
        all_pool: npt.NDArray[np.int64],
        k: int,
        strategy: str,
        scores: Scores | None,
        rng: np.random.Generator,
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64] | None, str, str | None]:
        """``k`` pool items by ``strategy``: ``(ids, scores, the strategy used, a note when it fell back)``.

        The strategy says what it needs (:class:`alwb.learning.query.Strategy`); when that is not there yet (no
        features, no
        model, nothing scored left) the items are picked at random and the note says why."""
        use = self.auto_strategy() if strategy == "auto" else strategy
        strat = get_strategy(use)
        if strat.needs == "nothing":
            return *strat.pick(Candidates(pool, rng), k), use, None
        if strat.needs == "features":
            feats = self.features(pool, scores)
            if feats is None:
                note = (
                    f"no features yet: {k} image(s) picked at random; {strategy} picks them once the images' "
                    "features are computed"
                )
                return rng.choice(all_pool, size=k, replace=False), None, "random", note
            return *strat.pick(Candidates(pool, rng, features=feats, auto_use=use), k), use, None
        if scores is None:
            note = (
                f"no model yet: {k} image(s) picked at random; once the first round has trained, the model picks "
                f"them ({strategy})"
            )
            return *get_strategy("random").pick(Candidates(pool, rng), k), "random", note
        note = None
        rows = scores.rows(pool)
        if np.any(rows < 0):
            pool, rows = pool[rows >= 0], rows[rows >= 0]
            if not scores.sampled:
                note = "some new items are not scored yet (train again to score them)"
            if pool.size == 0:  # nothing of the scored sample is left: fall back to random
                note = "the scored items are all answered: random until the next round"
                return *get_strategy("random").pick(Candidates(all_pool, rng), k), "random", note
        cands = Candidates(pool, rng, proba=scores.probs_at(rows), embed=lambda: scores.emb_at(rows))
        return *strat.pick(cands, k), use, note

    def auto_strategy(self) -> str:
        """What ``auto`` uses now (:meth:`auto_choice`)."""
        return self.auto_choice()[0]

    def auto_choice(self) -> tuple[str, str]:
        """What ``auto`` uses now and why. On a plan that learns from a pretrained backbone's features
        (:func:`alwb.learning.plan.typical_first`): ``typiclust`` until a round's validation probe said margin sampling
        pays at least as much (:func:`alwb.learning.typicality.probe_handover`), ``margin`` from then on. From
        scratch: ``margin``. Decided on the last round's geometry (whose features the query reads), before any
        round on the plan."""
        geo = self.stored_geometry()
        if geo is not None:
            first = typical_first(geo.mode, geo.backbone)
        else:
            try:
                plan = self._plan(self.train_config, fetch=False)
            except AlwbError:  # a backbone setting this machine does not know: the round will say so
                return "margin", "the backbone setting is not known on this machine"
            first = plan.typical_first or plan.mode is None  # no images yet: nothing to choose from anyway
        if not first:
            return "margin", "the model trains from scratch, where typical first batches measured no gain"
        for r in reversed(self.store.rounds()):
            if r["status"] == "done":
                h = r["metrics"].get("handover") or {}
                use = "margin" if h.get("use") == "margin" else "typiclust"
                return use, str(h.get("reason") or "typical items until the validation sample says margin pays")
        return "typiclust", "typical items first, on the backbone's features, until a round's probe says margin pays"

    def features(
        self, ids: npt.NDArray[np.int64], scores: Scores | None = None
    ) -> tuple[npt.NDArray[np.int64], np.ndarray, np.ndarray] | None:
        """Features for typicality: ``(the ids that have them, their features, the labeled pool items' features)``.

        The latest round's embeddings (its model's, or its backbone's in head mode); before any round, a complete
        embedding cache of the project's backbone (filled by a ``head`` round's embed step, the dataset-insight job
        or a pretraining job), else None.
        """
        labeled = np.asarray(sorted(r["item_id"] for r in self.store.current_labels(split="pool")), np.int64)
        if scores is not None:
            rows = scores.rows(ids)
            lrows = scores.rows(labeled)
            return ids[rows >= 0], scores.emb_at(rows[rows >= 0]), scores.emb_at(lrows[lrows >= 0])
        cache = self._embedding_cache()
        if cache is None:
            return None
        have = cache.embedded_ids()
        keep = ids[np.isin(ids, have)]
        if keep.size < 0.9 * ids.size or keep.size == 0:
            return None
        lab = labeled[np.isin(labeled, have)]
        return keep, cache.rows(keep), cache.rows(lab) if lab.size else np.zeros((0, cache.dim), np.float32)

    def _embedding_cache(self) -> Any:
        """The embedding cache of the backbone a head- or finetune-mode project uses (its pretrained weights, as
        embedded for head rounds or a cold start), when its weights are here and it holds embeddings; else None.
        Before the first round, the backbone and framing the plan would choose (what the dataset-insight job
        embeds with), so typical first batches need no round."""
        from .learning import backbones
        from .learning.embed import EmbeddingCache

        geo = self.stored_geometry()
        if geo is not None:
            name = str(geo.backbone) if geo.uses_backbone else None
        else:
            try:
                plan = self._plan(self.train_config, fetch=False)
            except AlwbError:  # a backbone setting this machine does not know: no features before a round
                return None
            name = plan.backbone if plan.mode in ("head", "finetune") else None
        if not name:
            return None
        try:
            origin = backbones.resolve_weights(name, download=False, quiet=True)
            dim = backbones.get_spec(name).embedding_dim
        except (backbones.WeightsError, AlwbError):
            return None
        cache = EmbeddingCache(self.root, name, origin.sha256, dim, self.framing())
        return cache if len(cache.embedded_ids()) else None

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
        self,
        answers: Sequence[tuple[int, str | None]],
        *,
        annotator: str | None = None,
        batch_id: str | None = None,
        accepted: Collection[int] = (),
    ) -> tuple[str, int]:
        """Save a batch of ``(item_id, class or None for "none of these")`` in ONE transaction.

        ``accepted``: the items whose answer is the model's preselected guess, submitted untouched (stored with
        ``accepted_guess``; every other answer was chosen by the person).
        Returns ``(batch_id, labels written)``. Unknown items or classes raise :class:`LabelError`, nothing written.
        """
        batch_id = batch_id or uuid.uuid4().hex
        took = {int(i) for i in accepted}
        with self.store.transaction():  # checked where it is written: an item rejected meanwhile is refused
            classes = set(self.classes)
            status = self.store.item_statuses([int(i) for i, _ in answers])
            for item_id, cls in answers:
                if status.get(int(item_id)) != "ok":
                    raise LabelError(f"item {item_id} does not exist or was rejected")
                if cls is not None and cls not in classes:
                    raise LabelError(f"unknown class {cls!r} (classes: {', '.join(sorted(classes))})")
            n = self.store.add_labels(
                [LabelRow(int(i), c, int(i) in took) for i, c in answers],
                source="human",
                annotator=annotator,
                batch_id=batch_id,
            )
        return batch_id, n

    def submit(
        self,
        answers: Sequence[tuple[int, str | None]],
        *,
        skipped: Collection[int] = (),
        annotator: str | None = None,
        accepted: Collection[int] = (),
        team: bool = False,
        batch_id: str | None = None,
    ) -> Submitted:
        """The front door for a submitted batch, in ONE transaction: the answers saved (:meth:`label`; for a
        ``team`` member each is checked against the leases first, :func:`alwb.team.leases.submit`, and a refused one is
        reported, not written), the batch's drafts dropped, and a team member's skipped items given back.

        ``skipped``: items of the batch left unanswered. Raises :class:`LabelError` (nothing written) on an unknown
        item or class.
        """
        from .team import leases

        batch_id = batch_id or uuid.uuid4().hex
        with self.store.transaction():
            if team:
                done = leases.submit(self, str(annotator or ""), answers, batch_id=batch_id, accepted=accepted)
            else:
                written = self.label(answers, annotator=annotator, batch_id=batch_id, accepted=accepted)[1]
                done = leases.Submitted(batch_id, written)
            if annotator:
                self.store.clear_drafts(annotator, [int(i) for i, _ in answers] + [int(i) for i in skipped])
            if team and skipped:
                leases.release(self.store, str(annotator), [int(i) for i in skipped])
        return done

    def round_due(self) -> bool:
        """True when the answers since the last round call for the next one: ``retrain_every`` counts every answer
        with a class, validation answers too, and the first round comes as soon as the first batch is answered
        (``batch_size`` answers, or ``retrain_every`` when smaller), so the first model-ranked batch comes early.
        The pool's labels must span two classes; ``retrain_every`` 0 means only on request."""
        every = self.config.retrain_every
        if every <= 0:
            return False
        if len({r["class"] for r in self.store.current_labels(split="pool")}) < 2:
            return False
        now = len(self.store.labels_at(time.time()))
        done = [r for r in self.store.rounds() if r["status"] == "done"]
        if not done:
            return now >= min(every, self.config.batch_size)
        return now - len(self.store.labels_at(done[-1]["started_at"])) >= every

    def request_training(
        self, *, device: str | None = None, requested_by: str | None = None, take_queued: bool = False
    ) -> str:
        """Ask for a round from a web server: queued for a live training worker, else started in this machine's
        background (:func:`alwb.team.worker.start_or_queue`); returns ``"queued"``, ``"started"`` or ``"busy"``."""
        from .team.worker import start_or_queue

        return start_or_queue(
            self.root,
            self.store,
            device=self.train_config.device if device is None else device,
            requested_by=requested_by,
            take_queued=take_queued,
        )

    def retrain_if_due(self) -> str | None:
        """After a submit: request a round when :meth:`round_due` says one is due and none runs here; returns what
        :meth:`request_training` said, or None when no round was due (or one already runs)."""
        from .jobs import is_training, wake_waiting

        if self.config.retrain_every <= 0:
            return None
        if is_training(self.root):  # a first round started early waits for exactly this submit
            return "started" if self.round_due() and wake_waiting(self.root, self.store) else None
        if not self.round_due():
            return None
        return self.request_training()

    def prepare_first_round(self) -> bool:
        """While the first batch is being answered (no model yet): start the first round's process now, so that
        its imports (PyTorch, scikit-learn: seconds) are done and it trains the moment the submit makes a round due
        (:func:`alwb.jobs.start_training` with ``when_due``). True when it was started; False when there is a
        model, automatic rounds are off, a round runs or is queued, training workers serve the project, or the
        environment says ``ALWB_PRESTART=0`` (the test suite, which opens many Label pages)."""
        from .jobs import is_training, start_training
        from .team.worker import live_workers

        if os.environ.get("ALWB_PRESTART", "1") == "0" or self.config.retrain_every <= 0 or is_training(self.root):
            return False
        if any(r["status"] == "done" for r in self.store.rounds()):
            return False
        if self.store.round_requests("queued") or self.store.round_requests("running") or live_workers(self.store):
            return False
        return start_training(self.root, device=self.train_config.device, first=True, when_due=True, store=self.store)

    def training_progress(self) -> TrainingStatus:
        """Where training stands, wherever the round runs (this machine's background, a training worker), from the
        store's one progress channel (:func:`alwb.progress.training_status`): the round that trains now and how far,
        a first round waiting for its labels, the queue, and the error of the last failed round."""
        from .progress import training_status

        return training_status(self.store, self.root)

    def label_file(self, csv_path: str | Path, *, annotator: str | None = None) -> tuple[str, int]:
        """Apply an answers CSV (``id`` or ``path``, and ``label``) as one transaction.

        Every bad line (unknown path, id or class, empty label) is reported with its line number, and then
        nothing is written (:func:`alwb.io.answers.read_answers`). ``label`` may be ``<none>`` for "none of these
        classes".
        """
        return self.label(read_answers(self.store, csv_path, self.classes), annotator=annotator)

    def undo(self, batch_id: str) -> int:
        """Undo one saved batch (labels it changed go back to what they were)."""
        return self.store.undo_batch(batch_id)

    # ------------------------------------------------------------------ training
    def stored_geometry(self) -> Geometry | None:
        """The geometry the last round recorded (None before the first round)."""
        raw = self.store.get_meta("geometry")
        return Geometry.from_dict(raw) if raw else None

    def geometry(self, cfg: TrainConfig | None = None, *, fetch: bool = False) -> Geometry:
        """How the model trains and sees the images: ``mode`` (``head``, ``finetune`` or ``scratch``) and why
        (``mode_reason``), ``backbone``, input geometry and architecture. Decided at the first round and kept
        unless the settings change, or until a photo project that trained from scratch for want of weights has
        them (``alwb weights fetch``, ``pip install``). ``fetch`` lets the decision download the backbone's weights
        (rounds do). The decision is :func:`alwb.learning.plan.decide_plan`'s (:meth:`plan`)."""
        from .learning import backbones

        cfg = cfg or self.train_config
        geo = self.stored_geometry()
        if geo is not None and self._geometry_holds(geo, cfg, backbones.weights_available):
            return geo
        return self._decide_geometry(cfg, fetch=fetch)

    def plan(self, cfg: TrainConfig | None = None) -> tuple[TrainingPlan, bool]:
        """``(plan, decided)``: how the rounds train and why (:class:`alwb.learning.plan.TrainingPlan`). ``decided``:
        as the
        last round recorded it (its geometry still holds for the settings); else what the next round would choose
        (:func:`alwb.learning.plan.decide_plan`, nothing downloaded)."""
        from .io.report import OLDER_PROJECT_REASON
        from .learning import backbones

        cfg = cfg or self.train_config
        geo = self.stored_geometry()
        if geo is not None and self._geometry_holds(geo, cfg, backbones.weights_available):
            bb = geo.backbone if geo.mode != "scratch" else None
            why = geo.mode_reason or OLDER_PROJECT_REASON
            size = geo.image_size if bb else None
            plan = TrainingPlan(
                geo.mode,
                bb,
                size,
                why,
                cfg.mode,
                cfg.backbone,
                weights_missing=geo.weights_missing,
                framing=geo.framing,
            )
            return plan, True
        return self._plan(cfg, fetch=False), False

    def _plan(self, cfg: TrainConfig, *, fetch: bool) -> TrainingPlan:
        from .learning import backbones
        from .learning.plan import decide_plan

        def get(name: str) -> str | None:
            try:
                backbones.resolve_weights(name, quiet=True)
                return None
            except backbones.WeightsError as exc:
                return str(exc)

        median, grey = self.image_shape()
        return decide_plan(cfg.mode, cfg.backbone, median, cfg.device, fetch=get if fetch else None, grey=grey)

    def framing(self) -> str:
        """How this project's images are framed for a backbone (``crop`` or ``whole``): as its last round recorded
        (older projects: ``crop``), else as the plan would choose (:func:`alwb.learning.plan.framing_for`). Every
        embedding of the project (rounds, the insight features, a pretraining job's) uses it, so they share a cache."""
        from .learning.plan import framing_for

        geo = self.stored_geometry()
        return geo.framing if geo is not None else framing_for(self.image_shape()[0])

    def image_shape(self) -> tuple[int | None, bool]:
        """What the training plan is decided from: the accepted images' median shorter side in pixels (None
        without images) and whether most of them are greyscale."""
        geometry = self.store.image_geometry()
        if not geometry:
            return None, False
        return int(np.median([side for side, _ in geometry])), sum(g for _, g in geometry) * 2 > len(geometry)

    def _geometry_holds(self, geo: Geometry, cfg: TrainConfig, weights_available: Callable[[str], bool]) -> bool:
        if cfg.mode not in ("auto", geo.mode):
            return False
        if geo.mode != "scratch":
            if cfg.backbone == AUTO_BACKBONE:  # the backbone chosen at the first round, while it is here
                return bool(geo.backbone) and weights_available(str(geo.backbone))
            return geo.backbone == cfg.backbone
        if cfg.mode == "auto" and geo.weights_missing and choose_backbone(cfg.backbone, weights_available):
            return False  # weights arrived: the photos move to the backbone
        size, channels = choose_geometry(self.store, cfg.image_size, cfg.channels, cfg.model)
        return (
            (not cfg.image_size or geo.image_size == size)
            and (not cfg.channels or geo.channels == channels)
            and (cfg.model in ("auto", geo.arch))
        )

    def _decide_geometry(self, cfg: TrainConfig, *, fetch: bool) -> Geometry:
        from .learning import backbones

        plan = self._plan(cfg, fetch=fetch)
        if plan.mode is None:
            raise AlwbError("the project has no readable images")
        if plan.mode != "scratch":
            assert plan.backbone is not None
            spec = backbones.get_spec(plan.backbone)
            prefix = "head:" if plan.mode == "head" else BACKBONE_PREFIX
            return Geometry(
                mode=plan.mode,
                arch=prefix + spec.name,
                image_size=spec.input_size,
                channels=3,
                mean=tuple(spec.mean),
                std=tuple(spec.std),
                backbone=spec.name,
                mode_reason=plan.why,
                framing=plan.framing,
            )
        size, channels = choose_geometry(self.store, cfg.image_size, cfg.channels, cfg.model)
        return Geometry(
            mode="scratch",
            arch=choose_arch(cfg.model, size),
            image_size=size,
            channels=channels,
            mode_reason=plan.why,
            weights_missing=plan.weights_missing,
            framing=plan.framing,  # how the insight features frame the images (no backbone trains here)
        )

    def pixel_cache(self, geo: Geometry | None = None, *, progress: bool = False) -> PixelCache:
        """The pixel cache at the model's geometry, synced with the store."""
        geo = geo or self.geometry()
        cache = PixelCache(self.root, geo.image_size, geo.channels)
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
        """One round: train on the current labels, score every item, record the round (:mod:`alwb.learning.round`).

        ``pause`` is called between training steps and scoring chunks (a background round gives way to the
        person labeling there: :func:`alwb.jobs.give_way`).

        On any failure the round is recorded as failed with its error, the previous model and scores stay current,
        and the exception is raised again.
        """
        if pause is not None:
            pause()
        t_start = time.perf_counter()
        check_trainable(self.store)
        inp = self.round_inputs(self.train_config.with_(epochs=epochs, device=device), fetch=True)
        return run_round(
            inp,
            from_scratch=from_scratch,
            strategy=strategy,
            progress=progress,
            verbose=verbose,
            pause=pause,
            t_start=t_start,
        )

    def round_inputs(self, cfg: TrainConfig | None = None, *, fetch: bool = False) -> RoundInputs:
        """What a round takes from this project (:class:`alwb.learning.trainers.RoundInputs`): its settings, the plan's
        geometry (``fetch`` lets the decision download the backbone's weights), and the last model and scores."""
        cfg = cfg or self.train_config
        previous = self.stored_geometry()
        return RoundInputs(
            root=self.root,
            store=self.store,
            classes=self.classes,
            config=self.config,
            cfg=cfg,
            geometry=self.geometry(cfg, fetch=fetch),
            previous_geometry=previous,
            previous_model=self.current_model(),
            previous_scores=self.scores(),
        )

    # ------------------------------------------------------------------ status
    def status(self) -> dict[str, Any]:
        """Everything ``alwb status`` shows, JSON-able. A round request whose worker stopped answering is failed
        first (:func:`alwb.team.worker.reap_stale`): the status never shows a dead worker's round as running."""
        from .team.worker import reap_stale

        st = self.store
        reap_stale(st)
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
