"""Architectures by name: the paper's dense autoencoder and small CNN, torchvision's
VGG-16 and ResNet-50, and the original U-Net (Ronneberger et al. 2015) for segmentation.
Each model is a builder registered in ``MODELS`` beside its class, with the task it trains
with (``MODELS[name].task``): adding a model is one decorated def here.

`build_model` draws every initial weight from the global torch RNG, so the caller seeds
(`torch.manual_seed`) and the same seed gives the same model.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from harness.errors import UserError
from harness.registry import Registry, did_you_mean

ACTIVATIONS = {"sigmoid": nn.Sigmoid, "linear": nn.Identity, "relu": nn.ReLU, "tanh": nn.Tanh}
PADDINGS = {"valid": 0, "same": 1}  # Keras names -> padding of a 3x3, stride-1 conv
INITS = ("keras", "torch")


class ModelError(UserError):
    """A model configuration the user can fix (unknown name, bad option); one line."""


@dataclass(frozen=True)
class ModelEntry:
    """A registry entry: how one model is built, and the task it trains with.

    ``build(input_shape, n_classes, **settings)`` is called by build_model after its shared
    checks, with every keyword of build_model; each builder names the settings it reads and
    takes the rest as ``**_``. It checks its own settings (a ModelError) and draws every
    initial weight from the global torch RNG.
    """

    build: Callable[..., nn.Module]
    task: str  # "reconstruction" | "classification" | "segmentation"


# In registration order, which is the order of the "known: ..." list a user sees; so the
# builders below sit in that order: dense_ae, cnn, vgg16, resnet50, unet.
MODELS: Registry[ModelEntry] = Registry("model")


def registers(name: str, task: str = "classification"):
    """``@registers("cnn")`` above a builder adds it to MODELS: a model is one def here."""
    def add(build: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        MODELS.register(name, ModelEntry(build, task))
        return build

    return add


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


@registers("dense_ae", task="reconstruction")
def _dense_ae(input_shape, n_classes, *, latent, latent_activation, output_activation, init, **_) -> nn.Module:
    if latent < 1:
        raise ModelError("dense_ae needs latent >= 1 (the width of the code layer)")
    n_inputs = input_shape[0] * input_shape[1] * input_shape[2]
    return _initialised(DenseAutoencoder(n_inputs, latent, latent_activation, output_activation), init)


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


@registers("cnn")
def _cnn(input_shape, n_classes, *, arch, padding, leaky_slope, dropout, init, **_) -> nn.Module:
    if not arch or any(int(w) < 1 for w in arch):
        raise ModelError(f"cnn needs arch, one positive conv width per block (e.g. (32, 32)), got {tuple(arch)}")
    return _initialised(ConvClassifier(input_shape, n_classes, tuple(int(w) for w in arch), padding, leaky_slope, dropout), init)


def _block_output_size(size: int, padding: str) -> int:
    after_conv = size - 2 if padding == "valid" else size
    return after_conv // 2  # MaxPool2d(2, 2) floors, as Keras' "valid" pooling does


# vgg16 and resnet50 always keep torchvision's own initialisation (they read no `init`).
@registers("vgg16")
def _vgg16(input_shape, n_classes, *, dropout, **_) -> nn.Module:
    torchvision = _torchvision_for("vgg16", input_shape)
    # VGG's head already has two Dropout layers; `dropout` sets their rate (0 disables).
    return torchvision.models.vgg16(weights=None, num_classes=n_classes, dropout=dropout)


@registers("resnet50")
def _resnet50(input_shape, n_classes, *, dropout, **_) -> nn.Module:
    torchvision = _torchvision_for("resnet50", input_shape)
    model = torchvision.models.resnet50(weights=None, num_classes=n_classes)
    if dropout > 0:
        # ResNet's head has no dropout; put one before the final layer, keeping its init.
        model.fc = nn.Sequential(nn.Dropout(dropout), model.fc)
    return model


def _torchvision_for(name: str, input_shape: tuple[int, int, int]):
    """torchvision, once ``input_shape`` suits its ImageNet models (imported here, not at
    the top: it is slow to import and only these two models need it)."""
    import torchvision.models

    channels, height, width = input_shape
    if channels != 3:
        raise ModelError(f"{name} takes 3-channel images, got input_shape {input_shape}")
    if min(height, width) < 32:  # five stride-2 stages: smaller inputs vanish
        raise ModelError(f"{name} needs images of at least 32x32, got {height}x{width}")
    return torchvision


class UNet(nn.Module):
    """The original U-Net (Ronneberger, Fischer, Brox 2015): four levels of
    [conv 3x3 -> ReLU -> conv 3x3 -> ReLU] then maxpool 2x2 on the way down, a bottom block,
    and four levels of [up-conv 2x2 (stride 2) -> concatenate the skip -> conv 3x3 -> ReLU ->
    conv 3x3 -> ReLU] on the way up, then a 1x1 conv to ``n_out`` logits. Widths are
    base, 2 base, 4 base, 8 base, 16 base at the bottom (64 ... 1024 in the paper).

    padding "valid" is the original design (every 3x3 conv shrinks the map by 2 and each
    skip is centre-cropped to the up path's size; the output is smaller than the input);
    "same" keeps every map at its level's size, so the output is the input's size (what
    Keras ports such as the one the entropy paper adapted use). ``dropout`` > 0 puts
    Dropout at the end of the contracting path, where the original has it.

    Conv2d modules in forward order: down1.0, down1.2, down2.0, ..., bottom.0, bottom.2,
    up4.conv.0, up4.conv.2, ..., up1.conv.2, out (19 in all). forward returns logits
    (N, n_out, H', W'); the sigmoid lives in the loss.
    """

    def __init__(self, in_channels: int, n_out: int, base: int, padding: str, dropout: float):
        super().__init__()
        pad = PADDINGS[padding]
        widths = [base * 2**i for i in range(5)]

        def double_conv(cin: int, cout: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=pad), nn.ReLU(inplace=True),
                                 nn.Conv2d(cout, cout, 3, padding=pad), nn.ReLU(inplace=True))

        channels = in_channels
        for level in range(1, 5):
            setattr(self, f"down{level}", double_conv(channels, widths[level - 1]))
            channels = widths[level - 1]
        self.pool = nn.MaxPool2d(2, 2)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.bottom = double_conv(widths[3], widths[4])
        for level in range(4, 0, -1):
            setattr(self, f"up{level}", _UpBlock(widths[level], widths[level - 1], double_conv))
        self.out = nn.Conv2d(widths[0], n_out, 1)

    def forward(self, x: Tensor) -> Tensor:
        skips = []
        for level in range(1, 5):
            x = getattr(self, f"down{level}")(x)
            skips.append(x)
            x = self.pool(x)
        x = self.bottom(self.dropout(x))
        for level in range(4, 0, -1):
            x = getattr(self, f"up{level}")(x, skips[level - 1])
        return self.out(x)


class _UpBlock(nn.Module):
    """up-conv 2x2 stride 2 halving the channels, concatenate the (centre-cropped) skip,
    then the level's two 3x3 convs."""

    def __init__(self, cin: int, cout: int, double_conv):
        super().__init__()
        self.upconv = nn.ConvTranspose2d(cin, cout, 2, stride=2)
        self.conv = double_conv(2 * cout, cout)

    def forward(self, x: Tensor, skip: Tensor) -> Tensor:
        x = self.upconv(x)
        dh, dw = skip.shape[-2] - x.shape[-2], skip.shape[-1] - x.shape[-1]
        skip = skip[..., dh // 2 : dh // 2 + x.shape[-2], dw // 2 : dw // 2 + x.shape[-1]]
        return self.conv(torch.cat([skip, x], dim=1))


def unet_output_size(size: int, padding: str) -> int:
    """Side of the U-Net's output for an input side ``size`` (0 or less: it vanishes)."""
    if padding == "same":
        return size if size % 16 == 0 else 0  # four exact halvings keep skips aligned
    for _ in range(4):
        size = (size - 4) // 2
    size -= 4
    for _ in range(4):
        size = size * 2 - 4
    return size


@registers("unet", task="segmentation")
def _unet(input_shape, n_classes, *, base_width, padding, dropout, init, **_) -> nn.Module:
    if base_width < 1:
        raise ModelError(f"unet needs base_width >= 1, got {base_width}")
    for side in input_shape[1:]:
        if unet_output_size(side, padding) < 1:
            need = "a multiple of 16" if padding == "same" else "of at least 188 pixels"
            raise ModelError(f"unet with padding {padding!r} needs an image side {need}, got {input_shape[1]}x{input_shape[2]}")
    return _initialised(UNet(input_shape[0], n_classes, base_width, padding, dropout), init)


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
    base_width: int = 64,
) -> nn.Module:
    """Build model `name` for inputs of shape (C, H, W) = input_shape.

    dense_ae needs `latent` (width of the code); cnn needs `arch` (one conv width per block).
    unet gives `n_classes` output channels of logits per pixel (1 for binary masks), with
    `base_width` channels at its first level, `padding` as UNet describes, and Keras'
    (init="keras") or PyTorch's initialisation.
    init="keras" gives dense_ae and cnn Keras' glorot-uniform weights and zero biases (what
    the paper's models start from); "torch" keeps PyTorch's defaults. vgg16 and resnet50
    always keep torchvision's own initialisation; `dropout` sets their head's dropout.
    """
    # Checked against a tuple of the names, not the registry itself: an unhashable name (a
    # list) is then "unknown", not a TypeError, and the hint is matched lower-cased.
    _check_name("model", name, MODELS.names())
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
    return MODELS[name].build(input_shape, n_classes, latent=latent, arch=arch, latent_activation=latent_activation,
                              output_activation=output_activation, padding=padding, leaky_slope=leaky_slope,
                              dropout=dropout, init=init, base_width=base_width)


def _check_name(what: str, value: str, known: tuple[str, ...]) -> None:
    if value not in known:
        raise ModelError(f"unknown {what} {value!r}{did_you_mean(str(value).lower(), known)}; known: {', '.join(known)}")


def _initialised(model: nn.Module, init: str) -> nn.Module:
    """``model`` with Keras' initialisation when init="keras"; "torch" keeps PyTorch's."""
    if init == "keras":
        _keras_init(model)
    return model


@torch.no_grad()
def _keras_init(model: nn.Module) -> None:
    """glorot_uniform weights, zero biases: Keras' Dense/Conv2D/Conv2DTranspose defaults.

    torch's xavier fans for a conv weight (out, in, kh, kw) are in*kh*kw and out*kh*kw,
    the same as Keras' for its (kh, kw, in, out) kernel, so the bounds agree.
    """
    for module in model.modules():
        if isinstance(module, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.xavier_uniform_(module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
