"""GPU peak table: torch device names map to the right entry, flop_s units, dense (not sparse) sanity."""

from __future__ import annotations

import re

import pytest

from harness.measure.peaks import GPU_PEAKS, PEAK_DTYPES, GpuPeak, _match, _matching, gpu_peak

#: names torch.cuda.get_device_name() reports -> canonical entry name
REPORTED = {
    "NVIDIA H100 80GB HBM3": "NVIDIA H100 SXM5",
    "NVIDIA H100 PCIe": "NVIDIA H100 PCIe",
    "NVIDIA H100 NVL": "NVIDIA H100 NVL",
    "NVIDIA H200": "NVIDIA H200 SXM",
    "NVIDIA A100-SXM4-80GB": "NVIDIA A100 SXM4 80GB",
    "NVIDIA A100-SXM4-40GB": "NVIDIA A100 SXM4 40GB",
    "NVIDIA A100-PCIE-40GB": "NVIDIA A100 PCIe 40GB",
    "NVIDIA A100 80GB PCIe": "NVIDIA A100 PCIe 80GB",
    "NVIDIA L40S": "NVIDIA L40S",
    "NVIDIA L40": "NVIDIA L40",
    "NVIDIA L4": "NVIDIA L4",
    "NVIDIA A10": "NVIDIA A10",
    "NVIDIA A10G": "NVIDIA A10G",
    "Tesla T4": "NVIDIA T4",
    "Tesla V100-SXM2-16GB": "NVIDIA V100 SXM2",
    "Tesla V100-SXM2-32GB": "NVIDIA V100 SXM2",
    "Tesla V100-PCIE-32GB": "NVIDIA V100 PCIe",
    "NVIDIA GeForce RTX 4090": "NVIDIA GeForce RTX 4090",
    "NVIDIA GeForce RTX 3090": "NVIDIA GeForce RTX 3090",
    "NVIDIA RTX A6000": "NVIDIA RTX A6000",
    "NVIDIA RTX 6000 Ada Generation": "NVIDIA RTX 6000 Ada Generation",
}

#: names of other parts (or too vague to tell the form factor) that must not borrow a neighbour's peaks
NOT_IN_TABLE = [
    "NVIDIA Foo", "cpu", "", "   ",
    "NVIDIA H100",  # form factor unknown (SXM, PCIe and NVL differ)
    "NVIDIA A100",
    "NVIDIA H200 NVL",  # PCIe part, lower TDP than the SXM H200
    "NVIDIA GH200 480GB",
    "Tesla V100S-PCIE-32GB",
    "NVIDIA GeForce RTX 4090 D",
    "NVIDIA GeForce RTX 4090 Laptop GPU",
    "NVIDIA GeForce RTX 3090 Ti",
    "Quadro RTX 6000",
    "NVIDIA A40",
    "NVIDIA A30",
]


def entry(name: str) -> GpuPeak:
    (peak,) = [p for p in GPU_PEAKS if p.name == name]
    return peak


@pytest.mark.parametrize("reported, canonical", sorted(REPORTED.items()))
def test_reported_names_map_to_their_entry(reported: str, canonical: str) -> None:
    peak = gpu_peak(reported)
    assert peak is not None and peak.name == canonical
    # exactly one entry matches, so the answer cannot depend on the table's order
    assert [p.name for p in _matching(reported)] == [canonical]
    assert _match(reported, tuple(reversed(GPU_PEAKS))) is peak


@pytest.mark.parametrize("reported", sorted(REPORTED))
def test_matching_ignores_case_and_surrounding_whitespace(reported: str) -> None:
    assert gpu_peak(f"  {reported.upper()}\n") is gpu_peak(reported)


@pytest.mark.parametrize("name", NOT_IN_TABLE)
def test_unknown_names_give_none(name: str) -> None:
    assert gpu_peak(name) is None
    assert _matching(name) == ()


