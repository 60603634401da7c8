"""CI wiring: the GPU regression workflow, the nox sessions, and `.ci/run`.

Specification:
- `.github/workflows/gpu-regression.yml` runs on a self-hosted runner labelled `gpu`, checks
  out and runs the base and the head in one job (same machine, same GPU), then gates with
  `harness compare` in that job;
- noxfile.py defines the sessions the README promises; GPU-only sessions are tagged `gpu` and
  left out of a bare `nox` (default=False);
- `.ci/run` runs exactly the test command the README gives.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
WORKFLOW = REPO / ".github" / "workflows" / "gpu-regression.yml"
NOXFILE = REPO / "noxfile.py"
CI_RUN = REPO / ".ci" / "run"
README = REPO / "README.md"

REQUIRED_SESSIONS = ("bench-vggt", "bench-swin", "tests", "lint", "microbench", "regression")


# ---------------------------------------------------------------- the GPU workflow


@pytest.fixture(scope="module")
def workflow() -> dict[str, Any]:
    return yaml.safe_load(WORKFLOW.read_text())


def _gate_job(workflow: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The job that runs the gate (`.ci/ab-gate`, which ends in `harness compare`); exactly one must."""
    jobs = workflow["jobs"]
    gating = [(name, job) for name, job in jobs.items()
              if any(".ci/ab-gate" in str(s.get("run", "")) for s in job.get("steps", []))]
    assert len(gating) == 1, f"expected one job running .ci/ab-gate, found {[n for n, _ in gating]}"
    return gating[0]


def _ab_gate_calls(job: dict[str, Any]) -> list[tuple[int, list[str]]]:
    """(step index, argv) of every `.ci/ab-gate ...` command in the job's run scripts."""
    calls = []
    for i, step in enumerate(job.get("steps", [])):
        script = str(step.get("run", "")).replace("\\\n", " ")
        for part in re.split(r"&&|;|\n", script):
            if ".ci/ab-gate" not in part:
                continue
            words = shlex.split(part, posix=True)
            if ".ci/ab-gate" in words:
                calls.append((i, words[words.index(".ci/ab-gate"):]))
    return calls


def test_workflow_runs_on_pull_requests(workflow):
    triggers = workflow.get("on", workflow.get(True))  # YAML 1.1 reads a bare `on` key as True
    assert "pull_request" in triggers


def test_workflow_runs_on_a_self_hosted_gpu_runner(workflow):
    _, job = _gate_job(workflow)
    labels = job["runs-on"]
    labels = [labels] if isinstance(labels, str) else list(labels)
    assert "self-hosted" in labels and "gpu" in labels


def test_workflow_checks_out_the_base_and_the_head_in_the_gate_job(workflow):
    _, job = _gate_job(workflow)
    checkouts = [s for s in job["steps"] if str(s.get("uses", "")).startswith("actions/checkout@")]
    paths = {s.get("with", {}).get("path") for s in checkouts}
    assert {"base", "head"} <= paths
    base = next(s for s in checkouts if s.get("with", {}).get("path") == "base")
    assert "base.sha" in str(base["with"].get("ref", ""))


def test_workflow_alternates_base_and_head_on_the_gpu_preset_then_gates_in_one_job(workflow):
    _, job = _gate_job(workflow)
    (step, argv), = _ab_gate_calls(job)
    opt = {argv[i]: argv[i + 1] for i in range(1, len(argv) - 1) if argv[i].startswith("--")}
    assert opt["--preset"] == "gpu"
    assert (REPO / opt["--suite"]).is_file(), f"the workflow runs {opt['--suite']}, which is not in the repo"
    assert "venv-base" in opt["--base-harness"] and "venv-head" in opt["--head-harness"]
    assert int(opt["--slice"]) >= 1
    install = "\n".join(str(s.get("run", "")) for s in job["steps"][:step])
    assert 'venv-$side' in install and 'install -e "$side"' in install  # each revision in its own venv
    assert not job["steps"][step].get("continue-on-error"), "the gate step must be able to fail the job"
    assert (REPO / ".ci" / "ab-gate").stat().st_mode & 0o111, ".ci/ab-gate must be executable"


