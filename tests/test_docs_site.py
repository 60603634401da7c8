"""The documentation site builds with `mkdocs build --strict` (what `nox -s docs` runs), so a broken
link, a page missing from the nav or a failing reference generator fails the tests; the generated
reference holds what the registry holds."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from harness import registry

ROOT = Path(__file__).resolve().parents[1]


def build(root: Path, site: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")
    command = [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(root / "mkdocs.yml"),
               "-d", str(site)]
    return subprocess.run(command, cwd=root, env=env, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("site")
    proc = build(ROOT, out)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return out


def test_the_site_builds_strict_with_every_section(site):
    for page in ("index.html", "getting-started/cpu/index.html", "guide/cli/index.html",
                 "extending/methods/index.html", "reference/api/index.html", "results/index.html",
                 "notebook/vggt-proxy-pose/index.html", "changelog/index.html"):
        assert (site / page).is_file(), page


def test_the_methods_reference_lists_every_registered_method_and_parameter(site):
    html = (site / "reference" / "methods" / "index.html").read_text()
    registry.load_builtins()
    for workload in registry.workload_names():
        for method in registry.method_names(workload):
            spec = registry.get_method(workload, method)
            if spec.build.__module__ not in registry.BUILTIN_MODULES:
                continue  # registered by another test in this process, not by the harness
            assert f'id="{workload}-{method}"' in html, (workload, method)
            for field in spec.params.__dataclass_fields__:
                assert f"<code>{field}</code>" in html, (workload, method, field)


def test_the_api_reference_documents_the_public_names(site):
    html = (site / "reference" / "api" / "index.html").read_text()
    for name in ("run_suite", "RunOptions", "register_method", "load", "HarnessError", "Workload"):
        assert f".{name}\"" in html, name


def test_a_broken_link_fails_the_strict_build(tmp_path):
    copy = tmp_path / "repo"
    shutil.copytree(ROOT / "docs", copy / "docs", ignore=shutil.ignore_patterns("results"))
    (copy / "docs" / "results").mkdir()
    shutil.copy(ROOT / "docs" / "results" / "index.md", copy / "docs" / "results" / "index.md")
    shutil.copy(ROOT / "mkdocs.yml", copy / "mkdocs.yml")
    index = copy / "docs" / "results" / "index.md"
    index.write_text("# Results\n\nSee [a page that does not exist](nowhere.md).\n")
    proc = build(copy, tmp_path / "site")
    assert proc.returncode != 0
    assert "nowhere.md" in proc.stdout + proc.stderr


def test_the_readme_is_a_users_document_without_dated_figures():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 300  # measurements live on the results pages, logs in the notebook
    dated = [line for line in text.splitlines() if re.search(r"20\d\d-[01]\d-[0-3]\d", line)]
    assert dated == [], "dated text belongs on the results pages or in the changelog"
    for target in re.findall(r"\]\(((?:docs|examples)/[^)#]*)", text):  # its links to the docs resolve
        assert (ROOT / target).exists(), target
