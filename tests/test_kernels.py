"""Every fast form in ``ttqlab/methods/kernels.py`` against its method's reference rule, on
every path ("cpu", "eager_device" forced on a CPU tensor, "compiled" evaluated eagerly;
and one real ``torch.compile`` per method in the slow tier).

"Bit for bit" below is ``torch.equal`` with the same dtype and shape: every value the
same, except that -0.0 and +0.0 count as equal (the arithmetic forms give -0.0 for a
negative weight in the zero region, the reference +0.0; no later operation can tell them
apart). TTQ's scale gradients are sums the kernels take in another order (a dot product
on the CPU and compiled paths, a masked sum in the reference): they agree to float32
summation round-off, a few ulps of the sum, and are compared with ``assert_close``.
"""

from unittest import mock

import pytest
import torch

import ttqlab
from ttqlab import quantizers as Q
from ttqlab.methods import kernels, ttq
from ttqlab.methods.kernels import PATHS

SHAPES = [(16, 8, 3, 3), (10, 7), (5,), (1, 6), (0, 3)]


def same(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)


def _weights(shape, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed + sum(shape))
    return torch.randn(*shape, generator=g, dtype=dtype)


def _tied() -> torch.Tensor:
    """Rows where ``|w| = E|w|`` exactly for some weights (TWN's threshold with factor 1),
    a row that is all zero, and a row of equal magnitudes (every weight on the threshold)."""
    return torch.tensor([[2.0, -2.0, 1.0, -1.0, 0.0, 0.0],
                         [0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
                         [0.5, -0.5, 0.5, -0.5, 0.5, 0.5],
                         [3.0, -1.0, 0.25, -0.25, 1.5, 0.0]])


@pytest.fixture
def forced():
    """Run the methods' forward on a named path (``kernels.path`` patched)."""
    def run(name, fn, *args):
        with mock.patch.object(kernels, "path", lambda t: name):
            return fn(*args)
    return run


def test_path_names_the_tensors_device():
    assert kernels.path(torch.ones(2)) == "cpu"
    assert kernels.path(torch.ones(2, device="meta")) == "eager_device"


def test_unknown_path_is_refused_with_the_names():
    with pytest.raises(ValueError, match="eager_device"):
        kernels.twn(torch.ones(3), 0.7, False, on="gpu")


# --------------------------------------------------------------------------- TWN


@pytest.mark.parametrize("on", PATHS)
@pytest.mark.parametrize("per_channel", [False, True])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_twn_kernel_is_the_reference_bit_for_bit(on, per_channel, shape, dtype):
    w = _weights(shape, dtype=dtype)
    assert same(kernels.twn(w, 0.7, per_channel, on), Q.ternarize_twn(w, 0.7, per_channel))


@pytest.mark.parametrize("on", PATHS)
@pytest.mark.parametrize("per_channel", [False, True])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_twn_counts_are_exact_in_half_precision(on, per_channel, dtype):
    """A bfloat16 sum of ones is not a count (9424 ones sum to 9408): alpha is the kept
    magnitudes' sum over the exact count, on every path and in the reference."""
    w = _weights((4, 3000), dtype=dtype)
    q = kernels.twn(w, 0.7, per_channel, on)
    assert same(q, Q.ternarize_twn(w, 0.7, per_channel))
    a = w.abs()
    delta = 0.7 * (a.mean(dim=1, keepdim=True) if per_channel else a.mean())
    kept = a > delta
    dims = {"dim": 1, "keepdim": True} if per_channel else {}
    alpha = ((a * kept).sum(**dims).double() / kept.sum(**dims).double()).to(dtype)
    assert kept.sum() > 2 * 256  # more ones than a bfloat16 counts exactly
    assert torch.equal(q.abs().amax(**dims), alpha.expand_as(q.abs().amax(**dims)))


@pytest.mark.parametrize("on", PATHS)
@pytest.mark.parametrize("per_channel", [False, True])
def test_twn_kernel_ties_and_all_zero_rows(on, per_channel):
    """factor 1: delta = E|w|, and the weights with |w| = delta are zero on every path."""
    w = _tied()
    q = kernels.twn(w, 1.0, per_channel, on)
    assert same(q, Q.ternarize_twn(w, 1.0, per_channel))
    if per_channel:
        assert not q[1].any() and not q[2].any()  # all zero; all on the threshold
        assert torch.equal(q[0], torch.tensor([2.0, -2.0, 0, 0, 0, 0]))


@pytest.mark.parametrize("on", PATHS)
@pytest.mark.parametrize("per_channel", [False, True])
@pytest.mark.parametrize("shape", [(16, 8, 3, 3), (5,), (0, 3)])
def test_twn_layer_forward_and_gradient_on_every_path(forced, on, per_channel, shape):
    w, g = _weights(shape), _weights(shape, seed=1)
    layer = ttqlab.methods.get("twn").build(w, per_channel=per_channel)
    latent = w.clone().requires_grad_()
    q = forced(on, layer, latent)
    q.backward(g)
    assert same(q.detach(), Q.ternarize_twn(w, 0.7, per_channel))
    assert same(latent.grad, g)  # the straight-through gradient


@pytest.mark.parametrize("on", PATHS)
def test_signs_and_ternary_are_the_codes(on):
    w = _tied()
    for delta in (torch.tensor(1.0), torch.tensor([[1.0], [0.0], [0.5], [0.25]])):
        t = Q.ternary_codes(w, delta).float()
        assert same(kernels.signs(w, delta, on), t)
        wp, wn = torch.tensor(1.25), torch.tensor(0.75)
        expected = torch.where(t > 0, wp, torch.where(t < 0, -wn, torch.tensor(0.0)))
        assert same(kernels.ternary(t, wp, wn), expected)


# --------------------------------------------------------------------------- TTQ


def _ttq_case(shape, seed=0):
    w, g = _weights(shape, seed), _weights(shape, seed + 1)
    delta = ttq.ttq_threshold(w, 0.05) if w.numel() else torch.tensor(0.0)
    if w.numel() > 2:
        w.view(-1)[0], w.view(-1)[1] = delta, -delta  # exactly on the threshold: zero
    return w, g, torch.tensor(1.3), torch.tensor(0.6), delta


@pytest.mark.parametrize("on", PATHS)
def test_ttq_threshold_kernel_is_t_max_abs(on):
    w = _weights((16, 8, 3, 3))
    w.view(-1)[5] = -10.0  # the largest magnitude is negative
    assert same(kernels.max_abs(w, on), w.abs().max())


@pytest.mark.parametrize("on", PATHS)
@pytest.mark.parametrize("reduce", ["sum", "mean"])
@pytest.mark.parametrize("unit", [None, torch.tensor(0.5)])
@pytest.mark.parametrize("shape", SHAPES)
def test_ttq_kernels_are_the_reference(on, reduce, unit, shape):
    w, g, wp, wn, delta = _ttq_case(shape)
    out, regions = kernels.ttq_forward(on, w, wp, wn, delta)
    assert same(out, ttq._ttq_rule(w, wp, wn, delta))
    grad_w, grad_wp, grad_wn = kernels.ttq_backward(on, g, regions, wp, wn, unit, reduce, True)
    ref_w, ref_wp, ref_wn = ttq._ttq_gradients(g, w, wp, wn, delta,
                                               1.0 if unit is None else unit, reduce)
    assert same(grad_w, ref_w)
    torch.testing.assert_close(grad_wp, ref_wp, rtol=1e-5, atol=1e-6)  # summation order
    torch.testing.assert_close(grad_wn, ref_wn, rtol=1e-5, atol=1e-6)
    assert kernels.ttq_backward(on, g, regions, wp, wn, unit, reduce, False)[0] is None


@pytest.mark.parametrize("on", PATHS)
@pytest.mark.parametrize("options", [{}, {"sparsity": 0.5}, {"reduce": "mean"},
                                     {"init": 1.0}])
def test_ttq_layer_forward_and_gradients_on_every_path(forced, on, options):
    """The backward takes the form of the path the forward took (``ctx.path``), whatever
    path is current when it runs: here the forward alone is forced."""
    w, g, *_ = _ttq_case((16, 8, 3, 3))
    layer = ttqlab.methods.get("ttq").build(w, **options)
    latent = w.clone().requires_grad_()
    q = forced(on, layer, latent)
    q.backward(g)
    wp, wn = (layer.scale * layer.wp).detach(), (layer.scale * layer.wn).detach()
    delta = layer.threshold(w)
    assert same(q.detach(), ttq._ttq_rule(w, wp, wn, delta))
    ref_w, ref_wp, ref_wn = ttq._ttq_gradients(g, w, wp, wn, delta, layer.scale,
                                               options.get("reduce", "sum"))
    assert same(latent.grad, ref_w)
    # dL/dwp = scale * dL/dW_p (W_p = scale * wp)
    torch.testing.assert_close(layer.wp.grad, layer.scale * ref_wp, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(layer.wn.grad, layer.scale * ref_wn, rtol=1e-5, atol=1e-6)


def test_ttq_reference_gradient_is_autograd_of_the_rule():
    """The reference backward's scale gradients are what autograd gives for the
    reference forward (the latent gradient is TTQ's own rule, not a derivative)."""
    w, g, wp, wn, delta = _ttq_case((10, 7))
    wp_, wn_ = wp.clone().requires_grad_(), wn.clone().requires_grad_()
    ttq._ttq_rule(w, wp_, wn_, delta).backward(g)
    _, ref_wp, ref_wn = ttq._ttq_gradients(g, w, wp, wn, delta)
    torch.testing.assert_close(wp_.grad, ref_wp)
    torch.testing.assert_close(wn_.grad, ref_wn)


# --------------------------------------------------------------------------- INQ


@pytest.mark.parametrize("on", PATHS)
@pytest.mark.parametrize("shape", [(16, 8, 3, 3), (10, 7), (5,)])
def test_inq_layer_is_where_frozen_on_every_path(forced, on, shape):
    w, g = _weights(shape), _weights(shape, seed=1)
    layer = ttqlab.methods.get("inq").build(w, bits=5)
    mask = _weights(shape, seed=2) > 0
    layer.freeze(w, mask)
    latent = w.clone().requires_grad_()
    q = forced(on, layer, latent)
    q.backward(g)
    assert same(q.detach(), torch.where(mask, layer.frozen_values, w))
    assert same(latent.grad, torch.where(mask, torch.tensor(0.0), g))


# --------------------------------------------------------------------------- binary, BitNet


@pytest.mark.parametrize("on", PATHS)
@pytest.mark.parametrize("method, options, reference", [
    ("binary", {}, lambda w: Q.binarize(w)),
    ("binary", {"scale": "channel"}, lambda w: Q.binarize(w, "channel")),
    ("binary", {"scale": "none"}, lambda w: Q.binarize(w, "none")),
    ("bitnet", {}, lambda w: Q.ternarize_absmean(w)),
    ("bitnet", {"eps": 0.0}, lambda w: Q.ternarize_absmean(w, 0.0)),
], ids=["binary", "binary-channel", "binary-none", "bitnet", "bitnet-eps0"])
@pytest.mark.parametrize("shape", [(16, 8, 3, 3), (5,), (1, 6)])
def test_one_form_methods_on_every_path(forced, on, method, options, reference, shape):
    """Binary and BitNet have one form on every path: their forward is their rule."""
    w, g = _weights(shape), _weights(shape, seed=1)
    if w.numel() > 3:
        w.view(-1)[:3] = torch.tensor([0.0, -0.0, 0.0])  # the sign bit; an exact zero
    layer = ttqlab.methods.get(method).build(w, **options)
    latent = w.clone().requires_grad_()
    q = forced(on, layer, latent)
    q.backward(g)
    assert same(q.detach(), reference(w))
    assert same(latent.grad, g)


# --------------------------------------------------------------------------- torch.compile


@pytest.mark.slow
@pytest.mark.needs_compile
def test_path_is_compiled_under_torch_compile():
    torch._dynamo.reset()
    fn = torch.compile(lambda t: t + float(kernels.path(t) == "compiled"), backend="eager",
                       fullgraph=True)
    assert torch.equal(fn(torch.zeros(3)), torch.ones(3))


@pytest.mark.slow
@pytest.mark.needs_compile
@pytest.mark.parametrize("method, options", [("binary", {}), ("twn", {}),
                                             ("twn", {"per_channel": True}), ("ttq", {}),
                                             ("inq", {}), ("bitnet", {})])
def test_a_compiled_layer_is_the_reference(method, options):
    """One real compile per method (AOTAutograd, so the backward is traced too): the
    compiled layer (the "compiled" path, see the test above) gives what the layer gives
    eagerly on the CPU path, which the tests above hold to the reference (TTQ's scale
    gradients to summation round-off)."""
    w, g, *_ = _ttq_case((8, 4, 3, 3))
    layer = ttqlab.methods.get(method).build(w, **options)
    if method == "inq":
        layer.freeze(w, _weights(w.shape, seed=2) > 0)
    torch._dynamo.reset()
    compiled = torch.compile(layer, backend="aot_eager", fullgraph=True)
    latent_c = w.clone().requires_grad_()
    q_c = compiled(latent_c)
    q_c.backward(g)
    grads_c = [p.grad.clone() for p in layer.parameters()]
    layer.zero_grad(set_to_none=True)
    latent_e = w.clone().requires_grad_()
    with mock.patch.object(kernels, "path", lambda t: "cpu"):
        q_e = layer(latent_e)
    q_e.backward(g)
    assert same(q_c.detach(), q_e.detach()) and same(latent_c.grad, latent_e.grad)
    for a, b in zip(grads_c, [p.grad for p in layer.parameters()], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
