"""The ``vggt`` workload end to end: suite -> runner -> run directory, on the vggt-tiny preset.

One small run (module fixture) covers every method in both scopes plus a few extra points
(the last layer, local checkpoints, a tiny 7-Scenes folder, HTTM at the paper's ratios on
larger frames); the tests read its rows. Parameters the preset cannot take (a layer beyond its
depth, head groups that do not divide its heads, frames not a multiple of its patch size) are
refused at load. Random weights: the ``q_*`` columns are only checked
for presence and finiteness, the ``fid_*`` and ``work_*`` columns for values.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

import harness.workloads.vggt  # noqa: F401 - registers the workload and its methods
from harness.models.vggt import build_vggt, save_checkpoint
from harness.run.options import RunOptions
from harness.run.runner import run_suite
from harness.store import columns as C
from harness.store import load
from harness.suite import SuiteError, SuiteSpec, parse_suite, resolve
from harness.workloads.base import RunContext
from harness.workloads.vggt import VGGTParams, VGGTWorkload

pytestmark = pytest.mark.usefixtures("one_thread")

METHODS = ("vggt", "httm", "tome", "fastvggt")
SCOPES = ("model", "attention")
TINY_DEPTH = 4  # global layers of the vggt-tiny preset
SEVEN_SCENES_HW = (24, 32)  # 7-Scenes aspect 3:4; width 42 -> model input 28 x 42

SUITE = """
name: vggt-test
workload: vggt
reference: vggt
fixed: {{preset: vggt-tiny, frames: 2, height: 28, width: 42}}
sweep: {{scope: [model, attention]}}
methods:
  vggt: {{}}
  httm: {{query_merge: 0.0, outlier_frac: 0.0, kv_merge: 0.0, head_groups: 4, n_s: 16, n_t: 2}}
  tome: {{tome_ratio: 0.5}}
  fastvggt: {{fv_ratio: 1.0}}
include:
  # HTTM at the paper's main ratios on frames with enough patches (5 special + 64 patch tokens)
  - {{method: httm, scope: model, height: 112, width: 112,
     query_merge: 0.9, outlier_frac: 0.1, kv_merge: 0.7, head_groups: 4}}
  # the last global layer of vggt-tiny (depth 4; layer 4 is refused at load)
  - {{method: vggt, scope: attention, layer: 3}}
  - {{method: vggt, scope: model, checkpoint: "{same_ckpt}"}}
  - {{method: vggt, scope: model, checkpoint: "{other_ckpt}"}}
  - {{method: vggt, scope: model, data: 7scenes, data_path: "{scenes}", data_scene: chess,
     stride: 1, frames: 2, width: 42}}
timing: {{warmup_n: 0, min_samples: 1, max_samples: 1, budget_s: 0.0}}
metrics: {{evaluate: true, breakdown: true}}
"""

MODEL_FIDELITY = ("fid_depth_rel_err", "fid_points_rel_err", "fid_pose_rot_deg", "fid_pose_trans_rel",
                  "fid_token_cos")
ATTENTION_FIDELITY = ("fid_attn_rel_err", "fid_attn_cos")
QUALITY = ("q_depth_abs_rel", "q_depth_delta1", "q_pose_rre_deg", "q_pose_rte_deg", "q_pose_auc_30",
           "q_pose_ate", "q_acc", "q_comp", "q_nc")


# ----------------------------------------------------------------------------- fixtures


def write_7scenes(root: Path, scene: str = "chess", seq: str = "seq-01", n: int = 3) -> Path:
    """A tiny 7-Scenes sequence: colour PNGs, uint16 millimetre depth (0 = invalid), 4x4 poses
    (camera-to-world) of a camera sliding along x."""
    h, w = SEVEN_SCENES_HW
    folder = root / scene / seq
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    rows = np.arange(h, dtype=np.int64)[:, None]
    for i in range(n):
        stem = f"frame-{i:06d}"
        colour = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
        Image.fromarray(colour).save(folder / f"{stem}.color.png")
        depth = np.broadcast_to(1500 + 20 * rows + 10 * i, (h, w)).astype(np.uint16).copy()
        depth[0, 0] = 0
        Image.fromarray(depth).save(folder / f"{stem}.depth.png")
        pose = np.eye(4)
        pose[0, 3] = 0.05 * i
        np.savetxt(folder / f"{stem}.pose.txt", pose)
    return root


def _save_tiny(path: Path, seed: int) -> Path:
    torch.manual_seed(seed)
    return save_checkpoint(build_vggt("vggt-tiny"), path)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Local inputs of the suite: checkpoints with the points' seed (0) and another (1), a 7-Scenes root."""
    root = tmp_path_factory.mktemp("vggt-files")
    return {
        "same_ckpt": _save_tiny(root / "tiny-seed0.safetensors", seed=0),
        "other_ckpt": _save_tiny(root / "tiny-seed1.pt", seed=1),
        "scenes": write_7scenes(root / "7scenes"),
    }


