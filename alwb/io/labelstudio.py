"""Label Studio projects in and out (its JSON export / import of an image classification project).

In: ``alwb add PROJECT --labelstudio export.json --images DIR``. Every task's image is found under ``DIR`` by its
file name (an upload's ``/data/upload/12/1a2b3c4d-cat.jpg`` is ``cat.jpg``; ``s3://…``, ``https://…`` and
``/data/local-files/?d=…`` likewise); nothing outside ``DIR`` is ever read and no URL is fetched. A file name
found more than once under ``DIR`` is told apart by the folders the reference names, else the task is skipped with
the reason. The images are imported (the same content is never added twice), the validation sample is topped up,
then every annotation with one ``choices`` answer is recorded as a human label with its annotator (the user's
e-mail, else ``ls-user-<id>``) and its time, oldest first, so the latest answer is the item's label and the
others stay in the history. Answers of different annotators that differ go to Review as disagreements
(:func:`alwb.team.agreement.review_queue`); an annotation marked ``ground_truth`` is recorded as a reviewer's decision.
Skipped (``was_cancelled``) and empty annotations, and predictions, are left out and counted. The whole file is one
transaction: a bad file writes no label.

Out: ``OUT/labelstudio.json`` (written by ``alwb export``): one task per image of the project with its
annotations (each annotator's latest answer, reviewers' decisions as ``ground_truth``, imported labels) and the
current model's prediction (``model_version``, ``score`` = its probability, so Label Studio sorts tasks by
confidence), in the format of Label Studio's "Import pre-annotated data"; ``OUT/labelstudio.xml`` is the labeling
configuration it fits. "None of these classes" is the choice ``<none>`` both ways (a name no class can have).
``completed_by`` is left out (Label Studio refuses users it does not know and gives such
annotations to the importing user); alwb's annotator is kept in ``alwb_annotator``, which this module reads back.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import time
import unicodedata
import urllib.parse
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any
from xml.sax.saxutils import quoteattr

from ..errors import AlwbError, LabelError
from ..intake.images import is_image_path

#: The names of the labeling configuration's tags (Label Studio's image classification template uses these).
FROM_NAME, TO_NAME = "choice", "image"
#: How ``data.image`` names an image in the tasks written: Label Studio's local files, relative to the image root.
DEFAULT_PREFIX = "/data/local-files/?d="
#: the choice that stands for "none of these classes" (reserved: no class can be named so)
NONE_CHOICE = "<none>"
#: Label Studio's uploads put 8 hex digits and a dash before the file name.
_UPLOAD_PREFIX = re.compile(r"^[0-9a-f]{8}-")
MAX_ANNOTATOR_CHARS = 100


@dataclass(frozen=True)
class Annotation:
    """One answer read from a task: the class, who gave it and when (Unix time)."""

    label: str | None  # None: "none of these classes" (the choice NONE_CHOICE)
    annotator: str | None
    created_at: float
    ground_truth: bool = False


@dataclass
class LabelStudioImport:
    """What :func:`import_labelstudio` did."""

    tasks: int = 0
    images_found: int = 0
    labels: int = 0
    already: int = 0
    annotators: list[str] = field(default_factory=list)
    new_classes: list[str] = field(default_factory=list)
    skipped_tasks: list[tuple[str, str]] = field(default_factory=list)
    skipped_annotations: dict[str, int] = field(default_factory=dict)
    predictions_ignored: int = 0
    disagreements: int = 0
    ingest_summary: str = ""
    seconds: float = 0.0

    def summary(self) -> str:
        """A few lines for the terminal."""
        lines = [
            f"Label Studio: {self.tasks} task(s), {self.images_found} image(s) found, {self.labels} label(s) recorded "
            f"from {len(self.annotators)} annotator(s) ({', '.join(self.annotators[:8]) or 'none'}"
            f"{', …' if len(self.annotators) > 8 else ''}), {self.already} already recorded, "
            f"{self.disagreements} item(s) with disagreeing annotators (see Review) in {self.seconds:.1f} s",
        ]
        if self.ingest_summary:
            lines.append(self.ingest_summary)
        if self.new_classes:
            lines.append("new classes: " + ", ".join(self.new_classes))
        for reason, n in sorted(self.skipped_annotations.items()):
            lines.append(f"  {n} annotation(s) left out: {reason}")
        if self.predictions_ignored:
            lines.append(f"  {self.predictions_ignored} prediction(s) ignored (only annotations become labels)")
        for where, reason in self.skipped_tasks[:20]:
            lines.append(f"  skipped {where}: {reason}")
        if len(self.skipped_tasks) > 20:
            lines.append(f"  ... and {len(self.skipped_tasks) - 20} more task(s) skipped")
        return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------- reading
def read_tasks(path: str | Path) -> list[dict[str, Any]]:
    """The tasks of a Label Studio JSON export (a JSON list of task objects); a clear error otherwise."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise AlwbError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise AlwbError(f"{path} is not JSON: {exc}") from None
    if isinstance(data, dict) and isinstance(data.get("data"), dict):
        data = [data]  # one task on its own
    if not isinstance(data, list):
        raise AlwbError(f"{path} is not a Label Studio JSON export (expected a list of tasks)")
    bad = [i for i, t in enumerate(data) if not isinstance(t, dict) or not isinstance(t.get("data"), dict)]
    if bad:
        raise AlwbError(
            f"{path}: task(s) at position {', '.join(map(str, bad[:5]))} have no 'data' object "
            "(is this the JSON export, not JSON-MIN or CSV?)"
        )
    return data


