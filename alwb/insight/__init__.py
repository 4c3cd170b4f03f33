"""Seeing the whole dataset from the cached embeddings: likely label errors, near-duplicates and validation leakage,
outliers, a 2-D map and similar images.

The front door. :func:`analyse` computes the findings of a project from the embeddings :mod:`.source` picks (the
current backbone's cache in ``head`` mode) and saves them in ``PROJECT/cache/insight_<key>.json`` with a fingerprint
of what they were computed from (embedded items, labels, round); :func:`load_findings` reads them back and
:func:`is_fresh` says whether they still hold. :func:`refresh` does everything (embeds where the rounds do not,
analyses, lays out the map) and is what the background job runs (:mod:`.jobs`), so labeling never waits for it.
:func:`record_verdicts` applies and records reviewers' answers to flags in one transaction and :func:`flag_precision`
is the precision of alwb's own flags measured by them.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from ..store.flags import Verdict
from . import duplicates, label_issues, neighbours, outliers
from .source import NO_BACKBONE, Embeddings, ensure_embeddings, insight_backbone, load_embeddings

if TYPE_CHECKING:  # pragma: no cover
    from ..project import Project

__all__ = [
    "NO_BACKBONE",
    "Embeddings",
    "Findings",
    "Verdict",
    "analyse",
    "ensure_embeddings",
    "flag_precision",
    "fingerprint",
    "insight_backbone",
    "is_fresh",
    "label_items",
    "load_embeddings",
    "load_findings",
    "load_map",
    "compute_map",
    "record_verdicts",
    "refresh",
    "similar",
]

FORMAT = "alwb-insight/1"
#: label issues kept in the findings (the most likely wrong first)
MAX_LABEL_ISSUES = 500
#: neighbours in the graph shared by near-duplicates and outliers
K = 10

ProgressFn = Callable[[str, int, int], None]


@dataclass
class Findings:
    """What :func:`analyse` found (JSON-able lists of dicts; ``path`` is the stored path, ``item_id`` the item)."""

    backbone: str
    key: str
    fingerprint: dict[str, Any]
    computed_at: float
    seconds: dict[str, float]
    embedded: int
    missing: int
    labeled: int
    label_issues: list[dict[str, Any]]
    flagged_total: int
    near_duplicates: list[list[dict[str, Any]]]
    duplicate_threshold: dict[str, float]
    outliers: list[dict[str, Any]]
    leakage: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (the cache file's content)."""
        return {"format": FORMAT, **self.__dict__}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Findings:
        """Read :meth:`to_dict`'s output."""
        return cls(**{k: v for k, v in d.items() if k != "format"})


def _file(root: Path, key: str, suffix: str) -> Path:
    return Path(root) / "cache" / f"insight_{key}{suffix}"


def _write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


def fingerprint(proj: Project, emb: Embeddings) -> dict[str, Any]:
    """What findings depend on: the embeddings (which items), the labels (count and newest label) and the round."""
    n_labels, last_label = proj.store.label_state()
    return {
        "key": emb.key,
        "items": int(emb.ids.size),
        "ids_sum": int(emb.ids.sum()),
        "labels": n_labels,
        "last_label": last_label,
        "round": proj.store.current_round(),
    }


def _labels(proj: Project) -> dict[int, tuple[str, int, str]]:
    """item id → (class, class position, split) for the current human/import labels (not "none of these")."""
    return {
        int(r["item_id"]): (str(r["class"]), int(r["position"]), str(r["split"])) for r in proj.store.current_labels()
    }


def _predictions(proj: Project, ids: Sequence[int]) -> dict[int, str]:
    """The latest round's guess for the items it scored."""
    scores = proj.scores()
    if scores is None or not len(ids):
        return {}
    arr = np.asarray(ids, dtype=np.int64)
    rows = scores.rows(arr)
    have = rows >= 0
    if not have.any():
        return {}
    probs = np.asarray(scores.probs_at(rows[have]))
    return {int(i): scores.classes[int(p.argmax())] for i, p in zip(arr[have], probs, strict=True)}


