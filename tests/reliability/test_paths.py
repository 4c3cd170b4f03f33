"""Hostile paths: manifest rows and folder entries that point outside the source, URLs and NUL bytes are refused with
reasons, nothing outside is ever opened or listed, no network connection is attempted; hostile zip uploads are
refused whole with nothing written outside (or inside) the destination.
"""

from __future__ import annotations

import contextlib
import io
import os
import socket
import stat
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from reliability_figures import report_figures

import alwb.intake.images
import alwb.intake.ingest
import alwb.intake.ziputil
from alwb.errors import AlwbError
from alwb.intake.ziputil import content_root, safe_extract
from alwb.project import Project

# ---------------------------------------------------------------------------- every file the process opens or lists
_AUDIT: list[tuple[str, str]] | None = None


def _audit(event: str, args: tuple) -> None:
    if _AUDIT is None or event not in ("open", "os.listdir", "os.scandir"):
        return
    target = args[0] if args else None
    if isinstance(target, (str, bytes, os.PathLike)):
        with contextlib.suppress(TypeError, ValueError):
            _AUDIT.append((event, os.fsdecode(target)))


sys.addaudithook(_audit)  # audit hooks cannot be removed; this one records only while _AUDIT is a list


class Recorder:
    """Collects opened / listed paths and calls to the network while active."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.mp = monkeypatch
        self.opened: list[tuple[str, str]] = []
        self.checked: list[str] = []
        self.probed: list[str] = []
        self.network: list[str] = []

    def __enter__(self) -> Recorder:
        global _AUDIT
        real_check, real_probe = alwb.intake.ingest.check_file, alwb.intake.images.probe

        def check_spy(path: str):  # noqa: ANN202
            self.checked.append(str(path))
            return real_check(path)

        def probe_spy(path):  # noqa: ANN001, ANN202
            self.probed.append(str(path))
            return real_probe(path)

        def no_net(name: str):  # noqa: ANN202
            def f(*a: object, **_k: object) -> None:
                self.network.append(f"{name}{a[1:2]}")
                raise OSError(f"network access attempted: {name}")

            return f

        self.mp.setattr(alwb.intake.ingest, "check_file", check_spy)
        self.mp.setattr(alwb.intake.ingest, "probe", probe_spy)
        self.mp.setattr(alwb.intake.images, "probe", probe_spy)
        self.mp.setattr(socket.socket, "connect", no_net("socket.connect"))
        self.mp.setattr(socket.socket, "connect_ex", no_net("socket.connect_ex"))
        self.mp.setattr(socket, "create_connection", no_net("socket.create_connection"))
        self.mp.setattr(socket, "getaddrinfo", no_net("socket.getaddrinfo"))
        _AUDIT = self.opened
        return self

    def __exit__(self, *exc: object) -> None:
        global _AUDIT
        _AUDIT = None


def _png(path: Path, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (12, 12, 3), dtype=np.uint8), "RGB").save(path)
    return path


def _within(path: str, root: Path) -> bool:
    return Path(os.path.abspath(path)).is_relative_to(root)


# ---------------------------------------------------------------------------- manifests
def test_manifest_rows_that_escape_are_refused_and_never_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    outside = tmp_path / "outside"
    secret = _png(outside / "secret.png", 1)
    src = tmp_path / "data"
    _png(src / "good.png", 2)
    _png(src / "sub" / "inner.png", 3)
    (src / "link.png").symlink_to(secret)
    (src / "linkdir").symlink_to(outside, target_is_directory=True)
    (src / "loop.png").symlink_to(src / "loop.png")
    root = src.resolve()
    rows = {  # raw manifest path -> expected reason (substring)
        "good.png": None,
        "sub/inner.png": None,
        str(root / "sub" / "inner.png"): "already",  # the same file twice: imported once
        "../outside/secret.png": "outside the manifest's folder",
        "sub/../../outside/secret.png": "outside the manifest's folder",
        str(secret): "outside the manifest's folder",
        "//evil.example.com/share/secret.png": "outside the manifest's folder",
        "/etc/passwd": "outside the manifest's folder",
        "link.png": "outside the manifest's folder",
        "linkdir/secret.png": "outside the manifest's folder",
        "loop.png": "cannot resolve path",
        "file:///etc/passwd": "URLs are not imported",
        f"file://{secret}": "URLs are not imported",
        "http://127.0.0.1:9/x.png": "URLs are not imported",
        "HTTPS://example.com/x.png": "URLs are not imported",
        "ftp://example.com/x.png": "URLs are not imported",
        "s3://bucket/x.png": "URLs are not imported",
        "data:image/png;base64,iVBORw0KGgo=": "URLs are not imported",
        "good\x00.png": "NUL byte",
        "../outside/secret.png\x00.png": "NUL byte",
        "..%2foutside%2fsecret.png": "file not found",
        "~/secret.png": "file not found",
        "C:\\Windows\\win.ini": "file not found",
        "x" * 5000 + ".png": "cannot read file",
    }
    csv = src / "manifest.csv"
    with open(csv, "w", encoding="utf-8", newline="") as fh:
        fh.write("path,label\n")
        for raw in rows:
            fh.write(f'"{raw}",thing\n')

    with Project.create(tmp_path / "proj") as proj, Recorder(monkeypatch) as rec:
        report = proj.add_images(csv, progress=False, workers=1)
        rejected = [(Path(p).name if len(p) < 300 else p[-40:], r) for p, r in report.rejected]

    # the two good files are in; everything else was refused with its reason
    assert report.added == 2 and report.already_known == 1
    assert len(report.rejected) == sum(1 for r in rows.values() if r not in (None, "already"))
    reasons = [r for _, r in report.rejected]
    for raw, want in rows.items():
        if want in (None, "already"):
            continue
        assert any(want in r for r in reasons), (raw, want, rejected)
    # only files inside the manifest's folder were checked, probed or opened; nothing outside was listed
    assert rec.checked and all(_within(p, root) for p in rec.checked), rec.checked
    assert rec.probed and all(_within(p, root) for p in rec.probed), rec.probed
    ours = [(e, p) for e, p in rec.opened if _within(p, tmp_path.resolve()) or _within(p, tmp_path)]
    escaped = [(e, p) for e, p in ours if not (_within(p, root) or _within(p, proj.root.resolve()))]
    assert not escaped, escaped
    assert not any(_within(p, outside.resolve()) for _, p in rec.opened)
    assert not any(p.startswith("/etc") for _, p in rec.opened)
    assert rec.network == []
    report_figures(
        tmp_path,
        "paths_manifest",
        {"rows": len(rows), "refused": len(report.rejected), "files_opened_under_tmp": len(ours)},
    )


def test_folder_scan_never_follows_links_out(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    outside = tmp_path / "outside"
    secret = _png(outside / "secret.png", 1)
    _png(outside / "deeper" / "more.png", 4)
    src = tmp_path / "flat"
    _png(src / "a.png", 2)
    (src / "link.png").symlink_to(secret)
    (src / "linked_dir").symlink_to(outside, target_is_directory=True)
    root = src.resolve()
    with Project.create(tmp_path / "proj") as proj, Recorder(monkeypatch) as rec:
        report = proj.add_images(src, progress=False, workers=1)
    assert report.added == 1
    assert [r for _, r in report.rejected] == ["symlink points outside the source folder"]
    assert all(_within(p, root) for p in rec.checked)
    assert not any(_within(p, outside.resolve()) for _, p in rec.opened), "a file or folder outside was read"
    assert rec.network == []


# ---------------------------------------------------------------------------- zip uploads
def _entry(name: str, mode: int = stat.S_IFREG | 0o644) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name)
    info.external_attr = mode << 16
    info.compress_type = zipfile.ZIP_DEFLATED
    return info


def _zip(entries: list[tuple[zipfile.ZipInfo | str, bytes]]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(_entry("ok/first.txt"), b"harmless")  # a good entry first: it must not be written either
        for info, data in entries:
            zf.writestr(info, data)
    return buf.getvalue()


def _zip_bomb(total_mb: int) -> bytes:
    """``total_mb`` MiB of zeros, streamed into the archive (never held in memory)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf, zf.open(_entry("zeros.bin"), "w") as out:
        block = bytes(1 << 20)
        for _ in range(total_mb):
            out.write(block)
    return buf.getvalue()


