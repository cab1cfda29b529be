"""The packed model's step: the dense autoencoder's forward and backward by hand with
batched matmuls into reused buffers (DenseEngine), any model through torch.func.vmap
(VmapEngine), and every member's entropy term and its gradient (PackEntropy)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from harness.entropy import logabsdet
from harness.models import DenseAutoencoder


class DenseEngine:
    """The dense autoencoder on stacked weights, forward and backward by hand.

    Training: x (P, b, D), one batch per member: two batched matmuls forward, three backward,
    every gradient written into a preallocated buffer laid out as its weight (what the
    fused optimizer reads), no autograd graph. Evaluation: one shared x (b, D), broadcast
    to the P members' matmuls. The backward is autograd's own (mse_loss, sigmoid_backward,
    threshold_backward for ReLU), so the numbers are train()'s to rounding; tests check it
    against train().

    The pack stores each weight (P, out, in) in "in, out" memory order (``transposed``: its
    param is a transposed view of a contiguous (P, in, out) tensor), so both forward
    matmuls read it as a plain (in, out) matrix: at batch 32 a batched matmul whose second
    operand is a transposed view ran at 125 GFLOP/s on a core of an Intel Xeon where the
    plain one ran at 160-185 (docs/performance.md). The math takes any layout; only its
    speed depends on it."""

    eval_batch = 1024  # shared examples per evaluation step (evaluation.evaluate_pack), as harness.data's EVAL_BATCH

    # activation in place, and its backward written into a given tensor (autograd's kernels)
    _ACTS = {
        nn.Sigmoid: (torch.sigmoid_, lambda g, out, dst: torch.ops.aten.sigmoid_backward.grad_input(g, out, grad_input=dst)),
        nn.Tanh: (torch.tanh_, lambda g, out, dst: torch.ops.aten.tanh_backward.grad_input(g, out, grad_input=dst)),
        nn.ReLU: (torch.relu_, lambda g, out, dst: torch.ops.aten.threshold_backward.grad_input(g, out, 0, grad_input=dst)),
        nn.Identity: (lambda z: z, lambda g, out, dst: g),
    }

    def __init__(self, template: DenseAutoencoder):
        names = [n for n, _ in template.named_parameters()]
        if names != ["encoder.weight", "encoder.bias", "decoder.weight", "decoder.bias"]:
            raise TypeError(f"unexpected dense autoencoder parameters {names}")
        self.latent_act = self._ACTS[type(template.latent_activation)]
        self.output_act = self._ACTS[type(template.output_activation)]
        self._buffers: dict[str, Tensor] = {}

    def _buffer(self, name: str, shape: tuple, like: Tensor) -> Tensor:
        """A tensor reused from step to step: no allocation, no fresh pages to fault in.
        A contiguous view of the front of one flat buffer per name, so the smaller shapes
        of a compacted pack or of a split's last batch reuse it too."""
        numel = math.prod(shape)
        buf = self._buffers.get(name)
        if buf is None or buf.numel() < numel or buf.dtype != like.dtype or buf.device != like.device:
            buf = self._buffers[name] = torch.empty(numel, dtype=like.dtype, device=like.device)
        return buf[:numel].view(shape)

    def batch(self, xs: Tensor, ys: Tensor, idx: Tensor) -> tuple[Tensor, None]:
        """Each member's batch, (P, b, D): rows ``idx`` (P, b) of the flattened images."""
        flat = xs.flatten(1)
        x = self._buffer("x", (idx.numel(), flat.shape[1]), flat)
        return torch.index_select(flat, 0, idx.flatten(), out=x).view(*idx.shape, -1), None

    @staticmethod
    def transposed(p: Tensor) -> bool:
        """Whether the pack should store stacked ``p`` transposed: the weights."""
        return p.ndim == 3

    def _like(self, name: str, p: Tensor) -> Tensor:
        """A reused buffer with ``p``'s shape and memory order (the fused optimizer reads a
        gradient as laid out like its parameter)."""
        if p.ndim == 3 and not p.is_contiguous() and p.mT.is_contiguous():
            return self._buffer(name, p.mT.shape, p).mT
        return self._buffer(name, p.shape, p)

    @torch.no_grad()
    def forward(self, params: list[Tensor], x: Tensor) -> Tensor:
        """Evaluation: the P members on one shared batch x (b, C, H, W) -> (P, b, D), in
        reused buffers (valid until the next call), as the training step: no megabyte
        allocation per evaluation batch. The shared batch is broadcast (stride 0), not copied."""
        w1, b1, w2, b2 = params
        xf = x.flatten(1)
        (size, latent), batch = w1.shape[:2], len(xf)
        h = torch.baddbmm(b1[:, None, :], xf.expand(size, -1, -1), w1.mT,
                          out=self._buffer("eval_h", (size, batch, latent), xf))
        self.latent_act[0](h)
        out = torch.baddbmm(b2[:, None, :], h, w2.mT, out=self._buffer("eval_out", (size, batch, xf.shape[1]), xf))
        return self.output_act[0](out)

    @torch.no_grad()
    def task_and_grads(self, params: list[Tensor], x: Tensor, y: None) -> tuple[Tensor, Tensor, list[Tensor]]:
        """One training step on x (P, b, D): per-member task loss (P,), the output (valid
        until the next step), and the gradients (buffers, likewise)."""
        w1, b1, w2, b2 = params
        (size, batch, width), latent = x.shape, w1.shape[1]
        grads = [self._like(f"grad{i}", p) for i, p in enumerate(params)]
        h = self._buffer("h", (size, batch, latent), x)
        out = self._buffer("out", x.shape, x)
        diff = self._buffer("diff", x.shape, x)
        dh_t = self._buffer("dh_t", (size, latent, batch), x)
        dz1 = self._buffer("dz1", h.shape, x)
        self.latent_act[0](torch.baddbmm(b1[:, None, :], x, w1.mT, out=h))
        self.output_act[0](torch.baddbmm(b2[:, None, :], h, w2.mT, out=out))
        torch.sub(out, x, out=diff)
        numel = batch * width
        # mse_loss, mean: each member's ||diff||^2 / numel, the norm one pass over diff
        task = torch.linalg.vector_norm(diff.view(size, numel), dim=1).square_() / numel
        dz2 = self.output_act[1](diff, out, diff)  # in place; d loss / d pre-activation once scaled by
        scale = 2.0 / numel  # this, which the matmuls apply (alpha) rather than a pass of its own
        # each product written in the order its operands are read fastest: a gradient
        # (P, out, in) as its transpose, (P, in, out), and dh as dh^T = w2^T dz2^T
        torch.baddbmm(grads[2].mT, h.mT, dz2, beta=0, alpha=scale, out=grads[2].mT)
        torch.sum(dz2, 1, out=grads[3]).mul_(scale)
        torch.baddbmm(dh_t, w2.mT, dz2.mT, beta=0, alpha=scale, out=dh_t)
        dz1 = self.latent_act[1](dh_t.mT, h, dz1)
        torch.bmm(x.mT, dz1, out=grads[0].mT)
        torch.sum(dz1, 1, out=grads[1])
        return task, out, grads


