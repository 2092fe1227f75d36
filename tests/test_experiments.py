"""compare(): every row from the same converged start under the same budget, validation
for the epochs, test once at the end, intervals and verdicts, bad input."""

import math
import statistics

import pytest

import ttqlab
from ttqlab import evidence
from ttqlab.experiments import (
    ALL_METHODS,
    CLAIMS,
    DEFAULT_METHODS,
    check_seeds,
    compare,
    spread_epochs,
)
from ttqlab.starts import Recipe, pretrain

RECIPE = Recipe(epochs=2, batch_size=32)


@pytest.fixture(scope="module")
def tiny():
    return ttqlab.data.load("synthetic", n_train=128, n_test=64, seed=0)


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TTQLAB_DATA", str(tmp_path))  # starts are cached per test


def _build(data):
    return lambda s: ttqlab.models.mlp(input_shape=data.input_shape,
                                        num_classes=data.num_classes, hidden=(16, 16), seed=s)


def _compare(data, **kw):
    kw.setdefault("recipe", RECIPE)
    return compare(_build(data), data, **kw)


def _trained_epochs(result) -> int:
    """Epochs the model actually trained, counted from its history (epoch 0 = untrained)."""
    return sum(1 for row in result.history.epochs if row["epoch"] > 0
               and not math.isnan(row.get("train_loss", math.nan)))


@pytest.mark.parametrize("epochs", [2, 5, 7])
def test_spread_epochs_sums_to_budget(epochs):
    for steps in (1, 3, 4, 10):
        split = spread_epochs(epochs, steps)
        assert len(split) == steps and sum(split) == epochs
        assert max(split) - min(split) <= 1 and split == sorted(split, reverse=True)


def test_every_row_fine_tunes_the_same_start_for_the_same_epochs_and_schedule(tiny):
    table, results = _compare(tiny, epochs=3, seeds=[0], methods=ALL_METHODS)
    assert [r["method"] for r in table.rows] == list(ALL_METHODS)
    assert {r["epochs"] for r in table.rows} == {3}
    control = results["fp32"].history
    start = pretrain(_build(tiny), tiny.split_validation(), 0, RECIPE)
    assert start.cached  # compare trained it, under the same key
    # the control starts where the start ended: the same model
    assert control.epochs[0]["val_acc"] == pytest.approx(start.history.last["val_acc"])
    base = {r["method"]: r["lr"] for r in table.rows}  # each row's own lr (FINETUNE_LRS)
    shape = [row["lr"] / base["fp32"] for row in control.epochs[1:]]
    assert shape == sorted(shape, reverse=True) and shape[-1] < shape[0]  # decaying
    for method, result in results.items():
        # counted from what fit() actually ran; INQ's steps summed
        assert _trained_epochs(result) == 3, method
        assert result.history.epochs[-1]["epoch"] == 3, method
        if method not in ("inq", "inq-oneshot"):  # INQ restarts the schedule per step
            assert [row["lr"] / base[method] for row in result.history.epochs[1:]] == \
                pytest.approx(shape), method  # the same schedule, scaled to its lr


def test_inq_retraining_epochs_add_up_and_are_judged_on_validation(tiny):
    # 3 fine-tuning epochs over INQ's 4 steps: 1 + 1 + 1 + 0, never ceil(3/4) * 4 = 4
    _, results = _compare(tiny, epochs=3, seeds=[0], methods=["fp32", "inq"])
    inq = results["inq"]
    assert _trained_epochs(inq) == 3 == _trained_epochs(results["fp32"])
    assert inq.history.last["inq_fraction"] == 1.0
    data = tiny.split_validation()
    assert inq.history.last["val_acc"] == pytest.approx(ttqlab.evaluate(inq.model,
                                                                        data.val)[1])


def test_test_split_is_touched_once_at_the_end(tiny):
    table, results = _compare(tiny, epochs=2, seeds=[0], methods=["fp32", "twn"])
    data = tiny.split_validation()
    for row in table.rows:
        result = results[row["method"]]
        assert all("test_acc" not in e and "val_acc" in e for e in result.history.epochs)
        assert result.test_acc == pytest.approx(ttqlab.evaluate(result.model, data.test)[1])
        assert row["test_acc"] == [pytest.approx(100 * result.test_acc)]
        assert row["val_acc"] == [pytest.approx(100 * result.history.last["val_acc"])]
    assert table.meta["val"] == len(data.val) and table.meta["train"] == len(data.train)


