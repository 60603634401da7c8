"""The MixA-Q claim tables of a ``suites/swin-claims.yaml`` or ``suites/swin-det-claims.yaml`` run
(reads ``points.parquet`` only).

    python -m reports.swin_claims runs/swin-claims-<timestamp>

Rows with the same configuration except the seed (MixA-Q's random importance over seeds) are
one line: mean and sample standard deviation over the seeds. Prints Markdown tables:
importance (l2 / random / reversed) at equal BOPs, MixA-Q against uniform at round(equivalent
bits), MixA-Q against SparseViT-style pruning at equal BOPs, and the importance diagnostics.
Quality is top-1 and logit KL for the classifier (``swin``), box and mask mAP for the detector
(``swin-det``); a point on quantization-aware-trained weights names them (``on qat-...``). The
results pages show the same table (``<!-- generated:table claims -->``).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

from harness.store import load


def _qat(r: pd.Series) -> str:
    """`` QAT NAME`` of a point on quantization-aware-trained weights (``qat: proxy:NAME``), else ''."""
    qat = r.get("qat")
    if not isinstance(qat, str) or not qat:
        return ""
    return f" on {qat.removeprefix('proxy:')}"


def _base(r: pd.Series) -> str:
    return " RepQ-ViT" if r.get("ptq") == "repq" else ""


def _label(r: pd.Series) -> str:
    if r["method"] == "fp32":
        return "fp32"
    if r["method"] == "uniform":
        return f"uniform W{int(r['w_bits'])}A{int(r['a_bits'])}{_base(r)}{_qat(r)}"
    if r["method"] == "sparsevit":
        return f"SparseViT-style pruning on W{int(r['w_bits'])}A{int(r['a_bits'])}{_base(r)}{_qat(r)}"
    bits = f"W{int(r['w_bits'])} A{int(r['a_bits_high'])}/A{int(r['a_bits_low'])}"
    return f"MixA-Q {bits} r={r['ratio']:g} {r['importance']}{_base(r)}{_qat(r)}"


#: quality columns of each workload's claims table: (column, its name in the table), first is the headline
QUALITY = {
    "q_top1": (("q_top1", "top-1"), ("fid_logit_kl", "logit KL (nat)")),
    "q_bbox_map": (("q_bbox_map", "box mAP"), ("q_segm_map", "mask mAP")),
}


def quality_columns(points: pd.DataFrame) -> tuple[tuple[str, str], ...]:
    """The (column, title) pairs of the claims table for these points (classification or detection)."""
    for headline, cols in QUALITY.items():
        if headline in points.columns:
            return tuple(c for c in cols if c[0] in points.columns)
    raise ValueError(f"no quality column in these points (expected one of {', '.join(QUALITY)})")


def summarize(points: pd.DataFrame) -> pd.DataFrame:
    """One row per configuration (seeds pooled): counts, BOPs, the quality columns (mean, sd)."""
    d = points[points["status"] == "ok"].copy()
    d["config"] = d.apply(_label, axis=1)
    d["bops_key"] = d["work_bops_speedup"].round(3)
    g = d.groupby(["config", "bops_key"], sort=False)
    out = pd.DataFrame({
        "seeds": g.size(),
        "bops_speedup": g["work_bops_speedup"].mean(),
        "eq_act_bits": g["work_eq_act_bits"].mean(),
    })
    for col, _ in quality_columns(d):
        out[col] = g[col].mean()
        out[f"{col}_sd"] = g[col].std()
    out["pruned_frac"] = g["work_pruned_window_frac"].mean()
    return out.reset_index().drop(columns="bops_key")


def _pm(mean: float, sd: float) -> str:
    if pd.isna(mean):
        return ""
    return f"{mean:.4g}" if pd.isna(sd) else f"{mean:.4g} ± {sd:.2g}"


def markdown(summary: pd.DataFrame) -> str:
    """The claims table: one line per configuration, quality as mean ± sd over seeds."""
    quality = [(c, t) for cols in QUALITY.values() for c, t in cols if c in summary.columns]
    lines = ["| config | seeds | BOPs speedup | eq. act. bits | " + " | ".join(t for _, t in quality)
             + " | pruned windows |",
             "|---|---|---|---|" + "---|" * len(quality) + "---|"]
    for _, r in summary.iterrows():
        cells = " | ".join(_pm(r[c], r[f"{c}_sd"]) for c, _ in quality)
        lines.append(f"| {r['config']} | {r['seeds']} | {r['bops_speedup']:.3f} | {r['eq_act_bits']:.2f} | "
                     f"{cells} | {r['pruned_frac']:.3f} |")
    return "\n".join(lines)


def diagnostics(points: pd.DataFrame) -> str:
    """Score spread per stage (fp32 rows) and importance-vs-sensitivity Spearman (mixaq rows that ran
    the diagnostic, per bit pair): a Markdown list."""
    d = points[points["status"] == "ok"]
    cv = sorted(c for c in d.columns if c.startswith("work_score_cv_stage"))
    rho = sorted(c for c in d.columns if c.startswith("fid_imp_sens_spearman"))
    lines = []
    ref = d[d["method"] == "fp32"]
    if cv and len(ref):
        parts = [f"{c.removeprefix('work_score_cv_')} {ref[c].iloc[0]:.3f}" for c in cv]
        lines.append("- window-score spread, std / mean (fp32): " + ", ".join(parts))
    mix = d[d["method"] == "mixaq"]
    if rho and len(mix):
        for (hi, lo), grp in mix.groupby(["a_bits_high", "a_bits_low"]):
            ran = grp.dropna(subset=["fid_imp_sens_spearman"]) if "fid_imp_sens_spearman" in grp else grp[:0]
            if ran.empty:
                continue
            parts = [f"{c.removeprefix('fid_imp_sens_spearman').lstrip('_') or 'mean'} {ran[c].mean():.3f}"
                     for c in rho]
            lines.append(f"- Spearman(window score, sensitivity) A{int(hi)}/A{int(lo)}, {len(ran)} point(s): "
                         + ", ".join(parts))
    return "\n".join(lines) or "_No window-score diagnostics in this run._"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m reports.swin_claims RUN_DIR", file=sys.stderr)
        return 2
    points = load(Path(args[0])).points
    print(markdown(summarize(points)))
    print()
    print(diagnostics(points))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
