"""The training loop every proxy shares: AdamW, warm-up + cosine, checkpoints, resume, curves, card.

``train(proxy, out_dir, ...)`` writes into ``out_dir``:

- ``state.pt``: resumable state (model, optimiser, step, recipe, seconds trained), every
  ``ckpt_every`` steps, replaced atomically; read back with ``weights_only=True``;
- ``curves.jsonl`` (appended as training goes) and ``curves.parquet`` + ``curves.png``
  (training loss and its parts per step, held-out metrics per evaluation);
- at the end ``model.safetensors`` (in ``save_dtype``) and the model card ``card.md`` /
  ``card.json`` (recipe, seeds, data, parameters, training time, machine, held-out metrics of
  the *saved* weights, trivial baselines).

Batches are a pure function of (step, seed), so a resumed run sees the same data as an
uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import nn
from tqdm import tqdm

from harness.errors import HarnessError
from harness.measure.devices import device_problem, resolve_device
from harness.train.base import Proxy, TrainConfig
from harness.train.card import write_card

STATE_FILE = "state.pt"
CURVES_LOG = "curves.jsonl"
CURVES_TABLE = "curves.parquet"
CURVES_PLOT = "curves.png"
WEIGHTS_FILE = "model.safetensors"


class TrainError(HarnessError, ValueError):
    """A training run cannot start or continue (bad output folder, mismatched resume)."""


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Learning rate of ``step`` (0-based): linear warm-up, then cosine down to lr * min_lr_frac."""
    if cfg.warmup_steps and step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    span = max(1, cfg.steps - cfg.warmup_steps)
    t = min(1.0, (step - cfg.warmup_steps) / span)
    floor = cfg.lr * cfg.min_lr_frac
    return floor + (cfg.lr - floor) * 0.5 * (1.0 + math.cos(math.pi * t))


