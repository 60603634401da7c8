"""Results pages of the docs site, regenerated from the run files committed beside them.

Layout under ``docs/results/`` (``--root``)::

    index.md            one line per page (a generated block)
    <slug>.md           a page: hand-written prose around generated blocks
    <slug>/             its data: a trimmed copy of one run directory (run.json, env.json,
                        suite.resolved.yaml, metrics.json, points.parquet) and the figures drawn
                        from it (overview.png, ...)

A generated block sits between two marker lines, e.g. ``<!-- generated:table speedup -->`` and
``<!-- /generated:table -->``; everything outside the markers is prose that ``build`` keeps byte
for byte. Blocks: ``header`` (date, machine, commit, suite and preset, the command), ``table NAME``
(:data:`TABLES`), ``figure NAME`` (a figure of :mod:`reports.plots`, e.g. ``overview``) and, on the
index, ``index``. The tables are the ones the terminal report prints (:mod:`reports.terminal`), as
Markdown (tabulate, github format) with the same rounding. Rendering is deterministic: the same
data gives the same bytes.

``python -m reports.pages``:

- ``add RUN_DIR --page SLUG [--title TEXT]``: copy a finished run's small files into ``SLUG/``,
  create ``SLUG.md`` from a template when it does not exist, build it and the index;
- ``build``: regenerate every block of every page and the index, redraw the figures;
- ``check``: exit 1 naming each page and block whose committed text differs from its data;
- ``glance --page SLUG --readme README.md``: the README's "results at a glance" block.

Exit codes: 0 done, 1 a committed block drifted from its data (check), 2 a user error (one
paragraph naming the file and what to do).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import difflib
import os
import re
import shlex
import shutil
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from harness.measure import env as E
from harness.store import (
    ENV_FILE,
    MANIFEST_FILE,
    METRICS_FILE,
    POINTS_FILE,
    RESUMED_KEY,
    SUITE_FILE,
    RunData,
    RunDirError,
    load,
)
from harness.store import columns as C
from reports import plots as P
from reports import swin_claims as SC
from reports import tables as T
from reports import terminal as TV
from reports.parts import ReportParts, env_summary, gather
from reports.status import run_status

ROOT = Path("docs/results")
INDEX = "index.md"
#: the files of a run directory a page keeps as they are; points.parquet is written from the logs
COPIED_FILES = (MANIFEST_FILE, ENV_FILE, SUITE_FILE, METRICS_FILE)
#: everything a page's data folder holds besides its figures (no samples, profiles or logs)
DATA_FILES = (*COPIED_FILES, POINTS_FILE)
FIGURE_SUFFIX = ".png"
PAGE_WIDTH = 160  # characters; a wider table drops its lowest-priority columns, as the terminal does
GLANCE_ROWS = 12  # the README block: at most this many methods (the vggt suite has 11)
SLUG = re.compile(r"[a-z0-9][a-z0-9._-]*")
OPEN = re.compile(r"<!--\s*generated:([a-z]+)(?:\s+([A-Za-z0-9_.-]+))?\s*-->")
CLOSE = re.compile(r"<!--\s*/generated:([a-z]+)\s*-->")
GLANCE_START = "<!-- results-at-a-glance:start -->"
GLANCE_END = "<!-- results-at-a-glance:end -->"
GLANCE_PAGE = re.compile(r"<!--\s*results page:\s*([a-z0-9][a-z0-9._-]*)\s*-->")
BUILD_COMMAND = "python -m reports.pages build"
EXIT_OK, EXIT_DRIFT, EXIT_USER = 0, 1, 2


class PageError(Exception):
    """A user error (no such page, missing or damaged data, a marker never closed): one paragraph."""


# ---------------------------------------------------------------------------- markers


@dataclass(frozen=True)
class Block:
    """One generated block: its marker lines (kept verbatim), kind, argument and body."""

    kind: str  # header, table, figure, index
    arg: str | None  # table or figure name
    line: int  # line number of the opening marker (1-based)
    open_line: str
    body: str
    close_line: str

    @property
    def name(self) -> str:
        """``header``, ``table speedup``: how messages name the block."""
        return f"{self.kind} {self.arg}" if self.arg else self.kind


Segment = str | Block


def parse(text: str, path: Path) -> list[Segment]:
    """Split a page into prose (str) and generated blocks; PageError for a marker never closed,
    a closing marker without its opening one, or nested blocks."""
    segments: list[Segment] = []
    prose: list[str] = []
    current: tuple[re.Match[str], int, str, list[str]] | None = None
    for number, line in enumerate(text.splitlines(keepends=True), start=1):
        stripped = line.strip()
        opened, closed = OPEN.fullmatch(stripped), CLOSE.fullmatch(stripped)
        if current is None:
            if closed:
                raise PageError(f"{path}:{number}: `{stripped}` closes a block that was never opened; "
                                "remove it or add its opening marker above the block's content")
            if opened:
                segments.append("".join(prose))
                prose, current = [], (opened, number, line, [])
            else:
                prose.append(line)
            continue
        match, start, open_line, body = current
        if opened:
            raise PageError(f"{path}:{start}: the block `{match.group(0)}` is not closed before the next one "
                            f"opens at line {number}; add `<!-- /generated:{match.group(1)} -->` after its "
                            "content")
        if closed:
            if closed.group(1) != match.group(1):
                raise PageError(f"{path}:{number}: `{stripped}` closes a {closed.group(1)} block, but the "
                                f"one open since line {start} is a {match.group(1)} block; write "
                                f"`<!-- /generated:{match.group(1)} -->`")
            segments.append(Block(match.group(1), match.group(2), start, open_line, "".join(body), line))
            current = None
        else:
            body.append(line)
    if current is not None:
        match, start = current[0], current[1]
        raise PageError(f"{path}:{start}: the block `{match.group(0)}` is opened and never closed; add "
                        f"`<!-- /generated:{match.group(1)} -->` on its own line after the block's content")
    segments.append("".join(prose))
    return [s for s in segments if s != ""]


def assemble(segments: Sequence[Segment]) -> str:
    """The page text again (prose verbatim, each block as its markers around its body)."""
    return "".join(s if isinstance(s, str) else s.open_line + s.body + s.close_line for s in segments)


def as_body(content: str) -> str:
    """A block's body: a blank line, the content, a blank line (Markdown needs them around tables)."""
    return "\n" + content.strip("\n") + "\n\n"