def analyse(proj: Project, emb: Embeddings | None = None, *, factor: float = duplicates.DEFAULT_FACTOR) -> Findings:
    """Compute the findings from the embeddings and save them (``cache/insight_<key>.json``) with the prepared
    neighbour vectors (``.vec.npy``, for :func:`similar`).

    Raises
    ------
    LookupError
        No embeddings yet (:data:`NO_BACKBONE` when no backbone is here).
    """
    emb = emb or load_embeddings(proj)
    if emb is None:
        raise LookupError(_why_none(proj))
    fp = fingerprint(proj, emb)
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    paths = {int(r["id"]): str(r["path"]) for r in proj.store.items()}
    labels = _labels(proj)
    classes = proj.classes
    pos = {int(i): r for r, i in enumerate(emb.ids)}

    # likely label errors
    lab_ids = np.asarray([i for i in emb.ids.tolist() if i in labels], dtype=np.int64)
    issues: list[dict[str, Any]] = []
    flagged_total = 0
    if lab_ids.size >= 10 and len({labels[int(i)][1] for i in lab_ids}) >= 2:
        y = np.asarray([labels[int(i)][1] for i in lab_ids], dtype=np.int64)
        x = emb.emb[[pos[int(i)] for i in lab_ids]]
        found = label_issues.label_issues(x, y, len(classes))
        flagged_total = int(found.rows.size)
        for r, s, sc in zip(found.rows[:MAX_LABEL_ISSUES], found.suggested, found.score, strict=False):
            item = int(lab_ids[r])
            issues.append(
                {
                    "item_id": item,
                    "path": paths.get(item, ""),
                    "label": labels[item][0],
                    "suggested": classes[int(s)],
                    "score": round(float(sc), 4),
                    "split": labels[item][2],
                }
            )
    seconds["label_issues"] = time.perf_counter() - t0

    # one neighbour graph for near-duplicates and outliers
    t1 = time.perf_counter()
    x = neighbours.prepare(emb.emb)
    np.save(_file(proj.root, emb.key, ".vec.npy"), x)
    np.save(_file(proj.root, emb.key, ".ids.npy"), emb.ids)
    dist, idx = neighbours.knn(x, K)
    groups = duplicates.near_duplicates(dist, idx, factor)
    seconds["neighbours"] = time.perf_counter() - t1

    def member(row: int) -> dict[str, Any]:
        item = int(emb.ids[row])
        lab = labels.get(item)
        return {
            "item_id": item,
            "path": paths.get(item, ""),
            "label": lab[0] if lab else None,
            "split": _split(proj, item, lab),
        }

    near = [[member(int(r)) for r in g] for g in groups.groups]
    scores = outliers.outlier_scores(dist)
    flagged = outliers.flag_outliers(scores)
    outs = [
        {"item_id": int(emb.ids[r]), "path": paths.get(int(emb.ids[r]), ""), "score": round(float(scores[r]), 3)}
        for r in flagged
    ]

    # leakage: labeled validation items with a near-copy among the training (labeled pool) items
    t2 = time.perf_counter()
    val_ids = [i for i, v in labels.items() if v[2] == "val" and i in pos]
    train_ids = [i for i, v in labels.items() if v[2] == "pool" and i in pos]
    leak_rows = duplicates.leaked_rows(x, [pos[i] for i in val_ids], [pos[i] for i in train_ids], groups.threshold)
    leaked = {int(emb.ids[v]): int(emb.ids[t]) for v, t in leak_rows.items()}
    leak = duplicates.leakage(val_ids, leaked, {i: labels[i][0] for i in val_ids}, _predictions(proj, val_ids))
    leak_d = leak.to_dict()
    leak_d["scored"] = leak.scored
    leak_d["pairs"] = [
        {"validation": {"item_id": v, "path": paths.get(v, "")}, "training": {"item_id": t, "path": paths.get(t, "")}}
        for v, t in leak.pairs.items()
    ]
    seconds["leakage"] = time.perf_counter() - t2
    seconds["total"] = time.perf_counter() - t0
    out = Findings(
        backbone=emb.backbone,
        key=emb.key,
        fingerprint=fp,
        computed_at=time.time(),
        seconds={k: round(v, 3) for k, v in seconds.items()},
        embedded=int(emb.ids.size),
        missing=emb.missing,
        labeled=int(lab_ids.size),
        label_issues=issues,
        flagged_total=flagged_total,
        near_duplicates=near,
        duplicate_threshold={"factor": float(factor), "threshold": groups.threshold, "median": groups.median},
        outliers=outs,
        leakage=leak_d,
    )
    _write_json(_file(proj.root, emb.key, ".json"), out.to_dict())
    return out


