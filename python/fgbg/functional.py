"""fgbg's losses as differentiable functions of torch tensors (CPU).

Every function takes logits (N x C for sigmoid heads, N x (C+1) with column 0 the background for
softmax heads) and labels (N integers: -1 ignore, 0 background, k in 1..C class k, i.e. sigmoid
column k-1 and softmax column k), runs fgbg's fused value_and_grad once in forward and scales the
stored gradient by grad_output in backward. See docs/python.md.

reduction (and avg_factor) choose fgbg's Normalizer A in L = sum_i w_i l_i / A:

* 'mean': A = max(1, number of non-ignored elements); an element is an (anchor, class) pair for
  sigmoid heads and an anchor for softmax heads; weights do not change the count. Labels -1 are
  not counted (pass weight 0 instead of -1 to count them, as torch's mean does).
* 'mean' with avg_factor=A: A exactly (mmdetection adds FLT_EPSILON: the modules in fgbg.nn do).
* 'sum': A = 1.
* 'num_positives': A = max(1, number of anchors with a class label) (RetinaNet).
* 'target_sum': A = max(1, sum of the positives' soft targets) (QFL, VFL, soft-target BCE only;
  ultralytics).
* 'none': the weighted, unnormalised loss of every element (sigmoid heads, N x C) or anchor
  (softmax heads, N), 0 where ignored; avg_factor is ignored (as in mmdetection).

nonfinite='raise' (default) raises fgbg.NonFiniteError (a ValueError) naming the first NaN or
inf input; 'propagate' returns a NaN loss and a NaN gradient instead, so that AMP's GradScaler
skips the step.
"""
from . import _core
from ._core import dense_call

__all__ = [
    "sigmoid_focal_loss", "sigmoid_cross_entropy", "binary_cross_entropy",
    "softmax_cross_entropy", "cross_entropy", "softmax_focal_loss", "quality_focal_loss",
    "varifocal_loss", "soft_target_cross_entropy", "ghmc_loss", "ghmc_state",
    "equalized_focal_loss", "efl_state", "ap_loss", "rank_sort_loss", "dr_loss", "alrp_loss",
    "sigmoid_focal_loss_star", "carl_loss", "isr_p", "guided_loss", "residual_objectness_loss",
    "residual_objectness_state", "residual_objectness_statistics", "residual_objectness_scores",
]


def sigmoid_focal_loss(logits, labels, *, alpha=0.25, gamma=2.0, weight=None, reduction="mean",
                       avg_factor=None, nonfinite="raise"):
    """Sigmoid focal loss (RetinaNet; torchvision's formula): per element
    -alpha_t (1 - p_t)^gamma log p_t with one-hot targets from the labels. alpha < 0 disables the
    alpha weighting. weight: None, N (per anchor) or N x C (per element)."""
    return dense_call("sigmoid_focal", logits, labels, weight=weight, reduction=reduction,
                      avg_factor=avg_factor, extra=(float(alpha), float(gamma)),
                      nonfinite=nonfinite)


def sigmoid_cross_entropy(logits, labels, *, weight=None, reduction="mean", avg_factor=None,
                          nonfinite="raise"):
    """Binary cross-entropy with logits against the one-hot targets of the labels
    (torch.nn.functional.binary_cross_entropy_with_logits, ignored rows masked)."""
    return dense_call("sigmoid_ce", logits, labels, weight=weight, reduction=reduction,
                      avg_factor=avg_factor, nonfinite=nonfinite)


binary_cross_entropy = sigmoid_cross_entropy


def softmax_cross_entropy(logits, labels, *, weight=None, reduction="mean", avg_factor=None,
                          nonfinite="raise"):
    """Softmax cross-entropy over N x (C+1) logits, column 0 the background
    (torch.nn.functional.cross_entropy with ignore_index=-1). weight: None or N (per anchor)."""
    return dense_call("softmax_ce", logits, labels, weight=weight, reduction=reduction,
                      avg_factor=avg_factor, per_anchor=True, nonfinite=nonfinite)


cross_entropy = softmax_cross_entropy


def softmax_focal_loss(logits, labels, *, alpha=0.25, gamma=2.0, weight=None, reduction="mean",
                       avg_factor=None, nonfinite="raise"):
    """Softmax focal loss over N x (C+1) logits, Detectron's alpha: alpha for a foreground label,
    1 - alpha for background (alpha < 0: 1 for both). Per anchor -alpha_y (1-p_y)^gamma log p_y."""
    return dense_call("softmax_focal", logits, labels, weight=weight, reduction=reduction,
                      avg_factor=avg_factor, extra=(float(alpha), float(gamma)), per_anchor=True,
                      nonfinite=nonfinite)


