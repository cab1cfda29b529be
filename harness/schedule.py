"""Which replications remain, and the driver that trains them on workers.

The driver (this module, in the ``harness run`` process) is the only writer of the store.
It works out which replications remain, claims each group of them in the store just
before a worker gets it (so concurrent runs share a grid), and records each result in its
own transaction as soon as it comes back, so a sweep stopped in any way (Ctrl-C, SIGKILL
of the driver, a dead worker) resumes where it stopped when the same command runs again.
Where the workers train and on which backend: harness.workers.

Failures: an exception in training is a ``failed`` result with its traceback (train.py);
a worker process that dies takes down loky's whole pool, so the groups that were in
flight are run again one at a time, and a group that kills its worker when alone is
recorded as failed. A failed group is retried up to ``--retries`` times in the run;
failures recorded by earlier runs are retried only with ``--rerun-failed``.
"""

from __future__ import annotations

import os
import platform
import shutil
import signal
import sys
import tempfile
import threading
import time
import traceback
from collections import Counter, deque
from concurrent.futures import FIRST_COMPLETED, BrokenExecutor, Future, wait
from dataclasses import dataclass
from typing import Callable

from harness.study import Replication, Study, flatten
from harness.workers import (
    PROGRESS_ENV,
    ScheduleError,
    Slot,
    SlotPool,
    choose_backend,
    expand_devices,
    failed_result,
    make_executor,
    plan_slots,
    train_group,
    worker_died,
)

LOG_MODES = ("auto", "bar", "plain", "quiet")
LEASE_S = 300.0  # a claim not renewed for this long may be taken over by another run


@dataclass
class RunOptions:
    """How ``harness run`` trains what remains of a study (one field per CLI flag)."""

    devices: list[str] | None = None  # torch devices, e.g. ["cuda:0", "cuda:1"]; None = every GPU, else ["cpu"]
    workers_per_device: int | None = 1  # workers on each entry of devices; None = auto (harness.workers.plan_slots)
    workers: int | None = None  # workers in all, dealt to the devices in turn (instead of workers_per_device)
    backend: str | None = None  # inprocess | processes | dask; None = processes for several workers, else inprocess
    scheduler: str | None = None  # address of a running Dask scheduler (implies backend dask)
    retries: int = 1  # further attempts at a replication that failed in this run
    rerun_failed: bool = False  # also train replications that earlier runs recorded as failed
    pack_size: int = 1  # a worker trains up to this many models at once (harness.pack.pack_groups)
    log: str = "auto"  # auto (a live bar on a terminal, else plain) | bar | plain (a line per result) | quiet
    lease_s: float = LEASE_S  # claim lease; renewed every lease_s / 10 while the run lives
    time_limit_s: float | None = None  # start nothing new after this many seconds; None = no limit


# -- what to train ---------------------------------------------------------------------


def remaining(study: Study, store, rerun_failed: bool = False) -> tuple[list[Replication], int]:
    """(replications still to train, in rounds (in_rounds), size of the grid). Done and
    diverged replications are finished; failed ones are left alone unless ``rerun_failed``."""
    reps = list({r.id: r for r in study.replications()}.values())  # a repeated grid point runs once
    statuses = ("done", "diverged") if rerun_failed else ("done", "diverged", "failed")
    recorded = store.ids(study.name, statuses)
    return in_rounds(reps, recorded), len(reps)


def grid_cell(rep: Replication, ignored: tuple[str, ...] = ("seed",)) -> tuple:
    """The replication's config but the ``ignored`` keys (by default its cell: all but the seed)."""
    return tuple((k, v) for k, v in flatten(rep.config).items() if k not in ignored)


def in_rounds(reps: list[Replication], recorded: set[str]) -> list[Replication]:
    """The replications of ``reps`` not in ``recorded``, in rounds: every cell of the grid
    (a config but its seed) gets its next seed before any cell gets one more, grid order
    within a round. A run cut short (--time-limit, Ctrl-C) then leaves a balanced design,
    every cell with as many seeds as any other give or take one, which `harness analyze`
    can compare; in grid order it would leave the last cells with none."""
    seeds = Counter(grid_cell(r) for r in reps if r.id in recorded)  # per cell: recorded, then queued
    level = {}
    for rep in sorted((r for r in reps if r.id not in recorded), key=lambda r: r.config.seed):
        key = grid_cell(rep)
        level[rep.id] = seeds[key]
        seeds[key] += 1
    return sorted((r for r in reps if r.id in level), key=lambda r: level[r.id])  # stable: grid order within a round


