"""FL*, CARL, ISR-P, the guided loss and the sampling-free bias / threshold helpers against plain
PyTorch (or Python) implementations of their formulas written here, gradcheck in double, the
reference vectors of tests/data/, and their modules."""
import json
import math
import os

import pytest
import torch
import torch.nn.functional as TF

import fgbg
from conftest import DATA
from helpers import make_batch, one_hot, reduce, valid


def _data(fname):
    with open(os.path.join(DATA, fname)) as f:
        return json.load(f)["cases"]


def _close(got, exp, rel=1e-9):
    exp = torch.as_tensor(exp, dtype=torch.float64)
    got = torch.as_tensor(got, dtype=torch.float64).detach().reshape(exp.shape)
    if exp.numel():
        assert float((got - exp).abs().max()) <= rel * max(1.0, float(exp.abs().max()))


# ---------------------------------------------------------------------------------------- FL*

def ref_focal_star(x, y, alpha=-1.0, gamma=1.0):
    t = one_hot(y, x.shape[1], x.dtype)
    z = (2 * t - 1) * x
    if alpha < 0:
        a = torch.ones_like(x)
    else:
        a = alpha * t + (1 - alpha) * (1 - t)
    # softplus through logaddexp: TF.softplus turns linear above 20, 2e-9 off
    return a * torch.logaddexp(torch.zeros_like(z), -gamma * z) / gamma * valid(y)[:, None]


@pytest.mark.parametrize("alpha,gamma", [(-1.0, 1.0), (0.25, 2.5), (0.6, 0.5)])
@pytest.mark.parametrize("reduction", ["sum", "mean", "num_positives", "none", "avg"])
@pytest.mark.parametrize("weights", ["none", "anchor", "element"])
def test_focal_star_against_formula(alpha, gamma, reduction, weights):
    x, y, _ = make_batch(41, 5, seed=int(gamma * 10) + len(reduction))
    g = torch.Generator().manual_seed(3)
    w = None
    if weights == "anchor":
        w = torch.rand(41, generator=g, dtype=torch.float64) * 2
    elif weights == "element":
        w = torch.rand(41, 5, generator=g, dtype=torch.float64) * 2
    r, af = ("mean", 6.5) if reduction == "avg" else (reduction, None)
    a = x.clone().requires_grad_()
    b = x.clone().requires_grad_()
    got = fgbg.sigmoid_focal_loss_star(a, y, alpha=alpha, gamma=gamma, weight=w, reduction=r,
                                       avg_factor=af)
    e = ref_focal_star(b, y, alpha, gamma)
    if w is not None:
        e = e * (w[:, None] if w.dim() == 1 else w)
    exp = reduce(e, y, r, af)
    torch.testing.assert_close(got, exp, rtol=1e-10, atol=1e-12)
    go = torch.rand(got.shape, dtype=torch.float64) if got.dim() else torch.tensor(0.7,
                                                                                 dtype=torch.float64)
    got.backward(go)
    exp.backward(go)
    torch.testing.assert_close(a.grad, b.grad, rtol=1e-9, atol=1e-12)


def test_focal_star_gamma_1_is_bce_and_gradcheck():
    x, y, _ = make_batch(30, 4, seed=2)
    torch.testing.assert_close(fgbg.sigmoid_focal_loss_star(x, y, reduction="sum"),
                               fgbg.sigmoid_cross_entropy(x, y, reduction="sum"), rtol=1e-12,
                               atol=0)
    x, y, _ = make_batch(9, 3, seed=5, scale=1.5)
    x.requires_grad_()
    assert torch.autograd.gradcheck(
        lambda a: fgbg.sigmoid_focal_loss_star(a, y, alpha=0.3, gamma=2.0, reduction="sum"),
        (x,), eps=1e-6, atol=1e-7)


