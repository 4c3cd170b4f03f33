"""Backtests of the stop advice (issue 39; docs/experiments.md E32, E33).

    python bench/research/stopping.py forecast [--set calibration|heldout|all] [--png docs/img/forecast_backtest.png]
    python bench/research/stopping.py stop --sim /work/scratch/sim/digits_stop [--sim ...]

``forecast``: every run (strategy, setting, seed) of every ``bench/results/*.csv`` with per-round validation accuracy
(a run repeated in another file counted once, the longer kept); for every round r ≥ 4 whose round r + 5 was recorded,
:func:`alwb.learning.advice.forecast` from rounds 1..r's validation accuracies, at round r + 5's labels, against round
r + 5's
*test* accuracy. Printed per set: the cases, how often the 80% interval held the test accuracy, and the median
absolute error (points) of the forecast, of "no change" (round r's validation accuracy) and of a plain power law.

``stop``: runs of ``alwb simulate`` (whose ``curve.csv`` has the ``kappa`` column); for each rule, the round at
which it first says stop, the labels saved (share of the run's labels not spent) and the test accuracy lost
(points, the end's minus the stop's). Rules: alwb's recommendation (:func:`alwb.learning.advice.recommend`),
small-text's
``KappaAverage`` at its defaults (window 3, kappa 0.99: the mean of the window's kappas ≥ 0.99, Bloodgood &
Vijay-Shanker's reading; small-text ≥ 1.3.3), the rule small-text had before 1.3.3 (the mean change between the
window's kappas under 0.01), and the forecast alone. Recorded 2,000-label curves (no kappa) get the forecast
rule with ``--recorded``.

``tradeoff`` (E59): can *any* rule on the past tell a plateau from a curve still rising? On every recorded run with
kappa (``bench/results/*.csv``, runs repeated across files counted once), at every round up to 70% of the run's
labels, the forecast's gain from there to the run's end, fitted once to the validation curve (what a person sees)
and once to the test curve (the same run measured on its large test split: a nearly noise-free past), and the mean
of the last three kappas. Thresholds on each, and on both together, are applied as stop rules: plateau runs that
meet issue 39's "≥ 30% saved, ≤ 1 point lost", and rising runs stopped and losing over a point.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from alwb.learning.advice import (
    DECISION_LABELS,
    FAMILIES,
    LOG,
    MIN_GAIN_POINTS,
    POWER,
    CurveFamily,
    forecast,
    plain_power_law,
    recommend,
)

RESULTS = Path(__file__).resolve().parents[1] / "results"
AHEAD = 5
FIRST = 4

# ------------------------------------------------------------------------------------------------ the recorded runs


def heldout(name: str) -> bool:
    """Whether a results file is in E32's held-out set (cnn6 Fashion-MNIST, the checked pseudo-labels, CIFAR-10)."""
    return name.startswith("cifar10_") or "cnn6" in name or name == "fmnist_margin_pseudo_checked.csv"


def recorded_runs(folder: Path = RESULTS) -> list[dict]:
    """Every run with validation accuracy, once: ``file``, ``key``, ``rows`` (a frame sorted by labels)."""
    runs = []
    for f in sorted(folder.glob("*.csv")):
        df = pd.read_csv(f)
        need = {"strategy", "setting", "seed", "n_labeled", "val_accuracy", "val_n", "test_accuracy"}
        if not need <= set(df.columns):
            continue
        for key, g in df.groupby(["strategy", "setting", "seed"], sort=True):
            g = g.dropna(subset=["val_accuracy", "test_accuracy"]).sort_values("n_labeled")
            g = g.drop_duplicates("n_labeled", keep="last").reset_index(drop=True)
            if len(g):
                runs.append({"file": f.name, "key": key, "rows": g})
    # a run repeated in another file (a resumed 2,000-label run, a merged table) is counted once: the longer kept
    runs.sort(key=lambda r: -len(r["rows"]))
    kept: list[dict] = []
    for r in runs:
        sig = tuple(np.round(r["rows"]["test_accuracy"].to_numpy(), 4))
        if any(tuple(np.round(k["rows"]["test_accuracy"].to_numpy()[: len(sig)], 4)) == sig for k in kept):
            continue
        kept.append(r)
    return kept


