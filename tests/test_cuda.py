"""CUDA: every method computes on a GPU what it computes on a CPU, without host
synchronisation in the training step's quantizers. Skips without a GPU
(``benchmarks/gpu_check.py`` runs these on a machine that has one)."""

import copy

import pytest
import torch

import ttqlab

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

METHODS = ["binary", "twn", "ttq", "inq"]


def _model(method):
    m = ttqlab.models.lenet5(input_shape=(1, 12, 12), seed=0)
    ttqlab.quantize(m, method, keep_first_last=False)
    if method == "inq":
        ttqlab.INQ(m, keep_first_last=False).step()
    return m.train()


@pytest.mark.parametrize("method", METHODS)
def test_cuda_forward_backward_equal_cpu(method):
    cpu = _model(method)
    gpu = copy.deepcopy(cpu).cuda()
    x, y = torch.randn(8, 1, 12, 12), torch.randint(0, 10, (8,))
    for model, dev in ((cpu, "cpu"), (gpu, "cuda")):
        torch.nn.functional.cross_entropy(model(x.to(dev)), y.to(dev)).backward()
    for (name, a), b in zip(cpu.named_parameters(), gpu.parameters()):
        torch.testing.assert_close(b.grad.cpu(), a.grad, rtol=1e-3, atol=1e-4, msg=name)
    for (name, _, qa), (_, _, qb) in zip(ttqlab.quantized_layers(cpu),
                                         ttqlab.quantized_layers(gpu)):
        if method != "inq":
            w = ttqlab.convert.latent_weight
            assert torch.equal(qa.codes(w(dict(cpu.named_modules())[name])),
                               qb.codes(w(dict(gpu.named_modules())[name])).cpu())


@pytest.mark.parametrize("method", METHODS)
def test_quantizers_do_not_synchronise_with_the_host(method):
    model = _model(method).cuda()
    x = torch.randn(8, 1, 12, 12, device="cuda")
    model(x)  # warm-up (lazy initialisation may synchronise)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _, layer, _ in ttqlab.quantized_layers(model):
            layer.weight.sum().backward()
    finally:
        torch.cuda.set_sync_debug_mode("default")
