"""When to stop labeling: what more labels would buy, how stable the predictions are, and a recommendation.

Three parts, each usable alone:

- :func:`forecast` fits learning curves to the rounds' validation accuracies (a small ensemble: a saturating power
  law ``a − b·n^(−c)`` and a saturating logarithm, weighted by the validation sample's binomial noise) and
  extrapolates to more labels. Its interval carries the fit's uncertainty (a parametric bootstrap over the
  rounds' validation noise and the spread between the curve families) *and* the validation sample's own noise
  (one validation sample measures every round, so its offset from the true accuracy is shared by the whole curve).
- :func:`stability` is Cohen's kappa between two rounds' predictions on a fixed *stop set* of unlabeled items, and
  the share of those predictions that changed (Bloodgood & Vijay-Shanker 2009, "stabilizing predictions").
- :func:`recommend` combines them, optionally with the cost of a label and the value of a point of accuracy.

:func:`project_advice` builds all three from a project's recorded rounds (what ``alwb status --json`` carries
under ``advice``). Backtested on the recorded curves in ``docs/results.md`` (E32, E33).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:  # pragma: no cover
    from ..project import Project
    from .scores import Scores

#: rounds with a validation accuracy needed before a forecast is made
MIN_ROUNDS = 4
#: the label counts ahead that the advice forecasts
HORIZONS = (100, 500, 1000)
#: the central coverage of the forecast interval
LEVEL = 0.80
#: items of the stop set: a fixed, seeded sample of the pool whose predictions are compared round to round
STOP_SET_SIZE = 1000
#: predictions count as stable when this many consecutive-round kappas in a row are all at least :data:`KAPPA_STOP`
#: (Bloodgood & Vijay-Shanker 2009: window 3, kappa 0.99)
KAPPA_WINDOW = 3
KAPPA_STOP = 0.99
#: without costs, stop when +500 labels buy less than this many points at the top of the forecast interval
MIN_GAIN_POINTS = 0.5
#: the label count ahead the recommendation weighs
DECISION_LABELS = 500
#: without costs, +500 labels buying fewer points than this (the forecast's middle) is a slow curve: no rule on the
#: past tells a plateau from a slow rise there (E59: not even one fitted to the test curve), so the advice gives the
#: exchange rate (labels a point) and leaves the call to the person, or to the costs in Settings
SLOW_POINTS = 2.0
#: bootstrap draws of the forecast (deterministic: seeded)
DRAWS = 100
#: the interval's half-width is scaled by this factor: 1.04 made the 80% interval hold 80% of the calibration
#: cases of E32 (smallcnn Fashion-MNIST files, long-tailed pools left out; it held 77.6% at 1.0), rounded up
INFLATE = 1.05


# --------------------------------------------------------------------------------------------- learning curves
def _pow(n: np.ndarray, a: float, b: float, c: float) -> np.ndarray:
    return a - b * np.power(n, -c)


def _log(n: np.ndarray, a: float, b: float, c: float) -> np.ndarray:
    # a saturating logarithm: grows like b·log(n) early, flattens towards a (c sets where)
    return a - b / (1.0 + c * np.log(n))


@dataclass(frozen=True)
class CurveFamily:
    """A learning-curve shape ``f(n, *params)`` with its starting guess and bounds; ``ceiling``: its first
    parameter is the accuracy it tends to (started just above the best accuracy seen)."""

    name: str
    fn: Any
    p0: tuple[float, ...]
    lower: tuple[float, ...]
    upper: tuple[float, ...]
    ceiling: bool = True

    @property
    def k(self) -> int:
        """Its number of parameters."""
        return len(self.p0)


POWER = CurveFamily("power", _pow, (0.9, 1.0, 0.5), (0.0, 0.0, 0.05), (1.0, 50.0, 3.0))
LOG = CurveFamily("log", _log, (0.9, 1.0, 0.5), (0.0, 0.0, 0.01), (1.0, 50.0, 10.0))
FAMILIES: tuple[CurveFamily, ...] = (POWER, LOG)


def _fit_family(fam: CurveFamily, n: np.ndarray, acc: np.ndarray, sigma: np.ndarray) -> tuple[np.ndarray, float] | None:
    """Weighted least-squares parameters and the weighted residual sum of squares, or None when it fails."""
    from scipy.optimize import OptimizeWarning, curve_fit

    p0 = np.array(fam.p0, float)
    if fam.ceiling:
        p0[0] = min(0.999, acc.max() + 0.02)
    p0 = np.clip(p0, fam.lower, fam.upper)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", OptimizeWarning)
            warnings.simplefilter("ignore", RuntimeWarning)
            p, _ = curve_fit(fam.fn, n, acc, p0=p0, sigma=sigma, bounds=(fam.lower, fam.upper), maxfev=2000)
    except (RuntimeError, ValueError):
        return None
    rss = float(np.sum(((fam.fn(n, *p) - acc) / sigma) ** 2))
    return p, rss


def plain_power_law(labels: Sequence[float], accuracy: Sequence[float], at: Sequence[float]) -> np.ndarray:
    """The naive forecast: error ``= α·n^(−β)`` by least squares in log–log, evaluated at ``at``."""
    n = np.asarray(labels, float)
    err = np.clip(1.0 - np.asarray(accuracy, float), 1e-4, 1.0)
    beta, log_alpha = np.polyfit(np.log(n), np.log(err), 1)
    return 1.0 - np.exp(log_alpha) * np.power(np.asarray(at, float), beta)


@dataclass
class Forecast:
    """A fitted learning curve: accuracy at more labels with its interval, and labels to reach a target."""

    #: labels and validation accuracies the curve was fitted to
    labels: np.ndarray
    accuracy: np.ndarray
    #: validation sample size of the last round (its noise is in the interval)
    n_val: int
    #: bootstrap curves' parameters per family, ``[(family, params (draws, 3))]``
    draws: list[tuple[CurveFamily, np.ndarray]] = field(default_factory=list)
    level: float = LEVEL
    inflate: float = INFLATE

    def _curves(self, at: np.ndarray) -> np.ndarray:
        """Every bootstrap curve evaluated at ``at``: ``(draws, len(at))``."""
        rows = [fam.fn(at[None, :], *(p[:, i, None] for i in range(fam.k))) for fam, p in self.draws]
        return np.clip(np.concatenate(rows, axis=0), 0.0, 1.0)

    def predict(self, labels: npt.ArrayLike) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(accuracy, low, high)`` at ``labels``: the median curve and the central :attr:`level` interval of the
        true accuracy (fit uncertainty and the validation sample's offset both in it)."""
        at = np.atleast_1d(np.asarray(labels, float))
        curves = self._curves(at)
        mid = np.median(curves, axis=0)
        q = (1 - self.level) / 2
        lo, hi = np.quantile(curves, [q, 1 - q], axis=0)
        # the validation sample's own noise: one sample measured every round, so the whole curve shares its offset
        p = np.clip(mid, 0.01, 0.99)
        z = _z(self.level)
        half_lo = np.hypot(mid - lo, z * np.sqrt(p * (1 - p) / max(self.n_val, 1))) * self.inflate
        half_hi = np.hypot(hi - mid, z * np.sqrt(p * (1 - p) / max(self.n_val, 1))) * self.inflate
        return mid, np.clip(mid - half_lo, 0.0, 1.0), np.clip(mid + half_hi, 0.0, 1.0)

    def gain(self, more: float) -> tuple[float, float, float]:
        """Points of accuracy ``more`` labels would add to the curve at the last round: ``(mid, low, high)``.

        A difference on one curve: the validation sample's shared offset cancels, the fit's uncertainty stays."""
        last = float(self.labels[-1])
        curves = self._curves(np.array([last, last + more]))
        d = (curves[:, 1] - curves[:, 0]) * 100
        q = (1 - self.level) / 2
        lo, mid, hi = np.quantile(d, [q, 0.5, 1 - q])
        return float(mid), float(mid - (mid - lo) * self.inflate), float(mid + (hi - mid) * self.inflate)

    def labels_for(self, target: float, *, limit: float = 1e6) -> tuple[float | None, float | None, float | None]:
        """Labels needed for validation accuracy ``target``: ``(mid, low, high)`` from the median curve and the
        interval's edges; None where the curve does not reach it within ``limit`` labels (or, for ``low``, where it
        may already be there)."""
        grid = np.unique(np.concatenate([np.geomspace(max(1.0, float(self.labels[-1])), limit, 400)]))
        mid, lo, hi = self.predict(grid)

        def first(curve: np.ndarray) -> float | None:
            hit = np.nonzero(curve >= target)[0]
            return float(grid[hit[0]]) if hit.size else None

        return first(mid), first(hi), first(lo)


