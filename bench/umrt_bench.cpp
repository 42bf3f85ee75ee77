// umrt_bench.cpp — umrt-bench: migration throughput and latency of umrt, side by side with the
// limit (memcpy) and the peers (the kernel's anonymous fault path, a bare userfaultfd handler),
// in one process run, as ratios. Scenarios by name:
//
//   umrt-bench prefetch|fault-seq|fault-rand|fault-latency|oversub|batch-sweep|all|scale [options]
//
// `all` runs the issue-4 scenarios; `scale` (issue 9, bench/scale.cpp) runs alone: how costs grow
// with what umrt holds — umrt_malloc+umrt_free against 1..1M live 4 KiB allocations
// (--scale-counts, with creation time, mapping count, VmRSS growth and the limit when an
// allocation fails), against the reserved size 1 MiB..1 TiB (--scale-sizes, RSS growth, one-page
// touch), fault-seq against reader threads 1..2x CPUs (--scale-threads) as ratios to the kernel's
// first touch, cold and warm host->device prefetch (--size, default 256M) as ratios to memcpy;
// a growth table and the issue-9 targets as PASS/MISS lines.
//
// Every figure is measured `--warmup` times (discarded) then `--reps` times: median, min and max
// are reported. Progress goes to stderr, results to stdout, and with `--json FILE` every figure
// with the machine, backend, sizes, thread counts and window sizes to FILE
// (scripts/plot_bench.py draws it). The issue-4 targets are printed as PASS/MISS lines at the end.
//
// Baselines on every backend: memcpy, the kernel's anonymous first-touch fault path, a bare
// userfaultfd handler, the UFFDIO_COPY floor (baselines.cpp). When the build has CUDA
// (UMRT_BENCH_CUDA: umrt::kernels and the CUDA runtime linked) and the backend in use is cuda,
// the GPU limit and peers run as well (cuda_baselines.cpp):
//   prefetch      raw cudaMemcpyAsync between pinned host memory and cudaMalloc memory (the
//                 limit), and cudaMallocManaged + cudaMemPrefetchAsync (the peer), each way;
//   fault-seq/rand  cudaMallocManaged with its pages prefetched to the GPU, read by CPU threads;
//   oversub       the triad is a GPU kernel (umrt_kernels::triad on umrt_device_pointer()
//                 addresses after umrt_prefetch of each chunk on a stream); peers:
//                 cudaMallocManaged with and without cudaMemPrefetchAsync per chunk, with the
//                 GPU's free memory cut to the same device memory;
//   fault-latency, batch-sweep  umrt only (as on sim).
// A GPU baseline that fails is reported as failed with the CUDA error text, never a crash.
//
// Every umrt figure also carries its per-step times: the umrt_stats deltas (collect, unmap,
// copy, finalize ns, batches, pages selected) over the measured reps, as "steps" in the JSON and
// a share line in the output.
#include <umrt/umrt.h>

#include <dirent.h>
#include <sched.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <fstream>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "baselines.h"
#include "scale.h"
#include "storage.h"
#if UMRT_BENCH_CUDA
#include "cuda_baselines.h"
#include "umrt_kernels.h"
#endif

namespace {

using Clock = std::chrono::steady_clock;
using json = nlohmann::ordered_json;
using bench::kBlock;
using bench::kPage;

double secs(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

[[noreturn]] void die(const std::string &msg) {
  std::fprintf(stderr, "umrt-bench: %s\n", msg.c_str());
  std::exit(2);
}

void check(umrt_status s, const char *what) {
  if (s != UMRT_SUCCESS) die(std::string(what) + ": " + umrt_status_string(s) + ": " + umrt_last_error());
}

// ---- options ---------------------------------------------------------------------------------

struct Options {
  std::string scenario = "all";
  std::optional<size_t> size;  // overrides every scenario's default size
  std::vector<unsigned> threads{1, 2};
  unsigned reps = 5;
  unsigned warmup = 1;
  std::string json_file;
  size_t device_memory = 256u << 20;  // oversub
  double latency_threshold_us = 1.0;
  unsigned seed = 42;
  bool device_memory_given = false;  // --device-memory on the command line
  bench::scale::Options scale;       // scale scenario (issue 9)
  bench::storage::Options storage;   // file-read, file-to-device, spill (issue 11)
};
Options opt;

size_t parse_size(const std::string &s) {
  char *end = nullptr;
  double v = std::strtod(s.c_str(), &end);
  if (end == s.c_str() || v <= 0) throw CLI::ValidationError("size", "bad size '" + s + "'");
  std::string suf(end);
  double mul = 1;
  if (suf == "K" || suf == "k" || suf == "KiB") mul = 1024.0;
  else if (suf == "M" || suf == "m" || suf == "MiB") mul = 1024.0 * 1024;
  else if (suf == "G" || suf == "g" || suf == "GiB") mul = 1024.0 * 1024 * 1024;
  else if (suf == "T" || suf == "t" || suf == "TiB") mul = 1024.0 * 1024 * 1024 * 1024;
  else if (!suf.empty()) throw CLI::ValidationError("size", "bad suffix in '" + s + "' (K, M, G, T)");
  auto bytes = static_cast<size_t>(v * mul);
  return std::max(kPage, bytes / kPage * kPage);
}

std::string human(size_t b) {
  char buf[32];
  if (b >= (1u << 30) && b % (1u << 30) == 0) std::snprintf(buf, sizeof buf, "%zuG", b >> 30);
  else if (b >= (1u << 20) && b % (1u << 20) == 0) std::snprintf(buf, sizeof buf, "%zuM", b >> 20);
  else if (b >= 1024 && b % 1024 == 0) std::snprintf(buf, sizeof buf, "%zuK", b >> 10);
  else std::snprintf(buf, sizeof buf, "%zu", b);
  return buf;
}

size_t size_for(size_t dflt) { return opt.size ? *opt.size : dflt; }

// A count with decimal suffixes: 1000, 1K, 10K, 1M.
size_t parse_count(const std::string &s) {
  char *end = nullptr;
  double v = std::strtod(s.c_str(), &end);
  if (end == s.c_str() || v < 1) throw CLI::ValidationError("count", "bad count '" + s + "'");
  std::string suf(end);
  double mul = 1;
  if (suf == "K" || suf == "k") mul = 1e3;
  else if (suf == "M" || suf == "m") mul = 1e6;
  else if (!suf.empty()) throw CLI::ValidationError("count", "bad suffix in '" + s + "' (K = 1000, M = 1000000)");
  return static_cast<size_t>(v * mul);
}

// ---- statistics ------------------------------------------------------------------------------

struct Summary {
  double median = 0, min = 0, max = 0;
  std::vector<double> samples;
};

Summary summarize(std::vector<double> v) {
  Summary s;
  s.samples = v;
  if (v.empty()) return s;
  std::sort(v.begin(), v.end());
  s.min = v.front();
  s.max = v.back();
  size_t n = v.size();
  s.median = n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
  return s;
}

json to_json(const Summary &s) {
  return json{{"median", s.median}, {"min", s.min}, {"max", s.max}, {"samples", s.samples}};
}

double pct(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  size_t i = std::min(v.size() - 1, static_cast<size_t>(p * static_cast<double>(v.size())));
  return v[i];
}

json latency_json(const std::vector<double> &lat_us) {
  return json{{"count", lat_us.size()},
              {"p50_us", pct(lat_us, 0.5)},
              {"p99_us", pct(lat_us, 0.99)},
              {"max_us", lat_us.empty() ? 0.0 : *std::max_element(lat_us.begin(), lat_us.end())}};
}

std::string fmt_summary(const Summary &s, const char *unit) {
  char buf[96];
  std::snprintf(buf, sizeof buf, "%7.2f %s [%.2f..%.2f]", s.median, unit, s.min, s.max);
  return buf;
}

// Runs `fn(rep)` warmup + reps times, returns the values of the measured reps; rep 0 is the first.
std::vector<double> repeat(const char *tag, const std::function<double(unsigned)> &fn,
                           double *first = nullptr) {
  std::vector<double> v;
  for (unsigned r = 0; r < opt.warmup + opt.reps; ++r) {
    double x = fn(r);
    if (r == 0 && first) *first = x;
    if (r >= opt.warmup) v.push_back(x);
    std::fprintf(stderr, "  [%s] rep %u/%u%s: %.3f\n", tag, r + 1, opt.warmup + opt.reps,
                 r < opt.warmup ? " (warm-up)" : "", x);
  }
  return v;
}

// ---- umrt setup ------------------------------------------------------------------------------

umrt_config base_config() {
  umrt_config c{};
  check(umrt_config_defaults(&c), "umrt_config_defaults");
  return c;
}

// The backend of the last restart(); on cuda the GPU limit and peers run too (when built in).
std::string backend_in_use = "?";
bool on_cuda() { return backend_in_use == "cuda"; }
#if UMRT_BENCH_CUDA
constexpr bool kBuiltWithCuda = true;
#else
constexpr bool kBuiltWithCuda = false;
#endif
const char *kNoCudaBaselines = "umrt-bench was built without the CUDA baselines (no umrt::kernels in the build)";

void restart(const umrt_config &c) {
  umrt_shutdown();
  check(umrt_init(&c), "umrt_init");
  const char *b = umrt_backend_name();
  if (!b) die("umrt_backend_name failed");
  backend_in_use = b;
  if (on_cuda() && !kBuiltWithCuda) {
    static bool said = false;
    if (!said) std::fprintf(stderr, "umrt-bench: backend cuda: %s; only the host baselines run\n", kNoCudaBaselines);
    said = true;
  } else if (backend_in_use != "sim" && !on_cuda()) {
    std::fprintf(stderr, "umrt-bench: backend '%s': only the host baselines exist for it\n", b);
  }
}

umrt_stats stats() {
  umrt_stats s{};
  check(umrt_get_stats(&s), "umrt_get_stats");
  return s;
}

// ---- per-step times --------------------------------------------------------------------------

// The umrt_stats deltas of the protocol steps, summed over the measured runs of one figure.
struct Steps {
  uint64_t collect_ns = 0, unmap_ns = 0, copy_ns = 0, finalize_ns = 0, batches = 0, pages_selected = 0;
  unsigned runs = 0;
  void add(const umrt_stats &a, const umrt_stats &b) {
    collect_ns += b.ns_collect - a.ns_collect;
    unmap_ns += b.ns_unmap - a.ns_unmap;
    copy_ns += b.ns_copy - a.ns_copy;
    finalize_ns += b.ns_finalize - a.ns_finalize;
    batches += b.batches - a.batches;
    pages_selected += b.pages_selected - a.pages_selected;
    ++runs;
  }
  uint64_t total_ns() const { return collect_ns + unmap_ns + copy_ns + finalize_ns; }
};

json steps_json(const Steps &s) {
  const double nb = static_cast<double>(s.batches);
  return json{{"runs", s.runs},
              {"collect_ns", s.collect_ns},
              {"unmap_ns", s.unmap_ns},
              {"copy_ns", s.copy_ns},
              {"finalize_ns", s.finalize_ns},
              {"batches", s.batches},
              {"pages_selected", s.pages_selected},
              {"pages_per_batch", s.batches ? static_cast<double>(s.pages_selected) / nb : 0.0},
              {"ns_per_batch", s.batches ? static_cast<double>(s.total_ns()) / nb : 0.0}};
}

// "steps: collect 3% unmap 9% copy 79% finalize 9% | 41.2 us/batch, 512 batches/run, 512 pages/batch"
std::string steps_line(const Steps &s) {
  if (!s.batches || !s.total_ns()) return "steps: no batches";
  const double t = static_cast<double>(s.total_ns());
  char buf[256];
  std::snprintf(buf, sizeof buf,
                "steps: collect %2.0f%% unmap %2.0f%% copy %2.0f%% finalize %2.0f%% | %.1f us/batch, %.0f batches/run, %.1f pages/batch",
                100.0 * static_cast<double>(s.collect_ns) / t, 100.0 * static_cast<double>(s.unmap_ns) / t,
                100.0 * static_cast<double>(s.copy_ns) / t, 100.0 * static_cast<double>(s.finalize_ns) / t,
                t / static_cast<double>(s.batches) / 1e3,
                static_cast<double>(s.batches) / std::max(1u, s.runs),
                static_cast<double>(s.pages_selected) / static_cast<double>(s.batches));
  return buf;
}

char *managed(size_t bytes) {
  void *p = nullptr;
  check(umrt_malloc(&p, bytes), "umrt_malloc");
  return static_cast<char *>(p);
}

// A populated plain buffer (MADV_NOHUGEPAGE so nothing differs from the managed side by THP).
struct Plain {
  char *p = nullptr;
  size_t n = 0;
  explicit Plain(size_t bytes, int fill = -1) : n(bytes) {
    void *m = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) die("mmap: " + std::string(std::strerror(errno)));
    p = static_cast<char *>(m);
    if (fill >= 0) std::memset(p, fill, bytes);
  }
  ~Plain() { munmap(p, n); }
  Plain(const Plain &) = delete;
  Plain &operator=(const Plain &) = delete;
};

// Pins every thread of the process (umrt's fault service and copy engines included) to the first
// CPU the calling thread may use; `saved` gets the caller's mask for unpin_all_threads.
void set_all_threads(const cpu_set_t &set) {
  DIR *d = opendir("/proc/self/task");
  if (!d) return;
  while (dirent *e = readdir(d)) {
    if (e->d_name[0] == '.') continue;
    sched_setaffinity(static_cast<pid_t>(std::atol(e->d_name)), sizeof set, &set);
  }
  closedir(d);
}
void pin_all_threads(cpu_set_t &saved) {
  CPU_ZERO(&saved);
  sched_getaffinity(0, sizeof saved, &saved);
  int first = 0;
  while (first < CPU_SETSIZE && !CPU_ISSET(first, &saved)) ++first;
  cpu_set_t one;
  CPU_ZERO(&one);
  CPU_SET(first, &one);
  set_all_threads(one);
}
void unpin_all_threads(const cpu_set_t &saved) { set_all_threads(saved); }

long minflt() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return u.ru_minflt;
}

