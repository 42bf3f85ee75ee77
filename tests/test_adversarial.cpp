// test_adversarial.cpp — tests written from the outside (README "What umrt guarantees" and
// umrt.h only) that try to break umrt's promises: process events racing migrations (fork, exec,
// exit, munmap/mremap/madvise/mprotect/mmap MAP_FIXED on managed memory), signal storms, calls
// ordered badly against other threads (shutdown, free, double free, init after lazy init), and
// boundary values of every API call.
//
// Risky scenarios run in a child process with a deadline (run_in_child): a hang becomes a
// "HUNG: name" failure, a signal death names the signal, and the child's stderr is shown. The
// child is a fresh copy of this test binary (fork + exec of /proc/self/exe, running only the
// current test, with ADV_CHILD naming the scenario), so it initialises umrt itself with the
// scenario's configuration and no state of earlier tests leaks into it (a plain fork() would
// not do: umrt refuses every call, umrt_init included, in any child forked after the parent once
// initialised it, even when the parent shut it down first). Inside a child, checks
// use CK()/CKR() (printed to stderr, counted; the child exits 1 if any failed), never gtest
// assertions.
#include <dirent.h>
#include <fcntl.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <spawn.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstring>
#include <functional>
#include <limits>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "test_util.h"

extern char **environ;

using namespace umrt_test;
using namespace std::chrono_literals;

namespace {

// ---- the child harness ---------------------------------------------------------------------------

constexpr int kSkipCode = 77;  // the child could not initialise umrt (userfaultfd refused)

std::atomic<int> g_fails{0};  // failed CK()s in this (child) process

class CkMsg {
 public:
  CkMsg(bool fail, const char *file, int line, const char *expr) : fail_(fail), file_(file), line_(line), expr_(expr) {}
  ~CkMsg() {
    if (!fail_) return;
    g_fails.fetch_add(1);
    std::string m = os_.str();
    std::fprintf(stderr, "CHECK FAILED %s:%d: %s%s%s\n", file_, line_, expr_, m.empty() ? "" : ": ", m.c_str());
    std::fflush(stderr);
  }
  template <class T>
  CkMsg &operator<<(const T &v) {
    if (fail_) os_ << v;
    return *this;
  }

