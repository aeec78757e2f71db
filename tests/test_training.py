"""The training loop's pieces: batch order, schedule, optimizer groups, config checks."""

from __future__ import annotations

import pytest
import torch

from nlpforge.errors import UsageError
from nlpforge.training.batches import epoch_batches, split_by_length
from nlpforge.training.loop import TrainConfig, linear_schedule, make_optimizer


@pytest.mark.parametrize("grouped", [True, False])
def test_every_row_once_per_epoch(grouped):
    lengths = [(i * 37) % 101 for i in range(1000)]
    batches = epoch_batches(lengths, 16, torch.Generator().manual_seed(0), grouped)
    flat = [i for b in batches for i in b]
    assert sorted(flat) == list(range(1000))
    assert all(len(b) <= 16 for b in batches)
    again = epoch_batches(lengths, 16, torch.Generator().manual_seed(0), grouped)
    assert again == batches


def test_grouping_by_length_cuts_padding():
    lengths = [(i * 37) % 101 + 1 for i in range(3200)]

    def padded(batches):
        return sum(max(lengths[i] for i in b) * len(b) for b in batches)

    gen = torch.Generator().manual_seed(1)
    grouped = padded(epoch_batches(lengths, 32, gen, True))
    plain = padded(epoch_batches(lengths, 32, gen, False))
    assert grouped < 0.7 * plain


def _plan_cost(lengths, parts, cost):
    return sum(len(p) * max(lengths[i] for i in p) + cost for p in parts)


@pytest.mark.parametrize("seed", range(20))
def test_split_by_length_finds_the_cheapest_cuts(seed):
    """Every row once, runs of the length order, and no other cut of that order is cheaper."""
    import itertools
    import random

    rng = random.Random(seed)
    lengths = [rng.randint(1, 60) for _ in range(rng.randint(1, 9))]
    cost = rng.choice([0, 5, 20, 80])
    parts = split_by_length(lengths, cost)
    assert sorted(i for p in parts for i in p) == list(range(len(lengths)))
    ordered = [lengths[i] for p in parts for i in p]
    assert ordered == sorted(lengths)
    n, order = len(lengths), [i for p in parts for i in p]
    best = min(_plan_cost(lengths, [order[a:b] for a, b in zip((0, *cuts), (*cuts, n))], cost)
               for k in range(n) for cuts in itertools.combinations(range(1, n), k))
    assert _plan_cost(lengths, parts, cost) == best


def test_split_by_length_splits_only_when_padding_outweighs_a_pass():
    assert len(split_by_length([10] * 32)) == 1
    assert [len(p) for p in split_by_length([5] * 31 + [60], cost=80)] == [31, 1]
    mixed = [8] * 24 + [64] * 8
    parts = split_by_length(mixed, cost=80)
    assert [len(p) for p in parts] == [24, 8]  # saves 24 x 56 padded tokens for one more pass
    assert len(split_by_length(mixed, cost=24 * 56 + 1)) == 1


def test_cosine_and_constant_schedules():
    from nlpforge.training.optim import make_scheduler

    for name, last in (("cosine", 0.0), ("constant", 1.0)):
        opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
        sched = make_scheduler(name, opt, warmup=2, total=10)
        rates = []
        for _ in range(11):
            rates.append(sched.get_last_lr()[0])
            opt.step()
            sched.step()
        assert rates[:2] == pytest.approx([0.5, 1.0])
        assert rates[10] == pytest.approx(last, abs=1e-9)
        if name == "cosine":
            assert rates[6] == pytest.approx(0.5)


def test_linear_schedule_warms_up_then_decays():
    param = torch.nn.Parameter(torch.zeros(2, 2))
    opt = torch.optim.AdamW([param], lr=1.0)
    sched = linear_schedule(opt, warmup=4, total=10)
    rates = []
    for _ in range(10):
        rates.append(sched.get_last_lr()[0])
        opt.step()
        sched.step()
    assert rates[:4] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert rates[4] == pytest.approx(1.0) and rates[-1] == pytest.approx(1 / 6)


def test_no_weight_decay_on_biases_and_norms():
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.LayerNorm(4))
    groups = make_optimizer(model, 1e-3, 0.1).param_groups
    assert [len(g["params"]) for g in groups] == [1, 3]
    assert [g["weight_decay"] for g in groups] == [0.1, 0.0]


def test_the_fused_optimizer_makes_the_same_update_as_the_loop():
    torch.manual_seed(0)
    fused = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.LayerNorm(8))
    looped = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.LayerNorm(8))
    looped.load_state_dict(fused.state_dict())
    opt = make_optimizer(fused, 1e-2, 0.1)
    assert all(g["fused"] for g in opt.param_groups)
    ref = torch.optim.AdamW([{"params": [looped[0].weight], "weight_decay": 0.1},
                             {"params": [looped[0].bias, *looped[1].parameters()],
                              "weight_decay": 0.0}], lr=1e-2, foreach=False)
    x = torch.randn(16, 8)
    for _ in range(5):
        for model, optimizer in ((fused, opt), (looped, ref)):
            optimizer.zero_grad()
            model(x).pow(2).mean().backward()
            optimizer.step()
    for a, b in zip(fused.parameters(), looped.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)  # rounding only


@pytest.mark.parametrize("field, value, message", [
    ("epochs", 0, "--epochs must be positive"),
    ("batch_size", -1, "--batch-size must be positive"),
    ("max_steps", 0, "--max-steps must be a whole number of at least 1"),
    ("scheduler", "step", "--scheduler must be one of linear, cosine, constant"),
    ("eval_strategy", "steps", "--eval-strategy steps needs --eval-steps"),
    ("warmup_ratio", 1.5, "--warmup-ratio"),
    ("device", "tpu", "--device must be"),
])
def test_config_is_checked_before_work(field, value, message):
    config = TrainConfig(task="t", model="m", train="x", output="o", **{field: value})
    with pytest.raises(UsageError, match=message):
        config.check()
