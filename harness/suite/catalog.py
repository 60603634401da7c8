"""The suites shipped with the package, and what a suite argument on the command line names.

``harness run vggt-layer`` (a bare name) runs the packaged ``suites/vggt-layer.yaml`` wherever the
harness is installed; ``harness run path/to/mine.yaml`` (an existing file) runs that file.
``harness suites`` lists the packaged suites with one line each.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import yaml

import suites as _shipped

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
    if p.suffix == "" and len(p.parts) == 1:
        for ext in SUITE_EXTENSIONS:
            cand = packaged_suites_dir() / (p.name + ext)
            if cand.is_file():
                return cand
    names = ", ".join(f.stem for f in packaged_suite_files()) or "(none)"
    raise FileNotFoundError(
        f"suite file {str(path)!r} not found: give the path of a suite YAML file, or the name of a suite "
        f"shipped with the harness ({names}; `harness suites` describes them)"
    )


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
