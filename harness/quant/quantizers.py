"""Fake quantizers: per-channel symmetric weights, uniform activations, log2 / log-sqrt2 softmax.

Fake quantization rounds values onto a b-bit grid and maps them back to float, so the
arithmetic stays in floating point: it simulates accuracy, it is not faster.

Conventions (one place):

- ``bits >= FLOAT_BITS`` (32) means "no quantization": the quantizer is the identity.
- Weights: symmetric, one scale per output channel (dim 0), narrow range
  ``q in [-(2^(b-1)-1), 2^(b-1)-1]``, ``scale_c = max|w_c| / (2^(b-1)-1)``; zero is exact.
- Activations: asymmetric, ``q in [0, 2^b-1]``, ``scale = (hi-lo)/(2^b-1)``, integer zero point
  ``round(-lo/scale)``; per tensor, or per channel (last dim) for the post-LayerNorm activations
  that RepQ-ViT's scale reparameterization folds (:mod:`harness.quant.repq`). The calibrated
  range always contains 0, so zeros (e.g. padded tokens) stay exact.
- Range calibration: ``"minmax"`` uses the observed min/max; ``"percentile"`` tries the
  clipping ranges given by symmetric percentile pairs (``PERCENTILES``, 1.0 = min/max) and keeps
  the one with the smallest mean squared reconstruction error on the observed values;
  ``"repq"`` is RepQ-ViT's search, the same with its three percentiles only (``REPQ_PERCENTILES``:
  no min/max candidate).
- Softmax, log quantizers: ``q = round(-k log2(x / max))`` with k steps per octave; codes
  ``q in [0, 2^b-2]`` map to ``max * 2^(-q/k)``, the last code is an exact 0 (``x = 0`` or
  ``q > 2^b-2``). ``kind="log2"``: k = 1, max fixed at 1 (no calibration). ``kind="log_sqrt2"``:
  RepQ-ViT's log-sqrt2 quantizer, k = 2, max calibrated by the range search (its candidates are
  upper percentiles of the observed values). RepQ-ViT itself uses all 2^b codes as levels and
  flushes overflow to an extra zero (2^b + 1 values); here a b-bit code holds 2^b values.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

FLOAT_BITS = 32
"""Bit widths at or above this mean "keep float" (no quantization)."""

ACT_CALIB_METHODS = ("minmax", "percentile", "repq")
ACT_KINDS = ("uniform", "log2", "log_sqrt2")
LOG_STEPS_PER_OCTAVE = {"log2": 1, "log_sqrt2": 2}
"""Levels per factor of 2 of each log quantizer kind."""

PERCENTILES = (1.0, 0.99999, 0.9999, 0.999, 0.995, 0.99, 0.98, 0.95, 0.9)
"""Upper percentiles tried by the ``percentile`` search (lower end: ``1 - p``); 1.0 is min/max."""
REPQ_PERCENTILES = (0.999, 0.9999, 0.99999)
"""RepQ-ViT's candidates, in its order: it keeps a candidate only on a strictly smaller error, so
ties keep the earliest (here too: the first minimum wins)."""
CALIB_PERCENTILES = {"minmax": (1.0,), "percentile": PERCENTILES, "repq": REPQ_PERCENTILES}
"""Candidate upper percentiles of each range method, in tie-break order (1.0: the exact extremes)."""

MAX_SAMPLES_PER_CALL = 16384
"""An observer keeps at most this many values per observed tensor (strided subsample) for the
range search; min/max are always exact."""
MAX_CHANNEL_ROWS_PER_CALL = 4096
"""A per-channel observer keeps at most this many rows (tokens) per observed tensor (strided)."""
MAX_SEARCH_SAMPLES = 32768
"""The percentile search evaluates at most this many of the kept values per tensor or channel (strided)."""
SEARCH_CHUNK_ELEMENTS = 2**23
"""A per-channel search handles channels in chunks of at most this many (candidate, value) pairs."""


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
    scale, zero_point = act_qparams_tensor(
        torch.tensor(float(lo), dtype=torch.float64), torch.tensor(float(hi), dtype=torch.float64), bits
    )
    return float(scale), float(zero_point)


def act_qparams_tensor(lo: torch.Tensor, hi: torch.Tensor, bits: int) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`act_qparams` elementwise. lo, hi: float64 tensors of one shape -> (scale, zero point),
    float64, same shape; a degenerate range (empty or not finite) gets scale 1."""
    lo, hi = lo.clamp(max=0.0), hi.clamp(min=0.0)
    qmax = 2**bits - 1
    scale = (hi - lo) / qmax
    scale = torch.where((scale > 0) & torch.isfinite(scale), scale, torch.ones_like(scale))
    zero_point = torch.round(-lo / scale).clamp(0, qmax) + 0.0  # + 0.0: no negative zero
    return scale, zero_point


