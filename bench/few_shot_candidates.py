"""Few-shot candidates beyond the stored span (issue 29, goal (b) on Xeon Gold 6226): measured, none adopted.

Part (b) of ``bench/latency_devices.py`` only (its loading, split, priors and draws): each device's model is
the stored model (line (ms) + trees) fitted on the same 80 % of its nets; for each device the other 14 are
the prior (leave one device out); N nets drawn with the same seeds (``1000 * N + draw``, 20 draws); Spearman
on every net not drawn. Candidates, each a non-negative mix of priors in ms (``whole_net.fit_span_ms``) plus:

* ``span (stored)``: nothing (``whole_net.span_model`` from 3 timings on);
* ``span + lines``: each prior's additive line (its ``line`` part, trees dropped) beside its full model;
* ``span + ridge on one-hots`` / ``on features``: a ridge on the per-edge op one-hots (or the standardised
  ``whole_net`` features) fitted to the N timings' residual from the mix (relative error), strength by
  leave-one-out (``RidgeCV``), shrunk to 0;
* ``span + Bayes departure``: the residual as ``X @ delta`` with ``delta ~ N(0, tau^2 S)``, ``S`` the covariance
  of the priors' line costs (each normalised by its median latency, scaled to the mix's), relative noise 3 %,
  ``tau`` fixed or by leave-one-out: a Gaussian-process form of a fit in the priors' cost span with an off-mix part.

And the ceilings on the target device (fitted on all its nets and scored on them): the mix of full models,
of lines, of both (non-negative, and any signs), the device's own line, and the Spearman a perfect model
would score under the device's own timing noise (the two-normal noise that ``hwnas.latency.noise_floor``
fits to pairs of cells computing one function, ``docs/latency_devices.md`` (a')), simulated around the
device's own stored model. Writes ``docs/few_shot_candidates.{md,json}``.

    python bench/few_shot_candidates.py [--data ../shared/nb201] [--draws 20] [--device gold_6226] [--out docs]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from sklearn.linear_model import LinearRegression, RidgeCV

sys.path.insert(0, str(Path(__file__).resolve().parent))
from latency_devices import HELP, HELP_MEAN, SHOTS, draw_nets, edge_onehots, load, machine, same_function_pairs, split  # noqa: E402  (a sibling script, not a package)

from hwnas.files import write_json_atomic, write_text_atomic  # noqa: E402
from hwnas.latency.accuracy import spearman  # noqa: E402
from hwnas.latency.noise_floor import floor  # noqa: E402
from hwnas.latency.whole_net import feature_matrix, feature_names, fit_model_on, fit_span_ms, predict_log  # noqa: E402
from hwnas.spaces import get_space  # noqa: E402

#: relative timing noise assumed by the Bayesian departure (Gold's MAPE of its own model is 2-3 %)
SIGMA = 0.03


class Priors:
    """The other devices' predictions over every net: full models and their additive lines (ms), line costs."""

    def __init__(self, full: dict, line: dict, coef: dict, others: list[str]):
        self.full = np.stack([full[d] for d in others], axis=1)
        self.line = np.stack([line[d] for d in others], axis=1)
        costs = np.stack([coef[d] / float(np.median(line[d])) for d in others])
        costs = costs - costs.mean(axis=0)
        self.cost_cov = costs.T @ costs / len(others)


def mix(basis: np.ndarray, pick: np.ndarray, y: np.ndarray) -> np.ndarray:
    weights, bias = fit_span_ms(basis[pick], y)
    return bias + basis @ weights


def span(priors: Priors, F: dict, pick: np.ndarray, y: np.ndarray) -> np.ndarray:
    return mix(priors.full, pick, y)


def span_lines(priors: Priors, F: dict, pick: np.ndarray, y: np.ndarray) -> np.ndarray:
    return mix(np.hstack([priors.full, priors.line]), pick, y)


def ridge_departure(features: str, lines: bool = False):
    def model(priors: Priors, F: dict, pick: np.ndarray, y: np.ndarray) -> np.ndarray:
        pred = (span_lines if lines else span)(priors, F, pick, y)
        ridge = RidgeCV(alphas=np.logspace(-3, 4, 15)).fit(F[features][pick], y - pred[pick], sample_weight=1.0 / y**2)
        return np.maximum(pred + ridge.predict(F[features]), np.min(y) / 2)

    return model


def bayes_departure(tau: float | None):
    def model(priors: Priors, F: dict, pick: np.ndarray, y: np.ndarray) -> np.ndarray:
        pred = span(priors, F, pick, y)
        S = priors.cost_cov * float(np.median(pred)) ** 2
        Fp = F["features"][pick] / y[:, None]
        r = (y - pred[pick]) / y
        K = Fp @ S @ Fp.T
        best = None
        for t in [tau] if tau is not None else np.logspace(-3, 1, 13):
            inverse = np.linalg.inv(t**2 * K + SIGMA**2 * np.eye(len(y)))
            alpha = inverse @ r
            loo = float(np.mean((alpha / np.diag(inverse)) ** 2))
            if best is None or loo < best[0]:
                best = (loo, t, alpha)
        _, t, alpha = best
        return np.maximum(pred + t**2 * (F["features"] @ (S @ (Fp.T @ alpha))), np.min(y) / 2)

    return model


