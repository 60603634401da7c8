"""Suite files: validation messages (file, line, field, value, allowed), overrides, expansion, hashes."""

from __future__ import annotations

import dataclasses
import re
import textwrap
from pathlib import Path

import pytest
import torch

from harness.suite import SuiteError, load_suite, parse_suite, point_hash

pytestmark = pytest.mark.usefixtures("clean_registry")

ATTN = """\
name: attn
workload: attention
reference: sdpa
fixed: {batch: 1}
sweep:
  seq_len: [64, 128, 256]
  heads: [2, 4]
methods:
  sdpa: {}
  math: {}
"""


def write(tmp_path: Path, text: str, name: str = "s.yaml") -> Path:
    p = tmp_path / name
    p.write_text(textwrap.dedent(text))
    return p


def problems(tmp_path: Path, text: str, **kw) -> list[str]:
    path = write(tmp_path, text)
    with pytest.raises(SuiteError) as ei:
        load_suite(path, **kw)
    assert str(path) in str(ei.value)
    return ei.value.problems


def one_problem(tmp_path: Path, text: str, **kw) -> str:
    found = problems(tmp_path, text, **kw)
    assert len(found) == 1, found
    return found[0]


# ---------------------------------------------------------------- validation


def test_malformed_yaml_names_file_and_line(tmp_path):
    msg = one_problem(tmp_path, "name: x\nworkload: attention\nsweep: {seq_len: [1, 2}\n")
    assert "s.yaml, line 3" in msg
    assert "malformed YAML" in msg


# (id, edit of the ATTN suite, fragments the one-paragraph problem must contain)
ONE_PROBLEM_CASES = [
    ("unknown top-level key", ("append", "sweeep: {}\n"),
     ["line 11", "unknown top-level key 'sweeep'", "did you mean 'sweep'?"]),
    ("unknown workload", ("workload: attention", "workload: attenton"),
     ["line 2", "workload:", "unknown workload 'attenton'", "did you mean 'attention'?"]),
    ("unknown method", ("  math: {}", "  maths: {}"),
     ["line 10", "methods.maths", "unknown method 'maths'", "did you mean 'math'?"]),
    ("wrong type", ("heads: [2, 4]", "heads: [2, ten]"),
     ["line 7: sweep.heads[1]:", "'ten' is not an int", "allowed: int in [1, 1024]",
      "attention heads"]),  # the parameter's help text
    ("bool for an int", ("batch: 1", "batch: true"), ["fixed.batch: True is not an int"]),
    ("out of range", ("batch: 1", "batch: 0"),
     ["line 4: fixed.batch: 0 is out of range; allowed: int in [1, 4096]"]),
    ("outside choices", ("batch: 1", "dtype: float64"),
     ["fixed.dtype: 'float64' is not allowed; allowed: one of 'float32', 'bfloat16', 'float16'"]),
    ("bad device", ("batch: 1", "device: gpu0"),
     ["fixed.device: 'gpu0' is not a device; allowed: cpu, cuda, cuda:N or auto"]),
    ("device the timer cannot handle", ("batch: 1", "device: mps"),
     ["line 4: fixed.device: 'mps' is not a device; allowed: cpu, cuda, cuda:N or auto"]),
    ("empty sweep list", ("heads: [2, 4]", "heads: []"),
     ["line 7: sweep.heads: empty list: nothing to sweep"]),
    ("list in fixed", ("batch: 1", "batch: [1, 2]"),
     ["fixed.batch: [1, 2] is a list", "move batch to `sweep`"]),
    ("reference not a method", ("reference: sdpa", "reference: sdpaa"),
     ["line 3: reference: reference method 'sdpaa' is not one of this suite's methods",
      "did you mean 'sdpa'?"]),
    ("duplicate key", ("append", "fixed: {batch: 2}\n"), ["line 11: fixed: duplicate key 'fixed'"]),
    ("min above max samples", ("append", "timing: {min_samples: 9, max_samples: 3}\n"),
     ["min_samples (9) is larger than max_samples (3)"]),
    ("settings section not a mapping", ("append", "timing: 3\n"),
     ["line 11: timing: must be a mapping (key: value lines), got 3"]),
]


@pytest.mark.parametrize(("edit", "fragments"), [c[1:] for c in ONE_PROBLEM_CASES],
                         ids=[c[0] for c in ONE_PROBLEM_CASES])
def test_one_bad_field_gives_one_problem_naming_line_field_and_allowed_values(tmp_path, edit, fragments):
    old, new = edit
    text = ATTN + new if old == "append" else ATTN.replace(old, new)
    assert text != ATTN
    msg = one_problem(tmp_path, text)
    missing = [f for f in fragments if f not in msg]
    assert not missing, msg


