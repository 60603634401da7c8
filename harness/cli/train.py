"""``harness train PROXY``: train a proxy model (a small network on the harness's procedural data)."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path
from typing import Any

from harness.cli.common import EXIT_OK, UsageError, interrupted_exit_code, non_negative_int, positive_int
from harness.errors import HarnessError
from harness.models.weights import PROXY_ROOT
from harness.train import get_proxy, trainable_names
from harness.train.card import read_card
from harness.train.loop import config_problem, train, training_device_problem, with_overrides

NAME = "train"


def setup(sub: Any) -> None:
    """Add the ``train`` command."""
    tr = sub.add_parser(NAME, help="train a proxy model (small networks trained on procedural data)")
    tr.add_argument("proxy", nargs="?", help="proxy or QAT recipe name, or a recipe file (.yaml); omit, or "
                                             "--list, to list them")
    tr.add_argument("--out", help="output folder (default: runs/train/<proxy>); the committed weights "
                                  "live in harness/proxies/<proxy>/")
    tr.add_argument("--steps", type=positive_int, help="optimiser steps, >= 1 (default: the proxy's recipe)")
    tr.add_argument("--seed", type=non_negative_int,
                    help="seed of the initialisation and the batches, >= 0 (the largest depends on the "
                         "proxy; default: recipe)")
    tr.add_argument("--threads", type=positive_int,
                    help="CPU threads, >= 1 (default: recipe; results depend on it)")
    tr.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda, cuda:1 ...")
    tr.add_argument("--resume", action="store_true", help="continue the training state in --out")
    tr.add_argument("--list", action="store_true", help="list the proxies")
    tr.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    tr.set_defaults(func=run)


def run(args: argparse.Namespace, argv: list[str]) -> int:
    """Train the proxy (or list them), then compare its held-out metrics with the committed card."""
    if args.list or not args.proxy:
        for name in trainable_names():
            try:
                print(f"{name}: {get_proxy(name).description}")
            except HarnessError as e:  # a recipe whose start is not trained yet still lists
                print(f"{name}: not ready: {str(e).splitlines()[-1]}")
        return EXIT_OK
    try:
        proxy = get_proxy(args.proxy)
    except (KeyError, FileNotFoundError) as e:
        raise UsageError(e.args[0]) from None
    cfg = with_overrides(proxy.default_config(), steps=args.steps, seed=args.seed, threads=args.threads)
    problem = config_problem(proxy, cfg) or training_device_problem(args.device)
    if problem:  # before anything is written
        raise UsageError(problem)
    out = Path(args.out or Path("runs") / "train" / proxy.name)
    try:
        card = train(proxy, out, config=cfg, resume=args.resume, device=args.device, progress=not args.quiet)
    except KeyboardInterrupt as e:
        print(f"\ninterrupted; the last checkpoint is in {out}. Continue with: harness train {proxy.name} "
              f"--out {shlex.quote(str(out))} --resume (and the same --steps/--seed/--threads)",
              file=sys.stderr)
        return interrupted_exit_code(e)
    print(f"{proxy.name}: held-out " + ", ".join(f"{k} {v:.4g}" for k, v in card["heldout"].items()))
    print(f"weights, model card and curves in {out}/ ({card['training_time_s'] / 60:.1f} min of training)")
    committed = PROXY_ROOT / proxy.name
    shipped = read_card(committed)
    if shipped and committed.resolve() != out.resolve():
        diffs = ", ".join(f"{k} {shipped['heldout'][k]:.4g} -> {v:.4g}" for k, v in card["heldout"].items()
                          if k in shipped["heldout"])
        same = "identical" if shipped["weights"]["sha256"] == card["weights"]["sha256"] else "different"
        print(f"against the committed {proxy.name} ({committed}): weights {same}; {diffs}")
    return EXIT_OK