def quality_focal_loss(logits, labels, quality, *, beta=2.0, weight=None, reduction="mean",
                       avg_factor=None, nonfinite="raise"):
    """Quality focal loss (GFL; mmdetection's): |t - sigma(x)|^beta BCE(x, t) per element, with t
    the anchor's quality (IoU, N values in [0, 1], read on positive rows only) at its label column
    and 0 elsewhere. beta >= 1."""
    return dense_call("quality_focal", logits, labels, weight=weight, reduction=reduction,
                      avg_factor=avg_factor, inputs=(("quality", quality),),
                      extra=(float(beta),), nonfinite=nonfinite)


def varifocal_loss(logits, labels, quality, *, alpha=0.75, gamma=2.0, iou_weighted=True,
                   min_quality=1e-6, weight=None, reduction="mean", avg_factor=None,
                   nonfinite="raise"):
    """Varifocal loss (VarifocalNet; mmdetection's): q BCE(x, q) at the label column of a positive
    (q its quality, clamped to >= min_quality; BCE alone with iou_weighted=False),
    alpha sigma^gamma softplus(x) on every other element."""
    return dense_call("varifocal", logits, labels, weight=weight, reduction=reduction,
                      avg_factor=avg_factor, inputs=(("quality", quality),),
                      extra=(float(alpha), float(gamma), bool(iou_weighted), float(min_quality)),
                      nonfinite=nonfinite)


def soft_target_cross_entropy(logits, labels, targets, *, weight=None, reduction="target_sum",
                              avg_factor=None, nonfinite="raise"):
    """BCE with logits against a soft target t (N values in [0, 1], read on positive rows) at the
    label column of each positive anchor, 0 elsewhere: ultralytics YOLOv8/11's classification
    loss. Default reduction 'target_sum': sum / max(1, sum of the positives' targets)."""
    return dense_call("soft_target_ce", logits, labels, weight=weight, reduction=reduction,
                      avg_factor=avg_factor, inputs=(("targets", targets),), nonfinite=nonfinite)


# ----------------------------------------------------------------------------------------------
# Stateful losses: the state is a uint8 tensor holding fgbg's checksummed state blob, updated in
# place by every call that computes a gradient.

def ghmc_state(bins=10):
    """A fresh GHM-C state (moving bin populations) for `bins` bins, as a uint8 tensor."""
    import torch

    return torch.frombuffer(bytearray(_core._fgbg.ghmc_new_state(int(bins))), dtype=torch.uint8)


def efl_state(num_classes):
    """A fresh EFL state (per-class gradient statistics) for C foreground classes."""
    import torch

    return torch.frombuffer(bytearray(_core._fgbg.efl_new_state(int(num_classes))),
                            dtype=torch.uint8)


def _blob(state):
    import torch

    if not isinstance(state, torch.Tensor) or state.dtype != torch.uint8 or state.dim() != 1:
        raise TypeError("fgbg: state must be a 1-D uint8 tensor from fgbg.ghmc_state / "
                        "fgbg.efl_state (or a module's state buffer)")
    return state.detach().cpu().contiguous().numpy().tobytes()


def _store(state, blob, update):
    import torch

    if update and blob:
        new = torch.frombuffer(bytearray(blob), dtype=torch.uint8)
        if new.numel() != state.numel():
            raise ValueError("fgbg: the state changed size")
        with torch.no_grad():
            state.copy_(new)


def ghmc_loss(logits, labels, *, bins=10, momentum=0.0, paper_division=False, weight=None,
              state=None, update_state=True, reduced_statistics=None, nonfinite="raise",
              _scale=1.0):
    """GHM-C (mmdetection's GHMC): BCE weighted by tot / (density of the gradient norm's bin),
    divided by the number of non-empty bins (bins with paper_division=True) and by tot, the number
    of valid elements. GHM-C has its own normaliser: there is no reduction. weight acts as a
    validity mask (> 0), as mmdetection's label_weight does. momentum > 0 needs `state`
    (fgbg.ghmc_state(bins)), updated in place unless update_state=False.

    reduced_statistics: the SUM over data-parallel workers of ghmc_statistics(...) (a float64
    tensor): the bin factors then come from the whole batch."""
    import math

    import torch

    _core.check_nonfinite(nonfinite)
    x_in = logits
    x, cd = _core.logits_of(logits, half_in_place=True)
    n, c = x.shape
    y = _core.labels_of(labels, n)
    w = None if weight is None else _core.float_of(weight, cd, "weight")
    blob = b"" if state is None else _blob(state)
    reduced = [] if reduced_statistics is None else \
        reduced_statistics.detach().to(torch.float64).cpu().tolist()
    fn = getattr(_core._fgbg, "ghmc" + _core.suffix_of(x.dtype))
    ran = []  # a rerun (a retained graph's second backward) starts from `blob` and stores nothing

    def run(_):
        grad = torch.empty((n, c), dtype=x.dtype)
        try:
            v, new_blob = fn(_core.view(x), _core.vector_view(y), _core.view(grad),
                             None if w is None else _core.view(w), blob, int(bins),
                             float(momentum), bool(paper_division), reduced)
            if state is not None and not ran:
                _store(state, new_blob, update_state)
            ran.append(True)
        except _core.NonFiniteError:
            if nonfinite == "raise":
                raise
            grad.fill_(math.nan)
            v = math.nan
        return torch.tensor(v, dtype=cd).to(x_in.dtype), grad

    return _core.FusedLoss.apply(x_in, run, float(_scale), True)


