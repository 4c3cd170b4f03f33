"""Features learned from the project's own images: SimCLR on a small CNN, registered as the project's backbone.

``alwb pretrain PROJECT --minutes M`` trains the convolutional trunk of :func:`alwb.learning.models.cnn6` with SimCLR's
contrastive loss (Chen et al. 2020: two random views of each image, a projection head, NT-Xent) on every accepted
image of the project. No label is read, so labeled and unlabeled images alike are used; a simulation's test images
are never in the project. It needs no download, which is the point: a site that cannot fetch ImageNet weights, or
whose images are far from ImageNet, gets features of its own.

The job runs for a time budget (or a number of steps), writes a checkpoint to ``PROJECT/backbones/`` every
:data:`CHECKPOINT_S` seconds and when stopped, and resumes from it when run again. Its status (running, steps,
loss, finished, failed) is in ``PROJECT/backbones/pretrain.json`` for the workbench to show. When it finishes, the
trunk is saved as ``PROJECT/backbones/pool-simclr.safetensors`` and recorded in the store (meta
:data:`META_KEY`: file, SHA-256, geometry, normalisation, what it trained on); every process that opens the project
then has backbone :data:`POOL_BACKBONE` in :mod:`alwb.learning.backbones`, usable in ``head`` and ``finetune`` rounds
like
a downloaded one (its file is hash-checked the same way).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import socket
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # torch loads only when a job runs: opening a project registers the backbone without it
    import torch
    from torch import nn

from ..errors import AlwbError, ConfigError

#: the registry name of a project's own backbone
POOL_BACKBONE = "pool-simclr"
#: the store's meta key recording it
META_KEY = "pool_backbone"
#: folder of the project holding the weights, the checkpoint and the status file
DIR = "backbones"
WEIGHTS_FILE = f"{POOL_BACKBONE}.safetensors"
CHECKPOINT_FILE = f"{POOL_BACKBONE}.ckpt.pt"
STATUS_FILE = "pretrain.json"
#: seconds between checkpoints
CHECKPOINT_S = 30.0
#: the largest side the trunk trains at (photos are shrunk to it: the CPU budget decides)
MAX_SIZE = 64

#: ``progress(step, total_steps, loss)``
ProgressFn = Callable[[int, int, float], None]


@dataclass(frozen=True)
class PretrainSettings:
    """What a pretraining job does.

    ``minutes`` is the training time over all runs of the job (a resumed job trains for what is left); ``steps``,
    when not 0, fixes the number of steps instead (tests, reproducible runs). ``width`` is cnn6's first-stage
    channels (the embedding has 4×). ``image_size`` 0 takes the project's image size, at most :data:`MAX_SIZE`.
    """

    minutes: float = 15.0
    steps: int = 0
    batch_size: int = 256
    temperature: float = 0.2
    lr: float = 2e-3
    weight_decay: float = 1e-4
    width: int = 16
    image_size: int = 0
    seed: int = 0

    def __post_init__(self) -> None:
        if not (self.minutes > 0 or self.steps > 0):
            raise ConfigError("pretraining needs --minutes > 0 or --steps > 0")
        if self.steps < 0:
            raise ConfigError(f"steps must be >= 0 (got {self.steps})")
        if self.batch_size < 8:
            raise ConfigError(f"batch_size must be at least 8 (got {self.batch_size})")
        if not 0 < self.temperature <= 1:
            raise ConfigError(f"temperature must be in (0, 1] (got {self.temperature})")
        if self.lr <= 0:
            raise ConfigError(f"lr must be > 0 (got {self.lr})")
        if self.width < 4:
            raise ConfigError(f"width must be at least 4 (got {self.width})")
        if self.image_size and not 8 <= self.image_size <= 256:
            raise ConfigError(f"image_size must be 0 or between 8 and 256 (got {self.image_size})")


@dataclass
class PretrainReport:
    """What a run of the job did."""

    finished: bool
    steps: int
    total_steps: int
    seconds: float  # training time over all runs of the job
    run_seconds: float  # this run's wall time, decoding the images included
    images: int
    epochs: float
    loss_first: float | None
    loss_last: float | None
    device: str
    resumed_from: int = 0
    file: str | None = None
    sha256: str | None = None
    losses: list[float] = field(default_factory=list, repr=False)

    def summary(self) -> str:
        """One line for the terminal."""
        state = "finished" if self.finished else "stopped (run again to resume)"
        loss = f", loss {self.loss_first:.3f} -> {self.loss_last:.3f}" if self.loss_last is not None else ""
        resumed = f", resumed at step {self.resumed_from}" if self.resumed_from else ""
        return (
            f"pretraining {state}: {self.steps}/{self.total_steps} steps ({self.epochs:.1f} passes over"
            f" {self.images} images) in {self.seconds / 60:.1f} min on {self.device}{loss}{resumed}"
        )


# ------------------------------------------------------------------------------------------------ SimCLR pieces
def simclr_views(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """A random view of float images ``(B, C, H, W)`` (0-255): resized crop (area 35-100%, aspect 3/4-4/3),
    horizontal flip, contrast and brightness jitter. The random numbers come from ``generator`` (on the CPU)."""
    import torch
    from torch import nn

    b, dev = x.shape[0], x.device
    area = 0.35 + 0.65 * torch.rand(b, generator=generator)
    aspect = torch.exp((torch.rand(b, generator=generator) - 0.5) * math.log(16 / 9))
    sx = torch.sqrt(area * aspect).clamp(max=1.0)
    sy = torch.sqrt(area / aspect).clamp(max=1.0)
    tx = (1 - sx) * (2 * torch.rand(b, generator=generator) - 1)
    ty = (1 - sy) * (2 * torch.rand(b, generator=generator) - 1)
    flip = torch.where(torch.rand(b, generator=generator) < 0.5, -1.0, 1.0)
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0], theta[:, 0, 2] = sx * flip, tx
    theta[:, 1, 1], theta[:, 1, 2] = sy, ty
    grid = nn.functional.affine_grid(theta.to(dev), list(x.shape), align_corners=False)
    out = nn.functional.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    contrast = (0.6 + 0.8 * torch.rand(b, 1, 1, 1, generator=generator)).to(dev)
    bright = ((torch.rand(b, 1, 1, 1, generator=generator) - 0.5) * 100.0).to(dev)
    mean = out.mean(dim=(1, 2, 3), keepdim=True)
    return ((out - mean) * contrast + mean + bright).clamp(0, 255)


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> torch.Tensor:
    """SimCLR's normalised-temperature cross-entropy over the 2B views of a batch."""
    import torch
    from torch import nn

    z = nn.functional.normalize(torch.cat([z1, z2]).float(), dim=1)
    sim = z @ z.T / temperature
    n = z1.shape[0]
    sim.fill_diagonal_(float("-inf"))
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return nn.functional.cross_entropy(sim, target)


