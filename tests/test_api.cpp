// test_api.cpp — the public C API and the C++ wrappers: bad input to every entry point (status,
// a message in umrt_last_error(), and nothing changed), lazy initialisation, status strings,
// configuration errors, umrt::buffer and umrt::error. The fixture tests run on sim and, with
// UMRT_TEST_BACKEND=cuda (label gpu), on cuda; configuration parsing and status strings do not
// depend on the backend and run in the sim run only.
#include <gtest/gtest.h>
#include <umrt/umrt.h>

#include <umrt/umrt.hpp>

#include <sched.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <climits>
#include <cstdint>
#include <cstring>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "test_util.h"

// c_helpers.c: out-of-range enum values passed from C (no undefined behaviour in the test).
extern "C" {
umrt_status umrt_test_prefetch_loc(const void *ptr, size_t size, int loc);
umrt_status umrt_test_inject(int kind, uint64_t nth, uint64_t count);
const char *umrt_test_status_string(int s);
void umrt_test_set_backend(umrt_config *cfg, int v);
void umrt_test_set_log_level(umrt_config *cfg, int v);
void umrt_test_set_write_fault(umrt_config *cfg, int v);
}

namespace {

using namespace umrt_test;

class ApiTest : public UmrtTest {
 protected:
  bool ValidateAtEnd() const override { return true; }
};

// A failed call: the status, a non-empty thread-local message.
#define EXPECT_FAILS_WITH(call, status)                                                     \
  do {                                                                                      \
    umrt_status s_ = (call);                                                                \
    EXPECT_EQ(s_, status) << #call << " returned " << str(s_);                              \
    const char *e_ = umrt_last_error();                                                     \
    EXPECT_TRUE(e_ != nullptr && e_[0] != '\0') << #call << ": umrt_last_error() is empty"; \
  } while (0)

// ---- umrt_malloc -----------------------------------------------------------------------------

TEST_F(ApiTest, MallocZeroSizeIsInvalid) {
  umrt_stats before = get_stats();
  void *p = nullptr;
  EXPECT_FAILS_WITH(umrt_malloc(&p, 0), UMRT_ERROR_INVALID_VALUE);
  EXPECT_TRUE(stats_equal(before, get_stats()));
}

TEST_F(ApiTest, MallocNullOutIsInvalid) {
  umrt_stats before = get_stats();
  EXPECT_FAILS_WITH(umrt_malloc(nullptr, 4096), UMRT_ERROR_INVALID_VALUE);
  EXPECT_TRUE(stats_equal(before, get_stats()));
}

TEST_F(ApiTest, MallocAbsurdSizeFails) {
  // Rounding SIZE_MAX up to pages overflows: must be refused, never a tiny allocation.
  for (size_t size : {SIZE_MAX, SIZE_MAX - 4095, SIZE_MAX / 2}) {
    void *p = nullptr;
    umrt_status s = umrt_malloc(&p, size);
    EXPECT_NE(s, UMRT_SUCCESS) << "umrt_malloc(" << size << ") succeeded: " << p;
    EXPECT_TRUE(s == UMRT_ERROR_INVALID_VALUE || s == UMRT_ERROR_OUT_OF_MEMORY) << str(s);
    EXPECT_GT(std::strlen(last_error()), 0u);
    if (s == UMRT_SUCCESS) umrt_free(p);
  }
}

TEST_F(ApiTest, FreshMemoryReadsZeroAndIsOnHost) {
  for (size_t size : {size_t{1}, size_t{100}, kPage, kPage + 1, 16 * KiB, 3 * MiB + 12345}) {
    SCOPED_TRACE(size);
    void *p = nullptr;
    ASSERT_EQ(umrt_malloc(&p, size), UMRT_SUCCESS) << last_error();
    ASSERT_NE(p, nullptr);
    EXPECT_EQ(reinterpret_cast<uintptr_t>(p) % 16, 0u) << "allocations must be 16-byte aligned";
    EXPECT_TRUE(check_zero(p, size));
    EXPECT_TRUE(all_pages_at(p, size, UMRT_LOCATION_HOST));
    // Writable over its whole size.
    fill_pattern(p, size, size);
    EXPECT_TRUE(check_pattern(p, size, size));
    EXPECT_EQ(umrt_free(p), UMRT_SUCCESS) << last_error();
  }
}

TEST_F(ApiTest, AllocationsDoNotOverlap) {
  std::vector<void *> ps;
  std::vector<size_t> sizes = {100, 16 * KiB, 5000, 2 * MiB, 64 * KiB, 1, 3 * MiB};
  for (size_t i = 0; i < sizes.size(); ++i) {
    void *p = nullptr;
    ASSERT_EQ(umrt_malloc(&p, sizes[i]), UMRT_SUCCESS) << last_error();
    ps.push_back(p);
    fill_pattern(p, sizes[i], 1000 + i);
  }
  for (size_t i = 0; i < sizes.size(); ++i) {
    EXPECT_TRUE(check_pattern(ps[i], sizes[i], 1000 + i)) << "allocation " << i;
    EXPECT_EQ(umrt_free(ps[i]), UMRT_SUCCESS) << last_error();
  }
}

// ---- umrt_free -------------------------------------------------------------------------------

TEST_F(ApiTest, FreeNullIsInvalid) {
  umrt_stats before = get_stats();
  EXPECT_FAILS_WITH(umrt_free(nullptr), UMRT_ERROR_INVALID_VALUE);
  EXPECT_TRUE(stats_equal(before, get_stats()));
}

TEST_F(ApiTest, FreeUnknownPointerIsInvalid) {
  int on_stack = 0;
  std::vector<char> on_heap(8192);
  EXPECT_FAILS_WITH(umrt_free(&on_stack), UMRT_ERROR_INVALID_VALUE);
  EXPECT_FAILS_WITH(umrt_free(on_heap.data()), UMRT_ERROR_INVALID_VALUE);
  EXPECT_FAILS_WITH(umrt_free(reinterpret_cast<void *>(uintptr_t{0x1000})), UMRT_ERROR_INVALID_VALUE);
}

TEST_F(ApiTest, FreeInteriorPointerIsInvalidAndKeepsTheAllocation) {
  Managed m(1 * MiB);
  ASSERT_TRUE(m);
  fill_pattern(m.get(), m.bytes(), 7);
  ASSERT_EQ(umrt_prefetch(m.get(), 256 * KiB, UMRT_LOCATION_DEVICE, nullptr), UMRT_SUCCESS)
      << last_error();
  umrt_stats before = get_stats();
  EXPECT_FAILS_WITH(umrt_free(m + 1), UMRT_ERROR_INVALID_VALUE);
  EXPECT_FAILS_WITH(umrt_free(m + kPage), UMRT_ERROR_INVALID_VALUE);
  EXPECT_FAILS_WITH(umrt_free(m + 300 * KiB), UMRT_ERROR_INVALID_VALUE);
  EXPECT_TRUE(stats_equal(before, get_stats()));
  EXPECT_TRUE(all_pages_at(m.get(), 256 * KiB, UMRT_LOCATION_DEVICE));
  EXPECT_TRUE(check_device_pattern(m.get(), 256 * KiB, 7));
  EXPECT_TRUE(check_pattern(m.get(), m.bytes(), 7));
  EXPECT_EQ(umrt_free(m.release()), UMRT_SUCCESS) << last_error();
}

TEST_F(ApiTest, DoubleFreeIsInvalid) {
  void *p = nullptr;
  ASSERT_EQ(umrt_malloc(&p, 64 * KiB), UMRT_SUCCESS) << last_error();
  ASSERT_EQ(umrt_free(p), UMRT_SUCCESS) << last_error();
  EXPECT_FAILS_WITH(umrt_free(p), UMRT_ERROR_INVALID_VALUE);
  // A freed pointer is unknown to every other call too.
  umrt_location loc;
  void *d;
  EXPECT_FAILS_WITH(umrt_page_location(p, &loc), UMRT_ERROR_INVALID_VALUE);
  EXPECT_FAILS_WITH(umrt_device_pointer(p, &d), UMRT_ERROR_INVALID_VALUE);
  EXPECT_FAILS_WITH(umrt_prefetch(p, 4096, UMRT_LOCATION_DEVICE, nullptr), UMRT_ERROR_INVALID_VALUE);
}

TEST_F(ApiTest, FreeWhileOnDeviceReleasesDeviceMemory) {
  void *p = nullptr;
  ASSERT_EQ(umrt_malloc(&p, 4 * MiB), UMRT_SUCCESS) << last_error();
  fill_pattern(p, 4 * MiB, 3);
  ASSERT_EQ(umrt_prefetch(p, 4 * MiB, UMRT_LOCATION_DEVICE, nullptr), UMRT_SUCCESS) << last_error();
  EXPECT_GT(get_stats().device_bytes_in_use, 0u);
  ASSERT_EQ(umrt_free(p), UMRT_SUCCESS) << last_error();
  EXPECT_EQ(get_stats().device_bytes_in_use, 0u);
}

// ---- umrt_prefetch ---------------------------------------------------------------------------

class PrefetchArgs : public ApiTest {
 protected:
  void SetUp() override {
    ApiTest::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    m_ = Managed(3 * MiB);
    ASSERT_TRUE(m_);
    fill_pattern(m_.get(), m_.bytes(), 11);
    // Half on the device, half on the host, so "nothing changed" covers both directions.
    ASSERT_EQ(umrt_prefetch(m_.get(), 1 * MiB, UMRT_LOCATION_DEVICE, nullptr), UMRT_SUCCESS)
        << last_error();
    before_ = get_stats();
  }
  void TearDown() override {
    if (m_) {
      EXPECT_TRUE(stats_equal(before_, get_stats())) << "a refused prefetch changed something";
      EXPECT_TRUE(all_pages_at(m_.get(), 1 * MiB, UMRT_LOCATION_DEVICE));
      EXPECT_TRUE(all_pages_at(m_ + 1 * MiB, 2 * MiB, UMRT_LOCATION_HOST));
      EXPECT_TRUE(check_device_pattern(m_.get(), 1 * MiB, 11));
      EXPECT_TRUE(check_pattern(m_.get(), m_.bytes(), 11));
      m_ = Managed();
    }
    ApiTest::TearDown();
  }
  Managed m_;
  umrt_stats before_{};
};

TEST_F(PrefetchArgs, ZeroSize) {
  EXPECT_FAILS_WITH(umrt_prefetch(m_.get(), 0, UMRT_LOCATION_DEVICE, nullptr), UMRT_ERROR_INVALID_VALUE);
  EXPECT_FAILS_WITH(umrt_prefetch(m_.get(), 0, UMRT_LOCATION_HOST, nullptr), UMRT_ERROR_INVALID_VALUE);
}

TEST_F(PrefetchArgs, NullAndUnmanagedPointers) {
  int on_stack[1024] = {};
  EXPECT_FAILS_WITH(umrt_prefetch(nullptr, 4096, UMRT_LOCATION_DEVICE, nullptr), UMRT_ERROR_INVALID_VALUE);
  EXPECT_FAILS_WITH(umrt_prefetch(on_stack, sizeof on_stack, UMRT_LOCATION_DEVICE, nullptr),
                    UMRT_ERROR_INVALID_VALUE);
  EXPECT_FAILS_WITH(umrt_prefetch(on_stack, sizeof on_stack, UMRT_LOCATION_HOST, nullptr),
                    UMRT_ERROR_INVALID_VALUE);
  EXPECT_EQ(on_stack[0], 0);
}

TEST_F(PrefetchArgs, SpanCrossingTheEnd) {
  EXPECT_FAILS_WITH(umrt_prefetch(m_.get(), m_.bytes() + 1, UMRT_LOCATION_DEVICE, nullptr),
                    UMRT_ERROR_INVALID_VALUE);
  EXPECT_FAILS_WITH(umrt_prefetch(m_ + (m_.bytes() - 10), 20, UMRT_LOCATION_DEVICE, nullptr),
                    UMRT_ERROR_INVALID_VALUE);
  EXPECT_FAILS_WITH(umrt_prefetch(m_.get(), m_.bytes() + 1, UMRT_LOCATION_HOST, nullptr),
                    UMRT_ERROR_INVALID_VALUE);
  EXPECT_FAILS_WITH(umrt_prefetch(m_.get(), 64 * MiB, UMRT_LOCATION_DEVICE, nullptr),
                    UMRT_ERROR_INVALID_VALUE);
  // ptr + size wraps around the address space.
  EXPECT_FAILS_WITH(umrt_prefetch(m_ + kPage, SIZE_MAX, UMRT_LOCATION_DEVICE, nullptr),
                    UMRT_ERROR_INVALID_VALUE);
  EXPECT_FAILS_WITH(umrt_prefetch(m_ + kPage, SIZE_MAX - 100, UMRT_LOCATION_HOST, nullptr),
                    UMRT_ERROR_INVALID_VALUE);
}

TEST_F(PrefetchArgs, SpanCrossingIntoAnotherAllocation) {
  // Whatever lies after this allocation (another allocation or nothing), one call covers ONE.
  Managed other(1 * MiB);
  ASSERT_TRUE(other);
  uint8_t *lo = std::min(m_.get(), other.get());
  uint8_t *hi = std::max(m_.get(), other.get());
  size_t span = static_cast<size_t>(hi - lo) + 4096;
  EXPECT_FAILS_WITH(umrt_prefetch(lo, span, UMRT_LOCATION_DEVICE, nullptr), UMRT_ERROR_INVALID_VALUE);
  EXPECT_TRUE(all_pages_at(other.get(), other.bytes(), UMRT_LOCATION_HOST));
}

TEST_F(PrefetchArgs, BadLocation) {
  EXPECT_FAILS_WITH(umrt_test_prefetch_loc(m_.get(), 4096, 7), UMRT_ERROR_INVALID_VALUE);
  EXPECT_FAILS_WITH(umrt_test_prefetch_loc(m_.get(), 4096, 2), UMRT_ERROR_INVALID_VALUE);
  EXPECT_FAILS_WITH(umrt_test_prefetch_loc(m_.get(), 4096, -1), UMRT_ERROR_INVALID_VALUE);
  EXPECT_FAILS_WITH(umrt_test_prefetch_loc(m_ + 2 * MiB, 4096, 7), UMRT_ERROR_INVALID_VALUE);
}

// ---- umrt_device_pointer / umrt_page_location ------------------------------------------------

TEST_F(ApiTest, DevicePointerBadArguments) {
  Managed m(1 * MiB);
  ASSERT_TRUE(m);
  umrt_stats before = get_stats();
  void *d = reinterpret_cast<void *>(uintptr_t{0xdead});
  int x = 0;
  EXPECT_FAILS_WITH(umrt_device_pointer(nullptr, &d), UMRT_ERROR_INVALID_VALUE);
  EXPECT_FAILS_WITH(umrt_device_pointer(&x, &d), UMRT_ERROR_INVALID_VALUE);
  EXPECT_FAILS_WITH(umrt_device_pointer(m.get(), nullptr), UMRT_ERROR_INVALID_VALUE);
  EXPECT_TRUE(stats_equal(before, get_stats()));
  EXPECT_TRUE(all_pages_at(m.get(), m.bytes(), UMRT_LOCATION_HOST));
}

TEST_F(ApiTest, DevicePointerIsLinear) {
  for (size_t size : {size_t{16} * KiB, size_t{5} * MiB + 4096}) {
    SCOPED_TRACE(size);
    Managed m(size);
    ASSERT_TRUE(m);
    uint8_t *d0 = dev(m.get());
    ASSERT_NE(d0, nullptr);
    EXPECT_NE(d0, m.get()) << "the device address must not be the host address";
    for (size_t off : {size_t{1}, size_t{4095}, size_t{4096}, size_t{12345}, size - 1,
                       size > kBlock ? kBlock + 5 : size / 2, size > kBlock ? 2 * kBlock : size / 3}) {
      EXPECT_EQ(dev(m + off), d0 + off) << "offset " << off;
    }
    // Independent of residency.
    ASSERT_EQ(umrt_prefetch(m.get(), size, UMRT_LOCATION_DEVICE, nullptr), UMRT_SUCCESS) << last_error();
    EXPECT_EQ(dev(m.get()), d0);
    EXPECT_EQ(dev(m + (size - 1)), d0 + (size - 1));
  }
}

TEST_F(ApiTest, PageLocationBadArguments) {
  Managed m(64 * KiB);
  ASSERT_TRUE(m);
  umrt_location loc = UMRT_LOCATION_DEVICE;
  int x = 0;
  EXPECT_FAILS_WITH(umrt_page_location(nullptr, &loc), UMRT_ERROR_INVALID_VALUE);
  EXPECT_FAILS_WITH(umrt_page_location(&x, &loc), UMRT_ERROR_INVALID_VALUE);
  EXPECT_FAILS_WITH(umrt_page_location(m.get(), nullptr), UMRT_ERROR_INVALID_VALUE);
  EXPECT_EQ(location_of(m.get()), UMRT_LOCATION_HOST) << "never-touched pages read as HOST";
}

TEST_F(ApiTest, GetStatsNull) {
  EXPECT_FAILS_WITH(umrt_get_stats(nullptr), UMRT_ERROR_INVALID_VALUE);
}

TEST_F(ApiTest, StatsStartAtZeroAndCapacityIsRoundedToChunks) {
  umrt_stats s = get_stats();
  EXPECT_EQ(s.cpu_faults, 0u);
  EXPECT_EQ(s.bytes_to_device, 0u);
  EXPECT_EQ(s.bytes_to_host, 0u);
  EXPECT_EQ(s.evictions, 0u);
  EXPECT_EQ(s.batches, 0u);
  EXPECT_EQ(s.device_bytes_in_use, 0u);
  EXPECT_EQ(s.device_capacity, 64 * MiB);
  // Rounded down to 2 MiB chunks.
  ASSERT_EQ(umrt_shutdown(), UMRT_SUCCESS) << last_error();
  umrt_config cfg = test_config(backend_, 5 * MiB + 12345);
  ASSERT_EQ(umrt_init(&cfg), UMRT_SUCCESS) << last_error();
  EXPECT_EQ(get_stats().device_capacity, 4 * MiB);
}

TEST_F(ApiTest, StatsResetAtInit) {
  {
    Managed m(1 * MiB);
    ASSERT_TRUE(m);
    fill_pattern(m.get(), m.bytes(), 5);
    ASSERT_EQ(umrt_prefetch(m.get(), m.bytes(), UMRT_LOCATION_DEVICE, nullptr), UMRT_SUCCESS);
    EXPECT_TRUE(check_pattern(m.get(), m.bytes(), 5));
    umrt_stats s = get_stats();
    EXPECT_EQ(s.bytes_to_device, 1 * MiB);
    EXPECT_GT(s.batches, 0u);
    EXPECT_GT(s.cpu_faults, 0u);
  }
  ASSERT_EQ(umrt_shutdown(), UMRT_SUCCESS) << last_error();
  ASSERT_EQ(umrt_init(&cfg_), UMRT_SUCCESS) << last_error();
  umrt_stats s = get_stats();
  EXPECT_EQ(s.cpu_faults, 0u);
  EXPECT_EQ(s.bytes_to_device, 0u);
  EXPECT_EQ(s.bytes_to_host, 0u);
  EXPECT_EQ(s.batches, 0u);
  EXPECT_EQ(s.pages_to_device, 0u);
  EXPECT_EQ(s.pages_to_host, 0u);
  EXPECT_EQ(s.device_bytes_in_use, 0u);
}

// ---- umrt_inject_failure ---------------------------------------------------------------------

TEST_F(ApiTest, InjectFailureBadArguments) {
  EXPECT_FAILS_WITH(umrt_inject_failure(UMRT_INJECT_COPY, 0, 1), UMRT_ERROR_INVALID_VALUE);
  EXPECT_FAILS_WITH(umrt_inject_failure(UMRT_INJECT_COPY, 1, 0), UMRT_ERROR_INVALID_VALUE);
  EXPECT_FAILS_WITH(umrt_inject_failure(UMRT_INJECT_ALLOC, 0, 5), UMRT_ERROR_INVALID_VALUE);
  EXPECT_FAILS_WITH(umrt_inject_failure(UMRT_INJECT_ALLOC, 3, 0), UMRT_ERROR_INVALID_VALUE);
  EXPECT_FAILS_WITH(umrt_test_inject(0, 1, 1), UMRT_ERROR_INVALID_VALUE);
  EXPECT_FAILS_WITH(umrt_test_inject(99, 1, 1), UMRT_ERROR_INVALID_VALUE);
  // None of those armed anything: a prefetch with copies goes through.
  Managed m(1 * MiB);
  ASSERT_TRUE(m);
  fill_pattern(m.get(), m.bytes(), 9);
  EXPECT_EQ(umrt_prefetch(m.get(), m.bytes(), UMRT_LOCATION_DEVICE, nullptr), UMRT_SUCCESS) << last_error();
  EXPECT_EQ(umrt_prefetch(m.get(), m.bytes(), UMRT_LOCATION_HOST, nullptr), UMRT_SUCCESS) << last_error();
  EXPECT_TRUE(check_pattern(m.get(), m.bytes(), 9));
  EXPECT_EQ(get_stats().pages_restored, 0u);
}

// ---- status strings, last error, validate, backend name --------------------------------------

TEST(ApiStrings, StatusStrings) {
  UMRT_SKIP_UNLESS_SIM_RUN("status strings do not depend on the backend");
  const umrt_status all[] = {UMRT_SUCCESS, UMRT_ERROR_INVALID_VALUE, UMRT_ERROR_OUT_OF_MEMORY,
                             UMRT_ERROR_NOT_SUPPORTED, UMRT_ERROR_NO_DEVICE, UMRT_ERROR_BACKEND};
  std::set<std::string> seen;
  for (umrt_status s : all) {
    const char *n = umrt_status_string(s);
    ASSERT_NE(n, nullptr) << int(s);
    EXPECT_GT(std::strlen(n), 0u) << int(s);
    seen.insert(n);
  }
  EXPECT_EQ(seen.size(), std::size(all)) << "status strings must be distinct";
  for (int bogus : {-1, 6, 1000}) {
    const char *n = umrt_test_status_string(bogus);
    ASSERT_NE(n, nullptr) << bogus;
    EXPECT_GT(std::strlen(n), 0u) << bogus;
  }
}

TEST_F(ApiTest, LastErrorIsThreadLocal) {
  ASSERT_EQ(umrt_free(nullptr), UMRT_ERROR_INVALID_VALUE);
  std::string mine = last_error();
  ASSERT_FALSE(mine.empty());
  std::string theirs;
  std::thread t([&] {
    void *p;
    EXPECT_EQ(umrt_malloc(&p, 0), UMRT_ERROR_INVALID_VALUE);
    theirs = last_error();
  });
  t.join();
  EXPECT_FALSE(theirs.empty());
  EXPECT_EQ(mine, last_error()) << "another thread's failure changed this thread's last error";
}

TEST_F(ApiTest, ValidateAndBackendName) {
  EXPECT_EQ(umrt_validate(), UMRT_SUCCESS) << last_error();
  const char *name = umrt_backend_name();
  ASSERT_NE(name, nullptr);
  EXPECT_STREQ(name, backend_name(backend_));
}

// ---- initialisation and configuration ---------------------------------------------------------

// Every variable the configuration reads, unset for the scope (restored afterwards).
struct CleanEnv {
  ScopedEnv a{"UMRT_BACKEND", nullptr}, b{"UMRT_DEVICE_MEMORY", nullptr}, c{"UMRT_LOG", nullptr},
      d{"UMRT_COPY_THREADS", nullptr}, e{"UMRT_PREFETCH_MIN", nullptr},
      f{"UMRT_PREFETCH_MAX", nullptr}, g{"UMRT_WRITE_FAULT", nullptr},
      h{"UMRT_SIM_BANDWIDTH", nullptr}, i{"UMRT_SIM_LATENCY_US", nullptr}, j{"UMRT_DEVICE_POOL", nullptr},
      k{"UMRT_HOST_POOL", nullptr};
};

// Calls before umrt_init initialise lazily (with the environment's configuration).
TEST(ApiInit, LazyInitialisation) {
  UMRT_SKIP_UNLESS_SIM_RUN("lazy initialisation with UMRT_BACKEND=sim; backend-independent");
  umrt_shutdown();
  CleanEnv env;
  ScopedEnv backend("UMRT_BACKEND", "sim");
  ScopedEnv mem("UMRT_DEVICE_MEMORY", "32M");
  void *p = nullptr;
  umrt_status s = umrt_malloc(&p, 64 * KiB);
  if (s == UMRT_ERROR_NOT_SUPPORTED) GTEST_SKIP() << "userfaultfd refused: " << last_error();
  ASSERT_EQ(s, UMRT_SUCCESS) << last_error();
  fill_pattern(p, 64 * KiB, 1);
  EXPECT_EQ(umrt_prefetch(p, 64 * KiB, UMRT_LOCATION_DEVICE, nullptr), UMRT_SUCCESS) << last_error();
  EXPECT_TRUE(check_pattern(p, 64 * KiB, 1));
  umrt_stats st = get_stats();
  EXPECT_EQ(st.device_capacity, 32 * MiB) << "lazy init must read UMRT_DEVICE_MEMORY";
  EXPECT_STREQ(umrt_backend_name(), "sim");
  EXPECT_EQ(umrt_free(p), UMRT_SUCCESS) << last_error();
  EXPECT_EQ(umrt_shutdown(), UMRT_SUCCESS) << last_error();
}

TEST(ApiInit, LazyInitialisationFromOtherEntryPoints) {
  UMRT_SKIP_UNLESS_SIM_RUN("lazy initialisation with UMRT_BACKEND=sim; backend-independent");
  CleanEnv env;
  ScopedEnv backend("UMRT_BACKEND", "sim");
  umrt_shutdown();
  umrt_stats s;
  umrt_status st = umrt_get_stats(&s);
  if (st == UMRT_ERROR_NOT_SUPPORTED) GTEST_SKIP() << "userfaultfd refused: " << last_error();
  EXPECT_EQ(st, UMRT_SUCCESS) << last_error();
  umrt_shutdown();
  const char *name = umrt_backend_name();
  ASSERT_NE(name, nullptr) << last_error();
  EXPECT_STREQ(name, "sim");
  umrt_shutdown();
  EXPECT_EQ(umrt_validate(), UMRT_SUCCESS) << last_error();
  umrt_shutdown();
}

TEST(ApiInit, ConfigDefaults) {
  UMRT_SKIP_UNLESS_SIM_RUN("configuration parsing does not depend on the backend");
  CleanEnv env;
  EXPECT_FAILS_WITH(umrt_config_defaults(nullptr), UMRT_ERROR_INVALID_VALUE);
  umrt_config cfg;
  std::memset(&cfg, 0, sizeof cfg);
  ASSERT_EQ(umrt_config_defaults(&cfg), UMRT_SUCCESS) << last_error();
  EXPECT_EQ(cfg.backend, UMRT_BACKEND_AUTO);
  EXPECT_EQ(cfg.log_level, UMRT_LOG_WARN);
  // usable CPUs - 1, between 1 and 8 (docs/design.md, "Copy engines")
  cpu_set_t cpus;
  CPU_ZERO(&cpus);
  ASSERT_EQ(sched_getaffinity(0, sizeof cpus, &cpus), 0);
  const uint32_t want = static_cast<uint32_t>(std::clamp(CPU_COUNT(&cpus) - 1, 1, 8));
  EXPECT_EQ(cfg.copy_threads, want);
  EXPECT_EQ(cfg.prefetch_min_pages, 4u);  // docs/design.md: fault prefetch window
  EXPECT_EQ(cfg.prefetch_max_pages, 512u);
  EXPECT_EQ(cfg.write_fault, UMRT_WRITE_FAULT_CANCEL);
  EXPECT_EQ(cfg.sim_bandwidth_gbps, 0.0);
  EXPECT_EQ(cfg.sim_latency_us, 0u);
  EXPECT_EQ(cfg.host_pool, 256 * MiB);  // docs/design.md, "Host pages kept for reuse"
}

TEST(ApiInit, ConfigDefaultsReadTheEnvironment) {
  UMRT_SKIP_UNLESS_SIM_RUN("configuration parsing does not depend on the backend");
  CleanEnv env;
  ScopedEnv a("UMRT_BACKEND", "sim"), b("UMRT_DEVICE_MEMORY", "96M"), c("UMRT_LOG", "error"),
      d("UMRT_COPY_THREADS", "3"), e("UMRT_PREFETCH_MIN", "8"), f("UMRT_PREFETCH_MAX", "64"),
      g("UMRT_WRITE_FAULT", "wait"), h("UMRT_DEVICE_POOL", "10M"), i("UMRT_HOST_POOL", "64M");
  umrt_config cfg;
  std::memset(&cfg, 0, sizeof cfg);
  ASSERT_EQ(umrt_config_defaults(&cfg), UMRT_SUCCESS) << last_error();
  EXPECT_EQ(cfg.backend, UMRT_BACKEND_SIM);
  EXPECT_EQ(cfg.device_memory, 96 * MiB);
  EXPECT_EQ(cfg.log_level, UMRT_LOG_ERROR);
  EXPECT_EQ(cfg.copy_threads, 3u);
  EXPECT_EQ(cfg.prefetch_min_pages, 8u);
  EXPECT_EQ(cfg.prefetch_max_pages, 64u);
  EXPECT_EQ(cfg.write_fault, UMRT_WRITE_FAULT_WAIT);
  EXPECT_EQ(cfg.device_pool, 10 * MiB);
  EXPECT_EQ(cfg.host_pool, 64 * MiB);
  {
    ScopedEnv none("UMRT_HOST_POOL", "none");
    umrt_config c2;
    ASSERT_EQ(umrt_config_defaults(&c2), UMRT_SUCCESS) << last_error();
    EXPECT_LT(c2.host_pool, 2 * MiB) << "none keeps no slot";
    EXPECT_NE(c2.host_pool, 0u) << "none must not read as the default";
  }
  {
    ScopedEnv none("UMRT_DEVICE_POOL", "none");
    umrt_config c2;
    ASSERT_EQ(umrt_config_defaults(&c2), UMRT_SUCCESS) << last_error();
    EXPECT_LT(c2.device_pool, 2 * MiB) << "none keeps no chunk";
    EXPECT_NE(c2.device_pool, 0u) << "none must not read as the default";
  }
  // umrt_config_defaults is output-only: what was in the struct does not matter.
  umrt_config junk;
  std::memset(&junk, 0x7f, sizeof junk);
  ASSERT_EQ(umrt_config_defaults(&junk), UMRT_SUCCESS) << last_error();
  EXPECT_EQ(junk.device_memory, 96 * MiB);
  EXPECT_EQ(junk.copy_threads, 3u);
  // In umrt_init, explicit fields win over the environment.
  umrt_shutdown();
  umrt_config mine = sim_config(8 * MiB);
  umrt_status s = umrt_init(&mine);
  if (s == UMRT_ERROR_NOT_SUPPORTED) GTEST_SKIP() << "userfaultfd refused: " << last_error();
  ASSERT_EQ(s, UMRT_SUCCESS) << last_error();
  EXPECT_EQ(get_stats().device_capacity, 8 * MiB);
  umrt_shutdown();
  // And umrt_init(NULL) takes the environment.
  s = umrt_init(nullptr);
  ASSERT_EQ(s, UMRT_SUCCESS) << last_error();
  EXPECT_EQ(get_stats().device_capacity, 96 * MiB);
  EXPECT_STREQ(umrt_backend_name(), "sim");
  umrt_shutdown();
}

struct BadEnv {
  const char *name, *value;
};

TEST(ApiInit, BadEnvironmentIsRefused) {
  UMRT_SKIP_UNLESS_SIM_RUN("configuration parsing does not depend on the backend");
  const BadEnv bad[] = {
      {"UMRT_BACKEND", "bogus"},       {"UMRT_BACKEND", "SIMULATOR"},
      {"UMRT_DEVICE_MEMORY", "12X"},   {"UMRT_DEVICE_MEMORY", "-5M"},
      {"UMRT_DEVICE_MEMORY", "lots"},  {"UMRT_LOG", "loud"},
      {"UMRT_WRITE_FAULT", "maybe"},   {"UMRT_COPY_THREADS", "two"},
      {"UMRT_PREFETCH_MAX", "100000"}, {"UMRT_SIM_BANDWIDTH", "fast"},
      {"UMRT_DEVICE_POOL", "some"},    {"UMRT_DEVICE_POOL", "0"},
      {"UMRT_HOST_POOL", "lots"},      {"UMRT_HOST_POOL", "0"},
  };
  for (const BadEnv &b : bad) {
    SCOPED_TRACE(std::string(b.name) + "=" + b.value);
    umrt_shutdown();
    CleanEnv env;
    ScopedEnv set(b.name, b.value);
    umrt_config cfg;
    std::memset(&cfg, 0, sizeof cfg);  // all fields DEFAULT: the environment is read
    EXPECT_FAILS_WITH(umrt_config_defaults(&cfg), UMRT_ERROR_INVALID_VALUE);
    std::memset(&cfg, 0, sizeof cfg);
    EXPECT_FAILS_WITH(umrt_init(&cfg), UMRT_ERROR_INVALID_VALUE);
    EXPECT_FAILS_WITH(umrt_init(nullptr), UMRT_ERROR_INVALID_VALUE);
    std::string msg = last_error();
    EXPECT_NE(msg.find(b.name), std::string::npos) << "the message should name the variable: " << msg;
    umrt_shutdown();
  }
  // With the environment fixed, init works again.
  CleanEnv env;
  umrt_config cfg = sim_config(16 * MiB);
  umrt_status s = umrt_init(&cfg);
  if (s == UMRT_ERROR_NOT_SUPPORTED) GTEST_SKIP() << "userfaultfd refused: " << last_error();
  EXPECT_EQ(s, UMRT_SUCCESS) << last_error();
  umrt_shutdown();
}

TEST(ApiInit, BadConfigFieldsAreRefused) {
  UMRT_SKIP_UNLESS_SIM_RUN("configuration parsing does not depend on the backend");
  CleanEnv env;
  umrt_shutdown();
  struct Case {
    const char *what;
    void (*set)(umrt_config &);
  };
  const Case cases[] = {
      {"backend 42", [](umrt_config &c) { umrt_test_set_backend(&c, 42); }},
      {"log level 9", [](umrt_config &c) { umrt_test_set_log_level(&c, 9); }},
      {"write_fault 7", [](umrt_config &c) { umrt_test_set_write_fault(&c, 7); }},
      {"prefetch_max 1024", [](umrt_config &c) { c.prefetch_max_pages = 1024; }},
      {"prefetch_min > max", [](umrt_config &c) { c.prefetch_min_pages = 64; c.prefetch_max_pages = 32; }},
      {"negative bandwidth", [](umrt_config &c) { c.sim_bandwidth_gbps = -1.0; }},
  };
  for (const Case &k : cases) {
    SCOPED_TRACE(k.what);
    umrt_config cfg = sim_config(16 * MiB);
    k.set(cfg);
    EXPECT_FAILS_WITH(umrt_init(&cfg), UMRT_ERROR_INVALID_VALUE);
    umrt_shutdown();
  }
}

TEST(ApiInit, CudaBackendWithoutAGpu) {
  UMRT_SKIP_UNLESS_SIM_RUN("checks the cuda backend's refusal itself; runs once, in the sim run");
  bool have_gpu = access("/dev/nvidia0", F_OK) == 0 || access("/dev/nvidiactl", F_OK) == 0;
  if (have_gpu) GTEST_SKIP() << "an NVIDIA device node exists here; this test is for GPU-less machines";
  CleanEnv env;
  umrt_shutdown();
  umrt_config cfg;
  std::memset(&cfg, 0, sizeof cfg);
  cfg.backend = UMRT_BACKEND_CUDA;
  EXPECT_FAILS_WITH(umrt_init(&cfg), UMRT_ERROR_NO_DEVICE);
  // UMRT_BACKEND=cuda through the environment says the same.
  ScopedEnv b("UMRT_BACKEND", "cuda");
  EXPECT_FAILS_WITH(umrt_init(nullptr), UMRT_ERROR_NO_DEVICE);
  umrt_shutdown();
  // auto falls back to sim.
  std::memset(&cfg, 0, sizeof cfg);
  cfg.backend = UMRT_BACKEND_AUTO;
  cfg.device_memory = 16 * MiB;
  umrt_status s = umrt_init(&cfg);
  if (s == UMRT_ERROR_NOT_SUPPORTED) GTEST_SKIP() << "userfaultfd refused: " << last_error();
  ASSERT_EQ(s, UMRT_SUCCESS) << last_error();
  EXPECT_STREQ(umrt_backend_name(), "sim");
  umrt_shutdown();
}

// On the backend under test (not a configuration test: it runs in the cuda run too).
TEST(ApiShutdown, ShutdownBringsPagesHome) {
  Backend backend = Backend::sim;
  std::string why;
  ASSERT_TRUE(selected_backend(&backend, &why)) << why;
  CleanEnv env;
  umrt_shutdown();
  umrt_config cfg = test_config(backend, 16 * MiB);
  umrt_status s = umrt_init(&cfg);
  if (s == UMRT_ERROR_NOT_SUPPORTED) GTEST_SKIP() << "userfaultfd refused: " << last_error();
  if (s == UMRT_ERROR_NO_DEVICE && backend == Backend::cuda)
    GTEST_SKIP() << "no usable GPU for the cuda backend (umrt_init: NO_DEVICE): " << last_error();
  ASSERT_EQ(s, UMRT_SUCCESS) << last_error();
  void *p = nullptr;
  ASSERT_EQ(umrt_malloc(&p, 4 * MiB), UMRT_SUCCESS) << last_error();
  fill_pattern(p, 4 * MiB, 77);
  ASSERT_EQ(umrt_prefetch(p, 4 * MiB, UMRT_LOCATION_DEVICE, nullptr), UMRT_SUCCESS) << last_error();
  EXPECT_EQ(umrt_shutdown(), UMRT_SUCCESS) << last_error();
  // After shutdown the memory is plain host memory holding the data.
  EXPECT_TRUE(check_pattern(p, 4 * MiB, 77));
  umrt_shutdown();
}

// ---- C++ wrappers ----------------------------------------------------------------------------

TEST_F(ApiTest, BufferBasics) {
  umrt::buffer<uint32_t> b(300000);
  ASSERT_NE(b.data(), nullptr);
  EXPECT_EQ(b.size(), 300000u);
  EXPECT_EQ(b.bytes(), 300000u * 4);
  for (size_t i = 0; i < b.size(); ++i) b[i] = static_cast<uint32_t>(i * 2654435761u);
  b.prefetch(umrt::location::device);
  EXPECT_EQ(b.where(0), umrt::location::device);
  EXPECT_EQ(b.where(b.size() - 1), umrt::location::device);
  uint32_t *d = b.device_data();
  EXPECT_EQ(b.device_data(1000), d + 1000);
  std::vector<uint32_t> dcopy(b.size());
  ASSERT_TRUE(dev_read(dcopy.data(), d, b.bytes()));
  for (size_t i = 0; i < b.size(); ++i) ASSERT_EQ(dcopy[i], static_cast<uint32_t>(i * 2654435761u)) << i;
  // A range of elements back to the host.
  b.prefetch(umrt::location::host, 2048, 1024);
  EXPECT_EQ(b.where(2048), umrt::location::host);
  EXPECT_EQ(b.where(3071), umrt::location::host);
  EXPECT_EQ(b.where(0), umrt::location::device);
  size_t n = 0;
  for (uint32_t v : b) {
    ASSERT_EQ(v, static_cast<uint32_t>(n * 2654435761u)) << n;
    ++n;
  }
  EXPECT_EQ(n, b.size());
  EXPECT_EQ(b.where(0), umrt::location::host);
}

TEST_F(ApiTest, BufferMoveAndReset) {
  umrt::buffer<int> a(1000);
  int *pa = a.data();
  a[5] = 42;
  umrt::buffer<int> b(std::move(a));
  EXPECT_EQ(a.data(), nullptr);
  EXPECT_EQ(a.size(), 0u);
  EXPECT_EQ(b.data(), pa);
  EXPECT_EQ(b.size(), 1000u);
  EXPECT_EQ(b[5], 42);

  umrt::buffer<int> c(10);
  int *pc = c.data();
  c = std::move(b);  // frees c's old allocation
  EXPECT_EQ(c.data(), pa);
  EXPECT_EQ(b.data(), nullptr);
  EXPECT_EQ(umrt_free(pc), UMRT_ERROR_INVALID_VALUE) << "move assignment must free the old allocation";
  c = std::move(c);  // self-move keeps it
  EXPECT_EQ(c.data(), pa);
  EXPECT_EQ(c[5], 42);

  c.reset();
  EXPECT_EQ(c.data(), nullptr);
  EXPECT_EQ(c.size(), 0u);
  EXPECT_EQ(umrt_free(pa), UMRT_ERROR_INVALID_VALUE) << "reset must free the allocation";
  c.reset();  // twice is harmless
  umrt::buffer<int> empty;
  EXPECT_EQ(empty.data(), nullptr);
}

TEST_F(ApiTest, ErrorsThrowUmrtError) {
  try {
    umrt::buffer<char> zero(0);
    FAIL() << "buffer(0) did not throw";
  } catch (const umrt::error &e) {
    EXPECT_EQ(e.status(), UMRT_ERROR_INVALID_VALUE);
    EXPECT_NE(std::string(e.what()).find("umrt_malloc"), std::string::npos) << e.what();
  }
  umrt::buffer<char> b(4096);
  try {
    b.prefetch(umrt::location::device, 0, 8192);  // beyond the end
    FAIL() << "prefetch past the end did not throw";
  } catch (const umrt::error &e) {
    EXPECT_EQ(e.status(), UMRT_ERROR_INVALID_VALUE);
  }
  EXPECT_THROW(b.prefetch(static_cast<umrt::location>(7)), umrt::error);
  EXPECT_EQ(b.where(0), umrt::location::host);
  umrt::buffer<char> empty;
  EXPECT_THROW(empty.device_data(), umrt::error);
  EXPECT_THROW(empty.where(0), umrt::error);
  umrt_stats s = umrt::runtime::stats();
  EXPECT_EQ(s.device_capacity, 64 * MiB);
}

TEST(ApiRuntime, RuntimeObject) {
  Backend backend = Backend::sim;
  std::string why;
  ASSERT_TRUE(selected_backend(&backend, &why)) << why;
  CleanEnv env;
  umrt_shutdown();
  umrt_config cfg = test_config(backend, 16 * MiB);
  try {
    umrt::runtime rt(cfg);
    umrt::buffer<double> b(1 << 16);
    for (size_t i = 0; i < b.size(); ++i) b[i] = static_cast<double>(i) * 0.5;
    b.prefetch(umrt::location::device);
    EXPECT_EQ(umrt::runtime::stats().bytes_to_device, b.bytes());
    double v = 0;
    ASSERT_TRUE(dev_read(&v, b.device_data(100), sizeof v));
    EXPECT_EQ(v, 50.0);
  } catch (const umrt::error &e) {
    if (e.status() == UMRT_ERROR_NOT_SUPPORTED) GTEST_SKIP() << e.what();
    if (e.status() == UMRT_ERROR_NO_DEVICE && backend == Backend::cuda)
      GTEST_SKIP() << "no usable GPU for the cuda backend: " << e.what();
    FAIL() << e.what();
  }
  umrt_config bad = sim_config(16 * MiB);
  umrt_test_set_backend(&bad, 42);
  try {
    umrt::runtime rt(bad);
    FAIL() << "a bad config did not throw";
  } catch (const umrt::error &e) {
    EXPECT_EQ(e.status(), UMRT_ERROR_INVALID_VALUE);
    EXPECT_NE(std::string(e.what()).find("umrt_init"), std::string::npos) << e.what();
  }
  umrt_shutdown();
}

}  // namespace
