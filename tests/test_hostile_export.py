"""Hostile packed files (issue 15, items 1, 2 and 10): bounded memory and time before
anything is built, checksums that catch single-bit flips, and the smaller cases."""

import json
import os
import random
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

import ttqlab
from ttqlab import export, models
from ttqlab.export import FormatError

ROOT = str(Path(ttqlab.__file__).resolve().parents[1])


def quantize_by(model: nn.Module, method: str, **options) -> nn.Module:
    """``model`` quantized in place by ``method``; INQ run through all its steps (shared with
    tests/test_deploy.py)."""
    if method == "inq":
        inq = ttqlab.INQ(model, **options)
        while not inq.done:
            inq.step()
    else:
        ttqlab.quantize(model, method, **options)
    return model


def _lenet(method="ttq", **options):
    return quantize_by(ttqlab.models.lenet5(input_shape=(1, 8, 8), seed=0), method,
                       **options).eval()


def _inputs(n=4):
    return torch.randn(n, 1, 8, 8, generator=torch.Generator().manual_seed(1))


def _bomb(path, hidden=(20000, 20000)):
    """A tiny, well-formed file whose manifest asks for a huge MLP."""
    manifest = {"format": "ttqlab", "version": export.FORMAT_VERSION, "ttqlab": "0.1.0",
                "packing": "base3", "quantized": [],
                "architecture": {"name": "mlp", "kwargs": {"input_shape": [1, 8, 8],
                                                           "hidden": list(hidden)}}}
    tensors = {export.CODES: torch.zeros(0, dtype=torch.uint8), export.SCALES: torch.zeros(0),
               "0.weight": torch.zeros(2, 2)}
    export.write(path, tensors, manifest)
    return path


# --------------------------------------------------------------------------- item 1


def test_bomb_is_refused_before_the_model_is_built(tmp_path, monkeypatch):
    """The architecture's shapes are checked on the meta device: the real builder is
    never called for a file that does not hold the model's weights."""
    path = _bomb(tmp_path / "bomb.safetensors")
    devices = []
    real = models.MODELS["mlp"]

    def spy(**kwargs):
        devices.append(torch.empty(0).device.type)  # the default device during the build
        return real(**kwargs)

    monkeypatch.setitem(models.MODELS, "mlp", spy)
    with pytest.raises(FormatError, match=r"the architecture|does not match|lacks|holds"):
        export.load(path)
    assert devices and set(devices) == {"meta"}, devices


def test_many_layer_bomb_is_cut_short(tmp_path, monkeypatch):
    """A kwargs list asking for a million layers is aborted after a few registrations."""
    path = _bomb(tmp_path / "deep.safetensors", hidden=[1] * 1_000_000)
    with pytest.raises(FormatError, match="far more tensors than the file holds"):
        export.load(path)


def test_bomb_memory_is_bounded(tmp_path):
    """Peak RSS growth while loading the 1.6 GB bomb stays under 300 MB (a subprocess,
    so the measurement is this load's alone)."""
    path = _bomb(tmp_path / "bomb.safetensors")
    code = textwrap.dedent(f"""
        import resource, ttqlab.export as e
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        try:
            e.load({str(path)!r})
        except e.FormatError:
            pass
        else:
            raise SystemExit("no FormatError")
        print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, env={**os.environ, "PYTHONPATH": ROOT})
    assert out.returncode == 0, out.stderr
    assert int(out.stdout.split()[-1]) < 300  # MB (ru_maxrss is in KB on Linux)


def test_deep_manifest_is_a_format_error(tmp_path):
    for depth in (40, 100_000):
        path = tmp_path / f"deep{depth}.safetensors"
        save_file({"w": torch.zeros(1)}, path,
                  metadata={"ttqlab": '{"format": "ttqlab", "x": ' + "[" * depth
                            + "]" * depth + "}"})
        with pytest.raises(FormatError, match="nests deeper"):
            export.load(path)


def test_many_zero_size_layers_are_checked_in_linear_time(tmp_path):
    """20k zero-size layers: the duplicate check is a set (was quadratic: 10 s). The
    file then fails on the architecture; generous bound, not a timing test."""
    n = 20_000
    layers = {f"l{i}": [0, 4] for i in range(n)}
    manifest = {"format": "ttqlab", "version": export.FORMAT_VERSION, "ttqlab": "0.1.0",
                "packing": "base3", "architecture": None,
                "quantized": [{"method": "twn", "options": {"per_channel": False},
                               "layers": layers}]}
    tensors = {export.CODES: torch.zeros(0, dtype=torch.uint8),
               export.SCALES: torch.ones(n)}
    path = tmp_path / "zero.safetensors"
    export.write(path, tensors, manifest)
    quantized, _ = export.unpack(*export.read(path))
    assert len(quantized) == n
    manifest["quantized"].append(dict(manifest["quantized"][0], layers={"l7": [0, 4]}))
    export.write(path, {**tensors, export.SCALES: torch.ones(n + 1)}, manifest)
    with pytest.raises(FormatError, match="'l7' appears twice"):
        export.unpack(*export.read(path))


# --------------------------------------------------------------------------- item 2


def _regions(path):
    """Byte ranges of each tensor's payload in a safetensors file."""
    data = path.read_bytes()
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + n])
    return data, {k: (8 + n + v["data_offsets"][0], 8 + n + v["data_offsets"][1])
                  for k, v in header.items() if k != "__metadata__"}, n


