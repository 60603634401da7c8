"""The profiled pass: a trace per point with the method phases, an operator table, and timed
samples left untouched (the pass runs after them)."""

from __future__ import annotations

import gzip
import json
import textwrap
from pathlib import Path

import pandas as pd
import pytest

from harness.cli import main
from harness.measure.profiling import OP_COLUMNS
from harness.run import point_loop
from harness.store import OPS_FILE, load, read_ops
from harness.store import columns as C

pytestmark = pytest.mark.usefixtures("one_thread", "clean_registry")

SUITE = """\
name: prof
workload: vggt
reference: vggt
fixed: {preset: vggt-tiny, scope: attention, frames: 4, height: 56, width: 56, layer: 0}
methods:
  vggt: {}
  httm: {query_merge: 0.5, outlier_frac: 0.05, kv_merge: 0.5, head_groups: 4, n_s: 16, n_t: 2}
timing: {warmup_n: 1, min_samples: 3, max_samples: 3, budget_s: 5}
"""


@pytest.fixture(scope="module")
def profiled(tmp_path_factory):
    root = tmp_path_factory.mktemp("prof")
    suite = root / "s.yaml"
    suite.write_text(textwrap.dedent(SUITE))
    for name, extra in (("plain", []), ("profiled", ["--profile"])):
        assert main(["run", str(suite), "--out", str(root / name), "--no-report", "-q", *extra]) == 0
    return root


def trace_names(run_dir, point_hash):
    path = run_dir / "profiles" / f"{point_hash}.trace.json.gz"
    return {e.get("name") for e in json.loads(gzip.decompress(path.read_bytes()))["traceEvents"]}


def httm_hash(run_dir):
    pts = load(run_dir).points
    return pts.loc[pts[C.METHOD] == "httm", C.HASH].iloc[0]


def test_every_point_gets_a_gzipped_chrome_trace_with_the_method_phases(profiled):
    run = load(profiled / "profiled")
    assert run.suite["metrics"]["profile"] is True  # --profile is metrics.profile=true
    for h in run.points[C.HASH]:
        assert any(str(n).startswith("aten::") for n in trace_names(profiled / "profiled", h))
    names = trace_names(profiled / "profiled", httm_hash(profiled / "profiled"))
    assert {"phase:match", "phase:aggregate", "phase:attention"} <= names


def test_model_parts_are_named_in_a_whole_model_profile(tmp_path):
    import torch

    from harness.measure.profiling import profile_callable
    from harness.models.vggt import build_vggt
    from harness.models.vggt.presets import VGGT_TINY

    torch.manual_seed(0)
    model = build_vggt(VGGT_TINY, heads=("camera", "depth")).eval()
    images = torch.rand(1, 2, 3, 56, 56)

    def fn():
        with torch.no_grad():
            return model(images, heads=("camera", "depth"))

    rows = profile_callable(fn, "cpu", tmp_path / "profiles" / "h.trace.json.gz", "h")
    blocks = {f"{kind}_block.{i}" for kind in ("frame", "global") for i in range(VGGT_TINY.depth)}
    assert {"patch_embed", "camera_head", "depth_head"} | blocks <= trace_names(tmp_path, "h")
    assert rows and sum(r["self_cpu_us"] for r in rows) > 0


def test_the_op_table_has_one_row_per_phase_and_operator_with_times(profiled):
    ops = pd.read_parquet(profiled / "profiled" / OPS_FILE)
    assert tuple(ops.columns) == OP_COLUMNS
    assert set(ops[C.HASH]) == set(load(profiled / "profiled").points[C.HASH])
    assert (ops["calls"] > 0).all() and ops["self_cpu_us"].sum() > 0
    assert not ops.duplicated([C.HASH, "phase", "name"]).any()
    httm = ops[ops[C.HASH] == httm_hash(profiled / "profiled")]
    assert {"match", "aggregate", "attention"} <= set(httm["phase"])
    attention = httm[httm["phase"] == "attention"]["name"]
    assert attention.str.contains("scaled_dot_product").any()  # SDPA runs inside the attention phase
    reference = ops[ops[C.HASH] != httm_hash(profiled / "profiled")]
    assert set(reference["phase"]) <= {"", "attention"}  # plain attention has no merge phases
    sdpa = reference[reference["name"].str.contains("scaled_dot_product")]
    assert set(sdpa["phase"]) == {"attention"}  # ... and its attention is named like the methods'


