"""The memory-wall page: VGGT-1B's peak GPU memory per attention method against frames.

``python -m reports.memory_wall``:

- ``build [--root docs/results] [--measured RUN_DIR]``: write ``memory-wall.md`` and
  ``memory-wall/memory-wall.{png,svg}`` under the root from the bytes model of
  :mod:`harness.metrics.memory_model`. ``--measured``: a run of ``suites/vggt.yaml --preset gpu``
  whose ``torch_peak_alloc_mb`` per method and frame count (and its date, GPU and commit) is copied
  into ``memory-wall/measured.json`` and shown beside the model from then on;
- ``check [--root docs/results]``: exit 1 when the committed page differs from what the model (and
  the committed ``measured.json``) give now, naming the changed lines.

The model runs in its own process (``python -m harness.metrics.memory_model --json``): a report
reads data and never imports a model or a method (tests/test_architecture.py), and the model's
command line is the data here. The page is deterministic: no date outside the measured part.
Exit codes: 0 done, 1 the page drifted (check), 2 a user error (one paragraph).
"""

from __future__ import annotations

import argparse
import difflib
import json
import math
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # must precede the pyplot import: reports run headless

import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import FuncFormatter, NullFormatter  # noqa: E402

from harness.measure import env as E  # noqa: E402
from harness.store import RunDirError, load  # noqa: E402
from harness.store import columns as C  # noqa: E402
from reports.pages import commit_text, machine, run_time  # noqa: E402

ROOT = Path("docs/results")
SLUG = "memory-wall"
MEASURED_FILE = "measured.json"
MODEL_COMMAND = [sys.executable, "-m", "harness.metrics.memory_model", "--json"]
BUILD_COMMAND = "python -m reports.memory_wall build"
MIB = 2**20
GB = 1e9
EXIT_OK, EXIT_DRIFT, EXIT_USER = 0, 1, 2
DPI = 150
FP8_ROW = "litevggt (lv_fp8)"  # the label in harness.metrics.memory_model.KNOB_VARIANTS


class WallError(Exception):
    """A user error (the model command failed, a run directory that cannot be read): one paragraph."""


# ---------------------------------------------------------------------------- data


def model_data() -> dict[str, Any]:
    """The wall as the model's command line prints it (``--json``): settings and one record per
    method and frame count."""
    proc = subprocess.run(MODEL_COMMAND, capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        raise WallError(f"the bytes model failed ({' '.join(MODEL_COMMAND[1:])}): "
                        f"{(proc.stderr.strip().splitlines() or ['no output'])[-1]}")
    return json.loads(proc.stdout)


def measured_data(run_dir: Path) -> dict[str, Any]:
    """``torch_peak_alloc_mb`` of a gpu run per method and frame count (the largest over a method's
    variants; ``oom`` / ``failed`` where no point of that method and frame count finished), with the
    run's date, GPU and commit."""
    try:
        run = load(run_dir)
    except RunDirError as e:
        raise WallError(f"--measured {run_dir}: {e}") from None
    pts = run.points
    if "frames" not in pts.columns or C.TORCH_PEAK_ALLOC_MB not in pts.columns:
        raise WallError(f"--measured {run_dir}: its points have no frames / {C.TORCH_PEAK_ALLOC_MB} column; "
                        "give a run of suites/vggt.yaml --preset gpu")
    peaks: dict[str, dict[str, Any]] = {}
    for (method, frames), rows in pts.groupby([C.METHOD, "frames"], sort=True):
        ok = rows[(rows[C.STATUS] == C.OK) & rows[C.TORCH_PEAK_ALLOC_MB].notna()]
        if len(ok):
            value: Any = round(float(ok[C.TORCH_PEAK_ALLOC_MB].max()) * MIB / GB, 3)
        else:
            value = C.OOM if (rows[C.STATUS] == C.OOM).any() else str(rows[C.STATUS].iloc[0])
        peaks.setdefault(str(method), {})[str(int(frames))] = value
    return {"run": run.manifest.get("run_id"), "date": run_time(run.manifest), "gpu": machine(run.env),
            "commit": commit_text(run.env), "torch": run.env.get(E.TORCH), "peak_gb": peaks}


def read_measured(root: Path) -> dict[str, Any] | None:
    path = root / SLUG / MEASURED_FILE
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise WallError(f"{path} cannot be read ({e}); restore it from git or build again with "
                        "--measured") from None


# ---------------------------------------------------------------------------- the page


def gb(value: Any) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.1f}"