def _z(level: float) -> float:
    from scipy.stats import norm

    return float(norm.ppf(0.5 + level / 2))


def forecast(
    labels: Sequence[float],
    accuracy: Sequence[float],
    n_val: Sequence[int] | int,
    *,
    min_rounds: int = MIN_ROUNDS,
    draws: int = DRAWS,
    seed: int = 0,
    level: float = LEVEL,
    inflate: float = INFLATE,
    families: Sequence[CurveFamily] = FAMILIES,
) -> Forecast | None:
    """Fit the learning curve of validation accuracy against labels; None with fewer than ``min_rounds`` rounds or
    when no curve family fits.

    Each curve family is fitted by least squares weighted by the rounds' binomial noise (``n_val`` validation
    items); a parametric bootstrap redraws every round's accuracy from its noise (inflated by the fit's own
    residuals when they are larger) and refits, so the draws carry the fit's uncertainty. The families share the
    draws in proportion to their Akaike weights."""
    n = np.asarray(labels, float)
    acc = np.asarray(accuracy, float)
    nv = np.broadcast_to(np.asarray(n_val, float), n.shape).astype(float)
    keep = np.isfinite(acc) & (n > 0) & (nv > 0)
    n, acc, nv = n[keep], acc[keep], nv[keep]
    if n.size < min_rounds or np.unique(n).size < min_rounds:
        return None
    p = np.clip(acc, 0.02, 0.98)
    sigma = np.sqrt(p * (1 - p) / nv)
    fits = [(fam, _fit_family(fam, n, acc, sigma)) for fam in families]
    fits = [(fam, f) for fam, f in fits if f is not None]
    if not fits:
        return None
    # Akaike weights: the weighted residuals plus twice the parameters
    aic = np.array([f[1] + 2 * fam.k for fam, f in fits])
    w = np.exp(-(aic - aic.min()) / 2)
    w /= w.sum()
    rng = np.random.default_rng(seed)
    out = []
    for (fam, (params, rss_f)), wf in zip(fits, w, strict=True):
        k = max(1, round(draws * wf))
        # the noise between rounds: the binomial one, or the residuals' when they say more (training jitter)
        scale = math.sqrt(max(1.0, rss_f / max(1, n.size - fam.k)))
        fitted = fam.fn(n, *params)
        got = []
        for _ in range(k):
            y = fitted + rng.normal(0.0, sigma * scale)
            f = _fit_family(fam, n, y, sigma)
            if f is not None:
                got.append(f[0])
        if got:
            out.append((fam, np.asarray(got)))
    if not out:
        return None
    return Forecast(labels=n, accuracy=acc, n_val=int(nv[-1]), draws=out, level=level, inflate=inflate)


