"""Job arrays: --shard i/n splits a suite deterministically, harness merge joins the shards; every
row says where it ran (host, GPU), and compare refuses pairs measured on different GPU models."""

from __future__ import annotations

import json
import shutil
import socket
import textwrap

import pandas as pd
import pytest

from harness import registry
from harness.cli import main
from harness.errors import RunError
from harness.run.points import order_points, shard_points
from harness.store import columns as C
from harness.store import load
from harness.suite import parse_suite

pytestmark = pytest.mark.usefixtures("one_thread")

SUITE = """\
name: shards
workload: attention
reference: sdpa
fixed: {batch: 1, threads: 1}
sweep: {seq_len: [16, 32, 48], heads: [1, 2]}
methods: {sdpa: {}, math: {}}
timing: {warmup_n: 0, min_samples: 2, max_samples: 2, budget_s: 0.0}
"""
CONFIG = ["method", "seq_len", "heads", "head_dim", "batch", "device", "dtype", "seed", "threads"]


def _suite(text=SUITE):
    registry.load_builtins()
    return parse_suite(textwrap.dedent(text))


def _model_key(point):
    return registry.get_workload("attention")().model_key(point)


def test_shards_are_disjoint_cover_every_point_and_do_not_depend_on_the_run_order():
    suite = _suite()
    points = suite.points()
    for n in (1, 2, 3, 5, 12, 13):
        shards = [shard_points(points, _model_key, suite.hash, i, n) for i in range(n)]
        hashes = [p.hash for s in shards for p in s]
        assert sorted(hashes) == sorted(p.hash for p in points) and len(set(hashes)) == len(hashes)
        assert max(map(len, shards)) - min(map(len, shards)) <= 1  # balanced
    shuffled = order_points(points, _model_key, "shuffle", "another seed")
    assert [p.hash for p in shard_points(shuffled, _model_key, suite.hash, 1, 3)] == \
        [p.hash for p in shard_points(points, _model_key, suite.hash, 1, 3)]
    with pytest.raises(RunError, match="0 <= i < n"):
        shard_points(points, _model_key, suite.hash, 2, 2)


@pytest.mark.parametrize("bad, expected", [("2/2", "need 0 <= I < N"), ("1", "expected I/N"),
                                           ("a/b", "expected I/N")])
def test_a_bad_shard_option_is_a_usage_error(tmp_path, capsys, bad, expected):
    (tmp_path / "s.yaml").write_text(SUITE)
    with pytest.raises(SystemExit) as e:
        main(["run", str(tmp_path / "s.yaml"), "--shard", bad, "--out", str(tmp_path / "run")])
    assert e.value.code == 2 and expected in capsys.readouterr().err


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("shards")
    (root / "s.yaml").write_text(SUITE)
    base = ["run", str(root / "s.yaml"), "--no-report", "-q"]
    try:
        assert main([*base, "--out", str(root / "whole")]) == 0
        for i in (0, 1):
            shard = ["--shard", f"{i}/2", "--order", "shuffle"]
            assert main([*base, "--out", str(root / f"shard{i}"), *shard]) == 0
        assert main(["merge", str(root / "shard0"), str(root / "shard1"), "--out", str(root / "merged"),
                     "--no-report"]) == 0
    finally:
        torch.set_num_threads(n)
    return root


def test_two_merged_shards_hold_the_unsharded_runs_points_and_configs(runs):
    whole, merged = load(runs / "whole"), load(runs / "merged")
    key = [C.HASH, *CONFIG, C.STATUS]
    a = whole.points[key].sort_values(C.HASH).reset_index(drop=True)
    b = merged.points[key].sort_values(C.HASH).reset_index(drop=True)
    pd.testing.assert_frame_equal(a, b)
    assert merged.samples.groupby(C.HASH).size().eq(2).all() and len(merged.samples) == len(whole.samples)
    shards = [load(runs / f"shard{i}") for i in (0, 1)]
    assert sorted(len(s.points) for s in shards) == [6, 6]
    assert set(shards[0].points[C.HASH]).isdisjoint(shards[1].points[C.HASH])
    # every row keeps the run it was measured in
    assert set(merged.points[C.RUN_ID]) == {s.manifest["run_id"] for s in shards}
    info = merged.manifest["merged_from"]
    assert [m["shard"] for m in info] == ["0/2", "1/2"] and [m["n_points"] for m in info] == [6, 6]
    assert merged.manifest["n_points"] == 12 and merged.manifest["suite_hash"] == whole.manifest["suite_hash"]
    assert merged.suite == whole.suite


def test_every_row_records_where_it_ran(runs):
    pts = load(runs / "merged").points
    assert (pts[C.HOST] == socket.gethostname()).all()
    assert pts[C.GPU_NAME].isna().all() and pts[C.GPU_UUID].isna().all()  # CPU points


