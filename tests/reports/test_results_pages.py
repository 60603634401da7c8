"""Results pages (reports.pages): a tiny real run added as a page, its header and tables checked
against the run's own files, check's verdicts on drift, user errors, the README block, and the
repository's committed pages against their data."""

from __future__ import annotations

import datetime as dt
import json
import shlex
import shutil
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from harness.cli import main as harness_main
from harness.store import RunLock
from reports import tables as T
from reports.pages import GLANCE_END, GLANCE_START, main

REPO = Path(__file__).resolve().parents[2]
TINY_SUITE = """\
name: tiny-attention
workload: attention
reference: sdpa
fixed: {batch: 1, heads: 2, head_dim: 16, seed: 0, device: cpu, dtype: float32}
sweep: {seq_len: [32, 64]}
methods: {sdpa: {}, math: {}}
timing: {warmup_n: 0, min_samples: 2, max_samples: 3, budget_s: 0.01}
metrics: {evaluate: true}
"""
COMMIT = "0123456789abcdef0123456789abcdef01234567"  # written into the run's env.json
SLUG = "tiny"
TITLE = "Tiny attention check"
DATA = {"run.json", "env.json", "suite.resolved.yaml", "metrics.json", "points.parquet"}
MAX_DATA_BYTES = 1_000_000


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished 4-point attention run, its env.json naming a known commit with a dirty tree."""
    base = tmp_path_factory.mktemp("run")
    suite = base / "tiny.yaml"
    suite.write_text(TINY_SUITE)
    out = base / "run"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert harness_main(["run", str(suite), "--out", str(out), "--no-report", "-q"]) == 0
    finally:
        torch.set_num_threads(threads)
    env = json.loads((out / "env.json").read_text())
    env.update(git_commit=COMMIT, git_dirty=True)
    (out / "env.json").write_text(json.dumps(env))
    return out


@pytest.fixture(scope="module")
def built(run_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A results folder holding the tiny run added as page ``tiny``."""
    root = tmp_path_factory.mktemp("built") / "results"
    assert main(["add", str(run_dir), "--page", SLUG, "--title", TITLE, "--root", str(root)]) == 0
    return root


@pytest.fixture
def root(built: Path, tmp_path: Path) -> Path:
    """A private copy of the built results folder."""
    return Path(shutil.copytree(built, tmp_path / "results"))


def block(text: str, opening: str) -> str:
    """The lines between ``opening`` and the next closing marker (the test's own reading)."""
    lines = text.splitlines()
    start = lines.index(opening)
    end = next(i for i in range(start + 1, len(lines)) if lines[i].startswith("<!-- /generated:"))
    return "\n".join(lines[start + 1:end])


def table_rows(text: str) -> list[dict[str, str]]:
    """The rows of the first Markdown table in ``text`` as {header: cell}."""
    rows = [ln for ln in text.splitlines() if ln.startswith("|")]
    cells = [[c.strip() for c in ln.strip("|").split("|")] for ln in rows]
    return [dict(zip(cells[0], r)) for r in cells[2:]]


def points(root: Path) -> pd.DataFrame:
    return pd.read_parquet(root / SLUG / "points.parquet")


def expected_speedup(pts: pd.DataFrame) -> dict[int, float]:
    """math's speedup per seq_len: sdpa's median latency over math's, at the same seq_len."""
    lat = pts.set_index(["method", "seq_len"])["latency_median_ms"]
    return {int(s): lat[("sdpa", s)] / lat[("math", s)] for s in sorted(pts["seq_len"].unique())}


def page(root: Path) -> str:
    return (root / f"{SLUG}.md").read_text()


# ---------------------------------------------------------------------------- what a page shows


def test_add_copies_only_the_small_files_of_the_run(root):
    files = {p.name for p in (root / SLUG).iterdir()}
    assert files == DATA | {"overview.png"}
    assert sum(p.stat().st_size for p in (root / SLUG).iterdir()) < MAX_DATA_BYTES
    assert page(root).startswith(f"# {TITLE}\n")


