"""What ``alwb issues`` and ``alwb similar`` print: the findings with paths as ``alwb query`` prints them (the file
on this machine, read through the project's image root)."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from ..project import Project
    from . import Findings


def current_findings(proj: Project, *, refresh: bool = False, quiet: bool = False) -> Findings:
    """The saved findings when they still hold, else computed now (embedding first where the rounds do not);
    ``refresh`` always recomputes.

    Raises
    ------
    AlwbError
        No embeddings can be had (the reason says how to get them).
    """
    from ..errors import AlwbError
    from . import analyse, ensure_embeddings, is_fresh, load_embeddings, load_findings

    found = None if refresh else load_findings(proj)
    if found is not None and is_fresh(proj, found):
        return found

    def progress(phase: str, done: int, total: int) -> None:
        if not quiet and sys.stderr.isatty():
            print(f"\r{phase} {done}/{total}", end="", file=sys.stderr, flush=True)

    try:
        report = ensure_embeddings(proj, progress=progress)
        if report is not None and report.embedded and not quiet:
            print(f"\r{report.summary()}", file=sys.stderr)
        emb = load_embeddings(proj)
        if emb is None:
            raise LookupError("no embeddings")
        return analyse(proj, emb)
    except LookupError as exc:
        from . import _why_none

        raise AlwbError(_why_none(proj)) from exc
    except Exception as exc:
        from ..learning.backbones import WeightsError

        if isinstance(exc, WeightsError):
            raise AlwbError(str(exc)) from exc
        raise


def issues_json(proj: Project, found: Findings, *, limit: int | None = None) -> dict[str, Any]:
    """The object ``alwb issues --json`` prints (keys ``label_issues``, ``near_duplicates``, ``outliers``,
    ``leakage``); ``score`` of a label issue is 1 − cleanlab's self-confidence (higher: more likely wrong)."""
    images = proj.store.image_root()

    def loc(p: str) -> str:
        return str(images.locate(p))

    issues = found.label_issues if limit is None else found.label_issues[:limit]
    leak = found.leakage
    return {
        "label_issues": [
            {"path": loc(d["path"]), "label": d["label"], "suggested": d["suggested"], "score": d["score"]}
            for d in issues
        ],
        "near_duplicates": [[loc(m["path"]) for m in g] for g in found.near_duplicates],
        "outliers": [{"path": loc(d["path"]), "score": d["score"]} for d in found.outliers],
        "leakage": {
            "validation_items_with_copy": leak["validation_items_with_copy"],
            "accuracy_without": leak["accuracy_without"],
            "interval_without": leak["interval_without"],
        },
    }


def _pct(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.1%}"


def format_issues(proj: Project, found: Findings, *, limit: int = 20) -> str:
    """The text of ``alwb issues``."""
    from . import flag_precision

    data = issues_json(proj, found)
    out = [
        f"embeddings: {found.backbone}, {found.embedded} image(s)"
        + (f" ({found.missing} not embedded yet)" if found.missing else "")
        + f"; {found.labeled} labeled image(s) checked"
    ]
    prec = flag_precision(proj)
    out.append("")
    out.append(
        f"likely label errors: {found.flagged_total} flagged"
        + (f" (the {limit} most likely)" if found.flagged_total > limit else "")
    )
    if prec["decided"]:
        out.append(
            f"  reviewers confirmed {prec['confirmed']} of the {prec['decided']} flags they answered "
            f"({_pct(prec['precision'])})"
        )
    if data["label_issues"]:
        out.append("score\tlabel\tsuggested\tpath")
        for d in data["label_issues"][:limit]:
            out.append(f"{d['score']:.3f}\t{d['label']}\t{d['suggested']}\t{d['path']}")
    thr = found.duplicate_threshold
    out.append("")
    out.append(
        f"near-duplicate groups: {len(data['near_duplicates'])} (distance below {thr['factor']:g} × the median "
        f"nearest-neighbour distance, {thr['threshold']:.3f})"
    )
    for g in data["near_duplicates"][:limit]:
        out.append("  " + "  |  ".join(g))
    out.append("")
    out.append(f"outliers: {len(data['outliers'])}")
    for d in data["outliers"][:limit]:
        out.append(f"{d['score']:.2f}\t{d['path']}")
    leak = found.leakage
    out.append("")
    out.append(
        f"leakage: {leak['validation_items_with_copy']} of {leak['validation_items']} labeled validation item(s) "
        "have a near-copy among the training items"
    )
    if leak["accuracy"] is not None:
        lo, hi = leak["interval"]
        out.append(f"  validation accuracy {_pct(leak['accuracy'])} (95% {_pct(lo)} – {_pct(hi)})")
        if leak["accuracy_without"] is not None:
            lo, hi = leak["interval_without"]
            out.append(f"  without them        {_pct(leak['accuracy_without'])} (95% {_pct(lo)} – {_pct(hi)})")
    else:
        out.append("  (no model has scored the validation sample yet: train a round for the accuracy without them)")
    return "\n".join(out)
