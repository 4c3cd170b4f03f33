"""alwb.images.ImageRoot: stored paths relative to a project's image root, mapped per machine."""

from __future__ import annotations

from pathlib import Path

import pytest

from alwb.images import ENV_IMAGE_ROOT, ImageMissing, ImageRoot, check_present


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
