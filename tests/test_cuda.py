"""CUDA: every method computes on a GPU what it computes on a CPU, without host
synchronisation in the training step's quantizers, and a deterministic run resumes bit for
bit. Skips without a GPU (``benchmarks/gpu_check.py`` runs these, ``-m cuda``, on a machine
that has one; ``tests/test_device_path.py`` checks the no-host-read part on the CPU)."""

import copy

import pytest
import torch

import ttqlab

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

METHODS = ["binary", "twn", "ttq", "inq", "bitnet"]


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


class _Interrupt(Exception):
    pass


def test_deterministic_resume_is_bit_exact_on_cuda(tmp_path):
    """With ``deterministic=True`` (cuDNN's deterministic algorithms), a run interrupted
    after two epochs and resumed from its checkpoint ends bit for bit where the straight
    run ends, on a GPU as on a CPU."""
    data = ttqlab.data.load("synthetic", limit_train=256, limit_test=64)
    kw = dict(epochs=3, batch_size=32, optimizer="sgd", lr=0.05, momentum=0.9,
              progress=False, device="cuda", deterministic=True, seed=0)

    def build():
        m = ttqlab.models.lenet5(input_shape=(1, 8, 8), seed=0)
        return ttqlab.quantize(m, "ttq")

    straight = build()
    ttqlab.fit(straight, data, checkpoint=tmp_path / "a", **kw)

    def stop(history, model):
        if len(history.epochs) == 3:  # epoch 0 (before training), 1 and 2
            raise _Interrupt

    broken = build()
    with pytest.raises(_Interrupt):
        ttqlab.fit(broken, data, checkpoint=tmp_path / "b", callbacks=[stop], **kw)
    resumed = build()
    ttqlab.fit(resumed, data, checkpoint=tmp_path / "b", resume=True, **kw)
    for k, v in straight.state_dict().items():
        assert torch.equal(v.cpu(), resumed.state_dict()[k].cpu()), k
