"""A tiny two-stage detector (Faster R-CNN-style) for the hard samplers.

The backbone and FPN are the one-stage detector's (model.py); on them an RPN (objectness and
deltas for the same 9 anchors per location, fgbg's max-IoU assigner with RPN's 0.7 / 0.3
thresholds, 256 anchors per image sampled at half positives, BCE + GIoU) proposes boxes
(top 1000 before and 200 after NMS at 0.7 in training, 100 at test), which a RoI head (RoIAlign
7 x 7 on the stride-4 level, two fc layers, a softmax classifier over background + C classes
and class-agnostic deltas) classifies. The RoIs of an image are the proposals and the ground
truths, assigned with R-CNN's 0.5 / 0.5 thresholds and sampled by the run's sampler:

* random_biased: fgbg.random_sample, 64 per image at 25 % positives (Faster R-CNN's sampler
  with mmdetection's semantics; the budget scaled from 512 to the ~200 RoIs of a tiny image);
* ohem: fgbg.ohem_sample on the RoIs' current classification losses (a forward of the RoI head
  without gradient over all RoIs), the same budget (mmdetection's OHEMSampler).
* iou_balanced: fgbg.iou_balanced_sample (Libra R-CNN: negatives evenly from 3 IoU bins,
  instance-balanced positives), the same budget, from the assigner's gt index and max IoU.

Only the sampled RoIs go through the RoI head with gradient; their classification is
fgbg.softmax_cross_entropy, averaged over the sampled RoIs.
"""
import time

import numpy as np
import torch
from torch import nn
from torchvision.ops import batched_nms, nms, roi_align

import fgbg

from . import coco_eval, data, model as mdl
from .train import Dataset, elementwise_giou

TODO_TWO_STAGE = {
    "isr_carl": "ISR-P and CARL need the per-RoI regression loss wired into the RoI head's loss: "
                "TODO",
}
TWO_STAGE = ("random_biased", "ohem", "iou_balanced")


class TinyFasterRCNN(nn.Module):
    def __init__(self, num_classes=data.NUM_CLASSES, num_anchors=data.A, width=32):
        super().__init__()
        self.num_classes, self.num_anchors = num_classes, num_anchors
        self.stem = nn.Sequential(mdl._conv(3, 16, 1), mdl._conv(16, 24, 2))
        self.c2, self.c3, self.c4 = mdl._conv(24, 48, 2), mdl._conv(48, 64, 2), mdl._conv(64, 96, 2)
        self.lat = nn.ModuleList([nn.Conv2d(c, width, 1) for c in (48, 64, 96)])
        self.smooth = nn.ModuleList([nn.Conv2d(width, width, 3, 1, 1) for _ in range(3)])
        self.rpn_conv = nn.Conv2d(width, width, 3, 1, 1)
        self.rpn_obj = nn.Conv2d(width, num_anchors, 1)
        self.rpn_box = nn.Conv2d(width, num_anchors * 4, 1)
        self.fc = nn.Sequential(nn.Flatten(), nn.Linear(width * 49, 128), nn.ReLU(inplace=True),
                                nn.Linear(128, 128), nn.ReLU(inplace=True))
        self.cls = nn.Linear(128, num_classes + 1)
        self.box = nn.Linear(128, 4)
        for m in (self.rpn_conv, self.rpn_obj, self.rpn_box):
            nn.init.normal_(m.weight, std=0.01)
            nn.init.zeros_(m.bias)
        nn.init.normal_(self.cls.weight, std=0.01)
        nn.init.normal_(self.box.weight, std=0.001)
        nn.init.zeros_(self.cls.bias)
        nn.init.zeros_(self.box.bias)

    def features(self, x):
        c2 = self.c2(self.stem(x))
        c3 = self.c3(c2)
        c4 = self.c4(c3)
        p4 = self.lat[2](c4)
        p3 = self.lat[1](c3) + nn.functional.interpolate(p4, scale_factor=2.0, mode="nearest")
        p2 = self.lat[0](c2) + nn.functional.interpolate(p3, scale_factor=2.0, mode="nearest")
        return [s(p) for s, p in zip(self.smooth, (p2, p3, p4))]

    def rpn(self, feats):
        b = feats[0].shape[0]
        obj, box = [], []
        for f in feats:
            h = torch.relu(self.rpn_conv(f))
            obj.append(self.rpn_obj(h).permute(0, 2, 3, 1).reshape(b, -1))
            box.append(self.rpn_box(h).permute(0, 2, 3, 1).reshape(b, -1, 4))
        return torch.cat(obj, 1), torch.cat(box, 1)

    def roi_head(self, p2, rois):
        """rois: K x 5 (image index, x1, y1, x2, y2). Returns (logits K x (C+1), deltas K x 4)."""
        f = roi_align(p2, rois, (7, 7), spatial_scale=1 / data.STRIDES[0], sampling_ratio=2,
                      aligned=True)
        h = self.fc(f)
        return self.cls(h), self.box(h)


