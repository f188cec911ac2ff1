import importlib

import pytest
import timm
import torch
from torch import nn

import netgraft
from netgraft.match.dp import align

matching = importlib.import_module("netgraft.match")  # the module (netgraft.match is the function)


def test_dp_aligns_in_order_and_skips():
    # targets (rows) x sources (columns)
    scores = [[1.0, 0.0, 0.0],
              [0.0, 0.0, 1.0],
              [0.0, 0.0, 0.5]]
    value, pairs = align(scores, 3)
    assert pairs == [(0, 0), (1, None), (2, 1), (2, 2)]  # source 1 skipped, source 2 runs over 2 targets
    assert value == 1.0 + 1.5 / 2 ** 0.5


def test_dp_leaves_zero_score_target_unmatched():
    value, pairs = align([[0.0], [0.0]], 1)
    assert value == 0.0 and pairs == [(None, 0), (None, 1), (0, None)]  # the source is skipped too


@pytest.mark.parametrize("values", ["uniform", "ties", "sparse"])
def test_the_vectorised_dp_fills_exactly_what_the_authors_loop_fills(values):
    """Large lists use a row-wise numpy fill; on 600 random score tables of up to 40×40 (with
    ties and zero columns) it gives the loop's values and back-pointers bit for bit, so the
    same pairs."""
    import random

    from netgraft.match.dp import _fill_loop, _fill_rows

    rng = random.Random(0)
    draw = {"uniform": rng.random, "ties": lambda: rng.choice([0.0, 0.25, 0.5, 0.5, 1.0]),
            "sparse": lambda: rng.choice([0.0, 0.0, rng.random()])}[values]
    for _ in range(200):
        n, m = rng.randint(0, 40), rng.randint(0, 40)
        scores = [[draw() for _ in range(m)] for _ in range(n)]
        assert _fill_rows(scores, n, m) == _fill_loop(scores, n, m)


def test_identical_architectures_match_one_to_one():
    a = netgraft.trace(timm.create_model("resnet18"))
    b = netgraft.trace(timm.create_model("resnet18"))
    for method in ("dpiat", "graft"):
        m = netgraft.match(a, b, method)
        assert all(t == s for t, s in m.named_pairs())


def test_graft_matches_layer_norms_and_dpiat_does_not():
    a = netgraft.trace(timm.create_model("vit_tiny_patch16_224"))
    b = netgraft.trace(timm.create_model("vit_small_patch16_224"))
    dpiat = dict(netgraft.match(a, b, "dpiat").named_pairs())
    graft = dict(netgraft.match(a, b, "graft").named_pairs())
    assert dpiat["blocks.0.norm1"] is None
    assert graft["blocks.0.norm1"] == "blocks.0.norm1"
    assert graft[""] == ""  # class token and position embedding
    assert sum(v is not None for v in graft.values()) > sum(v is not None for v in dpiat.values())


def test_deeper_target_reuses_source_blocks():
    a = netgraft.trace(timm.create_model("resnet18"))
    b = netgraft.trace(timm.create_model("resnet34"))
    m = netgraft.match(a, b)
    assert m.matched == len(b.layers)  # every layer of the deeper net gets a source
    # the 3 blocks of resnet34's stage 1 come from resnet18's 2 blocks of stage 1
    assert {m.source_of(f"layer1.{i}.conv1").split(".")[0] for i in range(3)} == {"layer1"}


def test_a_containing_target_is_matched_by_role_when_shapes_mislead():
    """mobilenetv2_050 → _100: ×2 wider, so within a stage the target's later blocks have the
    shapes of the source's first (downsampling) block; pairing by shape alone leaves that
    block without a target. Pairing first blocks with first blocks finds the containment."""
    a = netgraft.trace(timm.create_model("mobilenetv2_050"))
    b = netgraft.trace(timm.create_model("mobilenetv2_100"))
    m = netgraft.match(a, b)
    assert all(m.source_of(f"blocks.{s}.0.conv_pw") == f"blocks.{s}.0.conv_pw" for s in range(1, 7))
    assert {s for s in m.pairs.values() if s is not None} == {layer.index for layer in a.layers}
    # a target that already holds every source layer keeps the shape-score matching, repeats
    # included: efficientnet_b1's second stage-0 block repeats efficientnet_b0's only one
    e = netgraft.match(netgraft.trace(timm.create_model("efficientnet_b0")),
                       netgraft.trace(timm.create_model("efficientnet_b1")))
    assert e.source_of("blocks.0.1.conv_dw") == "blocks.0.0.conv_dw"


