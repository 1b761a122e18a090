"""``hwnas search``: a search under a latency budget, into a run folder."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

import click

from hwnas import api
from hwnas.cli.options import (
    COUNT,
    COUNT0,
    FINITE,
    RESUME_HINT,
    data_option,
    echo_json,
    echo_warnings,
    given_options,
    json_option,
    precision_options,
    space_options,
    with_options,
)
from hwnas.errors import HwnasError
from hwnas.run_folder import CONFIG
from hwnas.search import STRATEGIES
from hwnas.search.budget import LOSS_FORMS


def _knob_option(name: str) -> Any:
    """One --flag for a knob, whichever methods have it: its type from the defaults, its help with each method's default."""
    owners = {method: cls.knobs[name] for method, cls in STRATEGIES.items() if name in cls.knobs}
    first = next(iter(owners.values()))
    defaults = ", ".join(f"{method} {knob.default}" for method, knob in owners.items())
    kind = (
        click.Choice(first.choices)
        if first.choices
        else {float: FINITE, int: COUNT0}.get(type(first.default), type(first.default))
    )
    return click.option(f"--{name.replace('_', '-')}", name, type=kind, help=f"{first.help} [{defaults}].")


#: every method's options (``Strategy.knobs``), each defined once on its method; a method refuses the others
METHOD_KNOBS = {name: _knob_option(name) for name in dict.fromkeys(k for cls in STRATEGIES.values() for k in cls.knobs)}


def _method_knobs(command: Any) -> Any:
    return with_options(command, METHOD_KNOBS.values())


def _resume_hint(folder: Path) -> Any:
    """What Ctrl-C tells the user to run next (``hwnas.cli.main``): resume, once the run folder has its config."""
    return lambda: f"hwnas search --resume {shlex.quote(str(folder))}" if (folder / CONFIG).is_file() else None


@click.command()
@click.option("--method", type=click.Choice(list(STRATEGIES)), default="dsnas", show_default=True, help="Search method.")
@click.option(
    "--latency", "latency", help="Latency budget of the derived net: 80ms, '80 ms', 0.08s, 80000us or a bare number (ms)."
)
@space_options(shape_from_data=True)
@click.option(
    "--table",
    type=click.Path(dir_okay=False),
    help="Latency table [default: the one for this machine, runtime, space and shape].",
)
@click.option("--allow-foreign-table", is_flag=True, help="Use a table of another target with a warning instead of an error.")
@click.option(
    "--uncalibrated",
    is_flag=True,
    help="Search on a table that was never calibrated (raw sums of its entries); the report and result.json say so.",
)
@click.option(
    "--runtime",
    help="Runtime the table must have been measured with [default: the --table's; else onnxruntime, executorch for android].",
)
@click.option(
    "--device",
    help="Target the table must have been measured on [default: the --table's, else cpu]; the search trains here "
    "(on the GPU for cuda where torch sees one, else on the CPU).",
)
@click.option("--threads", type=int, default=1, show_default=True, help="Threads the table must have been measured with.")
@precision_options()
@data_option
@click.option("--arch-fraction", type=FINITE, help="Share of the training set held out for arch steps [proxyless 0.2, others 0].")
@click.option("--epochs", type=COUNT, default=8, show_default=True)
@click.option("--batch-size", type=COUNT, default=64, show_default=True)
@click.option("--steps-per-epoch", type=COUNT, help="Cap on weight steps per epoch (short runs, benchmarks).")
@click.option("--lr", type=FINITE, default=0.05, show_default=True, help="Weight SGD learning rate, cosine to --lr-min.")
@click.option("--lr-min", type=FINITE, default=0.001, show_default=True)
@click.option("--margin", type=FINITE, help="Aim at budget x (1 - margin) [the table's validated p90 error, else 0.05].")
@click.option("--latency-loss", type=click.Choice(LOSS_FORMS), default="lagrangian", show_default=True)
@click.option(
    "--multiplier-rate",
    type=FINITE,
    default=0.5,
    show_default=True,
    help="Lagrangian: integral gain of the multiplier controller, per arch step and unit of relative error.",
)
@click.option(
    "--multiplier-gain",
    type=FINITE,
    default=10.0,
    show_default=True,
    help="Lagrangian: proportional gain of the multiplier controller (damping).",
)
@click.option(
    "--multiplier-bound", type=FINITE, default=50.0, show_default=True, help="Lagrangian: the multiplier stays within +-this."
)
@click.option(
    "--one-sided",
    is_flag=True,
    help="The budget as a ceiling only: the multiplier stays >= 0 and the derivation does not fill leftover slack.",
)
@click.option(
    "--bn-batches", type=COUNT, default=20, show_default=True, help="Training batches for the child's BN recalibration."
)
@click.option(
    "--eval-images",
    type=COUNT,
    default=2048,
    show_default=True,
    help="Validation images for the supernet's accuracy each epoch (the child is scored on all).",
)
@_method_knobs
@click.option("--seed", type=int, default=0, show_default=True, help="A fixed seed reproduces the run.")
@click.option("--workers", type=COUNT0, default=0, show_default=True, help="Data loader worker processes.")
@click.option("--out", type=click.Path(file_okay=False), help="Run folder [default: runs/<time>-<method>].")
@click.option(
    "--resume", type=click.Path(file_okay=False), help="Continue the run in this folder (other options are read from it)."
)
@click.option("--force", is_flag=True, help="Start over in a non-empty --out.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
@json_option
def search(
    space: str,
    space_overrides: dict[str, Any],
    latency: str | None,
    table: str | None,
    resume: str | None,
    out: str | None,
    force: bool,
    as_json: bool,
    quiet: bool,
    **options: Any,
) -> None:
    """Search SPACE for the most accurate net whose predicted latency meets --latency.

    Under ``torchrun --nproc-per-node N -m hwnas search ...`` the N processes share the work of
    every batch (Gloo on the CPU, NCCL with --device cuda, rank r on GPU LOCAL_RANK); only rank 0
    writes the run folder and prints.
    """
    if resume:
        given = given_options(click.get_current_context(), keep={"resume", "quiet", "as_json"})
        if given:
            raise HwnasError(f"--resume continues a run with the options saved in its {CONFIG}; leave out {', '.join(given)}")
        click.get_current_context().meta[RESUME_HINT] = _resume_hint(Path(resume))
        result = api.search(resume=resume, progress=not quiet)
    else:
        out = out or str(api.default_out(options["method"]))
        click.get_current_context().meta[RESUME_HINT] = _resume_hint(Path(out))
        result = api.search(
            latency,
            space=space,
            **space_overrides,
            table=table,
            out=out,
            force=force,
            progress=not quiet,
            on_warning=echo_warnings,
            **options,
        )
    if result is None:  # a rank other than 0 under torchrun
        return
    if as_json:
        echo_json({**result.result, "run": str(result.run)})
        return
    click.echo(f"derived arch: {result.result['arch']}")
    click.echo(
        f"predicted latency: {result.predicted_ms:.4g} ms  (budget {result.budget_ms:.4g} ms, aim {result.aim_ms:.4g} ms, "
        f"{100 * result.predicted_ms / result.budget_ms:.1f} % of the budget)"
    )
    click.echo(
        f"val acc: supernet {result.supernet_val_acc:.4f}, child {result.child_val_acc:.4f} (inherited weights, BN recalibrated)"
    )
    click.echo(f"run folder: {result.run}")
