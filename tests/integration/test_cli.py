"""The command-line round trip on real image files: init → query → label → train → query → export → predict."""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from alwb.cli import main
from alwb.project import Project


def run_cli(capsys: pytest.CaptureFixture[str], *args: object) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def write_answers(path: Path, items: list[dict], truth: dict[str, str], *, by: str = "path") -> None:
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow([by, "label"])
        for it in items:
            w.writerow([it[by], truth[it["path"]]])


def test_round_trip_on_shape_images(tmp_path: Path, shapes_flat, capsys) -> None:
    folder, truth = shapes_flat
    proj = tmp_path / "proj"
    code, out, _ = run_cli(
        capsys, "init", proj, "--images", folder, "--classes", "circle,square,triangle", "--val-size", "9"
    )
    assert code == 0, out
    assert "imported 60 image(s)" in out

    code, out, _ = run_cli(capsys, "query", proj, "-n", "24", "--json")
    assert code == 0
    q = json.loads(out)
    assert len(q["items"]) == 24 and len({i["id"] for i in q["items"]}) == 24
    assert "no model yet" in q["note"] and "random" in q["note"]
    assert all(i["score"] is None and i["predicted"] is None for i in q["items"])
    assert {i["reason"] for i in q["items"]} <= {"random", "validation"}
    write_answers(tmp_path / "a1.csv", q["items"], truth)
    code, out, _ = run_cli(capsys, "label", proj, tmp_path / "a1.csv")
    assert code == 0 and "saved 24 label(s)" in out

    code, out, _ = run_cli(capsys, "train", proj, "--epochs", "12", "--device", "cpu")
    assert code == 0, out
    assert out.startswith("round 1:") and "cold start" in out

    code, out, _ = run_cli(capsys, "query", proj, "-n", "12", "--json", "--strategy", "entropy")
    q2 = json.loads(out)
    scored = [i for i in q2["items"] if i["reason"] == "entropy"]
    assert scored and q2["note"] is None
    scores = [i["score"] for i in scored]
    assert scores == sorted(scores, reverse=True)
    assert all(i["predicted"] in truth.values() and 0 < i["probability"] <= 1 for i in scored)
    assert not {i["id"] for i in q2["items"]} & {i["id"] for i in q["items"]}
    write_answers(tmp_path / "a2.csv", q2["items"], truth, by="id")
    assert run_cli(capsys, "label", proj, tmp_path / "a2.csv")[0] == 0
    code, out, _ = run_cli(capsys, "train", proj, "--epochs", "8", "--device", "cpu")
    assert code == 0 and out.startswith("round 2:") and "warm start" in out

    code, out, _ = run_cli(capsys, "status", proj, "--json")
    st = json.loads(out)
    assert st["items"]["total"] == 60 and st["items"]["labeled"] == 36
    assert st["items"]["labeled_by_source"] == {"human": 36}
    assert [r["status"] for r in st["rounds"]] == ["done", "done"]
    assert st["rounds"][1]["metrics"]["val"]["n"] > 0
    assert set(st["rounds"][1]["timings"]) >= {"train_seconds", "score_seconds", "round_seconds"}
    assert st["model"]["round"] == 2
    code, out, _ = run_cli(capsys, "status", proj)
    assert code == 0 and "round 2:" in out and "labels per class" in out

    out_dir = tmp_path / "export"
    code, out, _ = run_cli(capsys, "export", proj, out_dir)
    assert code == 0, out
    man = pd.read_csv(out_dir / "manifest.csv")
    assert len(man) == 36 and set(man["source"]) == {"human"}
    assert list(man.columns[:7]) == ["path", "sha256", "label", "source", "round", "annotator", "time"]
    pq = pd.read_parquet(out_dir / "manifest.parquet")
    assert pq["sha256"].tolist() == man["sha256"].tolist()
    for row in man.itertuples():
        copied = out_dir / row.path
        assert copied.is_file() and copied.parent.name == row.label
        assert truth[row.original_path] == row.label
    model_dir = out_dir / "model"
    for name in ("weights.safetensors", "model.torchscript.pt", "labels.json", "preprocess.json", "MODEL_CARD.md"):
        assert (model_dir / name).is_file(), name
    # the names scripts rely on (issue 40)
    for name in ("model/model.onnx", "dataset/metadata.jsonl", "labelstudio.json"):
        assert (out_dir / name).is_file(), name
    assert json.loads((model_dir / "labels.json").read_text()) == ["circle", "square", "triangle"]
    pre = json.loads((model_dir / "preprocess.json").read_text())
    assert pre["channels"] == 1 and pre["image_size"] == 20 and len(pre["mean"]) == 1
    assert pre["tta_flip"] is True  # trained with flips (the default): predictions average the mirror image too

    paths = sorted(truth)[:15]
    code, out, _ = run_cli(capsys, "predict", model_dir, *paths, "--json")
    assert code == 0
    preds = json.loads(out)
    with Project.open(proj) as p:
        scores = p.scores()
        ids = [p.store.item_by_path(x)["id"] for x in paths]
        expected = [scores.classes[int(np.argmax(scores.probs[r]))] for r in scores.rows(ids)]
    assert [r["predicted"] for r in preds] == expected