def build_trunk(width: int) -> nn.Module:
    """The architecture a project backbone has: :func:`alwb.learning.models.cnn6` on RGB images (its head is
    ignored)."""
    from .models import cnn6

    return cnn6(3, 2, width=width)


#: a time budget's schedule: the steps before this one are left out of the pace (first-step allocations, warm caches)
PACE_FROM_STEP = 5
#: a first plan of the steps at this step, and the final one once this many seconds of training have passed
PLAN_AT_STEP, REPLAN_AFTER_S = 20, 60.0


def plan_steps(minutes: float, trained_s: float, step: int, pace_s: float, pace_steps: int) -> int:
    """The total steps that fill a ``minutes`` budget: the ``step`` steps done in ``trained_s`` seconds, then the
    rest at the pace of ``pace_steps`` steps that took ``pace_s`` seconds (the steps after :data:`PACE_FROM_STEP`)."""
    per_step = pace_s / max(1, pace_steps)
    left = max(0.0, minutes * 60 - trained_s)
    return max(step + 1, step + int(left / max(per_step, 1e-6)))


def _lr_at(step: int, total: int, peak: float) -> float:
    """Linear warm-up over the first 5% of the steps, then cosine decay to 0."""
    warm = max(1, total // 20)
    if step < warm:
        return peak * (step + 1) / warm
    return peak * 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, total - warm)))


# ------------------------------------------------------------------------------------------------ files
def backbone_dir(root: str | Path) -> Path:
    """``PROJECT/backbones``."""
    return Path(root) / DIR