def _loglin(n: np.ndarray, a: float, b: float) -> np.ndarray:
    return a + b * np.log(n)


#: E46's candidate family: no ceiling, accuracy growing by b per e-fold of labels (a steep curve far from its plateau)
LOGLIN = CurveFamily("loglin", _loglin, (0.0, 0.05), (-5.0, 0.0), (1.0, 1.0), ceiling=False)


def forecast_cases(runs: Sequence[dict], families: Sequence[CurveFamily] = FAMILIES) -> pd.DataFrame:
    """One row per (run, round r): the forecasts of round r + 5 and its test accuracy (curve ``families``)."""
    out = []
    for run in runs:
        g = run["rows"]
        n, v, nv, t = (g[c].to_numpy(float) for c in ("n_labeled", "val_accuracy", "val_n", "test_accuracy"))
        for r in range(FIRST, len(g) - AHEAD + 1):
            at = n[r - 1 + AHEAD]
            fc = forecast(n[:r], v[:r], nv[:r].astype(int), families=families)
            mid = lo = hi = math.nan
            if fc is not None:
                m, lw, h = fc.predict([at])
                mid, lo, hi = float(m[0]), float(lw[0]), float(h[0])
            out.append(
                {
                    "file": run["file"],
                    "run": "/".join(map(str, run["key"])),
                    "set": "heldout" if heldout(run["file"]) else "calibration",
                    "longtail": "longtail" in run["file"],
                    "round": r,
                    "labels": n[r - 1],
                    "at": at,
                    "truth": t[r - 1 + AHEAD],
                    "forecast": mid,
                    "low": lo,
                    "high": hi,
                    "no_change": v[r - 1],
                    "power_law": float(plain_power_law(n[:r], v[:r], [at])[0]),
                }
            )
    return pd.DataFrame(out)


def summary(cases: pd.DataFrame) -> dict:
    """Cases, coverage of the 80% interval, median absolute errors (points) of the three forecasts."""
    ok = cases.dropna(subset=["forecast"])
    inside = (ok["truth"] >= ok["low"]) & (ok["truth"] <= ok["high"])
    return {
        "cases": len(cases),
        "forecast made": len(ok),
        "80% interval held": f"{int(inside.sum())}/{len(ok)} ({inside.mean():.0%})" if len(ok) else "-",
        "median width (pts)": round(float(((ok["high"] - ok["low"]) * 100).median()), 2) if len(ok) else None,
        "MAE forecast": round(float((ok["forecast"] - ok["truth"]).abs().median() * 100), 2),
        "MAE no change": round(float((ok["no_change"] - ok["truth"]).abs().median() * 100), 2),
        "MAE power law": round(float((ok["power_law"] - ok["truth"]).abs().median() * 100), 2),
    }


def read_sim(sim: str) -> tuple[Path, pd.DataFrame]:
    """A ``--sim`` argument: a simulation folder or a ``curve.csv``, optionally ``@STRATEGY,...`` to keep only those
    strategies' runs (e.g. the fresh runs added to a folder whose other runs an earlier backtest saw)."""
    where, _, only = sim.partition("@")
    f = Path(where) / "curve.csv" if Path(where).is_dir() else Path(where)
    df = pd.read_csv(f)
    if only:
        df = df[df["strategy"].isin(only.split(","))]
    return f, df


