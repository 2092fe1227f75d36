import json
import os

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

import ttqlab
from ttqlab import export
from ttqlab.export import FormatError

METHODS = [("binary", {}), ("twn", {}), ("twn", {"per_channel": True}), ("ttq", {}),
           ("inq", {"bits": 5}), ("inq", {"bits": 2})]
IDS = ["binary", "twn", "twn-per-channel", "ttq", "inq5", "inq2"]


def _quantize(model, method, options, keep_first_last=True):
    if method == "inq":
        inq = ttqlab.INQ(model, keep_first_last=keep_first_last, **options)
        while not inq.done:
            inq.step()
    else:
        ttqlab.quantize(model, method, keep_first_last=keep_first_last, **options)
        for _, _, q in ttqlab.quantized_layers(model):
            if method == "ttq":  # trained scales are not the initial ones
                with torch.no_grad():
                    q.wp.mul_(1.3)
                    q.wn.mul_(0.8)
    return model


def _settle(model, shape, seed=0):
    """Give BatchNorm non-trivial running statistics, as training would; then eval."""
    g = torch.Generator().manual_seed(seed)
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(2 * torch.randn(16, *shape, generator=g) + 0.5)
    return model.eval()


def _lenet(method="ttq", options=None):
    m = ttqlab.models.lenet5(input_shape=(1, 8, 8), seed=0)
    return _settle(_quantize(m, method, options or {}), (1, 8, 8))


