"""The one place that opens images: safely, orientation fixed, converted to the model's mode.

Only a whitelist of raster formats is ever decoded (no EPS, which would run Ghostscript, no PSD, no PDF).
Truncated files are rejected, never silently padded (``ImageFile.LOAD_TRUNCATED_IMAGES`` stays ``False``), and
Pillow's decompression-bomb warning is treated as an error.
"""

from __future__ import annotations

import hashlib
import io
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import ImageRejected

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


class ImageChanged(ImageRejected):
    """The file's content is no longer the one imported (its SHA-256 differs from the stored one): it is skipped,
    never read or exported under the label given to the old content."""


#: How the reason of a changed file starts (:func:`changed_reason`).
CHANGED_PREFIX = "the file changed since it was imported"


def changed_reason(expected: str, actual: str) -> str:
    """The one line said of a file whose content changed since it was imported."""
    return f"{CHANGED_PREFIX} (SHA-256 {actual[:12]}…, imported as {expected[:12]}…)"


def read_verified(path: str | os.PathLike[str], sha256: str) -> bytes:
    """The bytes of ``path``, read once, after checking they are the content imported as ``sha256`` (raises
    :class:`ImageChanged` otherwise). Checking and using the same bytes leaves no gap for a swap in between."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ImageRejected(f"cannot read file: {exc.strerror or exc}") from None
    actual = hashlib.sha256(data).hexdigest()
    if actual != sha256:
        raise ImageChanged(changed_reason(sha256, actual))
    return data


def _open(path: str | os.PathLike[str], sha256: str | None = None) -> Image.Image:
    p = Path(path)
    source: Path | io.BytesIO = p
    if sha256 is not None:
        data = read_verified(p, sha256)
        size = len(data)
        source = io.BytesIO(data)
    else:
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
            img = Image.open(source, formats=ALLOWED_FORMATS)
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


def load_image(path: str | os.PathLike[str], channels: int = 3, *, sha256: str | None = None) -> Image.Image:
    """Open, validate, orient and convert one image (first frame of an animation); with ``sha256``, only when the
    file still holds the content imported (else :class:`ImageChanged`)."""
    img = _open(path, sha256)
    try:
        return to_mode(_decode(img), channels)
    finally:
        img.close()


def load_array(path: str | os.PathLike[str], size: int, channels: int, *, sha256: str | None = None) -> np.ndarray:
    """Load an image as a ``(channels, size, size)`` uint8 array with the eval geometry.

    The shorter side is resized to ``size`` (bilinear with antialiasing when shrinking), then the centre is
    cropped, so aspect ratios are kept.
    """
    img = load_image(path, channels, sha256=sha256)
    img = ImageOps.fit(img, (size, size), method=Image.Resampling.BILINEAR)
    arr = np.asarray(img, dtype=np.uint8)
    arr = arr[None, :, :] if arr.ndim == 2 else arr.transpose(2, 0, 1)
    return np.ascontiguousarray(arr)


# the image root lives in alwb.intake.imageroot (no NumPy or Pillow there); these names stay importable from here
from .imageroot import ENV_IMAGE_ROOT, IMAGE_ROOT_KEY, ImageMissing, ImageRoot, check_present  # noqa: E402, F401