def sim_runs(paths: Sequence[str]) -> list[dict]:
    """The runs of simulation folders (or their ``curve.csv``), shaped as :func:`recorded_runs`'s."""
    runs = []
    for sim in paths:
        f, df = read_sim(sim)
        for key, g in df.groupby(["strategy", "setting", "seed"], sort=True):
            g = g.dropna(subset=["val_accuracy", "test_accuracy"]).sort_values("n_labeled").reset_index(drop=True)
            runs.append({"file": f"{f.parent.name}/{f.name}", "key": key, "rows": g})
    return runs


def cmd_forecast(args: argparse.Namespace) -> None:
    if args.sim:  # new runs: the clean held-out set of E32's amendment
        cases = forecast_cases(sim_runs(args.sim), _families(args.families))
        cases["set"] = "new runs"
        groups = {f: cases[cases["file"] == f] for f in dict.fromkeys(cases["file"])} if len(args.sim) > 1 else {}
        table = pd.DataFrame({**{k: summary(v) for k, v in groups.items() if len(v)}, "new runs": summary(cases)}).T
        pd.set_option("display.width", 200)
        print(table.to_string())
        if args.csv:
            cases.to_csv(args.csv, index=False)
        return
    runs = recorded_runs()
    if args.set != "all":  # only the set asked for is forecast (the others stay unseen)
        runs = [r for r in runs if heldout(r["file"]) == (args.set == "heldout")]
    cases = forecast_cases(runs, _families(args.families))
    if args.csv:
        cases.to_csv(args.csv, index=False)
    groups = {
        "calibration": cases[cases["set"] == "calibration"],
        "held-out": cases[cases["set"] == "heldout"],
        "all": cases,
        "all, long-tailed pools left out": cases[~cases["longtail"]],
        "long-tailed pools only": cases[cases["longtail"]],
    }
    if args.set != "all":
        want = {"calibration": ["calibration"], "heldout": ["held-out"]}[args.set]
        groups = {k: v for k, v in groups.items() if k in want}
    table = pd.DataFrame({k: summary(v) for k, v in groups.items() if len(v)}).T
    pd.set_option("display.width", 200)
    print(f"forecast of test accuracy {AHEAD} rounds ahead from rounds 1..r (r ≥ {FIRST}), median abs. error in points")
    print(table.to_string())
    if args.png:
        plot_forecasts(cases if args.set == "all" else cases[cases["set"] == args.set], args.png)
        print(f"wrote {args.png}")