def ghmc_statistics(logits, labels, *, bins=10, momentum=0.0, paper_division=False, weight=None):
    """This worker's GHM-C histogram as a float64 tensor, to be summed over workers
    (torch.distributed.all_reduce) and passed as ghmc_loss(reduced_statistics=...)."""
    import torch

    x, cd = _core.logits_of(logits, half_in_place=True)
    y = _core.labels_of(labels, x.shape[0])
    w = None if weight is None else _core.float_of(weight, cd, "weight")
    fn = getattr(_core._fgbg, "ghmc_statistics" + _core.suffix_of(x.dtype))
    return torch.tensor(fn(_core.view(x), _core.vector_view(y), None if w is None else
                           _core.view(w), int(bins), float(momentum), bool(paper_division)),
                        dtype=torch.float64)


def equalized_focal_loss(logits, labels, state, *, alpha=0.25, gamma_b=2.0, scale=8.0, decay=1.0,
                         weight=None, reduction="mean", avg_factor=None, update_state=True,
                         reduce_statistics=False, nonfinite="raise", _scale=1.0):
    """Equalized focal loss (EFL, United-Perception's): the sigmoid focal loss with a per-class
    gamma_j = gamma_b + scale (1 - g_j), times gamma_j / gamma_b, where g_j is the class's
    accumulated positive / negative gradient ratio kept in `state` (fgbg.efl_state(C)). The call
    adds its gradient statistics to the state (in place) unless update_state=False.

    reduce_statistics=True returns (loss, statistics): the state is then not updated; sum the
    float64 statistics over workers and call efl_commit(state, reduced, ...) on every rank."""
    import math

    import torch

    _core.check_nonfinite(nonfinite)
    x_in = logits
    x, cd = _core.logits_of(logits, half_in_place=True)
    n, c = x.shape
    y = _core.labels_of(labels, n)
    w = None if weight is None else _core.float_of(weight, cd, "weight")
    blob = _blob(state)
    kind, factor, per_elem = _core.normalizer_of(reduction, avg_factor)
    fn = getattr(_core._fgbg, "equalized_focal" + _core.suffix_of(x.dtype))
    stats = []
    ran = []  # a rerun (a retained graph's second backward) starts from `blob` and stores nothing

    def run(_):
        grad = torch.empty((n, c), dtype=x.dtype)
        losses = torch.empty((n, c), dtype=cd) if per_elem else None
        args = _core._fgbg.DenseArgs(_core.view(x), _core.vector_view(y), _core.view(grad),
                                     None if w is None else _core.view(w), kind, factor,
                                     1 if per_elem else 0,
                                     None if losses is None else _core.view(losses))
        try:
            v, new_blob, buf = fn(args, blob, float(alpha), float(gamma_b), float(scale),
                                  float(decay), bool(reduce_statistics))
            if ran:
                pass  # a rerun: the state and the statistics were handed out by the first run
            elif reduce_statistics:
                stats.append(torch.tensor(buf, dtype=torch.float64))
            else:
                _store(state, new_blob, update_state)
            ran.append(True)
        except _core.NonFiniteError:
            if nonfinite == "raise":
                raise
            grad.fill_(math.nan)
            if losses is not None:
                losses.fill_(math.nan)
            v = math.nan
            stats.append(None)
        out = losses if per_elem else torch.tensor(v, dtype=cd)
        return out.to(x_in.dtype), grad

    loss = _core.FusedLoss.apply(x_in, run, float(_scale), True)
    if reduce_statistics:
        return loss, stats[0]
    return loss


def efl_commit(state, reduced, *, alpha=0.25, gamma_b=2.0, scale=8.0, decay=1.0):
    """Commits the all-reduced EFL statistics of equalized_focal_loss(reduce_statistics=True)
    into `state` (in place); every rank does it with the same reduced tensor."""
    import torch

    blob = _core._fgbg.efl_commit(_blob(state), reduced.detach().to(torch.float64).cpu().tolist(),
                                  float(alpha), float(gamma_b), float(scale), float(decay))
    _store(state, blob, True)
    return state


def ghmc_inspect(state):
    """The GHM-C state's fields: dict(moving, counts, nonempty, tot)."""
    m, cnt, ne, tot = _core._fgbg.ghmc_inspect(_blob(state))
    return {"moving": m, "counts": cnt, "nonempty": ne, "tot": tot}


