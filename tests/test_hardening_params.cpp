// Issue 9 §2: no value of any integer or floating-point parameter of the samplers, the assigner,
// PISA, CARL, the guided loss and the optimal-bias functions reaches undefined behaviour. Every
// field is walked over the extremes of its type; each value either gives a clean
// std::invalid_argument naming the class and the field, or a correct result, checked against an
// independent oracle (counts from the batch rule in long double, results of a larger config,
// long-double formulas). Build with -fsanitize=address,undefined -fno-sanitize-recover=all to
// prove the absence of UB (scripts or CMake: see the report of issue 9).
#include <catch2/catch.hpp>

#include <fgbg/boxes/max_iou_assigner.hpp>
#include <fgbg/hard_sampling/instance_balanced_sampler.hpp>
#include <fgbg/hard_sampling/iou_balanced_sampler.hpp>
#include <fgbg/hard_sampling/ohem_sampler.hpp>
#include <fgbg/hard_sampling/random_sampler.hpp>
#include <fgbg/hard_sampling/ssd_hard_negative_mining.hpp>
#include <fgbg/soft_sampling/carl.hpp>
#include <fgbg/soft_sampling/isr_n.hpp>
#include <fgbg/soft_sampling/isr_p.hpp>
#include <fgbg/soft_sampling/prior_bias.hpp>
#include <fgbg/soft_sampling/sigmoid_cross_entropy.hpp>
#include <fgbg/unbiased/class_adaptive_threshold.hpp>
#include <fgbg/unbiased/guided_loss.hpp>
#include <fgbg/unbiased/optimal_bias.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <set>
#include <string>
#include <vector>

using fgbg::Index;

namespace {

constexpr std::int64_t kI64Max = std::numeric_limits<std::int64_t>::max();
constexpr std::int64_t kI64Min = std::numeric_limits<std::int64_t>::min();

/// Integer extremes (and the values around every bound the library uses).
const std::vector<std::int64_t>& int_values() {
  static const std::vector<std::int64_t> v = {0,
                                              -1,
                                              1,
                                              2,
                                              3,
                                              7,
                                              40,
                                              1024,
                                              1025,
                                              std::int64_t(1) << 31,
                                              std::int64_t(1) << 40,
                                              std::int64_t(1) << 53,
                                              (std::int64_t(1) << 53) + 1,
                                              std::int64_t(1) << 61,
                                              std::int64_t(1) << 62,
                                              kI64Max - 1,
                                              kI64Max,
                                              kI64Min,
                                              kI64Min + 1};
  return v;
}

/// Floating-point extremes of type T.
template <typename T>
std::vector<T> real_values() {
  using L = std::numeric_limits<T>;
  return {T(0),
          -T(0),
          T(1),
          T(-1),
          T(0.5),
          T(0.25),
          T(1) - L::epsilon(),
          T(1) + L::epsilon(),
          T(2),
          T(2.99),
          T(3),
          T(1e30),
          T(-1e30),
          L::max(),
          -L::max(),
          L::min(),
          L::denorm_min(),
          -L::denorm_min(),
          L::infinity(),
          -L::infinity(),
          L::quiet_NaN(),
          T(1e-30)};
}

/// Requires `e` to be the library's parameter message for `cls` and `field`.
void check_param_message(const std::invalid_argument& e, const std::string& cls,
                         const std::string& field) {
  const std::string m = e.what();
  INFO(m);
  CHECK(m.rfind(cls + ": ", 0) == 0);
  CHECK(m.find(field) != std::string::npos);
}

// ------------------------------------------------------------------ a small image
struct Image {
  fgbg::LabelVector labels;
  Eigen::ArrayXi gt;
  Eigen::ArrayXd iou, loss;
  Eigen::Array<double, Eigen::Dynamic, 4, Eigen::RowMajor> boxes;
  std::vector<Index> pos, neg;
};

Image make_image() {
  Image im;
  const Index n = 40;
  im.labels.resize(n);
  im.gt.resize(n);
  im.iou.resize(n);
  im.loss.resize(n);
  im.boxes.resize(n, 4);
  std::mt19937_64 rng(9);
  std::uniform_real_distribution<double> u(0, 1);
  for (Index i = 0; i < n; ++i) {
    const int l = i % 5 == 0 ? 1 + static_cast<int>(i % 3) : (i % 7 == 3 ? -1 : 0);
    im.labels[i] = l;
    im.gt[i] = l > 0 ? static_cast<int>(i % 4) : -1;
    im.iou[i] = l > 0 ? 0.5 + 0.5 * u(rng) : 0.49 * u(rng);
    im.loss[i] = 3 * u(rng);
    const double x = 100 * u(rng), y = 100 * u(rng);
    im.boxes.row(i) << x, y, x + 1 + 50 * u(rng), y + 1 + 50 * u(rng);
    if (l > 0) im.pos.push_back(i);
    if (l == 0) im.neg.push_back(i);
  }
  return im;
}

long double floor_ld(long double x) {
  return std::floor(x);
}

/// The batch rule of sampling_common.hpp in long double: (P, N) for |Pos| and |Neg|.
std::pair<long double, long double> batch_counts(const fgbg::SamplerConfig& c, Index n_pos,
                                                 Index n_neg) {
  const long double p_exp = floor_ld(static_cast<long double>(c.num) * c.pos_fraction);
  const long double p = std::min<long double>(n_pos, p_exp);
  long double n_exp = static_cast<long double>(c.num) - p;
  if (c.neg_pos_ub >= 0)
    n_exp = std::min(
        n_exp, floor_ld(static_cast<long double>(c.neg_pos_ub) * std::max<long double>(1, p)));
  return {p, std::min<long double>(n_neg, n_exp)};
}

/// Positives ⊆ Pos, negatives ⊆ Neg, no index twice.
void check_sample_sets(const fgbg::Sample& s, const Image& im) {
  std::set<Index> seen;
  for (const Index i : s.positives) {
    REQUIRE(i >= 0);
    REQUIRE(i < im.labels.size());
    CHECK(im.labels[i] > 0);
    CHECK(seen.insert(i).second);
  }
  for (const Index i : s.negatives) {
    REQUIRE(i >= 0);
    REQUIRE(i < im.labels.size());
    CHECK(im.labels[i] == 0);
    CHECK(seen.insert(i).second);
  }
}

/// Every SamplerConfig variant: one field at an extreme, the others at a normal value.
std::vector<fgbg::SamplerConfig> sampler_configs() {
  std::vector<fgbg::SamplerConfig> out;
  for (const std::int64_t v : int_values())
    for (const double pf : {0.0, 0.25, 1.0}) {
      fgbg::SamplerConfig c;
      c.num = v;
      c.pos_fraction = pf;
      out.push_back(c);
    }
  for (const double v : real_values<double>()) {
    for (const std::int64_t num : {std::int64_t(12), kI64Max}) {
      fgbg::SamplerConfig c;
      c.num = num;
      c.pos_fraction = v;
      out.push_back(c);
      c.pos_fraction = 0.5;
      c.neg_pos_ub = v;
      out.push_back(c);
    }
  }
  return out;
}

bool sampler_config_valid(const fgbg::SamplerConfig& c) {
  return c.num >= 0 && c.pos_fraction >= 0 && c.pos_fraction <= 1 &&
         (c.neg_pos_ub == -1 || (c.neg_pos_ub >= 0 && std::isfinite(c.neg_pos_ub)));
}

template <typename Sampler, typename Run>
void walk_batch_sampler(const char* name, Run&& run) {
  const Image im = make_image();
  const Index n_pos = static_cast<Index>(im.pos.size()), n_neg = static_cast<Index>(im.neg.size());
  for (const fgbg::SamplerConfig& c : sampler_configs()) {
    INFO(name << " num = " << c.num << ", pos_fraction = " << c.pos_fraction
              << ", neg_pos_ub = " << c.neg_pos_ub);
    bool built = false;
    try {
      const Sampler s = [&] {
        if constexpr (std::is_same<typename Sampler::Config, fgbg::SamplerConfig>::value)
          return Sampler(c);
        else {
          typename Sampler::Config full;
          full.batch = c;
          return Sampler(full);
        }
      }();
      built = true;
      fgbg::Sample out;
      run(s, im, out);
      check_sample_sets(out, im);
      const auto want = batch_counts(c, n_pos, n_neg);
      CHECK(static_cast<long double>(out.num_positives()) == want.first);
      CHECK(static_cast<long double>(out.num_negatives()) == want.second);
    } catch (const std::invalid_argument& e) {
      CHECK_FALSE(built);
      CHECK_FALSE(sampler_config_valid(c));
      check_param_message(e, name, "config.");
    }
    CHECK(built == sampler_config_valid(c));
  }
}

}  // namespace

