"""Tensors in, views out: the checks and conversions between torch tensors and the extension.

Every array crosses into C++ as a view (address, rows, cols, row stride, column stride) of memory
that the tensor keeps alive during the call; the extension wraps it as an Eigen::Map, so nothing
is copied unless the dtype needs it (weights of another dtype, int64 labels, float16 / bfloat16
logits of the losses that do not take them in C++: AP, RS, aLRP, CARL, the guided loss) or a
stride is 0 (an expanded tensor). float16 / bfloat16 logits of the dense losses, GHM-C, EFL and DR
are read in place as Eigen::half / Eigen::bfloat16 (the same 16-bit layouts as at::Half and
c10::BFloat16) and their gradient is written in that dtype; the loss computes in float.
"""
import math

import torch

try:
    from . import _fgbg
except ImportError as e:  # pragma: no cover - a source checkout without the build
    raise ImportError(
        "fgbg's compiled extension (fgbg._fgbg) is missing: install the package with "
        "`/usr/bin/python3 -m pip install --no-build-isolation ./python` or build it in place with "
        "`cd python && /usr/bin/python3 setup.py build_ext --inplace` (docs/python.md)") from e

NonFiniteError = _fgbg.NonFiniteError

_COMPUTE = {
    torch.float32: torch.float32,
    torch.float64: torch.float64,
    torch.float16: torch.float32,
    torch.bfloat16: torch.float32,
}
_INT32_MIN, _INT32_MAX = -(2**31), 2**31 - 1


def _check_tensor(t, name):
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"fgbg: {name} must be a torch.Tensor, got {type(t).__name__}")
    if t.device.type != "cpu":
        raise ValueError(
            f"fgbg runs on the CPU: {name} is on {t.device}; move it with .cpu() "
            "(fgbg has no CUDA kernels)")


def _reads_in_place(t):
    """Whether every stride of t is usable by an Eigen map (no 0 stride on a dimension > 1)."""
    return all(s > 0 or n <= 1 for s, n in zip(t.stride(), t.shape))


_SUFFIX = {torch.float32: "_f32", torch.float64: "_f64", torch.float16: "_f16",
           torch.bfloat16: "_bf16"}


def suffix_of(dtype):
    """The extension's name suffix for logits stored in `dtype`."""
    return _SUFFIX[dtype]


def wants_grad(t):
    """Whether autograd will ask for the gradient of t (else the value-only path runs)."""
    return torch.is_grad_enabled() and t.requires_grad


def logits_of(x, name="logits", half_in_place=False):
    """(tensor, compute dtype); 2-D, CPU, floating point. The tensor is in the compute dtype, or
    kept in float16 / bfloat16 with half_in_place (the C++ loss reads it as Eigen::half /
    Eigen::bfloat16)."""
    _check_tensor(x, name)
    if x.dtype not in _COMPUTE:
        raise TypeError(
            f"fgbg: {name} must be float16, bfloat16, float32 or float64, got {x.dtype}")
    if x.dim() != 2:
        raise ValueError(f"fgbg: {name} must be 2-D (N x C), got shape {tuple(x.shape)}")
    cd = _COMPUTE[x.dtype]
    x = x.detach()
    if x.dtype != cd and not half_in_place:
        x = x.to(cd)  # a copy: this loss's binding has no half-precision instantiation
    if not _reads_in_place(x):
        x = x.contiguous()
    return x, cd


