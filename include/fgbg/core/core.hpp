/// @file core.hpp
/// @brief Everything in core/: conventions, checks, numerics, reductions, weights, the dense
///        engine and the shared drivers.
#pragma once

#include "requires_cxx17.hpp"

#include "checks.hpp"
#include "config.hpp"
#include "dense.hpp"
#include "ema_normalizer.hpp"
#include "errors.hpp"
#include "loss_base.hpp"
#include "numerics.hpp"
#include "random.hpp"
#include "reduction.hpp"
#include "sigmoid_head.hpp"
#include "softmax_head.hpp"
#include "state_io.hpp"
#include "table_lookup.hpp"
#include "weights.hpp"
