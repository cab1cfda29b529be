"""A study file's own pieces: its models, data sets, tasks (a loss and metrics) and train
functions, registered by name beside the built-in ones, so that a study can replicate a
paper the harness does not ship (docs/your_own_paper.md).

    from harness.custom import Metric, dataset, model, task, train_function

    @model("mlp")
    def mlp(config, input_shape, n_classes) -> nn.Module: ...

Each registers by decorator or by a call with the callable (``model("mlp", build)``). A
piece is then named in the config as a built-in is (``model="mlp"``), so its name is
recorded with every result and enters the replication's id, and the study file's text is
saved with the study. A model is either a builder the harness's loop trains (UserModel) or
a train function that trains itself (TrainFunction); both join ``models.MODELS``, data sets
join ``data.DATASETS``, tasks ``TASKS``, so an unknown name is one line with the closest
match wherever it is looked up.

Workers are other processes, or machines: before one trains a replication that names a
piece it does not hold, it runs the study file's code (``load_code``, called by
harness.training.dispatch), which registers the pieces there too. A study file may run
more than once in a process (each ``load_study``, each worker task of another study), so
a piece registered again replaces the one of its name; a built-in's name is refused.

Only the standard library at import: torch and the registries are imported when a piece
registers or is used.
"""

from __future__ import annotations

import hashlib
import re
import sys
import types
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.errors import UserError
from harness.registry import Registry, did_you_mean

BUILT_IN_TASKS = ("reconstruction", "classification", "segmentation")
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_\-]*")


class PieceError(UserError):
    """A study file's piece that cannot be used (a bad name, a builder or train function
    that returned the wrong thing): one line."""


# -- the pieces --------------------------------------------------------------------------


@dataclass(frozen=True)
class UserModel:
    """A study file's model: ``build(config, input_shape, n_classes) -> nn.Module``, trained
    by the harness's loop. ``input_shape`` is one example's shape, (C, H, W) or (D,)."""

    fn: Callable
    task = ""  # as models.ModelEntry's: any task

    def __call__(self, config, input_shape: tuple, n_classes: int):
        import torch

        model = self.fn(config, tuple(input_shape), n_classes)
        if not isinstance(model, torch.nn.Module):
            raise PieceError(f"model {config.model!r}: its builder returned {type(model).__name__}, not a torch.nn.Module")
        return model

    def build(self, *args, **kwargs):
        """models.build_model's call, by name alone: a study file's model needs the config."""
        raise PieceError("this model comes from a study file: it is built from a replication's config")


@dataclass(frozen=True)
class TrainFunction:
    """A study file's whole training: ``run(config, device, data_dir) -> {metric: number}``,
    for what the harness's loop cannot express. Named by ``model=`` like a model."""

    fn: Callable
    task = ""

    def __call__(self, config, device: str, data_dir) -> dict[str, float]:
        metrics = self.fn(config, device, data_dir)
        if not isinstance(metrics, Mapping):
            raise PieceError(f"train function {config.model!r} returned {type(metrics).__name__}, "
                             "not a dict of metric name -> number")
        out = {}
        for name, value in metrics.items():
            try:
                out[_metric_name(name)] = float(value)
            except (TypeError, ValueError):
                raise PieceError(f"train function {config.model!r}: metric {name!r} is {value!r}, not a number") from None
        return out

    def build(self, *args, **kwargs):
        raise PieceError("this model is a study file's train function: it trains itself, nothing builds it")


@dataclass(frozen=True)
class UserSet:
    """A study file's data set: ``load(config, data_dir)`` returns (train_x, train_y, val_x,
    val_y) as tensors or arrays, or (train_set, val_set) as map-style datasets of (x, y)
    pairs (a torchvision dataset with a ToTensor transform), stacked into memory. Inputs
    become float32 as given (no scaling); integer targets are class labels."""

    fn: Callable
    streamed = False  # as harness.data.DataSet: held in memory as tensors on the device

    def splits_of(self, config, data_dir, device):
        """The harness.data.Splits ``config`` trains on (harness.data.splits_for)."""
        from harness.data.names import data_dir_from_env

        return _as_splits(self.fn(config, data_dir_from_env(data_dir)), config, device)

    def load(self, name, *args, **kwargs):
        """harness.data.DataSet's load by name: a study file's data set needs the config."""
        raise PieceError(f"data set {name!r} comes from a study file: it loads from a replication's config")