def _convnext(name: str, gamma: float | None = None) -> nn.Module:
    torch.manual_seed(0)
    model = timm.create_model(name, num_classes=10, in_chans=1)
    if gamma is not None:  # a trained ConvNeXt: its layer scales have grown
        with torch.no_grad():
            for n, p in model.named_parameters():
                if n.endswith("gamma"):
                    p.fill_(gamma)
    return model


def test_layer_scale_gates_are_traced_and_shut_blocks_do_not_count():
    from netgraft.match import dp_value, gated_off, match

    x = torch.randn(1, 1, 32, 32)
    atto = netgraft.trace(_convnext("convnext_atto"), x, name="convnext_atto")
    gates = [layer for layer in atto.layers if layer.gate]
    # one gate per ConvNeXt block (2+2+6+2), nothing else (norm weights are 1, not ~0)
    assert len(gates) == 12 and all(layer.kind == "param" for layer in gates)
    resnet = netgraft.trace(timm.create_model("resnet18", num_classes=10, in_chans=1), x,
                            name="resnet18")
    # a ResNet's gates are the zero-initialised last norms of its residual branches
    assert [layer.name for layer in resnet.layers if layer.gate] == [
        f"layer{s}.{b}.bn2" for s in range(1, 5) for b in range(2)]
    assert all(layer.kind == "batchnorm" for layer in resnet.layers if layer.gate)

    # a ResNet has no layer scale to copy: every ConvNeXt block stays shut, and what the
    # graft puts in them is left out of S(resnet → convnext)
    m = match(resnet, atto)
    shut = gated_off(atto, m.pairs)
    assert len(shut) == 12
    in_shut = sum(m.scores[i] for b in shut for i in atto.blocks[b].layers)
    assert in_shut > 1.0
    total = sum(m.scores.values())
    raw = dp_value(resnet, atto)  # the plain DP value
    assert m.plain_value == pytest.approx(raw)
    assert m.value == pytest.approx(raw * (1 - in_shut / total))

    # a trained ConvNeXt source copies its (open) scales into the target: nothing is shut
    femto = netgraft.trace(_convnext("convnext_femto"), x, name="convnext_femto")
    trained = netgraft.trace(_convnext("convnext_atto", gamma=0.5), x, name="convnext_atto")
    m2 = match(trained, femto)
    assert gated_off(femto, m2.pairs) == []
    assert m2.value == pytest.approx(sum(m2.scores.values()))
    # so the same-family score is untouched while the cross-family one drops
    assert netgraft.similarity(trained, femto) > 0.6
    assert netgraft.similarity(resnet, femto) < 0.1


def test_kernels_of_another_dimensionality_do_not_match_but_pointwise_convs_do():
    def net(conv, k):
        return nn.Sequential(conv(3, 16, k), nn.ReLU(), conv(16, 32, 1))

    one_d = netgraft.trace(net(nn.Conv1d, 7), torch.randn(1, 3, 32))
    two_d = netgraft.trace(net(nn.Conv2d, 3), torch.randn(1, 3, 16, 16))
    m = netgraft.match(one_d, two_d)
    assert m.source_of("0") is None  # a 7-tap kernel says nothing about a 3×3 one
    assert m.source_of("2") == "2" and m.scores[two_d["2"].index] == 0.5  # both pointwise
    assert netgraft.match(two_d, two_d).source_of("0") == "0"


