"""Issue #30.2: a different study file reusing a recorded study's name is refused (one
line, exit 2, nothing recorded) unless --replace-definition."""

import json
import sqlite3
from pathlib import Path

from harness.cli import main

STUDY = '''from harness.study import Study
study = Study(name="reused", settings={{"dataset": "digits", "train.max_epochs": 1, "latent": 8}}, grid={{"seed": {seeds}}})
'''


def definition(db: Path):
    with sqlite3.connect(db) as conn:
        return json.loads(conn.execute("SELECT definition FROM studies WHERE name = 'reused'").fetchone()[0])


def test_a_different_study_file_with_a_recorded_name_is_refused(tmp_path, capsys):
    first, second = tmp_path / "a.py", tmp_path / "b.py"
    first.write_text(STUDY.format(seeds="[0]"))
    second.write_text(STUDY.format(seeds="[0, 1]") + "# another study\n")
    db = tmp_path / "x.db"
    url = f"sqlite:///{db}"
    assert main(["run", str(first), "--db", url, "-q"]) == 0
    assert main(["run", str(first), "--db", url, "-q", "seed=0"]) == 0  # the same file, narrowed: fine
    before = definition(db)
    capsys.readouterr()
    assert main(["run", str(second), "--db", url, "-q"]) == 2
    err = capsys.readouterr().err.strip()
    assert "--replace-definition" in err and len(err.splitlines()) == 1
    assert definition(db) == before
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT count(*) FROM replications").fetchone()[0] == 1
    assert main(["run", str(second), "--db", url, "-q", "--replace-definition"]) == 0
    assert definition(db)["source"] == second.read_text()


def test_editing_comments_or_docstrings_of_the_same_study_is_not_another_study(tmp_path):
    path = tmp_path / "a.py"
    path.write_text(STUDY.format(seeds="[0]"))
    url = f"sqlite:///{tmp_path / 'x.db'}"
    assert main(["run", str(path), "--db", url, "-q"]) == 0
    path.write_text('"""Now with a docstring."""\n' + STUDY.format(seeds="[0]") + "# and a comment\n")
    assert main(["run", str(path), "--db", url, "-q"]) == 0
