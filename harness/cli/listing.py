"""``harness list``: workloads, methods and their parameters (what a suite may set and sweep)."""

from __future__ import annotations

import argparse
import textwrap
from typing import Any

from tabulate import tabulate

from harness import registry
from harness.cli.common import EXIT_OK, UsageError
from harness.cli.suites import suites_listing
from harness.params import describe, format_value
from harness.workloads.base import CommonParams

NAME = "list"


def setup(sub: Any) -> None:
    """Add the ``list`` command."""
    ls = sub.add_parser(NAME, help="workloads, methods, their parameters, and the suites shipped with "
                                   "the harness")
    ls.add_argument("--workload", help="only this workload")
    ls.set_defaults(func=run)


def params_table(cls: type, indent: str) -> str:
    """A parameters dataclass as a table: name, type, default, allowed values, help."""
    infos = describe(cls)
    if not infos:
        return indent + "(no parameters)"
    rows = [[i.name, i.type_name, format_value(i.default), i.allowed(), i.help] for i in infos]
    table = tabulate(rows, headers=["parameter", "type", "default", "allowed", "help"])
    return "\n".join(indent + line for line in table.splitlines())


def run(args: argparse.Namespace, argv: list[str]) -> int:
    """Print the common parameters, then each workload with its presets and methods."""
    registry.load_builtins()
    names = registry.workload_names()
    if args.workload is not None:
        if args.workload not in names:
            try:
                registry.get_workload(args.workload)
            except KeyError as e:
                raise UsageError(e.args[0]) from None
        names = [args.workload]
    out = ["common parameters (every workload):", params_table(CommonParams, "  "), ""]
    for w in names:
        out.extend(_workload_section(w))
        out.append("")
    if args.workload is None:
        out.append(suites_listing(verbose=True))
    print("\n".join(out).rstrip())
    return EXIT_OK


def _workload_section(w: str) -> list[str]:
    cls = registry.get_workload(w)
    out = [f"workload {w}" + (f": {cls.doc}" if cls.doc else ""), params_table(cls.Params, "  ")]
    presets = cls.model_presets()
    if presets:
        out.append("  model presets:")
        out.append(textwrap.indent(tabulate([{"preset": k, **v} for k, v in presets.items()], headers="keys"),
                                   "    "))
    for m in registry.method_names(w):
        spec = registry.get_method(w, m)
        out.append(f"  method {m}" + (f": {spec.doc}" if spec.doc else ""))
        out.append(params_table(spec.params, "    "))
    return out