def read_status(root: str | Path) -> dict[str, Any] | None:
    """The job's status file (state, steps, loss, times), or None when no job ever ran."""
    p = backbone_dir(root) / STATUS_FILE
    try:
        return json.loads(p.read_text())
    except (OSError, ValueError):
        return None


#: states of a job that is (or should be) at work
ACTIVE_STATES = ("decoding", "running", "embedding")
#: a job whose status was not written for this long, on a machine where its process cannot be checked, is lost
STALE_S = 180.0


def job_status(root: str | Path) -> dict[str, Any]:
    """:func:`read_status` with the state corrected for a job that died without saying so: ``state`` is ``none``
    (never ran), an active state, ``stopped``, ``failed``, ``finished`` or ``lost`` (its process is gone)."""
    st = read_status(root)
    if st is None:
        return {"state": "none"}
    if st.get("state") in ACTIVE_STATES:
        host, _, pid = str(st.get("host", "")).rpartition(":")
        alive: bool | None = None
        if host == socket.gethostname() and pid.isdigit():
            try:
                os.kill(int(pid), 0)
                alive = True
            except ProcessLookupError:
                alive = False
            except PermissionError:
                alive = True
        if alive is False or (alive is None and time.time() - float(st.get("updated_at", 0)) > STALE_S):
            st = {**st, "state": "lost"}
    return st


def start_background(
    root: str | Path, *, minutes: float, device: str = "auto", restart: bool = False, use: str | None = None
) -> int:
    """Start ``alwb pretrain`` on the project as its own process (it outlives the page that started it; output in
    ``PROJECT/backbones/pretrain.log``); returns its pid. Refuses while a job is at work."""
    import subprocess
    import sys

    if job_status(root)["state"] in ACTIVE_STATES:
        raise AlwbError("a pretraining job is already running for this project")
    PretrainSettings(minutes=minutes)  # refuse bad values here, not in the background
    d = backbone_dir(root)
    d.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "alwb", "pretrain", str(root), "--minutes", f"{minutes:g}", "--device", device]
    cmd += ["--restart"] if restart else []
    cmd += ["--use", use] if use else []
    with open(d / "pretrain.log", "ab") as log:
        proc = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
        )
    _write_status(Path(root), state="decoding", step=0, total_steps=0, host=f"{socket.gethostname()}:{proc.pid}")
    return proc.pid


def stop_background(root: str | Path) -> bool:
    """Ask a job running on this machine to stop at its next step (it checkpoints; running it again resumes)."""
    import signal

    st = job_status(root)
    host, _, pid = str(st.get("host", "")).rpartition(":")
    if st["state"] not in ACTIVE_STATES or host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), signal.SIGTERM)
    except ProcessLookupError:
        return False
    return True


def _write_status(root: Path, **fields: Any) -> None:
    d = backbone_dir(root)
    d.mkdir(parents=True, exist_ok=True)
    tmp = d / f"{STATUS_FILE}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps({**fields, "updated_at": time.time()}, indent=1))
    os.replace(tmp, d / STATUS_FILE)


def _atomic_save(obj: Any, path: Path) -> None:
    import torch

    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


# ------------------------------------------------------------------------------------------------ registry
def record(store: Any) -> dict[str, Any] | None:
    """The store's record of the project's own backbone, or None."""
    rec = store.get_meta(META_KEY)
    return rec if isinstance(rec, dict) and rec.get("sha256") else None


def register_project_backbone(root: str | Path, store: Any) -> str | None:
    """Put the project's own backbone (if it has one) into :mod:`alwb.learning.backbones`' registry; returns its name.

    The registry is per process: a process that opens two projects with their own backbones sees the last one
    opened under :data:`POOL_BACKBONE`.
    """
    from . import backbones

    rec = record(store)
    if rec is None:
        return None
    width, size = int(rec["width"]), int(rec["image_size"])
    file = Path(root) / rec["file"]
    spec = backbones.BackboneSpec(
        name=POOL_BACKBONE,
        title=f"cnn6 (width {width}) trained with SimCLR on this project's {rec.get('images', '?')} images",
        builder=lambda: build_trunk(width),
        extractor=lambda m: m.backbone,
        input_size=size,
        resize_size=size,
        interpolation="bilinear",
        mean=tuple(rec["mean"]),
        std=tuple(rec["std"]),
        embedding_dim=4 * width,
        file_name=file.name,
        url="",
        size_mb=round(file.stat().st_size / 1e6, 2) if file.is_file() else 0.0,
        sha256=str(rec["sha256"]),
        licence="trained on this project's own images",
        hash_source="recorded by alwb pretrain",
        head_prefixes=("head.",),
        local_file=str(file),
        # a small CNN that learnt from one pool, not a week of ImageNet: fine-tuned with the small CNN's recipe
        trains_like="cnn6",
    )
    backbones.register(spec, replace=True)
    return POOL_BACKBONE