def test_a_given_validation_split_is_kept(tiny):
    data = tiny.split_validation(0.25, seed=4)
    table, _ = _compare(data, epochs=1, seeds=[0], methods=["fp32"])
    assert table.meta["val_split"] == {"fraction": 0.25, "seed": 4}
    assert table.meta["val"] == len(data.val)


def test_means_and_paired_intervals(tiny):
    table, _ = _compare(tiny, epochs=2, seeds=[0, 1, 2], methods=["fp32", "binary"])
    fp, b = table.rows
    assert fp["seeds"] == [0, 1, 2] and len(fp["test_acc"]) == 3
    assert fp["test_acc_mean"] == pytest.approx(statistics.mean(fp["test_acc"]))
    assert fp["test_acc_std"] == pytest.approx(statistics.stdev(fp["test_acc"]))
    iv = evidence.paired_interval(b["test_acc"], fp["test_acc"])
    assert b["delta_vs_fp32_mean"] == pytest.approx(iv.mean)
    assert b["delta_vs_fp32_std"] == pytest.approx(iv.std)
    assert (b["delta_vs_fp32_low"], b["delta_vs_fp32_high"]) == (pytest.approx(iv.low),
                                                                 pytest.approx(iv.high))
    assert fp["delta_vs_fp32_mean"] == 0 and fp["delta_vs_fp32_std"] == 0
    assert all(0 <= a <= 100 for a in fp["test_acc"])  # percent, not fractions


def test_same_seeds_same_numbers_trained_or_cached(tiny):
    a, _ = _compare(tiny, epochs=2, seeds=[3], methods=["fp32", "ttq"])
    b, _ = _compare(tiny, epochs=2, seed=3, methods=["fp32", "ttq"])
    c, _ = _compare(tiny, epochs=2, seed=3, methods=["fp32", "ttq"], cache=False)
    assert [st["cached"] for st in a.meta["starts"]] == [False]
    assert [st["cached"] for st in b.meta["starts"]] == [True]
    assert [r["test_acc"] for r in a.rows] == [r["test_acc"] for r in b.rows] == \
        [r["test_acc"] for r in c.rows]
    assert "from the cache" in b.title and "trained now" in a.title


def test_claims_are_judged_from_the_intervals(tiny):
    table, _ = _compare(tiny, epochs=2, seeds=[0, 1])
    assert [r["method"] for r in table.rows] == list(DEFAULT_METHODS)
    assert [(c["paper"], c["claim"]) for c in table.claims] == [c[:2] for c in CLAIMS]
    one_image = 100 / len(tiny.test)
    for c in table.claims:
        rows = {r["method"]: r for r in table.rows}
        iv = evidence.paired_interval(rows[c["better"]]["test_acc"],
                                      rows[c["worse"]]["test_acc"])
        assert c["interval"] == pytest.approx(iv.to_dict())
        assert c["verdict"] == evidence.verdict(iv, c["kind"], margin=c["margin"])
        assert c["margin"] >= one_image
    text = str(table)
    assert sum(f"{c['paper']}: {c['claim']}" in text for c in table.claims) == len(CLAIMS)


def test_rows_carry_the_json_fields_and_print_readably(tiny):
    table, _ = _compare(tiny, epochs=2, seeds=[0, 1], methods=["fp32", "twn"])
    for row in table.to_dict()["rows"]:
        for key in ("method", "epochs", "seeds", "val_acc_mean", "test_acc_mean",
                    "test_acc_std", "delta_vs_fp32_mean", "delta_vs_fp32_low",
                    "delta_vs_fp32_high", "sparsity", "bits_per_weight", "model_bytes"):
            assert key in row
    meta = table.to_dict()
    assert meta["recipe"]["epochs"] == 2 and meta["finetune"]["lr_schedule"] == "cosine"
    assert meta["protocol"] == "converged-start" and len(meta["starts"]) == 2
    text = str(table)
    assert "±" in text and "KiB" in text and "one test image = 1.56 points" in text
    assert "Columns:" in text and "ttqlab course" in text and "95% CI" in text
    assert "notebooks/" not in text  # a pip install has no notebooks folder


def test_one_seed_runs_and_says_it_has_no_interval(tiny):
    table, _ = _compare(tiny, epochs=1, seeds=[0], methods=["fp32", "twn"])
    assert table.rows[1]["delta_vs_fp32_low"] is None
    assert "no interval and no verdict" in str(table)


