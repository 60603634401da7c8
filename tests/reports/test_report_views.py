"""Reports a person wants to read (issue 14, points 16-19): terminal tables that fit 100 columns
with short variant labels and their legend, an overview figure and no library warnings, a
self-contained report.html (checked in a headless Chromium when one is installed), and warnings
for incomplete, running or duplicated runs and for runs with nothing to plot."""

from __future__ import annotations

import base64
import io
import json
import logging
import re
import shutil
import subprocess
import warnings
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from toy_runs import make_run

from harness.cli import main
from harness.store import MANIFEST_FILE, RunLock, RunWriter, load, lock_holder
from harness.store import columns as C
from reports import plots as P
from reports import tables as T
from reports.status import run_status
from reports.summary import report

HTTM = ("query_merge", "outlier_frac", "kv_merge", "head_groups", "n_s", "n_t")
LAYER_SUITE = {
    "name": "layer",
    "workload": "vggt",
    "reference": "vggt",
    "fixed": {"device": "cpu"},
    "sweep": {"frames": [8, 16]},
    "methods": {"vggt": {}, "tome": {"tome_ratio": 0.5}, "httm": {}},
    "parameters": {"workload": ["frames", "height"], "common": ["device", "dtype", "seed", "threads"],
                   "methods": {"vggt": [], "tome": ["tome_ratio", "start_layer"],
                               "httm": [*HTTM, "start_layer"]}},
}
LAYER_METRICS = {
    "fid_attn_rel_err": {"kind": "fidelity", "help": "attention error", "higher_is_better": False,
                         "unit": ""},
    "fid_attn_cos": {"kind": "fidelity", "help": "attention cosine", "higher_is_better": True, "unit": ""},
    "fid_merge_sim_p10": {"kind": "fidelity", "help": "merge quality", "higher_is_better": True, "unit": ""},
    "work_tokens_q_frac": {"kind": "work", "help": "queries kept", "higher_is_better": None, "unit": ""},
    "work_tokens_kv_frac": {"kind": "work", "help": "keys kept", "higher_is_better": None, "unit": ""},
    "work_attn_flops": {"kind": "work", "help": "FLOPs", "higher_is_better": None, "unit": "FLOP",
                        "cost_axis": True},
    "bd_match_ms": {"kind": "breakdown", "help": "matching", "higher_is_better": False, "unit": "ms"},
}
# (query_merge, outlier_frac, kv_merge, head_groups, n_s, n_t) of the httm variants, as in vggt-layer
HTTM_VARIANTS = [
    *[(q, 0.0, kv, 16, 64, 8) for q in (0.3, 0.6) for kv in (0.3, 0.5)], (0.68, 0.1, 0.58, 16, 64, 8),
    (0.8, 0.0, 0.7, 16, 64, 8), (0.85, 0.05, 0.7, 16, 64, 8),
    *[(0.9, 0.1, 0.7, g, 64, 8) for g in (1, 2, 4, 8, 16)],
    (0.9, 0.1, 0.7, 16, 128, 1), (0.9, 0.1, 0.7, 16, 512, 1),
]
AT_16 = HTTM_VARIANTS[4:7]  # the variants also run at 16 frames


def _layer_row(i: int, method: str, frames: int, params: dict[str, Any], lat: float, keep: float,
               status: str = C.OK) -> tuple[dict, list[dict]]:
    row: dict[str, Any] = {
        C.RUN_ID: "r", C.SUITE: "layer", C.HASH: f"{i:016x}", C.WORKLOAD: "vggt", C.METHOD: method,
        C.STATUS: status, C.ERROR: None if status == C.OK else "Traceback ...\nRuntimeError: " + "x" * 300,
        "frames": frames, "height": 112, "device": "cpu", "dtype": "float32", "seed": 0, "threads": 1,
        "start_layer": 0 if method != "vggt" else None, **params,
    }
    if status != C.OK:
        return row, []
    samples = lat * (1 + 0.01 * np.arange(5))
    row.update({
        C.LAT_MEDIAN: float(np.median(samples)), C.LAT_IQR: 0.02 * lat, C.LAT_P10: lat, C.LAT_P90: 1.04 * lat,
        C.N_SAMPLES: 5, C.N_WARMUP: 1, C.TIMER: "perf_counter", C.RSS_PEAK_MB: 1471.0,
        "fid_attn_rel_err": 0.3 * (1 - keep), "fid_attn_cos": 1 - 0.05 * (1 - keep),
        "fid_merge_sim_p10": None if method == "vggt" else 0.6 + 0.2 * keep,
        "work_tokens_q_frac": keep, "work_tokens_kv_frac": min(1.0, keep + 0.1),
        "work_attn_flops": 1.9e9 * frames / 8 * keep, "bd_match_ms": None if method == "vggt" else 5.0,
    })
    return row, [{C.RUN_ID: "r", C.HASH: row[C.HASH], C.SAMPLE: k, C.DEVICE_MS: float(s), C.HOST_MS: float(s)}
                 for k, s in enumerate(samples)]


