"""How often the validation interval contains the test accuracy: in the runs, and over many validation draws.

    python bench/research/val_coverage.py --sim bench/out/v3/plain [--draws 5000] [--population 10000]

SIM is a simulator output folder (``alwb simulate --out``, or one setting of ``bench/research/label_efficiency.py``).

*Realised*: per run, the share of rounds whose Wilson 95% interval on the run's validation set (``curve.csv``)
contains the round's test accuracy. A run draws its validation set once, so its rounds share that draw's luck and
three runs say little about how well the interval is calibrated.

*Resampled*: for every round's saved model, the share of ``--draws`` fresh random validation sets (of the run's
size, drawn from the pool items that round did not train on, outside the run's own validation set) whose Wilson
interval contains the test accuracy. The number of correct predictions in such a draw is hypergeometric, so the
draws are exact and cost nothing once the round's model has scored a random sample of ``--population`` pool items.
``pool - test`` is the round's accuracy on those items minus its test accuracy: a shift between the pool and the
test split shows there.

*Draw spread* (``--draw-spread RUN``, a run folder under ``SIM/runs/``): whether the validation draws are fair. The
run's last model scores every pool item; the script draws ``--draws`` samples of the run's validation size with the
simulator's own rule (:func:`alwb.project.draw_validation`, seeds from ``--first-seed``) and prints how far their
accuracy falls from the model's accuracy on all the pool items it did not train on, next to the binomial standard
error of such a sample, and where the run's own sample falls.

Pseudo-label runs keep only the last round's pseudo-labels; items pseudo-labelled in earlier rounds cannot be told
apart, so use runs without pseudo-labels (``plain``, ``smote``, ...) for the resampled figure.
"""

from __future__ import annotations

import argparse
import functools
import json
from pathlib import Path

import numpy as np
import pandas as pd

from alwb.config import TrainConfig
from alwb.io.export import build_classifier, load_state_dict_file
from alwb.learning.evaluate import wilson_interval
from alwb.learning.plan import Geometry
from alwb.learning.train import predict_batches, resolve_device, uses_tta
from alwb.project import Project, draw_validation


@functools.cache
def wilson_table(n: int) -> np.ndarray:
    """``(n + 1, 2)``: the Wilson 95% bounds for 0..n successes out of ``n``."""
    return np.asarray([wilson_interval(j, n) for j in range(n + 1)])


def read_oracle(sim: Path) -> dict[int, int]:
    """The simulator's oracle: item id -> true class index."""
    return {int(k): int(v) for k, v in json.loads((sim / "template" / "oracle.json").read_text()).items()}


def score(model_path: Path, geo: Geometry, n_classes: int, x: np.ndarray, *, tta: bool) -> np.ndarray:
    """Class probabilities of pixels ``x`` under the model stored at ``model_path`` (on the CPU)."""
    model = build_classifier(geo, n_classes)
    model.load_state_dict(load_state_dict_file(model_path))
    probs, _ = predict_batches(model, x, mean=geo.mean, std=geo.std, device=resolve_device("cpu"), tta_flip=tta)
    return probs


def run_coverage(
    sim: Path, run: pd.DataFrame, oracle: dict[int, int], *, draws: int, population: int, seed: int
) -> pd.DataFrame:
    """One row per round: test accuracy, its realised and resampled coverage, and pool accuracy."""
    strategy, setting, run_seed = run.iloc[0][["strategy", "setting", "seed"]]
    run_dir = sim / "runs" / f"{strategy}-{setting}-seed{run_seed}"
    with Project.open(run_dir) as proj:
        con = proj.store.con
        first_label = dict(con.execute("SELECT item_id, MIN(created_at) FROM labels GROUP BY item_id").fetchall())
        started = dict(con.execute("SELECT number, started_at FROM rounds").fetchall())
        val = set(proj.store.val_item_ids())
        pool = np.asarray(sorted(i for i in oracle if i not in val), dtype=np.int64)
        rng = np.random.default_rng([seed, int(run_seed)])
        ids = np.sort(rng.choice(pool, size=min(population, pool.size), replace=False))
        y = np.asarray([oracle[int(i)] for i in ids], dtype=np.int64)
        cur = proj.current_model()
        assert cur is not None, f"{run_dir} has no model"
        geo = Geometry.from_dict(cur["config"]["geometry"])
        tta = uses_tta(TrainConfig.from_dict(cur["config"]))
        x = proj.pixel_cache(geo).rows(ids)
        n_classes = len(proj.classes)
    labeled_at = np.asarray([first_label.get(int(i), np.inf) for i in ids])
    rows = []
    for r in run.sort_values("round").itertuples():
        probs = score(run_dir / "models" / f"round_{int(r.round):04d}.safetensors", geo, n_classes, x, tta=tta)
        unseen = labeled_at >= started[int(r.round)]  # not yet labeled when this round trained
        correct = probs.argmax(1)[unseen] == y[unseen]
        n_val = int(r.val_n)
        good = int(correct.sum())
        k = rng.hypergeometric(good, int(correct.size) - good, n_val, size=draws)
        lo, hi = wilson_table(n_val)[k].T
        rows.append(
            {
                "strategy": strategy,
                "setting": setting,
                "seed": int(run_seed),
                "round": int(r.round),
                "test_accuracy": r.test_accuracy,
                "val_minus_test": r.val_accuracy - r.test_accuracy,
                "realised": bool(r.val_accuracy_low <= r.test_accuracy <= r.val_accuracy_high),
                "resampled": float(((lo <= r.test_accuracy) & (r.test_accuracy <= hi)).mean()),
                "pool_minus_test": float(correct.mean()) - r.test_accuracy,
                "n_population": int(correct.size),
            }
        )
    return pd.DataFrame(rows)


