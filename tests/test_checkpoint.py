"""Checkpoints: exact resume of a whole training run, atomic writes, no pickle."""

import collections
import json
import math
import os
import random
import subprocess
import sys

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import ttqlab
from ttqlab import checkpoint
from ttqlab.reproduce import CropFlip


class Interrupt(Exception):
    pass


def _stop_after(n_records):
    def cb(history, model):
        if len(history.epochs) == n_records:
            raise Interrupt
    return cb


def _same_rows(a, b):
    """History rows equal, apart from wall-clock seconds (NaN == NaN)."""
    assert len(a) == len(b)
    for ra, rb in zip(a, b):
        assert ra.keys() == rb.keys()
        for k in ra:
            if k == "seconds":
                continue
            va, vb = ra[k], rb[k]
            assert va == vb or (isinstance(va, float) and math.isnan(va) and math.isnan(vb)), k


def test_values_round_trip(tmp_path):
    values = {"t": (1, "a", None), "b": b"\x00\xff", "ints": {3: torch.arange(3), 7: 1.5},
              "c": collections.Counter({15: 1, 25: 2}), "a": np.arange(4, dtype=np.uint32),
              "nested": [{"x": torch.ones(2, 2, dtype=torch.bool)}, float("inf")],
              "__tuple__": "a key that looks like a tag"}
    checkpoint.save(tmp_path, 3, rng=False, **values)
    got = checkpoint.load(tmp_path, rng=False)
    assert got["step"] == 3 and got["t"] == (1, "a", None) and got["b"] == b"\x00\xff"
    assert torch.equal(got["ints"][3], torch.arange(3)) and got["ints"][7] == 1.5
    assert isinstance(got["c"], collections.Counter) and got["c"][25] == 2
    assert got["a"].dtype == np.uint32 and got["a"].tolist() == [0, 1, 2, 3]
    assert got["nested"][0]["x"].dtype == torch.bool and got["nested"][1] == math.inf
    assert got["__tuple__"] == "a key that looks like a tag"
    # the files are plain JSON and safetensors
    meta = json.loads((tmp_path / "checkpoint-000003.json").read_text())
    assert meta["format"] == "ttqlab-checkpoint" and meta["step"] == 3
    assert set(load_file(tmp_path / "checkpoint-000003.safetensors")) == {"/ints/3",
                                                                          "/nested/0/x"}


def test_unsupported_values_are_refused(tmp_path):
    with pytest.raises(checkpoint.CheckpointError, match="no pickle"):
        checkpoint.save(tmp_path, 0, thing=object())
    with pytest.raises(ValueError, match="step"):
        checkpoint.save(tmp_path, -1, x=1)
    with pytest.raises(checkpoint.CheckpointError, match="no complete checkpoint"):
        checkpoint.load(tmp_path)


@pytest.mark.parametrize("kwargs, error, says", [
    ({"step": -1}, ValueError, r"step must be a whole number \(an int such as 5\) >= 0, got -1"),
    ({"step": True}, ValueError, r"step must be .*, got True \(bool\)"),
    ({"step": 3.0}, ValueError, r"step must be .*, got 3.0 \(float\)"),
    ({"keep": 0}, ValueError, r"keep must be a whole number .*>= 1, got 0 \(int\)"),
    ({"keep": False}, ValueError, r"keep must be .*, got False \(bool\)"),
    ({"rng": "no"}, TypeError, r"rng must be True or False, got 'no' \(str\)"),
    ({"directory": None}, TypeError, r"directory must be a path .*, got None \(NoneType\)"),
    ({"directory": ""}, ValueError, r"directory must be a path such as 'runs/a', got the empty"),
], ids=["negative-step", "bool-step", "float-step", "keep-0", "bool-keep", "str-rng", "none-dir",
        "empty-dir"])
def test_save_refuses_bad_arguments_and_writes_nothing(tmp_path, monkeypatch, kwargs, error,
                                                       says):
    monkeypatch.chdir(tmp_path)
    kwargs = {"directory": tmp_path / "run", "step": 1, **kwargs}
    with pytest.raises(error, match=says):
        checkpoint.save(x=1, **kwargs)
    assert list(tmp_path.iterdir()) == []


def test_save_takes_numpy_ints_and_load_refuses_truthy_flags(tmp_path):
    path = checkpoint.save(tmp_path, np.int64(4), keep=np.int32(2), x=1)
    assert path.name == "checkpoint-000004.json"
    assert json.loads(path.read_text())["step"] == 4
    for flag in ("rng", "strict"):
        with pytest.raises(TypeError, match=rf"{flag} must be True or False, got 'no'"):
            checkpoint.load(tmp_path, **{flag: "no"})
    assert checkpoint.load(tmp_path, rng=False, strict=True) == {"step": 4, "x": 1}


