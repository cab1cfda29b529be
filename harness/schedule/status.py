"""``harness status``: where each study stands, and the training time it has left."""

from __future__ import annotations

from dataclasses import dataclass

from harness.schedule.plan import grid_cell
from harness.schedule.progress import format_duration
from harness.study import Replication


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
        left = "?" if r.left_s is None else format_duration(r.left_s)
        lines.append(
            f"{r.name:<28} {r.grid:>6} {r.done:>6} {r.diverged:>8} {r.failed:>6} {r.remaining:>9} {r.running:>7} "
            f"{format_duration(r.train_s):>10} {format_duration(r.elapsed_s):>10} {left:>10}"
        )
    if any(r.remaining and r.left_s is not None for r in rows):
        lines.append("train left: the remaining replications at the mean training time of recorded ones like them; "
                     "divide by the workers for wall time")
    if any(r.failed for r in rows):
        lines.append("failed replications are trained again with: harness run <study file> --rerun-failed")
    return "\n".join(lines)