def efl_inspect(state):
    """The EFL state's fields: dict(pos_grad, neg_grad, ratio, updates)."""
    p, q, r, u = _core._fgbg.efl_inspect(_blob(state))
    return {"pos_grad": p, "neg_grad": q, "ratio": r, "updates": u}


# ----------------------------------------------------------------------------------------------
# Ranking losses: one ranking over every (anchor, class) entry of the call (or one per group of
# consecutive anchors with `groups`, N non-decreasing integers, e.g. the image index).

def _ranking_call(fn_name, logits, labels, groups, extra, quality=None, nonfinite="raise",
                  half_in_place=False):
    """Ranking loss call: FusedLoss over value_and_grad, or value() alone when no gradient is
    wanted. half_in_place: float16 / bfloat16 logits go to C++ as they are (DR loss); the other
    ranking losses sort float or double scores, so their half logits are copied to float32."""
    import math

    import torch

    _core.check_nonfinite(nonfinite)
    x_in = logits
    x, cd = _core.logits_of(logits, half_in_place=half_in_place)
    n, c = x.shape
    y = _core.labels_of(labels, n)
    ids = None
    if groups is not None:
        _core._check_tensor(groups, "groups")
        if groups.is_floating_point() or groups.dim() != 1:
            raise TypeError("fgbg: groups must be a 1-D integer tensor (one group id per anchor)")
        ids = groups.detach().to(torch.int64)
    q = None if quality is None else _core.float_of(quality, cd, "iou", dims=(1,))
    fn = getattr(_core._fgbg, fn_name + _core.suffix_of(x.dtype))
    extra_out = []
    need_grad = _core.wants_grad(x_in)

    def run(_):
        grad = torch.empty((n, c), dtype=x.dtype) if need_grad else None
        gv = None if grad is None else _core.view(grad)
        gids = None if ids is None else _core.vector_view(ids)
        try:
            if q is None:
                v = fn(_core.view(x), _core.vector_view(y), gv, gids, *extra)
            else:
                v = fn(_core.view(x), _core.vector_view(y), _core.vector_view(q), gv, gids,
                       *extra)
        except _core.NonFiniteError:
            if nonfinite == "raise":
                raise
            if grad is not None:
                grad.fill_(math.nan)
            v = (math.nan, math.nan) if q is not None else math.nan
        if isinstance(v, tuple):
            extra_out.append(v[1])
            v = v[0]
        return torch.tensor(v, dtype=cd).to(x_in.dtype), \
            None if grad is None else grad.to(x_in.dtype)

    if not need_grad:
        loss, _ = run(None)
    else:
        loss = _core.FusedLoss.apply(x_in, run, 1.0, True)
    return loss, extra_out


def ap_loss(logits, labels, *, delta=1.0, interpolate=True, groups=None, nonfinite="raise"):
    """AP loss (Chen et al.; the released code): 1 - mean interpolated precision over the
    positive entries of one ranking of all (anchor, class) entries. Its backward feeds the
    paper's error-driven update (not a derivative of the value), scaled by grad_output, as the
    official code does. Normalised by the number of positives (built in)."""
    loss, _ = _ranking_call("ap_loss", logits, labels, groups, (float(delta), bool(interpolate)),
                            nonfinite=nonfinite)
    return loss


def rank_sort_loss(logits, labels, iou, *, delta=0.5, eps=1e-10, groups=None,
                   nonfinite="raise"):
    """Rank & Sort loss (Oksuz et al.; kemaloksuz/RankSortLoss): returns (loss_rank, loss_sort).
    iou: N values in [0, 1] (read at foreground anchors; IoU 0 makes the anchor a negative).
    loss_rank carries the single error-driven update of both errors; loss_sort is a constant
    (its gradient is ignored, as in the official backward), so backward of loss_rank + loss_sort
    is the official one."""
    import torch

    loss, extra = _ranking_call("rank_sort_loss", logits, labels, groups,
                                (float(delta), float(eps)), quality=iou, nonfinite=nonfinite)
    return loss, torch.tensor(extra[0], dtype=loss.dtype)


def dr_loss(logits, labels, *, pos_lambda=1.0, neg_lambda=0.07982356001479281,
            L=6.0, tau=4.0, margin=0.5, groups=None, nonfinite="raise"):
    """DR loss (Qian et al.; idstcv/DR_loss SigmoidDRLoss) and its true gradient. With groups,
    the sum of the per-group losses (the paper's per-image ranking). No normaliser;
    neg_lambda defaults to 0.1 / ln 3.5."""
    loss, _ = _ranking_call("dr_loss", logits, labels, groups,
                            (float(pos_lambda), float(neg_lambda), float(L), float(tau),
                             float(margin)), nonfinite=nonfinite, half_in_place=True)
    return loss


