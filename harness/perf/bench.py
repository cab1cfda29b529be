"""`harness bench STUDY [overrides]`: how fast this machine trains a study.

Takes the replications of the study's first grid cell that can share a pack (every λ and
seed at the first value of the other axes; narrow them with overrides such as
``latent=80``), and trains them for a fixed number of epochs with early stopping off, in
the same process, twice:

* plain: what a researcher would write, one replication at a time, each with its own
  model, optimizer and ``DataLoader`` (the same loss, entropy term, per-epoch validation
  and final train/val evaluation as the harness);
* packed: the harness's own path, ``harness.training.pack.train_in_packs``: packs of the size
  ``harness.training.packing.choose_pack_size`` picks for this device, in this one process;
* spread (``--workers W``, on CPU by default one per core): the same packed path as
  ``harness run --workers W`` lays it out, the replications dealt in W groups to W worker
  processes of cores/W torch threads each, training at once. Small per-member operations
  (the entropy term's determinants, Adam's element-wise passes) do not speed up with
  threads, while W processes run them side by side.

It prints replications per hour for each, their ratio, the packed path's achieved model
FLOP rate (counted by ``torch.utils.flop_counter`` on one replication's training step and
evaluation) as a fraction of the machine's matmul peak (a large float32 matmul measured in
the same run), and the pack size the harness would choose on this device. It also prints the matmul
ceiling (``harness.perf.ceiling``): the rate the packed step's own matmuls reach when timed
alone, the most any step built from them could reach; the gap between the peak and the
ceiling is the problem's shape (small matmuls), the gap below the ceiling the harness's
own overhead. Throughput
is measured, never asserted: timings on a shared machine are noisy, so compare the
figures of one run with each other.
"""

from __future__ import annotations

import argparse
import functools
import math
from dataclasses import dataclass

from harness.errors import UserError
# plain_loop, matmul_peak and model_flops live in their own modules and are named here too:
# harness.perf.bench is where callers and tests have always found them
from harness.perf.measure import matmul_peak, model_flops, timed
from harness.perf.plain import plain_loop
from harness.perf.spread import SpreadPool, subset

__all__ = ["add_arguments", "run", "BenchError", "BenchResult", "bench", "first_cell", "plain_loop", "matmul_peak", "model_flops"]


class BenchError(UserError):
    """A benchmark that cannot run as asked (bad option, data set not in memory); one line."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The `harness bench` options, added to ``parser`` (a subparser of the CLI)."""
    parser.add_argument("study", help="path to a study file, e.g. studies/mnist_autoencoder.py")
    parser.add_argument("overrides", nargs="*", help="key=value overrides, e.g. latent=80 seed=0:10")
    parser.add_argument("--epochs", type=int, default=2, help="epochs each replication trains (default 2)")
    parser.add_argument(
        "--n-train", type=int, default=10000,
        help="training examples (default 10000: a few minutes on 2 CPU cores; 0 = the study's own)",
    )
    parser.add_argument(
        "--n-val", type=int, default=None,
        help="validation examples (default: the study's validation set scaled like the training set; 0 = all)",
    )
    parser.add_argument(
        "--plain-reps", type=int, default=14,
        help="replications the plain loop trains, spread over the cell (default 14; 0 = all); its rate is per replication",
    )
    parser.add_argument("--repeats", type=int, default=2, help="runs of each path, alternating; the fastest counts (default 2)")
    parser.add_argument("--max-members", type=int, default=0, help="cap on the replications taken (0 = the whole cell)")
    parser.add_argument(
        "--pack-size", type=int, default=None,
        help="members per pack for the packed and spread runs (default: what harness.training.packing.choose_pack_size picks)",
    )
    parser.add_argument(
        "--workers", type=int, default=None,
        help="worker processes of the spread run (default: as harness run lays them out, one per core on CPU, 4 on a GPU; 1 = no spread run)",
    )
    parser.add_argument("--data-dir", default=None, help="data directory (default $HARNESS_DATA_DIR, else ./data)")
    parser.add_argument("--device", default=None, help="torch device (default cuda if available, else cpu)")
    parser.add_argument(
        "--whole-process", action="store_true",
        help="time `harness run STUDY overrides` and a plain loop as whole processes (start-up, data, "
             "validation included) on exactly the study's replications, instead of the cell's training paths",
    )


