"""The loopback Hub attacked as an outsider would: raw requests that no well-behaved client sends.

Each test makes a real fault and checks the answer (a 4xx at once, never a 500 or a wait), and that
nothing was stored or held for it: no blob, no repo file, no growth of the server's peak memory.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import parse_qsl, quote, urlencode

import pytest

from fadrm_datasets.testing.hub import Account, HubServer

REPO_ROOT = Path(__file__).resolve().parents[2]
# Long enough for a loaded machine; a server that waits for bytes that never come fails by timing out.
ANSWER_TIMEOUT = 5.0


# -- raw HTTP ------------------------------------------------------------------------------------------


def connect(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=ANSWER_TIMEOUT)


def head(method: str, target: str, headers: dict[str, str] | None = None) -> bytes:
    lines = [f"{method} {target} HTTP/1.1", "Host: loopback", *(f"{k}: {v}" for k, v in (headers or {}).items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def answer(sock: socket.socket) -> tuple[int, http.client.HTTPMessage, bytes]:
    response = http.client.HTTPResponse(sock)
    response.begin()
    return response.status, response.headers, response.read()


def exchange(url: str, data: bytes) -> tuple[int, http.client.HTTPMessage, bytes]:
    """Send ``data`` on a fresh connection; the server must answer without waiting for more."""
    with connect(url) as sock:
        sock.sendall(data)
        return answer(sock)


def closed_by_server(sock: socket.socket) -> bool:
    sock.settimeout(ANSWER_TIMEOUT)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


def auth(hub, **headers: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {hub.token}", **headers}


def json_request(hub, method: str, target: str, payload, **headers: str):
    """An authenticated request with ``payload`` (JSON, or bytes as they are) as its body; ``hub`` is
    anything with the server's ``url`` and a ``token``."""
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return exchange(hub.url, head(method, target, auth(hub, **{"Content-Length": str(len(body)), **headers})) + body)


def commit_line(key: str, value: dict) -> bytes:
    return json.dumps({"key": key, "value": value}).encode() + b"\n"


def regular_file(path: str, content: bytes) -> bytes:
    return commit_line("file", {"path": path, "content": base64.b64encode(content).decode(), "encoding": "base64"})


# -- LFS uploads -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dataset_repo(hub) -> str:
    from huggingface_hub import HfApi

    repo_id = hub.repo_id("limits")
    HfApi().create_repo(repo_id, repo_type="dataset")
    return repo_id


def upload_target(hub, repo_id: str, oid: str, size: int) -> str:
    """The upload URL (path and query) the LFS batch endpoint answers for ``oid``, as the client gets it."""
    payload = {"operation": "upload", "transfers": ["basic"], "objects": [{"oid": oid, "size": size}]}
    status, _, body = json_request(hub, "POST", f"/datasets/{repo_id}.git/info/lfs/objects/batch", payload)
    assert status == 200
    return json.loads(body)["objects"][0]["actions"]["upload"]["href"].removeprefix(hub.url)


def blob_kept(hub, oid: str) -> bool:
    blobs = hub.data_dir / "blobs"
    return (blobs / oid).exists() or any(blobs.glob(".tmp-*"))


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("framing, status", [
    pytest.param(b"-1\r\n", 400, id="negative size (read to EOF)"),
    pytest.param(b"zz\r\nxx\r\n0\r\n\r\n", 400, id="not hex"),
    pytest.param(b"0" * (64 << 10), 400, id="size line of 64 KiB with no CRLF"),
    pytest.param(b"5\r\nabcdeXX0\r\n\r\n", 400, id="chunk data not followed by CRLF"),
    pytest.param(b"%x\r\n" % (16 << 20), 413, id="chunk of 16 MiB beyond the granted 4 KiB"),
])
def test_a_malformed_chunked_upload_is_refused_at_once(hub, dataset_repo, framing, status):
    content = os.urandom(4096)
    oid = sha256(content)
    target = upload_target(hub, dataset_repo, oid, len(content))
    with connect(hub.url) as sock:
        # Only the framing is sent: an answer proves nothing past it was awaited.
        sock.sendall(head("PUT", target, {"Transfer-Encoding": "chunked"}) + framing)
        got, headers, _ = answer(sock)
        assert (got, headers["Connection"]) == (status, "close")
        assert closed_by_server(sock)
    assert not blob_kept(hub, oid)


