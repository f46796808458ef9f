"""float16 / bfloat16 logits read in place, the value-only path (torch.no_grad() or logits
without requires_grad) and the stored gradient handed to autograd without a copy."""
import pytest
import torch

import fgbg
import fgbg._core as core
from helpers import make_batch

HALF = [torch.float16, torch.bfloat16]


def _q(n, seed=4):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, generator=g) * 0.9 + 0.05


# name -> (call(x, y) -> loss, softmax head?, in place in C++?)
def _calls():
    q = _q(64)
    t = torch.rand(64, 5, generator=torch.Generator().manual_seed(1))
    efl_ratio = torch.linspace(0.2, 0.9, 5)  # noqa: F841 (EFL uses a fresh state per call)
    return {
        "focal": (lambda x, y: fgbg.sigmoid_focal_loss(x, y, reduction="sum"), False, True),
        "bce": (lambda x, y: fgbg.sigmoid_cross_entropy(x, y), False, True),
        "focal_star": (lambda x, y: fgbg.sigmoid_focal_loss_star(x, y, gamma=2.5), False, True),
        "softmax_ce": (lambda x, y: fgbg.softmax_cross_entropy(x, y), True, True),
        "softmax_focal": (lambda x, y: fgbg.softmax_focal_loss(x, y), True, True),
        "qfl": (lambda x, y: fgbg.quality_focal_loss(x, y, q), False, True),
        "vfl": (lambda x, y: fgbg.varifocal_loss(x, y, q), False, True),
        "soft_target": (lambda x, y: fgbg.soft_target_cross_entropy(x, y, q), False, True),
        "torchvision": (lambda x, y: fgbg.torchvision.sigmoid_focal_loss(x, t, reduction="sum"),
                        False, True),
        "ghmc": (lambda x, y: fgbg.ghmc_loss(x, y, bins=7), False, True),
        "efl": (lambda x, y: fgbg.equalized_focal_loss(x, y, fgbg.efl_state(5)), False, True),
        "dr": (lambda x, y: fgbg.dr_loss(x, y), False, True),
        "ap": (lambda x, y: fgbg.ap_loss(x, y), False, False),
        "rank_sort": (lambda x, y: fgbg.rank_sort_loss(x, y, q)[0], False, False),
        "carl": (lambda x, y: fgbg.carl_loss(x, y, q * 3), False, False),
        "guided": (lambda x, y: fgbg.guided_loss(x, y, 0.8), False, False),
    }


CALLS = _calls()


@pytest.mark.parametrize("dtype", HALF)
@pytest.mark.parametrize("name", list(CALLS))
def test_half_logits_equal_float_call_on_widened_logits(name, dtype):
    call, softmax, _ = CALLS[name]
    x, y, _ = make_batch(64, 5, seed=7, dtype=torch.float32, softmax=softmax, scale=4.0)
    xh = x.to(dtype)
    xh[0, 0] = 60000.0 if dtype == torch.float16 else 1e4  # saturated logits too
    xh[1, 1] = -9.4
    a = xh.clone().requires_grad_()
    b = xh.float().requires_grad_()
    got = call(a, y)
    exp = call(b, y)
    assert got.dtype == dtype
    assert torch.equal(got, exp.to(dtype))
    got.backward()
    exp.backward()
    assert a.grad.dtype == dtype
    assert torch.equal(a.grad, b.grad.to(dtype))


@pytest.mark.parametrize("name", ["focal", "softmax_ce", "qfl", "ghmc", "efl", "dr"])
def test_half_logits_are_not_copied(name, monkeypatch):
    """The half tensor's own memory reaches C++, and the gradient buffer has the half dtype."""
    call, softmax, in_place = CALLS[name]
    assert in_place
    x, y, _ = make_batch(64, 5, seed=2, dtype=torch.float16, softmax=softmax)
    x.requires_grad_()
    seen = []
    real = core.view

    def spy(t):
        seen.append((t.data_ptr(), t.dtype))
        return real(t)

    monkeypatch.setattr(core, "view", spy)
    call(x, y).backward()
    assert (x.data_ptr(), torch.float16) in seen
    assert all(dt != torch.float32 or p != x.data_ptr() for p, dt in seen)
    assert x.grad.dtype == torch.float16


def test_half_non_finite_raises_and_writes_nothing():
    x = torch.full((4, 3), -2.0, dtype=torch.float16)
    x[2, 1] = float("inf")
    x.requires_grad_()
    with pytest.raises(fgbg.NonFiniteError, match=r"logits\(2, 1\) is inf"):
        fgbg.sigmoid_focal_loss(x, torch.tensor([1, 0, 2, -1]))
    assert x.grad is None


