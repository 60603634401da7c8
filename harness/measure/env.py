"""Environment fingerprint: everything that decides whether two timings can be compared.

``fingerprint()`` is written to every run directory (``env.json``) and printed by
``harness env``; ``comparable(a, b)`` lists the differences that make timings incomparable.
Every probe is best effort: a missing package, git or GPU gives None, never an error.
"""

from __future__ import annotations

import datetime as _dt
import importlib.metadata
import os
import platform
import re
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

from harness.measure import cpu_alloc
from harness.measure.load import read_load_avg
from harness.measure.nvml import GPU_DRIVER as GPU_DRIVER  # env.json key; reports read it from here
from harness.measure.nvml import GPU_NAME, GPU_STATIC_KEYS, gpu_static_info
from harness.methods import kernels
from harness.store import columns as C
from harness.version import PACKAGE_PARENT, __version__

FINGERPRINT_VERSION = 1

# env.json keys that reports read (the fingerprint has more; these are the stable ones)
TORCH = "torch"
CUDA = "cuda"
TORCH_THREADS = "torch_threads"
DEVICE_KIND = "device_kind"
CPU_MODEL = "cpu_model"
GIT_COMMIT = "git_commit"
GIT_DIRTY = "git_dirty"
MERGE_KERNELS = "merge_kernels"
PLUGINS = "plugins"  # env.json: $HARNESS_PLUGINS modules and the methods they replaced
CPU_ALLOCATOR = "cpu_allocator"
GIT_TIMEOUT_S = 5.0
ENV_VARS = (
    "CUDA_VISIBLE_DEVICES", "CUDA_DEVICE_ORDER", "OMP_NUM_THREADS", "MKL_NUM_THREADS",
    "TIMM_FUSED_ATTN", "NOX_CURRENT_SESSION", "HARNESS_MERGE_KERNELS", "TRITON_INTERPRET",
)
CPU_GOVERNOR_PATH = Path("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor")


def _version(dist: str) -> str | None:
    """Installed version of a distribution, read from its metadata (no slow import)."""
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        module = sys.modules.get(dist)
        return str(getattr(module, "__version__", None) or "") or None


def _git(repo: Path, *args: str) -> str | None:
    try:
        proc = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True,
                              timeout=GIT_TIMEOUT_S, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return proc.stdout.strip() if proc.returncode == 0 else None


def git_info(path: str | Path) -> dict[str, Any]:
    """``{"git_commit", "git_dirty", "git_root"}`` of the checkout containing ``path``.

    All None when ``path`` is not inside a git work tree (or git is missing). ``git_commit`` is
    None in a repository without commits. Dirty means tracked files differ from HEAD
    (untracked files do not count, as with ``git describe --dirty``).
    """
    path = Path(path)
    info: dict[str, Any] = {GIT_COMMIT: None, GIT_DIRTY: None, "git_root": None}
    root = _git(path, "rev-parse", "--show-toplevel")
    if not root:
        return info
    info["git_root"] = root
    info[GIT_COMMIT] = _git(path, "rev-parse", "--verify", "--quiet", "HEAD") or None
    status = _git(path, "status", "--porcelain", "--untracked-files=no")
    info[GIT_DIRTY] = None if status is None else bool(status)
    return info


def cpu_model() -> str | None:
    """The CPU's marketing name from /proc/cpuinfo, else ``platform.processor()``."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name" and value.strip():
                    return value.strip()
    except OSError:
        pass
    return platform.processor() or None


def _cpu_governor() -> str | None:
    try:
        return CPU_GOVERNOR_PATH.read_text().strip() or None
    except OSError:
        return None


def _torch_facts() -> dict[str, Any]:
    facts: dict[str, Any] = {TORCH: None, CUDA: None, "cudnn": None, TORCH_THREADS: None,
                             DEVICE_KIND: "cpu", "gpu_count": 0}
    try:
        import torch
    except Exception:
        return facts
    facts[TORCH] = torch.__version__
    facts[CUDA] = torch.version.cuda
    try:
        facts["cudnn"] = torch.backends.cudnn.version()
    except Exception:
        pass
    facts[TORCH_THREADS] = torch.get_num_threads()
    if torch.cuda.is_available():
        facts[DEVICE_KIND] = "cuda"
        facts["gpu_count"] = torch.cuda.device_count()
    return facts


def _merge_kernels(device_kind: str) -> str | None:
    """What the merging primitives use on this machine's device kind (torch or triton)."""
    try:
        return kernels.resolved(device_kind)
    except kernels.KernelError:
        return None


