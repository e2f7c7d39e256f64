"""A loopback Hugging Face Hub-compatible server for tests, standard library only.

It implements the subset of the Hub HTTP API that ``huggingface_hub`` (``HfApi``, ``hf_hub_download``,
``snapshot_download``, ``HfFileSystem``) and ``datasets.load_dataset`` use to create repos, commit files
(regular and LFS, via the legacy LFS batch protocol: run clients with ``HF_HUB_DISABLE_XET=1``), manage
branches and tags, list trees and commits, and download files.

Like the Hub, it answers a client without a token or with hostile input without holding much for it:
the LFS batch answer (an authenticated call) grants each upload as a presigned URL, so an upload
without a valid grant is refused before its body is read; bodies, lines and idle connections are
bounded (the limits below), and malformed requests get a 4xx, never a 500.

State lives under ``data_dir`` so that a restarted server sees the same repos:

* ``blobs/<sha256>``: file contents, content-addressed and shared by all repos;
* ``repos/<type>/<namespace>/<name>.json``: one document per repo with its branches, tags and commits,
  each commit holding the full ``path -> file entry`` map of its tree (the test repos are small).

Usage::

    with HubServer(tmp_path, ["tok:alice:acme"]) as hub:
        os.environ["HF_ENDPOINT"] = hub.url   # before importing huggingface_hub
        ...

or ``python -m fadrm_datasets.testing.hub --port 0 --data-dir DIR --token TOKEN:USER[:ORG]``, which prints
``READY http://127.0.0.1:PORT`` once it serves.
"""

from __future__ import annotations

import argparse
import base64
import fnmatch
import hashlib
import hmac
import html
import json
import os
import posixpath
import re
import secrets
import signal
import socket
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Iterable
from urllib.parse import parse_qs, unquote, urlencode

__all__ = ["Account", "HubServer", "parse_token_spec", "main"]

# URL prefix of each repo type on the "web" routes (resolve, LFS); the API routes use "/api/{type}s/".
URL_PREFIXES = {"model": "", "dataset": "datasets/", "space": "spaces/"}
DEFAULT_BRANCH = "main"
# The Hub stores files this large in LFS whatever .gitattributes says.
LFS_SIZE_THRESHOLD = 10 * 1024 * 1024

# Limits on what a client can make the server read, hold or compute.
# JSON bodies: huggingface_hub sends at most 256 files per preupload or LFS batch and 1000 paths per
# paths-info request, all far below this.
JSON_BODY_LIMIT = 1 << 20
# A commit carries its regular files (each below LFS_SIZE_THRESHOLD) inline, base64-encoded.
COMMIT_BODY_LIMIT = 64 << 20
# After an early answer (401, 404...) a body this small is read and dropped, so the client gets the
# answer rather than a reset; a larger one is left unread and the connection closed.
DRAIN_LIMIT = 64 << 10
# A chunk-size or trailer line: 16 hex digits and room for a chunk extension.
CHUNK_LINE_LIMIT = 1024
MAX_TRAILER_LINES = 32
MAX_PATHS_PER_REQUEST = 1000  # paths-info, as on the Hub
CARD_LIMIT = 1 << 20  # README bytes parsed for cardData, and characters of cardData served
# A connection that sends nothing for this long is closed: idle keep-alive, a stalled upload, a slow
# attacker. Uploads that keep sending are never cut, however long they take.
CONNECTION_TIMEOUT = 60.0
UPLOAD_GRANT_LIFETIME = 3600.0  # seconds a presigned LFS upload URL stays valid

# Written as the first commit of every repo, like the Hub's "initial commit"; preupload reads the
# `filter=lfs` patterns of the target revision's .gitattributes to decide each file's upload mode.
DEFAULT_GITATTRIBUTES = "".join(
    f"{pattern} filter=lfs diff=lfs merge=lfs -text\n"
    for pattern in (
        "*.7z", "*.arrow", "*.bin", "*.bz2", "*.ckpt", "*.gz", "*.h5", "*.joblib", "*.msgpack", "*.npy",
        "*.npz", "*.onnx", "*.parquet", "*.pickle", "*.pkl", "*.pt", "*.pth", "*.safetensors", "*.tar",
        "*.tflite", "*.tgz", "*.xz", "*.zip", "*.zst", "*tfevents*",
        "*.png", "*.jpg", "*.jpeg", "*.webp", "*.gif", "*.mp3", "*.wav", "*.flac", "*.mp4",
    )
)
# Matched with fullmatch: `$` would also match before a final newline.
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}")
_COMMIT_SHA_RE = re.compile(r"[0-9a-f]{40}")
_SHA256_RE = re.compile(r"[0-9a-f]{64}")
_DECIMAL_RE = re.compile(r"[0-9]{1,18}")  # short enough that int() is cheap and the value fits 64 bits
# Control characters, and lone surrogates (JSON can carry them; UTF-8 cannot encode them).
_UNSAFE_CHAR_RE = re.compile(r"[\x00-\x1f\x7f\ud800-\udfff]")
_BAD_ESCAPE_RE = re.compile(r"%(?![0-9A-Fa-f]{2})")
_CHUNK_SIZE_RE = re.compile(rb"[0-9A-Fa-f]{1,16}")
_FRONT_MATTER_RE = re.compile(r"\A---\r?\n(.*?)\r?\n---[ \t]*(?:\r?\n|\Z)", re.DOTALL)


@dataclass(frozen=True)
class Account:
    """A token and the user it authenticates as; ``orgs`` are the organisations the user belongs to."""

    token: str
    user: str
    orgs: tuple[str, ...] = ()


def parse_token_spec(spec: str) -> Account:
    """Parse ``TOKEN:USER`` or ``TOKEN:USER:ORG`` (the ``--token`` flag's format)."""
    parts = spec.split(":")
    if len(parts) not in (2, 3) or not all(parts):
        raise ValueError(f"expected TOKEN:USER or TOKEN:USER:ORG, got {spec!r}")
    return Account(parts[0], parts[1], tuple(parts[2:]))


class ErrorAnswer(Exception):
    """An HTTP error answered the way the Hub does: ``X-Error-Code`` header and ``{"error": ...}`` body."""

    def __init__(self, status: int, message: str, code: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.headers = headers or {}
        self.extra: dict[str, Any] = {}  # more fields for the JSON body


def _now() -> str:
    # The client's parse_datetime expects '%Y-%m-%dT%H:%M:%S.%fZ'.
    t = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1000):03d}Z"


def _git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _lfs_pointer(sha256: str, size: int) -> bytes:
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


def _valid_repo_path(path: str) -> bool:
    parts = path.split("/")
    return (bool(path) and all(p not in ("", ".", "..") for p in parts) and parts[0] != ".git"
            and not _UNSAFE_CHAR_RE.search(path))


def _valid_ref_name(name: str) -> bool:
    # Each component a plain name: no empty, "." or ".." components, like git's check-ref-format.
    return all(_NAME_RE.fullmatch(part) for part in name.split("/")) and not _COMMIT_SHA_RE.fullmatch(name)


def _json_object(data: bytes, what: str) -> dict:
    try:
        value = json.loads(data)
    except (ValueError, RecursionError):  # RecursionError: nesting deeper than the parser's stack
        raise ErrorAnswer(400, f"{what} is not valid JSON")
    if not isinstance(value, dict):
        raise ErrorAnswer(400, f"{what} must be a JSON object")
    return value


