"""``harness``: the command line. One module per command (``setup`` adds its parser, ``run`` runs it).

Commands: run | suites | list | report | plot | compare | profile | merge | env | train.

Exit codes: 0 success; 1 a run had non-ok points (without --allow-failures) or compare found a
regression; 2 a user error (bad suite, missing file, refused comparison, unusable output
directory: every :class:`~harness.errors.HarnessError`) printed as one paragraph on stderr,
without a traceback; 3 the operating system refused a read or write (full disk, permissions);
130 interrupted (Ctrl-C); 143 terminated (SIGTERM).
"""

from harness.cli.app import build_parser, main
from harness.cli.common import (
    EXIT_FAIL,
    EXIT_INTERRUPTED,
    EXIT_IO,
    EXIT_OK,
    EXIT_TERMINATED,
    EXIT_USAGE,
)

__all__ = ["EXIT_FAIL", "EXIT_INTERRUPTED", "EXIT_IO", "EXIT_OK", "EXIT_TERMINATED", "EXIT_USAGE",
           "build_parser", "main"]
