"""Fake quantizers: per-channel symmetric weights, per-tensor uniform activations, log2 softmax.

Fake quantization rounds values onto a b-bit grid and maps them back to float, so the
arithmetic stays in floating point: it simulates accuracy, it is not faster.

Conventions (one place):

- ``bits >= FLOAT_BITS`` (32) means "no quantization": the quantizer is the identity.
- Weights: symmetric, one scale per output channel (dim 0), narrow range
  ``q in [-(2^(b-1)-1), 2^(b-1)-1]``, ``scale_c = max|w_c| / (2^(b-1)-1)``; zero is exact.
- Activations: asymmetric per tensor, ``q in [0, 2^b-1]``, ``scale = (hi-lo)/(2^b-1)``,
  integer zero point ``round(-lo/scale)``. The calibrated range always contains 0, so zeros
  (e.g. padded tokens) stay exact.
- Range calibration: ``"minmax"`` uses the observed min/max; ``"percentile"`` tries the
  clipping ranges given by symmetric percentile pairs (``PERCENTILES``, 1.0 = min/max) and keeps
  the one with the smallest mean squared reconstruction error on the observed values.
- Softmax (``kind="log2"``): ``q = round(-log2 x)``; codes ``q in [0, 2^b-2]`` map to ``2^-q``,
  the last code is an exact 0 (``x = 0`` or ``q > 2^b-2``). Range fixed to (0, 1]: no calibration.
"""

from __future__ import annotations

import math

import torch
from torch import nn

FLOAT_BITS = 32
"""Bit widths at or above this mean "keep float" (no quantization)."""

ACT_CALIB_METHODS = ("minmax", "percentile")
ACT_KINDS = ("uniform", "log2")

PERCENTILES = (1.0, 0.99999, 0.9999, 0.999, 0.995, 0.99, 0.98, 0.95, 0.9)
"""Upper percentiles tried by the ``percentile`` search (lower end: ``1 - p``); 1.0 is min/max."""

MAX_SAMPLES_PER_CALL = 16384
"""An observer keeps at most this many values per observed tensor (strided subsample) for the
range search; min/max are always exact."""
MAX_SEARCH_SAMPLES = 32768
"""The percentile search evaluates at most this many of the kept values (strided)."""


def is_float(bits: int) -> bool:
    """True when ``bits`` means "no quantization"."""
    return bits >= FLOAT_BITS


def weight_scale(w: torch.Tensor, bits: int) -> torch.Tensor:
    """Per-output-channel symmetric scale. w: [C_out, ...] -> [C_out, 1, ...]."""
    qmax = 2 ** (bits - 1) - 1
    amax = w.detach().abs().reshape(w.shape[0], -1).amax(dim=1).float()
    scale = torch.where(amax > 0, amax / qmax, torch.ones_like(amax))
    return scale.reshape((w.shape[0],) + (1,) * (w.dim() - 1))


def quantize_weight(w: torch.Tensor, bits: int) -> torch.Tensor:
    """Fake-quantize a weight tensor symmetrically per output channel (dim 0).

    w: [C_out, ...] -> same shape and dtype. ``bits >= 32`` returns ``w`` unchanged.
    """
    if bits < 2:
        raise ValueError(f"weight bits must be >= 2 (got {bits})")
    if is_float(bits):
        return w
    qmax = 2 ** (bits - 1) - 1
    scale = weight_scale(w, bits)
    q = torch.clamp(torch.round(w.float() / scale), -qmax, qmax)
    return (q * scale).to(w.dtype)


def act_qparams(lo: float, hi: float, bits: int) -> tuple[float, float]:
    """Scale and integer zero point of an asymmetric ``bits``-bit grid covering [lo, hi] and 0."""
    lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
    qmax = 2**bits - 1
    scale = (hi - lo) / qmax
    if not scale > 0 or not math.isfinite(scale):
        scale = 1.0
    zero_point = float(min(max(round(-lo / scale), 0), qmax))
    return scale, zero_point


def fake_quant_uniform(x: torch.Tensor, scale, zero_point, bits: int) -> torch.Tensor:
    """Asymmetric fake quantization onto ``(q - zero_point) * scale``, q in [0, 2^b-1].

    scale, zero_point: floats (per tensor) or tensors broadcastable to x.
    """
    qmax = 2**bits - 1
    q = torch.clamp(torch.round(x / scale) + zero_point, 0, qmax)
    return (q - zero_point) * scale


def fake_quant_log2(x: torch.Tensor, bits: int) -> torch.Tensor:
    """Log2 fake quantization of values in [0, 1] (softmax output): levels 2^-q and 0."""
    n_levels = 2**bits - 1  # codes 0 .. 2^b-2 are powers of two, the last code is zero
    q = torch.round(-torch.log2(x.clamp_min(0)))  # +inf for zeros
    out = torch.exp2(-q.clamp(0, n_levels - 1))
    return torch.where(q > n_levels - 1, torch.zeros_like(out), out)


