"""Tensors as users have them: dtypes, layouts, label types, devices; and the errors."""
import pytest
import torch

import fgbg
from helpers import make_batch, ref_focal, ref_softmax_ce


def _focal_grad(x, y, **kw):
    a = x.clone().requires_grad_() if x.is_leaf else x
    loss = fgbg.sigmoid_focal_loss(a, y, reduction="sum", **kw)
    loss.backward()
    return loss, a.grad


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_dtypes(dtype):
    x, y, _ = make_batch(64, 5, seed=4, scale=2.0)
    xd = x.to(dtype).requires_grad_()
    loss = fgbg.sigmoid_focal_loss(xd, y, reduction="sum")
    loss.backward()
    assert loss.dtype == dtype and xd.grad.dtype == dtype
    # computed in float (half types: from their float32 values) or double
    xr = xd.detach().double().requires_grad_()
    ref = ref_focal(xr, y).sum()
    ref.backward()
    tol = {torch.float16: 2e-3, torch.bfloat16: 1e-2, torch.float32: 1e-5, torch.float64: 1e-12}
    torch.testing.assert_close(loss.double(), ref, rtol=tol[dtype], atol=tol[dtype])
    torch.testing.assert_close(xd.grad.double(), xr.grad, rtol=tol[dtype], atol=tol[dtype])


@pytest.mark.parametrize("ldtype", [torch.int32, torch.int64, torch.int16, torch.uint8])
def test_label_dtypes(ldtype):
    x, y, _ = make_batch(30, 4, seed=1, p_ignore=0.0 if ldtype == torch.uint8 else 0.1)
    ref, _ = _focal_grad(x, y.to(torch.int32))
    got, _ = _focal_grad(x, y.to(ldtype))
    assert torch.equal(ref, got)


def test_int64_labels_out_of_int32_range_are_refused_not_wrapped():
    x, y, _ = make_batch(5, 3, seed=1)
    y = y.clone()
    y[2] = 2**32 + 1  # would wrap to 1, a valid class, if narrowed blindly
    with pytest.raises(ValueError, match="4294967297"):
        fgbg.sigmoid_focal_loss(x, y)


def test_float_labels_are_a_type_error():
    x, y, _ = make_batch(5, 3, seed=1)
    with pytest.raises(TypeError, match="labels"):
        fgbg.sigmoid_focal_loss(x, y.double())


@pytest.mark.parametrize("dtype", [torch.int32, torch.complex64, torch.bool])
def test_bad_logit_dtype_is_a_type_error(dtype):
    with pytest.raises(TypeError, match="float16, bfloat16, float32 or float64"):
        fgbg.sigmoid_focal_loss(torch.zeros(3, 2).to(dtype), torch.zeros(3, dtype=torch.int32))


def test_not_a_tensor():
    with pytest.raises(TypeError):
        fgbg.sigmoid_focal_loss([[0.0]], torch.zeros(1, dtype=torch.int32))


def test_non_cpu_tensor_is_refused_clearly():
    x = torch.empty(4, 3, device="meta")
    with pytest.raises(ValueError, match="fgbg runs on the CPU"):
        fgbg.sigmoid_focal_loss(x, torch.zeros(4, dtype=torch.int32))
    with pytest.raises(ValueError, match="fgbg runs on the CPU"):
        fgbg.sigmoid_focal_loss(torch.zeros(4, 3), torch.zeros(4, dtype=torch.int32,
                                                               device="meta"))


@pytest.mark.parametrize("layout", ["transposed", "column_slice", "row_step", "expanded"])
def test_non_contiguous_inputs(layout):
    x, y, _ = make_batch(40, 6, seed=8)
    if layout == "transposed":
        v = x.t().contiguous().t()
    elif layout == "column_slice":
        v = torch.cat([x, torch.randn(40, 3, dtype=x.dtype)], 1)[:, :6]
    elif layout == "row_step":
        v = torch.stack([x, torch.randn_like(x)], 1).reshape(80, 6)[::2]
    else:
        x = x[:1].expand(40, 6).contiguous()
        v = x[:1].expand(40, 6)
    assert not v.is_contiguous()
    assert torch.equal(v, x)
    a = v.detach().requires_grad_()  # a non-contiguous leaf
    loss = fgbg.sigmoid_focal_loss(a, y, reduction="sum")
    loss.backward()
    ref, rg = _focal_grad(x, y)
    assert torch.equal(loss, ref)
    assert torch.equal(a.grad, rg)


