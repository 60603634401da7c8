"""The mutation-testing driver (.ci/mutation.py) on its own: the module map, the selection of
modules from the command line, each module's mutmut folder, reading mutmut's results, the line a
mutant changes, the explained equivalents and the score table. mutmut itself is never run here.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

REPO = Path(__file__).resolve().parents[1]
NOXFILE = REPO / "noxfile.py"


def _load_driver():
    spec = importlib.util.spec_from_file_location("ci_mutation", REPO / ".ci" / "mutation.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is made
    spec.loader.exec_module(module)
    return module


M = _load_driver()

#: the modules issue 28 asks to mutate (the baselines are a folder of them)
ISSUE_MODULES = (
    "harness/methods/merging.py", "harness/methods/kernels.py", "harness/methods/httm.py",
    "harness/quant/quantizers.py", "harness/methods/mixaq.py", "harness/metrics/work.py",
    "harness/metrics/fidelity.py", "harness/metrics/geometry.py", "harness/measure/timing.py",
    "reports/stats.py", "reports/compare.py", "harness/run/resume.py",
)


def _write_map(root: Path, body: str) -> Path:
    for name in ("pkg/a.py", "pkg/b.py", "pkg/sub/c.py", "tests/test_a.py", "tests/test_b.py"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text("")
    path = root / "map.toml"
    path.write_text(body)
    return path


TWO_MODULES = """
[defaults]
timeout_min = 7
pytest_args = ["-m", "not gpu"]

[modules."pkg/b.py"]
tests = ["tests/test_b.py"]

