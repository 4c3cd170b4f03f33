"""Scan an image folder or CSV manifest and record its files in the store.

Three kinds of source:

* an ImageFolder tree (``SRC/<class>/.../<image>``): the folder names are labels, recorded with source ``import``;
* a flat folder: every image unlabeled;
* a CSV manifest with a ``path`` column (relative to the CSV) and an optional ``label`` column.

Every file is hashed (SHA-256) and fully decoded once. The same content is never added twice. Unreadable files
and unsafe manifest paths are recorded as ``rejected`` with a reason, and the import goes on.
"""

from __future__ import annotations

import hashlib
import os
import re
import sys
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from ..errors import AlwbError, ImageRejected, ManifestError
from ..store import LabelRow, Store, validate_class_name
from .images import ImageInfo, ImageRoot, is_image_path, probe

MAX_FILE_BYTES = 512 * 1024 * 1024
_URL = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*://|(file|https?|ftp|data|javascript|s3|gs):)", re.IGNORECASE)


@dataclass(frozen=True)
class Candidate:
    """A file to import: its absolute path, an optional label, or a reason it is refused before reading."""

    path: str
    label: str | None = None
    refused: str | None = None


@dataclass
class ScannedSource:
    """What :func:`scan` found."""

    kind: str
    root: Path
    candidates: list[Candidate]
    ignored: list[str] = field(default_factory=list)

    @property
    def labels(self) -> list[str]:
        """Distinct labels in source order of first appearance (ImageFolder: sorted folder names)."""
        seen: dict[str, None] = {}
        for c in self.candidates:
            if c.label is not None and c.refused is None:
                seen.setdefault(c.label, None)
        return list(seen)


@dataclass
class IngestReport:
    """Summary of one import."""

    kind: str
    added: int = 0
    labeled: int = 0
    duplicates: int = 0
    already_known: int = 0
    rejected: list[tuple[str, str]] = field(default_factory=list)
    ignored: int = 0
    seconds: float = 0.0
    new_classes: list[str] = field(default_factory=list)
    image_root: str | None = None
    outside_root: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """One paragraph for the terminal."""
        lines = [
            f"imported {self.added} image(s) from {'an' if self.kind[0] in 'AEIOU' else 'a'} {self.kind} "
            f"({self.labeled} with labels), "
            f"{self.duplicates} duplicate(s) skipped, {self.already_known} already in the project, "
            f"{len(self.rejected)} rejected, {self.ignored} non-image file(s) ignored "
            f"in {self.seconds:.1f} s"
        ]
        if self.new_classes:
            lines.append("new classes: " + ", ".join(self.new_classes))
        if self.outside_root:
            lines.append(
                f"{len(self.outside_root)} image(s) outside the image root {self.image_root} are stored with absolute "
                "paths (every machine must see them at the same path), e.g. " + self.outside_root[0]
            )
        for path, reason in self.rejected[:20]:
            lines.append(f"  rejected {path}: {reason}")
        if len(self.rejected) > 20:
            lines.append(f"  ... and {len(self.rejected) - 20} more (see 'alwb status')")
        return "\n".join(lines)


# ---------------------------------------------------------------------------- the image root
def default_image_root(src: str | Path) -> Path | None:
    """The image root a new project takes from its first source: the folder imported, or a manifest's folder
    (resolved); None when ``src`` does not exist (the import then says so)."""
    p = Path(src).expanduser()
    if p.is_dir():
        return p.resolve()
    if p.is_file():
        return p.resolve().parent
    return None


# ---------------------------------------------------------------------------- scanning
def _within(path: Path, root: Path) -> bool:
    try:
        path.relative_to(root)
        return True
    except ValueError:
        return False


def _walk(root: Path) -> Iterable[tuple[Path, Path]]:
    """(path as found, resolved path) for every file under root, sorted, without following dir symlinks."""
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if name.startswith("."):
                continue
            p = Path(dirpath) / name
            yield p, p.resolve()


