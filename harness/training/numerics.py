"""Floating-point modes a training runs under: TF32 on CUDA and subnormal flushing on the
CPU as the study says (train.tf32, train.flush_denormals), bfloat16 autocast of the
model (train.precision), and IEEE subnormals kept for the step whose gradients are
measured."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext

import torch

from harness.study import Config


@contextmanager
def float32_math(config: Config) -> Iterator[None]:
    """Float32 matmuls and convolutions on CUDA in TF32 exactly when ``train.tf32`` says
    so (PyTorch's defaults differ between the two), and subnormal floats flushed to zero
    on the CPU when ``train.flush_denormals`` says so; both restored afterwards. The flush
    mode is the calling thread's (x86 MXCSR): torch's intra-op threads keep the mode they
    started with, so a one-thread worker (the default CPU layout) is covered whole."""
    backends = (torch.backends.cuda.matmul, torch.backends.cudnn.conv)
    before = [b.fp32_precision for b in backends]
    for b in backends:
        b.fp32_precision = "tf32" if config.train.tf32 else "ieee"
    try:
        with _flush_mode(config.train.flush_denormals):
            yield
    finally:
        for b, value in zip(backends, before):
            b.fp32_precision = value


def subnormals_kept(keep: bool = True) -> AbstractContextManager:
    """IEEE subnormals in this thread for the block when ``keep`` (else nothing changes).
    The once-an-epoch step whose gradients are measured (grad_ratio, term_led) runs so: the
    entropy term's float32 gradient is mostly subnormal there, and flushed it would read as
    no gradient at all. The weights come out the same either way (the flush's tests)."""
    return _flush_mode(False) if keep else nullcontext()


@contextmanager
def _flush_mode(flush: bool) -> Iterator[None]:
    """This thread flushes subnormals to zero, or not, for the block; its mode restored."""
    before = flushes_denormals()
    torch.set_flush_denormal(flush)
    try:
        yield
    finally:
        torch.set_flush_denormal(before)


def flushes_denormals() -> bool:
    """Whether this thread flushes subnormal floats to zero (torch has no getter: a scalar
    product on the CPU runs in the calling thread and tells)."""
    return bool((torch.tensor(1e-39) * 1.0).item() == 0.0)


def model_precision(config: Config, device) -> AbstractContextManager:
    """The model's forward (and so its backward) under ``train.precision``: bfloat16
    autocast of its matmuls and convolutions on ``device``, or nothing for float32.
    Only the model's ops are cast: the entropy term's (determinants, in float64 or
    float32) are not on autocast's list. One context spans the whole training, so its
    cache of cast weights is off: it would hand a step the weights before the last
    optimizer step (autocast clears it only on leaving the context)."""
    if config.train.precision == "bf16":
        return torch.autocast(torch.device(device).type, dtype=torch.bfloat16, cache_enabled=False)
    return nullcontext()