def _field(obj: dict, name: str, kind: type, default: Any = None) -> Any:
    """``obj[name]`` if it is a ``kind``, ``default`` if absent or null; any other value is a 400."""
    value = obj.get(name)
    if value is None:
        return default
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ErrorAnswer(400, f"Field {name!r} must be of type {kind.__name__}, not {type(value).__name__}")
    return value


def _objects(obj: dict, name: str) -> list[dict]:
    items = _field(obj, name, list, [])
    if not all(isinstance(item, dict) for item in items):
        raise ErrorAnswer(400, f"Field {name!r} must be a list of objects")
    return items


def _bounded_json(value: Any, limit: int) -> Any:
    """``value`` as plain JSON types (dates become strings), or None if it does not encode in ``limit``
    characters: YAML aliases can make a small card expand without end, or refer to itself."""
    pieces, size = [], 0
    try:
        for piece in json.JSONEncoder(default=str).iterencode(value):
            size += len(piece)
            if size > limit:
                return None
            pieces.append(piece)
    except (ValueError, RecursionError):  # ValueError: a circular reference
        return None
    return json.loads("".join(pieces))


def _front_matter(text: str) -> tuple[bool, Any]:
    """Return ``(found, metadata)`` for the YAML front matter of a README; raises on invalid YAML."""
    match = _FRONT_MATTER_RE.match(text)
    if match is None:
        return False, None
    import yaml  # lazily: PyYAML comes with `datasets`/`huggingface_hub`, but the server must start without it

    return True, yaml.safe_load(match.group(1))


def _lfs_patterns(gitattributes: str) -> list[str]:
    patterns = []
    for line in gitattributes.splitlines():
        fields = line.split()
        if fields and not fields[0].startswith("#") and "filter=lfs" in fields[1:]:
            patterns.append(fields[0])
    return patterns


def _matches_any(path: str, patterns: list[str]) -> bool:
    # Git matches slash-less patterns against the basename and the others against the full path.
    name = posixpath.basename(path)
    return any(
        fnmatch.fnmatchcase(path, p.lstrip("/")) if "/" in p else fnmatch.fnmatchcase(name, p) for p in patterns
    )


class Store:
    """Repos, refs, commits and blobs, persisted under ``data_dir``; every method is thread-safe."""

    def __init__(self, data_dir: str | os.PathLike):
        self.root = Path(data_dir)
        self.blob_dir = self.root / "blobs"
        self.repo_dir = self.root / "repos"
        self.blob_dir.mkdir(parents=True, exist_ok=True)
        self.repo_dir.mkdir(parents=True, exist_ok=True)
        self.lock = threading.RLock()
        self.repos: dict[tuple[str, str], dict] = {}
        for doc_path in self.repo_dir.glob("*/*/*.json"):
            doc = json.loads(doc_path.read_text())
            self.repos[(doc["type"], doc["id"])] = doc

    # -- blobs --------------------------------------------------------------------------------------

    def blob_path(self, sha256: str) -> Path:
        # An object id names a file under blobs/: anything but 64 hex digits could name another file.
        if not isinstance(sha256, str) or not _SHA256_RE.fullmatch(sha256):
            raise ErrorAnswer(400, f"Invalid object id {str(sha256)[:80]!r}: expected 64 hex digits")
        return self.blob_dir / sha256

    def has_blob(self, sha256: str, size: int | None = None) -> bool:
        path = self.blob_path(sha256)
        return path.is_file() and (size is None or path.stat().st_size == size)

    def put_blob(self, data: bytes) -> str:
        sha256 = hashlib.sha256(data).hexdigest()
        if not self.has_blob(sha256):
            # Write then rename so a concurrent reader never sees a partial blob.
            fd, tmp = tempfile.mkstemp(dir=self.blob_dir, prefix=".tmp-")
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, self.blob_path(sha256))
        return sha256

    def read_blob(self, sha256: str) -> bytes:
        return self.blob_path(sha256).read_bytes()

    def put_blob_file(self, source, size: int, sha256: str) -> None:
        """Stream ``source`` (read until it returns b"") into the blob ``sha256``, refused unless it is
        ``size`` bytes that hash to it."""
        target = self.blob_path(sha256)
        fd, tmp = tempfile.mkstemp(dir=self.blob_dir, prefix=".tmp-")
        digest = hashlib.sha256()
        try:
            with os.fdopen(fd, "wb") as f:
                written = 0
                while chunk := source.read(1 << 20):
                    digest.update(chunk)
                    f.write(chunk)
                    written += len(chunk)
            if written != size:
                raise ErrorAnswer(400, f"Upload of {written} bytes, not the {size} bytes granted")
            if digest.hexdigest() != sha256:
                raise ErrorAnswer(400, f"Uploaded content does not match sha256 {sha256}")
            os.replace(tmp, target)
        finally:
            Path(tmp).unlink(missing_ok=True)

    # -- repos --------------------------------------------------------------------------------------

    def _doc_path(self, doc: dict) -> Path:
        return self.repo_dir / doc["type"] / f"{doc['id']}.json"

    def save(self, doc: dict) -> None:
        path = self._doc_path(doc)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        with os.fdopen(fd, "w") as f:
            json.dump(doc, f)
        os.replace(tmp, path)

    def get(self, repo_type: str, repo_id: str) -> dict | None:
        return self.repos.get((repo_type, repo_id))

    def create(self, repo_type: str, repo_id: str, private: bool) -> dict:
        with self.lock:
            if (repo_type, repo_id) in self.repos:
                raise ErrorAnswer(409, f"You already created this {repo_type} repo")
            doc = {
                "type": repo_type,
                "id": repo_id,
                "private": private,
                "createdAt": _now(),
                "branches": {},
                "tags": {},
                "commits": {},
            }
            files = {".gitattributes": self._regular_entry(DEFAULT_GITATTRIBUTES.encode())}
            sha = self._add_commit(doc, None, files, "initial commit", "", "system")
            doc["branches"][DEFAULT_BRANCH] = sha
            self.repos[(repo_type, repo_id)] = doc
            self.save(doc)
            return doc

    def delete(self, doc: dict) -> None:
        # Blobs stay: they are shared between repos and there is no garbage collection.
        with self.lock:
            del self.repos[(doc["type"], doc["id"])]
            self._doc_path(doc).unlink()

    # -- revisions and commits ----------------------------------------------------------------------

    @staticmethod
    def resolve(doc: dict, revision: str) -> str:
        """Commit sha of a branch, a tag (also as ``refs/heads/X`` / ``refs/tags/X``) or a full commit sha."""
        if revision.startswith("refs/heads/"):
            candidates = [doc["branches"].get(revision.removeprefix("refs/heads/"))]
        elif revision.startswith("refs/tags/"):
            candidates = [doc["tags"].get(revision.removeprefix("refs/tags/"))]
        else:
            # Branches win over tags of the same name, as in git.
            candidates = [doc["branches"].get(revision), doc["tags"].get(revision)]
            if _COMMIT_SHA_RE.fullmatch(revision) and revision in doc["commits"]:
                candidates.append(revision)
        for sha in candidates:
            if sha is not None:
                return sha
        raise ErrorAnswer(404, f"Invalid rev id: {revision}", "RevisionNotFound")

    def _regular_entry(self, data: bytes) -> dict:
        return {"sha256": self.put_blob(data), "size": len(data), "oid": _git_blob_sha1(data), "lfs": False}

    @staticmethod
    def _lfs_entry(sha256: str, size: int) -> dict:
        pointer = _lfs_pointer(sha256, size)
        # A git tree holds the pointer file, so the git blob id of an LFS file is the pointer's.
        return {
            "sha256": sha256,
            "size": size,
            "oid": _git_blob_sha1(pointer),
            "lfs": True,
            "pointerSize": len(pointer),
        }

    @staticmethod
    def _add_commit(doc: dict, parent: str | None, files: dict, title: str, message: str, author: str) -> str:
        date = _now()
        tree_digest = hashlib.sha1(json.dumps(files, sort_keys=True).encode()).hexdigest()
        # Not git's object format, but a real 40-hex id that changes with parent, tree, message and time.
        sha = hashlib.sha1(
            json.dumps([parent, tree_digest, title, message, author, date, time.monotonic_ns()]).encode()
        ).hexdigest()
        doc["commits"][sha] = {
            "parent": parent,
            "title": title,
            "message": message,
            "author": author,
            "date": date,
            "files": files,
        }
        return sha

    def commit(
        self, doc: dict, branch: str, author: str, header: dict, operations: list[dict]
    ) -> str:
        with self.lock:
            if branch not in doc["branches"]:
                raise ErrorAnswer(404, f"Invalid rev id: {branch} is not a branch", "RevisionNotFound")
            head = doc["branches"][branch]
            parent_commit = _field(header, "parentCommit", str)
            if parent_commit is not None and parent_commit != head:
                raise ErrorAnswer(412, f"A commit has happened since {parent_commit}. Please refresh and try again.")
            files = dict(doc["commits"][head]["files"])
            for op in operations:
                self._apply(files, op.get("key"), _field(op, "value", dict, {}))
            title = _field(header, "summary", str) or "Upload files"
            sha = self._add_commit(doc, head, files, title, _field(header, "description", str, ""), author)
            doc["branches"][branch] = sha
            self.save(doc)
            return sha

    def _apply(self, files: dict, key: str | None, value: dict) -> None:
        path = _field(value, "path", str, "")
        if key in ("file", "lfsFile") and not _valid_repo_path(path):
            raise ErrorAnswer(400, f"Invalid path in repo: {path[:200]!r}")
        if key == "file":
            files[path] = self._regular_entry(self._file_content(path, value))
        elif key == "lfsFile":
            oid, size = _field(value, "oid", str, ""), _field(value, "size", int)
            if value.get("algo", "sha256") != "sha256" or not self.has_blob(oid, size):
                raise ErrorAnswer(422, f"LFS object {oid} for {path} was not uploaded")
            files[path] = self._lfs_entry(oid, self.blob_path(oid).stat().st_size)
        elif key == "deletedFile":
            if files.pop(path, None) is None:
                raise ErrorAnswer(404, f"File not found: {path}", "EntryNotFound")
        elif key == "deletedFolder":
            prefix = path.rstrip("/") + "/"
            doomed = [p for p in files if p.startswith(prefix)]
            if not doomed:
                raise ErrorAnswer(404, f"Folder not found: {path}", "EntryNotFound")
            for p in doomed:
                del files[p]
        else:
            raise ErrorAnswer(400, f"Unsupported commit operation: {str(key)[:80]!r}")

    @staticmethod
    def _file_content(path: str, value: dict) -> bytes:
        content = _field(value, "content", str, "")
        try:
            if value.get("encoding") == "base64":
                return base64.b64decode(content, validate=True)
            return content.encode()
        except ValueError:  # bad base64, or a lone surrogate that UTF-8 cannot encode
            raise ErrorAnswer(400, f"Invalid content for {path!r}")

    def set_ref(self, doc: dict, kind: str, name: str, sha: str | None) -> None:
        """Create (``sha``) or delete (``None``) a branch or tag; ``kind`` is ``"branches"`` or ``"tags"``."""
        with self.lock:
            refs = doc[kind]
            if sha is None:
                if name not in refs:
                    raise ErrorAnswer(404, f"Invalid rev id: {name}", "RevisionNotFound")
                if kind == "branches" and name == DEFAULT_BRANCH:
                    raise ErrorAnswer(403, f"Cannot delete the default branch {name}")
                del refs[name]
            else:
                if name in refs:
                    raise ErrorAnswer(409, f"{'Branch' if kind == 'branches' else 'Tag'} {name} already exists")
                if not _valid_ref_name(name):
                    raise ErrorAnswer(400, f"Invalid ref name: {name[:200]!r}")
                refs[name] = sha
            self.save(doc)


