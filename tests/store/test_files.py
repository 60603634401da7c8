"""Durable writes and JSON-lines logs of the run directory (harness/store/files.py): what JSON is
written, which lines of a log are rows and which are damaged (with their line number, text and
reason), what a repair moves or cuts, and which file an OSError names."""

from __future__ import annotations

import errno
import math
import os
from pathlib import Path, PurePosixPath

import numpy as np
import pytest
import torch

from harness.store.files import (
    DamagedLine,
    atomic_write_bytes,
    jsonable,
    quarantine_damaged,
    read_jsonl,
    repair_torn_tail,
    write_json,
    write_jsonl_atomic,
    writing,
)


class NotAScalar:
    item = 5  # an attribute named item that cannot be called


@pytest.mark.parametrize(("value", "expected"), [
    (math.nan, None),
    (math.inf, "inf"),
    (-math.inf, "-inf"),
    (1.5, 1.5),
    (0.0, 0.0),
    ((1.0, math.nan, [math.inf, -math.inf]), [1.0, None, ["inf", "-inf"]]),
    ([], []),
    (np.float64(math.nan), None),
    ("text", "text"),
    ({"a": math.nan}, {"a": math.nan}),  # a mapping is the caller's: rows are converted value by value
])
def test_jsonable_turns_non_finite_floats_and_sequences_into_what_json_holds(value, expected):
    got = jsonable(value)
    if isinstance(expected, dict):
        assert got is value
    else:
        assert got == expected and type(got) is type(expected)


def test_jsonable_turns_numpy_and_torch_scalars_into_python_numbers_and_arrays_into_text():
    assert jsonable(np.float32(2.5)) == 2.5 and type(jsonable(np.float32(2.5))) is float
    assert jsonable(np.int64(3)) == 3 and type(jsonable(np.int64(3))) is int
    assert jsonable(torch.tensor(7)) == 7 and type(jsonable(torch.tensor(7))) is int
    assert jsonable(np.array([1, 2])) == "[1 2]"  # .item() raises ValueError
    assert jsonable(torch.tensor([1, 2])) == "tensor([1, 2])"  # .item() raises RuntimeError
    thing = NotAScalar()
    assert jsonable(thing) is thing


def test_an_os_error_without_a_file_name_is_raised_again_naming_the_file_written(tmp_path):
    path = tmp_path / "points.jsonl"
    cause = OSError(errno.ENOSPC, "No space left on device")
    with pytest.raises(OSError) as e, writing(path):
        raise cause
    assert (e.value.errno, e.value.strerror, e.value.filename) == (errno.ENOSPC, "No space left on device",
                                                                   str(path))
    assert e.value.__cause__ is cause
    with pytest.raises(OSError) as e, writing(path):
        raise OSError("disk gone")  # no errno, no strerror: its text stands in
    assert (e.value.errno, e.value.strerror, e.value.filename) == (None, "disk gone", str(path))


def test_an_os_error_that_names_a_file_is_raised_unchanged_and_the_staged_file_removed(tmp_path):
    path, tmp = tmp_path / "run.json", tmp_path / "run.json.tmp"
    tmp.write_text("half")
    cause = FileNotFoundError(errno.ENOENT, "No such file or directory", "elsewhere")
    with pytest.raises(FileNotFoundError) as e, writing(path, tmp):
        raise cause
    assert e.value is cause and not tmp.exists()
    with pytest.raises(OSError, match="No space"), writing(path, tmp):  # nothing staged: nothing to remove
        raise OSError(errno.ENOSPC, "No space left on device")
    tmp.write_text("half")
    with pytest.raises(ValueError, match="^not a disk error$"), writing(path, tmp):
        raise ValueError("not a disk error")
    assert tmp.read_text() == "half"  # only a failed write removes what it staged


def test_atomic_write_replaces_the_file_through_a_tmp_sibling_that_does_not_remain(tmp_path, monkeypatch):
    path = tmp_path / "run.json"
    path.write_bytes(b"old")
    replaced = []
    real_replace = os.replace

    def replace(src, dst):
        replaced.append((src, dst, src.read_bytes()))
        real_replace(src, dst)

    monkeypatch.setattr("harness.store.files.os.replace", replace)
    atomic_write_bytes(path, b"new")
    assert replaced == [(tmp_path / "run.json.tmp", path, b"new")]
    assert path.read_bytes() == b"new" and sorted(p.name for p in tmp_path.iterdir()) == ["run.json"]


def test_a_failed_atomic_write_names_the_file_and_leaves_the_old_one_and_no_tmp(tmp_path):
    path = tmp_path / "points.parquet"
    path.mkdir()  # the rename onto a directory fails after the tmp file was written
    with pytest.raises(IsADirectoryError):
        atomic_write_bytes(path, b"rows")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["points.parquet"] and path.is_dir()


