"""Which replications train together as one pack, and how many at a time: the pack key
(every setting but λ, seed and the stopping rule), the trajectory key (replications
that differ only in their stopping rule share one member), the grouping, and the pack
size from memory and memory traffic."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import nn

from harness.data import IMAGE_DATASETS
from harness.study import Config, flatten
from harness.training import conv_engine
from harness.training.checks import check_config
from harness.training.loop import seeded_model
from harness.training.stopping import STOPPING_RULE


PACKABLE_MODELS = ("dense_ae", "cnn")
MAX_PACK_CPU = 128
# A CPU pack's working set (choose_pack_size), measured with E1's autoencoder, 2 workers
# of one thread each: at latent 80 (3.0 MB a member) packs of 18 trained 15-25% faster
# than packs of 35 on an Intel Xeon (a VM reporting a 480 MiB L3), and 8 to 17 were
# fastest on an AMD EPYC (32 MiB L3); at latent 20 (1.4 MB), packs of 35 or more trained
# 9% faster than 17. 40 MiB gives 14 and 29. A CNN pack (harness.training.conv_engine)
# holds one member's activations at a time: an MNIST [32] CNN packs 23.
CPU_PACK_BYTES = 40 << 20
MAX_PACK_GPU = 1024
# A CNN pack on CPU (harness.training.conv_engine) gains from sharing the data, the optimizer
# step and the evaluation's first layer, not from wider kernels: past a few dozen members
# there is nothing left to share (docs/performance.md).
MAX_PACK_CPU_CNN = 35

_VARYING = ("lam", "seed")  # what members of one pack may differ in
# STOPPING_RULE (harness.training.stopping): replications that differ only in it follow one training
# trajectory, which a pack trains once and stops for each of them in turn.




def pack_key(config: Config) -> tuple | None:
    """What a pack's replications share: every setting but λ, seed and the stopping rule.
    None when ``config`` cannot be packed (its model, dropout or lr schedule; or a config
    train() rejects)."""
    try:
        check_config(config)
    except Exception:
        return None
    if (
        config.model not in PACKABLE_MODELS
        or config.dataset in IMAGE_DATASETS  # read from files by a DataLoader, not tensors in memory
        or config.data.augment != "none"  # its own random stream per batch
        or config.net.dropout > 0
        or config.train.lr_patience
    ):
        return None
    return shared_settings(config)


def shared_settings(config: Config) -> tuple:
    """Every setting but λ, seed and the stopping rule: what a pack's members share, and
    all that a replication's memory can depend on."""
    return tuple((k, v) for k, v in flatten(config).items() if k not in _VARYING + STOPPING_RULE)


def trajectory_key(config: Config) -> tuple:
    """How a replication trains: every setting but the stopping rule. Replications with the
    same key have the same weights epoch after epoch and share one member of a pack."""
    return tuple((k, v) for k, v in flatten(config).items() if k not in STOPPING_RULE)


def stopping_rule(config: Config) -> tuple:
    return tuple((k, v) for k, v in flatten(config).items() if k in STOPPING_RULE)


def pack_groups(configs: Sequence[Config], max_size: int | Callable[[Config], int] | None = None) -> list[list[int]]:
    """Indices of ``configs`` grouped into packs, in first-seen order: configs with the same
    pack_key together, configs that share a trajectory always in the same pack, at most
    ``max_size`` members (trajectories) per pack: a number, or a function of a config (1:
    that config goes alone though it could pack). Unpackable configs go alone."""
    limit_of = max_size if callable(max_size) else (lambda config: max_size)
    groups: dict[object, list[int]] = {}  # the open pack of each pack key
    members: dict[int, set] = {}  # id(pack) -> its trajectories
    placed: dict[tuple, list[int]] = {}  # trajectory -> its pack
    order: list[list[int]] = []
    for i, config in enumerate(configs):
        limit = limit_of(config)
        key = pack_key(config) if limit is None or limit > 1 else None
        if key is None:
            order.append([i])
            continue
        trajectory = trajectory_key(config)
        if trajectory in placed:
            placed[trajectory].append(i)
            continue
        group = groups.get(key)
        if group is None or (limit is not None and len(members[id(group)]) >= limit):
            group = groups[key] = []
            members[id(group)] = set()
            order.append(group)
        group.append(i)
        members[id(group)].add(trajectory)
        placed[trajectory] = group
    return order


