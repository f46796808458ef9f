/// @file fgbg.hpp
/// @brief Umbrella header: every method of fgbg.
#pragma once

#include "core/core.hpp"
#include "soft_sampling/sigmoid_cross_entropy.hpp"
#include "soft_sampling/sigmoid_focal_loss.hpp"
