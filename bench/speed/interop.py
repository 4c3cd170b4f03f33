"""Interop figures (issue 40): the ONNX model against PyTorch, the PyTorch-free predict environment, and the import
of a large Label Studio export. Prints its figures; writes only under a temporary folder.

    .venv/bin/python bench/speed/interop.py onnx [--models cnn6,resnet18,dinov2_vits14] [--threads 2] [--seconds 6]
    .venv/bin/python bench/speed/interop.py predict-env        # a fresh venv: onnxruntime + Pillow + NumPy + alwb
    .venv/bin/python bench/speed/interop.py labelstudio --tasks 10000

``onnx`` builds each model with random weights (speed and size do not depend on their values), exports it the way
``alwb export`` does (parity with ONNX Runtime checked on 32 random images) and measures images/s of the whole
model, pixels to probabilities, at batch 32 in PyTorch (``torch.inference_mode``, ``torch.set_num_threads``) and in
ONNX Runtime (``intra_op_num_threads``), the two interleaved ``--repeats`` times (medians and the ratio printed).
``predict-env`` needs the package index (pip) and reports the size of the environment's site-packages, then runs
``alwb predict --runtime onnx`` in it on an exported cnn6 model.
``labelstudio`` draws N small PNGs, writes an export with 1-3 annotations a task (a tenth disagreeing) and times
``alwb add --labelstudio`` into a new project.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


def _model(name: str):  # noqa: ANN202 - (torch module, channels, size, mean, std, tta)
    import torch

    from alwb.learning import backbones
    from alwb.learning.models import get_model

    if name == "cnn6":
        m = get_model("cnn6", channels=1, num_classes=10, image_size=28, pretrained="none")
        return m.eval(), 1, 28, [0.286], [0.353], True
    spec = backbones.get_spec(name)
    pre = spec.preprocess()
    net = torch.nn.Sequential(backbones.build_extractor(spec), torch.nn.Linear(spec.embedding_dim, 10)).eval()
    return net, 3, pre.crop, list(pre.mean), list(pre.std), False


def _rate(fn, x: np.ndarray, seconds: float) -> float:  # noqa: ANN001
    fn(x)  # warm-up
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        fn(x)
        n += len(x)
    return n / (time.perf_counter() - t0)


def cmd_onnx(args: argparse.Namespace) -> None:
    import onnxruntime as ort
    import torch
    from safetensors.torch import save_file

    from alwb.io.onnxexport import export_onnx, probability_module

    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    load = os.getloadavg()[0]
    print(f"threads {args.threads}, batch {args.batch}, {args.seconds:.0f} s a measurement, load {load:.2f}")
    print("model | input | export s | model.onnx MB | weights MB | PyTorch img/s | ONNX Runtime img/s | ratio")
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            torch.manual_seed(0)
            model, c, s, mean, std, tta = _model(name)
            pixels = rng.integers(0, 256, size=(32, c, s, s), dtype=np.uint8)
            dest = Path(tmp) / f"{name}.onnx"
            t0 = time.perf_counter()
            info = export_onnx(model, pixels, dest, mean=mean, std=std, tta_flip=tta)
            export_s = time.perf_counter() - t0
            save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(Path(tmp) / f"{name}.st"))
            wrapped = probability_module(model, mean, std, tta_flip=tta)
            x = rng.integers(0, 256, size=(args.batch, c, s, s)).astype(np.float32)

            def run_torch(xb: np.ndarray, wrapped=wrapped) -> None:  # noqa: ANN001
                with torch.inference_mode():
                    wrapped(torch.from_numpy(xb))

            opts = ort.SessionOptions()
            opts.intra_op_num_threads = args.threads
            sess = ort.InferenceSession(str(dest), sess_options=opts, providers=["CPUExecutionProvider"])

            def run_ort(xb: np.ndarray, sess=sess) -> None:  # noqa: ANN001
                sess.run(None, {"pixels": xb})

            pts, oxs = [], []
            for _ in range(args.repeats):  # interleaved, so that a change of load hits both runtimes alike
                pts.append(_rate(run_torch, x, args.seconds))
                oxs.append(_rate(run_ort, x, args.seconds))
            pt, ox = float(np.median(pts)), float(np.median(oxs))
            print(
                f"{name} | {c}x{s}x{s}{' + mirror' if tta else ''} | {export_s:.1f} | "
                f"{dest.stat().st_size / 2**20:.2f} | {(Path(tmp) / f'{name}.st').stat().st_size / 2**20:.2f} | "
                f"{pt:,.1f} | {ox:,.1f} | x{ox / pt:.1f} (parity max diff {info['parity']['max_abs_diff']:.1e})"
            )


def _du(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink())


def cmd_predict_env(args: argparse.Namespace) -> None:
    """A virtual environment with what `alwb predict --runtime onnx` needs, and nothing else."""
    with tempfile.TemporaryDirectory() as tmp:
        env = Path(tmp) / "venv"
        subprocess.run([sys.executable, "-m", "venv", str(env)], check=True)
        pip = [str(env / "bin" / "python"), "-m", "pip", "install", "-q"]
        subprocess.run([*pip, "onnxruntime", "pillow", "numpy"], check=True)
        subprocess.run([*pip, "--no-deps", str(ROOT)], check=True)
        site = next((env / "lib").glob("python*/site-packages"))
        sizes = {}
        for d in sorted(site.iterdir()):
            if d.is_dir() and not d.name.endswith(".dist-info") and d.name not in ("pip", "__pycache__"):
                sizes[d.name] = _du(d)
        total = _du(site) - _du(site / "pip")
        print(f"predict-only site-packages (without pip): {total / 2**20:.0f} MB")
        for name, size in sorted(sizes.items(), key=lambda kv: -kv[1])[:6]:
            print(f"  {name}: {size / 2**20:.1f} MB")
        main_site = next((ROOT / ".venv" / "lib").glob("python*/site-packages"))
        print(f"for comparison, this project's full .venv site-packages: {_du(main_site) / 2**30:.2f} GB")
        # a model to run: cnn6 exported as alwb export does, then alwb predict in the new environment
        out = Path(tmp) / "model"
        out.mkdir()
        model, c, s, mean, std, tta = _model("cnn6")
        from PIL import Image

        from alwb.io.onnxexport import export_onnx

        rng = np.random.default_rng(0)
        pixels = rng.integers(0, 256, size=(8, c, s, s), dtype=np.uint8)
        info = export_onnx(model, pixels, out / "model.onnx", mean=mean, std=std, tta_flip=tta)
        (out / "labels.json").write_text(json.dumps([str(i) for i in range(10)]))
        pre = {"image_size": s, "channels": c, "mean": mean, "std": std, "tta_flip": tta, "onnx": info}
        (out / "preprocess.json").write_text(json.dumps(pre))
        img = Path(tmp) / "x.png"
        Image.fromarray(pixels[0, 0]).save(img)
        t0 = time.perf_counter()
        run = subprocess.run(
            [str(env / "bin" / "alwb"), "predict", str(out), str(img), "--runtime", "onnx", "--json"],
            capture_output=True,
            text=True,
        )
        print(f"alwb predict in that environment: exit {run.returncode} in {time.perf_counter() - t0:.2f} s")
        print(run.stdout[:300] or run.stderr[-2000:])
        has_torch = subprocess.run([str(env / "bin" / "python"), "-c", "import torch"], capture_output=True)
        print(f"'import torch' there: exit {has_torch.returncode} (non-zero: PyTorch absent)")


def cmd_labelstudio(args: argparse.Namespace) -> None:
    from PIL import Image

    from alwb.cli import main

    rng = random.Random(0)
    with tempfile.TemporaryDirectory() as tmp:
        images = Path(tmp) / "images"
        images.mkdir()
        t0 = time.perf_counter()
        pix = np.random.default_rng(0)
        tasks = []
        classes = ["cat", "dog", "bird", "fish"]
        people = [f"annotator{i}@example.org" for i in range(8)]
        for i in range(args.tasks):
            name = f"img_{i:06d}.png"
            Image.fromarray(pix.integers(0, 256, size=(32, 32, 3), dtype=np.uint8)).save(images / name)
            truth = rng.choice(classes)
            anns = []
            for k, who in enumerate(rng.sample(range(len(people)), rng.choice([1, 1, 2, 3]))):
                label = truth if rng.random() > 0.1 else rng.choice(classes)
                result = {"from_name": "choice", "to_name": "image", "type": "choices", "value": {"choices": [label]}}
                anns.append(
                    {
                        "id": i * 10 + k,
                        "completed_by": {"id": who, "email": people[who]},
                        "result": [result],
                        "was_cancelled": False,
                        "created_at": f"2024-05-{1 + k:02d}T10:{i % 60:02d}:00.000000Z",
                    }
                )
            tasks.append({"id": i + 1, "data": {"image": f"/data/upload/7/{i:08x}-{name}"}, "annotations": anns})
        export = Path(tmp) / "export.json"
        export.write_text(json.dumps(tasks))
        n_ann = sum(len(t["annotations"]) for t in tasks)
        print(f"made {args.tasks} images and an export of {n_ann} annotations in {time.perf_counter() - t0:.1f} s")
        from alwb.project import Project

        with Project.create(Path(tmp) / "proj", classes=classes):
            pass
        t0 = time.perf_counter()
        code = main(["-q", "add", str(Path(tmp) / "proj"), "--labelstudio", str(export), "--images", str(images)])
        took = time.perf_counter() - t0
        print(f"alwb add --labelstudio: exit {code}, {took:.1f} s for {args.tasks} tasks ({args.tasks / took:,.0f}/s)")
        t0 = time.perf_counter()
        main(["-q", "add", str(Path(tmp) / "proj"), "--labelstudio", str(export), "--images", str(images)])
        print(f"the same file again (records nothing): {time.perf_counter() - t0:.1f} s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("onnx")
    p.add_argument("--models", default="cnn6,resnet18,dinov2_vits14")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--seconds", type=float, default=6.0)
    p.add_argument("--repeats", type=int, default=3, help="measurements of each runtime (medians printed)")
    p.set_defaults(func=cmd_onnx)
    p = sub.add_parser("predict-env")
    p.set_defaults(func=cmd_predict_env)
    p = sub.add_parser("labelstudio")
    p.add_argument("--tasks", type=int, default=10000)
    p.set_defaults(func=cmd_labelstudio)
    args = ap.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()