def draw_spread(sim: Path, run: str, *, draws: int, first_seed: int) -> dict[str, float]:
    """Accuracy offsets (points) of ``draws`` validation draws from the pool accuracy of ``run``'s last model."""
    oracle = read_oracle(sim)
    with Project.open(sim / "runs" / run) as proj:
        val = np.asarray(sorted(proj.store.val_item_ids()), dtype=np.int64)
        trained = {r["item_id"] for r in proj.store.current_labels(split="pool")} - set(val.tolist())
        ids = np.asarray(sorted(oracle), dtype=np.int64)
        if not np.array_equal(np.sort(draw_validation(ids, val.size, int(proj.config.seed))), val):
            raise SystemExit(f"{run}: its validation sample is not the simulator's draw from the whole pool")
        cur = proj.current_model()
        assert cur is not None, f"{run} has no model"
        geo = Geometry.from_dict(cur["config"]["geometry"])
        x = proj.pixel_cache(geo).rows(ids)
        probs = score(Path(cur["path"]), geo, len(proj.classes), x, tta=uses_tta(TrainConfig.from_dict(cur["config"])))
    correct = probs.argmax(1) == np.asarray([oracle[int(i)] for i in ids])
    unseen = ~np.isin(ids, list(trained))
    base = float(correct[unseen].mean())

    def offset(sample: np.ndarray) -> float:
        keep = np.searchsorted(ids, sample)
        keep = keep[unseen[keep]]
        return 100 * (float(correct[keep].mean()) - base)

    offsets = np.asarray([offset(draw_validation(ids, val.size, s)) for s in range(first_seed, first_seed + draws)])
    se = 100 * float(np.sqrt(base * (1 - base) / val.size))
    return {
        "pool_accuracy": base,
        "own_offset": offset(val),
        "mean_offset": float(offsets.mean()),
        "sd_offset": float(offsets.std(ddof=1)),
        "binomial_sd": se,
        "share_beyond_1.96_se": float(np.mean(np.abs(offsets) > 1.96 * se)),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sim", type=Path, action="append", required=True, help="simulator output folder (repeatable)")
    ap.add_argument("--draw-spread", metavar="RUN", help="check the validation draws with this run's last model")
    ap.add_argument("--first-seed", type=int, default=200, help="first seed of --draw-spread's draws")
    ap.add_argument("--draws", type=int, default=5000)
    ap.add_argument("--population", type=int, default=10_000, help="pool items each round's model scores")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--csv", type=Path, default=None, help="also write the per-round table here")
    args = ap.parse_args()
    if args.draw_spread:
        spread = draw_spread(args.sim[0], args.draw_spread, draws=args.draws, first_seed=args.first_seed)
        print(
            f"{args.draw_spread}: accuracy {spread['pool_accuracy']:.4f} on the pool items it did not train on; "
            f"its own validation sample {spread['own_offset']:+.2f} points from that; {args.draws} draws "
            f"(seeds {args.first_seed}..{args.first_seed + args.draws - 1}): mean {spread['mean_offset']:+.2f}, "
            f"sd {spread['sd_offset']:.2f} points (binomial {spread['binomial_sd']:.2f}), "
            f"{spread['share_beyond_1.96_se']:.1%} beyond 1.96 binomial standard errors"
        )
        return
    frames = []
    for sim in args.sim:
        oracle = read_oracle(sim)
        curve = pd.read_csv(sim / "curve.csv")
        for _, run in curve.groupby(["strategy", "setting", "seed"]):
            frames.append(run_coverage(sim, run, oracle, draws=args.draws, population=args.population, seed=args.seed))
    df = pd.concat(frames, ignore_index=True)
    if args.csv:
        args.csv.parent.mkdir(parents=True, exist_ok=True)
        df.to_csv(args.csv, index=False)
    cols = ["realised", "resampled", "val_minus_test", "pool_minus_test"]
    per_run = df.groupby(["strategy", "setting", "seed"])[cols].mean()
    with pd.option_context("display.float_format", "{:.3f}".format, "display.width", 120):
        print(per_run.to_string())
        print()
        print(
            f"{len(df)} rounds: realised coverage {df['realised'].mean():.3f} "
            f"({int(df['realised'].sum())}/{len(df)}), resampled coverage {df['resampled'].mean():.3f} "
            f"({args.draws} validation draws a round), pool - test accuracy {df['pool_minus_test'].mean():+.4f}"
        )


if __name__ == "__main__":
    main()
