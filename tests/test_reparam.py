"""Models whose weights are computed (weight norm, spectral norm) and models netgraft cannot
trace (TorchScript, lazy, meta) — grafted through plain copies, or refused by name."""
import warnings

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrizations as P
from torch.nn.utils import parametrize

import netgraft
from netgraft.errors import UnsupportedModelError
from netgraft.reparam import plain_copy, reparametrized


def tcn(width: int, norm=P.weight_norm) -> nn.Module:
    """A small temporal conv net as time-series models build it: weight-normed dilated convs."""
    torch.manual_seed(width)
    return nn.Sequential(norm(nn.Conv1d(3, width, 3, padding=1)), nn.ReLU(),
                         norm(nn.Conv1d(width, width, 3, padding=2, dilation=2)), nn.ReLU(),
                         nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Linear(width, 4))


def test_a_weight_normed_tcn_grows_exactly_and_stays_weight_normed():
    source, target = tcn(16).eval(), tcn(32).eval()
    before = {k: v.clone() for k, v in source.state_dict().items()}
    report = netgraft.transfer(source, target, example_input=torch.randn(2, 3, 50))
    x = torch.randn(8, 3, 50)
    with torch.no_grad():
        gap = (source(x) - target(x)).abs().max().item()
    assert gap < 1e-5 and report.function_gap < 1e-5 and report.coverage == 1.0
    # the target keeps its parametrizations (g and v), the source is untouched
    assert parametrize.is_parametrized(target[0], "weight")
    assert "0.parametrizations.weight.original0" in target.state_dict()
    assert all(torch.equal(before[k], v) for k, v in source.state_dict().items())
    g, v = target[2].parametrizations.weight.original0, target[2].parametrizations.weight.original1
    assert torch.allclose(g.flatten(), v.flatten(1).norm(dim=1), rtol=1e-5)


def test_the_older_weight_norm_hook_is_grafted_too():
    from torch.nn.utils import weight_norm
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        source, target = tcn(8, weight_norm).eval(), tcn(16, weight_norm).eval()
    assert reparametrized(target) == ["0.weight", "2.weight"]
    netgraft.transfer(source, target, example_input=torch.randn(2, 3, 40))
    x = torch.randn(4, 3, 40)
    with torch.no_grad():
        assert (source(x) - target(x)).abs().max().item() < 1e-5
    assert set(target[0]._parameters) == {"bias", "weight_g", "weight_v"}


def test_a_constraining_parametrization_is_named_in_the_report():
    source, target = tcn(8, P.spectral_norm).eval(), tcn(16, P.spectral_norm).eval()
    report = netgraft.transfer(source, target, example_input=torch.randn(2, 3, 40))
    # widening changes the spectral norm of the grafted weight, which the target divides by
    assert report.constrained and report.constrained[0] in ("0.weight", "2.weight")
    assert "parametrization" in report.function_note and report.function_gap > 1e-4


def test_plain_copy_leaves_the_original_parametrized():
    model = tcn(8)
    plain = plain_copy(model)
    assert reparametrized(model) == ["0.weight", "2.weight"] and reparametrized(plain) == []
    assert type(plain[0]) is nn.Conv1d and parametrize.is_parametrized(model[0])
    x = torch.randn(2, 3, 30)
    with torch.no_grad():
        assert torch.allclose(model(x), plain(x), atol=1e-6)
    # tracing and scoring see the computed weights
    assert netgraft.trace(model, x)["2"].shapes["weight"] == (8, 8, 3)
    assert netgraft.similarity(model, plain_copy(model)) == pytest.approx(1.0)


