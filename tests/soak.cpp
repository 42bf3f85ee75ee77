// soak.cpp — umrt-soak: a time-bounded soak of the public API (umrt.h only), run by
// scripts/soak.sh (not a ctest). Several threads run random operations on a shared table of
// allocations (4 KiB .. 8 MiB) with small device memory (eviction all the time) and sim copy
// latency: umrt_malloc/umrt_free, writes of a pattern derived from (allocation id, offset,
// version), reads that verify every byte they cover, prefetches of random sub-spans to the device
// and to the host racing the reads and writes, and several readers of the same stripes at once.
// Each allocation is cut into 64 KiB stripes with a version each (0 = never written: zeros); a
// writer holds its stripe exclusively, readers share it, prefetches hold nothing (they must be
// safe against anything). Every live allocation is verified in full again at the end.
//
// Prints the seed (--seed reproduces each thread's operation sequence; the interleaving is the
// scheduler's), a progress line every --progress seconds, and one summary line. Exits non-zero if
// any page was lost (a byte read back wrong), an API call failed unexpectedly, umrt_validate()
// failed at the end, or the watchdog fired (no operation finished for --watchdog seconds).
//
//   umrt-soak [--seconds 60] [--seed N] [--threads 4] [--device-memory 16M] [--latency-us 50]
//             [--max-live 64M] [--progress 10] [--watchdog 60] [--self-test]
// --self-test changes one byte of a live allocation without a new version after ~1 s, to show
// that a lost byte is caught (the run must report a lost page and exit non-zero).
#include <umrt/umrt.h>
#include "../kernels/umrt_kernels.h"

#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cinttypes>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <random>
#include <shared_mutex>
#include <string>
#include <thread>
#include <vector>

