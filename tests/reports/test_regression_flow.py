"""The regression gate end to end through the CLI: run, run again, ``harness compare``.

Specification:
- two runs of identical code pass the gate (exit 0);
- an injected host delay (a test double of each method that sleeps 5x the slowest median per
  call, under the same name and parameters, so every config hash is unchanged: every point
  becomes at least ~6x slower, beyond the CPU preset's 3x threshold even when the machine's
  load changes between runs) fails it (exit 1) and the markdown names the regression;
- the same slowdown passes when ``--threshold`` exceeds it (the gate needs an effect size,
  not only significance);
- runs with no point in common are refused (exit 2) with a message saying why;
- a run interrupted after N points resumes with ``--resume`` and ends with every point
  recorded exactly once, status ok.

These tests assert the gate's verdicts, never a wall-clock time.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from harness import registry
from harness.cli import main
from harness.store import columns as C
from harness.store import load
from harness.suite import load_suite
from harness.workloads.attention import AttentionWorkload
from harness.workloads.base import Bench

pytestmark = pytest.mark.usefixtures("one_thread")

REPO = Path(__file__).resolve().parents[2]
SUITE = str(REPO / "suites" / "regression-smoke.yaml")
N_POINTS = 4
QUIET = ["--no-report", "-q"]
# the resume test only checks bookkeeping, so it samples as little as possible
FAST = ["--set", "timing.warmup_n=0", "--set", "timing.min_samples=2", "--set", "timing.max_samples=2",
        "--set", "timing.budget_s=0.01"]


def _run(out: Path, *extra: str) -> int:
    """`harness run` of the regression-smoke suite into ``out``; restores torch's thread count."""
    n = torch.get_num_threads()
    try:
        return main(["run", SUITE, "--out", str(out), *QUIET, *extra])
    finally:
        torch.set_num_threads(n)


def _sleeping(build, delay_ms: float):
    """A method builder whose attention_fn sleeps ``delay_ms`` on the host before each call."""

    def slowed_build(params):
        fn = build(params)

        def attention_fn(*args, **kwargs):
            time.sleep(delay_ms / 1e3)
            return fn(*args, **kwargs)

        return attention_fn

    return slowed_build


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Path]]:
    """base and new: two runs of identical code; slow: the same with an injected delay per call."""
    root = tmp_path_factory.mktemp("gate")
    dirs = {name: root / name for name in ("base", "new", "slow")}
    assert _run(dirs["base"]) == 0
    assert _run(dirs["new"]) == 0
    slowest_ms = float(load(dirs["base"]).points[C.LAT_MEDIAN].max())
    with pytest.MonkeyPatch.context() as mp:
        for name in ("sdpa", "math"):
            spec = registry.get_method("attention", name)
            slowed = dataclasses.replace(spec, build=_sleeping(spec.build, max(5.0 * slowest_ms, 1.0)))
            mp.setitem(registry._METHODS, ("attention", name), slowed)
        assert _run(dirs["slow"]) == 0
    yield dirs


def test_the_suite_has_a_few_points_with_enough_samples_to_test(runs):
    for name in ("base", "new", "slow"):
        pts = load(runs[name]).points
        assert len(pts) == N_POINTS and set(pts[C.STATUS]) == {C.OK}
        assert (pts[C.N_SAMPLES] >= 15).all()  # the suite's min_samples: enough for p < 0.01


def test_identical_code_passes_the_gate(runs, tmp_path, capsys):
    md = tmp_path / "compare.md"
    assert main(["compare", str(runs["base"]), str(runs["new"]), "--markdown", str(md)]) == 0
    text = md.read_text()
    assert text.startswith("## Benchmark comparison: no regression")
    assert "**REGRESSION**" not in text
    assert f"0 of {N_POINTS} points slower by more than 200%" in text  # the CPU preset's threshold
    assert capsys.readouterr().out.strip() == text.strip()  # printed and written alike


def test_an_injected_slowdown_fails_the_gate_and_is_named(runs, tmp_path):
    md = tmp_path / "compare.md"
    assert main(["compare", str(runs["base"]), str(runs["slow"]), "--markdown", str(md)]) == 1
    text = md.read_text()
    assert text.startswith("## Benchmark comparison: REGRESSED")
    assert f"{N_POINTS} of {N_POINTS} points slower" in text
    assert text.count("**REGRESSION**") == N_POINTS  # one table row per point, each named
    for method in ("sdpa", "math"):
        assert method in text