def run(args: argparse.Namespace) -> int:
    """Run the benchmark the parsed ``args`` describe and print its figures; 0 on success."""
    import torch

    from harness.data import IMAGE_DATASETS, splits_for
    from harness.study import build_config, flatten, load_study

    if args.epochs < 1 or args.repeats < 1 or min(args.n_train, args.plain_reps, args.max_members) < 0:
        raise BenchError("--epochs and --repeats must be at least 1; --n-train, --plain-reps and --max-members at least 0")
    if (args.workers is not None and args.workers < 1) or (args.pack_size is not None and args.pack_size < 1):
        raise BenchError("--workers and --pack-size must be at least 1")
    study = load_study(args.study).with_overrides(list(args.overrides))
    if args.whole_process:
        return _whole_process(args, len(study.replications()))
    settings = {"train.max_epochs": args.epochs, "train.patience": args.epochs + 1}  # no early stopping
    configs = first_cell(study.with_overrides([f"{k}={v}" for k, v in settings.items()]))
    if args.max_members:
        configs = configs[: args.max_members]
    base = configs[0]
    if base.dataset in IMAGE_DATASETS:
        raise BenchError(f"harness bench trains in-memory data sets; {base.dataset} is read from image files")
    if args.n_train or args.n_val is not None:
        full = splits_for(base, args.data_dir, device="cpu")
        n_train = min(args.n_train, len(full.train_y)) if args.n_train else base.data.n_train
        # keep the study's train : validation proportion, so evaluation weighs what it weighs in a real run
        n_val = args.n_val if args.n_val is not None else round(len(full.val_y) * (n_train or len(full.train_y)) / len(full.train_y))
        data = {"data.n_train": n_train, "data.n_val": min(n_val, len(full.val_y))}
        configs = [build_config({**flatten(c), **data}) for c in configs]
        base = configs[0]
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    splits = splits_for(base, args.data_dir, device=device)
    workers = args.workers or default_workers(len(configs), device)
    result = bench(configs, splits, device, plain_reps=args.plain_reps or len(configs), repeats=args.repeats,
                   workers=workers, pack_size=args.pack_size)
    print(result.report(study.name, _varying(study, base)))
    return 0


def _whole_process(args: argparse.Namespace, replications: int) -> int:
    from harness.perf.whole import whole_process

    try:
        result = whole_process(args.study, list(args.overrides), replications, args.repeats, args.workers, args.data_dir)
    except RuntimeError as err:
        raise BenchError(str(err)) from None
    print(result.report())
    return 0


def first_cell(study) -> list:
    """Configs of the study's first grid cell: every replication that differs from the
    first only in λ and seed (its pack key and stopping rule), in grid order. Replications
    that differ in their stopping rule alone would share a trained model in a pack, and
    the plain loop would train each: not a like-for-like comparison."""
    from harness.training.packing import pack_key, stopping_rule

    reps = study.replications()
    key, rule = pack_key(reps[0].config), stopping_rule(reps[0].config)
    if key is None:
        return [reps[0].config]
    return [r.config for r in reps if pack_key(r.config) == key and stopping_rule(r.config) == rule]


def _varying(study, config) -> str:
    from harness.study import flatten

    flat = flatten(config)
    fixed = {k: flat[k] for k in study.grid if k not in ("lam", "seed")}
    return " ".join(f"{k}={v}" for k, v in fixed.items())


