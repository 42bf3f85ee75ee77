// test_host_pool.cpp — host pages kept for reuse (UMRT_HOST_POOL, runtime/host_pool.h): pages
// that left for the device are kept and take the next pages coming home, every byte intact,
// the pool never above its size, pages the kernel will not move (mlock()ed) left as before, a
// fork() in between harmless, and none kept when the pool is off. Runs on sim and cuda.
#include <gtest/gtest.h>
#include <umrt/umrt.h>

#include <linux/userfaultfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <string>
#include <thread>
#include <vector>
#include <cstring>

#include "test_util.h"

namespace {

using namespace umrt_test;

// Whether this kernel has UFFDIO_MOVE (Linux >= 6.8): a handshake asking for it.
bool kernel_has_move() {
  int fd = static_cast<int>(syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK));
  if (fd < 0) return false;
  uffdio_api api{};
  api.api = UFFD_API;
  api.features = 1u << 10;  // UFFD_FEATURE_MOVE
  bool ok = ioctl(fd, UFFDIO_API, &api) == 0;
  close(fd);
  return ok;
}

#define SKIP_WITHOUT_MOVE()                                                              \
  do {                                                                                   \
    if (!kernel_has_move())                                                              \
      GTEST_SKIP() << "this kernel has no UFFDIO_MOVE (Linux >= 6.8): no host pool";     \
  } while (0)

// The pool's mappings, found from /proc/self/smaps: those registered write-protect ("uw") but
// not MISSING ("um", as ranges are); munlock of a part splits the pool into several. Their
// resident bytes (what the pool really holds), or -1 when they do not add up to `bytes`.
struct PoolMap {
  uintptr_t lo = 0, hi = 0;  // the lowest and highest address of its mappings
  long rss = -1;
};
PoolMap find_pool(uint64_t bytes) {
  std::ifstream f("/proc/self/smaps");
  std::string line;
  unsigned long a = 0, b = 0;
  long rss = 0, total_rss = 0;
  uint64_t total = 0;
  PoolMap found;
  found.lo = UINTPTR_MAX;
  while (std::getline(f, line)) {
    unsigned long x = 0, y = 0;
    if (std::sscanf(line.c_str(), "%lx-%lx ", &x, &y) == 2 && line.find('-') < line.find(' ')) {
      a = x, b = y, rss = 0;
      continue;
    }
    if (line.rfind("Rss:", 0) == 0) rss = std::atol(line.c_str() + 4) * 1024;
    if (line.rfind("VmFlags:", 0) == 0 && line.find(" uw") != std::string::npos &&
        line.find(" um") == std::string::npos) {
      total += b - a;
      total_rss += rss;
      found.lo = std::min<uintptr_t>(found.lo, a);
      found.hi = std::max<uintptr_t>(found.hi, b);
    }
  }
  if (total == bytes) found.rss = total_rss;
  return found;
}

template <uint64_t PoolBytes>
class PoolTest : public UmrtTest {
 protected:
  bool ValidateAtEnd() const override { return true; }
  void Configure(umrt_config &cfg) override { cfg.host_pool = PoolBytes; }
};

class HostPool : public PoolTest<16 * MiB> {};
class SmallHostPool : public PoolTest<4 * MiB> {};
class NoHostPool : public PoolTest<1> {};  // below one 2 MiB slot: none

