"""The code a reader copies works: the README's method and suite, and every block of the extending
pages marked ``# harness:doctest``, are executed and their suites run (a renamed API or a changed
contract fails here, not in a user's hands)."""

from __future__ import annotations

import re
import sys
import types
from pathlib import Path

import pytest
import yaml

from harness import RunOptions, load, parse_suite, run_suite
from harness.store import columns as C

ROOT = Path(__file__).resolve().parents[2]
FAST_TIMING = {"warmup_n": 0, "min_samples": 2, "max_samples": 2, "budget_s": 0.01}

pytestmark = pytest.mark.usefixtures("clean_registry", "one_thread")


def blocks(path: Path, lang: str) -> list[str]:
    """The fenced ``lang`` code blocks of a Markdown file, in order."""
    return re.findall(rf"^```{lang}\n(.*?)^```", path.read_text(), flags=re.S | re.M)


def exec_block(code: str, name: str, monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    """Run ``code`` as the module ``name`` (registered in sys.modules, as an import would)."""
    module = types.ModuleType(name)
    monkeypatch.setitem(sys.modules, name, module)
    exec(compile(code, name, "exec"), module.__dict__)  # noqa: S102 - our own documentation's code
    return module


def run_yaml(text: str, tmp_path: Path, **fixed: object):
    doc = yaml.safe_load(text)
    doc.setdefault("fixed", {}).update(fixed)
    for name in fixed:  # a value given here holds for every point
        doc.get("sweep", {}).pop(name, None)
    doc["timing"] = FAST_TIMING
    out = tmp_path / doc["name"]
    run_suite(parse_suite(yaml.safe_dump(doc), source="doc.yaml"), out, RunOptions(progress=False))
    return load(out).points


def test_the_readme_method_and_its_suite_run(tmp_path, monkeypatch):
    readme = ROOT / "README.md"
    method = next(b for b in blocks(readme, "python") if "@register_method" in b)
    exec_block(method, "readme_method", monkeypatch)
    suite = next(b for b in blocks(readme, "yaml") if "dropkv" in b)
    points = run_yaml(suite, tmp_path, frames=2, height=56, width=70)
    assert set(points[C.STATUS]) == {C.OK}
    assert sorted(points.loc[points[C.METHOD] == "dropkv", "keep"]) == [0.25, 0.5]
    by_keep = points[points[C.METHOD] == "dropkv"].set_index("keep")
    # fewer keys, further from plain attention on the same layer's q/k/v
    assert 0 < by_keep.loc[0.5, "fid_attn_rel_err"] < by_keep.loc[0.25, "fid_attn_rel_err"]


def doctest_blocks(page: str) -> list[str]:
    page_blocks = blocks(ROOT / "docs" / "extending" / page, "python")
    return [b for b in page_blocks if b.startswith("# harness:doctest")]


def test_every_extending_page_with_code_has_a_doctest_block():
    assert doctest_blocks("methods.md") and doctest_blocks("workloads.md")


def test_the_method_page_example_runs_on_the_attention_workload(tmp_path, monkeypatch):
    (code,) = doctest_blocks("methods.md")
    exec_block(code, "doc_method", monkeypatch)
    points = run_yaml("name: strided\nworkload: attention\nreference: sdpa\nsweep: {seq_len: [64]}\n"
                      "methods: {sdpa: {}, strided_kv: {keep: [1.0, 0.25]}}\n", tmp_path)
    assert set(points[C.STATUS]) == {C.OK}
    by_keep = points[points[C.METHOD] == "strided_kv"].set_index("keep")
    assert by_keep.loc[1.0, "fid_max_abs_err"] < 1e-5  # every key kept: plain attention
    assert by_keep.loc[0.25, "fid_max_abs_err"] > 1e-3


def test_the_workload_page_example_registers_and_runs_its_suite(tmp_path, monkeypatch):
    (code,) = doctest_blocks("workloads.md")
    exec_block(code, "doc_workload", monkeypatch)
    (suite,) = [b for b in blocks(ROOT / "docs" / "extending" / "workloads.md", "yaml") if "matmul" in b]
    points = run_yaml(suite, tmp_path)
    assert set(points[C.STATUS]) == {C.OK} and len(points) == 4
    for _, row in points.iterrows():
        assert row["work_flops"] == 2.0 * row["size"] ** 3
        assert row["fid_max_abs_err"] < 1e-3