def test_merge_refuses_runs_of_different_suites(runs, tmp_path, capsys):
    other = tmp_path / "other.yaml"
    other.write_text(SUITE.replace("[16, 32, 48]", "[16, 32]"))
    assert main(["run", str(other), "--out", str(tmp_path / "o"), "--no-report", "-q", "--shard", "1/2"]) == 0
    assert main(["merge", str(runs / "shard0"), str(tmp_path / "o"), "--out", str(tmp_path / "m")]) == 2
    err = capsys.readouterr().err
    assert "only shards of one resolved suite" in err and not (tmp_path / "m").exists()


def test_merge_refuses_a_point_recorded_twice_and_a_non_empty_output(runs, tmp_path, capsys):
    again = tmp_path / "again"
    shutil.copytree(runs / "shard0", again)
    assert main(["merge", str(runs / "shard0"), str(again), "--out", str(tmp_path / "m")]) == 2
    assert "is recorded in both" in capsys.readouterr().err
    assert main(["merge", str(runs / "shard0"), str(runs / "shard1"), "--out", str(runs / "whole")]) == 2
    assert "already holds a run" in capsys.readouterr().err


def test_merge_refuses_runs_from_machines_that_differ_unless_allowed(runs, tmp_path, capsys):
    moved = tmp_path / "moved"
    shutil.copytree(runs / "shard1", moved)
    env = json.loads((moved / "env.json").read_text())
    env["cpu_model"] = "Some Other CPU"
    (moved / "env.json").write_text(json.dumps(env))
    assert main(["merge", str(runs / "shard0"), str(moved), "--out", str(tmp_path / "m")]) == 2
    assert "CPU model differs" in capsys.readouterr().err
    assert main(["merge", str(runs / "shard0"), str(moved), "--out", str(tmp_path / "m"),
                 "--allow-env-mismatch", "--no-report"]) == 0


def test_a_shard_resumes_only_with_its_own_shard_option(runs, tmp_path, capsys):
    copy = tmp_path / "s0"
    shutil.copytree(runs / "shard0", copy)
    assert main(["run", str(runs / "s.yaml"), "--resume", str(copy), "--shard", "1/2", "-q"]) == 2
    assert "made with --shard 0/2, but this command gives --shard 1/2" in capsys.readouterr().err
    assert main(["run", str(runs / "s.yaml"), "--resume", str(copy), "--shard", "0/2", "-q",
                 "--no-report"]) == 0


def _with_gpus(src, dst, names):
    """A copy of a run whose rows name the given GPU models (in row order)."""
    shutil.copytree(src, dst)
    log = dst / "points.jsonl"
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    for r, name in zip(rows, names):
        r[C.GPU_NAME] = name
    log.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return dst


def test_compare_refuses_pairs_measured_on_different_gpu_models(runs, tmp_path, capsys):
    base = _with_gpus(runs / "whole", tmp_path / "base", ["NVIDIA H100 80GB HBM3"] * 12)
    gpus = ["NVIDIA H100 80GB HBM3"] * 11 + ["NVIDIA A100-SXM4-80GB"]
    new = _with_gpus(runs / "whole", tmp_path / "new", gpus)
    assert main(["compare", str(base), str(new)]) == 2
    err = capsys.readouterr().err
    assert "1 paired point(s) ran on different GPU models" in err and "NVIDIA A100-SXM4-80GB" in err
    assert main(["compare", str(base), str(new), "--allow-env-mismatch", "--threshold", "100"]) in (0, 1)


def test_reports_group_by_gpu_model_when_a_run_spans_several(runs, tmp_path):
    from reports.tables import add_speedup, workload_axes

    mixed = _with_gpus(runs / "whole", tmp_path / "mixed", ["GPU A"] * 6 + ["GPU B"] * 6)
    run = load(mixed)
    assert C.GPU_NAME in workload_axes(run, run.suite)
    assert C.GPU_NAME not in workload_axes(load(runs / "whole"), run.suite)
    pts = add_speedup(run.points, run.suite)
    # a math point is compared with the sdpa point of its own GPU model only
    for _, r in pts[pts[C.METHOD] == "math"].iterrows():
        ref = pts[(pts[C.METHOD] == "sdpa") & (pts["seq_len"] == r["seq_len"]) & (pts["heads"] == r["heads"])
                  & (pts[C.GPU_NAME] == r[C.GPU_NAME])]
        if len(ref):
            assert r[C.SPEEDUP] == pytest.approx(ref[C.LAT_MEDIAN].iloc[0] / r[C.LAT_MEDIAN])
        else:
            assert pd.isna(r[C.SPEEDUP])