// ================================================================== §2 regressions

TEST_CASE("RandomSampler: num = INT64_MAX with pos_fraction 1 takes every candidate",
          "[hardening][sampler]") {
  // ⌊INT64_MAX · 1.0⌋ was converted from 2^63 (UB; INT64_MIN on x86, then choose_k threw after
  // the Sample had been cleared and refilled).
  const Image im = make_image();
  for (const double pf : {1.0, 0.5, 0.0}) {
    const fgbg::RandomSampler s({kI64Max, pf, -1, true});
    fgbg::Sample out;
    out.positives = {999};
    std::mt19937_64 rng(1);
    REQUIRE_NOTHROW(s.sample(im.labels, rng, out));
    if (pf > 0) CHECK(out.positives == im.pos);
    CHECK(out.negatives == im.neg);
    CHECK(s.config().expected_positives() == (pf == 1.0   ? kI64Max
                                              : pf == 0.0 ? 0
                                                          : std::int64_t(1) << 62));
  }
}

TEST_CASE("Batch samplers: every SamplerConfig value is rejected or gives the batch rule",
          "[hardening][sampler]") {
  walk_batch_sampler<fgbg::RandomSampler>(
      "fgbg::RandomSampler", [](const fgbg::RandomSampler& s, const Image& im, fgbg::Sample& out) {
        std::mt19937_64 rng(3);
        s.sample(im.labels, rng, out);
      });
  walk_batch_sampler<fgbg::OhemSampler>(
      "fgbg::OhemSampler", [](const fgbg::OhemSampler& s, const Image& im, fgbg::Sample& out) {
        s.sample(im.labels, im.loss, out);
      });
  walk_batch_sampler<fgbg::InstanceBalancedSampler>(
      "fgbg::InstanceBalancedSampler",
      [](const fgbg::InstanceBalancedSampler& s, const Image& im, fgbg::Sample& out) {
        std::mt19937_64 rng(4);
        s.sample(im.labels, im.gt, rng, out);
      });
  walk_batch_sampler<fgbg::IouBalancedSampler>(
      "fgbg::IouBalancedSampler",
      [](const fgbg::IouBalancedSampler& s, const Image& im, fgbg::Sample& out) {
        std::mt19937_64 rng(5);
        s.sample(im.labels, im.gt, im.iou, rng, out);
      });
}

