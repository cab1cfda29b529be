"""A pack's state (harness.training.pack trains it): its replications (Stopper: one stopping
rule and its result), its trained models (Member: one trajectory, shared by the
replications that differ only in their stopping rule; seeded_members makes them), the
stacked weights of the members still training with their optimizer (Pack), and an
epoch's numbers per member (EpochSums while it trains, EpochNumbers once validated)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone

import numpy as np
import torch
from torch import Tensor, nn

from harness.data import Splits
from harness.study import Config, derive_seed
from harness.training import diagnostics
from harness.training.loop import seeded_model
from harness.training.outcome import PackedOutcome, diverged_metrics
from harness.training.packing import trajectory_key
from harness.training.stopping import EarlyStopping


@dataclass
class Stopper:
    """One replication on a member's trajectory: its early stopping (the rule train()
    uses too) and its result."""

    index: int  # position in the caller's list
    config: Config
    outcome: PackedOutcome = field(default_factory=PackedOutcome)
    rule: EarlyStopping = None  # type: ignore[assignment]
    best_state: list[Tensor] | None = None
    stopped: bool = False

    def __post_init__(self):
        self.rule = EarlyStopping.of(self.config)

    def diverge(self, epoch: int, message: str) -> None:
        """End this replication ``diverged`` at ``epoch``, as train() does."""
        self.outcome.status, self.outcome.error = "diverged", message
        self.outcome.metrics = diverged_metrics(epoch, self.rule)
        self.outcome.finished_at = datetime.now(timezone.utc)
        self.stopped = True


@dataclass
class Member:
    """One trained model of the pack: its weights' own state (init, data order,
    diagnostics), shared by its replications (``stoppers``, one per stopping rule)."""

    config: Config  # how it trains: its first replication's config
    model: nn.Module  # its own module: init profile, and its final weights for the last metrics
    data_gen: torch.Generator
    stoppers: list[Stopper]
    grad_ratios: list[float] = field(default_factory=list)
    term_leds: list[float] = field(default_factory=list)

    def training(self) -> list[Stopper]:
        return [s for s in self.stoppers if not s.stopped]


def seeded_members(configs: list[Config], splits: Splits, device: torch.device, data_device) -> list[Member]:
    """One Member per trajectory, with its replications' Stoppers: its model seeded as
    train() seeds it, its own data-order generator, and the "init" profile rows its
    replications record. Built one after the other: each seeds the global generator."""
    by_trajectory: dict[tuple, list[Stopper]] = {}
    for i, config in enumerate(configs):
        by_trajectory.setdefault(trajectory_key(config), []).append(Stopper(i, config))
    members = []
    for stoppers in by_trajectory.values():
        config = stoppers[0].config
        model = seeded_model(config, splits.input_shape, splits.n_classes).to(device)
        gen = torch.Generator(device=data_device).manual_seed(derive_seed(config.seed, "data"))
        rows = diagnostics.profile_rows(model, splits.input_shape, "init", configs[0].entropy.c11)
        for s in stoppers:
            s.outcome.profiles += rows
        members.append(Member(config, model, gen, stoppers))
    return members


class Pack:
    """The stacked weights, their optimizer, and the members they belong to, in order.

    The optimizer owns contiguous tensors (``leaves``: what the fused kernels take); the
    engine reads ``params``, the same memory in the modules' shapes. A weight the engine
    reads transposed (``engine.transposed``) is stored as its transpose, (P, in, out), and
    its param is the transposed view."""

    def __init__(self, members: list[Member], names: list[str], guided: list[str], device, transposed=None):
        self.members = members
        self.names = names
        stacked = [torch.stack([dict(m.model.named_parameters())[n].detach() for m in members]) for n in names]
        self.transposed = [bool(transposed and transposed(p)) for p in stacked]
        self._set([(p.mT if t else p).to(device).contiguous().requires_grad_() for p, t in zip(stacked, self.transposed)])
        self.guided = [names.index(g) for g in guided]

    def _set(self, leaves: list[Tensor], state: list[dict] | None = None) -> None:
        self.leaves = leaves
        # a transposed view is made outside autograd: only the dense engine reads one, and
        # without autograd; an untransposed param is its leaf, which the vmap engine differentiates
        with torch.no_grad():
            self.params = [leaf.mT if t else leaf for leaf, t in zip(leaves, self.transposed)]
        self.optimizer = _optimizer(leaves, self.members[0].config)
        for leaf, st in zip(leaves, state or []):
            self.optimizer.state[leaf] = st

    def set_grads(self, grads: list[Tensor] | None) -> None:
        """Hand the engine's gradients (params' shapes) to the optimizer's leaves, or clear them."""
        for leaf, g, t in zip(self.leaves, grads or [None] * len(self.leaves), self.transposed):
            if g is not None:
                g = g.mT if t else g
                # the fused CPU optimizers read a gradient as if laid out like its parameter
                # (cf. pytorch/pytorch#106951): one laid out otherwise must be copied first
                g = g if g.stride() == leaf.stride() else g.contiguous()
            leaf.grad = g

    def keep(self, positions: list[int]) -> None:
        """Drop every member not at ``positions``: slice the weights and optimizer state."""
        index = torch.tensor(positions, device=self.leaves[0].device)
        size = len(self.members)
        leaves = [p.detach().index_select(0, index).requires_grad_() for p in self.leaves]
        state = [
            {k: v.index_select(0, index.to(v.device)) if torch.is_tensor(v) and v.ndim and v.shape[0] == size else v
             for k, v in self.optimizer.state.get(old, {}).items()}
            for old in self.leaves
        ]
        self.members = [self.members[i] for i in positions]
        self._set(leaves, state)

    def member_weights(self, position: int) -> list[Tensor]:
        return [p[position].detach().clone() for p in self.params]


