"""The profiled pass: a trace per point with the method phases, an operator table, and timed
samples left untouched (the pass runs after them)."""

from __future__ import annotations

import gzip
import json
import textwrap

import pandas as pd
import pytest

from harness import columns as C
from harness import runner
from harness.cli import main
from harness.profiling import OP_COLUMNS
from harness.results import OPS_FILE, load

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

    from harness.models.vggt import build_vggt
    from harness.models.vggt.presets import VGGT_TINY
    from harness.profiling import profile_callable

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
    assert set(reference["phase"]) == {""}  # plain attention has no merge phases


def test_the_profiled_pass_leaves_the_timed_samples_unchanged(profiled):
    for name in ("plain", "profiled"):
        run = load(profiled / name)
        assert (run.points[C.N_SAMPLES] == 3).all()
        assert run.samples.groupby(C.HASH).size().eq(3).all()
    assert not (profiled / "plain" / OPS_FILE).exists() and not (profiled / "plain" / "profiles").exists()


def test_the_profile_runs_after_the_last_timed_sample(tmp_path, fake_workload, monkeypatch):
    order = []
    real_measure = runner.Timer.measure

    def timed(self, fn, device="cpu"):
        m = real_measure(self, fn, device=device)
        order.append(("timed", len(m.device_ms)))
        return m

    def profiled_pass(fn, device, trace_path, point_hash, schedule=None):
        order.append(("profile", point_hash))
        return []

    monkeypatch.setattr(runner.Timer, "measure", timed)
    monkeypatch.setattr(runner, "profile_callable", profiled_pass)
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
