"""fgbg's assigner and samplers on tensors: max-IoU assignment, biased random sampling, OHEM, SSD
hard negative mining, instance-balanced and IoU-balanced sampling (Libra R-CNN).

Results are tensors: labels in fgbg's convention (int32; -1 ignore, 0 background, k class k),
indices as int64. Sample weights (1 for a sampled anchor, 0 otherwise) for any loss come from
`sample_weights`.
"""
import torch

from . import _core
from ._core import _fgbg

__all__ = ["max_iou_assign", "random_sample", "ohem_sample", "ssd_hard_negative_mining",
           "instance_balanced_sample", "iou_balanced_sample", "iou_balanced_state",
           "IoUBalancedSampler", "score_hlr_sample", "sample_weights"]

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


def ssd_hard_negative_mining(labels, losses, neg_pos_ratio=3.0, *, sorted=True):
    """SSD hard negative mining of one image (mmdetection's SSDHead): every positive and the
    min(floor(neg_pos_ratio * P), #negatives) negatives of largest loss (ties by index,
    ascending); ignored anchors (-1) are never taken, and an image without positives takes no
    negative. losses: N per-anchor classification losses (e.g. softmax CE without gradient).
    Returns (positive indices, negative indices), int64."""
    y = _core.labels_of(labels, labels.shape[0] if isinstance(labels, torch.Tensor) else -1)
    v = _core.float_of(losses, torch.float64, "losses", dims=(1,))
    pos, neg = _fgbg.ssd_mine(_core.vector_view(y), _core.vector_view(v), float(neg_pos_ratio),
                              bool(sorted))
    return torch.from_numpy(pos), torch.from_numpy(neg)


def _gt_index(gt_index, name="gt_index"):
    _core._check_tensor(gt_index, name)
    if gt_index.is_floating_point() or gt_index.dtype == torch.bool or gt_index.dim() != 1:
        raise TypeError(f"fgbg: {name} must be a 1-D integer tensor (the assigned GT per "
                        "candidate)")
    return gt_index.detach().to(torch.int64)


def instance_balanced_sample(labels, gt_index, num=512, pos_fraction=0.25, *, neg_pos_ub=-1.0,
                             faithful=False, sorted=True, seed=0):
    """Libra R-CNN's InstanceBalancedPosSampler + random negatives: the positives spread evenly
    over their GTs (q = round(P_exp / #GTs) + 1 each, then filled or trimmed to P_exp at random),
    drawn with std::mt19937_64(seed). gt_index: the assigned GT of each candidate (>= 0 at
    positives; any ids). faithful=True reproduces mmdetection's fill, which can re-pick taken
    positives (and so return fewer than P_exp). Returns (positives, negatives), int64."""
    y = _core.labels_of(labels, labels.shape[0] if isinstance(labels, torch.Tensor) else -1)
    g = _gt_index(gt_index)
    pos, neg = _fgbg.instance_balanced_sample(_core.vector_view(y), _core.vector_view(g),
                                              int(num), float(pos_fraction), float(neg_pos_ub),
                                              bool(sorted), bool(faithful), int(seed) % 2**64)
    return torch.from_numpy(pos), torch.from_numpy(neg)


_RANGE_UPPER = {"global_max": 0, "neg_max": 1, "fixed": 2}


def iou_balanced_state(floor_thr=-1.0):
    """A fresh state of the faithful IoU-balanced sampler (mmdetection's mutable floor_thr), as a
    uint8 tensor holding fgbg's checksummed blob."""
    return torch.frombuffer(bytearray(_fgbg.iou_balanced_new_state(float(floor_thr))),
                            dtype=torch.uint8)


def iou_balanced_sample(labels, gt_index, max_iou, num=512, pos_fraction=0.25, *,
                        neg_pos_ub=-1.0, floor_thr=-1.0, floor_fraction=0.0, num_bins=3,
                        range_upper="global_max", fixed_upper=0.5,
                        instance_balanced_positives=True, positive_faithful=False, state=None,
                        update_state=True, sorted=True, seed=0):
    """Libra R-CNN's sampler: IoU-balanced negatives (mmdetection's IoUBalancedNegSampler: the
    negatives drawn evenly from num_bins IoU bins above floor_thr, the rest from the floor set)
    with instance-balanced positives (or random ones with instance_balanced_positives=False),
    std::mt19937_64(seed). max_iou: each candidate's max IoU with any GT (in [0, 1]).
    range_upper: the upper end of the bins, 'global_max' (mmdetection's, over every candidate),
    'neg_max' or 'fixed' (fixed_upper).

    state=None is the clean, stateless mode: floor_thr=-1 always bins every negative.
    state=iou_balanced_state(floor_thr) is mmdetection's faithful mode: a floor_thr of -1 turns
    into 0 on the first call that samples (so later calls bin only IoU > 0); the tensor is
    updated in place (unless update_state=False). Returns (positives, negatives), int64."""
    y = _core.labels_of(labels, labels.shape[0] if isinstance(labels, torch.Tensor) else -1)
    g = _gt_index(gt_index)
    v = _core.float_of(max_iou, torch.float64, "max_iou", dims=(1,))
    if range_upper not in _RANGE_UPPER:
        raise ValueError(f"fgbg: range_upper must be one of {list(_RANGE_UPPER)}, got "
                         f"{range_upper!r}")
    faithful = state is not None
    blob = b""
    if faithful:
        if not isinstance(state, torch.Tensor) or state.dtype != torch.uint8 or state.dim() != 1:
            raise TypeError("fgbg: state must be a 1-D uint8 tensor from "
                            "fgbg.iou_balanced_state (or IoUBalancedSampler's buffer)")
        blob = state.detach().cpu().contiguous().numpy().tobytes()
    pos, neg, new = _fgbg.iou_balanced_sample(
        _core.vector_view(y), _core.vector_view(g), _core.vector_view(v), int(num),
        float(pos_fraction), float(neg_pos_ub), bool(sorted), float(floor_thr),
        float(floor_fraction), int(num_bins), faithful, _RANGE_UPPER[range_upper],
        float(fixed_upper), bool(instance_balanced_positives), bool(positive_faithful),
        int(seed) % 2**64, blob)
    if faithful and update_state:
        b = torch.frombuffer(bytearray(new), dtype=torch.uint8)
        if b.numel() != state.numel():
            raise ValueError("fgbg: the state changed size")
        with torch.no_grad():
            state.copy_(b)
    return torch.from_numpy(pos), torch.from_numpy(neg)


