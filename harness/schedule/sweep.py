"""The sweep: the driver's loop that claims each group just before a worker gets it,
hands it to the backend, records each result in its own transaction as soon as it comes
back, retries failures, and starts nothing new after the time limit or a Ctrl-C.

Failures: an exception in training is a ``failed`` result with its traceback (train.py);
a worker process that dies takes down loky's whole pool, so the groups that were in
flight are run again one at a time, and a group that kills its worker when alone is
recorded as failed. A failed group is retried up to ``--retries`` times in the run;
failures recorded by earlier runs are retried only with ``--rerun-failed``.
"""

from __future__ import annotations

import threading
import time
import traceback
from collections import Counter, deque
from concurrent.futures import FIRST_COMPLETED, BrokenExecutor, Future, wait

from harness.backends import worker_died
from harness.schedule.options import RunOptions
from harness.schedule.progress import Progress
from harness.study import Replication
from harness.workers import failed_result, train_group


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
