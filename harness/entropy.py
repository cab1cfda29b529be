"""Entropy change through dense and 2D-convolutional layers, and the guidance loss.

The paper (Meni et al., arXiv 2308.14938, section 3-5) measures how a layer changes the
Shannon differential entropy (in nats) of its pre-activations:

* dense layer, weight (N, d): log|det W| of the square part W, the top-left
  min(N, d) x min(N, d) block (Theorem 3, eq. 5-6);
* 2D convolution, filter (p, q) sliding with stride 1 over an l x w input:
  (l-p+1)(w-q+1) log|c11|, c11 the filter's top-left weight (Corollary 6, eq. 18). A filter
  over several input channels is treated as parallel single-channel convolutions.

The guidance term added to the task loss (eq. 19-25) is, per dense layer,
-lam log|det W| ("log") or lam / (|det W| + eps) ("inverse"), and per conv filter and input
channel -lam log|c11| or lam / (|c11| + eps) (no spatial factor, as in eq. 23).

Determinants are computed as log|det| (``logabsdet``) in float64 by default: at PyTorch's
default initialisation the square part of an MNIST encoder has |det W| ~ e^-180, below
float32's smallest subnormal, so a float32 det is exactly 0 and the inverse form has zero
gradient.
"""

from __future__ import annotations

import functools
import math
import numbers
import operator
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

__all__ = [
    "logabsdet",
    "dense_entropy_change",
    "conv_entropy_change",
    "entropy_loss",
    "entropy_loss_unweighted",
    "guided_layers",
    "candidate_layers",
    "pre_skip_convs",
    "empirical_convs",
    "entropy_profile",
    "entropy_stats",
]

_PRECISIONS = {"float64": torch.float64, "float32": torch.float32}
_C11 = ("all_channels", "first_channel")
_FORMS = ("log", "inverse")
_REDUCES = ("sum", "mean")


def _choice(value: str, allowed: Sequence[str], what: str) -> str:
    if value not in allowed:
        raise ValueError(f"unknown {what} {value!r}: expected one of {', '.join(allowed)}")
    return value


def _dtype(precision: str) -> torch.dtype:
    return _PRECISIONS[_choice(precision, tuple(_PRECISIONS), "precision")]


# ---------------------------------------------------------------------------- formulas

LAPACK_MIN_WIDTH = 32  # narrower matrices: batched slogdet is as fast (a pack of 70 at k = 20)


