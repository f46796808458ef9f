"""Training the tiny RetinaNet on the synthetic benchmark with one of fgbg's classification losses.

Every method shares the detector, data, assignment (fgbg's max-IoU assigner, RetinaNet's
0.5 / 0.4 thresholds with low-quality matches), box regression (GIoU loss on the decoded boxes of
the positives, weight 1, over the number of positives) and optimiser; only the classification
loss (and, where the method's paper says so, how it is balanced against the box loss) differs.
"""
import math
import time

import numpy as np
import torch

import fgbg

from . import coco_eval, data, model as mdl

HARD_PROBABILITY = 0.1  # as examples/demo_common.hpp: background with sigmoid >= 0.1 is "hard"


# ----------------------------------------------------------------------------------------------
# Data with precomputed assignments

class Dataset:
    def __init__(self, seed, split, count, preset="retinanet"):
        imgs, boxes, labels = data.make_split(seed, split, count)
        self.images = torch.from_numpy(np.round(imgs * 255).astype(np.uint8))
        self.boxes, self.labels = boxes, labels
        self.anchors = torch.from_numpy(data.anchors())
        n = self.anchors.shape[0]
        g = max(len(b) for b in boxes)
        self.assigned = torch.empty((count, n), dtype=torch.int8)
        self.gt_index = torch.zeros((count, n), dtype=torch.int8)
        self.gt_boxes = torch.zeros((count, g, 4))
        for i, (b, l) in enumerate(zip(boxes, labels)):
            lab, gi, _ = fgbg.max_iou_assign(self.anchors, torch.from_numpy(b),
                                             torch.from_numpy(l), preset=preset)
            self.assigned[i] = lab.to(torch.int8)
            self.gt_index[i] = gi.clamp(min=0).to(torch.int8)
            self.gt_boxes[i, :len(b)] = torch.from_numpy(b)

    def __len__(self):
        return self.images.shape[0]

    def batch(self, idx):
        x = self.images[idx].float() / 255
        lab = self.assigned[idx].to(torch.int32)
        gi = self.gt_index[idx].long()
        tgt = torch.gather(self.gt_boxes[idx], 1, gi.unsqueeze(-1).expand(-1, -1, 4))
        return x, lab, tgt

    def ground_truths(self):
        return list(zip(self.boxes, self.labels))

    def ratio(self):
        pos = int((self.assigned > 0).sum())
        neg = int((self.assigned == 0).sum())
        return pos, neg