def test_a_stage_flattened_in_one_model_only_is_cut_like_the_other():
    """DPIAT's standardisation flattens edgenext_xx_small's last stage (downsampling norm and
    conv, a conv block and a transposed-attention block: more single layers than blocks) into
    one block, and keeps edgenext_x_small's (three blocks) cut. The flat block DP then left the
    target's downsampling at init and filled the attention block's norms from the head's norm.
    Regrouped as if not flattened, every layer of that stage gets its namesake."""
    x = torch.randn(1, 3, 64, 64)
    source = netgraft.trace(timm.create_model("edgenext_xx_small", num_classes=10), x)
    target = netgraft.trace(timm.create_model("edgenext_x_small", num_classes=10), x)
    assert "stages.3" in [b.name for b in source.blocks]  # flattened in the source only
    assert "stages.3" not in [b.name for b in target.blocks]
    m = netgraft.match(source, target)
    stage = [(t, s) for t, s in m.named_pairs() if t.startswith("stages.3.")]
    assert len(stage) == 23 and all(s is not None for _, s in stage)
    assert m.source_of("stages.3.downsample.1") == "stages.3.downsample.1"
    # the last (attention) block from the source's last, the repeated conv block from its conv
    # block: names equal but for the block index
    last = {"0": "0", "1": "0", "2": "1"}
    for t, s in stage:
        parts = t.split(".")
        if parts[2] == "blocks":
            parts[3] = last[parts[3]]
        assert s == ".".join(parts), (t, s)
    assert [t for t, s in m.named_pairs() if s == "head.norm"] == ["head.norm"]
    # a model flattened in both, or in neither, keeps its blocks
    same = netgraft.match(source, source)
    assert all(t == s for t, s in same.named_pairs())
    # the other way round (a shrink) every target layer has a source too
    back = netgraft.match(target, source)
    assert all(s is not None for _, s in back.named_pairs())
    # cut like the other, cs3darknet_m's flattened stage 1 would leave four of cs3darknet_l's
    # convs unmatched: the matching that fills more of the target is kept
    small = netgraft.trace(timm.create_model("cs3darknet_m", num_classes=10), x)
    large = netgraft.trace(timm.create_model("cs3darknet_l", num_classes=10), x)
    assert "stages.1" in [b.name for b in small.blocks]
    assert "stages.1" not in [b.name for b in large.blocks]
    assert all(s is not None for _, s in netgraft.match(small, large).named_pairs())
    # models of two classes are not cut like each other (convnext and edgenext share module
    # names, not parts)
    import importlib

    matching = importlib.import_module("netgraft.match")
    convnext = netgraft.trace(timm.create_model("convnext_atto", num_classes=10), x)
    m = matching.get_method("graft")
    plain = matching._matched(convnext, source, m, *m.both(convnext, source))
    assert netgraft.match(convnext, source).pairs == plain.pairs


def test_repvit_shrink_pairs_no_depthwise_conv_with_a_dense_one():
    """repvit_m1_1 → m1_0 (narrower, one block more in stage 2): the block DP paired a token
    mixer (depthwise 3×3) with a channel mixer (dense 1×1) on the strength of their norms; the
    graft's outputs were ~5e3× the source's and it warned "badly scaled". Within one family a
    depthwise conv never fills a dense one; the similarity (the plain DP's value) is kept."""
    import warnings

    torch.manual_seed(0)
    src = timm.create_model("repvit_m1_1", num_classes=10).eval()
    tgt = timm.create_model("repvit_m1_0", num_classes=10).eval()
    a, b = netgraft.trace(src), netgraft.trace(tgt)
    m = netgraft.match(a, b)
    mixed = [b.layers[t].name for t, s in m.pairs.items()
             if s is not None and a.layers[s].kind == b.layers[t].kind == "conv"
             and a.layers[s].depthwise != b.layers[t].depthwise]
    assert mixed == []
    plain = matching._aligned(a, b, matching.get_method("graft"), *matching.get_method(
        "graft").both(a, b))
    assert m.plain_value == plain.plain_value and m.value == pytest.approx(plain.value, rel=1e-3)
    assert sum(s is not None for s in m.pairs.values()) > 0.9 * len(b.layers)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        report = netgraft.transfer(src, tgt)
    assert not [w for w in caught if "badly scaled" in str(w.message)]
    assert report.coverage > 0.9
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        ratio = (tgt(x).std() / src(x).std()).item()
    assert 0.5 < ratio < 2.0  # was ~5e3


def test_a_plain_stack_grown_deeper_and_wider_keeps_each_conv_on_its_stride():
    """A plain conv stack with batch norms, 16, 32 → 24, 48 wide and one conv a stage → two:
    shape scores put the strided source conv on the new stride-1 24→24 conv, and the strided
    24→48 conv got nothing (coverage 17.6%, no function). Keeping each conv on its own stride
    makes the target hold the source, so that matching is taken; the similarity is kept."""
    def stack(widths, per) -> nn.Sequential:
        layers, c = [], 3
        for i, w in enumerate(widths):
            for j in range(per):
                layers += [nn.Conv2d(c, w, 3, stride=2 if j == 0 and i > 0 else 1, padding=1),
                           nn.BatchNorm2d(w), nn.ReLU()]
                c = w
        return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, 10))

    x = torch.randn(2, 3, 16, 16)
    a, b = netgraft.trace(stack((16, 32), 1), x), netgraft.trace(stack((24, 48), 2), x)
    m = netgraft.match(a, b)
    named = dict(m.named_pairs())
    assert named["6"] == "3" and named["7"] == "4"  # the strided conv and its norm
    assert all(b[t].stride == a[s].stride for t, s in named.items()
               if s is not None and b[t].kind == "conv")
    assert matching.embeds(m, classifier=False)
    plain = matching._aligned(a, b, matching.get_method("graft"), *matching.get_method(
        "graft").both(a, b))
    assert m.plain_value == plain.plain_value and not matching.embeds(plain, classifier=False)


