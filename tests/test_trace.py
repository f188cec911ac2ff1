import pytest
import timm
import torch
from torch import nn

import netgraft
from netgraft.errors import ModelForwardError, UnsupportedModelError


def test_resnet18_layers_in_execution_order():
    arch = netgraft.trace(timm.create_model("resnet18"))
    names = [layer.name for layer in arch.layers]
    assert len(arch.layers) == 41  # 20 convs + 20 batch norms + fc
    assert names[0] == "conv1" and names[-1] == "fc"
    # the downsample branch runs after conv2/bn2 of the first block of stage 2
    assert names.index("layer2.0.bn2") < names.index("layer2.0.downsample.0")
    assert arch["conv1"].role == "input" and arch["fc"].role == "output"
    conv = arch["layer1.0.conv1"]
    assert (conv.kind, conv.kernel, conv.stride, conv.in_dim, conv.out_dim) == ("conv", (3, 3), (1, 1), 64, 64)
    assert arch["bn1"].kind == "batchnorm" and arch["bn1"].shapes["running_var"] == (64,)
    assert arch.numel == sum(p.numel() for p in timm.create_model("resnet18").parameters())
    # 8 residual blocks of 4 or 6 layers, plus stem and head singles
    multi = [b for b in arch.blocks if not b.single]
    assert len(multi) == 8 and {len(b.layers) for b in multi} == {4, 6}
    # the residual sums, by the layers whose outputs are added (through norms, activations)
    # and the block whose forward adds them
    assert len(arch.summed) == 8 and ("layer1.0", "conv1", "layer1.0.conv2") in arch.summed
    assert ("layer2.0", "layer2.0.conv2", "layer2.0.downsample.0") in arch.summed
    # a residual sum's channels are its stream's: the earlier of the two terms
    assert ("layer1.1", "conv1", "layer1.1.conv2") in arch.summed
    assert arch["layer1.1.conv1"].in_layout == (("conv1", 0, 64, 64),)
    assert arch["layer3.1.conv1"].in_layout == (("layer3.0.conv2", 0, 256, 256),)


def test_registration_order_differs_from_execution_order():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.head = nn.Linear(8, 2)  # registered first, runs last
            self.body = nn.Linear(4, 8)

        def forward(self, x):
            return self.head(torch.relu(self.body(x)))

    arch = netgraft.trace(Net(), torch.randn(1, 4))
    assert [l.name for l in arch.layers] == ["body", "head"]
    assert arch["head"].role == "output" and arch["body"].role == "input"


def test_depthwise_and_loose_parameters_and_attention():
    arch = netgraft.trace(timm.create_model("convnext_atto"))
    dw = arch["stages.0.blocks.0.conv_dw"]
    assert dw.depthwise and dw.groups == 40 and dw.kernel == (7, 7)
    assert arch["stages.0.blocks.0"].kind == "param"  # the layer-scale gamma lives on the block
    assert arch["stages.0.blocks.0"].shapes == {"gamma": (40,)}

    mha = nn.TransformerEncoderLayer(16, 2, 32, batch_first=True)
    arch = netgraft.trace(mha, torch.randn(2, 5, 16))
    names = [l.name for l in arch.layers]
    # out_proj is never called as a module; it still sits right after its attention
    assert names.index("self_attn") + 1 == names.index("self_attn.out_proj")
    assert arch["self_attn"].kind == "attention" and arch["self_attn"].shapes["in_proj_weight"] == (48, 16)


def test_vit_tokens_and_input_size_from_timm_config():
    arch = netgraft.trace(timm.create_model("vit_tiny_patch16_224"))
    assert arch.input_shape == (2, 3, 224, 224)  # fixed input size comes from the config
    assert arch.layers[0].shapes == {"cls_token": (1, 1, 192), "pos_embed": (1, 197, 192)}
    assert arch["patch_embed.proj"].role == "input"
    assert arch["head"].role == "output"


def test_forward_failure_is_explained():
    model = nn.Sequential(nn.Linear(10, 3))
    with pytest.raises(ModelForwardError, match=r"shape \(1, 7\).*example_input="):
        netgraft.trace(model, torch.randn(1, 7))


def test_lazy_and_empty_models_are_unsupported():
    with pytest.raises(UnsupportedModelError, match="lazy module") as info:
        netgraft.trace(nn.Sequential(nn.LazyLinear(4)), torch.randn(1, 3))
    assert info.value.layer == "0.weight"
    with pytest.raises(UnsupportedModelError, match="no parameters"):
        netgraft.trace(nn.Sequential(nn.ReLU()), torch.randn(1, 3))


