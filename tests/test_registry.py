"""The registry's facts about each source, which the dataset cards read, are refused when incomplete."""

from __future__ import annotations

import pytest

from fadrm_datasets import registry


def test_a_license_other_needs_its_terms_and_a_gate_needs_their_link():
    with pytest.raises(ValueError, match="license 'other' needs a license_name and a license_link"):
        registry.FASHION_MNIST.replace(license="other")
    with pytest.raises(ValueError, match="license 'other' needs"):
        registry.IMAGENET.replace(license_link=None)
    with pytest.raises(ValueError, match="a gated set needs a license_link"):
        registry.CIFAR100.replace(gated=True)
    assert registry.IMAGENET.gated and registry.TINY_IMAGENET.gated and not registry.CIFAR100.gated