def test_focal_star_module_and_errors():
    x, y, _ = make_batch(20, 3, seed=8)
    m = fgbg.nn.FocalLossStar(gamma=3.0, alpha=0.25, loss_weight=2.0, reduction="sum")
    torch.testing.assert_close(m(x, y), 2.0 * ref_focal_star(x, y, 0.25, 3.0).sum())
    mm = fgbg.nn.FocalLossStar(gamma=3.0, alpha=0.25, reduction="sum", mmdet_labels=True)
    ym = torch.where(y > 0, y - 1, torch.where(y == 0, torch.full_like(y, 3), y))
    torch.testing.assert_close(mm(x, ym), ref_focal_star(x, y, 0.25, 3.0).sum())
    a = x.clone().requires_grad_()
    with pytest.raises(ValueError, match="fgbg::FocalLossStar: config.gamma"):
        fgbg.sigmoid_focal_loss_star(a, y, gamma=0.0)
    assert a.grad is None


# --------------------------------------------------------------------------------------- CARL

def ref_carl(x, y, reg, k=1.0, bias=0.2, sigmoid=True, norm=None):
    pos = (y > 0).nonzero().flatten()
    if sigmoid:
        s = torch.sigmoid(x[pos, y[pos] - 1])
    else:
        s = torch.softmax(x[pos], 1).gather(1, y[pos][:, None])[:, 0]
    u = (bias + (1 - bias) * s) ** k
    w = pos.numel() * u / u.sum() if pos.numel() else u
    total = (w * reg[pos]).sum()
    if norm is None:
        norm = max(1, pos.numel())
    return total / norm


