"""The matmul ceiling of a packed training step: how fast its own matmuls run alone.

``harness bench`` compares the harness's FLOP rate with the machine's matmul peak, a large
square float32 matmul. A training step of a small model is made of small matmuls (at
batch 32 the dense autoencoder's are 32 x 784 x 80), which no BLAS runs at that peak: the
rate they reach alone, back to back with nothing else in between, is the most any code
built from them can reach. This module measures it, so that the bench can say how much of
the gap to the peak is the harness's overhead (Adam, the entropy term, element-wise
passes, Python) and how much is the shape of the problem.

record_step_matmuls trains one step of a pack (harness.training.pack.train_pack, the same code as a
run) and records every matmul and convolution it calls, with the shapes, strides and
dtypes of their tensors; replay_rate calls them again on fresh tensors of that layout and
times them. FLOPs are torch.utils.flop_counter's, as the bench's model FLOPs (but for a
grouped convolution's backward, which it overcounts: _flops).
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves, tree_map
from torch.utils.flop_counter import FlopCounterMode

__all__ = ["MATMUL_OPS", "Call", "record_step_matmuls", "replay_rate"]

# the aten ops that carry a model's FLOPs (what FlopCounterMode counts for a dense or conv model)
MATMUL_OPS = frozenset({"mm", "bmm", "addmm", "baddbmm", "convolution", "_convolution", "convolution_backward"})


@dataclass(frozen=True)
class _TensorSpec:
    shape: tuple
    stride: tuple
    dtype: torch.dtype
    device: str

    def make(self) -> torch.Tensor:
        """A fresh tensor of this layout, values in [0, 1): one storage just large enough
        for the strides (a transposed or broadcast view stays one)."""
        needed = 1 + sum((n - 1) * s for n, s in zip(self.shape, self.stride)) if all(self.shape) else 0
        return torch.rand(needed, dtype=self.dtype, device=self.device).as_strided(self.shape, self.stride)


@dataclass(frozen=True)
class Call:
    """One recorded matmul: the op (aten name and overload) and its arguments, tensors
    replaced by their layout. Picklable, so worker processes can replay it."""

    op: str  # e.g. "bmm"
    overload: str  # e.g. "out"
    args: tuple
    kwargs: dict

    def materialize(self):
        """(the op, its args and kwargs with fresh tensors in place of the specs)."""
        fresh = lambda a: a.make() if isinstance(a, _TensorSpec) else a  # noqa: E731
        packet = getattr(torch.ops.aten, self.op)
        return getattr(packet, self.overload), tree_map(fresh, self.args), tree_map(fresh, self.kwargs)


def _spec(value):
    if isinstance(value, torch.Tensor):
        return _TensorSpec(tuple(value.shape), tuple(value.stride()), value.dtype, str(value.device))
    return value


class _Recorder(TorchDispatchMode):
    def __init__(self, calls: list[Call]):
        super().__init__()
        self.calls = calls

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = func.overloadpacket.__name__
        if func.namespace == "aten" and name in MATMUL_OPS:
            self.calls.append(Call(name, func._overloadname, tree_map(_spec, args), tree_map(_spec, kwargs)))
        return func(*args, **kwargs)


def record_step_matmuls(configs: list, splits, device) -> list[Call]:
    """The matmuls of one training step of ``configs`` trained as one pack on ``device``
    (a copy of the configs stopped after one epoch of exactly one batch)."""
    from harness.training.pack import train_pack
    from harness.study import build_config, flatten

    batch = configs[0].train.batch_size
    one_step = dataclasses.replace(splits, train_x=splits.train_x[:batch], train_y=splits.train_y[:batch],
                                   val_x=splits.val_x[:batch], val_y=splits.val_y[:batch])
    configs = [build_config({**flatten(c), "train.max_epochs": 1}) for c in configs]
    calls: list[Call] = []
    train_pack(configs, one_step, device, step_context=lambda: _Recorder(calls))  # one_step has one step
    if not calls:
        raise RuntimeError("no matmul recorded in a training step")
    return calls


def replay_rate(calls: list[Call], threads: int | None = None, seconds: float = 0.5) -> tuple[float, float]:
    """(FLOPs of one pass over ``calls``, seconds one pass takes at best): the calls run
    back to back on fresh tensors, first once untimed, then in passes until ``seconds``
    have gone by (at least 3); the fastest pass counts, as matmul_peak's."""
    saved = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        ready = [c.materialize() for c in calls]
        with torch.no_grad():
            flops = float(sum(_flops(op, args, kwargs) for op, args, kwargs in ready))
        sync = _synchronizer(calls)
        best, passes, start = math.inf, 0, time.perf_counter()
        with torch.no_grad():
            while passes < 3 or time.perf_counter() - start < seconds:
                sync()
                tick = time.perf_counter()
                for op, args, kwargs in ready:
                    op(*args, **kwargs)
                sync()
                best = min(best, time.perf_counter() - tick)
                passes += 1
        return flops, best
    finally:
        torch.set_num_threads(saved)


def _flops(op, args, kwargs) -> int:
    """FLOPs of one call, as torch's FlopCounterMode counts them; but a convolution's
    backward as its forward once per gradient it computes (output_mask): the counter
    takes the weight gradient of a grouped convolution (what vmap makes of a pack's
    convolutions) for an ungrouped one, ``groups`` times too many (pytorch/pytorch#183405)."""
    if op.overloadpacket is torch.ops.aten.convolution_backward:
        grad_out, x, weight, _, stride, padding, dilation, transposed, output_padding, groups, mask = args
        forward = torch.ops.aten.convolution.default
        return _flops(forward, (x, weight, None, stride, padding, dilation, transposed, output_padding, groups), {}) * (
            int(mask[0]) + int(mask[1]))
    with FlopCounterMode(display=False) as counter:
        op(*args, **kwargs)
    return counter.get_total_flops()


def _synchronizer(calls: list[Call]):
    """What waits for the calls' device: CUDA runs them asynchronously."""
    specs = (a for c in calls for a in tree_leaves((c.args, c.kwargs)) if isinstance(a, _TensorSpec))
    cuda = {spec.device for spec in specs if spec.device.startswith("cuda")}
    return lambda: [torch.cuda.synchronize(device) for device in cuda]
