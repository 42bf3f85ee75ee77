// test_storage.cpp — file-backed managed memory (umrt_map_file, read-only so far): the bytes of
// the file through CPU faults and through prefetches to either side (to the device without a
// host copy), spans with an offset and a size, the zeros past the mapped bytes, private writes,
// shutdown leaving the same view, and every bad input refused with nothing changed.
#include <gtest/gtest.h>
#include <umrt/umrt.h>

#include <dirent.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "temp_file.h"
#include "test_util.h"

namespace {

using namespace umrt_test;

class Storage : public FileRangeTest {};

size_t resident(const void *p, size_t bytes) {
  std::vector<unsigned char> v(pages_of(bytes));
  if (mincore(const_cast<void *>(p), bytes, v.data())) return SIZE_MAX;
  size_t n = 0;
  for (unsigned char c : v) n += c & 1;
  return n;
}

TEST_F(Storage, CpuReadsTheFile) {
  const size_t bytes = 5 * MiB + 100;  // the last page is partly past the end of the file
  TempFile f(bytes, 1);
  MAP_OR_SKIP(p, f.path(), 0, 0);
  EXPECT_EQ(location_of(p), UMRT_LOCATION_STORAGE);
  EXPECT_EQ(location_of(static_cast<char *>(p) + bytes - 1), UMRT_LOCATION_STORAGE);
  const umrt_stats a = get_stats();
  EXPECT_EQ(std::memcmp(p, f.data(), bytes), 0) << "the mapped bytes are not the file's";
  EXPECT_TRUE(check_zero(static_cast<char *>(p) + bytes, pages_of(bytes) * kPage - bytes)) << "past the end of the file";
  EXPECT_EQ(location_of(p), UMRT_LOCATION_HOST);
  const umrt_stats b = get_stats();
  EXPECT_EQ(b.bytes_from_storage - a.bytes_from_storage, bytes) << "each byte read once";
  EXPECT_LT(b.cpu_faults - a.cpu_faults, pages_of(bytes) / 4) << "sequential reads come in growing windows";
  EXPECT_EQ(umrt_free(p), UMRT_SUCCESS) << last_error();
}

// A sequential reader of a file gets the next block read ahead once its window is full (it is
// in host memory before the reader gets there); read-ahead moves only pages still in the file,
// never a block the user put on the device; a random reader gets none.
TEST_F(Storage, SequentialReadsReadTheNextBlockAhead) {
  const size_t bytes = 8 * MiB;
  TempFile f(bytes, 12);
  MAP_OR_SKIP(p, f.path(), 0, 0);
  auto *c = static_cast<uint8_t *>(p);
  EXPECT_EQ(std::memcmp(c, f.data(), kBlock), 0);  // block 0, in order
  auto home_soon = [](const void *at) {
    for (int i = 0; i < 1000 && location_of(at) != UMRT_LOCATION_HOST; ++i) usleep(1000);
    return location_of(at) == UMRT_LOCATION_HOST;
  };
  EXPECT_TRUE(home_soon(c + kBlock)) << "block 1 was not read ahead";
  EXPECT_TRUE(home_soon(c + 2 * kBlock - kPage));
  EXPECT_EQ(location_of(c + 2 * kBlock), UMRT_LOCATION_STORAGE) << "read ahead more than one block";
  EXPECT_EQ(std::memcmp(c, f.data(), bytes), 0);
  EXPECT_EQ(umrt_free(p), UMRT_SUCCESS) << last_error();

  MAP_OR_SKIP(q, f.path(), 0, 0);
  auto *d = static_cast<uint8_t *>(q);
  ASSERT_EQ(umrt_prefetch(d + kBlock, kBlock, UMRT_LOCATION_DEVICE, nullptr), UMRT_SUCCESS) << last_error();
  EXPECT_EQ(std::memcmp(d, f.data(), kBlock), 0);
  usleep(20000);
  EXPECT_TRUE(all_pages_at(d + kBlock, kBlock, UMRT_LOCATION_DEVICE)) << "read-ahead took the device's block";
  const volatile uint8_t *v = d + 3 * kBlock + 8 * kPage;  // a lone access: window 4, no read-ahead
  (void)*v;
  usleep(20000);
  EXPECT_EQ(location_of(d + 3 * kBlock + 100 * kPage), UMRT_LOCATION_STORAGE);
  EXPECT_EQ(std::memcmp(d, f.data(), bytes), 0);
  EXPECT_EQ(umrt_free(q), UMRT_SUCCESS) << last_error();
}

TEST_F(Storage, PrefetchToTheDeviceStreamsWithoutAHostCopy) {
  const size_t bytes = 8 * MiB;
  TempFile f(bytes, 2);
  MAP_OR_SKIP(p, f.path(), 0, bytes);
  ASSERT_EQ(umrt_prefetch(p, bytes, UMRT_LOCATION_DEVICE, nullptr), UMRT_SUCCESS) << last_error();
  EXPECT_TRUE(all_pages_at(p, bytes, UMRT_LOCATION_DEVICE));
  EXPECT_EQ(resident(p, bytes), 0u) << "pages went to the device through host memory of the range";
  std::vector<uint8_t> dev;
  ASSERT_TRUE(read_device_copy(p, bytes, &dev));
  EXPECT_EQ(std::memcmp(dev.data(), f.data(), bytes), 0) << "the device copy is not the file";
  EXPECT_EQ(std::memcmp(p, f.data(), bytes), 0) << "back on the CPU";
  EXPECT_EQ(umrt_free(p), UMRT_SUCCESS) << last_error();
}

TEST_F(Storage, PrefetchToTheHostReadsTheFile) {
  const size_t bytes = 6 * MiB;
  TempFile f(bytes, 3);
  MAP_OR_SKIP(p, f.path(), 0, bytes);
  ASSERT_EQ(umrt_prefetch(p, bytes, UMRT_LOCATION_HOST, nullptr), UMRT_SUCCESS) << last_error();
  EXPECT_TRUE(all_pages_at(p, bytes, UMRT_LOCATION_HOST));
  const umrt_stats a = get_stats();
  EXPECT_EQ(std::memcmp(p, f.data(), bytes), 0);
  EXPECT_EQ(get_stats().cpu_faults, a.cpu_faults) << "pages read by the prefetch faulted again";
  EXPECT_EQ(umrt_free(p), UMRT_SUCCESS) << last_error();
}

TEST_F(Storage, OffsetAndSizeSelectTheSpan) {
  const size_t bytes = 4 * MiB;
  TempFile f(bytes, 4);
  const size_t off = 3 * kPage, size = MiB + 5;
  MAP_OR_SKIP(p, f.path(), off, size);
  EXPECT_EQ(std::memcmp(p, f.data() + off, size), 0);
  EXPECT_TRUE(check_zero(static_cast<char *>(p) + size, pages_of(size) * kPage - size))
      << "bytes past the span (the file goes on) must read as zero";
  ASSERT_EQ(umrt_prefetch(p, size, UMRT_LOCATION_DEVICE, nullptr), UMRT_SUCCESS) << last_error();
  EXPECT_EQ(std::memcmp(p, f.data() + off, size), 0);
  EXPECT_EQ(umrt_free(p), UMRT_SUCCESS) << last_error();
}

// Straight to the device, with an offset and a last page the span covers in part: the device
// copy holds the span's bytes, then zeros (not the file's next bytes).
TEST_F(Storage, OffsetSpanToTheDevice) {
  const size_t bytes = 4 * MiB;
  TempFile f(bytes, 14);
  const size_t off = 5 * kPage, size = 2 * MiB + 3 * kPage + 77;
  MAP_OR_SKIP(p, f.path(), off, size);
  ASSERT_EQ(umrt_prefetch(p, size, UMRT_LOCATION_DEVICE, nullptr), UMRT_SUCCESS) << last_error();
  EXPECT_TRUE(all_pages_at(p, size, UMRT_LOCATION_DEVICE));
  std::vector<uint8_t> dev;
  ASSERT_TRUE(read_device_copy(p, pages_of(size) * kPage, &dev));
  EXPECT_EQ(std::memcmp(dev.data(), f.data() + off, size), 0) << "the device copy is not the span";
  for (size_t k = size; k < dev.size(); ++k) ASSERT_EQ(dev[k], 0) << "device byte " << k << " past the span";
  EXPECT_EQ(std::memcmp(p, f.data() + off, size), 0);
  EXPECT_EQ(umrt_free(p), UMRT_SUCCESS) << last_error();
}

TEST_F(Storage, WritesArePrivate) {
  const size_t bytes = 2 * MiB;
  TempFile f(bytes, 5);
  MAP_OR_SKIP(p, f.path(), 0, 0);
  auto *c = static_cast<uint8_t *>(p);
  for (size_t i = 0; i < bytes; i += kPage) c[i + 7] = static_cast<uint8_t>(c[i + 7] ^ 0xff);
  ASSERT_EQ(umrt_prefetch(p, bytes, UMRT_LOCATION_DEVICE, nullptr), UMRT_SUCCESS) << last_error();
  ASSERT_EQ(umrt_prefetch(p, bytes, UMRT_LOCATION_HOST, nullptr), UMRT_SUCCESS) << last_error();
  for (size_t i = 0; i < bytes; i += kPage) ASSERT_EQ(c[i + 7], static_cast<uint8_t>(f.data()[i + 7] ^ 0xff)) << i;
  EXPECT_EQ(umrt_free(p), UMRT_SUCCESS) << last_error();
  std::vector<uint8_t> disk = f.on_disk();
  EXPECT_EQ(std::memcmp(disk.data(), f.data(), bytes), 0) << "a read-only mapping wrote the file";
}

size_t open_fds() {
  size_t n = 0;
  if (DIR *d = opendir("/proc/self/fd")) {
    while (readdir(d)) ++n;
    closedir(d);
  }
  return n;
}

// (The first umrt_map_file of a thread opens that thread's io_uring: counted before.)
// A page the program discards (MADV_DONTNEED) reads the file again, private changes gone, as
// with a private file mapping (not the zeros of anonymous memory).
TEST_F(Storage, DiscardedPagesReadTheFileAgain) {
  const size_t bytes = 2 * MiB;
  TempFile f(bytes, 14);
  MAP_OR_SKIP(p, f.path(), 0, 0);
  auto *c = static_cast<uint8_t *>(p);
  ASSERT_EQ(std::memcmp(c, f.data(), bytes), 0);
  c[3 * kPage + 9] = static_cast<uint8_t>(~f.data()[3 * kPage + 9]);  // a private change
  const uint64_t host_before = get_stats().host_pages;
  ASSERT_EQ(madvise(c + 2 * kPage, 4 * kPage, MADV_DONTNEED), 0);
  EXPECT_EQ(std::memcmp(c + 2 * kPage, f.data() + 2 * kPage, 4 * kPage), 0) << "discarded pages do not read the file";
  EXPECT_EQ(get_stats().host_pages, host_before) << "the pages read again are counted once";
  EXPECT_EQ(umrt_validate(), UMRT_SUCCESS) << last_error();
  EXPECT_EQ(umrt_free(p), UMRT_SUCCESS) << last_error();
}

// An mremap moving part of a file range not read yet: that part leaves umrt with the file's bytes
// (read to the new address), not zeros; the rest stays a file range.
TEST_F(Storage, MremapOfAPartTakesTheFilesBytesAlong) {
  const size_t bytes = 8 * MiB;
  TempFile f(bytes, 15);
  MAP_OR_SKIP(p, f.path(), 0, 0);
  auto *c = static_cast<uint8_t *>(p);
  ASSERT_EQ(std::memcmp(c + 2 * MiB, f.data() + 2 * MiB, 4 * kPage), 0);  // a few pages of the part read
  const size_t part = 4 * MiB, at = 2 * MiB;
  uint8_t *want = reserve_address(part);
  ASSERT_NE(want, nullptr);
  void *q = mremap(c + at, part, part, MREMAP_MAYMOVE | MREMAP_FIXED, want);
  ASSERT_EQ(q, want) << strerror(errno);
  EXPECT_EQ(std::memcmp(q, f.data() + at, part), 0) << "the moved part does not hold the file's bytes";
  EXPECT_EQ(std::memcmp(c, f.data(), at), 0);
  EXPECT_EQ(std::memcmp(c + at + part, f.data() + at + part, bytes - at - part), 0);
  EXPECT_EQ(umrt_validate(), UMRT_SUCCESS) << last_error();
  EXPECT_EQ(umrt_free(p), UMRT_SUCCESS) << last_error();
  munmap(q, part);
}

TEST_F(Storage, FreeClosesTheFile) {
  TempFile f(MiB, 6);
  {
    MAP_OR_SKIP(q, f.path(), 0, 0);
    EXPECT_EQ(umrt_free(q), UMRT_SUCCESS);
  }
  const size_t before = open_fds();
  MAP_OR_SKIP(p, f.path(), 0, 0);
  EXPECT_EQ(open_fds(), before + 1);
  EXPECT_EQ(umrt_free(p), UMRT_SUCCESS) << last_error();
  EXPECT_EQ(open_fds(), before);
}

// umrt_shutdown leaves ranges as plain memory: a file range's pages not read yet keep reading
// the file (its view is mapped over them), the ones read or moved keep their bytes.
TEST_F(Storage, ShutdownLeavesTheSameView) {
  const size_t bytes = 4 * MiB;
  TempFile f(bytes, 7);
  MAP_OR_SKIP(p, f.path(), 0, 0);
  auto *c = static_cast<uint8_t *>(p);
  ASSERT_EQ(umrt_prefetch(c, MiB, UMRT_LOCATION_DEVICE, nullptr), UMRT_SUCCESS) << last_error();
  EXPECT_EQ(std::memcmp(c + MiB, f.data() + MiB, MiB), 0);  // read on the host
  c[MiB + 1] = static_cast<uint8_t>(~f.data()[MiB + 1]);
  EXPECT_TRUE(all_pages_at(c + 2 * MiB, 2 * MiB, UMRT_LOCATION_STORAGE)) << "the rest must not have been read";
  ASSERT_EQ(umrt_shutdown(), UMRT_SUCCESS) << last_error();
  EXPECT_EQ(std::memcmp(c, f.data(), MiB), 0) << "pages on the device";
  EXPECT_EQ(c[MiB + 1], static_cast<uint8_t>(~f.data()[MiB + 1])) << "a page written on the host";
  EXPECT_EQ(std::memcmp(c + 2 * MiB, f.data() + 2 * MiB, 2 * MiB), 0) << "pages never read";
  EXPECT_EQ(umrt_free(p), UMRT_SUCCESS) << last_error();
}

// The same for a span whose last page it covers in part, with the file going on after it: past
// the span, zeros before shutdown and after (the file is not mapped over that page).
TEST_F(Storage, ShutdownKeepsZerosPastThePartlyCoveredLastPage) {
  const size_t bytes = 4 * MiB;
  TempFile f(bytes, 15);
  const size_t size = MiB + 1234;
  MAP_OR_SKIP(p, f.path(), 0, size);
  auto *c = static_cast<uint8_t *>(p);
  ASSERT_EQ(umrt_shutdown(), UMRT_SUCCESS) << last_error();
  for (size_t k = 0; k < size; ++k) ASSERT_EQ(c[k], f.data()[k]) << "byte " << k;
  EXPECT_TRUE(check_zero(c + size, pages_of(size) * kPage - size)) << "the file's bytes past the span show";
  EXPECT_EQ(umrt_free(p), UMRT_SUCCESS) << last_error();
}

// A file truncated while mapped: a page past the new end cannot be read, and the access gets
// SIGBUS, as with mmap; the pages before it still read the file. In a fresh process.
volatile sig_atomic_t g_stage = 0;  // 1: at the access that must get SIGBUS
void exit_on_sigbus(int) { _exit(g_stage == 1 ? 42 : 43); }  // (our own: the sanitizers catch SIGBUS)

void touch_past_a_truncation(const char *path, size_t bytes) {
  alarm(30);
  struct sigaction sa {};
  sa.sa_handler = exit_on_sigbus;
  sigaction(SIGBUS, &sa, nullptr);
  void *p = nullptr;
  if (umrt_map_file(path, 0, 0, UMRT_MAP_READ, &p) != UMRT_SUCCESS) _exit(3);
  const size_t end = bytes / 2 + 100;  // the new end, inside a page
  std::vector<uint8_t> want(bytes);
  fill_pattern(want.data(), bytes, 9);
  if (truncate(path, static_cast<off_t>(end)) != 0) _exit(4);
  unlink(path);  // this child's own copy of the file (the fd keeps it)
  const auto *c = static_cast<const volatile uint8_t *>(p);
  // Before the new end (its fault window reaches past it): the file's bytes.
  if (c[end - 1] != want[end - 1] || c[end - 5000] != want[end - 5000]) _exit(5);
  if (c[end] != 0 || c[end + 1000] != 0) _exit(6);  // the rest of the page holding the end: zeros
  g_stage = 1;
  volatile uint8_t sink = c[end + kPage];  // a page wholly past it: SIGBUS
  (void)sink;
  _exit(0);
}

TEST_F(Storage, TruncatedWhileMappedIsSigbusPastTheNewEnd) {
  const size_t bytes = 2 * MiB;
  TempFile f(bytes, 9);
  {
    void *p = map(f.path(), 0, 0);
    if (!p && !skip_.empty()) GTEST_SKIP() << skip_;
    ASSERT_NE(p, nullptr);
    EXPECT_EQ(umrt_free(p), UMRT_SUCCESS);
  }
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(touch_past_a_truncation(f.path(), bytes), ::testing::ExitedWithCode(42), "")
      << "42 is SIGBUS where due; 43: SIGBUS too early; 0: none; 5: bytes before the new end wrong; 6: the "
         "rest of its page not zero";
}

// A page whose read keeps failing (every storage read fails from now on): the faulting thread
// gets SIGBUS after the retries, as for a device copy that keeps failing, never zeros and never a
// retry loop for ever. In a fresh process.
void touch_with_reads_failing(const char *path) {
  alarm(60);
  struct sigaction sa {};
  sa.sa_handler = exit_on_sigbus;
  sigaction(SIGBUS, &sa, nullptr);
  void *p = nullptr;
  if (umrt_map_file(path, 0, 0, UMRT_MAP_READ, &p) != UMRT_SUCCESS) _exit(3);
  if (umrt_inject_failure(UMRT_INJECT_READ, 1, UINT64_MAX) != UMRT_SUCCESS) _exit(4);
  g_stage = 1;
  volatile uint8_t sink = static_cast<const volatile uint8_t *>(p)[5 * kPage];
  (void)sink;
  _exit(0);
}

TEST_F(Storage, ReadsThatKeepFailingAreSigbus) {
  TempFile f(2 * MiB, 14);
  {
    void *p = map(f.path(), 0, 0);
    if (!p && !skip_.empty()) GTEST_SKIP() << skip_;
    ASSERT_NE(p, nullptr);
    EXPECT_EQ(umrt_free(p), UMRT_SUCCESS);
  }
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(touch_with_reads_failing(f.path()), ::testing::ExitedWithCode(42), "")
      << "42 is SIGBUS; 0: the access returned (zeros?); 14 (SIGALRM): a retry loop";
}

TEST_F(Storage, BadInputIsRefusedAndChangesNothing) {
  TempFile f(2 * MiB + 10, 8);
  {
    MAP_OR_SKIP(q, f.path(), 0, 0);  // this thread's io_uring opened before the count
    EXPECT_EQ(umrt_free(q), UMRT_SUCCESS);
  }
  const size_t fds = open_fds();
  const umrt_stats before = get_stats();
  void *p = reinterpret_cast<void *>(0x1);
  struct Case {
    const char *what;
    const char *path;
    uint64_t off;
    size_t size;
    unsigned flags;
    umrt_status want;
  };
  const std::string dir = std::string(f.path()) + ".d", fifo = std::string(f.path()) + ".fifo";
  ASSERT_EQ(mkdir(dir.c_str(), 0700), 0);
  ASSERT_EQ(mkfifo(fifo.c_str(), 0600), 0);
  const Case cases[] = {
      {"missing file", "/nonexistent/umrt-file", 0, 0, UMRT_MAP_READ, UMRT_ERROR_INVALID_VALUE},
      {"a directory", dir.c_str(), 0, 0, UMRT_MAP_READ, UMRT_ERROR_INVALID_VALUE},
      {"a FIFO (must not block)", fifo.c_str(), 0, 0, UMRT_MAP_READ, UMRT_ERROR_INVALID_VALUE},
      {"offset not page aligned", f.path(), 100, 0, UMRT_MAP_READ, UMRT_ERROR_INVALID_VALUE},
      {"offset at the end", f.path(), 3 * MiB, 0, UMRT_MAP_READ, UMRT_ERROR_INVALID_VALUE},
      {"span past the end", f.path(), 4096, 2 * MiB, UMRT_MAP_READ, UMRT_ERROR_INVALID_VALUE},
      {"no flags", f.path(), 0, 0, 0, UMRT_ERROR_INVALID_VALUE},
      {"unknown flag", f.path(), 0, 0, UMRT_MAP_READ | 4, UMRT_ERROR_INVALID_VALUE},
      {"write without read", f.path(), 0, 0, UMRT_MAP_WRITE, UMRT_ERROR_INVALID_VALUE},
      {"write on a directory", dir.c_str(), 0, 0, UMRT_MAP_READ | UMRT_MAP_WRITE, UMRT_ERROR_INVALID_VALUE},
      {"write on a FIFO", fifo.c_str(), 0, 0, UMRT_MAP_READ | UMRT_MAP_WRITE, UMRT_ERROR_INVALID_VALUE},
      {"write, span past the end", f.path(), 4096, 2 * MiB, UMRT_MAP_READ | UMRT_MAP_WRITE, UMRT_ERROR_INVALID_VALUE},
      {"empty path", "", 0, 0, UMRT_MAP_READ, UMRT_ERROR_INVALID_VALUE},
  };
  for (const Case &k : cases) {
    SCOPED_TRACE(k.what);
    EXPECT_EQ(umrt_map_file(k.path, k.off, k.size, k.flags, &p), k.want) << last_error();
    EXPECT_STRNE(last_error(), "") << "no message";
    EXPECT_EQ(p, reinterpret_cast<void *>(0x1)) << "*ptr was written";
  }
  EXPECT_EQ(umrt_map_file(nullptr, 0, 0, UMRT_MAP_READ, &p), UMRT_ERROR_INVALID_VALUE);
  EXPECT_EQ(umrt_map_file(f.path(), 0, 0, UMRT_MAP_READ, nullptr), UMRT_ERROR_INVALID_VALUE);
  EXPECT_NE(std::strstr((umrt_map_file(f.path(), 100, 0, UMRT_MAP_READ, &p), last_error()), "4096"), nullptr)
      << last_error();
  EXPECT_EQ(open_fds(), fds) << "a refused call left a file open";
  EXPECT_TRUE(stats_equal(before, get_stats()));
  rmdir(dir.c_str());
  unlink(fifo.c_str());
}

}  // namespace
