"""The ``harness export`` subcommand: its options, and one study's results written as a
table (CSV or Parquet, a row per replication or per epoch) or sent to MLflow.

pandas, pyarrow and mlflow are imported when the command runs, not when ``harness --help``
lists it."""

from __future__ import annotations

import argparse
import sys

from harness.errors import UserError

FORMATS = ("csv", "parquet")
PARQUET_HINT = "Parquet needs pyarrow: pip install -e '.[parquet]'"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``harness export`` but ``--db``, which the CLI adds as every command's."""
    parser.add_argument("study", help="a study name in the database")
    parser.add_argument("--out", default="-", help="the file to write (default: - , standard output)")
    parser.add_argument(
        "--format", choices=FORMATS, default=None,
        help="csv, or parquet (needs the parquet extra) (default: parquet when --out ends in .parquet or .pq, else csv)")
    parser.add_argument(
        "--epochs", action="store_true",
        help="a row per replication and epoch (its config, then the per-epoch losses) instead of a row per "
        "replication (its config, final metrics and provenance)")
    mlflow = parser.add_argument_group(
        "MLflow (needs the mlflow extra)",
        "each replication as an MLflow run: params its config, metrics its final metrics and per-epoch history "
        "(epoch/<name>, step = epoch), tags its status and provenance. Runs already exported are skipped, so "
        "exporting again adds only what is new")
    mlflow.add_argument("--mlflow", metavar="URI",
                        help="an MLflow tracking URI: sqlite:///mlflow.db, file:./mlruns, http://host:5000, databricks")
    mlflow.add_argument("--experiment", metavar="NAME", help="the MLflow experiment (default: the study's name)")


def run(args: argparse.Namespace) -> int:
    from harness.store import Store, StoreError

    if args.mlflow is None and args.experiment is not None:
        raise UserError("--experiment names an MLflow experiment: give --mlflow URI too")
    if args.mlflow is not None and (args.out != "-" or args.format or args.epochs):
        raise UserError("--mlflow writes runs, not a file: drop --out, --format and --epochs (the history is in the runs)")
    store = Store(args.db, reader=True)
    store.study_definition(args.study)  # an unknown name is a one-line error listing the known ones
    if not store.counts(args.study):
        raise StoreError(f"study {args.study!r} has nothing recorded in {store.shown_url}")
    if args.mlflow is not None:
        from harness.export.mlflow_runs import export_to_mlflow

        summary = export_to_mlflow(store, args.study, args.mlflow, args.experiment)
        print(summary.line())
        return 0
    if args.epochs:  # configs, not the whole frame: final metrics do not go on every epoch's row
        table = store.configs(args.study).merge(store.history(args.study), on="id")
    else:
        table = store.frame(args.study)
    fmt = args.format or ("parquet" if args.out.lower().endswith((".parquet", ".pq")) else "csv")
    write_table(table, args.out, fmt)
    if args.out != "-":
        print(f"{args.out}: {len(table)} rows", file=sys.stderr)
    return 0


def write_table(table, out: str, fmt: str) -> None:
    """``table`` (a DataFrame) as CSV or Parquet to the file ``out``, or ``-`` for standard output."""
    if fmt == "parquet":
        try:
            import pyarrow  # noqa: F401  (pandas names no extra in its own error)
        except ImportError:
            raise UserError(PARQUET_HINT) from None
        if out == "-" and sys.stdout.isatty():
            raise UserError("Parquet is binary: give --out FILE.parquet, or pipe it into a file")
    if out == "-":  # outside the try: a closed pipe (`| head`) ends quietly in the CLI's main
        if fmt == "parquet":
            table.to_parquet(sys.stdout.buffer, index=False)
        else:
            table.to_csv(sys.stdout, index=False)
        return
    try:
        if fmt == "parquet":
            table.to_parquet(out, index=False)
        else:
            table.to_csv(out, index=False)
    except OSError as err:
        raise UserError(f"cannot write {out}: {err.strerror or err}") from None
