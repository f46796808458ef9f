// Fuzz target: the hard samplers (random, OHEM, OHEM paper with NMS, SSD hard-negative mining,
// IoU-balanced, instance-balanced) with every integer and floating-point parameter over its full
// range. Checks: only the two documented exception types; a throw leaves the Sample (and the
// IoU-balanced state) as it was; on success the sample is valid (positives have a foreground
// label, negatives label 0, no index twice, ascending when sorted, at most num in all and at most
// ⌊num · pos_fraction⌋ positives) and the same seed gives the same sample.
#include <fgbg/hard_sampling/instance_balanced_sampler.hpp>
#include <fgbg/hard_sampling/iou_balanced_sampler.hpp>
#include <fgbg/hard_sampling/ohem_sampler.hpp>
#include <fgbg/hard_sampling/random_sampler.hpp>
#include <fgbg/hard_sampling/ssd_hard_negative_mining.hpp>
#include <optional>
#include <random>
#include <set>

#include "fuzz_common.hpp"

namespace {
using namespace fz;
constexpr const char* kFam = "samplers";

bool same_sample(const fgbg::Sample& a, const fgbg::Sample& b) {
  return a.positives == b.positives && a.negatives == b.negatives &&
         vec_same(a.negative_weights, b.negative_weights);
}

void check_sample(const fgbg::Sample& s, const Labels& l, std::int64_t num, double pos_fraction,
                  bool sorted, bool bounded) {
  std::set<Index> seen;
  for (Index i : s.positives) {
    FZ_CHECK(i >= 0 && i < l.size() && l[i] > 0, kFam, "positive index without a foreground label");
    FZ_CHECK(seen.insert(i).second, kFam, "index sampled twice");
  }
  for (Index i : s.negatives) {
    FZ_CHECK(i >= 0 && i < l.size() && l[i] == 0, kFam, "negative index without label 0");
    FZ_CHECK(seen.insert(i).second, kFam, "index sampled twice");
  }
  FZ_CHECK(s.negative_weights.empty() || s.negative_weights.size() == s.negatives.size(), kFam,
           "negative_weights of the wrong size");
  for (double w : s.negative_weights)
    FZ_CHECK(std::isfinite(w) && w >= 0, kFam, "bad negative weight");
  if (sorted) {
    FZ_CHECK(std::is_sorted(s.positives.begin(), s.positives.end()), kFam,
             "positives not ascending");
    FZ_CHECK(std::is_sorted(s.negatives.begin(), s.negatives.end()), kFam,
             "negatives not ascending");
  }
  if (bounded) {
    FZ_CHECK(s.size() <= num, kFam, "more than num sampled");
    // ⌊num · pos_fraction⌋ with the product rounded to double, as mmdetection's int(num *
    // pos_fraction) and the library compute it (in long double 15 · 0.5333… is 7.99…, in double
    // exactly 8).
    const long double pmax = std::floor(static_cast<double>(num) * pos_fraction);
    FZ_CHECK(s.num_positives() <= pmax, kFam, "more than floor(num * pos_fraction) positives");
  }
}

template <typename F>
void protocol(In& in, F&& draw, const Labels& l, std::int64_t num, double pf, bool sorted,
              bool bounded) {
  const std::uint64_t seed = in.bits(8);
  fgbg::Sample s;
  s.positives = {3, 1}, s.negatives = {7}, s.negative_weights = {0.5};
  const fgbg::Sample s0 = s;
  std::mt19937_64 rng(seed);
  if (!completes(kFam, [&] { draw(rng, s); })) {
    FZ_CHECK(same_sample(s, s0), kFam, "Sample written before a throw");
    return;
  }
  check_sample(s, l, num, pf, sorted, bounded);
  fgbg::Sample t;
  std::mt19937_64 rng2(seed);
  draw(rng2, t);
  FZ_CHECK(same_sample(s, t), kFam, "same seed, different sample");
}

void run(In& in) {
  const int method = in.u8() % 6;
  const Index n = in.small(12);
  Labels l(n);
  for (Index i = 0; i < n; ++i) l[i] = in.label(3);
  fgbg::SamplerConfig sc;
  sc.num = in.i64(), sc.pos_fraction = in.flag() ? in.u8() / 255.0 : in.any<double>();
  sc.neg_pos_ub = in.flag() ? -1.0 : in.any<double>(), sc.sorted = in.flag();
  Eigen::ArrayXd loss(n), iou(n);
  for (Index i = 0; i < n; ++i) loss[i] = in.mostly_moderate<double>();
  for (Index i = 0; i < n; ++i) iou[i] = in.flag() ? in.u8() / 255.0 : in.any<double>();
  Eigen::Array<std::int64_t, Eigen::Dynamic, 1> gt(n);
  for (Index i = 0; i < n; ++i) gt[i] = in.flag() ? in.small(3) : in.i64();
  context().clear();
  note("method", method), note("num", sc.num), note("pos_fraction", sc.pos_fraction);
  note("neg_pos_ub", sc.neg_pos_ub), note("sorted", sc.sorted), note_array("labels", l);
  note_array("loss", loss), note_array("iou", iou), note_array("gt_index", gt);
  switch (method) {
    case 0: {
      std::optional<fgbg::RandomSampler> smp;
      if (completes(kFam, [&] { smp.emplace(sc); }))
        protocol(
            in, [&](auto& rng, fgbg::Sample& s) { smp->sample(l, rng, s); }, l, sc.num,
            sc.pos_fraction, sc.sorted, true);
      break;
    }
    case 1: {
      std::optional<fgbg::OhemSampler> smp;
      if (completes(kFam, [&] { smp.emplace(sc); }))
        protocol(
            in, [&](auto&, fgbg::Sample& s) { smp->sample(l, loss, s); }, l, sc.num,
            sc.pos_fraction, sc.sorted, true);
      break;
    }
    case 2: {
      fgbg::OhemPaperSamplerConfig pc;
      pc.num = sc.num, pc.use_nms = in.flag(),
      pc.nms_thresh = in.flag() ? in.u8() / 255.0 : in.any<double>();
      pc.sorted = sc.sorted;
      note("nms_thresh", pc.nms_thresh), note("use_nms", pc.use_nms);
      RowA<double> boxes(n, 4);
      for (Index i = 0; i < n; ++i) {
        boxes(i, 0) = in.small(8), boxes(i, 1) = in.small(8);
        boxes(i, 2) = boxes(i, 0) + in.small(8), boxes(i, 3) = boxes(i, 1) + in.small(8);
      }
      std::optional<fgbg::OhemPaperSampler> smp;
      if (completes(kFam, [&] { smp.emplace(pc); }))
        protocol(
            in, [&](auto&, fgbg::Sample& s) { smp->sample(l, boxes, loss, s); }, l, pc.num, 1.0,
            pc.sorted, true);
      break;
    }
    case 3: {
      fgbg::SsdHardNegativeMiningConfig mc;
      mc.neg_pos_ratio = in.any<double>(), mc.sorted = sc.sorted;
      note("neg_pos_ratio", mc.neg_pos_ratio);
      std::optional<fgbg::SsdHardNegativeMining> smp;
      if (completes(kFam, [&] { smp.emplace(mc); }))
        protocol(
            in, [&](auto&, fgbg::Sample& s) { smp->sample(l, loss, s); }, l, 0, 0, mc.sorted,
            false);
      break;
    }
    case 4: {
      fgbg::IouBalancedSamplerConfig ic;
      ic.batch = sc;
      ic.floor_thr = in.flag() ? -1.0 : in.any<double>();
      ic.floor_fraction = in.flag() ? in.u8() / 255.0 : in.any<double>();
      ic.num_bins = in.i64();
      ic.mode = in.flag() ? fgbg::IouBalanceMode::faithful : fgbg::IouBalanceMode::clean;
      ic.range_upper = static_cast<fgbg::IouRangeUpper>(in.u8() % 3);
      ic.fixed_upper = in.flag() ? in.u8() / 255.0 : in.any<double>();
      ic.instance_balanced_positives = in.flag();
      ic.positive_mode =
          in.flag() ? fgbg::InstanceBalanceMode::faithful : fgbg::InstanceBalanceMode::clean;
      const bool with_state = in.flag();
      fgbg::IouBalancedState st;
      const double state_thr = in.flag() ? -1.0 : in.any<double>();
      try {
        st.restore({state_thr});  // refused, state untouched, unless -1 or in [0, 1]
      } catch (const std::invalid_argument&) {
        FZ_CHECK(st.floor_thr() == -1, kFam, "IoU-balanced state changed by a refused restore");
      }
      note("floor_thr", ic.floor_thr), note("floor_fraction", ic.floor_fraction),
          note("num_bins", ic.num_bins);
      note("faithful", ic.mode == fgbg::IouBalanceMode::faithful),
          note("range_upper", int(ic.range_upper));
      note("fixed_upper", ic.fixed_upper), note("state_floor_thr", st.floor_thr());
      std::optional<fgbg::IouBalancedSampler> smp;
      if (completes(kFam, [&] { smp.emplace(ic); })) {
        const fgbg::IouBalancedState st0 = st;
        fgbg::IouBalancedState* sp = with_state ? &st : nullptr;
        bool threw = false;
        protocol(
            in,
            [&](auto& rng, fgbg::Sample& s) {
              st = st0;
              try {
                smp->sample(l, gt, iou, rng, s, sp);
              } catch (...) {
                FZ_CHECK(same_bits(st.floor_thr(), st0.floor_thr()), kFam,
                         "IoU-balanced state changed by a throw");
                threw = true;
                throw;
              }
            },
            l, sc.num, sc.pos_fraction, sc.sorted, true);
        (void)threw;
      }
      break;
    }
    default: {
      fgbg::InstanceBalancedSamplerConfig bc;
      bc.batch = sc;
      bc.mode = in.flag() ? fgbg::InstanceBalanceMode::faithful : fgbg::InstanceBalanceMode::clean;
      std::optional<fgbg::InstanceBalancedSampler> smp;
      if (completes(kFam, [&] { smp.emplace(bc); }))
        protocol(
            in, [&](auto& rng, fgbg::Sample& s) { smp->sample(l, gt, rng, s); }, l, sc.num,
            sc.pos_fraction, sc.sorted, true);
    }
  }
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  In in(data, size);
  run(in);
  return 0;
}
