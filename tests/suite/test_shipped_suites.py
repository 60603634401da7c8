"""Every suite shipped in suites/ loads, with every preset, as a user would run it (no GPU needed:
loading only validates and expands; GPU presets are checked for their points, not run)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from harness import registry
from harness.suite import load_suite

SUITES = sorted((Path(__file__).resolve().parents[2] / "suites").glob("*.yaml"))


def _cases() -> list[tuple[Path, str | None]]:
    cases: list[tuple[Path, str | None]] = []
    for path in SUITES:
        presets = (yaml.safe_load(path.read_text()) or {}).get("presets") or {}
        cases += [(path, None)] + [(path, name) for name in presets]
    return cases


@pytest.mark.parametrize(("path", "preset"), _cases(), ids=lambda v: getattr(v, "stem", v))
def test_shipped_suite_loads_with_every_preset(path: Path, preset: str | None):
    registry.load_builtins()
    suite = load_suite(path, preset=preset)
    assert suite.points(), f"{path.name} ({preset or 'default preset'}) expands to no points"


def test_the_cpu_defaults_of_the_main_suites_run_on_the_trained_proxies():
    registry.load_builtins()
    vggt = load_suite(SUITES[0].parent / "vggt.yaml")
    assert {p.params["checkpoint"] for p in vggt.points()} == {"proxy:vggt-proxy"}
    assert min(p.params["scene_seed"] for p in vggt.points()) >= 1_000_000  # held-out scenes
    swin = load_suite(SUITES[0].parent / "swin.yaml")
    assert {p.params["checkpoint"] for p in swin.points()} == {"proxy:swin-proxy"}
