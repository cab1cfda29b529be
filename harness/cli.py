"""The ``harness`` command: a table of subcommands, each an ``add_arguments(parser)`` /
``run(args) -> int`` pair (``bench`` and ``profile`` keep theirs in their own modules).

Heavy libraries (torch, pandas, SQLAlchemy) are imported inside the subcommands so that
``harness --help`` answers at once. Errors a user can cause are printed as one line and
exit non-zero, never as a traceback.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import signal
import sys
from typing import Callable, NamedTuple

RUN_EPILOG = """overrides: key=value or --key=value (dotted keys as in the study's Config), before or after options:
  lam=0,1e-3            a list of values sets a grid axis
  seed=0:10             an integer range start:stop (0..9) sets a grid axis
  latent=80             one value narrows a grid axis, or fixes a setting
  train.max_epochs=2    any training, entropy, data or net setting
  --train.max_epochs=2  the same, spelled as Hydra and nanoGPT spell it
  arch=32-64            CNN widths, one per block
  placement=[1,5],first brackets keep a value's own commas (two placements)
  protocol=keras        a preset: several settings at once (protocol=default,keras is a grid axis)
an unknown key is an error naming the closest. The settings:
"""


class Subcommand(NamedTuple):
    """One ``harness`` subcommand: its help line, its arguments, and what it runs."""

    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]  # the exit code; a UserError is one line and exit 2
    key_values: str | None = None  # the argument that takes key=value words wherever they stand
    parser_options: dict | None = None  # for its parser (epilog, formatter)


def subcommands() -> dict[str, Subcommand]:
    """Every subcommand by name, in the order ``harness --help`` lists them."""
    from harness import export, profile  # standard library only at import
    from harness.perf import bench

    return {
        "run": Subcommand(
            "train every replication of a study that the database does not hold yet", add_run_arguments, cmd_run,
            "overrides", {"epilog": _run_epilog(), "formatter_class": argparse.RawDescriptionHelpFormatter}),
        "status": Subcommand("replications done / failed / diverged / remaining per study",
                             add_status_arguments, cmd_status),
        "analyze": Subcommand("write each study's report, tables and figures", add_analyze_arguments, cmd_analyze),
        "export": Subcommand(
            "one study's results for your own analysis: CSV or Parquet, a row per replication or per epoch; "
            "or a run per replication in MLflow",
            add_export_arguments, export.run),
        "plan": Subcommand("how many seeds a comparison needs, from the spread of the replications recorded so far",
                           add_plan_arguments, cmd_plan, "at"),
        "compact": Subcommand(
            "make a SQLite results database one small self-contained file, to commit or share (no run may be using it)",
            add_compact_arguments, cmd_compact),
        "bench": Subcommand("how fast this machine trains a study: plain one-at-a-time loop vs the packed path",
                            bench.add_arguments, bench.run, "overrides"),
        "profile": Subcommand(
            "per-layer, per-filter entropy change of a model, trained vs random (Fig. 1): PNG and CSV",
            profile.add_arguments, profile.run),
    }


def _run_epilog() -> str:
    import textwrap

    from harness.study.settings import KEYS  # standard library only at import

    return RUN_EPILOG + textwrap.fill(", ".join(KEYS), width=100, initial_indent="  ", subsequent_indent="  ")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="harness", description="Replicate machine-learning papers statistically."
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands = subcommands()
    for name, command in commands.items():
        command.add_arguments(sub.add_parser(name, help=command.help, **(command.parser_options or {})))

    # Overrides (and plan's key=value) may stand before or after options (harness run s.py --db X lam=0): argparse
    # leaves those after an option unparsed, so they are collected here.
    args, extra = parser.parse_known_args(argv)
    key_values = commands[args.command].key_values if args.command else None
    if key_values:
        from harness.study.overrides import key_value_words, unknown_word  # the study package imports nothing heavy

        pairs, extra = key_value_words(extra)
        setattr(args, key_values, getattr(args, key_values) + pairs)
        options = [o for action in sub.choices[args.command]._actions for o in action.option_strings]
        unknown = [unknown_word(e, options) for e in extra if e.startswith("--") and "=" in e]
        if unknown:  # --nosuch=1: neither an option nor a setting: one line naming the closest of either
            print(f"harness {args.command}: error: {unknown[0]}", file=sys.stderr)
            return 2
    if extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if args.command is None:
        parser.print_help()
        return 0
    from harness.errors import UserError

    try:
        return commands[args.command].run(args)
    except UserError as err:
        print(f"harness {args.command}: error: {err}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `harness run --dry-run ... | head`: the reader stopped, not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so the exit's flush is quiet
        return 0


def _db_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--db",
        default=os.environ.get("HARNESS_DB", "sqlite:///results/harness.db"),
        help="SQLAlchemy database URL, or the path of a SQLite file (default: $HARNESS_DB, else "
        "sqlite:///results/harness.db)",
    )


def add_run_arguments(run: argparse.ArgumentParser) -> None:
    from harness.backends import BACKENDS, backends_help  # standard library only at import

    run.add_argument("study", help="a study file, e.g. studies/quickstart.py")
    run.add_argument("overrides", nargs="*", help="key=value overrides (see below)")
    _db_arg(run)
    run.add_argument("--data-dir", help="where data sets live (default: $HARNESS_DATA_DIR, else ./data)")
    run.add_argument("--dry-run", action="store_true", help="list what would be trained, train nothing")
    where = run.add_argument_group("workers and devices")
    where.add_argument(
        "--devices", "--device", metavar="LIST", type=_comma_list, default=None,
        help="torch devices, comma-separated: cuda (every GPU), cuda:0,cuda:1, cpu; list one several times for "
        "several workers on it (cpu,cpu records cpu:0 and cpu:1) (default: every visible GPU, else cpu)",
    )
    count = where.add_mutually_exclusive_group()
    count.add_argument(
        "--workers-per-device", type=_workers_per_device, default=None, metavar="K",
        help="workers on each listed device (default: auto, on the CPU one per core, on a GPU 4, "
        "no more than there are models to train or than memory holds)",
    )
    count.add_argument(
        "--workers", type=int, default=None, metavar="N", help="workers in all, dealt to the devices in turn"
    )
    where.add_argument(
        "--backend", choices=BACKENDS.names(), default=None,
        help=f"{backends_help()}; default: processes for more than one worker, else inprocess",
    )
    where.add_argument(
        "--scheduler", metavar="ADDRESS", help="a running Dask scheduler, e.g. tcp://host:8786 (implies --backend dask)"
    )
    where.add_argument(
        "--pack-size", type=_pack_size, default=0, metavar="K",
        help="train up to K models of replications that differ only in lam, seed and stopping rule together as "
        "one vectorised model (replications that differ only in their stopping rule share one model); "
        "1 = one at a time (default: auto, groups split only to give every worker a pack, at most 70 a pack)",
    )
    where.add_argument(
        "--time-limit", type=_duration, default=None, metavar="T",
        help="start no new replications after T (e.g. 90m, 2h30m, 600s), let those training finish, "
        "and exit 0; the same command later trains the rest (for batch jobs with a wall-clock limit)",
    )
    failures = run.add_argument_group("failures")
    failures.add_argument(
        "--retries", type=int, default=1, metavar="N", help="retry a replication that fails up to N times (default 1)"
    )
    failures.add_argument(
        "--rerun-failed", action="store_true", help="also train the replications earlier runs recorded as failed"
    )
    run.add_argument("-y", "--yes", action="store_true",
                     help="train a grid of over 10,000 replications without asking (asked only when stdin is a terminal)")
    run.add_argument("--replace-definition", action="store_true",
                     help="the database holds a study of this name from another study file: replace its definition")
    output = run.add_argument_group("output")
    output.add_argument("-q", "--quiet", action="store_true", help="no progress display; failures and the summary only")
    output.add_argument(
        "--log", choices=("auto", "bar", "plain"), default="auto",
        help="progress as a live bar, or plain: one line per result, for batch jobs' logs (default: bar on a terminal)",
    )


def cmd_run(args) -> int:
    from harness.schedule import RunOptions, run_study
    from harness.study import load_study

    study = load_study(args.study).with_overrides(args.overrides)
    options = RunOptions(
        devices=args.devices,
        workers_per_device=args.workers_per_device,
        workers=args.workers,
        backend=args.backend,
        scheduler=args.scheduler,
        retries=args.retries,
        rerun_failed=args.rerun_failed,
        replace_definition=args.replace_definition,
        yes=args.yes,
        pack_size=args.pack_size,
        log="quiet" if args.quiet else args.log,
        time_limit_s=args.time_limit,
    )
    return run_study(study, db=args.db, data_dir=args.data_dir, options=options, dry_run=args.dry_run)


def _workers_per_device(text: str) -> int | None:
    """--workers-per-device: an integer (checked with the other worker counts), or auto (None)."""
    if text == "auto":
        return None
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer or auto, not {text!r}") from None


def _pack_size(text: str) -> int:
    """--pack-size: a positive integer, or auto (0)."""
    if text == "auto":
        return 0
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer or auto, not {text!r}")
    return int(text)


def _duration(text: str) -> float:
    """--time-limit: 2h30m, 90m, 45s, 1.5h, or plain seconds."""
    match = re.fullmatch(r"(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s?)?", text.strip())
    if not text.strip() or match is None:
        raise argparse.ArgumentTypeError(f"expected a duration like 90m, 2h30m or 600s, not {text!r}")
    hours, minutes, seconds = (float(g) if g else 0.0 for g in match.groups())
    return hours * 3600 + minutes * 60 + seconds


def _comma_list(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def add_status_arguments(status: argparse.ArgumentParser) -> None:
    status.add_argument("study", nargs="*", help="study names or files (default: every study in the database)")
    _db_arg(status)


def cmd_status(args) -> int:
    from harness.schedule import format_status, study_status
    from harness.store import Store

    store = Store(args.db, reader=True)
    names = args.study or store.studies()
    if not names:
        print(f"no studies recorded in {store.shown_url}")
        return 0
    print(format_status([study_status(store, name) for name in names]))
    return 0


def add_analyze_arguments(analyze: argparse.ArgumentParser) -> None:
    analyze.add_argument("study", nargs="*", help="study names (default: every study in the database)")
    _db_arg(analyze)
    analyze.add_argument("--out", default="results", help="output folder (default: results/)")


def cmd_analyze(args) -> int:
    from pathlib import Path

    from harness.analysis.report import analyze
    from harness.errors import UserError
    from harness.store import Store

    try:
        paths = analyze(Store(args.db, reader=True), args.study or None, Path(args.out))
    except OSError as err:  # --out is a file, or a folder this user cannot write
        raise UserError(f"cannot write the report to {err.filename or args.out}: {err.strerror or err}") from None
    for path in paths:
        print(path)
    return 0


def add_export_arguments(export: argparse.ArgumentParser) -> None:
    from harness.export import add_arguments  # standard library only at import

    add_arguments(export)
    _db_arg(export)


def add_plan_arguments(plan: argparse.ArgumentParser) -> None:
    plan.add_argument("study", help="a study name in the database")
    plan.add_argument("metric", help="a metric of its results, e.g. val_mse or stop_epoch")
    plan.add_argument("at", nargs="*", metavar="key=value",
                      help="restrict to these settings, e.g. latent=180 (default: one table row per slice)")
    _db_arg(plan)
    plan.add_argument("--by", default="lam", help="the factor whose levels are compared with its lowest (default: lam)")
    size = plan.add_mutually_exclusive_group()
    size.add_argument("--effect", type=float, help="the difference to detect, in metric units")
    size.add_argument("--rel-effect", type=float,
                      help="the difference to detect as a fraction of the lowest level's mean, e.g. 0.1")
    plan.add_argument("--alpha", type=float, default=0.01, help="two-sided significance level (default 0.01, the paper's)")
    plan.add_argument("--power", type=float, default=0.8, help="probability of detecting it (default 0.8)")
    plan.add_argument("--out", help="also write the table as CSV to this file")


def cmd_plan(args) -> int:
    from harness.analysis import render
    from harness.analysis.planning import caveats, plan_seeds
    from harness.errors import UserError
    from harness.store import Store, StoreError

    if not (0 < args.alpha < args.power < 1):
        raise UserError("--alpha and --power must be between 0 and 1, --power above --alpha")
    for name, value in (("--effect", args.effect), ("--rel-effect", args.rel_effect)):
        if value is not None and not (math.isfinite(value) and value != 0):
            raise UserError(f"{name} must be a finite nonzero difference, not {value:g}")
    store = Store(args.db, reader=True)
    definition = store.study_definition(args.study)  # an unknown name: one line listing the known ones
    frame = store.frame(args.study)
    if not len(frame):
        raise StoreError(f"study {args.study!r} has nothing recorded in {store.shown_url}")
    table = plan_seeds(definition, frame, args.metric, args.by, args.at, effect=args.effect,
                       rel_effect=args.rel_effect, alpha=args.alpha, power=args.power)
    goal = ("" if args.effect is None and args.rel_effect is None else
            f"; seeds: per level, to find a difference of {args.effect:g} {args.metric}" if args.effect is not None else
            f"; seeds: per level, to find a difference of {args.rel_effect:g} × the lowest {args.by}'s mean")
    print(f"{args.metric} by {args.by}, each level against its lowest: two-sided t-tests, α = {args.alpha:g}, "
          f"power {args.power:g}. mde: the smallest difference found with the seeds recorded now{goal}. "
          "Unpaired (the paper's test) and paired by seed (_paired).")
    print(render.markdown(table, digits=3))
    for note in caveats(table):
        print(note)
    if args.out:
        try:
            table.to_csv(args.out, index=False)
        except OSError as err:
            raise UserError(f"cannot write {args.out}: {err.strerror or err}") from None
    return 0


def add_compact_arguments(compact: argparse.ArgumentParser) -> None:
    _db_arg(compact)


def cmd_compact(args) -> int:
    from harness.store import compact

    before, after, upgraded = compact(args.db)
    layout = "".join(f"; {line}" for line in upgraded)
    print(f"{args.db}: {before / 2**20:.1f} MiB -> {after / 2**20:.1f} MiB{layout}")
    return 0


def entry() -> None:
    """The ``harness`` command: main(), then exit with its code.

    A Ctrl-C that no command handles itself (a sweep does: once drains, twice stops) ends
    the command with one line and exit 130, not a traceback. Once main() has returned and
    its output is flushed, what is left is the interpreter's exit, which joins the worker
    pool's threads (loky shuts its reusable pool down at exit): a Ctrl-C then (the second
    press just after a drain has ended, say) would raise KeyboardInterrupt inside that
    join, under the summary; here it ends the process at once with the command's exit
    code. Every result is committed by then, and the workers exit with their driver.

    The handler is installed before main() so that a sweep, which sets its own and puts
    back the one it found, puts back this one: a Ctrl-C in the moment between the sweep's
    end and main()'s return is then still raised inside the ``try`` below."""
    exit_code = None

    def on_ctrl_c(signum, frame):
        if exit_code is None:
            raise KeyboardInterrupt  # what Python's own handler does: the command stops
        os._exit(exit_code)  # the command is over: only the exit is left to cut short

    signal.signal(signal.SIGINT, on_ctrl_c)
    try:
        code = main() or 0
        _flush_output()  # before a Ctrl-C may os._exit, which does not flush
    except KeyboardInterrupt:
        print("\nharness: interrupted", file=sys.stderr)
        code = 130
        _flush_output()
    exit_code = code
    sys.exit(code)


def _flush_output() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except OSError:  # its reader has gone (`| head`): nothing left to show
            pass


if __name__ == "__main__":
    entry()
