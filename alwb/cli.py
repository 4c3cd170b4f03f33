"""Command line: a table of subcommands over :mod:`alwb.project`, :mod:`alwb.simulate`, :mod:`alwb.io.export` and the
team modules; each parses, calls the library and prints (the library decides, the command only words it).

Each subcommand is one ``_cmd_*`` function registered in :func:`build_parser` with ``set_defaults(func=...)``;
options several commands share come from the ``parents=`` parsers below, choices from :mod:`alwb.config`. The
engine (PyTorch) is imported inside the command functions, so ``--help`` and ``alwb ui`` start fast.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import os
import sys
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from . import __version__
from .config import (
    AUGMENTATIONS,
    BALANCE,
    DEVICES,
    LEGACY_MODELS,
    MODEL_NAMES,
    MODES,
    STRATEGY_NAMES,
    ProjectConfig,
    TrainConfig,
)
from .errors import AlwbError
from .io.report import format_round, format_status, query_status, training_status
from .redaction import redact, redact_logging
from .uilaunch import DEFAULT_HOST, DEFAULT_PORT

#: alwb.team.users.ROLES, written again so that ``alwb --help`` does not load argon2 (a test keeps them equal)
ROLES = ("annotator", "reviewer", "admin")


class _Choices(tuple):
    """Choices argparse offers (usage, help, error messages) that also accept some names it does not offer."""

    def __new__(cls, offered: Iterable[str], also: Iterable[str] = ()) -> _Choices:
        self = super().__new__(cls, offered)
        self.also = tuple(also)
        return self

    def __contains__(self, value: object) -> bool:
        return tuple.__contains__(self, value) or value in self.also


MODELS = _Choices(MODEL_NAMES, also=LEGACY_MODELS)


class _BackboneChoices:
    """:func:`alwb.learning.backbones.backbone_names`, read only when argparse checks or lists a value (that module
    loads
    NumPy, which ``alwb --help`` and ``alwb ui`` need not wait for); options using it name a ``metavar``."""

    @staticmethod
    def _names() -> list[str]:
        from .learning.backbones import backbone_names

        return backbone_names()

    def __init__(self, *extra: str) -> None:
        self.extra = extra

    def __iter__(self) -> Iterator[str]:
        return iter([*self.extra, *self._names()])

    def __contains__(self, value: object) -> bool:
        from .learning.pretrain import POOL_BACKBONE  # a project's own backbone, registered when its project is opened

        return value == POOL_BACKBONE or value in self.extra or value in self._names()

    def __len__(self) -> int:
        return len(self.extra) + len(self._names())


BACKBONES = _BackboneChoices()
#: the backbone setting: a name, or ``auto`` (the best one on this machine, :func:`alwb.learning.plan.choose_backbone`)
BACKBONE_SETTINGS = _BackboneChoices("auto")


# ---------------------------------------------------------------------- option groups shared through parents=
def _parent() -> argparse.ArgumentParser:
    return argparse.ArgumentParser(add_help=False)


def _project_options() -> argparse.ArgumentParser:
    p = _parent()
    p.add_argument("project", type=Path, help="project folder (holds alwb.sqlite)")
    return p


def _json_options() -> argparse.ArgumentParser:
    p = _parent()
    p.add_argument("--json", action="store_true", help="machine-readable output")
    return p


def _device_options(default: str | None, note: str) -> argparse.ArgumentParser:
    p = _parent()
    p.add_argument(
        "--device", choices=DEVICES, default=default, help=f"where to train ({note}; auto: CUDA > MPS > CPU)"
    )
    return p


def _images_options() -> argparse.ArgumentParser:
    p = _parent()
    p.add_argument("--images", required=True, type=Path, metavar="SRC", help="folder or CSV manifest")
    return p


def _server_options() -> argparse.ArgumentParser:
    p = _parent()
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help="workbench port (default %(default)s)")
    p.add_argument(
        "--host",
        default=DEFAULT_HOST,
        help="address to listen on (default %(default)s, this machine only; 0.0.0.0 opens it to the network)",
    )
    p.add_argument(
        "--no-auth",
        action="store_true",
        help="serve a project without users on a non-local --host anyway (anyone who reaches it may label)",
    )
    p.add_argument(
        "--allowed-host",
        action="append",
        default=[],
        metavar="NAME",
        help="a host name (or address) browsers may use to reach the workbench; repeat for more (default: the "
        "--host address, and this machine's names and addresses for 0.0.0.0); other Host headers are refused",
    )
    p.add_argument(
        "--import-dir",
        action="append",
        default=[],
        type=Path,
        metavar="DIR",
        help="a folder a served project may import images from by path (repeat for more; default: uploads only)",
    )
    p.add_argument("--metrics", action="store_true", help="serve Streamlit's /_stcore/metrics (off by default)")
    return p


def _default_text(defaults: str, field: str) -> str:
    """``defaults`` ``project``: the project's setting applies; anything else: :class:`TrainConfig`'s default."""
    if defaults == "project":
        return "default: the project's setting"
    value = getattr(TrainConfig, field)
    if isinstance(value, bool):
        return f"default {'on' if value else 'off'}"
    return f"default {value if value else 'automatic'}"


def _mode_options(defaults: str) -> argparse.ArgumentParser:
    """How rounds train (``init``, ``train``, ``simulate``); defaults None: ``defaults`` says what applies then."""
    p = _parent()
    p.add_argument(
        "--mode",
        choices=MODES,
        help="head: a classifier on a pretrained backbone's cached embeddings; finetune: the whole backbone; "
        "scratch: a model trained on the project's images alone (the small CNN; --model resnet18 starts from its "
        "verified ImageNet weights when they are here); auto: head (CPU) or finetune (GPU) for photos larger than "
        "64 px with the backbone's weights on this machine, head for small colour images, else scratch "
        f"({_default_text(defaults, 'mode')})",
    )
    p.add_argument(
        "--backbone",
        choices=BACKBONE_SETTINGS,
        metavar="NAME",
        help="pretrained backbone of head and finetune rounds: 'alwb weights list' shows them all and which are "
        f"on this machine ({_default_text(defaults, 'backbone')})",
    )
    return p


def _training_options(defaults: str) -> argparse.ArgumentParser:
    """What ``train`` and ``simulate`` share; every default is None: ``defaults`` says what applies then."""

    def dflt(field: str) -> str:
        return _default_text(defaults, field)

    p = argparse.ArgumentParser(add_help=False, parents=[_mode_options(defaults)])
    p.add_argument(
        "--model",
        choices=MODELS,
        help=f"the from-scratch model: auto (cnn6), cnn6, resnet18 ({dflt('model')})",
    )
    p.add_argument(
        "--epochs", type=int, help=f"epochs per round, 0 to choose from the number of labels ({dflt('epochs')})"
    )
    p.add_argument("--augment", choices=AUGMENTATIONS, help=f"training augmentation ({dflt('augment')})")
    p.add_argument(
        "--balance",
        choices=BALANCE,
        help=f"imbalance: class-weighted loss, or SMOTE / ADASYN on the embeddings to fit the head ({dflt('balance')})",
    )
    p.add_argument(
        "--pseudo-label",
        action=argparse.BooleanOptionalAction,
        default=None,
        help=f"add confident unlabeled items to training as pseudo-labels, chosen anew each round ({dflt('pseudo')})",
    )
    p.add_argument(
        "--from-scratch",
        action="store_true",
        default=None,
        help="do not warm-start from the last model" + ("" if defaults == "project" else " (every round)"),
    )
    return p


def _progress(args: argparse.Namespace) -> bool:
    return not args.quiet and sys.stderr.isatty()


# ---------------------------------------------------------------------- the commands
def _cmd_init(args: argparse.Namespace) -> int:
    from .intake.ingest import parse_class_list
    from .project import Project

    classes = parse_class_list(args.classes or "")  # an empty or repeated name is refused, not dropped
    root: Path | None = args.image_root
    if root is not None:
        root = root.expanduser().resolve()
        if not root.is_dir():
            raise AlwbError(f"image root {root} is not a folder")
    else:  # the folder imported (a manifest's folder): its files are stored relative to it
        from .intake.ingest import default_image_root

        root = default_image_root(args.images)
    with Project.create(args.project, classes=classes or None, store_url=args.store) as proj:
        if root is not None:
            proj.store.set_image_root(root)
        if args.val_size is not None:
            proj.set_config(val_size=args.val_size)
        if args.mode is not None or args.backbone is not None:
            proj.set_train_config(mode=args.mode, backbone=args.backbone)
        report = proj.add_images(
            args.images, classes=classes or None, unlabeled=args.unlabeled, progress=_progress(args)
        )
        print(report.summary())
        print(
            f"project {args.project}: {proj.store.item_count()} images, classes: "
            f"{', '.join(proj.classes) or '(none yet: use --classes or a labeled source)'}; "
            f"validation set {len(proj.store.val_item_ids())} items"
        )
    return 0


def _cmd_add(args: argparse.Namespace) -> int:
    from .project import Project

    with Project.open(args.project) as proj:
        if args.labelstudio is not None:  # a Label Studio export: its images are looked up under --images
            from .io.labelstudio import import_labelstudio

            rep = import_labelstudio(
                proj,
                args.labelstudio,
                args.images,
                from_name=args.from_name,
                progress=_progress(args),
                labels=not args.unlabeled,
            )
            print(rep.summary())
            return 0
        print(proj.add_images(args.images, unlabeled=args.unlabeled, progress=_progress(args)).summary())
    return 0


def _cmd_status(args: argparse.Namespace) -> int:
    from .learning.advice import project_advice
    from .project import Project

    with Project.open(args.project) as proj:
        st = proj.status()
        st["training"] = training_status(proj)
        st["query"] = query_status(proj)
        st["advice"] = project_advice(proj, target=args.target)
    print(json.dumps(st, indent=1) if args.json else format_status(st))
    return 0


def _cmd_query(args: argparse.Namespace) -> int:
    from .project import Project

    with Project.open(args.project) as proj:
        res = proj.query(args.n, args.strategy)
        images = proj.store.image_root()
    # paths of the files on this machine (the store may hold them relative to the image root: 'stored_path')
    stored = {it.id: it.path for it in res.items}
    res.items = [dataclasses.replace(it, path=str(images.locate(it.path))) for it in res.items]
    if args.json:
        out = res.to_dict()
        for d in out["items"]:
            d["stored_path"] = stored[d["id"]]
        print(json.dumps(out, indent=1))
        return 0
    if res.note:
        print(f"note: {res.note}", file=sys.stderr)
    print("id\tscore\tpredicted\tprobability\treason\tpath")
    for it in res.items:
        score = "" if it.score is None else f"{it.score:.4f}"
        prob = "" if it.probability is None else f"{it.probability:.3f}"
        print(f"{it.id}\t{score}\t{it.predicted or ''}\t{prob}\t{it.reason}\t{it.path}")
    return 0


def _cmd_issues(args: argparse.Namespace) -> int:
    from .insight.report import current_findings, format_issues, issues_json
    from .project import Project

    if args.background:  # the workbench's background job (alwb.insight.jobs)
        from .insight.jobs import run_job

        return run_job(args.project)
    with Project.open(args.project) as proj:
        found = current_findings(proj, refresh=args.refresh, quiet=args.quiet)
        if args.json:
            print(json.dumps(issues_json(proj, found, limit=args.n), indent=1))
        else:
            print(format_issues(proj, found, limit=args.n or 20))
    return 0


def _cmd_similar(args: argparse.Namespace) -> int:
    from .insight import similar
    from .insight.report import current_findings
    from .project import Project

    with Project.open(args.project) as proj:
        row = proj.store.item_by_path(str(args.path))
        if row is None and not Path(str(args.path)).is_absolute():
            row = proj.store.item_by_path(str(Path(args.path).resolve()))
        if row is None or row["status"] != "ok":
            raise AlwbError(f"no image {args.path} in the project (give a path as 'alwb query' prints it)")
        try:
            near = similar(proj, int(row["id"]), args.k)
        except LookupError:
            current_findings(proj, quiet=args.quiet)  # embeds what is missing (where the rounds do not)
            try:
                near = similar(proj, int(row["id"]), args.k)
            except LookupError as exc:
                raise AlwbError(str(exc)) from exc
        images = proj.store.image_root()
    for d in near:
        d["path"] = str(images.locate(d["path"]))
    if args.json:
        print(json.dumps([{k: d[k] for k in ("path", "distance", "label")} for d in near], indent=1))
        return 0
    print("distance\tlabel\tpath")
    for d in near:
        print(f"{d['distance']:.4f}\t{d['label'] or ''}\t{d['path']}")
    return 0


def _cmd_label(args: argparse.Namespace) -> int:
    from .project import Project

    with Project.open(args.project) as proj:
        batch, n = proj.label_file(args.answers, annotator=args.annotator)
        print(f"saved {n} label(s) (batch {batch}); {len(proj.store.labeled_item_ids())} items labeled")
    return 0


def _wait_until_due(root: str, idle_exit: float) -> bool:
    """A first round started early (``alwb train --when-due``): import what a round needs now, then wait for the
    submit that makes it due (:func:`alwb.jobs.wait_for_round`); False when nobody labeled meanwhile."""
    from .jobs import wait_for_round
    from .project import Project  # PyTorch, scikit-learn and modAL: the seconds the first round no longer waits for

    def due() -> bool:
        try:
            with Project.open(root) as proj:
                return proj.round_due()
        except AlwbError:
            return False

    return wait_for_round(root, due, idle_exit=idle_exit)


def _cmd_train(args: argparse.Namespace) -> int:
    from .jobs import GIVE_WAY_SHARE, TrainingBusy, give_way, local_runner, training_lock, wake_waiting

    root = args.project
    if args.background and args.when_due:
        if not _wait_until_due(root, args.idle_exit):
            return 0  # nobody labels: the lock goes with this process, and no page calls it waiting any more
    elif args.background:
        give_way(root)()  # started by a submit: let the page draw the next batch before importing PyTorch
    from .progress import ProgressReporter
    from .project import Project

    progress = _progress(args)
    with Project.open(root) as proj:
        changes = {
            "mode": args.mode,
            "backbone": args.backbone,
            "model": args.model,
            "augment": args.augment,
            "balance": args.balance,
            "seed": args.seed,
            "pseudo": args.pseudo_label,
        }
        if any(v is not None for v in changes.values()):
            proj.set_train_config(**changes)
        if args.queue:
            from .team.worker import live_workers, request_round

            rid = request_round(
                proj.store, from_scratch=bool(args.from_scratch) or None, epochs=args.epochs, device=args.device
            )
            workers = len(live_workers(proj.store))
            print(
                f"queued round request {rid}; "
                + (f"{workers} worker(s) running" if workers else "no worker is running: start 'alwb worker PROJECT'")
            )
            return 0
        try:
            lock = training_lock(root)
            lock.__enter__()
        except TrainingBusy as exc:
            if wake_waiting(root, proj.store):  # the workbench's first round, started early, was waiting: it trains now
                print(f"the first round waiting in the background for {root} trains now ('alwb status' follows it)")
                return 0
            raise AlwbError(str(exc)) from None
        reporter = ProgressReporter(proj.store.url or proj.store.path, local_runner(root))
        reporter.start()
        try:
            reporter.report("preparing", 0, 0)
            try:
                summary = proj.train(
                    from_scratch=bool(args.from_scratch),
                    epochs=args.epochs,
                    device=args.device,
                    verbose=progress and not args.background,
                    progress=reporter.report,
                    # the first round gives way only after submits: the person waits for its ranked batch
                    pause=give_way(root, share=0.0 if args.first else GIVE_WAY_SHARE) if args.background else None,
                )
            except BaseException:
                reporter.report("failed", 0, 0)  # the round recorded itself failed, with its error
                raise
            reporter.report("done", 1, 1)
        finally:
            reporter.stop()
            reporter.join(timeout=10)
            lock.__exit__(None, None, None)
    print(
        format_round(
            summary.round,
            summary.n_labeled,
            summary.metrics,
            summary.timings,
            extra=f"{'warm' if summary.warm else 'cold'} start, {summary.epochs} epochs on {summary.device}",
        )
    )
    for note in summary.notes:  # after the round line, which scripts read first
        print(f"note: {note}")
    return 0


def _cmd_worker(args: argparse.Namespace) -> int:
    from .team.worker import run_worker

    def show(kind: str, req: dict) -> None:
        if kind == "claimed":
            print(f"request {req['id']}: training round {req['round']}", flush=True)
        elif kind == "finished":
            state = "done" if req.get("status") == "done" else f"failed: {req.get('error')}"
            print(f"request {req.get('id')}: round {req.get('round')} {state}", flush=True)
        elif kind == "reaped":
            print(f"request {req['id']}: failed: {req['error']}", flush=True)
        elif kind == "unavailable":
            print(f"{req['error']}; retrying", flush=True)
        elif kind == "back":
            print("the store is back", flush=True)

    from .errors import StoreUnavailable
    from .project import Project

    with contextlib.suppress(StoreUnavailable), Project.open(args.project) as proj:  # run_worker waits for a store
        # where this machine reads the images (ALWB_IMAGE_ROOT maps them)
        print(f"worker for {args.project}: {proj.store.image_root().describe()}", flush=True)
    try:
        n = run_worker(args.project, device=args.device, once=args.once, poll=args.poll, on_event=show)
    except KeyboardInterrupt:
        print("worker stopped", file=sys.stderr)
        return 0
    print(f"worker stopped after {n} request(s)")
    return 0


def _cmd_ui(args: argparse.Namespace) -> int:
    from .uilaunch import launch  # start fast: the workbench imports the engine itself

    return launch(args.project, port=args.port, host=args.host, no_auth=args.no_auth, **_serving(args))


def _serving(args: argparse.Namespace) -> dict[str, Any]:
    """The hardening options of ``alwb ui`` / ``alwb demo`` for :func:`alwb.uilaunch.launch`."""
    return {"allowed_hosts": args.allowed_host, "import_dirs": args.import_dir, "metrics": args.metrics}


def _cmd_export(args: argparse.Namespace) -> int:
    from .io.export import export_project
    from .project import Project

    with Project.open(args.project) as proj:
        rep = export_project(
            proj, args.out, include_pseudo=args.include_pseudo, onnx=not args.no_onnx, image_prefix=args.image_prefix
        )
    print(f"exported {rep.n_images} labeled image(s) ({rep.n_pseudo} pseudo) to {rep.dataset_dir}")
    if rep.labelstudio is not None:
        print(f"Label Studio tasks: {rep.labelstudio} (labeling configuration {rep.labelstudio.with_suffix('.xml')})")
    for path, reason in rep.changed:
        print(f"not exported: {path}: {reason}", file=sys.stderr)
    print("model: " + (str(rep.model_dir) if rep.model_dir else "none (no trained model yet)"))
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    from .io.onnxpredict import has_onnx, onnxruntime_available

    runtime = args.runtime
    if runtime == "auto":
        runtime = "onnx" if has_onnx(args.model_dir) and onnxruntime_available() else "torch"
    if runtime == "onnx":  # onnxruntime alone: PyTorch is never imported
        from .io.onnxpredict import OnnxPredictor

        results = OnnxPredictor(args.model_dir).predict_paths(args.paths)
    else:
        from .io.export import Predictor

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


def sim_train_config(args: argparse.Namespace) -> TrainConfig:
    """The simulator's :class:`TrainConfig`: its defaults (the product's), with only the options given changed."""
    given = {
        "mode": args.mode,
        "backbone": args.backbone,
        "model": args.model,
        "epochs": args.epochs,
        "augment": args.augment,
        "balance": args.balance,
        "device": args.device,
        "pseudo": args.pseudo_label,
        "pseudo_cap": args.pseudo_cap,
        "pseudo_steps": args.pseudo_steps,
        "pseudo_threshold": args.pseudo_threshold,
        "warm_start": False if args.from_scratch else None,
    }
    return TrainConfig(**{k: v for k, v in given.items() if v is not None})


def _cmd_simulate(args: argparse.Namespace) -> int:
    from .simulate import SimSettings, simulate

    own = {
        "initial": args.initial,
        "batch": args.batch,
        "budget": args.budget,
        "val_size": args.val_size,
        "pretrain_minutes": args.pretrain,
    }
    settings = SimSettings(**{k: v for k, v in own.items() if v is not None}, train=sim_train_config(args))
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


def _cmd_pretrain(args: argparse.Namespace) -> int:
    import signal
    import threading

    from tqdm import tqdm

    from .learning.pretrain import POOL_BACKBONE, PretrainSettings, pretrain
    from .project import Project

    settings = PretrainSettings(
        minutes=args.minutes, steps=args.steps, batch_size=args.batch_size, width=args.width, seed=args.seed
    )
    with Project.open(args.project) as proj:
        bar = tqdm(total=0, unit="step", disable=not sys.stderr.isatty(), desc="pretraining")

        def progress(step: int, total: int, loss: float) -> None:
            if total and bar.total != total:
                bar.total = total
            bar.n = step
            bar.set_postfix(loss=f"{loss:.3f}", refresh=False)
            bar.refresh()

        stopping = threading.Event()  # SIGTERM (the workbench's Stop) stops at the next step, with a checkpoint
        old = signal.signal(signal.SIGTERM, lambda _signum, _frame: stopping.set())
        try:
            rep = pretrain(
                proj, settings, device=args.device, restart=args.restart, progress=progress, stop=stopping.is_set
            )
        finally:
            signal.signal(signal.SIGTERM, old)
        bar.close()
        print(rep.summary())
        if not rep.finished:
            print("run the same command again to resume from the checkpoint")
            return 1
        print(f"backbone {POOL_BACKBONE}: {rep.file} (SHA-256 {rep.sha256})")
        if args.use:
            proj.set_train_config(mode=args.use, backbone=POOL_BACKBONE)
            print(f"the project's next rounds train in {args.use} mode on {POOL_BACKBONE}")
        else:
            print(f"use it with: alwb train {args.project} --mode finetune --backbone {POOL_BACKBONE} (or --mode head)")
    return 0


def _cmd_root(args: argparse.Namespace) -> int:
    from .intake.imageroot import in_project
    from .project import Project

    with Project.open(args.project) as proj:
        if args.action == "set":
            if args.dir is None:
                raise AlwbError("say which folder: alwb root PROJECT set DIR")
            folder = Path(args.dir).expanduser().resolve()
            if not folder.is_dir():
                raise AlwbError(f"{folder} is not a folder on this machine")
            ch = proj.store.set_image_root(folder)
            print(
                f"image root {ch.old or '(none)'} -> {ch.new}: {ch.changed} stored path(s) rewritten; "
                f"{ch.relative} relative to the root, {ch.absolute} absolute (outside it: every machine must see "
                "those at the same path)"
                + (f", {ch.in_project} in the project folder (uploads)" if ch.in_project else "")
            )
        images = proj.store.image_root()
        paths = proj.store.stored_paths()
        n_abs = sum(1 for p in paths if Path(p).is_absolute())
        n_proj = sum(1 for p in paths if in_project(p))
        print(images.describe())
        uploads = f", {n_proj} in the project folder (uploads)" if n_proj else ""
        print(f"items: {len(paths) - n_abs - n_proj} relative to the root, {n_abs} absolute{uploads}")
        step = max(1, len(paths) // 200)
        sample = paths[::step]
        gone = [p for p in sample if not images.locate(p).exists()]
        print(
            f"checked {len(sample)} of {len(paths)} image(s) on this machine: "
            + ("all found" if not gone else f"{len(gone)} missing, e.g. {images.missing_message(gone[0])}")
        )
    return 1 if gone else 0


def _cmd_store(args: argparse.Namespace) -> int:
    from .store.copy import move_project_store

    # one action so far: copy
    print(move_project_store(args.project, args.url).summary())
    print(f"project {args.project} now uses that store (the SQLite file is kept as alwb.sqlite.moved)")
    return 0


def _read_password(args: argparse.Namespace) -> str:
    """The new password: one line from stdin with --password-stdin, else asked twice on the terminal."""
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    import getpass

    first = getpass.getpass(f"password for {args.name}: ")
    if getpass.getpass("again: ") != first:
        raise AlwbError("the two passwords differ")
    return first


def _cmd_users(args: argparse.Namespace) -> int:
    from .project import Project
    from .team import users

    with Project.open(args.project) as proj:
        store = proj.store
        if args.users_command == "add":
            u = users.add_user(store, args.name, _read_password(args), args.role)
            print(f"added {u.role} {u.name}")
        elif args.users_command == "passwd":
            users.get_user(store, args.name)  # an unknown name fails before the password is asked
            users.set_password(store, args.name, _read_password(args))
            print(f"password of {args.name} changed; their sessions ended")
        elif args.users_command == "role":
            before = users.get_user(store, args.name).role
            u = users.set_role(store, args.name, args.role)
            print(f"{u.name}: {u.role}" + ("; their sessions ended" if u.role != before else " already"))
        elif args.users_command in ("disable", "enable"):
            u = users.set_disabled(store, args.name, args.users_command == "disable")
            print(f"{u.name} {'disabled; their sessions ended' if u.disabled else 'enabled'}")
        else:
            rows = users.list_users(store)
            failed = {u.name: users.failures_against(store, u.name) for u in rows}
            if args.json:
                print(
                    json.dumps(
                        [
                            {"name": u.name, "role": u.role, "disabled": u.disabled, "failed_signins": failed[u.name]}
                            for u in rows
                        ],
                        indent=2,
                    )
                )
            elif not rows:
                print("no users: the workbench asks nobody to sign in (this machine only, see 'alwb ui --help')")
            else:
                for u in rows:
                    notice = [f"{failed[u.name]} failed sign-in(s) in the last 15 min"] if failed[u.name] else []
                    print("\t".join([u.name, u.role] + (["disabled"] if u.disabled else []) + notice))
                if all(u.disabled for u in rows):
                    print("every account is disabled: the workbench still asks for a sign-in, and nobody can sign in")
    return 0


def _cmd_weights(args: argparse.Namespace) -> int:
    from .learning import backbones

    action = args.weights_command
    if action == "list":
        if args.json:
            print(json.dumps([dataclasses.asdict(r) for r in backbones.list_backbones()], indent=1))
        else:
            print(backbones.format_list())
        return 0
    if action == "wheel":
        whl = backbones.build_wheel(
            args.name, args.file, base=args.base, sha256=args.sha256, version=args.version, out=args.out
        )
        dist = "alwb-weights-" + args.name.replace("_", "-")
        print(
            f"backbone {args.name}: wheel {whl} (the weights file, its SHA-256 {backbones.sha256_file(args.file)} "
            f"pinned, and an alwb.backbones entry point); upload it to your package index, then `pip install {dist}` "
            f"gives any machine the backbone"
        )
        return 0
    spec = backbones.get_spec(args.name)
    if action == "fetch":
        had = backbones.weights_dir() / spec.file_name
        before = had.is_file()
        origin = backbones.fetch(args.name, quiet=args.quiet)
        how = "already on this machine, verified" if before and Path(origin.file) == had else "downloaded, verified"
        print(f"backbone {args.name}: published weights {how} (SHA-256 {origin.sha256}): {origin.file}")
        if any(r.name == args.name and r.kind == "custom" for r in backbones.list_backbones()):
            print(f"note: a custom file is still used for {args.name} ('alwb weights remove {args.name}' stops that)")
        return 0
    if action == "add":
        origin = backbones.add(args.name, args.file)
        if origin.kind == "custom":
            print(
                f"backbone {args.name}: accepted as a custom file (SHA-256 {origin.sha256}, not the published "
                f"{spec.sha256}): {origin.file}; used for {args.name} from now on "
                f"('alwb weights remove {args.name}' goes back to the published file)"
            )
        else:
            print(f"backbone {args.name}: accepted as the published file (SHA-256 {origin.sha256}): {origin.file}")
        return 0
    # remove
    if not backbones.remove_custom(args.name):
        raise AlwbError(f"backbone {args.name} has no custom file to remove (see 'alwb weights list')")
    print(
        f"backbone {args.name}: custom file forgotten (the file stays on disk); "
        + (
            "the published file is used"
            if backbones.weights_available(args.name)
            else f"no published file here yet ('alwb weights fetch {args.name}')"
        )
    )
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import build_demo, run_demo
    from .project import Project

    progress = _progress(args)
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
    with Project.open(project) as proj:
        every = proj.config.retrain_every
    print(f"demo project ready: label the digits in the browser (the model retrains every {every} labels).")
    return launch(project, port=args.port, host=args.host, no_auth=args.no_auth, **_serving(args))


# ---------------------------------------------------------------------- the table
def build_parser() -> argparse.ArgumentParser:
    """The ``alwb`` argument parser: every subcommand and the function that runs it (``args.func``)."""
    ap = argparse.ArgumentParser(
        prog="alwb",
        description="Active-learning labeling workbench for images: label the images a CNN is least sure about.",
        epilog="Run 'alwb COMMAND --help' for a command's options.",
    )
    ap.add_argument("--version", action="version", version=f"alwb {__version__}")
    ap.add_argument("-q", "--quiet", action="store_true", help="no progress bars or warnings")
    sub = ap.add_subparsers(dest="command", metavar="COMMAND", required=True)
    project, as_json, images = _project_options(), _json_options(), _images_options()

    _add_data_commands(sub, project, as_json, images)
    _add_training_commands(sub, project, as_json)
    _add_research_commands(sub)
    _add_admin_commands(sub, project, as_json)
    return ap


def _add_data_commands(
    sub: Any, project: argparse.ArgumentParser, as_json: argparse.ArgumentParser, images: argparse.ArgumentParser
) -> None:
    """Commands on a project's images and labels: init, add, status, query, issues, similar, label."""
    p = sub.add_parser(
        "init",
        parents=[project, images, _mode_options("new")],
        help="create a project from a folder or CSV manifest of images",
        description="Create PROJECT with its SQLite store and import SRC: an ImageFolder tree "
        "(class subfolders become labels with source 'import'), a flat folder (all unlabeled), "
        "or a CSV manifest with a 'path' column (relative to the CSV) and an optional 'label'.",
    )
    p.add_argument("--classes", help="comma-separated class names, in model order")
    p.add_argument("--unlabeled", action="store_true", help="ignore labels in SRC (subfolders, label column)")
    p.add_argument("--val-size", type=int, help="validation set size (default: 10%% of items, 10 to 200)")
    p.add_argument(
        "--store",
        metavar="URL",
        help="keep the store in this empty PostgreSQL database (postgresql://...; default $ALWB_STORE_URL, "
        "else PROJECT/alwb.sqlite)",
    )
    p.add_argument(
        "--image-root",
        type=Path,
        metavar="DIR",
        help="the project's image root: paths under it are stored relative to it, so that each machine can map it "
        "(ALWB_IMAGE_ROOT); default: the folder imported (a manifest's folder)",
    )
    p.set_defaults(func=_cmd_init)

    p = sub.add_parser(
        "add", parents=[project, images], help="import more images; the same content is never added twice"
    )
    p.add_argument("--unlabeled", action="store_true", help="ignore labels in SRC")
    p.add_argument(
        "--labelstudio",
        type=Path,
        metavar="FILE",
        help="a Label Studio JSON export: its tasks' images are found by file name under --images (a folder), its "
        "annotations recorded with their annotators and times; disagreements go to Review",
    )
    p.add_argument(
        "--from-name", metavar="NAME", help="with --labelstudio: the Choices tag that holds the class (when several)"
    )
    p.set_defaults(func=_cmd_add)

    p = sub.add_parser(
        "status", parents=[project, as_json], help="items, labels per class, rounds and the current model"
    )
    p.add_argument(
        "--target",
        type=float,
        help="a validation accuracy (0-1): how many labels the fitted learning curve needs to reach it",
    )
    p.set_defaults(func=_cmd_status)

    p = sub.add_parser(
        "query", parents=[project, as_json], help="the N items to label next, most informative first (read-only)"
    )
    p.add_argument("-n", type=int, default=None, help="how many items (default: the project's batch size)")
    p.add_argument(
        "--strategy",
        choices=STRATEGY_NAMES,
        default=None,
        help=f"query strategy (default: the project's, {ProjectConfig.strategy})",
    )
    p.set_defaults(func=_cmd_query)

    p = sub.add_parser(
        "issues",
        parents=[project, as_json],
        help="likely label errors, near-duplicate groups, outliers and validation leakage (from the embeddings)",
        description="Likely wrong labels (out-of-sample probabilities of K-fold heads on the cached embeddings, "
        "ranked by cleanlab), near-duplicate groups, outliers and how many validation items have a near-copy in "
        "training, with the accuracy without them. Saved findings are reused while the embeddings, labels and "
        "round are unchanged; otherwise they are computed now (embedding the images first where the training "
        "rounds do not). --json keys: label_issues, near_duplicates, outliers, leakage.",
    )
    p.add_argument("-n", type=int, default=None, help="list at most N likely label errors (default: 20; --json: all)")
    p.add_argument("--refresh", action="store_true", help="compute again even when the saved findings hold")
    p.add_argument("--background", action="store_true", help=argparse.SUPPRESS)
    p.set_defaults(func=_cmd_issues)

    p = sub.add_parser(
        "similar", parents=[project, as_json], help="the K images nearest to an image (on the embeddings)"
    )
    p.add_argument("path", metavar="PATH", help="an image of the project, as 'alwb query' prints it")
    p.add_argument("-k", type=int, default=8, help="how many neighbours (default 8)")
    p.set_defaults(func=_cmd_similar)

    p = sub.add_parser(
        "label",
        parents=[project],
        help="save answers from a CSV (columns id or path, and label) in one transaction",
        description="Columns: 'id' or 'path' (absolute, or relative to the CSV or the current "
        "folder) and 'label' (a class name, or <none> for 'none of these classes'). The file is "
        "one transaction: any bad line is reported with its number and nothing is written.",
    )
    p.add_argument("answers", type=Path, help="answers CSV")
    p.add_argument("--annotator", default=os.environ.get("USER"), help="who labeled (default: $USER)")
    p.set_defaults(func=_cmd_label)


