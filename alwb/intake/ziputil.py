"""Safe extraction of uploaded zip files: nothing may land outside the destination folder."""

from __future__ import annotations

import shutil
import stat
import tempfile
import time
import zipfile
import zlib
from pathlib import Path, PurePosixPath
from typing import IO

from ..errors import AlwbError

MAX_RATIO = 100
MAX_TOTAL_BYTES = 4 * 1024**3
MAX_ENTRIES = 200_000


def safe_extract(source: str | Path | IO[bytes], dest: str | Path) -> list[Path]:
    """Extract regular files of a zip into ``dest``; refuse the whole archive when any entry is unsafe.

    Refused: absolute names, ``..`` components, drive letters, symlinks and other special entries, more than
    ``MAX_ENTRIES`` entries, a declared total over ``MAX_TOTAL_BYTES`` and a compression ratio over ``MAX_RATIO``
    (zip bombs). Sizes are enforced while writing, so a lying header cannot exceed them.
    """
    dest = Path(dest).resolve()
    try:
        zf = zipfile.ZipFile(source)
    except (zipfile.BadZipFile, OSError) as exc:
        raise AlwbError(f"not a readable zip file: {exc}") from None
    with zf:
        infos = zf.infolist()
        if len(infos) > MAX_ENTRIES:
            raise AlwbError(f"zip has {len(infos)} entries (limit {MAX_ENTRIES})")
        total = sum(i.file_size for i in infos)
        packed = sum(i.compress_size for i in infos)
        if total > MAX_TOTAL_BYTES:
            raise AlwbError(f"zip would extract to {total} bytes (limit {MAX_TOTAL_BYTES})")
        if total > 1024**2 and total > MAX_RATIO * max(packed, 1):
            raise AlwbError(f"zip bomb refused: compression ratio {total / max(packed, 1):.0f}x exceeds {MAX_RATIO}x")
        plan: list[tuple[zipfile.ZipInfo, Path]] = []
        for info in infos:
            name = info.filename
            mode = info.external_attr >> 16
            if "\x00" in name:
                raise AlwbError("zip entry name contains a NUL byte")
            pure = PurePosixPath(name.replace("\\", "/"))
            if pure.is_absolute() or (pure.parts and ":" in pure.parts[0]) or ".." in pure.parts:
                raise AlwbError(f"unsafe zip entry {name!r}: it would land outside the project")
            if stat.S_ISLNK(mode):
                raise AlwbError(f"zip entry {name!r} is a symbolic link; links are not extracted")
            if info.is_dir():
                continue
            # only the file-type bits matter: many zips (Python's writestr among them) store permission bits alone
            if stat.S_IFMT(mode) not in (0, stat.S_IFREG):
                raise AlwbError(f"zip entry {name!r} is not a regular file")
            target = (dest / pure).resolve()
            if not target.is_relative_to(dest):
                raise AlwbError(f"unsafe zip entry {name!r}: it would land outside the project")
            plan.append((info, target))
        written: list[Path] = []
        budget = MAX_TOTAL_BYTES
        info = None
        try:
            for info, target in plan:
                target.parent.mkdir(parents=True, exist_ok=True)
                limit = min(info.file_size, budget)
                with zf.open(info) as src, open(target, "wb") as out:
                    written.append(target)
                    n = 0
                    while chunk := src.read(1 << 20):
                        n += len(chunk)
                        if n > limit:
                            raise AlwbError(f"zip entry {info.filename!r} is larger than it declares")
                        out.write(chunk)
                budget -= n
        except BaseException as exc:
            # all or nothing: a bad entry (CRC error, truncated data, encryption, disk full) leaves no files behind
            for p in written:
                p.unlink(missing_ok=True)
            if isinstance(exc, AlwbError) or not isinstance(
                exc, (zipfile.BadZipFile, zlib.error, EOFError, OSError, RuntimeError, NotImplementedError)
            ):
                raise
            name = info.filename if info is not None else "?"
            raise AlwbError(f"cannot extract zip entry {name!r}: {exc}") from None
        return written


def content_root(folder: str | Path) -> Path:
    """The folder that holds an extracted archive's content.

    Most zips wrap everything in one top-level folder (``photos/…``); read as an image tree, that folder would be
    taken for a class. Descend while the folder holds nothing but a single subfolder (macOS's ``__MACOSX`` and
    hidden entries aside).
    """
    here = Path(folder)
    while True:
        entries = [e for e in here.iterdir() if e.name != "__MACOSX" and not e.name.startswith(".")]
        if len(entries) != 1 or not entries[0].is_dir() or entries[0].is_symlink():
            return here
        here = entries[0]


#: The folder of a project that holds its uploads, one fresh subfolder each.
UPLOADS = "uploads"


def new_upload_folder(project_dir: str | Path) -> Path:
    """A new, empty folder for one upload under ``PROJECT/uploads/``: a generated name (never derived from what the
    browser sent), created exclusively and readable by its owner only, so no upload can land in another's folder,
    overwrite a file or climb out of the project."""
    uploads = Path(project_dir) / UPLOADS
    if uploads.is_symlink() or (uploads.exists() and not uploads.is_dir()):
        raise AlwbError(f"{uploads} is not a plain folder: uploads are refused")
    uploads.mkdir(mode=0o700, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=time.strftime("%Y%m%d-%H%M%S-"), dir=uploads))


def extract_upload(source: str | Path | IO[bytes], project_dir: str | Path) -> Path:
    """Check and extract an uploaded zip into a :func:`new_upload_folder`; returns its :func:`content_root`. Nothing
    is written until every entry passed the checks of :func:`safe_extract`; a refused zip leaves no folder behind."""
    dest = new_upload_folder(project_dir)
    try:
        if not safe_extract(source, dest):
            raise AlwbError("the zip holds no files")
    except BaseException:
        shutil.rmtree(dest, ignore_errors=True)
        raise
    return content_root(dest)


def move_into_uploads(staged: str | Path, project_dir: str | Path) -> Path:
    """Move a folder extracted elsewhere (:func:`tempfile.mkdtemp`) into a :func:`new_upload_folder` of the project;
    returns the new folder."""
    dest = new_upload_folder(project_dir)
    for child in Path(staged).iterdir():
        shutil.move(str(child), str(dest / child.name))
    shutil.rmtree(staged, ignore_errors=True)
    return dest
