"""Workloads bind a model, its inputs, a method and the metrics for one sweep point."""