@dataclass
class BenchResult:
    """The figures `harness bench` prints. Rates are per second of training wall time."""

    members: int
    epochs: int
    n_train: int
    n_val: int
    device: str
    threads: int
    peak_flops: float  # FLOP/s of a large float32 matmul
    plain_reps: int
    plain_s: float
    packed_s: float
    flops_per_rep: float  # model FLOPs one replication's training and evaluation take
    pack_size: int  # what choose_pack_size picks on this device
    repeats: int = 1  # each path's time is its fastest of this many runs
    workers: int = 1  # worker processes of the spread run (1: none)
    chosen_pack_size: int | None = None  # what choose_pack_size picks (pack_size: what ran)
    spread_s: float = math.nan
    # FLOP/s of the packed step's own matmuls timed alone (harness.perf.ceiling): in one process,
    # and in the spread's worker processes at once
    ceiling_flops: float = math.nan
    spread_ceiling_flops: float = math.nan
    flush_denormals: bool = False  # the study's train.flush_denormals: the harness's paths flush, the plain loop not
    # harness.entropy.logabsdet takes torch's LAPACK in a process with one torch thread on
    # this CPU (an Intel's MKL), scipy's on several: the spread's workers and the
    # several-thread paths then factor the entropy term's blocks with different libraries
    torch_lapack_on_one_thread: bool = False

    @property
    def plain_reps_per_hour(self) -> float:
        return self.plain_reps / self.plain_s * 3600

    @property
    def packed_reps_per_hour(self) -> float:
        return self.members / self.packed_s * 3600

    @property
    def speedup(self) -> float:
        return self.packed_reps_per_hour / self.plain_reps_per_hour

    @property
    def spread_reps_per_hour(self) -> float:
        return self.members / self.spread_s * 3600

    @property
    def plain_flops(self) -> float:
        return self.flops_per_rep * self.plain_reps / self.plain_s

    @property
    def packed_flops(self) -> float:
        return self.flops_per_rep * self.members / self.packed_s

    @property
    def spread_flops(self) -> float:
        return self.flops_per_rep * self.members / self.spread_s

    def report(self, study: str, cell: str) -> str:
        from harness.entropy import LAPACK_MIN_WIDTH

        g = 1e9
        spread_workers = " (the spread's workers)" if self.workers > 1 else ""
        on_cpu = not self.device.startswith("cuda")
        lines = [
            f"harness bench {study}: {self.members} replications (every λ and seed at {cell or 'the first cell'}), "
            f"{self.epochs} epoch(s) on {self.n_train} examples, validation {self.n_val}, no early stopping",
            f"device {self.device} ({self.threads} threads); matmul peak (float32 4096x4096, measured): "
            f"{self.peak_flops / g:.1f} GFLOP/s; times: fastest of {self.repeats} alternating runs",
            *([f"subnormal floats: flushed to zero in the harness's paths (train.flush_denormals), IEEE in the "
               "plain loop; train.flush_denormals=false measures the harness without"]
              if self.flush_denormals and on_cpu else []),
            *([f"entropy term's determinants (blocks {LAPACK_MIN_WIDTH} wide and wider; harness.entropy.logabsdet): "
               f"torch's LU (MKL) in 1-thread processes{spread_workers}, "
               f"scipy's LAPACK on {self.threads} threads (plain loop, packed)"]
              if self.torch_lapack_on_one_thread and self.threads > 1 and on_cpu else []),
            f"plain loop (DataLoader, one model at a time): {self.plain_reps} reps in {self.plain_s:.1f} s = "
            f"{self.plain_reps_per_hour:,.0f} reps/h, {self.plain_flops / g:.1f} GFLOP/s "
            f"({self.plain_flops / self.peak_flops:.0%} of peak)",
            f"packed (harness, packs of up to {self.pack_size}): {self.members} reps in {self.packed_s:.1f} s = "
            f"{self.packed_reps_per_hour:,.0f} reps/h, {self.packed_flops / g:.1f} GFLOP/s "
            f"({self.packed_flops / self.peak_flops:.0%} of peak)",
            f"speed-up packed / plain: {self.speedup:.1f}x",
        ]
        if self.workers > 1:
            lines += [
                f"spread (harness run --workers {self.workers}: {self.workers} processes x "
                f"{max(1, self.threads // self.workers)} thread(s), packs of up to {self.pack_size}): "
                f"{self.members} reps in {self.spread_s:.1f} s = {self.spread_reps_per_hour:,.0f} reps/h, "
                f"{self.spread_flops / g:.1f} GFLOP/s ({self.spread_flops / self.peak_flops:.0%} of peak)",
                f"speed-up spread / plain: {self.spread_reps_per_hour / self.plain_reps_per_hour:.1f}x",
            ]
        if math.isfinite(self.ceiling_flops):
            line = (f"matmul ceiling (a packed step's own matmuls and convolutions timed alone, back to back): "
                    f"{self.ceiling_flops / g:.1f} GFLOP/s in one process ({self.ceiling_flops / self.peak_flops:.0%} "
                    f"of peak; packed reaches {self.packed_flops / self.ceiling_flops:.0%} of it)")
            if self.workers > 1 and math.isfinite(self.spread_ceiling_flops):
                line += (f", {self.spread_ceiling_flops / g:.1f} GFLOP/s in the {self.workers} processes at once "
                         f"({self.spread_ceiling_flops / self.peak_flops:.0%} of peak; spread reaches "
                         f"{self.spread_flops / self.spread_ceiling_flops:.0%} of it)")
            lines.append(line)
        lines += [
            f"pack size the harness chooses on this device: {self.chosen_pack_size or self.pack_size} "
            "(harness.training.packing.choose_pack_size)",
        ]
        return "\n".join(lines)


