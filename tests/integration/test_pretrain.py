"""Features learned from the project's own images (alwb.learning.pretrain): the job, its checkpoint and resume, the
backbone
it registers, and head / finetune rounds on it. Tiny shape images and a few steps: plumbing, never accuracy."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_shapes
from safetensors.torch import load_file

from alwb.errors import ConfigError
from alwb.learning import backbones
from alwb.learning.plan import Geometry
from alwb.learning.pretrain import (
    META_KEY,
    POOL_BACKBONE,
    PretrainSettings,
    pretrain,
    read_status,
)
from alwb.project import Project

SETTINGS = PretrainSettings(steps=6, batch_size=16, width=4, seed=1)


@pytest.fixture
def project(tmp_path: Path) -> tuple[Project, dict[str, str]]:
    truth = make_shapes(tmp_path / "img", 12, size=20, layout="flat")
    proj = Project.create(tmp_path / "p", classes=["circle", "square", "triangle"])
    proj.set_config(val_size=6)
    proj.add_images(tmp_path / "img")
    yield proj, truth
    proj.close()
    backbones.unregister(POOL_BACKBONE)


def test_pretrain_records_a_backbone_every_process_that_opens_the_project_can_load(
    project: tuple[Project, dict[str, str]],
) -> None:
    proj, _ = project
    rep = pretrain(proj, SETTINGS, device="cpu")
    assert rep.finished and rep.steps == rep.total_steps == 6 and rep.images == 36
    assert rep.loss_first is not None and np.isfinite(rep.loss_last)
    rec = proj.store.get_meta(META_KEY)
    assert rec["sha256"] == backbones.sha256_file(rep.file) and rec["image_size"] == 20 and rec["width"] == 4
    assert read_status(proj.root)["state"] == "finished"
    saved = load_file(rep.file)
    assert saved and all(k.startswith("backbone.") for k in saved)

    backbones.unregister(POOL_BACKBONE)  # a new process knows nothing of it until it opens the project
    with Project.open(proj.root) as again:
        assert POOL_BACKBONE in backbones.backbone_names()
        bb = backbones.load(POOL_BACKBONE, download=False, quiet=True)
        assert bb.origin.kind == "project" and bb.embedding_dim == 16
        x = torch.from_numpy(again.pixel_cache(Geometry("scratch", "cnn6", 20, 3)).rows([1, 2]))
        with torch.no_grad():
            assert bb.model(bb.preprocess.normalise(x)).shape == (2, 16)


def test_a_stopped_job_resumes_where_it_stopped_and_ends_with_the_same_weights(
    project: tuple[Project, dict[str, str]],
) -> None:
    proj, _ = project
    whole = pretrain(proj, SETTINGS, device="cpu")
    whole_state = load_file(whole.file)

    calls = {"n": 0}

    def stop_after_3() -> bool:
        calls["n"] += 1
        return calls["n"] > 3

    part = pretrain(proj, SETTINGS, device="cpu", restart=True, stop=stop_after_3)
    assert not part.finished and part.steps == 3 and read_status(proj.root)["state"] == "stopped"
    rest = pretrain(proj, SETTINGS, device="cpu")
    assert rest.finished and rest.resumed_from == 3 and rest.steps == 6
    for k, v in load_file(rest.file).items():
        torch.testing.assert_close(v, whole_state[k])
    assert rest.losses[:3] == part.losses[:3]


def test_a_time_budget_plans_its_steps_then_fixes_them(
    project: tuple[Project, dict[str, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A first plan at step 20, the final one after REPLAN_AFTER_S seconds (shortened here), kept in the checkpoint
    so that a resumed job keeps its schedule."""
    from alwb.learning import pretrain as pretrain_module

    proj, _ = project
    monkeypatch.setattr(pretrain_module, "REPLAN_AFTER_S", 0.3)
    rep = pretrain(proj, PretrainSettings(minutes=0.03, batch_size=16, width=4), device="cpu")
    assert rep.finished and rep.steps == rep.total_steps > pretrain_module.PACE_FROM_STEP
    ck = torch.load(proj.root / "backbones" / "pool-simclr.ckpt.pt", map_location="cpu", weights_only=True)
    assert ck["planned"] and ck["total"] == rep.steps and 0 < ck["pace_t0"] < ck["seconds"]


def test_other_settings_do_not_resume_a_checkpoint_silently(project: tuple[Project, dict[str, str]]) -> None:
    proj, _ = project
    pretrain(proj, SETTINGS, device="cpu", stop=lambda: True)
    with pytest.raises(Exception, match="other settings"):
        pretrain(proj, PretrainSettings(steps=6, batch_size=16, width=8), device="cpu")
    assert pretrain(proj, PretrainSettings(steps=2, batch_size=16, width=8), device="cpu", restart=True).finished


