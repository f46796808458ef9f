/// @file state_io.hpp
/// @brief The state vocabulary of fgbg, written once for every stateful object: a ReduceBuffer
///        (a flat buffer of doubles a caller sums with any all-reduce, with a header that
///        detects ranks that disagree) and a versioned, endian-explicit, checksummed byte blob.
///
/// **The three steps.** A stateful object under data parallelism (W workers, each holding a
/// shard of one batch) updates in three steps: (1) *compute* this worker's batch statistics into
/// a ReduceBuffer; (2) *reduce*: the caller sums the buffers of all workers element-wise (an
/// all-reduce with SUM over `buf.data(), buf.size()` doubles, in place); (3) *commit* the reduced
/// buffer. A buffer that was never reduced is the reduced buffer of W = 1, so one process takes
/// the same path.
///
/// **The header.** The first slots of every buffer are its header:
///
///   slot 0            the worker count: every worker writes 1, so the reduced value is W
///   slots 1 ..        one block of kSlotsPerField slots per header field (method tag, format
///                     version, then the object's shapes and hyper-parameters)
///
/// A field is a 64-bit unsigned integer v (a real hyper-parameter is stored as its IEEE-754
/// bits) split into four 16-bit chunks c; each chunk is stored twice, as c and as c². After the
/// SUM, a chunk's two slots hold Σ_r c_r and Σ_r c_r²; every value is below 2^16·2^20 and
/// 2^32·2^20 < 2^53 for W ≤ 2^20 workers, so both sums are exact in double. A rank whose own
/// chunk is a accepts only Σ c_r = W·a and Σ c_r² = W·a², which together give
/// Σ (c_r − a)² = 0, i.e. every rank wrote a: the check detects any disagreement for any W, and
/// every rank reaches the same verdict. Otherwise std::invalid_argument names the field
/// ("… differs across ranks").
///
/// **The payload.** Counts are stored as integers in double and summed exactly while the sum
/// stays below 2^53 (checked: std::invalid_argument beyond). Real-valued sums (EFL's gradient
/// magnitudes) are summed to rounding; each object's docs state the bound.
///
/// **Blobs.** `save()` writes, in little-endian order through shifts (never a memcpy of the
/// host's representation): the magic "FGBGSTAT", the blob format version, the method tag, the
/// object's format version, the payload length, the payload, and a 64-bit FNV-1a checksum over
/// every preceding byte. `load()` of another method, another version, a truncated, extended or
/// corrupted blob throws std::invalid_argument and leaves the object as it was.
#pragma once

#include "requires_cxx17.hpp"

#include <array>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <initializer_list>
#include <string>
#include <utility>
#include <vector>

#include "config.hpp"
#include "errors.hpp"

namespace fgbg {

/// The method tags of the stateful objects (in headers and blobs; never renumbered).
enum class StateMethod : std::uint32_t {
  ghm_c = 1,                ///< GhmcState / GhmcLoss statistics
  equalized_focal = 2,      ///< EqualizedFocalState
  ema_normalizer = 3,       ///< EmaNormalizer
  positive_count = 4,       ///< positive_count_buffer (no state: the normaliser's counts)
  residual_objectness = 5,  ///< ResidualObjectnessState / ResidualObjectnessLoss statistics
  anchor_statistics = 6,    ///< AnchorStatistics (optimal bias counts)
  iou_balanced = 7,         ///< IouBalancedState (faithful floor_thr; blob only, no reduction)
};

/// The name of a method tag, for messages.
inline const char* state_method_name(std::uint32_t tag) {
  switch (tag) {
    case 1:
      return "GHM-C";
    case 2:
      return "EqualizedFocal";
    case 3:
      return "EmaNormalizer";
    case 4:
      return "positive_count";
    case 5:
      return "ResidualObjectness";
    case 6:
      return "AnchorStatistics";
    case 7:
      return "IouBalanced";
    default:
      return "unknown";
  }
}

/// A flat buffer of doubles to be summed across workers (see the file comment): the header
/// (worker count and checked fields), then the payload. Build it with ReduceBuffer::make, hand
/// `data(), size()` to an all-reduce with SUM, then pass it to the commit step.
class ReduceBuffer {
 public:
  static constexpr int kChunks = 4;                          ///< 16-bit chunks per field
  static constexpr int kSlotsPerField = 2 * kChunks;         ///< each chunk as c and c²
  static constexpr double kMaxWorkers = 1048576.0;           ///< 2^20
  static constexpr double kExactLimit = 9007199254740992.0;  ///< 2^53

