"""Fetch a published set from the Hugging Face Hub: version -> tag, download, sha256 checks, offline use.

A version is a git tag ``vX.Y.Z`` on the set's dataset repo. One version of one repo is kept under
``<root>/<org>--<name>/<version>/``, laid out exactly like the repo (``manifest.json``,
``ipc<N>/train-*.parquet``, ``ipc<N>/soft_labels/...``). Only the files the chosen IPC needs are
downloaded. The top-level ``manifest.json`` lists the sha256 of every file in the repo; every path
in it must lie inside the version's folder (else nothing is read or deleted), and every file of the
IPC is hashed in full after a download and the first time each process opens the set (again only if
a file changes on disk; see :func:`verify_files`). A corrupted file is deleted and fetched once more;
if it is still wrong the published version itself is broken and :class:`IntegrityError` says so.

With ``download=True`` and the Hub reachable, the tag is resolved to its commit (one request), the
files are downloaded at that commit, and a tag moved since the local copy was made is noticed and its
changed files fetched again. A verified local copy is used without the Hub when it cannot be reached,
when ``download=False``, and under ``HF_HUB_OFFLINE=1``. ``huggingface_hub`` is imported lazily.
"""

from __future__ import annotations

import logging
import os
import socket
from pathlib import Path

from ._io import atomic_write_json, cached_sha256
from .layout import MANIFEST, LayoutError, check_manifest, inside, ipc_of, ipc_prefix, read_json_object
from .registry import newest_version, parse_version

log = logging.getLogger(__name__)

REPO_TYPE = "dataset"
_SOURCE = ".fadrm-source.json"  # the commit a local copy was downloaded from
# Where sets are kept when no root is given: like HF_HOME for the Hub's own cache.
CACHE_ENV = "FADRM_DATASETS_CACHE"


class HubError(RuntimeError):
    """A published set cannot be used; the message says what to do about it."""


class RepoNotFoundError(HubError):
    pass


class VersionNotFoundError(HubError):
    pass


class IPCNotPublishedError(HubError):
    pass


class IntegrityError(HubError):
    pass


class OfflineError(HubError):
    pass


class NotDownloadedError(HubError, FileNotFoundError):
    pass


# --- paths and manifests -------------------------------------------------------------------------

def default_root() -> Path:
    """The per-user folder that holds downloaded sets: ``$FADRM_DATASETS_CACHE``, else
    ``$XDG_CACHE_HOME/fadrm_datasets``, else ``~/.cache/fadrm_datasets``."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache).expanduser() / "fadrm_datasets"


def repo_dir(root: str | os.PathLike, repo_id: str) -> Path:
    return Path(root) / repo_id.replace("/", "--")


def version_dir(root: str | os.PathLike, repo_id: str, version: str) -> Path:
    return repo_dir(root, repo_id) / version


def read_manifest(directory: Path) -> dict:
    path = Path(directory) / MANIFEST
    return check_manifest(read_json_object(path), path)


def published_ipcs(manifest: dict) -> list[int]:
    """The IPCs a repo manifest holds (``"ipcs"`` keys, else ``ipc<N>/`` prefixes of its files)."""
    if manifest.get("ipcs"):
        return sorted(int(k) for k in manifest["ipcs"])
    return sorted({ipc for path in manifest.get("files", {}) if (ipc := ipc_of(path)) is not None})


def ipc_files(manifest: dict, ipc: int) -> dict[str, str]:
    """``path -> sha256`` of every file of one IPC in a repo manifest."""
    prefix = ipc_prefix(ipc)
    return {p: h for p, h in manifest.get("files", {}).items() if p.startswith(prefix)}


def local_versions(root: str | os.PathLike, repo_id: str) -> list[str]:
    """Versions with a local copy (a manifest) under ``root``, oldest first."""
    base = repo_dir(root, repo_id)
    if not base.is_dir():
        return []
    found = [d.name for d in base.iterdir() if parse_version(d.name) and (d / MANIFEST).is_file()]
    return sorted(found, key=parse_version)


def is_offline() -> bool:
    """``HF_HUB_OFFLINE`` as huggingface_hub sees it now (its constant, read at import, may be patched)."""
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def _endpoint() -> str:
    from huggingface_hub import constants

    return constants.ENDPOINT


# --- integrity ------------------------------------------------------------------------------------

def check_paths(directory: Path, files) -> dict[str, Path]:
    """Refuse a manifest or index naming a path outside ``directory``, before anything is read or deleted;
    returns each name's resolved path."""
    paths = {}
    for rel in files:
        try:
            paths[rel] = inside(directory, rel)
        except LayoutError as error:
            raise IntegrityError(f"{error}: the set's {MANIFEST} is malformed or hostile; nothing was read "
                                 "or deleted. Report it, or pick another version=") from None
    return paths


