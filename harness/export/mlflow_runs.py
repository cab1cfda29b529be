"""A study's replications as MLflow runs, in any tracking store MLflow opens (a ``file:``
folder, ``sqlite:``, a tracking server, Databricks).

Each replication is one run in the experiment named after the study: params are its
config (every dotted key, as text), metrics its final metrics (under their own names, so
``metrics.val_mse < 0.05`` searches work) and its per-epoch history (``epoch/<name>``,
step = epoch; kept apart because a final metric is the best epoch's, not the last's),
tags its status and provenance (``harness.replication_id``, ``harness.status``,
``harness.host``, ``harness.git_commit``... and MLflow's own ``mlflow.source.git.commit``).

A run is written with a handful of ``log_batch`` calls (MLflow's limits: 1000 metrics,
100 params, 100 tags and 1000 entities a call), not a call per value. Exporting again
adds only what is new: a replication whose run is there, finished and from the same
recording, is skipped; a run an interrupted export left unfinished, or one of a
replication recorded again since (``--rerun-failed``), is replaced.

mlflow is an optional extra, imported only here and only when an export runs."""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import time
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import urlsplit

from harness.errors import UserError

MLFLOW_HINT = "the MLflow export needs mlflow: pip install -e '.[mlflow]'"
ID_TAG = "harness.replication_id"
STUDY_TAG = "harness.study"
STATUS_TAG = "harness.status"
FINISHED_TAG = "harness.finished_at"
HISTORY_PREFIX = "epoch/"
# MLflow's per-call limits (mlflow.utils.validation); older clients do not split a batch themselves
MAX_METRICS, MAX_PARAMS_TAGS, MAX_ENTITIES = 1000, 100, 1000
MAX_TAG_CHARS = 8000  # a traceback's end is what tells, so a longer one keeps its last characters


@dataclass
class _Columns:
    """Which of Store.frame's columns are the config (params) and provenance (tags); the
    rest but id, study and status are metrics."""

    config: list[str]
    provenance: list[str]


@dataclass
class ExportSummary:
    exported: int
    skipped: int
    replaced: int
    experiment: str
    shown_uri: str

    def line(self) -> str:
        again = f"; {self.skipped} already there" if self.skipped else ""
        replaced = f", {self.replaced} of them replacing an older or unfinished run" if self.replaced else ""
        runs = "run" if self.exported == 1 else "runs"
        return (f"{self.exported} {runs} exported to MLflow experiment {self.experiment!r} at "
                f"{self.shown_uri}{replaced}{again}")


def export_to_mlflow(store, study: str, uri: str, experiment: str | None = None) -> ExportSummary:
    """Every recorded replication of ``study`` as a run of ``experiment`` (default: the
    study's name) in the MLflow tracking store at ``uri``. A password in ``uri`` never
    reaches the output, errors included."""
    from harness.store.urls import masked_url

    shown = masked_url(uri)
    client, entities, errors = _open(uri, shown)
    try:
        return _export(client, entities, store, study, experiment or study, shown)
    except errors as err:  # a store it cannot write, a server that went away
        raise UserError(f"MLflow at {shown}: {_scrub(_first_line(err), uri, shown)}") from None


def _open(uri: str, shown: str):
    """(MlflowClient on ``uri``, mlflow.entities, the errors a store raises), or one line
    saying why the store cannot be opened."""
    try:
        import mlflow.entities
        import sqlalchemy
        from mlflow import MlflowClient
        from mlflow.exceptions import MlflowException
    except ImportError:
        raise UserError(MLFLOW_HINT) from None
    # MLflow 3 refuses its file store unless opted in; naming a folder is opting in.
    if urlsplit(uri).scheme in ("", "file"):
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    for name in ("mlflow", "alembic"):  # a database store logs a line per schema migration and per retry
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        client = MlflowClient(tracking_uri=uri)
        client.search_experiments(max_results=1)  # a store opens lazily: fail here, not mid-export
    except ImportError as err:  # mlflow-skinny without alembic, or a database's driver
        need = MLFLOW_HINT if err.name == "alembic" else f"the MLflow store needs the Python package {err.name}"
        raise UserError(f"{need} (for {shown})") from None
    except Exception as err:  # the user's URI meeting the world (no such server, bad path, refused login)
        raise UserError(f"MLflow at {shown}: {_scrub(_first_line(err), uri, shown)}") from None
    return client, mlflow.entities, (MlflowException, sqlalchemy.exc.SQLAlchemyError, OSError)


def _export(client, entities, store, study: str, name: str, shown: str) -> ExportSummary:
    from tqdm import tqdm

    experiment_id = _experiment(client, name)
    frame = store.frame(study)
    config_keys = [c for c in store.configs(study).columns if c not in ("id", "status")]
    columns = _Columns(config_keys, [c for c in _provenance_columns() if c in frame.columns])
    history = {rep: rows for rep, rows in store.history(study).groupby("id")}
    machines = store.hosts()
    axes = list(store.study_definition(study).get("grid", {}))
    present = _runs_by_replication(client, experiment_id, study)
    exported = skipped = replaced = 0
    # E1's 672 runs take about two minutes into a SQLite store: a terminal sees them go by
    for row in tqdm(frame.to_dict("records"), unit="run", leave=False, disable=not sys.stderr.isatty()):
        old = present.get(row["id"])
        if old is not None:
            if _same(old, row):
                skipped += 1
                continue
            client.delete_run(old.info.run_id)
            replaced += 1
        _write_run(client, entities, experiment_id, row, columns, history.get(row["id"]),
                   machines.get(row.get("host")), axes)
        exported += 1
    return ExportSummary(exported, skipped, replaced, name, shown)


