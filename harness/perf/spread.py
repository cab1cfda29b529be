"""The spread run of `harness bench`: the packed path laid out as `harness run --workers W`
lays it, W worker processes of cores/W torch threads training their share at once; and the
copies of a data split (a subset, on another device) the runs are given."""

from __future__ import annotations

import dataclasses
import time


class SpreadPool:
    """``workers`` processes (joblib's loky), each with its share of this process's torch
    threads and its own copy of the data, that train groups of configs at once."""

    def __init__(self, workers: int, splits, device, size: int):
        import torch
        from joblib import Parallel

        # the workers get the data on the CPU and move it to the device themselves: a CUDA
        # tensor does not travel to another process by pickling
        self.workers, self.splits, self.device, self.size = workers, _on(splits, "cpu"), device, size
        self.threads = max(1, torch.get_num_threads() // workers)
        self.parallel = Parallel(n_jobs=workers, backend="loky")
        self.parallel.__enter__()  # keep the worker processes between calls

    def train(self, configs: list, warm_up: bool = False) -> float:
        """Wall time of training ``configs`` dealt in ``workers`` contiguous groups, as
        harness.schedule.pack groups them (all workers start together)."""
        from joblib import delayed

        per = -(-len(configs) // self.workers)
        groups = [configs[i : i + per] for i in range(0, len(configs), per)]
        splits = subset(self.splits, 64) if warm_up else self.splits
        jobs = [delayed(_train_group)(g, splits, self.device, self.size, self.threads) for g in groups]
        start = time.perf_counter()
        self.parallel(jobs)
        return time.perf_counter() - start

    def replay(self, calls: list) -> float:
        """FLOP/s of every worker replaying ``calls`` at once (harness.perf.ceiling.replay_rate), summed."""
        from joblib import delayed

        from harness.perf.ceiling import replay_rate

        timings = self.parallel([delayed(replay_rate)(calls, self.threads) for _ in range(self.workers)])
        return sum(flops / seconds for flops, seconds in timings)

    def close(self) -> None:
        self.parallel.__exit__(None, None, None)


def _train_group(configs: list, splits, device, size: int, threads: int) -> None:
    import torch

    from harness.training.pack import train_in_packs

    torch.set_num_threads(threads)
    train_in_packs(configs, _on(splits, device), device, size=size)


def _on(splits, device):
    """``splits`` with its tensors on ``device``."""
    return dataclasses.replace(splits, **{name: getattr(splits, name).to(device)
                                          for name in ("train_x", "train_y", "val_x", "val_y")})


def subset(splits, n: int):
    """``splits`` cut to its first ``n`` training and validation examples (the warm-ups' data)."""
    return dataclasses.replace(splits, train_x=splits.train_x[:n], train_y=splits.train_y[:n],
                               val_x=splits.val_x[:n], val_y=splits.val_y[:n])