class _ALRP(__import__("torch").autograd.Function):
    """aLRP: outputs (cls, loc); backward: the classification update times grad_cls for the
    logits, d loc / d loc_error times grad_loc for the localisation errors."""

    @staticmethod
    def forward(ctx, logits, loc_error, run):
        cls, loc, g, gl = run()
        ctx.g, ctx.gl = g, gl
        return cls, loc

    @staticmethod
    @__import__("torch").autograd.function.once_differentiable
    def backward(ctx, g_cls, g_loc):
        return ctx.g * g_cls.to(ctx.g.dtype), ctx.gl * g_loc.to(ctx.gl.dtype), None


def alrp_loss(logits, labels, loc_error, *, delta=1.0, eps=1e-5, groups=None,
              nonfinite="raise"):
    """aLRP loss (Oksuz et al.; kemaloksuz/aLRPLoss): returns (cls, loc). cls = 1 - mean R+/R over
    the positives; its backward feeds the paper's error-driven update to the logits. loc is the
    localisation component (before the self-balance weight lambda_SB) with its true gradient
    with respect to loc_error (N values >= 0, e.g. 1 - GIoU, read at positive anchors): chain it
    into the box regression. The official head trains on cls + lambda_SB * loc, lambda_SB updated
    every epoch to (mean cls + mean loc) / mean loc."""
    import math

    import torch

    _core.check_nonfinite(nonfinite)
    x, cd = _core.logits_of(logits)
    n, c = x.shape
    y = _core.labels_of(labels, n)
    _core._check_tensor(loc_error, "loc_error")
    le = _core.float_of(loc_error, cd, "loc_error", dims=(1,))
    ids = None
    if groups is not None:
        _core._check_tensor(groups, "groups")
        ids = groups.detach().to(torch.int64)
    fn = getattr(_core._fgbg, "alrp_loss_f64" if cd == torch.float64 else "alrp_loss_f32")
    need = _core.wants_grad(logits) or _core.wants_grad(loc_error)

    def run():
        grad = torch.empty((n, c), dtype=cd) if need else None
        gl = torch.empty((n,), dtype=cd) if need else None
        try:
            vc, vl = fn(_core.view(x), _core.vector_view(y), _core.vector_view(le),
                        None if grad is None else _core.view(grad),
                        None if gl is None else _core.view(gl),
                        None if ids is None else _core.vector_view(ids), float(delta), float(eps))
        except _core.NonFiniteError:
            if nonfinite == "raise":
                raise
            if need:
                grad.fill_(math.nan)
                gl.fill_(math.nan)
            vc = vl = math.nan
        return (torch.tensor(vc, dtype=cd).to(logits.dtype),
                torch.tensor(vl, dtype=cd).to(loc_error.dtype),
                None if grad is None else grad.to(logits.dtype),
                None if gl is None else gl.to(loc_error.dtype))

    if not need:  # value() only: no gradient buffers
        vc, vl, _, _ = run()
        return vc, vl
    return _ALRP.apply(logits, loc_error, run)


# ----------------------------------------------------------------------------------------------
# FL*, CARL, ISR-P and the sampling-free guided loss.

def sigmoid_focal_loss_star(logits, labels, *, alpha=-1.0, gamma=1.0, weight=None,
                            reduction="mean", avg_factor=None, nonfinite="raise"):
    """FL* (RetinaNet appendix A; fvcore's sigmoid_focal_loss_star): per element
    alpha_t softplus(-gamma z) / gamma with z = (2t - 1) x and one-hot targets t from the labels.
    alpha < 0 (default) disables alpha; gamma = 1 (default) is BCE. gamma must be a normal
    number > 0."""
    return dense_call("focal_star", logits, labels, weight=weight, reduction=reduction,
                      avg_factor=avg_factor, extra=(float(alpha), float(gamma)),
                      nonfinite=nonfinite)


class _TwoInput(__import__("torch").autograd.Function):
    """A loss of (logits, a per-anchor input): backward scales the two stored gradients by
    grad_output (CARL: d/d logits and d/d reg_loss)."""

    @staticmethod
    def forward(ctx, logits, second, run, scale):
        v, g, g2 = run()
        ctx.g, ctx.g2, ctx.scale = g, g2, scale
        return v * scale if scale != 1.0 else v

    @staticmethod
    @__import__("torch").autograd.function.once_differentiable
    def backward(ctx, grad_output):
        f = grad_output * ctx.scale if ctx.scale != 1.0 else grad_output
        return ctx.g * f.to(ctx.g.dtype), ctx.g2 * f.to(ctx.g2.dtype), None, None


_CARL_REDUCTIONS = ("num_positives", "mean", "sum")