def test_architecture_to_dict_is_json_ready():
    import json
    arch = netgraft.trace(timm.create_model("resnet18"))
    data = json.loads(json.dumps(arch.to_dict()))
    assert len(data["layers"]) == 41 and data["layers"][0]["name"] == "conv1"
    # a conv's input resolution on the traced example (64 px by default); none for a norm
    assert data["layers"][0]["in_size"] == [64, 64] and data["layers"][1]["in_size"] is None
    assert data["layers"][2]["in_size"] == [16, 16]  # layer1's first conv, after the max-pool
    assert "conv1" in str(arch)


def test_concatenated_inputs_record_where_their_channels_come_from():
    from concat_nets import TinyDense, TinyGhost

    arch = netgraft.trace(TinyDense(layers=2), torch.randn(1, 3, 8, 8))
    # a layer reading one whole output of one layer (or the input, "")
    assert arch["stem"].in_layout == (("", 0, 3, 3),) and not arch["stem"].concatenated
    assert arch["layers.0.2"].in_layout == (("stem", 0, 8, 8),)
    assert arch["layers.1.2"].in_layout == (("stem", 0, 8, 8), ("layers.0.2", 0, 4, 4))
    assert arch["layers.1.2"].concatenated
    # through a norm, an activation and pooling: the norm and the head read all three
    expected = (("stem", 0, 8, 8), ("layers.0.2", 0, 4, 4), ("layers.1.2", 0, 4, 4))
    assert arch["norm"].in_layout == expected and arch["head"].in_layout == expected
    assert arch.mixed_sums == []

    arch = netgraft.trace(TinyGhost(width=6, out=10), torch.randn(1, 3, 8, 8))
    # the depthwise conv keeps its input's channels; the slice cuts the second copy to 4
    assert arch["mix"].in_layout == (("primary", 0, 6, 6), ("primary", 0, 4, 6))
    # a split along the channels: the first half of mix's output
    assert arch["left"].in_layout == (("mix", 0, 5, 10),)
    # the concatenation is added to the stem's output (GhostNet's shortcut)
    assert arch.mixed_sums == [((("primary", 0, 6, 6), ("primary", 0, 4, 6)),
                                (("stem", 0, 10, 10),))]


def test_residual_units_are_blocks_of_their_own():
    """A module whose forward adds its own input back is a residual unit, whatever the layout
    of its tensors (Swin's are channels-last); a block holding several is cut into one block
    per unit — DPIAT's rule flattened each Swin stage (downsampling + blocks) into one."""
    model = timm.create_model("swin_tiny_patch4_window7_224", img_size=64, window_size=4,
                              num_classes=10)
    arch = netgraft.trace(model)
    assert {f"layers.2.blocks.{i}" for i in range(6)} <= arch.residual
    assert "layers.2" not in arch.residual and "layers.2.downsample" not in arch.residual
    names = [b.name for b in arch.blocks]
    at = names.index("layers.2.downsample")
    assert names[at:at + 7] == ["layers.2.downsample"] + [f"layers.2.blocks.{i}" for i in range(6)]
    unit = arch.blocks[at + 1]
    assert [arch.layers[i].name for i in unit.layers] == [
        "layers.2.blocks.0." + n for n in ("norm1", "attn", "attn.qkv", "attn.proj", "norm2",
                                           "mlp.fc1", "mlp.fc2")]
    assert all(arch.layers[i].block == at + 1 for i in unit.layers)
    # ... and the sub-blocks DPIAT cut a unit into are one block again (LeViT: attention, MLP)
    levit = netgraft.trace(timm.create_model("levit_128s", num_classes=10, img_size=64),
                           torch.randn(1, 3, 64, 64))
    unit = next(b for b in levit.blocks if b.name == "stages.0.blocks.0")
    assert [levit.layers[i].name for i in unit.layers][::4] == [
        "stages.0.blocks.0.attn", "stages.0.blocks.0.attn.proj.ln.bn",
        "stages.0.blocks.0.mlp.ln2.bn"]
    assert not any(b.name.startswith("stages.0.blocks.0.") for b in levit.blocks)
    # blocks a unit already fills stay as they were: resnet18's basic blocks
    res = netgraft.trace(timm.create_model("resnet18", num_classes=10))
    assert [b.name for b in res.blocks][2:4] == ["layer1.0", "layer1.1"]
    assert {"layer1.0", "layer1.1"} <= res.residual
    # convolutional units keep DPIAT's grouping: a CSP stage stays one block
    csp = netgraft.trace(timm.create_model("cs3darknet_s", num_classes=10))
    assert "stages.1.blocks.0" in csp.residual and "stages.1" in [b.name for b in csp.blocks]
    assert not any(b.name.startswith("stages.1.blocks") for b in csp.blocks)


