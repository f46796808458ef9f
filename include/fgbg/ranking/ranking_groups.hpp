/// @file ranking_groups.hpp
/// @brief Iteration over the groups (images) of a ranking call: runs of equal group id.
///
/// Holds for_each_group and count_groups_with_positives.
#pragma once

#include "../core/requires_cxx17.hpp"

#include "../core/config.hpp"

namespace fgbg {
namespace detail {

/// Calls f(first, count) for every run of equal group id, in order.
template <typename GrD, typename F>
void for_each_group(const Eigen::DenseBase<GrD>& groups, F&& f) {
  const Index n = groups.size();
  Index first = 0;
  for (Index a = 1; a <= n; ++a) {
    if (a == n || groups.derived().coeff(a) != groups.derived().coeff(first)) {
      f(first, a - first);
      first = a;
    }
  }
}

/// Number of groups with at least one anchor for which has_positive(anchor) holds.
template <typename GrD, typename HasPos>
Index count_groups_with_positives(const Eigen::DenseBase<GrD>& groups, const HasPos& has_positive) {
  Index count = 0;
  for_each_group(groups, [&](Index first, Index len) {
    for (Index a = first; a < first + len; ++a)
      if (has_positive(a)) {
        ++count;
        return;
      }
  });
  return count;
}

}  // namespace detail
}  // namespace fgbg
