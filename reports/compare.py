"""Regression gate: compare two run directories point by point.

``compare_runs(base_dir, new_dir)`` pairs the ok points of the two runs by ``point_hash``
(a hash of the configuration, so equal configurations pair across commits) and gives each
a verdict:

- latency: effect = ratio of the medians of the raw per-call samples (``samples.parquet``,
  ``device_ms``), new / base, with a seeded percentile-bootstrap 95% CI; significance = a
  two-sided Mann–Whitney U test on the two sample sets. A point is a REGRESSION only when
  p < alpha AND ratio - 1 > threshold (an IMPROVEMENT symmetrically); a large change that
  is not significant is "noise", a significant change under the threshold is "no change";
- quality/fidelity (``q_*``/``fid_*`` present in both): a regression when the value got
  worse by more than its tolerance (``metrics.json`` ``tolerance``, else the suite's
  ``regression.per_metric[column]``, read as an absolute tolerance), in the direction of
  ``higher_is_better``; without a tolerance or a direction the column is "not gated";
- status: a point that was ok in base and failed / oom / nan in new is a regression.

Why both significance and effect size. A gate on a percentage alone (pytest-benchmark's
``--benchmark-compare-fail``, github-action-benchmark's alert threshold against the single
previous data point, CodSpeed's per-benchmark percentage) looks at one statistic of each run
and ignores its spread: on a shared or throttling GPU one unlucky run trips the gate, or
hides a real slowdown, and teams end up ignoring or disabling it. A gate on significance
alone has the opposite failure: with adaptive sampling and many samples, a real but
irrelevant shift of 1-2% (a clock step, an allocator change) becomes "significant" and fails
CI for nothing. asv's ``compare``/``continuous`` combine the two (a ratio factor plus a
Mann–Whitney test, and a change under either is shown as not significant); BenchmarkDotNet
pairs its test with a minimum effect. We do the same, with a rank test because timing
distributions are skewed and outlier-prone, and report a bootstrap CI so a reader sees how
large the change plausibly is. With few samples (3 vs 3) the test cannot reach p < 0.01 at
all: the verdict is "noise", which asks for more samples rather than guessing.

Comparisons only make sense on the same hardware and software stack; runs whose environment
fingerprints differ in what matters (GPU, torch, ...) are refused unless explicitly allowed.
"""

from __future__ import annotations

import math
import os
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from harness.errors import HarnessError
from harness.measure.env import DEVICE_KIND, TORCH, comparable
from harness.store import ENV_FILE, SAMPLES_FILE, SAMPLES_LOG, DamagedLine, RunData, load, lock_holder
from harness.store import columns as C
from reports import stats as S
from reports import tables as T
from reports.status import run_status

DEFAULT_THRESHOLD = 0.05
DEFAULT_ALPHA = 0.01
CI_LEVEL = 0.95
FEW_SAMPLES = 10  # below this per side, bootstrap CIs of a median are unreliable
LATENCY_KEYS = (C.LAT_MEDIAN, "latency", C.DEVICE_MS)  # per_metric keys that mean latency
COMPARE_MD = "compare.md"
COMPARE_CSV = "compare.csv"

KIND_LATENCY = "latency"
KIND_INSTRUCTIONS = "instructions"
KIND_STATUS = "status"
DEFAULT_INSTRUCTIONS_THRESHOLD = 0.01  # counts repeat within 0.01 % here: 1 % is far above their noise

ROW_COLUMNS = (
    C.HASH, "config", "kind", "metric", "base", "new", "ratio", "delta", "ci_low", "ci_high",
    "p_value", "n_base", "n_new", "threshold", "verdict", "note",
)


class CompareError(HarnessError, ValueError):
    """Two runs cannot be compared (no common points, or environments that differ)."""