def fingerprint(argv: list[str] | None = None, seed: int | None = None,
                plugins: dict[str, Any] | None = None) -> dict[str, Any]:
    """A JSON-ready description of this machine, software stack and invocation.

    GPU fields describe the current CUDA device (see :data:`harness.measure.nvml.GPU_STATIC_KEYS`) and are
    None on a CPU-only machine. git fields describe the checkout the harness is imported from.
    ``plugins``: :func:`harness.registry.plugin_record` (the caller passes it: a fingerprint
    does not import the registry).
    """
    fp: dict[str, Any] = {
        "fingerprint_version": FINGERPRINT_VERSION,
        "timestamp": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "hostname": socket.gethostname(),
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "harness": __version__,
    }
    fp.update(_torch_facts())
    for name in ("timm", "numpy", "pandas", "triton"):
        fp[name] = _version(name)
    fp[MERGE_KERNELS] = _merge_kernels(fp[DEVICE_KIND])
    fp[CPU_ALLOCATOR] = cpu_alloc.current()
    fp.update(dict.fromkeys(GPU_STATIC_KEYS))
    if fp[DEVICE_KIND] == "cuda":
        fp.update(gpu_static_info("cuda"))
    fp[CPU_MODEL] = cpu_model()
    fp["cpu_count"] = os.cpu_count()
    fp["cpu_governor"] = _cpu_governor()
    fp[C.LOAD_AVG_1M] = read_load_avg()
    fp[PLUGINS] = plugins  # the machine's load when the run started (or resumed)
    fp["env_vars"] = {k: os.environ.get(k) for k in ENV_VARS}
    fp.update(git_info(PACKAGE_PARENT))
    fp["argv"] = list(sys.argv if argv is None else argv)
    fp["seed"] = seed
    return fp


_placements: dict[str, dict[str, Any]] = {}


def placement(device: str) -> dict[str, Any]:
    """Where a point on ``device`` runs: ``host`` and, on CUDA, ``gpu_name`` and ``gpu_uuid`` of the
    device as this process sees it (a Ray worker sees only its assigned GPU). Cached per device."""
    if device not in _placements:
        info: dict[str, Any] = {C.HOST: socket.gethostname(), C.GPU_NAME: None, C.GPU_UUID: None}
        if str(device).startswith("cuda"):
            gpu = gpu_static_info(device)
            info[C.GPU_NAME], info[C.GPU_UUID] = gpu.get(GPU_NAME), gpu.get("gpu_uuid")
        _placements[device] = info
    return dict(_placements[device])


def _version_parts(version: Any, n: int) -> tuple[int, ...] | None:
    """The first ``n`` numeric parts of a version string ('2.14.1+cu130' -> (2, 14))."""
    if not version:
        return None
    nums = re.findall(r"\d+", str(version).split("+")[0])
    return tuple(int(x) for x in nums[:n]) if nums else None


def comparable(a: dict[str, Any], b: dict[str, Any], *, torch_parts: int = 1) -> list[str]:
    """Differences between two fingerprints that make their timings incomparable; [] if none.

    Checked: device kind (cpu vs cuda); GPU model when both are CUDA runs; CPU model when
    both are CPU runs; the merging kernels (torch or triton); the CPU allocator policy
    (``--cpu-allocator``); torch version up to ``torch_parts`` numeric parts (1 = major, the
    default; 2 = major.minor). Hostnames, timestamps, patch versions and the like are ignored.
    Missing fields (older fingerprints) are not reported.
    """
    diffs: list[str] = []

    def differ(key: str) -> bool:
        va, vb = a.get(key), b.get(key)
        return va is not None and vb is not None and va != vb

    kind_a, kind_b = a.get(DEVICE_KIND), b.get(DEVICE_KIND)
    if differ(DEVICE_KIND):
        diffs.append(f"device kind differs: {kind_a} vs {kind_b}")
    elif kind_a == "cuda" and differ(GPU_NAME):
        diffs.append(f"GPU model differs: {a[GPU_NAME]} vs {b[GPU_NAME]}")
    elif kind_a == "cpu" and differ(CPU_MODEL):
        diffs.append(f"CPU model differs: {a[CPU_MODEL]} vs {b[CPU_MODEL]}")
    if differ(CPU_ALLOCATOR):
        diffs.append(f"CPU allocator policy differs: {a[CPU_ALLOCATOR]} vs {b[CPU_ALLOCATOR]} "
                     "(--cpu-allocator)")
    if differ(PLUGINS):
        diffs.append(f"plugins differ: {a[PLUGINS]} vs {b[PLUGINS]} ($HARNESS_PLUGINS; a plugin may "
                     "replace a built-in method)")
    if differ(MERGE_KERNELS):
        diffs.append(f"merge kernels differ: {a[MERGE_KERNELS]} vs {b[MERGE_KERNELS]} "
                     "(HARNESS_MERGE_KERNELS)")
    ta, tb = _version_parts(a.get(TORCH), torch_parts), _version_parts(b.get(TORCH), torch_parts)
    if ta is not None and tb is not None and ta != tb:
        level = "major" if torch_parts == 1 else "major.minor" if torch_parts == 2 else f"{torch_parts}-part"
        diffs.append(f"torch {level} version differs: {a[TORCH]} vs {b[TORCH]}")
    return diffs
