"""Tests of harness.entropy against the paper's worked examples and explicit matrices.

The reference numbers never come from the formulas under test: the completed matrices W'
(eq. 6) and C'_M (eq. 15-17) are built entry by entry here and their determinants taken
with torch.linalg.
"""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from harness import entropy
from harness.entropy import determinants
from harness.entropy import (
    conv_entropy_change,
    dense_entropy_change,
    entropy_loss,
    entropy_loss_unweighted,
    entropy_profile,
    entropy_stats,
    guided_layers,
    logabsdet,
)

D = torch.float64

# ------------------------------------------------------------------ explicit constructions


def complete_dense(W):
    """W' of eq. 6 for a weight W of shape (N, d): identity bottom-right, rest kept."""
    N, d = W.shape
    if N == d:
        return W.clone()
    if N < d:  # (W  W_{N x (d-N)}; 0  I_{d-N})
        bottom = torch.cat([torch.zeros(d - N, N, dtype=W.dtype), torch.eye(d - N, dtype=W.dtype)], 1)
        return torch.cat([W, bottom], 0)
    # N > d: (W_sq  0; W_{(N-d) x d}  I_{N-d})
    right = torch.cat([torch.zeros(d, N - d, dtype=W.dtype), torch.eye(N - d, dtype=W.dtype)], 0)
    return torch.cat([W, right], 1)


def toeplitz_block(row, w):
    """B_j of eq. 15: (w-q+1, w), row i holds the filter row c_j starting at column i."""
    q = row.numel()
    B = torch.zeros(w - q + 1, w, dtype=row.dtype)
    for i in range(w - q + 1):
        B[i, i : i + q] = row
    return B


def conv_matrix(C, l, w):
    """C_M of eq. 14: ((l-p+1)(w-q+1), l w), so that C_M @ vec(X) = vec(C * X)."""
    p, q = C.shape
    rows = []
    for i in range(l - p + 1):
        blocks = [torch.zeros(w - q + 1, w, dtype=C.dtype) for _ in range(l)]
        for k in range(p):
            blocks[i + k] = toeplitz_block(C[k], w)
        rows.append(torch.cat(blocks, 1))
    return torch.cat(rows, 0)


def complete_conv(C, l, w):
    """C'_M of eq. 16-17: every B_j padded to B_j' = (B_j; 0 I_{q-1}), then (C_sq; 0 I_{(p-1)w})."""
    p, q = C.shape
    def padded(j):
        bottom = torch.cat([torch.zeros(q - 1, w - q + 1, dtype=C.dtype), torch.eye(q - 1, dtype=C.dtype)], 1)
        return torch.cat([toeplitz_block(C[j], w), bottom], 0)  # (w, w)
    rows = []
    for i in range(l - p + 1):
        blocks = [torch.zeros(w, w, dtype=C.dtype) for _ in range(l)]
        for k in range(p):
            blocks[i + k] = padded(k)
        rows.append(torch.cat(blocks, 1))
    zeros = torch.zeros((p - 1) * w, (l - p + 1) * w, dtype=C.dtype)
    tail = torch.cat([zeros, torch.eye((p - 1) * w, dtype=C.dtype)], 1)
    return torch.cat(rows + [tail], 0)


# ------------------------------------------------------------------ paper examples

W_EXAMPLE4 = torch.tensor([[3, 0, 9, -3, 4], [1, 5, -1, 4, 2], [0, 4, -2, 1, 5]], dtype=D)


def test_example4_dense():
    W_prime = complete_dense(W_EXAMPLE4)
    expected = torch.tensor(
        [[3, 0, 9, -3, 4], [1, 5, -1, 4, 2], [0, 4, -2, 1, 5], [0, 0, 0, 1, 0], [0, 0, 0, 0, 1]], dtype=D
    )
    assert torch.equal(W_prime, expected)  # the matrix printed in the paper
    det = torch.linalg.det(W_prime).item()
    assert det == pytest.approx(18.0)  # 3(5*-2 - -1*4) + 9(1*4 - 0) by hand
    assert math.exp(dense_entropy_change(W_EXAMPLE4).item()) == pytest.approx(abs(det), rel=1e-12)
    # the transposed (Keras-orientation) kernel has the same square-part determinant
    assert dense_entropy_change(W_EXAMPLE4.T).item() == pytest.approx(math.log(18.0), rel=1e-12)


