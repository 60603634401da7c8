"""Suite files a loader must survive: not UTF-8, too large, YAML alias bombs and recursive aliases,
sweeps of too many points. Each is one paragraph naming the file (and line), found before anything
runs, fast and in little memory; the messages are asserted, never the time."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from harness.suite import (
    DEFAULT_POINT_LIMIT,
    MAX_DOCUMENT_VALUES,
    MAX_SUITE_BYTES,
    Include,
    SuiteError,
    SuiteSpec,
    count_points,
    expand,
    load_suite,
    parse_suite,
)

pytestmark = pytest.mark.usefixtures("clean_registry")

HEAD = "name: t\nworkload: attention\nmethods: {sdpa: {}}\n"


def one_problem(fn, *args, **kw) -> str:
    with pytest.raises(SuiteError) as err:
        fn(*args, **kw)
    assert len(err.value.problems) == 1, err.value.problems
    return err.value.problems[0]


# ---------------------------------------------------------------- the file


def test_a_file_that_is_not_utf8_names_line_offset_and_the_fix(tmp_path: Path):
    path = tmp_path / "latin1.yaml"
    raw = "name: t\nworkload: attention\ndescription: caf\xe9 au lait\n".encode("latin-1")
    path.write_bytes(raw)
    offset = raw.index(b"\xe9")
    assert offset == 44  # line 3 starts at byte 28; "description: caf" is 16 bytes
    msg = one_problem(load_suite, path)
    assert msg.startswith(f"{path}, line 3: the suite file is not UTF-8 text: byte 0xe9 at byte offset 44 "
                          "(line 3, byte 17 of the line) is not valid UTF-8 (invalid continuation byte;")
    assert "in Latin-1 it would be 'é'" in msg and "Save the file as UTF-8" in msg


def test_utf8_text_beyond_ascii_loads(tmp_path: Path):
    path = tmp_path / "s.yaml"
    path.write_text(HEAD + "description: café ✓\n", encoding="utf-8")
    assert load_suite(path).description == "café ✓"


def test_a_file_over_the_size_limit_is_refused_with_the_limit(tmp_path: Path):
    path = tmp_path / "big.yaml"
    path.write_bytes(HEAD.encode() + b"# " + b"x" * MAX_SUITE_BYTES + b"\n")
    msg = one_problem(load_suite, path)
    size = path.stat().st_size
    assert msg.startswith(f"{path}: the suite file has {size:,} bytes; a suite file may have at most "
                          f"{MAX_SUITE_BYTES:,} bytes (1 MiB)")


def test_suite_text_over_the_size_limit_is_refused_too():
    msg = one_problem(parse_suite, HEAD + "#" + "x" * MAX_SUITE_BYTES + "\n", source="big.yaml")
    assert msg.startswith("big.yaml: the suite file has ") and "at most 1,048,576 bytes" in msg


BILLION_LAUGHS = HEAD + textwrap.dedent("""\
    description: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
    x1: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
    x2: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
    x3: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
    x4: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
    x5: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
    x6: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
    x7: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
    x8: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]