def _directories(files: Iterable[str]) -> set[str]:
    dirs = set()
    for path in files:
        parent = posixpath.dirname(path)
        while parent and parent not in dirs:
            dirs.add(parent)
            parent = posixpath.dirname(parent)
    return dirs


def _tree_oid(files: dict, folder: str) -> str:
    # Stands in for git's tree id: it changes exactly when something below the folder changes.
    prefix = folder + "/"
    listing = "".join(f"{p}\0{e['oid']}\n" for p, e in sorted(files.items()) if p.startswith(prefix))
    return hashlib.sha1(listing.encode()).hexdigest()


class Hub:
    """The request-independent half of the server: accounts, the store and the JSON views of repos."""

    def __init__(self, data_dir: str | os.PathLike, accounts: Iterable[Account | str], page_size: int = 1000):
        self.store = Store(data_dir)
        self.page_size = page_size
        self.grant_key = secrets.token_bytes(32)  # signs upload grants; a restarted server honours none
        self.clock = time.time  # tests move it forward to expire grants
        self.accounts: dict[str, Account] = {}
        self.user_orgs: dict[str, set[str]] = {}
        for account in accounts:
            account = parse_token_spec(account) if isinstance(account, str) else account
            self.accounts[account.token] = account
            # Membership belongs to the user, whichever of their tokens declared it.
            self.user_orgs.setdefault(account.user, set()).update(account.orgs)

    def namespaces(self, account: Account | None) -> set[str]:
        return set() if account is None else {account.user, *self.user_orgs[account.user]}

    # -- upload grants ------------------------------------------------------------------------------

    def upload_grant(self, oid: str, size: int) -> str:
        """The query of a presigned upload URL: it lets anyone holding it PUT ``size`` bytes hashing to
        ``oid``, until it expires, like the object-storage URLs the real Hub's LFS batch answers with."""
        expires = int(self.clock() + UPLOAD_GRANT_LIFETIME)
        return urlencode({"size": size, "expires": expires, "signature": self._grant_signature(oid, size, expires)})

    def granted_size(self, oid: str, query: dict[str, list[str]]) -> int:
        """The size granted to an upload of ``oid`` by the query of its URL; 403 without a valid, unexpired grant."""
        size, expires, signature = (query.get(name, [""])[-1] for name in ("size", "expires", "signature"))
        if not (_DECIMAL_RE.fullmatch(size) and _DECIMAL_RE.fullmatch(expires) and hmac.compare_digest(
                signature.encode(), self._grant_signature(oid, int(size), int(expires)).encode())):
            raise ErrorAnswer(403, f"No valid upload grant for {oid}: upload URLs come from the LFS batch endpoint")
        if self.clock() > int(expires):
            raise ErrorAnswer(403, f"The upload grant for {oid} has expired")
        return int(size)

    def _grant_signature(self, oid: str, size: int, expires: int) -> str:
        return hmac.new(self.grant_key, f"{oid}\n{size}\n{expires}".encode(), hashlib.sha256).hexdigest()

    # -- access -------------------------------------------------------------------------------------

    def repo_for_read(self, repo_type: str, repo_id: str, account: Account | None) -> dict:
        doc = self.store.get(repo_type, repo_id)
        # Like the Hub, a private repo the caller cannot see does not exist for them.
        if doc is None or (doc["private"] and repo_id.split("/")[0] not in self.namespaces(account)):
            raise ErrorAnswer(404, f"Repository not found: {repo_id}", "RepoNotFound")
        return doc

    def repo_for_write(self, repo_type: str, repo_id: str, account: Account | None) -> dict:
        doc = self.repo_for_read(repo_type, repo_id, account)
        if account is None:
            raise ErrorAnswer(401, "You must be authenticated to write to a repo")
        if repo_id.split("/")[0] not in self.namespaces(account):
            raise ErrorAnswer(403, f"You don't have the rights to write to {repo_id}")
        return doc

    # -- views --------------------------------------------------------------------------------------

    def last_commit(self, doc: dict, sha: str, path: str, is_dir: bool) -> dict:
        """The oldest commit in the first-parent chain since which ``path`` is unchanged."""

        def key(commit_sha: str) -> str | None:
            files = doc["commits"][commit_sha]["files"]
            if is_dir:
                return _tree_oid(files, path) if path in _directories(files) else None
            return files[path]["oid"] if path in files else None

        current = key(sha)
        while (parent := doc["commits"][sha]["parent"]) is not None and key(parent) == current:
            sha = parent
        commit = doc["commits"][sha]
        return {"id": sha, "title": commit["title"], "date": commit["date"]}

    def path_info(self, doc: dict, sha: str, path: str, expand: bool) -> dict | None:
        files = doc["commits"][sha]["files"]
        if path in files:
            entry = files[path]
            info: dict[str, Any] = {"type": "file", "oid": entry["oid"], "size": entry["size"], "path": path}
            if entry["lfs"]:
                info["lfs"] = {"oid": entry["sha256"], "size": entry["size"], "pointerSize": entry["pointerSize"]}
        elif path in _directories(files):
            info = {"type": "directory", "oid": _tree_oid(files, path), "size": 0, "path": path}
        else:
            return None
        if expand:
            info["lastCommit"] = self.last_commit(doc, sha, path, info["type"] == "directory")
        return info

    def tree(self, doc: dict, sha: str, folder: str, recursive: bool, expand: bool) -> list[dict]:
        files = doc["commits"][sha]["files"]
        paths = sorted(set(files) | _directories(files))
        if folder:
            if folder not in _directories(files):
                raise ErrorAnswer(404, f"Folder not found: {folder}", "EntryNotFound")
            paths = [p for p in paths if p.startswith(folder + "/")]
        if not recursive:
            depth = folder.count("/") + 1 if folder else 0
            paths = [p for p in paths if p.count("/") == depth]
        # Folders first then files, each sorted, like the Hub.
        infos = [self.path_info(doc, sha, p, expand) for p in paths]
        return sorted(infos, key=lambda i: (i["type"] != "directory", i["path"]))

    def card_data(self, doc: dict, sha: str) -> dict | None:
        entry = doc["commits"][sha]["files"].get("README.md")
        if entry is None or entry["size"] > CARD_LIMIT:  # every repo_info parses it: bound the work
            return None
        try:
            _, metadata = _front_matter(self.store.read_blob(entry["sha256"]).decode("utf-8"))
        except Exception:  # no PyYAML, invalid YAML or undecodable README: the Hub just omits cardData
            return None
        return _bounded_json(metadata, CARD_LIMIT) if isinstance(metadata, dict) else None

    def repo_info(self, doc: dict, sha: str, blobs: bool) -> dict:
        commit = doc["commits"][sha]
        siblings = []
        for path, entry in sorted(commit["files"].items()):
            sibling: dict[str, Any] = {"rfilename": path}
            if blobs:
                sibling.update(size=entry["size"], blobId=entry["oid"])
                if entry["lfs"]:
                    sibling["lfs"] = {
                        "size": entry["size"],
                        "sha256": entry["sha256"],
                        "pointerSize": entry["pointerSize"],
                    }
            siblings.append(sibling)
        info = {
            "_id": hashlib.sha1(f"{doc['type']}/{doc['id']}".encode()).hexdigest()[:24],
            "id": doc["id"],
            "author": doc["id"].split("/")[0],
            "sha": sha,
            "private": doc["private"],
            "gated": False,
            "disabled": False,
            "downloads": 0,
            "likes": 0,
            "tags": [],
            "createdAt": doc["createdAt"],
            "lastModified": commit["date"],
            "siblings": siblings,
        }
        card_data = self.card_data(doc, sha)
        if card_data is not None:
            info["cardData"] = card_data
        return info

    def upload_mode(self, doc: dict, sha: str, path: str, size: int, sample: bytes) -> str:
        files = doc["commits"][sha]["files"]
        gitattributes = files.get(".gitattributes")
        patterns = []
        if gitattributes is not None:
            patterns = _lfs_patterns(self.store.read_blob(gitattributes["sha256"]).decode(errors="replace"))
        # The Hub refuses binary content in regular git files, hence the NUL-byte sniffing.
        if size >= LFS_SIZE_THRESHOLD or _matches_any(path, patterns) or b"\0" in sample:
            return "lfs"
        return "regular"


