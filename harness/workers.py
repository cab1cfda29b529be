"""Workers: the device slots they train on, and the task they run there.

Devices: ``--devices`` lists torch devices (default: every visible GPU, else the CPU);
each entry gets ``--workers-per-device`` slots, or ``--workers`` slots in all are dealt to
the entries in turn. A worker holds one slot (an exclusive lock on a file) while it
trains, preferring the slot it held last, so on this machine every slot trains one group
at a time and a worker stays on its device (its data and CUDA context stay there too).
The slot's name is the result's recorded ``device``: ``cuda:1``, ``cpu``, or ``cpu:0``,
``cpu:1``, ... when the CPU is listed more than once (torch runs every ``cpu:N`` on the
one CPU; the number shows which worker trained what). Each worker runs torch with
cores // workers threads. On an existing Dask cluster a task uses its worker's GPU when
the worker sees one (``--devices cuda`` asks for one Dask resource ``GPU`` per task),
else the CPU.

The backends that run the workers (in process, local processes, Dask): harness.backends.
"""

from __future__ import annotations

import fcntl
import os
import socket
import threading
import time
import traceback
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Callable, Iterator

import harness
from harness.errors import UserError
from harness.study import Replication, flatten


SLOT_WAIT_S = 600.0  # a worker waits this long for a free slot before giving up


class ScheduleError(UserError):
    """A bad scheduling request (devices, workers, backend): one line."""


@dataclass(frozen=True)
class Slot:
    """Where one worker trains."""

    name: str  # recorded as the result's device
    device: str  # the torch device
    threads: int | None  # torch threads while training (None: leave as is)


def expand_devices(devices: list[str] | None, n_gpus: int | None) -> list[str]:
    """Device entries as torch devices: ``cuda`` is every visible GPU; the default is
    every visible GPU, else the CPU. ``n_gpus=None`` (an unknown, remote machine) keeps
    CUDA entries as written."""
    if not devices:
        return [f"cuda:{i}" for i in range(n_gpus)] if n_gpus else ["cpu"]
    out = []
    for entry in (d.strip() for d in devices):
        kind, _, index = entry.partition(":")
        if entry in ("cpu", "mps") or (kind == "cuda" and n_gpus is None):
            out.append(entry)
        elif entry == "cuda":
            if not n_gpus:
                raise ScheduleError("--devices cuda: no CUDA device is visible here; use --devices cpu")
            out += [f"cuda:{i}" for i in range(n_gpus)]
        elif kind == "cuda" and index.isdigit():
            if not n_gpus:
                raise ScheduleError(f"--devices {entry}: no CUDA device is visible here; use --devices cpu")
            if int(index) >= n_gpus:
                raise ScheduleError(f"--devices {entry}: {n_gpus} CUDA device(s) visible here (cuda:0..cuda:{n_gpus - 1})")
            out.append(entry)
        else:
            raise ScheduleError(f"unknown device {entry!r}: use cpu, cuda, cuda:N or mps, comma-separated")
    return out


GPU_AUTO_WORKERS = 4  # --workers-per-device auto on a GPU: packs trained on it at once