""")


def test_a_yaml_alias_bomb_is_refused_from_its_node_graph(tmp_path: Path):
    """~9^9 = 387 million values once expanded, from a file of under 1 KB."""
    path = tmp_path / "lol.yaml"
    path.write_text(BILLION_LAUGHS)
    assert path.stat().st_size < 1024
    msg = one_problem(load_suite, path)
    assert msg.startswith(f"{path}, line 4: the YAML expands to more than {MAX_DOCUMENT_VALUES:,} values "
                          "once its aliases are expanded")
    assert "the first anchor used is on this line" in msg and f"at most {MAX_DOCUMENT_VALUES:,}" in msg


def test_a_few_aliases_are_fine():
    text = "name: t\nworkload: attention\nsweep: {seq_len: &n [64, 128]}\nmethods:\n  sdpa: {heads: *n}\n"
    assert len(parse_suite(text).points()) == 4


def test_a_recursive_alias_is_refused_not_a_recursion_error():
    msg = one_problem(parse_suite, HEAD + "fixed: &a {heads: [*a]}\n", source="rec.yaml")
    assert msg.startswith("rec.yaml, line 4: this value contains an alias to its own anchor")
    assert "cannot be recursive" in msg


def test_nesting_deeper_than_the_parser_can_follow_is_refused():
    deep = "[" * 5000 + "]" * 5000
    msg = one_problem(parse_suite, HEAD + f"description: {deep}\n", source="deep.yaml")
    assert msg.startswith("deep.yaml: the YAML is nested too deeply to read")


# ---------------------------------------------------------------- the number of points


MILLION = HEAD.replace("methods: {sdpa: {}}\n", "") + (
    "sweep:\n"
    f"  seq_len: [{', '.join(map(str, range(1, 1001)))}]\n"
    f"  heads: [{', '.join(map(str, range(1, 1001)))}]\n"
    "methods: {sdpa: {}}\n"
)


def test_a_million_point_sweep_is_refused_before_any_point_is_built(monkeypatch):
    monkeypatch.setattr("harness.suite.expansion.candidates",
                        lambda *a, **k: pytest.fail("points were enumerated before the count was checked"))
    msg = one_problem(parse_suite, MILLION, source="big.yaml")
    assert msg == (
        "big.yaml, line 3: the suite expands to 1,000,000 points before `exclude` (sweep seq_len 1000 x "
        "heads 1000 = 1,000,000 combinations, times the method grids sdpa 1), more than its point_limit of "
        f"{DEFAULT_POINT_LIMIT:,} (allowed: at most point_limit points). Narrow the sweep, or, to run them "
        "all, raise the limit: `point_limit: 1000000` in the suite or `--set point_limit=1000000` (`harness "
        "run --max-points` does not: it only runs a slice of the points)."
    )


def test_the_count_adds_method_grids_and_includes():
    spec = SuiteSpec(name="t", workload="attention", sweep={"seq_len": [1, 2, 3]},
                     methods={"sdpa": {}, "math": {"heads": [1, 2], "batch": [1, 2]}},
                     include=(Include("math", {"seq_len": [7, 8]}),), point_limit=10)
    assert count_points(spec) == 3 * (1 + 4) + 2
    (issue,) = expand(spec).issues
    assert ("17 points before `exclude` (sweep seq_len 3 = 3 combinations, times the method grids sdpa 1 + "
            "math 4, plus 2 from `include`), more than its point_limit of 10") in issue.message


def test_point_limit_is_a_suite_key_a_preset_key_and_a_set_option():
    small = HEAD + "sweep: {seq_len: [1, 2, 3]}\n"
    assert len(parse_suite(small + "point_limit: 3\n").points()) == 3
    msg = one_problem(parse_suite, small + "point_limit: 2\n", source="s.yaml")
    assert msg.startswith("s.yaml, line 5: the suite expands to 3 points") and "point_limit of 2 " in msg
    msg = one_problem(parse_suite, small, source="s.yaml", overrides=["point_limit=2"])
    assert msg.startswith("--set point_limit=2: the suite expands to 3 points")
    preset = small + "presets: {tiny: {point_limit: 1}}\n"
    msg = one_problem(parse_suite, preset, source="s.yaml", preset="tiny")
    assert msg.startswith("s.yaml, line 5 (preset 'tiny'): the suite expands to 3 points")
    assert len(parse_suite(MILLION, overrides=["seq_len=64", "sweep.heads=[1, 2]"]).points()) == 2


def test_point_limit_is_checked_like_a_parameter():
    msg = one_problem(parse_suite, HEAD + "point_limit: 0\n", source="s.yaml")
    assert msg.startswith("s.yaml, line 4: point_limit: 0 is out of range; allowed: int in [1, inf) "
                          "(point_limit: most points the suite may expand to")
    msg = one_problem(parse_suite, HEAD, source="s.yaml", overrides=["point_limit=lots"])
    assert msg.startswith("--set point_limit=lots: point_limit: 'lots' is not an int")