TEST_CASE("IouBalancedSampler: num_bins is bounded, floor_fraction and the other fields walked",
          "[hardening][sampler]") {
  const Image im = make_image();
  // 2^40 bins used to be accepted (about 41 hours per call).
  for (const std::int64_t k : int_values()) {
    fgbg::IouBalancedSamplerConfig c;
    c.num_bins = k;
    const bool ok = k >= 1 && k <= 1024;
    INFO("num_bins = " << k);
    try {
      const fgbg::IouBalancedSampler s(c);
      CHECK(ok);
      fgbg::Sample out;
      std::mt19937_64 rng(1);
      s.sample(im.labels, im.gt, im.iou, rng, out);
      check_sample_sets(out, im);
      CHECK(out.num_negatives() == static_cast<Index>(im.neg.size()));  // 512 − P > |Neg|
    } catch (const std::invalid_argument& e) {
      CHECK_FALSE(ok);
      check_param_message(e, "fgbg::IouBalancedSampler", "config.num_bins must be in [1, 1024]");
    }
  }
  // Real fields, with a batch that forces binning (num small) and one that takes everything.
  for (const double v : real_values<double>())
    for (int field = 0; field < 3; ++field)
      for (const std::int64_t num : {std::int64_t(16), kI64Max}) {
        fgbg::IouBalancedSamplerConfig c;
        c.batch.num = num;
        c.batch.pos_fraction = 0.0;  // every slot a negative: N_exp = num
        c.range_upper = fgbg::IouRangeUpper::fixed;
        const char* name = field == 0 ? "floor_thr" : field == 1 ? "floor_fraction" : "fixed_upper";
        (field == 0 ? c.floor_thr : field == 1 ? c.floor_fraction : c.fixed_upper) = v;
        const bool ok = field == 0   ? (v == -1 || (v >= 0 && v <= 1))
                        : field == 1 ? (v >= 0 && v <= 1)
                                     : (v > 0 && v <= 1);
        INFO(name << " = " << v << ", num = " << num);
        try {
          const fgbg::IouBalancedSampler s(c);
          CHECK(ok);
          fgbg::Sample out;
          std::mt19937_64 rng(2);
          s.sample(im.labels, im.gt, im.iou, rng, out);
          check_sample_sets(out, im);
          CHECK(out.num_positives() == 0);
          CHECK(out.num_negatives() == std::min<Index>(num, static_cast<Index>(im.neg.size())));
          // sample_negatives with every n_exp (INT64_MAX: N_s = ⌊n_exp (1 − f)⌋ was converted
          // from 2^63).
          for (const std::int64_t n_exp : int_values()) {
            fgbg::Sample o2;
            if (n_exp < 0) {
              CHECK_THROWS_AS(s.sample_negatives(im.labels, im.iou, n_exp, rng, o2),
                              std::invalid_argument);
              continue;
            }
            s.sample_negatives(im.labels, im.iou, n_exp, rng, o2);
            check_sample_sets(o2, im);
            CHECK(o2.num_negatives() == std::min<Index>(n_exp, static_cast<Index>(im.neg.size())));
          }
        } catch (const std::invalid_argument& e) {
          CHECK_FALSE(ok);
          check_param_message(e, "fgbg::IouBalancedSampler", std::string("config.") + name);
        }
      }
}

TEST_CASE("OhemPaperSampler: every num keeps the first num NMS survivors", "[hardening][sampler]") {
  // 4 · num + 64 overflowed for num ≥ 2^61.
  const Image im = make_image();
  fgbg::OhemPaperSamplerConfig ref_c;
  ref_c.num = 1000;  // more than the candidates: every survivor
  ref_c.sorted = false;
  fgbg::Sample ref;
  fgbg::OhemPaperSampler(ref_c).sample(im.labels, im.boxes, im.loss, ref);
  std::vector<Index> order;  // survivors in (loss desc, index asc) order
  {
    std::vector<std::pair<double, Index>> k;
    for (const Index i : ref.positives) k.emplace_back(im.loss[i], i);
    for (const Index i : ref.negatives) k.emplace_back(im.loss[i], i);
    std::sort(k.begin(), k.end(), [](auto a, auto b) {
      return a.first > b.first || (a.first == b.first && a.second < b.second);
    });
    for (auto& p : k) order.push_back(p.second);
  }
  REQUIRE(order.size() > 5);
  for (const std::int64_t num : int_values()) {
    INFO("num = " << num);
    fgbg::OhemPaperSamplerConfig c;
    c.num = num;
    try {
      const fgbg::OhemPaperSampler s(c);
      CHECK(num >= 0);
      fgbg::Sample out;
      s.sample(im.labels, im.boxes, im.loss, out);
      const std::size_t keep = static_cast<std::size_t>(
          std::min<std::int64_t>(num, static_cast<std::int64_t>(order.size())));
      std::vector<Index> want(order.begin(), order.begin() + static_cast<std::ptrdiff_t>(keep));
      std::sort(want.begin(), want.end());
      std::vector<Index> got = out.positives;
      got.insert(got.end(), out.negatives.begin(), out.negatives.end());
      std::sort(got.begin(), got.end());
      CHECK(got == want);
    } catch (const std::invalid_argument& e) {
      CHECK(num < 0);
      check_param_message(e, "fgbg::OhemPaperSampler", "config.num");
    }
  }
  for (const double t : real_values<double>()) {
    fgbg::OhemPaperSamplerConfig c;
    c.nms_thresh = t;
    const bool ok = t >= 0 && t <= 1;
    INFO("nms_thresh = " << t);
    try {
      const fgbg::OhemPaperSampler s(c);
      CHECK(ok);
      fgbg::Sample out;
      s.sample(im.labels, im.boxes, im.loss, out);
      check_sample_sets(out, im);
      CHECK(out.size() <= 64);
    } catch (const std::invalid_argument& e) {
      CHECK_FALSE(ok);
      check_param_message(e, "fgbg::OhemPaperSampler", "config.nms_thresh");
    }
  }
}

TEST_CASE("SsdHardNegativeMining: every neg_pos_ratio", "[hardening][sampler]") {
  const Image im = make_image();
  for (const double r : real_values<double>()) {
    INFO("neg_pos_ratio = " << r);
    const bool ok = r >= 0 && std::isfinite(r);
    try {
      const fgbg::SsdHardNegativeMining s({r, true});
      CHECK(ok);
      fgbg::Sample out;
      s.sample(im.labels, im.loss, out);
      check_sample_sets(out, im);
      CHECK(static_cast<long double>(out.num_negatives()) ==
            std::min<long double>(static_cast<long double>(im.neg.size()),
                                  floor_ld(static_cast<long double>(r) * im.pos.size())));
    } catch (const std::invalid_argument& e) {
      CHECK_FALSE(ok);
      check_param_message(e, "fgbg::SsdHardNegativeMining", "config.neg_pos_ratio");
    }
  }
}

