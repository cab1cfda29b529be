"""How a sweep shows its progress: a live bar, a line per result, or nothing."""

from __future__ import annotations

import sys
import time
from collections import Counter
from typing import Callable

from harness.study import Replication


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
            f"eta {format_duration(eta) if eta is not None else '?'}"
        )


def format_duration(seconds: float) -> str:
    """h:mm:ss, hours unbounded (a sweep can train for days)."""
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"
