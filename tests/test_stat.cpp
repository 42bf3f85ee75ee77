// test_stat.cpp — the live statistics segment umrt-stat reads (runtime/stat_segment.h): its layout,
// what it says about the process and its largest allocations (residency, faults, evictions,
// refetches), seqlock consistency while it is rewritten every millisecond, removal at
// umrt_shutdown and at exit, UMRT_STAT=0, a fork child leaving the parent's segment alone, and
// stale segments (a child killed with SIGKILL; a pid whose start time does not match; another
// layout version) recognised as such and swept by the next umrt_init.
#include "test_util.h"

#include "stat_segment.h"

#include <fcntl.h>
#include <signal.h>
#include <sched.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstddef>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

using namespace umrt_test;
namespace st = umrt::stat;

namespace {

std::string seg_path(long pid) { return std::string(st::kShmDir) + "/umrt." + std::to_string(pid); }
bool seg_exists(long pid) { return access(seg_path(pid).c_str(), F_OK) == 0; }

// A snapshot of this process's segment taken after at least `updates` more updates.
st::Segment fresh_snapshot(int updates = 2) {
  st::Segment s{};
  EXPECT_EQ(st::read_segment(getpid(), &s), st::ReadResult::ok);
  const uint64_t first = s.updates;
  for (int i = 0; i < 2000 && s.updates < first + static_cast<uint64_t>(updates); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
    EXPECT_EQ(st::read_segment(getpid(), &s), st::ReadResult::ok);
  }
  EXPECT_GE(s.updates, first + static_cast<uint64_t>(updates)) << "the segment is not updated";
  return s;
}

// A snapshot once the range table was scanned with n allocations in it (a scan comes at most
// every update, less often when one took long: a loaded machine).
st::Segment snapshot_with(uint64_t n) {
  st::Segment s = fresh_snapshot();
  for (int i = 0; i < 400 && s.nallocs != n; ++i) s = fresh_snapshot(1);
  EXPECT_EQ(s.nallocs, n);
  return s;
}

const st::Alloc *row_of(const st::Segment &s, const void *p) {
  for (uint64_t i = 0; i < s.nrows; ++i)
    if (s.allocs[i].address == reinterpret_cast<uintptr_t>(p)) return &s.allocs[i];
  return nullptr;
}

// Fixture: sim, small device memory, updates every 5 ms (UMRT_STAT_INTERVAL).
class Stat : public UmrtTest {
 protected:
  void SetUp() override {
    setenv("UMRT_STAT_INTERVAL", "5", 1);
    unsetenv("UMRT_STAT");
    UmrtTest::SetUp();
  }
  void TearDown() override {
    UmrtTest::TearDown();
    unsetenv("UMRT_STAT_INTERVAL");
    unsetenv("UMRT_STAT");
  }
  void Configure(umrt_config &cfg) override { cfg.device_memory = 4 * MiB; }  // two chunks
};

// Runs this test binary again as a child with only StatChild.Run, in mode `mode` (see there);
// returns its pid. The child writes one byte to the pipe once its segment is published.
pid_t spawn_child(const char *mode, int *ready_fd) {
  int p[2];
  if (pipe(p) != 0) return -1;
  const pid_t pid = fork();
  if (pid == 0) {
    close(p[0]);
    setenv("UMRT_STAT_CHILD", mode, 1);
    setenv("UMRT_STAT_CHILD_FD", std::to_string(p[1]).c_str(), 1);
    char exe[] = "/proc/self/exe", filter[] = "--gtest_filter=StatChild.Run";
    char *argv[] = {exe, filter, nullptr};
    execv(exe, argv);
    _exit(127);
  }
  close(p[1]);
  *ready_fd = p[0];
  return pid;
}

bool wait_ready(int fd) {
  char c = 0;
  const bool ok = read(fd, &c, 1) == 1;
  close(fd);
  return ok;
}

// Writes s as the segment of pid (/dev/shm/umrt.<pid>, which must not exist).
bool write_segment(long pid, const st::Segment &s) {
  const int fd = shm_open(st::shm_name(pid).c_str(), O_CREAT | O_EXCL | O_RDWR, 0400);
  if (fd < 0) return false;
  const bool ok = write(fd, &s, sizeof s) == static_cast<ssize_t>(sizeof s);
  close(fd);
  return ok;
}

// A fake segment at /dev/shm/umrt.<pid> (version and start time as given).
st::Segment fake(long pid, uint32_t version, uint64_t start_time) {
  st::Segment s{};
  s.magic = st::kMagic;
  s.version = version;
  s.bytes = sizeof(st::Segment);
  s.stat_count = st::kStatCount;
  s.alloc_rows = st::kAllocRows;
  s.pid = pid;
  s.start_time = start_time;
  return s;
}

// read_segment of a segment written as s. Tests run in parallel (ctest -j): another process's
// umrt_init may sweep a stale one between the write and the read; then it is written again.
st::ReadResult write_and_read(long pid, const st::Segment &s, uint32_t *version = nullptr) {
  st::Segment out;
  st::ReadResult r = st::ReadResult::missing;
  for (int i = 0; i < 5 && r == st::ReadResult::missing; ++i) {
    shm_unlink(st::shm_name(pid).c_str());
    if (!write_segment(pid, s)) return st::ReadResult::missing;
    r = st::read_segment(pid, &out, true, version);
  }
  return r;
}

}  // namespace

