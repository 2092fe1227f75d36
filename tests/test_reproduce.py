"""ttqlab reproduce: recipes configured as the papers say, runs end to end, exact resume."""

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from torch.utils.data import TensorDataset

import ttqlab
from ttqlab import reproduce
from ttqlab.cli import main
from ttqlab.convert import quantizable_layers
from ttqlab.data import Data
from ttqlab.train import History


class SpyFit:
    """Stands in for ``fit``: records what each phase was asked to do, trains nothing."""

    def __init__(self):
        self.calls = []

    def __call__(self, model, data, **kw):
        layers = {n: (q.method, q) for n, _, q in ttqlab.quantized_layers(model)}
        self.calls.append({"model": model, "layers": layers,
                           "all": [n for n, _ in quantizable_layers(model)],
                           "wp": {n: q.wp.item() for n, (m, q) in layers.items() if m == "ttq"},
                           "frozen": {n: q.fraction_frozen for n, (m, q) in layers.items()
                                      if m == "inq"},
                           "inq_fraction": kw.get("checkpoint_extra", {}).get("inq", None)
                           and kw["checkpoint_extra"]["inq"].fraction, **kw})
        h = History()
        h.epochs.append({"epoch": kw["epochs"], "test_acc": 0.5})
        return h


def _fake(name, n_train, shape):
    x = torch.zeros(1, *shape).expand(n_train, *shape)  # no memory: a stride-0 view
    y = torch.zeros(n_train, dtype=torch.long)
    return Data(name, TensorDataset(x, y), TensorDataset(x[:10], y[:10]), shape, 10,
                [str(i) for i in range(10)], "stand-in with the real dataset's size")


@pytest.fixture
def spy(monkeypatch):
    spy = SpyFit()
    sizes = {"mnist": (60_000, (1, 28, 28)), "cifar10": (50_000, (3, 32, 32))}
    monkeypatch.setattr(reproduce, "fit", spy)
    monkeypatch.setattr(reproduce.datasets, "load", lambda name, **kw: _fake(name, *sizes[name]))
    return spy


def _schedule(call):
    keep = ("epochs", "lr_schedule", "schedule_unit", "batch_size", "lr", "optimizer",
            "momentum", "weight_decay")
    return {k: call[k] for k in keep}


def test_twn_mnist_is_the_papers_configuration(spy, tmp_path):
    reproduce.run("twn-mnist", tmp_path, verbose=False)
    fp, twn = spy.calls
    assert _schedule(twn) == {"epochs": 25, "lr_schedule": [15_000, 25_000],
                              "schedule_unit": "iteration", "batch_size": 50, "lr": 0.01,
                              "optimizer": "sgd", "momentum": 0.9, "weight_decay": 1e-4}
    assert twn["epochs"] * 60_000 // twn["batch_size"] == 30_000  # iterations in all
    assert "gamma" not in twn and "transform" not in twn  # x0.1 (fit's default), no augmentation
    assert twn["all"] == ["conv1", "conv2", "fc1", "fc2"]  # every layer ternarized
    assert {n: m for n, (m, _) in twn["layers"].items()} == dict.fromkeys(twn["all"], "twn")
    assert fp["layers"] == {} and _schedule(fp) == _schedule(twn)


def test_ttq_resnet_keeps_first_conv_and_ternarizes_last_layer(spy, tmp_path):
    reproduce.run("ttq-cifar10-resnet20", tmp_path, verbose=False)
    fp, ttq = spy.calls
    assert _schedule(fp) == {"epochs": 164, "lr_schedule": [82, 123], "schedule_unit": "epoch",
                             "batch_size": 128, "lr": 0.1, "optimizer": "sgd",
                             "momentum": 0.9, "weight_decay": 1e-4}
    assert _schedule(ttq) == {"epochs": 400, "lr_schedule": [82, 123, 150],
                              "schedule_unit": "epoch", "batch_size": 128, "lr": 0.1,
                              "optimizer": "sgd", "momentum": 0.9, "weight_decay": 2e-4}
    assert fp["model"] is ttq["model"]  # fine-tuned from the pre-trained weights
    assert set(ttq["all"]) - set(ttq["layers"]) == {"conv1"} and "fc" in ttq["layers"]
    assert all(q.t == 0.05 for _, q in ttq["layers"].values())
    assert set(ttq["wp"].values()) == {1.0}  # the authors' initial W_p = W_n = 1
    for call in (fp, ttq):
        assert isinstance(call["transform"], reproduce.CropFlip)
        assert call["transform"].padding == 4


