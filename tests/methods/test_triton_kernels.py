"""The Triton merging kernels: compiled on a GPU machine, on CPU through Triton's interpreter
(tests/conftest.py sets TRITON_INTERPRET=1 before Triton is imported when there is no GPU).

They must agree with the torch path (assignments, merged tensors, method outputs) and with
independent loop references, on shapes that exercise every tile edge: several candidate tiles
with the best one in a later tile, feature widths that are not a multiple of the tile, ragged
src counts, non-contiguous inputs, empty slots and head groups.
"""

from __future__ import annotations

import pytest
import torch

from harness.methods import kernels

pytestmark = pytest.mark.skipif(not kernels.triton_importable(), reason="Triton is not installed")

DEV = "cuda" if torch.cuda.is_available() else "cpu"


@pytest.fixture
def tm(monkeypatch):
    """The kernel module, with HARNESS_MERGE_KERNELS=triton."""
    monkeypatch.setenv(kernels.ENV_VAR, "triton")
    return kernels.triton_merge()


def _torch_path(monkeypatch, fn, *args, **kw):
    monkeypatch.setenv(kernels.ENV_VAR, "torch")
    try:
        return fn(*args, **kw)
    finally:
        monkeypatch.setenv(kernels.ENV_VAR, "triton")


def _loop_best(src: torch.Tensor, cand: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Row by row, in float64: cosine against every candidate, first maximum."""
    R, ns, _ = src.shape
    score = torch.empty(R, ns, dtype=torch.float64)
    index = torch.empty(R, ns, dtype=torch.long)
    for r in range(R):
        for i in range(ns):
            a = src[r, i].double()
            best, arg = -2.0, -1
            for j in range(cand.shape[1]):
                b = cand[r, j].double()
                c = float(a @ b / (a.norm().clamp_min(1e-12) * b.norm().clamp_min(1e-12)))
                if c > best:
                    best, arg = c, j
            score[r, i], index[r, i] = best, arg
    return score, index


@pytest.mark.parametrize("R,ns,nc,D", [(2, 45, 70, 24), (1, 33, 31, 80), (3, 7, 1, 16)])
def test_best_match_equals_loop_reference_and_torch_path(tm, monkeypatch, R, ns, nc, D):
    from harness.methods.merging import best_match

    g = torch.Generator().manual_seed(R * 100 + nc)
    src = torch.randn(R, ns, D, generator=g)
    # candidate norms spread over two orders of magnitude: a dot product instead of the cosine
    # picks the longest candidate and fails
    cand = torch.randn(R, nc, D, generator=g) * torch.logspace(-1, 1, nc)[None, :, None]
    score, index = tm.best_match(src.to(DEV), cand.to(DEV))
    ref_score, ref_index = _loop_best(src, cand)
    assert torch.equal(index.cpu(), ref_index)
    torch.testing.assert_close(score.double().cpu(), ref_score, rtol=1e-5, atol=1e-5)
    # through the dispatching entry point, against the torch path
    t_score, t_index = _torch_path(monkeypatch, best_match, src, cand)
    k_score, k_index = best_match(src.to(DEV), cand.to(DEV))
    assert torch.equal(k_index.cpu(), t_index)
    torch.testing.assert_close(k_score.cpu(), t_score, rtol=1e-5, atol=1e-6)


def test_best_match_winner_in_a_later_tile_and_ties_keep_the_first(tm):
    D, nc = 16, 3 * tm.BLOCK_C + 5
    cand = torch.randn(1, nc, D, generator=torch.Generator().manual_seed(1))
    src = torch.stack([cand[0, nc - 2], cand[0, tm.BLOCK_C + 1], cand[0, 3]])[None] * 3.0
    cand[0, nc - 1] = cand[0, nc - 2] * 2.0  # an exact tie (same direction), later index
    cand[0, 2 * tm.BLOCK_C] = cand[0, 3] * 0.5  # a tie in a later tile
    score, index = tm.best_match(src.to(DEV), cand.to(DEV))
    assert index.tolist() == [[nc - 2, tm.BLOCK_C + 1, 3]]
    torch.testing.assert_close(score.cpu(), torch.ones(1, 3), rtol=1e-5, atol=1e-5)


def test_best_match_reads_strided_inputs(tm):
    """assign() hands the kernel slices of one gathered [R, nc + ns, D] tensor."""
    x = torch.randn(4, 50, 40, device=DEV)
    cand, src = x[:, :20], x[:, 20:]
    assert not src.is_contiguous()
    s1, i1 = tm.best_match(src, cand)
    s2, i2 = tm.best_match(src.contiguous(), cand.contiguous())
    assert torch.equal(i1, i2) and torch.equal(s1, s2)


def _loop_mean(x: torch.Tensor, slot_of: torch.Tensor, M: int) -> torch.Tensor:
    B, H, N, d = x.shape
    G = slot_of.shape[1]
    out = torch.zeros(B, H, M, d, dtype=torch.float64)
    for b in range(B):
        for h in range(H):
            g = h // (H // G)
            for m in range(M):
                members = (slot_of[b, g] == m).nonzero().flatten()
                if members.numel():
                    out[b, h, m] = x[b, h, members].double().mean(0)
    return out


@pytest.mark.parametrize("G,d", [(1, 16), (2, 24), (4, 80)])
def test_segment_mean_equals_loop_reference_and_torch_path(tm, monkeypatch, G, d):
    from harness.methods.merging import SlotMap

    B, H, N, M = 2, 4, 77, 40
    g = torch.Generator().manual_seed(G * 10 + d)
    x = torch.randn(B, H, N, d, generator=g)
    slot_of = torch.randint(0, M - 3, (B, G, N), generator=g)  # the last slots stay empty
    got = SlotMap(slot_of.to(DEV), M).merge(x.to(DEV)).cpu()
    torch.testing.assert_close(got.double(), _loop_mean(x, slot_of, M), rtol=1e-5, atol=1e-6)
    assert torch.all(got[:, :, M - 3:] == 0)
    ref = _torch_path(monkeypatch, SlotMap(slot_of, M).merge, x)
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-6)
    # bf16 input: float32 sums, bf16 result
    got16 = SlotMap(slot_of.to(DEV), M).merge(x.bfloat16().to(DEV)).cpu()
    assert got16.dtype == torch.bfloat16
    torch.testing.assert_close(got16.float(), _loop_mean(x.bfloat16().float(), slot_of, M).float(),
                               rtol=1e-2, atol=1e-2)


def _layout(S: int, P: int, ph: int, pw: int, start: int, x_norm: torch.Tensor):
    from harness.models.seam import AttentionLayout

    return AttentionLayout(S, P, ph, pw, start, x_norm=x_norm)


@pytest.mark.parametrize("method", ["httm", "httm_g1", "tome", "fastvggt"])
def test_methods_equal_on_both_paths(tm, monkeypatch, method):
    """HTTM (head-wise and uniform), ToMe and FastVGGT give the torch path's outputs."""
    from baselines.fastvggt import FastVGGTParams, make_fastvggt
    from baselines.tome import ToMeParams, make_tome
    from harness.methods.httm import HTTMParams, make_httm

    fns = {
        "httm": make_httm(HTTMParams(n_s=8, n_t=2, head_groups=4)),
        "httm_g1": make_httm(HTTMParams(n_s=8, n_t=2, head_groups=1)),
        "tome": make_tome(ToMeParams()),
        "fastvggt": make_fastvggt(FastVGGTParams()),
    }
    S, ph, pw, start, H, d = 3, 4, 5, 2, 4, 16
    P = start + ph * pw
    g = torch.Generator().manual_seed(5)
    base = torch.randn(1, H, 1, P, d, generator=g)
    q, k, v = ((base + 0.3 * torch.randn(1, H, S, P, d, generator=g)).reshape(1, H, S * P, d)
               for _ in range(3))
    x = torch.randn(1, S * P, 32, generator=g)  # FastVGGT matches on the block input
    calls = []
    real = tm.best_match
    monkeypatch.setattr(tm, "best_match", lambda *a: calls.append(1) or real(*a))
    ref = _torch_path(monkeypatch, fns[method], q, k, v, _layout(S, P, ph, pw, start, x))
    assert not calls
    got = fns[method](q.to(DEV), k.to(DEV), v.to(DEV), _layout(S, P, ph, pw, start, x.to(DEV))).cpu()
    assert calls  # the kernel path ran
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)