// The child of the tests below (skipped unless UMRT_STAT_CHILD is set): initialises umrt, tells
// the parent, then `hold` (sleeps until killed) or `exit` (exit(0) without umrt_shutdown).
TEST(StatChild, Run) {
  const char *mode = std::getenv("UMRT_STAT_CHILD");
  if (!mode) GTEST_SKIP() << "only run as the child of the Stat tests";
  umrt_config cfg = sim_config(4 * MiB);
  ASSERT_EQ(umrt_init(&cfg), UMRT_SUCCESS) << last_error();
  void *p = nullptr;
  ASSERT_EQ(umrt_malloc(&p, 4 * MiB), UMRT_SUCCESS);
  std::memset(p, 1, 4 * MiB);
  const int fd = std::atoi(std::getenv("UMRT_STAT_CHILD_FD"));
  const char c = 'r';
  ASSERT_EQ(write(fd, &c, 1), 1);
  if (!std::strcmp(mode, "exit")) std::exit(0);
  for (;;) pause();
}

// The child of Stat.FullDevShmIsNoSegmentNotACrash (skipped unless UMRT_STAT_FULL_SHM is set): on
// a full /dev/shm, umrt works, without a segment.
TEST(StatChild, FullShm) {
  if (!std::getenv("UMRT_STAT_FULL_SHM")) GTEST_SKIP() << "only run as the child of Stat.FullDevShmIsNoSegmentNotACrash";
  umrt_config cfg = sim_config(4 * MiB);
  ASSERT_EQ(umrt_init(&cfg), UMRT_SUCCESS) << last_error();
  EXPECT_FALSE(seg_exists(getpid())) << "a segment on a full /dev/shm";
  void *p = nullptr;
  ASSERT_EQ(umrt_malloc(&p, 2 * MiB), UMRT_SUCCESS) << last_error();
  static_cast<volatile char *>(p)[0] = 1;
  EXPECT_EQ(umrt_free(p), UMRT_SUCCESS);
  EXPECT_EQ(umrt_shutdown(), UMRT_SUCCESS);
}

TEST(StatLayout, FixedLayout) {
  // The words readers in any language rely on.
  EXPECT_EQ(offsetof(st::Segment, magic), 0u);
  EXPECT_EQ(offsetof(st::Segment, version), 8u);
  EXPECT_EQ(offsetof(st::Segment, bytes), 12u);
  EXPECT_EQ(offsetof(st::Segment, pid), 24u);
  EXPECT_EQ(offsetof(st::Segment, start_time), 32u);
  EXPECT_EQ(offsetof(st::Segment, seq) % 8, 0u);
  EXPECT_EQ(sizeof(st::Alloc), 9 * 8u);
  EXPECT_EQ(sizeof(st::Segment) % 8, 0u);
  EXPECT_LE(sizeof(st::Segment), 4096u);  // one page
  // Every name in kStatNames is the umrt_stats field at its index.
#define FIELD_AT(f) EXPECT_STREQ(st::kStatNames[offsetof(umrt_stats, f) / 8], #f);
  FIELD_AT(cpu_faults) FIELD_AT(bytes_to_device) FIELD_AT(bytes_to_host) FIELD_AT(evictions) FIELD_AT(batches)
  FIELD_AT(pages_to_device) FIELD_AT(pages_to_host) FIELD_AT(zero_fills) FIELD_AT(pages_restored)
  FIELD_AT(pages_skipped_locked) FIELD_AT(fault_groups) FIELD_AT(write_faults) FIELD_AT(write_cancels)
  FIELD_AT(device_bytes_in_use) FIELD_AT(device_capacity) FIELD_AT(pages_selected) FIELD_AT(ns_collect)
  FIELD_AT(ns_unmap) FIELD_AT(ns_copy) FIELD_AT(ns_finalize) FIELD_AT(host_pool_pages) FIELD_AT(host_pages_reused)
  FIELD_AT(bytes_from_storage) FIELD_AT(bytes_to_storage) FIELD_AT(host_pages) FIELD_AT(swap_outs)
  FIELD_AT(swap_ins) FIELD_AT(pages_dropped_clean)
#undef FIELD_AT
  // Field 22 of our own /proc/self/stat is read (a process name with spaces and ')' is fine).
  EXPECT_GT(st::process_start_time(getpid()), 0u);
}

