"""AP, Rank & Sort and DR loss: the reference vectors, plain PyTorch versions of their formulas
(O(P N) for the ranking updates), gradcheck for DR (a true derivative) and groups."""
import json
import os

import pytest
import torch

import fgbg
from conftest import DATA
from helpers import make_batch


def _load(fname):
    with open(os.path.join(DATA, fname)) as f:
        return json.load(f)["cases"]


def _close(got, exp):
    exp = torch.as_tensor(exp, dtype=torch.float64)
    got = torch.as_tensor(got, dtype=torch.float64).detach().reshape(exp.shape)
    if exp.numel():
        assert float((got - exp).abs().max()) <= 1e-9 * max(1.0, float(exp.abs().max()))


def _inputs(case):
    n, c = case["num_anchors"], case["num_classes"]
    x = torch.tensor(case["logits"], dtype=torch.float64).reshape(n, c).requires_grad_()
    return x, torch.tensor(case["labels"], dtype=torch.int64).reshape(n)


def test_reference_vectors_ap():
    for case in _load("ap_loss.json"):
        x, y = _inputs(case)
        loss = fgbg.ap_loss(x, y, **case["params"])
        loss.backward()
        _close(loss, case["expected"]["loss"])
        _close(x.grad, case["expected"]["grad"])


def test_reference_vectors_rs():
    for case in _load("rs_loss.json"):
        x, y = _inputs(case)
        iou = torch.tensor(case["iou"], dtype=torch.float64).reshape(-1)
        rank, sort = fgbg.rank_sort_loss(x, y, iou, **case["params"])
        (rank + sort).backward()
        _close(rank, case["expected"]["loss_rank"])
        _close(sort, case["expected"]["loss_sort"])
        _close(rank + sort, case["expected"]["loss"])
        _close(x.grad, case["expected"]["grad"])


def test_reference_vectors_dr():
    for case in _load("dr_loss.json"):
        x, y = _inputs(case)
        loss = fgbg.dr_loss(x, y, **case["params"])
        loss.backward()
        _close(loss, case["expected"]["loss"])
        _close(x.grad, case["expected"]["grad"])


def _entries(x, y):
    """Flattened scores, positive mask, negative mask (anchor-major)."""
    c = x.shape[1]
    col = torch.arange(c).expand(x.shape[0], c)
    pos = (y[:, None] > 0) & (col == (y[:, None] - 1))
    neg = (y[:, None] >= 0) & ~pos
    return x.detach().flatten(), pos.flatten(), neg.flatten()


def _h(d, delta):
    return (d / (2 * delta) + 0.5).clamp(0, 1)


def ap_torch(x, y, delta=1.0):
    """AP loss and its update, interpolated, written out as O(P N) tensor loops."""
    s, pos, neg = _entries(x, y)
    P = pos.nonzero().flatten()
    u = torch.zeros_like(s)
    if P.numel() == 0:
        return torch.tensor(0.0, dtype=s.dtype), u.reshape(x.shape)
    order = P[torch.argsort(s[P], stable=True)]
    prec = {}
    ab = {}
    for i in P.tolist():
        a = 1 + _h(s[P] - s[i], delta).sum() - 0.5  # the self term H(0) = 1/2 removed
        b = _h(s[neg] - s[i], delta).sum()
        prec[i] = float(a / (a + b))
        ab[i] = float(a + b)
    interp = {}
    best = -1.0
    wts = {}
    # ascending scores: interpolated precision = max precision of positives scored <= s_i
    for i in order.tolist():
        new_max = prec[i] > best
        best = max(best, prec[i])
        interp[i] = best
        wts[i] = 1.0 if new_max else (1 - interp[i]) / (1 - prec[i])
    npos = P.numel()
    value = 1 - sum(interp.values()) / npos
    for i in P.tolist():
        u[i] = -(1 - interp[i]) / npos
        u[neg] += wts[i] * _h(s[neg] - s[i], delta) / ab[i] / npos
    return torch.tensor(value, dtype=s.dtype), u.reshape(x.shape)


