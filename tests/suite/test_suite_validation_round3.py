"""Validation gaps found by the third break-it round: values that crashed the loader (an unhashable
``reference`` or ``default_preset``), rules and settings accepted although they match or change
nothing (an ``exclude`` method or value no point can have, a misspelt ``regression.per_metric``
column), YAML merge keys taken for duplicate keys, and cross-field checks run on a field that
already has a problem."""

from __future__ import annotations

import dataclasses
import textwrap

import pytest
import torch

from harness.params import param
from harness.suite import LATENCY_KEYS, Problems, SuiteError, parse_suite
from harness.suite.fields import check_settings

pytestmark = pytest.mark.usefixtures("clean_registry")

ATTN = """\
name: attn
workload: attention
methods: {sdpa: {}, math: {}}
sweep: {seq_len: [64, 128]}
timing: {warmup_n: 0, min_samples: 2, max_samples: 2, budget_s: 0.01}
"""


def problems_of(text: str, **kw) -> list[str]:
    with pytest.raises(SuiteError) as e:
        parse_suite(textwrap.dedent(text), source="s.yaml", **kw)
    return e.value.problems


def one_problem(text: str, **kw) -> str:
    found = problems_of(text, **kw)
    assert len(found) == 1, found
    return found[0]


# ---------------------------------------------------------------- 1. reference


@pytest.mark.parametrize("value", ["[sdpa]", "{a: 1}", "[]", "1"])
def test_a_reference_that_is_not_a_method_name_is_a_problem_not_a_crash(value):
    msg = one_problem(ATTN + f"reference: {value}\n")
    assert msg.startswith("s.yaml, line 6: reference: ")
    assert "must be one of this suite's method names: sdpa, math" in msg


def test_a_reference_given_as_a_list_with_set_is_a_problem_with_a_suggestion():
    msg = one_problem(ATTN, overrides=["reference=[sdpa]"])
    assert msg.startswith("--set reference=[sdpa]: reference: ")
    assert "(did you mean 'sdpa'?)" in msg and "method names: sdpa, math" in msg
    assert parse_suite(ATTN + "reference: math\n").reference == "math"


def test_a_default_preset_that_is_a_list_or_mapping_is_a_problem_not_a_crash():
    for value, shown in (("[cpu]", "['cpu']"), ("{cpu: 1}", "{'cpu': 1}")):
        msg = one_problem(ATTN + f"presets: {{cpu: {{}}}}\ndefault_preset: {value}\n")
        assert msg.startswith(f"s.yaml, line 7: default_preset: {shown} is not a preset of this suite"), msg
        assert msg.endswith("presets: cpu")


# ---------------------------------------------------------------- 2. and 3. exclude


def test_an_exclude_method_that_is_not_a_method_of_the_suite_is_refused_with_a_suggestion():
    found = problems_of(ATTN + "exclude:\n  - {method: nosuch}\n  - {method: [sdpa, maths]}\n"
                        "  - {method: 3}\n")
    assert len(found) == 3, found
    assert found[0].startswith("s.yaml, line 7: exclude[0].method: 'nosuch' is not one of this suite's")
    assert "must name one: sdpa, math" in found[0]
    assert found[1].startswith("s.yaml, line 8: exclude[1].method[1]: 'maths' is not one of this suite's")
    assert "(did you mean 'math'?)" in found[1]
    assert found[2].startswith("s.yaml, line 9: exclude[2].method: 3 is not one of")


def test_an_exclude_method_may_be_a_method_that_only_an_include_entry_has():
    text = (ATTN.replace("methods: {sdpa: {}, math: {}}", "methods: {sdpa: {}}")
            + "include: [{method: math, seq_len: [64, 256]}]\nexclude: [{method: math, seq_len: 256}]\n")
    suite = parse_suite(text, source="s.yaml")
    assert sorted((p.method, p.params["seq_len"]) for p in suite.points()) == [
        ("math", 64), ("sdpa", 64), ("sdpa", 128)]


