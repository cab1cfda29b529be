"""What a training produced, as plain data: the Outcome of one replication (a packed
member's adds its share of the wall time), and the result dict the driver records, with
its provenance (versions, git commit, machine)."""

from __future__ import annotations

import functools
import os
import platform
import subprocess
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import torch

import harness
from harness.study import Replication, flatten


class Diverged(Exception):
    """A loss became NaN or infinite."""


@dataclass
class Outcome:
    """What one training produced, before it is turned into a result dict."""

    status: str = "done"
    error: str | None = None
    metrics: dict = field(default_factory=dict)
    history: list = field(default_factory=list)
    profiles: list = field(default_factory=list)




@dataclass
class PackedOutcome(Outcome):
    """An Outcome plus what packing adds: the member's share of the pack's wall time (each
    epoch's time split evenly among the members training in it) and when it finished."""

    wall_s: float = 0.0
    finished_at: datetime | None = None




def result_dict(rep: Replication, outcome: Outcome, device, started: datetime, finished: datetime, wall_s: float) -> dict:
    """The plain result of one replication that the driver records (Store.record)."""
    return {
        "id": rep.id,
        "study": rep.study,
        "status": outcome.status,
        "error": outcome.error,
        "config": {k: list(v) if isinstance(v, tuple) else v for k, v in flatten(rep.config).items()},
        "metrics": outcome.metrics,
        "history": outcome.history,
        "profiles": outcome.profiles,
        "device": str(device),
        "host": platform.node(),
        "started_at": started.isoformat(timespec="seconds"),
        "finished_at": finished.isoformat(timespec="seconds"),
        "wall_s": wall_s,
        "versions": versions(),
        "machine": machine(),
    }



def mean_or_nan(values: list[float]) -> float:
    return float(sum(values) / len(values)) if values else float("nan")




@functools.lru_cache(maxsize=1)
def versions() -> dict:
    """Provenance recorded with every result."""
    return {"harness": harness.__version__, "torch": torch.__version__, "git_commit": _git_commit()}


@functools.cache
def machine() -> dict:
    """What this host is, recorded once per host with its results (the report's "on what
    machine"): CPU model, logical CPUs, memory, GPUs."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (AttributeError, ValueError, OSError):
        memory = None
    gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []
    return {"cpu": cpu, "cpus": os.cpu_count(), "memory_gib": None if memory is None else round(memory, 1),
            "gpus": gpus, "os": platform.platform(terse=True)}


def _git_commit() -> str | None:
    root = Path(harness.__file__).resolve().parent.parent
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root, capture_output=True, text=True)
    return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def run_metrics(epoch: int, rule, grad_ratios: list[float], term_leds: list[float]) -> dict:
    """What a finished training adds to its final metrics, alone or packed: where it
    stopped (``rule``: its training.stopping.EarlyStopping) and the guidance diagnostics'
    means over the measured steps."""
    return {"stop_epoch": float(epoch), "best_epoch": float(rule.best_epoch),
            "hit_max_epochs": float(rule.hit_max_epochs), "grad_ratio": mean_or_nan(grad_ratios),
            "term_led": mean_or_nan(term_leds)}


def diverged_metrics(epoch: int, rule) -> dict:
    """The metrics of a diverged training, alone or packed: where it stopped."""
    return {"stop_epoch": float(epoch), "best_epoch": float(rule.best_epoch)}