def test_global_rng_states_round_trip(tmp_path):
    checkpoint.save(tmp_path, 0)
    expected = (random.random(), np.random.rand(), torch.rand(1))  # noqa: NPY002
    random.seed(5)
    np.random.seed(5)  # noqa: NPY002
    torch.manual_seed(5)
    checkpoint.load(tmp_path)
    assert (random.random(), np.random.rand(), torch.rand(1)) == expected  # noqa: NPY002


@pytest.mark.parametrize("method, opt, schedule, unit", [
    ("ttq", "adam", "cosine", "iteration"),
    ("twn", "sgd", [2, 3], "epoch"),
])
def test_resume_after_interrupt_is_exact(tmp_path, method, opt, schedule, unit):
    data = ttqlab.data.load("synthetic", limit_train=192, limit_test=64)
    kw = dict(epochs=4, batch_size=32, optimizer=opt, lr=1e-3 if opt == "adam" else 0.01,
              lr_schedule=schedule, schedule_unit=unit, transform=CropFlip(2), progress=False)

    def build():
        return ttqlab.quantize(ttqlab.models.lenet5(input_shape=(1, 8, 8), seed=0), method)

    straight = build()
    h_straight = ttqlab.fit(straight, data, checkpoint=tmp_path / "a", **kw)
    after_straight = torch.rand(3)

    broken = build()
    with pytest.raises(Interrupt):
        ttqlab.fit(broken, data, checkpoint=tmp_path / "b", callbacks=[_stop_after(3)], **kw)
    assert [s for s, _ in checkpoint.list_checkpoints(tmp_path / "b")] == [2]
    torch.manual_seed(1234)  # a new process: nothing carried over but the files
    resumed = build()
    h_resumed = ttqlab.fit(resumed, data, checkpoint=tmp_path / "b", resume=True, **kw)

    assert torch.equal(torch.rand(3), after_straight)  # global RNG restored too
    for k, v in straight.state_dict().items():
        assert torch.equal(v, resumed.state_dict()[k]), k
    _same_rows(h_straight.epochs, h_resumed.epochs)
    _same_rows(h_straight.layers, h_resumed.layers)
    a = load_file(tmp_path / "a" / "checkpoint-000004.safetensors")
    b = load_file(tmp_path / "b" / "checkpoint-000004.safetensors")
    assert a.keys() == b.keys() and any("optimizer" in k for k in a)
    for k in a:  # weights, W_p / W_n, optimizer moments, generators, RNG: all equal
        assert torch.equal(a[k], b[k]), k


def test_finished_run_is_loaded_not_retrained(tmp_path, digits_small):
    train, test = digits_small
    m = ttqlab.quantize(ttqlab.models.mlp(seed=0), "ttq")
    h = ttqlab.fit(m, train, test, epochs=2, progress=False, checkpoint=tmp_path)
    fresh = ttqlab.quantize(ttqlab.models.mlp(seed=1), "ttq")
    calls = []
    h2 = ttqlab.fit(fresh, train, test, epochs=2, progress=False, checkpoint=tmp_path,
                    resume=True, callbacks=[lambda *a: calls.append(1)])
    assert calls == []
    _same_rows(h.epochs, h2.epochs)
    assert all(torch.equal(v, fresh.state_dict()[k]) for k, v in m.state_dict().items())


def test_existing_run_is_never_overwritten(tmp_path, digits_small):
    train, test = digits_small
    ttqlab.fit(ttqlab.models.mlp(seed=0), train, test, epochs=1, progress=False,
               checkpoint=tmp_path)
    with pytest.raises(ValueError, match="resume=True"):
        ttqlab.fit(ttqlab.models.mlp(seed=0), train, test, epochs=1, progress=False,
                   checkpoint=tmp_path)
    with pytest.raises(ValueError, match="checkpoint=DIR"):
        ttqlab.fit(ttqlab.models.mlp(seed=0), train, test, epochs=1, progress=False,
                   resume=True)
    with pytest.raises(ValueError, match="batch_size"):
        ttqlab.fit(ttqlab.models.mlp(seed=0), train, test, epochs=2, batch_size=16,
                   progress=False, checkpoint=tmp_path, resume=True)


