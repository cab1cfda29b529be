"""The paper's CNN (harness.models.ConvClassifier) on stacked weights, laid out for a CPU.

The same function as the module, to float rounding, reorganised where the CPU is slow
(measured on a 2-core Intel Xeon, one thread, batch 32; docs/performance.md):

* **Pool before the activation.** LeakyReLU with a slope >= 0 is monotone, so
  ``maxpool(leaky(z)) == leaky(maxpool(z))`` exactly, and the gradient reaches the same
  element: the activation and its backward run on a quarter of the elements.
* **Channels-last.** PyTorch's max pool over an NCHW map of (32, 32, 26, 26) took 3.3 ms,
  over the same map channels-last 0.3 ms; every feature map here is channels-last.
* **The first convolution as one matmul.** Its input has 1 or 3 channels, so oneDNN's
  convolution runs at a few GFLOP/s; the im2col rows of the input (a strided view, one
  copy) times the (9 C, O) weight is one matmul that writes the map channels-last. Its
  input needs no gradient, so the view never has to be differentiated. Deeper layers
  (32+ input channels) stay oneDNN convolutions, where it is fast.

Training steps the members one after the other, each its own forward and backward: a
member's activations (about 3 MB for [32] at batch 32) stay in the core's L2 cache
between its forward and its backward, where a step over all members at once (grouped
convolutions, or vmap) streams P times that through memory and measured slower than
training the models one at a time. Evaluation shares the first layer's im2col rows of a
batch among the members.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from harness.models import ConvClassifier


class ConvEngine:
    """A pack of ConvClassifiers: its step (task loss, output and gradients per member)
    and its evaluation forward, as the other engines (harness.training.engines)."""

    def __init__(self, template: ConvClassifier):
        if not supports(template):
            raise TypeError("ConvEngine takes a ConvClassifier without dropout")
        convs = [m for m in template.features if isinstance(m, nn.Conv2d)]
        self.padding = [c.padding[0] for c in convs]
        self.slope = next(m for m in template.features if isinstance(m, nn.LeakyReLU)).negative_slope
        self.n_convs = len(convs)

    @staticmethod
    def transposed(p: Tensor) -> bool:
        return False

    def batch(self, xs: Tensor, ys: Tensor, idx: Tensor) -> tuple[Tensor, Tensor]:
        return xs[idx], ys[idx]

    def _block(self, z: Tensor) -> Tensor:
        """Pool, activation (in this order when they commute), on a channels-last map."""
        if self.slope >= 0:
            return F.leaky_relu(F.max_pool2d(z, 2), self.slope)
        return F.max_pool2d(F.leaky_relu(z, self.slope), 2)

    def _first_rows(self, x: Tensor) -> tuple[Tensor, tuple[int, int, int]]:
        """im2col of x (N, C, H, W): rows (N Ho Wo, 9 C) in (kh, kw, c) order, and (N, Ho, Wo)."""
        h = x.permute(0, 2, 3, 1)  # NHWC: a view, free for one channel
        pad = self.padding[0]
        if pad:
            h = F.pad(h, (0, 0, pad, pad, pad, pad))
        n, height, width, c = h.shape
        s = h.stride()
        ho, wo = height - 2, width - 2
        view = h.as_strided((n, ho, wo, 3, 3, c), (s[0], s[1], s[2], s[1], s[2], s[3]))
        return view.reshape(n * ho * wo, 9 * c), (n, ho, wo)

    def _logits(self, params: list[Tensor], rows: Tensor, shape: tuple[int, int, int]) -> Tensor:
        """One member's logits from its first layer's im2col ``rows``; params unstacked."""
        k = self.n_convs
        weights, biases = params[0 : 2 * k : 2], params[1 : 2 * k : 2]
        n, ho, wo = shape
        w0 = weights[0].permute(2, 3, 1, 0).reshape(-1, weights[0].shape[0])  # (kh kw c, O)
        z = torch.addmm(biases[0], rows, w0).view(n, ho, wo, -1).permute(0, 3, 1, 2)  # channels-last
        h = self._block(z)
        for w, b, pad in zip(weights[1:], biases[1:], self.padding[1:]):
            h = self._block(F.conv2d(h, w, b, padding=pad))
        return F.linear(h.reshape(n, -1), params[-2], params[-1])  # NCHW flatten, as nn.Flatten

    @torch.no_grad()
    def forward(self, params: list[Tensor], x: Tensor) -> Tensor:
        """Evaluation: every member's logits (P, b, classes) on one shared batch x."""
        rows, shape = self._first_rows(x)
        return torch.stack([self._logits([p[i] for p in params], rows, shape) for i in range(params[0].shape[0])])

    def task_and_grads(self, params: list[Tensor], x: Tensor, y: Tensor) -> tuple[Tensor, Tensor, list[Tensor]]:
        """One step on x (P, b, C, H, W): per-member cross-entropy (P,), logits, gradients
        stacked as the params. Each member's forward and backward run back to back."""
        size = params[0].shape[0]
        grads = [torch.empty_like(p) for p in params]
        task = torch.empty(size, dtype=params[0].dtype, device=params[0].device)
        outs = []
        for i in range(size):
            mine = [p[i].detach().requires_grad_() for p in params]
            with torch.enable_grad():
                rows, shape = self._first_rows(x[i])
                logits = self._logits(mine, rows, shape)
                loss = F.cross_entropy(logits, y[i])
                member_grads = torch.autograd.grad(loss, mine)
            for g, mg in zip(grads, member_grads):
                g[i] = mg
            task[i] = loss.detach()
            outs.append(logits.detach())
        return task, torch.stack(outs), grads


def supports(model: nn.Module) -> bool:
    """Whether ConvEngine computes ``model``: the paper's CNN, 3x3 stride-1 convolutions, no dropout."""
    if not isinstance(model, ConvClassifier):
        return False
    convs = [m for m in model.features if isinstance(m, nn.Conv2d)]
    head = [m for m in model.classifier if not isinstance(m, nn.Flatten)]
    return (all(c.kernel_size == (3, 3) and c.stride == (1, 1) and c.groups == 1 and c.dilation == (1, 1) for c in convs)
            and len(head) == 1 and isinstance(head[0], nn.Linear))
