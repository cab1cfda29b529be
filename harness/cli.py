"""The ``harness`` command: thin argument parsing that calls one function per subcommand.

Heavy libraries (torch, pandas, SQLAlchemy) are imported inside the subcommands so that
``harness --help`` answers at once. Errors a user can cause are printed as one line and
exit non-zero, never as a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

RUN_EPILOG = """overrides (key=value, dotted keys as in the study's Config):
  lam=0,1e-3          a list of values sets a grid axis
  seed=0:10           an integer range start:stop (0..9) sets a grid axis
  latent=80           one value narrows a grid axis, or fixes a setting
  train.max_epochs=2  any training, entropy, data or net setting
  arch=32-64          CNN widths, one per block
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="harness", description="Replicate machine-learning papers statistically."
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    run = sub.add_parser(
        "run",
        help="train every replication of a study that the database does not hold yet",
        epilog=RUN_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run.add_argument("study", help="a study file, e.g. studies/quickstart.py")
    run.add_argument("overrides", nargs="*", help="key=value overrides (see below)")
    _db_arg(run)
    run.add_argument("--data-dir", help="where data sets live (default: $HARNESS_DATA_DIR, else ./data)")
    run.add_argument("--device", default=None, help="torch device to train on (default: cuda if visible, else cpu)")
    run.add_argument("--dry-run", action="store_true", help="list what would be trained, train nothing")
    run.add_argument("-q", "--quiet", action="store_true", help="no progress bar; failures and the summary only")

    status = sub.add_parser("status", help="replications done / failed / diverged / remaining per study")
    status.add_argument("study", nargs="*", help="study names or files (default: every study in the database)")
    _db_arg(status)

    analyze = sub.add_parser("analyze", help="write each study's report, tables and figures")
    analyze.add_argument("study", nargs="*", help="study names (default: every study in the database)")
    _db_arg(analyze)
    analyze.add_argument("--out", default="results", help="output folder (default: results/)")

    # Overrides may stand before or after options (harness run s.py --db X lam=0): argparse
    # leaves those after an option unparsed, so they are collected here.
    args, extra = parser.parse_known_args(argv)
    if args.command == "run":
        args.overrides += [e for e in extra if "=" in e and not e.startswith("-")]
        extra = [e for e in extra if not ("=" in e and not e.startswith("-"))]
    if extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if args.command is None:
        parser.print_help()
        return 0
    from harness.errors import UserError

    try:
        return {"run": cmd_run, "status": cmd_status, "analyze": cmd_analyze}[args.command](args)
    except UserError as err:
        print(f"harness {args.command}: error: {err}", file=sys.stderr)
        return 2


def _db_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--db",
        default=os.environ.get("HARNESS_DB", "sqlite:///results/harness.db"),
        help="SQLAlchemy database URL (default: $HARNESS_DB, else sqlite:///results/harness.db)",
    )


def cmd_run(args) -> int:
    from harness.study import load_study
    from harness.schedule import run_study

    study = load_study(args.study).with_overrides(args.overrides)
    return run_study(
        study,
        db=args.db,
        data_dir=args.data_dir,
        device=args.device,
        dry_run=args.dry_run,
        quiet=args.quiet,
    )


def cmd_status(args) -> int:
    from pathlib import Path

    from harness.store import Store
    from harness.study import load_study

    store = Store(args.db)
    names = args.study or store.studies()
    if not names:
        print(f"no studies recorded in {args.db}")
        return 0
    print(f"{'study':<28} {'grid':>6} {'done':>6} {'diverged':>8} {'failed':>6} {'remaining':>9} {'wall time':>10}")
    for name in names:
        if name.endswith(".py") or Path(name).is_file():  # a study file: count against its grid
            study = load_study(name)
            name, grid_ids = study.name, {r.id for r in study.replications()}
        else:
            definition = store.study_definition(name)
            grid_ids = None if not definition.get("grid") else _grid_ids(definition)
        frame = store.frame(name)
        counts = frame["status"].value_counts() if len(frame) else {}
        finished = set(frame.loc[frame["status"].isin(["done", "diverged"]), "id"]) if len(frame) else set()
        total = len(grid_ids) if grid_ids is not None else len(frame)
        remaining = len(grid_ids - finished) if grid_ids is not None else 0
        wall = frame["wall_s"].sum() if len(frame) else 0.0
        print(
            f"{name:<28} {total:>6} {counts.get('done', 0):>6} {counts.get('diverged', 0):>8} "
            f"{counts.get('failed', 0):>6} {remaining:>9} {_duration(wall):>10}"
        )
    return 0


def _grid_ids(definition: dict) -> set[str]:
    from harness.study import Study

    study = Study(definition["name"], settings=definition["settings"], grid=definition["grid"])
    return {r.id for r in study.replications()}


def _duration(seconds: float) -> str:
    return time.strftime("%H:%M:%S", time.gmtime(float(seconds)))


def cmd_analyze(args) -> int:
    from pathlib import Path

    from harness.analysis.report import analyze
    from harness.store import Store

    paths = analyze(Store(args.db), args.study or None, Path(args.out))
    for path in paths:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
