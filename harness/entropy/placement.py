"""Which layers the entropy loss guides: a placement ("first", "all", 1-based indices,
"pre-skip" from the model's torch.fx graph, "empirical" from an entropy profile CSV) resolved
to (name, module) pairs of the model's conv (else dense) layers in forward order."""

from __future__ import annotations

import numbers
import operator
from pathlib import Path

import pandas as pd
import torch
from torch import nn

from harness.entropy.trace import forward_trace


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
        traced = [(n, m) for n, m, _ in forward_trace(model, input_shape, kind)]
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