@pytest.mark.parametrize(
    "a, b",
    [
        ("NVIDIA L40", "NVIDIA L40S"),
        ("NVIDIA A10", "NVIDIA A10G"),
        ("NVIDIA A10", "NVIDIA A100-SXM4-40GB"),
        ("NVIDIA L4", "NVIDIA L40"),
        ("NVIDIA L4", "NVIDIA L40S"),
        ("NVIDIA RTX A6000", "NVIDIA RTX 6000 Ada Generation"),
        ("NVIDIA H100 PCIe", "NVIDIA H100 80GB HBM3"),
        ("NVIDIA H100 NVL", "NVIDIA H100 80GB HBM3"),
        ("NVIDIA H200", "NVIDIA H100 80GB HBM3"),
        ("NVIDIA A100-PCIE-40GB", "NVIDIA A100-SXM4-40GB"),
        ("NVIDIA A100 80GB PCIe", "NVIDIA A100-SXM4-80GB"),
        ("NVIDIA A100-SXM4-40GB", "NVIDIA A100-SXM4-80GB"),
        ("Tesla V100-PCIE-32GB", "Tesla V100-SXM2-32GB"),
    ],
)
def test_tricky_pairs_are_told_apart(a: str, b: str) -> None:
    pa, pb = gpu_peak(a), gpu_peak(b)
    assert pa is not None and pb is not None and pa.name != pb.name
    for table in (GPU_PEAKS, tuple(reversed(GPU_PEAKS))):
        assert _match(a, table) is pa and _match(b, table) is pb


def test_result_is_order_independent_for_every_permutation_we_try() -> None:
    rotations = [GPU_PEAKS[k:] + GPU_PEAKS[:k] for k in range(len(GPU_PEAKS))]
    for reported, canonical in REPORTED.items():
        for table in [*rotations, tuple(reversed(GPU_PEAKS))]:
            peak = _match(reported, table)
            assert peak is not None and peak.name == canonical


def test_a_name_matching_two_entries_is_refused_not_guessed() -> None:
    """A defensive guarantee: overlapping patterns yield None rather than whichever entry comes first."""
    l40s = entry("NVIDIA L40S")
    greedy = GpuPeak("greedy", (r"\bl40",), 1.0, None, None, None, None, 1.0, "test")
    assert _match("NVIDIA L40S", (l40s, greedy)) is None
    assert _match("NVIDIA L40S", (greedy, l40s)) is None


def test_table_is_well_formed() -> None:
    names = [p.name for p in GPU_PEAKS]
    assert len(set(names)) == len(names)
    reported_targets = set(REPORTED.values())
    assert set(names) == reported_targets  # every entry is reachable from a real device name
    for p in GPU_PEAKS:
        assert p.patterns and p.source.strip()
        for pattern in p.patterns:
            assert pattern == pattern.lower()
            re.compile(pattern)
        assert p.fp32_tflop_s > 0 and p.mem_gb_s > 0
        for v in (p.tf32_tflop_s, p.bf16_tflop_s, p.fp16_tflop_s, p.fp8_tflop_s):
            assert v is None or v > 0


def test_flop_s_picks_the_field_and_converts_to_flop_per_second() -> None:
    h100 = entry("NVIDIA H100 SXM5")
    # hand-checked: Hopper whitepaper dense BF16 989.4 TFLOP/s (datasheet 1,979 is with sparsity)
    assert h100.flop_s("bfloat16") == pytest.approx(989.4e12)
    assert h100.flop_s("float16") == pytest.approx(989.4e12)
    assert h100.flop_s("float8") == pytest.approx(1978.9e12)
    assert h100.flop_s("float32") == pytest.approx(66.9e12)
    assert h100.flop_s("float32", tf32=True) == pytest.approx(494.7e12)
    assert h100.bytes_s == pytest.approx(3.35e12)

    a100 = entry("NVIDIA A100 SXM4 80GB")
    assert a100.flop_s("float32") == pytest.approx(19.5e12)
    assert a100.flop_s("float32", tf32=True) == pytest.approx(156e12)
    assert a100.flop_s("bfloat16") == pytest.approx(312e12)
    assert a100.flop_s("float8") is None  # no FP8 on Ampere
    assert a100.bytes_s == pytest.approx(2039e9)

    l4 = entry("NVIDIA L4")  # datasheet prints only with-sparsity tensor figures: 242* -> 121 dense
    assert l4.flop_s("float16") == pytest.approx(121e12)
    assert l4.flop_s("float8") == pytest.approx(242.5e12)