class IoUBalancedSampler(torch.nn.Module):
    """Libra R-CNN's combined sampler as a module whose faithful floor threshold lives in the
    registered buffer `state` (state_dict round-trips it; reset_state() starts it over).
    faithful=False: the stateless clean mode. sample(labels, gt_index, max_iou, seed) returns
    (positives, negatives). The state is per rank and is not reduced across ranks (it is what
    mmdetection's per-rank sampler holds)."""

    def __init__(self, num=512, pos_fraction=0.25, neg_pos_ub=-1.0, floor_thr=-1.0,
                 floor_fraction=0.0, num_bins=3, range_upper="global_max", fixed_upper=0.5,
                 instance_balanced_positives=True, positive_faithful=False, faithful=True):
        super().__init__()
        self.cfg = dict(num=int(num), pos_fraction=float(pos_fraction),
                        neg_pos_ub=float(neg_pos_ub), floor_thr=float(floor_thr),
                        floor_fraction=float(floor_fraction), num_bins=int(num_bins),
                        range_upper=range_upper, fixed_upper=float(fixed_upper),
                        instance_balanced_positives=bool(instance_balanced_positives),
                        positive_faithful=bool(positive_faithful))
        self.faithful = bool(faithful)
        self.register_buffer("state", iou_balanced_state(self.cfg["floor_thr"]))

    @property
    def floor_thr(self):
        """The floor threshold of the next faithful call."""
        return _fgbg.iou_balanced_inspect(self.state.numpy().tobytes())

    def sample(self, labels, gt_index, max_iou, seed=0):
        return iou_balanced_sample(labels, gt_index, max_iou, state=self.state if self.faithful
                                   else None, seed=seed, **self.cfg)

    forward = sample

    def reset_state(self):
        with torch.no_grad():
            self.state.copy_(iou_balanced_state(self.cfg["floor_thr"]))


def score_hlr_sample(labels, logits, boxes, num=512, pos_fraction=0.25, *, neg_pos_ub=-1.0,
                     k=0.5, bias=0.0, score_thr=0.05, iou_thr=0.5, seed=0):
    """ISR-N, PISA's Score-HLR sampler (mmdetection's ScoreHLRSampler) for one image: random
    positives (at most floor(num * pos_fraction)), then the negatives ranked by their score
    hierarchical local rank: each negative's max foreground softmax score s over its R-CNN logits
    (N x (C+1), column 0 the background; a no-grad forward), the valid ones (s > score_thr)
    grouped by NMS matching of their boxes (N x 4, or N x 4C class-specific: the box of the
    negative's top class) at iou_thr and ordered by (rank in group, s descending); the top ones
    are taken, random invalid negatives fill up. Each negative gets a weight
    (bias + (1 - bias) v)^k of its rank v, rescaled to keep the negatives' background
    cross-entropy. std::mt19937_64(seed). Returns (positives, negatives, negative_weights,
    info): negatives in rank order then the random ones; info = dict(valid, ranked, random,
    ratio). The weights go to a loss as
    sample_weights(N, positives, negatives, negative_weights=...)."""
    y = _core.labels_of(labels, labels.shape[0] if isinstance(labels, torch.Tensor) else -1)
    _core._check_tensor(logits, "logits")
    dt = torch.float64 if logits.dtype == torch.float64 else torch.float32
    x = _core.float_of(logits, dt, "logits", dims=(2,))
    b = _core.float_of(boxes, dt, "boxes", dims=(2,))
    fn = _fgbg.score_hlr_sample_f64 if dt == torch.float64 else _fgbg.score_hlr_sample_f32
    pos, neg, w, (valid, ranked, rand, ratio) = fn(
        _core.vector_view(y), _core.view(x), _core.view(b), int(num), float(pos_fraction),
        float(neg_pos_ub), float(k), float(bias), float(score_thr), float(iou_thr),
        int(seed) % 2**64)
    return (torch.from_numpy(pos), torch.from_numpy(neg), torch.from_numpy(w),
            {"valid": valid, "ranked": ranked, "random": rand, "ratio": ratio})


def sample_weights(n, positives, negatives, dtype=torch.float32, negative_weights=None):
    """Omega for a loss: 1 at the sampled anchors (negative_weights at the negatives when given,
    e.g. ISR-N's), 0 elsewhere (N values)."""
    w = torch.zeros(n, dtype=dtype)
    w[positives] = 1
    w[negatives] = 1 if negative_weights is None else negative_weights.to(dtype)
    return w