# ---------------------------------------------------------------------------- page data


@dataclass(frozen=True)
class Page:
    """A results page: ``<root>/<slug>.md`` and its data folder ``<root>/<slug>/``."""

    root: Path
    slug: str

    @property
    def path(self) -> Path:
        return self.root / f"{self.slug}.md"

    @property
    def data_dir(self) -> Path:
        return self.root / self.slug


@dataclass
class PageData:
    """A page's run and the report's parts computed from it (the same ones the terminal shows)."""

    page: Page
    run: RunData
    parts: ReportParts


def check_slug(slug: str) -> str:
    """``slug`` when it is a usable page name; PageError saying what is allowed otherwise."""
    if not SLUG.fullmatch(slug) or slug == Path(INDEX).stem:
        raise PageError(f"--page {slug!r} is not a page name: use lower-case letters, digits, '.', '_' and "
                        f"'-' (starting with a letter or digit), and not {Path(INDEX).stem!r}")
    return slug


def load_data(page: Page) -> PageData:
    """Load a page's committed data; PageError naming the missing or damaged file and what to do."""
    again = ("restore it from git, or add the run again with: python -m reports.pages add RUN_DIR "
             f"--page {page.slug}")
    if not page.data_dir.is_dir():
        raise PageError(f"{page.data_dir} is missing: the page {page.path} has no data folder; {again}")
    for name in DATA_FILES:
        if not (page.data_dir / name).is_file():
            raise PageError(f"{page.data_dir / name} is missing: page {page.path} is built from it; {again}")
    try:
        run = load(page.data_dir)
    except RunDirError as e:
        raise PageError(f"{e} (the data of page {page.path})") from None
    except (OSError, ValueError) as e:  # pyarrow's errors on a damaged parquet file are ValueErrors
        first = (str(e).splitlines() or [""])[0]
        raise PageError(f"{page.data_dir / POINTS_FILE} cannot be read ({type(e).__name__}: {first}); "
                        f"{again}") from None
    return PageData(page=page, run=run, parts=gather(run))


def find_pages(root: Path) -> list[Page]:
    """Every page under ``root``: a Markdown file other than the index with a generated block."""
    if not root.is_dir():
        raise PageError(f"{root} is not a folder: give the results folder with --root (default {ROOT})")
    return [Page(root, p.stem) for p in sorted(root.glob("*.md"))
            if p.name != INDEX and OPEN.search(read_text(p))]


def read_text(path: Path) -> str:
    """A page's text, line endings kept as they are."""
    try:
        with open(path, encoding="utf-8", newline="") as f:
            return f.read()
    except OSError as e:
        raise PageError(f"{path} cannot be read ({e.strerror}); check the path") from None