def logabsdet(a: Tensor) -> Tensor:
    """log|det A| of a square matrix or a batch of them (..., k, k), differentiable: its
    gradient is A^{-T}; -inf where A is singular (and a NaN gradient, as slogdet's).

    On a CPU, from k = LAPACK_MIN_WIDTH on, one LU factorisation of each matrix for the value
    and the gradient from the same factors. A guided training step needs both, and slogdet's
    backward factors A again. Which LAPACK does it is the one measured faster on the CPU
    (README, "How fast"): on an Intel CPU with torch on one thread, torch's (MKL: batched
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


def dense_entropy_change(weight: Tensor, precision: str = "float64") -> Tensor:
    """log|det W| of the square part of a dense weight (Theorem 3), in nats.

    weight: (N, d), as in ``nn.Linear.weight`` (the paper's Keras kernel is (d, N); the
    top-left block is the same up to transpose, so the determinant is too).
    Returns a 0-d tensor in ``precision`` ("float64" or "float32"), differentiable w.r.t.
    weight; -inf when the block is singular.
    """
    if weight.ndim != 2:
        raise ValueError(f"dense weight must be 2-D (N, d), got shape {tuple(weight.shape)}")
    k = min(weight.shape)
    # log|det|, not det: log|det| of a 784-wide block is about -180, so det itself
    # underflows even where its logarithm is perfectly representable.
    return logabsdet(weight[:k, :k].to(_dtype(precision)))


def _c11(weight: Tensor, c11: str) -> Tensor:
    """Top-left weight of every filter: (out, in) or (out, 1) for "first_channel"."""
    if weight.ndim != 4:
        raise ValueError(f"conv weight must be 4-D (out, in, p, q), got {tuple(weight.shape)}")
    channels = slice(None) if _choice(c11, _C11, "c11 convention") == "all_channels" else slice(0, 1)
    return weight[:, channels, 0, 0]


def conv_entropy_change(
    weight: Tensor, input_size: tuple[int, int], c11: str = "all_channels"
) -> Tensor:
    """Entropy change of each (filter, input channel) pair of a Conv2d (Corollary 6), nats.

    weight: (out, in, p, q), as in ``nn.Conv2d.weight``. input_size: (l, w), the spatial
    size the filter slides over with stride 1, padding already included. Returns float64
    of shape (out, in), or (out, 1) with c11="first_channel", holding
    (l-p+1)(w-q+1) log|c11|; sum over dim 1 for the change per filter.
    """
    l, w = input_size
    p, q = weight.shape[-2:]
    positions = (l - p + 1) * (w - q + 1)
    if positions <= 0:
        raise ValueError(f"filter {p}x{q} does not fit in input {l}x{w}")
    return positions * _c11(weight, c11).to(torch.float64).abs().log()


# ---------------------------------------------------------------------------- guidance loss


def _unpack(layers) -> list[nn.Module]:
    """Accept modules or the (name, module) pairs that guided_layers returns."""
    return [m[1] if isinstance(m, tuple) else m for m in layers]


def _per_layer_lam(lam, n: int) -> list:
    if isinstance(lam, Tensor) and lam.ndim > 0:
        # A bare 1-D tensor could mean "per layer" or "per filter": make the caller say.
        raise ValueError("lam as a 1-D tensor is ambiguous: pass a float or a list with one entry per layer")
    if isinstance(lam, (numbers.Real, Tensor)):
        return [lam] * n
    lam = list(lam)
    if len(lam) != n:
        raise ValueError(f"lam has {len(lam)} entries but there are {n} guided layers")
    return lam


def _is_zero(lam) -> bool:
    return isinstance(lam, numbers.Real) and lam == 0


def _dense_term(weight: Tensor, lam, form: str, eps: float, precision: str) -> Tensor:
    if isinstance(lam, Tensor) and lam.numel() != 1:
        raise ValueError(f"a dense layer takes one lam, got a tensor of shape {tuple(lam.shape)}")
    logdet = dense_entropy_change(weight, precision)
    lam = torch.as_tensor(lam, dtype=logdet.dtype, device=logdet.device).reshape(())
    if form == "log":
        return -lam * logdet  # eq. 21
    # eq. 24; exp in `precision` on purpose, so a float32 run shows the float32 underflow.
    return lam / (logdet.exp() + eps)


def _conv_term(
    weight: Tensor, lam, form: str, eps: float, precision: str, c11: str, reduce: str
) -> Tensor:
    c = _c11(weight, c11).to(_dtype(precision)).abs()  # (out, in) or (out, 1)
    lam = torch.as_tensor(lam, dtype=c.dtype, device=c.device)
    if lam.ndim == 1:  # one lam per filter (eq. 23's lambda_2^{ld})
        if lam.numel() != c.shape[0]:
            raise ValueError(f"per-filter lam has {lam.numel()} entries, layer has {c.shape[0]} filters")
        lam = lam[:, None]
    elif lam.ndim > 1:
        raise ValueError(f"conv lam must be a scalar or 1-D per filter, got shape {tuple(lam.shape)}")
    terms = -lam * c.log() if form == "log" else lam / (c + eps)  # eq. 23 / eq. 25
    return terms.sum() if reduce == "sum" else terms.mean()


def entropy_loss(
    layers: Sequence[nn.Module | tuple[str, nn.Module]],
    lam,
    form: str = "inverse",
    eps: float = 1e-4,
    precision: str = "float64",
    c11: str = "all_channels",
    reduce: str = "sum",
) -> Tensor:
    """The lam-weighted entropy guidance term, to be ADDED to the task loss (eq. 19-25).

    layers: nn.Linear and nn.Conv2d modules (or (name, module) pairs from guided_layers).
    lam: a float for every layer, or a sequence with one entry per layer; a conv layer's
    entry may be a 1-D tensor with one lam per filter. A layer whose lam is the number 0
    is skipped, so the lam = 0 baseline costs nothing and never produces 0 * inf = nan.
    form: "log" (-lam log|x|, eq. 21/23) or "inverse" (lam / (|x| + eps), eq. 24/25), with
    x = det of a dense layer's square part, or c11 of every conv filter and input channel
    (c11="all_channels") or of every filter's first channel ("first_channel").
    reduce: how a conv layer's filter/channel terms combine ("sum" or "mean"); layers sum.

    Computed in ``precision``, then cast to the layers' weight dtype (float32 for an
    ordinary model, so it adds to a float32 task loss; float64 weights stay float64, which
    gradcheck needs). Returns a 0-d tensor; gradients flow to the weights.
    """
    _choice(form, _FORMS, "form")
    _choice(reduce, _REDUCES, "reduce")
    modules = _unpack(layers)
    if not modules:
        return torch.zeros(())
    out_dtype = modules[0].weight.dtype
    for m in modules[1:]:
        out_dtype = torch.promote_types(out_dtype, m.weight.dtype)
    total = torch.zeros((), dtype=_dtype(precision), device=modules[0].weight.device)
    for module, layer_lam in zip(modules, _per_layer_lam(lam, len(modules))):
        if _is_zero(layer_lam):
            continue
        if isinstance(module, nn.Conv2d):
            total = total + _conv_term(module.weight, layer_lam, form, eps, precision, c11, reduce)
        elif isinstance(module, nn.Linear):
            total = total + _dense_term(module.weight, layer_lam, form, eps, precision)
        else:
            name = type(module).__name__
            raise TypeError(f"entropy guidance applies to nn.Linear and nn.Conv2d, got {name}")
    return total.to(out_dtype)


def entropy_loss_unweighted(layers, **kwargs) -> Tensor:
    """entropy_loss with lam = 1 for every layer: the bare term, for logging."""
    return entropy_loss(layers, 1.0, **kwargs)


# ---------------------------------------------------------------------------- layer discovery


def _forward_trace(model: nn.Module, input_shape, types) -> list[tuple[str, nn.Module, tuple]]:
    """(name, module, output shape) of every module of `types`, in the order one forward
    pass on a zero input of shape (1, *input_shape) first calls them."""
    seen: dict[str, tuple[nn.Module, tuple]] = {}
    hooks = []
    for name, module in model.named_modules():
        if isinstance(module, types):
            def hook(mod, args, out, name=name):
                seen.setdefault(name, (mod, tuple(out.shape)))  # first call = its position
            hooks.append(module.register_forward_hook(hook))
    param = next(model.parameters(), None)
    dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
    device = param.device if param is not None else "cpu"
    # eval + no_grad: the probe must not update BatchNorm statistics or build a graph;
    # each module's own training flag is restored afterwards.
    flags = {m: m.training for m in model.modules()}
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros((1, *input_shape), dtype=dtype, device=device))
    finally:
        for h in hooks:
            h.remove()
        for m, flag in flags.items():
            m.training = flag
    return [(name, mod, shape) for name, (mod, shape) in seen.items()]


def _parse_placement(placement, n: int, kind: str) -> list[int]:
    valid = f"valid indices are 1..{n} into the model's {kind} layers in forward order"
    if isinstance(placement, str):
        text = placement.strip().lower()
        if text == "first":
            return [1]
        if text == "all":
            return list(range(1, n + 1))
        try:
            indices = [int(part) for part in text.split(",")]
        except ValueError:
            hint = "use 'first', 'all' or indices like '1,5'"
            raise ValueError(f"unknown placement {placement!r}: {hint}; {valid}") from None
    elif isinstance(placement, numbers.Integral):
        indices = [placement]
    else:
        indices = [int(i) for i in placement]
    if not indices:
        raise ValueError(f"placement {placement!r} selects no layer; {valid}")
    for i in indices:
        if not 1 <= i <= n:
            raise ValueError(f"placement index {i} out of range: {valid}")
    if len(set(indices)) != len(indices):
        raise ValueError(f"placement {placement!r} repeats an index; {valid}")
    return sorted(indices)


def candidate_layers(model: nn.Module, input_shape=None) -> list[tuple[str, nn.Module]]:
    """The layers a placement indexes, as (qualified name, module) pairs: the model's
    nn.Conv2d layers if it has any, else its nn.Linear layers, in forward order (see
    guided_layers); index i of a placement is entry i - 1."""
    kind = nn.Conv2d if any(isinstance(m, nn.Conv2d) for m in model.modules()) else nn.Linear
    candidates = [(n, m) for n, m in model.named_modules() if isinstance(m, kind)]
    if not candidates:
        raise ValueError("model has no nn.Conv2d or nn.Linear layer to guide")
    if input_shape is not None:
        traced = [(n, m) for n, m, _ in _forward_trace(model, input_shape, kind)]
        called = {n for n, _ in traced}
        candidates = traced + [(n, m) for n, m in candidates if n not in called]
    return candidates


def guided_layers(
    model: nn.Module, placement, input_shape=None, *, profile=None, k: int = 5, rank: str = "highest"
) -> list[tuple[str, nn.Module]]:
    """The layers the entropy loss applies to, as (qualified name, module) pairs.

    Candidates: the model's nn.Conv2d layers if it has any, else its nn.Linear layers,
    in forward order: found by a forward pass on a zero input of shape (1, *input_shape)
    (input_shape = (C, H, W) or (D,)) when given, else registration order. Candidates the
    forward pass never calls keep their registration order after the called ones.
    placement: "first", "all", 1-based indices into that list ("1,5", [1, 5] or 3),
    "pre-skip" (the convs whose outputs feed a residual addition, ``pre_skip_convs``) or
    "empirical" (the ``k`` conv layers ranked ``rank`` by mean entropy change in
    ``profile``, ``empirical_convs``). The result is in forward order.
    Raises ValueError for an unknown placement or an index out of range.
    """
    candidates = candidate_layers(model, input_shape)
    kind = nn.Conv2d if isinstance(candidates[0][1], nn.Conv2d) else nn.Linear
    text = placement.strip().lower() if isinstance(placement, str) else None
    if text in ("pre-skip", "empirical"):
        if kind is not nn.Conv2d:
            raise ValueError(f"placement {text!r} chooses conv layers; the model has none")
        if text == "pre-skip":
            names = pre_skip_convs(model)
        else:
            if profile is None or (isinstance(profile, str) and not profile):
                raise ValueError("placement 'empirical' needs a profile CSV (entropy.profile=PATH, from `harness profile`)")
            names = empirical_convs(profile, k, rank)
        position = {n: i for i, (n, _) in enumerate(candidates, start=1)}
        unknown = [n for n in names if n not in position]
        if unknown:
            raise ValueError(f"placement {text!r}: the model has no conv layer {', '.join(unknown[:5])}")
        if not names:
            raise ValueError(f"placement {text!r} selects no layer of this model")
        placement = sorted(position[n] for n in names)
    return [candidates[i - 1] for i in _parse_placement(placement, len(candidates), kind.__name__)]


# Modules and functions a conv's output may pass through on its way to a residual
# addition and still count as "feeding" it: normalisation, activation, dropout.
_PASS_MODULES = (
    nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm, nn.modules.instancenorm._InstanceNorm,
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Sigmoid, nn.Tanh, nn.Hardswish,
    nn.Identity, nn.modules.dropout._DropoutNd,
)
_PASS_FUNCTIONS = {torch.relu, torch.nn.functional.relu, torch.sigmoid, torch.tanh, torch.nn.functional.dropout}
_PASS_METHODS = {"relu", "relu_", "sigmoid", "tanh", "contiguous"}
_ADD_FUNCTIONS = {operator.add, operator.iadd, torch.add}
_ADD_METHODS = {"add", "add_"}


def pre_skip_convs(model: nn.Module) -> list[str]:
    """Names of the nn.Conv2d modules whose output feeds a residual addition, read from
    the model's torch.fx graph: from each tensor input of every addition of two tensors,
    walk back through normalisation, activation and dropout to a conv. In torchvision's
    ResNet-50 these are every bottleneck's conv3 (through bn3) and the four downsample
    convs (the projection shortcuts); an identity shortcut starts at the previous block's
    addition, not at a conv. Order: the graph's (forward) order."""
    import torch.fx

    try:
        graph = torch.fx.symbolic_trace(model).graph
    except Exception as err:  # dynamic control flow and the like
        raise ValueError(f"placement 'pre-skip' reads the model's torch.fx graph, which failed: {type(err).__name__}: {err}") from None
    modules = dict(model.named_modules())
    found: list[str] = []
    for node in graph.nodes:
        is_add = (node.op == "call_function" and node.target in _ADD_FUNCTIONS) or (
            node.op == "call_method" and node.target in _ADD_METHODS
        )
        inputs = [a for a in node.args[:2] if isinstance(a, torch.fx.Node)]
        if not is_add or len(inputs) != 2:
            continue
        for source in inputs:
            name = _conv_feeding(source, modules)
            if name is not None and name not in found:
                found.append(name)
    return found


