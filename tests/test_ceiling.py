"""harness.perf.ceiling: a packed step's matmuls, recorded from the pack's own code and replayed.

The FLOPs of the recorded calls are checked against bench.model_flops, which counts one
replication's nn.Module forward and backward with autograd: a different path, so equal
totals mean the recorder caught every matmul of the step and nothing else."""

from __future__ import annotations

import math
import pickle

import pytest
import torch

from harness.perf import bench, ceiling
from harness.data import load_splits
from harness.study import build_config


def configs(n: int, **settings) -> list:
    base = {"dataset": "digits", "model": "dense_ae", "latent": 16, **settings}
    return [build_config({**base, "lam": lam, "seed": seed}) for lam, seed in zip([0.0, 1e-3, 1.0] * 2, range(n))]


@pytest.fixture(scope="module")
def splits():
    return load_splits("digits", None, n_train=200, n_val=64)


def test_a_dense_pack_step_is_five_batched_matmuls_with_the_models_flops(splits):
    cell = configs(3)
    calls = ceiling.record_step_matmuls(cell, splits, "cpu")
    assert [c.op for c in calls] == ["baddbmm", "baddbmm", "baddbmm", "baddbmm", "bmm"]  # 2 forward, 3 backward
    assert all(c.kwargs["out"].shape[0] == 3 for c in calls)  # every matmul spans the pack's 3 members
    # the forward matmuls read the stored weights as plain (in, out) matrices, not transposed views
    for call in calls[:2]:
        weight = call.args[2]
        assert weight.stride == torch.empty(weight.shape).stride(), weight
    flops, seconds = ceiling.replay_rate(calls, threads=1, seconds=0.05)
    per_example, _ = bench.model_flops(cell[0], splits)
    assert flops == 3 * cell[0].train.batch_size * per_example
    assert seconds > 0 and math.isfinite(flops / seconds)


def test_a_cnn_pack_step_records_the_conv_engines_matmuls_and_convolutions(splits):
    """harness.training.conv_engine: the first layer as a batched matmul, deeper layers as
    one convolution per member; the replayed FLOPs are the model's own, member by member."""
    cell = configs(2, model="cnn", task="classification", arch=(4, 4), **{"net.padding": "same"})
    calls = ceiling.record_step_matmuls(cell, splits, "cpu")
    ops = {c.op for c in calls}
    assert {"bmm", "convolution", "convolution_backward"} <= ops
    conv = next(c for c in calls if c.op == "convolution")
    assert conv.args[1].shape[0] == 4  # one member's 4 filters: the members step one after another
    flops, _ = ceiling.replay_rate(calls, threads=1, seconds=0.05)
    per_example, _ = bench.model_flops(cell[0], splits)
    assert flops == 2 * cell[0].train.batch_size * per_example


def test_recorded_calls_travel_to_worker_processes_and_replay_on_fresh_tensors(splits):
    calls = ceiling.record_step_matmuls(configs(2), splits, "cpu")
    again = pickle.loads(pickle.dumps(calls))
    assert again == calls
    op, args, kwargs = again[2].materialize()
    spec = calls[2].args[1]  # h^T of the decoder's weight gradient, a transposed view: the layout is kept, not only the shape
    assert args[1].shape == spec.shape and args[1].stride() == spec.stride and not args[1].is_contiguous()
    op(*args, **kwargs)
    assert torch.isfinite(kwargs["out"]).all()


def test_replications_that_cannot_pack_are_refused(splits):
    with pytest.raises(ValueError):
        ceiling.record_step_matmuls([configs(1)[0], build_config({"dataset": "digits", "model": "mlp"})], splits, "cpu")