def scan(src: str | Path, *, unlabeled: bool = False) -> ScannedSource:
    """Find the candidate files of a folder or CSV manifest (nothing is decoded yet)."""
    src = Path(src).expanduser()
    if not src.exists():
        raise AlwbError(f"image source not found: {src}")
    if src.is_file():
        if src.suffix.lower() not in (".csv", ".tsv"):
            raise AlwbError(f"{src} is neither a folder nor a .csv manifest")
        return _scan_manifest(src, unlabeled=unlabeled)
    root = src.resolve()
    top_images = [p for p in sorted(root.iterdir()) if p.is_file() and is_image_path(p)]
    # symlinked folders are not walked (see _walk), so they cannot make this an ImageFolder tree either
    subdirs = [d for d in sorted(root.iterdir()) if d.is_dir() and not d.is_symlink() and not d.name.startswith(".")]
    has_class_dirs = any(any(is_image_path(f) for f, _ in _walk(d)) for d in subdirs)
    kind = "ImageFolder tree" if has_class_dirs and not unlabeled else "flat folder"
    cands: list[Candidate] = []
    ignored: list[str] = []
    for found, resolved in _walk(root):
        if not is_image_path(found):
            ignored.append(str(found))
            continue
        if not _within(resolved, root):
            cands.append(Candidate(str(found.absolute()), refused="symlink points outside the source folder"))
            continue
        label = None
        if kind == "ImageFolder tree":
            rel = found.relative_to(root)
            label = rel.parts[0] if len(rel.parts) > 1 else None
        cands.append(Candidate(str(resolved), label=label))
    if not cands and not top_images:
        raise AlwbError(f"no images found in {src}")
    return ScannedSource(kind=kind, root=root, candidates=cands, ignored=ignored)


def _scan_manifest(csv: Path, *, unlabeled: bool) -> ScannedSource:
    try:
        df = pd.read_csv(csv, dtype=str, keep_default_na=False, sep="\t" if csv.suffix.lower() == ".tsv" else ",")
    except Exception as exc:  # pandas raises many types for malformed files
        raise ManifestError(f"cannot read manifest {csv}: {exc}") from None
    df.columns = [str(c).strip().lower() for c in df.columns]
    if "path" not in df.columns:
        raise ManifestError(f"manifest {csv} has no 'path' column (columns: {', '.join(df.columns)})")
    root = csv.resolve().parent
    has_label = "label" in df.columns and not unlabeled
    cands: list[Candidate] = []
    for i, row in enumerate(df.itertuples(index=False), start=2):
        raw = str(row.path).strip()  # type: ignore[attr-defined]
        label = str(row.label).strip() if has_label else ""  # type: ignore[attr-defined]
        cands.append(_manifest_candidate(raw, root, label or None, line=i))
    return ScannedSource(kind="CSV manifest", root=root, candidates=cands)


def _manifest_candidate(raw: str, root: Path, label: str | None, *, line: int) -> Candidate:
    shown = raw.replace("\x00", "\\0")
    if not raw:
        return Candidate(f"{root}/<line {line}: empty path>", refused=f"line {line}: empty path")
    if "\x00" in raw:
        return Candidate(f"{root}/{shown}", refused=f"line {line}: path contains a NUL byte")
    if _URL.match(raw) and not re.match(r"^[A-Za-z]:[\\/]", raw):
        return Candidate(raw, refused=f"line {line}: URLs are not imported (only local files)")
    p = Path(raw)
    full = p if p.is_absolute() else root / p
    try:
        resolved = full.resolve()
    except (OSError, RuntimeError) as exc:
        return Candidate(str(full), refused=f"line {line}: cannot resolve path ({exc})")
    if not _within(resolved, root):
        return Candidate(str(full), refused=f"line {line}: path resolves outside the manifest's folder")
    return Candidate(str(resolved), label=label)


# ---------------------------------------------------------------------------- checking one file
def check_file(path: str) -> tuple[str, str | None, int, ImageInfo | None, str | None]:
    """Hash and decode one file: (path, sha256, size, info, reject reason)."""
    p = Path(path)
    try:
        st = p.stat()
    except FileNotFoundError:
        return path, None, 0, None, "file not found"
    except OSError as exc:
        return path, None, 0, None, f"cannot read file: {exc.strerror or exc}"
    if not p.is_file():
        return path, None, 0, None, "not a regular file"
    if st.st_size > MAX_FILE_BYTES:
        return path, None, st.st_size, None, f"file larger than {MAX_FILE_BYTES // 2**20} MB"
    try:
        digest = _sha256(p)
    except OSError as exc:
        return path, None, st.st_size, None, f"cannot read file: {exc.strerror or exc}"
    try:
        info = probe(p)
    except ImageRejected as exc:
        return path, digest, st.st_size, None, exc.reason
    except Exception as exc:  # a decoder bug must not stop the import
        return path, digest, st.st_size, None, f"unreadable image ({type(exc).__name__}: {exc})"
    return path, digest, st.st_size, info, None