TEST_F(Stat, PublishesProcessAndAllocations) {
  UMRT_SKIP_UNLESS_SIM_RUN("reads the segment, not the device");
  const std::string path = seg_path(getpid());
  struct stat sb;
  ASSERT_EQ(stat(path.c_str(), &sb), 0) << path << ": " << strerror(errno);
  EXPECT_EQ(sb.st_mode & 0777, 0400u) << "readable by its owner only, writable by no one";
  EXPECT_EQ(sb.st_uid, geteuid());

  void *big = nullptr, *mid = nullptr, *small = nullptr;
  ASSERT_EQ(umrt_malloc(&big, 6 * MiB), UMRT_SUCCESS);
  ASSERT_EQ(umrt_malloc(&mid, 4 * MiB), UMRT_SUCCESS);
  ASSERT_EQ(umrt_malloc(&small, 64 * KiB), UMRT_SUCCESS);
  std::memset(big, 1, 6 * MiB);
  std::memset(mid, 2, 4 * MiB);
  std::memset(small, 3, 64 * KiB);
  ASSERT_EQ(umrt_prefetch(mid, 4 * MiB, UMRT_LOCATION_DEVICE, nullptr), UMRT_SUCCESS) << last_error();
  // The first 2 MiB of big to the device (evicts one block of mid: device memory is 4 MiB), then
  // mid's evicted block back (refetch: thrashing), then a CPU read of a page of mid (a fault).
  ASSERT_EQ(umrt_prefetch(big, 2 * MiB, UMRT_LOCATION_DEVICE, nullptr), UMRT_SUCCESS) << last_error();
  ASSERT_EQ(umrt_prefetch(mid, 4 * MiB, UMRT_LOCATION_DEVICE, nullptr), UMRT_SUCCESS) << last_error();
  volatile char c = static_cast<char *>(mid)[10];
  (void)c;

  const st::Segment s = snapshot_with(3);
  const umrt_stats now = get_stats();
  EXPECT_EQ(s.magic, st::kMagic);
  EXPECT_EQ(s.version, st::kVersion);
  EXPECT_EQ(s.pid, getpid());
  EXPECT_EQ(s.start_time, st::process_start_time(getpid()));
  EXPECT_STREQ(s.backend, "sim");
  EXPECT_EQ(s.interval_ns, 5000000u);
  EXPECT_EQ(s.sum, st::segment_sum(s));
  EXPECT_EQ(s.nallocs, 3u);
  EXPECT_EQ(s.alloc_bytes, 10 * MiB + 64 * KiB);
  ASSERT_EQ(s.nrows, 3u);
  EXPECT_EQ(s.allocs[0].address, reinterpret_cast<uintptr_t>(big)) << "largest first";
  EXPECT_EQ(s.allocs[1].address, reinterpret_cast<uintptr_t>(mid));
  EXPECT_EQ(s.allocs[2].address, reinterpret_cast<uintptr_t>(small));
  EXPECT_EQ(s.allocs[2].flags & st::kPacked, st::kPacked);
  // Residency: big: 2 MiB on the device or back home, the rest on the host; every page is somewhere.
  for (uint64_t i = 0; i < 3; ++i) {
    const st::Alloc &a = s.allocs[i];
    EXPECT_EQ(a.host_bytes + a.device_bytes + a.storage_bytes, a.size) << "row " << i;
    EXPECT_EQ(a.storage_bytes, 0u);
  }
  const st::Alloc *m = row_of(s, mid);
  ASSERT_NE(m, nullptr);
  EXPECT_GE(m->device_bytes, 2 * MiB);
  EXPECT_GE(m->faults, 1u) << "the CPU read of a device-resident page of mid";
  EXPECT_GE(m->evictions + row_of(s, big)->evictions, 1u);
  EXPECT_GE(m->refetches + row_of(s, big)->refetches, 1u) << "mid's evicted block came back to the device";
  EXPECT_EQ(row_of(s, small)->device_bytes, 0u);
  EXPECT_EQ(row_of(s, small)->host_bytes, 64 * KiB);
  // The counters are umrt_stats' (those that only grow: at most what umrt_get_stats says now).
  EXPECT_EQ(s.stat_count, st::kStatCount);
  umrt_stats seg{};
  std::memcpy(&seg, s.stats, sizeof seg);
  EXPECT_GE(seg.cpu_faults, 1u);
  EXPECT_LE(seg.cpu_faults, now.cpu_faults);
  EXPECT_GE(seg.evictions, 1u);
  EXPECT_EQ(seg.evictions, now.evictions);
  EXPECT_EQ(seg.bytes_to_device, now.bytes_to_device);
  EXPECT_EQ(seg.device_capacity, 4 * MiB);
  EXPECT_GE(s.refetches, 1u);

  // A freed allocation leaves the table (its row at the next update; the count at the next scan
  // of the range table, which may come a few updates later: scans take at most ~1% of the time).
  ASSERT_EQ(umrt_free(big), UMRT_SUCCESS);
  EXPECT_EQ(row_of(fresh_snapshot(), big), nullptr);
  snapshot_with(2);
  umrt_free(mid);
  umrt_free(small);
}

