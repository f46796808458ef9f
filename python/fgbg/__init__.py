"""fgbg for PyTorch: the foreground-background imbalance losses of fgbg (C++17, header-only) as
torch functions and modules, on the CPU.

    import fgbg
    loss = fgbg.sigmoid_focal_loss(logits, labels, reduction="num_positives")
    loss.backward()

Functions: fgbg.functional (also re-exported here); mmdetection-style modules: fgbg.nn;
torchvision's sigmoid_focal_loss with float targets: fgbg.torchvision. See docs/python.md.
The extension is compiled for the CPU it was built on (-march=native unless FGBG_PY_NATIVE=0).
"""
from ._core import NonFiniteError
from .functional import (alrp_loss, ap_loss, binary_cross_entropy, carl_loss, cross_entropy,
                         dr_loss, efl_commit, efl_inspect, efl_state, equalized_focal_loss,
                         ghmc_inspect, ghmc_loss, ghmc_state, ghmc_statistics, guided_loss, isr_p,
                         quality_focal_loss, rank_sort_loss, residual_objectness_inspect,
                         residual_objectness_loss, residual_objectness_scores,
                         residual_objectness_state, residual_objectness_statistics,
                         sigmoid_cross_entropy,
                         sigmoid_focal_loss, sigmoid_focal_loss_star, soft_target_cross_entropy,
                         softmax_cross_entropy, softmax_focal_loss, varifocal_loss)
from . import nn, sampling, sampling_free, torchvision  # noqa: E402,F401
from .sampling import (instance_balanced_sample, iou_balanced_sample,  # noqa: E402
                       iou_balanced_state, max_iou_assign, ohem_sample, random_sample,
                       sample_weights, score_hlr_sample, ssd_hard_negative_mining)

__version__ = "0.1.0"
