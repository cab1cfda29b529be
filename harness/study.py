"""Studies, their typed settings, grid expansion and replications.

A study file is a small Python module defining ``study = Study(...)``. Every setting of a
replication is a field of :class:`Config` (nested dataclasses, addressed with dotted keys
such as ``train.lr``) with a documented default; a study overrides some of them in
``settings`` and varies some of them in ``grid``. Overrides from the command line use the
same dotted keys. Each grid point becomes a frozen :class:`Replication` whose id is a hash
of its full resolved config, so the same config is never trained twice.

This module imports nothing heavy: ``harness --help`` and study loading stay fast.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import importlib.util
import itertools
import json
import math
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, get_type_hints

from harness.validate import StudyError, allowed, check_fields, check_range

# Bumped when the meaning of a config changes in a way that invalidates old results.
CONFIG_VERSION = 1


@dataclass(frozen=True)
class TrainConfig:
    optimizer: str = "adam"  # "adam" | "sgd" (the paper: Adam for E1-E3, SGD for E4)
    lr: float = 1e-3  # not given by the paper; Keras' Adam default
    # Adam's ε (the denominator's fuzz): PyTorch's default 1e-8; tf.keras' Adam uses 1e-7
    # (protocol=keras). It matters for a weight whose gradient is always 0 or tiny.
    adam_eps: float = 1e-8
    momentum: float = 0.0  # SGD only
    batch_size: int = 32  # not given by the paper; Keras' default
    max_epochs: int = 200  # not given by the paper; a cap on runs early stopping never ends
    patience: int = 7  # E1/E2: stop when the monitored loss has not improved for 7 epochs
    min_delta: float = 0.0  # an improvement must exceed this (Keras' default 0)
    # What early stopping watches on the validation set: "task" = the task loss alone,
    # "total" = task loss + the entropy term (what Keras does with add_loss);
    # "total_float32" = the val_loss a tf.keras model reports with the term added by
    # add_loss: per validation batch the float32 task loss plus the float32 λ·term, their
    # running mean kept in float32 (harness.training.stopping.keras_val_loss). |det W| underflows
    # to 0 in float32, so the term is often the constant λ/ε and the total cannot see the
    # task loss improve;
    # "acc" = validation accuracy (E4: "no improvements in 25 epochs" of val accuracy;
    # pixel accuracy for segmentation), maximised.
    monitor: str = "task"
    restore_best: bool = True  # evaluate the best epoch's weights (True) or the last ones
    lr_patience: int = 0  # divide lr by 10 after this many epochs without gain (E4); 0 = off
    # task=segmentation: the loss on the sigmoid of the U-Net's output. Table 3 names the
    # loss "MSE"; "bce" = binary cross-entropy, the usual alternative.
    seg_loss: str = "mse"
    # TensorFloat-32 for float32 matmuls and convolutions on CUDA GPUs: tensor cores at
    # several times the float32 rate, with a 10-bit mantissa. Off by default, and then off
    # explicitly: PyTorch's own default runs cuDNN convolutions in TF32, so a CNN trained
    # on a GPU would silently differ from one trained on a CPU. CPUs compute in float32
    # either way.
    tf32: bool = False
    # Subnormal floats (below 1.2e-38 in float32) flushed to zero on the CPU, in the
    # training thread (x86 FTZ/DAZ; TensorFlow, the paper's framework, does the same by
    # default). Adam's first moment of a rarely lit MNIST pixel's weights decays through
    # the subnormal range, where each operation costs a microcode assist: on an Intel Xeon
    # this made the packed latent-80 autoencoder about 17% slower. Its update is about
    # 1e-34 against weights near 1e-2, far below float32 rounding: what is recorded is
    # unchanged (tested; the step that measures grad_ratio and term_led keeps IEEE
    # subnormals). GPUs handle subnormals at full speed and are not affected.
    flush_denormals: bool = True
    # torch.compile of the model's forward (its backward through AOTAutograd) in this
    # torch.compile mode, or "off". The same math, fused into fewer kernels: results equal
    # the eager ones to float32 rounding (tested). A pack then goes through the vmap engine
    # (harness.training.pack), not the hand-written dense step. Each worker compiles once per shape
    # (seconds to a minute). On a 2-core CPU it was no faster (README, "How fast"); on a
    # GPU, where a small model's step is kernel launches, "reduce-overhead" (CUDA graphs)
    # is the mode to measure.
    compile: str = "off"


@dataclass(frozen=True)
class EntropyConfig:
    form: str = "inverse"  # "inverse" = 1/(|x|+eps) (eq. 24-25) | "log" = -log|x| (eq. 21, 23)
    eps: float = 1e-4  # the paper says only "< 1e-3"
    # dtype of the determinant: at default init |det W| of an MNIST encoder is far below
    # float32's smallest normal number, so float32 gives det = 0 and no gradient.
    precision: str = "float64"
    c11: str = "all_channels"  # multi-channel filters: every input channel's c11, or "first_channel"
    reduce: str = "sum"  # how per-filter conv terms combine: "sum" | "mean"
    # placement="empirical" (E4): guide the empirical_k conv layers with the highest
    # ("highest") or lowest ("lowest") mean per-filter entropy change in `profile`, a CSV
    # written by `harness profile` for a trained model of the same architecture. "highest"
    # = the layers that keep the most entropy, the paper's "high-entropy layers".
    profile: str = ""
    empirical_k: int = 5
    empirical_rank: str = "highest"


@dataclass(frozen=True)
class DataConfig:
    val_split: str = "test"  # "test" = the official test split; "holdout:0.1" = part of train
    n_train: int = 0  # keep only the first n training examples (0 = all); for quick runs
    n_val: int = 0  # likewise for the validation set
    # Image-folder data sets (imagenette*, coco), decoded and resized on the fly:
    image_size: int = 0  # square side in pixels; 0 = the data set's standard (Imagenette 224, COCO 256)
    resize: str = "squash"  # "squash" = to image_size x image_size ignoring aspect (Keras' default) | "crop" = shorter side, then centre crop
    # Training-batch augmentation on the device, any data set: "flip_rotate_zoom" (E4) =
    # horizontal flip, rotation and zoom, each image its own draw, reflect-padded as Keras.
    augment: str = "none"
    # "up to 20% rotation": as Keras' RandomRotation(0.2), a fraction of a full turn (±72°).
    rotation: float = 0.2
    zoom: float = 0.2  # "up to 20% zoom": scale drawn in [1 - zoom, 1 + zoom], as Keras' RandomZoom


@dataclass(frozen=True)
class NetConfig:
    latent_activation: str = "sigmoid"  # the paper's autoencoder latent activation
    output_activation: str = "sigmoid"  # decoder output: "sigmoid" | "linear" (not given)
    padding: str = "valid"  # CNN padding; Keras' default "valid" (not given)
    leaky_slope: float = 0.3  # LeakyReLU slope; Keras' default alpha
    dropout: float = 0.0  # dropout before the classifier head
    init: str = "keras"  # "keras" = glorot-uniform weights, zero biases; "torch" = PyTorch's
    base_width: int = 64  # U-Net: channels at the first level, doubled at each of 4 levels (Ronneberger: 64)


@dataclass(frozen=True)
class Config:
    """Everything that determines one replication's result."""

    dataset: str = "digits"  # mnist | fashion_mnist | cifar10 | digits | imagenette[_320|_160] | coco
    model: str = "dense_ae"  # dense_ae | cnn | vgg16 | resnet50 | unet
    # reconstruction (MSE) | classification (cross-entropy) | segmentation (binary masks)
    task: str = "reconstruction"
    lam: float = 0.0  # λ: strength of the entropy guidance term (λ1 dense, λ2 conv)
    latent: int = 0  # autoencoder latent width
    arch: tuple[int, ...] = ()  # CNN conv widths, one per block, e.g. (32, 32)
    # guided layers: "first" | "all" | 1-based conv indices in forward order "1,5" |
    # "pre-skip" (convs feeding a residual addition) | "empirical" (see entropy.profile)
    placement: str = "first"
    seed: int = 0  # replication seed; init and data-order seeds derive from it
    train: TrainConfig = field(default_factory=TrainConfig)
    entropy: EntropyConfig = field(default_factory=EntropyConfig)
    data: DataConfig = field(default_factory=DataConfig)
    net: NetConfig = field(default_factory=NetConfig)


