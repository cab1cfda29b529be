"""`harness bench --whole-process`: `harness run` against a plain loop, each a fresh process.

What a user waits for is the whole process: Python and torch starting, the data loading,
the training, the validation, the results written. This times two processes on the same
replications, one after the other and alternating: ``harness run STUDY overrides`` into
a new SQLite file, and a process that loads the same data and trains the same
replications with the plain loop (harness.perf.plain: a DataLoader, one model and Adam
at a time). Their ratio is what the harness saves its user, start-up included.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

# The plain process: the study's replications as harness run would train them, one at a
# time with harness.perf.plain; argv: the data directory ("": the default), the study
# file, then overrides.
_PLAIN = """
import sys
from harness.data import splits_for
from harness.perf.plain import plain_loop
from harness.study import load_study
study = load_study(sys.argv[2]).with_overrides(sys.argv[3:])
configs = [r.config for r in study.replications()]
plain_loop(configs, splits_for(configs[0], sys.argv[1] or None, device="cpu"), "cpu")
"""


@dataclass
class WholeProcess:
    replications: int
    run_s: float  # harness run, the fastest of the repeats
    plain_s: float

    def report(self) -> str:
        return (f"whole process, start-up and validation included, {self.replications} replications: "
                f"harness run {self.run_s:.1f} s, plain loop {self.plain_s:.1f} s "
                f"(speed-up harness run / plain: {self.plain_s / self.run_s:.1f}x)")


def whole_process(study: str, overrides: list[str], replications: int, repeats: int = 1,
                  workers: int | None = None, data_dir: str | None = None) -> WholeProcess:
    """Time `harness run` and the plain loop as processes, ``repeats`` times alternating;
    the fastest of each counts."""
    run_s = plain_s = math.inf
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    for _ in range(repeats):
        with tempfile.TemporaryDirectory() as tmp:
            command = [sys.executable, "-m", "harness.cli", "run", study, *overrides, "-q",
                       "--db", f"sqlite:///{Path(tmp) / 'bench.db'}", *(["--workers", str(workers)] if workers else []),
                       *(["--data-dir", data_dir] if data_dir else [])]
            run_s = min(run_s, _timed(command, env))
        plain_s = min(plain_s, _timed([sys.executable, "-c", _PLAIN, data_dir or "", study, *overrides], env))
    return WholeProcess(replications, run_s, plain_s)


def _timed(command: list[str], env: dict) -> float:
    start = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["(no output)"]
        raise RuntimeError(f"{command[2] if command[1] == '-m' else 'plain loop'} failed: {tail[0]}")
    return time.perf_counter() - start
