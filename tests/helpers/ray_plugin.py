"""Test doubles for the Ray executor, loaded through $HARNESS_PLUGINS by the test process and by
Ray's workers: attention methods that raise, or kill their worker process."""

from __future__ import annotations

import os
from dataclasses import dataclass

from harness.params import param
from harness.registry import MethodSpec, register_method


@dataclass(frozen=True)
class BoomParams:
    """No knobs."""


@dataclass(frozen=True)
class DieParams:
    marker: str = param("", "file that gets one line per attempt before the worker exits")


def _boom(_p: BoomParams):
    def attention_fn(q, k, v, layout):
        raise ValueError("boom from the plugin")

    return attention_fn


def _die(p: DieParams):
    def attention_fn(q, k, v, layout):
        if p.marker:
            with open(p.marker, "a") as f:
                f.write(f"{os.getpid()}\n")
        os._exit(3)  # what a segfault or the OOM killer does to a worker

    return attention_fn


register_method(MethodSpec("boom", BoomParams, _boom, ("attention",), "raises on every call"))
register_method(MethodSpec("die", DieParams, _die, ("attention",), "kills its process on every call"))
