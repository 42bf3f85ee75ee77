// test_scale.cpp — costs that must grow with what is used, not with what is reserved or counted
// (issue "Scale"): a huge reservation costs no memory until touched and works where touched,
// many small allocations share mappings and device packs, and a freed slot is reused. Resource
// counts (resident memory, mappings, device bytes), never times: speed lives in umrt-bench scale.
// Written against umrt.h only.
#include <dirent.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <thread>

#include <cstring>
#include <fstream>
#include <set>
#include <string>
#include <vector>

#include "test_util.h"

using namespace umrt_test;

namespace {

// A field of /proc/self/status in KiB (VmRSS: resident now; VmHWM: peak since reset_peak_rss).
long status_kib(const char *field) {
  std::ifstream f("/proc/self/status");
  std::string l;
  while (std::getline(f, l))
    if (l.rfind(field, 0) == 0) return std::stol(l.substr(std::strlen(field)));
  return -1;
}
long rss_kib() { return status_kib("VmRSS:"); }
long peak_rss_kib() { return status_kib("VmHWM:"); }
// Writing 5 to clear_refs resets the peak resident set.
bool reset_peak_rss() {
  std::ofstream f("/proc/self/clear_refs");
  f << "5";
  f.flush();
  return bool(f);
}

long mapping_count() {
  std::ifstream f("/proc/self/maps");
  std::string l;
  long n = 0;
  while (std::getline(f, l)) ++n;
  return n;
}

// Resident-memory limits: sanitizer builds add shadow memory for every byte touched (TSan about
// four times, ASan an eighth plus redzones), so their limits are 8 times larger, still far below
// the 2 GiB of page state a 1 TiB reservation cost before.
constexpr long kRssLimitKiB = 16 * 1024 * (kSlowdown > 1 ? 8 : 1);

class Scale : public UmrtTest {
 protected:
  bool ValidateAtEnd() const override { return true; }
  std::chrono::seconds TimeLimit() const override { return std::chrono::seconds(120); }
};

// 1 TiB reserved: no page state up front (it was 2 GiB of resident memory), and the pages
// touched far apart behave like any others (fault, device and back, validate, free).
TEST_F(Scale, HugeReservationCostsWhatIsTouched) {
  const size_t bytes = size_t{1} << 40;
  const long before = rss_kib();
  void *p = nullptr;
  ASSERT_EQ(umrt_malloc(&p, bytes), UMRT_SUCCESS) << last_error();
  const long after = rss_kib();
  EXPECT_LT(after - before, 1024) << "umrt_malloc(1 TiB) grew the resident set by " << (after - before) << " KiB";
  auto *b = static_cast<uint8_t *>(p);
  // Three places far apart: the first page, the middle, the last page.
  const size_t at[] = {0, bytes / 2 + 12345 * kPage, bytes - kPage};
  for (size_t i = 0; i < 3; ++i) fill_pattern(b + at[i], kPage, 40 + i);
  ASSERT_EQ(umrt_prefetch(b + at[1], 2 * MiB, UMRT_LOCATION_DEVICE, nullptr), UMRT_SUCCESS) << last_error();
  EXPECT_TRUE(all_pages_at(b + at[1], 2 * MiB, UMRT_LOCATION_DEVICE));
  ASSERT_EQ(umrt_prefetch(b + at[2], kPage, UMRT_LOCATION_DEVICE, nullptr), UMRT_SUCCESS) << last_error();
  EXPECT_EQ(umrt_validate(), UMRT_SUCCESS) << last_error();
  for (size_t i = 0; i < 3; ++i) EXPECT_TRUE(check_pattern(b + at[i], kPage, 40 + i)) << "place " << i;
  EXPECT_TRUE(check_zero(b + at[1] + kPage, kPage));  // untouched, next to a touched page
  EXPECT_LT(rss_kib() - before, kRssLimitKiB) << "touching three places of 1 TiB cost more than " << kRssLimitKiB << " KiB";
  // A prefetch to host of the whole reservation only visits what was used.
  ASSERT_EQ(umrt_prefetch(b, bytes, UMRT_LOCATION_HOST, nullptr), UMRT_SUCCESS) << last_error();
  EXPECT_TRUE(all_pages_at(b + at[1], 2 * MiB, UMRT_LOCATION_HOST));
  EXPECT_LT(rss_kib() - before, kRssLimitKiB) << "a to-host prefetch of 1 TiB made page state for all of it";
  EXPECT_EQ(umrt_validate(), UMRT_SUCCESS) << last_error();
  EXPECT_EQ(umrt_free(p), UMRT_SUCCESS) << last_error();
}

// Shutdown with a huge reservation holding device pages: they come home, untouched blocks are
// not visited (no page state made for them).
TEST_F(Scale, ShutdownWithAHugeReservation) {
  const size_t bytes = size_t{1} << 40;
  void *p = nullptr;
  ASSERT_EQ(umrt_malloc(&p, bytes), UMRT_SUCCESS) << last_error();
  auto *b = static_cast<uint8_t *>(p);
  const size_t mid = bytes / 2;
  fill_pattern(b + mid, 4 * kPage, 44);
  ASSERT_EQ(umrt_prefetch(b + mid, 4 * kPage, UMRT_LOCATION_DEVICE, nullptr), UMRT_SUCCESS) << last_error();
  const long before = rss_kib();
  if (!reset_peak_rss()) GTEST_SKIP() << "cannot reset the peak resident set (/proc/self/clear_refs)";
  ASSERT_EQ(umrt_shutdown(), UMRT_SUCCESS) << last_error();
  EXPECT_LT(peak_rss_kib() - before, kRssLimitKiB) << "shutdown made page state for every block of 1 TiB";
  EXPECT_TRUE(check_pattern(b + mid, 4 * kPage, 44));  // plain host memory now
  EXPECT_EQ(umrt_free(p), UMRT_SUCCESS) << last_error();  // unmaps what shutdown left
  initialised_ = false;
}

// The user munmap()s a huge reservation with a few pages used: umrt forgets it without page
// state for the pages never used.
TEST_F(Scale, MunmapOfAHugeReservation) {
  const size_t bytes = size_t{1} << 40;
  void *p = nullptr;
  ASSERT_EQ(umrt_malloc(&p, bytes), UMRT_SUCCESS) << last_error();
  auto *b = static_cast<uint8_t *>(p);
  fill_pattern(b + bytes / 3, 8 * kPage, 45);
  ASSERT_EQ(umrt_prefetch(b + bytes / 3, 4 * kPage, UMRT_LOCATION_DEVICE, nullptr), UMRT_SUCCESS) << last_error();
  const long before = rss_kib();
  if (!reset_peak_rss()) GTEST_SKIP() << "cannot reset the peak resident set (/proc/self/clear_refs)";
  ASSERT_EQ(munmap(p, bytes), 0) << strerror(errno);
  EXPECT_EQ(umrt_free(p), UMRT_ERROR_INVALID_VALUE) << "a munmap()ed range is still known";
  EXPECT_LT(peak_rss_kib() - before, kRssLimitKiB) << "the munmap made page state for every page of 1 TiB";
  EXPECT_EQ(umrt_validate(), UMRT_SUCCESS) << last_error();
  umrt_stats st{};
  ASSERT_EQ(umrt_get_stats(&st), UMRT_SUCCESS) << last_error();
  EXPECT_EQ(st.device_bytes_in_use, 0u) << "its device memory was not given back";
}

// 100,000 small allocations: the kernel merges their mappings (same flags, same userfaultfd),
// so the mapping count stays far below the count of allocations (the default limit is 65530
// mappings per process), and they share device packs.
TEST_F(Scale, ManySmallAllocationsShareMappingsAndPacks) {
  constexpr size_t kCount = 100000;
  const long maps0 = mapping_count();
  std::vector<void *> v(kCount, nullptr);
  for (size_t i = 0; i < kCount; ++i) {
    ASSERT_EQ(umrt_malloc(&v[i], 1 + i % (3 * kPage)), UMRT_SUCCESS) << "allocation " << i << ": " << last_error();
    if (i % 997 == 0) static_cast<uint8_t *>(v[i])[0] = static_cast<uint8_t>(i);
  }
  const long maps1 = mapping_count();
  EXPECT_LT(maps1 - maps0, static_cast<long>(kCount / 20)) << "mappings grew from " << maps0 << " to " << maps1;
  // Their device addresses are distinct and linear per allocation.
  void *d0 = nullptr, *d1 = nullptr;
  ASSERT_EQ(umrt_device_pointer(v[0], &d0), UMRT_SUCCESS) << last_error();
  ASSERT_EQ(umrt_device_pointer(v[1], &d1), UMRT_SUCCESS) << last_error();
  EXPECT_NE(d0, d1);
  for (size_t i = 0; i < kCount; i += 997) EXPECT_EQ(static_cast<uint8_t *>(v[i])[0], static_cast<uint8_t>(i));
  EXPECT_EQ(umrt_validate(), UMRT_SUCCESS) << last_error();
  for (void *p : v) ASSERT_EQ(umrt_free(p), UMRT_SUCCESS) << last_error();
}

// A freed slot in a pack is found again: allocate, free every other one, allocate the same
// size again: each new allocation takes one of the freed slots (device addresses seen before),
// never a new pack.
TEST_F(Scale, FreedPackSlotsAreReused) {
  constexpr size_t kCount = 2048;  // 4 packs of 512 one-page slots
  std::vector<void *> v(kCount, nullptr);
  std::set<uintptr_t> freed;
  for (size_t i = 0; i < kCount; ++i) ASSERT_EQ(umrt_malloc(&v[i], kPage), UMRT_SUCCESS) << last_error();
  for (size_t i = 0; i < kCount; i += 2) {
    void *d = nullptr;
    ASSERT_EQ(umrt_device_pointer(v[i], &d), UMRT_SUCCESS) << last_error();
    freed.insert(reinterpret_cast<uintptr_t>(d));
    ASSERT_EQ(umrt_free(v[i]), UMRT_SUCCESS) << last_error();
  }
  for (size_t i = 0; i < kCount; i += 2) {
    ASSERT_EQ(umrt_malloc(&v[i], kPage), UMRT_SUCCESS) << last_error();
    void *d = nullptr;
    ASSERT_EQ(umrt_device_pointer(v[i], &d), UMRT_SUCCESS) << last_error();
    EXPECT_EQ(freed.erase(reinterpret_cast<uintptr_t>(d)), 1u) << "allocation " << i << " did not take a freed slot";
  }
  EXPECT_EQ(umrt_validate(), UMRT_SUCCESS) << last_error();
  for (void *p : v) ASSERT_EQ(umrt_free(p), UMRT_SUCCESS) << last_error();
}

// Bytes the sim backend's device arena (a memfd) holds now, or -1 if not found.
long long sim_arena_bytes() {
  DIR *d = opendir("/proc/self/fd");
  if (!d) return -1;
  long long bytes = -1;
  while (dirent *e = readdir(d)) {
    char link[256] = {};
    const std::string path = std::string("/proc/self/fd/") + e->d_name;
    if (readlink(path.c_str(), link, sizeof link - 1) <= 0) continue;
    if (std::string(link).find("memfd:umrt-sim-arena") == std::string::npos) continue;
    struct stat st {};
    if (stat(path.c_str(), &st) == 0) bytes = static_cast<long long>(st.st_blocks) * 512;
  }
  closedir(d);
  return bytes;
}

class DevicePool : public Scale {
 protected:
  void Configure(umrt_config &cfg) override {
    cfg.device_memory = 64 * MiB;
    cfg.device_pool = 16 * MiB;
  }
};

// Released device memory is kept ready up to the pool's watermark (sim: the arena keeps those
// pages) and reused before fresh chunks; past the watermark it goes back to the system.
TEST_F(DevicePool, KeepsReleasedChunksUpToItsWatermark) {
  if (on_cuda()) GTEST_SKIP() << "reads the sim arena's allocation";
  ASSERT_EQ(sim_arena_bytes(), 0) << "arena not found, or not empty at start";
  void *a = nullptr;
  ASSERT_EQ(umrt_malloc(&a, 32 * MiB), UMRT_SUCCESS) << last_error();
  fill_pattern(a, 32 * MiB, 60);
  ASSERT_EQ(umrt_prefetch(a, 32 * MiB, UMRT_LOCATION_DEVICE, nullptr), UMRT_SUCCESS) << last_error();
  EXPECT_GE(sim_arena_bytes(), 32ll * MiB) << "device pages without arena memory";
  ASSERT_EQ(umrt_free(a), UMRT_SUCCESS) << last_error();
  EXPECT_EQ(sim_arena_bytes(), 16ll * MiB) << "the pool should keep exactly its 16 MiB";
  void *b = nullptr;
  ASSERT_EQ(umrt_malloc(&b, 16 * MiB), UMRT_SUCCESS) << last_error();
  fill_pattern(b, 16 * MiB, 61);
  ASSERT_EQ(umrt_prefetch(b, 16 * MiB, UMRT_LOCATION_DEVICE, nullptr), UMRT_SUCCESS) << last_error();
  EXPECT_EQ(sim_arena_bytes(), 16ll * MiB) << "a new allocation took fresh chunks instead of the pool's";
  EXPECT_TRUE(check_pattern(b, 16 * MiB, 61));
  EXPECT_EQ(umrt_validate(), UMRT_SUCCESS) << last_error();
  ASSERT_EQ(umrt_free(b), UMRT_SUCCESS) << last_error();
}

class NoDevicePool : public DevicePool {
 protected:
  void Configure(umrt_config &cfg) override {
    cfg.device_memory = 64 * MiB;
    cfg.device_pool = 1;  // below one chunk: none kept
  }
};

TEST_F(NoDevicePool, GivesEveryReleasedChunkBack) {
  if (on_cuda()) GTEST_SKIP() << "reads the sim arena's allocation";
  void *a = nullptr;
  ASSERT_EQ(umrt_malloc(&a, 8 * MiB), UMRT_SUCCESS) << last_error();
  fill_pattern(a, 8 * MiB, 62);
  ASSERT_EQ(umrt_prefetch(a, 8 * MiB, UMRT_LOCATION_DEVICE, nullptr), UMRT_SUCCESS) << last_error();
  EXPECT_GE(sim_arena_bytes(), 8ll * MiB);
  ASSERT_EQ(umrt_free(a), UMRT_SUCCESS) << last_error();
  EXPECT_EQ(sim_arena_bytes(), 0) << "released chunks kept although the pool is off";
}

// Threads of this process named `name` (their TIDs), from /proc/self/task/*/comm.
std::set<long> threads_named(const std::string &name) {
  std::set<long> out;
  DIR *d = opendir("/proc/self/task");
  if (!d) return out;
  while (dirent *e = readdir(d)) {
    if (e->d_name[0] == '.') continue;
    std::ifstream f(std::string("/proc/self/task/") + e->d_name + "/comm");
    std::string comm;
    if (std::getline(f, comm) && comm == name) out.insert(std::stol(e->d_name));
  }
  closedir(d);
  return out;
}

// Multi-block prefetches run their second lane on threads that live for the runtime: the same
// lane threads before, during and after, from any number of callers at once (no thread made
// per call, as the old std::thread per span did).
TEST_F(Scale, PrefetchLanesAreThreadsOfTheRuntime) {
  const std::set<long> lanes = threads_named("umrt-lane");
  ASSERT_FALSE(lanes.empty()) << "no umrt-lane thread right after umrt_init";
  constexpr int kCallers = 3;  // one more than lane threads: the third runs its lanes itself
  const size_t bytes = 8 * MiB;
  std::vector<void *> p(kCallers, nullptr);
  for (int i = 0; i < kCallers; ++i) {
    ASSERT_EQ(umrt_malloc(&p[i], bytes), UMRT_SUCCESS) << last_error();
    fill_pattern(p[i], bytes, 50 + i);
  }
  std::atomic<int> failures{0};
  std::atomic<bool> done{false};
  std::set<long> seen_during;
  std::thread watcher([&] {
    while (!done.load()) {
      for (long t : threads_named("umrt-lane")) seen_during.insert(t);
      std::this_thread::sleep_for(std::chrono::microseconds(200));
    }
  });
  std::vector<std::thread> callers;
  for (int i = 0; i < kCallers; ++i)
    callers.emplace_back([&, i] {
      for (int round = 0; round < 8; ++round) {
        const umrt_location to = round % 2 ? UMRT_LOCATION_HOST : UMRT_LOCATION_DEVICE;
        if (umrt_prefetch(p[i], bytes, to, nullptr) != UMRT_SUCCESS) failures.fetch_add(1);
      }
    });
  for (auto &t : callers) t.join();
  done = true;
  watcher.join();
  EXPECT_EQ(failures.load(), 0) << last_error();
  EXPECT_EQ(threads_named("umrt-lane"), lanes) << "the lane threads changed";
  EXPECT_EQ(seen_during, lanes) << "a lane thread was made for a call";
  for (int i = 0; i < kCallers; ++i) {
    EXPECT_TRUE(check_pattern(p[i], bytes, 50 + i));
    EXPECT_EQ(umrt_free(p[i]), UMRT_SUCCESS) << last_error();
  }
}

// ---- the fault service on several threads ----------------------------------------------------

class ParallelFaults : public Scale {
 protected:
  void Configure(umrt_config &cfg) override {
    cfg.fault_threads = 2;
    cfg.copy_threads = 1;
    cfg.sim_latency_us = 600'000;  // each copy (a fault's batch) takes 0.6 s
    cfg.device_memory = 64 * MiB;
  }
};

