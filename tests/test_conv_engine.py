"""harness.training.conv_engine: the CPU-shaped CNN step (pool before the activation,
channels-last maps, the first convolution as a matmul) is the model's own function: its
logits, task losses and gradients equal autograd's through ConvClassifier itself, and a
packed member of a 1-, 2- or 3-block CNN, guided on its first or on every conv layer,
trains as its replication trains alone (harness.training.loop.train), epoch for epoch."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

from harness.data import load_splits
from harness.models import ConvClassifier
from harness.study import build_config
from harness.training import conv_engine, pack
from harness.training.loop import seeded_model, train

from test_pack import assert_same, configs


def _members(template: ConvClassifier, size: int) -> list[torch.Tensor]:
    return [torch.stack([torch.randn_like(p) * 0.3 for _ in range(size)]) for p in template.parameters()]


@pytest.mark.parametrize("shape, arch, padding, slope", [
    ((1, 28, 28), (4,), "valid", 0.3),
    ((1, 28, 28), (4, 5, 3), "valid", 0.3),  # 26 -> 13 -> 11 -> 5 (floored) -> 3 -> 1
    ((3, 12, 12), (4, 4), "same", 0.3),  # three input channels, padded
    ((1, 13, 13), (3, 2), "valid", -0.2),  # a negative slope: activation first, the module's order
    ((1, 9, 9), (3,), "same", 0.0),  # ReLU: ties of zeros everywhere after the activation
])
def test_step_and_forward_are_autograds_through_the_module(shape, arch, padding, slope):
    torch.manual_seed(0)
    size, batch = 3, 6
    template = ConvClassifier(shape, 10, arch, padding, slope, 0.0)
    params = _members(template, size)
    names = [n for n, _ in template.named_parameters()]
    x = torch.rand(size, batch, *shape)
    x[x < 0.4] = 0  # zero regions as in MNIST: pooling windows of equal values
    y = torch.randint(0, 10, (size, batch))
    engine = conv_engine.ConvEngine(template)
    task, logits, grads = engine.task_and_grads(params, x, y)
    for i in range(size):
        mine = [p[i].clone().requires_grad_() for p in params]
        ref_logits = functional_call(template, dict(zip(names, mine)), (x[i],))
        ref_loss = F.cross_entropy(ref_logits, y[i])
        ref_grads = torch.autograd.grad(ref_loss, mine)
        torch.testing.assert_close(logits[i], ref_logits.detach(), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(task[i], ref_loss.detach(), rtol=1e-5, atol=1e-6)
        for g, ref in zip(grads, ref_grads):
            torch.testing.assert_close(g[i], ref, rtol=1e-4, atol=1e-5)
    shared = torch.rand(7, *shape)
    out = engine.forward(params, shared)
    for i in range(size):
        ref = functional_call(template, dict(zip(names, [p[i] for p in params])), (shared,))
        torch.testing.assert_close(out[i], ref, rtol=1e-5, atol=1e-5)


def test_only_the_papers_cnn_without_dropout_takes_the_engine():
    assert conv_engine.supports(ConvClassifier((1, 28, 28), 10, (4,), "valid", 0.3, 0.0))
    assert not conv_engine.supports(ConvClassifier((1, 28, 28), 10, (4,), "valid", 0.3, 0.5))
    assert not conv_engine.supports(torch.nn.Linear(3, 3))


@pytest.fixture(scope="module")
def mnist():
    return load_splits("mnist", None, n_train=256, n_val=128)


@pytest.mark.slow
@pytest.mark.parametrize("arch, placement", [((4,), "first"), ((4, 4), "first"), ((4, 4), "all"),
                                             ((3, 3, 3), "first"), ((3, 3, 3), "all")])
def test_packed_members_train_as_their_replications_alone(mnist, arch, placement):
    """The engine inside a pack: histories, stopping epochs, metrics and profiles of every
    member are its lone run's, for 1-, 2- and 3-block CNNs on MNIST, first and all layers."""
    common = {"dataset": "mnist", "model": "cnn", "task": "classification", "arch": arch, "placement": placement,
              "train.max_epochs": 6, "train.patience": 1, "data.n_train": 256, "data.n_val": 128}
    cfgs = configs(common, [0.0, 1e-2, 10.0], [0, 1])
    packed = pack.train_pack(cfgs, mnist, "cpu")
    assert isinstance(pack._engine(seeded_model(cfgs[0], mnist.input_shape, mnist.n_classes), cfgs[0]),
                      conv_engine.ConvEngine)
    for config, outcome in zip(cfgs, packed):
        assert_same(train(config, mnist, "cpu"), outcome)
