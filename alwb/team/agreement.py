"""Agreement between annotators on the items given to more than one (the overlap, :mod:`alwb.team.leases`), the review
queue of their disagreements, and reviewers' decisions.

An annotator's answer to an item is their latest human label of it (the label history keeps every answer even when
a later one superseded it); "none of these classes" is an answer too. Reviewers' decisions are not answers.

- :func:`pairwise_kappa`: Cohen's kappa (scikit-learn's ``cohen_kappa_score``) for every pair of annotators on the
  items both answered, with that number of items.
- :func:`fleiss_kappa`: Fleiss' kappa of an items x categories count table (every item rated by the same number of
  raters); :func:`overall_agreement` applies it to the items answered by the most common number of annotators.
- :func:`review_queue`: items whose annotators disagree and that no reviewer has decided since their last answer.
- :func:`decide`: a reviewer's decision becomes the item's label (the annotators' labels stay in the history).
"""

from __future__ import annotations

import itertools
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from ..errors import AlwbError
from ..store import Store

NONE_ANSWER = "<none>"


@dataclass(frozen=True)
class PairAgreement:
    a: str
    b: str
    n_items: int
    kappa: float | None  # None when undefined (both gave one and the same answer to every item)
    agreement: float  # share of items with the same answer


@dataclass(frozen=True)
class Overall:
    kappa: float | None
    n_items: int
    raters_per_item: int
    n_annotators: int


@dataclass(frozen=True)
class Disagreement:
    item_id: int
    answers: dict[str, str | None]  # annotator -> class (None: "none of these")


def answers(store: Store) -> dict[int, dict[str, tuple[str | None, float]]]:
    """{item_id: {annotator: (latest answer, when)}} over items answered by two annotators or more."""
    out: dict[int, dict[str, tuple[str | None, float]]] = {}
    for r in store.annotator_answers():  # oldest first: a later answer replaces an earlier one
        out.setdefault(int(r["item_id"]), {})[str(r["annotator"])] = (r["class"], float(r["created_at"]))
    return {i: a for i, a in out.items() if len(a) >= 2}


def pairwise_kappa(store: Store) -> list[PairAgreement]:
    """Cohen's kappa per pair of annotators who answered at least one item in common."""
    from sklearn.metrics import cohen_kappa_score

    per_item = answers(store)
    names = sorted({a for ans in per_item.values() for a in ans})
    out = []
    for a, b in itertools.combinations(names, 2):
        both = [(ans[a][0], ans[b][0]) for ans in per_item.values() if a in ans and b in ans]
        if not both:
            continue
        ya = [NONE_ANSWER if x is None else x for x, _ in both]
        yb = [NONE_ANSWER if y is None else y for _, y in both]
        agree = float(np.mean([x == y for x, y in zip(ya, yb, strict=True)]))
        # one answer used by both for every item: chance agreement is 1 and kappa is 0/0
        kappa = None if len(set(ya) | set(yb)) < 2 else float(cohen_kappa_score(ya, yb))
        out.append(PairAgreement(a, b, len(both), kappa, agree))
    return out


def fleiss_kappa(table: npt.ArrayLike) -> float:
    """Fleiss' kappa of ``table`` (shape ``(n_items, n_categories)``: how many raters put item i in category j;
    every row sums to the same number of raters, at least 2).

    kappa = (P_bar - P_e) / (1 - P_e), with P_i = (sum_j n_ij^2 - n) / (n (n - 1)), P_bar the mean of P_i and
    P_e = sum_j p_j^2 over the category shares p_j (Fleiss 1971).
    """
    t = np.asarray(table, dtype=np.float64)
    if t.ndim != 2 or t.shape[0] == 0 or t.shape[1] == 0:
        raise ValueError("table must be a non-empty (n_items, n_categories) array")
    if (t < 0).any():
        raise ValueError("counts must not be negative")
    n = t.sum(axis=1)
    if not np.all(n == n[0]) or n[0] < 2:
        raise ValueError("every item needs the same number of raters, at least 2")
    raters = n[0]
    p_i = ((t**2).sum(axis=1) - raters) / (raters * (raters - 1))
    p_bar = p_i.mean()
    p_j = t.sum(axis=0) / t.sum()
    p_e = float((p_j**2).sum())
    if p_e == 1.0:
        return float("nan")
    return float((p_bar - p_e) / (1 - p_e))


