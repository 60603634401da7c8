"""``harness suites``: the suites shipped with the harness, one line each (a bare name runs one)."""

from __future__ import annotations

import argparse
from typing import Any

from harness.cli.common import EXIT_OK
from harness.suite.catalog import describe_suite_file, packaged_suite_files, packaged_suites_dir

NAME = "suites"


def setup(sub: Any) -> None:
    """Add the ``suites`` command."""
    su = sub.add_parser(NAME, help="the suites shipped with the harness (run one by name: harness run NAME)")
    su.add_argument("-v", "--verbose", action="store_true",
                    help="the whole description, the file and the presets of each suite")
    su.set_defaults(func=run)


def run(args: argparse.Namespace, argv: list[str]) -> int:
    """Print one line per packaged suite (with -v: its file and presets too)."""
    print(suites_listing(verbose=args.verbose))
    return EXIT_OK


def suites_listing(verbose: bool = False) -> str:
    """The packaged suites, a line each: ``name  workload  description`` (verbose: the whole
    description, then the file and presets)."""
    entries = [describe_suite_file(f) for f in packaged_suite_files()]
    if not entries:
        return f"no suites found in {packaged_suites_dir()}"
    width = max(len(e.name) for e in entries)
    lines = [f"suites shipped with the harness ({packaged_suites_dir()}); run one with: harness run NAME"]
    for e in entries:
        if e.problem:
            lines.append(f"  {e.name:<{width}}  unreadable ({e.problem}); "
                         f"`harness run {e.path} --dry-run` explains")
            continue
        text = e.description or "(no description)"
        lines.append(f"  {e.name:<{width}}  {e.workload:<9}  {text if verbose else _first_sentence(text)}")
        if verbose:
            presets = ", ".join(e.presets) or "(none)"
            default = f" (default {e.default_preset})" if e.default_preset else ""
            lines.append(f"  {'':<{width}}  file {e.path.name}; presets: {presets}{default}")
    return "\n".join(lines)


def _first_sentence(text: str, most_chars: int = 72) -> str:
    """The description's first sentence (up to the first ". " or ": "), cut to ``most_chars``."""
    for stop in (". ", ": "):
        text = text.split(stop)[0]
    return text if len(text) <= most_chars else text[: most_chars - 3].rstrip() + "..."
