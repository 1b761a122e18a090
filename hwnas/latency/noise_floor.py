"""How close any latency model can come to a device's timings: the noise floor from nets timed twice.

Two timings of the same net (or of two nets that compute the same thing, e.g. NB201's isomorphic
cells, ``hwnas.spaces.nb201.canonical_choices``) differ only by the measurement's noise. From
such pairs this module gives:

* ``bound_within``: an exact upper bound on the share of the paired timings that *any* predictor
  giving both members the same value can bring within ``±t``: a pair counts twice only if one
  value is within ``t`` of both (their ratio at most ``(1 + t) / (1 - t)``), else once;
* ``fit_noise``: the noise of ``log(ms)`` as a mixture of two centred normals (a share ``p`` with
  spread ``s2``, the rest ``s1``: quiet timings and disturbed ones), fitted by maximum
  likelihood to the pairs' log differences (a difference of two independent draws: normals
  of variance ``2 s1^2``, ``s1^2 + s2^2``, ``2 s2^2`` with weights ``(1-p)^2``, ``2p(1-p)``, ``p^2``);
* ``perfect_share``: under that noise, the share of timings a predictor of the *true* latency
  brings within ``±t`` (``|true - ms| <= t ms`` with ``ms = true * exp(noise)``, in closed
  form), and its MAPE: what a perfect model scores on held-out nets.

A single normal is the special case ``p = 0``; the mixture is there because phone timings are
heavy-tailed (docs/latency_devices.md). Nothing here knows about spaces or devices.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.optimize import minimize
from scipy.stats import norm

from hwnas.errors import HwnasError


def _check(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1 or len(a) < 2:
        raise HwnasError("the paired timings must be two equally long lists of at least 2 values")
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b)) and np.all(a > 0) and np.all(b > 0)):
        raise HwnasError("the paired timings must be positive finite milliseconds")
    return a, b


def bound_within(a: np.ndarray, b: np.ndarray, tolerance: float = 0.10) -> float:
    """The most of the ``2 n`` paired timings one shared prediction per pair can bring within ``±tolerance``."""
    a, b = _check(a, b)
    ratio = np.maximum(a, b) / np.minimum(a, b)
    both = ratio <= (1 + tolerance) / (1 - tolerance)
    return float((2 * np.sum(both) + np.sum(~both)) / (2 * len(a)))


def fit_noise(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    """The two-normal noise of ``log(ms)`` behind the pairs: ``p``, ``s1`` (quiet) and ``s2`` (disturbed, ``s2 >= s1``)."""
    a, b = _check(a, b)
    d = np.log(a) - np.log(b)
    if float(np.std(d)) < 1e-6:  # no measurable noise (a simulator, a cycle count): one normal of that spread
        s = float(np.std(d)) / math.sqrt(2)
        return {"p": 0.0, "s1": s, "s2": s, "pairs": len(d)}
    spread = float(np.std(d))
    floor = 1e-6 * spread + 1e-12

    def density(x: np.ndarray, var: float) -> np.ndarray:
        return np.exp(-x * x / (2 * var)) / math.sqrt(2 * math.pi * var)

    def unpack(theta: np.ndarray) -> tuple[float, float, float]:
        p = 1 / (1 + math.exp(-float(np.clip(theta[0], -30, 30))))
        return p, math.exp(float(np.clip(theta[1], -30, 5))) + floor, math.exp(float(np.clip(theta[2], -30, 5))) + floor

    def nll(theta: np.ndarray) -> float:
        p, s1, s2 = unpack(theta)
        f = (1 - p) ** 2 * density(d, 2 * s1**2) + 2 * p * (1 - p) * density(d, s1**2 + s2**2) + p**2 * density(d, 2 * s2**2)
        return -float(np.sum(np.log(f + 1e-300)))

    best = None
    for p0 in (-3.0, -1.0, 0.0):
        for scale in (0.05, 0.3, 1.0):
            start = np.array([p0, math.log(scale * spread), math.log(3 * spread)])
            found = minimize(nll, start, method="Nelder-Mead", options={"maxiter": 4000, "xatol": 1e-7, "fatol": 1e-7})
            if best is None or found.fun < best.fun:
                best = found
    p, s1, s2 = unpack(best.x)
    if s1 > s2:
        p, s1, s2 = 1 - p, s2, s1
    return {"p": p, "s1": s1, "s2": s2, "pairs": len(d)}


def perfect_share(noise: dict[str, float], tolerance: float = 0.10) -> float:
    """The share of timings within ``±tolerance`` of the true latency under ``noise`` (``fit_noise``'s dict)."""
    # |true - ms| <= t ms with ms = true * e^eta  <=>  -log(1 + t) <= eta <= -log(1 - t)
    low, high = -math.log(1 + tolerance), -math.log(1 - tolerance)
    share = 0.0
    for weight, s in ((1 - noise["p"], noise["s1"]), (noise["p"], noise["s2"])):
        share += weight * (norm.cdf(high / s) - norm.cdf(low / s)) if s > 0 else weight
    return float(share)


def perfect_mape(noise: dict[str, float]) -> float:
    """The mean of ``|true - ms| / ms`` under ``noise``: a perfect model's MAPE."""
    total = 0.0
    for weight, s in ((1 - noise["p"], noise["s1"]), (noise["p"], noise["s2"])):
        if s <= 0:
            continue
        eta = np.linspace(-8 * s, 8 * s, 4001)
        total += weight * float(np.trapezoid(np.abs(1 - np.exp(-eta)) * norm.pdf(eta, scale=s), eta))
    return total


def floor(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    """Everything above for one device's pairs: the bound, the fitted noise and a perfect model's scores."""
    a, b = _check(a, b)
    noise = fit_noise(a, b)
    return {
        **noise,
        "pairs_within_10": float(np.mean(np.abs(a - b) / np.minimum(a, b) <= 0.10)),
        "bound_within_10": bound_within(a, b, 0.10),
        "perfect_within_5": perfect_share(noise, 0.05),
        "perfect_within_10": perfect_share(noise, 0.10),
        "perfect_mape": perfect_mape(noise),
    }
