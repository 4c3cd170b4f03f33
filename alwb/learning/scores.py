"""A round's scores on disk: class probabilities ``(N, K)`` and embeddings ``(N, D)`` of the items it scored.

Each finished round has ``PROJECT/scores/round_NNNN/`` with ``ids.npy`` (sorted item ids), ``probs.npy`` and
``emb.npy`` (memory-mapped, one row per id) and ``meta.json`` (class order, whether the pool was sampled). A round
writes into ``round_NNNN.tmp/`` and renames it into place only when everything is there.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

#: finished rounds whose scores are kept on disk (older ones are pruned)
KEEP_SCORE_ROUNDS = 3


@dataclass
class Scores:
    """Probabilities ``(N, K)`` and embeddings ``(N, D)`` of every scored item, as scored by one round's model."""

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

    def probs_at(self, rows: npt.NDArray[np.int64]) -> np.ndarray:
        """``probs`` of ``rows`` (all ≥ 0), in their order; the memory map is read in ascending order."""
        return _gather(self.probs, rows)

    def emb_at(self, rows: npt.NDArray[np.int64]) -> np.ndarray:
        """``emb`` of ``rows`` (all ≥ 0), in their order."""
        return _gather(self.emb, rows)


def _gather(arr: np.ndarray, rows: npt.NDArray[np.int64]) -> np.ndarray:
    return np.asarray(arr[np.sort(rows)])[np.argsort(np.argsort(rows))]


def score_dir(root: str | Path, number: int) -> Path:
    """Where round ``number``'s scores live."""
    return Path(root) / "scores" / f"round_{number:04d}"


def read_scores(root: str | Path, number: int) -> Scores | None:
    """Memory-mapped scores of round ``number``, or None when it has none on disk."""
    if number <= 0:
        return None
    d = score_dir(root, number)
    if not (d / "ids.npy").is_file():
        return None
    meta = json.loads((d / "meta.json").read_text())
    return Scores(
        round=number,
        ids=np.load(d / "ids.npy"),
        probs=np.load(d / "probs.npy", mmap_mode="r"),
        emb=np.load(d / "emb.npy", mmap_mode="r"),
        classes=meta["classes"],
        sampled=bool(meta.get("sampled", False)),
    )


class ScoreWriter:
    """Writes one round's scores into a side folder; :meth:`publish` renames it into place (a failed round removes
    both with :func:`discard_round_scores`)."""

    def __init__(
        self,
        root: str | Path,
        number: int,
        ids: npt.NDArray[np.int64],
        classes: list[str],
        emb_dim: int,
        *,
        sampled: bool,
    ) -> None:
        self.final = score_dir(root, number)
        self.tmp = self.final.with_name(self.final.name + ".tmp")
        self.number, self.ids, self.classes, self.sampled = number, ids, classes, sampled
        shutil.rmtree(self.tmp, ignore_errors=True)
        self.tmp.mkdir(parents=True)
        n = len(ids)
        self.probs = np.lib.format.open_memmap(self.tmp / "probs.npy", "w+", np.float32, (n, len(classes)))
        self.emb = np.lib.format.open_memmap(self.tmp / "emb.npy", "w+", np.float32, (n, emb_dim))

    def finish(self) -> Scores:
        """Flush the arrays and write the ids and meta (still in the side folder); the scores, readable now."""
        self.probs.flush()
        self.emb.flush()
        np.save(self.tmp / "ids.npy", self.ids)
        meta = {"classes": self.classes, "round": self.number, "sampled": self.sampled}
        (self.tmp / "meta.json").write_text(json.dumps(meta))
        return Scores(self.number, self.ids, self.probs, self.emb, self.classes, self.sampled)

    def publish(self) -> None:
        """Move the finished side folder into place (replacing an older one of the same round)."""
        if self.final.exists():
            shutil.rmtree(self.final)
        os.replace(self.tmp, self.final)


def discard_round_scores(root: str | Path, number: int) -> None:
    """Remove round ``number``'s scores and its side folder (a failed round leaves nothing behind)."""
    d = score_dir(root, number)
    shutil.rmtree(d.with_name(d.name + ".tmp"), ignore_errors=True)
    shutil.rmtree(d, ignore_errors=True)


def prune_scores(root: str | Path, number: int, keep: int = KEEP_SCORE_ROUNDS) -> None:
    """Remove the scores of rounds ``number - keep`` and older."""
    for d in sorted((Path(root) / "scores").glob("round_*")):
        if d.name.endswith(".tmp"):
            continue
        try:
            n = int(d.name.split("_")[1])
        except ValueError:
            continue
        if n <= number - keep:
            shutil.rmtree(d, ignore_errors=True)
