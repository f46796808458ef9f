#!/usr/bin/python3
"""Reference vectors for fgbg::SoftTargetCrossEntropyLoss (tests/data/soft_target_bce.json).

The loss of ultralytics' v8DetectionLoss classification term, evaluated with torch in float64:
binary_cross_entropy_with_logits(x, T, reduction='none') with T one-hot at the label column of a
positive anchor scaled by its soft target (0 elsewhere), ignored rows (label -1) masked out, the
sum divided by the normaliser ("target_sum" = max(T.sum(), 1) as ultralytics, "sum", "mean" over
the non-ignored elements, or a number), the gradient by autograd.

Run with Debian's python3-torch: /usr/bin/python3 scripts/reference/soft_target_bce.py
"""
import json
import sys

import torch


def case(name, x, labels, targets, normalization):
    n, c = x.shape
    x = x.clone().double().requires_grad_(True)
    t = torch.zeros(n, c, dtype=torch.float64)
    valid = torch.zeros(n, c, dtype=torch.float64)
    for i in range(n):
        if labels[i] >= 0:
            valid[i] = 1
        if labels[i] > 0:
            t[i, labels[i] - 1] = targets[i]
    per = torch.nn.functional.binary_cross_entropy_with_logits(x, t, reduction="none") * valid
    if normalization == "target_sum":
        a = max(float(t.sum()), 1.0)
    elif normalization == "sum":
        a = 1.0
    elif normalization == "mean":
        a = max(float(valid.sum()), 1.0)
    else:
        a = float(normalization)
    loss = per.sum() / a
    loss.backward()
    return {
        "name": name,
        "num_anchors": n,
        "num_classes": c,
        "logits": x.detach().tolist(),
        "labels": [int(v) for v in labels],
        "targets": [float(v) for v in targets],
        "normalization": normalization,
        "expected": {"loss": float(loss), "grad": x.grad.tolist(),
                     "per_element": per.detach().tolist()},
    }


def random_case(name, n, c, seed, normalization, scale=3.0, extreme=False):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, c, generator=g, dtype=torch.float64) * scale - 1.0
    if extreme:
        x[0::3] *= 10.0
    u = torch.rand(n, generator=g, dtype=torch.float64)
    labels = []
    for i in range(n):
        if u[i] < 0.3:
            labels.append(1 + int(torch.randint(c, (1,), generator=g)))
        elif u[i] < 0.4:
            labels.append(-1)
        else:
            labels.append(0)
    targets = torch.rand(n, generator=g, dtype=torch.float64)
    # Targets near σ(x) at the label column (well-trained positives) and the ends 0 and 1.
    for i in range(0, n, 5):
        if labels[i] > 0:
            targets[i] = torch.sigmoid(x[i, labels[i] - 1])
    for i in range(1, n, 7):
        targets[i] = 1.0
    for i in range(2, n, 11):
        targets[i] = 0.0
    return case(name, x, labels, [float(v) for v in targets], normalization)


def main():
    cases = [
        case("single_positive", torch.tensor([[0.3, -1.2]]), [2], [0.7], "target_sum"),
        case("one_hot_equals_bce", torch.tensor([[0.3, -1.2], [2.0, 0.5]]), [2, 1], [1.0, 1.0],
             "sum"),
        case("tiny_target_sum", torch.tensor([[0.3, -1.2], [-4.0, 0.1]]), [1, 0], [0.01, 0.0],
             "target_sum"),
        random_case("random_N40_C5_target_sum", 40, 5, 1, "target_sum"),
        random_case("random_N60_C3_mean", 60, 3, 2, "mean"),
        random_case("random_N50_C4_avg", 50, 4, 3, 7.5),
        random_case("extreme_N30_C3", 30, 3, 4, "target_sum", extreme=True),
        case("no_positives", torch.tensor([[0.3, -1.2], [2.0, 0.5]]), [0, -1], [0.5, 0.5],
             "target_sum"),
        case("empty", torch.zeros(0, 3), [], [], "target_sum"),
    ]
    out = {
        "method": "soft-target sigmoid BCE (ultralytics v8DetectionLoss classification term)",
        "reference": "torch %s binary_cross_entropy_with_logits, float64, autograd" % torch.__version__,
        "cases": cases,
    }
    json.dump(out, sys.stdout, indent=None)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