  ReduceBuffer() = default;

  /// Length in doubles of a buffer with `fields` header fields after tag and version and
  /// `payload` payload slots: 1 + (2 + fields)·kSlotsPerField + payload.
  static constexpr std::size_t size_for(std::size_t fields, std::size_t payload) {
    return 1 + (2 + fields) * kSlotsPerField + payload;
  }

  /// A local buffer: count slot 1, the header fields {tag, version, fields...} encoded, and
  /// `payload` zeroed slots (size_for(fields.size(), payload) doubles).
  static ReduceBuffer make(StateMethod method, std::uint32_t version,
                           std::initializer_list<std::uint64_t> fields, std::size_t payload) {
    ReduceBuffer b;
    b.assign(method, version, fields, payload);
    return b;
  }
  /// make() with the fields in a vector.
  static ReduceBuffer make(StateMethod method, std::uint32_t version,
                           const std::vector<std::uint64_t>& fields, std::size_t payload) {
    ReduceBuffer b;
    b.assign(method, version, fields, payload);
    return b;
  }

  /// Turns this buffer into make(method, version, fields, payload) in place, reusing its
  /// capacity: no allocation once the buffer has held one of at least this size (the
  /// steady-state form of the compute step).
  void assign(StateMethod method, std::uint32_t version,
              std::initializer_list<std::uint64_t> fields, std::size_t payload) {
    assign_impl(method, version, fields.begin(), fields.size(), payload);
  }
  /// assign() with the fields in a vector.
  void assign(StateMethod method, std::uint32_t version, const std::vector<std::uint64_t>& fields,
              std::size_t payload) {
    assign_impl(method, version, fields.data(), fields.size(), payload);
  }
  /// assign() with the fields in an array (a header built without allocating).
  template <std::size_t N>
  void assign(StateMethod method, std::uint32_t version, const std::array<std::uint64_t, N>& fields,
              std::size_t payload) {
    assign_impl(method, version, fields.data(), N, payload);
  }

  /// The flat buffer to all-reduce (SUM, in place).
  double* data() { return data_.data(); }
  const double* data() const { return data_.data(); }
  /// Its length in doubles.
  std::size_t size() const { return data_.size(); }
  /// Number of header fields (method tag and version included).
  std::size_t header_fields() const { return fields_; }
  /// Index of the first payload slot.
  std::size_t payload_offset() const { return 1 + fields_ * kSlotsPerField; }
  /// Number of payload slots.
  std::size_t payload_size() const { return data_.size() - payload_offset(); }
  double* payload() { return data_.data() + payload_offset(); }
  const double* payload() const { return data_.data() + payload_offset(); }
  /// The worker-count slot: 1 locally, W after the reduce.
  double workers() const { return data_.empty() ? 0.0 : data_[0]; }

  /// Element-wise sum of another buffer of the same size into this one: an all-reduce in one
  /// process (tests, or a caller reducing in a fixed order). Throws std::invalid_argument on a
  /// size mismatch; nothing is added then.
  ReduceBuffer& operator+=(const ReduceBuffer& o) {
    if (o.data_.size() != data_.size())
      detail::throw_invalid("fgbg::ReduceBuffer", "cannot add a buffer of ", o.data_.size(),
                            " doubles to one of ", data_.size());
    for (std::size_t i = 0; i < data_.size(); ++i) data_[i] += o.data_[i];
    return *this;
  }