TEMPLATE_TEST_CASE("ScoreHlrSampler: every config value is rejected or follows the batch rule",
                   "[hardening][sampler][isr_n]", float, double) {
  using S = TestType;
  // num = INT64_MAX: ⌊num · pos_fraction⌋ converted from 2^63, then num − P overflowed.
  const Image im = make_image();
  const Index n = im.labels.size(), c = 3;
  Eigen::Array<S, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor> logits(n, c + 1);
  std::mt19937_64 rng0(11);
  std::normal_distribution<double> nd(0, 2);
  for (Index i = 0; i < logits.size(); ++i) logits.data()[i] = static_cast<S>(nd(rng0));
  const Eigen::Array<S, Eigen::Dynamic, 4, Eigen::RowMajor> boxes = im.boxes.template cast<S>();
  const Index n_pos = static_cast<Index>(im.pos.size()), n_neg = static_cast<Index>(im.neg.size());

  auto run = [&](const fgbg::ScoreHlrSamplerConfig& cfg, bool ok) {
    try {
      const fgbg::ScoreHlrSampler<S> s(cfg);
      CHECK(ok);
      fgbg::Sample out;
      fgbg::ScoreHlrWorkspace<S> ws;
      std::mt19937_64 rng(7);
      s.sample(im.labels, logits, boxes, rng, out, ws);
      check_sample_sets(out, im);
      fgbg::SamplerConfig b{cfg.num, cfg.pos_fraction, cfg.neg_pos_ub, true};
      const auto want = batch_counts(b, n_pos, n_neg);
      CHECK(static_cast<long double>(out.num_positives()) == want.first);
      CHECK(static_cast<long double>(out.num_negatives()) == want.second);
      for (const double w : out.negative_weights) {
        CHECK(std::isfinite(w));
        CHECK(w >= 0);
      }
    } catch (const std::invalid_argument& e) {
      CHECK_FALSE(ok);
      check_param_message(e, "fgbg::ScoreHlrSampler", "config.");
    }
  };
  for (const std::int64_t v : int_values())
    for (const double pf : {0.0, 0.25, 1.0}) {
      fgbg::ScoreHlrSamplerConfig cfg;
      cfg.num = v;
      cfg.pos_fraction = pf;
      INFO("num = " << v << ", pos_fraction = " << pf);
      run(cfg, v >= 0);
    }
  for (const double v : real_values<double>())
    for (int field = 0; field < 6; ++field) {
      fgbg::ScoreHlrSamplerConfig cfg;
      cfg.num = field % 2 ? kI64Max : 16;
      double* f[] = {&cfg.pos_fraction, &cfg.neg_pos_ub, &cfg.k,
                     &cfg.bias,         &cfg.score_thr,  &cfg.iou_thr};
      *f[field] = v;
      const bool ok[] = {v >= 0 && v <= 1,
                         v == -1 || (v >= 0 && std::isfinite(v)),
                         v >= 0 && std::isfinite(v),
                         v >= 0 && v <= 1,
                         v >= 0 && v < 1,
                         v >= 0 && v <= 1};
      INFO("field " << field << " = " << v);
      run(cfg, ok[field]);
    }
}

TEST_CASE("MaxIouAssigner: every threshold value is rejected or gives a valid assignment",
          "[hardening][boxes]") {
  const Image im = make_image();
  Eigen::Array<double, Eigen::Dynamic, 4, Eigen::RowMajor> gts(3, 4);
  gts << 10, 10, 60, 60, 40, 40, 90, 80, 0, 0, 5, 5;
  fgbg::LabelVector gl(3);
  gl << 1, 2, 3;
  for (const double v : real_values<double>())
    for (int field = 0; field < 4; ++field) {
      fgbg::MaxIouAssignerConfig c;
      double* f[] = {&c.pos_iou_thr, &c.neg_iou_thr, &c.neg_iou_lo, &c.min_pos_iou};
      *f[field] = v;
      const bool ok = c.pos_iou_thr >= 0 && c.pos_iou_thr <= 1 && c.neg_iou_thr >= 0 &&
                      c.neg_iou_thr <= 1 && c.neg_iou_lo >= 0 && c.neg_iou_lo <= c.neg_iou_thr &&
                      c.min_pos_iou >= 0 && c.min_pos_iou <= 1 && c.neg_iou_thr <= c.pos_iou_thr;
      INFO("field " << field << " = " << v);
      try {
        const fgbg::MaxIouAssigner a(c);
        CHECK(ok);
        fgbg::Assignment out;
        a.assign(im.boxes, gts, gl, out);
        for (Index i = 0; i < out.size(); ++i) {
          CHECK(out.labels()[i] >= -1);
          CHECK(out.labels()[i] <= 3);
        }
      } catch (const std::invalid_argument& e) {
        CHECK_FALSE(ok);
        check_param_message(e, "fgbg::MaxIouAssigner", "config.");
      }
    }
}

// ------------------------------------------------------------------ ISR-P oracle
namespace {

/// One class, one GT per positive, distinct IoUs: the IoU-HLR rank is the IoU rank, so the
/// weights have a closed form, evaluated in long double.
struct IsrCase {
  std::vector<double> iou, loss, lw;
};

std::vector<long double> isr_oracle(const IsrCase& c, long double k, long double b) {
  const std::size_t p = c.iou.size();
  std::vector<std::size_t> by_iou(p);
  for (std::size_t i = 0; i < p; ++i) by_iou[i] = i;
  std::sort(by_iou.begin(), by_iou.end(), [&](auto x, auto y) { return c.iou[x] > c.iou[y]; });
  std::vector<long double> w(p);
  long double num = 0, den = 0;
  const long double nm = static_cast<long double>(p);
  for (std::size_t r = 0; r < p; ++r) {
    const std::size_t i = by_iou[r];
    const long double u = c.lw[i] * ((nm - r) / nm);
    w[i] = std::pow(b + u * (1 - b), k);
    num += c.loss[i] * static_cast<long double>(c.lw[i]);
    den += c.loss[i] * w[i];
  }
  for (std::size_t i = 0; i < p; ++i) w[i] = den > 0 ? w[i] * num / den : c.lw[i];
  return w;
}

template <typename S>
std::vector<double> isr_run(const fgbg::IsrP<S>& isr, const IsrCase& c) {
  const Index p = static_cast<Index>(c.iou.size());
  fgbg::LabelVector labels = fgbg::LabelVector::Ones(p + 1);
  labels[p] = 0;
  Eigen::ArrayXi gt(p + 1);
  Eigen::ArrayXd iou(p + 1), loss(p + 1), lw(p + 1);
  for (Index i = 0; i < p; ++i) {
    gt[i] = static_cast<int>(i);
    iou[i] = c.iou[i];
    loss[i] = c.loss[i];
    lw[i] = c.lw[i];
  }
  gt[p] = -1;
  iou[p] = loss[p] = 0;
  lw[p] = 1;
  Eigen::Array<S, Eigen::Dynamic, 1> out(p + 1);
  isr.weights(labels, gt, iou, loss, lw, 1, out);
  CHECK(out[p] == S(1));
  std::vector<double> r(static_cast<std::size_t>(p));
  for (Index i = 0; i < p; ++i) r[i] = static_cast<double>(out[i]);
  return r;
}

}  // namespace