# ------------------------------------------------------------------------------------------ stable predictions
def cohen_kappa(a: npt.ArrayLike, b: npt.ArrayLike) -> float:
    """Cohen's kappa between two label vectors (1.0 when they agree everywhere, even on one class)."""
    x = np.asarray(a, np.int64)
    y = np.asarray(b, np.int64)
    if x.shape != y.shape:
        raise ValueError(f"the predictions differ in shape: {x.shape} vs {y.shape}")
    if x.size == 0:
        return float("nan")
    po = float(np.mean(x == y))
    k = int(max(x.max(), y.max())) + 1
    pe = float(np.dot(np.bincount(x, minlength=k), np.bincount(y, minlength=k))) / x.size**2
    if pe >= 1.0:
        return 1.0 if po == 1.0 else 0.0
    return (po - pe) / (1 - pe)


def stop_set(pool_ids: npt.ArrayLike, seed: int = 0, size: int = STOP_SET_SIZE) -> npt.NDArray[np.int64]:
    """The fixed stop set: ``size`` pool ids chosen by a seeded hash of the id (sorted), so the same items are
    chosen every round and adding images changes it only where a new id hashes lower."""
    ids = np.unique(np.asarray(pool_ids, np.int64))
    if ids.size <= size:
        return ids
    key = (ids.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15) + np.uint64(seed * 0x632BE5AB + 1)) & np.uint64(
        0xFFFFFFFFFFFF
    )
    key = (key ^ (key >> np.uint64(29))) * np.uint64(0xBF58476D1CE4E5B9) & np.uint64(0xFFFFFFFFFFFF)
    return np.sort(ids[np.argsort(key, kind="stable")[:size]])