class _Body:
    """A request body read through its framing: ``length`` bytes, or chunked when ``length`` is None.

    Nothing past ``limit`` is read: a longer ``Content-Length`` or chunk is refused (413) before its
    bytes, and malformed chunk framing is refused (400) as soon as it is seen.
    """

    def __init__(self, rfile, length: int | None, limit: int):
        if length is not None and length > limit:
            raise ErrorAnswer(413, f"Request body larger than {limit} bytes")
        self._rfile = rfile
        self._limit = limit
        self._chunked = length is None
        self._left = length or 0  # unread bytes of the body, or of the current chunk
        self._announced = self._left
        self.ended = length == 0

    def read(self, size: int = 1 << 20) -> bytes:
        """Up to ``size`` bytes of the body; b"" once all of it has been read."""
        if self._left == 0 and not self.ended:
            self._next_chunk()
        if self.ended:
            return b""
        data = self._rfile.read(min(size, self._left))
        if not data:
            raise ErrorAnswer(400, "Request body ended before its announced length")
        self._left -= len(data)
        if self._left == 0:
            if self._chunked:
                self._end_of_chunk()
            else:
                self.ended = True
        return data

    def read_all(self) -> bytes:
        return b"".join(iter(self.read, b""))

    def _next_chunk(self) -> None:
        size_field = self._line("chunk size").split(b";", 1)[0].strip(b" \t")
        if not _CHUNK_SIZE_RE.fullmatch(size_field):
            raise ErrorAnswer(400, f"Malformed chunk size {size_field[:40]!r}: expected hex digits")
        size = int(size_field, 16)
        if size == 0:
            self._skip_trailers()
            self.ended = True
            return
        self._announced += size
        if self._announced > self._limit:
            raise ErrorAnswer(413, f"Request body larger than {self._limit} bytes")
        self._left = size

    def _end_of_chunk(self) -> None:
        if self._rfile.read(2) != b"\r\n":
            raise ErrorAnswer(400, "Malformed chunked body: chunk data not followed by CRLF")

    def _skip_trailers(self) -> None:
        for _ in range(MAX_TRAILER_LINES):
            if not self._line("trailer"):
                return
        raise ErrorAnswer(400, f"More than {MAX_TRAILER_LINES} trailer lines")

    def _line(self, what: str) -> bytes:
        line = self._rfile.readline(CHUNK_LINE_LIMIT + 1)
        if not line.endswith(b"\r\n"):
            raise ErrorAnswer(400, f"Malformed {what} line: longer than {CHUNK_LINE_LIMIT} bytes or not ended by CRLF")
        return line[:-2]