// ---- access loops ----------------------------------------------------------------------------

// The pages each thread touches, in order: sequential = a contiguous slice per thread; random =
// a random permutation of the pages of the thread's slice.
std::vector<std::vector<size_t>> page_orders(size_t pages, unsigned threads, bool random) {
  std::vector<std::vector<size_t>> o(threads);
  std::mt19937_64 rng(opt.seed);
  for (unsigned t = 0; t < threads; ++t) {
    size_t lo = t * pages / threads, hi = (t + 1) * pages / threads;
    for (size_t i = lo; i < hi; ++i) o[t].push_back(i);
    if (random) std::shuffle(o[t].begin(), o[t].end(), rng);
  }
  return o;
}

struct AccessResult {
  double seconds = 0;
  std::vector<double> lat_us;  // every access, all threads
  uint64_t sum = 0;
};

// Threads touch one byte per page of `base` in the given orders (read, or write when `write`),
// each access timed. Threads start together; seconds = from the start signal to the last join.
AccessResult touch(char *base, const std::vector<std::vector<size_t>> &orders, bool write) {
  const size_t n = orders.size();
  std::vector<std::vector<double>> lat(n);
  std::vector<uint64_t> sums(n, 0);
  std::atomic<unsigned> ready{0};
  std::atomic<bool> go{false};
  std::vector<std::thread> ts;
  for (size_t t = 0; t < n; ++t)
    ts.emplace_back([&, t] {
      auto &l = lat[t];
      l.reserve(orders[t].size());
      uint64_t s = 0;
      ready.fetch_add(1);
      while (!go.load(std::memory_order_acquire)) {
      }
      for (size_t pg : orders[t]) {
        volatile char *a = base + pg * kPage;
        auto t0 = Clock::now();
        if (write) *a = 1;
        else s += static_cast<unsigned char>(*a);
        l.push_back(std::chrono::duration<double, std::micro>(Clock::now() - t0).count());
      }
      sums[t] = s;
    });
  while (ready.load() < n) {
  }
  auto t0 = Clock::now();
  go.store(true, std::memory_order_release);
  for (auto &t : ts) t.join();
  AccessResult r;
  r.seconds = secs(Clock::now() - t0);
  for (size_t t = 0; t < n; ++t) {
    r.lat_us.insert(r.lat_us.end(), lat[t].begin(), lat[t].end());
    r.sum += sums[t];
  }
  return r;
}

std::vector<double> over(const std::vector<double> &v, double thr) {
  std::vector<double> o;
  for (double x : v)
    if (x > thr) o.push_back(x);
  return o;
}

// ---- results ---------------------------------------------------------------------------------

json results = json::object();
json target_lines = json::array();

struct Target {
  std::string name, baseline;
  double ratio, want;
  bool at_most;       // ratio must be <= want (latency) instead of >= want
  std::string error;  // the baseline (or umrt) could not be measured: why
  int issue = 4;      // the issue that set the target
  std::string unit;   // "": ratio is a ratio; else it is an absolute value in this unit
  std::string miss;   // a MISS whatever the ratio (the figure's level was never reached): why
};
std::vector<Target> targets;

void add_target(std::string name, std::string baseline, double ratio, double want, bool at_most) {
  targets.push_back({std::move(name), std::move(baseline), ratio, want, at_most, {}, 4, {}, {}});
}
void add_target_error(std::string name, std::string baseline, double want, std::string error) {
  targets.push_back({std::move(name), std::move(baseline), 0.0, want, false, std::move(error), 4, {}, {}});
}

json failed_json(const std::string &error) { return json{{"failed", true}, {"error", error}}; }

// ---- GPU baselines (cuda backend, CUDA build) ------------------------------------------------

// A GPU baseline measured both ways, or why it failed.
struct TwoWay {
  bool failed = false;
  std::string error;
  Summary h2d, d2h;
  bool exact = true;
  std::string exact_error;
};

json two_way_json(const TwoWay &t) {
  if (t.failed) return failed_json(t.error);
  json j{{"h2d_gbps", to_json(t.h2d)}, {"d2h_gbps", to_json(t.d2h)}, {"data_exact", t.exact}};
  if (!t.exact) j["data_error"] = t.exact_error;
  return j;
}

std::string fmt_two_way(const TwoWay &t, double umrt_h2d, double umrt_d2h) {
  if (t.failed) return "FAILED: " + t.error;
  char buf[256];
  std::snprintf(buf, sizeof buf, "h->d %s  d->h %s  umrt/this h->d %.2f d->h %.2f  %s",
                fmt_summary(t.h2d, "GB/s").c_str(), fmt_summary(t.d2h, "GB/s").c_str(), umrt_h2d / t.h2d.median,
                umrt_d2h / t.d2h.median, t.exact ? "exact" : ("WRONG: " + t.exact_error).c_str());
  return buf;
}

#if UMRT_BENCH_CUDA
namespace gpu = bench::gpu;

TwoWay failed_two_way(const std::string &why) {
  TwoWay t;
  t.failed = true;
  t.error = why;
  return t;
}

// Limit: one cudaMemcpyAsync of `bytes` each way between pinned host memory and cudaMalloc memory.
TwoWay gpu_pinned_copy(size_t bytes) {
  std::string why;
  auto c = gpu::PinnedCopy::create(bytes, why);
  if (!c) return failed_two_way(why);
  std::vector<double> hd, dh;
  for (unsigned r = 0; r < opt.warmup + opt.reps; ++r) {
    double s1 = c->h2d(why);
    if (s1 < 0) return failed_two_way(why);
    double s2 = c->d2h(why);
    if (s2 < 0) return failed_two_way(why);
    double g1 = static_cast<double>(bytes) / s1 / 1e9, g2 = static_cast<double>(bytes) / s2 / 1e9;
    if (r >= opt.warmup) hd.push_back(g1), dh.push_back(g2);
    std::fprintf(stderr, "  [cuda pinned cudaMemcpyAsync] rep %u/%u%s: h->d %.2f GB/s, d->h %.2f GB/s\n", r + 1,
                 opt.warmup + opt.reps, r < opt.warmup ? " (warm-up)" : "", g1, g2);
  }
  TwoWay t;
  t.h2d = summarize(hd);
  t.d2h = summarize(dh);
  if (!c->exact(why)) t.exact = false, t.exact_error = why;
  return t;
}

// Peer: cudaMallocManaged, populated on the host, moved with cudaMemPrefetchAsync each way.
TwoWay gpu_managed_prefetch(size_t bytes) {
  std::string why;
  auto st = gpu::Stream::create(why);
  if (!st) return failed_two_way(why);
  auto m = gpu::Managed::create(bytes, why);
  if (!m) return failed_two_way(why);
  std::memset(m->data(), 0x5a, bytes);  // first touch on the host, as umrt's range
  std::vector<double> hd, dh;
  for (unsigned r = 0; r < opt.warmup + opt.reps; ++r) {
    auto t0 = Clock::now();
    if (!m->prefetch(0, bytes, true, st->get(), why) || !st->sync(why)) return failed_two_way(why);
    auto t1 = Clock::now();
    if (!m->prefetch(0, bytes, false, st->get(), why) || !st->sync(why)) return failed_two_way(why);
    auto t2 = Clock::now();
    double g1 = static_cast<double>(bytes) / secs(t1 - t0) / 1e9, g2 = static_cast<double>(bytes) / secs(t2 - t1) / 1e9;
    if (r >= opt.warmup) hd.push_back(g1), dh.push_back(g2);
    std::fprintf(stderr, "  [cudaMallocManaged + cudaMemPrefetchAsync] rep %u/%u%s: h->d %.2f GB/s, d->h %.2f GB/s\n",
                 r + 1, opt.warmup + opt.reps, r < opt.warmup ? " (warm-up)" : "", g1, g2);
  }
  TwoWay t;
  t.h2d = summarize(hd);
  t.d2h = summarize(dh);
  const char *p = m->data();
  if (!(p[0] == 0x5a && p[bytes / 2] == 0x5a && p[bytes - 1] == 0x5a))
    t.exact = false, t.exact_error = "managed data changed after the round trips";
  return t;
}
#endif

