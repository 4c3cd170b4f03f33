"""Importing folders and CSV manifests into a project: good files in, bad files rejected with a reason.

Every image is generated here with Pillow in ``tmp_path``; nothing is downloaded and no GPU is used.
"""

from __future__ import annotations

import hashlib
import io
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import alwb.intake.ingest as ingest_mod
from alwb.errors import AlwbError, ManifestError
from alwb.intake.ingest import reject_reasons
from alwb.project import Project

# ----------------------------------------------------------------------------- helpers


def _noise(h: int, w: int, seed: int) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8), mode="RGB")


def _png_declaring(width: int, height: int) -> bytes:
    """A tiny valid PNG whose IHDR is patched to declare ``width``×``height`` (CRC recomputed)."""
    buf = io.BytesIO()
    Image.new("L", (4, 4), 7).save(buf, "PNG")
    data = bytearray(buf.getvalue())
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


def _key(path: Path) -> str:
    """The path as the store records it (absolute, symlinks resolved)."""
    return str(path.resolve())


#: name -> (width, height, grey, mode) for the images that must be imported
GOOD: dict[str, tuple[int, int, bool, str]] = {
    "plain.png": (30, 20, False, "RGB"),
    "photo.jpg": (40, 30, False, "RGB"),
    "grey.png": (16, 12, True, "L"),
    "bitmap.bmp": (10, 10, False, "RGB"),
    "cmyk.jpg": (24, 16, False, "CMYK"),
    "deep16.png": (12, 8, True, "I;16"),
    "palette_alpha.png": (8, 8, False, "P"),
    "rotated.jpg": (40, 20, False, "RGB"),  # stored 20×40 with EXIF orientation 6
    "anim.gif": (20, 10, False, "P"),
}
#: name -> a substring of its reject reason
BAD: dict[str, str] = {
    "empty.png": "empty",
    "text.jpg": "not a supported image",
    "truncated.jpg": "truncated",
    "bomb.png": "decompression bomb",
}