X5 = torch.tensor([[3, 4, 1, 2], [0, 0, 5, 6], [2, 1, 0, 3], [1, 4, 2, 5]], dtype=D)
C5 = torch.tensor([[2, 1], [4, 3], [-2, 1]], dtype=D)
Z5 = torch.tensor([[7, 22, 45], [13, 3, 26]], dtype=D)


def test_example5_conv():
    assert torch.equal(F.conv2d(X5[None, None], C5[None, None])[0, 0], Z5)
    C_M = conv_matrix(C5, 4, 4)
    assert C_M.shape == (6, 16)
    assert torch.equal(C_M @ X5.flatten(), Z5.flatten())
    C_prime = complete_conv(C5, 4, 4)
    assert C_prime.shape == (16, 16)
    assert torch.equal(C_prime, C_prime.triu())  # upper triangular, as the paper says
    # the rows of C'_M at the (i, j <= w-q) positions are C_M's: the completion keeps Z
    Z_full = (C_prime @ X5.flatten()).reshape(4, 4)
    assert torch.equal(Z_full[:2, :3], Z5)
    assert torch.linalg.det(C_prime).item() == pytest.approx(64.0)
    value = conv_entropy_change(C5[None, None], (4, 4))
    assert value.shape == (1, 1) and value.dtype == D
    assert value.item() == pytest.approx(6 * math.log(2), rel=1e-12)


# ------------------------------------------------------------------ properties


def test_dense_formula_matches_explicit_completion():
    g = torch.Generator().manual_seed(0)
    shapes = [(3, 5), (5, 3), (4, 4), (1, 6), (7, 2), (6, 7), (8, 5)]
    for N, d in shapes:
        W = torch.randn(N, d, generator=g, dtype=D)
        W_prime = complete_dense(W)
        assert W_prime.shape == (max(N, d),) * 2
        expected = torch.linalg.slogdet(W_prime).logabsdet.item()
        assert dense_entropy_change(W).item() == pytest.approx(expected, rel=1e-10, abs=1e-10)
        f32 = dense_entropy_change(W.float(), precision="float32")
        assert f32.dtype == torch.float32 and f32.item() == pytest.approx(expected, rel=1e-4, abs=1e-4)


def test_conv_formula_matches_explicit_completion():
    g = torch.Generator().manual_seed(1)
    checked = 0
    for p in range(1, 4):
        for q in range(1, 4):
            for l, w in [(p, q), (p + 1, q + 2), (5, 6), (6, 4)]:
                if l < p or w < q:
                    continue
                C = torch.randn(p, q, generator=g, dtype=D)
                X = torch.randn(l, w, generator=g, dtype=D)
                C_M = conv_matrix(C, l, w)
                conv = F.conv2d(X[None, None], C[None, None])[0, 0]
                assert torch.allclose(C_M @ X.flatten(), conv.flatten())
                C_prime = complete_conv(C, l, w)
                assert C_prime.shape == (l * w, l * w)
                expected = torch.linalg.slogdet(C_prime).logabsdet.item()
                got = conv_entropy_change(C[None, None], (l, w)).item()
                assert got == pytest.approx(expected, rel=1e-9, abs=1e-9)
                checked += 1
    assert checked > 30


def test_conv_channels_are_parallel_single_channel_convs():
    g = torch.Generator().manual_seed(2)
    weight = torch.randn(3, 2, 2, 3, generator=g, dtype=D)
    both = conv_entropy_change(weight, (7, 6))
    assert both.shape == (3, 2)
    for f in range(3):
        for c in range(2):
            single = conv_entropy_change(weight[f : f + 1, c : c + 1], (7, 6)).item()
            assert both[f, c].item() == pytest.approx(single)
    first = conv_entropy_change(weight, (7, 6), c11="first_channel")
    assert first.shape == (3, 1) and torch.equal(first[:, 0], both[:, 0])
    assert both[0, 0].item() == pytest.approx(6 * 4 * math.log(abs(weight[0, 0, 0, 0].item())))


def test_singular_block_gives_minus_inf():
    W = torch.tensor([[1.0, 2.0, 5.0], [2.0, 4.0, 7.0]])
    assert dense_entropy_change(W).item() == -math.inf
    zero = torch.zeros(2, 1, 3, 3)
    assert torch.all(conv_entropy_change(zero, (5, 5)) == -math.inf)


