// Test support: proves that a call allocates nothing. Include FIRST in exactly one translation
// unit of a test executable, before any Eigen header: it turns on Eigen's runtime no-malloc guard
// (with an eigen_assert that throws, so it also works in Release builds) and replaces the global
// operator new / delete with counting versions.
#pragma once

#include <atomic>
#include <cstdlib>
#include <new>
#include <stdexcept>

#define EIGEN_RUNTIME_NO_MALLOC
#ifndef eigen_assert
#define eigen_assert(x) \
  if (!(x)) throw std::logic_error("Eigen assertion failed: " #x)
#endif
#include <Eigen/Core>

namespace fgbg_test {
inline std::atomic<long> g_allocations{0};

/// While alive: Eigen heap allocation throws, and operator new calls are counted.
class NoAllocScope {
 public:
  NoAllocScope() : start_(g_allocations.load()) { Eigen::internal::set_is_malloc_allowed(false); }
  ~NoAllocScope() { Eigen::internal::set_is_malloc_allowed(true); }
  NoAllocScope(const NoAllocScope&) = delete;
  NoAllocScope& operator=(const NoAllocScope&) = delete;
  /// operator new calls since construction.
  long count() const { return g_allocations.load() - start_; }

 private:
  long start_;
};
}  // namespace fgbg_test

// Under AddressSanitizer the sanitizer owns operator new / delete (replacing them makes it report
// allocation mismatches), so the counting hook is only installed in ordinary builds; Eigen's
// guard above works in both. The Release test run (scripts/dev.sh test) does the counting.
#if defined(__SANITIZE_ADDRESS__)
#define FGBG_TEST_COUNT_NEW 0
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define FGBG_TEST_COUNT_NEW 0
#endif
#endif
#ifndef FGBG_TEST_COUNT_NEW
#define FGBG_TEST_COUNT_NEW 1
#endif

#if FGBG_TEST_COUNT_NEW
namespace fgbg_test {
/// The replaced deletes free through this out-of-line call: inlined into an allocator next to
/// the replaced new, GCC 12 calls std::free on memory "from operator new" a mismatch
/// (-Wmismatched-new-delete), though the replaced new is std::malloc.
[[gnu::noinline]] inline void release(void* p) noexcept {
  std::free(p);
}
}  // namespace fgbg_test

void* operator new(std::size_t n) {
  fgbg_test::g_allocations.fetch_add(1);
  if (void* p = std::malloc(n ? n : 1)) return p;
  throw std::bad_alloc();
}
void* operator new[](std::size_t n) {
  return ::operator new(n);
}
void operator delete(void* p) noexcept {
  fgbg_test::release(p);
}
void operator delete[](void* p) noexcept {
  fgbg_test::release(p);
}
void operator delete(void* p, std::size_t) noexcept {
  fgbg_test::release(p);
}
void operator delete[](void* p, std::size_t) noexcept {
  fgbg_test::release(p);
}
#endif  // FGBG_TEST_COUNT_NEW
