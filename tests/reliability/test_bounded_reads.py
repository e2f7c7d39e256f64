"""A hostile release must not make the library allocate without bound, hang, or fail with a raw error.

Each test publishes a real tiny set to the loopback Hub, changes it as whoever controls the repo could
(with matching hashes: the release is "valid"), and opens it. The faults that would allocate without
bound or take minutes are opened in a process under an address-space and a time limit
(``hostile.open_bounded``); the others in this process. The expected outcome is one line naming the
file and what is wrong with it, quickly, and never a MemoryError.
"""

from __future__ import annotations

import json

import pytest
import torch

from fadrm_datasets import layout
from tests.reliability.hostile import (PARQUET, SHARD, SOFT_INDEX, VERSION, open_bounded, open_here, parquet_with,
                                       png, publish_tiny, released, republish, shard_with)


@pytest.fixture
def repo(hub, tmp_path):
    return publish_tiny(hub, tmp_path, "hostile")


def _json(data: bytes) -> dict:
    return json.loads(data)


def test_an_index_claiming_hundreds_of_millions_of_epochs_is_refused_at_once(repo, tmp_path):
    index = _json(released(repo, SOFT_INDEX))
    index["epochs"], index["shards"][0]["last_epoch"] = 400_000_001, 400_000_000
    republish(repo, {SOFT_INDEX: json.dumps(index).encode()}, tmp_path)
    took, outcome = open_bounded(tmp_path / "root", repo)
    assert outcome.startswith("SoftLabelStoreError") and "epochs should be an integer from 1 to 100,000" in outcome
    assert took < 30


@pytest.mark.parametrize("target", ["manifest", "index"])
def test_deeply_nested_json_gets_one_line_even_without_soft_labels(repo, tmp_path, target):
    nested = b'{"format_version": 2, "classes": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    if target == "manifest":
        republish(repo, {}, tmp_path, raw_manifest=nested)
        took, outcome = open_bounded(tmp_path / "root", repo, soft_labels=False)
        assert outcome.startswith("IntegrityError") and "nests deeper than 32 levels" in outcome
    else:
        republish(repo, {SOFT_INDEX: nested}, tmp_path)
        took, outcome = open_bounded(tmp_path / "root", repo)
        assert outcome.startswith("SoftLabelStoreError") and "nests deeper than 32 levels" in outcome
    assert took < 30


@pytest.mark.parametrize("edit, field", [
    (lambda m: {**m, "ipcs": {"10": []}}, 'ipcs["10"] should be an object'),
    (lambda m: {**m, "ipcs": {"10": {**m["ipcs"]["10"], "preset": {**m["ipcs"]["10"]["preset"], "num_classes": "4"}}}},
     'ipcs["10"].preset.num_classes should be an integer'),
    (lambda m: {**m, "classes": {"ant": 0}}, "classes should be a list"),
    (lambda m: {**m, "files": {**m["files"], PARQUET: 7}}, f'files["{PARQUET}"] should be a sha256'),
    (lambda m: {**m, "sizes": {**m["sizes"], PARQUET: "big"}}, f'sizes["{PARQUET}"] should be an integer'),
    (lambda m: {**m, "ipcs": {"ten": m["ipcs"]["10"]}}, 'ipcs key "ten" should be an IPC'),
], ids=["ipc-record-a-list", "num-classes-a-string", "classes-an-object", "sha-a-number", "size-a-string",
        "ipc-not-a-number"])
def test_a_wrong_typed_manifest_field_gets_one_line_naming_it(repo, tmp_path, edit, field):
    republish(repo, {}, tmp_path, manifest=edit)
    outcome = open_here(tmp_path / "root", repo, soft_labels=False)
    assert outcome.startswith("IntegrityError") and field in outcome and layout.MANIFEST in outcome


def test_an_image_larger_than_the_set_declares_is_refused_before_it_is_decoded(repo, tmp_path):
    def enlarge(rows):
        rows[0]["image"] = {"bytes": png(6000, 6000), "path": rows[0]["image"]["path"]}

    republish(repo, {PARQUET: parquet_with(repo, enlarge)}, tmp_path)
    _, outcome = open_bounded(tmp_path / "root", repo, soft_labels=False, memory_mb=256, then="data[0]")
    assert outcome.startswith("IntegrityError") and "holds an image that is a 6000x6000 PNG of" in outcome


@pytest.mark.parametrize("column, value, message", [
    ("label", -1, "label -1 and ipc id 0, outside"),
    ("ipc_id", 99, "ipc id 99, outside"),
])
def test_a_label_or_ipc_id_outside_the_set_is_refused(repo, tmp_path, column, value, message):
    def move(rows):
        rows[0][column] = value

    republish(repo, {PARQUET: parquet_with(repo, move)}, tmp_path)
    outcome = open_here(tmp_path / "root", repo, soft_labels=False)
    assert outcome.startswith("IntegrityError") and message in outcome


