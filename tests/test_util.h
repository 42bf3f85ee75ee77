// test_util.h — shared helpers of the umrt GoogleTest suite: the fixture that (re)initialises the
// runtime on the backend chosen by UMRT_TEST_BACKEND (sim by default, or cuda) and skips when
// userfaultfd is refused or the GPU is missing, device-memory access for both backends
// (dev_read/dev_write), page-dependent fill/check patterns, a checksum, a stats snapshot, and a
// watchdog that turns a hang into a clear failure.
#pragma once

#include <gtest/gtest.h>
#include <umrt/umrt.h>

#include "../kernels/umrt_kernels.h"

#include <sys/mman.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#if defined(UMRT_TEST_CUDA) && UMRT_TEST_CUDA
#include <cuda_runtime_api.h>
#endif

namespace umrt_test {

constexpr size_t kPage = 4096;
constexpr size_t kBlock = size_t{2} << 20;
constexpr size_t kBlockPages = kBlock / kPage;
constexpr uint64_t KiB = uint64_t{1} << 10;
constexpr uint64_t MiB = uint64_t{1} << 20;
constexpr uint64_t GiB = uint64_t{1} << 30;

// Sanitizer builds are several times slower: scale time limits.
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
constexpr int kSlowdown = 10;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
constexpr int kSlowdown = 10;
#else
constexpr int kSlowdown = 1;
#endif
#else
constexpr int kSlowdown = 1;
#endif

inline size_t pages_of(size_t bytes) { return (bytes + kPage - 1) / kPage; }
inline const char *last_error() {
  const char *e = umrt_last_error();
  return e ? e : "(null)";
}
inline std::string str(umrt_status s) {
  const char *n = umrt_status_string(s);
  std::ostringstream o;
  o << (n ? n : "(null)") << " (" << static_cast<int>(s) << ")";
  return o.str();
}

// ---- patterns ------------------------------------------------------------------------------------

// The bit mixer the kernels use too (kernels/umrt_kernels.h is plain C++ outside nvcc).
inline uint64_t mix64(uint64_t x) { return umrt_kernels::mix(x); }

// The 8-byte word at byte offset (word_index * 8) of a buffer filled with `seed`. It depends on the
// page and on the position in the page, so a page copied to the wrong place is caught.
inline uint64_t pattern_word(uint64_t seed, size_t word_index) {
  return mix64(seed * 0x9e3779b97f4a7c15ull + word_index + 1);
}
inline uint8_t pattern_byte(uint64_t seed, size_t byte_index) {
  uint64_t w = pattern_word(seed, byte_index / 8);
  return static_cast<uint8_t>(w >> (8 * (byte_index % 8)));
}

// Fill [p, p + bytes) as bytes [base, base + bytes) of a buffer filled with seed. base and bytes need
// not be multiples of 8.
inline void fill_pattern(void *p, size_t bytes, uint64_t seed, size_t base = 0) {
  auto *b = static_cast<uint8_t *>(p);
  size_t i = 0;
  while (i < bytes && (base + i) % 8 != 0) {
    b[i] = pattern_byte(seed, base + i);
    ++i;
  }
  for (; i + 8 <= bytes; i += 8) {
    uint64_t w = pattern_word(seed, (base + i) / 8);
    std::memcpy(b + i, &w, 8);
  }
  for (; i < bytes; ++i) b[i] = pattern_byte(seed, base + i);
}

// Index (relative to p) of the first byte that differs from the pattern, or nullopt.
inline std::optional<size_t> first_mismatch(const void *p, size_t bytes, uint64_t seed,
                                            size_t base = 0) {
  const auto *b = static_cast<const volatile uint8_t *>(p);
  size_t i = 0;
  while (i < bytes && (base + i) % 8 != 0) {
    if (b[i] != pattern_byte(seed, base + i)) return i;
    ++i;
  }
  for (; i + 8 <= bytes; i += 8) {
    uint64_t w;
    std::memcpy(&w, const_cast<const uint8_t *>(b) + i, 8);
    if (w != pattern_word(seed, (base + i) / 8)) {
      for (size_t k = i; k < i + 8; ++k)
        if (b[k] != pattern_byte(seed, base + k)) return k;
    }
  }
  for (; i < bytes; ++i)
    if (b[i] != pattern_byte(seed, base + i)) return i;
  return std::nullopt;
}

inline std::string hexbyte(unsigned v) {
  char b[8];
  std::snprintf(b, sizeof b, "0x%02x", v & 0xffu);
  return b;
}

// gtest assertion: EXPECT_TRUE(check_pattern(p, n, seed)) reports the first mismatching byte.
inline ::testing::AssertionResult check_pattern(const void *p, size_t bytes, uint64_t seed,
                                                size_t base = 0) {
  auto m = first_mismatch(p, bytes, seed, base);
  if (!m) return ::testing::AssertionSuccess();
  const auto *b = static_cast<const volatile uint8_t *>(p);
  return ::testing::AssertionFailure()
         << "first mismatching byte at index " << *m << " (page " << (*m / kPage) << ", offset "
         << (*m % kPage) << " in page) of " << bytes << " bytes: expected "
         << hexbyte(pattern_byte(seed, base + *m)) << ", got " << hexbyte(b[*m]) << " (seed " << seed
         << ", base " << base << ")";
}

// gtest assertion: all bytes zero; reports the first non-zero byte.
inline ::testing::AssertionResult check_zero(const void *p, size_t bytes) {
  const auto *b = static_cast<const volatile uint8_t *>(p);
  size_t i = 0;
  for (; i + 8 <= bytes; i += 8) {
    uint64_t w;
    std::memcpy(&w, const_cast<const uint8_t *>(b) + i, 8);
    if (w != 0) break;
  }
  for (; i < bytes; ++i)
    if (b[i] != 0)
      return ::testing::AssertionFailure()
             << "byte " << i << " (page " << i / kPage << ") of " << bytes << " is " << hexbyte(b[i])
             << ", expected 0";
  return ::testing::AssertionSuccess();
}

// FNV-1a-style checksum over 8-byte words (tail bytes folded in individually).
inline uint64_t checksum(const void *p, size_t bytes) {
  const auto *b = static_cast<const uint8_t *>(p);
  uint64_t h = 0xcbf29ce484222325ull;
  size_t i = 0;
  for (; i + 8 <= bytes; i += 8) {
    uint64_t w;
    std::memcpy(&w, b + i, 8);
    h = (h ^ w) * 0x100000001b3ull;
  }
  for (; i < bytes; ++i) h = (h ^ b[i]) * 0x100000001b3ull;
  return mix64(h ^ bytes);
}

// ---- runtime helpers -----------------------------------------------------------------------------

// A sim configuration with every other field left to the defaults.
inline umrt_config sim_config(uint64_t device_memory = 64 * MiB) {
  umrt_config cfg;
  std::memset(&cfg, 0, sizeof cfg);
  cfg.backend = UMRT_BACKEND_SIM;
  cfg.device_memory = device_memory;
  return cfg;
}

// ---- the backend under test ----------------------------------------------------------------------
//
// UMRT_TEST_BACKEND picks the backend the fixture initialises: unset, empty or "sim" (the default)
// or "cuda" (ctest label gpu registers the protocol suites a second time with it). Every protocol
// test must hold on both; tests that only make sense on sim say so with UMRT_SKIP_UNLESS_SIM_RUN.

enum class Backend { sim, cuda };

inline const char *backend_name(Backend b) { return b == Backend::cuda ? "cuda" : "sim"; }

// The backend UMRT_TEST_BACKEND asks for; false (with the reason in *why) for any other value.
inline bool selected_backend(Backend *out, std::string *why) {
  const char *v = std::getenv("UMRT_TEST_BACKEND");
  if (!v || !*v || std::strcmp(v, "sim") == 0) {
    *out = Backend::sim;
    return true;
  }
  if (std::strcmp(v, "cuda") == 0) {
    *out = Backend::cuda;
    return true;
  }
  *why = std::string("UMRT_TEST_BACKEND='") + v + "': expected 'sim' (the default) or 'cuda'";
  return false;
}

// umrt_backend_kind of a backend under test.
inline umrt_backend_kind backend_kind(Backend b) {
  return b == Backend::cuda ? UMRT_BACKEND_CUDA : UMRT_BACKEND_SIM;
}

// A configuration for backend b with every other field left to the defaults.
inline umrt_config test_config(Backend b, uint64_t device_memory = 64 * MiB) {
  umrt_config cfg = sim_config(device_memory);
  cfg.backend = backend_kind(b);
  return cfg;
}

// In a test body: skip unless this is the sim run (UMRT_TEST_BACKEND unset or sim), saying why.
// For tests that reach into the sim device (UMRT_SIM_* hooks, sim bandwidth/latency) and for
// backend-independent tests (configuration parsing, status strings) that the sim run already
// covers and that would otherwise pass again, unchanged, under the gpu label.
#define UMRT_SKIP_UNLESS_SIM_RUN(why)                                                          \
  do {                                                                                         \
    ::umrt_test::Backend umrt_b_ = ::umrt_test::Backend::sim;                                  \
    std::string umrt_why_;                                                                     \
    if (!::umrt_test::selected_backend(&umrt_b_, &umrt_why_)) FAIL() << umrt_why_;             \
    if (umrt_b_ != ::umrt_test::Backend::sim)                                                  \
      GTEST_SKIP() << "sim-only test, not run with UMRT_TEST_BACKEND="                         \
                   << ::umrt_test::backend_name(umrt_b_) << ": " << why;                       \
  } while (0)

inline umrt_stats get_stats() {
  umrt_stats s;
  std::memset(&s, 0, sizeof s);
  umrt_status st = umrt_get_stats(&s);
  EXPECT_EQ(st, UMRT_SUCCESS) << last_error();
  return s;
}

// Field-by-field comparison of two stats snapshots; names the fields that differ.
inline ::testing::AssertionResult stats_equal(const umrt_stats &a, const umrt_stats &b) {
  std::ostringstream o;
#define UMRT_TEST_FIELD(f) \
  if (a.f != b.f) o << " " #f ": " << a.f << " -> " << b.f << ";";
  UMRT_TEST_FIELD(cpu_faults)
  UMRT_TEST_FIELD(bytes_to_device)
  UMRT_TEST_FIELD(bytes_to_host)
  UMRT_TEST_FIELD(evictions)
  UMRT_TEST_FIELD(batches)
  UMRT_TEST_FIELD(pages_to_device)
  UMRT_TEST_FIELD(pages_to_host)
  UMRT_TEST_FIELD(zero_fills)
  UMRT_TEST_FIELD(pages_restored)
  UMRT_TEST_FIELD(pages_skipped_locked)
  UMRT_TEST_FIELD(fault_groups)
  UMRT_TEST_FIELD(write_faults)
  UMRT_TEST_FIELD(write_cancels)
  UMRT_TEST_FIELD(device_bytes_in_use)
  UMRT_TEST_FIELD(device_capacity)
#undef UMRT_TEST_FIELD
  if (o.str().empty()) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << "stats changed:" << o.str();
}

// Location of the page holding p (FAIL()s through gtest on error; returns HOST then).
inline umrt_location location_of(const void *p) {
  umrt_location l = UMRT_LOCATION_HOST;
  umrt_status s = umrt_page_location(p, &l);
  EXPECT_EQ(s, UMRT_SUCCESS) << "umrt_page_location(" << p << "): " << last_error();
  return l;
}

// Count of pages of [p, p + bytes) at loc (p page-aligned or not: pages covering the span).
inline size_t count_pages_at(const void *p, size_t bytes, umrt_location loc) {
  auto a = reinterpret_cast<uintptr_t>(p);
  uintptr_t first = a & ~(kPage - 1);
  uintptr_t end = a + bytes;
  size_t n = 0;
  for (uintptr_t q = first; q < end; q += kPage) {
    const void *probe = reinterpret_cast<const void *>(q < a ? a : q);
    if (location_of(probe) == loc) ++n;
  }
  return n;
}

// gtest assertion: every page covering [p, p + bytes) is at loc.
inline ::testing::AssertionResult all_pages_at(const void *p, size_t bytes, umrt_location loc) {
  auto a = reinterpret_cast<uintptr_t>(p);
  uintptr_t first = a & ~(kPage - 1);
  uintptr_t end = a + bytes;
  for (uintptr_t q = first; q < end; q += kPage) {
    const void *probe = reinterpret_cast<const void *>(q < a ? a : q);
    umrt_location l = UMRT_LOCATION_HOST;
    umrt_status s = umrt_page_location(probe, &l);
    if (s != UMRT_SUCCESS)
      return ::testing::AssertionFailure()
             << "umrt_page_location(page " << (q - first) / kPage << ") failed: " << str(s)
             << ": " << last_error();
    if (l != loc)
      return ::testing::AssertionFailure()
             << "page " << (q - first) / kPage << " of " << pages_of(end - first) << " is at "
             << (l == UMRT_LOCATION_DEVICE ? "DEVICE" : "HOST") << ", expected "
             << (loc == UMRT_LOCATION_DEVICE ? "DEVICE" : "HOST");
  }
  return ::testing::AssertionSuccess();
}

// Device address of p (nullptr + gtest failure on error).
inline uint8_t *dev(const void *p) {
  void *d = nullptr;
  umrt_status s = umrt_device_pointer(p, &d);
  EXPECT_EQ(s, UMRT_SUCCESS) << "umrt_device_pointer: " << last_error();
  return static_cast<uint8_t *>(d);
}

// ---- device memory from the host -----------------------------------------------------------------
//
// On sim the device window is host-addressable; on cuda it is GPU memory that the host must not
// touch. These copy between host memory and device addresses (from umrt_device_pointer()) on
// either: memcpy on sim, cudaMemcpy on cuda (the backend the runtime runs on now). Only read or
// write device pages that are resident there (location DEVICE): on cuda a block without a device
// chunk is not mapped at all.

inline bool runtime_on_cuda() {
  const char *n = umrt_backend_name();
  return n && std::strcmp(n, "cuda") == 0;
}

inline ::testing::AssertionResult dev_read(void *dst, const void *dsrc, size_t bytes) {
  if (bytes == 0) return ::testing::AssertionSuccess();
  if (!dst || !dsrc) return ::testing::AssertionFailure() << "dev_read: null pointer";
  if (!runtime_on_cuda()) {
    std::memcpy(dst, dsrc, bytes);
    return ::testing::AssertionSuccess();
  }
#if defined(UMRT_TEST_CUDA) && UMRT_TEST_CUDA
  // Device -> pageable host memory: returns once the copy is complete.
  cudaError_t e = cudaMemcpy(dst, dsrc, bytes, cudaMemcpyDeviceToHost);
  if (e != cudaSuccess)
    return ::testing::AssertionFailure() << "dev_read: cudaMemcpy(device " << dsrc << " -> host, " << bytes
                                         << " bytes): " << cudaGetErrorName(e) << ": " << cudaGetErrorString(e);
  return ::testing::AssertionSuccess();
#else
  return ::testing::AssertionFailure() << "dev_read: the runtime runs on cuda but the tests were built "
                                          "without the CUDA runtime (UMRT_TEST_CUDA)";
#endif
}

inline ::testing::AssertionResult dev_write(void *ddst, const void *src, size_t bytes) {
  if (bytes == 0) return ::testing::AssertionSuccess();
  if (!ddst || !src) return ::testing::AssertionFailure() << "dev_write: null pointer";
  if (!runtime_on_cuda()) {
    std::memcpy(ddst, src, bytes);
    return ::testing::AssertionSuccess();
  }
#if defined(UMRT_TEST_CUDA) && UMRT_TEST_CUDA
  cudaError_t e = cudaMemcpy(ddst, src, bytes, cudaMemcpyHostToDevice);
  if (e != cudaSuccess)
    return ::testing::AssertionFailure() << "dev_write: cudaMemcpy(host -> device " << ddst << ", " << bytes
                                         << " bytes): " << cudaGetErrorName(e) << ": " << cudaGetErrorString(e);
  // From pageable memory cudaMemcpy may return before the DMA has landed: wait, so the write is
  // finished when this returns, as a sim "kernel" is (the tests model completed kernels).
  e = cudaDeviceSynchronize();
  if (e != cudaSuccess)
    return ::testing::AssertionFailure() << "dev_write: cudaDeviceSynchronize after the copy: "
                                         << cudaGetErrorName(e) << ": " << cudaGetErrorString(e);
  return ::testing::AssertionSuccess();
#else
  return ::testing::AssertionFailure() << "dev_write: the runtime runs on cuda but the tests were built "
                                          "without the CUDA runtime (UMRT_TEST_CUDA)";
#endif
}

// The device copy of the managed bytes [p, p + bytes) into *out (resized). All of it must be
// device-resident.
inline ::testing::AssertionResult read_device_copy(const void *p, size_t bytes, std::vector<uint8_t> *out) {
  out->assign(bytes, 0);
  void *d = nullptr;
  umrt_status s = umrt_device_pointer(p, &d);
  if (s != UMRT_SUCCESS)
    return ::testing::AssertionFailure() << "umrt_device_pointer(" << p << "): " << str(s) << ": " << last_error();
  return dev_read(out->data(), d, bytes);
}

// gtest assertion: the device copy of the managed bytes [p, p + bytes) holds the pattern `seed`
// (as bytes [base, base + bytes) of the pattern), read without a CPU fault.
inline ::testing::AssertionResult check_device_pattern(const void *p, size_t bytes, uint64_t seed,
                                                       size_t base = 0) {
  std::vector<uint8_t> copy;
  if (auto r = read_device_copy(p, bytes, &copy); !r) return r;
  auto r = check_pattern(copy.data(), bytes, seed, base);
  if (!r) return ::testing::AssertionFailure() << "device copy: " << r.message();
  return r;
}

// gtest assertion: the device copy of the managed bytes [p, p + bytes) is all zero.
inline ::testing::AssertionResult check_device_zero(const void *p, size_t bytes) {
  std::vector<uint8_t> copy;
  if (auto r = read_device_copy(p, bytes, &copy); !r) return r;
  auto r = check_zero(copy.data(), bytes);
  if (!r) return ::testing::AssertionFailure() << "device copy: " << r.message();
  return r;
}

// Writes the pattern into the device copy of the managed bytes [p, p + bytes) (what a kernel
// would do); finished when it returns.
inline ::testing::AssertionResult fill_device_pattern(const void *p, size_t bytes, uint64_t seed,
                                                      size_t base = 0) {
  std::vector<uint8_t> buf(bytes);
  fill_pattern(buf.data(), bytes, seed, base);
  void *d = nullptr;
  umrt_status s = umrt_device_pointer(p, &d);
  if (s != UMRT_SUCCESS)
    return ::testing::AssertionFailure() << "umrt_device_pointer(" << p << "): " << str(s) << ": " << last_error();
  return dev_write(d, buf.data(), bytes);
}

// A 2 MiB-aligned address range of `bytes` for mremap(MREMAP_FIXED), kept reserved (PROT_NONE)
// until the mremap replaces it: an address merely released could be taken meanwhile by a thread
// stack (umrt starts a lane thread per multi-block prefetch), which the move would overwrite.
inline uint8_t *reserve_address(size_t bytes) {
  void *p = mmap(nullptr, bytes + kBlock, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (p == MAP_FAILED) return nullptr;
  const auto b = reinterpret_cast<uintptr_t>(p);
  const auto a = (b + kBlock - 1) & ~(kBlock - 1);
  if (a > b) munmap(p, a - b);
  if (b + kBlock > a) munmap(reinterpret_cast<void *>(a + bytes), b + kBlock - a);
  return reinterpret_cast<uint8_t *>(a);
}

// Aborts the process with a message if not destroyed within `limit` (scaled for sanitizers):
// a thread stuck in a page fault that is never served cannot be cancelled any other way.
class Watchdog {
 public:
  Watchdog(std::chrono::seconds limit, std::string what) : what_(std::move(what)) {
    auto deadline = std::chrono::steady_clock::now() + limit * kSlowdown;
    thread_ = std::thread([this, deadline, limit] {
      std::unique_lock<std::mutex> lk(mu_);
      if (!cv_.wait_until(lk, deadline, [this] { return done_; })) {
        std::fprintf(stderr,
                     "\nWATCHDOG: %s did not finish within %lld s: a thread is most likely stuck "
                     "in a page fault the runtime never served (or a lost wake-up). Aborting.\n",
                     what_.c_str(), static_cast<long long>(limit.count() * kSlowdown));
        std::fflush(stderr);
        std::abort();
      }
    });
  }
  ~Watchdog() {
    {
      std::lock_guard<std::mutex> lk(mu_);
      done_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }
  Watchdog(const Watchdog &) = delete;
  Watchdog &operator=(const Watchdog &) = delete;

 private:
  std::string what_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool done_ = false;
  std::thread thread_;
};

// Base fixture: shuts down whatever runtime is up, initialises the backend under test
// (UMRT_TEST_BACKEND, or TestBackend() of a subclass) with the config from Configure(), skips when
// userfaultfd is refused or, on cuda, when umrt_init answers NO_DEVICE (with its reason), and
// shuts down afterwards. A per-test watchdog turns a hang into an abort naming the test.
class UmrtTest : public ::testing::Test {
 protected:
  // Override to change the configuration (device memory, policies...).
  virtual void Configure(umrt_config &cfg) { (void)cfg; }
  // Override for tests that legitimately run longer.
  virtual std::chrono::seconds TimeLimit() const { return std::chrono::seconds(25); }
  // Protocol fixtures check umrt_validate() after each test.
  virtual bool ValidateAtEnd() const { return false; }
  // The backend to run on; false (and *why) when it cannot be decided. Default: UMRT_TEST_BACKEND.
  virtual bool TestBackend(Backend *b, std::string *why) const { return selected_backend(b, why); }

  void SetUp() override {
    const auto *info = ::testing::UnitTest::GetInstance()->current_test_info();
    watchdog_.emplace(TimeLimit(), std::string(info->test_suite_name()) + "." + info->name());
    umrt_shutdown();
    std::string why;
    ASSERT_TRUE(TestBackend(&backend_, &why)) << why;
    cfg_ = test_config(backend_);
    Configure(cfg_);
    umrt_status s = umrt_init(&cfg_);
    if (s == UMRT_ERROR_NOT_SUPPORTED)
      GTEST_SKIP() << "userfaultfd is not available here (umrt_init: NOT_SUPPORTED): "
                   << last_error();
    if (s == UMRT_ERROR_NO_DEVICE && backend_ == Backend::cuda)
      GTEST_SKIP() << "no usable GPU for the cuda backend (umrt_init: NO_DEVICE): " << last_error();
    ASSERT_EQ(s, UMRT_SUCCESS) << "umrt_init(" << backend_name(backend_) << "): " << last_error();
    initialised_ = true;
    const char *name = umrt_backend_name();
    ASSERT_NE(name, nullptr) << last_error();
    ASSERT_STREQ(name, backend_name(backend_)) << "umrt_init succeeded on another backend than asked";
  }

  void TearDown() override {
    if (initialised_ && ValidateAtEnd() && !IsSkipped()) {
      EXPECT_EQ(umrt_validate(), UMRT_SUCCESS) << "umrt_validate at end of test: " << last_error();
    }
    umrt_shutdown();
    watchdog_.reset();
  }

  bool on_cuda() const { return backend_ == Backend::cuda; }

  umrt_config cfg_{};
  Backend backend_ = Backend::sim;
  bool initialised_ = false;
  std::optional<Watchdog> watchdog_;
};

// RAII managed allocation for tests (frees at scope exit, ignoring the status; tests that check
// umrt_free call release() first).
class Managed {
 public:
  Managed() = default;
  explicit Managed(size_t bytes) : bytes_(bytes) {
    umrt_status s = umrt_malloc(&p_, bytes);
    EXPECT_EQ(s, UMRT_SUCCESS) << "umrt_malloc(" << bytes << "): " << last_error();
    if (s != UMRT_SUCCESS) p_ = nullptr;
  }
  ~Managed() {
    if (p_) umrt_free(p_);
  }
  Managed(Managed &&o) noexcept : p_(o.p_), bytes_(o.bytes_) { o.p_ = nullptr; }
  Managed &operator=(Managed &&o) noexcept {
    if (this != &o) {
      if (p_) umrt_free(p_);
      p_ = o.p_;
      bytes_ = o.bytes_;
      o.p_ = nullptr;
    }
    return *this;
  }
  Managed(const Managed &) = delete;
  Managed &operator=(const Managed &) = delete;

  uint8_t *get() const { return static_cast<uint8_t *>(p_); }
  uint8_t *operator+(size_t off) const { return get() + off; }
  size_t bytes() const { return bytes_; }
  size_t pages() const { return pages_of(bytes_); }
  explicit operator bool() const { return p_ != nullptr; }
  void *release() {
    void *p = p_;
    p_ = nullptr;
    return p;
  }

 private:
  void *p_ = nullptr;
  size_t bytes_ = 0;
};

// Sets (or unsets) an environment variable for a scope, restoring the previous value.
class ScopedEnv {
 public:
  ScopedEnv(const char *name, const char *value) : name_(name) {
    const char *old = std::getenv(name);
    if (old) old_ = std::string(old);
    if (value)
      ::setenv(name, value, 1);
    else
      ::unsetenv(name);
  }
  ~ScopedEnv() {
    if (old_)
      ::setenv(name_.c_str(), old_->c_str(), 1);
    else
      ::unsetenv(name_.c_str());
  }
  ScopedEnv(const ScopedEnv &) = delete;
  ScopedEnv &operator=(const ScopedEnv &) = delete;

 private:
  std::string name_;
  std::optional<std::string> old_;
};

}  // namespace umrt_test
