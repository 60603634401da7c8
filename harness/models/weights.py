"""One resolver for every weight specification a suite can give in a ``checkpoint`` parameter.

Forms of ``spec``:

- ``""``: random weights (no file);
- a local file path (``.pt`` / ``.pth`` / ``.bin`` / ``.safetensors``);
- ``hf:ORG/NAME[/FILE]``: a file of a Hugging Face model repo, fetched with
  ``huggingface_hub.hf_hub_download`` into the standard hub cache (``HF_HUB_CACHE``, else
  ``HF_HOME/hub``, else ``~/.cache/huggingface/hub``). Without ``FILE``, ``model.safetensors``
  then ``model.pt`` are tried (facebook/VGGT-1B has both). ``HF_HUB_OFFLINE=1`` reads the cache
  only. The environment is read at call time (huggingface_hub reads it once, at import);
- ``proxy:NAME``: the committed trained proxy ``harness/proxies/NAME/model.safetensors``.

:func:`resolve_weights` turns a spec into :class:`Weights` (downloading when needed);
:func:`check_weights` lists the problems of a spec without downloading (the suite loader's
path check). A weight file that cannot be fetched raises :class:`WeightsError` with one
paragraph naming the repo and files, the cache looked in, and the manual alternative.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from harness.errors import HarnessError
from harness.models.checkpoint import SAFETENSORS_SUFFIXES, TORCH_SUFFIXES

HF_PREFIX = "hf:"
PROXY_PREFIX = "proxy:"
#: Files tried, in order, for ``hf:ORG/NAME`` without a file name.
HF_DEFAULT_FILES = ("model.safetensors", "model.pt")
#: Folder of the committed trained proxies: ``<PROXY_ROOT>/<name>/model.safetensors``.
PROXY_ROOT = Path(__file__).resolve().parent.parent / "proxies"
PROXY_FILE = "model.safetensors"
#: Hex characters of the sha256 kept in :attr:`Weights.sha256`.
SHA_CHARS = 16
_HASH_CHUNK_BYTES = 1 << 20
_REPO_PART = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_TRUE = {"1", "on", "yes", "true"}
_HASHES: dict[tuple[str, int, int], str] = {}


class WeightsError(HarnessError, FileNotFoundError):
    """A weight specification names no readable file (bad syntax, unknown proxy, not downloadable)."""


@dataclass(frozen=True)
class Weights:
    """A resolved weight specification.

    spec: what the suite gave; path: the local file (None for random weights); label:
    ``"random"``, ``"proxy:NAME"``, ``"hf:ORG/NAME/FILE"`` or the file name; sha256: the first
    16 hex characters of the file's sha256 (``""`` for random weights).
    """

    spec: str
    path: Path | None
    label: str
    sha256: str


# --------------------------------------------------------------------------- hub environment


def hf_cache_dir() -> Path:
    """The hub cache huggingface_hub would use with the current environment (read now)."""
    env = os.environ
    cache = env.get("HF_HUB_CACHE") or env.get("HUGGINGFACE_HUB_CACHE")
    if not cache:
        home = env.get("HF_HOME") or os.path.join(env.get("XDG_CACHE_HOME") or "~/.cache", "huggingface")
        cache = os.path.join(home, "hub")
    return Path(os.path.expandvars(os.path.expanduser(cache)))


def hf_offline() -> bool:
    """Whether ``HF_HUB_OFFLINE`` (or ``TRANSFORMERS_OFFLINE``) is set to a true value now."""
    value = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return value.strip().lower() in _TRUE


# --------------------------------------------------------------------------- parsing


def _parse_hf(spec: str) -> tuple[str, str | None]:
    """``hf:ORG/NAME[/FILE]`` -> (``ORG/NAME``, FILE or None); ValueError naming the spec otherwise."""
    parts = spec[len(HF_PREFIX):].split("/")
    if len(parts) < 2 or not all(_REPO_PART.match(p) for p in parts[:2]) or any(not p for p in parts[2:]):
        raise ValueError(
            f"checkpoint {spec!r} is not a valid Hugging Face spec; expected hf:ORG/NAME or "
            "hf:ORG/NAME/FILE (e.g. hf:facebook/VGGT-1B or hf:facebook/VGGT-1B/model.pt)"
        )
    filename = "/".join(parts[2:]) or None
    if filename is not None:
        allowed = TORCH_SUFFIXES + SAFETENSORS_SUFFIXES
        if not filename.lower().endswith(allowed):
            raise ValueError(
                f"checkpoint {spec!r} names file {filename!r} of an unknown format; allowed suffixes: "
                + ", ".join(allowed)
            )
    return "/".join(parts[:2]), filename


def list_proxies() -> list[str]:
    """Names of the proxies with a ``model.safetensors`` under :data:`PROXY_ROOT`, sorted."""
    if not PROXY_ROOT.is_dir():
        return []
    return sorted(d.name for d in PROXY_ROOT.iterdir() if (d / PROXY_FILE).is_file())


def _proxy_path(spec: str) -> Path:
    name = spec[len(PROXY_PREFIX):]
    path = PROXY_ROOT / name / PROXY_FILE
    if not name or "/" in name or "\\" in name or not path.is_file():
        found = ", ".join(list_proxies()) or "none"
        raise WeightsError(
            f"checkpoint {spec!r}: no trained proxy {name!r} (no {path}); proxies found under "
            f"{PROXY_ROOT}/*/{PROXY_FILE}: {found}"
        )
    return path


def weight_file_problem(path: str | Path, label: str | None = None) -> str | None:
    """Why the local file ``path`` cannot be a weight file, in one sentence naming it as ``label``
    (default: the path); None when it may be one. Only what the file system tells (it exists, is a
    file, is not empty, can be opened, has a known suffix): its content is read when it is loaded.
    """
    shown = repr(str(path) if label is None else label)
    path = Path(path).expanduser()
    suffixes = TORCH_SUFFIXES + SAFETENSORS_SUFFIXES
    allowed = f"a weight file (allowed suffixes: {', '.join(suffixes)})"
    if path.is_dir():
        inside = sorted(p.name for p in path.iterdir() if p.suffix.lower() in suffixes)
        hint = f"; weight files in it: {', '.join(inside[:5])}{' ...' * (len(inside) > 5)}" if inside else ""
        return f"checkpoint {shown} is a folder (directory), not a checkpoint file; give {allowed}{hint}"
    if not path.is_file():
        if path.exists():
            return f"checkpoint {shown} is not a regular file; give {allowed}"
        return (f"checkpoint {shown} does not exist (expected a local .pt/.pth/.safetensors file, "
                "hf:ORG/NAME[/FILE] or proxy:NAME)")
    if path.suffix.lower() not in suffixes:
        return f"checkpoint {shown} has an unknown format suffix {path.suffix or '(none)'!r}; give {allowed}"
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
    except OSError as e:
        return f"checkpoint {shown} cannot be read: {e.strerror or type(e).__name__}"
    if size == 0:
        return (f"checkpoint {shown} is empty (0 bytes); a weight file holds the tensors (an interrupted "
                "download or copy leaves an empty file: fetch or save it again)")
    return None


def _local_problem(spec: str) -> str | None:
    return weight_file_problem(spec, spec)


def check_weights(spec: str) -> list[str]:
    """Problems of ``spec`` for the suite loader, without downloading anything.

    A local path that does not exist, is a folder, is empty, cannot be opened or has an unknown
    suffix (:func:`weight_file_problem`), an unknown proxy, a malformed ``hf:`` spec.
    ``hf:`` specs are checked for syntax only (whether the repo and file exist is known only by
    asking the Hub or the cache, which happens when the point's model is built).
    """
    if not spec:
        return []
    if spec.startswith(HF_PREFIX):
        try:
            _parse_hf(spec)
        except ValueError as e:
            return [str(e)]
        return []
    if spec.startswith(PROXY_PREFIX):
        try:
            _proxy_path(spec)
        except WeightsError as e:
            return [str(e)]
        return []
    problem = _local_problem(spec)
    return [problem] if problem else []


# --------------------------------------------------------------------------- download


def _hf_errors() -> tuple[type[BaseException], type[BaseException]]:
    """(entry-not-found, repo-or-revision-not-found) exception types of the installed huggingface_hub."""
    try:
        from huggingface_hub.errors import EntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError
    except ImportError:  # huggingface_hub < 0.23
        from huggingface_hub.utils import EntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError
    return EntryNotFoundError, (RepositoryNotFoundError, RevisionNotFoundError)  # type: ignore[return-value]


@contextlib.contextmanager
def _hub_offline_constant(offline: bool) -> Iterator[None]:
    """While set, huggingface_hub's import-time ``constants.HF_HUB_OFFLINE`` says ``offline`` too.

    ``local_files_only`` keeps the file look-up in the cache, but huggingface_hub also reads its
    offline constant elsewhere (e.g. 2.x fetches an agent registry for its user agent unless it is
    set); when offline mode was switched on after import, those would still reach for the network.
    """
    if not offline:
        yield
        return
    from huggingface_hub import constants

    before = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = before


def hf_download(repo: str, filenames: Sequence[str], *, what: str = "", manual: str = "") -> tuple[Path, str]:
    """Fetch the first of ``filenames`` that ``repo`` has into the hub cache -> (local path, file name).

    The cache directory and offline mode are read from the environment now (``HF_HUB_CACHE`` /
    ``HF_HOME``, ``HF_HUB_OFFLINE``); offline, only the cache is consulted and nothing touches the
    network. When no file can be had (offline and not cached, the Hub unreachable, the repo or
    every file missing), raise :class:`WeightsError` with one paragraph naming ``what`` (default:
    ``hf:<repo>``), the repo and files, the cache directory, the reason, and the manual alternative
    (``manual``: how to pass the downloaded file; default ``checkpoint=/local/path/FILE``).
    """
    from huggingface_hub import hf_hub_download

    entry_missing, repo_missing = _hf_errors()
    cache, offline = hf_cache_dir(), hf_offline()
    reasons: list[str] = []
    for filename in filenames:
        try:
            with _hub_offline_constant(offline):
                path = hf_hub_download(repo, filename, cache_dir=str(cache), local_files_only=offline)
            return Path(path), filename
        except repo_missing as e:
            reasons.append(f"repo {repo} not found or not accessible ({type(e).__name__})")
            break
        except entry_missing as e:
            if not isinstance(e, FileNotFoundError):  # RemoteEntryNotFoundError: the Hub answered
                reasons.append(f"{filename} is not in the repo")
            else:  # LocalEntryNotFoundError: not cached, and offline or the Hub unreachable
                unreachable = "" if offline else " and the Hub could not be reached"
                reasons.append(f"{filename} is not in the cache{unreachable}")
        except Exception as e:  # connection errors, HTTP errors, timeouts
            first = str(e).strip().splitlines()[0] if str(e).strip() else ""
            reasons.append(f"{filename}: {type(e).__name__}{': ' + first if first else ''}")
    file_hint = filenames[0]
    mode = ("HF_HUB_OFFLINE is set, so only the cache was read" if offline
            else "the Hub was asked and the cache read")
    manual = manual or f"checkpoint=/local/path/{file_hint}"
    raise WeightsError(
        f"cannot get the weights {what or HF_PREFIX + repo}: tried {', '.join(filenames)} of the Hugging "
        f"Face repo {repo} in the hub cache {cache} ({mode}; {'; '.join(reasons)}). Either make them "
        f"available there (network access, or HF_HUB_CACHE / HF_HOME pointing at a filled cache), or "
        f"download the file yourself, e.g. `hf download {repo} {file_hint} --local-dir /local/path` "
        f"(older clients: `huggingface-cli download {repo} {file_hint} --local-dir /local/path`), and "
        f"pass {manual}."
    )


# --------------------------------------------------------------------------- resolution


def file_sha256(path: str | Path) -> str:
    """First :data:`SHA_CHARS` hex characters of the sha256 of ``path``; cached by (path, size, mtime)."""
    path = Path(path).resolve()
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns)
    if key not in _HASHES:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            while chunk := f.read(_HASH_CHUNK_BYTES):
                h.update(chunk)
        _HASHES[key] = h.hexdigest()[:SHA_CHARS]
    return _HASHES[key]


def resolve_weights(spec: str) -> Weights:
    """The local file of a weight spec (downloading ``hf:`` files into the hub cache when needed).

    Raises :class:`WeightsError` (a FileNotFoundError) for a missing local file or folder, an
    unknown proxy, or an ``hf:`` file that cannot be had (one paragraph, see :func:`hf_download`),
    and ValueError for a malformed ``hf:`` spec.
    """
    if not spec:
        return Weights(spec=spec, path=None, label="random", sha256="")
    if spec.startswith(HF_PREFIX):
        repo, filename = _parse_hf(spec)
        path, got = hf_download(repo, [filename] if filename else list(HF_DEFAULT_FILES), what=spec)
        label = f"{HF_PREFIX}{repo}/{got}"
    elif spec.startswith(PROXY_PREFIX):
        path, label = _proxy_path(spec), spec
    else:
        problem = _local_problem(spec)
        if problem:
            raise WeightsError(problem)
        path = Path(spec).expanduser()
        label = path.name
    return Weights(spec=spec, path=path, label=label, sha256=file_sha256(path))


__all__ = [
    "HF_DEFAULT_FILES",
    "PROXY_ROOT",
    "Weights",
    "WeightsError",
    "check_weights",
    "file_sha256",
    "hf_cache_dir",
    "hf_download",
    "hf_offline",
    "list_proxies",
    "resolve_weights",
    "weight_file_problem",
]