class VmapEngine:
    """Any model on stacked weights: torch.func.functional_call under vmap, autograd for
    the gradients. For the CNN vmap turns each convolution into one grouped convolution.
    ``compile_mode`` (``train.compile``) other than "off" runs the training forward through
    torch.compile in that mode; evaluation stays eager (it runs once an epoch)."""

    eval_batch = 1024  # shared examples per evaluation step (evaluation.evaluate_pack)

    def __init__(self, template: nn.Module, task: str, compile_mode: str = "off"):
        from torch.func import functional_call, vmap

        names = [n for n, _ in template.named_parameters()]
        self.reconstruction = task == "reconstruction"

        def one(params, x):
            return functional_call(template, dict(zip(names, params)), (x,))

        self._train = vmap(one, in_dims=(0, 0))
        self._eval = vmap(one, in_dims=(0, None))
        if compile_mode != "off":  # train.compile: the training step's forward, its backward through AOTAutograd
            self._train = torch.compile(self._train, mode=compile_mode)

    @staticmethod
    def transposed(p: Tensor) -> bool:
        """Never: autograd differentiates the params, so they are the optimizer's leaves."""
        return False

    def batch(self, xs: Tensor, ys: Tensor, idx: Tensor) -> tuple[Tensor, Tensor]:
        return xs[idx], ys[idx]

    @torch.no_grad()
    def forward(self, params: list[Tensor], x: Tensor) -> Tensor:
        return self._eval(tuple(params), x)

    def task_and_grads(self, params: list[Tensor], x: Tensor, y: Tensor) -> tuple[Tensor, Tensor, list[Tensor]]:
        out = self._train(tuple(params), x)
        if self.reconstruction:
            task = (out - x.flatten(2)).pow(2).mean((1, 2))
        else:
            task = F.cross_entropy(out.flatten(0, 1), y.flatten(), reduction="none").view(len(out), -1).mean(1)
        grads = torch.autograd.grad(task.sum(), params)
        return task.detach(), out.detach(), list(grads)