[modules."pkg/a.py"]
tests = ["tests/test_a.py", "tests/test_b.py::test_one"]
timeout_min = 3
also_copy = ["docs"]
pytest_args = []
mutmut = { process_isolation = "forkserver" }
"""


# ---------------------------------------------------------------- the map


def test_the_committed_map_covers_the_issue_modules_and_names_existing_tests():
    modules = M.load_map()  # raises when a module or a test file does not exist
    missing = [m for m in ISSUE_MODULES if m not in modules]
    assert missing == []
    assert any(m.startswith("baselines/") for m in modules)
    assert any(m.startswith("harness/store/") for m in modules)
    assert all(m.tests and m.timeout_min > 0 for m in modules.values())


def test_the_map_is_read_in_file_order_with_defaults_and_overrides(tmp_path):
    modules = M.load_map(_write_map(tmp_path, TWO_MODULES), root=tmp_path)
    assert list(modules) == ["pkg/b.py", "pkg/a.py"]
    b = modules["pkg/b.py"]
    assert (b.timeout_min, b.also_copy, b.pytest_args) == (7.0, (), ("-m", "not gpu"))
    a = modules["pkg/a.py"]
    assert a.tests == ("tests/test_a.py", "tests/test_b.py::test_one")
    assert (a.timeout_min, a.also_copy, a.pytest_args) == (3.0, ("docs",), ())
    assert a.mutmut == {"process_isolation": "forkserver"}


@pytest.mark.parametrize("entry, says", [
    ('tests = ["tests/test_missing.py"]', "test_missing.py"),
    ('tests = []', "non-empty list"),
    ('tests = ["tests/test_a.py"]\ntimeout_min = 0', "positive number of minutes"),
    ('tests = ["tests/test_a.py"]\ntests_dir = "x"', "unknown key(s) ['tests_dir']"),
])
def test_a_wrong_map_entry_is_refused_naming_the_module_and_what_is_wrong(tmp_path, entry, says):
    path = _write_map(tmp_path, f'[modules."pkg/a.py"]\n{entry}\n')
    with pytest.raises(M.MapError) as err:
        M.load_map(path, root=tmp_path)
    assert '[modules."pkg/a.py"]' in str(err.value) and says in str(err.value)


def test_a_module_that_is_not_a_file_of_the_repository_is_refused(tmp_path):
    path = _write_map(tmp_path, '[modules."pkg/gone.py"]\ntests = ["tests/test_a.py"]\n')
    with pytest.raises(M.MapError, match="pkg/gone.py is not a Python file"):
        M.load_map(path, root=tmp_path)


def test_a_module_is_named_by_its_dotted_path():
    assert M.Module("harness/methods/httm.py", ("t",)).name == "harness.methods.httm"


# ---------------------------------------------------------------- choosing modules (posargs)


@pytest.fixture
def three(tmp_path):
    body = "\n".join(f'[modules."{p}"]\ntests = ["tests/test_a.py"]'
                     for p in ("pkg/b.py", "pkg/sub/c.py", "pkg/a.py"))
    return M.load_map(_write_map(tmp_path, body), root=tmp_path)


def test_no_module_named_runs_every_module_in_map_order(three):
    assert [m.path for m in M.select(three, [])] == ["pkg/b.py", "pkg/sub/c.py", "pkg/a.py"]


def test_named_modules_and_patterns_run_once_each_in_map_order(three):
    chosen = M.select(three, ["pkg/a.py", "pkg/sub/*", "pkg/a.py"])
    assert [m.path for m in chosen] == ["pkg/sub/c.py", "pkg/a.py"]


def test_a_name_outside_the_map_is_refused_listing_the_known_modules(three):
    known = r"'pkg/z.py' is not in the module map; known: pkg/b.py, pkg/sub/c.py"
    with pytest.raises(M.MapError, match=known):
        M.select(three, ["pkg/a.py", "pkg/z.py"])


def test_the_command_line_lists_the_chosen_modules_without_running_mutmut(capsys):
    assert M.main(["--list", "reports/stats.py"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and out[0].startswith("reports/stats.py  (")
    assert "tests/reports/test_compare.py" in out[0]


def test_the_command_line_refuses_an_unknown_module_with_exit_2(capsys):
    assert M.main(["--list", "harness/nothing.py"]) == 2
    assert "'harness/nothing.py' is not in the module map" in capsys.readouterr().err


def test_a_module_mutmut_cannot_run_is_named_the_others_still_run_and_the_exit_is_1(monkeypatch, capsys):
    def fake_run(module, work, out, jobs):
        if module.path == "reports/stats.py":
            raise RuntimeError("mutmut failed (exit 1)")
        return M.Score(module.path, mutants=4, killed=4)

    monkeypatch.setattr(M, "run_module", fake_run)
    assert M.main(["reports/stats.py", "harness/metrics/fidelity.py"]) == 1
    captured = capsys.readouterr()
    assert "error: reports/stats.py: mutmut failed (exit 1)" in captured.err
    assert "| harness/metrics/fidelity.py | 4 | 4 |" in captured.out
    assert "| reports/stats.py |" not in captured.out


# ---------------------------------------------------------------- one module's mutmut folder


def test_a_run_that_reaches_no_mutant_is_a_finding_not_a_failure():
    log = ("done in 414ms (1 files mutated, 160 ignored, 0 unmodified)\nStopping early, because we could "
           "not find any test case for any mutant. It seems that the selected tests do not cover any code")
    assert M.reached_nothing(log)
    assert not M.reached_nothing("Traceback (most recent call last):\nImportError: no module named x")


def test_the_mutmut_table_mutates_only_the_module_and_selects_only_its_tests():
    module = M.Module("pkg/a.py", ("tests/test_a.py",), also_copy=("docs",), mutmut={"debug": True})
    config = M.mutmut_config(module)
    assert config["only_mutate"] == ["pkg/a.py"]
    assert config["pytest_add_cli_args_test_selection"] == ["tests/test_a.py"]
    assert config["source_paths"] == list(M.DEFAULT_SOURCE_PATHS)
    assert config["also_copy"] == ["docs"] and config["debug"] is True
    assert config["process_isolation"] == "forkserver"
    # the tests marked slow are left out unless the map says otherwise
    assert config["pytest_add_cli_args"][-2:] == ["-m", "not slow"]


def test_the_module_folder_links_the_tree_and_extends_the_project_config(tmp_path):
    root, work = tmp_path / "repo", tmp_path / "work"
    root.mkdir()
    (root / "pyproject.toml").write_text('[project]\nname = "x"\n\n'
                                        '[tool.pytest.ini_options]\naddopts = "-ra"\n')
    module = M.Module("harness/methods/httm.py", ("tests/methods/test_httm.py",), also_copy=("docs",))
    (work / module.name).mkdir(parents=True)
    (work / module.name / "stale").write_text("from an earlier run")
    folder = M.prepare(module, work, root=root)
    assert folder == work / "harness.methods.httm" and not (folder / "stale").exists()
    for name in (*M.DEFAULT_SOURCE_PATHS, "tests", "docs"):
        assert os.readlink(folder / name) == str(root / name)
    config = tomllib.loads((folder / "pyproject.toml").read_text())
    assert config["tool"]["pytest"]["ini_options"] == {"addopts": "-ra"}
    assert config["tool"]["mutmut"]["only_mutate"] == ["harness/methods/httm.py"]
    assert config["tool"]["mutmut"]["use_git_change_detection"] is False


def test_a_project_with_its_own_mutmut_table_is_refused(tmp_path):
    (tmp_path / "pyproject.toml").write_text("[tool.mutmut]\ndebug = true\n")
    with pytest.raises(M.MapError, match=r"own \[tool.mutmut\]"):
        M.prepare(M.Module("pkg/a.py", ("t",)), tmp_path / "work", root=tmp_path)


# ---------------------------------------------------------------- mutmut's results and the score


RESULTS = """\
    reports.stats.x_median_ratio__mutmut_1: killed
    reports.stats.x_median_ratio__mutmut_2: survived
    reports.stats.xǁTimerǁrun__mutmut_3: timeout
    reports.stats.x__arr__mutmut_4: segfault
    reports.stats.x__arr__mutmut_5: no tests
    reports.stats.x__arr__mutmut_6: not checked
    reports.stats.x__arr__mutmut_7: suspicious
    reports.stats.x__arr__mutmut_8: killed
