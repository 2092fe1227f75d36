"""ttqlab.starts: a converged start is trained once, cached safely, and rebuilt when the
cache cannot be trusted; the validation split it is chosen on."""

import dataclasses
import json
import warnings

import numpy as np
import pytest
import torch

import ttqlab
from ttqlab import starts
from ttqlab.starts import Recipe, cache_key, pretrain

RECIPE = Recipe(epochs=2, lr=1e-2, batch_size=32)


@pytest.fixture(scope="module")
def data():
    return ttqlab.data.load("synthetic", n_train=160, n_test=64, seed=0).split_validation()


def build(data):
    return lambda s: ttqlab.models.mlp(input_shape=data.input_shape,
                                        num_classes=data.num_classes, hidden=(16,), seed=s)


def _same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


# ------------------------------------------------------------------ the validation split


def test_split_validation_is_disjoint_stratified_and_fixed_by_seed():
    full = ttqlab.data.load("synthetic", n_train=200, n_test=50, seed=0)
    a, b = full.split_validation(0.2, seed=1), full.split_validation(0.2, seed=1)
    c = full.split_validation(0.2, seed=2)
    assert torch.equal(a.val.tensors[0], b.val.tensors[0])
    assert not torch.equal(a.val.tensors[0], c.val.tensors[0])
    assert len(a.train) + len(a.val) == len(full.train) and a.test is full.test
    rows = {tuple(r.tolist()) for r in full.train.tensors[0].flatten(1)}
    train = {tuple(r.tolist()) for r in a.train.tensors[0].flatten(1)}
    val = {tuple(r.tolist()) for r in a.val.tensors[0].flatten(1)}
    assert not train & val and train | val == rows
    y, yv = full.train.tensors[1], a.val.tensors[1]
    for k in torch.unique(y):  # every class keeps its share
        assert int((yv == k).sum()) == round(0.2 * int((y == k).sum()))
    assert a.val_split == {"fraction": 0.2, "seed": 1}
    assert f"/ {len(a.val)} val" in repr(a)


@pytest.mark.parametrize("fraction, message", [(0, "in \\(0, 1\\)"), (1.0, "in \\(0, 1\\)"),
                                               ("0.1", "number"), (1e-6, "both need")])
def test_split_validation_refuses_bad_fractions(fraction, message):
    full = ttqlab.data.load("synthetic", n_train=50, n_test=10, seed=0)
    with pytest.raises(ValueError, match=message):
        full.split_validation(fraction)


def test_split_validation_twice_is_refused(data):
    with pytest.raises(ValueError, match="already has a validation split"):
        data.split_validation()


def test_fit_reports_on_validation_and_never_on_test(data):
    model = build(data)(0)
    h = ttqlab.fit(model, data, epochs=2, lr=1e-2)
    assert h.heldout == "val"
    for row in h.epochs:
        assert "val_acc" in row and "val_loss" in row and "test_acc" not in row
    assert h.last["val_acc"] == pytest.approx(ttqlab.evaluate(model, data.val)[1])
    assert "val_acc" in repr(h) and "val_acc" in h.table()


# ------------------------------------------------------------------ cache key


def test_cache_key_changes_with_every_ingredient(data):
    model = build(data)(0)
    key = cache_key(model, data, RECIPE, 0)
    assert key == cache_key(build(data)(0), data, RECIPE, 0)  # same ingredients, same key
    others = [cache_key(model, data, RECIPE, 1),
              cache_key(build(data)(1), data, RECIPE, 0),  # other initial weights
              cache_key(ttqlab.models.mlp(input_shape=data.input_shape, hidden=(17,),
                                          num_classes=data.num_classes, seed=0),
                        data, RECIPE, 0),
              cache_key(model, data.__class__.split_validation(
                  dataclasses.replace(data, train=data.train, val=None), 0.2), RECIPE, 0)]
    for field, value in [("epochs", 3), ("lr", 2e-2), ("optimizer", "sgd"),
                         ("lr_schedule", None), ("batch_size", 64), ("weight_decay", 1e-4)]:
        others.append(cache_key(model, data, dataclasses.replace(RECIPE, **{field: value}),
                                0))
    x, y = data.train.tensors
    x2 = x.clone()
    x2[0, 0, 0, 0] += 1e-3  # one input value
    others.append(cache_key(model, dataclasses.replace(
        data, train=torch.utils.data.TensorDataset(x2, y)), RECIPE, 0))
    assert key not in others and len(set(others)) == len(others)