def _pooled_stack(pools: int) -> nn.Sequential:
    """Two stride-1 convs of one shape, with `pools` max-pools before the second."""
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), *[nn.MaxPool2d(2)] * pools,
                         nn.Conv2d(8, 8, 3, padding=1))


def test_each_conv_records_the_resolution_it_reads_and_pools_set_pairs_apart():
    """A max-pool has no parameters (no traced layer): the input resolution each conv reads
    is what tells a conv past a pooling step from one before it, like a stride would. Two
    traces on inputs of other sizes do not compare resolutions (unknown, as before)."""
    arch = netgraft.trace(_pooled_stack(1), torch.randn(1, 3, 16, 16))
    assert [layer.in_size for layer in arch.layers] == [(16, 16), (8, 8)]
    plain = netgraft.trace(_pooled_stack(0), torch.randn(1, 3, 16, 16))
    apart = matching._steps_apart(plain, arch)
    assert not apart(plain.layers[0], arch.layers[0]) and apart(plain.layers[1], arch.layers[1])
    other = netgraft.trace(_pooled_stack(0), torch.randn(1, 3, 32, 32))
    assert not matching._steps_apart(other, arch)(other.layers[1], arch.layers[1])


def test_vgg_grown_deeper_pairs_no_conv_across_a_pool_and_keeps_its_dp_value():
    """vgg11_bn → vgg16_bn: stages 4 and 5 have the same 512→512 convs, and the DP put a
    stage-5 conv on stage 4's third. The fallback keeps every conv on its resolution; the
    value (similarity, the zoo's cache) stays the plain DP's."""
    import torchvision

    x = torch.randn(1, 3, 32, 32)
    src = netgraft.trace(torchvision.models.vgg11_bn(num_classes=10), x)
    tgt = netgraft.trace(torchvision.models.vgg16_bn(num_classes=10), x)
    found = matching.match(src, tgt)
    assert found.value == matching.dp_value(src, tgt)
    assert matching.contains(found, classifier=False)
    crossing = [(tgt.layers[t].name, src.layers[s].name) for t, s in found.pairs.items()
                if s is not None and tgt.layers[t].kind == "conv"
                and tgt.layers[t].in_size != src.layers[s].in_size]
    assert crossing == []


def test_memoised_graft_scores_equal_the_scores_they_stand_for():
    """Session 32: ranking a zoo scores one target against every entry, layer pair by layer
    pair (1.5M pairs for efficientnet_b2 against 50 entries). Layers whose `graft_key` is
    equal score alike, so the default method's scores are memoised by it: efficientnet_b0's
    layers have far fewer keys than layers, and every memoised score is the score itself."""
    from netgraft.match.scores import GraftScores, graft_score

    a = netgraft.trace(timm.create_model("efficientnet_b0", num_classes=10))
    b = netgraft.trace(timm.create_model("resnet18", num_classes=10, in_chans=1),
                       torch.randn(1, 1, 32, 32))
    memo = GraftScores()
    ka, kb = memo.keys(a.layers), memo.keys(b.layers)
    assert len(set(ka)) < len(a.layers) // 2
    for i, s in enumerate(a.layers):
        for j, t in enumerate(b.layers):
            assert memo.score(ka[i], kb[j], s, t) == graft_score(s, t)
            assert memo.score(kb[j], ka[i], t, s) == graft_score(t, s)
    assert memo.keys(a.layers) == ka  # the same numbers on a second use
    # matching with the memo equals matching without it (the aligner's memo switched off)
    match_module = importlib.import_module("netgraft.match")
    with_memo = netgraft.match(a, b)
    previous = match_module._GRAFT_SCORES.score
    try:
        match_module._GRAFT_SCORES.score = lambda x, y, s, t: graft_score(s, t)
        without = netgraft.match(a, b)
    finally:
        match_module._GRAFT_SCORES.score = previous
    assert with_memo.pairs == without.pairs and with_memo.value == without.value
