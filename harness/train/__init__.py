"""Trainable proxy models: small networks the harness trains on its own procedural data.

``harness train NAME`` trains one (see :mod:`harness.train.loop`); the committed weights live
in ``harness/proxies/NAME/`` and load through ``checkpoint: proxy:NAME``. The runner never
imports this package: benchmarks only read the weights.
"""

from __future__ import annotations

import importlib

from harness.params import did_you_mean
from harness.train.base import Proxy, TrainConfig
from harness.train.recipe import is_recipe, load_recipe, shipped_recipes

#: name -> "module:Class"; a proxy's module (and its model and data code) is imported only when
#: that proxy is asked for, since benchmarking never needs the trainers
PROXIES: dict[str, str] = {
    "vggt-proxy": "harness.train.vggt_proxy:VGGTProxy",
    "swin-proxy": "harness.train.swin_proxy:SwinProxy",
    "swin-det-proxy": "harness.train.det_proxy:SwinDetProxy",
}


#: the proxy class of a QAT / SAQA recipe (harness.train.recipe)
RECIPE_PROXY = "harness.train.qat:QATProxy"


def trainable_names() -> list[str]:
    """What ``harness train`` takes by name: the proxies, then the shipped QAT recipes."""
    return [*PROXIES, *shipped_recipes()]


def get_proxy(name: str) -> Proxy:
    """The proxy registered under ``name``, or the QAT proxy of a recipe (a shipped recipe's name or a
    .yaml path; a malformed recipe raises SuiteError naming file, line and field). Unknown names
    raise KeyError with the known ones."""
    if name in PROXIES:
        module, cls = PROXIES[name].split(":")
        return getattr(importlib.import_module(module), cls)()
    if is_recipe(name):
        module, cls = RECIPE_PROXY.split(":")
        return getattr(importlib.import_module(module), cls)(load_recipe(name))
    names = trainable_names()
    raise KeyError(f"unknown proxy or recipe {name!r}{did_you_mean(name, names)}; known: {', '.join(names)} "
                   "(or a recipe file: path/to/recipe.yaml)")


__all__ = ["PROXIES", "Proxy", "TrainConfig", "get_proxy", "trainable_names"]
