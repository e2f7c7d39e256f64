"""Fetch a published set from the Hugging Face Hub: version -> tag, download, sha256 checks, offline use.

A version is a git tag ``vX.Y.Z`` on the set's dataset repo. One version of one repo is kept under
``<root>/<org>--<name>/<version>/``, laid out exactly like the repo (``manifest.json``,
``ipc<N>/train-*.parquet``, ``ipc<N>/soft_labels/...``). Only the files the chosen IPC needs are
downloaded. The top-level ``manifest.json`` lists the sha256 of every file in the repo; each file is
checked against it after a download, and again (cheaply, see :func:`verify_files`) whenever a local
copy is used. A corrupted file is deleted and fetched once more; if it is still wrong the published
version itself is broken and :class:`IntegrityError` says so.

A complete, verified local copy is used without contacting the Hub at all, so ``HF_HUB_OFFLINE=1``
(or no network) works once a version has been downloaded. ``huggingface_hub`` is imported lazily.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from ._io import atomic_write_json, sha256_file
from .layout import MANIFEST, ipc_of, ipc_prefix, read_json_object
from .registry import newest_version, parse_version

log = logging.getLogger(__name__)

REPO_TYPE = "dataset"
_STAMPS = ".fadrm-verified.json"
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
    return read_json_object(Path(directory) / MANIFEST)


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

def verify_files(directory: Path, files: dict[str, str], full: bool = False) -> list[str]:
    """Paths in ``files`` that are missing under ``directory`` or whose sha256 differs.

    A file once verified is recorded (size, mtime, sha256) in ``.fadrm-verified.json``; later checks
    hash it again only when its size or mtime changed, so opening a big set stays fast. ``full=True``
    hashes every file regardless.
    """
    directory = Path(directory)
    stamps_path = directory / _STAMPS
    try:
        stamps = {} if full else json.loads(stamps_path.read_text())
    except (OSError, ValueError):
        stamps = {}
    bad, changed = [], False
    for rel, expected in sorted(files.items()):
        path = directory / rel
        try:
            stat = path.stat()
        except OSError:
            bad.append(rel)
            continue
        key = [stat.st_size, stat.st_mtime_ns, expected]
        if stamps.get(rel) == key:
            continue
        if sha256_file(path) == expected:
            stamps[rel] = key
            changed = True
        else:
            stamps.pop(rel, None)
            bad.append(rel)
    if changed or bad:
        try:
            atomic_write_json(stamps_path, stamps)
        except OSError:  # a read-only copy still verifies, just without the shortcut next time
            pass
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
    from huggingface_hub.errors import RepositoryNotFoundError

    if is_offline():
        raise OfflineError(f"cannot list the versions of {repo_id!r}: HF_HUB_OFFLINE is set; "
                           "pass version= for a version you downloaded before, or unset HF_HUB_OFFLINE")
    try:
        refs = HfApi(token=token).list_repo_refs(repo_id, repo_type=REPO_TYPE)
    except RepositoryNotFoundError:
        raise _repo_not_found(repo_id) from None
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
    except HubError:
        raise
    except Exception as error:  # the Hub cannot be reached: fall back on the newest local copy
        local = newest_version(local_versions(root, repo_id)) if root is not None else None
        if local is None:
            raise HubError(f"cannot reach {_endpoint()} to find the newest version of {repo_id!r} "
                           f"({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}); "
                           "check the connection, or pass version=") from None
        log.warning("cannot reach the Hub (%s); using the newest downloaded version, %s", type(error).__name__, local)
        return local
    newest = newest_version(tags)
    if newest is None:
        raise VersionNotFoundError(f"dataset repo {repo_id!r} has no release tag (vX.Y.Z) yet; "
                                   "publish one with `fadrm-build push ... --version v1.0.0`")
    return newest


def _snapshot(repo_id: str, version: str, dest: Path, patterns: list[str], token: str | None) -> None:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import RepositoryNotFoundError, RevisionNotFoundError

    try:
        snapshot_download(repo_id, repo_type=REPO_TYPE, revision=version, allow_patterns=patterns,
                          local_dir=dest, token=token)
    except RevisionNotFoundError:
        try:
            known = ", ".join(list_versions(repo_id, token)) or "none"
        except HubError:
            known = "unknown"
        raise VersionNotFoundError(f"{repo_id!r} has no version {version!r} (published: {known}); "
                                   "pass one of those as version=, or leave it out for the default") from None
    except RepositoryNotFoundError:
        raise _repo_not_found(repo_id) from None
    except OSError as error:  # no connection (LocalEntryNotFoundError), or another refusal by the Hub
        first_line = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise HubError(f"could not download {repo_id} {version} from {_endpoint()}: {first_line}") from None
    if not (dest / MANIFEST).is_file():
        raise HubError(f"{repo_id} {version} has no {MANIFEST}: it is not a published FADRM set")


def fetch(repo_id: str, ipc: int, version: str, root: str | os.PathLike, download: bool = True,
          token: str | None = None) -> Path:
    """Make sure ``<root>/<org>--<name>/<version>`` holds a verified copy of one IPC; returns that folder."""
    dest = version_dir(root, repo_id, version)
    label = f"{repo_id} {version} ipc{ipc}"
    if (dest / MANIFEST).is_file():
        manifest = read_manifest(dest)
        _check_ipc(manifest, ipc, repo_id, version)
        bad = verify_files(dest, ipc_files(manifest, ipc))
        if not bad:
            return dest
        problem = f"the local copy of {label} at {dest} has {_describe(dest, bad)}"
        if not download:
            raise IntegrityError(f"{problem}; pass download=True to fetch them again")
        if is_offline():
            raise OfflineError(f"{problem}, and HF_HUB_OFFLINE is set: unset it to fetch them again")
        if any((dest / p).exists() for p in bad):
            log.warning("%s; fetching them again", problem)
        else:  # e.g. another IPC of a version already downloaded
            log.info("%s: downloading %d file(s)", label, len(bad))
        _refetch(repo_id, version, dest, manifest, bad, token)
        return dest
    if not download:
        raise NotDownloadedError(f"{label} is not downloaded under {dest}; pass download=True")
    if is_offline():
        raise OfflineError(f"{label} is not downloaded under {dest} and HF_HUB_OFFLINE is set; "
                           "unset HF_HUB_OFFLINE to download it")
    _snapshot(repo_id, version, dest, [MANIFEST, ipc_prefix(ipc) + "*"], token)
    manifest = read_manifest(dest)
    _check_ipc(manifest, ipc, repo_id, version)
    bad = verify_files(dest, ipc_files(manifest, ipc), full=True)
    if bad:
        log.warning("%s: %s after download; fetching them again", label, _describe(dest, bad))
        _refetch(repo_id, version, dest, manifest, bad, token)
    return dest


def _check_ipc(manifest: dict, ipc: int, repo_id: str, version: str) -> None:
    ipcs = published_ipcs(manifest)
    if ipc not in ipcs:
        raise IPCNotPublishedError(f"{repo_id} {version} has no ipc={ipc} (published IPCs: "
                                   f"{', '.join(map(str, ipcs)) or 'none'}); pass one of those as ipc=")


def _refetch(repo_id: str, version: str, dest: Path, manifest: dict, bad: list[str], token: str | None) -> None:
    """Delete the bad files, download them once more, and check them again."""
    for rel in bad:
        (dest / rel).unlink(missing_ok=True)
    _snapshot(repo_id, version, dest, bad, token)
    files = {p: manifest["files"][p] for p in bad}
    still = verify_files(dest, files, full=True)
    if still:
        raise IntegrityError(
            f"{repo_id} {version}: {_describe(dest, still)} on the Hub do not match the sha256 in its manifest.json; "
            "the published version is broken: report it, or pick another version=")


__all__ = ["CACHE_ENV", "HubError", "IPCNotPublishedError", "IntegrityError", "NotDownloadedError", "OfflineError",
           "RepoNotFoundError", "VersionNotFoundError", "default_root", "fetch", "ipc_files", "list_versions", "local_versions",
           "published_ipcs", "read_manifest", "resolve_version", "verify_files", "version_dir"]