TEST_CASE("ISR-P: k = FLT_MAX with a label weight above 1 gives the exact weight, not NaN",
          "[hardening][isr_p]") {
  // base^k = inf, Σℓ·w = inf, ratio 0, weight inf · 0 = NaN before.
  const fgbg::IsrP<float> isr({std::numeric_limits<float>::max(), 0.0f});
  const IsrCase c{{0.8}, {0.7}, {2.99}};
  const auto w = isr_run(isr, c);
  CHECK(w[0] == static_cast<double>(2.99f));
  // Two positives: the top-ranked one carries the whole loss (the other's (base/B)^k is 0).
  const IsrCase c2{{0.8, 0.6}, {0.7, 0.3}, {2.99, 2.5}};
  const auto w2 = isr_run(isr, c2);
  CHECK(w2[0] == Approx((0.7 * 2.99 + 0.3 * 2.5) / 0.7).epsilon(1e-6));
  CHECK(w2[1] == 0.0);
}

TEST_CASE("ISR-P: label weights {1e200, 1, 1} with k = 2 in double", "[hardening][isr_p]") {
  const fgbg::IsrP<double> isr({2.0, 0.0});
  const IsrCase c{{0.9, 0.7, 0.5}, {0.4, 1.0, 2.0}, {1e200, 1, 1}};
  const auto w = isr_run(isr, c);
  const auto o = isr_oracle(c, 2, 0);
  for (std::size_t i = 0; i < w.size(); ++i) {
    INFO(i << ": " << w[i] << " vs " << static_cast<double>(o[i]));
    REQUIRE(std::isfinite(w[i]));
    // The overflow fallback works in logs: relative error ≈ ε · |k ln base| ≈ 2e-13 here.
    CHECK(std::abs(w[i] - static_cast<double>(o[i])) <=
          1e-12 * std::abs(static_cast<double>(o[i])));
  }
}

TEST_CASE("ISR-P: every weight underflowing in double is still renormalised exactly",
          "[hardening][isr_p]") {
  // (0.5)^2000 and (0.25)^2000 are 0 in double: Σℓ·w was 0 and the weights fell back to lw.
  const fgbg::IsrP<double> isr({2000.0, 0.0});
  const IsrCase c{{0.9, 0.7}, {1.0, 1.0}, {0.5, 0.5}};
  fgbg::IsrPWorkspace ws;
  const auto w = isr_run(isr, c);
  const auto o = isr_oracle(c, 2000, 0);
  CHECK(w[0] == Approx(static_cast<double>(o[0])).epsilon(1e-12));
  CHECK(w[1] == 0.0);  // 2^-2000 of the first: below double
}

TEMPLATE_TEST_CASE("ISR-P: every k and bias is rejected or gives loss-preserving weights",
                   "[hardening][isr_p]", float, double) {
  using S = TestType;
  const std::vector<IsrCase> cases = {
      {{0.9, 0.8, 0.7, 0.6, 0.5}, {0.5, 1.5, 0.1, 2.0, 0.7}, {2.99, 1, 0.5, 1e-3, 2}},
      {{0.9}, {0.7}, {2.99}},
      {{0.95, 0.3}, {0.2, 0.9}, {1, 1}}};
  for (const S k : real_values<S>())
    for (const S b : {S(0), S(0.3), S(1), k}) {
      const bool ok = std::isfinite(k) && k >= 0 && b >= 0 && b <= 1;
      INFO("k = " << k << ", bias = " << b);
      try {
        const fgbg::IsrP<S> isr({k, b});
        CHECK(ok);
        for (const IsrCase& c : cases) {
          const auto w = isr_run(isr, c);
          long double got = 0, want = 0;
          for (std::size_t i = 0; i < w.size(); ++i) {
            REQUIRE(std::isfinite(w[i]));
            CHECK(w[i] >= 0);
            got += c.loss[i] * static_cast<long double>(w[i]);
            want += c.loss[i] * static_cast<long double>(c.lw[i]);
          }
          // Σℓ·w = Σℓ·lw (loss-preserving), up to rounding the weights to S.
          CHECK(std::abs(static_cast<double>(got - want)) <=
                (std::is_same<S, float>::value ? 1e-6 : 1e-13) * static_cast<double>(want));
          if (k <= 8) {  // well conditioned: the closed form to a few ulps
            const auto o = isr_oracle(c, k, b);
            for (std::size_t i = 0; i < w.size(); ++i)
              CHECK(std::abs(w[i] - static_cast<double>(o[i])) <=
                    (std::is_same<S, float>::value ? 1e-6 : 1e-13) *
                        std::max(1.0, static_cast<double>(o[i])));
          }
        }
      } catch (const std::invalid_argument& e) {
        CHECK_FALSE(ok);
        check_param_message(e, "fgbg::IsrP", "config.");
      }
    }
}

// ------------------------------------------------------------------ CARL
namespace {

/// CARL value in long double (sigmoid head): ŵ = P u / Σu, value = Σ ŵ ℓ / A, A = P.
long double carl_value_oracle(const std::vector<long double>& x,
                              const std::vector<long double>& reg, long double k, long double b) {
  long double su = 0, sul = 0;
  for (std::size_t i = 0; i < x.size(); ++i) {
    const long double s = 1 / (1 + std::exp(-x[i]));
    const long double u = std::pow(b + (1 - b) * s, k);
    su += u;
    sul += u * reg[i];
  }
  return sul / su;
}

}  // namespace