def carl_loss(logits, labels, reg_loss, *, k=1.0, bias=0.2, sigmoid=True,
              reduction="num_positives", avg_factor=None, nonfinite="raise", _scale=1.0):
    """CARL of PISA (mmdetection's carl_loss): for the P positives with regression loss l_i (N
    values, the per-coordinate regression loss summed over the 4 coordinates, read at positives),
    s_i the score of the positive's class (sigmoid: N x C logits; sigmoid=False: softmax over
    N x (C+1), column 0 the background), u_i = (bias + (1 - bias) s_i)^k and
    w_i = P u_i / sum_j u_j, the loss is sum_i w_i l_i / A. The score is not detached: backward
    gives d/d logits and d/d reg_loss (reg_loss may carry autograd history, e.g. from the box
    regression). A: 'num_positives' (default, max(1, P)), 'mean' (non-ignored rows), 'sum', or
    'mean' with avg_factor. The binding of CARL has no half-precision path yet: float16 /
    bfloat16 logits are copied to float32."""
    import math

    import torch

    _core.check_nonfinite(nonfinite)
    if reduction not in _CARL_REDUCTIONS:
        raise ValueError(f"fgbg: carl_loss: reduction must be one of {_CARL_REDUCTIONS}, got "
                         f"{reduction!r}")
    kind, factor, _ = _core.normalizer_of(reduction, avg_factor)
    x, cd = _core.logits_of(logits)
    n, c = x.shape
    y = _core.labels_of(labels, n)
    _core._check_tensor(reg_loss, "reg_loss")
    r = _core.float_of(reg_loss, cd, "reg_loss", dims=(1,))
    if r.shape[0] != n:
        raise ValueError(f"fgbg: reg_loss has {r.shape[0]} entries, the logits {n} rows")
    fn = getattr(_core._fgbg, "carl" + _core.suffix_of(cd))
    need = _core.wants_grad(logits) or _core.wants_grad(reg_loss)

    def run():
        g = torch.empty((n, c), dtype=cd) if need else None
        g2 = torch.empty((n,), dtype=cd) if need else None
        try:
            v = fn(_core.view(x), _core.vector_view(y), _core.vector_view(r),
                   None if g is None else _core.view(g), None if g2 is None else
                   _core.vector_view(g2), float(k), float(bias), bool(sigmoid), kind, factor)
        except _core.NonFiniteError:
            if nonfinite == "raise":
                raise
            if g is not None:
                g.fill_(math.nan)
                g2.fill_(math.nan)
            v = math.nan
        return (torch.tensor(v, dtype=cd).to(logits.dtype),
                None if g is None else g.to(logits.dtype),
                None if g2 is None else g2.to(reg_loss.dtype))

    if not need:
        v, _, _ = run()
        return v * _scale if _scale != 1.0 else v
    return _TwoInput.apply(logits, reg_loss, run, float(_scale))


def isr_p(labels, gt_index, iou, cls_loss, num_classes, *, label_weights=None, k=2.0, bias=0.0):
    """ISR-P of PISA (mmdetection's isr_p): the new label weight of every anchor. For the
    positives: their IoU-HLR rank r_i within their class (IoU ranked within each (class, GT), then
    key IoU + (n_max - local rank) ranked within the class), u_i = lw_i (n_max - r_i) / n_max,
    w_i = (bias + (1 - bias) u_i)^k, rescaled so that sum cls_loss * w = sum cls_loss * lw over
    the positives; background rows keep lw, ignored rows get 0. gt_index: the assigned GT's id per
    anchor (integers, unique over the images of a batch; read at positives), iou and cls_loss (the
    detached classification loss per anchor, e.g. a loss's reduction='none' row sums): N values
    read at positives. Returns (weights, info) with info = dict(positives, max_class_positives,
    ratio, guarded). The weights are constants (no gradient): pass them as a loss's weight=."""
    import torch

    y = _core.labels_of(labels, labels.shape[0] if isinstance(labels, torch.Tensor) else -1)
    n = y.shape[0]
    dt = torch.float64 if isinstance(iou, torch.Tensor) and iou.dtype == torch.float64 \
        else torch.float32
    _core._check_tensor(gt_index, "gt_index")
    if gt_index.is_floating_point() or gt_index.dim() != 1:
        raise TypeError("fgbg: isr_p: gt_index must be a 1-D integer tensor (one GT id per "
                        "anchor)")
    g = gt_index.detach().to(torch.int64)
    vals = [_core.float_of(t, dt, nm, dims=(1,)) for nm, t in (("iou", iou),
                                                                ("cls_loss", cls_loss))]
    lw = None if label_weights is None else _core.float_of(label_weights, dt, "label_weights",
                                                          dims=(1,))
    out = torch.empty(n, dtype=dt)
    fn = getattr(_core._fgbg, "isr_p" + _core.suffix_of(dt))
    p, nmax, ratio, guarded = fn(_core.vector_view(y), _core.vector_view(g),
                                 _core.vector_view(vals[0]), _core.vector_view(vals[1]),
                                 None if lw is None else _core.vector_view(lw), int(num_classes),
                                 _core.vector_view(out), float(k), float(bias))
    return out, {"positives": p, "max_class_positives": nmax, "ratio": ratio,
                 "guarded": guarded}


