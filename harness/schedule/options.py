"""What ``harness run`` is asked to do: RunOptions, one field per CLI flag."""

from __future__ import annotations

from dataclasses import dataclass

LOG_MODES = ("auto", "bar", "plain", "quiet")
LEASE_S = 300.0  # a claim not renewed for this long may be taken over by another run


@dataclass
class RunOptions:
    """How ``harness run`` trains what remains of a study (one field per CLI flag)."""

    devices: list[str] | None = None  # torch devices, e.g. ["cuda:0", "cuda:1"]; None = every GPU, else ["cpu"]
    workers_per_device: int | None = 1  # workers on each entry of devices; None = auto (harness.workers.plan_slots)
    workers: int | None = None  # workers in all, dealt to the devices in turn (instead of workers_per_device)
    backend: str | None = None  # a name in harness.backends.BACKENDS; None = processes for several workers, else inprocess
    scheduler: str | None = None  # address of a running Dask scheduler (implies backend dask)
    retries: int = 1  # further attempts at a replication that failed in this run
    rerun_failed: bool = False  # also train replications that earlier runs recorded as failed
    replace_definition: bool = False  # record the study even if the database holds a different one of its name
    yes: bool = False  # train a grid over CONFIRM_OVER replications without asking (asked only on a terminal)
    pack_size: int = 1  # a worker trains up to this many models at once (harness.training.packing.pack_groups)
    log: str = "auto"  # auto (a live bar on a terminal, else plain) | bar | plain (a line per result) | quiet
    lease_s: float = LEASE_S  # claim lease; renewed every lease_s / 10 while the run lives
    time_limit_s: float | None = None  # start nothing new after this many seconds; None = no limit