def test_header_names_date_machine_commit_and_command_from_the_run_files(root, run_dir):
    manifest = json.loads((run_dir / "run.json").read_text())
    env = json.loads((run_dir / "env.json").read_text())
    header = block(page(root), "<!-- generated:header -->")
    started = dt.datetime.fromisoformat(manifest["created_at"]).astimezone(dt.timezone.utc)
    assert started.strftime("%Y-%m-%d %H:%M:%S UTC") in header
    assert f"`{COMMIT}` (with uncommitted changes)" in header
    assert f"`{shlex.join(manifest['argv'])}`" in header
    assert manifest["argv"][:2] == ["harness", "run"]
    assert f"CPU {env['cpu_model']}" in header and f"torch {env['torch']}" in header
    assert "- **Suite**: `tiny-attention`, no preset, reference method `sdpa`; points: 4 (4 ok, 0 not ok)" \
        in header


def test_speedup_table_is_the_reference_median_over_the_point_median(root):
    rows = table_rows(block(page(root), "<!-- generated:table speedup -->"))
    expected = expected_speedup(points(root))
    assert [int(r["seq_len"]) for r in rows] == sorted(expected)
    for r in rows:
        assert r["sdpa"] == "1"
        assert r["math"] == f"{expected[int(r['seq_len'])]:.3g}"


def test_summary_table_shows_median_iqr_and_speedup_of_every_point(root):
    rows = table_rows(block(page(root), "<!-- generated:table summary -->"))
    pts = points(root).set_index(["method", "seq_len"])
    speedup = expected_speedup(points(root))
    assert len(rows) == len(pts) == 4
    for r in rows:
        p = pts.loc[(r["method"], int(r["seq_len"]))]
        mark = " !" if str(p.get("stable")) == "False" else ""  # a point judged unstable is marked
        assert r["latency ms"] == f"{p['latency_median_ms']:.3g} ± {p['latency_iqr_ms']:.2g}{mark}"
        want = 1.0 if r["method"] == "sdpa" else speedup[int(r["seq_len"])]
        assert r["speedup"] == f"{want:.3g}"


def test_index_lists_every_page_on_one_line(root, run_dir):
    assert main(["add", str(run_dir), "--page", "tiny-again", "--root", str(root)]) == 0
    index = block((root / "index.md").read_text(), "<!-- generated:index -->")
    lines = [ln for ln in index.splitlines() if ln.strip()]
    assert len(lines) == 2  # in file-name order
    assert lines[0].startswith("- [tiny-attention](tiny-again.md): suite `tiny-attention`, no preset;")
    assert lines[1].startswith(f"- [{TITLE}]({SLUG}.md): suite `tiny-attention`, no preset;")


# ---------------------------------------------------------------------------- build and check


def test_check_passes_right_after_build(root, capsys):
    assert main(["build", "--root", str(root)]) == 0
    assert main(["check", "--root", str(root)]) == 0
    assert "matches its data" in capsys.readouterr().out


def test_build_is_deterministic(root):
    assert main(["build", "--root", str(root)]) == 0
    first = [(root / n).read_bytes() for n in (f"{SLUG}.md", "index.md")]
    assert main(["build", "--root", str(root)]) == 0
    assert [(root / n).read_bytes() for n in (f"{SLUG}.md", "index.md")] == first


def test_prose_outside_the_markers_survives_build_byte_for_byte(root):
    path = root / f"{SLUG}.md"
    prose = "Hand-written:  two spaces,\ttab, trailing space \n\n"
    text = path.read_text()
    with_prose = prose + text.replace("## Speedup\n", "## Speedup\n\n" + prose) + "\nThe end. \n"
    edited = with_prose.replace("| math ", "| math-edited ", 1)  # a generated cell the build restores
    path.write_text(edited)
    assert main(["build", "--root", str(root)]) == 0
    assert path.read_text() == with_prose


def test_check_fails_naming_page_and_block_when_a_table_number_is_edited(root, capsys):
    path = root / f"{SLUG}.md"
    text = path.read_text()
    speedup = block(text, "<!-- generated:table speedup -->")
    cell = table_rows(speedup)[0]["math"]
    path.write_text(text.replace(speedup, speedup.replace(f"| {cell} ", "| 123 ", 1)))
    assert main(["check", "--root", str(root)]) == 1
    err = capsys.readouterr().err
    assert f"{path}:" in err and "block 'table speedup' differs from its data" in err
    assert "block 'table summary'" not in err