def guided_loss(logits, labels, reg_loss, *, softmax=False, classification_scale=1.0,
                treat_ignored_as_negative=False, weight=None, reduction="sum", avg_factor=None,
                nonfinite="raise", _scale=1.0):
    """The sampling-free guided loss (Chen et al.; ChenJoya/sampling-free): the classification
    loss L_cls (BCE over N x C logits, or softmax CE over N x (C+1) with softmax=True, with its
    weight and reduction) rescaled by the constant w = L_reg / L_cls, so the value is
    classification_scale * L_reg and the gradient classification_scale * w * dL_cls/dx. reg_loss:
    the regression loss (a number or 0-d tensor, used detached). A constant normaliser of L_cls
    cancels. treat_ignored_as_negative reproduces the released RetinaNet's training of ignored
    anchors as background. L_cls = 0 gives 0 and a zero gradient. Float and double only in C++:
    float16 / bfloat16 logits are copied to float32."""
    import math

    import torch

    _core.check_nonfinite(nonfinite)
    x_in = logits
    x, cd = _core.logits_of(logits)
    n, c = x.shape
    y = _core.labels_of(labels, n)
    w = None if weight is None else _core.float_of(weight, cd, "weight")
    kind, factor, per_elem = _core.normalizer_of(reduction, avg_factor)
    if per_elem:
        raise ValueError("fgbg: guided_loss: reduction='none' is not defined (the guided loss is "
                         "one scaled total)")
    if isinstance(reg_loss, torch.Tensor):
        _core._check_tensor(reg_loss, "reg_loss")
        if reg_loss.numel() != 1:
            raise ValueError(f"fgbg: guided_loss: reg_loss must be a scalar, got shape "
                             f"{tuple(reg_loss.shape)}")
        reg_loss = float(reg_loss.detach())
    reg_loss = float(reg_loss)
    fn = getattr(_core._fgbg, "guided" + _core.suffix_of(cd))
    need = _core.wants_grad(x_in)
    info = {}

    def run(_):
        grad = torch.empty((n, c), dtype=cd) if need else None
        args = _core._fgbg.DenseArgs(_core.view(x), _core.vector_view(y),
                                     None if grad is None else _core.view(grad),
                                     None if w is None else _core.view(w), kind, factor, 0, None)
        try:
            v, wt, cls = fn(args, reg_loss, float(classification_scale),
                            bool(treat_ignored_as_negative), bool(softmax))
        except _core.NonFiniteError:
            if nonfinite == "raise":
                raise
            if grad is not None:
                grad.fill_(math.nan)
            v = wt = cls = math.nan
        info.update(weight=wt, cls_loss=cls)
        return torch.tensor(v, dtype=cd).to(x_in.dtype), \
            None if grad is None else grad.to(x_in.dtype)

    if not need:
        out, _ = run(None)
        out = out * _scale if _scale != 1.0 else out
    else:
        out = _core.FusedLoss.apply(x_in, run, float(_scale), True)
    return out


# ----------------------------------------------------------------------------------------------
# Residual objectness (stateful: the EMA of the number of positives).

def residual_objectness_state():
    """A fresh residual-objectness state (the EMA of the number of positives) as a uint8 tensor."""
    import torch

    return torch.frombuffer(bytearray(_core._fgbg.resobj_new_state()), dtype=torch.uint8)


def residual_objectness_inspect(state):
    """The residual-objectness state's fields: dict(num_pos_ema, started, calls)."""
    e, started, calls = _core._fgbg.resobj_inspect(_blob(state))
    return {"num_pos_ema": e, "started": started, "calls": calls}


_RESOBJ_DEFAULTS = dict(obj_normalizer_scale=20.0, cls_normalizer_scale=10.0,
                        box_normalizer_scale=1.0, ema_momentum=0.9, ema_initial=100.0,
                        ema_updates="three_per_call")


def _resobj_cfg(cfg):
    unknown = set(cfg) - set(_RESOBJ_DEFAULTS)
    if unknown:
        raise TypeError(f"fgbg: residual objectness: unknown option(s) {sorted(unknown)}")
    c = dict(_RESOBJ_DEFAULTS, **cfg)
    if c["ema_updates"] not in ("three_per_call", "one_per_call"):
        raise ValueError(f"fgbg: ema_updates must be 'three_per_call' or 'one_per_call', got "
                         f"{c['ema_updates']!r}")
    return (float(c["obj_normalizer_scale"]), float(c["cls_normalizer_scale"]),
            float(c["box_normalizer_scale"]), float(c["ema_momentum"]), float(c["ema_initial"]),
            c["ema_updates"] == "one_per_call")