def test_an_anonymous_upload_is_not_kept(hub):
    """The content hashes to its oid, but no LFS batch granted the upload."""
    content = os.urandom(1024)
    oid = sha256(content)
    status, _, body = exchange(hub.url, head("PUT", f"/api/lfs-storage/{oid}", {"Content-Length": "1024"}) + content)
    assert status == 403 and b"No valid upload grant" in body
    assert not blob_kept(hub, oid)


def forged(target: str, name: str, value: str) -> str:
    """``target`` with the query field ``name`` set to ``value``."""
    path, _, query = target.partition("?")
    return f"{path}?{urlencode({**dict(parse_qsl(query)), name: value})}"


# Ways to PUT without the grant the LFS batch answered: (the granted target, another object's target) -> target.
NOT_THE_GRANT = {
    "no grant": lambda target, other: target.partition("?")[0],
    "forged signature": lambda target, other: forged(target, "signature", "0" * 64),
    "size raised": lambda target, other: forged(target, "size", str(64 << 20)),
    "expiry pushed back": lambda target, other: forged(target, "expires", "9" * 12),
    "another object's grant": lambda target, other: target.partition("?")[0] + "?" + other.partition("?")[2],
}


@pytest.mark.parametrize("way", NOT_THE_GRANT)
def test_an_upload_without_its_grant_is_refused_before_its_body(hub, dataset_repo, way):
    content = os.urandom(1 << 20)
    oid = sha256(content)
    target = upload_target(hub, dataset_repo, oid, len(content))
    other = upload_target(hub, dataset_repo, sha256(b"other"), len(content))
    with connect(hub.url) as sock:
        sock.sendall(head("PUT", NOT_THE_GRANT[way](target, other), {"Content-Length": str(len(content))}))
        status, headers, _ = answer(sock)  # before a byte of the body was sent
        assert (status, headers["Connection"]) == (403, "close")
    assert not blob_kept(hub, oid)


def test_an_upload_longer_than_its_grant_is_refused_before_its_body(hub, dataset_repo):
    content = os.urandom(1 << 20)
    oid = sha256(content)
    target = upload_target(hub, dataset_repo, oid, 1024)  # the client lied about the size
    with connect(hub.url) as sock:
        sock.sendall(head("PUT", target, {"Content-Length": str(len(content))}))
        got, _, body = answer(sock)
    assert got == 400 and b"is not the 1024 bytes granted" in body
    assert not blob_kept(hub, oid)


def test_an_expired_grant_is_refused(hub, dataset_repo, monkeypatch):
    content = os.urandom(1024)
    oid = sha256(content)
    target = upload_target(hub, dataset_repo, oid, len(content))
    # Two hours on: past any grant's lifetime. (raising=False: a server without a clock ignores it.)
    monkeypatch.setattr(hub.server.hub, "clock", lambda: time.time() + 7200, raising=False)
    status, _, body = exchange(hub.url, head("PUT", target, {"Content-Length": "1024"}) + content)
    assert status == 403 and b"has expired" in body
    assert not blob_kept(hub, oid)


def peak_rss_kib(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith("VmHWM:")).split()[1])


@pytest.fixture
def hub_process(tmp_path):
    """A loopback Hub in its own process, so that its peak memory is its own. The module runs as a script:
    it needs the standard library only, and importing the package would load torch."""
    process = subprocess.Popen(
        [sys.executable, str(REPO_ROOT / "fadrm_datasets" / "testing" / "hub.py"), "--port", "0",
         "--data-dir", str(tmp_path / "hub"), "--token", "tok-carol:carol"], stdout=subprocess.PIPE, text=True)
    try:
        url = process.stdout.readline().strip().removeprefix("READY ")
        yield SimpleNamespace(url=url, token="tok-carol", data_dir=tmp_path / "hub", pid=process.pid)
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_a_chunked_upload_streams_to_disk(hub_process):
    piece = os.urandom(1 << 20)
    content = piece * 32
    oid, size = sha256(content), len(content)
    assert json_request(hub_process, "POST", "/api/repos/create", {"name": "streamed", "type": "dataset"})[0] == 200
    target = upload_target(hub_process, "carol/streamed", oid, size)
    before = peak_rss_kib(hub_process.pid)
    connection = http.client.HTTPConnection(hub_process.url.removeprefix("http://"), timeout=60)
    connection.request("PUT", target, body=(piece for _ in range(32)), encode_chunked=True)
    assert connection.getresponse().status == 200
    connection.close()
    assert (hub_process.data_dir / "blobs" / oid).stat().st_size == size
    assert peak_rss_kib(hub_process.pid) - before < 8 << 10  # KiB; the 32 MiB body held in memory would show