def _mlp(width: int) -> nn.Module:
    return nn.Sequential(nn.Linear(10, width), nn.ReLU(), nn.Linear(width, 2))


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated")
@pytest.mark.parametrize("role", ["source", "target"])
def test_models_that_cannot_be_traced_are_refused_by_name(role):
    def pair(odd):
        return (odd, _mlp(16)) if role == "source" else (_mlp(8), odd)

    with pytest.raises(UnsupportedModelError, match=f"the {role} is a TorchScript module"):
        netgraft.transfer(*pair(torch.jit.script(_mlp(8))))
    with pytest.raises(UnsupportedModelError, match=f"layer '0.weight': the {role}'s tensors "
                                                    f"are on the meta device"):
        netgraft.transfer(*pair(_mlp(8).to("meta")))
    lazy = nn.Sequential(nn.LazyLinear(8), nn.ReLU(), nn.Linear(8, 2))
    with pytest.raises(UnsupportedModelError, match=f"the {role} is a lazy module"):
        netgraft.transfer(*pair(lazy))
    # QA (session 26): a quantized model failed with "'torch.dtype' object has no attribute
    # 'detach'", a target built under inference_mode with torch's own state-dict error
    quantized = torch.ao.quantization.quantize_dynamic(_mlp(8), {nn.Linear}, dtype=torch.qint8)
    with pytest.raises(UnsupportedModelError, match=f"the {role} holds a quantized module at "
                                                    f"'0' \\(Linear\\).*graft the float model"):
        netgraft.transfer(*pair(quantized))
    # align and autoinit name their own work on the float model (session 29)
    with pytest.raises(UnsupportedModelError, match="packed integer weights cannot be read or "
                                                    "written as tensors: align the float model"):
        netgraft.align(*pair(quantized), torch.randn(8, 10))
    if role == "target":
        with pytest.raises(UnsupportedModelError, match="initialise the float model "
                                                        "\\(netgraft.autoinit\\), then quantize"):
            netgraft.autoinit(quantized, torch.randn(2, 10))
    with torch.inference_mode():
        frozen = _mlp(8)
    if role == "target":
        before = {k: v.clone() for k, v in frozen.state_dict().items()}
        with pytest.raises(UnsupportedModelError, match="layer '0.weight': the target's tensors "
                                                        "were created under torch.inference_mode"):
            netgraft.transfer(_mlp(16), frozen)
        assert all(torch.equal(before[k], v) for k, v in frozen.state_dict().items())
        with torch.inference_mode():  # inside inference mode they can be written
            assert netgraft.transfer(_mlp(16), frozen).coverage > 0
    else:  # a source is only read
        assert netgraft.transfer(frozen, _mlp(16)).coverage > 0


def test_generator_calibration_data_serves_every_step():
    torch.manual_seed(0)
    source = nn.Sequential(nn.Conv2d(1, 8, 3), nn.BatchNorm2d(8), nn.ReLU(),
                           nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 3)).eval()
    # narrower: an exact (wider) graft would not be aligned at all
    target = nn.Sequential(nn.Conv2d(1, 6, 3), nn.BatchNorm2d(6), nn.ReLU(),
                           nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 3))
    batches = (torch.randn(16, 1, 12, 12) for _ in range(4))  # read once only
    report = netgraft.transfer(source, target, calibration_data=batches, align=True,
                               align_steps=2)
    assert report.calibrated == 1 and report.alignment is not None
    assert report.alignment.images == 64 and not report.alignment.skipped