TEST_F(Stat, LargestThirtyTwo) {
  UMRT_SKIP_UNLESS_SIM_RUN("reads the segment, not the device");
  std::vector<void *> ps;
  for (size_t i = 1; i <= 40; ++i) {
    void *p = nullptr;
    ASSERT_EQ(umrt_malloc(&p, i * 3 * kPage), UMRT_SUCCESS);
    ps.push_back(p);
  }
  const st::Segment s = snapshot_with(40);
  ASSERT_EQ(s.nrows, st::kAllocRows);
  for (uint64_t i = 0; i < s.nrows; ++i) EXPECT_EQ(s.allocs[i].size, (40 - i) * 3 * kPage) << "row " << i;
  for (void *p : ps) umrt_free(p);
}

// Readers racing updates every millisecond (with counters moving under them) never get a torn
// snapshot: each one's sum matches, and its update count never goes backwards.
TEST_F(Stat, SeqlockConsistentUnderUpdates) {
  UMRT_SKIP_UNLESS_SIM_RUN("reads the segment, not the device");
  umrt_shutdown();
  setenv("UMRT_STAT_INTERVAL", "1", 1);
  umrt_config cfg = sim_config(4 * MiB);
  ASSERT_EQ(umrt_init(&cfg), UMRT_SUCCESS) << last_error();
  void *a = nullptr, *b = nullptr;
  ASSERT_EQ(umrt_malloc(&a, 4 * MiB), UMRT_SUCCESS);
  ASSERT_EQ(umrt_malloc(&b, 4 * MiB), UMRT_SUCCESS);
  std::atomic<bool> stop{false};
  std::thread mover([&] {  // evictions and refetches, all the time
    while (!stop.load()) {
      umrt_prefetch(a, 4 * MiB, UMRT_LOCATION_DEVICE, nullptr);
      umrt_prefetch(b, 4 * MiB, UMRT_LOCATION_DEVICE, nullptr);
    }
  });
  // Mapped once, read as fast as possible (millions of snapshots: hundreds race an update).
  const int fd = shm_open(st::shm_name(getpid()).c_str(), O_RDONLY, 0);
  ASSERT_GE(fd, 0) << strerror(errno);
  void *m = mmap(nullptr, sizeof(st::Segment), PROT_READ, MAP_SHARED, fd, 0);
  close(fd);
  ASSERT_NE(m, MAP_FAILED);
  const auto *w = static_cast<const uint64_t *>(m);
  std::atomic<uint64_t> reads{0}, torn{0}, backwards{0}, not_ready{0};
  auto reader = [&] {
    uint64_t last = 0;
    const auto end = std::chrono::steady_clock::now() + std::chrono::milliseconds(1500);
    while (std::chrono::steady_clock::now() < end) {
      st::Segment s;
      if (st::read_mapped(w, sizeof(st::Segment), &s) != st::ReadResult::ok) {
        ++not_ready;
        continue;
      }
      ++reads;
      if (s.sum != st::segment_sum(s)) ++torn;
      if (s.updates < last) ++backwards;
      last = s.updates;
    }
  };
  std::thread r1(reader), r2(reader);
  r1.join();
  r2.join();
  stop = true;
  mover.join();
  munmap(m, sizeof(st::Segment));
  st::Segment s{};
  ASSERT_EQ(st::read_segment(getpid(), &s), st::ReadResult::ok);
  EXPECT_GT(reads.load(), 10000u);
  EXPECT_GT(s.updates, 100u) << "updated every millisecond";
  EXPECT_EQ(torn.load(), 0u) << "of " << reads.load() << " snapshots";
  EXPECT_EQ(backwards.load(), 0u);
  EXPECT_EQ(not_ready.load(), 0u) << "every read gets a snapshot (retrying while an update runs)";
  umrt_free(a);
  umrt_free(b);
}

