"""QAT / SAQA recipes: files checked field by field, shipped recipes load, and the QAT proxy trains the
quantized Swin on the base proxy's data and saves what a `qat:` point loads back."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from safetensors.torch import save_file

from harness.cli.app import main
from harness.methods.mixaq import MixAQParams
from harness.methods.mixaq import apply as mixaq_apply
from harness.models.weights import PROXY_ROOT, file_sha256
from harness.quant.qat import freeze, lsq_modules, n_pairs
from harness.suite import SuiteError
from harness.train import get_proxy, trainable_names
from harness.train.qat import QATProxy
from harness.train.recipe import load_recipe, shipped_recipes
from harness.workloads.swin_det import body_at

pytestmark = pytest.mark.usefixtures("one_thread")


def test_the_shipped_recipes_load_and_are_listed(capsys):
    names = shipped_recipes()
    assert {"qat-swin-w4a4", "saqa-swin-w4a4a2", "qat-swin-det-w4a4", "saqa-swin-det-w4a4a2"} <= set(names)
    for name in names:
        r = load_recipe(name)
        assert r.name == name and r.train.steps >= 1
        if r.saqa:  # SAQA starts from the uniform QAT of the same base (MixA-Q: from the W4A4 QAT model)
            assert r.start == "proxy:" + name.replace("saqa-", "qat-").removesuffix("a2")
    assert set(names) <= set(trainable_names())
    assert main(["train", "--list"]) == 0
    out = capsys.readouterr().out
    assert "saqa-swin-det-w4a4a2: SAQA W4A4/A2 of swin-det-proxy" in out


def test_a_malformed_recipe_names_file_line_field_and_what_is_allowed(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("base: swin-proxy\nw_bits: 1\nbase_model: x\nsaqa: true\ntrain:\n  steps: 0\n"
                    "  lr: fast\n")
    with pytest.raises(SuiteError) as e:
        load_recipe(str(path))
    text = str(e.value)
    assert f"{path}, line 2: w_bits: 1 is out of range; allowed: int in [2, 16]" in text
    assert f"{path}, line 3: base_model: unknown field; allowed: description, base, start" in text
    assert "eval_ratio, train\n" in text + "\n"
    assert f"{path}, line 6: train.steps: 0 is out of range; allowed: int in [1, inf)" in text
    assert f"{path}, line 7: train.lr: 'fast' is not a float" in text


def test_a_recipe_refuses_a_low_branch_above_the_high_one_and_unknown_bases(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("base: swin-proxy\nsaqa: true\na_bits: 3\na_bits_low: 4\n")
    with pytest.raises(SuiteError, match="a_bits_low=4 must not exceed a_bits=3"):
        load_recipe(str(path))
    path.write_text("base: vggt-proxy\n")
    with pytest.raises(SuiteError, match=r"line 1: base: 'vggt-proxy' is not allowed; allowed: one of "
                                         r"'swin-proxy', 'swin-det-proxy'"):
        load_recipe(str(path))
    path.write_text("base: swin-proxy\nsaqa: true\nstart: proxy:qat-nothing\n")
    with pytest.raises(SuiteError, match=r"line 3: start: checkpoint 'proxy:qat-nothing': no trained proxy .*"
                                         r"\(train the recipe it names first\)"):
        load_recipe(str(path))
    with pytest.raises(KeyError, match="unknown proxy or recipe 'qat-swin-w4'"):
        get_proxy("qat-swin-w4")


def tiny_saqa(tmp_path) -> QATProxy:
    path = tmp_path / "saqa-tiny.yaml"
    path.write_text("base: swin-proxy\nsaqa: true\ncalib_images: 2\ntrain: {steps: 2, batch: 2}\n")
    proxy = get_proxy(str(path))
    assert isinstance(proxy, QATProxy) and proxy.name == "saqa-tiny"
    return proxy


def test_saqa_draws_ratios_per_step_and_trains_both_branches(tmp_path):
    proxy = tiny_saqa(tmp_path)
    model = proxy.build_model(seed=0)
    pairs = n_pairs(model)
    draws = [proxy.ratios(step, 0, pairs) for step in range(6)]
    assert draws == [proxy.ratios(step, 0, pairs) for step in range(6)]  # a pure function of (seed, step)
    assert len(set(draws)) > 1 and proxy.ratios(0, 1, pairs) != draws[0]
    uniform = dataclasses.replace(proxy.recipe, saqa=False)
    assert QATProxy(uniform).ratios(3, 0, pairs) == (0.0,) * pairs
    # fine-tuning batches continue the base proxy's stream past its own training (no curriculum)
    batch = proxy.batch(0, 2, 0)
    base = proxy.base.batch(proxy.base.default_config().steps, 2, 0)
    assert torch.equal(batch["data"][0], base[0])
    step = next(s for s in range(100) if proxy.ratios(s, 0, pairs)[0] >= 0.1)  # stage 0 sends windows low
    loss, parts = proxy.loss(model, proxy.batch(step, 2, 0))
    loss.backward()
    quant = lsq_modules(model)
    assert quant["layers.0.blocks.0.aq.1.fc2_in"].step.grad is not None  # the A2 branch ran and trains
    assert quant["layers.0.blocks.0.aq.0.fc2_in"].step.grad is not None
    assert parts["mean_ratio"] == pytest.approx(sum(proxy.ratios(step, 0, pairs)) / pairs)


def test_the_saved_state_is_the_point_a_qat_knob_loads(tmp_path):
    proxy = tiny_saqa(tmp_path)
    model = proxy.build_model(seed=0)
    for stage in model.layers:  # the point's routing: ratio 0.5 on every pair
        stage.block_ratios = [(0.5, 0.0)] * len(stage.block_ratios)
    model(proxy.calib_images(proxy.float_model(0))[:1]).sum().backward()  # marks the quantizers that ran
    with torch.no_grad():  # stand-in for training: move every step and latent weight
        for p in model.parameters():
            p.mul_(1.1)
    state = proxy.weights_state(model)
    assert not any(k.startswith("layers.0.blocks.0.qkv.") for k in state)  # shared tensors stored once
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "w.safetensors"))
    float_model = proxy.float_model(0)
    calib = proxy.calib_images(float_model)
    point = mixaq_apply(float_model, MixAQParams(w_bits=4, a_bits_high=4, a_bits_low=2, ratio=0.5,
                                                 calib="whole", qat=str(tmp_path / "w.safetensors")), calib)
    x = calib[:1]
    with torch.no_grad():
        assert torch.equal(point(x), freeze(model)(x))


@pytest.mark.parametrize("name", sorted(shipped_recipes()))
def test_the_committed_qat_weights_are_their_card_s_and_load_into_their_points(name):
    committed = PROXY_ROOT / name
    card = json.loads((committed / "card.json").read_text())
    assert card["weights"]["sha256"].startswith(file_sha256(committed / "model.safetensors"))
    proxy = get_proxy(name)
    model = proxy.float_model(0)
    swin = proxy.swin_of(model)
    if proxy.is_detector:
        swin = body_at(swin, (448, 448))
    r = proxy.recipe
    params = MixAQParams(w_bits=r.w_bits, a_bits_high=r.a_bits, a_bits_low=r.a_bits_low, ratio=0.5,
                         calib="whole", qat=f"proxy:{name}")
    point = mixaq_apply(swin, params, proxy.calib_images(model)[:1])
    names = lsq_modules(point)
    low = sum(1 for n in names if ".aq.1." in n)
    # every quantizer outside the blocks' low branch trained; the low branch (A2) only under SAQA, where
    # a stage with one window (the classifier's last) never sends it low at ratios up to 0.8
    counts = point.qat_counts
    assert counts["learned"] + counts["calibrated"] == len(names)
    if r.saqa:
        assert counts["calibrated"] < low / 2
    else:
        assert counts["calibrated"] == low
