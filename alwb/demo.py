"""The built-in demo: scikit-learn's 1,797 handwritten digits (8×8, bundled, no network) as a project."""

from __future__ import annotations

import csv
import time
from pathlib import Path

import numpy as np

from .config import ProjectConfig
from .io.report import format_round
from .project import Project


def write_digits(folder: str | Path) -> tuple[Path, Path]:
    """Write the digits as PNG files under ``folder/images`` and their labels to ``folder/oracle.csv``.

    Returns ``(images_dir, oracle_csv)``; existing files are kept.
    """
    from PIL import Image
    from sklearn.datasets import load_digits

    folder = Path(folder)
    images = folder / "images"
    oracle = folder / "oracle.csv"
    digits = load_digits()
    images.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, (img, target) in enumerate(zip(digits.images, digits.target, strict=True)):
        path = images / f"digit_{i:04d}.png"
        if not path.exists():
            arr = np.clip(np.round(img * (255.0 / 16.0)), 0, 255).astype(np.uint8)
            Image.fromarray(arr, mode="L").save(path)
        rows.append((path.name, str(int(target))))
    with open(oracle, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "label"])
        w.writerows((f"images/{name}", label) for name, label in rows)
    return images, oracle


def read_oracle(oracle_csv: str | Path) -> dict[str, str]:
    """Map absolute resolved image path -> label from an oracle CSV (paths relative to it)."""
    oracle_csv = Path(oracle_csv)
    with open(oracle_csv, newline="") as fh:
        return {str((oracle_csv.parent / r["path"]).resolve()): r["label"] for r in csv.DictReader(fh)}


def build_demo(folder: str | Path, *, device: str = "auto", progress: bool = False) -> Path:
    """Write the digits and create (or keep) the demo project; returns the project folder."""
    folder = Path(folder)
    images, _ = write_digits(folder)
    project_dir = folder / "project"
    if not (project_dir / "alwb.sqlite").exists():
        with Project.create(project_dir, classes=[str(d) for d in range(10)]) as proj:
            # strategy and retrain_every: the project defaults (auto is margin sampling on these small grey digits)
            proj.set_config(val_size=150, batch_size=16)
            proj.set_train_config(augment="crop", device=device)
            print(proj.add_images(images, progress=progress).summary())
    return project_dir


def run_demo(
    folder: str | Path,
    *,
    rounds: int = 5,
    batch: int = 60,
    strategy: str = ProjectConfig.strategy,
    device: str = "auto",
    progress: bool = False,
) -> int:
    """Build (or reopen) the demo project and run ``rounds`` labeling rounds with the oracle answering."""
    folder = Path(folder)
    project_dir = build_demo(folder, device=device, progress=progress)
    oracle = read_oracle(folder / "oracle.csv")
    proj = Project.open(project_dir)
    print(
        f"demo: {proj.store.item_count()} digits, validation set of {len(proj.store.val_item_ids())} "
        f"(random, never trained on); {rounds} rounds of {batch} labels by {strategy} sampling, "
        "the digits' true labels answering"
    )
    with proj:
        for _ in range(rounds):
            t0 = time.perf_counter()
            res = proj.query(batch, strategy)
            answers = [(it.id, oracle[it.path]) for it in res.items]
            proj.label(answers, annotator="oracle")
            summary = proj.train(device=device)
            print(
                format_round(
                    summary.round,
                    summary.n_labeled,
                    summary.metrics,
                    summary.timings,
                    extra=f"{len(res.items)} queried ({res.note or strategy}), {time.perf_counter() - t0:.1f} s",
                )
            )
    print(f"project kept at {project_dir}; try: alwb status {project_dir}")
    return 0
