"""Plain-text summaries of a round and of a project's status, shared by the CLI, the terminal demo and the
Settings page (:func:`training_status`, :func:`format_training`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from ..project import Project

#: the reason shown for a project whose rounds were recorded before training modes existed
OLDER_PROJECT_REASON = "from-scratch model (the project's rounds were recorded before pretrained backbones)"


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


def round_decisions(metrics: dict[str, Any]) -> list[str]:
    """What a round decided by itself and why, from its recorded metrics: whether its pseudo-labels passed their
    check on the validation sample (``pseudo_check``) and which strategy ``auto`` chose (``handover``)."""
    out = []
    check = metrics.get("pseudo_check")
    if check:
        state = "on" if check.get("use") else "off this round"
        out.append(f"pseudo-labels {state}: {check.get('reason', '')}")
    hand = metrics.get("handover")
    if hand:
        name = "margin sampling" if hand.get("use") == "margin" else "typical items (TypiClust)"
        out.append(f"auto strategy: {name} next; {hand.get('reason', '')}")
    return out


def format_status(st: dict[str, Any]) -> str:
    """The text of ``alwb status`` from :meth:`alwb.project.Project.status`."""
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
            if r is st["rounds"][-1]:
                lines += [f"    {d}" for d in round_decisions(r["metrics"])]
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
    if st.get("training"):
        lines.append(format_training(st["training"]))
    if st.get("query"):
        q = st["query"]
        now = f", now {q['uses']}: {q['why']}" if q["strategy"] == "auto" else ""
        lines.append(f"query: {q['strategy']}{now}")
    if st.get("advice"):
        from ..learning.advice import format_advice

        lines.append(format_advice(st["advice"]))
    return "\n".join(lines)


def training_status(project: Project) -> dict[str, Any]:
    """How the project trains and why: ``mode``, ``mode_reason``, ``backbone`` (None for ``scratch``), ``requested``
    (the setting, :attr:`alwb.config.TrainConfig.mode`) and ``decided`` (True: as the last round recorded it).

    After a round this is what the round recorded in the project's geometry (``store.get_meta("geometry")``;
    projects from before training modes lack the keys and trained from scratch), as long as the settings still
    agree with it. Before any round, or once the mode / backbone setting changed, or when a photo project that
    trained from scratch for want of weights now has them: what the next round would choose,
    the one training-plan decision, :func:`alwb.learning.plan.decide_plan` (through
    :meth:`alwb.project.Project.plan`), on the
    images' median shorter side, the device setting and the backbones whose weights are on this machine. Nothing is
    downloaded. ``input_size`` is the backbone's input size (None for ``scratch``).
    """
    plan, decided = project.plan()
    return {
        "mode": plan.mode,
        "mode_reason": plan.why,
        "backbone": plan.backbone if plan.mode in ("head", "finetune") else None,
        "input_size": plan.input_size,
        "requested": plan.requested_mode,
        "decided": decided,
    }


def query_status(project: Project) -> dict[str, Any]:
    """The project's query strategy: ``strategy`` (the setting), ``uses`` (what ``auto`` uses now, else the same)
    and ``why`` (:meth:`alwb.project.Project.auto_choice`; for other strategies what they do)."""
    from ..learning.query import strategy as get_strategy

    name = project.config.strategy
    if name != "auto":
        return {"strategy": name, "uses": name, "why": get_strategy(name).description}
    use, why = project.auto_choice()
    return {"strategy": name, "uses": use, "why": why}


def format_training(t: dict[str, Any]) -> str:
    """One line from :func:`training_status`, e.g. ``training: head on dinov2_vits14 (photos (224 px) ...)``."""
    what = t["mode"] or t["requested"]
    if t.get("backbone"):
        what += f" on {t['backbone']}" + (f" at {t['input_size']} px" if t.get("input_size") else "")
    when = "" if t["decided"] else "next round: "
    return f"training: {when}{what} ({t['mode_reason']})"
