"""The sampling-free mechanism (Chen et al., "Is Heuristic Sampling Necessary in Training Deep
Object Detectors?", IEEE TIP 2021; ChenJoya/sampling-free) besides its guided loss
(fgbg.guided_loss, fgbg.nn.GuidedLoss): the optimal bias initialisation of the classifier and the
class-adaptive score thresholds, from the anchors' assignment counts.

    stats = fgbg.sampling_free.anchor_statistics(labels, num_classes=80)   # add more batches with
    stats = fgbg.sampling_free.anchor_statistics(labels2, 80, into=stats)  # into=
    fgbg.sampling_free.init_sigmoid_bias_(head.bias, stats)                # ln(pi / (1 - pi))
    thr = fgbg.sampling_free.class_adaptive_thresholds(stats, floor=1e-4)  # C thresholds

Counts are exact integers; every formula is fgbg's (include/fgbg/unbiased/optimal_bias.hpp,
class_adaptive_threshold.hpp), and every error is fgbg's ValueError.
"""
import torch

from . import _core
from ._core import _fgbg

__all__ = ["anchor_statistics", "optimal_sigmoid_prior", "optimal_sigmoid_bias",
           "optimal_softmax_background_bias", "released_score_threshold",
           "class_adaptive_thresholds", "select_above_thresholds", "init_sigmoid_bias_",
           "init_softmax_bias_"]


def anchor_statistics(labels, num_classes, into=None):
    """Counts of one assignment (labels: N integers, -1 ignore, 0 background, k class k), added to
    `into` (a previous result) when given: dict(num_fg, num_bg, num_ignored, per_class (C
    counts), num_classes)."""
    y = _core.labels_of(labels, labels.shape[0] if isinstance(labels, torch.Tensor) else -1)
    fg, bg, ig, per = _fgbg.anchor_statistics(_core.vector_view(y), int(num_classes))
    if into is not None:
        if into["num_classes"] != int(num_classes):
            raise ValueError(f"fgbg: anchor_statistics: into has {into['num_classes']} classes, "
                             f"not {num_classes}")
        fg += into["num_fg"]
        bg += into["num_bg"]
        ig += into["num_ignored"]
        per = [a + b for a, b in zip(per, into["per_class"])]
    return {"num_fg": fg, "num_bg": bg, "num_ignored": ig, "per_class": per,
            "num_classes": int(num_classes)}


def _counts(stats, num_bg, num_classes):
    if isinstance(stats, dict):
        return int(stats["num_fg"]), int(stats["num_bg"]), int(stats["num_classes"])
    if num_bg is None or num_classes is None:
        raise TypeError("fgbg: pass anchor_statistics(...) or (num_fg, num_bg, num_classes)")
    return int(stats), int(num_bg), int(num_classes)


def optimal_sigmoid_prior(stats, num_bg=None, num_classes=None):
    """pi = N_fg / (N_fg + N_bg) / C, from anchor_statistics(...) or (num_fg, num_bg, C)."""
    return _fgbg.optimal_sigmoid_prior(*_counts(stats, num_bg, num_classes))


def optimal_sigmoid_bias(stats, num_bg=None, num_classes=None):
    """ln(pi / (1 - pi)), the bias of every channel of a C-channel sigmoid classifier."""
    return _fgbg.optimal_sigmoid_bias(*_counts(stats, num_bg, num_classes))


def optimal_softmax_background_bias(stats, num_bg=None, num_classes=None):
    """ln(C N_bg / N_fg), the background bias of a softmax head whose C class biases are 0."""
    return _fgbg.optimal_softmax_background_bias(*_counts(stats, num_bg, num_classes))


def released_score_threshold(stats, num_bg=None, num_classes=None):
    """The released global pre-NMS score threshold pi (C + 1)."""
    return _fgbg.released_score_threshold(*_counts(stats, num_bg, num_classes))


def class_adaptive_thresholds(stats, floor=0.0, dtype=torch.float32):
    """tau_k = max(floor, f_k (C + 1)) for k = 1..C, f_k the class's share of the counted anchors
    (fgbg's per-class variant; its mean over the classes is the released threshold with floor 0).
    A C-tensor: keep a candidate (anchor n, class k) iff scores[n, k - 1] > tau_k."""
    t = _fgbg.per_class_thresholds([int(v) for v in stats["per_class"]], int(stats["num_fg"]),
                                   int(stats["num_bg"]), int(stats["num_ignored"]), float(floor))
    return torch.tensor(t, dtype=dtype)


def select_above_thresholds(scores, thresholds, order="anchor_major"):
    """The candidates of the class-adaptive thresholds: every (anchor n, class k) with
    scores[n, k - 1] > thresholds[k - 1] (strict, compared in the scores' dtype, as torch's
    `scores > thresh`). scores: N x C probabilities (float32 or float64), thresholds: C values, or
    one number for the released global threshold. order: 'anchor_major' (anchor, then class
    ascending: torch.nonzero's order) or 'score_descending' (ties by anchor, then class).
    Returns (anchors int64, labels int64 in 1..C, scores)."""
    if order not in ("anchor_major", "score_descending"):
        raise ValueError(f"fgbg: order must be 'anchor_major' or 'score_descending', got "
                         f"{order!r}")
    _core._check_tensor(scores, "scores")
    dt = torch.float64 if scores.dtype == torch.float64 else torch.float32
    s = _core.float_of(scores, dt, "scores", dims=(2,))
    if not isinstance(thresholds, torch.Tensor):
        thresholds = torch.full((s.shape[1],), float(thresholds), dtype=torch.float64)
    t = _core.float_of(thresholds, torch.float64, "thresholds", dims=(1,))
    fn = _fgbg.select_above_f64 if dt == torch.float64 else _fgbg.select_above_f32
    a, k, v = fn(_core.view(s), _core.vector_view(t), order == "score_descending")
    return torch.from_numpy(a), torch.from_numpy(k), torch.from_numpy(v)


def init_sigmoid_bias_(bias, stats, num_bg=None, num_classes=None):
    """Fills a classifier's bias tensor (in place, no autograd) with optimal_sigmoid_bias."""
    v = optimal_sigmoid_bias(stats, num_bg, num_classes)
    with torch.no_grad():
        bias.fill_(v)
    return bias


def init_softmax_bias_(bias, stats, num_bg=None, num_classes=None, background_first=True):
    """Fills a softmax classifier's C + 1 biases: 0 for the classes and
    optimal_softmax_background_bias for the background (column 0, or the last column with
    background_first=False, mmdetection's layout)."""
    v = optimal_softmax_background_bias(stats, num_bg, num_classes)
    with torch.no_grad():
        bias.zero_()
        bias[0 if background_first else -1] = v
    return bias
