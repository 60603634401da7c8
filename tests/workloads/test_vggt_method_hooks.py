"""The ``vggt`` workload's method hooks beyond a bare attention_fn (:class:`VGGTMethod`).

``calibrate(probe)`` runs the model on a calibration scene the point never evaluates on, with
the method's probe at every global layer, before timing; ``model_transform(model, run)`` gives
the point its own changed copy while the reference stays the unchanged model; ``work_counters``
become ``work_*`` columns. Two toy methods registered here exercise each hook through the
runner on vggt-tiny.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import pandas as pd
import pytest
import torch

from harness.models.seam import VGGTMethod, sdpa_attention
from harness.params import param
from harness.registry import register_method
from harness.run.options import RunOptions
from harness.run.runner import run_suite
from harness.store import columns as C
from harness.store import load
from harness.suite import SuiteError, parse_suite
from harness.workloads.vggt import VGGTWorkload

pytestmark = pytest.mark.usefixtures("one_thread")

TINY_DEPTH = 4

SUITE = """
name: hooks
workload: vggt
reference: vggt
fixed: {preset: vggt-tiny, frames: 2, height: 28, width: 42, scope: model}
methods:
  t_transform: {t_gain: 0.5}
  t_calib: {t_passes: 2}
  t_grad: {t_frames: 3}
  vggt: {}
timing: {warmup_n: 0, min_samples: 1, max_samples: 1, budget_s: 0.0}
metrics: {evaluate: true}
"""

SEEN: dict[str, list] = {}


@dataclass(frozen=True)
class CalibParams:
    t_passes: int = param(2, "calibration forwards", range=(1, None))


@dataclass(frozen=True)
class TransformParams:
    t_gain: float = param(0.5, "factor on the last global block's output projection", range=(0.0, None))


def make_calib(p: CalibParams) -> VGGTMethod:
    """Plain attention that refuses to run uncalibrated and records what the probe saw."""
    state: dict = {}

    def probe_fn(q, k, v, layout):
        SEEN["calib"].append((layout.layer, float(q.double().sum())))
        return sdpa_attention(q, k, v, layout)

    def calibrate(probe) -> None:
        for _ in range(p.t_passes):
            probe(probe_fn)
        state["done"] = True

    def attention_fn(q, k, v, layout):
        if not state:
            raise AssertionError("attention before calibration")
        SEEN["timed"].append((layout.layer, float(q.double().sum())))
        return sdpa_attention(q, k, v, layout)

    return VGGTMethod(attention_fn=attention_fn, calibrate=calibrate)


@dataclass(frozen=True)
class GradParams:
    t_frames: int = param(3, "frames of the gradient probe's scenes", range=(1, None))


def make_grad(p: GradParams) -> VGGTMethod:
    """Plain attention calibrated by two gradient probes (scenes 0 and 1); records what they saw."""

    def probe_fn(q, k, v, layout):
        SEEN["grad"].append((layout.layer, layout.frames, float(q.detach().double().sum())))
        return sdpa_attention(q, k, v, layout)

    def calibrate_grad(probe) -> None:
        for scene in (0, 1):
            calib = probe(probe_fn, frames=p.t_frames, scene=scene)
            grads = torch.autograd.grad(calib.losses["camera"], list(calib.qkv.values()))
            SEEN["grad_norms"].append([float(g.norm()) for g in grads])

    def attention_fn(q, k, v, layout):
        SEEN["grad_timed"].append((layout.layer, float(q.double().sum())))
        return sdpa_attention(q, k, v, layout)

    return VGGTMethod(attention_fn=attention_fn, calibrate_grad=calibrate_grad)


def make_transform(p: TransformParams) -> VGGTMethod:
    """A copy whose last global block's output projection is scaled; one calibration forward."""

    def transform(model, run):
        changed = copy.deepcopy(model)
        with torch.no_grad():
            changed.aggregator.global_blocks[-1].attn.proj.weight.mul_(p.t_gain)
        run(changed)
        return changed

    def counters(model, frames: int, tokens_per_frame: int) -> dict[str, float]:
        return {"toy_tokens": float(frames * tokens_per_frame)}

    return VGGTMethod(model_transform=transform, work_counters=counters)