def _field_types(cls=Config, prefix="") -> dict[str, type]:
    """Dotted key -> type of every leaf field of Config."""
    out = {}
    hints = get_type_hints(cls)
    for f in fields(cls):
        kind = hints[f.name]
        if dataclasses.is_dataclass(kind):
            out.update(_field_types(kind, prefix + f.name + "."))
        else:
            out[prefix + f.name] = kind
    return out


FIELD_TYPES = _field_types()
KEYS = tuple(FIELD_TYPES)

# Keys added after results were first recorded. They enter a replication's id only when
# they differ from their default, so every config that existed before keeps its id.
LATE_KEYS = (
    "train.adam_eps",
    "train.seg_loss",
    "train.tf32",
    "train.flush_denormals",
    "train.compile",
    "entropy.profile",
    "entropy.empirical_k",
    "entropy.empirical_rank",
    "data.image_size",
    "data.resize",
    "data.augment",
    "data.rotation",
    "data.zoom",
    "net.base_width",
)

# Settings that take one of a few words; checked when a study or an override is read, so a
# typo fails at once instead of after hours of training. (dataset and model names are
# checked by their registries in data.py and models.py.)
CHOICES = {
    "task": ("reconstruction", "classification", "segmentation"),
    "train.optimizer": ("adam", "sgd"),
    "train.monitor": ("task", "total", "total_float32", "acc"),
    "train.seg_loss": ("mse", "bce"),
    "train.compile": ("off", "default", "reduce-overhead", "max-autotune"),
    "entropy.empirical_rank": ("highest", "lowest"),
    "data.resize": ("squash", "crop"),
    "data.augment": ("none", "flip_rotate_zoom"),
    "entropy.form": ("inverse", "log"),
    "entropy.precision": ("float64", "float32"),
    "entropy.c11": ("all_channels", "first_channel"),
    "entropy.reduce": ("sum", "mean"),
    "net.latent_activation": ("sigmoid", "relu", "linear"),
    "net.output_activation": ("sigmoid", "linear"),
    "net.padding": ("valid", "same"),
    "net.init": ("keras", "torch"),
}


