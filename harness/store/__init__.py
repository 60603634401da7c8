"""The run directory: files, lock, manifest, per-point writes, resume repairs, loading.

:mod:`~harness.store.columns` names every column of ``points.parquet``; the rest of this package
owns the on-disk format (nothing else writes a run directory).
"""
