import pytest
import timm

import netgraft


@pytest.fixture(scope="module")
def archs():
    names = ["resnet18", "resnet34", "resnet50", "efficientnet_b0", "efficientnet_b1", "vit_tiny_patch16_224"]
    return {n: netgraft.trace(timm.create_model(n), name=n) for n in names}


@pytest.mark.parametrize("method", ["graft", "dpiat"])
def test_similarity_is_symmetric_bounded_and_one_for_identical(archs, method):
    from netgraft.match import dp_value
    from netgraft.similarity import similarity_from_values

    values = {(a, b): dp_value(archs[a], archs[b], method) for a in archs for b in archs}
    scores = {(a, b): netgraft.similarity(archs[a], archs[b], method)
              for a in archs for b in archs}
    for (a, b), s in scores.items():
        if a == b:
            assert s == pytest.approx(1.0)
        assert 0.0 <= s <= 1.0
        plain = similarity_from_values(values[a, b], values[b, a], values[a, a], values[b, b])
        if method == "dpiat" or not any(layer.gate for layer in archs[b].layers):
            assert s == pytest.approx(plain)
        else:  # the graft's S(a→b) leaves out b's blocks that stay gated off
            assert s <= plain + 1e-9
        if method == "dpiat":
            assert s == pytest.approx(scores[b, a])


def test_distant_pair_into_zero_init_residual_branches_scores_only_what_stays_open(archs):
    """timm's ResNets start every residual branch with a zero-initialised last norm; a
    distant graft keeps them shut, so a cross-family source scores only the stem, shortcuts
    and head, while a same-family source opens them and keeps its score."""
    from netgraft.match import dp_value
    from netgraft.similarity import similarity_from_values

    target = archs["resnet34"]
    assert sum(layer.gate for layer in target.layers) == 16  # one per basic block
    src = archs["efficientnet_b0"]
    plain = similarity_from_values(dp_value(src, target), dp_value(target, src),
                                   dp_value(src, src), dp_value(target, target))
    closed = netgraft.similarity(src, target)
    assert closed < 0.5 * plain
    assert netgraft.similarity(archs["resnet18"], target) > 0.8


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


def test_named_scores_include_the_papers_definition(archs):
    from netgraft.similarity import SCORES, score_pair

    assert {"paper", "graft", "coverage"} <= set(SCORES)
    a, b = archs["resnet18"], archs["resnet34"]
    assert score_pair(a, b, "paper") == pytest.approx(netgraft.similarity(a, b, "dpiat"))
    assert score_pair(a, a, "coverage") == pytest.approx(1.0)
    # every resnet34 layer has a same-shape resnet18 layer (repeated blocks reuse them)
    assert score_pair(a, b, "coverage") == pytest.approx(1.0)
    assert score_pair(archs["efficientnet_b0"], b, "coverage") < 0.2
    assert score_pair(a, b, "coverage") > score_pair(archs["vit_tiny_patch16_224"], b, "coverage")
    with pytest.raises(ValueError, match="unknown similarity score"):
        score_pair(a, b, "nope")


def test_validation_statistics_on_a_known_ranking():
    from benchmarks.similarity_validation import evaluate_scores

    rows = []
    for t, gains in {"T1": (0.3, 0.2, 0.1), "T2": (0.05, 0.25, 0.0)}.items():
        for s, g in zip(("A", "B", "C"), gains):
            rows.append({"source": s, "target": t, "s": g * 2 + 1, "r": -g,
                         "gain_step_50": g, "gain_epoch_1": g})
    table = evaluate_scores(rows, ["s", "r"])
    assert table["s"]["step_50"]["spearman"] == pytest.approx(1.0)
    assert table["s"]["step_50"]["top1"] == 1.0 and table["s"]["step_50"]["targets"] == 2
    assert table["r"]["epoch_1"]["spearman"] == pytest.approx(-1.0)
    assert table["r"]["epoch_1"]["top1"] == 0.0
    assert table["s"]["step_50"]["per_target"] == pytest.approx(1.0)
    assert table["r"]["step_50"]["per_target"] == pytest.approx(-1.0)


def _sensor_net(channels: int, first: str):
    """A 1-D time-series net whose first layer keeps the input's channels apart: a BatchNorm
    on the raw input or a depthwise conv, then the stem conv."""
    import torch.nn as nn
    head = (nn.BatchNorm1d(channels) if first == "norm"
            else nn.Conv1d(channels, channels, 5, padding=2, groups=channels))
    return nn.Sequential(head, nn.Conv1d(channels, 32, 5, padding=2), nn.BatchNorm1d(32),
                         nn.ReLU(), nn.Conv1d(32, 64, 3, padding=1), nn.BatchNorm1d(64),
                         nn.ReLU(), nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Linear(64, 5))


@pytest.mark.parametrize("first", ["norm", "depthwise"])
def test_input_channels_read_through_a_norm_or_depthwise_conv_are_the_datas(first):
    """Another number of sensor channels is the data's, not the network's: a stem that
    begins with a BatchNorm or a depthwise conv on the raw input scores as high as a plain one
    (it was 0.78 / 0.83 for 3 → 1 / 3 → 6 channels), and what follows is still compared."""
    import torch

    def arch(channels, width=32):
        model = _sensor_net(channels, first)
        if width != 32:
            model[1], model[2] = torch.nn.Conv1d(channels, width, 5, padding=2), torch.nn.BatchNorm1d(width)
            model[4] = torch.nn.Conv1d(width, 64, 3, padding=1)
        return netgraft.trace(model, torch.randn(2, channels, 64))

    three = arch(3)
    assert netgraft.similarity(three, arch(6)) == pytest.approx(1.0)
    if first == "norm":  # a 1-channel "depthwise" conv is a plain conv to the trace
        assert netgraft.similarity(three, arch(1)) == pytest.approx(1.0)
    narrower = netgraft.similarity(three, arch(6, width=16))
    assert 0.3 < narrower < 0.95  # the stem's width still counts


def test_a_value_below_a_threshold_never_reads_as_the_threshold():
    """QA (session 26): `rank` printed "similarity 0.099 … unrelated pair (similarity 0.10 <
    0.1)"; a value below a threshold is now shown rounded down."""
    from netgraft.similarity import below
    assert below(0.099) == "0.09" and below(0.3999) == "0.39" and below(0.2499) == "0.24"
    assert below(0.25) == "0.25" and below(0.0) == "0.00" and below(0.0627) == "0.06"
    assert below(0.29) == "0.29" and below(0.57) == "0.57"  # no float artefact
    # review (session 26): the artefact guard rounded 0.0999999999995 up to "0.10"
    assert below(0.0999999999995) == "0.09" and below(1e-05, 3) == "0.000"
    assert below(0.3999, 1) == "0.3" and below(0.123456, 4) == "0.1234"