// To the device: the host pages are kept, not freed; home: they take the data, byte for byte,
// and the pool is empty again. Then the pages home are ordinary writable memory (a write
// does not hang on a write-protect left from before the move).
TEST_F(HostPool, PagesThatLeftTakeThePagesComingHome) {
  SKIP_WITHOUT_MOVE();
  const size_t bytes = 8 * MiB, pages = bytes / kPage;
  void *p = nullptr;
  ASSERT_EQ(umrt_malloc(&p, bytes), UMRT_SUCCESS) << last_error();
  fill_pattern(p, bytes, 11);
  const umrt_stats a = get_stats();
  EXPECT_EQ(a.host_pool_pages, 0u);
  ASSERT_EQ(umrt_prefetch(p, bytes, UMRT_LOCATION_DEVICE, nullptr), UMRT_SUCCESS) << last_error();
  ASSERT_TRUE(all_pages_at(p, bytes, UMRT_LOCATION_DEVICE));
  const umrt_stats b = get_stats();
  EXPECT_EQ(b.host_pool_pages, pages) << "every page that left is kept (the pool has room)";
  EXPECT_TRUE(check_device_pattern(p, bytes, 11));
  ASSERT_EQ(umrt_prefetch(p, bytes, UMRT_LOCATION_HOST, nullptr), UMRT_SUCCESS) << last_error();
  const umrt_stats c = get_stats();
  EXPECT_EQ(c.host_pool_pages, 0u);
  EXPECT_EQ(c.host_pages_reused - b.host_pages_reused, pages);
  EXPECT_TRUE(check_pattern(p, bytes, 11));
  fill_pattern(p, bytes, 12);  // would hang (watchdog) on a page still write-protected
  ASSERT_EQ(umrt_prefetch(p, bytes, UMRT_LOCATION_DEVICE, nullptr), UMRT_SUCCESS) << last_error();
  EXPECT_TRUE(check_device_pattern(p, bytes, 12));
  EXPECT_TRUE(check_pattern(p, bytes, 12));  // CPU faults bring it home through the pool
  EXPECT_GT(get_stats().host_pages_reused, c.host_pages_reused) << "faults reuse kept pages too";
  EXPECT_EQ(umrt_free(p), UMRT_SUCCESS) << last_error();
}

// Write faults (a fault group that materialises writable pages) and reads of pages that come
// home one window at a time, across ranges: kept pages of one range serve another.
TEST_F(HostPool, KeptPagesServeOtherRanges) {
  SKIP_WITHOUT_MOVE();
  const size_t bytes = 4 * MiB;
  void *p = nullptr, *q = nullptr;
  ASSERT_EQ(umrt_malloc(&p, bytes), UMRT_SUCCESS) << last_error();
  ASSERT_EQ(umrt_malloc(&q, bytes), UMRT_SUCCESS) << last_error();
  fill_pattern(q, bytes, 21);
  ASSERT_EQ(umrt_prefetch(q, bytes, UMRT_LOCATION_DEVICE, nullptr), UMRT_SUCCESS) << last_error();
  fill_pattern(p, bytes, 22);
  ASSERT_EQ(umrt_prefetch(p, bytes, UMRT_LOCATION_DEVICE, nullptr), UMRT_SUCCESS) << last_error();
  const umrt_stats a = get_stats();
  EXPECT_EQ(a.host_pool_pages, 2 * bytes / kPage);
  auto *bp = static_cast<uint8_t *>(p);
  for (size_t off = 0; off < bytes; off += kPage) bp[off] ^= 0xff;  // write faults, page by page
  for (size_t off = 0; off < bytes; off += kPage) bp[off] ^= 0xff;
  EXPECT_TRUE(check_pattern(p, bytes, 22));
  EXPECT_TRUE(check_pattern(q, bytes, 21));
  const umrt_stats b = get_stats();
  EXPECT_EQ(b.host_pages_reused - a.host_pages_reused, 2 * bytes / kPage);
  EXPECT_EQ(b.host_pool_pages, 0u);
  EXPECT_EQ(umrt_free(p), UMRT_SUCCESS) << last_error();
  EXPECT_EQ(umrt_free(q), UMRT_SUCCESS) << last_error();
}

// The pool never holds more than its size: past it, pages are freed as before. And a pool
// that filled and emptied many times over keeps its count exact.
TEST_F(SmallHostPool, NeverAboveItsSize) {
  SKIP_WITHOUT_MOVE();
  const size_t bytes = 16 * MiB, cap = 4 * MiB / kPage;
  void *p = nullptr;
  ASSERT_EQ(umrt_malloc(&p, bytes), UMRT_SUCCESS) << last_error();
  for (int round = 0; round < 4; ++round) {
    SCOPED_TRACE(round);
    fill_pattern(p, bytes, 30 + round);
    const umrt_stats a = get_stats();
    ASSERT_EQ(umrt_prefetch(p, bytes, UMRT_LOCATION_DEVICE, nullptr), UMRT_SUCCESS) << last_error();
    EXPECT_EQ(get_stats().host_pool_pages, cap);
    EXPECT_TRUE(check_device_pattern(p, bytes, 30 + round));
    ASSERT_EQ(umrt_prefetch(p, bytes, UMRT_LOCATION_HOST, nullptr), UMRT_SUCCESS) << last_error();
    const umrt_stats b = get_stats();
    EXPECT_EQ(b.host_pool_pages, 0u);
    EXPECT_EQ(b.host_pages_reused - a.host_pages_reused, cap);
    EXPECT_TRUE(check_pattern(p, bytes, 30 + round));
  }
  EXPECT_EQ(umrt_free(p), UMRT_SUCCESS) << last_error();
}