@pytest.mark.parametrize("sigmoid", [True, False])
@pytest.mark.parametrize("k,bias", [(1.0, 0.2), (2.0, 0.0), (0.5, 0.7)])
@pytest.mark.parametrize("reduction", ["num_positives", "mean", "sum", "avg"])
def test_carl_against_formula(sigmoid, k, bias, reduction):
    x, y, q = make_batch(37, 4, seed=int(k * 7 + bias * 10), softmax=not sigmoid)
    reg = q * 3
    r, af = ("mean", 5.5) if reduction == "avg" else (reduction, None)
    norm = {"num_positives": max(1, int((y > 0).sum())), "mean": max(1, int((y >= 0).sum())),
            "sum": 1.0, "avg": 5.5}[reduction]
    xa, ra = x.clone().requires_grad_(), reg.clone().requires_grad_()
    xb, rb = x.clone().requires_grad_(), reg.clone().requires_grad_()
    got = fgbg.carl_loss(xa, y, ra, k=k, bias=bias, sigmoid=sigmoid, reduction=r, avg_factor=af)
    exp = ref_carl(xb, y, rb, k, bias, sigmoid, norm)
    torch.testing.assert_close(got, exp, rtol=1e-11, atol=1e-13)
    (1.3 * got).backward()
    (1.3 * exp).backward()
    torch.testing.assert_close(xa.grad, xb.grad, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(ra.grad, rb.grad, rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("sigmoid", [True, False])
def test_carl_gradcheck(sigmoid):
    x, y, q = make_batch(10, 3, seed=4, softmax=not sigmoid, scale=1.5)
    x.requires_grad_()
    reg = (q * 2).requires_grad_()
    assert torch.autograd.gradcheck(lambda a, r: fgbg.carl_loss(a, y, r, sigmoid=sigmoid),
                                    (x, reg), eps=1e-6, atol=1e-7)


def test_carl_reference_vectors():
    for case in _data("carl.json"):
        p = case["params"]
        n, c = case["num_anchors"], case["num_classes"]
        width = c if p["sigmoid"] else c + 1
        x = torch.tensor(case["logits"], dtype=torch.float64).reshape(n, width).requires_grad_()
        y = torch.tensor(case["labels"], dtype=torch.int64).reshape(n)
        reg = torch.tensor(case["reg_loss"], dtype=torch.float64).reshape(n).requires_grad_()
        loss = fgbg.carl_loss(x, y, reg, k=p["k"], bias=p["bias"], sigmoid=p["sigmoid"],
                              reduction="mean", avg_factor=float(case["normalization"]))
        loss.backward()
        _close(loss, case["expected"]["loss"])
        _close(x.grad, case["expected"]["grad"])
        _close(reg.grad, case["expected"]["grad_reg_loss"])


def test_carl_module_and_errors():
    x, y, q = make_batch(25, 3, seed=12)
    m = fgbg.nn.CARLLoss(loss_weight=0.5)
    torch.testing.assert_close(m(x, y, q), 0.5 * ref_carl(x, y, q))
    # softmax head in mmdetection's layout (background last) and labels
    xs, ys, _ = make_batch(25, 3, seed=13, softmax=True)
    ms = fgbg.nn.CARLLoss(use_sigmoid=False, mmdet_labels=True)
    ym = torch.where(ys > 0, ys - 1, torch.where(ys == 0, torch.full_like(ys, 3), ys))
    xm = torch.cat([xs[:, 1:], xs[:, :1]], 1)
    torch.testing.assert_close(ms(xm, ym, q), ref_carl(xs, ys, q, sigmoid=False))
    a = x.clone().requires_grad_()
    bad = q.clone()
    bad[int((y > 0).nonzero()[0])] = -1.0
    with pytest.raises(ValueError, match="fgbg::CarlLoss: reg_loss"):
        fgbg.carl_loss(a, y, bad)
    with pytest.raises(ValueError, match="fgbg::CarlLoss: config.bias"):
        fgbg.carl_loss(a, y, q, bias=1.0)
    with pytest.raises(ValueError, match="reduction"):
        fgbg.carl_loss(a, y, q, reduction="none")
    with pytest.raises(ValueError, match="reg_loss has 3 entries"):
        fgbg.carl_loss(a, y, q[:3])
    assert a.grad is None


# -------------------------------------------------------------------------------------- ISR-P

def ref_isr_p(labels, gt, iou, cls_loss, lw, k, bias):
    """ISR-P in plain Python: IoU-HLR ranks by stable descending sorts, then the loss-preserving
    rescaling."""
    n = len(labels)
    lw = [1.0] * n if lw is None else list(lw)
    out = [0.0 if labels[i] < 0 else lw[i] for i in range(n)]
    pos = [i for i in range(n) if labels[i] > 0]
    if not pos:
        return out
    classes = sorted({labels[i] for i in pos})
    n_max = max(sum(1 for i in pos if labels[i] == c) for c in classes)
    local = {}
    for i in pos:
        group = [j for j in pos if labels[j] == labels[i] and gt[j] == gt[i]]
        group.sort(key=lambda j: (-iou[j], j))
        local[i] = group.index(i)
    w = {}
    for c in classes:
        members = [i for i in pos if labels[i] == c]
        members.sort(key=lambda i: (local[i], -iou[i], i))  # key IoU + (n_max - rank), desc
        for r, i in enumerate(members):
            u = lw[i] * (n_max - r) / n_max
            w[i] = (bias + (1 - bias) * u) ** k
    num = sum(cls_loss[i] * lw[i] for i in pos)
    den = sum(cls_loss[i] * w[i] for i in pos)
    ratio = num / den if den > 0 else None
    for i in pos:
        out[i] = w[i] * ratio if ratio is not None else lw[i]
    return out


@pytest.mark.parametrize("k,bias", [(2.0, 0.0), (1.0, 0.3), (0.5, 0.1)])
@pytest.mark.parametrize("with_lw", [False, True])
def test_isr_p_against_python(k, bias, with_lw):
    g = torch.Generator().manual_seed(int(k * 10 + bias * 100) + with_lw)
    n, c = 90, 4
    y = torch.randint(-1, c + 1, (n,), generator=g)
    gt = torch.randint(0, 7, (n,), generator=g) + 1000
    iou = torch.rand(n, generator=g, dtype=torch.float64)
    cls = torch.rand(n, generator=g, dtype=torch.float64) * 2
    lw = torch.rand(n, generator=g, dtype=torch.float64) + 0.5 if with_lw else None
    got, info = fgbg.isr_p(y, gt, iou, cls, c, label_weights=lw, k=k, bias=bias)
    exp = ref_isr_p(y.tolist(), gt.tolist(), iou.tolist(), cls.tolist(),
                    None if lw is None else lw.tolist(), k, bias)
    torch.testing.assert_close(got, torch.tensor(exp, dtype=torch.float64), rtol=1e-12,
                               atol=1e-14)
    assert info["positives"] == int((y > 0).sum()) and not info["guarded"]
    # the classification loss of the positives is preserved
    pos = y > 0
    base = lw if lw is not None else torch.ones(n, dtype=torch.float64)
    torch.testing.assert_close((got[pos] * cls[pos]).sum(), (base[pos] * cls[pos]).sum())


def test_isr_p_reference_vectors():
    for case in _data("isr_p.json"):
        p = case["params"]
        y = torch.tensor(case["labels"], dtype=torch.int64)
        args = [torch.tensor(case[k], dtype=torch.float64) for k in ("iou", "cls_loss")]
        lw = case.get("label_weights")
        w, _ = fgbg.isr_p(y, torch.tensor(case["gt_index"], dtype=torch.int64), *args,
                          case["num_classes"], k=p["k"], bias=p["bias"],
                          label_weights=None if lw is None else
                          torch.tensor(lw, dtype=torch.float64))
        _close(w, case["expected"]["weights"])
        if y.numel():  # the Python oracle agrees with the vectors too
            exp = ref_isr_p(case["labels"], case["gt_index"], case["iou"], case["cls_loss"], lw,
                            p["k"], p["bias"])
            _close(torch.tensor(exp, dtype=torch.float64), case["expected"]["weights"],
                   rel=1e-12)


def test_isr_p_module_float32_and_errors():
    y = torch.tensor([1, 2, 0, -1, 1, 1])
    gt = torch.tensor([0, 1, -5, -5, 0, 2])
    iou = torch.tensor([0.9, 0.5, 0.0, 0.0, 0.7, 0.4])
    cls = torch.tensor([0.2, 0.4, 0.1, 0.1, 0.6, 0.3])
    w = fgbg.nn.ISRP(2)(y, gt, iou, cls)
    assert w.dtype == torch.float32
    exp = ref_isr_p(y.tolist(), gt.tolist(), iou.tolist(), cls.tolist(), None, 2.0, 0.0)
    torch.testing.assert_close(w, torch.tensor(exp, dtype=torch.float32))
    with pytest.raises(ValueError, match="gt_index"):
        fgbg.isr_p(y, torch.tensor([-1, 1, 0, 0, 0, 2]), iou, cls, 2)
    with pytest.raises(ValueError, match="iou"):
        fgbg.isr_p(y, gt, iou * 2, cls, 2)
    with pytest.raises(ValueError, match="label"):
        fgbg.isr_p(y, gt, iou, cls, 1)
    with pytest.raises(TypeError, match="gt_index"):
        fgbg.isr_p(y, gt.float(), iou, cls, 2)


# --------------------------------------------------------------------------------- guided loss

def ref_guided(x, y, reg, softmax=False, scale=1.0, ignored_as_negative=False):
    yy = y.clone()
    if ignored_as_negative:
        yy[yy < 0] = 0
    if softmax:
        cls = TF.cross_entropy(x, yy, ignore_index=-1, reduction="sum")
    else:
        cls = (TF.binary_cross_entropy_with_logits(x, one_hot(yy, x.shape[1], x.dtype),
                                                   reduction="none") * valid(yy)[:, None]).sum()
    w = reg / cls.detach() if float(cls) > 0 else 0.0
    return scale * w * cls


@pytest.mark.parametrize("softmax", [False, True])
@pytest.mark.parametrize("scale", [1.0, 2.0])
@pytest.mark.parametrize("ignored", [False, True])
def test_guided_against_formula(softmax, scale, ignored):
    x, y, _ = make_batch(33, 4, seed=21 + softmax + 2 * ignored, softmax=softmax)
    a = x.clone().requires_grad_()
    b = x.clone().requires_grad_()
    got = fgbg.guided_loss(a, y, torch.tensor(0.625), softmax=softmax,
                           classification_scale=scale, treat_ignored_as_negative=ignored)
    exp = ref_guided(b, y, 0.625, softmax, scale, ignored)
    torch.testing.assert_close(got, exp, rtol=1e-12, atol=1e-14)
    got.backward()
    exp.backward()
    torch.testing.assert_close(a.grad, b.grad, rtol=1e-10, atol=1e-13)
    # any constant normaliser of L_cls cancels
    for r in ("mean", "num_positives"):
        torch.testing.assert_close(fgbg.guided_loss(x, y, 0.625, softmax=softmax, reduction=r,
                                                    classification_scale=scale,
                                                    treat_ignored_as_negative=ignored), exp)


def test_guided_gradcheck_with_constant_weight():
    # the gradient is s * w * dL_cls/dx with w a constant: check it against w fixed
    x, y, _ = make_batch(9, 3, seed=1, scale=1.5)
    w = float(0.4 / fgbg.sigmoid_cross_entropy(x, y, reduction="sum"))
    a = x.clone().requires_grad_()
    fgbg.guided_loss(a, y, 0.4).backward()
    b = x.clone().requires_grad_()
    (w * fgbg.sigmoid_cross_entropy(b, y, reduction="sum")).backward()
    torch.testing.assert_close(a.grad, b.grad, rtol=1e-12, atol=1e-15)


def test_guided_reference_vectors():
    for case in _data("sampling_free_guided.json"):
        n, c = case["num_anchors"], case["num_classes"]
        x = torch.tensor(case["logits"], dtype=torch.float64).reshape(n, c).requires_grad_()
        y = torch.tensor(case["labels"], dtype=torch.int64).reshape(n)
        loss = fgbg.guided_loss(x, y, case["reg_loss"], treat_ignored_as_negative=case["params"][
            "treat_ignored_as_negative"])
        loss.backward()
        _close(loss, case["expected"]["loss"])
        _close(x.grad, case["expected"]["grad"])


def test_guided_module_and_errors():
    x, y, _ = make_batch(20, 3, seed=31)
    m = fgbg.nn.GuidedLoss(classification_scale=2.0, loss_weight=0.5)
    torch.testing.assert_close(m(x, y, 0.3), 0.5 * ref_guided(x, y, 0.3, scale=2.0))
    a = x.clone().requires_grad_()
    with pytest.raises(ValueError, match="reg_loss must be >= 0"):
        fgbg.guided_loss(a, y, -1.0)
    with pytest.raises(fgbg.NonFiniteError, match="reg_loss"):
        fgbg.guided_loss(a, y, math.inf)
    with pytest.raises(ValueError, match="classification_scale"):
        fgbg.guided_loss(a, y, 1.0, classification_scale=0.0)
    with pytest.raises(ValueError, match="'none'"):
        fgbg.guided_loss(a, y, 1.0, reduction="none")
    assert a.grad is None


# ------------------------------------------------------------------ sampling-free bias, thresholds

def test_bias_init_reference_vectors():
    sf = fgbg.sampling_free
    for case in _data("sampling_free_bias_init.json"):
        fg, bg, c = case["num_fg"], case["num_bg"], case["num_classes"]
        e = case["expected"]
        _close(sf.optimal_sigmoid_prior(fg, bg, c), e["prior"], rel=1e-14)
        _close(sf.optimal_sigmoid_bias(fg, bg, c), e["bias"], rel=1e-13)
        if "softmax_background_bias" in e:
            _close(sf.optimal_softmax_background_bias(fg, bg, c), e["softmax_background_bias"],
                   rel=1e-13)
        else:
            with pytest.raises(ValueError, match="num_bg must be > 0"):
                sf.optimal_softmax_background_bias(fg, bg, c)


def test_statistics_thresholds_and_init_against_formulas():
    sf = fgbg.sampling_free
    g = torch.Generator().manual_seed(0)
    y1 = torch.randint(-1, 6, (500,), generator=g)
    y2 = torch.randint(-1, 6, (300,), generator=g)
    y2[y2 == 3] = 0  # class 3 only in the first batch
    st = sf.anchor_statistics(y2, 5, into=sf.anchor_statistics(y1, 5))
    y = torch.cat([y1, y2])
    fg, bg = int((y > 0).sum()), int((y == 0).sum())
    assert (st["num_fg"], st["num_bg"], st["num_ignored"]) == (fg, bg, int((y < 0).sum()))
    assert st["per_class"] == [int((y == k).sum()) for k in range(1, 6)]
    prior = fg / (fg + bg) / 5
    assert sf.optimal_sigmoid_prior(st) == pytest.approx(prior, rel=1e-15)
    assert sf.optimal_sigmoid_bias(st) == pytest.approx(math.log(prior / (1 - prior)), rel=1e-14)
    assert sf.optimal_softmax_background_bias(st) == pytest.approx(math.log(5 * bg / fg),
                                                                   rel=1e-14)
    assert sf.released_score_threshold(st) == pytest.approx(prior * 6, rel=1e-15)
    thr = sf.class_adaptive_thresholds(st, floor=0.05, dtype=torch.float64)
    exp = [max(0.05, st["per_class"][k] / (fg + bg) * 6) for k in range(5)]
    torch.testing.assert_close(thr, torch.tensor(exp, dtype=torch.float64), rtol=1e-15, atol=0)
    conv = torch.nn.Conv2d(4, 5, 3)
    sf.init_sigmoid_bias_(conv.bias, st)
    assert torch.allclose(conv.bias, torch.full((5,), math.log(prior / (1 - prior))))
    lin = torch.nn.Linear(4, 6)
    sf.init_softmax_bias_(lin.bias, st, background_first=False)
    assert float(lin.bias[-1]) == pytest.approx(math.log(5 * bg / fg), rel=1e-6)
    assert torch.equal(lin.bias[:-1], torch.zeros(5))
    with pytest.raises(ValueError, match="label"):
        sf.anchor_statistics(torch.tensor([0, 7]), 5)
    with pytest.raises(ValueError, match="num_fg must be > 0"):
        sf.optimal_sigmoid_bias(0, 10, 3)
    with pytest.raises(ValueError, match="floor"):
        sf.class_adaptive_thresholds(st, floor=-1.0)


def test_select_above_thresholds_equals_torch_nonzero():
    sf = fgbg.sampling_free
    g = torch.Generator().manual_seed(3)
    scores = torch.rand(300, 6, generator=g)
    scores[5, 2] = 0.25  # exactly at its threshold: not kept (strict)
    thr = torch.tensor([0.9, 0.5, 0.25, 0.99, 0.0, 0.7])
    a, k, v = sf.select_above_thresholds(scores, thr)
    keep = scores > thr.to(scores.dtype)
    idx = keep.nonzero()
    assert torch.equal(a, idx[:, 0]) and torch.equal(k, idx[:, 1] + 1)
    assert torch.equal(v, scores[keep])
    a2, k2, v2 = sf.select_above_thresholds(scores.double(), 0.8, order="score_descending")
    order = sorted(((-float(scores[i, j]), i, j + 1) for i, j in
                    (scores.double() > 0.8).nonzero().tolist()))
    assert [(-float(x), int(i), int(j)) for x, i, j in zip(v2, a2, k2)] == order
    with pytest.raises(ValueError, match="thresholds"):
        sf.select_above_thresholds(scores, thr[:3])
    bad = scores.clone()
    bad[1, 1] = math.nan
    with pytest.raises(fgbg.NonFiniteError, match="scores"):
        sf.select_above_thresholds(bad, thr)