def _experiment(client, name: str) -> str:
    found = client.get_experiment_by_name(name)
    if found is None:
        return client.create_experiment(name)
    if found.lifecycle_stage == "deleted":
        raise UserError(f"MLflow experiment {name!r} is deleted: restore it, or give --experiment another name")
    return found.experiment_id


def _runs_by_replication(client, experiment_id: str, study: str) -> dict:
    """{replication id: its run} of the runs the harness exported from ``study`` into the
    experiment (which --experiment may share between studies). Filtered here, not by a
    search filter: a tag with dots needs quoting that stores differ on."""
    runs, token = {}, None
    while True:
        page = client.search_runs([experiment_id], max_results=1000, page_token=token)
        for run in page:
            if run.data.tags.get(STUDY_TAG) == study and ID_TAG in run.data.tags:
                runs[run.data.tags[ID_TAG]] = run
        token = page.token
        if not token:
            return runs


def _same(run, row: dict) -> bool:
    """Whether ``run`` is a finished export of this very recording of the replication."""
    tags = run.data.tags
    return (run.info.status != "RUNNING" and tags.get(STATUS_TAG) == row["status"]
            and tags.get(FINISHED_TAG, "") == _text(row.get("finished_at")))


def _write_run(client, entities, experiment_id, row, columns, history, machine, axes) -> None:
    """One replication as one run: created, filled by batches, terminated."""
    finished = _ms(row.get("finished_at"))
    named = [f"{k}={_text(row[k])}" for k in axes if k in row]
    run = client.create_run(
        experiment_id, start_time=_ms(row.get("started_at")), run_name=" ".join(named) or row["id"],
        # the id first: an export cut short leaves a RUNNING run that the next export replaces
        tags={ID_TAG: row["id"], STUDY_TAG: row["study"]})
    metrics = _metrics(entities, row, columns, history, finished)
    # a key the replication's config lacks (recorded before the setting existed) is left out, not ''
    params = [entities.Param(k, _text(row[k])) for k in columns.config if not _missing(row[k])]
    tags = [entities.RunTag(k, v) for k, v in _tags(row, columns.provenance, machine).items()]
    for batch in _batches(metrics, params, tags):
        client.log_batch(run.info.run_id, *batch)
    client.set_terminated(run.info.run_id, status="FAILED" if row["status"] == "failed" else "FINISHED",
                          end_time=finished)


def _metrics(entities, row, columns, history, timestamp: int) -> list:
    """Final metrics (and wall_s) at step 0, then the history at step = epoch. Non-finite
    values are left out: MLflow keeps NaN as a flag and ±inf as ±max float, so an absent
    value (a metric that does not apply, a diverged loss) reads truer."""
    skip = {"id", "study", "status", *columns.config, *columns.provenance}
    metrics = [entities.Metric(k, float(v), timestamp, 0) for k, v in row.items()
               if k not in skip and _finite(v)]
    if history is not None:
        for column in history.columns.drop(["id", "epoch"]):
            metrics += [entities.Metric(HISTORY_PREFIX + column, float(v), timestamp, int(e))
                        for e, v in zip(history["epoch"], history[column]) if _finite(v)]
    return metrics


def _provenance_columns() -> list[str]:
    """The replications table's text columns about where and how a result was made
    (host, device, versions, commit, times, error): tags. wall_s is a metric."""
    from harness.store.schema import replications_table

    return [c for c in replications_table.c.keys() if c not in ("pk", "study", "id", "status", "config", "wall_s")]


def _tags(row: dict, provenance: list[str], machine: dict | None) -> dict[str, str]:
    tags = {STATUS_TAG: row["status"]}
    for key in provenance:
        if _text(row[key]):
            tags[f"harness.{key}"] = _text(row[key])[-MAX_TAG_CHARS:]
    if _text(row.get("git_commit")):
        tags["mlflow.source.git.commit"] = _text(row["git_commit"])  # what MLflow's UI shows as the source version
    if machine:
        tags["harness.machine"] = json.dumps(machine, sort_keys=True)[:MAX_TAG_CHARS]
    return tags


def _batches(metrics: list, params: list, tags: list):
    """(metrics, params, tags) chunks within MLflow's per-call limits: params and tags go
    first, and metrics fill what the entity limit leaves."""
    while metrics or params or tags:
        p, params = params[:MAX_PARAMS_TAGS], params[MAX_PARAMS_TAGS:]
        t, tags = tags[:MAX_PARAMS_TAGS], tags[MAX_PARAMS_TAGS:]
        room = min(MAX_METRICS, MAX_ENTITIES - len(p) - len(t))
        m, metrics = metrics[:room], metrics[room:]
        yield m, p, t


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _missing(value) -> bool:
    """None, or the NaN a pandas column holds where nothing was recorded."""
    return value is None or (isinstance(value, float) and math.isnan(value))


def _text(value) -> str:
    """A config value or provenance field as MLflow text: numbers as Python writes them,
    nothing recorded as ''."""
    return "" if _missing(value) else str(value)


def _ms(stamp) -> int:
    """An ISO time recorded by the harness as Unix milliseconds (now, where none was recorded)."""
    try:
        return int(datetime.fromisoformat(stamp).timestamp() * 1000)
    except (TypeError, ValueError):
        return int(time.time() * 1000)


def _first_line(err: Exception) -> str:
    text = getattr(err, "message", None) or str(err)
    return text.strip().splitlines()[0] if text.strip() else type(err).__name__


def _scrub(text: str, uri: str, shown: str) -> str:
    """``text`` with the URI's password replaced, wherever a store's error quoted it."""
    text = text.replace(uri, shown)
    password = urlsplit(uri).password
    return text.replace(password, "***") if password else text
