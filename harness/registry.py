"""Name -> factory registry for workloads and methods (timm's ``create_model`` feel).

A method registers itself where it is defined, as timm's ``@register_model``::

    @register_method("httm", params=HTTMParams, workloads=("vggt",), doc="head-wise merging")
    def make_httm(p: HTTMParams) -> AttentionFn: ...

and a workload with ``@register_workload`` on its class. :func:`load_builtins` imports the
built-in modules (:data:`BUILTIN_MODULES`) and those named in ``$HARNESS_PLUGINS``; ``harness
list`` prints what is registered. The registry is plain module-level data.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import os
import sys
import traceback
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from harness.errors import HarnessError
from harness.params import did_you_mean
from harness.store import columns as C
from harness.workloads.base import CommonParams, Workload


class RegistryError(HarnessError, ValueError):
    """A method or workload that cannot be registered (a name clash, parameters that are not a
    dataclass, a metric-column prefix in a parameter name)."""


class PluginError(HarnessError, ImportError):
    """A module named in ``$HARNESS_PLUGINS`` that cannot be imported, or fails while registering."""


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
_REPLACED: set[str] = set()  # "workload/method" registered again by a later module (a plugin)

#: modules whose import registers the built-in workloads and methods, in registration order
BUILTIN_MODULES = (
    "harness.workloads.attention",
    "harness.workloads.vggt",
    "harness.workloads.swin",
    "harness.workloads.swin_det",
    "harness.methods.plain",
    "harness.methods.httm",
    "harness.methods.mixaq",
    "baselines.tome",
    "baselines.fastvggt",
    "baselines.blocksparse",
    "baselines.avggt",
    "baselines.litevggt",
    "baselines.hess",
    "baselines.spark3r",
    "baselines.quantvggt",
    "baselines.uniform_quant",
    "baselines.sparsevit",
)




def _check_param_names(owner: str, cls: type) -> None:
    """Parameter names that read as metric columns, and parameters without a default, are refused."""
    bad = [n for n in param_names(cls) if n.startswith(C.METRIC_PREFIXES)]
    if bad:
        raise RegistryError(
            f"{owner}: parameter names {bad} start with a metric-column prefix "
            f"({', '.join(C.METRIC_PREFIXES)}); rename them"
        )
    required = [f.name for f in dataclasses.fields(cls)
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if required:
        raise RegistryError(f"{owner}: parameters {required} have no default; give each one with "
                            "harness.param(default, help) (a suite that leaves it out runs the default)")


def _check_clash(workload: type[Workload], spec: MethodSpec) -> None:
    """A method parameter named like a workload or common parameter would be ambiguous in a suite."""
    taken = set(param_names(workload.Params)) | set(param_names(CommonParams))
    clash = sorted(set(param_names(spec.params)) & taken)
    if clash:
        raise RegistryError(
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


def register_method(name: str | MethodSpec, *, params: type | None = None, workloads: Sequence[str] = (),
                    doc: str = "") -> Any:
    """Register a method; used as a decorator on the function that builds it::

        @register_method("mine", params=MyParams, workloads=("vggt",), doc="what it does")
        def make_mine(p: MyParams) -> AttentionFn: ...

    ``params`` is the (frozen) dataclass of the method's knobs, declared with :func:`harness.param`:
    its field names are what a suite sets and sweeps. The decorated function gets one instance
    and returns what the workloads apply: an ``attention_fn(q, k, v, layout)`` for ``vggt`` and
    ``attention``, a model transform ``(model, calib_images, seed=0) -> model`` for ``swin``. It is
    returned unchanged. ``register_method(spec)`` registers a ready :class:`MethodSpec` instead.

    Raises RegistryError when ``params`` is not a dataclass, no workload is named, or a parameter
    name clashes with the workload's or the common parameters; a different method under a
    registered name replaces it, with a warning.
    """
    if isinstance(name, MethodSpec):
        return _add_method(name)
    if params is None or not dataclasses.is_dataclass(params) or not isinstance(params, type):
        raise RegistryError(f"method {name!r}: params={params!r} must be a dataclass of the method's knobs "
                            "(declare each field with harness.param)")
    if isinstance(workloads, str) or not workloads:
        raise RegistryError(f"method {name!r}: workloads={workloads!r} must name the workloads it applies "
                            "to, e.g. workloads=('vggt',)")

    def decorator(build: Callable[[Any], Any]) -> Callable[[Any], Any]:
        _add_method(MethodSpec(name, params, build, tuple(workloads), doc or _first_line(build.__doc__)))
        return build

    return decorator


def _first_line(text: str | None) -> str:
    return (text or "").strip().split("\n")[0]


def _add_method(spec: MethodSpec) -> MethodSpec:
    """Register ``spec`` for each workload it names (see :func:`register_method`)."""
    _check_param_names(f"method {spec.name!r}", spec.params)
    for w in spec.workloads:
        if w in _WORKLOADS:
            _check_clash(_WORKLOADS[w], spec)
        old = _METHODS.get((w, spec.name))
        if old is not None and old != spec:
            _REPLACED.add(f"{w}/{spec.name}")
            warnings.warn(f"method {spec.name!r} of workload {w!r} registered again: the new spec replaces "
                          "the old one", stacklevel=3)
        _METHODS[(w, spec.name)] = spec
    return spec


PLUGINS_ENV = "HARNESS_PLUGINS"  # comma-separated modules that register more workloads / methods


def load_builtins() -> None:
    """Import every built-in module (each registers its workload or methods), then the modules
    named in ``$HARNESS_PLUGINS`` (your own workloads and methods; Ray workers get the variable from
    the driver, so they know them too). Raises PluginError, in one paragraph, for a plugin module
    that cannot be imported or fails while registering."""
    for mod in BUILTIN_MODULES:
        importlib.import_module(mod)
    for mod in plugin_modules():
        _import_plugin(mod)
    orphans = sorted({(w, m) for w, m in _METHODS if w not in _WORKLOADS})
    if orphans:
        named = ", ".join(f"{m!r} for {w!r}" for w, m in orphans)
        raise PluginError(f"methods registered for workloads that no module registers: {named}; known "
                          f"workloads: {', '.join(sorted(_WORKLOADS))} (fix workloads=... where the method "
                          "is registered)")


def plugin_record() -> dict[str, list[str]]:
    """What ``env.json`` records of the plugins: the ``$HARNESS_PLUGINS`` modules, and the methods
    a later registration replaced (``workload/method``), which make timings incomparable."""
    return {"modules": plugin_modules(), "replaced": sorted(_REPLACED)}


def _import_plugin(mod: str) -> None:
    """Import one ``$HARNESS_PLUGINS`` module; PluginError (one paragraph) for whatever goes wrong."""
    problem = _plugin_name_problem(mod)
    if problem is not None:
        raise PluginError(f"${PLUGINS_ENV} names {mod!r}, {problem}")
    try:
        with contextlib.redirect_stdout(sys.stderr):  # a plugin's prints must not corrupt a command's output
            importlib.import_module(mod)
    except ModuleNotFoundError as e:
        if e.name is not None and e.name != mod and not mod.startswith(e.name + "."):
            raise PluginError(f"${PLUGINS_ENV} module {mod!r} imports {e.name!r}, which is not installed"
                              f"{_where(e)}; install {e.name!r}, or remove {mod!r} from "
                              f"${PLUGINS_ENV}") from None
        raise PluginError(f"${PLUGINS_ENV} names module {mod!r}, which cannot be imported ({e}); "
                          "install it or put its folder on PYTHONPATH") from None
    except (Exception, SystemExit) as e:  # noqa: BLE001 - a plugin's own bug (or exit), named with where
        raise PluginError(f"${PLUGINS_ENV} module {mod!r} failed while it was imported: "
                          f"{type(e).__name__}: {e}{_where(e)}; fix the module, or remove it from "
                          f"${PLUGINS_ENV}") from None


def _plugin_name_problem(mod: str) -> str | None:
    """Why ``mod`` is not an importable module name (a path, a relative name), or None."""
    if "/" in mod or "\\" in mod or mod.endswith(".py"):
        folder, stem = os.path.split(mod[:-3] if mod.endswith(".py") else mod)
        return (f"a file path, where a module name is needed: put its folder on PYTHONPATH and name the "
                f"module (PYTHONPATH={folder or '.'} {PLUGINS_ENV}={stem})")
    if not all(part.isidentifier() for part in mod.split(".")):
        return ("which is not a module name (dotted Python identifiers, absolute: relative names such as "
                "'.mod' cannot be imported from here)")
    return None


def plugin_modules() -> list[str]:
    """The module names in ``$HARNESS_PLUGINS`` (comma-separated; blanks ignored)."""
    return [m.strip() for m in os.environ.get(PLUGINS_ENV, "").split(",") if m.strip()]


def _where(e: BaseException) -> str:
    """`` (at FILE:LINE)`` of the innermost frame of ``e``'s traceback, or ""."""
    frames = traceback.extract_tb(e.__traceback__)
    return f" (at {frames[-1].filename}:{frames[-1].lineno})" if frames else ""


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
