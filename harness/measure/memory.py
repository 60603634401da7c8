"""CUDA memory snapshots (``harness run --memory-snapshot oom|all``).

With a mode set, torch's CUDA caching allocator records the history of every allocation of a
point (``torch.cuda.memory._record_memory_history``) and the run writes
``profiles/<point_hash>.memory.pickle`` (``torch.cuda.memory._dump_snapshot``) for a point that
ran out of memory (``oom``) or for every point (``all``). Open the file by dragging it onto
https://pytorch.org/memory_viz: the allocations over time with their Python stacks, and what
was alive at the moment of the failure.

Recording stacks costs time on every allocation, so the mode is off by default and the
latencies of a run with snapshots are not comparable with those of one without (the run's
manifest keeps the command line). CUDA only: the CPU allocator has no history; CPU points
report the peak RSS of their timed window (``rss_peak_mb``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

SNAPSHOT_MODES = ("oom", "all")
MAX_ENTRIES = 100_000  # allocation events kept per point (torch's ring buffer)
SNAPSHOT_SUFFIX = ".memory.pickle"


def _is_cuda(device: Any) -> bool:
    return str(device).startswith("cuda")


class MemorySnapshots:
    """Starts the allocator history for a point and writes its snapshot when the mode asks.

    mode: None (off), "oom" or "all"; profiles_dir: where snapshots go."""

    def __init__(self, mode: str | None, profiles_dir: Path) -> None:
        if mode is not None and mode not in SNAPSHOT_MODES:
            raise ValueError(f"memory snapshot mode {mode!r}; allowed: {', '.join(SNAPSHOT_MODES)}")
        self.mode = mode
        self.profiles_dir = Path(profiles_dir)
        self._recording = False

    def start(self, device: str) -> None:
        """Begin recording the allocations of the next point (CUDA devices only)."""
        if self.mode is None or not _is_cuda(device):
            return
        import torch

        torch.cuda.memory._record_memory_history(max_entries=MAX_ENTRIES)
        self._recording = True

    def finish(self, point_hash: str, oom: bool) -> Path | None:
        """Stop recording; write the snapshot when the mode asks for it. Returns its path."""
        if not self._recording:
            return None
        import torch

        path = None
        try:
            if self.mode == "all" or (oom and self.mode == "oom"):
                self.profiles_dir.mkdir(parents=True, exist_ok=True)
                path = self.profiles_dir / f"{point_hash}{SNAPSHOT_SUFFIX}"
                torch.cuda.memory._dump_snapshot(str(path))
        finally:
            torch.cuda.memory._record_memory_history(enabled=None)
            self._recording = False
        return path
