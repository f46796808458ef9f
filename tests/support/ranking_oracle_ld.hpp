// Test support: the brute-force O(P·N) references of ranking_oracle.hpp evaluated in long double
// (the same body, ranking_oracle_impl.hpp, with Real = long double), so that H_δ of any two finite
// double scores and any finite δ > 0 is computed without overflow (2δ, s_k − s_i) and with
// 64-bit significands: the oracle of the edge-case tests (test_hardening_ranking.cpp).
//
// Original comment: brute-force O(P·N) references of AP loss, aLRP loss and Rank & Sort loss,
// written directly from spec ranking-and-unbiased §2.2, §3.2–3.3 and §4.2 (a plain loop over
// positives, like the official code, with H_δ evaluated pairwise). Used as the oracle of the
// sort-based implementations and as the naive baseline of the benchmarks.
#pragma once

#define FGBG_ORACLE_NAMESPACE fgbg_oracle_ld
#define FGBG_ORACLE_REAL long double
#include "ranking_oracle_impl.hpp"
#undef FGBG_ORACLE_REAL
#undef FGBG_ORACLE_NAMESPACE
