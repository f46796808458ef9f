"""Every bound loss against a plain PyTorch implementation of its formula (helpers.py), for every
reduction, per-anchor and per-element weights, value and autograd gradient; gradcheck in double."""
import zlib

import pytest
import torch

import fgbg
from helpers import (make_batch, one_hot, reduce, ref_bce, ref_focal, ref_qfl, ref_soft_target,
                     ref_softmax_ce, ref_softmax_focal, ref_vfl)

# name -> (fgbg function, reference, softmax head?, needs quality?, extra kwargs)
LOSSES = {
    "focal": (fgbg.sigmoid_focal_loss, ref_focal, False, False, {}),
    "focal_setting2": (fgbg.sigmoid_focal_loss, lambda x, y: ref_focal(x, y, -1.0, 0.5), False,
                       False, dict(alpha=-1.0, gamma=0.5)),
    "bce": (fgbg.sigmoid_cross_entropy, ref_bce, False, False, {}),
    "softmax_ce": (fgbg.softmax_cross_entropy, ref_softmax_ce, True, False, {}),
    "softmax_focal": (fgbg.softmax_focal_loss, ref_softmax_focal, True, False, {}),
    "softmax_focal_g1": (fgbg.softmax_focal_loss,
                         lambda x, y: ref_softmax_focal(x, y, 0.4, 1.0), True, False,
                         dict(alpha=0.4, gamma=1.0)),
    "qfl": (fgbg.quality_focal_loss, ref_qfl, False, True, {}),
    "vfl": (fgbg.varifocal_loss, ref_vfl, False, True, {}),
    "vfl_unweighted": (fgbg.varifocal_loss,
                       lambda x, y, q: ref_vfl(x, y, q, 0.5, 1.5, iou_weighted=False), False,
                       True, dict(alpha=0.5, gamma=1.5, iou_weighted=False)),
    "soft_target": (fgbg.soft_target_cross_entropy, ref_soft_target, False, True, {}),
}
REDUCTIONS = ["sum", "mean", "num_positives", "none", "avg"]


def _call(name, x, y, q, reduction, weight=None):
    fn, _, _, quality, kw = LOSSES[name]
    args = (x, y, q) if quality else (x, y)
    r = reduction
    af = None
    if reduction == "avg":
        r, af = "mean", 7.25
    return fn(*args, reduction=r, avg_factor=af, weight=weight, **kw)


def _ref(name, x, y, q, reduction, weight=None):
    _, ref, softmax, quality, _ = LOSSES[name]
    e = ref(x, y, q) if quality else ref(x, y)
    if weight is not None:
        e = e * (weight.view(-1, 1) if weight.dim() == 1 and e.dim() == 2 else weight)
    af = 7.25 if reduction == "avg" else None
    tsum = q[y > 0].sum() if quality else None
    return reduce(e, y, "mean" if reduction == "avg" else reduction, af, per_anchor=softmax,
                  norm_target=tsum)


# softmax heads take per-anchor weights only
CASES = [(n, r, w) for n in LOSSES for r in REDUCTIONS for w in ["none", "anchor", "element"]
         if not (LOSSES[n][2] and w == "element")]


@pytest.mark.parametrize("name,reduction,weights", CASES)
def test_against_torch_formula(name, reduction, weights):
    softmax = LOSSES[name][2]
    x, y, q = make_batch(37, 6, seed=zlib.crc32(f"{name}{reduction}{weights}".encode()) % 1000, softmax=softmax)
    w = None
    g = torch.Generator().manual_seed(5)
    if weights == "anchor":
        w = torch.rand(x.shape[0], generator=g, dtype=torch.float64) * 2
    elif weights == "element":
        w = torch.rand(x.shape, generator=g, dtype=torch.float64) * 2
    xa = x.clone().requires_grad_()
    xb = x.clone().requires_grad_()
    got = _call(name, xa, y, q, reduction, w)
    exp = _ref(name, xb, y, q, reduction, w)
    assert got.shape == exp.shape
    torch.testing.assert_close(got, exp, rtol=1e-10, atol=1e-12)
    go = torch.rand(got.shape, dtype=torch.float64) if got.dim() else torch.tensor(1.7,
                                                                                 dtype=torch.float64)
    got.backward(go)
    exp.backward(go)
    torch.testing.assert_close(xa.grad, xb.grad, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("name", list(LOSSES))
@pytest.mark.parametrize("reduction", ["sum", "none", "mean"])
def test_gradcheck(name, reduction):
    softmax = LOSSES[name][2]
    x, y, q = make_batch(9, 3, seed=3, softmax=softmax, scale=1.5)
    x = x.requires_grad_()
    assert torch.autograd.gradcheck(lambda a: _call(name, a, y, q, reduction), (x,),
                                    eps=1e-6, atol=1e-7)


@pytest.mark.parametrize("name", ["focal", "bce", "softmax_ce", "qfl"])
def test_float32_matches_float64(name):
    softmax = LOSSES[name][2]
    x, y, q = make_batch(200, 8, seed=11, softmax=softmax)
    a32 = x.float().requires_grad_()
    a64 = x.clone().requires_grad_()
    v32 = _call(name, a32, y, q.float(), "sum")
    v64 = _call(name, a64, y, q, "sum")
    assert v32.dtype == torch.float32
    v32.backward()
    v64.backward()
    torch.testing.assert_close(v32.double(), v64, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(a32.grad.double(), a64.grad, rtol=1e-4, atol=1e-6)


def test_torchvision_focal_float32_and_mean():
    import torchvision

    x, y, _ = make_batch(500, 20, seed=2, dtype=torch.float32, p_ignore=0.0)
    t = one_hot(y, 20, torch.float32)
    a = x.clone().requires_grad_()
    b = x.clone().requires_grad_()
    got = fgbg.sigmoid_focal_loss(a, y, reduction="mean")
    exp = torchvision.ops.sigmoid_focal_loss(b, t, reduction="mean")
    got.backward()
    exp.backward()
    torch.testing.assert_close(got, exp, rtol=2e-6, atol=1e-7)
    torch.testing.assert_close(a.grad, b.grad, rtol=1e-4, atol=1e-9)


def test_backward_scales_stored_gradient_once():
    x, y, _ = make_batch(20, 4, seed=1)
    a = x.clone().requires_grad_()
    loss = fgbg.sigmoid_focal_loss(a, y, reduction="sum")
    (3.0 * loss).backward()
    b = x.clone().requires_grad_()
    ref_focal(b, y).sum().backward()
    torch.testing.assert_close(a.grad, 3.0 * b.grad)
    assert loss.grad_fn.__class__.__name__ == "FusedLossBackward"
