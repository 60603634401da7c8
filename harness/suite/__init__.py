"""Suite files: schema, YAML loading, validation and grid expansion.

A suite is a YAML file read with ``yaml.safe_load`` (nothing in it is executed)::

    name: attention-smoke            # required; names the run directory and the rows
    description: ...                 # optional free text
    workload: attention              # required; a registered workload (`harness list`)
    reference: sdpa                  # optional; the method speedup and fidelity compare against;
                                     #   must be one of `methods`
    fixed: {heads: 4}                # parameters applied to every point: workload parameters,
                                     #   common ones (device, dtype, seed) or a method's (applied to
                                     #   the methods that have it). Scalars only.
    sweep: {seq_len: [128, 256]}     # Cartesian axes shared by all methods (a scalar = fixed)
    methods:                         # each method with its own grid of its own parameters
      sdpa: {}                       #   (scalar = fixed, list = swept); a workload/common
      math: {dtype: float32}         #   parameter here overrides fixed/sweep for that method
    include:                         # optional extra points: parameters merged over `fixed`
      - {method: math, seq_len: 1024}   #   (`method` required; lists are swept here too)
    exclude:                         # drop points matching every key of an entry
      - {method: math, seq_len: [256, 512]}   #   (a list value matches any of its items; values are
                                     #   checked like the parameter's, `method` must be one of the
                                     #   suite's methods or include entries)
    timing: {warmup_n: 1, min_samples: 3, max_samples: 10, budget_s: 2}   # TimingConfig fields
    metrics: {evaluate: true, breakdown: false}   # run bench.evaluate / bench.breakdown
    regression: {threshold: 0.05, alpha: 0.01, per_metric: {latency_median_ms: 0.05}}  # for compare
                                     #   (per_metric keys: LATENCY_KEYS, or a q_/fid_ column the
                                     #   workload declares in metrics())
    presets:                         # named overrides, deep-merged over the keys above
      cpu: {timing: {max_samples: 5}}
      gpu: {fixed: {device: cuda, dtype: bfloat16}, sweep: {seq_len: [4096, 16384]}}
    default_preset: cpu              # applied when no --preset is given
    point_limit: 100000              # optional; the most points the suite may expand to
                                     #   (counted before `exclude`; default 100000)

YAML anchors, aliases and ``<<`` merge keys work as in YAML (a key a mapping gives itself wins
over a merged one; a key given twice in one mapping is reported).

Order of application: the file, then the preset (``--preset`` or ``default_preset``;
mappings merge key by key, anything else is replaced), then each ``--set key=value``
(value parsed as a YAML scalar or list). ``--set`` keys are dotted paths
(``timing.max_samples=3``, ``methods.httm.q_ratio=[0.1,0.2]``, ``sweep.seq_len=[64]``) or a bare
parameter name (``frames=16``), which means ``fixed.frames`` and also removes that name from
``sweep`` and from every method's grid, so the value holds for every point (``include``
entries keep their own values).

For a parameter whose type is a tuple, a list of lists is a sweep and a flat list is one value.

Validation happens before anything runs and reports every problem at once, each naming the
file and line (or ``--set``/``--preset``), the field path, the bad value and what is allowed:
one :class:`SuiteError`. A suite file is read as bytes and must be UTF-8, at most 1 MiB
(``MAX_SUITE_BYTES``) and at most 100000 values once YAML aliases are expanded
(``MAX_DOCUMENT_VALUES``; a recursive alias is refused). A suite of more than ``point_limit``
points is refused from the sizes of its sweep and grids, before any point is built; raise the
limit in the file or with ``--set point_limit=N``. Constraints between parameters are checked at
load too: a dataclass's ``__post_init__`` (e.g. VGGT ``height`` a multiple of the patch size) and
the workload's optional ``check_point(workload_params, method, method_params)`` (e.g. VGGT
``layer`` below the preset's depth), each problem at the line of a parameter it names.

Expansion (:meth:`Suite.points`): for each combination of the ``sweep`` axes (in file order),
for each method (in file order), for each combination of that method's grid; then the
``include`` points; minus ``exclude`` matches; duplicates (same hash) kept once. Every point
carries every parameter of its workload, method and :class:`CommonParams` (dataclass
defaults fill the gaps); ``device: auto`` becomes ``cuda`` when available, else ``cpu``. A
point's ``hash`` is the first 16 hex digits of sha256 over the canonical JSON of
``{workload, method, params}``: equal configurations pair across runs and suites, whatever
the suite name or timing settings.

Layout (one stage per module, plain data between them): :mod:`~harness.suite.document` reads
the YAML with its line map and lays the preset and ``--set`` over it;
:mod:`~harness.suite.spec` validates that into a frozen :class:`SuiteSpec` (with the generic
field checker of :mod:`~harness.suite.fields`); :mod:`~harness.suite.expansion` expands a spec
into points (:func:`expand`) and builds one point (:func:`resolve`); :mod:`~harness.suite.loader`
chains them into a :class:`Suite`. :class:`Problems` (:mod:`~harness.suite.problems`) owns the
locations and words every problem.
"""

from harness.suite.catalog import find_suite_file, packaged_suite_files, packaged_suites_dir
from harness.suite.document import (
    MAX_DOCUMENT_VALUES,
    MAX_SUITE_BYTES,
    PRESET_KEYS,
    TOP_LEVEL_KEYS,
    Overlaid,
    decode_suite,
    overlay,
    read_yaml,
)
from harness.suite.expansion import (
    HASH_HEX_CHARS,
    Expansion,
    Rejected,
    count_points,
    expand,
    point_hash,
    resolve,
)
from harness.suite.loader import Suite, load_suite, parse_suite
from harness.suite.problems import Issue, KeyPath, Problems, SuiteError, dotted
from harness.suite.spec import (
    DEFAULT_POINT_LIMIT,
    LATENCY_KEYS,
    REGRESSION_KEYS,
    Include,
    MetricsConfig,
    RegressionConfig,
    SuiteSpec,
    validate,
)

__all__ = [
    "DEFAULT_POINT_LIMIT", "HASH_HEX_CHARS", "LATENCY_KEYS", "MAX_DOCUMENT_VALUES", "MAX_SUITE_BYTES",
    "PRESET_KEYS",
    "REGRESSION_KEYS", "TOP_LEVEL_KEYS",
    "Expansion", "Include", "Issue", "KeyPath", "MetricsConfig", "Overlaid", "Problems",
    "RegressionConfig", "Rejected", "Suite", "SuiteError", "SuiteSpec",
    "count_points", "decode_suite", "dotted", "expand", "find_suite_file", "load_suite", "overlay",
    "packaged_suite_files", "packaged_suites_dir", "parse_suite", "point_hash", "read_yaml", "resolve",
    "validate",
]
