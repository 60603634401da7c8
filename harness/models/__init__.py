"""Model re-implementations used by the workloads (VGGT; the Swin wrapper lives in ``swin.py``, the
Swin Mask R-CNN in ``swin_det.py`` with mmdetection's checkpoint layout in ``mmdet_keys.py``)."""