def test_a_threshold_above_the_slowdown_passes_the_gate(runs, tmp_path):
    md = tmp_path / "compare.md"
    # the slow run is ~6x slower or more: significant, but far under a 100x effect threshold
    assert main(["compare", str(runs["base"]), str(runs["slow"]), "--threshold", "100",
                 "--markdown", str(md)]) == 0
    text = md.read_text()
    assert text.startswith("## Benchmark comparison: no regression")
    assert "median ratio new/base − 1 > 100" in text


def test_runs_without_common_points_are_refused_with_exit_2(runs, tmp_path, capsys):
    other = tmp_path / "other.yaml"
    other.write_text(
        "name: other-smoke\nworkload: attention\nfixed: {batch: 1, heads: 2, head_dim: 16, seq_len: 32, "
        "device: cpu, threads: 1}\nmethods: {sdpa: {}}\n"
        "timing: {warmup_n: 0, min_samples: 2, max_samples: 2, budget_s: 0.01}\n"
    )
    out = tmp_path / "other"
    assert main(["run", str(other), "--out", str(out), *QUIET]) == 0
    capsys.readouterr()
    assert main(["compare", str(runs["base"]), str(out)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "harness compare: error: Refusing to compare" in captured.err
    assert "no point in common" in captured.err
    assert "Traceback" not in captured.err


def test_an_interrupted_run_resumes_and_records_every_point_once(tmp_path, monkeypatch, capsys):
    interrupt_at = 2  # the third point is interrupted while its samples are being taken
    calls = {"n": 0}
    real_bench = AttentionWorkload.bench

    def bench_then_interrupt(self, model, point, ctx) -> Bench:
        bench = real_bench(self, model, point, ctx)
        calls["n"] += 1
        if calls["n"] > interrupt_at:
            def interrupted() -> None:
                raise KeyboardInterrupt
            bench.fn = interrupted
        return bench

    out = tmp_path / "run"
    monkeypatch.setattr(AttentionWorkload, "bench", bench_then_interrupt)
    assert _run(out, *FAST) == 130
    assert f"--resume {out}" in capsys.readouterr().err
    partial = load(out).points
    assert len(partial) == interrupt_at and set(partial[C.STATUS]) == {C.OK}

    monkeypatch.setattr(AttentionWorkload, "bench", real_bench)
    assert main(["run", SUITE, "--resume", str(out), *QUIET, *FAST]) == 0
    assert (f"{N_POINTS - interrupt_at}/{N_POINTS} points run: {N_POINTS - interrupt_at} ok "
            f"({interrupt_at} already recorded, skipped)") in capsys.readouterr().out

    run = load(out)
    expected = {p.hash for p in load_suite(SUITE, overrides=[s for s in FAST if s != "--set"]).points()}
    assert len(expected) == N_POINTS
    assert sorted(run.points[C.HASH]) == sorted(expected)  # every point exactly once
    assert set(run.points[C.STATUS]) == {C.OK}
    assert set(run.samples[C.HASH]) == expected  # the interrupted point left no stray samples
    assert (run.samples.groupby(C.HASH).size() == 2).all()
    assert len(run.manifest["resumed"]) == 1


def test_ab_gate_alternates_base_and_head_point_by_point_then_gates(tmp_path):
    """.ci/ab-gate (the CI flow): both runs complete, each point once, the sides take turns."""
    import json
    import subprocess
    import sys

    harness = str(Path(sys.executable).parent / "harness")
    out = tmp_path / "ab"
    cmd = [sys.executable, str(REPO / ".ci" / "ab-gate"), "--base-harness", harness,
           "--head-harness", harness, "--suite", SUITE, "--out", str(out), "--slice", "2",
           "--set", "timing.min_samples=3", "--set", "timing.max_samples=3", "--set", "timing.warmup_n=0",
           "--", "--threshold", "100"]
    done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stdout + done.stderr
    for side in ("base", "head"):
        rows = [json.loads(line) for line in (out / side / "points.jsonl").read_text().splitlines()]
        assert len(rows) == N_POINTS and len({r[C.HASH] for r in rows}) == N_POINTS
        assert len(load(out / side).manifest["resumed"]) == 1  # two slices of 2 points
    runs = [line.split() for line in done.stdout.splitlines() if line.startswith("+ ") and " run " in line]
    turns = [(str(out / "base") in " ".join(r) and "base" or "head", "--resume" in r) for r in runs]
    # turns, not one whole run after the other
    assert turns == [("base", False), ("head", False), ("base", True), ("head", True)]
    assert (out / "compare.md").read_text().startswith("## Benchmark comparison: no regression")