def residual_objectness_statistics(labels, num_classes, **cfg):
    """This worker's (positives, valid) counts with the config header, a float64 tensor to sum
    over workers and pass as residual_objectness_loss(reduced_statistics=...)."""
    import torch

    y = _core.labels_of(labels, labels.shape[0] if isinstance(labels, torch.Tensor) else -1)
    return torch.tensor(_core._fgbg.residual_objectness_statistics(
        _core.vector_view(y), int(num_classes), *_resobj_cfg(cfg)), dtype=torch.float64)


def residual_objectness_loss(class_logits, labels, stage_logits, state, *, update_state=True,
                             reduced_statistics=None, nonfinite="raise", _scale=1.0, **cfg):
    """Residual objectness (Chen et al.; chenjoya/resobj's detectron2 head): returns
    (loss, info). With o_n the sum of the K stage logits of anchor n (stage_logits N x K),
    loss = sum_{label >= 0} BCE(o_n, [label > 0]) / (a_obj E_obj)
         + sum_{label > 0} sum_c BCE(z_nc, one-hot) / (a_cls E_cls),
    E the EMA of max(1, #positives) kept in `state` (residual_objectness_state()), updated in
    place by every call unless update_state=False (as GHM-C and EFL; the value-only C++ call,
    which leaves the state alone, runs when no gradient is wanted and update_state=False, e.g.
    the module in eval()). Every stage logit
    receives the objectness gradient; only positive anchors train the class logits (N x C).
    info: dict(obj_loss, cls_loss, obj_normalizer, cls_normalizer, box_normalizer (divide your
    summed box loss by it), num_positives, num_valid). Options (keywords): obj_normalizer_scale
    (20), cls_normalizer_scale (10), box_normalizer_scale (1), ema_momentum (0.9), ema_initial
    (100), ema_updates ('three_per_call', the release's, or 'one_per_call').
    reduced_statistics: the SUM over workers of residual_objectness_statistics(...)."""
    import math

    import torch

    _core.check_nonfinite(nonfinite)
    c = _resobj_cfg(cfg)
    z, cd = _core.logits_of(class_logits, "class_logits", half_in_place=True)
    s, _ = _core.logits_of(stage_logits, "stage_logits", half_in_place=True)
    if s.dtype != z.dtype:
        raise TypeError(f"fgbg: class_logits ({z.dtype}) and stage_logits ({s.dtype}) must have "
                        "the same dtype")
    n = z.shape[0]
    y = _core.labels_of(labels, n)
    blob = _blob(state)
    reduced = [] if reduced_statistics is None else \
        reduced_statistics.detach().to(torch.float64).cpu().tolist()
    fn = getattr(_core._fgbg, "residual_objectness" + _core.suffix_of(z.dtype))
    need = _core.wants_grad(class_logits) or _core.wants_grad(stage_logits)
    compute = need or update_state  # the state advances only in value_and_grad
    info = {}

    def run():
        gz = torch.empty(z.shape, dtype=z.dtype) if compute else None
        gs = torch.empty(s.shape, dtype=s.dtype) if compute else None
        try:
            r = fn(_core.view(z), _core.vector_view(y), _core.view(s),
                   None if gz is None else _core.view(gz), None if gs is None else _core.view(gs),
                   blob, *c, reduced)
            v = r[0]
            info.update(obj_loss=r[1], cls_loss=r[2], obj_normalizer=r[3], cls_normalizer=r[4],
                        box_normalizer=r[5], num_positives=r[6], num_valid=r[7])
            if compute:
                _store(state, r[8], update_state)
        except _core.NonFiniteError:
            if nonfinite == "raise":
                raise
            if compute:
                gz.fill_(math.nan)
                gs.fill_(math.nan)
            v = math.nan
        return torch.tensor(v, dtype=cd).to(class_logits.dtype), gz, gs

    if not need:
        v, _, _ = run()
        return (v * _scale if _scale != 1.0 else v), info
    return _TwoInput.apply(class_logits, stage_logits, run, float(_scale)), info


def residual_objectness_scores(stage_logits, class_logits):
    """Inference scores sigmoid(sum_k s_nk) * sigmoid(z_nc), N x C (no gradient)."""
    import torch

    z, cd = _core.logits_of(class_logits, "class_logits")
    s = _core.float_of(stage_logits, cd, "stage_logits", dims=(2,))
    out = torch.empty(z.shape, dtype=cd)
    getattr(_core._fgbg, "resobj_scores" + _core.suffix_of(cd))(_core.view(s), _core.view(z),
                                                                _core.view(out))
    return out
