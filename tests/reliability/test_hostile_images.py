"""Hostile image files: each is imported correctly or rejected with a specific reason, nothing unsafe is decoded
(EPS never reaches Ghostscript, PSD/PDF are never parsed), memory stays bounded and every file is quick to check.
"""

from __future__ import annotations

import io
import json
import os
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from reliability_figures import report_figures

from alwb.intake.ingest import check_file

#: the import's own peak memory, above what the process held once its libraries (torch, ...) were loaded
PEAK_RSS_GROWTH_LIMIT = 1024**3
PER_FILE_LIMIT_S = 2.0

# EXIF orientation -> the transpose that ImageOps.exif_transpose applies; the file holds its inverse
EXIF_TRANSPOSE = {
    1: None,
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
INVERSE = {
    Image.Transpose.ROTATE_270: Image.Transpose.ROTATE_90,
    Image.Transpose.ROTATE_90: Image.Transpose.ROTATE_270,
}


# ---------------------------------------------------------------------------- building the files
def _png_bytes(img: Image.Image) -> bytes:
    b = io.BytesIO()
    img.save(b, "PNG")
    return b.getvalue()


def _png_declaring(width: int, height: int) -> bytes:
    """A tiny valid PNG whose IHDR claims ``width`` x ``height`` (CRC fixed, so only the size check can stop it)."""
    data = bytearray(_png_bytes(Image.new("L", (4, 4), 7)))
    assert data[12:16] == b"IHDR"
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])) & 0xFFFFFFFF)
    return bytes(data)


def _reference() -> Image.Image:
    """30x20 grey with a white block in the top-left corner: its position shows the orientation."""
    arr = np.full((20, 30), 60, np.uint8)
    arr[:8, :10] = 255
    return Image.fromarray(arr, "L")


def _psd_bytes() -> bytes:
    """A minimal PSD header (8BPS, 1 channel, 8x8, greyscale) with empty sections and raw image data."""
    head = b"8BPS" + struct.pack(">H6xHIIHH", 1, 1, 8, 8, 8, 1)
    return head + struct.pack(">III", 0, 0, 0) + struct.pack(">H", 0) + bytes(64)


EPS = (
    b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 16 16\n%%EndComments\n"
    b"(/etc/passwd) (r) file pop\nnewpath 0 0 moveto 16 16 lineto stroke\nshowpage\n%%EOF\n"
)
PDF = b"%PDF-1.4\n1 0 obj << /Type /Catalog /Pages 2 0 R >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n"