def test_a_config_resumes_its_run_and_the_saved_config_is_unchanged(tmp_path, digits_small):
    """One FitConfig for the run, resume=True as an override: the run continues where it
    stopped; the checkpoint's ``config`` is still {batch_size, seed, schedule_unit}."""
    train, test = digits_small
    config = ttqlab.train.FitConfig(epochs=3, batch_size=32, seed=2, progress=False,
                                    checkpoint=tmp_path)
    straight = ttqlab.fit(ttqlab.models.mlp(seed=0), train, test,
                          config.with_options(checkpoint=tmp_path / "straight"))
    with pytest.raises(Interrupt):
        ttqlab.fit(ttqlab.models.mlp(seed=0), train, test, config,
                   callbacks=[_stop_after(2)])
    meta = json.loads((tmp_path / "checkpoint-000001.json").read_text())
    saved = checkpoint.load(tmp_path, rng=False)["config"]
    assert meta["format"] == "ttqlab-checkpoint"
    assert saved == {"batch_size": 32, "seed": 2, "schedule_unit": "epoch"}
    resumed = ttqlab.fit(ttqlab.models.mlp(seed=0), train, test, config, resume=True)
    _same_rows(straight.epochs, resumed.epochs)
    with pytest.raises(ValueError, match="seed"):
        ttqlab.fit(ttqlab.models.mlp(seed=0), train, test, config, resume=True, seed=3,
                   epochs=4)


def test_inq_position_is_saved_with_the_run(tmp_path, digits_small):
    train, test = digits_small
    m = ttqlab.models.lenet5(input_shape=(1, 8, 8), seed=0)
    inq = ttqlab.INQ(m, bits=5)
    inq.step()
    inq.step()
    ttqlab.fit(m, train, test, epochs=1, progress=False, checkpoint=tmp_path,
               checkpoint_extra={"inq": inq})
    m2 = ttqlab.models.lenet5(input_shape=(1, 8, 8), seed=1)
    inq2 = ttqlab.INQ(m2, bits=5)
    ttqlab.fit(m2, train, test, epochs=1, progress=False, checkpoint=tmp_path, resume=True,
               checkpoint_extra={"inq": inq2})
    assert inq2.steps_taken == 2 and inq2.fraction == 0.75
    for (_, _, q), (_, _, q2) in zip(inq.layers, inq2.layers):
        assert torch.equal(q.frozen_mask, q2.frozen_mask) and q2.fraction_frozen == 0.75


def test_interrupted_write_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    model = torch.nn.Linear(3, 2)
    checkpoint.save(tmp_path, 1, model=model)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        model.weight.add_(1.0)
    real_replace = checkpoint.os.replace

    def crash_on_json(src, dst):
        if str(dst).endswith(".json"):
            raise KeyboardInterrupt  # killed between the tensor file and the .json
        real_replace(src, dst)

    monkeypatch.setattr(checkpoint.os, "replace", crash_on_json)
    with pytest.raises(KeyboardInterrupt):
        checkpoint.save(tmp_path, 2, model=model)
    monkeypatch.undo()
    assert checkpoint.latest(tmp_path).name == "checkpoint-000001.json"
    assert not [p for p in tmp_path.iterdir() if ".tmp" in p.name]
    restored = torch.nn.Linear(3, 2)
    assert checkpoint.load(tmp_path, model=restored)["step"] == 1
    assert torch.equal(restored.weight, before["weight"])

    # a checkpoint whose tensor file does not match its recorded hash is skipped
    checkpoint.save(tmp_path, 3, keep=2, model=model)
    (tmp_path / "checkpoint-000003.safetensors").write_bytes(b"truncated")
    with pytest.warns(UserWarning, match="skipping.*checkpoint-000003.*SHA-256"):
        assert checkpoint.latest(tmp_path).name == "checkpoint-000001.json"


def test_old_checkpoints_removed_only_after_new_one(tmp_path):
    for step in range(4):
        checkpoint.save(tmp_path, step, keep=2, x=step)
    assert [s for s, _ in checkpoint.list_checkpoints(tmp_path)] == [2, 3]
    assert sorted(p.suffix for p in tmp_path.iterdir()) == [".json"] * 2 + [".safetensors"] * 2
    with pytest.raises(checkpoint.CheckpointError, match="holds no"):
        checkpoint.load(tmp_path, model=torch.nn.Linear(1, 1))


# --------------------------------------------------------------------------- damaged files