def labels_of(labels, n, name="labels"):
    """int32 labels of n anchors (fgbg's -1 / 0 / 1..C); int64 is range-checked, then narrowed."""
    _check_tensor(labels, name)
    if labels.dtype not in (torch.int32, torch.int64, torch.int16, torch.int8, torch.uint8):
        raise TypeError(f"fgbg: {name} must be an integer tensor (int32 or int64), got "
                        f"{labels.dtype}")
    if labels.dim() != 1:
        raise ValueError(f"fgbg: {name} must be 1-D (N), got shape {tuple(labels.shape)}")
    if labels.shape[0] != n:
        raise ValueError(f"fgbg: {name} has {labels.shape[0]} entries, the logits {n} rows")
    labels = labels.detach()
    if labels.dtype == torch.int64 and labels.numel() > 0:
        lo, hi = torch.aminmax(labels)
        for v in (int(lo), int(hi)):
            if v < _INT32_MIN or v > _INT32_MAX:
                raise ValueError(
                    f"fgbg: {name} holds {v}; a label must be -1 (ignore), 0 (background) or a "
                    "class 1..C")
    if labels.dtype != torch.int32:
        labels = labels.to(torch.int32)
    if not _reads_in_place(labels):
        labels = labels.contiguous()
    return labels


def float_of(t, dtype, name, dims=(1, 2)):
    """A floating-point tensor in `dtype` (copied only if its dtype differs)."""
    _check_tensor(t, name)
    if not t.is_floating_point():
        raise TypeError(f"fgbg: {name} must be a floating-point tensor, got {t.dtype}")
    if t.dim() not in dims:
        raise ValueError(f"fgbg: {name} must have {' or '.join(map(str, dims))} dimensions, got "
                         f"shape {tuple(t.shape)}")
    t = t.detach()
    if t.dtype != dtype:
        t = t.to(dtype)
    if not _reads_in_place(t):
        t = t.contiguous()
    return t


def view(t):
    """(address, rows, cols, row stride, column stride) in elements; a vector is rows x 1."""
    if t.dim() == 1:
        return (t.data_ptr(), t.shape[0], 1, t.stride(0) if t.shape[0] > 1 else 1, 1)
    return (t.data_ptr(), t.shape[0], t.shape[1], t.stride(0), t.stride(1))


def vector_view(t):
    return (t.data_ptr(), t.shape[0], 1, t.stride(0) if t.shape[0] > 1 else 1, 1)


# Normaliser kinds of the extension.
SUM, MEAN, AVG_FACTOR, NUM_POSITIVES, TARGET_SUM = 0, 1, 2, 3, 4
_REDUCTIONS = {"sum": SUM, "mean": MEAN, "num_positives": NUM_POSITIVES, "target_sum": TARGET_SUM}


def normalizer_of(reduction, avg_factor):
    """(kind, factor, per-element output?) for a reduction and an optional avg_factor.

    'none' computes with the sum normaliser and returns the unnormalised per-element losses
    (avg_factor is ignored then, as in mmdetection); avg_factor with 'mean' divides by exactly
    avg_factor; avg_factor with any other reduction is an error.
    """
    if reduction == "none":
        return SUM, 1.0, True
    if reduction not in _REDUCTIONS:
        raise ValueError(f"fgbg: reduction must be one of 'none', 'mean', 'sum', "
                         f"'num_positives', 'target_sum', got {reduction!r}")
    if avg_factor is not None:
        if reduction != "mean":
            raise ValueError(f"fgbg: avg_factor can only be used with reduction='mean', not "
                             f"{reduction!r}")
        if isinstance(avg_factor, torch.Tensor):
            avg_factor = float(avg_factor.detach().cpu())
        avg_factor = float(avg_factor)
        return AVG_FACTOR, avg_factor, False
    return _REDUCTIONS[reduction], 1.0, False


def check_nonfinite(policy):
    if policy not in ("raise", "propagate"):
        raise ValueError(f"fgbg: nonfinite must be 'raise' or 'propagate', got {policy!r}")


