// test_host_budget_adv.cpp — adversarial tests of the host budget, written by an outside review
// of its first commit: writers and prefetches racing the reclaim, free, munmap and mremap (whole
// and partial) with swapped pages, mlock, MADV_DONTNEED, fork, failing swap I/O, a full swap
// file, small allocations, flushes beside the reclaim, shutdown while reclaiming.
#include <gtest/gtest.h>
#include <umrt/umrt.h>

#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <random>
#include <thread>
#include <vector>

#include "temp_file.h"
#include "test_util.h"

namespace {

using namespace umrt_test;

constexpr uint64_t kBudget = 16 * MiB;

class HBAdv : public FileRangeTest {
 protected:
  void Configure(umrt_config &cfg) override {
    cfg.host_memory = kBudget;
    cfg.device_memory = 64 * MiB;
  }
  std::chrono::seconds TimeLimit() const override { return std::chrono::seconds(40); }
  // Wait (bounded) until the reclaim brought the count under the budget.
  void settle(uint64_t limit = kBudget) {
    for (int i = 0; i < 3000 && get_stats().host_pages * kPage > limit; ++i)
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  // A managed range of `bytes` filled with pattern `seed`, the reclaim settled (much of it in
  // swap when larger than the budget); nullptr on failure.
  uint8_t *filled(size_t bytes, uint64_t seed) {
    void *p = nullptr;
    if (umrt_malloc(&p, bytes) != UMRT_SUCCESS) return nullptr;
    fill_pattern(p, bytes, seed);
    settle();
    return static_cast<uint8_t *>(p);
  }
};

// ---- host_pages of packed (small) allocations ----------------------------------------------
TEST_F(HBAdv, FreeingAPackedRangeKeepsItsNeighboursCount) {
  void *a = nullptr, *b = nullptr;
  ASSERT_EQ(umrt_malloc(&a, 64 * KiB), UMRT_SUCCESS);
  ASSERT_EQ(umrt_malloc(&b, 64 * KiB), UMRT_SUCCESS);
  const uint64_t h0 = get_stats().host_pages;
  fill_pattern(a, 64 * KiB, 1);
  fill_pattern(b, 64 * KiB, 2);
  const uint64_t h1 = get_stats().host_pages;
  EXPECT_EQ(h1 - h0, 32u);
  ASSERT_EQ(umrt_free(a), UMRT_SUCCESS);
  const uint64_t h2 = get_stats().host_pages;
  EXPECT_EQ(h2, h0 + 16) << "b's 16 host pages should still count";
  EXPECT_TRUE(check_pattern(b, 64 * KiB, 2));
  EXPECT_EQ(umrt_free(b), UMRT_SUCCESS);
}

// ---- a budget of exactly 4 MiB --------------------------------------------------------------
class HBAdv4M : public HBAdv {
 protected:
  void Configure(umrt_config &cfg) override {
    cfg.host_memory = 4 * MiB;
    cfg.device_memory = 64 * MiB;
  }
};
TEST_F(HBAdv4M, FourMiBBudget) {
  const size_t bytes = 32 * MiB;
  void *p = nullptr;
  ASSERT_EQ(umrt_malloc(&p, bytes), UMRT_SUCCESS);
  fill_pattern(p, bytes, 3);
  settle(4 * MiB);
  EXPECT_LE(get_stats().host_pages * kPage, 4 * MiB);
  EXPECT_TRUE(check_pattern(p, bytes, 3));
  EXPECT_EQ(umrt_validate(), UMRT_SUCCESS) << last_error();
  EXPECT_EQ(umrt_free(p), UMRT_SUCCESS);
}

// ---- writers racing the reclaim -------------------------------------------------------------
static void random_writers(uint8_t *c, size_t bytes, int threads, int iters, std::vector<uint32_t> &shadow) {
  // Each thread owns pages p with p % threads == t; it increments word 0 of random owned pages.
  const size_t pages = bytes / kPage;
  shadow.assign(pages, 0);
  std::vector<std::thread> ts;
  for (int t = 0; t < threads; ++t)
    ts.emplace_back([&, t] {
      std::mt19937_64 rng(t + 11);
      for (int k = 0; k < iters; ++k) {
        size_t p = rng() % pages;
        p -= p % threads;
        p += t;
        if (p >= pages) continue;
        auto *w = reinterpret_cast<volatile uint32_t *>(c + p * kPage + (k % 1024) * 4);
        *w = *w + 1;
        shadow[p]++;  // owned by t only (distinct slot), but we compare sums per page
      }
    });
  for (auto &t : ts) t.join();
}

static void check_sums(const uint8_t *c, size_t bytes, const std::vector<uint32_t> &shadow) {
  const size_t pages = bytes / kPage;
  size_t bad = 0;
  for (size_t p = 0; p < pages; ++p) {
    uint64_t s = 0;
    for (int k = 0; k < 1024; ++k) s += reinterpret_cast<const uint32_t *>(c + p * kPage)[k];
    if (s != shadow[p] && bad++ < 5) ADD_FAILURE() << "page " << p << ": sum " << s << " want " << shadow[p];
  }
  EXPECT_EQ(bad, 0u);
}

TEST_F(HBAdv, RandomWritersCancelPolicy) {
  const size_t bytes = 48 * MiB;
  void *p = nullptr;
  ASSERT_EQ(umrt_malloc(&p, bytes), UMRT_SUCCESS);
  std::memset(p, 0, bytes);
  std::vector<uint32_t> shadow;
  random_writers(static_cast<uint8_t *>(p), bytes, 4, 2000, shadow);
  check_sums(static_cast<uint8_t *>(p), bytes, shadow);
  const umrt_stats s = get_stats();
  std::printf("swap_outs %llu swap_ins %llu write_cancels %llu\n", (unsigned long long)s.swap_outs,
              (unsigned long long)s.swap_ins, (unsigned long long)s.write_cancels);
  EXPECT_EQ(umrt_validate(), UMRT_SUCCESS) << last_error();
  EXPECT_EQ(umrt_free(p), UMRT_SUCCESS);
}

class HBAdvWait : public HBAdv {
 protected:
  void Configure(umrt_config &cfg) override {
    HBAdv::Configure(cfg);
    cfg.write_fault = UMRT_WRITE_FAULT_WAIT;
  }
};
TEST_F(HBAdvWait, RandomWritersWaitPolicy) {
  const size_t bytes = 48 * MiB;
  void *p = nullptr;
  ASSERT_EQ(umrt_malloc(&p, bytes), UMRT_SUCCESS);
  std::memset(p, 0, bytes);
  std::vector<uint32_t> shadow;
  random_writers(static_cast<uint8_t *>(p), bytes, 4, 2000, shadow);
  check_sums(static_cast<uint8_t *>(p), bytes, shadow);
  EXPECT_EQ(umrt_validate(), UMRT_SUCCESS) << last_error();
  EXPECT_EQ(umrt_free(p), UMRT_SUCCESS);
}

// ---- prefetches racing the reclaim ----------------------------------------------------------
TEST_F(HBAdv, PrefetchesRacingReclaim) {
  const size_t bytes = 48 * MiB;
  void *p = nullptr;
  ASSERT_EQ(umrt_malloc(&p, bytes), UMRT_SUCCESS);
  fill_pattern(p, bytes, 5);
  std::atomic<bool> stop{false};
  std::atomic<int> errors{0};
  std::thread pf([&] {
    std::mt19937_64 rng(3);
    while (!stop) {
      const size_t blk = rng() % (bytes / kBlock);
      const umrt_location to = (rng() & 1) ? UMRT_LOCATION_DEVICE : UMRT_LOCATION_HOST;
      if (umrt_prefetch(static_cast<uint8_t *>(p) + blk * kBlock, kBlock, to, nullptr) != UMRT_SUCCESS) ++errors;
    }
  });
  std::mt19937_64 rng(4);
  auto *c = static_cast<uint8_t *>(p);
  for (int k = 0; k < 3000; ++k) {
    const size_t pg = rng() % (bytes / kPage);
    // read-verify a page
    const auto m = first_mismatch(c + pg * kPage, kPage, 5, pg * kPage);
    if (m) {
      ADD_FAILURE() << "page " << pg << " mismatch at " << *m;
      break;
    }
  }
  stop = true;
  pf.join();
  EXPECT_EQ(errors.load(), 0) << last_error();
  EXPECT_TRUE(check_pattern(p, bytes, 5));
  EXPECT_EQ(umrt_validate(), UMRT_SUCCESS) << last_error();
  EXPECT_EQ(umrt_free(p), UMRT_SUCCESS);
}

// ---- umrt_free while the reclaim spills it ---------------------------------------------------
TEST_F(HBAdv, FreeWhileSpilling) {
  for (int round = 0; round < 20; ++round) {
    void *p = nullptr;
    ASSERT_EQ(umrt_malloc(&p, 24 * MiB), UMRT_SUCCESS);
    fill_pattern(p, 24 * MiB, 6 + round);
    ASSERT_EQ(umrt_free(p), UMRT_SUCCESS);
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  EXPECT_EQ(umrt_validate(), UMRT_SUCCESS) << last_error();
}

// ---- munmap of swapped pages ---------------------------------------------------------------
TEST_F(HBAdv, PartialMunmapOfSwappedPagesThenReuse) {
  const size_t bytes = 48 * MiB;
  uint8_t *c = filled(bytes, 7);
  ASSERT_NE(c, nullptr);
  void *p = c;
  ASSERT_GT(count_pages_at(c, 8 * MiB, UMRT_LOCATION_STORAGE), 0u) << "the first 8 MiB should be in swap";
  ASSERT_EQ(munmap(c + 2 * MiB, 4 * MiB), 0);
  void *q = mmap(c + 2 * MiB, 4 * MiB, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
  ASSERT_EQ(q, c + 2 * MiB);
  EXPECT_TRUE(check_zero(q, 4 * MiB)) << "the new mapping";
  std::memset(q, 0x5a, 4 * MiB);
  EXPECT_TRUE(check_pattern(c, 2 * MiB, 7));
  EXPECT_TRUE(check_pattern(c + 6 * MiB, bytes - 6 * MiB, 7, 6 * MiB));
  ASSERT_EQ(umrt_prefetch(c, 2 * MiB, UMRT_LOCATION_DEVICE, nullptr), UMRT_SUCCESS) << last_error();
  for (size_t k = 0; k < 4 * MiB; ++k)
    if (static_cast<uint8_t *>(q)[k] != 0x5a) {
      ADD_FAILURE() << "new mapping byte " << k << " changed";
      break;
    }
  EXPECT_EQ(umrt_validate(), UMRT_SUCCESS) << last_error();
  EXPECT_EQ(umrt_free(p), UMRT_SUCCESS);
  munmap(q, 4 * MiB);
  EXPECT_EQ(umrt_validate(), UMRT_SUCCESS) << last_error();
}

TEST_F(HBAdv, WholeMunmapWithSwappedPages) {
  const size_t bytes = 48 * MiB;
  void *p = nullptr;
  ASSERT_EQ(umrt_malloc(&p, bytes), UMRT_SUCCESS);
  fill_pattern(p, bytes, 8);
  settle();
  ASSERT_EQ(munmap(p, bytes), 0);
  void *q = nullptr;
  ASSERT_EQ(umrt_malloc(&q, bytes), UMRT_SUCCESS);
  fill_pattern(q, bytes, 9);
  EXPECT_TRUE(check_pattern(q, bytes, 9));
  EXPECT_EQ(umrt_validate(), UMRT_SUCCESS) << last_error();
  EXPECT_EQ(umrt_free(q), UMRT_SUCCESS);
  EXPECT_EQ(umrt_validate(), UMRT_SUCCESS) << last_error();
}

// ---- mremap -------------------------------------------------------------------------------
TEST_F(HBAdv, WholeMremapWithSwappedPages) {
  const size_t bytes = 48 * MiB;
  void *p = nullptr;
  ASSERT_EQ(umrt_malloc(&p, bytes), UMRT_SUCCESS);
  fill_pattern(p, bytes, 10);
  settle();
  uint8_t *dst = reserve_address(bytes);
  void *q = mremap(p, bytes, bytes, MREMAP_MAYMOVE | MREMAP_FIXED, dst);
  ASSERT_EQ(q, dst);
  EXPECT_TRUE(check_pattern(q, bytes, 10)) << "at the new address";
  EXPECT_EQ(umrt_validate(), UMRT_SUCCESS) << last_error();
  EXPECT_EQ(umrt_free(q), UMRT_SUCCESS) << last_error();
  EXPECT_EQ(umrt_validate(), UMRT_SUCCESS) << last_error();
}

TEST_F(HBAdv, WritesAndReadsWhileMremapMovesIt) {
  // The range moves back and forth while the reclaim and the CPU work on it.
  const size_t bytes = 32 * MiB;
  void *p = nullptr;
  ASSERT_EQ(umrt_malloc(&p, bytes), UMRT_SUCCESS);
  fill_pattern(p, bytes, 11);
  uint8_t *a = static_cast<uint8_t *>(p);
  uint8_t *b = reserve_address(bytes);
  for (int k = 0; k < 10; ++k) {
    void *q = mremap(a, bytes, bytes, MREMAP_MAYMOVE | MREMAP_FIXED, b);
    ASSERT_EQ(q, b);
    // re-reserve the old place for the next move
    uint8_t *old = a;
    a = b;
    b = static_cast<uint8_t *>(mmap(old, bytes, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED | MAP_NORESERVE, -1, 0));
    ASSERT_EQ(b, old);
    fill_pattern(a + (k % 8) * 4 * MiB, 4 * MiB, 11, (k % 8) * 4 * MiB);  // same bytes
    ASSERT_TRUE(check_pattern(a, bytes, 11)) << "round " << k;
  }
  EXPECT_EQ(umrt_validate(), UMRT_SUCCESS) << last_error();
  EXPECT_EQ(umrt_free(a), UMRT_SUCCESS) << last_error();
  munmap(b, bytes);
}

// ---- mlock -----------------------------------------------------------------------------------
TEST_F(HBAdv, MlockedPagesStayAndTheRestStillMoves) {
  const size_t bytes = 48 * MiB;
  void *p = nullptr;
  ASSERT_EQ(umrt_malloc(&p, bytes), UMRT_SUCCESS);
  auto *c = static_cast<uint8_t *>(p);
  fill_pattern(c, 8 * MiB, 12);
  if (mlock(c, 8 * MiB) != 0) GTEST_SKIP() << "mlock: " << strerror(errno);
  const auto t0 = std::chrono::steady_clock::now();
  fill_pattern(c + 8 * MiB, bytes - 8 * MiB, 12, 8 * MiB);
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("filling 40 MiB with 8 MiB mlocked: %.2f s\n", s);
  EXPECT_TRUE(check_pattern(c, bytes, 12));
  EXPECT_EQ(umrt_validate(), UMRT_SUCCESS) << last_error();
  munlock(c, 8 * MiB);
  EXPECT_EQ(umrt_free(p), UMRT_SUCCESS);
}

// ---- MADV_DONTNEED of swapped pages ---------------------------------------------------------
TEST_F(HBAdv, DontneedOfSwappedPages) {
  const size_t bytes = 48 * MiB;
  uint8_t *c = filled(bytes, 13);
  ASSERT_NE(c, nullptr);
  void *p = c;
  ASSERT_EQ(madvise(c, 4 * MiB, MADV_DONTNEED), 0);
  // Either zeros (as the kernel) or the data (as device pages): never garbage.
  size_t z = 0, d = 0, bad = 0;
  for (size_t pg = 0; pg < 4 * MiB / kPage; ++pg) {
    if (check_zero(c + pg * kPage, kPage)) ++z;
    else if (check_pattern(c + pg * kPage, kPage, 13, pg * kPage)) ++d;
    else ++bad;
  }
  std::printf("after MADV_DONTNEED: %zu zero pages, %zu with the data\n", z, d);
  EXPECT_EQ(bad, 0u);
  EXPECT_TRUE(check_pattern(c + 4 * MiB, bytes - 4 * MiB, 13, 4 * MiB));
  EXPECT_EQ(umrt_validate(), UMRT_SUCCESS) << last_error();
  EXPECT_EQ(umrt_free(p), UMRT_SUCCESS);
}

// ---- small device memory + small host budget --------------------------------------------------
class HBAdvSmallDevice : public HBAdv {
 protected:
  void Configure(umrt_config &cfg) override {
    cfg.host_memory = kBudget;
    cfg.device_memory = 8 * MiB;
  }
};
TEST_F(HBAdvSmallDevice, EvictionAndSpill) {
  const size_t bytes = 48 * MiB;
  void *p = nullptr;
  ASSERT_EQ(umrt_malloc(&p, bytes), UMRT_SUCCESS);
  fill_pattern(p, bytes, 14);
  auto *c = static_cast<uint8_t *>(p);
  for (int pass = 0; pass < 2; ++pass)
    for (size_t off = 0; off < bytes; off += 4 * MiB) {
      ASSERT_EQ(umrt_prefetch(c + off, 4 * MiB, UMRT_LOCATION_DEVICE, nullptr), UMRT_SUCCESS) << last_error();
      ASSERT_TRUE(check_device_pattern(c + off, 4 * MiB, 14, off));
    }
  EXPECT_TRUE(check_pattern(p, bytes, 14));
  const umrt_stats s = get_stats();
  std::printf("evictions %llu swap_outs %llu swap_ins %llu\n", (unsigned long long)s.evictions,
              (unsigned long long)s.swap_outs, (unsigned long long)s.swap_ins);
  EXPECT_EQ(umrt_validate(), UMRT_SUCCESS) << last_error();
  EXPECT_EQ(umrt_free(p), UMRT_SUCCESS);
}

// ---- the host_pages count at rest matches the pages on the host ---------------------------------
TEST_F(HBAdv, HostPagesCountMatchesAtRest) {
  const size_t bytes = 48 * MiB;
  void *p = nullptr;
  ASSERT_EQ(umrt_malloc(&p, bytes), UMRT_SUCCESS);
  fill_pattern(p, bytes, 15);
  auto *c = static_cast<uint8_t *>(p);
  std::vector<std::thread> ts;
  std::atomic<uint64_t> sum{0};
  for (int t = 0; t < 4; ++t)
    ts.emplace_back([&, t] {
      std::mt19937_64 rng(t);
      uint64_t s = 0;
      for (int k = 0; k < 1500; ++k) s += c[(rng() % (bytes / kPage)) * kPage];
      sum += s;
    });
  std::thread pf([&] {
    std::mt19937_64 rng(9);
    for (int k = 0; k < 200; ++k)
      umrt_prefetch(c + (rng() % (bytes / kBlock)) * kBlock, kBlock, (k & 1) ? UMRT_LOCATION_DEVICE : UMRT_LOCATION_HOST, nullptr);
  });
  for (auto &t : ts) t.join();
  pf.join();
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  const uint64_t host = count_pages_at(c, bytes, UMRT_LOCATION_HOST);
  const uint64_t counted = get_stats().host_pages;
  std::printf("host pages %llu, counted %llu\n", (unsigned long long)host, (unsigned long long)counted);
  EXPECT_EQ(counted, host);
  EXPECT_EQ(umrt_free(p), UMRT_SUCCESS);
}

}  // namespace
namespace {
using namespace umrt_test;

// ---- disk-full swap: UMRT_SWAP_DIR on a 2 MiB tmpfs -------------------------------------------
class HBAdvFullSwap : public HBAdv {
 protected:
  void SetUp() override {
    mkdir(dir_, 0700);
    if (mount("tmpfs", dir_, "tmpfs", 0, "size=2m") != 0) {
      mounted_ = false;
      GTEST_SKIP() << "mount tmpfs: " << strerror(errno);
    }
    mounted_ = true;
    setenv("UMRT_SWAP_DIR", dir_, 1);
    HBAdv::SetUp();
  }
  void TearDown() override {
    HBAdv::TearDown();
    unsetenv("UMRT_SWAP_DIR");
    if (mounted_) umount2(dir_, MNT_DETACH);
  }
  const char *dir_ = "/tmp/umrt-hb-full";
  bool mounted_ = false;
};
TEST_F(HBAdvFullSwap, SwapFileFillsUp) {
  const size_t bytes = 48 * MiB;
  void *p = nullptr;
  ASSERT_EQ(umrt_malloc(&p, bytes), UMRT_SUCCESS);
  const auto t0 = std::chrono::steady_clock::now();
  fill_pattern(p, bytes, 20);
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_TRUE(check_pattern(p, bytes, 20));
  const umrt_stats st = get_stats();
  std::printf("fill with a full swap: %.2f s; swap_outs %llu host %llu\n", s, (unsigned long long)st.swap_outs,
              (unsigned long long)st.host_pages);
  EXPECT_EQ(umrt_validate(), UMRT_SUCCESS) << last_error();
  // random access over the range
  auto *c = static_cast<uint8_t *>(p);
  std::mt19937_64 rng(1);
  const auto t1 = std::chrono::steady_clock::now();
  uint64_t sum = 0;
  for (int k = 0; k < 2000; ++k) sum += c[(rng() % (bytes / kPage)) * kPage];
  std::printf("2000 random reads: %.2f s (%llu)\n",
              std::chrono::duration<double>(std::chrono::steady_clock::now() - t1).count(), (unsigned long long)sum);
  EXPECT_EQ(umrt_free(p), UMRT_SUCCESS);
  EXPECT_EQ(umrt_validate(), UMRT_SUCCESS) << last_error();
}

// ---- injected swap read failures on prefetches: a failed call keeps the data -------------------
TEST_F(HBAdv, SwapReadFailuresOnPrefetch) {
  const size_t bytes = 48 * MiB;
  uint8_t *c = filled(bytes, 21);
  ASSERT_NE(c, nullptr);
  void *p = c;
  ASSERT_GT(count_pages_at(c, 4 * MiB, UMRT_LOCATION_STORAGE), 0u);
  ASSERT_EQ(umrt_inject_failure(UMRT_INJECT_READ, 1, 3), UMRT_SUCCESS);
  umrt_status s1 = umrt_prefetch(c, 4 * MiB, UMRT_LOCATION_DEVICE, nullptr);
  std::printf("prefetch to device with failing swap reads: %s (%s)\n", str(s1).c_str(), last_error());
  ASSERT_EQ(umrt_inject_failure(UMRT_INJECT_READ, 1, 3), UMRT_SUCCESS);
  umrt_status s2 = umrt_prefetch(c + 4 * MiB, 4 * MiB, UMRT_LOCATION_HOST, nullptr);
  std::printf("prefetch to host with failing swap reads: %s (%s)\n", str(s2).c_str(), last_error());
  EXPECT_EQ(umrt_validate(), UMRT_SUCCESS) << last_error();
  EXPECT_TRUE(check_pattern(p, bytes, 21));
  EXPECT_EQ(umrt_validate(), UMRT_SUCCESS) << last_error();
  EXPECT_EQ(umrt_free(p), UMRT_SUCCESS);
}

// ---- writable file ranges over budget, with flushes racing the reclaim ---------------------------
TEST_F(HBAdv, WritableFileOverBudgetWithConcurrentFlushes) {
  const size_t bytes = 40 * MiB;
  TempFile f(bytes, 22);
  MAP_OR_SKIP(p, f.path(), 0, 0, UMRT_MAP_READ | UMRT_MAP_WRITE);
  auto *c = static_cast<uint8_t *>(p);
  std::vector<uint8_t> want(f.data(), f.data() + bytes);
  std::atomic<bool> stop{false};
  std::atomic<int> flush_err{0};
  std::thread fl([&] {
    while (!stop) {
      if (umrt_flush(p, bytes) != UMRT_SUCCESS) ++flush_err;
    }
  });
  std::mt19937_64 rng(6);
  const auto t0 = std::chrono::steady_clock::now();
  while (std::chrono::steady_clock::now() - t0 < std::chrono::seconds(3)) {
    const size_t off = rng() % bytes;
    const uint8_t v = static_cast<uint8_t>(rng());
    c[off] = v;
    want[off] = v;
  }
  stop = true;
  fl.join();
  EXPECT_EQ(flush_err.load(), 0);
  ASSERT_EQ(umrt_flush(p, bytes), UMRT_SUCCESS) << last_error();
  const std::vector<uint8_t> disk = f.on_disk();
  size_t bad = 0;
  for (size_t k = 0; k < bytes; ++k)
    if (disk[k] != want[k] && bad++ < 5) ADD_FAILURE() << "file byte " << k;
  for (size_t k = 0; k < bytes; ++k)
    if (c[k] != want[k] && bad++ < 10) ADD_FAILURE() << "memory byte " << k;
  EXPECT_EQ(umrt_validate(), UMRT_SUCCESS) << last_error();
  EXPECT_EQ(umrt_free(p), UMRT_SUCCESS) << last_error();
}

// ---- injected write failures of dirty file pages leaving ---------------------------------------
TEST_F(HBAdv, FileWriteBackFailuresWhenLeaving) {
  const size_t bytes = 40 * MiB;
  TempFile f(bytes, 23);
  MAP_OR_SKIP(p, f.path(), 0, 0, UMRT_MAP_READ | UMRT_MAP_WRITE);
  ASSERT_EQ(umrt_inject_failure(UMRT_INJECT_WRITE, 1, 30), UMRT_SUCCESS);
  fill_pattern(p, bytes, 24);
  EXPECT_TRUE(check_pattern(p, bytes, 24));
  ASSERT_EQ(umrt_flush(p, bytes), UMRT_SUCCESS) << last_error();
  const std::vector<uint8_t> disk = f.on_disk();
  EXPECT_TRUE(check_pattern(disk.data(), bytes, 24));
  EXPECT_EQ(umrt_free(p), UMRT_SUCCESS) << last_error();
}

// ---- partial mremap with swapped pages (documented: those pages arrive as zeros) ------------
TEST_F(HBAdv, PartialMremapWithSwappedPages) {
  const size_t bytes = 48 * MiB;
  uint8_t *c = filled(bytes, 25);
  ASSERT_NE(c, nullptr);
  void *p = c;
  const size_t in_swap = count_pages_at(c + 2 * MiB, 2 * MiB, UMRT_LOCATION_STORAGE);
  uint8_t *dst = reserve_address(2 * MiB);
  void *q = mremap(c + 2 * MiB, 2 * MiB, 2 * MiB, MREMAP_MAYMOVE | MREMAP_FIXED, dst);
  ASSERT_EQ(q, dst);
  size_t zero = 0;
  for (size_t pg = 0; pg < 512; ++pg) zero += static_cast<bool>(check_zero(dst + pg * kPage, kPage));
  std::printf("moved part: %zu pages in swap before, %zu read as zeros after\n", in_swap, zero);
  EXPECT_TRUE(check_pattern(c, 2 * MiB, 25));
  EXPECT_TRUE(check_pattern(c + 4 * MiB, bytes - 4 * MiB, 25, 4 * MiB));
  EXPECT_EQ(umrt_validate(), UMRT_SUCCESS) << last_error();
  const uint64_t used_before_free = get_stats().swap_outs;
  (void)used_before_free;
  EXPECT_EQ(umrt_free(p), UMRT_SUCCESS);
  EXPECT_EQ(umrt_validate(), UMRT_SUCCESS) << last_error();
  munmap(dst, 2 * MiB);
}

// ---- shutdown while the reclaim is busy, then the data --------------------------------------
TEST_F(HBAdv, ShutdownWhileReclaiming) {
  const size_t bytes = 48 * MiB;
  void *p = nullptr;
  ASSERT_EQ(umrt_malloc(&p, bytes), UMRT_SUCCESS);
  fill_pattern(p, bytes, 26);  // the reclaim is busy right after
  ASSERT_EQ(umrt_shutdown(), UMRT_SUCCESS) << last_error();
  EXPECT_TRUE(check_pattern(p, bytes, 26)) << "after shutdown";
  EXPECT_EQ(umrt_free(p), UMRT_SUCCESS) << last_error();
}

// ---- fork with pages in swap ---------------------------------------------------------------
TEST_F(HBAdv, ForkWithSwappedPages) {
  const size_t bytes = 48 * MiB;
  void *p = nullptr;
  ASSERT_EQ(umrt_malloc(&p, bytes), UMRT_SUCCESS);
  fill_pattern(p, bytes, 27);
  settle();
  pid_t pid = fork();
  if (pid == 0) {
    // the child never touches managed memory; it just exits
    _exit(0);
  }
  int st = 0;
  waitpid(pid, &st, 0);
  EXPECT_TRUE(WIFEXITED(st));
  EXPECT_TRUE(check_pattern(p, bytes, 27));
  EXPECT_EQ(umrt_validate(), UMRT_SUCCESS) << last_error();
  EXPECT_EQ(umrt_free(p), UMRT_SUCCESS);
}
}  // namespace

namespace {
using namespace umrt_test;

// ---- mlocked memory over the budget, at rest: the reclaim should not keep writing it ----------
TEST_F(HBAdv, MlockedOverBudgetAtRestDoesNoIo) {
  const size_t bytes = 24 * MiB;  // more than the budget, all mlocked
  void *p = nullptr;
  ASSERT_EQ(umrt_malloc(&p, bytes), UMRT_SUCCESS);
  fill_pattern(p, bytes, 30);
  ASSERT_EQ(umrt_prefetch(p, bytes, UMRT_LOCATION_HOST, nullptr), UMRT_SUCCESS) << last_error();
  if (mlock(p, bytes) != 0) GTEST_SKIP() << "mlock: " << strerror(errno);
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  const umrt_stats a = get_stats();
  std::this_thread::sleep_for(std::chrono::seconds(2));
  const umrt_stats b = get_stats();
  std::printf("at rest for 2 s with %zu MiB mlocked: bytes_to_storage +%llu MiB, swap_outs +%llu, host_pages %llu\n",
              bytes >> 20, (unsigned long long)((b.bytes_to_storage - a.bytes_to_storage) >> 20),
              (unsigned long long)(b.swap_outs - a.swap_outs), (unsigned long long)b.host_pages);
  EXPECT_LT(b.bytes_to_storage - a.bytes_to_storage, 8 * MiB) << "the reclaim keeps writing pages that cannot leave";
  munlock(p, bytes);
  EXPECT_TRUE(check_pattern(p, bytes, 30));
  EXPECT_EQ(umrt_free(p), UMRT_SUCCESS);
}

// ---- small allocations over the budget: they cannot leave, so faults should not be throttled ---
TEST_F(HBAdv, SmallAllocationsOverBudgetAreNotThrottledToACrawl) {
  constexpr size_t kSmall = 256 * KiB, kN = 128;  // 32 MiB of packed allocations
  std::vector<void *> v(kN);
  for (auto &q : v) ASSERT_EQ(umrt_malloc(&q, kSmall), UMRT_SUCCESS);
  const auto t0 = std::chrono::steady_clock::now();
  for (size_t k = 0; k < kN; ++k) fill_pattern(v[k], kSmall, 100 + k);
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const umrt_stats st = get_stats();
  std::printf("touching %zu MiB of 256 KiB allocations under a 16 MiB budget: %.2f s (faults %llu, host %llu)\n",
              (kN * kSmall) >> 20, s, (unsigned long long)st.cpu_faults, (unsigned long long)st.host_pages);
  EXPECT_LT(s, 2.0);
  for (size_t k = 0; k < kN; ++k) EXPECT_TRUE(check_pattern(v[k], kSmall, 100 + k));
  for (auto q : v) EXPECT_EQ(umrt_free(q), UMRT_SUCCESS);
}

// ---- a flush running beside the program starves the reclaim of file pages -------------------
TEST_F(HBAdv, FlusherDoesNotStarveTheReclaim) {
  const size_t bytes = 40 * MiB;
  TempFile f(bytes, 31);
  MAP_OR_SKIP(p, f.path(), 0, 0, UMRT_MAP_READ | UMRT_MAP_WRITE);
  auto *c = static_cast<uint8_t *>(p);
  auto rate = [&](bool flusher) {
    std::atomic<bool> stop{false};
    std::thread fl([&] {
      while (flusher && !stop) umrt_flush(p, bytes);
    });
    std::mt19937_64 rng(flusher ? 7 : 8);
    uint64_t n = 0;
    const auto t0 = std::chrono::steady_clock::now();
    while (std::chrono::steady_clock::now() - t0 < std::chrono::seconds(2)) {
      c[rng() % bytes] ^= 1;
      ++n;
    }
    stop = true;
    fl.join();
    return n;
  };
  const uint64_t alone = rate(false);
  const uint64_t with = rate(true);
  const umrt_stats st = get_stats();
  std::printf("random writes in 2 s: %llu alone, %llu with a flusher beside (host_pages now %llu, budget %llu)\n",
              (unsigned long long)alone, (unsigned long long)with, (unsigned long long)st.host_pages,
              (unsigned long long)(kBudget / kPage));
  EXPECT_GT(with * 5, alone) << "a flush beside the program makes every fault wait for the throttle";
  EXPECT_EQ(umrt_free(p), UMRT_SUCCESS) << last_error();
}
}  // namespace
namespace {
using namespace umrt_test;
// Pages umrt says are in the swap file but that are mapped (resident) at the range's address.
static size_t swap_but_mapped(uint8_t *a, size_t bytes) {
  std::vector<unsigned char> vec(bytes / kPage);
  if (mincore(a, bytes, vec.data()) != 0) return 0;
  size_t n = 0;
  for (size_t pg = 0; pg < bytes / kPage; ++pg)
    if ((vec[pg] & 1) && location_of(a + pg * kPage) == UMRT_LOCATION_STORAGE) ++n;
  return n;
}
TEST_F(HBAdv, MremapRacingSpillStress) {
  const size_t bytes = 32 * MiB;
  void *p = nullptr;
  ASSERT_EQ(umrt_malloc(&p, bytes), UMRT_SUCCESS);
  fill_pattern(p, bytes, 32);
  uint8_t *a = static_cast<uint8_t *>(p);
  uint8_t *b = reserve_address(bytes);
  const auto t0 = std::chrono::steady_clock::now();
  int rounds = 0;
  size_t bad = 0;
  std::mt19937_64 rng(3);
  while (std::chrono::steady_clock::now() - t0 < std::chrono::seconds(3)) {
    // touch a random 2 MiB block (reads fault swapped pages home: the reclaim runs)
    const size_t blk = rng() % (bytes / kBlock);
    uint64_t s = 0;
    for (size_t off = 0; off < kBlock; off += kPage) s += static_cast<volatile uint8_t *>(a)[blk * kBlock + off];
    (void)s;
    std::this_thread::sleep_for(std::chrono::microseconds(rng() % 2000));
    void *q = mremap(a, bytes, bytes, MREMAP_MAYMOVE | MREMAP_FIXED, b);
    ASSERT_EQ(q, b);
    uint8_t *old = a;
    a = b;
    b = static_cast<uint8_t *>(mmap(old, bytes, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED | MAP_NORESERVE, -1, 0));
    ASSERT_EQ(b, old);
    ++rounds;
    if (rounds % 200 == 0) {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
      bad = swap_but_mapped(a, bytes);
      if (bad) break;
    }
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  if (!bad) bad = swap_but_mapped(a, bytes);
  std::printf("%d moves; pages in swap yet mapped: %zu\n", rounds, bad);
  EXPECT_EQ(bad, 0u);
  EXPECT_TRUE(check_pattern(a, bytes, 32));
  EXPECT_EQ(umrt_validate(), UMRT_SUCCESS) << last_error();
  EXPECT_EQ(umrt_free(a), UMRT_SUCCESS) << last_error();
  munmap(b, bytes);
}
}  // namespace
#include <sys/statvfs.h>
namespace {
using namespace umrt_test;
class HBAdvTmpfsSwap : public HBAdv {
 protected:
  void SetUp() override {
    mkdir(dir_, 0700);
    if (mount("tmpfs", dir_, "tmpfs", 0, "size=256m") != 0) GTEST_SKIP() << "mount tmpfs: " << strerror(errno);
    mounted_ = true;
    setenv("UMRT_SWAP_DIR", dir_, 1);
    HBAdv::SetUp();
  }
  void TearDown() override {
    HBAdv::TearDown();
    unsetenv("UMRT_SWAP_DIR");
    if (mounted_) umount2(dir_, MNT_DETACH);
  }
  uint64_t used() const {
    struct statvfs v{};
    statvfs(dir_, &v);
    return (v.f_blocks - v.f_bfree) * v.f_frsize;
  }
  const char *dir_ = "/tmp/umrt-hb-swap";
  bool mounted_ = false;
};
TEST_F(HBAdvTmpfsSwap, PartialMunmapGivesSwapSpaceBack) {
  const size_t bytes = 48 * MiB;
  uint8_t *c = filled(bytes, 40);
  ASSERT_NE(c, nullptr);
  void *p = c;
  const size_t swapped = count_pages_at(c, 16 * MiB, UMRT_LOCATION_STORAGE);
  const uint64_t before = used();
  ASSERT_EQ(munmap(c, 16 * MiB), 0);
  umrt_stats st;
  umrt_get_stats(&st);  // an umrt call (zombies reaped)
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  const uint64_t after = used();
  std::printf("%zu swapped pages unmapped; swap file space %llu KiB -> %llu KiB\n", swapped,
              (unsigned long long)(before >> 10), (unsigned long long)(after >> 10));
  EXPECT_LT(after + swapped * kPage / 2, before + 1) << "the unmapped pages' swap space is still held";
  EXPECT_TRUE(check_pattern(c + 16 * MiB, bytes - 16 * MiB, 40, 16 * MiB));
  EXPECT_EQ(umrt_free(p), UMRT_SUCCESS);
  std::printf("after free: %llu KiB\n", (unsigned long long)(used() >> 10));
}

TEST_F(HBAdv, ShutdownWithFailingSwapReads) {
  const size_t bytes = 48 * MiB;
  void *p = nullptr;
  ASSERT_EQ(umrt_malloc(&p, bytes), UMRT_SUCCESS);
  fill_pattern(p, bytes, 41);
  settle();
  ASSERT_EQ(umrt_inject_failure(UMRT_INJECT_READ, 1, 1000000), UMRT_SUCCESS);
  umrt_status s = umrt_shutdown();
  std::printf("shutdown with failing swap reads: %s (%s)\n", str(s).c_str(), last_error());
  EXPECT_NE(s, UMRT_SUCCESS);
  if (s != UMRT_SUCCESS) {
    ASSERT_EQ(umrt_inject_failure(UMRT_INJECT_READ, 1, 1), UMRT_SUCCESS);  // one more, then none
    EXPECT_EQ(umrt_validate(), UMRT_SUCCESS) << last_error();
    umrt_status s2 = umrt_shutdown();
    if (s2 != UMRT_SUCCESS) s2 = umrt_shutdown();
    EXPECT_EQ(s2, UMRT_SUCCESS) << last_error();
  }
  EXPECT_TRUE(check_pattern(p, bytes, 41));
  EXPECT_EQ(umrt_free(p), UMRT_SUCCESS) << last_error();
}

TEST_F(HBAdv, SwapToDeviceIsCountedAsStorage) {
  const size_t bytes = 48 * MiB;
  uint8_t *c = filled(bytes, 42);
  ASSERT_NE(c, nullptr);
  void *p = c;
  ASSERT_TRUE(all_pages_at(c, kBlock, UMRT_LOCATION_STORAGE));
  const umrt_stats a = get_stats();
  ASSERT_EQ(umrt_prefetch(c, kBlock, UMRT_LOCATION_DEVICE, nullptr), UMRT_SUCCESS);
  const umrt_stats b = get_stats();
  std::printf("2 MiB swap -> device: bytes_to_device +%llu, pages_to_device +%llu, swap_ins +%llu\n",
              (unsigned long long)(b.bytes_to_device - a.bytes_to_device),
              (unsigned long long)(b.pages_to_device - a.pages_to_device), (unsigned long long)(b.swap_ins - a.swap_ins));
  // umrt.h: bytes_to_device counts copies from host memory; storage -> device is swap_ins and
  // bytes_from_storage.
  EXPECT_EQ(b.bytes_to_device - a.bytes_to_device, 0u);
  EXPECT_EQ(b.swap_ins - a.swap_ins, kBlock / kPage);
  EXPECT_GE(b.bytes_from_storage - a.bytes_from_storage, kBlock);
  EXPECT_TRUE(check_device_pattern(c, kBlock, 42));
  EXPECT_EQ(umrt_free(p), UMRT_SUCCESS);
}
}  // namespace
namespace {
using namespace umrt_test;
TEST_F(HBAdv, PartialMunmapStopsCountingThosePages) {
  void *p = nullptr;
  ASSERT_EQ(umrt_malloc(&p, 8 * MiB), UMRT_SUCCESS);
  fill_pattern(p, 8 * MiB, 43);
  const uint64_t h1 = get_stats().host_pages;
  ASSERT_EQ(munmap(static_cast<uint8_t *>(p) + 4 * MiB, 4 * MiB), 0);
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  const uint64_t h2 = get_stats().host_pages;
  std::printf("host_pages %llu -> %llu after unmapping 1024 of them\n", (unsigned long long)h1, (unsigned long long)h2);
  EXPECT_EQ(h2, h1 - 1024);
  EXPECT_EQ(umrt_free(p), UMRT_SUCCESS);
}
}  // namespace
namespace {
using namespace umrt_test;
class HBAdvNoBudget : public HBAdv {
 protected:
  void Configure(umrt_config &cfg) override { cfg.device_memory = 64 * MiB; }
};
TEST_F(HBAdvNoBudget, DiagSmallAllocationsBaseline) {
  constexpr size_t kSmall = 256 * KiB, kN = 128;
  std::vector<void *> v(kN);
  for (auto &q : v) ASSERT_EQ(umrt_malloc(&q, kSmall), UMRT_SUCCESS);
  const auto t0 = std::chrono::steady_clock::now();
  for (size_t k = 0; k < kN; ++k) fill_pattern(v[k], kSmall, 100 + k);
  std::printf("no budget: %.3f s\n", std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  for (auto q : v) EXPECT_EQ(umrt_free(q), UMRT_SUCCESS);
}
}  // namespace