def test_workflow_keeps_both_runs_and_the_comparison(workflow):
    _, job = _gate_job(workflow)
    uploads = [s for s in job["steps"] if str(s.get("uses", "")).startswith("actions/upload-artifact@")]
    assert uploads and uploads[0].get("if") == "always()"
    (_, argv), = _ab_gate_calls(job)
    out = argv[argv.index("--out") + 1]
    assert uploads[0]["with"]["path"].replace("${{ runner.temp }}", "$RUNNER_TEMP") == out


# ---------------------------------------------------------------- nox sessions


@pytest.fixture(scope="module")
def nox_sessions() -> dict[str, Any]:
    """Session name -> nox's registered function (its .tags and .default), from noxfile.py."""
    nox = pytest.importorskip("nox")
    from nox import registry

    before = registry.get()
    registry.reset()  # nox refuses a session name registered twice
    try:
        spec = importlib.util.spec_from_file_location("_noxfile_under_test", NOXFILE)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        sessions = registry.get()
    finally:
        registry.reset()
        registry._REGISTRY.update(before)
    return {"sessions": sessions, "options": nox.options}


def test_the_mutation_session_is_not_run_by_a_bare_nox(nox_sessions):
    sessions = nox_sessions["sessions"]
    assert "mutation" in sessions and sessions["mutation"].default is False
    assert "mutation" not in nox_sessions["options"].sessions


def test_noxfile_defines_the_documented_sessions(nox_sessions):
    missing = [s for s in REQUIRED_SESSIONS if s not in nox_sessions["sessions"]]
    assert not missing, f"noxfile.py lacks sessions {missing}"


def test_gpu_sessions_are_tagged_gpu_and_not_run_by_default(nox_sessions):
    gpu = {n: f for n, f in nox_sessions["sessions"].items() if "gpu" in n or "gpu" in (f.tags or [])}
    assert {"bench-vggt-gpu", "bench-swin-gpu", "regression-gpu"} <= set(gpu)
    for name, f in gpu.items():
        assert "gpu" in (f.tags or []), f"{name} needs a CUDA GPU but is not tagged gpu"
        assert f.default is False, f"{name} needs a CUDA GPU but a bare `nox` would run it"


def test_cpu_sessions_are_not_tagged_gpu(nox_sessions):
    for name in REQUIRED_SESSIONS:
        assert "gpu" not in (nox_sessions["sessions"][name].tags or [])


def test_a_bare_nox_runs_lint_and_tests_only(nox_sessions):
    assert set(nox_sessions["options"].sessions) == {"lint", "tests"}


def test_microbench_uses_the_synchronizing_timer_and_its_target_exists():
    src = NOXFILE.read_text()
    assert "--benchmark-timer=harness.measure.benchtimer.synchronized_perf_counter" in src
    assert "--override-ini=addopts=" in src  # pyproject's addopts ignores tests/benchmarks
    from harness.measure.benchtimer import synchronized_perf_counter

    assert isinstance(synchronized_perf_counter(), float)


# ---------------------------------------------------------------- .ci/run


def _ci_command() -> str:
    """The command line of .ci/run (comments, `set` and `cd` lines aside)."""
    lines = [ln.strip() for ln in CI_RUN.read_text().splitlines()]
    cmds = [ln for ln in lines if ln and not ln.startswith(("#", "set ", "cd "))]
    assert len(cmds) == 1, f".ci/run should run one command line, found {cmds}"
    return cmds[0]


def test_ci_run_is_an_executable_bash_script():
    assert CI_RUN.read_text().startswith("#!/usr/bin/env bash")
    assert os.access(CI_RUN, os.X_OK), ".ci/run is not executable (chmod +x .ci/run)"
    assert "set -euo pipefail" in CI_RUN.read_text()


@pytest.mark.skipif(not README.exists(), reason="README.md is not written yet")
def test_ci_run_runs_exactly_the_readme_test_command():
    cmd = _ci_command()
    readme_lines = [ln.strip().removeprefix("$ ").strip() for ln in README.read_text().splitlines()]
    assert cmd in readme_lines, f"README.md does not show the command .ci/run runs: {cmd!r}"