noise that is not a result line
"""


def test_mutmut_results_are_read_line_by_line():
    statuses = M.parse_results(RESULTS)
    assert len(statuses) == 8
    assert statuses["reports.stats.xǁTimerǁrun__mutmut_3"] == "timeout"
    assert statuses["reports.stats.x__arr__mutmut_5"] == "no tests"


def test_the_score_counts_killed_timeouts_survivors_untested_and_unrun_apart():
    s = M.score("reports/stats.py", M.parse_results(RESULTS))
    counts = (s.mutants, s.killed, s.timeouts, s.survived, s.no_tests, s.not_run, s.other)
    assert counts == (8, 2, 2, 1, 1, 1, 1)
    assert s.percent == pytest.approx(100 * 4 / 8)
    s.explained = 1
    assert s.percent_with_explained == pytest.approx(100 * 5 / 8)


def test_the_score_table_has_a_row_per_module_with_its_figures():
    s = M.Score("reports/stats.py", mutants=200, killed=180, timeouts=10, survived=10, explained=4,
                seconds=431.4, date="2026-01-02")
    stopped = M.Score("harness/methods/httm.py", mutants=50, killed=20, not_run=30, timed_out=True)
    lines = M.format_table([s, stopped]).splitlines()
    assert lines[0].startswith("| module | mutants | killed | timeouts | survived |")
    assert lines[2] == ("| reports/stats.py | 200 | 180 | 10 | 10 | 0 | 0 | 4 | 95.0 | 97.0 | 431 "
                        "| 2026-01-02 |")
    assert "| 30 (time limit) |" in lines[3] and "| 40.0 |" in lines[3]


# ---------------------------------------------------------------- where a mutant is


SOURCE = '''\
def helper(x):
    return x + 1


class Timer:
    def run(self, n):
        total = 0
        for i in range(n):
            total += i
        return total


def other(n):
    total = 0
    return total
'''

METHOD_DIFF = """\
--- pkg/a.py
+++ pkg/a.py
@@ -2,4 +2,4 @@
     total = 0
     for i in range(n):
-        total += i
+        total = i
     return total"""


def test_a_method_mutant_is_placed_on_its_line_in_the_file():
    assert M.function_of("pkg.a.xǁTimerǁrun__mutmut_3") == ("run", "Timer")
    assert M.mutated_line(SOURCE, METHOD_DIFF, "run", "Timer") == 9


def test_of_two_identical_lines_the_one_in_the_mutated_function_is_chosen():
    diff = "--- a\n+++ a\n@@ -1,3 +1,3 @@\n def other(n):\n-    total = 0\n+    total = 1\n     return total"
    assert M.function_of("pkg.a.x_other__mutmut_1") == ("other", None)
    assert M.mutated_line(SOURCE, diff, "other", None) == 14
    first = "--- a\n+++ a\n@@ -1,2 +1,2 @@\n-    total = 0\n+    total = 1"
    assert M.mutated_line(SOURCE, first, "run", "Timer") == 7


def test_a_diff_that_is_not_in_the_file_has_no_line():
    diff = "--- a\n+++ a\n@@ -1 +1 @@\n-    gone = 1\n+    gone = 2"
    assert M.mutated_line(SOURCE, diff, "helper", None) is None


# ---------------------------------------------------------------- explained equivalents


EQUIVALENTS = """\
# Equivalent mutants

