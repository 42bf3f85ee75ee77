// test_writeback.cpp — writable file ranges (UMRT_MAP_WRITE): what the CPU writes, from several
// threads, and what went to the device reaches the file on umrt_flush / umrt_free /
// umrt_shutdown, only pages written are written, the file never grows, failed writes and
// fdatasyncs are reported and lose nothing (the pages stay dirty), and after a kill -9 at any
// moment every page holds what was flushed or something later the program wrote there.
#include <gtest/gtest.h>
#include <umrt/umrt.h>

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <csignal>
#include <cstring>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "temp_file.h"
#include "test_util.h"

namespace {

using namespace umrt_test;

using WriteBack = WritableFileRangeTest;

// Random whole-page and sub-page writes from 4 threads, each to its own pages; flushed; the file
// is then what memory says, byte for byte, read with plain pread.
TEST_F(WriteBack, RandomWritesFromThreadsReachTheFile) {
  const size_t bytes = 8 * MiB;
  TempFile f(bytes, 21);
  MAP_OR_SKIP(p, f.path(), 0, 0);
  auto *c = static_cast<uint8_t *>(p);
  std::vector<uint8_t> want(f.data(), f.data() + bytes);
  std::vector<std::thread> ts;
  for (unsigned t = 0; t < 4; ++t)
    ts.emplace_back([&, t] {
      std::mt19937_64 rng(t + 1);
      for (int k = 0; k < 400; ++k) {
        const size_t page = (rng() % (bytes / kPage / 4)) * 4 + t;  // this thread's pages only
        const size_t off = page * kPage + rng() % 4000, len = 1 + rng() % 96;
        for (size_t b = 0; b < len; ++b) {
          const uint8_t v = static_cast<uint8_t>(rng());
          c[off + b] = v;
          want[off + b] = v;
        }
      }
    });
  for (auto &t : ts) t.join();
  ASSERT_EQ(umrt_flush(p, bytes), UMRT_SUCCESS) << last_error();
  const std::vector<uint8_t> disk = f.on_disk();
  for (size_t k = 0; k < bytes; ++k) ASSERT_EQ(disk[k], want[k]) << "file byte " << k;
  EXPECT_EQ(std::memcmp(c, want.data(), bytes), 0) << "memory changed by the flush";
  EXPECT_EQ(umrt_free(p), UMRT_SUCCESS) << last_error();
}

// Only written pages are written back, each once; pages only read are not; a second flush with
// nothing written since writes nothing.
TEST_F(WriteBack, OnlyWrittenPagesAreWritten) {
  const size_t bytes = 4 * MiB;
  TempFile f(bytes, 22);
  MAP_OR_SKIP(p, f.path(), 0, 0);
  auto *c = static_cast<volatile uint8_t *>(p);
  uint64_t sum = 0;
  for (size_t k = 0; k < bytes; k += 512) sum += c[k];  // every page read
  (void)sum;
  const size_t written[] = {0, 3, 700, 1023};
  for (size_t pg : written) c[pg * kPage + 17] = 0xab;
  const umrt_stats a = get_stats();
  ASSERT_EQ(umrt_flush(p, bytes), UMRT_SUCCESS) << last_error();
  const umrt_stats b = get_stats();
  EXPECT_EQ(b.bytes_to_storage - a.bytes_to_storage, std::size(written) * kPage) << "pages written back";
  ASSERT_EQ(umrt_flush(p, bytes), UMRT_SUCCESS) << last_error();
  EXPECT_EQ(get_stats().bytes_to_storage, b.bytes_to_storage) << "a clean range was written again";
  c[5 * kPage] = 1;  // written again after the flush: dirty again
  ASSERT_EQ(umrt_flush(p, bytes), UMRT_SUCCESS) << last_error();
  EXPECT_EQ(get_stats().bytes_to_storage - b.bytes_to_storage, kPage);
  const std::vector<uint8_t> disk = f.on_disk();
  for (size_t pg : written) EXPECT_EQ(disk[pg * kPage + 17], 0xab) << "page " << pg;
  EXPECT_EQ(disk[5 * kPage], 1);
  EXPECT_EQ(umrt_free(p), UMRT_SUCCESS) << last_error();
}

// A flush of part of a range writes that part only.
TEST_F(WriteBack, FlushOfASpanWritesThatSpan) {
  const size_t bytes = 4 * MiB;
  TempFile f(bytes, 23);
  MAP_OR_SKIP(p, f.path(), 0, 0);
  auto *c = static_cast<uint8_t *>(p);
  std::memset(c, 0x11, bytes);
  ASSERT_EQ(umrt_flush(c + MiB + 5, 10), UMRT_SUCCESS) << last_error();  // one page
  std::vector<uint8_t> disk = f.on_disk();
  for (size_t k = 0; k < bytes; k += 256) {
    const bool in = k / kPage == MiB / kPage;
    ASSERT_EQ(disk[k], in ? 0x11 : f.data()[k]) << "byte " << k;
  }
  EXPECT_EQ(umrt_free(p), UMRT_SUCCESS) << last_error();  // the rest, by the free
  disk = f.on_disk();
  for (size_t k = 0; k < bytes; ++k) ASSERT_EQ(disk[k], 0x11) << "byte " << k << " after umrt_free";
}

// Pages on the device are written back from there (taken as written), without coming home;
// and what the device wrote reaches the file.
TEST_F(WriteBack, DevicePagesAreWrittenFromTheDevice) {
  const size_t bytes = 4 * MiB;
  TempFile f(bytes, 24);
  MAP_OR_SKIP(p, f.path(), 0, 0);
  auto *c = static_cast<uint8_t *>(p);
  std::memset(c, 0x22, MiB);  // first MiB written on the CPU, then the whole range to the device
  ASSERT_EQ(umrt_prefetch(p, bytes, UMRT_LOCATION_DEVICE, nullptr), UMRT_SUCCESS) << last_error();
  std::vector<uint8_t> mine(kPage, 0x33);
  ASSERT_TRUE(dev_write(dev(c + 3 * MiB), mine.data(), kPage));  // a "kernel" writes one page
  const umrt_stats a = get_stats();
  ASSERT_EQ(umrt_flush(p, bytes), UMRT_SUCCESS) << last_error();
  EXPECT_EQ(get_stats().bytes_to_storage - a.bytes_to_storage, bytes) << "every device page counts as written";
  EXPECT_TRUE(all_pages_at(p, bytes, UMRT_LOCATION_DEVICE)) << "the flush moved pages";
  const std::vector<uint8_t> disk = f.on_disk();
  for (size_t k = 0; k < bytes; ++k) {
    const uint8_t w = k < MiB ? 0x22 : (k >= 3 * MiB && k < 3 * MiB + kPage) ? 0x33 : f.data()[k];
    ASSERT_EQ(disk[k], w) << "file byte " << k;
  }
  EXPECT_EQ(umrt_free(p), UMRT_SUCCESS) << last_error();
}

// A range ending inside a page: its last bytes are written, the file does not grow, and an
// offset into the file is kept.
TEST_F(WriteBack, PartialLastPageAndOffset) {
  const size_t bytes = 3 * MiB + 1234;
  TempFile f(bytes, 25);
  const uint64_t off = 64 * KiB;
  const size_t size = bytes - off;
  MAP_OR_SKIP(p, f.path(), off, 0);
  auto *c = static_cast<uint8_t *>(p);
  std::memset(c, 0x44, size);
  std::memset(c + size, 0x55, pages_of(size) * kPage - size);  // past the end: never in the file
  ASSERT_EQ(umrt_flush(p, size), UMRT_SUCCESS) << last_error();
  EXPECT_EQ(file_size(f.path()), static_cast<off_t>(bytes)) << "the file changed size";
  const std::vector<uint8_t> disk = f.on_disk();
  for (size_t k = 0; k < bytes; ++k) ASSERT_EQ(disk[k], k < off ? f.data()[k] : 0x44) << "file byte " << k;
  EXPECT_EQ(umrt_free(p), UMRT_SUCCESS) << last_error();
  EXPECT_EQ(file_size(f.path()), static_cast<off_t>(bytes));
}

// umrt_free writes back first; umrt_shutdown too (the range then plain memory).
TEST_F(WriteBack, FreeAndShutdownWriteBack) {
  TempFile f(2 * MiB, 26), g(2 * MiB, 27);
  MAP_OR_SKIP(p, f.path(), 0, 0);
  MAP_OR_SKIP(q, g.path(), 0, 0);
  std::memset(p, 0x66, 2 * MiB);
  std::memset(q, 0x77, MiB);
  ASSERT_EQ(umrt_free(p), UMRT_SUCCESS) << last_error();
  std::vector<uint8_t> disk = f.on_disk();
  for (size_t k = 0; k < 2 * MiB; ++k) ASSERT_EQ(disk[k], 0x66) << "byte " << k << " after free";
  ASSERT_EQ(umrt_shutdown(), UMRT_SUCCESS) << last_error();
  disk = g.on_disk();
  for (size_t k = 0; k < 2 * MiB; ++k) ASSERT_EQ(disk[k], k < MiB ? 0x77 : g.data()[k]) << "byte " << k << " after shutdown";
  EXPECT_EQ(static_cast<uint8_t *>(q)[MiB - 1], 0x77) << "the range after shutdown";
  EXPECT_EQ(umrt_free(q), UMRT_SUCCESS) << last_error();
}

// Every failure of the I/O injected: the call says UMRT_ERROR_IO, the file keeps its old bytes
// (failed writes) and the pages stay dirty: the next flush writes them.
TEST_F(WriteBack, FailedWritesKeepPagesDirty) {
  const size_t bytes = 4 * MiB;
  TempFile f(bytes, 28);
  MAP_OR_SKIP(p, f.path(), 0, 0);
  std::memset(p, 0x88, bytes);
  ASSERT_EQ(umrt_inject_failure(UMRT_INJECT_WRITE, 1, 1), UMRT_SUCCESS);
  EXPECT_EQ(umrt_flush(p, bytes), UMRT_ERROR_IO);
  EXPECT_NE(std::string(last_error()).find("dirty"), std::string::npos) << last_error();
  const umrt_stats a = get_stats();
  ASSERT_EQ(umrt_flush(p, bytes), UMRT_SUCCESS) << last_error();
  EXPECT_GT(get_stats().bytes_to_storage, a.bytes_to_storage) << "the failed pages were not written again";
  std::vector<uint8_t> disk = f.on_disk();
  for (size_t k = 0; k < bytes; ++k) ASSERT_EQ(disk[k], 0x88) << "byte " << k;

  // fdatasync fails: reported, and every page of the span is written again by the next flush.
  std::memset(p, 0x99, MiB);
  ASSERT_EQ(umrt_inject_failure(UMRT_INJECT_SYNC, 1, 1), UMRT_SUCCESS);
  EXPECT_EQ(umrt_flush(p, bytes), UMRT_ERROR_IO);
  const umrt_stats b = get_stats();
  ASSERT_EQ(umrt_flush(p, bytes), UMRT_SUCCESS) << last_error();
  EXPECT_EQ(get_stats().bytes_to_storage - b.bytes_to_storage, bytes) << "after a failed fdatasync, all again";

  // umrt_free whose write-back fails: the range stays, with its data; freed once it works.
  std::memset(p, 0xaa, bytes);
  ASSERT_EQ(umrt_inject_failure(UMRT_INJECT_WRITE, 1, 1), UMRT_SUCCESS);
  EXPECT_EQ(umrt_free(p), UMRT_ERROR_IO);
  EXPECT_TRUE(std::all_of(static_cast<uint8_t *>(p), static_cast<uint8_t *>(p) + bytes, [](uint8_t v) { return v == 0xaa; }));
  ASSERT_EQ(umrt_free(p), UMRT_SUCCESS) << last_error();
  disk = f.on_disk();
  for (size_t k = 0; k < bytes; ++k) ASSERT_EQ(disk[k], 0xaa) << "byte " << k;
}

// A read that fails is UMRT_ERROR_IO for a prefetch (not a device error); the page stays in its file.
TEST_F(WriteBack, FailedReadIsAnIoError) {
  TempFile f(2 * MiB, 29);
  MAP_OR_SKIP(p, f.path(), 0, 0, UMRT_MAP_READ);
  ASSERT_EQ(umrt_inject_failure(UMRT_INJECT_READ, 1, 1), UMRT_SUCCESS);
  EXPECT_EQ(umrt_prefetch(p, 2 * MiB, UMRT_LOCATION_DEVICE, nullptr), UMRT_ERROR_IO) << last_error();
  EXPECT_EQ(location_of(p), UMRT_LOCATION_STORAGE);
  EXPECT_EQ(std::memcmp(p, f.data(), 2 * MiB), 0);
  EXPECT_EQ(umrt_free(p), UMRT_SUCCESS) << last_error();
}

// A writer hammering pages while they are flushed: no write is lost (the last flush, after the
// writer stopped, leaves the file equal to memory), and the writer never sees its own writes undone.
TEST_F(WriteBack, WritesDuringAFlushAreNotLost) {
  const size_t bytes = 2 * MiB;
  TempFile f(bytes, 30);
  MAP_OR_SKIP(p, f.path(), 0, 0);
  auto *w = static_cast<volatile uint64_t *>(p);
  std::atomic<bool> stop{false};
  std::atomic<bool> undone{false};
  std::thread writer([&] {
    for (uint64_t v = 1; !stop.load(); ++v) {
      const size_t k = (v * 2654435761u) % (bytes / 8);
      w[k] = v;
      if (w[k] != v) undone = true;
    }
  });
  for (int i = 0; i < 50; ++i) ASSERT_EQ(umrt_flush(p, bytes), UMRT_SUCCESS) << last_error();
  stop = true;
  writer.join();
  EXPECT_FALSE(undone.load()) << "a write was undone under the writer";
  ASSERT_EQ(umrt_flush(p, bytes), UMRT_SUCCESS) << last_error();
  const std::vector<uint8_t> disk = f.on_disk();
  EXPECT_EQ(std::memcmp(disk.data(), p, bytes), 0) << "the file is not what memory holds";
  EXPECT_EQ(umrt_free(p), UMRT_SUCCESS) << last_error();
}

// Bad input for the write side.
// Pages the program discards (MADV_DONTNEED) are the file's again, as with a private file
// mapping: read back from the file (a change not flushed goes with the page, as asked), and never
// written to the file as the zeros the kernel left, whether the flush or a read comes first.
TEST_F(WriteBack, DiscardedPagesAreTheFilesAgainNeverZeros) {
  const size_t bytes = 2 * MiB;
  TempFile f(bytes, 19);
  MAP_OR_SKIP(p, f.path(), 0, 0);
  auto *c = static_cast<volatile uint8_t *>(p);
  auto *u = const_cast<uint8_t *>(c);
  (void)c[4 * kPage];         // page 4: read, clean
  c[9 * kPage + 1] = 0xee;    // page 9: written, not flushed
  c[12 * kPage + 2] = 0xdd;   // page 12: written and flushed
  c[20 * kPage + 3] = 0xcc;   // page 20: written, not flushed, read first after the discard
  ASSERT_EQ(umrt_flush(u + 12 * kPage, kPage), UMRT_SUCCESS) << last_error();
  for (size_t pg : {4, 9, 12, 20}) ASSERT_EQ(madvise(u + pg * kPage, kPage, MADV_DONTNEED), 0);
  EXPECT_EQ(c[20 * kPage + 3], f.data()[20 * kPage + 3]) << "a discarded page read something else than the file";
  ASSERT_EQ(umrt_flush(p, bytes), UMRT_SUCCESS) << last_error();
  std::vector<uint8_t> want(f.data(), f.data() + bytes);
  want[12 * kPage + 2] = 0xdd;
  std::vector<uint8_t> disk = f.on_disk();
  for (size_t pg : {4, 9, 12, 20})
    EXPECT_EQ(std::memcmp(disk.data() + pg * kPage, want.data() + pg * kPage, kPage), 0)
        << "page " << pg << " on disk: the flush wrote the discarded page's zeros";
  EXPECT_EQ(std::memcmp(u, want.data(), bytes), 0) << "discarded pages do not read the file again";
  EXPECT_EQ(umrt_validate(), UMRT_SUCCESS) << last_error();
  c[9 * kPage + 5] = 0x5a;  // written again: tracked, flushed
  want[9 * kPage + 5] = 0x5a;
  ASSERT_EQ(umrt_flush(p, bytes), UMRT_SUCCESS) << last_error();
  disk = f.on_disk();
  EXPECT_EQ(std::memcmp(disk.data(), want.data(), bytes), 0) << "a write after the discard was not flushed";
  EXPECT_EQ(umrt_free(p), UMRT_SUCCESS) << last_error();
}

TEST_F(WriteBack, BadInput) {
  TempFile f(2 * MiB, 31);
  MAP_OR_SKIP(ro, f.path(), 0, 0, UMRT_MAP_READ);
  void *anon = nullptr;
  ASSERT_EQ(umrt_malloc(&anon, MiB), UMRT_SUCCESS);
  int local = 0;
  static_cast<uint8_t *>(ro)[0] = 1;  // a private write: never goes to the file
  const umrt_stats a = get_stats();
  EXPECT_EQ(umrt_flush(ro, 2 * MiB), UMRT_SUCCESS) << "a read-only file range has nothing to write";
  EXPECT_EQ(get_stats().bytes_to_storage, a.bytes_to_storage);
  EXPECT_EQ(f.on_disk()[0], f.data()[0]) << "a private write reached the file";
  EXPECT_EQ(umrt_flush(anon, MiB), UMRT_ERROR_INVALID_VALUE);
  EXPECT_NE(std::string(last_error()).find("anonymous"), std::string::npos) << last_error();
  EXPECT_EQ(umrt_flush(&local, sizeof local), UMRT_ERROR_INVALID_VALUE);
  EXPECT_EQ(umrt_flush(nullptr, 1), UMRT_ERROR_INVALID_VALUE);
  EXPECT_EQ(umrt_flush(ro, 0), UMRT_ERROR_INVALID_VALUE);
  EXPECT_EQ(umrt_flush(ro, 2 * MiB + 1), UMRT_ERROR_INVALID_VALUE) << "past the end of the range";
  EXPECT_EQ(umrt_free(anon), UMRT_SUCCESS);
  EXPECT_EQ(umrt_free(ro), UMRT_SUCCESS);
}

// UMRT_MAP_WRITE on a read-only file system: INVALID_VALUE saying so, nothing mapped. (Root
// passes file permissions, so a read-only tmpfs mount stands for both.)
TEST_F(WriteBack, ReadOnlyFileSystemIsRefusedForWrite) {
  char dir[] = "/tmp/umrt-rofs-XXXXXX";
  ASSERT_NE(mkdtemp(dir), nullptr);
  const std::string file = std::string(dir) + "/f";
  if (mount("umrt-ro", dir, "tmpfs", 0, "size=4m") != 0) {
    rmdir(dir);
    GTEST_SKIP() << "cannot mount a tmpfs here (" << strerror(errno) << "): needs root";
  }
  {
    int fd = open(file.c_str(), O_CREAT | O_WRONLY, 0644);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(ftruncate(fd, 2 * MiB), 0);
    close(fd);
  }
  ASSERT_EQ(mount("umrt-ro", dir, "tmpfs", MS_REMOUNT | MS_RDONLY, "size=4m"), 0) << strerror(errno);
  void *p = reinterpret_cast<void *>(0x1);
  EXPECT_EQ(umrt_map_file(file.c_str(), 0, 0, UMRT_MAP_READ | UMRT_MAP_WRITE, &p), UMRT_ERROR_INVALID_VALUE);
  EXPECT_NE(std::string(last_error()).find("read-only file system"), std::string::npos) << last_error();
  EXPECT_EQ(p, reinterpret_cast<void *>(0x1)) << "ptr written on failure";
  EXPECT_EQ(umrt_map_file(file.c_str(), 0, 0, UMRT_MAP_READ, &p), UMRT_SUCCESS) << "read-only still maps";
  if (p != reinterpret_cast<void *>(0x1)) {
    EXPECT_EQ(umrt_free(p), UMRT_SUCCESS);
  }
  umount(dir);
  rmdir(dir);
}

// UMRT_MAP_WRITE on a file the caller may read but not write (as an unprivileged user: root
// passes permissions): INVALID_VALUE saying so; read-only still maps. In a fresh process.
void map_read_only_file_for_write(const char *path) {
  if (geteuid() == 0 && setuid(65534) != 0) _exit(2);
  void *p = reinterpret_cast<void *>(0x1);
  if (umrt_map_file(path, 0, 0, UMRT_MAP_READ | UMRT_MAP_WRITE, &p) != UMRT_ERROR_INVALID_VALUE) _exit(3);
  if (!std::strstr(umrt_last_error(), "cannot be opened for writing")) _exit(4);
  if (p != reinterpret_cast<void *>(0x1)) _exit(5);
  if (umrt_map_file(path, 0, 0, UMRT_MAP_READ, &p) != UMRT_SUCCESS) _exit(6);
  if (umrt_free(p) != UMRT_SUCCESS) _exit(7);
  _exit(0);
}

TEST_F(WriteBack, FileOpenedReadOnlyIsRefusedForWrite) {
  TempFile f(MiB, 32);
  ASSERT_EQ(chmod(f.path(), 0444), 0);
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(map_read_only_file_for_write(f.path()), ::testing::ExitedWithCode(0), "")
      << "2: setuid, 3: not INVALID_VALUE, 4: message, 5: ptr written, 6/7: read-only map/free";
}

// ---- kill -9 ---------------------------------------------------------------------------------
//
// A child writes whole pages from 3 threads (word k of page p holds p, a version and k), a 4th
// flushes in a loop and, after each flush that returned, appends to a log the versions every
// page had *before* that flush began; a 5th moves blocks to the device and back. The child kills
// itself with SIGKILL 150, 400 or 900 ms after its first flush returned. Then each page of the file must hold, in every word, its
// own page number and word index with a version at least the logged one (what was flushed or
// later), and nothing else.
constexpr size_t kKillPages = 1024;
constexpr uint64_t kLogMagic = 0x756d72746c6f6721ull;

uint64_t word_of(size_t page, uint32_t version, size_t k) {
  return (uint64_t{page} << 40) | (uint64_t{version} << 8) | (k & 0xff);
}

struct LogRecord {
  uint64_t magic;
  uint32_t versions[kKillPages];
  uint64_t sum;
};
uint64_t record_sum(const LogRecord &r) {
  uint64_t s = kLogMagic;
  for (uint32_t v : r.versions) s = s * 1099511628211ull + v;
  return s;
}

void write_until_killed(const char *path, const char *log_path, unsigned ms) {
  alarm(60);
  void *p = nullptr;
  if (umrt_map_file(path, 0, 0, UMRT_MAP_READ | UMRT_MAP_WRITE, &p) != UMRT_SUCCESS) _exit(3);
  const int log = open(log_path, O_WRONLY | O_APPEND | O_CREAT, 0600);
  if (log < 0) _exit(4);
  auto *words = static_cast<volatile uint64_t *>(p);
  static std::atomic<uint32_t> version[kKillPages];
  // The kill comes ms after the first flush returned (so that something was flushed for sure,
  // also where a sanitizer makes everything slow), in the middle of whatever runs then.
  static std::atomic<bool> flushed_once{false};
  std::thread killer([ms] {
    while (!flushed_once.load()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    std::this_thread::sleep_for(std::chrono::milliseconds(ms));
    kill(getpid(), SIGKILL);
  });
  for (unsigned t = 0; t < 3; ++t)
    std::thread([t, words] {
      std::mt19937 rng(t * 7 + 1);
      for (;;) {
        const size_t page = (rng() % (kKillPages / 3)) * 3 + t;
        if (page >= kKillPages) continue;
        const uint32_t v = version[page].load(std::memory_order_relaxed) + 1;
        for (size_t k = 0; k < kPage / 8; ++k) words[page * kPage / 8 + k] = word_of(page, v, k);
        version[page].store(v, std::memory_order_release);
      }
    }).detach();
  std::thread([p] {
    std::mt19937 rng(99);
    for (;;) {
      const size_t block = rng() % (kKillPages * kPage / kBlock);
      umrt_prefetch(static_cast<char *>(p) + block * kBlock, kBlock, UMRT_LOCATION_DEVICE, nullptr);
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
  }).detach();
  static LogRecord rec;
  for (;;) {
    rec.magic = kLogMagic;
    for (size_t i = 0; i < kKillPages; ++i) rec.versions[i] = version[i].load(std::memory_order_acquire);
    rec.sum = record_sum(rec);
    if (umrt_flush(p, kKillPages * kPage) != UMRT_SUCCESS) _exit(5);
    if (write(log, &rec, sizeof rec) != static_cast<ssize_t>(sizeof rec)) _exit(6);
    flushed_once.store(true);
  }
}

TEST_F(WriteBack, KillNineAtAnyMomentKeepsEveryFlushedPage) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  for (unsigned ms : {150u, 400u, 900u}) {
    std::vector<uint8_t> init(kKillPages * kPage);
    auto *iw = reinterpret_cast<uint64_t *>(init.data());
    for (size_t pg = 0; pg < kKillPages; ++pg)
      for (size_t k = 0; k < kPage / 8; ++k) iw[pg * kPage / 8 + k] = word_of(pg, 0, k);
    // Fixed names: the death test's child runs this test body again from the start (threadsafe
    // style), and must use the same files as the parent checks.
    const char *tmp = std::getenv("TMPDIR");
    const std::string path = std::string(tmp && *tmp ? tmp : "/tmp") + "/umrt-kill9-" + std::to_string(ms);
    const std::string log_path = path + ".log";
    {
      int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
      ASSERT_GE(fd, 0);
      ASSERT_EQ(pwrite(fd, init.data(), init.size(), 0), static_cast<ssize_t>(init.size()));
      close(fd);
    }
    unlink(log_path.c_str());
    EXPECT_EXIT(write_until_killed(path.c_str(), log_path.c_str(), ms), ::testing::KilledBySignal(SIGKILL), "")
        << "3: map failed, 4: log, 5: a flush failed, 6: log write";
    // The last whole record of the log: what was flushed for sure.
    std::vector<uint32_t> flushed(kKillPages, 0);
    size_t records = 0;
    {
      int fd = open(log_path.c_str(), O_RDONLY);
      static LogRecord rec;
      while (fd >= 0 && read(fd, &rec, sizeof rec) == static_cast<ssize_t>(sizeof rec)) {
        if (rec.magic != kLogMagic || rec.sum != record_sum(rec)) break;
        flushed.assign(rec.versions, rec.versions + kKillPages);
        ++records;
      }
      if (fd >= 0) close(fd);
      unlink(log_path.c_str());
    }
    std::vector<uint8_t> disk(init.size());
    {
      int fd = open(path.c_str(), O_RDONLY);
      ASSERT_GE(fd, 0);
      ASSERT_EQ(pread(fd, disk.data(), disk.size(), 0), static_cast<ssize_t>(disk.size()));
      close(fd);
      unlink(path.c_str());
    }
    const auto *dw = reinterpret_cast<const uint64_t *>(disk.data());
    size_t newer = 0;
    for (size_t pg = 0; pg < kKillPages; ++pg)
      for (size_t k = 0; k < kPage / 8; ++k) {
        const uint64_t v = dw[pg * kPage / 8 + k];
        ASSERT_EQ(v >> 40, pg) << "kill after " << ms << " ms: page " << pg << " word " << k << " holds page "
                               << (v >> 40) << "'s bytes";
        ASSERT_EQ(v & 0xff, k & 0xff) << "page " << pg << " word " << k << ": bytes the program never wrote there";
        const uint32_t ver = static_cast<uint32_t>(v >> 8);
        ASSERT_GE(ver, flushed[pg]) << "kill after " << ms << " ms: page " << pg << " word " << k
                                    << " lost its flushed version (" << records << " flushes logged)";
        newer += ver > 0;
      }
    EXPECT_GT(records, 0u) << "no flush completed before the kill after " << ms << " ms";
    EXPECT_GT(newer, 0u);
  }
}

}  // namespace
