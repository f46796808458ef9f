"""COCO-style box AP, with the semantics of pycocotools' COCOeval (iouType 'bbox', area 'all'),
written from its documented behaviour (crowd and ignore regions are not needed here):

* IoU of two boxes without pycocotools' +1 (continuous coordinates); boxes are x1, y1, x2, y2.
* Per image and class, the detections sorted by score (stable, descending) and cut to the first
  max_dets (pycocotools applies maxDets per image *and* category).
* Greedy matching per IoU threshold t in 0.50:0.05:0.95: each detection in score order takes the
  unmatched ground truth of the largest IoU >= t (on equal IoU the later ground truth, as
  pycocotools' loop does); a matched detection is a TP, the others FPs.
* Per class, over all images: detections sorted by score (stable, descending, images in order),
  cumulative TP/FP, recall = TP / #GT, precision = TP / (TP + FP); the precision envelope
  (each precision replaced by the maximum to its right); sampled at the 101 recall thresholds
  0:0.01:1 (the first point whose recall >= r, 0 past the last), averaged.
* A class without ground truth has no AP (-1 in pycocotools) and is left out of the mean.
  AP is the mean over classes and thresholds; AP50 and AP75 those at t = 0.5 and 0.75.
"""
import numpy as np

IOU_THRESHOLDS = np.linspace(0.5, 0.95, int(np.round((0.95 - 0.5) / 0.05)) + 1)
RECALL_THRESHOLDS = np.linspace(0.0, 1.0, 101)


def box_iou(a, b):
    """IoU matrix of boxes a (M x 4) and b (K x 4), x1 y1 x2 y2."""
    a = np.asarray(a, np.float64).reshape(-1, 4)
    b = np.asarray(b, np.float64).reshape(-1, 4)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(-1)
    area_a = np.clip(a[:, 2:] - a[:, :2], 0, None).prod(-1)
    area_b = np.clip(b[:, 2:] - b[:, :2], 0, None).prod(-1)
    union = area_a[:, None] + area_b[None, :] - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, inter / union, 0.0)


def _match(det_boxes, gt_boxes, thresholds):
    """TP flags (T x D) of detections already in score order against the ground truths."""
    tp = np.zeros((len(thresholds), len(det_boxes)), bool)
    if len(det_boxes) == 0 or len(gt_boxes) == 0:
        return tp
    ious = box_iou(det_boxes, gt_boxes)
    for ti, t in enumerate(thresholds):
        taken = np.zeros(len(gt_boxes), bool)
        for d in range(len(det_boxes)):
            best, best_iou = -1, min(t, 1 - 1e-10)
            for g in range(len(gt_boxes)):
                if taken[g] or ious[d, g] < best_iou:
                    continue
                best, best_iou = g, ious[d, g]
            if best >= 0:
                taken[best] = True
                tp[ti, d] = True
    return tp


def average_precision_101(tp, scores, num_gt):
    """AP at one threshold of one class: tp flags and scores of all its detections (any order),
    num_gt > 0. 101-point interpolation over the precision envelope."""
    order = np.argsort(-np.asarray(scores, np.float64), kind="mergesort")
    tp = np.asarray(tp, bool)[order]
    tps = np.cumsum(tp).astype(np.float64)
    fps = np.cumsum(~tp).astype(np.float64)
    recall = tps / num_gt
    precision = tps / (tps + fps + np.spacing(1))
    for i in range(len(precision) - 1, 0, -1):  # envelope: max to the right
        precision[i - 1] = max(precision[i - 1], precision[i])
    idx = np.searchsorted(recall, RECALL_THRESHOLDS, side="left")
    q = np.zeros(len(RECALL_THRESHOLDS))
    ok = idx < len(precision)
    q[ok] = precision[idx[ok]]
    return float(q.mean())


def evaluate(detections, ground_truths, num_classes, max_dets=100,
             iou_thresholds=IOU_THRESHOLDS):
    """detections: per image a tuple (boxes D x 4, scores D, labels D in 1..num_classes);
    ground_truths: per image (boxes G x 4, labels G). Returns dict(AP, AP50, AP75, per_class
    (num_classes values, nan for a class without ground truth), table (T x num_classes))."""
    if len(detections) != len(ground_truths):
        raise ValueError("one detection tuple per ground-truth image is needed")
    thresholds = np.asarray(iou_thresholds, np.float64)
    table = np.full((len(thresholds), num_classes), np.nan)
    for c in range(1, num_classes + 1):
        all_tp, all_scores, num_gt = [], [], 0
        for (db, ds, dl), (gb, gl) in zip(detections, ground_truths):
            db = np.asarray(db, np.float64).reshape(-1, 4)
            ds = np.asarray(ds, np.float64).reshape(-1)
            dl = np.asarray(dl).reshape(-1)
            gb = np.asarray(gb, np.float64).reshape(-1, 4)
            gl = np.asarray(gl).reshape(-1)
            g = gb[gl == c]
            num_gt += len(g)
            sel = np.nonzero(dl == c)[0]
            sel = sel[np.argsort(-ds[sel], kind="mergesort")][:max_dets]
            all_tp.append(_match(db[sel], g, thresholds))
            all_scores.append(ds[sel])
        if num_gt == 0:
            continue
        tp = np.concatenate(all_tp, axis=1)
        scores = np.concatenate(all_scores)
        for ti in range(len(thresholds)):
            table[ti, c - 1] = average_precision_101(tp[ti], scores, num_gt)

    def mean(rows):
        v = table[rows]
        v = v[~np.isnan(v)]
        return float(v.mean()) if v.size else float("nan")

    def at(t):
        hit = np.nonzero(np.isclose(thresholds, t))[0]
        return mean(hit) if hit.size else float("nan")

    return {"AP": mean(slice(None)), "AP50": at(0.5), "AP75": at(0.75),
            "per_class": [float(np.nanmean(table[:, k])) if not np.isnan(table[:, k]).all()
                          else float("nan") for k in range(num_classes)],
            "table": table}
