"""ISR-N (PISA's Score-HLR sampler) on tensors against a brute-force Python implementation of its
rules: NMS matching, the hierarchical local rank, the weights and the loss-preserving ratio."""
import math

import pytest
import torch

import fgbg


def _iou(a, b):
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = max((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter, 1e-6)
    return inter / union


def ref_negatives(labels, logits, boxes, n_prime, k, bias, thr, iou_thr):
    """(ranked negatives in order, their weights before the ratio, U, per-candidate loss)."""
    p = torch.softmax(logits.double(), 1)
    neg = [i for i, v in enumerate(labels.tolist()) if v == 0]
    s = {j: float(p[j, 1:].max()) for j in neg}
    a = {j: int(p[j, 1:].argmax()) + 1 for j in neg}
    loss = {j: -math.log(float(p[j, 0])) for j in neg}
    valid = [j for j in neg if s[j] > thr]

    def box(j):
        b = boxes[j].tolist()
        return b if len(b) == 4 else b[4 * (a[j] - 1):4 * a[j]]

    order = sorted(valid, key=lambda j: (-s[j], j))
    rho, suppressed = {}, set()
    for idx, i in enumerate(order):
        if i in suppressed:
            continue
        rho[i] = 0
        r = 1
        for j in order[idx + 1:]:
            if j not in suppressed and _iou(box(i), box(j)) >= iou_thr:
                suppressed.add(j)
                rho[j] = r
                r += 1
    ranked = sorted(valid, key=lambda j: (rho[j], -s[j], j))[:min(len(valid), n_prime)]
    u = max(n_prime, len(valid))
    w = [(bias + (1 - bias) * (u - j) / u) ** k for j in range(len(ranked))]
    w_rand = (bias + (1 - bias) * (u - len(ranked) + 1) / u) ** k
    return ranked, w, w_rand, loss


def _image(seed, n=120, c=3, class_specific=False):
    g = torch.Generator().manual_seed(seed)
    labels = torch.zeros(n, dtype=torch.int64)
    labels[torch.randperm(n, generator=g)[:10]] = 1
    labels[torch.randperm(n, generator=g)[:5]] = -1
    logits = torch.randn(n, c + 1, generator=g, dtype=torch.float64) * 2
    logits[:, 0] += 1.0
    xy = torch.rand(n, 2, generator=g, dtype=torch.float64) * 60
    wh = torch.rand(n, 2, generator=g, dtype=torch.float64) * 30 + 5
    b = torch.cat([xy, xy + wh], 1)
    if class_specific:
        b = torch.cat([b + 3 * torch.rand(n, 4, generator=g, dtype=torch.float64) for _ in range(c)],
                      1)
    return labels, logits, b


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("class_specific", [False, True])
@pytest.mark.parametrize("num", [40, 400])
def test_score_hlr_against_python(seed, class_specific, num):
    labels, logits, boxes = _image(seed, class_specific=class_specific)
    k, bias, thr, iou_thr = 0.5, 0.1, 0.05, 0.5
    pos, neg, w, info = fgbg.score_hlr_sample(labels, logits, boxes, num, 0.25, k=k, bias=bias,
                                              score_thr=thr, iou_thr=iou_thr, seed=seed)
    n_pos = int((labels > 0).sum())
    assert pos.numel() == min(n_pos, num // 4) and all(int(labels[i]) > 0 for i in pos)
    n_neg = int((labels == 0).sum())
    n_prime = min(n_neg, num - pos.numel())
    ranked, wr, w_rand, loss = ref_negatives(labels, logits, boxes, n_prime, k, bias, thr,
                                             iou_thr)
    assert neg.numel() == n_prime
    assert neg[:len(ranked)].tolist() == ranked
    rand = neg[len(ranked):].tolist()
    assert rand == sorted(rand) and all(int(labels[i]) == 0 and i not in ranked for i in rand)
    raw = wr + [w_rand] * len(rand)
    sel = ranked + rand
    ratio = sum(loss[j] for j in sel) / sum(loss[j] * v for j, v in zip(sel, raw))
    torch.testing.assert_close(w, torch.tensor(raw, dtype=torch.float64) * ratio, rtol=1e-12,
                               atol=0)
    assert info["ranked"] == len(ranked) and info["random"] == len(rand)
    assert info["ratio"] == pytest.approx(ratio, rel=1e-12)
    om = fgbg.sample_weights(labels.numel(), pos, neg, dtype=torch.float64, negative_weights=w)
    assert torch.equal(om[neg], w) and bool((om[pos] == 1).all())


def test_score_hlr_seeded_and_errors():
    labels, logits, boxes = _image(9)
    a = fgbg.score_hlr_sample(labels, logits, boxes, 64, seed=3)
    b = fgbg.score_hlr_sample(labels, logits, boxes, 64, seed=3)
    assert all(torch.equal(x, y) for x, y in zip(a[:3], b[:3]))
    with pytest.raises(ValueError, match="boxes must be"):
        fgbg.score_hlr_sample(labels, logits, boxes[:, :3])
    with pytest.raises(ValueError, match="score_thr"):
        fgbg.score_hlr_sample(labels, logits, boxes, score_thr=1.0)
    bad = logits.clone()
    bad[int((labels == 0).nonzero()[0]), 1] = math.nan
    with pytest.raises(fgbg.NonFiniteError):
        fgbg.score_hlr_sample(labels, bad, boxes)
