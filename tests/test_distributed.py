"""Scale-out: ``ttqlab.fit`` under ``torchrun`` (2 processes, gloo, CPU) keeps every rank
identical and computes what one process computes."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import ttqlab
from ttqlab import checkpoint, distributed

WORKER = textwrap.dedent("""
    import sys
    from pathlib import Path

    import torch
    from safetensors.torch import save_file

    import ttqlab
    from ttqlab import distributed

    out = Path(sys.argv[1])
    distributed.init_from_env("cpu")
    rank = distributed.rank()
    data = ttqlab.data.load("synthetic", limit_train=256, limit_test=64)
    kw = dict(batch_size=32, progress=False, optimizer="sgd", lr=0.01)
    saved = {}

    # TTQ, from a different random init on each rank: DDP starts them from rank 0's
    m = ttqlab.quantize(ttqlab.models.lenet5(input_shape=(1, 8, 8), seed=rank), "ttq")
    h = ttqlab.fit(m, data, epochs=2, checkpoint=out / "ttq", **kw)
    saved["ttq.test_acc"] = torch.tensor(h["test_acc"])
    for name, layer, q in ttqlab.quantized_layers(m):
        saved[f"ttq.{name}.weight"] = layer.weight.detach().clone()
        saved[f"ttq.{name}.wp"] = q.wp.detach().clone()
        saved[f"ttq.{name}.wn"] = q.wn.detach().clone()

    # INQ: every rank freezes the same weights without talking to the others
    m = ttqlab.models.lenet5(input_shape=(1, 8, 8), seed=rank)
    ttqlab.fit(m, data, epochs=1, **kw)
    inq = ttqlab.INQ(m, bits=5)
    while not inq.done:
        inq.step()
        for name, layer, q in inq.layers:
            saved[f"inq.step{inq.steps_taken}.{name}.mask"] = q.frozen_mask.clone()
        ttqlab.fit(m, data, epochs=1, **kw)
    saved.update({f"inq.{k}": v.clone() for k, v in m.state_dict().items()})

    # no BatchNorm: two half batches all-reduced = one process on the whole batch
    m = ttqlab.models.mlp(input_shape=(1, 8, 8), batch_norm=False, seed=0)
    ttqlab.fit(m, data, epochs=2, **kw)
    saved.update({f"mlp.{k}": v.clone() for k, v in m.state_dict().items()})
    save_file(saved, out / f"rank{rank}.safetensors")
""")


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp")
    (out / "worker.py").write_text(WORKER)
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(Path(ttqlab.__file__).parents[1]),
                                          os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           "--nproc_per_node", "2", str(out / "worker.py"), str(out)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out, load_file(out / "rank0.safetensors"), load_file(out / "rank1.safetensors")


@pytest.mark.slow  # two processes of torch.distributed.run: 20-40 s
def test_ranks_stay_identical(two_ranks):
    _, r0, r1 = two_ranks
    assert r0.keys() == r1.keys()
    for k in r0:
        assert torch.equal(r0[k], r1[k]), k
    assert len([k for k in r0 if k.endswith((".wp", ".wn"))]) == 4  # conv2, fc1
    assert len([k for k in r0 if k.endswith(".mask")]) == 4 * 2  # 4 INQ steps, 2 layers
    # the masks really grow with the schedule, identically on both ranks
    fractions = [float(r0[f"inq.step{s}.conv2.mask"].float().mean()) for s in (1, 2, 3, 4)]
    assert fractions == pytest.approx([0.5, 0.75, 0.875, 1.0], abs=1e-3)


@pytest.mark.slow  # two processes of torch.distributed.run: 20-40 s
def test_two_processes_compute_what_one_process_computes(two_ranks):
    _, r0, _ = two_ranks
    data = ttqlab.data.load("synthetic", limit_train=256, limit_test=64)
    m = ttqlab.models.mlp(input_shape=(1, 8, 8), batch_norm=False, seed=0)
    ttqlab.fit(m, data, epochs=2, batch_size=32, progress=False, optimizer="sgd", lr=0.01)
    for k, v in m.state_dict().items():
        torch.testing.assert_close(r0[f"mlp.{k}"], v, rtol=1e-4, atol=1e-6)


@pytest.mark.slow  # two processes of torch.distributed.run: 20-40 s
def test_only_rank0_writes_a_loadable_checkpoint(two_ranks):
    out, r0, _ = two_ranks
    assert [s for s, _ in checkpoint.list_checkpoints(out / "ttq")] == [2]
    assert not [p for p in (out / "ttq").iterdir() if ".tmp" in p.name]
    m = ttqlab.quantize(ttqlab.models.lenet5(input_shape=(1, 8, 8), seed=5), "ttq")
    checkpoint.load(out / "ttq", model=m)
    for name, layer, q in ttqlab.quantized_layers(m):
        assert torch.equal(layer.weight, r0[f"ttq.{name}.weight"])
        assert torch.equal(q.wp.detach(), r0[f"ttq.{name}.wp"])


def test_helpers_are_no_ops_in_one_process():
    assert distributed.world_size() == 1 and distributed.rank() == 0 and distributed.is_main()
    x, y = torch.arange(6), torch.arange(6)
    assert distributed.shard((x, y)) == (x, y)
    assert distributed.all_reduce_sum([1.0, 2]) == [1.0, 2]
    model = torch.nn.Linear(2, 2)
    assert distributed.wrap(model, torch.device("cpu")) is model
    assert distributed.init_from_env(None) == torch.device("cpu")
