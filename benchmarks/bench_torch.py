#!/usr/bin/python3
"""fgbg from Python against what PyTorch users run today: one thread, N x 80 float32 logits,
forward + backward, minimum over repeats. Prints milliseconds per call and the speed-up of fgbg,
and checks that both sides give the same value (and gradient).

    /usr/bin/python3 benchmarks/bench_torch.py [--n 100000] [--repeat 7]

Uses the package of FGBG_PY_PATH when set (e.g. build/py/python/lib, the CMake build), else the
one built in python/ (setup.py build_ext --inplace) or the installed one.
"""
import argparse
import os
import sys
import time

sys.path.insert(0, os.environ.get("FGBG_PY_PATH") or
                os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python"))

import torch  # noqa: E402
import torch.nn.functional as TF  # noqa: E402
import torchvision  # noqa: E402

import fgbg  # noqa: E402


def bench(fn, x, repeat):
    """Minimum wall time of forward + backward of fn(x) (x a leaf), and the last value, grad."""
    best = float("inf")
    for _ in range(repeat):
        x.grad = None
        t0 = time.perf_counter()
        v = fn(x)
        v.backward()
        best = min(best, time.perf_counter() - t0)
    return best, v.detach(), x.grad.clone()


def ghmc_torch(x, t, valid, bins=10):
    """GHM-C written the mmdetection way: per-bin masks over the detached gradient norm, then a
    weighted binary_cross_entropy_with_logits (momentum 0, the class default)."""
    edges = torch.arange(bins + 1, dtype=torch.float32) / bins
    edges[-1] += 1e-6
    weights = torch.zeros_like(x)
    g = torch.abs(x.sigmoid().detach() - t)
    tot = max(valid.float().sum().item(), 1.0)
    n = 0
    for i in range(bins):
        inds = (g >= edges[i]) & (g < edges[i + 1]) & valid
        num_in_bin = inds.sum().item()
        if num_in_bin > 0:
            weights[inds] = tot / num_in_bin
            n += 1
    if n > 0:
        weights = weights / n
    return TF.binary_cross_entropy_with_logits(x, t, weights, reduction="sum") / tot


def rank_sort_torch(logits, targets, delta=0.5, eps=1e-10):
    """Rank & Sort loss and its update written the way the authors' code is: a Python loop over
    the positives, each step vectorised over the positives and the negatives above the lowest
    positive's reach. logits, targets: flat (the IoU at each positive entry, 0 at negatives)."""
    grads = torch.zeros_like(logits)
    fg = targets > 0
    fg_logits, fg_targets = logits[fg], targets[fg]
    fg_num = fg_logits.numel()
    threshold = fg_logits.min() - delta
    bg = (targets == 0) & (logits >= threshold)
    bg_logits = logits[bg]
    bg_grad = torch.zeros_like(bg_logits)
    fg_grad = torch.zeros_like(fg_logits)
    rank_err = torch.zeros_like(fg_logits)
    sort_err = torch.zeros_like(fg_logits)
    for i in range(fg_num):
        fg_rel = torch.clamp((fg_logits - fg_logits[i]) / (2 * delta) + 0.5, 0, 1)
        bg_rel = torch.clamp((bg_logits - fg_logits[i]) / (2 * delta) + 0.5, 0, 1)
        rank_pos = fg_rel.sum()
        fp_num = bg_rel.sum()
        rank_err[i] = fp_num / (rank_pos + fp_num)
        current = (fg_rel * (1 - fg_targets)).sum() / rank_pos
        above = fg_targets >= fg_targets[i]
        sorted_rel = above * fg_rel
        target = (sorted_rel * (1 - fg_targets)).sum() / sorted_rel.sum()
        sort_err[i] = current - target
        if fp_num > eps:
            fg_grad[i] -= rank_err[i]
            bg_grad += bg_rel * (rank_err[i] / fp_num)
        missorted = (~above) * fg_rel
        denom = missorted.sum()
        if denom > eps:
            fg_grad[i] -= sort_err[i]
            fg_grad += missorted * (sort_err[i] / denom)
    grads[fg] = fg_grad / fg_num
    grads[bg] = bg_grad / fg_num
    return rank_err.mean(), sort_err.mean(), grads


def bench_rank_sort(n, c, positives, repeat):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(n, c, generator=g)
    labels = torch.zeros(n, dtype=torch.int32)
    pos = torch.randperm(n, generator=g)[:positives]
    labels[pos] = torch.randint(1, c + 1, (positives,), generator=g, dtype=torch.int32)
    iou = torch.rand(n, generator=g) * 0.9 + 0.1
    dense = torch.zeros(n, c)
    dense[pos, labels[pos].long() - 1] = iou[pos]
    a = x.clone().requires_grad_()
    best = float("inf")
    for _ in range(repeat):
        a.grad = None
        t0 = time.perf_counter()
        rank, sort = fgbg.rank_sort_loss(a, labels, iou)
        (rank + sort).backward()
        best = min(best, time.perf_counter() - t0)
    t0 = time.perf_counter()
    r2, s2, g2 = rank_sort_torch(x.flatten(), dense.flatten())
    tt = time.perf_counter() - t0
    rel = abs(float(rank + sort) - float(r2 + s2)) / abs(float(r2 + s2))
    gd = float((a.grad.flatten() - g2).abs().max())
    same = rel < 1e-4 and gd <= 1e-4 * float(g2.abs().max())
    return best, tt, rel, gd, same


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--c", type=int, default=80)
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--rs-positives", default="100,1000",
                    help="Rank & Sort loss: comma-separated numbers of positives ('' skips)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    n, c = args.n, args.c
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(n, c, generator=g) - 4.6  # logits around the prior bias (p = 0.01)
    labels = torch.zeros(n, dtype=torch.int64)
    pos = torch.randperm(n, generator=g)[: n // 100]  # 1% positive anchors
    labels[pos] = torch.randint(1, c + 1, (pos.numel(),), generator=g)
    onehot = torch.zeros(n, c)
    onehot[pos, labels[pos] - 1] = 1.0
    labels32 = labels.to(torch.int32)
    valid = torch.ones(n, c, dtype=torch.bool)
    xs = torch.cat([torch.zeros(n, 1), x0], 1)  # softmax logits, column 0 background

    cases = [
        ("sigmoid focal loss", "torchvision.ops.sigmoid_focal_loss", x0,
         lambda x: fgbg.sigmoid_focal_loss(x, labels32, reduction="sum"),
         lambda x: torchvision.ops.sigmoid_focal_loss(x, onehot, reduction="sum")),
        ("BCE with logits", "F.binary_cross_entropy_with_logits", x0,
         lambda x: fgbg.sigmoid_cross_entropy(x, labels32, reduction="mean"),
         lambda x: TF.binary_cross_entropy_with_logits(x, onehot)),
        ("softmax cross-entropy (81 columns)", "F.cross_entropy", xs,
         lambda x: fgbg.softmax_cross_entropy(x, labels32, reduction="mean"),
         lambda x: TF.cross_entropy(x, labels)),
        ("GHM-C (10 bins)", "torch GHM-C, mmdetection's way", x0,
         lambda x: fgbg.ghmc_loss(x, labels32, bins=10),
         lambda x: ghmc_torch(x, onehot, valid)),
    ]
    print(f"fgbg vs PyTorch {torch.__version__} / torchvision {torchvision.__version__}: "
          f"{n} x {c} float32, 1 thread, forward + backward, min of {args.repeat}")
    print(f"{'loss':36s} {'fgbg ms':>9s} {'torch ms':>9s} {'speed-up':>9s}  {'value rel. diff':>15s}"
          f"  {'grad max abs diff':>17s}  yardstick")
    ok = True
    for name, yard, x, ours, theirs in cases:
        a = x.clone().requires_grad_()
        b = x.clone().requires_grad_()
        ta, va, ga = bench(ours, a, args.repeat)
        tb, vb, gb = bench(theirs, b, max(3, args.repeat // 2))
        rel = abs(float(va) - float(vb)) / max(abs(float(vb)), 1e-30)
        gd = float((ga - gb).abs().max())
        gs = float(gb.abs().max())
        same = rel < 1e-4 and gd <= 1e-4 * max(gs, 1e-30) + 1e-9
        ok &= same
        print(f"{name:36s} {ta * 1e3:9.2f} {tb * 1e3:9.2f} {tb / ta:8.1f}x  {rel:15.2e}  {gd:17.2e}"
              f"  {yard}{'' if same else '  VALUES DIFFER'}")
    for p in [int(v) for v in args.rs_positives.split(",") if v]:
        ta, tb, rel, gd, same = bench_rank_sort(n, c, p, args.repeat)
        ok &= same
        print(f"{'Rank & Sort loss, ' + str(p) + ' positives':36s} {ta * 1e3:9.2f} {tb * 1e3:9.2f} "
              f"{tb / ta:8.1f}x  {rel:15.2e}  {gd:17.2e}  torch RS, the authors' loop (run once)"
              f"{'' if same else '  VALUES DIFFER'}")
    if not ok:
        sys.exit("bench_torch: fgbg and the PyTorch yardstick disagree")


if __name__ == "__main__":
    main()
