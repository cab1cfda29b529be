"""Diagnostics, in nats: the entropy change every conv filter and dense layer of a model
makes (the data of the paper's Fig. 1), and a summary of it over the guided layers that each
replication records."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
import torch
from torch import nn

from harness.entropy.change import (
    _REDUCES,
    _choice,
    _log_abs_c11,
    _unpack,
    conv_entropy_change,
    dense_entropy_change,
)
from harness.entropy.trace import forward_trace


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
        forward_trace(model, input_shape, (nn.Conv2d, nn.Linear)), start=1
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
