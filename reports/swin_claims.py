"""The MixA-Q claim tables of a ``suites/swin-claims.yaml`` run (reads ``points.parquet`` only).

    python -m reports.swin_claims runs/swin-claims-<timestamp>

Rows with the same configuration except the seed (MixA-Q's random importance over seeds) are
one line: mean and sample standard deviation over the seeds. Prints Markdown tables:
importance (l2 / random / reversed) at equal BOPs, MixA-Q against uniform at round(equivalent
bits), MixA-Q against SparseViT-style pruning at equal BOPs, and the importance diagnostics.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

from harness.store import load


def _label(r: pd.Series) -> str:
    if r["method"] == "fp32":
        return "fp32"
    if r["method"] == "uniform":
        return f"uniform W{int(r['w_bits'])}A{int(r['a_bits'])}"
    if r["method"] == "sparsevit":
        return f"SparseViT-style pruning on W{int(r['w_bits'])}A{int(r['a_bits'])}"
    bits = f"W{int(r['w_bits'])} A{int(r['a_bits_high'])}/A{int(r['a_bits_low'])}"
    return f"MixA-Q {bits} r={r['ratio']:g} {r['importance']}"


def summarize(points: pd.DataFrame) -> pd.DataFrame:
    """One row per configuration (seeds pooled): counts, BOPs, top-1 and KL (mean, sd)."""
    d = points[points["status"] == "ok"].copy()
    d["config"] = d.apply(_label, axis=1)
    d["bops_key"] = d["work_bops_speedup"].round(3)
    g = d.groupby(["config", "bops_key"], sort=False)
    out = pd.DataFrame({
        "seeds": g.size(),
        "bops_speedup": g["work_bops_speedup"].mean(),
        "eq_act_bits": g["work_eq_act_bits"].mean(),
        "top1": g["q_top1"].mean(),
        "top1_sd": g["q_top1"].std(),
        "kl": g["fid_logit_kl"].mean(),
        "kl_sd": g["fid_logit_kl"].std(),
        "pruned_frac": g["work_pruned_window_frac"].mean(),
    })
    return out.reset_index().drop(columns="bops_key")


def _pm(mean: float, sd: float) -> str:
    return f"{mean:.4g}" if pd.isna(sd) else f"{mean:.4g} ± {sd:.2g}"


def markdown(summary: pd.DataFrame) -> str:
    lines = ["| config | seeds | BOPs speedup | eq. act. bits | top-1 | logit KL (nat) | pruned windows |",
             "|---|---|---|---|---|---|---|"]
    for _, r in summary.iterrows():
        lines.append(
            f"| {r['config']} | {r['seeds']} | {r['bops_speedup']:.3f} | {r['eq_act_bits']:.2f} | "
            f"{_pm(r['top1'], r['top1_sd'])} | {_pm(r['kl'], r['kl_sd'])} | {r['pruned_frac']:.3f} |"
        )
    return "\n".join(lines)


def diagnostics(points: pd.DataFrame) -> str:
    """Score spread per stage (fp32 rows) and importance-vs-sensitivity Spearman (mixaq rows)."""
    d = points[points["status"] == "ok"]
    cv = sorted(c for c in d.columns if c.startswith("work_score_cv_stage"))
    rho = sorted(c for c in d.columns if c.startswith("fid_imp_sens_spearman"))
    lines = []
    ref = d[d["method"] == "fp32"]
    if cv and len(ref):
        parts = [f"{c.removeprefix('work_score_cv_')} {ref[c].iloc[0]:.3f}" for c in cv]
        lines.append("score CV (fp32): " + ", ".join(parts))
    mix = d[d["method"] == "mixaq"]
    if rho and len(mix):
        for (hi, lo), grp in mix.groupby(["a_bits_high", "a_bits_low"]):
            parts = [f"{c.removeprefix('fid_imp_sens_spearman').lstrip('_') or 'mean'} {grp[c].mean():.3f}"
                     for c in rho]
            lines.append(f"Spearman(score, sensitivity) A{int(hi)}/A{int(lo)}: " + ", ".join(parts))
    return "\n".join(lines)


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