def test_inq_quantizes_every_layer_step_by_step(spy, tmp_path):
    reproduce.run("inq-mnist-lenet5", tmp_path, verbose=False)
    fp, *steps = spy.calls
    assert len(steps) == 4 and fp["layers"] == {}
    for call, fraction in zip(steps, (0.5, 0.75, 0.875, 1.0)):
        assert set(call["frozen"]) == set(call["all"])
        assert all(v == pytest.approx(fraction, abs=0.01) for v in call["frozen"].values())
        assert all(q.bits == 5 for _, q in call["layers"].values())
        assert call["inq_fraction"] == fraction  # the schedule position is checkpointed


def test_shortened_runs_scale_the_milestones(spy, tmp_path):
    reproduce.run("twn-mnist", tmp_path, verbose=False, baseline=False, max_epochs=5)
    (twn,) = spy.calls
    assert twn["epochs"] == 5 and twn["lr_schedule"] == [3000, 5000]  # of 6000 iterations


def test_reproduce_command_runs_and_refuses_to_overwrite(tmp_path, capsys):
    args = ["reproduce", "twn-mnist", "--dataset-override", "synthetic", "--max-epochs", "1",
            "--limit-train", "200", "--out", str(tmp_path)]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "paper (%)" in text and "99.35" in text and "not comparable" in text
    result = json.loads((tmp_path / "result.json").read_text())
    assert set(result["measured"]) == {"fp32", "twn"}
    assert result["conditions"]["dataset"] == "synthetic"
    assert result["conditions"]["epochs"] == {"fp32": 1, "twn": 1}
    assert all(0 <= v <= 100 for v in result["measured"].values())
    with pytest.raises(SystemExit) as exit_:  # refused before any work: a usage error
        main(args)
    assert exit_.value.code == 2
    assert "resume" in capsys.readouterr().err
    assert main([*args, "--resume"]) == 0  # finished phases are loaded, not retrained
    again = json.loads((tmp_path / "result.json").read_text())
    assert again["measured"] == result["measured"]


class Interrupt(Exception):
    pass


def test_interrupted_recipe_resumes_exactly(tmp_path):
    kw = dict(dataset="synthetic", limit_train=200, limit_test=100, max_epochs=2,
              verbose=False)
    straight = reproduce.run("inq-mnist-lenet5", tmp_path / "a", **kw)

    calls = []

    def stop(history, model):
        calls.append(history.last["epoch"])
        if len(calls) == 8:  # fp32 epochs 0-2, inq-1 epochs 0-2, inq-2 epochs 0-1
            raise Interrupt

    with pytest.raises(Interrupt):
        reproduce.run("inq-mnist-lenet5", tmp_path / "b", callbacks=[stop], **kw)
    assert not (tmp_path / "b" / "inq-3").exists()
    resumed = reproduce.run("inq-mnist-lenet5", tmp_path / "b", resume=True, **kw)
    assert resumed["measured"] == straight["measured"]
    final = "inq-4/checkpoint-000002.safetensors"
    a, b = load_file(tmp_path / "a" / final), load_file(tmp_path / "b" / final)
    assert a.keys() == b.keys() and any("frozen_mask" in k for k in a)
    for k in a:  # weights, INQ masks, optimizer, generators, RNG
        assert torch.equal(a[k], b[k]), k
    meta = json.loads((tmp_path / "b" / "inq-4" / "checkpoint-000002.json").read_text())
    assert meta["state"]["inq"]["steps_taken"] == 4


@pytest.mark.parametrize("padding", [-1, True, 4.0, None], ids=repr)
def test_crop_flip_refuses_a_padding_that_is_not_an_int_from_0(padding):
    with pytest.raises(ValueError, match=rf"padding must be a whole number .*>= 0, got "
                                         rf"{padding} \({type(padding).__name__}\); pixels"):
        reproduce.CropFlip(padding)
    assert reproduce.CropFlip(np.int64(2)).padding == 2


@pytest.mark.parametrize("kwargs, error, says", [
    ({"epochs_scale": 0}, ValueError, r"epochs_scale must be a finite number > 0, got 0 "),
    ({"epochs_scale": float("inf")}, ValueError, r"epochs_scale must be .*, got inf"),
    ({"max_epochs": 0}, ValueError, r"max_epochs must be a whole number .*>= 1, or None, got 0"),
    ({"max_epochs": True}, ValueError, r"max_epochs must be .*, got True \(bool\)"),
    ({"max_epochs": 2.5}, ValueError, r"max_epochs must be .*, got 2.5 \(float\)"),
    ({"seed": 1.0}, ValueError, r"seed must be a whole number .*, got 1.0 \(float\)"),
    ({"resume": "no"}, TypeError, r"resume must be True or False, got 'no' \(str\)"),
    ({"baseline": 0}, TypeError, r"baseline must be True or False, got 0 \(int\)"),
    ({"deterministic": "yes"}, TypeError, r"deterministic must be True or False"),
    ({"out": ""}, ValueError, r"out must be a path such as 'runs/a', got the empty name"),
], ids=lambda v: repr(v) if isinstance(v, dict) else "")
def test_bad_arguments_are_refused_before_any_work(tmp_path, monkeypatch, kwargs, error, says):
    monkeypatch.chdir(tmp_path)
    kwargs = {"out": tmp_path / "run", **kwargs}
    with pytest.raises(error, match=says):
        reproduce.run("twn-mnist", dataset="synthetic", **kwargs)
    assert list(tmp_path.iterdir()) == []


