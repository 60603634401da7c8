"""Suites of the ``fake`` workload (tests/conftest.py) that run in milliseconds."""

from __future__ import annotations

from harness.suite import Suite, parse_suite

FAST = "timing: {warmup_n: 0, min_samples: 2, max_samples: 2, budget_s: 0.01}\n"


def fake_suite(body: str, *, name: str = "f", extra: str = "") -> Suite:
    """A parsed suite of the fake workload: ``body`` (methods, sweep ...) with fast timing."""
    return parse_suite(f"name: {name}\nworkload: fake\n{body}{FAST}{extra}", source="f.yaml")
