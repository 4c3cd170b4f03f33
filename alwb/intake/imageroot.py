"""Where a project's images are on this machine: the image root a store records, ``ALWB_IMAGE_ROOT``, and the
mapping from a stored path to a file here. No NumPy or Pillow, so the store can use it (crash-safety children
import the store alone)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from ..errors import AlwbError

# ---------------------------------------------------------------------------- where the images are
#: Environment variable naming the project's image root on this machine (overrides the root the store records).
ENV_IMAGE_ROOT = "ALWB_IMAGE_ROOT"
#: The store's meta key holding the project's image root (as given on the machine that set it).
IMAGE_ROOT_KEY = "image_root"
#: How a stored path relative to the project folder begins (images uploaded into ``PROJECT/uploads/``): the project
#: folder is shared by every machine, wherever each mounts it.
PROJECT_PREFIX = "@project/"


def in_project(stored: str) -> bool:
    """True when a stored path is relative to the project folder (see :data:`PROJECT_PREFIX`)."""
    return stored.startswith(PROJECT_PREFIX)


class ImageMissing(AlwbError):
    """A stored image is not there on this machine; the message names the stored path, the root in use and the
    ``ALWB_IMAGE_ROOT`` setting that maps the root here."""

    def __init__(self, message: str, stored: str) -> None:
        super().__init__(message)
        self.stored = stored


@dataclass(frozen=True)
class ImageRoot:
    """Where a project's images are on this machine.

    ``recorded`` is the root the store records (None: every stored path is absolute); ``local`` the root used here
    (``$ALWB_IMAGE_ROOT`` when set, else ``recorded``); ``project`` the project folder on this machine, when known.
    Stored paths under the root are relative to it with POSIX separators; paths outside it but inside the project
    folder (uploads) are ``@project/`` and the path relative to the project folder; others are absolute and used as
    they are (``local / p`` is ``p`` for an absolute ``p``).
    """

    recorded: str | None
    local: Path | None
    from_env: bool = False
    project: Path | None = None

    @classmethod
    def of(cls, recorded: str | None, env: str | None = None, *, project: Path | None = None) -> ImageRoot:
        """The root in use for a recorded root: ``env`` (default: ``$ALWB_IMAGE_ROOT``) wins when non-empty."""
        env = os.environ.get(ENV_IMAGE_ROOT) if env is None else env
        if env and env.strip():
            return cls(recorded, Path(env.strip()).expanduser(), from_env=True, project=project)
        return cls(recorded, Path(recorded) if recorded else None, project=project)

    def locate(self, stored: str) -> Path:
        """The file a stored path names on this machine (not checked: see :meth:`open_path`)."""
        if in_project(stored):
            if self.project is None:  # a store opened without its project folder: nothing to anchor it to
                return Path(stored)
            return self.project.joinpath(*PurePosixPath(stored[len(PROJECT_PREFIX) :]).parts)
        if Path(stored).is_absolute() or self.local is None:
            return Path(stored)
        return self.local.joinpath(*PurePosixPath(stored).parts)

    def open_path(self, stored: str) -> Path:
        """The file a stored path names here; raises :class:`ImageMissing` (with the hint) when it is not there."""
        path = self.locate(stored)
        if not path.exists():
            raise ImageMissing(self.missing_message(stored), stored)
        return path

    def describe(self) -> str:
        """One line: the recorded root and how it resolves on this machine."""
        if self.recorded is None and not self.from_env:
            return "no image root: every stored path is absolute"
        rec = self.recorded or "(none recorded)"
        if self.local is None:  # pragma: no cover - local is set whenever recorded or env is
            return f"image root {rec}"
        where = f"{ENV_IMAGE_ROOT}={self.local}" if self.from_env else "as recorded"
        state = "found" if self.local.is_dir() else "NOT FOUND on this machine"
        return f"image root {rec}; on this machine {self.local} ({where}, {state})"

    def missing_message(self, stored: str) -> str:
        """Why the image stored as ``stored`` cannot be found here, and what to do."""
        path = self.locate(stored)
        if in_project(stored):
            where = (
                f"it is stored relative to the project folder, here {self.project} (an upload)"
                if self.project is not None
                else "it is stored relative to the project folder, which this store was opened without"
            )
            hint = "open the project through its folder; the uploads/ folder inside it must be there"
        elif Path(stored).is_absolute():
            where = (
                f"it is stored with an absolute path (outside the image root {self.recorded})"
                if self.recorded
                else "it is stored with an absolute path (the project records no image root)"
            )
            hint = "every machine must see it at that path, or run 'alwb root PROJECT set DIR' to adopt a root"
        else:
            src = f"{ENV_IMAGE_ROOT}={self.local}" if self.from_env else f"the recorded root {self.recorded}"
            where = f"the image root in use is {self.local} ({src})"
            hint = f"set {ENV_IMAGE_ROOT} to the folder where this machine sees the project's images"
        return f"image not found on this machine: {path} (stored as {stored!r}); {where}; {hint}"

    def to_stored(self, path: str | os.PathLike[str]) -> str:
        """The stored form of an absolute path: relative (POSIX separators) when it lies under the root in use,
        else ``@project/…`` when it lies in the project folder, else the absolute path itself."""
        rel = self.relative(path)
        if rel is not None:
            return "./" + rel if in_project(rel) else rel  # a folder named "@project" under the root stays the root's
        if self.project is not None:
            inside = _relative_to(Path(path), self.project)
            if inside is not None:
                return PROJECT_PREFIX + inside
        return str(path)

    def relative(self, path: str | os.PathLike[str]) -> str | None:
        """``path`` relative to the root in use (POSIX separators), or None when it is not under it."""
        return None if self.local is None else _relative_to(Path(path), self.local)


def _relative_to(p: Path, root: Path) -> str | None:
    """``p`` relative to ``root`` as given or resolved (POSIX separators), or None when it is not under it."""
    for spelling in _spellings(root):
        try:
            rel = p.relative_to(spelling)
        except ValueError:
            continue
        return rel.as_posix() if rel.parts else None
    return None


def check_present(images: ImageRoot, stored: Sequence[str], located: Sequence[str] | None = None) -> None:
    """Raise :class:`ImageMissing` when any of the stored paths names no file on this machine (the message names
    the first one, the root in use and how many are missing). ``located``: their paths here, when known."""
    paths = [str(images.locate(p)) for p in stored] if located is None else located
    gone = [s for s, p in zip(stored, paths, strict=True) if not os.path.exists(p)]
    if gone:
        n = f" ({len(gone)} of {len(stored)} images are missing)" if len(stored) > 1 else ""
        raise ImageMissing(images.missing_message(gone[0]) + n, gone[0])


def _spellings(root: Path) -> list[Path]:
    """A root as given and resolved (a root reached through a symlink matches the resolved paths ingest records)."""
    out = [root.absolute()]
    try:
        resolved = root.resolve()
    except (OSError, RuntimeError):
        return out
    return out if resolved == out[0] else [*out, resolved]
