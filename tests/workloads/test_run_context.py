"""RunContext: one input's cache at a time, reference outputs made once per input, is_reference."""

from __future__ import annotations

from dataclasses import dataclass

from harness.workloads.base import CommonParams, Point, RunContext


@dataclass(frozen=True)
class Knobs:
    level: int = 0


def point(method: str, level: int = 0) -> Point:
    return Point(suite="s", workload="w", method=method, params={}, workload_params=None,
                 method_params=Knobs(level), common=CommonParams(), preset=None, hash="h")


def counter():
    calls = []

    def make(value):
        def f():
            calls.append(value)
            return value
        return f

    return calls, make


def test_reference_and_derived_data_are_made_once_per_input():
    ctx = RunContext()
    calls, make = counter()
    assert ctx.inputs("a", make("in-a")) == "in-a"
    assert ctx.reference("r", make("ref-a")) == "ref-a"
    assert ctx.derived("d", make("calib-a")) == "calib-a"
    # same input again: nothing is remade
    assert ctx.inputs("a", make("in-a2")) == "in-a"
    assert ctx.reference("r", make("ref-a2")) == "ref-a"
    assert ctx.derived("d", make("calib-a2")) == "calib-a"
    assert calls == ["in-a", "ref-a", "calib-a"]


def test_a_new_input_drops_everything_cached_for_the_previous_one():
    ctx = RunContext()
    calls, make = counter()
    ctx.inputs("a", make("in-a"))
    ctx.reference("r", make("ref-a"))
    assert ctx.inputs("b", make("in-b")) == "in-b"
    assert ctx.reference("r", make("ref-b")) == "ref-b"  # not a's reference
    assert ctx.inputs("a", make("in-a again")) == "in-a again"  # a was dropped, made anew
    assert calls == ["in-a", "ref-a", "in-b", "ref-b", "in-a again"]


def test_reference_and_derived_keys_do_not_collide():
    ctx = RunContext()
    ctx.inputs("a", lambda: 0)
    assert ctx.reference("k", lambda: "ref") == "ref"
    assert ctx.derived("k", lambda: "derived") == "derived"


def test_is_reference_needs_the_method_and_its_reference_parameters():
    ctx = RunContext(reference_method="sdpa", reference_params=Knobs(0))
    assert ctx.is_reference(point("sdpa", 0))
    assert not ctx.is_reference(point("sdpa", 1))  # same method, other parameters
    assert not ctx.is_reference(point("math", 0))
    assert not RunContext().is_reference(point("sdpa", 0))  # no reference in the suite