// ---- prefetch --------------------------------------------------------------------------------

void scenario_prefetch() {
  const size_t bytes = size_for(1u << 30);
  umrt_config c = base_config();
  c.device_memory = std::max<uint64_t>(c.device_memory, (bytes + kBlock - 1) / kBlock * kBlock + (64u << 20));
  restart(c);
  umrt_config eff{};
  umrt_config_defaults(&eff);  // what the runtime resolved copy_threads to
  const unsigned engines = c.copy_threads ? c.copy_threads : eff.copy_threads;
  // The parallel baselines use as many threads as umrt's copies can: its two lanes (the
  // submitting threads copy too) or its engines, whichever is more.
  const unsigned par = std::max(2u, engines);
  std::fprintf(stderr, "prefetch: %s, %u copy engines\n", human(bytes).c_str(), engines);
  char *p = managed(bytes);
  std::memset(p, 0x5a, bytes);  // first touch on the host
  std::vector<double> hd, dh;
  double cold_hd = 0, cold_dh = 0;
  uint64_t batches_hd = 0, batches_dh = 0, moved_hd = 0, moved_dh = 0;
  Steps steps_hd, steps_dh;
  for (unsigned r = 0; r < opt.warmup + opt.reps; ++r) {
    umrt_stats a = stats();
    auto t0 = Clock::now();
    check(umrt_prefetch(p, bytes, UMRT_LOCATION_DEVICE, nullptr), "prefetch to device");
    auto t1 = Clock::now();
    umrt_stats b = stats();
    check(umrt_prefetch(p, bytes, UMRT_LOCATION_HOST, nullptr), "prefetch to host");
    auto t2 = Clock::now();
    umrt_stats d = stats();
    double g1 = static_cast<double>(bytes) / secs(t1 - t0) / 1e9;
    double g2 = static_cast<double>(bytes) / secs(t2 - t1) / 1e9;
    if (r == 0) cold_hd = g1, cold_dh = g2;
    if (r >= opt.warmup) {
      hd.push_back(g1), dh.push_back(g2);
      steps_hd.add(a, b);
      steps_dh.add(b, d);
    }
    batches_hd = b.batches - a.batches;
    batches_dh = d.batches - b.batches;
    moved_hd = b.bytes_to_device - a.bytes_to_device;
    moved_dh = d.bytes_to_host - b.bytes_to_host;
    std::fprintf(stderr, "  [prefetch] rep %u/%u%s: h->d %.2f GB/s, d->h %.2f GB/s\n", r + 1,
                 opt.warmup + opt.reps, r < opt.warmup ? " (warm-up)" : "", g1, g2);
  }
  bool ok = p[0] == 0x5a && p[bytes - 1] == 0x5a;
  check(umrt_free(p), "umrt_free");

  // Limit: memcpy between two populated buffers, 1 thread and one per copy engine.
  Plain src(bytes, 0x5a), dst(bytes, 0);
  auto mc = [&](unsigned th) {
    return repeat(th == 1 ? "memcpy 1 thread" : "memcpy N threads", [&](unsigned) {
      auto t0 = Clock::now();
      std::vector<std::thread> ts;
      for (unsigned t = 0; t < th; ++t)
        ts.emplace_back([&, t] {
          size_t lo = t * bytes / th / kPage * kPage, hi = (t + 1) * bytes / th / kPage * kPage;
          std::memcpy(dst.p + lo, src.p + lo, hi - lo);
        });
      for (auto &t : ts) t.join();
      return static_cast<double>(bytes) / secs(Clock::now() - t0) / 1e9;
    });
  };
  Summary mc1 = summarize(mc(1)), mcn = summarize(mc(par));
  // What a move costs beyond the copy on the host side: memcpy, then MADV_DONTNEED of the source
  // (as umrt's finalize releases the host pages); the source is re-populated outside the timing.
  Plain mv(bytes, 0x5a);
  Summary mvd = summarize(repeat("memcpy + MADV_DONTNEED", [&](unsigned) {
    std::memset(mv.p, 0x5a, bytes);
    auto t0 = Clock::now();
    std::memcpy(dst.p, mv.p, bytes);
    madvise(mv.p, bytes, MADV_DONTNEED);
    return static_cast<double>(bytes) / secs(Clock::now() - t0) / 1e9;
  }));
  // Floor of device->host with userfaultfd: UFFDIO_COPY of 2 MiB runs into a fresh range.
  auto fl = [&](unsigned th) {
    return repeat(th == 1 ? "uffd floor 1 thread" : "uffd floor N threads", [&](unsigned) {
      std::string why;
      double s = bench::uffd_copy_floor(src.p, bytes, th, why);
      if (s < 0) die(why);
      return static_cast<double>(bytes) / s / 1e9;
    });
  };
  Summary fl1 = summarize(fl(1)), fln = summarize(fl(par));
  Summary shd = summarize(hd), sdh = summarize(dh);
  // On cuda: the limit (raw pinned cudaMemcpyAsync) and the peer (cudaMallocManaged + prefetch).
  std::optional<TwoWay> raw, mgd;
  if (on_cuda()) {
#if UMRT_BENCH_CUDA
    raw = gpu_pinned_copy(bytes);
    mgd = gpu_managed_prefetch(bytes);
#else
    raw = mgd = TwoWay{true, kNoCudaBaselines, {}, {}, true, {}};
#endif
  }

  std::printf("\n== prefetch (%s, %u copy engines) ==\n", human(bytes).c_str(), engines);
  std::printf("  umrt h->d             %s   cold first rep %.2f GB/s  (%llu batches, %llu MiB copied per rep)\n",
              fmt_summary(shd, "GB/s").c_str(), cold_hd, static_cast<unsigned long long>(batches_hd),
              static_cast<unsigned long long>(moved_hd >> 20));
  std::printf("  umrt d->h             %s   cold first rep %.2f GB/s  (%llu batches, %llu MiB copied per rep)\n",
              fmt_summary(sdh, "GB/s").c_str(), cold_dh, static_cast<unsigned long long>(batches_dh),
              static_cast<unsigned long long>(moved_dh >> 20));
  std::printf("  memcpy 1 thread       %s   h->d ratio %.2f\n", fmt_summary(mc1, "GB/s").c_str(), shd.median / mc1.median);
  std::printf("  memcpy %u threads      %s   h->d ratio %.2f\n", par, fmt_summary(mcn, "GB/s").c_str(), shd.median / mcn.median);
  std::printf("  memcpy+DONTNEED 1 thr %s   h->d ratio %.2f  (copy, then release the source pages)\n",
              fmt_summary(mvd, "GB/s").c_str(), shd.median / mvd.median);
  std::printf("  uffd floor 1 thread   %s   d->h ratio %.2f\n", fmt_summary(fl1, "GB/s").c_str(), sdh.median / fl1.median);
  std::printf("  uffd floor %u threads  %s   d->h ratio %.2f\n", par, fmt_summary(fln, "GB/s").c_str(), sdh.median / fln.median);
  if (raw) {
    std::printf("  cuda raw cudaMemcpyAsync, pinned <-> cudaMalloc          %s\n", fmt_two_way(*raw, shd.median, sdh.median).c_str());
    std::printf("  cuda cudaMallocManaged + cudaMemPrefetchAsync          %s\n", fmt_two_way(*mgd, shd.median, sdh.median).c_str());
  }
  std::printf("  data %s\n", ok ? "exact" : "WRONG");
  std::printf("  umrt h->d %s\n", steps_line(steps_hd).c_str());
  std::printf("  umrt d->h %s\n", steps_line(steps_dh).c_str());

  if (!on_cuda()) {
    add_target("prefetch h->d >= 0.7x memcpy", "memcpy 1 thread", shd.median / mc1.median, 0.7, false);
    add_target("prefetch d->h >= 0.8x bare UFFDIO_COPY floor", "uffd floor, " + std::to_string(par) + " threads (max of 2 lanes, copy engines)",
               sdh.median / fln.median, 0.8, false);
  } else {
    // issue 4 on a GPU: >= 0.9x raw pinned cudaMemcpyAsync each way, >= 1.0x managed + prefetch.
    struct {
      const char *name, *baseline;
      const TwoWay &t;
      bool h2d;
      double want;
    } const gt[] = {
        {"prefetch h->d >= 0.9x raw cudaMemcpyAsync", "pinned -> cudaMalloc cudaMemcpyAsync", *raw, true, 0.9},
        {"prefetch d->h >= 0.9x raw cudaMemcpyAsync", "cudaMalloc -> pinned cudaMemcpyAsync", *raw, false, 0.9},
        {"prefetch h->d >= 1.0x managed + prefetch", "cudaMallocManaged + cudaMemPrefetchAsync", *mgd, true, 1.0},
        {"prefetch d->h >= 1.0x managed + prefetch", "cudaMallocManaged + cudaMemPrefetchAsync", *mgd, false, 1.0},
    };
    for (const auto &g : gt) {
      if (g.t.failed) add_target_error(g.name, g.baseline, g.want, g.t.error);
      else add_target(g.name, g.baseline, g.h2d ? shd.median / g.t.h2d.median : sdh.median / g.t.d2h.median, g.want, false);
    }
  }
  results["prefetch"] = json{
      {"bytes", bytes},
      {"copy_engines", engines},
      {"baseline_threads", par},
      {"umrt_h2d_gbps", to_json(shd)},
      {"umrt_d2h_gbps", to_json(sdh)},
      {"umrt_h2d_cold_first_rep_gbps", cold_hd},
      {"umrt_d2h_cold_first_rep_gbps", cold_dh},
      {"batches_per_rep", {{"h2d", batches_hd}, {"d2h", batches_dh}}},
      {"bytes_copied_per_rep", {{"h2d", moved_hd}, {"d2h", moved_dh}}},
      {"memcpy_1thread_gbps", to_json(mc1)},
      {"memcpy_nthreads_gbps", to_json(mcn)},
      {"memcpy_dontneed_1thread_gbps", to_json(mvd)},
      {"uffd_copy_floor_1thread_gbps", to_json(fl1)},
      {"uffd_copy_floor_nthreads_gbps", to_json(fln)},
      {"ratio_h2d_vs_memcpy_1thread", shd.median / mc1.median},
      {"ratio_h2d_vs_memcpy_nthreads", shd.median / mcn.median},
      {"ratio_h2d_vs_memcpy_dontneed_1thread", shd.median / mvd.median},
      {"ratio_d2h_vs_uffd_floor_1thread", sdh.median / fl1.median},
      {"ratio_d2h_vs_uffd_floor_nthreads", sdh.median / fln.median},
      {"data_exact", ok},
      {"steps", {{"h2d", steps_json(steps_hd)}, {"d2h", steps_json(steps_dh)}}},
      {"notes",
       "memcpy: between two populated plain buffers. memcpy + MADV_DONTNEED: the same, then the "
       "source pages released (what a move adds on the host side; not a target). uffd floor: UFFDIO_COPY of 2 MiB runs from a "
       "populated buffer into a fresh registered anonymous range (no faults), the range split "
       "between threads. The first rep populates the sim arena (memfd first touch), later reps "
       "reuse its chunks. steps: umrt_stats deltas of the protocol steps summed over the measured "
       "reps (ns per step, summed over batches, so concurrent batches add up)."}};
  if (raw) {
    json &j = results["prefetch"];
    j["cuda_pinned_memcpy"] = two_way_json(*raw);
    j["cuda_managed_prefetch"] = two_way_json(*mgd);
    auto ratio = [](double u, const TwoWay &t, bool h2d) {
      return t.failed ? json(nullptr) : json(u / (h2d ? t.h2d.median : t.d2h.median));
    };
    j["ratio_h2d_vs_cuda_pinned_memcpy"] = ratio(shd.median, *raw, true);
    j["ratio_d2h_vs_cuda_pinned_memcpy"] = ratio(sdh.median, *raw, false);
    j["ratio_h2d_vs_cuda_managed_prefetch"] = ratio(shd.median, *mgd, true);
    j["ratio_d2h_vs_cuda_managed_prefetch"] = ratio(sdh.median, *mgd, false);
    j["cuda_notes"] =
        "cuda_pinned_memcpy (the limit): one cudaMemcpyAsync of every byte between cudaHostAlloc "
        "memory and cudaMalloc memory on a non-blocking stream, then cudaStreamSynchronize; wall "
        "clock, as umrt's synchronous umrt_prefetch. cuda_managed_prefetch (the peer): "
        "cudaMallocManaged memory first touched on the host, then cudaMemPrefetchAsync of the "
        "whole range to the device and back, each followed by cudaStreamSynchronize.";
  }
}

