"""Incremental Network Quantization: partition, freezing, schedule, bad input."""

import pytest
import torch
import torch.nn.functional as F

import ttqlab
from ttqlab.convert import latent_weight


def model(seed=0):
    return ttqlab.models.lenet5(input_shape=(1, 8, 8), seed=seed)


def train_steps(m, opt, n=25, seed=0):
    g = torch.Generator().manual_seed(seed)
    for _ in range(n):
        x = torch.randn(16, 1, 8, 8, generator=g)
        y = torch.randint(0, 10, (16,), generator=g)
        opt.zero_grad()
        F.cross_entropy(m(x), y).backward()
        opt.step()


def test_step_returns_accumulated_fractions_and_freezes_that_much():
    m = model()
    inq = ttqlab.INQ(m, bits=5)
    got = []
    while not inq.done:
        got.append(inq.step())
        for _, _, q in inq.layers:
            assert q.fraction_frozen == pytest.approx(got[-1], abs=1e-4)
    assert got == [0.5, 0.75, 0.875, 1.0]


def test_magnitude_partition_freezes_largest_weights_first():
    m = model()
    before = {n: layer.weight.detach().abs().clone() for n, layer in
              ttqlab.convert.quantizable_layers(m)}
    inq = ttqlab.INQ(m, bits=5, strategy="magnitude")
    inq.step()
    for name, _, q in inq.layers:
        a = before[name]
        assert a[q.frozen_mask].min() >= a[~q.frozen_mask].max(), (
            "froze small weights before large ones (the reversed-sort bug)")


def test_random_partition_is_seeded_and_differs_from_magnitude():
    masks = []
    for seed in (0, 0, 1):
        inq = ttqlab.INQ(model(), strategy="random", seed=seed)
        inq.step()
        masks.append(inq.layers[0][2].frozen_mask.clone())
    assert torch.equal(masks[0], masks[1]) and not torch.equal(masks[0], masks[2])
    inq = ttqlab.INQ(model(), strategy="magnitude")
    inq.step()
    assert not torch.equal(masks[0], inq.layers[0][2].frozen_mask)


@pytest.mark.parametrize("make_opt", [
    lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=1e-2),
    lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4),
    lambda p: torch.optim.Adam(p, lr=1e-2, weight_decay=1e-2),
    lambda p: torch.optim.AdamW(p, lr=1e-2, weight_decay=0.1),
], ids=["sgd-momentum-wd", "nesterov", "adam-wd", "adamw"])
def test_frozen_weights_bit_identical_under_optimizers(make_opt):
    m = model()
    inq = ttqlab.INQ(m, bits=5)
    opt = make_opt(m.parameters())
    train_steps(m, opt, 5)  # build up momentum / Adam state before freezing
    inq.step()
    frozen = {n: (q.frozen_mask.clone(), layer.weight.detach().clone())
              for n, layer, q in inq.layers}
    train_steps(m, opt, 30, seed=1)
    for n, layer, _ in inq.layers:
        mask, w0 = frozen[n]
        w1 = layer.weight.detach()
        assert torch.equal(w1[mask], w0[mask])
        assert not torch.equal(w1[~mask], w0[~mask]), "free weights should keep training"


def test_frozen_positions_get_no_gradient():
    m = model()
    inq = ttqlab.INQ(m)
    inq.step()
    F.cross_entropy(m(torch.randn(4, 1, 8, 8)), torch.tensor([0, 1, 2, 3])).backward()
    for _, layer, q in inq.layers:
        grad = latent_weight(layer).grad
        assert bool((grad[q.frozen_mask] == 0).all())
        assert bool((grad[~q.frozen_mask] != 0).any())