# -- request targets, framing and body limits ----------------------------------------------------------


@pytest.mark.parametrize("target", [
    pytest.param("*", id="asterisk form"),
    pytest.param("http://127.0.0.1/api/whoami-v2", id="absolute form"),
    pytest.param("/api/datasets//limits", id="empty segment"),
    pytest.param("/api/whoami-v2%zz", id="bad percent-escape"),
    pytest.param("/api/datasets/alice/limits%ff", id="escape that is not UTF-8"),
    pytest.param("/api/datasets/alice/limits/revision/a%00b", id="control character"),
    pytest.param("/api/datasets/alice/limits/tree/main?cursor=%ff", id="query escape that is not UTF-8"),
])
def test_a_malformed_request_target_is_a_400(hub, target):
    status, _, body = exchange(hub.url, head("GET", target, auth(hub)))
    assert status == 400 and b"Malformed request target" in body


@pytest.mark.parametrize("headers", [
    pytest.param({"Content-Length": "5", "Transfer-Encoding": "chunked"}, id="both lengths (smuggling)"),
    pytest.param({"Transfer-Encoding": "gzip"}, id="unsupported transfer encoding"),
    pytest.param({"Content-Length": "-5"}, id="negative length"),
    pytest.param({"Content-Length": "1_0"}, id="length int() accepts"),
    pytest.param({"Content-Length": "9" * 30}, id="absurd length"),
])
def test_ambiguous_body_framing_is_a_400(hub, headers):
    with connect(hub.url) as sock:
        sock.sendall(head("GET", "/api/whoami-v2", auth(hub, **headers)) + b"0123456789")
        status, answer_headers, _ = answer(sock)
        assert (status, answer_headers["Connection"]) == (400, "close")  # where the next request starts is unknown


def test_two_content_lengths_are_a_400(hub):
    data = head("GET", "/api/whoami-v2", auth(hub, **{"Content-Length": "2"})).replace(
        b"\r\n\r\n", b"\r\nContent-Length: 7\r\n\r\n") + b"0123456"
    assert exchange(hub.url, data)[0] == 400


@pytest.mark.parametrize("framing", [
    pytest.param({"Content-Length": str(20 << 20)}, id="Content-Length of 20 MiB"),
    pytest.param({"Transfer-Encoding": "chunked"}, id="chunk of 20 MiB"),
])
def test_an_authenticated_json_body_over_its_limit_is_refused_before_it_is_read(hub, framing):
    with connect(hub.url) as sock:
        chunk_head = b"%x\r\n" % (20 << 20) if "Transfer-Encoding" in framing else b""
        sock.sendall(head("POST", "/api/repos/create", auth(hub, **framing)) + chunk_head)
        status, headers, _ = answer(sock)  # the 20 MiB were never sent
        assert (status, headers["Connection"]) == (413, "close")


def test_a_body_sent_to_a_get_is_not_drained_when_large(hub):
    with connect(hub.url) as sock:
        sock.sendall(head("GET", "/api/whoami-v2", {"Content-Length": str(50 << 20)}))
        status, headers, _ = answer(sock)
        assert (status, headers["Connection"]) == (401, "close")


@pytest.fixture
def impatient_hub(tmp_path):
    with HubServer(tmp_path / "hub", [Account("tok", "alice")], connection_timeout=0.5) as server:
        yield server


@pytest.mark.parametrize("data", [
    pytest.param(b"GET /api/whoami-v2 HTTP/1.1\r\nHost: lo", id="headers never finished"),
    pytest.param(b"POST /api/repos/create HTTP/1.1\r\nAuthorization: Bearer tok\r\nContent-Length: 100\r\n\r\n{\"na",
                 id="body never finished"),
    pytest.param(b"", id="nothing sent"),
])
def test_a_silent_connection_is_closed(impatient_hub, data):
    with connect(impatient_hub.url) as sock:
        sock.sendall(data)
        started = time.monotonic()
        assert closed_by_server(sock)
        assert time.monotonic() - started < ANSWER_TIMEOUT - 1


# -- what an outsider tries next -------------------------------------------------------------------------


