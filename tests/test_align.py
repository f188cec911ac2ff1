"""Block-wise feature alignment on unlabeled inputs (netgraft.align) and its use in transfer."""
import json
import math
import warnings

import pytest
import torch
from torch import nn

import netgraft
from netgraft.align import align, ridge, stage_ends


def _net(width: int, kernel: int, seed: int, classes: int = 10) -> nn.Sequential:
    torch.manual_seed(seed)
    p = kernel // 2
    return nn.Sequential(
        nn.Conv2d(1, width, kernel, padding=p), nn.BatchNorm2d(width), nn.ReLU(),
        nn.Conv2d(width, 2 * width, kernel, stride=2, padding=p), nn.BatchNorm2d(2 * width),
        nn.ReLU(),
        nn.Conv2d(2 * width, 2 * width, kernel, stride=2, padding=p), nn.BatchNorm2d(2 * width),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2 * width, classes))


def _source(width: int, kernel: int, seed: int, data: torch.Tensor) -> nn.Sequential:
    """A source as training leaves it: batch-norm statistics that describe its inputs (align
    re-estimates them on the calibration inputs, as it does the target's) and confident
    predictions."""
    source = _net(width, kernel, seed)
    netgraft.calibrate.recalibrate_norms(source, data)
    with torch.no_grad():  # and confident predictions (logit margins a random head lacks)
        source[-1].weight.mul_(4.0)
    return source.eval()


@pytest.fixture
def data():
    g = torch.Generator().manual_seed(0)
    return torch.randn(192, 1, 16, 16, generator=g)


def test_ridge_recovers_a_linear_map():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(500, 6, generator=g)
    w_true, b_true = torch.randn(3, 6, generator=g), torch.randn(3, generator=g)
    w, b = ridge(x, x @ w_true.T + b_true, alpha=1e-9)
    assert torch.allclose(w.float(), w_true, atol=1e-4)
    assert torch.allclose(b.float(), b_true, atol=1e-4)


def test_stage_ends_are_the_last_map_at_each_resolution(data):
    ends = stage_ends(_net(8, 3, 0), data)
    assert [(size, c) for _, size, c in ends] == [((16, 16), 8), ((8, 8), 16), ((4, 4), 16)]
    assert [name for name, _, _ in ends] == ["1", "4", "7"]  # the norms ending each stage


def test_align_improves_feature_fit_and_fits_the_head(data):
    source = _source(8, 3, 0, data)
    target = _net(12, 5, 1)  # other width and kernel: a different network
    source_state = {k: v.clone() for k, v in source.state_dict().items()}
    report = align(source, target, data, steps=40, lr=3e-3, batch_size=32, min_r2=0.0)
    assert len(report.stages) == 3 and report.steps == 40 and report.images == 192
    for stage in report.stages:
        assert stage.target_channels in (12, 24) and stage.source_channels in (8, 16)
        assert -1.0 < stage.r2_before < 1.0
    # the regression brings the target's stages closer to the source's (best 1×1 map)
    assert sum(s.r2_after for s in report.stages) > sum(s.r2_before for s in report.stages) + 0.1
    assert report.head == "11" and 0.1 < report.head_r2 <= 1.0
    # the target now predicts what the source (a random network: an arbitrary function of
    # random inputs) predicts on most inputs, from none before
    assert report.agreement > 0.6 and report.agreement_before < 0.1
    # an alignment that helps is kept: measured before on the same inputs, far lower
    assert not report.reverted and report.agreement > report.agreement_before + 0.5
    assert "kept the graft" not in report.summary() and report.lr_factor < 1.0
    assert report.seconds > 0
    # the source is left exactly as it was, and its mode too
    assert all(torch.equal(source_state[k], v) for k, v in source.state_dict().items())
    assert not source.training and target.training
    d = json.loads(json.dumps(report.to_dict()))
    assert d["steps"] == 40 and len(d["stages"]) == 3 and "aligned 3 stages" in report.summary()