def test_write_json_writes_indented_key_sorted_json_with_other_values_as_text(tmp_path):
    path = tmp_path / "env.json"
    write_json(path, {"b": 1, "a": ["x", 2.5], "c": PurePosixPath("runs/x")})
    assert path.read_text() == '{\n  "a": [\n    "x",\n    2.5\n  ],\n  "b": 1,\n  "c": "runs/x"\n}'


def test_write_jsonl_atomic_writes_one_terminated_line_per_row(tmp_path):
    path = tmp_path / "samples.jsonl"
    write_jsonl_atomic(path, [{"a": 1}, {"b": [1, 2]}])
    assert path.read_text() == '{"a": 1}\n{"b": [1, 2]}\n'
    write_jsonl_atomic(path, [])
    assert path.read_text() == ""


def test_a_damaged_line_names_its_file_line_and_the_point_hash_its_text_still_holds(tmp_path):
    log = tmp_path / "points.jsonl"
    torn = DamagedLine(log, 4, True, '{"point_hash":   "0123456789abcdef", "st')
    assert torn.point_hash == "0123456789abcdef"
    assert torn.describe() == ("points.jsonl line 4 (point_hash 01234567 by its text) ends in an unfinished "
                               "write (torn by a kill or a full disk)")
    odd = DamagedLine(log, 2, False, '{"point_hash": "0123abc", "x"}', "status is 'maybe', not one of ok")
    assert odd.point_hash is None  # fewer than 8 hex digits: not a hash
    assert odd.describe() == "points.jsonl line 2 is damaged (status is 'maybe', not one of ok)"
    assert DamagedLine(log, 9, False, '{"point_hash": "ABCDEF0123"}').point_hash is None  # not lower-case hex
    assert DamagedLine(log, 9, False, "x").reason == "not a JSON row"


def test_read_jsonl_of_a_missing_log_is_empty(tmp_path):
    found = []
    assert read_jsonl(tmp_path / "nothing.jsonl", found) == [] and found == []


def test_read_jsonl_skips_blank_lines_and_numbers_the_rest_from_one(tmp_path):
    log = tmp_path / "ops.jsonl"
    log.write_text('\n  \n{"a": 1}\n\n"text"\n{"a": 2}\n')
    found = []
    assert read_jsonl(log, found) == [{"a": 1}, {"a": 2}]
    assert found == [DamagedLine(log, 5, False, '"text"', "not a JSON row")]  # terminated: not torn
    assert read_jsonl(log) == [{"a": 1}, {"a": 2}]  # without a list for the damaged lines


def test_read_jsonl_leaves_out_rows_its_check_refuses_and_repeats_of_a_key_naming_why(tmp_path):
    log = tmp_path / "samples.jsonl"
    log.write_text('{"k": 1, "v": 0}\n{"k": 2, "v": -1}\n{"k": 1, "v": 5}\n[1]\n{"k": 3, "v": 1}\n{"k": 1}')
    seen = []

    def check(row):
        seen.append(row)
        return None if row.get("v", 0) >= 0 else f"v is {row['v']}"

    found = []
    rows = read_jsonl(log, found, check, key=lambda r: r["k"])
    assert rows == [{"k": 1, "v": 0}, {"k": 3, "v": 1}]
    assert found == [
        DamagedLine(log, 2, False, '{"k": 2, "v": -1}', "v is -1"),
        DamagedLine(log, 3, False, '{"k": 1, "v": 5}', "a repeat of line 1"),
        DamagedLine(log, 4, False, "[1]", "not a JSON row"),
        DamagedLine(log, 6, False, '{"k": 1}', "a repeat of line 1"),  # parses: a last line, not torn
    ]
    assert [1] not in seen  # the check sees JSON objects only
    assert read_jsonl(log, None, check) == [{"k": 1, "v": 0}, {"k": 1, "v": 5}, {"k": 3, "v": 1}, {"k": 1}]


def test_read_jsonl_keeps_the_first_200_characters_of_a_damaged_line_and_reads_bad_bytes(tmp_path):
    log = tmp_path / "points.jsonl"
    log.write_bytes(b'{"a": 1}\n  ' + b"x" * 300 + b"  \n\xff\xfe{\n" + b'{"a": 2')
    found = []
    assert read_jsonl(log, found) == [{"a": 1}]
    assert found == [DamagedLine(log, 2, False, "x" * 200), DamagedLine(log, 3, False, "\ufffd\ufffd{"),
                     DamagedLine(log, 4, True, '{"a": 2')]