TEMPLATE_TEST_CASE("CARL: every k and bias is rejected or gives a finite, correct value",
                   "[hardening][carl]", float, double) {
  using S = TestType;
  const std::vector<long double> xs = {1.5L, -0.5L, 3.0L, 0.1L};
  const std::vector<long double> regs = {0.3L, 1.2L, 0.05L, 2.0L};
  const Index n = 5, c = 2;
  Eigen::Array<S, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor> x(n, c);
  x.setZero();
  fgbg::LabelVector y(n);
  Eigen::Array<S, Eigen::Dynamic, 1> reg(n);
  for (Index i = 0; i < 4; ++i) {
    y[i] = 1;
    x(i, 0) = static_cast<S>(xs[i]);
    reg[i] = static_cast<S>(regs[i]);
  }
  y[4] = 0;
  reg[4] = 0;
  std::vector<long double> xr, rr;
  for (Index i = 0; i < 4; ++i) {
    xr.push_back(x(i, 0));
    rr.push_back(reg[i]);
  }
  for (const S k : real_values<S>())
    for (const S b : {S(0), S(0.2), S(1) - std::numeric_limits<S>::epsilon(), k}) {
      const bool ok = std::isfinite(k) && k > 0 && b >= 0 && b < 1;
      INFO("k = " << k << ", bias = " << b);
      try {
        const fgbg::CarlLoss<S> carl({k, b, true});
        CHECK(ok);
        Eigen::Array<S, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor> g(n, c);
        Eigen::Array<S, Eigen::Dynamic, 1> gr(n);
        const S v = carl.value_and_grad(x, y, reg, g, gr);
        REQUIRE(std::isfinite(v));
        CHECK(g.isFinite().all());
        CHECK(gr.isFinite().all());
        CHECK(v == carl.value(x, y, reg));
        if (k <= 8) {
          const long double o = carl_value_oracle(xr, rr, k, b);
          CHECK(std::abs(static_cast<long double>(v) - o) <=
                (std::is_same<S, float>::value ? 1e-5L : 1e-12L) * o);
        }
      } catch (const std::invalid_argument& e) {
        CHECK_FALSE(ok);
        check_param_message(e, "fgbg::CarlLoss", "config.");
      }
    }
}

// ------------------------------------------------------------------ guided loss
TEST_CASE("GuidedLoss: every classification_scale and reg_loss", "[hardening][guided]") {
  using Loss = fgbg::SigmoidCrossEntropyLoss<float>;
  const Index n = 4, c = 3;
  Eigen::Array<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor> x(n, c);
  x << -120, -130, -140, -125, -135, -110, 0, 0, 0, -150, -100, -105;
  fgbg::LabelVector y(n);
  y << 0, 0, -1, 0;  // row 2 ignored: its gradient must stay exactly 0
  for (const double s : real_values<double>())
    for (const double r : real_values<double>()) {
      INFO("classification_scale = " << s << ", reg_loss = " << r);
      const bool cfg_ok = std::isfinite(s) && s > 0;
      try {
        const fgbg::GuidedLoss<Loss> gl(Loss(), {s, false});
        CHECK(cfg_ok);
        Eigen::Array<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor> g =
            decltype(g)::Constant(n, c, 7.0f);
        const auto before = g;
        try {
          const fgbg::GuidedLossResult res = gl.value_and_grad(x, y, r, g);
          CHECK(std::isfinite(r));
          CHECK(r >= 0);
          CHECK(s * r <= std::numeric_limits<float>::max());
          REQUIRE(std::isfinite(res.value));
          CHECK(g.isFinite().all());
          CHECK((g.row(2) == 0.0f).all());
          if (res.cls_loss > 0 && r > 0) CHECK(res.value == s * r);
        } catch (const std::invalid_argument&) {
          // reg_loss < 0 or s · reg_loss beyond FLT_MAX (the value s · L_reg bounds the
          // gradient): nothing written
          CHECK((r < 0 || !(s * r <= std::numeric_limits<float>::max())));
          CHECK((g == before).all());
        } catch (const std::domain_error&) {
          CHECK_FALSE(std::isfinite(r));
          CHECK((g == before).all());
        }
      } catch (const std::invalid_argument& e) {
        CHECK_FALSE(cfg_ok);
        check_param_message(e, "fgbg::GuidedLoss", "config.classification_scale");
      }
    }
}

TEST_CASE("GuidedLoss: s * reg_loss beyond DBL_MAX throws instead of NaN rows",
          "[hardening][guided]") {
  // Before: the factor s·L_reg/L_cls overflowed, the element-wise fallback multiplied the zero
  // rows by inf and gave NaN.
  using Loss = fgbg::SigmoidCrossEntropyLoss<float>;
  const fgbg::GuidedLoss<Loss> gl(Loss(), {1e300, false});
  Eigen::Array<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor> x(2, 2), g(2, 2);
  x << -100, -100, 0, 0;
  fgbg::LabelVector y(2);
  y << 0, -1;
  g.setConstant(3.0f);
  CHECK_THROWS_AS(gl.value_and_grad(x, y, 1e10, g), std::invalid_argument);
  CHECK((g == 3.0f).all());
  CHECK_THROWS_WITH(gl.value(x, y, 1e10), Catch::Contains("classification_scale * reg_loss"));
}

