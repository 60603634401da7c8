"""Fixtures of the command-line tests."""

from __future__ import annotations

import pytest
from cli_runs import fake_suite_file

SWEEP = "sweep: {size: [2, 3]}\nmethods: {plain: {}, knob: {}}\n"


@pytest.fixture
def suite(tmp_path, fake_workload) -> str:
    """A suite file of the ``fake`` workload: 2 sizes x 2 methods (4 points)."""
    return fake_suite_file(tmp_path, SWEEP)