@dataclass(frozen=True)
class Metric:
    """One metric of a task: ``fn(outputs, targets)`` of a whole split (the model's outputs
    and the targets, concatenated over batches) -> a number, recorded as ``val_<name>`` and
    ``train_<name>``; ``higher_is_better`` says which way is better (as lm-evaluation-harness
    keeps it), saved with the study."""

    name: str
    fn: Callable
    higher_is_better: bool

    def __post_init__(self):
        _metric_name(self.name)
        if self.name in ("loss", "mse", "iou", "iou_fg"):
            raise PieceError(f"metric name {self.name!r} is the harness's own; choose another")
        if not isinstance(self.higher_is_better, bool):
            raise PieceError(f"metric {self.name!r}: higher_is_better must be True or False")


@dataclass(frozen=True)
class Task:
    """A study file's task: ``loss(output, y)`` -> the batch's mean loss (a scalar tensor),
    what the loop minimises and early stopping watches (train.monitor=task), and its
    metrics."""

    loss: Callable
    metrics: tuple[Metric, ...] = ()


TASKS: Registry[Task] = Registry("task")


# -- registering -------------------------------------------------------------------------


def model(name: str, build: Callable | None = None):
    """``@model("mlp")`` above ``def mlp(config, input_shape, n_classes) -> nn.Module``, or
    ``model("mlp", mlp)``: a model the harness's loop trains (the study's ``task``, its
    optimizer, early stopping and entropy diagnostics)."""
    from harness.models import MODELS

    return _registering(MODELS, "model", name, build, UserModel)


def train_function(name: str, run: Callable | None = None):
    """``@train_function("mine")`` above ``def mine(config, device, data_dir) -> dict``:
    the whole training of a replication, for what the loop cannot express; named by
    ``model="mine"``. Returns {metric: number}; seed your own randomness from config.seed."""
    from harness.models import MODELS

    return _registering(MODELS, "model", name, run, TrainFunction)


def dataset(name: str, load: Callable | None = None):
    """``@dataset("mine")`` above ``def mine(config, data_dir)``, returning (train_x,
    train_y, val_x, val_y) or (train_set, val_set) (UserSet); named by ``dataset="mine"``."""
    from harness.data.names import DATASETS

    return _registering(DATASETS, "data set", name, load, UserSet)


def task(name: str, loss: Callable, metrics=()) -> Task:
    """``task("ordinal", loss=fn, metrics=[Metric("mae", mae, higher_is_better=False)])``:
    a loss and metrics for the loop, named by ``task="ordinal"``."""
    _check_name("task", name)
    if name in BUILT_IN_TASKS:
        raise PieceError(f"task {name!r} is built in; give yours another name")
    if not callable(loss):
        raise PieceError(f"task {name!r}: loss must be a function (output, y) -> scalar tensor")
    metrics = tuple(metrics)
    if not all(isinstance(m, Metric) for m in metrics):
        raise PieceError(f"task {name!r}: metrics must be Metric(name, fn, higher_is_better=...) entries")
    if len({m.name for m in metrics}) != len(metrics):
        raise PieceError(f"task {name!r}: two metrics share a name")
    return TASKS.replace(name, Task(loss, metrics))


def _registering(registry: Registry, kind: str, name: str, fn: Callable | None, wrap):
    _check_name(kind, name)
    if name in registry and not isinstance(registry.get(name), (UserModel, TrainFunction, UserSet)):
        raise PieceError(f"{kind} {name!r} is built in; give yours another name")

    def add(f: Callable) -> Callable:
        if not callable(f):
            raise PieceError(f"{kind} {name!r}: register a function, not {type(f).__name__}")
        registry.replace(name, wrap(f))
        return f

    return add if fn is None else add(fn)


def _check_name(kind: str, name) -> None:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise PieceError(f"bad {kind} name {name!r}: letters, digits, _ and -, starting with a letter")


def _metric_name(name) -> str:
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
        raise PieceError(f"bad metric name {name!r}: letters, digits and _")
    return name


# -- what the rest of the harness asks ----------------------------------------------------


def train_function_of(name: str) -> TrainFunction | None:
    """The train function ``model=name`` names, or None (a model the loop trains)."""
    from harness.models import MODELS

    piece = MODELS.get(name)
    return piece if isinstance(piece, TrainFunction) else None


def user_model(name: str) -> UserModel | None:
    from harness.models import MODELS

    piece = MODELS.get(name)
    return piece if isinstance(piece, UserModel) else None


def user_task(name: str) -> Task | None:
    """A study file's task, or None for a built-in one; an unknown name is one line."""
    if name in BUILT_IN_TASKS:
        return None
    if name not in TASKS:
        known = (*BUILT_IN_TASKS, *TASKS)
        raise PieceError(f"unknown task {name!r}{did_you_mean(name, known)}; known: {', '.join(known)}")
    return TASKS[name]