// Two CPU threads fault on device pages of two different blocks, the second while the first
// one's batch is still copying: with two fault threads the second is served at once, not after
// the first (one thread: ~1.2 s for the second; two: ~0.7 s). Margins are wide (0.3 s).
TEST_F(ParallelFaults, FaultsOfDifferentBlocksAreServedConcurrently) {
  void *p = nullptr;
  ASSERT_EQ(umrt_malloc(&p, 4 * MiB), UMRT_SUCCESS) << last_error();
  auto *b = static_cast<uint8_t *>(p);
  fill_pattern(b, 4 * MiB, 70);
  // One page of each block on the device (one copy each: 0.6 s).
  ASSERT_EQ(umrt_prefetch(b, kPage, UMRT_LOCATION_DEVICE, nullptr), UMRT_SUCCESS) << last_error();
  ASSERT_EQ(umrt_prefetch(b + 2 * MiB, kPage, UMRT_LOCATION_DEVICE, nullptr), UMRT_SUCCESS) << last_error();
  using Clock = std::chrono::steady_clock;
  const auto t0 = Clock::now();
  std::atomic<double> first_done{0}, second_done{0};
  std::thread r1([&] {
    volatile uint8_t v = b[10];
    (void)v;
    first_done = std::chrono::duration<double>(Clock::now() - t0).count();
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  std::thread r2([&] {
    volatile uint8_t v = b[2 * MiB + 10];
    (void)v;
    second_done = std::chrono::duration<double>(Clock::now() - t0).count();
  });
  r1.join();
  r2.join();
  EXPECT_GE(first_done.load(), 0.55) << "the latency setting did not slow the copy down";
  EXPECT_LT(second_done.load(), 1.0) << "the second fault waited for the first (served at "
                                      << second_done.load() << " s, the first at " << first_done.load() << " s)";
  EXPECT_TRUE(check_pattern(b, 4 * MiB, 70));
  EXPECT_EQ(umrt_free(p), UMRT_SUCCESS) << last_error();
}

class ManyFaultThreads : public Scale {
 protected:
  void Configure(umrt_config &cfg) override {
    cfg.fault_threads = 4;
    cfg.device_memory = 16 * MiB;  // 32 MiB of data: faults and evictions interleave
  }
};

// Eight CPU threads read and write pages all over 32 MiB (half of it on the device at any time,
// prefetches pushing blocks back) while four fault threads serve them: every byte stays right.
TEST_F(ManyFaultThreads, ReadersAndWritersOnManyBlocksKeepEveryByte) {
  const size_t bytes = 32 * MiB;
  void *p = nullptr;
  ASSERT_EQ(umrt_malloc(&p, bytes), UMRT_SUCCESS) << last_error();
  auto *b = static_cast<uint8_t *>(p);
  // Page i holds the byte (i * 7 + round) everywhere; each thread owns the pages i % 8 == t.
  constexpr int kThreads = 8, kRounds = 6;
  const size_t pages = bytes / kPage;
  std::atomic<int> bad{0};
  std::vector<std::thread> ts;
  for (int t = 0; t < kThreads; ++t)
    ts.emplace_back([&, t] {
      for (int round = 0; round < kRounds; ++round) {
        for (size_t i = static_cast<size_t>(t); i < pages; i += kThreads) {
          uint8_t *pg = b + i * kPage;
          const uint8_t want = round ? static_cast<uint8_t>(i * 7 + round - 1) : 0;
          if (pg[0] != want || pg[kPage - 1] != want) bad.fetch_add(1);
          std::memset(pg, static_cast<uint8_t>(i * 7 + round), kPage);
        }
        if (t == 0) umrt_prefetch(b, bytes / 2, UMRT_LOCATION_DEVICE, nullptr);
        if (t == 1) umrt_prefetch(b + bytes / 2, bytes / 2, UMRT_LOCATION_DEVICE, nullptr);
      }
    });
  for (auto &th : ts) th.join();
  EXPECT_EQ(bad.load(), 0) << "pages read back wrong";
  for (size_t i = 0; i < pages; i += 97)
    EXPECT_EQ(b[i * kPage + 123], static_cast<uint8_t>(i * 7 + kRounds - 1)) << "page " << i;
  EXPECT_EQ(umrt_validate(), UMRT_SUCCESS) << last_error();
  EXPECT_EQ(umrt_free(p), UMRT_SUCCESS) << last_error();
}

}  // namespace