@pytest.mark.parametrize("lapack", ["scipy", "torch"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_logabsdet_value_and_gradient_against_numpy(dtype, lapack, monkeypatch):
    """Narrow (slogdet) and wide (an LU per matrix) matrices, one or a batch: the value is
    numpy's slogdet, the gradient numpy's inverse transposed, through either LAPACK:
    scipy's getrf/getri with torch on several threads (batched MKL getrf from several
    threads gets wide matrices wrong, pytorch#181570), torch's batched LU and lu_solve on
    one thread, the path an Intel CPU takes (forced here, whatever this CPU)."""
    # patched where torch_lapack_preferred looks it up: the determinants module, not the package
    monkeypatch.setattr(determinants, "mkl_on_intel", lambda: True)
    threads = torch.get_num_threads()
    torch.set_num_threads(1 if lapack == "torch" else 2)
    try:
        assert entropy.torch_lapack_preferred() == (lapack == "torch")
        g = torch.Generator().manual_seed(2)
        for shape in [(6, 20, 20), (31, 31), (6, 32, 32), (3, 2, 101, 101), (4, 160, 160)]:
            a = torch.randn(*shape, generator=g, dtype=torch.float64).to(dtype).requires_grad_()
            value = logabsdet(a)
            value.sum().backward()
            ref = a.detach().double().numpy()
            expected = np.linalg.slogdet(ref)[1]
            expected_grad = np.swapaxes(np.linalg.inv(ref), -1, -2)
            rtol = 1e-10 if dtype == torch.float64 else 1e-4
            assert value.shape == shape[:-2] and value.dtype == dtype
            np.testing.assert_allclose(value.detach().double().numpy(), expected, rtol=rtol)
            assert a.grad.dtype == dtype
            np.testing.assert_allclose(a.grad.double().numpy(), expected_grad, rtol=rtol * 100,
                                       atol=rtol * np.abs(expected_grad).max())
        singular = torch.zeros(2, 40, 40, dtype=dtype)
        singular[1] = torch.eye(40)
        singular = singular.requires_grad_()
        value = logabsdet(singular)
        value.sum().backward()
        assert value[0].item() == -math.inf and value[1].item() == 0
        assert singular.grad[0].isnan().all() and torch.equal(singular.grad[1], torch.eye(40, dtype=dtype))
    finally:
        torch.set_num_threads(threads)


def test_logabsdet_of_a_block_view_and_bad_shapes():
    """dense_entropy_change's case: the square block of a wider float64 weight, a strided view."""
    g = torch.Generator().manual_seed(6)
    weight = torch.randn(50, 70, generator=g, dtype=D).requires_grad_()
    logabsdet(weight[:, :50]).backward()
    block = weight.detach()[:, :50].numpy()
    assert weight.grad[:, :50].numpy() == pytest.approx(np.linalg.inv(block).T, rel=1e-9, abs=1e-12)
    assert torch.all(weight.grad[:, 50:] == 0)
    with pytest.raises(ValueError, match="square"):
        logabsdet(torch.zeros(128, 64, dtype=D))
    assert logabsdet(torch.zeros(0, 40, 40, dtype=D)).shape == (0,)


def test_logabsdet_wide_singular_and_gradcheck():
    singular = torch.eye(40, dtype=D).repeat(2, 1, 1)
    singular[0, 3] = singular[0, 5]
    singular.requires_grad_()
    value = logabsdet(singular)
    assert value[0].item() == -math.inf and value[1].item() == 0.0
    value[1].backward()  # the singular member's gradient is NaN, its neighbour's is its own
    assert torch.isnan(singular.grad[0]).all() and torch.equal(singular.grad[1], torch.eye(40, dtype=D))
    g = torch.Generator().manual_seed(3)
    w = (torch.randn(40, 40, generator=g, dtype=D) + 3 * torch.eye(40, dtype=D)).requires_grad_()
    assert torch.autograd.gradcheck(logabsdet, (w,))


def test_logabsdet_runs_openblas_on_one_thread():
    """OpenBLAS's threads spin after each call and starve torch's (a 2-thread training step
    was 14 times slower): LAPACK here runs on one, whatever torch's thread count."""
    from threadpoolctl import threadpool_info

    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        logabsdet(torch.eye(64, dtype=D))
        pools = [p for p in threadpool_info() if p["internal_api"] == "openblas"]
        if not pools:
            pytest.skip("scipy is not built on OpenBLAS here")
        assert all(p["num_threads"] == 1 for p in pools)
    finally:
        torch.set_num_threads(threads)


def test_bad_arguments():
    with pytest.raises(ValueError, match="precision"):
        dense_entropy_change(W_EXAMPLE4, precision="float16")
    with pytest.raises(ValueError, match="c11"):
        conv_entropy_change(torch.ones(1, 1, 2, 2), (3, 3), c11="middle")
    with pytest.raises(ValueError, match="does not fit"):
        conv_entropy_change(torch.ones(1, 1, 4, 2), (3, 3))


# ------------------------------------------------------------------ the loss


def _linear(weight):
    layer = nn.Linear(weight.shape[1], weight.shape[0], bias=False)
    del layer.weight  # a plain tensor in place of the Parameter, so gradcheck can vary it
    layer.weight = weight
    return layer


def _conv(weight):
    layer = nn.Conv2d(weight.shape[1], weight.shape[0], tuple(weight.shape[-2:]), bias=False)
    del layer.weight
    layer.weight = weight
    return layer


def test_dense_loss_values():
    layer = _linear(W_EXAMPLE4.float())
    log_form = entropy_loss([layer], 0.5, form="log")
    assert log_form.dtype == torch.float32
    assert log_form.item() == pytest.approx(-0.5 * math.log(18))
    inverse = entropy_loss([layer], 0.5, form="inverse", eps=1e-3)
    assert inverse.item() == pytest.approx(0.5 / (18 + 1e-3))
    assert entropy_loss_unweighted([layer], form="log").item() == pytest.approx(-math.log(18))


C11 = torch.tensor([[2.0, -0.5], [1.0, 4.0]])  # (filters, input channels)


def _conv_with_c11():
    weight = torch.randn(2, 2, 3, 3, generator=torch.Generator().manual_seed(3))
    weight[:, :, 0, 0] = C11
    return nn.Conv2d(2, 2, 3).requires_grad_(True), weight


def test_conv_loss_values():
    conv, weight = _conv_with_c11()
    with torch.no_grad():
        conv.weight.copy_(weight)
    logs = [math.log(2), math.log(0.5), 0.0, math.log(4)]
    assert entropy_loss([conv], 1.0, form="log").item() == pytest.approx(-sum(logs))
    assert entropy_loss([conv], 1.0, form="log", reduce="mean").item() == pytest.approx(-sum(logs) / 4)
    per_filter = torch.tensor([1.0, 2.0])
    assert entropy_loss([conv], [per_filter], form="log").item() == pytest.approx(
        -(logs[0] + logs[1]) - 2 * (logs[2] + logs[3])
    )
    assert entropy_loss([conv], 1.0, form="log", c11="first_channel").item() == pytest.approx(-math.log(2))
    eps = 1e-4
    inv = sum(1 / (abs(c) + eps) for c in C11.flatten().tolist())
    assert entropy_loss([conv], 0.1, eps=eps).item() == pytest.approx(0.1 * inv, rel=1e-6)
    # gradients reach the weights, and only the top-left taps
    loss = entropy_loss([conv], 1.0, form="log")
    loss.backward()
    grad = conv.weight.grad
    assert torch.allclose(grad[:, :, 0, 0], -1 / C11)
    grad[:, :, 0, 0] = 0
    assert torch.all(grad == 0)


def _conv_and_example4_dense():
    """A conv with known c11 taps and a dense layer holding Example 4's matrix."""
    conv, weight = _conv_with_c11()
    dense = nn.Linear(5, 3)
    with torch.no_grad():
        conv.weight.copy_(weight)
        dense.weight.copy_(W_EXAMPLE4)
    return conv, dense


def test_loss_over_several_layers():
    conv, dense = _conv_and_example4_dense()
    both = entropy_loss([("conv", conv), ("dense", dense)], [2.0, 0.5], form="log")
    assert both.item() == pytest.approx(2.0 * -math.log(4) + 0.5 * -math.log(18), rel=1e-6)
    # lam = 0 skips the layer, so a singular weight cannot turn the baseline into nan
    singular = nn.Linear(3, 3)
    with torch.no_grad():
        singular.weight.zero_()
    assert entropy_loss([singular], 0.0, form="log").item() == 0.0
    with pytest.raises(ValueError, match="2 entries"):
        entropy_loss([conv], [1.0, 2.0])
    with pytest.raises(ValueError, match="ambiguous"):
        entropy_loss([conv], torch.tensor([1.0, 2.0]))
    with pytest.raises(ValueError, match="3 entries"):
        entropy_loss([conv], [torch.tensor([1.0, 2.0, 3.0])])
    with pytest.raises(TypeError, match="BatchNorm"):
        entropy_loss([nn.BatchNorm2d(3)], 1.0)
    with pytest.raises(ValueError, match="form"):
        entropy_loss([conv], 1.0, form="square")


@pytest.mark.parametrize("form", ["log", "inverse"])
@pytest.mark.parametrize("shape", [(3, 5), (5, 3)])
def test_gradcheck_dense(form, shape):
    g = torch.Generator().manual_seed(4)
    W = (torch.randn(*shape, generator=g, dtype=D) + 2 * torch.eye(*shape, dtype=D)).requires_grad_()
    assert torch.autograd.gradcheck(lambda w: entropy_loss([_linear(w)], 0.7, form=form, eps=1e-3), (W,))


@pytest.mark.parametrize("form", ["log", "inverse"])
@pytest.mark.parametrize("c11,reduce", [("all_channels", "sum"), ("first_channel", "mean")])
def test_gradcheck_conv(form, c11, reduce):
    g = torch.Generator().manual_seed(5)
    W = torch.randn(3, 2, 2, 2, generator=g, dtype=D)
    W[:, :, 0, 0] = W[:, :, 0, 0].sign() * (W[:, :, 0, 0].abs() + 0.5)  # away from |x| = 0
    W.requires_grad_()
    lam = torch.tensor([0.5, 1.0, 2.0], dtype=D)
    fn = lambda w: entropy_loss([_conv(w)], [lam], form=form, c11=c11, reduce=reduce)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (W,))


# ------------------------------------------------------------------ float32 failure mode


def test_float32_determinant_underflows():
    # log|det| of this block is -108.5 nats; float32's smallest subnormal is e^-103.3
    W = torch.randn(80, 80, generator=torch.Generator().manual_seed(1), dtype=D) * 0.05
    logdet = dense_entropy_change(W).item()
    assert math.isfinite(logdet) and logdet < math.log(torch.finfo(torch.float32).smallest_normal)
    assert torch.linalg.det(W.float()).item() == 0.0
    # the realistic case: an MNIST encoder (784 -> 80) at PyTorch's default initialisation
    torch.manual_seed(0)
    encoder = nn.Linear(784, 80)
    assert torch.linalg.det(encoder.weight[:, :80].detach()).item() == 0.0
    assert -250 < dense_entropy_change(encoder.weight).item() < -120
    # so in float32 the inverse form is the constant 1/eps, and nothing trains
    loss32 = entropy_loss([encoder], 1.0, form="inverse", precision="float32")
    loss32.backward()
    assert loss32.item() == pytest.approx(1e4) and torch.all(encoder.weight.grad == 0)
    encoder.weight.grad = None
    entropy_loss([encoder], 1.0, form="log", precision="float64").backward()
    assert torch.all(torch.isfinite(encoder.weight.grad)) and encoder.weight.grad.abs().max() > 0


# ------------------------------------------------------------------ layer discovery


def _dense_net():
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))