def build_hostile(folder: Path) -> dict[str, tuple[str, str]]:
    """Write the files; return {name: ("ok", "<mode>/<format>[/WxH]") or ("rejected", reason substring)}."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(7)
    expect: dict[str, tuple[str, str]] = {}

    def put(name: str, data: bytes, outcome: tuple[str, str]) -> None:
        (folder / name).write_bytes(data)
        expect[name] = outcome

    noise = Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8), "RGB")
    full_png = _png_bytes(noise)
    jb = io.BytesIO()
    noise.save(jb, "JPEG", quality=90)
    put("zero_bytes.png", b"", ("rejected", "empty file (0 bytes)"))
    put("truncated.png", full_png[: len(full_png) // 2], ("rejected", "truncated image data"))
    put("truncated.jpg", jb.getvalue()[: len(jb.getvalue()) // 2], ("rejected", "truncated image data"))
    bad_crc = bytearray(full_png)
    bad_crc[full_png.index(b"IDAT") + 30] ^= 0xFF  # inside the compressed pixel data
    put("corrupt_idat.png", bytes(bad_crc), ("rejected", "corrupt image data"))
    put("png_named.jpg", full_png, ("ok", "RGB/PNG/64x64"))
    put("text_named.png", b"this is not an image\n" * 20, ("rejected", "not a supported image"))
    put("eps_named.png", EPS, ("rejected", "not a supported image"))
    put("eps_named.eps.jpg", EPS, ("rejected", "not a supported image"))
    put("pdf_named.png", PDF, ("rejected", "not a supported image"))
    put("psd_named.png", _psd_bytes(), ("rejected", "not a supported image"))
    limit = Image.MAX_IMAGE_PIXELS
    side = int((2.2 * limit) ** 0.5)
    put("bomb_over_2x.png", _png_declaring(side, side), ("rejected", "decompression bomb"))
    put("bomb_50000.png", _png_declaring(50000, 50000), ("rejected", "decompression bomb"))
    side = int((1.3 * limit) ** 0.5)
    put("bomb_warning_1x.png", _png_declaring(side, side), ("rejected", "decompression bomb"))
    # an animated GIF whose frames have different modes: the first frame is imported
    frames = [
        Image.new("P", (24, 16), 3),
        Image.fromarray(rng.integers(0, 256, (16, 24, 3), dtype=np.uint8), "RGB"),
        Image.new("L", (24, 16), 200),
        Image.new("RGBA", (24, 16), (255, 0, 0, 128)),
    ]
    gb = io.BytesIO()
    frames[0].save(gb, "GIF", save_all=True, append_images=frames[1:], duration=50, loop=0, disposal=2)
    put("animated_mixed.gif", gb.getvalue(), ("ok", "P/GIF/24x16"))
    # all 8 EXIF orientations (JPEG): the size is recorded after orientation
    ref = _reference()
    for k, tr in EXIF_TRANSPOSE.items():
        stored = ref if tr is None else ref.transpose(INVERSE.get(tr, tr))
        exif = Image.Exif()
        exif[0x0112] = k
        b = io.BytesIO()
        stored.save(b, "JPEG", quality=95, exif=exif.tobytes())
        put(f"exif_orientation_{k}.jpg", b.getvalue(), ("ok", "L/JPEG/30x20"))
    # unusual modes
    grad = np.linspace(0, 1, 16 * 16, dtype=np.float32).reshape(16, 16)
    modes = {
        "mode_cmyk.jpg": (Image.new("CMYK", (16, 16), (10, 200, 30, 40)), "JPEG"),
        "mode_cmyk.tif": (Image.new("CMYK", (16, 16), (200, 10, 30, 0)), "TIFF"),
        "mode_p.png": (Image.new("RGB", (16, 16), (9, 99, 199)).convert("P"), "PNG"),
        "mode_pa.tif": (Image.new("PA", (16, 16)), "TIFF"),
        "mode_la.png": (Image.new("LA", (16, 16), (100, 50)), "PNG"),
        "mode_i16.png": (Image.fromarray((grad * 65535).astype(np.uint16)), "PNG"),
        "mode_i.tif": (Image.fromarray((grad * 65535).astype(np.int32)), "TIFF"),
        "mode_f.tif": (Image.fromarray(grad), "TIFF"),
        "mode_1.png": (Image.fromarray(grad > 0.5), "PNG"),
    }
    for name, (img, fmt) in modes.items():
        b = io.BytesIO()
        img.save(b, fmt)
        with Image.open(io.BytesIO(b.getvalue())) as back:
            mode = back.mode
        put(name, b.getvalue(), ("ok", f"{mode}/{fmt}/16x16"))
    # a FIFO named like an image: must not hang the import
    os.mkfifo(folder / "fifo.png")
    expect["fifo.png"] = ("rejected", "not a regular file")
    return expect


# ---------------------------------------------------------------------------- spies: nothing unsafe runs
SPIES = """
import subprocess, os
from PIL import EpsImagePlugin, PsdImagePlugin
calls = []
def _spy(name, real=None):
    def f(*a, **k):
        calls.append(name)
        raise RuntimeError(name + " must not be used while importing images")
    return f
subprocess.Popen = _spy("subprocess.Popen")
os.system = _spy("os.system")
os.posix_spawn = _spy("os.posix_spawn")
EpsImagePlugin.Ghostscript = _spy("Ghostscript")
EpsImagePlugin.EpsImageFile._open = _spy("EpsImageFile._open")
PsdImagePlugin.PsdImageFile._open = _spy("PsdImageFile._open")
"""

# alwb.project (torch) is imported before the spies go in: importing torch may run ldconfig
CHILD = (
    "from alwb.project import Project\n"
    + SPIES
    + """
import json, sys, time
def hwm():
    # VmHWM belongs to this process's own memory map; ru_maxrss would carry pytest's peak across exec
    line = next(x for x in open("/proc/self/status") if x.startswith("VmHWM:"))
    return int(line.split()[1]) * 1024
base = hwm()
p = Project.create(sys.argv[2], classes=["a", "b"])
t = time.perf_counter()
report = p.add_images(sys.argv[1], progress=False, workers=1)
seconds = time.perf_counter() - t
items = {r["path"]: [r["status"], r["reason"], r["mode"], r["format"], r["width"], r["height"]]
         for r in p.store.con.execute("SELECT * FROM items")}