# ------------------------------------------------------------------------------------------------ the job
def embed_pool(project: Any, *, device: str = "auto") -> Any:
    """Embed every item with the project's own backbone (its embedding cache), so that a typicality strategy can
    choose the first labels and head rounds start at once; returns :class:`alwb.learning.embed.EmbedReport`."""
    from . import backbones
    from .embed import digests_from_store, embed_items, items_from_store

    bb = backbones.load(POOL_BACKBONE, device="cpu", download=False, quiet=True, framing=project.framing())
    return embed_items(
        project.root,
        items_from_store(project.store),
        bb,
        device=device,
        batch_size=256,
        digests=digests_from_store(project.store),
    )


def _geometry(project: Any, settings: PretrainSettings) -> int:
    from .data import choose_geometry

    if settings.image_size:
        return settings.image_size
    size, _ = choose_geometry(project.store, model="cnn6")
    return min(size, MAX_SIZE)


@dataclass
class _Job:
    """One pretraining run: the images, the networks, the optimiser, the step counter and the schedule."""

    root: Path
    s: PretrainSettings
    size: int
    dev: Any  # torch.device
    base_status: dict[str, Any]
    ids: Any  # int64 item ids of the images trained on
    pixels: Any  # uint8 tensor (N, 3, S, S)
    mean3: list[float]
    std3: list[float]
    batch: int
    trunk: Any = None
    head: Any = None
    opt: Any = None
    gen: Any = None
    step: int = 0
    total: int = 0
    trained_s: float = 0.0
    losses: list[float] = field(default_factory=list)
    planned: bool = False  # a time budget's step count is final once measured over REPLAN_AFTER_S seconds
    pace_t0: float = 0.0  # trained_s at step PACE_FROM_STEP

    @property
    def ckpt_path(self) -> Path:
        return backbone_dir(self.root) / CHECKPOINT_FILE

    def build(self) -> None:
        """The trunk, SimCLR's projection head, AdamW and the augmentations' generator, seeded."""
        import torch
        from torch import nn

        from .train import seed_everything

        seed_everything(self.s.seed)
        self.trunk = build_trunk(self.s.width)
        d = 4 * self.s.width
        self.head = nn.Sequential(nn.Linear(d, 2 * d), nn.ReLU(inplace=True), nn.Linear(2 * d, d))
        self.trunk.to(self.dev)
        self.head.to(self.dev)
        params = list(self.trunk.backbone.parameters()) + list(self.head.parameters())
        self.opt = torch.optim.AdamW(params, lr=self.s.lr, weight_decay=self.s.weight_decay)
        self.gen = torch.Generator().manual_seed(self.s.seed)
        self.total = int(self.s.steps)
        self.planned = self.total > 0

    def resume(self, restart: bool) -> None:
        """Continue from the checkpoint (made with the same settings), or with ``restart`` throw it away."""
        import torch

        if restart:
            self.ckpt_path.unlink(missing_ok=True)
            return
        if not self.ckpt_path.is_file():
            return
        ck = torch.load(self.ckpt_path, map_location="cpu", weights_only=True)
        if ck.get("settings") != asdict(self.s) or ck.get("image_size") != self.size:
            raise AlwbError(
                f"{self.ckpt_path} was made with other settings ({ck.get('settings')}, {ck.get('image_size')} px);"
                " run with the same settings to resume, or with --restart to start again"
            )
        self.trunk.load_state_dict(ck["trunk"])
        self.head.load_state_dict(ck["head"])
        self.opt.load_state_dict(ck["opt"])
        self.gen.set_state(ck["gen"])
        torch.set_rng_state(ck["torch_rng"])
        self.step, self.total, self.trained_s, self.losses = ck["step"], ck["total"], ck["seconds"], list(ck["losses"])
        self.planned, self.pace_t0 = ck.get("planned", True), ck.get("pace_t0", 0.0)

    def save_checkpoint(self) -> None:
        import torch

        _atomic_save(
            {
                "trunk": self.trunk.state_dict(),
                "head": self.head.state_dict(),
                "opt": self.opt.state_dict(),
                "gen": self.gen.get_state(),
                "torch_rng": torch.get_rng_state(),  # dropout draws from it
                "step": self.step,
                "total": self.total,
                "seconds": self.trained_s,
                "losses": self.losses,
                "planned": self.planned,
                "pace_t0": self.pace_t0,
                "settings": asdict(self.s),
                "image_size": self.size,
            },
            self.ckpt_path,
        )

    def status(self, state: str) -> None:
        import numpy as np

        _write_status(
            self.root,
            state=state,
            step=self.step,
            total_steps=self.total,
            seconds=round(self.trained_s, 1),
            loss=round(float(np.mean(self.losses[-50:])), 4) if self.losses else None,
            images=int(self.ids.size),
            **self.base_status,
        )

    def train(self, stop: Callable[[], bool] | None, progress: ProgressFn | None) -> None:
        """SimCLR steps until the planned total (or ``stop()``), a checkpoint every :data:`CHECKPOINT_S` s."""
        import torch

        s, batch, dev = self.s, self.batch, self.dev
        m = torch.tensor(self.mean3, device=dev).view(1, 3, 1, 1) * 255.0
        sd = torch.tensor(self.std3, device=dev).view(1, 3, 1, 1) * 255.0
        amp = dev.type == "cuda"
        self.trunk.train()
        self.head.train()
        last_ckpt = t_step = time.perf_counter()
        while self.total == 0 or self.step < self.total:
            if stop is not None and stop():
                return
            idx = torch.randint(0, len(self.pixels), (batch,), generator=self.gen)
            xb = self.pixels[idx].to(dev, non_blocking=True).float()
            v = torch.cat([simclr_views(xb, self.gen), simclr_views(xb, self.gen)])
            v = (v - m) / sd
            with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=amp):
                z = self.head(self.trunk.backbone(v))
            loss = nt_xent(z[:batch], z[batch:], s.temperature)
            lr = _lr_at(self.step, self.total, s.lr) if self.total else s.lr * (self.step + 1) / 20
            for g in self.opt.param_groups:
                g["lr"] = lr
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
            self.losses.append(float(loss.detach()))
            self.step += 1
            now = time.perf_counter()
            self.trained_s += now - t_step
            t_step = now
            if not self.planned:  # a time budget: the schedule's length from the pace, then fixed
                if self.step == PACE_FROM_STEP:
                    self.pace_t0 = self.trained_s
                elif self.step > PACE_FROM_STEP and (self.step == PLAN_AT_STEP or self.trained_s >= REPLAN_AFTER_S):
                    self.total = plan_steps(
                        s.minutes,
                        self.trained_s,
                        self.step,
                        self.trained_s - self.pace_t0,
                        self.step - PACE_FROM_STEP,
                    )
                    self.planned = self.trained_s >= REPLAN_AFTER_S
            if progress is not None:
                progress(self.step, self.total, self.losses[-1])
            if now - last_ckpt >= CHECKPOINT_S:
                self.save_checkpoint()
                self.status("running")
                last_ckpt = now

    def report(self, run_seconds: float, resumed_from: int) -> PretrainReport:
        import numpy as np

        return PretrainReport(
            finished=self.total > 0 and self.step >= self.total,
            steps=self.step,
            total_steps=self.total,
            seconds=self.trained_s,
            run_seconds=run_seconds,
            images=int(self.ids.size),
            epochs=self.step * self.batch / self.ids.size,
            loss_first=float(np.mean(self.losses[:20])) if self.losses else None,
            loss_last=float(np.mean(self.losses[-50:])) if self.losses else None,
            device=str(self.dev),
            resumed_from=resumed_from,
            losses=self.losses,
        )


