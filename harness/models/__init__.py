"""Model re-implementations used by the workloads (VGGT; the Swin wrapper lives in ``swin.py``)."""
