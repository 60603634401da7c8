"""Vendor peak throughput and memory bandwidth of common NVIDIA GPUs, for "fraction of peak" and rooflines.

Every figure is the vendor's *dense* peak: NVIDIA datasheets since Ampere print Tensor Core figures
*with 2:4 structured sparsity* (footnote "* With sparsity"), which is twice what a dense GEMM can reach;
those are halved here and the entry says so. Units: TFLOP/s (1e12 FLOP/s, one FMA = 2 FLOP) and
memory bandwidth in GB/s (1e9 bytes/s, decimal, as the vendor quotes it).

Fields per GPU:

* ``fp32_tflop_s``: FP32 on the CUDA cores (non-tensor).
* ``tf32_tflop_s``: TF32 Tensor Core (what float32 matmuls use when torch's ``allow_tf32`` is on);
  None before Ampere.
* ``bf16_tflop_s`` / ``fp16_tflop_s``: Tensor Core with **FP32 accumulate** (what torch's GEMMs use).
  GeForce cards run FP32-accumulate at half the FP16-accumulate rate; the FP32-accumulate figure is the
  one stored (noted per entry). None where the GPU has no such Tensor Core path (no BF16 before Ampere).
* ``fp8_tflop_s``: FP8 Tensor Core (Ada / Hopper), FP32 accumulate where the vendor distinguishes;
  None before Ada / Hopper.
* ``mem_gb_s``: peak DRAM bandwidth.

Verification: the figures were checked against copies of the NVIDIA datasheets / whitepapers found while
writing this table; entries say per figure where that was not possible ("unverified"). B200 / GB200 are
left out: no NVIDIA source with per-GPU dense figures could be checked (secondary sources disagree).

:func:`gpu_peak` maps the name ``torch.cuda.get_device_name()`` reports to its entry. Patterns are
anchored or word-bounded so that no name matches two entries (L40 vs L40S, A10 vs A10G vs A100, L4 vs
L40, H100 PCIe vs SXM, RTX A6000 vs RTX 6000 Ada); a name matching no entry, or (defensively) several,
gives None, so the result never depends on the table's order.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

#: dtype names :meth:`GpuPeak.flop_s` accepts (the harness's compute dtypes plus float8)
PEAK_DTYPES: tuple[str, ...] = ("float32", "bfloat16", "float16", "float8")
TFLOP = 1e12
GB = 1e9


@dataclass(frozen=True)
class GpuPeak:
    """Dense vendor peaks of one GPU model (see the module docstring for the fields' meaning)."""

    name: str  # canonical, e.g. "NVIDIA H100 SXM5"
    patterns: tuple[str, ...]  # lowercase regexes searched in torch.cuda.get_device_name().lower()
    fp32_tflop_s: float
    tf32_tflop_s: float | None
    bf16_tflop_s: float | None
    fp16_tflop_s: float | None
    fp8_tflop_s: float | None
    mem_gb_s: float
    source: str

    def flop_s(self, dtype: str, tf32: bool = False) -> float | None:
        """Peak FLOP/s (not TFLOP/s) for a dtype name "float32" | "bfloat16" | "float16" | "float8".

        float32 uses the tf32 tensor figure when ``tf32`` is True (torch ``allow_tf32``), else the fp32
        one; on a GPU without TF32 Tensor Cores (pre-Ampere) ``allow_tf32`` changes nothing, so float32
        stays the fp32 figure there. None when the GPU has no such figure (e.g. bfloat16 on a V100).
        Raises ValueError for any other dtype name.
        """
        if dtype not in PEAK_DTYPES:
            raise ValueError(f"unknown dtype {dtype!r} for a peak; allowed: {', '.join(PEAK_DTYPES)}")
        if dtype == "float32":
            tflop_s = self.tf32_tflop_s if tf32 and self.tf32_tflop_s is not None else self.fp32_tflop_s
        else:
            tflop_s = {"bfloat16": self.bf16_tflop_s, "float16": self.fp16_tflop_s,
                       "float8": self.fp8_tflop_s}[dtype]
        return None if tflop_s is None else tflop_s * TFLOP

    @property
    def bytes_s(self) -> float:
        """Peak memory bandwidth in bytes/s."""
        return self.mem_gb_s * GB


_H100_DS = "NVIDIA H100 Tensor Core GPU datasheet (https://www.nvidia.com/en-us/data-center/h100/)"
_A100_DS = ("NVIDIA A100 Tensor Core GPU datasheet (https://www.nvidia.com/content/dam/en-zz/Solutions/"
            "Data-Center/a100/pdf/nvidia-a100-datasheet-us-nvidia-1758950-r4-web.pdf)")
_V100_DS = "NVIDIA Tesla V100 GPU datasheet (https://www.nvidia.com/en-us/data-center/v100/)"
_ADA_WP = "NVIDIA Ada GPU Architecture whitepaper v2.01"
_GA102_WP = "NVIDIA Ampere GA102 GPU Architecture whitepaper v2.0"

GPU_PEAKS: tuple[GpuPeak, ...] = (
    # ---- Hopper -------------------------------------------------------------------------------------
    # Datasheet: FP32 67, TF32 989*, BF16/FP16 1,979*, FP8 3,958* ("* with sparsity"), 3.35 TB/s.
    # Dense figures as printed in the Hopper whitepaper's H100 SXM5 table (= datasheet / 2).
    GpuPeak("NVIDIA H100 SXM5", (r"\bh100\b(?!.*\b(pcie|nvl)\b).*\b80gb hbm3\b", r"\bh100[- ]sxm5?\b"),
            fp32_tflop_s=66.9, tf32_tflop_s=494.7, bf16_tflop_s=989.4, fp16_tflop_s=989.4,
            fp8_tflop_s=1978.9, mem_gb_s=3350.0,
            source=_H100_DS + "; dense: NVIDIA H100 Tensor Core GPU Architecture whitepaper (Hopper)"),
    # Datasheet: FP32 51, TF32 756*, BF16/FP16 1,513*, FP8 3,026* (with sparsity; halved), 2 TB/s.
    GpuPeak("NVIDIA H100 PCIe", (r"\bh100\b.*\bpcie\b",),
            fp32_tflop_s=51.0, tf32_tflop_s=378.0, bf16_tflop_s=756.5, fp16_tflop_s=756.5,
            fp8_tflop_s=1513.0, mem_gb_s=2000.0, source=_H100_DS),
    # Unverified: no copy of NVIDIA's H100 NVL figures was found while writing this table; taken from
    # the NVIDIA H100 product page as known to the author: FP32 60, TF32 835*, BF16/FP16 1,671*,
    # FP8 3,341* (with sparsity; halved), 94 GB HBM3 at 3.9 TB/s (per GPU, not per NVLink pair).
    GpuPeak("NVIDIA H100 NVL", (r"\bh100\b.*\bnvl\b",),
            fp32_tflop_s=60.0, tf32_tflop_s=417.5, bf16_tflop_s=835.5, fp16_tflop_s=835.5,
            fp8_tflop_s=1670.5, mem_gb_s=3900.0, source=_H100_DS + " (H100 NVL column; unverified)"),
    # H200 SXM: same GH100 compute as H100 SXM5 (datasheet: FP32 67, TF32 989*, BF16/FP16 1,979*,
    # FP8 3,958*, with sparsity), 141 GB HBM3e at 4.8 TB/s. Dense = the H100 SXM5 whitepaper figures.
    # "NVIDIA H200 NVL" (PCIe, lower TDP) is a different part and deliberately not matched.
    GpuPeak("NVIDIA H200 SXM", (r"\bh200\b(?!.*\bnvl\b)",),
            fp32_tflop_s=67.0, tf32_tflop_s=494.7, bf16_tflop_s=989.4, fp16_tflop_s=989.4,
            fp8_tflop_s=1978.9, mem_gb_s=4800.0,
            source="NVIDIA H200 Tensor Core GPU datasheet (https://www.nvidia.com/en-us/data-center/h200/)"),
    # ---- Ampere data center ---------------------------------------------------------------------------
    # Datasheet: FP32 19.5, TF32 156 | 312*, BF16/FP16 312 | 624* (dense | with sparsity); no FP8.
    # Bandwidth: 40GB SXM4 1,555 GB/s, 80GB SXM4 2,039 GB/s (verified); 40GB PCIe 1,555 and 80GB PCIe
    # 1,935 GB/s from the datasheets as known to the author (unverified while writing this table).
    GpuPeak("NVIDIA A100 SXM4 40GB", (r"\ba100\b.*\bsxm4?\b.*\b40gb\b",),
            fp32_tflop_s=19.5, tf32_tflop_s=156.0, bf16_tflop_s=312.0, fp16_tflop_s=312.0,
            fp8_tflop_s=None, mem_gb_s=1555.0, source=_A100_DS),
    GpuPeak("NVIDIA A100 SXM4 80GB", (r"\ba100\b.*\bsxm4?\b.*\b80gb\b",),
            fp32_tflop_s=19.5, tf32_tflop_s=156.0, bf16_tflop_s=312.0, fp16_tflop_s=312.0,
            fp8_tflop_s=None, mem_gb_s=2039.0, source=_A100_DS),
    GpuPeak("NVIDIA A100 PCIe 40GB", (r"\ba100\b.*\bpcie\b.*\b40gb\b", r"\ba100\b.*\b40gb\b.*\bpcie\b"),
            fp32_tflop_s=19.5, tf32_tflop_s=156.0, bf16_tflop_s=312.0, fp16_tflop_s=312.0,
            fp8_tflop_s=None, mem_gb_s=1555.0, source=_A100_DS + " (bandwidth unverified)"),
    GpuPeak("NVIDIA A100 PCIe 80GB", (r"\ba100\b.*\bpcie\b.*\b80gb\b", r"\ba100\b.*\b80gb\b.*\bpcie\b"),
            fp32_tflop_s=19.5, tf32_tflop_s=156.0, bf16_tflop_s=312.0, fp16_tflop_s=312.0,
            fp8_tflop_s=None, mem_gb_s=1935.0, source=_A100_DS + " (bandwidth unverified)"),
    # Datasheet: FP32 31.2, TF32 62.5 | 125*, BF16/FP16 125 | 250* (dense | with sparsity), 600 GB/s.
    # FP32, FP16 and bandwidth verified; TF32 62.5 from the datasheet as known to the author.
    GpuPeak("NVIDIA A10", (r"\ba10\b",),
            fp32_tflop_s=31.2, tf32_tflop_s=62.5, bf16_tflop_s=125.0, fp16_tflop_s=125.0,
            fp8_tflop_s=None, mem_gb_s=600.0,
            source="NVIDIA A10 Tensor Core GPU datasheet (https://www.nvidia.com/en-us/data-center/products/a10-gpu/)"),
    # AWS-only GA102 variant: NVIDIA publishes no datasheet. 600 GB/s (24 GB GDDR6) is verified (AWS /
    # Baseten). FP32 31.52 is a third-party figure (Baseten's A10 vs A10G table), unverified. The same
    # table lists ~35 TF32 / ~70 FP16 tensor TFLOP/s (half of A10's), but with no vendor source the
    # tensor fields are left None.
    GpuPeak("NVIDIA A10G", (r"\ba10g\b",),
            fp32_tflop_s=31.52, tf32_tflop_s=None, bf16_tflop_s=None, fp16_tflop_s=None,
            fp8_tflop_s=None, mem_gb_s=600.0,
            source="no NVIDIA datasheet (AWS G5 part); https://www.baseten.co/blog/"
                   "nvidia-a10-vs-a10g-for-ml-model-inference/ (FP32 unverified)"),
    # ---- Ada data center ------------------------------------------------------------------------------
    # Datasheet: FP32 91.6, TF32 183 | 366*, BF16/FP16 362.05 | 733*, FP8 733 | 1,466*, 864 GB/s.
    # The printed dense BF16/FP16 362.05 disagrees with the datasheet's own 733* (/2 = 366.5), with
    # 4 x FP32 (366.4) and with FP8 733 = 2 x 16-bit (it looks copied from the L40's 362.1*); stored:
    # 733* / 2 = 366.5.
    GpuPeak("NVIDIA L40S", (r"\bl40s\b",),
            fp32_tflop_s=91.6, tf32_tflop_s=183.0, bf16_tflop_s=366.5, fp16_tflop_s=366.5,
            fp8_tflop_s=733.0, mem_gb_s=864.0,
            source="NVIDIA L40S datasheet (https://www.nvidia.com/en-us/data-center/l40s/)"),
    # Datasheet: FP32 90.5, TF32 90.5 | 181*, BF16/FP16 181.05 | 362.1*, FP8 362 | 724*, 864 GB/s.
    GpuPeak("NVIDIA L40", (r"\bl40\b",),
            fp32_tflop_s=90.5, tf32_tflop_s=90.5, bf16_tflop_s=181.05, fp16_tflop_s=181.05,
            fp8_tflop_s=362.0, mem_gb_s=864.0,
            source="NVIDIA L40 datasheet (https://www.nvidia.com/en-us/data-center/l40/)"),
    # Datasheet prints only with-sparsity tensor figures: TF32 120*, BF16/FP16 242*, FP8 485*; halved.
    # FP32 30.3, 300 GB/s.
    GpuPeak("NVIDIA L4", (r"\bl4\b",),
            fp32_tflop_s=30.3, tf32_tflop_s=60.0, bf16_tflop_s=121.0, fp16_tflop_s=121.0,
            fp8_tflop_s=242.5, mem_gb_s=300.0,
            source="NVIDIA L4 Tensor Core GPU datasheet (https://www.nvidia.com/en-us/data-center/l4/)"),
    # ---- Turing / Volta (no sparsity, no TF32 / BF16 / FP8) -------------------------------------------
    # Datasheet: FP32 8.1, mixed precision (FP16 x FP16 + FP32 accumulate) 65, 320 GB/s.
    GpuPeak("NVIDIA T4", (r"\bt4\b",),
            fp32_tflop_s=8.1, tf32_tflop_s=None, bf16_tflop_s=None, fp16_tflop_s=65.0,
            fp8_tflop_s=None, mem_gb_s=320.0,
            source="NVIDIA T4 Tensor Core GPU datasheet (https://www.nvidia.com/en-us/data-center/tesla-t4/)"),
    # Datasheet: SXM2 FP32 15.7, tensor (FP16, FP32 accumulate) 125; PCIe 14 / 112; both 900 GB/s
    # (16 GB and 32 GB alike). V100S (different clocks and 1,134 GB/s) is deliberately not matched.
    GpuPeak("NVIDIA V100 SXM2", (r"\bv100\b.*\bsxm2\b",),
            fp32_tflop_s=15.7, tf32_tflop_s=None, bf16_tflop_s=None, fp16_tflop_s=125.0,
            fp8_tflop_s=None, mem_gb_s=900.0, source=_V100_DS),
    GpuPeak("NVIDIA V100 PCIe", (r"\bv100\b.*\bpcie\b",),
            fp32_tflop_s=14.0, tf32_tflop_s=None, bf16_tflop_s=None, fp16_tflop_s=112.0,
            fp8_tflop_s=None, mem_gb_s=900.0, source=_V100_DS),
    # ---- GeForce / workstation --------------------------------------------------------------------------
    # Ada whitepaper, RTX 4090 (dense | with sparsity): FP32 82.6; TF32 82.6 | 165.2; FP16 with FP32
    # accumulate 165.2 | 330.4 (FP16 accumulate: 330.3 | 660.6); BF16 (FP32 acc.) 165.2; FP8 with FP32
    # accumulate 330.3 | 660.6 (FP16 accumulate: 660.6); 1,008 GB/s. Stored: the FP32-accumulate rates.
    # "RTX 4090 D" and laptop parts are different and not matched.
    GpuPeak("NVIDIA GeForce RTX 4090", (r"^(nvidia )?geforce rtx 4090$",),
            fp32_tflop_s=82.6, tf32_tflop_s=82.6, bf16_tflop_s=165.2, fp16_tflop_s=165.2,
            fp8_tflop_s=330.3, mem_gb_s=1008.0, source=_ADA_WP + " (GeForce RTX 4090 table)"),
    # GA102 whitepaper Appendix A, RTX 3090 (dense | with sparsity): FP32 35.6; TF32 35.6 | 71; FP16
    # with FP32 accumulate 71 | 142 (FP16 accumulate: 142 | 284); BF16 (FP32 acc.) 71 | 142. Stored:
    # FP32-accumulate rates. FP32 35.6 verified; tensor figures from the whitepaper as known to the
    # author (unverified while writing this table); 936 GB/s = 19.5 Gbps x 384 bit / 8.
    GpuPeak("NVIDIA GeForce RTX 3090", (r"^(nvidia )?geforce rtx 3090$",),
            fp32_tflop_s=35.6, tf32_tflop_s=35.6, bf16_tflop_s=71.0, fp16_tflop_s=71.0,
            fp8_tflop_s=None, mem_gb_s=936.0,
            source=_GA102_WP + ", Appendix A (GeForce RTX 3090; tensor figures unverified)"),
    # Workstation GA102 (full-rate FP32 accumulate). Datasheet: FP32 38.7, "Tensor performance 309.7"
    # (FP16, with sparsity) -> 154.8 dense FP16/BF16; TF32 77.4 dense (= 2 x FP32, as the A40's
    # datasheet prints for the same chip: 37.4 FP32, 74.8 TF32); 768 GB/s. FP32, bandwidth and the
    # 154.8 dense FP16/BF16 verified; TF32 unverified.
    GpuPeak("NVIDIA RTX A6000", (r"\brtx a6000\b",),
            fp32_tflop_s=38.7, tf32_tflop_s=77.4, bf16_tflop_s=154.8, fp16_tflop_s=154.8,
            fp8_tflop_s=None, mem_gb_s=768.0,
            source="NVIDIA RTX A6000 datasheet; " + _GA102_WP + ", Appendix C (TF32 unverified)"),
    # Workstation AD102 (full-rate FP32 accumulate). Datasheet: FP32 91.1, "Tensor performance 1,457"
    # (FP8, with sparsity) -> 728.5 dense FP8; FP16/BF16 364.2 and TF32 182.1 dense (Ada whitepaper's
    # RTX 6000 Ada table, as known to the author); 960 GB/s. FP32 and bandwidth verified; tensor
    # figures unverified while writing this table.
    GpuPeak("NVIDIA RTX 6000 Ada Generation", (r"\brtx 6000 ada\b",),
            fp32_tflop_s=91.1, tf32_tflop_s=182.1, bf16_tflop_s=364.2, fp16_tflop_s=364.2,
            fp8_tflop_s=728.5, mem_gb_s=960.0,
            source="NVIDIA RTX 6000 Ada Generation datasheet "
                   "(https://www.nvidia.com/en-us/design-visualization/rtx-6000/); " + _ADA_WP
                   + " (tensor figures unverified)"),
)


def _normalize(device_name: str) -> str:
    """Lowercase, trimmed, inner whitespace collapsed: the form patterns are matched against."""
    return " ".join(device_name.lower().split())


def _matching(device_name: str, table: tuple[GpuPeak, ...] = GPU_PEAKS) -> tuple[GpuPeak, ...]:
    """Every entry of ``table`` with a pattern found in ``device_name`` (normally zero or one)."""
    name = _normalize(device_name)
    if not name:
        return ()
    return tuple(peak for peak in table if any(re.search(p, name) for p in peak.patterns))


def _match(device_name: str, table: tuple[GpuPeak, ...] = GPU_PEAKS) -> GpuPeak | None:
    """The single entry of ``table`` matching ``device_name``; None for none or (ambiguously) several."""
    found = _matching(device_name, table)
    return found[0] if len(found) == 1 else None


def gpu_peak(device_name: str) -> GpuPeak | None:
    """The entry whose pattern matches the name torch reports, None for an unknown name.

    E.g. "NVIDIA H100 80GB HBM3" is the SXM5 part; "NVIDIA H100 PCIe", "NVIDIA H100 NVL", "NVIDIA H200",
    "NVIDIA A100-SXM4-80GB", "NVIDIA A100-SXM4-40GB", "NVIDIA A100-PCIE-40GB", "NVIDIA A100 80GB PCIe",
    "NVIDIA L40S", "NVIDIA L40", "NVIDIA L4", "NVIDIA A10", "NVIDIA A10G", "Tesla T4",
    "Tesla V100-SXM2-16GB", "Tesla V100-SXM2-32GB", "Tesla V100-PCIE-32GB", "NVIDIA GeForce RTX 4090",
    "NVIDIA GeForce RTX 3090", "NVIDIA RTX A6000", "NVIDIA RTX 6000 Ada Generation". Names that do not
    say the form factor (a bare "NVIDIA H100" or "NVIDIA A100") give None rather than a guess. The match
    does not depend on the order of :data:`GPU_PEAKS`.
    """
    return _match(device_name)