  friend bool operator==(const ReduceBuffer& a, const ReduceBuffer& b) {
    return a.fields_ == b.fields_ && a.data_ == b.data_;
  }
  friend bool operator!=(const ReduceBuffer& a, const ReduceBuffer& b) { return !(a == b); }

  /// Checks a (possibly reduced) buffer before anything reads its payload: its size
  /// (`expected_size` doubles), the worker count W (an integer in 1..2^20), that every header
  /// field was written alike by every rank (each chunk's sums satisfy Σc = W·a and Σc² = W·a²
  /// for an integer a ≤ 65535, i.e. Σ(c − a)² = 0), then the method tag and the format version.
  /// `names` names the fields after tag and version. Returns W. Throws std::invalid_argument
  /// naming the size, the count or the field ("… differs across ranks"). Reads only.
  /// Allocates nothing.
  double check(const char* where, StateMethod method, std::uint32_t version,
               std::size_t expected_size, std::initializer_list<const char*> names) const {
    return check_impl(where, method, version, expected_size, names.begin(), names.size());
  }
  /// check() with the field names in a vector.
  double check(const char* where, StateMethod method, std::uint32_t version,
               std::size_t expected_size, const std::vector<const char*>& names) const {
    return check_impl(where, method, version, expected_size, names.data(), names.size());
  }
  /// check() with the field names in an array.
  template <std::size_t N>
  double check(const char* where, StateMethod method, std::uint32_t version,
               std::size_t expected_size, const std::array<const char*, N>& names) const {
    return check_impl(where, method, version, expected_size, names.data(), N);
  }

  /// After check(): throws std::invalid_argument unless header field `f` (0-based among the
  /// fields after tag and version) equals this rank's `value`, naming it.
  void expect_field(const char* where, std::size_t f, const char* name, std::uint64_t value) const {
    if (decode(2 + f) != value)
      detail::throw_invalid(where, "reduce buffer's ", name, " is ", decode(2 + f),
                            " (as bits for a real), this rank's is ", value,
                            ": the ranks' hyper-parameters or shapes differ");
  }

  /// Payload slot i as an exact count: a non-negative integer below 2^53. Throws
  /// std::invalid_argument naming `what` otherwise (a sum that left the exact range).
  std::int64_t count(const char* where, const char* what, std::size_t i) const {
    const double v = payload()[i];
    if (!(v >= 0.0 && v < kExactLimit && v == std::floor(v)))
      detail::throw_invalid(where, "reduced ", what, " must be an integer in [0, 2^53), got ", v);
    return static_cast<std::int64_t>(v);
  }

  /// The value of header field f (0 the tag, 1 the version, then the object's fields), decoded
  /// from a buffer whose header passed check() (divides the sums by W).
  std::uint64_t decode(std::size_t f) const {
    const double w = data_[0];
    std::uint64_t v = 0;
    for (int k = 0; k < kChunks; ++k)
      v |= static_cast<std::uint64_t>(data_[1 + f * kSlotsPerField + 2 * k] / w) << (16 * k);
    return v;
  }

 private:
  double check_impl(const char* where, StateMethod method, std::uint32_t version,
                    std::size_t expected_size, const char* const* names, std::size_t n) const {
    if (data_.size() != expected_size || fields_ != 2 + n)
      detail::throw_invalid(where, "reduce buffer has ", data_.size(), " doubles, expected ",
                            expected_size,
                            " (a buffer of another method or shape, or cut short by the caller)");
    const double w = data_[0];
    if (!(w >= 1.0 && w <= kMaxWorkers && w == std::floor(w)))
      detail::throw_invalid(where, "reduce buffer's worker count must be an integer in 1..2^20, ",
                            "got ", w, " (is it a SUM all-reduce, every worker writing 1?)");
    for (std::size_t f = 0; f < fields_; ++f) {
      const char* name = f == 0 ? "method tag" : f == 1 ? "format version" : names[f - 2];
      for (int k = 0; k < kChunks; ++k) {
        const double sum = data_[1 + f * kSlotsPerField + 2 * k];
        const double sq = data_[1 + f * kSlotsPerField + 2 * k + 1];
        const double a = std::floor(sum / w);
        if (!(a >= 0.0 && a <= 65535.0 && a * w == sum && sq == w * (a * a)))
          detail::throw_invalid(where, "reduce buffer's ", name, " differs across ranks (",
                                W_text(w), ")");
      }
    }
    const std::uint64_t tag = decode(0);
    if (tag != static_cast<std::uint64_t>(method))
      detail::throw_invalid(where, "reduce buffer of method ",
                            state_method_name(static_cast<std::uint32_t>(tag)), ", expected ",
                            state_method_name(static_cast<std::uint32_t>(method)));
    if (decode(1) != version)
      detail::throw_invalid(where, "reduce buffer format version ", decode(1), ", expected ",
                            version);
    return w;
  }

