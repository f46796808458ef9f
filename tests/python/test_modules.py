"""The mmdetection-style modules: reduction_override, avg_factor (+ FLT_EPSILON), loss_weight,
class_weight, mmdetection's labels; and the stateful modules' buffers."""
import pytest
import torch
import torch.nn.functional as TF

import fgbg
from helpers import (make_batch, one_hot, ref_bce, ref_efl, ref_focal, ref_ghmc,
                     ref_softmax_focal, ref_vfl)

EPS = float(torch.finfo(torch.float32).eps)


def _mmdet(y, c):
    """fgbg labels -> mmdetection's (0..C-1 classes, C background); no ignored anchors."""
    return torch.where(y == 0, torch.full_like(y, c), y - 1)


def test_focal_module_mmdet_semantics():
    x, y, _ = make_batch(50, 7, seed=1, p_ignore=0.0)
    m = fgbg.nn.FocalLoss(gamma=2.0, alpha=0.25, loss_weight=1.5, mmdet_labels=True)
    w = torch.rand(50, dtype=torch.float64)
    a = x.clone().requires_grad_()
    b = x.clone().requires_grad_()
    got = m(a, _mmdet(y, 7), weight=w, avg_factor=torch.tensor(12.0))
    exp = 1.5 * (ref_focal(b, y) * w[:, None]).sum() / (12.0 + EPS)
    torch.testing.assert_close(got, exp, rtol=1e-12, atol=0)
    got.backward()
    exp.backward()
    torch.testing.assert_close(a.grad, b.grad, rtol=1e-12, atol=1e-15)
    # mean: every element (no label is ignored), as mmdetection's loss.mean()
    torch.testing.assert_close(m(x, _mmdet(y, 7)), 1.5 * ref_focal(x, y).mean())
    # reduction_override
    e = m(x, _mmdet(y, 7), reduction_override="none")
    torch.testing.assert_close(e, 1.5 * ref_focal(x, y))
    torch.testing.assert_close(m(x, _mmdet(y, 7), reduction_override="sum"),
                               1.5 * ref_focal(x, y).sum())
    with pytest.raises(ValueError, match="avg_factor"):
        m(x, _mmdet(y, 7), avg_factor=3.0, reduction_override="sum")
    with pytest.raises(ValueError, match="0..6"):
        m(x, torch.full((50,), 8))


def test_bce_class_weight_is_pos_weight():
    x, y, _ = make_batch(40, 5, seed=2, p_ignore=0.0)
    cw = torch.tensor([0.5, 1.0, 2.0, 3.0, 0.25], dtype=torch.float64)
    m = fgbg.nn.CrossEntropyLoss(use_sigmoid=True, class_weight=cw.tolist(), mmdet_labels=True)
    a = x.clone().requires_grad_()
    b = x.clone().requires_grad_()
    got = m(a, _mmdet(y, 5), avg_factor=9.0)
    t = one_hot(y, 5)
    exp = TF.binary_cross_entropy_with_logits(b, t, pos_weight=cw, reduction="sum") / (9.0 + EPS)
    torch.testing.assert_close(got, exp, rtol=1e-12, atol=0)
    got.backward()
    exp.backward()
    torch.testing.assert_close(a.grad, b.grad)


def test_softmax_ce_mmdet_background_last_and_class_weight():
    x, y, _ = make_batch(40, 4, seed=3, p_ignore=0.0, softmax=True)
    # mmdetection's layout: classes 0..C-1 then background in column C
    xm = torch.cat([x[:, 1:], x[:, :1]], 1)
    cw = torch.tensor([1.0, 2.0, 0.5, 3.0, 0.1], dtype=torch.float64)  # background last
    m = fgbg.nn.CrossEntropyLoss(class_weight=cw.tolist(), mmdet_labels=True, loss_weight=2.0)
    a = xm.clone().requires_grad_()
    b = xm.clone().requires_grad_()
    got = m(a, _mmdet(y, 4))
    exp = 2.0 * TF.cross_entropy(b, _mmdet(y, 4), weight=cw, reduction="none").mean()
    torch.testing.assert_close(got, exp)
    got.backward()
    exp.backward()
    torch.testing.assert_close(a.grad, b.grad)


def test_softmax_ce_ignore_index():
    x, y, _ = make_batch(30, 3, seed=4, p_ignore=0.0, softmax=True)
    y = y.clone()
    y[::4] = -100
    m = fgbg.nn.CrossEntropyLoss(ignore_index=-100)
    torch.testing.assert_close(m(x, y), TF.cross_entropy(x, y, ignore_index=-100))


def test_softmax_focal_module():
    x, y, _ = make_batch(30, 3, seed=5, softmax=True)
    m = fgbg.nn.FocalLoss(use_sigmoid=False, alpha=0.3, gamma=1.5)
    torch.testing.assert_close(m(x, y, reduction_override="sum"),
                               ref_softmax_focal(x, y, 0.3, 1.5).sum())


