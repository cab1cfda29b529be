"""Issue #30.3: making large grids fast changes no replication id, and a grid over
CONFIRM_OVER replications asks before training when stdin is a terminal."""

import hashlib
import io
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from harness.schedule import RunOptions, run_study
from harness.study import Study, load_study

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("study, overrides, n, first, last, digest", [
    ("mnist_autoencoder", ["train.monitor=task,total_float32"], 1820, "f325cae9b4dc94fd", "286a290ece41ff5d", "16d90f52eb3919af"),
    ("mnist_autoencoder", ["latent=80,180", "protocol=keras", "entropy.eps=1e-4,1e-7"], 280,
     "71cd60117c6edd87", "07dc17b0d97ccd59", "ac9971dd8e2e3249"),
    # late keys off their default enter the id, at their default they do not; tuples (arch)
    # hash as lists; a preset as an axis: ids from before the id was made faster (2520 then;
    # 2100 since the one-block "all" placement, the same as "first", is excluded: the rest
    # checked id for id against the list before the exclusion)
    ("mnist_cnn", ["data.augment=none,flip_rotate_zoom", "train.adam_eps=1e-7", "net.base_width=32"], 2100,
     "545a50e7f83f7628", "14956710d12b8b62", "0f1f2353a8b55fe8"),
    ("mnist_cnn", ["protocol=default,keras", "arch=32-64,16"], 560, "23da267bd4d4392d", "0fad666795436bf8", "ec127449ca9db614"),
])
def test_replication_ids_are_unchanged(study, overrides, n, first, last, digest):
    ids = [r.id for r in load_study(ROOT / f"studies/{study}.py").with_overrides(overrides).replications()]
    assert (len(ids), ids[0], ids[-1]) == (n, first, last)
    assert hashlib.sha256(" ".join(ids).encode()).hexdigest()[:16] == digest


class Terminal(io.StringIO):
    def isatty(self):
        return True


def tiny():
    return Study(name="tiny", settings={"dataset": "digits", "latent": 8, "train.max_epochs": 1}, grid={"seed": [0, 1]})


@pytest.mark.parametrize("stdin, yes, trained", [(Terminal("n\n"), False, 0), (Terminal("y\n"), False, 2),
                                                 (Terminal(""), True, 2), (io.StringIO(""), False, 2)])
def test_a_large_grid_asks_first_on_a_terminal(tmp_path, monkeypatch, stdin, yes, trained):
    run_module = __import__("harness.schedule.run", fromlist=["CONFIRM_OVER"])
    monkeypatch.setattr(run_module, "CONFIRM_OVER", 1)  # "large": over one replication
    monkeypatch.setattr("sys.stdin", stdin)
    db = tmp_path / "x.db"
    code = run_study(tiny(), f"sqlite:///{db}", options=RunOptions(log="quiet", yes=yes))
    assert code == (1 if trained == 0 else 0)
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT count(*) FROM replications").fetchone()[0] == trained


def _counted(monkeypatch, original) -> list:
    """Every harness module's name for ``original`` made to count its calls."""
    calls = []

    def counting(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    for module in [m for name, m in sys.modules.items() if name == "harness" or name.startswith("harness.")]:
        for name, value in list(vars(module).items()):
            if value is original:
                monkeypatch.setattr(module, name, counting)
    return calls


def test_a_dry_run_builds_and_flattens_each_config_once(tmp_path, monkeypatch, capsys):
    """Issue #30.10: listing 100,000 replications took minutes, each config built twice and
    flattened three times or more (its id, its cell, its line). Counted, not timed: a
    config is flattened once per replication (its id), built at most once (its nested
    configs are shared), give or take the study's own."""
    import harness.data  # noqa: F401 - imported by the run: their names for flatten are counted too
    import harness.schedule.run  # noqa: F401
    import harness.training.checks  # noqa: F401
    from harness.study import build_config, flatten

    study = Study(name="counted", settings={"dataset": "digits", "latent": 8},
                  grid={"lam": [0.0, 1e-3, 1e-2, 1e-1], "train.monitor": ["task", "total"], "seed": range(25)})
    n = 4 * 2 * 25
    builds, flattens = _counted(monkeypatch, build_config), _counted(monkeypatch, flatten)
    assert run_study(study, f"sqlite:///{tmp_path / 'h.db'}", dry_run=True) == 0
    assert f"{n} replications in the grid" in capsys.readouterr().out
    assert len(builds) <= n + 3 and n <= len(flattens) <= n + 3


def test_expanding_hashing_and_ordering_a_grid_imports_no_torch():
    """What a dry run spends on the grid needs no torch (its import takes seconds): only the
    model and data set registries, which a dry run checks names against, bring it in."""
    probe = ("import sys; from harness.study import load_study; from harness.schedule import remaining; "
             "from harness.schedule.run import _varying; "
             "study = load_study('studies/mnist_autoencoder.py'); todo, n = remaining(study, None); "
             "lines = [r.id + str(_varying(study, r)) for r in todo]; "
             "print(n, len(lines), sorted(m for m in ('torch', 'pandas', 'sqlalchemy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT)
    assert out.stdout.strip() == "910 910 []", out.stderr


def test_a_preset_as_a_grid_axis_is_listed_by_name(tmp_path, capsys):
    """protocol=default,keras as an axis: the config holds the keys the preset stands for,
    not its name; the listing (and a run's progress lines) name it (it was a KeyError)."""
    study = load_study(ROOT / "studies/quickstart.py").with_overrides(["protocol=default,keras", "latent=16", "lam=0", "seed=0"])
    assert run_study(study, f"sqlite:///{tmp_path / 'h.db'}", dry_run=True) == 0
    lines = capsys.readouterr().out.splitlines()[1:]
    assert [line.split()[-1] for line in lines] == ["protocol=default", "protocol=keras"]


def test_a_grid_shares_nested_configs_yet_builds_what_build_config_builds():
    """expand_grid builds each set of nested settings once (train.*, data.*, ...); every
    config is still the one build_config makes, with the values json tells apart (0.0 and
    -0.0, 1 and 1.0) kept apart, and so every id is as before."""
    import itertools

    from harness.study import build_config, expand_grid

    settings = {"latent": 8, "arch": (8, 16)}
    grid = {"train.momentum": [0.0, -0.0, 1, 1.0], "protocol": ["default", "keras"], "lam": [0.0, 1.0], "seed": [0, 1]}
    reps = expand_grid("x", settings, grid, [{"lam": 1.0, "seed": 1}])
    points = [dict(zip(grid, combo)) for combo in itertools.product(*grid.values())]
    expected = [build_config({**settings, **point}) for point in points if (point["lam"], point["seed"]) != (1.0, 1)]
    assert [repr(r.config) for r in reps] == [repr(config) for config in expected] and len(reps) == 24
    assert len({r.id for r in reps}) == 24