@pytest.mark.parametrize("tensor", [export.CODES, export.SCALES, "bn1.running_var"])
def test_every_bit_flip_in_a_tensor_is_detected(tmp_path, tensor):
    path = tmp_path / "m.safetensors"
    export.save(_lenet(), path)
    data, regions, _ = _regions(path)
    start, end = regions[tensor]
    rng = random.Random(0)
    positions = [start, end - 1] + [rng.randrange(start, end) for _ in range(30)]
    for pos in positions:
        bit = rng.randrange(8)
        bad = bytearray(data)
        bad[pos] ^= 1 << bit
        out = tmp_path / "flip.safetensors"
        out.write_bytes(bytes(bad))
        with pytest.raises(FormatError, match=f"tensor '{tensor}': SHA-256 mismatch"):
            export.load(out)


def test_inq_n1_flip_is_detected(tmp_path):
    path = tmp_path / "inq.safetensors"
    model = _lenet("inq", bits=5)
    export.save(model, path)
    _, manifest = export.read(path)
    n1 = manifest["quantized"][0]["n1"]
    name = next(iter(n1))
    data = path.read_bytes()
    old = f'\\"{name}\\":{n1[name]}'.encode()  # the manifest is JSON inside JSON
    assert data.count(old) == 1
    at = data.index(old) + len(old) - 1  # the last digit of n1
    flipped = bytearray(data)
    flipped[at] ^= 1  # one bit: e.g. -5 -> -4
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(bytes(flipped))
    with pytest.raises(FormatError, match="manifest: SHA-256 mismatch"):
        export.load(bad)
    x = _inputs()
    assert torch.equal(export.load(path)(x), model(x))


def test_stripped_or_added_checksums(tmp_path):
    path = tmp_path / "m.safetensors"
    export.save(_lenet(), path)
    tensors, manifest = export.read(path)
    meta = {"ttqlab": json.dumps({k: v for k, v in manifest.items() if k != "sha256"})}
    stripped = tmp_path / "stripped.safetensors"
    save_file(tensors, stripped, metadata=meta)
    with pytest.raises(FormatError, match=r"'sha256'.*missing"):
        export.load(stripped)
    extra = tmp_path / "extra.safetensors"
    save_file({**tensors, "bn9.weight": torch.zeros(1)}, extra,
              metadata={"ttqlab": json.dumps(manifest)})
    n = len(tensors)
    with pytest.raises(FormatError, match=f"holds {n + 1} tensors, its checksums list {n}"):
        export.load(extra)


def test_version_1_file_loads_with_a_warning(tmp_path):
    """Files from ttqlab 0.1 have no checksums: they stay usable, with a warning."""
    model = _lenet()
    tensors, manifest = export.pack(model)
    manifest["version"] = 1
    old = tmp_path / "v1.safetensors"
    save_file(tensors, old, metadata={"ttqlab": json.dumps(manifest)})
    with pytest.warns(UserWarning, match="version 1.*no checksums"):
        loaded = export.load(old)
    x = _inputs()
    assert torch.equal(loaded(x), model(x))
    new = tmp_path / "v2.safetensors"
    export.save(model, new)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        export.load(new)


# --------------------------------------------------------------------------- item 10


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_file_mode_follows_the_umask(tmp_path, umask):
    old = os.umask(umask)
    try:
        path = tmp_path / "m.safetensors"
        export.save(_lenet(), path)
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask


def test_report_escapes_terminal_sequences(tmp_path):
    model = _lenet()
    tensors, manifest = export.pack(model)
    manifest["ttqlab"] = "0.1\x1b[2J\x1b]0;pwned\x07"
    path = tmp_path / "m.safetensors"
    export.write(path, tensors, manifest)
    text = export.report(path)
    assert "\x1b" not in text and "\x07" not in text
    assert "\\x1b[2J" in text
    assert "\n" in text  # line breaks kept


def test_meta_device_models_get_a_clear_message(tmp_path):
    path = tmp_path / "m.safetensors"
    export.save(_lenet(), path)
    with torch.device("meta"):
        target = ttqlab.models.lenet5(input_shape=(1, 8, 8))
    with pytest.raises(ValueError, match=r"meta device.*to_empty"):
        export.load(path, target)
    with pytest.raises(ValueError, match="meta device"):
        export.save(target, tmp_path / "meta.safetensors")


