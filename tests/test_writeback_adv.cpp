// test_writeback_adv.cpp — adversarial tests of write-back, written by an outside review of the
// first write-back commit: discarded pages (MADV_DONTNEED), truncation, mremap, device round
// trips, races of writers, prefetches and flushes under both write-fault policies, odd spans,
// two ranges on one file, injected failures in shutdown and free, fork, partial last pages on
// O_DIRECT and buffered files, PROT_NONE pages.
#include <gtest/gtest.h>
#include <umrt/umrt.h>

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "temp_file.h"
#include "test_util.h"

namespace {
using namespace umrt_test;

off_t fsize(const char *path) { return file_size(path); }

using WbAdv = WritableFileRangeTest;

// 1. MADV_DONTNEED of a clean (read-only so far) page, then a write: the write must reach the file.
TEST_F(WbAdv, DontneedCleanPageThenWriteIsFlushed) {
  TempFile f(2 * MiB, 41);
  MAP_OR_SKIP(p, f.path(), 0, 0);
  auto *c = static_cast<volatile uint8_t *>(p);
  (void)c[5 * kPage];  // read: clean, write-protected
  ASSERT_EQ(madvise(const_cast<uint8_t *>(c) + 5 * kPage, kPage, MADV_DONTNEED), 0);
  c[5 * kPage + 7] = 0x5a;  // the page is the file's again (read back); this write must be kept
  ASSERT_EQ(umrt_flush(p, 2 * MiB), UMRT_SUCCESS) << last_error();
  EXPECT_EQ(f.on_disk()[5 * kPage + 7], 0x5a) << "a CPU write after MADV_DONTNEED was never written back";
  EXPECT_EQ(umrt_free(p), UMRT_SUCCESS) << last_error();
}

// 1b. Same, for a dirty page flushed while discarded: the flush writes nothing for it (it is the
// file's again); a later write must reach the file.
TEST_F(WbAdv, DontneedDirtyPageFlushThenWriteIsFlushed) {
  TempFile f(2 * MiB, 42);
  MAP_OR_SKIP(p, f.path(), 0, 0);
  auto *c = static_cast<volatile uint8_t *>(p);
  c[9 * kPage] = 1;  // dirty
  ASSERT_EQ(madvise(const_cast<uint8_t *>(c) + 9 * kPage, kPage, MADV_DONTNEED), 0);
  ASSERT_EQ(umrt_flush(p, 2 * MiB), UMRT_SUCCESS) << last_error();
  c[9 * kPage + 100] = 0x77;
  ASSERT_EQ(umrt_flush(p, 2 * MiB), UMRT_SUCCESS) << last_error();
  EXPECT_EQ(f.on_disk()[9 * kPage + 100], 0x77) << "write after a flush of a discarded page lost";
  EXPECT_EQ(umrt_free(p), UMRT_SUCCESS) << last_error();
}

// 2. The file is truncated while mapped, then a dirty page past the new end is flushed: "the file
// never grows".
TEST_F(WbAdv, FlushAfterTruncateDoesNotGrowTheFile) {
  TempFile f(4 * MiB, 43);
  MAP_OR_SKIP(p, f.path(), 0, 0);
  auto *c = static_cast<uint8_t *>(p);
  c[3 * MiB] = 0x11;  // dirty, past the later end
  ASSERT_EQ(truncate(f.path(), MiB), 0);
  const umrt_status s = umrt_flush(p, 4 * MiB);
  EXPECT_EQ(fsize(f.path()), static_cast<off_t>(MiB)) << "flush status " << str(s) << ": the file grew back";
  umrt_free(p);
}

// 3. mremap of a whole writable range (clean pages), then writes at the new address are flushed.
TEST_F(WbAdv, MremapWholeRangeThenWritesAreFlushed) {
  const size_t bytes = 4 * MiB;
  TempFile f(bytes, 44);
  MAP_OR_SKIP(p, f.path(), 0, 0);
  auto *c = static_cast<volatile uint8_t *>(p);
  for (size_t k = 0; k < bytes; k += kPage) (void)c[k];  // all clean, write-protected
  c[0] = 0x01;  // one dirty
  // Reserve a target and move there.
  void *t = mmap(nullptr, bytes, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  ASSERT_NE(t, MAP_FAILED);
  void *q = mremap(p, bytes, bytes, MREMAP_MAYMOVE | MREMAP_FIXED, t);
  ASSERT_EQ(q, t) << strerror(errno);
  auto *d = static_cast<volatile uint8_t *>(q);
  for (size_t pg = 1; pg < bytes / kPage; pg += 37) d[pg * kPage + 3] = 0xcc;
  ASSERT_EQ(umrt_flush(q, bytes), UMRT_SUCCESS) << last_error();
  const std::vector<uint8_t> disk = f.on_disk();
  EXPECT_EQ(disk[0], 0x01);
  for (size_t pg = 1; pg < bytes / kPage; pg += 37) ASSERT_EQ(disk[pg * kPage + 3], 0xcc) << "page " << pg;
  EXPECT_EQ(umrt_validate(), UMRT_SUCCESS) << last_error();
  EXPECT_EQ(umrt_free(q), UMRT_SUCCESS) << last_error();
}

// 4. Write, to the device and back, flush; write again, flush; everything in the file.
TEST_F(WbAdv, WriteDeviceRoundTripFlushWriteFlush) {
  const size_t bytes = 4 * MiB;
  TempFile f(bytes, 45);
  MAP_OR_SKIP(p, f.path(), 0, 0);
  auto *c = static_cast<uint8_t *>(p);
  std::memset(c + 100, 0xa1, 3 * kPage);
  ASSERT_EQ(umrt_prefetch(p, bytes, UMRT_LOCATION_DEVICE, nullptr), UMRT_SUCCESS) << last_error();
  ASSERT_EQ(umrt_prefetch(p, bytes, UMRT_LOCATION_HOST, nullptr), UMRT_SUCCESS) << last_error();
  ASSERT_EQ(umrt_flush(p, bytes), UMRT_SUCCESS) << last_error();
  EXPECT_EQ(umrt_validate(), UMRT_SUCCESS) << last_error();
  std::memset(c + 2 * MiB + 5, 0xb2, 10);  // a page now clean (after flush)
  ASSERT_EQ(umrt_flush(p, bytes), UMRT_SUCCESS) << last_error();
  std::vector<uint8_t> want(f.data(), f.data() + bytes);
  std::memset(want.data() + 100, 0xa1, 3 * kPage);
  std::memset(want.data() + 2 * MiB + 5, 0xb2, 10);
  const std::vector<uint8_t> disk = f.on_disk();
  for (size_t k = 0; k < bytes; ++k) ASSERT_EQ(disk[k], want[k]) << "byte " << k;
  EXPECT_EQ(umrt_free(p), UMRT_SUCCESS) << last_error();
}

// 5. Writers + prefetch ping-pong + flusher, then a final flush: file == memory.
template <umrt_write_fault_policy P>
class WbStress : public WbAdv {
 protected:
  void Configure(umrt_config &cfg) override { cfg.write_fault = P; }
};
using WbStressCancel = WbStress<UMRT_WRITE_FAULT_CANCEL>;
using WbStressWait = WbStress<UMRT_WRITE_FAULT_WAIT>;

void stress(void *p, size_t bytes) {
  auto *w = static_cast<volatile uint64_t *>(p);
  std::atomic<bool> stop{false};
  std::vector<std::thread> ts;
  for (unsigned t = 0; t < 2; ++t)
    ts.emplace_back([&, t] {
      std::mt19937_64 rng(t + 11);
      for (uint64_t v = 1; !stop.load(std::memory_order_relaxed); ++v) {
        const size_t k = rng() % (bytes / 16) * 2 + t;  // each writer its own words
        w[k] = v;
      }
    });
  ts.emplace_back([&] {
    std::mt19937 rng(3);
    while (!stop.load()) {
      const size_t blk = rng() % (bytes / kBlock);
      char *b = static_cast<char *>(p) + blk * kBlock;
      umrt_prefetch(b, kBlock, (rng() & 1) ? UMRT_LOCATION_DEVICE : UMRT_LOCATION_HOST, nullptr);
    }
  });
  ts.emplace_back([&] {
    std::mt19937 rng(4);
    while (!stop.load()) {
      const size_t off = rng() % bytes, len = 1 + rng() % (bytes - off);
      umrt_status s = umrt_flush(static_cast<char *>(p) + off, len);
      if (s != UMRT_SUCCESS) ADD_FAILURE() << "flush: " << str(s) << " " << last_error();
    }
  });
  std::this_thread::sleep_for(std::chrono::seconds(2));
  stop = true;
  for (auto &t : ts) t.join();
}

void stress_then_compare(const FileRangeTest &, void *p, const TempFile &f, size_t bytes) {
  stress(p, bytes);
  ASSERT_EQ(umrt_flush(p, bytes), UMRT_SUCCESS) << last_error();
  EXPECT_EQ(umrt_validate(), UMRT_SUCCESS) << last_error();
  std::vector<uint8_t> mem(static_cast<uint8_t *>(p), static_cast<uint8_t *>(p) + bytes);
  const std::vector<uint8_t> disk = f.on_disk();
  for (size_t k = 0; k < bytes; ++k) ASSERT_EQ(disk[k], mem[k]) << "byte " << k << " page " << k / kPage;
  EXPECT_EQ(umrt_free(p), UMRT_SUCCESS) << last_error();
}

TEST_F(WbStressCancel, WritesPrefetchesFlushesRace) {
  TempFile f(8 * MiB, 46);
  MAP_OR_SKIP(p, f.path(), 0, 0);
  stress_then_compare(*this, p, f, 8 * MiB);
}

TEST_F(WbStressWait, WritesPrefetchesFlushesRace) {
  TempFile f(8 * MiB, 47);
  MAP_OR_SKIP(p, f.path(), 0, 0);
  stress_then_compare(*this, p, f, 8 * MiB);
}

// 6. Odd spans.
TEST_F(WbAdv, OddSpans) {
  const size_t bytes = 4 * MiB + 3 * kPage;
  TempFile f(bytes, 48);
  MAP_OR_SKIP(p, f.path(), 0, 0);
  auto *c = static_cast<uint8_t *>(p);
  std::memset(c, 0x3c, bytes);
  // A span across a page boundary, one across a block boundary, one at the very end.
  ASSERT_EQ(umrt_flush(c + kPage - 1, 2), UMRT_SUCCESS) << last_error();
  ASSERT_EQ(umrt_flush(c + 2 * MiB - 1, 2), UMRT_SUCCESS) << last_error();
  ASSERT_EQ(umrt_flush(c + bytes - 1, 1), UMRT_SUCCESS) << last_error();
  const std::vector<uint8_t> disk = f.on_disk();
  auto flushed = [&](size_t pg) {
    return pg == 0 || pg == 1 || pg == 511 || pg == 512 || pg == bytes / kPage - 1;
  };
  for (size_t k = 0; k < bytes; k += 128) ASSERT_EQ(disk[k], flushed(k / kPage) ? 0x3c : f.data()[k]) << "byte " << k;
  EXPECT_EQ(umrt_free(p), UMRT_SUCCESS) << last_error();
}

// 7. Two writable ranges over the same file, disjoint pages written in each.
TEST_F(WbAdv, TwoRangesSameFile) {
  const size_t bytes = 2 * MiB;
  TempFile f(bytes, 49);
  MAP_OR_SKIP(a, f.path(), 0, 0);
  MAP_OR_SKIP(b, f.path(), 0, 0);
  static_cast<uint8_t *>(a)[0] = 0xaa;
  static_cast<uint8_t *>(b)[kPage] = 0xbb;
  ASSERT_EQ(umrt_flush(a, bytes), UMRT_SUCCESS) << last_error();
  ASSERT_EQ(umrt_flush(b, bytes), UMRT_SUCCESS) << last_error();
  const std::vector<uint8_t> disk = f.on_disk();
  EXPECT_EQ(disk[0], 0xaa);
  EXPECT_EQ(disk[kPage], 0xbb);
  EXPECT_EQ(umrt_free(a), UMRT_SUCCESS);
  EXPECT_EQ(umrt_free(b), UMRT_SUCCESS);
}

// 8. umrt_shutdown whose write-back fails: IO, umrt still running, the retry writes it.
TEST_F(WbAdv, ShutdownWriteFailureThenRetry) {
  const size_t bytes = 4 * MiB;
  TempFile f(bytes, 50);
  MAP_OR_SKIP(p, f.path(), 0, 0);
  std::memset(p, 0x6e, bytes);
  ASSERT_EQ(umrt_prefetch(static_cast<char *>(p) + 2 * MiB, 2 * MiB, UMRT_LOCATION_DEVICE, nullptr), UMRT_SUCCESS);
  ASSERT_EQ(umrt_inject_failure(UMRT_INJECT_WRITE, 2, 1), UMRT_SUCCESS);
  EXPECT_EQ(umrt_shutdown(), UMRT_ERROR_IO) << last_error();
  EXPECT_EQ(static_cast<uint8_t *>(p)[3 * MiB], 0x6e);
  ASSERT_EQ(umrt_shutdown(), UMRT_SUCCESS) << last_error();
  const std::vector<uint8_t> disk = f.on_disk();
  for (size_t k = 0; k < bytes; ++k) ASSERT_EQ(disk[k], 0x6e) << "byte " << k;
  EXPECT_EQ(umrt_free(p), UMRT_SUCCESS) << last_error();
}

// 9. A range over part of a file ending inside a page (O_DIRECT file on ext4): the bytes after
// the range's end in the file stay; the file keeps its size; also through the device.
TEST_F(WbAdv, PartialLastPageInsideTheFile) {
  const size_t fbytes = 64 * KiB;
  TempFile f(fbytes, 51);
  const size_t size = 6000;
  MAP_OR_SKIP(p, f.path(), 4096, size);
  auto *c = static_cast<uint8_t *>(p);
  std::memset(c, 0x42, size);
  ASSERT_EQ(umrt_prefetch(p, size, UMRT_LOCATION_DEVICE, nullptr), UMRT_SUCCESS) << last_error();
  ASSERT_EQ(umrt_flush(p, size), UMRT_SUCCESS) << last_error();
  EXPECT_EQ(fsize(f.path()), static_cast<off_t>(fbytes));
  const std::vector<uint8_t> disk = f.on_disk();
  for (size_t k = 0; k < fbytes; ++k)
    ASSERT_EQ(disk[k], (k >= 4096 && k < 4096 + size) ? 0x42 : f.data()[k]) << "byte " << k;
  EXPECT_EQ(umrt_free(p), UMRT_SUCCESS) << last_error();
}

// 9b. A small file, not a multiple of 4096, last page written from host and then device.
TEST_F(WbAdv, SmallFileTail) {
  const size_t fbytes = 5000;
  TempFile f(fbytes, 52);
  MAP_OR_SKIP(p, f.path(), 0, 0);
  auto *c = static_cast<uint8_t *>(p);
  c[4999] = 0x99;
  c[4096] = 0x98;
  ASSERT_EQ(umrt_flush(p, fbytes), UMRT_SUCCESS) << last_error();
  EXPECT_EQ(fsize(f.path()), static_cast<off_t>(fbytes));
  std::vector<uint8_t> disk = f.on_disk();
  EXPECT_EQ(disk[4999], 0x99);
  EXPECT_EQ(disk[4096], 0x98);
  ASSERT_EQ(umrt_prefetch(p, fbytes, UMRT_LOCATION_DEVICE, nullptr), UMRT_SUCCESS) << last_error();
  const uint8_t v = 0x97;
  ASSERT_TRUE(dev_write(dev(c + 4998), &v, 1));
  ASSERT_EQ(umrt_free(p), UMRT_SUCCESS) << last_error();
  disk = f.on_disk();
  EXPECT_EQ(fsize(f.path()), static_cast<off_t>(fbytes));
  EXPECT_EQ(disk[4998], 0x97);
  EXPECT_EQ(disk[4999], 0x99);
}

// 10. A kernel write (read(2) into the range) into a page not read yet, and into a clean page.
TEST_F(WbAdv, KernelWritesAreTracked) {
  const size_t bytes = 2 * MiB;
  TempFile f(bytes, 53), src(kPage * 2, 54);
  MAP_OR_SKIP(p, f.path(), 0, 0);
  auto *c = static_cast<volatile uint8_t *>(p);
  (void)c[3 * kPage];  // clean
  int fd = open(src.path(), O_RDONLY);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(pread(fd, const_cast<uint8_t *>(c) + 3 * kPage, kPage, 0), static_cast<ssize_t>(kPage)) << strerror(errno);
  ASSERT_EQ(pread(fd, const_cast<uint8_t *>(c) + 7 * kPage, kPage, kPage), static_cast<ssize_t>(kPage)) << strerror(errno);
  close(fd);
  ASSERT_EQ(umrt_flush(p, bytes), UMRT_SUCCESS) << last_error();
  const std::vector<uint8_t> disk = f.on_disk();
  EXPECT_EQ(std::memcmp(disk.data() + 3 * kPage, src.data(), kPage), 0);
  EXPECT_EQ(std::memcmp(disk.data() + 7 * kPage, src.data() + kPage, kPage), 0);
  EXPECT_EQ(umrt_free(p), UMRT_SUCCESS) << last_error();
}

// 11. Injected write failure in the middle of umrt_free (second block), retry.
TEST_F(WbAdv, FreeFailsInTheMiddleThenRetry) {
  const size_t bytes = 6 * MiB;
  TempFile f(bytes, 55);
  MAP_OR_SKIP(p, f.path(), 0, 0);
  std::memset(p, 0x71, bytes);
  ASSERT_EQ(umrt_prefetch(p, 2 * MiB, UMRT_LOCATION_DEVICE, nullptr), UMRT_SUCCESS);
  ASSERT_EQ(umrt_inject_failure(UMRT_INJECT_WRITE, 2, 1), UMRT_SUCCESS);
  EXPECT_EQ(umrt_free(p), UMRT_ERROR_IO);
  ASSERT_EQ(umrt_inject_failure(UMRT_INJECT_SYNC, 1, 1), UMRT_SUCCESS);
  EXPECT_EQ(umrt_free(p), UMRT_ERROR_IO);
  ASSERT_EQ(umrt_free(p), UMRT_SUCCESS) << last_error();
  const std::vector<uint8_t> disk = f.on_disk();
  for (size_t k = 0; k < bytes; ++k) ASSERT_EQ(disk[k], 0x71) << "byte " << k;
}


// 1c. The validator sees the untracked page of test 1 (before any flush).
TEST_F(WbAdv, DontneedCleanPageValidator) {
  TempFile f(2 * MiB, 61);
  MAP_OR_SKIP(p, f.path(), 0, 0);
  auto *c = static_cast<volatile uint8_t *>(p);
  (void)c[5 * kPage];
  ASSERT_EQ(umrt_validate(), UMRT_SUCCESS) << last_error();
  ASSERT_EQ(madvise(const_cast<uint8_t *>(c) + 5 * kPage, kPage, MADV_DONTNEED), 0);
  c[5 * kPage + 7] = 0x5a;
  EXPECT_EQ(umrt_validate(), UMRT_SUCCESS) << last_error();
  umrt_free(p);
}

// 12. Oversubscribed device: evictions of dirty device pages, with writers and flushes.
class WbOversub : public WbAdv {
 protected:
  void Configure(umrt_config &cfg) override { cfg.device_memory = 4 * MiB; }
};
TEST_F(WbOversub, EvictionsWritesFlushes) {
  const size_t bytes = 16 * MiB;
  TempFile f(bytes, 62);
  MAP_OR_SKIP(p, f.path(), 0, 0);
  stress(p, bytes);
  ASSERT_EQ(umrt_flush(p, bytes), UMRT_SUCCESS) << last_error();
  EXPECT_GT(get_stats().evictions, 0u);
  EXPECT_EQ(umrt_validate(), UMRT_SUCCESS) << last_error();
  std::vector<uint8_t> mem(static_cast<uint8_t *>(p), static_cast<uint8_t *>(p) + bytes);
  const std::vector<uint8_t> disk = f.on_disk();
  for (size_t k = 0; k < bytes; ++k) ASSERT_EQ(disk[k], mem[k]) << "byte " << k << " page " << k / kPage;
  EXPECT_EQ(umrt_free(p), UMRT_SUCCESS) << last_error();
}

// 13. umrt_free while another thread flushes the same range in a loop: no crash, no hang.
TEST_F(WbAdv, FreeWhileAnotherThreadFlushes) {
  const size_t bytes = 8 * MiB;
  TempFile f(bytes, 63);
  MAP_OR_SKIP(p, f.path(), 0, 0);
  std::memset(p, 0x21, bytes);
  ASSERT_EQ(umrt_prefetch(p, 4 * MiB, UMRT_LOCATION_DEVICE, nullptr), UMRT_SUCCESS);
  std::atomic<bool> stop{false};
  std::atomic<int> odd{0};
  std::thread t([&] {
    while (!stop) {
      umrt_status s = umrt_flush(p, bytes);
      if (s != UMRT_SUCCESS && s != UMRT_ERROR_INVALID_VALUE) {
        odd = static_cast<int>(s);
        std::fprintf(stderr, "flush racing free: %s %s\n", str(s).c_str(), last_error());
      }
    }
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  EXPECT_EQ(umrt_free(p), UMRT_SUCCESS) << last_error();
  stop = true;
  t.join();
  EXPECT_EQ(odd.load(), 0);
  const std::vector<uint8_t> disk = f.on_disk();
  for (size_t k = 0; k < bytes; ++k) ASSERT_EQ(disk[k], 0x21) << "byte " << k;
}

// 14. fork while clean and dirty pages exist; the parent writes after; flushed.
TEST_F(WbAdv, ForkThenParentWrites) {
  const size_t bytes = 2 * MiB;
  TempFile f(bytes, 64);
  MAP_OR_SKIP(p, f.path(), 0, 0);
  auto *c = static_cast<volatile uint8_t *>(p);
  for (size_t k = 0; k < bytes; k += kPage) (void)c[k];
  c[0] = 1;
  pid_t pid = fork();
  if (pid == 0) {
    usleep(200000);
    _exit(0);
  }
  ASSERT_GT(pid, 0);
  for (size_t pg = 1; pg < 512; pg += 3) c[pg * kPage] = 0xee;
  ASSERT_EQ(umrt_flush(p, bytes), UMRT_SUCCESS) << last_error();
  int st = 0;
  waitpid(pid, &st, 0);
  const std::vector<uint8_t> disk = f.on_disk();
  EXPECT_EQ(disk[0], 1);
  for (size_t pg = 1; pg < 512; pg += 3) ASSERT_EQ(disk[pg * kPage], 0xee) << "page " << pg;
  EXPECT_EQ(umrt_free(p), UMRT_SUCCESS) << last_error();
}

// 15. After umrt_shutdown a clean (write-protected) page of a range not freed can be written.
TEST_F(WbAdv, WriteAfterShutdown) {
  TempFile f(2 * MiB, 65);
  MAP_OR_SKIP(p, f.path(), 0, 0);
  auto *c = static_cast<volatile uint8_t *>(p);
  (void)c[0];
  ASSERT_EQ(umrt_shutdown(), UMRT_SUCCESS) << last_error();
  c[1] = 0x12;  // plain memory now
  EXPECT_EQ(c[1], 0x12);
  EXPECT_EQ(umrt_free(p), UMRT_SUCCESS) << last_error();
}

// 16. A buffered (tmpfs, no O_DIRECT) file whose size is not a multiple of 4096.
TEST_F(WbAdv, TmpfsTail) {
  const std::string path = "/dev/shm/umrt-wbadv-tail";
  std::vector<uint8_t> init(9000, 0x01);
  {
    int fd = open(path.c_str(), O_CREAT | O_TRUNC | O_WRONLY, 0600);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(write(fd, init.data(), init.size()), 9000);
    close(fd);
  }
  MAP_OR_SKIP(p, path.c_str(), 0, 0);
  std::memset(p, 0x02, 9000);
  std::memset(static_cast<char *>(p) + 9000, 0x03, 3 * kPage - 9000);
  ASSERT_EQ(umrt_free(p), UMRT_SUCCESS) << last_error();
  EXPECT_EQ(fsize(path.c_str()), 9000);
  int fd = open(path.c_str(), O_RDONLY);
  std::vector<uint8_t> d(9000);
  ASSERT_EQ(pread(fd, d.data(), 9000, 0), 9000);
  close(fd);
  unlink(path.c_str());
  for (size_t k = 0; k < 9000; ++k) ASSERT_EQ(d[k], 0x02) << k;
}

// 18. A dirty page made PROT_NONE: what does flush / free say?
TEST_F(WbAdv, ProtNoneDirtyPage) {
  TempFile f(2 * MiB, 67);
  MAP_OR_SKIP(p, f.path(), 0, 0);
  auto *c = static_cast<uint8_t *>(p);
  c[0] = 0x31;
  ASSERT_EQ(mprotect(c, kPage, PROT_NONE), 0);
  EXPECT_EQ(umrt_flush(p, 2 * MiB), UMRT_ERROR_IO) << "a page that cannot be read is not written";
  EXPECT_EQ(umrt_free(p), UMRT_ERROR_IO) << "umrt.h: a failed flush in umrt_free is UMRT_ERROR_IO";
  ASSERT_EQ(mprotect(c, kPage, PROT_READ | PROT_WRITE), 0);
  EXPECT_EQ(umrt_free(p), UMRT_SUCCESS) << last_error();
  EXPECT_EQ(f.on_disk()[0], 0x31);
}

}  // namespace
