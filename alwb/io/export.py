"""Export the labelled dataset and the trained model; load an exported model for prediction.

The model folder is self-contained: ``weights.safetensors`` (no pickle), ``model.torchscript.pt``, ``labels.json``
(class order), ``preprocess.json`` (geometry and normalisation) and ``MODEL_CARD.md``. Loading never unpickles
arbitrary objects: weights come from safetensors, and ``.pt`` state_dicts only through ``weights_only=True``.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import shutil
import warnings
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from ..config import TrainConfig
from ..errors import AlwbError, ImageRejected, UnsafeModelFileError
from ..intake.images import check_present, read_verified
from ..learning.models import Classifier
from ..learning.plan import Geometry
from ..project import Project

FORMAT_VERSION = 1
log = logging.getLogger(__name__)

#: What one exported row holds, in order: the columns of ``manifest.csv`` / ``.parquet`` and the fields of each
#: ``metadata.jsonl`` line (``path`` there is ``file_name``, relative to the metadata file). ``path`` is relative
#: to the export folder.
MANIFEST_COLUMNS = [
    "path",
    "sha256",
    "label",
    "source",
    "round",
    "annotator",
    "time",
    "split",
    "confidence",
    "original_path",
    "item_id",
    "accepted_guess",
]
#: The dataset folder's split subfolders (the names ``datasets`` recognises): the pool trains, the validation
#: sample validates.
DATASET_SPLITS = {"pool": "train", "val": "validation"}


@dataclass
class ExportReport:
    """What :func:`export_project` wrote."""

    dataset_dir: Path
    model_dir: Path | None
    n_images: int
    n_pseudo: int
    counts: dict[str, int]
    #: Files left out because their content changed since import: (path on this machine, reason).
    changed: list[tuple[str, str]] = field(default_factory=list)
    #: ``OUT/labelstudio.json``: the project as Label Studio tasks (:mod:`alwb.io.labelstudio`).
    labelstudio: Path | None = None


def _safe_name(name: str) -> str:
    out = "".join(ch if ch.isalnum() or ch in "-_. " else "_" for ch in name).strip(" .")
    return out or "_"


class ExportedDataset(NamedTuple):
    """What :func:`export_dataset` wrote: the folder, the images copied (of them pseudo-labeled), and the files left
    out because their content is no longer the one imported (path on this machine, reason)."""

    dataset_dir: Path
    n_images: int
    n_pseudo: int
    changed: list[tuple[str, str]]


def export_dataset(project: Project, out: str | Path, *, include_pseudo: bool = False) -> ExportedDataset:
    """Write ``OUT/dataset/<split>/<class>/<file>`` (copies; ``train`` for the pool, ``validation`` for the
    validation sample), ``metadata.jsonl`` files (:func:`write_metadata`) and ``OUT/manifest.csv`` / ``.parquet``.

    Pseudo-labels appear only with ``include_pseudo`` and have source ``pseudo``. A file whose SHA-256 is no longer
    the stored one is left out, with its path and the reason in :attr:`ExportedDataset.changed` (and the log).
    """
    import pandas as pd

    out = Path(out)
    ds = out / "dataset"
    if ds.exists():
        shutil.rmtree(ds)
    ds.mkdir(parents=True)
    rows: list[dict[str, Any]] = []
    for r in project.store.current_labels():
        rows.append(
            {
                "item_id": r["item_id"],
                "src": r["path"],
                "sha256": r["sha256"],
                "label": r["class"],
                "source": r["source"],
                "round": r["round"],
                "annotator": r["annotator"],
                # always with microseconds: a split whose times all fell on whole seconds would otherwise be read as
                # timestamps by datasets (pyarrow) and the others as text, and the folder would not load
                "time": dt.datetime.fromtimestamp(r["created_at"], dt.timezone.utc).isoformat(timespec="microseconds"),
                "split": r["split"],
                "confidence": None,
                # True: the model's preselected guess submitted untouched; False: chosen by a person (or imported)
                "accepted_guess": bool(r["accepted_guess"]),
            }
        )
    n_pseudo = 0
    if include_pseudo:
        for r in project.store.pseudo_labels():
            rows.append(
                {
                    "item_id": r["item_id"],
                    "src": r["path"],
                    "sha256": r["sha256"],
                    "label": r["class"],
                    "source": "pseudo",
                    "round": r["round"],
                    "annotator": None,
                    "time": None,
                    "split": "pool",
                    "confidence": r["confidence"],
                    "accepted_guess": False,
                }
            )
            n_pseudo += 1
    class_dirs = {c: _safe_name(c) for c in project.classes}
    images = project.store.image_root()
    check_present(images, [row["src"] for row in rows])  # before anything is copied: a clear message, not a traceback
    kept: list[dict[str, Any]] = []
    changed: list[tuple[str, str]] = []
    for row in rows:
        src = images.locate(row["src"])
        try:  # the bytes copied are the bytes checked: a file replaced since import is never exported under its label
            data = read_verified(src, row["sha256"])
        except ImageRejected as exc:
            changed.append((str(src), exc.reason))
            continue
        name = f"{row['sha256'][:12]}_{_safe_name(src.name)}"
        dest = ds / DATASET_SPLITS.get(row["split"], "train") / class_dirs[row["label"]] / name
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(data)
        kept.append(row)
        row["path"] = dest.relative_to(out).as_posix()
        row.pop("src")
        row["original_path"] = str(src)  # the file on this machine (the store may hold it relative to the root)
    for path, reason in changed:
        log.warning("not exported: %s: %s", path, reason)
    rows = kept
    n_pseudo = sum(1 for r in rows if r["source"] == "pseudo")
    df = pd.DataFrame(rows, columns=MANIFEST_COLUMNS)
    df.to_csv(out / "manifest.csv", index=False)
    df.to_parquet(out / "manifest.parquet", index=False)
    write_metadata(ds, rows, out)
    return ExportedDataset(ds, len(rows), n_pseudo, changed)


def _metadata_row(row: dict[str, Any], file_name: str) -> dict[str, Any]:
    """A manifest row as a ``metadata.jsonl`` line: ``path`` becomes ``file_name``; a missing text is "" and a
    missing number NaN (a column that is null in every row of one split makes ``datasets`` refuse the folder)."""
    out: dict[str, Any] = {"file_name": file_name}
    for col in MANIFEST_COLUMNS:
        if col == "path":
            continue
        value = row.get(col)
        if value is None:
            value = float("nan") if col == "confidence" else ""
        out[col] = value
    return out


def write_metadata(ds: Path, rows: Sequence[dict[str, Any]], out: Path) -> None:
    """``ds/<split>/metadata.jsonl`` (what ``datasets.load_dataset("imagefolder", data_dir=ds)`` reads for each
    split) and ``ds/metadata.jsonl`` (every row, ``file_name`` relative to ``ds``: for ``data_files=`` and scripts).
    ``rows`` are manifest rows (:data:`MANIFEST_COLUMNS`) whose ``path`` is relative to ``out``."""
    per_split: dict[str, list[str]] = {}
    every: list[str] = []
    for row in rows:
        rel = (out / row["path"]).relative_to(ds)
        every.append(json.dumps(_metadata_row(row, rel.as_posix()), ensure_ascii=False))
        per_split.setdefault(rel.parts[0], []).append(
            json.dumps(_metadata_row(row, Path(*rel.parts[1:]).as_posix()), ensure_ascii=False)
        )
    for split, lines in per_split.items():
        (ds / split / "metadata.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (ds / "metadata.jsonl").write_text("".join(line + "\n" for line in every), encoding="utf-8")


def export_model(project: Project, out: str | Path, *, onnx: bool = True) -> Path:
    """Write ``OUT/model/`` from the project's current model; with ``onnx`` also ``model.onnx`` (checked against ONNX
    Runtime on the project's images, see :mod:`alwb.io.onnxexport`; the folder is not written when it fails)."""
    import torch
    from safetensors.torch import load_file, save_file

    from ..learning.train import uses_tta

    cur = project.current_model()
    if cur is None:
        raise AlwbError("no trained model yet: run 'alwb train' first")
    geo = Geometry.from_dict(cur["config"]["geometry"])
    classes = project.classes
    mode = geo.mode
    backbone_card: dict[str, Any] | None = None
    if mode == "head":  # the backbone's verified weights and the round's head, as one module
        from ..learning import backbones
        from ..learning.head import LinearHead, compose

        bb = backbones.load(str(geo.backbone), download=False, quiet=True, framing=geo.framing)
        model = compose(bb.model, LinearHead.load(cur["path"]))
        state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
        backbone_card = bb.card()
        emb_dim = bb.embedding_dim
    else:
        model = build_classifier(geo, len(classes))
        state = load_file(cur["path"])
        model.load_state_dict(state)
        emb_dim = model.emb_dim
        if mode == "finetune":
            from ..learning import backbones

            origin = backbones.resolve_weights(str(geo.backbone), download=False, quiet=True)
            backbone_card = {"backbone": geo.backbone, "weights": origin.to_dict()}
    model.eval()
    mdir = Path(out) / "model"
    tmp = mdir.with_name("model.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file(state, str(tmp / "weights.safetensors"), metadata={"arch": geo.arch})
    example = torch.zeros(1, geo.channels, geo.image_size, geo.image_size)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # TorchScript is deprecated upstream but still loads
        traced = torch.jit.trace(model, example)
    traced.save(str(tmp / "model.torchscript.pt"))
    (tmp / "labels.json").write_text(json.dumps(classes, indent=1))
    pre = {
        "format_version": FORMAT_VERSION,
        "arch": geo.arch,
        "image_size": geo.image_size,
        "channels": geo.channels,
        "mean": None if geo.mean is None else list(geo.mean),
        "std": None if geo.std is None else list(geo.std),
        "resize": "shorter side to image_size, then centre crop",
        "scale": "pixels / 255, then (x - mean) / std",
        "color": "L" if geo.channels == 1 else "RGB",
        "num_classes": len(classes),
        "emb_dim": emb_dim,
        "mode": mode,
        # trained on mirrored images: predictions average the image and its mirror image (what the workbench did)
        "tta_flip": uses_tta(TrainConfig.from_dict(cur["config"])),
    }
    if mode != "scratch":
        pre["backbone"] = geo.backbone
    if mode == "head":  # images are prepared as the backbone's embeddings were: its own resize and crop
        from ..learning import backbones

        pre["backbone_preprocess"] = backbones.get_spec(str(geo.backbone)).preprocess(geo.framing).to_dict()
        pre["framing"] = geo.framing  # crop: photos; whole: small images, resize == crop
        pre["resize"] = "shorter side to backbone_preprocess.resize, then centre crop of backbone_preprocess.crop"
    if backbone_card is not None:
        pre["backbone_weights"] = backbone_card["weights"]
    if onnx:  # the whole model as ONNX, kept only when ONNX Runtime reproduces it on the project's images
        from .onnxexport import export_onnx, project_pixels

        norm = pre.get("backbone_preprocess") or pre
        try:
            pre["onnx"] = export_onnx(
                model,
                project_pixels(project, pre),
                tmp / "model.onnx",
                mean=list(norm["mean"]),
                std=list(norm["std"]),
                tta_flip=bool(pre["tta_flip"]) and mode != "head",  # as Predictor: head models see the image alone
            )
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    (tmp / "preprocess.json").write_text(json.dumps(pre, indent=1))
    (tmp / "MODEL_CARD.md").write_text(_model_card(project, cur, pre, classes))
    if mdir.exists():
        shutil.rmtree(mdir)
    os.replace(tmp, mdir)
    return mdir


def _model_card(project: Project, cur: dict[str, Any], pre: dict[str, Any], classes: list[str]) -> str:
    rnd = next((r for r in project.store.rounds() if r["number"] == cur["round"] and r["status"] == "done"), None)
    # the labels the model was trained on: those current when its round started, not the ones at export time
    trained = project.store.labels_at(rnd["started_at"] if rnd else cur["created_at"], split="pool")
    counts = Counter(r["class"] for r in trained)
    guessed = Counter(r["class"] for r in trained if r["accepted_guess"])
    val = cur["metrics"].get("val", {})
    lines = [
        "# alwb model card",
        "",
        f"- exported: {dt.datetime.now(dt.timezone.utc).isoformat(timespec='seconds')}",
        f"- trained: round {cur['round']} at "
        f"{dt.datetime.fromtimestamp(cur['created_at'], dt.timezone.utc).isoformat(timespec='seconds')}",
        f"- architecture: {pre['arch']}, input {pre['channels']}×{pre['image_size']}×{pre['image_size']}",
        f"- training mode: {pre.get('mode', 'scratch')}"
        + {
            "head": " (a logistic-regression head on the frozen backbone's embeddings)",
            "finetune": " (the pretrained backbone fine-tuned with a linear head)",
        }.get(pre.get("mode", "scratch"), " (trained from random weights)"),
        *(
            [
                f"- backbone: {pre['backbone']}, weights {pre['backbone_weights'].get('kind')} file "
                f"{Path(pre['backbone_weights'].get('file', '')).name}, SHA-256 {pre['backbone_weights'].get('sha256')}"
                + (f" from {pre['backbone_weights']['url']}" if pre["backbone_weights"].get("url") else "")
                + (
                    f", Python package {pre['backbone_weights']['package']} "
                    f"{pre['backbone_weights'].get('package_version')}"
                    if pre["backbone_weights"].get("package")
                    else ""
                )
            ]
            if pre.get("backbone_weights")
            else []
        ),
        f"- classes ({len(classes)}): {', '.join(classes)}",
        *(
            [
                "- `model.onnx`: the whole model, pixels (0-255, resized and cropped as `preprocess.json` says) to "
                "probabilities, for ONNX Runtime without PyTorch; checked on "
                f"{pre['onnx']['parity']['n_images']} image(s) of the project: largest probability difference "
                f"{pre['onnx']['parity']['max_abs_diff']:.1e}, same top-1 class on every one"
            ]
            if pre.get("onnx")
            else []
        ),
        *(
            [
                "- predictions: trained on mirrored images, so the workbench's figures average the softmax of the "
                "image and of its left-right mirror image (`preprocess.json`: `tta_flip`); do the same with the "
                "TorchScript file to get them"
            ]
            if pre.get("tta_flip")
            else []
        ),
        "",
        "## Training labels",
        "",
        f"Labels current when round {cur['round']} started: {sum(counts.values())}, of them "
        f"{sum(counts.values()) - sum(guessed.values())} chosen by a person and {sum(guessed.values())} the model's "
        "preselected guess accepted untouched (`accepted_guess` in the manifests).",
        "",
        "| class | labels | chosen | accepted guesses |",
        "| --- | --- | --- | --- |",
        *[
            f"| {c} | {counts.get(c, 0)} | {counts.get(c, 0) - guessed.get(c, 0)} | {guessed.get(c, 0)} |"
            for c in classes
        ],
        "",
        "## Validation (random sample of the pool, never trained on)",
        "",
    ]
    if val.get("n"):
        lines += [
            f"- n = {val['n']}; accuracy {val['accuracy']:.3f} "
            f"(95% Wilson interval {val['accuracy_low']:.3f}–{val['accuracy_high']:.3f})",
            f"- macro-F1 {val['macro_f1']:.3f}; balanced accuracy {val['balanced_accuracy']:.3f}",
        ]
    else:
        lines.append("- no validation labels yet: accuracy unknown")
    return "\n".join(lines) + "\n"


def export_project(
    project: Project,
    out: str | Path,
    *,
    include_pseudo: bool = False,
    onnx: bool = True,
    image_prefix: str | None = None,
) -> ExportReport:
    """Dataset, Label Studio tasks (``OUT/labelstudio.json``, images named ``image_prefix`` + their stored path)
    and (when trained) model, with ``model.onnx`` unless ``onnx`` is False."""
    from . import labelstudio

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    ds, n, n_pseudo, changed = export_dataset(project, out, include_pseudo=include_pseudo)
    tasks = out / "labelstudio.json"  # before the model: written even when the model's export stops
    labelstudio.export_tasks(
        project, tasks, image_prefix=labelstudio.DEFAULT_PREFIX if image_prefix is None else image_prefix
    )
    mdir = export_model(project, out, onnx=onnx) if project.current_model() is not None else None
    left_out = {p for p, _ in changed}
    images = project.store.image_root()
    counts = Counter(
        r["class"] for r in project.store.current_labels() if str(images.locate(r["path"])) not in left_out
    )
    return ExportReport(ds, mdir, n, n_pseudo, dict(counts), changed, tasks)


def build_classifier(geo: Geometry | Mapping[str, Any], num_classes: int) -> Classifier:
    """An untrained classifier of the architecture a model's geometry (or an exported model's preprocessing,
    which names the same ``arch``, ``channels`` and ``image_size``) names, without pretrained weights: load a saved
    state_dict into it (:func:`load_state_dict_file`)."""
    from ..learning.models import get_model

    if not isinstance(geo, Geometry):
        arch, channels, size = str(geo["arch"]), int(geo["channels"]), int(geo["image_size"])
    else:
        arch, channels, size = geo.arch, geo.channels, geo.image_size
    return get_model(arch, channels=channels, num_classes=num_classes, image_size=size, pretrained="none")


def load_state_dict_file(path: str | Path) -> dict[str, Any]:
    """Load weights from ``.safetensors`` or a ``.pt`` state_dict; never unpickles arbitrary objects."""
    import torch

    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise UnsafeModelFileError(
            f"refused to load {path.name}: not a plain tensor state_dict ({type(exc).__name__})"
        ) from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UnsafeModelFileError(f"refused to load {path.name}: not a state_dict of tensors")
    return state


class Predictor:
    """An exported model folder, loaded for prediction (no project needed)."""

    def __init__(self, model_dir: str | Path, device: str = "cpu") -> None:
        d = Path(model_dir)
        for name in ("labels.json", "preprocess.json"):
            if not (d / name).is_file():
                raise AlwbError(f"{d} is not an exported alwb model (missing {name})")
        self.classes: list[str] = json.loads((d / "labels.json").read_text())
        self.pre: dict[str, Any] = json.loads((d / "preprocess.json").read_text())
        weights = d / "weights.safetensors"
        if not weights.is_file():
            weights = d / "weights.pt"
        if not weights.is_file():
            raise AlwbError(f"{d} has no weights.safetensors")
        if self.pre.get("mode") == "head":
            import torch

            from ..learning import backbones

            spec = backbones.get_spec(self.pre["backbone"])
            self.model = torch.nn.Sequential(
                backbones.build_extractor(spec), torch.nn.Linear(int(self.pre["emb_dim"]), len(self.classes))
            )
        else:
            self.model = build_classifier(self.pre, len(self.classes))
        self.model.load_state_dict(load_state_dict_file(weights))
        self.model.eval()
        self.device = device

    def _probs(self, pixels: np.ndarray, prep: Any) -> np.ndarray:
        """Class probabilities of uint8 ``pixels`` ``(N, C, S, S)``."""
        import torch

        from ..learning.train import predict_batches

        if prep is None:
            probs, _ = predict_batches(
                self.model,
                pixels,
                mean=self.pre["mean"],
                std=self.pre["std"],
                device=self.device,
                tta_flip=bool(self.pre.get("tta_flip", False)),
            )
            return probs
        model = self.model.to(self.device)
        out = []
        with torch.inference_mode():
            for start in range(0, len(pixels), 32):
                x = prep.normalise(torch.from_numpy(pixels[start : start + 32]).to(self.device))
                out.append(torch.softmax(model(x).float(), dim=1).cpu().numpy())
        return np.concatenate(out)

    def predict_paths(self, paths: Sequence[str | Path]) -> list[dict[str, Any]]:
        """For each path: predicted class and probability, or the error reading it."""
        from .onnxpredict import prediction_rows

        bpre = self.pre.get("backbone_preprocess")
        prep = None
        if bpre is not None:
            from ..learning.backbones import Preprocess

            prep = Preprocess.from_dict(bpre)
        return prediction_rows(paths, self.pre, lambda pixels: self._probs(pixels, prep), self.classes)
