"""Regression gate: significance AND effect size, thresholds, quality tolerances, refusals."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from harness.store import RunWriter
from harness.store import columns as C
from reports import stats as S
from reports.compare import CompareError, compare_runs

N_BOOT = 200  # small: keeps the tests fast; the CI is still well defined
BASE_MS = 10.0
ENV = {"device_kind": "cuda", "gpu_name": "NVIDIA H100 80GB HBM3", "torch": "2.14.1", "cpu_model": "Xeon"}
METRICS = {
    "q_err": {"kind": "quality", "help": "depth error", "higher_is_better": False, "unit": "m",
              "tolerance": 0.01},
    "fid_cos": {"kind": "fidelity", "help": "cosine vs reference", "higher_is_better": True, "unit": "",
                "tolerance": 0.01},
    "q_loose": {"kind": "quality", "help": "no tolerance in metrics.json", "higher_is_better": True,
                "unit": "", "tolerance": None},
}


def suite(**regression: Any) -> dict[str, Any]:
    return {"name": "toy", "workload": "attention", "reference": "sdpa", "fixed": {},
            "sweep": {"seq_len": [128]}, "methods": {"sdpa": {}}, "regression": regression}


def make_run(
    run_dir: Path,
    samples: dict[str, np.ndarray],
    *,
    env: dict[str, Any] = ENV,
    suite_doc: dict[str, Any] | None = None,
    quality: dict[str, dict[str, float]] | None = None,
    status: dict[str, str] | None = None,
) -> Path:
    """One run directory; ``samples`` maps point hash -> raw device_ms samples."""
    w = RunWriter.create(run_dir, {"run_id": run_dir.name, "suite": "toy"}, suite_doc or suite(), env,
                         METRICS)
    for i, (h, s) in enumerate(samples.items()):
        st = (status or {}).get(h, C.OK)
        row: dict[str, Any] = {
            C.RUN_ID: run_dir.name, C.SUITE: "toy", C.HASH: h, C.WORKLOAD: "attention",
            C.METHOD: "sdpa", C.STATUS: st, C.ERROR: None if st == C.OK else "RuntimeError: boom",
            "seq_len": 128 * (i + 1), "device": "cuda", "dtype": "bfloat16", "seed": 0,
        }
        if st == C.OK:
            row.update({C.LAT_MEDIAN: float(np.median(s)), C.N_SAMPLES: len(s), C.TIMER: "cuda_event"})
            row.update((quality or {}).get(h, {}))
        rows = [{C.RUN_ID: run_dir.name, C.HASH: h, C.SAMPLE: j, C.DEVICE_MS: float(x), C.HOST_MS: float(x)}
                for j, x in enumerate(s)] if st == C.OK else []
        w.append(row, rows)
    return run_dir


def draw(rng: np.random.Generator, n: int, scale: float = 1.0, sigma: float = 0.03) -> np.ndarray:
    return BASE_MS * scale * rng.lognormal(0.0, sigma, size=n)


def latency_row(result, h: str = "p0") -> dict[str, Any]:
    rows = result.rows
    return rows[(rows[C.HASH] == h) & (rows["kind"] == "latency")].iloc[0].to_dict()


# ---------------------------------------------------------------------------- latency verdicts


def test_two_runs_from_the_same_distribution_do_not_regress(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    base = make_run(tmp_path / "base", {f"p{i}": draw(rng, 30) for i in range(4)})
    new = make_run(tmp_path / "new", {f"p{i}": draw(rng, 30) for i in range(4)})
    res = compare_runs(base, new, n_boot=N_BOOT)
    assert not res.regressed and res.exit_code == 0
    assert res.n_common == 4
    assert set(res.rows["verdict"]) <= {S.NO_CHANGE, S.NOISE}
    assert "no regression" in res.markdown


def test_a_20_percent_slowdown_with_30_samples_is_a_regression(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    base = make_run(tmp_path / "base", {"p0": draw(rng, 30)})
    new = make_run(tmp_path / "new", {"p0": draw(rng, 30, scale=1.2)})
    res = compare_runs(base, new, n_boot=N_BOOT)
    row = latency_row(res)
    assert res.regressed and res.exit_code == 1
    assert row["verdict"] == S.REGRESSION
    assert row["p_value"] < 0.01
    assert row["ci_low"] > 1.0  # the 95% CI excludes 1
    assert row["ratio"] == pytest.approx(1.2, abs=0.05)
    assert "REGRESSED" in res.markdown and "**REGRESSION**" in res.markdown


def test_a_significant_2_percent_slowdown_is_not_flagged_at_the_5_percent_threshold(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    base = make_run(tmp_path / "base", {"p0": draw(rng, 40, sigma=0.003)})
    new = make_run(tmp_path / "new", {"p0": draw(rng, 40, scale=1.02, sigma=0.003)})
    row = latency_row(compare_runs(base, new, n_boot=N_BOOT))
    assert row["p_value"] < 0.01  # significant ...
    assert row["verdict"] == S.NO_CHANGE  # ... but smaller than the threshold


def test_the_ratio_and_its_interval_are_of_medians_so_an_outlier_does_not_move_them():
    base, new = [1.0] * 9 + [100.0], [2.0] * 10  # one slow call in base: a mean ratio would be 0.17
    assert S.median_ratio(base, new) == 2.0
    lo, hi = S.bootstrap_ratio_ci(base, new, n_boot=500, rng=0)
    assert lo <= 2.0 <= hi and hi <= 2.0 + 1e-12  # resamples that catch the outlier cannot lower the median


def test_a_2x_slowdown_with_3_samples_a_side_cannot_be_judged_not_passed(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    base = make_run(tmp_path / "base", {"p0": draw(rng, 3, sigma=0.3)})
    new = make_run(tmp_path / "new", {"p0": draw(rng, 3, scale=2.0, sigma=0.3)})
    res = compare_runs(base, new, n_boot=N_BOOT)
    row = latency_row(res)
    assert row["p_value"] >= 0.01 and S.smallest_p(3, 3) == pytest.approx(0.1)
    assert row["verdict"] == S.CANNOT_JUDGE and "3 vs 3 samples cannot reach p < 0.01" in row["note"]
    assert not res.regressed and res.exit_code == 2
    allowed = compare_runs(base, new, n_boot=N_BOOT, allow_missing=True)
    assert latency_row(allowed)["verdict"] == S.NOT_GATED and allowed.exit_code == 0


def test_a_large_noisy_difference_that_enough_samples_could_show_is_noise(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    base = make_run(tmp_path / "base", {"p0": draw(rng, 8, sigma=0.6)})
    new = make_run(tmp_path / "new", {"p0": draw(rng, 8, scale=1.3, sigma=0.6)})
    row = latency_row(compare_runs(base, new, n_boot=N_BOOT))
    assert row["p_value"] >= 0.01 and row["ratio"] > 1.05  # this seed's draw: a change, not significant
    assert S.smallest_p(8, 8) < 0.01 and row["verdict"] == S.NOISE


def test_a_20_percent_speedup_is_an_improvement_not_a_regression(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    base = make_run(tmp_path / "base", {"p0": draw(rng, 30)})
    new = make_run(tmp_path / "new", {"p0": draw(rng, 30, scale=0.8)})
    res = compare_runs(base, new, n_boot=N_BOOT)
    assert latency_row(res)["verdict"] == S.IMPROVEMENT and not res.regressed


def test_bootstrap_is_seeded(tmp_path: Path) -> None:
    rng = np.random.default_rng(6)
    base = make_run(tmp_path / "base", {"p0": draw(rng, 20)})
    new = make_run(tmp_path / "new", {"p0": draw(rng, 20, scale=1.1)})
    a = latency_row(compare_runs(base, new, n_boot=N_BOOT, seed=7))
    b = latency_row(compare_runs(base, new, n_boot=N_BOOT, seed=7))
    assert (a["ci_low"], a["ci_high"]) == (b["ci_low"], b["ci_high"])


# ---------------------------------------------------------------------------- thresholds


@pytest.fixture
def slowdown_20(tmp_path: Path) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(8)
    return draw(rng, 30), draw(rng, 30, scale=1.2)


def test_suite_per_metric_threshold_overrides_the_default(tmp_path: Path, slowdown_20) -> None:
    b, n = slowdown_20
    base = make_run(tmp_path / "base", {"p0": b})
    new = make_run(tmp_path / "new", {"p0": n},
                   suite_doc=suite(threshold=0.05, per_metric={C.LAT_MEDIAN: 0.3}))
    res = compare_runs(base, new, n_boot=N_BOOT)
    assert latency_row(res)["threshold"] == 0.3
    assert latency_row(res)["verdict"] == S.NO_CHANGE and not res.regressed


def test_suite_threshold_applies_without_a_per_metric_entry(tmp_path: Path, slowdown_20) -> None:
    b, n = slowdown_20
    base = make_run(tmp_path / "base", {"p0": b})
    new = make_run(tmp_path / "new", {"p0": n}, suite_doc=suite(threshold=0.25))
    assert not compare_runs(base, new, n_boot=N_BOOT).regressed


def test_the_threshold_argument_wins_over_the_suite(tmp_path: Path, slowdown_20) -> None:
    b, n = slowdown_20
    base = make_run(tmp_path / "base", {"p0": b})
    new = make_run(tmp_path / "new", {"p0": n}, suite_doc=suite(per_metric={C.LAT_MEDIAN: 0.3}))
    res = compare_runs(base, new, threshold=0.1, n_boot=N_BOOT)
    assert latency_row(res)["threshold"] == 0.1 and res.regressed


# ---------------------------------------------------------------------------- quality and status


def _quality_result(tmp_path: Path, base_q: dict[str, float], new_q: dict[str, float], **suite_reg: Any):
    rng = np.random.default_rng(9)
    s = draw(rng, 20)
    base = make_run(tmp_path / "base", {"p0": s}, quality={"p0": base_q})
    new = make_run(tmp_path / "new", {"p0": s.copy()}, quality={"p0": new_q}, suite_doc=suite(**suite_reg))
    res = compare_runs(base, new, n_boot=N_BOOT)
    verdicts = {r["metric"]: r["verdict"] for _, r in res.rows.iterrows() if r["kind"] != "latency"}
    return res, verdicts


def test_quality_lower_is_better_flags_an_increase_beyond_tolerance(tmp_path: Path) -> None:
    res, v = _quality_result(tmp_path, {"q_err": 0.10}, {"q_err": 0.15})
    assert v["q_err"] == S.REGRESSION and res.regressed
    assert "### Quality and fidelity" in res.markdown


def test_quality_lower_is_better_accepts_a_decrease(tmp_path: Path) -> None:
    res, v = _quality_result(tmp_path, {"q_err": 0.10}, {"q_err": 0.05})
    assert v["q_err"] == S.IMPROVEMENT and not res.regressed


def test_fidelity_higher_is_better_flags_a_drop_beyond_tolerance(tmp_path: Path) -> None:
    res, v = _quality_result(tmp_path, {"fid_cos": 0.99}, {"fid_cos": 0.95})
    assert v["fid_cos"] == S.REGRESSION and res.regressed


def test_changes_within_tolerance_are_no_change(tmp_path: Path) -> None:
    res, v = _quality_result(tmp_path, {"q_err": 0.10, "fid_cos": 0.99}, {"q_err": 0.105, "fid_cos": 0.985})
    assert v == {"q_err": S.NO_CHANGE, "fid_cos": S.NO_CHANGE} and not res.regressed


def test_quality_without_tolerance_is_not_gated_unless_the_suite_gives_one(tmp_path: Path) -> None:
    res, v = _quality_result(tmp_path, {"q_loose": 0.9}, {"q_loose": 0.5})
    assert v["q_loose"] == S.NOT_GATED and not res.regressed
    res, v = _quality_result(tmp_path / "again", {"q_loose": 0.9}, {"q_loose": 0.5},
                             per_metric={"q_loose": 0.1})
    assert v["q_loose"] == S.REGRESSION and res.regressed


def test_a_point_that_fails_in_new_is_a_regression(tmp_path: Path) -> None:
    rng = np.random.default_rng(10)
    base = make_run(tmp_path / "base", {"p0": draw(rng, 10), "p1": draw(rng, 10)})
    new = make_run(tmp_path / "new", {"p0": draw(rng, 10), "p1": np.empty(0)}, status={"p1": C.OOM})
    res = compare_runs(base, new, n_boot=N_BOOT)
    status = res.rows[res.rows["kind"] == "status"].iloc[0]
    assert status[C.HASH] == "p1" and status["verdict"] == S.REGRESSION
    assert "ok -> oom" in status["note"] and res.regressed
    assert "### Status changes" in res.markdown


# ---------------------------------------------------------------------------- refusals


def test_differing_gpus_are_refused(tmp_path: Path) -> None:
    rng = np.random.default_rng(11)
    base = make_run(tmp_path / "base", {"p0": draw(rng, 10)})
    new = make_run(tmp_path / "new", {"p0": draw(rng, 10)}, env={**ENV, "gpu_name": "NVIDIA A100-SXM4-80GB"})
    with pytest.raises(CompareError, match="GPU model differs.*allow_env_mismatch"):
        compare_runs(base, new, n_boot=N_BOOT)


def test_allow_env_mismatch_compares_and_notes_the_difference(tmp_path: Path) -> None:
    rng = np.random.default_rng(12)
    base = make_run(tmp_path / "base", {"p0": draw(rng, 10)})
    new = make_run(tmp_path / "new", {"p0": draw(rng, 10)}, env={**ENV, "torch": "3.0.0"})
    res = compare_runs(base, new, allow_env_mismatch=True, n_boot=N_BOOT)
    assert res.n_common == 1
    assert res.env_differences and "torch major version differs" in res.markdown


def test_runs_without_common_points_are_refused(tmp_path: Path) -> None:
    rng = np.random.default_rng(13)
    base = make_run(tmp_path / "base", {"a": draw(rng, 10)})
    new = make_run(tmp_path / "new", {"b": draw(rng, 10)})
    with pytest.raises(CompareError, match="no point in common"):
        compare_runs(base, new, n_boot=N_BOOT)


def test_compare_error_is_a_value_error() -> None:
    assert issubclass(CompareError, ValueError)


# ---------------------------------------------------------------------------- stats helpers


def test_bootstrap_ci_brackets_the_ratio_of_medians() -> None:
    rng = np.random.default_rng(14)
    b, n = draw(rng, 50), draw(rng, 50, scale=1.5)
    lo, hi = S.bootstrap_ratio_ci(b, n, n_boot=N_BOOT, rng=0)
    assert lo < S.median_ratio(b, n) < hi
    assert 1.3 < lo < hi < 1.7


def test_mann_whitney_of_identical_constant_samples_is_one() -> None:
    assert S.mann_whitney_p([1.0, 1.0, 1.0], [1.0, 1.0]) == 1.0
    assert math.isnan(S.mann_whitney_p([], [1.0]))