def test_vfl_module_takes_mmdet_dense_target():
    x, y, q = make_batch(40, 6, seed=6, p_ignore=0.0)
    dense = one_hot(y, 6, values=q)
    m = fgbg.nn.VarifocalLoss()
    a = m(x, dense, avg_factor=5.0)
    b = m(x, (y, q), avg_factor=5.0)
    assert torch.equal(a, b)
    torch.testing.assert_close(a, ref_vfl(x, y, q).sum() / (5.0 + EPS))
    bad = dense.clone()
    bad[0, :2] = 0.5
    with pytest.raises(ValueError, match="more than one"):
        m(x, bad)


def test_qfl_and_soft_target_modules():
    x, y, q = make_batch(40, 6, seed=7)
    m = fgbg.nn.QualityFocalLoss(beta=2.0, loss_weight=0.5)
    torch.testing.assert_close(m(x, (y, q), reduction_override="sum"),
                               0.5 * fgbg.quality_focal_loss(x, y, q, reduction="sum"))
    s = fgbg.nn.SoftTargetCrossEntropyLoss(loss_weight=0.5)
    torch.testing.assert_close(s(x, (y, q)),
                               0.5 * fgbg.soft_target_cross_entropy(x, y, q))


def test_ghmc_module_momentum_sequence_and_state_dict():
    m = fgbg.nn.GHMC(bins=30, momentum=0.75)
    moving = None
    batches = [make_batch(60, 4, seed=s) for s in range(4)]
    for x, y, _ in batches[:3]:
        exp, moving = ref_ghmc(x, y, bins=30, moving=moving, momentum=0.75)
        torch.testing.assert_close(m(x, y), exp, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(torch.tensor(fgbg.ghmc_inspect(m.state)["moving"], dtype=torch.float64),
                               torch.tensor(moving, dtype=torch.float64))
    # round trip through state_dict: the restored module continues the same sequence
    sd = m.state_dict()
    assert "state" in sd and sd["state"].dtype == torch.uint8
    m2 = fgbg.nn.GHMC(bins=30, momentum=0.75)
    assert not torch.equal(m2.state, m.state)
    m2.load_state_dict(sd)
    x, y, _ = batches[3]
    assert torch.equal(m(x, y), m2(x, y))
    assert torch.equal(m.state, m2.state)
    # eval mode reads the state and leaves it
    m.eval()
    before = m.state.clone()
    m(x, y)
    assert torch.equal(m.state, before)


def test_corrupted_state_is_refused():
    m = fgbg.nn.GHMC(bins=10, momentum=0.5)
    x, y, _ = make_batch(20, 3, seed=1)
    m(x, y)
    sd = m.state_dict()
    sd["state"][20] ^= 0xFF
    m2 = fgbg.nn.GHMC(bins=10, momentum=0.5)
    m2.load_state_dict(sd)
    with pytest.raises(ValueError, match="fgbg::GhmcState"):
        m2(x, y)


def test_efl_module_against_formula_and_state_dict():
    c = 5
    m = fgbg.nn.EqualizedFocalLoss(num_classes=c, alpha=0.25, gamma_b=2.0, scale=8.0)
    batches = [make_batch(80, c, seed=10 + s, p_pos=0.2) for s in range(4)]
    ratio = torch.ones(c, dtype=torch.float64)
    pos = torch.zeros(c, dtype=torch.float64)
    neg = torch.zeros(c, dtype=torch.float64)
    for x, y, _ in batches[:3]:
        a = x.clone().requires_grad_()
        b = x.clone().requires_grad_()
        got = m(a, y, reduction_override="num_positives")
        exp = ref_efl(b, y, ratio).sum() / max(1, int((y > 0).sum()))
        torch.testing.assert_close(got, exp, rtol=1e-11, atol=1e-14)
        got.backward()
        exp.backward()
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-10, atol=1e-14)
        # the reference's hook: accumulate |grad| split by target, then the ratio
        t = one_hot(y, c)
        pos += (b.grad.abs() * t).sum(0)
        neg += (b.grad.abs() * (1 - t)).sum(0)
        ratio = (pos / (neg + 1e-10)).clamp(0, 1)
    torch.testing.assert_close(torch.tensor(fgbg.efl_inspect(m.state)["ratio"], dtype=torch.float64), ratio)
    m2 = fgbg.nn.EqualizedFocalLoss(num_classes=c)
    m2.load_state_dict(m.state_dict())
    x, y, _ = batches[3]
    assert torch.equal(m(x, y), m2(x, y))
    assert torch.equal(m.state, m2.state)
    with pytest.raises(RuntimeError, match="size"):
        fgbg.nn.EqualizedFocalLoss(num_classes=c + 1).load_state_dict(m.state_dict())