def write_text(path: Path, text: str) -> bool:
    """Write ``text`` when it differs from the file; return whether it was written."""
    if path.exists() and read_text(path) == text:
        return False
    with open(path, "w", encoding="utf-8", newline="") as f:
        f.write(text)
    return True


# ---------------------------------------------------------------------------- blocks


def run_time(manifest: dict) -> str:
    """When the run started (``created_at`` of run.json), as ``2025-06-01 04:51:12 UTC``."""
    stamp = manifest.get("created_at")
    try:
        when = _dt.datetime.fromisoformat(str(stamp))
    except ValueError:
        return str(stamp) if stamp else "not recorded"
    if when.tzinfo is not None:
        when = when.astimezone(_dt.timezone.utc)
        return when.strftime("%Y-%m-%d %H:%M:%S UTC")
    return when.strftime("%Y-%m-%d %H:%M:%S")


def command(manifest: dict) -> str:
    """The command line the run recorded (``argv`` of run.json), the program by its name only."""
    argv = [str(a) for a in manifest.get("argv") or []]
    if not argv:
        return "not recorded"
    return shlex.join([Path(argv[0]).name, *argv[1:]])


def commit_text(env: dict) -> str:
    """The checkout's commit and whether its tracked files had changes (env.json)."""
    commit = env.get(E.GIT_COMMIT)
    if not commit:
        return "not recorded (the harness did not run from a git checkout)"
    dirty = env.get(E.GIT_DIRTY)
    state = {True: "with uncommitted changes", False: "clean working tree"}.get(dirty, "tree state unknown")
    return f"`{commit}` ({state})"


def preset(manifest: dict) -> str:
    """``preset `cpu```, or ``no preset``."""
    return f"preset `{manifest['preset']}`" if manifest.get("preset") else "no preset"


def machine(env: dict) -> str:
    """The device in a few words: the GPU's name, else the CPU model."""
    return str(env.get(E.GPU_NAME) or env.get(E.CPU_MODEL) or "unknown machine")


def header(data: PageData) -> str:
    """The header block: date, machine, commit, suite and preset, the exact command."""
    run, parts = data.run, data.parts
    m = run.manifest
    resumed = (m.get(RESUMED_KEY) or []) + [r for shard in m.get("merged_from") or []
                                            for r in shard.get(RESUMED_KEY) or []]
    started = run_time(m) + (f" (resumed {len(resumed)} time(s))" if resumed else "")
    without_commit = {k: v for k, v in run.env.items() if k != E.GIT_COMMIT}  # on its own line below
    suite = f"`{run.suite.get('name') or m.get('suite')}`, {preset(m)}"
    if run.suite.get("reference"):
        suite += f", reference method `{run.suite['reference']}`"
    lines = [
        f"- **Run**: `{m.get('run_id')}`, started {started}",
        f"- **Machine**: {env_summary(without_commit, run.points)}",
        f"- **Commit**: {commit_text(run.env)}",
        f"- **Suite**: {suite}; points: {parts.points_line()}",
        f"- **Command**: `{command(m)}`",
        f"- **Data**: `{data.page.slug}/` ({', '.join(DATA_FILES)}); the tables and figures are made "
        f"from it by `{BUILD_COMMAND}`",
    ]
    return "\n".join(lines)


def summary_table(data: PageData) -> str:
    """One row per ok point: variant, workload setting, latency, speedup, quality and fidelity."""
    parts = data.parts
    if parts.summary.empty:
        return "_No point finished ok._"
    text, shown, left_out = TV.results_table(parts.summary, data.run.metrics, parts.axes, PAGE_WIDTH)
    notes = [TV.latency_note(parts.summary)] if C.LAT_MEDIAN in shown else []
    if C.SPEEDUP in shown:
        ref = data.run.suite.get("reference")
        notes.append(f"speedup: the median latency of the reference `{ref}` at the same workload setting / "
                     "the point's")
    if left_out:
        notes.append(f"other columns in `{data.page.slug}/{POINTS_FILE}`: {', '.join(left_out)}")
    return text + ("\n\n_" + "; ".join(notes) + "._" if notes else "")


def speedup_table(data: PageData) -> str:
    """Speedup by workload setting (rows) and variant (columns)."""
    piv = data.parts.pivot
    if piv is None:
        return ("_No speedup table: it needs a reference method, a swept workload setting and one point "
                "per setting and variant._")
    frame, _ = TV.pivot_frame(piv, PAGE_WIDTH)
    return T.to_markdown(frame) + f"\n\n_{data.parts.pivot_title} (× the reference's speed; > 1 is faster)._"


def variants_table(data: PageData) -> str:
    """Per method with several variants, the parameters that differ between them."""
    if not data.parts.legend:
        return "_Each method ran with one setting of its parameters._"
    return TV.legend(data.parts.legend, PAGE_WIDTH)


