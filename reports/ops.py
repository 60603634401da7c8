"""Where each method spends its time, from a profiled run's operator table (``harness report --ops``).

For every workload setting (e.g. a frame count): the CPU time of each variant split by method
phase (match / aggregate / attention / outside any phase: the HTTM paper's Table 4 categories),
then each variant's top operators. Times are self milliseconds per profiled call: device (kernel)
time when the profile recorded any (a CUDA run), else CPU time.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from harness.measure.profiling import ProfileSchedule
from harness.store import OPS_LOG, DamagedLine, RunData, load, read_ops
from harness.store import columns as C
from reports import tables as T

OUTSIDE = "(outside)"  # operators outside every method phase
TOP_OPS = 5
NAME_CHARS = 44


def time_column(ops: pd.DataFrame) -> str:
    """``self_device_us`` when the profile holds device time (CUDA kernels), else ``self_cpu_us``."""
    has_device = "self_device_us" in ops.columns and float(ops["self_device_us"].fillna(0).sum()) > 0
    return "self_device_us" if has_device else "self_cpu_us"


def ops_tables(run: RunData, top: int = TOP_OPS) -> list[tuple[str, pd.DataFrame, dict[str, pd.DataFrame]]]:
    """[(workload setting, phase table, {variant: top operators})]; empty without an op table."""
    ops = read_ops(run.path)
    if ops.empty:
        return []
    calls = ProfileSchedule().active
    labels, _ = T.variants(run.points, run.suite)
    pts = run.points.assign(**{T.VARIANT: labels})
    specific = set(T.method_specific_params(pts, run.suite))
    axes = [c for c in T.swept_axes(run) if c != C.METHOD and c not in specific]
    def setting(row: pd.Series) -> str:
        return ", ".join(f"{a}={v}" for a, v in row.items())

    pts["setting"] = pts[axes].astype(str).apply(setting, axis=1) if axes else "all points"
    ops = ops.merge(pts[[C.HASH, T.VARIANT, "setting"]], on=C.HASH)
    ops["ms"] = ops[time_column(ops)] / 1e3 / calls
    ops["phase"] = ops["phase"].replace("", OUTSIDE)
    out = []
    for setting, rows in ops.groupby("setting", sort=False):
        phases = rows.pivot_table(index=T.VARIANT, columns="phase", values="ms", aggfunc="sum",
                                  fill_value=0.0)
        order = [p for p in ("match", "aggregate", "attention", OUTSIDE) if p in phases.columns]
        phases = phases[order]
        phases["total"] = phases.sum(axis=1)
        phases = phases.loc[sorted(phases.index, key=T.variant_order(run.suite.get("reference")))]
        tops = {}
        for variant, vrows in rows.groupby(T.VARIANT, sort=False):
            best = vrows.sort_values("ms", ascending=False).head(top)
            tops[str(variant)] = pd.DataFrame({
                "operator": best["name"].str.slice(0, NAME_CHARS), "phase": best["phase"],
                "calls": (best["calls"] / calls).map(T.fmt_num), "ms": best["ms"].map(T.fmt_num)})
        out.append((str(setting), phases.reset_index(), tops))
    return out


def ops_report(run_dir: str | Path, top: int = TOP_OPS) -> str:
    """The text ``harness report --ops`` prints (Markdown tables, under 100 columns)."""
    run = load(run_dir)
    damaged: list[DamagedLine] = []
    read_ops(run.path, damaged)
    warn = [f"warning: {d.describe()}: its operator rows are left out" for d in damaged[:3]]
    tables = ops_tables(run, top)
    if not tables:
        if (run.path / OPS_LOG).exists():
            unreadable = (f"{run.path}: no row of its operator log ({OPS_LOG}) can be read; profile the run "
                          "again with `harness profile RUN`.")
            return "\n".join([*warn, unreadable]) + "\n"
        return (f"{run.path} has no operator table: profile it with `harness run SUITE --profile` "
                "(or `metrics: {profile: true}` in the suite).\n")
    kind = "device (CUDA kernel)" if time_column(read_ops(run.path)) == "self_device_us" else "CPU"
    lines = [*warn, f"Self {kind} time per profiled call (ms), by method phase.", f"run: {run.path}",
             f"traces: {run.path / 'profiles'}/ (open in https://ui.perfetto.dev)"]
    for setting, phases, tops in tables:
        shown = phases.copy()
        for col in shown.columns[1:]:
            shown[col] = shown[col].map(T.fmt_num)
        lines += ["", f"### {setting}", "", T.to_markdown(shown)]
        for variant, table in tops.items():
            lines += ["", f"top operators of {variant}:", "", T.to_markdown(table)]
    return "\n".join(lines) + "\n"
