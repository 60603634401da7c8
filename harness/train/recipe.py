"""QAT / SAQA recipes as data: YAML files checked field by field before anything trains.

A recipe file holds the fields of :class:`QATRecipe` at the top level and the training schedule
(:class:`harness.train.base.TrainConfig`'s fields) under ``train:``. Its name is the file's stem.
Shipped recipes live in ``harness/train/recipes/`` and are named on the command line
(``harness train qat-swin-det-w4a4``); any other file is given by path. A bad file is refused with
one paragraph per problem, each naming the file, the line, the field and what is allowed.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.models.weights import check_weights
from harness.params import param
from harness.suite.document import read_yaml
from harness.suite.fields import fields_of
from harness.suite.problems import Problems, SuiteError
from harness.train.base import TrainConfig

RECIPE_DIR = Path(__file__).resolve().parent / "recipes"
RECIPE_SUFFIXES = (".yaml", ".yml")
BASE_PROXIES = ("swin-proxy", "swin-det-proxy")


@dataclass(frozen=True)
class QATRecipe:
    """One quantization-aware fine-tuning run (uniform QAT, or SAQA with ``saqa: true``)."""

    name: str = param("", "the recipe's name (its file's stem; set by the loader)")
    description: str = param("", "one line for the model card and `harness train --list`")
    base: str = param("swin-proxy", "the committed float proxy fine-tuned", choices=BASE_PROXIES)
    start: str = param("", "weights to start from: proxy:NAME or a file of an earlier QAT run (SAQA: "
                           "the uniform QAT); empty: the base proxy, PTQ-initialized")
    w_bits: int = param(4, "weight bits (per-channel symmetric, straight-through)", range=(2, 16))
    a_bits: int = param(4, "activation bits of every window (uniform QAT) or of the high branch (SAQA)",
                        range=(2, 16))
    a_bits_low: int = param(2, "activation bits of the low branch (SAQA only)", range=(2, 16))
    embed_bits: int = param(8, "bits of patch embedding, patch merging and head (W and A)", range=(2, 16))
    calib_images: int = param(8, "images calibrating the initial activation steps", range=(1, 1024))
    saqa: bool = param(False, "sample per-pair low-bit ratios every step (SAQA); false: uniform QAT")
    max_ratio: float = param(0.8, "SAQA: largest per-pair ratio (MixA-Q's search space: 0 to 0.8)",
                             range=(0.0, 1.0))
    ratio_grid: float = param(0.1, "SAQA: ratios rounded to this grid (0: not rounded)", range=(0.0, 1.0))
    eval_ratio: float = param(0.5, "SAQA: held-out metrics also at this ratio on every pair",
                              range=(0.0, 1.0))
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        if self.saqa and self.a_bits_low > self.a_bits:
            raise ValueError(f"a_bits_low={self.a_bits_low} must not exceed a_bits={self.a_bits}")


def shipped_recipes() -> dict[str, Path]:
    """name -> file of the recipes under :data:`RECIPE_DIR`."""
    if not RECIPE_DIR.is_dir():
        return {}
    return {p.stem: p for p in sorted(RECIPE_DIR.iterdir()) if p.suffix in RECIPE_SUFFIXES}


def is_recipe(name: str) -> bool:
    """True when ``name`` is a shipped recipe's name or a path ending in .yaml / .yml."""
    return name in shipped_recipes() or name.endswith(RECIPE_SUFFIXES)


def load_recipe(name_or_path: str) -> QATRecipe:
    """The recipe of a shipped name or a file path; SuiteError (one paragraph per problem, each with
    file, line, field and what is allowed) when it is malformed, FileNotFoundError when missing."""
    path = shipped_recipes().get(name_or_path) or Path(name_or_path)
    if not path.is_file():
        known = ", ".join(shipped_recipes()) or "none"
        raise FileNotFoundError(f"no recipe {name_or_path!r}: not a shipped recipe ({known}) and no such "
                                "file")
    problems = Problems(str(path))
    data = read_yaml(path.read_text(encoding="utf-8", errors="replace"), problems)
    if data is None:
        raise problems.error()
    recipe = _build(data, path.stem, problems)
    if problems or recipe is None:
        raise problems.error()
    return recipe


def _checked(cls: type, data: dict[str, Any], path: tuple[str, ...], problems: Problems,
             skip: tuple[str, ...] = (), sections: tuple[str, ...] = ()) -> dict[str, Any]:
    """The fields of ``cls`` in ``data``, each checked (type, range, choices); unknown keys reported
    (``sections``: further keys allowed there, checked elsewhere)."""
    fields = {k: f for k, f in fields_of(cls, "recipe").items() if k not in skip}
    out: dict[str, Any] = {}
    for key, value in data.items():
        if key in sections:
            continue
        if key not in fields:
            problems.add(path + (str(key),), f"unknown field; allowed: {', '.join([*fields, *sections])}")
            continue
        v, found = fields[key].check(value)
        for sub, msg in found:
            problems.add(path + (key,) + sub, msg + fields[key].help_suffix())
        out[key] = v
    return out


def _build(data: dict[str, Any], name: str, problems: Problems) -> QATRecipe | None:
    train = data.get("train") or {}
    if not isinstance(train, dict):
        problems.add(("train",), f"must be a mapping of training settings, got {train!r}")
        train = {}
    top = _checked(QATRecipe, data, (), problems, skip=("name", "train"), sections=("train",))
    steps = _checked(TrainConfig, train, ("train",), problems)
    for problem in check_weights(top.get("start", "")):  # a missing start is said before anything is written
        problems.add(("start",), problem + " (train the recipe it names first)")
    if problems:
        return None
    try:
        return QATRecipe(name=name, train=dataclasses.replace(TrainConfig(), **steps), **top)
    except ValueError as e:
        problems.add((), str(e))
        return None


__all__ = ["QATRecipe", "RECIPE_DIR", "SuiteError", "is_recipe", "load_recipe", "shipped_recipes"]
