import timm
import torch
from torch import nn

import netgraft
from netgraft.match.dp import align


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
