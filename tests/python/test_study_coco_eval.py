"""study/fgbg_study/coco_eval.py against hand-computed COCO-style APs (pycocotools' semantics)."""
import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "study"))
from fgbg_study import coco_eval as ce  # noqa: E402

GT = [0.0, 0.0, 10.0, 10.0]


def one_class(dets, gts, **kw):
    """dets: per image list of (box, score); gts: per image list of boxes; all class 1."""
    d = [(np.array([b for b, _ in im]).reshape(-1, 4), np.array([s for _, s in im]),
          np.ones(len(im), int)) for im in dets]
    g = [(np.array(im).reshape(-1, 4), np.ones(len(im), int)) for im in gts]
    return ce.evaluate(d, g, 1, **kw)


def test_thresholds_are_cocos():
    assert len(ce.IOU_THRESHOLDS) == 10 and len(ce.RECALL_THRESHOLDS) == 101
    assert ce.IOU_THRESHOLDS[0] == 0.5 and ce.IOU_THRESHOLDS[5] == 0.75
    assert ce.IOU_THRESHOLDS[-1] == pytest.approx(0.95)


def test_box_iou():
    assert ce.box_iou([GT], [[5, 0, 15, 10]])[0, 0] == pytest.approx(50 / 150)
    assert ce.box_iou([GT], [[20, 20, 30, 30]])[0, 0] == 0
    assert ce.box_iou([GT], [GT])[0, 0] == 1


def test_perfect_detections_give_ap_one():
    r = one_class([[(GT, 0.9)], [([20, 20, 40, 30], 0.3)]], [[GT], [[20, 20, 40, 30]]])
    assert r["AP"] == pytest.approx(1) and r["AP50"] == pytest.approx(1)
    assert r["AP75"] == pytest.approx(1)


def test_no_detections_give_zero():
    r = one_class([[]], [[GT]])
    assert r["AP"] == 0


def test_false_positive_above_true_positive():
    # ranks FP (P 0), TP (P 1/2, R 1): envelope 1/2 at every recall threshold
    r = one_class([[([50, 50, 60, 60], 0.9), (GT, 0.5)]], [[GT]])
    assert r["AP"] == pytest.approx(0.5)


def test_false_positive_below_true_positive_costs_nothing():
    r = one_class([[(GT, 0.9), ([50, 50, 60, 60], 0.5)]], [[GT]])
    assert r["AP"] == pytest.approx(1)


def test_missing_ground_truth_caps_recall():
    # one of two objects found: precision 1 up to recall 0.5 -> 51 of 101 points
    r = one_class([[(GT, 0.9)]], [[GT, [30, 30, 40, 40]]])
    assert r["AP"] == pytest.approx(51 / 101)


def test_duplicate_is_a_false_positive():
    r = one_class([[(GT, 0.9), (GT, 0.8)], []], [[GT], [GT]])
    # TP, FP, then the second image's object missed: R 0.5 at P 1
    assert r["AP"] == pytest.approx(51 / 101)


def test_precision_envelope():
    # FP, TP, TP over 2 objects: P 0, 1/2, 2/3 at R 0, 1/2, 1; the envelope makes all 2/3
    r = one_class([[([50, 50, 60, 60], 0.9), (GT, 0.8), ([20, 20, 30, 30], 0.7)]],
                  [[GT, [20, 20, 30, 30]]])
    assert r["AP"] == pytest.approx(2 / 3)
    # TP, FP, TP: 1 up to R 1/2 (51 points), then 2/3 (50 points)
    r = one_class([[(GT, 0.9), ([50, 50, 60, 60], 0.8), ([20, 20, 30, 30], 0.7)]],
                  [[GT, [20, 20, 30, 30]]])
    assert r["AP"] == pytest.approx((51 + 50 * 2 / 3) / 101)


def test_ranking_runs_across_images():
    # image 0: FP at 0.95; image 1: TP at 0.9 -> globally FP first
    r = one_class([[([50, 50, 60, 60], 0.95)], [(GT, 0.9)]], [[], [GT]])
    assert r["AP"] == pytest.approx(0.5)