def test_the_profiled_pass_leaves_the_timed_samples_unchanged(profiled):
    for name in ("plain", "profiled"):
        run = load(profiled / name)
        assert (run.points[C.N_SAMPLES] == 3).all()
        assert run.samples.groupby(C.HASH).size().eq(3).all()
    assert not (profiled / "plain" / OPS_FILE).exists() and not (profiled / "plain" / "profiles").exists()


def test_the_profile_runs_after_the_last_timed_sample(tmp_path, fake_workload, monkeypatch):
    order = []
    real_measure = point_loop.Timer.measure

    def timed(self, fn, device="cpu"):
        m = real_measure(self, fn, device=device)
        order.append(("timed", len(m.device_ms)))
        return m

    def profiled_pass(fn, device, trace_path, point_hash, schedule=None):
        order.append(("profile", point_hash))
        return []

    monkeypatch.setattr(point_loop.Timer, "measure", timed)
    monkeypatch.setattr(point_loop, "profile_callable", profiled_pass)
    suite = tmp_path / "f.yaml"
    suite.write_text("name: f\nworkload: fake\nmethods: {plain: {}}\nmetrics: {profile: true}\n"
                     "timing: {warmup_n: 0, min_samples: 2, max_samples: 2, budget_s: 0.01}\n")
    assert main(["run", str(suite), "--out", str(tmp_path / "run"), "--no-report", "-q"]) == 0
    assert [k for k, _ in order] == ["timed", "profile"]


def test_report_ops_splits_each_variant_by_phase_and_lists_its_top_operators(profiled, capsys):
    assert main(["report", str(profiled / "profiled"), "--ops"]) == 0
    text = capsys.readouterr().out
    assert "| variant" in text and "match" in text and "aggregate" in text and "attention" in text
    assert "top operators of httm:" in text and "top operators of vggt:" in text
    assert "scaled_dot_product" in text
    assert max(len(line) for line in text.splitlines() if line.startswith("|")) <= 100
    from reports.ops import ops_tables

    (_, phases, tops), = ops_tables(load(profiled / "profiled"))
    httm = phases.set_index("variant").loc["httm"]
    assert httm["match"] > 0 and httm["aggregate"] > 0 and httm["attention"] > 0
    assert abs(httm["total"] - (httm["match"] + httm["aggregate"] + httm["attention"]
                                + httm.get("(outside)", 0.0))) < 1e-9
    assert main(["report", str(profiled / "plain"), "--ops"]) == 0
    assert "has no operator table: profile it with" in capsys.readouterr().out


# ---------------------------------------------------------------- harness profile RUN


def _copy_run(profiled, tmp_path, name="plain"):
    import shutil

    return Path(shutil.copytree(profiled / name, tmp_path / name))


def test_harness_profile_profiles_only_the_chosen_points_and_never_touches_their_timings(profiled, tmp_path):
    run_dir = _copy_run(profiled, tmp_path)
    before = load(run_dir)
    assert main(["profile", str(run_dir), "--method", "httm", "-q"]) == 0
    after = load(run_dir)
    h = httm_hash(run_dir)
    assert {p.name for p in (run_dir / "profiles").iterdir()} == {f"{h}.trace.json.gz"}
    assert {"phase:match", "phase:aggregate", "phase:attention"} <= trace_names(run_dir, h)
    ops = pd.read_parquet(run_dir / OPS_FILE)
    assert set(ops[C.HASH]) == {h} and tuple(ops.columns) == OP_COLUMNS
    pd.testing.assert_frame_equal(before.points, after.points)
    pd.testing.assert_frame_equal(before.samples, after.samples)


