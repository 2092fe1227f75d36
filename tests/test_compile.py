"""torch.compile: a model quantized with any method (activation quantizers included)
compiles into one graph, with no graph break (no host synchronisation in the quantizers)
and no per-layer recompile, and computes what eager mode computes, forward and backward;
``torch.export`` traces it too."""

import copy

import pytest
import torch

import ttqlab

CASES = [("binary", {}), ("binary", {"scale": "channel"}), ("twn", {}),
         ("twn", {"per_channel": True}), ("ttq", {}), ("ttq", {"sparsity": 0.5}), ("inq", {}),
         ("bitnet", {}), ("bitnet", {"act_bits": 8}),
         ("twn", {"act_bits": 4, "act_rule": "pow2"})]
IDS = [m + "".join(f"-{k}={v}" for k, v in o.items()) for m, o in CASES]


def _compile_supported() -> bool:
    try:
        torch._dynamo.reset()
        f = torch.compile(lambda x: x * 2 + 1, backend="aot_eager")
        return bool(torch.equal(f(torch.ones(2)), torch.full((2,), 3.0)))
    except Exception:
        return False


pytestmark = pytest.mark.skipif(not _compile_supported(),
                                reason="torch.compile is not supported on this platform")


def _model(method, options):
    m = ttqlab.models.lenet5(input_shape=(1, 12, 12), seed=0)
    ttqlab.quantize(m, method, keep_first_last=False, **options)
    if method == "inq":
        ttqlab.INQ(m, keep_first_last=False).step()  # half frozen, half free
    return m


@pytest.mark.parametrize("method, options", CASES, ids=IDS)
def test_no_graph_break_and_one_graph(method, options):
    m = _model(method, options).train()
    torch._dynamo.reset()
    explained = torch._dynamo.explain(m)(torch.randn(4, 1, 12, 12))
    assert explained.graph_break_count == 0, explained.break_reasons
    assert explained.graph_count == 1


def _step(model, x, y):
    out = model(x)
    torch.nn.functional.cross_entropy(out, y).backward()
    return out.detach(), {n.removeprefix("_orig_mod."): p.grad.clone()
                          for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("method, options", CASES, ids=IDS)
def test_compiled_forward_and_backward_equal_eager(method, options):
    eager = _model(method, options).train()
    compiled_src = copy.deepcopy(eager)
    torch._dynamo.reset()
    compiled = torch.compile(compiled_src, backend="aot_eager", fullgraph=True)
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(8, 1, 12, 12, generator=g), torch.randint(0, 10, (8,), generator=g)
    out_e, grads_e = _step(eager, x, y)
    out_c, grads_c = _step(compiled, x, y)
    torch.testing.assert_close(out_c, out_e, rtol=1e-5, atol=1e-6)
    assert grads_c.keys() == grads_e.keys()
    for name, grad in grads_e.items():
        torch.testing.assert_close(grads_c[name], grad, rtol=1e-5, atol=1e-6, msg=name)


@pytest.mark.parametrize("method, options", [("binary", {}), ("twn", {}), ("ttq", {}),
                                             ("inq", {}), ("bitnet", {"act_bits": 8})],
                         ids=["binary", "twn", "ttq", "inq", "bitnet-act8"])
def test_resnet20_is_one_graph_without_recompiles(method, options):
    """ResNet-20: 19 quantized convs in 9 blocks, each parametrized conv its own class.
    One graph for the whole model (a graph break would resume inside a block, and each
    block's conv classes would force a recompile), and a second call reuses it."""
    m = ttqlab.models.resnet20(seed=0)
    ttqlab.quantize(m, method, keep_first_last=False, **options)
    if method == "inq":
        ttqlab.INQ(m, keep_first_last=False).step()
    m.train()
    torch._dynamo.reset()
    explained = torch._dynamo.explain(m)(torch.randn(2, 3, 32, 32))
    assert explained.graph_break_count == 0, explained.break_reasons
    assert explained.graph_count == 1
    torch._dynamo.reset()
    compiles = []

    def backend(gm, example_inputs):
        compiles.append(gm)
        return gm.forward

    compiled = torch.compile(m, backend=backend)
    for seed in (1, 2):  # new data, same shapes: no recompile
        compiled(torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(seed)))
    assert len(compiles) == 1


@pytest.mark.parametrize("method, options", CASES, ids=IDS)
def test_torch_export_equals_eager(method, options):
    """``torch.export`` (the ahead-of-time graph, for deployment) traces every method
    (no data-dependent branch on a weight) and computes what eager mode computes."""
    m = _model(method, options).eval()
    x = torch.randn(3, 1, 12, 12, generator=torch.Generator().manual_seed(3))
    program = torch.export.export(m, (x,))
    with torch.no_grad():
        torch.testing.assert_close(program.module()(x), m(x), rtol=1e-5, atol=1e-6)
        x2 = torch.randn(3, 1, 12, 12, generator=torch.Generator().manual_seed(4))
        torch.testing.assert_close(program.module()(x2), m(x2), rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_inductor_compiled_ttq_equals_eager():
    """The default backend (inductor, generated C++ on a CPU) too, for the method with its
    own autograd.Function."""
    eager = _model("ttq", {}).train()
    torch._dynamo.reset()
    try:
        compiled = torch.compile(copy.deepcopy(eager), fullgraph=True)
        x, y = torch.randn(8, 1, 12, 12), torch.randint(0, 10, (8,))
        out_c, grads_c = _step(compiled, x, y)
    except Exception as e:
        if "compiler" in str(e).lower() or "cpp" in str(e).lower():
            pytest.skip(f"inductor cannot compile here: {e}")
        raise
    out_e, grads_e = _step(eager, x, y)
    torch.testing.assert_close(out_c, out_e, rtol=1e-4, atol=1e-5)
    for name, grad in grads_e.items():
        torch.testing.assert_close(grads_c[name], grad, rtol=1e-4, atol=1e-5)