def pack(reps: list[Replication], size: int, cap: Callable[[object], int] | None = None) -> list[list[Replication]]:
    """Groups of replications that harness.pack trains as one vectorised pack (differing
    only in λ, seed and stopping rule), in order of first member, of at most ``size``
    trained models each (harness.pack.pack_groups: replications that differ only in
    their stopping rule share a model and a group). ``cap(config)``: at most that many
    models in a group with this config (1: a task of its own though it could pack), and
    ``size`` models (a worker's share) in equal packs within it: with a cap of 14 and 35 a
    worker, packs of 12, so E1's cell of 70 on two workers is six packs, three rounds of
    12 members, not five of 14, three rounds of 14 with one worker idle in the last."""
    if size < 1:
        raise ScheduleError(f"--pack-size must be at least 1, not {size}")
    from harness.pack import pack_groups  # torch: imported only when a sweep runs

    limit = size if cap is None else (lambda config: even_share(size, cap(config)))
    return [[reps[i] for i in group] for group in pack_groups([r.config for r in reps], limit)]


def even_share(size: int, cap: int) -> int:
    """The largest pack when ``size`` models are split into as few packs of at most ``cap``
    as can be, all of near-equal size."""
    return -(-size // -(-size // max(1, cap)))


AUTO_PACK_CAP = 70  # a pack's results arrive together: cap what an interruption can lose


def cpu_pack_sizes(data_dir) -> Callable[[object], int]:
    """For --pack-size auto on CPU workers: the pack size harness.pack trains a config in
    there (choose_pack_size), so that a group is one pack. Its results then arrive (and are
    recorded) when that pack ends, not when the last of several packs of a group does,
    and an interruption loses one pack at most. A CNN, whose activations fill a CPU pack's
    working set, trains alone there (size 1): a task of its own, which other workers can take. Decided
    once per pack key, from the data's shapes."""
    from harness.data import splits_for
    from harness.pack import choose_pack_size, pack_key

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
    takes to give every worker a pack, at most AUTO_PACK_CAP per group (harness.pack
    splits a group further to fit the device's memory or cache, or trains it one at a
    time where packing does not pay). Counted in trained models: the replications that
    share a trajectory are one. A small model's pack step is bound by Python and kernel
    launches, not by its members (on a GPU, and on a CPU for the quickstart's digits),
    so two packs of 35 would take about twice as long as one of 70."""
    from harness.pack import trajectory_key

    sizes = [len({trajectory_key(r.config) for r in group}) for group in pack(reps, len(reps))]
    return max(1, min(AUTO_PACK_CAP, max(sizes), -(-sum(sizes) // max(1, workers))))


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


# -- the driver --------------------------------------------------------------------------


class Progress:
    """The sweep's counts as one live tqdm line (mode "bar"), one log line per result
    ("plain", for batch jobs) or nothing ("quiet"); a failure is always one line."""

    def __init__(self, total: int, mode: str, label: Callable[[Replication], str]):
        self.total, self.mode, self.label = total, mode, label
        self.counts = Counter(done=0, diverged=0, failed=0)
        self.running = 0
        self.start = time.monotonic()
        self.bar = None
        if mode == "bar":
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit="rep", dynamic_ncols=True, file=sys.stderr)
            self._refresh()

    @property
    def finished(self) -> int:
        return sum(self.counts.values())

    def set_running(self, n: int, refresh: bool = True) -> None:
        self.running = n
        if refresh:
            self._refresh()

    def skip(self, n: int) -> None:
        """n replications were taken by another run: they leave this run's total."""
        self.total -= n
        if self.bar is not None:
            self.bar.total = self.total
        self._refresh()

    def result(self, rep: Replication, result: dict, retry: str | None = None) -> None:
        if result["status"] == "failed":
            last = (result.get("error") or "").strip().splitlines() or ["?"]
            self.line(f"failed {self.label(rep)}: {last[-1]}" + (f"; {retry}" if retry else ""))
        if retry:
            return
        self.counts[result["status"]] += 1
        if self.bar is not None:
            self.bar.set_postfix(self._counts(), refresh=False)
            self.bar.update(1)
        elif self.mode == "plain":
            wall = result.get("wall_s")
            took = f" in {wall:.1f}s" if wall is not None else ""
            print(f"{self._status()} | {self.label(rep)} {result['status']}{took}", file=sys.stderr, flush=True)

    def line(self, text: str) -> None:
        if self.bar is not None:
            self.bar.write(text, file=sys.stderr)
        else:
            print(text, file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()

    def _counts(self) -> dict:
        left = max(0, self.total - self.finished - self.running)
        c = self.counts
        return {"done": c["done"], "diverged": c["diverged"], "failed": c["failed"], "running": self.running, "remaining": left}

    def _refresh(self) -> None:
        if self.bar is not None:
            self.bar.set_postfix(self._counts(), refresh=True)

    def _status(self) -> str:
        elapsed = time.monotonic() - self.start
        eta = elapsed / self.finished * (self.total - self.finished) if self.finished else None
        counts = " ".join(f"{k} {v}" for k, v in self._counts().items())
        return (
            f"{time.strftime('%H:%M:%S')} [{self.finished}/{self.total}] {counts} "
            f"eta {_duration(eta) if eta is not None else '?'}"
        )


class Heartbeat:
    """Renews the run's claims every lease/10 from a thread: they last as long as the run
    (also while the in-process backend keeps the driver busy training) and lapse soon
    after it dies."""

    def __init__(self, store, claimant, lease_s: float):
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._beat, args=(store, claimant, lease_s), daemon=True)
        self.thread.start()

    def _beat(self, store, claimant, lease_s: float) -> None:
        while not self.stop_event.wait(lease_s / 10):
            try:
                store.renew(claimant, lease_s)
            except Exception:  # noqa: BLE001 - a busy database now; the lease covers the next try
                pass

    def stop(self) -> None:
        self.stop_event.set()
        self.thread.join(timeout=5)


class Sweep:
    """The driver's loop: claim a group, hand it to a worker, record what comes back,
    retry failures; keeps the executor's slots full."""

    def __init__(
        self, store, executor, task_args: tuple, options: RunOptions, progress: Progress, claimant, rerun_failed_upto
    ):
        self.store, self.executor = store, executor
        self.task_args = task_args  # a worker runs train_group(group, *task_args)
        self.options, self.progress, self.claimant = options, progress, claimant
        self.rerun_failed_upto = rerun_failed_upto
        self.attempts: Counter = Counter()
        self.skipped = 0
        self.pending: deque = deque()  # groups not claimed yet
        self.again: deque = deque()  # claimed groups to run again
        self.alone: deque = deque()  # claimed groups to run one at a time (in flight when a worker died)
        self.inflight: dict[Future, tuple[list[Replication], bool]] = {}
        limit = options.time_limit_s
        self.deadline = None if limit is None else time.monotonic() + limit
        self.timed_out = False  # the time limit stopped it with work left
        self.stop_asked = False  # Ctrl-C once: start nothing new, let what is training finish

    def run(self, groups: list[list[Replication]]) -> None:
        self.pending.extend(groups)
        while self.pending or self.again or self.alone or self.inflight:
            self._submit_more()
            if not self.inflight:
                break  # what is left was claimed or recorded by another run
            done, _ = wait(self.inflight, timeout=1.0, return_when=FIRST_COMPLETED)
            self._collect(done)

    @property
    def stopped(self) -> bool:
        """A stop request (Ctrl-C once) left work unstarted."""
        return self.stop_asked and bool(self.pending or self.again or self.alone)

    def _submit_more(self) -> None:
        if self.stop_asked:
            return  # as at the time limit
        if self.deadline is not None and time.monotonic() >= self.deadline:
            self.timed_out = bool(self.pending or self.again or self.alone)
            return  # what is training finishes; the rest stays unclaimed for the next run
        if any(alone for _, alone in self.inflight.values()):
            return
        if self.alone:
            if not self.inflight:
                self._submit(self.alone.popleft(), alone=True)
            return
        while len(self.inflight) < self.executor.capacity and (self.again or self.pending) and not self.stop_asked:
            group = self.again.popleft() if self.again else self._claim(self.pending.popleft())
            if group and self.stop_asked:  # asked while claiming it: it stays for the next run
                self.again.appendleft(group)
            elif group:
                self._submit(group)

    def _claim(self, group: list[Replication]) -> list[Replication]:
        study = group[0].study
        ids = set(self.store.claim(study, [r.id for r in group], self.claimant, self.options.lease_s, self.rerun_failed_upto))
        if len(ids) < len(group):
            self.skipped += len(group) - len(ids)
            self.progress.skip(len(group) - len(ids))
        return [r for r in group if r.id in ids]

    def _submit(self, group: list[Replication], alone: bool = False) -> None:
        self.progress.set_running(self.progress.running + len(group))
        future = self.executor.submit(train_group, group, *self.task_args)
        self.inflight[future] = (group, alone)

    def _collect(self, done) -> None:
        lost = []
        for future in done:
            group, _ = self.inflight.pop(future)
            self.progress.set_running(self.progress.running - len(group), refresh=False)
            try:
                results = future.result()
            except Exception as err:  # noqa: BLE001 - the task never ran to its end
                if isinstance(err, BrokenExecutor):
                    lost.append(group)
                    continue
                error = "".join(traceback.format_exception(err))
                self._handle(group, [failed_result(rep, error) for rep in group], crashed=worker_died(err))
                continue
            self._handle(group, results)
        if lost:
            self._recover(lost)

    def _recover(self, lost: list[list[Replication]]) -> None:
        """A worker died and took loky's pool with it: every group in flight is lost. One
        group alone is the culprit; several are run again one at a time to find it."""
        rest, _ = wait(list(self.inflight), timeout=60)
        for future in rest:
            group, _ = self.inflight.pop(future)
            self.progress.set_running(self.progress.running - len(group), refresh=False)
            try:
                self._handle(group, future.result())
            except Exception:  # noqa: BLE001 - lost with the pool
                lost.append(group)
        self.executor.restart()
        if len(lost) == 1:
            error = "the worker process training this group died (killed, out of memory, or a crash in native code)"
            self._handle(lost[0], [failed_result(rep, error) for rep in lost[0]], crashed=True)
        else:
            self.progress.line(f"a worker process died; running the {len(lost)} groups it may have been training one at a time")
            self.alone.extend(lost)

    def _handle(self, group: list[Replication], results: list[dict], crashed: bool = False) -> None:
        by_id = {r["id"]: r for r in results}
        retry = []
        for rep in group:
            result = by_id.get(rep.id) or failed_result(rep, "the worker returned no result for this replication")
            self.attempts[rep.id] += 1
            attempt, allowed = self.attempts[rep.id], self.options.retries + 1
            if result["status"] == "failed" and attempt < allowed:
                self.store.record(result)  # visible now; replaced by the retry's result
                self.progress.result(rep, result, retry=f"retrying (attempt {attempt + 1} of {allowed})")
                retry.append(rep)
            else:
                self.store.record(result, release=self.claimant)
                self.progress.result(rep, result)
        if retry:
            (self.alone if crashed else self.again).append(retry)


def run_study(
    study: Study, db: str, data_dir=None, options: RunOptions | None = None, dry_run: bool = False, work: Callable | None = None
) -> int:
    """Train what remains of ``study``, recording each result as it finishes. Returns the
    exit code: 0 when every replication it trained finished (done or diverged), 1 if any
    failed, 130 when interrupted. ``work(reps, device, data_dir) -> results`` is what a
    worker calls (default: harness.train.run_replications)."""
    from harness.data import data_dir_from_env
    from harness.store import Store
    from harness.train import check_config, machine

    options = options or RunOptions()
    if options.log not in LOG_MODES:
        raise ScheduleError(f"unknown log mode {options.log!r}: choose one of {', '.join(LOG_MODES)}")
    remote = bool(options.scheduler)
    # a cluster's workers find their data set by their own $HARNESS_DATA_DIR unless told
    worker_data_dir = (str(data_dir) if data_dir else None) if remote else str(data_dir_from_env(data_dir).resolve())
    data_dir = data_dir_from_env(data_dir)
    slots = _slots(options, remote)  # a bad --workers or --devices fails before the database is touched
    for rep in study.replications():
        check_config(rep.config)
    store = Store(db)
    todo, total = remaining(study, store, options.rerun_failed)
    failed_before = 0 if options.rerun_failed else len(store.ids(study.name, ["failed"]) & {r.id for r in study.replications()})
    note = f" ({failed_before} failed, not retried without --rerun-failed)" if failed_before else ""
    print(f"{study.name}: {total} replications in the grid, {total - len(todo)} already recorded{note}, {len(todo)} to train")
    if dry_run:
        for rep in todo:
            print(f"  {rep.id}  " + " ".join(f"{k}={v}" for k, v in _varying(study, rep).items()))
        return 0
    store.record_study(study)  # the study as last run: its analyses are what `harness analyze` makes
    if not todo:
        print(f"nothing to train; results in {store.shown_url}")
        return 0
    if not remote:
        check_data(todo, data_dir)
        store.record_host(platform.node(), machine())
        if options.workers is None and options.workers_per_device is None:  # auto: no idle workers, none that memory cannot hold
            slots = _slots(options, remote, most=auto_workers_cap(todo, data_dir))
    cap = None
    if not options.pack_size and slots and all(slot.device == "cpu" for slot in slots):
        cap = cpu_pack_sizes(data_dir)
    groups = pack(todo, options.pack_size or auto_pack_size(todo, len(slots) if slots else 1), cap)
    backend = choose_backend(options.backend, options.scheduler, len(slots) if slots else 1)
    mode = options.log if options.log != "auto" else ("bar" if sys.stderr.isatty() else "plain")
    if mode != "quiet":
        print(_layout(backend, slots, options))

    # in plain logs, workers (started in _sweep, so they inherit it) log each pack epoch
    previous = os.environ.pop(PROGRESS_ENV, None)
    if mode == "plain":
        os.environ[PROGRESS_ENV] = "1"
    try:
        return _sweep(study, store, groups, backend, slots, options, (worker_data_dir, work or _default_work()), mode)
    finally:
        os.environ.pop(PROGRESS_ENV, None)
        if previous is not None:
            os.environ[PROGRESS_ENV] = previous


def _sweep(study, store, groups, backend: str, slots, options: RunOptions, worker_args: tuple, mode: str) -> int:
    """Run the sweep on the backend, release what it holds however it ends, summarise."""
    from harness.store import Claimant

    executor = make_executor(backend, slots, options.scheduler, options.devices)
    directory = tempfile.mkdtemp(prefix="harness-slots-") if backend != "inprocess" and slots else None
    claimant = Claimant.this_process()
    total = sum(len(g) for g in groups)
    progress = Progress(total, mode, lambda rep: f"{rep.id} ({_label(study, rep)})")
    sweep = Sweep(
        store, executor, (SlotPool(slots, directory), *worker_args), options, progress, claimant,
        store.max_pk() if options.rerun_failed else None,
    )
    heartbeat = Heartbeat(store, claimant, options.lease_s)
    interrupted = False
    previous = _sigterm_as_interrupt()
    previous_sigint = _sigint_stops(sweep)
    try:
        sweep.run(groups)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        # The sweep is over (done, drained or stopped): a Ctrl-C from here on has nothing left
        # to stop, and must not break off the clean-up or the summary with a traceback.
        if previous_sigint is not None:
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        if interrupted:
            executor.close(kill=True)
        heartbeat.stop()
        progress.close()
        store.release(claimant)
        if not interrupted:
            executor.close()
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        if directory:
            shutil.rmtree(directory, ignore_errors=True)
    try:
        return _summary(progress, sweep, store.shown_url, total, interrupted)
    finally:
        if previous_sigint is not None:
            signal.signal(signal.SIGINT, previous_sigint)


def _slots(options: RunOptions, remote: bool, most: int | None = None) -> list[Slot] | None:
    if remote:  # the cluster's workers pick their own device
        expand_devices(options.devices, n_gpus=None)  # still, a misspelt device is an error
        return None
    import torch

    if options.backend == "inprocess":  # auto: the one worker the in-process backend runs
        most = 1
    return plan_slots(options.devices, options.workers_per_device, options.workers, n_gpus=torch.cuda.device_count(),
                      most=most)


def auto_workers_cap(reps: list[Replication], data_dir) -> int:
    """The most workers --workers-per-device auto starts for ``reps``: no more than there
    are models to train (replications that differ only in their stopping rule are one),
    nor than half the free memory holds, each worker holding its own copy of the data and
    a model in training (harness.pack.replication_bytes; a pack is sized to the memory
    left, harness.pack.choose_pack_size)."""
    import torch

    from harness.data import splits_for
    from harness.pack import free_host_memory, replication_bytes, shared_settings, trajectory_key

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


def _default_work() -> Callable:
    from harness.train import run_replications

    return run_replications


def _layout(backend: str, slots: list[Slot] | None, options: RunOptions) -> str:
    if not slots:
        return f"backend dask at {options.scheduler}: each worker trains on its own GPU if it has one, else its CPU"
    names = Counter(s.name for s in slots)
    where = ", ".join(f"{n} x {name}" if n > 1 else name for name, n in names.items())
    threads = f", {slots[0].threads} torch thread(s) each" if slots[0].threads else ""
    return f"backend {backend}: {len(slots)} worker(s) on {where}{threads}"


def _summary(progress: Progress, sweep: Sweep, db: str, todo: int, interrupted: bool) -> int:
    c = progress.counts
    if interrupted:
        print(
            f"\ninterrupted: {progress.finished} of {todo} replications recorded in {db}; "
            "run the same command again to train the rest",
            file=sys.stderr,
        )
        return 130
    print(
        f"trained {progress.finished}: {c['done']} done, {c['diverged']} diverged, {c['failed']} failed; "
        f"results in {db} (harness analyze to write the report)"
    )
    if sweep.timed_out:
        print(f"time limit reached: {todo - progress.finished} of {todo} replications not started; "
              "run the same command again to train them")
    if sweep.stopped:
        print(f"stopped on Ctrl-C: {todo - progress.finished} of {todo} replications not started; "
              "run the same command again to train them", file=sys.stderr)
    if sweep.skipped:
        print(f"{sweep.skipped} replication(s) skipped: another run recorded them or is training them (harness status)")
    if c["failed"]:
        return 1
    return 130 if sweep.stopped else 0


def _sigint_stops(sweep: Sweep):
    """Ctrl-C once: the sweep starts nothing new and waits for what is training (a pack
    can train for an hour; stopping it would throw that away); twice: KeyboardInterrupt,
    which stops the workers at once. Returns the old handler."""
    if threading.current_thread() is not threading.main_thread():
        return None

    def stop(signum, frame):
        if sweep.stop_asked:
            raise KeyboardInterrupt
        sweep.stop_asked = True
        training = sweep.progress.running  # counted before a task is handed over: the in-process one too
        # said at once (the in-process backend trains in this thread: its loop may not come
        # round for an hour), by a raw write: a signal handler must not re-enter a
        # buffered stream the interrupted code may be writing to
        _write_stderr(f"\nstopping: the {training} replication(s) training finish and are recorded, "
                      "nothing new starts; Ctrl-C again to stop them now\n")

    return signal.signal(signal.SIGINT, stop)


def _write_stderr(text: str) -> None:
    try:
        fd = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):  # replaced by an object without a descriptor
        fd = 2
    os.write(fd, text.encode())


def _sigterm_as_interrupt():
    """Handle SIGTERM (a batch job cancelled) like Ctrl-C; returns the old handler."""
    if threading.current_thread() is not threading.main_thread():
        return None

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    return signal.signal(signal.SIGTERM, interrupt)


# -- harness status -------------------------------------------------------------------------


@dataclass
class StudyStatus:
    """Where one study stands: its grid, split by status, and the time spent on it."""

    name: str
    grid: int  # replications in the study's grid
    done: int
    diverged: int
    failed: int
    remaining: int  # in the grid and not recorded yet (failed ones are not counted here)
    running: int  # of those, claimed by a live run
    train_s: float  # training time summed over the recorded replications
    elapsed_s: float  # from the first replication's start to the last one's end
    left_s: float | None = None  # training time the remaining ones should take (None: no basis yet)


def study_status(store, name: str) -> StudyStatus:
    """Status of a study in the store, by name or by study file (counted against the
    file's grid; by name, against every grid its runs asked for)."""
    from pathlib import Path

    import pandas as pd

    from harness.study import load_study, recorded_requests, requested_replications

    if name.endswith(".py") or Path(name).is_file():
        study = load_study(name)
        name, reps = study.name, {r.id: r for r in study.replications()}
    else:
        definition = store.study_definition(name)
        reps = {r.id: r for request in recorded_requests(definition) for r in requested_replications(name, request)}
    grid = set(reps)
    frame = store.frame(name)
    frame = frame[frame["id"].isin(grid)] if len(frame) else frame
    counts = frame["status"].value_counts() if len(frame) else {}
    recorded = set(frame["id"]) if len(frame) else set()
    running = {c["id"] for c in store.claims(name) if c["live"]} & (grid - recorded)
    elapsed = 0.0
    if len(frame) and frame["started_at"].notna().any():
        start = pd.to_datetime(frame["started_at"], utc=True).min()
        end = pd.to_datetime(frame["finished_at"], utc=True).max()
        elapsed = max(0.0, (end - start).total_seconds())
    return StudyStatus(
        name, len(grid), int(counts.get("done", 0)), int(counts.get("diverged", 0)), int(counts.get("failed", 0)),
        len(grid - recorded), len(running), float(frame["wall_s"].sum()) if len(frame) else 0.0, elapsed,
        training_time_left(reps, frame, grid - recorded),
    )


def training_time_left(reps: dict[str, Replication], frame, todo: set[str]) -> float | None:
    """The training time the replications ``todo`` (ids in ``reps``) should take, in the unit
    of recorded wall time (``frame``: the recorded ones, all in ``reps``): each at the mean of
    the finished ones in its cell (its config but the seed), else of those that differ from
    it only in seed, λ and stopping rule (the entropy term and the stopping epoch are what λ
    changes). None when some replication has neither yet."""
    finished = frame[frame["status"].isin(["done", "diverged"]) & frame["wall_s"].notna()] if len(frame) else frame
    walls = dict(zip(finished["id"], finished["wall_s"].astype(float))) if len(finished) else {}
    levels = []
    for ignored in (("seed",), ("seed", "lam", "train.monitor")):
        cells: dict[tuple, list[float]] = {}
        for rid, wall in walls.items():
            cells.setdefault(grid_cell(reps[rid], ignored), []).append(wall)
        levels.append((ignored, {cell: sum(w) / len(w) for cell, w in cells.items()}))
    total = 0.0
    for rid in todo:
        estimate = next((m for ignored, mean in levels if (m := mean.get(grid_cell(reps[rid], ignored))) is not None), None)
        if estimate is None:
            return None
        total += estimate
    return total


def format_status(rows: list[StudyStatus]) -> str:
    lines = [
        f"{'study':<28} {'grid':>6} {'done':>6} {'diverged':>8} {'failed':>6} {'remaining':>9} {'running':>7} "
        f"{'train time':>10} {'elapsed':>10} {'train left':>10}"
    ]
    for r in rows:
        left = "?" if r.left_s is None else _duration(r.left_s)
        lines.append(
            f"{r.name:<28} {r.grid:>6} {r.done:>6} {r.diverged:>8} {r.failed:>6} {r.remaining:>9} {r.running:>7} "
            f"{_duration(r.train_s):>10} {_duration(r.elapsed_s):>10} {left:>10}"
        )
    if any(r.remaining and r.left_s is not None for r in rows):
        lines.append("train left: the remaining replications at the mean training time of recorded ones like them; "
                     "divide by the workers for wall time")
    if any(r.failed for r in rows):
        lines.append("failed replications are trained again with: harness run <study file> --rerun-failed")
    return "\n".join(lines)


def _label(study: Study, rep: Replication) -> str:
    return " ".join(f"{k}={v}" for k, v in _varying(study, rep).items())


def _varying(study: Study, rep: Replication) -> dict:
    params = rep.params()
    return {k: params[k] for k in study.grid}


def _duration(seconds: float) -> str:
    """h:mm:ss, hours unbounded (a sweep can train for days)."""
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"