def test_guided_layers_placements():
    net = _dense_net()
    names = lambda sel: [n for n, _ in sel]  # noqa: E731
    assert names(guided_layers(net, "first")) == ["0"]
    assert names(guided_layers(net, "all")) == ["0", "2", "4"]
    assert names(guided_layers(net, "1,3")) == ["0", "4"]
    assert names(guided_layers(net, [3, 1])) == ["0", "4"]
    assert names(guided_layers(net, 2, input_shape=(4,))) == ["2"]
    assert guided_layers(net, "first")[0][1] is net[0]
    for bad in ["4", "0", [1, 7], "middle", "1,1"]:
        with pytest.raises(ValueError, match=r"1\.\.3"):
            guided_layers(net, bad)
    # a model with convs guides its convs, not its dense head
    cnn = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Conv2d(2, 2, 3), nn.Flatten(), nn.Linear(8, 2))
    assert names(guided_layers(cnn, "all", input_shape=(1, 6, 6))) == ["0", "2"]


class _Reordered(nn.Module):
    """Registers `late` before `early` but calls `early` first."""

    def __init__(self):
        super().__init__()
        self.late = nn.Conv2d(4, 2, 3)
        self.norm = nn.BatchNorm2d(4)
        self.early = nn.Conv2d(1, 4, 3, padding=1)
        self.unused = nn.Conv2d(1, 1, 1)

    def forward(self, x):
        return self.late(self.norm(self.early(x)))


