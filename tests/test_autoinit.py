"""Data-free AutoInit: stable activation scale with depth; unmatched layers of a graft."""
import pytest
import timm
import torch
from torch import nn

import netgraft
from netgraft.autoinit import autoinit


def _stds(net, x, kinds=(nn.Linear, nn.Conv2d), train=False):
    out = {}
    hooks = [m.register_forward_hook(lambda m, a, o, n=n: out.__setitem__(n, (float(a[0].std()),
                                                                               float(o.std()))))
             for n, m in net.named_modules() if isinstance(m, kinds)]
    with torch.no_grad():
        (net if train else net.eval())(x)
    for h in hooks:
        h.remove()
    return out


def _deep_mlp(depth=30, width=64):
    torch.manual_seed(0)
    layers = []
    for _ in range(depth):
        layers += [nn.Linear(width, width), nn.ReLU()]
    return nn.Sequential(*layers, nn.Linear(width, 10))


def test_deep_plain_mlp_keeps_unit_scale_where_the_default_init_vanishes():
    net = _deep_mlp()
    x = torch.randn(512, 64, generator=torch.Generator().manual_seed(123))  # not the probe
    before = [o for _, o in _stds(net, x).values()]
    assert before[-1] < 0.1 * before[0]  # PyTorch's default init: the signal vanishes
    report = autoinit(net)
    after = [o for _, o in _stds(net, x).values()]
    assert all(0.8 < s < 1.25 for s in after), after
    assert len(report.scales) == 31 and all(s > 1 for s in report.scales.values())
    assert report.output_std["0"] == pytest.approx(1.0)


def test_deep_plain_convnet_explodes_by_default_and_is_stable_after():
    torch.manual_seed(0)
    layers = []
    for i in range(16):
        conv = nn.Conv2d(1 if i == 0 else 16, 16, 3, padding=1)
        nn.init.normal_(conv.weight, std=0.2)  # a too-large init: the scale explodes
        layers += [conv, nn.ReLU()]
    net = nn.Sequential(*layers)
    x = torch.randn(8, 1, 16, 16, generator=torch.Generator().manual_seed(5))
    before = [o for _, o in _stds(net, x).values()]
    assert before[-1] > 100 * before[0]
    autoinit(net, torch.randn(1, 1, 16, 16))
    after = [o for _, o in _stds(net, x).values()]
    assert all(0.7 < s < 1.4 for s in after), after


def test_layers_restricts_and_preserve_mode_keeps_the_input_scale():
    net = _deep_mlp(depth=4)
    state = {k: v.clone() for k, v in net.state_dict().items()}
    report = autoinit(net, layers=["2"], mode="preserve")
    assert set(report.scales) == {"2"}
    for k, v in net.state_dict().items():
        if not k.startswith("2."):
            assert torch.equal(v, state[k]), k
    x = torch.randn(2048, 64, generator=torch.Generator().manual_seed(9))
    s_in, s_out = _stds(net, x)["2"]
    assert s_out == pytest.approx(s_in, rel=0.1)
    with pytest.raises(ValueError, match="mode="):
        autoinit(net, mode="loud")


def test_transfer_rescales_only_unmatched_layers():
    src = timm.create_model("resnet18", num_classes=10, in_chans=1)
    with torch.no_grad():  # trained-looking: timm zero-initialises the last norm of each block
        for m in src.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
    plain = timm.create_model("efficientnet_b0", num_classes=10, in_chans=1)
    scaled = timm.create_model("efficientnet_b0", num_classes=10, in_chans=1)
    scaled.load_state_dict(plain.state_dict())
    with pytest.warns(netgraft.transfer.__globals__["NetgraftWarning"]):
        # statistics copied and the head copied as it is on both sides: a noise probe would
        # see the rescaled layers
        netgraft.transfer(src, plain, norm_stats="copy", head="transfer")
        report = netgraft.transfer(src, scaled, autoinit=True, norm_stats="copy", head="transfer")
    assert report.autoinit is not None and report.autoinit.scales
    unmatched = {p.target for p in report.pairs if p.action == "init"
                 and p.kind in ("conv", "linear") and p.target != "classifier"}
    assert set(report.autoinit.scales) <= unmatched
    touched = {p.target for p in report.pairs if "autoinit" in p.note}
    assert touched == set(report.autoinit.scales)
    a, b = plain.state_dict(), scaled.state_dict()
    for p in report.pairs:  # transferred layers are exactly what the plain graft wrote
        if p.target not in touched:
            for t in p.tensors:
                key = f"{p.target}.{t.name}"
                assert torch.equal(a[key], b[key]), key
    # each rescaled layer passes on the scale of its input (a fresh random input, batch norms
    # on batch statistics as in training; their running statistics are left untouched)
    assert all(torch.equal(a[k], b[k]) for k in a if "running" in k)
    x = torch.randn(16, 1, 64, 64, generator=torch.Generator().manual_seed(3))
    bns = [m for m in scaled.modules() if isinstance(m, nn.BatchNorm2d)]
    for m in bns:
        m.momentum = 0.0
    stats = _stds(scaled.train(), x, train=True)
    for name in report.autoinit.scales:
        s_in, s_out = stats[name]
        assert 0.5 < s_out / s_in < 2.0, (name, s_in, s_out)
    assert report.to_dict()["autoinit"]["scales"]
    assert torch.isfinite(scaled.eval()(x)).all()
