"""The path ttqlab's quantizers take off the CPU (a GPU, or under torch.compile): no host
synchronisation, and the same numbers as the CPU path.

On a GPU, reading a tensor's value on the host (``float(t)``, ``t.item()``, ``if t:``)
waits for every queued kernel: the CPU can no longer run ahead, and the step gets
slower. On the ``meta`` device those reads raise, so a forward and backward pass of a
model moved to ``meta`` proves, without a GPU, that the path ttqlab takes on any
non-CPU device reads nothing back. (On the CPU ttqlab does read ``delta`` as a float on
purpose: ``hardshrink`` is the fastest threshold there, see ``methods/kernels.py``.)
"""

from unittest import mock

import pytest
import torch

import ttqlab
from ttqlab.methods import kernels

CASES = [("binary", {}), ("binary", {"scale": "channel"}), ("twn", {}),
         ("twn", {"per_channel": True}), ("ttq", {}), ("ttq", {"sparsity": 0.5}),
         ("ttq", {"reduce": "mean"}), ("inq", {}), ("bitnet", {}),
         ("bitnet", {"act_bits": 8}), ("twn", {"act_bits": 4, "act_rule": "pow2"})]
IDS = [m + "".join(f"-{k}={v}" for k, v in o.items()) for m, o in CASES]


def test_meta_tensors_refuse_host_reads():
    """The premise: every way of reading a meta tensor's value raises."""
    t = torch.ones(3, device="meta").sum()
    for read in (t.item, lambda: float(t), lambda: bool(t > 0), lambda: int(t)):
        with pytest.raises(RuntimeError):
            read()


@pytest.mark.parametrize("method, options", CASES, ids=IDS)
def test_training_step_reads_nothing_back(method, options):
    model = ttqlab.models.resnet20(seed=0)
    ttqlab.quantize(model, method, **options)
    if method == "inq":
        ttqlab.INQ(model).step()  # half frozen, half trained
    model = model.to("meta").train()
    out = model(torch.empty(4, 3, 32, 32, device="meta"))
    out.logsumexp(1).sum().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert grads and all(g is not None and g.device.type == "meta" for g in grads)


@pytest.mark.parametrize("method, options", [
    ("twn", {}), ("twn", {"per_channel": True}), ("ttq", {}), ("ttq", {"sparsity": 0.5}),
    ("ttq", {"reduce": "mean"}), ("ttq", {"init": 1.0})])
@pytest.mark.parametrize("shape", [(16, 8, 3, 3), (10, 7), (5,), (0, 3)])
def test_device_path_equals_cpu_path(method, options, shape):
    """TWN and TTQ have a CPU path (arithmetic-only masks, ``hardshrink`` with the
    threshold read as a float) and a device path (boolean masks, fewest kernels). Forced
    onto the CPU, the device path gives the same quantized weight and latent gradient bit
    for bit, and the same scale gradients up to summation order."""
    g = torch.Generator().manual_seed(sum(shape))
    w, grad_out = torch.randn(*shape, generator=g), torch.randn(*shape, generator=g)
    if w.numel() and method == "ttq":
        w[0] = 0.05 * w.abs().max()  # exactly on TTQ's threshold: zero on both paths
    quantizer = ttqlab.methods.get(method).build(w, **options)
    results = []
    for device_path in (True, False):
        latent = w.clone().requires_grad_()
        quantizer.zero_grad(set_to_none=True)
        name = "eager_device" if device_path else "cpu"
        with mock.patch.object(kernels, "path", lambda t, name=name: name):
            q = quantizer(latent)
        (q * grad_out).sum().backward()
        results.append((q.detach(), latent.grad,
                        [p.grad for p in quantizer.parameters()]))
    (q_dev, gw_dev, gs_dev), (q_cpu, gw_cpu, gs_cpu) = results
    assert torch.equal(q_dev, q_cpu) and torch.equal(gw_dev, gw_cpu)
    for row in (q_cpu.flatten(1) if options.get("per_channel") and q_cpu.dim() > 1 else [q_cpu]):
        assert len(torch.unique(row)) <= 3  # ternary (per output channel)
    for a, b in zip(gs_dev, gs_cpu):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
