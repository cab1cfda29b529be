"""Runs that share one PostgreSQL database, on a real server: this test starts its own
(``initdb`` and ``pg_ctl`` from Debian's ``postgresql`` package, or any on the PATH) in a
temporary folder, and stops it after. Skipped, with the reason, where the server's
programs or the psycopg driver (``pip install -e ".[postgres]"``) are missing.

Several ``harness run`` processes started at the same moment on a new database used to
race to create its tables (one died with ``duplicate key value violates unique constraint
"pg_type_typname_nsp_index"``); every one must now exit 0 and record its share, each
replication exactly once."""

import glob
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from harness.study import load_study

ROOT = Path(__file__).resolve().parents[1]
RUNS = 3  # harness run processes at once
TINY = ["latent=8", "seed=0:2", "train.max_epochs=1"]  # 4 replications (2 λ x 2 seeds), a second each

# One `harness run` (cli.entry) whose heavy imports are done before it waits for the
# common start time given as its first argument: the runs then open the database within
# milliseconds of each other, where a race would show, instead of spread out by their imports.
LAUNCH = """
import sys, time
import sqlalchemy, torch, harness.cli, harness.data, harness.models, harness.schedule, harness.store
time.sleep(max(0.0, float(sys.argv[1]) - time.time()))
sys.argv = ["harness", *sys.argv[2:]]
harness.cli.entry()
"""


def _server_programs() -> Path | None:
    """The folder of initdb and pg_ctl: Debian's newest /usr/lib/postgresql/N/bin, else the PATH's."""
    folders = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name), reverse=True)
    if shutil.which("initdb"):
        folders.append(str(Path(shutil.which("initdb")).parent))
    return next((Path(f) for f in folders if (Path(f) / "initdb").exists() and (Path(f) / "pg_ctl").exists()), None)


