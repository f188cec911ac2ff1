"""Data-free AutoInit: stable activation scale with depth; unmatched layers of a graft."""
import pytest
import timm
import torch
from torch import nn

import netgraft
from netgraft.autoinit import autoinit
from netgraft.trace import single_thread


def _stds(net, x, kinds=(nn.Linear, nn.Conv2d), train=False):
    out = {}
    hooks = [m.register_forward_hook(lambda m, a, o, n=n: out.__setitem__(n, (float(a[0].std()),
                                                                               float(o.std()))))
             for n, m in net.named_modules() if isinstance(m, kinds)]
    with torch.no_grad(), single_thread():  # small ops: two threads only contend
        (net if train else net.eval())(x)
    for h in hooks:
        h.remove()
    return out


_ACTS = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.GELU, nn.SiLU, nn.Hardswish, nn.Tanh, nn.Sigmoid,
         nn.Hardsigmoid, nn.ELU, nn.Mish)


def _signal_read(net, x, kinds=(nn.Linear, nn.Conv1d, nn.Conv2d), train=False):
    """Per layer: (the std of the signal it reads, as it was before the activation module
    that made its input, or its input's own std; its output's std)."""
    before = {}  # id of an activation's output → std of that activation's input
    keep = []  # the tensors behind those ids stay alive: no id is reused meanwhile
    out = {}

    def act_pre(mod, args):
        mod._std_in = float(args[0].std())  # before an in-place activation overwrites it

    def act_post(mod, args, o):
        keep.append(o)
        before[id(o)] = before.get(id(args[0]), mod._std_in)  # the first of a chain

    def layer_post(mod, args, o, n):
        out[n] = (before.get(id(args[0]), float(args[0].std())), float(o.std()))

    hooks = []
    for n, m in net.named_modules():
        if isinstance(m, _ACTS):
            hooks += [m.register_forward_pre_hook(act_pre), m.register_forward_hook(act_post)]
        elif isinstance(m, kinds):
            hooks.append(m.register_forward_hook(lambda m, a, o, n=n: layer_post(m, a, o, n)))
    with torch.no_grad(), single_thread():  # small ops: two threads only contend
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
    stats = _stds(net, x)
    # layer 2 reads relu(layer 0's output): it passes on the scale layer 0's output had (this
    # test used to compare with the ReLU's output, 0.58 of it: the shrinking preserve mode)
    assert stats["2"][1] == pytest.approx(stats["0"][1], rel=0.1)
    assert stats["2"][0] == pytest.approx(0.58 * stats["0"][1], rel=0.1)
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
    # each rescaled layer passes on the scale of the signal it reads, as it was before the
    # activation in between (a fresh random input, batch norms on batch statistics as in
    # training; their running statistics are left untouched). Measured against the input
    # itself, the layers after a SiLU came out at twice it (SiLU's slope at 0 is 1/2)
    assert all(torch.equal(a[k], b[k]) for k in a if "running" in k)
    x = torch.randn(16, 1, 64, 64, generator=torch.Generator().manual_seed(3))
    bns = [m for m in scaled.modules() if isinstance(m, nn.BatchNorm2d)]
    for m in bns:
        m.momentum = 0.0
    stats = _signal_read(scaled.train(), x, train=True)
    for name in report.autoinit.scales:
        s_in, s_out = stats[name]
        assert 0.8 < s_out / s_in < 1.25, (name, s_in, s_out)
    assert report.to_dict()["autoinit"]["scales"]
    assert torch.isfinite(scaled.eval()(x)).all()


def _mlp(act, depth=20, width=256, inplace=False):
    torch.manual_seed(0)
    layers = [nn.Linear(64, width)]
    for _ in range(depth):
        layers += [act(inplace=True) if inplace else act(), nn.Dropout(0.1),
                   nn.Linear(width, width)]
    for m in layers:  # a too-small init: the signal vanishes by default
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=0.01)
    return nn.Sequential(*layers, act(), nn.Linear(width, 10))


@pytest.mark.parametrize("act, inplace", [(nn.ReLU, False), (nn.ReLU, True), (nn.GELU, False),
                                          (nn.Tanh, False), (nn.SiLU, True)])
