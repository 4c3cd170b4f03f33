"""Model files: a malicious pickle is refused (and never runs), nothing in the code unpickles arbitrary objects, and an
exported model reloads in a fresh process with the same outputs.
"""

from __future__ import annotations

import json
import pickle
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_shapes
from reliability_figures import REPO, report_figures

from alwb.errors import UnsafeModelFileError
from alwb.io.export import Predictor, export_project, load_state_dict_file
from alwb.project import Project


class _CreatesAFile:
    """Unpickling this opens (creates) ``path``: proof that the loader ran pickled code."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):  # noqa: ANN204
        return (open, (self.path, "w"))


def _malicious_pt(path: Path, marker: Path, *, legacy: bool = False) -> Path:
    payload = {"backbone.0.0.weight": torch.zeros(1), "head.weight": _CreatesAFile(marker)}
    torch.save(payload, path, _use_new_zipfile_serialization=not legacy)
    return path


def test_the_payload_is_real(tmp_path: Path) -> None:
    """Plain unpickling of the same object does create the file (in a child process)."""
    marker = tmp_path / "proof.txt"
    data = pickle.dumps(_CreatesAFile(marker))
    code = "import pickle, sys; pickle.loads(sys.stdin.buffer.read())"
    subprocess.run([sys.executable, "-c", code], input=data, check=True, timeout=60)
    assert marker.exists()


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Project, Path]:
    base = tmp_path_factory.mktemp("model_files")
    truth = make_shapes(base / "img", 12, size=16, layout="flat", seed=5)
    p = Project.create(base / "proj", classes=["circle", "square", "triangle"])
    p.add_images(base / "img", progress=False, workers=1)
    ids = {r["path"]: r["id"] for r in p.store.items()}
    p.label([(ids[path], cls) for path, cls in truth.items()])
    # trained with flips: the project scores with flip test-time augmentation, and so must the exported model
    p.set_train_config(num_threads=2, augment="crop+flip")
    p.train(epochs=2, device="cpu")
    report = export_project(p, base / "export")
    assert report.model_dir is not None
    yield p, report.model_dir
    p.close()


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_malicious_pt_is_refused_by_the_loader(tmp_path: Path, legacy: bool) -> None:
    marker = tmp_path / "pwned.txt"
    bad = _malicious_pt(tmp_path / "bad.pt", marker, legacy=legacy)
    with pytest.raises(UnsafeModelFileError, match="refused to load bad.pt"):
        load_state_dict_file(bad)
    assert not marker.exists()


def test_malicious_weights_pt_is_refused_by_the_predictor(tmp_path: Path, exported: tuple[Project, Path]) -> None:
    _, model_dir = exported
    folder = tmp_path / "model"
    folder.mkdir()
    for name in ("labels.json", "preprocess.json"):
        (folder / name).write_bytes((model_dir / name).read_bytes())
    marker = tmp_path / "pwned.txt"
    _malicious_pt(folder / "weights.pt", marker)
    with pytest.raises(UnsafeModelFileError):
        Predictor(folder)
    assert not marker.exists()
    # a .pt holding something other than tensors is refused too
    torch.save({"head.weight": "not a tensor", "n": 3}, folder / "weights.pt")
    with pytest.raises(UnsafeModelFileError, match="not a state_dict of tensors"):
        Predictor(folder)
    # and a plain tensor state_dict is accepted
    from safetensors.torch import load_file

    torch.save(load_file(model_dir / "weights.safetensors"), folder / "weights.pt")
    assert Predictor(folder).classes == ["circle", "square", "triangle"]


def test_no_code_turns_off_weights_only() -> None:
    pattern = re.compile("weights_only" + r"\s*=\s*" + "False")
    scanned, offenders = 0, []
    for d in ("alwb", "ui", "bench"):
        for p in (REPO / d).rglob("*"):
            if p.is_file() and p.suffix in (".py", ".md", ".toml", ".txt", ".cfg", ".json", ".sh", ""):
                scanned += 1
                if pattern.search(p.read_text(errors="replace")):
                    offenders.append(str(p.relative_to(REPO)))
    assert scanned > 10 and offenders == []


CHILD = """
import json, sys
import numpy as np, torch
from safetensors.torch import load_file
from alwb.io.export import Predictor, build_classifier
mdir, x_path, out = sys.argv[1], sys.argv[2], sys.argv[3]
x = torch.from_numpy(np.load(x_path))
pre = json.load(open(mdir + "/preprocess.json"))
classes = json.load(open(mdir + "/labels.json"))
ts = torch.jit.load(mdir + "/model.torchscript.pt", map_location="cpu").eval()
model = build_classifier(pre, len(classes))
model.load_state_dict(load_file(mdir + "/weights.safetensors"))
model.eval()
with torch.no_grad():
    np.save(out + "/ts.npy", ts(x).numpy())
    np.save(out + "/st.npy", model(x).numpy())
paths = json.loads(sys.argv[4])
preds = Predictor(mdir).predict_paths(paths)
json.dump({"preds": preds}, open(out + "/preds.json", "w"))
"""


def test_exported_model_reloads_in_a_fresh_process(tmp_path: Path, exported: tuple[Project, Path]) -> None:
    from safetensors.torch import load_file

    from alwb.io.export import build_classifier

    p, model_dir = exported
    pre = json.loads((model_dir / "preprocess.json").read_text())
    assert pre["tta_flip"] is True and "mirror" in (model_dir / "MODEL_CARD.md").read_text()
    cur = p.current_model()
    original = build_classifier(pre, len(p.classes))
    original.load_state_dict(load_file(cur["path"]))  # the project's own model file
    original.eval()
    rng = np.random.default_rng(11)
    x = rng.normal(size=(6, pre["channels"], pre["image_size"], pre["image_size"])).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    with torch.no_grad():
        want = original(torch.from_numpy(x)).numpy()
    items = p.store.items()[:5]
    paths = [r["path"] for r in items]

    proc = subprocess.run(
        [sys.executable, "-c", CHILD, str(model_dir), str(tmp_path / "x.npy"), str(tmp_path), json.dumps(paths)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    ts, st = np.load(tmp_path / "ts.npy"), np.load(tmp_path / "st.npy")
    err_ts, err_st = float(np.abs(ts - want).max()), float(np.abs(st - want).max())
    assert err_ts <= 1e-5 and err_st <= 1e-5, (err_ts, err_st)

    # the fresh process's predictions match the project's own scores of those images
    preds = json.loads((tmp_path / "preds.json").read_text())["preds"]
    scores = p.scores()
    rows = scores.rows([r["id"] for r in items])
    err_p = 0.0
    for pred, row in zip(preds, rows, strict=True):
        assert "error" not in pred
        mine = np.asarray(scores.probs[row])
        theirs = np.asarray([pred["probabilities"][c] for c in scores.classes])
        err_p = max(err_p, float(np.abs(mine - theirs).max()))
        assert pred["predicted"] == scores.classes[int(mine.argmax())]
    assert err_p <= 1e-5, err_p
    report_figures(
        tmp_path,
        "model_files",
        {"max_abs_err_torchscript": err_ts, "max_abs_err_safetensors": err_st, "max_abs_err_probs": err_p},
    )
