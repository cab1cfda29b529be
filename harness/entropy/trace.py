"""The order a model's forward pass first calls its layers, and the shape each returns: one
probe on a zero input, which both guided-layer placement and the entropy profile index by."""

from __future__ import annotations

import torch
from torch import nn


def forward_trace(model: nn.Module, input_shape, types) -> list[tuple[str, nn.Module, tuple]]:
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