def _split(proj: Project, item: int, lab: tuple[str, int, str] | None) -> str:
    if lab is not None:
        return lab[2]
    row = proj.store.item(item)
    return str(row["split"]) if row is not None else "pool"


def _why_none(proj: Project) -> str:
    name, by_rounds = insight_backbone(proj)
    if name is None:
        return NO_BACKBONE
    if by_rounds:
        return f"no image is embedded with {name} yet: the next training round embeds them"
    return f"no image is embedded with {name} yet: the background job embeds them (or run `alwb issues PROJECT`)"


def current_key(proj: Project) -> str | None:
    """The cache key the findings would be saved under now (None: no backbone here)."""
    from .source import open_cache

    name, _ = insight_backbone(proj)
    if name is None:
        return None
    try:
        return open_cache(proj, name).key
    except Exception:
        return None


def load_findings(proj: Project) -> Findings | None:
    """The saved findings for the project's current insight backbone (None: never computed)."""
    key = current_key(proj)
    if key is None:
        return None
    try:
        d = json.loads(_file(proj.root, key, ".json").read_text())
    except (OSError, ValueError):
        return None
    if d.get("format") != FORMAT:
        return None
    return Findings.from_dict(d)


def is_fresh(proj: Project, found: Findings) -> bool:
    """True when the embeddings, labels and round are what ``found`` was computed from."""
    emb_ids = _embedded_ids(proj)
    if emb_ids is None:
        return False
    n_labels, last = proj.store.label_state()
    fp = found.fingerprint
    return (
        fp.get("items") == int(emb_ids.size)
        and fp.get("ids_sum") == int(emb_ids.sum())
        and fp.get("labels") == n_labels
        and fp.get("last_label") == last
        and fp.get("round") == proj.store.current_round()
    )


def _embedded_ids(proj: Project) -> npt.NDArray[np.int64] | None:
    from .source import open_cache

    name, _ = insight_backbone(proj)
    if name is None:
        return None
    try:
        cache = open_cache(proj, name)
    except Exception:
        return None
    return np.intersect1d(np.asarray(proj.store.item_ids(), dtype=np.int64), cache.embedded_ids())


# ------------------------------------------------------------------------------------------------- the map
def compute_map(proj: Project, emb: Embeddings | None = None, *, method: str = "umap") -> dict[str, Any]:
    """Lay out the embeddings in 2-D (:func:`alwb.insight.layout.layout_2d`) and save the map
    (``cache/insight_<key>.map.npz``); returns :func:`load_map`'s dict."""
    from .layout import layout_2d

    emb = emb or load_embeddings(proj)
    if emb is None:
        raise LookupError(_why_none(proj))
    xy, used, secs = layout_2d(emb.emb, method=method, seed=None if len(emb.ids) > 5000 else 0)
    path = _file(proj.root, emb.key, ".map.npz")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp.npz")
    np.savez(tmp, ids=emb.ids, xy=xy, method=np.array(used), seconds=np.array(secs))
    os.replace(tmp, path)
    return {"ids": emb.ids, "xy": xy, "method": used, "seconds": secs, "key": emb.key}


def load_map(proj: Project) -> dict[str, Any] | None:
    """The saved map of the current insight backbone: ``ids``, ``xy``, ``method``, ``seconds`` (None: none yet)."""
    key = current_key(proj)
    if key is None:
        return None
    try:
        with np.load(_file(proj.root, key, ".map.npz")) as z:
            return {
                "ids": z["ids"].astype(np.int64),
                "xy": z["xy"].astype(np.float32),
                "method": str(z["method"]),
                "seconds": float(z["seconds"]),
                "key": key,
            }
    except (OSError, ValueError, KeyError):
        return None


# ------------------------------------------------------------------------------------------------- refresh
def refresh(proj: Project, *, progress: ProgressFn | None = None, with_map: bool = True) -> Findings:
    """Embed what is missing (where the rounds do not), analyse, and lay out the map: the background job."""
    ensure_embeddings(proj, progress=progress)
    emb = load_embeddings(proj)
    if emb is None:
        raise LookupError(_why_none(proj))
    found = analyse(proj, emb)
    if with_map:
        old = load_map(proj)
        if old is None or not np.array_equal(old["ids"], emb.ids):
            compute_map(proj, emb)
    return found


