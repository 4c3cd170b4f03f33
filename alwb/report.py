"""Plain-text summaries of a round and of a project's status, shared by the CLI and the terminal demo."""

from __future__ import annotations

from typing import Any


def _fmt(x: Any, spec: str = ".3f") -> str:
    return "n/a" if x is None else format(x, spec)


def format_round(
    number: int, n_labeled: int, metrics: dict[str, Any], timings: dict[str, float], extra: str = ""
) -> str:
    """One line: the round's labels, validation accuracy with its interval, macro-F1 and timings."""
    val = metrics.get("val") or {}
    if val.get("n"):
        acc = (
            f"val accuracy {_fmt(val['accuracy'])} [{_fmt(val['accuracy_low'])}, {_fmt(val['accuracy_high'])}] "
            f"(n={val['n']}), macro-F1 {_fmt(val['macro_f1'])}"
        )
    else:
        acc = "val accuracy n/a (no validation labels yet)"
    t = (
        f"train {timings.get('train_seconds', 0):.1f} s, score {timings.get('score_seconds', 0):.1f} s, "
        f"round {timings.get('round_seconds', 0):.1f} s"
    )
    return f"round {number}: {n_labeled} labels, {acc}; {t}" + (f"; {extra}" if extra else "")


def format_status(st: dict[str, Any]) -> str:
    """The text of ``alwb status`` from :meth:`alwb.loop.Project.status`."""
    it = st["items"]
    lines = [
        f"project {st['project']}",
        f"items: {it['total']} accepted, {it['labeled']} labeled "
        f"({', '.join(f'{k} {v}' for k, v in it['labeled_by_source'].items()) or 'none'}), "
        f"{it['unlabeled']} unlabeled, {it['rejected']} rejected",
        f"validation set: {it['validation']['labeled']} of {it['validation']['size']} labeled; "
        f"pseudo-labels: {it['pseudo']}",
    ]
    for reason, n in it["rejected_reasons"].items():
        lines.append(f"  rejected {n}: {reason}")
    lines.append("labels per class:")
    for c, by in st["classes"].items():
        lines.append(f"  {c}: {sum(by.values())} ({', '.join(f'{k} {v}' for k, v in by.items()) or '-'})")
    lines.append(f"rounds: {len(st['rounds'])}")
    for r in st["rounds"]:
        if r["status"] == "done":
            lines.append("  " + format_round(r["number"], r["n_labeled"], r["metrics"], r["timings"]))
        else:
            lines.append(f"  round {r['number']}: {r['status']}" + (f" ({r['error']})" if r["error"] else ""))
    m = st["model"]
    lines.append(
        "model: "
        + (
            "none yet"
            if m is None
            else f"round {m['round']}, {m['arch']} {m['geometry']['channels']}x"
            f"{m['geometry']['image_size']}px, {m['path']}"
        )
    )
    return "\n".join(lines)