class PackEntropy:
    """The guidance term of every member, batched: harness.entropy.entropy_loss of each
    member's guided layers (same precision, forms, c11, reduce; computed in
    ``precision``, cast to the weights' dtype). It reads only a small piece of each guided
    weight (a dense layer's square block, a conv layer's c11 weights), taken detached, so
    its gradient is a small tensor added into the task gradient."""

    def __init__(self, guided: list[int], kinds: list[str], shapes: list[torch.Size], ent):
        self.guided, self.kinds, self.ent = guided, kinds, ent
        self.dtype = {"float64": torch.float64, "float32": torch.float32}[ent.precision]
        self.k = [min(shape[1:]) if kind == "dense" else 0 for kind, shape in zip(kinds, shapes)]

    def _view(self, w: Tensor, i: int) -> Tensor:
        if self.kinds[i] == "dense":
            return w[:, : self.k[i], : self.k[i]]
        return w[:, :, slice(None) if self.ent.c11 == "all_channels" else slice(0, 1), 0, 0]

    def pieces(self, params: list[Tensor], members: Tensor | None = None) -> list[Tensor]:
        views = [self._view(params[g].detach(), i) for i, g in enumerate(self.guided)]
        return [v if members is None else v.index_select(0, members) for v in views]

    def terms(self, pieces: list[Tensor], lam: Tensor | None) -> Tensor:
        """(P,) term per member; lam (P,) or None for λ = 1 (the logged value)."""
        ent = self.ent
        n = pieces[0].shape[0]
        total = torch.zeros(n, dtype=self.dtype, device=pieces[0].device)
        lam = torch.ones_like(total) if lam is None else lam.to(self.dtype)
        for piece, kind in zip(pieces, self.kinds):
            x = piece.to(self.dtype)
            if kind == "dense":
                logdet = logabsdet(x)
                term = -lam * logdet if ent.form == "log" else lam / (logdet.exp() + ent.eps)
            else:
                c, lam3 = x.abs(), lam[:, None, None]
                terms = -lam3 * c.log() if ent.form == "log" else lam3 / (c + ent.eps)
                term = terms.sum((1, 2)) if ent.reduce == "sum" else terms.mean((1, 2))
            total = total + term
        return total.to(pieces[0].dtype)

    @torch.no_grad()
    def values(self, params: list[Tensor]) -> list[float]:
        return self.terms(self.pieces(params), None).tolist()

    def term_and_grads(self, params: list[Tensor], members: Tensor, lam: Tensor) -> tuple[Tensor, list[Tensor]]:
        """The λ-weighted term of ``members`` and its gradient w.r.t. their pieces."""
        pieces = [p.requires_grad_() for p in self.pieces(params, members)]
        with torch.enable_grad():
            term = self.terms(pieces, lam)
            grads = torch.autograd.grad(term.sum(), pieces)
        return term.detach(), list(grads)

    def add_into(self, grads: list[Tensor], piece_grads: list[Tensor], members: Tensor) -> None:
        """Add the term's gradient (of ``members``' pieces) into the full gradients."""
        for i, (g, pg) in enumerate(zip(self.guided, piece_grads)):
            view = self._view(grads[g], i)
            if len(members) < len(view):  # scatter into a small dense block: one strided add, not a strided scatter
                pg = torch.zeros_like(view).index_copy_(0, members, pg)
            view.add_(pg)