// ---- fault-seq / fault-rand ------------------------------------------------------------------

struct VariantResult {
  Summary gbps;
  std::vector<double> fault_lat_us;  // over all measured reps
  uint64_t faults_per_rep = 0;
  uint64_t slow_accesses_per_rep = 0;
  bool exact = true;
  bool failed = false;  // a GPU peer that could not run: error says why
  std::string error;
  std::optional<Steps> steps;  // umrt only
};

// Book one repetition of a fault scenario into v and g; returns its GB/s. Past the warm-up
// (`measured`), the latencies over `thr` (every access's with `every_access`) are kept, and the
// rep's fault count and number of slow accesses.
double book_rep(VariantResult &v, std::vector<double> &g, const AccessResult &ar, size_t bytes, double thr,
                bool measured, uint64_t faults, bool every_access = false) {
  const double gb = static_cast<double>(bytes) / ar.seconds / 1e9;
  if (!measured) return gb;
  auto slow = over(ar.lat_us, thr);
  const std::vector<double> &keep = every_access ? ar.lat_us : slow;
  g.push_back(gb);
  v.fault_lat_us.insert(v.fault_lat_us.end(), keep.begin(), keep.end());
  v.faults_per_rep = faults;
  v.slow_accesses_per_rep = slow.size();
  return gb;
}

json variant_json(const VariantResult &v, const char *lat_rule) {
  if (v.failed) return failed_json(v.error);
  json j{{"gbps", to_json(v.gbps)},
              {"faults_per_rep", v.faults_per_rep},
              {"accesses_over_threshold_per_rep", v.slow_accesses_per_rep},
              {"fault_latency", latency_json(v.fault_lat_us)},
              {"latency_rule", lat_rule},
              {"data_exact", v.exact}};
  if (v.steps) j["steps"] = steps_json(*v.steps);
  return j;
}

// The fault scenario at these reader counts. The issue-4 run (`issue4`) books its targets and
// its JSON under results; scale (issue 9) runs fault-seq without the bare handlers (`bare`
// false) and gets the JSON back.
json scenario_fault(bool random, const std::vector<unsigned> &thread_counts, bool issue4 = true, bool bare = true) {
  const char *name = random ? "fault-rand" : "fault-seq";
  const size_t bytes = size_for(random ? (64u << 20) : (256u << 20));
  const size_t pages = bytes / kPage;
  const double thr = opt.latency_threshold_us;
  umrt_config c = base_config();
  c.device_memory = std::max<uint64_t>(c.device_memory, bytes + (64u << 20));
  restart(c);
  const uint32_t wmin = c.prefetch_min_pages ? c.prefetch_min_pages : 4;
  const uint32_t wmax = c.prefetch_max_pages ? c.prefetch_max_pages : 512;
  std::fprintf(stderr, "%s: %s, window %u->%u pages\n", name, human(bytes).c_str(), wmin, wmax);
  Plain src(bytes, 0x5a);
  char *p = managed(bytes);
  std::memset(p, 0x5a, bytes);
  const uint64_t expect = 0x5aull * pages;

  json jt = json::object();
  std::printf("\n== %s (%s, one byte per page, %s pages; umrt window %u->%u pages) ==\n", name,
              human(bytes).c_str(), random ? "random" : "sequential", wmin, wmax);
  std::printf("  fault latency: umrt and bare handler = accesses slower than %.1f us; kernel = every access (each one faults)\n", thr);
  for (unsigned th : thread_counts) {
    auto orders = page_orders(pages, th, random);
    std::map<std::string, VariantResult> res;
    // umrt: the data on the device, the threads read it back
    {
      VariantResult &v = res["umrt"];
      v.steps.emplace();
      std::vector<double> g;
      for (unsigned r = 0; r < opt.warmup + opt.reps; ++r) {
        check(umrt_prefetch(p, bytes, UMRT_LOCATION_DEVICE, nullptr), "prefetch to device");
        umrt_stats a = stats();
        AccessResult ar = touch(p, orders, false);
        umrt_stats b = stats();
        v.exact = v.exact && ar.sum == expect;
        double gb = book_rep(v, g, ar, bytes, thr, r >= opt.warmup, b.cpu_faults - a.cpu_faults);
        if (r >= opt.warmup) v.steps->add(a, b);
        std::fprintf(stderr, "  [%s umrt %ut] rep %u: %.2f GB/s, %llu faults\n", name, th, r + 1, gb,
                     static_cast<unsigned long long>(b.cpu_faults - a.cpu_faults));
      }
      v.gbps = summarize(g);
    }
    // kernel anonymous first touch: one write per page of a fresh mapping
    {
      VariantResult &v = res["kernel"];
      std::vector<double> g;
      for (unsigned r = 0; r < opt.warmup + opt.reps; ++r) {
        void *m = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (m == MAP_FAILED) die("mmap");
        madvise(m, bytes, MADV_NOHUGEPAGE);
        long f0 = minflt();
        AccessResult ar = touch(static_cast<char *>(m), orders, true);
        long f1 = minflt();
        munmap(m, bytes);
        double gb = book_rep(v, g, ar, bytes, thr, r >= opt.warmup, static_cast<uint64_t>(f1 - f0), true);
        std::fprintf(stderr, "  [%s kernel %ut] rep %u: %.2f GB/s\n", name, th, r + 1, gb);
      }
      v.gbps = summarize(g);
    }
    // bare userfaultfd handler, window = umrt's first window and umrt's cap
    for (uint32_t w : {wmin, wmax}) {
      if (!bare) break;
      std::string key = "bare_uffd_w" + std::to_string(w);
      VariantResult &v = res[key];
      std::vector<double> g;
      for (unsigned r = 0; r < opt.warmup + opt.reps; ++r) {
        std::string why;
        auto h = bench::BareUffd::create(bytes, src.p, w, why);
        if (!h) die("bare handler: " + why);
        AccessResult ar = touch(h->data(), orders, false);
        v.exact = v.exact && ar.sum == expect && h->errors() == 0;
        double gb = book_rep(v, g, ar, bytes, thr, r >= opt.warmup, h->faults());
        std::fprintf(stderr, "  [%s bare w%u %ut] rep %u: %.2f GB/s, %llu faults\n", name, w, th, r + 1, gb,
                     static_cast<unsigned long long>(h->faults()));
      }
      v.gbps = summarize(g);
    }
    // cuda: the peer cudaMallocManaged, its pages prefetched to the GPU before each rep, read by
    // the same threads in the same order.
    if (on_cuda()) {
      VariantResult &v = res["cuda_managed"];
#if UMRT_BENCH_CUDA
      std::string why;
      auto st = gpu::Stream::create(why);
      auto m = st ? gpu::Managed::create(bytes, why) : nullptr;
      if (m) std::memset(m->data(), 0x5a, bytes);
      std::vector<double> g;
      for (unsigned r = 0; m && r < opt.warmup + opt.reps; ++r) {
        if (!m->prefetch(0, bytes, true, st->get(), why) || !st->sync(why)) {
          m.reset();
          break;
        }
        long f0 = minflt();
        AccessResult ar = touch(m->data(), orders, false);
        long f1 = minflt();
        v.exact = v.exact && ar.sum == expect;
        double gb = book_rep(v, g, ar, bytes, thr, r >= opt.warmup, static_cast<uint64_t>(f1 - f0));
        std::fprintf(stderr, "  [%s cudaMallocManaged %ut] rep %u: %.2f GB/s, %ld page faults\n", name, th, r + 1, gb, f1 - f0);
      }
      if (!m) v.failed = true, v.error = why;
      v.gbps = summarize(g);
#else
      v.failed = true, v.error = kNoCudaBaselines;
#endif
    }
    const std::string bare_like = "bare_uffd_w" + std::to_string(random ? wmin : wmax);
    json jv = json::object();
    std::printf("  %u thread%s:\n", th, th > 1 ? "s" : "");
    for (auto &[k, v] : res) {
      if (v.failed) {
        std::printf("    %-16s FAILED: %s\n", k.c_str(), v.error.c_str());
        jv[k] = variant_json(v, "");
        continue;
      }
      double ratio = res["umrt"].gbps.median / v.gbps.median;
      std::printf("    %-16s %s  faults/rep %7llu  fault latency p50 %8.1f us p99 %8.1f us (n=%zu)  umrt/this %.2f  %s\n",
                  k.c_str(), fmt_summary(v.gbps, "GB/s").c_str(),
                  static_cast<unsigned long long>(v.faults_per_rep), pct(v.fault_lat_us, 0.5),
                  pct(v.fault_lat_us, 0.99), v.fault_lat_us.size(), ratio, v.exact ? "exact" : "WRONG");
      jv[k] = variant_json(v, k == "kernel" ? "every access (each is a first-touch write fault)"
                                            : "accesses slower than latency_threshold_us");
      if (k != "umrt") jv[k]["ratio_umrt_over_this"] = ratio;
    }
    std::printf("    umrt %s\n", steps_line(*res["umrt"].steps).c_str());
    if (bare) jv["like_for_like_bare"] = bare_like;
    jt[std::to_string(th)] = jv;
    if (issue4 && bare && !random && th == 1) {
      add_target("fault-seq 1 thread >= 1.5x kernel first-touch", "kernel anonymous first-touch (write)",
                 res["umrt"].gbps.median / res["kernel"].gbps.median, 1.5, false);
      add_target("fault-seq 1 thread >= 0.8x bare UFFDIO_COPY handler", "bare handler, window " + std::to_string(wmax) + " pages",
                 res["umrt"].gbps.median / res[bare_like].gbps.median, 0.8, false);
    }
  }
  check(umrt_free(p), "umrt_free");
  json out{
      {"bytes", bytes},
      {"order", random ? "random" : "sequential"},
      {"umrt_window_pages", {wmin, wmax}},
      {"bare_windows_pages", bare ? json{wmin, wmax} : json::array()},
      {"latency_threshold_us", thr},
      {"by_threads", jt},
      {"notes",
       "One byte per page. umrt: data prefetched to the device before each rep, threads read it "
       "(faults served by umrt). kernel: threads WRITE one byte per page of a fresh "
       "MAP_PRIVATE|MAP_ANONYMOUS mapping with MADV_NOHUGEPAGE (a read would map the shared zero "
       "page and cost no allocation or zeroing): the kernel's own anonymous fault path; its "
       "faults are ru_minflt deltas. bare_uffd_wN: a fresh range registered MISSING, one handler "
       "thread answering each fault with one UFFDIO_COPY of N pages (clipped to the 2 MiB block) "
       "from a populated buffer. Every access is timed (steady_clock, two reads, tens of ns per access, same in "
       "every variant); since a window makes most accesses hit, per-fault latency is the latency "
       "of accesses slower than latency_threshold_us (their count is reported next to the "
       "faults served); for the kernel every access faults, so all accesses are counted. "
       "Sequential compares against the bare handler with umrt's window cap (umrt's window grows "
       "to it on sequential access), random against its first window (a jump resets it). "
       "cuda_managed (cuda backend only): cudaMallocManaged memory first touched on the host, "
       "cudaMemPrefetchAsync of the whole range to the GPU before each rep, then the same reads; "
       "its faults are ru_minflt deltas (the CPU faults the UVM driver serves). umrt steps: "
       "umrt_stats deltas of the protocol steps over the measured reps."}};
  if (issue4) results[name] = out;
  return out;
}