def plan_slots(
    devices: list[str] | None = None,
    workers_per_device: int | None = 1,
    workers: int | None = None,
    n_gpus: int = 0,
    cores: int | None = None,
    most: int | None = None,
) -> list[Slot]:
    """The workers' slots: ``workers_per_device`` per device entry, or ``workers`` in all
    dealt to the entries in turn; cores split evenly between them.

    ``workers_per_device=None`` is auto, the layout that trains fastest, at most ``most``
    workers in all (the models there are to train, what memory holds): the CPU, listed
    once, one worker per core left over by the GPUs' workers (a pack's small operations,
    Adam's passes and the entropy term's LAPACK calls, do not speed up with threads, while
    processes run them side by side: docs/performance.md); a GPU GPU_AUTO_WORKERS, each
    training its own pack (a pack's step is a few dozen small kernels, which one process
    launches one after another and leaves the GPU idle in between), at most one per core;
    anything else one."""
    entries = expand_devices(devices, n_gpus)
    cores = cores or _cores()
    if workers is not None:
        order = [i % len(entries) for i in range(workers)]
    elif workers_per_device is not None:
        order = [i % len(entries) for i in range(workers_per_device * len(entries))]
    else:
        order = _auto_order(entries, cores, most)
    if not order:
        raise ScheduleError("--workers and --workers-per-device must be at least 1")
    threads = max(1, cores // len(order))
    names = list(entries)
    if entries.count("cpu") > 1:  # number the CPU's entries, so each one's share shows
        number = iter(range(len(entries)))
        names = [f"cpu:{next(number)}" if e == "cpu" else e for e in entries]
    return [Slot(names[i], entries[i], threads) for i in order]


def _auto_order(entries: list[str], cores: int, most: int | None) -> list[int]:
    """--workers-per-device auto: the entries' workers (as indices), dealt in turn, at most
    ``most``."""
    gpus = sum(e.startswith("cuda") for e in entries)
    per_gpu = max(1, min(GPU_AUTO_WORKERS, cores // max(1, gpus)))
    cpu_cores = max(1, cores - per_gpu * gpus)
    counts = [per_gpu if e.startswith("cuda") else cpu_cores if e == "cpu" and entries.count("cpu") == 1 else 1
              for e in entries]
    order = [i for turn in range(max(counts)) for i, n in enumerate(counts) if turn < n]
    return order if most is None else order[: max(1, most)]


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


# -- the worker side -----------------------------------------------------------------------

_last_slot = threading.local()  # per worker thread: {slot directory: index of the slot held last}


class SlotPool:
    """The slots of one run, shared by its workers on this machine through lock files:
    holding a slot is holding an exclusive ``flock`` on its file, which the OS drops when
    the holder dies. Without a directory there is one slot (in process), or none at all
    (an existing Dask cluster: the worker's own GPU if it sees one, else the CPU)."""

    def __init__(self, slots: list[Slot] | None, directory: str | None = None):
        self.slots, self.directory = slots, directory

    @contextmanager
    def hold(self) -> Iterator[Slot]:
        if not self.slots:
            import torch

            device = "cuda" if torch.cuda.is_available() else "cpu"
            yield Slot(_cluster_worker_name(device), device, None)
            return
        if self.directory is None:
            yield self.slots[0]
            return
        last = getattr(_last_slot, "by_dir", {})
        _last_slot.by_dir = last
        order = sorted(range(len(self.slots)), key=lambda i: i != last.get(self.directory))
        deadline = time.monotonic() + SLOT_WAIT_S
        while True:
            for i in order:
                fd = os.open(os.path.join(self.directory, f"slot-{i}"), os.O_RDWR | os.O_CREAT)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    os.close(fd)
                    continue
                last[self.directory] = i
                try:
                    yield self.slots[i]
                finally:
                    os.close(fd)  # drops the lock
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"no free worker slot in {self.directory} after {SLOT_WAIT_S:.0f}s")
            time.sleep(0.05)


def _cluster_worker_name(device: str) -> str:
    """On an existing cluster the recorded device names the Dask worker too: ``cpu@tcp://…``."""
    try:
        from distributed import get_worker

        return f"{device}@{get_worker().address}"
    except (ImportError, ValueError):  # not inside a Dask worker
        return device


def train_group(reps: list[Replication], pool: SlotPool, data_dir, work: Callable) -> list[dict]:
    """The worker's task: train a group on the slot it holds and return one result each.
    Never raises for a failure inside ``work``: the group's results say ``failed``."""
    with pool.hold() as slot:
        if slot.threads:
            import torch

            torch.set_num_threads(slot.threads)
        try:
            results = work(reps, slot.device, data_dir)
        except Exception:
            error = traceback.format_exc()
            return [failed_result(rep, error, slot.name) for rep in reps]
    for result in results:
        result["device"] = slot.name
    return results


def failed_result(rep: Replication, error: str, device: str | None = None) -> dict:
    """A ``failed`` result made outside train.py (the worker died, or raised)."""
    return {
        "id": rep.id,
        "study": rep.study,
        "status": "failed",
        "error": error,
        "config": {k: list(v) if isinstance(v, tuple) else v for k, v in flatten(rep.config).items()},
        "device": device,
        "host": socket.gethostname() if device else None,
        "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "versions": {"harness": harness.__version__},
    }
