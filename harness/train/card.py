"""The model card written next to a proxy's weights (``card.md`` for people, ``card.json`` for code)."""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import platform
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import nn

from harness.train.base import Proxy, TrainConfig

CARD_JSON = "card.json"
CARD_MD = "card.md"
CARD_VERSION = 1
#: the sentence every card, table and README mention of a proxy carries
PROXY_NOTICE = ("A proxy trained by the harness on its own procedural data: not a published model; "
                "its accuracy says how a method treats a trained network, not how it does on real data.")


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _machine(device: torch.device) -> dict[str, Any]:
    info: dict[str, Any] = {
        "platform": platform.platform(), "python": platform.python_version(), "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
        "device": str(device), "threads": torch.get_num_threads(),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def build_card(proxy: Proxy, cfg: TrainConfig, model: nn.Module, metrics: dict[str, float],
               baselines: dict[str, dict[str, float]], trained_s: float, device: torch.device,
               weights: Path) -> dict[str, Any]:
    return {
        "card_version": CARD_VERSION,
        "name": proxy.name,
        "description": proxy.description,
        "notice": PROXY_NOTICE,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "weights": {"file": weights.name, "sha256": file_sha256(weights), "dtype": cfg.save_dtype,
                    "bytes": weights.stat().st_size},
        "parameters": int(sum(p.numel() for p in model.parameters())),
        "model": proxy.model_info(),
        "recipe": asdict(cfg) | {"optimizer": "AdamW(betas=(0.9, 0.95))",
                                 "schedule": "linear warm-up, cosine decay"},
        "data": proxy.data_info(),
        "training_time_s": round(trained_s, 1),
        "machine": _machine(device),
        "heldout": metrics,
        "headline": proxy.headline,
        "baselines": baselines,
    }


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def render_markdown(card: dict[str, Any]) -> str:
    lines = [f"# {card['name']} (proxy model card)", "", card["description"], "", f"> {card['notice']}", ""]
    metrics = sorted(card["heldout"])
    lines += ["## Held-out metrics (the shipped weights)", "",
              "| predictor | " + " | ".join(metrics) + " |", "|---" * (len(metrics) + 1) + "|",
              f"| **{card['name']}** | " + " | ".join(_fmt(card["heldout"][m]) for m in metrics) + " |"]
    for name, vals in card["baselines"].items():
        lines.append(f"| {name} | " + " | ".join(_fmt(vals.get(m, "")) for m in metrics) + " |")
    w = card["weights"]
    lines += ["", "## Weights", "", f"- file: `{w['file']}` ({w['dtype']}, {w['bytes'] / 1e6:.2f} MB), "
              f"sha256 `{w['sha256'][:16]}...`", f"- parameters: {card['parameters']:,}",
              "- model: " + ", ".join(f"{k}={_fmt(v)}" for k, v in card["model"].items()), "",
              "## Data", ""]
    lines += [f"- {k}: {_fmt(v)}" for k, v in card["data"].items()]
    lines += ["", "## Recipe", ""] + [f"- {k}: {_fmt(v)}" for k, v in card["recipe"].items()]
    m = card["machine"]
    lines += ["", "## Training run", "", f"- time: {card['training_time_s'] / 60:.1f} min of training "
              f"(evaluations excluded) on {m['device']} ({m.get('gpu') or m['cpu']}, {m['threads']} threads)",
              f"- torch {m['torch']}, Python {m['python']}, {m['platform']}", f"- created {card['created']}",
              "", f"Re-create: `harness train {card['name']}` (or `nox -s train-proxies`).", ""]
    return "\n".join(lines)


def write_card(out: Path, proxy: Proxy, cfg: TrainConfig, model: nn.Module, metrics: dict[str, float],
               baselines: dict[str, dict[str, float]], trained_s: float, device: torch.device,
               weights: Path) -> dict[str, Any]:
    card = build_card(proxy, cfg, model, metrics, baselines, trained_s, device, weights)
    (out / CARD_JSON).write_text(json.dumps(card, indent=2) + "\n")
    (out / CARD_MD).write_text(render_markdown(card))
    return card


def read_card(folder: str | Path) -> dict[str, Any] | None:
    path = Path(folder) / CARD_JSON
    if not path.exists():
        return None
    return json.loads(path.read_text())


__all__ = ["CARD_JSON", "CARD_MD", "PROXY_NOTICE", "build_card", "file_sha256", "read_card",
           "render_markdown", "write_card"]
