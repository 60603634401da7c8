"""The ``swin`` workload: registration, model building and checkpoints, images, and a run end to end."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from PIL import Image

from harness import registry
from harness.models.swin import (
    CheckpointError,
    build_swin,
    load_checkpoint,
    read_image_folder,
    synthetic_images,
)
from harness.run.options import RunOptions
from harness.run.runner import run_suite
from harness.store import columns as C
from harness.store import load
from harness.suite import SuiteError, parse_suite
from harness.workloads.base import RunContext
from harness.workloads.swin import SwinParams, SwinWorkload

pytestmark = pytest.mark.usefixtures("one_thread")

SUITE = """
name: swin-test
workload: swin
reference: fp32
fixed: {model: swin_micro, img_size: 64, batch: 2, calib_images: 2, w_bits: 4, embed_bits: 8}
methods:
  fp32: {}
  uniform: {a_bits: [4, 8], ref_a_bits: 8}
  mixaq: {a_bits_high: 8, a_bits_low: 4, ratio: [0.0, 0.5]}
  sparsevit: {a_bits: 8, prune_ratio: 0.25}
timing: {warmup_n: 0, min_samples: 1, max_samples: 1, budget_s: 0.0}
metrics: {evaluate: true, breakdown: false}
"""


@pytest.fixture(scope="module")
def run_rows(tmp_path_factory: pytest.TempPathFactory):
    """One small run of every method; rows keyed by (method, a_bits, ratio)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        suite = parse_suite(SUITE)
        out = tmp_path_factory.mktemp("swin") / "run"
        run_suite(suite, out, RunOptions(progress=False, argv=["test"]))
    finally:
        torch.set_num_threads(n)
    df = load(out).points
    rows = {}
    for _, r in df.iterrows():
        key = {"fp32": "fp32", "uniform": f"uniform{r['a_bits']:.0f}", "sparsevit": "sparsevit"}.get(
            r["method"], f"mixaq{r.get('ratio')}"
        )
        rows[key] = r
    return rows


def test_workload_and_methods_are_registered_with_their_parameters():
    registry.load_builtins()
    assert registry.get_workload("swin") is SwinWorkload
    assert registry.method_names("swin") == ["fp32", "mixaq", "sparsevit", "uniform"]
    mix = registry.param_names(registry.get_method("swin", "mixaq").params)
    for name in (
        "w_bits",
        "a_bits_high",
        "a_bits_low",
        "ratio",
        "pair_ratios",
        "importance",
        "calib",
        "prune_ratio",
        "softmax_quant",
        "embed_bits",
    ):
        assert name in mix
    uni = registry.param_names(registry.get_method("swin", "uniform").params)
    assert {"w_bits", "a_bits", "act_calib", "softmax_quant", "embed_bits"} <= set(uni)
    clash = set(registry.param_names(SwinParams)) & (set(mix) | set(uni))
    assert not clash


def test_every_point_of_a_small_run_succeeds(run_rows):
    assert sorted(run_rows) == ["fp32", "mixaq0.0", "mixaq0.5", "sparsevit", "uniform4", "uniform8"]
    assert all(r[C.STATUS] == C.OK for r in run_rows.values()), {k: r[C.ERROR] for k, r in run_rows.items()}
    assert {(r[C.WEIGHTS], r[C.WEIGHTS_SHA256]) for r in run_rows.values()} == {("random", "")}


def test_mixaq_ratio_zero_reproduces_uniform_high_in_every_column(run_rows):
    a, b = run_rows["mixaq0.0"], run_rows["uniform8"]
    for col in (
        "work_bops",
        "work_macs",
        "work_bops_speedup",
        "fid_sqnr_db",
        "fid_logit_kl",
        "fid_sqnr_stage0_db",
    ):
        assert a[col] == b[col], col


def test_work_counters_order_the_methods(run_rows):
    u8, u4, mix, sv = run_rows["uniform8"], run_rows["uniform4"], run_rows["mixaq0.5"], run_rows["sparsevit"]
    assert u8["work_bops_speedup"] == 1.0 and u8["work_eq_act_bits"] == pytest.approx(8.0)
    assert u4["work_bops_speedup"] > mix["work_bops_speedup"] > 1.0
    assert 4.0 < mix["work_eq_act_bits"] < 8.0
    assert mix["work_low_window_frac"] > 0 and mix["work_macs"] == u8["work_macs"]
    assert sv["work_pruned_window_frac"] > 0 and sv["work_macs"] < u8["work_macs"]
    assert run_rows["fp32"]["work_bops"] > u8["work_bops"] * 10


