"""The architecture holds, checked on the source: no import cycle between modules, no import inside
a function to dodge one, no private name imported across modules, reports that never import a
model, method, workload or the runner, and short functions (or a stated reason).

How: every module of the harness's packages is parsed (nothing is imported); an edge A -> B is an
``import`` or ``from ... import`` in A that names module B (``from harness.store import load``
names ``harness.store``; ``from harness.store import columns`` names ``harness.store.columns``).
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("harness", "baselines", "reports", "suites")
MAX_FUNCTION_LINES = 80
#: a function longer than MAX_FUNCTION_LINES says why in a docstring line starting with this
LENGTH_REASON = "Length:"

#: function-level imports of internal modules that are not cycle dodges, each with its reason
LATE_IMPORTS_ALLOWED = {
    ("harness.console", "harness.cli.app"):
        "the console script imports the command line inside its Ctrl-C guard (start-up takes seconds)",
    ("harness.methods.kernels", "harness.methods.triton_merge"):
        "imports Triton (GPU-only, optional) only when the Triton kernels are chosen",
}
#: modules a report may reach although they sit in a method package (configuration, not a method)
REPORT_REACH_ALLOWED = {"harness.methods", "harness.methods.kernels"}
REPORT_FORBIDDEN = ("harness.models", "harness.methods", "harness.workloads", "harness.run", "harness.train",
                    "baselines")


@dataclass
class Module:
    name: str
    path: Path
    tree: ast.Module
    imports: set[str] = field(default_factory=set)  # module-level edges
    late: list[tuple[str, int]] = field(default_factory=list)  # (target, line) inside functions
    private: list[tuple[str, str, int]] = field(default_factory=list)  # (module, name, line)


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_internal(name: str) -> bool:
    return name.split(".")[0] in PACKAGES


def _resolve(mod: Module, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = mod.name.split(".")
    base = base if mod.path.name == "__init__.py" else base[:-1]
    base = base[: len(base) - node.level + 1]
    return ".".join(base + ([node.module] if node.module else []))


def _type_checking_nodes(tree: ast.Module) -> set[int]:
    inside: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            inside.update(id(n) for n in ast.walk(node))
    return inside


def _parse() -> dict[str, Module]:
    modules = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            mod = Module(_module_name(path), path, ast.parse(path.read_text(), str(path)))
            modules[mod.name] = mod
    for mod in modules.values():
        typing_only = _type_checking_nodes(mod.tree)
        functions = [f for f in ast.walk(mod.tree) if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))]
        in_function = {id(n) for f in functions for n in ast.walk(f) if n is not f}
        for node in ast.walk(mod.tree):
            if id(node) in typing_only or not isinstance(node, (ast.Import, ast.ImportFrom)):
                continue
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names if _is_internal(a.name)]
            else:
                source = _resolve(mod, node)
                if not _is_internal(source):
                    continue
                for alias in node.names:
                    sub = f"{source}.{alias.name}"
                    targets.append(sub if sub in modules else source)
                    if alias.name.startswith("_") and not alias.name.startswith("__"):
                        mod.private.append((source, alias.name, node.lineno))
            for target in targets:
                if id(node) in in_function:
                    mod.late.append((target, node.lineno))
                else:
                    mod.imports.add(target)
    return modules


MODULES = _parse()


def _cycles(modules: dict[str, Module]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), or a module importing itself."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(modules[v].imports & modules.keys()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1 or v in modules[v].imports:
                out.append(sorted(comp))

    for v in sorted(modules):
        if v not in index:
            visit(v)
    return out


def test_the_walker_sees_the_packages_and_their_imports():
    # a walker that finds nothing would pass every check below
    assert len(MODULES) > 100
    assert "harness.store.columns" in MODULES["harness.run.runner"].imports or \
        "harness.store" in MODULES["harness.run.runner"].imports
    assert "harness.measure.nvml" in MODULES["harness.measure.telemetry"].imports


def test_the_cycle_finder_finds_a_planted_cycle():
    planted = {name: Module(name, Path(name), ast.Module(body=[], type_ignores=[])) for name in "abc"}
    planted["a"].imports, planted["b"].imports, planted["c"].imports = {"b"}, {"c"}, {"a"}
    assert _cycles(planted) == [["a", "b", "c"]]
    planted["c"].imports = set()
    assert _cycles(planted) == []


def test_no_import_cycle_between_modules():
    assert _cycles(MODULES) == []


def test_no_internal_import_inside_a_function():
    late = [f"{m.name}:{line} imports {target}" for m in MODULES.values() for target, line in m.late
            if (m.name, target) not in LATE_IMPORTS_ALLOWED]
    assert late == [], "an import inside a function hides a dependency (or dodges a cycle): " + \
        "; ".join(late)


def test_no_private_name_is_imported_from_another_module():
    found = [f"{m.name}:{line} imports {name} from {source}" for m in MODULES.values()
             for source, name, line in m.private]
    assert found == []


def test_no_private_attribute_of_another_internal_module_is_used():
    found = []
    for m in MODULES.values():
        aliases = {}
        for node in ast.walk(m.tree):
            if isinstance(node, ast.ImportFrom) and _is_internal(_resolve(m, node) or ""):
                for alias in node.names:
                    if f"{_resolve(m, node)}.{alias.name}" in MODULES:
                        aliases[alias.asname or alias.name] = f"{_resolve(m, node)}.{alias.name}"
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if _is_internal(alias.name) and alias.asname:
                        aliases[alias.asname] = alias.name
        for node in ast.walk(m.tree):
            private = (isinstance(node, ast.Attribute) and node.attr.startswith("_")
                       and not node.attr.startswith("__"))
            if private and isinstance(node.value, ast.Name) and node.value.id in aliases:
                found.append(f"{m.name}:{node.lineno} uses {aliases[node.value.id]}.{node.attr}")
    assert found == []


def _reach(start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        name = todo.pop()
        for target in MODULES[name].imports if name in MODULES else ():
            if target not in seen:
                seen.add(target)
                todo.append(target)
    return seen


@pytest.mark.parametrize("report", sorted(n for n in MODULES if n.startswith("reports")))
def test_a_report_never_imports_a_model_method_workload_or_the_runner(report):
    bad = sorted(t for t in _reach(report)
                 if t.startswith(REPORT_FORBIDDEN) and t not in REPORT_REACH_ALLOWED)
    assert bad == [], f"{report} reaches {bad}: reports read run directories only"


def test_functions_are_short_or_say_why():
    long = []
    for m in MODULES.values():
        for node in ast.walk(m.tree):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            lines = node.end_lineno - node.lineno + 1
            doc = ast.get_docstring(node) or ""
            says_why = any(s.strip().startswith(LENGTH_REASON) for s in doc.splitlines())
            if lines > MAX_FUNCTION_LINES and not says_why:
                long.append(f"{m.name}.{node.name} ({lines} lines)")
    assert long == [], (f"functions over {MAX_FUNCTION_LINES} lines without a '{LENGTH_REASON}' line in "
                        f"their docstring: {', '.join(long)}")


def test_every_test_file_has_a_basename_of_its_own():
    """The test folders are not packages: pytest imports each test file by its basename, so two
    files of one name in two folders stop the whole collection ("import file mismatch")."""
    seen: dict[str, Path] = {}
    clashes = []
    for path in sorted((ROOT / "tests").rglob("test_*.py")):
        if path.name in seen:
            clashes.append(f"{seen[path.name].relative_to(ROOT)} and {path.relative_to(ROOT)}")
        seen.setdefault(path.name, path)
    assert clashes == []
