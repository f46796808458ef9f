"""The assigner and samplers on tensors, against plain PyTorch versions of their rules."""
import pytest
import torch
import torchvision

import fgbg


def _boxes(n, g, seed):
    gen = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=gen, dtype=torch.float64) * 100
    wh = torch.rand(n, 2, generator=gen, dtype=torch.float64) * 30 + 5
    gxy = torch.rand(g, 2, generator=gen, dtype=torch.float64) * 100
    gwh = torch.rand(g, 2, generator=gen, dtype=torch.float64) * 30 + 5
    return torch.cat([xy, xy + wh], 1), torch.cat([gxy, gxy + gwh], 1)


def assign_torch(boxes, gts, gt_labels, pos_thr, neg_thr, min_pos):
    """mmdetection's MaxIoUAssigner rules (match_low_quality, gt_max_assign_all) in torch."""
    iou = torchvision.ops.box_iou(boxes, gts)  # N x G
    max_iou, arg = iou.max(1)
    labels = torch.full((boxes.shape[0],), -1, dtype=torch.int32)
    gt = torch.full((boxes.shape[0],), -1, dtype=torch.int32)
    labels[(max_iou >= 0) & (max_iou < neg_thr)] = 0
    pos = max_iou >= pos_thr
    labels[pos] = gt_labels[arg[pos]].to(torch.int32)
    gt[pos] = arg[pos].to(torch.int32)
    gt_best = iou.max(0).values
    for g in range(gts.shape[0]):
        if gt_best[g] >= min_pos:
            hit = iou[:, g] == gt_best[g]
            labels[hit] = int(gt_labels[g])
            gt[hit] = g
    return labels, gt, max_iou


@pytest.mark.parametrize("preset,thr", [("retinanet", (0.5, 0.4, 0.0)), ("rpn", (0.7, 0.3, 0.3))])
def test_max_iou_assign(preset, thr):
    boxes, gts = _boxes(500, 6, seed=1)
    gl = torch.tensor([1, 3, 2, 2, 5, 1])
    lab, gt, iou = fgbg.max_iou_assign(boxes, gts, gl, preset=preset)
    el, eg, ei = assign_torch(boxes, gts, gl, *thr)
    torch.testing.assert_close(iou, ei)
    assert torch.equal(lab, el) and torch.equal(gt, eg)
    assert lab.dtype == torch.int32 and iou.dtype == torch.float64
    lab32, _, _ = fgbg.max_iou_assign(boxes.float(), gts.float(), gl, preset=preset)
    assert (lab32 != lab).sum() <= 2  # float IoUs may flip a threshold tie


def test_max_iou_assign_errors():
    boxes, gts = _boxes(10, 2, seed=1)
    with pytest.raises(ValueError, match="foreground class"):
        fgbg.max_iou_assign(boxes, gts, torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="4 columns"):
        fgbg.max_iou_assign(boxes[:, :3], gts, torch.tensor([1, 1]))


def test_random_sample():
    gen = torch.Generator().manual_seed(3)
    labels = torch.randint(-1, 4, (1000,), generator=gen)
    pos, neg = fgbg.random_sample(labels, 256, 0.5, seed=7)
    assert pos.dtype == torch.int64
    assert len(pos) == min(128, int((labels > 0).sum()))
    assert len(neg) == 256 - len(pos)
    assert bool((labels[pos] > 0).all()) and bool((labels[neg] == 0).all())
    assert torch.equal(pos, pos.sort().values) and len(set(pos.tolist())) == len(pos)
    p2, n2 = fgbg.random_sample(labels, 256, 0.5, seed=7)
    assert torch.equal(pos, p2) and torch.equal(neg, n2)
    p3, _ = fgbg.random_sample(labels, 256, 0.5, seed=8)
    assert not torch.equal(pos, p3)
    w = fgbg.sample_weights(1000, pos, neg)
    assert float(w.sum()) == 256


def test_ohem_sample_is_top_k_by_loss():
    gen = torch.Generator().manual_seed(4)
    labels = torch.randint(0, 3, (400,), generator=gen)
    losses = torch.rand(400, generator=gen, dtype=torch.float64)
    pos, neg = fgbg.ohem_sample(labels, losses, 64, 0.25)
    ip = (labels > 0).nonzero().flatten()
    ineg = (labels == 0).nonzero().flatten()
    exp_pos = ip[losses[ip].topk(16).indices].sort().values
    exp_neg = ineg[losses[ineg].topk(48).indices].sort().values
    assert torch.equal(pos, exp_pos) and torch.equal(neg, exp_neg)