@pytest.mark.parametrize("mode", ["head", "finetune"])
def test_rounds_train_on_the_project_backbone(project: tuple[Project, dict[str, str]], mode: str) -> None:
    proj, truth = project
    pretrain(proj, SETTINGS, device="cpu")
    proj.set_train_config(mode=mode, backbone=POOL_BACKBONE, device="cpu", epochs=2)
    q = proj.query(12)
    proj.label([(it.id, truth[proj.store.item(it.id)["path"]]) for it in q.items])
    res = proj.train()
    geo = proj.geometry()
    assert geo.mode == mode and geo.backbone == POOL_BACKBONE and geo.image_size == 20
    if mode == "finetune":  # the pool's small CNN: no "takes minutes" warning meant for ImageNet backbones
        assert "small CNN" in geo.mode_reason and "minutes" not in geo.mode_reason
    assert res.round == 1 and proj.scores() is not None
    assert len(proj.query(5).items) == 5


def test_the_project_backbone_fine_tunes_with_the_small_cnn_recipe(project: tuple[Project, dict[str, str]]) -> None:
    """A small CNN from one pool's SimCLR fine-tunes like cnn6 from scratch (rate 0.04, its step budget): the
    pretrained-backbone rate 1e-4 left it collapsing (docs/experiments.md E27); downloaded backbones keep 1e-4."""
    from alwb.config import TrainConfig
    from alwb.learning.train import auto_epochs, auto_lr, recipe_arch

    proj, _ = project
    pretrain(proj, SETTINGS, device="cpu")
    cfg = TrainConfig()
    arch = f"bb:{POOL_BACKBONE}"
    assert recipe_arch(arch) == "cnn6" and auto_lr(arch, cfg) == auto_lr("cnn6", cfg) == 0.04
    for n, warm in ((100, False), (1000, True)):
        kw = {"warm": warm, "cfg": cfg, "image_size": 32}
        assert auto_epochs(n, 64, arch=arch, **kw) == auto_epochs(n, 64, arch="cnn6", **kw)
    assert recipe_arch("bb:resnet50") == "bb:resnet50" and auto_lr("bb:resnet50", cfg) == 1e-4
    warm = {"warm": True, "cfg": cfg, "image_size": 32}
    assert auto_epochs(1000, 64, arch="bb:resnet50", **warm) < auto_epochs(1000, 64, arch=arch, **warm)
    assert auto_lr(arch, TrainConfig(lr=0.01)) == 0.01


def test_a_changed_weights_file_is_refused(project: tuple[Project, dict[str, str]]) -> None:
    proj, _ = project
    rep = pretrain(proj, SETTINGS, device="cpu")
    Path(rep.file).write_bytes(Path(rep.file).read_bytes() + b" ")
    with pytest.raises(backbones.WeightsRejected, match="changed since it was trained"):
        backbones.load(POOL_BACKBONE, download=False, quiet=True)
    Path(rep.file).unlink()
    with pytest.raises(backbones.WeightsUnavailable, match="alwb pretrain"):
        backbones.load(POOL_BACKBONE, download=False, quiet=True)


@pytest.mark.parametrize(
    "kwargs", [{"minutes": 0, "steps": 0}, {"batch_size": 4}, {"temperature": 0}, {"width": 2}, {"lr": 0}]
)
def test_bad_settings_are_refused_with_a_message(kwargs: dict) -> None:
    with pytest.raises(ConfigError):
        PretrainSettings(**kwargs)


def test_cli_pretrain_then_use(project: tuple[Project, dict[str, str]], capsys: pytest.CaptureFixture[str]) -> None:
    from alwb.cli import build_parser, main

    proj, _ = project
    root = str(proj.root)
    argv = ["pretrain", root, "--steps", "3", "--batch-size", "16", "--width", "4", "--device", "cpu"]
    assert main([*argv, "--use", "finetune"]) == 0
    out = capsys.readouterr().out
    assert "pretraining finished: 3/3 steps" in out and f"backbone {POOL_BACKBONE}:" in out
    with Project.open(root) as again:
        assert (again.train_config.mode, again.train_config.backbone) == ("finetune", POOL_BACKBONE)
    backbones.unregister(POOL_BACKBONE)  # a new process: the name is accepted before any project is opened
    args = build_parser().parse_args(["train", root, "--backbone", POOL_BACKBONE, "--mode", "head"])
    assert args.backbone == POOL_BACKBONE
