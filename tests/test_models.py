"""harness.models: shapes, hand-counted parameters, Keras initialisation, errors."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from harness.models import ModelError, build_model


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# --- dense autoencoder ----------------------------------------------------------------


def test_dense_ae_shapes_and_parameter_count():
    torch.manual_seed(0)
    model = build_model("dense_ae", (1, 28, 28), 10, latent=20)
    out = model(torch.rand(5, 1, 28, 28))
    assert out.shape == (5, 784)
    assert ((out > 0) & (out < 1)).all()  # sigmoid output
    assert model.encoder.weight.shape == (20, 784) and model.decoder.weight.shape == (784, 20)
    assert n_params(model) == 784 * 20 + 20 + 20 * 784 + 784  # = 32164


def test_dense_ae_computes_what_the_paper_describes():
    torch.manual_seed(0)
    model = build_model("dense_ae", (3, 2, 2), 10, latent=3, output_activation="linear")
    x = torch.randn(4, 3, 2, 2)
    flat = x.reshape(4, 12)
    code = torch.sigmoid(flat @ model.encoder.weight.T + model.encoder.bias)
    expected = code @ model.decoder.weight.T + model.decoder.bias
    torch.testing.assert_close(model(x), expected)
    assert (model(x * 100) < 0).any()  # linear output is not squashed


# --- CNN --------------------------------------------------------------------------------

# Spatial size of a 32x32 input after each block, by hand: "valid" conv -2 then pool //2;
# "same" conv keeps the size, pool halves it.
CNN_CASES = [
    ((8,), "valid", 15), ((8, 16), "valid", 6), ((8, 16, 4), "valid", 2),
    ((8,), "same", 16), ((8, 16), "same", 8), ((8, 16, 4), "same", 4),
]


@pytest.mark.parametrize("arch,padding,side", CNN_CASES)
def test_cnn_shapes(arch, padding, side):
    torch.manual_seed(0)
    model = build_model("cnn", (3, 32, 32), 10, arch=arch, padding=padding)
    assert model(torch.rand(2, 3, 32, 32)).shape == (2, 10)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == list(arch)
    assert all(c.kernel_size == (3, 3) and c.stride == (1, 1) for c in convs)
    assert [m for m in model.modules() if isinstance(m, nn.Linear)][0].in_features == arch[-1] * side * side
    assert model.features(torch.rand(1, 3, 32, 32)).shape == (1, arch[-1], side, side)


def test_cnn_parameter_counts_by_hand():
    # (1, 8, 8), one block of 2 filters: conv 1*2*9 + 2 = 20; 8 -> 6 -> 3, so the
    # classifier sees 2*3*3 = 18 features: 18*10 + 10 = 190.
    assert n_params(build_model("cnn", (1, 8, 8), 10, arch=(2,))) == 20 + 190
    # (1, 12, 12), blocks of 2 and 3: conv1 20; 12 -> 10 -> 5; conv2 2*3*9 + 3 = 57;
    # 5 -> 3 -> 1; classifier 3*10 + 10 = 40.
    assert n_params(build_model("cnn", (1, 12, 12), 10, arch=(2, 3))) == 20 + 57 + 40
    # "same" padding: (3, 8, 8), one block of 4: conv 3*4*9 + 4 = 112; 8 -> 8 -> 4;
    # classifier 4*4*4*5 + 5 = 325.
    assert n_params(build_model("cnn", (3, 8, 8), 5, arch=(4,), padding="same")) == 112 + 325


def test_cnn_block_is_conv_leakyrelu_maxpool():
    torch.manual_seed(0)
    model = build_model("cnn", (1, 6, 6), 3, arch=(1,))
    kinds = [type(m) for m in model.features]
    assert kinds == [nn.Conv2d, nn.LeakyReLU, nn.MaxPool2d]
    assert model.features[1].negative_slope == 0.3  # Keras' LeakyReLU default alpha
    assert build_model("cnn", (1, 6, 6), 3, arch=(1,), leaky_slope=0.01).features[1].negative_slope == 0.01
    # By hand on a 6x6 input: conv -> 4x4, LeakyReLU, max over 2x2 windows -> 2x2.
    x = torch.randn(1, 1, 6, 6)
    z = nn.functional.conv2d(x, model.features[0].weight, model.features[0].bias)
    z = torch.where(z > 0, z, 0.3 * z)
    pooled = z.reshape(1, 1, 2, 2, 2, 2).amax(dim=(3, 5))
    torch.testing.assert_close(model.features(x), pooled)


def test_cnn_dropout_in_the_head():
    model = build_model("cnn", (3, 16, 16), 10, arch=(4,), dropout=0.5)
    drops = [m for m in model.classifier if isinstance(m, nn.Dropout)]
    assert len(drops) == 1 and drops[0].p == 0.5
    assert not any(isinstance(m, nn.Dropout) for m in build_model("cnn", (3, 16, 16), 10, arch=(4,)).modules())


def test_cnn_collapsing_input_is_an_error():
    # 8 -> 6 -> 3 after block 1; 3 -> 1 -> 0 after block 2.
    with pytest.raises(ModelError, match="block 2"):
        build_model("cnn", (1, 8, 8), 10, arch=(4, 4, 4))
    build_model("cnn", (1, 8, 8), 10, arch=(4, 4, 4), padding="same")  # 8 -> 4 -> 2 -> 1 is fine


# --- initialisation ---------------------------------------------------------------------


def _glorot_bound(fan_in: int, fan_out: int) -> float:
    return math.sqrt(6.0 / (fan_in + fan_out))


def test_keras_init_is_glorot_uniform_with_zero_biases():
    torch.manual_seed(0)
    ae = build_model("dense_ae", (1, 28, 28), 10, latent=50)
    cnn = build_model("cnn", (3, 32, 32), 10, arch=(32, 64))
    cases = [
        (ae.encoder.weight, _glorot_bound(784, 50)),
        (ae.decoder.weight, _glorot_bound(50, 784)),
        (cnn.features[0].weight, _glorot_bound(3 * 9, 32 * 9)),  # Keras' conv fans
        (cnn.features[3].weight, _glorot_bound(32 * 9, 64 * 9)),
        (cnn.classifier[-1].weight, _glorot_bound(64 * 6 * 6, 10)),
    ]
    for weight, bound in cases:
        assert weight.abs().max() <= bound
        assert weight.abs().max() > 0.95 * bound
        # Uniform(-b, b) has variance b^2 / 3.
        assert abs(weight.var().item() / (bound**2 / 3) - 1) < 0.1
    for module in list(ae.modules()) + list(cnn.modules()):
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            assert torch.count_nonzero(module.bias) == 0


def test_torch_init_keeps_pytorch_defaults():
    torch.manual_seed(0)
    cnn = build_model("cnn", (3, 32, 32), 10, arch=(32,), init="torch")
    conv = cnn.features[0]
    # PyTorch's default conv init is uniform in +-1/sqrt(fan_in), wider than glorot here.
    assert conv.weight.abs().max() > _glorot_bound(27, 288)
    assert conv.weight.abs().max() <= 1 / math.sqrt(27)
    assert torch.count_nonzero(conv.bias) > 0


@pytest.mark.parametrize("kwargs", [dict(name="dense_ae", latent=16), dict(name="cnn", arch=(4, 8))])
def test_build_is_deterministic_given_the_global_seed(kwargs):
    def state(seed):
        torch.manual_seed(seed)
        return build_model(input_shape=(3, 16, 16), n_classes=10, **kwargs).state_dict()

    a, b, c = state(1), state(1), state(2)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a if k.endswith("weight"))


# --- torchvision models -----------------------------------------------------------------


@pytest.mark.parametrize("name", ["vgg16", "resnet50"])
def test_torchvision_models_give_logits(name):
    torch.manual_seed(0)
    model = build_model(name, (3, 64, 64), 10).eval()
    with torch.no_grad():
        assert model(torch.rand(2, 3, 64, 64)).shape == (2, 10)


def test_torchvision_head_dropout():
    vgg = build_model("vgg16", (3, 64, 64), 10, dropout=0.5)
    assert [m.p for m in vgg.classifier if isinstance(m, nn.Dropout)] == [0.5, 0.5]
    vgg = build_model("vgg16", (3, 64, 64), 10)
    assert [m.p for m in vgg.classifier if isinstance(m, nn.Dropout)] == [0.0, 0.0]
    resnet = build_model("resnet50", (3, 64, 64), 10, dropout=0.5)
    assert isinstance(resnet.fc[0], nn.Dropout) and resnet.fc[0].p == 0.5 and resnet.fc[1].out_features == 10
    assert isinstance(build_model("resnet50", (3, 64, 64), 10).fc, nn.Linear)


# --- errors -----------------------------------------------------------------------------


@pytest.mark.parametrize("name,kwargs,match", [
    ("cnnn", dict(arch=(4,)), "unknown model 'cnnn' \\(did you mean 'cnn'\\?\\)"),
    ("VGG16", {}, "did you mean 'vgg16'"),
    ("dense_ae", dict(latent=4, latent_activation="sigmod"), "did you mean 'sigmoid'"),
    ("dense_ae", dict(latent=4, output_activation="relu6"), "output_activation"),
    ("cnn", dict(arch=(4,), padding="SAME"), "did you mean 'same'"),
    ("cnn", dict(arch=(4,), init="glorot"), "unknown init"),
    ("dense_ae", {}, "latent"),
    ("cnn", {}, "arch"),
    ("cnn", dict(arch=(4, 0)), "arch"),
    ("cnn", dict(arch=(4,), dropout=1.0), "dropout"),
    ("vgg16", {}, "3-channel"),
])
def test_bad_configurations_are_one_line_model_errors(name, kwargs, match):
    with pytest.raises(ModelError, match=match) as err:
        build_model(name, (1, 28, 28), 10, **kwargs)
    assert "\n" not in str(err.value)


def test_small_images_for_torchvision_models_are_an_error():
    with pytest.raises(ModelError, match="32x32"):
        build_model("resnet50", (3, 16, 16), 10)


def test_model_error_is_a_user_error():
    from harness.errors import UserError

    assert issubclass(ModelError, UserError)
