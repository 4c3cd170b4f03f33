"""``alwb weights list|fetch|add|remove``, ``--mode``/``--backbone`` on init/train/simulate, and the training line of
``alwb status``.

Every test points torch hub at its own temporary folder (``tests/weights_helpers.py``); the weights are random
ResNet-18 state_dicts made here from torchvision's architecture, and downloads come from a server on 127.0.0.1.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image
from weights_helpers import isolate_hub, register_test_spec, save_state_dict, serve

from alwb.cli import build_parser, main, sim_train_config
from alwb.config import TrainConfig
from alwb.learning import backbones
from alwb.project import Project


def run_cli(capsys: pytest.CaptureFixture[str], *args: object) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def one_error_line(code: int, err: str) -> str:
    assert code != 0 and "Traceback" not in err
    lines = [ln for ln in err.strip().splitlines() if ln.startswith("alwb: ")]
    assert len(lines) == 1 and lines[0].startswith("alwb: error:"), err
    return lines[0]


@pytest.fixture(scope="module")
def r18(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A random-init ResNet-18 state_dict file (the real architecture) and its SHA-256."""
    path = save_state_dict(tmp_path_factory.mktemp("weights") / "r18.pth", "resnet18", seed=1)
    return path, backbones.sha256_file(path)


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    return isolate_hub(monkeypatch, tmp_path)


@pytest.fixture
def spec(r18: tuple[Path, str]):  # noqa: ANN201
    """A registry entry whose published file is the test's own ResNet-18 file."""
    s = register_test_spec("t_cli_resnet18", r18[1])
    yield s
    backbones.unregister(s.name)


# ------------------------------------------------------------------------------------------------ weights


def test_list_names_every_backbone_and_its_state(hub: Path, capsys) -> None:
    code, out, _ = run_cli(capsys, "weights", "list")
    assert code == 0
    for name in backbones.backbone_names():
        row = next(ln for ln in out.splitlines() if ln.startswith(name + " "))
        spec = backbones.get_spec(name)
        if spec.packaged:  # where the weights come from and the one command that gets them
            assert ("installed (package)" if backbones.weights_available(name) else "not installed") in row
            assert f"`{spec.install_command()}`" in row
        else:
            assert "not cached" in row and f"`alwb weights fetch {name}`" in row
    assert "BSD-3-Clause" in out and "Apache-2.0" in out and str(hub) in out
    code, out, _ = run_cli(capsys, "weights", "list", "--json")
    rows = {r["name"]: r for r in json.loads(out)}
    assert set(rows) == set(backbones.backbone_names())
    assert rows["resnet18"]["cached"] is False and rows["resnet18"]["size_mb"] > 40 and rows["resnet18"]["licence"]


def test_add_custom_then_published_then_remove(hub: Path, spec, r18: tuple[Path, str], capsys) -> None:
    # resnet18's published hash is torchvision's: a file made here is a custom one
    code, out, _ = run_cli(capsys, "weights", "add", "resnet18", r18[0])
    assert code == 0 and "accepted as a custom file" in out and r18[1] in out
    code, out, _ = run_cli(capsys, "weights", "list")
    row = next(ln for ln in out.splitlines() if ln.startswith("resnet18 "))
    assert "cached (custom)" in row and f"SHA-256 {r18[1]}" in out
    assert backbones.resolve_weights("resnet18", download=False).kind == "custom"

    # the test entry's published hash is this file's: accepted as the published file
    code, out, _ = run_cli(capsys, "weights", "add", spec.name, r18[0])
    assert code == 0 and "accepted as the published file" in out and r18[1] in out
    assert (hub / spec.file_name).is_file()

    code, out, _ = run_cli(capsys, "weights", "remove", "resnet18")
    assert code == 0 and "custom file forgotten" in out and "weights fetch resnet18" in out
    assert not backbones.weights_available("resnet18")
    line = one_error_line(*run_cli(capsys, "weights", "remove", "resnet18")[::2])
    assert "no custom file" in line


def test_add_refuses_a_file_that_does_not_fit(hub: Path, tmp_path: Path, capsys) -> None:
    bad = tmp_path / "bad.pth"
    torch.save({"conv1.weight": torch.zeros(3, 3)}, bad)
    line = one_error_line(*run_cli(capsys, "weights", "add", "resnet18", bad)[::2])
    assert "does not fit backbone resnet18" in line
    line = one_error_line(*run_cli(capsys, "weights", "add", "resnet18", tmp_path / "nowhere.pth")[::2])
    assert "not found" in line
    assert not backbones.weights_available("resnet18")


