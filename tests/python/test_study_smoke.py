"""A one-minute version of the study (docs/study.md): the tiny RetinaNet trained with fgbg's focal
loss on the synthetic benchmark must lower its loss and beat random guessing in COCO AP; every
one-stage method of the runner must make a few finite steps."""
import math
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


def test_sampling_free_fits_bias_and_threshold(tiny_data):
    tr, _ = tiny_data
    m = T.make_method("sampling_free")
    m.fit(tr)
    fg, bg = int((tr.assigned > 0).sum()), int((tr.assigned == 0).sum())
    c = T.data.NUM_CLASSES
    prior = fg / (fg + bg) / c  # the optimal bias's prior, sampling-free's released formula
    assert m.prior == pytest.approx(prior, rel=1e-12)
    assert m.score_thr == pytest.approx(prior * (c + 1), rel=1e-12)


def test_residual_objectness_scores_multiply_the_objectness():
    torch.manual_seed(0)
    net = T.mdl.TinyRetinaNet(objectness_stages=2)
    x = torch.rand(2, 3, 128, 128)
    net.eval()  # detect() evaluates with the BatchNorm running statistics
    with torch.no_grad():
        cls, box, stages = net(x)
    assert stages.shape == (2, cls.shape[1], 2)
    # the release's initialisation: objectness prior 0.001 per stage, class prior 1 / (C - 1)
    assert float(net.obj_out[0].bias[0]) == pytest.approx(-math.log(999), rel=1e-6)
    assert float(net.cls_out.bias[0]) == pytest.approx(-math.log(T.data.NUM_CLASSES - 1))
    dets = T.mdl.detect(net, x, torch.from_numpy(T.data.anchors()), score_thr=0.0, max_dets=5)
    want = (torch.sigmoid(cls[0]) * torch.sigmoid(stages[0].sum(-1, keepdim=True))).max()
    assert float(dets[0][1].max()) == pytest.approx(float(want), rel=1e-5)


def test_todo_methods_say_so():
    for m in T.TODO_ONE_STAGE:
        with pytest.raises(NotImplementedError):
            T.make_method(m)


def test_two_stage_samplers_step():
    from fgbg_study import twostage as S
    tr = T.Dataset(0, "train", 16, preset="rpn")
    va = T.Dataset(0, "val", 8)
    for m in S.TWO_STAGE:
        r = S.train(m, tr, va, seed=0, iters=3)
        assert np.isfinite(r["curves"]["loss"]).all() and 0 <= r["AP"] <= 1
        f, e, h = (r["shares"][k][-1] for k in ("fg", "easy_bg", "hard_bg"))
        assert f + e + h == pytest.approx(1)
    for m in S.TODO_TWO_STAGE:
        with pytest.raises(NotImplementedError):
            S.train(m, tr, va, iters=1)


def test_summary_and_docs_table(tmp_path):
    from fgbg_study import run as R

    def fake(m, s, ap):
        return {"method": m, "seed": s, "AP": ap, "AP50": ap, "AP75": ap, "time_per_iter": 0.1,
                "loss_time_per_iter": 0.01, "loss_share": 0.1}

    rows = R.summarise([fake("bce", 0, 0.10), fake("bce", 1, 0.20), fake("focal", 0, 0.30),
                        fake("focal", 1, 0.40), fake("random_biased", 0, 0.5),
                        fake("ohem", 0, 0.45)])
    assert rows["bce"]["AP"] == pytest.approx(15) and rows["focal"]["dAP"] == pytest.approx(20)
    assert rows["bce"]["AP_std"] == pytest.approx(np.std([10, 20], ddof=1))
    assert rows["ohem"]["dAP"] == pytest.approx(-5)  # against the two-stage baseline
    text = R.table_markdown(rows, "settings")
    assert "| focal | 35.0 ± 7.1 | +20.0 |" in text and "TODO" in text
    doc = tmp_path / "study.md"
    doc.write_text("a\n<!-- study-table-begin quick -->\nOLDTABLE\n<!-- study-table-end quick -->\nb\n")
    assert R.write_docs(str(doc), text, "quick")
    new = doc.read_text()
    assert "OLDTABLE" not in new and "| focal |" in new and new.startswith("a\n")
    assert not R.write_docs(str(doc), text, "full")