def search_range(samples: torch.Tensor, lo: float, hi: float, bits: int, method: str) -> tuple[float, float]:
    """Pick the clipping range [lo', hi'] for ``bits``-bit activations.

    samples: 1-D float tensor of observed values (a subsample); lo, hi: exact observed min/max.
    ``minmax`` returns (lo, hi); ``percentile`` returns the candidate (min/max or a symmetric
    percentile pair from ``PERCENTILES``) with the smallest mean squared reconstruction error on
    ``samples``; ties keep the wider range.
    """
    if method not in ACT_CALIB_METHODS:
        raise ValueError(
            f"unknown activation calibration {method!r}; allowed: {', '.join(ACT_CALIB_METHODS)}"
        )
    if method == "minmax" or samples.numel() == 0:
        return lo, hi
    s = samples.float()
    if s.numel() > MAX_SEARCH_SAMPLES:
        s = s[:: math.ceil(s.numel() / MAX_SEARCH_SAMPLES)]
    probs = torch.tensor([p for p in PERCENTILES if p < 1.0], dtype=torch.float64)
    xs = torch.sort(s).values.double()
    cands = [(lo, hi)] + list(zip(_quantiles(xs, 1.0 - probs).tolist(), _quantiles(xs, probs).tolist()))
    qp = [act_qparams(c_lo, c_hi, bits) for c_lo, c_hi in cands]
    scale = torch.tensor([sc for sc, _ in qp], dtype=torch.float32).unsqueeze(1)  # [K, 1]
    zp = torch.tensor([z for _, z in qp], dtype=torch.float32).unsqueeze(1)
    err = (fake_quant_uniform(s.unsqueeze(0), scale, zp, bits) - s).pow(2).mean(dim=1)  # [K]
    best = int(torch.nonzero(err == err.min())[0, 0])  # first minimum: the widest of equals
    return cands[best]


def _quantiles(xs: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
    """Linear-interpolated quantiles of a sorted 1-D tensor (no size limit, unlike torch.quantile)."""
    pos = probs * (xs.numel() - 1)
    i0 = pos.floor().long()
    i1 = pos.ceil().long()
    frac = pos - i0.double()
    return xs[i0] + (xs[i1] - xs[i0]) * frac


class RangeObserver:
    """Collects the range of an activation over calibration batches.

    Keeps the exact min/max and a strided subsample (at most ``MAX_SAMPLES_PER_CALL`` values
    per call) for the range search. One observer may feed several quantizers (e.g. the high-
    and low-bit branch calibrated on the same whole tensor at different bit widths).
    """

    def __init__(self, max_samples_per_call: int = MAX_SAMPLES_PER_CALL) -> None:
        self.max_samples_per_call = max_samples_per_call
        self.lo = math.inf
        self.hi = -math.inf
        self._samples: list[torch.Tensor] = []
        self._ranges: dict[tuple[int, str, int], tuple[float, float]] = {}
        self.n_seen = 0

    def observe(self, x: torch.Tensor) -> None:
        """Record the values of ``x`` (any shape)."""
        flat = x.detach().reshape(-1).float()
        if flat.numel() == 0:
            return
        lo, hi = torch.aminmax(flat)
        self.lo = min(self.lo, lo.item())
        self.hi = max(self.hi, hi.item())
        step = max(1, math.ceil(flat.numel() / self.max_samples_per_call))
        self._samples.append(flat[::step].cpu())
        self.n_seen += flat.numel()

    @property
    def samples(self) -> torch.Tensor:
        if not self._samples:
            return torch.empty(0)
        return torch.cat(self._samples)

    def range(self, bits: int, method: str) -> tuple[float, float]:
        """The calibrated [lo, hi] for ``bits`` bits; raises if nothing was observed."""
        if self.n_seen == 0:
            raise RuntimeError("activation observer saw no values: calibrate with at least one image first")
        key = (bits, method, self.n_seen)
        if key not in self._ranges:  # shared observers: each (bits, method) is searched once
            self._ranges[key] = search_range(self.samples, self.lo, self.hi, bits, method)
        return self._ranges[key]


class ActQuantizer(nn.Module):
    """Per-tensor activation fake quantizer with an observer for calibration.

    States: ``observing`` (records values into ``observer`` and passes x through unchanged),
    calibrated (``finalize()`` was called: fake-quantizes), float (``bits >= 32``: identity).
    kind: "uniform" (asymmetric, calibrated range) or "log2" (softmax output, no calibration).
    """

    def __init__(
        self,
        bits: int,
        kind: str = "uniform",
        calib: str = "percentile",
        observer: RangeObserver | None = None,
    ) -> None:
        super().__init__()
        if kind not in ACT_KINDS:
            raise ValueError(f"unknown activation quantizer kind {kind!r}; allowed: {', '.join(ACT_KINDS)}")
        if calib not in ACT_CALIB_METHODS:
            raise ValueError(
                f"unknown activation calibration {calib!r}; allowed: {', '.join(ACT_CALIB_METHODS)}"
            )
        if bits < 2:
            raise ValueError(f"activation bits must be >= 2 (got {bits})")
        self.bits = int(bits)
        self.kind = kind
        self.calib = calib
        self.observer = observer if observer is not None else RangeObserver()
        self.observing = False
        self.calibrated = False
        self.lo = 0.0
        self.hi = 0.0
        self.scale = 1.0
        self.zero_point = 0.0

    @property
    def needs_calibration(self) -> bool:
        return not is_float(self.bits) and self.kind == "uniform"

    def finalize(self) -> None:
        """Fix the quantization grid from what the observer saw."""
        if self.needs_calibration:
            self.lo, self.hi = self.observer.range(self.bits, self.calib)
            self.scale, self.zero_point = act_qparams(self.lo, self.hi, self.bits)
        self.calibrated = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if is_float(self.bits):
            return x
        if self.observing:
            if self.needs_calibration:
                self.observer.observe(x)
            return x
        if self.kind == "log2":
            return fake_quant_log2(x.float(), self.bits).to(x.dtype)
        if not self.calibrated:
            raise RuntimeError(
                "activation quantizer used before calibration (call finalize() after observing)"
            )
        return fake_quant_uniform(x.float(), self.scale, self.zero_point, self.bits).to(x.dtype)

    def extra_repr(self) -> str:
        rng = f", range=[{self.lo:.4g}, {self.hi:.4g}]" if self.calibrated and self.needs_calibration else ""
        return f"bits={self.bits}, kind={self.kind}, calib={self.calib}{rng}"
