"""method="dpiat" must pick exactly the layer pairs of the authors' own package."""
import pytest
import timm

import netgraft

iat = pytest.importorskip("netgraft.baselines")
try:
    iat.load_iat()
except ImportError as exc:  # pragma: no cover - depends on the environment
    pytest.skip(f"{exc}", allow_module_level=True)

PAIRS = [
    ("resnet18", "resnet34"),
    ("resnet50", "efficientnet_b0"),
    ("efficientnet_b0", "mobilenetv3_large_100"),
    ("regnetx_004", "resnet18"),
    ("tf_efficientnet_b0", "tf_efficientnet_b2"),
    ("mixnet_m", "rexnet_100"),
    ("mnasnet_100", "semnasnet_100"),
    ("convnext_atto", "resnet18"),
    ("vit_tiny_patch16_224", "deit_small_patch16_224"),
]


@pytest.mark.parametrize("source, target", PAIRS)
def test_same_pairs_as_iatransfer(source, target):
    src, dst = timm.create_model(source), timm.create_model(target)
    expected = iat.iatransfer_pairs(src, dst)
    matching = netgraft.match(netgraft.trace(src), netgraft.trace(dst), method="dpiat")
    mine = {t: s for t, s in matching.named_pairs() if s is not None}
    assert len(mine) > 10
    assert mine == expected


def test_same_tensors_as_iatransfer_after_transfer():
    import torch

    src = timm.create_model("resnet18")
    a = timm.create_model("resnet26", num_classes=10)
    b = timm.create_model("resnet26", num_classes=10)
    b.load_state_dict(a.state_dict())
    iat.iatransfer_transfer(src, a)
    netgraft.transfer(src, b, method="dpiat")
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(va, vb), k