def test_harness_profile_by_hash_prefix_and_a_newer_profile_supersedes_the_older(profiled, tmp_path):
    run_dir = _copy_run(profiled, tmp_path, "profiled")
    h = httm_hash(run_dir)
    first = pd.read_parquet(run_dir / OPS_FILE)
    assert main(["profile", str(run_dir), "--point", h[:6], "-q"]) == 0
    ops = read_ops(run_dir)
    mine = ops[ops[C.HASH] == h]
    assert mine["profiled_at"].nunique() == 1  # only the latest profile of the point
    assert mine["profiled_at"].iloc[0] > first.loc[first[C.HASH] == h, "profiled_at"].iloc[0]
    assert not mine.duplicated(["phase", "name"]).any()
    others = ops[ops[C.HASH] != h]  # the other point keeps its profile from the run
    pd.testing.assert_frame_equal(others.reset_index(drop=True),
                                  first[first[C.HASH] != h].reset_index(drop=True), check_dtype=False)
    assert (run_dir / "ops.jsonl").read_text().count(h) > len(mine)  # the older rows stay in the log


@pytest.mark.parametrize("args, expected", [
    (["--point", "ffffffffff"], "--point 'ffffffffff' matches no recorded point of this run; points: "),
    (["--point", ""], "matches 2 recorded points"),
    (["--method", "tome"], "--method 'tome' has no recorded point in this run; methods: vggt, httm"),
])
def test_harness_profile_names_an_unknown_choice_and_what_exists(profiled, tmp_path, capsys, args, expected):
    run_dir = _copy_run(profiled, tmp_path)
    assert main(["profile", str(run_dir), *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("harness profile: error: ") and expected in err and "Traceback" not in err
    assert not (run_dir / "profiles").exists()


def test_harness_profile_refuses_a_run_whose_suite_expands_to_other_points(profiled, tmp_path, capsys):
    run_dir = _copy_run(profiled, tmp_path)
    suite = run_dir / "suite.resolved.yaml"
    suite.write_text(suite.read_text().replace("frames: 4", "frames: 5"))
    assert main(["profile", str(run_dir)]) == 2
    assert "now expands to other points than the run's" in capsys.readouterr().err


def test_harness_profile_refuses_a_run_in_use(profiled, tmp_path, capsys):
    from harness.store import RunLock

    run_dir = _copy_run(profiled, tmp_path)
    with RunLock(run_dir):
        assert main(["profile", str(run_dir)]) == 2
    assert "in use" in capsys.readouterr().err


def test_swin_profiles_name_stages_the_importance_pass_and_both_branches(tmp_path):
    suite = tmp_path / "swin.yaml"
    suite.write_text(textwrap.dedent("""\
        name: swin-prof
        workload: swin
        fixed: {model: swin_micro, img_size: 64, batch: 2, calib_images: 2, w_bits: 4, embed_bits: 8}
        methods:
          mixaq: {a_bits_high: 8, a_bits_low: 4, ratio: 0.5}
          fp32: {}
        timing: {warmup_n: 0, min_samples: 1, max_samples: 1, budget_s: 0.0}
        metrics: {evaluate: false, profile: true}
        """))
    assert main(["run", str(suite), "--out", str(tmp_path / "run"), "--no-report", "-q"]) == 0
    pts = load(tmp_path / "run").points.set_index(C.METHOD)[C.HASH]
    names = trace_names(tmp_path / "run", pts["mixaq"])
    assert {"stage.0", "stage.1", "importance", "branch:high", "branch:low"} <= names
    float_names = trace_names(tmp_path / "run", pts["fp32"])  # timm's own stages, named through hooks
    assert {"stage.0", "stage.1"} <= float_names and "branch:high" not in float_names