CANDIDATES = {
    "span (stored)": span,
    "span + lines": span_lines,
    "span + ridge on one-hots": ridge_departure("onehot"),
    "span + ridge on features": ridge_departure("standardised"),
    "span + lines + ridge on one-hots": ridge_departure("onehot", lines=True),
    "span + Bayes departure, tau 0.1": bayes_departure(0.1),
    "span + Bayes departure, tau 0.3": bayes_departure(0.3),
    "span + Bayes departure, tau by LOO": bayes_departure(None),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "nb201"))
    parser.add_argument("--draws", type=int, default=20)
    parser.add_argument("--device", default="gold_6226", help="the device also scored at N = 20, 50, 100")
    parser.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "docs"))
    args = parser.parse_args(argv)
    started = time.perf_counter()
    arch_strs, ms = load(Path(args.data))
    devices = list(ms)
    space = get_space("nb201", resolution=32, num_classes=10)
    choices = [space.parse_choices(s) for s in arch_strs]
    X = feature_matrix(space, choices)
    names = feature_names(space)
    F = {"features": X, "standardised": X / np.maximum(X.std(axis=0), 1e-9), "onehot": edge_onehots(choices)}
    n = len(choices)
    train = split(n)[0]
    full, line, coef = {}, {}, {}
    for device in devices:
        model = fit_model_on(X[train], ms[device][train], names)
        full[device] = np.exp(predict_log(model, X))
        coef[device] = np.asarray(model["line"]["coef"])
        line[device] = np.maximum(X @ coef[device] + model["line"]["intercept"], float(np.min(ms[device])) / 2)
    print(f"15 stored models fitted ({time.perf_counter() - started:.0f} s)", flush=True)

    def score(name: str, device: str, shots: int) -> float:
        y = ms[device]
        priors = Priors(full, line, coef, [d for d in devices if d != device])
        rhos = []
        for draw in range(args.draws):
            pick, rest = draw_nets(n, shots, draw)
            rhos.append(spearman(CANDIDATES[name](priors, F, pick, y[pick])[rest], y[rest]))
        return float(np.mean(rhos))

    at10 = {name: {device: score(name, device, 10) for device in devices} for name in CANDIDATES}
    for name, row in at10.items():
        print(f"{name:36s} N=10 {args.device} {row[args.device]:.4f}  mean {np.mean(list(row.values())):.4f}", flush=True)
    more = {name: {str(s): score(name, args.device, s) for s in SHOTS[1:]} for name in CANDIDATES}
    #: the one candidate that lost nothing beyond noise at N = 10, beside the stored span on every device at more timings
    pair = ("span (stored)", "span + Bayes departure, tau 0.1")
    more_all = {name: {str(s): {d: score(name, d, s) for d in devices} for s in SHOTS[1:]} for name in pair}
    ceilings = ceiling(ms, full, line, X, args.device, devices, choices)
    elapsed = time.perf_counter() - started
    result = {"machine": machine(), "seconds": elapsed, "device": args.device, "draws": args.draws, "n10": at10}
    result |= {"more_shots": more, "more_shots_all_devices": more_all, "ceilings": ceilings}
    out = Path(args.out)
    write_json_atomic(out / "few_shot_candidates.json", result)
    write_text_atomic(out / "few_shot_candidates.md", report(result, devices))
    return 0


def ceiling(ms: dict, full: dict, line: dict, X: np.ndarray, device: str, devices: list[str], choices: list) -> dict:
    """What the target device's nets allow: models fitted on all of them, scored on them; a perfect model under its noise."""
    y = ms[device]
    priors = Priors(full, line, {d: np.zeros(X.shape[1]) for d in devices}, [d for d in devices if d != device])

    def any_signs(basis: np.ndarray) -> float:
        A = np.hstack([basis, np.ones((len(y), 1))]) / y[:, None]
        solution, *_ = np.linalg.lstsq(A, np.ones(len(y)), rcond=None)
        return spearman(A @ solution * y, y)

    out = {}
    for label, basis in (
        ("full models", priors.full),
        ("lines", priors.line),
        ("full models + lines", np.hstack([priors.full, priors.line])),
    ):
        out[f"mix of {label}, non-negative"] = spearman(mix(basis, np.arange(len(y)), y), y)
        out[f"mix of {label}, any signs"] = any_signs(basis)
    out["own line on its features (relative least squares)"] = any_signs(X)
    fitted = LinearRegression(positive=True).fit(np.log(priors.full), np.log(y))
    out["mix of log full models, non-negative"] = spearman(fitted.predict(np.log(priors.full)), y)
    # a perfect model under the device's own noise, simulated around its stored model (5 draws)
    pairs_arr = same_function_pairs(choices)[0]
    noise = floor(y[pairs_arr[:, 0]], y[pairs_arr[:, 1]])
    rng = np.random.default_rng(0)
    truth = full[device]
    rhos = []
    for _ in range(5):
        wide = rng.random(len(y)) < noise["p"]
        eps = np.where(wide, rng.normal(0, noise["s2"], len(y)), rng.normal(0, noise["s1"], len(y)))
        rhos.append(spearman(truth, truth * np.exp(eps)))
    out["perfect model under the fitted two-normal noise"] = float(np.mean(rhos))
    out["noise p / s1 / s2"] = [noise["p"], noise["s1"], noise["s2"]]
    return out


