"""The one place that opens images: safely, orientation fixed, converted to the model's mode.

Only a whitelist of raster formats is ever decoded (no EPS, which would run Ghostscript, no PSD, no PDF).
Truncated files are rejected, never silently padded (``ImageFile.LOAD_TRUNCATED_IMAGES`` stays ``False``), and
Pillow's decompression-bomb warning is treated as an error.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import AlwbError, ImageRejected

#: Pillow format names that alwb decodes. MPO (multi-picture JPEG) is opened by the JPEG plugin; it has no opener
#: of its own, and naming it here would make ``Image.open`` raise ``KeyError`` for every non-PNG/JPEG file.
ALLOWED_FORMATS: tuple[str, ...] = ("PNG", "JPEG", "GIF", "BMP", "WEBP", "TIFF")
#: File extensions picked up when scanning a folder (case-insensitive).
IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {".png", ".jpg", ".jpeg", ".jpe", ".gif", ".bmp", ".dib", ".webp", ".tif", ".tiff"}
)
_GREY_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16L", "I;16B", "I;16N", "F"})


@dataclass(frozen=True)
class ImageInfo:
    """What ingest records about a readable image (size after EXIF orientation)."""

    width: int
    height: int
    mode: str
    format: str
    grey: bool


def is_image_path(path: str | os.PathLike[str]) -> bool:
    """True when the file name has an image extension alwb scans for."""
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def _open(path: str | os.PathLike[str]) -> Image.Image:
    p = Path(path)
    try:
        size = p.stat().st_size
    except OSError as exc:
        raise ImageRejected(f"cannot read file: {exc.strerror or exc}") from None
    if size == 0:
        raise ImageRejected("empty file (0 bytes)")
    limit = Image.MAX_IMAGE_PIXELS
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(p, formats=ALLOWED_FORMATS)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageRejected(f"decompression bomb: {exc}".split(" could be")[0].rstrip(",")) from None
    except UnidentifiedImageError:
        raise ImageRejected(
            "not a supported image (unrecognised content; accepted: PNG, JPEG, GIF, BMP, WebP, TIFF)"
        ) from None
    except OSError as exc:
        raise ImageRejected(f"unreadable image: {exc}") from None
    if limit is not None and img.width * img.height > limit:
        w, h = img.size
        img.close()
        raise ImageRejected(f"decompression bomb: {w}x{h} = {w * h} pixels exceeds the limit of {limit}")
    if img.mode == "LAB":  # Pillow's LAB -> RGB conversion gives wrong colours and LAB -> L fails
        img.close()
        raise ImageRejected("unsupported colour mode LAB (save the image as RGB)")
    return img


def _decode(img: Image.Image) -> Image.Image:
    """Fully decode the first frame and apply EXIF orientation; raise ImageRejected on bad data."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            if getattr(img, "n_frames", 1) > 1:
                img.seek(0)
            img.load()
            out = ImageOps.exif_transpose(img)
            if out is None:  # pragma: no cover - exif_transpose(in_place=False) always returns
                out = img
            out.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageRejected(f"decompression bomb: {exc}") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        msg = str(exc) or type(exc).__name__
        if "truncated" in msg.lower():
            raise ImageRejected(f"truncated image data ({msg})") from None
        raise ImageRejected(f"corrupt image data ({msg})") from None
    return out


def probe(path: str | os.PathLike[str]) -> ImageInfo:
    """Fully decode ``path`` once to validate it; return its size, mode and format.

    Raises
    ------
    ImageRejected
        With a specific reason when the file is empty, not an image, truncated, corrupt or too large.
    """
    img = _open(path)
    try:
        fmt = img.format or "?"
        mode = img.mode
        out = _decode(img)
        grey = mode in _GREY_MODES or (mode in ("P", "PA") and _palette_is_grey(img))
        return ImageInfo(width=out.width, height=out.height, mode=mode, format=fmt, grey=grey)
    finally:
        img.close()


