"""What is published carries no local paths: not the build's folders, not the data's, not the home."""

from __future__ import annotations

from pathlib import Path

from fadrm_datasets import layout
from tests.helpers import run_cli
from tests.reliability.conftest import build_args


def test_no_published_file_names_a_local_path(build_root, fake_data, tmp_path, hub):
    from huggingface_hub import snapshot_download

    build_dir = tmp_path / "built"
    assert run_cli(build_args(build_root, fake_data, build_dir))[0] == 0
    assert run_cli(["evaluate", str(build_dir), "--epochs", "1", "--device", "cpu", "--data-root", str(fake_data)])[0] == 0
    repo = hub.repo_id("paths")
    assert run_cli(["push", str(build_dir), "--repo", repo, "--version", "v1.0.0"])[0] == 0
    local = Path(snapshot_download(repo, repo_type="dataset", revision="v1.0.0", local_dir=tmp_path / "published"))
    published = [p for p in local.rglob("*") if p.is_file() and ".cache" not in p.parts]
    assert {p.name for p in published} >= {layout.README, layout.MANIFEST, layout.GRID, layout.SOFT_LABEL_INDEX}
    # The build recorded these folders: the local manifest names them, the published files must not.
    local_manifest = (build_dir / layout.MANIFEST).read_text()
    for folder in (tmp_path, build_root, fake_data):
        assert str(folder) in local_manifest
    forbidden = [str(tmp_path).encode(), str(Path.home()).encode() + b"/", b"/tmp/"]
    for path in published:
        data = path.read_bytes()
        found = [f.decode() for f in forbidden if f in data]
        assert not found, f"{path.relative_to(local)} names {found}"
