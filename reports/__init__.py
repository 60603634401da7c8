"""Reports from run directories: tables, Markdown/CSV summaries, plots and the regression gate.

Everything here reads results files only (``harness.store.load``); no model or method is
imported.

- :mod:`reports.tables`: swept axes, speedup vs the reference, variant labels (``httm#3``),
  summary / failed / pivot tables.
- :mod:`reports.terminal`: the printed view, tables that fit 100 columns.
- :mod:`reports.summary`: ``report(run_dir)`` -> ``report.md`` + ``points.csv`` + ``report.html``.
- :mod:`reports.html`: the self-contained ``report.html`` (figures embedded as ``data:`` URIs).
- :mod:`reports.plots`: ``plot_run(run_dir)`` -> the overview and the detailed PNG + SVG figures,
  ``pareto_front``.
- :mod:`reports.status`: expected total, missing and duplicate points, a writer still at work.
- :mod:`reports.compare`: ``compare_runs(base_dir, new_dir)`` -> ``CompareResult`` (CI gate).
- :mod:`reports.stats`: bootstrap CI of a median ratio, Mann–Whitney U, verdict rules.
"""
