#!/usr/bin/env python3
"""Mutation testing, one module at a time against its own tests (mutmut), with a score table.

    python .ci/mutation.py                                   # every module of the map
    python .ci/mutation.py harness/methods/httm.py 'harness/store/*'
    python .ci/mutation.py --list                            # the map, nothing run

``nox -s mutation`` installs mutmut and calls this. The map (``tests/mutation-modules.toml``)
names each module, the test files that exercise it and a time limit. Each module runs in its own
folder ``mutation-work/<module>/``: symbolic links to the packages and the tests plus a
``pyproject.toml`` (the project's, with a ``[tool.mutmut]`` table that mutates only that module
and selects only its tests). mutmut copies that tree into ``mutants/`` and never writes to the
working tree. Afterwards ``mutation-report/<module>.txt`` lists every mutant no test killed, with
file:line and the mutation, ``<module>.json`` the same for machines, and ``summary.md`` the score
table of every module reported so far. A survivor explained in ``tests/mutation-equivalent.md``
(module heading, mutant name, the mutated line) is counted as explained, not as unexplained.

Standard library only (it runs under the nox session's Python, which has mutmut on its PATH).
"""

from __future__ import annotations

import argparse
import ast
import datetime as dt
import fnmatch
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: pytest depends on tomli there
    import tomli as tomllib

REPO = Path(__file__).resolve().parents[1]
MAP_FILE = REPO / "tests" / "mutation-modules.toml"
EQUIVALENT_FILE = REPO / "tests" / "mutation-equivalent.md"
WORK_DIR = REPO / "mutation-work"
REPORT_DIR = REPO / "mutation-report"
DEFAULT_TIMEOUT_MIN = 20.0
#: what each module's folder links to by default: the packages mutmut copies and the tests
DEFAULT_SOURCE_PATHS = ("harness", "baselines", "reports", "suites")
#: pytest options of every test run of a module unless the map says otherwise: the tests marked
#: slow (seconds each) would be run again for every mutant they reach
DEFAULT_PYTEST_ARGS = ("-m", "not slow")

#: mutmut's statuses (``mutmut results``) folded into the columns of the score table
COLUMN_OF_STATUS = {
    "killed": "killed",
    "caught by type check": "killed",
    "timeout": "timeouts",   # the tests never finished: detected
    "segfault": "timeouts",  # a crash (or the CPU limit's SIGKILL): detected
    "survived": "survived",
    "no tests": "no_tests",  # no selected test reaches the mutated function
    "not checked": "not_run",  # the module's time limit ended the run first
}
OTHER = "other"  # suspicious, skipped, interrupted
DETECTED = ("killed", "timeouts")
#: (module path, mutant name) -> the mutated line quoted in tests/mutation-equivalent.md
Equivalents = dict[tuple[str, str], str]


class MapError(ValueError):
    """The module map is wrong: what, where and what is allowed."""


@dataclass(frozen=True)
class Module:
    """One map entry: the module to mutate, the tests that exercise it, its time limit."""

    path: str
    tests: tuple[str, ...]
    timeout_min: float = DEFAULT_TIMEOUT_MIN
    also_copy: tuple[str, ...] = ()
    pytest_args: tuple[str, ...] = DEFAULT_PYTEST_ARGS
    mutmut: dict = field(default_factory=dict)  # extra [tool.mutmut] keys, e.g. process_isolation
    note: str = ""

    @property
    def name(self) -> str:
        """The module as a file name: ``harness/methods/httm.py`` -> ``harness.methods.httm``."""
        return self.path.removesuffix(".py").replace("/", ".")


@dataclass
class Mutant:
    """One mutant that no test killed (or that never ran): where, what, and whether it is explained."""

    name: str  # mutmut's key, e.g. reports.stats.x_median_ratio__mutmut_4
    status: str
    file: str = ""
    line: int | None = None
    diff: str = ""
    explained: bool = False

    @property
    def short(self) -> str:
        """The key without the module: ``x_median_ratio__mutmut_4``."""
        return self.name.rsplit(".", 1)[-1]


