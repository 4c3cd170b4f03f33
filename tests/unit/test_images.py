"""alwb.intake.images: probing, decoding, orientation, mode conversion and rejection of unsafe or broken files.

Every image is generated here with Pillow in ``tmp_path``; nothing is downloaded.
"""

from __future__ import annotations

import importlib
import io
import pkgutil
import struct
import subprocess
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import EpsImagePlugin, Image, ImageFile, PsdImagePlugin

import alwb
from alwb.errors import AlwbError, ImageRejected
from alwb.intake import images
from alwb.intake.images import load_array, load_image, probe, to_mode

# ----------------------------------------------------------------------------- helpers
RED, GREEN, BLUE, WHITE, BLACK = (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255), (0, 0, 0)


def _rgb(arr: np.ndarray) -> Image.Image:
    return Image.fromarray(np.ascontiguousarray(arr, dtype=np.uint8), mode="RGB")


def _noise(h: int = 64, w: int = 64, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _encoded(img: Image.Image, fmt: str, **kw: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _reason(path: Path) -> str:
    with pytest.raises(ImageRejected) as info:
        probe(path)
    return info.value.reason


def _quadrants() -> np.ndarray:
    """A 64×32 (w×h) picture whose four quadrants are white, red (top) and green, blue (bottom).

    Each of the 8 symmetries of a rectangle moves these colours differently, so it identifies the orientation.
    """
    t = np.zeros((32, 64, 3), np.uint8)
    t[:16, :32] = WHITE
    t[:16, 32:] = RED
    t[16:, :32] = GREEN
    t[16:, 32:] = BLUE
    return t


#: What a camera stores for each EXIF orientation, given the upright picture (the EXIF spec's definitions, written
#: with numpy so they do not depend on Pillow's own transpose code): orientation 6 = stored rotated 90° CCW, etc.
_STORED = {
    1: lambda t: t,
    2: np.fliplr,
    3: lambda t: np.rot90(t, 2),
    4: np.flipud,
    5: lambda t: np.transpose(t, (1, 0, 2)),
    6: lambda t: np.rot90(t, 1),
    7: lambda t: np.fliplr(np.rot90(t, 1)),
    8: lambda t: np.rot90(t, -1),
}


def _exif(orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif.tobytes()


def _quadrant_means(arr: np.ndarray) -> list[np.ndarray]:
    """Mean colour of the inner part of each quadrant (JPEG blurs the borders)."""
    h, w = arr.shape[:2]
    hh, hw = h // 2, w // 2
    m = 4
    boxes = [(0, hh, 0, hw), (0, hh, hw, w), (hh, h, 0, hw), (hh, h, hw, w)]
    return [arr[y0 + m : y1 - m, x0 + m : x1 - m].reshape(-1, arr.shape[2]).mean(0) for y0, y1, x0, x1 in boxes]


def _png_declaring(width: int, height: int) -> bytes:
    """A tiny valid PNG whose IHDR is patched to declare ``width``×``height`` (CRC recomputed)."""
    data = bytearray(_encoded(Image.new("L", (4, 4), 7), "PNG"))
    assert data[12:16] == b"IHDR"
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


# ----------------------------------------------------------------------------- import-time invariants
def test_importing_alwb_keeps_truncated_images_refused() -> None:
    for mod in pkgutil.iter_modules(alwb.__path__):
        if mod.name != "__main__":
            importlib.import_module(f"alwb.{mod.name}")
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_every_allowed_format_has_an_opener() -> None:
    # Regression: "MPO" in the whitelist made Image.open raise KeyError for every GIF/BMP/WebP/TIFF/non-image.
    Image.init()
    assert set(images.ALLOWED_FORMATS) <= set(Image.OPEN)
    assert not {"EPS", "PSD", "PDF"} & set(images.ALLOWED_FORMATS)


def test_image_rejected_is_an_alwb_error_with_reason() -> None:
    exc = ImageRejected("empty file (0 bytes)")
    assert isinstance(exc, AlwbError)
    assert exc.reason == "empty file (0 bytes)" == str(exc)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("a.png", True),
        ("a.JPG", True),
        ("a.jpeg", True),
        ("a.jpe", True),
        ("a.gif", True),
        ("a.bmp", True),
        ("a.webp", True),
        ("a.TIF", True),
        ("a.tiff", True),
        ("a.eps", False),
        ("a.psd", False),
        ("a.pdf", False),
        ("a.txt", False),
        ("png", False),
    ],
)
def test_is_image_path(name: str, expected: bool) -> None:
    assert images.is_image_path(name) is expected


# ----------------------------------------------------------------------------- formats
@pytest.mark.parametrize(
    ("ext", "fmt", "save_kw", "tol"),
    [
        ("png", "PNG", {}, 0),
        ("jpg", "JPEG", {"quality": 95}, 12),
        ("gif", "GIF", {}, 0),
        ("bmp", "BMP", {}, 0),
        ("webp", "WEBP", {"quality": 95}, 12),
        ("webp", "WEBP", {"lossless": True}, 0),
        ("tif", "TIFF", {}, 0),
        ("tiff", "TIFF", {"compression": "tiff_lzw"}, 0),
    ],
)
def test_probe_and_load_each_format(tmp_path: Path, ext: str, fmt: str, save_kw: dict, tol: int) -> None:
    arr = np.zeros((24, 40, 3), np.uint8)
    arr[:, :20] = (200, 40, 40)
    arr[:, 20:] = (30, 60, 220)
    path = tmp_path / f"img.{ext}"
    _rgb(arr).save(path, **save_kw)

    info = probe(path)
    assert (info.width, info.height, info.format) == (40, 24, fmt)
    assert info.grey is False

    img = load_image(path)
    assert img.mode == "RGB" and img.size == (40, 24)
    got = np.asarray(img).astype(int)
    assert np.abs(got[4:-4, 4:16] - (200, 40, 40)).max() <= tol
    assert np.abs(got[4:-4, 24:-4] - (30, 60, 220)).max() <= tol


def test_content_decides_format_not_extension(tmp_path: Path) -> None:
    path = tmp_path / "really_a_png.jpg"
    Image.new("RGB", (9, 7), GREEN).save(path, format="PNG")
    info = probe(path)
    assert (info.format, info.width, info.height) == ("PNG", 9, 7)
    assert np.asarray(load_image(path))[3, 3].tolist() == list(GREEN)


def test_probe_reports_mode_and_grey_flag(tmp_path: Path) -> None:
    Image.new("L", (5, 4), 100).save(tmp_path / "l.png")
    Image.new("LA", (5, 4), (100, 255)).save(tmp_path / "la.png")
    Image.new("RGBA", (5, 4), (1, 2, 3, 255)).save(tmp_path / "rgba.png")
    grey_pal = Image.new("P", (5, 4), 1)
    grey_pal.putpalette([0, 0, 0, 128, 128, 128, 255, 255, 255])
    grey_pal.save(tmp_path / "pgrey.png")
    colour_pal = Image.new("P", (5, 4), 1)
    colour_pal.putpalette([0, 0, 0, 255, 0, 0])
    colour_pal.save(tmp_path / "pcolour.png")

    assert probe(tmp_path / "l.png") == images.ImageInfo(5, 4, "L", "PNG", True)
    assert probe(tmp_path / "la.png").grey is True
    assert probe(tmp_path / "rgba.png") == images.ImageInfo(5, 4, "RGBA", "PNG", False)
    assert probe(tmp_path / "pgrey.png").grey is True
    assert probe(tmp_path / "pcolour.png").grey is False


def test_mpo_uses_first_picture(tmp_path: Path) -> None:
    path = tmp_path / "stereo.jpg"
    Image.new("RGB", (32, 16), RED).save(
        path, format="MPO", save_all=True, append_images=[Image.new("RGB", (32, 16), BLUE)]
    )
    info = probe(path)
    assert (info.format, info.width, info.height) == ("MPO", 32, 16)
    px = np.asarray(load_image(path))[8, 16].astype(int)
    assert np.abs(px - RED).max() <= 8


# ----------------------------------------------------------------------------- GIF animations
def test_animated_gif_uses_first_frame(tmp_path: Path) -> None:
    path = tmp_path / "anim.gif"
    frames = [Image.new("RGB", (20, 10), c) for c in (RED, GREEN, BLUE)]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=40, loop=0)
    with Image.open(path) as im:
        assert im.n_frames == 3

    info = probe(path)
    assert (info.width, info.height, info.format, info.grey) == (20, 10, "GIF", False)
    arr = np.asarray(load_image(path))
    assert (arr == RED).all()
    assert load_array(path, 8, 3)[:, 4, 4].tolist() == list(RED)


