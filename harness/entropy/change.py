"""The entropy change one layer makes (Theorem 3 for a dense layer, Corollary 6 for a conv
filter), and the option checks and c11 selection that the loss and the diagnostics share.

The underscored names here are the package's own shared helpers (used by loss.py and
profile.py), not part of harness.entropy's interface.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from harness.entropy.determinants import logabsdet

_PRECISIONS = {"float64": torch.float64, "float32": torch.float32}
_C11 = ("all_channels", "first_channel")
_REDUCES = ("sum", "mean")


def _choice(value: str, allowed: Sequence[str], what: str) -> str:
    if value not in allowed:
        raise ValueError(f"unknown {what} {value!r}: expected one of {', '.join(allowed)}")
    return value


def _dtype(precision: str) -> torch.dtype:
    return _PRECISIONS[_choice(precision, tuple(_PRECISIONS), "precision")]


def _unpack(layers) -> list[nn.Module]:
    """Accept modules or the (name, module) pairs that guided_layers returns."""
    return [m[1] if isinstance(m, tuple) else m for m in layers]


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


def _log_abs_c11(weight: Tensor, c11: str) -> Tensor:
    return _c11(weight, c11).to(torch.float64).abs().log()