@dataclass
class Score:
    """The counts of one module's run (the columns of the score table)."""

    module: str
    mutants: int = 0
    killed: int = 0
    timeouts: int = 0
    survived: int = 0
    no_tests: int = 0
    not_run: int = 0
    other: int = 0
    explained: int = 0
    seconds: float = 0.0
    date: str = ""
    timed_out: bool = False

    @property
    def detected(self) -> int:
        return self.killed + self.timeouts

    @property
    def percent(self) -> float:
        """Killed (a failing test or a timeout) per mutant, in %; NaN without mutants."""
        return 100.0 * self.detected / self.mutants if self.mutants else float("nan")

    @property
    def percent_with_explained(self) -> float:
        """Killed or explained as equivalent, per mutant, in %."""
        return 100.0 * (self.detected + self.explained) / self.mutants if self.mutants else float("nan")


# ------------------------------------------------------------------ the map


def load_map(path: Path = MAP_FILE, root: Path = REPO) -> dict[str, Module]:
    """The module map: module path -> :class:`Module`, in file order. Every module and test file
    must exist under ``root``; a wrong key or value raises :class:`MapError` naming it."""
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise MapError(f"{path}: not valid TOML: {e}") from e
    defaults = data.get("defaults", {})
    base = Module("", (), timeout_min=float(defaults.get("timeout_min", DEFAULT_TIMEOUT_MIN)),
                  pytest_args=tuple(defaults.get("pytest_args", DEFAULT_PYTEST_ARGS)))
    modules = {}
    for key, entry in data.get("modules", {}).items():
        modules[key] = _module(path, root, key, entry, base)
    if not modules:
        raise MapError(f"{path}: no [modules.\"PATH\"] table; each names a module and its tests")
    return modules


def _module(map_path: Path, root: Path, key: str, entry: dict, base: Module) -> Module:
    where = f"{map_path.name}, [modules.\"{key}\"]"
    allowed = {"tests", "timeout_min", "also_copy", "pytest_args", "mutmut", "note"}
    unknown = sorted(set(entry) - allowed)
    if unknown:
        raise MapError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(allowed)}")
    if not key.endswith(".py") or not (root / key).is_file():
        raise MapError(f"{where}: {key} is not a Python file of the repository")
    tests = entry.get("tests")
    if not tests or not isinstance(tests, list) or not all(isinstance(t, str) for t in tests):
        raise MapError(f"{where}: 'tests' must be a non-empty list of test files")
    missing = [t for t in tests if not (root / t.split("::")[0]).exists()]
    if missing:
        raise MapError(f"{where}: test file(s) {missing} do not exist")
    minutes = entry.get("timeout_min", base.timeout_min)
    if not isinstance(minutes, (int, float)) or minutes <= 0:
        raise MapError(f"{where}: 'timeout_min' must be a positive number of minutes, got {minutes!r}")
    return Module(path=key, tests=tuple(tests), timeout_min=float(minutes),
                  also_copy=tuple(entry.get("also_copy", ())),
                  pytest_args=tuple(entry.get("pytest_args", base.pytest_args)),
                  mutmut=dict(entry.get("mutmut", {})), note=str(entry.get("note", "")))


def select(modules: dict[str, Module], wanted: list[str]) -> list[Module]:
    """The modules named on the command line (paths or shell patterns), in map order; all of
    them when none is named. A name that matches no module raises :class:`MapError`."""
    if not wanted:
        return list(modules.values())
    chosen = set()
    for want in wanted:
        hits = [k for k in modules if k == want or fnmatch.fnmatch(k, want)]
        if not hits:
            raise MapError(f"{want!r} is not in the module map; known: {', '.join(modules)}")
        chosen.update(hits)
    return [m for k, m in modules.items() if k in chosen]


