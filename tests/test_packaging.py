"""What `pip install .` ships: the wheel built from this checkout holds the suites, the proxies'
weights and cards, and a `harness` that finds its suites by bare name when run outside the checkout."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from harness.registry import load_builtins
from harness.suite import load_suite

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                           "-w", str(out), str(ROOT)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (path,) = out.glob("*.whl")
    return path


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory) -> Path:
    """The wheel unpacked into a folder outside the checkout: what site-packages would hold."""
    site = tmp_path_factory.mktemp("site-packages")
    with zipfile.ZipFile(wheel) as z:
        z.extractall(site)
    return site


def outside(installed: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    """`python -m harness.cli ARGS` importing the unpacked wheel (first on the path), from ``cwd``."""
    env = dict(os.environ, PYTHONPATH=str(installed), HARNESS_PLUGINS="")
    return subprocess.run([sys.executable, "-m", "harness.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)


def test_the_wheel_ships_every_suite_and_the_proxies(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for suite in sorted((ROOT / "suites").glob("*.yaml")):
        assert f"suites/{suite.name}" in names, suite.name
    for proxy in ("swin-proxy", "vggt-proxy"):
        for f in ("model.safetensors", "card.json", "card.md"):
            assert f"harness/proxies/{proxy}/{f}" in names, (proxy, f)
    for recipe in sorted((ROOT / "harness" / "train" / "recipes").glob("*.yaml")):
        assert f"harness/train/recipes/{recipe.name}" in names, recipe.name
    assert not any(n.startswith(("tests/", "docs/", "examples/")) for n in names)


def test_harness_suites_lists_the_shipped_suites_outside_the_checkout(installed, tmp_path):
    proc = outside(installed, "suites", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert str(installed / "suites") in proc.stdout  # the installed copy, not the checkout's
    listed = {line.split()[0] for line in proc.stdout.splitlines()[1:]}
    assert listed == {p.stem for p in (ROOT / "suites").glob("*.yaml")}


def test_a_bare_suite_name_runs_outside_the_checkout(installed, tmp_path):
    out = tmp_path / "run"
    proc = outside(installed, "run", "attention-smoke", "--preset", "cpu", "--max-points", "1", "--out",
                   str(out), "--no-report", "-q", "--set", "timing.max_samples=2", "--set",
                   "timing.min_samples=1", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    load_builtins()
    total = len(load_suite(str(ROOT / "suites" / "attention-smoke.yaml"), preset="cpu").points())
    assert f"1/{total} points run: 1 ok" in proc.stdout
    manifest = (out / "run.json").read_text()
    assert str(installed / "suites" / "attention-smoke.yaml") in manifest


def test_the_shipped_proxy_loads_from_the_installed_package(installed, tmp_path):
    proc = outside(installed, "run", "vggt", "--preset", "cpu", "--max-points", "1", "--out",
                   str(tmp_path / "run"), "--no-report", "-q", "--set", "eval_scenes=1",
                   "--set", "frames=4", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "1 ok" in proc.stdout


def test_a_name_that_is_no_suite_says_which_ones_are(installed, tmp_path):
    proc = outside(installed, "run", "vggt-layr", cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "suite file 'vggt-layr' not found" in proc.stderr and "vggt-layer" in proc.stderr
