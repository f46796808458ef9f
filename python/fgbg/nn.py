"""fgbg's losses as torch.nn.Modules with mmdetection's signature.

Constructor: the method's hyper-parameters, `reduction`, `loss_weight` (a final multiplier,
folded into the backward pass: no extra pass over the gradient), `class_weight` where mmdetection
has it, `mmdet_labels` and `nonfinite`. forward(pred, target, weight=None, avg_factor=None,
reduction_override=None).

Labels: fgbg's convention by default (-1 ignore, 0 background, k in 1..C class k). With
mmdet_labels=True, mmdetection's: 0..C-1 the classes, C (= num_classes) the background, negative
values ignored; a softmax head's logits then have the background in the last column, as in
mmdetection (they are rotated to fgbg's column 0 first, a copy of N x (C+1)).

avg_factor: mmdetection's sum / (avg_factor + FLT_EPSILON), to the last bit; only with 'mean'.
'mean' without avg_factor divides by the number of non-ignored elements (every element when no
label is negative, i.e. mmdetection's mean). See docs/python.md and docs/porting.md.

Stateful modules (GHMC, EqualizedFocalLoss) keep fgbg's state blob in the registered buffer
`state`, so state_dict() / load_state_dict() carry it; the state is updated by forward in
training mode only. distributed=True sums their statistics over torch.distributed's default group
(every rank must call forward), so every rank trains on the statistics of the whole batch.
"""
import torch

from . import _core, functional as F

__all__ = ["FocalLoss", "CrossEntropyLoss", "QualityFocalLoss", "VarifocalLoss",
           "SoftTargetCrossEntropyLoss", "GHMC", "EqualizedFocalLoss", "ALRPLoss", "APLoss",
           "RankSortLoss", "DRLoss", "FocalLossStar", "CARLLoss", "ISRP", "GuidedLoss",
           "ResidualObjectnessLoss"]

_FLT_EPSILON = float(torch.finfo(torch.float32).eps)


def _mmdet_to_fgbg(target, num_classes, name="target"):
    """mmdetection's labels (0..C-1 classes, C background, < 0 ignored) as fgbg's."""
    _core._check_tensor(target, name)
    if target.is_floating_point() or target.dtype == torch.bool:
        raise TypeError(f"fgbg: {name} must be an integer tensor of labels, got {target.dtype}")
    if target.numel() and int(target.max()) > num_classes:
        raise ValueError(f"fgbg: {name} holds {int(target.max())}; with mmdet_labels a label is "
                         f"0..{num_classes - 1} (a class) or {num_classes} (background)")
    t = target.to(torch.int64)
    y = t + 1
    y = torch.where(t == num_classes, torch.zeros_like(y), y)
    return torch.where(t < 0, torch.full_like(y, -1), y)


class _Loss(torch.nn.Module):
    _reductions = ("none", "mean", "sum", "num_positives")

    def __init__(self, reduction="mean", loss_weight=1.0, mmdet_labels=False, nonfinite="raise"):
        super().__init__()
        _core.check_nonfinite(nonfinite)
        self._check_reduction(reduction)
        self.reduction = reduction
        self.loss_weight = float(loss_weight)
        self.mmdet_labels = bool(mmdet_labels)
        self.nonfinite = nonfinite

    def _check_reduction(self, r):
        if r not in self._reductions:
            raise ValueError(f"fgbg: {type(self).__name__}: reduction must be one of "
                             f"{self._reductions}, got {r!r}")

    def _reduction_and_factor(self, reduction_override, avg_factor):
        r = reduction_override if reduction_override else self.reduction
        self._check_reduction(r)
        if avg_factor is None or r == "none":
            return r, None
        if r != "mean":
            raise ValueError(f'fgbg: avg_factor can not be used with reduction="{r}"')
        if isinstance(avg_factor, torch.Tensor):
            avg_factor = float(avg_factor.detach().cpu())
        return r, float(avg_factor) + _FLT_EPSILON

    def _labels(self, target, num_classes):
        return _mmdet_to_fgbg(target, num_classes) if self.mmdet_labels else target

    def extra_repr(self):
        return f"reduction={self.reduction!r}, loss_weight={self.loss_weight}"


