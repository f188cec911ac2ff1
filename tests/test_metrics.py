import pytest
import torch
from torch import nn

from netgraft.metrics import ModelMetrics, count_flops, count_params, measure_latency, metrics


def test_linear_params_flops_latency():
    model = nn.Linear(10, 5)
    m = metrics(model, torch.randn(4, 10), latency_repeats=5)
    assert isinstance(m, ModelMetrics)
    assert m.params == 55 and m.trainable_params == 55
    assert m.flops == 2 * 10 * 5 * 4          # one multiply-add = 2 FLOPs, batch 4
    assert m.latency_ms is not None and 0 < m.latency_ms < 1000
    assert m.to_dict()["params"] == 55


def test_conv_flops_and_mode_restored():
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 2))
    model.train()
    m = metrics(model, torch.randn(1, 3, 8, 8), latency_repeats=3, threads=1)
    assert m.flops == 2 * 8 * 3 * 9 * 64 + 2 * 8 * 2   # conv (per output pixel) + linear
    assert m.params == (8 * 3 * 9 + 8) + 16 + (8 * 2 + 2)
    assert model.training                              # train mode restored
    assert model[1].num_batches_tracked.item() == 0    # eval mode: BN statistics untouched


def test_tied_and_frozen_params_counted_once():
    shared = nn.Linear(4, 4)
    model = nn.Sequential(shared, nn.ReLU(), shared)
    assert count_params(model) == 20
    model[0].bias.requires_grad_(False)
    assert count_params(model, trainable_only=True) == 16


def test_no_latency_and_tuple_input():
    class Two(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(3, 2)

        def forward(self, x, y):
            return self.a(x) + self.a(y)

    m = metrics(Two(), (torch.randn(1, 3), torch.randn(1, 3)), latency_repeats=0)
    assert m.latency_ms is None and m.flops == 2 * (2 * 3 * 2)
    assert count_flops(nn.Linear(3, 2), torch.randn(2, 3)) == 24
    with pytest.raises(ValueError):
        measure_latency(nn.Linear(3, 2), torch.randn(1, 3), repeats=0)
    with pytest.raises(TypeError):
        metrics("resnet18", torch.randn(1, 3))


def test_metrics_keep_every_submodules_mode_and_name_a_failing_input():
    """QA (session 16): metrics() set every submodule to the model's own mode (a training run's
    frozen batch norms went back to train) and let torch's error out of a conv."""
    from netgraft.errors import ModelForwardError

    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.AdaptiveAvgPool2d(1),
                          nn.Flatten(), nn.Linear(4, 2)).train()
    model[1].eval()
    metrics(model, torch.randn(1, 3, 16, 16), latency_repeats=2)
    assert model.training and not model[1].training
    with pytest.raises(ModelForwardError, match=r"failed on the example input \(1, 1, 16, 16\)"):
        metrics(model, torch.randn(1, 1, 16, 16), latency_repeats=2)
    assert model.training and not model[1].training