def accuracy_table(data: PageData) -> str:
    """One row per ok point: variant, the parameters that tell its method's variants apart, the
    workload setting, and every quality (``q_*``) and fidelity (``fid_*``) column the run recorded;
    no latency (for a page whose claims are about accuracy, or whose timings a loaded machine made)."""
    parts = data.parts
    table = parts.summary
    if table.empty:
        return "_No point finished ok._"
    cols = [c for c in table.columns if c.startswith((C.QUALITY_PREFIX, C.FIDELITY_PREFIX))
            and table[c].notna().any()]
    if not cols:
        return "_No quality or fidelity column was recorded._"
    params = {}
    for legend in parts.legend.values():
        for _, row in legend.iterrows():
            params[row[T.VARIANT]] = row.drop(T.VARIANT).to_dict()
    names = list(dict.fromkeys(k for p in params.values() for k in p))
    frame = pd.DataFrame({T.VARIANT: table[T.VARIANT].map(T.fmt_value)})
    for name in names:
        frame[name] = [params.get(v, {}).get(name, "") for v in table[T.VARIANT]]
    for axis in parts.axes:
        if axis != C.METHOD and axis in table.columns and axis not in frame.columns:
            frame[axis] = table[axis].map(T.fmt_value)
    for c in cols:
        frame[c] = table[c].map(T.fmt_num)
    return T.to_markdown(frame)


def claims_table(data: PageData) -> str:
    """MixA-Q's claims table (:mod:`reports.swin_claims`): one line per configuration, seeds pooled."""
    return SC.markdown(SC.summarize(data.run.points))


def importance_table(data: PageData) -> str:
    """MixA-Q's window-score diagnostics (:func:`reports.swin_claims.diagnostics`)."""
    return SC.diagnostics(data.run.points)


def failed_table(data: PageData) -> str:
    """The points that did not finish ok, with their error."""
    parts = data.parts
    if parts.failed.empty:
        return "_None: every point finished ok._"
    hide = T.method_specific_params(data.run.points, data.run.suite)
    return TV.failed_table(parts.failed, hide, PAGE_WIDTH)


#: table kinds of ``<!-- generated:table NAME -->``
#: the work table's columns, when a run has them: what each method kept and what it cost to set up
WORK_COLUMNS = tuple(f"{C.WORK_PREFIX}{name}" for name in (
    "tokens_q_frac", "tokens_kv_frac", "kept_block_frac", "match_flops", "index_recompute", "index_reuse",
    "calib_s", "bops"))


def work_table(data: PageData) -> str:
    """One row per ok point: variant, workload setting, the attention FLOPs as a fraction of the
    reference's at the same setting and the :data:`WORK_COLUMNS` the run recorded (with the BOPs as
    a fraction of fp32's): what each method kept, next to the summary's speed and fidelity."""
    parts = data.parts
    table = parts.summary
    work = [c for c in WORK_COLUMNS if c in table.columns and table[c].notna().any()]
    if table.empty or not work:
        return "_No work counter was recorded._"
    frame = pd.DataFrame({c: table[c].map(T.fmt_value) for c in (T.VARIANT, *parts.axes)})
    flops = f"{C.WORK_PREFIX}attn_flops"
    ref = data.run.suite.get("reference")
    refs = table[table[C.METHOD] == ref] if ref is not None else table.iloc[:0]
    if flops in table.columns and table[flops].notna().any() and not refs.empty:
        keys = [a for a in parts.axes if a != C.METHOD and a in table.columns]
        if keys:
            base = refs[[*keys, flops]].drop_duplicates(keys).rename(columns={flops: "__ref"})
            denom = table[keys].merge(base, on=keys, how="left")["__ref"].to_numpy(dtype=float)
        else:
            denom = float(refs[flops].iloc[0])
        frame["attn FLOPs / reference"] = (table[flops].to_numpy(dtype=float) / denom).tolist()
        frame["attn FLOPs / reference"] = frame["attn FLOPs / reference"].map(T.fmt_num)
    for c in work:
        frame[c] = table[c].map(T.fmt_num)
    bops, fp = f"{C.WORK_PREFIX}bops", f"{C.WORK_PREFIX}bops_fp"
    if bops in work and fp in table.columns:
        frame["BOPs / fp32"] = (table[bops] / table[fp]).map(T.fmt_num)
    return T.to_markdown(frame)


TABLES: dict[str, Callable[[PageData], str]] = {
    "summary": summary_table, "speedup": speedup_table, "variants": variants_table, "failed": failed_table,
    "work": work_table, "claims": claims_table, "importance": importance_table, "accuracy": accuracy_table,
}