@pytest.mark.parametrize(("rule", "path", "fragment"), [
    ("{seq_len: abc}", "exclude[1].seq_len", "'abc' is not an int; allowed: int in [1, 1048576]"),
    ("{seq_len: {a: 1}}", "exclude[1].seq_len", "{'a': 1} is not an int"),
    ("{seq_len: [64, abc]}", "exclude[1].seq_len[1]", "'abc' is not an int"),
    ("{seq_len: 0}", "exclude[1].seq_len", "0 is out of range; allowed: int in [1, 1048576]"),
    ("{dtype: float64}", "exclude[1].dtype", "'float64' is not allowed; allowed: one of 'float32'"),
    ("{seq_len: null}", "exclude[1].seq_len", "None is not an int"),
    ("{seq_len: []}", "exclude[1].seq_len", "empty list: it matches no point"),
    ("{method: sdpa, device: gpu0}", "exclude[1].device", "'gpu0' is not a device"),
])
def test_an_exclude_value_is_checked_like_the_parameters_own_values_at_the_entrys_line(rule, path, fragment):
    msg = one_problem(ATTN + f"exclude:\n  - {{method: math}}\n  - {rule}\n")
    assert msg.startswith(f"s.yaml, line 8: {path}: "), msg
    assert fragment in msg, msg


def test_a_good_exclude_list_still_drops_every_point_it_names():
    suite = parse_suite(ATTN + "exclude: [{method: math, seq_len: [64, 128]}]\n", source="s.yaml")
    assert [p.method for p in suite.points()] == ["sdpa", "sdpa"]


def test_an_exclude_device_auto_matches_the_device_the_points_resolve_it_to():
    text = ATTN + "fixed: {device: auto}\nexclude: [{method: math, device: auto}]\n"
    suite = parse_suite(text, source="s.yaml")
    assert {p.method for p in suite.points()} == {"sdpa"}
    assert {p.params["device"] for p in suite.points()} == {"cuda" if torch.cuda.is_available() else "cpu"}


# ---------------------------------------------------------------- 4. regression.per_metric


def test_a_misspelt_per_metric_key_is_refused_with_a_suggestion_and_the_allowed_keys():
    msg = one_problem(ATTN + "regression: {per_metric: {latency_medain_ms: 0.0}}\n")
    assert msg.startswith("s.yaml, line 6: regression.per_metric.latency_medain_ms: unknown per_metric")
    assert "(did you mean 'latency_median_ms'?)" in msg
    assert "latency_median_ms, latency, device_ms" in msg and "fid_max_abs_err, fid_cos" in msg


def test_a_per_metric_quality_column_the_workload_does_not_declare_is_refused():
    msg = one_problem(ATTN + "regression:\n  per_metric:\n    fid_cos: 0.01\n    q_x: 1\n")
    assert msg.startswith("s.yaml, line 9: regression.per_metric.q_x: unknown per_metric column 'q_x'")
    assert "quality/fidelity column of workload 'attention'" in msg


def test_per_metric_takes_every_latency_key_and_the_declared_quality_columns(fake_workload):
    keys = {**{k: 0.1 for k in LATENCY_KEYS}, "fid_cos": 0.01}
    suite = parse_suite(ATTN + f"regression: {{per_metric: {keys}}}\n".replace("'", ""), source="s.yaml")
    assert suite.regression["per_metric"] == keys
    fake = "name: f\nworkload: fake\nmethods: {plain: {}}\n"
    suite = parse_suite(fake + "regression: {per_metric: {q_sum: 0.5}}\n")
    assert suite.regression["per_metric"] == {"q_sum": 0.5}
    # a work column is not gated by tolerance here: refused like any other
    assert "per_metric.work_elems: unknown per_metric column" in one_problem(
        fake + "regression: {per_metric: {work_elems: 1}}\n")


# ---------------------------------------------------------------- 5. YAML merge keys


MERGED = """\
name: attn
workload: attention
methods: {sdpa: {}, math: {}}
timing: {warmup_n: 0, min_samples: 2, max_samples: 2, budget_s: 0.01}
presets:
  small: {fixed: &b {heads: 2, head_dim: 16}}
  big: {fixed: {<<: *b, heads: 4}}
default_preset: small
"""


def test_an_explicit_key_overriding_a_merged_key_is_not_a_duplicate_in_any_preset():
    for preset, heads in (("small", 2), ("big", 4), (None, 2)):
        point = parse_suite(MERGED, source="s.yaml", preset=preset).points()[0]
        assert (point.params["heads"], point.params["head_dim"]) == (heads, 16)