def _sigmoid_class_weight(labels, n, c, class_weight, weight, dtype):
    """Per-element weights: class_weight[j] at the label column j of a positive anchor (what
    mmdetection's pos_weight does with one-hot targets), 1 elsewhere, times `weight`."""
    cw = torch.as_tensor(class_weight, dtype=dtype).flatten()
    if cw.numel() != c:
        raise ValueError(f"fgbg: class_weight has {cw.numel()} entries, the logits {c} classes")
    omega = torch.ones((n, c), dtype=dtype)
    if weight is not None:
        w = weight.detach().to(dtype)
        omega = omega * (w.view(-1, 1) if w.dim() == 1 else w)
    lab = labels.to(torch.int64)
    pos = (lab > 0).nonzero().flatten()
    col = lab[pos] - 1
    if pos.numel() and int(col.max()) >= c:
        raise ValueError(f"fgbg: a label is {int(col.max()) + 1}, the logits have {c} classes")
    omega[pos, col] = omega[pos, col] * cw[col]
    return omega


def _softmax_class_weight(labels, class_weight, weight, c1, dtype):
    """Per-anchor weights cw[y] with mmdetection's order of cw (classes, then background)."""
    cw = torch.as_tensor(class_weight, dtype=dtype).flatten()
    if cw.numel() != c1:
        raise ValueError(f"fgbg: class_weight has {cw.numel()} entries, the logits {c1} columns")
    lab = labels.to(torch.int64)
    idx = torch.where(lab == 0, torch.full_like(lab, c1 - 1), lab - 1).clamp(0, c1 - 1)
    omega = torch.where(lab < 0, torch.zeros((), dtype=dtype), cw[idx])
    if weight is not None:
        omega = omega * weight.detach().to(dtype).flatten()
    return omega


def _rotate_background_first(pred):
    """mmdetection's softmax logits (background last) as fgbg's (background first)."""
    return torch.cat([pred[:, -1:], pred[:, :-1]], dim=1)


def _weight_dtype(pred):
    return torch.float64 if pred.dtype == torch.float64 else torch.float32


class FocalLoss(_Loss):
    """mmdetection's FocalLoss: sigmoid focal loss (use_sigmoid=True), or fgbg's softmax focal
    loss with Detectron's alpha (use_sigmoid=False; logits N x (C+1))."""

    def __init__(self, use_sigmoid=True, gamma=2.0, alpha=0.25, reduction="mean",
                 loss_weight=1.0, class_weight=None, mmdet_labels=False, nonfinite="raise"):
        super().__init__(reduction, loss_weight, mmdet_labels, nonfinite)
        self.use_sigmoid = bool(use_sigmoid)
        self.gamma = float(gamma)
        self.alpha = float(alpha)
        self.class_weight = class_weight

    def forward(self, pred, target, weight=None, avg_factor=None, reduction_override=None):
        r, af = self._reduction_and_factor(reduction_override, avg_factor)
        if self.use_sigmoid:
            labels = self._labels(target, pred.shape[1])
            if self.class_weight is not None:
                weight = _sigmoid_class_weight(labels, pred.shape[0], pred.shape[1],
                                               self.class_weight, weight, _weight_dtype(pred))
            fn = "sigmoid_focal"
            per_anchor = False
        else:
            labels = self._labels(target, pred.shape[1] - 1)
            if self.mmdet_labels:
                pred = _rotate_background_first(pred)
            if self.class_weight is not None:
                weight = _softmax_class_weight(labels, self.class_weight, weight, pred.shape[1],
                                               _weight_dtype(pred))
            fn = "softmax_focal"
            per_anchor = True
        return _core.dense_call(fn, pred, labels, weight=weight, reduction=r, avg_factor=af,
                                extra=(self.alpha, self.gamma), per_anchor=per_anchor,
                                nonfinite=self.nonfinite, scale=self.loss_weight)