def _atomic_save(obj: Any, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _append_jsonl(path: Path, row: dict[str, Any]) -> None:
    with path.open("a") as f:
        f.write(json.dumps(row) + "\n")
        f.flush()


def read_curves(out_dir: Path) -> list[dict[str, Any]]:
    """The rows of ``curves.jsonl`` (a torn last line from a kill is skipped)."""
    path = Path(out_dir) / CURVES_LOG
    rows = []
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return rows


def _truncate_curves(out_dir: Path, step: int) -> None:
    """Drop curve rows past ``step`` (written after the checkpoint a resume starts from)."""
    rows = [r for r in read_curves(out_dir) if r["step"] <= step]
    path = out_dir / CURVES_LOG
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def _config_dict(cfg: TrainConfig) -> dict[str, Any]:
    return asdict(cfg)


def _round_trip(model: nn.Module, dtype: str) -> nn.Module:
    """The model as it will be shipped: the tensors its checkpoint holds (parameters and persistent
    buffers) cast to ``dtype`` and back to float32. Non-persistent buffers (constants such as an
    ImageNet mean/std the model builds itself) are not saved, so a loaded model has them exact:
    they stay exact here too, or the card's metrics would be of another model."""
    if dtype == "float32":
        return model
    for t in model.state_dict(keep_vars=True).values():
        if t.is_floating_point():
            t.data = t.data.to(getattr(torch, dtype)).float()
    return model


def evaluate(proxy: Proxy, model: nn.Module) -> dict[str, float]:
    """Held-out metrics in eval mode without gradients; the model is left in train mode."""
    model.eval()
    with torch.no_grad():
        metrics = proxy.evaluate(model)
    model.train()
    return {k: float(v) for k, v in metrics.items()}


@dataclass
class _Progress:
    """Where training stands: optimiser steps done and seconds spent training (evaluation excluded)."""

    step: int = 0
    trained_s: float = 0.0


def train(
    proxy: Proxy,
    out_dir: str | Path,
    *,
    config: TrainConfig | None = None,
    resume: bool = False,
    device: str = "auto",
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Train ``proxy`` into ``out_dir`` and return the model card (as a dict).

    resume: continue from ``out_dir/state.pt`` (the recipe must be the same); without it a
    folder that already holds a training state is refused.
    """
    cfg = config or proxy.default_config()
    out = Path(out_dir)
    state_path = out / STATE_FILE
    problem = config_problem(proxy, cfg) or training_device_problem(device)
    if problem:  # refused before anything is written
        raise TrainError(problem)
    _check_output(out, state_path, resume)
    dev = torch.device(resolve_device(device))
    if dev.type == "cpu":
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    model = proxy.build_model(cfg.seed).to(dev).train()
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    optim = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.lr, betas=(0.9, 0.95),
    )
    at = _Progress()
    if resume:
        at = _resume(proxy, cfg, model, optim, out, dev, log)
    proxy.prepare(progress)  # e.g. render a data pool (not counted as training time)
    _train_steps(proxy, cfg, model, optim, out, dev, at, progress)
    write_curves(out)
    _round_trip(model, cfg.save_dtype)
    final = evaluate(proxy, model)
    model.eval()
    weights = _save_weights(out / WEIGHTS_FILE, proxy.weights_state(model), cfg.save_dtype, proxy.name)
    with torch.no_grad():
        baselines = proxy.baselines()
    return write_card(out, proxy, cfg, model, final, baselines, at.trained_s, dev, weights)


def config_problem(proxy: Proxy, cfg: TrainConfig) -> str | None:
    """None when ``cfg`` can train ``proxy``, else the problem in words, naming the option of
    ``harness train`` that sets it (steps, threads and seed; the other fields come from the recipe)."""
    if cfg.steps < 1:
        return f"--steps must be >= 1, got {cfg.steps}"
    if cfg.threads < 1:
        return f"--threads must be >= 1, got {cfg.threads}"
    seed = proxy.seed_problem(cfg.seed)
    return f"--seed: {seed}" if seed else None


def training_device_problem(device: str) -> str | None:
    """None when ``device`` (cpu, cuda, cuda:N or auto) can train here, else the problem in words."""
    problem = device_problem(device)
    if problem:
        return f"--device {problem}"
    name = resolve_device(device)
    if not name.startswith("cuda"):
        return None
    if not torch.cuda.is_available():
        return (f"--device {device!r} asked for, but torch sees no CUDA GPU here; use --device cpu (or "
                "auto, which takes a GPU only when there is one)")
    index = int(name.split(":")[1]) if ":" in name else 0
    count = torch.cuda.device_count()
    if index >= count:
        return f"--device {device!r}: only {count} CUDA device(s) visible here (cuda:0 to cuda:{count - 1})"
    return None


def _file_in_the_way(out: Path) -> Path | None:
    """``out`` or the nearest of its parents that exists, when that is not a folder."""
    for path in (out, *out.parents):
        if path.exists():
            return None if path.is_dir() else path
    return None


def _check_output(out: Path, state_path: Path, resume: bool) -> None:
    """``out`` is writable, and holds a training state exactly when resuming (TrainError if not)."""
    blocker = _file_in_the_way(out)
    if blocker is not None:
        what = "a file" if blocker.is_file() else "something else"
        where = f"is {what}" if blocker == out else f"cannot be created: {blocker} is {what}"
        raise TrainError(f"--out {out} {where}, not a folder; give a folder (new or existing) for the "
                         "weights, model card and curves")
    if state_path.exists() and not resume:
        raise TrainError(f"{out} already holds a training state ({STATE_FILE}); continue it with --resume "
                         "or choose another --out")
    if resume and not state_path.exists():
        raise TrainError(f"--resume: {out} holds no training state ({STATE_FILE}); start without --resume")
    try:
        out.mkdir(parents=True, exist_ok=True)
        (out / ".write-test").write_text("")
        (out / ".write-test").unlink()
    except OSError as e:
        raise TrainError(f"cannot write to the output folder {out}: {e.strerror or e}") from e


def _resume(proxy: Proxy, cfg: TrainConfig, model: nn.Module, optim: torch.optim.Optimizer, out: Path,
            dev: torch.device, log: Callable[[str], None]) -> _Progress:
    """Load model and optimiser from ``out``'s training state (same recipe only); cut the curves log
    back to the state's step."""
    state = torch.load(out / STATE_FILE, map_location=dev, weights_only=True)
    if state["config"] != _config_dict(cfg):
        changed = sorted(k for k in state["config"] if state["config"][k] != _config_dict(cfg).get(k))
        raise TrainError(f"--resume: {out} was trained with another recipe (differs in: "
                         f"{', '.join(changed)}); resume with the same options or choose another --out")
    model.load_state_dict(state["model"])
    optim.load_state_dict(state["optim"])
    at = _Progress(int(state["step"]), float(state["train_s"]))
    _truncate_curves(out, at.step)
    log(f"resuming {proxy.name} at step {at.step}/{cfg.steps} ({at.trained_s / 60:.1f} min trained)")
    return at


def _save_state(model: nn.Module, optim: torch.optim.Optimizer, cfg: TrainConfig, at: _Progress,
                path: Path) -> None:
    _atomic_save({"model": model.state_dict(), "optim": optim.state_dict(), "step": at.step,
                  "config": _config_dict(cfg), "train_s": at.trained_s}, path)


def _train_steps(proxy: Proxy, cfg: TrainConfig, model: nn.Module, optim: torch.optim.Optimizer, out: Path,
                 dev: torch.device, at: _Progress, progress: bool) -> None:
    """Optimiser steps from ``at.step`` to ``cfg.steps``: one curves row per step, an evaluation every
    ``eval_every`` and a checkpoint every ``ckpt_every`` steps (and at the end)."""
    state_path = out / STATE_FILE
    bar = (tqdm(total=cfg.steps, initial=at.step, desc=f"train {proxy.name}", unit="step", dynamic_ncols=True)
           if progress else None)
    t_mark = time.perf_counter()
    while at.step < cfg.steps:
        batch = proxy.to_device(proxy.batch(at.step, cfg.batch, cfg.seed), dev)
        lr = lr_at(at.step, cfg)
        for group in optim.param_groups:
            group["lr"] = lr
        loss, parts = proxy.loss(model, batch)
        if not torch.isfinite(loss):
            _save_state(model, optim, cfg, at, state_path)
            raise TrainError(f"{proxy.name}: the loss became {loss.item()} at step {at.step} (lr {lr:.2e}); "
                             f"the last good state is in {state_path}")
        optim.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = (nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip) if cfg.grad_clip
                     else torch.tensor(0.0))
        optim.step()
        at.step += 1
        now = time.perf_counter()
        at.trained_s += now - t_mark
        t_mark = now
        row: dict[str, Any] = {"step": at.step, "kind": "train", "loss": loss.item(), "lr": lr,
                               "grad_norm": float(grad_norm), "elapsed_s": at.trained_s}
        row.update({f"loss_{k}": float(v) for k, v in parts.items()})
        _append_jsonl(out / CURVES_LOG, row)
        if at.step % cfg.eval_every == 0 or at.step == cfg.steps:
            metrics = evaluate(proxy, model)
            _append_jsonl(out / CURVES_LOG, {"step": at.step, "kind": "eval", "elapsed_s": at.trained_s,
                                             **metrics})
            if bar is not None:
                bar.write(f"step {at.step}: " + ", ".join(f"{k} {v:.4g}" for k, v in metrics.items()))
            t_mark = time.perf_counter()  # evaluation time does not count as training time
        if at.step % cfg.ckpt_every == 0 or at.step == cfg.steps:
            _save_state(model, optim, cfg, at, state_path)
            t_mark = time.perf_counter()
        if bar is not None:
            bar.set_postfix(loss=f"{row['loss']:.4f}", lr=f"{lr:.1e}")
            bar.update(1)
    if bar is not None:
        bar.close()


def _save_weights(weights: Path, state: dict[str, torch.Tensor], save_dtype: str, name: str) -> Path:
    """The tensors of ``state`` as safetensors in ``save_dtype`` (floating tensors), written atomically.
    A tensor held under several names (a module shared by two parents) is stored under each."""
    sd = {k: v.detach().to("cpu", getattr(torch, save_dtype) if v.is_floating_point() else v.dtype)
          .contiguous().clone() for k, v in state.items()}
    tmp = weights.with_name(weights.name + ".tmp")
    save_file(sd, str(tmp), metadata={"proxy": name})
    os.replace(tmp, weights)
    return weights


def write_curves(out_dir: str | Path) -> Path:
    """``curves.parquet`` and ``curves.png`` from ``curves.jsonl``."""
    import pandas as pd

    out = Path(out_dir)
    df = pd.DataFrame(read_curves(out))
    table = out / CURVES_TABLE
    df.to_parquet(table, index=False)
    _plot_curves(df, out / CURVES_PLOT)
    return table


def _plot_curves(df: Any, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = df[df["kind"] == "train"]
    ev = df[df["kind"] == "eval"]
    metric_cols = [c for c in ev.columns if c not in ("step", "kind", "elapsed_s") and ev[c].notna().any()]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    if len(train):
        window = max(1, len(train) // 50)
        axes[0].plot(train["step"], train["loss"], alpha=0.25, color="C0", label="loss")
        axes[0].plot(train["step"], train["loss"].rolling(window, min_periods=1).mean(), color="C0",
                     label=f"loss (mean of {window})")
        axes[0].set_yscale("log")
    axes[0].set_xlabel("step")
    axes[0].set_title("training loss")
    axes[0].legend(loc="upper right")
    for i, col in enumerate(metric_cols):
        axes[1].plot(ev["step"], ev[col], marker="o", color=f"C{i}", label=col)
    axes[1].set_xlabel("step")
    axes[1].set_title("held-out metrics")
    if metric_cols:
        axes[1].legend(loc="best", fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def with_overrides(cfg: TrainConfig, **overrides: Any) -> TrainConfig:
    """``cfg`` with the given non-None fields replaced."""
    return dataclasses.replace(cfg, **{k: v for k, v in overrides.items() if v is not None})


__all__ = ["TrainError", "config_problem", "evaluate", "lr_at", "read_curves", "train",
           "training_device_problem", "with_overrides", "write_curves"]