def report(result: dict, devices: list[str]) -> str:
    m, device = result["machine"], result["device"]
    help_here = HELP.get(device)
    lines = [
        "# Few-shot candidates beyond the stored span (issue 29, goal (b))",
        "",
        f"{m['date']}, commit {m['commit']}, {m['machine']}, load {', '.join(f'{x:.2f}' for x in m['load'])}; "
        f"{result['seconds'] / 60:.1f} min. Made by `python bench/few_shot_candidates.py` (its docstring says what each "
        "candidate fits). Same priors, draws and scoring as part (b) of `docs/latency_devices.md`: mean Spearman over "
        f"{result['draws']} draws on every net not drawn. None is adopted: `whole_net.span_model` stays as it was.",
        "",
        f"## N = 10: {device} and the 15-device mean",
        "",
        f"| candidate | {device} | mean over 15 | worst drop on a device (vs stored) | " + " | ".join(devices) + " |",
        "|---|---|---|---|" + "---|" * len(devices),
    ]
    stored = result["n10"]["span (stored)"]
    for name, row in result["n10"].items():
        drop = min(row[d] - stored[d] for d in devices)
        lines.append(
            f"| {name} | {row[device]:.4f} | {np.mean(list(row.values())):.4f} | {drop:+.4f} | "
            + " | ".join(f"{row[d]:.4f}" for d in devices)
            + " |"
        )
    lines += ["", f"## {device} at more timings", "", "| candidate | " + " | ".join(f"N={s}" for s in SHOTS[1:]) + " |"]
    lines.append("|---|" + "---|" * len(SHOTS[1:]))
    for name, row in result["more_shots"].items():
        lines.append(f"| {name} | " + " | ".join(f"{row[str(s)]:.4f}" for s in SHOTS[1:]) + " |")
    lines += ["", "## The Bayes departure (tau 0.1) beside the stored span on every device at more timings", ""]
    lines += ["| N | candidate | mean over 15 | worst drop (vs stored) | " + " | ".join(devices) + " |"]
    lines.append("|---|---|---|---|" + "---|" * len(devices))
    for shots in SHOTS[1:]:
        base = result["more_shots_all_devices"]["span (stored)"][str(shots)]
        for name, by_n in result["more_shots_all_devices"].items():
            row = by_n[str(shots)]
            drop = min(row[d] - base[d] for d in devices)
            cells = " | ".join(f"{row[d]:.4f}" for d in devices)
            lines.append(f"| {shots} | {name} | {np.mean(list(row.values())):.4f} | {drop:+.4f} | {cells} |")
    lines += ["", f"## What {device}'s nets allow (fitted on all its 15,625 nets, scored on them)", ""]
    lines += ["| model | Spearman |", "|---|---|"]
    lines += [f"| {k} | {v:.4f} |" for k, v in result["ceilings"].items() if not isinstance(v, list)]
    p, s1, s2 = result["ceilings"]["noise p / s1 / s2"]
    best = max(row[device] for row in result["n10"].values())
    lines += [
        "",
        f"Noise fitted to the mirrored pairs: p {p:.2f}, s1 {s1:.3f}, s2 {s2:.3f} (log ms). HELP reports {help_here} on "
        f"{device} at N = 10 (mean {HELP_MEAN} over its devices). The best candidate here reaches {best:.4f} at N = 10. "
        "Every model fitted on all of the device's nets that is a mix of the priors or a line ranks them at or below "
        "HELP's figure, and a perfect model under the device's own fitted timing noise ranks them only a little above "
        "it: beating HELP's figure needs, from 10 timings, nearly the ranking of the device's own model fitted on "
        "12,500 nets (0.9897 held out, `docs/latency_devices.md` (a)). The departures fitted to the residual of the "
        "10 timings add noise on most devices (leave-one-out over 10 nets picks too weak a ridge); the Bayesian "
        "departure with a small fixed tau gains about its own draw-to-draw noise on the target device, raises the "
        "15-device mean a little at every N and the least additive devices most (pixel3, silver_4114, 2080ti_256), "
        "and lowers raspi4 by up to 0.002: a candidate for the stored model in its own right, not a way past HELP "
        "on this device. Not the same nets, devices or "
        "protocol as HELP: the comparison is indicative.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