@dataclass
class CompareResult:
    """Outcome of :func:`compare_runs`.

    rows: one row per (point, metric) with columns ``ROW_COLUMNS``; markdown: the summary for a
    PR comment or CI log; regressed: True when any row's verdict is a regression; n_common:
    points ok in base and present in new; env_differences: what differs between the
    fingerprints (non-empty only when allowed). A point whose raw samples are missing, or whose
    row in new is a damaged line, is "cannot judge": :attr:`exit_code` is then 2.
    """

    rows: pd.DataFrame
    markdown: str
    regressed: bool
    n_common: int
    env_differences: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # about either run (duplicate rows, damaged lines)

    @property
    def unjudged(self) -> pd.DataFrame:
        """Rows of points the gate was asked to judge and could not (raw samples or rows missing)."""
        return self.rows[self.rows["verdict"] == S.CANNOT_JUDGE]

    @property
    def exit_code(self) -> int:
        """For CI: 1 when regressed, else 2 when a point could not be judged, else 0."""
        return 1 if self.regressed else (2 if len(self.unjudged) else 0)

    def write(self, out_dir: str | os.PathLike) -> list[Path]:
        """Write ``compare.md`` and ``compare.csv`` into ``out_dir``; return their paths."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / COMPARE_MD).write_text(self.markdown)
        self.rows.to_csv(out / COMPARE_CSV, index=False)
        return [out / COMPARE_MD, out / COMPARE_CSV]


# ---------------------------------------------------------------------------- environment


def env_differences(base_env: dict[str, Any], new_env: dict[str, Any]) -> list[str]:
    """What differs between two fingerprints in ways that matter for timing (empty: comparable);
    see :func:`harness.measure.env.comparable`."""
    return list(comparable(base_env or {}, new_env or {}))


# ---------------------------------------------------------------------------- thresholds


def _regression_cfg(run: RunData) -> dict[str, Any]:
    cfg = run.suite.get("regression") or {}
    return cfg if isinstance(cfg, dict) else {}


def latency_threshold(suite_regression: dict[str, Any], cli_threshold: float | None) -> float:
    """Relative latency threshold: CLI > ``per_metric[latency_median_ms]`` > ``threshold`` > 0.05."""
    if cli_threshold is not None:
        return float(cli_threshold)
    per_metric = suite_regression.get("per_metric") or {}
    for key in LATENCY_KEYS:
        if per_metric.get(key) is not None:
            return float(per_metric[key])
    if suite_regression.get("threshold") is not None:
        return float(suite_regression["threshold"])
    return DEFAULT_THRESHOLD


def instructions_threshold(suite_regression: dict[str, Any], cli_threshold: float | None) -> float:
    """Relative instruction-count threshold: CLI > ``per_metric[instructions]`` > 0.01 (the suite's
    latency ``threshold`` does not apply: counts are not noisy like times)."""
    if cli_threshold is not None:
        return float(cli_threshold)
    value = (suite_regression.get("per_metric") or {}).get(C.INSTRUCTIONS)
    return DEFAULT_INSTRUCTIONS_THRESHOLD if value is None else float(value)


def quality_tolerance(
    col: str, metrics: dict[str, Any], suite_regression: dict[str, Any]
) -> float | None:
    """Absolute tolerance for a q_/fid_ column: metrics.json, else suite per_metric, else None."""
    info = metrics.get(col) or {}
    if isinstance(info, dict) and info.get("tolerance") is not None:
        try:
            return float(info["tolerance"])
        except (TypeError, ValueError):
            raise CompareError(f"metrics.json: the tolerance of {col} is {info['tolerance']!r}, not a "
                               "number; restore the file from a copy of the run") from None
    per_metric = suite_regression.get("per_metric") or {}
    if per_metric.get(col) is not None:
        return float(per_metric[col])
    return None


# ---------------------------------------------------------------------------- comparison


def _last_by_hash(points: pd.DataFrame) -> pd.DataFrame:
    return points.drop_duplicates(subset=[C.HASH], keep="last").set_index(C.HASH, drop=False)


def _samples_by_hash(samples: pd.DataFrame) -> dict[str, np.ndarray]:
    if samples.empty or C.DEVICE_MS not in samples.columns:
        return {}
    s = samples.dropna(subset=[C.DEVICE_MS])
    return {str(h): g[C.DEVICE_MS].to_numpy(float) for h, g in s.groupby(C.HASH)}


def _float(v: Any) -> float:
    try:
        return float(v) if not T.is_missing(v) else math.nan
    except (TypeError, ValueError):
        return math.nan


def _row(**kw: Any) -> dict[str, Any]:
    return {c: kw.get(c, math.nan if c not in ("config", "note", "verdict") else "") for c in ROW_COLUMNS}


def gpu_model_mismatches(base: pd.DataFrame, new: pd.DataFrame,
                         hashes: list[str]) -> list[tuple[str, str, str]]:
    """(hash, base GPU, new GPU) of paired points whose rows name different GPU models (rows
    without a ``gpu_name``, e.g. CPU points or older runs, never mismatch)."""
    if C.GPU_NAME not in base.columns or C.GPU_NAME not in new.columns:
        return []
    out = []
    for h in hashes:
        b, n = base.at[h, C.GPU_NAME], new.at[h, C.GPU_NAME]
        if not (T.is_missing(b) or T.is_missing(n)) and b != n:
            out.append((h, str(b), str(n)))
    return out


def compare_runs(
    base_dir: str | os.PathLike,
    new_dir: str | os.PathLike,
    *,
    threshold: float | None = None,
    alpha: float | None = None,
    allow_env_mismatch: bool = False,
    allow_missing: bool = False,
    n_boot: int = 2000,
    seed: int = 0,
) -> CompareResult:
    """Compare two run directories point by point; see the module docstring for the rules.

    threshold: relative latency change that counts (0.05 = 5%); None takes the new run's suite
    ``regression.per_metric[latency_median_ms]``, then ``regression.threshold``, then 0.05.
    alpha: significance level; None takes the new suite's ``regression.alpha``, else 0.01.
    A point ok in base but absent from new (a crash that never became a failed row) is a
    regression unless ``allow_missing``. Raises CompareError when the environments differ
    (unless ``allow_env_mismatch``) or when no point is ok in base and present in new.
    """
    base, new = load(base_dir), load(new_dir)
    _check_finished(base, new)
    diffs = _env_check(base, new, allow_env_mismatch)
    if diffs and not allow_env_mismatch:
        raise CompareError(
            f"Refusing to compare {base.path} with {new.path}: their environment fingerprints differ "
            f"in what matters for timing ({'; '.join(diffs)}). Latencies measured under different "
            "conditions are not comparable, so a verdict would be meaningless; run the base and the "
            "new revision in the same job on the same machine with the same settings, or pass "
            "--allow-env-mismatch (allow_env_mismatch=True from Python) to compare anyway with the "
            "differences listed in the report."
        )
    reg = _regression_cfg(new)
    thr = latency_threshold(reg, threshold)
    instr_thr = instructions_threshold(reg, threshold)
    a = float(alpha) if alpha is not None else float(reg.get("alpha") or DEFAULT_ALPHA)
    if not 0 < a < 1:  # also refuses nan
        raise ValueError(f"the significance level (--alpha, else the suite's regression.alpha) must be in "
                         f"(0, 1), got {a}")
    for value, what in ((thr, "latency threshold (--threshold, else the suite's regression.threshold)"),
                        (instr_thr, "instruction-count threshold (--threshold, else the suite's "
                                    "regression.per_metric.instructions)")):
        if not (math.isfinite(value) and value >= 0):  # nan or inf would switch the gate off
            raise ValueError(f"the {what} must be a finite number >= 0 (0.05 = 5%), got {value}")
    bp, np_ = _last_by_hash(base.points), _last_by_hash(new.points)
    both, common = _paired_points(base, new, bp, np_, allow_env_mismatch)
    axes = T.varying_columns(pd.concat([bp, np_], ignore_index=True))
    label_axes = [x for x in axes if x != C.METHOD]

    def label(h: str) -> str:
        row = np_.loc[h] if h in np_.index else bp.loc[h]
        return T.method_label(row, label_axes)

    bs, ns = _samples_by_hash(base.samples), _samples_by_hash(new.samples)
    rows: list[dict[str, Any]] = []
    for h in common:
        b_row, n_row = bp.loc[h], np_.loc[h]
        if n_row[C.STATUS] != C.OK:
            rows.append(_row(**{C.HASH: h}, config=label(h), kind=KIND_STATUS, metric=C.STATUS,
                             verdict=S.REGRESSION,
                             note=f"ok -> {n_row[C.STATUS]}: {T.short_error(n_row.get(C.ERROR))}"))
            continue
        if _counted(b_row) or _counted(n_row):  # counted instructions: the times are valgrind's
            rows.append(_instructions_row(h, label(h), b_row, n_row, instr_thr, allow_missing))
        else:
            rows.append(_latency_row(h, label(h), b_row, n_row, bs.get(h), ns.get(h), thr, a, n_boot, seed,
                                     _no_samples_why(base, new, bs, ns, h), allow_missing))
        rows += _quality_rows(h, label(h), b_row, n_row, base, new, reg)
    only_base = [h for h in bp.index if h not in np_.index]
    elsewhere = _other_suite(base, new)
    rows += _status_rows(bp, np_, both, only_base, label, allow_missing, new.damaged, bool(elsewhere))
    df = pd.DataFrame(rows, columns=list(ROW_COLUMNS))
    regressed = bool((df["verdict"] == S.REGRESSION).any())
    only_new = [h for h in np_.index if h not in bp.index]
    warnings = [f"{name} run {run.path}: {w}" for name, run in (("base", base), ("new", new))
                for w in run_status(run).warnings()] + ([elsewhere] if elsewhere else [])
    md = _markdown(base, new, df, regressed, (thr, instr_thr), a, diffs, only_base, only_new, warnings)
    return CompareResult(rows=df, markdown=md, regressed=regressed, n_common=len(common),
                         env_differences=diffs, warnings=warnings)


def _check_finished(*runs: RunData) -> None:
    """CompareError for a run another process is still writing: its points are not all there yet."""
    for run in runs:
        holder = lock_holder(run.path)
        if holder is not None:
            raise CompareError(
                f"Refusing to compare: {run.path} is still being written by {holder}, so its points are not "
                "all recorded yet and missing ones would read as regressions. Compare once that run has "
                "finished."
            )


def _env_check(base: RunData, new: RunData, allow_env_mismatch: bool) -> list[str]:
    """What differs between the fingerprints; a missing ``env.json`` is refused (CompareError)
    unless allowed, since without it the gate cannot tell that both ran on the same machine."""
    missing = [run.path for run in (base, new) if not (run.env.get(DEVICE_KIND) and run.env.get(TORCH))]
    if missing and not allow_env_mismatch:
        raise CompareError(
            f"Refusing to compare: {' and '.join(map(str, missing))} has no {ENV_FILE}, or one without a "
            "fingerprint (device kind, torch version), so the gate cannot check that both runs measured the "
            f"same hardware and software. Restore {ENV_FILE} from a copy of the run, or pass "
            "--allow-env-mismatch to compare anyway."
        )
    if missing:
        return [f"{ENV_FILE} missing from {p}" for p in missing]
    return env_differences(base.env, new.env)


def _no_samples_why(base: RunData, new: RunData, bs: dict[str, np.ndarray], ns: dict[str, np.ndarray],
                    h: str) -> str:
    """Why a point has no raw samples on a side ("" when it has them on both)."""
    why = []
    for name, run, got in (("base", base, bs), ("new", new, ns)):
        if h not in got:
            files = [f for f in (SAMPLES_LOG, SAMPLES_FILE) if (run.path / f).exists()]
            gone = "" if files else f" ({SAMPLES_LOG} and {SAMPLES_FILE} are missing)"
            why.append(f"{name} has none{gone}")
    return "; ".join(why)


def _paired_points(base: RunData, new: RunData, bp: pd.DataFrame, np_: pd.DataFrame,
                   allow_env_mismatch: bool) -> tuple[list[str], list[str]]:
    """(hashes in both runs, those of them ok in base); CompareError when there is nothing to gate
    or paired points ran on different GPU models."""
    both = [h for h in bp.index if h in np_.index]
    empty = [run.path for run, pts in ((base, bp), (new, np_)) if pts.empty]
    if empty:
        raise CompareError(f"Refusing to compare: {' and '.join(map(str, empty))} has no recorded point (an "
                           "empty or lost points log); finish or re-run it first")
    if not both:
        raise CompareError(
            f"Refusing to compare {base.path} with {new.path}: they have no point in common "
            f"({len(bp)} points in base, {len(np_)} in new, none with the same point_hash). A point "
            "hash covers the workload, method and every resolved parameter, so the two runs must "
            "sweep at least one identical configuration (same suite, preset and --set overrides)."
        )
    common = [h for h in both if bp.at[h, C.STATUS] == C.OK]
    if not common:
        raise CompareError(
            f"Refusing to compare {base.path} with {new.path}: none of the {len(both)} shared points "
            "finished ok in the base run, so there is no baseline to gate against; fix or rerun the "
            "base first."
        )
    mixed = gpu_model_mismatches(bp, np_, common)
    if mixed and not allow_env_mismatch:
        shown = "; ".join(f"{h}: {b} vs {n}" for h, b, n in mixed[:3]) + ("; ..." if len(mixed) > 3 else "")
        raise CompareError(
            f"Refusing to compare {base.path} with {new.path}: {len(mixed)} paired point(s) ran on different "
            f"GPU models ({shown}). Their latencies measure the GPUs, not the code; pin both runs to one "
            "GPU model (one node type in the Ray cluster or job array), or pass --allow-env-mismatch."
        )
    return both, common


def _other_suite(base: RunData, new: RunData) -> str:
    """When the runs resolved different suites and new finished all of its own points: the note
    saying so (points only in base are then not in new's suite, not lost); else ""."""
    b, n = base.manifest, new.manifest
    if b.get("suite_hash") == n.get("suite_hash"):
        return ""
    status = run_status(new)
    if status.running is not None or status.missing:
        return ""  # an incomplete new run: a point it lacks may have crashed it
    return (f"the runs resolved different suites ({b.get('suite')!r} {b.get('suite_hash')} vs "
            f"{n.get('suite')!r} {n.get('suite_hash')}): points pair by configuration, and base's points "
            "that new's complete suite does not have are not compared")


def _status_rows(bp: pd.DataFrame, np_: pd.DataFrame, both: list[str], only_base: list[str],
                 label: Any, allow_missing: bool, damaged: list[DamagedLine],
                 other_suite: bool = False) -> list[dict[str, Any]]:
    """Rows for points fixed in new (not ok -> ok) and for points ok in base but missing from new
    (a regression; "cannot judge" when a damaged line of new's points log names it; "not gated"
    when new is a complete run of another suite)."""
    hidden = {d.point_hash: d for d in damaged if d.point_hash}
    rows = []
    for h in both:
        if bp.at[h, C.STATUS] != C.OK and np_.at[h, C.STATUS] == C.OK:
            rows.append(_row(**{C.HASH: h}, config=label(h), kind=KIND_STATUS, metric=C.STATUS,
                             verdict=S.FIXED, note=f"{bp.at[h, C.STATUS]} -> ok"))
    for h in only_base:
        if bp.at[h, C.STATUS] != C.OK:
            continue
        if h in hidden:
            verdict, note = S.CANNOT_JUDGE, f"ok in base; in new, {hidden[h].describe()}"
        elif other_suite:
            verdict, note = S.NOT_GATED, "not in new's suite (a complete run of another suite)"
        else:
            verdict, note = S.REGRESSION, "ok in base, missing from new (its run never recorded it)"
        if allow_missing:
            verdict, note = S.NOT_GATED, note + " (allowed)"
        rows.append(_row(**{C.HASH: h}, config=label(h), kind=KIND_STATUS, metric=C.STATUS,
                         verdict=verdict, note=note))
    return rows


def _latency_row(
    h: str, config: str, b_row: pd.Series, n_row: pd.Series, b: np.ndarray | None,
    n: np.ndarray | None, thr: float, alpha: float, n_boot: int, seed: int, why: str = "",
    allow_missing: bool = False,
) -> dict[str, Any]:
    """The latency verdict of one point; without raw samples on a side, "cannot judge" (the stored
    medians shown; "not gated" with ``allow_missing``)."""
    b = b if b is not None else np.empty(0)
    n = n if n is not None else np.empty(0)
    if b.size == 0 or n.size == 0:
        bm, nm = _float(b_row.get(C.LAT_MEDIAN)), _float(n_row.get(C.LAT_MEDIAN))
        ratio = nm / bm if bm and not math.isnan(bm) else math.nan
        verdict = S.NOT_GATED if allow_missing else S.CANNOT_JUDGE
        return _row(**{C.HASH: h}, config=config, kind=KIND_LATENCY, metric=C.LAT_MEDIAN, base=bm,
                    new=nm, ratio=ratio, delta=nm - bm, n_base=b.size, n_new=n.size, threshold=thr,
                    verdict=verdict, note=f"raw samples missing ({why or 'none recorded'})"
                    + (" (allowed)" if allow_missing else ""))
    rng = np.random.default_rng([seed, zlib.crc32(h.encode())])
    ratio = S.median_ratio(b, n)
    lo, hi = S.bootstrap_ratio_ci(b, n, n_boot=n_boot, rng=rng, level=CI_LEVEL)
    p = S.mann_whitney_p(b, n)
    bm, nm = float(np.median(b)), float(np.median(n))
    verdict, note = S.classify_latency(ratio, p, alpha, thr), ""
    floor = S.smallest_p(b.size, n.size)
    if verdict == S.NOISE and floor >= alpha:  # beyond the threshold, but no test could show it
        verdict = S.NOT_GATED if allow_missing else S.CANNOT_JUDGE
        note = (f"changed beyond the threshold, but {b.size} vs {n.size} samples cannot reach p < {alpha:g} "
                f"(their smallest p is {floor:.2g}); take more samples (timing.min_samples)"
                + (" (allowed)" if allow_missing else ""))
    return _row(**{C.HASH: h}, config=config, kind=KIND_LATENCY, metric=C.LAT_MEDIAN, base=bm, new=nm,
                ratio=ratio, delta=nm - bm, ci_low=lo, ci_high=hi, p_value=p, n_base=b.size,
                n_new=n.size, threshold=thr, verdict=verdict, note=note)


def _counted(row: pd.Series) -> bool:
    """Whether the point's instructions were counted (``timing.mode: instructions``)."""
    return not math.isnan(_float(row.get(C.INSTRUCTIONS)))


def _instructions_row(h: str, config: str, b_row: pd.Series, n_row: pd.Series, thr: float,
                      allow_missing: bool = False) -> dict[str, Any]:
    """The instruction-count verdict of one point (:func:`reports.stats.classify_counts`); a point
    counted on one side and timed on the other cannot be judged."""
    bm, nm = _float(b_row.get(C.INSTRUCTIONS)), _float(n_row.get(C.INSTRUCTIONS))
    common = dict(kind=KIND_INSTRUCTIONS, metric=C.INSTRUCTIONS, base=bm, new=nm, threshold=thr,
                  n_base=_float(b_row.get(C.N_SAMPLES)), n_new=_float(n_row.get(C.N_SAMPLES)))
    if math.isnan(bm) or math.isnan(nm):
        timed = "base" if math.isnan(bm) else "new"
        verdict = S.NOT_GATED if allow_missing else S.CANNOT_JUDGE
        return _row(**{C.HASH: h}, config=config, verdict=verdict, **common,
                    note=f"{timed} timed this point and the other run counted its instructions: compare two "
                    "runs of the same timing.mode" + (" (allowed)" if allow_missing else ""))
    ratio = nm / bm if bm > 0 else math.nan
    # how much each side's counts varied between its samples: (max - min) / median (NaN: cannot judge)
    spreads = [_float(row.get(C.INSTRUCTIONS_SPREAD)) for row in (b_row, n_row)]
    noise = math.nan if any(math.isnan(s) for s in spreads) else max(spreads)
    verdict = S.classify_counts(ratio, noise, thr)
    note = f"counts vary by {noise:.3%} between samples" if noise > 0 else "counts repeat exactly"
    if verdict == S.CANNOT_JUDGE:
        note += (f": too much to tell a {ratio - 1:+.2%} change from the {thr:.2%} threshold (count with "
                 "threads: 1, as the counts of other threads' spinning vary)")
    return _row(**{C.HASH: h}, config=config, ratio=ratio, delta=nm - bm, verdict=verdict, note=note,
                **common)


def _quality_rows(
    h: str, config: str, b_row: pd.Series, n_row: pd.Series, base: RunData, new: RunData,
    reg: dict[str, Any],
) -> list[dict[str, Any]]:
    out = []
    metrics = {**base.metrics, **new.metrics}
    cols = [c for c in new.points.columns if str(c).startswith((C.QUALITY_PREFIX, C.FIDELITY_PREFIX))
            and c in base.points.columns]
    for col in cols:
        bv, nv = _float(b_row.get(col)), _float(n_row.get(col))
        if math.isnan(bv) and math.isnan(nv):
            continue
        info = metrics.get(col) or {}
        hib = info.get("higher_is_better") if isinstance(info, dict) else None
        tol = quality_tolerance(col, metrics, reg)
        verdict = S.classify_quality(bv, nv, tol, hib)
        note = "" if verdict != S.NOT_GATED else (
            "no tolerance in metrics.json or regression.per_metric" if tol is None else "no direction")
        kind = "quality" if col.startswith(C.QUALITY_PREFIX) else "fidelity"
        out.append(_row(**{C.HASH: h}, config=config, kind=kind, metric=col, base=bv, new=nv,
                        delta=nv - bv, threshold=math.nan if tol is None else tol, verdict=verdict,
                        note=note))
    return out


# ---------------------------------------------------------------------------- markdown


def _verdict_cell(v: str) -> str:
    return f"**{v.upper()}**" if v in (S.REGRESSION, S.CANNOT_JUDGE) else v


def _p_text(p: float) -> str:
    return "" if math.isnan(p) else ("<1e-4" if p < 1e-4 else T.fmt_num(p))


def _latency_table(lat: pd.DataFrame) -> str:
    order = {S.REGRESSION: 0, S.CANNOT_JUDGE: 1, S.IMPROVEMENT: 2, S.NOISE: 3, S.NOT_GATED: 4, S.NO_CHANGE: 5}
    lat = lat.assign(__o=lat["verdict"].map(order).fillna(9)).sort_values(
        ["__o", "ratio"], ascending=[True, False], kind="stable")
    table = pd.DataFrame({
        "point": lat[C.HASH].str[: T.HASH_SHORT],
        "config": lat["config"],
        "base ms": lat["base"].map(T.fmt_num),
        "new ms": lat["new"].map(T.fmt_num),
        "ratio": lat["ratio"].map(T.fmt_num),
        f"{int(CI_LEVEL * 100)}% CI": [
            "" if math.isnan(lo) else f"[{T.fmt_num(lo)}, {T.fmt_num(hi)}]"
            for lo, hi in zip(lat["ci_low"], lat["ci_high"])
        ],
        "p": lat["p_value"].map(_p_text),
        "n": [f"{int(a)}/{int(b)}" for a, b in zip(lat["n_base"], lat["n_new"])],
        "verdict": lat["verdict"].map(_verdict_cell),
    })
    return T.to_markdown(table)


def _instructions_table(ins: pd.DataFrame) -> str:
    order = {S.REGRESSION: 0, S.CANNOT_JUDGE: 1, S.IMPROVEMENT: 2, S.NOT_GATED: 3, S.NO_CHANGE: 4}
    ins = ins.assign(__o=ins["verdict"].map(order).fillna(9)).sort_values(
        ["__o", "ratio"], ascending=[True, False], kind="stable")
    table = pd.DataFrame({
        "point": ins[C.HASH].str[: T.HASH_SHORT],
        "config": ins["config"],
        "base instructions": ins["base"].map(lambda v: "" if math.isnan(v) else f"{v:,.0f}"),
        "new instructions": ins["new"].map(lambda v: "" if math.isnan(v) else f"{v:,.0f}"),
        "change": ins["ratio"].map(lambda r: "" if math.isnan(r) else f"{r - 1:+.3%}"),
        "verdict": ins["verdict"].map(_verdict_cell),
        "note": ins["note"],
    })
    return T.to_markdown(table)


def _quality_table(q: pd.DataFrame) -> str:
    table = pd.DataFrame({
        "point": q[C.HASH].str[: T.HASH_SHORT],
        "config": q["config"],
        "metric": q["metric"],
        "base": q["base"].map(T.fmt_num),
        "new": q["new"].map(T.fmt_num),
        "change": q["delta"].map(lambda d: "" if math.isnan(d) else ("+" if d > 0 else "") + T.fmt_num(d)),
        "tolerance": q["threshold"].map(T.fmt_num),
        "verdict": q["verdict"].map(_verdict_cell),
        "note": q["note"],
    })
    return T.to_markdown(table)


def _instructions_line(ins: pd.DataFrame, thr: float) -> str:
    n = ins["verdict"].value_counts()
    parts = [f"{int(n.get(S.REGRESSION, 0))} of {len(ins)} points execute more than {thr:.2%} more "
             "instructions per call", f"{int(n.get(S.IMPROVEMENT, 0))} fewer",
             f"{int(n.get(S.NO_CHANGE, 0))} unchanged"]
    if n.get(S.CANNOT_JUDGE, 0):
        parts.append(f"**{int(n[S.CANNOT_JUDGE])} could not be judged** (counts that vary too much, or a run "
                     "that timed instead of counting)")
    return "Instructions: " + "; ".join(parts) + "."


def _markdown(
    base: RunData, new: RunData, df: pd.DataFrame, regressed: bool, thresholds: tuple[float, float],
    alpha: float, diffs: Sequence[str], only_base: Sequence[str], only_new: Sequence[str],
    warnings: Sequence[str] = (),
) -> str:
    """Length: one section after another, in the order a reader looks for them."""
    thr, instr_thr = thresholds
    ins = df[df["kind"] == KIND_INSTRUCTIONS]
    lat = df[df["kind"] == KIND_LATENCY]
    n_common = len(lat)
    qual = df[df["kind"].isin(["quality", "fidelity"])]
    status = df[df["kind"] == KIND_STATUS]
    n_lat = lat["verdict"].value_counts()
    n_q_reg = int((qual["verdict"] == S.REGRESSION).sum())
    n_s_reg = int((status["verdict"] == S.REGRESSION).sum())
    head = "REGRESSED" if regressed else (
        "CANNOT JUDGE" if (df["verdict"] == S.CANNOT_JUDGE).any() else "no regression")
    lines = [f"## Benchmark comparison: {head}", ""]
    parts = [
        f"{int(n_lat.get(S.REGRESSION, 0))} of {n_common} points slower by more than {thr:.0%} "
        f"(p < {alpha:g})",
        f"{int(n_lat.get(S.IMPROVEMENT, 0))} faster",
        f"{int(n_lat.get(S.NOISE, 0))} changed beyond the threshold without significance (noise)",
        f"{int(n_lat.get(S.NO_CHANGE, 0))} unchanged",
    ]
    if n_lat.get(S.CANNOT_JUDGE, 0):
        parts.append(f"**{int(n_lat[S.CANNOT_JUDGE])} could not be judged** (raw samples missing, or too few "
                     "to show a change significant)")
    if n_lat.get(S.NOT_GATED, 0):
        parts.append(f"{int(n_lat[S.NOT_GATED])} without raw samples (allowed, not gated)")
    if len(lat) or not len(ins):
        lines.append("Latency: " + "; ".join(parts) + ".")
    if len(ins):
        lines.append(_instructions_line(ins, instr_thr))
    gated_q = qual[qual["verdict"] != S.NOT_GATED]
    lines.append(f"Quality/fidelity: {n_q_reg} regression(s) among {len(gated_q)} gated values"
                 f" ({len(qual) - len(gated_q)} not gated).")
    if len(status):
        n_fixed = int((status["verdict"] == S.FIXED).sum())
        lines.append(f"Status: {n_s_reg} point(s) no longer finish ok; {n_fixed} now finish ok.")
    lines += [
        "",
        f"- **base**: {base.manifest.get('run_id') or base.path.name} (`{base.path}`)",
        f"- **new**: {new.manifest.get('run_id') or new.path.name} (`{new.path}`)",
    ]
    if len(lat) or not len(ins):
        lines += [
            f"- **rule**: regression when Mann–Whitney p < {alpha:g} and median ratio new/base − 1 > "
            f"{thr:g}; CI is a {int(CI_LEVEL * 100)}% bootstrap interval of the ratio",
        ]
    if len(ins):
        lines += [f"- **rule (instructions)**: regression when the median count's ratio new/base − 1, less "
                  f"the counts' spread, exceeds {instr_thr:g}"]
    if len(lat) or not len(ins):
        lines += ["", "### Latency", "", _latency_table(lat) if len(lat) else "_(no point ok in both runs)_"]
    if len(ins):
        lines += ["", "### Instructions", "", _instructions_table(ins)]
    blind = lat[lat["verdict"].isin([S.CANNOT_JUDGE, S.NOT_GATED])]
    if len(blind):
        lines += ["", "### Latency not judged", "", T.to_markdown(pd.DataFrame({
            "point": blind[C.HASH].str[: T.HASH_SHORT], "config": blind["config"],
            "verdict": blind["verdict"].map(_verdict_cell), "why": blind["note"]}))]
    changed_q = qual[qual["verdict"].isin([S.REGRESSION, S.IMPROVEMENT]) | (qual["delta"].fillna(1) != 0)]
    if len(changed_q):
        lines += ["", "### Quality and fidelity", "", _quality_table(changed_q)]
    if len(status):
        table = pd.DataFrame({
            "point": status[C.HASH].str[: T.HASH_SHORT], "config": status["config"],
            "verdict": status["verdict"].map(_verdict_cell), "note": status["note"].str.replace("|", "\\|"),
        })
        lines += ["", "### Status changes", "", T.to_markdown(table)]
    notes = []
    few = lat[(lat["n_base"] < FEW_SAMPLES) | (lat["n_new"] < FEW_SAMPLES)]
    if len(few):
        notes.append(f"{len(few)} point(s) have fewer than {FEW_SAMPLES} samples on a side: their bootstrap "
                     "CIs are too narrow to trust and the test has little power; rerun with more samples.")
    if diffs:
        notes.append("Environments differ (compared anyway): " + "; ".join(diffs) + ".")
    if only_base:
        notes.append(f"{len(only_base)} point(s) only in base: missing points that were ok in base fail "
                     "the gate unless --allow-missing (see Status changes).")
    if only_new:
        notes.append(f"{len(only_new)} point(s) only in new (not compared).")
    notes += [f"Warning: {w}." for w in warnings]
    if notes:
        lines += ["", "### Notes", ""] + [f"- {n}" for n in notes]
    return "\n".join(lines) + "\n"
