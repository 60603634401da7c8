"""LiveBytes counts the storages created inside it, from creation to death, on CPU tensors: a result
stays counted, a freed temporary leaves the peak but not the current bytes, views and in-place ops
allocate nothing, and tensors made before the block are never counted."""

from __future__ import annotations

import gc

import torch

from harness.measure.alloc_tracker import LiveBytes

F32 = 4


def test_a_matmul_counts_its_output_and_not_its_inputs():
    a, b = torch.randn(64, 32), torch.randn(32, 16)
    with LiveBytes() as live:
        c = a @ b
    assert live.current == live.peak == 64 * 16 * F32
    assert c.shape == (64, 16)


def test_a_freed_temporary_counts_in_the_peak_only():
    a = torch.randn(100, 100)
    with LiveBytes() as live:
        t = a * 2  # 40 000 bytes
        kept = t.sum(0)  # 400 bytes
        del t
    assert live.peak == 100 * 100 * F32 + 100 * F32
    assert live.current == 100 * F32
    del kept
    gc.collect()
    assert live.current == 0


def test_a_view_shares_its_base_and_an_in_place_op_allocates_nothing():
    with LiveBytes() as live:
        x = torch.zeros(10, 20)
        views = [x.view(-1), x[2:], x.t(), x.unsqueeze(0).expand(3, 10, 20)]
        x.add_(1.0)
        torch.mul(x, 2.0, out=x)
        assert live.current == 10 * 20 * F32
        del x
        assert live.current == 10 * 20 * F32  # the views keep the storage
        del views
    assert live.current == 0 and live.peak == 10 * 20 * F32


def test_views_of_tensors_made_before_the_block_are_not_counted():
    a = torch.randn(50, 50)
    with LiveBytes() as live:
        v = a[::2]
        a.mul_(3.0)
        w = a.reshape(-1)  # contiguous: a view
    assert live.peak == 0
    assert v.untyped_storage().data_ptr() == w.untyped_storage().data_ptr()


def test_a_copy_of_a_strided_tensor_and_a_multi_output_op_are_counted():
    a = torch.randn(8, 6)
    with LiveBytes() as live:
        c = a.t().contiguous()
        values, index = torch.randn(3, 5).sort(dim=-1)
    assert live.current == 8 * 6 * F32 + 3 * 5 * F32 + 3 * 5 * 8  # the copy, sorted values, int64 index
    assert live.peak == live.current + 3 * 5 * F32  # and the randn, alive while sort ran
    del c, values, index


def test_paused_leaves_storages_uncounted_and_reset_peak_starts_a_new_window():
    with LiveBytes() as live:
        big = torch.zeros(1000)
        del big
        assert live.peak == 1000 * F32
        live.reset_peak()
        assert live.peak == 0
        with live.paused():
            hidden = torch.zeros(500)
        small = torch.zeros(10)
    assert live.peak == live.current == 10 * F32
    assert hidden.numel() == 500 and small.numel() == 10


def test_record_names_the_operators_alive_at_the_peak():
    a = torch.randn(20, 20)
    with LiveBytes(record=True) as live:
        t = a @ a
        u = torch.cat([t, t])
        del t
        v = u[:1].clone()
    assert live.at_peak == {"mm": 20 * 20 * F32, "cat": 2 * 20 * 20 * F32}
    del u, v