def _add_training_commands(sub: Any, project: argparse.ArgumentParser, as_json: argparse.ArgumentParser) -> None:
    """Commands that train a project's rounds, serve it and use its model: train, worker, ui, export, predict."""
    p = sub.add_parser(
        "train",
        parents=[project, _training_options("project"), _device_options(None, "default: the project's setting")],
        help="one round: train, score every item, record the round",
    )
    p.add_argument("--seed", type=int, help="random seed")
    p.add_argument("--background", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--first", action="store_true", help=argparse.SUPPRESS)  # the project's first round (jobs.py)
    p.add_argument("--when-due", action="store_true", help=argparse.SUPPRESS)  # started early: wait (jobs.py)
    p.add_argument("--idle-exit", type=float, default=300.0, help=argparse.SUPPRESS)
    p.add_argument(
        "--queue", action="store_true", help="do not train here: queue the round for 'alwb worker' (any machine)"
    )
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser(
        "worker",
        parents=[project, _device_options(None, "default: the request's, else the project's setting")],
        help="train the rounds queued in the project's store (alwb train --queue, the workbench), until stopped",
    )
    p.add_argument("--once", action="store_true", help="run one request (or none if the queue is empty) and stop")
    p.add_argument("--poll", type=float, default=2.0, help="seconds between looks at an empty queue (default 2)")
    p.set_defaults(func=_cmd_worker)

    p = sub.add_parser(
        "ui",
        parents=[_server_options()],
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
    p.set_defaults(func=_cmd_ui)

    p = sub.add_parser("export", parents=[project], help="write the labeled dataset and the trained model to OUT")
    p.add_argument("out", type=Path, help="output folder")
    p.add_argument("--include-pseudo", action="store_true", help="also export pseudo-labels (marked as such)")
    p.add_argument(
        "--no-onnx",
        action="store_true",
        help="leave out model/model.onnx (written by default, once ONNX Runtime matches PyTorch on the images)",
    )
    p.add_argument(
        "--image-prefix",
        default="/data/local-files/?d=",
        metavar="PREFIX",
        help="labelstudio.json names each image as PREFIX + its path under the image root (default %(default)s: "
        "Label Studio's local files, with LOCAL_FILES_DOCUMENT_ROOT at the image root)",
    )
    p.set_defaults(func=_cmd_export)

    p = sub.add_parser(
        "predict", parents=[as_json], help="classify images with an exported model folder (no project needed)"
    )
    p.add_argument("model_dir", type=Path, help="OUT/model from 'alwb export'")
    p.add_argument("paths", nargs="+", type=Path, metavar="PATH", help="image files")
    p.add_argument(
        "--runtime",
        choices=("auto", "onnx", "torch"),
        default="auto",
        help="onnx: model.onnx through onnxruntime (no PyTorch needed); torch: the PyTorch weights; auto (default): "
        "onnx when the folder has model.onnx and onnxruntime is installed",
    )
    p.set_defaults(func=_cmd_predict)


def _add_research_commands(sub: Any) -> None:
    """Commands for trying alwb out and learning features: simulate, pretrain, demo."""
    p = sub.add_parser(
        "simulate",
        parents=[_training_options("simulator"), _device_options(None, f"default {TrainConfig.device}")],
        help="compare strategies with an oracle on a labeled dataset",
        description="Runs the workbench's engine with an oracle that reveals a training image's "
        "label when it is queried. DATASET has train/ and test/ (or val/) in ImageFolder layout; the "
        "test split is only used to measure each round. Writes OUT/curve.csv and OUT/curve.png and "
        "resumes an interrupted run. Training options left out take the workbench's defaults "
        "(alwb.config.TrainConfig); --initial, --batch, --budget and --val-size the simulator's "
        "(alwb.simulate.SimSettings).",
    )
    p.add_argument("dataset", type=Path, help="folder with train/ and test/ (or val/)")
    p.add_argument("--strategy", default="margin,random", help="comma-separated strategies (default %(default)s)")
    p.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (default %(default)s)")
    p.add_argument("--initial", type=int, help="random labels to start")
    p.add_argument("--batch", type=int, help="labels per round")
    p.add_argument("--budget", type=int, help="labels in all; a larger one continues the runs an --out folder holds")
    p.add_argument(
        "--val-size", type=int, help="random validation sample labeled by the oracle (not counted in the budget)"
    )
    p.add_argument(
        "--pseudo-cap",
        type=float,
        help=f"pseudo-labels per class, at most this × its labels (default {TrainConfig.pseudo_cap:g})",
    )
    p.add_argument(
        "--pseudo-steps",
        type=float,
        help=f"a pseudo-label round trains up to this × a plain one's steps (default {TrainConfig.pseudo_steps:g})",
    )
    p.add_argument(
        "--pseudo-threshold",
        type=float,
        help=f"least top-class probability of a pseudo-label (default {TrainConfig.pseudo_threshold:g})",
    )
    p.add_argument("--train-manifest", type=Path, help="take the pool from this CSV (path,label) instead of train/")
    p.add_argument(
        "--pretrain",
        type=float,
        metavar="MINUTES",
        help="pretrain features on the pool first (alwb pretrain; its time reported apart); the runs train on them",
    )
    p.add_argument("--out", type=Path, default=Path("data/simulation"), help="output folder (default %(default)s)")
    p.set_defaults(func=_cmd_simulate)

    p = sub.add_parser(
        "pretrain",
        parents=[_project_options(), _device_options("auto", "default %(default)s")],
        help="learn features from the project's own images (no labels, no download)",
        description="Trains a small CNN on every image of the project with SimCLR's contrastive loss (no label is "
        "read, nothing is downloaded) and registers it as the project's backbone 'pool-simclr', for head and "
        "finetune rounds. Checkpoints every 30 s; Ctrl+C stops, and the same command resumes.",
    )
    p.add_argument("--minutes", type=float, default=15.0, help="training time in all (default %(default)s)")
    p.add_argument("--steps", type=int, default=0, help="a number of steps instead of a time (default: by time)")
    p.add_argument("--batch-size", type=int, default=256, help="images a step (default %(default)s)")
    p.add_argument("--width", type=int, default=16, help="the CNN's first-stage channels (default %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default %(default)s)")
    p.add_argument("--restart", action="store_true", help="throw an earlier checkpoint away")
    p.add_argument("--use", choices=("head", "finetune"), help="make the project's rounds train on it in this mode")
    p.set_defaults(func=_cmd_pretrain)

    p = sub.add_parser(
        "demo",
        parents=[_device_options(TrainConfig.device, "default %(default)s"), _server_options()],
        help="build a demo project from scikit-learn's digits and run it",
        description="Writes the 1,797 8x8 digits of scikit-learn as PNG files under DIR, creates a project there "
        "and starts the workbench on it. With --terminal it runs labeling rounds in the terminal instead, the "
        "digits' own labels answering as the oracle, printing the validation accuracy per round.",
    )
    p.add_argument("--dir", type=Path, default=Path("data/demo"), help="where to build it (default %(default)s)")
    p.add_argument("--rounds", type=int, default=5, help="labeling rounds (default %(default)s)")
    p.add_argument("--batch", type=int, default=60, help="labels per round (default %(default)s)")
    p.add_argument(
        "--strategy",
        choices=STRATEGY_NAMES,
        default=ProjectConfig.strategy,
        help="query strategy (default %(default)s)",
    )
    p.add_argument(
        "--terminal",
        action="store_true",
        help="no browser: run --rounds rounds in the terminal, the digits' labels answering",
    )
    p.set_defaults(func=_cmd_demo)


def _add_admin_commands(sub: Any, project: argparse.ArgumentParser, as_json: argparse.ArgumentParser) -> None:
    """Commands that administer a project or this machine: users, weights, root, store."""
    p = sub.add_parser("users", help="accounts: who may sign in to the workbench, with which role")
    p.set_defaults(func=_cmd_users)
    users_sub = p.add_subparsers(dest="users_command", metavar="ACTION", required=True)
    password = _parent()
    password.add_argument(
        "--password-stdin", action="store_true", help="read the password from one line of stdin (for scripts)"
    )
    u = users_sub.add_parser("add", parents=[project, password], help="add an account (password asked twice)")
    u.add_argument("name", metavar="NAME")
    u.add_argument("--role", choices=ROLES, default="annotator", help="default %(default)s")
    u = users_sub.add_parser("list", parents=[project, as_json], help="list the accounts")
    u = users_sub.add_parser("passwd", parents=[project, password], help="set a new password (ends their sessions)")
    u.add_argument("name", metavar="NAME")
    u = users_sub.add_parser("role", parents=[project], help="give an account another role (ends their sessions)")
    u.add_argument("name", metavar="NAME")
    u.add_argument("role", metavar="ROLE", choices=ROLES, help=", ".join(ROLES))
    for action, text in (("disable", "refuse sign-ins and end sessions"), ("enable", "allow sign-ins again")):
        u = users_sub.add_parser(action, parents=[project], help=text)
        u.add_argument("name", metavar="NAME")

    p = sub.add_parser(
        "weights",
        help="pretrained backbones' weights: list, download, import a file obtained elsewhere",
        description="Weights live in torch hub's cache (TORCH_HOME, default ~/.cache/torch/hub/checkpoints). "
        "Downloads come from the public URL, or from $ALWB_WEIGHTS_URL/FILE_NAME when that mirror is set, and are "
        "checked against the published SHA-256; ALWB_OFFLINE=1 forbids downloading.",
    )
    p.set_defaults(func=_cmd_weights)
    weights_sub = p.add_subparsers(dest="weights_command", metavar="ACTION", required=True)
    weights_sub.add_parser(
        "list", parents=[as_json], help="every backbone: on this machine or not (published or custom), size, licence"
    )
    name = _parent()
    name.add_argument("name", metavar="NAME", choices=BACKBONES, help="backbone ('alwb weights list')")
    weights_sub.add_parser(
        "fetch", parents=[name], help="download the published weights now (verified), e.g. before going offline"
    )
    w = weights_sub.add_parser(
        "add",
        parents=[name],
        help="import a weights file obtained elsewhere (checked against the architecture; a file that is not the "
        "published one is kept as a custom file)",
    )
    w.add_argument("file", type=Path, metavar="FILE", help=".pth/.pt state_dict (weights only) or .safetensors")
    weights_sub.add_parser(
        "remove", parents=[name], help="stop using NAME's custom file (go back to the published one)"
    )
    w = weights_sub.add_parser(
        "wheel",
        help="pack a weights file into a wheel for a package index: installed, it provides backbone NAME "
        "(entry point alwb.backbones, hash pinned)",
    )
    w.add_argument("name", metavar="NAME", help="the backbone's name (a registered one only for its published file)")
    w.add_argument("file", type=Path, metavar="FILE", help=".pth/.pt state_dict (weights only) or .safetensors")
    w.add_argument(
        "--base", metavar="ARCH", choices=BACKBONES, help="the registered backbone the file fits (default NAME)"
    )
    w.add_argument("--sha256", metavar="HEX", help="refuse the file unless it has this SHA-256")
    w.add_argument("--version", default="1.0.0", help="the wheel's version (default 1.0.0)")
    w.add_argument("--out", type=Path, default=Path("."), help="folder to write the wheel to (default .)")

    p = sub.add_parser(
        "root",
        parents=[project],
        help="show or set the project's image root (image paths are stored relative to it)",
        description="Without an action: the recorded image root, where it is on this machine ($ALWB_IMAGE_ROOT "
        "overrides it) and whether the images are found there (exit status 1 when some are not). 'set DIR': record "
        "DIR as the root and rewrite every stored path, in one transaction: paths under DIR become relative to it, "
        "the others stay absolute (this is also how a project with absolute paths adopts a root).",
    )
    p.add_argument("action", nargs="?", choices=["show", "set"], default="show", help="show (default) or set")
    p.add_argument("dir", nargs="?", type=Path, metavar="DIR", help="the new root (with 'set'), a folder here")
    p.set_defaults(func=_cmd_root)

    p = sub.add_parser("store", help="move the project's store (SQLite to PostgreSQL)")
    p.set_defaults(func=_cmd_store)
    store_sub = p.add_subparsers(dest="store_command", metavar="ACTION", required=True)
    p = store_sub.add_parser(
        "copy",
        parents=[project],
        help="copy the SQLite store to an empty PostgreSQL database, check every row, and switch to it",
        description="Copy every item, label (with its history), round, model record, pseudo-label and draft of "
        "PROJECT's SQLite store to the empty PostgreSQL database URL, compare them row by row, then make PROJECT "
        "use that store (PROJECT/store.json; alwb.sqlite is renamed alwb.sqlite.moved). Stop the workbench first.",
    )
    p.add_argument("url", metavar="URL", help="postgresql://USER@HOST:PORT/DB (password: PGPASSWORD or ~/.pgpass)")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.ERROR if args.quiet else logging.WARNING, format="alwb: %(levelname)s: %(message)s"
    )
    redact_logging()
    try:
        return int(args.func(args) or 0)
    except AlwbError as exc:
        print(f"alwb: error: {redact(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("alwb: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug: one line, the traceback only on request
        if os.environ.get("ALWB_DEBUG"):
            raise
        print(
            f"alwb: internal error: {type(exc).__name__}: {redact(exc)} (set ALWB_DEBUG=1 for the traceback)",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