def test_from_scratch_rows_start_from_the_random_init(tiny):
    table, results = _compare(tiny, epochs=2, seeds=[0], init="scratch",
                              methods=["fp32", "twn", "bitnet"])
    fresh = _build(tiny)(0)
    assert results["fp32"].history.epochs[0]["val_acc"] == pytest.approx(
        ttqlab.evaluate(fresh, tiny.split_validation().val)[1])
    assert table.meta["starts"] == [] and table.meta["recipe"] is None
    assert table.meta["protocol"] == "scratch"


def test_without_fp32_there_is_no_delta_and_it_says_so(tiny):
    table, _ = _compare(tiny, epochs=2, seeds=[0], methods=["twn"])
    assert table.rows[0]["delta_vs_fp32_mean"] is None
    assert "Δ" not in str(table).split("\n")[1] and "No Δ column" in str(table)


@pytest.mark.parametrize("seeds, message", [
    ([], "empty"), ([0, -1], ">= 0"), ([1, 1, 2], "repeated"), (3, "list(range"),
    (["a"], ">= 0")])
def test_bad_seeds_are_refused_before_training(seeds, message):
    def build(seed):
        raise AssertionError("trained despite bad seeds")

    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        compare(build, None, epochs=2, seeds=seeds)
    with pytest.raises(ValueError):
        check_seeds(seeds)


@pytest.mark.parametrize("kwargs, message", [
    ({"epochs": 0}, "epochs must be"), ({"methods": ["tnw"]}, "unknown methods"),
    ({"methods": ["twn", "twn"]}, "repeat"), ({"init": "scratch"}, "INQ quantizes"),
    ({"init": "warm"}, "init must be"), ({"recipe": {"epochs": 2}}, "Recipe"),
    ({"epochs": True}, r"epochs must be a whole number .*got True \(bool\)"),
    ({"workers": 2.0}, r"workers must be a whole number .*got 2.0 \(float\)"),
    ({"lr": True}, r"learning rate of fp32 must be a finite number > 0, got True"),
    ({"lr": math.nan}, r"learning rate of fp32 must be a finite number > 0, got nan"),
    ({"lr": {"fp32": 1e-3, "binary": -1e-3, "twn": 1e-3, "ttq": 1e-3, "inq": 1e-3,
             "inq-oneshot": 1e-3}}, r"learning rate of binary must be .*; e.g. lr=1e-3")])
def test_bad_arguments_are_refused_before_training(tiny, kwargs, message):
    def build(seed):
        raise AssertionError("trained despite bad arguments")

    with pytest.raises((ValueError, TypeError), match=message):
        compare(build, tiny, **kwargs)


def test_layer_report_title_names_each_packing():
    from ttqlab.stats import layer_report

    net = ttqlab.models.mlp(input_shape=(1, 8, 8), hidden=(16, 16), seed=0)
    inq = ttqlab.INQ(net, bits=5, schedule=(1.0,))
    inq.step()
    title = layer_report(net).title
    assert "5-bit" in title and "2bit" not in title
    net = ttqlab.quantize(ttqlab.models.mlp(input_shape=(1, 8, 8), hidden=(16, 16), seed=0),
                          "ttq")
    assert "ternary codes packed 2bit" in layer_report(net).title


def _mlp16(input_shape, num_classes, seed):
    return ttqlab.models.mlp(input_shape=input_shape, num_classes=num_classes,
                             hidden=(16, 16), seed=seed)


def test_seeds_over_worker_processes_give_the_same_numbers(tiny):
    """workers=2 trains every other seed in a spawned process: the same rows, the models
    of the first seed still returned."""
    import functools

    build = functools.partial(_mlp16, tiny.input_shape, tiny.num_classes)
    kw = dict(epochs=1, seeds=[0, 1, 2], methods=["fp32", "ttq", "inq"], recipe=RECIPE)
    one, results = compare(build, tiny, **kw)
    two, results2 = compare(build, tiny, workers=2, **kw)
    for a, b in zip(one.rows, two.rows):
        assert (a["method"], a["test_acc"], a["val_acc"]) == (b["method"], b["test_acc"],
                                                              b["val_acc"])
    assert one.claims == two.claims
    assert [st["seed"] for st in two.meta["starts"]] == [0, 1, 2]
    for m in results:
        assert results2[m].test_acc == results[m].test_acc
        assert isinstance(results2[m].model, type(results[m].model))


def test_workers_need_a_picklable_build(tiny):
    with pytest.raises(ValueError, match="cannot be pickled"):
        compare(lambda s: _mlp16(tiny.input_shape, tiny.num_classes, s), tiny, workers=2,
                recipe=RECIPE)
    with pytest.raises(ValueError, match="workers must be"):
        compare(_build(tiny), tiny, workers=0)