// ------------------------------------------------------------------ optimal bias
TEST_CASE("Optimal bias and thresholds: every count is rejected or exact",
          "[hardening][unbiased]") {
  // num_fg + num_bg and num_classes + 1 overflowed (UB, seen by -fsanitize=undefined).
  for (const std::int64_t fg : int_values())
    for (const std::int64_t bg : int_values())
      for (const std::int64_t c : {std::int64_t(1), std::int64_t(80), std::int64_t(1) << 40,
                                   kI64Max, std::int64_t(0), std::int64_t(-1), kI64Min}) {
        INFO("fg = " << fg << ", bg = " << bg << ", C = " << c);
        const bool counts_ok = fg >= 0 && bg >= 0 && c >= 1 && (fg > 0 || bg > 0);
        const long double lf = fg, lb = bg, lc = c;
        try {
          const double pi = fgbg::optimal_sigmoid_prior(fg, bg, c);
          CHECK(counts_ok);
          const long double o = lf / (lf + lb) / lc;
          CHECK(std::abs(pi - static_cast<double>(o)) <= 1e-15 * static_cast<double>(o) + 1e-300);
          const double t = fgbg::released_score_threshold(fg, bg, c);
          const long double ot = o * (lc + 1);
          CHECK(std::abs(t - static_cast<double>(ot)) <= 1e-15 * static_cast<double>(ot) + 1e-300);
        } catch (const std::invalid_argument&) {
          CHECK_FALSE(counts_ok);
        }
        try {
          const double b = fgbg::optimal_sigmoid_bias(fg, bg, c);
          CHECK(counts_ok);
          const long double o = std::log(lf / ((lc - 1) * lf + lc * lb));
          REQUIRE(std::isfinite(b));
          CHECK(std::abs(b - static_cast<double>(o)) <= 1e-14 * std::max(1.0L, std::abs(o)));
        } catch (const std::invalid_argument&) {
          CHECK((!counts_ok || fg == 0 || (c == 1 && bg == 0)));
        }
        try {
          const double b = fgbg::optimal_softmax_background_bias(fg, bg, c);
          CHECK(counts_ok);
          const long double o = std::log(lc * lb / lf);
          REQUIRE(std::isfinite(b));
          CHECK(std::abs(b - static_cast<double>(o)) <= 1e-14 * std::max(1.0L, std::abs(o)));
        } catch (const std::invalid_argument&) {
          CHECK((!counts_ok || fg == 0 || bg == 0));
        }
      }
}

TEST_CASE("optimal_softmax_background_bias(2^62, 1, 1) is -ln 2^62, not -inf",
          "[hardening][unbiased]") {
  const std::int64_t big = std::int64_t(1) << 62;
  CHECK(fgbg::optimal_softmax_background_bias(big, 1, 1) ==
        Approx(-62 * std::log(2.0)).epsilon(1e-15));
  // The sigmoid bias of the same counts: π rounds to 1 in double, the exact bias is ln 2^62.
  CHECK(fgbg::optimal_sigmoid_bias(big, 1, 1) == Approx(62 * std::log(2.0)).epsilon(1e-15));
  CHECK(fgbg::released_score_threshold(big, 1, kI64Max) ==
        Approx(static_cast<double>(static_cast<long double>(big) / (big + 1.0L) / kI64Max *
                                   (static_cast<long double>(kI64Max) + 1)))
            .epsilon(1e-15));
}

TEST_CASE("AnchorStatistics: counts never overflow, num_classes bounded", "[hardening][unbiased]") {
  fgbg::AnchorStatistics s(2);
  fgbg::LabelVector y(3);
  y << 1, 0, -1;
  s.add(y);
  for (int i = 0; i < 62; ++i) s.merge(s);  // doubling: 2^62 of each
  CHECK(s.num_fg() == std::int64_t(1) << 62);
  CHECK_THROWS_WITH(s.merge(s), Catch::Contains("num_fg overflows int64"));
  CHECK(s.num_fg() == std::int64_t(1) << 62);  // unchanged
  CHECK(s.num_bg() == std::int64_t(1) << 62);
  CHECK(s.num_fg_of(1) == std::int64_t(1) << 62);
  fgbg::AnchorStatistics t(2);
  fgbg::LabelVector z(1);
  z << 1;
  for (int i = 0; i < 63; ++i) {  // 2^63 − 1 positives of class 1 by adding and doubling
    if (i > 0) t.merge(t);
    t.add(z);
  }
  CHECK(t.num_fg() == kI64Max);
  CHECK_THROWS_AS(t.add(z), std::invalid_argument);
  CHECK(t.num_fg() == kI64Max);
  CHECK(t.num_fg_of(1) == kI64Max);
  CHECK(t.sigmoid_prior() == Approx(0.5));  // N_fg / N_fg / C, no overflow
  CHECK(std::isfinite(t.class_frequency(1)));
  Eigen::ArrayXd th;
  fgbg::per_class_score_thresholds(t, th);
  CHECK(th[0] == Approx(3.0));
  for (const std::int64_t c : int_values()) {
    if (c >= 1 && c <= 1024) continue;  // (larger valid values would allocate gigabytes)
    INFO("num_classes = " << c);
    if (c > fgbg::kMaxStateClasses || c < 1)
      CHECK_THROWS_WITH(fgbg::AnchorStatistics(c), Catch::Contains("num_classes must be in [1, "));
  }
  // fuzz_unbiased: ~2^31 classes asked for 16 GiB; the bound is 2^24 classes.
  for (const std::int64_t c : {fgbg::kMaxStateClasses + 1, std::int64_t(1) << 31,
                               std::int64_t(std::numeric_limits<std::int32_t>::max())})
    CHECK_THROWS_WITH(fgbg::AnchorStatistics(c),
                      Catch::Contains("num_classes must be in [1, 16777216], got"));
  CHECK(fgbg::AnchorStatistics(fgbg::kMaxStateClasses).num_classes() == fgbg::kMaxStateClasses);
}

