"""The paper's CNN (harness.models.ConvClassifier) on stacked weights, laid out for a CPU.

The same function as the module, to float rounding, reorganised where the CPU is slow
(measured on a 2-core Intel Xeon, one thread, batch 32; docs/performance.md):

* **Pool before the activation.** LeakyReLU with a slope >= 0 is monotone, so
  ``maxpool(leaky(z)) == leaky(maxpool(z))`` exactly, and the gradient reaches the same
  element: the activation and its backward run on a quarter of the elements.
* **Channels-last.** PyTorch's max pool over an NCHW map of (32, 32, 26, 26) took 3.3 ms,
  over the same map channels-last 0.3 ms; every feature map here is channels-last.
* **The first convolution as one matmul.** Its input has 1 or 3 channels, so oneDNN's
  convolution runs at a few GFLOP/s; the im2col columns of the input (a strided view, one
  copy) read transposed times the (9 C, O) weight is one batched matmul that writes the
  map channels-last. The first layer's input needs no gradient, so the view is never
  differentiated. Deeper layers (32+ input channels) stay oneDNN convolutions, where it
  is fast. The classifier's weight is permuted to the map's (H, W, C) order rather than
  the map to nn.Flatten's (C, H, W).

Training steps the members one after the other, each its own forward and backward: a
member's activations (about 3 MB for [32] at batch 32) stay in the core's L2 cache
between its forward and its backward, where a step over all members at once (grouped
convolutions, or vmap) streams P times that through memory and measured slower than
training the models one at a time. Evaluation shares the first layer's im2col columns of
a batch among the members.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from harness.models import ConvClassifier


class ConvEngine:
    """A pack of ConvClassifiers: its step (task loss, output and gradients per member)
    and its evaluation forward, as the other engines (harness.training.engines)."""

    # Shared examples per evaluation forward (evaluation.evaluate_pack): a member's maps of
    # 64 MNIST examples stay in L2; [32] evaluated 31,600 member-examples/s in batches of
    # 64 and 8,200 in batches of 1,024 (one thread of an Intel Xeon).
    eval_batch = 64

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

    def _block(self, z: Tensor, bias: Tensor | None = None) -> Tensor:
        """Bias (if not already in z), pool, activation on a channels-last map: pooled
        before the bias and the activation when they commute. A per-channel bias does:
        rounding is monotone, so max(fl(z + b)) = fl(max(z) + b); added to the pooled map
        it costs a quarter of the pass, and spares the full map's copy of the bias a
        matmul's beta * input makes."""
        if self.slope < 0:  # the activation is not monotone: the module's own order
            z = z if bias is None else z + bias[:, None, None]
            return F.max_pool2d(F.leaky_relu(z, self.slope), 2)
        pooled = F.max_pool2d(z, 2)
        return F.leaky_relu(pooled if bias is None else pooled + bias[:, None, None], self.slope)

    def _first_rows(self, x: Tensor) -> Tensor:
        """im2col of x (N, C, H, W): (N, 9 C, Ho Wo), rows in (c, kh, kw) order, the
        order of a conv weight (O, C, 3, 3) flattened. One copy of a strided view of x:
        8x faster than F.unfold for a (32, 1, 28, 28) batch on a core of an Intel Xeon."""
        pad = self.padding[0]
        if pad:
            x = F.pad(x, (pad, pad, pad, pad))
        n, c, height, width = x.shape
        s = x.stride()
        view = x.as_strided((n, c, 3, 3, height - 2, width - 2), (s[0], s[1], s[2], s[3], s[2], s[3]))
        return view.reshape(n, 9 * c, (height - 2) * (width - 2))

    def _logits(self, params: list[Tensor], cols: Tensor, side: tuple[int, int]) -> Tensor:
        """One member's logits from its first layer's im2col ``cols``; params unstacked."""
        k = self.n_convs
        weights, biases = params[0 : 2 * k : 2], params[1 : 2 * k : 2]
        n = cols.shape[0]
        w0 = weights[0].reshape(weights[0].shape[0], -1).T  # (C kh kw, O)
        # (N, Ho Wo, O): the map channels-last; cols read transposed by the BLAS, not copied
        z = torch.bmm(cols.mT, w0.expand(n, *w0.shape)).view(n, *side, -1).permute(0, 3, 1, 2)
        h = self._block(z, biases[0])
        for w, b, pad in zip(weights[1:], biases[1:], self.padding[1:]):
            h = self._block(F.conv2d(h, w, b, padding=pad))
        # the classifier reads the last map in nn.Flatten's (C, H, W) order: permute its
        # weight to (H, W, C) and flatten the channels-last map as it lies (a view)
        c, height, width = h.shape[1:]
        head = params[-2].view(-1, c, height, width).permute(0, 2, 3, 1).reshape(params[-2].shape[0], -1)
        return F.linear(h.permute(0, 2, 3, 1).reshape(n, -1), head, params[-1])

    def _side(self, x: Tensor) -> tuple[int, int]:
        pad = self.padding[0]
        return x.shape[-2] + 2 * pad - 2, x.shape[-1] + 2 * pad - 2

    @torch.no_grad()
    def forward(self, params: list[Tensor], x: Tensor) -> Tensor:
        """Evaluation: every member's logits (P, b, classes) on one shared batch x."""
        cols, side = self._first_rows(x), self._side(x)
        return torch.stack([self._logits([p[i] for p in params], cols, side) for i in range(params[0].shape[0])])

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
                logits = self._logits(mine, self._first_rows(x[i]), self._side(x[i]))
                loss = F.cross_entropy(logits, y[i])
                member_grads = torch.autograd.grad(loss, mine)
            for g, mg in zip(grads, member_grads):
                g[i] = mg
            task[i] = loss.detach()
            outs.append(logits.detach())
        return task, torch.stack(outs), grads


def takes(config, template: nn.Module) -> bool:
    """Whether a pack of ``config`` steps through ConvEngine (harness.training.pack) and
    so holds one member's activations at a time (harness.training.packing): the paper's
    CNN, not compiled (train.compile traces the vmap engine instead)."""
    return config.train.compile == "off" and supports(template)


def supports(model: nn.Module) -> bool:
    """Whether ConvEngine computes ``model``: the paper's CNN, 3x3 stride-1 convolutions, no dropout."""
    if not isinstance(model, ConvClassifier):
        return False
    convs = [m for m in model.features if isinstance(m, nn.Conv2d)]
    head = [m for m in model.classifier if not isinstance(m, nn.Flatten)]
    return (all(c.kernel_size == (3, 3) and c.stride == (1, 1) and c.groups == 1 and c.dilation == (1, 1) for c in convs)
            and len(head) == 1 and isinstance(head[0], nn.Linear))