def figure_link(data: PageData, name: str) -> str:
    """The Markdown image of a figure in the page's data folder."""
    return f"![{name}]({data.page.slug}/{name}{FIGURE_SUFFIX})"


def render(block: Block, data: PageData) -> str:
    """The body a page's block should have; PageError for a block kind or name that does not exist."""
    where = f"{data.page.path}:{block.line}"
    if block.kind == "header":
        return as_body(header(data))
    if block.kind == "table":
        if block.arg not in TABLES:
            raise PageError(f"{where}: no table named {block.arg!r}; tables: {', '.join(TABLES)}")
        return as_body(TABLES[block.arg](data))
    if block.kind == "figure":
        if not block.arg:
            raise PageError(f"{where}: a figure block names its figure, e.g. `<!-- generated:figure "
                            f"{P.OVERVIEW} -->`")
        return as_body(figure_link(data, block.arg))
    raise PageError(f"{where}: no block kind {block.kind!r} on a page; kinds: header, table NAME, "
                    "figure NAME")


def page_title(page: Page) -> str:
    """The page's first ``# `` heading (its slug when it has none)."""
    for line in read_text(page.path).splitlines():
        if line.startswith("# "):
            return line[2:].strip()
    return page.slug


def index_line(data: PageData) -> str:
    """One line of the index: title, suite and preset, machine, torch, date."""
    env, m = data.run.env, data.run.manifest
    torch = f", torch {env.get(E.TORCH)}" if env.get(E.TORCH) else ""
    return (f"- [{page_title(data.page)}]({data.page.slug}.md): suite `{data.run.suite.get('name')}`, "
            f"{preset(m)}; {machine(env)}{torch}; {run_time(m)}")


# ---------------------------------------------------------------------------- the README block


def relative(target: Path, start: Path) -> str:
    """A link from a file in ``start`` to ``target`` (forward slashes)."""
    return Path(os.path.relpath(target.resolve(), start.resolve())).as_posix()


def largest_setting(table: pd.DataFrame, axes: Sequence[str]) -> pd.DataFrame:
    """The rows of the last workload setting in sort order (the largest values of the axes)."""
    if not axes or table.empty:
        return table
    keys = [tuple(T.order_key(r[a]) for a in axes) for _, r in table.iterrows()]
    last = max(keys)
    return table[[k == last for k in keys]]


def fastest_per_method(rows: pd.DataFrame, reference: str | None) -> pd.DataFrame:
    """The fastest variant of each method (highest speedup, else lowest latency), reference first."""
    by = C.SPEEDUP if C.SPEEDUP in rows.columns and rows[C.SPEEDUP].notna().any() else C.LAT_MEDIAN
    best = rows.sort_values(by, ascending=(by == C.LAT_MEDIAN), kind="stable").drop_duplicates(C.METHOD)
    return T.sort_by_variant(best, reference).head(GLANCE_ROWS)


def glance(data: PageData, readme: Path) -> str:
    """The README block: the fastest variant of each method at the page's largest setting with
    speedup and the headline accuracy or fidelity column, the overview figure, a link to the page."""
    parts, run = data.parts, data.run
    base = readme.parent
    link = relative(data.page.path, base)
    lines = [f"<!-- results page: {data.page.slug} -->", ""]
    rows = largest_setting(parts.summary, parts.axes)
    setting = ", ".join(f"{a}={T.fmt_value(rows.iloc[0][a])}" for a in parts.axes) if len(rows) else ""
    at = f" at {setting}" if setting else ""
    # no date here: the README carries no dated figure; the page it links to says when and where
    lines.append(f"**[{page_title(data.page)}]({link})**: the fastest variant of each method{at} "
                 f"({machine(run.env)}).")
    if not rows.empty:
        best = fastest_per_method(rows, run.suite.get("reference"))
        acc = T.accuracy_columns(parts.summary, run.metrics)[:1]
        wanted = (T.VARIANT, C.METHOD, C.LAT_MEDIAN, C.LAT_IQR, C.SPEEDUP, *acc)
        keep = [c for c in wanted if c in best.columns]
        text, _, _ = TV.results_table(best[keep].reset_index(drop=True), run.metrics, [], PAGE_WIDTH)
        lines += ["", text]
    figure = data.page.data_dir / f"{P.OVERVIEW}{FIGURE_SUFFIX}"
    if figure.exists():
        lines += ["", f"![{P.OVERVIEW}]({relative(figure, base)})"]
    lines += ["", f"Every table, the figures, the machine and the exact command: [the results page]({link})."]
    return "\n".join(lines)


