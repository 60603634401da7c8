"""Metrics: quality against ground truth and fidelity against a reference run.

- :mod:`harness.metrics.geometry`: point clouds (Acc / Comp / NC), depth (AbsRel, delta<1.25),
  camera poses (RRE / RTE / AUC@30 / ATE), Sim(3) alignment, unprojection.
- :mod:`harness.metrics.fidelity`: relative errors, pose difference, cosine similarity,
  SQNR, KL divergence and top-1 agreement between a test run and the reference run.
- :mod:`harness.metrics.work`: work counters (FLOPs, BOPs).
- :mod:`harness.metrics.coco_eval`: COCO box and mask mAP of detector outputs (pycocotools).

Import the submodules directly; this package imports nothing on its own.
"""
