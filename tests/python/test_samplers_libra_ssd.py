"""SSD hard negative mining, instance-balanced and IoU-balanced sampling (Libra R-CNN) on
tensors, against brute-force Python oracles: exact for the deterministic miner, and the
samplers' defining counts (per GT, per IoU bin, floor set) for the random ones."""
import math

import pytest
import torch

import fgbg


def _labels(n, seed, p_pos=0.2, p_ign=0.1, classes=3):
    g = torch.Generator().manual_seed(seed)
    u = torch.rand(n, generator=g)
    y = torch.randint(1, classes + 1, (n,), generator=g)
    y = torch.where(u < p_pos, y, torch.zeros_like(y))
    return torch.where(u > 1 - p_ign, torch.full_like(y, -1), y), g


# ------------------------------------------------------------------------------------------ SSD

def ref_ssd(labels, losses, ratio):
    pos = [i for i, v in enumerate(labels) if v > 0]
    neg = [i for i, v in enumerate(labels) if v == 0]
    k = min(math.floor(ratio * len(pos)), len(neg))
    neg.sort(key=lambda i: (-losses[i], i))
    return pos, sorted(neg[:k])


@pytest.mark.parametrize("ratio", [0.0, 1.0, 3.0, 2.5, 1e30])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ssd_mining_against_brute_force(ratio, seed):
    y, g = _labels(200, seed, p_pos=0.05)
    losses = torch.rand(200, generator=g)
    losses[::7] = 0.5  # ties, decided by index
    pos, neg = fgbg.ssd_hard_negative_mining(y, losses, ratio)
    ep, en = ref_ssd(y.tolist(), losses.double().tolist(), ratio)
    assert pos.tolist() == ep and neg.tolist() == en
    assert pos.dtype == torch.int64


def test_ssd_mining_edge_cases_and_errors():
    y = torch.tensor([0, 0, -1, 0])
    pos, neg = fgbg.ssd_hard_negative_mining(y, torch.rand(4))
    assert pos.numel() == 0 and neg.numel() == 0  # no positive, no negative
    y = torch.tensor([1, 0, -1, 0])
    pos, neg = fgbg.ssd_hard_negative_mining(y, torch.tensor([0.0, 0.1, 9.0, 0.2]), sorted=False)
    assert pos.tolist() == [0] and neg.tolist() == [3, 1]  # (loss desc) order, ignored never
    with pytest.raises(ValueError, match="neg_pos_ratio"):
        fgbg.ssd_hard_negative_mining(y, torch.rand(4), -1.0)
    with pytest.raises(fgbg.NonFiniteError, match="losses"):
        fgbg.ssd_hard_negative_mining(y, torch.tensor([0.0, math.nan, 0.0, 0.0]))
    with pytest.raises(ValueError, match="losses"):
        fgbg.ssd_hard_negative_mining(y, torch.rand(3))


# ---------------------------------------------------------------------------- instance-balanced

def _check_batch(y, pos, neg, num, pos_fraction):
    yl = y.tolist()
    assert pos.tolist() == sorted(set(pos.tolist())) and neg.tolist() == sorted(set(neg.tolist()))
    assert all(yl[i] > 0 for i in pos.tolist()) and all(yl[i] == 0 for i in neg.tolist())
    p_exp = math.floor(num * pos_fraction)
    assert pos.numel() <= p_exp
    n_neg = sum(1 for v in yl if v == 0)
    assert neg.numel() == min(num - pos.numel(), n_neg)


@pytest.mark.parametrize("seed", range(6))
def test_instance_balanced_per_gt_counts(seed):
    y, g = _labels(400, seed, p_pos=0.4)
    # unbalanced instances: GT 0 owns most positives
    gt = torch.where(torch.rand(400, generator=g) < 0.7, torch.zeros(400, dtype=torch.int64),
                     torch.randint(1, 5, (400,), generator=g))
    num, frac = 64, 0.5
    pos, neg = fgbg.instance_balanced_sample(y, gt, num, frac, seed=seed)
    _check_batch(y, pos, neg, num, frac)
    p_exp = 32
    allpos = (y > 0).nonzero().flatten().tolist()
    assert pos.numel() == min(p_exp, len(allpos))  # clean mode: exactly P_exp
    gts = sorted({int(gt[i]) for i in allpos})
    q = round(p_exp / len(gts)) + 1
    per = {k: sum(1 for i in allpos if int(gt[i]) == k) for k in gts}
    got = {k: sum(1 for i in pos.tolist() if int(gt[i]) == k) for k in gts}
    if sum(min(per[k], q) for k in gts) <= p_exp:
        assert all(got[k] >= min(per[k], q) for k in gts)  # every GT gets its share
    else:
        assert all(got[k] <= q for k in gts)
    # a GT with few positives gets all of them
    for k in gts:
        if per[k] <= q and sum(min(per[j], q) for j in gts) <= p_exp:
            assert got[k] == per[k]
    again = fgbg.instance_balanced_sample(y, gt, num, frac, seed=seed)
    assert torch.equal(again[0], pos) and torch.equal(again[1], neg)