# ------------------------------------------------------------------ cache


def test_a_start_is_trained_once_then_read_back(data, tmp_path, monkeypatch):
    first = pretrain(build(data), data, 0, RECIPE, root=tmp_path)
    assert not first.cached and first.seconds > 0
    files = sorted(p.name for p in (tmp_path / "starts").iterdir())
    assert files == [f"start-{first.key}.json", f"start-{first.key}.safetensors"]

    def no_training(*a, **k):
        raise AssertionError("trained although the start was cached")

    monkeypatch.setattr(starts, "fit", no_training)
    again = pretrain(build(data), data, 0, RECIPE, root=tmp_path)
    assert again.cached and _same_weights(first.model, again.model)
    assert json.dumps(again.history.epochs) == json.dumps(first.history.epochs)  # NaN at 0
    assert again.seconds == pytest.approx(first.seconds)
    assert again.plateau == first.plateau and again.plateau["split"] == "val"


def test_same_seed_same_start_without_the_cache(data, tmp_path):
    a = pretrain(build(data), data, 3, RECIPE, cache=False, root=tmp_path)
    b = pretrain(build(data), data, 3, RECIPE, cache=False, root=tmp_path)
    assert _same_weights(a.model, b.model) and not a.cached and not b.cached
    assert not (tmp_path / "starts").exists()  # cache=False writes nothing


def _damage_weights(path):
    raw = bytearray(path.read_bytes())
    raw[-3] ^= 0xFF
    path.write_bytes(bytes(raw))


def _damage_manifest(path):
    doc = json.loads(path.read_text())
    doc["history"]["epochs"][-1]["val_acc"] = 1.0  # a better-looking curve
    path.write_text(json.dumps(doc))


def _foreign_manifest(path):
    doc = json.loads(path.read_text())
    doc["key"] = "0" * 64
    doc["manifest_sha256"] = starts._manifest_digest(doc)
    path.write_text(json.dumps(doc))


def _huge_manifest(path):
    path.write_text(" " * (starts._MAX_MANIFEST + 1) + "{}")


def _not_json(path):
    path.write_text("{not json")


@pytest.mark.parametrize("damage, which, why", [
    (_damage_weights, "safetensors", "weights checksum"),
    (_damage_manifest, "json", "manifest checksum"),
    (_foreign_manifest, "json", "another"),
    (_huge_manifest, "json", "larger than"),
    (_not_json, "json", ""),
])
def test_a_damaged_or_foreign_entry_is_rebuilt_never_used(data, tmp_path, damage, which, why):
    good = pretrain(build(data), data, 0, RECIPE, root=tmp_path)
    path = tmp_path / "starts" / f"start-{good.key}.{which}"
    damage(path)
    with pytest.warns(UserWarning, match=f"ignoring the cached start.*{why}"):
        rebuilt = pretrain(build(data), data, 0, RECIPE, root=tmp_path)
    assert not rebuilt.cached and _same_weights(rebuilt.model, good.model)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the rewritten entry is good again
        assert pretrain(build(data), data, 0, RECIPE, root=tmp_path).cached


def test_weights_of_another_shape_are_refused(data, tmp_path):
    good = pretrain(build(data), data, 0, RECIPE, root=tmp_path)
    from safetensors.torch import save_file

    weights = tmp_path / "starts" / f"start-{good.key}.safetensors"
    state = {k: torch.zeros(2) for k in good.model.state_dict()}  # small, right names
    save_file(state, str(weights))
    doc = json.loads(weights.with_suffix(".json").read_text())
    doc["bytes"], doc["sha256"] = weights.stat().st_size, starts._sha256(weights)
    doc["manifest_sha256"] = starts._manifest_digest(doc)
    weights.with_suffix(".json").write_text(json.dumps(doc))
    with pytest.warns(UserWarning, match="in the file"):
        assert not pretrain(build(data), data, 0, RECIPE, root=tmp_path).cached


def test_a_symlinked_entry_is_refused(data, tmp_path):
    good = pretrain(build(data), data, 0, RECIPE, root=tmp_path)
    weights = tmp_path / "starts" / f"start-{good.key}.safetensors"
    elsewhere = tmp_path / "elsewhere.safetensors"
    weights.rename(elsewhere)
    weights.symlink_to(elsewhere)
    with pytest.warns(UserWarning, match="symbolic link"):
        assert not pretrain(build(data), data, 0, RECIPE, root=tmp_path).cached


