"""Efficiency columns: achieved FLOP/s and bandwidth from the work counters, against recorded peaks;
the bytes model of attention and merging; peaks in env.json; the roofline and phase figures."""

from __future__ import annotations

import json
import math
import textwrap

import pytest
import torch
from tiny_suites import VGGT_LAYER_BREAKDOWN

from harness.cli import main
from harness.measure.efficiency import (
    PEAKS_KEY,
    Peak,
    calibrate,
    efficiency_columns,
    efficiency_metric_info,
    peak_for,
    peak_key,
)
from harness.models.seam import AttentionLayout, Recorder, attention_bytes, elem_bytes, sdpa_attention
from harness.store import columns as C
from harness.store import load

PEAK = Peak(flop_s=1e12, bytes_s=1e11, source="test")


def test_whole_call_columns_are_the_counters_over_the_median_latency():
    row = {"work_flops": 2e9, "work_bytes": 1e8, C.LAT_MEDIAN: 10.0, C.LAT_MEAN: 40.0}
    eff = efficiency_columns(row, PEAK)
    # 2e9 FLOP in 10 ms = 2e11 FLOP/s = 0.2 TFLOP/s = 0.2 of 1e12; 1e8 B in 10 ms = 10 GB/s = 0.1 of 1e11
    assert eff == pytest.approx({"eff_tflop_s": 0.2, "eff_flop_frac": 0.2, "eff_flop_per_byte": 20.0,
                                 "eff_gb_s": 10.0, "eff_bw_frac": 0.1})


def test_phase_columns_use_each_phase_time_and_its_own_counters():
    row = {C.LAT_MEDIAN: 10.0, "bd_attention_ms": 4.0, "bd_aggregate_ms": 2.0, "bd_match_ms": 1.0,
           "work_attn_flops": 1e9, "work_attn_bytes": 5e7, "work_agg_bytes": 1e7, "work_match_flops": 3e8}
    eff = efficiency_columns(row, PEAK)
    assert eff["eff_attention_tflop_s"] == pytest.approx(0.25)  # 1e9 / 4 ms
    assert eff["eff_attention_gb_s"] == pytest.approx(12.5)  # 5e7 / 4 ms
    assert eff["eff_attention_flop_per_byte"] == pytest.approx(20.0)
    assert eff["eff_aggregate_gb_s"] == pytest.approx(5.0)  # 1e7 / 2 ms
    assert eff["eff_aggregate_bw_frac"] == pytest.approx(0.05)
    assert eff["eff_match_tflop_s"] == pytest.approx(0.3)  # 3e8 / 1 ms
    assert "eff_aggregate_tflop_s" not in eff  # no FLOP model for gathers and scatters
    assert "eff_match_gb_s" not in eff  # no bytes counted
    assert "eff_tflop_s" not in eff  # the whole call's work is unknown here


def test_missing_peak_or_time_leaves_columns_out_instead_of_inventing_them():
    row = {"work_flops": 2e9, "work_bytes": 1e8, C.LAT_MEDIAN: 10.0}
    assert set(efficiency_columns(row, None)) == {"eff_tflop_s", "eff_flop_per_byte", "eff_gb_s"}
    no_flop_peak = Peak(None, 1e11, "x")
    assert set(efficiency_columns(row, no_flop_peak)) == {"eff_tflop_s", "eff_flop_per_byte", "eff_gb_s",
                                                          "eff_bw_frac"}
    for bad in (0.0, float("nan"), None, -1.0):
        assert efficiency_columns({**row, C.LAT_MEDIAN: bad}, PEAK) == {"eff_flop_per_byte": 20.0}


def test_every_column_has_a_metrics_entry_with_a_direction():
    row = {"work_flops": 2e9, "work_bytes": 1e8, C.LAT_MEDIAN: 10.0, "bd_attention_ms": 4.0,
           "work_attn_flops": 1e9, "work_attn_bytes": 5e7}
    for col in efficiency_columns(row, PEAK):
        info = efficiency_metric_info(col)
        assert info["kind"] == "efficiency" and info["tolerance"] is None, col
        assert info["higher_is_better"] is (None if col.endswith("flop_per_byte") else True), col
    assert "attention" in efficiency_metric_info("eff_attention_gb_s")["help"]
    assert efficiency_metric_info("fid_cos") is None


def test_attention_bytes_model_is_q_k_v_read_and_the_output_written_once():
    q = torch.zeros(2, 3, 10, 8)
    # per (batch, head): 10 queries + 6 keys + 6 values read, 10 outputs written, 8 floats each
    assert attention_bytes(q, 10, 6) == 2 * 3 * (10 + 6 + 6 + 10) * 8 * 4
    assert attention_bytes(q.half(), 10, 6) == 2 * 3 * 32 * 8 * 2
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert elem_bytes(q) == 2  # float32 tensors travel as bfloat16 under autocast
    assert elem_bytes(q) == 4
    assert elem_bytes(torch.zeros(3, dtype=torch.int64)) == 8


def _layout(n, rec):
    return AttentionLayout(frames=1, tokens_per_frame=n, patch_h=1, patch_w=n, patch_start=0, recorder=rec)