@pytest.mark.parametrize("change, message", [
    (lambda t: t["order"][0].__setitem__(0, 1_000_000), "the sample order is not a permutation"),
    (lambda t: t["crop_boxes"][0].__setitem__(0, torch.tensor([0, 0, 9999, 9999], dtype=torch.int16)),
     "a crop box lies outside the image"),
    (lambda t: t["partners"][0].__setitem__(0, 999), "a CutMix partner lies outside its batch"),
    (lambda t: t["cutmix_boxes"][0].__setitem__(0, torch.tensor([-5, 0, 4, 4], dtype=torch.int16)),
     "a CutMix box lies outside the image"),
    (lambda t: t["logits"][0].__setitem__(0, float("nan")), "logits holds NaN or inf"),
], ids=["order", "crop-box", "partner", "cutmix-box", "nan-logits"])
def test_a_shard_pointing_outside_the_set_is_refused_naming_its_file(repo, tmp_path, change, message):
    republish(repo, {SHARD: shard_with(repo, change)}, tmp_path)
    outcome = open_here(tmp_path / "root", repo, then=lambda data: next(iter(data.soft_label_loader(0))))
    assert outcome.startswith("SoftLabelStoreError") and f"{layout.shard_name(0, 1)}, epoch 0" in outcome
    assert message in outcome


def test_a_shard_declaring_other_shapes_is_refused_at_open(repo, tmp_path):
    republish(repo, {SHARD: shard_with(repo, lambda t: t.update(order=t["order"][:, :5].contiguous()))}, tmp_path)
    outcome = open_here(tmp_path / "root", repo)
    assert outcome.startswith("SoftLabelStoreError") and "tensor order is not I32 of shape [2, 40]" in outcome


def test_an_index_with_a_million_shard_entries_is_refused_without_reading_it(repo, tmp_path):
    index = _json(released(repo, SOFT_INDEX))
    index["epochs"] = 1_000_000
    index["shards"] = [{"file": layout.shard_name(e, e), "first_epoch": e, "last_epoch": e}
                       for e in range(1_000_000)]
    republish(repo, {SOFT_INDEX: json.dumps(index).encode()}, tmp_path)
    took, outcome = open_bounded(tmp_path / "root", repo)
    assert outcome.startswith("IntegrityError") and "at most 1,048,576 allowed" in outcome
    assert took < 30 and not list((tmp_path / "root").rglob(layout.SOFT_LABEL_INDEX))


def test_a_large_file_under_the_ipc_folder_is_not_downloaded(repo, tmp_path):
    republish(repo, {layout.ipc_prefix(10) + "extra.bin": bytes(32 << 20)}, tmp_path)
    took, outcome = open_bounded(tmp_path / "root", repo, memory_mb=256)
    assert outcome == "OK" and not list((tmp_path / "root").rglob("extra.bin"))


def test_a_file_the_hub_serves_at_another_size_than_recorded_is_refused_before_its_first_byte(repo, tmp_path):
    def add_row(rows):
        rows.append({**rows[0], "ipc_id": 10})

    republish(repo, {PARQUET: parquet_with(repo, add_row)}, tmp_path, keep_sizes=True)
    outcome = open_here(tmp_path / "root", repo, soft_labels=False)
    assert outcome.startswith("IntegrityError") and "the Hub serves" in outcome and "its manifest records" in outcome
    root = tmp_path / "root"
    assert not list(root.rglob("*.parquet")) and not list(root.rglob(f"*{layout.PARTIAL_SUFFIX}"))


def test_a_transfer_running_past_the_recorded_size_is_cut_off(repo, tmp_path, monkeypatch):
    """A server whose answer to HEAD agrees with the manifest but whose GET sends more (a chunked
    answer, say) is cut off at the recorded size, not trusted until the end."""
    import huggingface_hub

    from fadrm_datasets.sets import FADRMDataset, IntegrityError

    manifest = _json(released(repo, layout.MANIFEST))
    recorded = manifest["sizes"][PARQUET]
    republish(repo, {}, tmp_path, manifest=lambda m: {**m, "sizes": {**m["sizes"], PARQUET: recorded - 100}})
    real = huggingface_hub.get_hf_file_metadata

    def lying_head(url, *args, **kwargs):
        meta = real(url, *args, **kwargs)
        return meta if not url.endswith(".parquet") else type(meta)(**{**meta.__dict__, "size": recorded - 100})

    monkeypatch.setattr(huggingface_hub, "get_hf_file_metadata", lying_head)
    with pytest.raises(IntegrityError, match=f"sent more than the {recorded - 100:,} bytes its manifest records"):
        FADRMDataset(tmp_path / "root", repo_id=repo, ipc=10, version=VERSION, download=True)
    root = tmp_path / "root"
    assert not list(root.rglob("*.parquet")) and not list(root.rglob(f"*{layout.PARTIAL_SUFFIX}"))


def test_soft_labels_false_fetches_no_soft_labels(repo, tmp_path):
    from fadrm_datasets.sets import FADRMDataset

    root = tmp_path / "root"
    assert len(FADRMDataset(root, repo_id=repo, ipc=10, version=VERSION, download=True)) == 40
    assert not list(root.rglob("*.safetensors")) and not list(root.rglob(layout.SOFT_LABEL_INDEX))
    data = FADRMDataset(root, repo_id=repo, ipc=10, version=VERSION, download=True, soft_labels=True)
    assert data.soft_label_epochs == 2 and len(list(root.rglob("*.safetensors"))) == 1
