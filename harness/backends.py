"""The backends that run workers' tasks, registered by name in ``BACKENDS``.

Every backend is driven through ``submit(fn, *args) -> concurrent.futures.Future`` and
answers the scheduler's questions about itself (how many workers it can run, whether it
joins a running cluster, whether its workers share the run's slots through lock files,
how to describe its layout), so the scheduler (harness.schedule) names none of them.
Adding one (Ray, say) is a class registered here, and an entry in the shared backend
test suite (tests/test_schedule.py, the ``options`` fixture).

- ``inprocess``: one worker, the driver itself (debugging, tests, a single CPU worker);
- ``processes``: worker processes on this machine (loky, joblib's process pool);
- ``dask``: a Dask cluster, an existing one (``--scheduler tcp://host:8786``) or a
  ``LocalCluster`` started for the run.

Standard library only at import: ``harness --help`` lists the names.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections import Counter
from concurrent.futures import BrokenExecutor, Future
from contextlib import contextmanager
from typing import Iterator

from harness.registry import Registry
from harness.workers import ScheduleError, Slot

BACKENDS: Registry[type[Backend]] = Registry("backend")


class Backend:
    """What the scheduler asks of a backend; each registered backend is a subclass."""

    summary = ""  # a few words for --backend's help, e.g. "worker processes here"
    max_workers: int | None = None  # the most workers it runs (None: as many as asked)
    takes_scheduler = False  # whether --scheduler (a running cluster's address) applies to it
    slot_files = True  # its workers are not the driver: they share the run's slots through lock files
    capacity = 1  # tasks it runs at once: the sweep keeps this many in flight

    @classmethod
    def start(cls, slots: list[Slot] | None, scheduler: str | None, devices: list[str] | None) -> Backend:
        """The backend, ready for tasks: ``slots`` on this machine (None: the workers of
        the cluster at ``scheduler`` pick their own device; ``devices`` as asked)."""
        raise NotImplementedError

    @classmethod
    def layout(cls, name: str, slots: list[Slot] | None, scheduler: str | None) -> str:
        """The line ``harness run`` shows before the sweep: where the workers train."""
        names = Counter(s.name for s in slots)
        where = ", ".join(f"{n} x {name}" if n > 1 else name for name, n in names.items())
        threads = f", {slots[0].threads} torch thread(s) each" if slots[0].threads else ""
        return f"backend {name}: {len(slots)} worker(s) on {where}{threads}"

    def submit(self, fn, *args) -> Future:
        raise NotImplementedError

    def restart(self) -> None:
        """After a worker died and took the pool with it (see ``worker_died``)."""

    def close(self, kill: bool = False) -> None:
        """Release the workers; ``kill``: at once, without waiting for their tasks."""


def choose_backend(backend: str | None, scheduler: str | None, n_slots: int) -> str:
    """The backend asked for, else: dask given a scheduler's address, processes for
    several workers, inprocess for one."""
    backend = backend or ("dask" if scheduler else "processes" if n_slots > 1 else "inprocess")
    if backend not in BACKENDS:
        raise ScheduleError(f"unknown backend {backend!r}: choose one of {', '.join(BACKENDS)}")
    chosen = BACKENDS[backend]
    if scheduler and not chosen.takes_scheduler:
        raise ScheduleError("--scheduler is the address of a Dask scheduler: use it with --backend dask")
    if chosen.max_workers is not None and n_slots > chosen.max_workers:
        most = "one worker" if chosen.max_workers == 1 else f"at most {chosen.max_workers} workers"
        raise ScheduleError(f"the {backend} backend runs {most}, not {n_slots}; use --backend processes")
    return backend


def check_scheduler_address(address: str) -> None:
    """A Dask scheduler's address as Dask reads it (tcp://host:8786, host:8786, tls://...):
    a malformed one is one line before the database is touched, not Dask's traceback at
    connect time."""
    from distributed.comm.addressing import parse_address, parse_host_port

    try:
        scheme, location = parse_address(address)
        if scheme in ("tcp", "tls", "ws", "wss"):
            host, port = parse_host_port(location)
            if not host or any(c.isspace() for c in host) or not 0 < port < 65536:
                raise ValueError(address)
    except (ValueError, TypeError):
        raise ScheduleError(f"bad --scheduler address {address!r}: expected a Dask scheduler's, "
                            "e.g. tcp://host:8786") from None


def backends_help() -> str:
    """The backends for --backend's help: 'a (what a does), b (...) or c'."""
    names = [f"{name} ({BACKENDS[name].summary})" if BACKENDS[name].summary else name for name in BACKENDS]
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"


def worker_died(err: BaseException) -> bool:
    """Did this error come from a worker process dying rather than from the task?"""
    return isinstance(err, BrokenExecutor) or type(err).__name__ == "KilledWorker"