def test_alignment_is_skipped_when_the_features_fit_badly(data):
    source, target = _net(8, 3, 0).eval(), _net(12, 5, 1)
    before = {k: v.clone() for k, v in target.state_dict().items()}
    probe = align(source, _net(12, 5, 1), data, steps=0, min_r2=0.0)
    fit = sum(s.r2_before for s in probe.stages) / len(probe.stages)
    report = align(source, target, data, steps=40, min_r2=fit + 0.01, distill=False)
    assert report.skipped and report.method == "none"
    assert report.steps == 0 and report.lr_factor == 1.0
    assert report.head is None and len(report.stages) == 3
    assert [s.r2_before for s in report.stages] == pytest.approx([s.r2_before for s in probe.stages])
    assert all(torch.equal(before[k], v) for k, v in target.state_dict().items())  # untouched
    assert "skipped" in report.summary() and f"{fit:.0%}" in report.note
    assert report.to_dict()["skipped"] is True
    assert not align(source, _net(12, 5, 1), data, steps=1, min_r2=fit - 0.01).skipped


def test_head_is_left_alone_when_classes_differ(data):
    source, target = _net(8, 3, 0).eval(), _net(8, 3, 1, classes=5)
    head = target[-1].weight.clone()
    report = align(source, target, data, steps=2)
    assert report.head is None and math.isnan(report.head_r2)
    assert torch.equal(target[-1].weight, head)


def test_a_model_without_feature_maps_gets_only_the_head_fit():
    torch.manual_seed(0)
    source = nn.Sequential(nn.Linear(6, 32), nn.ReLU(), nn.Linear(32, 4)).eval()
    target = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 4))
    report = align(source, target, torch.randn(256, 6), steps=5)
    assert report.stages == [] and report.steps == 0 and "only the head" in report.note
    assert report.head == "2" and report.agreement > 0.5


def test_transfer_with_align(data):
    # a smaller kernel: not a graft that computes the source's function (that one is not
    # aligned, tests/test_growth.py::test_aligning_an_exact_growth_is_skipped_and_said)
    source, target = _net(8, 5, 0).eval(), _net(12, 3, 1)
    report = netgraft.transfer(source, target, calibration_data=data, align=True, align_steps=10)
    assert report.function_gap is None and not report.alignment.skipped
    assert report.alignment is not None and report.alignment.steps == 10
    assert report.seconds >= report.alignment.seconds
    assert report.to_dict()["alignment"]["steps"] == 10
    assert "fine-tune at 0.3× the from-scratch learning rate" in report.summary()
    plain = netgraft.transfer(source, _net(12, 3, 1), calibration_data=data)
    assert plain.alignment is None and plain.to_dict()["alignment"] is None  # off by default
    with pytest.raises(ValueError, match="calibration_data"):
        netgraft.transfer(source, _net(12, 5, 1), align=True)
    with pytest.raises(ValueError, match="align="):
        netgraft.transfer(source, _net(12, 5, 1), align="sometimes")


def test_badly_fitting_stages_fall_back_to_distilling_the_logits(data):
    source, target = _source(8, 3, 0, data), _net(12, 5, 1)
    probe = align(source, _net(12, 5, 1), data, steps=0, min_r2=0.0)
    fit = sum(s.r2_before for s in probe.stages) / len(probe.stages)
    with torch.no_grad():
        s_pred = source(data).argmax(1)
        before = (target.eval()(data).argmax(1) == s_pred).float().mean().item()
    target.train()
    report = align(source, target, data, steps=60, lr=3e-3, batch_size=32, min_r2=fit + 0.01)
    assert report.method == "logits" and not report.skipped
    assert report.steps == 60 and report.head is None and report.lr_factor < 1.0
    # the whole target now predicts what the source predicts
    assert report.agreement > max(0.8, before + 0.3)
    with torch.no_grad():
        after = (target.eval()(data).argmax(1) == s_pred).float().mean().item()
    assert after == pytest.approx(report.agreement)
    assert f"{fit:.0%}" in report.note and "distilled" in report.summary()
    assert report.to_dict()["method"] == "logits"
    # a target predicting another number of classes cannot be distilled: left as grafted
    other = _net(12, 5, 1, classes=7)
    state = {k: v.clone() for k, v in other.state_dict().items()}
    r = align(source, other, data, steps=20, min_r2=fit + 0.01)
    assert r.skipped and r.method == "none" and r.steps == 0
    assert all(torch.equal(state[k], v) for k, v in other.state_dict().items())


