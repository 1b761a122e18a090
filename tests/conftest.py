"""Shared test settings: one torch thread (2-core CI machines) and a CLI runner."""

from __future__ import annotations

import pytest
import torch
from click.testing import CliRunner

torch.set_num_threads(1)


@pytest.fixture
def cli_runner() -> CliRunner:
    return CliRunner()