def test_strided_labels_weights_and_quality():
    x, y, q = make_batch(30, 4, seed=9)
    y2 = torch.stack([y, torch.zeros_like(y)], 1)[:, 0]
    w = torch.rand(30, 2, dtype=torch.float64)
    q2 = torch.stack([q, q], 1)[:, 1]
    assert not y2.is_contiguous() and not w[:, 0].is_contiguous()
    a = fgbg.quality_focal_loss(x, y2, q2, weight=w[:, 0], reduction="sum")
    b = fgbg.quality_focal_loss(x, y.contiguous(), q.contiguous(), weight=w[:, 0].contiguous(),
                                reduction="sum")
    assert torch.equal(a, b)


def test_weights_of_another_dtype_are_converted():
    x, y, _ = make_batch(30, 4, seed=9)
    w = torch.rand(30)
    a = fgbg.sigmoid_cross_entropy(x, y, weight=w, reduction="sum")
    b = fgbg.sigmoid_cross_entropy(x, y, weight=w.double(), reduction="sum")
    assert torch.equal(a, b)


def test_fgbg_errors_are_value_errors_with_fgbg_messages():
    x, y, _ = make_batch(10, 3, seed=2)
    bad = y.clone()
    bad[4] = 7
    with pytest.raises(ValueError, match=r"fgbg::SigmoidFocalLoss.*label"):
        fgbg.sigmoid_focal_loss(x, bad)
    with pytest.raises(ValueError, match="gamma"):
        fgbg.sigmoid_focal_loss(x, y, gamma=-1.0)
    with pytest.raises(ValueError, match="weights"):
        fgbg.sigmoid_focal_loss(x, y, weight=torch.ones(9, dtype=torch.float64))
    with pytest.raises(ValueError, match="negative"):
        fgbg.sigmoid_focal_loss(x, y, weight=-torch.ones(10, dtype=torch.float64))
    with pytest.raises(ValueError, match="avg_factor"):
        fgbg.sigmoid_focal_loss(x, y, avg_factor=0.0)
    with pytest.raises(ValueError, match="avg_factor"):
        fgbg.sigmoid_focal_loss(x, y, reduction="sum", avg_factor=2.0)
    with pytest.raises(ValueError, match="target_sum"):
        fgbg.sigmoid_focal_loss(x, y, reduction="target_sum")
    with pytest.raises(ValueError, match="reduction"):
        fgbg.sigmoid_focal_loss(x, y, reduction="average")
    with pytest.raises(ValueError, match="2-D"):
        fgbg.sigmoid_focal_loss(x[0], y[:1])
    with pytest.raises(ValueError, match="quality|\\[0, 1\\]"):
        fgbg.quality_focal_loss(x, y.abs(), torch.full((10,), 2.0, dtype=torch.float64))


def test_non_finite_input_raise_and_propagate():
    x, y, _ = make_batch(10, 3, seed=2)
    x[3, 1] = float("nan")
    a = x.clone().requires_grad_()
    with pytest.raises(fgbg.NonFiniteError, match=r"logits\(3, 1\) is nan"):
        fgbg.sigmoid_focal_loss(a, y)
    assert issubclass(fgbg.NonFiniteError, ValueError)
    assert a.grad is None
    loss = fgbg.sigmoid_focal_loss(a, y, nonfinite="propagate")
    assert torch.isnan(loss)
    loss.backward()
    assert torch.isnan(a.grad).all()


def test_nothing_written_on_error_state_unchanged():
    x, y, _ = make_batch(10, 3, seed=2)
    state = fgbg.efl_state(3)
    fgbg.equalized_focal_loss(x, y, state)
    before = state.clone()
    bad = x.clone()
    bad[0, 0] = float("inf")
    with pytest.raises(fgbg.NonFiniteError):
        fgbg.equalized_focal_loss(bad, y, state)
    assert torch.equal(state, before)
    with pytest.raises(ValueError, match="classes"):
        fgbg.equalized_focal_loss(x[:, :2], y.clamp(max=2), state)
    assert torch.equal(state, before)


def test_softmax_none_is_per_anchor():
    x, y, _ = make_batch(12, 4, seed=3, softmax=True)
    a = x.clone().requires_grad_()
    b = x.clone().requires_grad_()
    got = fgbg.softmax_cross_entropy(a, y, reduction="none")
    exp = ref_softmax_ce(b, y)
    assert got.shape == (12,)
    torch.testing.assert_close(got, exp)
    go = torch.rand(12, dtype=torch.float64)
    got.backward(go)
    exp.backward(go)
    torch.testing.assert_close(a.grad, b.grad)


def test_empty_batch():
    x = torch.zeros(0, 5, requires_grad=True)
    loss = fgbg.sigmoid_focal_loss(x, torch.zeros(0, dtype=torch.int64))
    loss.backward()
    assert float(loss) == 0.0 and x.grad.shape == (0, 5)