print(json.dumps({"items": items, "calls": calls, "seconds": seconds, "added": report.added,
                  "rejected": len(report.rejected),
                  "maxrss": hwm(), "base": base}))
"""
)


def _install_spies(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    from PIL import EpsImagePlugin, PsdImagePlugin

    calls: list[str] = []

    def spy(name: str):  # noqa: ANN202
        def f(*_a: object, **_k: object) -> None:
            calls.append(name)
            raise RuntimeError(f"{name} must not be used while checking images")

        return f

    monkeypatch.setattr(subprocess, "Popen", spy("subprocess.Popen"))
    monkeypatch.setattr(os, "system", spy("os.system"))
    monkeypatch.setattr(EpsImagePlugin, "Ghostscript", spy("Ghostscript"))
    monkeypatch.setattr(EpsImagePlugin.EpsImageFile, "_open", spy("EpsImageFile._open"))
    monkeypatch.setattr(PsdImagePlugin.PsdImageFile, "_open", spy("PsdImageFile._open"))
    return calls


def test_hostile_files_are_imported_or_rejected_with_a_reason(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = tmp_path / "hostile"
    expect = build_hostile(src)

    # the whole import, in a child process: its peak memory and the outcome of every file
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, str(src), str(tmp_path / "proj")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    assert res["calls"] == [], f"unsafe code ran during the import: {res['calls']}"
    items = {Path(p).name: v for p, v in res["items"].items()}
    assert set(items) == set(expect), set(items) ^ set(expect)
    wrong = {}
    for name, (outcome, detail) in expect.items():
        status, reason, mode, fmt, w, h = items[name]
        if outcome == "ok":
            got = f"{mode}/{fmt}/{w}x{h}"
            if status != "ok" or got != detail:
                wrong[name] = (status, reason, got, "expected", detail)
        elif status != "rejected" or detail not in (reason or ""):
            wrong[name] = (status, reason, "expected rejection:", detail)
    assert not wrong, json.dumps(wrong, indent=1)
    assert res["maxrss"] - res["base"] < PEAK_RSS_GROWTH_LIMIT, (res["base"], res["maxrss"])

    # every file on its own, in this process: time, the same verdict, and no unsafe code
    calls = _install_spies(monkeypatch)
    timings = {}
    for name in sorted(expect):
        t = time.perf_counter()
        _, _, _, info, reason = check_file(str(src / name))
        timings[name] = time.perf_counter() - t
        assert (info is not None) == (expect[name][0] == "ok"), (name, reason)
    assert calls == []
    slowest = max(timings, key=timings.get)
    assert timings[slowest] < PER_FILE_LIMIT_S, f"{slowest} took {timings[slowest]:.2f} s"

    report_figures(
        tmp_path,
        "hostile_images",
        {
            "hostile_files_tried": len(expect),
            "imported": res["added"],
            "rejected": res["rejected"],
            "import_seconds": round(res["seconds"], 3),
            "peak_rss_mb_import_process": round(res["maxrss"] / 2**20, 1),
            "peak_rss_growth_mb_import": round((res["maxrss"] - res["base"]) / 2**20, 1),
            "slowest_file": slowest,
            "slowest_check_seconds": round(timings[slowest], 4),
        },
    )


def test_exif_orientations_are_applied_to_the_pixels(tmp_path: Path) -> None:
    from alwb.intake.images import load_image

    src = tmp_path / "hostile"
    build_hostile(src)
    for k in EXIF_TRANSPOSE:
        arr = np.asarray(load_image(src / f"exif_orientation_{k}.jpg", channels=1), dtype=np.float64)
        assert arr.shape == (20, 30), k
        assert arr[:8, :10].mean() > 200 and arr[12:, 12:].mean() < 100, f"orientation {k} not applied"


def test_every_accepted_file_converts_to_the_model_modes(tmp_path: Path) -> None:
    from alwb.intake.images import load_array

    src = tmp_path / "hostile"
    expect = build_hostile(src)
    for name, (outcome, _) in expect.items():
        if outcome != "ok":
            continue
        for channels in (1, 3):
            arr = load_array(src / name, 16, channels)
            assert arr.shape == (channels, 16, 16) and arr.dtype == np.uint8, name
    # 16-bit, 32-bit and float gradients keep their full range in 8 bits
    for name in ("mode_i16.png", "mode_i.tif", "mode_f.tif"):
        arr = load_array(src / name, 16, 1)
        assert arr.min() <= 5 and arr.max() >= 250, (name, arr.min(), arr.max())