def test_mixed_mode_animated_gif_grey_first_frame(tmp_path: Path) -> None:
    path = tmp_path / "mixed.gif"
    first = Image.new("L", (16, 16), 128)
    second = Image.new("RGB", (16, 16), RED)
    third = Image.new("P", (16, 16), 1)
    third.putpalette([0, 0, 0, 0, 0, 255])
    first.save(path, save_all=True, append_images=[second, third], duration=40, loop=0)
    with Image.open(path) as im:
        modes = []
        for i in range(im.n_frames):
            im.seek(i)
            modes.append(im.mode)
    assert len(set(modes)) > 1  # really a mixed-mode animation

    info = probe(path)
    assert (info.width, info.height, info.grey) == (16, 16, True)
    assert (np.asarray(load_image(path)) == 128).all()
    assert (np.asarray(load_image(path, channels=1)) == 128).all()


def test_mixed_mode_animated_gif_colour_first_frame(tmp_path: Path) -> None:
    path = tmp_path / "mixed2.gif"
    Image.new("RGB", (16, 16), RED).save(
        path, save_all=True, append_images=[Image.new("L", (16, 16), 50), Image.new("RGB", (16, 16), BLUE)]
    )
    assert probe(path).grey is False
    assert (np.asarray(load_image(path)) == RED).all()