def test_crop_flip_is_a_seeded_shifted_window():
    x = torch.arange(2 * 3 * 6 * 6, dtype=torch.float32).reshape(2, 3, 6, 6)
    out = reproduce.CropFlip(2)(x, torch.Generator().manual_seed(0))
    again = reproduce.CropFlip(2)(x, torch.Generator().manual_seed(0))
    assert out.shape == x.shape and torch.equal(out, again)
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    for i in range(2):
        windows = [w for dy in range(5) for dx in range(5)
                   for w in (padded[i, :, dy:dy + 6, dx:dx + 6],
                             padded[i, :, dy:dy + 6, dx:dx + 6].flip(-1))]
        assert any(torch.equal(out[i], w) for w in windows)
    many = reproduce.CropFlip(4)(x.repeat(50, 1, 1, 1), torch.Generator().manual_seed(1))
    assert len({tuple(m.flatten().tolist()) for m in many}) > 10  # really random


def test_bad_recipe_names(capsys):
    with pytest.raises(ValueError, match=r"name must be one of .*'twn-mnist'.*; got "
                                         r"'twn-imagenet' \(str\); a recipe; ttqlab "
                                         r"reproduce --list"):
        reproduce.run("twn-imagenet")
    assert main(["reproduce", "--list"]) == 0
    text = capsys.readouterr().out
    assert all(name in text for name in reproduce.RECIPES)
    assert "ttq-cifar10-resnet56" in text and "inq-cifar10-resnet20" in text


# --------------------------------------------------------------------------- resume identity

QUICK = dict(limit_train=100, limit_test=50, max_epochs=1, verbose=False)


def test_resume_refuses_another_dataset_or_size(tmp_path):
    out = tmp_path / "run"
    first = reproduce.run("twn-mnist", out, dataset="synthetic", baseline=False,
                          **QUICK)
    saved = (out / "result.json").read_text()
    with pytest.raises(ValueError, match=r"(?s)different run.*dataset: started with "
                                         r"'synthetic', now 'digits'"):
        reproduce.run("twn-mnist", out, dataset="digits", resume=True,
                      baseline=False, **QUICK)
    with pytest.raises(ValueError, match=r"(?s)train: started with 100, now 80"):
        reproduce.run("twn-mnist", out, dataset="synthetic", resume=True,
                      baseline=False, **{**QUICK, "limit_train": 80})
    assert (out / "result.json").read_text() == saved  # the old result is not relabelled
    again = reproduce.run("twn-mnist", out, dataset="synthetic", resume=True,
                          baseline=False, **QUICK)
    assert again["measured"] == first["measured"]


def test_resume_refuses_another_method_or_optimizer(tmp_path):
    recipe = reproduce.RECIPES["twn-mnist"]

    def phase(method, optimizer, resume):
        r = reproduce.Run(recipe, tmp_path, resume=resume, dataset="synthetic", verbose=False,
                          data_options={"limit_train": 64, "limit_test": 32})
        model = ttqlab.quantize(r.build(), method)
        return r.fit("p", model, epochs=1, batch_size=32, lr=0.01, optimizer=optimizer)

    phase("twn", "sgd", resume=False)
    with pytest.raises(ValueError, match=r"(?s)cannot resume.*different run.*optimizer"):
        phase("twn", "adam", resume=True)
    with pytest.raises(ValueError, match=r"(?s)quantized: started with .*'twn'.*'ttq'"):
        phase("ttq", "sgd", resume=True)
    phase("twn", "sgd", resume=True)  # the same run resumes


def test_cli_compile_and_deterministic_reach_fit(tmp_path, monkeypatch):
    """`ttqlab reproduce --compile --deterministic` trains every phase with those settings."""
    seen = []
    real_fit = reproduce.fit

    def spy(*args, **kwargs):
        seen.append((kwargs.get("compile"), kwargs.get("deterministic")))
        kwargs["compile"] = False  # the setting arrived; compiling here would only be slow
        return real_fit(*args, **kwargs)

    monkeypatch.setattr(reproduce, "fit", spy)
    argv = ["reproduce", "twn-mnist", "--out", str(tmp_path / "r"), "--dataset-override",
            "synthetic", "--max-epochs", "1", "--limit-train", "64", "--no-baseline",
            "--compile", "--deterministic"]
    assert main(argv) == 0
    assert seen and all(s == (True, True) for s in seen), seen
