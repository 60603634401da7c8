"""The harness's version and where its package lives (read by the fingerprint and the run manifest)."""

from pathlib import Path

__version__ = "0.1.0"

#: the folder holding the ``harness`` package (a checkout's root, or site-packages)
PACKAGE_PARENT = Path(__file__).resolve().parent.parent
