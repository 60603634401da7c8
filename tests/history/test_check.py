"""``harness history check``: steps per point, measured between segments, and the gate's exit code."""

from __future__ import annotations

import numpy as np
import pytest
from cli_runs import no_traceback
from history_fakes import BASE_MS, commit_of, stepped

from harness.cli.app import main
from harness.history import CheckConfig, check, read_store
from harness.store import columns as C

pytestmark = pytest.mark.usefixtures("one_thread")

FLAT_SEEDS = range(5)


@pytest.fixture(scope="module")
def sixty_commits(tmp_path_factory) -> str:
    """A store built by `harness history add` from 60 runs (one per commit, two points): point p0
    gets 3 % slower from commit 31 on, p1 stays flat (noise: 0.3 %, seeded)."""
    from history_fakes import run_factory

    root = tmp_path_factory.mktemp("sixty")
    make = run_factory(root)
    store = root / "history.parquet"
    slow, flat = stepped(n=60, after=30, step=0.03, seed=0), stepped(n=60, step=0.0, seed=1, base=20.0)
    for i in range(60):
        run = make(f"run{i + 1:02d}", {"p0": slow[i], "p1": flat[i]}, commit=commit_of(i + 1))
        assert main(["history", "add", str(run), "--store", str(store), "--branch", "main"]) == 0
    return str(store)


def test_the_step_is_found_at_the_first_commit_after_it(sixty_commits):
    steps = check(read_store(sixty_commits), CheckConfig(recent=30)).steps
    assert list(steps[C.HASH]) == ["p0"]  # the flat point has none
    step = steps.iloc[0]
    assert step["commit"] == commit_of(31) and step["prev_commit"] == commit_of(30)
    assert step["seq"] == 31 and step["x"] == 30.5
    assert step["rel_change"] == pytest.approx(0.03, abs=0.003)
    assert step["verdict"] == "regression" and step["new"] and step["gating"]


def test_check_exits_1_when_the_step_is_among_the_recent_entries(sixty_commits, capsys):
    # commit 31 is the 30th newest of 60 entries
    assert main(["history", "check", "--store", sixty_commits, "--recent", "30"]) == 1
    out, err = capsys.readouterr()
    assert commit_of(31)[:12] in out and "regression" in out and "NEW" in out
    assert "p0" in no_traceback(err) and commit_of(31)[:12] in err


def test_check_exits_0_when_the_step_is_older_than_the_recent_entries(sixty_commits, capsys):
    assert main(["history", "check", "--store", sixty_commits, "--recent", "29"]) == 0
    assert main(["history", "check", "--store", sixty_commits]) == 0  # the default: 5
    out = capsys.readouterr().out
    assert commit_of(31)[:12] in out and "history" in out  # reported, not failing


def test_check_of_one_branch_leaves_the_others_out(sixty_commits, capsys):
    assert main(["history", "check", "--store", sixty_commits, "--recent", "30", "--branch", "main"]) == 1
    assert main(["history", "check", "--store", sixty_commits, "--branch", "dev"]) == 2
    assert "no entry" in no_traceback(capsys.readouterr().err)


def test_a_new_step_a_few_entries_old_fails_with_the_default_window(store_of):
    store = store_of({"p0": stepped(n=34, after=30)})  # the step's first commit is the 4th newest
    assert main(["history", "check", "--store", str(store)]) == 1


def test_a_three_percent_drop_is_an_improvement_and_passes(store_of, capsys):
    store = store_of({"p0": stepped(step=-0.03)})
    assert main(["history", "check", "--store", str(store), "--recent", "30"]) == 0
    out = capsys.readouterr().out
    assert "improvement" in out and commit_of(31)[:12] in out
    step = check(read_store(store), CheckConfig(recent=30)).steps.iloc[0]
    assert step["verdict"] == "improvement" and step["new"] and not step["gating"]
    assert step["rel_change"] == pytest.approx(-0.03, abs=0.003)


@pytest.mark.parametrize("seed", FLAT_SEEDS)
def test_a_flat_noisy_history_raises_nothing(store_of, seed, capsys):
    store = store_of({"p0": stepped(step=0.0, seed=seed), "p1": stepped(step=0.0, seed=100 + seed)})
    assert main(["history", "check", "--store", str(store), "--recent", "60"]) == 0
    result = check(read_store(store), CheckConfig(recent=60))
    assert not (result.steps["verdict"] != "no change").any()