def _images(project: Any, s: PretrainSettings, size: int, decode_progress: bool) -> dict[str, Any]:
    """The project's readable images at ``size`` px (pixel cache), their normalisation and the batch size."""
    import numpy as np
    import torch

    from .data import PixelCache

    cache = PixelCache(Path(project.root), size, 3)
    cache.sync(project.store, progress=decode_progress)
    ids = np.asarray(project.store.item_ids(), dtype=np.int64)
    ids = ids[np.isin(ids, cache.ids)]
    if ids.size < 2 * 8:
        raise AlwbError(f"pretraining needs at least 16 readable images (the project has {ids.size})")
    mean, std = cache.stats()
    return {
        "ids": ids,
        "pixels": torch.from_numpy(np.ascontiguousarray(cache.rows(ids))),
        "mean3": [float(v) for v in (mean * 3 if len(mean) == 1 else mean)][:3],
        "std3": [max(float(v), 1e-3) for v in (std * 3 if len(std) == 1 else std)][:3],
        "batch": min(s.batch_size, int(ids.size) // 2 * 2),
    }


def _publish(project: Any, job: _Job, report: PretrainReport) -> None:
    """The finished trunk saved, recorded in the store and registered as the project's backbone, then the pool
    embedded with it."""
    from safetensors.torch import save_file

    from .backbones import sha256_file

    job.trunk.cpu()
    state = {k: v.detach().clone().contiguous() for k, v in job.trunk.state_dict().items() if k.startswith("backbone.")}
    weights = backbone_dir(job.root) / WEIGHTS_FILE
    tmp = weights.with_name(f"{weights.name}.{os.getpid()}.tmp")
    save_file(state, str(tmp))
    os.replace(tmp, weights)
    digest = sha256_file(weights)
    project.store.set_meta(
        META_KEY,
        {
            "file": f"{DIR}/{WEIGHTS_FILE}",
            "sha256": digest,
            "width": job.s.width,
            "image_size": job.size,
            "mean": job.mean3,
            "std": job.std3,
            "images": int(job.ids.size),
            "steps": job.step,
            "epochs": round(report.epochs, 2),
            "seconds": round(job.trained_s, 1),
            "loss_first": report.loss_first,
            "loss_last": report.loss_last,
            "device": str(job.dev),
            "settings": asdict(job.s),
            "trained_at": time.time(),
        },
    )
    register_project_backbone(job.root, project.store)
    report.file, report.sha256 = str(weights), digest
    job.status("embedding")
    embed_pool(project, device=str(job.dev))


def pretrain(
    project: Any,
    settings: PretrainSettings | None = None,
    *,
    device: str = "auto",
    restart: bool = False,
    progress: ProgressFn | None = None,
    stop: Callable[[], bool] | None = None,
    decode_progress: bool = False,
) -> PretrainReport:
    """Train (or resume training) the project's own backbone; see the module docstring.

    ``stop()`` is asked after every step: when it says True the job checkpoints and returns unfinished (run it
    again to resume). ``restart`` throws an earlier checkpoint away. A job that already finished with these
    settings returns its report at once.
    """
    from .train import resolve_device

    s = settings or PretrainSettings()
    root = Path(project.root)
    backbone_dir(root).mkdir(parents=True, exist_ok=True)
    t_run = time.perf_counter()
    dev = resolve_device(device)
    size = _geometry(project, s)
    host = f"{socket.gethostname()}:{os.getpid()}"
    base_status = {"host": host, "device": str(dev), "settings": asdict(s), "image_size": size}
    _write_status(root, state="decoding", step=0, total_steps=0, **base_status)
    try:
        job = _Job(root, s, size, dev, base_status, **_images(project, s, size, decode_progress))
        job.build()
        job.resume(restart)
        resumed_from = job.step
        job.status("running")
        with contextlib.suppress(KeyboardInterrupt):  # Ctrl+C: keep what was trained, resume later
            job.train(stop, progress)
        job.save_checkpoint()
        report = job.report(time.perf_counter() - t_run, resumed_from)
        if not report.finished:
            job.status("stopped")
            return report
        _publish(project, job, report)
        job.status("finished")
        return report
    except BaseException as exc:
        state = "stopped" if isinstance(exc, KeyboardInterrupt) else "failed"
        _write_status(root, state=state, error=f"{type(exc).__name__}: {exc}"[:500], **base_status)
        raise