// ---- fault-latency ---------------------------------------------------------------------------

void scenario_fault_latency() {
  const size_t bytes = size_for(512u << 20);
  const size_t blocks = std::max<size_t>(1, bytes / kBlock);
  umrt_config c = base_config();
  c.prefetch_min_pages = 1;
  c.prefetch_max_pages = 1;
  c.device_memory = std::max<uint64_t>(c.device_memory, bytes + (64u << 20));
  restart(c);
  std::fprintf(stderr, "fault-latency: %s, one page per 2 MiB block, window 1\n", human(bytes).c_str());
  // one random page in each block, blocks in random order
  std::mt19937_64 rng(opt.seed);
  std::vector<size_t> order(blocks);
  for (size_t i = 0; i < blocks; ++i) order[i] = i * (kBlock / kPage) + rng() % (kBlock / kPage);
  std::shuffle(order.begin(), order.end(), rng);
  const std::vector<std::vector<size_t>> orders{order};
  Plain src(blocks * kBlock, 0x5a);
  char *p = managed(blocks * kBlock);
  std::memset(p, 0x5a, blocks * kBlock);
  // [0] free running, [1] every thread of the process pinned to one CPU
  std::vector<double> lu[2], lb[2], lk;
  uint64_t faults = 0;
  bool exact = true;
  Steps steps[2];
  for (unsigned r = 0; r < opt.warmup + opt.reps; ++r) {
    for (int mode = 0; mode < 2; ++mode) {
      check(umrt_prefetch(p, blocks * kBlock, UMRT_LOCATION_DEVICE, nullptr), "prefetch to device");
      std::string why;
      auto h = bench::BareUffd::create(blocks * kBlock, src.p, 1, why);
      if (!h) die("bare handler: " + why);
      cpu_set_t saved;
      if (mode == 1) pin_all_threads(saved);
      // Paired: each block's page is read through umrt and through the bare handler back to
      // back (which one first alternates), so both see the same machine state.
      umrt_stats a = stats();
      AccessResult ar, br;
      for (size_t i = 0; i < order.size(); ++i) {
        for (int k = 0; k < 2; ++k) {
          bool umrt_side = (k == 0) == (i % 2 == 0);
          volatile char *at = (umrt_side ? p : h->data()) + order[i] * kPage;
          auto t0 = Clock::now();
          unsigned char v = static_cast<unsigned char>(*at);
          double us = std::chrono::duration<double, std::micro>(Clock::now() - t0).count();
          (umrt_side ? ar : br).lat_us.push_back(us);
          (umrt_side ? ar : br).sum += v;
        }
      }
      umrt_stats b = stats();
      if (mode == 1) unpin_all_threads(saved);
      exact = exact && ar.sum == 0x5aull * blocks && br.sum == 0x5aull * blocks;
      if (r >= opt.warmup) {
        lu[mode].insert(lu[mode].end(), ar.lat_us.begin(), ar.lat_us.end());
        lb[mode].insert(lb[mode].end(), br.lat_us.begin(), br.lat_us.end());
        faults = b.cpu_faults - a.cpu_faults;
        steps[mode].add(a, b);
      }
      std::fprintf(stderr, "  [fault-latency %s] rep %u/%u: umrt p50 %.1f us, bare p50 %.1f us\n",
                   mode ? "one CPU" : "free", r + 1, opt.warmup + opt.reps, pct(ar.lat_us, 0.5),
                   pct(br.lat_us, 0.5));
    }
    void *m = mmap(nullptr, blocks * kBlock, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) die("mmap");
    madvise(m, blocks * kBlock, MADV_NOHUGEPAGE);
    AccessResult kr = touch(static_cast<char *>(m), orders, true);
    munmap(m, blocks * kBlock);
    if (r >= opt.warmup) lk.insert(lk.end(), kr.lat_us.begin(), kr.lat_us.end());
  }
  check(umrt_free(p), "umrt_free");
  auto mx = [](const std::vector<double> &v) { return v.empty() ? 0.0 : *std::max_element(v.begin(), v.end()); };
  double ratio[2] = {pct(lu[0], 0.5) / pct(lb[0], 0.5), pct(lu[1], 0.5) / pct(lb[1], 0.5)};
  std::printf("\n== fault-latency (%zu single-page faults per rep, one per 2 MiB block, window 1) ==\n", blocks);
  const char *mode_name[2] = {"free running", "one CPU"};
  for (int mode = 0; mode < 2; ++mode) {
    std::printf("  %s:\n", mode_name[mode]);
    std::printf("    umrt              p50 %7.1f us  p99 %7.1f us  max %7.1f us  (%llu faults/rep) %s\n",
                pct(lu[mode], 0.5), pct(lu[mode], 0.99), mx(lu[mode]), static_cast<unsigned long long>(faults),
                exact ? "exact" : "WRONG");
    std::printf("    bare uffd, w1     p50 %7.1f us  p99 %7.1f us  max %7.1f us  umrt/bare p50 %.2f\n",
                pct(lb[mode], 0.5), pct(lb[mode], 0.99), mx(lb[mode]), ratio[mode]);
    std::printf("    umrt %s\n", steps_line(steps[mode]).c_str());
  }
  std::printf("  kernel 1st touch    p50 %7.1f us  p99 %7.1f us  max %7.1f us  (reference: write fault, no uffd)\n",
              pct(lk, 0.5), pct(lk, 0.99), mx(lk));
  add_target("fault-latency p50 <= 1.5x bare round trip", "bare handler, window 1, process on one CPU", ratio[1], 1.5, true);
  results["fault-latency"] = json{
      {"bytes", blocks * kBlock},
      {"faults_per_rep", blocks},
      {"umrt_window_pages", {1, 1}},
      {"umrt", latency_json(lu[0])},
      {"bare_uffd_w1", latency_json(lb[0])},
      {"umrt_one_cpu", latency_json(lu[1])},
      {"bare_uffd_w1_one_cpu", latency_json(lb[1])},
      {"kernel_first_touch_write", latency_json(lk)},
      {"ratio_p50_umrt_over_bare", ratio[0]},
      {"ratio_p50_umrt_over_bare_one_cpu", ratio[1]},
      {"data_exact", exact},
      {"steps", {{"free_running", steps_json(steps[0])}, {"one_cpu", steps_json(steps[1])}}},
      {"notes",
       "One random page in each 2 MiB block, blocks in random order, one thread; every access "
       "faults and is timed. umrt and bare are paired: for each block its page is read through "
       "both back to back, alternating which goes first. Measured twice: free running (threads "
       "wherever the scheduler puts them: on a VM a cross-CPU wake of a halted vCPU costs tens of "
       "us, so this depends on placement) and with every thread of the process pinned to one CPU "
       "(fault -> switch to the handler thread -> UFFDIO_COPY -> switch back: the software path "
       "alone; the target uses this one). umrt: range prefetched to the device before each rep, "
       "prefetch_min_pages = prefetch_max_pages = 1. bare: fresh registered range, UFFDIO_COPY of "
       "the one page. kernel: write to a fresh anonymous mapping (reference only)."}};
}

// ---- oversub ---------------------------------------------------------------------------------

#if UMRT_BENCH_CUDA
// A figure of the oversubscribed triad (one variant at one working-set point), or why it failed.
struct TriadFigure {
  bool failed = false;
  std::string error;
  Summary gbps, kernel_gbps;
  bool exact = true;
};

json triad_json(const TriadFigure &t) {
  if (t.failed) return failed_json(t.error);
  return json{{"gbps", to_json(t.gbps)}, {"kernel_only_gbps", to_json(t.kernel_gbps)}, {"data_exact", t.exact}};
}

