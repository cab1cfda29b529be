"""Which replications remain, and running them.

The driver (this module) is the only writer of the store: it asks the store which
replications are finished, trains the others, and records each result in its own
transaction as soon as it arrives, so an interrupted sweep resumes where it stopped.
"""

from __future__ import annotations

import sys

from harness.study import Replication, Study


def remaining(study: Study, store) -> tuple[list[Replication], int]:
    """(replications the store does not hold as finished, size of the grid)."""
    reps = list({r.id: r for r in study.replications()}.values())  # a repeated grid point runs once
    finished = store.ids(study.name)
    return [r for r in reps if r.id not in finished], len(reps)


def default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def check_data(reps: list[Replication], data_dir) -> None:
    """Load each data set the replications need once, so missing data is one clear error
    before anything trains (and the per-process cache is warm for training)."""
    from harness.data import load_splits

    seen = set()
    for rep in reps:
        key = (rep.config.dataset, rep.config.data.val_split, rep.config.data.n_train, rep.config.data.n_val)
        if key not in seen:
            seen.add(key)
            load_splits(rep.config.dataset, data_dir, device="cpu", val_split=key[1], n_train=key[2], n_val=key[3])


def run_study(study: Study, db: str, data_dir=None, device: str | None = None, dry_run: bool = False, quiet: bool = False) -> int:
    """Train what remains of ``study``, recording each result as it finishes. Returns the
    exit code: 0 when every replication finished (done or diverged), 1 if any failed."""
    from harness.data import data_dir_from_env
    from harness.store import Store
    from harness.train import check_config

    data_dir = data_dir_from_env(data_dir)
    for rep in study.replications():
        check_config(rep.config)
    store = Store(db)
    todo, total = remaining(study, store)
    print(f"{study.name}: {total} replications in the grid, {total - len(todo)} already recorded, {len(todo)} to train")
    if dry_run:
        for rep in todo:
            print(f"  {rep.id}  " + " ".join(f"{k}={v}" for k, v in _varying(study, rep).items()))
        return 0
    if not todo:
        print(f"nothing to train; results in {db}")
        return 0
    check_data(todo, data_dir)
    store.record_study(study)
    device = device or default_device()
    return _run_in_process(todo, store, device, data_dir, quiet, db)


def _run_in_process(todo, store, device, data_dir, quiet, db) -> int:
    from tqdm import tqdm

    from harness.train import run_replication

    counts = {"done": 0, "diverged": 0, "failed": 0}
    bar = tqdm(total=len(todo), unit="rep", disable=quiet, dynamic_ncols=True)
    try:
        for rep in todo:
            result = run_replication(rep, device=device, data_dir=data_dir)
            store.record(result)
            counts[result["status"]] += 1
            if result["status"] == "failed":
                last = result["error"].strip().splitlines()[-1]
                tqdm.write(f"failed {rep.id}: {last}", file=sys.stderr)
            bar.set_postfix(counts, refresh=False)
            bar.update()
    except KeyboardInterrupt:
        bar.close()
        finished = sum(counts.values())
        print(
            f"\ninterrupted: {finished} of {len(todo)} replications recorded in {db}; "
            "run the same command again to train the rest",
            file=sys.stderr,
        )
        return 130
    bar.close()
    print(
        f"trained {len(todo)}: {counts['done']} done, {counts['diverged']} diverged, {counts['failed']} failed; "
        f"results in {db} (harness analyze to write the report)"
    )
    return 1 if counts["failed"] else 0


def _varying(study: Study, rep: Replication) -> dict:
    params = rep.params()
    return {k: params[k] for k in study.grid}