def choose_pack_size(config: Config, input_shape: tuple, n_classes: int, device: str | torch.device = "cpu") -> int:
    """The automatic pack size.

    GPU: as many members as fit in a quarter of its free memory (weights, gradients,
    optimizer state, best weights, a training batch's activations), at most MAX_PACK_GPU.
    CPU: as many as keep the pack's working set, what every training step reads and writes
    (weights, gradients and Adam's two moments, a batch's activations and their
    gradients), within CPU_PACK_BYTES, at most MAX_PACK_CPU. A CPU pack is bound by memory
    traffic: past that size a step's passes over the pack stream from memory, and below it
    Python's share of each step grows. A dense autoencoder's pack is 10-50 members. A
    CNN's (harness.training.conv_engine) steps its members one after another, so one
    member's activations count, beside every member's weights, gradients and moments;
    at most MAX_PACK_CPU_CNN."""
    model, n_params, acts = _member(config, input_shape, n_classes)
    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(max(1, min(MAX_PACK_GPU, free // 4 // _replication_bytes(n_params, acts))))
    by_memory = free_host_memory() // 4 // _replication_bytes(n_params, acts)
    if conv_engine.takes(config, model):
        # harness.training.conv_engine steps the members one after the other: one member's
        # activations at a time, beside every member's weights, gradients and Adam moments
        by_traffic = (CPU_PACK_BYTES - 4 * 3 * acts) // (4 * 4 * n_params)
        return int(max(1, min(MAX_PACK_CPU_CNN, by_memory, by_traffic)))
    by_traffic = CPU_PACK_BYTES // (4 * (4 * n_params + 3 * acts))
    return int(max(1, min(MAX_PACK_CPU, by_memory, by_traffic)))


def replication_bytes(config: Config, input_shape: tuple, n_classes: int) -> int:
    """Memory one replication trains in, in bytes (float32): its weights, gradients,
    optimizer state and best weights, and a training batch's activations and their
    gradients. What a pack of P needs is about P times this."""
    return _replication_bytes(*_member(config, input_shape, n_classes)[1:])


def _replication_bytes(n_params: int, acts: int) -> int:
    return 4 * (6 * n_params + 3 * acts)


def _member(config: Config, input_shape: tuple, n_classes: int) -> tuple[nn.Module, int, int]:
    """(the model, its parameters, floats of a training batch's activations) of one replication."""
    with torch.random.fork_rng(devices=[]):  # building the model draws from the global generator
        model = seeded_model(config, input_shape, n_classes)
    n_params = sum(p.numel() for p in model.parameters())
    return model, n_params, config.train.batch_size * activation_floats(model, input_shape)


def free_host_memory() -> int:
    """Memory available to new allocations on this machine, in bytes."""
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except ImportError:  # psutil comes with dask.distributed; a plain fallback all the same
        with open("/proc/meminfo") as f:
            info = dict(line.split(":", 1) for line in f)
        return int(info["MemAvailable"].split()[0]) * 1024


def activation_floats(model: nn.Module, input_shape: tuple) -> int:
    """Floats of every leaf module's output for one example: a model's activation memory."""
    total = [math.prod(input_shape)]
    hooks = [
        m.register_forward_hook(lambda mod, args, out: total.append(out[0].numel()))
        for m in model.modules()
        if not list(m.children())
    ]
    param = next(model.parameters())
    try:
        with torch.no_grad():
            model(torch.zeros((1, *input_shape), dtype=param.dtype, device=param.device))
    finally:
        for h in hooks:
            h.remove()
    return sum(total)
