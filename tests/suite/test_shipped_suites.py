"""Every suite shipped in suites/ loads, with every preset, as a user would run it (no GPU needed:
loading only validates and expands; GPU presets are checked for their points, not run)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from harness import registry
from harness.suite import SuiteError, load_suite

SUITES = sorted((Path(__file__).resolve().parents[2] / "suites").glob("*.yaml"))


def _cases() -> list[tuple[Path, str | None]]:
    cases: list[tuple[Path, str | None]] = []
    for path in SUITES:
        presets = (yaml.safe_load(path.read_text()) or {}).get("presets") or {}
        cases += [(path, None)] + [(path, name) for name in presets]
    return cases


#: presets that run on the user's own checkpoint and dataset (their comments say which --set):
#: loaded here with stand-ins the test creates, as a user would pass theirs
USER_FILES = {("swin-det", "coco"), ("swin-det", "gpu")}


@pytest.mark.parametrize(("path", "preset"), _cases(), ids=lambda v: getattr(v, "stem", v))
def test_shipped_suite_loads_with_every_preset(path: Path, preset: str | None, tmp_path: Path):
    registry.load_builtins()
    overrides: list[str] = []
    if (path.stem, preset) in USER_FILES:
        (tmp_path / "coco").mkdir()
        (tmp_path / "model.pth").write_bytes(b"stand-in")
        overrides = [f"checkpoint={tmp_path / 'model.pth'}", f"data_path={tmp_path / 'coco'}"]
    suite = load_suite(path, preset=preset, overrides=overrides)
    assert suite.points(), f"{path.name} ({preset or 'default preset'}) expands to no points"


def test_the_presets_on_user_files_say_what_is_missing_without_them():
    registry.load_builtins()
    for stem, preset in USER_FILES:
        with pytest.raises(SuiteError) as err:
            load_suite(SUITES[0].parent / f"{stem}.yaml", preset=preset)
        assert "needs a checkpoint" in str(err.value) and "needs data_path" in str(err.value)


def test_the_cpu_defaults_of_the_main_suites_run_on_the_trained_proxies():
    registry.load_builtins()
    vggt = load_suite(SUITES[0].parent / "vggt.yaml")
    assert {p.params["checkpoint"] for p in vggt.points()} == {"proxy:vggt-proxy"}
    assert min(p.params["scene_seed"] for p in vggt.points()) >= 1_000_000  # held-out scenes
    swin = load_suite(SUITES[0].parent / "swin.yaml")
    assert {p.params["checkpoint"] for p in swin.points()} == {"proxy:swin-proxy"}
