"""NVTX marks (harness run --nvtx), CUDA memory snapshots (--memory-snapshot) and per-phase
memory and work of the breakdown pass."""

from __future__ import annotations

import textwrap

import pytest
import torch
from tiny_suites import VGGT_LAYER_BREAKDOWN

from harness.cli import main
from harness.measure import markers
from harness.measure.memory import MemorySnapshots
from harness.models.seam import PhaseTimes, Recorder
from harness.store import columns as C
from harness.store import load

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


class FakeNvtx:
    """Records the NVTX and profiler calls instead of making them."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []

    def push(self, name: str) -> None:
        self.events.append(("push", name))

    def pop(self) -> None:
        self.events.append(("pop", ""))

    def start(self) -> None:
        self.events.append(("start", ""))

    def stop(self) -> None:
        self.events.append(("stop", ""))


@pytest.fixture
def nvtx(monkeypatch):
    fake = FakeNvtx()
    monkeypatch.setattr(markers, "BACKEND", fake)
    return fake


def ranges(events):
    """[(name, depth, children names)] from push/pop events; asserts they are balanced."""
    stack, out = [], []
    for kind, name in events:
        if kind == "push":
            stack.append((name, []))
        elif kind == "pop":
            done, kids = stack.pop()
            out.append((done, len(stack), kids))
            if stack:
                stack[-1][1].append(done)
    assert not stack, f"unbalanced NVTX ranges: {stack}"
    return out


SUITE = VGGT_LAYER_BREAKDOWN


@pytest.mark.usefixtures("one_thread")
def test_nvtx_marks_each_point_its_timed_samples_and_the_method_phases(tmp_path, nvtx):
    (tmp_path / "s.yaml").write_text(textwrap.dedent(SUITE))
    assert main(["run", str(tmp_path / "s.yaml"), "--out", str(tmp_path / "run"), "--no-report", "-q",
                 "--nvtx"]) == 0
    done = ranges(nvtx.events)
    pts = load(tmp_path / "run").points
    points = [(n, kids) for n, depth, kids in done if depth == 0]
    assert [n for n, _ in points] == [f"point {m} {h}" for m, h in zip(pts[C.METHOD], pts[C.HASH])]
    for _, kids in points:
        steps = ["timed", "evaluate", "breakdown"]
        assert [k for k in kids if k in steps] == steps
    timed = [[k for k in kids if k.startswith("sample")] for n, _, kids in done if n == "timed"]
    assert timed == [["sample 0", "sample 1", "sample 2"]] * 2  # warm-up calls are not samples
    httm_samples = [kids for n, depth, kids in done if n.startswith("sample ") and "phase:match" in kids]
    assert len(httm_samples) == 3  # the httm point's samples hold its phases
    assert all({"phase:match", "phase:aggregate", "phase:attention"} <= set(k) for k in httm_samples)
    assert ("start", "") not in nvtx.events  # no CUDA: no capture window


@pytest.mark.usefixtures("one_thread")
def test_without_nvtx_no_mark_is_made(tmp_path, nvtx):
    (tmp_path / "s.yaml").write_text(textwrap.dedent(SUITE))
    assert main(["run", str(tmp_path / "s.yaml"), "--out", str(tmp_path / "run"), "--no-report", "-q"]) == 0
    assert nvtx.events == [] and not markers.enabled()


@CUDA
def test_on_cuda_the_capture_window_brackets_exactly_the_timed_samples(nvtx):
    from harness.measure.timing import Timer, TimingConfig

    x = torch.randn(256, 256, device="cuda")
    with markers.enable():
        m = Timer(TimingConfig(warmup_n=2, min_samples=4, max_samples=4)).measure(lambda: x @ x, "cuda")
    kinds = [k for k, _ in nvtx.events]
    assert kinds[0] == "start" and kinds[-1] == "stop" and kinds.count("start") == 1
    assert [n for k, n in nvtx.events if k == "push"] == [f"sample {i}" for i in range(len(m.device_ms))]


def test_memory_snapshots_are_a_no_op_off_cuda_and_refuse_an_unknown_mode(tmp_path):
    snaps = MemorySnapshots("all", tmp_path)
    snaps.start("cpu")
    assert snaps.finish("h", oom=True) is None and not any(tmp_path.iterdir())
    with pytest.raises(ValueError, match="allowed: oom, all"):
        MemorySnapshots("some", tmp_path)


def test_memory_snapshot_on_a_cpu_suite_is_refused_before_anything_runs(tmp_path, capsys):
    (tmp_path / "s.yaml").write_text(textwrap.dedent(SUITE))
    out = tmp_path / "run"
    assert main(["run", str(tmp_path / "s.yaml"), "--out", str(out), "--memory-snapshot", "oom"]) == 2
    err = capsys.readouterr().err
    assert "every point of this suite runs on the CPU" in err and "rss_peak_mb" in err
    assert not (tmp_path / "run").exists()


@CUDA
def test_a_cuda_snapshot_is_written_for_every_point_with_all(tmp_path):
    snaps = MemorySnapshots("all", tmp_path)
    snaps.start("cuda")
    x = torch.randn(1024, 1024, device="cuda")
    path = snaps.finish("h", oom=False)
    assert path == tmp_path / "h.memory.pickle" and path.stat().st_size > 0
    del x


def test_phase_times_scale_times_and_work_together():
    rec = Recorder(timed=True, device="cpu")
    rec.count("attn_flops", 8.0)
    with rec.phase("attention"):
        pass
    per_layer = rec.breakdown(0.25)
    assert isinstance(per_layer, PhaseTimes)
    assert per_layer["attention"] == pytest.approx(rec.phases_ms["attention"] / 4)
    assert per_layer.counters == {"attn_flops": 2.0} and per_layer.peak_mb == {}  # no CUDA peak on CPU


@CUDA
def test_on_cuda_each_phase_records_the_allocator_peak_inside_it():
    rec = Recorder(timed=True, device="cuda")
    with rec.phase("big"):
        x = torch.empty(64 * 2**20, dtype=torch.uint8, device="cuda")
        del x
    with rec.phase("small"):
        pass
    assert rec.peak_mb["big"] >= 64 and rec.peak_mb["small"] < rec.peak_mb["big"]


@pytest.mark.usefixtures("one_thread")
def test_whole_model_phase_efficiency_uses_the_per_layer_work_of_its_per_layer_times(tmp_path):
    suite = SUITE.replace("scope: attention, ", "").replace(", layer: 0", "")
    (tmp_path / "s.yaml").write_text(textwrap.dedent(suite))
    assert main(["run", str(tmp_path / "s.yaml"), "--out", str(tmp_path / "run"), "--no-report", "-q"]) == 0
    from harness.models.vggt.presets import VGGT_TINY

    for _, r in load(tmp_path / "run").points.iterrows():
        # work_attn_flops counts a whole forward; bd_attention_ms is the mean per global layer
        per_layer = r["work_attn_flops"] / VGGT_TINY.depth
        assert r["eff_attention_tflop_s"] == pytest.approx(per_layer / (r["bd_attention_ms"] / 1e3) / 1e12)
        assert "eff_tflop_s" not in r or pd_isna(r["eff_tflop_s"])  # a whole forward's FLOPs: not counted


def pd_isna(v):
    import pandas as pd

    return pd.isna(v)
