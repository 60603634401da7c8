"""Fixtures of the history tests (the helpers are in history_fakes.py)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from history_fakes import run_factory, store_factory


@pytest.fixture
def make_run(tmp_path) -> Callable[..., Path]:
    """``make_run(name, latencies={hash: ms}, ...)``: a finished run directory (RunWriter)."""
    return run_factory(tmp_path)


@pytest.fixture
def store_of(tmp_path) -> Callable[..., Path]:
    """``store_of({hash: values}, ...)``: a store file of a synthetic history."""
    return store_factory(tmp_path)
