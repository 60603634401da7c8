"""Suite stages on their own: a SuiteSpec written in Python (no YAML) expanded into points, one point
resolved, and Problems locating what expansion found."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from harness import registry
from harness.params import param
from harness.registry import MethodSpec
from harness.suite import Include, Issue, Problems, Rejected, SuiteSpec, expand, point_hash, resolve

pytestmark = pytest.mark.usefixtures("clean_registry")


@dataclass(frozen=True)
class StrictParams:
    low: int = param(0, "must not exceed high", range=(0, 9))
    high: int = param(5, "upper bound", range=(0, 9))

    def __post_init__(self) -> None:
        if self.low > self.high:
            raise ValueError(f"low={self.low} must not exceed high={self.high}")


@pytest.fixture
def strict(fake_workload):
    """The fake workload with a third method whose parameters refuse some combinations."""
    registry.register_method(MethodSpec("strict", StrictParams, lambda p: None, ("fake",)))


def spec(**kw) -> SuiteSpec:
    return SuiteSpec(**{"name": "t", "workload": "fake", "methods": {"plain": {}}, **kw})


def keys(points, *names):
    return [(p.method, *(p.params.get(n) for n in names)) for p in points]


def test_sweep_times_each_methods_grid_in_order(fake_workload):
    out = expand(spec(fixed={"scale": 2.0}, sweep={"size": [2, 3]},
                      methods={"plain": {}, "knob": {"level": [0, 1]}}))
    assert not out.issues
    assert keys(out.points, "size", "level") == [
        ("plain", 2, None), ("knob", 2, 0), ("knob", 2, 1),
        ("plain", 3, None), ("knob", 3, 0), ("knob", 3, 1),
    ]
    assert {p.params["scale"] for p in out.points} == {2.0}
    assert all(p.suite == "t" and p.workload == "fake" and p.preset is None for p in out.points)


def test_points_carry_every_parameter_and_the_hash_of_them(fake_workload):
    (knob,) = expand(spec(methods={"knob": {"ratio": [0.25]}})).points
    assert knob.params == {"size": 4, "scale": 1.0, "mode": "ok", "ckpt": None, "level": 1, "ratio": 0.25,
                           "device": "cpu", "dtype": "float32", "seed": 0, "threads": 0}
    assert knob.hash == point_hash("fake", "knob", knob.params)
    assert knob.method_params.ratio == 0.25 and knob.workload_params.size == 4


def test_include_merges_over_fixed_not_sweep_and_exclude_drops_matches(fake_workload):
    out = expand(spec(
        fixed={"scale": 3.0}, sweep={"size": [2, 3]}, methods={"plain": {}, "knob": {}},
        include=(Include("knob", {"level": [4, 5]}),),
        exclude=({"method": ["knob"], "size": [3]}, {"level": [5]}),
    ))
    assert keys(out.points, "size", "level", "scale") == [
        ("plain", 2, None, 3.0), ("knob", 2, 1, 3.0), ("plain", 3, None, 3.0), ("knob", 4, 4, 3.0),
    ]


def test_a_repeated_point_is_kept_once(fake_workload):
    out = expand(spec(sweep={"size": [2]}, include=(Include("plain", {"size": [2, 5]}),)))
    assert keys(out.points, "size") == [("plain", 2), ("plain", 5)]


def test_nothing_left_after_exclude_is_an_issue(fake_workload):
    out = expand(spec(exclude=({"method": ["plain"]},)))
    assert out.points == []
    (issue,) = out.issues
    assert issue.path == () and issue.message.startswith("the suite expands to no points")


def test_refused_combinations_are_issues_at_their_entry_once_each(strict):
    include = (Include("strict", {"low": [7], "high": [3]}), Include("strict", {"low": [9]}))
    out = expand(spec(methods={"strict": {"low": [1, 7], "high": [3]}}, include=include))
    assert keys(out.points, "low", "high") == [("strict", 1, 3)]
    assert [i.path for i in out.issues] == [("methods", "strict"), ("include", 1)]
    assert "low=7 must not exceed high=3 (parameters: {'low': 7, 'high': 3})" in out.issues[0].message


def test_workload_path_checks_are_issues_near_the_parameter_they_name(fake_workload, tmp_path):
    missing = str(tmp_path / "nope.pt")
    out = expand(spec(sweep={"ckpt": [missing]}, methods={"plain": {}, "knob": {}}))
    assert len(out.points) == 2
    (issue,) = out.issues  # one check per workload configuration, not per method
    assert issue.path == () and issue.near == (("fixed", "ckpt"), ("sweep", "ckpt"))
    assert issue.message == f"ckpt: checkpoint file {missing!r} does not exist"


def test_resolve_builds_one_point_ignoring_other_methods_parameters(fake_workload, monkeypatch):
    monkeypatch.setattr("harness.suite.expansion.resolve_device", lambda name: "cuda")
    s = spec(name="named", preset="gpu")
    point = resolve(s, "plain", {"size": 8, "level": 3, "device": "auto"})
    assert point.method == "plain" and point.suite == "named" and point.preset == "gpu"
    assert point.params["size"] == 8 and "level" not in point.params and point.device == "cuda"


def test_resolve_reports_a_refused_combination(strict):
    got = resolve(spec(), "strict", {"low": 4, "high": 2})
    assert got == Rejected("low=4 must not exceed high=2 (parameters: {'low': 4, 'high': 2})")


def test_problems_locate_issues_by_path_or_by_the_first_located_parameter():
    problems = Problems("s.yaml", {("methods",): "s.yaml, line 3", ("sweep", "ckpt"): "s.yaml, line 9"})
    problems.report(Issue("bad combination", ("methods", "knob")))
    problems.report(Issue("ckpt: missing", near=(("fixed", "ckpt"), ("sweep", "ckpt"))))
    problems.report(Issue("data: missing", near=(("fixed", "data"),)))
    problems.report(Issue("no points"))
    assert problems.messages == [
        "s.yaml, line 3: methods.knob: bad combination",
        "s.yaml, line 9: ckpt: missing",
        "s.yaml: data: missing",
        "s.yaml: no points",
    ]


def test_relocating_a_path_moves_everything_below_it():
    problems = Problems("s.yaml", {("fixed",): "s.yaml, line 2", ("fixed", "a"): "s.yaml, line 3"})
    problems.relocate(("fixed",), "--set fixed={a: 1}")
    assert problems.where(("fixed", "a")) == "--set fixed={a: 1}"
    assert problems.where(("sweep", "b")) == "s.yaml"


# ---------------------------------------------------------------- the workload's checks of each point


@pytest.fixture
def checked(fake_workload, monkeypatch):
    """The fake workload with a ``__post_init__`` refusing odd sizes and a ``check_point`` refusing a
    method level above the size (a constraint between workload and method parameters)."""

    @dataclass(frozen=True)
    class EvenParams(fake_workload.Params):
        def __post_init__(self) -> None:
            if self.size % 2:
                raise ValueError(f"size={self.size} is not even (allowed: 2, 4, 6, ...)")

    def check_point(self, params, method, method_params) -> list[str]:
        level = getattr(method_params, "level", None)
        if level is not None and level > params.size:
            return [f"level={level} of method {method!r} exceeds size={params.size} "
                    f"(allowed: 0..{params.size})"]
        return []

    monkeypatch.setattr(fake_workload, "Params", EvenParams)
    monkeypatch.setattr(fake_workload, "check_point", check_point, raising=False)
    return fake_workload


def test_check_point_problems_are_issues_near_the_parameters_they_name(checked):
    out = expand(spec(sweep={"size": [2, 4]}, methods={"plain": {}, "knob": {"level": [1, 3]}}))
    assert keys(out.points, "size", "level") == [
        ("plain", 2, None), ("knob", 2, 1), ("knob", 2, 3),
        ("plain", 4, None), ("knob", 4, 1), ("knob", 4, 3),
    ]
    (issue,) = out.issues
    assert issue.message == "level=3 of method 'knob' exceeds size=2 (allowed: 0..2)"
    assert issue.path == ("methods", "knob")
    assert issue.near == (("methods", "knob", "level"), ("fixed", "level"), ("sweep", "level"),
                          ("fixed", "size"), ("sweep", "size"))


def test_a_refused_point_is_still_checked_so_every_problem_comes_at_once(checked):
    out = expand(spec(sweep={"size": [3]}, methods={"knob": {"level": [1, 4]}}))
    assert out.points == []
    refused, check = out.issues  # the refusal once (for both levels), the check for level 4
    assert refused.message == ("invalid workload parameters: size=3 is not even (allowed: 2, 4, 6, ...) "
                               "(parameters: {'size': 3})")
    assert refused.near == (("fixed", "size"), ("sweep", "size"))
    assert check.message == "level=4 of method 'knob' exceeds size=3 (allowed: 0..3)"


def test_names_in_quoted_values_do_not_locate_a_problem():
    from harness.suite.expansion import named

    names = ["size", "scale", "mode", "ckpt"]
    assert named("ckpt: checkpoint file '/data/size/mode.pt' does not exist", names) == ["ckpt"]
    assert named("mode: raise needs ckpt (and a size above 2); scale-free", names) == ["mode", "ckpt", "size"]
    assert named("sizes and modes are not names", names) == []
    assert named("the preset's size can't exceed 'x' (mode 'y')", names) == ["size", "mode"]