def test_guided_layers_forward_order_and_no_side_effects():
    model = _Reordered()
    model.train()
    model.late.eval()
    before = model.norm.running_mean.clone()
    ordered = [n for n, _ in guided_layers(model, "all", input_shape=(1, 5, 5))]
    assert ordered == ["early", "late", "unused"]
    assert [n for n, _ in guided_layers(model, "all")] == ["late", "early", "unused"]
    assert torch.equal(model.norm.running_mean, before)
    assert model.training and model.norm.training and not model.late.training


def test_entropy_profile_rows_and_values():
    torch.manual_seed(6)
    net = nn.Sequential(
        nn.Conv2d(2, 3, 3, padding=1), nn.ReLU(), nn.Conv2d(3, 4, 2), nn.Flatten(), nn.Linear(4 * 25, 5)
    )
    df = entropy_profile(net, (2, 6, 6))
    assert list(df.columns) == ["layer", "name", "kind", "filter", "value"]
    assert len(df) == 3 + 4 + 1
    assert df["layer"].tolist() == [1] * 3 + [2] * 4 + [3]
    assert df["kind"].tolist() == ["conv"] * 7 + ["dense"]
    assert df["filter"].tolist() == [0, 1, 2, 0, 1, 2, 3, 0]
    assert df["name"].tolist() == ["0"] * 3 + ["2"] * 4 + ["4"]
    w1, w2 = net[0].weight.detach().double(), net[2].weight.detach().double()
    # conv 1 slides 3x3 over the padded 8x8 input: 6*6 positions; conv 2: 2x2 over 6x6, 5*5
    for f in range(3):
        expected = 36 * sum(math.log(abs(w1[f, c, 0, 0].item())) for c in range(2))
        assert df["value"][f] == pytest.approx(expected)
    for f in range(4):
        expected = 25 * sum(math.log(abs(w2[f, c, 0, 0].item())) for c in range(3))
        assert df["value"][3 + f] == pytest.approx(expected)
    W = net[4].weight.detach().double()
    assert df["value"][7] == pytest.approx(torch.linalg.slogdet(W[:, :5]).logabsdet.item())
    flat = entropy_profile(net, (2, 6, 6), spatial=False, c11="first_channel")
    assert flat["value"][0] == pytest.approx(math.log(abs(w1[0, 0, 0, 0].item())))


def test_entropy_profile_strided_conv_uses_output_size():
    torch.manual_seed(7)
    net = nn.Sequential(nn.Conv2d(1, 2, 3, stride=2))  # 9x9 -> 4x4 output
    df = entropy_profile(net, (1, 9, 9))
    w = net[0].weight.detach().double()
    assert df["value"].tolist() == pytest.approx([16 * math.log(abs(w[f, 0, 0, 0].item())) for f in range(2)])


def test_entropy_stats():
    conv, dense = _conv_and_example4_dense()
    stats = entropy_stats([("c", conv), ("d", dense)])
    assert stats == pytest.approx({
        "logdet_mean": math.log(18),
        "log_c11_mean": math.log(4) / 4,  # (log 2 + log 0.5 + log 1 + log 4) / 4
        "log_c11_min": math.log(0.5),
        "log_c11_max": math.log(4),
    })
    assert all(type(v) is float for v in stats.values())
    assert set(entropy_stats([("d", dense)])) == {"logdet_mean"}
    assert entropy_stats([("c", conv)], c11="first_channel")["log_c11_min"] == pytest.approx(0.0)