class CrossEntropyLoss(_Loss):
    """mmdetection's CrossEntropyLoss: softmax CE over N x (C+1) logits (use_sigmoid=False) or BCE
    with one-hot targets over N x C (use_sigmoid=True). class_weight: mmdetection's (sigmoid: C
    entries applied to the positive term; softmax: C+1 entries, background last).
    ignore_index: labels equal to it are ignored (fgbg's -1 always is)."""

    def __init__(self, use_sigmoid=False, reduction="mean", class_weight=None, loss_weight=1.0,
                 ignore_index=None, mmdet_labels=False, nonfinite="raise"):
        super().__init__(reduction, loss_weight, mmdet_labels, nonfinite)
        self.use_sigmoid = bool(use_sigmoid)
        self.class_weight = class_weight
        self.ignore_index = ignore_index

    def forward(self, pred, target, weight=None, avg_factor=None, reduction_override=None,
                ignore_index=None):
        r, af = self._reduction_and_factor(reduction_override, avg_factor)
        ii = ignore_index if ignore_index is not None else self.ignore_index
        if ii is not None:
            _core._check_tensor(target, "target")
            target = torch.where(target == ii, torch.full_like(target, -1), target)
        if self.use_sigmoid:
            labels = self._labels(target, pred.shape[1])
            if self.class_weight is not None:
                weight = _sigmoid_class_weight(labels, pred.shape[0], pred.shape[1],
                                               self.class_weight, weight, _weight_dtype(pred))
            return _core.dense_call("sigmoid_ce", pred, labels, weight=weight, reduction=r,
                                    avg_factor=af, nonfinite=self.nonfinite,
                                    scale=self.loss_weight)
        labels = self._labels(target, pred.shape[1] - 1)
        if self.mmdet_labels:
            pred = _rotate_background_first(pred)
        if self.class_weight is not None:
            weight = _softmax_class_weight(labels, self.class_weight, weight, pred.shape[1],
                                           _weight_dtype(pred))
        return _core.dense_call("softmax_ce", pred, labels, weight=weight, reduction=r,
                                avg_factor=af, per_anchor=True, nonfinite=self.nonfinite,
                                scale=self.loss_weight)


def _dense_target_to_quality(target):
    """mmdetection's dense N x C IoU target (one non-zero per positive row) as (labels, quality)."""
    _core._check_tensor(target, "target")
    pos = target > 0
    cnt = pos.sum(1)
    if bool((cnt > 1).any()):
        raise ValueError("fgbg: a row of the dense target has more than one non-zero entry; fgbg "
                         "takes one class and one quality per anchor")
    labels = torch.where(cnt == 1, pos.to(torch.int64).argmax(1) + 1,
                         torch.zeros_like(cnt, dtype=torch.int64))
    quality = target.max(1).values if target.shape[1] else target.new_zeros(target.shape[0])
    return labels, quality.clamp(min=0)


class QualityFocalLoss(_Loss):
    """mmdetection's QualityFocalLoss: forward(pred, target=(labels, score), ...)."""
    _reductions = ("none", "mean", "sum", "num_positives", "target_sum")

    def __init__(self, use_sigmoid=True, beta=2.0, reduction="mean", loss_weight=1.0,
                 mmdet_labels=False, nonfinite="raise"):
        super().__init__(reduction, loss_weight, mmdet_labels, nonfinite)
        if not use_sigmoid:
            raise ValueError("fgbg: QualityFocalLoss supports use_sigmoid=True only")
        self.beta = float(beta)

    def forward(self, pred, target, weight=None, avg_factor=None, reduction_override=None):
        r, af = self._reduction_and_factor(reduction_override, avg_factor)
        labels, score = target
        labels = self._labels(labels, pred.shape[1])
        return _core.dense_call("quality_focal", pred, labels, weight=weight, reduction=r,
                                avg_factor=af, inputs=(("score", score),), extra=(self.beta,),
                                nonfinite=self.nonfinite, scale=self.loss_weight)


