"""The shared training loop: loss goes down, resume reproduces an uninterrupted run, the card and
curves are written, and bad output folders / mismatched resumes are refused with a reason."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch
from torch import nn

from harness.train.base import Proxy, TrainConfig
from harness.train.card import CARD_JSON, CARD_MD, PROXY_NOTICE, file_sha256
from harness.train.loop import CURVES_TABLE, STATE_FILE, WEIGHTS_FILE, TrainError, lr_at, read_curves, train

TRUE_W = torch.tensor([[2.0, -1.0, 0.5]])


class LineProxy(Proxy):
    """y = x @ W^T + noise: a model whose held-out error must fall with training."""

    name = "line"
    description = "linear regression, for the loop tests"
    headline = "mse"

    def default_config(self) -> TrainConfig:
        return TrainConfig(steps=40, batch=16, lr=0.3, warmup_steps=5, eval_every=10, ckpt_every=7,
                           threads=1, save_dtype="float32")

    def build_model(self, seed: int) -> nn.Module:
        torch.manual_seed(seed)
        return nn.Linear(3, 1)

    def batch(self, step: int, size: int, seed: int):
        g = torch.Generator().manual_seed(seed * 1000 + step)
        x = torch.randn(size, 3, generator=g)
        return x, x @ TRUE_W.T + 0.01 * torch.randn(size, 1, generator=g)

    def loss(self, model, batch):
        x, y = batch
        loss = ((model(x) - y) ** 2).mean()
        return loss, {"mse": loss.item()}

    def evaluate(self, model):
        x, y = self.batch(10**6, 256, 12345)
        return {"mse": ((model(x) - y) ** 2).mean().item()}

    def baselines(self):
        x, y = self.batch(10**6, 256, 12345)
        return {"zero": {"mse": float((y**2).mean())}}


def test_training_lowers_the_heldout_error_and_writes_weights_card_and_curves(tmp_path):
    proxy = LineProxy()
    untrained = proxy.evaluate(proxy.build_model(0))["mse"]
    card = train(proxy, tmp_path, progress=False, log=lambda _: None)
    assert card["heldout"]["mse"] < 0.05 * untrained
    assert card["baselines"]["zero"]["mse"] > 10 * card["heldout"]["mse"]
    for key in ("name", "description", "notice", "weights", "parameters", "recipe", "data", "training_time_s",
                "machine", "heldout", "baselines"):
        assert key in card, key
    assert card["parameters"] == 4 and card["notice"] == PROXY_NOTICE
    assert card["recipe"]["steps"] == 40 and card["recipe"]["seed"] == 0
    assert card["weights"]["sha256"] == file_sha256(tmp_path / WEIGHTS_FILE)
    assert json.loads((tmp_path / CARD_JSON).read_text()) == card
    assert PROXY_NOTICE in (tmp_path / CARD_MD).read_text()
    curves = pd.read_parquet(tmp_path / CURVES_TABLE)
    assert (curves["kind"] == "train").sum() == 40
    assert list(curves.loc[curves["kind"] == "eval", "step"]) == [10, 20, 30, 40]
    assert (tmp_path / "curves.png").stat().st_size > 0


def test_resume_after_an_interruption_gives_the_same_weights_as_one_run(tmp_path):
    proxy = LineProxy()
    cfg = proxy.default_config()
    whole = tmp_path / "whole"
    train(proxy, whole, config=cfg, progress=False)

    parts = tmp_path / "parts"

    class Interrupt(Exception):
        pass

    class Stopping(LineProxy):
        def batch(self, step, size, seed):
            if step == 23:  # after the checkpoint at step 21, before the one at 28
                raise Interrupt
            return super().batch(step, size, seed)

    with pytest.raises(Interrupt):
        train(Stopping(), parts, config=cfg, progress=False)
    state = torch.load(parts / STATE_FILE, weights_only=True)
    assert state["step"] == 21
    train(proxy, parts, config=cfg, resume=True, progress=False, log=lambda _: None)
    a = (whole / WEIGHTS_FILE).read_bytes()
    b = (parts / WEIGHTS_FILE).read_bytes()
    assert a == b
    steps = [r["step"] for r in read_curves(parts) if r["kind"] == "train"]
    assert steps == list(range(1, 41))  # the rows of steps 22-23 written before the kill were dropped


def test_an_existing_state_is_refused_without_resume_and_a_changed_recipe_on_resume(tmp_path):
    proxy = LineProxy()
    cfg = proxy.default_config()
    train(proxy, tmp_path, config=cfg, progress=False)
    with pytest.raises(TrainError, match="already holds a training state.*--resume"):
        train(proxy, tmp_path, config=cfg, progress=False)
    with pytest.raises(TrainError, match=r"another recipe \(differs in: lr\)"):
        train(proxy, tmp_path, config=TrainConfig(**{**cfg.__dict__, "lr": 0.1}), resume=True, progress=False)
    with pytest.raises(TrainError, match="holds no training state"):
        train(proxy, tmp_path / "empty", config=cfg, resume=True, progress=False)


def test_lr_schedule_warms_up_linearly_then_decays_to_the_floor():
    cfg = TrainConfig(steps=100, lr=1.0, warmup_steps=10, min_lr_frac=0.1)
    assert [lr_at(i, cfg) for i in (0, 4, 9)] == pytest.approx([0.1, 0.5, 1.0])
    assert lr_at(10, cfg) == pytest.approx(1.0)
    assert lr_at(55, cfg) == pytest.approx(0.55)  # half way down the cosine
    assert lr_at(100, cfg) == pytest.approx(0.1)


def test_cli_lists_the_proxies_and_refuses_an_unknown_one(capsys):
    from harness.cli import main

    assert main(["train", "--list"]) == 0
    out = capsys.readouterr().out
    assert "vggt-proxy:" in out and "swin-proxy:" in out
    assert main(["train", "vggt-proxi"]) == 2
    err = capsys.readouterr().err
    assert "unknown proxy or recipe 'vggt-proxi'" in err and "vggt-proxy" in err and "Traceback" not in err


def test_cli_refuses_a_resume_without_state_in_one_paragraph(tmp_path, capsys):
    from harness.cli import main

    assert main(["train", "vggt-proxy", "--out", str(tmp_path / "none"), "--resume", "-q"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "holds no training state" in err


def test_the_shipped_round_trip_rounds_what_the_checkpoint_holds_and_keeps_constants_exact():
    # the card's metrics must be of the model users load: its checkpoint holds the parameters and
    # persistent buffers (float16), while non-persistent constants are rebuilt exact at load
    from harness.train.loop import _round_trip

    class Tiny(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = torch.nn.Parameter(torch.tensor([0.1, 1 / 3]))
            self.register_buffer("saved", torch.tensor([1 / 3]))
            self.register_buffer("constant", torch.tensor([0.229, 1 / 3]), persistent=False)

    m = _round_trip(Tiny(), "float16")
    assert torch.equal(m.w.data, torch.tensor([0.1, 1 / 3]).half().float())
    assert torch.equal(m.saved, torch.tensor([1 / 3]).half().float())
    assert torch.equal(m.constant, torch.tensor([0.229, 1 / 3]))  # exactly as a loaded model has it
    assert not torch.equal(m.constant, m.constant.half().float())  # so rounding it would show
    assert isinstance(m.w, torch.nn.Parameter)
