"""``report.html``: one self-contained page per run (no file or network access when opened).

Tables (every column), the figures embedded as ``data:`` PNGs (the overview first), the variant
legend, failed points, how latency was measured, the metrics, the environment fingerprint and the
run's command line. A small inline script sets ``data-figures`` / ``data-figures-loaded`` on
``<body>`` once the page has loaded (the number of images and of those the browser decoded), which
a headless browser test reads back.
"""

from __future__ import annotations

import base64
import html
import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from harness.store import columns as C
from reports import tables as T
from reports import terminal as TV
from reports.parts import ReportParts, env_summary

STYLE = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto; max-width: 1200px;
       padding: 0 1em; color: #222; }
h1 { font-size: 1.6em; } h2 { font-size: 1.25em; margin-top: 2em; border-bottom: 1px solid #ddd; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; font-size: 12px; margin: .5em 0; }
th, td { border: 1px solid #ddd; padding: 2px 6px; text-align: right; white-space: nowrap; }
th { background: #f4f4f4; position: sticky; top: 0; }
td:first-child, th:first-child { text-align: left; }
.warning { background: #fff4e5; border-left: 4px solid #e69500; padding: .5em 1em; margin: .5em 0; }
figure { margin: 1.5em 0; } figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { color: #555; font-size: 12px; }
code { background: #f4f4f4; padding: 0 3px; }
details { margin: .5em 0; }
"""

# after load: how many images there are and how many decoded (a broken data: URI has naturalWidth 0)
SCRIPT = """
window.addEventListener("load", function () {
  var imgs = Array.prototype.slice.call(document.images);
  var ok = imgs.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length;
  document.body.dataset.figures = String(imgs.length);
  document.body.dataset.figuresLoaded = String(ok);
});
"""


def _e(x: Any) -> str:
    return html.escape(str(x), quote=True)


def _inline(text: str) -> str:
    """Escaped text with ``code`` spans and **bold** kept (the notes are written as Markdown)."""
    out = _e(text)
    out = re.sub(r"`([^`]+)`", r"<code>\1</code>", out)
    return re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", out)


def table(df: pd.DataFrame, cls: str = "") -> str:
    """An already formatted frame (strings) as an HTML table in a horizontally scrolling box."""
    if df.empty:
        return "<p><em>(none)</em></p>"
    head = "".join(f"<th>{_e(c)}</th>" for c in df.columns)
    rows = "".join("<tr>" + "".join(f"<td>{_e(v)}</td>" for v in r) + "</tr>" for r in df.astype(str).values)
    return (f'<div class="scroll"><table class="{cls}"><thead><tr>{head}</tr></thead>'
            f"<tbody>{rows}</tbody></table></div>")


def figure(path: Path) -> str:
    """A PNG embedded as a ``data:`` URI, captioned with its file name."""
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return (f'<figure id="fig-{_e(path.stem)}"><img alt="{_e(path.stem)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{_e(path.stem)} (plots/{_e(path.name)})</figcaption></figure>")


def _kv(rows: Sequence[tuple[str, Any]]) -> str:
    body = "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in rows)
    return f'<div class="scroll"><table class="kv">{body}</table></div>'


def _value(v: Any) -> str:
    return json.dumps(v, default=str) if isinstance(v, (dict, list)) else str(v)


def render(parts: ReportParts, figures: Sequence[Path]) -> str:
    """The page for a run's report parts and figure files (PNG)."""
    run = parts.run
    pngs = [p for p in figures if p.suffix == ".png"]
    overview = [p for p in pngs if p.stem == "overview"]
    others = [p for p in pngs if p.stem != "overview"]
    body = [f"<h1>{_e(parts.title)}</h1>", "<ul>"]
    body += [f"<li><strong>{_e(k)}</strong>: {_e(v)}</li>" for k, v in parts.meta]
    body.append(f"<li><strong>environment</strong>: {_e(env_summary(run.env, run.points))}</li>")
    body.append(f"<li><strong>points</strong>: {_e(parts.points_line())}</li></ul>")
    body += [f'<div class="warning"><strong>Warning</strong>: {_e(w)}</div>' for w in parts.warnings]
    if overview:
        body += ['<h2 id="overview">Overview</h2>', figure(overview[0])]
    body.append('<h2 id="results">Results</h2>')
    if parts.summary.empty:
        body.append("<p><em>No point finished ok.</em></p>")
    else:
        body.append(table(T.format_table(parts.summary.drop(columns=[C.HASH], errors="ignore")), "results"))
    if parts.legend:
        body.append('<h2 id="variants">Variants</h2><p>Parameters that differ between the variants of a '
                    "method (all of them are columns of the results).</p>")
        for method, df in parts.legend.items():
            body += [f"<h3>{_e(method)}</h3>", table(df, "legend")]
    if parts.pivot is not None:
        frame, _ = TV.pivot_frame(parts.pivot)
        body += [f'<h2 id="pivot">{_e(parts.pivot_title)}</h2>', table(frame, "pivot")]
    body.append('<h2 id="failed">Failed points</h2>')
    if parts.failed.empty:
        body.append("<p><em>None.</em></p>")
    else:
        body.append(table(T.format_table(parts.failed), "failed"))
    if others:
        body.append(f'<h2 id="figures">Figures ({len(others)})</h2>')
        body += [figure(p) for p in others]
    body += ['<h2 id="timing">How latency was measured</h2>', f"<p>{_inline(parts.timing)}</p>"]
    if parts.metric_notes:
        body.append('<h2 id="metrics">Metrics</h2><ul>')
        for col, unit, help_, arrow in parts.metric_notes:
            extra = (f" [{_e(unit)}]" if unit else "") + f": {_e(help_)}"
            extra += f" ({_e(arrow)})" if arrow else ""
            body.append(f"<li><code>{_e(col)}</code>{extra}</li>")
        body.append("</ul>")
    body += ['<h2 id="environment">Environment</h2>',
             _kv([(k, _value(v)) for k, v in sorted(run.env.items())]) if run.env
             else "<p><em>(no environment fingerprint recorded)</em></p>"]
    argv = run.manifest.get("argv")
    body += ['<h2 id="run">Run</h2>',
             _kv([(k, " ".join(map(str, v)) if k == "argv" and isinstance(v, list) else _value(v))
                  for k, v in sorted(run.manifest.items())])]
    if argv:
        body.append(f"<p>Re-run with: <code>{_e(' '.join(map(str, argv)))}</code></p>")
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(parts.title)}</title><style>{STYLE}</style></head>\n<body>\n"
        + "\n".join(body)
        + f"\n<script>{SCRIPT}</script>\n</body></html>\n"
    )