TEST_F(Stat, RemovedAtShutdownAndOffWithUmrtStat0) {
  UMRT_SKIP_UNLESS_SIM_RUN("process-level behaviour");
  ASSERT_TRUE(seg_exists(getpid()));
  ASSERT_EQ(umrt_shutdown(), UMRT_SUCCESS);
  EXPECT_FALSE(seg_exists(getpid())) << "umrt_shutdown unlinks the segment";
  st::Segment s;
  EXPECT_EQ(st::read_segment(getpid(), &s), st::ReadResult::missing);
  setenv("UMRT_STAT", "0", 1);
  umrt_config cfg = sim_config(4 * MiB);
  ASSERT_EQ(umrt_init(&cfg), UMRT_SUCCESS) << last_error();
  EXPECT_FALSE(seg_exists(getpid())) << "UMRT_STAT=0: no segment";
  ASSERT_EQ(umrt_shutdown(), UMRT_SUCCESS);
  setenv("UMRT_STAT", "maybe", 1);
  EXPECT_EQ(umrt_config_defaults(&cfg), UMRT_ERROR_INVALID_VALUE);
  EXPECT_NE(std::string(last_error()).find("UMRT_STAT"), std::string::npos) << last_error();
  setenv("UMRT_STAT", "1", 1);
  ASSERT_EQ(umrt_init(&cfg), UMRT_SUCCESS) << last_error();
  EXPECT_TRUE(seg_exists(getpid())) << "a new segment after re-initialisation";
}

TEST_F(Stat, RemovedAtExitWithoutShutdown) {
  UMRT_SKIP_UNLESS_SIM_RUN("process-level behaviour");
  int fd = -1;
  const pid_t child = spawn_child("exit", &fd);
  ASSERT_GT(child, 0);
  ASSERT_TRUE(wait_ready(fd)) << "the child did not start";
  int status = 0;
  ASSERT_EQ(waitpid(child, &status, 0), child);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
  EXPECT_FALSE(seg_exists(child)) << "exit() without umrt_shutdown removes the segment";
}

TEST_F(Stat, ForkChildLeavesTheParentsSegment) {
  UMRT_SKIP_UNLESS_SIM_RUN("process-level behaviour");
  ASSERT_TRUE(seg_exists(getpid()));
  for (int how = 0; how < 2; ++how) {
    const pid_t pid = fork();
    if (pid == 0) {
      if (how == 1) umrt_shutdown();  // NOT_SUPPORTED in a child: nothing of the parent's changes
      std::exit(0);                   // atexit handlers run in the child
    }
    ASSERT_GT(pid, 0);
    int status = 0;
    ASSERT_EQ(waitpid(pid, &status, 0), pid);
    EXPECT_TRUE(seg_exists(getpid())) << "a fork child removed its parent's segment (how " << how << ")";
    EXPECT_FALSE(seg_exists(pid)) << "a fork child has no segment of its own";
  }
  st::Segment s;
  EXPECT_EQ(st::read_segment(getpid(), &s), st::ReadResult::ok);
}