def test_ap_against_torch_loop():
    x, y, _ = make_batch(30, 3, seed=21, p_pos=0.3)
    a = x.clone().requires_grad_()
    loss = fgbg.ap_loss(a, y)
    loss.backward()
    v, u = ap_torch(x, y)
    torch.testing.assert_close(loss, v, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(a.grad, u, rtol=1e-10, atol=1e-14)


def dr_torch(x, y, pos_lambda=1.0, neg_lambda=0.07982356001479281, L=6.0, tau=4.0, margin=0.5):
    c = x.shape[1]
    col = torch.arange(c).expand(x.shape[0], c)
    pos = ((y[:, None] > 0) & (col == (y[:, None] - 1))).flatten()
    neg = ((y[:, None] >= 0).expand(-1, c).flatten()) & ~pos
    p = torch.sigmoid(x).flatten()
    pn, pp = p[neg], p[pos]
    dneg = (torch.softmax(pn / neg_lambda, 0) * pn).sum() if pn.numel() else p.new_zeros(())
    dpos = (torch.softmax(-pp / pos_lambda, 0) * pp).sum() if pp.numel() else p.new_ones(())
    return tau / L * torch.nn.functional.softplus(L * (dneg - dpos + margin))


def test_dr_against_torch_formula_and_gradcheck():
    x, y, _ = make_batch(40, 4, seed=5, scale=2.0)
    a = x.clone().requires_grad_()
    b = x.clone().requires_grad_()
    got = fgbg.dr_loss(a, y)
    exp = dr_torch(b, y)
    torch.testing.assert_close(got, exp, rtol=1e-12, atol=1e-14)
    got.backward()
    exp.backward()
    torch.testing.assert_close(a.grad, b.grad, rtol=1e-10, atol=1e-14)
    xs, ys, _ = make_batch(8, 3, seed=6, scale=1.5)
    assert torch.autograd.gradcheck(lambda t: fgbg.dr_loss(t, ys), (xs.requires_grad_(),))


@pytest.mark.parametrize("name", ["ap", "rs", "dr"])
def test_groups_are_separate_rankings(name):
    x, y, q = make_batch(60, 3, seed=8, p_pos=0.25)
    groups = torch.repeat_interleave(torch.arange(3), 20)

    def call(xx, yy, qq, g=None):
        if name == "ap":
            return fgbg.ap_loss(xx, yy, groups=g)
        if name == "rs":
            return fgbg.rank_sort_loss(xx, yy, qq, groups=g)[0]
        return fgbg.dr_loss(xx, yy, groups=g)

    a = x.clone().requires_grad_()
    whole = call(a, y, q, groups)
    whole.backward()
    parts, grads = [], []
    for k in range(3):
        r = slice(20 * k, 20 * (k + 1))
        b = x[r].clone().requires_grad_()
        v = call(b, y[r], q[r])
        v.backward()
        parts.append(v)
        grads.append(b.grad)
    if name == "dr":  # the sum of the per-group losses
        torch.testing.assert_close(whole, sum(parts))
        torch.testing.assert_close(a.grad, torch.cat(grads))
    else:
        assert not torch.allclose(whole, fgbg.ap_loss(x, y) if name == "ap" else
                                  fgbg.rank_sort_loss(x, y, q)[0])


def test_rs_update_is_not_scaled_by_sort():
    x, y, q = make_batch(30, 3, seed=9, p_pos=0.3)
    a = x.clone().requires_grad_()
    rank, sort = fgbg.rank_sort_loss(a, y, q)
    assert not sort.requires_grad
    (2.0 * rank + sort).backward()
    b = x.clone().requires_grad_()
    fgbg.rank_sort_loss(b, y, q)[0].backward()
    torch.testing.assert_close(a.grad, 2.0 * b.grad)


def test_reference_vectors_alrp():
    for case in _load("alrp_loss.json"):
        x, y = _inputs(case)
        le = torch.tensor(case["loc_error"], dtype=torch.float64).reshape(-1).requires_grad_()
        cls, loc = fgbg.alrp_loss(x, y, le, **case["params"])
        (cls + loc).backward()
        _close(cls, case["expected"]["loss"])
        _close(loc, case["expected"]["loc_loss"])
        _close(x.grad, case["expected"]["grad"])
        _close(le.grad, case["expected"]["grad_loc_error"])


def test_alrp_gradients_flow_to_both_inputs():
    x, y, q = make_batch(40, 3, seed=13, p_pos=0.3)
    a = x.clone().requires_grad_()
    iou = q.clone().requires_grad_()
    cls, loc = fgbg.alrp_loss(a, y, 1 - iou)
    (cls + 2.0 * loc).backward()
    b = x.clone().requires_grad_()
    le = (1 - q).clone().requires_grad_()
    c2, l2 = fgbg.alrp_loss(b, y, le)
    c2.backward(retain_graph=True)
    torch.testing.assert_close(a.grad, b.grad)
    l2.backward()
    torch.testing.assert_close(iou.grad, -2.0 * le.grad)
    assert float(le.grad[y <= 0].abs().sum()) == 0.0