def _parse_target(target: str) -> tuple[list[str], str, dict[str, list[str]]]:
    """The decoded path segments, raw path and query of an origin-form request target (``/path?query``).

    Anything else is a 400: ``*``, the absolute form, an empty segment (but a trailing slash), a bad
    percent-escape, bytes that are not UTF-8, control characters.
    """
    raw_path, _, query = target.partition("?")
    if not raw_path.startswith("/"):
        raise ErrorAnswer(400, f"Malformed request target {target[:80]!r}: expected a path starting with /")
    segments = raw_path.split("/")[1:]
    if "" in segments[:-1]:
        raise ErrorAnswer(400, f"Malformed request target {target[:80]!r}: empty path segment")
    if _BAD_ESCAPE_RE.search(target):
        raise ErrorAnswer(400, f"Malformed request target {target[:80]!r}: bad percent-escape")
    try:
        decoded = [unquote(segment, errors="strict") for segment in segments]
        params = parse_qs(query, keep_blank_values=True, errors="strict")
    except UnicodeDecodeError:
        raise ErrorAnswer(400, f"Malformed request target {target[:80]!r}: escapes that are not UTF-8")
    if any(_UNSAFE_CHAR_RE.search(segment) for segment in decoded):
        raise ErrorAnswer(400, f"Malformed request target {target[:80]!r}: control character")
    return decoded, raw_path, params


def _repo_id(namespace: str, name: str) -> str:
    if not (_NAME_RE.fullmatch(namespace) and _NAME_RE.fullmatch(name)):
        raise ErrorAnswer(400, f"Invalid repo id {namespace[:100]!r}/{name[:100]!r}")
    return f"{namespace}/{name}"


def _parse_range(header: str, size: int) -> tuple[int, int] | None:
    """Inclusive byte range of a single-range ``Range`` header; ``None`` means serve the whole file."""
    match = re.fullmatch(r"bytes=([0-9]{0,18})-([0-9]{0,18})", header.strip())
    if match is None or match.group(1) == match.group(2) == "":
        return None  # multi-range, malformed and absurdly long headers are ignored, as RFC 9110 allows
    first, last = match.groups()
    if first == "":  # "bytes=-N": the last N bytes
        start, end = size - min(int(last), size), size - 1
    else:
        start, end = int(first), min(int(last), size - 1) if last else size - 1
    if start >= size or start > end:
        raise ErrorAnswer(416, f"Range {header} not satisfiable", headers={"Content-Range": f"bytes */{size}"})
    return start, end