def test_fetch_from_a_mirror_verifies_and_refuses(
    hub: Path, spec, r18: tuple[Path, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    folder = tmp_path / "server"
    folder.mkdir()
    with serve(folder) as (base, requested):
        monkeypatch.setenv(backbones.MIRROR_ENV, base)
        # missing on the server: the clear message, nothing cached
        line = one_error_line(*run_cli(capsys, "weights", "fetch", spec.name)[::2])
        assert f"backbone {spec.name}" in line and "HTTP 404" in line and "alwb weights add" in line
        # tampered: refused and deleted
        data = bytearray(r18[0].read_bytes())
        data[-10] ^= 0xFF
        (folder / spec.file_name).write_bytes(bytes(data))
        line = one_error_line(*run_cli(capsys, "weights", "fetch", spec.name)[::2])
        assert "not the published" in line and "deleted" in line
        assert not (hub / spec.file_name).exists() and not list(hub.glob("*.part"))
        # the right file: downloaded, verified, cached and used without a second request
        shutil.copyfile(r18[0], folder / spec.file_name)
        code, out, err = run_cli(capsys, "weights", "fetch", spec.name)
        assert code == 0 and "downloaded, verified" in out and r18[1] in out
        assert (hub / spec.file_name).is_file() and backbones.weights_available(spec.name)
        assert f"{spec.name} weights" in err  # the progress bar
        n = len(requested)
        code, out, _ = run_cli(capsys, "-q", "weights", "fetch", spec.name)
        assert code == 0 and "already on this machine" in out and len(requested) == n
    code, out, _ = run_cli(capsys, "weights", "list")
    assert "cached (mirror)" in next(ln for ln in out.splitlines() if ln.startswith(spec.name + " "))


def test_offline_fetch_is_one_line(hub: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.setenv(backbones.OFFLINE_ENV, "1")
    line = one_error_line(*run_cli(capsys, "weights", "fetch", "dinov2_vits14")[::2])
    assert "backbone dinov2_vits14" in line and str(hub) in line and "alwb weights add dinov2_vits14" in line


# ------------------------------------------------------------------------------------------------ --mode / --backbone


def test_mode_and_backbone_reach_the_stored_train_config(tmp_path: Path, shapes_flat, capsys) -> None:
    folder, _ = shapes_flat
    proj = tmp_path / "proj"
    code, _, err = run_cli(capsys, "init", proj, "--images", folder, "--mode", "head", "--backbone", "resnet18")
    assert code == 0, err
    with Project.open(proj) as p:
        assert (p.train_config.mode, p.train_config.backbone) == ("head", "resnet18")
    code, _, err = run_cli(capsys, "train", proj, "--mode", "finetune", "--backbone", "resnet50", "--queue")
    assert code == 0, err
    with Project.open(proj) as p:
        assert (p.train_config.mode, p.train_config.backbone) == ("finetune", "resnet50")
    code, _, err = run_cli(capsys, "train", proj, "--mode", "scratch", "--queue")  # --backbone left as it was
    with Project.open(proj) as p:
        assert (p.train_config.mode, p.train_config.backbone) == ("scratch", "resnet50")
    # a new project without the options keeps TrainConfig's defaults
    run_cli(capsys, "init", tmp_path / "plain", "--images", folder)
    with Project.open(tmp_path / "plain") as p:
        assert (p.train_config.mode, p.train_config.backbone) == (TrainConfig.mode, TrainConfig.backbone)


def test_simulate_takes_mode_and_backbone() -> None:
    def cfg(*opts: str) -> TrainConfig:
        return sim_train_config(build_parser().parse_args(["simulate", "data", *opts]))

    assert cfg() == TrainConfig()
    assert cfg("--mode", "head", "--backbone", "efficientnet_b0") == TrainConfig(
        mode="head", backbone="efficientnet_b0"
    )


def test_unknown_mode_or_backbone_is_refused_with_the_choices(capsys) -> None:
    for opts in (["--mode", "fast"], ["--backbone", "vgg99"]):
        with pytest.raises(SystemExit) as exc:
            build_parser().parse_args(["train", "p", *opts])
        assert exc.value.code == 2
        err = capsys.readouterr().err
        assert "invalid choice" in err and ("dinov2_vits14" in err or "finetune" in err)


# ------------------------------------------------------------------------------------------------ status


def _photos(folder: Path, n: int = 6, size: int = 96) -> Path:
    folder.mkdir(parents=True)
    for i in range(n):
        Image.new("RGB", (size + i, size), (40 * i % 256, 90, 160)).save(folder / f"p{i}.png")
    return folder


def test_status_shows_the_mode_auto_would_choose_and_the_recorded_one(
    hub: Path, r18: tuple[Path, str], tmp_path: Path, shapes_flat, capsys
) -> None:
    # small images: scratch, before any round
    folder, _ = shapes_flat
    run_cli(capsys, "init", tmp_path / "small", "--images", folder)
    code, out, _ = run_cli(capsys, "status", tmp_path / "small")
    assert code == 0
    line = next(ln for ln in out.splitlines() if ln.startswith("training:"))
    assert line.startswith("training: next round: scratch (small greyscale images (20 px)")
    st = json.loads(run_cli(capsys, "status", tmp_path / "small", "--json")[1])
    assert st["training"]["mode"] == "scratch" and st["training"]["backbone"] is None
    assert "small greyscale images" in st["training"]["mode_reason"] and st["training"]["decided"] is False

    # photos without weights, then with them: scratch for want of weights, then head on a CPU
    photos = tmp_path / "p"
    run_cli(capsys, "init", photos, "--images", _photos(tmp_path / "photos"), "--backbone", "resnet18")
    with Project.open(photos) as p:
        p.set_train_config(device="cpu")
    st = json.loads(run_cli(capsys, "status", photos, "--json")[1])["training"]
    assert st["mode"] == "scratch" and "weights of backbone resnet18 are not on this machine" in st["mode_reason"]
    assert "`alwb weights fetch resnet18`" in st["mode_reason"]
    assert run_cli(capsys, "weights", "add", "resnet18", r18[0])[0] == 0
    out = run_cli(capsys, "status", photos)[1]
    line = next(ln for ln in out.splitlines() if ln.startswith("training:"))
    assert line.startswith(
        "training: next round: head on resnet18 at 224 px (photos (96 px) with pretrained weights on"
    )
    st = json.loads(run_cli(capsys, "status", photos, "--json")[1])["training"]
    assert {k: st[k] for k in ("mode", "backbone", "requested", "decided")} == {
        "mode": "head",
        "backbone": "resnet18",
        "requested": "auto",
        "decided": False,
    }

    # after a round: what the round recorded in the geometry meta
    with Project.open(photos) as p:
        p.store.set_meta(
            "geometry",
            {
                "image_size": 224,
                "channels": 3,
                "arch": "head:resnet18",
                "mode": "head",
                "backbone": "resnet18",
                "mode_reason": "the round's own words",
            },
        )
    out = run_cli(capsys, "status", photos)[1]
    assert "training: head on resnet18 at 224 px (the round's own words)" in out
    st = json.loads(run_cli(capsys, "status", photos, "--json")[1])["training"]
    assert (st["mode"], st["mode_reason"], st["backbone"], st["decided"]) == (
        "head",
        "the round's own words",
        "resnet18",
        True,
    )
    # a setting changed since: the next round's choice
    run_cli(capsys, "train", photos, "--mode", "scratch", "--queue")
    out = run_cli(capsys, "status", photos)[1]
    assert "training: next round: scratch (from-scratch model, as asked" in out

    # an older project's geometry has no mode: scratch
    with Project.open(tmp_path / "small") as p:
        p.store.set_meta("geometry", {"image_size": 20, "channels": 1, "arch": "cnn6", "mean": None, "std": None})
    st = json.loads(run_cli(capsys, "status", tmp_path / "small", "--json")[1])["training"]
    assert st["mode"] == "scratch" and st["decided"] is True and "before pretrained backbones" in st["mode_reason"]
    assert "training: scratch (" in run_cli(capsys, "status", tmp_path / "small")[1]


def test_the_parser_reads_the_backbone_names_only_when_it_needs_them() -> None:
    import subprocess
    import sys

    code = (
        "import sys, alwb.cli; alwb.cli.build_parser(); assert 'numpy' not in sys.modules, 'numpy'; "
        "import importlib; names = importlib.import_module('alwb.learning.backbones').backbone_names(); "
        "print(sorted(alwb.cli.BACKBONES) == sorted(names))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "True", proc.stderr