def plot_forecasts(cases: pd.DataFrame, png: str) -> None:
    """Left: forecasts against the test accuracy they aimed at, with their 80% intervals. Right: an example run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = cases.dropna(subset=["forecast"])
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5), dpi=110)
    ax = axes[0]
    inside = (ok["truth"] >= ok["low"]) & (ok["truth"] <= ok["high"])
    for mask, colour, label in ((inside, "tab:blue", "interval held it"), (~inside, "tab:red", "missed")):
        d = ok[mask]
        ax.errorbar(
            d["truth"],
            d["forecast"],
            yerr=[d["forecast"] - d["low"], d["high"] - d["forecast"]],
            fmt="o",
            ms=2.5,
            lw=0.6,
            alpha=0.5,
            color=colour,
            label=f"{label} ({int(mask.sum())})",
        )
    lim = [min(ok["truth"].min(), ok["low"].min()) - 0.01, max(ok["truth"].max(), ok["high"].max()) + 0.01]
    ax.plot(lim, lim, "k--", lw=0.8)
    ax.set_xlabel(f"test accuracy {AHEAD} rounds later")
    ax.set_ylabel("forecast (80% interval)")
    ax.set_title("every case: forecast against what came")
    ax.legend(fontsize=8)
    ax = axes[1]
    runs = recorded_runs()
    run = next(r for r in runs if r["file"] == "fmnist_cnn6_pseudo_2000.csv")
    g = run["rows"]
    n, v, nv, t = (g[c].to_numpy(float) for c in ("n_labeled", "val_accuracy", "val_n", "test_accuracy"))
    ax.plot(n, v, "o-", ms=3, color="tab:blue", label="validation accuracy (what the person sees)")
    ax.plot(n, t, "s", ms=3, color="k", label="test accuracy (the truth)")
    for r, colour in ((4, "tab:orange"), (8, "tab:green")):
        fc = forecast(n[:r], v[:r], nv[:r].astype(int))
        if fc is None:
            continue
        grid = np.linspace(n[r - 1], n[-1], 50)
        m, lo, hi = fc.predict(grid)
        ax.plot(grid, m, "--", color=colour, label=f"forecast from round {r}")
        ax.fill_between(grid, lo, hi, color=colour, alpha=0.2)
    ax.set_xlabel("labels")
    ax.set_ylabel("accuracy")
    ax.set_title(f"{run['file']} {'/'.join(map(str, run['key']))}")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(png)
    plt.close(fig)


# ------------------------------------------------------------------------------------------------- the stop rules


def small_text_old_kappa_average(kappas: Sequence[float], window: int = 3, kappa: float = 0.99) -> list[bool]:
    """small-text's ``KappaAverage.stop`` before version 1.3.3 after each pair (its code then: stop when the mean
    absolute difference between consecutive kappas of the last ``window`` is under ``1 − kappa``; all-NaN deltas
    stop). small-text 1.3.3 called this flawed and replaced it with :func:`bv_kappa_average`."""
    history: list[float] = []
    out = []
    for k in kappas:
        history.append(k)
        if len(history) < window:
            out.append(False)
            continue
        history = history[-window:]
        deltas = np.abs([a - b for a, b in zip(history, history[1:], strict=False)])
        out.append(bool(all(np.isnan(deltas)) or np.mean(deltas) < (1 - kappa)))
    return out


def bv_kappa_average(kappas: Sequence[float], window: int = 3, kappa: float = 0.99) -> list[bool]:
    """small-text's ``KappaAverage`` (1.3.3 and later; 1.4.1 checked: the same decisions on 200 random prediction
    sequences) and Bloodgood & Vijay-Shanker's reading: the mean of the last ``window`` kappas is at least
    ``kappa``."""
    return [i + 1 >= window and float(np.mean(kappas[i + 1 - window : i + 1])) >= kappa for i in range(len(kappas))]


def stop_points(g: pd.DataFrame, rules: Sequence[str]) -> dict[str, int | None]:
    """For each rule, the first row index (0-based, in label order) at which it says stop; None if never."""
    n, v, nv = (g[c].to_numpy(float) for c in ("n_labeled", "val_accuracy", "val_n"))
    kap = g["kappa"].to_numpy(float) if "kappa" in g else np.full(len(g), np.nan)
    pairs = [None if math.isnan(k) else float(k) for k in kap[1:]]  # kappa of row i against row i - 1
    out: dict[str, int | None] = dict.fromkeys(rules)
    st = small_text_old_kappa_average([np.nan if k is None else k for k in pairs])
    bv = bv_kappa_average([0.0 if k is None else k for k in pairs])
    for i in range(len(g)):
        fc = None
        if {"alwb", "forecast"} & set(rules):
            fc = forecast(n[: i + 1], v[: i + 1], nv[: i + 1].astype(int))
        for rule in rules:
            if out[rule] is not None:
                continue
            if rule == "alwb":
                stop, _ = recommend(fc, pairs[:i], n_rounds=i + 1)
            elif rule == "forecast":
                stop = fc is not None and fc.gain(DECISION_LABELS)[2] < MIN_GAIN_POINTS
            elif rule == "small-text < 1.3.3":
                stop = i >= 1 and st[i - 1]
            elif rule == "small-text KappaAverage":
                stop = i >= 1 and bv[i - 1]
            else:
                raise ValueError(rule)
            if stop:
                out[rule] = i
    return out


def stop_table(runs: Sequence[tuple[str, pd.DataFrame]], rules: Sequence[str]) -> pd.DataFrame:
    """One row per run and rule: where it stopped, labels saved, accuracy lost, and whether the run plateaus."""
    rows = []
    for name, g in runs:
        g = g.sort_values("n_labeled").reset_index(drop=True)
        n, t = g["n_labeled"].to_numpy(float), g["test_accuracy"].to_numpy(float)
        i60 = int(np.argmin(np.abs(n - 0.6 * n[-1])))
        plateau = (t[-1] - t[i60]) * 100 <= 1.0
        for rule, i in stop_points(g, rules).items():
            j = len(g) - 1 if i is None else i
            rows.append(
                {
                    "run": name,
                    "rule": rule,
                    "plateau": plateau,
                    "stopped at": None if i is None else int(n[j]),
                    "end": int(n[-1]),
                    "saved %": round((1 - n[j] / n[-1]) * 100, 1),
                    "lost pts": round((t[-1] - t[j]) * 100, 2),
                }
            )
    return pd.DataFrame(rows)


def stop_summary(table: pd.DataFrame) -> pd.DataFrame:
    """Per rule, on the runs that plateau: runs, median saved, median and worst lost, and the issue's rule."""
    out = {}
    for rule, g in table.groupby("rule", sort=False):
        p = g[g["plateau"]]
        good = (p["saved %"] >= 30) & (p["lost pts"] <= 1.0)
        out[rule] = {
            "runs (plateau)": f"{len(g)} ({len(p)})",
            "median saved %": p["saved %"].median(),
            "median lost pts": p["lost pts"].median(),
            "worst lost pts": p["lost pts"].max(),
            "saved ≥ 30% and lost ≤ 1": f"{int(good.sum())}/{len(p)}",
        }
    return pd.DataFrame(out).T