@pytest.mark.parametrize("kwargs, message", [
    ({"epochs": 0}, r"Recipe.epochs must be a whole number .*>= 1, got 0 \(int\)"),
    ({"epochs": True}, r"Recipe.epochs must be .*, got True \(bool\)"),
    ({"epochs": 40.0}, r"Recipe.epochs must be .*, got 40.0 \(float\)"),
    ({"lr": 0}, r"Recipe.lr must be a finite number > 0, got 0 \(int\); e.g. 1e-2"),
    ({"lr": float("nan")}, r"Recipe.lr must be a finite number > 0, got nan"),
    ({"lr": "1e-2"}, r"Recipe.lr must be .*, got '1e-2' \(str\)"),
    ({"batch_size": 0}, r"Recipe.batch_size must be a whole number .*>= 1, got 0"),
    ({"weight_decay": -1e-4}, r"Recipe.weight_decay must be a finite number >= 0, got -0.0001"),
    ({"optimizer": torch.optim.SGD}, "optimizer")])
def test_recipe_refuses_bad_values(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Recipe(**kwargs)


def test_recipe_takes_numpy_numbers_as_python_ones():
    r = Recipe(epochs=np.int64(3), lr=np.float32(0.5), batch_size=np.int32(8))
    assert (type(r.epochs), type(r.lr), type(r.batch_size)) == (int, float, int)
    assert r.fit_kwargs()["epochs"] == 3 and str(r).startswith("3 epochs, adam lr 0.5,")
    assert type(Recipe(lr=1).lr) is int  # a python number is kept as given: same cache key


def test_recipe_reads_like_a_sentence():
    assert str(Recipe()) == "40 epochs, adam lr 0.01, cosine schedule, batch 64"


def test_curves_and_dashboard_read_the_validation_split(data):
    import matplotlib

    matplotlib.use("Agg")
    from ttqlab import viz

    h = ttqlab.fit(build(data)(0), data, epochs=1)
    fig = viz.learning_curves({"fp32": h})
    labels = [line.get_label() for ax in fig.axes for line in ax.get_lines()]
    assert "fp32 val" in labels and not any("test" in lab for lab in labels)


def test_pretrain_seeds_is_pretrain_for_each_seed(data, tmp_path):
    many = starts.pretrain_seeds(build(data), data, [1, 0], RECIPE, root=tmp_path,
                                 progress=False)
    assert [s.seed for s in many] == [1, 0] and not any(s.cached for s in many)
    for s in many:
        one = pretrain(build(data), data, s.seed, RECIPE, root=tmp_path)
        assert one.cached and _same_weights(one.model, s.model)


@pytest.mark.parametrize("seeds, message", [
    ([], r"seeds is empty; pass at least one seed"),
    ([0, 1.5], r"seeds must be ints >= 0, got \[1.5\]"),
    ([True], r"seeds must be ints >= 0, got \[True\]"),
    ("01", r"seeds must be a list of ints such as \[0, 1, 2\], got '01' \(str\)"),
    (5, r"got the int 5; for N seeds pass list\(range\(N\)\)"),
    ([1, 1], r"seeds \[1\] are repeated"),
])
def test_pretrain_seeds_refuses_bad_seeds(data, tmp_path, seeds, message):
    with pytest.raises(ValueError, match=message):
        starts.pretrain_seeds(build(data), data, seeds, RECIPE, root=tmp_path)
    assert not (tmp_path / "starts").exists()  # refused before anything was trained


@pytest.mark.parametrize("kwargs, message", [
    ({"cache": "no"}, r"cache must be True or False, got 'no' \(str\)"),
    ({"seed": 1.0}, r"seed must be a whole number .*, got 1.0 \(float\)"),
])
def test_pretrain_refuses_a_truthy_cache_flag_and_a_float_seed(data, tmp_path, kwargs, message):
    kwargs = {"seed": 0, **kwargs}
    with pytest.raises((TypeError, ValueError), match=message):
        pretrain(build(data), data, recipe=RECIPE, root=tmp_path, **kwargs)
    assert not (tmp_path / "starts").exists()
