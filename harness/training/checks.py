"""Which configs can train: combinations of model, task, data set, placement and settings
that are rejected before any training starts."""

from __future__ import annotations

import re
from pathlib import Path

from harness import custom
from harness.study import Config, StudyError


_TASK_OF_MODEL = {"dense_ae": "reconstruction", "unet": "segmentation"}  # the others: classification


def check_config(config: Config) -> None:
    """Reject combinations that cannot train, before any training starts."""
    if custom.train_function_of(config.model) is not None:
        return  # a study file's train function: the settings are its own to read
    if custom.user_task(config.task) is not None:
        _check_user_task(config)
    elif custom.user_model(config.model) is None:  # a study file's model trains with any task
        task = _TASK_OF_MODEL.get(config.model, "classification")
        if config.task != task:
            raise StudyError(f"model {config.model} trains with task={task}")
    if (config.dataset == "coco") != (config.task == "segmentation"):
        raise StudyError("task=segmentation trains on dataset=coco (the only data set with masks), and coco only with it")
    if config.train.monitor == "acc" and config.task == "reconstruction":
        raise StudyError("train.monitor=acc needs an accuracy: task=classification or segmentation")
    placement = config.placement.strip().lower()
    if placement not in ("first", "all", "pre-skip", "empirical") and not re.fullmatch(r"\d+(,\d+)*", placement):
        raise StudyError(f"bad placement {config.placement!r}: use first, all, pre-skip, empirical or conv indices like 1,5")
    if placement == "empirical" and not config.entropy.profile:
        raise StudyError("placement=empirical needs entropy.profile=PATH, a CSV from `harness profile`")
    if placement == "empirical" and not Path(config.entropy.profile).is_file():
        raise StudyError(f"entropy.profile: no profile CSV at {config.entropy.profile} (make one with `harness profile`)")
    if config.model == "dense_ae" and config.latent <= 0:
        raise StudyError("model dense_ae needs latent > 0 (e.g. latent=80)")
    if config.model == "cnn" and not config.arch:
        raise StudyError("model cnn needs arch, e.g. arch=32-64")
    if config.train.batch_size <= 0 or config.train.max_epochs <= 0:
        raise StudyError("train.batch_size and train.max_epochs must be positive")


def _check_user_task(config: Config) -> None:
    """What the loop cannot do with a study file's task: the Keras-style monitor (float32
    per-example losses of a built-in task), or an accuracy the task does not define."""
    names = [m.name for m in custom.user_task(config.task).metrics]
    if config.train.monitor == "total_float32":
        raise StudyError(f"train.monitor=total_float32 needs a built-in task, not task={config.task}; use task or total")
    if config.train.monitor == "acc" and "acc" not in names:
        raise StudyError(f"train.monitor=acc needs a metric named acc; task {config.task} has {', '.join(names) or 'none'}")
