"""``harness env``: this machine's environment fingerprint (JSON), as a run records it."""

from __future__ import annotations

import argparse
import json
from typing import Any

from harness.cli.common import EXIT_OK
from harness.measure.env import fingerprint

NAME = "env"


def setup(sub: Any) -> None:
    """Add the ``env`` command."""
    en = sub.add_parser(NAME, help="print this machine's environment fingerprint (JSON)")
    en.set_defaults(func=run)


def run(args: argparse.Namespace, argv: list[str]) -> int:
    """Print the fingerprint."""
    print(json.dumps(fingerprint(argv=["harness", *argv]), indent=2, sort_keys=True, default=str))
    return EXIT_OK