class _Block(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.conv1 = P.weight_norm(nn.Conv1d(width, width, 3, padding=1))
        self.conv2 = P.weight_norm(nn.Conv1d(width, width, 3, padding=1))

    def forward(self, x):
        return torch.relu(x + self.conv2(torch.relu(self.conv1(x))))


class _ResTCN(nn.Module):
    """Residual blocks of weight-normed convs (a TCN): deeper targets get identity blocks."""

    def __init__(self, blocks: int, width: int = 8):
        super().__init__()
        self.stem = P.weight_norm(nn.Conv1d(3, width, 1))
        self.blocks = nn.Sequential(*[_Block(width) for _ in range(blocks)])
        self.head = nn.Linear(width, 4)

    def forward(self, x):
        return self.head(self.blocks(self.stem(x)).mean(-1))


def test_a_zeroed_weight_normed_layer_is_zero_not_nan():
    torch.manual_seed(0)
    source, target = _ResTCN(2).eval(), _ResTCN(4).eval()
    report = netgraft.transfer(source, target, example_input=torch.randn(2, 3, 20))
    zeroed = [p.target for p in report.pairs if p.note.startswith("zeroed")]
    assert zeroed  # the new blocks' last convs: g = 0 with a unit direction, not 0/0
    x = torch.randn(4, 3, 20)
    with torch.no_grad():
        assert all(torch.isfinite(p).all() for p in target.parameters())
        assert (source(x) - target(x)).abs().max().item() < 1e-5
    assert report.function_gap < 1e-5 and not report.constrained


class _Triple(nn.Module):
    def forward(self, w):
        return 3 * w


def test_a_parametrization_without_right_inverse_is_refused_before_any_change():
    source, target = tcn(8).eval(), tcn(16).eval()
    parametrize.register_parametrization(target[6], "weight", _Triple())
    before = {k: v.clone() for k, v in target.state_dict().items()}
    with pytest.raises(UnsupportedModelError, match=r"layer '6\.weight': its parametrization "
                                                    r"_Triple has no right_inverse"):
        netgraft.transfer(source, target, example_input=torch.randn(2, 3, 30))
    assert all(torch.equal(before[k], v) for k, v in target.state_dict().items())


def test_autoinit_rescales_weight_normed_layers():
    model = nn.Sequential(*[m for _ in range(6) for m in
                            (P.weight_norm(nn.Linear(32, 32)), nn.ReLU())],
                          nn.Linear(32, 3)).eval()
    with torch.no_grad():
        for m in model[:-1:2]:
            m.parametrizations.weight.original0.mul_(3)  # a badly scaled init
    report = netgraft.autoinit(model, torch.randn(2, 32))
    assert not report.skipped and parametrize.is_parametrized(model[0])
    out = []
    hooks = [m.register_forward_hook(lambda mod, a, o: out.append(o.std().item()))
             for m in model[:-1:2]]
    with torch.no_grad():
        model(torch.randn(512, 32))
    for h in hooks:
        h.remove()
    assert all(0.7 < s < 1.4 for s in out)


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated")
def test_a_scripted_submodule_and_a_lazy_norm_are_refused_by_name():
    inner = torch.jit.script(nn.Linear(8, 2))
    with pytest.raises(UnsupportedModelError, match="holds a TorchScript module at '1'"):
        netgraft.transfer(_mlp(8), nn.Sequential(nn.Linear(10, 8), inner))
    lazy = nn.Sequential(nn.Linear(10, 8), nn.LazyBatchNorm1d(affine=False), nn.Linear(8, 2))
    with pytest.raises(UnsupportedModelError, match=r"layer '1\.running_mean'.*lazy module"):
        netgraft.transfer(_mlp(8), lazy)


def test_an_endless_calibration_generator_is_read_up_to_the_limit():
    from netgraft.transfer import CALIBRATION_LIMIT

    reads = []

    def endless():
        while True:
            reads.append(1)
            yield torch.randn(64, 1, 12, 12)

    source = nn.Sequential(nn.Conv2d(1, 8, 3), nn.BatchNorm2d(8), nn.ReLU(),
                           nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 3)).eval()
    target = nn.Sequential(nn.Conv2d(1, 16, 3), nn.BatchNorm2d(16), nn.ReLU(),
                           nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 3))
    report = netgraft.transfer(source, target, calibration_data=endless())
    assert len(reads) == CALIBRATION_LIMIT // 64 and report.calibrated == 1


def _pruned_mlp(seed: int = 0) -> nn.Module:
    import torch.nn.utils.prune as prune

    torch.manual_seed(seed)
    m = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 4))
    prune.l1_unstructured(m[2], "weight", 0.5)
    return m


def test_pruned_layers_are_grafted_and_keep_their_mask():
    """QA (session 24): a layer pruned with torch.nn.utils.prune (weight_orig · weight_mask,
    no `weight` parameter) failed the graft with a bare KeyError: 'weight'. A pruned source
    gives its masked weight; a pruned target takes the graft in weight_orig and keeps its
    mask, and is reported as constrained where the mask zeroes grafted entries."""
    source = _pruned_mlp()
    x = torch.randn(5, 8)
    target = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(),
                           nn.Linear(16, 4))
    netgraft.transfer(source, target, example_input=x)
    assert torch.allclose(target(x), source(x), atol=1e-6)  # the masked weight, exactly
    assert "2.weight" in reparametrized(source)
    masked = _pruned_mlp(seed=1)
    mask = masked[2].weight_mask.clone()
    report = netgraft.transfer(target, masked, example_input=x)
    assert torch.equal(masked[2].weight_mask, mask)  # still pruned, where it was
    assert torch.equal(masked[2].weight, masked[2].weight_orig * mask)
    assert torch.equal(masked[2].weight_orig, target[2].weight)
    assert "2.weight" in report.constrained
    assert netgraft.similarity(netgraft.trace(source, x), netgraft.trace(target, x)) > 0.9


def test_a_model_that_cannot_be_copied_is_refused_by_name():
    import threading

    target = tcn(8)
    target.lock = threading.Lock()
    with pytest.raises(UnsupportedModelError, match="cannot be copied.*lock"):
        netgraft.transfer(tcn(8), target, example_input=torch.randn(2, 1, 16))


