"""Grid expansion, overrides, replication ids and study files."""

import textwrap

import pytest

from harness.study import (
    KEYS,
    Config,
    Replication,
    Study,
    StudyError,
    build_config,
    derive_seed,
    flatten,
    load_study,
)


def small_study(**kw):
    defaults = dict(
        name="s",
        settings={"dataset": "digits", "model": "dense_ae", "latent": 8},
        grid={"lam": [0.0, 1e-3], "seed": range(3)},
    )
    return Study(**{**defaults, **kw})


def test_grid_is_the_product_of_its_axes_in_declared_order():
    reps = small_study().replications()
    assert [(r.config.lam, r.config.seed) for r in reps] == [
        (0.0, 0), (0.0, 1), (0.0, 2), (1e-3, 0), (1e-3, 1), (1e-3, 2)
    ]
    assert all(r.config.latent == 8 and r.config.dataset == "digits" for r in reps)
    assert len({r.id for r in reps}) == 6


def test_id_is_stable_and_depends_on_every_setting_but_not_the_study_name():
    a = Replication("a", build_config({"latent": 8, "lam": 1e-3}))
    b = Replication("b", build_config({"lam": 0.001, "latent": 8}))
    assert a.id == b.id  # same config, other name, keys in another order, 1e-3 == 0.001
    assert a.id == Replication("a", build_config({"latent": 8, "lam": 1e-3})).id
    changed = Replication("a", build_config({"latent": 8, "lam": 1e-3, "train.lr": 1e-4}))
    assert changed.id != a.id
    assert Replication("a", build_config({"latent": 8, "lam": 1e-3, "entropy.eps": 1e-5})).id != a.id


def test_flatten_and_build_config_round_trip():
    config = build_config({"arch": (32, 64), "train.monitor": "total", "net.padding": "same"})
    flat = flatten(config)
    assert set(flat) == set(KEYS)
    assert build_config(flat) == config
    assert flat["arch"] == (32, 64) and flat["train.batch_size"] == Config().train.batch_size


def test_overrides_set_axes_narrow_axes_and_fix_settings():
    study = small_study().with_overrides(["lam=0,1e-4,1e-3", "seed=0:2", "latent=16", "train.max_epochs=2"])
    assert study.grid == {"lam": [0.0, 1e-4, 1e-3], "seed": [0, 1]}
    assert study.settings["latent"] == 16 and study.settings["train.max_epochs"] == 2
    assert len(study.replications()) == 6
    narrowed = small_study().with_overrides(["seed=5"])
    assert narrowed.grid["seed"] == [5]
    assert small_study().with_overrides(["arch=32-64"]).settings["arch"] == (32, 64)
    assert small_study().with_overrides(["train.restore_best=false"]).settings["train.restore_best"] is False


@pytest.mark.parametrize(
    "override, message",
    [
        ("lamb=1", "did you mean 'lam'"),
        ("trian.lr=1", "did you mean 'train.lr'"),
        ("train.batch_size=abc", "bad value 'abc' for train.batch_size"),
        ("seed=3:1", "empty range"),
        ("lam", "expected key=value"),
        ("train.monitor=val", "choose one of task, total"),
        ("entropy.form=inverted", "choose one of inverse, log"),
    ],
)
def test_bad_overrides_are_one_line_errors(override, message):
    with pytest.raises(StudyError, match=message) as info:
        small_study().with_overrides([override])
    assert "\n" not in str(info.value)


def test_unknown_key_error_names_the_allowed_keys():
    with pytest.raises(StudyError) as info:
        small_study().with_overrides(["nope=1"])
    assert "allowed keys:" in str(info.value) and "train.max_epochs" in str(info.value)


def test_derived_seeds_differ_by_stream_and_seed_and_are_stable():
    assert derive_seed(0, "init") != derive_seed(0, "data")
    assert derive_seed(0, "init") != derive_seed(1, "init")
    assert derive_seed(3, "init") == derive_seed(3, "init")


def test_load_study_reads_the_file_and_keeps_its_source(tmp_path):
    path = tmp_path / "mine.py"
    path.write_text(textwrap.dedent("""
        from harness.study import Study
        study = Study(name="mine", settings={"latent": 4}, grid={"seed": [0, 1]})
    """))
    study = load_study(path)
    assert study.name == "mine" and len(study.replications()) == 2
    assert "Study(name=\"mine\"" in study.source


