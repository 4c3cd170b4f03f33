"""Label efficiency on Fashion-MNIST (or any train/test ImageFolder dataset): strategies × settings × labels.

    python bench/research/label_efficiency.py --dataset ../shared/datasets/fashion-mnist --out bench/out/fmnist \\
        --strategies margin,entropy,random --settings plain,pseudo --seeds 0,1,2 --budget 1000

Each setting runs ``alwb simulate`` (the workbench's own engine with an oracle) into OUT/<setting>/ and the script
prints one table: mean ± std over seeds of the test accuracy (and macro-F1) at each label count, plus the mean
round time. ``--settings`` items: plain, pseudo, weights, smote, adasyn, pseudo+smote, scratch (no warm start);
``pseudo+cap2+steps3+th0.9`` sets the pseudo-label cap per class (× its labels), the step multiple of a pseudo round
and the confidence threshold; ``warm1`` gives a warm-started round the steps of a cold start (default half).
Every other training setting is the product's default (``--augment`` changes the augmentation). The research
settings ``cons1`` (consistency loss) and ``pseudo+flat`` (flat caps) were measured as no gain and left the
simulator for :mod:`alwb.experimental` (their curves stay in ``bench/results/fmnist_cnn6_semi_variants.csv``).
Re-running resumes: finished rounds are not recomputed.

``--baseline margin/plain`` also prints every other row's gain over that one, paired by seed (only seeds both
ran): mean ± std of the per-seed differences and a 95% t-interval. Three seeds move a mean by a few tenths of a
point, so read a gain whose interval contains 0 as not shown.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pandas as pd

from alwb.config import AUGMENTATIONS, TrainConfig
from alwb.simulate import SimSettings, plot_curve, simulate


def settings_for(name: str, args: argparse.Namespace) -> SimSettings:
    """Parse a setting name like ``pseudo+smote``."""
    parts = set(name.split("+")) - {"plain"}
    balance = next((p for p in parts if p in ("weights", "smote", "adasyn")), "none")
    numbered = {p: m for p in parts if (m := re.fullmatch(r"(cap|steps|th|warm)(\d+(?:\.\d+)?)", p))}
    numbers = {m[1]: float(m[2]) for m in numbered.values()}
    unknown = parts - {"pseudo", "scratch", "weights", "smote", "adasyn"} - set(numbered)
    if unknown:
        raise SystemExit(f"unknown setting part(s): {', '.join(sorted(unknown))}")
    d = TrainConfig()
    train = TrainConfig(
        pseudo="pseudo" in parts,
        balance=balance,
        device=args.device,
        epochs=args.epochs,
        model=args.model,
        augment=args.augment or d.augment,
        warm_start="scratch" not in parts,
        score_limit=args.score_limit,
        pseudo_cap=numbers.get("cap", d.pseudo_cap),
        pseudo_steps=numbers.get("steps", d.pseudo_steps),
        pseudo_threshold=numbers.get("th", d.pseudo_threshold),
        warm_epochs_ratio=numbers.get("warm", d.warm_epochs_ratio),
    )
    return SimSettings(initial=args.initial, batch=args.batch, budget=args.budget, val_size=args.val_size, train=train)


def table(df: pd.DataFrame, metric: str = "test_accuracy", every: int = 0) -> pd.DataFrame:
    """Mean ± std over seeds of ``metric`` per strategy, setting and label count (``df``: curve rows)."""
    if every:
        df = df[df["n_labeled"] % every == 0]
    g = df.groupby(["strategy", "setting", "n_labeled"])
    out = g[metric].agg(["mean", "std", "count"]).reset_index()
    out["round_s"] = g["round_seconds"].mean().values
    out["value"] = out.apply(lambda r: f"{r['mean']:.4f} ± {0 if pd.isna(r['std']) else r['std']:.4f}", axis=1)
    return out


def paired(df: pd.DataFrame, baseline: tuple[str, str], metric: str = "test_accuracy") -> pd.DataFrame:
    """Each (strategy, setting)'s gain over ``baseline`` per label count, paired by seed.

    Columns: strategy, setting, n_labeled, seeds (how many both ran), gain (mean difference), std, low, high (95%
    t-interval of the mean difference; NaN with one seed).
    """
    from scipy import stats

    is_base = (df["strategy"] == baseline[0]) & (df["setting"] == baseline[1])
    if not is_base.any():
        have = sorted({f"{a}/{b}" for a, b in zip(df["strategy"], df["setting"], strict=True)})
        raise ValueError(f"no rows for the baseline {baseline[0]}/{baseline[1]}; the curves hold {', '.join(have)}")
    base = df[is_base].set_index(["seed", "n_labeled"])[metric].rename("base")
    m = df[~is_base].join(base, on=["seed", "n_labeled"], how="inner")
    m["diff"] = m[metric] - m["base"]
    g = m.groupby(["strategy", "setting", "n_labeled"])["diff"]
    out = g.agg(seeds="count", gain="mean", std="std").reset_index()
    half = stats.t.ppf(0.975, (out["seeds"] - 1).clip(lower=1)) * out["std"] / out["seeds"].pow(0.5)
    half[out["seeds"] < 2] = float("nan")
    out["low"], out["high"] = out["gain"] - half, out["gain"] + half
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", type=Path, default=Path("../shared/datasets/fashion-mnist"))
    ap.add_argument("--train-manifest", type=Path, default=None)
    ap.add_argument("--out", type=Path, default=Path("bench/out/fmnist"))
    ap.add_argument("--strategies", default="margin,random")
    ap.add_argument("--settings", default="plain")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--initial", type=int, default=100)
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--budget", type=int, default=1000)
    ap.add_argument("--val-size", type=int, default=500)
    ap.add_argument("--epochs", type=int, default=0)
    ap.add_argument("--model", default="auto", help="auto (cnn6 for Fashion-MNIST), cnn6, resnet18")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--augment", choices=AUGMENTATIONS, default=None, help="default: the product's")
    ap.add_argument("--score-limit", type=int, default=20_000, help="unlabeled items scored per round (0 = all)")
    ap.add_argument("--metric", default="test_accuracy")
    ap.add_argument("--report-only", action="store_true", help="print the table of what OUT holds")
    ap.add_argument("--baseline", default=None, help="STRATEGY/SETTING: also print the other rows' gains over it")
    args = ap.parse_args()
    strategies = args.strategies.split(",")
    seeds = [int(s) for s in args.seeds.split(",")]
    curves = []
    for name in args.settings.split(","):
        out = args.out / name
        if not args.report_only:
            simulate(
                args.dataset,
                out,
                strategies=strategies,
                seeds=seeds,
                settings=settings_for(name, args),
                train_manifest=args.train_manifest,
            )
        curves.append(out / "curve.csv")
    all_rows = pd.concat([pd.read_csv(c) for c in curves if c.is_file()], ignore_index=True)
    t = table(all_rows, args.metric)
    wide = t.pivot_table(index=["strategy", "setting"], columns="n_labeled", values="value", aggfunc="first")
    with pd.option_context("display.width", 250, "display.max_columns", 50):
        print(f"{args.metric}, mean ± std over seeds {args.seeds}")
        print(wide.to_string())
        print("\nmean seconds per round:")
        print(t.groupby(["strategy", "setting"])["round_s"].mean().round(1).to_string())
    merged = args.out / "curve_all.csv"
    all_rows.to_csv(merged, index=False)
    if args.baseline:
        strategy, _, setting = args.baseline.partition("/")
        setting = setting or "plain"
        gains = paired(all_rows, (strategy, setting), args.metric)
        last = gains["n_labeled"].max() if len(gains) else 0
        print(f"\ngain in {args.metric} over {strategy}/{setting} at {last} labels, paired by seed:")
        if gains.empty:
            print("  (no other row shares a seed and a label count with it)")
        for r in gains[gains["n_labeled"] == last].itertuples():
            print(
                f"  {r.strategy}/{r.setting}: {r.gain:+.4f} ± {r.std:.4f} over {r.seeds} seed(s),"
                f" 95% interval [{r.low:+.4f}, {r.high:+.4f}]"
            )
    plot_curve(merged, args.out / "curve_all.png")
    print(f"\ncurves: {merged}, picture: {args.out / 'curve_all.png'}")


if __name__ == "__main__":
    main()