@pytest.mark.parametrize("peak", GPU_PEAKS, ids=lambda p: p.name)
def test_flop_s_reads_each_field(peak: GpuPeak) -> None:
    fields = {"bfloat16": peak.bf16_tflop_s, "float16": peak.fp16_tflop_s, "float8": peak.fp8_tflop_s}
    for dtype, tflop_s in fields.items():
        got = peak.flop_s(dtype)
        assert got is None if tflop_s is None else got == pytest.approx(tflop_s * 1e12)
    assert peak.flop_s("float32") == pytest.approx(peak.fp32_tflop_s * 1e12)
    expected_tf32 = peak.fp32_tflop_s if peak.tf32_tflop_s is None else peak.tf32_tflop_s
    assert peak.flop_s("float32", tf32=True) == pytest.approx(expected_tf32 * 1e12)
    assert peak.bytes_s == pytest.approx(peak.mem_gb_s * 1e9)


def test_tf32_on_a_gpu_without_tf32_cores_stays_fp32() -> None:
    v100 = entry("NVIDIA V100 SXM2")
    assert v100.tf32_tflop_s is None
    assert v100.flop_s("float32", tf32=True) == v100.flop_s("float32") == pytest.approx(15.7e12)
    assert v100.flop_s("bfloat16") is None
    assert v100.flop_s("float16") == pytest.approx(125e12)


@pytest.mark.parametrize("dtype", ["float64", "fp32", "tf32", "bf16", "int8", "float8_e4m3fn", ""])
def test_unknown_dtype_raises_naming_the_allowed_ones(dtype: str) -> None:
    with pytest.raises(ValueError) as err:
        entry("NVIDIA H100 SXM5").flop_s(dtype)
    for allowed in PEAK_DTYPES:
        assert allowed in str(err.value)


def dense_problems(peak: GpuPeak) -> list[str]:
    """Ratios a dense peak table obeys: Tensor Cores run 1-16x the CUDA-core FP32 rate for 16-bit
    inputs, TF32 at most half that, FP8 twice it. A with-sparsity figure (2x dense) copied by mistake
    pushes a recent part past these bounds."""
    fp32, tf32, bf16, fp16, fp8 = (peak.fp32_tflop_s, peak.tf32_tflop_s, peak.bf16_tflop_s,
                                   peak.fp16_tflop_s, peak.fp8_tflop_s)
    problems = []
    for label, half in (("bf16", bf16), ("fp16", fp16)):
        if half is not None and not fp32 <= half <= 16 * fp32:
            problems.append(f"{label} {half} outside [fp32, 16 x fp32] = [{fp32}, {16 * fp32}]")
    if tf32 is not None:
        if not fp32 <= tf32 <= 8 * fp32:
            problems.append(f"tf32 {tf32} outside [fp32, 8 x fp32]")
        if bf16 is not None and tf32 > bf16:
            problems.append(f"tf32 {tf32} > bf16 {bf16}")
    if fp8 is not None:
        # 1% slack: the L4 datasheet's rounded 242* / 485* give 121 / 242.5 dense
        if bf16 is None or not bf16 <= fp8 <= 2 * bf16 * 1.01:
            problems.append(f"fp8 {fp8} outside [bf16, 2 x bf16] (bf16 {bf16})")
    if bf16 is not None and fp16 is not None and bf16 != fp16:
        problems.append(f"bf16 {bf16} != fp16 {fp16} (same Tensor Core rate on every part listed)")
    return problems


@pytest.mark.parametrize("peak", GPU_PEAKS, ids=lambda p: p.name)
def test_figures_are_dense_not_with_sparsity(peak: GpuPeak) -> None:
    assert dense_problems(peak) == []


def test_the_datasheets_with_sparsity_figures_would_be_caught() -> None:
    """H100 SXM5 as its datasheet prints it: FP32 67, TF32 989*, BF16/FP16 1,979*, FP8 3,958*."""
    sparse = GpuPeak("sparse H100", (r"^$",), 67.0, 989.0, 1979.0, 1979.0, 3958.0, 3350.0, "test")
    assert dense_problems(sparse)
    # Ratios cannot catch every slip (the L4's 242* is only 8 x FP32): hand-checked values cover those.