def _as_server_user() -> list[str]:
    """The command prefix that runs the server's programs: initdb refuses root, so root runs
    them as the postgres user the package made."""
    if os.geteuid() != 0:
        return []
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        pytest.skip("running as root, and there is no postgres user to run the server as")
    if not shutil.which("runuser"):
        pytest.skip("running as root, and no runuser to run the server as the postgres user")
    return ["runuser", "-u", "postgres", "--"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def postgres():
    """A PostgreSQL server of its own; yields new_database(name) -> a harness --db URL."""
    psycopg = pytest.importorskip("psycopg", reason='the PostgreSQL driver is not installed: pip install -e ".[postgres]"')
    programs = _server_programs()
    if programs is None:
        pytest.skip("no PostgreSQL server programs (initdb, pg_ctl): apt-get install postgresql")
    prefix = _as_server_user()
    folder = Path(tempfile.mkdtemp(prefix="harness-pg-"))
    if prefix:
        user = pwd.getpwnam("postgres")
        os.chown(folder, user.pw_uid, user.pw_gid)
    port, data = _free_port(), folder / "data"
    subprocess.run([*prefix, programs / "initdb", "-D", data, "-A", "trust", "-U", "harness", "-E", "UTF8", "--no-sync"],
                   check=True, capture_output=True)
    options = f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off"
    subprocess.run([*prefix, programs / "pg_ctl", "-D", data, "-l", folder / "log", "-w", "-t", "60", "-o", options,
                    "start"], check=True, capture_output=True)

    # Every CREATE TABLE takes 0.2 s, as on a loaded server: runs that start within a second
    # of each other then overlap while one creates the tables, every time, not now and then.
    # In template1, so every database made below has it.
    with psycopg.connect(f"host=127.0.0.1 port={port} user=harness dbname=template1", autocommit=True) as conn:
        conn.execute("CREATE FUNCTION slow_ddl() RETURNS event_trigger LANGUAGE plpgsql AS $$ "
                     "BEGIN PERFORM pg_sleep(0.2); END $$")
        conn.execute("CREATE EVENT TRIGGER slow_ddl ON ddl_command_end WHEN TAG IN ('CREATE TABLE') "
                     "EXECUTE FUNCTION slow_ddl()")

    def new_database(name: str) -> str:
        with psycopg.connect(f"host=127.0.0.1 port={port} user=harness dbname=postgres", autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return f"postgresql+psycopg://harness@127.0.0.1:{port}/{name}"

    try:
        yield new_database
    finally:
        subprocess.run([*prefix, programs / "pg_ctl", "-D", data, "-m", "immediate", "-w", "stop"], capture_output=True)
        shutil.rmtree(folder, ignore_errors=True)


# A Store opened, a study and a host recorded, as `harness run` does first, at a common start time.
OPEN = """
import sys, time
from harness.store import Store
from harness.study import Study
time.sleep(max(0.0, float(sys.argv[1]) - time.time()))
store = Store(sys.argv[2])
store.record_study(Study("st", settings={"latent": 4}, grid={"seed": [int(sys.argv[3])]}))
store.record_host("host", {"cpus": 1})
"""


def test_stores_opened_at_once_on_a_new_database_create_its_tables_once(postgres):
    """Eight processes open one new database at the same moment, and each records the
    study with its own grid: none fails, and the study holds every grid (none lost)."""
    import json

    import sqlalchemy as sa

    url = postgres("opened_at_once")
    start = time.time() + 5
    procs = [subprocess.Popen([sys.executable, "-c", OPEN, str(start), url, str(seed)], cwd=ROOT, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for seed in range(8)]
    errors = [err for proc in procs for err in [proc.communicate(timeout=120)[1]] if proc.returncode]
    assert errors == []
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        definition = json.loads(conn.execute(sa.text("SELECT definition FROM studies")).scalar())
        assert conn.execute(sa.text("SELECT count(*) FROM hosts")).scalar() == 1
    engine.dispose()
    assert sorted(seed for r in definition["requests"] for seed in r["grid"]["seed"]) == list(range(8))


def _runs_at_once(url: str, n: int, overrides: list[str]) -> list[subprocess.CompletedProcess]:
    """``n`` `harness run studies/quickstart.py` processes that open ``url`` at the same moment."""
    start = time.time() + (15 if n > 1 else 0)  # their imports done by then, even on a busy machine
    cmd = [sys.executable, "-c", LAUNCH, str(start), "run", "studies/quickstart.py", "--db", url, "-q",
           "--workers", "1", "--pack-size", "1", *overrides]
    procs = [subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(n)]
    out = []
    for proc in procs:
        stdout, stderr = proc.communicate(timeout=240)
        out.append(subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr))
    return out


def _recorded(url: str) -> list[tuple]:
    import sqlalchemy as sa

    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            reps = conn.execute(sa.text("SELECT id, status FROM replications")).fetchall()
            assert conn.execute(sa.text("SELECT count(*) FROM claims")).scalar() == 0  # every claim released
    finally:
        engine.dispose()
    return reps


def _expected_ids() -> list[str]:
    return sorted(r.id for r in load_study(ROOT / "studies" / "quickstart.py").with_overrides(TINY).replications())


@pytest.mark.parametrize("populated", [False, True], ids=["new database", "populated database"])
def test_runs_started_at_once_share_a_postgresql_database(postgres, populated):
    url = postgres("populated" if populated else "fresh")
    if populated:  # a database an earlier run made and recorded one seed in
        first = _runs_at_once(url, 1, ["latent=8", "seed=0", "train.max_epochs=1"])[0]
        assert first.returncode == 0, first.stderr
        assert len(_recorded(url)) == 2
    runs = _runs_at_once(url, RUNS, TINY)
    for run in runs:
        assert run.returncode == 0 and "Traceback" not in run.stderr, run.stderr
    reps = _recorded(url)
    assert sorted(rid for rid, _ in reps) == _expected_ids()  # each replication once
    assert {status for _, status in reps} == {"done"}
    trained = sum(int(run.stdout.split("trained ")[1].split(":")[0]) for run in runs if "trained " in run.stdout)
    assert trained == len(_expected_ids()) - (2 if populated else 0)  # the work was shared, none done twice
