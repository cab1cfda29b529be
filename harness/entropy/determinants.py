"""log|det A| of square matrices, differentiable, through whichever LAPACK is faster on this
CPU (torch's MKL or scipy's OpenBLAS), and the thread settings that choice depends on."""

from __future__ import annotations

import functools
import math
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

LAPACK_MIN_WIDTH = 32  # narrower matrices: batched slogdet is as fast (a pack of 70 at k = 20)


def logabsdet(a: Tensor) -> Tensor:
    """log|det A| of a square matrix or a batch of them (..., k, k), differentiable: its
    gradient is A^{-T}; -inf where A is singular (and a NaN gradient, as slogdet's).

    On a CPU, from k = LAPACK_MIN_WIDTH on, one LU factorisation of each matrix for the value
    and the gradient from the same factors. A guided training step needs both, and slogdet's
    backward factors A again. Which LAPACK does it is the one measured faster on the CPU
    (docs/performance.md): on an Intel CPU with torch on one thread, torch's (MKL: batched
    getrf, then getrs against the identity), 20-33% faster than scipy's at k = 40 to 260;
    elsewhere scipy's (OpenBLAS) getrf and getri per matrix, 0.4-0.7 of slogdet's time on
    an AMD EPYC, where MKL's LU and solve were no faster than slogdet. Per-matrix calls keep
    clear of batched getrf from several threads, which gives wrong determinants of wide
    matrices with this torch build's MKL (pytorch/pytorch#181570): torch's batched path is
    only taken on one thread. Elsewhere (GPU, narrow): torch.linalg.slogdet."""
    if a.ndim < 2 or a.shape[-1] != a.shape[-2]:
        raise ValueError(f"logabsdet takes square matrices (..., k, k), got shape {tuple(a.shape)}")
    if (a.device.type == "cpu" and a.dtype in (torch.float32, torch.float64) and a.shape[-1] >= LAPACK_MIN_WIDTH
            and a.numel()):
        return _TorchLuLogAbsDet.apply(a) if torch_lapack_preferred() else _LapackLogAbsDet.apply(a)
    return torch.linalg.slogdet(a).logabsdet


def torch_lapack_preferred() -> bool:
    """Whether logabsdet takes torch's LAPACK on this CPU now: MKL, an Intel CPU, torch on
    one thread (the default layout of a CPU worker)."""
    return torch.get_num_threads() == 1 and mkl_on_intel()


@functools.lru_cache(maxsize=None)
def mkl_on_intel() -> bool:
    """Whether torch's LAPACK is MKL and this is an Intel CPU (Linux's /proc/cpuinfo)."""
    if not torch.backends.mkl.is_available():
        return False
    try:
        return "GenuineIntel" in Path("/proc/cpuinfo").read_text()
    except OSError:  # not Linux: keep the path measured everywhere
        return False


class _TorchLuLogAbsDet(torch.autograd.Function):
    """logabsdet through torch's LAPACK: lu_factor_ex of the whole batch, the factors kept
    for the backward's lu_solve."""

    @staticmethod
    def forward(ctx, a: Tensor) -> Tensor:
        lu, pivots, _ = torch.linalg.lu_factor_ex(a.detach())
        ctx.save_for_backward(lu, pivots)
        # a zero pivot: log 0 = -inf, the singular matrix's value
        return lu.diagonal(dim1=-2, dim2=-1).abs().log().sum(-1)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor) -> Tensor:
        lu, pivots = ctx.saved_tensors
        eye = torch.eye(lu.shape[-1], dtype=lu.dtype).expand_as(lu)
        inv_t = torch.linalg.lu_solve(lu, pivots, eye, adjoint=True)  # A^T X = I: X = A^{-T}
        singular = (lu.diagonal(dim1=-2, dim2=-1) == 0).any(-1)
        if singular.any():  # no gradient, as getri's path
            inv_t[singular] = math.nan
        return inv_t.mul_(grad[..., None, None])


class _LapackLogAbsDet(torch.autograd.Function):
    @staticmethod
    def forward(ctx, a: Tensor) -> Tensor:
        from scipy.linalg import lapack

        k = a.shape[-1]
        # One C-ordered copy of every matrix, factored in place: mats[i].T, a Fortran-order
        # view, is A^T, so getri later gives A^{-T} (the gradient) in the same memory.
        mats = np.array(a.detach().reshape(-1, k, k).numpy(), order="C")
        getrf, getri = lapack.get_lapack_funcs(("getrf", "getri"), (mats,))
        _single_threaded_openblas()
        pivots = [getrf(m.T, overwrite_a=True)[1] for m in mats]
        with np.errstate(divide="ignore"):  # a zero pivot: log 0 = -inf, the singular matrix's value
            values = np.log(np.abs(np.diagonal(mats, axis1=1, axis2=2))).sum(1)
        ctx.mats, ctx.pivots, ctx.getri, ctx.shape = mats, pivots, getri, a.shape
        return torch.from_numpy(values).reshape(a.shape[:-2])

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor) -> Tensor:
        mats, k = ctx.mats.copy(), ctx.shape[-1]  # one bulk copy: the factors stay for another backward
        lwork = _getri_lwork(k, mats.dtype.char)
        for m, piv in zip(mats, ctx.pivots):
            info = ctx.getri(m.T, piv, lwork=lwork, overwrite_lu=True)[1]
            if info != 0:  # singular: no gradient
                m[...] = np.nan
        inv_t = torch.from_numpy(mats).mT  # mats[i] holds (A^T)^{-1} in Fortran order
        return grad[..., None, None] * inv_t.reshape(ctx.shape)


@functools.lru_cache(maxsize=None)
def _getri_lwork(k: int, dtype_char: str) -> int:
    """getri's workspace for k x k matrices of this dtype, asked of LAPACK once (backward
    runs every step; a value-only call, the logged term, needs none)."""
    from scipy.linalg import lapack

    (getri_lwork,) = lapack.get_lapack_funcs(("getri_lwork",), dtype=np.dtype(dtype_char))
    return int(getri_lwork(k)[0].real)


_openblas_limited = False


def _single_threaded_openblas() -> None:
    """scipy's LAPACK runs on OpenBLAS's own pthreads, which spin after each call and starve
    torch's OpenMP threads on the same cores: a training step (torch on 2 threads, k = 80)
    took 13.3 ms with OpenBLAS on 2 threads against 0.92 ms on one. The matrices here are
    small: one thread is what they need. Only OpenBLAS is limited (an MKL that torch may
    load is left alone), once per process."""
    global _openblas_limited
    if not _openblas_limited:
        from threadpoolctl import ThreadpoolController

        ThreadpoolController().select(internal_api="openblas").limit(limits=1)
        _openblas_limited = True