def fake_quant_uniform(x: torch.Tensor, scale, zero_point, bits: int) -> torch.Tensor:
    """Asymmetric fake quantization onto ``(q - zero_point) * scale``, q in [0, 2^b-1].

    scale, zero_point: floats (per tensor) or tensors broadcastable to x.
    """
    qmax = 2**bits - 1
    q = torch.clamp(torch.round(x / scale) + zero_point, 0, qmax)
    return (q - zero_point) * scale


def fake_quant_log2(
    x: torch.Tensor, bits: int, x_max: float = 1.0, steps_per_octave: int = 1
) -> torch.Tensor:
    """Log fake quantization of values in [0, x_max] (softmax output): levels
    ``x_max * 2^(-q/steps_per_octave)`` for codes q in [0, 2^b-2], and 0 (the last code).

    steps_per_octave 1: the log2 quantizer; 2: RepQ-ViT's log-sqrt2 quantizer (levels a factor
    sqrt(2) apart). Values above x_max take the top level.
    """
    n_levels = 2**bits - 1  # codes 0 .. 2^b-2 are levels, the last code is zero
    q = torch.round(-steps_per_octave * torch.log2(x.clamp_min(0) / x_max))  # +inf for zeros
    out = x_max * torch.exp2(-q.clamp(0, n_levels - 1) / steps_per_octave)
    return torch.where(q > n_levels - 1, torch.zeros_like(out), out)


def search_range(samples: torch.Tensor, lo: float, hi: float, bits: int, method: str) -> tuple[float, float]:
    """Pick the clipping range [lo', hi'] for ``bits``-bit activations.

    samples: 1-D float tensor of observed values (a subsample); lo, hi: exact observed min/max.
    ``minmax`` returns (lo, hi); ``percentile`` and ``repq`` return the candidate (min/max or a
    symmetric percentile pair from ``CALIB_PERCENTILES[method]``) with the smallest mean squared
    reconstruction error on ``samples``; ties keep the earlier candidate (for ``percentile`` the
    wider range).
    """
    f64 = torch.float64
    out_lo, out_hi = search_ranges(
        samples.reshape(1, -1), torch.tensor([lo], dtype=f64), torch.tensor([hi], dtype=f64), bits, method
    )
    return float(out_lo[0]), float(out_hi[0])


