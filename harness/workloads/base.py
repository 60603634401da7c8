"""The interface between the runner and a workload.

The runner owns timing, telemetry, storage and failure handling. A workload only
builds things and hands the runner a callable: it never times itself.

Flow for one point::

    model = workload.build_model(point)          # cached by workload.model_key(point)
    bench = workload.bench(model, point, ctx)    # inputs + method applied
    out = timer.measure(bench.fn)                # the runner times bench.fn
    row.update(bench.counters)                   # work counters (work_*)
    row.update(bench.evaluate(out))              # quality (q_*) and fidelity (fid_*) columns
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, TypeVar

from harness.measure.devices import DEVICE_NAMES, DTYPE_NAMES
from harness.params import param


@dataclass(frozen=True)
class CommonParams:
    """Parameters every point has, whatever the workload."""

    device: str = param("cpu", f"where to run: {DEVICE_NAMES} (auto: cuda when available)")
    dtype: str = param(
        "float32",
        "compute dtype; bfloat16/float16 run under autocast on cuda",
        choices=DTYPE_NAMES,
    )
    seed: int = param(0, "seed for weights, inputs and random merge patterns", range=(0, None))
    threads: int = param(0, "torch CPU threads for this point (0: leave torch's default)", range=(0, 1024))


@dataclass(frozen=True)
class MetricInfo:
    """What a result column means; written to the run directory's ``metrics.json``.

    kind: "quality" (task metric vs ground truth, ``q_*``), "fidelity" (vs the reference
    method's output on the same input, ``fid_*``) or "work" (counters, ``work_*``).
    higher_is_better: direction for reports and the regression gate (None: no direction).
    tolerance: absolute change the regression gate accepts for this column (None: not gated).
    cost_axis: a work column (lower = cheaper) that reports plot quality and fidelity against,
    e.g. BOPs for quantization, where latency of a simulation is not the speedup.
    """

    kind: str
    help: str
    higher_is_better: bool | None = None
    unit: str = ""
    tolerance: float | None = None
    cost_axis: bool = False


WP = TypeVar("WP")  #: a workload's Params dataclass
MP = TypeVar("MP")  #: a method's params dataclass
Model = TypeVar("Model")  #: what a workload's build_model returns


@dataclass(frozen=True)
class Point(Generic[WP, MP]):
    """One fully resolved configuration of a sweep.

    params: every resolved parameter by name (workload + method + common), exactly the
    config columns written to ``points.parquet``; workload_params / method_params /
    common: the same values as instances of the registered dataclasses.
    """

    suite: str
    workload: str
    method: str
    params: dict[str, Any]
    workload_params: WP
    method_params: MP
    common: CommonParams
    preset: str | None
    hash: str

    @property
    def device(self) -> str:
        return self.common.device

    @property
    def dtype(self) -> str:
        return self.common.dtype

    @property
    def seed(self) -> int:
        return self.common.seed


@dataclass
class RunContext:
    """State shared by the points of one run: which method is the reference, and a cache.

    The cache holds ONE input at a time: :meth:`inputs` with a new key drops everything cached
    for the previous input (its reference outputs and derived data too), because points run
    grouped by input and one input's activations can take gigabytes (VGGT at 1000 frames).
    ``reference_method`` / ``reference_params``: the suite's reference (fidelity columns compare
    against its output), None when the suite names none.
    """

    breakdown: bool = False
    reference_method: str | None = None
    reference_params: Any = None
    _input_key: Hashable = None
    _cache: dict[Hashable, Any] = field(default_factory=dict)

    def is_reference(self, point: Point) -> bool:
        """Whether ``point`` runs the suite's reference method with its reference parameters."""
        return (self.reference_method is not None and point.method == self.reference_method
                and point.method_params == self.reference_params)

    def inputs(self, key: Hashable, make: Callable[[], Any]) -> Any:
        """The input of ``key`` (made once); a new key first drops the previous input's cache."""
        if key != self._input_key:
            self._cache.clear()
            self._input_key = key
        return self._get(("inputs",), make)

    def reference(self, key: Hashable, make: Callable[[], Any]) -> Any:
        """The reference output ``key`` (e.g. model and scene) for the current input, made once."""
        return self._get(("reference", key), make)

    def derived(self, key: Hashable, make: Callable[[], Any]) -> Any:
        """Other data computed from the current input (calibration images, captured q/k/v ...)."""
        return self._get(("derived", key), make)

    def _get(self, key: Hashable, make: Callable[[], Any]) -> Any:
        if key not in self._cache:
            self._cache[key] = make()
        return self._cache[key]


@dataclass
class Bench:
    """What a workload hands the runner for one point.

    fn: the measured callable (no arguments); returns the output that ``evaluate`` reads.
    evaluate: maps one output of ``fn`` to quality/fidelity columns; run once, after timing.
    counters: work counters (``work_*`` columns) known without timing.
    breakdown: optional; runs ``fn`` once with per-phase timing and returns
        ``{phase_name: ms}`` (only called when the suite asks for a breakdown).
    info: provenance columns (``weights``, ``weights_sha256``: see :mod:`harness.store.columns`).
    """

    fn: Callable[[], Any]
    evaluate: Callable[[Any], dict[str, float]] | None = None
    counters: dict[str, float] = field(default_factory=dict)
    breakdown: Callable[[], dict[str, float]] | None = None
    info: dict[str, str] = field(default_factory=dict)


def weights_info(model: Any) -> dict[str, str]:
    """Provenance columns of a model built by a workload (see :func:`attach_weights`)."""
    w = getattr(model, "harness_weights", None)
    return {} if w is None else {"weights": w.label, "weights_sha256": w.sha256}


def attach_weights(model: Any, weights: Any) -> Any:
    """Remember on ``model`` which :class:`harness.models.weights.Weights` it was built with."""
    model.harness_weights = weights
    return model


class Workload(ABC, Generic[WP, Model]):
    """A named benchmark target. Subclasses set ``name`` and ``Params`` (the WP type) and register
    themselves; ``build_model`` returns a Model, which ``bench`` receives."""

    name: ClassVar[str]
    Params: ClassVar[type]
    doc: ClassVar[str] = ""

    def model_key(self, point: Point[WP, Any]) -> Hashable:
        """Points with equal keys share one built model (default: all workload params)."""
        return (self.name, point.workload_params, point.common.device, point.common.dtype, point.common.seed)

    @abstractmethod
    def build_model(self, point: Point[WP, Any]) -> Model:
        """Build (or load) the model for ``point``."""

    @abstractmethod
    def bench(self, model: Model, point: Point[WP, Any], ctx: RunContext) -> Bench:
        """Prepare inputs, apply the method, and return the callable to time."""

    def metrics(self) -> dict[str, MetricInfo]:
        """Every quality/fidelity/work column this workload may write."""
        return {}

    @classmethod
    def model_presets(cls) -> dict[str, dict[str, Any]]:
        """Named model shapes this workload offers (shown by ``harness list``): name -> summary."""
        return {}

    def check_paths(self, params: WP) -> list[str]:
        """Problems with local paths in ``params`` (checkpoint, dataset), as error strings.

        Called by the suite loader for every point before anything runs.
        """
        return []

    def check_point(self, params: WP, method: str, method_params: Any) -> list[str]:
        """Problems of one point that need the workload's and the method's parameters together
        (e.g. a layer index beyond the model preset), as error strings naming the parameter.

        Called by the suite loader for every point before anything runs; default: none.
        """
        return []