def make_layer_run(run_dir: Path, *, n_points: int | None = None, drop: int = 0, failed: bool = True,
                   duplicate: bool = False) -> Path:
    """A run shaped like ``suites/vggt-layer.yaml``: vggt, tome and 14 httm variants at 8 frames,
    three of them also at 16 frames, one failed point; ``drop`` leaves the last points out."""
    specs: list[tuple[str, int, dict[str, Any], float, float, str]] = []
    for frames in (8, 16):
        base = 30.0 * frames / 8
        specs.append(("vggt", frames, {}, base, 1.0, C.OK))
        specs.append(("tome", frames, {"tome_ratio": 0.5}, base / 1.4, 0.53, C.OK))
        for v in HTTM_VARIANTS if frames == 8 else AT_16:
            keep = 1 - v[0] * 0.8
            lat = base * (0.5 + keep) * (1 + v[3] / 64)
            specs.append(("httm", frames, dict(zip(HTTM, v)), lat, keep, C.OK))
    if failed:
        specs.append(("httm", 16, dict(zip(HTTM, (0.9, 0.1, 0.7, 1, 64, 8))), 0, 0, C.FAILED))
    total = len(specs)
    specs = specs[: len(specs) - drop]
    manifest = {"run_id": "layer-1", "suite": "layer", "n_points": total if n_points is None else n_points,
                "argv": ["harness", "run", "suites/layer.yaml", "--out", str(run_dir), "--set",
                         "frames=[8,16]"]}
    w = RunWriter.create(run_dir, manifest, LAYER_SUITE, {"torch": "2.14.1", "cpu_model": "Toy CPU"},
                         LAYER_METRICS)
    for i, spec in enumerate(specs):
        w.append(*_layer_row(i, *spec))
    if duplicate:
        w.append(*_layer_row(0, *specs[0]))
    return run_dir


@dataclass
class Output:
    out: str
    err: str
    warnings: list[str] = field(default_factory=list)
    logs: list[str] = field(default_factory=list)


@pytest.fixture(scope="module")
def layer_run(tmp_path_factory) -> Path:
    return make_layer_run(tmp_path_factory.mktemp("layer") / "run")


@pytest.fixture(scope="module")
def plotted(layer_run: Path) -> Output:
    """plot_run of the layer run, once, with every warning and log record it raised."""
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = records.append  # type: ignore[method-assign]
    logging.getLogger().addHandler(handler)
    try:
        with warnings.catch_warnings(record=True) as caught, redirect_stderr(io.StringIO()) as err, \
                redirect_stdout(io.StringIO()) as out:
            warnings.simplefilter("always")
            paths = P.plot_run(layer_run)
    finally:
        logging.getLogger().removeHandler(handler)
    result = Output("\n".join(map(str, paths)), err.getvalue(), [str(w.message) for w in caught],
                    [r.getMessage() for r in records])
    assert out.getvalue() == ""
    return result


@pytest.fixture(scope="module")
def reported(layer_run: Path, plotted: Output) -> Output:
    """report() of the layer run (after its plots), once: what it printed."""
    with redirect_stdout(io.StringIO()) as out, redirect_stderr(io.StringIO()) as err:
        report(layer_run)
    return Output(out.getvalue(), err.getvalue())


