"""The out-of-tree example method (examples/dropkv) runs end to end, as a user runs it: loaded through
HARNESS_PLUGINS from its own folder, listed by `harness list`, and measured beside plain VGGT."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness.store import load

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "dropkv"


def harness_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """`python -m harness.cli ARGS` with the example's folder on PYTHONPATH and named in HARNESS_PLUGINS."""
    env = dict(os.environ, HARNESS_PLUGINS="dropkv",
               PYTHONPATH=os.pathsep.join(filter(None, [str(EXAMPLE), os.environ.get("PYTHONPATH")])))
    return subprocess.run([sys.executable, "-m", "harness.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)


@pytest.fixture(scope="module")
def example_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("dropkv") / "run"
    proc = harness_cli("run", str(EXAMPLE / "dropkv.yaml"), "--out", str(out), "--no-report", "-q",
                       cwd=tmp_path_factory.getbasetemp())
    assert proc.returncode == 0, proc.stderr
    return load(out)


def test_the_plugin_is_listed_with_its_parameter(tmp_path):
    proc = harness_cli("list", "--workload", "vggt", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    at = next(i for i, line in enumerate(lines) if line.strip().startswith("method dropkv:"))
    assert "strided" in lines[at] or "every n-th" in lines[at]
    assert any(line.split()[:3] == ["keep", "float", "0.5"] for line in lines[at + 1:at + 5])


def test_every_point_of_the_example_suite_runs_ok(example_run):
    points = example_run.points
    assert sorted(points["method"].unique()) == ["dropkv", "tome", "vggt"]
    assert (points["status"] == "ok").all(), points[["method", "error"]]
    assert sorted(points.loc[points["method"] == "dropkv", "keep"]) == [0.25, 0.5, 1.0]


def test_keeping_every_token_reproduces_plain_vggt_exactly(example_run):
    p = example_run.points
    full = p[(p["method"] == "dropkv") & (p["keep"] == 1.0)].iloc[0]
    assert full["fid_depth_rel_err"] == 0.0 and full["fid_token_cos"] == pytest.approx(1.0, abs=1e-6)
    plain = p[p["method"] == "vggt"].iloc[0]
    assert full["q_depth_abs_rel"] == plain["q_depth_abs_rel"]


def test_the_counters_it_reports_are_the_tokens_it_keeps(example_run):
    points = example_run.points
    dk = points[points["method"] == "dropkv"].set_index("keep")
    n = points[points["method"] == "vggt"].iloc[0]["work_attn_flops"]  # FLOPs scale with the kept keys
    for keep, step in ((1.0, 1), (0.5, 2), (0.25, 4)):
        frac = dk.loc[keep, "work_tokens_kv_frac"]
        # ceil(N / step) of N tokens per frame-major sequence: within one token of 1 / step
        assert frac == pytest.approx(1.0 / step, abs=0.02)
        assert dk.loc[keep, "work_attn_flops"] == pytest.approx(n * frac, rel=1e-9)
        assert dk.loc[keep, "work_tokens_q_frac"] == 1.0


def test_fewer_keys_lose_more_fidelity(example_run):
    dk = example_run.points[example_run.points["method"] == "dropkv"].set_index("keep")
    errors = [dk.loc[k, "fid_depth_rel_err"] for k in (1.0, 0.5, 0.25)]
    assert errors[0] < errors[1] < errors[2] and all(math.isfinite(e) for e in errors)


def test_a_plugin_that_fails_on_import_is_one_paragraph(tmp_path):
    (tmp_path / "broken_plugin.py").write_text("import harness\nraise RuntimeError('half-written plugin')\n")
    env = dict(os.environ, HARNESS_PLUGINS="broken_plugin", PYTHONPATH=str(tmp_path))
    proc = subprocess.run([sys.executable, "-m", "harness.cli", "list"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "$HARNESS_PLUGINS module 'broken_plugin' failed while it was imported: RuntimeError: " \
           "half-written plugin" in proc.stderr and "broken_plugin.py:2" in proc.stderr
