#!/usr/bin/python3
"""Reference vectors for fgbg::DenseTargetFocalLoss and DenseTargetCrossEntropyLoss
(tests/data/dense_target_focal.json).

torchvision.ops.sigmoid_focal_loss(x, T, alpha, gamma, reduction='none') and
torch.nn.functional.binary_cross_entropy_with_logits(x, T, reduction='none'), evaluated in
float64, with N x C float targets T (one-hot, soft, mixed). Rows labelled -1 are masked out, the
sum is divided by the normaliser ("num_positives" = max(1, #rows labelled >= 1), "sum", "mean"
over the non-ignored elements, "target_sum" = max(1, sum of T over the non-ignored rows), or a
number); the gradient is autograd's. Every per-element loss and gradient is re-evaluated with
40-digit arithmetic (mpmath) from the formulas of dense_target_focal_loss.hpp and must agree to
1e-13 x max(1, |value|).

Run with Debian's python3-torch: /usr/bin/python3 scripts/reference/dense_target_focal.py
"""
import json
import sys

import mpmath
import torch
import torchvision

mpmath.mp.dps = 40


def exact(x, t, alpha, gamma, focal):
    """Per-element loss and derivative in 40 digits."""
    x, t = mpmath.mpf(x), mpmath.mpf(t)
    s = 1 / (1 + mpmath.exp(-x))
    sn = 1 - s
    ce = (1 - t) * mpmath.log1p(mpmath.exp(x)) + t * mpmath.log1p(mpmath.exp(-x))
    if not focal:
        return ce, s - t
    a = 1 if alpha < 0 else alpha * t + (1 - alpha) * (1 - t)
    q = (1 - t) * s + t * sn
    mod = q ** gamma if gamma != 0 else mpmath.mpf(1)
    dmod = 0 if gamma == 0 or q == 0 else gamma * q ** (gamma - 1) * s * sn * (1 - 2 * t)
    return a * ce * mod, a * ((s - t) * mod + ce * dmod)


def case(name, x, labels, t, normalization, alpha=0.25, gamma=2.0, focal=True):
    n, c = x.shape
    x = x.clone().double().requires_grad_(True)
    t = t.clone().double()
    valid = torch.tensor([[1.0 if l >= 0 else 0.0] for l in labels], dtype=torch.float64)
    valid = valid.expand(n, c) if n else torch.zeros(0, c, dtype=torch.float64)
    if focal:
        per = torchvision.ops.sigmoid_focal_loss(x, t, alpha=alpha, gamma=gamma, reduction="none")
    else:
        per = torch.nn.functional.binary_cross_entropy_with_logits(x, t, reduction="none")
    per = per * valid
    if normalization == "num_positives":
        a = max(float(sum(1 for l in labels if l > 0)), 1.0)
    elif normalization == "sum":
        a = 1.0
    elif normalization == "mean":
        a = max(float(valid.sum()), 1.0)
    elif normalization == "target_sum":
        a = max(float((t * valid).sum()), 1.0)
    else:
        a = float(normalization)
    loss = per.sum() / a
    loss.backward()
    grad = x.grad if x.grad is not None else torch.zeros_like(x)
    for i in range(n):
        if labels[i] < 0:
            continue
        for j in range(c):
            el, eg = exact(float(x[i, j]), float(t[i, j]), alpha, gamma, focal)
            for got, want in ((float(per[i, j]), el), (float(grad[i, j]) * a, eg)):
                if abs(got - float(want)) > 1e-13 * max(1.0, abs(float(want))):
                    raise SystemExit("%s: (%d, %d) torch %r, 40 digits %r" % (name, i, j, got,
                                                                              float(want)))
    return {
        "name": name,
        "num_anchors": n,
        "num_classes": c,
        "logits": x.detach().tolist(),
        "labels": [int(v) for v in labels],
        "targets": t.tolist(),
        "loss": "focal" if focal else "bce",
        "alpha": alpha,
        "gamma": gamma,
        "normalization": normalization,
        "expected": {"loss": float(loss), "grad": grad.tolist(),
                     "per_element": per.detach().tolist()},
    }


def random_case(name, n, c, seed, normalization, scale=3.0, extreme=False, **kw):
    g = torch.Generator().manual_seed(seed)
    x = torch.round((torch.randn(n, c, generator=g, dtype=torch.float64) * scale - 1.0) * 1e4) / 1e4
    if extreme:
        x[0::3] *= 8.0
    u = torch.rand(n, generator=g, dtype=torch.float64)
    labels, t = [], torch.zeros(n, c, dtype=torch.float64)
    for i in range(n):
        if u[i] < 0.3:
            k = int(torch.randint(c, (1,), generator=g))
            labels.append(1 + k)
            t[i, k] = 1.0 if i % 3 == 0 else float(torch.rand(1, generator=g))
        elif u[i] < 0.4:
            labels.append(-1)
            t[i] = torch.rand(c, generator=g)  # ignored: read, checked, masked
        else:
            labels.append(0)
            if i % 4 == 1:  # soft background (label smoothing, distillation)
                t[i] = torch.rand(c, generator=g) * 0.2
    # Targets equal to σ(x) (σ(x) − t cancels in the plain difference).
    for i in range(0, n, 5):
        t[i, 0] = torch.sigmoid(x[i, 0])
    t = torch.round(t * 1e6) / 1e6
    return case(name, x, labels, t, normalization, **kw)


def main():
    one_hot = torch.tensor([[0.0, 1.0], [1.0, 0.0], [0.0, 0.0]])
    x3 = torch.tensor([[0.3, -1.2], [2.0, 0.5], [-0.7, 1.1]])
    cases = [
        case("one_hot_num_positives", x3, [2, 1, 0], one_hot, "num_positives"),
        case("soft_single", torch.tensor([[0.3, -1.2]]), [0], torch.tensor([[0.25, 0.6]]), "sum"),
        random_case("random_N40_C5_num_positives", 40, 5, 1, "num_positives"),
        random_case("random_N60_C3_mean_gamma_half", 60, 3, 2, "mean", gamma=0.5),
        random_case("random_N50_C4_avg_alpha_off", 50, 4, 3, 7.5, alpha=-1.0, gamma=1.0),
        random_case("random_N30_C6_gamma_3p5", 30, 6, 4, "sum", alpha=0.75, gamma=3.5),
        random_case("random_N40_C4_gamma0", 40, 4, 5, "num_positives", gamma=0.0),
        random_case("extreme_N30_C3", 30, 3, 6, "num_positives", extreme=True),
        random_case("bce_N40_C5_mean", 40, 5, 7, "mean", focal=False),
        random_case("bce_N50_C4_target_sum", 50, 4, 8, "target_sum", focal=False),
        random_case("bce_extreme_N30_C3", 30, 3, 9, "sum", extreme=True, focal=False),
        case("no_positives", x3, [0, -1, 0], torch.zeros(3, 2), "num_positives"),
        case("empty", torch.zeros(0, 3), [], torch.zeros(0, 3), "num_positives"),
    ]
    out = {
        "method": "sigmoid focal loss and BCE with N x C float targets",
        "reference": "torchvision %s ops.sigmoid_focal_loss and torch %s "
                     "binary_cross_entropy_with_logits, float64, autograd; every element "
                     "re-evaluated in 40 digits" % (torchvision.__version__, torch.__version__),
        "cases": cases,
    }
    json.dump(out, sys.stdout, indent=None)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
