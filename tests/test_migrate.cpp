// test_migrate.cpp — the migration protocol in both directions, adapted from the Linux HMM
// selftests (tools/testing/selftests/mm/hmm-tests.c): migrate, migrate_fault, migrate_multiple,
// anon_read/anon_write, migrate_release, anon_teardown, migrate_partial_unmap_fault, huge empty
// ranges, zero pages, partial spans and no-op prefetches. Every test ends with umrt_validate().
// Runs on sim and, with UMRT_TEST_BACKEND=cuda (ctest label gpu), on cuda: device copies are read
// and written with dev_read/dev_write (test_util.h), standing in for kernels.
#include <gtest/gtest.h>
#include <umrt/umrt.h>

#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <cstring>
#include <thread>
#include <vector>

#include "test_util.h"

namespace {

using namespace umrt_test;

class Migrate : public UmrtTest {
 protected:
  bool ValidateAtEnd() const override { return true; }
};

// Host pages released after a move to the device: mincore() reports them not resident.
size_t resident_pages(const void *p, size_t bytes) {
  std::vector<unsigned char> vec(pages_of(bytes));
  if (mincore(const_cast<void *>(p), bytes, vec.data()) != 0) return SIZE_MAX;
  size_t n = 0;
  for (unsigned char c : vec) n += c & 1;
  return n;
}

// hmm-tests: migrate. Fill on the CPU, move to the device, check where the pages are and the
// device copy through the device pointer (no CPU fault involved).
TEST_F(Migrate, Migrate) {
  const size_t size = 3 * MiB + 5 * kPage;  // crosses a block boundary, ends mid-block
  Managed m(size);
  ASSERT_TRUE(m);
  fill_pattern(m.get(), size, 1);
  umrt_stats s0 = get_stats();
  ASSERT_EQ(umrt_prefetch(m.get(), size, UMRT_LOCATION_DEVICE, nullptr), UMRT_SUCCESS) << last_error();
  umrt_stats s1 = get_stats();
  EXPECT_TRUE(all_pages_at(m.get(), size, UMRT_LOCATION_DEVICE));
  EXPECT_EQ(s1.bytes_to_device - s0.bytes_to_device, size);
  EXPECT_EQ(s1.pages_to_device - s0.pages_to_device, m.pages());
  EXPECT_EQ(s1.bytes_to_host, s0.bytes_to_host);
  EXPECT_EQ(s1.zero_fills, s0.zero_fills) << "pages with data are copied, not zero-filled";
  EXPECT_GE(s1.batches - s0.batches, 2u) << "two blocks: at least two batches";
  EXPECT_GE(s1.device_bytes_in_use, size);
  EXPECT_LE(s1.device_bytes_in_use, s1.device_capacity);
  EXPECT_TRUE(check_device_pattern(m.get(), size, 1));
  EXPECT_EQ(resident_pages(m.get(), size), 0u) << "host memory of device-resident pages must be released";
  EXPECT_EQ(get_stats().cpu_faults, s1.cpu_faults) << "reading through the device pointer faulted";
}

// hmm-tests: migrate_fault. Then read on the CPU: faults bring the pages back, data exact.
TEST_F(Migrate, MigrateFault) {
  const size_t size = 4 * MiB;
  Managed m(size);
  ASSERT_TRUE(m);
  fill_pattern(m.get(), size, 2);
  ASSERT_EQ(umrt_prefetch(m.get(), size, UMRT_LOCATION_DEVICE, nullptr), UMRT_SUCCESS) << last_error();
  umrt_stats s0 = get_stats();
  EXPECT_TRUE(check_pattern(m.get(), size, 2));
  umrt_stats s1 = get_stats();
  EXPECT_GT(s1.cpu_faults, s0.cpu_faults);
  EXPECT_GT(s1.fault_groups, s0.fault_groups);
  EXPECT_TRUE(all_pages_at(m.get(), size, UMRT_LOCATION_HOST));
  EXPECT_EQ(s1.pages_to_host - s0.pages_to_host, m.pages());
  EXPECT_EQ(s1.bytes_to_host - s0.bytes_to_host, size);
}

// Write faults (not reads) on device-resident pages.
TEST_F(Migrate, MigrateWriteFault) {
  const size_t size = 1 * MiB;
  Managed m(size);
  ASSERT_TRUE(m);
  fill_pattern(m.get(), size, 3);
  ASSERT_EQ(umrt_prefetch(m.get(), size, UMRT_LOCATION_DEVICE, nullptr), UMRT_SUCCESS) << last_error();
  // Overwrite one word per page: the rest of each page must come back from the device.
  for (size_t pg = 0; pg < m.pages(); ++pg) {
    uint64_t v = ~pattern_word(3, pg * kPage / 8 + 7);
    std::memcpy(m + (pg * kPage + 56), &v, 8);
  }
  for (size_t pg = 0; pg < m.pages(); ++pg) {
    uint64_t v;
    std::memcpy(&v, m + (pg * kPage + 56), 8);
    ASSERT_EQ(v, ~pattern_word(3, pg * kPage / 8 + 7)) << "page " << pg;
    ASSERT_TRUE(check_pattern(m + pg * kPage, 56, 3, pg * kPage)) << "page " << pg;
    ASSERT_TRUE(check_pattern(m + (pg * kPage + 64), kPage - 64, 3, pg * kPage + 64)) << "page " << pg;
  }
  EXPECT_TRUE(all_pages_at(m.get(), size, UMRT_LOCATION_HOST));
}

// hmm-tests: migrate_multiple. Back and forth many times, the data changing each round.
TEST_F(Migrate, MigrateMultiple) {
  const size_t size = 2 * MiB + 64 * KiB;
  constexpr int kRounds = 10;
  Managed m(size);
  ASSERT_TRUE(m);
  umrt_stats s0 = get_stats();
  for (int r = 0; r < kRounds; ++r) {
    SCOPED_TRACE(r);
    fill_pattern(m.get(), size, 100 + r);
    ASSERT_EQ(umrt_prefetch(m.get(), size, UMRT_LOCATION_DEVICE, nullptr), UMRT_SUCCESS) << last_error();
    ASSERT_TRUE(all_pages_at(m.get(), size, UMRT_LOCATION_DEVICE));
    ASSERT_TRUE(check_device_pattern(m.get(), size, 100 + r));
    ASSERT_TRUE(check_pattern(m.get(), size, 100 + r));  // faults back
    ASSERT_TRUE(all_pages_at(m.get(), size, UMRT_LOCATION_HOST));
  }
  umrt_stats s1 = get_stats();
  EXPECT_EQ(s1.pages_to_device - s0.pages_to_device, kRounds * m.pages());
  EXPECT_EQ(s1.bytes_to_device - s0.bytes_to_device, kRounds * size);
  EXPECT_EQ(s1.bytes_to_host - s0.bytes_to_host, kRounds * size);
  EXPECT_EQ(s1.pages_to_host - s0.pages_to_host, kRounds * m.pages());
}

// A CPU read faults the range home; right away the range goes back to the device and a "kernel"
// writes it through the device pointer. The synchronous prefetch must not return while pages are
// still in flight to the host (a page the fault service has locked is not "already on the
// device"), or the kernel's writes land in a frame that is then dropped.
TEST_F(Migrate, DeviceWriteRightAfterFaultBack) {
  const size_t size = 2 * MiB + 64 * KiB;  // the tail block is partial
  Managed m(size);
  ASSERT_TRUE(m);
  for (int r = 0; r < 30; ++r) {
    SCOPED_TRACE(r);
    fill_pattern(m.get(), size, 200 + r);
    ASSERT_EQ(umrt_prefetch(m.get(), size, UMRT_LOCATION_DEVICE, nullptr), UMRT_SUCCESS) << last_error();
    ASSERT_TRUE(check_pattern(m.get(), size, 200 + r));  // faults everything back
    ASSERT_EQ(umrt_prefetch(m.get(), size, UMRT_LOCATION_DEVICE, nullptr), UMRT_SUCCESS) << last_error();
    ASSERT_TRUE(all_pages_at(m.get(), size, UMRT_LOCATION_DEVICE)) << "prefetch returned before the pages arrived";
    ASSERT_TRUE(fill_device_pattern(m.get(), size, 300 + r));  // the kernel
    ASSERT_TRUE(check_pattern(m.get(), size, 300 + r)) << "device writes lost";
  }
}

// Right after a CPU access returns, the pages it touched report HOST and the state validates.
TEST_F(Migrate, StateSettledWhenFaultReturns) {
  const size_t size = 2 * MiB + 64 * KiB;
  Managed m(size);
  ASSERT_TRUE(m);
  for (int r = 0; r < 20; ++r) {
    SCOPED_TRACE(r);
    fill_pattern(m.get(), size, 400 + r);
    ASSERT_EQ(umrt_prefetch(m.get(), size, UMRT_LOCATION_DEVICE, nullptr), UMRT_SUCCESS) << last_error();
    ASSERT_TRUE(check_pattern(m.get(), size, 400 + r));
    ASSERT_TRUE(all_pages_at(m.get(), size, UMRT_LOCATION_HOST)) << "a page just read on the CPU still reports DEVICE";
    ASSERT_EQ(umrt_validate(), UMRT_SUCCESS) << last_error();
  }
}

// Explicit prefetch back to the host (no faults).
TEST_F(Migrate, PrefetchBackToHost) {
  const size_t size = 3 * MiB;
  Managed m(size);
  ASSERT_TRUE(m);
  fill_pattern(m.get(), size, 4);
  ASSERT_EQ(umrt_prefetch(m.get(), size, UMRT_LOCATION_DEVICE, nullptr), UMRT_SUCCESS) << last_error();
  umrt_stats s0 = get_stats();
  ASSERT_EQ(umrt_prefetch(m.get(), size, UMRT_LOCATION_HOST, nullptr), UMRT_SUCCESS) << last_error();
  umrt_stats s1 = get_stats();
  EXPECT_TRUE(all_pages_at(m.get(), size, UMRT_LOCATION_HOST));
  EXPECT_EQ(s1.bytes_to_host - s0.bytes_to_host, size);
  EXPECT_EQ(s1.pages_to_host - s0.pages_to_host, m.pages());
  EXPECT_TRUE(check_pattern(m.get(), size, 4));
  EXPECT_EQ(get_stats().cpu_faults, s1.cpu_faults) << "pages prefetched home must not fault";
}

// docs/design.md: a block keeps its chunk after its pages leave (cheap reuse) until evicted.
// Such chunks are never lost: when the device is full of emptied blocks, another range still gets
// the whole capacity, and reclaiming an empty block copies nothing.
TEST_F(Migrate, EmptiedBlocksAreReusable) {
  const size_t size = 64 * MiB;  // the whole capacity
  Managed a(size), b(size);
  ASSERT_TRUE(a);
  ASSERT_TRUE(b);
  fill_pattern(a.get(), size, 17);
  fill_pattern(b.get(), size, 18);
  ASSERT_EQ(umrt_prefetch(a.get(), size, UMRT_LOCATION_DEVICE, nullptr), UMRT_SUCCESS) << last_error();
  EXPECT_EQ(get_stats().device_bytes_in_use, size);
  // Half home by prefetch, half home by CPU faults.
  ASSERT_EQ(umrt_prefetch(a.get(), size / 2, UMRT_LOCATION_HOST, nullptr), UMRT_SUCCESS) << last_error();
  EXPECT_TRUE(check_pattern(a + size / 2, size / 2, 17, size / 2));
  EXPECT_TRUE(all_pages_at(a.get(), size, UMRT_LOCATION_HOST));
  umrt_stats s0 = get_stats();
  EXPECT_LE(s0.device_bytes_in_use, s0.device_capacity);
  ASSERT_EQ(umrt_prefetch(b.get(), size, UMRT_LOCATION_DEVICE, nullptr), UMRT_SUCCESS) << last_error();
  umrt_stats s1 = get_stats();
  EXPECT_TRUE(all_pages_at(b.get(), size, UMRT_LOCATION_DEVICE));
  EXPECT_EQ(s1.bytes_to_host, s0.bytes_to_host) << "reclaiming emptied blocks must not copy";
  EXPECT_EQ(s1.device_bytes_in_use, size);
  EXPECT_TRUE(check_device_pattern(b.get(), size, 18));
  EXPECT_TRUE(check_pattern(a.get(), size, 17));
}

// hmm-tests: anon_write — the "device" writes, the CPU reads. Never-touched pages are zero-filled
// on the device without a copy.
TEST_F(Migrate, AnonWrite) {
  const size_t size = 2 * MiB;
  Managed m(size);
  ASSERT_TRUE(m);
  umrt_stats s0 = get_stats();
  ASSERT_EQ(umrt_prefetch(m.get(), size, UMRT_LOCATION_DEVICE, nullptr), UMRT_SUCCESS) << last_error();
  umrt_stats s1 = get_stats();
  EXPECT_EQ(s1.zero_fills - s0.zero_fills, m.pages());
  EXPECT_EQ(s1.bytes_to_device, s0.bytes_to_device) << "zero-fill is not a copy";
  EXPECT_TRUE(all_pages_at(m.get(), size, UMRT_LOCATION_DEVICE));
  ASSERT_TRUE(check_device_zero(m.get(), size)) << "zero-filled device pages";
  ASSERT_TRUE(fill_device_pattern(m.get(), size, 5));  // the kernel
  EXPECT_TRUE(check_pattern(m.get(), size, 5));
  EXPECT_TRUE(all_pages_at(m.get(), size, UMRT_LOCATION_HOST));
}

// hmm-tests: anon_read — the CPU writes, the device reads, then the device modifies and the CPU
// reads the modification.
TEST_F(Migrate, AnonRead) {
  const size_t size = 1 * MiB;
  Managed m(size);
  ASSERT_TRUE(m);
  auto *h = reinterpret_cast<uint64_t *>(m.get());
  const size_t n = size / 8;
  for (size_t i = 0; i < n; ++i) h[i] = i * 3 + 1;
  ASSERT_EQ(umrt_prefetch(m.get(), size, UMRT_LOCATION_DEVICE, nullptr), UMRT_SUCCESS) << last_error();
  std::vector<uint64_t> d(n);  // the kernel: reads the device copy, doubles every word
  ASSERT_TRUE(dev_read(d.data(), dev(m.get()), size));
  for (size_t i = 0; i < n; ++i) {
    ASSERT_EQ(d[i], i * 3 + 1) << "word " << i;
    d[i] = d[i] * 2;
  }
  ASSERT_TRUE(dev_write(dev(m.get()), d.data(), size));
  for (size_t i = 0; i < n; ++i) ASSERT_EQ(h[i], (i * 3 + 1) * 2) << "word " << i;
}

// hmm-tests: migrate_release — free while the pages are on the device.
TEST_F(Migrate, MigrateRelease) {
  void *p = nullptr;
  const size_t size = 6 * MiB;
  ASSERT_EQ(umrt_malloc(&p, size), UMRT_SUCCESS) << last_error();
  fill_pattern(p, size, 6);
  ASSERT_EQ(umrt_prefetch(p, size, UMRT_LOCATION_DEVICE, nullptr), UMRT_SUCCESS) << last_error();
  umrt_stats s0 = get_stats();
  EXPECT_GE(s0.device_bytes_in_use, size);
  ASSERT_EQ(umrt_free(p), UMRT_SUCCESS) << last_error();
  umrt_stats s1 = get_stats();
  EXPECT_EQ(s1.device_bytes_in_use, 0u);
  EXPECT_EQ(s1.bytes_to_host, s0.bytes_to_host) << "freeing must not copy pages home";
  // Device memory is reusable: the whole capacity again.
  Managed big(s1.device_capacity);
  ASSERT_TRUE(big);
  fill_pattern(big.get(), big.bytes(), 7);
  ASSERT_EQ(umrt_prefetch(big.get(), big.bytes(), UMRT_LOCATION_DEVICE, nullptr), UMRT_SUCCESS) << last_error();
  EXPECT_EQ(get_stats().evictions, 0u);
  EXPECT_TRUE(check_device_pattern(big.get(), big.bytes(), 7));
}

// Half on the device, half on the host, then free.
TEST_F(Migrate, ReleaseMixed) {
  void *p = nullptr;
  const size_t size = 4 * MiB;
  ASSERT_EQ(umrt_malloc(&p, size), UMRT_SUCCESS) << last_error();
  fill_pattern(p, size, 8);
  ASSERT_EQ(umrt_prefetch(static_cast<char *>(p) + MiB, 2 * MiB, UMRT_LOCATION_DEVICE, nullptr),
            UMRT_SUCCESS)
      << last_error();
  ASSERT_EQ(umrt_free(p), UMRT_SUCCESS) << last_error();
  EXPECT_EQ(get_stats().device_bytes_in_use, 0u);
}

// hmm-tests: anon_teardown — threads allocating, migrating and freeing concurrently.
TEST_F(Migrate, AnonTeardown) {
  constexpr int kThreads = 3, kIters = 12;
  std::atomic<int> failures{0};
  std::vector<std::thread> ts;
  for (int t = 0; t < kThreads; ++t)
    ts.emplace_back([&, t] {
      for (int i = 0; i < kIters; ++i) {
        const size_t size = (i % 3 == 0) ? 3 * MiB : (i % 3 == 1) ? 256 * KiB : 20 * KiB;
        const uint64_t seed = 1000 * t + i;
        void *p = nullptr;
        if (umrt_malloc(&p, size) != UMRT_SUCCESS) {
          ADD_FAILURE() << "malloc: " << last_error();
          ++failures;
          return;
        }
        fill_pattern(p, size, seed);
        if (umrt_prefetch(p, size, UMRT_LOCATION_DEVICE, nullptr) != UMRT_SUCCESS) {
          ADD_FAILURE() << "prefetch: " << last_error();
          ++failures;
        }
        if (auto ok = check_device_pattern(p, size, seed); !ok) {
          ADD_FAILURE() << "thread " << t << " iter " << i << ": device copy wrong: " << ok.message();
          ++failures;
        }
        if (i % 2 == 0 && !check_pattern(p, size, seed)) {  // fault back half of the time
          ADD_FAILURE() << "thread " << t << " iter " << i << ": host copy wrong";
          ++failures;
        }
        if (umrt_free(p) != UMRT_SUCCESS) {
          ADD_FAILURE() << "free: " << last_error();
          ++failures;
        }
      }
    });
  for (auto &t : ts) t.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_EQ(get_stats().device_bytes_in_use, 0u);
}

// hmm-tests: migrate_partial_unmap_fault — the user munmap()s part of a device-resident range
// with plain munmap; the rest stays readable and exact; umrt_free still succeeds.
TEST_F(Migrate, MigratePartialUnmapFault) {
  const size_t size = 2 * MiB, hole = 1 * MiB;
  const size_t offsets[] = {0, size / 4, size - hole};  // start, middle, end
  for (size_t off : offsets) {
    SCOPED_TRACE(off);
    void *p = nullptr;
    ASSERT_EQ(umrt_malloc(&p, size), UMRT_SUCCESS) << last_error();
    ASSERT_EQ(reinterpret_cast<uintptr_t>(p) % kPage, 0u);
    auto *b = static_cast<uint8_t *>(p);
    fill_pattern(b, size, 9 + off);
    ASSERT_EQ(umrt_prefetch(b, size, UMRT_LOCATION_DEVICE, nullptr), UMRT_SUCCESS) << last_error();
    ASSERT_EQ(munmap(b + off, hole), 0) << strerror(errno);
    if (off > 0) {
      EXPECT_TRUE(check_pattern(b, off, 9 + off)) << "before the hole";
    }
    if (off + hole < size) {
      EXPECT_TRUE(check_pattern(b + off + hole, size - off - hole, 9 + off, off + hole)) << "after the hole";
    }
    EXPECT_EQ(umrt_validate(), UMRT_SUCCESS) << last_error();
    EXPECT_EQ(umrt_free(p), UMRT_SUCCESS) << last_error();
  }
  EXPECT_EQ(get_stats().device_bytes_in_use, 0u);
}

// The user munmap()s a range that is partly on the host, then the rest moves again.
TEST_F(Migrate, PartialUnmapThenPrefetch) {
  const size_t size = 4 * MiB;
  void *p = nullptr;
  ASSERT_EQ(umrt_malloc(&p, size), UMRT_SUCCESS) << last_error();
  auto *b = static_cast<uint8_t *>(p);
  fill_pattern(b, size, 10);
  ASSERT_EQ(umrt_prefetch(b, 2 * MiB, UMRT_LOCATION_DEVICE, nullptr), UMRT_SUCCESS) << last_error();
  ASSERT_EQ(munmap(b + 3 * MiB, 512 * KiB), 0) << strerror(errno);  // host-resident part
  // The mapped parts still move both ways.
  EXPECT_EQ(umrt_prefetch(b, 2 * MiB, UMRT_LOCATION_HOST, nullptr), UMRT_SUCCESS) << last_error();
  EXPECT_EQ(umrt_prefetch(b + 2 * MiB, 1 * MiB, UMRT_LOCATION_DEVICE, nullptr), UMRT_SUCCESS) << last_error();
  EXPECT_TRUE(check_pattern(b, 3 * MiB, 10));
  EXPECT_TRUE(check_pattern(b + 3 * MiB + 512 * KiB, 512 * KiB, 10, 3 * MiB + 512 * KiB));
  EXPECT_EQ(umrt_validate(), UMRT_SUCCESS) << last_error();
  EXPECT_EQ(umrt_free(p), UMRT_SUCCESS) << last_error();
  EXPECT_EQ(get_stats().device_bytes_in_use, 0u);
}

// A large never-touched range moved to the device: zero fills only, no copy; reads as zero after
// faulting back.
class MigrateHuge : public Migrate {
 protected:
  void Configure(umrt_config &cfg) override { cfg.device_memory = 512 * MiB; }
};

TEST_F(MigrateHuge, HugeEmptyRange) {
  const size_t size = 256 * MiB;
  Managed m(size);
  ASSERT_TRUE(m);
  umrt_stats s0 = get_stats();
  ASSERT_EQ(umrt_prefetch(m.get(), size, UMRT_LOCATION_DEVICE, nullptr), UMRT_SUCCESS) << last_error();
  umrt_stats s1 = get_stats();
  EXPECT_EQ(s1.zero_fills - s0.zero_fills, m.pages());
  EXPECT_EQ(s1.bytes_to_device, s0.bytes_to_device);
  EXPECT_EQ(s1.evictions, 0u);
  EXPECT_EQ(location_of(m.get()), UMRT_LOCATION_DEVICE);
  EXPECT_EQ(location_of(m + size / 2), UMRT_LOCATION_DEVICE);
  EXPECT_EQ(location_of(m + (size - 1)), UMRT_LOCATION_DEVICE);
  EXPECT_EQ(count_pages_at(m.get(), size, UMRT_LOCATION_DEVICE), m.pages());
  EXPECT_TRUE(check_device_zero(m + (size - 64 * KiB), 64 * KiB));
  // Fault back: zeros everywhere.
  EXPECT_TRUE(check_zero(m.get(), size));
  EXPECT_GT(get_stats().cpu_faults, s1.cpu_faults);
}

// Pages that were only read hold zero pages on the host; they move and come back as zeros, and
// a device write through them lands.
TEST_F(Migrate, ZeroRange) {
  const size_t size = 2 * MiB;
  Managed m(size);
  ASSERT_TRUE(m);
  ASSERT_TRUE(check_zero(m.get(), size));  // read-only touch: zero pages
  EXPECT_TRUE(all_pages_at(m.get(), size, UMRT_LOCATION_HOST));
  ASSERT_EQ(umrt_prefetch(m.get(), size, UMRT_LOCATION_DEVICE, nullptr), UMRT_SUCCESS) << last_error();
  EXPECT_TRUE(all_pages_at(m.get(), size, UMRT_LOCATION_DEVICE));
  EXPECT_TRUE(check_device_zero(m.get(), size));
  ASSERT_TRUE(fill_device_pattern(m + size / 2, size / 2, 12, size / 2));
  EXPECT_TRUE(check_zero(m.get(), size / 2));
  EXPECT_TRUE(check_pattern(m + size / 2, size / 2, 12, size / 2));
}

// Unaligned pointer and size: exactly the pages covering the span move.
TEST_F(Migrate, PartialSpanPrefetch) {
  const size_t npages = 16;
  Managed m(npages * kPage);
  ASSERT_TRUE(m);
  fill_pattern(m.get(), m.bytes(), 13);
  // [3*4096+100, 5*4096+100) covers pages 3, 4 and 5.
  ASSERT_EQ(umrt_prefetch(m + (3 * kPage + 100), 2 * kPage, UMRT_LOCATION_DEVICE, nullptr), UMRT_SUCCESS)
      << last_error();
  for (size_t pg = 0; pg < npages; ++pg)
    EXPECT_EQ(location_of(m + pg * kPage), (pg >= 3 && pg <= 5) ? UMRT_LOCATION_DEVICE : UMRT_LOCATION_HOST)
        << "page " << pg;
  EXPECT_EQ(get_stats().pages_to_device, 3u);
  EXPECT_TRUE(check_device_pattern(m + 3 * kPage, 3 * kPage, 13, 3 * kPage));
  // [3*4096+4095, +2) covers pages 3 and 4 only.
  ASSERT_EQ(umrt_prefetch(m + (3 * kPage + 4095), 2, UMRT_LOCATION_HOST, nullptr), UMRT_SUCCESS) << last_error();
  for (size_t pg = 0; pg < npages; ++pg)
    EXPECT_EQ(location_of(m + pg * kPage), pg == 5 ? UMRT_LOCATION_DEVICE : UMRT_LOCATION_HOST) << "page " << pg;
  // One byte: one page.
  ASSERT_EQ(umrt_prefetch(m + (15 * kPage + 4095), 1, UMRT_LOCATION_DEVICE, nullptr), UMRT_SUCCESS) << last_error();
  EXPECT_EQ(location_of(m + 15 * kPage), UMRT_LOCATION_DEVICE);
  EXPECT_EQ(location_of(m + 14 * kPage), UMRT_LOCATION_HOST);
  EXPECT_TRUE(check_pattern(m.get(), m.bytes(), 13));
}

// Prefetching pages already at the destination copies nothing.
TEST_F(Migrate, PrefetchToWhereTheyAreIsANoop) {
  const size_t size = 2 * MiB;
  Managed m(size);
  ASSERT_TRUE(m);
  fill_pattern(m.get(), size, 14);
  umrt_stats s0 = get_stats();
  ASSERT_EQ(umrt_prefetch(m.get(), size, UMRT_LOCATION_HOST, nullptr), UMRT_SUCCESS) << last_error();
  umrt_stats s1 = get_stats();
  EXPECT_EQ(s1.bytes_to_host, s0.bytes_to_host);
  EXPECT_EQ(s1.bytes_to_device, s0.bytes_to_device);
  EXPECT_EQ(s1.pages_to_host, s0.pages_to_host);
  EXPECT_EQ(s1.cpu_faults, s0.cpu_faults);
  EXPECT_EQ(s1.device_bytes_in_use, 0u);
  ASSERT_EQ(umrt_prefetch(m.get(), size, UMRT_LOCATION_DEVICE, nullptr), UMRT_SUCCESS) << last_error();
  umrt_stats s2 = get_stats();
  ASSERT_EQ(umrt_prefetch(m.get(), size, UMRT_LOCATION_DEVICE, nullptr), UMRT_SUCCESS) << last_error();
  umrt_stats s3 = get_stats();
  EXPECT_EQ(s3.bytes_to_device, s2.bytes_to_device);
  EXPECT_EQ(s3.pages_to_device, s2.pages_to_device);
  EXPECT_EQ(s3.device_bytes_in_use, s2.device_bytes_in_use);
  EXPECT_TRUE(check_pattern(m.get(), size, 14));
}

// Half already on the device: prefetching the whole range copies only the other half.
TEST_F(Migrate, MixedResidencyPrefetch) {
  const size_t size = 2 * MiB;
  Managed m(size);
  ASSERT_TRUE(m);
  fill_pattern(m.get(), size, 15);
  // Every other 64 KiB run to the device first.
  for (size_t off = 0; off < size; off += 128 * KiB)
    ASSERT_EQ(umrt_prefetch(m + off, 64 * KiB, UMRT_LOCATION_DEVICE, nullptr), UMRT_SUCCESS) << last_error();
  umrt_stats s0 = get_stats();
  EXPECT_EQ(s0.bytes_to_device, size / 2);
  ASSERT_EQ(umrt_prefetch(m.get(), size, UMRT_LOCATION_DEVICE, nullptr), UMRT_SUCCESS) << last_error();
  umrt_stats s1 = get_stats();
  EXPECT_EQ(s1.bytes_to_device - s0.bytes_to_device, size / 2);
  EXPECT_TRUE(all_pages_at(m.get(), size, UMRT_LOCATION_DEVICE));
  EXPECT_TRUE(check_device_pattern(m.get(), size, 15));
  // Now every other run home, then all home.
  for (size_t off = 0; off < size; off += 128 * KiB)
    ASSERT_EQ(umrt_prefetch(m + off, 64 * KiB, UMRT_LOCATION_HOST, nullptr), UMRT_SUCCESS) << last_error();
  umrt_stats s2 = get_stats();
  EXPECT_EQ(s2.bytes_to_host - s1.bytes_to_host, size / 2);
  ASSERT_EQ(umrt_prefetch(m.get(), size, UMRT_LOCATION_HOST, nullptr), UMRT_SUCCESS) << last_error();
  EXPECT_EQ(get_stats().bytes_to_host - s2.bytes_to_host, size / 2);
  EXPECT_TRUE(check_pattern(m.get(), size, 15));
}

// Never-touched pages prefetched to the host become zero host pages; nothing is copied.
TEST_F(Migrate, NonePagesToHost) {
  const size_t size = 1 * MiB;
  Managed m(size);
  ASSERT_TRUE(m);
  umrt_stats s0 = get_stats();
  ASSERT_EQ(umrt_prefetch(m.get(), size, UMRT_LOCATION_HOST, nullptr), UMRT_SUCCESS) << last_error();
  umrt_stats s1 = get_stats();
  EXPECT_EQ(s1.bytes_to_host, s0.bytes_to_host);
  EXPECT_EQ(s1.bytes_to_device, s0.bytes_to_device);
  EXPECT_TRUE(all_pages_at(m.get(), size, UMRT_LOCATION_HOST));
  EXPECT_TRUE(check_zero(m.get(), size));
}

// Data through a round trip in small pieces, mixed with host writes between moves.
TEST_F(Migrate, PiecewiseRoundTrips) {
  const size_t size = 2 * MiB + 3 * kPage;
  Managed m(size);
  ASSERT_TRUE(m);
  std::vector<uint8_t> shadow(size);
  fill_pattern(shadow.data(), size, 16);
  std::memcpy(m.get(), shadow.data(), size);
  uint64_t x = 12345;
  for (int i = 0; i < 60; ++i) {
    x = mix64(x);
    size_t off = x % size;
    size_t len = 1 + (mix64(x + 1) % (256 * KiB));
    if (off + len > size) len = size - off;
    umrt_location to = (x >> 40) & 1 ? UMRT_LOCATION_DEVICE : UMRT_LOCATION_HOST;
    ASSERT_EQ(umrt_prefetch(m + off, len, to, nullptr), UMRT_SUCCESS) << last_error();
    ASSERT_EQ(location_of(m + off), to);
    ASSERT_EQ(location_of(m + (off + len - 1)), to);
    // A CPU write somewhere (may fault a page back).
    size_t w = mix64(x + 2) % size;
    shadow[w] ^= 0x5a;
    m.get()[w] ^= 0x5a;
  }
  EXPECT_EQ(std::memcmp(m.get(), shadow.data(), size), 0);
  EXPECT_EQ(checksum(m.get(), size), checksum(shadow.data(), size));
}

}  // namespace
