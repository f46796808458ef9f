/// @file ema_normalizer.hpp
/// @brief Normalisers under data parallelism: this worker's positive and valid counts as a
///        ReduceBuffer (so a caller can all-reduce them and pass Normalizer::avg_factor of the
///        global count), and EmaNormalizer, detectron2's RetinaNet `loss_normalizer`.
///
/// detectron2 (facebookresearch/detectron2, modeling/meta_arch/retinanet.py, `losses`) divides
/// RetinaNet's losses by an exponential moving average of the number of positive anchors:
/// `_ema_update("loss_normalizer", max(num_pos_anchors, 1), 100)`, with `_ema_update` in
/// modeling/meta_arch/dense_detector.py: new = old · momentum + value · (1 − momentum), momentum
/// 0.9, old = 100 before the first update. num_pos_anchors is this process's count (no
/// all-reduce): a local EMA per rank. EmaNormalizer::update reproduces that; given the reduced
/// positive count instead it is the same EMA on every rank.
///
/// Call positive_count_buffer on every rank, every step, unconditionally, and all-reduce it:
/// an all-reduce inside a branch that only some ranks take (e.g. only where there are
/// positives) deadlocks the others (open-mmlab/mmdetection#4724). See docs/data_parallel.md.
#pragma once

#include "requires_cxx17.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "checks.hpp"
#include "config.hpp"
#include "errors.hpp"
#include "reduction.hpp"
#include "state_io.hpp"

namespace fgbg {

/// Format version of positive_count_buffer.
inline constexpr std::uint32_t kPositiveCountVersion = 1;

/// Step 1 for a normaliser: a ReduceBuffer whose payload is {#positive anchors (label ≥ 1),
/// #valid anchors (label ≠ −1)} of this worker; header: the number of classes C (labels must be
/// in −1..C). Throws std::invalid_argument for a label outside −1..C.
template <typename LD>
ReduceBuffer positive_count_buffer(const Eigen::DenseBase<LD>& labels, Index classes) {
  constexpr const char* kName = "fgbg::positive_count_buffer";
  if (classes < 0) detail::throw_invalid(kName, "classes must be >= 0, got ", classes);
  const LabelStats s = detail::check_labels(kName, labels, labels.size(), classes);
  ReduceBuffer b = ReduceBuffer::make(StateMethod::positive_count, kPositiveCountVersion,
                                      {static_cast<std::uint64_t>(classes)}, 2);
  b.payload()[0] = static_cast<double>(s.positives);
  b.payload()[1] = static_cast<double>(s.valid);
  return b;
}

/// The global counts of a reduced positive_count_buffer.
struct GlobalCounts {
  std::int64_t positives = 0;  ///< Σ over workers of #positive anchors
  std::int64_t valid = 0;      ///< Σ over workers of #non-ignored anchors
  double workers = 0;          ///< W
  /// RetinaNet's normaliser over the whole batch: Normalizer::avg_factor(max(1, positives)),
  /// what Normalizer::num_positives() gives one process on the whole batch.
  Normalizer avg_factor() const {
    return Normalizer::avg_factor(std::max<double>(1.0, static_cast<double>(positives)));
  }
};

/// Step 3 for a normaliser: the global counts of a summed positive_count_buffer. Throws
/// std::invalid_argument for a buffer of the wrong size or method, classes that differ across
/// ranks or from `classes`, or counts that are not exact integers below 2^53.
inline GlobalCounts reduced_counts(const ReduceBuffer& b, Index classes) {
  constexpr const char* kName = "fgbg::reduced_counts";
  const double w = b.check(kName, StateMethod::positive_count, kPositiveCountVersion,
                           ReduceBuffer::size_for(1, 2), {"classes"});
  b.expect_field(kName, 0, "classes", static_cast<std::uint64_t>(classes));
  GlobalCounts g;
  g.positives = b.count(kName, "positive count", 0);
  g.valid = b.count(kName, "valid count", 1);
  if (g.positives > g.valid)
    detail::throw_invalid(kName, "reduced positive count ", g.positives, " exceeds the valid ",
                          g.valid);
  g.workers = w;
  return g;
}

/// detectron2's RetinaNet loss normaliser (see the file comment): value v starts at `initial`
/// (100) and update(P) sets v ← μ·v + (1 − μ)·max(P, 1), μ = 0.9, and returns it. Pass
/// Normalizer::avg_factor(v) to the loss. Its three steps: compute P (a local count, or
/// positive_count_buffer for a global one), reduce (none for detectron2's local EMA), commit =
/// update. Saves and loads itself as a blob.
class EmaNormalizer {
 public:
  static constexpr const char* kName = "fgbg::EmaNormalizer";
  static constexpr std::uint32_t kVersion = 1;

