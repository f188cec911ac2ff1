import pytest
import timm

import netgraft


@pytest.fixture(scope="module")
def archs():
    names = ["resnet18", "resnet34", "resnet50", "efficientnet_b0", "efficientnet_b1", "vit_tiny_patch16_224"]
    return {n: netgraft.trace(timm.create_model(n), name=n) for n in names}


@pytest.mark.parametrize("method", ["graft", "dpiat"])
def test_similarity_is_symmetric_bounded_and_one_for_identical(archs, method):
    for a in archs.values():
        assert netgraft.similarity(a, a, method) == pytest.approx(1.0)
        for b in archs.values():
            s = netgraft.similarity(a, b, method)
            assert 0.0 <= s <= 1.0
            assert s == pytest.approx(netgraft.similarity(b, a, method))


def test_same_family_scores_higher_than_other_families(archs):
    sim = lambda a, b: netgraft.similarity(archs[a], archs[b])  # noqa: E731
    assert sim("resnet18", "resnet34") > sim("resnet18", "efficientnet_b0")
    assert sim("efficientnet_b0", "efficientnet_b1") > sim("efficientnet_b0", "resnet50")
    assert sim("resnet18", "vit_tiny_patch16_224") < 0.2


def test_similarity_accepts_modules_and_names():
    s = netgraft.similarity("resnet18", timm.create_model("resnet18"))
    assert s == pytest.approx(1.0)
    with pytest.raises(TypeError, match="expected an Architecture"):
        netgraft.similarity(3, "resnet18")
