"""Values a suite may not hold, refused at load with the file, line and field: a name that is not a
file-name component (it names the run directory), NaN or infinity in YAML's own spelling (``.nan``,
``.inf``) in any numeric field or ``--set``, and a value listed twice in one sweep list."""

from __future__ import annotations

import pytest

from harness.store import RunDirError, run_dir_in
from harness.suite import SuiteError, load_suite, parse_suite

pytestmark = pytest.mark.usefixtures("fake_workload")

TIMING = "timing: {warmup_n: 0, min_samples: 2, max_samples: 2, budget_s: 0.01}\n"


def problems_of(text: str) -> str:
    with pytest.raises(SuiteError) as e:
        parse_suite(text, source="s.yaml")
    return str(e.value)


@pytest.mark.parametrize("name, safe", [
    ("/etc/passwd", "etc-passwd"), ("../../x", "x"), ("a;b", "a-b"), ("$(touch pwned)", "touch-pwned"),
    ('"two\\nlines"', "two-lines"), (".hidden", "hidden"), ("a/b", "a-b"), ("'-rf'", "rf"),
])
def test_a_suite_name_that_is_not_a_file_name_component_is_refused_with_a_safe_one_suggested(name, safe):
    msg = problems_of(f"name: {name}\nworkload: fake\nmethods: {{plain: {{}}}}\n")
    assert "s.yaml, line 1: name: " in msg and "is not a file-name component" in msg
    assert "letters, digits, '.', '_', '+' and '-'" in msg and f"for example {safe!r}" in msg


def test_a_name_of_more_than_100_characters_is_refused_and_one_of_100_is_not():
    too_long = f"name: {'n' * 101}\nworkload: fake\nmethods: {{plain: {{}}}}\n"
    assert "at most 100 characters" in problems_of(too_long)
    assert parse_suite(f"name: {'n' * 100}\nworkload: fake\nmethods: {{plain: {{}}}}\n").name == "n" * 100


def test_a_name_given_with_set_is_checked_like_one_in_the_file(tmp_path):
    p = tmp_path / "s.yaml"
    p.write_text("name: ok-1.2_b+c\nworkload: fake\nmethods: {plain: {}}\n")
    assert load_suite(p).name == "ok-1.2_b+c"
    with pytest.raises(SuiteError, match=r"--set name=\.\./up: name: '\.\./up' is not a file-name component"):
        load_suite(p, overrides=["name=../up"])


@pytest.mark.parametrize("name", ["../x", "/abs", "a/b", "", ".."])
def test_a_run_directory_is_never_named_outside_its_parent(tmp_path, name):
    with pytest.raises(RunDirError, match="is not a file-name component"):
        run_dir_in(tmp_path / "runs", name)
    assert run_dir_in(tmp_path / "runs", "s-20260101-000000").parent == tmp_path / "runs"


@pytest.mark.parametrize("spelling", [".nan", ".NaN", ".inf", ".Inf", "+.inf", "-.inf"])
@pytest.mark.parametrize("where, field", [
    ("timing: {{budget_s: {v}}}", "timing.budget_s"),
    ("regression: {{threshold: {v}}}", "regression.threshold"),
    ("regression: {{per_metric: {{q_sum: {v}}}}}", "regression.per_metric.q_sum"),
    ("fixed: {{scale: {v}}}", "fixed.scale"),
    ("sweep: {{scale: [1.0, {v}]}}", "sweep.scale[1]"),
])
def test_nan_and_infinity_in_yaml_spelling_are_refused_in_every_numeric_field(spelling, where, field):
    body = where.format(v=spelling)
    msg = problems_of(f"name: n\nworkload: fake\nmethods: {{plain: {{}}}}\n{body}\n")
    assert f"line 4: {field}: " in msg and "is not a finite number; allowed: float in [" in msg


@pytest.mark.parametrize("spelling", [".nan", ".inf", "-.inf"])
def test_nan_and_infinity_in_a_method_parameter_or_set_are_refused_at_load(tmp_path, spelling):
    msg = problems_of(f"name: n\nworkload: fake\nmethods: {{knob: {{ratio: {spelling}}}}}\n")
    assert "methods.knob.ratio: " in msg and "not a finite number; allowed: float in [0.0, 1.0]" in msg
    p = tmp_path / "s.yaml"
    p.write_text("name: n\nworkload: fake\nmethods: {knob: {}}\n" + TIMING)
    for key in ("timing.budget_s", "methods.knob.ratio", "regression.alpha"):
        with pytest.raises(SuiteError, match=rf"--set {key}={spelling}: .*{key.split('.')[-1]}: .* is not a "
                                             "finite number"):
            load_suite(p, overrides=[f"{key}={spelling}"])


def test_an_unbounded_range_reads_as_finite_in_the_allowed_values():
    msg = problems_of("name: n\nworkload: fake\nmethods: {plain: {}}\ntiming: {budget_s: -1}\n")
    assert "allowed: float in [0, inf)" in msg  # inf itself is not allowed: the bracket says so


@pytest.mark.parametrize("body, where", [
    ("sweep: {size: [2, 3, 2]}\nmethods: {plain: {}}", "sweep.size[2]: 2 is listed twice (items 0 and 2)"),
    ("sweep: {scale: [1, 1.0]}\nmethods: {plain: {}}", "sweep.scale[1]: 1.0 is listed twice (items 0 and 1)"),
    ("methods: {knob: {level: [1, 2, 2]}}", "methods.knob.level[2]: 2 is listed twice (items 1 and 2)"),
    ("methods: {plain: {}}\ninclude: [{method: knob, level: [3, 3]}]",
     "include[0].level[1]: 3 is listed twice"),
])
def test_a_value_listed_twice_in_a_sweep_is_refused_rather_than_run_once(body, where):
    msg = problems_of(f"name: n\nworkload: fake\n{body}\n")
    assert where in msg and "the repeat would run once: remove it" in msg


def test_distinct_sweep_values_still_make_one_point_each():
    suite = parse_suite("name: n\nworkload: fake\nsweep: {size: [2, 3, 4]}\nmethods: {plain: {}}\n")
    assert sorted(p.params["size"] for p in suite.points()) == [2, 3, 4]