@pytest.fixture(scope="module")
def points(files: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> pd.DataFrame:
    """Rows of one run of SUITE, in the order the points ran."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        suite = parse_suite(SUITE.format(**{k: str(v) for k, v in files.items()}), source="vggt-test.yaml")
        out = tmp_path_factory.mktemp("vggt-run") / "run"
        run_suite(suite, out, RunOptions(progress=False, argv=["test"]))
    finally:
        torch.set_num_threads(n)
    return load(out).points


def pick(df: pd.DataFrame, **where) -> pd.Series:
    """The one row matching every ``column=value``."""
    mask = pd.Series(True, index=df.index)
    for col, val in where.items():
        mask &= df[col] == val
    rows = df[mask]
    assert len(rows) == 1, f"{len(rows)} rows match {where}"
    return rows.iloc[0]


def sweep_row(df: pd.DataFrame, method: str, scope: str) -> pd.Series:
    """A point of the main grid (synthetic 28 x 42, random weights, layer 0)."""
    return pick(df, method=method, scope=scope, data="synthetic", checkpoint="", height=28, layer=0)


# ----------------------------------------------------------------------------- tests


@pytest.mark.parametrize("scope", SCOPES)
@pytest.mark.parametrize("method", METHODS)
def test_every_method_runs_in_both_scopes_with_its_columns(points, method, scope):
    row = sweep_row(points, method, scope)
    assert row[C.STATUS] == C.OK, row[C.ERROR]
    assert row[C.LAT_MEDIAN] > 0 and row[C.N_SAMPLES] == 1
    assert 0 < row["work_tokens_q_frac"] <= 1 and 0 < row["work_tokens_kv_frac"] <= 1
    assert row["work_attn_flops"] > 0
    fid = MODEL_FIDELITY if scope == "model" else ATTENTION_FIDELITY
    for col in fid + (QUALITY if scope == "model" else ()):
        assert math.isfinite(row[col]), col
    if scope == "attention":  # one layer's attention core: no task outputs to score
        assert all(pd.isna(row[col]) for col in QUALITY + MODEL_FIDELITY)


def test_every_metric_column_written_is_described(points):
    written = {c for c in points.columns if c.startswith(("q_", "fid_", "work_"))}
    assert written and written <= set(VGGTWorkload().metrics())


@pytest.mark.parametrize("scope", SCOPES)
def test_reference_method_agrees_perfectly_with_itself(points, scope):
    row = sweep_row(points, "vggt", scope)
    assert row["work_tokens_q_frac"] == 1.0 and row["work_tokens_kv_frac"] == 1.0
    if scope == "model":
        assert row["fid_depth_rel_err"] == 0.0 and row["fid_points_rel_err"] == 0.0
        assert row["fid_pose_rot_deg"] == 0.0
        assert row["fid_token_cos"] == pytest.approx(1.0, abs=1e-6)
    else:
        assert row["fid_attn_rel_err"] == 0.0
        assert row["fid_attn_cos"] == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("scope", SCOPES)
def test_httm_without_merging_reproduces_the_reference_and_keeps_every_token(points, scope):
    row = sweep_row(points, "httm", scope)
    assert (row["query_merge"], row["outlier_frac"], row["kv_merge"]) == (0.0, 0.0, 0.0)
    assert row["work_tokens_q_frac"] == 1.0 and row["work_tokens_kv_frac"] == 1.0
    assert row["work_pad_q_frac"] == 0.0
    if scope == "model":
        assert row["fid_depth_rel_err"] < 1e-4
        assert row["fid_token_cos"] == pytest.approx(1.0, abs=1e-5)
    else:
        assert row["fid_attn_rel_err"] < 1e-5


def test_httm_at_the_paper_setting_keeps_fewer_tokens(points):
    row = pick(points, method="httm", scope="model", height=112)
    assert row[C.STATUS] == C.OK, row[C.ERROR]
    assert (row["query_merge"], row["outlier_frac"], row["kv_merge"]) == (0.9, 0.1, 0.7)
    assert row["work_tokens_q_frac"] < 0.5 and row["work_tokens_kv_frac"] < 0.5
    assert 0 < row["fid_token_cos"] < 1 and row["fid_depth_rel_err"] > 0  # merging changes the output
    assert row["work_match_flops"] > 0


@pytest.mark.parametrize("scope", SCOPES)
def test_breakdown_gives_httm_its_match_aggregate_and_attention_phases(points, scope):
    row = sweep_row(points, "httm", scope)
    for col in ("bd_match_ms", "bd_aggregate_ms", "bd_attention_ms"):
        assert math.isfinite(row[col]) and row[col] >= 0, col
    plain = sweep_row(points, "vggt", scope)
    assert math.isfinite(plain["bd_attention_ms"]) and pd.isna(plain["bd_match_ms"])  # nothing to match


def test_last_layer_runs_and_every_point_is_ok(points):
    last = pick(points, method="vggt", scope="attention", layer=TINY_DEPTH - 1)
    assert last[C.STATUS] == C.OK, last[C.ERROR]
    assert (points[C.STATUS] == C.OK).all(), points.loc[points[C.STATUS] != C.OK, C.ERROR].tolist()


PRESET_LIMITS = """\
name: t
workload: vggt
fixed:
  preset: vggt-tiny
  scope: attention
  layer: 4
  height: 30
sweep:
  width: [42, 50]
methods:
  vggt: {}
  httm: {head_groups: 3}
"""


def test_parameters_the_preset_cannot_take_are_refused_at_load_each_at_its_line():
    with pytest.raises(SuiteError) as err:
        parse_suite(PRESET_LIMITS, source="t.yaml")
    found = err.value.problems
    assert len(found) == 4, found
    height, layer, groups, both = found
    assert height.startswith("t.yaml, line 7: invalid workload parameters: height=30 is not a multiple of "
                             "the patch size 14 of preset 'vggt-tiny' (allowed: multiples of 14; nearest: "
                             "height 28 or 42)")
    assert layer.startswith("t.yaml, line 6: layer=4 but preset 'vggt-tiny' has 4 global layers "
                            "(allowed: 0..3;")
    assert groups == ("t.yaml, line 12: head_groups=3 of method 'httm' must divide the head count of preset "
                      "'vggt-tiny', H=4 (allowed: 1, 2, 4)")
    assert both.startswith("t.yaml, line 7: invalid workload parameters: height=30 and width=50 are not "
                           "multiples of the patch size 14")
    assert "nearest: height 28 or 42; width 42 or 56" in both


def test_layer_is_checked_only_where_it_is_timed_and_via_set_at_the_option():
    ok = PRESET_LIMITS.replace("height: 30", "height: 28").replace("[42, 50]", "[42]").replace(
        "head_groups: 3", "head_groups: 2")
    assert len(parse_suite(ok, overrides=["scope=model"]).points()) == 2  # layer is not used there
    with pytest.raises(SuiteError) as err:
        parse_suite(ok, source="t.yaml", overrides=["layer=9"])
    (msg,) = err.value.problems
    assert msg.startswith("--set layer=9: layer=9 but preset 'vggt-tiny' has 4 global layers")


def test_vggt_params_refuse_frames_that_the_patches_do_not_tile():
    with pytest.raises(ValueError, match=r"width=50 is not a multiple of the patch size 14"):
        VGGTParams(preset="vggt-tiny", height=28, width=50)
    assert VGGTParams(height=28, width=42).width == 42


def test_layer_beyond_the_preset_still_fails_at_run_time_when_no_loader_checked_it():
    """The runtime check stays as the last line of defence (a point built without the loader)."""
    spec = SuiteSpec(name="t", workload="vggt", methods={"vggt": {}})
    point = resolve(spec, "vggt", {"preset": "vggt-tiny", "scope": "attention", "layer": 4, "frames": 1,
                                   "height": 28, "width": 28})
    wl = VGGTWorkload()
    refused = r"layer=4 but preset 'vggt-tiny' has 4 global layers \(allowed: 0..3\)"
    with pytest.raises(ValueError, match=refused):
        wl.bench(wl.build_model(point), point, RunContext())


def test_nonexistent_checkpoint_is_reported_before_anything_runs(tmp_path):
    missing = tmp_path / "nowhere" / "model.pt"
    text = (f"name: t\nworkload: vggt\nfixed: {{preset: vggt-tiny, checkpoint: '{missing}'}}\n"
            "methods: {vggt: {}}\n")
    with pytest.raises(SuiteError) as err:
        parse_suite(text)
    assert str(missing) in str(err.value) and "does not exist" in str(err.value)


def test_missing_dataset_folder_is_reported_before_anything_runs(tmp_path):
    missing = tmp_path / "7scenes"
    text = (f"name: t\nworkload: vggt\nfixed: {{preset: vggt-tiny, data: 7scenes, data_path: '{missing}', "
            "data_scene: chess}\nmethods: {vggt: {}}\n")
    with pytest.raises(SuiteError) as err:
        parse_suite(text)
    assert str(missing) in str(err.value) and "does not exist" in str(err.value)


def test_dataset_input_without_data_path_is_reported(tmp_path):
    text = "name: t\nworkload: vggt\nfixed: {preset: vggt-tiny, data: nrgbd}\nmethods: {vggt: {}}\n"
    with pytest.raises(SuiteError, match="data: nrgbd needs data_path"):
        parse_suite(text)


def test_checkpoint_of_the_same_seed_reproduces_the_random_model_exactly(points, files):
    loaded = pick(points, checkpoint=str(files["same_ckpt"]))
    random_init = sweep_row(points, "vggt", "model")
    assert loaded[C.STATUS] == C.OK, loaded[C.ERROR]
    for col in QUALITY:
        assert loaded[col] == random_init[col], col


def test_checkpoint_of_another_seed_changes_the_outputs(points, files):
    loaded = pick(points, checkpoint=str(files["other_ckpt"]))
    random_init = sweep_row(points, "vggt", "model")
    assert loaded[C.STATUS] == C.OK, loaded[C.ERROR]
    assert loaded["q_depth_abs_rel"] != random_init["q_depth_abs_rel"]
    assert loaded["fid_depth_rel_err"] == 0.0  # its own reference: the same loaded weights


def test_7scenes_folder_runs_through_the_workload(points, files):
    row = pick(points, data="7scenes")
    assert row[C.STATUS] == C.OK, row[C.ERROR]
    assert (row["data_path"], row["data_scene"], row["stride"], row["frames"]) == (
        str(files["scenes"]), "chess", 1, 2)
    assert math.isfinite(row["q_depth_abs_rel"]) and row["q_depth_abs_rel"] >= 0
    assert 0 <= row["q_depth_delta1"] <= 1
    assert math.isfinite(row["q_pose_ate"]) and math.isfinite(row["q_acc"])


# ----------------------------------------------------------------------------- held-out scenes


SCENES_SUITE = """
name: vggt-scenes
workload: vggt
reference: vggt
fixed: {{preset: vggt-tiny, frames: 2, height: 28, width: 42, scope: model, checkpoint: "{ckpt}"}}
methods:
  vggt: {{}}
  tome: {{tome_ratio: 0.5}}
include:
  - {{method: tome, scene_seed: [41, 42, 43], eval_scenes: 1}}
  - {{method: tome, scene_seed: 41, eval_scenes: 3}}
timing: {{warmup_n: 0, min_samples: 1, max_samples: 1, budget_s: 0.0}}
metrics: {{evaluate: true, breakdown: false}}
"""


@pytest.fixture(scope="module")
def scene_points(files: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> pd.DataFrame:
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        suite = parse_suite(SCENES_SUITE.format(ckpt=files["same_ckpt"]), source="vggt-scenes.yaml")
        out = tmp_path_factory.mktemp("vggt-scenes") / "run"
        run_suite(suite, out, RunOptions(progress=False, argv=["test"]))
    finally:
        torch.set_num_threads(n)
    return load(out).points


def test_eval_scenes_averages_quality_and_fidelity_over_consecutive_scene_seeds(scene_points):
    """eval_scenes 3 from seed 41 == the mean of seeds 41, 42, 43 run one by one (not seed 41
    three times, not the point's seed, not a median)."""
    singles = [pick(scene_points, method="tome", scene_seed=s, eval_scenes=1) for s in (41, 42, 43)]
    avg = pick(scene_points, method="tome", scene_seed=41, eval_scenes=3)
    for col in ("q_depth_abs_rel", "q_pose_auc_30", "q_acc", "fid_depth_rel_err", "fid_pose_rot_deg"):
        values = [r[col] for r in singles]
        assert len(set(values)) > 1, col  # the three scenes differ, so the average is informative
        assert avg[col] == pytest.approx(sum(values) / 3, rel=1e-6), col
    # the timed scene is the first one: its token cosine is that of seed 41 alone
    assert avg["fid_token_cos"] == pytest.approx(singles[0]["fid_token_cos"], rel=1e-9)


def test_scene_seed_minus_one_follows_the_point_seed(scene_points):
    plain = pick(scene_points, method="tome", scene_seed=-1, eval_scenes=1)
    seeded = pick(scene_points, method="tome", scene_seed=41, eval_scenes=1)
    assert plain["q_depth_abs_rel"] != seeded["q_depth_abs_rel"]


def test_every_row_records_its_weights_label_and_hash(scene_points, files):
    from harness.train.card import file_sha256

    sha = file_sha256(files["same_ckpt"])[:16]
    assert set(scene_points[C.WEIGHTS]) == {files["same_ckpt"].name}
    assert set(scene_points[C.WEIGHTS_SHA256]) == {sha}


def test_eval_scenes_is_refused_for_datasets_before_anything_runs():
    bad = SCENES_SUITE.format(ckpt="").replace("include:", "include:\n  - {method: vggt, eval_scenes: 2, "
                                               "scope: attention}\n  ")
    with pytest.raises(SuiteError, match="eval_scenes: 2 averages synthetic scenes of scope: model"):
        parse_suite(bad, source="bad.yaml")
