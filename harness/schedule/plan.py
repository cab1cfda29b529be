"""What a run trains and on how many workers: the replications that remain, in rounds of
seeds; how they are packed into groups a worker trains at once; the workers' slots (with
--workers-per-device auto, no more than there are models or than memory holds); and the
data checked before anything trains."""

from __future__ import annotations

from collections import Counter
from typing import Callable

from harness.backends import BACKENDS, check_scheduler_address
from harness.schedule.options import RunOptions
from harness.study import Replication, Study, seedless
from harness.workers import ScheduleError, Slot, expand_devices, plan_slots


def remaining(study: Study, store, rerun_failed: bool = False,
              reps: list[Replication] | None = None) -> tuple[list[Replication], int]:
    """(replications still to train, in rounds (in_rounds), size of the grid). Done and
    diverged replications are finished; failed ones are left alone unless ``rerun_failed``.
    ``store`` None: nothing is recorded yet. ``reps``: the study's replications, where the
    caller has them already (a large grid is expanded once)."""
    reps = study.replications() if reps is None else reps
    reps = list({r.id: r for r in reps}.values())  # a repeated grid point runs once
    statuses = ("done", "diverged") if rerun_failed else ("done", "diverged", "failed")
    recorded = store.ids(study.name, statuses) if store is not None else set()  # None: no database yet (a dry run)
    return in_rounds(reps, recorded), len(reps)


def grid_cell(rep: Replication, ignored: tuple[str, ...] = ("seed",)) -> tuple:
    """The replication's config but the ``ignored`` keys (by default its cell: all but the seed)."""
    return tuple((k, v) for k, v in rep.params().items() if k not in ignored)


def in_rounds(reps: list[Replication], recorded: set[str]) -> list[Replication]:
    """The replications of ``reps`` not in ``recorded``, in rounds: every cell of the grid
    (a config but its seed) gets its next seed before any cell gets one more, grid order
    within a round. A run cut short (--time-limit, Ctrl-C) then leaves a balanced design,
    every cell with as many seeds as any other give or take one, which `harness analyze`
    can compare; in grid order it would leave the last cells with none."""
    cells: dict[tuple, int] = {}  # grid_cell's cells, numbered: a cell's key is hashed once a replication
    cell = [cells.setdefault(seedless(r.config), len(cells)) for r in reps]
    seeds = Counter(c for r, c in zip(reps, cell) if r.id in recorded)  # per cell: recorded, then queued
    level = {}
    for rep, c in sorted(((r, c) for r, c in zip(reps, cell) if r.id not in recorded), key=lambda rc: rc[0].config.seed):
        level[rep.id] = seeds[c]
        seeds[c] += 1
    return sorted((r for r in reps if r.id in level), key=lambda r: level[r.id])  # stable: grid order within a round


def pack(reps: list[Replication], size: int, cap: Callable[[object], int] | None = None) -> list[list[Replication]]:
    """Groups of replications that harness.training.pack trains as one vectorised pack (differing
    only in λ, seed and stopping rule), in order of first member, of at most ``size``
    trained models each (harness.training.packing.pack_groups: replications that differ only in
    their stopping rule share a model and a group). ``cap(config)``: at most that many
    models in a group with this config (1: a task of its own though it could pack), and
    ``size`` models (a worker's share) in equal packs within it: with a cap of 14 and 35 a
    worker, packs of 12, so E1's cell of 70 on two workers is six packs, three rounds of
    12 members, not five of 14, three rounds of 14 with one worker idle in the last."""
    if size < 1:
        raise ScheduleError(f"--pack-size must be at least 1, not {size}")
    from harness.training.packing import pack_groups  # torch: imported only when a sweep runs

    limit = size if cap is None else (lambda config: even_share(size, cap(config)))
    return [[reps[i] for i in group] for group in pack_groups([r.config for r in reps], limit)]