def test_fidelity_columns_are_finite_and_the_reference_has_none(run_rows):
    fid = ["fid_logit_kl", "fid_top1_agree", "fid_sqnr_db", "fid_sqnr_high_db", "fid_sqnr_low_db"]
    fid += [f"fid_sqnr_stage{i}_db" for i in range(4)] + [f"fid_cos_stage{i}" for i in range(4)]
    for key in ("uniform8", "uniform4", "mixaq0.5", "sparsevit"):
        assert all(math.isfinite(run_rows[key][c]) for c in fid), key
    assert all(math.isnan(run_rows["fp32"][c]) for c in fid)
    assert run_rows["uniform8"]["fid_sqnr_db"] > run_rows["uniform4"]["fid_sqnr_db"]


def test_every_metric_column_written_is_described(run_rows):
    described = set(SwinWorkload().metrics())
    written = {c for c in next(iter(run_rows.values())).index if c.startswith(("fid_", "work_", "q_"))}
    assert written <= described


def test_check_paths_reports_missing_files(tmp_path):
    wl = SwinWorkload()
    assert wl.check_paths(SwinParams()) == []
    problems = wl.check_paths(SwinParams(checkpoint=str(tmp_path / "nope.pth")))
    assert len(problems) == 1 and "nope.pth" in problems[0] and "does not exist" in problems[0]
    assert "needs data_path" in wl.check_paths(SwinParams(images="folder"))[0]
    assert "does not exist" in wl.check_paths(SwinParams(images="folder", data_path=str(tmp_path / "x")))[0]
    assert "images is 'synthetic'" in wl.check_paths(SwinParams(data_path=str(tmp_path)))[0]


def test_img_size_the_patches_do_not_tile_is_refused():
    with pytest.raises(ValueError, match=r"img_size=66 is not a multiple of the Swin patch size 4"):
        SwinParams(img_size=66)
    assert SwinParams(img_size=68).img_size == 68


@pytest.mark.usefixtures("clean_registry")
def test_img_size_is_refused_at_load_at_its_line_once_for_every_method():
    text = ("name: s\nworkload: swin\nreference: fp32\nfixed: {model: swin_micro}\nsweep:\n"
            "  img_size: [64, 66]\nmethods:\n  fp32: {}\n  uniform: {}\n")
    with pytest.raises(SuiteError) as err:
        parse_suite(text, source="s.yaml")
    (msg,) = err.value.problems
    assert msg.startswith("s.yaml, line 6: invalid workload parameters: img_size=66 is not a multiple of the "
                          "Swin patch size 4, so the patches do not tile the image (allowed: multiples of 4; "
                          "nearest: 64 or 68)"), msg


def test_build_swin_keeps_explicit_attention_and_is_seeded():
    a, b = build_swin("swin_micro", 64, seed=3), build_swin("swin_micro", 64, seed=3)
    assert all(not m.fused_attn for m in a.modules() if hasattr(m, "fused_attn"))
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    with pytest.raises(ValueError, match="allowed: swin_t, swin_s, swin_b, swin_micro"):
        build_swin("swin_xl")


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_checkpoint_round_trip(tmp_path, suffix):
    src, dst = build_swin("swin_micro", 64, seed=1), build_swin("swin_micro", 64, seed=2)
    path = tmp_path / f"w{suffix}"
    if suffix == ".pth":
        torch.save({"model": src.state_dict()}, path)  # wrapped, as many training scripts save
    else:
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in src.state_dict().items()}, str(path))
    load_checkpoint(dst, path)
    x = synthetic_images(1, 64)
    with torch.no_grad():
        assert torch.equal(src(x), dst(x))


def test_checkpoint_in_the_original_swin_layout_loads(tmp_path):
    src = build_swin("swin_micro", 64, seed=1)
    orig = {}
    for k, v in src.state_dict().items():  # original: downsample at the end of the previous stage
        if ".downsample." in k:
            i = int(k.split(".")[1])
            k = k.replace(f"layers.{i}.downsample", f"layers.{i - 1}.downsample")
        orig[k.replace("head.fc.", "head.")] = v
    torch.save(orig, tmp_path / "orig.pth")
    dst = build_swin("swin_micro", 64, seed=2, checkpoint=tmp_path / "orig.pth")
    assert all(torch.equal(x, y) for x, y in zip(src.state_dict().values(), dst.state_dict().values()))