def test_load_study_errors_are_one_line(tmp_path):
    with pytest.raises(StudyError, match="no study file"):
        load_study(tmp_path / "absent.py")
    broken = tmp_path / "broken.py"
    broken.write_text("from harness.study import Study\nstudy = Study(name='b', settings={'latnet': 3})\n")
    with pytest.raises(StudyError, match="did you mean 'latent'"):
        load_study(broken)
    empty = tmp_path / "empty.py"
    empty.write_text("x = 1\n")
    with pytest.raises(StudyError, match="must define `study"):
        load_study(empty)


@pytest.mark.parametrize(
    "path, size",
    [
        ("studies/quickstart.py", 12),
        ("studies/mnist_autoencoder.py", 13 * 7 * 10),
        ("studies/cifar_autoencoder.py", 13 * 7 * 10),
        ("studies/cifar_cnn.py", (9 + 6) * 7 * 10),  # "all" on the 2- and 3-block ones only
        ("studies/mnist_cnn.py", (9 + 6) * 7 * 10),
    ],
)
def test_shipped_studies_have_the_papers_grids(path, size):
    study = load_study(path)
    reps = study.replications()
    assert len(reps) == len({r.id for r in reps}) == size
    if "autoencoder" in path:
        assert study.grid["lam"] == [0.0, 1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0]
        assert study.grid["latent"] == list(range(20, 261, 20))


def test_a_database_keeps_every_grid_its_runs_asked_for():
    """A run narrowed by overrides adds to the stored study instead of shrinking it; a
    request another one contains is dropped; status counts the union."""
    from harness.study import merged_definition, recorded_requests, requested_ids

    base = Study("m", settings={"latent": 8}, grid={"lam": [0.0, 1.0], "seed": [0, 1]})
    narrow = base.with_overrides(["lam=1", "train.monitor=task,total"])
    other = base.with_overrides(["latent=16", "seed=5"])
    stored = merged_definition(None, narrow.definition())
    assert stored["grid"] == {"lam": [1.0], "seed": [0, 1], "train.monitor": ["task", "total"]}
    stored = merged_definition(stored, other.definition())
    assert stored["grid"] == {"lam": [1.0, 0.0], "seed": [0, 1, 5], "train.monitor": ["task", "total"], "latent": [8, 16]}
    assert stored["settings"]["latent"] == 16  # the last run's settings and analyses
    union = set().union(*(requested_ids("m", r) for r in recorded_requests(stored)))
    assert union == {r.id for r in narrow.replications()} | {r.id for r in other.replications()} and len(union) == 4 + 2
    # the full grid with the monitor axis contains the narrowed run: one request is left of it
    full = base.with_overrides(["train.monitor=task,total"])
    again = merged_definition(stored, full.definition())
    assert len(recorded_requests(again)) == 2 and again["grid"]["lam"] == [0.0, 1.0]
    assert merged_definition(again, full.definition())["requests"] == again["requests"]  # a rerun adds nothing
    # a one-value axis inside a request where that key is a setting adds nothing
    one = Study("m", settings={"latent": 8, "lam": 1.0}, grid={"seed": [0, 1]})
    inside = merged_definition(one.definition(), Study("m", settings={"latent": 8}, grid={"lam": [1.0], "seed": [0]}).definition())
    assert inside["grid"] == {"seed": [0, 1]} and len(inside["requests"]) == 1
    # a definition saved before requests were kept is read as one request
    assert recorded_requests(narrow.definition()) == [
        {"settings": narrow.definition()["settings"], "grid": narrow.definition()["grid"], "exclude": []}]


@pytest.mark.parametrize("text", ["nan", "inf", "-inf", "NaN"])
def test_a_numeric_setting_that_is_not_finite_is_refused_when_read(text):
    """`lam=nan` was accepted and recorded: the config JSON then held NaN (not JSON) and
    harness analyze crashed on it."""
    with pytest.raises(StudyError, match=f"bad value '{text}' for lam: expected a finite number"):
        Study("s", grid={"lam": [0.0]}).with_overrides([f"lam={text}"])
    with pytest.raises(StudyError, match="expected a finite number"):
        Study("s", settings={"entropy.eps": float(text)})