def test_instance_balanced_takes_all_when_few_and_faithful_mode_and_errors():
    y = torch.tensor([1, 0, 2, 0, 0, -1])
    gt = torch.tensor([3, -1, 9, -1, -1, -1])
    pos, neg = fgbg.instance_balanced_sample(y, gt, 4, 0.5)
    assert pos.tolist() == [0, 2] and neg.numel() == 2
    y, g = _labels(300, 5, p_pos=0.5)
    gt = torch.randint(0, 3, (300,), generator=g)
    pf, _ = fgbg.instance_balanced_sample(y, gt, 40, 0.5, faithful=True, seed=3)
    assert pf.numel() <= 20 and all(int(y[i]) > 0 for i in pf)
    with pytest.raises(ValueError, match="gt_index"):
        fgbg.instance_balanced_sample(torch.tensor([1, 0]), torch.tensor([-1, 0]))
    with pytest.raises(ValueError, match="pos_fraction"):
        fgbg.instance_balanced_sample(torch.tensor([1, 0]), torch.tensor([0, 0]),
                                      pos_fraction=1.5)
    with pytest.raises(TypeError, match="gt_index"):
        fgbg.instance_balanced_sample(torch.tensor([1, 0]), torch.tensor([0.0, 0.0]))


# --------------------------------------------------------------------------------- IoU-balanced

def _iou_batch(seed, n=600):
    y, g = _labels(n, seed, p_pos=0.05, p_ign=0.05)
    iou = torch.rand(n, generator=g, dtype=torch.float64) * 0.5
    iou[torch.rand(n, generator=g) < 0.3] = 0.0
    iou[y > 0] = 0.5 + 0.5 * torch.rand(int((y > 0).sum()), generator=g, dtype=torch.float64)
    gt = torch.randint(0, 4, (n,), generator=g)
    return y, gt, iou


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("bins", [2, 3, 5])
def test_iou_balanced_bins_get_their_quota(seed, bins):
    y, gt, iou = _iou_batch(seed)
    num, frac = 128, 0.25
    pos, neg = fgbg.iou_balanced_sample(y, gt, iou, num, frac, num_bins=bins, seed=seed)
    _check_batch(y, pos, neg, num, frac)
    n_exp = num - pos.numel()
    negs = [i for i, v in enumerate(y.tolist()) if v == 0]
    m = float(iou.max())  # mmdetection's range: the max over every candidate
    width = m / bins
    q = n_exp // bins
    for k in range(bins):
        lo, hi = k * width, (k + 1) * width
        members = [i for i in negs if lo <= float(iou[i]) < hi]
        got = sum(1 for i in neg.tolist() if lo <= float(iou[i]) < hi)
        assert got >= min(len(members), q), (k, got, len(members), q)


def test_iou_balanced_floor_set_share():
    y, gt, iou = _iou_batch(11, n=2000)
    num, frac = 256, 0.25
    pos, neg = fgbg.iou_balanced_sample(y, gt, iou, num, frac, floor_thr=0.1,
                                        floor_fraction=0.5, seed=4)
    n_exp = num - pos.numel()
    n_s = math.floor(n_exp * 0.5)
    above = sum(1 for i in neg.tolist() if float(iou[i]) >= 0.1)
    below = sum(1 for i in neg.tolist() if float(iou[i]) < 0.1)
    assert above == n_s and below == n_exp - n_s


def test_iou_balanced_faithful_state_flips_and_round_trips():
    y, gt, iou = _iou_batch(3)
    s = fgbg.iou_balanced_state()
    first = fgbg.iou_balanced_sample(y, gt, iou, 128, seed=7, state=s)
    # the faithful first call bins every negative, as the clean mode always does
    clean = fgbg.iou_balanced_sample(y, gt, iou, 128, seed=7)
    assert torch.equal(first[1], clean[1])
    sampler = fgbg.sampling.IoUBalancedSampler(num=128)
    assert sampler.floor_thr == -1.0
    sampler.sample(y, gt, iou, seed=7)
    assert sampler.floor_thr == 0.0 and torch.equal(sampler.state, s)
    # later calls: floor_thr 0, i.e. IoU = 0 negatives form the floor set
    second = fgbg.iou_balanced_sample(y, gt, iou, 128, seed=8, state=s)
    assert torch.equal(second[1], fgbg.iou_balanced_sample(y, gt, iou, 128, seed=8,
                                                           floor_thr=0.0)[1])
    other = fgbg.sampling.IoUBalancedSampler(num=128)
    other.load_state_dict(sampler.state_dict())
    assert other.floor_thr == 0.0
    assert torch.equal(other.sample(y, gt, iou, seed=9)[1], sampler.sample(y, gt, iou, seed=9)[1])
    other.reset_state()
    assert other.floor_thr == -1.0


def test_iou_balanced_errors_write_nothing():
    y, gt, iou = _iou_batch(2, n=50)
    s = fgbg.iou_balanced_state()
    before = s.clone()
    bad = iou.clone()
    bad[3] = 1.5
    with pytest.raises(ValueError, match="max_iou"):
        fgbg.iou_balanced_sample(y, gt, bad, 16, state=s)
    with pytest.raises(ValueError, match="num_bins"):
        fgbg.iou_balanced_sample(y, gt, iou, 16, num_bins=0, state=s)
    with pytest.raises(ValueError, match="range_upper"):
        fgbg.iou_balanced_sample(y, gt, iou, 16, range_upper="max")
    broken = s.clone()
    broken[-1] ^= 1
    with pytest.raises(ValueError, match="IouBalancedState"):
        fgbg.iou_balanced_sample(y, gt, iou, 16, state=broken)
    assert torch.equal(s, before)
