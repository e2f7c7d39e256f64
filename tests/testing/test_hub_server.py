"""The loopback Hub (fadrm_datasets.testing.hub) against the real huggingface_hub and datasets clients."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from huggingface_hub import (
    CommitOperationAdd,
    CommitOperationDelete,
    HfApi,
    RepoCard,
    get_hf_file_metadata,
    hf_hub_download,
    hf_hub_url,
    snapshot_download,
)
from huggingface_hub.errors import (
    EntryNotFoundError,
    HfHubHTTPError,
    RemoteEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from fadrm_datasets.testing.hub import HubServer

README = """---
license: mit
pretty_name: Loopback test
configs:
- config_name: ipc10
  data_files:
  - split: train
    path: ipc10/train-*.parquet
---
# Loopback test dataset
"""
# NUL bytes make the server classify it as binary, hence LFS, whatever the extension.
SAFETENSORS = b"\x08\x00\x00\x00\x00\x00\x00\x00{}      " + bytes(range(256)) * 8
REPO_ROOT = Path(__file__).resolve().parents[2]


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def write_parquet(path: Path, labels: list[int]) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    images = [{"bytes": bytes([label]) * 4, "path": None} for label in labels]
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"image": images, "label": labels}), path)
    return path.read_bytes()


@pytest.fixture
def api() -> HfApi:
    return HfApi()


@pytest.fixture(scope="module")
def dataset_repo(hub, tmp_path_factory):
    """A dataset repo: README with a config, an LFS parquet, an LFS safetensors and a small text file.

    ``v1.0.0`` tags the first upload; a later commit on main rewrites the parquet and the text file.
    """
    api = HfApi()
    repo_id = hub.repo_id("distilled")
    api.create_repo(repo_id, repo_type="dataset")
    folder = tmp_path_factory.mktemp("upload")
    (folder / "README.md").write_text(README)
    (folder / "notes.txt").write_text("first version\n")
    (folder / "weights").mkdir()
    (folder / "weights" / "model.safetensors").write_bytes(SAFETENSORS)
    v1_parquet = write_parquet(folder / "ipc10" / "train-00000.parquet", [0, 1])
    v1 = api.upload_folder(folder_path=folder, repo_id=repo_id, repo_type="dataset", commit_message="Add ipc10")
    api.create_tag(repo_id, tag="v1.0.0", revision=v1.oid, repo_type="dataset")

    main_parquet = write_parquet(folder / "ipc10" / "train-00000.parquet", [2, 3, 4])
    (folder / "notes.txt").write_text("second version\n")
    v2 = api.upload_folder(folder_path=folder, repo_id=repo_id, repo_type="dataset", commit_message="Update ipc10")
    return {
        "repo_id": repo_id,
        "v1": v1.oid,
        "v2": v2.oid,
        "v1_parquet": v1_parquet,
        "main_parquet": main_parquet,
    }


# -- accounts and repos ------------------------------------------------------------------------------


def test_whoami(hub, api):
    me = api.whoami()
    assert me["name"] == hub.user
    assert [org["name"] for org in me["orgs"]] == [hub.org]
    assert api.whoami(token=hub.other_token)["name"] == hub.other_user


def test_wrong_token_is_401(hub):
    bad = HfApi(token="hf_not_a_token")
    with pytest.raises(HfHubHTTPError) as exc_info:
        bad.whoami()
    assert exc_info.value.response.status_code == 401
    with pytest.raises(HfHubHTTPError) as exc_info:
        bad.repo_info("alice/anything")
    assert exc_info.value.response.status_code == 401
    assert not isinstance(exc_info.value, RepositoryNotFoundError)


def test_create_repo_conflict_and_exist_ok(hub, api):
    repo_id = hub.repo_id()
    url = api.create_repo(repo_id)
    assert (url.repo_id, url.repo_type) == (repo_id, "model")
    with pytest.raises(HfHubHTTPError) as exc_info:
        api.create_repo(repo_id)
    assert exc_info.value.response.status_code == 409
    assert api.create_repo(repo_id, exist_ok=True).repo_id == repo_id

    org_repo = api.create_repo(hub.repo_id(namespace=hub.org), repo_type="dataset")
    assert org_repo.repo_type == "dataset"
    with pytest.raises(HfHubHTTPError) as exc_info:
        api.create_repo(hub.repo_id(namespace=hub.other_user))
    assert exc_info.value.response.status_code == 403

    # The first commit holds the default .gitattributes, like on the Hub.
    commits = api.list_repo_commits(repo_id)
    assert [c.title for c in commits] == ["initial commit"]
    assert api.list_repo_files(repo_id) == [".gitattributes"]


def test_delete_repo(hub, api):
    repo_id = hub.repo_id()
    api.create_repo(repo_id, repo_type="dataset")
    assert api.repo_exists(repo_id, repo_type="dataset")
    with pytest.raises(HfHubHTTPError) as exc_info:
        HfApi(token=hub.other_token).delete_repo(repo_id, repo_type="dataset")
    assert exc_info.value.response.status_code == 403

    api.delete_repo(repo_id, repo_type="dataset")
    assert not api.repo_exists(repo_id, repo_type="dataset")
    with pytest.raises(RepositoryNotFoundError):
        api.delete_repo(repo_id, repo_type="dataset")
    api.delete_repo(repo_id, repo_type="dataset", missing_ok=True)


def test_private_repo_is_invisible_to_others(hub, api, tmp_path):
    repo_id = hub.repo_id("secret")
    api.create_repo(repo_id, private=True)
    api.upload_file(path_or_fileobj=b"hidden\n", path_in_repo="secret.txt", repo_id=repo_id)
    assert api.repo_info(repo_id).private is True

    other = HfApi(token=hub.other_token)
    with pytest.raises(RepositoryNotFoundError):
        other.repo_info(repo_id)
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download(repo_id, "secret.txt", token=hub.other_token, cache_dir=tmp_path)
    assert not other.repo_exists(repo_id)
    with pytest.raises(RepositoryNotFoundError):
        HfApi(token=False).repo_info(repo_id)

    # A private repo of an org is visible to its members.
    org_repo = hub.repo_id("secret", namespace=hub.org)
    api.create_repo(org_repo, private=True)
    assert api.repo_info(org_repo).id == org_repo
    with pytest.raises(RepositoryNotFoundError):
        other.repo_info(org_repo)


def test_error_codes_map_to_client_exceptions(hub, api, dataset_repo, tmp_path):
    repo_id = dataset_repo["repo_id"]
    with pytest.raises(RepositoryNotFoundError):
        api.repo_info(hub.repo_id("missing"))
    with pytest.raises(RevisionNotFoundError):
        api.dataset_info(repo_id, revision="no-such-branch")
    with pytest.raises(RevisionNotFoundError):
        api.list_repo_commits(repo_id, repo_type="dataset", revision="0" * 40)
    with pytest.raises(RemoteEntryNotFoundError) as exc_info:
        hf_hub_download(repo_id, "missing.txt", repo_type="dataset", cache_dir=tmp_path)
    assert isinstance(exc_info.value, EntryNotFoundError)
    with pytest.raises(RemoteEntryNotFoundError):
        list(api.list_repo_tree(repo_id, path_in_repo="no/such/folder", repo_type="dataset"))


def test_validate_yaml(hub, api):
    RepoCard("---\nlicense: mit\ntags: [a, b]\n---\n# Card\n").validate(repo_type="dataset")
    # RepoCard parses YAML locally, so broken YAML goes to the endpoint as huggingface_hub would send it.
    request = urllib.request.Request(
        f"{hub.url}/api/validate-yaml",
        data=json.dumps({"content": "---\nlicense: [mit\n---\n# Card\n", "repoType": "dataset"}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with pytest.raises(urllib.error.HTTPError) as exc_info:
        urllib.request.urlopen(request)
    assert exc_info.value.code == 400
    assert "Invalid YAML" in json.load(exc_info.value)["errors"][0]["message"]
    # upload_file checks README metadata before uploading anything.
    repo_id = hub.repo_id()
    api.create_repo(repo_id)
    with pytest.raises(ValueError, match="Invalid metadata"):
        api.upload_file(path_or_fileobj=b"---\nlicense: {mit\n---\n", path_in_repo="README.md", repo_id=repo_id)
    assert api.list_repo_files(repo_id) == [".gitattributes"]


# -- uploads, commits, refs ----------------------------------------------------------------------------


def test_upload_folder_stores_regular_and_lfs_files(api, dataset_repo):
    repo_id = dataset_repo["repo_id"]
    infos = {
        info.path: info
        for info in api.get_paths_info(
            repo_id, ["notes.txt", "README.md", "weights/model.safetensors", "ipc10/train-00000.parquet"],
            repo_type="dataset",
        )
    }
    assert infos["notes.txt"].lfs is None
    assert infos["notes.txt"].blob_id == git_blob_sha1(b"second version\n")
    assert infos["README.md"].lfs is None
    safetensors = infos["weights/model.safetensors"]
    assert safetensors.lfs is not None and safetensors.lfs.sha256 == hashlib.sha256(SAFETENSORS).hexdigest()
    assert safetensors.size == len(SAFETENSORS)
    parquet = infos["ipc10/train-00000.parquet"]
    assert parquet.lfs.sha256 == hashlib.sha256(dataset_repo["main_parquet"]).hexdigest()


def test_upload_skips_unchanged_files(hub, api, tmp_path):
    repo_id = hub.repo_id()
    api.create_repo(repo_id)
    (tmp_path / "a.txt").write_text("same\n")
    (tmp_path / "b.bin").write_bytes(b"\0same")
    first = api.upload_folder(folder_path=tmp_path, repo_id=repo_id)
    # Preupload reports the remote oids, so the client sees nothing changed and makes no commit.
    again = api.upload_folder(folder_path=tmp_path, repo_id=repo_id)
    assert again.oid == first.oid
    assert len(api.list_repo_commits(repo_id)) == 2


def test_commit_history_and_parent_commit(hub, api):
    repo_id = hub.repo_id()
    api.create_repo(repo_id)
    first = api.create_commit(
        repo_id, [CommitOperationAdd("a.txt", b"a\n"), CommitOperationAdd("dir/b.txt", b"b\n")], commit_message="one"
    )
    second = api.create_commit(
        repo_id, [CommitOperationDelete("dir/")], commit_message="two", commit_description="drop dir",
        parent_commit=first.oid,
    )
    assert len(second.oid) == 40 and int(second.oid, 16) >= 0
    commits = api.list_repo_commits(repo_id)
    assert [c.commit_id for c in commits[:2]] == [second.oid, first.oid]
    assert [c.title for c in commits] == ["two", "one", "initial commit"]
    assert commits[0].message == "drop dir" and commits[0].authors == [hub.user]
    assert api.list_repo_files(repo_id) == [".gitattributes", "a.txt"]
    assert api.list_repo_files(repo_id, revision=first.oid) == [".gitattributes", "a.txt", "dir/b.txt"]

    with pytest.raises(HfHubHTTPError) as exc_info:  # `first` is no longer the head of main
        api.create_commit(repo_id, [CommitOperationAdd("c.txt", b"c")], commit_message="x", parent_commit=first.oid)
    assert exc_info.value.response.status_code == 412
    with pytest.raises(RemoteEntryNotFoundError):
        api.delete_file("never-existed.txt", repo_id)


def test_tag_pins_the_tagged_bytes(hub, api, dataset_repo, tmp_path):
    repo_id = dataset_repo["repo_id"]
    at_tag = hf_hub_download(repo_id, "ipc10/train-00000.parquet", repo_type="dataset", revision="v1.0.0",
                             cache_dir=tmp_path)
    assert Path(at_tag).read_bytes() == dataset_repo["v1_parquet"]
    notes = hf_hub_download(repo_id, "notes.txt", repo_type="dataset", revision="v1.0.0", cache_dir=tmp_path)
    assert Path(notes).read_text() == "first version\n"
    at_main = hf_hub_download(repo_id, "ipc10/train-00000.parquet", repo_type="dataset", cache_dir=tmp_path)
    assert Path(at_main).read_bytes() == dataset_repo["main_parquet"]

    with pytest.raises(HfHubHTTPError) as exc_info:
        api.create_tag(repo_id, tag="v1.0.0", repo_type="dataset")
    assert exc_info.value.response.status_code == 409
    api.create_tag(repo_id, tag="v1.0.0", repo_type="dataset", exist_ok=True)

    api.create_tag(repo_id, tag="v2.0.0-rc.1", repo_type="dataset")
    assert api.dataset_info(repo_id, revision="v2.0.0-rc.1").sha == dataset_repo["v2"]
    api.delete_tag(repo_id, tag="v2.0.0-rc.1", repo_type="dataset")
    with pytest.raises(RevisionNotFoundError):
        api.dataset_info(repo_id, revision="v2.0.0-rc.1")
    with pytest.raises(RevisionNotFoundError):
        api.delete_tag(repo_id, tag="v2.0.0-rc.1", repo_type="dataset")


def test_branches_and_refs(hub, api, tmp_path):
    repo_id = hub.repo_id()
    api.create_repo(repo_id)
    base = api.upload_file(path_or_fileobj=b"main\n", path_in_repo="f.txt", repo_id=repo_id)
    api.create_branch(repo_id, branch="feature/x")
    with pytest.raises(HfHubHTTPError) as exc_info:
        api.create_branch(repo_id, branch="feature/x")
    assert exc_info.value.response.status_code == 409
    api.create_branch(repo_id, branch="feature/x", exist_ok=True)

    on_branch = api.upload_file(path_or_fileobj=b"branch\n", path_in_repo="f.txt", repo_id=repo_id,
                                revision="feature/x")
    api.create_tag(repo_id, tag="v0.1", revision="feature/x")
    refs = api.list_repo_refs(repo_id)
    assert {(b.name, b.ref, b.target_commit) for b in refs.branches} == {
        ("main", "refs/heads/main", base.oid),
        ("feature/x", "refs/heads/feature/x", on_branch.oid),
    }
    assert [(t.name, t.ref, t.target_commit) for t in refs.tags] == [("v0.1", "refs/tags/v0.1", on_branch.oid)]
    assert refs.converts == []
    assert api.model_info(repo_id, revision="refs/heads/feature/x").sha == on_branch.oid
    # Slashes in revisions travel URL-encoded (feature%2Fx).
    assert Path(hf_hub_download(repo_id, "f.txt", revision="feature/x", cache_dir=tmp_path)).read_bytes() == b"branch\n"

    api.create_branch(repo_id, branch="from-initial", revision=api.list_repo_commits(repo_id)[-1].commit_id)
    assert api.list_repo_files(repo_id, revision="from-initial") == [".gitattributes"]

    api.delete_branch(repo_id, branch="feature/x")
    assert [b.name for b in api.list_repo_refs(repo_id).branches] == ["from-initial", "main"]
    with pytest.raises(RevisionNotFoundError):
        api.delete_branch(repo_id, branch="feature/x")
    with pytest.raises(RevisionNotFoundError):  # commits go to existing branches only
        api.upload_file(path_or_fileobj=b"x", path_in_repo="x.txt", repo_id=repo_id, revision="no-branch")


# -- reads ---------------------------------------------------------------------------------------------


def test_repo_info_at_revision(api, dataset_repo):
    repo_id = dataset_repo["repo_id"]
    info = api.dataset_info(repo_id, revision="v1.0.0", files_metadata=True)
    assert info.sha == dataset_repo["v1"]
    assert info.card_data["license"] == "mit"
    assert info.card_data["configs"][0]["config_name"] == "ipc10"
    siblings = {s.rfilename: s for s in info.siblings}
    assert set(siblings) == {".gitattributes", "README.md", "notes.txt", "weights/model.safetensors",
                             "ipc10/train-00000.parquet"}
    assert siblings["notes.txt"].size == len("first version\n")
    assert siblings["notes.txt"].blob_id == git_blob_sha1(b"first version\n")
    assert siblings["ipc10/train-00000.parquet"].lfs.sha256 == hashlib.sha256(dataset_repo["v1_parquet"]).hexdigest()
    assert api.dataset_info(repo_id).sha == dataset_repo["v2"]
    assert api.dataset_info(repo_id, revision=dataset_repo["v1"]).sha == dataset_repo["v1"]


def test_list_repo_tree(api, dataset_repo):
    repo_id = dataset_repo["repo_id"]
    top = {(type(e).__name__, e.path) for e in api.list_repo_tree(repo_id, repo_type="dataset")}
    assert top == {("RepoFolder", "ipc10"), ("RepoFolder", "weights"), ("RepoFile", ".gitattributes"),
                   ("RepoFile", "README.md"), ("RepoFile", "notes.txt")}
    everything = {e.path for e in api.list_repo_tree(repo_id, repo_type="dataset", recursive=True)}
    assert {"ipc10", "ipc10/train-00000.parquet", "weights/model.safetensors"} <= everything
    [parquet] = api.list_repo_tree(repo_id, path_in_repo="ipc10", repo_type="dataset", expand=True)
    assert parquet.path == "ipc10/train-00000.parquet"
    assert parquet.last_commit.oid == dataset_repo["v2"] and parquet.last_commit.title == "Update ipc10"
    [weights] = api.list_repo_tree(repo_id, path_in_repo="weights", repo_type="dataset", expand=True,
                                   revision="v1.0.0")
    assert weights.last_commit.oid == dataset_repo["v1"]


def test_paginated_listings_survive_a_restart(hub, api, dataset_repo, tmp_path):
    # A second server over the same data directory sees the persisted repos; its tiny pages force
    # the client to follow the Link headers.
    with HubServer(hub.data_dir, [f"{hub.token}:{hub.user}:{hub.org}"], page_size=2) as restarted:
        paged = HfApi(endpoint=restarted.url, token=hub.token)
        repo_id = dataset_repo["repo_id"]
        tree = [e.path for e in paged.list_repo_tree(repo_id, repo_type="dataset", recursive=True)]
        assert tree == [e.path for e in api.list_repo_tree(repo_id, repo_type="dataset", recursive=True)]
        assert len(tree) > 2
        commits = [c.commit_id for c in paged.list_repo_commits(repo_id, repo_type="dataset")]
        assert commits == [dataset_repo["v2"], dataset_repo["v1"], commits[-1]]
        assert paged.dataset_info(repo_id, revision="v1.0.0").sha == dataset_repo["v1"]


def test_get_paths_info(api, dataset_repo):
    repo_id = dataset_repo["repo_id"]
    infos = api.get_paths_info(repo_id, ["README.md", "ipc10", "nope.txt"], repo_type="dataset", revision="v1.0.0",
                               expand=True)
    assert [(type(i).__name__, i.path) for i in infos] == [("RepoFile", "README.md"), ("RepoFolder", "ipc10")]
    assert infos[0].size == len(README.encode()) and infos[0].last_commit.oid == dataset_repo["v1"]


def test_hf_hub_download_etags(api, dataset_repo, tmp_path):
    repo_id = dataset_repo["repo_id"]
    lfs_meta = get_hf_file_metadata(hf_hub_url(repo_id, "weights/model.safetensors", repo_type="dataset"))
    assert lfs_meta.etag == hashlib.sha256(SAFETENSORS).hexdigest()
    assert lfs_meta.commit_hash == dataset_repo["v2"] and lfs_meta.size == len(SAFETENSORS)
    regular_meta = get_hf_file_metadata(hf_hub_url(repo_id, "notes.txt", repo_type="dataset", revision="v1.0.0"))
    assert regular_meta.etag == git_blob_sha1(b"first version\n")
    assert regular_meta.commit_hash == dataset_repo["v1"]

    # The cache names blobs after the ETag.
    path = hf_hub_download(repo_id, "weights/model.safetensors", repo_type="dataset", cache_dir=tmp_path)
    assert Path(path).read_bytes() == SAFETENSORS
    assert Path(path).resolve().name == lfs_meta.etag
    path = hf_hub_download(repo_id, "notes.txt", repo_type="dataset", revision="v1.0.0", cache_dir=tmp_path)
    assert Path(path).resolve().name == regular_meta.etag
    local = hf_hub_download(repo_id, "notes.txt", repo_type="dataset", local_dir=tmp_path / "local")
    assert Path(local).read_text() == "second version\n"


def test_snapshot_download_with_allow_patterns(api, dataset_repo, tmp_path):
    repo_id = dataset_repo["repo_id"]
    snapshot = Path(snapshot_download(repo_id, repo_type="dataset", revision="v1.0.0", cache_dir=tmp_path,
                                      allow_patterns=["*.md", "ipc10/*"]))
    assert snapshot.name == dataset_repo["v1"]
    files = sorted(p.relative_to(snapshot).as_posix() for p in snapshot.rglob("*") if p.is_file())
    assert files == ["README.md", "ipc10/train-00000.parquet"]
    assert (snapshot / "ipc10/train-00000.parquet").read_bytes() == dataset_repo["v1_parquet"]


def test_range_requests(hub, dataset_repo):
    url = hf_hub_url(dataset_repo["repo_id"], "weights/model.safetensors", repo_type="dataset")

    def get(range_header: str):
        request = urllib.request.Request(url, headers={"Range": range_header, "Authorization": f"Bearer {hub.token}"})
        with urllib.request.urlopen(request) as response:
            return response.status, response.headers, response.read()

    status, headers, body = get("bytes=16-31")
    assert status == 206 and body == SAFETENSORS[16:32]
    assert headers["Content-Range"] == f"bytes 16-31/{len(SAFETENSORS)}"
    assert headers["Content-Length"] == "16" and headers["Accept-Ranges"] == "bytes"
    assert headers["ETag"] == f'"{hashlib.sha256(SAFETENSORS).hexdigest()}"'
    assert get("bytes=-10")[2] == SAFETENSORS[-10:]
    assert get(f"bytes={len(SAFETENSORS) - 5}-")[2] == SAFETENSORS[-5:]
    with pytest.raises(urllib.error.HTTPError) as exc_info:
        get(f"bytes={len(SAFETENSORS)}-")
    assert exc_info.value.code == 416
    assert exc_info.value.headers["Content-Range"] == f"bytes */{len(SAFETENSORS)}"


def test_load_dataset_config_at_tag(dataset_repo):
    import datasets

    pinned = datasets.load_dataset(dataset_repo["repo_id"], "ipc10", revision="v1.0.0")
    assert pinned["train"]["label"] == [0, 1]
    assert pinned["train"][1]["image"]["bytes"] == bytes([1]) * 4
    latest = datasets.load_dataset(dataset_repo["repo_id"], "ipc10")
    assert latest["train"]["label"] == [2, 3, 4]


# -- command line --------------------------------------------------------------------------------------


def test_command_line_server(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))}
    process = subprocess.Popen(
        [sys.executable, "-m", "fadrm_datasets.testing.hub", "--port", "0", "--data-dir", str(tmp_path / "data"),
         "--token", "cli-token:carol:carol-org", "--token", "cli-token-2:dave"],
        stdout=subprocess.PIPE, text=True, env=env, cwd=REPO_ROOT,
    )
    try:
        line = process.stdout.readline().strip()
        assert line.startswith("READY http://127.0.0.1:")
        url = line.removeprefix("READY ")
        assert int(url.rsplit(":", 1)[1]) > 0
        me = HfApi(endpoint=url, token="cli-token").whoami(cache=False)
        assert me["name"] == "carol" and [o["name"] for o in me["orgs"]] == ["carol-org"]
        assert HfApi(endpoint=url, token="cli-token-2").whoami(cache=False)["name"] == "dave"
    finally:
        process.terminate()
        assert process.wait(timeout=10) == 0
