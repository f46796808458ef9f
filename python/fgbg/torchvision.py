"""torchvision's API on fgbg: `fgbg.torchvision.sigmoid_focal_loss` is a drop-in replacement for
`torchvision.ops.sigmoid_focal_loss` (same signature, same float targets, same reductions).

    from fgbg.torchvision import sigmoid_focal_loss
    loss = sigmoid_focal_loss(logits, one_hot_targets, alpha=0.25, gamma=2, reduction="sum")

inputs and targets have the same shape (any number of dimensions; the last is the class axis).
'none' returns the per-element loss in that shape, 'mean' averages over every element, 'sum' sums.
alpha < 0 disables the alpha weighting, as in torchvision. The gradient with respect to targets is
not computed (None): targets are labels, not parameters.

With fgbg::DenseTargetFocalLoss in the C++ library, every target in [0, 1] runs in one fused
pass. An extension built without it turns targets of 0s and 1s with at most one 1 per row
(one-hot or background rows: what RetinaNet passes) into labels for SigmoidFocalLoss, after
checking them (a few passes over the targets), and raises NotImplementedError for other targets.
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


def _one_hot_labels(targets):
    """fgbg labels for 0/1 targets with at most one 1 per row, or None for other targets."""
    t = targets.detach()
    is_binary = bool(((t == 0) | (t == 1)).all())
    if not is_binary:
        return None
    rows = t.sum(1)
    if bool((rows > 1).any()):
        return None
    lab = t.argmax(1).to(torch.int32) + 1 if t.shape[1] else \
        torch.zeros(t.shape[0], dtype=torch.int32)
    return torch.where(rows > 0, lab, torch.zeros_like(lab))


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
    if getattr(_fgbg, "has_dense_target_focal", False):
        # One fused pass that reads the targets (0/1 targets give SigmoidFocalLoss's bits).
        n = x.shape[0]
        out = _core.dense_call("dense_target_focal", x, torch.zeros(n, dtype=torch.int32),
                               weight=None, reduction=reduction, avg_factor=None,
                               inputs=(("targets", t),), input_dims=2,
                               extra=(float(alpha), float(gamma)))
        return out.reshape(shape) if reduction == "none" else out
    labels = _one_hot_labels(t)
    if labels is not None:
        out = _core.dense_call("sigmoid_focal", x, labels, weight=None, reduction=reduction,
                               avg_factor=None, extra=(float(alpha), float(gamma)))
    else:
        raise NotImplementedError(
            "fgbg.torchvision.sigmoid_focal_loss: soft or multi-hot targets need "
            "fgbg::DenseTargetFocalLoss, which this build of the extension does not have; "
            "targets of 0s and 1s with at most one 1 per row work")
    return out.reshape(shape) if reduction == "none" else out