def test_merging_counts_fewer_attention_bytes_and_the_gathers_of_its_slots():
    from baselines.tome import ToMeParams, make_tome

    B, H, N, d = 1, 4, 64, 8
    q, k, v = (torch.randn(B, H, N, d, generator=torch.Generator().manual_seed(i)) for i in range(3))
    full, merged = Recorder(), Recorder()
    sdpa_attention(q, k, v, _layout(N, full))
    make_tome(ToMeParams(tome_ratio=0.5))(q, k, v, _layout(N, merged))
    assert full.counters["attn_bytes"] == B * H * 4 * N * d * 4
    assert "agg_bytes" not in full.counters
    # the number of slots M, from the FLOP counter: attn_flops = 4 B H M^2 d
    M = math.isqrt(int(merged.counters["attn_flops"] / (4 * B * H * d)))
    assert M < N
    assert merged.counters["attn_bytes"] == B * H * 4 * M * d * 4
    # q, k and v merged (N read, M written each) and the output unmerged (M read, N written)
    assert merged.counters["agg_bytes"] == B * H * 4 * (N + M) * d * 4
    assert merged.counters["match_bytes"] == B * N * d * 4  # the head-mean keys, read once


def test_peak_keys_separate_devices_dtypes_and_cpu_threads():
    assert peak_key("cpu", "float32", 2) == "cpu|float32|2t"
    assert peak_key("cuda:1", "bfloat16", 2) == peak_key("cuda", "bfloat16", 8) == "cuda|bfloat16"
    peaks = {"cpu|float32|2t": {"flop_s": 5.0, "bytes_s": 7.0, "source": "s"}}
    assert peak_for(peaks, "cpu", "float32", 2) == Peak(5.0, 7.0, "s")
    assert peak_for(peaks, "cpu", "float32", 1) is None
    assert peak_for(None, "cpu", "float32", 2) is None


def test_cpu_calibration_measures_a_finite_peak_once_per_setting():
    a = calibrate("cpu", "float32", 1)
    assert a.flop_s > 0 and math.isfinite(a.flop_s) and a.bytes_s > 0 and math.isfinite(a.bytes_s)
    assert "1024x1024 matmul" in a.source and "1 thread" in a.source
    assert calibrate("cpu", "float32", 1) is a  # cached in the process: a run pays it once


SUITE = VGGT_LAYER_BREAKDOWN


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("eff")
    (root / "s.yaml").write_text(textwrap.dedent(SUITE))
    assert main(["run", str(root / "s.yaml"), "--out", str(root / "run"), "--no-report", "-q"]) == 0
    return root / "run"


@pytest.mark.usefixtures("one_thread")
def test_a_run_records_its_peak_and_the_columns_derive_from_it(run_dir):
    run = load(run_dir)
    peak = run.env[PEAKS_KEY]["cpu|float32|1t"]
    assert peak["flop_s"] > 0 and peak["source"].startswith("calibrated")
    for _, r in run.points.iterrows():
        # scope=attention: the timed call is attention + matching (+ the merge's gathers)
        match = r["work_match_flops"] if r[C.METHOD] == "httm" else 0.0
        assert match >= 0 and r["work_flops"] == r["work_attn_flops"] + match
        assert r["eff_tflop_s"] == pytest.approx(r["work_flops"] / (r[C.LAT_MEDIAN] / 1e3) / 1e12)
        assert r["eff_flop_frac"] == pytest.approx(r["eff_tflop_s"] * 1e12 / peak["flop_s"])
        assert r["eff_attention_gb_s"] == pytest.approx(r["work_attn_bytes"] / r["bd_attention_ms"] / 1e6)
    httm = run.points[run.points[C.METHOD] == "httm"].iloc[0]
    assert httm["eff_match_tflop_s"] > 0 and httm["eff_aggregate_gb_s"] > 0
    assert run.metrics["eff_flop_frac"]["kind"] == "efficiency"
    assert run.metrics["eff_aggregate_gb_s"]["unit"] == "GB/s"


@pytest.mark.usefixtures("one_thread")
def test_a_resumed_run_keeps_the_peak_it_started_with(tmp_path):
    (tmp_path / "s.yaml").write_text(textwrap.dedent(SUITE))
    out = tmp_path / "run"
    args = ["run", str(tmp_path / "s.yaml"), "--no-report", "-q"]
    assert main([*args, "--out", str(out), "--max-points", "1"]) == 0
    env = json.loads((out / "env.json").read_text())
    env[PEAKS_KEY]["cpu|float32|1t"]["flop_s"] = 1e3  # a peak no CPU has: the resumed point must use it
    (out / "env.json").write_text(json.dumps(env))
    assert main([*args, "--resume", str(out)]) == 0
    pts = load(out).points
    last = pts.iloc[-1]
    assert last["eff_flop_frac"] == pytest.approx(last["eff_tflop_s"] * 1e12 / 1e3)
    assert pts.iloc[0]["eff_flop_frac"] < 1e3  # the first point used the calibrated peak


def test_roofline_and_phase_figures_are_drawn_from_the_run(run_dir, tmp_path):
    from reports.plots import PHASES, ROOFLINE, plot_data

    paths = plot_data(load(run_dir), tmp_path, formats=("svg",))
    stems = {p.stem for p in paths}
    assert {ROOFLINE, PHASES} <= stems
    svg = (tmp_path / f"{ROOFLINE}.svg").read_text()
    assert "roof: cpu float32 1t" in svg and "[attention]" in svg and "[match]" in svg
    svg = (tmp_path / f"{PHASES}.svg").read_text()
    assert "aggregate" in svg and "rest of the median latency" in svg


def test_no_roofline_without_a_bytes_model_and_no_phase_bars_without_a_breakdown(run_dir, tmp_path):
    from reports.plots import phase_bars, roofline
    from reports.tables import VARIANT, variants

    run = load(run_dir)
    pts = run.points.drop(columns=[c for c in run.points.columns if c.startswith(("eff_", "bd_"))])
    pts[VARIANT] = variants(pts, run.suite)[0]
    assert roofline(run, pts) is None
    assert phase_bars(run, pts) is None