class _Recorder:
    """Stands in for the extension module: records the gradient argument of every call."""

    def __init__(self, real):
        self._real = real
        self.grads = []

    def __getattr__(self, name):
        attr = getattr(self._real, name)
        if name == "DenseArgs":
            def make(x, labels, grad, *rest):
                self.grads.append(grad)
                return attr(x, labels, grad, *rest)
            return make
        if callable(attr) and name.endswith(("_f32", "_f64", "_f16", "_bf16")) and \
                name.startswith(("ap_loss", "rank_sort_loss", "dr_loss", "carl")):
            def call(*args):
                # the gradient view is the 3rd (ap, dr) or 4th (rank_sort, carl) argument
                k = 3 if name.startswith(("rank_sort", "carl")) else 2
                self.grads.append(args[k])
                return attr(*args)
            return call
        return attr


VALUE_ONLY = ["focal", "bce", "focal_star", "softmax_ce", "softmax_focal", "qfl", "vfl",
              "soft_target", "torchvision", "dr", "ap", "rank_sort", "carl", "guided"]


@pytest.mark.parametrize("mode", ["no_grad", "no_requires_grad"])
@pytest.mark.parametrize("name", VALUE_ONLY)
def test_value_only_path(name, mode, monkeypatch):
    call, softmax, _ = CALLS[name]
    x, y, _ = make_batch(64, 5, seed=9, dtype=torch.float64, softmax=softmax)
    with_grad = call(x.clone().requires_grad_(), y)
    rec = _Recorder(core._fgbg)
    monkeypatch.setattr(core, "_fgbg", rec)
    if mode == "no_grad":
        with torch.no_grad():
            v = call(x.clone().requires_grad_(), y)
    else:
        v = call(x.clone(), y)
    assert rec.grads and all(g is None for g in rec.grads)  # no gradient buffer was passed
    assert v.grad_fn is None and not v.requires_grad
    assert torch.equal(v, with_grad.detach())


def test_alrp_value_only(monkeypatch):
    x, y, q = make_batch(64, 5, seed=11)
    loc = q * 0.8
    cls_g, loc_g = fgbg.alrp_loss(x.clone().requires_grad_(), y, loc.clone().requires_grad_())
    seen = []
    real = core._fgbg

    class Spy:
        def __getattr__(self, name):
            attr = getattr(real, name)
            if name.startswith("alrp_loss"):
                def call(*args):
                    seen.append((args[3], args[4]))
                    return attr(*args)
                return call
            return attr

    monkeypatch.setattr(core, "_fgbg", Spy())
    with torch.no_grad():
        cls_v, loc_v = fgbg.alrp_loss(x.clone().requires_grad_(), y, loc)
    assert seen == [(None, None)]
    assert torch.equal(cls_v, cls_g.detach()) and torch.equal(loc_v, loc_g.detach())
    assert cls_v.grad_fn is None


def test_value_only_per_element_losses_and_loss_weight():
    x, y, _ = make_batch(40, 6, seed=3)
    m = fgbg.nn.FocalLoss(loss_weight=2.5)
    exp = m(x.clone().requires_grad_(), y, reduction_override="none")
    with torch.no_grad():
        got = m(x, y, reduction_override="none")
        tot = m(x, y)
    assert torch.equal(got, exp.detach())
    assert torch.equal(tot, m(x.clone().requires_grad_(), y).detach())


def test_backward_hands_over_the_stored_gradient_and_reruns_when_retained():
    x, y, _ = make_batch(50, 4, seed=5, dtype=torch.float32)
    x.requires_grad_()
    loss = fgbg.sigmoid_focal_loss(x, y)
    stored = loss.grad_fn.grad.data_ptr()
    loss.backward(retain_graph=True)
    assert x.grad.data_ptr() == stored  # autograd took the buffer: no copy, no multiplication
    first = x.grad.clone()
    x.grad = None
    loss.backward()  # the buffer was given away: recomputed, bit-identical
    assert torch.equal(x.grad, first)
    x.grad = None
    (2.0 * fgbg.sigmoid_focal_loss(x, y)).backward()
    assert torch.equal(x.grad, 2.0 * first)


@pytest.mark.parametrize("kind", ["ghmc", "efl"])
def test_stateful_losses_rerun_from_the_old_state_for_a_retained_graph(kind):
    x, y, _ = make_batch(50, 4, seed=6, dtype=torch.float32)
    x.requires_grad_()
    if kind == "ghmc":
        s = fgbg.ghmc_state(10)
        fgbg.ghmc_loss(x.detach(), y, momentum=0.75, state=s)  # a non-trivial state first
        loss = fgbg.ghmc_loss(x, y, momentum=0.75, state=s)
    else:
        s = fgbg.efl_state(4)
        fgbg.equalized_focal_loss(x.detach(), y, s)
        loss = fgbg.equalized_focal_loss(x, y, s)
    stored = loss.grad_fn.grad.data_ptr()
    after = s.clone()
    loss.backward(retain_graph=True)
    assert x.grad.data_ptr() == stored
    g = x.grad.clone()
    x.grad = None
    loss.backward()  # recomputed from the state before the call
    assert torch.equal(x.grad, g)
    assert torch.equal(s, after)  # the state advanced once, in forward
