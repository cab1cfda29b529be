"""The typed settings of a replication: :class:`Config` and its nested dataclasses, a
comment on every field, the dotted keys (``train.lr``) and their types, the keys added
late, the words a setting may take, and ``flatten``.

Imports nothing heavy: ``harness --help`` and study loading stay fast.
"""

from __future__ import annotations

import dataclasses
import operator
from dataclasses import dataclass, field, fields
from typing import Any, get_type_hints

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
    # The model's matmuls and convolutions: "float32", or "bf16" = torch.autocast to
    # bfloat16 (AMX on a recent Xeon, tensor cores on a GPU; 8-bit mantissa), losses and
    # the entropy term still in float32/float64. A numerics change, so a setting of its own
    # and never automatic; its effect on recorded numbers: docs/performance.md.
    precision: str = "float32"
    # torch.compile of the model's forward (its backward through AOTAutograd) in this
    # torch.compile mode, or "off". The same math, fused into fewer kernels: results equal
    # the eager ones to float32 rounding (tested). A pack then goes through the vmap engine
    # (harness.training.pack), not the hand-written dense step. Each worker compiles once per shape
    # (seconds to a minute). On a 2-core CPU it was no faster (docs/performance.md); on a
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
    "train.precision",
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
# typo fails at once instead of after hours of training. (dataset, model and task names are
# checked by their registries, which a study file's own pieces join (harness.custom), before
# a run records anything: harness.schedule.plan.check_names, harness.training.checks.)
CHOICES = {
    "train.optimizer": ("adam", "sgd"),
    "train.monitor": ("task", "total", "total_float32", "acc"),
    "train.seg_loss": ("mse", "bce"),
    "train.compile": ("off", "default", "reduce-overhead", "max-autotune"),
    "train.precision": ("float32", "bf16"),
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


def flatten(config: Config) -> dict[str, Any]:
    """Config -> {dotted key: value}, tuples kept as tuples."""
    return dict(zip(KEYS, _GET_KEYS(config)))


# every dotted key's value in one C call: flatten is called for each of a grid's
# replications, and a loop over the keys was most of listing a large grid
_GET_KEYS = operator.attrgetter(*KEYS)
