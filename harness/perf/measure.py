"""What `harness bench` measures with: a path's wall time, the machine's float32 matmul
peak, and the model FLOPs of one replication's training step and evaluation. torch is
imported inside the functions, so `harness --help` stays fast."""

from __future__ import annotations

import math
import time


def timed(fn, configs, splits, device) -> float:
    """Wall time of ``fn(configs, splits, device)``, the device's queued work included."""
    _sync(device)
    start = time.perf_counter()
    fn(configs, splits, device)
    _sync(device)
    return time.perf_counter() - start


def matmul_peak(device: str = "cpu", n: int = 4096, repeats: int = 3) -> float:
    """FLOP/s of the fastest of ``repeats`` float32 (n x n) @ (n x n) matmuls on ``device``
    (after one untimed): the rate this machine's BLAS reaches on a large, easy problem."""
    import torch

    a = torch.randn(n, n, device=device)
    b = torch.randn(n, n, device=device)
    a @ b
    _sync(device)
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        _sync(device)
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best


def model_flops(config, splits) -> tuple[float, float]:
    """(training FLOPs per example, evaluation FLOPs per example) of one replication's
    model, counted by torch's FlopCounterMode on one batch: forward and backward of a
    training step (the entropy term's small determinant is left out), and a forward."""
    import torch
    import torch.nn.functional as F
    from torch.utils.flop_counter import FlopCounterMode

    from harness.training.loop import seeded_model

    model = seeded_model(config, splits.input_shape, splits.n_classes)
    batch = config.train.batch_size
    x = torch.rand((batch, *splits.input_shape))
    y = torch.zeros(batch, dtype=torch.int64)
    with FlopCounterMode(display=False) as counter:
        out = model(x)
        loss = F.mse_loss(out, x.flatten(1)) if config.task == "reconstruction" else F.cross_entropy(out, y)
        loss.backward()
    train = counter.get_total_flops() / batch
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(x)
    return train, counter.get_total_flops() / batch


def _sync(device) -> None:
    import torch

    if str(device).startswith("cuda"):
        torch.cuda.synchronize()
