"""Trainable proxy models: small networks the harness trains on its own procedural data.

``harness train NAME`` trains one (see :mod:`harness.train.loop`); the committed weights live
in ``harness/proxies/NAME/`` and load through ``checkpoint: proxy:NAME``. The runner never
imports this package: benchmarks only read the weights.
"""

from __future__ import annotations

import importlib

from harness.params import did_you_mean
from harness.train.base import Proxy, TrainConfig

#: name -> "module:Class"; a proxy's module (and its model and data code) is imported only when
#: that proxy is asked for, since benchmarking never needs the trainers
PROXIES: dict[str, str] = {
    "vggt-proxy": "harness.train.vggt_proxy:VGGTProxy",
    "swin-proxy": "harness.train.swin_proxy:SwinProxy",
    "swin-det-proxy": "harness.train.det_proxy:SwinDetProxy",
}


def get_proxy(name: str) -> Proxy:
    """The proxy registered under ``name`` (unknown names raise with the known ones)."""
    if name not in PROXIES:
        raise KeyError(f"unknown proxy {name!r}{did_you_mean(name, list(PROXIES))}; "
                       f"known proxies: {', '.join(PROXIES)}")
    module, cls = PROXIES[name].split(":")
    return getattr(importlib.import_module(module), cls)()


__all__ = ["PROXIES", "Proxy", "TrainConfig", "get_proxy"]