def test_100_continue_is_sent_only_after_the_credentials_are_checked(hub):
    expect = {"Expect": "100-continue", "Content-Length": "2"}
    with connect(hub.url) as sock:
        sock.sendall(head("POST", "/api/repos/create", {"Authorization": "Bearer hf_not_a_token", **expect}))
        assert sock.recv(4096).startswith(b"HTTP/1.1 401 ")
    with connect(hub.url) as sock:
        sock.sendall(head("POST", "/api/repos/create", auth(hub, **expect)))
        assert sock.recv(4096) == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(b"{}")
        assert answer(sock)[0] == 400  # no name


@pytest.mark.parametrize("target, body", [
    pytest.param("/api/repos/create", b"[" * 100_000, id="nested 100000 deep"),
    pytest.param("/api/repos/create", b"[]", id="a list, not an object"),
    pytest.param("/api/repos/create", b'{"name": ["x"]}', id="name of the wrong type"),
    pytest.param("/api/datasets/{repo}/preupload/main", b'{"files": [{"path": "a", "size": "big"}]}',
                 id="preupload size of the wrong type"),
    pytest.param("/api/datasets/{repo}/preupload/main", b'{"files": [{"path": "a", "sample": "!!"}]}',
                 id="preupload sample not base64"),
    pytest.param("/api/datasets/{repo}/tag/main", b'{"tag": 5}', id="tag name of the wrong type"),
    pytest.param("/datasets/{repo}.git/info/lfs/objects/batch", b'{"operation": "upload", "objects": [5]}',
                 id="batch objects that are not objects"),
    pytest.param("/api/datasets/{repo}/commit/main", b"[1]\n", id="commit line that is a list"),
    pytest.param("/api/datasets/{repo}/commit/main", b"[" * 100_000 + b"\n", id="commit line nested 100000 deep"),
    pytest.param("/api/datasets/{repo}/commit/main", commit_line("file", {"path": 5, "content": "x"}),
                 id="commit path of the wrong type"),
    pytest.param("/api/datasets/{repo}/commit/main",
                 commit_line("file", {"path": "a.txt", "content": "!!", "encoding": "base64"}),
                 id="commit content not base64"),
    pytest.param("/api/datasets/{repo}/paths-info/main", b"paths=\xff", id="paths-info form not UTF-8"),
])
def test_a_malformed_payload_is_a_400_and_changes_nothing(hub, dataset_repo, target, body):
    before = (hub.data_dir / "repos" / "dataset" / f"{dataset_repo}.json").read_bytes()
    status, _, answer_body = json_request(hub, "POST", target.format(repo=dataset_repo), body)
    assert status == 400, answer_body
    assert (hub.data_dir / "repos" / "dataset" / f"{dataset_repo}.json").read_bytes() == before


def test_a_commit_title_that_is_not_text_cannot_break_the_history(hub, dataset_repo):
    commit = commit_line("header", {"summary": {"not": "text"}}) + regular_file("title.txt", b"x")
    assert json_request(hub, "POST", f"/api/datasets/{dataset_repo}/commit/main", commit)[0] == 400
    status, _, _ = exchange(hub.url, head("GET", f"/api/datasets/{dataset_repo}/commits/main?expand[]=formatted"))
    assert status == 200


@pytest.mark.parametrize("path", ["../x", "/etc/passwd", ".git/config", "a/./b", "a\x00b", "a\nb", "a\ud800b"])
def test_a_commit_path_that_escapes_or_holds_control_characters_is_refused(hub, dataset_repo, path):
    commit = json.dumps({"key": "file", "value": {"path": path, "content": "x"}}).encode() + b"\n"
    status, _, body = json_request(hub, "POST", f"/api/datasets/{dataset_repo}/commit/main", commit)
    assert status == 400 and b"Invalid path in repo" in body


ALIAS_BOMB = "a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 10)}]\n" for i in range(5))


@pytest.mark.parametrize("front_matter, card_data", [
    pytest.param("loop: &x [*x]", None, id="an alias that refers to itself"),
    pytest.param(ALIAS_BOMB, None, id="aliases that expand to a million strings"),
    pytest.param("released: 2024-01-01", {"released": "2024-01-01"}, id="a date"),
    pytest.param("license: mit\npadding: " + "x" * (1 << 20), None, id="a card over the limit"),
])
def test_a_hostile_dataset_card_cannot_break_repo_info(hub, front_matter, card_data):
    from huggingface_hub import HfApi

    repo_id = hub.repo_id("card")
    HfApi().create_repo(repo_id, repo_type="dataset")
    readme = f"---\n{front_matter}\n---\n# Card\n".encode()
    commit = regular_file("README.md", readme)  # not a set's name: the Hub's card
    assert json_request(hub, "POST", f"/api/datasets/{repo_id}/commit/main", commit)[0] == 200
    status, _, body = exchange(hub.url, head("GET", f"/api/datasets/{repo_id}"))
    assert status == 200 and json.loads(body).get("cardData") == card_data