def test_method_logits_distils_without_looking_at_the_stages(data):
    source, target = _source(8, 3, 0, data), _net(12, 5, 1)
    report = align(source, target, data, steps=60, lr=3e-3, batch_size=32, method="logits")
    assert report.method == "logits" and not report.skipped and report.steps == 60
    assert report.stages == []  # no stage check: no anchors, no closed-form fits
    assert report.calibrated == 3 and report.to_dict()["calibrated_norms"] == 3
    with torch.no_grad():
        s_pred = source(data).argmax(1)
        after = (target.eval()(data).argmax(1) == s_pred).float().mean().item()
    assert after > 0.8 and after == pytest.approx(report.agreement)
    # "stages" always regresses the stages, whatever their fit (as min_r2=0)
    staged = align(source, _net(12, 5, 1), data, steps=5, method="stages", min_r2=0.99)
    assert staged.method == "stages" and len(staged.stages) == 3 and staged.steps == 5
    # another number of classes cannot be distilled: left as it was, and said so
    other = _net(12, 5, 1, classes=7)
    state = {k: v.clone() for k, v in other.state_dict().items()}
    r = align(source, other, data, steps=5, method="logits")
    assert r.skipped and r.method == "none" and "left as grafted" in r.note
    assert "do not output one score per class for the same classes" in r.note
    assert all(torch.equal(state[k], v) for k, v in other.state_dict().items())
    with pytest.raises(ValueError, match="method="):
        align(source, _net(12, 5, 1), data, method="features")


