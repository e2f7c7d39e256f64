"""Fetch a published set from the Hugging Face Hub: version -> tag, download, sha256 checks, offline use.

A version is a git tag ``vX.Y.Z`` on the set's dataset repo. One version of one repo is kept under
``<root>/<org>--<name>/<version>/``, laid out exactly like the repo (``manifest.json``,
``ipc<N>/train-*.parquet``, ``ipc<N>/soft_labels/...``). The repo id and the version are checked
before anything touches the disk, so neither can name a folder outside the root.

The top-level ``manifest.json`` records the sha256 and the size of every file of the release; it is
read within bounds and checked against its schema (:mod:`fadrm_datasets.schema`), and every path in it
must lie inside the version's folder, else nothing is read or deleted. Only the files a call needs
are downloaded (the IPC's parquet shards, and its soft labels when asked for), each refused before
its first byte if the Hub's size is not the manifest's, cut off if the transfer runs past it, and
hashed in full afterwards and the first time each process opens the set (again only if a file
changes on disk; see :func:`verify_files`). A corrupted file is deleted and fetched once more; if it
is still wrong the published version itself is broken and :class:`IntegrityError` says so.

A release manifest of format 1, published before sizes were recorded, is migrated when it is
downloaded: the sizes are the Hub's at the release's commit, and the migrated manifest is kept.

With ``download=True`` and the Hub reachable, the tag is resolved to its commit (one request), the
files are downloaded at that commit, and a tag moved since the local copy was made is noticed and its
changed files fetched again. A verified local copy is used without the Hub when it cannot be reached,
when its tag is missing for a moment (a ``push --force`` re-creating it), when ``download=False``, and
under ``HF_HUB_OFFLINE=1``; such a copy is read without writing anything, so a read-only root works.
Writes hold a file lock per version, so processes sharing a root make one good copy.
``huggingface_hub`` is imported lazily.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
import shutil
import socket
from pathlib import Path
from typing import Callable, Iterator

from ._io import atomic_write_json, cached_sha256
from .layout import (DOWNLOAD_SOURCE, MANIFEST, SOFT_LABEL_INDEX, LayoutError, inside, is_parquet_shard, own_file,
                     partial_download, repo_soft_labels, sibling_lock)
from .registry import newest_version, parse_version
from .schema import (MAX_FILE_BYTES, RECORD_FILE, REPO_FORMAT_VERSION, REPO_MANIFEST, REPO_MANIFEST_FILE,
                     SOFT_LABEL_INDEX_FILE, NewerFormatError, check, read)

log = logging.getLogger(__name__)

REPO_TYPE = "dataset"
# Where sets are kept when no root is given: like HF_HOME for the Hub's own cache.
CACHE_ENV = "FADRM_DATASETS_CACHE"
# The parts of an IPC a call may need: its images (parquet shards) and its soft labels.
PARTS = ("images", "soft_labels")


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


class RootError(HubError):
    """The folder that should hold the sets cannot: it is a file, or cannot be written when it must be."""


class NoSpaceError(HubError):
    """The disk holding the root is full, or too full for what must be downloaded."""


# --- names, checked before anything touches the disk ---------------------------------------------

# The Hub's rules for each half of a repo id; "--" is refused too, as it joins the halves in a folder name.
_REPO_PART = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_.-]{0,94}[A-Za-z0-9_])?")


def check_repo_id(repo_id: str) -> str:
    """``repo_id`` if it is a Hub repo id ``ORG/NAME``; a ValueError saying what one is otherwise."""
    parts = repo_id.split("/") if isinstance(repo_id, str) else []
    if len(parts) != 2 or not all(_REPO_PART.fullmatch(p) and "--" not in p and ".." not in p for p in parts):
        raise ValueError(f"repo_id {repo_id!r} is not a Hub repo id: give ORG/NAME, each of letters, digits, "
                         "'_', '-' and '.', starting and ending with a letter or digit, without '--' or '..'")
    return repo_id


def check_version(version: str) -> str:
    if not isinstance(version, str) or parse_version(version) is None:
        raise VersionNotFoundError(f"version {version!r} is not a release tag; give one like 'v1.0.0'")
    return version


def check_root(root: str | os.PathLike) -> Path:
    """``root`` as a path, refused in one line when it is not a folder (it need not exist yet)."""
    root = Path(root).expanduser()
    if root.exists() and not root.is_dir():
        raise RootError(f"root {root} is a file, not a folder: pass a folder to keep the sets in, or leave root "
                        "out for the per-user cache")
    return root


# --- paths and manifests -------------------------------------------------------------------------

def default_root() -> Path:
    """The per-user folder that holds downloaded sets: ``$FADRM_DATASETS_CACHE``, else
    ``$XDG_CACHE_HOME/fadrm_datasets``, else ``~/.cache/fadrm_datasets``."""
    if os.environ.get(CACHE_ENV):
        root = Path(os.environ[CACHE_ENV]).expanduser()
        if root.exists() and not root.is_dir():
            raise RootError(f"{CACHE_ENV}={root} is a file, not a folder: point it at a folder to keep the sets in, "
                            "or unset it for the per-user cache")
        return root
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache).expanduser() / "fadrm_datasets"


def repo_dir(root: str | os.PathLike, repo_id: str) -> Path:
    return Path(root) / check_repo_id(repo_id).replace("/", "--")


def version_dir(root: str | os.PathLike, repo_id: str, version: str) -> Path:
    return repo_dir(root, repo_id) / check_version(version)


def read_manifest(directory: Path, hub_sizes: Callable[[list[str]], dict[str, int]] | None = None) -> dict:
    """A release's top-level manifest, read within bounds and checked against its schema: it records
    a size for every file it names, and no file in place of a folder it names. One of format 1, published
    before sizes were recorded, is migrated to the newest format with the sizes ``hub_sizes`` gives for
    its files (the Hub's, at the release's commit); without ``hub_sizes`` it is refused."""
    path = Path(directory) / MANIFEST
    manifest = read(path, REPO_MANIFEST_FILE)
    if manifest.get("format_version", 1) < REPO_FORMAT_VERSION:
        if hub_sizes is None:
            raise LayoutError(f"{path} is of format {manifest.get('format_version', 1)}, without file sizes: download "
                              "the set again to migrate it, or pick another version=")
        manifest = {**manifest, "format_version": REPO_FORMAT_VERSION, "sizes": hub_sizes(sorted(manifest["files"]))}
        check(manifest, REPO_MANIFEST, path, REPO_MANIFEST_FILE)
    unsized = sorted(set(manifest["files"]) - set(manifest["sizes"]))
    if unsized:
        raise LayoutError(f"{path} records no size for {unsized[0]}; {REPO_MANIFEST_FILE.remedy}")
    folders = {parent for rel in manifest["files"] for parent in _parents(rel)}
    clash = sorted(folders & set(manifest["files"]))
    if clash:
        raise LayoutError(f"{path} names {clash[0]} both as a file and as a folder; {REPO_MANIFEST_FILE.remedy}")
    return manifest


def _parents(rel: str) -> list[str]:
    parts = rel.split("/")
    return ["/".join(parts[:i]) for i in range(1, len(parts))]


def published_ipcs(manifest: dict) -> list[int]:
    """The IPCs a release manifest holds."""
    return sorted(int(k) for k in manifest["ipcs"])


def ipc_files(manifest: dict, ipc: int, parts: tuple[str, ...] = PARTS) -> dict[str, str]:
    """``path -> sha256`` of the files of one IPC that ``parts`` need: its parquet shards (``images``)
    and its soft-label store (``soft_labels``)."""
    soft = repo_soft_labels(ipc) + "/"
    return {path: sha for path, sha in manifest["files"].items()
            if ("images" in parts and is_parquet_shard(path, ipc)) or ("soft_labels" in parts and path.startswith(soft))}


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

def check_paths(directory: Path, files, resolve=inside) -> dict:
    """Refuse a manifest or index naming a path outside ``directory``, before anything is read or deleted;
    returns each name's resolved path (``resolve``: :func:`layout.inside`, or :func:`layout.own_file`,
    which gives None for a path through a symbolic link instead of refusing it)."""
    paths = {}
    for rel in files:
        try:
            paths[rel] = resolve(directory, rel)
        except LayoutError as error:
            raise IntegrityError(f"{error}: the set's {MANIFEST} is malformed or hostile; nothing was read "
                                 "or deleted. Report it, or pick another version=") from None
    return paths


def verify_files(directory: Path, files: dict[str, str]) -> list[str]:
    """Paths in ``files`` that are missing under ``directory``, not regular files of it (a symbolic link,
    never followed), or whose sha256 differs. A set is hashed in full the first time a process opens it
    and whenever one of its files changes on disk."""
    paths = check_paths(Path(directory), files, resolve=own_file)
    bad = []
    for rel, expected in sorted(files.items()):
        try:
            if paths[rel] is None or cached_sha256(paths[rel]) != expected:
                bad.append(rel)
        except OSError:  # unreadable
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
    check_repo_id(repo_id)
    if version is not None:
        return check_version(version)
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
    from huggingface_hub.errors import (EntryNotFoundError, GatedRepoError, HfHubHTTPError,
                                        RepositoryNotFoundError, RevisionNotFoundError)

    try:
        return call()
    except RevisionNotFoundError:
        try:
            known = ", ".join(list_versions(repo_id, token)) or "none"
        except HubError:
            known = "unknown"
        raise VersionNotFoundError(f"{repo_id!r} has no version {version!r} (published: {known}); pass one of "
                                   "those as version=, or leave it out for the default (if it was there before, it "
                                   "is being republished: try again in a minute)") from None
    except GatedRepoError:  # a kind of RepositoryNotFoundError: caught first
        raise HubError(f"{repo_id} is gated: ask for access at {_endpoint()}/datasets/{repo_id}, then log in with "
                       "that account (HF_TOKEN / `hf auth login`)") from None
    except RepositoryNotFoundError:
        raise _repo_not_found(repo_id) from None
    except EntryNotFoundError as error:
        raise IntegrityError(f"{repo_id} {version}: a file its {MANIFEST} lists is not on the Hub "
                             f"({_first_line(error)}); the published version is broken: report it, or pick another "
                             "version=") from None
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


class _BoundedFile:
    """What a download writes to: the file, refusing to grow past the size the manifest records, so a
    server that sends more is cut off during the transfer rather than caught after it."""

    def __init__(self, file, limit: int, name: str):
        self._file, self._limit, self._name = file, limit, name

    def write(self, data: bytes) -> int:
        if self._file.tell() + len(data) > self._limit:
            raise IntegrityError(f"{self._name}: the Hub sent more than the {self._limit:,} bytes its manifest "
                                 "records; the published version is broken: report it, or pick another version=")
        return self._file.write(data)

    def tell(self) -> int:
        return self._file.tell()

    def seek(self, *args) -> int:
        return self._file.seek(*args)

    def truncate(self, *args) -> int:
        return self._file.truncate(*args)


def _no_space(target: Path, needed: int) -> NoSpaceError:
    free = shutil.disk_usage(target.parent).free
    return NoSpaceError(f"no space left to download {target} ({needed:,} bytes; {free:,} free on its disk): free "
                        "some space, or pass another root=; the files already downloaded are kept")


def _download(repo_id: str, version: str, commit: str, dest: Path, rel: str, size: int | None,
              limit: int, token: str | None) -> None:
    """One file of the release at ``commit`` into ``dest/rel`` (a path already checked to lie inside):
    refused before its first byte when the Hub's size is not ``size`` (the manifest's) or exceeds
    ``limit``, cut off when the transfer runs past it, renamed into place only when whole."""
    from huggingface_hub import get_hf_file_metadata, hf_hub_url
    from huggingface_hub.file_download import http_get
    from huggingface_hub.utils import build_hf_headers

    name = f"{repo_id} {version}: {rel}"
    url = hf_hub_url(repo_id, rel, repo_type=REPO_TYPE, revision=commit)
    served = _hub_call(repo_id, version, token, lambda: get_hf_file_metadata(url, token=token))
    expected = size if size is not None else served.size
    if expected is None or served.size not in (None, expected) or expected > limit:
        raise IntegrityError(f"{name}: the Hub serves {served.size} bytes, its manifest records {size} (at most "
                             f"{limit:,} allowed); the published version is broken: report it, or pick another version=")
    target = dest / rel
    part = partial_download(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        part.unlink(missing_ok=True)  # a leftover, or a link planted there: created afresh, never written through
        with open(part, "xb") as f:
            _hub_call(repo_id, version, token, lambda: http_get(
                served.location, _BoundedFile(f, expected, name), headers=build_hf_headers(token=token),
                expected_size=expected, displayed_filename=rel))
        os.replace(part, target)
    except OSError as error:
        if error.errno == errno.ENOSPC:
            raise _no_space(target, expected) from None
        if isinstance(error, PermissionError) or error.errno == errno.EROFS:
            raise RootError(f"cannot write {target} ({error.strerror}); pass a writable root=") from None
        if error.errno is not None:  # the local disk's, reported as itself
            raise HubError(f"cannot write {target} ({error.strerror}); check the root, or pass another root=") \
                from None
        raise _Unreachable(f"the download of {name} ended early ({_first_line(error)})") from None
    finally:
        part.unlink(missing_ok=True)


def _download_files(repo_id: str, version: str, commit: str, dest: Path, files: dict[str, str], sizes: dict,
                    token: str | None) -> None:
    """The ``files`` of the release, after checking each against the most a file of its kind may hold,
    and the disk has room for all of them."""
    for rel in files:
        if sizes[rel] > _limit(rel):
            raise IntegrityError(f"{repo_id} {version}: its {MANIFEST} records {sizes[rel]:,} bytes for {rel} (at most "
                                 f"{_limit(rel):,} allowed); the published version is broken: report it, or pick "
                                 "another version=")
    needed = sum(sizes[rel] for rel in files)
    dest.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(dest).free
    if needed > free:
        raise NoSpaceError(f"{repo_id} {version} needs {needed:,} bytes under {dest}, and its disk has {free:,} "
                           "free: free some space, or pass another root=")
    log.info("%s %s: downloading %d file(s), %.1f MB", repo_id, version, len(files), needed / 1e6)
    for rel in sorted(files):
        _download(repo_id, version, commit, dest, rel, sizes[rel], _limit(rel), token)


def _limit(rel: str) -> int:
    """The most bytes a file of a release may hold: a soft-label index is read whole, so it is bounded
    like one before it is downloaded."""
    return SOFT_LABEL_INDEX_FILE.max_bytes if rel.endswith("/" + SOFT_LABEL_INDEX) else MAX_FILE_BYTES


_PATHS_PER_REQUEST = 1000  # the Hub answers at most this many paths at once


def file_sizes(repo_id: str, version: str, commit: str, paths: list[str], token: str | None) -> dict[str, int]:
    """The size the Hub holds of each file of ``paths`` at ``commit``, asked a thousand at a time; refused
    when one is missing."""
    from huggingface_hub import HfApi
    from huggingface_hub.hf_api import RepoFile

    api, sizes = HfApi(token=token), {}
    for start in range(0, len(paths), _PATHS_PER_REQUEST):
        batch = paths[start:start + _PATHS_PER_REQUEST]
        found = _hub_call(repo_id, version, token,
                          lambda: api.get_paths_info(repo_id, batch, revision=commit, repo_type=REPO_TYPE))
        sizes.update({info.path: info.size for info in found if isinstance(info, RepoFile) and info.path in batch})
    missing = sorted(set(paths) - set(sizes))
    if missing:
        raise IntegrityError(f"{repo_id} {version}: {missing[0]}, which its {MANIFEST} lists, is not on the Hub; the "
                             "published version is broken: report it, or pick another version=")
    return sizes


def _download_manifest(repo_id: str, version: str, commit: str, dest: Path, token: str | None) -> dict:
    dest.mkdir(parents=True, exist_ok=True)
    _download(repo_id, version, commit, dest, MANIFEST, None, REPO_MANIFEST_FILE.max_bytes, token)
    migrated = []  # the files whose sizes the Hub gave: the release is of format 1

    def hub_sizes(paths: list[str]) -> dict[str, int]:
        migrated.append(paths)
        return file_sizes(repo_id, version, commit, paths, token)

    try:
        manifest = read_manifest(dest, hub_sizes)
    except NewerFormatError:
        raise  # in the words every reader uses, before any file of an IPC is downloaded
    except (OSError, LayoutError) as error:
        raise IntegrityError(f"{repo_id} {version} has no usable {MANIFEST} ({_first_line(error)}): it is not a "
                             "published FADRM set of a format this library reads, or the version is broken") from None
    if migrated:  # kept as migrated, so the local copy is read without the Hub
        atomic_write_json(dest / MANIFEST, manifest)
    atomic_write_json(dest / DOWNLOAD_SOURCE, {"repo": repo_id, "version": version, "commit": commit})
    return manifest


@contextlib.contextmanager
def _version_lock(dest: Path) -> Iterator[None]:
    """Hold the version's folder for one writer; refused in one line where the root cannot be written."""
    from filelock import FileLock

    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(sibling_lock(dest)))
        lock.acquire()
    except OSError as error:
        raise RootError(f"{dest} must be downloaded or repaired, but {dest.parent} cannot be written "
                        f"({error.strerror}): pass a writable root=") from None
    try:
        yield
    finally:
        lock.release()