def test_checkpoint_mismatch_lists_the_keys(tmp_path):
    sd = build_swin("swin_micro", 64).state_dict()
    sd.pop("norm.weight")
    sd["extra.bias"] = torch.zeros(1)
    torch.save(sd, tmp_path / "bad.pt")
    with pytest.raises(
        CheckpointError, match=r"1 missing keys \[norm.weight\]; 1 unexpected keys \[extra.bias\]"
    ):
        load_checkpoint(build_swin("swin_micro", 64), tmp_path / "bad.pt")
    with pytest.raises(FileNotFoundError, match="not found"):
        load_checkpoint(build_swin("swin_micro", 64), tmp_path / "missing.pth")


def test_synthetic_images_are_seeded_and_structured():
    a, b, c = synthetic_images(2, 112, 0), synthetic_images(2, 112, 0), synthetic_images(2, 112, 1)
    assert a.shape == (2, 3, 112, 112) and torch.equal(a, b) and not torch.equal(a, c)
    std = a[0].unfold(1, 14, 14).unfold(2, 14, 14).std(dim=(-1, -2)).mean(0)  # per 14 x 14 patch
    assert float(std.max()) > 10 * float(std.min())  # textured objects vs smooth background


def _image_folder(root: Path) -> Path:
    for label, cls in enumerate(["n01", "n02"]):
        (root / cls).mkdir(parents=True)
        for i in range(3):
            colour = (255 * label, 40 * i, 128)
            Image.new("RGB", (80, 60), colour).save(root / cls / f"{i}.png")
    return root


def test_image_folder_reader_labels_by_sorted_class_folder(tmp_path):
    root = _image_folder(tmp_path / "imgs")
    images, labels = read_image_folder(root, 64)
    assert images.shape == (6, 3, 64, 64) and labels.tolist() == [0, 0, 0, 1, 1, 1]
    _, last = read_image_folder(root, 64, [-1])
    assert last.tolist() == [1]


def test_folder_images_give_top1_and_disjoint_calibration(tmp_path):
    root = _image_folder(tmp_path / "imgs")
    suite = parse_suite(
        f"name: t\nworkload: swin\nreference: fp32\nfixed: {{model: swin_micro, img_size: 64, batch: 2, "
        f"images: folder, data_path: '{root}', calib_images: 2, eval_images: 4}}\n"
        "methods: {fp32: {}, uniform: {a_bits: 8}}\n"
    )
    wl = SwinWorkload()
    ctx = RunContext(reference_method="fp32", reference_params=suite.points()[0].method_params)
    rows = []
    for point in suite.points():
        bench = wl.bench(wl.build_model(point), point, ctx)
        rows.append(bench.evaluate(bench.fn()))
    assert 0.0 <= rows[0]["q_top1"] <= 1.0 and "fid_sqnr_db" not in rows[0]
    assert "q_top1" in rows[1] and "fid_sqnr_db" in rows[1]
    bad = parse_suite(suite_text_with(root, eval_images=5))
    with pytest.raises(ValueError, match="not enough for 5 evaluated \\+ 2 calibration images"):
        wl.bench(wl.build_model(bad.points()[0]), bad.points()[0], RunContext())


def suite_text_with(root: Path, eval_images: int) -> str:
    return (
        f"name: t\nworkload: swin\nfixed: {{model: swin_micro, img_size: 64, batch: 2, images: folder, "
        f"data_path: '{root}', calib_images: 2, eval_images: {eval_images}}}\nmethods: {{uniform: {{}}}}\n"
    )


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_points_run_and_ratio_zero_matches_uniform_exactly():
    suite = parse_suite(
        "name: t\nworkload: swin\nreference: fp32\nfixed: {model: swin_micro, img_size: 112, batch: 2, "
        "calib_images: 2, device: cuda}\nmethods: {fp32: {}, uniform: {a_bits: 8}, "
        "mixaq: {a_bits_high: 8, a_bits_low: 4, ratio: [0.0, 0.5], importance: [l2, random]}}\n"
    )
    wl = SwinWorkload()
    ctx = RunContext(reference_method="fp32", reference_params=suite.points()[0].method_params)
    model = wl.build_model(suite.points()[0])
    outs, rows = {}, {}
    for point in suite.points():
        bench = wl.bench(model, point, ctx)
        out = bench.fn()
        key = (point.method, point.params.get("ratio"), point.params.get("importance"))
        outs[key], rows[key] = out, {**bench.counters, **bench.evaluate(out)}
    assert torch.equal(outs[("mixaq", 0.0, "l2")], outs[("uniform", None, None)])
    assert rows[("mixaq", 0.5, "l2")]["work_bops_speedup"] > 1.0
    assert all(math.isfinite(v) for r in rows.values() for v in r.values())