def even_share(size: int, cap: int) -> int:
    """The largest pack when ``size`` models are split into as few packs of at most ``cap``
    as can be, all of near-equal size."""
    return -(-size // -(-size // max(1, cap)))


AUTO_PACK_CAP = 70  # a pack's results arrive together: cap what an interruption can lose


def cpu_pack_sizes(data_dir) -> Callable[[object], int]:
    """For --pack-size auto on CPU workers: the pack size harness.training.pack trains a config in
    there (choose_pack_size), so that a group is one pack. Its results then arrive (and are
    recorded) when that pack ends, not when the last of several packs of a group does,
    and an interruption loses one pack at most. Decided once per pack key, from the
    data's shapes."""
    from harness.data import splits_for
    from harness.training.packing import choose_pack_size, pack_key

    decided: dict = {}

    def size(config) -> int:
        key = pack_key(config)
        if key is None:
            return 1
        if key not in decided:
            try:
                splits = splits_for(config, data_dir, device="cpu")  # cached: check_data loaded it
                decided[key] = choose_pack_size(config, splits.input_shape, splits.n_classes, "cpu")
            except Exception:  # a model that cannot be built: alone, so its failure is recorded as usual
                decided[key] = 1
        return decided[key]

    return size


def auto_pack_size(reps: list[Replication], workers: int) -> int:
    """--pack-size auto: the groups of packable replications split only as far as it
    takes to give every worker a pack, at most AUTO_PACK_CAP per group (harness.training.pack
    splits a group further to fit the device's memory or cache, or trains it one at a
    time where packing does not pay). Counted in trained models: the replications that
    share a trajectory are one. A small model's pack step is bound by Python and kernel
    launches, not by its members (on a GPU, and on a CPU for the quickstart's digits),
    so two packs of 35 would take about twice as long as one of 70."""
    from harness.training.packing import trajectory_key

    sizes = [len({trajectory_key(r.config) for r in group}) for group in pack(reps, len(reps))]
    return max(1, min(AUTO_PACK_CAP, max(sizes), -(-sum(sizes) // max(1, workers))))


def check_names(reps: list[Replication]) -> None:
    """Every model and data set the replications name exists: an unknown one is one line
    with the closest match (the registries' UserError), before the database is touched."""
    from harness.data import dataset
    from harness.models import MODELS

    for model, data in dict.fromkeys((r.config.model, r.config.dataset) for r in reps):
        MODELS[model]  # noqa: B018 - the lookup is the check
        dataset(data)


def check_data(reps: list[Replication], data_dir) -> None:
    """Load each data set the replications need once, so missing data is one clear error
    before anything trains (and the per-process cache is warm for training)."""
    from harness.data import splits_for

    seen = set()
    for rep in reps:
        key = (rep.config.dataset, rep.config.data)
        if key not in seen:
            seen.add(key)
            splits_for(rep.config, data_dir, device="cpu")


def worker_slots(options: RunOptions, remote: bool, most: int | None = None) -> list[Slot] | None:
    """The slots of the workers on this machine (harness.workers.plan_slots), at most
    ``most`` with --workers-per-device auto; None for an existing cluster (``remote``).
    A bad --workers or --devices is a ScheduleError."""
    if remote:  # the cluster's workers pick their own device
        expand_devices(options.devices, n_gpus=None)  # still, a misspelt device is an error
        check_scheduler_address(options.scheduler)  # and a malformed address
        return None
    import torch

    backend = BACKENDS[options.backend] if options.backend in BACKENDS else None  # unknown: choose_backend says so
    if backend is not None and backend.max_workers is not None:  # auto: no more workers than the backend runs
        most = backend.max_workers if most is None else min(most, backend.max_workers)
    return plan_slots(options.devices, options.workers_per_device, options.workers, n_gpus=torch.cuda.device_count(),
                      most=most)


def auto_workers_cap(reps: list[Replication], data_dir) -> int:
    """The most workers --workers-per-device auto starts for ``reps``: no more than there
    are models to train (replications that differ only in their stopping rule are one),
    nor than half the free memory holds, each worker holding its own copy of the data and
    a model in training (harness.training.packing.replication_bytes; a pack is sized to the memory
    left, harness.training.packing.choose_pack_size)."""
    import torch

    from harness.data import splits_for
    from harness.training.packing import free_host_memory, replication_bytes, shared_settings, trajectory_key

    models = len({trajectory_key(r.config) for r in reps})
    shapes = {shared_settings(r.config): r.config for r in reps}  # λ, seed, stopping: the same memory
    need = 1
    for config in shapes.values():
        try:
            splits = splits_for(config, data_dir, device="cpu")  # cached: check_data loaded it
            tensors = (getattr(splits, name, None) for name in ("train_x", "train_y", "val_x", "val_y"))
            data = sum(t.nbytes for t in tensors if isinstance(t, torch.Tensor))
            need = max(need, data + replication_bytes(config, splits.input_shape, splits.n_classes))
        except Exception:  # a model that cannot be built fails in its worker and is recorded there
            continue
    return max(1, min(models, free_host_memory() // 2 // need))