def test_zero_size_binary_layer_round_trips(tmp_path):
    def net():
        return nn.Sequential(nn.Linear(4, 0), nn.Linear(0, 4), nn.Linear(4, 2))

    model = ttqlab.quantize(net(), "binary", keep_first_last=False)
    path = tmp_path / "z.safetensors"
    export.save(model, path)
    x = torch.randn(3, 4)
    assert torch.equal(export.load(path, net())(x), model(x))


def test_huge_inq_weight_is_a_clear_error_not_inf(tmp_path):
    model = ttqlab.models.lenet5(input_shape=(1, 8, 8), seed=0)
    with torch.no_grad():
        model.conv2.weight[0, 0, 0, 0] = 3e38
    inq = ttqlab.INQ(model, bits=5)
    with pytest.raises(ValueError, match=r"'conv2'.*2\^128.*overflows"):
        inq.step()
    assert inq.steps_taken == 0
    assert all(not bool(q.frozen_mask.any()) for _, _, q in inq.layers)


# --------------------------------------------------------------------------- dtypes


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("method", ["ttq", "twn", "binary"])
def test_every_float_dtype_round_trips_from_the_file_alone(tmp_path, method, dtype):
    model = ttqlab.quantize(ttqlab.models.mlp(input_shape=(1, 8, 8), seed=0).to(dtype),
                            method).eval()
    path = tmp_path / "h.safetensors"
    export.save(model, path)
    assert export.read(path)[1]["dtype"] == str(dtype).removeprefix("torch.")
    loaded = export.load(path)
    assert {p.dtype for p in loaded.parameters()} == {dtype}
    x = _inputs().to(dtype)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


def test_files_without_a_dtype_are_float32_and_bad_dtypes_are_named(tmp_path):
    tensors, manifest = export.pack(_lenet())
    del manifest["dtype"]
    old = tmp_path / "old.safetensors"
    export.write(old, tensors, manifest)
    assert {p.dtype for p in export.load(old).parameters()} == {torch.float32}
    for bad in ("int8", ["float16"], "float128"):
        export.write(old, tensors, {**manifest, "dtype": bad})
        with pytest.raises(FormatError, match=r"field 'dtype' must be one of \['bfloat16'"):
            export.load(old)


# --------------------------------------------------------------------------- interrupted writes


def test_ctrl_c_during_save_leaves_the_old_file_and_nothing_partial(tmp_path, monkeypatch):
    path = tmp_path / "m.safetensors"
    export.save(_lenet(), path)
    good = path.read_bytes()
    real_fsync = os.fsync

    def interrupt(fd):  # the bytes are written, not yet renamed: the worst moment
        raise KeyboardInterrupt
    monkeypatch.setattr(export.os, "fsync", interrupt)
    with pytest.raises(KeyboardInterrupt):
        export.save(_lenet("twn"), path)
    monkeypatch.setattr(export.os, "fsync", real_fsync)
    assert path.read_bytes() == good
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]


def test_concurrent_writers_leave_one_whole_file(tmp_path):
    import threading
    path = tmp_path / "m.safetensors"
    models_ = [_lenet("ttq"), _lenet("twn")]
    errors = []

    def writer(model):
        try:
            for _ in range(10):
                export.save(model, path)
        except Exception as e:  # reported below
            errors.append(e)
    threads = [threading.Thread(target=writer, args=(m,)) for m in models_]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]
    x = _inputs()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = export.load(path)(x)
    assert any(torch.equal(out, m(x)) for m in models_)


def test_a_symlinked_path_is_replaced_not_written_through(tmp_path):
    target = tmp_path / "elsewhere.txt"
    target.write_text("keep me")
    link = tmp_path / "m.safetensors"
    link.symlink_to(target)
    export.save(_lenet(), link)
    assert not link.is_symlink() and target.read_text() == "keep me"
    export.load(link)


def test_tampered_version_1_file_warns_and_range_checks_codes(tmp_path):
    """Documented: version-1 files have no checksums, so an edited scale loads (with the
    warning that says so); codes out of range are still a FormatError."""
    model = _lenet()
    tensors, manifest = export.pack(model)
    manifest["version"] = 1
    old = tmp_path / "v1.safetensors"
    tampered = {**tensors, export.SCALES: tensors[export.SCALES] * 2}
    save_file(tampered, old, metadata={"ttqlab": json.dumps(manifest)})
    with pytest.warns(UserWarning, match="version 1.*no checksums"):
        export.load(old)
    codes = tensors[export.CODES].clone()
    codes[0] = 255  # not a base-3 byte
    save_file({**tensors, export.CODES: codes}, old, metadata={"ttqlab": json.dumps(manifest)})
    with pytest.warns(UserWarning, match="no checksums"), pytest.raises(FormatError,
                                                                        match="layer"):
        export.load(old)