def test_module_repr_and_bce_default_mean():
    m = fgbg.nn.CrossEntropyLoss(use_sigmoid=True)
    x, y, _ = make_batch(20, 3, seed=1)
    torch.testing.assert_close(m(x, y), ref_bce(x, y).sum() / (int((y >= 0).sum()) * 3))
    assert "loss_weight" in repr(m)


def test_stateful_extras_loss_weight_none_and_propagate():
    x, y, _ = make_batch(40, 4, seed=12)
    g1 = fgbg.nn.GHMC(bins=10, loss_weight=2.0)
    g2 = fgbg.nn.GHMC(bins=10)
    a = x.clone().requires_grad_()
    b = x.clone().requires_grad_()
    la, lb = g1(a, y), g2(b, y)
    torch.testing.assert_close(la, 2.0 * lb)
    la.backward()
    lb.backward()
    torch.testing.assert_close(a.grad, 2.0 * b.grad)
    with pytest.raises(ValueError, match="reduction"):
        g1(x, y, reduction_override="none")
    e = fgbg.nn.EqualizedFocalLoss(num_classes=4)
    per = e(x, y, reduction_override="none")
    assert per.shape == x.shape
    torch.testing.assert_close(per, ref_efl(x, y, torch.ones(4, dtype=torch.float64)))
    bad = x.clone()
    bad[1, 1] = float("nan")
    p = fgbg.nn.EqualizedFocalLoss(num_classes=4, nonfinite="propagate")
    before = p.state.clone()
    assert torch.isnan(p(bad, y))
    assert torch.equal(p.state, before)


def test_alrp_module_self_balance_and_state_dict():
    m = fgbg.nn.ALRPLoss(period=3, initial_weight=50.0)
    expected, record = 50.0, []
    for s in range(8):
        x, y, q = make_batch(40, 3, seed=30 + s, p_pos=0.3)
        if s == 4:
            y = torch.where(y > 0, torch.zeros_like(y), y)  # no positives: not recorded
        a = x.clone().requires_grad_()
        le = (1 - q).clone().requires_grad_()
        total = m(a, y, le)
        cls, loc = fgbg.alrp_loss(x, y, 1 - q)
        if s != 4:  # the self-balance rule, written out
            record.append((float(cls), float(loc)))
            if len(record) == 3:
                mc = sum(c for c, _ in record) / 3
                ml = sum(v for _, v in record) / 3
                expected = (mc + ml) / ml if ml > 0 else expected
                record = []
        assert m.weight == pytest.approx(expected, rel=1e-12)
        # this iteration's update applies to this iteration
        torch.testing.assert_close(total, cls + expected * loc)
        total.backward()
        assert a.grad is not None and le.grad is not None
    assert m.weight != 50.0
    m.eval()
    m(x, y, 1 - q)
    assert int(m.sb_count) == len(record)  # eval records nothing
    m2 = fgbg.nn.ALRPLoss(period=3)
    m2.load_state_dict(m.state_dict())
    assert m2.weight == m.weight and int(m2.sb_count) == int(m.sb_count)


def _mmdet_ignoring(y, c):
    """fgbg labels -> mmdetection's, ignored anchors kept at -1."""
    return torch.where(y > 0, y - 1, torch.where(y == 0, torch.full_like(y, c), y))


@pytest.mark.parametrize("kind", ["ap", "rank_sort", "dr"])
def test_ranking_modules_are_the_functions_times_loss_weight(kind):
    x, y, q = make_batch(60, 4, seed=17)
    groups = torch.arange(60) // 20
    a = x.clone().requires_grad_()
    b = x.clone().requires_grad_()
    if kind == "ap":
        m = fgbg.nn.APLoss(delta=0.5, loss_weight=2.0, mmdet_labels=True)
        got = m(a, _mmdet_ignoring(y, 4), groups=groups)
        exp = 2.0 * fgbg.ap_loss(b, y, delta=0.5, groups=groups)
    elif kind == "rank_sort":
        m = fgbg.nn.RankSortLoss(loss_weight=2.0, mmdet_labels=True)
        r, s = m(a, _mmdet_ignoring(y, 4), q, groups=groups)
        er, es = fgbg.rank_sort_loss(b, y, q, groups=groups)
        torch.testing.assert_close(s, 2.0 * es)
        got, exp = r + s, 2.0 * (er + es)
    else:
        m = fgbg.nn.DRLoss(L=5.0, loss_weight=2.0, mmdet_labels=True)
        got = m(a, _mmdet_ignoring(y, 4), groups=groups)
        exp = 2.0 * fgbg.dr_loss(b, y, L=5.0, groups=groups)
    torch.testing.assert_close(got, exp, rtol=1e-14, atol=0)
    got.backward()
    exp.backward()
    torch.testing.assert_close(a.grad, b.grad, rtol=1e-14, atol=0)
    assert "loss_weight=2.0" in repr(m)