def higher_is_better(tasks) -> dict[str, bool]:
    """{"val_f1": True, "train_f1": True, ...} of the study files' tasks among ``tasks``
    (the study's definition saves it; built-in tasks add nothing)."""
    out = {}
    for name in dict.fromkeys(tasks):
        piece = TASKS.get(name) if name not in BUILT_IN_TASKS else None
        for metric in piece.metrics if piece else ():
            out.update({f"val_{metric.name}": metric.higher_is_better, f"train_{metric.name}": metric.higher_is_better})
    return out


def needs_code(config) -> bool:
    """Does ``config`` name a piece of a study file (one this process may not hold)?"""
    from harness.data.names import DATASETS
    from harness.models import MODELS

    user = (UserModel, TrainFunction, UserSet)
    return (config.task not in BUILT_IN_TASKS or config.model not in MODELS or config.dataset not in DATASETS
            or isinstance(MODELS.get(config.model), user) or isinstance(DATASETS.get(config.dataset), user))


_ran: str | None = None  # the hash of the study code this process ran last


def ran(source: str) -> None:
    """This process has just run the study file ``source`` (harness.study.load_study)."""
    global _ran
    _ran = hashlib.sha256(source.encode()).hexdigest()


def load_code(path: str, source: str) -> None:
    """Run a study file's code in this process (a worker's), so its pieces are registered
    here; nothing when this process ran that very code last. From ``source``, the file's
    text, so a worker on a machine without the file can still run it; ``path``'s folder
    goes on sys.path, so the study can import the modules beside it."""
    key = hashlib.sha256(source.encode()).hexdigest()
    if key == _ran:
        return
    folder = str(Path(path).parent) if path else ""
    if folder and Path(folder).is_dir() and folder not in sys.path:
        sys.path.insert(0, folder)
    module = types.ModuleType(f"harness_study_{Path(path).stem or 'code'}")
    module.__file__ = path
    exec(compile(source, path or "<study>", "exec"), module.__dict__)  # noqa: S102 - the study file is the user's code
    ran(source)


# -- a data set's splits ------------------------------------------------------------------


def _as_splits(result: Any, config, device):
    """What a study file's data set returned, as harness.data.Splits on ``device``."""
    import torch

    from harness.data.tensors import Splits, _first_n

    name = config.dataset
    if isinstance(result, (tuple, list)) and len(result) == 4:
        tx, ty, vx, vy = (torch.as_tensor(v) for v in result)
    elif isinstance(result, (tuple, list)) and len(result) == 2:
        (tx, ty), (vx, vy) = _stacked(result[0], name), _stacked(result[1], name)
    else:
        raise PieceError(f"data set {name!r} returned {type(result).__name__}: return (train_x, train_y, val_x, val_y) "
                         "or (train_set, val_set)")
    for split, x, y in (("train", tx, ty), ("val", vx, vy)):
        if x.ndim < 2 or len(x) != len(y) or len(x) == 0:
            raise PieceError(f"data set {name!r}: its {split} split has inputs of shape {tuple(x.shape)} and "
                             f"{len(y)} targets; need (N, ...) inputs and N targets, N > 0")
    tx, ty = _first_n(tx, ty, config.data.n_train, "n_train", name)
    vx, vy = _first_n(vx, vy, config.data.n_val, "n_val", name)
    labels = not ty.is_floating_point()
    n_classes = int(max(ty.max(), vy.max())) + 1 if labels else (ty.shape[1] if ty.ndim > 1 else 1)

    def target(y):
        return y.to(device=device, dtype=torch.int64 if labels else torch.float32, copy=True)

    return Splits(train_x=tx.to(device=device, dtype=torch.float32, copy=True), train_y=target(ty),
                  val_x=vx.to(device=device, dtype=torch.float32, copy=True), val_y=target(vy),
                  n_classes=n_classes, input_shape=tuple(tx.shape[1:]))


def _stacked(dataset, name: str):
    """A map-style dataset of (x, y) pairs as two tensors."""
    import torch

    try:
        pairs = [dataset[i] for i in range(len(dataset))]
        x = torch.stack([torch.as_tensor(p[0]) for p in pairs])
        y = torch.stack([torch.as_tensor(p[1]) for p in pairs])
    except (TypeError, IndexError, RuntimeError, ValueError) as err:
        raise PieceError(f"data set {name!r}: cannot stack its examples into tensors ({err}); "
                         "give each (x, y) as tensors or numbers (torchvision: transform=ToTensor())") from None
    return x, y