def verify_files(directory: Path, files: dict[str, str]) -> list[str]:
    """Paths in ``files`` that are missing under ``directory`` or whose sha256 differs. A set is hashed in
    full the first time a process opens it and whenever one of its files changes on disk."""
    paths = check_paths(Path(directory), files)
    bad = []
    for rel, expected in sorted(files.items()):
        try:
            if cached_sha256(paths[rel]) != expected:
                bad.append(rel)
        except OSError:  # missing or unreadable
            bad.append(rel)
    return bad


def _describe(directory: Path, bad: list[str]) -> str:
    missing = [p for p in bad if not (directory / p).exists()]
    corrupted = [p for p in bad if p not in missing]
    parts = []
    if corrupted:
        parts.append(f"{len(corrupted)} corrupted ({', '.join(corrupted[:3])}{', ...' if len(corrupted) > 3 else ''})")
    if missing:
        parts.append(f"{len(missing)} missing ({', '.join(missing[:3])}{', ...' if len(missing) > 3 else ''})")
    return " and ".join(parts) + " file(s)"


# --- talking to the Hub ---------------------------------------------------------------------------

def _repo_not_found(repo_id: str) -> RepoNotFoundError:
    return RepoNotFoundError(
        f"dataset repo {repo_id!r} not found on {_endpoint()}: check the name (the organisation comes from "
        f"FADRM_HUB_ORG when set), or log in (HF_TOKEN / `hf auth login`) if the repo is private")


def list_versions(repo_id: str, token: str | None = None) -> list[str]:
    """The ``vX.Y.Z`` tags of ``repo_id`` on the Hub, oldest first."""
    from huggingface_hub import HfApi

    if is_offline():
        raise OfflineError(f"cannot list the versions of {repo_id!r}: HF_HUB_OFFLINE is set; "
                           "pass version= for a version you downloaded before, or unset HF_HUB_OFFLINE")
    refs = _hub_call(repo_id, "", token, lambda: HfApi(token=token).list_repo_refs(repo_id, repo_type=REPO_TYPE))
    tags = [t.name for t in refs.tags if parse_version(t.name)]
    return sorted(tags, key=parse_version)


def resolve_version(repo_id: str, version: str | None = None, pinned: str | None = None,
                    root: str | os.PathLike | None = None, online: bool = True,
                    token: str | None = None) -> str:
    """The tag to use: ``version`` if given, else the pinned one, else the newest on the Hub.

    With ``online=False`` (no download asked for) or in offline mode, "newest" means the newest
    version that has a local copy under ``root``.
    """
    if version is not None:
        if parse_version(version) is None:
            raise VersionNotFoundError(f"version {version!r} is not a release tag; give one like 'v1.0.0'")
        return version
    if pinned is not None:
        return pinned
    if not online or is_offline():
        local = newest_version(local_versions(root, repo_id)) if root is not None else None
        if local is None:
            where = f" under {repo_dir(root, repo_id)}" if root is not None else ""
            how = ("unset HF_HUB_OFFLINE and pass download=True" if is_offline() else "pass download=True")
            raise NotDownloadedError(f"no downloaded version of {repo_id!r}{where}; {how} to fetch the newest")
        return local
    try:
        tags = list_versions(repo_id, token)
    except _Unreachable as error:  # fall back on the newest local copy
        local = newest_version(local_versions(root, repo_id)) if root is not None else None
        if local is None:
            raise HubError(f"{error} to find the newest version of {repo_id!r}; check the connection, "
                           "or pass version=") from None
        log.warning("%s; using the newest downloaded version, %s", error, local)
        return local
    newest = newest_version(tags)
    if newest is None:
        raise VersionNotFoundError(f"dataset repo {repo_id!r} has no release tag (vX.Y.Z) yet; "
                                   "publish one with `fadrm-build push ... --version v1.0.0`")
    return newest


