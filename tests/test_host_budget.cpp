// test_host_budget.cpp — the host-memory budget (umrt_config.host_memory / UMRT_HOST_MEMORY):
// an anonymous allocation 3x the budget keeps every byte (through the swap file) and the host
// pages it holds stay near the budget; a file larger than the budget is read by the CPU (clean
// pages dropped) and streamed to the device; a writable file's dirty pages are written back when
// they leave; swapped pages go to the device straight from the swap file; failed swap writes and
// reads lose nothing; free and shutdown with pages in swap.
#include <gtest/gtest.h>
#include <umrt/umrt.h>

#include <sys/mman.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <random>
#include <thread>
#include <vector>

#include "temp_file.h"
#include "test_util.h"

namespace {

using namespace umrt_test;

constexpr uint64_t kBudget = 16 * MiB;

class HostBudget : public FileRangeTest {
 protected:
  void Configure(umrt_config &cfg) override {
    cfg.host_memory = kBudget;
    cfg.device_memory = 64 * MiB;
  }
  std::chrono::seconds TimeLimit() const override { return std::chrono::seconds(60); }
  // The most host pages seen while fn runs (sampled every 200 us).
  template <class F>
  uint64_t peak_host_pages(F &&fn) {
    std::atomic<bool> done{false};
    std::atomic<uint64_t> peak{0};
    std::thread sampler([&] {
      while (!done.load()) {
        const uint64_t h = get_stats().host_pages;
        if (h > peak.load()) peak = h;
        std::this_thread::sleep_for(std::chrono::microseconds(200));
      }
    });
    fn();
    done = true;
    sampler.join();
    return peak.load();
  }
};

TEST_F(HostBudget, AnonymousThreeTimesTheBudgetKeepsEveryByte) {
  const size_t bytes = 3 * kBudget;
  void *p = nullptr;
  ASSERT_EQ(umrt_malloc(&p, bytes), UMRT_SUCCESS) << last_error();
  const uint64_t peak = peak_host_pages([&] { fill_pattern(p, bytes, 41); });
  // The reclaim runs beside the program: at rest it gets under the budget soon.
  for (int i = 0; i < 3000 && get_stats().host_pages * kPage > kBudget; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  const umrt_stats a = get_stats();
  std::printf("peak host memory of managed pages while writing %zu MiB under a %llu MiB budget: %.1f MiB\n",
              bytes >> 20, static_cast<unsigned long long>(kBudget >> 20), static_cast<double>(peak * kPage) / MiB);
  EXPECT_GT(a.swap_outs, 0u) << "nothing went to the swap file";
  EXPECT_LE(a.host_pages * kPage, kBudget) << "over the budget at rest";
  // Near the budget all along: it + the throttle's mark (an eighth) + a batch or two in flight.
  EXPECT_LE(peak * kPage, kBudget + kBudget / 8 + 8 * MiB) << "peak host memory of managed pages";
  EXPECT_TRUE(check_pattern(p, bytes, 41)) << "after the round trip through the swap file";
  const umrt_stats b = get_stats();
  EXPECT_GT(b.swap_ins, 0u);
  EXPECT_GE(b.bytes_from_storage - a.bytes_from_storage, (b.swap_ins - a.swap_ins) * kPage);
  EXPECT_EQ(umrt_validate(), UMRT_SUCCESS) << last_error();
  EXPECT_EQ(umrt_free(p), UMRT_SUCCESS) << last_error();
}

// Pages in the swap file go to the device from there (no host copy), and come back right.
TEST_F(HostBudget, SwappedPagesGoToTheDeviceFromTheSwapFile) {
  const size_t bytes = 3 * kBudget;
  void *p = nullptr;
  ASSERT_EQ(umrt_malloc(&p, bytes), UMRT_SUCCESS) << last_error();
  fill_pattern(p, bytes, 42);
  ASSERT_GT(count_pages_at(p, bytes, UMRT_LOCATION_STORAGE), 0u) << "nothing in the swap file";
  ASSERT_EQ(umrt_prefetch(p, bytes, UMRT_LOCATION_DEVICE, nullptr), UMRT_SUCCESS) << last_error();
  EXPECT_TRUE(all_pages_at(p, bytes, UMRT_LOCATION_DEVICE));
  EXPECT_TRUE(check_device_pattern(p, bytes, 42));
  EXPECT_TRUE(check_pattern(p, bytes, 42));
  EXPECT_EQ(umrt_free(p), UMRT_SUCCESS) << last_error();
}

// An mremap moving part of an allocation whose pages are partly in the swap file: that part
// leaves umrt with all its data (swapped pages read from the swap file to the new address, their
// slots given back), the rest stays managed and intact.
TEST_F(HostBudget, MremapOfAPartTakesItsSwappedPagesAlong) {
  const size_t bytes = 3 * kBudget;
  void *p = nullptr;
  ASSERT_EQ(umrt_malloc(&p, bytes), UMRT_SUCCESS) << last_error();
  auto *b = static_cast<uint8_t *>(p);
  fill_pattern(b, bytes, 47);
  const size_t part = 8 * MiB, at = 4 * MiB;  // the oldest blocks: in the swap file by now
  for (int i = 0; i < 2000 && count_pages_at(b + at, part, UMRT_LOCATION_STORAGE) == 0; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  const size_t swapped = count_pages_at(b + at, part, UMRT_LOCATION_STORAGE);
  ASSERT_GT(swapped, 0u) << "nothing of the part in the swap file";
  uint8_t *want = reserve_address(part);
  ASSERT_NE(want, nullptr);
  void *q = mremap(b + at, part, part, MREMAP_MAYMOVE | MREMAP_FIXED, want);
  ASSERT_EQ(q, want) << strerror(errno);
  std::printf("moved %zu MiB with %zu pages in the swap file\n", part >> 20, swapped);
  EXPECT_TRUE(check_pattern(q, part, 47, at)) << "the moved part lost its swapped pages";
  EXPECT_TRUE(check_pattern(b, at, 47));
  EXPECT_TRUE(check_pattern(b + at + part, bytes - at - part, 47, at + part));
  EXPECT_EQ(umrt_validate(), UMRT_SUCCESS) << last_error();  // swap slots: no leak
  EXPECT_EQ(umrt_free(b), UMRT_SUCCESS) << last_error();
  munmap(q, part);
}

// A read-only file 3x the budget: read by the CPU (clean pages dropped, none written), and
// streamed to the device and checksummed there.
TEST_F(HostBudget, FileLargerThanTheBudget) {
  const size_t bytes = 3 * kBudget;
  TempFile f(bytes, 43);
  MAP_OR_SKIP(p, f.path(), 0, 0);
  const uint64_t want = checksum(f.data(), bytes);
  const umrt_stats a = get_stats();
  uint64_t got = 0;
  const uint64_t peak = peak_host_pages([&] { got = checksum(p, bytes); });
  EXPECT_EQ(got, want) << "the CPU read other bytes than the file's";
  const umrt_stats b = get_stats();
  EXPECT_GT(b.pages_dropped_clean - a.pages_dropped_clean, 0u);
  EXPECT_EQ(b.bytes_to_storage, a.bytes_to_storage) << "clean pages were written";
  EXPECT_EQ(b.swap_outs, a.swap_outs) << "file pages went to the swap file";
  EXPECT_LE(peak * kPage, kBudget + kBudget / 8 + 8 * MiB);
  ASSERT_EQ(umrt_prefetch(p, bytes, UMRT_LOCATION_DEVICE, nullptr), UMRT_SUCCESS) << last_error();
  std::vector<uint8_t> dev;
  ASSERT_TRUE(read_device_copy(p, bytes, &dev));
  EXPECT_EQ(checksum(dev.data(), bytes), want) << "the device copy";
  EXPECT_EQ(umrt_free(p), UMRT_SUCCESS) << last_error();
}

// A writable file 3x the budget, written at random: dirty pages are written back as they leave
// (before any flush), and after the flush the file is what was written.
TEST_F(HostBudget, DirtyFilePagesAreWrittenBackWhenTheyLeave) {
  const size_t bytes = 3 * kBudget;
  TempFile f(bytes, 44);
  MAP_OR_SKIP(p, f.path(), 0, 0, UMRT_MAP_READ | UMRT_MAP_WRITE);
  auto *c = static_cast<uint8_t *>(p);
  std::vector<uint8_t> want(f.data(), f.data() + bytes);
  std::mt19937_64 rng(5);
  for (int k = 0; k < 5000; ++k) {
    const size_t off = rng() % bytes;
    const uint8_t v = static_cast<uint8_t>(rng());
    c[off] = v;
    want[off] = v;
  }
  const umrt_stats a = get_stats();
  EXPECT_GT(a.bytes_to_storage, 0u) << "no dirty page was written back on leaving";
  EXPECT_EQ(a.swap_outs, 0u);
  ASSERT_EQ(umrt_flush(p, bytes), UMRT_SUCCESS) << last_error();
  const std::vector<uint8_t> disk = f.on_disk();
  for (size_t k = 0; k < bytes; ++k) ASSERT_EQ(disk[k], want[k]) << "file byte " << k;
  for (size_t k = 0; k < bytes; ++k) ASSERT_EQ(c[k], want[k]) << "memory byte " << k;
  EXPECT_EQ(umrt_free(p), UMRT_SUCCESS) << last_error();
}

// Failed swap writes: pages stay on the host (over the budget, never lost); failed swap reads: the
// faulting thread retries; a later read works.
TEST_F(HostBudget, FailedSwapIoLosesNothing) {
  const size_t bytes = 2 * kBudget;
  void *p = nullptr;
  ASSERT_EQ(umrt_malloc(&p, bytes), UMRT_SUCCESS) << last_error();
  ASSERT_EQ(umrt_inject_failure(UMRT_INJECT_WRITE, 1, 40), UMRT_SUCCESS);
  fill_pattern(p, bytes, 45);
  EXPECT_TRUE(check_pattern(p, bytes, 45)) << "with swap writes failing";
  // Let writes work again; then every swap read fails a few times.
  fill_pattern(p, bytes, 46);
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  ASSERT_EQ(umrt_inject_failure(UMRT_INJECT_READ, 1, 5), UMRT_SUCCESS);
  EXPECT_TRUE(check_pattern(p, bytes, 46)) << "with swap reads failing";
  EXPECT_EQ(umrt_validate(), UMRT_SUCCESS) << last_error();
  EXPECT_EQ(umrt_free(p), UMRT_SUCCESS) << last_error();
}

// Freed with pages in the swap file (their slots go back: the validator counts them), and
// shutdown with pages in it (they come home first).
TEST_F(HostBudget, FreeAndShutdownWithPagesInSwap) {
  void *p = nullptr, *q = nullptr;
  ASSERT_EQ(umrt_malloc(&p, 2 * kBudget), UMRT_SUCCESS);
  ASSERT_EQ(umrt_malloc(&q, 2 * kBudget), UMRT_SUCCESS);
  fill_pattern(p, 2 * kBudget, 47);
  fill_pattern(q, 2 * kBudget, 48);
  EXPECT_GT(count_pages_at(q, 2 * kBudget, UMRT_LOCATION_STORAGE) + count_pages_at(p, 2 * kBudget, UMRT_LOCATION_STORAGE), 0u);
  EXPECT_EQ(umrt_free(p), UMRT_SUCCESS);
  EXPECT_EQ(umrt_validate(), UMRT_SUCCESS) << last_error();
  ASSERT_EQ(umrt_shutdown(), UMRT_SUCCESS) << last_error();
  EXPECT_TRUE(check_pattern(q, 2 * kBudget, 48)) << "after shutdown";
  EXPECT_EQ(umrt_free(q), UMRT_SUCCESS);
}

// Device eviction of a writable file range with host memory at its budget: the device's pages
// (written there) go to the file straight from the device, not home.
class HostBudgetSmallDevice : public HostBudget {
 protected:
  void Configure(umrt_config &cfg) override {
    HostBudget::Configure(cfg);
    cfg.device_memory = 8 * MiB;
  }
};

TEST_F(HostBudgetSmallDevice, DeviceEvictionWritesBackToTheFile) {
  void *ballast = nullptr;  // host memory at the budget
  ASSERT_EQ(umrt_malloc(&ballast, kBudget), UMRT_SUCCESS);
  std::memset(ballast, 1, kBudget);
  const size_t bytes = 16 * MiB;
  TempFile f(bytes, 50);
  MAP_OR_SKIP(p, f.path(), 0, 0, UMRT_MAP_READ | UMRT_MAP_WRITE);
  auto *c = static_cast<uint8_t *>(p);
  std::vector<uint8_t> mine(kBlock);
  const umrt_stats a = get_stats();
  for (size_t b = 0; b < bytes / kBlock; ++b) {  // each block to the device and written there
    ASSERT_EQ(umrt_prefetch(c + b * kBlock, kBlock, UMRT_LOCATION_DEVICE, nullptr), UMRT_SUCCESS) << last_error();
    std::memset(mine.data(), static_cast<int>(0x40 + b), kBlock);
    ASSERT_TRUE(dev_write(dev(c + b * kBlock), mine.data(), kBlock));
  }
  const umrt_stats b = get_stats();
  EXPECT_GT(b.evictions, a.evictions);
  EXPECT_GT(b.bytes_to_storage - a.bytes_to_storage, 0u) << "evicted device pages did not go to the file";
  EXPECT_GT(count_pages_at(p, bytes, UMRT_LOCATION_STORAGE), 0u) << "evicted pages came home instead";
  ASSERT_EQ(umrt_flush(p, bytes), UMRT_SUCCESS) << last_error();
  const std::vector<uint8_t> disk = f.on_disk();
  for (size_t k = 0; k < bytes; k += 512) ASSERT_EQ(disk[k], 0x40 + k / kBlock) << "file byte " << k;
  for (size_t k = 0; k < bytes; k += 512) ASSERT_EQ(c[k], 0x40 + k / kBlock) << "memory byte " << k;
  EXPECT_EQ(umrt_free(p), UMRT_SUCCESS) << last_error();
  EXPECT_EQ(umrt_free(ballast), UMRT_SUCCESS);
}

// No swap file to be had (UMRT_SWAP_DIR names no directory): anonymous pages stay on the host.
class HostBudgetNoSwapDir : public HostBudget {
 protected:
  void SetUp() override {
    setenv("UMRT_SWAP_DIR", "/nonexistent/umrt-swap", 1);
    HostBudget::SetUp();
  }
  void TearDown() override {
    HostBudget::TearDown();
    unsetenv("UMRT_SWAP_DIR");
  }
};

TEST_F(HostBudgetNoSwapDir, AnonymousPagesStayWhenThereIsNoSwap) {
  const size_t bytes = 2 * kBudget;
  void *p = nullptr;
  ASSERT_EQ(umrt_malloc(&p, bytes), UMRT_SUCCESS) << last_error();
  fill_pattern(p, bytes, 49);
  EXPECT_EQ(get_stats().swap_outs, 0u);
  EXPECT_TRUE(check_pattern(p, bytes, 49));
  EXPECT_EQ(umrt_free(p), UMRT_SUCCESS) << last_error();
}

TEST(HostBudgetConfig, BelowFourMiBIsRefused) {
  umrt_shutdown();
  umrt_config c{};
  ASSERT_EQ(umrt_config_defaults(&c), UMRT_SUCCESS);
  c.backend = UMRT_BACKEND_SIM;
  c.host_memory = MiB;
  EXPECT_EQ(umrt_init(&c), UMRT_ERROR_INVALID_VALUE);
  EXPECT_NE(std::string(last_error()).find("4 MiB"), std::string::npos) << last_error();
  setenv("UMRT_HOST_MEMORY", "3M", 1);
  EXPECT_EQ(umrt_config_defaults(&c), UMRT_ERROR_INVALID_VALUE);
  setenv("UMRT_HOST_MEMORY", "lots", 1);
  EXPECT_EQ(umrt_config_defaults(&c), UMRT_ERROR_INVALID_VALUE);
  setenv("UMRT_HOST_MEMORY", "64M", 1);
  umrt_config d{};
  EXPECT_EQ(umrt_config_defaults(&d), UMRT_SUCCESS);
  EXPECT_EQ(d.host_memory, 64 * MiB);
  unsetenv("UMRT_HOST_MEMORY");
}

}  // namespace