class FusedLoss(torch.autograd.Function):
    """One fused pass: forward runs value_and_grad once and keeps the gradient; backward scales
    it by grad_output (times `scale`, the loss weight). Gradients of every other input: None.

    `run(logits)` returns (output, grad): output a 0-d tensor (reduced) or the per-element (N x C)
    or per-anchor (N) losses, grad N x C (in the logits' dtype, or float32 for a copied half).

    `loss.backward()` (a 0-d grad_output of exactly 1, loss weight 1) hands the stored gradient
    to autograd as it is: no multiplication and, since the Function drops its own reference, no
    copy by autograd's accumulation. `rerun=True` lets a second backward of a retained graph
    recompute that gradient with `run` (bit-identical: fgbg is deterministic); a stateful loss's
    `run` then starts again from the state as it was before the call and stores nothing, so the
    state advances once. Without rerun the Function keeps its gradient (and multiplies it).
    """

    @staticmethod
    def forward(ctx, logits, run, scale, rerun=False):
        out, grad = run(logits)
        ctx.grad = grad
        ctx.scale = scale
        ctx.run = run if rerun else None
        if rerun:
            ctx.save_for_backward(logits)  # a rerun then sees autograd's in-place check
        ctx.per_anchor = out.dim() == 1
        if scale != 1.0:
            out = out * scale
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_output):
        g = ctx.grad
        if g is None:  # a retained graph's second backward: the buffer was handed out
            ctx.saved_tensors  # raises if the logits were modified in place since forward
            _, g = ctx.run(None)
        scale = ctx.scale
        if grad_output.dim() == 0:
            if scale == 1.0 and ctx.run is not None and float(grad_output) == 1.0:
                ctx.grad = None
                return g, None, None, None
            factor = grad_output * scale if scale != 1.0 else grad_output
            return g * factor.to(g.dtype), None, None, None
        if ctx.per_anchor:
            grad_output = grad_output.unsqueeze(1)
        r = g * grad_output.to(g.dtype)
        if scale != 1.0:
            r = r * scale
        return r, None, None, None


def dense_call(fn_name, logits, labels, *, weight, reduction, avg_factor, extra=(),
               per_anchor=False, nonfinite="raise", scale=1.0, inputs=(), input_dims=1):
    """Differentiable call of a dense loss of the extension.

    `fn_name` names the binding (without _f32 / _f64 / _f16 / _bf16); `inputs` are tensors
    converted to the compute dtype and passed as views before the other arguments (`extra`, plain
    numbers). `per_anchor`: the loss gives one loss per anchor (softmax heads), so 'none' returns
    N values. float16 / bfloat16 logits are read in place and get a gradient of their dtype.
    Under torch.no_grad() or for logits that do not require grad, the C++ value() runs: no
    gradient is computed or allocated.
    """
    check_nonfinite(nonfinite)
    x_in = logits
    x, cd = logits_of(logits, half_in_place=True)
    n, c = x.shape
    y = labels_of(labels, n)
    w = None if weight is None else float_of(weight, cd, "weight")
    ins = [float_of(t, cd, nm, dims=(input_dims,)) for nm, t in inputs]
    kind, factor, per_elem = normalizer_of(reduction, avg_factor)
    fn = getattr(_fgbg, fn_name + suffix_of(x.dtype))
    out_dtype = x_in.dtype
    need_grad = wants_grad(x_in)

    def run(_):
        grad = torch.empty((n, c), dtype=x.dtype) if need_grad else None
        losses = None
        lk = 0
        if per_elem:
            losses = torch.empty((n,) if per_anchor else (n, c), dtype=cd)
            lk = 2 if per_anchor else 1
        args = _fgbg.DenseArgs(view(x), vector_view(y), None if grad is None else view(grad),
                               None if w is None else view(w), kind, factor, lk,
                               None if losses is None else view(losses))
        try:
            v = fn(args, *[view(t) for t in ins], *extra)
        except NonFiniteError:
            if nonfinite == "raise":
                raise
            if grad is not None:
                grad.fill_(math.nan)
            if losses is not None:
                losses.fill_(math.nan)
            v = math.nan
        out = losses if per_elem else torch.tensor(v, dtype=cd)
        return out.to(out_dtype), grad

    if not need_grad:
        out, _ = run(None)
        return out * scale if scale != 1.0 else out
    return FusedLoss.apply(x_in, run, float(scale), True)
