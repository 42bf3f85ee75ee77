// test_oversub.cpp — oversubscription of device memory (eviction of least recently used blocks
// back to the host), prefetching a span larger than device memory in one call, packing of small
// allocations, and many allocate/free cycles. Runs on sim and, with UMRT_TEST_BACKEND=cuda (label
// gpu), on cuda (device copies read and written with dev_read/dev_write).
#include <gtest/gtest.h>
#include <umrt/umrt.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <mutex>
#include <string>
#include <thread>
#include <cstdint>
#include <cstring>
#include <vector>

#include "test_util.h"

namespace {

using namespace umrt_test;

class Oversub : public UmrtTest {
 protected:
  void Configure(umrt_config &cfg) override { cfg.device_memory = 32 * MiB; }
  bool ValidateAtEnd() const override { return true; }
};

// One span 4x the device memory in a single call: block by block, evicting earlier blocks of the
// same call; it succeeds, only the tail is on the device, all data exact.
TEST_F(Oversub, OneSpanFourTimesDeviceMemory) {
  const size_t size = 128 * MiB;
  Managed m(size);
  ASSERT_TRUE(m);
  fill_pattern(m.get(), size, 1);
  ASSERT_EQ(umrt_prefetch(m.get(), size, UMRT_LOCATION_DEVICE, nullptr), UMRT_SUCCESS) << last_error();
  umrt_stats s = get_stats();
  EXPECT_GT(s.evictions, 0u);
  EXPECT_GE(s.evictions, (size - s.device_capacity) / kBlock);
  EXPECT_LE(s.device_bytes_in_use, s.device_capacity);
  EXPECT_EQ(s.device_capacity, 32 * MiB);
  // The span runs in two lanes (even and odd blocks, docs/design.md "Two lanes for long spans"):
  // each lane's last block is among the last moved, so at least one of the two stays on the
  // device (which one depends on which lane finished last: a lagging lane evicts the other's).
  const size_t last = size - kBlock, second = size - 2 * kBlock;
  const bool last_on = location_of(m + last) == UMRT_LOCATION_DEVICE;
  const bool second_on = location_of(m + second) == UMRT_LOCATION_DEVICE;
  EXPECT_TRUE(last_on || second_on) << "neither lane's last block stayed on the device";
  EXPECT_EQ(location_of(m.get()), UMRT_LOCATION_HOST) << "the head was evicted";
  size_t on_dev = count_pages_at(m.get(), size, UMRT_LOCATION_DEVICE);
  EXPECT_LE(on_dev * kPage, s.device_capacity);
  EXPECT_GT(on_dev, 0u);
  // That block's device copy is exact.
  if (last_on || second_on) {
    const size_t at = last_on ? last : second;
    EXPECT_TRUE(check_device_pattern(m + at, kBlock, 1, at));
  }
  EXPECT_TRUE(check_pattern(m.get(), size, 1));
  EXPECT_EQ(umrt_validate(), UMRT_SUCCESS) << last_error();
}

// Block by block: each block is fully on the device right after its prefetch.
TEST_F(Oversub, BlockByBlock) {
  const size_t size = 128 * MiB, nblocks = size / kBlock;
  Managed m(size);
  ASSERT_TRUE(m);
  fill_pattern(m.get(), size, 2);
  for (size_t b = 0; b < nblocks; ++b) {
    ASSERT_EQ(umrt_prefetch(m + b * kBlock, kBlock, UMRT_LOCATION_DEVICE, nullptr), UMRT_SUCCESS)
        << "block " << b << ": " << last_error();
    ASSERT_TRUE(all_pages_at(m + b * kBlock, kBlock, UMRT_LOCATION_DEVICE)) << "block " << b;
    ASSERT_LE(get_stats().device_bytes_in_use, 32 * MiB);
    if (b % 8 == 0) {
      ASSERT_TRUE(check_device_pattern(m + b * kBlock, kBlock, 2, b * kBlock)) << "block " << b;
    }
  }
  umrt_stats s = get_stats();
  EXPECT_GE(s.evictions, nblocks - 16);
  // The most recent 16 blocks fill the device (LRU): the last block and the one before are there.
  EXPECT_TRUE(all_pages_at(m + (size - 2 * kBlock), 2 * kBlock, UMRT_LOCATION_DEVICE));
  EXPECT_TRUE(check_pattern(m.get(), size, 2));
}

// Several allocations cycled through the device, each modified through its device pointer while
// it is resident: evictions carry device-written data home.
TEST_F(Oversub, AllocationsCycling) {
  constexpr int kAllocs = 6, kRounds = 5;
  const size_t size = 8 * MiB;  // 48 MiB in all, 32 MiB of device memory
  std::vector<Managed> ms;
  for (int a = 0; a < kAllocs; ++a) {
    ms.emplace_back(size);
    ASSERT_TRUE(ms.back());
    fill_pattern(ms.back().get(), size, a);  // round 0
  }
  for (int r = 1; r <= kRounds; ++r) {
    for (int a = 0; a < kAllocs; ++a) {
      SCOPED_TRACE("round " + std::to_string(r) + " allocation " + std::to_string(a));
      ASSERT_EQ(umrt_prefetch(ms[a].get(), size, UMRT_LOCATION_DEVICE, nullptr), UMRT_SUCCESS) << last_error();
      ASSERT_TRUE(all_pages_at(ms[a].get(), size, UMRT_LOCATION_DEVICE));
      ASSERT_TRUE(check_device_pattern(ms[a].get(), size, 1000 * (r - 1) + a)) << "device copy before the kernel";
      ASSERT_TRUE(fill_device_pattern(ms[a].get(), size, 1000 * r + a));  // the kernel
    }
  }
  umrt_stats s = get_stats();
  EXPECT_GT(s.evictions, 0u);
  EXPECT_LE(s.device_bytes_in_use, s.device_capacity);
  for (int a = 0; a < kAllocs; ++a)
    EXPECT_TRUE(check_pattern(ms[a].get(), size, 1000 * kRounds + a)) << "allocation " << a;
}

// Eviction under concurrency, with no CPU access to managed memory at all (no faults): two
// threads prefetch blocks of their own allocations to the device and back, each needing chunks
// the other holds. Every call succeeds, device memory accounting stays consistent, data exact.
class OversubTiny : public UmrtTest {
 protected:
  void Configure(umrt_config &cfg) override { cfg.device_memory = 8 * MiB; }  // 4 chunks
  bool ValidateAtEnd() const override { return true; }
};

TEST_F(OversubTiny, ConcurrentPrefetchesEvicting) {
  constexpr int kThreads = 2;
  const size_t size = 8 * MiB;  // 4 blocks per thread, 8 blocks for 4 chunks
  std::vector<Managed> ms;
  for (int t = 0; t < kThreads; ++t) {
    ms.emplace_back(size);
    ASSERT_TRUE(ms.back());
    fill_pattern(ms.back().get(), size, 50 + t);
  }
  // Settle the first-touch faults before the race starts.
  for (int t = 0; t < kThreads; ++t)
    ASSERT_EQ(umrt_prefetch(ms[t].get(), size, UMRT_LOCATION_HOST, nullptr), UMRT_SUCCESS) << last_error();
  std::atomic<int> failures{0};
  std::mutex mu;
  std::string first;
  std::vector<std::thread> ts;
  for (int t = 0; t < kThreads; ++t)
    ts.emplace_back([&, t] {
      uint64_t x = 31 + t;
      auto end = std::chrono::steady_clock::now() + std::chrono::milliseconds(800);
      for (int i = 0; i < 2000 && std::chrono::steady_clock::now() < end; ++i) {
        x = mix64(x);
        size_t b = x % (size / kBlock);
        size_t nb = 1 + (x >> 8) % 2;
        if (b + nb > size / kBlock) nb = 1;
        umrt_location to = (x >> 20) % 3 ? UMRT_LOCATION_DEVICE : UMRT_LOCATION_HOST;
        umrt_status s = umrt_prefetch(ms[t] + b * kBlock, nb * kBlock, to, nullptr);
        if (s != UMRT_SUCCESS) {
          std::lock_guard<std::mutex> lk(mu);
          if (failures++ == 0) first = "thread " + std::to_string(t) + " op " + std::to_string(i) + ": " + str(s) + ": " + last_error();
        }
      }
    });
  for (auto &th : ts) th.join();
  EXPECT_EQ(failures.load(), 0) << first;
  umrt_stats s = get_stats();
  EXPECT_GT(s.evictions, 0u);
  EXPECT_LE(s.device_bytes_in_use, s.device_capacity);
  EXPECT_EQ(umrt_validate(), UMRT_SUCCESS) << "after the race: " << last_error();
  for (int t = 0; t < kThreads; ++t) {
    size_t on_dev = 0;
    for (size_t off = 0; off < size; off += kPage) {
      if (location_of(ms[t] + off) == UMRT_LOCATION_DEVICE) {
        ++on_dev;
        ASSERT_TRUE(check_device_pattern(ms[t] + off, kPage, 50 + t, off)) << "thread " << t << " device page " << off / kPage;
      }
    }
    EXPECT_LE(on_dev * kPage, s.device_capacity);
  }
  for (int t = 0; t < kThreads; ++t) EXPECT_TRUE(check_pattern(ms[t].get(), size, 50 + t)) << "thread " << t;
}

// CPU writes mixed in: evicted blocks faulted back and rewritten on the host, then moved again.
TEST_F(Oversub, EvictionWithHostWrites) {
  const size_t size = 80 * MiB;
  Managed m(size);
  ASSERT_TRUE(m);
  std::vector<uint8_t> shadow(size);
  fill_pattern(shadow.data(), size, 3);
  std::memcpy(m.get(), shadow.data(), size);
  uint64_t x = 4242;
  for (int i = 0; i < 60; ++i) {
    x = mix64(x);
    size_t off = (x % (size / kPage)) * kPage;
    size_t len = std::min<size_t>(size - off, kPage * (1 + (x >> 32) % 2048));  // up to 8 MiB
    ASSERT_EQ(umrt_prefetch(m + off, len, UMRT_LOCATION_DEVICE, nullptr), UMRT_SUCCESS) << last_error();
    size_t w = (x >> 12) % size;
    shadow[w] ^= 0x3c;
    m.get()[w] ^= 0x3c;
  }
  EXPECT_GT(get_stats().evictions, 0u);
  EXPECT_EQ(checksum(m.get(), size), checksum(shadow.data(), size));
  EXPECT_EQ(std::memcmp(m.get(), shadow.data(), size), 0);
}

// Small allocations are packed: 4096 x 16 KiB (64 MiB) fit in a 96 MiB device without evictions,
// using about their own size.
class Packing : public UmrtTest {
 protected:
  void Configure(umrt_config &cfg) override { cfg.device_memory = 96 * MiB; }
  bool ValidateAtEnd() const override { return true; }
};

TEST_F(Packing, ThousandsOfSmallAllocations) {
  constexpr size_t kCount = 4096, kSize = 16 * KiB;
  std::vector<void *> ps(kCount, nullptr);
  for (size_t i = 0; i < kCount; ++i) {
    ASSERT_EQ(umrt_malloc(&ps[i], kSize), UMRT_SUCCESS) << "allocation " << i << ": " << last_error();
    fill_pattern(ps[i], kSize, 10000 + i);
  }
  for (size_t i = 0; i < kCount; ++i)
    ASSERT_EQ(umrt_prefetch(ps[i], kSize, UMRT_LOCATION_DEVICE, nullptr), UMRT_SUCCESS)
        << "allocation " << i << ": " << last_error();
  umrt_stats s = get_stats();
  const uint64_t total = kCount * kSize;
  EXPECT_EQ(s.evictions, 0u);
  EXPECT_LE(s.device_bytes_in_use, total + total / 10 + 2 * MiB) << "small allocations are not packed";
  EXPECT_GE(s.device_bytes_in_use, total);
  EXPECT_EQ(s.bytes_to_device, total);
  for (size_t i = 0; i < kCount; ++i) {
    ASSERT_EQ(location_of(ps[i]), UMRT_LOCATION_DEVICE) << "allocation " << i;
    ASSERT_TRUE(check_device_pattern(ps[i], kSize, 10000 + i)) << "allocation " << i;
  }
  // Distinct device addresses (no two allocations share a frame).
  std::vector<uintptr_t> ds;
  for (void *p : ps) ds.push_back(reinterpret_cast<uintptr_t>(dev(p)));
  std::sort(ds.begin(), ds.end());
  for (size_t i = 1; i < ds.size(); ++i) ASSERT_GE(ds[i] - ds[i - 1], kSize) << "device copies overlap";
  // Half come back on the CPU.
  for (size_t i = 0; i < kCount; i += 2) ASSERT_TRUE(check_pattern(ps[i], kSize, 10000 + i)) << "allocation " << i;
  EXPECT_EQ(umrt_validate(), UMRT_SUCCESS) << last_error();
  for (size_t i = 0; i < kCount; ++i) ASSERT_EQ(umrt_free(ps[i]), UMRT_SUCCESS) << last_error();
  EXPECT_EQ(get_stats().device_bytes_in_use, 0u);
}

// Small allocations oversubscribed: 8192 x 16 KiB = 128 MiB in 32 MiB.
TEST_F(Oversub, SmallAllocationsOversubscribed) {
  constexpr size_t kCount = 8192, kSize = 16 * KiB;
  std::vector<void *> ps(kCount, nullptr);
  for (size_t i = 0; i < kCount; ++i) {
    ASSERT_EQ(umrt_malloc(&ps[i], kSize), UMRT_SUCCESS) << "allocation " << i << ": " << last_error();
    fill_pattern(ps[i], kSize, 20000 + i);
  }
  for (size_t i = 0; i < kCount; ++i)
    ASSERT_EQ(umrt_prefetch(ps[i], kSize, UMRT_LOCATION_DEVICE, nullptr), UMRT_SUCCESS)
        << "allocation " << i << ": " << last_error();
  umrt_stats s = get_stats();
  EXPECT_GT(s.evictions, 0u);
  EXPECT_LE(s.device_bytes_in_use, s.device_capacity);
  EXPECT_EQ(location_of(ps[kCount - 1]), UMRT_LOCATION_DEVICE);
  for (size_t i = 0; i < kCount; ++i) ASSERT_TRUE(check_pattern(ps[i], kSize, 20000 + i)) << "allocation " << i;
  for (size_t i = 0; i < kCount; ++i) ASSERT_EQ(umrt_free(ps[i]), UMRT_SUCCESS) << last_error();
  EXPECT_EQ(get_stats().device_bytes_in_use, 0u);
}

// Thousands of allocate/free cycles of random sizes with some of them on the device.
TEST_F(Oversub, AllocFreeCycles) {
  struct Live {
    void *p;
    size_t size;
    uint64_t seed;
  };
  std::vector<Live> live;
  uint64_t x = 2024;
  constexpr int kCycles = 4000;
  for (int i = 0; i < kCycles; ++i) {
    x = mix64(x);
    if (live.size() < 64 && (live.empty() || (x & 3) != 0)) {
      size_t size = 1 + (x >> 8) % ((x >> 60) ? 64 * KiB : 3 * MiB);
      void *p = nullptr;
      ASSERT_EQ(umrt_malloc(&p, size), UMRT_SUCCESS) << "cycle " << i << ": " << last_error();
      size_t touch = std::min<size_t>(size, 2 * kPage);
      fill_pattern(p, touch, i);
      if ((x >> 4) & 1) {
        ASSERT_EQ(umrt_prefetch(p, size, UMRT_LOCATION_DEVICE, nullptr), UMRT_SUCCESS)
            << "cycle " << i << ": " << last_error();
      }
      live.push_back({p, size, static_cast<uint64_t>(i)});
    } else {
      size_t k = (x >> 20) % live.size();
      Live l = live[k];
      live[k] = live.back();
      live.pop_back();
      size_t touch = std::min<size_t>(l.size, 2 * kPage);
      ASSERT_TRUE(check_pattern(l.p, touch, l.seed)) << "cycle " << i;
      ASSERT_EQ(umrt_free(l.p), UMRT_SUCCESS) << "cycle " << i << ": " << last_error();
    }
  }
  EXPECT_EQ(umrt_validate(), UMRT_SUCCESS) << last_error();
  for (const Live &l : live) {
    ASSERT_TRUE(check_pattern(l.p, std::min<size_t>(l.size, 2 * kPage), l.seed));
    ASSERT_EQ(umrt_free(l.p), UMRT_SUCCESS) << last_error();
  }
  EXPECT_EQ(get_stats().device_bytes_in_use, 0u);
}

}  // namespace
