"""Command line: thin subcommands over :mod:`alwb.loop` and :mod:`alwb.export`."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import __version__
from .errors import AlwbError


def _add_project(p: argparse.ArgumentParser) -> None:
    p.add_argument("project", type=Path, help="project folder (holds alwb.sqlite)")


def build_parser() -> argparse.ArgumentParser:
    """The ``alwb`` argument parser."""
    from .config import STRATEGY_NAMES, TrainConfig

    ap = argparse.ArgumentParser(
        prog="alwb",
        description="Active-learning labeling workbench for images: label the images a CNN is least sure about.",
        epilog="Run 'alwb COMMAND --help' for a command's options.",
    )
    ap.add_argument("--version", action="version", version=f"alwb {__version__}")
    ap.add_argument("-q", "--quiet", action="store_true", help="no progress bars or warnings")
    sub = ap.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser(
        "init",
        help="create a project from a folder or CSV manifest of images",
        description="Create PROJECT with its SQLite store and import SRC: an ImageFolder tree "
        "(class subfolders become labels with source 'import'), a flat folder (all unlabeled), "
        "or a CSV manifest with a 'path' column (relative to the CSV) and an optional 'label'.",
    )
    _add_project(p)
    p.add_argument("--images", required=True, type=Path, metavar="SRC", help="folder or CSV manifest")
    p.add_argument("--classes", help="comma-separated class names, in model order")
    p.add_argument("--unlabeled", action="store_true", help="ignore labels in SRC (subfolders, label column)")
    p.add_argument("--val-size", type=int, help="validation set size (default: 10%% of items, 10 to 200)")

    p = sub.add_parser("add", help="import more images; the same content is never added twice")
    _add_project(p)
    p.add_argument("--images", required=True, type=Path, metavar="SRC", help="folder or CSV manifest")
    p.add_argument("--unlabeled", action="store_true", help="ignore labels in SRC")

    p = sub.add_parser("status", help="items, labels per class, rounds and the current model")
    _add_project(p)
    p.add_argument("--json", action="store_true", help="machine-readable output")

    p = sub.add_parser("query", help="the N items to label next, most informative first (read-only)")
    _add_project(p)
    p.add_argument("-n", type=int, default=None, help="how many items (default: the project's batch size)")
    p.add_argument(
        "--strategy", choices=STRATEGY_NAMES, default=None, help="query strategy (default: the project's, margin)"
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")

    p = sub.add_parser(
        "label",
        help="save answers from a CSV (columns id or path, and label) in one transaction",
        description="Columns: 'id' or 'path' (absolute, or relative to the CSV or the current "
        "folder) and 'label' (a class name, or <none> for 'none of these classes'). The file is "
        "one transaction: any bad line is reported with its number and nothing is written.",
    )
    _add_project(p)
    p.add_argument("answers", type=Path, help="answers CSV")
    p.add_argument("--annotator", default=os.environ.get("USER"), help="who labeled (default: $USER)")

    p = sub.add_parser("train", help="one round: train, score every item, record the round")
    _add_project(p)
    p.add_argument("--from-scratch", action="store_true", help="do not warm-start from the last model")
    p.add_argument("--epochs", type=int, help="epochs (default: chosen from the number of labels)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda", "mps"], help="default auto: CUDA > MPS > CPU")
    p.add_argument(
        "--model", help="auto (default: cnn6 up to 64 px, else resnet18 with offline weights), cnn6, smallcnn, resnet18"
    )
    p.add_argument("--augment", choices=["none", "crop", "crop+flip"], help="training augmentation")
    p.add_argument(
        "--balance",
        choices=["none", "weights", "smote", "adasyn"],
        help="imbalance: class-weighted loss, or SMOTE / ADASYN on the embeddings to fit the head",
    )
    p.add_argument(
        "--pseudo-label",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="add confident unlabeled items to training as pseudo-labels (chosen anew each round)",
    )
    p.add_argument("--seed", type=int, help="random seed")
    p.add_argument("--background", action="store_true", help=argparse.SUPPRESS)

    p = sub.add_parser(
        "ui",
        help="start the browser workbench on a project",
        description="Starts the Streamlit workbench and prints its address. It listens on "
        "127.0.0.1 only, unless --host says otherwise (--host 0.0.0.0 opens it to the network).",
    )
    p.add_argument(
        "project",
        type=Path,
        nargs="?",
        default=None,
        help="project folder to open (optional: the Start page can open or create one)",
    )
    p.add_argument("--port", type=int, default=8501, help="port (default 8501)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1, this machine only)")

    p = sub.add_parser("export", help="write the labeled dataset and the trained model to OUT")
    _add_project(p)
    p.add_argument("out", type=Path, help="output folder")
    p.add_argument("--include-pseudo", action="store_true", help="also export pseudo-labels (marked as such)")

    p = sub.add_parser("predict", help="classify images with an exported model folder (no project needed)")
    p.add_argument("model_dir", type=Path, help="OUT/model from 'alwb export'")
    p.add_argument("paths", nargs="+", type=Path, metavar="PATH", help="image files")
    p.add_argument("--json", action="store_true", help="machine-readable output")

    p = sub.add_parser(
        "simulate",
        help="compare strategies with an oracle on a labeled dataset",
        description="Runs the workbench's engine with an oracle that reveals a training image's "
        "label when it is queried. DATASET has train/ and test/ (or val/) in ImageFolder layout; the "
        "test split is only used to measure each round. Writes OUT/curve.csv and OUT/curve.png and "
        "resumes an interrupted run.",
    )
    p.add_argument("dataset", type=Path, help="folder with train/ and test/ (or val/)")
    p.add_argument("--strategy", default="margin,random", help="comma-separated strategies (default margin,random)")
    p.add_argument("--initial", type=int, default=100, help="random labels to start (default 100)")
    p.add_argument("--batch", type=int, default=100, help="labels per round (default 100)")
    p.add_argument(
        "--budget",
        type=int,
        default=1000,
        help="labels in all (default 1000); a larger one continues the runs an --out folder holds",
    )
    p.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (default 0,1,2)")
    p.add_argument("--pseudo-label", action="store_true", help="semi-supervised pseudo-labelling")
    p.add_argument(
        "--pseudo-cap",
        type=float,
        default=TrainConfig.pseudo_cap,
        help="pseudo-labels per class, at most this × its labels (default %(default)g)",
    )
    p.add_argument(
        "--pseudo-steps",
        type=float,
        default=TrainConfig.pseudo_steps,
        help="a pseudo-label round trains up to this × the steps of one without (default %(default)g)",
    )
    p.add_argument(
        "--pseudo-threshold",
        type=float,
        default=TrainConfig.pseudo_threshold,
        help="least top-class probability of a pseudo-label (default %(default)g)",
    )
    p.add_argument(
        "--pseudo-flat",
        action="store_true",
        help="the same pseudo-label cap for every labeled class (--pseudo-cap × their mean labels)",
    )
    p.add_argument(
        "--consistency",
        type=float,
        default=0.0,
        help="weight of a FixMatch-style consistency loss on unlabeled pool images (default 0: off)",
    )
    p.add_argument("--balance", choices=["none", "weights", "smote", "adasyn"], default="none")
    p.add_argument("--train-manifest", type=Path, help="take the pool from this CSV (path,label) instead of train/")
    p.add_argument(
        "--val-size",
        type=int,
        default=500,
        help="random validation sample labeled by the oracle (not counted in the budget; default 500)",
    )
    p.add_argument("--epochs", type=int, default=0, help="epochs per round (default: automatic)")
    p.add_argument("--augment", choices=["none", "crop", "crop+flip"], default="crop+flip")
    p.add_argument("--from-scratch", action="store_true", help="retrain from scratch every round")
    p.add_argument("--model", default="auto", help="auto (default), cnn6, smallcnn or resnet18")
    p.add_argument("--device", choices=["auto", "cpu", "cuda", "mps"], default="auto")
    p.add_argument("--out", type=Path, default=Path("data/simulation"), help="output folder")

    p = sub.add_parser(
        "demo",
        help="build a demo project from scikit-learn's digits and run it",
        description="Writes the 1,797 8x8 digits of scikit-learn as PNG files under DIR, creates a project there "
        "and starts the workbench on it. With --terminal it runs labeling rounds in the terminal instead, the "
        "digits' own labels answering as the oracle, printing the validation accuracy per round.",
    )
    p.add_argument("--dir", type=Path, default=Path("data/demo"), help="where to build it (default data/demo)")
    p.add_argument("--rounds", type=int, default=5, help="labeling rounds (default 5)")
    p.add_argument("--batch", type=int, default=60, help="labels per round (default 60)")
    p.add_argument("--strategy", choices=STRATEGY_NAMES, default="margin")
    p.add_argument("--device", choices=["auto", "cpu", "cuda", "mps"], default="auto")
    p.add_argument(
        "--terminal",
        action="store_true",
        help="no browser: run --rounds rounds in the terminal, the digits' labels answering",
    )
    p.add_argument("--port", type=int, default=8501, help="workbench port (default 8501)")
    p.add_argument("--host", default="127.0.0.1", help="workbench address (default 127.0.0.1)")
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    ap = build_parser()
    args = ap.parse_args(argv)
    logging.basicConfig(
        level=logging.ERROR if args.quiet else logging.WARNING, format="alwb: %(levelname)s: %(message)s"
    )
    try:
        return int(_dispatch(args) or 0)
    except AlwbError as exc:
        print(f"alwb: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("alwb: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug: one line, the traceback only on request
        if os.environ.get("ALWB_DEBUG"):
            raise
        print(
            f"alwb: internal error: {type(exc).__name__}: {exc} (set ALWB_DEBUG=1 for the traceback)", file=sys.stderr
        )
        return 1


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "ui":  # start fast: the workbench imports the engine itself
        from .uilaunch import launch

        return launch(args.project, port=args.port, host=args.host)
    if args.command == "train" and args.background:
        from .jobs import give_way

        give_way(args.project)()  # started by a submit: let the page draw the next batch before importing PyTorch
    from .loop import Project

    progress = not args.quiet and sys.stderr.isatty()
    cmd = args.command
    if cmd == "init":
        classes = [c for c in (args.classes or "").split(",") if c.strip()]
        with Project.create(args.project, classes=classes or None) as proj:
            if args.val_size is not None:
                proj.set_config(val_size=args.val_size)
            report = proj.add_images(args.images, classes=classes or None, unlabeled=args.unlabeled, progress=progress)
            print(report.summary())
            print(
                f"project {args.project}: {proj.store.item_count()} images, classes: "
                f"{', '.join(proj.classes) or '(none yet: use --classes or a labeled source)'}; "
                f"validation set {len(proj.store.val_item_ids())} items"
            )
        return 0
    if cmd == "add":
        with Project.open(args.project) as proj:
            print(proj.add_images(args.images, unlabeled=args.unlabeled, progress=progress).summary())
        return 0
    if cmd == "status":
        with Project.open(args.project) as proj:
            st = proj.status()
        print(json.dumps(st, indent=1) if args.json else _format_status(st))
        return 0
    if cmd == "query":
        with Project.open(args.project) as proj:
            res = proj.query(args.n, args.strategy)
        if args.json:
            print(json.dumps(res.to_dict(), indent=1))
        else:
            if res.note:
                print(f"note: {res.note}", file=sys.stderr)
            print("id\tscore\tpredicted\tprobability\treason\tpath")
            for it in res.items:
                score = "" if it.score is None else f"{it.score:.4f}"
                prob = "" if it.probability is None else f"{it.probability:.3f}"
                print(f"{it.id}\t{score}\t{it.predicted or ''}\t{prob}\t{it.reason}\t{it.path}")
        return 0
    if cmd == "label":
        with Project.open(args.project) as proj:
            batch, n = proj.label_file(args.answers, annotator=args.annotator)
            print(f"saved {n} label(s) (batch {batch}); {len(proj.store.labeled_item_ids())} items labeled")
        return 0
    if cmd == "train":
        from .jobs import TrainingBusy, give_way, training_lock, write_progress

        root = args.project
        with Project.open(root) as proj:
            changes = {
                "model": args.model,
                "augment": args.augment,
                "balance": args.balance,
                "seed": args.seed,
                "pseudo": args.pseudo_label,
            }
            if any(v is not None for v in changes.values()):
                proj.set_train_config(**changes)
            try:
                lock = training_lock(root)
                lock.__enter__()
            except TrainingBusy as exc:
                raise AlwbError(str(exc)) from None
            try:

                def prog(phase: str, done: int, total: int) -> None:
                    write_progress(root, phase=phase, done=done, total=total, pid=os.getpid())

                write_progress(root, phase="preparing", done=0, total=0, pid=os.getpid())
                try:
                    summary = proj.train(
                        from_scratch=args.from_scratch,
                        epochs=args.epochs,
                        device=args.device,
                        verbose=progress and not args.background,
                        progress=prog,
                        pause=give_way(root) if args.background else None,
                    )
                except BaseException as exc:
                    write_progress(root, phase="failed", error=f"{type(exc).__name__}: {exc}", done=0, total=0)
                    raise
                write_progress(root, phase="done", round=summary.round, done=1, total=1)
            finally:
                lock.__exit__(None, None, None)
        for note in summary.notes:
            print(f"note: {note}")
        print(
            _format_round(
                summary.round,
                summary.n_labeled,
                summary.metrics,
                summary.timings,
                extra=f"{'warm' if summary.warm else 'cold'} start, {summary.epochs} epochs on {summary.device}",
            )
        )
        return 0
    if cmd == "ui":
        from .uilaunch import launch

        return launch(args.project, port=args.port, host=args.host)
    if cmd == "export":
        from .export import export_project

        with Project.open(args.project) as proj:
            rep = export_project(proj, args.out, include_pseudo=args.include_pseudo)
        print(f"exported {rep.n_images} labeled image(s) ({rep.n_pseudo} pseudo) to {rep.dataset_dir}")
        print("model: " + (str(rep.model_dir) if rep.model_dir else "none (no trained model yet)"))
        return 0
    if cmd == "predict":
        from .export import Predictor

        results = Predictor(args.model_dir).predict_paths(args.paths)
        if args.json:
            print(json.dumps(results, indent=1))
        else:
            for r in results:
                if "error" in r:
                    print(f"{r['path']}\terror: {r['error']}")
                else:
                    print(f"{r['path']}\t{r['predicted']}\t{r['probability']:.3f}")
        return 1 if any("error" in r for r in results) else 0
    if cmd == "simulate":
        from .simulate import SimSettings, simulate

        settings = SimSettings(
            initial=args.initial,
            batch=args.batch,
            budget=args.budget,
            pseudo=args.pseudo_label,
            balance=args.balance,
            val_size=args.val_size,
            device=args.device,
            epochs=args.epochs,
            augment=args.augment,
            model=args.model,
            warm_start=not args.from_scratch,
            pseudo_cap=args.pseudo_cap,
            pseudo_steps=args.pseudo_steps,
            pseudo_threshold=args.pseudo_threshold,
            pseudo_flat=args.pseudo_flat,
            consistency=args.consistency,
        )
        try:
            seeds = [int(x) for x in args.seeds.split(",") if x.strip()]
        except ValueError:
            raise AlwbError(f"--seeds must be comma-separated integers, not {args.seeds!r}") from None
        strategies = [x.strip() for x in args.strategy.split(",") if x.strip()]
        curve = simulate(
            args.dataset,
            args.out,
            strategies=strategies,
            seeds=seeds,
            settings=settings,
            train_manifest=args.train_manifest,
        )
        print(f"wrote {curve} and {curve.with_suffix('.png')}")
        return 0
    if cmd == "demo":
        from .demo import build_demo, run_demo

        if args.terminal:
            return run_demo(
                args.dir,
                rounds=args.rounds,
                batch=args.batch,
                strategy=args.strategy,
                device=args.device,
                progress=progress,
            )
        from .uilaunch import launch

        project = build_demo(args.dir, device=args.device, progress=progress)
        print("demo project ready: label the digits in the browser (the model retrains every 50 labels).")
        return launch(project, port=args.port, host=args.host)
    raise AlwbError(f"unknown command {cmd}")  # pragma: no cover - argparse guards this


def _fmt(x: Any, spec: str = ".3f") -> str:
    return "n/a" if x is None else format(x, spec)


def _format_round(
    number: int, n_labeled: int, metrics: dict[str, Any], timings: dict[str, float], extra: str = ""
) -> str:
    val = metrics.get("val") or {}
    if val.get("n"):
        acc = (
            f"val accuracy {_fmt(val['accuracy'])} [{_fmt(val['accuracy_low'])}, {_fmt(val['accuracy_high'])}] "
            f"(n={val['n']}), macro-F1 {_fmt(val['macro_f1'])}"
        )
    else:
        acc = "val accuracy n/a (no validation labels yet)"
    t = (
        f"train {timings.get('train_seconds', 0):.1f} s, score {timings.get('score_seconds', 0):.1f} s, "
        f"round {timings.get('round_seconds', 0):.1f} s"
    )
    return f"round {number}: {n_labeled} labels, {acc}; {t}" + (f"; {extra}" if extra else "")


def _format_status(st: dict[str, Any]) -> str:
    it = st["items"]
    lines = [
        f"project {st['project']}",
        f"items: {it['total']} accepted, {it['labeled']} labeled "
        f"({', '.join(f'{k} {v}' for k, v in it['labeled_by_source'].items()) or 'none'}), "
        f"{it['unlabeled']} unlabeled, {it['rejected']} rejected",
        f"validation set: {it['validation']['labeled']} of {it['validation']['size']} labeled; "
        f"pseudo-labels: {it['pseudo']}",
    ]
    for reason, n in it["rejected_reasons"].items():
        lines.append(f"  rejected {n}: {reason}")
    lines.append("labels per class:")
    for c, by in st["classes"].items():
        lines.append(f"  {c}: {sum(by.values())} ({', '.join(f'{k} {v}' for k, v in by.items()) or '-'})")
    lines.append(f"rounds: {len(st['rounds'])}")
    for r in st["rounds"]:
        if r["status"] == "done":
            lines.append("  " + _format_round(r["number"], r["n_labeled"], r["metrics"], r["timings"]))
        else:
            lines.append(f"  round {r['number']}: {r['status']}" + (f" ({r['error']})" if r["error"] else ""))
    m = st["model"]
    lines.append(
        "model: "
        + (
            "none yet"
            if m is None
            else f"round {m['round']}, {m['arch']} {m['geometry']['channels']}x"
            f"{m['geometry']['image_size']}px, {m['path']}"
        )
    )
    return "\n".join(lines)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
