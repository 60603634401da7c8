"""The history's HTML page: the steps table and the figure in one self-contained file, written
beside the figure by ``harness history plot`` (``history-<metric>.html``), for a CI artifact or
a job page."""

from __future__ import annotations

import base64
import html
from pathlib import Path

import pandas as pd

from harness.history.steps import CheckResult
from harness.history.store import COMMIT, LABEL
from harness.store import columns as C
from reports import html as H
from reports import tables as T

#: characters of a commit sha shown in tables
SHA_SHOWN = 12
STEP_HEADERS = ("point", "metric", "step commit", "before", "after", "change", "p", "verdict", "when")


def steps_frame(steps: pd.DataFrame) -> pd.DataFrame:
    """The steps as display strings, one row each, columns :data:`STEP_HEADERS`."""
    rows = [[f"{r[LABEL]} ({r[C.HASH][:8]})", r["metric"], str(r[COMMIT])[:SHA_SHOWN], T.fmt_num(r["before"]),
             T.fmt_num(r["after"]), f"{r['rel_change']:+.1%}", f"{r['p_value']:.3f}", r["verdict"],
             "NEW" if r["new"] else "history"] for _, r in steps.iterrows()]
    return pd.DataFrame(rows, columns=list(STEP_HEADERS))


def render(result: CheckResult, png: Path) -> str:
    """The page: what was checked, the steps (or that there are none), the figure embedded."""
    cfg = result.config
    title = f"History of {cfg.metric}" + (f" on {cfg.branch}" if cfg.branch else "")
    n_entries = sum(len(s.values) for s in result.series)
    gating = int(result.steps["gating"].sum()) if len(result.steps) else 0
    verdict = (f"{gating} new regression step(s): the check fails" if gating
               else "no new regression step: the check passes")
    data = base64.b64encode(png.read_bytes()).decode("ascii")
    body = [f"<h1>{html.escape(title)}</h1>",
            f"<p>{len(result.series)} series ({n_entries} entries) checked; {html.escape(verdict)}. A step "
            f"is significant at p &le; {cfg.detector.alpha:g}, counts when larger than {cfg.min_step:.1%}, "
            "and "
            f"is new when its first commit is among a series' newest {cfg.recent} entries.</p>",
            "<h2>Steps</h2>", H.table(steps_frame(result.steps)),
            "<h2>Series</h2>",
            f'<figure><img alt="{html.escape(png.stem)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{html.escape(png.name)}</figcaption></figure>"]
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{H.STYLE}</style></head><body>{''.join(body)}</body></html>")


def write_page(result: CheckResult, png: Path) -> Path:
    """Write :func:`render` beside ``png`` (same name, ``.html``); returns its path."""
    path = png.with_suffix(".html")
    path.write_text(render(result, png), encoding="utf-8")
    return path
