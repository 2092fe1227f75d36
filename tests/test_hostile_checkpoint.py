"""Hostile checkpoints: memory bombs in the JSON, damaged RNG states, a full disk, a
symlinked run directory. Each is refused with a CheckpointError that changes nothing."""

import json
import random
import subprocess
import sys
import textwrap
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import torch

import ttqlab
from ttqlab import checkpoint
from ttqlab.checkpoint import CheckpointError

ROOT = str(Path(ttqlab.__file__).resolve().parents[1])
BOMB = {"__ndarray__": 0, "dtype": "(1000000000,)u1"}


def _edit(path, change, resign=True):
    """Edit a checkpoint's JSON; ``resign``: recompute its checksum, as a forger would."""
    meta = json.loads(path.read_text())
    change(meta)
    if resign:
        meta["checksum"] = checkpoint._json_digest(meta)
    path.write_text(json.dumps(meta))


def _set_extra(value):
    def change(meta):
        meta["state"]["extra"] = value
    return change


def test_edited_json_fails_its_checksum(tmp_path):
    path = checkpoint.save(tmp_path, 1, model=torch.nn.Linear(2, 2), extra=[1])
    _edit(path, _set_extra(BOMB), resign=False)
    with pytest.raises(CheckpointError, match=r"does not match the SHA-256 recorded in its "
                                              r"'checksum' field"):
        checkpoint.load(path, model=torch.nn.Linear(2, 2))


@pytest.mark.parametrize("value", [BOMB, {"__ndarray__": [1], "dtype": "object"},
                                   {"__ndarray__": [1], "dtype": "<U1000000000"},
                                   {"__ndarray__": "12", "dtype": "uint8"}],
                         ids=["subarray", "object", "unicode", "not-a-list"])
def test_array_bomb_is_refused_before_anything_is_allocated(tmp_path, value):
    path = checkpoint.save(tmp_path, 1, model=torch.nn.Linear(2, 2), extra=[1])
    _edit(path, _set_extra(value))  # a valid checksum: the decoder itself must refuse
    tracemalloc.start()
    try:
        with pytest.raises(CheckpointError, match=r"damaged.*(dtype|values must be)"):
            checkpoint.load(path, model=torch.nn.Linear(2, 2))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 20 * 2**20


def test_version_1_checkpoint_loads_with_a_warning_and_is_still_bounded(tmp_path):
    model = torch.nn.Linear(2, 2)
    path = checkpoint.save(tmp_path, 1, model=model, extra=[1])

    def to_v1(meta):
        meta["version"] = 1
        del meta["checksum"]
    _edit(path, to_v1, resign=False)
    with pytest.warns(UserWarning, match="version 1.*no checksum"):
        assert checkpoint.load(path, model=torch.nn.Linear(2, 2))["extra"] == [1]
    _edit(path, _set_extra(BOMB), resign=False)
    with pytest.warns(UserWarning, match="no checksum"), \
            pytest.raises(CheckpointError, match="dtype"):
        checkpoint.load(path, model=torch.nn.Linear(2, 2))


def test_arrays_of_other_dtypes_are_refused_on_save(tmp_path):
    with pytest.raises(CheckpointError, match=r"dtype <U1.*astype"):
        checkpoint.save(tmp_path, 1, names=np.array(["a"]))
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("part,value", [
    ("python", "garbage"), ("numpy", {"__tuple__": ["MT19937", 5]}),
    ("torch", [1, 2]), ("cuda", ["x"]), (None, "garbage")])
def test_damaged_rng_state_restores_nothing(tmp_path, part, value):
    saved = torch.nn.Linear(3, 2)
    path = checkpoint.save(tmp_path, 1, model=saved)

    def damage(meta):
        if part is None:
            meta["state"]["rng"] = value
        else:
            meta["state"]["rng"][part] = value
    _edit(path, damage)
    other = torch.nn.Linear(3, 2)
    before = {k: v.clone() for k, v in other.state_dict().items()}
    states = random.getstate(), np.random.get_state()[1].copy(), torch.get_rng_state()  # noqa: NPY002
    with pytest.raises(CheckpointError, match=r"saved RNG state.*damaged.*rng=False"):
        checkpoint.load(path, model=other)
    assert all(torch.equal(v, before[k]) for k, v in other.state_dict().items())
    assert random.getstate() == states[0]
    assert (np.random.get_state()[1] == states[1]).all()  # noqa: NPY002
    assert torch.equal(torch.get_rng_state(), states[2])
    checkpoint.load(path, model=other, rng=False)  # the rest is still usable
    assert torch.equal(other.weight, saved.weight)


def test_disk_full_keeps_the_previous_files(tmp_path):
    """A real file-size limit (as a full disk): the write fails with OSError, the files
    saved before still load, and no partial file is left behind."""
    script = textwrap.dedent(f"""
        import resource, signal, sys, torch
        sys.path.insert(0, {ROOT!r})
        import ttqlab
        from ttqlab import checkpoint, export
        d = {str(tmp_path)!r}
        small = ttqlab.quantize(ttqlab.models.mlp(input_shape=(1, 8, 8), seed=0), "ttq")
        export.save(small, d + "/m.safetensors")
        checkpoint.save(d + "/run", 1, model=torch.nn.Linear(2, 2))
        big = torch.nn.Linear(800, 800)
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # write() fails with EFBIG instead
        soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
        resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, hard))
        for write in (lambda: export.save(ttqlab.quantize(big, "twn", keep_first_last=False),
                                          d + "/m.safetensors"),
                      lambda: checkpoint.save(d + "/run", 1, model=big)):
            try:
                write()
            except OSError as e:
                print("OSError", e.errno)
            else:
                print("written")
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[:2] == ["OSError 27", "OSError 27"]  # EFBIG, twice
    names = sorted(p.name for p in tmp_path.rglob("*"))
    assert names == ["checkpoint-000001.json", "checkpoint-000001.safetensors",
                     "m.safetensors", "run"]
    assert ttqlab.export.load(tmp_path / "m.safetensors")[1].weight.shape == (256, 64)
    small = torch.nn.Linear(2, 2)
    checkpoint.load(tmp_path / "run", model=small)


def test_run_directory_may_be_a_symlink(tmp_path):
    """Documented: a symlinked run directory is followed; its target holds the files."""
    target = tmp_path / "real"
    target.mkdir()
    link = tmp_path / "link"
    link.symlink_to(target)
    model = torch.nn.Linear(2, 2)
    checkpoint.save(link, 1, model=model)
    checkpoint.save(link, 2, model=model)
    assert link.is_symlink()
    assert sorted(p.name for p in target.iterdir()) == ["checkpoint-000002.json",
                                                        "checkpoint-000002.safetensors"]
    other = torch.nn.Linear(2, 2)
    assert checkpoint.load(link, model=other)["step"] == 2
    assert torch.equal(other.weight, model.weight)


def test_optimizer_over_other_parameters_is_named_before_the_model_changes(tmp_path):
    model = torch.nn.Linear(3, 2)
    sgd = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(4, 3)).sum().backward()
    sgd.step()
    checkpoint.save(tmp_path, 1, model=model, optimizer=sgd)
    fresh = torch.nn.Linear(3, 2)
    before = fresh.weight.clone()
    partial = torch.optim.SGD([fresh.weight], lr=0.1, momentum=0.9)
    with pytest.raises(CheckpointError, match=r"'optimizer'.*has 2 parameters, this one 1"):
        checkpoint.load(tmp_path, model=fresh, optimizer=partial)
    assert torch.equal(fresh.weight, before)
