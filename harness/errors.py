"""The one base class of the errors a user can cause and fix.

Every such error in the harness (a bad suite, an unusable run directory, a refused comparison, a
run that cannot start, ...) derives from :class:`HarnessError`; the CLI prints its message as one
paragraph, without a traceback, and exits with its ``exit_code``. Library users catch
``HarnessError`` for all of them.
"""

from __future__ import annotations

#: exit code of an error the user can fix (a bad file, a refused option, an unusable directory)
EXIT_USAGE = 2
#: exit code of a read or write the operating system refused (a full disk, a read-only folder)
EXIT_IO = 3
#: exit code of a command interrupted by Ctrl-C (SIGINT)
EXIT_INTERRUPTED = 130
#: exit code of a command terminated by SIGTERM (handled like Ctrl-C)
EXIT_TERMINATED = 143


class HarnessError(Exception):
    """A problem the user can fix; its message says what, where, and what is allowed."""

    exit_code: int = EXIT_USAGE


class StorageError(HarnessError):
    """A read or write the operating system refused (full disk, no permission), named with its path;
    exit code 3, like an ``OSError`` the CLI reports."""

    exit_code: int = EXIT_IO


class RunError(HarnessError, ValueError):
    """A run that cannot start or go on (an unknown order or executor, a resume into another suite's
    run, a device this machine lacks, ...)."""
