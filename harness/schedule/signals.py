"""Ctrl-C and SIGTERM while a sweep runs: once drains, twice (or SIGTERM) stops at once.

Handlers can be set only from the main thread; elsewhere (a sweep started from another
thread) nothing is installed and the defaults stay.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from harness.schedule.sweep import Sweep


class SweepSignals:
    """The sweep's handlers, installed for its length and put back in the steps the
    driver's clean-up takes (see harness.schedule.run)."""

    def __init__(self, sweep: Sweep):
        self.sigterm = sigterm_as_interrupt()
        self.sigint = sigint_stops(sweep)

    def ignore_ctrl_c(self) -> None:
        """The sweep is over (done, drained or stopped): a Ctrl-C from here on has nothing
        left to stop, and must not break off the clean-up or the summary with a traceback."""
        if self.sigint is not None:
            signal.signal(signal.SIGINT, signal.SIG_IGN)

    def restore_sigterm(self) -> None:
        if self.sigterm is not None:
            signal.signal(signal.SIGTERM, self.sigterm)

    def restore_ctrl_c(self) -> None:
        if self.sigint is not None:
            signal.signal(signal.SIGINT, self.sigint)


def sigint_stops(sweep: Sweep):
    """Ctrl-C once: the sweep starts nothing new and waits for what is training (a pack
    can train for an hour; stopping it would throw that away); twice: KeyboardInterrupt,
    which stops the workers at once. Returns the old handler."""
    if threading.current_thread() is not threading.main_thread():
        return None

    def stop(signum, frame):
        if sweep.stop_asked:
            raise KeyboardInterrupt
        sweep.stop_asked = True
        training = sweep.progress.running  # counted before a task is handed over: the in-process one too
        # said at once (the in-process backend trains in this thread: its loop may not come
        # round for an hour), by a raw write: a signal handler must not re-enter a
        # buffered stream the interrupted code may be writing to
        _write_stderr(f"\nstopping: the {training} replication(s) training finish and are recorded, "
                      "nothing new starts; Ctrl-C again to stop them now\n")

    return signal.signal(signal.SIGINT, stop)


def sigterm_as_interrupt():
    """Handle SIGTERM (a batch job cancelled) like Ctrl-C; returns the old handler."""
    if threading.current_thread() is not threading.main_thread():
        return None

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    return signal.signal(signal.SIGTERM, interrupt)


def _write_stderr(text: str) -> None:
    try:
        fd = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):  # replaced by an object without a descriptor
        fd = 2
    os.write(fd, text.encode())
