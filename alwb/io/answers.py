"""Reading an answers CSV (``id`` or ``path``, and ``label``) into ``(item_id, class or None)`` pairs."""

from __future__ import annotations

import csv
from collections.abc import Iterable
from pathlib import Path

from ..errors import LabelError
from ..store import Store

#: the label that means "none of these classes"
NONE_LABEL = "<none>"


def read_answers(store: Store, csv_path: str | Path, classes: Iterable[str]) -> list[tuple[int, str | None]]:
    """The answers in ``csv_path``, checked against the store and ``classes``.

    Every bad line (unknown path, id or class, empty label, an item answered twice) is reported with its line
    number in one :class:`LabelError`; a file without answers is an error too. ``label`` may be
    :data:`NONE_LABEL`. Paths are absolute, or relative to the CSV's folder or the current folder.
    """
    csv_path = Path(csv_path)
    try:
        fh = open(csv_path, newline="", encoding="utf-8-sig")  # noqa: SIM115 - closed by the with below
    except OSError as exc:
        raise LabelError(f"cannot read {csv_path}: {exc.strerror or exc}") from None
    errors: list[str] = []
    answers: list[tuple[int, str | None]] = []
    known = set(classes)
    with fh:
        reader = csv.DictReader(fh)
        cols = [c.strip().lower() for c in (reader.fieldnames or [])]
        if "label" not in cols or not ({"id", "path"} & set(cols)):
            raise LabelError(f"{csv_path}: needs a 'label' column and an 'id' or 'path' column")
        reader.fieldnames = cols
        seen: dict[int, int] = {}
        for row in reader:
            line = reader.line_num
            label = (row.get("label") or "").strip()
            item_id = _resolve_item(store, row, csv_path.parent)
            if isinstance(item_id, str):
                errors.append(f"line {line}: {item_id}")
                continue
            if not label:
                errors.append(f"line {line}: empty label")
                continue
            if label != NONE_LABEL and label not in known:
                errors.append(f"line {line}: unknown class {label!r}")
                continue
            if item_id in seen:
                errors.append(f"line {line}: item already answered on line {seen[item_id]}")
                continue
            seen[item_id] = line
            answers.append((item_id, None if label == NONE_LABEL else label))
    if errors:
        more = f" (and {len(errors) - 10} more)" if len(errors) > 10 else ""
        raise LabelError(f"{csv_path}: nothing written; " + "; ".join(errors[:10]) + more)
    if not answers:
        raise LabelError(f"{csv_path}: no answers in the file")
    return answers


def _resolve_item(store: Store, row: dict[str, str | None], base: Path) -> int | str:
    """The item id a row names, or why it names none."""
    raw_id = (row.get("id") or "").strip()
    if raw_id:
        if not (raw_id.isascii() and raw_id.isdecimal()):
            return f"id {raw_id!r} is not a number"
        item = store.item(int(raw_id))
        if item is None or item["status"] != "ok":
            return f"unknown item id {raw_id}"
        return int(raw_id)
    raw = (row.get("path") or "").strip()
    if not raw:
        return "neither id nor path given"
    p = Path(raw)
    candidates = [p] if p.is_absolute() else [base / p, Path.cwd() / p]
    for c in candidates:
        item = store.item_by_path(str(c.resolve()))
        if item is not None:
            if item["status"] != "ok":
                return f"{raw} was rejected at import ({item['reason']})"
            return int(item["id"])
    return f"unknown path {raw!r}"