def _corrupt(data: bytes, name: str) -> bytes:
    d = bytearray(data)
    d[d.index(name.encode()) + len(name) + 5] ^= 0xFF  # a byte of the entry's compressed data
    return bytes(d)


HOSTILE_ZIPS = {
    "dotdot": (lambda: _zip([(_entry("../escaped.txt"), b"x")]), "outside the project"),
    "dotdot_nested": (lambda: _zip([(_entry("a/b/../../../escaped.txt"), b"x")]), "outside the project"),
    "backslash_dotdot": (lambda: _zip([(_entry("..\\escaped.txt"), b"x")]), "outside the project"),
    "absolute": (lambda: _zip([(_entry("/tmp/escaped_abs.txt"), b"x")]), "outside the project"),
    "drive_letter": (lambda: _zip([(_entry("C:/escaped.txt"), b"x")]), "outside the project"),
    "symlink": (lambda: _zip([(_entry("link", stat.S_IFLNK | 0o777), b"../../../etc/passwd")]), "symbolic link"),
    "fifo": (lambda: _zip([(_entry("pipe", stat.S_IFIFO | 0o644), b"")]), "not a regular file"),
    "corrupt_entry": (
        lambda: _corrupt(_zip([(_entry("bad.bin"), bytes(range(256)) * 64)]), "bad.bin"),
        "cannot extract",
    ),
    "bomb": (lambda: _zip_bomb(64), "zip bomb"),
    "not_a_zip": (lambda: b"PK\x03\x04 definitely not a zip", "not a readable zip"),
}