def overall_agreement(store: Store) -> Overall | None:
    """Fleiss' kappa over the items answered by the most common number of annotators (None without such items)."""
    per_item = answers(store)
    if not per_item:
        return None
    counts = Counter(len(a) for a in per_item.values())
    k = max(counts, key=lambda c: (counts[c], c))
    items = [a for a in per_item.values() if len(a) == k]
    cats = sorted({NONE_ANSWER if v is None else v for a in items for v, _ in a.values()})
    index = {c: j for j, c in enumerate(cats)}
    table = np.zeros((len(items), len(cats)), dtype=np.int64)
    for i, a in enumerate(items):
        for v, _ in a.values():
            table[i, index[NONE_ANSWER if v is None else v]] += 1
    kappa = fleiss_kappa(table)
    names = {n for a in items for n in a}
    return Overall(None if np.isnan(kappa) else kappa, len(items), k, len(names))


def review_queue(store: Store) -> list[Disagreement]:
    """Items whose annotators' latest answers differ, without a reviewer's decision after the last of them."""
    decided: dict[int, float] = {}
    for r in store.review_rows():
        decided[int(r["item_id"])] = max(decided.get(int(r["item_id"]), 0.0), float(r["decided_at"]))
    out = []
    for item_id, ans in sorted(answers(store).items()):
        if len({v for v, _ in ans.values()}) < 2:
            continue
        if decided.get(item_id, -1.0) >= max(t for _, t in ans.values()):
            continue
        out.append(Disagreement(item_id, {n: v for n, (v, _) in sorted(ans.items())}))
    return out


def decide(store: Store, item_id: int, reviewer: str, class_name: str | None, *, now: float | None = None) -> None:
    """Make ``class_name`` (None: "none of these") the label of ``item_id`` on a reviewer's word.

    In a project with accounts the reviewer must be an enabled reviewer or admin.
    """
    from . import users

    if users.auth_required(store):
        row = store.user_row(reviewer)
        if row is None or row["disabled"] or row["role"] not in ("reviewer", "admin"):
            raise AlwbError(f"{reviewer!r} may not review: only reviewers and admins decide disagreements")
    store.record_review(item_id, reviewer, class_name, time.time() if now is None else now)


def agreement_with_reviews(store: Store) -> dict[str, tuple[int, int]]:
    """{annotator: (answers equal to the reviewer's decision, decisions on items they answered)}."""
    per_item: dict[int, dict[str, Any]] = {}
    for r in store.annotator_answers():
        per_item.setdefault(int(r["item_id"]), {})[str(r["annotator"])] = r["class"]
    out: dict[str, list[int]] = {}
    latest: dict[int, Any] = {}
    for r in store.review_rows():  # oldest first: the latest decision counts
        latest[int(r["item_id"])] = r["class"]
    for item_id, decision in latest.items():
        for name, answer in per_item.get(item_id, {}).items():
            hit = out.setdefault(name, [0, 0])
            hit[0] += int(answer == decision)
            hit[1] += 1
    return {n: (h[0], h[1]) for n, h in sorted(out.items())}


def labels_per_hour(store: Store) -> list[tuple[str, float, int]]:
    """(annotator, start of the hour as a Unix time, answers given in it), reviewers' decisions left out."""
    counts: Counter[tuple[str, float]] = Counter()
    for r in store.annotator_answers():
        counts[(str(r["annotator"]), float(r["created_at"]) // 3600 * 3600)] += 1
    return [(name, hour, n) for (name, hour), n in sorted(counts.items())]
