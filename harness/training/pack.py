"""Train a pack of replications as one vectorised model.

Replications that differ only in λ and seed share an architecture, a data set and every
training setting, so their weights can be stacked along a leading member dimension,
(P, *shape), and trained together: per step one batched matmul per layer (the dense
autoencoder) or one ``torch.func.vmap`` call of the model (the CNN, whose convolutions
vmap turns into one grouped convolution) instead of P small ones with P times the Python
and kernel-launch overhead.

Each member is still its own replication, trained as ``harness.training.loop.train`` trains it
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

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from harness.data import Splits, splits_for
from harness.entropy import entropy_loss, entropy_stats, guided_layers
from harness.models import DenseAutoencoder
from harness.study import Config, Replication, derive_seed, flatten
from harness.training import PROGRESS_ENV, diagnostics
from harness.training.engines import DenseEngine, PackEntropy, VmapEngine
from harness.training.loop import seeded_model, train
from harness.training.numerics import float32_math, subnormals_kept
from harness.training.outcome import Outcome, PackedOutcome, mean_or_nan, result_dict
from harness.training.packing import activation_floats, choose_pack_size, pack_key, trajectory_key
from harness.training.stopping import EarlyStopping, EpochValidation

EVAL_BATCH = 1024  # shared examples per evaluation step, as train.EVAL_BATCH
EVAL_FLOATS_CPU = 1 << 21  # activations of one evaluation step on CPU, in floats (8 MiB: cache-sized)
EVAL_FLOATS_GPU = 1 << 28


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


def train_pack(configs: Sequence[Config], splits: Splits, device: str | torch.device,
               step_context: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext) -> list[PackedOutcome]:
    """Train the replications ``configs`` (one pack_key) together; one outcome each, in
    order, each what ``harness.train.train(config, splits, device)`` returns for it alone
    (to float rounding), plus its share of the wall time. Configs that differ only in
    their stopping rule are one member, trained once and stopped for each in turn.
    ``step_context`` is entered around every training step (harness.perf.ceiling records
    one step's matmuls with it)."""
    configs = list(configs)
    keys = {pack_key(c) for c in configs}
    if None in keys or len(keys) != 1:
        raise ValueError("train_pack needs replications that differ only in lam and seed, with a packable model")
    with float32_math(configs[0]):
        return _train_pack(configs, splits, device, step_context)


def _train_pack(configs: list[Config], splits: Splits, device: torch.device | str,
                step_context: Callable[[], contextlib.AbstractContextManager]) -> list[PackedOutcome]:
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
        rows = diagnostics.profile_rows(model, splits.input_shape, "init", base.entropy.c11)
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
            rows = diagnostics.guided_rows(m.model, splits.input_shape, layers, ent.c11)
            for s in m.stoppers:
                s.outcome.profiles += rows
    template, guided = members[0].model, guided[0]
    names = [n for n, _ in template.named_parameters()]
    compiled = train_cfg.compile != "off"  # torch.compile takes the plain vmap engine, not the hand-written step
    engine = (DenseEngine(template) if isinstance(template, DenseAutoencoder) and not compiled
              else VmapEngine(template, base.task, compile_mode=train_cfg.compile))
    engine.example_floats = activation_floats(template, splits.input_shape)
    pack = _Pack(members, names, [f"{name}.weight" for name, _ in guided], device, transposed=engine.transposed)
    kinds = ["conv" if isinstance(m, nn.Conv2d) else "dense" for _, m in guided]
    shapes = [pack.params[g].shape for g in pack.guided]
    entropy = PackEntropy(pack.guided, kinds, shapes, base.entropy)
    # monitor=total_float32: the term as a Keras model reports it, in float32 (train()'s
    # entropy_term(1.0, precision="float32")), and every example's float32 loss, once an epoch
    float32_monitor = any(s.rule.needs_float32 for s in stoppers)
    entropy32 = (PackEntropy(pack.guided, kinds, shapes, replace(base.entropy, precision="float32"))
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
            # step_context: nothing, unless harness.perf.ceiling is recording a step; the step whose
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
            grad_ratio=mean_or_nan(m.grad_ratios),
            term_led=mean_or_nan(m.term_leds),
        )
        s.outcome.metrics = metrics
        s.outcome.profiles += diagnostics.profile_rows(m.model, splits.input_shape, "final", ent.c11)
        s.outcome.finished_at = now