namespace {

using Clock = std::chrono::steady_clock;
constexpr size_t kPage = 4096;
constexpr size_t kStripe = 64 * 1024;
constexpr size_t kSlots = 24;
constexpr size_t kMinAlloc = 4096;
constexpr size_t kMaxAlloc = size_t{8} << 20;

struct Options {
  double seconds = 60;
  uint64_t seed = 0;
  bool seed_given = false;
  unsigned threads = 4;
  uint64_t device_memory = 16 << 20;
  uint32_t latency_us = 50;
  uint64_t max_live = 64 << 20;
  double progress = 10;
  double watchdog = 60;
  bool self_test = false;  // corrupt one byte behind umrt's back: the run must then FAIL
};

using umrt_kernels::mix;  // the kernels' own bit mixer (kernels/umrt_kernels.h: plain C++ here)

// The 8-byte word number w of allocation `id` at `version` (0: never written, zeros).
inline uint64_t word(uint64_t id, uint32_t version, size_t w) {
  if (version == 0) return 0;
  return mix(id * 0x9e3779b97f4a7c15ull + uint64_t{version} * 0xc2b2ae3d27d4eb4full + w + 1);
}

struct Stripe {
  std::shared_mutex mu;  // exclusive: a writer; shared: readers
  uint32_t version = 0;
};

struct Slot {
  std::shared_mutex life;  // exclusive: malloc / free of the slot; shared: every other op
  uint8_t *p = nullptr;
  size_t size = 0;
  uint64_t id = 0;
  size_t nstripes = 0;
  std::unique_ptr<Stripe[]> stripes;
};

struct Counters {
  std::atomic<uint64_t> ops{0}, mallocs{0}, frees{0}, writes{0}, reads{0}, prefetches{0},
      locations{0}, bytes_verified{0}, bytes_written{0}, pages_lost{0}, api_errors{0},
      oom{0};
};

Options g_opt;
Slot g_slots[kSlots];
Counters g_n;
std::atomic<uint64_t> g_live{0};
std::atomic<uint64_t> g_next_id{1};
std::atomic<bool> g_stop{false};
std::atomic<int> g_reports{0};
Clock::time_point g_t0;

double elapsed() { return std::chrono::duration<double>(Clock::now() - g_t0).count(); }

__attribute__((format(printf, 1, 2))) void report(const char *fmt, ...) {
  if (g_reports.fetch_add(1) >= 40) return;  // the first ones say enough
  char buf[1024];
  va_list ap;
  va_start(ap, fmt);
  std::vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  std::fprintf(stderr, "soak: [%.1f s] %s\n", elapsed(), buf);
}

const char *sname(umrt_status s) {
  const char *n = umrt_status_string(s);
  return n ? n : "?";
}

const char *where(const uint8_t *p) {
  umrt_location l;
  if (umrt_page_location(p, &l) != UMRT_SUCCESS) return "unknown";
  return l == UMRT_LOCATION_DEVICE ? "device" : "host";
}

// Fill / verify bytes [lo, hi) of slot s as `version`. lo is a multiple of 8.
void fill(Slot &s, size_t lo, size_t hi, uint32_t version) {
  size_t o = lo;
  for (; o + 8 <= hi; o += 8) {
    uint64_t w = word(s.id, version, o / 8);
    std::memcpy(s.p + o, &w, 8);
  }
  if (o < hi) {
    uint64_t w = word(s.id, version, o / 8);
    std::memcpy(s.p + o, &w, hi - o);
  }
  g_n.bytes_written.fetch_add(hi - lo, std::memory_order_relaxed);
}

// Returns the number of pages of [lo, hi) found wrong (each reported once).
uint64_t verify(Slot &s, size_t lo, size_t hi, uint32_t version, const char *when) {
  uint64_t bad_pages = 0;
  size_t last_bad_page = SIZE_MAX;
  for (size_t o = lo; o < hi; o += 8) {
    const size_t n = std::min<size_t>(8, hi - o);
    uint64_t want = word(s.id, version, o / 8), got = 0;
    std::memcpy(&got, s.p + o, n);
    if (n < 8) want &= (uint64_t{1} << (8 * n)) - 1;
    if (got != want && o / kPage != last_bad_page) {
      last_bad_page = o / kPage;
      ++bad_pages;
      report("PAGE LOST (%s): allocation #%" PRIu64 " %p (%zu bytes) page %zu (offset %zu, now on the %s): "
             "word at +%zu is %016" PRIx64 ", expected %016" PRIx64 " (stripe version %u)",
             when, s.id, (void *)s.p, s.size, o / kPage, o, where(s.p + o), o, got, want, version);
    }
  }
  g_n.bytes_verified.fetch_add(hi - lo, std::memory_order_relaxed);
  if (bad_pages) g_n.pages_lost.fetch_add(bad_pages, std::memory_order_relaxed);
  return bad_pages;
}

void stripe_span(const Slot &s, size_t k, size_t *lo, size_t *hi) {
  *lo = k * kStripe;
  *hi = std::min(s.size, *lo + kStripe);
}

void verify_all(Slot &s, const char *when) {
  for (size_t k = 0; k < s.nstripes; ++k) {
    std::shared_lock g(s.stripes[k].mu);
    size_t lo, hi;
    stripe_span(s, k, &lo, &hi);
    verify(s, lo, hi, s.stripes[k].version, when);
  }
}

struct Worker {
  unsigned index;
  std::mt19937_64 rng;
  std::atomic<const char *> doing{"idle"};

  uint64_t below(uint64_t n) { return n ? rng() % n : 0; }

  Slot &pick_slot() {
    // Half the operations go to a few hot slots: many threads on the same allocations.
    return g_slots[below(2) ? below(3) : below(kSlots)];
  }

  size_t pick_size() {
    switch (below(4)) {
      case 0: return kMinAlloc + below(64 * 1024);
      case 1: return kMinAlloc + below(2 << 20);
      case 2: return (size_t{2} << 20) + below(6 << 20);
      default: return (1 + below(kMaxAlloc / kPage)) * kPage;
    }
  }

