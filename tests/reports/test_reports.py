"""Reports: swept axes, speedup vs the reference, tables, Markdown/CSV report, plots, Pareto front."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from toy_runs import METRICS, SUITE, make_run

from harness.store import METRICS_FILE, load
from harness.store import columns as C
from reports import tables as T
from reports.parts import env_summary
from reports.plots import pareto_front, plot_run
from reports.summary import report


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    return make_run(tmp_path / "run")


# ---------------------------------------------------------------------------- axes and speedup


def test_swept_axes_are_config_columns_that_vary_among_ok_points_method_first(run_dir: Path) -> None:
    assert T.swept_axes(load(run_dir)) == [C.METHOD, "seq_len", "r"]


def test_swept_axes_ignore_a_value_only_failed_points_have(run_dir: Path) -> None:
    run = load(run_dir)
    assert 0.75 not in set(T.summary_table(run)["r"])
    assert "r" in T.swept_axes(run)  # still swept: 0.25 and 0.5 among ok points


def _hand_points() -> pd.DataFrame:
    rows = [
        # method, seq_len, device, r, latency
        ("sdpa", 128, "cpu", None, 10.0),
        ("sdpa", 256, "cpu", None, 40.0),
        ("httm", 128, "cpu", 0.5, 5.0),
        ("httm", 256, "cpu", 0.5, 16.0),
        ("httm", 256, "cpu", 0.25, 32.0),
        ("httm", 512, "cpu", 0.5, 50.0),  # no reference at seq_len 512
        ("httm", 128, "cuda", 0.5, 1.0),  # no reference on cuda
    ]
    return pd.DataFrame([
        {C.HASH: f"h{i}", C.METHOD: m, "seq_len": s, "device": d, "r": r, C.STATUS: C.OK, C.LAT_MEDIAN: lat}
        for i, (m, s, d, r, lat) in enumerate(rows)
    ])


def test_add_speedup_divides_the_matching_reference_latency_by_the_points_latency() -> None:
    out = T.add_speedup(_hand_points(), SUITE)
    expected = [1.0, 1.0, 2.0, 2.5, 1.25, math.nan, math.nan]
    np.testing.assert_allclose(out[C.SPEEDUP].to_numpy(float), expected, equal_nan=True)


def test_add_speedup_excludes_method_specific_params_from_the_match_key() -> None:
    pts = _hand_points()
    assert T.match_key_columns(pts, SUITE) == ["seq_len", "device"]
    assert "r" in T.method_specific_params(pts, SUITE)


def test_add_speedup_is_nan_for_points_that_are_not_ok() -> None:
    pts = _hand_points()
    pts.loc[0, C.STATUS] = C.FAILED  # the seq_len 128 reference failed
    out = T.add_speedup(pts, SUITE)
    assert math.isnan(out.loc[0, C.SPEEDUP]) and math.isnan(out.loc[2, C.SPEEDUP])
    assert out.loc[3, C.SPEEDUP] == pytest.approx(2.5)


def test_add_speedup_without_a_reference_method_is_all_nan() -> None:
    out = T.add_speedup(_hand_points(), {**SUITE, "reference": None})
    assert out[C.SPEEDUP].isna().all()


# ---------------------------------------------------------------------------- tables


def test_summary_table_has_one_row_per_ok_point_reference_first(run_dir: Path) -> None:
    table = T.summary_table(load(run_dir))
    assert len(table) == 6
    assert list(table.columns[:3]) == [C.METHOD, "seq_len", "r"]
    for col in (C.LAT_MEDIAN, C.LAT_IQR, C.SPEEDUP, C.RSS_PEAK_MB, "work_flops", "q_err", "fid_cos"):
        assert col in table.columns
    assert table.loc[0, C.METHOD] == "sdpa"
    ref = table[table[C.METHOD] == "sdpa"]
    assert (ref[C.SPEEDUP] == 1.0).all()
    fast = table[(table[C.METHOD] == "httm") & (table["r"] == 0.5)]
    assert fast[C.SPEEDUP].between(1.6, 2.4).all()  # half the latency, up to sampling noise


def test_summary_table_leaves_out_telemetry_columns_nobody_recorded(run_dir: Path) -> None:
    assert C.ENERGY_J not in T.summary_table(load(run_dir)).columns


def test_failed_table_lists_non_ok_points_with_their_error(run_dir: Path) -> None:
    failed = T.failed_table(load(run_dir))
    assert len(failed) == 1
    assert failed.loc[0, C.STATUS] == C.OOM
    assert "out of memory" in failed.loc[0, C.ERROR]
    assert T.format_table(failed).loc[0, C.ERROR] == "torch.OutOfMemoryError: CUDA out of memory"


def test_pivot_table_puts_method_labels_in_columns_and_the_workload_axis_in_rows(run_dir: Path) -> None:
    piv = T.pivot_table(load(run_dir))
    assert piv is not None
    assert list(piv.columns) == ["sdpa", "httm r=0.25", "httm r=0.5"]
    assert list(piv.index) == [128, 256]
    assert (piv["sdpa"] == 1.0).all()


def test_pivot_table_returns_none_when_there_is_no_workload_axis(tmp_path: Path) -> None:
    assert T.pivot_table(load(make_run(tmp_path / "one", single=True))) is None


@pytest.mark.parametrize(("value", "text"), [
    (12.345, "12.3"), (0.012345, "0.0123"), (1.0, "1"), (1234.7, "1235"), (2.5e9, "2.5G"),
    (3.21e12, "3.21T"), (math.nan, ""), (None, ""), (7, "7"),
])
def test_fmt_num_gives_three_significant_figures(value: Any, text: str) -> None:
    assert T.fmt_num(value) == text


def test_format_table_merges_latency_and_iqr() -> None:
    df = pd.DataFrame({C.METHOD: ["a"], C.LAT_MEDIAN: [12.345], C.LAT_IQR: [0.4567]})
    out = T.format_table(df)
    assert list(out.columns) == [C.METHOD, "latency ms (± IQR)"]
    assert out.iloc[0, 1] == "12.3 ± 0.457"


# ---------------------------------------------------------------------------- report


def test_report_writes_markdown_and_csv_with_the_speedup_column(run_dir: Path, capsys) -> None:
    text = report(run_dir)
    md = (run_dir / "report" / "report.md").read_text()
    assert md == text
    assert "# Benchmark report: toy" in md
    assert "speedup" in md and "latency ms (± IQR)" in md
    assert "CUDA out of memory" in md  # failed point listed with its error
    assert "time.perf_counter" in md  # how latency was measured, from the timer column
    assert "Toy CPU" in md
    csv = pd.read_csv(run_dir / "report" / "points.csv")
    assert C.SPEEDUP in csv.columns and len(csv) == 6
    assert "| method" in capsys.readouterr().out


def test_report_honours_out_dir(run_dir: Path, tmp_path: Path) -> None:
    report(run_dir, out_dir=tmp_path / "elsewhere")
    assert (tmp_path / "elsewhere" / "report.md").exists()
    assert (tmp_path / "elsewhere" / "points.csv").exists()


def test_env_summary_names_device_gpu_torch_and_threads() -> None:
    env = {"device_kind": "cuda", "gpu_name": "NVIDIA H100", "torch": "2.14.1", "cuda": "13.0",
           "torch_threads": 8, "cpu_model": "Xeon"}
    line = env_summary(env, pd.DataFrame({"device": ["cuda"]}))
    for part in ("device cuda", "GPU NVIDIA H100", "torch 2.14.1", "CUDA 13.0", "CPU Xeon, 8 threads"):
        assert part in line


# ---------------------------------------------------------------------------- plots


def test_pareto_front_keeps_non_dominated_points_sorted_by_x() -> None:
    df = pd.DataFrame({
        "name": ["A", "B", "C", "D", "E", "F"],
        "speedup": [1.0, 2.0, 1.5, 3.0, 2.0, math.nan],
        "err": [0.0, 0.1, 0.2, 0.5, 0.1, 0.0],
    })
    front = pareto_front(df, "speedup", "err", y_higher_is_better=False)
    assert list(front["name"]) == ["A", "B", "E", "D"]  # C is dominated by B; equal B/E both stay


def test_pareto_front_respects_higher_is_better() -> None:
    df = pd.DataFrame({"speedup": [1.0, 2.0, 3.0], "acc": [0.9, 0.8, 0.85]})
    front = pareto_front(df, "speedup", "acc", y_higher_is_better=True)
    assert list(front["speedup"]) == [1.0, 3.0]


def test_plot_run_writes_png_and_svg_for_every_figure(run_dir: Path) -> None:
    paths = plot_run(run_dir)
    names = {p.name for p in paths}
    for stem in ("latency_vs_seq_len", "speedup_vs_seq_len", "latency_vs_r", "q_err_vs_speedup",
                 "fid_cos_vs_speedup"):
        assert {f"{stem}.png", f"{stem}.svg"} <= names
    assert all(p.parent == run_dir / "plots" and p.stat().st_size > 0 for p in paths)


def test_plot_run_draws_quality_against_a_declared_cost_axis(tmp_path: Path) -> None:
    run_dir = make_run(tmp_path / "run")
    metrics = {**METRICS, "work_flops": {**METRICS["work_flops"], "cost_axis": True}}
    (run_dir / METRICS_FILE).write_text(json.dumps(metrics))
    names = {p.name for p in plot_run(run_dir)}
    assert {"fid_cos_vs_work_flops.png", "q_err_vs_work_flops.svg"} <= names


def test_plot_run_draws_no_cost_figures_without_a_cost_axis(run_dir: Path) -> None:
    assert not [p for p in plot_run(run_dir) if "_vs_work_" in p.name]


def test_plot_run_skips_figures_when_there_is_nothing_to_plot(tmp_path: Path) -> None:
    assert plot_run(make_run(tmp_path / "one", single=True)) == []


def test_parameter_ownership_comes_from_the_suite_record_not_from_missing_values() -> None:
    # every row has a value for the method knob start_layer (both methods have it, neither sets it),
    # so no pattern of missing values could tell it from a workload parameter
    pts = pd.DataFrame([
        {C.HASH: f"h{i}", C.METHOD: m, "seq_len": 128, "start_layer": layer, C.STATUS: C.OK,
         C.LAT_MEDIAN: lat}
        for i, (m, layer, lat) in enumerate([("tome", 0, 10.0), ("httm", 2, 5.0)])
    ])
    suite = {"reference": "tome", "parameters": {
        "workload": ["seq_len"], "common": [], "methods": {"tome": ["start_layer"], "httm": ["start_layer"]}}}
    assert T.match_key_columns(pts, suite) == ["seq_len"]
    assert list(T.add_speedup(pts, suite)[C.SPEEDUP]) == [1.0, 2.0]  # paired across start_layer
    with pytest.raises(ValueError, match="no 'parameters' section .* re-run its suite"):
        T.match_key_columns(pts, {"reference": "tome"})


def test_a_loaded_suite_records_who_owns_each_parameter() -> None:
    from harness import registry
    from harness.suite import parse_suite

    registry.load_builtins()
    suite = parse_suite("name: s\nworkload: attention\nreference: sdpa\nmethods: {sdpa: {}, math: {}}\n")
    owners = suite.resolved["parameters"]
    assert {"seq_len", "heads", "head_dim", "batch"} <= set(owners["workload"])
    assert set(owners["common"]) == {"device", "dtype", "seed", "threads"}
    assert owners["methods"] == {"sdpa": [], "math": []}