@BACKENDS.register("inprocess")
class InProcess(Backend):
    """Runs each task at submit, in the driver: the debugging backend."""

    summary = "the driver trains"
    max_workers = 1
    slot_files = False  # its one worker is the driver: nothing to share

    @classmethod
    def start(cls, slots, scheduler, devices) -> InProcess:
        return cls()

    def submit(self, fn, *args) -> Future:
        future: Future = Future()
        future.set_running_or_notify_cancel()
        try:
            future.set_result(fn(*args))
        except Exception as err:
            future.set_exception(err)
        return future


@BACKENDS.register("processes")
class Processes(Backend):
    """Worker processes on this machine (loky's reusable pool, as joblib uses)."""

    summary = "worker processes here"

    def __init__(self, n: int, threads: int):
        self.capacity = n
        self.env = {v: str(threads) for v in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
        self.restart()

    @classmethod
    def start(cls, slots, scheduler, devices) -> Processes:
        return cls(len(slots), slots[0].threads or 1)

    def restart(self) -> None:
        """A pool with every worker process started now, with Ctrl-C ignored, which they
        inherit: one pressed while a worker is still starting (before _start_worker) would
        kill it. loky starts all its workers at the first submit, so a no-op is submitted
        here, before the sweep takes Ctrl-C over; later submits start nothing, so no press
        during the sweep is ignored, and lost. (loky stops a worker idle for 10 s and a
        later submit starts it again, outside the ignore: a worker is idle only when
        nothing is left to submit. The idle timeout is kept: without it, one pool served
        every later sweep of a long-lived process, the test suite's, and DataLoader worker
        processes failed to start in its workers.)"""
        from joblib.externals.loky import get_reusable_executor

        self.pool = get_reusable_executor(max_workers=self.capacity, initializer=_start_worker,
                                          initargs=(os.getpid(),), env=self.env)
        with _sigint_ignored():
            self.pool.submit(int)

    def submit(self, fn, *args) -> Future:
        return self.pool.submit(fn, *args)

    def close(self, kill: bool = False) -> None:
        if kill:
            self.pool.shutdown(wait=False, kill_workers=True)


@BACKENDS.register("dask")
class Dask(Backend):
    """A Dask cluster: the one at ``address``, else a LocalCluster of ``n_local`` single-
    threaded worker processes. Its futures are bridged to concurrent.futures ones."""

    takes_scheduler = True

    def __init__(self, address: str | None, n_local: int, resources: dict | None = None):
        from distributed import Client, LocalCluster

        self.cluster = None
        self.resources = resources
        try:
            if address:
                self.client = Client(address, timeout="30s")
            else:
                with _sigint_ignored():  # inherited by the worker processes, as in Processes
                    self.cluster = LocalCluster(
                        n_workers=n_local, threads_per_worker=1, processes=True, dashboard_address=None, silence_logs=40
                    )
                self.client = Client(self.cluster)
        except OSError as err:
            raise ScheduleError(f"cannot reach the Dask scheduler at {address}: {err}") from None
        self.capacity = max(1, sum(self.client.nthreads().values()))

    @classmethod
    def start(cls, slots, scheduler, devices) -> Dask:
        """On an existing cluster a task asks for a GPU resource when ``devices`` names CUDA."""
        wants_gpu = bool(scheduler) and any(d.startswith("cuda") for d in devices or [])
        return cls(scheduler, len(slots or []), {"GPU": 1} if wants_gpu else None)

    @classmethod
    def layout(cls, name, slots, scheduler) -> str:
        if not slots:  # an existing cluster: its workers pick their own device
            return f"backend {name} at {scheduler}: each worker trains on its own GPU if it has one, else its CPU"
        return super().layout(name, slots, scheduler)

    def submit(self, fn, *args) -> Future:
        future: Future = Future()
        future.set_running_or_notify_cancel()
        remote = self.client.submit(fn, *args, pure=False, resources=self.resources)
        remote.add_done_callback(lambda f: _settle(future, f))
        future.remote = remote  # keeps the Dask future (and so the task) alive
        return future

    def close(self, kill: bool = False) -> None:
        self.client.close()
        if self.cluster is not None:
            self.cluster.close()


def _start_worker(driver: int) -> None:
    """Each worker process's initializer. Ctrl-C reaches the whole process group: the
    driver handles it and stops the workers, so a worker ignores it. A worker whose driver
    died (kill -9, the OOM killer, a batch system ending the job's main process) exits
    instead of training on for nobody: only the driver records results, and a rerun trains
    what was left."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threading.Thread(target=_exit_with_driver, args=(driver,), daemon=True, name="harness-driver-watch").start()


def _exit_with_driver(driver: int, every_s: float = 1.0) -> None:
    while os.getppid() == driver:  # an orphan is re-parented (to init or a subreaper)
        time.sleep(every_s)
    os._exit(70)


@contextmanager
def _sigint_ignored() -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _settle(future: Future, remote) -> None:
    try:
        future.set_result(remote.result())
    except BaseException as err:  # noqa: BLE001 - handed to the driver as is
        future.set_exception(err)