def _conv_feeding(node, modules: dict) -> str | None:
    """The conv module whose output reaches ``node`` through pass-through ops only."""
    while True:
        if node.op == "call_module":
            module = modules[node.target]
            if isinstance(module, nn.Conv2d):
                return node.target
            if not isinstance(module, _PASS_MODULES):
                return None
        elif not ((node.op == "call_function" and node.target in _PASS_FUNCTIONS)
                  or (node.op == "call_method" and node.target in _PASS_METHODS)):
            return None
        if len(node.all_input_nodes) != 1:
            return None
        node = node.all_input_nodes[0]


def empirical_convs(profile, k: int, rank: str = "highest") -> list[str]:
    """Names of the ``k`` conv layers with the highest (rank="highest") or lowest mean
    per-filter entropy change in ``profile``: a path to a CSV or a DataFrame with columns
    name, kind and value (one row per filter, as `harness profile` writes) or mean (one row
    per layer). A ``source`` column (`harness profile`: "trained" / "random") keeps the
    "trained" rows; a ``stage`` column (a study's profiles) keeps the "final" rows.
    Ties are broken by forward order (the CSV's first appearance)."""
    if rank not in ("highest", "lowest"):
        raise ValueError(f"unknown empirical rank {rank!r}: expected 'highest' or 'lowest'")
    if k < 1:
        raise ValueError(f"empirical placement needs k >= 1 layers, got {k}")
    frame = profile
    if not isinstance(profile, pd.DataFrame):
        path = Path(profile).expanduser()
        if not path.is_file():
            raise ValueError(f"no entropy profile CSV at {path} (write one with `harness profile MODEL`)")
        frame = pd.read_csv(path)
    value = "value" if "value" in frame.columns else "mean"
    missing = {"name", value} - set(frame.columns)
    if missing:
        raise ValueError(f"entropy profile lacks column(s) {', '.join(sorted(missing))}: expected name, kind, value")
    for column, keep in (("source", "trained"), ("stage", "final")):
        if column in frame.columns and frame[column].nunique() > 1:
            if keep not in set(frame[column]):
                raise ValueError(f"entropy profile has several {column}s ({', '.join(map(str, frame[column].unique()))}) and no {keep!r}")
            frame = frame[frame[column] == keep]
    if "kind" in frame.columns:
        frame = frame[frame["kind"] == "conv"]
    means = frame.groupby("name", sort=False)[value].mean()
    if means.empty:
        raise ValueError("entropy profile has no conv layers")
    order = means.sort_values(ascending=rank == "lowest", kind="stable")
    return list(order.index[:k])


