"""The reference vectors of tests/data/*.json (torch / torchvision / mmdetection in double) through
the Python package, in float64: |got - expected| <= 1e-9 max(1, max |expected|)."""
import json
import os

import pytest
import torch

import fgbg
from conftest import DATA


def _cases(fname):
    with open(os.path.join(DATA, fname)) as f:
        d = json.load(f)
    return [pytest.param(d, c, id=c["name"]) for c in d["cases"]]


def _norm(n):
    if n in ("sum", "mean", "target_sum"):
        return dict(reduction=n)
    return dict(reduction="mean", avg_factor=float(n))


def _close(got, exp):
    exp = torch.as_tensor(exp, dtype=torch.float64)
    got = torch.as_tensor(got, dtype=torch.float64).detach()
    assert got.numel() == exp.numel()
    if exp.numel():
        tol = 1e-9 * max(1.0, float(exp.abs().max()))
        assert float((got.reshape(exp.shape) - exp).abs().max()) <= tol


def _inputs(case, softmax=False):
    n, c = case["num_anchors"], case["num_classes"]
    width = c + 1 if softmax else c
    x = torch.tensor(case["logits"], dtype=torch.float64).reshape(n, width).requires_grad_()
    y = torch.tensor(case["labels"], dtype=torch.int64).reshape(n)
    return x, y


def _check(loss, x, case):
    loss.backward()
    _close(loss, case["expected"]["loss"])
    _close(x.grad, case["expected"]["grad"])


SIMPLE = {
    "sigmoid_focal.json": (fgbg.sigmoid_focal_loss, False, ("alpha", "gamma")),
    "bce.json": (fgbg.sigmoid_cross_entropy, False, ()),
    "softmax_ce.json": (fgbg.softmax_cross_entropy, True, ()),
    "softmax_focal.json": (fgbg.softmax_focal_loss, True, ("alpha", "gamma")),
}


@pytest.mark.parametrize("fname", list(SIMPLE))
def test_one_hot_losses(fname):
    fn, softmax, keys = SIMPLE[fname]
    for param in _cases(fname):
        d, case = param.values
        params = case.get("params", d.get("params", {}))
        x, y = _inputs(case, softmax)
        loss = fn(x, y, **{k: params[k] for k in keys}, **_norm(case["normalization"]))
        _check(loss, x, case)


@pytest.mark.parametrize("fname", ["qfl.json", "vfl.json"])
def test_quality_losses(fname):
    for param in _cases(fname):
        d, case = param.values
        params = case.get("params", d.get("params", {}))
        x, y = _inputs(case)
        q = torch.tensor(case["iou"], dtype=torch.float64).reshape(-1)
        if fname == "qfl.json":
            loss = fgbg.quality_focal_loss(x, y, q, beta=params["beta"],
                                           **_norm(case["normalization"]))
        else:
            loss = fgbg.varifocal_loss(x, y, q, alpha=params["alpha"], gamma=params["gamma"],
                                       iou_weighted=params["iou_weighted"],
                                       **_norm(case["normalization"]))
        _check(loss, x, case)


def test_soft_target_bce():
    for param in _cases("soft_target_bce.json"):
        _, case = param.values
        x, y = _inputs(case)
        t = torch.tensor(case["targets"], dtype=torch.float64).reshape(-1)
        loss = fgbg.soft_target_cross_entropy(x, y, t, **_norm(case["normalization"]))
        _check(loss, x, case)


def test_ghm_c():
    for param in _cases("ghm_c.json"):
        _, case = param.values
        params = case["params"]
        if "calls" in case:
            state = fgbg.ghmc_state(params["bins"])
            for call in case["calls"]:
                x, y = _inputs(call)
                loss = fgbg.ghmc_loss(x, y, bins=params["bins"], momentum=params["momentum"],
                                      state=state)
                _check(loss, x, call)
                ins = fgbg.ghmc_inspect(state)
                _close(ins["moving"], call["expected"]["state_after"])
                _close(ins["counts"], call["expected"]["bin_counts"])
                assert ins["nonempty"] == call["expected"]["num_nonempty_bins"]
                assert ins["tot"] == call["expected"]["tot"]
        else:
            x, y = _inputs(case)
            loss = fgbg.ghmc_loss(x, y, bins=params["bins"])
            _check(loss, x, case)