def test_tracing_keeps_every_submodules_train_flag():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU()).train()
    model[1].eval()  # a frozen norm in a model in training
    netgraft.trace(model, torch.randn(2, 3, 8, 8))
    netgraft.similarity(model, model)
    assert model.training and model[0].training and not model[1].training


def test_frozen_batch_norms_and_compiled_models_are_traced_like_the_others():
    """QA (session 16): FrozenBatchNorm2d (timm/torchvision; weight and bias are buffers) was a
    generic norm, so resnet10t and its frozen copy scored 0.52 and grafted with a gap of 1.8;
    a torch.compile'd model was traced through dynamo (dozens of warnings)."""
    from timm.utils.model import freeze

    x = torch.randn(2, 3, 32, 32)
    torch.manual_seed(0)
    plain = timm.create_model("resnet10t", num_classes=10).eval()
    frozen = timm.create_model("resnet10t", num_classes=10)
    freeze(frozen)  # batch norms → FrozenBatchNorm2d
    arch = netgraft.trace(frozen, x)
    assert {l.kind for l in arch.layers if "bn" in l.name} == {"batchnorm"}
    assert netgraft.similarity(netgraft.trace(plain, x), arch) == pytest.approx(1.0)
    report = netgraft.transfer(plain, frozen, example_input=x)
    assert report.function_gap < 1e-5 and report.coverage == 1.0
    # a plain stack of convs and frozen norms grown deeper: the new layer starts as the
    # identity, frozen norm included (review: set_identity read track_running_stats)
    from torchvision.ops import FrozenBatchNorm2d

    def stack(depth):
        layers = [nn.Conv2d(3, 8, 3, padding=1), FrozenBatchNorm2d(8), nn.ReLU()]
        for _ in range(depth - 1):
            layers += [nn.Conv2d(8, 8, 3, padding=1), FrozenBatchNorm2d(8), nn.ReLU()]
        return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4))

    report = netgraft.transfer(stack(2).eval(), stack(3), example_input=x)
    assert report.function_gap < 1e-5
    compiled = torch.compile(timm.create_model("resnet10t", num_classes=10), backend="eager")
    assert [l.name for l in netgraft.trace(compiled, x).layers] == [l.name for l in
                                                                    netgraft.trace(plain, x).layers]


@pytest.mark.parametrize("first, shape", [
    (nn.LSTM(6, 8, batch_first=True), (2, 16, 6)), (nn.GRU(6, 8), (16, 2, 6)),
    (nn.LSTMCell(6, 8), (2, 6)), (nn.Conv1d(3, 8, 3), (2, 3, 64)), (nn.Linear(5, 8), (2, 5))])
def test_an_example_input_is_guessed_from_the_first_layer(first, shape):
    """QA (session 23): a model starting with an LSTM was given an input guessed from its
    linear head; an inferred input holds 2 inputs (batch norms computing batch statistics)."""
    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.first, self.head = first, nn.Linear(8, 3)

        def forward(self, x):
            y = self.first(x)
            y = y[0] if isinstance(y, tuple) else y
            return self.head(y.reshape(-1, y.shape[-1]) if y.ndim != 3 or
                             isinstance(first, nn.RNNBase) else y.mean(-1))

    assert netgraft.trace(Model()).example_input.shape == shape


def test_tracing_without_an_example_input_does_not_draw_from_the_random_stream():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(4, 2))
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    netgraft.trace(model)
    assert torch.equal(torch.rand(3), expected)


def test_a_conv_classifier_pooled_into_the_output_is_still_the_head():
    """Review (session 16): the backbone rule (a layer whose maps are pooled into the output
    is no head) also took SqueezeNet's 1×1 conv classifier for features, so a 10-class head
    was adapted onto a 5-class one. The last layer with tensors, pooled, is the head; a body
    cut before its pooling ends in a norm and has none."""
    def all_conv(classes: int) -> nn.Sequential:
        return nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                             nn.Conv2d(16, classes, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                             nn.Flatten())

    x = torch.randn(2, 3, 32, 32)
    assert [l.role for l in netgraft.trace(all_conv(10), x).layers] == ["input", "", "output"]
    report = netgraft.transfer(all_conv(10), all_conv(5), example_input=x)
    head = next(r for r in report.pairs if r.target == "3")
    assert head.action == "init"  # class k of the source is not class k of the target
    body = nn.Sequential(*list(timm.create_model("resnet10t").children())[:-2],
                         nn.AdaptiveAvgPool2d(1), nn.Flatten())
    assert not [l for l in netgraft.trace(body, x).layers if l.role == "output"]