def stability(before: Scores, after: Scores, items: npt.ArrayLike) -> dict[str, Any] | None:
    """Kappa and the share of changed predictions between two rounds' scores on ``items`` (those both scored);
    None when they share no item or their classes differ."""
    if list(before.classes) != list(after.classes):
        return None
    ids = np.asarray(items, np.int64)
    ra, rb = before.rows(ids), after.rows(ids)
    ok = (ra >= 0) & (rb >= 0)
    if not ok.any():
        return None
    pa = before.probs_at(ra[ok]).argmax(1)
    pb = after.probs_at(rb[ok]).argmax(1)
    return {
        "previous_round": int(before.round),
        "kappa": round(cohen_kappa(pa, pb), 5),
        "changed": round(float(np.mean(pa != pb)), 5),
        "n": int(ok.sum()),
    }


def stable_over(kappas: Sequence[float | None], window: int = KAPPA_WINDOW, threshold: float = KAPPA_STOP) -> bool:
    """Whether the last ``window`` kappas are all known and ≥ ``threshold``."""
    last = list(kappas)[-window:]
    return len(last) == window and all(k is not None and k >= threshold for k in last)


# ------------------------------------------------------------------------------------------------ the advice
@dataclass(frozen=True)
class Costs:
    """What a label costs and what a point of accuracy is worth, in one currency (0: not given)."""

    label_cost: float = 0.0
    point_value: float = 0.0

    @property
    def given(self) -> bool:
        """Both are set."""
        return self.label_cost > 0 and self.point_value > 0


def recommend(
    fc: Forecast | None,
    kappas: Sequence[float | None],
    *,
    n_rounds: int,
    costs: Costs = Costs(),
    more: int = DECISION_LABELS,
) -> tuple[bool | None, str]:
    """``(stop, sentence)``: True to stop, False to go on, None when it cannot tell (too few rounds yet, or a slow
    curve without costs: the sentence then gives what a point costs in labels)."""
    stable = stable_over(kappas)
    known = [k for k in kappas if k is not None]
    if stable:
        why = f"predictions stable (kappa ≥ {KAPPA_STOP:g} over the last {KAPPA_WINDOW} rounds)"
    elif known:
        why = f"predictions still changing (kappa {known[-1]:.3f} last round)"
    else:
        why = "prediction stability not measured yet"
    if fc is None:
        need = max(0, MIN_ROUNDS - n_rounds)
        if stable:
            return True, f"stop: {why}; too few rounds for a forecast"
        return None, (
            f"keep labeling: {need} more round(s) with a validation accuracy before a forecast can be made; {why}"
            if need
            else f"keep labeling: the learning curve cannot be fitted yet; {why}"
        )
    mid, lo, hi = fc.gain(more)
    buys = f"+{more:,} labels would buy about {mid:+.1f} points ({lo:+.1f} to {hi:+.1f})"
    if costs.given:
        worth = mid * costs.point_value - more * costs.label_cost
        verdict = "worth it" if worth > 0 else "not worth it"
        money = f"{verdict} at {costs.label_cost:g} a label and {costs.point_value:g} a point (expected {worth:+,.0f})"
        if worth <= 0 or stable:
            return True, f"stop: {why}; {buys}, {money}"
        return False, f"keep labeling: {buys}, {money}; {why}"
    if stable:
        return True, f"stop: {why}; {buys}"
    if hi < MIN_GAIN_POINTS:
        return True, f"stop: {buys}, under {MIN_GAIN_POINTS:g} points at best; {why}"
    if mid < SLOW_POINTS:
        per_point = float(f"{more / mid:.2g}") if mid >= 0.05 else 0.0  # two significant digits
        rate = f"about {per_point:,.0f} labels a point" if per_point else "no gain by the curve's middle"
        return None, (
            f"your call: {buys}, {rate}; {why}; at this pace a plateau and a slow rise look alike, so stop when a "
            "point is worth fewer labels than that to you (or give a label's cost and a point's value in Settings)"
        )
    return False, f"keep labeling: {buys}; {why}"


