"""What the CLI tests share: the smoke suite's path, options that make a run fast, a fake suite file."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SMOKE = str(REPO / "suites" / "attention-smoke.yaml")
FAST = ["--set", "timing.warmup_n=0", "--set", "timing.min_samples=2", "--set", "timing.max_samples=2",
        "--set", "timing.budget_s=0.01"]


def fake_suite_file(tmp_path: Path, body: str) -> str:
    """A suite file of the ``fake`` workload (tests/conftest.py) with ``body`` after its header."""
    p = tmp_path / "fake.yaml"
    p.write_text("name: f\nworkload: fake\n" + body)
    return str(p)


def no_traceback(err: str) -> str:
    """``err`` (stderr of a command), asserting it holds no Python traceback."""
    assert "Traceback" not in err
    return err