 private:
  bool fail_;
  const char *file_;
  int line_;
  const char *expr_;
  std::ostringstream os_;
};

#define CK(cond) CkMsg(!(cond), __FILE__, __LINE__, #cond)
// An AssertionResult-returning helper (check_pattern, all_pages_at, ...) inside a child.
#define CKR(ar)                                                                             \
  for (::testing::AssertionResult ck_r_ = (ar); !ck_r_; ck_r_ = ::testing::AssertionSuccess()) \
  CkMsg(true, __FILE__, __LINE__, #ar) << ck_r_.message() << " "
// A call expected to return `want`; on a failure status also a non-empty umrt_last_error().
#define CKS(call, want)                                                                           \
  do {                                                                                            \
    umrt_status ck_s_ = (call);                                                                   \
    CK(ck_s_ == (want)) << "returned " << str(ck_s_) << ", expected " << str(want) << " ("        \
                        << last_error() << ")";                                                  \
    if (ck_s_ != UMRT_SUCCESS) CK(std::strlen(last_error()) > 0) << "empty umrt_last_error()";   \
  } while (0)

// Deadline of a child (scaled for sanitizers).
std::chrono::milliseconds scaled(std::chrono::milliseconds d) { return d * kSlowdown; }

struct Outcome {
  std::string name;
  bool hung = false;
  bool skipped = false;   // the child could not initialise umrt
  bool not_mine = false;  // in a child: another scenario of the same test
  int sig = 0;    // terminating signal, 0 if exited
  int code = -1;  // exit code if exited
  double secs = 0;
  std::string err;  // the child's stderr
  std::string err_extra;  // a hung child: its threads (name, kernel wait channel, user pc)
};

// One line per thread of pid: "tid name wchan", for a hung child.
std::string thread_states(pid_t pid) {
  std::string out;
  std::string dir = "/proc/" + std::to_string(pid) + "/task";
  std::vector<std::string> tids;
  if (DIR *d = opendir(dir.c_str())) {
    while (dirent *e = readdir(d))
      if (e->d_name[0] != '.') tids.emplace_back(e->d_name);
    closedir(d);
  }
  auto slurp = [](const std::string &f) {
    std::string v;
    int fd = open(f.c_str(), O_RDONLY);
    if (fd < 0) return v;
    char b[256];
    ssize_t n = read(fd, b, sizeof b - 1);
    if (n > 0) v.assign(b, static_cast<size_t>(n));
    close(fd);
    while (!v.empty() && (v.back() == '\n' || v.back() == '\0')) v.pop_back();
    return v;
  };
  for (const auto &t : tids)
    out += "  thread " + t + " '" + slurp(dir + "/" + t + "/comm") + "' waits in " + slurp(dir + "/" + t + "/wchan") +
           "\n";
  return out;
}

std::string describe(const Outcome &o) {
  std::ostringstream s;
  if (o.hung)
    s << "HUNG: " << o.name << " (killed after " << o.secs << " s)";
  else if (o.sig)
    s << o.name << ": killed by signal " << o.sig << " (" << strsignal(o.sig) << ") after " << o.secs << " s";
  else
    s << o.name << ": exited with code " << o.code << " after " << o.secs << " s";
  // umrt's own warnings can be many (one per munmap()ed range...): the first few are kept.
  std::string e;
  size_t warns = 0;
  for (size_t at = 0; at < o.err.size();) {
    size_t eol = o.err.find('\n', at);
    if (eol == std::string::npos) eol = o.err.size() - 1;
    std::string line = o.err.substr(at, eol + 1 - at);
    at = eol + 1;
    if (line.rfind("umrt warn", 0) == 0 && ++warns > 5) continue;
    e += line;
  }
  if (warns > 5) e += "(" + std::to_string(warns - 5) + " more umrt warnings left out)\n";
  if (e.size() > 8000) e = "...\n" + e.substr(e.size() - 8000);
  s << "\n---- child stderr ----\n" << e << "----------------------";
  if (!o.err_extra.empty()) s << "\nthreads of the hung child:\n" << o.err_extra;
  return s.str();
}

::testing::AssertionResult exited_with(const Outcome &o, int code = 0) {
  if (!o.hung && o.sig == 0 && o.code == code) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << "expected exit code " << code << "; " << describe(o);
}
[[maybe_unused]] ::testing::AssertionResult died_of(const Outcome &o, int sig) {
  if (!o.hung && o.sig == sig) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << "expected death by signal " << sig << " (" << strsignal(sig) << "); "
                                       << describe(o);
}

std::string current_test_name() {
  const auto *i = ::testing::UnitTest::GetInstance()->current_test_info();
  return std::string(i->test_suite_name()) + "." + i->name();
}

// Runs fn in a fresh copy of this binary initialised with cfg (cfg nullptr: fn initialises, or
// not, itself). In the child: fn's return value is the exit code (1 is forced if a CK failed).
Outcome run_in_child(const std::string &name, std::chrono::milliseconds deadline, const umrt_config *cfg,
                     const std::function<int()> &fn, const char *tsan_extra = nullptr) {
  const char *me = std::getenv("ADV_CHILD");
  Outcome o;
  o.name = name;
  if (me) {
    if (name != me) {  // another scenario of this test: not this child's
      o.not_mine = true;
      return o;
    }
    if (cfg) {
      umrt_config c = *cfg;
      umrt_status s = umrt_init(&c);
      if (s == UMRT_ERROR_NOT_SUPPORTED) {
        std::fprintf(stderr, "umrt_init: NOT_SUPPORTED: %s\n", last_error());
        std::fflush(stderr);
        _exit(kSkipCode);
      }
      if (s != UMRT_SUCCESS) {
        std::fprintf(stderr, "umrt_init failed: %s: %s\n", str(s).c_str(), last_error());
        std::fflush(stderr);
        _exit(2);
      }
    }
    int rc = fn();
    if (rc == 0 && g_fails.load() > 0) rc = 1;
    std::fflush(stdout);
    std::fflush(stderr);
    _exit(rc);
  }

  umrt_shutdown();  // nothing of this process's runtime is running while the child starts
  char path[] = "/tmp/umrt-adv-XXXXXX";
  int fd = mkstemp(path);
  if (fd < 0) {
    o.err = std::string("mkstemp: ") + strerror(errno);
    o.hung = true;
    return o;
  }
  unlink(path);
  const std::string filter = "--gtest_filter=" + current_test_name();
  std::fflush(stdout);
  std::fflush(stderr);
  auto t0 = std::chrono::steady_clock::now();
  pid_t pid = fork();
  if (pid == 0) {
    setpgid(0, 0);
    dup2(fd, 2);
    int dn = open("/dev/null", O_WRONLY);
    if (dn >= 0) dup2(dn, 1);
    setenv("ADV_CHILD", name.c_str(), 1);
    if (tsan_extra) {  // extra TSan options for this child (ignored by other builds)
      const char *t = std::getenv("TSAN_OPTIONS");
      std::string v = t && *t ? std::string(t) + ":" + tsan_extra : std::string(tsan_extra);
      setenv("TSAN_OPTIONS", v.c_str(), 1);
    }
    char exe[] = "/proc/self/exe";
    char *argv[] = {exe, const_cast<char *>(filter.c_str()), const_cast<char *>("--gtest_also_run_disabled_tests"),
                    nullptr};
    execv(exe, argv);
    std::fprintf(stderr, "execv: %s\n", strerror(errno));
    _exit(127);
  }
  int status = 0;
  for (;;) {
    pid_t w = waitpid(pid, &status, WNOHANG);
    if (w == pid) break;
    if (std::chrono::steady_clock::now() - t0 > deadline) {
      o.err_extra = thread_states(pid);
      kill(-pid, SIGKILL);
      kill(pid, SIGKILL);
      waitpid(pid, &status, 0);
      o.hung = true;
      break;
    }
    std::this_thread::sleep_for(2ms);
  }
  o.secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  kill(-pid, SIGKILL);  // grandchildren left behind
  if (!o.hung) {
    if (WIFSIGNALED(status))
      o.sig = WTERMSIG(status);
    else if (WIFEXITED(status))
      o.code = WEXITSTATUS(status);
  }
  lseek(fd, 0, SEEK_SET);
  char buf[4096];
  ssize_t n;
  while ((n = read(fd, buf, sizeof buf)) > 0) o.err.append(buf, static_cast<size_t>(n));
  close(fd);
  if (o.code == kSkipCode) o.skipped = true;
  return o;
}

// (In a child, the outcome of another scenario of the same test is a placeholder: the checks on
// it go to the child's /dev/null stdout; the child exits in its own scenario.)
#define SKIP_IF_CHILD_SKIPPED(o) \
  if ((o).skipped && !(o).not_mine) GTEST_SKIP() << "userfaultfd is not available here: " << (o).err

// ---- small helpers usable in a child --------------------------------------------------------------

umrt_config sim_cfg(uint64_t devmem = 64 * MiB, double gbps = 0, uint32_t latency_us = 0) {
  umrt_config c = sim_config(devmem);
  c.sim_bandwidth_gbps = gbps;
  c.sim_latency_us = latency_us;
  return c;
}

uint8_t *alloc(size_t bytes) {
  void *p = nullptr;
  umrt_status s = umrt_malloc(&p, bytes);
  CK(s == UMRT_SUCCESS) << "umrt_malloc(" << bytes << "): " << str(s) << ": " << last_error();
  return s == UMRT_SUCCESS ? static_cast<uint8_t *>(p) : nullptr;
}

bool stats_now(umrt_stats *s) {
  std::memset(s, 0, sizeof *s);
  umrt_status st = umrt_get_stats(s);
  CK(st == UMRT_SUCCESS) << "umrt_get_stats: " << str(st) << ": " << last_error();
  return st == UMRT_SUCCESS;
}

// Under a sanitizer, its SIGSEGV handler reports the fault and exits with 1: a scenario that
// expects to die of SIGSEGV puts the default action back first (sanitizer builds only; in the
// normal build umrt's own handler chains to the default action, which is part of what is tested).
void default_segv_under_sanitizers() {
  if (kSlowdown > 1) signal(SIGSEGV, SIG_DFL);
}

// Reads every page of [p, p+bytes) (a fault for device-resident pages) and compares one word of
// each page with the pattern; returns the first bad page or -1.
long sweep_pages(const uint8_t *p, size_t bytes, uint64_t seed) {
  for (size_t off = 0; off + 8 <= bytes; off += kPage) {
    uint64_t w;
    std::memcpy(&w, p + off, 8);
    if (w != pattern_word(seed, off / 8)) return static_cast<long>(off / kPage);
  }
  return -1;
}

// "N pattern / M zero / K other pages; first bad page X at LOC" of [p, p+bytes) against seed.
std::string page_summary(const uint8_t *p, size_t bytes, uint64_t seed, size_t base = 0) {
  size_t pat = 0, zero = 0, other = 0;
  long first_bad = -1;
  std::ostringstream bad;
  for (size_t off = 0; off < bytes; off += kPage) {
    size_t n = std::min(kPage, bytes - off);
    umrt_location l = UMRT_LOCATION_HOST;
    umrt_status s = umrt_page_location(p + off, &l);
    if (first_mismatch(p + off, n, seed, base + off) == std::nullopt) {
      ++pat;
      continue;
    }
    if (check_zero(p + off, n)) ++zero; else ++other;
    if (first_bad < 0) first_bad = static_cast<long>(off / kPage);
    if (zero + other <= 8)
      bad << " " << off / kPage << (check_zero(p + off, n) ? "(zero," : "(other,")
          << (s != UMRT_SUCCESS ? "unknown" : l == UMRT_LOCATION_DEVICE ? "DEVICE" : "HOST") << ")";
  }
  std::ostringstream o;
  o << pat << " pattern / " << zero << " zero / " << other << " other pages of " << pages_of(bytes)
    << "; first bad pages:" << bad.str();
  return o.str();
}


bool is_mapped(const void *p) {
  unsigned char v = 0;
  auto a = reinterpret_cast<uintptr_t>(p) & ~(kPage - 1);
  return mincore(reinterpret_cast<void *>(a), kPage, &v) == 0;
}

// Waits for a grandchild with a deadline; SIGKILLs it and reports "hung" when it passes.
struct Waited {
  bool hung = false;
  int sig = 0;
  int code = -1;
};
Waited wait_deadline(pid_t pid, std::chrono::milliseconds deadline) {
  Waited r;
  auto t0 = std::chrono::steady_clock::now();
  int status = 0;
  for (;;) {
    pid_t w = waitpid(pid, &status, WNOHANG);
    if (w == pid) break;
    if (w < 0 && errno != EINTR) {
      r.hung = true;
      return r;
    }
    if (std::chrono::steady_clock::now() - t0 > deadline) {
      kill(pid, SIGKILL);
      waitpid(pid, &status, 0);
      r.hung = true;
      return r;
    }
    std::this_thread::sleep_for(1ms);
  }
  if (WIFSIGNALED(status)) r.sig = WTERMSIG(status);
  if (WIFEXITED(status)) r.code = WEXITSTATUS(status);
  return r;
}
std::string waited_str(const Waited &w) {
  std::ostringstream s;
  if (w.hung) s << "HUNG";
  else if (w.sig) s << "signal " << w.sig << " (" << strsignal(w.sig) << ")";
  else s << "exit " << w.code;
  return s.str();
}

// Background workers: one thread faulting a device-resident range back (and prefetching it to the
// device again), one thread prefetching another range back and forth, each checking the pattern.
struct Workers {
  std::atomic<bool> stop{false};
  // Set when another thread may shut umrt down under the workers: their ranges then become plain
  // host memory and their calls on them return UMRT_ERROR_INVALID_VALUE (README); the data checks
  // still hold.
  std::atomic<bool> shutdown_allowed{false};
  bool ok(umrt_status s) const {
    return s == UMRT_SUCCESS || (shutdown_allowed.load() && s == UMRT_ERROR_INVALID_VALUE);
  }
  std::atomic<long> rounds{0};
  std::vector<std::thread> ts;
  void faulter(uint8_t *p, size_t bytes, uint64_t seed) {
    ts.emplace_back([=, this] {
      while (!stop.load()) {
        umrt_status s = umrt_prefetch(p, bytes, UMRT_LOCATION_DEVICE, nullptr);
        CK(ok(s)) << "faulter prefetch: " << str(s) << ": " << last_error();
        long bad = sweep_pages(p, bytes, seed);
        CK(bad < 0) << "faulter: page " << bad << " read wrong data";
        rounds.fetch_add(1);
      }
    });
  }
  void prefetcher(uint8_t *p, size_t bytes, uint64_t seed) {
    ts.emplace_back([=, this] {
      bool dev = true;
      while (!stop.load()) {
        umrt_status s = umrt_prefetch(p, bytes, dev ? UMRT_LOCATION_DEVICE : UMRT_LOCATION_HOST, nullptr);
        CK(ok(s)) << "prefetcher: " << str(s) << ": " << last_error();
        if (!dev) {
          long bad = sweep_pages(p, bytes, seed);
          CK(bad < 0) << "prefetcher: page " << bad << " read wrong data";
        }
        dev = !dev;
        rounds.fetch_add(1);
      }
    });
  }
  void allocator() {
    ts.emplace_back([this] {
      uint64_t seed = 7000;
      while (!stop.load()) {
        void *q = nullptr;
        const size_t m = (seed % 4 + 1) * kBlock - kPage;
        umrt_status s = umrt_malloc(&q, m);
        CK(s == UMRT_SUCCESS) << "allocator: " << str(s) << ": " << last_error();
        if (s != UMRT_SUCCESS) continue;
        fill_pattern(q, m, seed);
        s = umrt_prefetch(q, m, UMRT_LOCATION_DEVICE, nullptr);
        CK(s == UMRT_SUCCESS) << "allocator prefetch: " << str(s) << ": " << last_error();
        CKR(check_pattern(q, m, seed)) << "allocator";
        CKS(umrt_free(q), UMRT_SUCCESS);
        ++seed;
        rounds.fetch_add(1);
      }
    });
  }
  void join() {
    stop = true;
    for (auto &t : ts) t.join();
    ts.clear();
  }
  ~Workers() {
    if (!ts.empty()) join();
  }
};

// ---- fork / exec / exit ---------------------------------------------------------------------------

// fork() while one thread faults device pages back and another prefetches: the child's umrt
// calls return NOT_SUPPORTED (never hang), the child touching managed memory dies of SIGSEGV,
// and the parent's data is intact.
TEST(AdvFork, ForkWhileFaultsAndPrefetchesRun) {
  umrt_config cfg = sim_cfg(64 * MiB, 2.0);
  Outcome o = run_in_child("fork-in-flight", scaled(30s), &cfg, [] {
    const size_t a_bytes = 8 * MiB, b_bytes = 6 * MiB + 3 * kPage;
    uint8_t *a = alloc(a_bytes), *b = alloc(b_bytes);
    if (!a || !b) return 3;
    fill_pattern(a, a_bytes, 1);
    fill_pattern(b, b_bytes, 2);
    Workers w;
    w.faulter(a, a_bytes, 1);
    w.prefetcher(b, b_bytes, 2);
    w.allocator();  // umrt_malloc/umrt_free (the range table changing) at fork time too
    const int forks = 40 / kSlowdown + 6;
    for (int i = 0; i < forks; ++i) {
      std::this_thread::sleep_for(std::chrono::microseconds(300 * (i % 7)));
      pid_t pid = fork();
      if (pid == 0) {
        if (i % 2 == 0) {
          // umrt calls: NOT_SUPPORTED, with a reason; nothing hangs.
          int bad = 0;
          void *q = nullptr;
          umrt_location loc;
          void *d;
          umrt_stats st;
          auto expect_ns = [&](umrt_status s, const char *what) {
            if (s != UMRT_ERROR_NOT_SUPPORTED || std::strlen(last_error()) == 0) {
              std::fprintf(stderr, "fork child: %s returned %s (%s), expected NOT_SUPPORTED\n", what,
                           str(s).c_str(), last_error());
              ++bad;
            }
          };
          expect_ns(umrt_malloc(&q, 4096), "umrt_malloc");
          expect_ns(umrt_prefetch(b, b_bytes, UMRT_LOCATION_HOST, nullptr), "umrt_prefetch");
          expect_ns(umrt_page_location(a, &loc), "umrt_page_location");
          expect_ns(umrt_device_pointer(a, &d), "umrt_device_pointer");
          expect_ns(umrt_get_stats(&st), "umrt_get_stats");
          expect_ns(umrt_validate(), "umrt_validate");
          expect_ns(umrt_free(a), "umrt_free");
          umrt_config c2 = sim_config();
          expect_ns(umrt_init(&c2), "umrt_init(cfg)");
          expect_ns(umrt_malloc(&q, 4096), "umrt_malloc after umrt_init");
          std::fflush(stderr);
          _exit(bad ? 3 : 0);
        }
        // Touching managed memory: SIGSEGV (the range is not inherited), never data or zeros.
        default_segv_under_sanitizers();
        volatile const uint8_t *v = (i % 4 == 1) ? a + (i * 37 % 2048) * kPage : b + 5;
        uint8_t x = *v;
        std::fprintf(stderr, "fork child %d: read 0x%02x from managed memory instead of SIGSEGV\n", i, x);
        std::fflush(stderr);
        _exit(5);
      }
      CK(pid > 0) << "fork: " << strerror(errno);
      if (pid < 0) break;
      Waited r = wait_deadline(pid, scaled(5000ms));
      if (i % 2 == 0)
        CK(!r.hung && r.sig == 0 && r.code == 0) << "fork child " << i << " (umrt calls): " << waited_str(r);
      else
        CK(!r.hung && r.sig == SIGSEGV) << "fork child " << i << " (touch): " << waited_str(r)
                                        << ", expected SIGSEGV";
    }
    w.join();
    CK(w.rounds.load() > 0) << "no worker round ran";
    CKS(umrt_prefetch(a, a_bytes, UMRT_LOCATION_HOST, nullptr), UMRT_SUCCESS);
    CKR(check_pattern(a, a_bytes, 1)) << "parent's range a after the forks";
    CKR(check_pattern(b, b_bytes, 2)) << "parent's range b after the forks";
    CKS(umrt_validate(), UMRT_SUCCESS);
    CKS(umrt_free(a), UMRT_SUCCESS);
    CKS(umrt_free(b), UMRT_SUCCESS);
    CKS(umrt_shutdown(), UMRT_SUCCESS);
    return 0;
  });
  SKIP_IF_CHILD_SKIPPED(o);
  EXPECT_TRUE(exited_with(o, 0));
}

// fork + exec of /bin/true (and posix_spawn, which shares the address space until the exec) while
// migrations run in the parent: the program runs, the parent's data is intact.
TEST(AdvFork, ForkExecAndSpawnWhileMigrationsRun) {
  umrt_config cfg = sim_cfg(64 * MiB, 2.0);
  Outcome o = run_in_child("fork-exec", scaled(30s), &cfg, [] {
    const size_t a_bytes = 8 * MiB, b_bytes = 4 * MiB + 5 * kPage;
    uint8_t *a = alloc(a_bytes), *b = alloc(b_bytes);
    if (!a || !b) return 3;
    fill_pattern(a, a_bytes, 3);
    fill_pattern(b, b_bytes, 4);
    Workers w;
    w.faulter(a, a_bytes, 3);
    w.prefetcher(b, b_bytes, 4);
    const int n = 30 / kSlowdown + 6;
    for (int i = 0; i < n; ++i) {
      pid_t pid = -1;
      if (i % 2 == 0) {
        pid = fork();
        if (pid == 0) {
          execl("/bin/true", "true", static_cast<char *>(nullptr));
          _exit(126);
        }
      } else {
        char arg0[] = "true";
        char *argv[] = {arg0, nullptr};
        int rc = posix_spawn(&pid, "/bin/true", nullptr, nullptr, argv, environ);
        CK(rc == 0) << "posix_spawn: " << strerror(rc);
        if (rc) continue;
      }
      CK(pid > 0) << "fork: " << strerror(errno);
      if (pid < 0) break;
      Waited r = wait_deadline(pid, scaled(5000ms));
      CK(!r.hung && r.sig == 0 && r.code == 0) << (i % 2 ? "posix_spawn" : "fork+exec") << " of /bin/true #" << i
                                               << ": " << waited_str(r);
    }
    w.join();
    CKS(umrt_prefetch(a, a_bytes, UMRT_LOCATION_HOST, nullptr), UMRT_SUCCESS);
    CKR(check_pattern(a, a_bytes, 3));
    CKR(check_pattern(b, b_bytes, 4));
    CKS(umrt_validate(), UMRT_SUCCESS);
    CKS(umrt_free(a), UMRT_SUCCESS);
    CKS(umrt_free(b), UMRT_SUCCESS);
    CKS(umrt_shutdown(), UMRT_SUCCESS);
    return 0;
  });
  SKIP_IF_CHILD_SKIPPED(o);
  EXPECT_TRUE(exited_with(o, 0));
}

// A process that used umrt, shut it down and forks: the child either starts umrt afresh and it
// works, or refuses with NOT_SUPPORTED and a reason; it never hangs or crashes.
TEST(AdvFork, ChildOfAShutDownParent) {
  umrt_config cfg = sim_cfg();
  Outcome o = run_in_child("fork-after-shutdown", scaled(20s), &cfg, [] {
    uint8_t *a = alloc(1 * MiB);
    if (!a) return 3;
    fill_pattern(a, 1 * MiB, 5);
    CKS(umrt_prefetch(a, 1 * MiB, UMRT_LOCATION_DEVICE, nullptr), UMRT_SUCCESS);
    CKS(umrt_shutdown(), UMRT_SUCCESS);
    CKR(check_pattern(a, 1 * MiB, 5)) << "after shutdown";
    pid_t pid = fork();
    if (pid == 0) {
      umrt_config c = sim_config();
      umrt_status s = umrt_init(&c);
      if (s == UMRT_ERROR_NOT_SUPPORTED) {
        std::fprintf(stderr, "NOTE: child of a shut-down parent: umrt_init -> NOT_SUPPORTED (%s)\n", last_error());
        _exit(std::strlen(last_error()) ? 10 : 4);
      }
      if (s != UMRT_SUCCESS) {
        std::fprintf(stderr, "child umrt_init: %s (%s)\n", str(s).c_str(), last_error());
        _exit(4);
      }
      void *q = nullptr;
      if (umrt_malloc(&q, 3 * MiB) != UMRT_SUCCESS) _exit(6);
      fill_pattern(q, 3 * MiB, 6);
      if (umrt_prefetch(q, 3 * MiB, UMRT_LOCATION_DEVICE, nullptr) != UMRT_SUCCESS) _exit(7);
      if (first_mismatch(q, 3 * MiB, 6)) _exit(8);
      if (umrt_free(q) != UMRT_SUCCESS) _exit(9);
      if (umrt_shutdown() != UMRT_SUCCESS) _exit(9);
      std::fprintf(stderr, "NOTE: child of a shut-down parent: umrt works there\n");
      _exit(0);
    }
    Waited r = wait_deadline(pid, scaled(10000ms));
    CK(!r.hung && r.sig == 0 && (r.code == 0 || r.code == 10)) << "child: " << waited_str(r);
    CKR(check_pattern(a, 1 * MiB, 5)) << "parent after the child";
    CKS(umrt_free(a), UMRT_SUCCESS);
    return 0;
  });
  SKIP_IF_CHILD_SKIPPED(o);
  EXPECT_TRUE(exited_with(o, 0));
  std::printf("[ child    ] %s", o.err.c_str());
}

// exit() / _exit() (from the main thread or from a worker) while other threads fault and prefetch:
// the process exits promptly with the code asked for.
struct ExitCase {
  const char *name;
  int how;  // 0 exit() on main, 1 _exit() on main, 2 exit() on a worker, 3 exit() on a worker while
            // main prefetches, 4 exec on main, 5 exec on a worker while main prefetches, 6 exit()
            // on main while a worker shuts umrt down and up again
  double gbps;
};
class AdvExit : public ::testing::TestWithParam<ExitCase> {};

TEST_P(AdvExit, ExitsPromptlyWithItsCode) {
  const ExitCase k = GetParam();
  umrt_config cfg = sim_cfg(64 * MiB, k.gbps);
  const int want = 40 + k.how;
  Outcome o = run_in_child(std::string("exit-") + k.name, scaled(15s), &cfg, [k, want]() -> int {
    const size_t a_bytes = 8 * MiB, b_bytes = 8 * MiB;
    uint8_t *a = alloc(a_bytes), *b = alloc(b_bytes);
    if (!a || !b) return 3;
    fill_pattern(a, a_bytes, 7);
    fill_pattern(b, b_bytes, 8);
    auto *w = new Workers;  // never joined: the process exits under it
    w->faulter(a, a_bytes, 7);
    w->prefetcher(b, b_bytes, 8);
    w->faulter(b, 2 * MiB, 8);  // a third thread racing the prefetcher on b's first block
    std::this_thread::sleep_for(std::chrono::milliseconds(30));
    while (w->rounds.load() < 2) std::this_thread::sleep_for(1ms);
    std::fflush(stderr);
    switch (k.how) {
      case 0: std::exit(want);
      case 1: _exit(want);
      case 2: {
        std::thread t([want] { std::exit(want); });
        t.join();  // never returns
        return 3;
      }
      case 6: {  // exit() on main while a worker is inside umrt_shutdown()
        w->shutdown_allowed = true;
        std::thread t([] {
          for (;;) {
            umrt_shutdown();
            void *q = nullptr;
            if (umrt_malloc(&q, 3 * MiB) == UMRT_SUCCESS) {
              std::memset(q, 1, 3 * MiB);
              umrt_prefetch(q, 3 * MiB, UMRT_LOCATION_DEVICE, nullptr);
            }
          }
        });
        t.detach();
        std::this_thread::sleep_for(std::chrono::milliseconds(15));
        std::exit(want);
      }
      case 4:  // the process itself execs a fresh program (README: "exec ... of the process itself")
        execl("/bin/sh", "sh", "-c", ("exit " + std::to_string(want)).c_str(), static_cast<char *>(nullptr));
        std::fprintf(stderr, "execl: %s\n", strerror(errno));
        return 3;
      case 5: {  // ... from a worker thread, while main prefetches
        std::thread t([want] {
          std::this_thread::sleep_for(std::chrono::milliseconds(3));
          execl("/bin/sh", "sh", "-c", ("exit " + std::to_string(want)).c_str(), static_cast<char *>(nullptr));
          std::fprintf(stderr, "execl: %s\n", strerror(errno));
          _exit(3);
        });
        for (;;) {
          umrt_prefetch(a, a_bytes, UMRT_LOCATION_DEVICE, nullptr);
          umrt_prefetch(a, a_bytes, UMRT_LOCATION_HOST, nullptr);
        }
      }
      default: {
        // main is itself inside a prefetch when a worker exits.
        std::thread t([want] {
          std::this_thread::sleep_for(std::chrono::milliseconds(3));
          std::exit(want);
        });
        for (;;) {
          umrt_prefetch(a, a_bytes, UMRT_LOCATION_DEVICE, nullptr);
          umrt_prefetch(a, a_bytes, UMRT_LOCATION_HOST, nullptr);
        }
      }
    }
  },
  // A process that _exit()s under running threads leaves threads unjoined by design: TSan's
  // thread-leak report (exit code 66) is not what is tested here.
  "report_thread_leaks=0");
  SKIP_IF_CHILD_SKIPPED(o);
  EXPECT_TRUE(exited_with(o, want));
  EXPECT_LT(o.secs, 5.0 * kSlowdown) << "the exit was not prompt";
}

INSTANTIATE_TEST_SUITE_P(Cases, AdvExit,
                         ::testing::Values(ExitCase{"exit_main", 0, 2.0}, ExitCase{"_exit_main", 1, 2.0},
                                           ExitCase{"exit_worker", 2, 2.0},
                                           ExitCase{"exit_worker_while_main_prefetches", 3, 0.5},
                                           ExitCase{"exit_main_slow_copies", 0, 0.05},
                                           ExitCase{"exec_main", 4, 2.0}, ExitCase{"exec_worker_while_main_prefetches", 5, 0.5},
                                           ExitCase{"exit_main_while_a_worker_shuts_down", 6, 2.0}),
                         [](const auto &i) { return std::string(i.param.name); });

// ---- munmap of a part ------------------------------------------------------------------------------

// README: after munmap() of a whole range, "umrt calls on it return UMRT_ERROR_INVALID_VALUE
// (umrt_free too)": checked right after munmap() returns, many times (an unmap event the runtime
// has not read yet must not leave a window where the range still looks managed).
TEST(AdvMunmap, WholeRangeIsUnknownRightAfterMunmap) {
  umrt_config cfg = sim_cfg();
  Outcome o = run_in_child("munmap-immediate", scaled(30s), &cfg, [] {
    const int rounds = 300 / kSlowdown + 20;
    int seen[4] = {};  // page_location, prefetch, device_pointer, free returning something else
    for (int k = 0; k < rounds; ++k) {
      const size_t n = (k % 3 + 1) * MiB + (k % 2) * kPage;
      uint8_t *p = alloc(n);
      if (!p) return 3;
      std::memset(p, 0x3c, n);
      if (k % 2) CKS(umrt_prefetch(p, n, UMRT_LOCATION_DEVICE, nullptr), UMRT_SUCCESS);
      CK(munmap(p, pages_of(n) * kPage) == 0) << strerror(errno);
      umrt_location loc;
      void *d;
      if (umrt_page_location(p + n / 2, &loc) != UMRT_ERROR_INVALID_VALUE) seen[0]++;
      if (umrt_status ps = umrt_prefetch(p, n, UMRT_LOCATION_HOST, nullptr); ps != UMRT_ERROR_INVALID_VALUE) {
        if (seen[1]++ == 0) std::fprintf(stderr, "round %d: umrt_prefetch of the munmap()ed range returned %s (%s)\n", k, str(ps).c_str(), ps ? last_error() : "");
      }
      if (umrt_device_pointer(p, &d) != UMRT_ERROR_INVALID_VALUE) seen[2]++;
      umrt_status f = umrt_free(p);
      if (f != UMRT_ERROR_INVALID_VALUE) seen[3]++;
      CK(!is_mapped(p)) << "round " << k << ": something is mapped at the munmap()ed range (umrt_free returned " << str(f) << ")";
    }
    CK(seen[0] == 0) << "umrt_page_location accepted a munmap()ed range in " << seen[0] << " of " << rounds << " rounds";
    CK(seen[1] == 0) << "umrt_prefetch did not return INVALID_VALUE on a munmap()ed range in " << seen[1] << " of "
                     << rounds << " rounds";
    CK(seen[2] == 0) << "umrt_device_pointer accepted a munmap()ed range in " << seen[2] << " of " << rounds << " rounds";
    CK(seen[3] == 0) << "umrt_free did not return INVALID_VALUE on a munmap()ed range in " << seen[3] << " of " << rounds
                     << " rounds";
    CKS(umrt_validate(), UMRT_SUCCESS);
    umrt_stats st;
    if (stats_now(&st)) CK(st.device_bytes_in_use == 0) << st.device_bytes_in_use << " device bytes in use";
    CKS(umrt_shutdown(), UMRT_SUCCESS);
    return 0;
  });
  SKIP_IF_CHILD_SKIPPED(o);
  EXPECT_TRUE(exited_with(o, 0));
}

// munmap of the head, a middle piece and the tail of a range whose pages are on the device: the
// rest reads right, prefetches, validates, and umrt_free frees the rest.
TEST(AdvMunmap, HeadMiddleTailOfADeviceRange) {
  umrt_config cfg = sim_cfg();
  Outcome o = run_in_child("munmap-parts", scaled(20s), &cfg, [] {
    const size_t bytes = 10 * MiB + 3 * kPage;
    uint8_t *p = alloc(bytes);
    if (!p) return 3;
    fill_pattern(p, bytes, 9);
    CKS(umrt_prefetch(p, bytes, UMRT_LOCATION_DEVICE, nullptr), UMRT_SUCCESS);
    CKR(all_pages_at(p, bytes, UMRT_LOCATION_DEVICE));
    const size_t map = pages_of(bytes) * kPage;
    // head: [0, 1 MiB + 1 page); middle: [4 MiB - 2 pages, 5 MiB + 2 pages) (crosses a block
    // boundary); tail: the last 1 MiB + 3 pages (cuts a block in the middle).
    const size_t h_end = 1 * MiB + kPage, m_beg = 4 * MiB - 2 * kPage, m_end = 5 * MiB + 2 * kPage;
    const size_t t_beg = map - (1 * MiB + 3 * kPage);
    CK(munmap(p, h_end) == 0) << strerror(errno);
    CK(munmap(p + m_beg, m_end - m_beg) == 0) << strerror(errno);
    CK(munmap(p + t_beg, map - t_beg) == 0) << strerror(errno);
    // Right after munmap() returned: the pages are gone for umrt too.
    umrt_location loc;
    const struct {
      const char *what;
      size_t off;
    } gone[] = {{"head", 0}, {"middle", m_beg + kPage}, {"tail", t_beg}, {"last page", map - kPage}};
    for (auto &g : gone) {
      umrt_status s = umrt_page_location(p + g.off, &loc);
      CK(s == UMRT_ERROR_INVALID_VALUE) << "umrt_page_location of the munmap()ed " << g.what << " right after munmap: "
                                        << str(s) << (s == UMRT_SUCCESS ? (loc == UMRT_LOCATION_DEVICE ? " (DEVICE)" : " (HOST)") : "");
      s = umrt_prefetch(p + g.off, kPage, UMRT_LOCATION_HOST, nullptr);
      CK(s == UMRT_ERROR_INVALID_VALUE) << "umrt_prefetch of the munmap()ed " << g.what << " right after munmap: " << str(s);
    }
    CKS(umrt_validate(), UMRT_SUCCESS);
    // The two surviving pieces: still on the device, then read (faults), then prefetched.
    struct Piece {
      size_t beg, end;
    } pieces[] = {{h_end, m_beg}, {m_end, t_beg}};
    for (auto &pc : pieces) {
      CKR(all_pages_at(p + pc.beg, pc.end - pc.beg, UMRT_LOCATION_DEVICE)) << "piece at " << pc.beg;
      CKR(check_device_pattern(p + pc.beg, pc.end - pc.beg, 9, pc.beg));
    }
    CKR(check_pattern(p + h_end, m_beg - h_end, 9, h_end)) << "first piece read on the CPU";
    CKS(umrt_prefetch(p + m_end, t_beg - m_end, UMRT_LOCATION_HOST, nullptr), UMRT_SUCCESS);
    CKR(check_pattern(p + m_end, t_beg - m_end, 9, m_end)) << "second piece after a prefetch home";
    for (auto &pc : pieces) {
      CKS(umrt_prefetch(p + pc.beg, pc.end - pc.beg, UMRT_LOCATION_DEVICE, nullptr), UMRT_SUCCESS);
      CKR(all_pages_at(p + pc.beg, pc.end - pc.beg, UMRT_LOCATION_DEVICE));
      CKR(check_device_pattern(p + pc.beg, pc.end - pc.beg, 9, pc.beg));
    }
    // A prefetch spanning a hole: an error or success, never a crash; the pieces stay right.
    umrt_status s = umrt_prefetch(p + h_end, t_beg - h_end, UMRT_LOCATION_HOST, nullptr);
    CK(s == UMRT_SUCCESS || s == UMRT_ERROR_INVALID_VALUE || s == UMRT_ERROR_BACKEND) << str(s);
    if (s != UMRT_SUCCESS) CK(std::strlen(last_error()) > 0);
    for (auto &pc : pieces) CKR(check_pattern(p + pc.beg, pc.end - pc.beg, 9, pc.beg)) << "piece at " << pc.beg;
    CKS(umrt_validate(), UMRT_SUCCESS);
    // umrt_free by the original pointer (its first page is gone) frees the rest.
    umrt_status f = umrt_free(p);
    CK(f == UMRT_SUCCESS) << "umrt_free(original pointer) after munmap of the head: " << str(f) << ": "
                          << last_error();
    if (f == UMRT_SUCCESS) {
      CK(!is_mapped(p + h_end)) << "first piece still mapped after umrt_free";
      CK(!is_mapped(p + m_end)) << "second piece still mapped after umrt_free";
    } else {
      CKS(umrt_free(p + h_end), UMRT_SUCCESS);
    }
    CKS(umrt_validate(), UMRT_SUCCESS);
    umrt_stats st;
    if (stats_now(&st)) CK(st.device_bytes_in_use == 0) << st.device_bytes_in_use << " device bytes still in use";
    CKS(umrt_shutdown(), UMRT_SUCCESS);
    return 0;
  });
  SKIP_IF_CHILD_SKIPPED(o);
  EXPECT_TRUE(exited_with(o, 0));
}


// ---- mremap racing a prefetch ----------------------------------------------------------------------

// The whole range moves (mremap MAYMOVE|FIXED) while another thread prefetches it: the prefetch
// returns a status, and afterwards every byte is right at the new address after a final prefetch
// to the host, the range validates and is freed at the new address.
TEST(AdvMremap, WholeRangeMoveRacingAPrefetch) {
  umrt_config cfg = sim_cfg(64 * MiB, 1.0);
  Outcome o = run_in_child("mremap-race", scaled(40s), &cfg, [] {
    const int rounds = 24 / kSlowdown + 4;
    int statuses[8] = {};
    for (int k = 0; k < rounds; ++k) {
      const size_t bytes = 6 * MiB + 7 * kPage;
      const size_t map = pages_of(bytes) * kPage;
      uint8_t *p = alloc(bytes);
      if (!p) return 3;
      const uint64_t seed = 100 + static_cast<uint64_t>(k);
      fill_pattern(p, bytes, seed);
      const bool to_dev = k % 2 == 0;
      if (!to_dev) CKS(umrt_prefetch(p, bytes, UMRT_LOCATION_DEVICE, nullptr), UMRT_SUCCESS);
      uint8_t *want = reserve_address(map);
      std::atomic<bool> go{false};
      umrt_status ps = UMRT_SUCCESS;
      std::string perr;
      std::thread t([&] {
        while (!go.load()) {
        }
        ps = umrt_prefetch(p, bytes, to_dev ? UMRT_LOCATION_DEVICE : UMRT_LOCATION_HOST, nullptr);
        if (ps != UMRT_SUCCESS) perr = last_error();
        if (ps != UMRT_SUCCESS) CK(!perr.empty()) << "empty last error for " << str(ps);
      });
      go = true;
      std::this_thread::sleep_for(std::chrono::microseconds(400 * (k % 6)));
      void *q = mremap(p, map, map, MREMAP_MAYMOVE | MREMAP_FIXED, want);
      t.join();
      CK(q == want) << "mremap: " << strerror(errno);
      if (q != want) return 4;
      statuses[static_cast<int>(ps) & 7]++;
      auto *n = static_cast<uint8_t *>(q);
      CKS(umrt_prefetch(n, bytes, UMRT_LOCATION_HOST, nullptr), UMRT_SUCCESS);
      CKR(all_pages_at(n, bytes, UMRT_LOCATION_HOST)) << "round " << k;
      CKR(check_pattern(n, bytes, seed)) << "round " << k << " (prefetch " << (to_dev ? "to device" : "to host")
                                         << " returned " << str(ps) << " '" << perr << "', mremap after "
                                         << 400 * (k % 6) << " us): " << page_summary(n, bytes, seed);
      CKS(umrt_validate(), UMRT_SUCCESS);
      umrt_location loc;
      CKS(umrt_page_location(p, &loc), UMRT_ERROR_INVALID_VALUE);
      CKS(umrt_free(n), UMRT_SUCCESS);
    }
    std::fprintf(stderr, "prefetch statuses: success %d, invalid %d, backend %d\n", statuses[0], statuses[1],
                 statuses[5]);
    umrt_stats st;
    if (stats_now(&st)) CK(st.device_bytes_in_use == 0) << st.device_bytes_in_use << " device bytes in use";
    CKS(umrt_shutdown(), UMRT_SUCCESS);
    return 0;
  });
  SKIP_IF_CHILD_SKIPPED(o);
  EXPECT_TRUE(exited_with(o, 0));
}

// ---- madvise -------------------------------------------------------------------------------------

// Each page of [p, p+bytes) holds either the pattern or zeros, entirely; returns the count of
// zero pages, or -1 (and prints) when a page holds anything else.
long zero_or_pattern_pages(const uint8_t *p, size_t bytes, uint64_t seed, size_t base = 0) {
  long zeros = 0;
  for (size_t off = 0; off < bytes; off += kPage) {
    size_t n = std::min(kPage, bytes - off);
    if (check_pattern(p + off, n, seed, base + off)) continue;
    if (check_zero(p + off, n)) {
      ++zeros;
      continue;
    }
    std::fprintf(stderr, "page %zu is neither the pattern nor zeros: %s\n", off / kPage,
                 check_pattern(p + off, n, seed, base + off).message());
    return -1;
  }
  return zeros;
}

// MADV_DONTNEED / MADV_FREE on a range half on the device, half on the host: the host pages read
// as zeros (MADV_FREE: zeros or the old data), the device pages keep their data; MADV_REMOVE
// fails with EINVAL and changes nothing.
TEST(AdvMadvise, DontneedFreeRemoveOnHostAndDevicePages) {
  umrt_config cfg = sim_cfg();
  Outcome o = run_in_child("madvise", scaled(20s), &cfg, [] {
    const size_t bytes = 4 * MiB + 6 * kPage, half = 2 * MiB;
    for (int adv : {MADV_DONTNEED, MADV_FREE}) {
      const char *nm = adv == MADV_DONTNEED ? "MADV_DONTNEED" : "MADV_FREE";
      uint8_t *p = alloc(bytes);
      if (!p) return 3;
      fill_pattern(p, bytes, 30);
      CKS(umrt_prefetch(p, half, UMRT_LOCATION_DEVICE, nullptr), UMRT_SUCCESS);
      CK(madvise(p, pages_of(bytes) * kPage, adv) == 0) << nm << ": " << strerror(errno);
      CKS(umrt_validate(), UMRT_SUCCESS);
      CKR(all_pages_at(p, half, UMRT_LOCATION_DEVICE)) << nm << " moved device pages";
      CKR(check_device_pattern(p, half, 30)) << nm << " changed the device copy";
      CKR(check_pattern(p, half, 30)) << nm << ": device pages read on the CPU";
      if (adv == MADV_DONTNEED) {
        CKR(check_zero(p + half, bytes - half)) << "host pages after MADV_DONTNEED";
      } else {
        long z = zero_or_pattern_pages(p + half, bytes - half, 30, half);
        CK(z >= 0) << "host pages after MADV_FREE hold something else";
      }
      // The range keeps working: new data through the device and back.
      fill_pattern(p + half, bytes - half, 31, half);
      CKS(umrt_prefetch(p, bytes, UMRT_LOCATION_DEVICE, nullptr), UMRT_SUCCESS);
      CKS(umrt_prefetch(p, bytes, UMRT_LOCATION_HOST, nullptr), UMRT_SUCCESS);
      CKR(check_pattern(p, half, 30)) << nm;
      CKR(check_pattern(p + half, bytes - half, 31, half)) << nm;
      // A second DONTNEED/FREE right on device pages only, then a fault: the data.
      CKS(umrt_prefetch(p, bytes, UMRT_LOCATION_DEVICE, nullptr), UMRT_SUCCESS);
      CK(madvise(p + kPage, 3 * MiB, adv) == 0) << strerror(errno);
      CKR(all_pages_at(p, bytes, UMRT_LOCATION_DEVICE)) << nm;
      CKR(check_pattern(p, half, 30)) << nm << " on device-only pages";
      CKR(check_pattern(p + half, bytes - half, 31, half)) << nm << " on device-only pages";
      CKS(umrt_validate(), UMRT_SUCCESS);
      CKS(umrt_free(p), UMRT_SUCCESS);
    }
    // MADV_REMOVE: EINVAL on private memory, nothing changes (bytes, locations, statistics).
    uint8_t *p = alloc(bytes);
    if (!p) return 3;
    fill_pattern(p, bytes, 32);
    CKS(umrt_prefetch(p, half, UMRT_LOCATION_DEVICE, nullptr), UMRT_SUCCESS);
    umrt_stats a, b;
    stats_now(&a);
    errno = 0;
    int rc = madvise(p, pages_of(bytes) * kPage, MADV_REMOVE);
    CK(rc == -1 && errno == EINVAL) << "MADV_REMOVE returned " << rc << " errno " << strerror(errno);
    stats_now(&b);
    CKR(stats_equal(a, b)) << "MADV_REMOVE";
    CKR(all_pages_at(p, half, UMRT_LOCATION_DEVICE));
    CKR(all_pages_at(p + half, bytes - half, UMRT_LOCATION_HOST));
    CKR(check_device_pattern(p, half, 32));
    CKR(check_pattern(p, bytes, 32)) << "after MADV_REMOVE";
    CKS(umrt_free(p), UMRT_SUCCESS);
    CKS(umrt_shutdown(), UMRT_SUCCESS);
    return 0;
  });
  SKIP_IF_CHILD_SKIPPED(o);
  EXPECT_TRUE(exited_with(o, 0));
}

// MADV_DONTNEED racing a host->device prefetch: every page is afterwards either the pattern (it
// was on the device already) or zeros (discarded before or while it was copied), never anything
// else, and the range validates.
TEST(AdvMadvise, DontneedRacingAPrefetchToTheDevice) {
  umrt_config cfg = sim_cfg(64 * MiB, 1.0);
  Outcome o = run_in_child("madvise-race", scaled(30s), &cfg, [] {
    const int rounds = 20 / kSlowdown + 3;
    long zeros_total = 0;
    for (int k = 0; k < rounds; ++k) {
      const size_t bytes = 6 * MiB;
      uint8_t *p = alloc(bytes);
      if (!p) return 3;
      fill_pattern(p, bytes, 33 + k);
      std::atomic<bool> go{false};
      umrt_status ps = UMRT_SUCCESS;
      std::thread t([&] {
        while (!go.load()) {
        }
        ps = umrt_prefetch(p, bytes, UMRT_LOCATION_DEVICE, nullptr);
      });
      go = true;
      std::this_thread::sleep_for(std::chrono::microseconds(500 * (k % 8)));
      CK(madvise(p, bytes, MADV_DONTNEED) == 0) << strerror(errno);
      t.join();
      CK(ps == UMRT_SUCCESS || ps == UMRT_ERROR_BACKEND) << "prefetch: " << str(ps) << ": " << last_error();
      CKS(umrt_validate(), UMRT_SUCCESS);
      long z = zero_or_pattern_pages(p, bytes, 33 + k);
      CK(z >= 0) << "round " << k;
      zeros_total += z > 0 ? z : 0;
      CKS(umrt_prefetch(p, bytes, UMRT_LOCATION_DEVICE, nullptr), UMRT_SUCCESS);
      CK(zero_or_pattern_pages(p, bytes, 33 + k) == z) << "round " << k << ": pages changed on a second trip";
      CKS(umrt_free(p), UMRT_SUCCESS);
      if (g_fails.load()) break;
    }
    std::fprintf(stderr, "zero pages seen over all rounds: %ld\n", zeros_total);
    CKS(umrt_shutdown(), UMRT_SUCCESS);
    return 0;
  });
  SKIP_IF_CHILD_SKIPPED(o);
  EXPECT_TRUE(exited_with(o, 0));
}

// ---- mprotect ------------------------------------------------------------------------------------

// PROT_READ: device pages still fault home for reads (and prefetch both ways); a write is SIGSEGV.
TEST(AdvMprotect, ReadOnlyRangeMovesAndAWriteIsSigsegv) {
  for (int on_device : {0, 1}) {
    umrt_config cfg = sim_cfg();
    Outcome o = run_in_child(on_device ? "mprotect-ro-dev" : "mprotect-ro-host", scaled(20s), &cfg, [on_device] {
      const size_t bytes = 3 * MiB + kPage;
      uint8_t *p = alloc(bytes);
      if (!p) return 3;
      fill_pattern(p, bytes, 40);
      CKS(umrt_prefetch(p, bytes, UMRT_LOCATION_DEVICE, nullptr), UMRT_SUCCESS);
      CK(mprotect(p, pages_of(bytes) * kPage, PROT_READ) == 0) << strerror(errno);
      CKR(check_pattern(p, bytes, 40)) << "read-only range read on the CPU";
      CKR(all_pages_at(p, bytes, UMRT_LOCATION_HOST)) << "after reading it all";
      CKS(umrt_prefetch(p, bytes, UMRT_LOCATION_DEVICE, nullptr), UMRT_SUCCESS);
      CKR(all_pages_at(p, bytes, UMRT_LOCATION_DEVICE));
      CKR(check_device_pattern(p, bytes, 40));
      CKS(umrt_prefetch(p, 2 * MiB, UMRT_LOCATION_HOST, nullptr), UMRT_SUCCESS);
      CKR(check_pattern(p, bytes, 40)) << "second read";
      if (on_device) CKS(umrt_prefetch(p, bytes, UMRT_LOCATION_DEVICE, nullptr), UMRT_SUCCESS);
      CKS(umrt_validate(), UMRT_SUCCESS);
      default_segv_under_sanitizers();
      std::fprintf(stderr, "WRITING %s\n", on_device ? "device page" : "host page");
      std::fflush(stderr);
      if (g_fails.load()) return 1;
      *reinterpret_cast<volatile uint8_t *>(p + 2 * MiB + 100) = 1;
      std::fprintf(stderr, "the write to a PROT_READ page went through (now %s)\n",
                   check_pattern(p, bytes, 40) ? "pattern intact" : "pattern changed");
      return 5;
    });
    SKIP_IF_CHILD_SKIPPED(o);
    EXPECT_TRUE(died_of(o, SIGSEGV));
    EXPECT_NE(o.err.find("WRITING"), std::string::npos) << describe(o);
    EXPECT_EQ(o.err.find("CHECK FAILED"), std::string::npos) << describe(o);
  }
}

// PROT_NONE with pages on the device, and back to PROT_READ|PROT_WRITE: data intact. A prefetch
// to the device of a PROT_NONE range whose pages are on the host: UMRT_ERROR_BACKEND (README),
// never a crash; after restoring the protection, the data is intact.
TEST(AdvMprotect, ProtNoneWithDevicePagesAndPrefetchOfProtNone) {
  umrt_config cfg = sim_cfg();
  Outcome o = run_in_child("mprotect-none", scaled(20s), &cfg, [] {
    const size_t bytes = 4 * MiB + 3 * kPage, map = pages_of(bytes) * kPage;
    uint8_t *p = alloc(bytes);
    if (!p) return 3;
    fill_pattern(p, bytes, 41);
    CKS(umrt_prefetch(p, bytes, UMRT_LOCATION_DEVICE, nullptr), UMRT_SUCCESS);
    CK(mprotect(p, map, PROT_NONE) == 0) << strerror(errno);
    CKR(all_pages_at(p, bytes, UMRT_LOCATION_DEVICE));
    CKR(check_device_pattern(p, bytes, 41));
    // Home while PROT_NONE: a status, never a crash.
    umrt_status s = umrt_prefetch(p, 2 * MiB, UMRT_LOCATION_HOST, nullptr);
    std::fprintf(stderr, "prefetch to host of PROT_NONE device pages: %s (%s)\n", str(s).c_str(),
                 s == UMRT_SUCCESS ? "" : last_error());
    CK(mprotect(p, map, PROT_READ | PROT_WRITE) == 0) << strerror(errno);
    CKR(check_pattern(p, bytes, 41)) << "after PROT_NONE and back";
    CKS(umrt_validate(), UMRT_SUCCESS);
    // Host pages, PROT_NONE, prefetched to the device.
    CKS(umrt_prefetch(p, bytes, UMRT_LOCATION_HOST, nullptr), UMRT_SUCCESS);
    CK(mprotect(p, map, PROT_NONE) == 0) << strerror(errno);
    umrt_stats a, b;
    stats_now(&a);
    s = umrt_prefetch(p, bytes, UMRT_LOCATION_DEVICE, nullptr);
    stats_now(&b);
    CK(s == UMRT_ERROR_BACKEND) << "prefetch to the device of a PROT_NONE range: " << str(s) << " ("
                                << (s == UMRT_SUCCESS ? "" : last_error()) << "), README says UMRT_ERROR_BACKEND";
    if (s != UMRT_SUCCESS) {
      CK(std::strlen(last_error()) > 0);
      CKR(all_pages_at(p, bytes, UMRT_LOCATION_HOST)) << "a failed prefetch moved pages";
      CK(b.device_bytes_in_use == a.device_bytes_in_use)
          << "device memory held after a failed prefetch: " << a.device_bytes_in_use << " -> "
          << b.device_bytes_in_use;
    }
    CKS(umrt_validate(), UMRT_SUCCESS);
    CK(mprotect(p, map, PROT_READ | PROT_WRITE) == 0) << strerror(errno);
    CKR(check_pattern(p, bytes, 41)) << "after a prefetch of PROT_NONE pages";
    // Half PROT_NONE: the readable half may move, nothing is lost.
    CK(mprotect(p + 2 * MiB, map - 2 * MiB, PROT_NONE) == 0) << strerror(errno);
    s = umrt_prefetch(p, bytes, UMRT_LOCATION_DEVICE, nullptr);
    CK(s != UMRT_SUCCESS) << "a prefetch over PROT_NONE pages succeeded";
    CK(mprotect(p, map, PROT_READ | PROT_WRITE) == 0) << strerror(errno);
    CKR(check_pattern(p, bytes, 41)) << "after a prefetch half over PROT_NONE pages";
    CKS(umrt_prefetch(p, bytes, UMRT_LOCATION_DEVICE, nullptr), UMRT_SUCCESS);
    CKR(check_device_pattern(p, bytes, 41));
    CKS(umrt_validate(), UMRT_SUCCESS);
    CKS(umrt_free(p), UMRT_SUCCESS);
    CKS(umrt_shutdown(), UMRT_SUCCESS);
    return 0;
  });
  SKIP_IF_CHILD_SKIPPED(o);
  EXPECT_TRUE(exited_with(o, 0));
  std::printf("[ child    ] %s", o.err.c_str());
}

// ---- mmap MAP_FIXED over a range ----------------------------------------------------------------

TEST(AdvMapFixed, OverPartOfADeviceRange) {
  umrt_config cfg = sim_cfg();
  Outcome o = run_in_child("map-fixed-part", scaled(20s), &cfg, [] {
    const size_t bytes = 8 * MiB, map = bytes;
    uint8_t *p = alloc(bytes);
    if (!p) return 3;
    fill_pattern(p, bytes, 50);
    CKS(umrt_prefetch(p, bytes, UMRT_LOCATION_DEVICE, nullptr), UMRT_SUCCESS);
    // Anonymous over [2 MiB + 1 page, 3 MiB + 1 page); a file (memfd) over [6 MiB - 2 pages, 6 MiB + 2 pages).
    const size_t a_beg = 2 * MiB + kPage, a_len = 1 * MiB;
    const size_t f_beg = 6 * MiB - 2 * kPage, f_len = 4 * kPage;
    void *q = mmap(p + a_beg, a_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
    CK(q == p + a_beg) << "mmap MAP_FIXED: " << strerror(errno);
    int fd = memfd_create("adv", 0);
    CK(fd >= 0) << strerror(errno);
    std::vector<uint8_t> file(f_len);
    fill_pattern(file.data(), f_len, 51);
    CK(write(fd, file.data(), f_len) == static_cast<ssize_t>(f_len));
    void *f = mmap(p + f_beg, f_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, fd, 0);
    CK(f == p + f_beg) << "mmap MAP_FIXED of a file: " << strerror(errno);
    // The new mappings read as what they map.
    CKR(check_zero(p + a_beg, a_len)) << "anonymous MAP_FIXED mapping over device pages";
    CKR(check_pattern(p + f_beg, f_len, 51)) << "file MAP_FIXED mapping over device pages";
    fill_pattern(p + a_beg, a_len, 52);
    CKR(check_pattern(p + a_beg, a_len, 52));
    umrt_location loc;
    CKS(umrt_page_location(p + a_beg, &loc), UMRT_ERROR_INVALID_VALUE);
    CKS(umrt_page_location(p + f_beg + kPage, &loc), UMRT_ERROR_INVALID_VALUE);
    CKS(umrt_prefetch(p + a_beg, kPage, UMRT_LOCATION_DEVICE, nullptr), UMRT_ERROR_INVALID_VALUE);
    CKS(umrt_validate(), UMRT_SUCCESS);
    // The rest: on the device, intact, and it keeps moving.
    struct Piece {
      size_t beg, end;
    } rest[] = {{0, a_beg}, {a_beg + a_len, f_beg}, {f_beg + f_len, map}};
    for (auto &r : rest) {
      CKR(all_pages_at(p + r.beg, r.end - r.beg, UMRT_LOCATION_DEVICE)) << "piece at " << r.beg;
      CKR(check_device_pattern(p + r.beg, r.end - r.beg, 50, r.beg)) << "piece at " << r.beg;
    }
    for (auto &r : rest) {
      CKR(check_pattern(p + r.beg, r.end - r.beg, 50, r.beg)) << "piece at " << r.beg;
      CKS(umrt_prefetch(p + r.beg, r.end - r.beg, UMRT_LOCATION_DEVICE, nullptr), UMRT_SUCCESS);
      CKR(check_device_pattern(p + r.beg, r.end - r.beg, 50, r.beg)) << "piece at " << r.beg;
    }
    CKR(check_pattern(p + a_beg, a_len, 52)) << "the anonymous mapping after the rest moved";
    CKR(check_pattern(p + f_beg, f_len, 51)) << "the file mapping after the rest moved";
    CKS(umrt_validate(), UMRT_SUCCESS);
    CKS(umrt_free(p), UMRT_SUCCESS);
    CK(!is_mapped(p) && !is_mapped(p + 7 * MiB)) << "the rest of the range is still mapped after umrt_free";
    // The user's own mappings are not umrt's to unmap.
    CK(is_mapped(p + a_beg)) << "umrt_free unmapped the user's MAP_FIXED anonymous mapping";
    CK(is_mapped(p + f_beg)) << "umrt_free unmapped the user's MAP_FIXED file mapping";
    if (is_mapped(p + a_beg)) CKR(check_pattern(p + a_beg, a_len, 52)) << "user mapping after umrt_free";
    if (is_mapped(p + f_beg)) CKR(check_pattern(p + f_beg, f_len, 51)) << "user file mapping after umrt_free";
    CKS(umrt_validate(), UMRT_SUCCESS);
    umrt_stats st;
    if (stats_now(&st)) CK(st.device_bytes_in_use == 0) << st.device_bytes_in_use;
    CKS(umrt_shutdown(), UMRT_SUCCESS);
    return 0;
  });
  SKIP_IF_CHILD_SKIPPED(o);
  EXPECT_TRUE(exited_with(o, 0));
}

TEST(AdvMapFixed, OverAWholeDeviceRange) {
  umrt_config cfg = sim_cfg();
  Outcome o = run_in_child("map-fixed-whole", scaled(20s), &cfg, [] {
    const size_t bytes = 4 * MiB;
    uint8_t *p = alloc(bytes);
    if (!p) return 3;
    fill_pattern(p, bytes, 53);
    CKS(umrt_prefetch(p, bytes, UMRT_LOCATION_DEVICE, nullptr), UMRT_SUCCESS);
    void *q = mmap(p, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
    CK(q == p) << strerror(errno);
    CKR(check_zero(p, bytes)) << "a new mapping over a whole device range";
    umrt_location loc;
    CKS(umrt_page_location(p, &loc), UMRT_ERROR_INVALID_VALUE);
    CKS(umrt_validate(), UMRT_SUCCESS);
    umrt_stats st;
    if (stats_now(&st)) CK(st.device_bytes_in_use == 0) << "device memory not released: " << st.device_bytes_in_use;
    CKS(umrt_free(p), UMRT_ERROR_INVALID_VALUE);
    CK(is_mapped(p)) << "umrt_free unmapped the user's mapping";
    CKR(check_zero(p, bytes));
    // A new allocation may land anywhere, the user's mapping stays what it is.
    uint8_t *r = alloc(bytes);
    if (r) {
      fill_pattern(r, bytes, 54);
      CKS(umrt_prefetch(r, bytes, UMRT_LOCATION_DEVICE, nullptr), UMRT_SUCCESS);
      CKR(check_pattern(r, bytes, 54));
      CKS(umrt_free(r), UMRT_SUCCESS);
    }
    CKR(check_zero(p, bytes));
    munmap(p, bytes);
    CKS(umrt_shutdown(), UMRT_SUCCESS);
    return 0;
  });
  SKIP_IF_CHILD_SKIPPED(o);
  EXPECT_TRUE(exited_with(o, 0));
}

// ---- signal storm --------------------------------------------------------------------------------

std::atomic<const uint8_t *> g_sig_byte{nullptr};
std::atomic<uint64_t> g_sig_seed{0};
std::atomic<long> g_sig_handled{0}, g_sig_bad{0};
std::atomic<size_t> g_sig_off{0};
void storm_handler(int) {
  int saved = errno;
  const uint8_t *b = g_sig_byte.load();
  if (b) {
    size_t off = g_sig_off.fetch_add(kPage + 8) % (4 * MiB);
    uint8_t v = *reinterpret_cast<const volatile uint8_t *>(b + off);
    if (v != pattern_byte(g_sig_seed.load(), off)) g_sig_bad.fetch_add(1);
  }
  g_sig_handled.fetch_add(1);
  errno = saved;
}

// Two threads send SIGUSR1 to the process at a high rate (~0.6 s) while threads fault pages back
// from the device and prefetch; the handler reads a managed byte of a range (c) that a further
// thread keeps moving to the device. With SA_RESTART and without. Which threads take the signal:
//   readers     only threads that fault (plain loads, no umrt call): the README's rule in its
//               strictest reading (a handler never interrupts a umrt call of its own thread);
//   calls       also threads inside umrt_prefetch, the handler touching no managed memory:
//               umrt calls interrupted (EINTR without SA_RESTART) must still succeed;
//   calls+touch also threads inside umrt_prefetch, the handler reading c, which no interrupted
//               call holds: README "except while it interrupts a umrt call of its own thread
//               (... a handler touching pages that very call holds waits for it)" allows it in
//               the reading that only pages that very call holds are off limits.
struct StormCase {
  const char *name;
  bool restart;
  int mode;  // 0 readers, 1 calls, 2 calls+touch
};
class AdvSignalStorm : public ::testing::TestWithParam<StormCase> {};

TEST_P(AdvSignalStorm, DataIntactNoHang) {
  const StormCase k = GetParam();
  umrt_config cfg = sim_cfg(64 * MiB, 4.0);
  Outcome o = run_in_child(std::string("storm-") + k.name, std::chrono::seconds(8 + 2 * kSlowdown), &cfg, [k] {
    const size_t n = 3 * MiB;
    uint8_t *a = alloc(n), *b = alloc(n), *c = alloc(4 * MiB), *d = alloc(n), *e = alloc(n);
    if (!a || !b || !c || !d || !e) return 3;
    fill_pattern(a, n, 60);
    fill_pattern(b, n, 61);
    fill_pattern(c, 4 * MiB, 62);
    fill_pattern(d, n, 63);
    fill_pattern(e, n, 64);
    CKS(umrt_prefetch(c, 4 * MiB, UMRT_LOCATION_DEVICE, nullptr), UMRT_SUCCESS);
    g_sig_seed = 62;
    g_sig_byte = k.mode == 1 ? nullptr : c;
    struct sigaction sa {};
    sa.sa_handler = storm_handler;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = k.restart ? SA_RESTART : 0;
    CK(sigaction(SIGUSR1, &sa, nullptr) == 0);
    sigset_t usr1, none;
    sigemptyset(&usr1);
    sigaddset(&usr1, SIGUSR1);
    sigemptyset(&none);
    pthread_sigmask(SIG_BLOCK, &usr1, nullptr);  // threads inherit the mask at creation
    std::atomic<bool> stop{false};
    std::atomic<long> reads{0}, sent{0};
    std::vector<std::thread> ts;
    Workers w;
    if (k.mode != 0) pthread_sigmask(SIG_SETMASK, &none, nullptr);
    w.faulter(a, n, 60);     // umrt_prefetch + faults
    w.prefetcher(b, n, 61);  // umrt_prefetch both ways
    pthread_sigmask(SIG_SETMASK, &none, nullptr);
    for (auto [r, seed] : {std::pair{d, 63}, std::pair{e, 64}})  // plain loads only
      ts.emplace_back([&, r = r, seed = seed] {
        while (!stop.load()) {
          long bad = sweep_pages(r, n, static_cast<uint64_t>(seed));
          CK(bad < 0) << "reader: page " << bad << " wrong";
          reads.fetch_add(1);
        }
      });
    pthread_sigmask(SIG_BLOCK, &usr1, nullptr);
    ts.emplace_back([&] {  // keeps c, d and e going to the device (signal blocked)
      while (!stop.load()) {
        for (auto [r, len] : {std::pair{c, 4 * MiB}, std::pair{d, n}, std::pair{e, n}}) {
          umrt_status s = umrt_prefetch(r, len, UMRT_LOCATION_DEVICE, nullptr);
          CK(s == UMRT_SUCCESS) << "mover: " << str(s) << ": " << last_error();
        }
        std::this_thread::sleep_for(200us);
      }
    });
    for (int i = 0; i < 2; ++i)
      ts.emplace_back([&] {
        while (!stop.load()) {
          kill(getpid(), SIGUSR1);
          sent.fetch_add(1);
          for (int z = 0; z < 300; ++z) std::atomic_signal_fence(std::memory_order_seq_cst);
        }
      });
    std::this_thread::sleep_for(std::chrono::milliseconds(600));
    stop = true;
    for (auto &t : ts) t.join();
    w.join();
    g_sig_byte = nullptr;
    std::fprintf(stderr, "sent %ld, handled %ld, worker rounds %ld, reader sweeps %ld\n", sent.load(),
                 g_sig_handled.load(), w.rounds.load(), reads.load());
    CK(g_sig_handled.load() > 0) << "no signal handled";
    CK(g_sig_bad.load() == 0) << g_sig_bad.load() << " handler reads saw a wrong byte";
    CK(w.rounds.load() > 2) << "the workers made (almost) no progress under the storm";
    CK(reads.load() > 2) << "the readers made (almost) no progress under the storm";
    CKR(check_pattern(a, n, 60));
    CKR(check_pattern(b, n, 61));
    CKR(check_pattern(c, 4 * MiB, 62));
    CKR(check_pattern(d, n, 63));
    CKR(check_pattern(e, n, 64));
    CKS(umrt_validate(), UMRT_SUCCESS);
    for (uint8_t *r : {a, b, c, d, e}) CKS(umrt_free(r), UMRT_SUCCESS);
    CKS(umrt_shutdown(), UMRT_SUCCESS);
    return 0;
  });
  SKIP_IF_CHILD_SKIPPED(o);
  EXPECT_TRUE(exited_with(o, 0));
  std::printf("[ child    ] %s: %s", o.name.c_str(), o.err.c_str());
}

INSTANTIATE_TEST_SUITE_P(Cases, AdvSignalStorm,
                         ::testing::Values(StormCase{"readers_restart", true, 0}, StormCase{"readers_norestart", false, 0},
                                           StormCase{"calls_restart", true, 1}, StormCase{"calls_norestart", false, 1},
                                           StormCase{"calls_touch_restart", true, 2},
                                           StormCase{"calls_touch_norestart", false, 2}),
                         [](const auto &i) { return std::string(i.param.name); });


// ---- orderings against other threads ------------------------------------------------------------

// umrt_shutdown() while another thread prefetches, faults or allocates. Every call returns a
// status (an error with a reason); nothing crashes or hangs; afterwards the memory is plain host
// memory holding its data (or the other thread's call got an error) — never wrong bytes.
class AdvShutdownRace : public ::testing::TestWithParam<const char *> {};

TEST_P(AdvShutdownRace, WhileAnotherThreadWorks) {
  const std::string what = GetParam();
  umrt_config cfg = sim_cfg(64 * MiB, 2.0);
  Outcome o = run_in_child("shutdown-vs-" + what, scaled(30s), &cfg, [what] {
    setenv("UMRT_BACKEND", "sim", 1);  // for the lazy re-initialisation after the shutdown
    setenv("UMRT_DEVICE_MEMORY", "64M", 1);
    const int rounds = 8 / kSlowdown + 3;
    for (int k = 0; k < rounds; ++k) {
      if (k > 0) {
        umrt_config c = sim_cfg(64 * MiB, 2.0);
        CKS(umrt_init(&c), UMRT_SUCCESS);
      }
      const size_t n = 6 * MiB;
      uint8_t *p = alloc(n);
      if (!p) return 3;
      const uint64_t seed = 70 + static_cast<uint64_t>(k);
      fill_pattern(p, n, seed);
      CKS(umrt_prefetch(p, n, UMRT_LOCATION_DEVICE, nullptr), UMRT_SUCCESS);
      std::atomic<bool> stop{false};
      std::atomic<long> calls{0}, errors{0};
      std::vector<void *> leftovers;  // allocations the malloc thread could not free (from before the shutdown)
      std::thread t([&] {
        bool dev = false;
        uint64_t s2 = 1000 + static_cast<uint64_t>(k) * 1000;
        while (!stop.load()) {
          if (what == "prefetch") {
            umrt_status st = umrt_prefetch(p, n, dev ? UMRT_LOCATION_DEVICE : UMRT_LOCATION_HOST, nullptr);
            dev = !dev;
            calls++;
            if (st != UMRT_SUCCESS) {
              errors++;
              CK(st == UMRT_ERROR_INVALID_VALUE || st == UMRT_ERROR_BACKEND) << str(st) << ": " << last_error();
              CK(std::strlen(last_error()) > 0) << "empty last error for " << str(st);
            }
          } else if (what == "fault") {
            long bad = sweep_pages(p, n, seed);
            CK(bad < 0) << "reader saw wrong data in page " << bad;
            calls++;
          } else {  // malloc: allocate, fill, move, check, free
            void *q = nullptr;
            const size_t m = (s2 % 3 + 1) * MiB + (s2 % 5) * kPage;
            umrt_status st = umrt_malloc(&q, m);
            calls++;
            CK(st == UMRT_SUCCESS) << "umrt_malloc: " << str(st) << ": " << last_error();
            if (st != UMRT_SUCCESS) continue;
            fill_pattern(q, m, s2);
            st = umrt_prefetch(q, m, UMRT_LOCATION_DEVICE, nullptr);
            if (st != UMRT_SUCCESS) {
              errors++;
              CK(st == UMRT_ERROR_INVALID_VALUE || st == UMRT_ERROR_BACKEND) << str(st) << ": " << last_error();
            }
            CKR(check_pattern(q, m, s2)) << "an allocation across a shutdown";
            st = umrt_free(q);
            if (st != UMRT_SUCCESS) {
              errors++;
              CK(st == UMRT_ERROR_INVALID_VALUE) << "umrt_free: " << str(st) << ": " << last_error();
              leftovers.push_back(q);  // only this thread touches it until the join
            }
            ++s2;
          }
        }
      });
      std::this_thread::sleep_for(std::chrono::milliseconds(5 + 7 * k));
      umrt_status sd = umrt_shutdown();
      std::string sd_err = sd == UMRT_SUCCESS ? "" : last_error();
      CK(sd == UMRT_SUCCESS || !sd_err.empty()) << "shutdown " << str(sd) << " without a reason";
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
      stop = true;
      t.join();
      if (sd != UMRT_SUCCESS) std::fprintf(stderr, "round %d: shutdown returned %s: %s\n", k, str(sd).c_str(), sd_err.c_str());
      // Bring everything down for good; the range is plain host memory with its data.
      umrt_status sd2 = umrt_shutdown();
      CK(sd2 == UMRT_SUCCESS) << "final shutdown: " << str(sd2) << ": " << last_error();
      CKR(check_pattern(p, n, seed)) << "round " << k << " (" << what << "): the range after umrt_shutdown; "
                                     << page_summary(p, n, seed);
      p[0] ^= 0xff;  // plain, writable memory
      p[0] ^= 0xff;
      CKR(check_pattern(p, n, seed));
      // What the malloc thread could not free is plain memory now: umrt_free of it succeeds or
      // is refused, never crashes.
      for (void *q : leftovers) {
        umrt_status fs = umrt_free(q);
        CK(fs == UMRT_SUCCESS || fs == UMRT_ERROR_INVALID_VALUE) << str(fs);
      }
      umrt_shutdown();
      if (k == 0)
        std::fprintf(stderr, "%s: %ld calls, %ld errors in round 0\n", what.c_str(), calls.load(), errors.load());
      if (g_fails.load()) break;
    }
    return 0;
  });
  SKIP_IF_CHILD_SKIPPED(o);
  EXPECT_TRUE(exited_with(o, 0));
}

INSTANTIATE_TEST_SUITE_P(Cases, AdvShutdownRace, ::testing::Values("prefetch", "fault", "malloc"),
                         [](const auto &i) { return std::string(i.param); });

// umrt_free while another thread prefetches the same range: the free succeeds (README: "frees the
// range whatever is in flight on it"), the prefetch returns a status, the range is gone (unmapped,
// unknown), umrt validates and its device memory is released.
TEST(AdvFree, WhileAnotherThreadPrefetchesIt) {
  umrt_config cfg = sim_cfg(64 * MiB, 1.0);
  Outcome o = run_in_child("free-vs-prefetch", scaled(30s), &cfg, [] {
    const int rounds = 30 / kSlowdown + 4;
    int ok = 0, err = 0;
    for (int k = 0; k < rounds; ++k) {
      const size_t n = 6 * MiB + 5 * kPage;
      uint8_t *p = alloc(n);
      if (!p) return 3;
      fill_pattern(p, n, 80);
      const bool to_host = k % 3 == 2;
      if (to_host) CKS(umrt_prefetch(p, n, UMRT_LOCATION_DEVICE, nullptr), UMRT_SUCCESS);
      std::atomic<bool> go{false};
      umrt_status ps = UMRT_SUCCESS;
      std::string perr;
      std::thread t([&] {
        while (!go.load()) {
        }
        ps = umrt_prefetch(p, n, to_host ? UMRT_LOCATION_HOST : UMRT_LOCATION_DEVICE, nullptr);
        if (ps != UMRT_SUCCESS) perr = last_error();
      });
      go = true;
      std::this_thread::sleep_for(std::chrono::microseconds(300 * (k % 9)));
      umrt_status fs = umrt_free(p);
      t.join();
      CK(fs == UMRT_SUCCESS) << "round " << k << ": umrt_free while a prefetch runs: " << str(fs) << ": " << last_error();
      CK(ps == UMRT_SUCCESS || ps == UMRT_ERROR_INVALID_VALUE) << "round " << k << ": the racing prefetch: " << str(ps)
                                                               << ": " << perr;
      if (ps != UMRT_SUCCESS) CK(!perr.empty());
      (ps == UMRT_SUCCESS ? ok : err)++;
      CK(!is_mapped(p)) << "round " << k << ": the range is still mapped after umrt_free";
      umrt_location loc;
      CKS(umrt_page_location(p, &loc), UMRT_ERROR_INVALID_VALUE);
      CKS(umrt_free(p), UMRT_ERROR_INVALID_VALUE);
      CKS(umrt_validate(), UMRT_SUCCESS);
      if (g_fails.load()) break;
    }
    umrt_stats st;
    if (stats_now(&st)) CK(st.device_bytes_in_use == 0) << st.device_bytes_in_use << " device bytes in use";
    std::fprintf(stderr, "racing prefetches: %d succeeded, %d failed\n", ok, err);
    CKS(umrt_shutdown(), UMRT_SUCCESS);
    return 0;
  });
  SKIP_IF_CHILD_SKIPPED(o);
  EXPECT_TRUE(exited_with(o, 0));
}

// umrt_free (or a user munmap) while another thread reads the range (some of its reads are
// faults in flight): the reader may die of SIGSEGV once the range is gone; it never sees wrong
// data (zeros) and never hangs.
void reader_vs_gone(bool by_munmap) {
  const char *how = by_munmap ? "munmap" : "umrt_free";
  for (int k = 0; k < 4; ++k) {
    umrt_config cfg = sim_cfg(64 * MiB, k % 2 ? 0.2 : 4.0);
    Outcome o = run_in_child(std::string(how) + "-vs-reader-" + std::to_string(k), scaled(15s), &cfg, [k, by_munmap, how] {
      const size_t n = 4 * MiB;
      uint8_t *p = alloc(n);
      if (!p) return 3;
      fill_pattern(p, n, 81);
      CKS(umrt_prefetch(p, n, UMRT_LOCATION_DEVICE, nullptr), UMRT_SUCCESS);
      std::atomic<bool> stop{false};
      std::atomic<long> sweeps{0};
      std::atomic<int> phase{0};  // 0 before the free/munmap, 1 in it, 2 after it
      default_segv_under_sanitizers();
      std::thread t([&] {
        while (!stop.load()) {
          long bad = sweep_pages(p, n, 81);
          if (bad >= 0) {
            const int ph = phase.load();
            const std::string when = ph == 0 ? std::string("before ") + how + " was called"
                                     : ph == 1 ? std::string("while ") + how + " ran"
                                               : std::string("after ") + how + " returned";
            std::fprintf(stderr, "reader: page %ld read wrong data (word 0x%016llx) %s; the range is %s\n", bad,
                         static_cast<unsigned long long>(*reinterpret_cast<const uint64_t *>(p + bad * kPage)),
                         when.c_str(), is_mapped(p + bad * kPage) ? "still mapped" : "unmapped now");
            std::fflush(stderr);
            _exit(6);
          }
          sweeps++;
          umrt_prefetch(p, n, UMRT_LOCATION_DEVICE, nullptr);  // fails once gone: fine
        }
      });
      std::this_thread::sleep_for(std::chrono::milliseconds(2 + 3 * k));
      phase = 1;
      if (by_munmap) {
        CK(munmap(p, n) == 0) << strerror(errno);
      } else {
        umrt_status fs = umrt_free(p);
        CK(fs == UMRT_SUCCESS) << str(fs) << ": " << last_error();
      }
      phase = 2;
      std::this_thread::sleep_for(std::chrono::milliseconds(30));
      stop = true;
      t.join();  // the reader got out without touching the gone range (unlikely) or we are dead
      std::fprintf(stderr, "reader finished %ld sweeps and was not stopped by a SIGSEGV\n", sweeps.load());
      return 0;
    });
    SKIP_IF_CHILD_SKIPPED(o);
    if (o.sig == SIGSEGV) continue;  // the reader touched the gone range: the expected end
    EXPECT_TRUE(exited_with(o, 0)) << "only SIGSEGV or a clean exit are acceptable";
  }
}

TEST(AdvFree, WhileAnotherThreadReadsIt) { reader_vs_gone(false); }
TEST(AdvMunmap, WholeRangeWhileAnotherThreadReadsIt) { reader_vs_gone(true); }

// write(2) from and read(2) into managed memory whose pages are on the device (kernel-mode
// faults), also while a prefetch to the device holds the pages (a kernel write into a page an
// in-flight batch has write-protected): the bytes are what was written/read, wherever they are.
TEST(AdvSyscalls, ReadWriteOnDevicePages) {
  umrt_config cfg = sim_cfg(64 * MiB, 0.5);
  Outcome o = run_in_child("syscalls", scaled(20s), &cfg, [] {
    const size_t n = 2 * MiB;
    uint8_t *p = alloc(n), *q = alloc(n);
    if (!p || !q) return 3;
    fill_pattern(p, n, 150);
    CKS(umrt_prefetch(p, n, UMRT_LOCATION_DEVICE, nullptr), UMRT_SUCCESS);
    int fd = memfd_create("adv-sys", 0);
    CK(fd >= 0) << strerror(errno);
    // write(2) from device pages: the kernel faults them home.
    ssize_t w = write(fd, p, n);
    CK(w == static_cast<ssize_t>(n)) << "write from device-resident managed memory: " << w << " " << strerror(errno);
    std::vector<uint8_t> back(n);
    CK(pread(fd, back.data(), n, 0) == static_cast<ssize_t>(n));
    CKR(check_pattern(back.data(), n, 150)) << "what write(2) took from device pages";
    // read(2) into device pages of q.
    CKS(umrt_prefetch(q, n, UMRT_LOCATION_DEVICE, nullptr), UMRT_SUCCESS);
    ssize_t r = pread(fd, q, n, 0);
    CK(r == static_cast<ssize_t>(n)) << "read into device-resident managed memory: " << r << " " << strerror(errno);
    CKR(check_pattern(q, n, 150)) << "what read(2) put into device pages";
    // read(2) into q while a prefetch of q to the device runs (slow copies hold its pages).
    std::vector<uint8_t> other(n);
    fill_pattern(other.data(), n, 151);
    CK(pwrite(fd, other.data(), n, 0) == static_cast<ssize_t>(n));
    for (int k = 0; k < 4; ++k) {
      CKS(umrt_prefetch(q, n, UMRT_LOCATION_HOST, nullptr), UMRT_SUCCESS);
      fill_pattern(q, n, 152);
      std::atomic<bool> go{false};
      umrt_status ps = UMRT_SUCCESS;
      std::thread t([&] {
        go = true;
        ps = umrt_prefetch(q, n, UMRT_LOCATION_DEVICE, nullptr);
      });
      while (!go.load()) {
      }
      std::this_thread::sleep_for(std::chrono::microseconds(500 * k));
      r = pread(fd, q, n, 0);
      t.join();
      CK(r == static_cast<ssize_t>(n)) << "read racing a prefetch: " << r << " " << strerror(errno);
      CK(ps == UMRT_SUCCESS) << str(ps) << ": " << last_error();
      CKR(check_pattern(q, n, 151)) << "round " << k << ": the bytes read(2) wrote while a prefetch held the pages; "
                                    << page_summary(q, n, 151);
    }
    close(fd);
    CKS(umrt_validate(), UMRT_SUCCESS);
    CKS(umrt_free(p), UMRT_SUCCESS);
    CKS(umrt_free(q), UMRT_SUCCESS);
    CKS(umrt_shutdown(), UMRT_SUCCESS);
    return 0;
  });
  SKIP_IF_CHILD_SKIPPED(o);
  EXPECT_TRUE(exited_with(o, 0));
}

// Init, shutdown, lazy re-initialisation and configuration after it.
TEST(AdvLifecycle, InitShutdownLazyReinitSequences) {
  umrt_config cfg = sim_cfg(16 * MiB);
  Outcome o = run_in_child("lifecycle", scaled(20s), &cfg, [] {
    setenv("UMRT_BACKEND", "sim", 1);
    setenv("UMRT_DEVICE_MEMORY", "32M", 1);
    umrt_stats st;
    uint8_t *p = alloc(3 * MiB);
    if (!p) return 3;
    fill_pattern(p, 3 * MiB, 90);
    CKS(umrt_prefetch(p, 2 * MiB, UMRT_LOCATION_DEVICE, nullptr), UMRT_SUCCESS);
    // A second umrt_init with a configuration while running: INVALID_VALUE, nothing changes.
    umrt_stats a, b;
    stats_now(&a);
    umrt_config other = sim_cfg(48 * MiB);
    CKS(umrt_init(&other), UMRT_ERROR_INVALID_VALUE);
    umrt_config bad = sim_cfg(48 * MiB);
    bad.copy_threads = 65;
    CKS(umrt_init(&bad), UMRT_ERROR_INVALID_VALUE);
    umrt_status s = umrt_init(nullptr);
    CK(s == UMRT_SUCCESS || s == UMRT_ERROR_INVALID_VALUE) << "umrt_init(NULL) while running: " << str(s);
    stats_now(&b);
    CKR(stats_equal(a, b)) << "a refused umrt_init";
    CK(b.device_capacity == 16 * MiB) << "capacity " << b.device_capacity;
    CKR(all_pages_at(p, 2 * MiB, UMRT_LOCATION_DEVICE)) << "a refused umrt_init moved pages";
    CKR(check_device_pattern(p, 2 * MiB, 90));
    // Shutdown twice: both SUCCESS; the range is plain host memory with its data.
    CKS(umrt_shutdown(), UMRT_SUCCESS);
    CKS(umrt_shutdown(), UMRT_SUCCESS);
    CKR(check_pattern(p, 3 * MiB, 90)) << "after two shutdowns";
    p[5] = 0x11;  // plain memory: no fault service behind it
    CK(p[5] == 0x11);
    p[5] = pattern_byte(90, 5);
    // A call after shutdown initialises lazily from the environment (sim, 32M).
    umrt_location loc;
    CKS(umrt_page_location(p, &loc), UMRT_ERROR_INVALID_VALUE);  // lazily up again; p unknown to it
    if (stats_now(&st)) {
      CK(st.device_capacity == 32 * MiB) << "lazy init after shutdown: capacity " << st.device_capacity;
      CK(st.batches == 0 && st.cpu_faults == 0) << "statistics not reset by the new runtime";
    }
    const char *nm = umrt_backend_name();
    CK(nm && std::strcmp(nm, "sim") == 0) << (nm ? nm : "(null)");
    // umrt_init(cfg) after lazy init: INVALID_VALUE, the lazy configuration stays.
    umrt_config c2 = sim_cfg(8 * MiB);
    CKS(umrt_init(&c2), UMRT_ERROR_INVALID_VALUE);
    if (stats_now(&st)) CK(st.device_capacity == 32 * MiB) << st.device_capacity;
    uint8_t *q = alloc(2 * MiB + 1);
    if (q) {
      fill_pattern(q, 2 * MiB + 1, 91);
      CKS(umrt_prefetch(q, 2 * MiB + 1, UMRT_LOCATION_DEVICE, nullptr), UMRT_SUCCESS);
      CKR(check_pattern(q, 2 * MiB + 1, 91));
      CKS(umrt_free(q), UMRT_SUCCESS);
    }
    // The range from before the shutdown: still plain memory with its data; freeing it through
    // umrt is refused or succeeds, never crashes.
    CKR(check_pattern(p, 3 * MiB, 90)) << "pre-shutdown range after the re-initialisation";
    s = umrt_free(p);
    CK(s == UMRT_SUCCESS || s == UMRT_ERROR_INVALID_VALUE) << "umrt_free of a range from before a shutdown: " << str(s);
    std::fprintf(stderr, "umrt_free of a range from before the shutdown: %s\n", str(s).c_str());
    if (s == UMRT_SUCCESS) CK(!is_mapped(p)) << "freed but still mapped";
    CKS(umrt_free(p), UMRT_ERROR_INVALID_VALUE);
    // Shutdown, then init with a configuration: works (capacity from it).
    CKS(umrt_shutdown(), UMRT_SUCCESS);
    umrt_config c3 = sim_cfg(24 * MiB);
    CKS(umrt_init(&c3), UMRT_SUCCESS);
    if (stats_now(&st)) CK(st.device_capacity == 24 * MiB) << st.device_capacity;
    // A refused configuration leaves umrt down: the next good init succeeds.
    CKS(umrt_shutdown(), UMRT_SUCCESS);
    umrt_config c4 = sim_cfg(24 * MiB);
    c4.prefetch_min_pages = 513;
    CKS(umrt_init(&c4), UMRT_ERROR_INVALID_VALUE);
    umrt_config c5 = sim_cfg(20 * MiB);
    CKS(umrt_init(&c5), UMRT_SUCCESS);
    if (stats_now(&st)) CK(st.device_capacity == 20 * MiB) << "after a refused init then a good one: " << st.device_capacity;
    CKS(umrt_shutdown(), UMRT_SUCCESS);
    return 0;
  });
  SKIP_IF_CHILD_SKIPPED(o);
  EXPECT_TRUE(exited_with(o, 0));
  std::printf("[ child    ] %s", o.err.c_str());
}

// Many threads allocating, moving (with eviction: they want more device memory together than
// there is), checking and freeing at once.
TEST(AdvConcurrency, ManyThreadsMallocFreeWithPrefetches) {
  umrt_config cfg = sim_cfg(16 * MiB);
  Outcome o = run_in_child("many-threads", scaled(40s), &cfg, [] {
    const int threads = 6, iters = 60 / kSlowdown + 6;
    const size_t sizes[] = {1, 4095, 4096, 4097, kBlock - 1, kBlock, kBlock + 1, 3 * MiB + 5, 6 * MiB};
    std::vector<std::thread> ts;
    std::atomic<long> oom{0};
    for (int t = 0; t < threads; ++t)
      ts.emplace_back([&, t] {
        std::mt19937_64 rng(static_cast<uint64_t>(t) * 7919 + 1);
        for (int i = 0; i < iters; ++i) {
          const size_t n = sizes[rng() % (sizeof sizes / sizeof sizes[0])];
          const uint64_t seed = static_cast<uint64_t>(t) << 32 | static_cast<uint64_t>(i);
          void *v = nullptr;
          umrt_status s = umrt_malloc(&v, n);
          CK(s == UMRT_SUCCESS) << "umrt_malloc(" << n << "): " << str(s) << ": " << last_error();
          if (s != UMRT_SUCCESS) continue;
          auto *p = static_cast<uint8_t *>(v);
          CKR(check_zero(p, n)) << "fresh allocation of " << n;
          fill_pattern(p, n, seed);
          s = umrt_prefetch(p, n, UMRT_LOCATION_DEVICE, nullptr);
          if (s == UMRT_ERROR_OUT_OF_MEMORY) oom++;
          CK(s == UMRT_SUCCESS) << "prefetch of " << n << ": " << str(s) << ": " << last_error();
          if (i % 3 == 0) p[n - 1] ^= 0x5a;  // a fault (and a write) on the last page
          if (i % 3 == 0) p[n - 1] ^= 0x5a;
          if (i % 2 == 0) {
            s = umrt_prefetch(p + n / 2, n - n / 2, UMRT_LOCATION_HOST, nullptr);
            CK(s == UMRT_SUCCESS) << str(s) << ": " << last_error();
          }
          CKR(check_pattern(p, n, seed)) << "thread " << t << " iteration " << i << " size " << n;
          s = umrt_free(p);
          CK(s == UMRT_SUCCESS) << str(s) << ": " << last_error();
          if (g_fails.load() > 20) return;
        }
      });
    for (auto &t : ts) t.join();
    if (oom.load()) std::fprintf(stderr, "%ld prefetches ran out of device memory\n", oom.load());
    CKS(umrt_validate(), UMRT_SUCCESS);
    umrt_stats st;
    if (stats_now(&st)) {
      CK(st.device_bytes_in_use == 0) << st.device_bytes_in_use << " device bytes in use after every free";
      std::fprintf(stderr, "evictions %llu, batches %llu\n", static_cast<unsigned long long>(st.evictions),
                   static_cast<unsigned long long>(st.batches));
    }
    CKS(umrt_shutdown(), UMRT_SUCCESS);
    return 0;
  });
  SKIP_IF_CHILD_SKIPPED(o);
  EXPECT_TRUE(exited_with(o, 0));
  std::printf("[ child    ] %s", o.err.c_str());
}


// ---- boundary values ----------------------------------------------------------------------------

// Enum objects holding values outside their enumerators (as a C caller can pass them).
template <class E>
E bad_enum(int v) {
  static_assert(sizeof(E) == sizeof(int));
  E e;
  std::memcpy(&e, &v, sizeof e);
  return e;
}

// What must not change across a failing call: statistics, each page's location, the bytes.
struct World {
  struct R {
    uint8_t *p;
    size_t n;
    uint64_t seed;
  };
  std::vector<R> rs;
  umrt_stats st{};
  std::vector<std::vector<umrt_location>> locs;
  void take() {
    stats_now(&st);
    locs.clear();
    for (auto &r : rs) {
      std::vector<umrt_location> l;
      for (size_t off = 0; off < r.n; off += kPage) {
        umrt_location x = UMRT_LOCATION_HOST;
        umrt_page_location(r.p + off, &x);
        l.push_back(x);
      }
      locs.push_back(l);
    }
  }
  ::testing::AssertionResult same(const char *after) const {
    umrt_stats now;
    stats_now(&now);
    if (auto r = stats_equal(st, now); !r) return ::testing::AssertionFailure() << after << ": " << r.message();
    for (size_t i = 0; i < rs.size(); ++i) {
      const R &r = rs[i];
      for (size_t off = 0, pg = 0; off < r.n; off += kPage, ++pg) {
        umrt_location x = UMRT_LOCATION_HOST;
        umrt_status s = umrt_page_location(r.p + off, &x);
        if (s != UMRT_SUCCESS || x != locs[i][pg])
          return ::testing::AssertionFailure() << after << ": range " << i << " page " << pg << " moved ("
                                               << str(s) << ")";
        const size_t len = std::min(kPage, r.n - off);
        auto res = x == UMRT_LOCATION_DEVICE ? check_device_pattern(r.p + off, len, r.seed, off)
                                             : check_pattern(r.p + off, len, r.seed, off);
        if (!res) return ::testing::AssertionFailure() << after << ": range " << i << " page " << pg << ": " << res.message();
      }
    }
    return ::testing::AssertionSuccess();
  }
};

// A failing call: the status, a non-empty umrt_last_error(), and nothing changed.
#define CK_FAILS(call, want, world)                                                               \
  do {                                                                                            \
    umrt_status ckf_s_ = (call);                                                                  \
    CK(ckf_s_ == (want)) << #call << " returned " << str(ckf_s_) << ", expected " << str(want);   \
    if (ckf_s_ != UMRT_SUCCESS) CK(std::strlen(last_error()) > 0) << #call << ": empty umrt_last_error()"; \
    if (auto ckf_r_ = (world).same(#call); !ckf_r_) {                                             \
      CKR(ckf_r_);                                                                                \
      (world).take(); /* report each changing call once */                                        \
    }                                                                                             \
  } while (0)

TEST(AdvBoundary, EveryCallRefusesBadArgumentsAndChangesNothing) {
  umrt_config cfg = sim_cfg(32 * MiB);
  Outcome o = run_in_child("boundary-calls", scaled(20s), &cfg, [] {
    const size_t an = 4 * MiB + 3 * kPage + 100, bn = kBlock - 1;
    uint8_t *a = alloc(an), *b = alloc(bn);
    if (!a || !b) return 3;
    fill_pattern(a, an, 100);
    fill_pattern(b, bn, 101);
    CKS(umrt_prefetch(a, 2 * MiB + kPage, UMRT_LOCATION_DEVICE, nullptr), UMRT_SUCCESS);
    CKS(umrt_prefetch(b + kPage, 10 * kPage, UMRT_LOCATION_DEVICE, nullptr), UMRT_SUCCESS);
    World w;
    w.rs = {{a, an, 100}, {b, bn, 101}};
    w.take();
    const size_t amap = pages_of(an) * kPage;
    const bool before_free = !is_mapped(a - 1), after_free = !is_mapped(a + amap);
    std::fprintf(stderr, "address before a unmapped: %d, after a unmapped: %d\n", before_free, after_free);

    // umrt_malloc
    void *q = reinterpret_cast<void *>(uintptr_t{0x5a5a000});
    CK_FAILS(umrt_malloc(nullptr, 4096), UMRT_ERROR_INVALID_VALUE, w);
    CK_FAILS(umrt_malloc(&q, 0), UMRT_ERROR_INVALID_VALUE, w);
    for (size_t big : {SIZE_MAX, SIZE_MAX - kPage + 1, SIZE_MAX - kBlock + 1, SIZE_MAX / 2 + 1, size_t{1} << 50}) {
      umrt_status s = umrt_malloc(&q, big);
      CK(s == UMRT_ERROR_INVALID_VALUE || s == UMRT_ERROR_OUT_OF_MEMORY) << "umrt_malloc(" << big << "): " << str(s);
      if (s == UMRT_SUCCESS) umrt_free(q);
      CK(std::strlen(last_error()) > 0);
      CKR(w.same("umrt_malloc(huge)"));
    }
    CK(q == reinterpret_cast<void *>(uintptr_t{0x5a5a000})) << "a failed umrt_malloc wrote *ptr: " << q;

    // umrt_free
    CK_FAILS(umrt_free(nullptr), UMRT_ERROR_INVALID_VALUE, w);
    CK_FAILS(umrt_free(a + 1), UMRT_ERROR_INVALID_VALUE, w);
    CK_FAILS(umrt_free(a + kPage), UMRT_ERROR_INVALID_VALUE, w);
    CK_FAILS(umrt_free(a + an - 1), UMRT_ERROR_INVALID_VALUE, w);
    CK_FAILS(umrt_free(a + an), UMRT_ERROR_INVALID_VALUE, w);
    CK_FAILS(umrt_free(b + bn), UMRT_ERROR_INVALID_VALUE, w);
    if (before_free) CK_FAILS(umrt_free(a - 1), UMRT_ERROR_INVALID_VALUE, w);
    if (before_free) CK_FAILS(umrt_free(a - kPage), UMRT_ERROR_INVALID_VALUE, w);
    if (after_free) CK_FAILS(umrt_free(a + amap), UMRT_ERROR_INVALID_VALUE, w);
    int on_stack = 0;
    CK_FAILS(umrt_free(&on_stack), UMRT_ERROR_INVALID_VALUE, w);

    // umrt_prefetch
    const umrt_location locs[] = {UMRT_LOCATION_HOST, UMRT_LOCATION_DEVICE};
    for (umrt_location l : locs) {
      CK_FAILS(umrt_prefetch(nullptr, 1, l, nullptr), UMRT_ERROR_INVALID_VALUE, w);
      CK_FAILS(umrt_prefetch(nullptr, 0, l, nullptr), UMRT_ERROR_INVALID_VALUE, w);
      CK_FAILS(umrt_prefetch(a, 0, l, nullptr), UMRT_ERROR_INVALID_VALUE, w);
      CK_FAILS(umrt_prefetch(a, SIZE_MAX, l, nullptr), UMRT_ERROR_INVALID_VALUE, w);
      CK_FAILS(umrt_prefetch(a + kPage, SIZE_MAX - kPage + 1, l, nullptr), UMRT_ERROR_INVALID_VALUE, w);  // wraps to a
      CK_FAILS(umrt_prefetch(a + 3 * MiB, SIZE_MAX - 3 * MiB, l, nullptr), UMRT_ERROR_INVALID_VALUE, w);
      CK_FAILS(umrt_prefetch(a, an + 1, l, nullptr), UMRT_ERROR_INVALID_VALUE, w);
      CK_FAILS(umrt_prefetch(a, amap, l, nullptr), UMRT_ERROR_INVALID_VALUE, w);  // the page tail beyond `an`
      CK_FAILS(umrt_prefetch(a + an - 1, 2, l, nullptr), UMRT_ERROR_INVALID_VALUE, w);
      CK_FAILS(umrt_prefetch(a + an, 1, l, nullptr), UMRT_ERROR_INVALID_VALUE, w);
      CK_FAILS(umrt_prefetch(a + 2 * MiB, an - 2 * MiB + 1, l, nullptr), UMRT_ERROR_INVALID_VALUE, w);
      CK_FAILS(umrt_prefetch(b, bn + 1, l, nullptr), UMRT_ERROR_INVALID_VALUE, w);
      CK_FAILS(umrt_prefetch(b, kBlock, l, nullptr), UMRT_ERROR_INVALID_VALUE, w);
      if (before_free) CK_FAILS(umrt_prefetch(a - 1, 2, l, nullptr), UMRT_ERROR_INVALID_VALUE, w);
      if (before_free) CK_FAILS(umrt_prefetch(a - 1, 1, l, nullptr), UMRT_ERROR_INVALID_VALUE, w);
      if (after_free) CK_FAILS(umrt_prefetch(a + amap, 1, l, nullptr), UMRT_ERROR_INVALID_VALUE, w);
      CK_FAILS(umrt_prefetch(&on_stack, sizeof on_stack, l, nullptr), UMRT_ERROR_INVALID_VALUE, w);
    }
    for (int v : {2, 7, -1, 1 << 30}) {
      CK_FAILS(umrt_prefetch(a, an, bad_enum<umrt_location>(v), nullptr), UMRT_ERROR_INVALID_VALUE, w);
      CK_FAILS(umrt_prefetch(a + 3 * MiB, kPage, bad_enum<umrt_location>(v), nullptr), UMRT_ERROR_INVALID_VALUE, w);
    }

    // umrt_device_pointer / umrt_page_location / umrt_get_stats
    void *d = reinterpret_cast<void *>(uintptr_t{0xd00d});
    umrt_location lv = bad_enum<umrt_location>(9);
    CK_FAILS(umrt_device_pointer(nullptr, &d), UMRT_ERROR_INVALID_VALUE, w);
    CK_FAILS(umrt_device_pointer(a, nullptr), UMRT_ERROR_INVALID_VALUE, w);
    CK_FAILS(umrt_device_pointer(a + an, &d), UMRT_ERROR_INVALID_VALUE, w);
    CK_FAILS(umrt_device_pointer(b + bn, &d), UMRT_ERROR_INVALID_VALUE, w);
    if (before_free) CK_FAILS(umrt_device_pointer(a - 1, &d), UMRT_ERROR_INVALID_VALUE, w);
    CK(d == reinterpret_cast<void *>(uintptr_t{0xd00d})) << "a failed umrt_device_pointer wrote *dptr";
    CK_FAILS(umrt_page_location(nullptr, &lv), UMRT_ERROR_INVALID_VALUE, w);
    CK_FAILS(umrt_page_location(a, nullptr), UMRT_ERROR_INVALID_VALUE, w);
    CK_FAILS(umrt_page_location(a + an, &lv), UMRT_ERROR_INVALID_VALUE, w);
    CK_FAILS(umrt_page_location(b + bn, &lv), UMRT_ERROR_INVALID_VALUE, w);
    if (before_free) CK_FAILS(umrt_page_location(a - 1, &lv), UMRT_ERROR_INVALID_VALUE, w);
    int lvi;
    std::memcpy(&lvi, &lv, sizeof lvi);
    CK(lvi == 9) << "a failed umrt_page_location wrote *loc";
    CK_FAILS(umrt_get_stats(nullptr), UMRT_ERROR_INVALID_VALUE, w);
    for (int v : {6, 7, 100, -1, INT32_MIN}) {
      const char *t = umrt_status_string(bad_enum<umrt_status>(v));
      CK(t != nullptr && t[0] != 0) << "umrt_status_string(" << v << ") is " << (t ? "empty" : "NULL");
    }

    // umrt_inject_failure: bad arguments arm nothing.
    for (int kind : {0, 7, 8, -1})
      CK_FAILS(umrt_inject_failure(bad_enum<umrt_inject_kind>(kind), 1, 1), UMRT_ERROR_INVALID_VALUE, w);
    CK_FAILS(umrt_inject_failure(UMRT_INJECT_COPY, 0, 1), UMRT_ERROR_INVALID_VALUE, w);
    CK_FAILS(umrt_inject_failure(UMRT_INJECT_ALLOC, 0, UINT64_MAX), UMRT_ERROR_INVALID_VALUE, w);
    CK_FAILS(umrt_inject_failure(UMRT_INJECT_COPY, 1, 0), UMRT_ERROR_INVALID_VALUE, w);
    CK_FAILS(umrt_inject_failure(UMRT_INJECT_ALLOC, UINT64_MAX, 0), UMRT_ERROR_INVALID_VALUE, w);
    // ... so the next prefetch with copies and allocations goes through.
    CKS(umrt_prefetch(a + 3 * MiB, an - 3 * MiB, UMRT_LOCATION_DEVICE, nullptr), UMRT_SUCCESS);
    CKR(all_pages_at(a + 3 * MiB, an - 3 * MiB, UMRT_LOCATION_DEVICE));

    // The valid edges: spans ending exactly at the end, the last byte alone.
    CKS(umrt_prefetch(a + an - 1, 1, UMRT_LOCATION_HOST, nullptr), UMRT_SUCCESS);
    CKR(all_pages_at(a + an - 1, 1, UMRT_LOCATION_HOST));
    CKS(umrt_prefetch(b + bn - 1, 1, UMRT_LOCATION_DEVICE, nullptr), UMRT_SUCCESS);
    CKR(all_pages_at(b + bn - 1, 1, UMRT_LOCATION_DEVICE));
    CKS(umrt_prefetch(a, an, UMRT_LOCATION_DEVICE, nullptr), UMRT_SUCCESS);
    CKR(all_pages_at(a, an, UMRT_LOCATION_DEVICE));
    CKS(umrt_prefetch(b, bn, UMRT_LOCATION_DEVICE, nullptr), UMRT_SUCCESS);
    CKR(check_device_pattern(a, an, 100));
    CKR(check_device_pattern(b, bn, 101));
    void *d0 = nullptr, *d1 = nullptr;
    CKS(umrt_device_pointer(a, &d0), UMRT_SUCCESS);
    CKS(umrt_device_pointer(a + an - 1, &d1), UMRT_SUCCESS);
    CK(static_cast<uint8_t *>(d1) == static_cast<uint8_t *>(d0) + an - 1) << "device pointer of the last byte";
    CKS(umrt_page_location(a + an - 1, &lv), UMRT_SUCCESS);
    CK(lv == UMRT_LOCATION_DEVICE);
    CKS(umrt_prefetch(a, an, UMRT_LOCATION_HOST, nullptr), UMRT_SUCCESS);
    CKR(check_pattern(a, an, 100));
    CKR(check_pattern(b, bn, 101));

    // Double free: the second one changes nothing.
    CKS(umrt_free(b), UMRT_SUCCESS);
    w.rs = {{a, an, 100}};
    w.take();
    CK_FAILS(umrt_free(b), UMRT_ERROR_INVALID_VALUE, w);
    CK_FAILS(umrt_prefetch(b, 1, UMRT_LOCATION_DEVICE, nullptr), UMRT_ERROR_INVALID_VALUE, w);
    CKS(umrt_free(a), UMRT_SUCCESS);
    CKS(umrt_validate(), UMRT_SUCCESS);
    CKS(umrt_shutdown(), UMRT_SUCCESS);
    return 0;
  });
  SKIP_IF_CHILD_SKIPPED(o);
  EXPECT_TRUE(exited_with(o, 0));
}

// Allocation sizes around a block: each allocation is whole (every byte writable, managed, moves).
TEST(AdvBoundary, SizesAroundABlock) {
  umrt_config cfg = sim_cfg(32 * MiB);
  Outcome o = run_in_child("boundary-sizes", scaled(20s), &cfg, [] {
    for (size_t n : {size_t{1}, kPage - 1, kPage, kPage + 1, kBlock - 1, kBlock, kBlock + 1, 2 * kBlock - 1,
                     2 * kBlock + 1}) {
      uint8_t *p = alloc(n);
      if (!p) continue;
      CKR(check_zero(p, n)) << "fresh allocation of " << n;
      fill_pattern(p, n, n);
      CKS(umrt_prefetch(p, n, UMRT_LOCATION_DEVICE, nullptr), UMRT_SUCCESS);
      CKR(all_pages_at(p, n, UMRT_LOCATION_DEVICE)) << "size " << n;
      CKR(check_device_pattern(p, n, n)) << "size " << n;
      CK(p[n - 1] == pattern_byte(n, n - 1)) << "last byte of " << n;  // a fault on the last page
      CKS(umrt_prefetch(p + n - 1, 1, UMRT_LOCATION_DEVICE, nullptr), UMRT_SUCCESS);
      CKR(check_pattern(p, n, n)) << "size " << n;
      CKS(umrt_prefetch(p, n, UMRT_LOCATION_DEVICE, nullptr), UMRT_SUCCESS);
      CKS(umrt_prefetch(p, n, UMRT_LOCATION_HOST, nullptr), UMRT_SUCCESS);
      CKR(all_pages_at(p, n, UMRT_LOCATION_HOST)) << "size " << n;
      CKR(check_pattern(p, n, n)) << "size " << n;
      umrt_location l;
      if (n % kPage != 0 || !is_mapped(p + n))  // one byte past the end (not another allocation)
        CKS(umrt_page_location(p + n, &l), UMRT_ERROR_INVALID_VALUE);
      CKS(umrt_free(p), UMRT_SUCCESS);
    }
    CKS(umrt_validate(), UMRT_SUCCESS);
    umrt_stats st;
    if (stats_now(&st)) CK(st.device_bytes_in_use == 0) << st.device_bytes_in_use;
    CKS(umrt_shutdown(), UMRT_SUCCESS);
    return 0;
  });
  SKIP_IF_CHILD_SKIPPED(o);
  EXPECT_TRUE(exited_with(o, 0));
}

// Injection counts and positions at their edges.
TEST(AdvBoundary, InjectionEdges) {
  umrt_config cfg = sim_cfg(32 * MiB);
  Outcome o = run_in_child("boundary-inject", scaled(20s), &cfg, [] {
    const size_t n = 6 * MiB;
    uint8_t *p = alloc(n);
    if (!p) return 3;
    fill_pattern(p, n, 110);
    // nth = UINT64_MAX: armed, but never reached.
    CKS(umrt_inject_failure(UMRT_INJECT_COPY, UINT64_MAX, UINT64_MAX), UMRT_SUCCESS);
    CKS(umrt_inject_failure(UMRT_INJECT_ALLOC, UINT64_MAX, 1), UMRT_SUCCESS);
    CKS(umrt_prefetch(p, n, UMRT_LOCATION_DEVICE, nullptr), UMRT_SUCCESS);
    CKS(umrt_prefetch(p, n, UMRT_LOCATION_HOST, nullptr), UMRT_SUCCESS);
    CKR(check_pattern(p, n, 110));
    // nth 1, count 1: exactly the next copy fails; the prefetch says so; nothing is lost; the
    // prefetch after it goes through.
    CKS(umrt_inject_failure(UMRT_INJECT_COPY, 1, 1), UMRT_SUCCESS);
    umrt_status s = umrt_prefetch(p, n, UMRT_LOCATION_DEVICE, nullptr);
    CK(s == UMRT_ERROR_BACKEND) << "an injected copy failure: " << str(s);
    if (s != UMRT_SUCCESS) CK(std::strlen(last_error()) > 0);
    CKR(check_pattern(p, n, 110)) << "after an injected copy failure";
    CKS(umrt_prefetch(p, n, UMRT_LOCATION_DEVICE, nullptr), UMRT_SUCCESS);
    CKR(all_pages_at(p, n, UMRT_LOCATION_DEVICE));
    CKR(check_device_pattern(p, n, 110));
    // Device->host: the first allocation... (host needs none) -> copy injection on the way home.
    CKS(umrt_inject_failure(UMRT_INJECT_COPY, 1, 1), UMRT_SUCCESS);
    s = umrt_prefetch(p, n, UMRT_LOCATION_HOST, nullptr);
    CK(s == UMRT_ERROR_BACKEND) << "an injected copy failure home: " << str(s);
    CKR(check_pattern(p, n, 110)) << "after an injected copy failure on the way home";
    // nth 1, count UINT64_MAX on allocations: every host->device prefetch fails, data stays.
    CKS(umrt_prefetch(p, n, UMRT_LOCATION_HOST, nullptr), UMRT_SUCCESS);
    CKS(umrt_inject_failure(UMRT_INJECT_ALLOC, 1, UINT64_MAX), UMRT_SUCCESS);
    for (int i = 0; i < 3; ++i) {
      s = umrt_prefetch(p, n, UMRT_LOCATION_DEVICE, nullptr);
      CK(s == UMRT_ERROR_OUT_OF_MEMORY || s == UMRT_ERROR_BACKEND) << "allocation injection #" << i << ": " << str(s);
      CKR(all_pages_at(p, n, UMRT_LOCATION_HOST)) << "pages moved although every allocation failed";
    }
    CKR(check_pattern(p, n, 110));
    CKS(umrt_inject_failure(UMRT_INJECT_ALLOC, UINT64_MAX, 1), UMRT_SUCCESS);  // re-armed far away
    CKS(umrt_prefetch(p, n, UMRT_LOCATION_DEVICE, nullptr), UMRT_SUCCESS);
    CKR(check_device_pattern(p, n, 110));
    CKS(umrt_validate(), UMRT_SUCCESS);
    CKS(umrt_free(p), UMRT_SUCCESS);
    CKS(umrt_shutdown(), UMRT_SUCCESS);
    return 0;
  });
  SKIP_IF_CHILD_SKIPPED(o);
  EXPECT_TRUE(exited_with(o, 0));
}

// umrt_config fields out of range are refused by umrt_init (INVALID_VALUE, a reason, umrt stays
// down: the next good configuration is the one used); the valid edges are accepted.
TEST(AdvBoundary, ConfigFieldsAtAndBeyondTheirLimits) {
  Outcome o = run_in_child("boundary-config", scaled(30s), nullptr, [] {
    struct Case {
      const char *what;
      std::function<void(umrt_config &)> set;
      bool ok;
    };
    const double nan = std::numeric_limits<double>::quiet_NaN();
    const Case cases[] = {
        {"copy_threads 65", [](umrt_config &c) { c.copy_threads = 65; }, false},
        {"copy_threads UINT32_MAX", [](umrt_config &c) { c.copy_threads = UINT32_MAX; }, false},
        {"copy_threads 64", [](umrt_config &c) { c.copy_threads = 64; }, true},
        {"copy_threads 1", [](umrt_config &c) { c.copy_threads = 1; }, true},
        {"prefetch_min 513", [](umrt_config &c) { c.prefetch_min_pages = 513; }, false},
        {"prefetch_max 513", [](umrt_config &c) { c.prefetch_max_pages = 513; }, false},
        {"prefetch_min 512 max 512", [](umrt_config &c) { c.prefetch_min_pages = 512; c.prefetch_max_pages = 512; }, true},
        {"prefetch_min 1 max 1", [](umrt_config &c) { c.prefetch_min_pages = 1; c.prefetch_max_pages = 1; }, true},
        {"prefetch_min 5 max 4", [](umrt_config &c) { c.prefetch_min_pages = 5; c.prefetch_max_pages = 4; }, false},
        {"prefetch_max 2 (min default 4)", [](umrt_config &c) { c.prefetch_max_pages = 2; }, false},
        {"prefetch_min UINT32_MAX", [](umrt_config &c) { c.prefetch_min_pages = UINT32_MAX; }, false},
        {"backend 7", [](umrt_config &c) { c.backend = bad_enum<umrt_backend_kind>(7); }, false},
        {"backend -1", [](umrt_config &c) { c.backend = bad_enum<umrt_backend_kind>(-1); }, false},
        {"log_level 5", [](umrt_config &c) { c.log_level = bad_enum<umrt_log_level>(5); }, false},
        {"log_level -1", [](umrt_config &c) { c.log_level = bad_enum<umrt_log_level>(-1); }, false},
        {"write_fault 3", [](umrt_config &c) { c.write_fault = bad_enum<umrt_write_fault_policy>(3); }, false},
        {"write_fault -1", [](umrt_config &c) { c.write_fault = bad_enum<umrt_write_fault_policy>(-1); }, false},
        {"bandwidth -1", [](umrt_config &c) { c.sim_bandwidth_gbps = -1.0; }, false},
        {"bandwidth -0.001", [](umrt_config &c) { c.sim_bandwidth_gbps = -0.001; }, false},
        {"bandwidth NaN", [nan](umrt_config &c) { c.sim_bandwidth_gbps = nan; }, false},
        {"bandwidth -inf", [](umrt_config &c) { c.sim_bandwidth_gbps = -HUGE_VAL; }, false},
        {"device_memory 1", [](umrt_config &c) { c.device_memory = 1; }, false},
        {"device_memory 2 MiB - 1", [](umrt_config &c) { c.device_memory = kBlock - 1; }, false},
        {"device_memory 2 MiB", [](umrt_config &c) { c.device_memory = kBlock; }, true},
        {"device_memory 2 MiB + 1", [](umrt_config &c) { c.device_memory = kBlock + 1; }, true},
    };
    CKS(umrt_config_defaults(nullptr), UMRT_ERROR_INVALID_VALUE);
    for (const Case &k : cases) {
      umrt_config c = sim_cfg(16 * MiB);
      k.set(c);
      umrt_status s = umrt_init(&c);
      if (s == UMRT_ERROR_NOT_SUPPORTED) return kSkipCode;
      if (k.ok) {
        CK(s == UMRT_SUCCESS) << k.what << ": refused: " << str(s) << ": " << last_error();
        if (s == UMRT_SUCCESS) {
          void *p = nullptr;
          CKS(umrt_malloc(&p, 3 * MiB), UMRT_SUCCESS);
          if (p) {
            fill_pattern(p, 3 * MiB, 120);
            CKS(umrt_prefetch(p, 2 * MiB, UMRT_LOCATION_DEVICE, nullptr), UMRT_SUCCESS);
            CKR(check_pattern(p, 3 * MiB, 120)) << k.what;
            CKS(umrt_free(p), UMRT_SUCCESS);
          }
          umrt_stats st;
          if (stats_now(&st) && c.device_memory >= kBlock)
            CK(st.device_capacity == c.device_memory / kBlock * kBlock) << k.what << ": capacity " << st.device_capacity;
        }
      } else {
        CK(s == UMRT_ERROR_INVALID_VALUE) << k.what << ": accepted or wrong status: " << str(s);
        if (s != UMRT_SUCCESS) CK(std::strlen(last_error()) > 0) << k.what << ": empty umrt_last_error()";
        if (s == UMRT_SUCCESS) {
          CKS(umrt_shutdown(), UMRT_SUCCESS);
          continue;
        }
        // Still down: a good configuration is taken as given.
        umrt_config g = sim_cfg(6 * MiB);
        CK(umrt_init(&g) == UMRT_SUCCESS) << k.what << ": umrt_init with a good configuration after the refusal: "
                                          << last_error();
        umrt_stats st;
        if (stats_now(&st)) CK(st.device_capacity == 6 * MiB) << k.what << ": capacity " << st.device_capacity;
      }
      CKS(umrt_shutdown(), UMRT_SUCCESS);
    }
    return 0;
  });
  SKIP_IF_CHILD_SKIPPED(o);
  EXPECT_TRUE(exited_with(o, 0));
}


// An application with its own SIGSEGV handler (installed before umrt starts, and one installed
// after): its handler sees exactly its own faults — none of umrt's (a copy engine reading pages
// the user unmaps under a prefetch) — and umrt never crashes.
sigjmp_buf g_app_jb;
std::atomic<int> g_app_segv{0};
void app_segv(int, siginfo_t *, void *) {
  g_app_segv.fetch_add(1);
  siglongjmp(g_app_jb, 1);
}
bool app_probe(const volatile uint8_t *addr) {  // true if reading addr faulted (into app_segv)
  if (sigsetjmp(g_app_jb, 1) != 0) return true;
  (void)*addr;
  return false;
}

TEST(AdvSignals, ApplicationSegvHandlerCoexists) {
  for (int when : {0, 1}) {
    umrt_config cfg = sim_cfg(64 * MiB, 2.0);
    Outcome o = run_in_child(when ? "app-segv-after" : "app-segv-before", scaled(20s), when ? &cfg : nullptr, [when] {
      struct sigaction sa {};
      sa.sa_sigaction = app_segv;
      sa.sa_flags = SA_SIGINFO;
      sigemptyset(&sa.sa_mask);
      CK(sigaction(SIGSEGV, &sa, nullptr) == 0);
      if (!when) {
        umrt_config c = sim_cfg(64 * MiB, 2.0);
        umrt_status s = umrt_init(&c);
        if (s == UMRT_ERROR_NOT_SUPPORTED) return kSkipCode;
        CKS(s, UMRT_SUCCESS);
      }
      void *hole = mmap(nullptr, kPage, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
      CK(app_probe(static_cast<uint8_t *>(hole))) << "the application's own fault did not reach its handler";
      CK(g_app_segv.load() == 1) << g_app_segv.load();
      // munmap racing a prefetch: umrt's copy engines read vanishing pages.
      const int rounds = 20 / kSlowdown + 4;
      for (int k = 0; k < rounds; ++k) {
        const size_t n = 6 * MiB;
        uint8_t *p = alloc(n);
        if (!p) return 3;
        fill_pattern(p, n, 130);
        std::atomic<bool> go{false};
        std::thread t([&] {
          while (!go.load()) {
          }
          (void)umrt_prefetch(p, n, UMRT_LOCATION_DEVICE, nullptr);
        });
        go = true;
        std::this_thread::sleep_for(std::chrono::microseconds(300 * (k % 8)));
        CK(munmap(p, n) == 0);
        t.join();
        CKS(umrt_validate(), UMRT_SUCCESS);
      }
      CK(g_app_segv.load() == 1) << "the application's SIGSEGV handler ran " << g_app_segv.load() - 1
                                 << " times for faults that were not its own";
      CK(app_probe(static_cast<uint8_t *>(hole))) << "the application's handler is gone";
      CK(g_app_segv.load() == 2);
      // Managed memory still faults normally with the application's handler installed.
      uint8_t *p = alloc(2 * MiB);
      if (p) {
        fill_pattern(p, 2 * MiB, 131);
        CKS(umrt_prefetch(p, 2 * MiB, UMRT_LOCATION_DEVICE, nullptr), UMRT_SUCCESS);
        CK(!app_probe(p + 12345)) << "a fault on a device page reached the application's SIGSEGV handler";
        CKR(check_pattern(p, 2 * MiB, 131));
        CKS(umrt_free(p), UMRT_SUCCESS);
      }
      CKS(umrt_shutdown(), UMRT_SUCCESS);
      // After umrt is gone, the application's handler is still the one installed.
      struct sigaction cur {};
      sigaction(SIGSEGV, nullptr, &cur);
      CK((cur.sa_flags & SA_SIGINFO) && cur.sa_sigaction == app_segv) << "umrt_shutdown did not leave the application's handler";
      return 0;
    });
    SKIP_IF_CHILD_SKIPPED(o);
    EXPECT_TRUE(exited_with(o, 0)) << (when ? "handler installed after umrt_init" : "handler installed before umrt_init");
  }
}

// Two threads each prefetching their own 2 MiB range into a device of one 2 MiB chunk: each
// prefetch evicts the other's block (or reports OUT_OF_MEMORY); nothing hangs, nothing is lost.
TEST(AdvConcurrency, TwoThreadsFightOverOneChunk) {
  umrt_config cfg = sim_cfg(2 * MiB, 2.0);
  Outcome o = run_in_child("one-chunk", scaled(20s), &cfg, [] {
    const size_t n = 2 * MiB;
    uint8_t *r[3] = {alloc(n), alloc(n), alloc(n)};
    if (!r[0] || !r[1] || !r[2]) return 3;
    for (int i = 0; i < 3; ++i) fill_pattern(r[i], n, 140 + static_cast<uint64_t>(i));
    std::atomic<long> ok{0}, oom{0};
    std::vector<std::thread> ts;
    const int iters = 40 / kSlowdown + 5;
    for (int t = 0; t < 3; ++t)
      ts.emplace_back([&, t] {
        for (int i = 0; i < iters; ++i) {
          umrt_status s = umrt_prefetch(r[t], n, UMRT_LOCATION_DEVICE, nullptr);
          if (s == UMRT_SUCCESS) ok++;
          else if (s == UMRT_ERROR_OUT_OF_MEMORY) oom++;
          else CK(false) << "prefetch into a one-chunk device: " << str(s) << ": " << last_error();
          if (s != UMRT_SUCCESS) CK(std::strlen(last_error()) > 0);
          if (t == 2) {
            long bad = sweep_pages(r[t], n, 142);  // faults while the others evict
            CK(bad < 0) << "page " << bad;
          }
        }
      });
    for (auto &t : ts) t.join();
    std::fprintf(stderr, "prefetches: %ld succeeded, %ld out of device memory\n", ok.load(), oom.load());
    CK(ok.load() > 0) << "no prefetch ever succeeded";
    for (int i = 0; i < 3; ++i) CKR(check_pattern(r[i], n, 140 + static_cast<uint64_t>(i))) << "range " << i;
    CKS(umrt_validate(), UMRT_SUCCESS);
    // One prefetch of three times the device: success with eviction or OUT_OF_MEMORY; intact.
    uint8_t *big = alloc(6 * MiB);
    if (big) {
      fill_pattern(big, 6 * MiB, 143);
      umrt_status s = umrt_prefetch(big, 6 * MiB, UMRT_LOCATION_DEVICE, nullptr);
      CK(s == UMRT_SUCCESS || s == UMRT_ERROR_OUT_OF_MEMORY) << "prefetch of 3x the device: " << str(s) << ": " << last_error();
      CKR(check_pattern(big, 6 * MiB, 143));
      CKS(umrt_free(big), UMRT_SUCCESS);
    }
    for (auto *x : r) CKS(umrt_free(x), UMRT_SUCCESS);
    CKS(umrt_validate(), UMRT_SUCCESS);
    CKS(umrt_shutdown(), UMRT_SUCCESS);
    return 0;
  });
  SKIP_IF_CHILD_SKIPPED(o);
  EXPECT_TRUE(exited_with(o, 0));
  std::printf("[ child    ] %s", o.err.c_str());
}

}  // namespace
