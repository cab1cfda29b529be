"""Issue #30.1: a Dask worker started elsewhere (another cwd, no $HARNESS_DATA_DIR) gets the
driver's data directory with the work, and the recorded device names the worker."""

import os
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DATA = os.environ.get("HARNESS_DATA_DIR")


@pytest.mark.skipif(not DATA or not (Path(DATA) / "MNIST").is_dir(), reason="needs the real MNIST under $HARNESS_DATA_DIR")
def test_a_dask_worker_elsewhere_trains_mnist_from_the_drivers_data_dir(tmp_path):
    distributed = pytest.importorskip("distributed")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    address = f"tcp://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if k != "HARNESS_DATA_DIR"}
    env["PYTHONPATH"] = str(ROOT)
    worker_dir = tmp_path / "worker"
    worker_dir.mkdir()
    sched = subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1",
                              "--port", str(port), "--no-dashboard"], cwd=worker_dir, env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    worker = subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_worker", address, "--nworkers", "1",
                               "--nthreads", "1", "--no-dashboard"], cwd=worker_dir, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        with distributed.Client(address, timeout=60) as client:
            client.wait_for_workers(1, timeout=60)
        db = tmp_path / "x.db"
        driver_env = {**os.environ, "HARNESS_DATA_DIR": str(Path(DATA).resolve()), "PYTHONPATH": str(ROOT)}
        proc = subprocess.run(
            [sys.executable, "-c", "import sys; from harness.cli import entry; sys.argv[0] = \"harness\"; sys.exit(entry())", "run", str(ROOT / "studies/quickstart.py"), "--db", f"sqlite:///{db}",
             "--scheduler", address, "dataset=mnist", "data.n_train=200", "data.n_val=100",
             "train.max_epochs=1", "latent=16", "lam=0", "seed=0"],
            cwd=tmp_path, env=driver_env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        with sqlite3.connect(db) as conn:
            rows = conn.execute("SELECT status, device FROM replications").fetchall()
        assert rows and all(status == "done" for status, _ in rows), rows
        assert all(device.startswith("cpu@tcp://") for _, device in rows), rows
    finally:
        for p in (worker, sched):
            p.terminate()
        for p in (worker, sched):
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
