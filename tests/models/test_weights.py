"""Weight specifications (``harness.models.weights``): random, local files, ``hf:`` through the hub
cache (offline, a cache this file fills itself), ``proxy:``; and their use by the vggt and swin
workloads. Nothing here reaches the network: every test that could runs under ``no_network``."""

from __future__ import annotations

import hashlib
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from harness import registry
from harness.models import weights as W
from harness.models.swin import build_swin
from harness.models.vggt import build_vggt, save_checkpoint
from harness.models.weights import Weights, WeightsError, check_weights, resolve_weights
from harness.run.options import RunOptions
from harness.run.runner import run_suite
from harness.store import columns as C
from harness.store import load
from harness.suite import SuiteError, parse_suite
from harness.workloads.swin import SwinParams, SwinWorkload
from harness.workloads.vggt import VGGTWorkload


@pytest.fixture(autouse=True)
def _builtins() -> None:
    """The built-in workloads and methods (suites here name the methods; run alone, no other test
    module has loaded them)."""
    registry.load_builtins()

pytestmark = pytest.mark.usefixtures("one_thread")

COMMIT = "0123456789abcdef0123456789abcdef01234567"


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Any attempt to resolve a host name or open a connection is refused and fails the test at
    teardown (even when the code under test catches the refusal)."""
    attempts: list[str] = []

    def refuse(*args, **kwargs):
        attempts.append(repr(args))
        raise OSError("network access refused by the test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    yield
    assert not attempts, f"network access attempted: {attempts}"


@pytest.fixture
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_network: None) -> Path:
    """An empty hub cache set through HF_HUB_CACHE, offline mode on (read at call time)."""
    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return cache


def put_in_cache(cache: Path, repo: str, filename: str, data: bytes | None = None) -> Path:
    """Place a file in the real hub cache layout: models--ORG--NAME/{refs/main, snapshots/<commit>/FILE}
    (the snapshot file a symlink to blobs/<sha256>, as huggingface_hub writes it)."""
    folder = cache / ("models--" + repo.replace("/", "--"))
    (folder / "refs").mkdir(parents=True, exist_ok=True)
    (folder / "refs" / "main").write_text(COMMIT)
    snap = folder / "snapshots" / COMMIT / filename
    snap.parent.mkdir(parents=True, exist_ok=True)
    if data is not None:
        blob = folder / "blobs" / hashlib.sha256(data).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        snap.symlink_to(blob)
    return snap


def _sha16(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


# ----------------------------------------------------------------------------- random and local files


def test_empty_spec_is_random_weights_without_a_file():
    assert resolve_weights("") == Weights(spec="", path=None, label="random", sha256="")
    assert check_weights("") == []


def test_local_file_resolves_to_itself_with_its_name_and_hash(tmp_path: Path):
    f = tmp_path / "vggt.safetensors"
    f.write_bytes(b"weights-a")
    w = resolve_weights(str(f))
    assert (w.path, w.label, w.sha256) == (f, "vggt.safetensors", _sha16(f))
    assert w.sha256 == hashlib.sha256(b"weights-a").hexdigest()[:16]


def test_hash_is_recomputed_when_the_file_changes(tmp_path: Path):
    f = tmp_path / "m.pt"
    f.write_bytes(b"one")
    first = resolve_weights(str(f)).sha256
    f.write_bytes(b"other content")  # another size: a cache keyed by path alone would return `first`
    assert resolve_weights(str(f)).sha256 == hashlib.sha256(b"other content").hexdigest()[:16] != first


def test_hash_is_cached_by_path_size_and_mtime(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    f = tmp_path / "m.pt"
    f.write_bytes(b"abc")
    want = hashlib.sha256(b"abc").hexdigest()[:16]
    assert resolve_weights(str(f)).sha256 == want
    monkeypatch.setattr(W.hashlib, "sha256", lambda: pytest.fail("hash recomputed for an unchanged file"))
    assert resolve_weights(str(f)).sha256 == want


def test_missing_local_file_is_a_problem_and_an_error(tmp_path: Path):
    missing = tmp_path / "nowhere" / "model.pt"
    problems = check_weights(str(missing))
    assert len(problems) == 1 and str(missing) in problems[0] and "does not exist" in problems[0]
    with pytest.raises(FileNotFoundError, match="does not exist"):
        resolve_weights(str(missing))


def test_folder_given_as_checkpoint_is_refused(tmp_path: Path):
    problems = check_weights(str(tmp_path))
    assert len(problems) == 1 and "is a folder" in problems[0]
    with pytest.raises(WeightsError, match="is a folder"):
        resolve_weights(str(tmp_path))


def test_folder_is_called_a_directory_not_a_missing_file_and_its_weight_files_are_named(tmp_path: Path):
    (tmp_path / "model.safetensors").write_bytes(b"x")
    (problem,) = check_weights(str(tmp_path))
    assert problem.startswith(f"checkpoint {str(tmp_path)!r} is a folder (directory), not a checkpoint file; "
                              "give a weight file (allowed suffixes: .pt, .pth, .bin, .safetensors)")
    assert problem.endswith("weight files in it: model.safetensors") and "does not exist" not in problem


def test_empty_checkpoint_file_is_refused_with_the_reason(tmp_path: Path):
    empty = tmp_path / "model.pt"
    empty.write_bytes(b"")
    (problem,) = check_weights(str(empty))
    assert problem.startswith(f"checkpoint {str(empty)!r} is empty (0 bytes);")
    with pytest.raises(WeightsError, match=r"is empty \(0 bytes\)"):
        resolve_weights(str(empty))


def test_checkpoint_of_an_unknown_format_is_refused_before_running(tmp_path: Path):
    odd = tmp_path / "model.ckpt"
    odd.write_bytes(b"x")
    (problem,) = check_weights(str(odd))
    assert problem == (f"checkpoint {str(odd)!r} has an unknown format suffix '.ckpt'; give a weight file "
                       "(allowed suffixes: .pt, .pth, .bin, .safetensors)")


def test_an_empty_checkpoint_in_a_suite_is_refused_at_load_naming_the_set_option(tmp_path: Path):
    empty = tmp_path / "model.pt"
    empty.write_bytes(b"")
    text = "name: t\nworkload: vggt\nfixed: {preset: vggt-tiny, height: 28, width: 28}\nmethods: {vggt: {}}\n"
    with pytest.raises(SuiteError) as err:
        parse_suite(text, overrides=[f"checkpoint={empty}"])
    (msg,) = err.value.problems
    assert msg.startswith(f"--set checkpoint={empty}: checkpoint {str(empty)!r} is empty (0 bytes)")


def _cut(path: Path) -> Path:
    torch.manual_seed(0)
    save_checkpoint(build_vggt("vggt-tiny"), path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


# (file name, how to make it, the one-line reason load_checkpoint gives)
UNREADABLE = [
    ("empty.pt", lambda p: p.write_bytes(b""), "is empty (0 bytes)"),
    ("junk.pt", lambda p: p.write_bytes(b"not a checkpoint"), ": UnpicklingError: Unsupported operand"),
    ("junk.safetensors", lambda p: p.write_bytes(b"not a checkpoint"),
     ": SafetensorError: Error while deserializing header"),
    ("cut.pt", _cut, ": RuntimeError: PytorchStreamReader failed reading zip archive"),
    ("folder.pt", lambda p: p.mkdir(), "is a folder (directory), not a checkpoint file"),
]


@pytest.mark.parametrize(("name", "make", "reason"), UNREADABLE, ids=[c[0] for c in UNREADABLE])
def test_vggt_load_checkpoint_says_in_one_line_why_a_file_cannot_be_read(tmp_path, name, make, reason):
    from harness.models.vggt import CheckpointError, load_checkpoint

    path = tmp_path / name
    make(path)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(build_vggt("vggt-tiny"), path)
    msg = str(err.value)
    assert reason in msg and str(path) in msg and "\n" not in msg, msg


# ----------------------------------------------------------------------------- proxy:


@pytest.fixture
def proxies(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "proxies"
    for name in ("vggt-proxy", "swin-proxy"):
        (root / name).mkdir(parents=True)
        (root / name / "model.safetensors").write_bytes(name.encode())
    (root / "half-done").mkdir()  # a folder without weights is not a proxy
    monkeypatch.setattr(W, "PROXY_ROOT", root)
    return root


def test_proxy_resolves_to_its_committed_file(proxies: Path):
    w = resolve_weights("proxy:vggt-proxy")
    assert w.path == proxies / "vggt-proxy" / "model.safetensors"
    assert (w.label, w.sha256) == ("proxy:vggt-proxy", hashlib.sha256(b"vggt-proxy").hexdigest()[:16])
    assert check_weights("proxy:vggt-proxy") == []


def test_unknown_proxy_lists_the_proxies_found(proxies: Path):
    problems = check_weights("proxy:nope")
    assert len(problems) == 1
    assert "'nope'" in problems[0] and "proxies found" in problems[0]
    assert problems[0].endswith("swin-proxy, vggt-proxy")  # sorted, and half-done (no weights) left out
    with pytest.raises(WeightsError, match="swin-proxy, vggt-proxy"):
        resolve_weights("proxy:nope")


def test_the_proxy_root_is_the_package_folder():
    assert W.PROXY_ROOT == Path(W.__file__).resolve().parent.parent / "proxies"


# ----------------------------------------------------------------------------- hf:


def test_hf_file_is_found_in_the_cache_offline(hub: Path):
    snap = put_in_cache(hub, "acme/tiny", "weights.pt", b"tiny-weights")
    w = resolve_weights("hf:acme/tiny/weights.pt")
    assert w.path is not None and w.path.resolve() == snap.resolve()
    assert w.label == "hf:acme/tiny/weights.pt"
    assert w.sha256 == hashlib.sha256(b"tiny-weights").hexdigest()[:16]


def test_hf_without_a_file_prefers_model_safetensors(hub: Path):
    put_in_cache(hub, "acme/both", "model.pt", b"pt")
    put_in_cache(hub, "acme/both", "model.safetensors", b"st")
    assert resolve_weights("hf:acme/both").label == "hf:acme/both/model.safetensors"


def test_hf_without_a_file_falls_back_to_model_pt(hub: Path):
    put_in_cache(hub, "facebook/VGGT-1B", "model.pt", b"pt")
    w = resolve_weights("hf:facebook/VGGT-1B")
    assert w.label == "hf:facebook/VGGT-1B/model.pt" and w.path.read_bytes() == b"pt"


def test_hf_not_cached_offline_fails_with_one_paragraph(hub: Path):
    with pytest.raises(WeightsError) as err:
        resolve_weights("hf:facebook/VGGT-1B/model.pt")
    msg = str(err.value)
    assert "\n" not in msg  # one paragraph: the runner keeps the first line of an error
    assert "facebook/VGGT-1B" in msg and "model.pt" in msg
    assert str(hub) in msg and "HF_HUB_OFFLINE" in msg
    assert "checkpoint=/local/path/model.pt" in msg
    assert "hf download facebook/VGGT-1B model.pt" in msg


def test_hf_not_cached_names_every_default_file_tried(hub: Path):
    msg = str(pytest.raises(WeightsError, resolve_weights, "hf:acme/none").value)
    assert "model.safetensors" in msg and "model.pt" in msg and "acme/none" in msg


def test_hf_cache_dir_follows_hf_home_when_no_hub_cache_is_set(tmp_path: Path, monkeypatch):
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HUGGINGFACE_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hfhome"))
    assert W.hf_cache_dir() == tmp_path / "hfhome" / "hub"


@pytest.mark.parametrize(
    ("spec", "says"),
    [("hf:", "hf:ORG/NAME"), ("hf:acme", "hf:ORG/NAME"), ("hf:acme/", "hf:ORG/NAME"),
     ("hf:/tiny", "hf:ORG/NAME"), ("hf:acme/tiny/", "hf:ORG/NAME"),
     ("hf:acme/tiny/notes.txt", "unknown format")],
)
def test_malformed_hf_spec_is_a_problem(spec: str, says: str):
    problems = check_weights(spec)
    assert len(problems) == 1 and repr(spec) in problems[0] and says in problems[0]
    with pytest.raises(ValueError, match=says):
        resolve_weights(spec)


def test_check_weights_never_downloads(monkeypatch: pytest.MonkeyPatch, no_network: None):
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", lambda *a, **k: pytest.fail("download attempted"))
    assert check_weights("hf:facebook/VGGT-1B") == []
    assert check_weights("hf:facebook/VGGT-1B/model.pt") == []


# ----------------------------------------------------------------------------- vggt workload


def _point(text: str):
    (point,) = parse_suite(text).points()
    return point


def test_vggt_tiny_checkpoint_in_the_hub_cache_loads_through_the_workload(hub: Path):
    torch.manual_seed(7)  # not the point's seed (0): a load that silently kept random init would differ
    saved = build_vggt("vggt-tiny")
    snap = put_in_cache(hub, "acme/vggt-tiny", "model.safetensors")
    save_checkpoint(saved, snap)
    point = _point("name: t\nworkload: vggt\nfixed: {preset: vggt-tiny, checkpoint: 'hf:acme/vggt-tiny'}\n"
                   "methods: {vggt: {}}\n")
    model = VGGTWorkload().build_model(point)
    got, want = model.state_dict(), saved.state_dict()
    assert got.keys() == want.keys()
    assert all(torch.equal(got[k], want[k]) for k in want)
    torch.manual_seed(0)
    random = build_vggt("vggt-tiny").state_dict()
    assert not all(torch.equal(random[k], want[k]) for k in want)


def test_vggt_hub_checkpoint_of_another_shape_is_refused_strictly(hub: Path):
    save_checkpoint(torch.nn.Linear(2, 2), put_in_cache(hub, "acme/wrong", "model.safetensors"))
    point = _point("name: t\nworkload: vggt\nfixed: {preset: vggt-tiny, checkpoint: 'hf:acme/wrong'}\n"
                   "methods: {vggt: {}}\n")
    with pytest.raises(ValueError, match="missing keys"):
        VGGTWorkload().build_model(point)


def test_vggt_suite_with_unknown_proxy_is_refused_before_running(proxies: Path):
    with pytest.raises(SuiteError, match=r"proxy 'nope'.*swin-proxy, vggt-proxy"):
        parse_suite("name: t\nworkload: vggt\nfixed: {preset: vggt-tiny, checkpoint: 'proxy:nope'}\n"
                    "methods: {vggt: {}}\n")


def test_vggt_suite_with_an_uncached_hf_spec_validates_and_the_point_fails_with_the_paragraph(
    hub: Path, tmp_path: Path
):
    text = ("name: t\nworkload: vggt\nfixed: {preset: vggt-tiny, frames: 1, height: 28, width: 28, "
            "checkpoint: 'hf:acme/absent'}\nmethods: {vggt: {}}\n"
            "timing: {warmup_n: 0, min_samples: 1, max_samples: 1, budget_s: 0.0}\n")
    run_suite(parse_suite(text), tmp_path / "run", RunOptions(progress=False, argv=["test"]))
    row = load(tmp_path / "run").points.iloc[0]
    assert row[C.STATUS] == "failed"
    assert "model build failed: WeightsError: cannot get the weights hf:acme/absent" in row[C.ERROR]
    assert "checkpoint=/local/path/model.safetensors" in row[C.ERROR]


# ----------------------------------------------------------------------------- swin


def test_swin_pretrained_offline_fails_with_one_paragraph_without_the_network(hub: Path):
    with pytest.raises(WeightsError) as err:
        build_swin("swin_t", 224, pretrained=True)
    msg = str(err.value)
    assert "\n" not in msg
    assert "pretrained: true for swin_t" in msg
    assert "timm/swin_tiny_patch4_window7_224" in msg and "model.safetensors" in msg
    assert str(hub) in msg
    assert "checkpoint=/local/path/model.safetensors with pretrained: false" in msg


def test_swin_pretrained_loads_timms_file_from_the_hub_cache(hub: Path):
    from timm.models import get_pretrained_cfg

    torch.manual_seed(11)
    ref = build_swin("swin_t", 64, seed=5)
    repo = get_pretrained_cfg("swin_tiny_patch4_window7_224").hf_hub_id
    save_checkpoint(ref, put_in_cache(hub, repo, "model.safetensors"))
    model = build_swin("swin_t", 64, seed=0, pretrained=True)
    got, want = model.state_dict(), ref.state_dict()
    assert all(torch.equal(got[k], want[k]) for k in want)
    assert all(not m.fused_attn for m in model.modules() if hasattr(m, "fused_attn"))


def test_swin_pretrained_is_refused_for_swin_micro_and_with_a_checkpoint(tmp_path: Path):
    with pytest.raises(ValueError, match="needs a timm model"):
        build_swin("swin_micro", 64, pretrained=True)
    ckpt = tmp_path / "m.pth"
    ckpt.write_bytes(b"x")
    with pytest.raises(ValueError, match="set only one"):
        build_swin("swin_t", 64, checkpoint=ckpt, pretrained=True)


def test_swin_check_paths_reports_pretrained_conflicts_without_downloading(tmp_path: Path, no_network: None):
    wl = SwinWorkload()
    assert wl.check_paths(SwinParams(model="swin_t", pretrained=True)) == []
    (micro,) = wl.check_paths(SwinParams(model="swin_micro", pretrained=True))
    assert "swin_micro" in micro and "pretrained" in micro
    ckpt = tmp_path / "m.pth"
    ckpt.write_bytes(b"x")
    (both,) = wl.check_paths(SwinParams(model="swin_t", pretrained=True, checkpoint=str(ckpt)))
    assert "set only one" in both


def test_swin_pretrained_offline_is_a_failed_point_with_the_paragraph(
    hub: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    text = ("name: t\nworkload: swin\nreference: fp32\nfixed: {model: swin_t, img_size: 64, batch: 1, "
            "calib_images: 1, pretrained: true}\nmethods: {fp32: {}}\n"
            "timing: {warmup_n: 0, min_samples: 1, max_samples: 1, budget_s: 0.0}\n")
    import huggingface_hub

    real = huggingface_hub.hf_hub_download
    monkeypatch.setattr(huggingface_hub, "hf_hub_download",
                        lambda *a, **k: pytest.fail("the suite check downloads"))
    suite = parse_suite(text)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", real)
    run_suite(suite, tmp_path / "run", RunOptions(progress=False, argv=["test"]))
    row = load(tmp_path / "run").points.iloc[0]
    assert row[C.STATUS] == "failed"
    assert ("model build failed: WeightsError: cannot get the weights pretrained: true for swin_t"
            in row[C.ERROR])
    assert "with pretrained: false" in row[C.ERROR]