@pytest.mark.parametrize("content", [
    "{", "[]", '{"format": "ttqlab-checkpoint"}', '{"format": "other"}',
    '{"format": "ttqlab-checkpoint", "version": 1, "step": 5, "tensors": "../x", '
    '"sha256": "0", "state": {}}',
    '{"format": "ttqlab-checkpoint", "version": 1, "step": "5", '
    '"tensors": "checkpoint-000005.safetensors", "sha256": "0", "state": {}}',
], ids=["truncated", "list", "no-fields", "other-format", "path", "step-type"])
def test_stray_json_next_to_a_good_checkpoint_is_skipped_with_a_warning(tmp_path, content):
    model = torch.nn.Linear(3, 2)
    checkpoint.save(tmp_path, 1, model=model)
    (tmp_path / "checkpoint-000005.json").write_text(content)
    with pytest.warns(UserWarning, match="checkpoint-000005.json"):
        assert checkpoint.latest(tmp_path).name == "checkpoint-000001.json"
    with pytest.warns(UserWarning, match="checkpoint-000005.json"):
        assert checkpoint.load(tmp_path, model=torch.nn.Linear(3, 2))["step"] == 1


def test_newer_format_version_is_named(tmp_path):
    path = checkpoint.save(tmp_path, 1, x=1)
    meta = json.loads(path.read_text())
    meta["version"] = checkpoint.VERSION + 1
    path.write_text(json.dumps(meta))
    newer = checkpoint.VERSION + 1
    with pytest.raises(checkpoint.CheckpointError, match=rf"format version {newer}.*upgrade"), \
            pytest.warns(UserWarning, match="format version"):
        checkpoint.latest(tmp_path)


def test_only_checkpoint_corrupt_is_refused_not_restarted(tmp_path):
    """A directory with checkpoint files but none usable: an error naming them, and
    fit(resume=True) does not retrain from epoch 1 over them."""
    model = torch.nn.Linear(3, 2)
    checkpoint.save(tmp_path, 4, model=model)
    blob = tmp_path / "checkpoint-000004.safetensors"
    data = bytearray(blob.read_bytes())
    data[-1] ^= 1
    blob.write_bytes(bytes(data))
    with pytest.warns(UserWarning), pytest.raises(checkpoint.CheckpointError,
                                                  match=r"(?s)none is usable.*000004.*move"):
        checkpoint.latest(tmp_path)
    train = torch.utils.data.TensorDataset(torch.randn(8, 3), torch.randint(0, 2, (8,)))
    with pytest.warns(UserWarning), pytest.raises(checkpoint.CheckpointError,
                                                  match="none is usable"):
        ttqlab.fit(model, train, epochs=1, batch_size=4, checkpoint=tmp_path, resume=True)
    assert bytes(data) == blob.read_bytes()  # the evidence is untouched
    assert checkpoint.list_checkpoints(tmp_path)[-1][0] == 4


def test_leftovers_of_a_killed_writer_are_cleaned(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # a pid that no longer runs
    stale = [tmp_path / f".checkpoint-000002.safetensors.tmp-{dead.pid}",
             tmp_path / f".checkpoint-000002.json.tmp-{dead.pid}"]
    orphan = tmp_path / "checkpoint-000002.safetensors"  # killed before its .json
    alive = tmp_path / f".checkpoint-000009.json.tmp-{os.getppid()}"  # a live writer's
    for p in [*stale, orphan, alive]:
        p.write_bytes(b"partial")
    checkpoint.save(tmp_path, 3, x=1)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == [alive.name, "checkpoint-000003.json", "checkpoint-000003.safetensors"]


def test_another_optimizer_or_architecture_is_named_before_anything_changes(tmp_path):
    model = torch.nn.Linear(3, 2)
    sgd = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(4, 3)).sum().backward()
    sgd.step()
    checkpoint.save(tmp_path, 1, model=model, optimizer=sgd)
    fresh = torch.nn.Linear(3, 2)
    before = fresh.weight.clone()
    adam = torch.optim.Adam(fresh.parameters())
    with pytest.raises(checkpoint.CheckpointError,
                       match=r"'optimizer'.*another optimizer.*this Adam"):
        checkpoint.load(tmp_path, model=fresh, optimizer=adam)
    assert torch.equal(fresh.weight, before)  # nothing was restored
    wide = torch.nn.Linear(3, 5)
    with pytest.raises(checkpoint.CheckpointError,
                       match=r"'model'.*'bias' has shape \(2,\).*\(5,\)"):
        checkpoint.load(tmp_path, model=wide, optimizer=torch.optim.SGD(
            wide.parameters(), lr=0.1, momentum=0.9))
    quantized = ttqlab.quantize(torch.nn.Sequential(torch.nn.Linear(3, 2)), "twn",
                                keep_first_last=False)
    with pytest.raises(checkpoint.CheckpointError, match=r"'model'.*another architecture"):
        checkpoint.load(tmp_path, model=quantized)