// A child killed with SIGKILL leaves its segment: readers call it stale, the next umrt_init
// removes it. A segment whose pid lives but whose start time differs is stale too; another
// layout version is reported as such.
TEST_F(Stat, StaleSegments) {
  UMRT_SKIP_UNLESS_SIM_RUN("process-level behaviour");
  int fd = -1;
  const pid_t child = spawn_child("hold", &fd);
  ASSERT_GT(child, 0);
  ASSERT_TRUE(wait_ready(fd)) << "the child did not start";
  st::Segment s{};
  for (int i = 0; i < 1000 && (st::read_segment(child, &s) != st::ReadResult::ok || s.nallocs != 1); ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(5));  // its next update lists the allocation
  ASSERT_EQ(st::read_segment(child, &s), st::ReadResult::ok);
  EXPECT_EQ(s.pid, child);
  EXPECT_EQ(s.nallocs, 1u);
  ASSERT_EQ(st::read_segment(child, &s), st::ReadResult::ok);
  const st::Segment saved = s;
  ASSERT_EQ(kill(child, SIGKILL), 0);
  int status = 0;
  ASSERT_EQ(waitpid(child, &status, 0), child);
  // (Another test's process may sweep it at once: then it is put back as it was.)
  if (!seg_exists(child)) {
    ASSERT_TRUE(write_segment(child, saved));
  }
  ASSERT_TRUE(seg_exists(child)) << "SIGKILL: nobody removed it";
  const st::ReadResult r = st::read_segment(child, &s);
  EXPECT_TRUE(r == st::ReadResult::stale ||
              (r == st::ReadResult::missing && write_and_read(child, saved) == st::ReadResult::stale))
      << st::read_result_string(r);
  if (!seg_exists(child)) {
    ASSERT_TRUE(write_segment(child, saved));
  }
  EXPECT_EQ(st::read_segment(child, &s, false), st::ReadResult::ok) << "the data itself is intact";

  // A live pid (a sleeping fork child) with a segment of another start time, and one with
  // another layout version.
  const pid_t live = fork();
  if (live == 0) {
    for (;;) pause();
  }
  ASSERT_GT(live, 0);
  EXPECT_EQ(write_and_read(live, fake(live, st::kVersion, st::process_start_time(live) + 12345)),
            st::ReadResult::stale)
      << "pid reused: start time differs";
  uint32_t v = 0;
  EXPECT_EQ(write_and_read(live, fake(live, st::kVersion + 1, st::process_start_time(live)), &v),
            st::ReadResult::version);
  EXPECT_EQ(v, st::kVersion + 1);

  // The next umrt_init sweeps the dead child's segment, and leaves the live pid's alone.
  ASSERT_EQ(umrt_shutdown(), UMRT_SUCCESS);
  umrt_config cfg = sim_config(4 * MiB);
  ASSERT_EQ(umrt_init(&cfg), UMRT_SUCCESS) << last_error();
  EXPECT_FALSE(seg_exists(child)) << "a dead process's segment is removed by the next umrt_init";
  EXPECT_TRUE(seg_exists(live)) << "a live process's segment is never removed";
  shm_unlink(st::shm_name(live).c_str());
  kill(live, SIGKILL);
  waitpid(live, &status, 0);
}

// What anyone may put in /dev/shm under a umrt name (an outside review of umrt-stat): a FIFO
// (the reader must not block on it), a file another user could write, a segment whose writer
// is gone though its pid lives (an exec without shutdown): none is read as a live segment.
TEST_F(Stat, HostileAndAbandonedSegmentsAreNotReadAsLive) {
  UMRT_SKIP_UNLESS_SIM_RUN("process-level behaviour");
  const pid_t live = fork();
  if (live == 0) {
    for (;;) pause();
  }
  ASSERT_GT(live, 0);
  st::Segment s{};
  ASSERT_EQ(mkfifo(seg_path(live).c_str(), 0666), 0) << strerror(errno);
  alarm(20);  // a reader blocking in open() would hang the test: fail it instead
  EXPECT_EQ(st::read_segment(live, &s), st::ReadResult::bad) << "a FIFO";
  alarm(0);
  unlink(seg_path(live).c_str());
  ASSERT_TRUE(write_segment(live, fake(live, st::kVersion, st::process_start_time(live))));
  ASSERT_EQ(chmod(seg_path(live).c_str(), 0666), 0);
  EXPECT_EQ(st::read_segment(live, &s), st::ReadResult::bad) << "writable by others";
  ASSERT_EQ(chmod(seg_path(live).c_str(), 0400), 0);
  // Right pid and start time, but no process holds it (its flock): abandoned.
  EXPECT_EQ(st::read_segment(live, &s), st::ReadResult::stale) << "nobody holds it";
  shm_unlink(st::shm_name(live).c_str());
  kill(live, SIGKILL);
  int status = 0;
  waitpid(live, &status, 0);
}

