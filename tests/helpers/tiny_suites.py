"""Small suites shared by test modules (each runs in a few seconds on one CPU thread)."""

#: one VGGT-tiny global-attention layer: plain SDPA against HTTM, with the breakdown pass
VGGT_LAYER_BREAKDOWN = """\
name: layer
workload: vggt
reference: vggt
fixed: {preset: vggt-tiny, scope: attention, frames: 4, height: 56, width: 56, layer: 0, threads: 1}
methods:
  vggt: {}
  httm: {query_merge: 0.5, outlier_frac: 0.05, kv_merge: 0.5, head_groups: 4, n_s: 16, n_t: 2}
timing: {warmup_n: 1, min_samples: 3, max_samples: 3, budget_s: 5}
metrics: {breakdown: true}
"""