## reports/stats.py

### x_median_ratio__mutmut_2
- mutation: `return a` -> `return a + 0`
- why: adding zero.

## harness/metrics/fidelity.py

### x__pair__mutmut_5 (line 24)
- mutation: `b.to(a.device)` -> `b.to(None)`
- why: one device.
"""


def _mutant(name: str, added: str) -> M.Mutant:
    return M.Mutant(name=name, status="survived", diff=f"--- f\n+++ f\n@@ -1 +1 @@\n-    old\n+    {added}")


def test_an_equivalent_is_matched_on_module_name_and_mutated_line(tmp_path):
    path = tmp_path / "eq.md"
    path.write_text(EQUIVALENTS)
    eq = M.load_equivalents(path)
    assert eq == {("reports/stats.py", "x_median_ratio__mutmut_2"): "return a + 0",
                  ("harness/metrics/fidelity.py", "x__pair__mutmut_5"): "b.to(None)"}
    stats_2 = _mutant("reports.stats.x_median_ratio__mutmut_2", "return a + 0")
    assert M.is_explained("reports/stats.py", stats_2, eq)
    # the same name in another module, or a renumbered mutant with another line, is not explained
    assert not M.is_explained("reports/compare.py", _mutant("reports.compare.x_median_ratio__mutmut_2",
                                                            "return a + 0"), eq)
    assert not M.is_explained("reports/stats.py", _mutant("reports.stats.x_median_ratio__mutmut_2",
                                                          "return a * 2"), eq)


def test_the_module_report_lists_open_survivors_first_with_file_line_and_mutation(tmp_path):
    module = M.Module("reports/stats.py", ("tests/reports/test_compare.py",))
    s = M.Score("reports/stats.py", mutants=10, killed=8, survived=2, explained=1, seconds=12,
                date="2026-01-02")
    open_ = M.Mutant("reports.stats.x_a__mutmut_1", "survived", "reports/stats.py", 31,
                     "--- f\n+++ f\n@@ -1 +1 @@\n-    a = 1\n+    a = 2")
    done = M.Mutant("reports.stats.x_b__mutmut_4", "survived", "reports/stats.py", 40,
                    "--- f\n+++ f\n@@ -1 +1 @@\n-    b = 1\n+    b = 1.0", explained=True)
    M.write_reports(tmp_path, module, s, [done, open_])
    text = (tmp_path / "reports.stats.txt").read_text()
    first = text.index("reports/stats.py:31  x_a__mutmut_1  [survived]\n    - a = 1\n    + a = 2")
    heading = text.index("explained in tests/mutation-equivalent.md: 1")
    assert first < heading < text.index("reports/stats.py:40  x_b__mutmut_4")
    record = json.loads((tmp_path / "reports.stats.json").read_text())
    assert [(m["line"], m["explained"]) for m in record["mutants"]] == [(40, True), (31, False)]
    summary = (tmp_path / "summary.md").read_text()
    assert "| reports/stats.py | 10 | 8 | 0 | 2 | 0 | 0 | 1 | 80.0 | 90.0 | 12 | 2026-01-02 |" in summary


def test_the_summary_keeps_the_modules_reported_earlier(tmp_path):
    for path in ("reports/stats.py", "harness/metrics/fidelity.py"):
        M.write_reports(tmp_path, M.Module(path, ("t",)), M.Score(path, mutants=1, killed=1), [])
    rows = [r for r in (tmp_path / "summary.md").read_text().splitlines() if r.startswith("| harness") or
            r.startswith("| reports")]
    assert [r.split(" | ")[0] for r in rows] == ["| harness/metrics/fidelity.py", "| reports/stats.py"]
