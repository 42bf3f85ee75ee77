// test_fault.cpp — CPU faults on device-resident pages: concurrent readers and writers, writers
// racing migrations under both write-fault policies, kernel accesses (read(2)/write(2)), fork(),
// and the sequential prefetch window. Runs on sim and, with UMRT_TEST_BACKEND=cuda (label gpu), on
// cuda (device copies read with dev_read).
#include <gtest/gtest.h>
#include <umrt/umrt.h>

#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <barrier>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "test_util.h"

namespace {

using namespace umrt_test;
using Clock = std::chrono::steady_clock;

class Fault : public UmrtTest {
 protected:
  bool ValidateAtEnd() const override { return true; }
};

// ---- concurrent CPU access --------------------------------------------------------------------

// 4 threads, interleaved pages (every block is faulted by all threads at once): each checks its
// pages and rewrites them. Final contents exact.
TEST_F(Fault, ConcurrentDisjointReadWrite) {
  const size_t size = 16 * MiB, npages = size / kPage;
  constexpr int kThreads = 4;
  Managed m(size);
  ASSERT_TRUE(m);
  fill_pattern(m.get(), size, 1);
  ASSERT_EQ(umrt_prefetch(m.get(), size, UMRT_LOCATION_DEVICE, nullptr), UMRT_SUCCESS) << last_error();
  umrt_stats s0 = get_stats();
  std::atomic<size_t> bad{0};
  std::vector<std::thread> ts;
  for (int t = 0; t < kThreads; ++t)
    ts.emplace_back([&, t] {
      for (size_t pg = t; pg < npages; pg += kThreads) {
        if (first_mismatch(m + pg * kPage, kPage, 1, pg * kPage)) ++bad;
        fill_pattern(m + pg * kPage, kPage, 2, pg * kPage);
      }
    });
  for (auto &t : ts) t.join();
  EXPECT_EQ(bad.load(), 0u) << "pages read wrong data after a fault";
  EXPECT_TRUE(check_pattern(m.get(), size, 2));
  umrt_stats s1 = get_stats();
  EXPECT_GT(s1.cpu_faults, s0.cpu_faults);
  EXPECT_EQ(s1.bytes_to_host - s0.bytes_to_host, size);
  EXPECT_TRUE(all_pages_at(m.get(), size, UMRT_LOCATION_HOST));
}

// 4 threads reading the same device-resident pages at once, from different starting points.
TEST_F(Fault, ConcurrentOverlappingReaders) {
  const size_t size = 8 * MiB;
  constexpr int kThreads = 4;
  Managed m(size);
  ASSERT_TRUE(m);
  fill_pattern(m.get(), size, 3);
  for (int round = 0; round < 3; ++round) {
    SCOPED_TRACE(round);
    ASSERT_EQ(umrt_prefetch(m.get(), size, UMRT_LOCATION_DEVICE, nullptr), UMRT_SUCCESS) << last_error();
    std::atomic<size_t> bad{0};
    std::vector<std::thread> ts;
    for (int t = 0; t < kThreads; ++t)
      ts.emplace_back([&, t] {
        size_t start = (size / kThreads) * t;
        if (first_mismatch(m + start, size - start, 3, start)) ++bad;
        if (start && first_mismatch(m.get(), start, 3)) ++bad;
      });
    for (auto &t : ts) t.join();
    EXPECT_EQ(bad.load(), 0u);
    EXPECT_TRUE(all_pages_at(m.get(), size, UMRT_LOCATION_HOST));
    EXPECT_EQ(get_stats().bytes_to_host, (round + 1) * size) << "each page comes back exactly once";
  }
}

// Threads writing different words of the SAME pages (duplicate faults on one page), the range
// moved to the device between rounds.
TEST_F(Fault, ConcurrentOverlappingWriters) {
  const size_t size = 4 * MiB, nwords = size / 8;
  constexpr int kThreads = 4, kRounds = 6;
  Managed m(size);
  ASSERT_TRUE(m);
  auto *w = reinterpret_cast<uint64_t *>(m.get());
  auto value = [](size_t i, int r) { return mix64(i * 131 + r); };
  for (size_t i = 0; i < nwords; ++i) w[i] = value(i, 0);
  std::barrier sync(kThreads + 1);
  std::atomic<size_t> bad{0};
  std::vector<std::thread> ts;
  for (int t = 0; t < kThreads; ++t)
    ts.emplace_back([&, t] {
      for (int r = 1; r <= kRounds; ++r) {
        sync.arrive_and_wait();  // the range is on the device now
        for (size_t i = t; i < nwords; i += kThreads) {
          if (w[i] != value(i, r - 1)) ++bad;
          w[i] = value(i, r);
        }
        sync.arrive_and_wait();
      }
    });
  for (int r = 1; r <= kRounds; ++r) {
    EXPECT_EQ(umrt_prefetch(m.get(), size, UMRT_LOCATION_DEVICE, nullptr), UMRT_SUCCESS) << last_error();
    EXPECT_TRUE(all_pages_at(m.get(), size, UMRT_LOCATION_DEVICE));
    sync.arrive_and_wait();
    sync.arrive_and_wait();
  }
  for (auto &t : ts) t.join();
  EXPECT_EQ(bad.load(), 0u);
  for (size_t i = 0; i < nwords; ++i) ASSERT_EQ(w[i], value(i, kRounds)) << "word " << i;
}

// First touch of never-touched pages by several threads at once (zero-fill faults).
TEST_F(Fault, ConcurrentFirstTouch) {
  const size_t size = 8 * MiB, npages = size / kPage;
  constexpr int kThreads = 4;
  Managed m(size);
  ASSERT_TRUE(m);
  std::atomic<size_t> nonzero{0};
  std::vector<std::thread> ts;
  for (int t = 0; t < kThreads; ++t)
    ts.emplace_back([&, t] {
      for (size_t pg = t; pg < npages; pg += kThreads) {
        if (!check_zero(m + pg * kPage, kPage)) ++nonzero;
        fill_pattern(m + pg * kPage, kPage, 4, pg * kPage);
      }
    });
  for (auto &t : ts) t.join();
  EXPECT_EQ(nonzero.load(), 0u);
  EXPECT_TRUE(check_pattern(m.get(), size, 4));
  EXPECT_EQ(get_stats().bytes_to_host, 0u) << "zero-fill is not a copy";
}

// Readers of constant data while another thread moves the range back and forth.
TEST_F(Fault, ReadersRacingMigrations) {
  const size_t size = 2 * MiB;
  constexpr int kReaders = 2;
  Managed m(size);
  ASSERT_TRUE(m);
  fill_pattern(m.get(), size, 5);
  std::atomic<bool> stop{false};
  std::atomic<size_t> bad{0}, passes{0};
  std::atomic<int> failed_prefetch{0};
  std::vector<std::thread> ts;
  for (int t = 0; t < kReaders; ++t)
    ts.emplace_back([&, t] {
      uint64_t x = 1000 + t;
      while (!stop.load()) {
        x = mix64(x);
        size_t pg = x % (size / kPage);
        if (first_mismatch(m + pg * kPage, kPage, 5, pg * kPage)) ++bad;
        ++passes;
      }
    });
  auto end = Clock::now() + std::chrono::milliseconds(800);
  int cycles = 0;
  std::string err;
  while (Clock::now() < end) {
    if (umrt_prefetch(m.get(), size, UMRT_LOCATION_DEVICE, nullptr) != UMRT_SUCCESS) {
      ++failed_prefetch;
      err = last_error();
    }
    if (umrt_prefetch(m.get(), size, UMRT_LOCATION_HOST, nullptr) != UMRT_SUCCESS) {
      ++failed_prefetch;
      err = last_error();
    }
    ++cycles;
  }
  stop = true;
  for (auto &t : ts) t.join();
  EXPECT_EQ(bad.load(), 0u) << "readers saw wrong data during migrations";
  EXPECT_EQ(failed_prefetch.load(), 0) << "last error: " << err;
  EXPECT_GT(cycles, 2);
  EXPECT_GT(passes.load(), 0u);
  EXPECT_TRUE(check_pattern(m.get(), size, 5));
}

// ---- a writer racing migrations, under both write-fault policies ------------------------------

class WriterRace : public UmrtTest, public ::testing::WithParamInterface<umrt_write_fault_policy> {
 protected:
  void Configure(umrt_config &cfg) override { cfg.write_fault = GetParam(); }
  bool ValidateAtEnd() const override { return true; }
};

// One writer owns every page and bumps a per-page round number written over the whole page;
// before each write it checks the page still holds the previous round (a write lost by a
// migration shows up here). Another thread moves the range to the device and back meanwhile.
TEST_P(WriterRace, WriterRacingMigrations) {
  const size_t npages = 128, size = npages * kPage, wpp = kPage / 8;
  Managed m(size);
  ASSERT_TRUE(m);
  auto *w = reinterpret_cast<uint64_t *>(m.get());
  auto word = [](size_t pg, uint64_t r) { return (uint64_t{pg} << 32) | r; };
  for (size_t pg = 0; pg < npages; ++pg)
    for (size_t k = 0; k < wpp; ++k) w[pg * wpp + k] = word(pg, 0);

  std::atomic<bool> done{false};
  std::atomic<int> cycles{0}, failed{0};
  std::string err;
  std::thread migrator([&] {
    while (!done.load()) {
      umrt_status a = umrt_prefetch(m.get(), size, UMRT_LOCATION_DEVICE, nullptr);
      umrt_status b = umrt_prefetch(m.get(), size, UMRT_LOCATION_HOST, nullptr);
      if (a != UMRT_SUCCESS || b != UMRT_SUCCESS) {
        if (failed++ == 0) err = last_error();
      }
      ++cycles;
    }
  });
  size_t lost = 0;
  std::string first_lost;
  uint64_t rounds = 0;
  auto end = Clock::now() + std::chrono::milliseconds(1000);
  while ((Clock::now() < end || cycles.load() < 20) && rounds < 1000000) {
    ++rounds;
    for (size_t pg = 0; pg < npages; ++pg) {
      uint64_t *p = w + pg * wpp;
      for (size_t k = 0; k < wpp; ++k) {
        if (p[k] != word(pg, rounds - 1)) {
          if (lost++ == 0)
            first_lost = "round " + std::to_string(rounds) + " page " + std::to_string(pg) + " word " +
                         std::to_string(k) + ": found round " + std::to_string(p[k] & 0xffffffff) +
                         " page " + std::to_string(p[k] >> 32);
          break;
        }
      }
      for (size_t k = 0; k < wpp; ++k) p[k] = word(pg, rounds);
    }
    if (Clock::now() > end + std::chrono::seconds(10 * kSlowdown)) break;  // migrator starved
  }
  done = true;
  migrator.join();
  EXPECT_EQ(lost, 0u) << "writes lost or stale data seen: " << first_lost;
  EXPECT_EQ(failed.load(), 0) << "prefetches failed while racing a writer: " << err;
  EXPECT_GE(cycles.load(), 20) << "the migrator made too little progress";
  for (size_t pg = 0; pg < npages; ++pg)
    for (size_t k = 0; k < wpp; ++k) ASSERT_EQ(w[pg * wpp + k], word(pg, rounds)) << "page " << pg << " word " << k;
  // And the device sees the final contents too.
  ASSERT_EQ(umrt_prefetch(m.get(), size, UMRT_LOCATION_DEVICE, nullptr), UMRT_SUCCESS) << last_error();
  std::vector<uint64_t> d(size / 8);
  ASSERT_TRUE(dev_read(d.data(), dev(m.get()), size));
  for (size_t pg = 0; pg < npages; ++pg)
    for (size_t k = 0; k < wpp; ++k) ASSERT_EQ(d[pg * wpp + k], word(pg, rounds)) << "device page " << pg << " word " << k;
  umrt_stats s = get_stats();
  EXPECT_LE(s.write_cancels, s.write_faults);
  if (GetParam() == UMRT_WRITE_FAULT_WAIT) {
    EXPECT_EQ(s.write_cancels, 0u) << "the WAIT policy never cancels";
  }
  RecordProperty("rounds", std::to_string(rounds));
  RecordProperty("cycles", std::to_string(cycles.load()));
  RecordProperty("write_faults", std::to_string(s.write_faults));
  RecordProperty("write_cancels", std::to_string(s.write_cancels));
}

// Several writers, each owning an interleaved share of the pages, against the same migrator.
TEST_P(WriterRace, ManyWritersRacingMigrations) {
  const size_t npages = 256, size = npages * kPage, wpp = kPage / 8;
  constexpr int kWriters = 3;
  Managed m(size);
  ASSERT_TRUE(m);
  auto *w = reinterpret_cast<uint64_t *>(m.get());
  std::memset(m.get(), 0, size);
  std::atomic<bool> done{false};
  std::atomic<int> failed{0};
  std::thread migrator([&] {
    uint64_t x = 7;
    while (!done.load()) {
      x = mix64(x);
      size_t first = x % npages, count = 1 + (x >> 20) % (npages - first);
      umrt_location to = (x >> 50) & 1 ? UMRT_LOCATION_DEVICE : UMRT_LOCATION_HOST;
      if (umrt_prefetch(m + first * kPage, count * kPage, to, nullptr) != UMRT_SUCCESS) ++failed;
    }
  });
  std::vector<uint64_t> final_round(kWriters, 0);
  std::atomic<size_t> lost{0};
  std::vector<std::thread> writers;
  for (int t = 0; t < kWriters; ++t)
    writers.emplace_back([&, t] {
      auto end = Clock::now() + std::chrono::milliseconds(700);
      uint64_t r = 0;
      while (Clock::now() < end) {
        ++r;
        for (size_t pg = t; pg < npages; pg += kWriters) {
          uint64_t *p = w + pg * wpp;
          if (p[0] != r - 1 || p[wpp - 1] != r - 1) ++lost;
          for (size_t k = 0; k < wpp; ++k) p[k] = r;
        }
      }
      final_round[t] = r;
    });
  for (auto &t : writers) t.join();
  done = true;
  migrator.join();
  EXPECT_EQ(lost.load(), 0u);
  EXPECT_EQ(failed.load(), 0) << last_error();
  for (size_t pg = 0; pg < npages; ++pg)
    for (size_t k = 0; k < wpp; ++k)
      ASSERT_EQ(w[pg * wpp + k], final_round[pg % kWriters]) << "page " << pg << " word " << k;
}

INSTANTIATE_TEST_SUITE_P(Policies, WriterRace,
                         ::testing::Values(UMRT_WRITE_FAULT_CANCEL, UMRT_WRITE_FAULT_WAIT),
                         [](const ::testing::TestParamInfo<umrt_write_fault_policy> &i) {
                           return std::string(i.param == UMRT_WRITE_FAULT_CANCEL ? "Cancel" : "Wait");
                         });

// ---- kernel accesses: read(2) / write(2) --------------------------------------------------------

// Kernel-mode faults need userfaultfd without UFFD_USER_MODE_ONLY: root, /dev/userfaultfd access
// or vm.unprivileged_userfaultfd=1.
bool kernel_faults_allowed() {
  if (geteuid() == 0) return true;
  if (access("/dev/userfaultfd", R_OK | W_OK) == 0) return true;
  std::ifstream f("/proc/sys/vm/unprivileged_userfaultfd");
  int v = 0;
  return (f >> v) && v == 1;
}

class KernelAccess : public Fault {
 protected:
  void SetUp() override {
    Fault::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    if (!kernel_faults_allowed())
      GTEST_SKIP() << "userfaultfd for kernel-mode faults is not allowed for this user";
  }
};

ssize_t write_all(int fd, const void *p, size_t n) {
  size_t done = 0;
  while (done < n) {
    ssize_t w = write(fd, static_cast<const char *>(p) + done, n - done);
    if (w < 0) {
      if (errno == EINTR) continue;
      return -1;
    }
    done += static_cast<size_t>(w);
  }
  return static_cast<ssize_t>(done);
}

ssize_t read_all(int fd, void *p, size_t n) {
  size_t done = 0;
  while (done < n) {
    ssize_t r = read(fd, static_cast<char *>(p) + done, n - done);
    if (r < 0) {
      if (errno == EINTR) continue;
      return -1;
    }
    if (r == 0) break;
    done += static_cast<size_t>(r);
  }
  return static_cast<ssize_t>(done);
}

// write(2) of a device-resident managed buffer: the kernel's reads fault the pages back.
TEST_F(KernelAccess, WriteFromDeviceResidentBuffer) {
  const size_t size = 4 * MiB + 3 * kPage;
  Managed m(size);
  ASSERT_TRUE(m);
  fill_pattern(m.get(), size, 6);
  ASSERT_EQ(umrt_prefetch(m.get(), size, UMRT_LOCATION_DEVICE, nullptr), UMRT_SUCCESS) << last_error();
  int fd = memfd_create("umrt-test", 0);
  ASSERT_GE(fd, 0) << strerror(errno);
  umrt_stats s0 = get_stats();
  {
    Watchdog wd(std::chrono::seconds(20), "write(2) from a device-resident buffer");
    ASSERT_EQ(write_all(fd, m.get(), size), static_cast<ssize_t>(size))
        << "write(2) failed: " << strerror(errno)
        << " (EFAULT: the runtime does not serve kernel-mode faults)";
  }
  EXPECT_GT(get_stats().cpu_faults, s0.cpu_faults);
  std::vector<uint8_t> back(size);
  ASSERT_EQ(pread(fd, back.data(), size, 0), static_cast<ssize_t>(size));
  EXPECT_TRUE(check_pattern(back.data(), size, 6));
  close(fd);
}

// read(2) into a device-resident managed buffer: the kernel's writes fault the pages back.
TEST_F(KernelAccess, ReadIntoDeviceResidentBuffer) {
  const size_t size = 3 * MiB;
  std::vector<uint8_t> src(size);
  fill_pattern(src.data(), size, 7);
  int fd = memfd_create("umrt-test", 0);
  ASSERT_GE(fd, 0) << strerror(errno);
  ASSERT_EQ(write_all(fd, src.data(), size), static_cast<ssize_t>(size));
  ASSERT_EQ(lseek(fd, 0, SEEK_SET), 0);
  Managed m(size);
  ASSERT_TRUE(m);
  fill_pattern(m.get(), size, 8);  // different data on the device first
  ASSERT_EQ(umrt_prefetch(m.get(), size, UMRT_LOCATION_DEVICE, nullptr), UMRT_SUCCESS) << last_error();
  {
    Watchdog wd(std::chrono::seconds(20), "read(2) into a device-resident buffer");
    // Unaligned start: the first and last pages are partly overwritten.
    ASSERT_EQ(read_all(fd, m + 100, size - 200), static_cast<ssize_t>(size - 200))
        << "read(2) failed: " << strerror(errno)
        << " (EFAULT: the runtime does not serve kernel-mode faults)";
  }
  EXPECT_TRUE(check_pattern(m.get(), 100, 8));
  EXPECT_TRUE(check_pattern(m + 100, size - 200, 7));
  EXPECT_TRUE(check_pattern(m + (size - 100), 100, 8, size - 100));
  close(fd);
}

// Through a pipe: both ends managed, both on the device.
TEST_F(KernelAccess, PipeBetweenDeviceResidentBuffers) {
  const size_t size = 48 * KiB;  // below the default pipe capacity
  Managed a(size), b(size);
  ASSERT_TRUE(a);
  ASSERT_TRUE(b);
  fill_pattern(a.get(), size, 9);
  fill_pattern(b.get(), size, 10);
  ASSERT_EQ(umrt_prefetch(a.get(), size, UMRT_LOCATION_DEVICE, nullptr), UMRT_SUCCESS) << last_error();
  ASSERT_EQ(umrt_prefetch(b.get(), size, UMRT_LOCATION_DEVICE, nullptr), UMRT_SUCCESS) << last_error();
  int fds[2];
  ASSERT_EQ(pipe(fds), 0);
  {
    Watchdog wd(std::chrono::seconds(20), "pipe I/O on device-resident buffers");
    ASSERT_EQ(write_all(fds[1], a.get(), size), static_cast<ssize_t>(size)) << strerror(errno);
    ASSERT_EQ(read_all(fds[0], b.get(), size), static_cast<ssize_t>(size)) << strerror(errno);
  }
  EXPECT_TRUE(check_pattern(b.get(), size, 9));
  EXPECT_TRUE(check_pattern(a.get(), size, 9));
  close(fds[0]);
  close(fds[1]);
}

// ---- fork ---------------------------------------------------------------------------------------

// Waits for pid up to `seconds` (scaled); SIGKILLs it and returns -1 on timeout.
int wait_child(pid_t pid, int seconds) {
  auto end = Clock::now() + std::chrono::seconds(seconds * kSlowdown);
  int status = 0;
  while (Clock::now() < end) {
    pid_t r = waitpid(pid, &status, WNOHANG);
    if (r == pid) return status;
    if (r < 0 && errno != EINTR) return -2;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  kill(pid, SIGKILL);
  waitpid(pid, &status, 0);
  return -1;
}

std::string describe(int status) {
  if (status == -1) return "timed out (hung) and was killed";
  if (status == -2) return "waitpid failed";
  if (WIFSIGNALED(status)) return std::string("killed by signal ") + strsignal(WTERMSIG(status));
  if (WIFEXITED(status)) return "exited with code " + std::to_string(WEXITSTATUS(status));
  return "status " + std::to_string(status);
}

void default_fault_signals() {
  struct sigaction sa;
  std::memset(&sa, 0, sizeof sa);
  sa.sa_handler = SIG_DFL;
  sigaction(SIGSEGV, &sa, nullptr);
  sigaction(SIGBUS, &sa, nullptr);
}

// Managed ranges are not inherited: a child touching one dies with SIGSEGV (never reads zeros or
// stale data); umrt calls in a child answer NOT_SUPPORTED; the parent is unaffected.
TEST_F(Fault, Fork) {
  const size_t size = 4 * MiB;
  Managed m(size);
  ASSERT_TRUE(m);
  fill_pattern(m.get(), size, 11);
  ASSERT_EQ(umrt_prefetch(m.get(), size / 2, UMRT_LOCATION_DEVICE, nullptr), UMRT_SUCCESS) << last_error();
  const size_t dev_off = 12345, host_off = size / 2 + 6789;
  const uint8_t dev_expect = pattern_byte(11, dev_off), host_expect = pattern_byte(11, host_off);
  fflush(nullptr);

  // Exit codes when the child survives the touch: 3 = read the right data, 4 = wrong data.
  for (size_t off : {dev_off, host_off}) {
    SCOPED_TRACE(off == dev_off ? "device-resident page" : "host-resident page");
    uint8_t expect = off == dev_off ? dev_expect : host_expect;
    pid_t pid = fork();
    ASSERT_GE(pid, 0) << strerror(errno);
    if (pid == 0) {
      default_fault_signals();
      alarm(20);
      volatile uint8_t *p = m.get() + off;
      uint8_t v = *p;
      _exit(v == expect ? 3 : 4);
    }
    int st = wait_child(pid, 20);
    EXPECT_TRUE(st >= 0 && WIFSIGNALED(st) && WTERMSIG(st) == SIGSEGV)
        << "child touching a managed page " << describe(st)
        << " (exit 3: read the right data; exit 4: read WRONG data; expected death by SIGSEGV)";
  }

  // umrt calls in the child: NOT_SUPPORTED. Exit 0 = as expected, 10+s = malloc returned s,
  // 30+s = get_stats returned s, 50+s = prefetch returned s.
  pid_t pid = fork();
  ASSERT_GE(pid, 0) << strerror(errno);
  if (pid == 0) {
    alarm(20);
    void *p = nullptr;
    umrt_status s = umrt_malloc(&p, 4096);
    if (s != UMRT_ERROR_NOT_SUPPORTED) _exit(10 + s);
    umrt_stats stats;
    s = umrt_get_stats(&stats);
    if (s != UMRT_ERROR_NOT_SUPPORTED) _exit(30 + s);
    s = umrt_prefetch(m.get(), 4096, UMRT_LOCATION_HOST, nullptr);
    if (s != UMRT_ERROR_NOT_SUPPORTED) _exit(50 + s);
    _exit(0);
  }
  int st = wait_child(pid, 20);
  EXPECT_TRUE(st >= 0 && WIFEXITED(st) && WEXITSTATUS(st) == 0)
      << "child calling umrt " << describe(st)
      << " (10+s: umrt_malloc returned s, 30+s: umrt_get_stats, 50+s: umrt_prefetch; "
         "expected NOT_SUPPORTED = " << int(UMRT_ERROR_NOT_SUPPORTED) << ")";

  // The parent is unaffected.
  EXPECT_TRUE(all_pages_at(m.get(), size / 2, UMRT_LOCATION_DEVICE));
  EXPECT_TRUE(check_device_pattern(m.get(), size / 2, 11));
  EXPECT_TRUE(check_pattern(m.get(), size, 11));
  Managed more(1 * MiB);
  ASSERT_TRUE(more);
  fill_pattern(more.get(), more.bytes(), 12);
  EXPECT_EQ(umrt_prefetch(more.get(), more.bytes(), UMRT_LOCATION_DEVICE, nullptr), UMRT_SUCCESS) << last_error();
  EXPECT_TRUE(check_pattern(more.get(), more.bytes(), 12));
}

// ---- the sequential prefetch window -------------------------------------------------------------

class FaultBig : public Fault {
 protected:
  void Configure(umrt_config &cfg) override { cfg.device_memory = 128 * MiB; }
};

// A sequential read of a device-resident range is served in growing windows: far fewer faults
// (and fault groups) than pages.
TEST_F(FaultBig, SequentialReadUsesPrefetchWindow) {
  const size_t size = 64 * MiB, npages = size / kPage;
  Managed m(size);
  ASSERT_TRUE(m);
  fill_pattern(m.get(), size, 13);
  ASSERT_EQ(umrt_prefetch(m.get(), size, UMRT_LOCATION_DEVICE, nullptr), UMRT_SUCCESS) << last_error();
  umrt_stats s0 = get_stats();
  EXPECT_TRUE(check_pattern(m.get(), size, 13));
  umrt_stats s1 = get_stats();
  uint64_t faults = s1.cpu_faults - s0.cpu_faults, groups = s1.fault_groups - s0.fault_groups;
  EXPECT_GT(faults, 0u);
  EXPECT_LT(faults, npages / 4) << "the prefetch window should serve most pages without a fault";
  EXPECT_LT(groups, npages / 4);
  EXPECT_EQ(s1.bytes_to_host - s0.bytes_to_host, size);
  RecordProperty("cpu_faults", std::to_string(faults));
  RecordProperty("fault_groups", std::to_string(groups));
}

// A synchronous prefetch promises its whole span: a page that a fault batch is moving to the host
// (still DEVICE, locked) is not "already on the device". The prefetch waits for that batch and
// moves the page back, so a kernel the caller starts next really finds every page on the device.
// (A slow copy engine makes the fault batch hold its pages for a while; sim only, since the
// latency knob is the sim's.)
class FaultSlowCopies : public Fault {
 protected:
  void Configure(umrt_config &cfg) override { cfg.sim_latency_us = 30000; }
};

TEST_F(FaultSlowCopies, PrefetchWaitsForAFaultBatchOnItsPages) {
  UMRT_SKIP_UNLESS_SIM_RUN("uses the sim's copy latency to hold a fault batch open");
  const size_t size = 64 * KiB;
  Managed m(size);
  ASSERT_TRUE(m);
  fill_pattern(m.get(), size, 21);
  ASSERT_EQ(umrt_prefetch(m.get(), size, UMRT_LOCATION_DEVICE, nullptr), UMRT_SUCCESS) << last_error();
  const uint64_t groups0 = get_stats().fault_groups;
  std::thread reader([&] { EXPECT_TRUE(check_pattern(m.get(), kPage, 21)); });  // faults page 0 (+ window)
  // Wait until the fault service has taken the group (collect follows at once; the copy then
  // sleeps for the sim latency), then prefetch the window's pages back to the device.
  const auto until = Clock::now() + std::chrono::seconds(10 * kSlowdown);
  while (get_stats().fault_groups == groups0 && Clock::now() < until) std::this_thread::yield();
  ASSERT_GT(get_stats().fault_groups, groups0) << "the read did not fault";
  std::this_thread::sleep_for(std::chrono::milliseconds(2));
  const size_t span = 4 * kPage;  // the fault window starts at 4 pages
  ASSERT_EQ(umrt_prefetch(m.get(), span, UMRT_LOCATION_DEVICE, nullptr), UMRT_SUCCESS) << last_error();
  EXPECT_TRUE(all_pages_at(m.get(), span, UMRT_LOCATION_DEVICE)) << "right after the prefetch returned";
  reader.join();
  EXPECT_TRUE(all_pages_at(m.get(), span, UMRT_LOCATION_DEVICE))
      << "the fault batch moved pages home after the prefetch had promised them on the device";
  EXPECT_TRUE(check_device_pattern(m.get(), span, 21));
}

// CPU faults never move pages of a block the CPU did not touch: a reader walks all of block 0
// (its windows grow to the whole block) while this thread prefetches block 1 to the device for
// a kernel. Once both are done, block 1 must be on the device, every time. (A read-ahead of the
// next block, which would speed sequential reads up, fails this: docs/design.md.)
TEST_F(FaultBig, SequentialReaderLeavesTheNextBlockAlone) {
  const size_t size = 3 * kBlock;
  Managed m(size);
  ASSERT_TRUE(m);
  fill_pattern(m.get(), size, 24);
  std::mt19937 rng(24);
  for (int round = 0; round < 60; ++round) {
    SCOPED_TRACE(round);
    ASSERT_EQ(umrt_prefetch(m.get(), size, UMRT_LOCATION_DEVICE, nullptr), UMRT_SUCCESS) << last_error();
    std::thread reader([&] { EXPECT_TRUE(check_pattern(m.get(), kBlock, 24)); });
    std::this_thread::sleep_for(std::chrono::microseconds(rng() % 600));
    ASSERT_EQ(umrt_prefetch(m.get() + kBlock, kBlock, UMRT_LOCATION_DEVICE, nullptr), UMRT_SUCCESS) << last_error();
    reader.join();
    ASSERT_TRUE(all_pages_at(m.get() + kBlock, kBlock, UMRT_LOCATION_DEVICE))
        << "a CPU read of block 0 moved block 1 home after the prefetch had put it on the device";
  }
  EXPECT_TRUE(check_pattern(m.get(), size, 24));
}

// The user discards a page (MADV_DONTNEED) while a prefetch to the device is copying it: the copy
// thread faults on a page its own batch holds. The fault service cancels that page's migration
// and maps zeros, so the prefetch finishes (no hang), the discarded page reads as zero on the
// host (as the kernel would give), and every other page moves with its data.
TEST_F(FaultSlowCopies, DiscardDuringPrefetchToDevice) {
  UMRT_SKIP_UNLESS_SIM_RUN("uses the sim's copy latency to hold the batch open");
  const size_t size = 64 * KiB, victim = 5;
  Managed m(size);
  ASSERT_TRUE(m);
  fill_pattern(m.get(), size, 25);
  Watchdog wd(std::chrono::seconds(20), "prefetch to the device of a range with a discarded page");
  umrt_status st = UMRT_ERROR_INVALID_VALUE;
  std::thread mover([&] { st = umrt_prefetch(m.get(), size, UMRT_LOCATION_DEVICE, nullptr); });
  // The batch has locked and write-protected the pages within a few ms; its copy then sleeps
  // for the 30 ms latency before it reads them.
  std::this_thread::sleep_for(std::chrono::milliseconds(10));
  ASSERT_EQ(madvise(m.get() + victim * kPage, kPage, MADV_DONTNEED), 0);
  mover.join();
  ASSERT_EQ(st, UMRT_SUCCESS) << last_error();
  // The discard cancelled that page's migration (its copy was torn); the prefetch then moved
  // it again, as zeros: it returns with every page on the device.
  EXPECT_TRUE(all_pages_at(m.get(), size, UMRT_LOCATION_DEVICE));
  EXPECT_TRUE(check_device_zero(m.get() + victim * kPage, kPage)) << "a discarded page reads as zero";
  EXPECT_TRUE(check_device_pattern(m.get(), victim * kPage, 25));
  EXPECT_TRUE(check_zero(m.get() + victim * kPage, kPage)) << "a discarded page reads as zero";
  EXPECT_TRUE(check_pattern(m.get() + (victim + 1) * kPage, size - (victim + 1) * kPage, 25, (victim + 1) * kPage));
}

}  // namespace
