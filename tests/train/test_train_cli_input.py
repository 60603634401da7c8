"""``harness train`` refuses bad input in one paragraph on stderr, exit code 2, no traceback, and
before anything is written: steps and threads below 1, seeds outside the proxy's range, devices
that are not devices or are not here, and an --out that is a file."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from harness.cli import main
from harness.train import get_proxy
from harness.train.loop import TrainError, train


def refused(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """Run ``harness ARGV``, which must exit 2 (returned by a HarnessError or raised by argparse)
    without a traceback; the stderr's last line (the error) is returned."""
    try:
        code = main(argv)
    except SystemExit as e:  # an argument type refused the value
        code = e.code
    assert code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert lines and lines[-1].startswith("harness train: error: ")
    return lines[-1]


@pytest.mark.parametrize("steps", ["0", "-5"])
def test_train_refuses_zero_or_negative_steps_before_writing_anything(tmp_path, capsys, steps):
    out = tmp_path / "out"
    err = refused(["train", "swin-proxy", "--steps", steps, "--out", str(out), "-q"], capsys)
    assert "--steps" in err and ">= 1" in err
    assert not out.exists()


def test_train_refuses_zero_threads_before_writing_anything(tmp_path, capsys):
    out = tmp_path / "out"
    err = refused(["train", "swin-proxy", "--threads", "0", "--out", str(out), "-q"], capsys)
    assert "--threads" in err and ">= 1" in err
    assert not out.exists()


def test_train_refuses_a_device_that_is_not_a_device_before_writing_anything(tmp_path, capsys):
    out = tmp_path / "out"
    err = refused(["train", "swin-proxy", "--device", "banana", "--out", str(out), "-q"], capsys)
    assert "--device 'banana' is not a device" in err and "cpu, cuda, cuda:N or auto" in err
    assert not out.exists()


def test_train_refuses_cuda_without_a_gpu_before_writing_anything(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    out = tmp_path / "out"
    err = refused(["train", "swin-proxy", "--device", "cuda", "--out", str(out), "-q"], capsys)
    assert "--device 'cuda'" in err and "no CUDA GPU" in err and "--device cpu" in err
    assert not out.exists()


def test_train_refuses_a_negative_seed_before_writing_anything(tmp_path, capsys):
    out = tmp_path / "out"
    err = refused(["train", "swin-proxy", "--seed", "-1", "--out", str(out), "-q"], capsys)
    assert "--seed" in err and ">= 0" in err
    assert not out.exists()


def test_train_refuses_a_swin_seed_that_reaches_the_heldout_images_before_writing_anything(tmp_path, capsys):
    out = tmp_path / "out"
    err = refused(["train", "swin-proxy", "--seed", "254", "--out", str(out), "-q"], capsys)
    assert "--seed" in err and "0 to 253" in err and "held-out" in err
    assert not out.exists()


def test_train_says_an_out_that_is_a_file_is_not_a_folder(tmp_path, capsys):
    out = tmp_path / "out"
    out.write_text("keep me")
    err = refused(["train", "swin-proxy", "--out", str(out), "-q"], capsys)
    assert f"--out {out} is a file, not a folder" in err
    assert out.read_text() == "keep me"


def test_train_says_which_parent_of_out_is_a_file(tmp_path, capsys):
    blocker = tmp_path / "blocker"
    blocker.write_text("")
    out = blocker / "out"
    err = refused(["train", "swin-proxy", "--out", str(out), "-q"], capsys)
    assert f"{blocker} is a file, not a folder" in err


def test_train_function_refuses_zero_steps_before_writing_anything(tmp_path):
    proxy = get_proxy("swin-proxy")
    out = tmp_path / "out"
    with pytest.raises(TrainError, match="--steps must be >= 1, got 0"):
        train(proxy, out, config=dataclasses.replace(proxy.default_config(), steps=0), progress=False)
    assert not out.exists()