# Presets: one named setting that stands for several keys, so a user need not know which
# keys make "what a model in that framework would have done". A preset expands into its
# keys before a config is built: each expanded key is recorded (and enters the id) on its
# own, the preset's name is not. "default" is the harness's own defaults (nothing set), so
# that `protocol=default,keras` is a grid axis.
PRESET_KEY = "protocol"
PRESETS: dict[str, dict[str, Any]] = {
    "default": {},
    # What a tf.keras 2.x model trained as the paper describes would do: the determinant
    # in float32 (the framework's dtype), early stopping on the val_loss Keras reports
    # (task loss + add_loss term, float32), glorot-uniform weights with zero biases, Adam's
    # ε = 1e-7, and EarlyStopping(restore_best_weights=False): the last weights are the
    # ones evaluated. The guidance term's ε stays its own setting (the paper: "< 1e-3").
    "keras": {
        "entropy.precision": "float32",
        "train.monitor": "total_float32",
        "net.init": "keras",
        "train.adam_eps": 1e-7,
        "train.restore_best": False,
    },
}


def expand_presets(values: dict[str, Any]) -> dict[str, Any]:
    """``values`` with its ``protocol`` (if any) replaced by the keys it stands for. A key
    given beside the preset with another value is an error, not silently overridden."""
    if PRESET_KEY not in values:
        return values
    values = dict(values)
    name = values.pop(PRESET_KEY)
    preset = PRESETS[coerce(PRESET_KEY, name)]
    for key, value in preset.items():
        if key in values and values[key] != value:
            raise StudyError(f"{PRESET_KEY}={name} sets {key}={value!r}, but {key}={values[key]!r} is given too: drop one")
    return {**values, **preset}