def test_check_fails_when_a_value_in_points_parquet_changes(root, capsys):
    pts = points(root)
    pts.loc[(pts["method"] == "math") & (pts["seq_len"] == 64), "latency_median_ms"] *= 10
    pts.to_parquet(root / SLUG / "points.parquet", index=False)
    assert main(["check", "--root", str(root)]) == 1
    err = capsys.readouterr().err
    assert "block 'table speedup' differs" in err and "block 'table summary' differs" in err
    assert f"{root / SLUG}.md" in err


def test_check_exits_2_naming_a_missing_data_file(root, capsys):
    (root / SLUG / "points.parquet").unlink()
    assert main(["check", "--root", str(root)]) == 2
    err = capsys.readouterr().err
    assert f"{root / SLUG / 'points.parquet'} is missing" in err and "Traceback" not in err


def test_check_exits_2_naming_a_damaged_parquet(root, capsys):
    (root / SLUG / "points.parquet").write_bytes(b"not a parquet file")
    assert main(["check", "--root", str(root)]) == 2
    err = capsys.readouterr().err
    assert f"{root / SLUG / 'points.parquet'} cannot be read" in err and "Traceback" not in err


def test_a_marker_opened_and_never_closed_exits_2_naming_file_and_line(root, capsys):
    path = root / f"{SLUG}.md"
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join([*lines, "\n", "<!-- generated:table failed -->\n", "text\n"]))
    assert main(["build", "--root", str(root)]) == 2
    err = capsys.readouterr().err
    assert f"{path}:{len(lines) + 2}:" in err and "never closed" in err


def test_check_reports_a_missing_figure(root, capsys):
    (root / SLUG / "overview.png").unlink()
    assert main(["check", "--root", str(root)]) == 1
    assert "block 'figure overview'" in capsys.readouterr().err


# ---------------------------------------------------------------------------- add refuses


def test_add_refuses_a_path_that_is_not_a_run_directory(tmp_path, capsys):
    assert main(["add", str(tmp_path), "--page", "x", "--root", str(tmp_path / "results")]) == 2
    err = capsys.readouterr().err
    assert "is not a run directory" in err and not (tmp_path / "results" / "x.md").exists()


def test_add_refuses_an_incomplete_run(run_dir, tmp_path, capsys):
    copy = Path(shutil.copytree(run_dir, tmp_path / "run"))
    manifest = json.loads((copy / "run.json").read_text())
    manifest["n_points"] += 1
    (copy / "run.json").write_text(json.dumps(manifest))
    assert main(["add", str(copy), "--page", "x", "--root", str(tmp_path / "results")]) == 2
    assert "the run is incomplete" in capsys.readouterr().err


def test_add_refuses_a_run_still_being_written(run_dir, tmp_path, capsys):
    copy = Path(shutil.copytree(run_dir, tmp_path / "run"))
    with RunLock(copy):
        assert main(["add", str(copy), "--page", "x", "--root", str(tmp_path / "results")]) == 2
    assert "still running" in capsys.readouterr().err


# ---------------------------------------------------------------------------- the README block


@pytest.fixture
def readme(tmp_path: Path) -> Path:
    path = tmp_path / "README.md"
    path.write_text(f"# Project\n\n{GLANCE_START}\n{GLANCE_END}\n\nEnd.\n")
    return path


def test_glance_writes_the_fastest_variants_the_figure_and_a_link(root, readme):
    assert main(["glance", "--page", SLUG, "--readme", str(readme), "--root", str(root)]) == 0
    text = readme.read_text()
    assert text.startswith("# Project\n\n<!-- results-at-a-glance:start -->\n") and text.endswith("\nEnd.\n")
    body = text.split("<!-- results-at-a-glance:start -->")[1].split("<!-- results-at-a-glance:end -->")[0]
    rows = table_rows(body)
    assert [r["method"] for r in rows] == ["sdpa", "math"] and len(rows) <= 8
    assert rows[1]["speedup"] == f"{expected_speedup(points(root))[64]:.3g}"
    figure = body.split("![overview](")[1].split(")")[0]
    assert (readme.parent / figure).resolve() == (root / SLUG / "overview.png").resolve()
    assert f"](results/{SLUG}.md)" in body
    assert main(["check", "--root", str(root), "--readme", str(readme)]) == 0


