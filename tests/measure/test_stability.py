"""The stability verdict of a point's samples: spread, outliers and a trend each make it unstable,
with the figure in the reason; clean samples (even noisy in the usual way) do not cry wolf."""

from __future__ import annotations

import numpy as np
import pytest

from harness.measure.stability import StabilityRules, judge
from harness.measure.timing import Measurement, summarize
from harness.store import columns as C


def quiet(n: int = 30, seed: int = 0, rel_sd: float = 0.01) -> list[float]:
    """Samples of a quiet machine: 10 ms, lognormal jitter of ``rel_sd``, in random order."""
    return list(10.0 * np.random.default_rng(seed).lognormal(0.0, rel_sd, n))


def test_quiet_samples_are_stable_over_many_seeds():
    verdicts = [judge(quiet(seed=s)) for s in range(200)]
    assert sum(v.stable is False for v in verdicts) <= 2  # a false alarm rate of at most 1 %
    assert all(v.why == () for v in verdicts if v.stable)


def test_a_wide_spread_is_unstable_with_its_figure():
    x = list(np.linspace(5.0, 15.0, 21))  # IQR = 5 of median 10
    v = judge(np.random.default_rng(1).permutation(x).tolist())
    assert v.stable is False and v.why[0] == "spread: IQR 50% of the median"


def test_a_spread_just_under_the_limit_is_stable_and_just_over_is_not():
    base = [9.25, 9.5, 10.0, 10.5, 10.75]  # IQR 1.0 of median 10: 10 %
    assert judge(base).stable is True
    assert judge(base, rules=StabilityRules(max_rel_iqr=0.099)).stable is False
    wide = [9.0, 9.2, 10.0, 10.8, 11.0]  # IQR 1.6 of median 10: 16 %, over the default 15 %
    assert judge(wide).stable is False


def test_outliers_beyond_three_iqrs_make_a_point_unstable_even_when_the_median_is_tight():
    x = quiet(30, seed=3)
    x[4], x[9], x[17], x[25] = 40.0, 35.0, 38.0, 3.0  # another job ran now and then (and a fast one)
    v = judge(x)
    assert v.stable is False and v.why == ("outliers: 4 of 30 samples beyond 3 IQR",)
    x[25] = x[24]
    assert judge(x).stable is True  # 3 of 30 is 10 %: at the limit, not over it


def test_a_single_outlier_is_not_enough():
    x = quiet(30, seed=3)
    x[10] = 40.0
    assert judge(x).stable is True


@pytest.mark.parametrize("direction", [1, -1])
def test_samples_that_drift_across_the_window_are_unstable_and_say_which_way(direction):
    n = 30
    ramp = 10.0 * (1 + direction * 0.2 * np.arange(n) / (n - 1))  # 20 % over the window
    x = ramp * np.random.default_rng(5).lognormal(0.0, 0.01, n)
    v = judge(list(x))
    assert v.stable is False
    [trend] = [w for w in v.why if w.startswith("trend")]
    assert trend.startswith("trend: samples drifted " + ("+" if direction > 0 else "-"))


def test_the_same_samples_shuffled_have_no_trend():
    n = 30
    x = 10.0 * (1 + 0.2 * np.arange(n) / (n - 1))
    shuffled = np.random.default_rng(6).permutation(x)
    assert not any(w.startswith("trend") for w in judge(list(shuffled)).why)


def test_too_few_samples_cannot_be_judged():
    v = judge([1.0, 50.0])
    assert v.stable is None and v.why == ("2 sample(s): too few to judge",)


def test_an_unstable_point_stopped_by_its_budget_says_it_wanted_more_samples():
    x = list(np.linspace(5.0, 15.0, 9))
    v = judge(x, stopped_on_budget=True, target_rel_iqr=0.05)
    assert v.stable is False
    assert v.why[-1] == "the budget ran out at 9 samples, before the spread fell under 5%"
    assert judge(quiet(9), stopped_on_budget=True, target_rel_iqr=0.001).why == ()  # stable: no note


def test_the_verdict_is_in_the_timing_columns():
    m = Measurement(device_ms=list(np.linspace(5.0, 15.0, 9)), host_ms=[], n_warmup=0, timer="perf_counter",
                    threads=1, stop_reason="budget", target_rel_iqr=0.05)
    row = summarize(m)
    assert (row[C.STABLE], row[C.STOP_REASON]) == (False, "budget")
    assert row[C.UNSTABLE_WHY].startswith("spread: IQR ")


def test_outliers_are_not_judged_from_fewer_than_ten_samples():
    few = [10.0, 10.1, 10.0, 30.0, 31.0]  # 2 of 5 far out, but the quartiles of 5 are too rough
    assert not any(w.startswith("outliers") for w in judge(few).why)