def search_ranges(
    samples: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, bits: int, method: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`search_range` for R rows at once (R channels of one activation).

    samples: [R, S] observed values per row; lo, hi: [R] float64 exact observed extremes ->
    (lo', hi'), [R] float64 each.
    """
    probs = _calib_percentiles(method)
    if probs == (1.0,) or samples.shape[-1] == 0:
        return lo, hi
    s = _search_subset(samples)
    rows = max(1, SEARCH_CHUNK_ELEMENTS // (len(probs) * s.shape[-1]))  # bounds the [K, rows, S] errors
    out = [_search_rows(s[i : i + rows], lo[i : i + rows], hi[i : i + rows], bits, probs)
           for i in range(0, s.shape[0], rows)]
    return torch.cat([o[0] for o in out]), torch.cat([o[1] for o in out])


def _search_rows(
    s: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, bits: int, probs: tuple[float, ...]
) -> tuple[torch.Tensor, torch.Tensor]:
    xs = torch.sort(s, dim=-1).values.double()
    cand_lo = torch.stack([lo if p == 1.0 else _quantiles(xs, 1.0 - p) for p in probs])  # [K, R]
    cand_hi = torch.stack([hi if p == 1.0 else _quantiles(xs, p) for p in probs])
    scale, zp = act_qparams_tensor(cand_lo, cand_hi, bits)
    q = fake_quant_uniform(s.unsqueeze(0), scale.float().unsqueeze(-1), zp.float().unsqueeze(-1), bits)
    best = _first_min((q - s).pow(2).mean(dim=-1)).unsqueeze(0)  # [1, R]
    return cand_lo.gather(0, best).squeeze(0), cand_hi.gather(0, best).squeeze(0)


def search_log_max(samples: torch.Tensor, hi: float, bits: int, method: str, steps_per_octave: int) -> float:
    """Pick the maximum of a log quantizer (:func:`fake_quant_log2`) for values in [0, hi].

    samples: 1-D observed values (a subsample); hi: exact observed max. The candidates are the
    upper percentiles ``CALIB_PERCENTILES[method]`` of the samples (1.0: hi); the one with the
    smallest mean squared reconstruction error wins, ties keep the earlier. RepQ-ViT's log-sqrt2
    quantizer is ``method="repq"``, ``steps_per_octave=2``.
    """
    probs = _calib_percentiles(method)
    if probs == (1.0,) or samples.numel() == 0:
        return _positive_max(hi)
    s = _search_subset(samples.reshape(1, -1))[0]
    xs = torch.sort(s).values.double()
    cands = [_positive_max(hi if p == 1.0 else float(_quantiles(xs, p))) for p in probs]
    err = torch.stack([(fake_quant_log2(s, bits, c, steps_per_octave) - s).pow(2).mean() for c in cands])
    return cands[int(_first_min(err))]


def _calib_percentiles(method: str) -> tuple[float, ...]:
    if method not in ACT_CALIB_METHODS:
        raise ValueError(
            f"unknown activation calibration {method!r}; allowed: {', '.join(ACT_CALIB_METHODS)}"
        )
    return CALIB_PERCENTILES[method]


def _search_subset(samples: torch.Tensor) -> torch.Tensor:
    """[R, S] -> [R, <= MAX_SEARCH_SAMPLES] float32 (strided along S)."""
    s = samples.float()
    if s.shape[-1] > MAX_SEARCH_SAMPLES:
        s = s[..., :: math.ceil(s.shape[-1] / MAX_SEARCH_SAMPLES)]
    return s


def _first_min(err: torch.Tensor) -> torch.Tensor:
    """Index along dim 0 of the first minimum of err: [K, ...] -> [...] int64."""
    return (err == err.min(dim=0, keepdim=True).values).to(torch.uint8).argmax(dim=0)


def _positive_max(value: float) -> float:
    """A log quantizer's max must be > 0 and finite; 1 (the softmax bound) otherwise."""
    return float(value) if 0.0 < value < math.inf else 1.0


def _quantiles(xs: torch.Tensor, prob: float) -> torch.Tensor:
    """Linear-interpolated ``prob`` quantile of each row of xs: [..., S] sorted along S -> [...]
    (no size limit, unlike torch.quantile)."""
    pos = prob * (xs.shape[-1] - 1)
    i0, i1 = math.floor(pos), math.ceil(pos)
    return xs[..., i0] + (xs[..., i1] - xs[..., i0]) * (pos - i0)


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
        self._ranges: dict[tuple[Any, ...], Any] = {}
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
        return self._cached(
            ("range", bits, method), lambda: search_range(self.samples, self.lo, self.hi, bits, method)
        )

    def log_max(self, bits: int, method: str, steps_per_octave: int) -> float:
        """The calibrated max of a ``bits``-bit log quantizer (:func:`search_log_max`)."""
        return self._cached(
            ("log", bits, method, steps_per_octave),
            lambda: search_log_max(self.samples, self.hi, bits, method, steps_per_octave),
        )

    def _cached(self, key: tuple[Any, ...], search: Callable[[], Any]) -> Any:
        if self.n_seen == 0:
            raise RuntimeError("activation observer saw no values: calibrate with at least one image first")
        key = (*key, self.n_seen)
        if key not in self._ranges:  # shared observers: each (bits, method) is searched once
            self._ranges[key] = search()
        return self._ranges[key]


class ChannelRangeObserver(RangeObserver):
    """A :class:`RangeObserver` per channel (the last dim): exact per-channel min/max ([C] float64)
    and at most ``MAX_CHANNEL_ROWS_PER_CALL`` rows (tokens) per call, strided; ``range`` returns
    [C] float64 tensors (RepQ-ViT's per-channel calibration of post-LayerNorm activations)."""

    def __init__(self, max_rows_per_call: int = MAX_CHANNEL_ROWS_PER_CALL) -> None:
        super().__init__(max_rows_per_call)
        self.lo = self.hi = None

    def observe(self, x: torch.Tensor) -> None:
        """Record x: [..., C]."""
        rows = x.detach().reshape(-1, x.shape[-1]).float()
        if rows.shape[0] == 0:
            return
        lo, hi = (v.double().cpu() for v in torch.aminmax(rows, dim=0))
        self.lo = lo if self.lo is None else torch.minimum(self.lo, lo)
        self.hi = hi if self.hi is None else torch.maximum(self.hi, hi)
        step = max(1, math.ceil(rows.shape[0] / self.max_samples_per_call))
        self._samples.append(rows[::step].cpu())
        self.n_seen += rows.numel()

    @property
    def samples(self) -> torch.Tensor:
        """[C, S]: the kept values of each channel."""
        return torch.cat(self._samples).T

    def range(self, bits: int, method: str) -> tuple[torch.Tensor, torch.Tensor]:
        """The calibrated per-channel (lo, hi), [C] float64 each."""
        return self._cached(
            ("range", bits, method), lambda: search_ranges(self.samples, self.lo, self.hi, bits, method)
        )

    def log_max(self, bits: int, method: str, steps_per_octave: int) -> float:
        raise NotImplementedError("log quantizers are per tensor")


class ActQuantizer(nn.Module):
    """Activation fake quantizer with an observer for calibration, per tensor or per channel.

    States: ``observing`` (records values into ``observer`` and passes x through unchanged),
    calibrated (``finalize()`` was called: fake-quantizes), float (``bits >= 32``: identity).
    kind: "uniform" (asymmetric, calibrated range), "log2" (softmax output, max 1, no
    calibration) or "log_sqrt2" (softmax output, calibrated max). per_channel (uniform only):
    one grid per channel of the last dim (``scale``, ``zero_point``: [C] tensors) until
    :meth:`set_per_tensor` replaces it by one grid (RepQ-ViT's scale reparameterization).
    """

    def __init__(
        self,
        bits: int,
        kind: str = "uniform",
        calib: str = "percentile",
        observer: RangeObserver | None = None,
        per_channel: bool = False,
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
        if per_channel and kind != "uniform":
            raise ValueError(f"per-channel activation quantization is uniform only (got kind {kind!r})")
        self.bits = int(bits)
        self.kind = kind
        self.calib = calib
        self.per_channel = per_channel
        if observer is None:
            observer = ChannelRangeObserver() if per_channel else RangeObserver()
        elif per_channel != isinstance(observer, ChannelRangeObserver):
            raise ValueError(
                "a per-channel quantizer needs a ChannelRangeObserver, a per-tensor one a RangeObserver"
            )
        self.observer = observer
        self.observing = False
        self.calibrated = False
        self.lo: Any = 0.0
        self.hi: Any = 0.0
        self.scale: Any = 1.0
        self.zero_point: Any = 0.0

    @property
    def needs_calibration(self) -> bool:
        return not is_float(self.bits) and self.kind != "log2"

    def finalize(self) -> None:
        """Fix the quantization grid from what the observer saw."""
        if self.needs_calibration and self.kind in LOG_STEPS_PER_OCTAVE:
            self.hi = self.observer.log_max(self.bits, self.calib, LOG_STEPS_PER_OCTAVE[self.kind])
        elif self.needs_calibration and self.per_channel:
            self.lo, self.hi = self.observer.range(self.bits, self.calib)
            scale, zero_point = act_qparams_tensor(self.lo, self.hi, self.bits)
            self.scale, self.zero_point = scale.float(), zero_point.float()
        elif self.needs_calibration:
            self.lo, self.hi = self.observer.range(self.bits, self.calib)
            self.scale, self.zero_point = act_qparams(self.lo, self.hi, self.bits)
        self.calibrated = True

    def set_per_tensor(self, scale: float, zero_point: float) -> None:
        """Replace the (per-channel) grid by one grid: ``(q - zero_point) * scale``, q in [0, 2^b-1]."""
        qmax = 2**self.bits - 1
        self.per_channel = False
        self.scale, self.zero_point = float(scale), float(zero_point)
        self.lo, self.hi = -self.zero_point * self.scale, (qmax - self.zero_point) * self.scale
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
        if self.kind == "log_sqrt2":
            return fake_quant_log2(x.float(), self.bits, self.hi, LOG_STEPS_PER_OCTAVE[self.kind]).to(x.dtype)
        scale, zero_point = self.scale, self.zero_point
        if self.per_channel:
            scale, zero_point = scale.to(x.device), zero_point.to(x.device)
        return fake_quant_uniform(x.float(), scale, zero_point, self.bits).to(x.dtype)

    def extra_repr(self) -> str:
        rng = ""
        if self.calibrated and self.needs_calibration and self.per_channel:
            rng = f", per channel: {self.scale.numel()} grids"
        elif self.calibrated and self.needs_calibration:
            rng = f", range=[{self.lo:.4g}, {self.hi:.4g}]"
        return f"bits={self.bits}, kind={self.kind}, calib={self.calib}{rng}"
