"""Fixtures for the pytest-benchmark micro-benchmarks (``nox -s microbench``).

These files are not part of the normal test run (pyproject's addopts ignores this folder);
the session runs them with ``--override-ini=addopts=`` and
``--benchmark-timer=harness.measure.benchtimer.synchronized_perf_counter``. That timer synchronizes
the CUDA device before every clock read, so on a GPU a benchmark measures the kernels and not
only their asynchronous launches; on CPU it is plain ``time.perf_counter``. A CUDA benchmark
run with another timer fails with a message saying so (see the ``device`` fixture).

Besides ``test_*.py``, modules named ``bench_*.py`` in this folder are collected too (they
double as scripts with their own ``__main__``).

Figures from a shared machine are noisy; compare them only with figures from the same run.
"""

from __future__ import annotations

import fnmatch
from pathlib import Path

import pytest
import torch

SYNC_TIMER = "harness.measure.benchtimer.synchronized_perf_counter"


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Module | None:
    """Collect ``bench_*.py`` here unless pytest collects it already (python_files or a path argument)."""
    if file_path.suffix != ".py" or not file_path.name.startswith("bench_"):
        return None
    if parent.session.isinitpath(file_path):
        return None  # named on the command line: the python plugin collects it
    if any(fnmatch.fnmatch(file_path.name, pat) for pat in parent.config.getini("python_files")):
        return None
    return pytest.Module.from_parent(parent, path=file_path)


@pytest.fixture(scope="session")
def device(request: pytest.FixtureRequest) -> str:
    """``"cuda"`` when a CUDA GPU is visible, else ``"cpu"``.

    On CUDA, requires the synchronizing timer (``--benchmark-timer=`` :data:`SYNC_TIMER`):
    with pytest-benchmark's default host clock the numbers would be launch times.
    """
    if not torch.cuda.is_available():
        return "cpu"
    timer = str(request.config.getoption("benchmark_timer", default=""))
    if timer != SYNC_TIMER:
        pytest.fail(f"CUDA micro-benchmarks need --benchmark-timer={SYNC_TIMER} (got {timer!r}): the "
                    "default clock does not wait for the GPU and would time kernel launches only; "
                    "run them with `nox -s microbench`", pytrace=False)
    return "cuda"