def _optimizer(params: list[Tensor], config: Config) -> torch.optim.Optimizer:
    """train()'s optimizer over stacked tensors: element-wise, so P optimizers in one.
    fused where the device has a fused kernel (one pass over weights and state)."""
    fused = params[0].device.type in ("cpu", "cuda")
    if config.train.optimizer == "sgd":
        return torch.optim.SGD(params, lr=config.train.lr, momentum=config.train.momentum, fused=fused)
    return torch.optim.Adam(params, lr=config.train.lr, eps=config.train.adam_eps, fused=fused)


@dataclass
class EpochSums:
    """A training epoch's running sums, one entry per member of the pack: its task loss,
    its correct predictions, its first non-finite losses (what a divergence reports), and
    the guidance diagnostics of its first step (0 where λ = 0)."""

    loss_sum: Tensor
    correct: Tensor
    bad: Tensor
    bad_task: Tensor
    bad_total: Tensor
    ratios: Tensor
    leds: Tensor

    @classmethod
    def zeros(cls, size: int, device: torch.device) -> EpochSums:
        return cls(
            torch.zeros(size, dtype=torch.float64, device=device),
            torch.zeros(size, dtype=torch.int64, device=device),
            torch.zeros(size, dtype=torch.bool, device=device),
            torch.zeros(size, device=device),
            torch.zeros(size, device=device),
            torch.zeros(size, dtype=torch.float64, device=device),
            torch.zeros(size, dtype=torch.float64, device=device),
        )

    def add(self, task: Tensor, total: Tensor, out: Tensor, y: Tensor, examples: int, reconstruction: bool) -> None:
        """Add one step's losses (``examples`` each member) and predictions."""
        with torch.no_grad():
            newly = ~torch.isfinite(total) & ~self.bad
            self.bad_task = torch.where(newly, task, self.bad_task)
            self.bad_total = torch.where(newly, total, self.bad_total)
            self.bad |= newly
            self.loss_sum += task.double() * examples
            if not reconstruction:
                self.correct += (out.argmax(-1) == y).sum(1)


@dataclass
class EpochNumbers:
    """An epoch's numbers per member of the pack, as lists: what its replications' history
    rows, early stopping and divergence read."""

    val_loss: list
    val_acc: list | None
    examples32: np.ndarray | None  # every validation example's float32 loss: monitor=total_float32
    ent_value: list
    ent32: list | None
    train_loss: list
    train_acc: list
    bad: list
    bad_task: list
    bad_total: list
    ratios: list
    leds: list
