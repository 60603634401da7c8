"""reports.stats on its own: the edges of each statistic and the exact boundaries of each verdict
rule, as their docstrings state them (the gate's end-to-end behaviour is in test_compare.py).
Written against the mutants that survived test_compare.py (docs/guide/mutation.md)."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from reports import stats as S

# ---------------------------------------------------------------- median_ratio


def test_median_ratio_of_one_sample_a_side_is_their_ratio():
    assert S.median_ratio([2.0], [3.0]) == 1.5


def test_median_ratio_over_a_zero_base_median_is_infinite():
    assert S.median_ratio([0.0], [1.0]) == math.inf


def test_median_ratio_with_an_empty_side_is_nan_without_a_numpy_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert math.isnan(S.median_ratio([], [1.0]))
        assert math.isnan(S.median_ratio([1.0], []))


def test_missing_samples_are_dropped_like_non_finite_ones():
    # None is how a missing sample reads back from JSON; it must not turn the set into objects
    assert S.median_ratio([1.0, None, 3.0], [4.0, math.nan, 4.0]) == 2.0


# ---------------------------------------------------------------- bootstrap_ratio_ci


def _reference_ci(base, new, n_boot, seed, level):
    """The percentile bootstrap the docstring describes, written out: base resampled first, then
    new, each n_boot times with replacement from the whole sample, from one generator."""
    gen = np.random.default_rng(seed)
    b, n = np.asarray(base, dtype=float), np.asarray(new, dtype=float)
    mb = np.median(b[gen.integers(0, b.size, size=(n_boot, b.size))], axis=1)
    mn = np.median(n[gen.integers(0, n.size, size=(n_boot, n.size))], axis=1)
    tail = (1 - level) / 2 * 100
    lo, hi = np.percentile(mn / mb, [tail, 100 - tail])
    return float(lo), float(hi)


@pytest.fixture(scope="module")
def samples():
    gen = np.random.default_rng(11)
    return gen.lognormal(0.0, 0.3, 30), gen.lognormal(0.1, 0.3, 25)


@pytest.mark.parametrize("level", [0.95, 0.8])
def test_the_interval_is_the_percentile_bootstrap_of_the_ratio_of_medians(samples, level):
    base, new = samples
    assert S.bootstrap_ratio_ci(base, new, n_boot=400, rng=3, level=level) == \
        _reference_ci(base, new, 400, 3, level)


def test_the_bootstrap_defaults_are_2000_replicates_seed_0_and_a_95_percent_level(samples):
    base, new = samples
    assert S.bootstrap_ratio_ci(base, new) == S.bootstrap_ratio_ci(base, new, n_boot=2000, rng=0, level=0.95)


def test_a_seed_and_a_generator_seeded_alike_give_the_same_interval(samples):
    base, new = samples
    by_seed = S.bootstrap_ratio_ci(base, new, n_boot=300, rng=5)
    assert S.bootstrap_ratio_ci(base, new, n_boot=300, rng=np.random.default_rng(5)) == by_seed
    assert S.bootstrap_ratio_ci(base, new, n_boot=300, rng=6) != by_seed


def test_a_large_sample_is_resampled_in_chunks_into_every_replicate():
    # 5000 samples a side: more values than one chunk holds, so the replicates come in several chunks
    lo, hi = S.bootstrap_ratio_ci(np.full(5000, 2.0), np.full(5000, 3.0), n_boot=2000)
    assert (lo, hi) == (1.5, 1.5)


def test_one_sample_a_side_or_one_replicate_still_gives_an_interval():
    assert S.bootstrap_ratio_ci([2.0], [3.0, 3.0], n_boot=10) == (1.5, 1.5)
    assert S.bootstrap_ratio_ci([2.0, 2.0], [3.0], n_boot=10) == (1.5, 1.5)
    assert S.bootstrap_ratio_ci([2.0], [3.0], n_boot=1) == (1.5, 1.5)


@pytest.mark.parametrize("base, new, n_boot", [([], [1.0], 10), ([1.0], [], 10), ([1.0], [1.0], 0)])
def test_an_empty_side_or_no_replicate_gives_nan_bounds_without_a_numpy_warning(base, new, n_boot):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        lo, hi = S.bootstrap_ratio_ci(base, new, n_boot=n_boot)
    assert math.isnan(lo) and math.isnan(hi)


@pytest.mark.parametrize("level", [0.0, 1.0, 1.5, -0.1])
def test_a_level_outside_0_1_is_refused_naming_it(level):
    with pytest.raises(ValueError, match=rf"^bootstrap_ratio_ci: level must be in \(0, 1\), got {level}$"):
        S.bootstrap_ratio_ci([1.0, 2.0], [1.0, 2.0], level=level)


@pytest.mark.parametrize("base, new", [([0.0, 0.0], [0.0, 0.0]), ([0.0, 1.0], [0.0, 2.0])])
def test_replicates_over_a_zero_base_median_are_divided_without_numpy_warnings(base, new):
    # 0/0 and x/0 replicates are NaN and inf by design; numpy must not warn about them
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        lo, hi = S.bootstrap_ratio_ci(base, new, n_boot=200)
    assert math.isnan(lo) and math.isnan(hi)


# ---------------------------------------------------------------- Mann-Whitney and the smallest p


def test_mann_whitney_of_a_single_new_sample_is_its_exact_p():
    # 1 vs 3, the new sample above all three: exact two-sided p = 2 * 1/4
    assert S.mann_whitney_p([1.0, 2.0, 3.0], [10.0]) == pytest.approx(0.5)


def test_mann_whitney_of_two_constant_sets_one_apart_is_not_one():
    assert S.mann_whitney_p([0.0, 0.0, 0.0], [1.0, 1.0, 1.0]) < 0.1


def test_fully_separated_samples_reach_exactly_the_smallest_p():
    assert S.mann_whitney_p([1.0, 2.0, 3.0], [4.0, 5.0, 6.0]) == pytest.approx(S.smallest_p(3, 3))


@pytest.mark.parametrize("n_base, n_new, p", [
    (3, 3, 0.1), (1, 3, 0.5), (3, 1, 0.5), (1, 1, 1.0), (5, 5, 2 / 252), (0, 5, 1.0), (4, 0, 1.0),
])
def test_the_smallest_p_is_2_over_the_number_of_orderings(n_base, n_new, p):
    assert S.smallest_p(n_base, n_new) == pytest.approx(p)


# ---------------------------------------------------------------- the verdict rules at their boundaries
# (values chosen so that the boundary is hit exactly in binary floating point)


def test_a_latency_change_of_exactly_the_threshold_is_no_change():
    assert S.classify_latency(1.5, 0.0, 0.01, 0.5) == S.NO_CHANGE
    assert S.classify_latency(0.5, 0.0, 0.01, 0.5) == S.NO_CHANGE


def test_a_p_value_equal_to_alpha_is_not_significant():
    assert S.classify_latency(2.0, 0.25, 0.25, 0.5) == S.NOISE


def test_a_large_speedup_that_is_not_significant_is_noise():
    assert S.classify_latency(0.25, 0.5, 0.01, 0.5) == S.NOISE


def test_a_count_change_of_exactly_the_threshold_is_no_change():
    assert S.classify_counts(1.5, 0.0, 0.5) == S.NO_CHANGE
    assert S.classify_counts(0.5, 0.0, 0.5) == S.NO_CHANGE


def test_a_count_change_of_exactly_threshold_plus_noise_is_not_judged_beyond_it():
    # |change| - noise is exactly the threshold: not beyond it; |change| + noise is above it
    assert S.classify_counts(1.5, 0.25, 0.25) == S.CANNOT_JUDGE
    assert S.classify_counts(0.5, 0.25, 0.25) == S.CANNOT_JUDGE


def test_the_noise_counts_against_an_improvement_not_for_it():
    # a 25 % drop with 12.5 % noise might be a 12.5 % drop: not beyond a 25 % threshold
    assert S.classify_counts(0.75, 0.125, 0.25) == S.CANNOT_JUDGE


@pytest.mark.parametrize("ratio, noise", [(math.nan, 0.0), (1.0, math.nan), (math.nan, math.nan)])
def test_a_count_ratio_or_noise_that_is_nan_cannot_be_judged(ratio, noise):
    assert S.classify_counts(ratio, noise, 0.01) == S.CANNOT_JUDGE


def test_a_quality_change_of_exactly_the_tolerance_is_no_change():
    assert S.classify_quality(1.0, 0.5, 0.5, True) == S.NO_CHANGE
    assert S.classify_quality(1.0, 1.5, 0.5, True) == S.NO_CHANGE
    assert S.classify_quality(1.0, 1.5, 0.5, False) == S.NO_CHANGE


def test_a_quality_that_was_already_nan_is_no_change_if_still_nan_and_not_gated_otherwise():
    assert S.classify_quality(math.nan, math.nan, 0.1, True) == S.NO_CHANGE
    assert S.classify_quality(math.nan, 0.5, 0.1, True) == S.NOT_GATED


def test_over_a_zero_base_median_the_interval_is_infinite_like_the_ratio_and_warns_nothing():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # interpolating between infinities would warn and give NaN
        lo, hi = S.bootstrap_ratio_ci([0.0, 0.0], [1.0, 2.0], n_boot=200)
    assert S.median_ratio([0.0, 0.0], [1.0, 2.0]) == math.inf
    assert (lo, hi) == (math.inf, math.inf)
    # a base that is 0 in some replicates only: the upper bound is inf, the lower one finite
    lo, hi = S.bootstrap_ratio_ci([0.0, 0.0, 1.0], [1.0, 1.0, 1.0], n_boot=400, level=0.95)
    assert math.isfinite(lo) and hi == math.inf