def toy_run(run_dir: Path, **manifest: Any) -> Path:
    """The small run of test_reports (6 ok points, 1 oom) with these ``run.json`` entries."""
    make_run(run_dir)
    path = run_dir / MANIFEST_FILE
    path.write_text(json.dumps({**json.loads(path.read_text()), **manifest}))
    return run_dir


def _tables(text: str) -> list[list[str]]:
    """The Markdown tables of ``text``, each as its list of lines."""
    out: list[list[str]] = []
    for line in text.splitlines():
        if line.startswith("|"):
            if not out or not out[-1] or not out[-1][-1].startswith("|"):
                out.append([])
            out[-1].append(line)
        elif out and out[-1]:
            out.append([])
    return [t for t in out if t]


def _header(table: list[str]) -> list[str]:
    return [c.strip() for c in table[0].strip("|").split("|")]


# ---------------------------------------------------------------------------- 16: terminal tables


def test_the_printed_report_fits_100_columns(layer_run: Path, reported: Output) -> None:
    assert max(len(line) for line in reported.out.splitlines()) <= 100
    md = (layer_run / "report" / "report.md").read_text()
    assert max(len(line) for line in md.splitlines()) > 100  # the Markdown keeps every column


def test_the_printed_table_leads_with_the_columns_that_matter(layer_run: Path, reported: Output) -> None:
    header = _header(_tables(reported.out)[0])
    assert header[:2] == ["method", "frames"]
    for col in ("speedup", "fid_attn_rel_err", "work_tokens_q_frac"):
        assert col in header
    assert header.index("speedup") < header.index("fid_attn_rel_err") < header.index("work_tokens_q_frac")
    # the rest is named, and kept in the CSV and the Markdown
    not_shown = next(line for line in reported.out.splitlines() if line.startswith("Not shown here"))
    assert "bd_match_ms" in reported.out and "bd_match_ms" not in header
    assert "rss_peak_mb" in not_shown
    csv = pd.read_csv(layer_run / "report" / "points.csv")
    for col in (*LAYER_METRICS, *HTTM, C.SPEEDUP, T.VARIANT, C.HASH):
        assert col in csv.columns
    md_header = _header(_tables((layer_run / "report" / "report.md").read_text())[0])
    assert {"bd_match_ms", "fid_merge_sim_p10", "work_attn_flops", *HTTM} <= set(md_header)


def test_variants_get_short_labels_and_a_legend_maps_them_to_their_parameters(layer_run: Path,
                                                                             reported: Output) -> None:
    out = reported.out
    assert "query_merge=" not in out  # no long method labels anywhere
    rows = [_header([line]) for line in _tables(out)[0][2:]]
    labels = {r[0] for r in rows}
    assert {"vggt", "tome"} <= labels  # a method with one setting keeps its name
    assert {f"httm#{i}" for i in range(1, len(HTTM_VARIANTS) + 1)} == labels - {"vggt", "tome"}
    legend = next(t for t in _tables(out) if _header(t)[0] == T.VARIANT)
    assert _header(legend) == [T.VARIANT, *HTTM]  # every httm parameter differs between some variants
    mapping = {r[0]: r[1:] for r in (_header([line]) for line in legend[2:])}
    assert mapping["httm#1"] == ["0.3", "0", "0.3", "16", "64", "8"]
    assert mapping["httm#14"] == ["0.9", "0.1", "0.7", "16", "512", "1"]
    # a label names the same configuration at every frame count
    csv = pd.read_csv(layer_run / "report" / "points.csv")
    for _, g in csv.groupby(T.VARIANT):
        assert len(g[list(HTTM)].drop_duplicates()) == 1
    assert "## Variants" in (layer_run / "report" / "report.md").read_text()


def test_the_speedup_pivot_uses_the_short_labels(layer_run: Path, reported: Output) -> None:
    piv = T.pivot_table(load(layer_run), columns=T.VARIANT)
    assert piv is not None and list(piv.index) == [8, 16]
    assert list(piv.columns[:2]) == ["vggt", "httm#1"] and "tome" in piv.columns
    assert "Speedup by frames:" in reported.out
    pivot = next(t for t in _tables(reported.out) if "frames=8" in t[0])  # transposed: too many variants
    assert _header(pivot) == ["method", "frames=8", "frames=16"]