def _clean_name(value: object) -> str | None:
    text = "".join(ch for ch in str(value) if unicodedata.category(ch) not in ("Cc", "Cf")).strip()
    return text[:MAX_ANNOTATOR_CHARS] or None


def annotator_of(annotation: dict[str, Any]) -> str | None:
    """Who gave an annotation: alwb's own ``alwb_annotator``, else ``completed_by``'s e-mail (an object in newer
    exports), else ``ls-user-<id>``; None when nothing says."""
    if "alwb_annotator" in annotation:
        mine = annotation["alwb_annotator"]
        return None if mine is None else _clean_name(mine)
    who = annotation.get("completed_by")
    if isinstance(who, dict):
        if who.get("email"):
            return _clean_name(who["email"])
        who = who.get("id")
    if isinstance(who, bool) or who is None or who == "":
        return None
    return _clean_name(f"ls-user-{who}")


def parse_time(value: object) -> float | None:
    """An ISO 8601 time (``2021-03-09T22:16:08.728353Z``; no zone means UTC) as a Unix time; None if unreadable."""
    if not isinstance(value, str) or not value.strip():
        return None
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        t = dt.datetime.fromisoformat(text)
    except ValueError:
        return None
    if t.tzinfo is None:
        t = t.replace(tzinfo=dt.timezone.utc)
    return t.timestamp()


def annotations_of(
    task: dict[str, Any], from_name: str | None, skipped: dict[str, int], default_time: float
) -> list[Annotation]:
    """The usable answers of one task; what is left out is counted in ``skipped`` by reason."""
    anns = task.get("annotations")
    if anns is None:
        anns = task.get("completions")  # exports of Label Studio before 1.0
    if not isinstance(anns, list):
        return []
    out = []
    for ann in anns:
        if not isinstance(ann, dict):
            _count(skipped, "not an annotation object")
            continue
        if ann.get("was_cancelled"):
            _count(skipped, "skipped in Label Studio (was_cancelled)")
            continue
        results = ann.get("result") if isinstance(ann.get("result"), list) else []
        chosen = [
            r
            for r in results
            if isinstance(r, dict)
            and r.get("type") == "choices"
            and (from_name is None or r.get("from_name") == from_name)
            and isinstance(r.get("value"), dict)
        ]
        values = [c for r in chosen for c in (r["value"].get("choices") or [])]
        if not values:
            _count(skipped, "no choices answer")
            continue
        if len(values) > 1 or not isinstance(values[0], str):
            _count(skipped, "more than one choice, or not a text (multi-label is not supported)")
            continue
        when = parse_time(ann.get("created_at")) or parse_time(ann.get("updated_at")) or default_time
        label = None if values[0].strip() == NONE_CHOICE else values[0].strip()
        out.append(Annotation(label, annotator_of(ann), when, bool(ann.get("ground_truth"))))
    return out


def _count(counts: dict[str, int], reason: str) -> None:
    counts[reason] = counts.get(reason, 0) + 1


