/// @file fgbg.hpp
/// @brief Umbrella header: every method of fgbg.
#pragma once

#include "core/core.hpp"
#include "soft_sampling/focal_loss_star.hpp"
#include "soft_sampling/ghm_c_loss.hpp"
#include "soft_sampling/prior_bias.hpp"
#include "soft_sampling/sigmoid_cross_entropy.hpp"
#include "soft_sampling/sigmoid_focal_loss.hpp"
#include "soft_sampling/softmax_cross_entropy.hpp"
#include "soft_sampling/softmax_focal_loss.hpp"