class VarifocalLoss(_Loss):
    """mmdetection's VarifocalLoss: target is the dense N x C IoU target (mmdetection's) or a
    tuple (labels, quality) in fgbg's form."""
    _reductions = ("none", "mean", "sum", "num_positives", "target_sum")

    def __init__(self, use_sigmoid=True, alpha=0.75, gamma=2.0, iou_weighted=True,
                 reduction="mean", loss_weight=1.0, min_quality=1e-6, mmdet_labels=False,
                 nonfinite="raise"):
        super().__init__(reduction, loss_weight, mmdet_labels, nonfinite)
        if not use_sigmoid:
            raise ValueError("fgbg: VarifocalLoss supports use_sigmoid=True only")
        self.alpha, self.gamma = float(alpha), float(gamma)
        self.iou_weighted = bool(iou_weighted)
        self.min_quality = float(min_quality)

    def forward(self, pred, target, weight=None, avg_factor=None, reduction_override=None):
        r, af = self._reduction_and_factor(reduction_override, avg_factor)
        if isinstance(target, (tuple, list)):
            labels, quality = target
            labels = self._labels(labels, pred.shape[1])
        else:
            labels, quality = _dense_target_to_quality(target)
        return _core.dense_call("varifocal", pred, labels, weight=weight, reduction=r,
                                avg_factor=af, inputs=(("quality", quality),),
                                extra=(self.alpha, self.gamma, self.iou_weighted,
                                       self.min_quality),
                                nonfinite=self.nonfinite, scale=self.loss_weight)


class SoftTargetCrossEntropyLoss(_Loss):
    """ultralytics' classification loss: BCE against the soft target t of each positive at its
    label column; forward(pred, target=(labels, t), ...). Default reduction 'target_sum';
    loss_weight is ultralytics' hyp.cls."""
    _reductions = ("none", "mean", "sum", "num_positives", "target_sum")

    def __init__(self, reduction="target_sum", loss_weight=1.0, mmdet_labels=False,
                 nonfinite="raise"):
        super().__init__(reduction, loss_weight, mmdet_labels, nonfinite)

    def forward(self, pred, target, weight=None, avg_factor=None, reduction_override=None):
        r, af = self._reduction_and_factor(reduction_override, avg_factor)
        labels, t = target
        labels = self._labels(labels, pred.shape[1])
        return _core.dense_call("soft_target_ce", pred, labels, weight=weight, reduction=r,
                                avg_factor=af, inputs=(("targets", t),),
                                nonfinite=self.nonfinite, scale=self.loss_weight)


def _distributed():
    return torch.distributed.is_available() and torch.distributed.is_initialized()


class GHMC(_Loss):
    """mmdetection's GHMC. forward(pred, target, label_weight=None, reduction_override=None):
    target is labels (fgbg's or, with mmdet_labels, mmdetection's); label_weight (N or N x C) is
    a validity mask. GHM-C normalises by its own tot: reduction is 'mean' only."""
    _reductions = ("mean",)

    def __init__(self, bins=10, momentum=0.0, use_sigmoid=True, loss_weight=1.0,
                 reduction="mean", paper_division=False, mmdet_labels=False, distributed=False,
                 nonfinite="raise"):
        super().__init__(reduction, loss_weight, mmdet_labels, nonfinite)
        if not use_sigmoid:
            raise ValueError("fgbg: GHMC supports use_sigmoid=True only (as mmdetection)")
        if distributed and nonfinite != "raise":
            raise ValueError("fgbg: GHMC(distributed=True) needs nonfinite='raise'")
        self.bins, self.momentum = int(bins), float(momentum)
        self.paper_division = bool(paper_division)
        self.distributed = bool(distributed)
        self.register_buffer("state", F.ghmc_state(self.bins))

    def forward(self, pred, target, label_weight=None, reduction_override=None, **kwargs):
        if reduction_override:
            self._check_reduction(reduction_override)
        labels = self._labels(target, pred.shape[1])
        cfg = dict(bins=self.bins, momentum=self.momentum, paper_division=self.paper_division)
        reduced = None
        if self.distributed and _distributed():
            reduced = F.ghmc_statistics(pred, labels, weight=label_weight, **cfg)
            torch.distributed.all_reduce(reduced)
        return F.ghmc_loss(pred, labels, weight=label_weight, state=self.state,
                           update_state=self.training, reduced_statistics=reduced,
                           nonfinite=self.nonfinite, _scale=self.loss_weight, **cfg)

    def reset_state(self):
        with torch.no_grad():
            self.state.copy_(F.ghmc_state(self.bins))

    def extra_repr(self):
        return f"bins={self.bins}, momentum={self.momentum}, loss_weight={self.loss_weight}"