def choice_names(tasks: Iterable[dict[str, Any]]) -> set[str]:
    """The ``from_name`` of every ``choices`` result in the tasks' annotations."""
    names = set()
    for task in tasks:
        for ann in task.get("annotations") or task.get("completions") or []:
            if isinstance(ann, dict) and isinstance(ann.get("result"), list):
                for r in ann["result"]:
                    if isinstance(r, dict) and r.get("type") == "choices" and isinstance(r.get("from_name"), str):
                        names.add(r["from_name"])
    return names


# ---------------------------------------------------------------------------------------------------- images
class ImageIndex:
    """Every image file under a folder, by file name (symlinks leading outside it are left out)."""

    def __init__(self, root: str | Path) -> None:
        root = Path(root).expanduser()
        if not root.is_dir():
            raise AlwbError(f"--images {root} is not a folder")
        self.root = root.resolve()
        self.by_name: dict[str, list[Path]] = defaultdict(list)
        for dirpath, dirnames, filenames in os.walk(self.root, followlinks=False):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for name in sorted(filenames):
                p = Path(dirpath) / name
                if name.startswith(".") or not is_image_path(p):
                    continue
                real = p.resolve()
                if real.is_relative_to(self.root) and real.is_file():
                    self.by_name[name].append(real)

    def find(self, reference: str) -> Path | str:
        """The file a task's image reference names under the folder, or why there is none."""
        parts = reference_parts(reference)
        if not parts:
            return "the image reference has no file name"
        name = parts[-1]
        found = self.by_name.get(name, [])
        if not found and _UPLOAD_PREFIX.match(name):
            name = _UPLOAD_PREFIX.sub("", name, count=1)
            found = self.by_name.get(name, [])
        if not found:
            return f"no file named {name!r} under {self.root}"
        if len(found) == 1:
            return found[0]
        # the same name in several folders: the one whose folders end the reference's path
        folders = parts[:-1]

        def shared(p: Path) -> int:
            rel = p.relative_to(self.root).parts[:-1]
            n = 0
            while n < min(len(rel), len(folders)) and rel[-1 - n] == folders[-1 - n]:
                n += 1
            return n

        scores = [shared(p) for p in found]
        best = max(scores)
        if best > 0 and scores.count(best) == 1:
            return found[scores.index(best)]
        return f"{len(found)} files named {name!r} under {self.root}: the reference does not say which"


def reference_parts(reference: str) -> list[str]:
    """The path components a task's image reference names: a URL's path (``?d=`` of local files), no scheme, host
    or query; ``.`` and ``..`` dropped (they are never followed: only the file name is looked up)."""
    ref = reference.strip().replace("\\", "/")
    parsed = urllib.parse.urlsplit(ref)
    path = parsed.path
    query = urllib.parse.parse_qs(parsed.query)
    if query.get("d"):
        path = query["d"][0]
    elif parsed.scheme in ("s3", "gs", "azure-blob", "gcs") and parsed.netloc:
        path = parsed.path
    path = urllib.parse.unquote(path)
    return [p for p in PurePosixPath(path).parts if p not in ("/", ".", "..", "")]


def _names_image(value: str) -> bool:
    parts = reference_parts(value)
    return bool(parts) and is_image_path(parts[-1])


def image_reference(task: dict[str, Any], data_key: str | None) -> str | None:
    """The task's image reference: ``data[data_key]``, else ``data.image``, else the one string in ``data`` that
    names an image file."""
    data = task["data"]
    if data_key is not None:
        value = data.get(data_key)
        return value if isinstance(value, str) else None
    if isinstance(data.get("image"), str):
        return data["image"]
    refs = [v for v in data.values() if isinstance(v, str) and _names_image(v)]
    return refs[0] if len(refs) == 1 else None