@pytest.mark.parametrize("mode", ["preserve", "unit"])
def test_deep_mlp_holds_its_scale_in_both_modes(act, inplace, mode):
    net = _mlp(act, inplace=inplace)
    x = torch.randn(512, 64, generator=torch.Generator().manual_seed(1))
    autoinit(net, mode=mode)
    stats = _signal_read(net, x)
    after = [o for _, o in stats.values()]
    # preserve mode used to shrink by the activation's gain at each layer: 1, 0.59, 0.34, ...
    # 6e-6 after 21 ReLU layers (0.55 per GELU/SiLU layer, 0.63 per Tanh layer)
    assert all(0.5 < s < 2.0 for s in after), after
    assert 0.8 < after[-2] < 1.25, after
    if mode == "preserve":  # each layer passes on the pre-activation scale it reads
        for name, (s_in, s_out) in list(stats.items())[1:]:
            assert s_out == pytest.approx(s_in, rel=0.1), name


def test_preserve_mode_follows_the_signal_through_a_conv1d_stack():
    torch.manual_seed(0)
    layers = [nn.Conv1d(3, 32, 5, padding=2), nn.ReLU()]
    for _ in range(10):
        layers += [nn.Conv1d(32, 32, 5, padding=2), nn.ReLU()]
    net = nn.Sequential(*layers, nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Linear(32, 4))
    x = torch.randn(32, 3, 200, generator=torch.Generator().manual_seed(2))
    report = autoinit(net, torch.randn(1, 3, 200), mode="preserve")
    assert len(report.scales) == 12 and not report.skipped
    convs = [o for _, o in _stds(net, x, kinds=(nn.Conv1d,)).values()]
    assert all(0.8 < s < 1.25 for s in convs), convs  # was 1, 0.59, 0.34, ...


@pytest.mark.parametrize("name", ["efficientnet_b0", "mobilenetv3_small_100"])
def test_batch_norm_networks_hold_their_scale_in_eval_mode(name):
    # fitted with batch statistics (training mode), but a fresh batch norm is an identity in
    # eval mode (running mean 0, variance 1): the scales fitted for normalised inputs then
    # compounded, efficientnet_b0 ending at std 26–140 and mobilenetv3_small_100 at 3–15,
    # while training mode held 1. The running statistics are now the probe's.
    torch.manual_seed(0)
    net = timm.create_model(name, num_classes=10)
    x = torch.randn(64, 3, 64, 64, generator=torch.Generator().manual_seed(4))
    report = autoinit(net, norm_stats="keep")  # the old behaviour: fresh statistics
    assert not report.skipped
    assert all(torch.equal(m.running_var, torch.ones_like(m.running_var))
               for m in net.modules() if isinstance(m, nn.BatchNorm2d))
    kept = [o for _, o in _stds(net, x).values()]
    assert kept[-1] > 2.5 and max(kept) > 3, kept
    report = autoinit(net)  # the whole model: the statistics are the probe's
    assert all(0.95 < s < 1.05 for s in report.scales.values())  # already fitted
    after = [o for _, o in _stds(net, x).values()]
    assert all(0.4 < s < 2.5 for s in after), after  # the last layers included
    # training mode (batch statistics, what was fitted) holds it too; this forward updates
    # the running statistics, but the test is over
    trained = [o for _, o in _stds(net.train(), x, train=True).values()]
    assert all(0.7 < s < 1.4 for s in trained), trained


def test_autoinit_leaves_every_submodule_in_its_mode():
    net = _deep_mlp(depth=3)
    net.train()
    net[2].eval()  # e.g. a frozen part
    autoinit(net)
    assert net.training and not net[2].training and net[0].training
    with pytest.raises(ValueError, match="norm_stats="):
        autoinit(net, norm_stats="fresh")


class _Twice(nn.Module):
    """One linear layer applied twice (shared weights)."""

    def __init__(self):
        super().__init__()
        self.inp, self.shared = nn.Linear(16, 32), nn.Linear(32, 32)
        nn.init.normal_(self.shared.weight, std=1.0)

    def forward(self, x):
        return self.shared(torch.relu(self.shared(torch.relu(self.inp(x)))))


def test_a_layer_called_twice_is_fitted_on_its_first_call():
    # the fit is one forward pass: each layer is rescaled as the pass reaches it, and the
    # rescaled output is what the rest of the pass sees
    net = _Twice()
    got = []
    report = autoinit(net)
    assert set(report.scales) == {"inp", "shared"} and not report.skipped
    hook = net.shared.register_forward_hook(lambda m, a, o: got.append(float(o.std())))
    with torch.no_grad():
        net(torch.randn(4096, 16, generator=torch.Generator().manual_seed(6)))
    hook.remove()
    assert got[0] == pytest.approx(1.0, rel=0.05) and got[1] < 2.0, got


