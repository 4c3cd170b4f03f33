"""What the bench scripts that probe one simulator run share: its human labels and pixels, its scored unlabeled
items, its saved models, and training a model on them to test it (flip test-time augmentation)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from safetensors.torch import load_file

from alwb.config import TrainConfig
from alwb.learning.data import PixelCache
from alwb.learning.models import Classifier
from alwb.learning.plan import Geometry
from alwb.learning.train import TrainResult, build_model, predict_batches, train_model
from alwb.project import Project, Scores


@dataclass
class RunLabels:
    """A run's human labels: the model geometry, the pixel cache, item ids, classes and pixels."""

    geo: Geometry
    cache: PixelCache
    ids: npt.NDArray[np.int64]
    y: npt.NDArray[np.int64]
    x: np.ndarray
    num_classes: int


def human_labels(proj: Project) -> RunLabels:
    """The run's current human labels of pool items, with the geometry of its last model."""
    model = proj.current_model()
    if model is None:
        raise SystemExit(f"{proj.root} has no finished round")
    geo = Geometry.from_dict(model["config"]["geometry"])
    labels = proj.store.current_labels(split="pool")
    cache = proj.pixel_cache(geo)
    ids = np.asarray([r["item_id"] for r in labels], dtype=np.int64)
    y = np.asarray([r["position"] for r in labels], dtype=np.int64)
    return RunLabels(geo, cache, ids, y, cache.rows(ids), len(proj.classes))


def scored_unlabeled(proj: Project, scores: Scores) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Ids of the unlabeled pool items the round of ``scores`` scored, and their rows in it."""
    pool = np.asarray(proj.store.unlabeled_item_ids(split="pool"), np.int64)
    rows = scores.rows(pool)
    return pool[rows >= 0], rows[rows >= 0]


def load_model(path: str | Path, geo: Geometry, num_classes: int) -> Classifier:
    """A saved round's model, in eval mode."""
    model = build_model(geo.arch, channels=geo.channels, num_classes=num_classes, image_size=geo.image_size)
    model.load_state_dict(load_file(str(path)))
    return model.eval()


def test_accuracy(model: Classifier, test: Any, geo: Geometry, *, tta: bool = True) -> float:
    """Accuracy on the simulator's test split (``test_*.npz``: ``x``, ``y``)."""
    p, _ = predict_batches(model, test["x"], mean=geo.mean, std=geo.std, tta_flip=tta)
    return float((p.argmax(1) == test["y"]).mean())


def train_and_test(
    x: np.ndarray, y: npt.NDArray[np.int64], run: RunLabels, cfg: TrainConfig, test: Any, **kwargs: Any
) -> tuple[TrainResult, float, float]:
    """Train on ``x``, ``y`` with the run's geometry (``kwargs`` go to :func:`alwb.learning.train.train_model`);
    returns the
    result, its test accuracy with flip test-time augmentation and the seconds both took."""
    t0 = time.perf_counter()
    geo = run.geo
    res = train_model(x, y, arch=geo.arch, num_classes=run.num_classes, mean=geo.mean, std=geo.std, cfg=cfg, **kwargs)
    return res, test_accuracy(res.model, test, geo), time.perf_counter() - t0
