"""A project's images under an image root: paths stored relative to it, each machine mapping it (ALWB_IMAGE_ROOT).

Two "machines" on one host: machine A sees the project folder and the images at one place; machine B sees the
same project folder at another path (the folder renamed) and its own copy of the images (the originals renamed
away, so an absolute path would fail). B trains, A reads the model and the scores and shows the items.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from conftest import make_shapes

from alwb.cli import main
from alwb.intake.images import ENV_IMAGE_ROOT, ImageMissing, ImageRoot, load_image
from alwb.io.export import export_dataset
from alwb.project import Project
from alwb.store import LabelRow


def _create(root: Path, store_location: str | Path, image_root: Path | None) -> Project:
    url = store_location if isinstance(store_location, str) else None
    proj = Project.create(root, classes=["circle", "square", "triangle"], store_url=url)
    if image_root is not None:
        proj.store.set_image_root(image_root)
    return proj


def _label_half(proj: Project, truth: dict[str, str]) -> None:
    rows = [LabelRow(proj.store.item_by_path(p)["id"], c) for p, c in sorted(truth.items())[::2]]
    proj.store.add_labels(rows, annotator="ann")


@pytest.fixture(autouse=True)
def _no_root_from_outside(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_IMAGE_ROOT, raising=False)


def test_ingest_under_a_root_stores_relative_paths(tmp_path: Path, store_location: str | Path) -> None:
    images = tmp_path / "images"
    truth = make_shapes(images, 4, layout="imagefolder")
    other = tmp_path / "elsewhere"
    other_truth = make_shapes(other, 2, layout="flat", seed=1)
    with _create(tmp_path / "proj", store_location, images) as proj:
        rep = proj.add_images(images)
        assert rep.added == 12 and not rep.outside_root
        paths = proj.store.stored_paths()
        assert sorted(paths) == sorted(Path(p).relative_to(images.resolve()).as_posix() for p in truth)
        assert all("/" in p and not p.startswith("/") for p in paths)  # class folder / file, POSIX separators
        # a file's absolute path still finds its item (answer files, scripts)
        some = sorted(truth)[0]
        assert proj.store.item_by_path(some)["path"] == Path(some).relative_to(images.resolve()).as_posix()
        # known paths compare like with like: importing again adds nothing
        again = proj.add_images(images)
        assert (again.added, again.already_known, again.duplicates) == (0, 12, 0)
        # images outside the root stay absolute, and the report says so
        out = proj.add_images(other)
        assert out.added == 6 and sorted(out.outside_root) == sorted(other_truth)
        assert "6 image(s) outside the image root" in out.summary() and "same path" in out.summary()
        assert sum(Path(p).is_absolute() for p in proj.store.stored_paths()) == 6


def test_init_records_the_folder_imported_and_root_shows_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    images = tmp_path / "images"
    make_shapes(images, 3, layout="flat")
    proj = tmp_path / "proj"
    assert main(["init", str(proj), "--images", str(images), "--classes", "circle,square,triangle"]) == 0
    capsys.readouterr()
    assert main(["root", str(proj)]) == 0
    out = capsys.readouterr().out
    assert f"image root {images.resolve()}" in out and "as recorded, found" in out
    assert "items: 9 relative to the root, 0 absolute" in out and "all found" in out
    with Project.open(proj) as p:
        assert all(not Path(x).is_absolute() for x in p.store.stored_paths())
    # another machine maps the root elsewhere: the command says where, and that the images are not there
    monkeypatch.setenv(ENV_IMAGE_ROOT, str(tmp_path / "not-here"))
    assert main(["root", str(proj)]) == 1
    out = capsys.readouterr().out
    assert f"{ENV_IMAGE_ROOT}={tmp_path / 'not-here'}" in out and "NOT FOUND on this machine" in out
    assert "9 missing" in out
    # an explicit --image-root above the folder imported (on a machine that maps no root)
    monkeypatch.delenv(ENV_IMAGE_ROOT)
    proj2 = tmp_path / "proj2"
    assert main(["init", str(proj2), "--images", str(images), "--image-root", str(tmp_path)]) == 0
    with Project.open(proj2) as p:
        assert all(x.startswith("images/") for x in p.store.stored_paths())


def test_two_machines_worker_trains_elsewhere_and_the_server_reads_the_model(
    tmp_path: Path, store_location: str | Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    images_a = tmp_path / "images-a"
    truth = make_shapes(images_a, 8, layout="flat")
    site_a, site_b = tmp_path / "site-a", tmp_path / "site-b"
    with _create(site_a / "proj", store_location, images_a) as proj:
        proj.add_images(images_a)
        _label_half(proj, truth)
        n_items = proj.store.item_count()
    assert main(["train", str(site_a / "proj"), "--queue", "--epochs", "2", "--device", "cpu"]) == 0

    # machine B: the project folder at another path, the images a copy at another path, the originals gone
    images_b = tmp_path / "images-b"
    shutil.copytree(images_a, images_b)
    images_a.rename(tmp_path / "images-a.away")
    site_a.rename(site_b)
    monkeypatch.setenv(ENV_IMAGE_ROOT, str(images_b))
    capsys.readouterr()
    assert main(["worker", str(site_b / "proj"), "--once", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "request 1: round 1 done" in out, out
    assert f"on this machine {images_b}" in out  # the worker says where it reads the images

    # machine A: its own paths back, no ALWB_IMAGE_ROOT
    monkeypatch.delenv(ENV_IMAGE_ROOT)
    site_b.rename(site_a)
    (tmp_path / "images-a.away").rename(images_a)
    shutil.rmtree(images_b)
    with Project.open(site_a / "proj") as proj:
        assert proj.store.rounds()[-1]["status"] == "done"
        model = proj.current_model()
        assert model is not None and Path(model["path"]).is_file()
        assert Path(model["path"]).is_relative_to(site_a.resolve())
        scores = proj.scores()
        assert scores is not None and (scores.rows(proj.store.item_ids()) >= 0).all()
        assert proj.store.item_count() == n_items and proj.store.rejected() == []  # B rejected nothing
        res = proj.query(6, "margin")
        assert len(res.items) == 6 and any(it.predicted is not None for it in res.items)
        images = proj.store.image_root()
        for it in res.items:
            assert not Path(it.path).is_absolute()
            assert load_image(images.open_path(it.path)).size == (20, 20)
        rep = export_dataset(proj, tmp_path / "export")
        assert rep[1] == len(truth) // 2 + len(truth) % 2
    # nothing in the project folder names machine B's paths
    for f in (site_a / "proj").rglob("*"):
        if f.is_file():
            data = f.read_bytes()
            assert str(site_b).encode() not in data and str(images_b).encode() not in data, f


def test_the_server_shows_an_image_through_the_mapped_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from ui import state

    images = tmp_path / "images"
    make_shapes(images, 2, layout="flat")
    with _create(tmp_path / "proj", tmp_path / "proj" / "alwb.sqlite", images) as proj:
        proj.add_images(images)
        stored = proj.store.stored_paths()[0]
        moved = tmp_path / "mounted-here"
        images.rename(moved)
        digest = proj.store.digests([stored])[stored]
        assert state.image_bytes(proj.store.image_root(), stored, 64, digest) is None
        problem = state.image_problem(proj.store.image_root(), stored, digest)
        assert "image not found on this machine" in problem and ENV_IMAGE_ROOT in problem
        monkeypatch.setenv(ENV_IMAGE_ROOT, str(moved))
        shown = state.image_bytes(proj.store.image_root(), stored, 64, digest)
        assert shown is not None and shown[1] == "PNG"


def test_root_set_moves_an_old_project_with_absolute_paths(
    tmp_path: Path, store_location: str | Path, capsys: pytest.CaptureFixture[str]
) -> None:
    images = tmp_path / "images"
    truth = make_shapes(images, 3, layout="imagefolder")
    outside = tmp_path / "outside"
    make_shapes(outside, 1, layout="flat", seed=2)
    with _create(tmp_path / "proj", store_location, None) as proj:  # an old project: no root, absolute paths
        proj.add_images(images)
        proj.add_images(outside)
        before = {r["item_id"]: r["class"] for r in proj.store.current_labels()}
        ids = proj.store.item_ids()
        assert all(Path(p).is_absolute() for p in proj.store.stored_paths())
    assert main(["root", str(tmp_path / "proj"), "set", str(images)]) == 0
    out = capsys.readouterr().out
    assert "9 stored path(s) rewritten; 9 relative to the root, 3 absolute" in out, out
    with Project.open(tmp_path / "proj") as proj:
        assert proj.store.get_meta("image_root") == str(images.resolve())
        assert proj.store.item_ids() == ids
        assert {r["item_id"]: r["class"] for r in proj.store.current_labels()} == before  # labels untouched
        rel = [p for p in proj.store.stored_paths() if not Path(p).is_absolute()]
        assert sorted(rel) == sorted(Path(p).relative_to(images.resolve()).as_posix() for p in truth)
        assert proj.add_images(images).already_known == 9  # re-import: still known
        # a root one level down: a path that was relative becomes absolute, one that was 'circle/x' becomes 'x'
        change = proj.store.set_image_root(images / "circle")
        assert (change.changed, change.relative, change.absolute) == (9, 3, 9)
        for i in ids:
            p = proj.store.item(i)["path"]
            assert proj.store.image_root().open_path(p).is_file()
        # and back to no root at all: every path absolute again
        change = proj.store.set_image_root(None)
        assert change.relative == 0 and all(Path(p).is_absolute() for p in proj.store.stored_paths())


def test_a_missing_image_is_a_clear_message_and_nothing_is_rejected(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    images = tmp_path / "images"
    truth = make_shapes(images, 6, layout="flat")
    root = tmp_path / "proj"
    with _create(root, root / "alwb.sqlite", images) as proj:
        proj.add_images(images)
        _label_half(proj, truth)
    empty = tmp_path / "wrong-mount"
    empty.mkdir()
    monkeypatch.setenv(ENV_IMAGE_ROOT, str(empty))
    code = main(["train", str(root), "--epochs", "1", "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert "image not found on this machine" in err and f"{ENV_IMAGE_ROOT}={empty}" in err
    assert "stored as 'circle_000.png'" in err and "(18 of 18 images are missing)" in err
    with Project.open(root) as proj:
        assert proj.store.rejected() == [] and proj.store.item_count() == 18
        with pytest.raises(ImageMissing, match="stored as"):
            proj.store.image_root().open_path("circle_000.png")
        assert ImageRoot.of(proj.store.get_meta("image_root"), str(images)).open_path("circle_000.png").is_file()

    # with the right root, a file overwritten since import is skipped and reported (its content is not the one
    # imported: it is never trained on)
    monkeypatch.delenv(ENV_IMAGE_ROOT)
    (images / "square_001.png").write_bytes(b"not an image")
    assert main(["train", str(root), "--epochs", "1", "--device", "cpu"]) == 0
    with Project.open(root) as proj:
        assert [Path(r["path"]).name for r in proj.store.rejected()] == ["square_001.png"]
        assert "the file changed since it was imported" in proj.store.rejected()[0]["reason"]
    assert os.environ.get(ENV_IMAGE_ROOT) is None


@pytest.fixture
def small_backbone(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):  # noqa: ANN201
    """The real ResNet-18 architecture with random weights at 64 px (as in test_embed.py)."""
    from weights_helpers import isolate_hub, register_test_spec, save_state_dict

    from alwb.learning import backbones

    path = save_state_dict(tmp_path / "r18.pth", "resnet18", seed=0)
    isolate_hub(monkeypatch, tmp_path)
    spec = register_test_spec("t_r18_64_roots", backbones.sha256_file(path), input_size=64, resize_size=72)
    backbones.add(spec.name, path)
    yield backbones.load(spec.name, download=False)
    backbones.unregister(spec.name)


def test_embeddings_read_the_images_through_the_mapped_root(
    tmp_path: Path,
    small_backbone,
    monkeypatch: pytest.MonkeyPatch,  # noqa: ANN001
) -> None:
    from alwb.learning.embed import EmbeddingCache, embed_items, items_from_store

    images = tmp_path / "images"
    make_shapes(images, 2, size=40, layout="flat")
    root = tmp_path / "proj"
    with _create(root, root / "alwb.sqlite", images) as proj:
        proj.add_images(images)
        stored = items_from_store(proj.store, located=False)
        assert all(not Path(p).is_absolute() for _, p in stored)
        assert all(Path(p).is_file() for _, p in items_from_store(proj.store))  # located: the files here
        mounted = tmp_path / "mounted"
        images.rename(mounted)
        with pytest.raises(ImageMissing, match=r"\(6 of 6 images are missing\)"):
            embed_items(root, stored, small_backbone, device="cpu", workers=0, images=proj.store.image_root())
        cache = EmbeddingCache.for_backbone(root, small_backbone)
        assert len(cache.embedded_ids()) == 0 and not cache.errors  # nothing marked unreadable
        monkeypatch.setenv(ENV_IMAGE_ROOT, str(mounted))
        rep = embed_items(root, stored, small_backbone, device="cpu", workers=0, images=proj.store.image_root())
        assert rep.embedded == 6 and rep.unreadable == {}


def test_uploads_into_the_project_folder_are_read_wherever_the_folder_is_mounted(
    tmp_path: Path, store_location: str | Path, capsys: pytest.CaptureFixture[str]
) -> None:
    photos = tmp_path / "photos"
    truth = make_shapes(photos, 3, layout="imagefolder")
    site_a, site_b = tmp_path / "site-a", tmp_path / "site-b"
    with _create(site_a / "proj", store_location, photos) as proj:
        proj.add_images(photos)
        # an upload added later: the workbench unpacks it into PROJECT/uploads/<name>/ (ui/views/start.py)
        upload = proj.root / "uploads" / "late"
        up_truth = make_shapes(upload, 2, layout="imagefolder", seed=3)
        rep = proj.add_images(upload)
        assert rep.added == len(up_truth) and not rep.outside_root
        stored = [p for p in proj.store.stored_paths() if p.startswith("@project/")]
        assert sorted(stored) == sorted("@project/" + Path(p).relative_to(proj.root).as_posix() for p in up_truth)
        assert proj.store.item_by_path(sorted(up_truth)[0])["path"] in stored  # found by its full path too
        assert proj.add_images(upload).already_known == len(up_truth)
        truth.update(up_truth)
        _label_half(proj, truth)
    capsys.readouterr()
    assert main(["root", str(site_a / "proj")]) == 0
    assert f"{len(truth) - len(up_truth)} relative to the root, 0 absolute, {len(up_truth)} in the project" in (
        capsys.readouterr().out
    )
    # another machine mounts the project folder elsewhere: the uploads are read there, and a round trains
    site_a.rename(site_b)
    with Project.open(site_b / "proj") as proj:
        images = proj.store.image_root()
        for p in stored:
            assert images.open_path(p).is_relative_to(site_b.resolve())
        res = proj.train(epochs=1, device="cpu")
        assert res.round == 1 and proj.store.rejected() == []
        rep = export_dataset(proj, tmp_path / "export")
        assert rep[1] == len(truth)  # class folders: every image came labeled, the uploads' copied too
        # adopting another root keeps the uploads relative to the project folder
        change = proj.store.set_image_root(photos / "circle")
        assert change.in_project == len(up_truth) and change.relative == 3 and change.absolute == 6
        assert sorted(p for p in proj.store.stored_paths() if p.startswith("@project/")) == sorted(stored)