  void assign_impl(StateMethod method, std::uint32_t version, const std::uint64_t* fields,
                   std::size_t n, std::size_t payload) {
    fields_ = 2 + n;
    data_.assign(size_for(n, payload), 0.0);
    data_[0] = 1.0;
    encode(0, static_cast<std::uint64_t>(method));
    encode(1, version);
    for (std::size_t i = 0; i < n; ++i) encode(2 + i, fields[i]);
  }
  static std::string W_text(double w) { return detail::concat("W = ", w, " workers"); }
  void encode(std::size_t f, std::uint64_t v) {
    for (int k = 0; k < kChunks; ++k) {
      const double c = static_cast<double>((v >> (16 * k)) & 0xFFFFu);
      data_[1 + f * kSlotsPerField + 2 * k] = c;
      data_[1 + f * kSlotsPerField + 2 * k + 1] = c * c;
    }
  }

  std::vector<double> data_;
  std::size_t fields_ = 0;
};

/// The IEEE-754 bits of a double (a hyper-parameter in a header or blob, exactly).
inline std::uint64_t double_bits(double d) {
  std::uint64_t u;
  std::memcpy(&u, &d, sizeof u);
  return u;
}
/// The double with IEEE-754 bits u.
inline double bits_double(std::uint64_t u) {
  double d;
  std::memcpy(&d, &u, sizeof d);
  return d;
}

namespace detail {

/// 64-bit FNV-1a over bytes [0, n).
inline std::uint64_t fnv1a64(const std::uint8_t* p, std::size_t n) {
  std::uint64_t h = 14695981039346656037ull;
  for (std::size_t i = 0; i < n; ++i) {
    h ^= p[i];
    h *= 1099511628211ull;
  }
  return h;
}

inline constexpr char kBlobMagic[8] = {'F', 'G', 'B', 'G', 'S', 'T', 'A', 'T'};
inline constexpr std::uint32_t kBlobFormat = 1;
/// magic, blob format, method, object version, payload length; then the payload; then checksum.
inline constexpr std::size_t kBlobHead = 8 + 4 + 4 + 4 + 8;

}  // namespace detail

/// Writes a blob (see the file comment): put the payload with the typed writers, then finish().
class BlobWriter {
 public:
  BlobWriter(StateMethod method, std::uint32_t version) {
    for (char c : detail::kBlobMagic) bytes_.push_back(static_cast<std::uint8_t>(c));
    u32(detail::kBlobFormat);
    u32(static_cast<std::uint32_t>(method));
    u32(version);
    u64(0);  // payload length, filled in by finish()
  }
  void u32(std::uint32_t v) {
    for (int k = 0; k < 4; ++k) bytes_.push_back(static_cast<std::uint8_t>(v >> (8 * k)));
  }
  void u64(std::uint64_t v) {
    for (int k = 0; k < 8; ++k) bytes_.push_back(static_cast<std::uint8_t>(v >> (8 * k)));
  }
  void i64(std::int64_t v) { u64(static_cast<std::uint64_t>(v)); }
  void f64(double v) { u64(double_bits(v)); }