class EqualizedFocalLoss(_Loss):
    """Equalized focal loss (United-Perception's EqualizedFocalLoss). num_classes is C, the number
    of foreground classes (logit columns; the reference's num_classes counts the background).
    forward(pred, target, weight=None, avg_factor=None, reduction_override=None)."""

    def __init__(self, num_classes, alpha=0.25, gamma_b=2.0, scale=8.0, decay=1.0,
                 reduction="mean", loss_weight=1.0, mmdet_labels=False, distributed=False,
                 nonfinite="raise"):
        super().__init__(reduction, loss_weight, mmdet_labels, nonfinite)
        if distributed and nonfinite != "raise":
            raise ValueError("fgbg: EqualizedFocalLoss(distributed=True) needs nonfinite='raise'")
        self.num_classes = int(num_classes)
        self.cfg = dict(alpha=float(alpha), gamma_b=float(gamma_b), scale=float(scale),
                        decay=float(decay))
        self.distributed = bool(distributed)
        self.register_buffer("state", F.efl_state(self.num_classes))

    def forward(self, pred, target, weight=None, avg_factor=None, reduction_override=None):
        r, af = self._reduction_and_factor(reduction_override, avg_factor)
        labels = self._labels(target, pred.shape[1])
        common = dict(weight=weight, reduction=r, avg_factor=af, nonfinite=self.nonfinite,
                      _scale=self.loss_weight, **self.cfg)
        if self.distributed and _distributed() and self.training:
            loss, stats = F.equalized_focal_loss(pred, labels, self.state,
                                                 reduce_statistics=True, **common)
            torch.distributed.all_reduce(stats)
            F.efl_commit(self.state, stats, **self.cfg)
            return loss
        return F.equalized_focal_loss(pred, labels, self.state, update_state=self.training,
                                      **common)

    def reset_state(self):
        with torch.no_grad():
            self.state.copy_(F.efl_state(self.num_classes))

    def extra_repr(self):
        return (f"num_classes={self.num_classes}, {self.cfg}, reduction={self.reduction!r}, "
                f"loss_weight={self.loss_weight}")


class ALRPLoss(_Loss):
    """aLRP loss with its self-balance weight (kemaloksuz/aLRPLoss's head):
    forward(pred, target, loc_error, groups=None) returns cls + lambda_SB * loc (see
    fgbg.alrp_loss). lambda_SB starts at initial_weight; every training iteration with positives
    records (cls, loc), and after `period` of them lambda_SB becomes
    (mean cls + mean loc) / mean loc (kept when mean loc is 0), as fgbg::ALRPSelfBalance does.
    The weight and the record live in registered buffers (state_dict round-trips them)."""
    _reductions = ("mean",)

    def __init__(self, delta=1.0, eps=1e-5, period=3665, initial_weight=50.0, mmdet_labels=False,
                 nonfinite="raise"):
        super().__init__("mean", 1.0, mmdet_labels, nonfinite)
        if not (float(initial_weight) > 0 and float(initial_weight) < float("inf")):
            raise ValueError(f"fgbg: ALRPLoss: initial_weight must be finite and > 0, got "
                             f"{initial_weight}")
        if int(period) < 1:
            raise ValueError(f"fgbg: ALRPLoss: period must be >= 1, got {period}")
        self.delta, self.eps = float(delta), float(eps)
        self.period, self.initial_weight = int(period), float(initial_weight)
        self.register_buffer("sb_weight", torch.tensor(self.initial_weight, dtype=torch.float64))
        self.register_buffer("sb_count", torch.tensor(0, dtype=torch.int64))
        self.register_buffer("sb_sums", torch.zeros(2, dtype=torch.float64))  # sum cls, sum loc

    @property
    def weight(self):
        """The current self-balance weight lambda_SB."""
        return float(self.sb_weight)

    def forward(self, pred, target, loc_error, groups=None):
        labels = self._labels(target, pred.shape[1])
        cls, loc = F.alrp_loss(pred, labels, loc_error, delta=self.delta, eps=self.eps,
                               groups=groups, nonfinite=self.nonfinite)
        has_pos = bool((torch.as_tensor(labels) > 0).any())
        if self.training and has_pos and bool(torch.isfinite(cls)) and bool(torch.isfinite(loc)):
            with torch.no_grad():
                self.sb_sums += torch.tensor([float(cls), float(loc)], dtype=torch.float64)
                self.sb_count += 1
                if int(self.sb_count) == self.period:
                    mean_cls, mean_loc = (self.sb_sums / self.period).tolist()
                    if mean_loc > 0:
                        self.sb_weight.fill_((mean_loc + mean_cls) / mean_loc)
                    self.sb_sums.zero_()
                    self.sb_count.zero_()
        return cls + float(self.sb_weight) * loc

    def reset_state(self):
        with torch.no_grad():
            self.sb_weight.fill_(self.initial_weight)
            self.sb_count.zero_()
            self.sb_sums.zero_()

    def extra_repr(self):
        return f"delta={self.delta}, period={self.period}, weight={self.weight}"


