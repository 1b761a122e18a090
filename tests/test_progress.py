"""Progress in a log: one line per phase (and one a minute in a long phase), never a carriage return; a terminal keeps tqdm."""

from __future__ import annotations

import io

from tqdm import tqdm

from hwnas import progress
from hwnas.cli.main import cli
from hwnas.progress import LineProgress, progress_bar
from hwnas.search.synthetic import write_synthetic_table

from helpers import budget_between, tiny_search, tiny_space


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_phase_is_one_line_when_it_ends():
    out, clock = io.StringIO(), Clock()
    bar = LineProgress(total=50, desc="dsnas epoch 1/3", unit="steps", file=out, clock=clock)
    for step in range(50):
        clock.now += 0.5  # 25 s in all: under the interval
        bar.update(1)
        bar.set_postfix(loss=f"{2.0 - step / 50:.3f}")
    bar.close()
    bar.close()  # closing twice writes nothing more
    assert out.getvalue() == "dsnas epoch 1/3: 50/50 steps done in 25.0 s, loss=1.020\n"


def test_a_long_phase_writes_a_line_a_minute_and_iterates_like_tqdm():
    out, clock = io.StringIO(), Clock()

    def slow_items():
        for item in range(10):
            clock.now += 25.0  # 250 s in all
            yield item

    bar = LineProgress(slow_items(), total=10, desc="train epoch 1/1", unit="batches", file=out, clock=clock)
    assert list(bar) == list(range(10))
    lines = out.getvalue().splitlines()
    # lines at 75 s, 150 s and 225 s (the first update 60 s or more after the last line), then the end
    assert [line.split(" in ")[1] for line in lines] == ["75.0 s", "150.0 s", "225.0 s", "250.0 s"]
    assert lines[-1] == "train epoch 1/1: 10/10 batches done in 250.0 s"
    assert "\r" not in out.getvalue()


def test_a_disabled_bar_writes_nothing():
    out = io.StringIO()
    with LineProgress(total=3, desc="quiet", file=out, disable=True) as bar:
        bar.update(3)
    assert out.getvalue() == ""


def test_a_terminal_gets_tqdm_and_a_log_gets_lines(monkeypatch):
    monkeypatch.setattr(progress, "interactive", lambda stream=None: True)
    bar = progress_bar(total=3, desc="x")
    assert isinstance(bar, tqdm)
    bar.close()
    monkeypatch.setattr(progress, "interactive", lambda stream=None: False)
    assert isinstance(progress_bar(total=3, desc="x"), LineProgress)


def test_a_search_with_its_output_in_a_file_writes_one_line_per_epoch(cli_runner, tmp_path):
    """CliRunner's streams are not terminals: what a search writes to a log, without --quiet."""
    table = write_synthetic_table(tiny_space(), tmp_path / "table.json")
    result = cli_runner.invoke(
        cli, ["search", *tiny_search(table, budget_between(table, 0.5), epochs=3, out=str(tmp_path / "run"))]
    )
    assert result.exit_code == 0, result.output
    assert "\r" not in result.output
    epochs = [line for line in result.output.splitlines() if " epoch " in line]
    assert [line.split(":")[0] for line in epochs] == [f"dsnas epoch {e}/3" for e in (1, 2, 3)]
    assert len(result.output.splitlines()) <= 12
