/// @file fgbg.hpp
/// @brief Umbrella header: every method of fgbg, grouped as the survey's taxonomy.
#pragma once

#include "core/requires_cxx17.hpp"

#include "core/core.hpp"

// Boxes and assignment.
#include "boxes/iou.hpp"
#include "boxes/max_iou_assigner.hpp"

// Hard sampling.
#include "hard_sampling/instance_balanced_sampler.hpp"
#include "hard_sampling/iou_balanced_sampler.hpp"
#include "hard_sampling/ohem_sampler.hpp"
#include "hard_sampling/random_sampler.hpp"
#include "hard_sampling/sample.hpp"
#include "hard_sampling/ssd_hard_negative_mining.hpp"

// Soft sampling.
#include "soft_sampling/carl.hpp"
#include "soft_sampling/dense_target_focal_loss.hpp"
#include "soft_sampling/equalized_focal_loss.hpp"
#include "soft_sampling/focal_loss_star.hpp"
#include "soft_sampling/ghm_c_loss.hpp"
#include "soft_sampling/isr_n.hpp"
#include "soft_sampling/isr_p.hpp"
#include "soft_sampling/prior_bias.hpp"
#include "soft_sampling/quality_focal_loss.hpp"
#include "soft_sampling/sigmoid_cross_entropy.hpp"
#include "soft_sampling/sigmoid_focal_loss.hpp"
#include "soft_sampling/soft_target_cross_entropy.hpp"
#include "soft_sampling/softmax_cross_entropy.hpp"
#include "soft_sampling/softmax_focal_loss.hpp"
#include "soft_sampling/varifocal_loss.hpp"

// Ranking-based losses.
#include "ranking/alrp_loss.hpp"
#include "ranking/ap_loss.hpp"
#include "ranking/dr_loss.hpp"
#include "ranking/rank_sort_loss.hpp"

// Unbiased learning.
#include "unbiased/class_adaptive_threshold.hpp"
#include "unbiased/guided_loss.hpp"
#include "unbiased/optimal_bias.hpp"
#include "unbiased/residual_objectness.hpp"
