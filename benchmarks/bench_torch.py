#!/usr/bin/python3
"""fgbg from Python against what PyTorch users run today: one thread, N x 80 float32 logits,
forward + backward, minimum over repeats. Prints milliseconds per call and the speed-up of fgbg,
and checks that both sides give the same value (and gradient).

    /usr/bin/python3 benchmarks/bench_torch.py [--n 100000] [--repeat 7]

Uses the package built in python/ (setup.py build_ext --inplace) or the installed one.
"""
import argparse
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python"))

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


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--c", type=int, default=80)
    ap.add_argument("--repeat", type=int, default=7)
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
    if not ok:
        sys.exit("bench_torch: fgbg and the PyTorch yardstick disagree")


if __name__ == "__main__":
    main()