@pytest.fixture(scope="module")
def rows(tmp_path_factory: pytest.TempPathFactory) -> pd.DataFrame:
    from harness import registry

    registry.load_builtins()
    saved = dict(registry._METHODS)
    register_method("t_calib", params=CalibParams, workloads=("vggt",))(make_calib)
    register_method("t_transform", params=TransformParams, workloads=("vggt",))(make_transform)
    register_method("t_grad", params=GradParams, workloads=("vggt",))(make_grad)
    SEEN.clear()
    SEEN.update(calib=[], timed=[], grad=[], grad_norms=[], grad_timed=[])
    try:
        out = tmp_path_factory.mktemp("hooks") / "run"
        run_suite(parse_suite(SUITE, source="hooks.yaml"), out, RunOptions(progress=False, argv=["t"]))
        yield load(out).points.set_index(C.METHOD)
    finally:
        registry._METHODS.clear()
        registry._METHODS.update(saved)


def test_calibration_runs_before_timing_on_every_global_layer_of_another_scene(rows):
    row = rows.loc["t_calib"]
    assert row[C.STATUS] == C.OK, row[C.ERROR]
    assert row["work_calib_forwards"] == 2 and row["work_calib_s"] > 0
    layers = [layer for layer, _ in SEEN["calib"]]
    assert layers == list(range(TINY_DEPTH)) * 2
    # the calibration scene is not the evaluated one: layer 0 sees other q
    calib_q0 = {s for layer, s in SEEN["calib"] if layer == 0}
    timed_q0 = {s for layer, s in SEEN["timed"] if layer == 0}
    assert len(calib_q0) == 1 and timed_q0 and calib_q0.isdisjoint(timed_q0)
    assert row["fid_token_cos"] == pytest.approx(1.0, abs=1e-6)  # plain attention after calibrating


def test_gradient_probes_run_their_own_scenes_with_gradients_before_timing(rows):
    row = rows.loc["t_grad"]
    assert row[C.STATUS] == C.OK, row[C.ERROR]
    assert row["work_calib_forwards"] == 2
    assert [(layer, frames) for layer, frames, _ in SEEN["grad"]] == [(i, 3) for i in range(TINY_DEPTH)] * 2
    # scene 0 and scene 1 are different scenes, and neither is the evaluated one (2 frames)
    scene_q0 = [s for layer, _, s in SEEN["grad"] if layer == 0]
    timed_q0 = {s for layer, s in SEEN["grad_timed"] if layer == 0}
    assert len(set(scene_q0)) == 2 and timed_q0.isdisjoint(scene_q0)
    # every global layer's qkv weight got a gradient of the camera error
    assert len(SEEN["grad_norms"]) == 2 and all(n > 0 for norms in SEEN["grad_norms"] for n in norms)
    assert row["fid_token_cos"] == pytest.approx(1.0, abs=1e-6)  # the probes left the model as it was


def test_a_transformed_model_is_compared_with_the_unchanged_reference(rows):
    row = rows.loc["t_transform"]
    assert row[C.STATUS] == C.OK, row[C.ERROR]
    # the reference is the untouched model: a scaled projection shows in the fidelity columns
    assert row["fid_token_cos"] < 0.9999
    assert row["fid_depth_rel_err"] > 0
    assert row["work_calib_forwards"] == 1
    assert row["work_toy_tokens"] == 2 * (5 + 2 * 3)  # 2 frames of 5 special + 2 x 3 patches


def test_the_transform_changed_a_copy_not_the_shared_model(rows):
    # vggt ran after t_transform on the same cached model: its output is still the reference's
    row = rows.loc["vggt"]
    assert row["fid_token_cos"] == pytest.approx(1.0, abs=1e-7)
    assert row["fid_depth_rel_err"] == pytest.approx(0.0, abs=1e-7)
    assert pd.isna(row["work_calib_s"])  # a method without hooks has no setup column


def test_setup_columns_are_described(rows):
    described = set(VGGTWorkload().metrics())
    assert {"work_calib_s", "work_calib_forwards"} <= described


def test_a_model_transform_is_refused_at_the_attention_scope_before_anything_runs(clean_registry):
    register_method("t_transform", params=TransformParams, workloads=("vggt",))(make_transform)
    text = SUITE.replace("scope: model", "scope: attention").replace("  t_calib: {t_passes: 2}\n", "")
    with pytest.raises(SuiteError) as err:
        parse_suite(text, source="hooks.yaml")
    (msg,) = err.value.problems
    assert msg.startswith("hooks.yaml, line ")
    assert "method 't_transform' changes the model's layers" in msg and "use scope: model" in msg
