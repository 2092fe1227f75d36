import pytest

import ttqlab
from ttqlab.stats import Table, layer_report, packed_nbytes


def test_packed_nbytes():
    assert packed_nbytes(10, "twn", packing="2bit") == 3
    assert packed_nbytes(10, "twn", packing="base3") == 2
    assert packed_nbytes(11, "ttq", packing="base3") == 3
    assert packed_nbytes(9, "binary") == 2
    assert packed_nbytes(10, "inq", bits=5) == 7
    assert packed_nbytes(10, "inq", bits=2, packing="base3") == 2
    with pytest.raises(ValueError, match="packing"):
        packed_nbytes(3, "twn", packing="4bit")


def test_layer_report_counts_every_parameter():
    m = ttqlab.quantize(ttqlab.models.lenet5(input_shape=(1, 8, 8), seed=0), "ttq")
    rep = layer_report(m)
    rows = {r["layer"]: r for r in rep}
    assert rows["conv1"]["method"] == "fp32" and rows["conv2"]["method"] == "ttq"
    n_params = sum(p.numel() for n, p in m.named_parameters() if not n.endswith((".wp", ".wn")))
    n_buffers = sum(b.numel() for n, b in m.named_buffers()
                    if b.is_floating_point() and ".parametrizations." not in n)
    assert rows["(total)"]["params"] == n_params + n_buffers
    assert rows["(total)"]["fp32 bytes"] == 4 * (n_params + n_buffers)
    conv2 = rows["conv2"]
    assert conv2["packed bytes"] == 64 * 32 * 25 // 4 + 8  # 2 bits each + W_p, W_n
    assert conv2["ratio"] == pytest.approx(4 * 51200 / (51200 / 4 + 8))
    assert "wp=" in conv2["scales"]
    assert 0 < conv2["sparsity"] < 1
    base3 = {r["layer"]: r for r in layer_report(m, packing="base3")}
    assert base3["conv2"]["packed bytes"] < conv2["packed bytes"]
    assert "conv2" in str(rep) and "<table>" in rep._repr_html_()
    assert rep.to_markdown().startswith("| layer |")


def test_layer_report_inq_and_float_model():
    m = ttqlab.models.mlp(seed=0)
    rows = layer_report(m).rows
    assert rows[-1]["ratio"] == 1.0
    inq = ttqlab.INQ(m, bits=4)
    inq.step()
    row = next(r for r in layer_report(m) if r["method"] == "inq")
    assert row["bits/weight"] == 4 and "frozen=0.5" in row["scales"]


@pytest.mark.parametrize("bits", [3, 5])
def test_layer_report_title_names_inq_bits_not_ternary_packing(bits):
    m = ttqlab.quantize(ttqlab.models.mlp(seed=0), "inq", bits=bits)
    text = str(layer_report(m))
    assert f"INQ {bits}-bit codes" in text and "2bit" not in text and "packing" not in text
    assert {r["bits/weight"] for r in layer_report(m).rows if r.get("method") == "inq"} == {bits}


def test_table_formatting():
    t = Table([{"a": 1.23456, "b": None}, {"a": float("nan"), "b": (2, 3)}], title="T")
    text = str(t)
    assert text.splitlines()[0] == "T" and "1.235" in text and "2x3" in text
    assert t.column("a")[0] == 1.23456 and len(t) == 2
