import math

import pytest
import torch
import torch.nn as nn
from torch.optim.optimizer import register_optimizer_step_pre_hook

from netgraft.data import load_digits
from netgraft.training import TrainResult, evaluate, train


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    # These models are tiny; with 2 cores shared with other processes, torch's
    # 2-thread pool spends most of its time waiting (observed 10x slowdowns).
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def digits():
    return load_digits("train"), load_digits("test")


def mlp(seed=0, dropout=0.0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 64), nn.ReLU(), nn.Dropout(dropout), nn.Linear(64, 10))


def small_cnn(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Flatten(), nn.Linear(8 * 8 * 8, 10),
    )


class InfModel(nn.Module):
    """Produces +inf logits, so the very first loss is NaN."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(64, 10)

    def forward(self, x):
        return self.lin(x.flatten(1)) * float("inf")


def test_mlp_learns_digits(digits):
    tr, te = digits
    model = mlp()
    res = train(model, tr, steps=150, eval_data=te, eval_at=[0, 150], seed=0)
    assert isinstance(res, TrainResult) and not res.diverged
    (s0, acc0), (s1, acc1) = res.history
    assert (s0, s1) == (0, 150)
    assert acc0 < 0.3  # untrained: near chance
    assert acc1 > 0.8
    assert acc1 == evaluate(model, te)  # history reflects the returned model
    assert 0 < res.final_loss < 1.0 and res.seconds > 0


def test_cnn_with_batchnorm_and_sgd(digits):
    tr, te = digits
    res = train(small_cnn(), tr, steps=100, lr=0.05, optimizer="sgd", eval_data=te, eval_at=[100])
    assert res.history[-1][1] > 0.8 and not res.diverged


def test_history_in_order_and_steps_counted(digits):
    tr, te = digits
    counted = []
    model = mlp()
    model.register_forward_pre_hook(lambda m, inp: counted.append(m.training))
    # Unsorted/duplicated request; more steps than one epoch (1497 // 64 = 23).
    res = train(model, tr, steps=60, eval_data=te, eval_at=[60, 25, 0, 25, 5])
    assert [s for s, _ in res.history] == [0, 5, 25, 60]
    assert all(0.0 <= a <= 1.0 for _, a in res.history)
    assert counted.count(True) == 60  # exactly `steps` training forwards
    assert counted.count(False) == 4 * math.ceil(len(te) / 512)  # eval forwards


def test_zero_steps_only_evaluates(digits):
    tr, te = digits
    model = mlp()
    before = [p.clone() for p in model.parameters()]
    res = train(model, tr, steps=0, eval_data=te, eval_at=[0])
    assert [s for s, _ in res.history] == [0] and math.isnan(res.final_loss)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_training_is_deterministic_and_keeps_global_rng(digits):
    tr, te = digits
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    a, b = mlp(dropout=0.2), mlp(dropout=0.2)
    torch.manual_seed(123)
    ra = train(a, tr, steps=30, seed=5, eval_data=te, eval_at=[30])
    assert torch.equal(torch.rand(3), expected_next)  # caller's RNG untouched
    rb = train(b, tr, steps=30, seed=5, eval_data=te, eval_at=[30])
    assert ra.history == rb.history and ra.final_loss == rb.final_loss
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    rc = train(mlp(dropout=0.2), tr, steps=30, seed=6)
    assert rc.final_loss != ra.final_loss


def test_nan_loss_sets_diverged_without_raising(digits):
    tr, te = digits
    res = train(InfModel(), tr, steps=50, eval_data=te, eval_at=[0, 10, 50])
    assert res.diverged and not math.isfinite(res.final_loss)
    assert [s for s, _ in res.history] == [0]  # stopped before later eval points


def test_huge_lr_diverges(digits):
    tr, _ = digits
    res = train(mlp(), tr, steps=200, lr=1e6, optimizer="sgd")
    assert res.diverged and not math.isfinite(res.final_loss)


def test_warmup_is_linear_then_constant(digits):
    tr, _ = digits
    lrs = []
    handle = register_optimizer_step_pre_hook(
        lambda opt, args, kwargs: lrs.append(opt.param_groups[0]["lr"])
    )
    try:
        res = train(mlp(), tr, steps=6, lr=0.01, warmup_steps=4, optimizer="sgd")
    finally:
        handle.remove()
    assert not res.diverged
    assert lrs == pytest.approx([0.0025, 0.005, 0.0075, 0.01, 0.01, 0.01])


def test_evaluate_restores_mode_and_counts_correctly(digits):
    _, te = digits
    model = mlp()
    model.train()
    evaluate(model, te)
    assert model.training
    model.eval()
    evaluate(model, te)
    assert not model.training

    class AlwaysZero(nn.Module):
        def __init__(self):
            super().__init__()
            self.p = nn.Parameter(torch.zeros(()))

        def forward(self, x):
            # Predicts class 0 for everything: accuracy is the share of zeros.
            return torch.zeros(len(x), 10).index_fill_(1, torch.tensor([0]), 1.0)

    expected = (te.y == 0).float().mean().item()
    assert evaluate(AlwaysZero(), te, batch_size=7) == pytest.approx(expected)


def test_train_restores_mode(digits):
    tr, te = digits
    model = mlp().eval()
    train(model, tr, steps=3, eval_data=te, eval_at=[3])
    assert not model.training
    model.train()
    train(model, tr, steps=3)
    assert model.training


def test_tiny_dataset_smaller_than_batch(digits):
    tr, _ = digits
    res = train(mlp(), tr.subset(20), steps=5, batch_size=64)
    assert not res.diverged and math.isfinite(res.final_loss)


def test_argument_validation(digits):
    tr, te = digits
    with pytest.raises(ValueError, match="eval_data"):
        train(mlp(), tr, steps=5, eval_at=[5])
    with pytest.raises(ValueError, match="outside"):
        train(mlp(), tr, steps=5, eval_data=te, eval_at=[6])
    with pytest.raises(ValueError, match="optimizer"):
        train(mlp(), tr, steps=5, optimizer="lbfgs")


def test_progress_bar_runs(digits):
    tr, _ = digits
    res = train(mlp(), tr, steps=5, progress=True)
    assert not res.diverged


def test_precise_bn_evaluates_fresh_statistics_and_leaves_training_unchanged(digits):
    tr, te = digits
    plain, precise = small_cnn(), small_cnn()
    a = train(plain, tr, steps=30, lr=0.05, optimizer="sgd", eval_data=te, eval_at=[0, 10, 30])
    b = train(precise, tr, steps=30, lr=0.05, optimizer="sgd", eval_data=te, eval_at=[0, 10, 30],
              precise_bn=256)
    # the same updates and the same running statistics: only the evaluations differ
    for (ka, va), (kb, vb) in zip(plain.state_dict().items(), precise.state_dict().items()):
        assert ka == kb and torch.equal(va, vb)
    assert a.final_loss == b.final_loss and precise.training
    # what precise_bn reports is the accuracy with statistics re-estimated on 256 train images
    from netgraft.calibrate import recalibrate_norms
    recalibrate_norms(precise, tr.x[:256], batch_size=64)
    assert b.history[-1] == (30, evaluate(precise, te))
    assert [s for s, _ in b.history] == [0, 10, 30]
    assert b.history[1][1] != a.history[1][1]  # the running statistics lag after 10 steps