def glance_span(text: str, readme: Path) -> tuple[int, int] | None:
    """(start, end) offsets of the README block's body, None without markers; PageError when the
    start marker is never closed."""
    start = text.find(GLANCE_START)
    if start < 0:
        return None
    body = text.find("\n", start) + 1
    end = text.find(GLANCE_END, body)
    if body == 0 or end < 0:
        line = text.count("\n", 0, start) + 1
        raise PageError(f"{readme}:{line}: `{GLANCE_START}` is never closed; add `{GLANCE_END}` on its own "
                        "line after the block")
    return body, end


# ---------------------------------------------------------------------------- commands


@dataclass(frozen=True)
class Drift:
    """A committed block that differs from what its data gives."""

    path: Path
    block: str
    line: int
    diff: str

    def message(self) -> str:
        return f"{self.path}:{self.line}: block '{self.block}' differs from its data\n{self.diff}"


def diff_lines(old: str, new: str, limit: int = 8) -> str:
    """The first ``limit`` changed lines of a block, committed (-) against regenerated (+)."""
    changed = [ln for ln in difflib.unified_diff(old.splitlines(), new.splitlines(), lineterm="", n=0)
               if ln[:1] in "+-" and not ln.startswith(("+++", "---"))]
    more = f"\n    ... ({len(changed) - limit} more changed lines)" if len(changed) > limit else ""
    return "\n".join(f"    {ln}" for ln in changed[:limit]) + more


def regenerate(segments: Sequence[Segment],
               make: Callable[[Block], str]) -> tuple[list[Segment], list[Block]]:
    """The segments with every block's body replaced by ``make(block)``; and the blocks that changed."""
    out: list[Segment] = []
    changed: list[Block] = []
    for s in segments:
        if isinstance(s, Block):
            new = Block(s.kind, s.arg, s.line, s.open_line, make(s), s.close_line)
            if new.body != s.body:
                changed.append(s)
            out.append(new)
        else:
            out.append(s)
    return out, changed


def page_drift(data: PageData) -> tuple[str, list[Drift]]:
    """A page's regenerated text and its drifted blocks (a figure block also when its file is missing)."""
    path = data.page.path
    segments = parse(read_text(path), path)
    new, changed = regenerate(segments, lambda b: render(b, data))
    bodies = {b.line: b.body for b in new if isinstance(b, Block)}
    drifts = [Drift(path, b.name, b.line, diff_lines(b.body, bodies[b.line])) for b in changed]
    for b in new:
        if isinstance(b, Block) and b.kind == "figure" and b.arg:
            figure = data.page.data_dir / f"{b.arg}{FIGURE_SUFFIX}"
            if not figure.exists():
                drifts.append(Drift(path, b.name, b.line, f"    {figure} is missing (drawn by build)"))
    return assemble(new), drifts


def index_drift(root: Path, pages: Sequence[PageData]) -> tuple[str, list[Drift]]:
    """The index's regenerated text (created from a template when it does not exist) and its drift."""
    path = root / INDEX
    text = read_text(path) if path.exists() else INDEX_TEMPLATE
    lines = "\n".join(index_line(d) for d in pages) or "_No results page yet._"

    def make(block: Block) -> str:
        if block.kind != "index":
            raise PageError(f"{path}:{block.line}: the index holds one `<!-- generated:index -->` block only")
        return as_body(lines)

    segments = parse(text, path)
    if not any(isinstance(s, Block) for s in segments):
        raise PageError(f"{path} has no `<!-- generated:index -->` block: add one (and "
                        "`<!-- /generated:index -->`) where the list of pages goes")
    new, changed = regenerate(segments, make)
    bodies = {b.line: b.body for b in new if isinstance(b, Block)}
    return assemble(new), [Drift(path, b.name, b.line, diff_lines(b.body, bodies[b.line])) for b in changed]


def readme_drift(root: Path, readme: Path) -> tuple[str, list[Drift]]:
    """The README with its block regenerated from the page the block names, and its drift."""
    text = read_text(readme)
    span = glance_span(text, readme)
    if span is None:
        return text, []
    body = text[span[0]:span[1]]
    named = GLANCE_PAGE.search(body)
    if named is None:
        raise PageError(f"{readme}: the results-at-a-glance block does not say which page it shows; write it "
                        "with: python -m reports.pages glance --page SLUG --readme " + str(readme))
    data = load_data(Page(root, named.group(1)))
    new = glance(data, readme) + "\n"
    if new == body:
        return text, []
    line = text.count("\n", 0, span[0])
    drift = Drift(readme, "results-at-a-glance", line, diff_lines(body, new))
    return text[:span[0]] + new + text[span[1]:], [drift]


