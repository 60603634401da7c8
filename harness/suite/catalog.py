"""The suites shipped with the package, and what a suite argument on the command line names.

``harness run vggt-layer`` (a bare name) runs the packaged ``suites/vggt-layer.yaml`` wherever the
harness is installed; ``harness run path/to/mine.yaml`` (an existing file) runs that file.
``harness suites`` lists the packaged suites with one line each.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import yaml

import suites as _shipped
from harness.errors import HarnessError

SUITE_EXTENSIONS = (".yaml", ".yml")


def packaged_suites_dir() -> Path:
    """The folder of the suites installed with the harness (``suites/`` of a checkout)."""
    return Path(str(resources.files(_shipped)))


def packaged_suite_files() -> list[Path]:
    """Every packaged suite file, sorted by name."""
    folder = packaged_suites_dir()
    return sorted(p for p in folder.iterdir() if p.suffix in SUITE_EXTENSIONS and p.is_file())


def find_suite_file(path: str | Path) -> Path:
    """``path`` itself when it is a file, else the packaged suite of that bare name.

    FileNotFoundError naming what was looked for and the packaged suites otherwise."""
    p = Path(path)
    if p.is_file():
        return p
    if p.suffix == "" and len(p.parts) == 1:  # a bare name: a packaged suite, even beside a folder so named
        for ext in SUITE_EXTENSIONS:
            cand = packaged_suites_dir() / (p.name + ext)
            if cand.is_file():
                return cand
    problem = not_a_regular_file(p)
    if problem is not None:
        raise SuiteFileError(f"suite file {str(path)!r} {problem}; give the path of a suite YAML file")
    names = ", ".join(f.stem for f in packaged_suite_files()) or "(none)"
    raise FileNotFoundError(
        f"suite file {str(path)!r} not found: give the path of a suite YAML file, or the name of a suite "
        f"shipped with the harness ({names}; `harness suites` describes them)"
    )


class SuiteFileError(HarnessError):
    """A suite path that exists but is not a file the harness may read (a folder, a FIFO, a loop)."""


def not_a_regular_file(p: Path) -> str | None:
    """What ``p`` is when it exists (or is a link) but is not a regular file (None: no such path,
    or a regular file): never opened, so a FIFO cannot block the command."""
    try:
        st = p.stat()
    except FileNotFoundError:
        return f"is a symbolic link to {os.readlink(p)!r}, which does not exist" if p.is_symlink() else None
    except OSError as e:  # a symbolic link loop, a path through a file, a denied folder
        return f"cannot be reached: {e.strerror or e}"
    if stat.S_ISDIR(st.st_mode):
        inside = sorted(f.name for f in p.iterdir() if f.suffix in SUITE_EXTENSIONS)[:5]
        found = f" (suite files in it: {', '.join(inside)})" if inside else ""
        return f"is a directory, not a file{found}"
    if not stat.S_ISREG(st.st_mode):
        kind = "a named pipe (FIFO)" if stat.S_ISFIFO(st.st_mode) else "a socket or device"
        return f"is {kind}, not a regular file"
    return None


@dataclass(frozen=True)
class SuiteEntry:
    """One line of ``harness suites``: a suite's name, file, workload, presets and description."""

    name: str
    path: Path
    workload: str
    presets: tuple[str, ...]
    default_preset: str | None
    description: str
    problem: str | None = None


def describe_suite_file(path: Path) -> SuiteEntry:
    """The top-level facts of a suite file, read without validating it (``problem`` says when the
    file cannot be read as a YAML mapping)."""
    try:
        data = yaml.safe_load(path.read_text()) or {}
        if not isinstance(data, dict):
            raise ValueError("not a mapping")
    except (OSError, UnicodeDecodeError, yaml.YAMLError, ValueError) as e:
        return SuiteEntry(path.stem, path, "?", (), None, "", problem=type(e).__name__)
    presets = data.get("presets") or {}
    names = tuple(map(str, presets)) if isinstance(presets, dict) else ()
    default = data.get("default_preset")
    return SuiteEntry(name=str(data.get("name", path.stem)), path=path,
                      workload=str(data.get("workload", "?")), presets=names,
                      default_preset=None if default is None else str(default),
                      description=" ".join(str(data.get("description") or "").split()))