def rows_by_method(model: dict[str, Any]) -> dict[str, dict[int, dict[str, Any]]]:
    out: dict[str, dict[int, dict[str, Any]]] = {}
    for rec in model["rows"]:
        out.setdefault(rec["method"], {})[int(rec["frames"])] = rec
    return out


def frames_of(model: dict[str, Any]) -> list[int]:
    return sorted({int(r["frames"]) for r in model["rows"]})


def _measured_cell(measured: dict[str, Any] | None, method: str, frames: int) -> str:
    if not measured:
        return ""
    value = measured["peak_gb"].get(method, {}).get(str(frames))
    return gb(value) if isinstance(value, (int, float)) else (value or "-")


def peak_table(model: dict[str, Any], measured: dict[str, Any] | None) -> str:
    """Method x frames, the model's peak in GB (with the measured one beside it when there is a run),
    and whether it fits the budget at the most frames."""
    frames, budget = frames_of(model), model["budget_gb"]
    last = frames[-1]
    head = ["method", *[f"{f} frames" for f in frames], f"fits in {budget:g} GB at {last} frames",
            "largest temporary at the peak layer (GB)", "peak at"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for method, by in rows_by_method(model).items():
        rec = by[last]
        cells = []
        for f in frames:
            cell = gb(by[f]["peak_gb"])
            m = _measured_cell(measured, method, f)
            cells.append(f"{cell} ({m})" if m else cell)
        fits = "not modelled" if rec["fits"] is None else ("yes" if rec["fits"] else "**no**")
        largest = "-" if rec["fits"] is None else f"{rec['largest']} ({gb(rec['largest_gb'])})"
        lines.append("| " + " | ".join([f"`{method}`", *cells, fits, largest, rec["peak_at"] or "-"]) + " |")
    return "\n".join(lines)


def parts_table(model: dict[str, Any]) -> str:
    """At the most frames: the forward's part (with what a changed model holds), the method's part
    and the peak, GB."""
    last = frames_of(model)[-1]
    head = ["method", "tokens", "model at the call (GB)", "of which the method's changed model (GB)",
            "method's temporaries (GB)", "peak (GB)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for method, by in rows_by_method(model).items():
        rec = by[last]
        cells = [f"`{method}`", f"{rec['tokens']:,}",
                 *(gb(rec.get(k)) for k in ("model_gb", "model_extra_gb", "seam_gb", "peak_gb"))]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def quant_text(model: dict[str, Any]) -> str:
    """What the page says of QuantVGGT's numbers at the most frames (or that it is not in the wall)."""
    last = frames_of(model)[-1]
    rec = rows_by_method(model).get("quantvggt", {}).get(last)
    if rec is None or rec["fits"] is None:
        return "QuantVGGT is not in this wall."
    return (f"At {last} frames its copy holds {gb(rec['model_extra_gb'])} GB and its peak, "
            f"{gb(rec['peak_gb'])} GB, comes at {rec['peak_at']} ({rec['largest']}: "
            f"{gb(rec['largest_gb'])} GB).")


def fp8_text(model: dict[str, Any]) -> str:
    """What the page says of LiteVGGT's FP8 row at the most frames (or that it is not in the wall)."""
    last = frames_of(model)[-1]
    rec = rows_by_method(model).get(FP8_ROW, {}).get(last)
    if rec is None or rec["fits"] is None:
        return "It is not in this wall."
    return (f"At {last} frames its copy holds {gb(rec['model_extra_gb'])} GB and its peak, "
            f"{gb(rec['peak_gb'])} GB, comes at {rec['peak_at']} ({rec['largest']}: "
            f"{gb(rec['largest_gb'])} GB).")


def measured_part(measured: dict[str, Any] | None) -> str:
    if not measured:
        return ("No GPU run is merged yet: `python -m reports.memory_wall build --measured RUN_DIR` with a "
                "run of `harness run suites/vggt.yaml --preset gpu` puts its `torch_peak_alloc_mb` (the CUDA "
                "allocator's peak over the timed window) in parentheses beside each modelled value.")
    return (f"In parentheses: measured `torch_peak_alloc_mb` of run `{measured.get('run')}` (started "
            f"{measured.get('date')}, {measured.get('gpu')}, torch {measured.get('torch')}; commit "
            f"{measured.get('commit')}), in GB; `oom` / `failed`: no point of that method and frame count "
            "finished.")


PAGE = """# The memory wall: VGGT-1B's peak GPU memory against frames

<!-- Written by `{command}` from the bytes model (harness/metrics/memory_model.py);
do not edit by hand: `python -m reports.memory_wall check` fails when this page no longer matches. -->

Which attention method lets VGGT-1B run on {frames_text} frames of {width}x{height} px ({P} tokens
per frame) in one {budget:g} GB GPU? Each number is the **bytes model**'s peak of
`torch.cuda.max_memory_allocated` over one timed forward of `suites/vggt.yaml --preset gpu` ({mode},
float32 weights under bf16 autocast, heads camera and depth), in GB (1e9 bytes). Nothing of that
size is allocated to compute it: the terms are products of shapes and element sizes, checked to the
byte against the allocations of the real code at small shapes on CPU
(`tests/metrics/test_memory_model.py`).

## Peak memory by method and frames

{peak_table}

{measured_text}

![Peak GPU memory against frames]({slug}/{slug}.png)

## At {last} frames: the forward and the method

{parts_table}

With fused attention kernels the global-attention call is not where plain VGGT* peaks: RoPE of k and
the MLP hold more (both about 34 bytes per token and channel under autocast, against 32 at the call).
A method moves the peak only when its temporaries exceed that margin; the rest of the wall is the
model's own activations, weights and kept layer outputs.

## What the model counts

- **The forward** at the moment of a global-attention call (`model_peak_bytes`): float32 weights;
  autocast's cached bf16 copies of every Linear / Conv2d used so far; the input frames; the RoPE
  positions; the two outputs the harness keeps (the reference and the previous timed sample: depth
  and confidence maps); the kept layer outputs (VGGT*: layers 4, 11, 17, 23 in bf16; the official
  VGGT keeps all 24 in float32); the previous layer's output; the block's input and normed input
  (float32); qkv (bf16); q and k (float32 after the qk LayerNorm under autocast); the bf16 output.
- **The method's temporaries** at the peak of that call (`seam_peak_bytes` of each method's
  parameters, a replay of its GPU code path): e.g. merged q / k / v and their float32 sums, slot
  maps and index tensors (int64), the gathered matching metric, block maps, autocast's bf16 copies
  of the float32 q and k for the attention kernel.
- **The forward's other moments** (`stage_peaks`): RoPE of k, the output projection, the MLP, the
  DINO patch embedding on all frames at once, the heads. Frame blocks run plain SDPA, so no method
  goes below plain attention's frame-attention moment. The peak is the largest moment over the 24
  layers.
- Not counted: kernel workspaces and copies a kernel makes internally, the allocator's rounding and
  fragmentation, index caches of other frame counts. A method whose parameters define no
  `seam_peak_bytes` of their own is listed as *not modelled*.
- `fastvggt (dense similarity)` is not a run configuration: it is FastVGGT with its src x dst
  cosine similarity held in one matrix (upstream FastVGGT's matching, or the harness's torch path
  without its chunking): {dense_text}. The harness's Triton kernel never stores it.
- **A method that changes the model** (`model_extra_bytes`: what it holds through the forward and
  its own high-water moments; in the table above its held part is inside "model at the call").
  `quantvggt` (and `quantvggt_httm`, which adds HTTM's seam temporaries) runs a transformed **copy**
  of VGGT beside the original the harness keeps for the reference: every weight a second time,
  plus each quantized linear's Hadamard signs, smoothing factors, clipping logits and the gradients
  the block reconstruction leaves on them. The copy's parameters do not require grad, so autocast
  keeps no bf16 weight cache; each fake-quantized linear instead makes float32 temporaries as wide
  as its input (the Hadamard transform of x, the per-token quantized copy), largest at the MLP's
  fc2 (4C wide). **Fake quantization holds float weights: the deployed W4A4's memory saving (the
  paper's claim) is not what runs here**; the harness's QuantVGGT measures accuracy and bit
  operations, and costs memory. {quant_text}
- `litevggt (lv_fp8)` is `litevggt` with `lv_fp8: true` (the paper's FP8 linear layers), a run
  configuration the gpu preset does not sweep. Its model transform also runs a **copy** of VGGT:
  every weight again in float32, plus an e4m3 copy (1 byte per weight) and a float32 scale of each
  frame and global block's qkv, fc1 and fc2. Its parameters do not require grad, so autocast keeps
  no bf16 weight cache. Each FP8 linear casts its input to float32 and then to e4m3 (5 bytes per
  input element beside the input), largest at the MLP's fc2 (4C wide). {fp8_text}
- `hess`: each query block's top-k is as wide as the largest per-head budget, which the
  calibration decides; the wall takes its cap, every key block (an upper bound; with equal budgets
  HeSS is `blocksparse` at the same sparsity, the `blocksparse` row here). `litevggt` keeps its
  partitions and the last slot map (with its counts and unmerge index) across layers: counted at
  every call; its forward's first layer also computes the geometry scores and roles, and its
  recompute layers gather x_norm for the matching. `spark3r` prunes keys / values by layer (its
  tiers): like every method, its row is its largest layer.

Rebuild: `{command}` (add `--measured RUN_DIR` to merge a GPU run); the model alone:
`python -m harness.metrics.memory_model`.
"""


def render(model: dict[str, Any], measured: dict[str, Any] | None) -> str:
    """The page's text (deterministic for the same model data and measured data)."""
    frames = frames_of(model)
    by = rows_by_method(model)
    dense = by.get("fastvggt (dense similarity)", {}).get(frames[-1])
    dense_text = (f"at {frames[-1]} frames the matrix alone ({dense['largest']}) is "
                  f"{gb(dense['largest_gb'])} GB" if dense else "not in this wall")
    P = model["rows"][0]["tokens"] // model["rows"][0]["frames"]
    return PAGE.format(
        command=BUILD_COMMAND, frames_text=", ".join(map(str, frames[:-1])) + f" or {frames[-1]}",
        width=model["width"], height=model["height"], P=P, budget=model["budget_gb"],
        mode="lean VGGT*" if model.get("lean", True) else "official VGGT, every layer kept",
        peak_table=peak_table(model, measured), measured_text=measured_part(measured), slug=SLUG,
        last=frames[-1], parts_table=parts_table(model), dense_text=dense_text, quant_text=quant_text(model),
        fp8_text=fp8_text(model))


# ---------------------------------------------------------------------------- the figure


def draw(model: dict[str, Any], measured: dict[str, Any] | None, folder: Path) -> list[Path]:
    """``memory-wall.png`` and ``.svg``: peak GB against frames per modelled method (log y), the
    budget as a dashed line, measured peaks as open markers."""
    folder.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(7.5, 4.6))
    frames, budget = frames_of(model), model["budget_gb"]
    for i, (method, by) in enumerate(rows_by_method(model).items()):
        ys = [by[f]["peak_gb"] for f in frames]
        if any(y is None for y in ys):
            continue
        color = f"C{i % 10}"  # the colour cycle repeats after 10 lines: the next 10 are dashed, triangles
        style = ":" if "dense" in method else ("-" if i < 10 else "--")
        ax.plot(frames, ys, style, marker="o" if i < 10 else "^", color=color, label=method)
        if measured:
            got = [(f, measured["peak_gb"].get(method, {}).get(str(f))) for f in frames]
            pts = [(f, v) for f, v in got if isinstance(v, (int, float))]
            if pts:
                ax.plot(*zip(*pts), linestyle="none", marker="s", mfc="none", color=color, markersize=9)
    ax.axhline(budget, color="black", linestyle="--", linewidth=1)
    ax.text(frames[0], budget * 1.06, f"{budget:g} GB", fontsize=8)
    ax.set_yscale("log")
    top = max(max((r["peak_gb"] or 0.0) for r in model["rows"]), budget)
    ax.set_yticks([t for t in (5, 10, 20, 40, 80, 160, 320, 640, 1280, 2560) if t <= 2 * top])
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:g}"))
    ax.yaxis.set_minor_formatter(NullFormatter())
    ax.set_xticks(frames)
    ax.set_xlabel("frames")
    ax.set_ylabel("peak GPU memory (GB, log)")
    ax.set_title("VGGT-1B memory wall (bytes model" + (", squares: measured)" if measured else ")")
                 + "; overlapping lines differ by under 1 GB", fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    out = [folder / f"{SLUG}.png", folder / f"{SLUG}.svg"]
    with matplotlib.rc_context({"svg.hashsalt": SLUG}):
        fig.savefig(out[0], dpi=DPI, bbox_inches="tight", metadata={"Software": None})
        fig.savefig(out[1], bbox_inches="tight", metadata={"Date": None, "Creator": None})
    plt.close(fig)
    return out


# ---------------------------------------------------------------------------- commands


def build(root: Path = ROOT, measured_dir: Path | None = None,
          model: dict[str, Any] | None = None) -> list[Path]:
    """Write the page, its figure and (with ``measured_dir``) ``measured.json``; return the paths.
    ``model``: the model's data (default: run the model's command line)."""
    if not root.is_dir():
        raise WallError(f"{root} is not a folder: give the results folder with --root (default {ROOT})")
    measured = read_measured(root) if measured_dir is None else measured_data(measured_dir)
    model = model_data() if model is None else model
    folder = root / SLUG
    folder.mkdir(exist_ok=True)
    written = []
    if measured_dir is not None:
        (folder / MEASURED_FILE).write_text(json.dumps(measured, indent=1, sort_keys=True) + "\n")
        written.append(folder / MEASURED_FILE)
    page = root / f"{SLUG}.md"
    page.write_text(render(model, measured))
    return [page, *written, *draw(model, measured, folder)]


def check(root: Path = ROOT, model: dict[str, Any] | None = None) -> list[str]:
    """The changed lines (committed -, model +) of the page; empty when it matches."""
    page = root / f"{SLUG}.md"
    if not page.exists():
        return [f"{page} is missing (written by {BUILD_COMMAND})"]
    model = model_data() if model is None else model
    new = render(model, read_measured(root))
    old = page.read_text()
    return [ln for ln in difflib.unified_diff(old.splitlines(), new.splitlines(), lineterm="", n=0)
            if ln[:1] in "+-" and not ln.startswith(("+++", "---"))]


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m reports.memory_wall {build,check}``; 0 done, 1 drift, 2 a user error."""
    ap = argparse.ArgumentParser(prog="python -m reports.memory_wall", description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="write the page and its figure from the bytes model")
    b.add_argument("--root", type=Path, default=ROOT)
    b.add_argument("--measured", type=Path, metavar="RUN_DIR", help="a run of suites/vggt.yaml --preset gpu")
    c = sub.add_parser("check", help="exit 1 when the committed page differs from the model")
    c.add_argument("--root", type=Path, default=ROOT)
    args = ap.parse_args(argv)
    try:
        if args.command == "build":
            written = build(args.root, args.measured)
            print(f"wrote {', '.join(map(str, written))}")
            return EXIT_OK
        drift = check(args.root)
    except WallError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USER
    if drift:
        lines = "\n".join(f"    {ln}" for ln in drift[:20])
        page = args.root / f"{SLUG}.md"
        print(f"{page} differs from the bytes model:\n{lines}\nrun `{BUILD_COMMAND}` and commit the result",
              file=sys.stderr)
        return EXIT_DRIFT
    print(f"{args.root / (SLUG + '.md')} matches the bytes model")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