# (the `regression` mapping appended to the ATTN suite, a fragment of its one problem)
REGRESSION_CASES = [
    ("{treshold: 0.1}", "line 11: regression.treshold: unknown regression setting 'treshold' "
                        "(did you mean 'threshold'?); allowed: threshold, alpha, per_metric"),
    ("{alpha: 2}", "regression.alpha: 2.0 is out of range; allowed: float in [0, 1] (alpha: significance"),
    ("{alpha: 0}", "regression.alpha: 0.0 is out of range"),  # both ends excluded
    ("{threshold: null}", "regression.threshold: None is not a float; allowed: float in [0, inf)"),
    ("{per_metric: {fid_cos: -1}}",
     "regression.per_metric.fid_cos: -1.0 is out of range; allowed: float in [0, inf) (per_metric:"),
    ("{per_metric: [1]}", "per_metric: [1] is not a dict; allowed: a mapping of names to float in [0, inf)"),
]


@pytest.mark.parametrize(("body", "fragment"), REGRESSION_CASES, ids=[c[0] for c in REGRESSION_CASES])
def test_regression_settings_are_checked_like_parameters(tmp_path, body, fragment):
    msg = one_problem(tmp_path, ATTN + f"regression: {body}\n")
    assert fragment in msg, msg


def test_unknown_parameter_names_path_line_and_suggestion(tmp_path):
    msg = one_problem(tmp_path, ATTN.replace("heads: [2, 4]", "head: [2, 4]"))
    assert msg.startswith(f"{tmp_path / 's.yaml'}, line 7: sweep.head:")
    assert "unknown parameter 'head'" in msg and "did you mean 'heads'?" in msg
    assert "known parameters:" in msg and "seq_len" in msg


def test_unknown_method_parameter_lists_that_methods_parameters(tmp_path, fake_workload):
    text = "name: f\nworkload: fake\nmethods:\n  knob: {levl: 2}\n"
    msg = one_problem(tmp_path, text)
    assert "line 4: methods.knob.levl:" in msg
    assert "for method 'knob'" in msg and "did you mean 'level'?" in msg


def test_int_is_accepted_for_a_float_and_stored_as_float(tmp_path, fake_workload):
    suite = parse_suite("name: f\nworkload: fake\nfixed: {scale: 2}\nmethods: {plain: {}}\n")
    (point,) = suite.points()
    assert point.params["scale"] == 2.0 and isinstance(point.params["scale"], float)


def test_nonexistent_checkpoint_path_is_reported_before_running(tmp_path, fake_workload):
    missing = tmp_path / "nope.pt"
    text = f"name: f\nworkload: fake\nfixed:\n  ckpt: {missing}\nmethods: {{plain: {{}}}}\n"
    msg = one_problem(tmp_path, text)
    assert "line 4" in msg
    assert f"checkpoint file {str(missing)!r} does not exist" in msg


FAKE_FIXED = """\
name: f
workload: fake
fixed:
  size: 3
  mode: ok
methods:
  plain: {}
  knob: {}
"""


def test_a_problem_of_a_set_value_names_the_set_option(tmp_path, fake_workload):
    """Not the suite line of another parameter whose name the value happens to contain."""
    msg = one_problem(tmp_path, FAKE_FIXED, overrides=["ckpt=/nowhere/size/mode.pt"])
    assert msg == ("--set ckpt=/nowhere/size/mode.pt: ckpt: checkpoint file '/nowhere/size/mode.pt' does "
                   "not exist")


def test_a_set_checkpoint_of_a_real_workload_names_the_option(tmp_path):
    text = ("name: v\nworkload: vggt\nfixed:\n  preset: vggt-tiny\n  height: 28\n  width: 28\n"
            "methods: {vggt: {}}\n")
    msg = one_problem(tmp_path, text, overrides=["checkpoint=/data/preset/vggt.pt"])
    assert msg.startswith("--set checkpoint=/data/preset/vggt.pt: checkpoint '/data/preset/vggt.pt' does not "
                          "exist"), msg


def test_a_workload_parameter_in_a_method_body_is_located_there(tmp_path, fake_workload):
    text = FAKE_FIXED.replace("  knob: {}", "  knob: {ckpt: /nowhere.pt}")
    msg = one_problem(tmp_path, text)
    assert msg.endswith("line 8: ckpt: checkpoint file '/nowhere.pt' does not exist"), msg


