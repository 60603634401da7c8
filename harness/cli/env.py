"""``harness env``: this machine's environment fingerprint (JSON), as a run records it."""

from __future__ import annotations

import argparse
import json
from typing import Any

from harness import registry
from harness.cli.common import EXIT_OK
from harness.measure.env import fingerprint

NAME = "env"


def setup(sub: Any) -> None:
    """Add the ``env`` command."""
    en = sub.add_parser(NAME, help="print this machine's environment fingerprint (JSON)")
    en.set_defaults(func=run)


def run(args: argparse.Namespace, argv: list[str]) -> int:
    """Print the fingerprint."""
    registry.load_builtins()  # the plugins' record is part of the fingerprint
    fp = fingerprint(argv=["harness", *argv], plugins=registry.plugin_record())
    print(json.dumps(fp, indent=2, sort_keys=True, default=str))
    return EXIT_OK
