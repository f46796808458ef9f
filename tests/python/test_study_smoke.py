"""A one-minute version of the study (docs/study.md): the tiny RetinaNet trained with fgbg's focal
loss on the synthetic benchmark must lower its loss and beat random guessing in COCO AP; every
one-stage method of the runner must make a few finite steps."""
import os
import sys

import numpy as np
import pytest
import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "study"))
from fgbg_study import train as T  # noqa: E402


@pytest.fixture(scope="module")
def tiny_data():
    torch.set_num_threads(1)
    return T.Dataset(0, "train", 160), T.Dataset(0, "val", 40)


def test_focal_training_learns(tiny_data):
    tr, va = tiny_data
    r = T.train("focal", tr, va, seed=0, iters=300)
    loss = np.asarray(r["curves"]["loss"])
    assert loss[-20:].mean() < 0.7 * loss[:20].mean()
    chance = T.chance_ap(va)
    assert chance["AP50"] < 0.01
    assert r["AP50"] > chance["AP50"] + 0.05, (r["AP50"], chance)
    assert r["AP"] > chance["AP"] + 0.01
    assert 0 < r["loss_share"] < 1 and r["time_per_iter"] > 0
    f, e, h = (r["shares"][k][-1] for k in ("fg", "easy_bg", "hard_bg"))
    assert f + e + h == pytest.approx(1)


@pytest.mark.parametrize("method", [m for m in T.ONE_STAGE if m != "focal"])
def test_every_method_steps(tiny_data, method):
    tr, va = tiny_data
    r = T.train(method, tr, va, seed=1, iters=3)
    assert np.isfinite(r["curves"]["loss"]).all()
    assert 0 <= r["AP"] <= 1


def test_todo_methods_say_so():
    for m in T.TODO_ONE_STAGE:
        with pytest.raises(NotImplementedError):
            T.make_method(m)
