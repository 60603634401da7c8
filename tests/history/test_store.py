"""The history store file: a damaged one is named and left as it is; a write cut short loses nothing."""

from __future__ import annotations

import errno
import io
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from cli_runs import no_traceback
from history_fakes import history_frame, stepped

from harness.cli.app import main
from harness.history import read_store, write_store
from harness.history import store as history_store
from harness.store import columns as C


def _garbage(path: Path) -> None:
    path.write_bytes(b"\x00\x01 not parquet at all \xff" * 40)


def _truncated(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _missing_column(path: Path) -> None:
    table = pq.read_table(path)
    pq.write_table(table.drop_columns(["commit"]), path)  # keeps the schema metadata (the marker)


def _wrong_type(path: Path) -> None:
    table = pq.read_table(path)
    i = table.schema.get_field_index(C.LAT_MEDIAN)
    pq.write_table(table.set_column(i, C.LAT_MEDIAN, pa.array(["fast"] * len(table))), path)


def _foreign_parquet(path: Path) -> None:
    pq.write_table(pa.table({"a": [1, 2]}), path)


def _empty(path: Path) -> None:
    path.write_bytes(b"")


DAMAGES = {"garbage bytes": _garbage, "truncated": _truncated, "missing column": _missing_column,
           "wrong type": _wrong_type, "not a history": _foreign_parquet, "empty file": _empty}
COMMANDS = {"add": lambda run: ["add", str(run)], "check": lambda run: ["check"],
            "plot": lambda run: ["plot"], "show": lambda run: ["show"]}


@pytest.fixture
def store(store_of) -> Path:
    return store_of({"p0": stepped(n=12), "p1": stepped(n=12, seed=1)})


@pytest.mark.parametrize("damage", DAMAGES)
@pytest.mark.parametrize("command", COMMANDS)
def test_a_damaged_store_gets_one_paragraph_and_stays_as_it_is(store, damage, command, make_run, tmp_path,
                                                                capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # plot writes its figure here
    DAMAGES[damage](store)
    before = store.read_bytes()
    argv = ["history", *COMMANDS[command](make_run("r1")), "--store", str(store)]
    assert main(argv) == 2
    err = no_traceback(capsys.readouterr().err)
    assert len(err.strip().splitlines()) == 1
    assert str(store) in err and "not a usable history store" in err and "Move it aside" in err
    assert store.read_bytes() == before
    assert not list(tmp_path.glob("*.png")) and not list(tmp_path.glob("*.tmp"))


def test_the_reason_is_named(store):
    _missing_column(store)
    with pytest.raises(history_store.HistoryError, match="missing column.*commit"):
        read_store(store)


def test_a_store_of_another_format_version_is_refused(store):
    table = pq.read_table(store)
    meta = {**table.schema.metadata, history_store.FORMAT_KEY: b"99"}
    pq.write_table(table.replace_schema_metadata(meta), store)
    with pytest.raises(history_store.HistoryError, match="format 99"):
        read_store(store)


def test_a_store_round_trips(tmp_path):
    frame = history_frame({"p0": [1.0, 2.0, 3.0]})
    write_store(tmp_path / "h.parquet", frame)
    back = read_store(tmp_path / "h.parquet")
    assert list(back["seq"]) == [1, 2, 3] and list(back[C.LAT_MEDIAN]) == [1.0, 2.0, 3.0]
    assert list(back.columns) == list(history_store.SCHEMA)


def test_a_write_cut_short_by_a_full_disk_leaves_the_old_store(store, make_run, capsys, monkeypatch):
    run, before = make_run("r1"), store.read_bytes()
    real = Path.write_bytes

    def half_then_full(self, data):
        real(self, data[: len(data) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_bytes", half_then_full)
    assert main(["history", "add", str(run), "--store", str(store)]) == 3
    monkeypatch.undo()
    err = no_traceback(capsys.readouterr().err)
    assert str(store) in err and "free space" in err
    assert store.read_bytes() == before
    assert not store.with_name(store.name + ".tmp").exists()


def test_an_exception_inside_the_write_leaves_the_old_store(store, make_run, monkeypatch):
    runs, before = [make_run("r1"), make_run("r2")], store.read_bytes()

    def broken(df):
        raise RuntimeError("killed while serialising")

    monkeypatch.setattr(history_store, "to_bytes", broken)
    with pytest.raises(RuntimeError):
        main(["history", "add", str(runs[0]), "--store", str(store)])
    assert store.read_bytes() == before
    monkeypatch.undo()
    assert main(["history", "add", str(runs[1]), "--store", str(store)]) == 0  # the lock is free


def test_a_store_path_that_is_a_folder_exits_3(tmp_path, make_run, capsys):
    folder = tmp_path / "h.parquet"
    folder.mkdir()
    assert main(["history", "add", str(make_run("r1")), "--store", str(folder)]) == 3
    assert "folder" in no_traceback(capsys.readouterr().err)


def test_show_prints_the_newest_runs(store, capsys):
    assert main(["history", "show", "--store", str(store), "--last", "2"]) == 0
    out = capsys.readouterr().out
    assert "12 run(s), 24 entries" in out and "the newest 2 run(s)" in out
    assert "run11" in out and "run12" in out and "run10" not in out


def test_parse_refuses_bytes_that_are_not_parquet():
    with pytest.raises(history_store.HistoryError, match="not a readable Parquet file"):
        history_store.parse(Path("x.parquet"), io.BytesIO(b"PAR1 and then nothing").getvalue())
