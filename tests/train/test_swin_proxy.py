"""The swin-proxy: its trainer wiring and the committed weights (strict load, accuracy, card)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from harness.data.shapes import HELDOUT_SEED, NUM_CLASSES, shapes_images
from harness.models.swin import build_swin, load_checkpoint
from harness.models.weights import PROXY_ROOT
from harness.train import get_proxy
from harness.train import swin_proxy as swin_proxy_module
from harness.train.card import file_sha256
from harness.train.loop import evaluate
from harness.train.swin_proxy import HELDOUT_IMAGES, SwinProxy

pytestmark = pytest.mark.usefixtures("one_thread")

PROXY_DIR = Path(__file__).resolve().parents[2] / "harness" / "proxies" / "swin-proxy"
N_CHECK = 32


def test_the_registry_builds_the_swin_proxy_with_ten_classes():
    proxy = get_proxy("swin-proxy")
    assert isinstance(proxy, SwinProxy)
    model = proxy.build_model(seed=0)
    assert model.head.fc.out_features == NUM_CLASSES == 10
    assert [len(s.blocks) for s in model.layers] == [2, 2, 4, 2]
    assert model.patch_embed.grid_size == (56, 56)


def test_batches_are_a_pure_function_of_step_and_seed():
    proxy = SwinProxy()
    a_img, a_lab = proxy.batch(3, 2, 0)
    b_img, b_lab = proxy.batch(3, 2, 0)
    c_img, _ = proxy.batch(4, 2, 0)
    assert torch.equal(a_img, b_img) and torch.equal(a_lab, b_lab)
    assert not torch.equal(a_img, c_img)
    with pytest.raises(ValueError, match="held-out"):
        proxy.batch(0, 2, HELDOUT_SEED)


def test_a_few_optimiser_steps_on_one_batch_lower_the_loss():
    proxy = SwinProxy()
    model = proxy.build_model(seed=0)
    batch = proxy.batch(0, 4, 0)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(6):
        loss, parts = proxy.loss(model, batch)
        assert set(parts) == {"train_top1"}
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0]


@pytest.fixture(scope="module")
def heldout() -> tuple[torch.Tensor, torch.Tensor]:
    return shapes_images(N_CHECK, HELDOUT_SEED)


def _top1(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    with torch.inference_mode():
        return float((model(images).argmax(-1) == labels).float().mean())


def test_committed_weights_load_strictly_and_beat_the_untrained_twin(heldout):
    from harness.models.weights import resolve_weights

    weights = resolve_weights("proxy:swin-proxy")
    assert weights.path == PROXY_DIR / "model.safetensors"
    trained = build_swin("swin_proxy", 224, checkpoint=weights.path)
    untrained = build_swin("swin_proxy", 224, seed=0)
    images, labels = heldout
    assert _top1(trained, images, labels) >= 0.8
    assert _top1(untrained, images, labels) <= 0.3


def test_committed_weights_do_not_fit_another_shape():
    from harness.models.swin import CheckpointError

    with pytest.raises(CheckpointError):
        load_checkpoint(build_swin("swin_micro", 224, num_classes=10), PROXY_DIR / "model.safetensors")


def test_the_card_describes_the_committed_weights():
    card = json.loads((PROXY_DIR / "card.json").read_text())
    assert card["name"] == "swin-proxy"
    assert card["weights"]["sha256"] == file_sha256(PROXY_DIR / "model.safetensors")
    assert card["weights"]["dtype"] == "float16"
    assert (PROXY_DIR / "model.safetensors").stat().st_size < 10e6
    assert card["heldout"]["top1"] >= 0.9
    assert card["baselines"]["chance / majority class"]["top1"] == pytest.approx(0.1)
    assert card["heldout"]["top1"] > card["baselines"]["untrained (same init)"]["top1"] + 0.5
    for key in ("recipe", "data", "model", "training_time_s", "machine"):
        assert card[key]
    assert (PROXY_DIR / "card.md").read_text().startswith("# swin-proxy")
    for name in ("curves.parquet", "curves.png"):
        assert (PROXY_DIR / name).is_file()


SUITE = """
name: swin-proxy-test
workload: swin
reference: fp32
fixed: {model: swin_proxy, checkpoint: "proxy:swin-proxy", images: shapes, img_size: 224, batch: 4,
        calib_images: 2, eval_images: 8, diag_images: 1, w_bits: 4, embed_bits: 8}