def test_the_same_problem_of_several_points_is_reported_once(tmp_path):
    text = ("name: v\nworkload: vggt\nfixed: {preset: vggt-tiny, height: 28, width: 28}\n"
            "sweep: {frames: [1, 2, 3]}\nmethods: {vggt: {}, tome: {}}\n")
    msg = one_problem(tmp_path, text, overrides=["checkpoint=/nowhere.pt"])
    assert msg.startswith("--set checkpoint=/nowhere.pt: checkpoint '/nowhere.pt' does not exist")


def test_workload_checks_and_refusals_are_located_at_the_parameter_line(tmp_path, fake_workload, monkeypatch):
    """A workload's ``check_point`` (workload x method parameters) and its dataclass's refusal, each at
    the line of the parameter it names, all reported together."""
    @dataclasses.dataclass(frozen=True)
    class EvenParams(fake_workload.Params):
        def __post_init__(self) -> None:
            if self.size % 2:
                raise ValueError(f"size={self.size} is not even (allowed: 2, 4, 6, ...)")

    def check_point(self, params, method, method_params) -> list[str]:
        level = getattr(method_params, "level", 0)
        return [f"level={level} exceeds size={params.size}"] if level > params.size else []

    monkeypatch.setattr(fake_workload, "Params", EvenParams)
    monkeypatch.setattr(fake_workload, "check_point", check_point, raising=False)
    text = "name: f\nworkload: fake\nfixed: {scale: 2}\nsweep:\n  size: [2, 3]\nmethods:\n  plain: {}\n" \
           "  knob:\n    level: [1, 4]\n"
    found = problems(tmp_path, text)
    path = tmp_path / "s.yaml"
    assert found == [
        f"{path}, line 9: level=4 exceeds size=2",
        f"{path}, line 5: invalid workload parameters: size=3 is not even (allowed: 2, 4, 6, ...) "
        "(parameters: {'scale': 2.0, 'size': 3})",
        f"{path}, line 9: level=4 exceeds size=3",
    ]


def test_existing_checkpoint_path_passes(tmp_path, fake_workload):
    ckpt = tmp_path / "w.pt"
    ckpt.write_bytes(b"x")
    suite = parse_suite(f"name: f\nworkload: fake\nfixed: {{ckpt: {ckpt}}}\nmethods: {{plain: {{}}}}\n")
    assert suite.points()[0].params["ckpt"] == str(ckpt)


def test_every_problem_is_reported_at_once(tmp_path):
    text = ATTN.replace("heads: [2, 4]", "heads: [2, ten]").replace("batch: 1", "batch: 0")
    text += "timing: {max_sample: 3}\n"
    found = problems(tmp_path, text)
    assert len(found) == 3
    assert any("timing.max_sample" in p and "did you mean 'max_samples'?" in p for p in found)
    assert any("sweep.heads[1]" in p for p in found)
    assert any("fixed.batch" in p for p in found)


def test_regression_settings_are_recorded_as_given_in_file_order(tmp_path):
    suite = load_suite(write(tmp_path, ATTN + "regression: {per_metric: {fid_cos: 1}, alpha: 0.05}\n"))
    assert list(suite.resolved["regression"].items()) == [("per_metric", {"fid_cos": 1.0}), ("alpha", 0.05)]
    assert suite.regression == suite.resolved["regression"]
    assert load_suite(write(tmp_path, ATTN)).resolved["regression"] == {}


def test_missing_suite_file_is_a_file_not_found_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="suite file .*missing.yaml.* not found"):
        load_suite(tmp_path / "missing.yaml")


# ---------------------------------------------------------------- presets and --set


PRESETS = ATTN + """\
timing: {max_samples: 7}
presets:
  cpu: {timing: {max_samples: 4}}
  gpu:
    fixed: {device: cuda, dtype: bfloat16}
    sweep: {seq_len: [4096]}
default_preset: cpu
"""


def test_default_preset_is_applied(tmp_path):
    suite = load_suite(write(tmp_path, PRESETS))
    assert suite.preset == "cpu"
    assert suite.timing.max_samples == 4
    assert suite.timing.warmup_n == 2  # TimingConfig default for keys nobody set


def test_default_min_samples_follows_a_smaller_max_samples(tmp_path):
    suite = load_suite(write(tmp_path, ATTN), overrides=["timing.max_samples=3"])
    assert (suite.timing.min_samples, suite.timing.max_samples) == (3, 3)