class _Shuffled(nn.Module):
    """Two convs concatenated, shuffled in two groups (ShuffleNet's view / transpose / view,
    or torch's channel_shuffle), then read by a conv."""

    def __init__(self, op: bool):
        super().__init__()
        self.op = op
        self.a, self.b = nn.Conv2d(3, 4, 1), nn.Conv2d(3, 4, 1)
        self.c = nn.Conv2d(8, 2, 1)

    def forward(self, x):
        y = torch.cat([self.a(x), self.b(x)], 1)
        if self.op:
            y = nn.functional.channel_shuffle(y, 2)
        else:
            n, c, h, w = y.shape
            y = y.view(n, 2, c // 2, h, w).transpose(1, 2).contiguous().view(n, c, h, w)
        return self.c(torch.relu(y))


@pytest.mark.parametrize("op", [False, True])
def test_a_channel_shuffle_interleaves_the_layout_it_reads(op):
    arch = netgraft.trace(_Shuffled(op), torch.randn(1, 3, 4, 4))
    assert arch["c"].in_layout == tuple((p, i, i + 1, 4) for i in range(4) for p in "ab")
    assert arch.shuffles == 1


def test_a_unit_dim_added_after_the_channels_is_no_shuffle():
    class Unit(nn.Module):  # two convs concatenated, then viewed as (n, c, 1, h, w)
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Conv2d(3, 4, 1), nn.Conv2d(3, 4, 1)
            self.c = nn.Conv3d(8, 2, 1)

        def forward(self, x):
            y = torch.cat([self.a(x), self.b(x)], 1)
            n, c, h, w = y.shape
            return self.c(y.view(n, c, 1, h, w))

    arch = netgraft.trace(Unit(), torch.randn(1, 3, 4, 4))
    assert arch["c"].in_layout == (("a", 0, 4, 4), ("b", 0, 4, 4)) and arch.shuffles == 0


def test_shuffled_layouts_keep_their_segments():
    from netgraft.trace import shuffled

    layout = (("a", 0, 6, 6),)
    assert shuffled(layout, 1) == layout
    assert shuffled(layout, 2) == (("a", 0, 1, 6), ("a", 3, 4, 6), ("a", 1, 2, 6),
                                   ("a", 4, 5, 6), ("a", 2, 3, 6), ("a", 5, 6, 6))
    assert shuffled(layout, 4) is None  # 6 channels do not split into 4 groups
    assert shuffled(layout, 6) == (("a", 0, 6, 6),)  # one channel per group: unchanged
    assert netgraft.trace(nn.Conv2d(3, 4, 1), torch.randn(1, 3, 4, 4)).shuffles == 0


def test_a_wrapped_model_gets_its_input_from_the_model_it_wraps():
    """QA (session 24): an nn.DataParallel around a ViT built for 32 px was probed at 64 px
    (its config is the wrapped model's) and the error ended in '..'."""
    import timm

    vit = timm.create_model("vit_tiny_patch16_224", img_size=32, patch_size=8, depth=1,
                            num_classes=10)
    arch = netgraft.trace(nn.DataParallel(vit))
    assert arch.input_shape == (2, 3, 32, 32)


def test_the_text_view_shows_the_shape_of_a_layer_without_a_weight():
    """QA (session 26): `netgraft inspect` printed an empty shape for ConvNeXt's layer scales
    and a ViT's class token / position embedding."""
    arch = netgraft.trace(timm.create_model("vit_tiny_patch16_224", img_size=32, patch_size=8,
                                            depth=1, init_values=1e-5))
    lines = str(arch).splitlines()
    assert any(line.rstrip().endswith("cls_token 1x1x192, pos_embed 1x17x192") for line in lines)
    assert any("blocks.0.ls1" in line and line.rstrip().endswith("gamma 192") for line in lines)
    assert any("patch_embed.proj" in line and line.rstrip().endswith("192x3x8x8") for line in lines)
