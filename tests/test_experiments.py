"""compare(): equal training budgets, seeds with spread, the JSON-shaped rows, bad input."""

import math
import statistics

import pytest

import ttqlab
from ttqlab.experiments import ALL_METHODS, check_seeds, compare, spread_epochs


@pytest.fixture(scope="module")
def tiny():
    return ttqlab.data.load("synthetic", n_train=128, n_test=64, seed=0)


def _build(data):
    return lambda s: ttqlab.models.mlp(input_shape=data.input_shape,
                                        num_classes=data.num_classes, hidden=(16, 16), seed=s)


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


@pytest.mark.parametrize("init", ["pretrained", "scratch"])
def test_every_method_trains_the_same_total_epochs(tiny, init):
    table, results = compare(_build(tiny), tiny, epochs=5, seeds=[0], init=init)
    assert [r["method"] for r in table.rows] == list(ALL_METHODS)
    assert {r["epochs"] for r in table.rows} == {5}
    for method, result in results.items():
        # counted from what fit() actually ran: pre-training + fine-tuning, INQ's steps summed
        assert _trained_epochs(result) == 5, method
        assert result.history.epochs[-1]["epoch"] == 5, method


def test_inq_retraining_epochs_add_up(tiny):
    # 3 fine-tuning epochs over INQ's 4 steps: 1 + 1 + 1 + 0, never ceil(3/4) * 4 = 4
    table, results = compare(_build(tiny), tiny, epochs=5, pretrain_epochs=2, seeds=[0],
                             methods=["fp32", "inq"])
    assert _trained_epochs(results["inq"]) == 5 == _trained_epochs(results["fp32"])
    assert table.meta["pretrain_epochs"] == 2


def test_mean_std_and_per_seed_delta(tiny):
    table, _ = compare(_build(tiny), tiny, epochs=2, seeds=[0, 1, 2],
                       methods=["fp32", "binary"])
    fp, b = table.rows
    assert fp["seeds"] == [0, 1, 2] and len(fp["test_acc"]) == 3
    assert fp["test_acc_mean"] == pytest.approx(statistics.mean(fp["test_acc"]))
    assert fp["test_acc_std"] == pytest.approx(statistics.stdev(fp["test_acc"]))
    diffs = [x - y for x, y in zip(b["test_acc"], fp["test_acc"])]
    assert b["delta_vs_fp32_mean"] == pytest.approx(statistics.mean(diffs))
    assert b["delta_vs_fp32_std"] == pytest.approx(statistics.stdev(diffs))
    assert fp["delta_vs_fp32_mean"] == 0 and fp["delta_vs_fp32_std"] == 0
    assert all(0 <= a <= 100 for a in fp["test_acc"])  # percent, not fractions


def test_same_seeds_same_numbers(tiny):
    a, _ = compare(_build(tiny), tiny, epochs=2, seeds=[3], methods=["fp32", "ttq"])
    b, _ = compare(_build(tiny), tiny, epochs=2, seed=3, methods=["fp32", "ttq"])
    assert [r["test_acc"] for r in a.rows] == [r["test_acc"] for r in b.rows]


def test_rows_carry_the_json_fields_and_print_readably(tiny):
    table, _ = compare(_build(tiny), tiny, epochs=2, seeds=[0, 1], methods=["fp32", "twn"])
    for row in table.to_dict()["rows"]:
        for key in ("method", "epochs", "seeds", "test_acc_mean", "test_acc_std",
                    "delta_vs_fp32_mean", "delta_vs_fp32_std", "sparsity",
                    "bits_per_weight", "model_bytes"):
            assert key in row
    text = str(table)
    assert "±" in text and "KiB" in text and "one test image = 1.56 points" in text
    assert "Columns:" in text and "notebooks/01" in text and "2 epochs in total" in text


def test_without_fp32_there_is_no_delta_and_it_says_so(tiny):
    table, _ = compare(_build(tiny), tiny, epochs=2, seeds=[0], methods=["twn"])
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


def test_bad_budget_is_refused(tiny):
    with pytest.raises(ValueError, match="pretrain_epochs"):
        compare(_build(tiny), tiny, epochs=4, pretrain_epochs=4)
    with pytest.raises(ValueError, match="epochs must be"):
        compare(_build(tiny), tiny, epochs=1)


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