def plot_stops(runs: Sequence[tuple[str, pd.DataFrame]], table: pd.DataFrame, png: str) -> None:
    """Each run's test accuracy against labels, with the point where each rule said stop."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    markers = {"alwb": "o", "small-text KappaAverage": "s", "small-text < 1.3.3": "^", "forecast": "D"}
    for k, (name, g) in enumerate(runs):
        g = g.sort_values("n_labeled")
        ax.plot(g["n_labeled"], g["test_accuracy"], "-", color=f"C{k % 10}", lw=1, alpha=0.7)
        for _, row in table[(table["run"] == name) & table["stopped at"].notna()].iterrows():
            y = float(g.loc[g["n_labeled"] == row["stopped at"], "test_accuracy"].iloc[0])
            ax.plot(row["stopped at"], y, markers[row["rule"]], color=f"C{k % 10}", ms=6, mfc="none")
    for rule, m in markers.items():
        ax.plot([], [], m, color="gray", mfc="none", label=f"{rule} stops")
    ax.set_xlabel("labels")
    ax.set_ylabel("test accuracy")
    ax.set_title("where each rule stops (one line per run)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(png)
    plt.close(fig)


def cmd_stop(args: argparse.Namespace) -> None:
    pd.set_option("display.width", 220)
    runs = []
    for sim in args.sim:
        f, df = read_sim(sim)
        for key, g in df.groupby(["strategy", "setting", "seed"], sort=True):
            runs.append((f"{f.parent.name if f.name == 'curve.csv' else f.stem}:{'/'.join(map(str, key))}", g))
    if args.kappa_runs:  # E59's 111 runs: every recorded run with kappa, once
        runs += [(f"{r['file']}:{'/'.join(map(str, r['key']))}", r["rows"]) for r in kappa_runs()]
    if runs:
        rules = ["alwb", "small-text KappaAverage", "small-text < 1.3.3", "forecast"]
        table = stop_table(runs, rules)
        print(table.to_string(index=False))
        print()
        print(stop_summary(table).to_string())
        if args.png:
            plot_stops(runs, table, args.png)
            print(f"wrote {args.png}")
    if args.recorded:
        rec = [
            (f"{r['file']}:{'/'.join(map(str, r['key']))}", r["rows"])
            for r in recorded_runs()
            if r["rows"]["n_labeled"].max() >= 2000
        ]
        table = stop_table(rec, ["forecast"])
        print("\nrecorded 2,000-label curves (no kappa recorded): the forecast rule alone")
        print(table.to_string(index=False))
        print()
        print(stop_summary(table).to_string())


# ----------------------------------------------------------------------------------------- E59: the trade-off
def _test_size(acc: np.ndarray) -> int:
    """The test split's size, read off a run's test accuracies: the smallest n making every one a whole count."""
    for n in range(50, 20001):
        if np.all(np.abs(acc * n - np.round(acc * n)) < 1e-6 * n):
            return n
    return 10_000


def kappa_runs(folder: Path = RESULTS) -> list[dict]:
    """The recorded runs (:func:`recorded_runs`: each once) that logged kappa and have at least 8 rounds and 500
    labels; ``file`` without its ``.csv``."""
    return [
        {**r, "file": Path(r["file"]).stem}
        for r in recorded_runs(folder)
        if "kappa" in r["rows"]
        and r["rows"]["kappa"].notna().any()
        and len(r["rows"]) >= 8
        and r["rows"]["n_labeled"].iloc[-1] >= 500
    ]


def tradeoff_rows(runs: Sequence[dict]) -> pd.DataFrame:
    """One row per (run, round up to 70% of its labels): the forecast gain to the run's end from the validation
    and from the test curve, the mean of the last three kappas, and what stopping there saves and loses."""
    rows = []
    for run in runs:
        g = run["rows"]
        n, v, t = (g[c].to_numpy(float) for c in ("n_labeled", "val_accuracy", "test_accuracy"))
        nv, kap, end = g["val_n"].to_numpy(int), g["kappa"].to_numpy(float), n[-1]
        nt = _test_size(t)
        i60 = int(np.argmin(np.abs(n - 0.6 * end)))
        plateau = bool((t[-1] - t[i60]) * 100 <= 1.0)
        for i in range(FIRST - 1, len(g)):
            if n[i] > 0.7 * end:
                break
            fv = forecast(n[: i + 1], v[: i + 1], nv[: i + 1])
            ft = forecast(n[: i + 1], t[: i + 1], np.full(i + 1, nt))
            gv = fv.gain(end - n[i]) if fv else (math.nan,) * 3
            gt = ft.gain(end - n[i]) if ft else (math.nan,) * 3
            k3 = kap[max(1, i - 2) : i + 1]
            rows.append(
                {
                    "file": run["file"],
                    "run": "/".join(map(str, run["key"])),
                    "labels": n[i],
                    "end": end,
                    "plateau": plateau,
                    "lost": (t[-1] - t[i]) * 100,
                    "saved": (1 - n[i] / end) * 100,
                    "val_mid": gv[0],
                    "val_high": gv[2],
                    "test_mid": gt[0],
                    "test_high": gt[2],
                    "kappa3": float(np.nanmean(k3)) if np.isfinite(k3).any() else math.nan,
                }
            )
    return pd.DataFrame(rows)


def apply_rule(rows: pd.DataFrame, stop: pd.Series, name: str) -> dict:
    """The first round of each run where ``stop`` holds: plateau runs meeting the issue's rule, rising runs
    stopped and those losing over a point (never stopping: 0 saved, 0 lost)."""
    out = []
    for _, g in rows.assign(stop=stop).groupby(["file", "run"], sort=False):
        hit = g[g["stop"]]
        lost, saved = (float(hit["lost"].iloc[0]), float(hit["saved"].iloc[0])) if len(hit) else (0.0, 0.0)
        out.append({"plateau": bool(g["plateau"].iloc[0]), "lost": lost, "saved": saved, "stopped": len(hit) > 0})
    o = pd.DataFrame(out)
    p, q = o[o["plateau"]], o[~o["plateau"]]
    good = int(((p["saved"] >= 30) & (p["lost"] <= 1.0)).sum())
    return {
        "rule": name,
        "plateau runs meeting the rule": f"{good}/{len(p)} ({good / max(1, len(p)):.0%})",
        "rising runs stopped": f"{int(q['stopped'].sum())}/{len(q)}",
        "rising runs losing > 1 pt": int((q["lost"] > 1.0).sum()),
        "worst loss (pts)": round(float(o["lost"].max()), 1),
    }


def cmd_tradeoff(args: argparse.Namespace) -> None:
    if args.rows and Path(args.rows).is_file() and not args.refresh:
        rows = pd.read_csv(args.rows)
    else:
        runs = kappa_runs()
        rows = tradeoff_rows(runs)
        if args.rows:
            rows.to_csv(args.rows, index=False)
    per_run = rows.groupby(["file", "run"])["plateau"].first()
    print(f"{len(per_run)} runs, {int(per_run.sum())} plateau (test accuracy at the end within 1 point of 60%)")
    table = []
    for col, what in (("val", "validation curve"), ("test", "test curve")):
        for part in ("mid", "high"):
            for t in (0.5, 1.0, 1.5, 2.0, 3.0):
                stop = rows[f"{col}_{part}"] < t
                table.append(apply_rule(rows, stop, f"gain to the end < {t:g} pts ({what}, forecast {part})"))
    for k in (0.99, 0.98, 0.97, 0.95, 0.9):
        table.append(apply_rule(rows, rows["kappa3"] >= k, f"mean of the last 3 kappas >= {k:g}"))
    for k in (0.95, 0.9):
        for t in (1.0, 1.5, 2.0):
            for col, what in (("val", "validation"), ("test", "test")):
                stop = (rows[f"{col}_high"] < t) & (rows["kappa3"] >= k)
                table.append(apply_rule(rows, stop, f"kappas >= {k:g} and gain < {t:g} pts ({what}, high)"))
    pd.set_option("display.width", 220)
    print(pd.DataFrame(table).to_string(index=False))


def _families(names: str | None) -> tuple[CurveFamily, ...]:
    """Curve families by name (``power,log,loglin``); the product's without names."""
    if not names:
        return FAMILIES
    known = {f.name: f for f in (POWER, LOG, LOGLIN)}
    return tuple(known[n] for n in names.split(","))


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("forecast")
    p.add_argument("--set", choices=["calibration", "heldout", "all"], default="all")
    p.add_argument("--png", help="write the picture here")
    p.add_argument("--csv", help="write every case here")
    p.add_argument(
        "--sim",
        action="append",
        default=[],
        help="forecast these simulation folders' runs instead (PATH[@STRATEGY,...])",
    )
    p.add_argument("--families", help="curve families, e.g. power,log,loglin (default: the product's)")
    p.set_defaults(func=cmd_forecast)
    p = sub.add_parser("stop")
    p.add_argument(
        "--sim", action="append", default=[], help="a simulation folder or its curve.csv (PATH[@STRATEGY,...])"
    )
    p.add_argument("--recorded", action="store_true", help="also the recorded 2,000-label curves, forecast rule")
    p.add_argument("--kappa-runs", action="store_true", help="every recorded run with kappa, once (E59's runs)")
    p.add_argument("--png", help="write the picture of the --sim runs here")
    p.set_defaults(func=cmd_stop)
    p = sub.add_parser("tradeoff", help="E59: stop rules on the past (validation or test curve, kappa) vs the future")
    p.add_argument("--rows", help="the per-round table: read it when it exists, else compute and write it here")
    p.add_argument("--refresh", action="store_true", help="compute the per-round table even when --rows exists")
    p.set_defaults(func=cmd_tradeoff)
    args = ap.parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    sys.exit(main())