def elementwise_giou(a, b):
    """(IoU, GIoU) of matching rows of a and b (K x 4)."""
    lt = torch.max(a[:, :2], b[:, :2])
    rb = torch.min(a[:, 2:], b[:, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    area_a = (a[:, 2:] - a[:, :2]).clamp(min=0).prod(-1)
    area_b = (b[:, 2:] - b[:, :2]).clamp(min=0).prod(-1)
    union = area_a + area_b - inter + 1e-7
    iou = inter / union
    elt = torch.min(a[:, :2], b[:, :2])
    erb = torch.max(a[:, 2:], b[:, 2:])
    hull = (erb - elt).clamp(min=0).prod(-1) + 1e-7
    return iou, iou - (hull - union) / hull


# ----------------------------------------------------------------------------------------------
# Methods: the classification loss of each run

class Method:
    """cls(logits N x C, labels N int32, ctx) -> (classification loss, box-loss weight or None).
    ctx: dict(iou: N detached IoUs (0 off the positives), loc_error: N 1 - GIoU with gradient
    (0 off the positives), groups: N image indices, num_pos). prior: classifier bias init."""
    prior = 0.01
    replaces_box_loss = False
    score_thr = 0.05  # detection score threshold at evaluation (mdl.detect's default)

    def __init__(self, name, fn, prior=0.01):
        self.name, self.fn, self.prior = name, fn, prior

    def cls(self, logits, labels, ctx):
        return self.fn(logits, labels, ctx)


def _bce(logits, labels, ctx):
    return fgbg.sigmoid_cross_entropy(logits, labels, reduction="num_positives"), None


def _focal(logits, labels, ctx):
    return fgbg.sigmoid_focal_loss(logits, labels, alpha=0.25, gamma=2.0,
                                   reduction="num_positives"), None


class _GHMC(Method):
    def __init__(self):
        super().__init__("ghmc", None)
        self.state = fgbg.ghmc_state(30)

    def cls(self, logits, labels, ctx):  # mmdetection's retinanet_ghm config: 30 bins, 0.75
        return fgbg.ghmc_loss(logits, labels, bins=30, momentum=0.75, state=self.state), None


def _qfl(logits, labels, ctx):
    return fgbg.quality_focal_loss(logits, labels, ctx["iou"], beta=2.0,
                                   reduction="num_positives"), None


def _vfl(logits, labels, ctx):
    return fgbg.varifocal_loss(logits, labels, ctx["iou"], alpha=0.75, gamma=2.0,
                               reduction="num_positives"), None


def _tal_bce(logits, labels, ctx):
    """TOOD/YOLOv8's soft target on the positives: t = s^alpha u^beta (alpha 1, beta 6, s the
    predicted score of the object's class, u the IoU), rescaled per object so that its largest
    t equals its largest IoU; BCE against t, normalised by sum t (ultralytics). The positives are
    the max-IoU assigner's here, not the task-aligned assigner's."""
    with torch.no_grad():
        pos = labels > 0
        t = torch.zeros(labels.shape[0], dtype=logits.dtype)
        if pos.any():
            s = torch.sigmoid(logits[pos, labels[pos].long() - 1])
            u = ctx["iou"][pos]
            align = s * u.pow(6)
            obj = ctx["object"][pos]
            tp = torch.zeros_like(align)
            for o in torch.unique(obj):
                m = obj == o
                tp[m] = align[m] / align[m].max().clamp(min=1e-9) * u[m].max()
            t[pos] = tp
    return fgbg.soft_target_cross_entropy(logits, labels, t, reduction="target_sum"), None


def _ap(logits, labels, ctx):
    return fgbg.ap_loss(logits, labels, delta=1.0), None


def _dr(logits, labels, ctx):
    # the released code ranks per GPU mini-batch of 2 images: groups of two images, averaged
    g = ctx["groups"] // 2
    return fgbg.dr_loss(logits, labels, groups=g) / (int(g.max()) + 1), None


def _rank_sort(logits, labels, ctx):
    rank, sort = fgbg.rank_sort_loss(logits, labels, ctx["iou"], delta=0.5)
    return rank + sort, "self_balance"  # RS loss: box loss scaled to the value of the cls loss


class _ALRP(Method):
    """aLRP: cls + lambda_SB * loc, with lambda_SB = (mean cls + mean loc) / mean loc over the
    last epoch (here: every 100 iterations), starting at 50 as the official config."""
    replaces_box_loss = True

    def __init__(self):
        super().__init__("alrp", None)
        self.sb, self.acc = 50.0, [0.0, 0.0, 0]

    def cls(self, logits, labels, ctx):
        c, loc = fgbg.alrp_loss(logits, labels, ctx["loc_error"], delta=1.0)
        self.acc[0] += float(c)
        self.acc[1] += float(loc)
        self.acc[2] += 1
        if self.acc[2] == 100:
            if self.acc[1] > 0:
                self.sb = (self.acc[0] + self.acc[1]) / self.acc[1]
            self.acc = [0.0, 0.0, 0]
        return c + self.sb * loc, None


class _SamplingFree(Method):
    """The sampling-free mechanism (Chen et al., TIP 2021; ChenJoya/sampling-free): the
    classifier bias from the training set's anchor statistics (optimal bias), plain BCE over
    every anchor rescaled by the guided loss to the value of the (detached) box loss, and the
    released score threshold prior * (C + 1) at evaluation."""

    def __init__(self):
        super().__init__("sampling_free", None)

    def fit(self, train_ds):
        stats = fgbg.sampling_free.anchor_statistics(
            train_ds.assigned.reshape(-1).to(torch.int32), data.NUM_CLASSES)
        self.prior = float(fgbg.sampling_free.optimal_sigmoid_prior(stats))
        self.score_thr = float(fgbg.sampling_free.released_score_threshold(stats))

    def cls(self, logits, labels, ctx):
        return fgbg.guided_loss(logits, labels, ctx["box_loss"]), None


class _ResidualObjectness(Method):
    """Residual objectness (Chen et al.; chenjoya/resobj): K = 2 objectness stage logits per
    anchor summed into one, trained by BCE over every valid anchor; the classifier trained on
    the positives only; the EMA normalisers of the release (20 / 10 / 1 times the EMA of the
    positive count), the box loss divided by its box normaliser."""
    stages = 2

    def __init__(self):
        super().__init__("residual_objectness", None)
        self.state = fgbg.residual_objectness_state()

    def cls(self, logits, labels, ctx):
        loss, info = fgbg.residual_objectness_loss(logits, labels, ctx["stages"], self.state)
        return loss, ctx["num_pos"] / info["box_normalizer"]


TODO_ONE_STAGE = {}


def make_method(name):
    simple = {"bce": _bce, "focal": _focal, "qfl": _qfl, "vfl": _vfl, "tal_bce": _tal_bce,
              "ap_loss": _ap, "dr_loss": _dr, "rank_sort": _rank_sort}
    if name in simple:
        return Method(name, simple[name])
    if name == "ghmc":
        return _GHMC()
    if name == "alrp":
        return _ALRP()
    if name == "sampling_free":
        return _SamplingFree()
    if name == "residual_objectness":
        return _ResidualObjectness()
    if name in TODO_ONE_STAGE:
        raise NotImplementedError(f"{name}: {TODO_ONE_STAGE[name]}")
    raise ValueError(f"unknown method {name!r}")


ONE_STAGE = ("bce", "focal", "ghmc", "qfl", "vfl", "ap_loss", "alrp", "rank_sort", "dr_loss",
             "tal_bce", "sampling_free", "residual_objectness")


# ----------------------------------------------------------------------------------------------

def gradient_shares(logits, grad, labels):
    """Fractions of sum |dL/dx| on foreground entries, easy background (sigmoid < 0.1) and hard
    background, over non-ignored anchors (examples/demo_common.hpp's definition)."""
    with torch.no_grad():
        valid = labels >= 0
        g = grad.abs()[valid]
        x = logits[valid]
        lab = labels[valid].long()
        fg = torch.zeros_like(g, dtype=torch.bool)
        rows = torch.nonzero(lab > 0).squeeze(1)
        fg[rows, lab[rows] - 1] = True
        hard = (torch.sigmoid(x) >= HARD_PROBABILITY) & ~fg
        tot = float(g.sum())
        if tot <= 0:
            return (0.0, 0.0, 0.0)
        f, h = float(g[fg].sum()), float(g[hard].sum())
        return (f / tot, (tot - f - h) / tot, h / tot)


def evaluate(net, ds, batch=25, score_thr=0.05):
    dets = []
    for s in range(0, len(ds), batch):
        idx = torch.arange(s, min(s + batch, len(ds)))
        x = ds.images[idx].float() / 255
        dets += mdl.detect(net, x, ds.anchors, score_thr=score_thr)
    r = coco_eval.evaluate(dets, ds.ground_truths(), data.NUM_CLASSES)
    return {k: r[k] for k in ("AP", "AP50", "AP75", "per_class")}


def train(method_name, train_ds, val_ds, *, seed=0, iters=1000, batch=8, lr=2e-3,
          share_every=10, eval_every=0, log=None):
    """Trains one detector; returns a dict of curves, timings and the final COCO AP."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    method = make_method(method_name)
    if hasattr(method, "fit"):
        method.fit(train_ds)
    net = mdl.TinyRetinaNet(prior=method.prior, objectness_stages=getattr(method, "stages", 0))
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    warm, drop = min(100, iters // 10), int(iters * 0.8)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda it: min(1.0, (it + 1) / max(1, warm)) * (0.1 if it >= drop else 1.0))
    anchors = train_ds.anchors
    n_anchor = anchors.shape[0]
    curves = {"iter": [], "loss": [], "cls": [], "box": []}
    shares = {"iter": [], "fg": [], "easy_bg": [], "hard_bg": []}
    evals = []
    t_iter = t_loss = 0.0
    timed = 0
    order = torch.randperm(len(train_ds), generator=gen)
    pos_in_order = 0
    for it in range(iters):
        if pos_in_order + batch > len(order):
            order, pos_in_order = torch.randperm(len(train_ds), generator=gen), 0
        idx = order[pos_in_order:pos_in_order + batch]
        pos_in_order += batch
        t0 = time.perf_counter()
        x, lab, tgt = train_ds.batch(idx)
        out = net(x)
        cls, box = out[0], out[1]
        b = x.shape[0]
        logits = cls.reshape(b * n_anchor, -1)
        logits.retain_grad()
        labels = lab.reshape(-1)
        groups = torch.arange(b).repeat_interleave(n_anchor)
        pos = torch.nonzero(labels > 0).squeeze(1)
        num_pos = max(1, pos.numel())
        pred = mdl.decode(anchors.repeat(b, 1)[pos], box.reshape(-1, 4)[pos])
        iou_p, giou_p = elementwise_giou(pred, tgt.reshape(-1, 4)[pos])
        iou = torch.zeros(labels.shape[0])
        iou[pos] = iou_p.detach().clamp(0, 1)
        loc_error = torch.zeros(labels.shape[0]).index_put((pos,), 1 - giou_p)
        obj = groups * 16 + train_ds.gt_index[idx].reshape(-1).long()
        ctx = {"iou": iou, "loc_error": loc_error, "groups": groups, "num_pos": num_pos,
               "object": obj, "box_loss": float((1 - giou_p.detach()).sum()) / num_pos,
               "stages": out[2].reshape(b * n_anchor, -1) if len(out) > 2 else None}
        t1 = time.perf_counter()
        loss_cls, box_weight = method.cls(logits, labels, ctx)
        t2 = time.perf_counter()
        if method.replaces_box_loss:
            loss_box = torch.zeros(())
            loss = loss_cls
        else:
            loss_box = (1 - giou_p).sum() / num_pos
            if box_weight == "self_balance":
                w = float(loss_cls) / max(float(loss_box), 1e-6)
                loss = loss_cls + w * loss_box
            elif box_weight is not None:  # a method's own box-loss weight (residual objectness)
                loss = loss_cls + box_weight * loss_box
            else:
                loss = loss_cls + loss_box
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 35.0)
        opt.step()
        sched.step()
        t3 = time.perf_counter()
        if it >= min(20, iters // 5):  # skip the warm-up iterations in the timings
            t_iter += t3 - t0
            t_loss += t2 - t1
            timed += 1
        if not math.isfinite(float(loss)):
            raise FloatingPointError(f"{method_name}: loss became {float(loss)} at iter {it}")
        curves["iter"].append(it)
        curves["loss"].append(float(loss))
        curves["cls"].append(float(loss_cls))
        curves["box"].append(float(loss_box))
        if it % share_every == 0:
            f, e, h = gradient_shares(logits.detach(), logits.grad, labels)
            shares["iter"].append(it)
            shares["fg"].append(f)
            shares["easy_bg"].append(e)
            shares["hard_bg"].append(h)
        if eval_every and (it + 1) % eval_every == 0 and it + 1 < iters:
            evals.append({"iter": it + 1, **evaluate(net, val_ds, score_thr=method.score_thr)})
        if log is not None:
            log(it)
    result = evaluate(net, val_ds, score_thr=method.score_thr)
    evals.append({"iter": iters, **result})
    return {"method": method_name, "seed": seed, "iters": iters, "batch": batch, "lr": lr,
            "AP": result["AP"], "AP50": result["AP50"], "AP75": result["AP75"],
            "per_class": result["per_class"],
            "time_per_iter": t_iter / max(1, timed), "loss_time_per_iter": t_loss / max(1, timed),
            "loss_share": t_loss / max(t_iter, 1e-12), "curves": curves, "shares": shares,
            "evals": evals, "parameters": mdl.count_parameters(net)}


def chance_ap(ds, per_image=100, seed=0):
    """The COCO AP of random guessing: per image per_image anchors drawn at random, with random
    classes and scores (the floor a trained detector must clear)."""
    rng = np.random.default_rng(seed)
    a = ds.anchors.numpy()
    dets = []
    for _ in range(len(ds)):
        k = rng.choice(len(a), per_image, replace=False)
        dets.append((np.clip(a[k], 0, data.SIZE), rng.random(per_image),
                     rng.integers(1, data.NUM_CLASSES + 1, per_image)))
    r = coco_eval.evaluate(dets, ds.ground_truths(), data.NUM_CLASSES)
    return {k: r[k] for k in ("AP", "AP50", "AP75")}