def bench(configs: list, splits, device: str, plain_reps: int | None = None, repeats: int = 2,
          workers: int = 1, pack_size: int | None = None) -> BenchResult:
    """Time the plain loop on ``plain_reps`` of the configs (spread evenly over the cell, so
    its λ mix is the pack's) and the packed path on all of them, on ``splits``; measure the
    matmul peak and count the model's FLOPs. Each path runs ``repeats`` times, alternating,
    and keeps its fastest time: on a shared machine the least disturbed run is the best
    estimate of what the code costs, and alternating exposes both paths to the same load."""
    import torch

    from harness.entropy import mkl_on_intel
    from harness.training.pack import train_in_packs
    from harness.training.packing import choose_pack_size

    plain_reps = min(plain_reps or len(configs), len(configs))
    plain_configs = configs[:: len(configs) // plain_reps][:plain_reps]
    chosen = choose_pack_size(configs[0], splits.input_shape, splits.n_classes, device)
    size = pack_size or chosen
    # Warm-up, left out of timing: first calls allocate, pick kernels, fill caches.
    tiny = subset(splits, 64)
    plain_loop(plain_configs[:1], tiny, device)
    train_in_packs(configs[: min(2, size)], tiny, device, size=size)

    pool = SpreadPool(workers, splits, device, size) if workers > 1 else None
    peak, plain_s, packed_s, spread_s = 0.0, math.inf, math.inf, math.inf
    try:
        if pool is not None:
            pool.train(configs[: 2 * workers], warm_up=True)
        for _ in range(repeats):
            peak = max(peak, matmul_peak(device))
            plain_s = min(plain_s, timed(plain_loop, plain_configs, splits, device))
            packed_s = min(packed_s, timed(functools.partial(train_in_packs, size=size), configs, splits, device))
            if pool is not None:
                spread_s = min(spread_s, pool.train(configs))
        ceiling, spread_ceiling = _ceilings(configs, splits, device, size, pool)
    finally:
        if pool is not None:
            pool.close()
    peak = max(peak, matmul_peak(device))

    base = configs[0]
    train_flops, eval_flops = model_flops(base, splits)
    n_train, n_val = len(splits.train_x), len(splits.val_x)
    epochs = base.train.max_epochs
    per_rep = epochs * (n_train * train_flops + n_val * eval_flops) + (n_train + n_val) * eval_flops
    return BenchResult(
        members=len(configs), epochs=epochs, n_train=n_train, n_val=n_val, device=str(device),
        threads=torch.get_num_threads(), peak_flops=peak, plain_reps=plain_reps, plain_s=plain_s,
        packed_s=packed_s, flops_per_rep=per_rep, repeats=repeats,
        pack_size=size, chosen_pack_size=chosen, workers=workers, spread_s=spread_s,
        ceiling_flops=ceiling, spread_ceiling_flops=spread_ceiling, flush_denormals=base.train.flush_denormals,
        torch_lapack_on_one_thread=mkl_on_intel(),
    )


def _ceilings(configs: list, splits, device, size: int, pool: SpreadPool | None) -> tuple[float, float]:
    """What the packed step's matmuls reach alone, in each layout's first pack: FLOP/s in
    this one process, and summed over the spread's worker processes at once (nan without a
    spread). Run while the pool's workers are still up."""
    from harness.perf.ceiling import record_step_matmuls, replay_rate

    one_process = _first_pack(len(configs), size)
    calls = record_step_matmuls(configs[:one_process], splits, device)
    flops, seconds = replay_rate(calls)
    ceiling = flops / seconds
    if pool is None:
        return ceiling, math.nan
    per_worker = _first_pack(-(-len(configs) // pool.workers), size)
    if per_worker != one_process:  # a worker's first pack is smaller: its own matmuls
        calls = record_step_matmuls(configs[:per_worker], splits, device)
    return ceiling, pool.replay(calls)


def default_workers(n_configs: int, device="cpu") -> int:
    """The spread's workers: the layout `harness run` picks by default for this one
    device (harness.workers.plan_slots, auto), no more than there are replications."""
    from harness.workers import plan_slots

    entry = "cpu" if not str(device).startswith("cuda") else "cuda:0"  # one device: its own plan
    return len(plan_slots([entry], None, n_gpus=1, most=n_configs))


def _first_pack(n: int, size: int) -> int:
    """Members of the first pack train_in_packs makes of ``n`` trajectories at most ``size`` a pack."""
    return n // -(-n // size)
