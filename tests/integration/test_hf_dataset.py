"""The exported dataset folder loads with Hugging Face ``datasets`` (ImageFolder + metadata.jsonl), offline."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
import pytest
from conftest import make_shapes

os.environ["HF_DATASETS_OFFLINE"] = "1"  # before datasets is imported: it reads these once
os.environ["HF_HUB_OFFLINE"] = "1"

from alwb.io.export import MANIFEST_COLUMNS, export_dataset  # noqa: E402
from alwb.project import Project  # noqa: E402
from alwb.store import LabelRow  # noqa: E402


def test_dataset_folder_loads_in_datasets_with_labels_splits_and_metadata(tmp_path: Path, monkeypatch) -> None:
    datasets = pytest.importorskip("datasets")
    monkeypatch.setattr(datasets.config, "HF_DATASETS_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True, raising=False)
    truth = make_shapes(tmp_path / "tree", 8, layout="imagefolder")  # labeled by folder: source "import"
    with Project.create(tmp_path / "proj") as p:
        p.set_config(val_size=6)
        p.add_images(tmp_path / "tree")
        images = p.store.image_root()
        val = set(p.store.val_item_ids())
        assert len(val) == 6
        items = p.store.items()
        # two annotators relabel a few pool items (agreeing with the truth), one the validation items
        pool_ids = [int(r["id"]) for r in items if int(r["id"]) not in val][:6]
        path_of = {int(r["id"]): str(images.locate(r["path"])) for r in items}
        p.label([(i, truth[path_of[i]]) for i in pool_ids[:3]], annotator="ana")
        p.label([(i, truth[path_of[i]]) for i in pool_ids[3:]], annotator="ben")
        # the validation answers came on whole seconds (as from Label Studio): still text like the others' times
        p.store.add_labels(
            [LabelRow(i, truth[path_of[i]]) for i in sorted(val)], annotator="ana", created_at=1714557600.0
        )
        rep = export_dataset(p, tmp_path / "out")
    out = tmp_path / "out"
    man = pd.read_csv(out / "manifest.csv", keep_default_na=False)
    assert list(man.columns) == MANIFEST_COLUMNS and len(man) == 24 == rep.n_images
    assert (out / "dataset" / "metadata.jsonl").is_file()
    root_meta = [json.loads(line) for line in (out / "dataset" / "metadata.jsonl").read_text().splitlines()]
    assert [m["file_name"] for m in root_meta] == [p_[len("dataset/") :] for p_ in man["path"]]

    ds = datasets.load_dataset("imagefolder", data_dir=str(out / "dataset"), cache_dir=str(tmp_path / "hf"))
    assert sorted(ds) == ["train", "validation"]
    assert ds["train"].num_rows == 18 and ds["validation"].num_rows == 6
    assert {"image", "label", "annotator", "round", "source", "sha256", "item_id"} <= set(ds["train"].column_names)
    by_sha = {r.sha256: r for r in man.itertuples()}
    seen = 0
    for split in ("train", "validation"):
        for ex in ds[split]:
            row = by_sha[ex["sha256"]]
            assert ex["label"] == row.label == truth[row.original_path]
            assert ex["annotator"] == row.annotator and ex["source"] == row.source and ex["round"] == row.round
            assert row.split == ("val" if split == "validation" else "pool")
            assert ex["image"].size == (20, 20)
            seen += 1
    assert seen == 24
    assert set(ds["validation"]["annotator"]) == {"ana"} and set(ds["validation"]["source"]) == {"human"}
    assert set(ds["validation"]["time"]) == {"2024-05-01T10:00:00.000000+00:00"}
    assert sorted(set(ds["train"]["annotator"])) == ["", "ana", "ben"]  # "" for the folder's own labels
    assert sorted(set(ds["train"]["source"])) == ["human", "import"]


def test_metadata_loads_when_a_column_is_empty_in_one_split(tmp_path: Path, monkeypatch) -> None:
    """Pseudo-labels (with a confidence) train; the validation rows have none, nor an annotator: ``datasets`` refuses
    metadata files whose column types differ, so a missing text is "" and a missing number NaN."""
    datasets = pytest.importorskip("datasets")
    monkeypatch.setattr(datasets.config, "HF_DATASETS_OFFLINE", True)
    from PIL import Image

    from alwb.io.export import write_metadata

    out = tmp_path / "out"
    ds = out / "dataset"
    rows = []
    for i, (split, source, conf, who) in enumerate(
        [("train", "pseudo", 0.97, None), ("train", "human", None, "ana"), ("validation", "import", None, None)]
    ):
        path = ds / split / "cat" / f"{i}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (4, 4), (i, 0, 0)).save(path)
        rows.append(
            {
                "path": path.relative_to(out).as_posix(),
                "sha256": f"{i:064x}",
                "label": "cat",
                "source": source,
                "round": 1,
                "annotator": who,
                "time": None if source == "pseudo" else "2026-01-01T00:00:00.000000+00:00",
                "split": "val" if split == "validation" else "pool",
                "confidence": conf,
                "original_path": str(path),
                "item_id": i + 1,
            }
        )
    write_metadata(ds, rows, out)
    loaded = datasets.load_dataset("imagefolder", data_dir=str(ds), cache_dir=str(tmp_path / "hf"))
    assert loaded["train"]["confidence"][0] == pytest.approx(0.97)
    assert [str(c) for c in loaded["validation"]["confidence"]] == ["nan"]
    assert loaded["train"]["annotator"] == ["", "ana"] and loaded["validation"]["annotator"] == [""]
    assert loaded["train"]["time"][0] == "" and list(loaded["validation"]["source"]) == ["import"]
