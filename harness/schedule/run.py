"""``harness run``: from a study to its summary, the one function the CLI calls.

The driver (the ``harness run`` process) is the only writer of the store. It works out
which replications remain (harness.schedule.plan), shows where they will train, and runs
the sweep (harness.schedule.sweep) on the chosen backend (harness.backends), releasing
what the sweep holds however it ends; a sweep stopped in any way (Ctrl-C, SIGKILL of the
driver, a dead worker) resumes where it stopped when the same command runs again.
"""

from __future__ import annotations

import os
import platform
import shutil
import sys
import tempfile
from contextlib import contextmanager
from typing import Callable, Iterator

from harness.backends import BACKENDS, choose_backend
from harness.schedule.options import LOG_MODES, RunOptions
from harness.schedule.plan import (auto_pack_size, auto_workers_cap, check_data, check_names, cpu_pack_sizes, pack,
                                   remaining, worker_slots)
from harness.schedule.progress import Progress
from harness.schedule.signals import SweepSignals
from harness.schedule.sweep import Heartbeat, Sweep
from harness.study import Replication, Study, grid_values, seedless
from harness.training import PROGRESS_ENV
from harness.workers import ScheduleError, SlotPool


CONFIRM_OVER = 10_000  # a run to train more replications asks first, on a terminal (--yes: not)


def _confirmed(n: int, options: RunOptions) -> bool:
    if n <= CONFIRM_OVER or options.yes or not sys.stdin.isatty():
        return True
    try:
        answer = input(f"train {n} replications? [y/N] ")
    except EOFError:
        return False
    return answer.strip().lower() in ("y", "yes")


def _code(source: str) -> str:
    """A study file's code without its comments, docstrings and layout: editing those is
    not defining another study. Text that does not parse is compared as it is."""
    import ast

    try:
        tree = ast.parse(source)
    except SyntaxError:
        return source
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr) \
                and isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str):
            node.body = body[1:] or [ast.Pass()]
    return ast.dump(tree)


def _check_same_study(study: Study, store) -> None:
    """A different study file reusing a recorded study's name would merge into it and
    replace its analyses: refuse (a UserError) unless --replace-definition."""
    from harness.errors import UserError

    if study.name not in store.studies():
        return
    old = store.study_definition(study.name).get("source") or ""
    if old and study.source and _code(old) != _code(study.source):
        raise UserError(f"{store.shown_url} already holds a study named {study.name!r} defined by a different study file; "
                        "rename the study, use another --db, or pass --replace-definition to replace its definition")


def run_study(
    study: Study, db: str, data_dir=None, options: RunOptions | None = None, dry_run: bool = False, work: Callable | None = None
) -> int:
    """Train what remains of ``study``, recording each result as it finishes. Returns the
    exit code: 0 when every replication it trained finished (done or diverged), 1 if any
    failed, 130 when interrupted. ``work(reps, device, data_dir) -> results`` is what a
    worker calls (default: harness.training.dispatch.run_replications)."""
    from harness.data import data_dir_from_env
    from harness.store import Store, existing
    from harness.training.outcome import machine

    options = options or RunOptions()
    remote = bool(options.scheduler)
    # every backend's workers get the driver's data directory, absolute (a Dask worker's
    # cwd and environment are its own)
    worker_data_dir = str(data_dir_from_env(data_dir).resolve())
    data_dir = data_dir_from_env(data_dir)
    reps = study.replications()  # expanded once: 100,000 replications take seconds
    slots = _checked(reps, db, options, remote)
    store = existing(db) if dry_run else Store(db)  # a dry run creates nothing: no database is nothing recorded
    if store is not None and not options.replace_definition:
        _check_same_study(study, store)
    todo, total = remaining(study, store, options.rerun_failed, reps)
    failed_before = 0 if options.rerun_failed or store is None else len(
        store.ids(study.name, ["failed"]) & {r.id for r in reps})
    note = f" ({failed_before} failed, not retried without --rerun-failed)" if failed_before else ""
    print(f"{study.name}: {total} replications in the grid, {total - len(todo)} already recorded{note}, {len(todo)} to train")
    if dry_run:
        for rep in todo:
            print(f"  {rep.id}  " + " ".join(f"{k}={v}" for k, v in _varying(study, rep).items()))
        return 0
    if not remote:  # missing data or a bad data setting: one line before anything is recorded
        check_data(todo, data_dir)
    if not _confirmed(len(todo), options):
        print("nothing trained")
        return 1
    store.record_study(study)  # the study as last run: its analyses are what `harness analyze` makes
    if not todo:
        print(f"nothing to train; results in {store.shown_url}")
        return 0
    if not remote:
        store.record_host(platform.node(), machine())
        if options.workers is None and options.workers_per_device is None:  # auto: no idle workers, none that memory cannot hold
            slots = worker_slots(options, remote, most=auto_workers_cap(todo, data_dir))
    cap = None
    if not options.pack_size and slots and all(slot.device == "cpu" for slot in slots):
        cap = cpu_pack_sizes(data_dir)
    groups = pack(todo, options.pack_size or auto_pack_size(todo, len(slots) if slots else 1), cap)
    backend = choose_backend(options.backend, options.scheduler, len(slots) if slots else 1)
    mode = options.log if options.log != "auto" else ("bar" if sys.stderr.isatty() else "plain")
    if mode != "quiet":
        print(BACKENDS[backend].layout(backend, slots, options.scheduler))
    with _epochs_logged(mode == "plain"):
        return _sweep(study, store, groups, backend, slots, options, (worker_data_dir, work or _default_work(study)), mode)