def test_a_noisy_history_without_a_real_step_raises_nothing(store_of):
    # 10 % noise: segment medians of a flat series differ by more than the 2 % minimum by chance;
    # only the significance test keeps them from failing the gate
    for seed in range(3):
        store = store_of({"p0": stepped(step=0.0, noise=0.10, seed=seed)})
        assert main(["history", "check", "--store", str(store), "--recent", "60"]) == 0


def test_a_step_is_measured_between_its_segments_not_against_the_whole_series(store_of):
    # 5 % faster from commit 16, then 3 % slower from commit 46: the regression is 3 % against the
    # segment before it (0.95 -> 0.9785), not +0.5 % against everything before it
    values = stepped(after=45, step=0.03, seed=5)
    values[15:] *= 0.95
    steps = check(read_store(store_of({"p0": values})), CheckConfig(recent=20)).steps
    assert list(steps["commit"]) == [commit_of(16), commit_of(46)]
    last = steps.iloc[1]
    assert last["before"] == pytest.approx(np.median(values[15:45]))
    assert last["after"] == pytest.approx(np.median(values[45:]))
    assert last["before"] == pytest.approx(BASE_MS * 0.95, rel=0.005)
    assert last["rel_change"] == pytest.approx(0.03, abs=0.003)
    assert last["verdict"] == "regression" and last["gating"]


def test_a_newer_improvement_supersedes_a_regression(store_of):
    # a regression (commit 41) undone by an improvement (commit 51): the newest step decides
    values = stepped(after=40, step=0.05, seed=6)
    values[50:] /= 1.05
    result = check(read_store(store_of({"p0": values})), CheckConfig(recent=30))
    assert list(result.steps["verdict"]) == ["regression", "improvement"]
    assert not result.failed


def test_a_significant_step_under_the_minimum_does_not_count(store_of, capsys):
    store = store_of({"p0": stepped(step=0.015, noise=0.001)})
    assert main(["history", "check", "--store", str(store), "--recent", "60"]) == 0
    assert "no change" in capsys.readouterr().out
    assert main(["history", "check", "--store", str(store), "--recent", "60", "--min-step", "0.01"]) == 1


def test_the_instructions_metric_is_checked_where_recorded(store_of, capsys):
    store = store_of({"p0": stepped(step=0.03, base=1e9)}, metric="instructions")
    assert main(["history", "check", "--store", str(store), "--metric", "instructions",
                 "--recent", "30"]) == 1
    assert "instructions" in capsys.readouterr().out


def test_a_metric_no_entry_has_exits_2(store_of, capsys):
    store = store_of({"p0": stepped()})
    assert main(["history", "check", "--store", str(store), "--metric", "instructions"]) == 2
    assert "no entry" in no_traceback(capsys.readouterr().err)


def test_a_short_history_is_said_to_be_too_short(store_of, capsys):
    assert main(["history", "check", "--store", str(store_of({"p0": [10.0, 10.1, 10.0]}))]) == 0
    assert "too few" in capsys.readouterr().out


@pytest.mark.parametrize("option", [["--alpha", "0"], ["--alpha", "0.001"], ["--min-step", "-1"],
                                    ["--recent", "0"], ["--metric", "energy"]])
def test_bad_options_exit_2(store_of, option, capsys):
    with pytest.raises(SystemExit) as e:  # argparse's own refusals exit here
        rc = main(["history", "check", "--store", str(store_of({"p0": stepped()})), *option])
        raise SystemExit(rc)
    assert e.value.code == 2
    no_traceback(capsys.readouterr().err)


def test_check_without_a_store_exits_2(tmp_path, capsys):
    assert main(["history", "check", "--store", str(tmp_path / "none.parquet")]) == 2
    assert "no history store" in no_traceback(capsys.readouterr().err)


def test_entries_of_another_timer_make_another_series(store_of):
    # the same point timed by perf_counter, then counted under Callgrind (wall times 50x longer):
    # two series without a step, not one series with a huge one
    values = stepped(step=0.0)
    values[30:] *= 50
    frame = read_store(store_of({"p0": values}))
    frame.loc[frame["seq"] > 30, C.TIMER] = "callgrind"
    result = check(frame, CheckConfig(recent=60))
    assert sorted(s.timer or "" for s in result.series) == ["", "callgrind"]
    assert result.steps.empty