def _inputs(shape, n=8):
    return torch.randn(n, *shape, generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A TTQ LeNet-5 and its base-3 file (read only: tampering tests write copies)."""
    path = tmp_path_factory.mktemp("saved") / "lenet.ttq.safetensors"
    model = _lenet()
    export.save(model, path)
    return model, path


@pytest.mark.parametrize(("method", "options"), METHODS, ids=IDS)
@pytest.mark.parametrize("packing", ["2bit", "base3"])
def test_lenet_round_trip_has_identical_outputs(tmp_path, method, options, packing):
    model = _lenet(method, options)
    path = tmp_path / "m.ttq.safetensors"
    size = export.save(model, path, packing=packing)
    assert size == os.path.getsize(path)
    loaded = export.load(path)  # the architecture comes from the file
    x = _inputs((1, 8, 8))
    assert not loaded.training and not any(True for _ in ttqlab.quantized_layers(loaded))
    assert torch.equal(loaded(x), model(x))
    for name, qw in ttqlab.extract(model).items():
        assert torch.equal(dict(loaded.named_modules())[name].weight, qw.dequantize())


@pytest.mark.parametrize(("method", "options"), METHODS, ids=IDS)
def test_resnet_round_trip_all_layers_quantized(tmp_path, method, options):
    model = ttqlab.models.resnet(depth=8, input_shape=(3, 12, 12), width=8, seed=0)
    _settle(_quantize(model, method, options, keep_first_last=False), (3, 12, 12))
    path = tmp_path / "r.ttq.safetensors"
    export.save(model, path, packing="base3")
    x = _inputs((3, 12, 12))
    assert torch.equal(export.load(path, "resnet")(x), model(x))


class TinyNet(nn.Module):
    """A user-defined model: Conv1d, a bias, a buffer of its own; no ttqlab spec."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv1d(2, 6, 3)
        self.hidden = nn.Linear(6 * 14, 20)
        self.out = nn.Linear(20, 3)
        self.register_buffer("offset", torch.linspace(-1, 1, 16))

    def forward(self, x):
        h = torch.relu(self.conv(x + self.offset))
        return self.out(torch.relu(self.hidden(h.flatten(1))))


def test_custom_model_needs_an_instance(tmp_path):
    torch.manual_seed(3)
    model = ttqlab.quantize(TinyNet(), "ttq", keep_first_last=False).eval()
    path = tmp_path / "tiny.safetensors"
    export.save(model, path, packing="2bit")
    with pytest.raises(ValueError, match=r"custom architecture.*load\(path, MyModel\(\)\)"):
        export.load(path)
    torch.manual_seed(4)
    fresh = TinyNet()
    loaded = export.load(path, fresh)
    assert loaded is fresh  # filled in place, like load_state_dict
    x = _inputs((2, 16))
    assert torch.equal(loaded(x), model(x))


def test_file_holds_codes_not_latent_weights(saved):
    model, path = saved
    tensors, manifest = export.read(path)
    assert set(tensors) >= {export.CODES, export.SCALES, "conv1.weight", "bn1.running_var"}
    assert "conv2.weight" not in tensors and "fc1.weight" not in tensors
    assert not any("parametrizations" in k or "num_batches_tracked" in k for k in tensors)
    assert manifest["format"] == "ttqlab" and manifest["version"] == export.FORMAT_VERSION
    assert manifest["ttqlab"] == ttqlab.__version__ and manifest["packing"] == "base3"
    assert manifest["architecture"] == {"name": "lenet5", "kwargs": {"input_shape": [1, 8, 8]}}
    (group,) = manifest["quantized"]
    assert group["method"] == "ttq" and group["options"]["t"] == 0.05
    assert group["layers"] == {"conv2": [64, 32, 5, 5], "fc1": [512, 256]}
    wp = [q.scales()["wp"].item() for _, _, q in ttqlab.quantized_layers(model)]
    assert tensors[export.SCALES][::2].tolist() == wp  # W_p, W_n per layer


@pytest.mark.parametrize(("method", "options"), METHODS, ids=IDS)
def test_size_report_is_the_file_and_agrees_with_layer_report(tmp_path, method, options):
    model = _lenet(method, options)
    path = tmp_path / "m.safetensors"
    size = export.save(model, path, packing="base3")
    rows = {r["layer"]: r for r in export.size_report(path)}
    assert rows["(total)"]["packed bytes"] == size
    assert sum(r["packed bytes"] for k, r in rows.items() if k != "(total)") == size
    expected = {r["layer"]: r for r in ttqlab.layer_report(model, packing="base3")}
    for name in ("conv1", "conv2", "fc1", "fc2"):
        assert rows[name]["packed bytes"] == expected[name]["packed bytes"]
        assert rows[name]["fp32 bytes"] == expected[name]["fp32 bytes"]
    assert rows["(other)"]["packed bytes"] == expected["(other)"]["packed bytes"]
    text = export.report(path)
    assert "quantized layers:" in text and "x smaller" in text and "lenet5" in text


def test_ternary_layers_are_really_20x_and_16x_smaller(tmp_path):
    model = _lenet("twn")
    for packing, bits in (("base3", 1.6), ("2bit", 2.0)):
        path = tmp_path / f"{packing}.safetensors"
        export.save(model, path, packing=packing)
        rows = {r["layer"]: r for r in export.size_report(path)}
        assert rows["fc1"]["bits/weight"] == pytest.approx(bits, abs=1e-4)
        assert rows["fc1"]["ratio"] > 0.99 * 32 / bits


def test_save_refuses_partly_frozen_inq(tmp_path):
    model = ttqlab.models.lenet5(input_shape=(1, 8, 8), seed=0)
    ttqlab.INQ(model, bits=5).step()
    with pytest.raises(ValueError, match=r"inq.step\(\)"):
        export.save(model, tmp_path / "m.safetensors")
    assert not (tmp_path / "m.safetensors").exists()


def test_save_rejects_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="packing must be one of"):
        export.save(_lenet(), tmp_path / "m", packing="3bit")
    with pytest.raises(TypeError, match=r"nn\.Module"):
        export.save({"w": torch.zeros(3)}, tmp_path / "m")


def test_load_by_name_and_instance(saved):
    model, path = saved
    x = _inputs((1, 8, 8))
    assert torch.equal(export.load(path, "lenet5")(x), model(x))
    instance = ttqlab.models.lenet5(input_shape=(1, 8, 8), seed=5)
    assert torch.equal(export.load(path, instance)(x), model(x))
    with pytest.raises(ValueError, match="unknown model 'lenet6'"):
        export.load(path, "lenet6")
    with pytest.raises(ValueError, match="quantized"):
        export.load(path, ttqlab.quantize(ttqlab.models.lenet5(input_shape=(1, 8, 8)), "ttq"))


# --------------------------------------------------------------------------- bad input


def _tampered(path, tmp_path, edit):
    tensors, manifest = export.read(path)
    edit(tensors, manifest)
    out = tmp_path / "tampered.safetensors"
    export.write(out, tensors, manifest)
    return out


