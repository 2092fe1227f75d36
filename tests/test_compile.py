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
#: the fast tier compiles one case, TTQ (its own autograd.Function and trained scales); every
#: other method, ResNet-20 and the inductor backend are in the slow tier (CI runs both)
FAST = ("ttq", {})
PARAMS = [pytest.param(m, o, id=i, marks=() if (m, o) == FAST else pytest.mark.slow)
          for (m, o), i in zip(CASES, IDS, strict=True)]
CASE_PARAMS = [pytest.param(p.values, id=p.id, marks=p.marks) for p in PARAMS]  # a fixture's


# torch.compile support is probed when the first of these tests runs (tests/conftest.py),
# not while collecting: the probe imports TorchDynamo and compiles (seconds).
pytestmark = pytest.mark.needs_compile


def _model(method, options):
    m = ttqlab.models.lenet5(input_shape=(1, 12, 12), seed=0)
    ttqlab.quantize(m, method, keep_first_last=False, **options)
    if method == "inq":
        ttqlab.INQ(m, keep_first_last=False).step()  # half frozen, half free
    return m


def _step(model, x, y):
    out = model(x)
    torch.nn.functional.cross_entropy(out, y).backward()
    return out.detach(), {n.removeprefix("_orig_mod."): p.grad.clone()
                          for n, p in model.named_parameters() if p.grad is not None}


def _counting(backend: str):
    """A TorchDynamo backend that records every graph it is given, then hands it on to
    ``backend`` ("aot_eager": AOTAutograd, so the backward is traced too; "eager": as is)."""
    graphs = []
    inner = torch._dynamo.lookup_backend(backend)

    def compile_graph(gm, example_inputs):
        graphs.append(gm)
        return inner(gm, example_inputs)

    return compile_graph, graphs


@pytest.fixture(scope="module", params=CASE_PARAMS)
def lenet(request):
    """One compile per method (fullgraph=True: a graph break is an error that names its
    reason), shared by the tests below: a training step compiled and eager, on the same
    weights, then a second batch of the same shape (a recompile would add a graph)."""
    method, options = request.param
    eager = _model(method, options).train()
    torch._dynamo.reset()
    backend, graphs = _counting("aot_eager")
    compiled = torch.compile(copy.deepcopy(eager), backend=backend, fullgraph=True)
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(8, 1, 12, 12, generator=g), torch.randint(0, 10, (8,), generator=g)
    out_e, grads_e = _step(eager, x, y)
    out_c, grads_c = _step(compiled, x, y)
    graphs_after_first = len(graphs)
    compiled(torch.randn(8, 1, 12, 12, generator=g))  # grad mode as before: same guards
    return {"eager": (out_e, grads_e), "compiled": (out_c, grads_c),
            "graphs": (graphs_after_first, len(graphs))}


def test_one_graph_without_graph_break_or_recompile(lenet):
    """The whole quantized model is one graph (no host synchronisation in the quantizers,
    fullgraph=True would have raised at a break), and new data of the same shape reuses it."""
    assert lenet["graphs"] == (1, 1)


def test_compiled_forward_and_backward_equal_eager(lenet):
    (out_e, grads_e), (out_c, grads_c) = lenet["eager"], lenet["compiled"]
    torch.testing.assert_close(out_c, out_e, rtol=1e-5, atol=1e-6)
    assert grads_c.keys() == grads_e.keys()
    for name, grad in grads_e.items():
        torch.testing.assert_close(grads_c[name], grad, rtol=1e-5, atol=1e-6, msg=name)


@pytest.mark.slow
@pytest.mark.parametrize("method, options", [("binary", {}), ("twn", {}), ("ttq", {}),
                                             ("inq", {}), ("bitnet", {"act_bits": 8})],
                         ids=["binary", "twn", "ttq", "inq", "bitnet-act8"])
def test_resnet20_is_one_graph_without_recompiles(method, options):
    """ResNet-20: 19 quantized convs in 9 blocks, each parametrized conv its own class.
    One graph for the whole model (fullgraph=True: a graph break would resume inside a
    block, and each block's conv classes would force a recompile), and a second call
    reuses it. One compile per method."""
    m = ttqlab.models.resnet20(seed=0)
    ttqlab.quantize(m, method, keep_first_last=False, **options)
    if method == "inq":
        ttqlab.INQ(m, keep_first_last=False).step()
    m.train()
    torch._dynamo.reset()
    backend, graphs = _counting("eager")
    compiled = torch.compile(m, backend=backend, fullgraph=True)
    for seed in (1, 2):  # new data, same shapes: no recompile
        compiled(torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(seed)))
    assert len(graphs) == 1


@pytest.mark.parametrize("method, options", PARAMS)
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