// Runs that do not fit in a slot's room: the slot takes what fits, the rest goes to the next
// one, and the pool counts every page it holds (400 pages from the start of each of two
// blocks: one batch each, into two 512-page slots: 400, then 112 + 288).
TEST_F(SmallHostPool, RunsThatSpanSlotsAreAllKept) {
  SKIP_WITHOUT_MOVE();
  const size_t bytes = 4 * MiB, run = 400 * kPage;
  void *p = nullptr;
  ASSERT_EQ(umrt_malloc(&p, bytes), UMRT_SUCCESS) << last_error();
  auto *c = static_cast<char *>(p);
  fill_pattern(p, bytes, 35);
  for (int k = 0; k < 2; ++k)
    ASSERT_EQ(umrt_prefetch(c + k * 2 * MiB, run, UMRT_LOCATION_DEVICE, nullptr), UMRT_SUCCESS) << last_error();
  EXPECT_EQ(get_stats().host_pool_pages, 800u);
  // Home block by block (one batch at a time: two at once may each find the other's slot
  // taken and use fresh pages): 400 from the full slot, then 288 + the 112 left.
  const umrt_stats a = get_stats();
  for (int k = 0; k < 2; ++k)
    ASSERT_EQ(umrt_prefetch(c + k * 2 * MiB, 2 * MiB, UMRT_LOCATION_HOST, nullptr), UMRT_SUCCESS) << last_error();
  const umrt_stats b = get_stats();
  EXPECT_EQ(b.host_pages_reused - a.host_pages_reused, 800u);
  EXPECT_EQ(b.host_pool_pages, 0u);
  EXPECT_TRUE(check_pattern(p, bytes, 35));
  EXPECT_EQ(umrt_free(p), UMRT_SUCCESS) << last_error();
}

// A fork() does not share managed pages with the child (ranges are MADV_DONTFORK) nor the pool:
// the parent's pages are still kept and come home whole while the child lives.
TEST_F(HostPool, AForkedChildDoesNotStopPagesBeingKept) {
  SKIP_WITHOUT_MOVE();
  const size_t bytes = 4 * MiB;
  void *p = nullptr;
  ASSERT_EQ(umrt_malloc(&p, bytes), UMRT_SUCCESS) << last_error();
  fill_pattern(p, bytes, 41);
  ASSERT_EQ(umrt_prefetch(p, bytes / 2, UMRT_LOCATION_DEVICE, nullptr), UMRT_SUCCESS) << last_error();
  int fds[2];
  ASSERT_EQ(pipe(fds), 0);
  pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {  // lives until the parent is done
    char c;
    close(fds[1]);
    (void)!read(fds[0], &c, 1);
    _exit(0);
  }
  close(fds[0]);
  ASSERT_EQ(umrt_prefetch(p, bytes, UMRT_LOCATION_DEVICE, nullptr), UMRT_SUCCESS) << last_error();
  EXPECT_TRUE(all_pages_at(p, bytes, UMRT_LOCATION_DEVICE));
  EXPECT_EQ(get_stats().host_pool_pages, bytes / kPage);
  EXPECT_TRUE(check_device_pattern(p, bytes, 41));
  EXPECT_TRUE(check_pattern(p, bytes, 41));
  close(fds[1]);
  int st = 0;
  ASSERT_EQ(waitpid(child, &st, 0), child);
  EXPECT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0);
  EXPECT_EQ(umrt_free(p), UMRT_SUCCESS) << last_error();
}

