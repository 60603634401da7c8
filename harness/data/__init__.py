"""Input data with ground truth: procedural multi-view scenes and RGB-D dataset readers.

- :mod:`harness.data.scenes`: ``SceneConfig`` / ``render_scene`` (synthetic rooms, exact depth,
  poses and point maps; no download).
- :mod:`harness.data.readers`: ``Frames``, ``read_7scenes``, ``read_nrgbd`` and
  ``to_model_input`` (VGGT's crop/pad sizing applied to images, depth and intrinsics).
- :mod:`harness.data.shapes`: ``make_shapes`` / ``shapes_images`` (labelled procedural object
  images for the Swin proxy; imported on demand, it needs timm through ``harness.models.swin``).
"""

from harness.data.readers import Frames, read_7scenes, read_nrgbd, to_model_input
from harness.data.scenes import Scene, SceneConfig, render_scene

__all__ = ["Frames", "Scene", "SceneConfig", "read_7scenes", "read_nrgbd", "render_scene", "to_model_input"]
