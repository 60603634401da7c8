"""``harness history add``: what enters the store, and the runs it refuses (nothing written)."""

from __future__ import annotations

import math
import threading

import pytest
from cli_runs import no_traceback

from harness.cli.app import main
from harness.history import read_store, run_entries
from harness.history import store as history_store
from harness.store import RunLock
from harness.store import columns as C


def _add(run, store, *extra: str) -> int:
    return main(["history", "add", str(run), "--store", str(store), *extra])


def test_two_runs_give_two_entries_per_point_in_order(make_run, tmp_path, capsys):
    store = tmp_path / "h.parquet"
    assert _add(make_run("r1", {"p0": 10.0, "p1": 20.0}, commit="1" * 40), store, "--branch", "main") == 0
    assert _add(make_run("r2", {"p0": 11.0, "p1": 21.0}, commit="2" * 40), store, "--branch", "main") == 0
    h = read_store(store)
    assert sorted(h.groupby(C.HASH).size().items()) == [("p0", 2), ("p1", 2)]
    p0 = h[h[C.HASH] == "p0"]
    assert list(p0["seq"]) == [1, 2] and list(p0[C.RUN_ID]) == ["r1", "r2"]
    assert list(p0["commit"]) == ["1" * 40, "2" * 40] and set(h["branch"]) == {"main"}
    assert list(p0[C.LAT_MEDIAN]) == [10.0, 11.0]
    assert "entry 2" in capsys.readouterr().out


def test_an_entry_carries_the_points_summary_and_the_runs_provenance(make_run, tmp_path):
    store = tmp_path / "h.parquet"
    run = make_run("r1", {"p0": 10.0, "p1": 20.0}, extra={"p0": {"instructions": 1.5e9}},
                   env={"device_kind": "cuda", "gpu_name": "NVIDIA H100 80GB HBM3"})
    assert _add(run, store) == 0
    e = read_store(store).set_index(C.HASH)
    assert e.at["p0", "commit"] == "a" * 40  # env.json's git_commit
    assert e.at["p0", "label"] == "sdpa seq_len=128" and e.at["p1", "label"] == "sdpa seq_len=256"
    assert e.at["p0", C.WORKLOAD] == "attention" and e.at["p0", C.METHOD] == "sdpa"
    assert e.at["p0", "device_kind"] == "cuda" and e.at["p0", "device"] == "NVIDIA H100 80GB HBM3"
    assert e.at["p0", "instructions"] == 1.5e9 and math.isnan(e.at["p1", "instructions"])  # optional column
    assert e.at["p0", C.N_SAMPLES] == 20 and bool(e.at["p0", C.STABLE]) is True
    assert e.at["p0", "run_started_at"] == "2026-01-01T00:00:00" and e.at["p0", "branch"] is None


def test_only_ok_points_enter(make_run, tmp_path):
    store = tmp_path / "h.parquet"
    assert _add(make_run("r1", {"p0": 10.0, "p1": 20.0}, statuses={"p1": C.OOM}), store) == 0
    assert list(read_store(store)[C.HASH]) == ["p0"]


def test_a_commit_given_overrides_the_recorded_one(make_run, tmp_path):
    store = tmp_path / "h.parquet"
    assert _add(make_run("r1"), store, "--commit", "feed" * 10) == 0
    assert set(read_store(store)["commit"]) == {"feed" * 10}


def test_a_run_without_a_recorded_commit_needs_one(make_run, tmp_path, capsys):
    store = tmp_path / "h.parquet"
    run = make_run("r1", commit=None)
    assert _add(run, store) == 2
    assert "--commit" in no_traceback(capsys.readouterr().err)
    assert not store.exists()
    assert _add(run, store, "--commit", "b" * 40) == 0


def test_a_run_in_use_is_refused_and_nothing_is_written(make_run, tmp_path, capsys):
    store = tmp_path / "h.parquet"
    run = make_run("r1")
    with RunLock(run):
        assert _add(run, store) == 2
    err = no_traceback(capsys.readouterr().err)
    assert "still being written" in err and "pid" in err and str(run) in err
    assert not store.exists()