def test_kernel_choice_errors_and_resolution(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    monkeypatch.setenv(kernels.ENV_VAR, "auto")
    assert kernels.resolved("cpu") == "torch"
    assert kernels.resolved("cuda") == "triton"
    monkeypatch.setenv(kernels.ENV_VAR, "torch")
    assert kernels.resolved("cuda") == "torch"
    monkeypatch.setenv(kernels.ENV_VAR, "fused")
    with pytest.raises(kernels.KernelError, match="allowed: auto, torch, triton"):
        kernels.requested()
    monkeypatch.setenv(kernels.ENV_VAR, "triton")
    with pytest.raises(kernels.KernelError, match="needs CUDA tensors.*TRITON_INTERPRET=1"):
        kernels.use_triton(torch.zeros(1))
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert kernels.use_triton(torch.zeros(1))


EQUIVALENCE_MODULES = (
    "tests/methods/test_httm.py",
    "tests/methods/test_merging.py",
    "tests/baselines/test_baselines_merging.py",
)


def test_the_merging_equivalence_tests_pass_on_the_kernel_path():
    """Every HTTM / merging / ToMe / FastVGGT equivalence test, rerun with HARNESS_MERGE_KERNELS=triton
    (CPU tensors, so through the interpreter also on a GPU machine)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    env = os.environ | {kernels.ENV_VAR: "triton", "TRITON_INTERPRET": "1", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *EQUIVALENCE_MODULES]
    proc = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=1200)
    tail = proc.stdout[-3000:] + proc.stderr[-2000:]
    assert proc.returncode == 0, tail
    assert " passed" in proc.stdout and " failed" not in proc.stdout, tail


def test_env_records_the_kernels_and_a_changed_choice_makes_timings_incomparable(monkeypatch):
    from harness.measure.env import MERGE_KERNELS, comparable, fingerprint

    monkeypatch.setenv(kernels.ENV_VAR, "torch")
    fp = fingerprint(argv=[])
    assert fp[MERGE_KERNELS] == "torch" and fp["env_vars"][kernels.ENV_VAR] == "torch"
    other = fp | {MERGE_KERNELS: "triton"}
    assert any("merge kernels differ: torch vs triton" in d for d in comparable(fp, other))
    assert comparable(fp, dict(fp)) == []


@pytest.mark.usefixtures("one_thread", "clean_registry")
def test_a_run_with_an_impossible_kernel_choice_is_refused_before_anything_is_written(
        tmp_path, monkeypatch, capsys, fake_workload):
    from cli_runs import FAST, fake_suite_file

    from harness.cli import main

    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    suite = fake_suite_file(tmp_path, "sweep: {size: [2]}\nmethods: {plain: {}}\n")
    for value, msg in (("fused", "allowed: auto, torch, triton"), ("triton", "needs CUDA tensors")):
        monkeypatch.setenv(kernels.ENV_VAR, value)
        out = tmp_path / f"run-{value}"
        assert main(["run", suite, "--out", str(out), "--no-report", "-q", *FAST]) == 2
        err = capsys.readouterr().err
        assert msg in err and "Traceback" not in err
        assert not out.exists()


COMPILE = """
import sys
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from harness.methods import triton_merge as tm

ints = lambda *names: {n: "i32" for n in names}
for arch in (80, 90):
    target = GPUTarget("cuda", arch, 32)
    for dt, ieee in (("fp32", True), ("bf16", False)):
        sig = {"src_ptr": f"*{dt}", "cand_ptr": f"*{dt}", "score_ptr": "*fp32", "index_ptr": "*i64",
               **ints("ns", "nc", "D", "s_r", "s_s", "s_d", "c_r", "c_c", "c_d"),
               **dict.fromkeys(("BLOCK_S", "BLOCK_C", "BLOCK_D", "IEEE"), "constexpr")}
        k = triton.compile(ASTSource(fn=tm._best_match_kernel, signature=sig, constexprs={
            "BLOCK_S": tm.BLOCK_S, "BLOCK_C": tm.BLOCK_C, "BLOCK_D": 64, "IEEE": ieee}), target=target)
        print("best_match", arch, dt, "_best_match_kernel" in k.asm["ptx"], len(k.asm["cubin"]) > 0)
        sig = {"x_ptr": f"*{dt}", "slot_ptr": "*i64", "out_ptr": "*fp32",
               **ints("N", "M", "d", "H", "G", "x_b", "x_h", "x_n", "x_d"),
               **dict.fromkeys(("BLOCK_N", "BLOCK_D"), "constexpr")}
        k = triton.compile(ASTSource(fn=tm._segment_sum_kernel, signature=sig, constexprs={
            "BLOCK_N": tm.BLOCK_N, "BLOCK_D": 64}), target=target)
        print("segment_sum", arch, dt, "_segment_sum_kernel" in k.asm["ptx"], len(k.asm["cubin"]) > 0)
"""


def test_the_kernels_compile_to_cuda_binaries_without_a_gpu(tmp_path):
    """Triton's own compiler (front end, PTX, ptxas) for sm_80 and sm_90, fp32 and bf16, in a fresh
    cache: the compiled path, which the interpreter does not exercise, at least builds."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env |= {"TRITON_CACHE_DIR": str(tmp_path / "cache"), "PYTHONPATH": str(root)}
    proc = subprocess.run([sys.executable, "-c", COMPILE], cwd=root, env=env, capture_output=True, text=True,
                          timeout=600)
    if proc.returncode and "ptxas" in proc.stderr and "not found" in proc.stderr.lower():
        pytest.skip("this Triton install has no ptxas to build CUDA binaries with")
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.split("\n")
    assert sum(line.endswith("True True") for line in lines) == 8, proc.stdout