def test_unknown_layer_names_and_bad_counts_are_refused():
    """QA (session 22): layers=["nope"] did nothing silently, layers="0" was read one character
    at a time, batch_size=0 was accepted."""
    model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))
    before = [p.clone() for p in model.parameters()]
    for kwargs, error, message in (
            ({"layers": ["nope"]}, ValueError, r"'nope' is not a layer of"),
            ({"layers": "0"}, TypeError, r"give a list of layer names, e.g. \['0'\]"),
            ({"batch_size": 0}, ValueError, "batch_size=0"),
            ({"max_iter": 1.5}, ValueError, "max_iter=1.5")):
        with pytest.raises(error, match=message):
            autoinit(model, torch.randn(4, 8), **kwargs)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert autoinit(model, torch.randn(4, 8), layers=["0"]).scales.keys() <= {"0"}


def _measured(net, x, layer):
    out = {}
    h = layer.register_forward_hook(lambda m, a, o: out.setdefault("y", o))
    with torch.no_grad():
        net(x)
    h.remove()
    return float(out["y"].std())


def test_constrained_pruned_and_shared_weights():
    """QA (session 24): autoinit reported output std 1.0 for layers whose scale was undone
    (spectral norm, orthogonal: written back through the parametrization; a pruned layer:
    its weight recomputed from weight_orig) or spread to another module (a decoder tied to an
    embedding). Pruned layers are now fitted; constrained and shared ones are left alone and
    named in `skipped`, and the layers after them are fitted on what they really produce."""
    import torch.nn.utils.prune as prune
    from torch.nn.utils.parametrizations import spectral_norm

    x = torch.randn(2048, 8)
    for constrain in ("prune", "spectral"):
        torch.manual_seed(0)
        m = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(),
                          nn.Linear(32, 4))
        if constrain == "prune":
            prune.l1_unstructured(m[2], "weight", 0.5)
        else:
            spectral_norm(m[2])
        report = autoinit(m, torch.randn(2, 8))
        for i in (0, 4):
            assert abs(_measured(m, x, m[i]) - 1) < 0.1, (constrain, i)
        if constrain == "prune":
            assert abs(_measured(m, x, m[2]) - 1) < 0.1 and "2" in report.scales
        else:
            assert "spectral" in report.skipped["2"].lower() and "2" not in report.output_std

    class Tied(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb, self.mid = nn.Embedding(50, 16), nn.Linear(16, 16)
            self.dec = nn.Linear(16, 50, bias=False)
            self.dec.weight = self.emb.weight

        def forward(self, ids):
            return self.dec(torch.tanh(self.mid(self.emb(ids))))

    torch.manual_seed(0)
    lm = Tied()
    table = lm.emb.weight.detach().clone()
    report = autoinit(lm, torch.randint(0, 50, (64, 16)))
    assert torch.equal(lm.emb.weight, table)  # the embedding is not rescaled through its tie
    assert "shared with emb.weight" in report.skipped["dec"]
    assert abs(_measured(lm, torch.randint(0, 50, (64, 16)), lm.mid) - 1) < 0.15


def test_a_model_failing_on_the_probe_is_named_and_left_as_it_was():
    class FixedBatch(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b, self.c = nn.Linear(8, 16), nn.Linear(16, 16), nn.Linear(32, 4)

        def forward(self, x):
            return self.c(self.b(torch.relu(self.a(x))).reshape(1, 32))

    m = FixedBatch()
    before = {k: v.clone() for k, v in m.state_dict().items()}
    with pytest.raises(netgraft.NetgraftError, match="failed on its random probe of shape"):
        autoinit(m, torch.randn(2, 8))
    assert all(torch.equal(v, m.state_dict()[k]) for k, v in before.items())


@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("mode", ["unit", "preserve"])
def test_multihead_attention_output_is_fitted_through_out_proj(mode, batch_first):
    """Session 24 left every projection of an nn.MultiheadAttention unfitted (they run in its
    functional forward, not as modules). Its output is linear in out_proj's weight and bias, so
    out_proj is now fitted on the attention's output; the query/key/value projections (which
    set where it attends) are left as they are, and named. Session 32: a sequence-first model
    (length, batch, features) got its probe's extra samples along the sequence, and the
    attention, whose output scale depends on the length, came out at std 2.4 on inputs of the
    example's length; the probe now adds samples along dimension 1 there."""
    torch.manual_seed(0)
    m = nn.TransformerEncoder(nn.TransformerEncoderLayer(16, 2, 32, dropout=0.0,
                                                         batch_first=batch_first), 2,
                              enable_nested_tensor=False)
    with torch.no_grad():  # an attention whose output is far from unit scale
        for layer in m.layers:
            layer.self_attn.out_proj.weight.mul_(7.0)
    shape = (lambda batch: (batch, 5, 16)) if batch_first else (lambda batch: (5, batch, 16))
    report = autoinit(m, torch.randn(shape(2)), mode=mode)
    assert set(report.skipped) == {"layers.0.self_attn", "layers.1.self_attn"}
    assert all("fitted through its out_proj" in why for why in report.skipped.values())
    assert {"layers.0.self_attn.out_proj", "layers.1.self_attn.out_proj",
            "layers.0.linear1"} <= set(report.scales)
    assert abs(report.scales["layers.0.self_attn.out_proj"] - 1) > 0.2  # it was far off
    seen = []  # the attention's real output on other inputs, in eval mode
    hook = m.layers[1].self_attn.register_forward_hook(lambda mod, a, out: seen.append(out[0]))
    m.eval()
    with torch.no_grad():
        m(torch.randn(shape(64)))
    hook.remove()
    assert 0.9 < float(seen[0].std()) < 1.1


def test_a_recurrent_layer_is_named_as_skipped_and_a_bad_tolerance_refused():
    """QA (session 26): an nn.LSTM was left as it was without a word in `skipped`, and
    `tolerance=-1` was accepted."""
    class Seq(nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = nn.LSTM(4, 8, batch_first=True)
            self.fc = nn.Linear(8, 2)

        def forward(self, x):
            return self.fc(self.rnn(x)[0][:, -1])

    model = Seq()
    before = {k: v.clone() for k, v in model.rnn.state_dict().items()}
    report = netgraft.autoinit(model, torch.randn(2, 5, 4))
    assert report.skipped["rnn"].startswith("a recurrent layer")
    assert all(torch.equal(before[k], v) for k, v in model.rnn.state_dict().items())
    assert "fc" in report.scales or "fc" in report.output_std
    for bad in (-1, 1.5, True, "0.1"):
        with pytest.raises(ValueError, match="tolerance="):
            netgraft.autoinit(model, torch.randn(2, 5, 4), tolerance=bad)


def test_a_model_built_under_inference_mode_is_refused_by_name():
    """QA (session 27): a model built under torch.inference_mode() failed with torch's own
    "Inplace update to inference tensor outside InferenceMode" (only a transfer's target was
    checked); inside inference mode it can be written and is fitted."""
    with torch.inference_mode():
        frozen = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    before = {k: v.clone() for k, v in frozen.state_dict().items()}
    with pytest.raises(netgraft.UnsupportedModelError) as info:
        netgraft.autoinit(frozen, torch.randn(2, 4))
    assert str(info.value) == (
        "layer '0.weight': the model's tensors were created under torch.inference_mode(), "
        "which makes them read-only: build the model outside inference_mode (or load its "
        "weights into one built outside it)")
    assert all(torch.equal(before[k], v) for k, v in frozen.state_dict().items())
    with torch.inference_mode():
        report = netgraft.autoinit(frozen, torch.randn(2, 4))
    assert set(report.scales) == {"0", "2"} and report.scales["0"] != 1.0


def test_a_numpy_tolerance_is_accepted_and_bad_ones_refused():
    """QA (session 27): `tolerance=np.float32(0.1)` was refused as not a number."""
    import copy

    import numpy as np

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    netgraft.autoinit(model, torch.randn(2, 4), tolerance=0)  # both layers at unit std
    with torch.no_grad():  # the first one 5 % off: left alone within a tolerance of 10 %
        model[0].weight.mul_(1.05)
        model[0].bias.mul_(1.05)
    reports = [netgraft.autoinit(copy.deepcopy(model), torch.randn(2, 4), tolerance=tol)
               for tol in (np.float32(0.1), np.float64(0.1), 0.1, np.float32(0.04))]
    for report in reports[:3]:
        assert report.scales == {"0": 1.0, "2": 1.0}
        assert report.output_std["0"] == pytest.approx(1.05, rel=1e-6)
    assert reports[3].scales["0"] == pytest.approx(1 / 1.05, rel=1e-6)  # 5 % > 4 %: fitted
    assert reports[3].output_std["0"] == pytest.approx(1.0, rel=1e-6)
    for bad in (np.bool_(True), float("nan"), np.float64("nan"), np.float32(-0.1), -0.0001):
        with pytest.raises(ValueError) as info:
            netgraft.autoinit(model, torch.randn(2, 4), tolerance=bad)
        assert str(info.value) == (f"tolerance={bad!r}: give a relative change in [0, 1) below "
                                   f"which a layer is left as it is (default 0.02)")