def test_a_run_without_ok_points_is_refused(make_run, tmp_path, capsys):
    store = tmp_path / "h.parquet"
    assert _add(make_run("r0"), store) == 0
    before = store.read_bytes()
    assert _add(make_run("r1", {"p0": 1.0, "p1": 1.0}, statuses={"p0": C.FAILED, "p1": C.OOM}), store) == 2
    err = no_traceback(capsys.readouterr().err)
    assert "no ok point" in err and "1 failed" in err and "1 oom" in err
    assert store.read_bytes() == before


def test_the_same_run_twice_is_refused_with_nothing_to_do(make_run, tmp_path, capsys):
    store = tmp_path / "h.parquet"
    run = make_run("r1")
    assert _add(run, store) == 0
    before = store.read_bytes()
    assert _add(run, store, "--commit", "c" * 40) == 2
    err = no_traceback(capsys.readouterr().err)
    assert "already in the history" in err and "nothing to do" in err and len(err.strip().splitlines()) == 1
    assert store.read_bytes() == before


def test_a_folder_that_is_not_a_run_is_refused(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert _add(tmp_path / "empty", tmp_path / "h.parquet") == 2
    assert _add(tmp_path / "missing", tmp_path / "h.parquet") == 2
    no_traceback(capsys.readouterr().err)
    assert not (tmp_path / "h.parquet").exists()


def test_empty_option_values_are_refused(make_run, tmp_path, capsys):
    assert _add(make_run("r1"), tmp_path / "h.parquet", "--commit", "") == 2
    assert "--commit ''" in no_traceback(capsys.readouterr().err)


def test_concurrent_adds_lose_no_entry(make_run, tmp_path, monkeypatch):
    # every add reads the store slowly, so without the lock each would write back what it read
    # before the others had written, and only one run would remain
    store = tmp_path / "h.parquet"
    runs = [make_run(f"r{i}", commit=str(i) * 40) for i in range(4)]
    read = history_store.read_store
    gate = threading.Barrier(len(runs), timeout=10)

    def slow_read(*a, **kw):
        out = read(*a, **kw)
        threading.Event().wait(0.1)
        return out

    monkeypatch.setattr(history_store, "read_store", slow_read)
    codes: list[int] = []

    def add(run):
        gate.wait()
        codes.append(_add(run, store))

    threads = [threading.Thread(target=add, args=(r,)) for r in runs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert codes == [0, 0, 0, 0]
    h = read(store)
    assert sorted(h["seq"].unique()) == [1, 2, 3, 4]
    assert sorted(h[C.RUN_ID].unique()) == ["r0", "r1", "r2", "r3"]


def test_an_add_that_cannot_get_the_lock_says_who_holds_it(make_run, tmp_path, capsys):
    store = tmp_path / "h.parquet"
    run = make_run("r1")
    with history_store.store_lock(store):
        with pytest.raises(history_store.HistoryError, match="being written by pid"):
            history_store.append(store, run_entries(run)[0], wait_s=0.2)
    assert not store.exists()


def test_a_counted_point_enters_with_its_instruction_count_and_timer(make_run, tmp_path):
    store = tmp_path / "h.parquet"
    run = make_run("r1", {"p0": 480.0}, extra={"p0": {"instructions": 2.0e6, C.TIMER: "callgrind"}})
    assert _add(run, store) == 0
    e = read_store(store).iloc[0]
    assert e["instructions"] == 2.0e6 and e[C.LAT_MEDIAN] == 480.0 and e[C.TIMER] == "callgrind"


def test_a_run_from_a_dirty_checkout_is_added_with_a_warning(make_run, tmp_path, capsys):
    run = make_run("r1", env={"git_dirty": True})
    assert _add(run, tmp_path / "h.parquet") == 0
    assert "uncommitted changes" in capsys.readouterr().err
    assert _add(make_run("r2", env={"git_dirty": True}), tmp_path / "h.parquet", "--commit", "d" * 40) == 0
    assert "uncommitted" not in capsys.readouterr().err  # the commit given is the user's word


def test_a_new_store_in_a_new_folder(make_run, tmp_path):
    store = tmp_path / "ci" / "history" / "h.parquet"
    assert _add(make_run("r1"), store) == 0
    assert len(read_store(store)) == 2