def _palette_is_grey(img: Image.Image) -> bool:
    pal = img.getpalette() or []
    rgb = np.asarray(pal[: (len(pal) // 3) * 3], dtype=np.int16).reshape(-1, 3)
    return bool(rgb.size == 0 or (np.all(rgb[:, 0] == rgb[:, 1]) and np.all(rgb[:, 1] == rgb[:, 2])))


def _to_8bit(img: Image.Image) -> Image.Image:
    """Map 16-bit / 32-bit integer and float greyscale to 8-bit L, keeping the full range."""
    arr = np.asarray(img)
    if img.mode == "F":
        a = arr.astype(np.float64)
        finite = a[np.isfinite(a)]
        hi = float(finite.max()) if finite.size else 0.0
        scale = 255.0 if hi <= 1.0 else 1.0
        out = np.clip(np.nan_to_num(a) * scale, 0, 255)
    else:
        a = arr.astype(np.int64)
        out = a / 257.0 if img.mode.startswith("I;16") or a.max(initial=0) > 255 else a
        out = np.clip(out, 0, 255)
    return Image.fromarray(np.round(out).astype(np.uint8), mode="L")


def to_mode(img: Image.Image, channels: int) -> Image.Image:
    """Convert any decoded image to ``L`` (1 channel) or ``RGB`` (3 channels).

    Transparency is composited over white, CMYK and palette images are converted properly,
    16-bit and float greyscale are rescaled to 8 bits, 1-bit images become 0/255.
    """
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, not {channels}")
    mode = img.mode
    if mode.startswith("I") or mode == "F":
        img = _to_8bit(img)
    elif mode == "P":
        img = img.convert("RGBA") if "transparency" in img.info else img.convert("RGB")
    elif mode == "PA":
        img = img.convert("RGBA")
    elif mode in ("L", "RGB") and img.info.get("transparency") is not None:
        img = img.convert("LA" if mode == "L" else "RGBA")  # a tRNS colour key becomes an alpha channel
    elif mode == "1":
        img = img.convert("L")
    elif mode == "La":
        img = img.convert("LA")
    elif mode == "RGBa":
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA"):
        background = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, img.convert("RGBA"))
    target = "L" if channels == 1 else "RGB"
    return img if img.mode == target else img.convert(target)


def load_image(path: str | os.PathLike[str], channels: int = 3) -> Image.Image:
    """Open, validate, orient and convert one image (first frame of an animation)."""
    img = _open(path)
    try:
        return to_mode(_decode(img), channels)
    finally:
        img.close()


def load_array(path: str | os.PathLike[str], size: int, channels: int) -> np.ndarray:
    """Load an image as a ``(channels, size, size)`` uint8 array with the eval geometry.

    The shorter side is resized to ``size`` (bilinear with antialiasing when shrinking), then the centre is
    cropped, so aspect ratios are kept.
    """
    img = load_image(path, channels)
    img = ImageOps.fit(img, (size, size), method=Image.Resampling.BILINEAR)
    arr = np.asarray(img, dtype=np.uint8)
    arr = arr[None, :, :] if arr.ndim == 2 else arr.transpose(2, 0, 1)
    return np.ascontiguousarray(arr)


# ---------------------------------------------------------------------------- where the images are
#: Environment variable naming the project's image root on this machine (overrides the root the store records).
ENV_IMAGE_ROOT = "ALWB_IMAGE_ROOT"
#: The store's meta key holding the project's image root (as given on the machine that set it).
IMAGE_ROOT_KEY = "image_root"


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
    (``$ALWB_IMAGE_ROOT`` when set, else ``recorded``). Stored paths under the root are relative to it with POSIX
    separators; others are absolute and used as they are (``local / p`` is ``p`` for an absolute ``p``).
    """

    recorded: str | None
    local: Path | None
    from_env: bool = False

    @classmethod
    def of(cls, recorded: str | None, env: str | None = None) -> ImageRoot:
        """The root in use for a recorded root: ``env`` (default: ``$ALWB_IMAGE_ROOT``) wins when non-empty."""
        env = os.environ.get(ENV_IMAGE_ROOT) if env is None else env
        if env and env.strip():
            return cls(recorded, Path(env.strip()).expanduser(), from_env=True)
        return cls(recorded, Path(recorded) if recorded else None)

    def locate(self, stored: str) -> Path:
        """The file a stored path names on this machine (not checked: see :meth:`open_path`)."""
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
        if Path(stored).is_absolute():
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
        else the absolute path itself."""
        rel = self.relative(path)
        return str(path) if rel is None else rel

    def relative(self, path: str | os.PathLike[str]) -> str | None:
        """``path`` relative to the root in use (POSIX separators), or None when it is not under it."""
        if self.local is None:
            return None
        p = Path(path)
        for root in _spellings(self.local):
            try:
                rel = p.relative_to(root)
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