// Pages the kernel will neither move nor free (mlock()ed) stay on the host with their data, as
// without a pool; the pool never holds them, and the rest of the block still moves.
TEST_F(HostPool, LockedPagesAreNeverKept) {
  SKIP_WITHOUT_MOVE();
  const size_t bytes = 2 * MiB;
  void *p = nullptr;
  ASSERT_EQ(umrt_malloc(&p, bytes), UMRT_SUCCESS) << last_error();
  auto *c = static_cast<char *>(p);
  fill_pattern(p, bytes, 45);
  if (syscall(SYS_mlock, c + 200 * kPage, 100 * kPage) != 0)  // raw: sanitizers stub mlock()
    GTEST_SKIP() << "mlock refused here: " << strerror(errno);
  EXPECT_EQ(umrt_prefetch(p, bytes, UMRT_LOCATION_DEVICE, nullptr), UMRT_ERROR_BACKEND);
  EXPECT_TRUE(all_pages_at(c + 200 * kPage, 100 * kPage, UMRT_LOCATION_HOST));
  EXPECT_LE(get_stats().host_pool_pages, 412u) << "a locked page went into the pool";
  EXPECT_TRUE(check_pattern(p, bytes, 45));
  syscall(SYS_munlock, c + 200 * kPage, 100 * kPage);
  EXPECT_EQ(umrt_free(p), UMRT_SUCCESS) << last_error();
}

// A range freed while the pool holds pages it vacated, then a new range home through them: the
// pages are the pool's, not the freed range's (no use after free, the data is the new range's).
TEST_F(HostPool, KeptPagesOutliveTheRangeTheyLeft) {
  SKIP_WITHOUT_MOVE();
  const size_t bytes = 4 * MiB;
  void *p = nullptr, *q = nullptr;
  ASSERT_EQ(umrt_malloc(&p, bytes), UMRT_SUCCESS) << last_error();
  fill_pattern(p, bytes, 51);
  ASSERT_EQ(umrt_prefetch(p, bytes, UMRT_LOCATION_DEVICE, nullptr), UMRT_SUCCESS) << last_error();
  EXPECT_EQ(umrt_free(p), UMRT_SUCCESS) << last_error();
  EXPECT_EQ(get_stats().host_pool_pages, bytes / kPage) << "umrt_free does not empty the pool";
  ASSERT_EQ(umrt_malloc(&q, bytes), UMRT_SUCCESS) << last_error();
  ASSERT_EQ(umrt_prefetch(q, bytes, UMRT_LOCATION_DEVICE, nullptr), UMRT_SUCCESS) << last_error();
  EXPECT_TRUE(check_zero(q, bytes)) << "a fresh range reads zeros, never another's old bytes";
  fill_pattern(q, bytes, 52);
  EXPECT_TRUE(check_pattern(q, bytes, 52));
  EXPECT_EQ(umrt_free(q), UMRT_SUCCESS) << last_error();
}

// Concurrent batches of several ranges (lanes, CPU faults, prefetches both ways on 3 threads):
// data intact, and the pool's resident memory equals what it counts (no page left above count,
// no hole below it). (From an outside review.)
TEST_F(HostPool, ConcurrentBatchesConserveThePool) {
  SKIP_WITHOUT_MOVE();
  constexpr int kThreads = 3;
  const size_t bytes = 6 * MiB;
  std::vector<void *> r(kThreads);
  for (int t = 0; t < kThreads; ++t) {
    ASSERT_EQ(umrt_malloc(&r[t], bytes), UMRT_SUCCESS) << last_error();
    fill_pattern(r[t], bytes, 200 + t);
  }
  std::atomic<int> bad{0};
  std::vector<std::thread> th;
  for (int t = 0; t < kThreads; ++t)
    th.emplace_back([&, t] {
      auto *c = static_cast<uint8_t *>(r[t]);
      for (int round = 0; round < 12; ++round) {
        if (umrt_prefetch(c, bytes, UMRT_LOCATION_DEVICE, nullptr) != UMRT_SUCCESS) ++bad;
        if (round % 2) {
          if (umrt_prefetch(c, bytes, UMRT_LOCATION_HOST, nullptr) != UMRT_SUCCESS) ++bad;
        }
        // CPU faults (reads), then writes that change the pattern for the next round
        if (first_mismatch(c, bytes, 200 + t + 10 * round)) ++bad;
        fill_pattern(c, bytes, 200 + t + 10 * (round + 1));
      }
    });
  for (auto &x : th) x.join();
  EXPECT_EQ(bad.load(), 0);
  const umrt_stats s = get_stats();
  const PoolMap pm = find_pool(16 * MiB);
  std::printf("pool: host_pool_pages=%llu reused=%llu Rss=%ld\n", (unsigned long long)s.host_pool_pages,
              (unsigned long long)s.host_pages_reused, pm.rss);
  EXPECT_LE(s.host_pool_pages, 16 * MiB / kPage);
  EXPECT_EQ(static_cast<uint64_t>(pm.rss), s.host_pool_pages * kPage);
  for (int t = 0; t < kThreads; ++t) EXPECT_EQ(umrt_free(r[t]), UMRT_SUCCESS);
}