def _checked(reps: list[Replication], db: str, options: RunOptions, remote: bool):
    """What a run can refuse before it touches the database, so that a refused run creates
    and records nothing: the options, an in-memory database, the workers, devices, scheduler
    and backend, unknown model and data set names, configs that cannot train. Returns the
    workers' slots (harness.schedule.plan.worker_slots)."""
    from harness.store import StoreError, in_memory
    from harness.training.checks import check_config

    if options.log not in LOG_MODES:
        raise ScheduleError(f"unknown log mode {options.log!r}: choose one of {', '.join(LOG_MODES)}")
    if options.retries < 0:
        raise ScheduleError(f"--retries must be 0 or more, not {options.retries}")
    if in_memory(db):
        raise StoreError(f"--db {db} is a database in memory: every result would be lost when the run ends; "
                         "give a file, e.g. --db results/harness.db")
    slots = worker_slots(options, remote)
    choose_backend(options.backend, options.scheduler, len(slots) if slots else 1)
    check_names(reps)  # an unknown model or data set, with the closest name
    # a seed never makes a config trainable or not: one check a grid cell, not 100,000
    for config in {seedless(r.config): r.config for r in reps}.values():
        check_config(config)
    return slots


@contextmanager
def _epochs_logged(plain: bool) -> Iterator[None]:
    """In plain logs, workers (started in _sweep, so they inherit $HARNESS_PACK_PROGRESS)
    log each pack epoch; the variable is put back as it was after."""
    previous = os.environ.pop(PROGRESS_ENV, None)
    if plain:
        os.environ[PROGRESS_ENV] = "1"
    try:
        yield
    finally:
        os.environ.pop(PROGRESS_ENV, None)
        if previous is not None:
            os.environ[PROGRESS_ENV] = previous


def _sweep(study, store, groups, backend: str, slots, options: RunOptions, worker_args: tuple, mode: str) -> int:
    """Run the sweep on the backend, release what it holds however it ends, summarise. A
    database that stops taking results (a full disk) stops the sweep as a second Ctrl-C
    would: one line that says what was recorded (each result is its own transaction, so
    nothing recorded is lost), and the same command later trains the rest."""
    from harness.store import Claimant, StoreError

    kind = BACKENDS[backend]
    executor = kind.start(slots, options.scheduler, options.devices)
    # the workers share the slots through lock files there, unless the driver is the one worker
    directory = tempfile.mkdtemp(prefix="harness-slots-") if kind.slot_files and slots else None
    claimant = Claimant.this_process()
    total = sum(len(g) for g in groups)
    progress = Progress(total, mode, lambda rep: f"{rep.id} ({_label(study, rep)})")
    sweep = Sweep(
        store, executor, (SlotPool(slots, directory), *worker_args), options, progress, claimant,
        store.max_pk() if options.rerun_failed else None,
    )
    heartbeat = Heartbeat(store, claimant, options.lease_s)
    interrupted, failure = False, None
    handlers = SweepSignals(sweep)
    try:
        sweep.run(groups)
    except KeyboardInterrupt:
        interrupted = True
    except StoreError as err:  # the database failed a write: what is training could not be recorded
        failure = err
    finally:
        handlers.ignore_ctrl_c()  # the sweep is over: nothing left for a Ctrl-C to stop
        if interrupted or failure:
            executor.close(kill=True)
        heartbeat.stop()
        progress.close()
        try:
            store.release(claimant)
        except StoreError:  # the claims lapse with their lease, or at once when this process has ended
            pass
        if not (interrupted or failure):
            executor.close()
        handlers.restore_sigterm()
        if directory:
            shutil.rmtree(directory, ignore_errors=True)
    try:
        if failure:
            raise StoreError(f"{failure}; {progress.finished} of {total} replications recorded before it (kept); "
                             "run the same command again to train the rest") from None
        return _summary(progress, sweep, store.shown_url, total, interrupted)
    finally:
        handlers.restore_ctrl_c()


def _default_work(study: Study) -> Callable:
    """run_replications, with the study file's code for a worker that lacks its pieces."""
    from harness.training.dispatch import study_work

    return study_work(study.path, study.source)


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


def _label(study: Study, rep: Replication) -> str:
    return " ".join(f"{k}={v}" for k, v in _varying(study, rep).items())


def _varying(study: Study, rep: Replication) -> dict:
    return grid_values(rep.config, list(study.grid))