def draw_figures(data: PageData) -> list[Path]:
    """Draw the figures the page's blocks name into its data folder (PNG) and return those whose bytes
    changed; other PNG files there are removed (the folder is the command's: figures a page no
    longer shows do not linger)."""
    names = [b.arg for b in parse(read_text(data.page.path), data.page.path)
             if isinstance(b, Block) and b.kind == "figure" and b.arg]
    wanted = [data.page.data_dir / f"{n}{FIGURE_SUFFIX}" for n in dict.fromkeys(names)]
    for old in data.page.data_dir.glob(f"*{FIGURE_SUFFIX}"):
        if old not in wanted:
            old.unlink()
    if not wanted:
        return []
    written = []
    with tempfile.TemporaryDirectory(prefix="results-page-") as tmp:
        drawn = {p.name: p for p in P.plot_data(data.run, Path(tmp), formats=(FIGURE_SUFFIX[1:],))}
        for dest in wanted:
            if dest.name not in drawn:
                what = (", ".join(sorted(Path(n).stem for n in drawn)) if drawn
                        else f"none ({P.nothing_to_plot(data.run)})")
                raise PageError(f"{data.page.path}: the figure {dest.stem!r} cannot be drawn from this run; "
                                f"figures it has: {what}. Change the figure block's name")
            image = drawn[dest.name].read_bytes()
            if not dest.exists() or dest.read_bytes() != image:
                dest.write_bytes(image)
                written.append(dest)
    return written


def build(root: Path = ROOT, readme: Path | None = None, slugs: Sequence[str] | None = None) -> list[Path]:
    """Regenerate every block of the pages (all, or ``slugs``), redraw their figures, regenerate the
    index (and the README block when ``readme`` has one); return the files written."""
    pages = [load_data(p) for p in find_pages(root)]
    written: list[Path] = []
    for data in pages:
        if slugs is not None and data.page.slug not in slugs:
            continue
        text, _ = page_drift(data)
        if write_text(data.page.path, text):
            written.append(data.page.path)
        written += draw_figures(data)
    text, _ = index_drift(root, pages)
    if write_text(root / INDEX, text):
        written.append(root / INDEX)
    if readme is not None:
        text, drifts = readme_drift(root, readme)
        if drifts and write_text(readme, text):
            written.append(readme)
    return written


def check(root: Path = ROOT, readme: Path | None = None) -> list[Drift]:
    """Every block (pages, index, the README block when ``readme`` has one) that differs from its data."""
    pages = [load_data(p) for p in find_pages(root)]
    drifts = [d for data in pages for d in page_drift(data)[1]]
    if not (root / INDEX).exists():
        drifts.append(Drift(root / INDEX, "index", 0, f"    {root / INDEX} is missing (written by build)"))
    else:
        drifts += index_drift(root, pages)[1]
    if readme is not None:
        drifts += readme_drift(root, readme)[1]
    return drifts


def add(run_dir: Path, root: Path, slug: str, title: str | None = None) -> Page:
    """Copy a finished run's small files into ``root/slug/``, create the page from the template when
    it does not exist, and build it and the index. PageError for a run that is not finished."""
    page = Page(root, check_slug(slug))
    try:
        run = load(run_dir)
    except RunDirError as e:
        raise PageError(f"cannot add {run_dir} as page {slug!r}: {e}") from None
    status = run_status(run)
    if not status.complete or status.duplicates:
        raise PageError(f"cannot add {run_dir} as page {slug!r}: " + "; ".join(status.warnings())
                        + ". A page shows a finished run only")
    lacking = [name for name in COPIED_FILES if not (run_dir / name).is_file()]
    if lacking:
        raise PageError(f"cannot add {run_dir} as page {slug!r}: it has no {', '.join(lacking)}, which a "
                        "page keeps; add a run directory that `harness run` wrote whole")
    try:
        page.data_dir.mkdir(parents=True, exist_ok=True)
        for name in COPIED_FILES:
            shutil.copyfile(run_dir / name, page.data_dir / name)
        run.points.to_parquet(page.data_dir / POINTS_FILE, index=False)  # from the logs, the source of truth
    except OSError as e:
        raise PageError(f"cannot write {page.data_dir} ({e.strerror}); check that the folder is writable") \
            from None
    if not page.path.exists():
        write_text(page.path, template(gather(run), title))
    build(root, slugs=[slug])
    return page


# ---------------------------------------------------------------------------- templates