@torch.no_grad()
def proposals(obj, deltas, anchors, pre=1000, post=200, iou=0.7):
    size = data.SIZE
    out = []
    for i in range(obj.shape[0]):
        s = obj[i]
        k = torch.topk(s, min(pre, s.numel())).indices
        b = mdl.decode(anchors[k], deltas[i, k]).clamp(0, size)
        wh = b[:, 2:] - b[:, :2]
        ok = (wh > 1).all(1)
        b, sc = b[ok], s[k][ok]
        keep = nms(b, sc, iou)[:post]
        out.append(b[keep])
    return out


ROIS_PER_IMAGE = 64   # sampled out of ~200 proposals + the ground truths


def _sample(kind, labels, roi_losses, seed, gt_index=None, max_iou=None):
    if kind == "random_biased":
        return fgbg.random_sample(labels, num=ROIS_PER_IMAGE, pos_fraction=0.25, seed=seed)
    if kind == "ohem":
        return fgbg.ohem_sample(labels, roi_losses, num=ROIS_PER_IMAGE, pos_fraction=0.25)
    if kind == "iou_balanced":  # Libra R-CNN: 3 IoU bins of negatives, instance-balanced positives
        return fgbg.iou_balanced_sample(labels, gt_index, max_iou, num=ROIS_PER_IMAGE,
                                        pos_fraction=0.25, seed=seed)
    raise NotImplementedError(f"{kind}: {TODO_TWO_STAGE.get(kind, 'unknown sampler')}")


def softmax_gradient_shares(logits, grad, labels):
    """As train.gradient_shares for a softmax head, over the sampled RoIs: a row's |gradient| goes
    to foreground when the RoI is positive, else to hard background when 1 - p(background) >= 0.1,
    else to easy background."""
    with torch.no_grad():
        valid = labels >= 0
        g = grad.abs().sum(1)[valid]
        lab = labels[valid]
        p_fg = 1 - torch.softmax(logits[valid], 1)[:, 0]
        tot = float(g.sum())
        if tot <= 0:
            return (0.0, 0.0, 0.0)
        f = float(g[lab > 0].sum())
        h = float(g[(lab == 0) & (p_fg >= 0.1)].sum())
        return (f / tot, (tot - f - h) / tot, h / tot)


@torch.no_grad()
def detect(net, images, anchors, score_thr=0.05, nms_iou=0.5, max_dets=100):
    was = net.training
    net.eval()
    feats = net.features(images)
    obj, d = net.rpn(feats)
    props = proposals(obj, d, anchors, pre=1000, post=100)
    rois = torch.cat([torch.cat([torch.full((len(p), 1), float(i)), p], 1)
                      for i, p in enumerate(props)])
    logits, deltas = net.roi_head(feats[0], rois)
    net.train(was)
    probs = torch.softmax(logits, 1)[:, 1:]
    boxes = mdl.decode(rois[:, 1:], deltas).clamp(0, data.SIZE)
    out = []
    for i in range(images.shape[0]):
        m = rois[:, 0] == i
        p, b = probs[m], boxes[m]
        r, c = torch.nonzero(p > score_thr, as_tuple=True)
        bb, ss, ll = b[r], p[r, c], c + 1
        k = batched_nms(bb, ss, ll, nms_iou)[:max_dets]
        out.append((bb[k].numpy(), ss[k].numpy(), ll[k].numpy()))
    return out


def evaluate(net, ds, batch=25):
    dets = []
    for s in range(0, len(ds), batch):
        x = ds.images[s:s + batch].float() / 255
        dets += detect(net, x, ds.anchors)
    r = coco_eval.evaluate(dets, ds.ground_truths(), data.NUM_CLASSES)
    return {k: r[k] for k in ("AP", "AP50", "AP75", "per_class")}


