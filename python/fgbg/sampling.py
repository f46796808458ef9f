"""fgbg's assigner and samplers on tensors: max-IoU assignment, biased random sampling and OHEM.

Results are tensors: labels in fgbg's convention (int32; -1 ignore, 0 background, k class k),
indices as int64. Sample weights (1 for a sampled anchor, 0 otherwise) for any loss come from
`sample_weights`.
"""
import torch

from . import _core
from ._core import _fgbg

__all__ = ["max_iou_assign", "random_sample", "ohem_sample", "sample_weights"]

_PRESETS = {
    # pos_iou_thr, neg_iou_thr, neg_iou_lo, min_pos_iou, match_low_quality, gt_max_assign_all
    "retinanet": (0.5, 0.4, 0.0, 0.0, True, True),
    "rpn": (0.7, 0.3, 0.0, 0.3, True, True),
    "rcnn": (0.5, 0.5, 0.0, 0.5, False, True),
}


def _boxes(t, name):
    _core._check_tensor(t, name)
    if t.dtype not in (torch.float32, torch.float64):
        t = _core.float_of(t, torch.float32, name, dims=(2,))
    if t.dim() != 2:
        raise ValueError(f"fgbg: {name} must be K x 4 (x1, y1, x2, y2), got {tuple(t.shape)}")
    return t.detach() if _core._reads_in_place(t) else t.detach().contiguous()


def max_iou_assign(boxes, gt_boxes, gt_labels, *, preset="retinanet", pos_iou_thr=None,
                   neg_iou_thr=None, neg_iou_lo=None, min_pos_iou=None, match_low_quality=None,
                   gt_max_assign_all=None, low_quality_zero_iou=False):
    """mmdetection's MaxIoUAssigner for one image: boxes N x 4 and gt_boxes G x 4 (x1, y1, x2,
    y2), gt_labels G classes >= 1. preset 'retinanet' (0.5 / 0.4), 'rpn' (0.7 / 0.3, min_pos 0.3)
    or 'rcnn' (0.5 / 0.5); any keyword overrides the preset. Returns (labels int32 N,
    gt_index int32 N (-1 if none), max_iou float64 N)."""
    if preset not in _PRESETS:
        raise ValueError(f"fgbg: preset must be one of {sorted(_PRESETS)}, got {preset!r}")
    p = list(_PRESETS[preset])
    for k, v in enumerate((pos_iou_thr, neg_iou_thr, neg_iou_lo, min_pos_iou, match_low_quality,
                           gt_max_assign_all)):
        if v is not None:
            p[k] = v
    b = _boxes(boxes, "boxes")
    g = _boxes(gt_boxes, "gt_boxes").to(b.dtype)
    gl = _core.labels_of(gt_labels, g.shape[0], "gt_labels")
    fn = _fgbg.max_iou_assign_f64 if b.dtype == torch.float64 else _fgbg.max_iou_assign_f32
    lab, gt, iou = fn(_core.view(b), _core.view(g), _core.vector_view(gl), float(p[0]),
                      float(p[1]), float(p[2]), float(p[3]), bool(p[4]), bool(p[5]),
                      bool(low_quality_zero_iou))
    return torch.from_numpy(lab), torch.from_numpy(gt), torch.from_numpy(iou)


def random_sample(labels, num=256, pos_fraction=0.5, *, neg_pos_ub=-1.0, sorted=True, seed=0):
    """Biased mini-batch sampling (Faster R-CNN; mmdetection's RandomSampler): at most
    floor(num * pos_fraction) positives, the rest negatives, drawn with std::mt19937_64(seed) (same
    seed, same sample on every platform). Returns (positive indices, negative indices), int64."""
    y = _core.labels_of(labels, labels.shape[0] if isinstance(labels, torch.Tensor) else -1)
    pos, neg = _fgbg.random_sample(_core.vector_view(y), int(num), float(pos_fraction),
                                   float(neg_pos_ub), bool(sorted), int(seed) % 2**64)
    return torch.from_numpy(pos), torch.from_numpy(neg)


def ohem_sample(labels, losses, num=512, pos_fraction=0.25, *, neg_pos_ub=-1.0, sorted=True):
    """OHEM (mmdetection's OHEMSampler): the num * pos_fraction positives and the remaining
    negatives with the largest losses (N values, e.g. a loss's reduction='none' row sums).
    Returns (positive indices, negative indices), int64."""
    y = _core.labels_of(labels, labels.shape[0] if isinstance(labels, torch.Tensor) else -1)
    v = _core.float_of(losses, torch.float64, "losses", dims=(1,))
    pos, neg = _fgbg.ohem_sample(_core.vector_view(y), _core.vector_view(v), int(num),
                                 float(pos_fraction), float(neg_pos_ub), bool(sorted))
    return torch.from_numpy(pos), torch.from_numpy(neg)


def sample_weights(n, positives, negatives, dtype=torch.float32):
    """Omega for a loss: 1 at the sampled anchors, 0 elsewhere (N values)."""
    w = torch.zeros(n, dtype=dtype)
    w[positives] = 1
    w[negatives] = 1
    return w