def curve_points(rounds: Sequence[dict[str, Any]]) -> tuple[list[int], list[float], list[int]]:
    """Labels, validation accuracies and validation sizes of the finished rounds that have one."""
    labels, acc, nv = [], [], []
    for r in rounds:
        val = (r.get("metrics") or {}).get("val") or {}
        if r.get("status", "done") == "done" and val.get("n") and val.get("accuracy") is not None:
            labels.append(int(r["n_labeled"]))
            acc.append(float(val["accuracy"]))
            nv.append(int(val["n"]))
    return labels, acc, nv


def round_kappas(rounds: Sequence[dict[str, Any]]) -> list[float | None]:
    """One kappa per pair of consecutive finished rounds (None where it was not measured)."""
    done = [r for r in rounds if r.get("status", "done") == "done"]
    out: list[float | None] = []
    for prev, cur in zip(done, done[1:], strict=False):
        st = (cur.get("metrics") or {}).get("stability") or {}
        out.append(st.get("kappa") if st.get("previous_round") == prev["number"] else None)
    return out


def forecast_rounds(rounds: Sequence[dict[str, Any]]) -> Forecast | None:
    """:func:`forecast` of recorded rounds' validation accuracies (None before :data:`MIN_ROUNDS`)."""
    labels, acc, nv = curve_points(rounds)
    return forecast(labels, acc, nv) if labels else None


def forecast_band(fc: Forecast, more: float = max(HORIZONS), points: int = 21) -> list[dict[str, float]]:
    """The forecast as a curve from the last round's labels to ``more`` labels beyond: ``labels``, ``accuracy``,
    ``low``, ``high`` (for drawing it as a dashed continuation with its band)."""
    last = float(fc.labels[-1])
    grid = np.linspace(last, last + more, points)
    mid, lo, hi = fc.predict(grid)
    return [
        {"labels": float(a), "accuracy": float(m), "low": float(lw), "high": float(h)}
        for a, m, lw, h in zip(grid, mid, lo, hi, strict=True)
    ]


def advise(
    rounds: Sequence[dict[str, Any]],
    *,
    costs: Costs = Costs(),
    target: float | None = None,
    horizons: Sequence[int] = HORIZONS,
    band: bool = False,
) -> dict[str, Any]:
    """The advice from recorded rounds (:meth:`alwb.store.Store.rounds` rows): ``forecast`` (``labels``,
    ``accuracy``, ``low``, ``high`` per horizon; empty before :data:`MIN_ROUNDS` rounds), ``kappa`` (one per pair
    of consecutive rounds), ``changed`` (the share of stop-set predictions that changed, likewise),
    ``recommendation`` (one sentence), ``stop`` (True / False / None), with ``target`` ``target``
    (:func:`target_advice`) and with ``band`` ``curve`` (:func:`forecast_band`; empty without a forecast)."""
    labels, acc, nv = curve_points(rounds)
    fc = forecast(labels, acc, nv) if labels else None
    done = [r for r in rounds if r.get("status", "done") == "done"]
    kappas = round_kappas(rounds)
    changed = [
        ((cur.get("metrics") or {}).get("stability") or {}).get("changed") if k is not None else None
        for cur, k in zip(done[1:], kappas, strict=True)
    ]
    rows = []
    if fc is not None:
        at = [labels[-1] + h for h in horizons]
        mid, lo, hi = fc.predict(at)
        rows = [
            {"labels": int(a), "accuracy": round(float(m), 4), "low": round(float(lw), 4), "high": round(float(h), 4)}
            for a, m, lw, h in zip(at, mid, lo, hi, strict=True)
        ]
    stop, sentence = recommend(fc, kappas, n_rounds=len(labels), costs=costs)
    out: dict[str, Any] = {
        "forecast": rows,
        "kappa": kappas,
        "changed": changed,
        "recommendation": sentence,
        "stop": stop,
    }
    if target is not None:
        out["target"] = target_advice(fc, target, labels[-1] if labels else 0)
    if band:
        out["curve"] = forecast_band(fc) if fc is not None else []
    return out


