"""The workload/method registry: clashing parameter names are refused, re-registration warns."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from harness import registry
from harness.params import param
from harness.registry import MethodSpec

pytestmark = pytest.mark.usefixtures("clean_registry")


@dataclass(frozen=True)
class SeqLenParams:
    seq_len: int = param(8, "a method knob named like the attention workload's seq_len")


@dataclass(frozen=True)
class DeviceParams:
    device: str = param("cpu", "a method knob named like the common device parameter")


@dataclass(frozen=True)
class FineParams:
    strength: float = param(0.5, "a knob of its own")


@pytest.mark.parametrize(("params", "name"), [(SeqLenParams, "seq_len"), (DeviceParams, "device")])
def test_method_parameters_may_not_clash_with_workload_or_common_ones(params, name):
    with pytest.raises(ValueError, match=rf"method 'clash': parameters \['{name}'\] clash .* 'attention'"):
        registry.register_method(MethodSpec("clash", params, lambda p: None, ("attention",)))
    assert "clash" not in registry.method_names("attention")


def test_registering_a_different_method_under_a_taken_name_warns_and_replaces():
    first = MethodSpec("mine", FineParams, lambda p: None, ("attention",))
    registry.register_method(first)
    registry.register_method(first)  # the same spec again (a module re-import): silent
    second = MethodSpec("mine", FineParams, lambda p: 1, ("attention",))
    with pytest.warns(UserWarning, match="method 'mine' of workload 'attention' registered again"):
        registry.register_method(second)
    assert registry.get_method("attention", "mine") is second


def test_registering_a_different_workload_under_a_taken_name_warns():
    old = registry.get_workload("attention")
    twin = type("AttentionTwin", (old,), {})
    with pytest.warns(UserWarning, match="workload 'attention' registered again: AttentionTwin replaces"):
        registry.register_workload(twin)
    assert registry.get_workload("attention") is twin


def test_create_method_fills_the_defaults_and_passes_given_params():
    seen = []
    registry.register_method(MethodSpec("mine", FineParams, lambda p: seen.append(p) or p, ("attention",)))
    assert registry.create_method("attention", "mine") == FineParams()
    assert registry.create_method("attention", "mine", FineParams(strength=0.9)).strength == 0.9
    assert seen == [FineParams(), FineParams(strength=0.9)]
    with pytest.raises(KeyError, match="unknown method 'mien'.*did you mean 'mine'"):
        registry.create_method("attention", "mien")
