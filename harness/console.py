"""The ``harness`` console script: the command line, with Ctrl-C during its start-up (the imports
of torch and the reports take seconds) ending quietly with exit code 130 instead of a traceback."""

from __future__ import annotations

import signal
import sys
from typing import Any

from harness.errors import EXIT_INTERRUPTED, EXIT_TERMINATED


def _terminated_while_starting(signum: int, frame: Any) -> None:
    print("\nharness: terminated (SIGTERM) while starting; nothing was run", file=sys.stderr)
    raise SystemExit(EXIT_TERMINATED)


def main() -> int:
    """Import the command line, then run it (:func:`harness.cli.app.main`, which installs its own
    SIGTERM handling for the command)."""
    previous = signal.signal(signal.SIGTERM, _terminated_while_starting)
    try:
        from harness.cli.app import main as run  # the heavy imports, where Ctrl-C may land
    except KeyboardInterrupt:
        print("\nharness: interrupted while starting; nothing was run", file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        signal.signal(signal.SIGTERM, previous)
    return run()


if __name__ == "__main__":
    sys.exit(main())