class _Handler(BaseHTTPRequestHandler):
    # HTTP/1.1 lets the clients keep connections alive; every response therefore sends Content-Length.
    protocol_version = "HTTP/1.1"
    server: "_Server"

    def setup(self) -> None:
        self.timeout = self.server.connection_timeout  # applied to the socket by StreamRequestHandler
        super().setup()

    def handle_expect_100(self) -> bool:
        # Not at once, as http.server would: "100 Continue" asks for the body, so it waits until the
        # credentials and the endpoint have been checked (see _open_body).
        return True

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.log_requests:
            super().log_message(format, *args)

    def do_GET(self) -> None:
        self._handle()

    def do_HEAD(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def do_PUT(self) -> None:
        self._handle()

    def do_DELETE(self) -> None:
        self._handle()

    # -- plumbing -----------------------------------------------------------------------------------

    @property
    def hub(self) -> Hub:
        return self.server.hub

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    # -- the request body ---------------------------------------------------------------------------

    def _body_length(self) -> int | None:
        """The announced length of the body, None for a chunked one; ambiguous framing is a 400."""
        encodings = self.headers.get_all("Transfer-Encoding") or []
        lengths = self.headers.get_all("Content-Length") or []
        if encodings:
            # Both headers at once is how requests are smuggled past proxies: refuse rather than pick one.
            if lengths or [e.strip().lower() for e in encodings] != ["chunked"]:
                raise ErrorAnswer(400, "Unsupported framing: only Transfer-Encoding: chunked, without Content-Length")
            return None
        if not lengths:
            return 0
        if len(lengths) > 1 or not _DECIMAL_RE.fullmatch(lengths[0].strip()):
            raise ErrorAnswer(400, f"Invalid Content-Length {', '.join(lengths)[:80]!r}")
        return int(lengths[0])

    def _open_body(self, limit: int) -> _Body:
        reader = _Body(self.rfile, self._length, limit)  # refuses a too-long Content-Length first
        if self._expects_continue:
            self.send_response_only(100)
            self.end_headers()
        self._reader = reader
        return reader

    def _read_body(self, limit: int) -> bytes:
        """The whole body, read on first use: credentials and the endpoint are checked before it is."""
        if self._body is None:
            self._body = self._open_body(limit).read_all()
        return self._body

    def _json_body(self) -> dict:
        return _json_object(self._read_body(JSON_BODY_LIMIT) or b"{}", "Request body")

    def _body_droppable(self) -> bool:
        """Whether what is left of the body is small enough to read and drop after the answer."""
        if self._reader is not None:
            return self._reader.ended
        # Never dropped: a chunked body or one of unknown length (both None), and the body of a client
        # waiting for "100 Continue", which will not send it.
        return self._length is not None and self._length <= DRAIN_LIMIT and not self._expects_continue

    def _drop_body(self) -> None:
        """After the answer: read and drop a small unread body, so that the connection can serve the next
        request and the client sees the answer rather than a reset. The answer has gone out first: a
        refused request is refused before a byte of its body is read."""
        if self._reader is None and self._body_droppable():
            try:
                _Body(self.rfile, self._length, DRAIN_LIMIT).read_all()
            except (ErrorAnswer, TimeoutError, ConnectionError):
                self.close_connection = True

    # -- requests and answers -------------------------------------------------------------------------

    def _handle(self) -> None:
        self._reader: _Body | None = None
        self._body: bytes | None = None
        self._length: int | None = None  # None also stands for "unknown" until the framing is checked
        self._expects_continue = False
        try:
            self._length = self._body_length()
            self._expects_continue = (self.request_version >= "HTTP/1.1"  # as http.server compares them
                                      and self.headers.get("Expect", "").strip().lower() == "100-continue")
            segments, raw_path, self.query = _parse_target(self.path)
            self.account = self._authenticate()
            self._route(segments, raw_path)
        except ErrorAnswer as err:
            body = {"error": err.message, **err.extra}
            self._send_json(err.status, body, {**err.headers, **self._error_headers(err)})
        except (TimeoutError, ConnectionError):
            self.close_connection = True  # the client stalled or left: there is no one to answer
            return
        except Exception as err:  # a server bug must still produce an answer, not a dropped connection
            self._send_json(500, {"error": f"{type(err).__name__}: {err}"})
            raise
        self._drop_body()

    @staticmethod
    def _error_headers(err: ErrorAnswer) -> dict[str, str]:
        # Header values must be short, printable ASCII; messages may quote whatever the client sent.
        headers = {"X-Error-Message": err.message.encode("unicode_escape").decode("ascii")[:1000]}
        if err.code:
            headers["X-Error-Code"] = err.code
        return headers

    def _authenticate(self) -> Account | None:
        auth = self.headers.get("Authorization", "")
        if not auth:
            return None
        scheme, _, token = auth.partition(" ")
        account = self.hub.accounts.get(token.strip()) if scheme.lower() == "bearer" else None
        if account is None:
            # This exact message makes huggingface_hub raise a plain 401 instead of RepositoryNotFoundError.
            raise ErrorAnswer(401, "Invalid credentials in Authorization header")
        return account

    def _param(self, name: str, default: str | None = None) -> str | None:
        return self.query.get(name, [default])[-1]

    def _flag(self, name: str) -> bool:
        return (self._param(name) or "").lower() in ("1", "true")

    def _send_headers(self, status: int, headers: dict[str, str]) -> None:
        if not self._body_droppable():
            self.close_connection = True
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        if self.close_connection:  # an unread body is left on the socket: the client must not reuse it
            self.send_header("Connection", "close")
        self.end_headers()

    def _send(self, status: int, body: bytes, content_type: str, headers: dict[str, str] | None = None) -> None:
        self._send_headers(status, {"Content-Type": content_type, "Content-Length": str(len(body)), **(headers or {})})
        if self.command != "HEAD":
            self.wfile.write(body)

    def _send_json(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(payload).encode(), "application/json; charset=utf-8", headers)

    def _send_page(self, items: list, path: str) -> None:
        """Send one page of ``items``, with a GitHub-style ``Link: <...>; rel="next"`` header if more remain."""
        cursor = self._param("cursor", "0")
        if not _DECIMAL_RE.fullmatch(cursor):
            raise ErrorAnswer(400, f"Invalid cursor: {cursor[:80]!r}")
        start = int(cursor)
        end = start + self.hub.page_size
        headers = {}
        if end < len(items):
            query = {k: v[-1] for k, v in self.query.items()}
            query["cursor"] = str(end)
            headers["Link"] = f'<{self.base_url}{path}?{urlencode(query)}>; rel="next"'
        self._send_json(200, items[start:end], headers)

    # -- routing ------------------------------------------------------------------------------------

    def _route(self, segments: list[str], raw_path: str) -> None:
        method = self.command
        writes = method in ("POST", "PUT", "DELETE")
        if writes and self.account is None and not self._anonymous_write(method, segments):
            raise ErrorAnswer(401, "You must be authenticated to write")  # before a byte of the body is read
        if segments[0] == "api":
            api = segments[1:]
            if api == ["whoami-v2"] and method == "GET":
                return self._whoami()
            if api == ["repos", "create"] and method == "POST":
                return self._create_repo()
            if api == ["repos", "delete"] and method == "DELETE":
                return self._delete_repo()
            if api == ["validate-yaml"] and method == "POST":
                return self._validate_yaml()
            if len(api) == 2 and api[0] == "lfs-storage" and method == "PUT":
                return self._lfs_put(api[1])
            if len(api) == 3 and api[0] == "lfs-storage" and api[2] == "verify" and method == "POST":
                return self._lfs_verify(api[1])
            if len(api) >= 3 and api[0].endswith("s") and api[0][:-1] in URL_PREFIXES:
                return self._repo_api(api[0][:-1], _repo_id(api[1], api[2]), api[3:], raw_path)
        else:
            repo_type = next((t for t, p in URL_PREFIXES.items() if p and segments[0] == p.rstrip("/")), "model")
            rest = segments[1:] if repo_type != "model" else segments
            if len(rest) >= 4 and rest[2] == "resolve" and method in ("GET", "HEAD"):
                return self._resolve(repo_type, _repo_id(rest[0], rest[1]), rest[3], "/".join(rest[4:]))
            if rest[2:] == ["info", "lfs", "objects", "batch"] and rest[1].endswith(".git") and method == "POST":
                return self._lfs_batch(repo_type, _repo_id(rest[0], rest[1].removesuffix(".git")))
        raise ErrorAnswer(404, f"Unknown endpoint: {method} {raw_path}")

    @staticmethod
    def _anonymous_write(method: str, segments: list[str]) -> bool:
        """Requests with a body that need no token: the LFS upload itself (its URL carries the grant, see
        _lfs_put) and the read-only POSTs a downloading client makes."""
        if method == "PUT" and len(segments) == 3 and segments[:2] == ["api", "lfs-storage"]:
            return True
        # /api/validate-yaml, and /api/{type}s/{namespace}/{name}/paths-info/{revision}
        return segments == ["api", "validate-yaml"] or (len(segments) >= 5 and segments[0] == "api"
                                                        and segments[4] == "paths-info")

    def _repo_api(self, repo_type: str, repo_id: str, action: list[str], raw_path: str) -> None:
        method = self.command
        name, args = (action[0], action[1:]) if action else ("", [])
        if method == "GET" and name in ("", "revision") and len(args) == (1 if name else 0):
            doc = self.hub.repo_for_read(repo_type, repo_id, self.account)
            sha = self.hub.store.resolve(doc, args[0] if args else DEFAULT_BRANCH)
            return self._send_json(200, self.hub.repo_info(doc, sha, self._flag("blobs")))
        if method == "GET" and name == "tree" and args:
            doc = self.hub.repo_for_read(repo_type, repo_id, self.account)
            sha = self.hub.store.resolve(doc, args[0])
            folder = "/".join(args[1:]).strip("/")
            items = self.hub.tree(doc, sha, folder, self._flag("recursive"), self._flag("expand"))
            return self._send_page(items, raw_path)
        if method == "POST" and name == "paths-info" and len(args) == 1:
            return self._paths_info(repo_type, repo_id, args[0])
        if method == "GET" and name == "commits" and len(args) == 1:
            return self._commits(repo_type, repo_id, args[0], raw_path)
        if method == "GET" and name == "refs" and not args:
            return self._refs(repo_type, repo_id)
        if method == "POST" and name == "preupload" and len(args) == 1:
            return self._preupload(repo_type, repo_id, args[0])
        if method == "POST" and name == "commit" and len(args) == 1:
            return self._commit(repo_type, repo_id, args[0])
        if name in ("branch", "tag") and len(args) == 1 and method in ("POST", "DELETE"):
            return self._ref_change(repo_type, repo_id, name, args[0])
        raise ErrorAnswer(404, f"Unknown endpoint: {method} {raw_path}")

    # -- account and repo management ----------------------------------------------------------------

    def _whoami(self) -> None:
        if self.account is None:
            raise ErrorAnswer(401, "Invalid credentials in Authorization header")
        user = self.account.user
        orgs = sorted(self.hub.user_orgs[user])
        self._send_json(200, {
            "type": "user",
            "id": hashlib.sha1(user.encode()).hexdigest()[:24],
            "name": user,
            "fullname": user,
            "email": f"{user}@localhost",
            "emailVerified": True,
            "isPro": False,
            "orgs": [{"type": "org", "name": org, "fullname": org, "roleInOrg": "admin"} for org in orgs],
            "auth": {"type": "access_token", "accessToken": {"displayName": "loopback", "role": "write"}},
        })

    def _repo_target(self, payload: dict) -> tuple[str, str]:
        """``(repo_type, repo_id)`` of a create/delete payload; the namespace defaults to the caller."""
        if self.account is None:
            raise ErrorAnswer(401, "You must be authenticated to manage repos")
        repo_type = _field(payload, "type", str) or "model"
        namespace = _field(payload, "organization", str) or self.account.user
        name = _field(payload, "name", str, "")
        if repo_type not in URL_PREFIXES or not _NAME_RE.fullmatch(name) or not _NAME_RE.fullmatch(namespace):
            raise ErrorAnswer(400, f"Invalid repo: type={repo_type[:20]!r} name={namespace[:100]!r}/{name[:100]!r}")
        if namespace not in self.hub.namespaces(self.account):
            raise ErrorAnswer(403, f"You don't have the rights to manage repos in {namespace}")
        return repo_type, f"{namespace}/{name}"

    def _repo_url(self, repo_type: str, repo_id: str) -> str:
        return f"{self.base_url}/{URL_PREFIXES[repo_type]}{repo_id}"

    def _create_repo(self) -> None:
        payload = self._json_body()
        repo_type, repo_id = self._repo_target(payload)
        private = payload.get("visibility") == "private" or payload.get("private") is True
        try:
            self.hub.store.create(repo_type, repo_id, private)
        except ErrorAnswer as err:
            # create_repo(exist_ok=True) reads the existing repo's url from the 409 body.
            err.extra["url"] = self._repo_url(repo_type, repo_id)
            raise
        self._send_json(200, {"url": self._repo_url(repo_type, repo_id), "name": repo_id, "id": repo_id})

    def _delete_repo(self) -> None:
        repo_type, repo_id = self._repo_target(self._json_body())
        self.hub.store.delete(self.hub.repo_for_write(repo_type, repo_id, self.account))
        self._send_json(200, {})

    def _validate_yaml(self) -> None:
        content = _field(self._json_body(), "content", str, "")
        errors, warnings = [], []
        try:
            found, metadata = _front_matter(content)
        except ImportError:
            warnings.append("YAML validation unavailable: PyYAML is not installed")
        except Exception as err:  # yaml.YAMLError, named generically since yaml is imported lazily
            errors.append(f"Invalid YAML in README.md: {err}")
        else:
            if not found or metadata is None:
                warnings.append("empty or missing yaml metadata in repo card")
            elif not isinstance(metadata, dict):
                errors.append("YAML metadata must be a mapping")
        # The client reads the JSON body before checking the status, so errors are JSON too.
        self._send_json(400 if errors else 200, {
            "errors": [{"message": m} for m in errors],
            "warnings": [{"message": m} for m in warnings],
        })

    # -- reads --------------------------------------------------------------------------------------

    def _paths_info(self, repo_type: str, repo_id: str, revision: str) -> None:
        doc = self.hub.repo_for_read(repo_type, repo_id, self.account)
        sha = self.hub.store.resolve(doc, revision)
        # huggingface_hub posts a form (paths=a&paths=b&expand=False); other clients post JSON.
        if self.headers.get("Content-Type", "").startswith("application/json"):
            payload = self._json_body()
            paths, expand = _field(payload, "paths", list, []), bool(payload.get("expand"))
            if not all(isinstance(path, str) for path in paths):
                raise ErrorAnswer(400, "Field 'paths' must be a list of strings")
        else:
            try:
                form = parse_qs(self._read_body(JSON_BODY_LIMIT).decode(), keep_blank_values=True)
            except UnicodeDecodeError:
                raise ErrorAnswer(400, "Form body is not UTF-8")
            paths, expand = form.get("paths", []), form.get("expand", [""])[-1].lower() in ("1", "true")
        if len(paths) > MAX_PATHS_PER_REQUEST:
            raise ErrorAnswer(400, f"At most {MAX_PATHS_PER_REQUEST} paths per request, got {len(paths)}")
        infos = [self.hub.path_info(doc, sha, p.strip("/"), expand) for p in paths]
        self._send_json(200, [info for info in infos if info is not None])

    def _commits(self, repo_type: str, repo_id: str, revision: str, raw_path: str) -> None:
        doc = self.hub.repo_for_read(repo_type, repo_id, self.account)
        sha: str | None = self.hub.store.resolve(doc, revision)
        formatted = "formatted" in self.query.get("expand[]", [])
        items = []
        while sha is not None:
            commit = doc["commits"][sha]
            item = {
                "id": sha,
                "title": commit["title"],
                "message": commit["message"],
                "authors": [{"user": commit["author"]}],
                "date": commit["date"],
            }
            if formatted:
                item["formatted"] = {"title": html.escape(commit["title"]), "message": html.escape(commit["message"])}
            items.append(item)
            sha = commit["parent"]
        self._send_page(items, raw_path)

    def _refs(self, repo_type: str, repo_id: str) -> None:
        doc = self.hub.repo_for_read(repo_type, repo_id, self.account)

        def refs(kind: str, prefix: str) -> list[dict]:
            with self.hub.store.lock:  # commits and ref changes update these dicts in place
                items = sorted(doc[kind].items())
            return [{"name": n, "ref": prefix + n, "targetCommit": s} for n, s in items]

        self._send_json(200, {
            "branches": refs("branches", "refs/heads/"),
            "tags": refs("tags", "refs/tags/"),
            "converts": [],
            "pullRequests": [],
        })

    def _resolve(self, repo_type: str, repo_id: str, revision: str, path: str) -> None:
        doc = self.hub.repo_for_read(repo_type, repo_id, self.account)
        sha = self.hub.store.resolve(doc, revision)
        entry = doc["commits"][sha]["files"].get(path)
        if entry is None:
            # The client caches the absence of the file under this commit.
            raise ErrorAnswer(404, f"Entry not found: {path}", "EntryNotFound", {"X-Repo-Commit": sha})
        size = entry["size"]
        start, end = 0, size - 1
        status = 200
        headers = {
            "Content-Type": "application/octet-stream",
            "X-Repo-Commit": sha,
            # The client names cached blobs after the ETag: sha256 for LFS files, git blob sha1 otherwise.
            "ETag": f'"{entry["sha256"] if entry["lfs"] else entry["oid"]}"',
            "Accept-Ranges": "bytes",
        }
        byte_range = _parse_range(self.headers["Range"], size) if self.headers.get("Range") else None
        if byte_range is not None:
            start, end = byte_range
            status = 206
            headers["Content-Range"] = f"bytes {start}-{end}/{size}"
        self._send_headers(status, {**headers, "Content-Length": str(end - start + 1)})
        if self.command == "HEAD":
            return
        cut = self.server.next_cut(end - start + 1)
        with open(self.hub.store.blob_path(entry["sha256"]), "rb") as f:
            f.seek(start)
            if cut is not None:
                self.wfile.write(f.read(cut))
                self.wfile.flush()
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            remaining = end - start + 1
            while remaining > 0:
                chunk = f.read(min(remaining, 1 << 20))
                self.wfile.write(chunk)
                remaining -= len(chunk)

    # -- writes -------------------------------------------------------------------------------------

    def _preupload(self, repo_type: str, repo_id: str, revision: str) -> None:
        doc = self.hub.repo_for_write(repo_type, repo_id, self.account)
        sha = self.hub.store.resolve(doc, revision)
        current = doc["commits"][sha]["files"]
        answers = []
        for item in _objects(self._json_body(), "files"):
            path = _field(item, "path", str, "")
            try:
                sample = base64.b64decode(_field(item, "sample", str, ""), validate=True)
            except ValueError:
                raise ErrorAnswer(400, f"Invalid base64 sample for {path[:200]!r}")
            mode = self.hub.upload_mode(doc, sha, path, _field(item, "size", int, 0), sample)
            existing = current.get(path)
            # The oid lets the client skip unchanged files: sha256 for LFS, git blob sha1 for regular ones.
            oid = None if existing is None else existing["sha256"] if existing["lfs"] else existing["oid"]
            answers.append({"path": path, "uploadMode": mode, "shouldIgnore": False, "oid": oid})
        self._send_json(200, {"files": answers, "commitOid": sha})

    def _lfs_batch(self, repo_type: str, repo_id: str) -> None:
        self.hub.repo_for_write(repo_type, repo_id, self.account)
        payload = self._json_body()
        if payload.get("operation") != "upload":
            raise ErrorAnswer(400, "Only the 'upload' LFS batch operation is supported")
        objects = []
        for obj in _objects(payload, "objects"):
            oid, size = obj.get("oid"), obj.get("size")
            valid_size = isinstance(size, int) and not isinstance(size, bool) and size >= 0
            if not (isinstance(oid, str) and _SHA256_RE.fullmatch(oid) and valid_size):
                objects.append({"oid": str(oid)[:80], "size": size if valid_size else 0,
                                "error": {"code": 422, "message": "Invalid oid or size"}})
            elif self.hub.store.has_blob(oid, size):
                objects.append({"oid": oid, "size": size})  # no actions: the client skips the upload
            else:
                href = f"{self.base_url}/api/lfs-storage/{oid}"
                objects.append({
                    "oid": oid,
                    "size": size,
                    "authenticated": True,
                    "actions": {
                        # A presigned URL, as the client sends this PUT without credentials.
                        "upload": {"href": f"{href}?{self.hub.upload_grant(oid, size)}"},
                        "verify": {"href": f"{href}/verify"},
                    },
                })
        self._send(200, json.dumps({"transfer": "basic", "objects": objects}).encode(), "application/vnd.git-lfs+json")

    def _lfs_put(self, oid: str) -> None:
        # The client sends this PUT without credentials (it targets object storage on the real Hub), so
        # the URL carries the grant: everything is checked before a byte of the body is read, which then
        # streams to disk, never past the granted size, and is kept only if it hashes to the oid.
        self.hub.store.blob_path(oid)  # refuses anything but a sha256
        size = self.hub.granted_size(oid, self.query)
        if self._length is not None and self._length != size:
            raise ErrorAnswer(400, f"Content-Length {self._length} is not the {size} bytes granted")
        self.hub.store.put_blob_file(self._open_body(size), size, oid)
        self._send(200, b"", "text/plain")

    def _lfs_verify(self, oid: str) -> None:
        self.hub.store.blob_path(oid)  # a sha256, or refused: never a probe of other files
        if not self.hub.store.has_blob(oid, _field(self._json_body(), "size", int)):
            raise ErrorAnswer(404, f"LFS object {oid} not found")
        self._send_json(200, {"success": True})

    def _commit(self, repo_type: str, repo_id: str, branch: str) -> None:
        doc = self.hub.repo_for_write(repo_type, repo_id, self.account)
        if self._flag("create_pr"):
            raise ErrorAnswer(400, "Pull requests are not supported by the loopback hub")
        lines = [_json_object(line, "A line of the commit payload")
                 for line in self._read_body(COMMIT_BODY_LIMIT).split(b"\n") if line.strip()]
        headers = [_field(line, "value", dict, {}) for line in lines if line.get("key") == "header"]
        operations = [line for line in lines if line.get("key") != "header"]
        sha = self.hub.store.commit(doc, branch, self.account.user, headers[0] if headers else {}, operations)
        self._send_json(200, {
            "success": True,
            "commitOid": sha,
            "commitUrl": f"{self._repo_url(repo_type, repo_id)}/commit/{sha}",
            "pullRequestUrl": None,
        })

    def _ref_change(self, repo_type: str, repo_id: str, kind: str, name: str) -> None:
        doc = self.hub.repo_for_write(repo_type, repo_id, self.account)
        refs = "branches" if kind == "branch" else "tags"
        if self.command == "DELETE":
            self.hub.store.set_ref(doc, refs, name, None)
        elif kind == "branch":
            # POST /branch/{name} {"startingPoint": rev}: a new branch, from main's head by default.
            start = _field(self._json_body(), "startingPoint", str) or DEFAULT_BRANCH
            self.hub.store.set_ref(doc, refs, name, self.hub.store.resolve(doc, start))
        else:
            # POST /tag/{revision} {"tag": name}: the URL names the commit, the body the new tag.
            tag = _field(self._json_body(), "tag", str, "")
            self.hub.store.set_ref(doc, refs, tag, self.hub.store.resolve(doc, name))
        self._send_json(200, {})


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, port: int, hub: Hub, log_requests: bool, connection_timeout: float):
        self.hub = hub
        self.log_requests = log_requests
        self.connection_timeout = connection_timeout
        self.cuts: list[int] = []  # fault injection: the next downloads stop after this many bytes
        self.cuts_lock = threading.Lock()
        super().__init__(("127.0.0.1", port), _Handler)

    def next_cut(self, size: int) -> int | None:
        """Bytes to send of a ``size``-byte download before dropping the connection, if one is due."""
        with self.cuts_lock:
            if self.cuts and size > self.cuts[0]:
                return self.cuts.pop(0)
        return None