def fetch(repo_id: str, ipc: int, version: str, root: str | os.PathLike, download: bool = True,
          token: str | None = None, parts: tuple[str, ...] = PARTS) -> Path:
    """Make sure ``<root>/<org>--<name>/<version>`` holds a verified copy of the ``parts`` of one IPC
    (its ``images``, its ``soft_labels``); returns that folder.

    A complete copy is only read, so a read-only root works; downloads hold a file lock on the version,
    so processes sharing a root make one good copy.
    """
    check_repo_id(repo_id)
    check_version(version)
    dest = version_dir(check_root(root), repo_id, version)
    _check_not_linked(dest)
    copy = _Copy(repo_id, ipc, version, dest, download, token, parts)
    if copy.online and not copy.check_tag():
        return dest  # the tag is missing for now: the verified local copy serves
    try:
        return copy.open(writable=False)
    except _NeedsWrite:
        pass
    with _version_lock(dest):
        return copy.open(writable=True)


def _check_not_linked(dest: Path) -> None:
    """Refuse a repo or version folder under the root that is a symbolic link: what the library deletes
    and writes there would land in the link's target (the root's own path may hold links)."""
    for folder in (dest.parent, dest):
        if folder.is_symlink():
            raise RootError(f"{folder} is a symbolic link (to {os.readlink(folder)}), not a folder of the sets: "
                            "remove the link, or pass the folder that holds the sets as root=")