def test_gif_transparency_becomes_white(tmp_path: Path) -> None:
    path = tmp_path / "t.gif"
    im = Image.new("L", (8, 8), 0)
    im.paste(200, (0, 0, 4, 8))
    im.save(path, transparency=0)
    row = np.asarray(load_image(path, channels=1))[0]
    assert row.tolist() == [200] * 4 + [255] * 4


# ----------------------------------------------------------------------------- EXIF orientation
@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_jpeg(tmp_path: Path, orientation: int) -> None:
    upright = _quadrants()
    stored = _STORED[orientation](upright)
    path = tmp_path / f"o{orientation}.jpg"
    _rgb(stored).save(path, quality=95, exif=_exif(orientation))
    with Image.open(path) as raw:
        assert raw.size == (stored.shape[1], stored.shape[0])
        if orientation >= 5:
            assert raw.size == (32, 64)  # stored portrait

    info = probe(path)
    assert (info.width, info.height) == (64, 32)  # 5-8 swap width and height back

    arr = np.asarray(load_image(path))
    assert arr.shape == (32, 64, 3)
    for mean, want in zip(_quadrant_means(arr), (WHITE, RED, GREEN, BLUE), strict=True):
        assert np.abs(mean - want).max() < 20
    # the bright corner is top-left, whatever the stored orientation
    assert arr[:4, :4].mean() > 230 and arr[-4:, -4:, 2].mean() > 200


def test_exif_orientation_png_is_exact(tmp_path: Path) -> None:
    upright = _quadrants()
    path = tmp_path / "o6.png"
    _rgb(_STORED[6](upright)).save(path, exif=_exif(6))
    assert probe(path).width == 64
    assert np.array_equal(np.asarray(load_image(path)), upright)


def test_exif_orientation_applies_before_crop(tmp_path: Path) -> None:
    upright = np.zeros((30, 90, 3), np.uint8)
    upright[:, :30] = RED
    upright[:, 30:60] = GREEN
    upright[:, 60:] = BLUE
    path = tmp_path / "o8.jpg"
    _rgb(_STORED[8](upright)).save(path, quality=95, exif=_exif(8))
    arr = load_array(path, 16, 3).astype(int)
    assert np.abs(arr[:, 3:-3, 3:-3].reshape(3, -1).mean(1) - GREEN).max() < 20


# ----------------------------------------------------------------------------- modes
def test_palette_png_transparency_becomes_white(tmp_path: Path) -> None:
    path = tmp_path / "p.png"
    im = Image.new("P", (4, 2), 0)
    im.putpalette([*BLACK, *RED, *GREEN])
    im.putdata([0, 1, 2, 0, 0, 1, 2, 0])
    im.save(path, transparency=0)
    with Image.open(path) as raw:
        assert raw.mode == "P" and "transparency" in raw.info

    rgb = np.asarray(load_image(path))
    assert rgb[0].tolist() == [list(WHITE), list(RED), list(GREEN), list(WHITE)]
    grey = np.asarray(load_image(path, channels=1))
    assert grey[0, 0] == 255 and grey[0, 3] == 255


