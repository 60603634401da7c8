"""``harness history plot``: one PNG, a panel per series, the steps marked where they are."""

from __future__ import annotations

import base64

import matplotlib.pyplot as plt
import numpy as np
import pytest
from cli_runs import no_traceback
from history_fakes import commit_of, stepped

from harness.cli.app import main
from harness.history import CheckConfig, check, read_store
from harness.history.plot import history_figure

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _vertical_xs(ax: plt.Axes) -> list[float]:
    """x of every vertical line on ``ax`` (a line whose two x values are equal)."""
    xs = []
    for line in ax.get_lines():
        x = np.asarray(line.get_xdata(), dtype=float)
        if len(x) == 2 and x[0] == x[1]:
            xs.append(float(x[0]))
    return xs


@pytest.fixture
def stepped_store(store_of):
    return store_of({"p0": stepped(), "p1": stepped(step=0.0, seed=1)})


def test_plot_writes_a_png(stepped_store, tmp_path, capsys):
    out = tmp_path / "figs"
    assert main(["history", "plot", "--store", str(stepped_store), "--out", str(out)]) == 0
    png = out / "history-latency_median_ms.png"
    assert png.read_bytes().startswith(PNG_MAGIC) and png.stat().st_size > 10_000
    assert "2 series, 1 step(s)" in capsys.readouterr().out


def test_plot_writes_a_page_with_the_steps_table_and_the_figure_beside_the_png(stepped_store, tmp_path):
    assert main(["history", "plot", "--store", str(stepped_store), "--out", str(tmp_path)]) == 0
    page = (tmp_path / "history-latency_median_ms.html").read_text()
    png = (tmp_path / "history-latency_median_ms.png").read_bytes()
    assert base64.b64encode(png).decode() in page  # the figure, embedded
    assert commit_of(31)[:12] in page and "regression" in page and "history" in page
    assert "no new regression step: the check passes" in page  # the step is 30 entries old
    assert commit_of(30)[:12] not in page  # the step's commit, not the one before it


def test_plot_to_a_png_file(stepped_store, tmp_path):
    assert main(["history", "plot", "--store", str(stepped_store), "--out", str(tmp_path / "h.png")]) == 0
    assert (tmp_path / "h.png").read_bytes().startswith(PNG_MAGIC)


def test_the_step_is_marked_between_the_last_entry_before_it_and_the_first_after(stepped_store):
    result = check(read_store(stepped_store), CheckConfig())
    fig = history_figure(result)
    try:
        stepped_ax, flat_ax = [ax for ax in fig.axes if ax.get_visible()]
        assert _vertical_xs(stepped_ax) == [30.5]  # seq 30 is commit 30, seq 31 commit 31
        assert _vertical_xs(flat_ax) == []
        labels = [t.get_text() for t in stepped_ax.get_xticklabels()]
        assert commit_of(31)[:7] in labels
        medians = sorted(round(float(np.asarray(seg)[0, 1]), 2)  # the segments' median lines
                         for c in stepped_ax.collections for seg in c.get_segments())
        assert medians == pytest.approx([10.0, 10.3], abs=0.05)
    finally:
        plt.close(fig)


def test_plot_of_an_empty_selection_exits_2(stepped_store, tmp_path, capsys):
    argv = ["history", "plot", "--store", str(stepped_store), "--branch", "nope", "--out", str(tmp_path)]
    assert main(argv) == 2
    no_traceback(capsys.readouterr().err)
    assert not list(tmp_path.glob("*.png"))