def test_variants_number_a_methods_settings_in_parameter_order() -> None:
    pts = pd.DataFrame({C.METHOD: ["sdpa", "httm", "httm", "httm", "httm"], "seq_len": [1, 1, 2, 1, 2],
                        "r": [None, 0.5, 0.5, 0.25, 0.25]})
    suite = {"parameters": {"workload": ["seq_len"], "common": [], "methods": {"sdpa": [], "httm": ["r"]}}}
    labels, legend = T.variants(pts, suite)
    assert list(labels) == ["sdpa", "httm#2", "httm#2", "httm#1", "httm#1"]
    assert legend["httm"].to_dict("list") == {T.VARIANT: ["httm#1", "httm#2"], "r": ["0.25", "0.5"]}


def test_lean_plain_vggt_is_named_vggt_star_and_stays_first() -> None:
    # the papers' baseline VGGT* is plain VGGT with lean: true; a lean HTTM keeps its own name
    pts = pd.DataFrame({C.METHOD: ["httm", "vggt", "httm", "vggt"], "lean": [True, True, True, False],
                        "frames": [8, 8, 16, 16], "r": [0.5, None, 0.25, None]})
    suite = {"reference": "vggt", "parameters": {"workload": ["frames", "lean"], "common": [],
                                                 "methods": {"vggt": [], "httm": ["r"]}}}
    labels, _ = T.variants(pts[pts["lean"]], suite)
    assert list(labels) == ["httm#2", "vggt*", "httm#1"]
    assert T.method_label(pts.iloc[1], []) == "vggt*" and T.method_label(pts.iloc[3], []) == "vggt"
    assert T.method_label(pts.iloc[0], ["r"]) == "httm r=0.5"
    assert sorted(["httm#1", "vggt*", "httm#2"], key=T.variant_order("vggt")) == ["vggt*", "httm#1", "httm#2"]


def test_failed_points_are_cut_to_fit_the_terminal(reported: Output) -> None:
    failed = next(t for t in _tables(reported.out) if "status" in _header(t))
    assert _header(failed) == ["method", "frames", "status", "error"]
    assert _header([failed[2]])[:3] == ["httm#8", "16", "failed"]
    assert "RuntimeError: xxx" in failed[2] and failed[2].rstrip(" |").endswith("…")
    assert max(len(line) for line in failed) <= 100


# ---------------------------------------------------------------------------- 17: figures


def test_the_overview_comes_first_and_plotting_warns_about_nothing(layer_run: Path, plotted: Output) -> None:
    assert plotted.warnings == [] and plotted.logs == [] and plotted.err == ""
    names = [Path(p).name for p in plotted.out.splitlines()]
    assert names[:2] == ["overview.png", "overview.svg"]
    assert {"speedup_vs_head_groups.png", "fid_attn_rel_err_vs_speedup.png"} <= set(names)
    svg = (layer_run / "plots" / "overview.svg").read_text()
    for text in ("frames=8", "frames=16", "Pareto front", "fid_attn_rel_err", "vggt"):
        assert text in svg  # one panel per workload setting, the headline fidelity metric, the front


def test_the_toy_run_plots_without_warnings_on_the_console(tmp_path: Path, caplog, capfd) -> None:
    with warnings.catch_warnings(record=True) as caught, caplog.at_level(logging.WARNING):
        warnings.simplefilter("always")
        paths = P.plot_run(make_run(tmp_path / "toy"))
    assert [str(w.message) for w in caught] == []
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
    assert capfd.readouterr().err == ""
    assert paths[0].name == "overview.png"