# ---------------------------------------------------------------------------- diagnostics


def _log_abs_c11(weight: Tensor, c11: str) -> Tensor:
    return _c11(weight, c11).to(torch.float64).abs().log()


@torch.no_grad()
def entropy_profile(
    model: nn.Module,
    input_shape: tuple,
    spatial: bool = True,
    c11: str = "all_channels",
    reduce: str = "sum",
    kinds: Sequence[str] = ("conv", "dense"),
) -> pd.DataFrame:
    """Per-filter entropy change of every layer (the data of the paper's Fig. 1), nats.

    One forward pass on a zero input of shape (1, *input_shape) finds the nn.Conv2d and
    nn.Linear layers in forward order (layers it never calls are left out). Rows:
    conv layers one per filter, value = sum (reduce="sum") or mean ("mean") over its input
    channels (per ``c11``) of (l-p+1)(w-q+1) log|c11|, or of log|c11| alone with
    spatial=False; dense layers one row, value = log|det| of the square part. ``kinds``
    leaves out "dense" (or "conv") layers, whose rows (and determinants) are then never
    computed. Columns: layer (1-based forward index over conv and dense layers together,
    whatever ``kinds``), name, kind ("conv"/"dense"), filter (0-based), value (float64).

    The spatial factor is taken as the conv's output size H_out * W_out, i.e. l, w =
    H_out + p - 1, W_out + q - 1: exactly the padded input size for stride 1 and dilation 1,
    where Corollary 6 holds. For strided or dilated convs the formula is only an
    approximation (their matrix C_M is not the paper's block Toeplitz one); the output size
    is still the count of positions each filter is applied at.
    """
    _choice(reduce, _REDUCES, "reduce")
    rows = []
    for index, (name, module, out_shape) in enumerate(
        _forward_trace(model, input_shape, (nn.Conv2d, nn.Linear)), start=1
    ):
        if isinstance(module, nn.Conv2d) and "conv" in kinds:
            if spatial:
                p, q = module.weight.shape[-2:]
                size = (out_shape[-2] + p - 1, out_shape[-1] + q - 1)
                per_channel = conv_entropy_change(module.weight, size, c11)
            else:
                per_channel = _log_abs_c11(module.weight, c11)
            per_filter = per_channel.sum(dim=1) if reduce == "sum" else per_channel.mean(dim=1)
            rows += [(index, name, "conv", f, v) for f, v in enumerate(per_filter.tolist())]
        elif isinstance(module, nn.Linear) and "dense" in kinds:
            rows.append((index, name, "dense", 0, dense_entropy_change(module.weight).item()))
    return pd.DataFrame(rows, columns=["layer", "name", "kind", "filter", "value"])


@torch.no_grad()
def entropy_stats(
    layers: Sequence[tuple[str, nn.Module] | nn.Module], c11: str = "all_channels"
) -> dict[str, float]:
    """Diagnostics of the guided layers, recorded per replication (all in nats).

    logdet_mean: mean over dense layers of log|det| of the square part (float64 slogdet).
    log_c11_mean / log_c11_min / log_c11_max: over every guided conv filter and input
    channel (per ``c11``) of log|c11|. A key is absent when no layer of its kind is given.
    """
    modules = _unpack(layers)
    stats: dict[str, float] = {}
    logdets = [dense_entropy_change(m.weight) for m in modules if isinstance(m, nn.Linear)]
    if logdets:
        stats["logdet_mean"] = torch.stack(logdets).mean().item()
    logs = [_log_abs_c11(m.weight, c11).flatten() for m in modules if isinstance(m, nn.Conv2d)]
    if logs:
        values = torch.cat(logs)
        stats.update(
            log_c11_mean=values.mean().item(),
            log_c11_min=values.min().item(),
            log_c11_max=values.max().item(),
        )
    return stats