def _make_zoo(folder: Path) -> Path:
    """A flat folder with every kind of good and bad file ingest must cope with."""
    folder.mkdir(parents=True, exist_ok=True)
    _noise(20, 30, 1).save(folder / "plain.png")
    _noise(30, 40, 2).save(folder / "photo.jpg", quality=90)
    Image.fromarray(np.arange(16 * 12, dtype=np.uint8).reshape(12, 16), mode="L").save(folder / "grey.png")
    Image.new("RGB", (10, 10), (3, 200, 9)).save(folder / "bitmap.bmp")
    Image.new("CMYK", (24, 16), (0, 255, 255, 0)).save(folder / "cmyk.jpg")
    Image.fromarray(np.linspace(0, 65535, 96, dtype=np.uint16).reshape(8, 12)).save(folder / "deep16.png")
    pal = Image.new("P", (8, 8), 0)
    pal.putpalette([0, 0, 0, 255, 0, 0, 0, 0, 255])
    pal.paste(1, (0, 0, 4, 8))
    pal.paste(2, (4, 0, 6, 8))
    pal.save(folder / "palette_alpha.png", transparency=0)
    exif = Image.Exif()
    exif[0x0112] = 6
    _noise(40, 20, 3).save(folder / "rotated.jpg", quality=90, exif=exif.tobytes())
    frames = [Image.new("RGB", (20, 10), c) for c in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    frames[0].save(folder / "anim.gif", save_all=True, append_images=frames[1:], duration=40, loop=0)

    (folder / "empty.png").write_bytes(b"")
    (folder / "text.jpg").write_text("definitely not a JPEG\n" * 10)
    jpeg = io.BytesIO()
    _noise(64, 64, 4).save(jpeg, "JPEG", quality=90)
    (folder / "truncated.jpg").write_bytes(jpeg.getvalue()[: len(jpeg.getvalue()) // 2])
    (folder / "bomb.png").write_bytes(_png_declaring(20_000, 10_000))

    (folder / "notes.txt").write_text("not an image, must be ignored\n")
    return folder


@pytest.fixture
def project(tmp_path: Path):
    with Project.create(tmp_path / "proj") as proj:
        yield proj


def _rejected(proj: Project) -> dict[str, str]:
    return {r["path"]: r["reason"] for r in proj.store.rejected()}


def _items(proj: Project) -> dict[str, dict]:
    return {r["path"]: dict(r) for r in proj.store.items()}


# ----------------------------------------------------------------------------- a folder of good and bad files
def test_flat_folder_imports_good_and_rejects_bad(tmp_path: Path, project: Project) -> None:
    src = _make_zoo(tmp_path / "src")
    report = project.add_images(src, workers=1)

    assert report.kind == "flat folder"
    assert report.added == len(GOOD)
    assert report.labeled == 0 and report.duplicates == 0 and report.already_known == 0
    assert report.ignored == 1  # notes.txt
    assert report.new_classes == []

    items = _items(project)
    assert set(items) == {_key(src / n) for n in GOOD}
    for name, (width, height, grey, mode) in GOOD.items():
        row = items[_key(src / name)]
        assert row["status"] == "ok" and row["reason"] is None, name
        assert (row["width"], row["height"]) == (width, height), name
        assert bool(row["grey"]) is grey, name
        assert row["mode"] == mode, name
        assert row["size"] == (src / name).stat().st_size
        assert row["sha256"] == hashlib.sha256((src / name).read_bytes()).hexdigest()

    rejected = _rejected(project)
    assert set(rejected) == {_key(src / n) for n in BAD}
    for name, reason in BAD.items():
        assert reason in rejected[_key(src / name)], (name, rejected[_key(src / name)])
    assert dict(report.rejected) == rejected
    assert not any("notes.txt" in p for p in rejected) and project.store.item_by_path(_key(src / "notes.txt")) is None

    # nothing labelled, no classes invented; a validation split was drawn from the new items
    assert project.classes == []
    assert len(project.store.unlabeled_item_ids(split=None)) == len(GOOD)
    assert project.store.val_item_ids()
    assert "rejected" in report.summary()

    counts = reject_reasons(project.store)
    assert sum(counts.values()) == len(BAD)


def test_reimport_adds_nothing(tmp_path: Path, project: Project) -> None:
    src = _make_zoo(tmp_path / "src")
    first = project.add_images(src, workers=1)
    before = _items(project), _rejected(project)

    again = project.add_images(src, workers=1)
    assert again.added == 0
    assert again.already_known == len(GOOD) == first.added
    # files rejected before are checked again (they may have been fixed); still bad, nothing changes
    assert sorted(again.rejected) == sorted(first.rejected)
    assert again.duplicates == 0 and again.labeled == 0
    assert (_items(project), _rejected(project)) == before


def test_a_rejected_file_that_was_fixed_is_accepted_on_reimport(tmp_path: Path, project: Project) -> None:
    from PIL import Image

    src = tmp_path / "src"
    src.mkdir()
    Image.new("RGB", (12, 12), (10, 200, 30)).save(src / "ok.png")
    (src / "later.png").write_bytes(b"")
    first = project.add_images(src, workers=1)
    assert first.added == 1 and [r for _, r in first.rejected] == ["empty file (0 bytes)"]
    Image.new("RGB", (14, 10), (200, 10, 30)).save(src / "later.png")
    again = project.add_images(src, workers=1)
    assert again.added == 1 and again.rejected == [] and again.already_known == 1
    row = project.store.item_by_path(_key(src / "later.png"))
    assert row["status"] == "ok" and row["reason"] is None and (row["width"], row["height"]) == (14, 10)
    assert project.store.rejected() == [] and project.store.item_count() == 2


def test_same_content_under_a_new_name_is_a_duplicate(tmp_path: Path, project: Project) -> None:
    src = _make_zoo(tmp_path / "src")
    project.add_images(src, workers=1)
    shutil.copyfile(src / "photo.jpg", src / "photo copy.jpg")

    report = project.add_images(src, workers=1)
    assert report.added == 0
    assert report.duplicates == 1
    assert report.already_known == len(GOOD)
    assert project.store.item_by_path(_key(src / "photo copy.jpg")) is None
    assert project.store.item_count() == len(GOOD)


def test_duplicates_within_one_import(tmp_path: Path, project: Project) -> None:
    src = tmp_path / "src"
    src.mkdir()
    _noise(8, 8, 5).save(src / "a.png")
    shutil.copyfile(src / "a.png", src / "b.png")
    _noise(8, 8, 6).save(src / "c.png")
    report = project.add_images(src, workers=1)
    assert (report.added, report.duplicates) == (2, 1)
    assert {Path(r["path"]).name for r in project.store.items()} == {"a.png", "c.png"}


# ----------------------------------------------------------------------------- ImageFolder trees
def _image_folder(root: Path) -> dict[str, str | None]:
    """cat/, dog/ (with a nested folder), Zebra/ and a loose top-level image; returns name -> label."""
    layout = {
        "dog/d1.png": "dog",
        "dog/deeper/d2.png": "dog",
        "cat/c1.png": "cat",
        "cat/c2.jpg": "cat",
        "Zebra/z1.png": "Zebra",
        "loose.png": None,
    }
    for i, rel in enumerate(layout):
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        _noise(12, 10 + i, 100 + i).save(path)
    (root / "cat" / "README.txt").write_text("ignored")
    (root / ".hidden").mkdir()
    _noise(5, 5, 99).save(root / ".hidden" / "h.png")
    return layout


def test_image_folder_labels_and_sorted_classes(tmp_path: Path, project: Project) -> None:
    src = tmp_path / "tree"
    layout = _image_folder(src)
    report = project.add_images(src, workers=1)

    assert report.kind == "ImageFolder tree"
    assert report.added == len(layout)
    assert report.labeled == 5
    assert report.ignored == 1
    assert project.classes == sorted(["cat", "dog", "Zebra"]) == report.new_classes

    labels = {r["path"]: (r["class"], r["source"]) for r in project.store.current_labels()}
    expected = {_key(src / rel): (label, "import") for rel, label in layout.items() if label is not None}
    assert labels == expected
    assert [Path(project.store.item(i)["path"]).name for i in project.store.unlabeled_item_ids(split=None)] == [
        "loose.png"
    ]
    assert not any(".hidden" in r["path"] for r in project.store.items())


def test_image_folder_with_unlabeled_flag(tmp_path: Path, project: Project) -> None:
    src = tmp_path / "tree"
    layout = _image_folder(src)
    report = project.add_images(src, unlabeled=True, workers=1)
    assert report.kind == "flat folder"
    assert (report.added, report.labeled) == (len(layout), 0)
    assert project.classes == [] and project.store.current_labels() == []


def test_classes_mismatch_raises_and_writes_nothing(tmp_path: Path, project: Project) -> None:
    src = tmp_path / "tree"
    _image_folder(src)
    with pytest.raises(AlwbError, match="not among --classes"):
        project.add_images(src, classes=["cat", "dog", "bird"], workers=1)
    assert project.store.item_count() == 0
    assert project.store.item_count("rejected") == 0
    assert project.classes == []


def test_classes_given_fix_the_order(tmp_path: Path, project: Project) -> None:
    src = tmp_path / "tree"
    _image_folder(src)
    report = project.add_images(src, classes=["dog", "Zebra", "cat", "bird"], workers=1)
    assert project.classes == ["dog", "Zebra", "cat", "bird"] == report.new_classes
    assert report.labeled == 5


def test_symlink_escaping_a_scanned_folder_is_rejected(tmp_path: Path, project: Project) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    _noise(8, 8, 7).save(outside / "secret.png")
    _noise(8, 8, 8).save(outside / "in_dir.png")
    src = tmp_path / "src"
    src.mkdir()
    _noise(8, 8, 9).save(src / "ok.png")
    (src / "escape.png").symlink_to(outside / "secret.png")
    (src / "linked_dir").symlink_to(outside, target_is_directory=True)

    report = project.add_images(src, workers=1)
    assert report.added == 1
    assert report.kind == "flat folder"  # the symlinked folder is neither walked nor taken for a class folder
    rejected = _rejected(project)
    assert list(rejected) == [str(src.resolve() / "escape.png")]
    assert "outside" in rejected[str(src.resolve() / "escape.png")]
    assert all(str(outside.resolve()) not in r["path"] for r in project.store.items())


def test_missing_and_empty_sources(tmp_path: Path, project: Project) -> None:
    with pytest.raises(AlwbError, match="not found"):
        project.add_images(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("x")
    with pytest.raises(AlwbError, match="no images"):
        project.add_images(tmp_path / "empty")


# ----------------------------------------------------------------------------- CSV manifests
def test_manifest_paths_relative_to_csv(tmp_path: Path, project: Project) -> None:
    src = tmp_path / "data"
    (src / "imgs" / "sub").mkdir(parents=True)
    _noise(10, 12, 20).save(src / "imgs" / "a.png")
    _noise(10, 13, 21).save(src / "imgs" / "sub" / "b.jpg")
    _noise(10, 14, 22).save(src / "c.png")
    _noise(10, 15, 23).save(src / "not_listed.png")
    csv = src / "manifest.csv"
    csv.write_text("path,label\nimgs/a.png,owl\nimgs/sub/b.jpg,cat\n./c.png,\nimgs/sub/../a.png,owl\n")

    report = project.add_images(csv, workers=1)
    assert report.kind == "CSV manifest"
    assert (report.added, report.labeled, report.already_known) == (3, 2, 1)
    assert project.classes == ["owl", "cat"]  # order of first appearance
    labels = {Path(r["path"]).name: r["class"] for r in project.store.current_labels()}
    assert labels == {"a.png": "owl", "b.jpg": "cat"}
    assert {Path(r["path"]).name for r in project.store.items()} == {"a.png", "b.jpg", "c.png"}
    assert all(r["source"] == "import" for r in project.store.current_labels())


@pytest.mark.parametrize("name", ["list.tsv", "LIST.TSV"])
def test_tsv_manifest(tmp_path: Path, project: Project, name: str) -> None:
    _noise(6, 6, 40).save(tmp_path / "a.png")
    _noise(6, 6, 41).save(tmp_path / "b, with comma.png")
    manifest = tmp_path / name
    manifest.write_text("path\tlabel\na.png\tx\nb, with comma.png\ty\n")
    report = project.add_images(manifest, workers=1)
    assert (report.kind, report.added, report.labeled) == ("CSV manifest", 2, 2)
    assert project.classes == ["x", "y"]


def test_manifest_without_path_column(tmp_path: Path, project: Project) -> None:
    csv = tmp_path / "m.csv"
    csv.write_text("file,label\na.png,x\n")
    with pytest.raises(ManifestError, match="no 'path' column"):
        project.add_images(csv)


def test_manifest_unsafe_rows_rejected_and_never_read(tmp_path: Path, project: Project, monkeypatch) -> None:
    outside = tmp_path / "outside.png"
    _noise(8, 8, 30).save(outside)
    src = tmp_path / "data"
    src.mkdir()
    _noise(8, 8, 31).save(src / "good.png")
    (src / "link.png").symlink_to(outside)
    root = src.resolve()
    rows = {
        "../outside.png": (f"{root}/../outside.png", "outside"),
        str(outside.resolve()): (str(outside.resolve()), "outside"),
        "link.png": (f"{root}/link.png", "outside"),
        "file:///etc/passwd": ("file:///etc/passwd", "URL"),
        "http://example.com/a.png": ("http://example.com/a.png", "URL"),
        "missing.png": (f"{root}/missing.png", "not found"),
    }
    csv = src / "manifest.csv"
    csv.write_text("path,label\ngood.png,ok\n" + "".join(f"{p},bad\n" for p in rows))

    checked: list[str] = []
    real_check = ingest_mod.check_file

    def spy(path: str):  # noqa: ANN202
        checked.append(path)
        return real_check(path)

    monkeypatch.setattr(ingest_mod, "check_file", spy)
    report = project.add_images(csv, workers=1)

    assert report.added == 1 and project.store.item_count() == 1
    rejected = _rejected(project)
    assert len(rejected) == len(rows)
    for raw, (stored, reason) in rows.items():
        assert reason in rejected[stored], (raw, rejected[stored])
        if raw != "missing.png":  # refused while scanning: the reason names the manifest line
            assert rejected[stored].startswith("line "), raw
    assert dict(report.rejected) == rejected

    # only files inside the manifest's folder were ever opened
    assert checked and all(Path(p).resolve().is_relative_to(root) for p in checked)
    assert str(outside.resolve()) not in checked
    # refused rows were not even hashed
    shas = {r["path"]: r["sha256"] for r in project.store.con.execute("SELECT path, sha256 FROM items")}
    assert all(shas[stored] is None for stored, _ in rows.values())
    assert project.classes[0] == "ok"
    counts = reject_reasons(project.store)
    assert not any(k.startswith("line ") for k in counts)


def test_manifest_reimport_adds_nothing(tmp_path: Path, project: Project) -> None:
    src = _make_zoo(tmp_path / "src")
    csv = src / "list.csv"
    csv.write_text("path\n" + "".join(f"{n}\n" for n in [*GOOD, *BAD]))
    first = project.add_images(csv, workers=1)
    assert first.added == len(GOOD) and len(first.rejected) == len(BAD)
    for name, reason in BAD.items():
        assert reason in _rejected(project)[_key(src / name)]
    again = project.add_images(csv, workers=1)
    assert (again.added, again.already_known, len(again.rejected)) == (0, len(GOOD), len(BAD))
    # the same files seen through the folder are already known too
    folder = project.add_images(src, workers=1)
    assert (folder.added, folder.already_known) == (0, len(GOOD))
    assert project.store.item_count() == len(GOOD) and len(project.store.rejected()) == len(BAD)


# ----------------------------------------------------------------------------- the process pool
def _many_images(root: Path, n: int) -> None:
    for i in range(n):
        cls = root / ("even" if i % 2 == 0 else "odd")
        cls.mkdir(parents=True, exist_ok=True)
        colour = (i % 256, (i // 256) * 40, 77)
        Image.new("RGB" if i % 3 else "L", (4 + i % 5, 4), colour if i % 3 else i % 256).save(cls / f"{i:04d}.png")
    shutil.copyfile(root / "even" / "0002.png", root / "even" / "dup.png")  # same content: one duplicate
    (root / "odd" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 10)
    (root / "odd" / "zero.png").write_bytes(b"")


def test_process_pool_gives_the_same_result(tmp_path: Path, monkeypatch) -> None:
    src = tmp_path / "many"
    _many_images(src, 600)

    pools: list[int] = []
    real_pool = ingest_mod.ProcessPoolExecutor

    class CountingPool(real_pool):  # type: ignore[misc, valid-type]
        def __init__(self, *args, **kwargs) -> None:  # noqa: ANN002, ANN003
            pools.append(kwargs.get("max_workers", 0))
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(ingest_mod, "ProcessPoolExecutor", CountingPool)

    results = []
    for workers in (1, 2):
        with Project.create(tmp_path / f"proj{workers}") as proj:
            report = proj.add_images(src, workers=workers)
            rows = [
                tuple(r)
                for r in proj.store.con.execute(
                    "SELECT id, path, sha256, size, width, height, mode, format, grey, status, reason, split"
                    " FROM items ORDER BY id"
                )
            ]
            labels = [tuple(r) for r in proj.store.con.execute("SELECT item_id, class_id, source FROM labels")]
            summary = (report.added, report.labeled, report.duplicates, report.already_known, report.ignored)
            results.append((summary, sorted(report.rejected), proj.classes, rows, labels))
    assert pools == [2]  # workers=1 stays in-process, workers=2 used the pool

    (one, two) = results
    assert one == two
    summary, rejected, classes, rows, _ = one
    assert summary == (600, 600, 1, 0, 0)
    assert classes == ["even", "odd"]
    assert {Path(p).name for p, _ in rejected} == {"broken.png", "zero.png"}
    assert len(rows) == 602


def test_manifest_file_names_with_a_colon_are_not_urls(tmp_path: Path, project: Project) -> None:
    from PIL import Image

    src = tmp_path / "src"
    src.mkdir()
    Image.new("L", (9, 9), 77).save(src / "img:1.png")
    (src / "list.csv").write_text("path\nimg:1.png\nhttps://example.com/x.png\nFILE:/etc/hosts\n")
    report = project.add_images(src / "list.csv", workers=1)
    assert report.added == 1
    assert sorted(r for _, r in report.rejected) == [
        "line 3: URLs are not imported (only local files)",
        "line 4: URLs are not imported (only local files)",
    ]
