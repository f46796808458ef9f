/// @file prior_bias.hpp
/// @brief The RetinaNet classification-bias initialisation.
///
/// Lin et al., ICCV 2017, §4.1: initialise the final classification layer's bias to
/// b = −log((1 − π)/π) so that every anchor starts predicting foreground probability π for
/// every class; π = 0.01 gives b = −4.59511985 (Detectron, detectron2, torchvision, mmdetection
/// all use π = 0.01). See unbiased/ for the sampling-free optimal bias computed from data.
#pragma once

#include "../core/requires_cxx17.hpp"

#include <cmath>

#include "../core/errors.hpp"

namespace fgbg {

/// b = log(π / (1 − π)), the logit of the prior foreground probability π ∈ (0, 1).
/// @throws std::invalid_argument unless 0 < π < 1.
inline double prior_bias(double pi = 0.01) {
  if (!(pi > 0.0 && pi < 1.0))
    detail::throw_invalid("fgbg::prior_bias", "pi must be in (0, 1), got ", pi);
  return std::log(pi) - std::log1p(-pi);
}

}  // namespace fgbg