# ---------------------------------------------------------------------------------------------------- import
def import_labelstudio(
    project: Any,
    json_path: str | Path,
    images_dir: str | Path,
    *,
    from_name: str | None = None,
    data_key: str | None = None,
    progress: bool = False,
    labels: bool = True,
) -> LabelStudioImport:
    """Import a Label Studio JSON export into ``project`` (a :class:`alwb.project.Project`); see the module doc.
    ``labels=False`` imports the tasks' images only."""
    from ..intake.ingest import ingest_files
    from ..store import LabelRow, validate_class_name

    t0 = time.perf_counter()
    tasks = read_tasks(json_path)
    report = LabelStudioImport(tasks=len(tasks))
    names = choice_names(tasks)
    if labels and from_name is None and len(names) > 1:
        raise AlwbError(
            f"{json_path}: the tasks answer {len(names)} Choices tags ({', '.join(sorted(names))}): say which holds "
            "the class with --from-name"
        )
    index = ImageIndex(images_dir)
    now = time.time()
    per_task: list[tuple[Path, list[Annotation], str | None]] = []
    class_names: dict[str, None] = {}
    skipped = report.skipped_annotations
    for i, task in enumerate(tasks):
        where = f"task {task.get('id', f'#{i + 1}')}"
        if isinstance(task.get("predictions"), list):
            report.predictions_ignored += len(task["predictions"])
        ref = image_reference(task, data_key)
        if ref is None:
            keys = ", ".join(map(str, task["data"]))
            report.skipped_tasks.append((where, f"no image reference in data (keys: {keys})"))
            continue
        found = index.find(ref)
        if isinstance(found, str):
            report.skipped_tasks.append((where, found))
            continue
        anns = annotations_of(task, from_name, skipped, default_time=now) if labels else []
        for a in anns:
            if a.label is None:
                continue
            try:
                validate_class_name(a.label)
            except LabelError as exc:
                raise AlwbError(f"{json_path}: {where}: {exc}; nothing imported") from None
            class_names.setdefault(a.label, None)
        sha = task["data"].get("sha256") if isinstance(task["data"].get("sha256"), str) else None
        per_task.append((found, anns, sha))
    report.images_found = len({p for p, _, _ in per_task})
    store = project.store
    report.new_classes = store.add_classes(list(class_names))
    if per_task:
        ing = ingest_files(store, [p for p, _, _ in per_task], kind="Label Studio export", progress=progress)
        report.ingest_summary = ing.summary()
    project.ensure_validation()  # the sample is drawn from the images imported, before their labels arrive
    item_of = _items_for(store, [(p, sha) for p, _, sha in per_task])
    answers: list[tuple[int, Annotation]] = []
    for (path, anns, _), item_id in zip(per_task, item_of, strict=True):
        if item_id is None:
            report.skipped_tasks.append((str(path), "the image was rejected at import (see 'alwb status')"))
            continue
        answers.extend((item_id, a) for a in anns)
    answers.sort(key=lambda x: (x[1].created_at, x[1].ground_truth))  # oldest first; decisions after answers
    known = {
        (int(r["item_id"]), str(r["annotator"]), r["class"], round(float(r["created_at"]), 3))
        for r in store.annotator_answers()
    }
    decided = {(int(r["item_id"]), str(r["reviewer"]), r["class"]) for r in store.review_rows()}
    who: dict[str, None] = {}
    with store.transaction():
        for item_id, a in answers:
            key = (item_id, str(a.annotator), a.label, round(a.created_at, 3))
            if a.ground_truth and a.annotator is not None:
                if (item_id, a.annotator, a.label) in decided:
                    report.already += 1
                    continue
                store.record_review(item_id, a.annotator, a.label, a.created_at)
                decided.add((item_id, a.annotator, a.label))
            elif a.annotator is None:
                n = store.add_labels(
                    [LabelRow(item_id, a.label)], source="import", round_number=0, created_at=a.created_at
                )
                if not n:
                    report.already += 1
                    continue
            else:
                if key in known:
                    report.already += 1
                    continue
                store.add_labels(
                    [LabelRow(item_id, a.label)],
                    source="human",
                    round_number=0,
                    annotator=a.annotator,
                    created_at=a.created_at,
                )
                known.add(key)
            report.labels += 1
            if a.annotator is not None:
                who.setdefault(a.annotator, None)
    report.annotators = list(who)
    from ..team.agreement import review_queue

    report.disagreements = len(review_queue(store))
    report.seconds = time.perf_counter() - t0
    return report


def _items_for(store: Any, files: Sequence[tuple[Path, str | None]]) -> list[int | None]:
    """The item id of each imported file: by the SHA-256 the task carries (alwb's own export), by its path, else by
    its content (a copy of an image already in the project)."""
    from ..intake.ingest import _sha256

    by_sha = {str(r["sha256"]): int(r["id"]) for r in store.items()}
    images = store.image_root()
    out: list[int | None] = []
    for path, sha in files:
        if sha is not None and sha in by_sha:
            out.append(by_sha[sha])
            continue
        row = store.item_by_path(images.to_stored(str(path))) or store.item_by_path(str(path))
        if row is not None and row["status"] == "ok":
            out.append(int(row["id"]))
            continue
        try:
            out.append(by_sha.get(_sha256(path)))
        except OSError:
            out.append(None)
    return out


