"""fgbg.torchvision.sigmoid_focal_loss against torchvision.ops.sigmoid_focal_loss."""
import pytest
import torch
import torchvision

import fgbg
import fgbg.torchvision as ftv
from helpers import make_batch, one_hot


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("alpha,gamma", [(0.25, 2), (-1, 0.5), (0.5, 0)])
def test_one_hot_targets(reduction, alpha, gamma):
    x, y, _ = make_batch(60, 7, seed=3, p_ignore=0.0)
    t = one_hot(y, 7)
    a = x.clone().requires_grad_()
    b = x.clone().requires_grad_()
    got = ftv.sigmoid_focal_loss(a, t, alpha=alpha, gamma=gamma, reduction=reduction)
    exp = torchvision.ops.sigmoid_focal_loss(b, t, alpha=alpha, gamma=gamma, reduction=reduction)
    torch.testing.assert_close(got, exp, rtol=1e-11, atol=1e-14)
    go = torch.rand_like(exp)
    got.backward(go)
    exp.backward(go)
    torch.testing.assert_close(a.grad, b.grad, rtol=1e-10, atol=1e-14)


def test_shapes_and_float32():
    x = torch.randn(2, 30, 5)
    t = torch.zeros(2, 30, 5)
    t[0, 3, 1] = t[1, 7, 4] = 1
    got = ftv.sigmoid_focal_loss(x, t)
    assert got.shape == x.shape and got.dtype == torch.float32
    torch.testing.assert_close(got, torchvision.ops.sigmoid_focal_loss(x, t))
    torch.testing.assert_close(ftv.sigmoid_focal_loss(x[0, 0], t[0, 0], reduction="sum"),
                               torchvision.ops.sigmoid_focal_loss(x[0, 0], t[0, 0],
                                                                  reduction="sum"))


def test_errors():
    with pytest.raises(ValueError, match="same shape"):
        ftv.sigmoid_focal_loss(torch.zeros(3, 2), torch.zeros(3, 3))
    with pytest.raises(ValueError, match="reduction"):
        ftv.sigmoid_focal_loss(torch.zeros(3, 2), torch.zeros(3, 2), reduction="avg")


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_soft_and_multi_hot_targets(reduction):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(40, 6, generator=g, dtype=torch.float64)
    t = torch.rand(40, 6, generator=g, dtype=torch.float64)
    t[::3] = (t[::3] > 0.5).to(t.dtype)  # multi-hot rows
    a = x.clone().requires_grad_()
    b = x.clone().requires_grad_()
    got = ftv.sigmoid_focal_loss(a, t, reduction=reduction)
    exp = torchvision.ops.sigmoid_focal_loss(b, t, reduction=reduction)
    torch.testing.assert_close(got, exp, rtol=1e-10, atol=1e-13)
    go = torch.rand_like(exp)
    got.backward(go)
    exp.backward(go)
    torch.testing.assert_close(a.grad, b.grad, rtol=1e-9, atol=1e-13)
