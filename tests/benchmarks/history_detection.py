"""How well ``harness history check`` separates steps from noise, on synthetic series.

    python tests/benchmarks/history_detection.py [--trials 200]

For each noise level (relative, normal, commit to commit) it checks seeded 60-entry series:

- flat: how often the check fails (exit 1) and how often any step is reported at all;
- a step of +S % after entry 57 (3 entries after it: the earliest a step can be seen): how often
  the check fails and names exactly the first commit after the step;
- the same step after entry 30, checked once 30 entries have followed: reported (as history)
  at exactly the right commit.

Not a test (no assertion): the figures go to docs/guide/history.md. The series are built like
the tests' (tests/history/history_fakes.py).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "history"))
from history_fakes import commit_of, history_frame, stepped  # noqa: E402

from harness.history import CheckConfig, check  # noqa: E402


def rates(noise: float, step: float, after: int, trials: int, n: int = 60) -> tuple[float, float]:
    """(share of trials whose check fails, share that names the first commit after the step)."""
    failed = exact = 0
    for seed in range(trials):
        values = stepped(n=n, after=after, step=step, seed=seed, noise=noise)
        result = check(history_frame({"p": values}).assign(timer="perf_counter"), CheckConfig())
        failed += bool(result.failed)
        steps = result.steps[result.steps["verdict"] != "no change"]
        exact += bool(step) and commit_of(after + 1) in set(steps["commit"])
    return failed / trials, exact / trials


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=200)
    args = ap.parse_args()
    print("| noise | flat: check fails | +3 % step, 3 entries old: fails / exact commit | "
          "+3 % step, 30 entries old: found at the exact commit | +5 % step, 3 old: fails / exact |")
    print("|---|---|---|---|---|")
    for noise in (0.003, 0.01, 0.02):
        flat, _ = rates(noise, 0.0, 60, args.trials)
        new_fail, new_exact = rates(noise, 0.03, 57, args.trials)
        _, old_exact = rates(noise, 0.03, 30, args.trials)
        big_fail, big_exact = rates(noise, 0.05, 57, args.trials)
        print(f"| {noise:.1%} | {flat:.1%} | {new_fail:.1%} / {new_exact:.1%} | {old_exact:.1%} | "
              f"{big_fail:.1%} / {big_exact:.1%} |")
    print(f"({args.trials} seeded series per cell, 60 entries each; default check: alpha 0.01, "
          f"min-step 2 %, recent 5; numpy {np.__version__})")


if __name__ == "__main__":
    main()
