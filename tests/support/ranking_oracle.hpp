// Test support: brute-force O(P·N) references of AP loss, aLRP loss and Rank & Sort loss, written
// directly from spec ranking-and-unbiased §2.2, §3.2–3.3 and §4.2 (a plain loop over positives,
// like the official code, with H_δ evaluated pairwise). Used as the oracle of the sort-based
// implementations and as the naive baseline of the benchmarks.
#pragma once

#define FGBG_ORACLE_NAMESPACE fgbg_oracle
#define FGBG_ORACLE_REAL double
#include "ranking_oracle_impl.hpp"
#undef FGBG_ORACLE_REAL
#undef FGBG_ORACLE_NAMESPACE
