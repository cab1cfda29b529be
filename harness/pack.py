"""Train a pack of replications as one vectorised model.

Replications that differ only in λ and seed share an architecture, a data set and every
training setting, so their weights can be stacked along a leading member dimension,
(P, *shape), and trained together: per step one batched matmul per layer (the dense
autoencoder) or one ``torch.func.vmap`` call of the model (the CNN, whose convolutions
vmap turns into one grouped convolution) instead of P small ones with P times the Python
and kernel-launch overhead.

Each member is still its own replication, trained as ``harness.train.train`` trains it
alone: its initial weights come from ``torch.manual_seed(derive_seed(seed, "init"))`` and
``build_model``; its data order from its own generator seeded ``derive_seed(seed,
"data")``, with the same ``randperm`` calls; Adam (or SGD) acts element-wise, so one
optimizer over the stacked tensors is P independent optimizers in the same step; its λ,
its entropy term (float64 log|det|, ``harness.entropy.logabsdet``), its grad-ratio diagnostic, its early
stopping and its final metrics are its own. A member that stops is frozen (its best or
last weights are kept and its result is final) and the pack is compacted to the members
still training. The histories equal the lone runs' to float rounding: batched kernels
sum in a different order.

Replications that differ only in their stopping rule (what early stopping monitors, its
patience and min-delta, the epoch cap, best or last weights: STOPPING_RULE) have the same
weights epoch after epoch, so they are one member: trained once, each stopped by its own
rule and evaluated on its own best weights. A grid over the monitor costs one training.

Packable: models ``dense_ae`` and ``cnn`` on in-memory data sets, without dropout (its
masks come from the global generator), batch augmentation (its own random stream) or the
lr schedule (``train.lr_patience``, a per-member learning rate); the rest train alone.

Speed (``harness bench``): the dense autoencoder's step is written by hand with batched
matmuls into reused buffers, the CNN goes through ``torch.func.vmap``. On a CPU a pack
is bound by memory traffic, so choose_pack_size keeps a pack's working set (weights,
gradients, Adam's moments, a step's activations) within CPU_PACK_BYTES: dense autoencoders
pack by the dozen, a CNN's activations fill it alone and it trains one at a time there; on
a GPU packs are as large as its memory allows. With ``train.compile`` on, every model,
the dense autoencoder too, goes through the vmap engine, whose training forward
``torch.compile`` traces (its backward through AOTAutograd); the hand-written step, which
writes into reused buffers, is not compiled (compiled, it was no faster on a CPU: README).
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from harness.data import IMAGE_DATASETS, Splits, splits_for
from harness.entropy import entropy_loss, entropy_stats, guided_layers, logabsdet
from harness.models import DenseAutoencoder
from harness.stopping import STOPPING_RULE, EarlyStopping, EpochValidation
from harness.study import Config, Replication, derive_seed, flatten
from harness.workers import PROGRESS_ENV
from harness.train import (Outcome, _guided_rows, _mean, _profile_rows, check_config, float32_math, result_dict,
                           seeded_model, subnormals_kept, train)

__all__ = [
    "PACKABLE_MODELS", "PackedOutcome", "STOPPING_RULE", "pack_key", "shared_settings", "trajectory_key", "stopping_rule", "pack_groups", "choose_pack_size", "replication_bytes", "free_host_memory", "train_pack", "train_in_packs", "run_pack",
]

PACKABLE_MODELS = ("dense_ae", "cnn")
MAX_PACK_CPU = 128
# A CPU pack's working set (choose_pack_size), measured with E1's autoencoder, 2 workers
# of one thread each: at latent 80 (3.0 MB a member) packs of 18 trained 15-25% faster
# than packs of 35 on an Intel Xeon (a VM reporting a 480 MiB L3), and 8 to 17 were
# fastest on an AMD EPYC (32 MiB L3); at latent 20 (1.4 MB), packs of 35 or more trained
# 9% faster than 17. An MNIST CNN (22 MB, nearly all activations) trains faster alone.
# 40 MiB gives 14, 29 and 1.
CPU_PACK_BYTES = 40 << 20
MAX_PACK_GPU = 1024
EVAL_BATCH = 1024  # shared examples per evaluation step, as train.EVAL_BATCH
EVAL_FLOATS_CPU = 1 << 21  # activations of one evaluation step on CPU, in floats (8 MiB: cache-sized)
EVAL_FLOATS_GPU = 1 << 28
# Entered around every training step of a pack; harness.ceiling sets it to record one
# step's matmuls. Does nothing otherwise.
step_context: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext
_VARYING = ("lam", "seed")  # what members of one pack may differ in
# STOPPING_RULE (harness.stopping): replications that differ only in it follow one training
# trajectory, which a pack trains once and stops for each of them in turn.


@dataclass
class PackedOutcome(Outcome):
    """An Outcome plus what packing adds: the member's share of the pack's wall time (each
    epoch's time split evenly among the members training in it) and when it finished."""

    wall_s: float = 0.0
    finished_at: datetime | None = None


# ---------------------------------------------------------------------------- grouping


def pack_key(config: Config) -> tuple | None:
    """What a pack's replications share: every setting but λ, seed and the stopping rule.
    None when ``config`` cannot be packed (its model, dropout or lr schedule; or a config
    train() rejects)."""
    try:
        check_config(config)
    except Exception:
        return None
    if (
        config.model not in PACKABLE_MODELS
        or config.dataset in IMAGE_DATASETS  # read from files by a DataLoader, not tensors in memory
        or config.data.augment != "none"  # its own random stream per batch
        or config.net.dropout > 0
        or config.train.lr_patience
    ):
        return None
    return shared_settings(config)


def shared_settings(config: Config) -> tuple:
    """Every setting but λ, seed and the stopping rule: what a pack's members share, and
    all that a replication's memory can depend on."""
    return tuple((k, v) for k, v in flatten(config).items() if k not in _VARYING + STOPPING_RULE)


def trajectory_key(config: Config) -> tuple:
    """How a replication trains: every setting but the stopping rule. Replications with the
    same key have the same weights epoch after epoch and share one member of a pack."""
    return tuple((k, v) for k, v in flatten(config).items() if k not in STOPPING_RULE)


def stopping_rule(config: Config) -> tuple:
    return tuple((k, v) for k, v in flatten(config).items() if k in STOPPING_RULE)


def pack_groups(configs: Sequence[Config], max_size: int | Callable[[Config], int] | None = None) -> list[list[int]]:
    """Indices of ``configs`` grouped into packs, in first-seen order: configs with the same
    pack_key together, configs that share a trajectory always in the same pack, at most
    ``max_size`` members (trajectories) per pack: a number, or a function of a config (1:
    that config goes alone though it could pack). Unpackable configs go alone."""
    limit_of = max_size if callable(max_size) else (lambda config: max_size)
    groups: dict[object, list[int]] = {}  # the open pack of each pack key
    members: dict[int, set] = {}  # id(pack) -> its trajectories
    placed: dict[tuple, list[int]] = {}  # trajectory -> its pack
    order: list[list[int]] = []
    for i, config in enumerate(configs):
        limit = limit_of(config)
        key = pack_key(config) if limit is None or limit > 1 else None
        if key is None:
            order.append([i])
            continue
        trajectory = trajectory_key(config)
        if trajectory in placed:
            placed[trajectory].append(i)
            continue
        group = groups.get(key)
        if group is None or (limit is not None and len(members[id(group)]) >= limit):
            group = groups[key] = []
            members[id(group)] = set()
            order.append(group)
        group.append(i)
        members[id(group)].add(trajectory)
        placed[trajectory] = group
    return order


def choose_pack_size(config: Config, input_shape: tuple, n_classes: int, device: str | torch.device = "cpu") -> int:
    """The automatic pack size.

    GPU: as many members as fit in a quarter of its free memory (weights, gradients,
    optimizer state, best weights, a training batch's activations), at most MAX_PACK_GPU.
    CPU: as many as keep the pack's working set, what every training step reads and writes
    (weights, gradients and Adam's two moments, a batch's activations and their
    gradients), within CPU_PACK_BYTES, at most MAX_PACK_CPU. A CPU pack is bound by memory
    traffic: past that size a step's passes over the pack stream from memory, and below it
    Python's share of each step grows. A dense autoencoder's pack is 10-50 members; a
    CNN's activations alone about fill it, and its pack size is 1: on CPU it trains alone
    (faster, measured: 4 MNIST CNNs in 4.7 s alone, 5.6 s in packs of 2)."""
    n_params, acts = _member_floats(config, input_shape, n_classes)
    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(max(1, min(MAX_PACK_GPU, free // 4 // _replication_bytes(n_params, acts))))
    by_memory = free_host_memory() // 4 // _replication_bytes(n_params, acts)
    by_traffic = CPU_PACK_BYTES // (4 * (4 * n_params + 3 * acts))
    return int(max(1, min(MAX_PACK_CPU, by_memory, by_traffic)))


def replication_bytes(config: Config, input_shape: tuple, n_classes: int) -> int:
    """Memory one replication trains in, in bytes (float32): its weights, gradients,
    optimizer state and best weights, and a training batch's activations and their
    gradients. What a pack of P needs is about P times this."""
    return _replication_bytes(*_member_floats(config, input_shape, n_classes))


def _replication_bytes(n_params: int, acts: int) -> int:
    return 4 * (6 * n_params + 3 * acts)


def _member_floats(config: Config, input_shape: tuple, n_classes: int) -> tuple[int, int]:
    """(parameters, floats of a training batch's activations) of one replication."""
    with torch.random.fork_rng(devices=[]):  # building the model draws from the global generator
        model = seeded_model(config, input_shape, n_classes)
    n_params = sum(p.numel() for p in model.parameters())
    return n_params, config.train.batch_size * _activation_floats(model, input_shape)


def free_host_memory() -> int:
    """Memory available to new allocations on this machine, in bytes."""
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except ImportError:  # psutil comes with dask.distributed; a plain fallback all the same
        with open("/proc/meminfo") as f:
            info = dict(line.split(":", 1) for line in f)
        return int(info["MemAvailable"].split()[0]) * 1024


def _activation_floats(model: nn.Module, input_shape: tuple) -> int:
    """Floats of every leaf module's output for one example: a model's activation memory."""
    total = [math.prod(input_shape)]
    hooks = [
        m.register_forward_hook(lambda mod, args, out: total.append(out[0].numel()))
        for m in model.modules()
        if not list(m.children())
    ]
    param = next(model.parameters())
    try:
        with torch.no_grad():
            model(torch.zeros((1, *input_shape), dtype=param.dtype, device=param.device))
    finally:
        for h in hooks:
            h.remove()
    return sum(total)


# ---------------------------------------------------------------------------- the result dicts


def run_pack(reps: Sequence[Replication], device: str = "cpu", data_dir: str | Path | None = None) -> list[dict]:
    """Train ``reps`` (same pack_key) in packs (train_in_packs) and return one result dict
    each, in order, with the keys of ``harness.train.run_replication``'s. An exception
    outside a member's own training (data, a bug) marks every member failed with its
    traceback."""
    started = datetime.now(timezone.utc)
    config = reps[0].config
    try:
        splits = splits_for(config, data_dir, device)
        outcomes = train_in_packs([r.config for r in reps], splits, device)
    except Exception:  # recorded, not raised, as run_replication does
        error = traceback.format_exc()
        outcomes = [PackedOutcome(status="failed", error=error) for _ in reps]
    return [_result(rep, outcome, device, started) for rep, outcome in zip(reps, outcomes)]


def train_in_packs(configs: Sequence[Config], splits: Splits, device, size: int | None = None) -> list[PackedOutcome]:
    """Train ``configs`` (one pack_key) in consecutive packs of at most ``size`` members
    (default choose_pack_size), as equal as can be; one outcome each, in order. A member is
    one training trajectory: the configs that differ only in their stopping rule are one
    member. A single config is trained by harness.train.train itself, the reference loop."""
    configs = list(configs)
    members: dict[tuple, list[int]] = {}
    for i, config in enumerate(configs):
        members.setdefault(trajectory_key(config), []).append(i)
    groups = list(members.values())
    size = size or choose_pack_size(configs[0], splits.input_shape, splits.n_classes, device)
    n_packs = -(-len(groups) // size)
    outcomes: list[PackedOutcome | None] = [None] * len(configs)
    for i in range(n_packs):  # packs of near-equal size: 70 at most 33 a pack are 24 + 23 + 23
        chunk = [j for group in groups[i * len(groups) // n_packs : (i + 1) * len(groups) // n_packs] for j in group]
        chunk_configs = [configs[j] for j in chunk]
        trained = train_pack(chunk_configs, splits, device) if len(chunk) > 1 else [_alone(chunk_configs[0], splits, device)]
        for j, outcome in zip(chunk, trained):
            outcomes[j] = outcome
    return outcomes


def _alone(config: Config, splits: Splits, device) -> PackedOutcome:
    clock = time.perf_counter()
    try:
        outcome = train(config, splits, device)
    except Exception:  # recorded, not raised, as run_replication does
        outcome = Outcome(status="failed", error=traceback.format_exc())
    return PackedOutcome(**vars(outcome), wall_s=time.perf_counter() - clock, finished_at=datetime.now(timezone.utc))


def _result(rep: Replication, outcome: PackedOutcome, device, started: datetime) -> dict:
    finished = outcome.finished_at or datetime.now(timezone.utc)
    return result_dict(rep, outcome, device, started, finished, outcome.wall_s)


# ---------------------------------------------------------------------------- the packed model


class _DenseEngine:
    """The dense autoencoder on stacked weights, forward and backward by hand.

    Training: x (P, b, D), one batch per member: two batched matmuls forward, three backward,
    every gradient written into a preallocated buffer laid out as its weight (what the
    fused optimizer reads), no autograd graph. Evaluation: one shared x (b, D), broadcast
    to the P members' matmuls. The backward is autograd's own (mse_loss, sigmoid_backward,
    threshold_backward for ReLU), so the numbers are train()'s to rounding; tests check it
    against train().

    The pack stores each weight (P, out, in) in "in, out" memory order (``transposed``: its
    param is a transposed view of a contiguous (P, in, out) tensor), so both forward
    matmuls read it as a plain (in, out) matrix: at batch 32 a batched matmul whose second
    operand is a transposed view ran at 125 GFLOP/s on a core of an Intel Xeon where the
    plain one ran at 160-185 (README, "How fast"). The math takes any layout; only its
    speed depends on it."""

    # activation in place, and its backward written into a given tensor (autograd's kernels)
    _ACTS = {
        nn.Sigmoid: (torch.sigmoid_, lambda g, out, dst: torch.ops.aten.sigmoid_backward.grad_input(g, out, grad_input=dst)),
        nn.Tanh: (torch.tanh_, lambda g, out, dst: torch.ops.aten.tanh_backward.grad_input(g, out, grad_input=dst)),
        nn.ReLU: (torch.relu_, lambda g, out, dst: torch.ops.aten.threshold_backward.grad_input(g, out, 0, grad_input=dst)),
        nn.Identity: (lambda z: z, lambda g, out, dst: g),
    }

    def __init__(self, template: DenseAutoencoder):
        names = [n for n, _ in template.named_parameters()]
        if names != ["encoder.weight", "encoder.bias", "decoder.weight", "decoder.bias"]:
            raise TypeError(f"unexpected dense autoencoder parameters {names}")
        self.latent_act = self._ACTS[type(template.latent_activation)]
        self.output_act = self._ACTS[type(template.output_activation)]
        self._buffers: dict[str, Tensor] = {}

    def _buffer(self, name: str, shape: tuple, like: Tensor) -> Tensor:
        """A tensor reused from step to step: no allocation, no fresh pages to fault in.
        A contiguous view of the front of one flat buffer per name, so the smaller shapes
        of a compacted pack or of a split's last batch reuse it too."""
        numel = math.prod(shape)
        buf = self._buffers.get(name)
        if buf is None or buf.numel() < numel or buf.dtype != like.dtype or buf.device != like.device:
            buf = self._buffers[name] = torch.empty(numel, dtype=like.dtype, device=like.device)
        return buf[:numel].view(shape)

    def batch(self, xs: Tensor, ys: Tensor, idx: Tensor) -> tuple[Tensor, None]:
        """Each member's batch, (P, b, D): rows ``idx`` (P, b) of the flattened images."""
        flat = xs.flatten(1)
        x = self._buffer("x", (idx.numel(), flat.shape[1]), flat)
        return torch.index_select(flat, 0, idx.flatten(), out=x).view(*idx.shape, -1), None

    @staticmethod
    def transposed(p: Tensor) -> bool:
        """Whether the pack should store stacked ``p`` transposed: the weights."""
        return p.ndim == 3

    def _like(self, name: str, p: Tensor) -> Tensor:
        """A reused buffer with ``p``'s shape and memory order (the fused optimizer reads a
        gradient as laid out like its parameter)."""
        if p.ndim == 3 and not p.is_contiguous() and p.mT.is_contiguous():
            return self._buffer(name, p.mT.shape, p).mT
        return self._buffer(name, p.shape, p)

    @torch.no_grad()
    def forward(self, params: list[Tensor], x: Tensor) -> Tensor:
        """Evaluation: the P members on one shared batch x (b, C, H, W) -> (P, b, D), in
        reused buffers (valid until the next call), as the training step: no megabyte
        allocation per evaluation batch. The shared batch is broadcast (stride 0), not copied."""
        w1, b1, w2, b2 = params
        xf = x.flatten(1)
        (size, latent), batch = w1.shape[:2], len(xf)
        h = torch.baddbmm(b1[:, None, :], xf.expand(size, -1, -1), w1.mT,
                          out=self._buffer("eval_h", (size, batch, latent), xf))
        self.latent_act[0](h)
        out = torch.baddbmm(b2[:, None, :], h, w2.mT, out=self._buffer("eval_out", (size, batch, xf.shape[1]), xf))
        return self.output_act[0](out)

    @torch.no_grad()
    def task_and_grads(self, params: list[Tensor], x: Tensor, y: None) -> tuple[Tensor, Tensor, list[Tensor]]:
        """One training step on x (P, b, D): per-member task loss (P,), the output (valid
        until the next step), and the gradients (buffers, likewise)."""
        w1, b1, w2, b2 = params
        (size, batch, width), latent = x.shape, w1.shape[1]
        grads = [self._like(f"grad{i}", p) for i, p in enumerate(params)]
        h = self._buffer("h", (size, batch, latent), x)
        out = self._buffer("out", x.shape, x)
        diff = self._buffer("diff", x.shape, x)
        dh_t = self._buffer("dh_t", (size, latent, batch), x)
        dz1 = self._buffer("dz1", h.shape, x)
        self.latent_act[0](torch.baddbmm(b1[:, None, :], x, w1.mT, out=h))
        self.output_act[0](torch.baddbmm(b2[:, None, :], h, w2.mT, out=out))
        torch.sub(out, x, out=diff)
        numel = batch * width
        # mse_loss, mean: each member's ||diff||^2 / numel, the norm one pass over diff
        task = torch.linalg.vector_norm(diff.view(size, numel), dim=1).square_() / numel
        dz2 = self.output_act[1](diff, out, diff)  # in place; d loss / d pre-activation once scaled by
        scale = 2.0 / numel  # this, which the matmuls apply (alpha) rather than a pass of its own
        # each product written in the order its operands are read fastest: a gradient
        # (P, out, in) as its transpose, (P, in, out), and dh as dh^T = w2^T dz2^T
        torch.baddbmm(grads[2].mT, h.mT, dz2, beta=0, alpha=scale, out=grads[2].mT)
        torch.sum(dz2, 1, out=grads[3]).mul_(scale)
        torch.baddbmm(dh_t, w2.mT, dz2.mT, beta=0, alpha=scale, out=dh_t)
        dz1 = self.latent_act[1](dh_t.mT, h, dz1)
        torch.bmm(x.mT, dz1, out=grads[0].mT)
        torch.sum(dz1, 1, out=grads[1])
        return task, out, grads


class _VmapEngine:
    """Any model on stacked weights: torch.func.functional_call under vmap, autograd for
    the gradients. For the CNN vmap turns each convolution into one grouped convolution.
    ``compile_mode`` (``train.compile``) other than "off" runs the training forward through
    torch.compile in that mode; evaluation stays eager (it runs once an epoch)."""

    def __init__(self, template: nn.Module, task: str, compile_mode: str = "off"):
        from torch.func import functional_call, vmap

        names = [n for n, _ in template.named_parameters()]
        self.reconstruction = task == "reconstruction"

        def one(params, x):
            return functional_call(template, dict(zip(names, params)), (x,))

        self._train = vmap(one, in_dims=(0, 0))
        self._eval = vmap(one, in_dims=(0, None))
        if compile_mode != "off":  # train.compile: the training step's forward, its backward through AOTAutograd
            self._train = torch.compile(self._train, mode=compile_mode)

    @staticmethod
    def transposed(p: Tensor) -> bool:
        """Never: autograd differentiates the params, so they are the optimizer's leaves."""
        return False

    def batch(self, xs: Tensor, ys: Tensor, idx: Tensor) -> tuple[Tensor, Tensor]:
        return xs[idx], ys[idx]

    @torch.no_grad()
    def forward(self, params: list[Tensor], x: Tensor) -> Tensor:
        return self._eval(tuple(params), x)

    def task_and_grads(self, params: list[Tensor], x: Tensor, y: Tensor) -> tuple[Tensor, Tensor, list[Tensor]]:
        out = self._train(tuple(params), x)
        if self.reconstruction:
            task = (out - x.flatten(2)).pow(2).mean((1, 2))
        else:
            task = F.cross_entropy(out.flatten(0, 1), y.flatten(), reduction="none").view(len(out), -1).mean(1)
        grads = torch.autograd.grad(task.sum(), params)
        return task.detach(), out.detach(), list(grads)


class _Entropy:
    """The guidance term of every member, batched: harness.entropy.entropy_loss of each
    member's guided layers (same precision, forms, c11, reduce; computed in
    ``precision``, cast to the weights' dtype). It reads only a small piece of each guided
    weight (a dense layer's square block, a conv layer's c11 weights), taken detached, so
    its gradient is a small tensor added into the task gradient."""

    def __init__(self, guided: list[int], kinds: list[str], shapes: list[torch.Size], ent):
        self.guided, self.kinds, self.ent = guided, kinds, ent
        self.dtype = {"float64": torch.float64, "float32": torch.float32}[ent.precision]
        self.k = [min(shape[1:]) if kind == "dense" else 0 for kind, shape in zip(kinds, shapes)]

    def _view(self, w: Tensor, i: int) -> Tensor:
        if self.kinds[i] == "dense":
            return w[:, : self.k[i], : self.k[i]]
        return w[:, :, slice(None) if self.ent.c11 == "all_channels" else slice(0, 1), 0, 0]

    def pieces(self, params: list[Tensor], members: Tensor | None = None) -> list[Tensor]:
        views = [self._view(params[g].detach(), i) for i, g in enumerate(self.guided)]
        return [v if members is None else v.index_select(0, members) for v in views]

    def terms(self, pieces: list[Tensor], lam: Tensor | None) -> Tensor:
        """(P,) term per member; lam (P,) or None for λ = 1 (the logged value)."""
        ent = self.ent
        n = pieces[0].shape[0]
        total = torch.zeros(n, dtype=self.dtype, device=pieces[0].device)
        lam = torch.ones_like(total) if lam is None else lam.to(self.dtype)
        for piece, kind in zip(pieces, self.kinds):
            x = piece.to(self.dtype)
            if kind == "dense":
                logdet = logabsdet(x)
                term = -lam * logdet if ent.form == "log" else lam / (logdet.exp() + ent.eps)
            else:
                c, lam3 = x.abs(), lam[:, None, None]
                terms = -lam3 * c.log() if ent.form == "log" else lam3 / (c + ent.eps)
                term = terms.sum((1, 2)) if ent.reduce == "sum" else terms.mean((1, 2))
            total = total + term
        return total.to(pieces[0].dtype)

    @torch.no_grad()
    def values(self, params: list[Tensor]) -> list[float]:
        return self.terms(self.pieces(params), None).tolist()

    def term_and_grads(self, params: list[Tensor], members: Tensor, lam: Tensor) -> tuple[Tensor, list[Tensor]]:
        """The λ-weighted term of ``members`` and its gradient w.r.t. their pieces."""
        pieces = [p.requires_grad_() for p in self.pieces(params, members)]
        with torch.enable_grad():
            term = self.terms(pieces, lam)
            grads = torch.autograd.grad(term.sum(), pieces)
        return term.detach(), list(grads)

    def add_into(self, grads: list[Tensor], piece_grads: list[Tensor], members: Tensor) -> None:
        """Add the term's gradient (of ``members``' pieces) into the full gradients."""
        for i, (g, pg) in enumerate(zip(self.guided, piece_grads)):
            view = self._view(grads[g], i)
            if len(members) < len(view):  # scatter into a small dense block: one strided add, not a strided scatter
                pg = torch.zeros_like(view).index_copy_(0, members, pg)
            view.add_(pg)


@dataclass
class _Stopper:
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


@dataclass
class _Member:
    """One trained model of the pack: its weights' own state (init, data order,
    diagnostics), shared by its replications (``stoppers``, one per stopping rule)."""

    config: Config  # how it trains: its first replication's config
    model: nn.Module  # its own module: init profile, and its final weights for the last metrics
    data_gen: torch.Generator
    stoppers: list[_Stopper]
    grad_ratios: list[float] = field(default_factory=list)
    term_leds: list[float] = field(default_factory=list)

    def training(self) -> list[_Stopper]:
        return [s for s in self.stoppers if not s.stopped]


class _Pack:
    """The stacked weights, their optimizer, and the members they belong to, in order.

    The optimizer owns contiguous tensors (``leaves``: what the fused kernels take); the
    engine reads ``params``, the same memory in the modules' shapes. A weight the engine
    reads transposed (``engine.transposed``) is stored as its transpose, (P, in, out), and
    its param is the transposed view."""

    def __init__(self, members: list[_Member], names: list[str], guided: list[str], device, transposed=None):
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


def train_pack(configs: Sequence[Config], splits: Splits, device: str | torch.device) -> list[PackedOutcome]:
    """Train the replications ``configs`` (one pack_key) together; one outcome each, in
    order, each what ``harness.train.train(config, splits, device)`` returns for it alone
    (to float rounding), plus its share of the wall time. Configs that differ only in
    their stopping rule are one member, trained once and stopped for each in turn."""
    configs = list(configs)
    keys = {pack_key(c) for c in configs}
    if None in keys or len(keys) != 1:
        raise ValueError("train_pack needs replications that differ only in lam and seed, with a packable model")
    with float32_math(configs[0]):
        return _train_pack(configs, splits, device)


def _train_pack(configs: list[Config], splits: Splits, device: torch.device | str) -> list[PackedOutcome]:
    base = configs[0]
    if not isinstance(splits, Splits):
        raise TypeError("train_pack trains on in-memory Splits (harness.data.load_splits of a tensor data set)")
    train_cfg = base.train
    reconstruction = base.task == "reconstruction"
    device = torch.device(device)
    xs, ys = splits.train_x.to(device), splits.train_y.to(device)

    by_trajectory: dict[tuple, list[_Stopper]] = {}
    for i, config in enumerate(configs):
        by_trajectory.setdefault(trajectory_key(config), []).append(_Stopper(i, config))
    members = []
    for stoppers in by_trajectory.values():
        config = stoppers[0].config
        model = seeded_model(config, splits.input_shape, splits.n_classes).to(device)
        gen = torch.Generator(device=xs.device).manual_seed(derive_seed(config.seed, "data"))
        rows = _profile_rows(model, splits.input_shape, "init", base.entropy.c11)
        for s in stoppers:
            s.outcome.profiles += rows
        members.append(_Member(config, model, gen, stoppers))
    stoppers = [s for m in members for s in m.stoppers]
    ent = base.entropy
    guided = [
        guided_layers(m.model, base.placement, input_shape=splits.input_shape, profile=ent.profile or None,
                      k=ent.empirical_k, rank=ent.empirical_rank)
        for m in members
    ]
    if base.placement.strip().lower() in ("pre-skip", "empirical"):  # as train(): record what it resolved to
        for m, layers in zip(members, guided):
            rows = _guided_rows(m.model, splits.input_shape, layers, ent.c11)
            for s in m.stoppers:
                s.outcome.profiles += rows
    template, guided = members[0].model, guided[0]
    names = [n for n, _ in template.named_parameters()]
    compiled = train_cfg.compile != "off"  # torch.compile takes the plain vmap engine, not the hand-written step
    engine = (_DenseEngine(template) if isinstance(template, DenseAutoencoder) and not compiled
              else _VmapEngine(template, base.task, compile_mode=train_cfg.compile))
    engine.example_floats = _activation_floats(template, splits.input_shape)
    pack = _Pack(members, names, [f"{name}.weight" for name, _ in guided], device, transposed=engine.transposed)
    kinds = ["conv" if isinstance(m, nn.Conv2d) else "dense" for _, m in guided]
    shapes = [pack.params[g].shape for g in pack.guided]
    entropy = _Entropy(pack.guided, kinds, shapes, base.entropy)
    # monitor=total_float32: the term as a Keras model reports it, in float32 (train()'s
    # entropy_term(1.0, precision="float32")), and every example's float32 loss, once an epoch
    float32_monitor = any(s.rule.needs_float32 for s in stoppers)
    entropy32 = (_Entropy(pack.guided, kinds, shapes, replace(base.entropy, precision="float32"))
                 if float32_monitor else None)

    n, batch = len(xs), train_cfg.batch_size
    report = _epoch_reporter(base, len(members), len(stoppers))
    clock = time.perf_counter()
    for epoch in range(1, max(s.config.train.max_epochs for s in stoppers) + 1):
        size = len(pack.members)
        lam = torch.tensor([m.config.lam for m in pack.members], dtype=torch.float64, device=device)
        guided_on = (lam != 0).nonzero().flatten()  # members with a guidance term (train() skips λ = 0)
        lam_on = lam.index_select(0, guided_on)
        orders = torch.stack([torch.randperm(n, generator=m.data_gen, device=xs.device) for m in pack.members])
        loss_sum = torch.zeros(size, dtype=torch.float64, device=device)
        correct = torch.zeros(size, dtype=torch.int64, device=device)
        bad = torch.zeros(size, dtype=torch.bool, device=device)
        bad_task = torch.zeros(size, device=device)
        bad_total = torch.zeros(size, device=device)
        ratios = torch.zeros(size, dtype=torch.float64, device=device)
        leds = torch.zeros(size, dtype=torch.float64, device=device)
        for start in range(0, n, batch):
            # step_context: nothing, unless harness.ceiling is recording a step; the step whose
            # gradients are measured keeps IEEE subnormals, as train()'s
            with step_context(), subnormals_kept(start == 0):
                idx = orders[:, start : start + batch]
                x, y = engine.batch(xs, ys, idx)
                task, out, grads = engine.task_and_grads(pack.params, x, y)
                total = task
                if len(guided_on):
                    term, term_grads = entropy.term_and_grads(pack.params, guided_on, lam_on)
                    total = task.index_add(0, guided_on, term)
                    if start == 0:  # once per epoch: how strong is the guidance against the task?
                        ratios, leds = _grad_ratios(grads, term_grads, entropy.pieces(grads, guided_on), pack.guided,
                                                    guided_on, size)
                    entropy.add_into(grads, term_grads, guided_on)
                pack.set_grads(grads)
                pack.optimizer.step()
                pack.set_grads(None)
            with torch.no_grad():
                newly = ~torch.isfinite(total) & ~bad
                bad_task = torch.where(newly, task, bad_task)
                bad_total = torch.where(newly, total, bad_total)
                bad |= newly
                loss_sum += task.double() * idx.shape[1]
                if not reconstruction:
                    correct += (out.argmax(-1) == y).sum(1)

        val_loss, val_acc, examples32 = _evaluate(engine, pack.params, splits.val_x.to(device), splits.val_y.to(device),
                                                  reconstruction, examples=float32_monitor)
        ent_value = entropy.values(pack.params)
        ent32 = entropy32.values(pack.params) if entropy32 is not None else None
        train_loss = (loss_sum / n).tolist()
        train_acc = (correct.double() / n).tolist()
        bad_list, bad_task, bad_total = bad.tolist(), bad_task.tolist(), bad_total.tolist()
        ratio_list, led_list = ratios.tolist(), leds.tolist()
        epoch_s = time.perf_counter() - clock
        share = epoch_s / size
        clock = time.perf_counter()

        keep, finishing = [], []
        for pos, m in enumerate(pack.members):
            training = m.training()
            for s in training:  # a member's time is shared by the replications it trains for
                s.outcome.wall_s += share / len(training)
            m.grad_ratios.append(ratio_list[pos])
            m.term_leds.append(led_list[pos])
            if bad_list[pos] or not math.isfinite(val_loss[pos]):
                message = (f"non-finite loss at epoch {epoch}: task {bad_task[pos]}, total {bad_total[pos]}"
                           if bad_list[pos] else f"non-finite validation loss at epoch {epoch}")
                for s in training:
                    _diverge(s, epoch, message)
                continue
            row = {
                "epoch": epoch,
                "train_loss": train_loss[pos],
                "val_loss": val_loss[pos],
                "entropy_loss": ent_value[pos],
                "train_acc": None if reconstruction else train_acc[pos],
                "val_acc": None if reconstruction else val_acc[pos],
            }
            weights = None  # this epoch's weights, copied once for every stopper they are best for
            val = EpochValidation(val_loss[pos], None if reconstruction else val_acc[pos], ent_value[pos],
                                  None if ent32 is None else ent32[pos], None if examples32 is None else examples32[pos])
            for s in training:
                improved, seen_by_rule = s.rule.observe(epoch, val)
                s.outcome.history.append({**row, **seen_by_rule})
                if improved and s.rule.restore_best:
                    weights = weights or pack.member_weights(pos)
                    s.best_state = weights
                if s.rule.should_stop(epoch):
                    s.stopped = True
                    finishing.append((pos, m, s, epoch))
            if m.training():
                keep.append(pos)
        if finishing:
            _finish(finishing, pack, engine, splits, guided, reconstruction, device)
            for s in (s for _, _, s, _ in finishing):
                s.outcome.wall_s += (time.perf_counter() - clock) / len(finishing)
            clock = time.perf_counter()
        report(epoch, epoch_s, len(keep))
        if not keep:
            break
        if len(keep) < size:  # frozen members leave the pack: the others train on alone
            pack.keep(keep)
    return [s.outcome for s in sorted(stoppers, key=lambda s: s.index)]


def _epoch_reporter(config: Config, members: int, replications: int):
    """A line on stderr per pack epoch when $HARNESS_PACK_PROGRESS is set (plain logs): a
    pack trains for many minutes before its first member finishes, and its members'
    results are all the driver sees."""
    if not os.environ.get(PROGRESS_ENV):
        return lambda epoch, seconds, training: None
    shown = ("model", "dataset", "latent", "arch", "placement")
    label = " ".join(f"{k}={v}" for k, v in flatten(config).items() if k in shown and v not in ("", (), None))
    label += f" [{os.getpid()}]"
    what = f"{members}" if members == replications else f"{members} models ({replications} replications)"

    def report(epoch: int, seconds: float, training: int) -> None:
        print(f"  pack of {what} ({label}): epoch {epoch} took {seconds:.1f}s, {training} still training",
              file=sys.stderr, flush=True)

    return report


def _grad_ratios(grads, term_grads, task_pieces, guided: list[int], members: Tensor, size: int) -> tuple[Tensor, Tensor]:
    """Per member (||∇ λ·term|| / ||∇ task||, term_led) over the guided layers' weights, as
    train()'s _grad_ratio (0 where λ = 0). The term's gradient lives in its pieces only;
    ``task_pieces`` are the task gradient's matching pieces."""
    norm_task = torch.sqrt(sum((grads[g].index_select(0, members).double() ** 2).flatten(1).sum(1) for g in guided))
    norm_term = torch.sqrt(sum((g.double() ** 2).flatten(1).sum(1) for g in term_grads))
    ratio = torch.where(norm_task > 0, norm_term / norm_task, torch.full_like(norm_task, math.inf))
    acted = sum((b != 0).flatten(1).sum(1) for b in term_grads)
    led = sum(((b.abs() > a.abs()) & (b != 0)).flatten(1).sum(1) for a, b in zip(task_pieces, term_grads))
    led = torch.where(acted > 0, led.double() / acted.clamp(min=1), torch.full_like(norm_task, math.nan))
    zeros = torch.zeros(size, dtype=torch.float64, device=ratio.device)
    return zeros.index_copy(0, members, ratio), zeros.clone().index_copy(0, members, led)


def _diverge(s: _Stopper, epoch: int, message: str) -> None:
    s.outcome.status, s.outcome.error = "diverged", message
    s.outcome.metrics = {"stop_epoch": float(epoch), "best_epoch": float(s.rule.best_epoch)}
    s.outcome.finished_at = datetime.now(timezone.utc)
    s.stopped = True


@torch.no_grad()
def _evaluate(engine, params: list[Tensor], x: Tensor, y: Tensor, reconstruction: bool,
              examples: bool = False) -> tuple[list, list | None, "np.ndarray | None"]:
    """Per member mean task loss (and accuracy) over a whole split, as train.evaluate, and
    with ``examples`` every example's float32 task loss, (members, examples) (else None).

    Batches of up to EVAL_BATCH shared examples, members a few at a time: on CPU the
    activations of one step (EVAL_FLOATS_CPU) then stay in the last-level cache, so the
    loss is computed from cache rather than from memory."""
    size, device = params[0].shape[0], params[0].device
    batch = min(EVAL_BATCH, len(x))
    budget = EVAL_FLOATS_CPU if device.type == "cpu" else EVAL_FLOATS_GPU
    chunk = max(1, min(size, budget // (batch * engine.example_floats)))
    loss_sum = torch.zeros(size, dtype=torch.float64, device=device)
    correct = torch.zeros(size, dtype=torch.int64, device=device)
    per_example = torch.empty((size, len(x)) if examples else (0, 0), dtype=torch.float32, device=device)
    for start in range(0, len(x), batch):
        xb, yb = x[start : start + batch], y[start : start + batch]
        target = xb.flatten(1)
        for lo in range(0, size, chunk):
            hi = min(size, lo + chunk)
            out = engine.forward([p[lo:hi] for p in params], xb)
            if examples:  # as train._example_losses: each example's mean over its pixels
                per_example[lo:hi, start : start + len(xb)] = (
                    (out - target).pow(2).mean(-1) if reconstruction
                    else F.cross_entropy(out.flatten(0, 1), yb.repeat(hi - lo), reduction="none").view(hi - lo, -1))
            if reconstruction:
                diff = out.sub_(target).flatten(1)  # in place: no megabyte temporaries (see forward)
                loss_sum[lo:hi] += diff.mul_(diff).sum(1).double() / target.shape[1]  # vecdot's mul and sum
            else:
                losses = F.cross_entropy(out.flatten(0, 1), yb.repeat(hi - lo), reduction="none")
                loss_sum[lo:hi] += losses.view(hi - lo, -1).sum(1).double()
                correct[lo:hi] += (out.argmax(-1) == yb).sum(1)
    loss = (loss_sum / len(x)).tolist()
    return (loss, (None if reconstruction else (correct.double() / len(x)).tolist()),
            per_example.cpu().numpy() if examples else None)


def _finish(finishing, pack: _Pack, engine, splits: Splits, guided, reconstruction: bool, device) -> None:
    """Final metrics and profiles of the replications that stop this epoch, as train()
    computes them: best weights (restore_best) or last, evaluated on the whole val and
    train sets."""
    weights = [s.best_state if s.best_state is not None else pack.member_weights(pos) for pos, _, s, _ in finishing]
    stacked = [torch.stack(ws) for ws in zip(*weights)]
    val_loss, val_acc, _ = _evaluate(engine, stacked, splits.val_x.to(device), splits.val_y.to(device), reconstruction)
    train_loss, train_acc, _ = _evaluate(engine, stacked, splits.train_x.to(device), splits.train_y.to(device), reconstruction)
    now = datetime.now(timezone.utc)
    guided_names = [name for name, _ in guided]
    for j, (_, m, s, epoch) in enumerate(finishing):
        config, ent = s.config, s.config.entropy
        with torch.no_grad():
            for p, w in zip(m.model.parameters(), weights[j]):
                p.copy_(w)
        modules = dict(m.model.named_modules())
        member_guided = [(name, modules[name]) for name in guided_names]
        metrics = {"val_loss": val_loss[j], "train_loss": train_loss[j]}
        if reconstruction:
            metrics.update(val_mse=val_loss[j], train_mse=train_loss[j])
        else:
            metrics.update(val_acc=val_acc[j], train_acc=train_acc[j])
        with torch.no_grad():
            metrics["entropy_loss"] = entropy_loss(
                member_guided, 1.0, form=ent.form, eps=ent.eps, precision=ent.precision, c11=ent.c11, reduce=ent.reduce
            ).item()
            metrics.update(entropy_stats(member_guided, c11=ent.c11))
        metrics = {k: float(v) for k, v in metrics.items()}
        metrics.update(
            stop_epoch=float(epoch),
            best_epoch=float(s.rule.best_epoch),
            hit_max_epochs=float(s.rule.hit_max_epochs),
            grad_ratio=_mean(m.grad_ratios),
            term_led=_mean(m.term_leds),
        )
        s.outcome.metrics = metrics
        s.outcome.profiles += _profile_rows(m.model, splits.input_shape, "final", ent.c11)
        s.outcome.finished_at = now