# ------------------------------------------------------------------------------------------------- similar
def similar(proj: Project, item_id: int, k: int = 8) -> list[dict[str, Any]]:
    """The ``k`` items nearest to ``item_id`` on the embeddings (scikit-learn ``NearestNeighbors``), nearest first:
    ``item_id``, ``path`` (stored), ``distance``, ``label``.

    Raises
    ------
    LookupError
        No embeddings, or the item has none (yet).
    """
    ids, x = _prepared(proj)
    row = np.searchsorted(ids, int(item_id))
    if row >= len(ids) or ids[row] != int(item_id):
        raise LookupError(f"item {item_id} has no embedding yet")
    dist, idx = neighbours.nearest_to(x, x[row : row + 1], int(k) + 1)
    labels = _labels(proj)
    out = []
    for d, r in zip(dist[0], idx[0], strict=True):
        other = int(ids[r])
        if other == int(item_id):
            continue
        lab = labels.get(other)
        out.append(
            {
                "item_id": other,
                "path": str(proj.store.item(other)["path"]),
                "distance": round(float(d), 4),
                "label": lab[0] if lab else None,
            }
        )
    return out[: int(k)]


def _prepared(proj: Project) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
    """``(ids, neighbour vectors)``: those saved by :func:`analyse` when they are of the items embedded now (no
    embedding is read), else computed now from the embeddings."""
    key = current_key(proj)
    have = _embedded_ids(proj)
    if key is not None and have is not None:
        try:
            ids = np.load(_file(proj.root, key, ".ids.npy"))
            if np.array_equal(ids, have):
                return ids, np.load(_file(proj.root, key, ".vec.npy"), mmap_mode="r")
        except (OSError, ValueError):
            pass
    emb = load_embeddings(proj)
    if emb is None:
        raise LookupError(_why_none(proj))
    return emb.ids, neighbours.prepare(emb.emb)


# ------------------------------------------------------------------------------------------------- answers
def record_verdicts(proj: Project, verdicts: Sequence[Verdict], reviewer: str | None) -> tuple[str, int]:
    """Apply reviewers' answers to flags and record them, in one transaction: ``(batch id, labels written)``."""
    from ..errors import LabelError

    classes = set(proj.classes)
    for v in verdicts:
        row = proj.store.item(int(v.item_id))
        if row is None or row["status"] != "ok":
            raise LabelError(f"item {v.item_id} does not exist or was rejected")
        if not v.remove and v.answer is not None and v.answer not in classes:
            raise LabelError(f"unknown class {v.answer!r}")
    batch = uuid.uuid4().hex
    n = proj.store.record_verdicts(list(verdicts), reviewer, batch, time.time())
    return batch, n


def label_items(proj: Project, item_ids: Sequence[int], answer: str | None, annotator: str | None) -> tuple[str, int]:
    """One answer for many items (a map selection, a duplicate group), as ONE transaction (:meth:`Project.label`)."""
    return proj.label([(int(i), answer) for i in item_ids], annotator=annotator)


def flag_precision(proj: Project, kind: str = "label") -> dict[str, Any]:
    """The precision of alwb's own flags of ``kind`` as reviewers judged them: ``decided``, ``confirmed`` (the
    label was changed, or "none of these", or the item removed), ``kept`` and ``precision`` (None before any)."""
    rows = proj.store.flag_verdicts(kind)
    latest: dict[int, str] = {}
    for r in rows:
        latest[int(r["item_id"])] = str(r["verdict"])
    kept = sum(v == "kept" for v in latest.values())
    confirmed = len(latest) - kept
    return {
        "decided": len(latest),
        "confirmed": confirmed,
        "kept": kept,
        "precision": confirmed / len(latest) if latest else None,
    }


def decided_items(proj: Project, kind: str = "label") -> set[int]:
    """Items whose flag of ``kind`` a reviewer already answered (they are not offered again)."""
    return {int(r["item_id"]) for r in proj.store.flag_verdicts(kind)}