// A segment held by a live process (its flock) is never swept, whatever its pid says: a process
// of another pid namespace sharing /dev/shm (docker --ipc=host) has pids that are dead here.
TEST_F(Stat, SweepLeavesSegmentsHeldByLiveProcesses) {
  UMRT_SKIP_UNLESS_SIM_RUN("process-level behaviour");
  const pid_t dead = fork();  // a pid that is dead here
  if (dead == 0) _exit(0);
  int status = 0;
  ASSERT_EQ(waitpid(dead, &status, 0), dead);
  int ready[2];
  ASSERT_EQ(pipe(ready), 0);
  const pid_t holder = fork();  // "the other namespace's process": holds the segment's flock
  if (holder == 0) {
    const int fd = shm_open(st::shm_name(dead).c_str(), O_CREAT | O_EXCL | O_RDWR, 0400);
    const st::Segment f = fake(dead, st::kVersion, 1);
    if (fd < 0 || write(fd, &f, sizeof f) != static_cast<ssize_t>(sizeof f) || flock(fd, LOCK_SH) != 0) _exit(1);
    char c = 1;
    if (write(ready[1], &c, 1) != 1) _exit(1);
    for (;;) pause();
  }
  ASSERT_GT(holder, 0);
  char c = 0;
  ASSERT_EQ(read(ready[0], &c, 1), 1) << "the holder did not start";
  ASSERT_EQ(umrt_shutdown(), UMRT_SUCCESS);
  umrt_config cfg = sim_config(4 * MiB);
  ASSERT_EQ(umrt_init(&cfg), UMRT_SUCCESS) << last_error();  // sweeps
  EXPECT_TRUE(seg_exists(dead)) << "a segment a live process holds was swept";
  kill(holder, SIGKILL);
  waitpid(holder, &status, 0);
  ASSERT_EQ(umrt_shutdown(), UMRT_SUCCESS);
  ASSERT_EQ(umrt_init(&cfg), UMRT_SUCCESS) << last_error();
  EXPECT_FALSE(seg_exists(dead)) << "its holder gone, the next sweep removes it";
  shm_unlink(st::shm_name(dead).c_str());
  close(ready[0]);
  close(ready[1]);
}

// A full /dev/shm (a container's 64 MiB, filled by others): umrt runs on without a segment,
// never a SIGBUS at the first store into it. In a child with its own mount namespace and a tiny
// tmpfs on /dev/shm (root only: skipped otherwise).
TEST_F(Stat, FullDevShmIsNoSegmentNotACrash) {
  UMRT_SKIP_UNLESS_SIM_RUN("process-level behaviour");
  if (geteuid() != 0) GTEST_SKIP() << "needs root (a mount namespace with a small /dev/shm)";
  umrt_shutdown();
  const pid_t child = fork();
  if (child == 0) {
    if (unshare(CLONE_NEWNS) != 0 || mount("none", "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0 ||
        mount("tmpfs", "/dev/shm", "tmpfs", 0, "size=8k") != 0)
      _exit(77);
    const int fill = open("/dev/shm/filler", O_CREAT | O_WRONLY, 0600);
    char page[4096] = {1};
    while (fill >= 0 && write(fill, page, sizeof page) == static_cast<ssize_t>(sizeof page)) {
    }
    // A fresh process (umrt refuses a fork child), in this mount namespace.
    setenv("UMRT_STAT_FULL_SHM", "1", 1);
    char exe[] = "/proc/self/exe", filter[] = "--gtest_filter=StatChild.FullShm";
    char *argv[] = {exe, filter, nullptr};
    execv(exe, argv);
    _exit(5);
  }
  ASSERT_GT(child, 0);
  int status = 0;
  ASSERT_EQ(waitpid(child, &status, 0), child);
  if (WIFEXITED(status) && WEXITSTATUS(status) == 77) GTEST_SKIP() << "no mount namespace here";
  EXPECT_TRUE(WIFEXITED(status)) << "the child died of signal " << (WIFSIGNALED(status) ? WTERMSIG(status) : 0);
  EXPECT_EQ(WEXITSTATUS(status), 0);
}
