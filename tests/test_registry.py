"""The registry's facts about each source, which the dataset cards read, are refused when incomplete."""

from __future__ import annotations

import pytest

from fadrm_datasets import registry


def test_a_license_other_needs_its_terms_and_a_gate_needs_their_link():
    with pytest.raises(ValueError, match="license 'other' needs a license_name and a license_link"):
        registry.get_set("fashion-mnist").replace(license="other")
    with pytest.raises(ValueError, match="license 'other' needs"):
        registry.get_set("imagenet").replace(license_link=None)
    with pytest.raises(ValueError, match="a gated set needs a license_link"):
        registry.get_set("cifar100").replace(gated=True)
    assert registry.get_set("imagenet").gated and registry.get_set("tiny-imagenet").gated
    assert not registry.get_set("cifar100").gated
