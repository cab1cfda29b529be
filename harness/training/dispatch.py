"""The scheduler's unit of work: a group of replications trained on one device, each alone
(loop) or packed (pack), one result dict each. Above both training paths."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path

from harness import custom
from harness.study import Replication
from harness.training.loop import run_replication
from harness.training.pack import run_pack
from harness.training.packing import pack_groups


def run_replications(reps: list[Replication], device: str = "cpu", data_dir: str | Path | None = None) -> list[dict]:
    """The scheduler's unit of work: train a group of replications on one device and return
    one result dict each, in order. Replications that differ only in λ and seed (the same
    harness.training.packing.pack_key) are trained together as one vectorised pack (harness.training.pack),
    each still giving its own result; the others one at a time by run_replication."""
    results: list[dict] = [None] * len(reps)  # type: ignore[list-item]
    for group in pack_groups([rep.config for rep in reps]):
        members = [reps[i] for i in group]
        if len(members) == 1:
            out = [run_replication(members[0], device=device, data_dir=data_dir)]
        else:
            out = run_pack(members, device=device, data_dir=data_dir)
        for i, result in zip(group, out):
            results[i] = result
    return results


def study_work(path: str, source: str) -> Callable:
    """What a worker calls for a study (harness.schedule.run_study's default): run_replications,
    after running the study file's code there when a replication names one of its pieces
    (harness.custom). A partial of module-level names, so every backend can pickle it."""
    return functools.partial(run_with_study_code, path, source) if source else run_replications


def run_with_study_code(path: str, source: str, reps: list[Replication], device: str = "cpu",
                        data_dir: str | Path | None = None) -> list[dict]:
    if any(custom.needs_code(rep.config) for rep in reps):
        custom.load_code(path, source)
    return run_replications(reps, device=device, data_dir=data_dir)
