"""Self-supervised pretraining of the small CNN on the pool's own images (SimCLR), then fine-tuning on labels.

    python bench/research/ssl_pretrain.py --sim bench/out/c6/plain --run margin-plain-seed0 --minutes 15 \\
        --save bench/out/ssl/cnn6_simclr.safetensors --recipes '[{}, {"lr": 0.01}]'

Pretrains ``cnn6``'s backbone with SimCLR's contrastive loss (Chen et al. 2020: two random views of each pool image,
a projection head, NT-Xent) on the run's pool images (never the validation or test images; no labels are read), for
``--minutes`` of CPU time, and saves the backbone. Then, for each recipe (``TrainConfig`` fields as JSON), trains on
the run's human labels from scratch and from the pretrained backbone (same epochs, head initialised at random) and
prints the test accuracy with flip test-time augmentation. ``--load`` skips the pretraining. ``--pseudo`` adds the
loop's pseudo-labels from the run's last scores (probability >= 0.95, one per human label of the class, drawn at
random; :func:`alwb.learning.pseudo.choose_pseudo_labels`) with the loop's step budget for them, as
``pseudo_sources.py``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from _runs import human_labels, scored_unlabeled, train_and_test
from safetensors.torch import load_file, save_file
from torch import nn

from alwb.config import TrainConfig
from alwb.learning.data import normalise
from alwb.learning.plan import Geometry
from alwb.learning.pretrain import nt_xent, simclr_views
from alwb.learning.pseudo import choose_pseudo_labels
from alwb.learning.round import epochs_with_extra
from alwb.learning.train import build_model, seed_everything
from alwb.project import Project


def pretrain(
    pixels: np.ndarray, geo: Geometry, *, minutes: float, batch: int, temperature: float, lr: float, seed: int
) -> dict[str, torch.Tensor]:
    """SimCLR on uint8 ``pixels`` for ``minutes``; returns the backbone's state (keys ``backbone.*``)."""
    seed_everything(seed)
    model = build_model(geo.arch, channels=geo.channels, num_classes=2, image_size=geo.image_size)
    d = model.emb_dim
    proj = nn.Sequential(nn.Linear(d, 2 * d), nn.ReLU(inplace=True), nn.Linear(2 * d, d))
    params = list(model.backbone.parameters()) + list(proj.parameters())
    steps_per_epoch = len(pixels) // batch
    # time one epoch's worth of steps first to fix the schedule's length
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=1e-4)
    gen = torch.Generator().manual_seed(seed)
    data = torch.from_numpy(pixels)
    m = torch.tensor(geo.mean)
    s = torch.tensor(geo.std)
    model.train()
    proj.train()
    t0 = time.perf_counter()
    step, total_steps, sched = 0, None, None
    losses: list[float] = []
    while total_steps is None or step < total_steps:
        idx = torch.randint(0, len(data), (batch,), generator=gen)
        xb = data[idx].float()
        v1 = normalise(simclr_views(xb, gen), m, s)
        v2 = normalise(simclr_views(xb, gen), m, s)
        h = model.backbone(torch.cat([v1, v2]))
        z = proj(h)
        loss = nt_xent(z[:batch], z[batch:], temperature)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if sched is not None:
            sched.step()
        losses.append(float(loss.detach()))
        step += 1
        if total_steps is None and step == 50:
            per_step = (time.perf_counter() - t0) / step
            total_steps = max(step + 1, int(minutes * 60 / per_step))
            sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total_steps - step)
            print(f"{per_step * 1000:.0f} ms a step: {total_steps} steps ({total_steps / steps_per_epoch:.1f} epochs)")
        if step % 500 == 0:
            print(f"  step {step}: loss {np.mean(losses[-500:]):.3f}  {time.perf_counter() - t0:.0f} s", flush=True)
    return {f"backbone.{k}": v.detach().clone() for k, v in model.backbone.state_dict().items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sim", type=Path, required=True)
    ap.add_argument("--run", default="margin-plain-seed0")
    ap.add_argument("--minutes", type=float, default=15.0)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--temperature", type=float, default=0.2)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--save", type=Path)
    ap.add_argument("--load", type=Path)
    ap.add_argument("--recipes", default="[{}]", help="JSON list of TrainConfig fields for the fine-tuning")
    ap.add_argument("--train-seeds", default="0,1")
    ap.add_argument("--pseudo", action="store_true", help="add the loop's pseudo-labels from the run's last scores")
    args = ap.parse_args()
    with Project.open(args.sim / "runs" / args.run) as proj:
        run = human_labels(proj)
        geo, cache, x, y, k = run.geo, run.cache, run.x, run.y, run.num_classes
        pool = np.sort(np.concatenate([run.ids, np.asarray(proj.store.unlabeled_item_ids(split="pool"), np.int64)]))
        if args.pseudo:
            sc = proj.scores()
            if sc is None:
                raise SystemExit(f"{args.run} has no scores for pseudo-labels")
            unl, rows = scored_unlabeled(proj, sc)
            pid, pcls, _ = choose_pseudo_labels(
                np.asarray(sc.probs)[rows], unl, np.bincount(y, minlength=k), rng=np.random.default_rng(7)
            )
            n_human = len(y)
            x, y = np.concatenate([x, cache.rows(pid)]), np.concatenate([y, pcls])
            print(f"{n_human} human labels and {len(pid)} pseudo-labels")
        if args.load:
            state = load_file(str(args.load))
        else:
            pixels = cache.rows(pool)
            print(f"pretraining on {len(pixels)} pool images for {args.minutes} min")
            state = pretrain(
                pixels,
                geo,
                minutes=args.minutes,
                batch=args.batch,
                temperature=args.temperature,
                lr=args.lr,
                seed=0,
            )
            if args.save:
                args.save.parent.mkdir(parents=True, exist_ok=True)
                save_file({kk: v.contiguous() for kk, v in state.items()}, str(args.save))
    test = np.load(next(args.sim.glob("test_*.npz")))
    for recipe in json.loads(args.recipes):
        base = TrainConfig(augment="crop+flip", epochs=50).with_(**recipe)
        if args.pseudo and "epochs" not in recipe:
            base = base.with_(epochs=epochs_with_extra(n_human, len(y), base.with_(epochs=0), geo, None))
        for seed in (int(v) for v in args.train_seeds.split(",")):
            for name, init in (("scratch", None), ("simclr", state)):
                # shrink 1, perturb 0: the pretrained backbone as it is; the head starts at random
                cfg = base.with_(seed=seed, shrink=1.0, perturb=0.0)
                res, acc, seconds = train_and_test(x, y, run, cfg, test, init_state=init)
                print(
                    f"{json.dumps(recipe):30s} seed {seed} {name:8s} {res.epochs} epochs "
                    f"{seconds:4.0f} s  test accuracy {acc:.4f}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
