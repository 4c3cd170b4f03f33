"""Issue 36 in the library: when a round is due (the first after the first batch, then every ``retrain_every``
answers, validation answers counted), and class lists that are refused rather than silently cleaned."""

from __future__ import annotations

import time
from pathlib import Path

from conftest import make_shapes

from alwb.project import Project


def test_first_round_after_the_first_batch_then_every_n_answers_validation_too(tmp_path: Path) -> None:
    truth = make_shapes(tmp_path / "flat", 12, layout="flat")
    with Project.create(tmp_path / "proj", classes=sorted(set(truth.values()))) as p:
        p.set_config(batch_size=6, retrain_every=10, val_size=8)
        p.add_images(tmp_path / "flat")
        images = p.store.image_root()
        cls = {int(r["id"]): truth[str(images.locate(r["path"]))] for r in p.store.items()}
        val = p.store.val_item_ids()
        by_class: dict[str, list[int]] = {}
        for i in cls:
            if i not in set(val):
                by_class.setdefault(cls[i], []).append(i)
        pool = [i for group in zip(*by_class.values(), strict=False) for i in group]  # the classes in turn
        assert not p.round_due()
        p.label([(i, cls[i]) for i in pool[:5]])
        assert not p.round_due(), "5 answers: the first batch (6) is not done yet"
        p.label([(val[0], cls[val[0]])])
        assert p.round_due(), "6 answers, one of them validation: the first round is due"
        # a round that started now (recorded as the store records one)
        number = p.store.start_round("random")
        p.store.finish_round(
            number, model_path="m", arch="cnn6", config={}, metrics={}, timings={}, n_labeled=5, n_pseudo=0, n_val=1
        )
        time.sleep(0.01)
        p.label([(i, cls[i]) for i in val[1:8]] + [(i, cls[i]) for i in pool[5:7]])
        assert not p.round_due(), "9 answers since the round"
        p.label([(pool[7], cls[pool[7]])])
        assert p.round_due(), "10 answers since the round, 7 of them validation answers"
        p.set_config(retrain_every=0)
        assert not p.round_due(), "0: only on request"


def test_alwb_init_refuses_an_empty_or_repeated_class_name(tmp_path: Path) -> None:
    """``alwb init --classes`` with ``ants,bees,ants`` or ``,,,`` stops with a message and creates nothing."""
    from alwb.cli import main

    make_shapes(tmp_path / "flat", 2, layout="flat")
    for i, raw in enumerate(("ants,bees,ants", ",,,")):
        assert main(["-q", "init", str(tmp_path / f"p{i}"), "--images", str(tmp_path / "flat"), "--classes", raw]) != 0
        assert not (tmp_path / f"p{i}" / "alwb.sqlite").exists()
