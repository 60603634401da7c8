"""A damaged line in the middle of a log is named wherever the run is read (report, compare, merge)
and repaired on resume the way a torn tail is: moved aside to ``<log>.damaged`` (nothing lost), its
point run again."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cli_runs import FAST, fake_suite_file

from harness.cli import main
from harness.store import POINTS_LOG, SAMPLES_LOG, load, read_jsonl
from harness.store import columns as C
from harness.store.files import quarantine_damaged

pytestmark = pytest.mark.usefixtures("one_thread", "clean_registry")

SWEEP = "sweep: {size: [2, 3, 4]}\nmethods: {plain: {}}\n"


def damage_line(log: Path, index: int) -> str:
    """Cut the middle of line ``index`` (0-based) of a log, as a bad disk or an editor would; returns
    the point hash the line held."""
    lines = log.read_text().splitlines(keepends=True)
    h = json.loads(lines[index])[C.HASH]
    lines[index] = lines[index][: len(lines[index]) // 2] + "\n"
    log.write_text("".join(lines))
    return h


@pytest.fixture
def run_dir(tmp_path, fake_workload):
    suite = fake_suite_file(tmp_path, SWEEP)
    out = tmp_path / "run"
    assert main(["run", suite, "--out", str(out), "--no-report", "-q", *FAST]) == 0
    return suite, out


def test_read_jsonl_reports_each_line_that_is_not_a_row_with_its_number(tmp_path):
    log = tmp_path / "points.jsonl"
    log.write_text('{"point_hash": "aaaaaaaa1"}\n{"point_hash": "bbbbbbbb2", "x"\n[1, 2]\n{"point_hash": "cc')
    found = []
    rows = read_jsonl(log, found)
    assert rows == [{"point_hash": "aaaaaaaa1"}]
    assert [(d.line, d.torn_tail) for d in found] == [(2, False), (3, False), (4, True)]
    assert found[0].point_hash == "bbbbbbbb2" and found[1].point_hash is None
    assert found[0].describe() == \
        "points.jsonl line 2 (point_hash bbbbbbbb by its text) is damaged (not a JSON row)"
    assert "ends in an unfinished write" in found[2].describe()


def test_quarantine_moves_damaged_lines_aside_and_keeps_every_other_line(tmp_path):
    log = tmp_path / "points.jsonl"
    log.write_text('{"a": 1}\nnot json\n{"b": 2}\n{"c": 3}\n')
    moved = quarantine_damaged(log)
    assert [d.line for d in moved] == [2]
    assert log.read_text() == '{"a": 1}\n{"b": 2}\n{"c": 3}\n'
    assert (tmp_path / "points.jsonl.damaged").read_text() == "not json\n"
    assert quarantine_damaged(log) == []  # whole now


def test_report_names_a_damaged_line_in_the_middle_of_the_points_log(run_dir, capsys):
    _, out = run_dir
    h = damage_line(out / POINTS_LOG, 1)
    capsys.readouterr()
    assert main(["report", str(out)]) == 0
    err = capsys.readouterr().err
    assert f"warning: points.jsonl line 2 (point_hash {h[:8]} by its text) is damaged (not a JSON row)" in err
    assert "their points count as not recorded. Resuming moves such lines to" in err and "--resume" in err
    assert len(load(out).damaged) == 1


def test_compare_cannot_judge_a_point_hidden_by_a_damaged_line_rather_than_calling_it_missing(
        run_dir, tmp_path, capsys):
    suite, base = run_dir
    new = tmp_path / "new"
    assert main(["run", suite, "--out", str(new), "--no-report", "-q", *FAST]) == 0
    h = damage_line(new / POINTS_LOG, 2)
    capsys.readouterr()
    assert main(["compare", str(base), str(new)]) == 2
    out, err = capsys.readouterr()
    assert "CANNOT JUDGE" in out and f"ok in base; in new, points.jsonl line 3 (point_hash {h[:8]}" in out
    assert "missing from new" not in out and "could not be judged" in err


def test_resume_moves_a_damaged_line_aside_and_runs_its_point_again(run_dir, capsys):
    suite, out = run_dir
    h = damage_line(out / POINTS_LOG, 1)
    damaged_text = (out / POINTS_LOG).read_text().splitlines()[1]
    capsys.readouterr()
    assert main(["run", suite, "--resume", str(out), "--no-report", "-q", *FAST]) == 0
    err = capsys.readouterr().err
    assert "points.jsonl: moved 1 damaged line(s) to points.jsonl.damaged" in err and "run again" in err
    assert (out / (POINTS_LOG + ".damaged")).read_text() == damaged_text + "\n"
    run = load(out)
    assert run.damaged == [] and sorted(run.points[C.STATUS]) == [C.OK] * 3
    assert h in set(run.points[C.HASH])
    assert all(json.loads(line) for line in (out / POINTS_LOG).read_text().splitlines())


def test_a_damaged_samples_line_is_moved_aside_too(run_dir, capsys):
    suite, out = run_dir
    lines = (out / SAMPLES_LOG).read_text().splitlines(keepends=True)
    lines[0] = "garbage\n"
    (out / SAMPLES_LOG).write_text("".join(lines))
    assert main(["run", suite, "--resume", str(out), "--no-report", "-q", *FAST]) == 0
    assert "samples.jsonl: moved 1 damaged line(s)" in capsys.readouterr().err
    assert (out / (SAMPLES_LOG + ".damaged")).read_text() == "garbage\n"


def test_merge_refuses_a_shard_with_a_damaged_line_and_names_the_resume_that_repairs_it(
        run_dir, tmp_path, capsys):
    _, out = run_dir
    damage_line(out / POINTS_LOG, 0)
    capsys.readouterr()
    assert main(["merge", str(out), "--out", str(tmp_path / "merged")]) == 2
    err = capsys.readouterr().err
    assert "points.jsonl line 1" in err and "resume that shard first" in err and f"--resume {out}" in err
    assert not (tmp_path / "merged").exists()
