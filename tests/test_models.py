import numpy as np
import pytest
import torch

import ttqlab
from ttqlab import models


@pytest.mark.parametrize("name, shape", [
    ("mlp", (1, 8, 8)), ("mlp", (1, 40)), ("lenet5", (1, 28, 28)), ("lenet5", (1, 8, 8)),
    ("vgg7", (3, 32, 32)), ("resnet20", (3, 32, 32)), ("resnet20", (1, 28, 28)),
    ("cnn1d", (1, 40)), ("cnn1d", (2, 12)),
])
def test_shapes(name, shape):
    kw = {"width": 0.125} if name == "vgg7" else {}
    m = models.get(name, input_shape=shape, num_classes=7, seed=0, **kw).eval()
    assert m(torch.randn(2, *shape)).shape == (2, 7)


@pytest.mark.parametrize("depth, convs", [(20, 19), (32, 31), (44, 43), (56, 55)])
def test_resnet_depths(depth, convs):
    m = models.get(f"resnet{depth}")
    n_conv = sum(isinstance(x, torch.nn.Conv2d) for x in m.modules())
    assert n_conv == convs and m.ttqlab_spec == {"name": "resnet", "kwargs": {"depth": depth}}


def test_lenet5_is_twn_architecture():
    m = models.lenet5()
    assert (m.conv1.out_channels, m.conv1.kernel_size) == (32, (5, 5))
    assert (m.conv2.out_channels, m.fc1.out_features) == (64, 512)
    assert m.fc1.in_features == 64 * 4 * 4


def test_seed_gives_same_weights_without_touching_global_rng():
    state = torch.get_rng_state()
    a, b = models.lenet5(seed=3), models.lenet5(seed=3)
    assert torch.equal(torch.get_rng_state(), state)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(),
                                                 b.state_dict().values()))


def test_spec_rebuilds_same_architecture():
    m = models.vgg7(input_shape=(3, 16, 16), width=0.25, seed=1)
    spec = m.ttqlab_spec
    m2 = models.get(spec["name"], **spec["kwargs"])
    assert m.state_dict().keys() == m2.state_dict().keys()


def test_bad_model_arguments():
    with pytest.raises(ValueError, match="unknown model"):
        models.get("alexnet")
    with pytest.raises(ValueError, match="6n\\+2"):
        models.resnet(depth=21)
    with pytest.raises(TypeError, match="keyword"):
        models.lenet5((1, 28, 28))
    with pytest.raises(ValueError, match="too small"):
        models.vgg7(input_shape=(3, 4, 4))
    with pytest.raises(ValueError, match="1-D samples"):
        models.cnn1d(input_shape=(1, 8, 8))


@pytest.mark.parametrize("name", ["mlp", "cnn1d", "lenet5"])
@pytest.mark.parametrize("batch_norm", ["no", 0, None], ids=repr)
def test_batch_norm_is_true_or_false(name, batch_norm):
    with pytest.raises(TypeError, match=rf"batch_norm must be True or False, got "
                                        rf"{batch_norm!r} \({type(batch_norm).__name__}\)"):
        models.get(name, batch_norm=batch_norm)  # "no" used to build batch norm layers
    plain = models.get(name, batch_norm=False)
    assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in plain.modules())


@pytest.mark.parametrize("seed, says", [(1.5, r"got 1.5 \(float\)"), ("0", r"got '0' \(str\)"),
                                        (True, r"got True \(bool\)")])
def test_seed_is_an_int_or_none(seed, says):
    with pytest.raises(ValueError, match=rf"seed must be a whole number .*, or None, {says}; "
                                         rf"the same seed gives the same weights"):
        models.mlp(seed=seed)
    a, b = models.mlp(seed=np.int64(3)), models.mlp(seed=3)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


@pytest.mark.parametrize("patch, says", [
    (0, r"patch must be a whole number .*>= 1, got 0 \(int\); a divisor of the length 40"),
    (True, r"patch must be a whole number .*, got True \(bool\)"),
    (2.0, r"patch must be a whole number .*, got 2.0 \(float\)"),
    (3, r"patch must be a positive integer dividing the length 40, got 3; e.g. patch=1"),
])
def test_patch_is_a_whole_divisor_of_the_length(patch, says):
    for name in ("transformer", "gru", "lstm", "bag_of_tokens"):
        with pytest.raises(ValueError, match=says):
            models.get(name, input_shape=(1, 40), patch=patch)


def test_all_models_quantize(tmp_path):
    for name in ("mlp", "lenet5", "resnet20"):
        m = ttqlab.quantize(models.get(name), "twn")
        assert len(list(ttqlab.quantized_layers(m))) >= 1