def test_named_preset_deep_merges_over_the_file(tmp_path):
    suite = load_suite(write(tmp_path, PRESETS), preset="gpu")
    points = suite.points()
    assert suite.preset == "gpu" and suite.timing.max_samples == 7
    assert {p.params["seq_len"] for p in points} == {4096}
    assert {(p.device, p.dtype, p.params["batch"]) for p in points} == {("cuda", "bfloat16", 1)}
    assert all(p.preset == "gpu" for p in points)


def test_unknown_preset_names_the_option(tmp_path):
    msg = one_problem(tmp_path, PRESETS, preset="gpuu")
    assert msg.startswith("--preset gpuu: 'gpuu' is not a preset")
    assert "did you mean 'gpu'?" in msg and "presets: cpu, gpu" in msg


def test_error_inside_a_preset_points_at_the_preset_line(tmp_path):
    msg = one_problem(tmp_path, PRESETS.replace("dtype: bfloat16", "dtype: bf16"), preset="gpu")
    assert "line 15 (preset 'gpu'): fixed.dtype: 'bf16' is not allowed" in msg


def test_set_overrides_dotted_paths(tmp_path):
    suite = load_suite(
        write(tmp_path, PRESETS),
        overrides=["timing.max_samples=3", "sweep.heads=[8]", "methods.math.dtype=bfloat16"],
    )
    pts = suite.points()
    assert suite.timing.max_samples == 3
    assert {p.params["heads"] for p in pts} == {8}
    assert {p.dtype for p in pts if p.method == "math"} == {"bfloat16"}
    assert {p.dtype for p in pts if p.method == "sdpa"} == {"float32"}


def test_set_bare_parameter_means_fixed_and_replaces_the_sweep_axis(tmp_path):
    suite = load_suite(write(tmp_path, ATTN), overrides=["seq_len=32"])
    assert suite.resolved["fixed"]["seq_len"] == 32 and "seq_len" not in suite.resolved["sweep"]
    assert {p.params["seq_len"] for p in suite.points()} == {32}
    assert len(suite.points()) == 2 * 2


def test_set_bare_parameter_also_replaces_method_grids(tmp_path, fake_workload):
    path = write(tmp_path, "name: f\nworkload: fake\nmethods: {plain: {}, knob: {level: [0, 1, 2]}}\n")
    suite = load_suite(path, overrides=["level=4"])
    assert [p.params.get("level") for p in suite.points()] == [None, 4]


def test_set_sweeps_a_method_parameter(tmp_path, fake_workload):
    path = write(tmp_path, "name: f\nworkload: fake\nmethods: {plain: {}, knob: {}}\n")
    suite = load_suite(path, overrides=["methods.knob.ratio=[0.1,0.2]"])
    assert sorted(p.params["ratio"] for p in suite.points() if p.method == "knob") == [0.1, 0.2]


def test_set_errors_name_the_option(tmp_path):
    found = problems(tmp_path, ATTN, overrides=["heads=ten", "timng.max_samples=3", "noequals"])
    assert len(found) == 3
    by_option = {p.split(":")[0]: p for p in found}
    assert by_option["--set noequals"].startswith("--set noequals: expected KEY=VALUE")
    timng = by_option["--set timng.max_samples=3"]
    assert "unknown key 'timng' (did you mean 'timing'?)" in timng
    assert by_option["--set heads=ten"].startswith("--set heads=ten: fixed.heads: 'ten' is not an int")


# ---------------------------------------------------------------- expansion


def test_expansion_is_the_product_of_sweep_and_methods(tmp_path):
    suite = load_suite(write(tmp_path, ATTN))
    pts = suite.points()
    assert len(pts) == 3 * 2 * 2
    assert [(p.method, p.params["seq_len"], p.params["heads"]) for p in pts[:4]] == [
        ("sdpa", 64, 2), ("math", 64, 2), ("sdpa", 64, 4), ("math", 64, 4),
    ]


def test_include_adds_and_exclude_removes_points(tmp_path):
    text = ATTN + textwrap.dedent("""\
        include:
          - {method: math, seq_len: 1024, heads: 8}
        exclude:
          - {method: math, seq_len: [128, 256]}
          - {heads: 4, seq_len: 64}
    """)
    pts = load_suite(write(tmp_path, text)).points()
    keys = {(p.method, p.params["seq_len"], p.params["heads"]) for p in pts}
    assert len(pts) == 12 + 1 - 4 - 2
    assert ("math", 1024, 8) in keys
    assert not any(m == "math" and s in (128, 256) for m, s, _ in keys)
    assert not any(s == 64 and h == 4 for _, s, h in keys)
    inc = next(p for p in pts if p.params["seq_len"] == 1024)
    assert inc.params["batch"] == 1  # include points take `fixed` values


