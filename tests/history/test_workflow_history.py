"""The GPU workflow keeps a history of main: on pushes to main it restores the store from the
Actions cache, adds the head's run, saves the store under a new key and checks it; pull requests
leave the history alone."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

from harness.cli.app import build_parser

WORKFLOW = Path(__file__).resolve().parents[2] / ".github" / "workflows" / "gpu-regression.yml"


@pytest.fixture(scope="module")
def job() -> dict[str, Any]:
    jobs = yaml.safe_load(WORKFLOW.read_text())["jobs"]
    return next(j for j in jobs.values() if any(".ci/ab-gate" in str(s.get("run", "")) for s in j["steps"]))


@pytest.fixture(scope="module")
def steps(job) -> list[dict[str, Any]]:
    return job["steps"]


def _resolved(text: str, env: dict[str, str]) -> str:
    """``text`` with the job's ``$NAME`` and ``${{ env.NAME }}`` replaced by their values."""
    for name, value in env.items():
        text = text.replace(f"${{{{ env.{name} }}}}", value).replace(f"${name}", value)
    return text


def _index(steps: list[dict[str, Any]], needle: str, key: str = "run") -> int:
    found = [i for i, s in enumerate(steps) if needle in str(s.get(key, ""))]
    assert len(found) == 1, f"expected one step with {needle!r} in its {key}, found {len(found)}"
    return found[0]


def _commands(script: str, verb: str) -> list[list[str]]:
    """The argv (from `history`) of every `harness history VERB` line of a run script."""
    lines = script.replace("\\\n", " ").splitlines()
    out = []
    for line in lines:
        words = shlex.split(line.split("||")[0].split(">")[0]) if "history " + verb in line else []
        if "history" in words:
            out.append(words[words.index("history"):])
    return out


def test_the_workflow_runs_on_pushes_to_main():
    triggers = yaml.safe_load(WORKFLOW.read_text())
    triggers = triggers.get("on", triggers.get(True))
    assert triggers["push"]["branches"] == ["main"] and "pull_request" in triggers


def test_history_steps_run_in_order_on_pushes_only(steps):
    gate = _index(steps, ".ci/ab-gate")
    restore = _index(steps, "actions/cache/restore@", "uses")
    add = _index(steps, "history add")
    save = _index(steps, "actions/cache/save@", "uses")
    check = _index(steps, "history check")
    upload = _index(steps, "actions/upload-artifact@", "uses")
    assert gate < restore < add < save < check < upload
    assert "github.event_name == 'push'" in steps[restore]["if"] and "github.event_name == 'push'" in \
        steps[add]["if"]
    for i in (restore, add, save, check):
        assert "!cancelled()" in steps[i]["if"]  # after a failed gate too: the commit is on main anyway
    assert steps[add]["id"] in steps[save]["if"] and steps[add]["id"] in steps[check]["if"]


def test_the_cache_restores_the_newest_history_and_saves_a_new_entry(job, steps):
    restore = steps[_index(steps, "actions/cache/restore@", "uses")]["with"]
    save = steps[_index(steps, "actions/cache/save@", "uses")]["with"]
    path = _resolved(save["path"], job["env"])
    assert restore["path"] == save["path"] and not path.startswith(("/", "$", "~"))  # one cache version
    assert "run_id" in save["key"] and save["key"] == restore["key"]  # a cache entry cannot be replaced
    prefix = restore["restore-keys"].strip()
    assert save["key"].startswith(prefix)


def test_the_commands_parse_and_use_the_cached_store(job, steps):
    store = _resolved(steps[_index(steps, "actions/cache/save@", "uses")]["with"]["path"], job["env"])
    parser = build_parser()
    (add,) = _commands(_resolved(steps[_index(steps, "history add")]["run"], job["env"]), "add")
    (check,) = _commands(_resolved(steps[_index(steps, "history check")]["run"], job["env"]), "check")
    for argv in (add, check):
        args = parser.parse_args([a.replace("$GITHUB_SHA", "0" * 40) for a in argv])
        assert args.store == store and args.branch == "main"
    assert parser.parse_args(add).run.endswith("/ab/head")