// mlockall(MCL_CURRENT | MCL_ONFAULT) locks the pool, not a range made after it: every move in
// is refused (the lock flags differ) and the claimed pool pages cannot be zapped while locked.
// They are unlocked and freed (none left mapped above count), and once nothing is locked the
// pool keeps pages again. (Before: leaked, and the pool kept nothing ever after.)
TEST_F(HostPool, RefusedMoveInUnderMlockallKeepsThePoolWorking) {
  SKIP_WITHOUT_MOVE();
  const size_t bytes = 2 * MiB, pages = bytes / kPage;
  void *p1 = nullptr, *p2 = nullptr;
  ASSERT_EQ(umrt_malloc(&p1, bytes), UMRT_SUCCESS) << last_error();
  fill_pattern(p1, bytes, 101);
  ASSERT_EQ(umrt_prefetch(p1, bytes, UMRT_LOCATION_DEVICE, nullptr), UMRT_SUCCESS) << last_error();
  ASSERT_EQ(get_stats().host_pool_pages, pages);
  if (syscall(SYS_mlockall, MCL_CURRENT | MCL_ONFAULT) != 0) GTEST_SKIP() << "mlockall: " << strerror(errno);
  ASSERT_EQ(umrt_malloc(&p2, bytes), UMRT_SUCCESS) << last_error();  // not VM_LOCKED (no MCL_FUTURE)
  fill_pattern(p2, bytes, 102);
  ASSERT_EQ(umrt_prefetch(p2, bytes, UMRT_LOCATION_DEVICE, nullptr), UMRT_SUCCESS) << last_error();
  ASSERT_EQ(umrt_prefetch(p2, bytes, UMRT_LOCATION_HOST, nullptr), UMRT_SUCCESS) << last_error();
  EXPECT_TRUE(check_pattern(p2, bytes, 102)) << "data must survive (UFFDIO_COPY fallback)";
  const umrt_stats a = get_stats();
  const PoolMap pm = find_pool(16 * MiB);
  syscall(SYS_munlockall);
  std::printf("after refused move in: host_pool_pages=%llu host_pages_reused=%llu pool Rss=%ld bytes\n",
              (unsigned long long)a.host_pool_pages, (unsigned long long)a.host_pages_reused, pm.rss);
  EXPECT_EQ(static_cast<uint64_t>(pm.rss), a.host_pool_pages * kPage)
      << "the pool holds memory it no longer counts (pages claimed, refused, not freed)";
  // The pool should work again once nothing is locked: R1 home (fresh pages) and out again.
  ASSERT_EQ(umrt_prefetch(p1, bytes, UMRT_LOCATION_HOST, nullptr), UMRT_SUCCESS) << last_error();
  EXPECT_TRUE(check_pattern(p1, bytes, 101));
  ASSERT_EQ(umrt_prefetch(p1, bytes, UMRT_LOCATION_DEVICE, nullptr), UMRT_SUCCESS) << last_error();
  const umrt_stats b = get_stats();
  std::printf("after munlockall and a fresh h->d batch: host_pool_pages=%llu (expected %zu)\n",
              (unsigned long long)b.host_pool_pages, pages + a.host_pool_pages);
  EXPECT_EQ(b.host_pool_pages, a.host_pool_pages + pages) << "the pool no longer keeps pages";
  EXPECT_TRUE(check_device_pattern(p1, bytes, 101));
  EXPECT_EQ(umrt_free(p1), UMRT_SUCCESS);
  EXPECT_EQ(umrt_free(p2), UMRT_SUCCESS);
}