def test_check_fails_when_the_readme_block_drifts(root, readme, capsys):
    assert main(["glance", "--page", SLUG, "--readme", str(readme), "--root", str(root)]) == 0
    readme.write_text(readme.read_text().replace("| sdpa ", "| sdpa-edited ", 1))
    assert main(["check", "--root", str(root), "--readme", str(readme)]) == 1
    assert f"{readme}:" in capsys.readouterr().err


def test_glance_of_a_page_that_does_not_exist_exits_2(root, readme, capsys):
    assert main(["glance", "--page", "nope", "--readme", str(readme), "--root", str(root)]) == 2
    assert f"{root / 'nope.md'} does not exist" in capsys.readouterr().err


# ---------------------------------------------------------------------------- the repository's pages


def test_the_repositorys_results_pages_match_their_data(capsys):
    results = REPO / "docs" / "results"
    assert results.is_dir(), f"{results} is missing"
    code = main(["check", "--root", str(results), "--readme", str(REPO / "README.md")])
    assert code == 0, capsys.readouterr().err


@pytest.mark.parametrize("slug", ["vggt-methods-layer-cpu", "vggt-methods-proxy"])
def test_the_work_table_gives_each_variants_flops_against_the_reference_and_its_bops_fraction(slug):
    # recomputed here from points.parquet: a ratio against the wrong row (the point itself, the
    # first row) or of the wrong column would not match the committed table
    results = REPO / "docs" / "results"
    pts = pd.read_parquet(results / slug / "points.parquet")
    pts = pts[pts["status"] == "ok"].copy()
    pts[T.VARIANT] = T.variants(pts, yaml_suite(results / slug))[0]
    rows = table_rows(block((results / f"{slug}.md").read_text(), "<!-- generated:table work -->"))
    assert {r["variant"] for r in rows} == set(pts[T.VARIANT])
    ref = float(pts.loc[pts["method"] == "vggt", "work_attn_flops"].iloc[0])
    by_variant = pts.set_index(T.VARIANT)
    for r in rows:
        p = by_variant.loc[r["variant"]]
        assert r["attn FLOPs / reference"] == T.fmt_num(p["work_attn_flops"] / ref), r["variant"]
        assert r["work_tokens_kv_frac"] == T.fmt_num(p["work_tokens_kv_frac"])
        if "BOPs / fp32" in r and r["BOPs / fp32"]:
            assert r["BOPs / fp32"] == T.fmt_num(p["work_bops"] / p["work_bops_fp"])
    if slug == "vggt-methods-proxy":  # W4A4 is 1/64 of fp32's BOPs, W4A8 1/32
        bops = {r["variant"]: r["BOPs / fp32"] for r in rows if r["BOPs / fp32"]}
        assert sorted(bops.values()) == ["0.0156", "0.0156", "0.0312"]


def test_the_accuracy_table_gives_each_variants_parameters_and_quality_without_latency():
    # recomputed from points.parquet: a row of another point, a parameter of another variant or a
    # latency column would not match the committed hess-claims table
    results = REPO / "docs" / "results"
    pts = pd.read_parquet(results / "hess-claims" / "points.parquet")
    pts = pts[pts["status"] == "ok"].copy()
    pts[T.VARIANT] = T.variants(pts, yaml_suite(results / "hess-claims"))[0]
    rows = table_rows(block((results / "hess-claims.md").read_text(), "<!-- generated:table accuracy -->"))
    assert sorted(r["variant"] for r in rows) == sorted(pts[T.VARIANT]) and len(rows) == 16
    assert not any(k.startswith("latency") or k == "speedup" for k in rows[0])
    by_variant = pts.set_index(T.VARIANT)
    for r in rows:
        p = by_variant.loc[r["variant"]]
        assert r["fid_depth_rel_err"] == T.fmt_num(p["fid_depth_rel_err"]), r["variant"]
        assert r["q_depth_abs_rel"] == T.fmt_num(p["q_depth_abs_rel"])
        if r["variant"] == "vggt":
            assert r["hess_sparsity"] == r["hess_allocation"] == ""
        else:
            assert (r["hess_sparsity"], r["hess_allocation"], r["hess_score"]) == (
                T.fmt_value(p["hess_sparsity"]), p["hess_allocation"], p["hess_score"])


def yaml_suite(data_dir: Path) -> dict:
    """The resolved suite a page's run was made from."""
    return yaml.safe_load((data_dir / "suite.resolved.yaml").read_text())
