"""Input data with ground truth: procedural multi-view scenes and RGB-D dataset readers.

- :mod:`harness.data.scenes`: ``SceneConfig`` / ``render_scene`` (synthetic rooms, exact depth,
  poses and point maps; no download).
- :mod:`harness.data.readers`: ``Frames``, ``read_7scenes``, ``read_nrgbd`` and
  ``to_model_input`` (VGGT's crop/pad sizing applied to images, depth and intrinsics).
- :mod:`harness.data.shapes`: ``make_shapes`` / ``shapes_images`` (labelled procedural object
  images for the Swin proxy; imported on demand, it needs timm through ``harness.models.swin``).
- :mod:`harness.data.det_scenes`: ``make_det_scene`` / ``write_coco_folder`` (procedural detection
  scenes with COCO ground truth, for the detection proxy; imported on demand).
- :mod:`harness.data.coco`: ``read_coco`` / ``write_coco_gt`` (COCO-format folders, mmdetection's
  resize; imported on demand, it needs pycocotools).
"""

from harness.data.readers import Frames, read_7scenes, read_nrgbd, to_model_input
from harness.data.scenes import Scene, SceneConfig, render_scene

__all__ = ["Frames", "Scene", "SceneConfig", "read_7scenes", "read_nrgbd", "render_scene", "to_model_input"]