// mlockall(MCL_FUTURE) in force at umrt_init (a real-time program's start): the pool is not
// populated and locked at once (its mapping is made inaccessible, unlocked, then opened), and
// it keeps pages. (Before: 16 MiB resident and locked, nothing ever kept.)
TEST_F(HostPool, MlockallFutureAtInitLeavesThePoolEmpty) {
  SKIP_WITHOUT_MOVE();
  ASSERT_EQ(umrt_shutdown(), UMRT_SUCCESS);
  if (syscall(SYS_mlockall, MCL_FUTURE) != 0) GTEST_SKIP() << "mlockall: " << strerror(errno);
  umrt_status st = umrt_init(&cfg_);
  syscall(SYS_munlockall);
  ASSERT_EQ(st, UMRT_SUCCESS) << last_error();
  const PoolMap pm = find_pool(16 * MiB);
  std::printf("pool right after init under MCL_FUTURE: Rss=%ld bytes, host_pool_pages=%llu\n", pm.rss,
              (unsigned long long)get_stats().host_pool_pages);
  EXPECT_EQ(pm.rss, 0) << "the pool is resident before it keeps anything";
  void *p = nullptr;
  ASSERT_EQ(umrt_malloc(&p, 2 * MiB), UMRT_SUCCESS) << last_error();
  fill_pattern(p, 2 * MiB, 801);
  ASSERT_EQ(umrt_prefetch(p, 2 * MiB, UMRT_LOCATION_DEVICE, nullptr), UMRT_SUCCESS) << last_error();
  EXPECT_EQ(get_stats().host_pool_pages, 512u) << "the pool keeps nothing";
  EXPECT_TRUE(check_pattern(p, 2 * MiB, 801));
  EXPECT_EQ(umrt_free(p), UMRT_SUCCESS);
}

// mlockall(MCL_CURRENT) after umrt_init populates every mapping, the pool's holes included: it
// returns (the pool is registered write-protect only, so the kernel fills them without asking
// umrt), and the pool keeps pages afterwards (the filled holes are freed on the next stash).
// In a fresh process: the locks would outlive the test. (Before: mlockall did not return.)
// (Raw syscalls for mlockall: the sanitizers make the libc call a no-op.)
void mlockall_then_use_the_pool() {
  alarm(30);  // killed by SIGALRM: mlockall or what follows did not return
  if (syscall(SYS_mlockall, MCL_CURRENT) != 0) _exit(4);
  syscall(SYS_munlockall);
  void *p = nullptr;
  if (umrt_malloc(&p, 2 * MiB) != UMRT_SUCCESS) _exit(5);
  fill_pattern(p, 2 * MiB, 71);
  if (umrt_prefetch(p, 2 * MiB, UMRT_LOCATION_DEVICE, nullptr) != UMRT_SUCCESS) _exit(6);
  umrt_stats s{};
  umrt_get_stats(&s);
  if (s.host_pool_pages != 512) _exit(7);
  if (!check_pattern(p, 2 * MiB, 71)) _exit(8);
  _exit(0);
}

TEST_F(SmallHostPool, MlockallCurrentAfterInitReturns) {
  SKIP_WITHOUT_MOVE();
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
  GTEST_SKIP() << "mlockall(MCL_CURRENT) would populate the sanitizer's shadow memory (terabytes)";
#endif
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(mlockall_then_use_the_pool(), ::testing::ExitedWithCode(0), "")
      << "exit 7: the pool kept nothing after mlockall; signal 14: mlockall did not return in 30 s";
}

// Off: nothing kept, nothing reused, the same data.
TEST_F(NoHostPool, KeepsNothing) {
  const size_t bytes = 4 * MiB;
  void *p = nullptr;
  ASSERT_EQ(umrt_malloc(&p, bytes), UMRT_SUCCESS) << last_error();
  fill_pattern(p, bytes, 61);
  ASSERT_EQ(umrt_prefetch(p, bytes, UMRT_LOCATION_DEVICE, nullptr), UMRT_SUCCESS) << last_error();
  EXPECT_EQ(get_stats().host_pool_pages, 0u);
  ASSERT_EQ(umrt_prefetch(p, bytes, UMRT_LOCATION_HOST, nullptr), UMRT_SUCCESS) << last_error();
  EXPECT_EQ(get_stats().host_pages_reused, 0u);
  EXPECT_TRUE(check_pattern(p, bytes, 61));
  EXPECT_EQ(umrt_free(p), UMRT_SUCCESS) << last_error();
}

}  // namespace