def test_recalibration_can_hand_back_the_outputs_of_its_own_pass(data, monkeypatch):
    """`recalibrated(outputs=[])` runs inputs that fit in one batch through the model once:
    the statistics it ends with are those of the whole batch and the outputs are what the
    model computes with them (up to the biased vs unbiased variance); inputs too large for
    one batch are recalibrated in batches and no outputs are handed back."""
    import importlib

    calibrate = importlib.import_module("netgraft.calibrate")
    model = _net(8, 3, 0).eval()
    calls = []
    hook = model.register_forward_pre_hook(lambda m, a: calls.append(len(a[0])))
    outs: list = []
    with calibrate.recalibrated(model, data, batch_size=32, outputs=outs) as n:
        with torch.no_grad():
            evaluated = model(data)
        means = [m.running_mean.clone() for m in model.modules()
                 if isinstance(m, nn.BatchNorm2d)]
    assert n == 3 and calls == [len(data), len(data)]  # one estimating pass, one eval pass
    assert len(outs) == 1 and outs[0].shape == evaluated.shape
    rel = ((outs[0] - evaluated).abs().max() / evaluated.abs().max()).item()
    assert rel < 2e-2
    assert (outs[0].argmax(1) == evaluated.argmax(1)).float().mean() > 0.95
    # the first norm's statistics are its input's mean over the whole batch
    with torch.no_grad():
        first = model[0](data).mean((0, 2, 3))
    assert torch.allclose(means[0], first, atol=1e-5)
    # too large for one batch: batches of 32, outputs left to the caller
    monkeypatch.setattr(calibrate, "ONE_BATCH_ELEMENTS", data[:100].numel())
    calls.clear()
    outs = []
    with calibrate.recalibrated(model, data, batch_size=32, outputs=outs):
        pass
    hook.remove()
    assert outs == [] and calls == [32] * (len(data) // 32)


def test_one_batch_outputs_are_not_handed_back_when_they_would_be_wrong():
    """A norm called twice per forward normalises each call with its own batch, and a few
    inputs normalise unlike the statistics they leave: no outputs then, and `align` predicts
    in eval mode as before. A source of another dtype than the target is predicted in its
    own dtype either way."""
    import importlib

    calibrate = importlib.import_module("netgraft.calibrate")

    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.c1, self.c2 = nn.Conv2d(1, 4, 3), nn.Conv2d(1, 4, 3)
            self.bn = nn.BatchNorm2d(4)
            self.head = nn.Linear(4, 3)

        def forward(self, x):
            y = self.bn(self.c1(x)) + self.bn(3 * self.c2(x) + 2)
            return self.head(y.mean((2, 3)))

    torch.manual_seed(0)
    x = torch.randn(64, 1, 8, 8)
    twice, outs = Twice().eval(), []
    with calibrate.recalibrated(twice, x, outputs=outs) as n:
        assert n == 1 and outs == []
        assert int(twice.bn.num_batches_tracked) == 2  # the statistics are still re-estimated
    few = _net(8, 3, 0).eval()
    outs = []
    with calibrate.recalibrated(few, x[:calibrate.ONE_BATCH_MIN - 1], outputs=outs):
        assert outs == []
    outs = []
    with calibrate.recalibrated(few, x[:calibrate.ONE_BATCH_MIN], outputs=outs):
        assert len(outs) == 1
    # a float64 source, a float32 target: with or without its statistics re-estimated
    data = torch.randn(64, 1, 16, 16)
    source = _source(8, 3, 0, data).double()
    for norms in ("calibrate", "keep"):
        report = align(source, _net(12, 5, 1), data, steps=5, method="logits",
                       source_norms=norms)
        assert report.method == "logits" and report.steps == 5


def test_method_logits_runs_the_source_once(data):
    """The logits path needs only the source's outputs: they come from the pass that
    re-estimates its statistics, so the source sees the calibration inputs once."""
    source, target = _source(8, 3, 0, data), _net(12, 5, 1)
    calls = []
    hook = source.register_forward_pre_hook(lambda m, a: calls.append(len(a[0])))
    report = align(source, target, data, steps=60, lr=3e-3, batch_size=32, method="logits")
    hook.remove()
    assert calls == [len(data)] and report.source_calibrated == 3
    assert report.agreement > 0.8
    # with the source's statistics kept, it is run once in eval mode, in batches
    calls.clear()
    hook = source.register_forward_pre_hook(lambda m, a: calls.append(len(a[0])))
    align(source, _net(12, 5, 1), data, steps=2, batch_size=32, method="logits",
          source_norms="keep")
    hook.remove()
    assert calls == [32] * (len(data) // 32)


def test_agreement_is_measured_on_a_bounded_subset():
    import importlib

    align_module = importlib.import_module("netgraft.align")  # the module, not the function

    torch.manual_seed(0)
    source = _net(8, 3, 0).eval()
    target = _net(12, 5, 1)
    x = torch.randn(align_module.AGREEMENT_IMAGES + 64, 1, 16, 16)
    seen = []
    hook = target.register_forward_pre_hook(lambda m, a: seen.append(len(a[0])))
    report = align(source, target, x, steps=2, batch_size=64, method="logits")
    hook.remove()
    assert report.images == len(x) and report.steps == 2
    # after the 2 training batches, the recalibration sees every input, the agreement only
    # the first AGREEMENT_IMAGES
    assert sum(seen[-4:]) == align_module.AGREEMENT_IMAGES


def test_unrelated_pair_with_align_is_distilled_straight_away():
    """transfer leaves an unrelated pair's target at its init; align=True then distils the
    source into it without the stage check (method "logits", no stages) and the norms are
    re-estimated once, at the end."""
    import timm

    torch.manual_seed(0)
    source = timm.create_model("convnext_atto", num_classes=10, in_chans=1).eval()
    target = timm.create_model("resnet18", num_classes=10, in_chans=1)
    x = torch.randn(64, 1, 32, 32)
    with pytest.warns(netgraft.NetgraftWarning, match="unrelated pair") as caught:
        report = netgraft.transfer(source, target, calibration_data=x, align=True,
                                   align_steps=2)
    # the warning says what was done instead, not to pass what the caller already passed
    said = " ".join(str(w.message) for w in caught)
    assert "the source was distilled into it instead (2 steps on 64 inputs" in said
    assert "Pass calibration_data=" not in said and "1,000 labeled" in said
    assert report.coverage == 0.0
    assert report.alignment.method == "logits" and report.alignment.stages == []
    assert report.alignment.steps == 2
    assert report.alignment.note == "method='logits' (no stage check)"
    n_norms = sum(isinstance(m, nn.BatchNorm2d) for m in target.modules())
    assert report.calibrated == report.alignment.calibrated == n_norms
    # a target predicting other classes cannot be distilled either: the warning says why
    other = timm.create_model("resnet18", num_classes=7, in_chans=1)
    with pytest.warns(netgraft.NetgraftWarning, match="could not be distilled: .*same classes"):
        skipped = netgraft.transfer(source, other, calibration_data=x, align=True,
                                    align_steps=2)
    assert skipped.alignment.method == "none" and skipped.alignment.steps == 0


def test_stage_regression_distils_the_logits_alongside(data):
    """The stage regression carries the source's softened logits as one more term (weight
    `kd_weight`, 0 = stage terms only); the closed-form head fit that follows is kept only
    when it does not lower the agreement with the source that the distilled head reached."""
    source = _source(8, 3, 0, data)
    with torch.no_grad():
        s_pred = source(data).argmax(1)

    def agreement(model):
        with torch.no_grad():
            return (model.eval()(data).argmax(1) == s_pred).float().mean().item()

    plain_target, kd_target = _net(12, 5, 1), _net(12, 5, 1)
    plain = align(source, plain_target, data, steps=40, lr=3e-3, batch_size=32, min_r2=0.0,
                  kd_weight=0.0)
    kd = align(source, kd_target, data, steps=40, lr=3e-3, batch_size=32, min_r2=0.0)
    assert plain.kd_weight == 0.0 and kd.kd_weight == 1.0
    assert kd.to_dict()["kd_weight"] == 1.0 and "distilled alongside" in kd.summary()
    assert "distilled alongside" not in plain.summary()
    assert plain.head == "11"  # stage terms only: the head comes from the closed-form fit
    # the report's agreement is what the returned target does, whichever head was kept
    assert kd.agreement == pytest.approx(agreement(kd_target))
    assert plain.agreement == pytest.approx(agreement(plain_target))
    assert (kd.head is None) == ("not kept" in kd.note)
    assert kd.agreement >= 0.6
    # a target with another number of classes has no logits term
    other = align(source, _net(12, 5, 1, classes=7), data, steps=5, min_r2=0.0)
    assert other.kd_weight == 0.0 and other.head is None
    assert "nan" not in other.summary() and "agreement" not in other.summary()


def _state(model: nn.Module) -> dict:
    return {k: v.clone() for k, v in model.state_dict().items()}


def _unchanged(model: nn.Module, state: dict) -> bool:
    return all(torch.equal(state[k], v) for k, v in model.state_dict().items())


def _mlp(hidden: int, seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(10, hidden), nn.ReLU(), nn.Linear(hidden, 3))


def test_a_head_is_not_replaced_by_a_worse_fit():
    """QA: align(s, s, x) replaced s's exact head by the ridge fit (R² 0.85): agreement with
    itself fell to 89%, logits moved by 0.27. The fit now replaces a head only when it
    reproduces the source's logits better, so a model aligned to itself stays bit-identical,
    and so does an exact (Net2Net) graft of it."""
    source = _mlp(20)
    x = torch.randn(256, 10, generator=torch.Generator().manual_seed(1))
    state = _state(source)
    report = align(source, source, x)
    assert _unchanged(source, state)
    assert report.head is None and "head fit not kept" in report.note
    assert 0.5 < report.head_r2 < 0.99  # the ridge fit it refused
    assert report.agreement == report.agreement_before == 1.0 and not report.reverted
    assert report.lr_factor == 1.0  # nothing was changed, nothing to preserve
    target = _mlp(40, seed=1)
    netgraft.transfer(source, target, split_noise=0)
    grafted = _state(target)
    report = align(source, target, x)
    assert _unchanged(target, grafted) and report.agreement == 1.0
    with torch.no_grad():
        assert (target(x) - source(x)).abs().max() < 1e-5


def test_an_alignment_that_does_not_help_is_undone(data):
    """An exact graft of a conv net already computes its source's function: the stage
    regression and the re-estimated norms can only move it away, so every parameter and
    buffer (running statistics too) is put back, and the report says so."""
    source = _source(8, 3, 0, data)
    target = _net(16, 3, 1)  # wider: a Net2Net graft of the source is exact
    netgraft.transfer(source, target, split_noise=0)
    grafted = _state(target)
    with torch.no_grad():
        assert (target.eval()(data) - source(data)).abs().max() < 1e-5
    target.train()
    report = align(source, target, data, steps=10)
    assert report.method == "stages" and report.steps == 10 and report.reverted
    assert _unchanged(target, grafted) and target.training
    assert report.agreement == report.agreement_before == 1.0
    assert report.calibrated == 0 and report.head is None and report.lr_factor == 1.0
    assert report.summary().startswith("kept the graft: alignment")
    assert "raised the distillation loss" in report.summary()
    assert "tried aligning 3 stages" in report.summary()
    d = report.to_dict()
    assert d["reverted"] is True and d["agreement_before"] == 1.0
    # distilling the whole target is checked the same way
    target = _net(16, 3, 1)
    netgraft.transfer(source, target, split_noise=0)
    grafted = _state(target)
    report = align(source, target, data, steps=10, method="logits")
    assert report.reverted and _unchanged(target, grafted) and report.agreement == 1.0
    assert "distilling the source's logits" in report.summary()
    # a model aligned to itself, stage regression included, is left as it was
    state = _state(source)
    assert align(source, source, data, steps=5).reverted and _unchanged(source, state)


def test_a_failed_alignment_leaves_the_target_as_it_was(data):
    source, target = _net(8, 3, 0).eval(), _net(12, 5, 1)
    state = _state(target)
    calls = []

    def fail(module, args, out):
        if torch.is_grad_enabled():  # a training step
            calls.append(1)
            if len(calls) == 3:  # after two optimizer steps
                raise RuntimeError("interrupted")

    hook = target.register_forward_hook(fail)
    with pytest.raises(RuntimeError, match="interrupted"):
        align(source, target, data, steps=10, min_r2=0.0)
    hook.remove()
    assert _unchanged(target, state)


def test_calibration_batches_of_other_shapes_are_named():
    from netgraft.align import _collect
    from netgraft.errors import NetgraftError

    batches = [torch.randn(4, 1, 12, 12), torch.randn(4, 1, 16, 16)]
    with pytest.raises(NetgraftError, match=r"batch 1 holds inputs of shape \(1, 16, 16\), "
                                            r"the first batch \(1, 12, 12\)"):
        _collect(iter(batches), 64)


def test_keep_better_false_skips_the_comparison():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(10, 20), nn.ReLU(), nn.Linear(20, 3)).eval()
    original = [p.clone() for p in model.parameters()]
    x = torch.randn(256, 10)
    report = netgraft.align(model, model, x, keep_better=False)
    assert not report.reverted and report.agreement_before != report.agreement_before  # NaN
    assert report.agreement == 1.0  # measured all the same; the worse ridge head not placed
    assert all(torch.equal(a, b) for a, b in zip(original, model.parameters()))


def test_the_source_is_aligned_to_with_statistics_of_the_same_inputs(data):
    """QA (session 14): resnet18 → resnet34, grafted exactly and recalibrated, fell from 86.7%
    to 75.8% test accuracy when aligned: its source's stored batch-norm statistics were stale
    (76% as stored, 87% recalibrated), and the alignment pulled the recalibrated target toward
    the stale predictions. The source is now aligned to with statistics re-estimated on the
    same inputs, as the target's are, and handed back unchanged."""
    source = _net(8, 3, 0)
    with torch.no_grad():  # a source whose stored statistics no longer describe its inputs
        for m in source.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.add_(torch.linspace(-1, 1, m.num_features))
                m.running_var.mul_(3.0)
    source.eval()
    stale = _state(source)
    target = _net(16, 3, 1)
    netgraft.transfer(source, target, split_noise=0, calibration_data=data)  # exact, recalibrated
    grafted = _state(target)
    with torch.no_grad():
        with netgraft.calibrate.recalibrated(source, data):
            recalibrated = source(data)
        assert (target.eval()(data) - recalibrated).abs().max() < 1e-4
        assert (source(data).argmax(1) != recalibrated.argmax(1)).float().mean() > 0.2
    report = align(source, target, data, steps=10)
    assert report.source_calibrated == 3 and report.to_dict()["source_calibrated_norms"] == 3
    assert _unchanged(source, stale) and not source.training  # handed back as it was
    # the target already computes the recalibrated source: nothing to gain, kept as grafted
    assert report.agreement_before == 1.0 and report.reverted and _unchanged(target, grafted)
    assert "statistics re-estimated on the same inputs" not in report.summary()  # reverted
    # with the statistics as stored, the alignment pulls the target toward the stale source
    report = align(source, target, data, steps=10, source_norms="keep")
    assert report.source_calibrated == 0 and report.agreement_before < 0.9
    assert not report.reverted and report.agreement > report.agreement_before
    assert not _unchanged(target, grafted)
    with pytest.raises(ValueError, match="source_norms='stale'"):
        align(source, target, data, source_norms="stale")
    # inputs the source cannot read are named as the source's, and nothing changes
    state = _state(target)
    with pytest.raises(netgraft.NetgraftError, match="inputs the source accepts"):
        align(source, target, data, source_channels=3)
    assert _unchanged(target, state) and _unchanged(source, stale)


def test_align_leaves_modes_gradients_and_the_random_stream_as_it_found_them(data):
    """QA (session 16): under torch.no_grad() align failed in autograd; it set every
    submodule's train/eval flag to the model's (a training run with frozen batch norms lost
    them), deleted the user's gradients, and drew from the global random stream (dropout)."""
    source = _source(8, 3, 0, data)
    target = _net(6, 5, 1)
    target.insert(len(target) - 1, nn.Dropout(0.5))
    target.train()
    for m in target.modules():  # a fine-tuning run with frozen batch norms
        if isinstance(m, nn.BatchNorm2d):
            m.eval()
    target[-1].weight.grad = torch.ones_like(target[-1].weight)
    modes = [m.training for m in target.modules()]
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    with torch.no_grad():
        report = align(source, target, data, steps=5, method="logits")
    assert report.method == "logits" and report.steps == 5
    assert torch.equal(torch.rand(3), expected)  # the stream was not drawn from
    assert [m.training for m in target.modules()] == modes
    assert torch.equal(target[-1].weight.grad, torch.ones_like(target[-1].weight))
    with torch.inference_mode(), pytest.raises(netgraft.NetgraftError, match="inference mode"):
        align(source, target, data, steps=5)
    for bad in (-3, 2.5, "5", True):
        with pytest.raises(ValueError, match="give a whole number of steps"):
            align(source, target, data, steps=bad)
    import numpy as np
    assert align(source, target, data, steps=np.int64(2), method="logits").steps == 2


def test_a_frozen_target_is_not_aligned_and_few_inputs_are_warned_about(data):
    source = _source(8, 3, 0, data)
    frozen = _net(6, 5, 1).requires_grad_(False)
    before = {k: v.clone() for k, v in frozen.state_dict().items()}
    report = align(source, frozen, data, steps=5)  # was: "optimizer got an empty parameter list"
    assert report.skipped and report.method == "none" and "no trainable parameter" in report.note
    assert all(torch.equal(v, before[k]) for k, v in frozen.state_dict().items())
    with pytest.warns(netgraft.NetgraftWarning, match="8 calibration inputs"):
        align(source, _net(6, 5, 1), data[:8], steps=2)


class _Tokens(nn.Module):
    """A token classifier: embedding, transformer encoder, a batch-normed layer, head."""

    def __init__(self, dim: int, layers: int, heads: int = 2, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.emb = nn.Embedding(40, dim)
        self.enc = nn.TransformerEncoder(
            nn.TransformerEncoderLayer(dim, heads, 2 * dim, dropout=0.0, batch_first=True),
            layers, enable_nested_tensor=False)
        self.mid, self.norm, self.head = nn.Linear(dim, dim), nn.BatchNorm1d(dim), nn.Linear(dim, 4)

    def forward(self, ids):
        return self.head(torch.relu(self.norm(self.mid(self.enc(self.emb(ids)).mean(1)))))


def test_token_ids_are_calibrated_on_and_aligned_to_as_they_are():
    """QA (session 28): calibration_data and align cast token ids to float, and the embedding
    then refused them ("calibration_data must hold inputs the target accepts"). Integer inputs
    now reach a model that reads token ids as they are, without the warning meant for uint8
    images; only floating inputs are cast to the model's dtype."""
    ids = torch.randint(0, 40, (256, 10), generator=torch.Generator().manual_seed(0))
    source = _Tokens(16, 1).eval()
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        assert netgraft.calibrate.recalibrate_norms(source, ids) == 1
        with torch.no_grad():
            source.head.weight.mul_(4.0)
        target = _Tokens(32, 2, heads=4, seed=1)  # wider and deeper
        report = netgraft.transfer(source, target, example_input=ids[:2], calibration_data=ids)
        assert report.calibrated == 1 and report.function_gap < 1e-5
        with torch.no_grad():
            assert (target.eval()(ids) - source(ids)).abs().max() < 1e-4
        target = _Tokens(32, 2, heads=4, seed=1)
        report = align(source, target, ids, steps=30, method="logits")
    assert not any("int64" in str(w.message) for w in seen)
    assert report.method == "logits" and report.steps == 30 and not report.reverted
    assert report.agreement_before < 0.3 and report.agreement > 0.6  # 25% → 63%
    with torch.no_grad():  # (align measures it with the source's norms re-estimated in one batch)
        agree = (target.eval()(ids).argmax(1) == source(ids).argmax(1)).float().mean()
    assert abs(agree - report.agreement) < 0.02


def test_each_model_is_aligned_on_inputs_in_its_own_dtype(data):
    """QA (session 28): a float64 (or float16) target beside a float32 source failed: the
    source was run on inputs cast to the target's dtype. Each model now gets them in its own;
    a float64 target is aligned as its float32 twin is. Session 32: a float16 target, refused
    since session 28 (Adam's steps overflow in float16 on the first step), is aligned in
    float32 and cast back to float16, each tensor the same object as before."""
    source = _source(8, 3, 0, data)
    reports = {}
    for dtype in (torch.float32, torch.float64):
        target = _net(12, 5, 1).to(dtype)
        reports[dtype] = align(source, target, data, steps=5, method="stages")
        assert target[0].weight.dtype == target(data[:2].to(dtype)).dtype == dtype
        assert source[0].weight.dtype == torch.float32
    single, double = reports[torch.float32], reports[torch.float64]
    assert double.method == "stages" and double.steps == 5 and not double.reverted
    assert double.agreement_before == single.agreement_before < 0.1
    assert double.agreement > 0.5 and abs(double.agreement - single.agreement) < 0.03
    assert sum(b.r2_after - b.r2_before for b in double.stages) > 0.02
    assert all(abs(a.r2_after - b.r2_after) < 0.01 for a, b in zip(single.stages, double.stages))
    half = _net(12, 5, 1).half()
    tensors = [*half.parameters(), *half.buffers()]
    report = align(source, half, data, steps=5, method="stages")
    assert [t.dtype for t in half.state_dict().values() if t.is_floating_point()] \
        == [torch.float16] * len([t for t in tensors if t.is_floating_point()])
    assert all(a is b for a, b in zip(tensors, [*half.parameters(), *half.buffers()]))
    assert "float16 tensors were aligned in float32" in report.note and not report.reverted
    # what float32 alignment gave, to float16 precision; its predictions agree in float16
    twin = _net(12, 5, 1).half().float()  # the same init, rounded as the float16 one was
    align(source, twin, data, steps=5, method="stages")
    assert all(torch.allclose(a.float(), b.half().float(), atol=2e-3, rtol=2e-3)
               for a, b in zip(half.state_dict().values(), twin.state_dict().values())
               if a.is_floating_point())
    assert abs(report.agreement - single.agreement) < 0.05
    # an alignment that fails leaves the float16 target as it was, in float16
    state = _state(half)
    with pytest.raises(netgraft.NetgraftError):
        align(source, half, data[:1], steps=5)
    assert _unchanged(half, state) and half[0].weight.dtype == torch.float16


class _WithFeatures(nn.Module):
    """`net` returning (logits, the features its classifier reads), as many models do."""

    def __init__(self, net: nn.Sequential):
        super().__init__()
        self.net = net

    def forward(self, x):
        features = self.net[:-1](x)
        return self.net[-1](features), features


def test_a_source_returning_logits_and_features_is_checked_on_its_logits(data):
    """QA (session 28): a source returning (logits, features) gave align no logits: it skipped
    its never-worse check (an exact graft was moved away from its source and kept) and the
    check that keeps a head already computing the source's logits. Both now compare the
    first outputs, as transfer's output gap does."""
    plain = _source(8, 3, 0, data)
    source = _WithFeatures(plain).eval()
    target = _net(16, 3, 1)
    netgraft.transfer(plain, target, split_noise=0)  # exact
    grafted = _state(target)
    report = align(source, target, data, steps=10)
    assert report.agreement_before == 1.0 and report.reverted and _unchanged(target, grafted)
    assert report.summary().startswith("kept the graft: alignment lowered the agreement with "
                                       "the source (100% → ")
    # the target returning both too: its logits are compared
    twin = _WithFeatures(target)
    report = align(source, twin, data, steps=10, method="logits")
    assert report.agreement_before == report.agreement == 1.0 and report.reverted
    assert _unchanged(target, grafted)
    # an exact graft's head is not replaced by the shrunk ridge fit
    mlp = _mlp(20)
    x = torch.randn(256, 10, generator=torch.Generator().manual_seed(1))
    wide = _mlp(40, seed=1)
    netgraft.transfer(mlp, wide, split_noise=0)
    grafted = _state(wide)
    report = align(_WithFeatures(mlp), wide, x)
    assert "head fit not kept" in report.note and 0.5 < report.head_r2 < 0.99
    assert report.agreement == report.agreement_before == 1.0 and _unchanged(wide, grafted)


def test_integer_inputs_of_a_model_without_float_parameters_are_cast_to_float():
    """Review (session 28): with no float parameter to read a dtype from, uint8 inputs
    reached an affine-free batch norm uncast ("not implemented for 'Byte'")."""
    from netgraft.calibrate import recalibrate_norms
    model = nn.Sequential(nn.BatchNorm1d(4, affine=False))
    x = torch.randint(0, 255, (64, 4), dtype=torch.uint8)
    with pytest.warns(netgraft.NetgraftWarning, match="cast to"):
        assert recalibrate_norms(model, x) == 1
    assert torch.allclose(model[0].running_mean, x.float().mean(0))
