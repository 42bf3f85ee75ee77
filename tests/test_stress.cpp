// test_stress.cpp — bounded randomized stress (fixed seeds, a few seconds): several threads
// prefetching random spans both ways over oversubscribed device memory while reading and writing
// the pages they own on the CPU, with device-pointer writes in phases where residency is known.
// A shadow copy predicts every byte; the final contents are compared by checksum and memcmp, and
// umrt_validate() must hold. Runs on sim and, with UMRT_TEST_BACKEND=cuda (label gpu), on cuda
// (device-pointer accesses through dev_read/dev_write).
#include <gtest/gtest.h>
#include <umrt/umrt.h>

#include <atomic>
#include <barrier>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "test_util.h"

namespace {

using namespace umrt_test;
using Clock = std::chrono::steady_clock;

constexpr int kShared = 3;                    // shared allocations
constexpr size_t kSharedSize = 6 * MiB;       // 3 blocks each
constexpr size_t kPrivateSize = 2 * MiB;      // one block per thread
constexpr size_t kSharedPages = kSharedSize / kPage;
constexpr size_t kPrivatePages = kPrivateSize / kPage;
constexpr int kRounds = 8;

// The content of a page: 512 words determined by (global page id, version).
inline uint64_t page_word(uint64_t gpage, uint32_t version, size_t k) {
  return mix64(mix64(gpage * 0x9e3779b97f4a7c15ull + version) + k);
}
inline void write_page(uint8_t *p, uint64_t gpage, uint32_t version) {
  auto *w = reinterpret_cast<uint64_t *>(p);
  for (size_t k = 0; k < kPage / 8; ++k) w[k] = page_word(gpage, version, k);
}
inline bool page_ok(const uint8_t *p, uint64_t gpage, uint32_t version) {
  const auto *w = reinterpret_cast<const volatile uint64_t *>(p);
  for (size_t k = 0; k < kPage / 8; ++k)
    if (w[k] != page_word(gpage, version, k)) return false;
  return true;
}

class Stress : public UmrtTest {
 protected:
  void Configure(umrt_config &cfg) override { cfg.device_memory = 16 * MiB; }  // 8 chunks, 12 blocks
  bool ValidateAtEnd() const override { return true; }
  std::chrono::seconds TimeLimit() const override { return std::chrono::seconds(28); }
};

struct Counters {
  std::atomic<uint64_t> ops{0}, prefetch_failures{0}, bad_reads{0}, bad_device_reads{0},
      not_on_device{0}, location_failures{0};
  std::mutex mu;
  std::map<std::string, std::string> first;  // kind -> first problem of that kind
  void note(const std::string &kind, const std::string &s) {
    std::lock_guard<std::mutex> lk(mu);
    first.emplace(kind, s);
  }
  std::string of(const std::string &kind) {
    std::lock_guard<std::mutex> lk(mu);
    auto it = first.find(kind);
    return it == first.end() ? std::string() : "first: " + it->second;
  }
};

void random_ops_against_shadow(const int kThreads, bool oversubscribed) {
  std::vector<Managed> shared;
  for (int a = 0; a < kShared; ++a) {
    shared.emplace_back(kSharedSize);
    ASSERT_TRUE(shared.back());
  }
  std::vector<Managed> priv;
  for (int t = 0; t < kThreads; ++t) {
    priv.emplace_back(kPrivateSize);
    ASSERT_TRUE(priv.back());
  }
  // Shadow: the version of every page. Global page ids: shared a page p -> a*kSharedPages + p;
  // private t page p -> kShared*kSharedPages + t*kPrivatePages + p. Each entry is written only by
  // the page's owner thread (shared: gpage % kThreads; private: its thread).
  const size_t shared_total = kShared * kSharedPages;
  std::vector<uint32_t> version(shared_total + kThreads * kPrivatePages, 0);
  auto shared_gpage = [](int a, size_t p) { return a * kSharedPages + p; };
  auto private_gpage = [&](int t, size_t p) { return shared_total + t * kPrivatePages + p; };
  for (int a = 0; a < kShared; ++a)
    for (size_t p = 0; p < kSharedPages; ++p) write_page(shared[a] + p * kPage, shared_gpage(a, p), 0);
  for (int t = 0; t < kThreads; ++t)
    for (size_t p = 0; p < kPrivatePages; ++p) write_page(priv[t] + p * kPage, private_gpage(t, p), 0);

  Counters c;
  std::barrier sync(kThreads);
  auto phase_a = std::chrono::milliseconds(250);

  auto worker = [&](int t) {
    uint64_t x = 0x5eed0000 + t;
    auto rnd = [&x] { return x = mix64(x); };
    // Owned shared pages of this thread.
    std::vector<std::pair<int, size_t>> mine;
    for (int a = 0; a < kShared; ++a)
      for (size_t p = 0; p < kSharedPages; ++p)
        if (shared_gpage(a, p) % kThreads == static_cast<size_t>(t)) mine.emplace_back(a, p);

    for (int round = 0; round < kRounds; ++round) {
      // ---- phase A: random prefetches and CPU accesses on owned pages
      auto end = Clock::now() + phase_a;
      for (int op = 0; op < 3000 && Clock::now() < end; ++op) {
        ++c.ops;
        uint64_t r = rnd();
        switch (r % 10) {
          case 0: case 1: case 2: {  // prefetch a random span of a shared or the private allocation
            bool own = (r >> 8) % 4 == 0;
            const Managed &m = own ? priv[t] : shared[(r >> 12) % kShared];
            size_t off = (r >> 16) % m.bytes();
            size_t len = 1 + (rnd() % (4 * MiB));
            if (len > m.bytes() - off) len = m.bytes() - off;
            umrt_location to = (r >> 40) & 1 ? UMRT_LOCATION_DEVICE : UMRT_LOCATION_HOST;
            umrt_status s = umrt_prefetch(m + off, len, to, nullptr);
            if (s != UMRT_SUCCESS) {
              ++c.prefetch_failures;
              c.note("prefetch", "prefetch " + str(s) + ": " + last_error());
            }
            break;
          }
          case 3: case 4: case 5: {  // CPU write of an owned page
            if ((r >> 8) % 4 == 0) {
              size_t p = (r >> 16) % kPrivatePages;
              size_t g = private_gpage(t, p);
              write_page(priv[t] + p * kPage, g, ++version[g]);
            } else {
              auto [a, p] = mine[(r >> 16) % mine.size()];
              size_t g = shared_gpage(a, p);
              write_page(shared[a] + p * kPage, g, ++version[g]);
            }
            break;
          }
          case 6: case 7: case 8: {  // CPU read of an owned page
            const uint8_t *q;
            size_t g;
            if ((r >> 8) % 4 == 0) {
              size_t p = (r >> 16) % kPrivatePages;
              q = priv[t] + p * kPage;
              g = private_gpage(t, p);
            } else {
              auto [a, p] = mine[(r >> 16) % mine.size()];
              q = shared[a] + p * kPage;
              g = shared_gpage(a, p);
            }
            if (!page_ok(q, g, version[g])) {
              ++c.bad_reads;
              c.note("read", "thread " + std::to_string(t) + " round " + std::to_string(round) + ": page " +
                     std::to_string(g) + " does not hold version " + std::to_string(version[g]));
            }
            break;
          }
          default: {  // where is a random page (any page; just must answer)
            const Managed &m = shared[(r >> 8) % kShared];
            umrt_location l;
            if (umrt_page_location(m + (r >> 16) % m.bytes(), &l) != UMRT_SUCCESS) ++c.location_failures;
            break;
          }
        }
      }
      // ---- phase B: device-pointer writes on the private allocation, with residency known.
      sync.arrive_and_wait();
      if (t == 0)  // make room: the shared allocations go home, so nothing is evicted below
        for (int a = 0; a < kShared; ++a)
          if (umrt_prefetch(shared[a].get(), kSharedSize, UMRT_LOCATION_HOST, nullptr) != UMRT_SUCCESS) {
            ++c.prefetch_failures;
            c.note("prefetch", std::string("phase B prefetch home: ") + last_error());
          }
      sync.arrive_and_wait();
      if (umrt_prefetch(priv[t].get(), kPrivateSize, UMRT_LOCATION_DEVICE, nullptr) != UMRT_SUCCESS) {
        ++c.prefetch_failures;
        c.note("prefetch", std::string("phase B prefetch to device: ") + last_error());
      }
      sync.arrive_and_wait();
      void *dv = nullptr;
      if (umrt_device_pointer(priv[t].get(), &dv) != UMRT_SUCCESS) {
        c.note("device", std::string("device pointer: ") + last_error());
        ++c.not_on_device;
      } else {
        auto *d = static_cast<uint8_t *>(dv);
        std::vector<uint8_t> page(kPage);  // the kernel's view of one device page
        for (size_t p = 0; p < kPrivatePages; ++p) {
          umrt_location l;
          if (umrt_page_location(priv[t] + p * kPage, &l) != UMRT_SUCCESS || l != UMRT_LOCATION_DEVICE) {
            ++c.not_on_device;
            c.note("device", "private page " + std::to_string(p) + " of thread " + std::to_string(t) +
                   " not on the device after its prefetch");
            continue;
          }
          size_t g = private_gpage(t, p);
          if (auto ok = dev_read(page.data(), d + p * kPage, kPage); !ok) {
            ++c.bad_device_reads;
            c.note("devread", ok.message());
            continue;
          }
          if (!page_ok(page.data(), g, version[g])) {
            ++c.bad_device_reads;
            c.note("devread", "device copy of page " + std::to_string(g) + " does not hold version " +
                   std::to_string(version[g]));
          }
          if ((p + round) % 3 == 0) {  // the kernel
            write_page(page.data(), g, ++version[g]);
            if (auto ok = dev_write(d + p * kPage, page.data(), kPage); !ok) {
              ++c.bad_device_reads;
              c.note("devread", ok.message());
            }
          }
        }
      }
      sync.arrive_and_wait();  // no migration starts while a kernel writes
    }
  };

  std::vector<std::thread> ts;
  for (int t = 0; t < kThreads; ++t) ts.emplace_back(worker, t);
  for (auto &th : ts) th.join();

  EXPECT_EQ(c.prefetch_failures.load(), 0u) << c.of("prefetch");
  EXPECT_EQ(c.bad_reads.load(), 0u) << "CPU reads of owned pages that did not match the shadow; " << c.of("read");
  EXPECT_EQ(c.bad_device_reads.load(), 0u) << c.of("devread");
  EXPECT_EQ(c.not_on_device.load(), 0u) << c.of("device");
  EXPECT_EQ(c.location_failures.load(), 0u);
  EXPECT_EQ(umrt_validate(), UMRT_SUCCESS) << "after the threads: " << last_error();

  // Final check against the shadow: checksum of each allocation, then page by page.
  std::vector<uint8_t> expect(kSharedSize);
  for (int a = 0; a < kShared; ++a) {
    for (size_t p = 0; p < kSharedPages; ++p) {
      size_t g = shared_gpage(a, p);
      write_page(expect.data() + p * kPage, g, version[g]);
    }
    EXPECT_EQ(checksum(shared[a].get(), kSharedSize), checksum(expect.data(), kSharedSize)) << "shared " << a;
    for (size_t p = 0; p < kSharedPages; ++p)
      ASSERT_EQ(std::memcmp(shared[a] + p * kPage, expect.data() + p * kPage, kPage), 0)
          << "shared allocation " << a << " page " << p << " (version " << version[shared_gpage(a, p)] << ")";
  }
  for (int t = 0; t < kThreads; ++t) {
    for (size_t p = 0; p < kPrivatePages; ++p) {
      size_t g = private_gpage(t, p);
      write_page(expect.data() + p * kPage, g, version[g]);
    }
    EXPECT_EQ(checksum(priv[t].get(), kPrivateSize), checksum(expect.data(), kPrivateSize)) << "private " << t;
    for (size_t p = 0; p < kPrivatePages; ++p)
      ASSERT_EQ(std::memcmp(priv[t] + p * kPage, expect.data() + p * kPage, kPage), 0)
          << "private allocation " << t << " page " << p;
  }
  umrt_stats s = get_stats();
  if (oversubscribed) {
    EXPECT_GT(s.evictions, 0u) << "the test is meant to oversubscribe device memory";
  } else {
    EXPECT_EQ(s.evictions, 0u);
  }
  EXPECT_GT(s.cpu_faults, 0u);
  EXPECT_LE(s.device_bytes_in_use, s.device_capacity);
  ::testing::Test::RecordProperty("ops", std::to_string(c.ops.load()));
  ::testing::Test::RecordProperty("evictions", std::to_string(s.evictions));
  ::testing::Test::RecordProperty("skipped_locked", std::to_string(s.pages_skipped_locked));
}

// One thread: deterministic (fixed seed, no races between threads), easiest to debug.
TEST_F(Stress, RandomOpsSingleThread) { random_ops_against_shadow(1, true); }

// Three threads racing each other's prefetches over the pages they own.
TEST_F(Stress, RandomOpsAgainstShadow) { random_ops_against_shadow(3, true); }

// The same without oversubscription (everything fits): separates eviction from the rest.
class StressRoomy : public Stress {
 protected:
  void Configure(umrt_config &cfg) override { cfg.device_memory = 64 * MiB; }
};
TEST_F(StressRoomy, RandomOpsAgainstShadow) { random_ops_against_shadow(3, false); }

// Three threads, each round-tripping its own small (packed) allocations: CPU fill, prefetch to the
// device, CPU read back. No page is shared between threads, so every read must see its own data.
TEST_F(Stress, SmallAllocationsRoundTrip) {
  constexpr int kThreads = 3, kIters = 300;
  const size_t size = 40000;  // 10 pages: packed
  std::atomic<uint64_t> bad{0};
  std::mutex mu;
  std::string first;
  std::vector<std::thread> ts;
  for (int t = 0; t < kThreads; ++t)
    ts.emplace_back([&, t] {
      std::vector<void *> keep;
      for (int i = 0; i < kIters; ++i) {
        void *p = nullptr;
        if (umrt_malloc(&p, size) != UMRT_SUCCESS) {
          ++bad;
          break;
        }
        keep.push_back(p);
        uint64_t seed = uint64_t(t) * 100000 + i;
        fill_pattern(p, size, seed);
        umrt_status s = umrt_prefetch(p, size, UMRT_LOCATION_DEVICE, nullptr);
        auto ok = check_pattern(p, size, seed);
        if (s != UMRT_SUCCESS || !ok) {
          umrt_location l = UMRT_LOCATION_HOST;
          umrt_page_location(p, &l);
          std::lock_guard<std::mutex> lk(mu);
          if (bad++ == 0)
            first = "thread " + std::to_string(t) + " iteration " + std::to_string(i) + ": prefetch " +
                    str(s) + ", read back: " + ok.message() + " (page 0 now " +
                    (l == UMRT_LOCATION_DEVICE ? "DEVICE" : "HOST") + ")";
        }
      }
      for (void *p : keep) umrt_free(p);
    });
  for (auto &th : ts) th.join();
  EXPECT_EQ(bad.load(), 0u) << first;
  EXPECT_EQ(umrt_validate(), UMRT_SUCCESS) << last_error();
}

// Many threads allocating, prefetching and freeing small and large allocations concurrently while
// others fault: the range table and device memory stay consistent.
TEST_F(Stress, ConcurrentAllocFree) {
  std::atomic<uint64_t> problems{0};
  std::mutex mu;
  std::string first;
  auto note = [&](const std::string &s) {
    ++problems;
    std::lock_guard<std::mutex> lk(mu);
    if (first.empty()) first = s;
  };
  std::vector<std::thread> ts;
  for (int t = 0; t < 3; ++t)
    ts.emplace_back([&, t] {
      uint64_t x = 777 + t;
      auto end = Clock::now() + std::chrono::milliseconds(1200);
      for (int i = 0; i < 400 && Clock::now() < end; ++i) {
        x = mix64(x);
        size_t size = (x & 7) == 0 ? 2 * MiB + (x >> 8) % MiB : 1 + (x >> 8) % (64 * KiB);
        void *p = nullptr;
        if (umrt_malloc(&p, size) != UMRT_SUCCESS) {
          note(std::string("malloc: ") + last_error());
          continue;
        }
        uint64_t seed = (uint64_t(t) << 32) | i;
        fill_pattern(p, size, seed);
        if (umrt_prefetch(p, size, UMRT_LOCATION_DEVICE, nullptr) != UMRT_SUCCESS)
          note(std::string("prefetch: ") + last_error());
        if ((x >> 40) & 1) {
          auto ok = check_pattern(p, size, seed);
          if (!ok) {
            umrt_location l = UMRT_LOCATION_HOST;
            umrt_page_location(p, &l);
            note("thread " + std::to_string(t) + " iteration " + std::to_string(i) + ", " +
                 std::to_string(size) + "-byte allocation: data wrong after faulting back: " +
                 ok.message() + " (page 0 now " + (l == UMRT_LOCATION_DEVICE ? "DEVICE" : "HOST") + ")");
          }
        } else {
          void *d = nullptr;
          if (umrt_device_pointer(p, &d) != UMRT_SUCCESS) note("device pointer");
        }
        if (umrt_free(p) != UMRT_SUCCESS) note(std::string("free: ") + last_error());
      }
    });
  for (auto &th : ts) th.join();
  EXPECT_EQ(problems.load(), 0u) << first;
  EXPECT_EQ(get_stats().device_bytes_in_use, 0u);
}

}  // namespace