INDEX_TEMPLATE = f"""# Results

Each page reports one benchmark run: when and where it ran, the commit and the exact command,
and its tables and figures. The tables are not typed by hand: `{BUILD_COMMAND}` makes
them from the run files committed beside each page, and `python -m reports.pages check` (run by
the tests) fails when a committed table no longer matches its data.

<!-- generated:index -->
<!-- /generated:index -->
"""


def template(parts: ReportParts, title: str | None) -> str:
    """A new page: title, header, overview figure, the default tables; prose is the author's to write."""
    run = parts.run
    name = run.suite.get("name") or run.manifest.get("suite")
    title = title or (f"{name} ({run.manifest['preset']})" if run.manifest.get("preset") else str(name))
    about = str(run.suite.get("description") or f"the {name} suite").rstrip(".")
    lines = [
        f"# {title}", "",
        "<!-- generated:header -->", "<!-- /generated:header -->", "",
        f"What this run measures: {about}.", "",
        "<!-- Prose outside the generated blocks is yours: build keeps it byte for byte. -->", "",
        "## Overview", "",
        f"<!-- generated:figure {P.OVERVIEW} -->", "<!-- /generated:figure -->", "",
        "## Results", "",
        "<!-- generated:table summary -->", "<!-- /generated:table -->", "",
    ]
    if parts.legend:
        lines += ["## Variants", "", "<!-- generated:table variants -->", "<!-- /generated:table -->", ""]
    lines += ["## Speedup", "", "<!-- generated:table speedup -->", "<!-- /generated:table -->", ""]
    if not parts.failed.empty:
        lines += ["## Failed points", "", "<!-- generated:table failed -->", "<!-- /generated:table -->", ""]
    return "\n".join(lines)


# ---------------------------------------------------------------------------- command line


def parser() -> argparse.ArgumentParser:
    """``python -m reports.pages {add,build,check,glance}``."""
    ap = argparse.ArgumentParser(prog="python -m reports.pages", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)
    root = {"type": Path, "default": ROOT, "help": f"the results folder (default {ROOT})"}
    a = sub.add_parser("add", help="copy a finished run's small files into a page and build it")
    a.add_argument("run_dir", type=Path, metavar="RUN_DIR")
    a.add_argument("--page", required=True, metavar="SLUG", help="the page's name (docs/results/SLUG.md)")
    a.add_argument("--title", help="the title of a new page")
    a.add_argument("--root", **root)
    b = sub.add_parser("build", help="regenerate every block and the index, redraw the figures")
    b.add_argument("--root", **root)
    b.add_argument("--readme", type=Path, help="also regenerate this README's results-at-a-glance block")
    c = sub.add_parser("check", help="exit 1 when a committed block differs from its data")
    c.add_argument("--root", **root)
    c.add_argument("--readme", type=Path, help="also check this README's results-at-a-glance block")
    g = sub.add_parser("glance", help="write a README's results-at-a-glance block from one page")
    g.add_argument("--page", required=True, metavar="SLUG")
    g.add_argument("--readme", type=Path, required=True)
    g.add_argument("--root", **root)
    return ap


def write_glance(root: Path, slug: str, readme: Path) -> None:
    """Write the README's block (between its markers) from page ``slug``."""
    text = read_text(readme)
    span = glance_span(text, readme)
    if span is None:
        raise PageError(f"{readme} has no `{GLANCE_START}` marker: add it and `{GLANCE_END}` on their own "
                        "lines where the block goes, then run this again")
    page = Page(root, check_slug(slug))
    if not page.path.exists():
        raise PageError(f"{page.path} does not exist: add the page first (python -m reports.pages add "
                        f"RUN_DIR --page {slug})")
    data = load_data(page)
    write_text(readme, text[:span[0]] + glance(data, readme) + "\n" + text[span[1]:])


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; 0 done, 1 drift found by check, 2 a user error (printed as one paragraph)."""
    args = parser().parse_args(argv)
    try:
        if args.command == "add":
            page = add(args.run_dir, args.root, args.page, args.title)
            print(f"page {page.path} built from {page.data_dir}/")
        elif args.command == "build":
            written = build(args.root, args.readme)
            print(f"built {args.root}: {len(written)} file(s) written")
        elif args.command == "check":
            drifts = check(args.root, args.readme)
            for d in drifts:
                print(d.message(), file=sys.stderr)
            if drifts:
                print(f"{len(drifts)} block(s) differ from their data: run `{BUILD_COMMAND}` and commit the "
                      "result (or restore the data)", file=sys.stderr)
                return EXIT_DRIFT
            print(f"{args.root}: every generated block matches its data")
        else:
            write_glance(args.root, args.page, args.readme)
            print(f"{args.readme}: results at a glance from page {args.page}")
    except PageError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USER
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
