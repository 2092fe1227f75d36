"""ttqlab.sequence_tasks: the temporal order problem (Hochreiter & Schmidhuber 1997) is
seeded, labelled by the order of its relevant tokens, and beyond any order-blind model."""

import itertools
import pickle

import pytest
import torch

import ttqlab
from ttqlab import sequence_tasks as tasks


def test_same_seed_same_tensors_other_seed_other_tensors():
    a = tasks.temporal_order(50, 20, seed=3)
    b = tasks.temporal_order(50, 20, seed=3)
    c = tasks.temporal_order(50, 20, seed=4)
    for x, y in zip(a.train.tensors + a.test.tensors, b.train.tensors + b.test.tensors):
        assert torch.equal(x, y)
    assert not torch.equal(a.train.tensors[0], c.train.tensors[0])
    assert not torch.equal(a.train.tensors[0][:20], a.test.tensors[0])  # test drawn apart


@pytest.mark.parametrize("relevant,length", [(2, 10), (3, 24), (4, 32)])
def test_the_label_is_the_order_of_the_relevant_tokens(relevant, length):
    data = tasks.temporal_order(300, 10, length=length, relevant=relevant, seed=1)
    x, y = data.train.tensors
    assert x.shape == (300, len(tasks.DISTRACTORS) + 2, length)
    assert torch.all(x.sum(1) == 1)  # one-hot: one token per step
    assert data.num_classes == 2 ** relevant and data.input_shape == (6, length)
    stretch = length // relevant
    for xi, yi in zip(x, y):
        s = tasks.tokens_of(xi)
        where = [i for i, ch in enumerate(s) if ch in "XY"]
        assert len(where) == relevant
        assert [i // stretch for i in where] == list(range(relevant))  # one per stretch
        assert data.classes[yi] == "".join(s[i] for i in where)
    assert set(y.tolist()) == set(range(2 ** relevant))  # every order occurs


@pytest.mark.parametrize("k", [1, 2, 3, 4, 5])
def test_bag_of_tokens_ceiling_by_enumeration(k):
    # the counts reveal only how many Y's: the best guess is right for one order per count
    orders = list(itertools.product("XY", repeat=k))
    counts = {o.count("Y") for o in orders}
    assert tasks.bag_of_tokens_ceiling(k) == pytest.approx(len(counts) / len(orders))
    assert tasks.bag_of_tokens_ceiling(k) == (k + 1) / 2 ** k


def test_an_order_blind_model_cannot_tell_two_orders_apart():
    data = tasks.temporal_order(40, 5, seed=0)
    x, y = data.train.tensors
    xi = x[next(i for i in range(len(y)) if data.classes[y[i]] == "XXY")].clone()
    s = tasks.tokens_of(xi)
    where = [i for i, ch in enumerate(s) if ch in "XY"]
    swapped = xi.clone()
    swapped[:, [where[0], where[2]]] = xi[:, [where[2], where[0]]]  # XXY -> YXX
    assert tasks.tokens_of(swapped)[where[0]] == "Y"
    bag = tasks.Builder("bag_of_tokens", data)(0)
    with torch.no_grad():
        assert torch.allclose(bag(xi[None]), bag(swapped[None]), atol=1e-6)
        for name in ("transformer", "gru", "lstm"):
            m = tasks.Builder(name, data)(0)
            assert not torch.allclose(m(xi[None]), m(swapped[None]), atol=1e-6), name


def test_builder_same_seed_same_weights_and_picklable():
    data = tasks.temporal_order(20, 5, seed=0)
    build = tasks.Builder("lstm", data, hidden=8)
    a, b = build(2), pickle.loads(pickle.dumps(build))(2)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert a(data.train.tensors[0][:3]).shape == (3, 8)
    assert "lstm" in repr(build) and "hidden=8" in repr(build)
    with pytest.raises(ValueError, match="unknown model 'rnn'; choose from"):
        tasks.Builder("rnn", data)


def test_split_validation_and_fit_work_on_the_task():
    data = tasks.temporal_order(200, 50, seed=0).split_validation(0.2, seed=0)
    assert len(data.train) + len(data.val) == 200 and abs(len(data.val) - 40) <= 4  # stratified
    assert len(data.test) == 50
    h = ttqlab.fit(tasks.Builder("gru", data, hidden=8)(0), data, epochs=1, progress=False)
    assert "val_acc" in h.last


@pytest.mark.parametrize("kwargs,match", [
    ({"relevant": 0}, r"relevant must be a whole number \(an int such as 5\) >= 1, got 0"),
    ({"n_train": 0}, r"n_train must be a whole number .* >= 1, got 0 \(int\)"),
    ({"length": 5, "relevant": 3}, r"length \(5\) must be at least 2 \* relevant"),
    ({"seed": -1}, r"seed must be a whole number .* >= 0, got -1"),
    ({"n_test": 2.5}, r"n_test must be a whole number .* >= 1, got 2.5 \(float\)"),
    ({"relevant": True}, r"relevant must be a whole number .* >= 1, got True \(bool\)"),
])
def test_bad_arguments_say_what_to_pass(kwargs, match):
    with pytest.raises(ValueError, match=match):
        tasks.temporal_order(**kwargs)


def test_tokens_of_refuses_a_batch():
    x = tasks.temporal_order(3, 1, seed=0).train.tensors[0]
    with pytest.raises(ValueError, match=r"one sample of shape \(6, length\)"):
        tasks.tokens_of(x)
