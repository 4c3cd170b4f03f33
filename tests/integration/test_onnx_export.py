"""The exported ONNX model: written with a dynamic batch, checked against ONNX Runtime, and run by `alwb predict`
in a process where PyTorch cannot be imported."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import make_shapes

from alwb.io.export import Predictor, export_model
from alwb.io.onnxexport import OnnxParityError, compare
from alwb.io.onnxpredict import OnnxPredictor
from alwb.project import Project


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """A shapes project (20 px, grey: the small CNN), every image labeled, one round trained."""
    base = tmp_path_factory.mktemp("onnx")
    truth = make_shapes(base / "shapes", 12, layout="flat")
    with Project.create(base / "proj", classes=["circle", "square", "triangle"]) as p:
        p.set_config(val_size=6)
        p.add_images(base / "shapes")
        p.label([(int(r["id"]), truth[str(p.store.image_root().locate(r["path"]))]) for r in p.store.items()])
        p.train(epochs=6, device="cpu")
    return base / "proj", truth


def test_onnx_model_matches_pytorch_with_any_batch_size(trained, tmp_path: Path) -> None:
    proj_dir, truth = trained
    with Project.open(proj_dir) as p:
        mdir = export_model(p, tmp_path)
    pre = json.loads((mdir / "preprocess.json").read_text())
    onnx = pre["onnx"]
    assert (mdir / "model.onnx").is_file() and onnx["file"] == "model.onnx"
    assert onnx["input_shape"] == ["batch", 1, 20, 20] and onnx["parity"]["n_images"] == 36
    assert onnx["parity"]["max_abs_diff"] <= 1e-4 and onnx["parity"]["top1_mismatches"] == 0
    assert "`model.onnx`: the whole model" in (mdir / "MODEL_CARD.md").read_text()
    paths = sorted(truth)
    torch_preds = Predictor(mdir).predict_paths(paths)
    ort = OnnxPredictor(mdir)
    for batch in (1, 7, 32):  # the batch dimension is dynamic; 7 and 1 were never seen at export
        ort.batch_size = batch
        got = ort.predict_paths(paths)
        assert [g["predicted"] for g in got] == [t["predicted"] for t in torch_preds]
        a = np.array([[g["probabilities"][c] for c in ort.classes] for g in got])
        b = np.array([[t["probabilities"][c] for c in ort.classes] for t in torch_preds])
        np.testing.assert_allclose(a, b, atol=1e-4)
    # a broken image is reported for itself; the others are still classified
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png")
    out = ort.predict_paths([bad, paths[0]])
    assert "error" in out[0] and out[1]["predicted"] == torch_preds[0]["predicted"]


def test_parity_check_refuses_a_model_that_disagrees() -> None:
    ref = np.array([[0.7, 0.2, 0.1], [0.1, 0.45, 0.45001]])
    assert compare(ref, ref + 5e-5).max_abs_diff == pytest.approx(5e-5)
    with pytest.raises(OnnxParityError, match="largest probability difference 2.00e-04"):
        compare(ref, ref + np.array([[2e-4, -2e-4, 0], [0, 0, 0]]))
    swapped = ref.copy()
    swapped[1] = [0.1, 0.45001, 0.45]  # within 1e-4 everywhere, but the top-1 class changes
    with pytest.raises(OnnxParityError, match="1 different top-1"):
        compare(ref, swapped)
    with pytest.raises(OnnxParityError):
        compare(ref, np.full_like(ref, np.nan))


BLOCK_TORCH = (
    "import sys\n"
    "sys.modules['torch'] = None  # any 'import torch' now raises ImportError\n"
    "try:\n"
    "    import torch  # noqa\n"
    "    raise SystemExit('torch imported')\n"
    "except ImportError:\n"
    "    pass\n"
    "from alwb.cli import main\n"
    "code = main(sys.argv[1:])\n"
    "assert not [m for m, v in sys.modules.items() if v is not None and m.startswith(('torch', 'timm'))]\n"
    "sys.exit(code)\n"
)


def test_alwb_predict_runs_the_onnx_model_without_pytorch(trained, tmp_path: Path) -> None:
    proj_dir, truth = trained
    with Project.open(proj_dir) as p:
        mdir = export_model(p, tmp_path)
    paths = sorted(truth)[:9]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    run = subprocess.run(
        [sys.executable, "-c", BLOCK_TORCH, "predict", str(mdir), *paths, "--json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    got = json.loads(run.stdout)
    want = Predictor(mdir).predict_paths(paths)
    assert [g["predicted"] for g in got] == [w["predicted"] for w in want]
    for g, w in zip(got, want, strict=True):
        assert abs(g["probability"] - w["probability"]) <= 1e-4
    # the PyTorch runtime, asked for by name in that process, fails with a message instead of a traceback
    run = subprocess.run(
        [sys.executable, "-c", BLOCK_TORCH, "predict", str(mdir), paths[0], "--runtime", "torch"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert run.returncode != 0 and "torch" in run.stderr


def test_a_model_that_fails_the_check_leaves_no_file(tmp_path: Path) -> None:
    from alwb.io.onnxexport import export_onnx
    from alwb.learning.models import get_model

    model = get_model("cnn6", channels=1, num_classes=3, image_size=20, pretrained="none")
    pixels = np.random.default_rng(0).integers(0, 256, size=(4, 1, 20, 20), dtype=np.uint8)
    dest = tmp_path / "model.onnx"
    with pytest.raises(OnnxParityError, match="model.onnx not written"):  # no tolerance can be met
        export_onnx(model, pixels, dest, mean=[0.5], std=[0.25], tta_flip=False, atol=-1.0)
    assert list(tmp_path.iterdir()) == []
    info = export_onnx(model, pixels, dest, mean=[0.5], std=[0.25], tta_flip=False)
    assert dest.is_file() and info["parity"]["n_images"] == 4 and list(tmp_path.iterdir()) == [dest]


def test_backbone_preprocessing_runs_without_pytorch(tmp_path: Path) -> None:
    """A backbone model's images are resized and cropped by alwb.learning.backbones.Preprocess, also where torch is
    absent."""
    from PIL import Image

    Image.new("RGB", (300, 200), (10, 200, 30)).save(tmp_path / "photo.png")
    pre = {
        "backbone_preprocess": {
            "resize": 256,
            "crop": 224,
            "interpolation": "bilinear",
            "mean": [0.5] * 3,
            "std": [0.25] * 3,
        }
    }
    code = (
        "import sys, json\n"
        "sys.modules['torch'] = None\n"
        "from alwb.io.onnxpredict import pixels_for\n"
        "a = pixels_for(sys.argv[1], json.loads(sys.argv[2]))\n"
        "assert not [m for m, v in sys.modules.items() if v is not None and m.startswith(('torch', 'timm'))]\n"
        "print(a.shape, a.dtype, int(a[1].mean()))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    run = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "photo.png"), json.dumps(pre)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["(3,", "224,", "224)", "uint8", "200"]


def test_a_model_the_exporter_cannot_trace_fails_with_one_line(tmp_path: Path) -> None:
    import torch

    from alwb.errors import AlwbError
    from alwb.io.onnxexport import export_onnx

    class Branches(torch.nn.Module):  # a branch on the input's values: torch.export cannot trace it
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if x.sum() > 0:
                return x.mean(dim=(1, 2, 3)).unsqueeze(1).repeat(1, 3)
            return x.amax(dim=(1, 2, 3)).unsqueeze(1).repeat(1, 3)

    pixels = np.ones((2, 1, 8, 8), dtype=np.uint8)
    with pytest.raises(AlwbError, match="could not be exported to ONNX .TorchExportError.*--no-onnx") as err:
        export_onnx(Branches(), pixels, tmp_path / "model.onnx", mean=[0.5], std=[0.25], tta_flip=False)
    assert "\x1b" not in str(err.value) and "\n" not in str(err.value)
    assert list(tmp_path.iterdir()) == []