class _RankingModule(_Loss):
    """Base of the ranking-loss modules: own normalisers, so reduction is 'mean' only (kept for
    mmdetection's signature) and there is no weight or avg_factor."""
    _reductions = ("mean",)

    def __init__(self, loss_weight=1.0, mmdet_labels=False, nonfinite="raise"):
        super().__init__("mean", loss_weight, mmdet_labels, nonfinite)

    def _scaled(self, v):
        return v * self.loss_weight if self.loss_weight != 1.0 else v


class APLoss(_RankingModule):
    """AP loss (Chen et al.; the released code) as a module: forward(pred, target, groups=None)
    returns loss_weight * fgbg.ap_loss(...); its backward is the error-driven update."""

    def __init__(self, delta=1.0, interpolate=True, loss_weight=1.0, mmdet_labels=False,
                 nonfinite="raise"):
        super().__init__(loss_weight, mmdet_labels, nonfinite)
        self.delta, self.interpolate = float(delta), bool(interpolate)

    def forward(self, pred, target, groups=None):
        labels = self._labels(target, pred.shape[1])
        return self._scaled(F.ap_loss(pred, labels, delta=self.delta,
                                      interpolate=self.interpolate, groups=groups,
                                      nonfinite=self.nonfinite))

    def extra_repr(self):
        return f"delta={self.delta}, interpolate={self.interpolate}, loss_weight={self.loss_weight}"


class RankSortLoss(_RankingModule):
    """Rank & Sort loss (kemaloksuz/RankSortLoss's head) as a module:
    forward(pred, target, iou, groups=None) returns (loss_weight * loss_rank,
    loss_weight * loss_sort); backward of their sum is the official update."""

    def __init__(self, delta=0.5, eps=1e-10, loss_weight=1.0, mmdet_labels=False,
                 nonfinite="raise"):
        super().__init__(loss_weight, mmdet_labels, nonfinite)
        self.delta, self.eps = float(delta), float(eps)

    def forward(self, pred, target, iou, groups=None):
        labels = self._labels(target, pred.shape[1])
        rank, sort = F.rank_sort_loss(pred, labels, iou, delta=self.delta, eps=self.eps,
                                      groups=groups, nonfinite=self.nonfinite)
        return self._scaled(rank), self._scaled(sort)

    def extra_repr(self):
        return f"delta={self.delta}, loss_weight={self.loss_weight}"