def test_a_long_legend_does_not_squeeze_the_axes(layer_run: Path) -> None:
    run = load(layer_run)
    pts = T.add_speedup(run.points, run.suite)
    pts = pts[pts[C.STATUS] == C.OK]
    axes = T.swept_axes(pts)
    specific = set(T.method_specific_params(pts, run.suite))
    fig = P._metric_vs_axis(pts, "query_merge", C.SPEEDUP, specific, axes, "vggt", False)
    assert fig is not None
    fig.canvas.draw()
    width_in = fig.get_size_inches()[0]
    legend = fig.legends[0]
    assert [t.get_text() for t in legend.get_texts()] == [
        "vggt (reference)", "httm kv_merge=0.3", "httm kv_merge=0.5"]  # only what tells the lines apart
    for ax in fig.axes:
        assert ax.get_position().width * width_in == pytest.approx(P.PANEL_SIZE_IN[0])
        assert ax.get_window_extent().x1 < legend.get_window_extent().x0  # beside the panels
        assert ax.get_legend() is None  # one legend per figure, not one per panel
    assert any("httm lines: outlier_frac=0 head_groups=16 n_s=64 n_t=8" in t.get_text() for t in fig.texts)
    P.plt.close(fig)


def test_plot_says_where_the_figures_are_in_one_line(tmp_path: Path, capsys) -> None:
    run_dir = make_run(tmp_path / "toy")
    assert main(["plot", str(run_dir)]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    n = len(list((run_dir / "plots").glob("*.png")))
    assert out == [f"plots: {n} figure(s) (PNG + SVG) in {run_dir / 'plots'}/; start with overview.png"]


# ---------------------------------------------------------------------------- 18: report.html


def _img_sources(page: str) -> list[str]:
    return re.findall(r'<img [^>]*src="([^"]*)"', page)


def test_report_html_is_self_contained_with_every_table_and_figure(layer_run: Path, reported: Output) -> None:
    page = (layer_run / "report" / "report.html").read_text()
    sources = _img_sources(page)
    pngs = sorted((layer_run / "plots").glob("*.png"))
    assert len(sources) == len(pngs) > 1
    assert all(s.startswith("data:image/png;base64,") for s in sources)
    assert base64.b64decode(sources[0].split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    assert page.index('id="fig-overview"') < page.index('id="results"')  # the overview first
    assert not re.search(r'(src|href)="(https?:|file:|/|\.\./)', page)  # nothing outside the page
    for section in ("results", "variants", "pivot", "failed", "timing", "metrics", "environment", "run"):
        assert f'id="{section}"' in page
    for cls in ("results", "legend", "pivot", "failed", "kv"):
        assert f'<table class="{cls}">' in page
    assert "RuntimeError" in page and "Toy CPU" in page and "time.perf_counter" in page
    assert "harness run suites/layer.yaml" in page  # how it was run
    assert "httm#14" in page and "fid_merge_sim_p10" in page


def test_report_html_draws_its_own_figures_when_the_run_has_none(tmp_path: Path, capsys) -> None:
    run_dir = make_run(tmp_path / "toy")
    report(run_dir)  # no plots/ yet
    assert not (run_dir / "plots").exists()  # the report does not write figures into the run
    page = (run_dir / "report" / "report.html").read_text()
    assert 'id="fig-overview"' in page and len(_img_sources(page)) > 1


def _chromium() -> str | None:
    return next((p for p in (shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome"))
                 if p), None)


@pytest.mark.skipif(_chromium() is None, reason="no chromium binary on PATH (Debian: apt-get install "
                                                "chromium); report.html is still checked structurally")
def test_report_html_renders_every_figure_in_a_headless_browser(layer_run: Path, reported: Output,
                                                                tmp_path: Path) -> None:
    html_path = layer_run / "report" / "report.html"
    n_figures = len(_img_sources(html_path.read_text()))
    cmd = [_chromium(), "--headless", "--disable-gpu", "--no-sandbox", "--no-first-run",
           "--disable-extensions", "--virtual-time-budget=10000", f"--user-data-dir={tmp_path / 'profile'}",
           "--dump-dom", html_path.resolve().as_uri()]
    dom = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=True).stdout
    body = re.search(r"<body[^>]*>", dom)
    assert body is not None, dom[:500]
    assert f'data-figures="{n_figures}"' in body.group(0)
    assert f'data-figures-loaded="{n_figures}"' in body.group(0)  # every <img> decoded (naturalWidth > 0)
    assert "httm#1" in dom and "Failed points" in dom


# ---------------------------------------------------------------------------- 19: run status

ARGV = ["harness", "run", "suites/toy.yaml", "--out", "RUN", "--set", "seq_len=[128,256]"]


def test_report_says_a_run_is_incomplete_with_the_expected_total(tmp_path: Path, capsys) -> None:
    run_dir = toy_run(tmp_path / "part", n_points=9, argv=ARGV)
    report(run_dir)
    out, err = capsys.readouterr()
    assert "warning: the run is incomplete: 7 of 9 points recorded, 2 missing" in err
    assert f"finish it with: harness run suites/toy.yaml --set 'seq_len=[128,256]' --resume {run_dir}" in err
    assert "points: 7 of 9 expected (6 ok, 1 not ok)" in out
    assert "the run is incomplete: 7 of 9 points" in (run_dir / "report" / "report.md").read_text()
    assert "the run is incomplete" in (run_dir / "report" / "report.html").read_text()


def test_report_and_plot_say_a_run_is_still_running_without_touching_its_lock(tmp_path: Path,
                                                                              capsys) -> None:
    run_dir = toy_run(tmp_path / "live", n_points=12)
    with RunLock(run_dir):
        lock_text = (run_dir / ".lock").read_text()
        assert main(["report", str(run_dir)]) == 0
        err = capsys.readouterr().err
        assert "warning: the run is still running (pid" in err and "7 of 12 points recorded so far" in err
        assert main(["plot", str(run_dir)]) == 0
        assert "warning: the run is still running" in capsys.readouterr().err
        assert (run_dir / ".lock").read_text() == lock_text  # read only
        assert lock_holder(run_dir) == lock_text.strip()
    assert lock_holder(run_dir) is None and run_status(load(run_dir)).running is None


def test_report_warns_on_duplicate_rows(tmp_path: Path, capsys) -> None:
    run_dir = toy_run(tmp_path / "dup", n_points=7)
    log = run_dir / "points.jsonl"
    first = log.read_text().splitlines()[0]
    with open(log, "a") as f:
        f.write(first + "\n")
    report(run_dir)
    err = capsys.readouterr().err
    h = json.loads(first)[C.HASH]
    assert f"warning: 1 duplicate row(s) in the points log: point_hash {h[:8]} (2 rows)" in err
    assert "incomplete" not in err  # a duplicate counts once towards the expected total


def test_a_complete_run_gets_no_warning(reported: Output) -> None:
    assert reported.err == ""


def test_plot_explains_when_there_is_nothing_to_plot(tmp_path: Path, capsys) -> None:
    single = make_run(tmp_path / "one", single=True)
    assert main(["plot", str(single)]) == 0
    out, err = capsys.readouterr()
    assert out == ""
    assert f"nothing to plot in {single}: only one point finished ok" in err
    failed = make_run(tmp_path / "failed")
    lines = [json.loads(x) for x in (failed / "points.jsonl").read_text().splitlines()]
    with open(failed / "points.jsonl", "w") as f:
        for row in lines:
            f.write(json.dumps({**row, C.STATUS: C.FAILED}) + "\n")
    assert main(["plot", str(failed)]) == 0
    assert f"none of the {len(lines)} point(s) finished ok ({len(lines)} failed)" in capsys.readouterr().err


def test_plot_and_report_of_an_empty_run_say_no_point_was_recorded(tmp_path: Path, capsys) -> None:
    run_dir = tmp_path / "empty"
    manifest = {"run_id": "e", "suite": "layer", "n_points": 5}
    RunWriter.create(run_dir, manifest, LAYER_SUITE, {}, LAYER_METRICS)
    assert main(["plot", str(run_dir)]) == 0
    err = capsys.readouterr().err
    assert "the run is incomplete: 0 of 5 points recorded, 5 missing" in err
    assert "nothing to plot" in err and "no point has been recorded yet" in err
    assert main(["report", str(run_dir)]) == 0
    out, err = capsys.readouterr()
    assert "No point finished ok." in out and "0 of 5 points recorded" in err