  /// The finished blob: the payload length filled in and the checksum appended.
  std::vector<std::uint8_t> finish() {
    const std::uint64_t len = bytes_.size() - detail::kBlobHead;
    for (int k = 0; k < 8; ++k)
      bytes_[detail::kBlobHead - 8 + k] = static_cast<std::uint8_t>(len >> (8 * k));
    const std::uint64_t h = detail::fnv1a64(bytes_.data(), bytes_.size());
    u64(h);
    return std::move(bytes_);
  }

 private:
  std::vector<std::uint8_t> bytes_;
};

/// Reads a blob: the constructor checks magic, format, method, version, length and checksum;
/// the typed readers then read the payload in order, and done() checks it was consumed exactly.
/// Every failure throws std::invalid_argument from `where`.
class BlobReader {
 public:
  BlobReader(const char* where, const std::vector<std::uint8_t>& bytes, StateMethod method,
             std::uint32_t version)
      : where_(where), b_(bytes) {
    if (b_.size() < detail::kBlobHead + 8)
      detail::throw_invalid(where_, "blob of ", b_.size(), " bytes is truncated (at least ",
                            detail::kBlobHead + 8, ")");
    for (int i = 0; i < 8; ++i)
      if (b_[i] != static_cast<std::uint8_t>(detail::kBlobMagic[i]))
        detail::throw_invalid(where_, "not an fgbg state blob (bad magic)");
    pos_ = 8;
    const std::uint32_t format = u32();
    const std::uint32_t tag = u32();
    const std::uint32_t ver = u32();
    const std::uint64_t len = u64();
    if (len != b_.size() - detail::kBlobHead - 8)
      detail::throw_invalid(where_, "blob is truncated or extended: payload length ", len,
                            ", bytes present ", b_.size() - detail::kBlobHead - 8);
    std::uint64_t stored = 0;
    for (int k = 0; k < 8; ++k)
      stored |= static_cast<std::uint64_t>(b_[b_.size() - 8 + k]) << (8 * k);
    if (stored != detail::fnv1a64(b_.data(), b_.size() - 8))
      detail::throw_invalid(where_, "blob checksum mismatch (corrupted)");
    if (format != detail::kBlobFormat)
      detail::throw_invalid(where_, "blob format version ", format, ", this build reads ",
                            detail::kBlobFormat);
    if (tag != static_cast<std::uint32_t>(method))
      detail::throw_invalid(where_, "blob of method ", state_method_name(tag), ", expected ",
                            state_method_name(static_cast<std::uint32_t>(method)));
    if (ver != version)
      detail::throw_invalid(where_, "blob of ", state_method_name(tag), " version ", ver,
                            ", this build reads version ", version);
    end_ = b_.size() - 8;
  }
  std::uint32_t u32() {
    need(4);
    std::uint32_t v = 0;
    for (int k = 0; k < 4; ++k) v |= static_cast<std::uint32_t>(b_[pos_++]) << (8 * k);
    return v;
  }
  std::uint64_t u64() {
    need(8);
    std::uint64_t v = 0;
    for (int k = 0; k < 8; ++k) v |= static_cast<std::uint64_t>(b_[pos_++]) << (8 * k);
    return v;
  }
  std::int64_t i64() { return static_cast<std::int64_t>(u64()); }
  double f64() { return bits_double(u64()); }
  /// Bytes left in the payload.
  std::size_t remaining() const { return end_ - pos_; }
  /// Throws unless the payload was read exactly.
  void done() const {
    if (pos_ != end_)
      detail::throw_invalid(where_, "blob payload has ", end_ - pos_, " unread bytes");
  }

 private:
  void need(std::size_t n) const {
    if (pos_ + n > (end_ ? end_ : b_.size()))
      detail::throw_invalid(where_, "blob payload is shorter than its contents");
  }
  const char* where_;
  const std::vector<std::uint8_t>& b_;
  std::size_t pos_ = 0;
  std::size_t end_ = 0;
};

}  // namespace fgbg
