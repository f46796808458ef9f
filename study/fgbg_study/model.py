"""A tiny RetinaNet-style detector: a five-conv backbone, a three-level FPN (strides 4, 8, 16),
RetinaNet's shared heads (two 3x3 convs each here instead of four) with the prior-probability
bias on the classifier, delta box coding and class-wise NMS at inference."""
import math

import numpy as np
import torch
from torch import nn
from torchvision.ops import batched_nms

from . import data


def _conv(cin, cout, stride):
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True))


class TinyRetinaNet(nn.Module):
    def __init__(self, num_classes=data.NUM_CLASSES, num_anchors=data.A, width=32, prior=0.01,
                 objectness_stages=0):
        super().__init__()
        self.num_classes, self.num_anchors = num_classes, num_anchors
        self.stages = objectness_stages
        self.stem = nn.Sequential(_conv(3, 16, 1), _conv(16, 24, 2))        # stride 2
        self.c2 = _conv(24, 48, 2)                                            # stride 4
        self.c3 = _conv(48, 64, 2)                                            # stride 8
        self.c4 = _conv(64, 96, 2)                                            # stride 16
        self.lat = nn.ModuleList([nn.Conv2d(c, width, 1) for c in (48, 64, 96)])
        self.smooth = nn.ModuleList([nn.Conv2d(width, width, 3, 1, 1) for _ in range(3)])

        def tower():
            return nn.Sequential(nn.Conv2d(width, width, 3, 1, 1), nn.ReLU(inplace=True),
                                 nn.Conv2d(width, width, 3, 1, 1), nn.ReLU(inplace=True))

        self.cls_tower, self.box_tower = tower(), tower()
        self.cls_out = nn.Conv2d(width, num_anchors * num_classes, 3, 1, 1)
        self.box_out = nn.Conv2d(width, num_anchors * 4, 3, 1, 1)
        for m in list(self.cls_tower) + list(self.box_tower) + [self.cls_out, self.box_out]:
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, std=0.01)
                nn.init.zeros_(m.bias)
        self.set_prior(prior)
        # Residual objectness (chenjoya/resobj): K stage logits per anchor from the classification
        # tower, summed into one objectness logit; every stage bias at prior_bias(0.001) and the
        # class bias at -ln(C - 1) (prior 1/C), as the release initialises them.
        self.obj_out = nn.ModuleList(
            [nn.Conv2d(width, num_anchors, 3, 1, 1) for _ in range(objectness_stages)])
        if objectness_stages:
            with torch.no_grad():
                for m in self.obj_out:
                    nn.init.normal_(m.weight, std=0.01)
                    m.bias.fill_(-math.log((1 - 0.001) / 0.001))
                self.cls_out.bias.fill_(-math.log(num_classes - 1))

    def set_prior(self, prior):
        """RetinaNet's classifier bias -log((1 - pi) / pi)."""
        with torch.no_grad():
            self.cls_out.bias.fill_(-math.log((1 - prior) / prior))

    def forward(self, x):
        """x: B x 3 x H x W. Returns (cls logits B x N x C, box deltas B x N x 4), anchors in
        data.anchors() order, and with objectness stages their logits B x N x K as well."""
        c2 = self.c2(self.stem(x))
        c3 = self.c3(c2)
        c4 = self.c4(c3)
        p4 = self.lat[2](c4)
        p3 = self.lat[1](c3) + nn.functional.interpolate(p4, scale_factor=2.0, mode="nearest")
        p2 = self.lat[0](c2) + nn.functional.interpolate(p3, scale_factor=2.0, mode="nearest")
        feats = [s(p) for s, p in zip(self.smooth, (p2, p3, p4))]
        b = x.shape[0]
        cls, box, obj = [], [], []
        for f in feats:
            t = self.cls_tower(f)
            c = self.cls_out(t)                       # B x (A C) x h x w
            r = self.box_out(self.box_tower(f))       # B x (A 4) x h x w
            cls.append(c.permute(0, 2, 3, 1).reshape(b, -1, self.num_classes))
            box.append(r.permute(0, 2, 3, 1).reshape(b, -1, 4))
            if self.stages:
                o = torch.stack([m(t) for m in self.obj_out], -1)  # B x A x h x w x K
                obj.append(o.permute(0, 2, 3, 1, 4).reshape(b, -1, self.stages))
        if self.stages:
            return torch.cat(cls, 1), torch.cat(box, 1), torch.cat(obj, 1)
        return torch.cat(cls, 1), torch.cat(box, 1)


# ----------------------------------------------------------------------------------------------
# Box coding (Faster R-CNN's deltas with mmdetection's target stds 0.1, 0.1, 0.2, 0.2).

STDS = (0.1, 0.1, 0.2, 0.2)
_CLAMP = math.log(1000.0 / 16)


def encode(anchors, gt):
    aw, ah = anchors[:, 2] - anchors[:, 0], anchors[:, 3] - anchors[:, 1]
    ax, ay = anchors[:, 0] + aw / 2, anchors[:, 1] + ah / 2
    gw, gh = gt[:, 2] - gt[:, 0], gt[:, 3] - gt[:, 1]
    gx, gy = gt[:, 0] + gw / 2, gt[:, 1] + gh / 2
    d = torch.stack([(gx - ax) / aw, (gy - ay) / ah, torch.log(gw / aw), torch.log(gh / ah)], -1)
    return d / d.new_tensor(STDS)


def decode(anchors, deltas):
    d = deltas * deltas.new_tensor(STDS)
    aw, ah = anchors[..., 2] - anchors[..., 0], anchors[..., 3] - anchors[..., 1]
    ax, ay = anchors[..., 0] + aw / 2, anchors[..., 1] + ah / 2
    cx, cy = ax + d[..., 0] * aw, ay + d[..., 1] * ah
    w = aw * torch.exp(d[..., 2].clamp(max=_CLAMP))
    h = ah * torch.exp(d[..., 3].clamp(max=_CLAMP))
    return torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], -1)


@torch.no_grad()
def detect(model, images, anchors, score_thr=0.05, pre_nms=1000, nms_iou=0.5, max_dets=100):
    """Inference as mmdetection's RetinaNet test config: sigmoid scores above score_thr, the top
    pre_nms (anchor, class) pairs, class-wise NMS at nms_iou, at most max_dets per image.
    Returns per image (boxes D x 4, scores D, labels D in 1..C) as numpy arrays."""
    was = model.training
    model.eval()
    res = model(images)
    cls, box = res[0], res[1]
    model.train(was)
    scores_all = torch.sigmoid(cls)
    if len(res) > 2:  # residual objectness: sigma(o) * sigma(z), o the summed stage logits
        scores_all = scores_all * torch.sigmoid(res[2].sum(-1, keepdim=True))
    out = []
    size = images.shape[-1]
    for i in range(images.shape[0]):
        s = scores_all[i].flatten()
        keep = torch.nonzero(s > score_thr).squeeze(1)
        if keep.numel() > pre_nms:
            keep = keep[torch.topk(s[keep], pre_nms).indices]
        a_idx = keep // model.num_classes
        labels = keep % model.num_classes + 1
        boxes = decode(anchors[a_idx], box[i, a_idx]).clamp(0, size)
        scores = s[keep]
        k = batched_nms(boxes, scores, labels, nms_iou)[:max_dets]
        out.append((boxes[k].numpy(), scores[k].numpy(), labels[k].numpy()))
    return out


def count_parameters(model):
    return int(np.sum([p.numel() for p in model.parameters()]))