// The peers: cudaMallocManaged arrays (b, c first touched on the host, a never), the triad kernel
// chunk by chunk on one stream, with (`prefetch`) or without a cudaMemPrefetchAsync of each
// array's chunk to the GPU before its kernel. One stream synchronisation per rep.
TriadFigure gpu_managed_triad(size_t arr, size_t chunk, bool prefetch, double f) {
  TriadFigure o;
  std::string why;
  auto failed_now = [&] {
    o.failed = true;
    o.error = why;
    return o;
  };
  auto st = gpu::Stream::create(why);
  if (!st) return failed_now();
  std::unique_ptr<gpu::Managed> m[3];
  for (auto &x : m)
    if (!(x = gpu::Managed::create(arr, why))) return failed_now();
  const size_t n = arr / sizeof(double);
  double *A = reinterpret_cast<double *>(m[0]->data()), *B = reinterpret_cast<double *>(m[1]->data()),
         *C = reinterpret_cast<double *>(m[2]->data());
  for (size_t i = 0; i < n; ++i) B[i] = 1.0, C[i] = 2.0;
  gpu::KernelTimer kt;
  std::vector<double> g, gk;
  const char *tag = prefetch ? "cudaMallocManaged + prefetch" : "cudaMallocManaged, no prefetch";
  for (unsigned r = 0; r < opt.warmup + opt.reps; ++r) {
    kt.reset();
    auto t0 = Clock::now();
    for (size_t off = 0; off < arr; off += chunk) {
      const size_t len = std::min(chunk, arr - off), lo = off / sizeof(double), cnt = len / sizeof(double);
      if (prefetch)
        for (auto &x : m)
          if (!x->prefetch(off, len, true, st->get(), why)) return failed_now();
      if (!kt.begin(st->get(), why)) return failed_now();
      if (int e = umrt_kernels::triad(A + lo, B + lo, C + lo, 3.0, cnt, st->get())) {
        why = std::string("umrt_kernels::triad: ") + umrt_kernels::error_string(e);
        return failed_now();
      }
      if (!kt.end(st->get(), why)) return failed_now();
    }
    if (!st->sync(why)) return failed_now();
    const double s = secs(Clock::now() - t0);
    const double ks = kt.total(why);
    if (ks < 0) return failed_now();
    const double gb = 3.0 * static_cast<double>(arr) / s / 1e9;
    if (r >= opt.warmup) g.push_back(gb), gk.push_back(3.0 * static_cast<double>(arr) / ks / 1e9);
    std::fprintf(stderr, "  [oversub %.1fx %s] rep %u/%u: %.2f GB/s\n", f, tag, r + 1, opt.warmup + opt.reps, gb);
  }
  o.exact = A[0] == 7.0 && A[n - 1] == 7.0 && A[n / 2] == 7.0;  // read back on the CPU
  o.gbps = summarize(g);
  o.kernel_gbps = summarize(gk);
  return o;
}
#endif

void scenario_oversub() {
  const size_t dev = opt.device_memory;
  const size_t chunk = std::max<size_t>(kBlock, dev / 8 / kBlock * kBlock);  // per array
  umrt_config c = base_config();
  c.device_memory = dev;
  restart(c);
  const bool gpu_triad = on_cuda() && kBuiltWithCuda;  // the triad is a GPU kernel
  const unsigned th = *std::max_element(opt.threads.begin(), opt.threads.end());
  const std::string runner = gpu_triad ? "GPU kernel umrt_kernels::triad" : std::to_string(th) + " host threads";
  std::fprintf(stderr, "oversub: device %s, chunk %s per array, triad on %s\n", human(dev).c_str(),
               human(chunk).c_str(), runner.c_str());
  std::printf("\n== oversub (STREAM triad a = b + s*c, device memory %s, %s chunks per array, %s) ==\n",
              human(dev).c_str(), human(chunk).c_str(), runner.c_str());
  if (on_cuda() && !gpu_triad) {  // host threads cannot run the triad on GPU memory
    std::printf("  skipped: %s\n", kNoCudaBaselines);
    results["oversub"] = failed_json(kNoCudaBaselines);
    return;
  }
  // On cuda: umrt prefetches each chunk on this stream and the kernel follows on it.
  void *stream = nullptr;
#if UMRT_BENCH_CUDA
  std::unique_ptr<gpu::Stream> gstream;
  gpu::KernelTimer kt;
  if (gpu_triad) {
    std::string why;
    gstream = gpu::Stream::create(why);
    if (!gstream) die("oversub: umrt's stream: " + why);
    stream = gstream->get();
  }
#endif
  const std::vector<double> factors{0.5, 1.0, 1.5, 2.0, 2.5, 3.0};
  std::vector<size_t> arrs;
  json pts = json::array();
  for (double f : factors) {
    const size_t arr = std::max(kBlock, static_cast<size_t>(f * static_cast<double>(dev) / 3) / kBlock * kBlock);
    arrs.push_back(arr);
    const size_t n = arr / sizeof(double);
    double *a = reinterpret_cast<double *>(managed(arr));
    double *b = reinterpret_cast<double *>(managed(arr));
    double *cc = reinterpret_cast<double *>(managed(arr));
    for (size_t i = 0; i < n; ++i) b[i] = 1.0, cc[i] = 2.0;
    void *da = nullptr, *db = nullptr, *dc = nullptr;
    std::vector<double> g, gk;
    uint64_t ev = 0, moved = 0;
    Steps steps;
    for (unsigned r = 0; r < opt.warmup + opt.reps; ++r) {
      umrt_stats s0 = stats();
      double kernel_s = 0;
#if UMRT_BENCH_CUDA
      kt.reset();
#endif
      auto t0 = Clock::now();
      for (size_t off = 0; off < arr; off += chunk) {
        size_t len = std::min(chunk, arr - off);
        for (double *x : {a, b, cc})
          check(umrt_prefetch(reinterpret_cast<char *>(x) + off, len, UMRT_LOCATION_DEVICE, stream), "prefetch");
        if (!da) {
          check(umrt_device_pointer(a, &da), "device_pointer");
          check(umrt_device_pointer(b, &db), "device_pointer");
          check(umrt_device_pointer(cc, &dc), "device_pointer");
        }
        size_t lo = off / sizeof(double), cnt = len / sizeof(double);
        if (gpu_triad) {
#if UMRT_BENCH_CUDA
          std::string why;
          if (!kt.begin(stream, why)) die("oversub: " + why);
          if (int e = umrt_kernels::triad(static_cast<double *>(da) + lo, static_cast<const double *>(db) + lo,
                                          static_cast<const double *>(dc) + lo, 3.0, cnt, stream))
            die(std::string("oversub: umrt_kernels::triad on umrt device pointers: ") + umrt_kernels::error_string(e));
          if (!kt.end(stream, why)) die("oversub: " + why);
#endif
        } else {
          auto k0 = Clock::now();
          std::vector<std::thread> ts;
          for (unsigned t = 0; t < th; ++t)
            ts.emplace_back([=] {
              double *A = static_cast<double *>(da), *B = static_cast<double *>(db), *C = static_cast<double *>(dc);
              for (size_t i = lo + t * cnt / th; i < lo + (t + 1) * cnt / th; ++i) A[i] = B[i] + 3.0 * C[i];
            });
          for (auto &t : ts) t.join();
          kernel_s += secs(Clock::now() - k0);
        }
      }
#if UMRT_BENCH_CUDA
      if (gpu_triad) {
        std::string why;
        if (int e = umrt_kernels::sync(stream)) die(std::string("oversub: triad on umrt memory: ") + umrt_kernels::error_string(e));
        kernel_s = kt.total(why);
        if (kernel_s < 0) die("oversub: " + why);
      }
#endif
      double s = secs(Clock::now() - t0);
      umrt_stats s1 = stats();
      double gb = 3.0 * static_cast<double>(arr) / s / 1e9;
      if (r >= opt.warmup) {
        g.push_back(gb);
        gk.push_back(3.0 * static_cast<double>(arr) / kernel_s / 1e9);
        ev = s1.evictions - s0.evictions;
        moved = (s1.bytes_to_device - s0.bytes_to_device) + (s1.bytes_to_host - s0.bytes_to_host);
        steps.add(s0, s1);
      }
      std::fprintf(stderr, "  [oversub %.1fx] rep %u/%u: %.2f GB/s, %llu evictions\n", f, r + 1,
                   opt.warmup + opt.reps, gb, static_cast<unsigned long long>(s1.evictions - s0.evictions));
    }
    bool exact = a[0] == 7.0 && a[n - 1] == 7.0 && a[n / 2] == 7.0;
    da = db = dc = nullptr;
    for (double *x : {a, b, cc}) check(umrt_free(x), "umrt_free");
    Summary sg = summarize(g), sk = summarize(gk);
    std::printf("  %.1fx (%4zu MiB working set)  end to end %s  kernel only %s  %4llu evictions, %5llu MiB moved per rep  %s\n",
                f, 3 * arr >> 20, fmt_summary(sg, "GB/s").c_str(), fmt_summary(sk, "GB/s").c_str(),
                static_cast<unsigned long long>(ev), static_cast<unsigned long long>(moved >> 20), exact ? "exact" : "WRONG");
    std::printf("        umrt %s\n", steps_line(steps).c_str());
    pts.push_back(json{{"oversubscription", f},
                       {"working_set_bytes", 3 * arr},
                       {"gbps", to_json(sg)},
                       {"kernel_only_gbps", to_json(sk)},
                       {"evictions_per_rep", ev},
                       {"bytes_moved_per_rep", moved},
                       {"data_exact", exact},
                       {"steps", steps_json(steps)}});
  }
  results["oversub"] = json{
      {"device_memory", dev},
      {"chunk_bytes_per_array", chunk},
      {"threads", th},
      {"triad", gpu_triad ? "gpu kernel" : "host threads"},
      {"points", pts},
      {"notes",
       "a = b + 3c over doubles; working set = 3 arrays; per rep, for each chunk: prefetch the "
       "chunk of a, b and c to the device, then the triad runs through device pointers (sim: host "
       "threads; cuda: the umrt_kernels::triad kernel on the stream the prefetches were issued on, "
       "kernel-only time from CUDA events around each kernel). GB/s = working set bytes / rep time "
       "(prefetch + triad). b, c first touched on the host once per point; a never touched before "
       "its first prefetch (zero-filled on the device). sim: evicted chunks are punched out of the "
       "arena, so each reloaded chunk pays the arena's first touch again. steps: umrt_stats deltas "
       "over the measured reps (both directions: loads and evictions)."}};
  if (!on_cuda()) return;

  // cuda: the peers at the same working-set points, after umrt's, with the GPU's free memory cut
  // to umrt's device memory (a cudaMalloc ballast), so that they are oversubscribed alike.
  json &jo = results["oversub"];
#if UMRT_BENCH_CUDA
  std::string why;
  auto ballast = gpu::Ballast::leave_free(dev, why);
  if (ballast)
    jo["cuda_peer_gpu_memory"] = json{{"free_before_bytes", ballast->free_before()},
                                      {"ballast_bytes", ballast->held()},
                                      {"free_for_peers_bytes", ballast->free_after()}};
  else
    jo["cuda_peer_gpu_memory"] = failed_json("ballast: " + why + " (peers run on the whole GPU)");
  std::printf("  cuda peers (GPU free memory %s for them):\n",
              ballast ? human(ballast->free_after() / kBlock * kBlock).c_str() : "not limited: ballast failed");
  for (size_t i = 0; i < factors.size(); ++i) {
    const double umrt_gb = jo["points"][i]["gbps"]["median"].get<double>();
    json peers = json::object();
    for (bool pf : {true, false}) {
      TriadFigure t = gpu_managed_triad(arrs[i], chunk, pf, factors[i]);
      const char *key = pf ? "cuda_managed_prefetch" : "cuda_managed_no_prefetch";
      peers[key] = triad_json(t);
      if (t.failed) {
        std::printf("  %.1fx %-32s FAILED: %s\n", factors[i], key, t.error.c_str());
        continue;
      }
      peers[key]["ratio_umrt_over_this"] = umrt_gb / t.gbps.median;
      std::printf("  %.1fx %-32s end to end %s  kernel only %s  umrt/this %.2f  %s\n", factors[i], key,
                  fmt_summary(t.gbps, "GB/s").c_str(), fmt_summary(t.kernel_gbps, "GB/s").c_str(),
                  umrt_gb / t.gbps.median, t.exact ? "exact" : "WRONG");
    }
    jo["points"][i]["peers"] = peers;
  }
  jo["cuda_notes"] =
      "peers: cudaMallocManaged arrays at the same working-set points, b and c first touched on "
      "the host, the same umrt_kernels::triad kernel per chunk on one stream, one "
      "cudaStreamSynchronize per rep; cuda_managed_prefetch issues cudaMemPrefetchAsync of each "
      "array's chunk to the GPU before its kernel, cuda_managed_no_prefetch lets the GPU fault the "
      "pages in. They run after umrt's points with a cudaMalloc ballast that leaves only the device "
      "memory umrt was given free (cuda_peer_gpu_memory).";
#else
  for (size_t i = 0; i < factors.size(); ++i)
    jo["points"][i]["peers"] = json{{"cuda_managed_prefetch", failed_json(kNoCudaBaselines)},
                                    {"cuda_managed_no_prefetch", failed_json(kNoCudaBaselines)}};
  std::printf("  cuda peers: %s\n", kNoCudaBaselines);
#endif
}