  void op_malloc() {
    Slot &s = g_slots[below(kSlots)];
    std::unique_lock g(s.life);
    if (s.p) return;
    const size_t size = std::min(kMaxAlloc, std::max(kMinAlloc, pick_size()));
    if (g_live.load() + size > g_opt.max_live) return;
    void *p = nullptr;
    doing = "umrt_malloc";
    umrt_status st = umrt_malloc(&p, size);
    if (st != UMRT_SUCCESS) {
      g_n.api_errors.fetch_add(1);
      report("umrt_malloc(%zu) failed: %s (%s)", size, sname(st), umrt_last_error());
      return;
    }
    s.p = static_cast<uint8_t *>(p);
    s.size = size;
    s.id = g_next_id.fetch_add(1);
    s.nstripes = (size + kStripe - 1) / kStripe;
    s.stripes.reset(new Stripe[s.nstripes]);
    g_live.fetch_add(size);
    g_n.mallocs.fetch_add(1, std::memory_order_relaxed);
  }

  void op_free() {
    Slot &s = g_slots[below(kSlots)];
    std::unique_lock g(s.life);
    if (!s.p) return;
    doing = "verify before umrt_free";
    if (below(4) == 0) verify_all(s, "before free");
    doing = "umrt_free";
    umrt_status st = umrt_free(s.p);
    if (st != UMRT_SUCCESS) {
      g_n.api_errors.fetch_add(1);
      report("umrt_free(%p) failed: %s (%s)", (void *)s.p, sname(st), umrt_last_error());
    }
    g_live.fetch_sub(s.size);
    s.p = nullptr;
    s.size = 0;
    s.stripes.reset();
    s.nstripes = 0;
    g_n.frees.fetch_add(1, std::memory_order_relaxed);
  }

  // A run of stripes [k0, k1) of s.
  void pick_stripes(const Slot &s, size_t *k0, size_t *k1) {
    *k0 = below(s.nstripes);
    const size_t n = below(3) == 0 ? s.nstripes : 1 + below(8);
    *k1 = std::min(s.nstripes, *k0 + n);
  }

  void op_write() {
    Slot &s = pick_slot();
    std::shared_lock life(s.life);
    if (!s.p) return;
    size_t k0, k1;
    pick_stripes(s, &k0, &k1);
    doing = "write";
    for (size_t k = k0; k < k1; ++k) {
      std::unique_lock g(s.stripes[k].mu);
      size_t lo, hi;
      stripe_span(s, k, &lo, &hi);
      // Half the time check what was there first (the version before this write).
      if (below(2)) verify(s, lo, hi, s.stripes[k].version, "before write");
      fill(s, lo, hi, ++s.stripes[k].version);
    }
    g_n.writes.fetch_add(1, std::memory_order_relaxed);
  }

  void op_read() {
    Slot &s = pick_slot();
    std::shared_lock life(s.life);
    if (!s.p) return;
    size_t k0, k1;
    pick_stripes(s, &k0, &k1);
    doing = "read";
    for (size_t k = k0; k < k1; ++k) {
      std::shared_lock g(s.stripes[k].mu);
      size_t lo, hi;
      stripe_span(s, k, &lo, &hi);
      verify(s, lo, hi, s.stripes[k].version, "read");
    }
    g_n.reads.fetch_add(1, std::memory_order_relaxed);
  }

  void op_prefetch() {
    Slot &s = pick_slot();
    std::shared_lock life(s.life);
    if (!s.p) return;
    size_t off, len;
    if (below(3) == 0) {
      off = 0;
      len = s.size;
    } else {
      off = below(s.size);
      len = 1 + below(std::min<size_t>(s.size - off, below(2) ? (size_t{4} << 20) : (256 << 10)));
    }
    const umrt_location dst = below(3) ? UMRT_LOCATION_DEVICE : UMRT_LOCATION_HOST;
    doing = dst == UMRT_LOCATION_DEVICE ? "umrt_prefetch to the device" : "umrt_prefetch to the host";
    umrt_status st = umrt_prefetch(s.p + off, len, dst, nullptr);
    if (st == UMRT_ERROR_OUT_OF_MEMORY) {
      // Every block busy in other threads' batches: device memory exhausted "even after
      // eviction" is a documented outcome under contention; counted, not a failure.
      g_n.oom.fetch_add(1, std::memory_order_relaxed);
    } else if (st != UMRT_SUCCESS) {
      g_n.api_errors.fetch_add(1);
      report("umrt_prefetch(%p +%zu, %zu, %s) failed: %s (%s)", (void *)s.p, off, len,
             dst == UMRT_LOCATION_DEVICE ? "DEVICE" : "HOST", sname(st), umrt_last_error());
    }
    g_n.prefetches.fetch_add(1, std::memory_order_relaxed);
  }

