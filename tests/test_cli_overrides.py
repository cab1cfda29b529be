"""The command line's override grammar: ``key=value`` and Hydra's ``--key=value`` beside the
real options, what ``harness run --help`` says of it, and the README's Python recipe."""

import re
from pathlib import Path

import pytest

from harness.cli import main
from harness.study.overrides import key_value_words

ROOT = Path(__file__).resolve().parents[1]


def dry_run_ids(capsys, *args) -> list[str]:
    """The replication ids `harness run --dry-run` lists, in its order."""
    capsys.readouterr()
    assert main(["run", *map(str, args)]) == 0
    out = capsys.readouterr().out
    return re.findall(r"^  ([0-9a-f]{16})  ", out, flags=re.M)


def test_dashed_overrides_are_the_same_replications_as_plain_ones(tmp_path, capsys):
    db = f"sqlite:///{tmp_path}/h.db"
    plain = dry_run_ids(capsys, "studies/quickstart.py", "lam=0,1", "seed=0:2", "train.max_epochs=2", "--db", db, "--dry-run")
    assert len(plain) == 2 * 2 * 2  # lam × seed × the study's two latent widths
    dashed = dry_run_ids(capsys, "studies/quickstart.py", "--lam=0,1", "--seed=0:2", "--train.max_epochs=2",
                         "--db", db, "--dry-run")
    assert dashed == plain
    # before the study, between options, beside the options' own --option=value spelling
    mixed = dry_run_ids(capsys, "--lam=0,1", "studies/quickstart.py", "--db=" + db, "--seed=0:2", "--workers=1",
                        "--dry-run", "train.max_epochs=2")
    assert mixed == plain
    assert not (tmp_path / "h.db").exists()  # --dry-run still a dry run


def test_a_preset_and_a_dashed_preset_are_the_same(tmp_path, capsys):
    db = f"sqlite:///{tmp_path}/h.db"
    args = ["studies/quickstart.py", "seed=0", "--db", db, "--dry-run"]
    assert dry_run_ids(capsys, *args, "--protocol=keras") == dry_run_ids(capsys, *args, "protocol=keras")


@pytest.mark.parametrize("word, message", [
    ("--nosuch=1", "--nosuch=1 is neither an option nor a setting (--help lists both)"),
    ("--lamb=1", "did you mean --lam=1?"),
    ("--retry=2", "did you mean --retries=2?"),
    ("--train.max_epoch=2", "did you mean 'train.max_epochs'"),  # dotted: a setting, checked as one
])
def test_an_unknown_dashed_word_is_one_line_naming_the_closest(tmp_path, capsys, word, message):
    assert main(["run", "studies/quickstart.py", "--db", f"sqlite:///{tmp_path}/h.db", word]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "h.db").exists()


def test_words_are_sorted_into_overrides_and_the_rest():
    words = ["lam=0", "--latent=8", "--train.lr=0.1", "--protocol=keras", "--worker=2", "-q", "--nosuch=1", "x"]
    assert key_value_words(words) == (["lam=0", "latent=8", "train.lr=0.1", "protocol=keras"],
                                      ["--worker=2", "-q", "--nosuch=1", "x"])


def test_run_help_says_which_override_grammar_it_accepts(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["run", "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    for spelling in ("key=value or --key=value", "lam=0,1e-3", "seed=0:10", "--train.max_epochs=2",
                     "protocol=keras", "placement=[1,5],first", "train.max_epochs", "entropy.eps"):
        assert spelling in out, spelling


def test_the_readme_recipe_for_reading_results_from_python_runs(monkeypatch):
    """The README's Python block, run as written against the committed E1 database."""
    readme = (ROOT / "README.md").read_text()
    blocks = [b for b in re.findall(r"```python\n(.*?)```", readme, flags=re.S) if "from harness.store import Store" in b]
    assert len(blocks) == 1
    monkeypatch.chdir(ROOT)
    names: dict = {}
    exec(compile(blocks[0], "README.md", "exec"), names)
    runs, epochs = names["runs"], names["epochs"]
    assert len(runs) and {"id", "status", "lam", "val_mse"} <= set(runs.columns)
    assert set(epochs["id"]) <= set(runs["id"]) and "val_loss" in epochs
