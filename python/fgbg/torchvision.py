"""torchvision's API on fgbg: `fgbg.torchvision.sigmoid_focal_loss` is a drop-in replacement for
`torchvision.ops.sigmoid_focal_loss` (same signature, same float targets, same reductions).

    from fgbg.torchvision import sigmoid_focal_loss
    loss = sigmoid_focal_loss(logits, one_hot_targets, alpha=0.25, gamma=2, reduction="sum")

inputs and targets have the same shape (any number of dimensions; the last is the class axis).
'none' returns the per-element loss in that shape, 'mean' averages over every element, 'sum' sums.
alpha < 0 disables the alpha weighting, as in torchvision. The gradient with respect to targets is
not computed (None): targets are labels, not parameters.

Every target in [0, 1] (one-hot, soft, multi-hot) runs in one fused pass of
fgbg::DenseTargetFocalLoss; one-hot targets give SigmoidFocalLoss's bits.
"""
import torch

from . import _core
from ._core import _fgbg

__all__ = ["sigmoid_focal_loss"]


def _as_2d(t):
    if t.dim() == 0:
        return t.reshape(1, 1)
    if t.dim() == 1:
        return t.reshape(-1, 1)
    return t.reshape(-1, t.shape[-1])


def sigmoid_focal_loss(inputs, targets, alpha=0.25, gamma=2, reduction="none"):
    """torchvision.ops.sigmoid_focal_loss on fgbg's fused kernel (CPU); see the module comment."""
    _core._check_tensor(inputs, "inputs")
    _core._check_tensor(targets, "targets")
    if inputs.shape != targets.shape:
        raise ValueError(f"fgbg: inputs {tuple(inputs.shape)} and targets "
                         f"{tuple(targets.shape)} must have the same shape")
    if not targets.is_floating_point():
        raise TypeError(f"fgbg: targets must be a floating-point tensor, got {targets.dtype}")
    if reduction not in ("none", "mean", "sum"):
        raise ValueError(f"Invalid Value for arg 'reduction': '{reduction}' \n Supported "
                         "reduction modes: 'none', 'mean', 'sum'")
    shape = inputs.shape
    x = _as_2d(inputs)
    t = _as_2d(targets)
    # One fused pass that reads the targets; the labels mark no row ignored or positive.
    n = x.shape[0]
    out = _core.dense_call("dense_target_focal", x, torch.zeros(n, dtype=torch.int32),
                           weight=None, reduction=reduction, avg_factor=None,
                           inputs=(("targets", t),), input_dims=2,
                           extra=(float(alpha), float(gamma)))
    return out.reshape(shape) if reduction == "none" else out