class _Unreachable(HubError):
    """The Hub did not answer (no connection, a timeout, a server error)."""


def _first_line(error: BaseException) -> str:
    return str(error).splitlines()[0] if str(error) else type(error).__name__


def _hub_call(repo_id: str, version: str, token: str | None, call):
    """Run a huggingface_hub call, its failures turned into errors that say what to do."""
    from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError, RevisionNotFoundError

    try:
        return call()
    except RevisionNotFoundError:
        try:
            known = ", ".join(list_versions(repo_id, token)) or "none"
        except HubError:
            known = "unknown"
        raise VersionNotFoundError(f"{repo_id!r} has no version {version!r} (published: {known}); "
                                   "pass one of those as version=, or leave it out for the default") from None
    except RepositoryNotFoundError:
        raise _repo_not_found(repo_id) from None
    except HfHubHTTPError as error:
        status = getattr(error.response, "status_code", None)
        if status in (401, 403):
            raise HubError(f"the Hub at {_endpoint()} refused the token ({status}): log in with `hf auth login` "
                           "or set HF_TOKEN to a token that can read the repo") from None
        raise _Unreachable(f"the Hub at {_endpoint()} failed ({status}): {_first_line(error)}") from None
    except Exception as error:
        if not is_transport_error(error):
            raise
        raise _Unreachable(f"cannot reach {_endpoint()} ({_first_line(error)})") from None


# The HTTP stacks huggingface_hub may use: their errors mean the Hub did not answer.
_TRANSPORTS = ("httpx", "httpx2", "httpcore", "httpcore2", "requests", "urllib3", "h11")


def is_transport_error(error: BaseException) -> bool:
    """The Hub did not answer: no connection, a timeout, a transfer cut short. A local OSError (a full
    disk, a permission) is not one: it is reported as itself."""
    from huggingface_hub.errors import LocalEntryNotFoundError

    if isinstance(error, (ConnectionError, TimeoutError, socket.gaierror, LocalEntryNotFoundError)):
        return True
    return type(error).__module__.split(".")[0] in _TRANSPORTS


def _commit_of(repo_id: str, version: str, token: str | None) -> str:
    """The commit the tag ``version`` points at now."""
    from huggingface_hub import HfApi

    return _hub_call(repo_id, version, token, lambda: HfApi(token=token).dataset_info(repo_id, revision=version).sha)


def _snapshot(repo_id: str, version: str, commit: str, dest: Path, patterns: list[str], token: str | None) -> None:
    """Download ``patterns`` of ``commit`` (the tag ``version``'s, pinned so a moving tag cannot mix two)."""
    from huggingface_hub import snapshot_download

    _hub_call(repo_id, version, token, lambda: snapshot_download(
        repo_id, repo_type=REPO_TYPE, revision=commit, allow_patterns=patterns, local_dir=dest, token=token))


def fetch(repo_id: str, ipc: int, version: str, root: str | os.PathLike, download: bool = True,
          token: str | None = None) -> Path:
    """Make sure ``<root>/<org>--<name>/<version>`` holds a verified copy of one IPC; returns that folder.

    Downloads hold a file lock on the version, so processes sharing a root make one good copy.
    """
    dest = version_dir(root, repo_id, version)
    if not download:
        return _fetch(repo_id, ipc, version, dest, False, token)
    from filelock import FileLock

    dest.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(dest) + ".lock"):
        return _fetch(repo_id, ipc, version, dest, True, token)


def _local_manifest(dest: Path, download: bool) -> dict | None:
    """The local copy's manifest; None when there is none, or it is unreadable and may be fetched again
    (a damaged local file is never blamed on the Hub)."""
    if not (dest / MANIFEST).is_file():
        return None
    try:
        return read_manifest(dest)
    except LayoutError as error:
        if not download:
            raise IntegrityError(f"{error}; pass download=True to fetch it again") from None
        log.warning("%s; fetching it again", error)
        return None