def _sha256(path: Path) -> str:
    """SHA-256 of a file, read in 1 MiB blocks (``hashlib.file_digest`` needs Python 3.11)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _check_chunk(paths: Sequence[str]) -> list[tuple[str, str | None, int, ImageInfo | None, str | None]]:
    return [check_file(p) for p in paths]


# ---------------------------------------------------------------------------- import
def ingest(
    store: Store,
    src: str | Path,
    *,
    classes: Sequence[str] | None = None,
    unlabeled: bool = False,
    progress: bool = True,
    workers: int | None = None,
    annotator: str | None = None,
) -> IngestReport:
    """Import ``src`` into ``store``; returns an :class:`IngestReport`.

    Labels found in the source must be among ``classes`` when those are given; otherwise labels that are not
    yet classes of the project become new classes (listed in the report). Files rejected by an earlier import
    are checked again.
    """
    t0 = time.perf_counter()
    source = scan(src, unlabeled=unlabeled)
    return ingest_source(
        store, source, classes=classes, progress=progress, workers=workers, annotator=annotator, started=t0
    )


def ingest_files(store: Store, paths: Sequence[str | Path], *, kind: str, progress: bool = False) -> IngestReport:
    """Import these image files (no labels), as :func:`ingest` imports a folder; ``kind`` names the source in the
    report. The caller has checked the paths (e.g. :mod:`alwb.io.labelstudio`, which finds them under one folder)."""
    t0 = time.perf_counter()
    cands = [Candidate(str(Path(p).resolve())) for p in dict.fromkeys(str(p) for p in paths)]
    root = Path(cands[0].path).parent if cands else Path.cwd()
    return ingest_source(store, ScannedSource(kind, root, cands), progress=progress, started=t0)


def ingest_source(
    store: Store,
    source: ScannedSource,
    *,
    classes: Sequence[str] | None = None,
    progress: bool = True,
    workers: int | None = None,
    annotator: str | None = None,
    started: float | None = None,
) -> IngestReport:
    """Import what :func:`scan` (or a caller) found; see :func:`ingest`."""
    t0 = time.perf_counter() if started is None else started
    src = source.root
    report = IngestReport(kind=source.kind, ignored=len(source.ignored))

    known_classes = store.classes()
    labels = [validate_class_name(c) for c in source.labels]
    if classes:
        wanted = [validate_class_name(c) for c in classes]
        unknown = [c for c in labels if c not in wanted and c not in known_classes]
        if unknown:
            raise AlwbError(
                f"label(s) {', '.join(map(repr, unknown[:5]))} in {src} are not among --classes ({', '.join(wanted)})"
            )
        report.new_classes = store.add_classes(wanted)
    if labels:
        report.new_classes += store.add_classes(labels)

    # accepted files are never read again; files rejected earlier are checked again (they may be fixed now).
    # Candidates carry absolute paths on this machine; the store holds them relative to the image root when under
    # it: both forms are compared with what is stored.
    images = store.image_root()
    report.image_root = str(images.local) if images.local is not None else None
    known_paths = store.item_paths()
    known_hashes = store.known_hashes()
    todo: list[Candidate] = []
    for c in source.candidates:
        stored = images.to_stored(c.path)
        if stored in known_paths or c.path in known_paths:
            report.already_known += 1
        else:
            todo.append(c)
            known_paths.add(stored)

    by_path = {c.path: c for c in todo}
    to_check = [c.path for c in todo if c.refused is None]
    refused = [c for c in todo if c.refused is not None]

    now = time.time()
    with store.transaction():
        for c in refused:
            store.record_rejected(images.to_stored(c.path), None, 0, c.refused or "refused", now=now)
            report.rejected.append((c.path, c.refused or "refused"))

    results = _run_checks(to_check, progress=progress, workers=workers)
    batch: list[tuple[str, str | None, int, ImageInfo | None, str | None]] = []
    for res in results:
        batch.append(res)
        if len(batch) >= 2000:
            _commit_batch(store, batch, by_path, known_hashes, report, annotator, images)
            batch = []
    if batch:
        _commit_batch(store, batch, by_path, known_hashes, report, annotator, images)
    report.seconds = time.perf_counter() - t0
    return report


def _run_checks(paths: list[str], *, progress: bool, workers: int | None):  # noqa: ANN202 - generator
    from tqdm import tqdm

    bar = tqdm(total=len(paths), unit="img", desc="importing", disable=not progress, file=sys.stderr)
    n_workers = workers if workers is not None else min(os.cpu_count() or 1, 8)
    try:
        if n_workers <= 1 or len(paths) < 500:
            for p in paths:
                yield check_file(p)
                bar.update(1)
            return
        chunk = 256
        chunks = [paths[i : i + chunk] for i in range(0, len(paths), chunk)]
        with ProcessPoolExecutor(max_workers=n_workers) as pool:
            for res in pool.map(_check_chunk, chunks):
                yield from res
                bar.update(len(res))
    finally:
        bar.close()


def _commit_batch(store, batch, by_path, known_hashes, report, annotator, images: ImageRoot) -> None:  # noqa: ANN001
    now = time.time()
    labels: list[tuple[int, str]] = []
    with store.transaction():
        for path, sha, size, info, reason in batch:
            stored = images.to_stored(path)
            if info is None:
                store.record_rejected(stored, sha, size, reason or "unreadable", now=now)
                report.rejected.append((path, reason or "unreadable"))
                continue
            if sha in known_hashes:
                report.duplicates += 1
                continue
            known_hashes.add(sha)
            if images.local is not None and Path(stored).is_absolute():
                report.outside_root.append(stored)
            item_id = store.record_item(
                stored,
                sha,
                size,
                width=info.width,
                height=info.height,
                mode=info.mode,
                format=info.format,
                grey=info.grey,
                now=now,
            )
            report.added += 1
            label = by_path[path].label
            if label is not None:
                labels.append((item_id, label))
        if labels:
            store.add_labels([LabelRow(i, c) for i, c in labels], source="import", round_number=0, annotator=annotator)
            report.labeled += len(labels)


def reject_reasons(store: Store) -> Counter[str]:
    """Count rejected files by reason (line-number prefixes removed)."""
    return Counter(re.sub(r"^line \d+: ", "", r["reason"] or "") for r in store.rejected())


def parse_class_list(raw: str) -> list[str]:
    """The class names of a comma-separated list, checked: an empty name (``a,,b``, ``a,``) or a name given twice
    is refused with a message (an empty list gives ``[]``), never dropped silently."""
    if not raw.strip():
        return []
    names = [c.strip() for c in raw.split(",")]
    if any(not n for n in names):
        raise AlwbError(
            "A class name is empty (two commas in a row, or a comma at the start or the end): "
            "write each class once, separated by commas."
        )
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise AlwbError(f"These class names appear more than once: {', '.join(twice)}. Write each class once.")
    return [validate_class_name(n) for n in names]


@dataclass
class SourceCheck:
    """What :func:`check_source` found in an image source, before anything is created."""

    kind: str
    n_files: int
    n_checked: int
    n_ok: int
    #: (path, reason) of the files checked that would be rejected, and of the files that are not images.
    rejected: list[tuple[str, str]]


def check_source(src: str | Path, *, limit: int = 400) -> SourceCheck:
    """Look at an image source (folder or CSV manifest) without writing anything: every candidate is checked
    (decoded) up to ``limit`` of them. Raises :class:`AlwbError` with a plain message when the source is missing,
    holds no image files, or none of the files checked is an image alwb can use."""
    path = Path(src).expanduser()
    if not path.exists():
        raise AlwbError(f"There is no folder or file at {path}.")
    try:
        found = scan(path)
    except AlwbError as exc:
        if str(exc).startswith("no images found"):
            raise AlwbError(f"{path} holds no image files (PNG, JPEG, ...).") from None
        raise
    rejected = [(c.path, c.refused) for c in found.candidates if c.refused is not None]
    todo = [c.path for c in found.candidates if c.refused is None][:limit]
    ok = 0
    for p, _digest, _size, info, reason in map(check_file, todo):
        if info is not None and reason is None:
            ok += 1
        else:
            rejected.append((p, reason or "unreadable image"))
    rejected += [(p, "not an image file") for p in found.ignored]
    if ok == 0:
        shown = "; ".join(f"{Path(p).name}: {r}" for p, r in rejected[:5])
        more = f" (and {len(rejected) - 5} more)" if len(rejected) > 5 else ""
        raise AlwbError(f"None of the files in {path} is an image alwb can use: {shown}{more}.")
    return SourceCheck(found.kind, len(found.candidates), len(todo), ok, rejected)