def _snapshot(folder: Path) -> dict[str, int]:
    return {
        str(p.relative_to(folder)): (p.lstat().st_size if not p.is_dir() else -1) for p in sorted(folder.rglob("*"))
    }


@pytest.mark.parametrize("kind", list(HOSTILE_ZIPS))
@pytest.mark.parametrize("as_file", [True, False], ids=["path", "upload"])
def test_hostile_zip_is_refused_whole(tmp_path: Path, kind: str, as_file: bool) -> None:
    build, reason = HOSTILE_ZIPS[kind]
    data = build()
    parent = tmp_path / "project"
    dest = parent / "uploads" / "batch"
    parent.mkdir()
    (parent / "keep.txt").write_text("existing")
    zpath = tmp_path / "upload.zip"
    zpath.write_bytes(data)
    before = _snapshot(tmp_path)
    with pytest.raises(AlwbError, match=reason):
        safe_extract(zpath if as_file else io.BytesIO(data), dest)
    after = _snapshot(tmp_path)
    new_files = {k: v for k, v in after.items() if k not in before and v != -1}
    assert new_files == {}, new_files  # no file anywhere: not outside dest, not even inside it
    assert {k: v for k, v in before.items()} == {k: v for k, v in after.items() if k in before}
    assert not Path("/tmp/escaped_abs.txt").exists()


def test_zip_through_a_symlinked_folder_in_dest_is_refused(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "sub").symlink_to(outside, target_is_directory=True)
    with pytest.raises(AlwbError, match="outside the project"):
        safe_extract(io.BytesIO(_zip([(_entry("sub/escaped.txt"), b"x")])), dest)
    assert list(outside.iterdir()) == []


def test_too_many_entries_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(alwb.intake.ziputil, "MAX_ENTRIES", 5)
    data = _zip([(_entry(f"f{i}.txt"), b"x") for i in range(5)])
    with pytest.raises(AlwbError, match="entries"):
        safe_extract(io.BytesIO(data), tmp_path / "dest")
    assert not (tmp_path / "dest").exists()


def test_ordinary_zips_extract(tmp_path: Path) -> None:
    """Zips as Python's zipfile (permission bits only), Info-ZIP (file mode) and Windows (no mode) write them."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("cats/a.txt", b"a")  # external_attr = 0o600 << 16, no file-type bits
        zf.writestr(_entry("dogs/b.txt"), b"b")
        win = zipfile.ZipInfo("c.txt")
        win.create_system, win.external_attr = 0, 0x20  # MS-DOS "archive" attribute only
        zf.writestr(win, b"c")
        zf.writestr(zipfile.ZipInfo("empty_dir/"), b"")
    written = safe_extract(io.BytesIO(buf.getvalue()), tmp_path / "dest")
    got = sorted(p.relative_to(tmp_path / "dest").as_posix() for p in written)
    assert got == ["c.txt", "cats/a.txt", "dogs/b.txt"]
    assert (tmp_path / "dest" / "dogs" / "b.txt").read_bytes() == b"b"


def test_content_root_skips_the_wrapping_folder_of_a_zip(tmp_path: Path) -> None:
    """A zip of ``photos/a.jpg …`` is read from inside ``photos/`` (else ``photos`` would be taken for a class);
    a zip of class folders stays a tree of classes."""
    wrapped = tmp_path / "w"
    (wrapped / "photos" / "inner").mkdir(parents=True)
    (wrapped / "__MACOSX").mkdir()
    (wrapped / ".DS_Store").write_bytes(b"")
    (wrapped / "photos" / "inner" / "a.png").write_bytes(b"")
    (wrapped / "photos" / "inner" / "b.png").write_bytes(b"")
    assert content_root(wrapped) == wrapped / "photos" / "inner"
    classes = tmp_path / "c"
    for name in ("ants", "bees"):
        (classes / "data" / name).mkdir(parents=True)
    assert content_root(classes) == classes / "data"
    flat = tmp_path / "f"
    flat.mkdir()
    (flat / "a.png").write_bytes(b"")
    assert content_root(flat) == flat