def test_quarantine_appends_damaged_lines_to_the_damaged_file_and_keeps_the_torn_tail(tmp_path):
    log = tmp_path / "points.jsonl"
    (tmp_path / "points.jsonl.damaged").write_text("earlier\n")
    log.write_text('{"k": 1}\nbad one\n{"k": 1}\n{"k": 2}\nbad two\n{"k": 3')
    moved = quarantine_damaged(log, key=lambda r: r["k"])
    assert moved == [DamagedLine(log, 2, False, "bad one"),
                     DamagedLine(log, 3, False, '{"k": 1}', "a repeat of line 1"),
                     DamagedLine(log, 5, False, "bad two")]
    assert (tmp_path / "points.jsonl.damaged").read_text() == 'earlier\nbad one\n{"k": 1}\nbad two\n'
    assert log.read_text() == '{"k": 1}\n{"k": 2}\n{"k": 3'  # the torn tail is repair_torn_tail's
    assert sorted(p.name for p in tmp_path.iterdir()) == ["points.jsonl", "points.jsonl.damaged"]


def test_quarantine_moves_rows_the_check_refuses_and_leaves_a_whole_or_torn_log_alone(tmp_path):
    log = tmp_path / "samples.jsonl"
    log.write_text('{"v": 1}\n{"v": -1}\n')
    moved = quarantine_damaged(log, check=lambda r: None if r["v"] > 0 else "negative")
    assert moved == [DamagedLine(log, 2, False, '{"v": -1}', "negative")]
    assert log.read_text() == '{"v": 1}\n'
    assert (tmp_path / "samples.jsonl.damaged").read_text() == '{"v": -1}\n'
    log.write_text('{"v": 1}\n{"v"')
    assert quarantine_damaged(log) == [] and log.read_text() == '{"v": 1}\n{"v"'
    assert (tmp_path / "samples.jsonl.damaged").read_text() == '{"v": -1}\n'


def test_repairing_a_missing_or_empty_log_drops_nothing(tmp_path):
    log = tmp_path / "points.jsonl"
    assert repair_torn_tail(log) == 0 and not log.exists()
    log.write_text("")
    assert repair_torn_tail(log) == 0 and log.read_text() == ""


def test_repair_cuts_a_torn_line_longer_than_one_read_block_back_to_the_last_newline(tmp_path):
    log = tmp_path / "samples.jsonl"
    log.write_text('{"a": 1}\n' + "x" * 200_000)  # three blocks of 64 KiB without a newline
    assert repair_torn_tail(log) == 200_000 and log.read_text() == '{"a": 1}\n'
    log.write_text("y" * 70_000)  # no newline at all: nothing whole to keep
    assert repair_torn_tail(log) == 70_000 and log.read_text() == ""
    log.write_text("\n" + "z" * 10)  # the only newline is the first byte
    assert repair_torn_tail(log) == 10 and log.read_text() == "\n"
    log.write_text('{"a": 1}\n{"b": 2}\n{"c"')
    assert repair_torn_tail(log) == 4 and log.read_text() == '{"a": 1}\n{"b": 2}\n'
    assert repair_torn_tail(log) == 0 and log.read_text() == '{"a": 1}\n{"b": 2}\n'


def test_repair_cuts_a_torn_tail_of_one_byte(tmp_path):
    log = tmp_path / "points.jsonl"
    log.write_text("x")  # a log of one byte, torn
    assert repair_torn_tail(log) == 1 and log.read_text() == ""
    log.write_text('{"a": 1}\n{')  # one byte after the last newline
    assert repair_torn_tail(log) == 1 and log.read_text() == '{"a": 1}\n'
    log.write_text("\n" + "z" * (1 << 16))  # the newline alone before the last full block
    assert repair_torn_tail(log) == 1 << 16 and log.read_text() == "\n"


def test_repairing_a_whole_log_leaves_it_untouched_its_modification_time_included(tmp_path):
    log = tmp_path / "points.jsonl"
    log.write_text('{"a": 1}\n{"b": 2}\n')
    os.utime(log, ns=(1_000_000_000, 1_000_000_000))
    assert repair_torn_tail(log) == 0
    assert log.read_text() == '{"a": 1}\n{"b": 2}\n' and log.stat().st_mtime_ns == 1_000_000_000


def test_a_nameless_write_error_names_the_file_and_removes_the_half_written_tmp(tmp_path, monkeypatch):
    path = tmp_path / "run.json"
    path.write_bytes(b"old")
    real_write = Path.write_bytes

    def write_bytes(self, data):
        real_write(self, data[:1])  # part of it made it to the disk
        raise OSError(errno.ENOSPC, "No space left on device")  # what a failed write() raises: no name

    monkeypatch.setattr(Path, "write_bytes", write_bytes)
    with pytest.raises(OSError) as e:
        atomic_write_bytes(path, b"new")
    assert (e.value.errno, e.value.strerror, e.value.filename) == (errno.ENOSPC, "No space left on device",
                                                                   str(path))
    monkeypatch.undo()
    assert path.read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == ["run.json"]
