"""Hostile names and requests: a published repo, a local manifest, a soft-label index or a client of the
loopback Hub must not make us read, serve or delete anything outside the folder it describes."""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request

import pytest

from fadrm_datasets import layout
from fadrm_datasets.layout import LayoutError, inside
from fadrm_datasets.sets import FADRMDataset, IntegrityError
from fadrm_datasets.softlabels import SoftLabelStore, SoftLabelStoreError
from tests.fakebuild import make_build


def test_inside_refuses_every_way_out(tmp_path):
    ipc = layout.ipc_prefix(10)
    assert inside(tmp_path, ipc + "a.parquet") == (tmp_path / ipc / "a.parquet").resolve()
    for hostile in ("../x", ipc + "../../x", "/etc/passwd", ipc + "../..", "", ".", "a\\..\\..\\x"):
        with pytest.raises(LayoutError, match="refusing the path"):
            inside(tmp_path, hostile)
    (tmp_path / "link").symlink_to("/etc")
    with pytest.raises(LayoutError, match="leaves"):
        inside(tmp_path, "link/passwd")


def test_a_published_manifest_cannot_make_the_library_delete_outside_its_cache(hub, tmp_path):
    from huggingface_hub import HfApi

    repo = hub.repo_id("hostile")
    staging = tmp_path / "staging"
    (staging / layout.ipc_dir(10)).mkdir(parents=True)
    (staging / layout.parquet_shard(10, 0, 1)).write_bytes(b"not a parquet")
    files = {layout.parquet_shard(10, 0, 1): "0" * 64, layout.ipc_prefix(10) + "../../../../outside.txt": "1" * 64}
    manifest = {"format_version": 2, "ipcs": {"10": {"num_images": 1, "preset": {}}}, "classes": ["a"],
                "files": files, "sizes": {path: 13 for path in files}}
    (staging / layout.MANIFEST).write_text(json.dumps(manifest))
    api = HfApi()
    api.create_repo(repo, repo_type="dataset")
    commit = api.upload_folder(repo_id=repo, repo_type="dataset", folder_path=staging).oid
    api.create_tag(repo, tag="v1.0.0", revision=commit, repo_type="dataset")

    root = tmp_path / "root"
    version_dir = root / repo.replace("/", "--") / "v1.0.0"
    outside = (version_dir / layout.ipc_prefix(10) / "../../../../outside.txt").resolve()
    outside.write_text("precious")
    assert not outside.is_relative_to(root)
    with pytest.raises(IntegrityError, match="leaves .* nothing was read or deleted"):
        FADRMDataset(root, repo_id=repo, ipc=10, version="v1.0.0", download=True)
    assert outside.read_text() == "precious"


def test_a_local_manifest_cannot_make_the_library_read_outside_the_build(tmp_path):
    build = make_build(tmp_path / layout.build_dir_name(10), teacher=False)
    manifest = json.loads((build / layout.MANIFEST).read_text())
    manifest["files"][f"{layout.IMAGES}/../../secret.txt"] = "0" * 64
    (build / layout.MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(IntegrityError, match="leaves"):
        FADRMDataset.from_build(build)


def test_a_soft_label_index_cannot_name_a_file_outside_its_store(tmp_path):
    build = make_build(tmp_path / layout.build_dir_name(10), soft_labels=True, teacher=False)
    index_path = build / layout.SOFT_LABELS / layout.SOFT_LABEL_INDEX
    index = json.loads(index_path.read_text())
    index["shards"][0]["file"] = "../../" + layout.shard_name(0, 1)
    index_path.write_text(json.dumps(index))
    with pytest.raises(SoftLabelStoreError, match="not a shard name"):
        SoftLabelStore.open(build / layout.SOFT_LABELS)
    # A shard's name that resolves outside the store (a link planted in it) is refused too.
    (tmp_path / "elsewhere.safetensors").write_bytes(b"x")
    shard = build / layout.SOFT_LABELS / layout.shard_name(0, 1)
    shard.unlink()
    shard.symlink_to(tmp_path / "elsewhere.safetensors")
    index["shards"][0]["file"] = shard.name
    index_path.write_text(json.dumps(index))
    with pytest.raises(SoftLabelStoreError, match="leaves"):
        SoftLabelStore.open(build / layout.SOFT_LABELS)


def _post(url: str, body: bytes, token: str | None) -> tuple[int, str]:
    request = urllib.request.Request(url, data=body, method="POST",
                                     headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(request) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def test_the_loopback_hub_serves_and_probes_nothing_but_its_objects(hub):
    from huggingface_hub import HfApi

    repo = hub.repo_id("objects")
    HfApi().create_repo(repo, repo_type="dataset")
    hostile = "../../../../../etc/passwd"
    commit = "\n".join(json.dumps(line) for line in (
        {"key": "header", "value": {"summary": "x"}},
        {"key": "lfsFile", "value": {"path": "passwd.bin", "algo": "sha256", "oid": hostile, "size": 10}}))
    status, text = _post(f"{hub.url}/api/datasets/{repo}/commit/main", commit.encode(), hub.token)
    assert status == 400 and "Invalid object id" in text
    # The verify endpoint tells nothing about files that are not objects.
    for oid in ("..%2F..%2F..%2Fetc%2Fpasswd", "0" * 63 + "g", "A" * 64):
        status, text = _post(f"{hub.url}/api/lfs-storage/{oid}/verify", b'{"size": 1}', hub.token)
        assert status == 400 and "Invalid object id" in text
    status, _ = _post(f"{hub.url}/api/lfs-storage/{'0' * 64}/verify", b'{"size": 1}', hub.token)
    assert status == 404  # a well-formed id that is not stored


@pytest.mark.parametrize("authorization", ["Bearer hf_not_a_token", None])
def test_the_loopback_hub_checks_credentials_before_reading_a_body(hub, authorization):
    """A 200 MB body announced with a bad (or no) token is answered at once, never read into memory."""
    host, port = hub.url.removeprefix("http://").split(":")
    headers = "POST /api/repos/create HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    headers += f"Authorization: {authorization}\r\n" if authorization else ""
    headers += f"Content-Length: {200 * 2**20}\r\n\r\n"
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(headers.encode() + b'{"name": "x"')  # the rest of the body never comes
        reply = sock.recv(4096).decode()
    assert reply.startswith("HTTP/1.1 401")
    assert "Connection: close" in reply  # the unread body is not mistaken for the next request


def test_a_chunked_lfs_upload_must_hash_to_its_object_id(hub):
    host, port = hub.url.removeprefix("http://").split(":")
    body = b"not what the id says"
    grant = hub.server.hub.upload_grant("ab" * 32, len(body))  # what the LFS batch answer would hold
    request = (f"PUT /api/lfs-storage/{'ab' * 32}?{grant} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
               f"{len(body):x}\r\n").encode() + body + b"\r\n0\r\n\r\n"
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(request)
        reply = sock.recv(4096).decode()
    assert reply.startswith("HTTP/1.1 400") and "does not match sha256" in reply
    assert not (hub.data_dir / "blobs" / ("ab" * 32)).exists()
