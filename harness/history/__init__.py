"""A history of runs across commits, and the steps in it.

- :mod:`~harness.history.store`: the one-file store (Parquet), its lock, atomic rewrites
- :mod:`~harness.history.entries`: a finished run as entries (one per ok point)
- :mod:`~harness.history.changepoints`: E-divisive means with a permutation test (pure numpy)
- :mod:`~harness.history.steps`: change points per series, measured and judged (the gate)
- :mod:`~harness.history.plot`: the figure

``harness history add | check | plot | show`` (:mod:`harness.cli.history`) is the front end.
"""

from harness.history.changepoints import ChangePoint, EDivisiveConfig, change_points
from harness.history.entries import Provenance, run_entries
from harness.history.steps import CheckConfig, CheckResult, Series, check
from harness.history.store import DEFAULT_STORE, METRICS, HistoryError, append, read_store, write_store

__all__ = [
    "DEFAULT_STORE", "METRICS", "ChangePoint", "CheckConfig", "CheckResult", "EDivisiveConfig",
    "HistoryError", "Provenance", "Series", "append", "change_points", "check", "read_store", "run_entries",
    "write_store",
]
