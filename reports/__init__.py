"""Reports from run directories: tables, Markdown/CSV summaries, plots and the regression gate.

Everything here reads results files only (``harness.results.load``); no model or method is
imported.

- :mod:`reports.tables`: swept axes, speedup vs the reference, summary / failed / pivot tables.
- :mod:`reports.summary`: ``report(run_dir)`` -> ``report.md`` + ``points.csv``.
- :mod:`reports.plots`: ``plot_run(run_dir)`` -> PNG + SVG figures, ``pareto_front``.
- :mod:`reports.compare`: ``compare_runs(base_dir, new_dir)`` -> ``CompareResult`` (CI gate).
- :mod:`reports.stats`: bootstrap CI of a median ratio, Mann–Whitney U, verdict rules.
"""