def test_palette_png_partial_alpha(tmp_path: Path) -> None:
    path = tmp_path / "pa.png"
    im = Image.new("P", (3, 1))
    im.putpalette([*RED, *GREEN, *BLUE])
    im.putdata([0, 1, 2])
    im.save(path, transparency=bytes([0, 128, 255]))
    px = np.asarray(load_image(path)).astype(int)[0]
    assert px[0].tolist() == list(WHITE)
    assert np.abs(px[1] - (127, 255, 127)).max() <= 2
    assert px[2].tolist() == list(BLUE)


@pytest.mark.parametrize(("mode", "key"), [("L", 0), ("RGB", (0, 0, 0))])
def test_colour_key_transparency_becomes_white(tmp_path: Path, mode: str, key: object) -> None:
    path = tmp_path / f"key_{mode}.png"
    im = Image.new(mode, (6, 2), key)
    im.paste(200 if mode == "L" else (200, 10, 10), (0, 0, 3, 2))
    im.save(path, transparency=key)
    arr = np.asarray(load_image(path)).astype(int)
    assert (arr[:, 3:] == 255).all()
    assert (arr[:, :3] != 255).any()


def test_rgba_and_la_composited_over_white(tmp_path: Path) -> None:
    rgba = Image.new("RGBA", (3, 1))
    rgba.putdata([(255, 0, 0, 0), (255, 0, 0, 255), (255, 0, 0, 128)])
    rgba.save(tmp_path / "rgba.png")
    px = np.asarray(load_image(tmp_path / "rgba.png")).astype(int)[0]
    assert px[0].tolist() == list(WHITE)
    assert px[1].tolist() == list(RED)
    assert np.abs(px[2] - (255, 127, 127)).max() <= 2

    la = Image.new("LA", (3, 1))
    la.putdata([(0, 0), (0, 255), (128, 128)])
    la.save(tmp_path / "la.png")
    grey = np.asarray(load_image(tmp_path / "la.png", channels=1)).astype(int)[0]
    assert grey[:2].tolist() == [255, 0]
    assert abs(grey[2] - 191) <= 2
    rgb = np.asarray(load_image(tmp_path / "la.png", channels=3))
    assert rgb.shape == (1, 3, 3) and (rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all()


def test_premultiplied_modes() -> None:
    rgba = np.asarray(to_mode(Image.new("RGBa", (1, 1), (128, 0, 0, 128)), 3)).astype(int)
    assert np.abs(rgba[0, 0] - (255, 127, 127)).max() <= 2
    la = np.asarray(to_mode(Image.new("La", (1, 1), (64, 128)), 1)).astype(int)
    assert abs(la[0, 0] - 191) <= 2


@pytest.mark.parametrize(
    ("cmyk", "rgb"),
    [
        ((0, 255, 255, 0), RED),
        ((255, 0, 255, 0), GREEN),
        ((255, 255, 0, 0), BLUE),
        ((0, 0, 0, 0), WHITE),
        ((0, 0, 0, 255), BLACK),
    ],
)
def test_cmyk_jpeg_to_rgb(tmp_path: Path, cmyk: tuple[int, int, int, int], rgb: tuple[int, int, int]) -> None:
    path = tmp_path / "cmyk.jpg"
    Image.new("CMYK", (16, 16), cmyk).save(path, quality=95)
    info = probe(path)
    assert (info.mode, info.format, info.grey) == ("CMYK", "JPEG", False)
    img = load_image(path)
    assert img.mode == "RGB"
    assert np.abs(np.asarray(img).astype(int)[4:12, 4:12] - rgb).max() <= 12


def test_16bit_png_keeps_range(tmp_path: Path) -> None:
    path = tmp_path / "g16.png"
    values = np.array([[0, 32896, 65535, 2570], [65535, 0, 257, 65535]], dtype=np.uint16)
    Image.fromarray(values).save(path)
    with Image.open(path) as raw:
        assert raw.mode in ("I;16", "I")
    info = probe(path)
    assert info.grey is True and info.mode in ("I;16", "I") and (info.width, info.height) == (4, 2)

    grey = load_image(path, channels=1)
    assert grey.mode == "L"
    arr = np.asarray(grey).astype(int)
    assert arr[0, 0] == 0 and arr[0, 2] == 255 and arr[1, 0] == 255 and arr[1, 2] == 1
    assert abs(arr[0, 1] - 128) <= 1
    assert abs(arr[0, 3] - 10) <= 1
    rgb = np.asarray(load_image(path, channels=3))
    assert (rgb == arr[..., None]).all()


def test_32bit_integer_tiff_and_in_memory_modes(tmp_path: Path) -> None:
    path = tmp_path / "i32.tif"
    Image.fromarray(np.array([[0, 32896, 65535]], dtype=np.int32)).save(path)
    assert probe(path).mode == "I"
    assert np.asarray(load_image(path, channels=1)).tolist() == [[0, 128, 255]]

    small = Image.fromarray(np.array([[0, 100, 255]], dtype=np.int32))
    assert small.mode == "I"
    assert np.asarray(to_mode(small, 1)).tolist() == [[0, 100, 255]]

    big_endian = Image.fromarray(np.array([[0, 65535]], dtype=np.uint16)).convert("I").convert("I;16B")
    assert np.asarray(to_mode(big_endian, 1)).tolist() == [[0, 255]]


def test_float_images(tmp_path: Path) -> None:
    unit = Image.fromarray(np.array([[0.0, 0.5, 1.0]], dtype=np.float32))
    assert unit.mode == "F"
    assert np.asarray(to_mode(unit, 1)).tolist() == [[0, 128, 255]]

    wide = Image.fromarray(np.array([[0.0, 100.0, 300.0, -5.0, np.nan, np.inf]], dtype=np.float32))
    assert np.asarray(to_mode(wide, 1)).tolist() == [[0, 100, 255, 0, 0, 255]]

    path = tmp_path / "f.tif"
    unit.save(path)
    info = probe(path)
    assert (info.mode, info.grey) == ("F", True)
    assert np.asarray(load_image(path, channels=3))[0, :, 0].tolist() == [0, 128, 255]


def test_one_bit_becomes_0_and_255(tmp_path: Path) -> None:
    path = tmp_path / "bits.png"
    im = Image.new("1", (8, 2), 0)
    im.paste(1, (0, 0, 3, 2))
    im.save(path)
    info = probe(path)
    assert (info.mode, info.grey) == ("1", True)
    arr = np.asarray(load_image(path, channels=1))
    assert arr.dtype == np.uint8 and set(np.unique(arr).tolist()) == {0, 255}
    assert arr[0].tolist() == [255] * 3 + [0] * 5
    assert np.asarray(load_image(path, channels=3))[0, 0].tolist() == [255, 255, 255]


def test_to_mode_channels() -> None:
    colour = Image.new("RGB", (2, 2), RED)
    grey = to_mode(colour, 1)
    assert grey.mode == "L" and np.asarray(grey).shape == (2, 2)
    assert abs(int(np.asarray(grey)[0, 0]) - 76) <= 1  # ITU-R 601 luma of pure red
    assert to_mode(colour, 3).mode == "RGB"

    g = Image.new("L", (2, 2), 77)
    assert np.asarray(to_mode(g, 3)).tolist() == [[[77, 77, 77]] * 2] * 2
    assert to_mode(g, 1).mode == "L"

    for mode, value in [("CMYK", (0, 0, 0, 0)), ("YCbCr", (128, 128, 128)), ("RGBX", (1, 2, 3, 0)), ("PA", (0, 255))]:
        src = Image.new(mode, (2, 2), value)
        assert to_mode(src, 1).mode == "L"
        assert to_mode(src, 3).mode == "RGB"


@pytest.mark.parametrize("channels", [0, 2, 4])
def test_to_mode_refuses_other_channel_counts(channels: int) -> None:
    with pytest.raises(ValueError, match="channels"):
        to_mode(Image.new("RGB", (1, 1)), channels)


def test_lab_tiff_rejected(tmp_path: Path) -> None:
    path = tmp_path / "lab.tif"
    Image.new("LAB", (4, 4), (128, 0, 0)).save(path)
    assert "LAB" in _reason(path)


# ----------------------------------------------------------------------------- load_array
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("size", [8, 32, 48])
def test_load_array_shape_and_dtype(tmp_path: Path, channels: int, size: int) -> None:
    path = tmp_path / "n.png"
    _rgb(_noise(20, 37)).save(path)
    arr = load_array(path, size, channels)
    assert arr.shape == (channels, size, size)
    assert arr.dtype == np.uint8
    assert arr.flags.c_contiguous


def test_load_array_centre_crop_keeps_aspect(tmp_path: Path) -> None:
    wide = np.zeros((100, 300, 3), np.uint8)
    wide[:, :100] = RED
    wide[:, 100:200] = GREEN
    wide[:, 200:] = BLUE
    _rgb(wide).save(tmp_path / "wide.png")
    _rgb(np.transpose(wide, (1, 0, 2))).save(tmp_path / "tall.png")

    for name in ("wide.png", "tall.png"):
        arr = load_array(tmp_path / name, 32, 3).astype(int)
        # only the green middle third survives; a squash would bring red and blue in at the edges
        assert (arr[1] > arr[0]).all() and (arr[1] > arr[2]).all(), name
        assert np.abs(arr[:, 2:-2, 2:-2].reshape(3, -1).T - GREEN).max() <= 2, name

    grey = load_array(tmp_path / "tall.png", 16, 1)
    assert grey.shape == (1, 16, 16)
    assert np.abs(grey[0, 2:-2, 2:-2].astype(int) - 150).max() <= 2  # luma of pure green


def test_load_array_upscales_small_images(tmp_path: Path) -> None:
    path = tmp_path / "tiny.png"
    Image.new("RGB", (3, 5), (10, 20, 30)).save(path)
    arr = load_array(path, 28, 3)
    assert arr.shape == (3, 28, 28)
    assert arr[:, 14, 14].tolist() == [10, 20, 30]


def test_load_array_is_deterministic(tmp_path: Path) -> None:
    path = tmp_path / "n.jpg"
    _rgb(_noise(50, 70, seed=3)).save(path, quality=90)
    assert np.array_equal(load_array(path, 24, 3), load_array(path, 24, 3))


# ----------------------------------------------------------------------------- rejections
def test_empty_file_rejected(tmp_path: Path) -> None:
    path = _write(tmp_path / "empty.png", b"")
    assert "empty" in _reason(path)
    with pytest.raises(ImageRejected, match="empty"):
        load_image(path)


def test_missing_file_rejected(tmp_path: Path) -> None:
    assert "cannot read file" in _reason(tmp_path / "nope.png")


def test_text_file_named_jpg_rejected(tmp_path: Path) -> None:
    path = tmp_path / "notes.jpg"
    path.write_text("this is not a picture\n" * 20)
    assert "not a supported image" in _reason(path)
    with pytest.raises(ImageRejected, match="not a supported image"):
        load_array(path, 16, 3)


def test_random_bytes_rejected(tmp_path: Path) -> None:
    path = _write(tmp_path / "noise.bmp", np.random.default_rng(1).integers(0, 256, 4000, dtype=np.uint8).tobytes())
    assert "not a supported image" in _reason(path)


@pytest.mark.parametrize(
    ("fmt", "ext"), [("JPEG", "jpg"), ("PNG", "png"), ("GIF", "gif"), ("BMP", "bmp"), ("TIFF", "tif")]
)
def test_truncated_image_rejected(tmp_path: Path, fmt: str, ext: str) -> None:
    data = _encoded(_rgb(_noise()), fmt)
    path = _write(tmp_path / f"cut.{ext}", data[: len(data) // 2])
    reason = _reason(path)
    assert "truncated" in reason or "corrupt" in reason
    with pytest.raises(ImageRejected):
        load_image(path)


def test_truncated_jpeg_missing_only_end_marker_rejected(tmp_path: Path) -> None:
    data = _encoded(_rgb(_noise()), "JPEG")
    assert data.endswith(b"\xff\xd9")
    path = _write(tmp_path / "cut.jpg", data[:-2])
    assert "truncated" in _reason(path)


def test_corrupt_png_data_rejected(tmp_path: Path) -> None:
    data = bytearray(_encoded(_rgb(_noise()), "PNG"))
    data[data.find(b"IDAT") + 100] ^= 0xFF
    reason = _reason(_write(tmp_path / "flip.png", bytes(data)))
    assert "corrupt" in reason or "truncated" in reason


@pytest.mark.parametrize(
    ("width", "height"),
    [
        (20_000, 10_000),  # > 2 × MAX_IMAGE_PIXELS: Pillow raises DecompressionBombError
        (10_000, 10_000),  # between 1 × and 2 ×: Pillow only warns; alwb must still refuse it
    ],
)
def test_decompression_bomb_png_rejected(tmp_path: Path, width: int, height: int) -> None:
    limit = Image.MAX_IMAGE_PIXELS
    assert limit is not None
    pixels = width * height
    assert pixels > limit
    path = _write(tmp_path / "bomb.png", _png_declaring(width, height))
    assert "decompression bomb" in _reason(path)
    with pytest.raises(ImageRejected, match="decompression bomb"):
        load_image(path)
    with pytest.raises(ImageRejected, match="decompression bomb"):
        load_array(path, 8, 1)


@pytest.mark.parametrize(("limit", "rejected"), [(100, True), (300, True), (400, False)])
def test_decompression_bomb_with_small_limit(tmp_path: Path, monkeypatch, limit: int, rejected: bool) -> None:
    path = tmp_path / "real.png"
    Image.new("RGB", (20, 20), RED).save(path)  # 400 pixels
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", limit)
    if rejected:
        assert "decompression bomb" in _reason(path)
    else:
        assert probe(path).width == 20


def test_bomb_check_does_not_change_global_warning_filters(tmp_path: Path) -> None:
    before = list(warnings.filters)
    _reason(_write(tmp_path / "bomb.png", _png_declaring(10_000, 10_000)))
    assert warnings.filters == before


_EPS = (
    b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n%%EndComments\n"
    b"newpath 0 0 moveto 10 10 lineto stroke\nshowpage\n%%EOF\n"
)
_DOS_EPS = b"\xc5\xd0\xd3\xc6" + struct.pack("<IIIIII", 30, len(_EPS), 0, 0, 0, 0) + b"\xff\xff" + _EPS
_PDF = b"%PDF-1.4\n1 0 obj<</Type/Catalog/Pages 2 0 R>>endobj\ntrailer<</Root 1 0 R>>\n%%EOF\n"
_PSD = b"8BPS" + struct.pack(">H6xHIIHH", 1, 3, 10, 10, 8, 3) + bytes(64)


@pytest.fixture
def no_foreign_decoders(monkeypatch):
    """Fail loudly if the EPS or PSD plugin, or any subprocess (Ghostscript), is ever used."""

    def boom(*args: object, **kwargs: object) -> None:
        raise AssertionError("a forbidden decoder or subprocess was invoked")

    monkeypatch.setattr(EpsImagePlugin.EpsImageFile, "_open", boom)
    monkeypatch.setattr(EpsImagePlugin.EpsImageFile, "load", boom)
    monkeypatch.setattr(EpsImagePlugin, "Ghostscript", boom)
    monkeypatch.setattr(PsdImagePlugin.PsdImageFile, "_open", boom)
    for name in ("Popen", "run", "call", "check_call", "check_output"):
        monkeypatch.setattr(subprocess, name, boom)


@pytest.mark.parametrize(
    ("name", "data"),
    [
        pytest.param("eps.png", _EPS, id="eps-as-png"),
        pytest.param("eps.eps", _EPS, id="eps"),
        pytest.param("dos_eps.jpg", _DOS_EPS, id="binary-eps-as-jpg"),
        pytest.param("doc.png", _PDF, id="pdf-as-png"),
        pytest.param("layers.png", _PSD, id="psd-as-png"),
        pytest.param("layers.psd", _PSD, id="psd"),
    ],
)
@pytest.mark.usefixtures("no_foreign_decoders")
def test_non_whitelisted_formats_never_decoded(tmp_path: Path, name: str, data: bytes) -> None:
    path = _write(tmp_path / name, data)
    assert "not a supported image" in _reason(path)
    with pytest.raises(ImageRejected, match="not a supported image"):
        load_image(path)
    with pytest.raises(ImageRejected, match="not a supported image"):
        load_array(path, 8, 3)


def test_foreign_samples_are_recognisable_by_their_plugins() -> None:
    # The EPS and PSD samples above are real enough for their plugins, so the rejection test means something.
    assert PsdImagePlugin._accept(_PSD)
    assert EpsImagePlugin._accept(_EPS)