def flatten(config: Config) -> dict[str, Any]:
    """Config -> {dotted key: value}, tuples kept as tuples."""
    out = {}
    for key in KEYS:
        value = config
        for part in key.split("."):
            value = getattr(value, part)
        out[key] = value
    return out


def build_config(values: dict[str, Any]) -> Config:
    """{dotted key: value} (validated) -> Config; missing keys take their defaults."""
    nested: dict[str, Any] = {}
    for key, value in expand_presets(values).items():
        check_key(key)
        head, _, rest = key.partition(".")
        if rest:
            nested.setdefault(head, {})[rest] = value
        else:
            nested[head] = value
    hints = get_type_hints(Config)
    kwargs = {}
    for name, value in nested.items():
        kind = hints[name]
        kwargs[name] = kind(**value) if dataclasses.is_dataclass(kind) else value
    return Config(**kwargs)


def check_key(key: str) -> None:
    if key not in FIELD_TYPES and key != PRESET_KEY:
        close = difflib.get_close_matches(key, KEYS, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise StudyError(f"unknown key {key!r}{hint}; allowed keys: {', '.join(KEYS)}")


def coerce(key: str, value: Any) -> Any:
    """Check a value against the key's type, converting strings from the command line."""
    check_key(key)
    if key == PRESET_KEY:
        if value not in PRESETS:
            raise StudyError(f"bad value {value!r} for {key}: choose one of {', '.join(PRESETS)}")
        return value
    kind = FIELD_TYPES[key]
    try:
        if kind is bool:
            if isinstance(value, str):
                if value.lower() in ("1", "true", "yes", "on"):
                    return True
                if value.lower() in ("0", "false", "no", "off"):
                    return False
                raise ValueError
            if isinstance(value, (bool, int)):
                return bool(value)
            raise ValueError
        if kind is int:
            if isinstance(value, bool):
                raise ValueError
            if isinstance(value, float) and value.is_integer():
                return check_range(key, int(value), value)
            if isinstance(value, (int, str)):
                return check_range(key, int(value))
            raise ValueError
        if kind is float:
            if isinstance(value, bool):
                raise ValueError
            number = float(value)
            if not math.isfinite(number):  # NaN is not JSON, and no setting means inf
                raise StudyError(f"bad value {value!r} for {key}: expected a finite number")
            return check_range(key, number)
        if kind is str:
            if isinstance(value, (list, tuple)):  # placement given as indices
                return ",".join(str(int(v)) for v in value)
            value = str(value)
            if key in CHOICES and value not in CHOICES[key]:
                raise StudyError(f"bad value {value!r} for {key}: choose one of {', '.join(CHOICES[key])}")
            return value
        if kind == tuple[int, ...]:
            if isinstance(value, str):  # "32-64-128" on the command line
                return check_range(key, tuple(int(v) for v in value.split("-") if v != ""))
            if isinstance(value, int):
                return check_range(key, (value,))
            return check_range(key, tuple(int(v) for v in value))
    except (TypeError, ValueError):
        pass
    raise StudyError(f"bad value {value!r} for {key}: expected {_type_name(kind)}{allowed(key)}")


def _type_name(kind) -> str:
    if kind == tuple[int, ...]:
        return "widths like 32-64"
    return kind.__name__


def derive_seed(seed: int, stream: str) -> int:
    """One independent seed per source of randomness ("init", "data"), from the
    replication's seed alone: the same seed gives the same initial weights and data order
    at every λ, so λ levels are compared on common random numbers."""
    digest = hashlib.sha256(f"{seed}:{stream}".encode()).digest()
    return int.from_bytes(digest[:4], "little")


_DEFAULTS = flatten(Config())
_LATE_DEFAULTS = {k: v for k, v in _DEFAULTS.items() if k in LATE_KEYS}


def _late_default(key: str, value: Any) -> bool:
    return key in LATE_KEYS and value == _LATE_DEFAULTS[key]


def _canonical(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_canonical(v) for v in value]
    if isinstance(value, float) and value.is_integer():
        return value  # json writes 1.0 and 1 differently; keep floats as floats
    return value


@dataclass(frozen=True)
class Replication:
    """One training run: a study name and a fully resolved config."""

    study: str
    config: Config

    @property
    def id(self) -> str:
        """Stable hash of everything that affects the result (not the study's name,
        the device or the time)."""
        flat = {k: _canonical(v) for k, v in flatten(self.config).items() if not _late_default(k, v)}
        payload = json.dumps({"v": CONFIG_VERSION, "config": flat}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]

    def params(self) -> dict[str, Any]:
        return flatten(self.config)


@dataclass
class Study:
    """A grid of replications and the analyses that turn them into the paper's tables.

    name:      the study's name in the store and in results/<name>/.
    settings:  {dotted key: value} fixed for every replication (defaults otherwise).
    grid:      {dotted key: [values]} axes; the replications are their product.
    analyses:  analysis specs (harness.analysis.spec) that `harness analyze` runs.
    exclude:   [{dotted key: value}] grid points to leave out: a point matching every
               key of one entry is skipped (E4 runs augmentation x dropout but not
               dropout without augmentation).
    """

    name: str
    settings: dict[str, Any] = field(default_factory=dict)
    grid: dict[str, list] = field(default_factory=dict)
    analyses: list = field(default_factory=list)
    description: str = ""
    source: str = ""  # the study file's text, filled in by load_study
    exclude: list = field(default_factory=list)

    def __post_init__(self):
        if not self.name or not isinstance(self.name, str):
            raise StudyError("a study needs a name")
        check_fields(self.settings, self.grid, self.analyses, self.exclude)
        self.settings = {k: coerce(k, v) for k, v in self.settings.items()}
        grid = {}
        for key, values in self.grid.items():
            if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
                values = [values]
            values = [coerce(key, v) for v in values]
            if not values:
                raise StudyError(f"grid axis {key} has no values")
            grid[key] = list(dict.fromkeys(values))  # keep order, drop repeats
        self.grid = grid
        self.exclude = [{k: coerce(k, v) for k, v in dict(entry).items()} for entry in self.exclude]
        build_config(self.settings)  # fail early on a bad combination

    def replications(self) -> list[Replication]:
        """The grid's product in a stable order (axes as declared, last axis fastest)."""
        keys = list(self.grid)
        reps = []
        for combo in itertools.product(*(self.grid[k] for k in keys)):
            values = {**self.settings, **dict(zip(keys, combo))}
            expanded = expand_presets(values)
            if any(all(expanded.get(k, _DEFAULTS.get(k)) == v for k, v in entry.items()) for entry in self.exclude):
                continue
            reps.append(Replication(self.name, build_config(values)))
        return reps

    def with_overrides(self, overrides: list[str]) -> "Study":
        """Apply command-line overrides ``key=value``.

        A value with commas (``lam=0,1e-3``) or an integer range ``start:stop`` (``seed=0:3``
        = 0, 1, 2) sets a grid axis; a single value on a key that is a grid axis narrows the
        axis to that value; otherwise it fixes the setting. Brackets keep a value's own
        commas: ``placement=[1,5]`` is one placement, ``placement=[1,5],first`` two.
        """
        settings, grid = dict(self.settings), dict(self.grid)
        given: dict[str, str] = {}
        for item in overrides:
            key, sep, text = item.partition("=")
            if not sep or not key:
                raise StudyError(f"bad override {item!r}: expected key=value, e.g. lam=0,1e-3")
            check_key(key)
            if key in given:  # which one was meant? (a list is one override: lam=0,1e-3)
                raise StudyError(f"{key} is given twice ({given[key]} and {item}): give it once, "
                                 f"e.g. {key}=a,b for a grid axis")
            given[key] = item
            values = _parse_values(key, text)
            if len(values) > 1 or key in grid:
                grid[key] = values
                settings.pop(key, None)
            else:
                settings[key] = values[0]
        return dataclasses.replace(self, settings=settings, grid=grid)

    def definition(self) -> dict[str, Any]:
        """JSON-able resolved definition, saved with the results."""
        from harness.analysis.spec import spec_to_dict

        def plain(v):
            return list(v) if isinstance(v, tuple) else v

        return {
            "name": self.name,
            "description": self.description,
            "settings": {k: plain(v) for k, v in flatten(build_config(self.settings)).items()},
            "grid": {k: [plain(v) for v in vs] for k, vs in self.grid.items()},
            "analyses": [spec_to_dict(a) for a in self.analyses],
            "exclude": [{k: plain(v) for k, v in entry.items()} for entry in self.exclude],
            "source": self.source,
        }


def _request(definition: dict[str, Any]) -> dict[str, Any]:
    return {k: definition.get(k) or ({} if k != "exclude" else []) for k in ("settings", "grid", "exclude")}


def recorded_requests(definition: dict[str, Any]) -> list[dict[str, Any]]:
    """The grids a stored definition's runs asked for (one, from a definition saved before
    requests were kept)."""
    return list(definition.get("requests") or [_request(definition)])


def requested_replications(name: str, request: dict[str, Any]) -> list[Replication]:
    """The replications one recorded request (settings, grid, exclude) asks for."""
    return Study(name, settings=request["settings"], grid=request["grid"], exclude=request["exclude"]).replications()


def requested_ids(name: str, request: dict[str, Any]) -> set[str]:
    return {r.id for r in requested_replications(name, request)}


def merged_definition(old: dict[str, Any] | None, new: dict[str, Any]) -> dict[str, Any]:
    """The study as a database holds it after a run of ``new`` (a ``Study.definition()``):
    the last run's description, settings and analyses, and in ``requests`` every distinct
    grid the runs asked for (one that another contains is dropped), so that a run narrowed
    by overrides (``latent=180``) adds to what the study spans instead of shrinking it.
    ``grid`` spans them all: per key, every value any request gave it."""
    requests = recorded_requests(old) if old else []
    requests.append(_request(new))
    ids = [requested_ids(new["name"], r) for r in requests]
    # drop a request that another asks for all of (of two equal ones, the earlier goes)
    kept = [r for i, r in enumerate(requests)
            if not any(j != i and ids[i] <= ids[j] and (ids[i] != ids[j] or j > i) for j in range(len(requests)))]
    levels: dict[str, list] = {}
    for r in kept:
        for key in dict.fromkeys([*r["grid"], *r["settings"]]):
            for value in r["grid"].get(key, [r["settings"].get(key)]):
                if value not in levels.setdefault(key, []):
                    levels[key].append(value)
    grid = {k: vs for k, vs in levels.items() if len(vs) > 1 or any(k in r["grid"] for r in kept)}
    order = [*(k for k in new["grid"] if k in grid), *(k for k in grid if k not in new["grid"])]  # the last run's axes first
    return {**new, "grid": {k: grid[k] for k in order}, "requests": kept}


def _parse_values(key: str, text: str) -> list:
    if text == "":
        raise StudyError(f"bad override {key}=: no value")
    kind = FIELD_TYPES.get(key, str)  # the preset key takes names
    if kind is int and ":" in text and "," not in text:
        start, _, stop = text.partition(":")
        try:
            values = list(range(int(start), int(stop)))
        except ValueError:
            raise StudyError(f"bad range {text!r} for {key}: expected start:stop, e.g. 0:10")
        if not values:
            raise StudyError(f"empty range {text!r} for {key}")
        return values
    if kind is str:  # placements: "[1,5],first" is two values, "1,5" and "first"
        return [coerce(key, part.strip("[]")) for part in re.findall(r"\[[^\]]*\]|[^,]+", text)]
    return [coerce(key, part) for part in text.split(",")]


def load_study(path: str | Path) -> Study:
    """Import a study file and return its ``study``."""
    path = Path(path)
    if not path.is_file():
        raise StudyError(f"no study file at {path}")
    spec = importlib.util.spec_from_file_location(f"harness_study_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except StudyError as err:
        raise StudyError(f"{path}: {err}") from None
    except Exception as err:  # a broken study file is a user error, shown as one line
        raise StudyError(f"{path}: {type(err).__name__}: {err}") from None
    study = getattr(module, "study", None)
    if not isinstance(study, Study):
        raise StudyError(f"{path} must define `study = Study(...)`")
    return dataclasses.replace(study, source=path.read_text())