@pytest.mark.parametrize("bits", [2, 3, 5])
def test_after_last_step_every_weight_is_in_the_level_set(bits):
    m = model()
    inq = ttqlab.INQ(m, bits=bits, schedule=(0.3, 0.6, 1.0))
    opt = torch.optim.Adam(m.parameters(), lr=1e-2)
    while not inq.done:
        inq.step()
        train_steps(m, opt, 5)
    for _, layer, q in inq.layers:
        levels = ttqlab.quantizers.pow2_levels(layer.weight, bits, int(q.n1))
        assert len(levels) == 2 * (2 ** (bits - 1) // 2) + 1
        assert bool(torch.isin(layer.weight.detach(), levels).all())


def test_n1_is_fixed_at_the_first_freeze():
    m = model()
    inq = ttqlab.INQ(m)
    w = latent_weight(m.conv2).detach()
    inq.step()
    n1 = int(inq.layers[0][2].n1)
    assert n1 == ttqlab.quantizers.inq_exponent_range(w, 5)[0]
    with torch.no_grad():
        latent_weight(m.conv2).mul_(8)  # the free weights grow a lot
    inq.step()
    assert int(inq.layers[0][2].n1) == n1


def test_accepts_model_already_prepared_with_quantize():
    m = ttqlab.quantize(model(), "inq", bits=4)
    inq = ttqlab.INQ(m, bits=4)
    assert inq.step() == 0.5
    with pytest.raises(ValueError, match="bits=5"):
        ttqlab.INQ(m, bits=5)
    with pytest.raises(ValueError, match="'inq'"):
        ttqlab.INQ(ttqlab.quantize(model(), "twn"))


def test_step_after_done_warns():
    inq = ttqlab.INQ(model(), schedule=(1.0,))
    assert inq.step() == 1.0
    with pytest.warns(UserWarning, match="already finished"):
        assert inq.step() == 1.0


def test_state_dict_resume():
    m = model()
    inq = ttqlab.INQ(m)
    inq.step()
    inq.step()
    state, sd = inq.state_dict(), m.state_dict()
    m2 = model(seed=3)
    inq2 = ttqlab.INQ(m2)
    m2.load_state_dict(sd)
    inq2.load_state_dict(state)
    assert inq2.fraction == 0.75
    assert inq2.step() == inq.step() == 0.875
    for (_, a, qa), (_, b, qb) in zip(inq.layers, inq2.layers):
        assert torch.equal(qa.frozen_mask, qb.frozen_mask)
        assert torch.equal(a.weight, b.weight)


@pytest.mark.parametrize(("edit", "match"), [
    ({"steps_taken": 5}, "steps_taken must be an int from 0 to 4"),
    ({"steps_taken": -1}, "steps_taken must be an int from 0 to 4"),
    ({"steps_taken": 2.0}, "steps_taken must be an int"),
    ({"steps_taken": True}, "steps_taken must be an int"),
    ({"strategy": "largest"}, "strategy must be one of"),
    ({"seed": "0"}, "seed must be an int"),
    ({"bits": 4}, "different schedule or bit width"),
], ids=["too-many", "negative", "float", "bool", "strategy", "seed", "bits"])
def test_load_state_dict_rejects_bad_states(edit, match):
    inq = ttqlab.INQ(model())
    inq.step()
    with pytest.raises(ValueError, match=match):
        inq.load_state_dict({**inq.state_dict(), **edit})
    assert inq.steps_taken == 1 and inq.fraction == 0.5  # untouched
    with pytest.raises(ValueError, match=r"INQ\.state_dict"):
        inq.load_state_dict({"steps_taken": 1})


def test_load_state_dict_takes_numpy_ints_as_ints():
    import numpy as np

    inq = ttqlab.INQ(model())
    inq.step()
    state = {**inq.state_dict(), "steps_taken": np.int64(1), "seed": np.int32(3)}
    inq2 = ttqlab.INQ(model())
    inq2.load_state_dict(state)
    assert type(inq2.steps_taken) is int and inq2.steps_taken == 1 and inq2.fraction == 0.5
    assert type(inq2.seed) is int and inq2.seed == 3


@pytest.mark.parametrize("schedule, match", [
    ((0.5, 0.4, 1.0), "increasing"),
    ((0.5, 0.75), "end at 1.0"),
    ((), "empty"),
    ((0.5, 1.5), r"\(0, 1\]"),
    ((0.0, 1.0), r"\(0, 1\]"),
    ("abc", "sequence"),
])
def test_bad_schedules(schedule, match):
    with pytest.raises(ValueError, match=match):
        ttqlab.INQ(model(), schedule=schedule)


def test_bad_strategy_and_bits():
    with pytest.raises(ValueError, match="strategy"):
        ttqlab.INQ(model(), strategy="largest")
    with pytest.raises(ValueError, match="bits"):
        ttqlab.INQ(model(), bits=1)