def _reference(model: nn.Module) -> nn.Module:
    """`model` with its nn.Linear layers as quantized reference modules (float weights, int8
    per-channel grid), as FX's convert_to_reference_fx makes them."""
    import torch.ao.nn.quantized.reference as ref
    from torch.ao.quantization.observer import PerChannelMinMaxObserver

    for name, layer in list(model.named_children()):
        if isinstance(layer, nn.Linear):
            observer = PerChannelMinMaxObserver(ch_axis=0, dtype=torch.qint8,
                                                qscheme=torch.per_channel_symmetric)
            observer(layer.weight)
            scale, zero_point = observer.calculate_qparams()
            setattr(model, name, ref.Linear.from_float(layer, {
                "qscheme": torch.per_channel_affine, "dtype": torch.qint8, "scale": scale,
                "zero_point": zero_point, "axis": 0}))
    return model


@pytest.mark.filterwarnings("ignore:torch.quantize_per_tensor")
def test_quantized_reference_modules_are_traced_but_not_grafted():
    """QA (session 27): quantized *reference* modules (float weights, computed with rounded on
    the fixed grid of their weight_scale / weight_zero_point) were refused for "packed integer
    weights", which they do not hold. They trace as the float layers they are; a graft refuses
    them for the true reason: read as a source, its float weights are not what it computes
    with (the graft was off by 7e-3, "for a reason the report does not name"); as a target,
    its state dict holds the quantization scheme (torch failed in the backup) and written
    weights would be rounded on the grid of the weights it held."""
    torch.manual_seed(0)
    source = _reference(_mlp(8))
    arch = netgraft.trace(source, torch.randn(2, 10))
    assert [(layer.name, layer.kind, layer.in_dim, layer.out_dim) for layer in arch.layers] == \
        [("0", "linear", 10, 8), ("2", "linear", 8, 2)]
    assert arch.layers[0].shapes["weight"] == (8, 10)
    with pytest.raises(UnsupportedModelError) as info:
        netgraft.transfer(source, _mlp(16))
    assert str(info.value) == (
        "the source holds a quantized reference module at '0' (Linear), whose forward rounds "
        "its weight to the fixed grid of its weight_scale and weight_zero_point, so its float "
        "weight is not the one it computes with: a graft of it would not carry its function: "
        "graft the float model, then quantize it")
    target = _reference(_mlp(16))
    before = {k: v.clone() for k, v in target.state_dict().items()
              if isinstance(v, torch.Tensor)}
    # autoinit says what to do in its own words (session 29: it gave the graft's)
    for call, role, todo in (
            (lambda: netgraft.transfer(_mlp(8), target), "target",
             "graft the float model, then quantize it"),
            (lambda: netgraft.autoinit(target, torch.randn(2, 10)), "model",
             "initialise the float model (netgraft.autoinit), then quantize it")):
        with pytest.raises(UnsupportedModelError) as info:
            call()
        assert str(info.value) == (
            f"the {role} holds a quantized reference module at '0' (Linear), whose forward "
            f"rounds its weight to the fixed grid of its weight_scale and weight_zero_point, "
            f"so weights written into it would be rounded and clipped on the grid fitted for "
            f"the weights it held: {todo}")
    assert all(torch.equal(before[k], v) for k, v in target.state_dict().items()
               if isinstance(v, torch.Tensor))


@pytest.mark.filterwarnings("ignore:torch.quantize_per_tensor")
def test_align_refuses_quantized_reference_modules_for_its_own_reason():
    """QA (session 28): align refused a quantized reference source (or target) with the
    graft's message ("a graft of it would not carry its function: graft the float model"),
    though it grafts nothing. It now says what aligning to it, or training it, would do."""
    torch.manual_seed(0)
    x = torch.randn(64, 10)
    grid = ("holds a quantized reference module at '0' (Linear), whose forward rounds its "
            "weight to the fixed grid of its weight_scale and weight_zero_point, ")
    with pytest.raises(UnsupportedModelError) as info:
        netgraft.align(_reference(_mlp(8)), _mlp(16), x)
    assert str(info.value) == (
        f"the source {grid}so the features it would be aligned to carry the rounding of that "
        f"grid: align the target to the float model it was quantized from, then quantize the "
        f"target")
    target = _reference(_mlp(16))
    before = {k: v.clone() for k, v in target.state_dict().items()
              if isinstance(v, torch.Tensor)}
    with pytest.raises(UnsupportedModelError) as info:
        netgraft.align(_mlp(8), target, x)
    assert str(info.value) == (
        f"the target {grid}so align's training steps on its float weight would be rounded and "
        f"clipped on the grid fitted for the weights it held: align the float model, then "
        f"quantize it")
    assert all(torch.equal(before[k], v) for k, v in target.state_dict().items()
               if isinstance(v, torch.Tensor))