def target_advice(fc: Forecast | None, target: float, labeled: int) -> dict[str, Any]:
    """Labels needed for validation accuracy ``target`` (0–1): ``accuracy``, ``labels`` (total, median curve),
    ``low`` / ``high`` (None where the interval does not bound it), ``more`` and a ``sentence``."""
    base: dict[str, Any] = {"accuracy": target, "labels": None, "low": None, "high": None, "more": None}
    if fc is None:
        return {**base, "sentence": "too few rounds to tell how many labels that needs"}
    mid, low, high = fc.labels_for(target)
    if mid is not None and mid <= labeled:
        return {**base, "labels": labeled, "more": 0, "sentence": f"{target:.1%} is reached already, by the curve"}
    if mid is None:
        return {
            **base,
            "low": None if low is None else int(low),
            "sentence": f"the fitted curve does not reach {target:.1%}: it cannot tell how many labels that needs",
        }
    need = round(mid)
    hi_txt = "no upper bound" if high is None else f"{round(high):,}"
    lo_txt = f"{round(low):,}" if low is not None and low > labeled else "now"
    return {
        **base,
        "labels": need,
        "low": None if low is None else round(low),
        "high": None if high is None else round(high),
        "more": need - labeled,
        "sentence": f"{target:.1%} in about {need:,} labels ({need - labeled:+,}; {LEVEL:.0%} interval: {lo_txt} to "
        f"{hi_txt})",
    }


def project_advice(project: Project, *, target: float | None = None) -> dict[str, Any]:
    """:func:`advise` on a project's rounds, with the costs and target from its settings (``advice`` meta)."""
    meta = project.store.get_meta("advice") or {}
    costs = Costs(float(meta.get("label_cost") or 0), float(meta.get("point_value") or 0))
    if target is None and meta.get("target"):
        target = float(meta["target"])
    return advise(project.store.rounds(), costs=costs, target=target)


def advice_settings(project: Project) -> dict[str, float]:
    """The person's ``label_cost``, ``point_value`` and ``target`` (0 where not given)."""
    meta = project.store.get_meta("advice") or {}
    return {k: float(meta.get(k) or 0) for k in ("label_cost", "point_value", "target")}


def set_advice_settings(
    project: Project, *, label_cost: float | None = None, point_value: float | None = None, target: float | None = None
) -> dict[str, float]:
    """Record the cost of a label, the value of a point of accuracy and a target accuracy (0–1); 0 clears one."""
    cur = advice_settings(project)
    for k, v in (("label_cost", label_cost), ("point_value", point_value), ("target", target)):
        if v is None:
            continue
        if not math.isfinite(v) or v < 0 or (k == "target" and v >= 1):
            from ..errors import ConfigError

            raise ConfigError(f"{k.replace('_', ' ')} must be ≥ 0" + (" and < 1" if k == "target" else ""))
        cur[k] = float(v)
    project.store.set_meta("advice", cur)
    return cur


def format_advice(adv: dict[str, Any]) -> str:
    """Lines for ``alwb status``: the forecast per horizon, the last kappas and the recommendation."""
    lines = [f"advice: {adv['recommendation']}"]
    for row in adv["forecast"]:
        lines.append(
            f"  at {row['labels']:,} labels: accuracy {row['accuracy']:.3f} "
            f"[{row['low']:.3f}, {row['high']:.3f}] ({LEVEL:.0%} interval)"
        )
    known = [k for k in adv["kappa"] if k is not None]
    if known:
        lines.append("  kappa between consecutive rounds: " + ", ".join(f"{k:.3f}" for k in known[-5:]))
    if adv.get("target"):
        lines.append(f"  target: {adv['target']['sentence']}")
    return "\n".join(lines)
