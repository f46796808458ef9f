"""study/fgbg_study/data.py: deterministic, valid boxes, and RetinaNet's fg:bg anchor ratio."""
import os
import sys

import numpy as np
import torch

import fgbg

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "study"))
from fgbg_study import data  # noqa: E402


def test_same_seed_same_image_and_splits_differ():
    a = data.make_image(3, "train", 5)
    b = data.make_image(3, "train", 5)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    c = data.make_image(3, "val", 5)
    d = data.make_image(4, "train", 5)
    assert not np.array_equal(a[0], c[0]) and not np.array_equal(a[0], d[0])


def test_boxes_are_tight_and_inside():
    for i in range(40):
        img, boxes, labels = data.make_image(0, "train", i)
        assert img.shape == (3, data.SIZE, data.SIZE) and img.dtype == np.float32
        assert 0 <= img.min() and img.max() <= 1
        assert 1 <= len(boxes) <= data.MAX_OBJECTS and len(boxes) == len(labels)
        assert ((labels >= 1) & (labels <= data.NUM_CLASSES)).all()
        assert (boxes[:, :2] >= 0).all() and (boxes[:, 2:] <= data.SIZE).all()
        wh = boxes[:, 2:] - boxes[:, :2]
        assert (wh >= 3).all() and (wh <= data.MAX_SIDE * 1.5 + 1).all()


def test_every_class_appears():
    labels = np.concatenate([data.make_image(0, "train", i)[2] for i in range(60)])
    assert set(labels.tolist()) == set(range(1, data.NUM_CLASSES + 1))


def test_anchor_grid_and_ratio_near_retinanet():
    an = data.anchors()
    n = sum((data.SIZE // s) ** 2 for s in data.STRIDES) * data.A
    assert an.shape == (n, 4)
    pos = neg = 0
    for i in range(100):
        _, b, l = data.make_image(0, "train", i)
        lab, _, _ = fgbg.max_iou_assign(torch.from_numpy(an), torch.from_numpy(b),
                                        torch.from_numpy(l))
        assert (lab > 0).sum() >= len(l)  # every object gets an anchor (low-quality matches)
        pos += int((lab > 0).sum())
        neg += int((lab == 0).sum())
    assert 500 <= neg / pos <= 2000  # RetinaNet's ~1:1000 (about 1:1000 here)