class _NeedsWrite(Exception):
    """The local copy must be downloaded or repaired: the caller takes the version's lock first."""


class _Copy:
    """One version of one IPC under the root, and how to make it whole."""

    def __init__(self, repo_id: str, ipc: int, version: str, dest: Path, download: bool, token: str | None,
                 parts: tuple[str, ...]):
        self.repo_id, self.ipc, self.version, self.dest = repo_id, ipc, version, dest
        self.download, self.token, self.parts = download, token, parts
        self.online = download and not is_offline()
        self.commit: str | None = None  # the tag's commit now; None when not asked or unreachable
        self.label = f"{repo_id} {version} ipc{ipc}"

    def check_tag(self) -> bool:
        """Ask the Hub where the tag points now (``self.commit``; left None, with a warning, when the Hub
        cannot be reached and a local copy exists). False when the tag is missing and the verified local
        copy serves instead."""
        try:
            self.commit = _commit_of(self.repo_id, self.version, self.token)
        except _Unreachable as error:
            if not (self.dest / MANIFEST).is_file():
                raise HubError(f"cannot download {self.label}: {error}; check the connection, or set "
                               "HF_ENDPOINT") from None
            log.warning("%s; using the local copy of %s without checking its tag", error, self.label)
        except VersionNotFoundError as missing:
            try:  # a `push --force` deletes and re-creates the tag: a verified copy carries on meanwhile
                _Copy(self.repo_id, self.ipc, self.version, self.dest, False, None, self.parts).open(False)
            except (HubError, _NeedsWrite):
                raise missing from None
            log.warning("%s: the Hub has no tag %s now (it is being republished, or was deleted); using the "
                        "verified local copy", self.repo_id, self.version)
            return False
        return True

    def open(self, writable: bool) -> Path:
        manifest = self._manifest(writable)
        _check_ipc(manifest, self.ipc, self.repo_id, self.version)
        files = ipc_files(manifest, self.ipc, self.parts)
        check_paths(self.dest, manifest["files"])
        bad = verify_files(self.dest, files)
        if not bad:
            return self.dest
        self._may_write(f"the local copy of {self.label} at {self.dest} has {_describe(self.dest, bad)}", writable)
        if any((self.dest / p).exists() for p in bad):
            log.warning("the local copy of %s has %s; fetching them again", self.label, _describe(self.dest, bad))
        for rel in bad:  # paths checked above: every one lies inside dest
            (self.dest / rel).unlink(missing_ok=True)
        bad_files = {rel: files[rel] for rel in bad}
        _download_files(self.repo_id, self.version, self.commit, self.dest, bad_files, manifest["sizes"], self.token)
        still = verify_files(self.dest, bad_files)
        if still:
            raise IntegrityError(
                f"{self.repo_id} {self.version}: {_describe(self.dest, still)} on the Hub do not match the sha256 in "
                f"its {MANIFEST}; the published version is broken: report it, or pick another version=")
        return self.dest

    def _manifest(self, writable: bool) -> dict:
        """The local copy's manifest, fetched (again) when missing, unreadable or from a moved tag."""
        path = self.dest / MANIFEST
        problem = None
        if path.is_file():
            try:
                manifest = read_manifest(self.dest)
            except NewerFormatError:
                raise  # fetched again, it would be as new
            except LayoutError as error:
                if not self.download:
                    raise IntegrityError(f"{error}; pass download=True to fetch it again") from None
                problem = f"{error}; fetching it again"  # a damaged local file is never blamed on the Hub
            else:
                recorded = _recorded_commit(self.dest)
                if self.commit is None or recorded in (None, self.commit):
                    return manifest
                problem = (f"{self.repo_id}: the tag {self.version} now points at commit {self.commit[:10]}, not "
                           f"{recorded[:10]} as when it was downloaded; fetching its changed files")
        self._may_write(f"{self.label} is not downloaded under {self.dest}", writable, missing=problem is None)
        if problem:
            log.warning("%s", problem)
        path.unlink(missing_ok=True)
        return _download_manifest(self.repo_id, self.version, self.commit, self.dest, self.token)

    def _may_write(self, problem: str, writable: bool, missing: bool = False) -> None:
        """Go on to download only where that is allowed and possible; else say why, in one line."""
        if not self.download:
            if missing:
                raise NotDownloadedError(f"{problem}; pass download=True")
            raise IntegrityError(f"{problem}; pass download=True to fetch them again")
        if is_offline():
            raise OfflineError(f"{problem}, and HF_HUB_OFFLINE is set: unset it to download")
        if self.commit is None:
            raise HubError(f"{problem}, and the Hub cannot be reached to fetch them; check the connection")
        if not writable:
            raise _NeedsWrite


def _recorded_commit(dest: Path) -> str | None:
    try:
        commit = read(dest / DOWNLOAD_SOURCE, RECORD_FILE).get("commit")
    except (OSError, LayoutError):
        return None
    return commit if isinstance(commit, str) else None


def _check_ipc(manifest: dict, ipc: int, repo_id: str, version: str) -> None:
    ipcs = published_ipcs(manifest)
    if ipc not in ipcs:
        raise IPCNotPublishedError(f"{repo_id} {version} has no ipc={ipc} (published IPCs: "
                                   f"{', '.join(map(str, ipcs)) or 'none'}); pass one of those as ipc=")


__all__ = ["CACHE_ENV", "HubError", "IPCNotPublishedError", "IntegrityError", "NoSpaceError", "NotDownloadedError",
           "OfflineError", "PARTS", "RepoNotFoundError", "RootError", "VersionNotFoundError", "check_paths", "check_repo_id",
           "check_root", "check_version", "default_root", "fetch", "file_sizes", "ipc_files", "is_transport_error",
           "list_versions",
           "local_versions", "published_ipcs", "read_manifest", "resolve_version", "verify_files", "version_dir"]
