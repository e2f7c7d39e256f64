"""A loopback Hugging Face Hub-compatible server for tests, standard library only.

It implements the subset of the Hub HTTP API that ``huggingface_hub`` (``HfApi``, ``hf_hub_download``,
``snapshot_download``, ``HfFileSystem``) and ``datasets.load_dataset`` use to create repos, commit files
(regular and LFS, via the legacy LFS batch protocol: run clients with ``HF_HUB_DISABLE_XET=1``), manage
branches and tags, list trees and commits, and download files.

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
import html
import json
import os
import posixpath
import re
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
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")
_COMMIT_SHA_RE = re.compile(r"^[0-9a-f]{40}$")
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
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


class HubError(Exception):
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
    return bool(path) and all(p not in ("", ".", "..") for p in parts) and parts[0] != ".git"


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
        if not isinstance(sha256, str) or not _SHA256_RE.match(sha256):
            raise HubError(400, f"Invalid object id {str(sha256)[:80]!r}: expected 64 hex digits")
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
        """Stream ``size`` bytes from ``source`` into the blob ``sha256``, refused unless they hash to it."""
        target = self.blob_path(sha256)
        fd, tmp = tempfile.mkstemp(dir=self.blob_dir, prefix=".tmp-")
        digest = hashlib.sha256()
        try:
            with os.fdopen(fd, "wb") as f:
                remaining = size
                while remaining > 0:
                    chunk = source.read(min(remaining, 1 << 20))
                    if not chunk:
                        raise HubError(400, "Upload ended before its Content-Length")
                    digest.update(chunk)
                    f.write(chunk)
                    remaining -= len(chunk)
            if digest.hexdigest() != sha256:
                raise HubError(400, f"Uploaded content does not match sha256 {sha256}")
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
                raise HubError(409, f"You already created this {repo_type} repo")
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
            if _COMMIT_SHA_RE.match(revision) and revision in doc["commits"]:
                candidates.append(revision)
        for sha in candidates:
            if sha is not None:
                return sha
        raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")

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
                raise HubError(404, f"Invalid rev id: {branch} is not a branch", "RevisionNotFound")
            head = doc["branches"][branch]
            parent_commit = header.get("parentCommit")
            if parent_commit is not None and parent_commit != head:
                raise HubError(412, f"A commit has happened since {parent_commit}. Please refresh and try again.")
            files = dict(doc["commits"][head]["files"])
            for op in operations:
                self._apply(files, op.get("key"), op.get("value") or {})
            sha = self._add_commit(
                doc, head, files, header.get("summary") or "Upload files", header.get("description") or "", author
            )
            doc["branches"][branch] = sha
            self.save(doc)
            return sha

    def _apply(self, files: dict, key: str | None, value: dict) -> None:
        path = value.get("path", "")
        if key in ("file", "lfsFile") and not _valid_repo_path(path):
            raise HubError(400, f"Invalid path in repo: {path!r}")
        if key == "file":
            content = value.get("content", "")
            data = base64.b64decode(content) if value.get("encoding") == "base64" else content.encode()
            files[path] = self._regular_entry(data)
        elif key == "lfsFile":
            oid, size = value.get("oid", ""), value.get("size")
            if value.get("algo", "sha256") != "sha256" or not self.has_blob(oid, size):
                raise HubError(422, f"LFS object {oid} for {path} was not uploaded")
            files[path] = self._lfs_entry(oid, self.blob_path(oid).stat().st_size)
        elif key == "deletedFile":
            if files.pop(path, None) is None:
                raise HubError(404, f"File not found: {path}", "EntryNotFound")
        elif key == "deletedFolder":
            prefix = path.rstrip("/") + "/"
            doomed = [p for p in files if p.startswith(prefix)]
            if not doomed:
                raise HubError(404, f"Folder not found: {path}", "EntryNotFound")
            for p in doomed:
                del files[p]
        else:
            raise HubError(400, f"Unsupported commit operation: {key!r}")

    def set_ref(self, doc: dict, kind: str, name: str, sha: str | None) -> None:
        """Create (``sha``) or delete (``None``) a branch or tag; ``kind`` is ``"branches"`` or ``"tags"``."""
        with self.lock:
            refs = doc[kind]
            if sha is None:
                if name not in refs:
                    raise HubError(404, f"Invalid rev id: {name}", "RevisionNotFound")
                if kind == "branches" and name == DEFAULT_BRANCH:
                    raise HubError(403, f"Cannot delete the default branch {name}")
                del refs[name]
            else:
                if name in refs:
                    raise HubError(409, f"{'Branch' if kind == 'branches' else 'Tag'} {name} already exists")
                if not _NAME_RE.match(name.replace("/", "-")) or _COMMIT_SHA_RE.match(name):
                    raise HubError(400, f"Invalid ref name: {name!r}")
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
        self.accounts: dict[str, Account] = {}
        self.user_orgs: dict[str, set[str]] = {}
        for account in accounts:
            account = parse_token_spec(account) if isinstance(account, str) else account
            self.accounts[account.token] = account
            # Membership belongs to the user, whichever of their tokens declared it.
            self.user_orgs.setdefault(account.user, set()).update(account.orgs)

    def namespaces(self, account: Account | None) -> set[str]:
        return set() if account is None else {account.user, *self.user_orgs[account.user]}

    def repo_for_read(self, repo_type: str, repo_id: str, account: Account | None) -> dict:
        doc = self.store.get(repo_type, repo_id)
        # Like the Hub, a private repo the caller cannot see does not exist for them.
        if doc is None or (doc["private"] and repo_id.split("/")[0] not in self.namespaces(account)):
            raise HubError(404, f"Repository not found: {repo_id}", "RepoNotFound")
        return doc

    def repo_for_write(self, repo_type: str, repo_id: str, account: Account | None) -> dict:
        doc = self.repo_for_read(repo_type, repo_id, account)
        if account is None:
            raise HubError(401, "You must be authenticated to write to a repo")
        if repo_id.split("/")[0] not in self.namespaces(account):
            raise HubError(403, f"You don't have the rights to write to {repo_id}")
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
                raise HubError(404, f"Folder not found: {folder}", "EntryNotFound")
            paths = [p for p in paths if p.startswith(folder + "/")]
        if not recursive:
            depth = folder.count("/") + 1 if folder else 0
            paths = [p for p in paths if p.count("/") == depth]
        # Folders first then files, each sorted, like the Hub.
        infos = [self.path_info(doc, sha, p, expand) for p in paths]
        return sorted(infos, key=lambda i: (i["type"] != "directory", i["path"]))

    def card_data(self, doc: dict, sha: str) -> dict | None:
        entry = doc["commits"][sha]["files"].get("README.md")
        if entry is None:
            return None
        try:
            _, metadata = _front_matter(self.store.read_blob(entry["sha256"]).decode("utf-8"))
        except Exception:  # no PyYAML, invalid YAML or undecodable README: the Hub just omits cardData
            return None
        return metadata if isinstance(metadata, dict) else None

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


MAX_BODY = 64 << 20  # request bodies held in memory (JSON, ndjson); LFS uploads stream to disk instead


def _read_chunked(rfile, limit: int) -> bytes:
    chunks, total = [], 0
    while True:
        size = int(rfile.readline().split(b";")[0].strip(), 16)
        if size == 0:
            while rfile.readline() not in (b"\r\n", b"\n", b""):  # skip trailers
                pass
            return b"".join(chunks)
        total += size
        if total > limit:
            raise HubError(413, f"Request body larger than {limit} bytes")
        chunks.append(rfile.read(size))
        rfile.readline()


def _parse_range(header: str, size: int) -> tuple[int, int] | None:
    """Inclusive byte range of a single-range ``Range`` header; ``None`` means serve the whole file."""
    match = re.fullmatch(r"bytes=(\d*)-(\d*)", header.strip())
    if match is None or match.group(1) == match.group(2) == "":
        return None  # multi-range and malformed headers are ignored, as RFC 9110 allows
    first, last = match.groups()
    if first == "":  # "bytes=-N": the last N bytes
        start, end = size - min(int(last), size), size - 1
    else:
        start, end = int(first), min(int(last), size - 1) if last else size - 1
    if start >= size or start > end:
        raise HubError(416, f"Range {header} not satisfiable", headers={"Content-Range": f"bytes */{size}"})
    return start, end


class _Handler(BaseHTTPRequestHandler):
    # HTTP/1.1 lets the clients keep connections alive; every response therefore sends Content-Length.
    protocol_version = "HTTP/1.1"
    server: "_Server"

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

    @property
    def body(self) -> bytes:
        """The request body, read on first use: credentials and the endpoint are checked before it is."""
        if self._body is None:
            if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
                self._body = _read_chunked(self.rfile, MAX_BODY)
            else:
                length = self._content_length()
                if length > MAX_BODY:
                    raise HubError(413, f"Request body larger than {MAX_BODY} bytes")
                self._body = self.rfile.read(length)
        return self._body

    def _content_length(self) -> int:
        try:
            return max(0, int(self.headers.get("Content-Length") or 0))
        except ValueError:
            raise HubError(400, "Invalid Content-Length")

    def _discard_body(self) -> None:
        """Answering without reading the body makes clients see resets: drain a small one, and close the
        connection after a large or chunked one instead of reading it."""
        if self._body is not None:
            return
        self._body = b""  # whatever happens below, the body is gone
        chunked = "chunked" in self.headers.get("Transfer-Encoding", "").lower()
        try:
            unread = MAX_BODY + 1 if chunked else self._content_length()
        except HubError:
            unread = MAX_BODY + 1
        if unread > MAX_BODY:
            self.close_connection = True
            return
        while unread > 0:
            chunk = self.rfile.read(min(unread, 1 << 20))
            if not chunk:
                break
            unread -= len(chunk)

    def _handle(self) -> None:
        self._body: bytes | None = None
        raw_path, _, query = self.path.partition("?")
        self.query = parse_qs(query, keep_blank_values=True)
        try:
            self.account = self._authenticate()
            self._route([unquote(s) for s in raw_path.split("/")[1:]], raw_path)
        except HubError as err:
            self._discard_body()
            body = {"error": err.message, **err.extra}
            self._send_json(err.status, body, {**err.headers, **self._error_headers(err)})
        except Exception as err:  # a server bug must still produce an answer, not a dropped connection
            self._discard_body()
            self._send_json(500, {"error": f"{type(err).__name__}: {err}"})
            raise
        self._discard_body()

    @staticmethod
    def _error_headers(err: HubError) -> dict[str, str]:
        # Header values must be single-line latin-1; messages may quote arbitrary repo paths.
        headers = {"X-Error-Message": " ".join(err.message.encode("ascii", "backslashreplace").decode().split())}
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
            raise HubError(401, "Invalid credentials in Authorization header")
        return account

    def _param(self, name: str, default: str | None = None) -> str | None:
        return self.query.get(name, [default])[-1]

    def _flag(self, name: str) -> bool:
        return (self._param(name) or "").lower() in ("1", "true")

    def _json_body(self) -> Any:
        try:
            return json.loads(self.body or b"{}")
        except ValueError:
            raise HubError(400, "Request body is not valid JSON")

    def _send(self, status: int, body: bytes, content_type: str, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if self.close_connection:  # an unread body is left on the socket: the client must not reuse it
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _send_json(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(payload).encode(), "application/json; charset=utf-8", headers)

    def _send_page(self, items: list, path: str) -> None:
        """Send one page of ``items``, with a GitHub-style ``Link: <...>; rel="next"`` header if more remain."""
        cursor = self._param("cursor", "0")
        if not cursor.isdigit():
            raise HubError(400, f"Invalid cursor: {cursor!r}")
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
        if method in ("POST", "PUT", "DELETE") and self.account is None and not self._anonymous_write(segments):
            raise HubError(401, "You must be authenticated to write")  # before a byte of the body is read
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
                return self._repo_api(api[0][:-1], f"{api[1]}/{api[2]}", api[3:], raw_path)
        else:
            repo_type = next((t for t, p in URL_PREFIXES.items() if p and segments[0] == p.rstrip("/")), "model")
            rest = segments[1:] if repo_type != "model" else segments
            if len(rest) >= 4 and rest[2] == "resolve" and method in ("GET", "HEAD"):
                return self._resolve(repo_type, f"{rest[0]}/{rest[1]}", rest[3], "/".join(rest[4:]))
            if rest[2:] == ["info", "lfs", "objects", "batch"] and rest[1].endswith(".git") and method == "POST":
                return self._lfs_batch(repo_type, f"{rest[0]}/{rest[1].removesuffix('.git')}")
        raise HubError(404, f"Unknown endpoint: {method} {raw_path}")

    @staticmethod
    def _anonymous_write(segments: list[str]) -> bool:
        """Requests with a body that need no token: the LFS upload itself (the content must hash to its
        object id) and the read-only POSTs a downloading client makes."""
        if segments[:2] == ["api", "lfs-storage"]:
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
        raise HubError(404, f"Unknown endpoint: {method} {raw_path}")

    # -- account and repo management ----------------------------------------------------------------

    def _whoami(self) -> None:
        if self.account is None:
            raise HubError(401, "Invalid credentials in Authorization header")
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
            raise HubError(401, "You must be authenticated to manage repos")
        repo_type = payload.get("type") or "model"
        namespace, name = payload.get("organization") or self.account.user, payload.get("name") or ""
        if repo_type not in URL_PREFIXES or not _NAME_RE.match(name) or not _NAME_RE.match(namespace):
            raise HubError(400, f"Invalid repo: type={repo_type!r} name={namespace}/{name}")
        if namespace not in self.hub.namespaces(self.account):
            raise HubError(403, f"You don't have the rights to manage repos in {namespace}")
        return repo_type, f"{namespace}/{name}"

    def _repo_url(self, repo_type: str, repo_id: str) -> str:
        return f"{self.base_url}/{URL_PREFIXES[repo_type]}{repo_id}"

    def _create_repo(self) -> None:
        payload = self._json_body()
        repo_type, repo_id = self._repo_target(payload)
        private = payload.get("visibility") == "private" or payload.get("private") is True
        try:
            self.hub.store.create(repo_type, repo_id, private)
        except HubError as err:
            # create_repo(exist_ok=True) reads the existing repo's url from the 409 body.
            err.extra["url"] = self._repo_url(repo_type, repo_id)
            raise
        self._send_json(200, {"url": self._repo_url(repo_type, repo_id), "name": repo_id, "id": repo_id})

    def _delete_repo(self) -> None:
        repo_type, repo_id = self._repo_target(self._json_body())
        self.hub.store.delete(self.hub.repo_for_write(repo_type, repo_id, self.account))
        self._send_json(200, {})

    def _validate_yaml(self) -> None:
        payload = self._json_body()
        errors, warnings = [], []
        try:
            found, metadata = _front_matter(payload.get("content") or "")
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
            paths, expand = payload.get("paths", []), bool(payload.get("expand"))
        else:
            form = parse_qs(self.body.decode(), keep_blank_values=True)
            paths, expand = form.get("paths", []), form.get("expand", [""])[-1].lower() in ("1", "true")
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
            raise HubError(404, f"Entry not found: {path}", "EntryNotFound", {"X-Repo-Commit": sha})
        size = entry["size"]
        start, end = 0, size - 1
        status = 200
        headers = {
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
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(end - start + 1))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
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
        for item in self._json_body().get("files", []):
            path = item.get("path", "")
            sample = base64.b64decode(item.get("sample", ""))
            mode = self.hub.upload_mode(doc, sha, path, int(item.get("size", 0)), sample)
            existing = current.get(path)
            # The oid lets the client skip unchanged files: sha256 for LFS, git blob sha1 for regular ones.
            oid = None if existing is None else existing["sha256"] if existing["lfs"] else existing["oid"]
            answers.append({"path": path, "uploadMode": mode, "shouldIgnore": False, "oid": oid})
        self._send_json(200, {"files": answers, "commitOid": sha})

    def _lfs_batch(self, repo_type: str, repo_id: str) -> None:
        self.hub.repo_for_write(repo_type, repo_id, self.account)
        payload = self._json_body()
        if payload.get("operation") != "upload":
            raise HubError(400, "Only the 'upload' LFS batch operation is supported")
        objects = []
        for obj in payload.get("objects", []):
            oid, size = obj.get("oid", ""), obj.get("size")
            if not _SHA256_RE.match(oid) or not isinstance(size, int):
                objects.append({"oid": str(oid), "size": size if isinstance(size, int) else 0,
                                "error": {"code": 422, "message": "Invalid oid or size"}})
            elif self.hub.store.has_blob(oid, size):
                objects.append({"oid": oid, "size": size})  # no actions: the client skips the upload
            else:
                href = f"{self.base_url}/api/lfs-storage/{oid}"
                objects.append({
                    "oid": oid,
                    "size": size,
                    "authenticated": True,
                    "actions": {"upload": {"href": href}, "verify": {"href": f"{href}/verify"}},
                })
        self._send(200, json.dumps({"transfer": "basic", "objects": objects}).encode(), "application/vnd.git-lfs+json")

    def _lfs_put(self, oid: str) -> None:
        # The client sends this PUT without credentials (it targets object storage on the real Hub).
        # Accepting it unauthenticated is safe because the content must hash to the oid it is stored
        # under; it streams to disk, so no upload is held in memory.
        self.hub.store.blob_path(oid)  # refuses anything but a sha256 before reading a byte
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            if hashlib.sha256(self.body).hexdigest() != oid:
                raise HubError(400, f"Uploaded content does not match sha256 {oid}")
            self.hub.store.put_blob(self.body)
        else:
            self._body = b""  # consumed by the stream below
            self.hub.store.put_blob_file(self.rfile, self._content_length(), oid)
        self._send(200, b"", "text/plain")

    def _lfs_verify(self, oid: str) -> None:
        if self.account is None:
            raise HubError(401, "You must be authenticated to verify LFS uploads")
        self.hub.store.blob_path(oid)  # a sha256, or refused: never a probe of other files
        if not self.hub.store.has_blob(oid, self._json_body().get("size")):
            raise HubError(404, f"LFS object {oid} not found")
        self._send_json(200, {"success": True})

    def _commit(self, repo_type: str, repo_id: str, branch: str) -> None:
        doc = self.hub.repo_for_write(repo_type, repo_id, self.account)
        if self._flag("create_pr"):
            raise HubError(400, "Pull requests are not supported by the loopback hub")
        try:
            lines = [json.loads(line) for line in self.body.decode().splitlines() if line.strip()]
        except ValueError:
            raise HubError(400, "Commit payload is not valid ndjson")
        headers = [line.get("value") or {} for line in lines if line.get("key") == "header"]
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
            start = self._json_body().get("startingPoint") or DEFAULT_BRANCH
            self.hub.store.set_ref(doc, refs, name, self.hub.store.resolve(doc, start))
        else:
            # POST /tag/{revision} {"tag": name}: the URL names the commit, the body the new tag.
            tag = self._json_body().get("tag") or ""
            self.hub.store.set_ref(doc, refs, tag, self.hub.store.resolve(doc, name))
        self._send_json(200, {})


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, port: int, hub: Hub, log_requests: bool):
        self.hub = hub
        self.log_requests = log_requests
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
    """

    def __init__(
        self,
        data_dir: str | os.PathLike,
        accounts: Iterable[Account | str],
        *,
        port: int = 0,
        page_size: int = 1000,
        log_requests: bool = False,
    ):
        self.hub = Hub(data_dir, accounts, page_size)
        self.port = port
        self.log_requests = log_requests
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("HubServer is not started")
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> "HubServer":
        self._server = _Server(self.port, self.hub, self.log_requests)
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
