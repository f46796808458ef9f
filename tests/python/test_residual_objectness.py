"""Residual objectness: a sequence of calls against a PyTorch implementation of the formula with
the EMA normaliser written here, gradcheck in double, the state in the module's buffer, the
value-only path, half logits, and errors."""
import pytest
import torch
import torch.nn.functional as TF

import fgbg
from helpers import make_batch, one_hot


class RefResObj:
    """The released head's loss with detectron2's EMA of max(1, #positives), E0 = 100."""

    def __init__(self, mu=0.9, e0=100.0, a_obj=20.0, a_cls=10.0, a_box=1.0, three=True):
        self.mu, self.e, self.a = mu, e0, (a_obj, a_cls, a_box)
        self.three = three

    def __call__(self, z, y, s, commit=True):
        m = max(1, int((y > 0).sum()))
        es = []
        e = self.e
        for _ in range(3 if self.three else 1):
            e = self.mu * e + (1 - self.mu) * m
            es.append(e)
        if not self.three:
            es = es * 3
        o = s.sum(1)
        valid = y >= 0
        obj = TF.binary_cross_entropy_with_logits(o[valid], (y[valid] > 0).to(o.dtype),
                                                  reduction="sum") / (self.a[0] * es[0])
        pos = y > 0
        t = one_hot(y, z.shape[1], z.dtype)
        cls = TF.binary_cross_entropy_with_logits(z[pos], t[pos], reduction="sum") / (
            self.a[1] * es[1])
        if commit:
            self.e = es[-1]
        return obj + cls, obj, cls, self.a[2] * es[2]


@pytest.mark.parametrize("three", [True, False])
def test_sequence_against_formula(three):
    ref = RefResObj(mu=0.8, three=three)
    state = fgbg.residual_objectness_state()
    opts = dict(ema_momentum=0.8, ema_updates="three_per_call" if three else "one_per_call")
    for step in range(4):
        z, y, _ = make_batch(50 + 10 * step, 4, seed=step)
        g = torch.Generator().manual_seed(100 + step)
        s = torch.randn(z.shape[0], 2, generator=g, dtype=torch.float64) * 2
        za, sa = z.clone().requires_grad_(), s.clone().requires_grad_()
        zb, sb = z.clone().requires_grad_(), s.clone().requires_grad_()
        got, info = fgbg.residual_objectness_loss(za, y, sa, state, **opts)
        exp, obj, cls, box = ref(zb, y, sb)
        torch.testing.assert_close(got, exp, rtol=1e-12, atol=1e-14)
        assert info["obj_loss"] == pytest.approx(float(obj), rel=1e-12)
        assert info["cls_loss"] == pytest.approx(float(cls), rel=1e-12)
        assert info["box_normalizer"] == pytest.approx(box, rel=1e-14)
        assert info["num_positives"] == int((y > 0).sum())
        (0.5 * got).backward()
        (0.5 * exp).backward()
        torch.testing.assert_close(za.grad, zb.grad, rtol=1e-10, atol=1e-14)
        torch.testing.assert_close(sa.grad, sb.grad, rtol=1e-10, atol=1e-14)
        st = fgbg.residual_objectness_inspect(state)
        assert st["calls"] == step + 1 and st["num_pos_ema"] == pytest.approx(ref.e, rel=1e-14)


def test_gradcheck_and_value_only_leaves_state():
    z, y, _ = make_batch(12, 3, seed=4, scale=1.5)
    s = torch.randn(12, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    z.requires_grad_()
    s.requires_grad_()

    def f(a, b):
        return fgbg.residual_objectness_loss(a, y, b, fgbg.residual_objectness_state())[0]

    assert torch.autograd.gradcheck(f, (z, s), eps=1e-6, atol=1e-7)
    state = fgbg.residual_objectness_state()
    before = state.clone()
    with torch.no_grad():
        v, _ = fgbg.residual_objectness_loss(z, y, s, state, update_state=False)
    assert torch.equal(state, before) and v.grad_fn is None
    with torch.no_grad():  # as GHM-C and EFL: the state advances unless update_state=False
        u, _ = fgbg.residual_objectness_loss(z, y, s, state.clone())
    assert float(u) == float(v)
    w, _ = fgbg.residual_objectness_loss(z, y, s, state)
    assert float(v) == float(w) and not torch.equal(state, before)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_logits_equal_float_on_widened(dtype):
    z, y, _ = make_batch(40, 3, seed=8, dtype=torch.float32)
    s = torch.randn(40, 2, generator=torch.Generator().manual_seed(2))
    za, sa = z.to(dtype).requires_grad_(), s.to(dtype).requires_grad_()
    zb, sb = z.to(dtype).float().requires_grad_(), s.to(dtype).float().requires_grad_()
    got, _ = fgbg.residual_objectness_loss(za, y, sa, fgbg.residual_objectness_state())
    exp, _ = fgbg.residual_objectness_loss(zb, y, sb, fgbg.residual_objectness_state())
    assert torch.equal(got, exp.to(dtype))
    got.backward()
    exp.backward()
    assert torch.equal(za.grad, zb.grad.to(dtype)) and torch.equal(sa.grad, sb.grad.to(dtype))


def test_module_buffer_round_trip_eval_and_scores():
    m = fgbg.nn.ResidualObjectnessLoss(loss_weight=2.0)
    ref = RefResObj()
    for step in range(3):
        z, y, _ = make_batch(30, 3, seed=20 + step)
        s = torch.randn(30, 2, dtype=torch.float64)
        torch.testing.assert_close(m(z, y, s), 2.0 * ref(z, y, s)[0])
    m2 = fgbg.nn.ResidualObjectnessLoss()
    m2.load_state_dict(m.state_dict())
    assert torch.equal(m2.state, m.state)
    m2.eval()
    z, y, _ = make_batch(30, 3, seed=40)
    s = torch.randn(30, 2, dtype=torch.float64)
    torch.testing.assert_close(m2(z, y, s), ref(z, y, s, commit=False)[0])
    assert torch.equal(m2.state, m.state)  # eval: read, not advanced
    m2.reset_state()
    assert fgbg.residual_objectness_inspect(m2.state)["calls"] == 0
    sc = fgbg.residual_objectness_scores(s, z)
    torch.testing.assert_close(sc, torch.sigmoid(s.sum(1, keepdim=True)) * torch.sigmoid(z))


def test_errors_write_nothing():
    z, y, _ = make_batch(10, 3, seed=1)
    s = torch.randn(10, 2, dtype=torch.float64)
    state = fgbg.residual_objectness_state()
    before = state.clone()
    za = z.clone().requires_grad_()
    with pytest.raises(ValueError, match="rows|stage"):
        fgbg.residual_objectness_loss(za, y, s[:5], state)
    with pytest.raises(ValueError, match="ema_momentum"):
        fgbg.residual_objectness_loss(za, y, s, state, ema_momentum=1.0)
    with pytest.raises(TypeError, match="unknown option"):
        fgbg.residual_objectness_loss(za, y, s, state, momentum=0.5)
    bad = s.clone()
    bad[3, 1] = float("nan")
    with pytest.raises(fgbg.NonFiniteError):
        fgbg.residual_objectness_loss(za, y, bad, state)
    assert torch.equal(state, before) and za.grad is None