def test_iou_threshold_boundaries():
    # IoU exactly 0.5 is a match at 0.5 (>=), not at 0.55
    r = one_class([[([0, 0, 10, 5], 0.9)]], [[GT]])
    assert r["AP50"] == pytest.approx(1) and r["AP75"] == 0
    assert r["AP"] == pytest.approx(0.1)
    # IoU exactly 0.75: matches at 0.50..0.75, six of ten thresholds
    r = one_class([[([0, 0, 10, 7.5], 0.9)]], [[GT]])
    assert r["AP75"] == pytest.approx(1)
    assert r["AP"] == pytest.approx(0.6)
    # just below 0.5: no match
    r = one_class([[([0, 0, 10, 4.99], 0.9)]], [[GT]])
    assert r["AP"] == 0 and r["AP50"] == 0


def test_greedy_matching_by_score():
    # A (score 0.9, IoU 0.62) takes the object at t <= 0.6, so B (IoU 1) is then a FP; above
    # 0.62 A is the FP and B the TP (P 1/2): (3 * 1 + 7 * 1/2) / 10
    r = one_class([[([0, 0, 10, 6.2], 0.9), (GT, 0.8)]], [[GT]])
    assert r["AP"] == pytest.approx((3 + 7 * 0.5) / 10)
    assert r["AP50"] == pytest.approx(1) and r["AP75"] == pytest.approx(0.5)


def test_best_iou_ground_truth_is_taken():
    # the first detection overlaps both objects, the listed-first one less (IoU 0.73 vs 0.9): it
    # must take the second, leaving the first to the exact second detection
    r = one_class([[([0, 0, 10, 9], 0.9), ([0, 1, 10, 11], 0.8)]], [[[0, 1, 10, 11], GT]])
    assert r["AP50"] == pytest.approx(1)
    # at 0.95 the first detection is a FP above the exact TP; the other object is missed:
    # P 1/2 up to R 1/2 (51 points)
    assert r["table"][-1, 0] == pytest.approx(0.5 * 51 / 101)


def test_hundred_detection_cap():
    fps = [([50 + i % 10, 50, 60 + i % 10, 60], 0.9 - i * 1e-3) for i in range(100)]
    dets = [fps + [(GT, 0.01)]]
    assert one_class(dets, [[GT]])["AP"] == 0  # the TP is the 101st: cut
    r = one_class(dets, [[GT]], max_dets=101)
    assert r["AP"] == pytest.approx(1 / 101)  # P 1/101 at R 1, every recall point


def test_cap_is_per_image_and_class():
    # 100 FPs of class 2 do not push class 1's TP out
    fps = [[50, 50, 60, 60]] * 100
    d = [(np.array(fps + [GT]), np.r_[np.full(100, 0.9), 0.1], np.r_[np.full(100, 2), 1])]
    g = [(np.array([GT]), np.array([1]))]
    r = ce.evaluate(d, g, 2)
    assert r["AP"] == pytest.approx(1)  # class 2 has no ground truth: left out
    assert np.isnan(r["per_class"][1])


def test_multiple_classes_average():
    # class 1 perfect (AP 1), class 2: FP above TP (AP 1/2), class 3 absent everywhere
    d = [(np.array([GT, [50, 50, 60, 60], [20, 20, 30, 30]]), np.array([0.9, 0.8, 0.7]),
          np.array([1, 2, 2]))]
    g = [(np.array([GT, [20, 20, 30, 30]]), np.array([1, 2]))]
    r = ce.evaluate(d, g, 3)
    assert r["per_class"][0] == pytest.approx(1) and r["per_class"][1] == pytest.approx(0.5)
    assert r["AP"] == pytest.approx(0.75)
    # a detection of the wrong class is no match
    d = [(np.array([GT]), np.array([0.9]), np.array([2]))]
    r = ce.evaluate(d, [(np.array([GT]), np.array([1]))], 2)
    assert r["AP"] == 0
