"""300 steps of SGD on a tiny dense head: the fgbg focal loss falls, and its curve tracks
torchvision's sigmoid_focal_loss driving the same head from the same start."""
import torch

import fgbg
from helpers import one_hot


def _train(loss_fn, steps=300):
    g = torch.Generator().manual_seed(0)
    n, d, c = 512, 16, 8
    feats = torch.randn(n, d, generator=g)
    teacher = torch.randn(d, c + 1, generator=g) * 2
    labels = (feats @ teacher).argmax(1)  # 0 = background
    labels[(torch.rand(n, generator=g) < 0.6)] = 0  # mostly background, as in detection
    head = torch.nn.Linear(d, c)
    with torch.no_grad():
        head.weight.copy_(torch.randn(c, d, generator=g) * 0.01)
        head.bias.fill_(-4.6)  # prior probability 0.01
    opt = torch.optim.SGD(head.parameters(), lr=0.5, momentum=0.9)
    curve = []
    for _ in range(steps):
        opt.zero_grad()
        loss = loss_fn(head(feats), labels)
        loss.backward()
        opt.step()
        curve.append(float(loss))
    return curve


def test_focal_training_loss_falls_and_tracks_torchvision():
    import torchvision

    npos = None

    def ours(x, y):
        return fgbg.sigmoid_focal_loss(x, y, reduction="num_positives")

    def theirs(x, y):
        nonlocal npos
        npos = max(1, int((y > 0).sum()))
        return torchvision.ops.sigmoid_focal_loss(x, one_hot(y, x.shape[1], x.dtype),
                                                  reduction="sum") / npos

    a = _train(ours)
    b = _train(theirs)
    assert a[-1] < 0.35 * a[0], (a[0], a[-1])
    assert max(abs(u - v) / max(abs(v), 1e-12) for u, v in zip(a, b)) < 1e-4