def test_a_repo_name_must_be_plain(hub):
    for name in ("trailing-newline\n", "x/y", "..", ".hidden"):
        status, _, _ = json_request(hub, "POST", "/api/repos/create", {"name": name, "type": "dataset"})
        assert status == 400
    assert not [p.name for p in (hub.data_dir / "repos" / "dataset" / hub.user).glob("*\n*")]


@pytest.mark.parametrize("kind, name", [
    ("branch", "a/../b"), ("branch", "a//b"), ("branch", "a/./b"), ("branch", "trailing/"), ("tag", "v1/../x"),
])
def test_a_ref_name_must_be_plain_components(hub, dataset_repo, kind, name):
    if kind == "branch":
        status, _, _ = json_request(hub, "POST", f"/api/datasets/{dataset_repo}/branch/{quote(name, safe='')}", {})
    else:
        status, _, _ = json_request(hub, "POST", f"/api/datasets/{dataset_repo}/tag/main", {"tag": name})
    assert status == 400
    refs = json.loads(exchange(hub.url, head("GET", f"/api/datasets/{dataset_repo}/refs"))[2])
    assert name not in [ref["name"] for ref in refs["branches"] + refs["tags"]]


@pytest.mark.parametrize("cursor", ["%C2%B2", "9" * 5000, "-1", "1e3"])
def test_a_listing_cursor_must_be_a_plain_number(hub, dataset_repo, cursor):
    status, _, body = exchange(hub.url, head("GET", f"/api/datasets/{dataset_repo}/commits/main?cursor={cursor}"))
    assert status == 400 and b"Invalid cursor" in body


def test_an_absurd_range_is_ignored(hub, dataset_repo):
    status, headers, body = exchange(hub.url, head("GET", f"/datasets/{dataset_repo}/resolve/main/.gitattributes",
                                                   {"Range": f"bytes={'1' * 5000}-"}))
    assert status == 200 and len(body) == int(headers["Content-Length"]) > 0


def test_paths_info_takes_at_most_1000_paths(hub, dataset_repo):
    target = f"/api/datasets/{dataset_repo}/paths-info/main"

    def paths_info(count: int) -> int:
        form = "&".join(["paths=.gitattributes"] * count).encode()
        return exchange(hub.url, head("POST", target, {"Content-Type": "application/x-www-form-urlencoded",
                                                       "Content-Length": str(len(form))}) + form)[0]

    assert paths_info(1000) == 200
    assert paths_info(1001) == 400


def test_an_error_message_cannot_put_control_characters_or_kilobytes_in_a_header(hub, dataset_repo):
    hostile = "a\x00b\x7fc\x1bd" + "x" * 20_000
    body = json.dumps({"startingPoint": hostile}).encode()
    with connect(hub.url) as sock:
        sock.sendall(head("POST", f"/api/datasets/{dataset_repo}/branch/from-hostile",
                          auth(hub, **{"Content-Length": str(len(body))})) + body)
        raw = b""
        while b"\r\n\r\n" not in raw:
            received = sock.recv(65536)
            assert received, "the connection closed before the end of the answer's head"
            raw += received
    head_lines = raw.split(b"\r\n\r\n")[0].split(b"\r\n")
    assert head_lines[0].startswith(b"HTTP/1.1 404 ")
    assert all(32 <= byte < 127 for line in head_lines for byte in line)
    assert max(len(line) for line in head_lines) < 1100


@pytest.mark.parametrize("data, status", [
    pytest.param(b"GET /api/whoami-v2 HTTP/1.1\r\n" + b"X-Many: y\r\n" * 101 + b"\r\n", 431, id="101 headers"),
    pytest.param(b"GET /api/whoami-v2 HTTP/1.1\r\nX-Long: " + b"y" * 70_000 + b"\r\n\r\n", 431, id="70 KB header"),
    pytest.param(b"GET /" + b"a" * 70_000 + b" HTTP/1.1\r\n\r\n", 414, id="70 KB request line"),
])
def test_oversized_request_heads_are_refused(hub, data, status):
    with connect(hub.url) as sock:
        sock.sendall(data)
        assert sock.recv(4096).startswith(b"HTTP/1.1 %d " % status)