  void op_location() {
    Slot &s = pick_slot();
    std::shared_lock life(s.life);
    if (!s.p) return;
    doing = "umrt_page_location / umrt_device_pointer";
    const size_t off = below(s.size);
    umrt_location l;
    void *d = nullptr, *d0 = nullptr;
    umrt_status a = umrt_page_location(s.p + off, &l), b = umrt_device_pointer(s.p + off, &d),
                c = umrt_device_pointer(s.p, &d0);
    if (a != UMRT_SUCCESS || b != UMRT_SUCCESS || c != UMRT_SUCCESS ||
        static_cast<uint8_t *>(d) != static_cast<uint8_t *>(d0) + off) {
      g_n.api_errors.fetch_add(1);
      report("page_location / device_pointer of %p +%zu: %s, %s, %s (device %p, base %p)", (void *)s.p, off,
             sname(a), sname(b), sname(c), d, d0);
    }
    g_n.locations.fetch_add(1, std::memory_order_relaxed);
  }

  // --self-test: one byte changed behind the model's back (the verifiers must catch it).
  bool corrupted = false;
  void maybe_corrupt() {
    if (!g_opt.self_test || index != 0 || corrupted || elapsed() < 1) return;
    for (Slot &s : g_slots) {
      std::shared_lock life(s.life);
      if (!s.p) continue;
      std::unique_lock g(s.stripes[0].mu);
      s.p[0] ^= 0x5a;
      corrupted = true;
      std::fprintf(stderr, "soak: self-test: byte 0 of allocation #%" PRIu64 " changed behind umrt's back\n", s.id);
      size_t lo, hi;
      stripe_span(s, 0, &lo, &hi);
      verify(s, lo, hi, s.stripes[0].version, "self-test read");  // the ordinary read path
      return;
    }
  }

  void run() {
    while (!g_stop.load(std::memory_order_relaxed)) {
      maybe_corrupt();
      const uint64_t r = below(100);
      if (r < 5) op_malloc();
      else if (r < 8) op_free();
      else if (r < 36) op_write();
      else if (r < 64) op_read();
      else if (r < 97) op_prefetch();
      else op_location();
      doing = "idle";
      g_n.ops.fetch_add(1, std::memory_order_relaxed);
    }
  }
};

bool parse_bytes(const char *s, uint64_t *out) {
  char *end = nullptr;
  unsigned long long v = std::strtoull(s, &end, 10);
  if (end == s) return false;
  switch (*end) {
    case 'K': case 'k': v <<= 10; ++end; break;
    case 'M': case 'm': v <<= 20; ++end; break;
    case 'G': case 'g': v <<= 30; ++end; break;
    default: break;
  }
  if (*end) return false;
  *out = v;
  return true;
}

bool parse(int argc, char **argv) {
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto val = [&]() -> const char * { return i + 1 < argc ? argv[++i] : nullptr; };
    const char *v = nullptr;
    uint64_t u = 0;
    if (a == "--seconds" && (v = val())) g_opt.seconds = std::atof(v);
    else if (a == "--seed" && (v = val())) g_opt.seed = std::strtoull(v, nullptr, 0), g_opt.seed_given = true;
    else if (a == "--threads" && (v = val())) g_opt.threads = static_cast<unsigned>(std::atoi(v));
    else if (a == "--device-memory" && (v = val()) && parse_bytes(v, &u)) g_opt.device_memory = u;
    else if (a == "--latency-us" && (v = val())) g_opt.latency_us = static_cast<uint32_t>(std::atoi(v));
    else if (a == "--max-live" && (v = val()) && parse_bytes(v, &u)) g_opt.max_live = u;
    else if (a == "--progress" && (v = val())) g_opt.progress = std::atof(v);
    else if (a == "--watchdog" && (v = val())) g_opt.watchdog = std::atof(v);
    else if (a == "--self-test") g_opt.self_test = true;
    else {
      std::fprintf(stderr, "umrt-soak: bad argument '%s'\nusage: umrt-soak [--seconds S] [--seed N] [--threads T] "
                   "[--device-memory 16M] [--latency-us 50] [--max-live 64M] [--progress 10] [--watchdog 60] [--self-test]\n",
                   a.c_str());
      return false;
    }
  }
  return g_opt.seconds > 0 && g_opt.threads >= 1 && g_opt.threads <= 64 && g_opt.progress > 0 && g_opt.watchdog > 0;
}

