"""alwb.intake.images.ImageRoot: stored paths relative to a project's image root, mapped per machine."""

from __future__ import annotations

from pathlib import Path

import pytest

from alwb.intake.images import ENV_IMAGE_ROOT, ImageMissing, ImageRoot, check_present


def test_paths_under_the_root_are_stored_relative_and_located_back(tmp_path: Path) -> None:
    root = ImageRoot.of(str(tmp_path), "")
    assert root.to_stored(tmp_path / "cats" / "a.png") == "cats/a.png"
    assert root.to_stored(Path("/elsewhere/b.png")) == "/elsewhere/b.png"  # outside: absolute, as it is
    assert root.to_stored(tmp_path) == str(tmp_path)  # the root itself is no item path
    assert root.locate("cats/a.png") == tmp_path / "cats" / "a.png"
    assert root.locate("/elsewhere/b.png") == Path("/elsewhere/b.png")  # old projects: absolute paths kept


def test_the_environment_maps_the_root_on_this_machine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_IMAGE_ROOT, str(tmp_path / "mnt"))
    root = ImageRoot.of("/data/photos")
    assert root.from_env and root.locate("cats/a.png") == tmp_path / "mnt" / "cats" / "a.png"
    assert "NOT FOUND on this machine" in root.describe() and f"{ENV_IMAGE_ROOT}=" in root.describe()
    monkeypatch.setenv(ENV_IMAGE_ROOT, "  ")  # blank: the recorded root
    assert ImageRoot.of("/data/photos").local == Path("/data/photos")
    assert "absolute" in ImageRoot.of(None, "").describe()


def test_a_root_reached_through_a_symlink_matches_resolved_paths(tmp_path: Path) -> None:
    real = tmp_path / "real"
    (real / "x").mkdir(parents=True)
    link = tmp_path / "link"
    link.symlink_to(real)
    root = ImageRoot.of(None, str(link))
    assert root.relative(real / "x" / "a.png") == "x/a.png"
    assert root.relative(link / "x" / "a.png") == "x/a.png"


def test_missing_files_are_named_with_the_root_and_the_hint(tmp_path: Path) -> None:
    (tmp_path / "here.png").write_bytes(b"x")
    root = ImageRoot.of(str(tmp_path), "")
    check_present(root, ["here.png"])
    with pytest.raises(ImageMissing) as exc:
        check_present(root, ["here.png", "gone.png", "/abs/gone.png"])
    msg = str(exc.value)
    assert exc.value.stored == "gone.png" and "stored as 'gone.png'" in msg and "(2 of 3 images are missing)" in msg
    assert f"the recorded root {tmp_path}" in msg and ENV_IMAGE_ROOT in msg
    assert "absolute path" in root.missing_message("/abs/gone.png")


def test_files_in_the_project_folder_are_stored_relative_to_it(tmp_path: Path) -> None:
    photos, proj = tmp_path / "photos", tmp_path / "proj"
    root = ImageRoot.of(str(photos), "", project=proj)
    assert root.to_stored(photos / "a.png") == "a.png"  # under the image root: the root wins
    assert root.to_stored(proj / "uploads" / "z" / "b.png") == "@project/uploads/z/b.png"
    assert root.to_stored(Path("/elsewhere/c.png")) == "/elsewhere/c.png"
    odd = root.to_stored(photos / "@project" / "d.png")  # a folder of that name under the root is the root's
    assert odd == "./@project/d.png" and root.locate(odd) == photos / "@project" / "d.png"
    moved = ImageRoot.of(str(photos), "", project=tmp_path / "mounted" / "proj")  # the folder elsewhere
    assert moved.locate("@project/uploads/z/b.png") == tmp_path / "mounted" / "proj" / "uploads" / "z" / "b.png"
    assert "relative to the project folder" in moved.missing_message("@project/uploads/z/b.png")
    # without its project folder the path names no file here, and the message says why
    alone = ImageRoot.of(str(photos), "")
    assert alone.to_stored(proj / "uploads" / "b.png") == str(proj / "uploads" / "b.png")
    assert not alone.locate("@project/uploads/b.png").is_absolute()
    assert "opened without" in alone.missing_message("@project/uploads/b.png")