class DRLoss(_RankingModule):
    """DR loss (idstcv/DR_loss's SigmoidDRLoss) as a module: forward(pred, target, groups=None);
    with groups (e.g. the image index) the sum of the per-image losses."""

    def __init__(self, pos_lambda=1.0, neg_lambda=0.07982356001479281, L=6.0, tau=4.0,
                 margin=0.5, loss_weight=1.0, mmdet_labels=False, nonfinite="raise"):
        super().__init__(loss_weight, mmdet_labels, nonfinite)
        self.cfg = dict(pos_lambda=float(pos_lambda), neg_lambda=float(neg_lambda), L=float(L),
                        tau=float(tau), margin=float(margin))

    def forward(self, pred, target, groups=None):
        labels = self._labels(target, pred.shape[1])
        return self._scaled(F.dr_loss(pred, labels, groups=groups, nonfinite=self.nonfinite,
                                      **self.cfg))

    def extra_repr(self):
        return f"{self.cfg}, loss_weight={self.loss_weight}"


class FocalLossStar(_Loss):
    """FL* (RetinaNet appendix A; fvcore's sigmoid_focal_loss_star) with mmdetection's module
    signature: forward(pred, target, weight=None, avg_factor=None, reduction_override=None)."""

    def __init__(self, gamma=1.0, alpha=-1.0, reduction="mean", loss_weight=1.0,
                 mmdet_labels=False, nonfinite="raise"):
        super().__init__(reduction, loss_weight, mmdet_labels, nonfinite)
        self.gamma, self.alpha = float(gamma), float(alpha)

    def forward(self, pred, target, weight=None, avg_factor=None, reduction_override=None):
        r, af = self._reduction_and_factor(reduction_override, avg_factor)
        labels = self._labels(target, pred.shape[1])
        return _core.dense_call("focal_star", pred, labels, weight=weight, reduction=r,
                                avg_factor=af, extra=(self.alpha, self.gamma),
                                nonfinite=self.nonfinite, scale=self.loss_weight)


class CARLLoss(_Loss):
    """CARL of PISA as a module (mmdetection's carl_loss and loss_weight):
    forward(pred, target, reg_loss, avg_factor=None, reduction_override=None), reg_loss the N
    per-anchor regression losses (summed over the coordinates; it may carry autograd history).
    use_sigmoid=False: softmax logits N x (C+1) (background last with mmdet_labels)."""
    _reductions = ("num_positives", "mean", "sum")

    def __init__(self, k=1.0, bias=0.2, use_sigmoid=True, reduction="num_positives",
                 loss_weight=1.0, mmdet_labels=False, nonfinite="raise"):
        super().__init__(reduction, loss_weight, mmdet_labels, nonfinite)
        self.k, self.bias, self.use_sigmoid = float(k), float(bias), bool(use_sigmoid)

    def forward(self, pred, target, reg_loss, avg_factor=None, reduction_override=None):
        r = reduction_override if reduction_override else self.reduction
        self._check_reduction(r)
        af = None
        if avg_factor is not None:
            if r != "mean":
                raise ValueError(f'fgbg: avg_factor can not be used with reduction="{r}"')
            af = float(avg_factor) + _FLT_EPSILON
        c = pred.shape[1] if self.use_sigmoid else pred.shape[1] - 1
        labels = self._labels(target, c)
        if self.mmdet_labels and not self.use_sigmoid:
            pred = _rotate_background_first(pred)
        return F.carl_loss(pred, labels, reg_loss, k=self.k, bias=self.bias,
                           sigmoid=self.use_sigmoid, reduction=r, avg_factor=af,
                           nonfinite=self.nonfinite, _scale=self.loss_weight)


class ISRP(torch.nn.Module):
    """ISR-P of PISA as a module: forward(labels, gt_index, iou, cls_loss, label_weights=None)
    returns the new label weights (fgbg.isr_p), constants for the classification loss's
    weight=. num_classes is C (labels are checked against it)."""

    def __init__(self, num_classes, k=2.0, bias=0.0, mmdet_labels=False):
        super().__init__()
        self.num_classes, self.k, self.bias = int(num_classes), float(k), float(bias)
        self.mmdet_labels = bool(mmdet_labels)

    def forward(self, labels, gt_index, iou, cls_loss, label_weights=None):
        if self.mmdet_labels:
            labels = _mmdet_to_fgbg(labels, self.num_classes, "labels")
        w, _ = F.isr_p(labels, gt_index, iou, cls_loss, self.num_classes,
                       label_weights=label_weights, k=self.k, bias=self.bias)
        return w