def test_round_trip_on_digits(tmp_path: Path, capsys) -> None:
    from alwb.demo import read_oracle, write_digits

    images, oracle_csv = write_digits(tmp_path / "digits")
    oracle = read_oracle(oracle_csv)
    proj = tmp_path / "proj"
    assert run_cli(capsys, "init", proj, "--images", images, "--classes", ",".join(map(str, range(10))))[0] == 0
    accs = []
    for r in range(2):
        code, out, _ = run_cli(capsys, "query", proj, "-n", "150", "--json", "--strategy", "margin")
        items = json.loads(out)["items"]
        with open(tmp_path / f"d{r}.csv", "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["id", "label"])
            w.writerows((i["id"], oracle[i["path"]]) for i in items)
        assert run_cli(capsys, "label", proj, tmp_path / f"d{r}.csv")[0] == 0
        code, out, _ = run_cli(capsys, "train", proj, "--epochs", "30", "--device", "cpu")
        assert code == 0, out
        with Project.open(proj) as p:
            accs.append(p.status()["rounds"][-1]["metrics"]["val"]["accuracy"])
    assert accs[-1] > 0.8, accs  # 8x8 digits are easy; ~230 training labels after two rounds
    out_dir = tmp_path / "out"
    assert run_cli(capsys, "export", proj, out_dir)[0] == 0
    some = sorted(oracle)[:50]
    code, out, _ = run_cli(capsys, "predict", out_dir / "model", *some, "--json")
    preds = json.loads(out)
    assert np.mean([p["predicted"] == oracle[p["path"]] for p in preds]) > 0.7


def test_label_file_with_one_bad_row_writes_nothing(tmp_path: Path, shapes_flat, capsys) -> None:
    folder, truth = shapes_flat
    proj = tmp_path / "proj"
    run_cli(capsys, "init", proj, "--images", folder, "--classes", "circle,square,triangle")
    paths = sorted(truth)
    rows = [(p, truth[p]) for p in paths[:5]] + [(paths[5], "hexagon")] + [(p, truth[p]) for p in paths[6:9]]
    with open(tmp_path / "bad.csv", "w", newline="") as fh:
        csv.writer(fh).writerows([("path", "label"), *rows])
    code, _, err = run_cli(capsys, "label", proj, tmp_path / "bad.csv")
    assert code == 2
    assert "line 7" in err and "hexagon" in err and "nothing written" in err
    assert len(err.strip().splitlines()) == 1
    with Project.open(proj) as p:
        assert p.store.con.execute("SELECT COUNT(*) FROM labels").fetchone()[0] == 0


def test_init_twice_and_add_same_folder_adds_nothing(tmp_path: Path, shapes_tree, capsys) -> None:
    folder, _ = shapes_tree
    proj = tmp_path / "proj"
    code, out, _ = run_cli(capsys, "init", proj, "--images", folder)
    assert code == 0 and "(60 with labels)" in out
    code, _, err = run_cli(capsys, "init", proj, "--images", folder)
    assert code == 2 and "already holds an alwb project" in err
    code, out, _ = run_cli(capsys, "add", proj, "--images", folder)
    assert code == 0 and "imported 0 image(s)" in out and "60 already in the project" in out
    with Project.open(proj) as p:
        assert p.store.item_count() == 60
        assert p.classes == ["circle", "square", "triangle"]
        assert p.store.label_counts()["circle"] == {"import": 20}


def test_errors_are_one_line_without_traceback(tmp_path: Path, capsys) -> None:
    code, _, err = run_cli(capsys, "status", tmp_path / "nope")
    assert code == 2 and err.startswith("alwb: error:") and len(err.strip().splitlines()) == 1
    proc = subprocess.run(
        [sys.executable, "-m", "alwb", "query", str(tmp_path / "nope"), "-n", "3"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "not an alwb project" in proc.stderr


def test_train_without_labels_is_a_clear_error(tmp_path: Path, shapes_flat, capsys) -> None:
    folder, _ = shapes_flat
    proj = tmp_path / "proj"
    run_cli(capsys, "init", proj, "--images", folder, "--classes", "circle,square,triangle")
    code, _, err = run_cli(capsys, "train", proj)
    assert code == 2 and "no labels" in err


def test_help_for_every_command() -> None:
    for cmd in ([], ["init"], ["add"], ["status"], ["query"], ["label"], ["train"], ["export"], ["predict"], ["demo"]):
        proc = subprocess.run(
            [sys.executable, "-m", "alwb", *cmd, "--help"], capture_output=True, text=True, timeout=120
        )
        assert proc.returncode == 0 and "usage: alwb" in proc.stdout, cmd


def test_demo_in_the_terminal(tmp_path: Path, capsys) -> None:
    code, out, _ = run_cli(
        capsys, "demo", "--terminal", "--dir", tmp_path / "demo", "--rounds", "1", "--batch", "40", "--device", "cpu"
    )
    assert code == 0, out
    assert "imported 1797 image(s)" in out and "round 1:" in out and "val accuracy" in out
    assert (tmp_path / "demo" / "oracle.csv").is_file()
    assert len(list((tmp_path / "demo" / "images").glob("*.png"))) == 1797


def test_a_moved_project_keeps_its_model(tmp_path: Path, shapes_flat, capsys) -> None:
    import shutil

    folder, truth = shapes_flat
    proj = tmp_path / "proj"
    run_cli(capsys, "init", proj, "--images", folder, "--classes", "circle,square,triangle")
    with Project.open(proj) as p:
        where = p.store.image_root()  # init stores the paths relative to the folder imported
        p.label([(i, truth[str(where.locate(p.store.item(i)["path"]))]) for i in p.store.item_ids()[:24]])
    assert run_cli(capsys, "train", proj, "--epochs", "2", "--device", "cpu")[0] == 0
    moved = tmp_path / "moved"
    shutil.move(proj, moved)
    code, out, _ = run_cli(capsys, "train", moved, "--epochs", "2", "--device", "cpu")
    assert code == 0 and "warm start" in out
    assert run_cli(capsys, "export", moved, tmp_path / "out")[0] == 0
    assert (tmp_path / "out" / "model" / "weights.safetensors").is_file()


def test_the_command_table() -> None:
    """Every subcommand runs its own function; choices come from alwb.config; research options are gone."""
    from alwb.cli import build_parser
    from alwb.config import DEVICES, MODEL_NAMES, STRATEGY_NAMES

    ap = build_parser()
    sub = next(a for a in ap._actions if isinstance(a, argparse._SubParsersAction))
    for name, p in sub.choices.items():
        assert p.get_default("func").__name__ == f"_cmd_{name}", name
    train = sub.choices["train"].format_help()
    assert "{" + ",".join(MODEL_NAMES) + "}" in train and "smallcnn" not in train  # legacy: accepted, not offered
    assert ap.parse_args(["train", "p", "--model", "smallcnn"]).model == "smallcnn"
    assert "{" + ",".join(DEVICES) + "}" in train
    assert "{" + ",".join(STRATEGY_NAMES) + "}" in sub.choices["demo"].format_help()
    sim = sub.choices["simulate"].format_help()
    assert "--consistency" not in sim and "--pseudo-flat" not in sim


def test_simulate_sets_only_the_training_options_given() -> None:
    from alwb.cli import build_parser, sim_train_config
    from alwb.config import TrainConfig

    def cfg(*opts: str) -> TrainConfig:
        return sim_train_config(build_parser().parse_args(["simulate", "data", *opts]))

    assert cfg() == TrainConfig()  # the simulator's defaults are the product's
    assert cfg("--pseudo-label", "--from-scratch") == TrainConfig(pseudo=True, warm_start=False)
    assert cfg("--augment", "crop+flip", "--epochs", "3", "--pseudo-cap", "2") == TrainConfig(
        augment="crop+flip", epochs=3, pseudo_cap=2.0
    )


def test_demo_and_cli_do_not_import_each_other() -> None:
    code = "import sys, alwb.demo; assert 'alwb.cli' not in sys.modules; import alwb.cli; print('ok')"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr


def test_the_demo_says_the_retraining_interval_its_project_uses(
    tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    import alwb.uilaunch
    from alwb.config import ProjectConfig

    launched = []
    monkeypatch.setattr(alwb.uilaunch, "launch", lambda project, **kw: launched.append(project) or 0)
    code, out, _ = run_cli(capsys, "demo", "--dir", tmp_path / "demo", "--device", "cpu")
    assert code == 0 and launched == [tmp_path / "demo" / "project"]
    with Project.open(launched[0]) as p:
        every = p.config.retrain_every
    assert every == ProjectConfig.retrain_every  # one number: the project default, on the Label page and here
    assert f"retrains every {every} labels" in out
