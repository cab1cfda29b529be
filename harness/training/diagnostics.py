"""What the guidance term did: its gradient against the task gradient (grad_ratio,
term_led; pack_grad_ratios for every member of a pack at once), and the entropy profile
rows recorded at initialisation, for the guided layers, and after training."""

from __future__ import annotations

import math

import torch

from harness.entropy import candidate_layers, entropy_profile, entropy_stats


def grad_ratio(task: torch.Tensor, term: torch.Tensor, params: list, lam: float) -> tuple[float, float]:
    """(||∇ λ·entropy term|| / ||∇ task loss||, term_led) over the guided layers' weights.

    The ratio tells how large the guidance gradient is: with the inverse form and a
    determinant far below eps it is tiny. term_led is the share of the weights the term
    acts on (nonzero term gradient) where it outweighs the task gradient: under Adam, which
    scales each weight's step by its own gradient history, those weights follow the term,
    however small the ratio (a weight on an input that is always 0 has no task gradient)."""
    if lam == 0 or not params:
        return 0.0, 0.0
    g_task = torch.autograd.grad(task, params, retain_graph=True)
    g_term = torch.autograd.grad(term, params, retain_graph=False, allow_unused=True)
    pairs = [(a, b) for a, b in zip(g_task, g_term) if b is not None]
    norm_task = torch.sqrt(sum((g.double() ** 2).sum() for g in g_task))
    norm_term = torch.sqrt(sum((b.double() ** 2).sum() for _, b in pairs))
    ratio = (norm_term / norm_task).item() if norm_task > 0 else math.inf
    acted = sum(int((b != 0).sum()) for _, b in pairs)
    led = sum(int(((b.abs() > a.abs()) & (b != 0)).sum()) for a, b in pairs)
    return ratio, led / acted if acted else float("nan")


def pack_grad_ratios(grads, term_grads, task_pieces, guided: list[int], members: torch.Tensor,
                     size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """grad_ratio for every member of a pack: per member (||∇ λ·term|| / ||∇ task||,
    term_led) over the guided layers' weights (0 where λ = 0: only ``members`` have a
    term). The term's gradient lives in its pieces only; ``task_pieces`` are the task
    gradient's matching pieces (harness.training.engines.PackEntropy.pieces)."""
    norm_task = torch.sqrt(sum((grads[g].index_select(0, members).double() ** 2).flatten(1).sum(1) for g in guided))
    norm_term = torch.sqrt(sum((g.double() ** 2).flatten(1).sum(1) for g in term_grads))
    ratio = torch.where(norm_task > 0, norm_term / norm_task, torch.full_like(norm_task, math.inf))
    acted = sum((b != 0).flatten(1).sum(1) for b in term_grads)
    led = sum(((b.abs() > a.abs()) & (b != 0)).flatten(1).sum(1) for a, b in zip(task_pieces, term_grads))
    led = torch.where(acted > 0, led.double() / acted.clamp(min=1), torch.full_like(norm_task, math.nan))
    zeros = torch.zeros(size, dtype=torch.float64, device=ratio.device)
    return zeros.index_copy(0, members, ratio), zeros.clone().index_copy(0, members, led)




def guided_rows(model, input_shape, guided, c11: str) -> list[dict]:
    """Profile rows of stage "guided", one per guided layer: layer = its index in the
    placement's numbering (conv layers in forward order), name = its module, value = its
    mean log|c11| (conv) or log|det| (dense) at initialisation. They record what a
    placement "pre-skip" or "empirical" resolved to (index placements need no record:
    the "init" profile lists the layers in the same forward order)."""
    index = {name: i for i, (name, _) in enumerate(candidate_layers(model, input_shape), start=1)}
    rows = []
    for name, module in guided:
        stats = entropy_stats([module], c11=c11)
        value = stats.get("log_c11_mean", stats.get("logdet_mean"))
        kind = "conv" if isinstance(module, torch.nn.Conv2d) else "dense"
        rows.append({"stage": "guided", "layer": index[name], "name": name, "kind": kind, "filter": 0, "value": float(value)})
    return rows


def profile_rows(model, input_shape, stage: str, c11: str) -> list[dict]:
    with torch.no_grad():
        frame = entropy_profile(model, input_shape, c11=c11)
    return [
        {"stage": stage, "layer": int(r.layer), "name": r.name, "kind": r.kind, "filter": int(r.filter), "value": float(r.value)}
        for r in frame.itertuples(index=False)
    ]