# ------------------------------------------------------------------ one module's folder and run


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise MapError(f"cannot write {value!r} into [tool.mutmut]")


def mutmut_config(module: Module, source_paths: tuple[str, ...] = DEFAULT_SOURCE_PATHS) -> dict:
    """The ``[tool.mutmut]`` table of one module's run: mutate only it, select only its tests."""
    config = {
        "source_paths": list(source_paths),
        "only_mutate": [module.path],
        "also_copy": list(module.also_copy),
        "pytest_add_cli_args_test_selection": list(module.tests),
        "pytest_add_cli_args": ["-p", "no:cacheprovider", *module.pytest_args],
        "use_git_change_detection": False,
        # each mutant's tests run in a process forked from a server that has only collected the
        # tests: forked from mutmut's own process, they would inherit the caches (lru_cache) that
        # the unmutated code filled while mutmut mapped tests to functions, and torch's threads
        "process_isolation": "forkserver",
    }
    config.update(module.mutmut)
    return config


def prepare(module: Module, work: Path, root: Path = REPO) -> Path:
    """A fresh folder for one module: links to the packages and the tests, and a pyproject.toml
    (the project's, plus the module's ``[tool.mutmut]`` table). Returns the folder."""
    folder = work / module.name
    if folder.exists():
        shutil.rmtree(folder)  # removes the links, never what they point to
    folder.mkdir(parents=True)
    for name in (*DEFAULT_SOURCE_PATHS, "tests", *module.also_copy):
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).symlink_to(root / name)
    project = (root / "pyproject.toml").read_text()
    if "[tool.mutmut]" in project:
        raise MapError("pyproject.toml has its own [tool.mutmut]; the map's settings would clash with it")
    table = "\n".join(f"{k} = {_toml_value(v)}" for k, v in mutmut_config(module).items())
    (folder / "pyproject.toml").write_text(f"{project}\n[tool.mutmut]\n{table}\n")
    return folder


def mutmut_command() -> str:
    """The ``mutmut`` next to this Python (the nox session's), else the one on PATH."""
    here = Path(sys.executable).parent / "mutmut"
    return str(here) if here.exists() else "mutmut"