def test_method_grids_multiply_only_their_method(tmp_path, fake_workload):
    text = (
        "name: f\nworkload: fake\nsweep: {size: [2, 3]}\n"
        "methods:\n  plain: {}\n  knob: {level: [1, 2], ratio: [0.1, 0.9]}\n"
    )
    pts = parse_suite(text).points()
    assert sum(p.method == "plain" for p in pts) == 2
    assert sum(p.method == "knob" for p in pts) == 2 * 4


def test_every_point_carries_every_parameter_with_defaults(tmp_path, fake_workload):
    pts = parse_suite("name: f\nworkload: fake\nmethods: {plain: {}, knob: {}}\n").points()
    plain, knob = pts
    assert plain.params == {"size": 4, "scale": 1.0, "mode": "ok", "ckpt": None,
                            "device": "cpu", "dtype": "float32", "seed": 0, "threads": 0}
    assert knob.params == {**plain.params, "level": 1, "ratio": 0.5}
    assert knob.method_params.level == 1 and knob.common.seed == 0


def test_fixed_method_parameter_applies_only_to_methods_that_have_it(tmp_path, fake_workload):
    pts = parse_suite("name: f\nworkload: fake\nfixed: {level: 3}\nmethods: {plain: {}, knob: {}}\n").points()
    assert [p.params.get("level") for p in pts] == [None, 3]


def test_duplicate_points_are_kept_once(tmp_path):
    text = ATTN + "include:\n  - {method: sdpa, seq_len: 64, heads: 2}\n"
    assert len(load_suite(write(tmp_path, text)).points()) == 12


def test_point_order_is_deterministic(tmp_path):
    path = write(tmp_path, ATTN)
    assert [p.hash for p in load_suite(path).points()] == [p.hash for p in load_suite(path).points()]


def test_device_auto_resolves_at_expansion(tmp_path, monkeypatch):
    path = write(tmp_path, ATTN.replace("batch: 1", "device: auto"))
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert {p.device for p in load_suite(path).points()} == {expected}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert {p.device for p in load_suite(path).points()} == {"cuda"}


# ---------------------------------------------------------------- hashes


def test_hash_is_16_hex_of_workload_method_and_params(tmp_path):
    p = load_suite(write(tmp_path, ATTN)).points()[0]
    assert re.fullmatch(r"[0-9a-f]{16}", p.hash)
    assert p.hash == point_hash("attention", "sdpa", p.params)
    assert len({q.hash for q in load_suite(write(tmp_path, ATTN)).points()}) == 12


def test_hash_ignores_suite_name_timing_and_param_spelling(tmp_path):
    a = load_suite(write(tmp_path, ATTN, "a.yaml")).points()
    renamed = ATTN.replace("name: attn", "name: other") + "timing: {max_samples: 3}\n"
    b = load_suite(write(tmp_path, renamed, "b.yaml")).points()
    assert [p.hash for p in a] == [p.hash for p in b]
    assert a[0].suite == "attn" and b[0].suite == "other"


def test_hash_changes_with_any_parameter(tmp_path):
    a = load_suite(write(tmp_path, ATTN)).points()[0]
    b = load_suite(write(tmp_path, ATTN), overrides=["seed=1"]).points()[0]
    assert a.params["seq_len"] == b.params["seq_len"] and a.method == b.method
    assert a.hash != b.hash


def test_explicit_default_and_omitted_parameter_hash_equal(tmp_path):
    a = load_suite(write(tmp_path, ATTN)).points()[0]
    b = load_suite(write(tmp_path, ATTN.replace("batch: 1", "batch: 1, head_dim: 64"))).points()[0]
    assert a.hash == b.hash


def test_suite_hash_tracks_points_and_timing(tmp_path):
    path = write(tmp_path, ATTN)
    base = load_suite(path).hash
    assert load_suite(path).hash == base
    assert load_suite(path, overrides=["timing.max_samples=3"]).hash != base
    assert load_suite(path, overrides=["seed=1"]).hash != base


def test_bundled_smoke_suite_is_valid_with_both_presets():
    path = Path(__file__).resolve().parents[2] / "suites" / "attention-smoke.yaml"
    cpu = load_suite(path)
    gpu = load_suite(path, preset="gpu")
    assert cpu.preset == "cpu" and {p.device for p in cpu.points()} == {"cpu"}
    assert {(p.device, p.dtype) for p in gpu.points()} == {("cuda", "bfloat16")}
    assert cpu.reference == "sdpa" and len(cpu.points()) == 24
