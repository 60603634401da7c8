"""The MixA-Q claims table: seeds pooled per configuration, the workload's quality columns, and labels
that name the PTQ base and the quantization-aware-trained weights."""

from __future__ import annotations

import pandas as pd
import pytest

from reports.swin_claims import diagnostics, markdown, quality_columns, summarize


def det_points() -> pd.DataFrame:
    base = {"status": "ok", "w_bits": 4, "work_pruned_window_frac": 0.0, "qat": "", "ptq": "percentile"}
    rows = [
        {"method": "fp32", "work_bops_speedup": 1.0, "work_eq_act_bits": 32.0, "q_bbox_map": 0.83,
         "q_segm_map": 0.85},
        *[{"method": "mixaq", "a_bits_high": 4, "a_bits_low": 2, "ratio": 0.5, "importance": "random",
           "work_bops_speedup": 1.2563, "work_eq_act_bits": 3.0, "q_bbox_map": m, "q_segm_map": 0.8,
           "seed": s}
          for s, m in enumerate((0.70, 0.72, 0.74))],
        {"method": "mixaq", "a_bits_high": 4, "a_bits_low": 2, "ratio": 0.5, "importance": "random",
         "work_bops_speedup": 1.2563, "work_eq_act_bits": 3.0, "q_bbox_map": 0.79, "q_segm_map": 0.82,
         "qat": "proxy:saqa-swin-det-w4a4a2"},
        {"method": "uniform", "a_bits": 8, "ptq": "repq", "work_bops_speedup": 1.0, "work_eq_act_bits": 8.0,
         "q_bbox_map": 0.82, "q_segm_map": 0.85},
        {"method": "sparsevit", "a_bits": 4, "work_bops_speedup": 1.2563, "work_eq_act_bits": 3.0,
         "q_bbox_map": 0.5, "q_segm_map": 0.6, "work_pruned_window_frac": 0.2},
        {"method": "uniform", "a_bits": 4, "status": "error", "work_bops_speedup": 1.0,
         "work_eq_act_bits": 4.0, "q_bbox_map": None, "q_segm_map": None},
    ]
    return pd.DataFrame([{**base, **r} for r in rows])


def test_seeds_are_pooled_per_configuration_and_qat_weights_are_their_own_row():
    s = summarize(det_points()).set_index("config")
    rnd = s.loc["MixA-Q W4 A4/A2 r=0.5 random"]
    assert rnd["seeds"] == 3
    assert rnd["q_bbox_map"] == pytest.approx(0.72)
    assert rnd["q_bbox_map_sd"] == pytest.approx(0.02)  # the sample sd of 0.70, 0.72, 0.74
    assert s.loc["MixA-Q W4 A4/A2 r=0.5 random on saqa-swin-det-w4a4a2", "q_bbox_map"] == pytest.approx(0.79)
    assert "uniform W4A8 RepQ-ViT" in s.index
    assert s.loc["SparseViT-style pruning on W4A4", "pruned_frac"] == pytest.approx(0.2)
    assert "uniform W4A4" not in s.index  # a point that failed is not a claim


def test_the_table_shows_the_workload_s_quality_columns():
    det = det_points()
    assert [t for _, t in quality_columns(det)] == ["box mAP", "mask mAP"]
    text = markdown(summarize(det))
    assert text.splitlines()[0] == ("| config | seeds | BOPs speedup | eq. act. bits | box mAP | mask mAP | "
                                    "pruned windows |")
    assert "| MixA-Q W4 A4/A2 r=0.5 random | 3 | 1.256 | 3.00 | 0.72 ± 0.02 | 0.8 ± 0 | 0.000 |" in text
    cls = pd.DataFrame([{"method": "fp32", "status": "ok", "work_bops_speedup": 1.0, "work_eq_act_bits": 32.0,
                         "q_top1": 0.99, "fid_logit_kl": None, "work_pruned_window_frac": 0.0}])
    assert "| top-1 | logit KL (nat) |" in markdown(summarize(cls))
    with pytest.raises(ValueError, match="no quality column"):
        quality_columns(pd.DataFrame({"x": [1]}))


def test_diagnostics_list_the_score_spread_and_only_the_points_that_ran_the_sensitivity_probe():
    d = det_points()
    d["work_score_cv_stage0"] = [0.03] + [0.05] * (len(d) - 1)
    d["fid_imp_sens_spearman_stage0"] = None
    d["fid_imp_sens_spearman"] = None
    d.loc[1, ["fid_imp_sens_spearman_stage0", "fid_imp_sens_spearman"]] = [0.4, 0.4]
    d.loc[2, ["fid_imp_sens_spearman_stage0", "fid_imp_sens_spearman"]] = [0.2, 0.2]
    extra = d.iloc[[1]].assign(a_bits_high=8, a_bits_low=4, fid_imp_sens_spearman=None,
                               fid_imp_sens_spearman_stage0=None)
    lines = diagnostics(pd.concat([d, extra], ignore_index=True)).splitlines()
    assert lines == ["- window-score spread, std / mean (fp32): stage0 0.030",
                     "- Spearman(window score, sensitivity) A4/A2, 2 point(s): mean 0.300, stage0 0.300"]
    assert diagnostics(d.iloc[0:0]) == "_No window-score diagnostics in this run._"