void progress_line(const char *tag) {
  umrt_stats st{};
  umrt_get_stats(&st);
  std::printf("soak: %s %.0f s: ops %" PRIu64 " (malloc %" PRIu64 ", free %" PRIu64 ", write %" PRIu64 ", read %" PRIu64
              ", prefetch %" PRIu64 "), verified %.1f MiB, pages lost %" PRIu64 ", live %.1f MiB; umrt: faults %" PRIu64
              ", evictions %" PRIu64 ", to device %.0f MiB, to host %.0f MiB, device in use %.0f MiB\n",
              tag, elapsed(), g_n.ops.load(), g_n.mallocs.load(), g_n.frees.load(), g_n.writes.load(), g_n.reads.load(),
              g_n.prefetches.load(), g_n.bytes_verified.load() / 1048576.0, g_n.pages_lost.load(), g_live.load() / 1048576.0,
              st.cpu_faults, st.evictions, st.bytes_to_device / 1048576.0, st.bytes_to_host / 1048576.0,
              st.device_bytes_in_use / 1048576.0);
  std::fflush(stdout);
}

}  // namespace

int main(int argc, char **argv) {
  if (!parse(argc, argv)) return 2;
  if (!g_opt.seed_given) g_opt.seed = static_cast<uint64_t>(Clock::now().time_since_epoch().count()) ^ (uint64_t(getpid()) << 32);
  std::printf("soak: seed %" PRIu64 " (rerun with --seed %" PRIu64 "), %u threads, %.0f s, device memory %" PRIu64
              " MiB, sim latency %u us, live at most %" PRIu64 " MiB\n",
              g_opt.seed, g_opt.seed, g_opt.threads, g_opt.seconds, g_opt.device_memory >> 20, g_opt.latency_us,
              g_opt.max_live >> 20);
  std::fflush(stdout);

  umrt_config cfg;
  std::memset(&cfg, 0, sizeof cfg);
  cfg.backend = UMRT_BACKEND_SIM;
  cfg.device_memory = g_opt.device_memory;
  cfg.sim_latency_us = g_opt.latency_us;
  umrt_status st = umrt_init(&cfg);
  if (st == UMRT_ERROR_NOT_SUPPORTED) {
    std::printf("soak: SKIP: umrt cannot start here: %s\n", umrt_last_error());
    return 77;
  }
  if (st != UMRT_SUCCESS) {
    std::printf("soak: FAIL: umrt_init: %s (%s)\n", sname(st), umrt_last_error());
    return 1;
  }

  g_t0 = Clock::now();
  std::vector<std::unique_ptr<Worker>> workers;
  for (unsigned i = 0; i < g_opt.threads; ++i) {
    auto w = std::make_unique<Worker>();
    w->index = i;
    w->rng.seed(mix(g_opt.seed + 0x632be59bd9b4e019ull * (i + 1)));
    workers.push_back(std::move(w));
  }
  std::vector<std::thread> threads;
  for (auto &w : workers) threads.emplace_back([&w] { w->run(); });

  // Main thread: progress lines, the deadline, the watchdog.
  uint64_t last_ops = 0;
  auto secs = [](double s) { return std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(s)); };
  Clock::time_point last_change = Clock::now(), next_progress = Clock::now() + secs(g_opt.progress);
  const Clock::time_point deadline = g_t0 + secs(g_opt.seconds);
  auto watch = [&](const char *phase) {
    const uint64_t ops = g_n.ops.load();
    if (ops != last_ops) {
      last_ops = ops;
      last_change = Clock::now();
      return;
    }
    if (std::chrono::duration<double>(Clock::now() - last_change).count() < g_opt.watchdog) return;
    std::printf("soak: WATCHDOG: no operation finished for %.0f s (%s); threads are in:\n", g_opt.watchdog, phase);
    for (auto &w : workers) std::printf("soak:   thread %u: %s\n", w->index, w->doing.load());
    progress_line("at watchdog,");
    std::printf("soak: summary: seed %" PRIu64 ", ops %" PRIu64 ", bytes verified %" PRIu64 ", pages lost %" PRIu64
                ", watchdog fired -> FAIL\n", g_opt.seed, g_n.ops.load(), g_n.bytes_verified.load(), g_n.pages_lost.load());
    std::fflush(stdout);
    _exit(3);
  };
  while (Clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    if (Clock::now() >= next_progress) {
      progress_line("progress");
      next_progress += secs(g_opt.progress);
    }
    watch("running");
  }
  g_stop = true;
  // Joining can hang if a worker hangs in umrt: keep watching while they finish.
  std::atomic<unsigned> joined{0};
  std::thread joiner([&] {
    for (auto &t : threads) t.join();
    joined = 1;
  });
  last_change = Clock::now();
  while (!joined.load()) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    watch("stopping");
  }
  joiner.join();

  // Final pass: every live allocation verified in full, then validated, freed and shut down.
  for (Slot &s : g_slots)
    if (s.p) verify_all(s, "final pass");
  umrt_status v1 = umrt_validate();
  if (v1 != UMRT_SUCCESS) report("umrt_validate() at the end (allocations live): %s (%s)", sname(v1), umrt_last_error());
  for (Slot &s : g_slots) {
    if (!s.p) continue;
    umrt_status f = umrt_free(s.p);
    if (f != UMRT_SUCCESS) {
      g_n.api_errors.fetch_add(1);
      report("umrt_free(%p) at the end: %s (%s)", (void *)s.p, sname(f), umrt_last_error());
    }
    s.p = nullptr;
  }
  umrt_status v2 = umrt_validate();
  if (v2 != UMRT_SUCCESS) report("umrt_validate() at the end (all freed): %s (%s)", sname(v2), umrt_last_error());
  umrt_stats stats{};
  umrt_get_stats(&stats);
  progress_line("final");
  umrt_status sd = umrt_shutdown();
  if (sd != UMRT_SUCCESS) {
    g_n.api_errors.fetch_add(1);
    report("umrt_shutdown(): %s (%s)", sname(sd), umrt_last_error());
  }
  const bool ok = g_n.pages_lost.load() == 0 && v1 == UMRT_SUCCESS && v2 == UMRT_SUCCESS && g_n.api_errors.load() == 0 &&
                  stats.device_bytes_in_use == 0;
  if (stats.device_bytes_in_use != 0)
    report("%" PRIu64 " bytes of device memory still in use after every allocation was freed", stats.device_bytes_in_use);
  std::printf("soak: summary: seed %" PRIu64 ", %u threads, %.0f s: ops %" PRIu64 ", bytes verified %" PRIu64
              " (%.1f GiB), pages lost %" PRIu64 ", API errors %" PRIu64 ", prefetch OOM %" PRIu64 ", evictions %" PRIu64
              ", validate %s -> %s\n",
              g_opt.seed, g_opt.threads, elapsed(), g_n.ops.load(), g_n.bytes_verified.load(),
              g_n.bytes_verified.load() / 1073741824.0, g_n.pages_lost.load(), g_n.api_errors.load(), g_n.oom.load(),
              stats.evictions, v1 == UMRT_SUCCESS && v2 == UMRT_SUCCESS ? "SUCCESS" : "FAILED", ok ? "PASS" : "FAIL");
  std::fflush(stdout);
  return ok ? 0 : 1;
}
