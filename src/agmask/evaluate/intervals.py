"""Bootstrap confidence intervals over prompts, for any per-prompt number a metric reports.

The demo scores 8 prompts per set: a difference of 1-3 nats between two adapters means little
without its uncertainty. Each helper resamples the prompts with replacement (scipy.stats.bootstrap,
percentile method, seeded) and returns one regular dict that metrics store under their `intervals`
key and the report prints as is:

    {"estimate": 0.42, "low": 0.31, "high": 0.55, "n": 8, "confidence": 0.95, "resamples": 9999, "seed": 0}

With fewer than two prompts the bounds are null (a single prompt has no spread to resample).
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
from scipy.stats import bootstrap

CONFIDENCE = 0.95
RESAMPLES = 9999

STATISTICS: dict[str, Callable] = {"mean": np.mean, "median": np.median}


def _result(estimate: float | None, low, high, n: int, confidence: float, resamples: int, seed: int) -> dict:
    f = lambda v: None if v is None else float(v)  # noqa: E731
    return {"estimate": f(estimate), "low": f(low), "high": f(high), "n": n, "confidence": confidence,
            "resamples": resamples, "seed": seed}


def interval(values: Sequence[float], statistic: str = "mean", confidence: float = CONFIDENCE,
             resamples: int = RESAMPLES, seed: int = 0) -> dict:
    """Percentile bootstrap interval of `statistic` ("mean" or "median") of per-prompt `values`."""
    fn = STATISTICS[statistic]
    data = np.asarray([float(v) for v in values], dtype=float)
    if data.size == 0:
        return _result(None, None, None, 0, confidence, resamples, seed)
    estimate = fn(data)
    if data.size < 2:
        return _result(estimate, None, None, 1, confidence, resamples, seed)
    if np.all(data == data[0]):  # no spread: every resample gives the same value
        return _result(estimate, estimate, estimate, int(data.size), confidence, resamples, seed)
    res = bootstrap((data,), fn, confidence_level=confidence, n_resamples=resamples, method="percentile",
                    vectorized=True, rng=np.random.default_rng(seed))
    ci = res.confidence_interval
    return _result(estimate, ci.low, ci.high, int(data.size), confidence, resamples, seed)


def ratio_interval(numerators: Sequence[float], denominators: Sequence[float], confidence: float = CONFIDENCE,
                   resamples: int = RESAMPLES, seed: int = 0) -> dict:
    """Interval of sum(numerators) / sum(denominators), resampling prompts (pairs) together: a per-token
    mean pooled over prompts of different lengths (e.g. KL per token over replies)."""
    num = np.asarray([float(v) for v in numerators], dtype=float)
    den = np.asarray([float(v) for v in denominators], dtype=float)
    if num.shape != den.shape:
        raise ValueError("numerators and denominators must pair up (one of each per prompt)")
    if num.size == 0 or den.sum() == 0:
        return _result(None, None, None, int(num.size), confidence, resamples, seed)
    estimate = num.sum() / den.sum()
    if num.size < 2:
        return _result(estimate, None, None, 1, confidence, resamples, seed)
    if np.allclose(num, estimate * den, rtol=0, atol=0):  # every prompt has the same ratio
        return _result(estimate, estimate, estimate, int(num.size), confidence, resamples, seed)
    res = bootstrap((num, den), lambda n, d, axis=-1: n.sum(axis) / d.sum(axis), paired=True,
                    confidence_level=confidence, n_resamples=resamples, method="percentile", vectorized=True,
                    rng=np.random.default_rng(seed))
    ci = res.confidence_interval
    return _result(estimate, ci.low, ci.high, int(num.size), confidence, resamples, seed)