def run_mutmut(folder: Path, timeout_s: float, jobs: int) -> tuple[bool, float]:
    """``mutmut run`` in ``folder`` (its output to ``folder/mutmut.log``); stopped, with its
    children, after ``timeout_s``. Returns (timed out, seconds)."""
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):  # one thread per forked test run
        env.setdefault(var, "1")
    start = time.monotonic()
    with open(folder / "mutmut.log", "wb") as log:
        proc = subprocess.Popen([mutmut_command(), "run", "--max-children", str(jobs)], cwd=folder,
                                stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        try:
            proc.wait(timeout=timeout_s)
            timed_out = False
        except subprocess.TimeoutExpired:
            timed_out = True
            _stop(proc)
    if not timed_out and proc.returncode != 0:
        log_text = (folder / "mutmut.log").read_text(errors="replace")
        if not reached_nothing(log_text):
            raise RuntimeError(f"mutmut failed (exit {proc.returncode}) in {folder}; its log ends:\n"
                               f"{log_text[-3000:]}")
    return timed_out, time.monotonic() - start


NOTHING_REACHED = "could not find any test case for any mutant"


def reached_nothing(log_text: str) -> bool:
    """Whether mutmut stopped because no selected test reaches a mutated function (or the module has
    no function to mutate: mutmut 3 leaves module constants alone): not a failure of the run, a
    finding its report states (every mutant "no tests", or no mutant at all)."""
    return NOTHING_REACHED in log_text


def _stop(proc: subprocess.Popen) -> None:
    for sig, wait_s in ((signal.SIGTERM, 10), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
            proc.wait(timeout=wait_s)
            return
        except ProcessLookupError:
            return
        except subprocess.TimeoutExpired:
            continue


# ------------------------------------------------------------------ reading mutmut's results


RESULT_LINE = re.compile(r"^\s*(?P<name>\S+__mutmut_\d+): (?P<status>.+?)\s*$")


def parse_results(text: str) -> dict[str, str]:
    """``mutmut results --all true`` -> {mutant name: status}."""
    found = {}
    for line in text.splitlines():
        m = RESULT_LINE.match(line)
        if m:
            found[m["name"]] = m["status"]
    return found


def score(module: str, statuses: dict[str, str]) -> Score:
    """The score-table counts of one module from its mutants' statuses."""
    s = Score(module=module, mutants=len(statuses))
    for status in statuses.values():
        column = COLUMN_OF_STATUS.get(status, OTHER)
        setattr(s, column, getattr(s, column) + 1)
    return s


def function_of(mutant: str) -> tuple[str, str | None]:
    """(function, class or None) a mutant name refers to: ``m.xǁSlotMapǁmerge__mutmut_3`` ->
    ("merge", "SlotMap"); ``m.x_assign__mutmut_1`` -> ("assign", None)."""
    mangled = mutant.rsplit(".", 1)[-1].partition("__mutmut_")[0]
    if "ǁ" in mangled:
        _, cls, func = mangled.split("ǁ")
        return func, cls
    return mangled.removeprefix("x_"), None


def _def_line(source: str, func: str, cls: str | None) -> int:
    """The line of ``def func`` (inside ``class cls`` when given); 1 when not found."""
    tree = ast.parse(source)
    scopes = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == cls] if cls else [tree]
    for scope in scopes:
        for node in scope.body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == func:
                return node.lineno
    return 1


def mutated_line(source: str, diff: str, func: str, cls: str | None) -> int | None:
    """The line of ``source`` that a mutant's diff changes. mutmut diffs the function alone, so
    the hunk's original lines (context and removed, compared without indentation) are looked up
    in the file; of several matches the one nearest the function's ``def`` wins."""
    body = [ln for ln in diff.splitlines()
            if ln[:1] in (" ", "-", "+") and not ln.startswith(("---", "+++"))]
    kept = [ln for ln in body if ln[:1] != "+"]  # the hunk's lines as they are in the file
    if not kept or len(kept) == len(body) and all(ln[:1] == " " for ln in kept):
        return None
    original = [ln[1:].strip() for ln in kept]
    removed = [i for i, ln in enumerate(kept) if ln[:1] == "-"]
    # a pure insertion changes the line after the context lines that precede it
    first_change = removed[0] if removed else next(i for i, ln in enumerate(body) if ln[:1] == "+")
    text = [ln.strip() for ln in source.splitlines()]
    starts = [i for i in range(len(text) - len(original) + 1) if text[i:i + len(original)] == original]
    if not starts:
        return None
    anchor = _def_line(source, func, cls)
    best = min(starts, key=lambda i: abs(i + 1 - anchor))
    return best + first_change + 1


def changed_lines(diff: str) -> tuple[list[str], list[str]]:
    """(removed lines, added lines) of a diff, without indentation."""
    body = [ln for ln in diff.splitlines() if not ln.startswith(("---", "+++", "@@"))]
    return ([ln[1:].strip() for ln in body if ln.startswith("-")],
            [ln[1:].strip() for ln in body if ln.startswith("+")])


# ------------------------------------------------------------------ explained equivalents


def load_equivalents(path: Path = EQUIVALENT_FILE) -> Equivalents:
    """``tests/mutation-equivalent.md`` -> {(module path, mutant short name): mutated line}.

    The file has a ``## <module path>`` heading per module, a ``### <mutant>`` heading per
    mutant (mutmut's name, e.g. ``x_median_ratio__mutmut_4``), and under it a line
    ``- mutation: `<original>` -> `<mutated>` `` and a line ``- why: ...``."""
    if not path.exists():
        return {}
    found, module, mutant = {}, None, None
    for line in path.read_text().splitlines():
        if line.startswith("## "):
            module, mutant = line[3:].strip().strip("`"), None
        elif line.startswith("### "):
            mutant = line[4:].strip().strip("`").split()[0]
        elif module and mutant and line.startswith("- mutation:"):
            code = re.findall(r"`([^`]*)`", line)
            found[(module, mutant)] = code[-1].strip() if code else ""
    return found


def is_explained(module: str, mutant: Mutant, equivalents: Equivalents) -> bool:
    """Whether ``tests/mutation-equivalent.md`` explains this mutant: same module, same name, and
    the mutated line it quotes is the mutant's (mutmut renumbers mutants when the code changes,
    so a name alone could point at another mutant)."""
    quoted = equivalents.get((module, mutant.short))
    if quoted is None:
        return False
    _, added = changed_lines(mutant.diff)
    return quoted in added or (quoted == "" and not added)


# ------------------------------------------------------------------ reports


def format_table(scores: list[Score]) -> str:
    """The score table (Markdown): one row per module."""
    head = ("| module | mutants | killed | timeouts | survived | no tests | not run | explained "
            "| killed % | killed or explained % | time s | date |")
    rows = [head, "|" + "---|" * 12]
    for s in scores:
        pct = f"{s.percent:.1f}" if s.mutants else "-"
        pct_x = f"{s.percent_with_explained:.1f}" if s.mutants else "-"
        stop = " (time limit)" if s.timed_out else ""
        rows.append(f"| {s.module} | {s.mutants} | {s.killed} | {s.timeouts} | {s.survived} | "
                    f"{s.no_tests} | {s.not_run}{stop} | {s.explained} | {pct} | {pct_x} | "
                    f"{s.seconds:.0f} | {s.date} |")
    return "\n".join(rows)


def format_module_report(module: Module, s: Score, mutants: list[Mutant]) -> str:
    """The human-readable list of one module's mutants that no test killed."""
    out = [f"{module.path}: {s.mutants} mutants, {s.killed} killed, {s.timeouts} timeouts, "
           f"{s.survived} survived, {s.no_tests} without a test, {s.not_run} not run; "
           f"{s.percent:.1f} % killed, {s.percent_with_explained:.1f} % killed or explained",
           f"tests: {' '.join(module.tests)}",
           f"run {s.date}, {s.seconds:.0f} s" + (" (stopped at the time limit)" if s.timed_out else ""),
           ""]
    open_ = [m for m in mutants if not m.explained]
    out.append(f"not killed and not explained: {len(open_)}")
    out += [_mutant_block(m) for m in open_]
    done = [m for m in mutants if m.explained]
    if done:
        out.append(f"explained in tests/mutation-equivalent.md: {len(done)}")
        out += [_mutant_block(m) for m in done]
    return "\n".join(out) + "\n"


def _mutant_block(m: Mutant) -> str:
    where = f"{m.file}:{m.line}" if m.line else m.file
    removed, added = changed_lines(m.diff)
    lines = [f"{where}  {m.short}  [{m.status}]"]
    lines += [f"    - {r}" for r in removed] + [f"    + {a}" for a in added]
    return "\n".join(lines) + "\n"


def write_reports(out: Path, module: Module, s: Score, mutants: list[Mutant]) -> None:
    """``<module>.txt`` and ``<module>.json`` for one module, then ``summary.md`` of every module
    reported in ``out`` so far."""
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{module.name}.txt").write_text(format_module_report(module, s, mutants))
    record = {"module": module.path, "tests": list(module.tests), "score": asdict(s),
              "mutants": [asdict(m) for m in mutants]}
    (out / f"{module.name}.json").write_text(json.dumps(record, indent=1) + "\n")
    scores = []
    for path in sorted(out.glob("*.json")):
        scores.append(Score(**json.loads(path.read_text())["score"]))
    (out / "summary.md").write_text("# Mutation scores\n\n" + format_table(scores) + "\n")


# ------------------------------------------------------------------ the whole


def collect(module: Module, folder: Path, equivalents: Equivalents) -> tuple[Score, list[Mutant]]:
    """Statuses, diffs and lines of one finished (or stopped) run in ``folder``."""
    mutmut = mutmut_command()
    listing = subprocess.run([mutmut, "results", "--all", "true"], cwd=folder, capture_output=True,
                             text=True, check=True).stdout
    statuses = parse_results(listing)
    s = score(module.path, statuses)
    source = (REPO / module.path).read_text()
    mutants = []
    for name, status in sorted(statuses.items(), key=lambda kv: _natural(kv[0])):
        if COLUMN_OF_STATUS.get(status, OTHER) in DETECTED:
            continue
        diff = subprocess.run([mutmut, "show", name], cwd=folder, capture_output=True, text=True).stdout
        diff = "\n".join(ln for ln in diff.splitlines() if not ln.startswith("# "))
        m = Mutant(name=name, status=status, file=module.path, diff=diff)
        m.line = mutated_line(source, diff, *function_of(name))
        m.explained = status == "survived" and is_explained(module.path, m, equivalents)
        mutants.append(m)
    s.explained = sum(m.explained for m in mutants)
    return s, mutants


def _natural(name: str) -> tuple[str, int]:
    stem, _, number = name.rpartition("__mutmut_")
    return stem, int(number) if number.isdigit() else 0


def run_module(module: Module, work: Path, out: Path, jobs: int) -> Score:
    print(f"== {module.path}: mutmut against {' '.join(module.tests)} "
          f"(limit {module.timeout_min:g} min)", flush=True)
    folder = prepare(module, work)
    timed_out, seconds = run_mutmut(folder, module.timeout_min * 60, jobs)
    s, mutants = collect(module, folder, load_equivalents())
    s.seconds, s.timed_out = seconds, timed_out
    s.date = dt.date.today().isoformat()
    write_reports(out, module, s, mutants)
    if not s.mutants:
        print("   no mutants: mutmut 3 mutates functions only, and this module has none (constants only)",
              flush=True)
    else:
        print(f"   {s.detected}/{s.mutants} killed ({s.percent:.1f} %), {s.survived} survived, "
              f"{s.explained} explained; {out / (module.name + '.txt')}", flush=True)
    return s


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("modules", nargs="*", help="module paths or patterns from the map (default: all)")
    ap.add_argument("--map", type=Path, default=MAP_FILE)
    ap.add_argument("--work", type=Path, default=WORK_DIR, help="folder of the per-module runs")
    ap.add_argument("--out", type=Path, default=REPORT_DIR, help="folder of the reports")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 2, help="mutants tested at once")
    ap.add_argument("--list", action="store_true", help="print the map and stop")
    args = ap.parse_args(argv)
    try:
        chosen = select(load_map(args.map), args.modules)
    except MapError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.list:
        for m in chosen:
            note = f"  ({m.note})" if m.note else ""
            print(f"{m.path}  ({m.timeout_min:g} min)  {' '.join(m.tests)}{note}")
        return 0
    scores, failed = [], []
    for m in chosen:
        try:
            scores.append(run_module(m, args.work, args.out, args.jobs))
        except RuntimeError as e:  # mutmut could not run this module: say so, go on with the next
            print(f"error: {m.path}: {e}", file=sys.stderr)
            failed.append(m.path)
    print("\n" + format_table(scores))
    print(f"\nsurvivors: {args.out}/<module>.txt; every module so far: {args.out / 'summary.md'}")
    if failed:
        print(f"mutmut failed for {', '.join(failed)} (its log: {args.work}/<module>/mutmut.log)",
              file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