// ------------------------------------------------------------------ function parameters
TEMPLATE_TEST_CASE("Thresholds, priors, NMS and normalisers: every parameter value",
                   "[hardening][unbiased]", float, double) {
  using S = TestType;
  Eigen::Array<S, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor> sc(3, 2);
  sc << S(0.1), S(0.9), S(-std::numeric_limits<S>::max()), S(0), S(std::numeric_limits<S>::max()),
      S(0.5);
  fgbg::AnchorStatistics st(2);
  fgbg::LabelVector y(4);
  y << 1, 0, 0, 2;
  st.add(y);
  for (const double t : real_values<double>()) {
    INFO("value " << t);
    std::vector<fgbg::ScoredCandidate<S>> out;
    try {
      const Index k = fgbg::select_above_threshold(sc, t, out);
      CHECK(std::isfinite(t));
      Index want = 0;  // score > t compared with t rounded to S (±inf beyond S's range)
      const long double tl = t > static_cast<double>(std::numeric_limits<S>::max()) ? INFINITY
                             : t < -static_cast<double>(std::numeric_limits<S>::max())
                                 ? -INFINITY
                                 : static_cast<S>(t);
      for (Index i = 0; i < sc.size(); ++i) want += sc.data()[i] > tl;
      CHECK(k == want);
    } catch (const std::domain_error&) {
      CHECK_FALSE(std::isfinite(t));
    }
    Eigen::Array<S, Eigen::Dynamic, 1> th;
    try {
      fgbg::per_class_score_thresholds(st, th, t);
      CHECK((std::isfinite(t) && t >= 0));
      for (Index k = 0; k < 2; ++k) {
        const double want = std::max(t, 0.25 * 3);
        CHECK(static_cast<double>(th[k]) ==
              (want > static_cast<double>(std::numeric_limits<S>::max())
                   ? std::numeric_limits<double>::infinity()
                   : static_cast<double>(static_cast<S>(want))));
      }
    } catch (const std::invalid_argument&) {
      CHECK_FALSE((std::isfinite(t) && t >= 0));
    }
    try {
      const double b = fgbg::prior_bias(t);
      CHECK((t > 0 && t < 1));
      CHECK(std::isfinite(b));
      CHECK(b == Approx(static_cast<double>(std::log(static_cast<long double>(t) /
                                                     (1 - static_cast<long double>(t)))))
                     .epsilon(1e-14));
    } catch (const std::invalid_argument&) {
      CHECK_FALSE((t > 0 && t < 1));
    }
    Eigen::Array<S, Eigen::Dynamic, 4, Eigen::RowMajor> b(3, 4);
    b << 0, 0, 10, 10, 1, 1, 10, 10, 20, 20, 30, 30;
    Eigen::Array<S, Eigen::Dynamic, 1> s3(3);
    s3 << S(0.9), S(0.8), S(0.7);
    fgbg::NmsMatchGroups groups;
    fgbg::NmsMatchWorkspace<S> ws;
    try {
      fgbg::nms_match(b, s3, t, groups, ws);
      CHECK((t >= 0 && t <= 1));
      CHECK(groups.members.size() == 3);
      // IoU ≥ thr suppresses (thr rounded to S: 0 suppresses even disjoint boxes).
      const S thr = static_cast<S>(t);
      const S iou01 = fgbg::detail::box_iou<S>(0, 0, 10, 10, 1, 1, 10, 10);
      CHECK(groups.groups() == (thr <= S(0) ? 1 : thr <= iou01 ? 2 : 3));
    } catch (const std::invalid_argument&) {
      CHECK_FALSE((t >= 0 && t <= 1));
    }
  }
  fgbg::Sample smp;
  smp.positives = {1};
  for (const std::int64_t n : int_values()) {
    INFO("nominal_num " << n);
    try {
      const double a = fgbg::sample_avg_factor(fgbg::SampleNormalization::detectron2_rpn, smp, n);
      CHECK(n > 0);
      CHECK(a == static_cast<double>(n));
    } catch (const std::invalid_argument&) {
      CHECK(n <= 0);
    }
  }
}

TEST_CASE(
    "ScoreHlrSampler: double logits whose loss exceeds DBL_MAX keep the loss-preserving ratio",
    "[hardening][isr_n]") {
  // ℓ = lse − x0 = 2e308 was inf, the ratio NaN, and the weights were left unnormalised.
  const Index n = 5;
  Eigen::Array<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor> x(n, 2);
  x << -1e308, 1e308, -9e307, 9e307, 0, 1, 0, 2, 1, 0;
  Eigen::Array<double, Eigen::Dynamic, 4, Eigen::RowMajor> b(n, 4);
  for (Index i = 0; i < n; ++i) b.row(i) << 10.0 * i, 0, 10.0 * i + 5, 5;  // disjoint
  Eigen::ArrayXi assigned = Eigen::ArrayXi::Zero(n);
  const fgbg::ScoreHlrSampler<double> s;
  fgbg::Sample out;
  fgbg::ScoreHlrWorkspace<double> ws;
  std::mt19937_64 rng(1);
  const fgbg::ScoreHlrResult r = s.sample(assigned, x, b, rng, out, ws);
  REQUIRE(out.num_negatives() == n);
  CHECK(std::isfinite(r.ratio));
  long double sl = 0, slw = 0;
  for (std::size_t q = 0; q < out.negatives.size(); ++q) {
    const Index i = out.negatives[q];
    const long double x0 = x(i, 0), x1 = x(i, 1), m = std::max(x0, x1);
    const long double l = m + std::log(std::exp(x0 - m) + std::exp(x1 - m)) - x0;
    REQUIRE(std::isfinite(out.negative_weights[q]));
    sl += l;
    slw += l * out.negative_weights[q];
  }
  CHECK(std::abs(static_cast<double>((slw - sl) / sl)) <= 1e-12);
}

TEST_CASE("ISR-P: a weight beyond the output type throws before anything is written",
          "[hardening][isr_p]") {
  // Exact weight of anchor 0: 9e76 · (3e38 · 1e-30 + 3e38) / (9e76 · 1e-30 + 2.25e76) ≈ 1.2e39,
  // beyond FLT_MAX (it was silently cast to inf).
  const fgbg::IsrP<float> isr({2.0f, 0.0f});
  fgbg::LabelVector y(3);
  y << 1, 1, 0;
  Eigen::ArrayXi gt(3);
  gt << 0, 1, -1;
  Eigen::ArrayXd iou(3), loss(3), lw(3);
  iou << 0.9, 0.5, 0;
  loss << 1e-30, 1, 0;
  lw << 3e38, 3e38, 1;
  Eigen::ArrayXf out = Eigen::ArrayXf::Constant(3, 5.0f);
  CHECK_THROWS_AS(isr.weights(y, gt, iou, loss, lw, 1, out), std::domain_error);
  CHECK((out == 5.0f).all());
  // The same in double is representable.
  const fgbg::IsrP<double> isr_d({2.0, 0.0});
  Eigen::ArrayXd outd(3);
  isr_d.weights(y, gt, iou, loss, lw, 1, outd);
  const long double w0 = 9e76L * (3e38L * 1e-30L + 3e38L) / (9e76L * 1e-30L + 2.25e76L);
  CHECK(outd[0] == Approx(static_cast<double>(w0)).epsilon(1e-13));
}