class GuidedLoss(_Loss):
    """The sampling-free guided loss as a module: forward(pred, target, reg_loss, weight=None,
    reduction_override=None) returns classification_scale * reg_loss with the gradient of the
    classification loss (BCE, or softmax CE with use_sigmoid=False) scaled by
    reg_loss / L_cls (fgbg.guided_loss). loss_weight multiplies the result."""
    _reductions = ("sum", "mean", "num_positives")

    def __init__(self, use_sigmoid=True, classification_scale=1.0,
                 treat_ignored_as_negative=False, reduction="sum", loss_weight=1.0,
                 mmdet_labels=False, nonfinite="raise"):
        super().__init__(reduction, loss_weight, mmdet_labels, nonfinite)
        self.use_sigmoid = bool(use_sigmoid)
        self.classification_scale = float(classification_scale)
        self.treat_ignored_as_negative = bool(treat_ignored_as_negative)

    def forward(self, pred, target, reg_loss, weight=None, reduction_override=None):
        r = reduction_override if reduction_override else self.reduction
        self._check_reduction(r)
        c = pred.shape[1] if self.use_sigmoid else pred.shape[1] - 1
        labels = self._labels(target, c)
        if self.mmdet_labels and not self.use_sigmoid:
            pred = _rotate_background_first(pred)
        return F.guided_loss(pred, labels, reg_loss, softmax=not self.use_sigmoid,
                             classification_scale=self.classification_scale,
                             treat_ignored_as_negative=self.treat_ignored_as_negative,
                             weight=weight, reduction=r, nonfinite=self.nonfinite,
                             _scale=self.loss_weight)


class ResidualObjectnessLoss(torch.nn.Module):
    """Residual objectness (chenjoya/resobj) as a module: forward(class_logits, target,
    stage_logits) returns loss_weight * the objectness + classification loss (fgbg's
    residual_objectness_loss); `self.last` holds the call's info (box_normalizer divides the
    caller's summed box loss). The EMA of the number of positives lives in the registered buffer
    `state` (state_dict round-trips it), updated in training mode only; reset_state() starts it
    over. distributed=True all-reduces the positive count over torch.distributed's default
    group, so every rank's normalisers are those of the whole batch."""

    def __init__(self, obj_normalizer_scale=20.0, cls_normalizer_scale=10.0,
                 box_normalizer_scale=1.0, ema_momentum=0.9, ema_initial=100.0,
                 ema_updates="three_per_call", loss_weight=1.0, mmdet_labels=False,
                 distributed=False, nonfinite="raise"):
        super().__init__()
        _core.check_nonfinite(nonfinite)
        self.cfg = dict(obj_normalizer_scale=float(obj_normalizer_scale),
                        cls_normalizer_scale=float(cls_normalizer_scale),
                        box_normalizer_scale=float(box_normalizer_scale),
                        ema_momentum=float(ema_momentum), ema_initial=float(ema_initial),
                        ema_updates=ema_updates)
        F._resobj_cfg(self.cfg)  # options checked now
        self.loss_weight = float(loss_weight)
        self.mmdet_labels = bool(mmdet_labels)
        self.distributed = bool(distributed)
        self.nonfinite = nonfinite
        self.last = {}
        self.register_buffer("state", F.residual_objectness_state())

    def forward(self, class_logits, target, stage_logits):
        labels = _mmdet_to_fgbg(target, class_logits.shape[1]) if self.mmdet_labels else target
        reduced = None
        if self.distributed and _distributed():
            reduced = F.residual_objectness_statistics(labels, class_logits.shape[1], **self.cfg)
            torch.distributed.all_reduce(reduced)
        loss, self.last = F.residual_objectness_loss(
            class_logits, labels, stage_logits, self.state, update_state=self.training,
            reduced_statistics=reduced, nonfinite=self.nonfinite, _scale=self.loss_weight,
            **self.cfg)
        return loss

    def reset_state(self):
        with torch.no_grad():
            self.state.copy_(F.residual_objectness_state())

    def extra_repr(self):
        return f"{self.cfg}, loss_weight={self.loss_weight}"
