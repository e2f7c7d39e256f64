"""The bounded, typed reader of the manifests and the soft-label index (fadrm_datasets/schema.py)."""

from __future__ import annotations

import json

import pytest

from fadrm_datasets import layout
from fadrm_datasets.schema import (BUILD_MANIFEST_FILE, REPO_MANIFEST_FILE, SOFT_LABEL_INDEX_FILE, LayoutError,
                                   read)


def _write(tmp_path, text: str):
    path = tmp_path / layout.MANIFEST
    path.write_text(text)
    return path


def test_a_field_is_named_where_it_is_wrong(tmp_path):
    path = _write(tmp_path, json.dumps({"format_version": 2, "classes": ["a"], "files": {}, "sizes": {},
                                        "ipcs": {"10": {"num_images": 1, "preset": {"mean": [0.5, "x"]}}}}))
    with pytest.raises(LayoutError, match=r'is malformed: ipcs\["10"\]\.preset\.mean\[1\] should be a number, '
                                          r'got "x"'):
        read(path, REPO_MANIFEST_FILE)


def test_a_required_field_is_named_when_missing_whatever_the_values_hold(tmp_path):
    path = _write(tmp_path, json.dumps({"format_version": 2, "classes": ["nothing"], "files": {}, "ipcs": {}}))
    with pytest.raises(LayoutError, match="is malformed: sizes, it is missing"):
        read(path, REPO_MANIFEST_FILE)


def test_an_integer_too_large_for_a_float_is_refused_not_raised(tmp_path):
    path = _write(tmp_path, '{"epochs": 2, "num_classes": 10, "num_samples": 20, "batch_size": 8, "image_size": 8, '
                            '"shards": [], "format": "fadrm-soft-labels", "format_version": 1, '
                            '"mean": [' + "9" * 400 + "]}")
    read(path, SOFT_LABEL_INDEX_FILE)  # "mean" is not a field the index's schema types
    build = _write(tmp_path, '{"preset": {"mean": [' + "9" * 400 + "]}}")
    with pytest.raises(LayoutError, match=r"preset\.mean\[0\] should be a number"):
        read(build, BUILD_MANIFEST_FILE)


def test_nan_written_by_an_earlier_builder_reads_as_null_but_a_download_holding_it_is_refused(tmp_path):
    path = _write(tmp_path, '{"format_version": 1, "evaluations": [{"loss": NaN, "top1": Infinity}]}')
    assert read(path, BUILD_MANIFEST_FILE)["evaluations"] == [{"loss": None, "top1": None}]
    with pytest.raises(LayoutError, match="NaN is not a JSON number"):
        read(path, REPO_MANIFEST_FILE)


def test_a_release_of_format_1_is_migrated_with_the_sizes_the_hub_gives_and_refused_without_them(tmp_path):
    from fadrm_datasets.hub import read_manifest

    shard = layout.parquet_shard(1, 0, 1)
    path = _write(tmp_path, json.dumps({"format_version": 1, "classes": ["a"], "files": {shard: "0" * 64},
                                        "ipcs": {}}))
    assert "sizes" not in read(path, REPO_MANIFEST_FILE)
    with pytest.raises(LayoutError, match="is of format 1, without file sizes: download the set again to migrate it"):
        read_manifest(tmp_path)
    migrated = read_manifest(tmp_path, lambda paths: {p: 7 for p in paths})
    assert migrated["format_version"] == 2 and migrated["sizes"] == {shard: 7}
    with pytest.raises(LayoutError, match=rf'sizes\["{shard}"\] should be an integer from 0'):
        read_manifest(tmp_path, lambda paths: {p: 10**12 for p in paths})