# ---------------------------------------------------------------------------------------------------- export
def label_config(classes: Sequence[str]) -> str:
    """The labeling configuration (XML) that the tasks written by :func:`export_tasks` fit."""
    choices = "\n".join(f"    <Choice value={quoteattr(c)}/>" for c in [*classes, NONE_CHOICE])
    return (
        "<View>\n"
        f'  <Image name="{TO_NAME}" value="$image"/>\n'
        f'  <Choices name="{FROM_NAME}" toName="{TO_NAME}" choice="single" showInline="true">\n'
        f"{choices}\n"
        "  </Choices>\n"
        "</View>\n"
    )


def _result(label: str | None) -> list[dict[str, Any]]:
    choice = NONE_CHOICE if label is None else label
    return [{"from_name": FROM_NAME, "to_name": TO_NAME, "type": "choices", "value": {"choices": [choice]}}]


def _annotation(label: str | None, at: float, who: str | None, *, ground_truth: bool = False) -> dict[str, Any]:
    """One Label Studio annotation of alwb's: the answer, its time, whether it is a reviewer's decision, and alwb's
    annotator (``alwb_annotator``; ``completed_by`` is left out, see the module doc)."""
    return {
        "result": _result(label),
        "created_at": _iso(at),
        "ground_truth": ground_truth,
        "was_cancelled": False,
        "alwb_annotator": who,
    }


def _iso(ts: float) -> str:
    return dt.datetime.fromtimestamp(float(ts), dt.timezone.utc).isoformat().replace("+00:00", "Z")


def export_tasks(project: Any, dest: str | Path, *, image_prefix: str = DEFAULT_PREFIX) -> int:
    """Write the project as Label Studio tasks (``dest``, JSON) and their labeling configuration beside it
    (``.xml``); returns the number of tasks. See the module doc for what a task holds."""
    store = project.store
    classes = project.classes
    per_item: dict[int, list[dict[str, Any]]] = defaultdict(list)
    latest: dict[tuple[int, str], Any] = {}
    for r in store.annotator_answers():  # oldest first: the latest answer of each annotator stays
        latest[(int(r["item_id"]), str(r["annotator"]))] = r
    for (item_id, name), r in latest.items():
        per_item[item_id].append(_annotation(r["class"], r["created_at"], name))
    decisions: dict[int, Any] = {}
    for r in store.review_rows():
        decisions[int(r["item_id"])] = r
    for item_id, r in decisions.items():
        per_item[item_id].append(_annotation(r["class"], r["decided_at"], str(r["reviewer"]), ground_truth=True))
    # labels nobody's answer above carries: imported ones, or without a name
    for r in store.current_labels(include_none=True):
        if r["annotator"] is None:
            ann = _annotation(r["class"], r["created_at"], None)
            per_item[int(r["item_id"])].append({**ann, "alwb_source": r["source"]})
    scores = project.scores()
    model = project.current_model()
    probs: dict[int, Any] = {}
    if scores is not None and model is not None and list(scores.classes) == list(classes):
        ids = [int(i) for i in scores.ids]
        rows = scores.rows(ids)
        for item_id, p in zip(ids, scores.probs_at(rows), strict=True):
            probs[item_id] = p
    version = f"alwb-round-{model['round']}" if model is not None else None
    tasks = []
    for it in store.items():
        item_id = int(it["id"])
        stored = str(it["path"])
        task: dict[str, Any] = {
            "data": {
                "image": image_prefix + urllib.parse.quote(stored.lstrip("/"), safe="/@"),
                "item_id": item_id,
                "sha256": it["sha256"],
                "split": it["split"],
                "file_name": PurePosixPath(stored.replace("\\", "/")).name,
            },
            "annotations": per_item.get(item_id, []),
        }
        if item_id in probs and version is not None:
            p = probs[item_id]
            k = int(p.argmax())
            task["predictions"] = [{"model_version": version, "score": float(p[k]), "result": _result(classes[k])}]
        tasks.append(task)
    dest = Path(dest)
    tmp = dest.with_name(dest.name + ".tmp")
    tmp.write_text(json.dumps(tasks, ensure_ascii=False, indent=1), encoding="utf-8")
    os.replace(tmp, dest)
    dest.with_suffix(".xml").write_text(label_config(classes), encoding="utf-8")
    return len(tasks)
