"""A small real project for the insight tests: shape photos with near-copies, flipped labels and an odd one out,
embedded with EfficientNet-Lite0 (the backbone that comes with alwb) by a real head round."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
from conftest import make_shapes
from PIL import Image

from alwb.project import Project

#: items whose labels the fixture flips (by file name) and the pairs of near-copies (original, copy)
FLIPS = {"circle_001.png": "square", "square_002.png": "triangle", "triangle_003.png": "circle"}
COPIES = ("circle_004.png", "square_005.png", "triangle_006.png")


def _near_copy(src: Path, dst: Path) -> None:
    """The same pixels saved again with a text chunk: another file (another SHA-256), the same picture, as a
    re-export by another tool makes (the distance is 0 whatever the threshold)."""
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text("Software", "another tool")
    Image.open(src).save(dst, pnginfo=info)


def build(folder: Path) -> Path:
    """The project under ``folder/proj`` (images under ``folder/tree``), with one finished head round and the
    findings and map computed; returns the project root."""
    from alwb import insight

    tree = folder / "tree"
    make_shapes(tree, 20, size=48, layout="imagefolder")
    for name in COPIES:
        kind = name.split("_")[0]
        _near_copy(tree / kind / name, tree / kind / f"copy_{name}")
    rng = np.random.default_rng(1)
    odd = rng.integers(0, 256, size=(48, 48, 3), dtype=np.uint8)
    odd[:, :, 1] = 255  # a green noise square: nothing like the shapes
    Image.fromarray(odd).save(tree / "circle" / "odd.png")
    root = folder / "proj"
    with Project.create(root) as proj:
        proj.set_train_config(mode="head", backbone="efficientnet_lite0")
        proj.set_config(val_size=10)
        proj.add_images(tree)
        by_name = {Path(r["path"]).name: int(r["id"]) for r in proj.store.items()}
        # the copies go to the validation sample, so that the validation sample leaks
        proj.store.reset_validation()
        others = [i for n, i in sorted(by_name.items()) if not n.startswith("copy_") and n not in COPIES]
        proj.store.mark_validation([by_name[f"copy_{n}"] for n in COPIES] + others[:7])
        proj.label([(by_name[n], c) for n, c in FLIPS.items()], annotator="fixture")
        proj.train(device="cpu")
        insight.analyse(proj)
        insight.compute_map(proj, method="pca")
    return root


def copy_project(template: Path, dest: Path) -> Path:
    """A copy of the template project (the images are shared, read-only)."""
    shutil.copytree(template, dest)
    return dest
