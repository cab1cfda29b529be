"""Train a pack of replications as one vectorised model.

Replications that differ only in λ and seed share an architecture, a data set and every
training setting, so their weights can be stacked along a leading member dimension,
(P, *shape), and trained together: per step one batched matmul per layer (the dense
autoencoder), the paper's CNN laid out for the CPU (harness.training.conv_engine), or one
``torch.func.vmap`` call of any other model, instead of P small steps each with its own
data loader, optimizer and Python overhead.

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
matmuls into reused buffers; the CNN's (conv_engine) pools before its activation, keeps
its maps channels-last, makes its first convolution one matmul and steps the members one
after the other, each member's activations staying in cache. On a CPU a pack is bound by
memory traffic, so choose_pack_size keeps a pack's working set (weights, gradients,
Adam's moments, a step's activations) within CPU_PACK_BYTES: dense autoencoders pack by
the dozen, CNNs by a few dozen; on a GPU packs are as large as its memory allows. With ``train.compile`` on, every model,
the dense autoencoder too, goes through the vmap engine, whose training forward
``torch.compile`` traces (its backward through AOTAutograd); the hand-written step, which
writes into reused buffers, is not compiled (compiled, it was no faster on a CPU: docs/performance.md).
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

import torch
from torch import Tensor, nn

from harness.data import Splits, splits_for
from harness.entropy import entropy_loss, entropy_stats, guided_layers
from harness.models import DenseAutoencoder
from harness.study import Config, Replication, flatten
from harness.training import PROGRESS_ENV, diagnostics
from harness.training import conv_engine
from harness.training.engines import DenseEngine, PackEntropy, VmapEngine
from harness.training.evaluation import evaluate_pack, split_metrics
from harness.training.loop import train
from harness.training.members import EpochNumbers, EpochSums, Member, Pack, seeded_members
from harness.training.numerics import float32_math, model_precision, subnormals_kept
from harness.training.outcome import Outcome, PackedOutcome, result_dict, run_metrics
from harness.training.packing import activation_floats, choose_pack_size, pack_key, trajectory_key
from harness.training.stopping import EpochValidation


def run_pack(reps: Sequence[Replication], device: str = "cpu", data_dir: str | Path | None = None) -> list[dict]:
    """Train ``reps`` (same pack_key) in packs (train_in_packs) and return one result dict
    each, in order, with the keys of ``harness.training.loop.run_replication``'s. An exception
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
    member. A single config is trained by harness.training.loop.train itself, the reference loop."""
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




def train_pack(configs: Sequence[Config], splits: Splits, device: str | torch.device,
               step_context: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext) -> list[PackedOutcome]:
    """Train the replications ``configs`` (one pack_key) together; one outcome each, in
    order, each what ``harness.training.loop.train(config, splits, device)`` returns for it alone
    (to float rounding), plus its share of the wall time. Configs that differ only in
    their stopping rule are one member, trained once and stopped for each in turn.
    ``step_context`` is entered around every training step (harness.perf.ceiling records
    one step's matmuls with it)."""
    configs = list(configs)
    keys = {pack_key(c) for c in configs}
    if None in keys or len(keys) != 1:
        raise ValueError("train_pack needs replications that differ only in lam and seed, with a packable model")
    with float32_math(configs[0]), model_precision(configs[0], device):
        return _train_pack(configs, splits, device, step_context)


def _train_pack(configs: list[Config], splits: Splits, device: torch.device | str,
                step_context: Callable[[], contextlib.AbstractContextManager]) -> list[PackedOutcome]:
    if not isinstance(splits, Splits):
        raise TypeError("train_pack trains on in-memory Splits (harness.data.load_splits of a tensor data set)")
    return _PackRun(configs, splits, torch.device(device), step_context).train()


def _guided_layers(members: list[Member], base: Config, input_shape: tuple) -> list:
    """The first member's guided layers, (name, module): their names are every member's
    (the pack stacks and _finish reads them by name). Each member's replications record
    what a placement resolved from a graph or a file resolved to, as train() does."""
    ent = base.entropy
    guided = [
        guided_layers(m.model, base.placement, input_shape=input_shape, profile=ent.profile or None,
                      k=ent.empirical_k, rank=ent.empirical_rank)
        for m in members
    ]
    if base.placement.strip().lower() in ("pre-skip", "empirical"):  # as train(): record what it resolved to
        for m, layers in zip(members, guided):
            rows = diagnostics.guided_rows(m.model, input_shape, layers, ent.c11)
            for s in m.stoppers:
                s.outcome.profiles += rows
    return guided[0]


class _PackRun:
    """One train_pack call: the members' stacked weights (Pack), the engine that steps
    them, their entropy terms, and the epoch loop that trains, validates, stops and
    compacts them."""

    def __init__(self, configs: list[Config], splits: Splits, device: torch.device,
                 step_context: Callable[[], contextlib.AbstractContextManager]):
        base = self.base = configs[0]
        self.splits, self.device, self.step_context = splits, device, step_context
        self.reconstruction = base.task == "reconstruction"
        self.xs, self.ys = splits.train_x.to(device), splits.train_y.to(device)
        members = seeded_members(configs, splits, device, self.xs.device)
        self.stoppers = [s for m in members for s in m.stoppers]
        self.guided = _guided_layers(members, base, splits.input_shape)
        template = members[0].model
        names = [n for n, _ in template.named_parameters()]
        self.engine = engine = _engine(template, base)
        engine.example_floats = activation_floats(template, splits.input_shape)
        self.pack = pack = Pack(members, names, [f"{name}.weight" for name, _ in self.guided], device,
                                transposed=engine.transposed)
        kinds = ["conv" if isinstance(m, nn.Conv2d) else "dense" for _, m in self.guided]
        shapes = [pack.params[g].shape for g in pack.guided]
        self.entropy = PackEntropy(pack.guided, kinds, shapes, base.entropy)
        # monitor=total_float32: the term as a Keras model reports it, in float32 (train()'s
        # entropy_term(1.0, precision="float32")), and every example's float32 loss, once an epoch
        self.float32_monitor = any(s.rule.needs_float32 for s in self.stoppers)
        self.entropy32 = (PackEntropy(pack.guided, kinds, shapes, replace(base.entropy, precision="float32"))
                          if self.float32_monitor else None)

    def train(self) -> list[PackedOutcome]:
        """Epochs until every replication has stopped; one outcome each, in the caller's order."""
        report = _epoch_reporter(self.base, len(self.pack.members), len(self.stoppers))
        self.clock = time.perf_counter()
        for epoch in range(1, max(s.config.train.max_epochs for s in self.stoppers) + 1):
            size = len(self.pack.members)
            measured = self._measure(self._train_epoch())
            epoch_s = time.perf_counter() - self.clock
            share = epoch_s / size
            self.clock = time.perf_counter()
            keep, finishing = self._observe(epoch, measured, share)
            if finishing:
                self._finish(finishing)
                for s in (s for _, _, s, _ in finishing):
                    s.outcome.wall_s += (time.perf_counter() - self.clock) / len(finishing)
                self.clock = time.perf_counter()
            report(epoch, epoch_s, len(keep))
            if not keep:
                break
            if len(keep) < size:  # frozen members leave the pack: the others train on alone
                self.pack.keep(keep)
        return [s.outcome for s in sorted(self.stoppers, key=lambda s: s.index)]

    def _train_epoch(self) -> EpochSums:
        """One pass over the training set, each member in its own data order (its own
        generator's randperm, as train()); the epoch's sums per member."""
        pack, xs, device = self.pack, self.xs, self.device
        n, batch = len(xs), self.base.train.batch_size
        lam = torch.tensor([m.config.lam for m in pack.members], dtype=torch.float64, device=device)
        guided_on = (lam != 0).nonzero().flatten()  # members with a guidance term (train() skips λ = 0)
        lam_on = lam.index_select(0, guided_on)
        orders = torch.stack([torch.randperm(n, generator=m.data_gen, device=xs.device) for m in pack.members])
        sums = EpochSums.zeros(len(pack.members), device)
        for start in range(0, n, batch):
            # step_context: nothing, unless harness.perf.ceiling is recording a step; the step whose
            # gradients are measured keeps IEEE subnormals, as train()'s
            with self.step_context(), subnormals_kept(start == 0):
                idx = orders[:, start : start + batch]
                task, total, out, y = self._step(idx, start == 0, guided_on, lam_on, sums)
            sums.add(task, total, out, y, idx.shape[1], self.reconstruction)
        return sums

    def _step(self, idx: Tensor, first: bool, guided_on: Tensor, lam_on: Tensor, sums: EpochSums):
        """One optimizer step of every member on its rows ``idx`` of the training set:
        (task, total, out, y), per member. The epoch's ``first`` step also measures the
        guidance gradient against the task's (into ``sums``)."""
        engine, pack, entropy = self.engine, self.pack, self.entropy
        x, y = engine.batch(self.xs, self.ys, idx)
        task, out, grads = engine.task_and_grads(pack.params, x, y)
        total = task
        if len(guided_on):
            term, term_grads = entropy.term_and_grads(pack.params, guided_on, lam_on)
            total = task.index_add(0, guided_on, term)
            if first:  # once per epoch: how strong is the guidance against the task?
                sums.ratios, sums.leds = diagnostics.pack_grad_ratios(
                    grads, term_grads, entropy.pieces(grads, guided_on), pack.guided, guided_on, len(pack.members))
            entropy.add_into(grads, term_grads, guided_on)
        pack.set_grads(grads)
        pack.optimizer.step()
        pack.set_grads(None)
        return task, total, out, y

    def _measure(self, sums: EpochSums) -> EpochNumbers:
        """The epoch's validation (loss, accuracy, and every example's float32 loss for the
        Keras-style monitor) and entropy terms, with its training sums, per member."""
        pack, device, n = self.pack, self.device, len(self.xs)
        val_loss, val_acc, examples32 = evaluate_pack(self.engine, pack.params, self.splits.val_x.to(device),
                                                      self.splits.val_y.to(device), self.reconstruction,
                                                      examples=self.float32_monitor)
        ent_value = self.entropy.values(pack.params)
        ent32 = self.entropy32.values(pack.params) if self.entropy32 is not None else None
        return EpochNumbers(
            val_loss, val_acc, examples32, ent_value, ent32,
            train_loss=(sums.loss_sum / n).tolist(),
            train_acc=(sums.correct.double() / n).tolist(),
            bad=sums.bad.tolist(), bad_task=sums.bad_task.tolist(), bad_total=sums.bad_total.tolist(),
            ratios=sums.ratios.tolist(), leds=sums.leds.tolist(),
        )

    def _observe(self, epoch: int, measured: EpochNumbers, share: float) -> tuple[list[int], list[tuple]]:
        """Every member's epoch (_observe_member): (the positions of the members still
        training, the (position, member, stopper, epoch) of the replications stopping now)."""
        keep, finishing = [], []
        for pos, m in enumerate(self.pack.members):
            if self._observe_member(epoch, pos, m, measured, share, finishing):
                keep.append(pos)
        return keep, finishing

    def _observe_member(self, epoch: int, pos: int, m: Member, e: EpochNumbers, share: float, finishing: list) -> bool:
        """Member ``m``'s epoch for each replication still training on it: its share of the
        epoch's time, its divergence, or its history row and early stopping (this epoch's
        weights kept where they are its best; a replication stopping now is added to
        ``finishing``). True while any of them trains on."""
        training = m.training()
        for s in training:  # a member's time is shared by the replications it trains for
            s.outcome.wall_s += share / len(training)
        m.grad_ratios.append(e.ratios[pos])
        m.term_leds.append(e.leds[pos])
        if e.bad[pos] or not math.isfinite(e.val_loss[pos]):
            message = (f"non-finite loss at epoch {epoch}: task {e.bad_task[pos]}, total {e.bad_total[pos]}"
                       if e.bad[pos] else f"non-finite validation loss at epoch {epoch}")
            for s in training:
                s.diverge(epoch, message)
            return False
        reconstruction = self.reconstruction
        row = {
            "epoch": epoch,
            "train_loss": e.train_loss[pos],
            "val_loss": e.val_loss[pos],
            "entropy_loss": e.ent_value[pos],
            "train_acc": None if reconstruction else e.train_acc[pos],
            "val_acc": None if reconstruction else e.val_acc[pos],
        }
        weights = None  # this epoch's weights, copied once for every stopper they are best for
        val = EpochValidation(e.val_loss[pos], None if reconstruction else e.val_acc[pos], e.ent_value[pos],
                              None if e.ent32 is None else e.ent32[pos], None if e.examples32 is None else e.examples32[pos])
        for s in training:
            improved, seen_by_rule = s.rule.observe(epoch, val)
            s.outcome.history.append({**row, **seen_by_rule})
            if improved and s.rule.restore_best:
                weights = weights or self.pack.member_weights(pos)
                s.best_state = weights
            if s.rule.should_stop(epoch):
                s.stopped = True
                finishing.append((pos, m, s, epoch))
        return bool(m.training())

    def _finish(self, finishing: list[tuple]) -> None:
        """Final metrics and profiles of the replications that stop this epoch, as train()
        computes them: best weights (restore_best) or last, evaluated on the whole val and
        train sets."""
        pack, splits, device, reconstruction = self.pack, self.splits, self.device, self.reconstruction
        weights = [s.best_state if s.best_state is not None else pack.member_weights(pos) for pos, _, s, _ in finishing]
        stacked = [torch.stack(ws) for ws in zip(*weights)]
        val_loss, val_acc, _ = evaluate_pack(self.engine, stacked, splits.val_x.to(device), splits.val_y.to(device),
                                             reconstruction)
        train_loss, train_acc, _ = evaluate_pack(self.engine, stacked, splits.train_x.to(device),
                                                 splits.train_y.to(device), reconstruction)
        now = datetime.now(timezone.utc)
        guided_names = [name for name, _ in self.guided]
        for j, (_, m, s, epoch) in enumerate(finishing):
            ent = s.config.entropy
            with torch.no_grad():
                for p, w in zip(m.model.parameters(), weights[j]):
                    p.copy_(w)
            modules = dict(m.model.named_modules())
            member_guided = [(name, modules[name]) for name in guided_names]
            task = "reconstruction" if reconstruction else "classification"
            val = {"loss": val_loss[j], "acc": val_acc[j] if val_acc is not None else None}
            train = {"loss": train_loss[j], "acc": train_acc[j] if train_acc is not None else None}
            with torch.no_grad():
                term = entropy_loss(
                    member_guided, 1.0, form=ent.form, eps=ent.eps, precision=ent.precision, c11=ent.c11, reduce=ent.reduce
                ).item()
                metrics = split_metrics(task, val, train, term, entropy_stats(member_guided, c11=ent.c11))
            s.outcome.metrics = {**metrics, **run_metrics(epoch, s.rule, m.grad_ratios, m.term_leds)}
            s.outcome.profiles += diagnostics.profile_rows(m.model, splits.input_shape, "final", ent.c11)
            s.outcome.finished_at = now


def _engine(template: nn.Module, base: Config):
    """The engine that steps this pack: the hand-written dense autoencoder or CNN, else
    vmap. With train.compile on, every model goes through vmap, whose forward
    torch.compile traces (the hand-written steps are not compiled); with
    train.precision=bf16 the autoencoder too: its hand-written step writes into float32
    buffers, which autocast does not reach."""
    if conv_engine.takes(base, template):
        return conv_engine.ConvEngine(template)
    if isinstance(template, DenseAutoencoder) and base.train.compile == "off" and base.train.precision == "float32":
        return DenseEngine(template)
    return VmapEngine(template, base.task, compile_mode=base.train.compile)


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
