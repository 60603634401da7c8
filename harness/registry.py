"""Name -> factory registry for workloads and methods (timm's ``create_model`` feel).

Built-in workloads and methods register themselves when their modules are imported;
:func:`load_builtins` imports them all. ``harness list`` prints what is registered.
"""

from __future__ import annotations

import dataclasses
import importlib
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from harness.params import did_you_mean
from harness.store import columns as C
from harness.workloads.base import CommonParams, Workload


@dataclass(frozen=True)
class MethodSpec:
    """A method: a dataclass of parameters plus a function that builds it.

    build(params) returns what the workload applies: an ``attention_fn`` for VGGT and
    the attention micro-workload, a model transform for Swin.
    workloads: names of the workloads the method applies to.
    """

    name: str
    params: type
    build: Callable[[Any], Any]
    workloads: tuple[str, ...]
    doc: str = ""


_WORKLOADS: dict[str, type[Workload]] = {}
_METHODS: dict[tuple[str, str], MethodSpec] = {}

BUILTIN_MODULES = (
    "harness.workloads.attention",
    "harness.workloads.vggt",
    "harness.workloads.swin",
)




def _check_param_names(owner: str, cls: type) -> None:
    bad = [n for n in param_names(cls) if n.startswith(C.METRIC_PREFIXES)]
    if bad:
        raise ValueError(
            f"{owner}: parameter names {bad} start with a metric-column prefix "
            f"({', '.join(C.METRIC_PREFIXES)}); rename them"
        )


def _check_clash(workload: type[Workload], spec: MethodSpec) -> None:
    """A method parameter named like a workload or common parameter would be ambiguous in a suite."""
    taken = set(param_names(workload.Params)) | set(param_names(CommonParams))
    clash = sorted(set(param_names(spec.params)) & taken)
    if clash:
        raise ValueError(
            f"method {spec.name!r}: parameters {clash} clash with parameters of workload {workload.name!r} "
            "or the common ones; rename them"
        )


def register_workload(cls: type[Workload]) -> type[Workload]:
    """Class decorator: register a workload under ``cls.name`` (a different class under a
    registered name replaces it, with a warning)."""
    _check_param_names(f"workload {cls.name!r}", cls.Params)
    for (w, _), spec in _METHODS.items():
        if w == cls.name:
            _check_clash(cls, spec)
    old = _WORKLOADS.get(cls.name)
    if old is not None and old is not cls:
        warnings.warn(f"workload {cls.name!r} registered again: {cls.__qualname__} replaces "
                      f"{old.__qualname__}", stacklevel=2)
    _WORKLOADS[cls.name] = cls
    return cls


def register_method(spec: MethodSpec) -> MethodSpec:
    """Register a method for each workload it names. Its parameter names must not clash with
    the workload's or the common parameters; a different spec under a registered name replaces
    it, with a warning."""
    _check_param_names(f"method {spec.name!r}", spec.params)
    for w in spec.workloads:
        if w in _WORKLOADS:
            _check_clash(_WORKLOADS[w], spec)
        old = _METHODS.get((w, spec.name))
        if old is not None and old is not spec:
            warnings.warn(f"method {spec.name!r} of workload {w!r} registered again: the new spec replaces "
                          "the old one", stacklevel=2)
        _METHODS[(w, spec.name)] = spec
    return spec


PLUGINS_ENV = "HARNESS_PLUGINS"  # comma-separated modules that register more workloads / methods


def load_builtins() -> None:
    """Import every built-in workload module (each registers itself and its methods), then the
    modules named in ``$HARNESS_PLUGINS`` (your own workloads and methods; Ray workers get the
    variable from the driver, so they know them too)."""
    import os

    for mod in BUILTIN_MODULES:
        importlib.import_module(mod)
    for mod in filter(None, (m.strip() for m in os.environ.get(PLUGINS_ENV, "").split(","))):
        try:
            importlib.import_module(mod)
        except ImportError as e:
            raise ImportError(f"${PLUGINS_ENV} names module {mod!r}, which cannot be imported ({e}); "
                              "install it or put its folder on PYTHONPATH") from None


def workload_names() -> list[str]:
    return sorted(_WORKLOADS)


def get_workload(name: str) -> type[Workload]:
    if name not in _WORKLOADS:
        raise KeyError(
            f"unknown workload {name!r}{did_you_mean(name, list(_WORKLOADS))}; "
            f"known: {', '.join(sorted(_WORKLOADS))}"
        )
    return _WORKLOADS[name]


def method_names(workload: str) -> list[str]:
    return sorted(m for (w, m) in _METHODS if w == workload)


def get_method(workload: str, name: str) -> MethodSpec:
    if (workload, name) not in _METHODS:
        known = method_names(workload)
        raise KeyError(
            f"unknown method {name!r} for workload {workload!r}{did_you_mean(name, known)}; "
            f"known: {', '.join(known)}"
        )
    return _METHODS[(workload, name)]


def create_method(workload: str, name: str, params: Any = None) -> Any:
    """Build method ``name`` of ``workload`` with ``params`` (the method's defaults when None):
    an ``attention_fn`` for VGGT and the attention workload, a model transform for Swin."""
    spec = get_method(workload, name)
    return spec.build(spec.params() if params is None else params)


def param_names(cls: type) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]
