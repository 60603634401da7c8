"""Environment fingerprint: keys and types, git state, and what makes two runs incomparable."""

from __future__ import annotations

import datetime as dt
import json
import shutil
import subprocess
import sys

import pytest

import harness
from harness.measure import env
from harness.measure.env import comparable, fingerprint, git_info
from harness.measure.nvml import GPU_STATIC_KEYS

needs_git = pytest.mark.skipif(shutil.which("git") is None, reason="needs the git executable")

EXPECTED_TYPES = {
    "python": str, "platform": str, "hostname": str, "timestamp": str, "harness": str, "torch": str,
    "numpy": str, "pandas": str, "timm": str, "device_kind": str, "gpu_count": int, "cpu_count": int,
    "torch_threads": int, "env_vars": dict, "argv": list, "fingerprint_version": int,
}


@pytest.fixture(scope="module")
def fp() -> dict:
    return fingerprint(argv=["harness", "run", "suites/x.yaml"], seed=7)


def test_fingerprint_has_the_documented_keys_with_their_types(fp):
    for key, typ in EXPECTED_TYPES.items():
        assert isinstance(fp[key], typ), (key, fp[key])
    for key in ("cuda", "cudnn", "cpu_model", "git_commit", "git_dirty", *GPU_STATIC_KEYS):
        assert key in fp


def test_fingerprint_records_invocation_seed_and_harness_version(fp):
    assert (fp["argv"], fp["seed"], fp["harness"]) == (["harness", "run", "suites/x.yaml"], 7,
                                                       harness.__version__)


def test_fingerprint_defaults_to_sys_argv():
    assert fingerprint()["argv"] == sys.argv


def test_fingerprint_lists_the_relevant_environment_variables(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    vars_ = fingerprint()["env_vars"]
    assert set(vars_) == set(env.ENV_VARS) >= {"CUDA_VISIBLE_DEVICES", "OMP_NUM_THREADS", "MKL_NUM_THREADS",
                                               "TIMM_FUSED_ATTN"}
    assert vars_["OMP_NUM_THREADS"] == "3"


def test_fingerprint_is_plain_json(fp):
    assert json.loads(json.dumps(fp)) == fp


def test_fingerprint_timestamp_is_iso_with_timezone(fp):
    assert dt.datetime.fromisoformat(fp["timestamp"]).tzinfo is not None


def test_gpu_fields_are_empty_on_a_cpu_only_machine(fp):
    if fp["device_kind"] == "cuda":
        assert fp["gpu_name"]
    else:
        assert all(fp[k] is None for k in GPU_STATIC_KEYS)


# --- git --------------------------------------------------------------------------------------


def _git(repo, *args):
    subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.com",
                    "-c", "commit.gpgsign=false", *args], check=True, capture_output=True)


@pytest.fixture
def no_parent_repo(tmp_path, monkeypatch):
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))
    return tmp_path


@needs_git
def test_git_info_in_a_clean_checkout(no_parent_repo):
    repo = no_parent_repo / "repo"
    repo.mkdir()
    _git(repo, "init", "-q")
    (repo / "a.txt").write_text("1")
    _git(repo, "add", "a.txt")
    _git(repo, "commit", "-q", "-m", "first")
    info = git_info(repo)
    assert len(info["git_commit"]) == 40 and int(info["git_commit"], 16) >= 0
    assert info["git_dirty"] is False


@needs_git
def test_git_info_marks_modified_tracked_files_dirty_but_not_untracked_ones(no_parent_repo):
    repo = no_parent_repo / "repo"
    repo.mkdir()
    _git(repo, "init", "-q")
    (repo / "a.txt").write_text("1")
    _git(repo, "add", "a.txt")
    _git(repo, "commit", "-q", "-m", "first")
    (repo / "new.txt").write_text("untracked")
    assert git_info(repo)["git_dirty"] is False
    (repo / "a.txt").write_text("2")
    assert git_info(repo)["git_dirty"] is True


@needs_git
def test_git_info_outside_a_checkout_is_empty(no_parent_repo):
    assert git_info(no_parent_repo) == {"git_commit": None, "git_dirty": None, "git_root": None}


@needs_git
def test_git_info_in_a_repo_without_commits_has_no_commit(no_parent_repo):
    _git(no_parent_repo, "init", "-q")
    assert git_info(no_parent_repo)["git_commit"] is None


def test_git_info_without_git_is_empty(no_parent_repo, monkeypatch):
    monkeypatch.setenv("PATH", str(no_parent_repo))  # no git executable on PATH
    assert git_info(no_parent_repo)["git_commit"] is None


# --- comparable -------------------------------------------------------------------------------


def cuda_fp(**kw) -> dict:
    base = {"device_kind": "cuda", "gpu_name": "NVIDIA H100 80GB HBM3", "torch": "2.14.1+cu130",
            "cpu_model": "AMD EPYC", "hostname": "runner-1", "timestamp": "2026-01-01T00:00:00+00:00"}
    return {**base, **kw}


def test_identical_fingerprints_are_comparable():
    assert comparable(cuda_fp(), cuda_fp()) == []


def test_hostname_timestamp_and_torch_patch_version_are_ignored():
    b = cuda_fp(hostname="runner-2", timestamp="2026-02-02T00:00:00+00:00", torch="2.14.3+cu128")
    assert comparable(cuda_fp(), b) == []


def test_different_gpu_models_are_flagged():
    (diff,) = comparable(cuda_fp(), cuda_fp(gpu_name="NVIDIA A100-SXM4-80GB"))
    assert "GPU model" in diff and "H100" in diff and "A100" in diff


def test_different_torch_major_versions_are_flagged():
    (diff,) = comparable(cuda_fp(), cuda_fp(torch="3.0.0"))
    assert "torch major version" in diff and "2.14.1+cu130" in diff and "3.0.0" in diff


def test_torch_minor_versions_are_flagged_only_when_asked():
    a, b = cuda_fp(), cuda_fp(torch="2.13.0")
    assert comparable(a, b) == []
    assert comparable(a, b, torch_parts=2) == ["torch major.minor version differs: 2.14.1+cu130 vs 2.13.0"]


def test_cpu_versus_cuda_is_flagged():
    (diff,) = comparable(cuda_fp(), cuda_fp(device_kind="cpu", gpu_name=None))
    assert diff == "device kind differs: cuda vs cpu"


def test_cpu_model_matters_only_between_cpu_runs():
    assert comparable(cuda_fp(), cuda_fp(cpu_model="Intel Xeon")) == []
    a, b = cuda_fp(device_kind="cpu", gpu_name=None), cuda_fp(device_kind="cpu", gpu_name=None,
                                                              cpu_model="Intel Xeon")
    assert comparable(a, b) == ["CPU model differs: AMD EPYC vs Intel Xeon"]


def test_fields_missing_from_an_older_fingerprint_are_not_reported():
    assert comparable(cuda_fp(), {"device_kind": "cuda"}) == []


def test_a_fingerprint_is_comparable_with_itself(fp):
    assert comparable(fp, dict(fp)) == []
