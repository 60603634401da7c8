"""The Ray executor on a local Ray with 2 CPUs: same points and files as the local executor, failing
and dying points recorded while the others land, retries, interruption and resume."""

from __future__ import annotations

import os
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest

from harness import registry
from harness.cli import main
from harness.store import columns as C
from harness.store import load

ray = pytest.importorskip("ray", reason="the Ray executor needs the ray extra (in the test extra)")

HELPERS = Path(__file__).resolve().parents[1] / "helpers"  # ray_plugin.py, which the workers import

SUITE = """\
name: ray-smoke
workload: attention
reference: sdpa
fixed: {batch: 1}
sweep: {seq_len: [16, 32], heads: [1, 2]}
methods: {sdpa: {}, math: {}}
timing: {warmup_n: 0, min_samples: 2, max_samples: 2, budget_s: 0.0}
"""
CONFIG = ["method", "seq_len", "heads", "head_dim", "batch", "device", "dtype", "seed", "threads"]


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    """One local Ray (2 CPUs) for the module; workers load the test plugin like the driver."""
    before = os.environ.get(registry.PLUGINS_ENV)
    os.environ[registry.PLUGINS_ENV] = "ray_plugin"
    registry.load_builtins()
    path = os.pathsep.join([str(HELPERS), *(p for p in sys.path if p)])
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False,
             runtime_env={"env_vars": {registry.PLUGINS_ENV: "ray_plugin", "PYTHONPATH": path,
                                       "OMP_NUM_THREADS": "1"}})
    yield
    ray.shutdown()
    if before is None:
        os.environ.pop(registry.PLUGINS_ENV, None)
    else:
        os.environ[registry.PLUGINS_ENV] = before


def _run(tmp_path, text, *args, name="run"):
    suite = tmp_path / f"{name}.yaml"
    suite.write_text(textwrap.dedent(text))
    out = tmp_path / name
    return main(["run", str(suite), "--out", str(out), "--no-report", "-q", *args]), out


@pytest.mark.usefixtures("one_thread")
def test_a_ray_run_has_the_local_runs_points_configs_and_files(tmp_path):
    rc_local, local = _run(tmp_path, SUITE, name="local")
    rc_ray, remote = _run(tmp_path, SUITE, "--executor", "ray", name="ray")
    assert rc_local == rc_ray == 0
    a, b = load(local), load(remote)
    key = [C.HASH, *CONFIG, C.STATUS]
    pd.testing.assert_frame_equal(a.points[key].sort_values(C.HASH).reset_index(drop=True),
                                  b.points[key].sort_values(C.HASH).reset_index(drop=True))
    assert sorted(a.points.columns) == sorted(b.points.columns)
    assert sorted(p.name for p in local.iterdir()) == sorted(p.name for p in remote.iterdir())
    assert b.samples.groupby(C.HASH).size().eq(2).all()
    assert b.env["peaks"] and all(v["source"].startswith("calibrated") for v in b.env["peaks"].values())
    assert b.points["eff_flop_frac"].notna().all()  # the workers' peaks reach the rows
    assert b.points[C.HOST].notna().all()


FAILING = """\
name: ray-fail
workload: attention
fixed: {batch: 1, heads: 1}
sweep: {seq_len: [16, 32]}
methods:  # die runs first in its model group: the group's other points must still land
  die: {marker: MARKER}
  sdpa: {}
  boom: {}
exclude:
  - {method: die, seq_len: 32}
timing: {warmup_n: 0, min_samples: 2, max_samples: 2, budget_s: 0.0}
"""


def test_a_raising_point_and_a_dying_worker_are_failed_rows_and_the_others_land(tmp_path):
    marker = tmp_path / "attempts.txt"
    rc, out = _run(tmp_path, FAILING.replace("MARKER", str(marker)), "--executor", "ray", "--retries", "1")
    assert rc == 1  # some points failed
    pts = load(out).points.set_index([C.METHOD, "seq_len"])
    assert (pts.loc["sdpa", C.STATUS] == C.OK).all()
    assert (pts.loc["boom", C.STATUS] == C.FAILED).all()
    assert pts.loc["boom", C.ERROR].str.startswith("ValueError: boom from the plugin").all()
    died = pts.loc[("die", 16)]
    assert died[C.STATUS] == C.FAILED and died[C.ERROR].startswith("Ray task died: ")
    assert len(marker.read_text().splitlines()) == 2  # tried once more (--retries 1), then recorded
    assert len(pts) == 5  # every point has its row: the die point's group went on without it
    written = [(m, s) for m, s in zip(load(out).points[C.METHOD], load(out).points["seq_len"])]
    after = written[written.index(("die", 16)) + 1:]
    assert ("sdpa", 16) in after and ("boom", 16) in after  # ... in a new task, after it died


def test_an_interrupted_ray_run_keeps_its_rows_and_resumes(tmp_path, monkeypatch):
    from harness.run import ray_executor

    real = ray_executor.RayDriver._record
    seen = []

    def interrupt_after_three(self, result, bar):
        real(self, result, bar)
        seen.append(result["row"][C.HASH])
        if len(seen) == 3:
            raise KeyboardInterrupt

    monkeypatch.setattr(ray_executor.RayDriver, "_record", interrupt_after_three)
    rc, out = _run(tmp_path, SUITE, "--executor", "ray")
    assert rc == 130
    assert sorted(load(out).points[C.HASH]) == sorted(seen)
    monkeypatch.setattr(ray_executor.RayDriver, "_record", real)
    assert main(["run", str(tmp_path / "run.yaml"), "--resume", str(out), "--executor", "ray", "-q",
                 "--no-report"]) == 0
    pts = load(out).points
    assert len(pts) == 8 and pts[C.HASH].is_unique and (pts[C.STATUS] == C.OK).all()


def test_without_ray_the_executor_is_one_paragraph_and_nothing_is_written(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray fails
    rc, out = _run(tmp_path, SUITE, "--executor", "ray")
    err = capsys.readouterr().err
    assert rc == 2 and "pip install 'vit-accel-harness[ray]'" in err and "Traceback" not in err
    assert not out.exists()


def test_ray_options_without_the_ray_executor_are_a_usage_error(tmp_path, capsys):
    rc, out = _run(tmp_path, SUITE, "--retries", "2", "--gpus-per-point", "1")
    assert rc == 2 and "--gpus-per-point, --retries only apply to --executor ray" in capsys.readouterr().err


def test_tasks_are_model_groups_cut_so_that_every_slot_has_work():
    from harness.run.ray_executor import group_points, parallel_slots

    points = [("a", i) for i in range(6)] + [("b", i) for i in range(2)]
    def key(p):
        return p[0]

    assert group_points(points, key, 1) == [points[:6], points[6:]]  # one slot: one task per model
    tasks = group_points(points, key, 4)  # 8 points, 4 slots: slices of 2, never mixing models
    assert tasks == [points[0:2], points[2:4], points[4:6], points[6:8]]
    assert parallel_slots({"GPU": 8.0, "CPU": 64.0}, 1.0, 1.0) == 8
    assert parallel_slots({"GPU": 8.0, "CPU": 64.0}, 2.0, 1.0) == 4
    assert parallel_slots({"CPU": 2.0}, 0.0, 1.0) == 2
