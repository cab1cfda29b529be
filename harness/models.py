"""Architectures by name: the paper's dense autoencoder and small CNN, and torchvision's
VGG-16 and ResNet-50.

`build_model` draws every initial weight from the global torch RNG, so the caller seeds
(`torch.manual_seed`) and the same seed gives the same model.
"""

from __future__ import annotations

import difflib

import torch
from torch import Tensor, nn

from harness.errors import UserError

MODELS = ("dense_ae", "cnn", "vgg16", "resnet50")
ACTIVATIONS = {"sigmoid": nn.Sigmoid, "linear": nn.Identity, "relu": nn.ReLU, "tanh": nn.Tanh}
PADDINGS = {"valid": 0, "same": 1}  # Keras names -> padding of a 3x3, stride-1 conv
INITS = ("keras", "torch")


class ModelError(UserError):
    """A model configuration the user can fix (unknown name, bad option); one line."""


class DenseAutoencoder(nn.Module):
    """input (N, C, H, W) -> flatten (N, D) -> encoder -> latent act -> decoder -> output act (N, D).

    `encoder` is the first weight matrix, the one the paper's E1/E2 entropy loss acts on.
    """

    def __init__(self, n_inputs: int, latent: int, latent_activation: str, output_activation: str):
        super().__init__()
        self.encoder = nn.Linear(n_inputs, latent)
        self.latent_activation = ACTIVATIONS[latent_activation]()
        self.decoder = nn.Linear(latent, n_inputs)
        self.output_activation = ACTIVATIONS[output_activation]()

    def forward(self, x: Tensor) -> Tensor:
        """Reconstruction of x, flattened: (N, C*H*W)."""
        return self.output_activation(self.decoder(self.latent_activation(self.encoder(x.flatten(1)))))


class ConvClassifier(nn.Module):
    """E3's CNN: blocks of [conv 3x3 stride 1 -> LeakyReLU -> maxpool 2x2 stride 2], then a
    linear classifier. forward returns logits (N, n_classes); softmax lives in the loss."""

    def __init__(self, input_shape: tuple[int, int, int], n_classes: int, arch: tuple[int, ...],
                 padding: str, leaky_slope: float, dropout: float):
        super().__init__()
        channels, height, width = input_shape
        blocks = []
        for i, out in enumerate(arch, start=1):
            blocks += [nn.Conv2d(channels, out, 3, stride=1, padding=PADDINGS[padding]),
                       nn.LeakyReLU(leaky_slope),
                       nn.MaxPool2d(2, 2)]
            height, width = _block_output_size(height, padding), _block_output_size(width, padding)
            if height < 1 or width < 1:
                raise ModelError(f"cnn arch {tuple(arch)} with padding {padding!r} shrinks the "
                                 f"{input_shape[1]}x{input_shape[2]} input to nothing at block {i}")
            channels = out
        self.features = nn.Sequential(*blocks)
        head = [nn.Flatten()] + ([nn.Dropout(dropout)] if dropout > 0 else [])
        self.classifier = nn.Sequential(*head, nn.Linear(channels * height * width, n_classes))

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))


def _block_output_size(size: int, padding: str) -> int:
    after_conv = size - 2 if padding == "valid" else size
    return after_conv // 2  # MaxPool2d(2, 2) floors, as Keras' "valid" pooling does


def build_model(
    name: str,
    input_shape: tuple[int, int, int],
    n_classes: int,
    *,
    latent: int = 0,
    arch: tuple[int, ...] = (),
    latent_activation: str = "sigmoid",
    output_activation: str = "sigmoid",
    padding: str = "valid",
    leaky_slope: float = 0.3,
    dropout: float = 0.0,
    init: str = "keras",
) -> nn.Module:
    """Build model `name` for inputs of shape (C, H, W) = input_shape.

    dense_ae needs `latent` (width of the code); cnn needs `arch` (one conv width per block).
    init="keras" gives dense_ae and cnn Keras' glorot-uniform weights and zero biases (what
    the paper's models start from); "torch" keeps PyTorch's defaults. vgg16 and resnet50
    always keep torchvision's own initialisation; `dropout` sets their head's dropout.
    """
    _check_name("model", name, MODELS)
    _check_name("latent_activation", latent_activation, tuple(ACTIVATIONS))
    _check_name("output_activation", output_activation, tuple(ACTIVATIONS))
    _check_name("padding", padding, tuple(PADDINGS))
    _check_name("init", init, INITS)
    if len(input_shape) != 3 or any(int(s) < 1 for s in input_shape):
        raise ModelError(f"input_shape must be (C, H, W) with positive sizes, got {tuple(input_shape)}")
    if not 0.0 <= dropout < 1.0:
        raise ModelError(f"dropout must be in [0, 1), got {dropout}")
    if n_classes < 1:
        raise ModelError(f"n_classes must be >= 1, got {n_classes}")
    input_shape = tuple(int(s) for s in input_shape)

    if name == "dense_ae":
        if latent < 1:
            raise ModelError("dense_ae needs latent >= 1 (the width of the code layer)")
        n_inputs = input_shape[0] * input_shape[1] * input_shape[2]
        model = DenseAutoencoder(n_inputs, latent, latent_activation, output_activation)
    elif name == "cnn":
        if not arch or any(int(w) < 1 for w in arch):
            raise ModelError(f"cnn needs arch, one positive conv width per block (e.g. (32, 32)), got {tuple(arch)}")
        model = ConvClassifier(input_shape, n_classes, tuple(int(w) for w in arch), padding, leaky_slope, dropout)
    else:
        return _build_torchvision(name, input_shape, n_classes, dropout)
    if init == "keras":
        _keras_init(model)
    return model


def _check_name(what: str, value: str, known: tuple[str, ...]) -> None:
    if value not in known:
        close = difflib.get_close_matches(str(value).lower(), known, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ModelError(f"unknown {what} {value!r}{hint}; known: {', '.join(known)}")


@torch.no_grad()
def _keras_init(model: nn.Module) -> None:
    """glorot_uniform weights, zero biases: Keras' Dense/Conv2D defaults.

    torch's xavier fans for a conv weight (out, in, kh, kw) are in*kh*kw and out*kh*kw,
    the same as Keras' for its (kh, kw, in, out) kernel, so the bounds agree.
    """
    for module in model.modules():
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            nn.init.xavier_uniform_(module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)


def _build_torchvision(name: str, input_shape: tuple[int, int, int], n_classes: int, dropout: float) -> nn.Module:
    import torchvision.models

    channels, height, width = input_shape
    if channels != 3:
        raise ModelError(f"{name} takes 3-channel images, got input_shape {input_shape}")
    if min(height, width) < 32:  # five stride-2 stages: smaller inputs vanish
        raise ModelError(f"{name} needs images of at least 32x32, got {height}x{width}")
    if name == "vgg16":
        # VGG's head already has two Dropout layers; `dropout` sets their rate (0 disables).
        return torchvision.models.vgg16(weights=None, num_classes=n_classes, dropout=dropout)
    model = torchvision.models.resnet50(weights=None, num_classes=n_classes)
    if dropout > 0:
        # ResNet's head has no dropout; put one before the final layer, keeping its init.
        model.fc = nn.Sequential(nn.Dropout(dropout), model.fc)
    return model