  /// Every field, as a plain struct.
  struct Snapshot {
    double value = 100.0;      ///< v
    double momentum = 0.9;     ///< μ
    double initial = 100.0;    ///< v before the first update (and after reset())
    std::int64_t updates = 0;  ///< updates since the last reset
    friend bool operator==(const Snapshot& a, const Snapshot& b) {
      return a.value == b.value && a.momentum == b.momentum && a.initial == b.initial &&
             a.updates == b.updates;
    }
    friend bool operator!=(const Snapshot& a, const Snapshot& b) { return !(a == b); }
  };

  /// detectron2's defaults: initial 100, momentum 0.9. Throws std::invalid_argument unless
  /// initial is finite and ≥ 1 and momentum in [0, 1).
  explicit EmaNormalizer(double initial = 100.0, double momentum = 0.9) {
    restore({initial, momentum, initial, 0});
  }

  /// v ← μ·v + (1 − μ)·max(positives, 1); returns the new v (≥ 1).
  double update(double positives) {
    if (!(std::isfinite(positives) && positives >= 0.0))
      detail::throw_invalid(kName, "positives must be finite and >= 0, got ", positives);
    s_.value = s_.value * s_.momentum + std::max(positives, 1.0) * (1.0 - s_.momentum);
    ++s_.updates;
    return s_.value;
  }
  /// update() with the global positive count of a reduced positive_count_buffer.
  double update(const GlobalCounts& g) { return update(static_cast<double>(g.positives)); }
  /// The current v as a normaliser.
  Normalizer normalizer() const { return Normalizer::avg_factor(s_.value); }
  double value() const { return s_.value; }
  void reset() {
    s_.value = s_.initial;
    s_.updates = 0;
  }

  Snapshot snapshot() const { return s_; }
  /// Takes every field; throws std::invalid_argument (unchanged) for a value or initial not
  /// finite and ≥ 1, a momentum outside [0, 1) or negative updates.
  void restore(const Snapshot& s) {
    detail::require_param(std::isfinite(s.initial) && s.initial >= 1.0, kName, "initial",
                          "finite and >= 1", s.initial);
    detail::require_param(s.momentum >= 0.0 && s.momentum < 1.0, kName, "momentum", "in [0, 1)",
                          s.momentum);
    detail::require_param(std::isfinite(s.value) && s.value >= 1.0, kName, "value",
                          "finite and >= 1", s.value);
    detail::require_param(s.updates >= 0, kName, "updates", ">= 0", s.updates);
    s_ = s;
  }
  /// Blob (core/state_io.hpp): value, momentum, initial (IEEE bits), updates.
  std::vector<std::uint8_t> save() const {
    BlobWriter w(StateMethod::ema_normalizer, kVersion);
    w.f64(s_.value);
    w.f64(s_.momentum);
    w.f64(s_.initial);
    w.i64(s_.updates);
    return w.finish();
  }
  /// Throws std::invalid_argument for another method or version, a truncated or corrupted blob
  /// or invalid contents; unchanged then.
  void load(const std::vector<std::uint8_t>& bytes) {
    BlobReader r(kName, bytes, StateMethod::ema_normalizer, kVersion);
    Snapshot s;
    s.value = r.f64();
    s.momentum = r.f64();
    s.initial = r.f64();
    s.updates = r.i64();
    r.done();
    restore(s);
  }
  friend bool operator==(const EmaNormalizer& a, const EmaNormalizer& b) { return a.s_ == b.s_; }
  friend bool operator!=(const EmaNormalizer& a, const EmaNormalizer& b) { return !(a == b); }

 private:
  Snapshot s_;
};

}  // namespace fgbg
