// test_inject.cpp — every restore path of the protocol, driven by umrt_inject_failure on the sim
// backend: failed copies and failed destination allocations, host->device, device->host, on the
// fault path, during eviction and in the middle of a multi-block prefetch. In every case: the pages
// that could not move stay where they were with their data intact (restore), pages_restored grows,
// and umrt_validate() holds. The cuda backend supports the same injection points, so these run in
// the cuda run (label gpu) too, except the UMRT_SIM_FAIL_* environment hook.
#include <gtest/gtest.h>
#include <umrt/umrt.h>

#include <setjmp.h>
#include <signal.h>
#include <sys/utsname.h>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <vector>

#include "test_util.h"

namespace {

using namespace umrt_test;

class Inject : public UmrtTest {
 protected:
  bool ValidateAtEnd() const override { return true; }
};

// Check every page of [p, p+bytes) against the pattern where it is now: device pages through the
// device pointer (dev_read, one read per run of device pages; no fault), host pages on the CPU.
// Returns the number of device pages.
size_t check_in_place(const uint8_t *p, size_t bytes, uint64_t seed) {
  size_t on_device = 0;
  size_t run = 0, run_len = 0;  // the current run of device pages: [run, run + run_len) bytes
  auto flush = [&] {
    if (run_len) {
      EXPECT_TRUE(check_device_pattern(p + run, run_len, seed, run)) << "device pages from " << run / kPage;
    }
    run_len = 0;
  };
  for (size_t off = 0; off < bytes; off += kPage) {
    size_t len = std::min(kPage, bytes - off);
    if (location_of(p + off) == UMRT_LOCATION_DEVICE) {
      ++on_device;
      if (!run_len) run = off;
      run_len += len;
    } else {
      flush();
      EXPECT_TRUE(check_pattern(p + off, len, seed, off)) << "host page " << off / kPage;
    }
  }
  flush();
  return on_device;
}

// A failed host->device copy: the pages stay on the host, exact; the retry succeeds.
TEST_F(Inject, CopyFailureToDevice) {
  const size_t size = 1 * MiB;  // one contiguous run in one block: one copy
  Managed m(size);
  ASSERT_TRUE(m);
  fill_pattern(m.get(), size, 1);
  umrt_stats s0 = get_stats();
  ASSERT_EQ(umrt_inject_failure(UMRT_INJECT_COPY, 1, 1), UMRT_SUCCESS) << last_error();
  umrt_status st = umrt_prefetch(m.get(), size, UMRT_LOCATION_DEVICE, nullptr);
  EXPECT_NE(st, UMRT_SUCCESS);
  EXPECT_EQ(st, UMRT_ERROR_BACKEND) << str(st);
  EXPECT_GT(std::strlen(last_error()), 0u);
  umrt_stats s1 = get_stats();
  EXPECT_TRUE(all_pages_at(m.get(), size, UMRT_LOCATION_HOST));
  // Every page was selected (fill_pattern's fault batches had all finished when it returned:
  // Migrate.StateSettledWhenFaultReturns) and restored.
  EXPECT_EQ(s1.pages_restored - s0.pages_restored, m.pages());
  EXPECT_EQ(s1.pages_to_device, s0.pages_to_device);
  EXPECT_EQ(s1.bytes_to_device, s0.bytes_to_device) << "a failed copy must not count as copied";
  EXPECT_EQ(umrt_validate(), UMRT_SUCCESS) << last_error();
  // Data intact on the host, and the host pages are writable again (write-protect lifted).
  EXPECT_TRUE(check_pattern(m.get(), size, 1));
  fill_pattern(m.get(), size, 2);
  EXPECT_EQ(get_stats().pages_to_device, s0.pages_to_device);
  // The injection was used up: the retry moves everything.
  ASSERT_EQ(umrt_prefetch(m.get(), size, UMRT_LOCATION_DEVICE, nullptr), UMRT_SUCCESS) << last_error();
  EXPECT_TRUE(all_pages_at(m.get(), size, UMRT_LOCATION_DEVICE));
  EXPECT_TRUE(check_device_pattern(m.get(), size, 2));
  EXPECT_TRUE(check_pattern(m.get(), size, 2));
}

// The same failure asked for through the environment (UMRT_SIM_FAIL_COPY), as a program that
// cannot call umrt_inject_failure would; a malformed value is refused at init.
TEST(InjectEnv, FailCopyFromEnvironment) {
  UMRT_SKIP_UNLESS_SIM_RUN("UMRT_SIM_FAIL_COPY is a hook of the sim backend");
  umrt_shutdown();
  {
    ScopedEnv env("UMRT_SIM_FAIL_COPY", "bogus");
    umrt_config cfg{};
    cfg.backend = UMRT_BACKEND_SIM;
    cfg.device_memory = 64 * MiB;
    umrt_status st = umrt_init(&cfg);
    if (st == UMRT_ERROR_NOT_SUPPORTED) GTEST_SKIP() << "userfaultfd unavailable: " << last_error();
    EXPECT_EQ(st, UMRT_ERROR_INVALID_VALUE) << str(st);
    EXPECT_NE(std::strstr(last_error(), "UMRT_SIM_FAIL_COPY"), nullptr) << last_error();
  }
  ScopedEnv env("UMRT_SIM_FAIL_COPY", "1");
  umrt_config cfg{};
  cfg.backend = UMRT_BACKEND_SIM;
  cfg.device_memory = 64 * MiB;
  ASSERT_EQ(umrt_init(&cfg), UMRT_SUCCESS) << last_error();
  {
    Managed m(256 * KiB);
    ASSERT_TRUE(m);
    fill_pattern(m.get(), m.bytes(), 5);
    EXPECT_EQ(umrt_prefetch(m.get(), m.bytes(), UMRT_LOCATION_DEVICE, nullptr), UMRT_ERROR_BACKEND);
    EXPECT_TRUE(all_pages_at(m.get(), m.bytes(), UMRT_LOCATION_HOST));
    EXPECT_TRUE(check_pattern(m.get(), m.bytes(), 5));
    EXPECT_EQ(umrt_prefetch(m.get(), m.bytes(), UMRT_LOCATION_DEVICE, nullptr), UMRT_SUCCESS) << last_error();
    EXPECT_TRUE(check_device_pattern(m.get(), m.bytes(), 5));
  }
  EXPECT_EQ(umrt_validate(), UMRT_SUCCESS) << last_error();
  umrt_shutdown();
}

// count = 2: two attempts fail, the third succeeds.
TEST_F(Inject, CopyFailureTwiceInARow) {
  const size_t size = 512 * KiB;
  Managed m(size);
  ASSERT_TRUE(m);
  fill_pattern(m.get(), size, 3);
  ASSERT_EQ(umrt_inject_failure(UMRT_INJECT_COPY, 1, 2), UMRT_SUCCESS) << last_error();
  for (int attempt = 0; attempt < 2; ++attempt) {
    SCOPED_TRACE(attempt);
    EXPECT_NE(umrt_prefetch(m.get(), size, UMRT_LOCATION_DEVICE, nullptr), UMRT_SUCCESS);
    EXPECT_TRUE(all_pages_at(m.get(), size, UMRT_LOCATION_HOST));
  }
  EXPECT_GT(get_stats().pages_restored, m.pages()) << "both failed attempts restored pages";
  EXPECT_LE(get_stats().pages_restored, 2 * m.pages());
  ASSERT_EQ(umrt_prefetch(m.get(), size, UMRT_LOCATION_DEVICE, nullptr), UMRT_SUCCESS) << last_error();
  EXPECT_TRUE(all_pages_at(m.get(), size, UMRT_LOCATION_DEVICE));
  EXPECT_TRUE(check_device_pattern(m.get(), size, 3));
}

// nth = 2 with two runs in one block: exactly one run fails (copies may run in any order), the
// other moves; everything stays exact.
TEST_F(Inject, CopyFailureSecondRun) {
  const size_t npages = 48;
  Managed m(npages * kPage);
  ASSERT_TRUE(m);
  fill_pattern(m.get(), m.bytes(), 4);
  // Pages 16..31 to the device first: the host pages now form two runs, 0..15 and 32..47.
  ASSERT_EQ(umrt_prefetch(m + 16 * kPage, 16 * kPage, UMRT_LOCATION_DEVICE, nullptr), UMRT_SUCCESS)
      << last_error();
  umrt_stats s0 = get_stats();
  ASSERT_EQ(umrt_inject_failure(UMRT_INJECT_COPY, 2, 1), UMRT_SUCCESS) << last_error();
  EXPECT_NE(umrt_prefetch(m.get(), m.bytes(), UMRT_LOCATION_DEVICE, nullptr), UMRT_SUCCESS);
  umrt_stats s1 = get_stats();
  size_t dev_a = count_pages_at(m.get(), 16 * kPage, UMRT_LOCATION_DEVICE);
  size_t dev_b = count_pages_at(m + 32 * kPage, 16 * kPage, UMRT_LOCATION_DEVICE);
  EXPECT_TRUE(all_pages_at(m + 16 * kPage, 16 * kPage, UMRT_LOCATION_DEVICE));
  EXPECT_TRUE((dev_a == 16 && dev_b == 0) || (dev_a == 0 && dev_b == 16))
      << "expected exactly one of the two runs to move: run A " << dev_a << "/16, run B " << dev_b
      << "/16 on the device";
  EXPECT_EQ(s1.pages_restored - s0.pages_restored, 16u);
  EXPECT_EQ(s1.pages_to_device - s0.pages_to_device, 16u);
  EXPECT_EQ(check_in_place(m.get(), m.bytes(), 4), 32u);
  EXPECT_EQ(umrt_validate(), UMRT_SUCCESS) << last_error();
  EXPECT_TRUE(check_pattern(m.get(), m.bytes(), 4));
}

// A failed device->host copy on an explicit prefetch: the pages stay on the device, exact.
TEST_F(Inject, CopyFailureToHostOnPrefetch) {
  const size_t size = 1 * MiB;
  Managed m(size);
  ASSERT_TRUE(m);
  fill_pattern(m.get(), size, 5);
  ASSERT_EQ(umrt_prefetch(m.get(), size, UMRT_LOCATION_DEVICE, nullptr), UMRT_SUCCESS) << last_error();
  umrt_stats s0 = get_stats();
  ASSERT_EQ(umrt_inject_failure(UMRT_INJECT_COPY, 1, 1), UMRT_SUCCESS) << last_error();
  umrt_status st = umrt_prefetch(m.get(), size, UMRT_LOCATION_HOST, nullptr);
  EXPECT_EQ(st, UMRT_ERROR_BACKEND) << str(st);
  umrt_stats s1 = get_stats();
  EXPECT_TRUE(all_pages_at(m.get(), size, UMRT_LOCATION_DEVICE));
  EXPECT_EQ(s1.pages_restored - s0.pages_restored, m.pages());
  EXPECT_EQ(s1.pages_to_host, s0.pages_to_host);
  EXPECT_EQ(s1.bytes_to_host, s0.bytes_to_host);
  EXPECT_EQ(s1.device_bytes_in_use, s0.device_bytes_in_use) << "the device copy must be kept";
  EXPECT_TRUE(check_device_pattern(m.get(), size, 5));
  EXPECT_EQ(umrt_validate(), UMRT_SUCCESS) << last_error();
  ASSERT_EQ(umrt_prefetch(m.get(), size, UMRT_LOCATION_HOST, nullptr), UMRT_SUCCESS) << last_error();
  EXPECT_TRUE(all_pages_at(m.get(), size, UMRT_LOCATION_HOST));
  umrt_stats s2 = get_stats();
  EXPECT_TRUE(check_pattern(m.get(), size, 5));
  EXPECT_EQ(get_stats().cpu_faults, s2.cpu_faults);
}

// A failed device->host copy while serving a CPU fault: the runtime restores and retries; the
// reader eventually sees exact data (it must neither hang nor read zeros).
TEST_F(Inject, CopyFailureOnFaultPath) {
  const size_t size = 256 * KiB;
  Managed m(size);
  ASSERT_TRUE(m);
  fill_pattern(m.get(), size, 6);
  ASSERT_EQ(umrt_prefetch(m.get(), size, UMRT_LOCATION_DEVICE, nullptr), UMRT_SUCCESS) << last_error();
  umrt_stats s0 = get_stats();
  ASSERT_EQ(umrt_inject_failure(UMRT_INJECT_COPY, 1, 1), UMRT_SUCCESS) << last_error();
  {
    Watchdog wd(std::chrono::seconds(20), "CPU read of a device page with a failing copy");
    EXPECT_TRUE(check_pattern(m.get(), size, 6));
  }
  umrt_stats s1 = get_stats();
  EXPECT_GT(s1.cpu_faults, s0.cpu_faults);
  EXPECT_GT(s1.pages_restored, s0.pages_restored) << "the failed fault batch should have restored pages";
  EXPECT_TRUE(all_pages_at(m.get(), size, UMRT_LOCATION_HOST));
}

// A device copy that keeps failing on the fault path: the fault service gives up after a bounded
// number of attempts and the reader gets SIGBUS (a poison marker) instead of faulting forever.
// Nothing is lost: the page's entry stays DEVICE, and once copies work again a prefetch to the
// host brings it back exact (UFFDIO_COPY replaces the poison marker).
namespace giveup {
sigjmp_buf jump;
volatile sig_atomic_t signal_seen = 0;
void on_sigbus(int sig) {
  signal_seen = sig;
  siglongjmp(jump, 1);
}
}  // namespace giveup

TEST_F(Inject, PermanentCopyFailureOnFaultPathRaisesSigbus) {
  struct utsname u;
  int major = 0, minor = 0;
  ASSERT_EQ(uname(&u), 0);
  std::sscanf(u.release, "%d.%d", &major, &minor);
  if (major < 6 || (major == 6 && minor < 6))
    GTEST_SKIP() << "kernel " << u.release << " has no UFFDIO_POISON (Linux >= 6.6): a page whose copy keeps "
                 << "failing cannot raise SIGBUS there";
  const size_t size = 64 * KiB;
  Managed m(size);
  ASSERT_TRUE(m);
  fill_pattern(m.get(), size, 17);
  ASSERT_EQ(umrt_prefetch(m.get(), size, UMRT_LOCATION_DEVICE, nullptr), UMRT_SUCCESS) << last_error();
  ASSERT_EQ(umrt_inject_failure(UMRT_INJECT_COPY, 1, 1000000), UMRT_SUCCESS) << last_error();
  struct sigaction sa {}, old {};
  sa.sa_handler = giveup::on_sigbus;
  sigemptyset(&sa.sa_mask);
  ASSERT_EQ(sigaction(SIGBUS, &sa, &old), 0);
  giveup::signal_seen = 0;
  volatile uint8_t *page = m.get() + 3 * kPage;
  {
    Watchdog wd(std::chrono::seconds(30), "CPU read of a device page whose copy always fails");
    if (sigsetjmp(giveup::jump, 1) == 0) {
      uint8_t v = *page;
      ADD_FAILURE() << "the read returned " << unsigned(v) << " although every copy failed";
    }
  }
  sigaction(SIGBUS, &old, nullptr);
  EXPECT_EQ(giveup::signal_seen, SIGBUS);
  EXPECT_EQ(location_of(m.get() + 3 * kPage), UMRT_LOCATION_DEVICE) << "the page's only copy is on the device";
  // The device works again: the page comes back, exact, with every other page.
  ASSERT_EQ(umrt_inject_failure(UMRT_INJECT_COPY, 1000000000, 1), UMRT_SUCCESS) << last_error();
  ASSERT_EQ(umrt_prefetch(m.get(), size, UMRT_LOCATION_HOST, nullptr), UMRT_SUCCESS) << last_error();
  EXPECT_TRUE(all_pages_at(m.get(), size, UMRT_LOCATION_HOST));
  EXPECT_TRUE(check_pattern(m.get(), size, 17));
}

// Several failures in a row on the fault path, and a write fault instead of a read.
TEST_F(Inject, RepeatedCopyFailuresOnWriteFault) {
  const size_t size = 64 * KiB;
  Managed m(size);
  ASSERT_TRUE(m);
  fill_pattern(m.get(), size, 7);
  ASSERT_EQ(umrt_prefetch(m.get(), size, UMRT_LOCATION_DEVICE, nullptr), UMRT_SUCCESS) << last_error();
  ASSERT_EQ(umrt_inject_failure(UMRT_INJECT_COPY, 1, 3), UMRT_SUCCESS) << last_error();
  {
    Watchdog wd(std::chrono::seconds(20), "CPU write to a device page with failing copies");
    m.get()[100] ^= 0xff;  // write fault
  }
  EXPECT_EQ(m.get()[100], static_cast<uint8_t>(pattern_byte(7, 100) ^ 0xff));
  m.get()[100] ^= 0xff;
  EXPECT_TRUE(check_pattern(m.get(), size, 7));
}

// A failed destination-frame allocation: the batch restores, pages stay on the host.
TEST_F(Inject, AllocFailure) {
  const size_t size = 1 * MiB;
  Managed m(size);
  ASSERT_TRUE(m);
  fill_pattern(m.get(), size, 8);
  umrt_stats s0 = get_stats();
  ASSERT_EQ(umrt_inject_failure(UMRT_INJECT_ALLOC, 1, 1), UMRT_SUCCESS) << last_error();
  umrt_status st = umrt_prefetch(m.get(), size, UMRT_LOCATION_DEVICE, nullptr);
  EXPECT_NE(st, UMRT_SUCCESS);
  EXPECT_TRUE(st == UMRT_ERROR_OUT_OF_MEMORY || st == UMRT_ERROR_BACKEND) << str(st);
  EXPECT_GT(std::strlen(last_error()), 0u);
  umrt_stats s1 = get_stats();
  size_t on_dev = count_pages_at(m.get(), size, UMRT_LOCATION_DEVICE);
  EXPECT_LT(on_dev, m.pages()) << "the failing batch's pages must stay on the host";
  EXPECT_EQ(s1.pages_to_device - s0.pages_to_device, on_dev);
  EXPECT_GT(s1.pages_restored, s0.pages_restored);
  EXPECT_EQ(check_in_place(m.get(), size, 8), on_dev);
  EXPECT_EQ(umrt_validate(), UMRT_SUCCESS) << last_error();
  ASSERT_EQ(umrt_prefetch(m.get(), size, UMRT_LOCATION_DEVICE, nullptr), UMRT_SUCCESS) << last_error();
  EXPECT_TRUE(all_pages_at(m.get(), size, UMRT_LOCATION_DEVICE));
  EXPECT_TRUE(check_device_pattern(m.get(), size, 8));
  EXPECT_TRUE(check_pattern(m.get(), size, 8));
}

// Allocation failure when prefetching never-touched pages (zero-fill on the device).
TEST_F(Inject, AllocFailureOnZeroFill) {
  const size_t size = 2 * MiB;
  Managed m(size);
  ASSERT_TRUE(m);
  ASSERT_EQ(umrt_inject_failure(UMRT_INJECT_ALLOC, 1, 1), UMRT_SUCCESS) << last_error();
  EXPECT_NE(umrt_prefetch(m.get(), size, UMRT_LOCATION_DEVICE, nullptr), UMRT_SUCCESS);
  EXPECT_TRUE(all_pages_at(m.get(), size, UMRT_LOCATION_HOST));
  EXPECT_EQ(umrt_validate(), UMRT_SUCCESS) << last_error();
  EXPECT_TRUE(check_zero(m.get(), size));
}

// A failure in the middle of a multi-block prefetch: earlier blocks moved, the failing block
// restored, later blocks as the runtime decides; every page exact wherever it is.
TEST_F(Inject, CopyFailureInMultiBlockPrefetch) {
  const size_t size = 8 * MiB;  // four blocks, each one contiguous run: one copy each
  Managed m(size);
  ASSERT_TRUE(m);
  fill_pattern(m.get(), size, 9);
  umrt_stats s0 = get_stats();
  ASSERT_EQ(umrt_inject_failure(UMRT_INJECT_COPY, 3, 1), UMRT_SUCCESS) << last_error();
  EXPECT_NE(umrt_prefetch(m.get(), size, UMRT_LOCATION_DEVICE, nullptr), UMRT_SUCCESS);
  umrt_stats s1 = get_stats();
  size_t on_dev = check_in_place(m.get(), size, 9);
  EXPECT_EQ(s1.pages_to_device - s0.pages_to_device, on_dev);
  EXPECT_LE(on_dev, m.pages() - kBlockPages) << "at least the failing block stays on the host";
  EXPECT_GE(on_dev, 2 * kBlockPages) << "two copies succeeded before the failing one";
  EXPECT_GE(s1.pages_restored - s0.pages_restored, kBlockPages);
  // Each block is all-or-nothing here (one copy per block).
  for (size_t b = 0; b < size / kBlock; ++b) {
    size_t n = count_pages_at(m + b * kBlock, kBlock, UMRT_LOCATION_DEVICE);
    EXPECT_TRUE(n == 0 || n == kBlockPages) << "block " << b << ": " << n << " pages on the device";
  }
  EXPECT_EQ(umrt_validate(), UMRT_SUCCESS) << last_error();
  ASSERT_EQ(umrt_prefetch(m.get(), size, UMRT_LOCATION_DEVICE, nullptr), UMRT_SUCCESS) << last_error();
  EXPECT_TRUE(all_pages_at(m.get(), size, UMRT_LOCATION_DEVICE));
  EXPECT_TRUE(check_device_pattern(m.get(), size, 9));
  EXPECT_TRUE(check_pattern(m.get(), size, 9));
}

TEST_F(Inject, AllocFailureInMultiBlockPrefetch) {
  const size_t size = 8 * MiB;
  Managed m(size);
  ASSERT_TRUE(m);
  fill_pattern(m.get(), size, 10);
  umrt_stats s0 = get_stats();
  ASSERT_EQ(umrt_inject_failure(UMRT_INJECT_ALLOC, 2, 1), UMRT_SUCCESS) << last_error();
  EXPECT_NE(umrt_prefetch(m.get(), size, UMRT_LOCATION_DEVICE, nullptr), UMRT_SUCCESS);
  umrt_stats s1 = get_stats();
  size_t on_dev = check_in_place(m.get(), size, 10);
  EXPECT_EQ(s1.pages_to_device - s0.pages_to_device, on_dev);
  EXPECT_LT(on_dev, m.pages());
  EXPECT_GE(on_dev, 1u) << "the first batch's allocation succeeded";
  EXPECT_GT(s1.pages_restored, s0.pages_restored);
  EXPECT_EQ(umrt_validate(), UMRT_SUCCESS) << last_error();
  ASSERT_EQ(umrt_prefetch(m.get(), size, UMRT_LOCATION_DEVICE, nullptr), UMRT_SUCCESS) << last_error();
  EXPECT_TRUE(check_device_pattern(m.get(), size, 10));
  EXPECT_TRUE(check_pattern(m.get(), size, 10));
}

// A failed copy while evicting (device memory full): nothing is lost whatever the runtime does
// next (pick another victim or give up), and a retry works.
class InjectSmallDevice : public Inject {
 protected:
  void Configure(umrt_config &cfg) override { cfg.device_memory = 4 * MiB; }  // two chunks
};

TEST_F(InjectSmallDevice, CopyFailureDuringEviction) {
  const size_t size = 6 * MiB;  // three blocks, two fit
  Managed m(size);
  ASSERT_TRUE(m);
  fill_pattern(m.get(), size, 11);
  ASSERT_EQ(umrt_prefetch(m.get(), 4 * MiB, UMRT_LOCATION_DEVICE, nullptr), UMRT_SUCCESS) << last_error();
  ASSERT_TRUE(all_pages_at(m.get(), 4 * MiB, UMRT_LOCATION_DEVICE));
  umrt_stats s0 = get_stats();
  ASSERT_EQ(umrt_inject_failure(UMRT_INJECT_COPY, 1, 1), UMRT_SUCCESS) << last_error();
  umrt_status st = umrt_prefetch(m + 4 * MiB, 2 * MiB, UMRT_LOCATION_DEVICE, nullptr);
  umrt_stats s1 = get_stats();
  EXPECT_LE(s1.device_bytes_in_use, s1.device_capacity);
  size_t on_dev = check_in_place(m.get(), size, 11);
  EXPECT_LE(on_dev * kPage, s1.device_capacity);
  EXPECT_GT(s1.pages_restored, s0.pages_restored) << "status " << str(st);
  EXPECT_EQ(umrt_validate(), UMRT_SUCCESS) << last_error();
  ASSERT_EQ(umrt_prefetch(m + 4 * MiB, 2 * MiB, UMRT_LOCATION_DEVICE, nullptr), UMRT_SUCCESS) << last_error();
  EXPECT_TRUE(all_pages_at(m + 4 * MiB, 2 * MiB, UMRT_LOCATION_DEVICE));
  EXPECT_TRUE(check_device_pattern(m + 4 * MiB, 2 * MiB, 11, 4 * MiB));
  EXPECT_GT(get_stats().evictions, 0u);
  EXPECT_TRUE(check_pattern(m.get(), size, 11));
}

// Device memory taken by someone else after umrt_init: creating a chunk fails with out of
// memory. The prefetch evicts the least recently used block and goes on with its chunk (not
// UMRT_ERROR_OUT_OF_MEMORY), the capacity shrinks by what could not be had, and every byte stays.
TEST_F(InjectSmallDevice, ChunkCreationFailureEvictsAndShrinksCapacity) {
  const size_t size = 4 * MiB;
  Managed a(size), b(2 * MiB);
  ASSERT_TRUE(a && b);
  fill_pattern(a.get(), size, 12);
  fill_pattern(b.get(), 2 * MiB, 13);
  ASSERT_EQ(umrt_prefetch(a.get(), 2 * MiB, UMRT_LOCATION_DEVICE, nullptr), UMRT_SUCCESS) << last_error();
  EXPECT_EQ(get_stats().device_capacity, 4 * MiB);
  // The second chunk (never made yet) cannot be created: a's block must make room.
  ASSERT_EQ(umrt_inject_failure(UMRT_INJECT_CHUNK, 1, 1), UMRT_SUCCESS) << last_error();
  ASSERT_EQ(umrt_prefetch(b.get(), 2 * MiB, UMRT_LOCATION_DEVICE, nullptr), UMRT_SUCCESS) << last_error();
  EXPECT_TRUE(all_pages_at(b.get(), 2 * MiB, UMRT_LOCATION_DEVICE));
  umrt_stats st = get_stats();
  EXPECT_EQ(st.device_capacity, 2 * MiB) << "the capacity should shrink to what could be had";
  EXPECT_GE(st.evictions, 1u);
  EXPECT_TRUE(check_pattern(a.get(), size, 12));
  EXPECT_TRUE(check_device_pattern(b.get(), 2 * MiB, 13, 0));
  EXPECT_EQ(umrt_validate(), UMRT_SUCCESS) << last_error();
  // Nothing left to create and nothing to evict but b, which the next prefetch needs itself:
  // a two-block prefetch cannot fit any more and streams (its own oldest block makes room).
  ASSERT_EQ(umrt_prefetch(a.get(), size, UMRT_LOCATION_DEVICE, nullptr), UMRT_SUCCESS) << last_error();
  EXPECT_TRUE(check_pattern(a.get(), size, 12));
  EXPECT_TRUE(check_pattern(b.get(), 2 * MiB, 13));
}

// With nothing on the device to evict, a chunk that cannot be created is out of memory.
TEST_F(InjectSmallDevice, ChunkCreationFailureWithNothingToEvictIsOutOfMemory) {
  Managed a(2 * MiB);
  ASSERT_TRUE(a);
  fill_pattern(a.get(), 2 * MiB, 14);
  ASSERT_EQ(umrt_inject_failure(UMRT_INJECT_CHUNK, 1, 2), UMRT_SUCCESS) << last_error();
  EXPECT_EQ(umrt_prefetch(a.get(), 2 * MiB, UMRT_LOCATION_DEVICE, nullptr), UMRT_ERROR_OUT_OF_MEMORY);
  EXPECT_TRUE(all_pages_at(a.get(), 2 * MiB, UMRT_LOCATION_HOST)) << "a failed prefetch moved pages";
  EXPECT_TRUE(check_pattern(a.get(), 2 * MiB, 14));
  EXPECT_EQ(umrt_validate(), UMRT_SUCCESS) << last_error();
}

// Injected failures interleaved with normal traffic over many rounds.
TEST_F(Inject, FailuresInterleavedWithTraffic) {
  const size_t size = 4 * MiB;
  Managed m(size);
  ASSERT_TRUE(m);
  std::vector<uint8_t> shadow(size);
  fill_pattern(shadow.data(), size, 12);
  std::memcpy(m.get(), shadow.data(), size);
  uint64_t x = 99;
  for (int i = 0; i < 40; ++i) {
    x = mix64(x);
    if (i % 3 == 0) {
      ASSERT_EQ(umrt_inject_failure((x & 1) ? UMRT_INJECT_COPY : UMRT_INJECT_ALLOC, 1 + (x >> 8) % 3, 1),
                UMRT_SUCCESS);
    }
    size_t off = (x >> 16) % size;
    size_t len = std::min<size_t>(size - off, 1 + (x >> 32) % (3 * MiB));
    umrt_location to = (x >> 60) & 1 ? UMRT_LOCATION_DEVICE : UMRT_LOCATION_HOST;
    umrt_status st = umrt_prefetch(m + off, len, to, nullptr);
    EXPECT_TRUE(st == UMRT_SUCCESS || st == UMRT_ERROR_BACKEND || st == UMRT_ERROR_OUT_OF_MEMORY)
        << "round " << i << ": " << str(st);
    ASSERT_EQ(umrt_validate(), UMRT_SUCCESS) << "round " << i << ": " << last_error();
    size_t w = (x >> 4) % size;  // a CPU write
    shadow[w] ^= 0xa5;
    m.get()[w] ^= 0xa5;
  }
  {
    Watchdog wd(std::chrono::seconds(20), "reading back after injected failures");
    EXPECT_EQ(checksum(m.get(), size), checksum(shadow.data(), size));
    EXPECT_EQ(std::memcmp(m.get(), shadow.data(), size), 0);
  }
}

}  // namespace
