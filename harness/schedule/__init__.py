"""Which replications remain, and the driver that trains them on workers.

The driver (the ``harness run`` process) is the only writer of the store. It works out
which replications remain, claims each group of them in the store just before a worker
gets it (so concurrent runs share a grid), and records each result in its own transaction
as soon as it comes back, so a sweep stopped in any way (Ctrl-C, SIGKILL of the driver, a
dead worker) resumes where it stopped when the same command runs again. Where the workers
train: harness.workers; on which backend: harness.backends.

- ``options``: RunOptions, what ``harness run`` is asked to do;
- ``plan``: what remains, in rounds of seeds; packing; how many workers on which slots;
- ``sweep``: the loop that claims, dispatches, records and retries, and the time limit;
- ``signals``: Ctrl-C (once drains, twice stops) and SIGTERM during a sweep;
- ``progress``: the live bar or log lines;
- ``run``: ``run_study``, from a study to its summary;
- ``status``: ``harness status``.

The names below are this package's interface; import them from ``harness.schedule``.
"""

from harness.schedule.options import LEASE_S, LOG_MODES, RunOptions
from harness.schedule.plan import (AUTO_PACK_CAP, auto_pack_size, auto_workers_cap, check_data, cpu_pack_sizes,
                                   even_share, grid_cell, in_rounds, pack, remaining, worker_slots)
from harness.schedule.progress import Progress, format_duration
from harness.schedule.run import run_study
from harness.schedule.status import StudyStatus, format_status, study_status, training_time_left
from harness.schedule.sweep import Heartbeat, Sweep

__all__ = [
    "AUTO_PACK_CAP", "LEASE_S", "LOG_MODES", "Heartbeat", "Progress", "RunOptions", "StudyStatus", "Sweep",
    "auto_pack_size", "auto_workers_cap", "check_data", "cpu_pack_sizes", "even_share", "format_duration",
    "format_status", "grid_cell", "in_rounds", "pack", "remaining", "run_study", "study_status",
    "training_time_left", "worker_slots",
]