class HubServer:
    """The loopback Hub, served from a background thread.

    Args:
        data_dir: where repos and blobs are persisted.
        accounts: ``Account`` objects or ``"TOKEN:USER[:ORG]"`` strings.
        port: 0 picks a free port; read the real one from ``url``.
        page_size: entries per page of the tree and commit listings (small values exercise pagination).
        log_requests: log each request to stderr, ``http.server``-style.
        connection_timeout: seconds a connection may send nothing (between requests or within one)
            before it is closed.
    """

    def __init__(
        self,
        data_dir: str | os.PathLike,
        accounts: Iterable[Account | str],
        *,
        port: int = 0,
        page_size: int = 1000,
        log_requests: bool = False,
        connection_timeout: float = CONNECTION_TIMEOUT,
    ):
        self.hub = Hub(data_dir, accounts, page_size)
        self.port = port
        self.log_requests = log_requests
        self.connection_timeout = connection_timeout
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("HubServer is not started")
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> "HubServer":
        self._server = _Server(self.port, self.hub, self.log_requests, self.connection_timeout)
        self._thread = threading.Thread(target=self._server.serve_forever, name="loopback-hub", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join()
            self._server = self._thread = None

    def __enter__(self) -> "HubServer":
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def cut_downloads(self, count: int = 1, after_bytes: int = 1024) -> None:
        """Fault injection for tests: the next ``count`` file downloads larger than ``after_bytes`` send
        that many bytes of the body, then the server drops the connection."""
        self._server.cuts.extend([after_bytes] * count)


def _token_arg(spec: str) -> Account:
    try:
        return parse_token_spec(spec)
    except ValueError as err:  # argparse only shows the message of an ArgumentTypeError
        raise argparse.ArgumentTypeError(str(err)) from err


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m fadrm_datasets.testing.hub", description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1; 0 picks a free one")
    parser.add_argument("--data-dir", required=True, help="directory holding the repos and blobs")
    parser.add_argument("--token", action="append", default=[], type=_token_arg,
                        metavar="TOKEN:USER[:ORG]", help="an accepted token (repeatable)")
    parser.add_argument("--log-requests", action="store_true", help="log each request to stderr")
    args = parser.parse_args(argv)

    server = HubServer(args.data_dir, args.token, port=args.port, log_requests=args.log_requests).start()
    # SIGTERM (what subprocess.terminate sends) should stop the server cleanly, like Ctrl-C.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print(f"READY {server.url}", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()


if __name__ == "__main__":
    main()