// ---- batch-sweep -----------------------------------------------------------------------------

void scenario_batch_sweep() {
  const size_t total = size_for(64u << 20);
  umrt_config c = base_config();
  c.device_memory = std::max<uint64_t>(c.device_memory, total + (64u << 20));
  restart(c);
  std::fprintf(stderr, "batch-sweep: %s total\n", human(total).c_str());
  char *p = managed(total);
  std::memset(p, 0x5a, total);
  // populate the arena once so every span sees warm chunks
  check(umrt_prefetch(p, total, UMRT_LOCATION_DEVICE, nullptr), "prefetch");
  check(umrt_prefetch(p, total, UMRT_LOCATION_HOST, nullptr), "prefetch");
  std::printf("\n== batch-sweep (%s total per direction, one umrt_prefetch call per span) ==\n", human(total).c_str());
  json pts = json::array();
  std::vector<size_t> spans;
  for (size_t span = kPage; span <= std::min<size_t>(64u << 20, total); span *= 4) {
    spans.push_back(span);
    if (span == (1u << 20) && total >= kBlock) spans.push_back(kBlock);  // one block per call
  }
  for (size_t span : spans) {
    std::vector<double> hd, dh;
    uint64_t batches = 0;
    Steps steps_hd, steps_dh;
    for (unsigned r = 0; r < opt.warmup + opt.reps; ++r) {
      umrt_stats a = stats();
      auto t0 = Clock::now();
      for (size_t off = 0; off < total; off += span)
        check(umrt_prefetch(p + off, std::min(span, total - off), UMRT_LOCATION_DEVICE, nullptr), "prefetch");
      auto t1 = Clock::now();
      umrt_stats m = stats();
      auto t1b = Clock::now();
      for (size_t off = 0; off < total; off += span)
        check(umrt_prefetch(p + off, std::min(span, total - off), UMRT_LOCATION_HOST, nullptr), "prefetch");
      auto t2 = Clock::now();
      umrt_stats b = stats();
      if (r >= opt.warmup) {
        hd.push_back(static_cast<double>(total) / secs(t1 - t0) / 1e9);
        dh.push_back(static_cast<double>(total) / secs(t2 - t1b) / 1e9);
        batches = b.batches - a.batches;
        steps_hd.add(a, m);
        steps_dh.add(m, b);
      }
    }
    Summary shd = summarize(hd), sdh = summarize(dh);
    std::fprintf(stderr, "  [batch-sweep %s] h->d %.2f GB/s, d->h %.2f GB/s\n", human(span).c_str(), shd.median, sdh.median);
    std::printf("  span %5s  h->d %s  d->h %s  (%llu batches per rep, both ways)\n", human(span).c_str(),
                fmt_summary(shd, "GB/s").c_str(), fmt_summary(sdh, "GB/s").c_str(),
                static_cast<unsigned long long>(batches));
    std::printf("              h->d %s\n              d->h %s\n", steps_line(steps_hd).c_str(), steps_line(steps_dh).c_str());
    pts.push_back(json{{"span_bytes", span},
                       {"h2d_gbps", to_json(shd)},
                       {"d2h_gbps", to_json(sdh)},
                       {"batches_per_rep", batches},
                       {"steps", {{"h2d", steps_json(steps_hd)}, {"d2h", steps_json(steps_dh)}}}});
  }
  check(umrt_free(p), "umrt_free");
  results["batch-sweep"] = json{{"total_bytes", total},
                                {"points", pts},
                                {"notes",
                                 "The same total bytes moved each way in umrt_prefetch calls of `span` bytes "
                                 "(synchronous). The arena is populated before the sweep. steps: umrt_stats "
                                 "deltas of the protocol steps over the measured reps, per direction."}};
}

// ---- scale (issue 9, bench/scale.cpp) --------------------------------------------------------

void scenario_scale() {
  namespace sc = bench::scale;
  sc::Options o = opt.scale;
  o.reps = opt.reps;
  o.warmup = opt.warmup;
  o.prefetch_bytes = size_for(256u << 20);
  sc::Hooks h;
  h.config = [] {
    umrt_config c = base_config();  // UMRT_DEVICE_MEMORY or the backend's default ...
    if (opt.device_memory_given) c.device_memory = opt.device_memory;  // ... unless --device-memory
    return c;
  };
  h.restart = [](const umrt_config &c) { restart(c); };
  h.fault_seq = [](const std::vector<unsigned> &th) { return scenario_fault(false, th, false, false); };
  h.steps = [](const umrt_stats &a, const umrt_stats &b) {
    Steps st;
    st.add(a, b);
    return steps_json(st);
  };
  std::vector<sc::Target> ts;
  results["scale"] = sc::run(o, h, ts);
  for (const sc::Target &t : ts) {
    targets.push_back({t.name, t.baseline, t.value, t.want, t.at_most, t.error, 9, t.unit, t.miss});
  }
}

void scenario_storage(const char *name) {
  namespace st = bench::storage;
  st::Options o = opt.storage;
  o.reps = opt.reps;
  o.warmup = opt.warmup;
  o.seed = opt.seed;
  o.file_bytes = size_for(256u << 20);
  st::Hooks h;
  h.config = [] {
    umrt_config c = base_config();
    if (opt.device_memory_given) c.device_memory = opt.device_memory;
    return c;
  };
  h.restart = [](const umrt_config &c) { restart(c); };
  std::vector<bench::scale::Target> ts;
  results[name] = st::run(name, o, h, ts);
  for (const bench::scale::Target &t : ts)
    targets.push_back({t.name, t.baseline, t.value, t.want, t.at_most, t.error, 11, t.unit, t.miss});
}

// ---- machine info ----------------------------------------------------------------------------

std::string read_first(const char *path, const char *key) {
  std::ifstream f(path);
  std::string line;
  while (std::getline(f, line))
    if (!key || line.rfind(key, 0) == 0) {
      if (!key) return line;
      auto c = line.find(':');
      return c == std::string::npos ? line : line.substr(c + 2);
    }
  return "";
}

// The GPU the cuda baselines ran on (from cudaGetDeviceProperties); a string when there is none.
json gpu_json() {
  if (!on_cuda()) return "none (" + backend_in_use + " backend)";
#if UMRT_BENCH_CUDA
  gpu::DeviceInfo d = gpu::device_info();
  if (!d.ok) return failed_json(d.error);
  char pci[32];
  std::snprintf(pci, sizeof pci, "%04x:%02x:%02x", d.pci_domain, d.pci_bus, d.pci_device);
  return json{{"name", d.name},
              {"ordinal", d.ordinal},
              {"compute_capability", std::to_string(d.cc_major) + "." + std::to_string(d.cc_minor)},
              {"memory_bytes", d.total_memory},
              {"free_memory_bytes_at_end", d.free_memory},
              {"concurrent_managed_access", d.concurrent_managed_access},
              {"pci_bus_id", pci},
              {"cuda_driver_version", d.driver_version},
              {"cuda_runtime_version", d.runtime_version}};
#else
  return json{{"name", "?"}, {"error", kNoCudaBaselines}};
#endif
}

json machine() {
  char host[256] = {};
  gethostname(host, sizeof host - 1);
  utsname u{};
  uname(&u);
  long mem_kb = std::atol(read_first("/proc/meminfo", "MemTotal").c_str());
  return json{{"hostname", host},
              {"cpu", read_first("/proc/cpuinfo", "model name")},
              {"cores", std::thread::hardware_concurrency()},
              {"memory_gib", static_cast<double>(mem_kb) / 1048576.0},
              {"kernel", std::string(u.sysname) + " " + u.release},
              {"machine", u.machine},
              {"thp", read_first("/sys/kernel/mm/transparent_hugepage/enabled", nullptr)},
              {"gpu", gpu_json()}};
}

std::string now_utc() {
  std::time_t t = std::time(nullptr);
  char buf[64];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&t));
  return buf;
}