def test_a_merge_key_at_the_top_level_with_the_anchor_in_a_preset_is_not_a_duplicate():
    text = MERGED.replace("default_preset: small\n", "fixed: {<<: *b, heads: 8}\n")
    point = parse_suite(text, source="s.yaml").points()[0]
    assert (point.params["heads"], point.params["head_dim"]) == (8, 16)


def test_keys_merged_from_a_list_of_anchors_are_not_duplicates_and_are_located_at_their_lines():
    text = MERGED.replace("default_preset: small\n", "  other: {fixed: &c {batch: 0}}\n"
                          "fixed: {<<: [*b, *c], heads: 8}\n")
    msg = one_problem(text)  # line 8 gives batch (through the merge on line 9)
    assert msg.startswith("s.yaml, line 8: fixed.batch: 0 is out of range"), msg
    point = parse_suite(text.replace("batch: 0", "batch: 2"), source="s.yaml").points()[0]
    assert [point.params[k] for k in ("heads", "head_dim", "batch")] == [8, 16, 2]


def test_a_real_duplicate_key_next_to_a_merge_key_is_still_reported():
    msg = one_problem(MERGED.replace("{<<: *b, heads: 4}", "{<<: *b, heads: 4, heads: 5}"))
    assert msg == ("s.yaml, line 7: presets.big.fixed.heads: duplicate key 'heads'; YAML would silently "
                   "keep the last one. Give each key once.")


def test_a_bad_merged_value_is_reported_at_the_line_that_gives_it():
    text = MERGED.replace("head_dim: 16", "head_dim: 0")
    msg = one_problem(text, preset="big")
    assert msg.startswith("s.yaml, line 6 (preset 'big'): fixed.head_dim: 0 is out of range"), msg


# ---------------------------------------------------------------- 6. cross-field checks


@pytest.mark.parametrize(("timing", "field", "fragment"), [
    ("{min_samples: true, max_samples: 2}", "timing.min_samples", "True is not an int"),
    ("{min_samples: 60, max_samples: abc}", "timing.max_samples", "'abc' is not an int"),
    ("{min_samples: 0, max_samples: 2}", "timing.min_samples", "0 is out of range"),
])
def test_min_samples_against_max_samples_is_not_checked_when_either_has_a_problem(timing, field, fragment):
    msg = one_problem(ATTN.replace("timing: {warmup_n: 0, min_samples: 2, max_samples: 2, budget_s: 0.01}",
                                   f"timing: {timing}"))
    assert f"line 5: {field}: {fragment}" in msg and "larger than max_samples" not in msg


def test_min_samples_larger_than_good_max_samples_is_still_reported():
    msg = one_problem(ATTN.replace("min_samples: 2, max_samples: 2", "min_samples: 6, max_samples: 3"))
    assert "timing.min_samples: min_samples (6) is larger than max_samples (3)" in msg


@dataclasses.dataclass(frozen=True)
class _Window:
    lo: int = param(0, "low end", range=(0, None))
    hi: int = param(10, "high end", range=(0, None))

    def __post_init__(self) -> None:
        if self.lo > self.hi:
            raise ValueError(f"lo ({self.lo}) is larger than hi ({self.hi})")


def test_a_settings_dataclass_cross_field_rule_skips_a_setting_that_already_has_a_problem():
    problems = Problems("s.yaml")
    check_settings(problems, {"window": {"lo": 20, "hi": "x"}}, "window", _Window)
    assert len(problems.messages) == 1 and "window.hi: 'x' is not an int" in problems.messages[0]
    problems = Problems("s.yaml")
    check_settings(problems, {"window": {"lo": 20, "hi": 5}}, "window", _Window)
    assert problems.messages == ["s.yaml: window: lo (20) is larger than hi (5)"]


def test_the_gate_and_the_suite_agree_on_the_latency_keys_of_per_metric():
    from harness.suite import LATENCY_KEYS as SUITE_KEYS
    from reports.compare import LATENCY_KEYS as GATE_KEYS

    assert tuple(SUITE_KEYS) == tuple(GATE_KEYS)  # two lists (reports never import the suite loader)