def _recorded_commit(dest: Path) -> str | None:
    try:
        return read_json_object(dest / _SOURCE).get("commit")
    except (OSError, LayoutError):
        return None


def _fetch(repo_id: str, ipc: int, version: str, dest: Path, download: bool, token: str | None) -> Path:
    label = f"{repo_id} {version} ipc{ipc}"
    manifest = _local_manifest(dest, download)
    online = download and not is_offline()
    commit = None
    if online:
        try:
            commit = _commit_of(repo_id, version, token)
        except _Unreachable as error:
            if manifest is None:
                raise HubError(f"cannot download {label}: {error}; check the connection, or set HF_ENDPOINT") from None
            log.warning("%s; using the local copy of %s without checking its tag", error, label)
    moved = manifest is not None and commit is not None and _recorded_commit(dest) not in (None, commit)
    if moved:
        log.warning("%s: the tag %s now points at commit %s, not %s as when it was downloaded; fetching its "
                    "changed files", repo_id, version, commit[:10], str(_recorded_commit(dest))[:10])
        manifest = None
    if manifest is None:
        if not download:
            raise NotDownloadedError(f"{label} is not downloaded under {dest}; pass download=True")
        if not online:
            raise OfflineError(f"{label} is not downloaded under {dest} and HF_HUB_OFFLINE is set; "
                               "unset HF_HUB_OFFLINE to download it")
        if not moved:  # an unreadable one: the client would keep it (its etag matches); a moved tag's is replaced
            (dest / MANIFEST).unlink(missing_ok=True)
        _snapshot(repo_id, version, commit, dest, [MANIFEST], token)
        try:
            manifest = read_manifest(dest)
        except (OSError, LayoutError) as error:
            raise IntegrityError(f"{repo_id} {version} has no readable {MANIFEST} ({_first_line(error)}): it is "
                                 "not a published FADRM set, or the version is broken") from None
        atomic_write_json(dest / _SOURCE, {"repo": repo_id, "version": version, "commit": commit})
    check_paths(dest, manifest.get("files", {}))
    _check_ipc(manifest, ipc, repo_id, version)
    files = ipc_files(manifest, ipc)
    bad = verify_files(dest, files)
    if not bad:
        return dest
    problem = f"the local copy of {label} at {dest} has {_describe(dest, bad)}"
    if not download:
        raise IntegrityError(f"{problem}; pass download=True to fetch them again")
    if not online:
        raise OfflineError(f"{problem}, and HF_HUB_OFFLINE is set: unset it to fetch them again")
    if commit is None:
        raise HubError(f"{problem}, and the Hub cannot be reached to fetch them again; check the connection")
    if any((dest / p).exists() for p in bad):
        log.warning("%s; fetching them again", problem)
    else:  # e.g. another IPC of a version already downloaded
        log.info("%s: downloading %d file(s)", label, len(bad))
    for rel in bad:  # paths checked above: every one lies inside dest
        inside(dest, rel).unlink(missing_ok=True)
    _snapshot(repo_id, version, commit, dest, bad, token)
    still = verify_files(dest, {p: files[p] for p in bad})
    if still:
        raise IntegrityError(
            f"{repo_id} {version}: {_describe(dest, still)} on the Hub do not match the sha256 in its {MANIFEST}; "
            "the published version is broken: report it, or pick another version=")
    return dest


def _check_ipc(manifest: dict, ipc: int, repo_id: str, version: str) -> None:
    ipcs = published_ipcs(manifest)
    if ipc not in ipcs:
        raise IPCNotPublishedError(f"{repo_id} {version} has no ipc={ipc} (published IPCs: "
                                   f"{', '.join(map(str, ipcs)) or 'none'}); pass one of those as ipc=")


__all__ = ["CACHE_ENV", "HubError", "IPCNotPublishedError", "IntegrityError", "NotDownloadedError", "OfflineError",
           "RepoNotFoundError", "VersionNotFoundError", "default_root", "fetch", "ipc_files", "list_versions", "local_versions",
           "check_paths", "is_transport_error", "published_ipcs", "read_manifest", "resolve_version", "verify_files", "version_dir"]