methods:
  fp32: {}
  mixaq: {a_bits_high: 8, a_bits_low: 4, ratio: 0.5}
timing: {warmup_n: 0, min_samples: 1, max_samples: 1, budget_s: 0.0}
metrics: {evaluate: true, breakdown: false}
"""


def test_a_suite_on_the_proxy_reports_top1_and_the_importance_diagnostics(tmp_path):
    from harness import registry
    from harness.run.options import RunOptions
    from harness.run.runner import run_suite
    from harness.store import load
    from harness.suite import parse_suite

    registry.load_builtins()
    out = tmp_path / "run"
    run_suite(parse_suite(SUITE), out, RunOptions(progress=False, argv=["test"]))
    rows = {r["method"]: r for _, r in load(out).points.iterrows()}
    fp32, mix = rows["fp32"], rows["mixaq"]
    assert fp32["status"] == mix["status"] == "ok"
    assert fp32["q_top1"] >= 0.75 and mix["q_top1"] >= 0.5  # 8 held-out images, labels known
    for stage in (0, 1, 2):  # 64 / 16 / 4 windows; stage 3 has one window and no spread
        assert fp32[f"work_score_cv_stage{stage}"] > 0
        assert -1.0 <= mix[f"fid_imp_sens_spearman_stage{stage}"] <= 1.0
    assert pd_isna(fp32.get("work_score_cv_stage3"))
    assert pd_isna(fp32.get("fid_imp_sens_spearman"))  # only mixaq points get the sensitivity
    assert -1.0 <= mix["fid_imp_sens_spearman"] <= 1.0
    sha = file_sha256(PROXY_ROOT / "swin-proxy" / "model.safetensors")[:16]
    assert {(r["weights"], r["weights_sha256"]) for r in rows.values()} == {("proxy:swin-proxy", sha)}


def pd_isna(value: object) -> bool:
    import pandas as pd

    return value is None or bool(pd.isna(value))


# ----------------------------------------------------------------- held-out metrics of the card, pinned

NLL_RTOL = 1e-5
"""Relative tolerance of the mean NLL: float32 logits, summed in float64 over the images; a
recomputation on the card's machine (1 thread, torch 2.14.1) gives the card's value bit for bit, so
this only leaves room for another CPU's rounding (~1e-7). top1 must count the same images right:
the smallest top-2 logit margin over the 500 held-out images is 0.02, far above rounding."""
SUBSET_IMAGES = 50
SUBSET_METRICS = {"top1": 1.0, "nll": 0.07440736293792724}
"""``SwinProxy.evaluate`` on the first SUBSET_IMAGES held-out images (HELDOUT_IMAGES set to 50) of
the committed weights, computed once (torch 2.14.1+cu130, timm 1.0.31, 1 thread): the fast pin of
the card's metric code, data and weights; the full card figure is recomputed by the slow test."""


def _committed_model() -> torch.nn.Module:
    """The committed weights as the harness resolves ``checkpoint: proxy:swin-proxy``."""
    return build_swin("swin_proxy", 224, checkpoint=PROXY_ROOT / "swin-proxy" / "model.safetensors")


def _assert_metrics_equal(got: dict[str, float], want: dict[str, float], n_images: int) -> None:
    assert set(got) == set(want)
    assert round(got["top1"] * n_images) == round(want["top1"] * n_images)  # the same count of images
    assert got["nll"] == pytest.approx(want["nll"], rel=NLL_RTOL)


@pytest.mark.slow
def test_the_cards_heldout_metrics_are_recomputed_from_the_committed_weights():
    """The trainer's own evaluation (harness.train.loop.evaluate -> SwinProxy.evaluate, all 500
    held-out images) of the committed weights gives card["heldout"]. 18 s on one idle core."""
    card = json.loads((PROXY_ROOT / "swin-proxy" / "card.json").read_text())
    _assert_metrics_equal(evaluate(SwinProxy(), _committed_model()), card["heldout"], HELDOUT_IMAGES)


def test_the_heldout_metrics_of_the_first_images_are_pinned(monkeypatch):
    monkeypatch.setattr(swin_proxy_module, "HELDOUT_IMAGES", SUBSET_IMAGES)
    _assert_metrics_equal(evaluate(SwinProxy(), _committed_model()), SUBSET_METRICS, SUBSET_IMAGES)