def test_truncated_and_foreign_files(saved, tmp_path):
    _, path = saved
    data = path.read_bytes()
    for cut in (len(data) - 1, len(data) // 2, 100, 5):
        bad = tmp_path / f"cut{cut}.safetensors"
        bad.write_bytes(data[:cut])
        with pytest.raises(FormatError, match="truncated"):
            export.load(bad)
    plain = tmp_path / "plain.safetensors"
    save_file({"w": torch.zeros(3)}, plain)
    with pytest.raises(FormatError, match="without a ttqlab manifest"):
        export.load(plain)
    broken = tmp_path / "broken.safetensors"
    save_file({"w": torch.zeros(3)}, broken, metadata={"ttqlab": "{not json"})
    with pytest.raises(FormatError, match="not valid JSON"):
        export.load(broken)
    with pytest.raises(FileNotFoundError):
        export.load(tmp_path / "missing.safetensors")


def _set(key, value):
    def edit(tensors, manifest):
        manifest[key] = value
    return edit


def _group(key, value):
    def edit(tensors, manifest):
        manifest["quantized"][0][key] = value
    return edit


def _layers(layers):
    return _group("layers", layers)


def _drop(key):
    def edit(tensors, manifest):
        del tensors[key]
    return edit


def _code_byte(index, value):
    def edit(tensors, manifest):
        tensors[export.CODES][index] = value
    return edit


def _bn_as_double(tensors, manifest):
    tensors["bn1.weight"] = tensors["bn1.weight"].double()


def _nan_scale(tensors, manifest):
    tensors[export.SCALES][0] = float("nan")


@pytest.mark.parametrize(("edit", "match"), [
    (_set("version", export.FORMAT_VERSION + 1), "format version 3.*upgrade ttqlab"),
    (_set("version", "1"), "'version' must be a positive integer"),
    (_set("version", True), "'version' must be a positive integer"),
    (_set("version", 0), "'version' must be a positive integer"),
    (_set("format", "onnx"), "'format' must be 'ttqlab'"),
    (_set("packing", "4bit"), "'packing' must be one of"),
    (_set("architecture", {"name": "evil", "kwargs": {}}), "'evil' is not one of"),
    (_set("architecture", {"name": "lenet5", "kwargs": {"depth": 3}}),
     "cannot rebuild architecture"),
    (_set("architecture", {"name": "lenet5", "kwargs": {"input_shape": [1, 28, 28]}}),
     r"layer 'fc1'.*\(512, 256\).*\(512, 1024\)"),
    (_group("method", "tnn"), "unknown method 'tnn'"),
    (_group("options", {"t": 0.05, "evil": 1}), "unknown option 'evil'"),
    (_group("options", {"reduce": "max"}), "option 'reduce' has an invalid value"),
    (_layers({"conv2": [64, 32, 5, 4], "fc1": [512, 256]}), "must be 34407 uint8 bytes.*got 36455"),
    (_layers({"conv2": [32, 64, 5, 5], "fc1": [512, 256]}),
     r"layer 'conv2'.*\(32, 64, 5, 5\).*\(64, 32, 5, 5\)"),
    (_layers({"conv2": [64, 32, 5, 5], "fc9": [512, 256]}), "layer 'fc9'.*not a Linear/Conv"),
    (_layers({"conv2": [64, 32, 5, 5], "fc1": "512x256"}), "layer 'fc1': shape must be"),
    (_layers({"conv2": [64, 32, 5, True], "fc1": [512, 256]}), "layer 'conv2': shape must be"),
    (_layers({"conv2": [64, 32, 5, 5]}), "must be 10240 uint8 bytes"),
    (_drop(export.CODES), "'ttqlab.codes' is missing"),
    (_drop("bn1.running_mean"), r"lacks \['bn1.running_mean'\]"),
    (_code_byte(0, 250), "layer 'conv2': base-3 bytes must be below 243"),
    (_code_byte(-1, 242), "layer 'fc1': padding digits"),
    (_bn_as_double, "'bn1.weight'.*float64.*float32"),
    (_nan_scale, "NaN"),
], ids=["newer-version", "version-type", "version-bool", "version-zero", "format", "packing",
        "arch-name", "arch-kwargs", "arch-shape", "method", "option", "option-value",
        "shape-numel", "shape-swapped", "layer-name", "shape-type", "shape-bool", "layer-missing",
        "codes-missing", "float-missing", "code-range", "padding", "dtype", "nan-scale"])
def test_tampered_file_is_rejected(saved, tmp_path, edit, match):
    _, path = saved
    with pytest.raises(FormatError, match=match):
        export.load(_tampered(path, tmp_path, edit))


def test_extra_tensor_and_stray_float_are_rejected(saved, tmp_path):
    _, path = saved

    def extra(tensors, manifest):
        tensors["head.weight"] = torch.zeros(2, 2)

    with pytest.raises(FormatError, match=r"holds \['head.weight'\]"):
        export.load(_tampered(path, tmp_path, extra))

    def duplicate(tensors, manifest):
        tensors["conv2.weight"] = torch.zeros(64, 32, 5, 5)

    with pytest.raises(FormatError, match="both quantized and as a float"):
        export.load(_tampered(path, tmp_path, duplicate))


@pytest.mark.parametrize(("packing", "byte", "match"), [
    ("2bit", 0b11, "code 3 is not a ternary digit"),
])
def test_invalid_2bit_code(tmp_path, packing, byte, match):
    path = tmp_path / "m.safetensors"
    export.save(_lenet("ttq"), path, packing=packing)
    with pytest.raises(FormatError, match=f"layer 'conv2': 2-bit {match}"):
        export.load(_tampered(path, tmp_path, _code_byte(0, byte)))


def test_invalid_inq_codes_and_exponents(tmp_path):
    path = tmp_path / "m.safetensors"
    export.save(_lenet("inq", {"bits": 5}), path)
    with pytest.raises(FormatError, match="layer 'conv2': INQ level index 9 is out of range"):
        export.load(_tampered(path, tmp_path, _code_byte(0, 9)))
    with pytest.raises(FormatError, match="layer 'conv2': n1 must be an integer"):
        export.load(_tampered(path, tmp_path, _group("n1", {"conv2": 200, "fc1": -4})))
    with pytest.raises(FormatError, match="'n1' must give every INQ layer"):
        export.load(_tampered(path, tmp_path, _group("n1", {"conv2": -3})))
    with pytest.raises(FormatError, match="needs option 'bits'"):
        export.load(_tampered(path, tmp_path, _group("options", {})))


def test_wrong_architecture_leaves_the_model_untouched(saved):
    _, path = saved
    other = ttqlab.models.lenet5(input_shape=(1, 8, 8), num_classes=7, seed=0)
    before = {k: v.clone() for k, v in other.state_dict().items()}
    with pytest.raises(FormatError, match="fc2"):
        export.load(path, other)
    assert all(torch.equal(v, before[k]) for k, v in other.state_dict().items())


def test_manifest_is_plain_json_in_the_metadata(saved):
    _, path = saved
    raw = path.read_bytes()
    header = json.loads(raw[8:8 + int.from_bytes(raw[:8], "little")])
    manifest = json.loads(header["__metadata__"]["ttqlab"])
    assert manifest == export.read(path)[1]


def test_cli_export_then_report(tmp_path, capsys):
    from ttqlab.cli import main

    out = tmp_path / "mlp.ttq.safetensors"
    args = ["export", "--method", "twn", "--model", "mlp", "--dataset", "synthetic",
            "--epochs", "1", "--packing", "2bit", "--out", str(out)]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "layer report" in text and "bytes on disk (packing=2bit)" in text
    assert "quantized layers:" in text and "whole file:" in text
    # one size for the whole model, the file's: not also a training estimate beside it
    assert text.count("smaller than fp32") + text.count("x smaller)") == 2, text
    assert f"whole file: {out.stat().st_size:,} bytes on disk" in text
    assert export.read(out)[1]["quantized"][0]["method"] == "twn"
    assert main(["report", str(out)]) == 0
    assert str(export.size_report(out)) in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_:  # a usage error, before any work: status 2
        main(["report", str(tmp_path / "missing.safetensors")])
    assert exit_.value.code == 2
    assert "no such file" in capsys.readouterr().err
