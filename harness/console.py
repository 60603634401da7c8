"""The ``harness`` console script: the command line, with Ctrl-C during its start-up (the imports
of torch and the reports take seconds) ending quietly with exit code 130 instead of a traceback."""

from __future__ import annotations

import sys

from harness.errors import EXIT_INTERRUPTED


def main() -> int:
    """Import the command line, then run it (:func:`harness.cli.app.main`)."""
    try:
        from harness.cli.app import main as run  # the heavy imports, where Ctrl-C may land
    except KeyboardInterrupt:
        print("\nharness: interrupted while starting; nothing was run", file=sys.stderr)
        return EXIT_INTERRUPTED
    return run()


if __name__ == "__main__":
    sys.exit(main())