void print_targets() {
  json arr = json::array();
  int issue = 0;
  for (const auto &t : targets) {
    if (t.issue != issue) {
      issue = t.issue;
      std::printf("\n== issue %d targets (%s) ==\n", issue, backend_in_use.c_str());
    }
    if (!t.error.empty()) {
      if (t.issue == 4)
        std::printf("ERROR %-52s baseline could not be measured (vs %s): %s\n", t.name.c_str(), t.baseline.c_str(),
                    t.error.c_str());
      else
        std::printf("ERROR %-52s not measured: %s\n", t.name.c_str(), t.error.c_str());
      arr.push_back(json{{"target", t.name}, {"issue", t.issue}, {"baseline", t.baseline}, {"ratio", nullptr},
                         {"want", t.want}, {"at_most", t.at_most}, {"pass", nullptr}, {"error", t.error}});
      continue;
    }
    if (!t.miss.empty()) {
      std::printf("MISS  %-52s %s\n", t.name.c_str(), t.miss.c_str());
      arr.push_back(json{{"target", t.name}, {"issue", t.issue}, {"baseline", t.baseline}, {"ratio", nullptr},
                         {"want", t.want}, {"at_most", t.at_most}, {"pass", false}, {"miss", t.miss}});
      continue;
    }
    bool pass = t.at_most ? t.ratio <= t.want : t.ratio >= t.want;
    if (!t.unit.empty()) {  // an absolute value
      std::string miss;
      if (!pass) {
        char buf[128];
        std::snprintf(buf, sizeof buf, "  (misses: %.2fx the limit)", t.at_most ? t.ratio / t.want : t.want / t.ratio);
        miss = buf;
      }
      std::printf("%s  %-52s value %.3f %s (want %s %.2f %s; %s)%s\n", pass ? "PASS" : "MISS", t.name.c_str(), t.ratio,
                  t.unit.c_str(), t.at_most ? "<" : ">", t.want, t.unit.c_str(), t.baseline.c_str(), miss.c_str());
      arr.push_back(json{{"target", t.name}, {"issue", t.issue}, {"baseline", t.baseline}, {"value", t.ratio},
                         {"unit", t.unit}, {"want", t.want}, {"at_most", t.at_most}, {"pass", pass}});
      continue;
    }
    std::string miss;
    if (!pass) {
      char buf[128];
      if (t.at_most)
        std::snprintf(buf, sizeof buf, "  (misses by %.0f%%: ratio %.2f > %.2f)", (t.ratio / t.want - 1) * 100, t.ratio, t.want);
      else
        std::snprintf(buf, sizeof buf, "  (misses by %.0f%%: needs %.2fx faster)", (1 - t.ratio / t.want) * 100, t.want / t.ratio);
      miss = buf;
    }
    std::printf("%s  %-52s ratio %.2f (want %s %.2f; vs %s)%s\n", pass ? "PASS" : "MISS", t.name.c_str(),
                t.ratio, t.at_most ? "<=" : ">=", t.want, t.baseline.c_str(), miss.c_str());
    arr.push_back(json{{"target", t.name}, {"issue", t.issue}, {"baseline", t.baseline}, {"ratio", t.ratio},
                       {"want", t.want}, {"at_most", t.at_most}, {"pass", pass}});
  }
  results["targets"] = arr;
}

}  // namespace

int main(int argc, char **argv) {
  CLI::App app{"umrt-bench: umrt migration throughput and latency next to memcpy, the kernel's "
               "fault path and a bare userfaultfd handler, and on the cuda backend next to raw "
               "cudaMemcpyAsync and cudaMallocManaged"};
  app.footer(std::string(
                 "Scenarios and their baselines (every backend: the host ones; cuda backend: also the GPU ones):\n"
                 "  prefetch       memcpy (1 and N threads), memcpy + MADV_DONTNEED, UFFDIO_COPY floor;\n"
                 "                 GPU: raw cudaMemcpyAsync pinned <-> cudaMalloc (limit), cudaMallocManaged +\n"
                 "                 cudaMemPrefetchAsync (peer), each way\n"
                 "  fault-seq,     kernel anonymous first touch, bare userfaultfd handler (windows 4 and 512);\n"
                 "  fault-rand     GPU: cudaMallocManaged with its pages on the GPU, read by the CPU threads\n"
                 "  fault-latency  bare userfaultfd handler (window 1), kernel first touch; no GPU peer\n"
                 "  oversub        no host baseline (sim: the triad runs on host threads); GPU: the triad is\n"
                 "                 a kernel, peers cudaMallocManaged with and without cudaMemPrefetchAsync per chunk\n"
                 "  batch-sweep    umrt only, no baseline, no GPU peer\n"
                 "  scale          (issue 9; not part of `all`) malloc+free against 1..1M live allocations and\n"
                 "                 against the reserved size 1M..1T (--scale-*), fault-seq against 1..2x CPUs readers\n"
                 "                 vs kernel first touch, cold/warm prefetch (--size, default 256M) vs memcpy\n"
                 "This build: ") +
             (kBuiltWithCuda ? "with the GPU baselines (they run when the backend in use is cuda; UMRT_BACKEND)"
                             : "without the GPU baselines (no CUDA in the build)"));
  const std::vector<std::string> names{"prefetch", "fault-seq",     "fault-rand",     "fault-latency", "oversub",
                                       "batch-sweep", "all", "scale", "file-read", "file-to-device", "spill", "storage"};
  app.add_option("scenario", opt.scenario,
                 "prefetch|fault-seq|fault-rand|fault-latency|oversub|batch-sweep|all (the issue-4 scenarios)|scale|"
                 "file-read|file-to-device|spill|storage (the three storage ones)")
      ->check(CLI::IsMember(names))
      ->capture_default_str();
  std::string size_s, dev_s;
  app.add_option("--size", size_s,
                 "bytes per scenario (K/M/G suffixes); default per scenario: prefetch 1G, fault-seq "
                 "256M, fault-rand 64M, fault-latency 512M, batch-sweep 64M total; scale: its fault-seq "
                 "buffer and its cold/warm prefetch, 256M");
  app.add_option("--threads", opt.threads, "CPU reader thread counts, e.g. 1,2 (oversub on sim: the triad's host threads, the largest)")
      ->delimiter(',')
      ->check(CLI::Range(1u, 256u))
      ->capture_default_str();
  app.add_option("--reps", opt.reps, "measured repetitions")->check(CLI::Range(1u, 1000u))->capture_default_str();
  app.add_option("--warmup", opt.warmup, "warm-up repetitions (discarded)")->capture_default_str();
  app.add_option("--json", opt.json_file, "write every figure as JSON to FILE");
  app.add_option("--device-memory", dev_s,
                 "oversub: device memory capacity (K/M/G; default 256M); scale: the device memory of its "
                 "cold/warm prefetch (default: UMRT_DEVICE_MEMORY, else the backend's)");
  app.add_option("--latency-threshold-us", opt.latency_threshold_us,
                 "fault-seq/rand: an access slower than this counts as a fault for the latency figures")
      ->capture_default_str();
  app.add_option("--seed", opt.seed, "random page order seed")->capture_default_str();
  std::vector<std::string> counts_s, sizes_s;
  app.add_option("--scale-counts", counts_s,
                 "scale: live allocation levels, ascending (K = 1000, M = 1000000); default 1,10,100,1K,10K,100K,1M")
      ->delimiter(',');
  app.add_option("--scale-alloc", opt.scale.alloc_bytes, "scale: bytes of each live allocation and of the measured one")
      ->check(CLI::Range(size_t{1}, size_t{1} << 30))
      ->capture_default_str();
  app.add_option("--scale-pairs", opt.scale.pairs, "scale: malloc+free pairs per block (--reps blocks per level)")
      ->check(CLI::Range(1u, 10000000u))
      ->capture_default_str();
  app.add_option("--scale-budget", opt.scale.budget_s,
                 "scale: seconds allowed for creating the live allocations (all levels); the level reached "
                 "then is measured and the larger ones are not")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_option("--scale-sizes", sizes_s, "scale: reserved sizes for malloc+free (K/M/G/T); default 1M,1G,64G,1T")
      ->delimiter(',');
  app.add_option("--scale-threads", opt.scale.threads,
                 "scale: fault-seq reader counts; default 1,2,4,... up to 2x the usable CPUs")
      ->delimiter(',')
      ->check(CLI::Range(1u, 1024u));
  std::string spill_s;
  app.add_option("--storage-dir", opt.storage.dir, "file-read, file-to-device: where the file is made (default $TMPDIR or /tmp)");
  app.add_option("--spill-budget", spill_s, "spill: UMRT_HOST_MEMORY (K/M/G; default 64M), the working set twice that");
  try {
    app.parse(argc, argv);
    if (!spill_s.empty()) opt.storage.spill_budget = std::max(size_t{4} << 20, parse_size(spill_s));
    if (!counts_s.empty()) {
      opt.scale.counts.clear();
      for (const auto &c : counts_s) opt.scale.counts.push_back(parse_count(c));
    }
    if (!sizes_s.empty()) {
      opt.scale.sizes.clear();
      for (const auto &z : sizes_s) opt.scale.sizes.push_back(parse_size(z));
    }
    if (!size_s.empty()) opt.size = parse_size(size_s);
    if (!dev_s.empty()) {
      opt.device_memory = std::max(kBlock, parse_size(dev_s) / kBlock * kBlock);
      opt.device_memory_given = true;
    }
  } catch (const CLI::ParseError &e) {
    return app.exit(e);
  }
  if (opt.threads.empty()) opt.threads = {1};

  const std::string &s = opt.scenario;
  auto want = [&](const char *n) { return s == "all" || s == n; };
  auto t0 = Clock::now();
  if (want("prefetch")) scenario_prefetch();
  if (want("fault-seq")) scenario_fault(false, opt.threads);
  if (want("fault-rand")) scenario_fault(true, opt.threads);
  if (want("fault-latency")) scenario_fault_latency();
  if (want("oversub")) scenario_oversub();
  if (want("batch-sweep")) scenario_batch_sweep();
  if (s == "scale") scenario_scale();
  for (const char *st : {"file-read", "file-to-device", "spill"})
    if (s == st || s == "storage") scenario_storage(st);
  const char *backend = umrt_backend_name();
  std::string backend_s = backend ? backend : "?";
  backend_in_use = backend_s;
  umrt_shutdown();
  print_targets();
  std::fprintf(stderr, "umrt-bench: done in %.1f s\n", secs(Clock::now() - t0));

  if (!opt.json_file.empty()) {
    std::ostringstream cmd;
    for (int i = 0; i < argc; ++i) cmd << (i ? " " : "") << argv[i];
    json out{{"tool", "umrt-bench"},
             {"date", now_utc()},
             {"command", cmd.str()},
             {"machine", machine()},
             {"backend", backend_s},
             {"options", {{"scenario", opt.scenario}, {"size", opt.size ? json(*opt.size) : json("per scenario")},
                          {"threads", opt.threads}, {"reps", opt.reps}, {"warmup", opt.warmup},
                          {"device_memory_oversub", opt.device_memory},
                          {"latency_threshold_us", opt.latency_threshold_us}, {"seed", opt.seed}}},
             {"targets", results["targets"]}};
    if (s == "scale")
      out["options"]["scale"] = json{{"counts", opt.scale.counts},
                                     {"alloc_bytes", opt.scale.alloc_bytes},
                                     {"pairs", opt.scale.pairs},
                                     {"budget_s", opt.scale.budget_s},
                                     {"sizes", opt.scale.sizes},
                                     {"threads", opt.scale.threads.empty() ? bench::scale::default_threads() : opt.scale.threads},
                                     {"device_memory", opt.device_memory_given ? json(opt.device_memory) : json("configured")}};
    results.erase("targets");
    out["scenarios"] = results;
    std::ofstream f(opt.json_file);
    f << out.dump(2) << "\n";
    if (!f) die("cannot write " + opt.json_file);
    std::fprintf(stderr, "umrt-bench: wrote %s\n", opt.json_file.c_str());
  }
  return 0;
}
