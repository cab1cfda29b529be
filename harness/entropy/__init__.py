"""Entropy change through dense and 2D-convolutional layers, and the guidance loss: the
paper's math, one module per job (this file only gathers their names).

The paper (Meni et al., arXiv 2308.14938, section 3-5) measures how a layer changes the
Shannon differential entropy (in nats) of its pre-activations:

* dense layer, weight (N, d): log|det W| of the square part W, the top-left
  min(N, d) x min(N, d) block (Theorem 3, eq. 5-6);
* 2D convolution, filter (p, q) sliding with stride 1 over an l x w input:
  (l-p+1)(w-q+1) log|c11|, c11 the filter's top-left weight (Corollary 6, eq. 18). A filter
  over several input channels is treated as parallel single-channel convolutions.

The guidance term added to the task loss (eq. 19-25) is, per dense layer,
-lam log|det W| ("log") or lam / (|det W| + eps) ("inverse"), and per conv filter and input
channel -lam log|c11| or lam / (|c11| + eps) (no spatial factor, as in eq. 23).

Determinants are computed as log|det| (``logabsdet``) in float64 by default: at PyTorch's
default initialisation the square part of an MNIST encoder has |det W| ~ e^-180, below
float32's smallest subnormal, so a float32 det is exactly 0 and the inverse form has zero
gradient.

Modules: ``determinants`` (log|det| through LAPACK), ``change`` (one layer's entropy
change), ``loss`` (the guidance term), ``trace`` (layers in forward order), ``placement``
(which layers are guided), ``profile`` (per-layer diagnostics). Import from here: the
submodules are the layout, this package the interface.
"""

from harness.entropy.change import conv_entropy_change, dense_entropy_change
from harness.entropy.determinants import LAPACK_MIN_WIDTH, logabsdet, mkl_on_intel, torch_lapack_preferred
from harness.entropy.loss import entropy_loss, entropy_loss_unweighted
from harness.entropy.placement import candidate_layers, empirical_convs, guided_layers, pre_skip_convs
from harness.entropy.profile import entropy_profile, entropy_stats

__all__ = [
    "logabsdet",
    "dense_entropy_change",
    "conv_entropy_change",
    "entropy_loss",
    "entropy_loss_unweighted",
    "guided_layers",
    "candidate_layers",
    "pre_skip_convs",
    "empirical_convs",
    "entropy_profile",
    "entropy_stats",
]
