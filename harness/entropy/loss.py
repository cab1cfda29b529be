"""The entropy guidance term added to the task loss (eq. 19-25): per dense layer
-lam log|det W| or lam / (|det W| + eps), per conv filter and input channel -lam log|c11| or
lam / (|c11| + eps), lam per layer or per filter."""

from __future__ import annotations

import numbers
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from harness.entropy.change import _REDUCES, _c11, _choice, _dtype, _unpack, dense_entropy_change

_FORMS = ("log", "inverse")


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