def train(sampler, train_ds, val_ds, *, seed=0, iters=1000, batch=8, lr=2e-3, share_every=10,
          log=None):
    """train_ds must be a Dataset(preset='rpn'). Returns what train.train returns."""
    if sampler not in TWO_STAGE:
        raise NotImplementedError(f"{sampler}: {TODO_TWO_STAGE.get(sampler, 'unknown sampler')}")
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    net = TinyFasterRCNN()
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    warm, drop = min(100, iters // 10), int(iters * 0.8)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda it: min(1.0, (it + 1) / max(1, warm)) * (0.1 if it >= drop else 1.0))
    anchors = train_ds.anchors
    na = anchors.shape[0]
    curves = {"iter": [], "loss": [], "cls": [], "box": []}
    shares = {"iter": [], "fg": [], "easy_bg": [], "hard_bg": []}
    t_iter = t_loss = 0.0
    timed = 0
    order, at = torch.randperm(len(train_ds), generator=gen), 0
    for it in range(iters):
        if at + batch > len(order):
            order, at = torch.randperm(len(train_ds), generator=gen), 0
        idx = order[at:at + batch]
        at += batch
        t0 = time.perf_counter()
        x, lab, tgt = train_ds.batch(idx)
        b = x.shape[0]
        feats = net.features(x)
        obj, d = net.rpn(feats)
        # RPN: 256 anchors per image, half positives, binary objectness
        tl = 0.0
        rpn_w, rpn_y = torch.zeros(b, na), (lab > 0).to(torch.int32)
        rpn_y[lab < 0] = -1
        ts = time.perf_counter()
        for i in range(b):
            p, n = fgbg.random_sample(rpn_y[i], num=256, pos_fraction=0.5,
                                      seed=seed * 1000003 + it * 64 + i)
            rpn_w[i] = fgbg.sample_weights(na, p, n)
        rpn_cls = fgbg.sigmoid_cross_entropy(obj.reshape(-1, 1), rpn_y.reshape(-1),
                                             weight=rpn_w.reshape(-1), reduction="mean",
                                             avg_factor=float(max(1.0, float(rpn_w.sum()))))
        tl += time.perf_counter() - ts
        pos = torch.nonzero(rpn_y.reshape(-1) > 0).squeeze(1)
        pred = mdl.decode(anchors.repeat(b, 1)[pos], d.reshape(-1, 4)[pos])
        _, g = elementwise_giou(pred, tgt.reshape(-1, 4)[pos])
        rpn_box = (1 - g).sum() / max(1, pos.numel())
        # RoIs: proposals + ground truths, assigned (0.5 / 0.5) and sampled
        props = proposals(obj.detach(), d.detach(), anchors)
        rois, labels, targets, assigned = [], [], [], []
        for i in range(b):
            gt_b = torch.from_numpy(train_ds.boxes[int(idx[i])])
            gt_l = torch.from_numpy(train_ds.labels[int(idx[i])])
            r = torch.cat([props[i], gt_b])
            rl, gi, mi = fgbg.max_iou_assign(r, gt_b, gt_l, preset="rcnn")
            assigned.append((gi, mi))
            rois.append(torch.cat([torch.full((len(r), 1), float(i)), r], 1))
            labels.append(rl)
            targets.append(gt_b[gi.clamp(min=0).long()])
        rois, targets = torch.cat(rois), torch.cat(targets)
        all_labels = torch.cat(labels)
        ts = time.perf_counter()
        per_roi = None
        if sampler == "ohem":  # the RoIs' current classification losses: a forward without grad
            with torch.no_grad():
                lg, _ = net.roi_head(feats[0], rois)
            ts = time.perf_counter()  # the extra forward is not fgbg's: left out of tl
            per_roi = fgbg.softmax_cross_entropy(lg, all_labels, reduction="none")
        keep, start = [], 0
        for i, rl in enumerate(labels):
            p, n = _sample(sampler, rl, None if per_roi is None else per_roi[start:start + len(rl)],
                           seed * 1000003 + it * 64 + 32 + i, *assigned[i])
            keep += [p + start, n + start]
            start += len(rl)
        keep = torch.cat(keep)
        tl += time.perf_counter() - ts
        rois, targets, all_labels = rois[keep], targets[keep], all_labels[keep]
        logits, deltas = net.roi_head(feats[0], rois)
        logits.retain_grad()
        ts = time.perf_counter()
        roi_cls = fgbg.softmax_cross_entropy(logits, all_labels, reduction="mean")
        tl += time.perf_counter() - ts
        sp = torch.nonzero(all_labels > 0).squeeze(1)
        pb = mdl.decode(rois[sp, 1:], deltas[sp])
        _, g2 = elementwise_giou(pb, targets[sp])
        roi_box = (1 - g2).sum() / max(1, sp.numel())
        loss = rpn_cls + rpn_box + roi_cls + roi_box
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 35.0)
        opt.step()
        sched.step()
        t3 = time.perf_counter()
        if it >= min(20, iters // 5):
            t_iter += t3 - t0
            t_loss += tl
            timed += 1
        if not np.isfinite(float(loss)):
            raise FloatingPointError(f"{sampler}: loss became {float(loss)} at iter {it}")
        curves["iter"].append(it)
        curves["loss"].append(float(loss))
        curves["cls"].append(float(rpn_cls + roi_cls))
        curves["box"].append(float(rpn_box + roi_box))
        if it % share_every == 0:
            f, e, h = softmax_gradient_shares(logits.detach(), logits.grad, all_labels)
            shares["iter"].append(it)
            shares["fg"].append(f)
            shares["easy_bg"].append(e)
            shares["hard_bg"].append(h)
        if log is not None:
            log(it)
    result = evaluate(net, val_ds)
    return {"method": sampler, "detector": "two-stage", "seed": seed, "iters": iters,
            "batch": batch, "lr": lr, "AP": result["AP"], "AP50": result["AP50"],
            "AP75": result["AP75"], "per_class": result["per_class"],
            "time_per_iter": t_iter / max(1, timed), "loss_time_per_iter": t_loss / max(1, timed),
            "loss_share": t_loss / max(t_iter, 1e-12), "curves": curves, "shares": shares,
            "evals": [{"iter": iters, **result}], "parameters": mdl.count_parameters(net)}
