// scale.cpp — umrt-bench's `scale` scenario (see scale.h).
#include "scale.h"

#include <fcntl.h>
#include <malloc.h>
#include <sched.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "baselines.h"

namespace bench::scale {

namespace {

using Clock = std::chrono::steady_clock;
constexpr double kFlat = 1.5;  // a figure that grows by at most this factor is "flat"

double secs(Clock::duration d) { return std::chrono::duration<double>(d).count(); }
double nsecs(Clock::duration d) { return std::chrono::duration<double, std::nano>(d).count(); }

std::string human_bytes(size_t b) {
  char buf[32];
  const size_t T = size_t{1} << 40, G = size_t{1} << 30, M = size_t{1} << 20, K = 1024;
  if (b >= T && b % T == 0) std::snprintf(buf, sizeof buf, "%zuT", b / T);
  else if (b >= G && b % G == 0) std::snprintf(buf, sizeof buf, "%zuG", b / G);
  else if (b >= M && b % M == 0) std::snprintf(buf, sizeof buf, "%zuM", b / M);
  else if (b >= K && b % K == 0) std::snprintf(buf, sizeof buf, "%zuK", b / K);
  else std::snprintf(buf, sizeof buf, "%zu", b);
  return buf;
}

// Counts in decimal: 1K = 1000, 1M = 1000000.
std::string human_count(size_t n) {
  char buf[32];
  if (n >= 1000000 && n % 1000000 == 0) std::snprintf(buf, sizeof buf, "%zuM", n / 1000000);
  else if (n >= 1000 && n % 1000 == 0) std::snprintf(buf, sizeof buf, "%zuK", n / 1000);
  else std::snprintf(buf, sizeof buf, "%zu", n);
  return buf;
}

// ns, us or ms, whichever reads best.
std::string human_ns(double ns) {
  char buf[32];
  if (ns < 1e4) std::snprintf(buf, sizeof buf, "%.0f ns", ns);
  else if (ns < 1e7) std::snprintf(buf, sizeof buf, "%.1f us", ns / 1e3);
  else std::snprintf(buf, sizeof buf, "%.1f ms", ns / 1e6);
  return buf;
}

std::string human_kib(double kib) {
  char buf[32];
  if (std::fabs(kib) < 10240) std::snprintf(buf, sizeof buf, "%.0f KiB", kib);
  else std::snprintf(buf, sizeof buf, "%.1f MiB", kib / 1024);
  return buf;
}

// "flat (x F)" when the factor is at most 1.5 (shrinking included), else "grows x F".
std::string growth_text(double g) {
  char buf[48];
  if (!std::isfinite(g) || g <= 0) return "n/a";
  if (g <= kFlat) std::snprintf(buf, sizeof buf, "flat (x %.2f)", g);
  else std::snprintf(buf, sizeof buf, "grows x %.1f", g);
  return buf;
}

struct Stat {
  double median = 0, min = 0, max = 0, mean = 0, p90 = 0, p99 = 0;
  size_t n = 0;
};

Stat stat_of(std::vector<double> v) {
  Stat s;
  s.n = v.size();
  if (v.empty()) return s;
  std::sort(v.begin(), v.end());
  s.min = v.front();
  s.max = v.back();
  const size_t n = v.size();
  s.median = n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
  auto at = [&](double p) { return v[std::min(n - 1, static_cast<size_t>(p * static_cast<double>(n)))]; };
  s.p90 = at(0.9);
  s.p99 = at(0.99);
  double sum = 0;
  for (double x : v) sum += x;
  s.mean = sum / static_cast<double>(n);
  return s;
}

json stat_json(const Stat &s) {
  return json{{"median", s.median}, {"min", s.min}, {"max", s.max}, {"mean", s.mean},
              {"p90", s.p90},       {"p99", s.p99}, {"n", s.n}};
}

// Summary with samples, as the other scenarios write it.
json summary_json(const std::vector<double> &v) {
  Stat s = stat_of(v);
  return json{{"median", s.median}, {"min", s.min}, {"max", s.max}, {"samples", v}};
}

// ---- process figures -------------------------------------------------------------------------

// A "Key:   123 kB" line of a /proc file, in KiB; -1 if absent.
long proc_kib(const char *path, const char *key) {
  std::ifstream f(path);
  std::string line;
  const size_t kl = std::strlen(key);
  while (std::getline(f, line))
    if (line.compare(0, kl, key) == 0) return std::atol(line.c_str() + kl);
  return -1;
}

// VmRSS (the kernel's rss counters: approximate, per-CPU batched on recent kernels).
long vmrss_kib() { return proc_kib("/proc/self/status", "VmRSS:"); }
// Rss of smaps_rollup (a page-table walk: exact, slower).
long smaps_rss_kib() { return proc_kib("/proc/self/smaps_rollup", "Rss:"); }

// Lines of /proc/self/maps: the process's mappings (VMAs).
long map_count() {
  int fd = open("/proc/self/maps", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return -1;
  static char buf[1 << 16];
  long lines = 0;
  for (;;) {
    ssize_t n = read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    for (ssize_t i = 0; i < n; ++i) lines += buf[i] == '\n';
  }
  close(fd);
  return lines;
}

long max_map_count() {
  std::ifstream f("/proc/sys/vm/max_map_count");
  long v = -1;
  f >> v;
  return v;
}

std::string last_error_of(umrt_status s) {
  return std::string(umrt_status_string(s)) + ": " + umrt_last_error();
}

// ---- table -----------------------------------------------------------------------------------

struct SummaryRow {
  std::string figure, first, last, growth;
};
std::vector<SummaryRow> summary_rows;

void add_row(std::string figure, std::string first, std::string last, std::string growth) {
  summary_rows.push_back({std::move(figure), std::move(first), std::move(last), std::move(growth)});
}

// ---- 1. malloc + free against live allocations -----------------------------------------------

struct Level {
  size_t wanted = 0, live = 0;  // live: allocations held while the pairs ran
  bool reached = false;
  double create_s = 0;
  size_t created = 0;
  Stat pair_ns, malloc_ns, free_ns;  // over every measured pair of every block
  Stat block_p50_ns;                 // the p50 of each block of `pairs` pairs
  std::string pair_error;
  long maps = -1, rss_kib = -1, smaps_kib = -1;
};

json part_live(const Options &o, const Hooks &h, std::vector<Target> &targets) {
  std::vector<size_t> levels = o.counts;
  std::sort(levels.begin(), levels.end());
  levels.erase(std::unique(levels.begin(), levels.end()), levels.end());
  h.restart(h.config());
  const size_t top = levels.empty() ? 0 : levels.back();
  std::fprintf(stderr, "scale 1/4: umrt_malloc+umrt_free of one more %s allocation against live %s allocations "
                       "(levels up to %s, %u blocks of %u pairs each, creation budget %.0f s)\n",
               human_bytes(o.alloc_bytes).c_str(), human_bytes(o.alloc_bytes).c_str(), human_count(top).c_str(),
               std::max(1u, o.reps), o.pairs, o.budget_s);
  std::vector<void *> held;
  held.reserve(top);
  const long rss0 = vmrss_kib(), smaps0 = smaps_rss_kib(), maps0 = map_count();
  std::optional<json> limit;
  std::string stop_reason;  // why the levels stopped growing
  double created_total = 0;
  std::vector<Level> out;
  const unsigned warm_pairs = std::max(5u, o.pairs / 20);

  std::printf("\n== scale 1: umrt_malloc + umrt_free of one more %s allocation against live %s allocations (%s backend) ==\n",
              human_bytes(o.alloc_bytes).c_str(), human_bytes(o.alloc_bytes).c_str(), umrt_backend_name());
  std::printf("  %u blocks of %u pairs per level (after %u warm-up pairs), each pair timed; p50/p90 over all pairs, "
              "[min..max] of the blocks' p50; live allocations never touched;\n  mappings = lines of /proc/self/maps "
              "(vm.max_map_count %ld); VmRSS growth since before the first level\n",
              o.reps, o.pairs, warm_pairs, max_map_count());
  std::printf("  %9s %9s %9s | %11s %21s %11s %11s %11s | %8s %12s %8s\n", "live", "create s", "us/alloc", "pair p50",
              "[blocks' p50]", "pair p90", "malloc p50", "free p50", "maps", "VmRSS +", "B/alloc");

  for (size_t want : levels) {
    Level lv;
    lv.wanted = want;
    if (!stop_reason.empty()) {
      out.push_back(lv);
      continue;
    }
    const size_t from = held.size();
    auto t0 = Clock::now(), last = t0;
    size_t last_n = from;
    while (held.size() < want) {
      void *p = nullptr;
      umrt_status s = umrt_malloc(&p, o.alloc_bytes);
      if (s != UMRT_SUCCESS) {
        const std::string why = last_error_of(s);
        limit = json{{"live_allocations", held.size()},
                     {"status", umrt_status_string(s)},
                     {"error", umrt_last_error()},
                     {"maps", map_count()},
                     {"max_map_count", max_map_count()}};
        stop_reason = "limit reached at " + std::to_string(held.size()) + " live allocations: " + why;
        std::fprintf(stderr, "  [scale] %s\n", stop_reason.c_str());
        break;
      }
      held.push_back(p);
      if ((held.size() & 1023) == 0) {
        auto now = Clock::now();
        if (secs(now - last) >= 2.0) {
          std::fprintf(stderr, "  [scale] live %zu/%zu, %.1f s into this level, now %.1f us per allocation\n",
                       held.size(), want, secs(now - t0),
                       secs(now - last) * 1e6 / static_cast<double>(held.size() - last_n));
          last = now;
          last_n = held.size();
        }
        if (created_total + secs(now - t0) > o.budget_s) {
          stop_reason = "creation time budget (" + std::to_string(static_cast<int>(o.budget_s)) +
                        " s, --scale-budget) spent at " + std::to_string(held.size()) + " live allocations";
          std::fprintf(stderr, "  [scale] %s\n", stop_reason.c_str());
          break;
        }
      }
    }
    lv.create_s = secs(Clock::now() - t0);
    lv.created = held.size() - from;
    created_total += lv.create_s;
    lv.reached = held.size() >= want;
    if (limit && !lv.reached) {
      // at the limit: give a few back so that the measured allocation can fit
      const size_t give = std::min(held.size(), std::max<size_t>(64, held.size() / 100));
      for (size_t i = 0; i < give; ++i) {
        umrt_free(held.back());
        held.pop_back();
      }
    }
    lv.live = held.size();
    lv.maps = map_count();
    lv.rss_kib = vmrss_kib();
    lv.smaps_kib = smaps_rss_kib();
    std::vector<double> pair, mal, fre, blocks;
    const size_t total_pairs = size_t{o.pairs} * std::max(1u, o.reps);
    pair.reserve(total_pairs), mal.reserve(total_pairs), fre.reserve(total_pairs);
    for (size_t i = 0; i < warm_pairs + total_pairs; ++i) {
      void *p = nullptr;
      auto a = Clock::now();
      umrt_status s = umrt_malloc(&p, o.alloc_bytes);
      auto b = Clock::now();
      if (s != UMRT_SUCCESS) {
        lv.pair_error = "umrt_malloc: " + last_error_of(s);
        break;
      }
      s = umrt_free(p);
      auto c = Clock::now();
      if (s != UMRT_SUCCESS) {
        lv.pair_error = "umrt_free: " + last_error_of(s);
        break;
      }
      if (i >= warm_pairs) pair.push_back(nsecs(c - a)), mal.push_back(nsecs(b - a)), fre.push_back(nsecs(c - b));
      if (i >= warm_pairs && (i - warm_pairs + 1) % o.pairs == 0)
        blocks.push_back(stat_of(std::vector<double>(pair.end() - o.pairs, pair.end())).median);
    }
    lv.block_p50_ns = stat_of(blocks);
    lv.pair_ns = stat_of(pair);
    lv.malloc_ns = stat_of(mal);
    lv.free_ns = stat_of(fre);
    std::fprintf(stderr, "  [scale] level %s: %zu live, created in %.2f s, pair p50 %s%s%s\n", human_count(want).c_str(),
                 lv.live, lv.create_s, human_ns(lv.pair_ns.median).c_str(), lv.pair_error.empty() ? "" : ", ",
                 lv.pair_error.c_str());
    char live_s[32];
    std::snprintf(live_s, sizeof live_s, "%s%s", human_count(lv.live).c_str(), lv.reached ? "" : "*");
    const double drss = static_cast<double>(lv.rss_kib - rss0);
    const double per_alloc_us = lv.created ? lv.create_s * 1e6 / static_cast<double>(lv.created) : 0.0;
    if (lv.pair_ns.n) {
      char spread[48];
      std::snprintf(spread, sizeof spread, "[%s..%s]", human_ns(lv.block_p50_ns.min).c_str(),
                    human_ns(lv.block_p50_ns.max).c_str());
      std::printf("  %9s %9.2f %9.2f | %11s %21s %11s %11s %11s | %8ld %12s %8.0f\n", live_s, lv.create_s, per_alloc_us,
                  human_ns(lv.pair_ns.median).c_str(), spread, human_ns(lv.pair_ns.p90).c_str(),
                  human_ns(lv.malloc_ns.median).c_str(), human_ns(lv.free_ns.median).c_str(), lv.maps,
                  human_kib(drss).c_str(), lv.live ? drss * 1024 / static_cast<double>(lv.live) : 0.0);
    } else {
      std::printf("  %9s %9.2f %9.2f | pairs failed: %s\n", live_s, lv.create_s, per_alloc_us, lv.pair_error.c_str());
    }
    if (!lv.pair_error.empty() && lv.pair_ns.n)
      std::printf("            (pairs stopped after %zu: %s)\n", lv.pair_ns.n, lv.pair_error.c_str());
    out.push_back(lv);
  }
  for (const Level &lv : out)
    if (lv.live == 0 && !lv.reached && lv.wanted) std::printf("  %9s  not reached (%s)\n", human_count(lv.wanted).c_str(), stop_reason.c_str());
  if (!stop_reason.empty())
    std::printf("  * = level not reached: %s; measured with the allocations held%s\n", stop_reason.c_str(),
                limit ? " (1%, at least 64, given back first)" : "");

  // free them all
  const size_t n_held = held.size();
  auto f0 = Clock::now(), flast = f0;
  std::string free_error;
  while (!held.empty()) {
    umrt_status s = umrt_free(held.back());
    if (s != UMRT_SUCCESS && free_error.empty()) free_error = last_error_of(s);
    held.pop_back();
    if ((held.size() & 4095) == 0 && secs(Clock::now() - flast) >= 2.0) {
      flast = Clock::now();
      std::fprintf(stderr, "  [scale] freeing: %zu left\n", held.size());
    }
  }
  const double free_all_s = secs(Clock::now() - f0);
  const long rss_end = vmrss_kib(), maps_end = map_count();
  // What of that stays is the C allocator's (free lists it keeps) when malloc_trim gives it back.
  long rss_trim = -1;
#ifdef __GLIBC__
  malloc_trim(0);
  rss_trim = vmrss_kib();
#endif
  std::printf("  freeing all %zu: %.2f s (%.2f us per umrt_free); afterwards maps %ld, VmRSS %s over the start",
              n_held, free_all_s, n_held ? free_all_s * 1e6 / static_cast<double>(n_held) : 0.0, maps_end,
              human_kib(static_cast<double>(rss_end - rss0)).c_str());
  if (rss_trim >= 0) std::printf(" (%s after malloc_trim(0))", human_kib(static_cast<double>(rss_trim - rss0)).c_str());
  std::printf("%s%s\n", free_error.empty() ? "" : "; umrt_free failed: ", free_error.c_str());

  // growth: the largest measured level against the 1K level (else the smallest measured)
  const Level *base = nullptr, *big = nullptr;
  for (const Level &lv : out)
    if (lv.pair_ns.n) {
      if (lv.wanted == 1000 && lv.reached) base = &lv;
      big = &lv;
    }
  if (!base)
    for (const Level &lv : out)
      if (lv.pair_ns.n) {
        base = &lv;
        break;
      }
  json growth = nullptr;
  if (base && big) {
    const double g = big->pair_ns.median / base->pair_ns.median;
    const double gc = (big->created && base->created)
                          ? (big->create_s / static_cast<double>(big->created)) / (base->create_s / static_cast<double>(base->created))
                          : 0.0;
    growth = json{{"from_live", base->live}, {"to_live", big->live}, {"pair_p50_factor", g},
                  {"pair_p50", growth_text(g)}, {"create_per_alloc_factor", gc}};
    std::printf("  growth: pair p50 at %s live / at %s live = %.2f: %s\n", human_count(big->live).c_str(),
                human_count(base->live).c_str(), g, growth_text(g).c_str());
    add_row("malloc+free 4K pair p50 vs live allocations", human_count(base->live) + ": " + human_ns(base->pair_ns.median),
            human_count(big->live) + (big->reached ? "" : "*") + ": " + human_ns(big->pair_ns.median),
            growth_text(g) + (big->reached ? "" : " (top level not reached)"));
    if (gc > 0)
      add_row("creating one live 4K allocation (mean) vs live", human_count(base->live) + ": " +
                  human_ns(base->create_s * 1e9 / static_cast<double>(base->created)),
              human_count(big->live) + ": " + human_ns(big->create_s * 1e9 / static_cast<double>(big->created)),
              growth_text(gc));
    if (big->live) {
      const double per = static_cast<double>(big->rss_kib - rss0) * 1024 / static_cast<double>(big->live);
      const double maps_per = static_cast<double>(big->maps - maps0) / static_cast<double>(big->live);
      char b1[64], b2[64];
      std::snprintf(b1, sizeof b1, "%.0f B VmRSS, %.3f mappings", per, maps_per);
      std::snprintf(b2, sizeof b2, "%s live", human_count(big->live).c_str());
      add_row("cost per live 4K allocation (at the top level)", b2, b1, "-");
    }
  }

  // target: 1,000,000 live at most 1.5x the 1,000 cost
  {
    Target t;
    t.name = "malloc+free at 1,000,000 live <= 1.5x at 1,000";
    t.baseline = "malloc+free p50 with 1,000 live";
    t.want = 1.5;
    t.at_most = true;
    const Level *l1k = nullptr, *l1m = nullptr;
    for (const Level &lv : out) {
      if (lv.wanted == 1000 && lv.reached && lv.pair_ns.n) l1k = &lv;
      if (lv.wanted == 1000000) l1m = &lv;
    }
    if (!l1k) t.error = "no measured 1,000 level (--scale-counts must hold 1000)";
    else if (!l1m) t.error = "no 1,000,000 level in --scale-counts";
    else if (!l1m->reached || !l1m->pair_ns.n) {
      t.miss = "1,000,000 live not reached: " + stop_reason;
      if (l1m->pair_ns.n) {
        char b[96];
        std::snprintf(b, sizeof b, " (at %zu live: %.2fx the 1,000 cost)", l1m->live, l1m->pair_ns.median / l1k->pair_ns.median);
        t.miss += b;
      }
    } else t.value = l1m->pair_ns.median / l1k->pair_ns.median;
    targets.push_back(t);
  }

  json jl = json::array();
  for (const Level &lv : out) {
    json j{{"count", lv.wanted}, {"reached", lv.reached}, {"live", lv.live}};
    if (lv.live == 0 && !lv.reached) {
      j["not_measured"] = stop_reason;
      jl.push_back(j);
      continue;
    }
    j["create_s"] = lv.create_s;
    j["created"] = lv.created;
    j["create_ns_per_alloc"] = lv.created ? lv.create_s * 1e9 / static_cast<double>(lv.created) : 0.0;
    j["pair_ns"] = stat_json(lv.pair_ns);
    j["pair_block_p50_ns"] = stat_json(lv.block_p50_ns);
    j["malloc_ns"] = stat_json(lv.malloc_ns);
    j["free_ns"] = stat_json(lv.free_ns);
    if (!lv.pair_error.empty()) j["pair_error"] = lv.pair_error;
    j["maps"] = lv.maps;
    j["maps_growth"] = lv.maps - maps0;
    j["vmrss_kib"] = lv.rss_kib;
    j["vmrss_growth_kib"] = lv.rss_kib - rss0;
    j["smaps_rss_growth_kib"] = lv.smaps_kib - smaps0;
    jl.push_back(j);
  }
  return json{{"alloc_bytes", o.alloc_bytes},
              {"pairs_per_block", o.pairs},
              {"blocks_per_level", std::max(1u, o.reps)},
              {"warmup_pairs_per_level", warm_pairs},
              {"budget_s", o.budget_s},
              {"max_map_count", max_map_count()},
              {"start", {{"maps", maps0}, {"vmrss_kib", rss0}, {"smaps_rss_kib", smaps0}}},
              {"levels", jl},
              {"limit", limit ? *limit : json(nullptr)},
              {"stopped", stop_reason.empty() ? json(nullptr) : json(stop_reason)},
              {"free_all", {{"allocations", n_held}, {"seconds", free_all_s}, {"error", free_error.empty() ? json(nullptr) : json(free_error)},
                            {"maps_after", maps_end}, {"vmrss_growth_kib_after", rss_end - rss0},
                            {"vmrss_growth_kib_after_malloc_trim", rss_trim >= 0 ? json(rss_trim - rss0) : json(nullptr)}}},
              {"growth", growth}};
}

// ---- 2. malloc + free against the reserved size -----------------------------------------------

json part_sizes(const Options &o, const Hooks &h, std::vector<Target> &targets) {
  h.restart(h.config());
  const unsigned runs = o.warmup + o.reps;
  std::fprintf(stderr, "scale 2/4: umrt_malloc(size)+umrt_free against the size (%zu sizes, %u runs each)\n",
               o.sizes.size(), runs);
  std::printf("\n== scale 2: umrt_malloc(size) + umrt_free against the reserved size (medians of %u, after %u warm-up) ==\n",
              o.reps, o.warmup);
  std::printf("  untouched: malloc, VmRSS, free; touched: malloc, write one byte in the middle page, VmRSS, free; RSS "
              "growth = after - before malloc (VmRSS; smaps_rollup Rss, exact, in brackets)\n");
  std::printf("  %6s | %11s %11s %11s | %18s %8s | %10s %22s\n", "size", "malloc", "free", "pair", "RSS + untouched",
              "maps +", "touch", "RSS + after 1 touch");
  json pts = json::array();
  struct Pt {
    size_t bytes;
    double pair_ns, rss_kib;
    bool ok;
  };
  std::vector<Pt> got;
  for (size_t bytes : o.sizes) {
    std::vector<double> mal, fre, pair, rss, smaps, maps, touch, rss_t, smaps_t, free_t;
    std::string error;
    for (unsigned r = 0; r < runs && error.empty(); ++r) {
      // untouched
      const long r0 = vmrss_kib(), s0 = smaps_rss_kib(), m0 = map_count();
      void *p = nullptr;
      auto a = Clock::now();
      umrt_status s = umrt_malloc(&p, bytes);
      auto b = Clock::now();
      if (s != UMRT_SUCCESS) {
        error = "umrt_malloc: " + last_error_of(s);
        break;
      }
      const long r1 = vmrss_kib(), s1 = smaps_rss_kib(), m1 = map_count();
      auto c = Clock::now();
      s = umrt_free(p);
      auto d = Clock::now();
      if (s != UMRT_SUCCESS) {
        error = "umrt_free: " + last_error_of(s);
        break;
      }
      // touched: one page in the middle
      const long r2 = vmrss_kib(), s2 = smaps_rss_kib();
      s = umrt_malloc(&p, bytes);
      if (s != UMRT_SUCCESS) {
        error = "umrt_malloc (touched run): " + last_error_of(s);
        break;
      }
      volatile char *mid = static_cast<char *>(p) + (bytes / 2) / kPage * kPage;
      auto e = Clock::now();
      *mid = 1;
      auto f = Clock::now();
      const long r3 = vmrss_kib(), s3 = smaps_rss_kib();
      auto g = Clock::now();
      s = umrt_free(p);
      auto hh = Clock::now();
      if (s != UMRT_SUCCESS) {
        error = "umrt_free (touched run): " + last_error_of(s);
        break;
      }
      std::fprintf(stderr, "  [scale size %s] run %u/%u%s: malloc %s, free %s, RSS +%ld KiB, touched +%ld KiB\n",
                   human_bytes(bytes).c_str(), r + 1, runs, r < o.warmup ? " (warm-up)" : "", human_ns(nsecs(b - a)).c_str(),
                   human_ns(nsecs(d - c)).c_str(), r1 - r0, r3 - r2);
      if (r < o.warmup) continue;
      mal.push_back(nsecs(b - a));
      fre.push_back(nsecs(d - c));
      pair.push_back(nsecs(b - a) + nsecs(d - c));
      rss.push_back(static_cast<double>(r1 - r0));
      smaps.push_back(static_cast<double>(s1 - s0));
      maps.push_back(static_cast<double>(m1 - m0));
      touch.push_back(nsecs(f - e));
      rss_t.push_back(static_cast<double>(r3 - r2));
      smaps_t.push_back(static_cast<double>(s3 - s2));
      free_t.push_back(nsecs(hh - g));
    }
    json j{{"bytes", bytes}};
    if (!error.empty()) {
      j["failed"] = true;
      j["error"] = error;
      std::printf("  %6s | FAILED: %s\n", human_bytes(bytes).c_str(), error.c_str());
      std::fprintf(stderr, "  [scale size %s] failed: %s\n", human_bytes(bytes).c_str(), error.c_str());
      got.push_back({bytes, 0, 0, false});
      pts.push_back(j);
      continue;
    }
    Stat sm = stat_of(mal), sf = stat_of(fre), sp = stat_of(pair), sr = stat_of(rss), ss = stat_of(smaps),
         smp = stat_of(maps), st = stat_of(touch), srt = stat_of(rss_t), sst = stat_of(smaps_t);
    char rss_s[48], rsst_s[48];
    std::snprintf(rss_s, sizeof rss_s, "%s [%s]", human_kib(sr.median).c_str(), human_kib(ss.median).c_str());
    std::snprintf(rsst_s, sizeof rsst_s, "%s [%s]", human_kib(srt.median).c_str(), human_kib(sst.median).c_str());
    std::printf("  %6s | %11s %11s %11s | %18s %8.0f | %10s %22s\n", human_bytes(bytes).c_str(), human_ns(sm.median).c_str(),
                human_ns(sf.median).c_str(), human_ns(sp.median).c_str(), rss_s, smp.median, human_ns(st.median).c_str(),
                rsst_s);
    got.push_back({bytes, sp.median, sr.median, true});
    j["malloc_ns"] = summary_json(mal);
    j["free_ns"] = summary_json(fre);
    j["pair_ns"] = summary_json(pair);
    j["vmrss_growth_kib"] = summary_json(rss);
    j["smaps_rss_growth_kib"] = summary_json(smaps);
    j["maps_growth"] = summary_json(maps);
    j["touch_one_page_ns"] = summary_json(touch);
    j["vmrss_growth_after_touch_kib"] = summary_json(rss_t);
    j["smaps_rss_growth_after_touch_kib"] = summary_json(smaps_t);
    j["free_after_touch_ns"] = summary_json(free_t);
    pts.push_back(j);
  }
  const Pt *lo = nullptr, *hi = nullptr;
  for (const Pt &p : got)
    if (p.ok) {
      if (!lo) lo = &p;
      hi = &p;
    }
  json growth = nullptr;
  if (lo && hi) {
    const double g = hi->pair_ns / lo->pair_ns;
    growth = json{{"from_bytes", lo->bytes}, {"to_bytes", hi->bytes}, {"pair_factor", g}, {"pair", growth_text(g)},
                  {"vmrss_growth_kib_from", lo->rss_kib}, {"vmrss_growth_kib_to", hi->rss_kib}};
    std::printf("  growth: pair at %s / at %s = %.2f: %s; RSS growth %s -> %s\n", human_bytes(hi->bytes).c_str(),
                human_bytes(lo->bytes).c_str(), g, growth_text(g).c_str(), human_kib(lo->rss_kib).c_str(),
                human_kib(hi->rss_kib).c_str());
    add_row("malloc+free(size) vs reserved size", human_bytes(lo->bytes) + ": " + human_ns(lo->pair_ns),
            human_bytes(hi->bytes) + ": " + human_ns(hi->pair_ns), growth_text(g));
    add_row("RSS growth right after malloc(size) vs size", human_bytes(lo->bytes) + ": " + human_kib(lo->rss_kib),
            human_bytes(hi->bytes) + ": " + human_kib(hi->rss_kib),
            hi->rss_kib - lo->rss_kib <= 64 ? "flat (within 64 KiB)" : "+" + human_kib(hi->rss_kib - lo->rss_kib));
  }
  for (const Pt &p : got)
    if (!p.ok) add_row("malloc+free(size) vs reserved size", "", human_bytes(p.bytes) + ": FAILED", "limit: see part 2");

  // targets: 1 TiB under 10 ms and under 1 MiB RSS growth
  const Pt *tib = nullptr;
  const size_t T = size_t{1} << 40;
  for (const Pt &p : got)
    if (p.bytes == T) tib = &p;
  Target tt, tr;
  tt.name = "malloc+free(1 TiB) < 10 ms";
  tt.baseline = "absolute";
  tt.unit = "ms";
  tt.want = 10;
  tt.at_most = true;
  tr.name = "malloc(1 TiB) RSS growth < 1 MiB";
  tr.baseline = "absolute, VmRSS after malloc - before";
  tr.unit = "KiB";
  tr.want = 1024;
  tr.at_most = true;
  if (!tib) tt.error = tr.error = "no 1T in --scale-sizes";
  else if (!tib->ok) {
    for (const json &j : pts)
      if (j["bytes"].get<size_t>() == T) tt.miss = tr.miss = "umrt_malloc(1 TiB) failed: " + j["error"].get<std::string>();
  } else {
    tt.value = tib->pair_ns / 1e6;
    tr.value = tib->rss_kib;
  }
  targets.push_back(tt);
  targets.push_back(tr);
  return json{{"points", pts}, {"growth", growth}};
}

// ---- 3. fault-seq against reader threads ------------------------------------------------------

json part_faults(const Options &o, const Hooks &h, std::vector<Target> &targets) {
  std::vector<unsigned> th = o.threads.empty() ? default_threads() : o.threads;
  std::string list;
  for (unsigned t : th) {
    if (!list.empty()) list += ',';
    list += std::to_string(t);
  }
  std::fprintf(stderr, "scale 3/4: fault-seq against reader threads %s (%u CPUs)\n", list.c_str(), usable_cpus());
  std::printf("\n== scale 3: fault-seq against reader threads %s (%u usable CPUs; umrt-bench fault-seq without the bare "
              "handlers, its output follows) ==\n",
              list.c_str(), usable_cpus());
  std::fflush(stdout);
  json detail = h.fault_seq(th);
  std::printf("\n  scale 3 summary: umrt fault-seq / kernel anonymous first touch at the same thread count\n");
  std::printf("  %8s %12s %12s %8s\n", "readers", "umrt GB/s", "kernel GB/s", "ratio");
  json pts = json::array();
  std::optional<double> r2;
  double u_first = 0, u_last = 0, r_first = 0, r_last = 0;
  unsigned t_first = 0, t_last = 0;
  for (unsigned t : th) {
    const json &bt = detail["by_threads"][std::to_string(t)];
    const double u = bt["umrt"]["gbps"]["median"].get<double>();
    const double k = bt["kernel"]["gbps"]["median"].get<double>();
    const double r = u / k;
    std::printf("  %8u %12.2f %12.2f %8.2f\n", t, u, k, r);
    pts.push_back(json{{"threads", t}, {"umrt_gbps", bt["umrt"]["gbps"]}, {"kernel_gbps", bt["kernel"]["gbps"]},
                       {"ratio_umrt_over_kernel", r}});
    if (t == 2) r2 = r;
    if (!t_first) t_first = t, u_first = u, r_first = r;
    t_last = t, u_last = u, r_last = r;
  }
  if (t_first) {
    char a[64], b[64];
    std::snprintf(a, sizeof a, "%u: %.2f", t_first, r_first);
    std::snprintf(b, sizeof b, "%u: %.2f", t_last, r_last);
    add_row("fault-seq umrt/kernel ratio vs readers", a, b, growth_text(r_last / r_first));
    std::snprintf(a, sizeof a, "%u: %.2f GB/s", t_first, u_first);
    std::snprintf(b, sizeof b, "%u: %.2f GB/s", t_last, u_last);
    char g[48];
    std::snprintf(g, sizeof g, "scales x %.2f", u_last / u_first);
    add_row("fault-seq umrt throughput vs readers", a, b, g);
  }
  Target t;
  t.name = "fault-seq 2 readers >= 1.2x kernel 2 threads";
  t.baseline = "kernel anonymous first-touch (write), 2 threads";
  t.want = 1.2;
  if (r2) t.value = *r2;
  else t.error = "2 readers not in --scale-threads";
  targets.push_back(t);
  return json{{"threads", th}, {"usable_cpus", usable_cpus()}, {"points", pts}, {"fault_seq", detail}};
}

// ---- 4. cold and warm prefetch ------------------------------------------------------------------

json part_prefetch(const Options &o, const Hooks &h, std::vector<Target> &targets) {
  const size_t bytes = o.prefetch_bytes;
  const umrt_config c = h.config();
  const unsigned runs = o.warmup + o.reps;
  std::fprintf(stderr, "scale 4/4: cold and warm prefetch h->d of %s (%u runs, a fresh runtime each)\n",
               human_bytes(bytes).c_str(), runs);
  std::vector<double> cold, warm, d2h;
  std::string error;
  bool exact = true;
  umrt_stats s_cold0{}, s_cold1{}, s_warm0{}, s_warm1{};
  uint64_t device_capacity = 0;
  for (unsigned r = 0; r < runs && error.empty(); ++r) {
    h.restart(c);  // device memory never used before by anything
    void *vp = nullptr;
    umrt_status s = umrt_malloc(&vp, bytes);
    if (s != UMRT_SUCCESS) {
      error = "umrt_malloc: " + last_error_of(s);
      break;
    }
    char *p = static_cast<char *>(vp);
    std::memset(p, 0x5a, bytes);  // first touch on the host
    umrt_stats a{}, b{}, m{}, d{};
    umrt_get_stats(&a);
    auto t0 = Clock::now();
    s = umrt_prefetch(p, bytes, UMRT_LOCATION_DEVICE, nullptr);
    auto t1 = Clock::now();
    umrt_get_stats(&b);
    if (s == UMRT_SUCCESS) s = umrt_prefetch(p, bytes, UMRT_LOCATION_HOST, nullptr);
    auto t2 = Clock::now();
    umrt_get_stats(&m);
    if (s == UMRT_SUCCESS) s = umrt_prefetch(p, bytes, UMRT_LOCATION_DEVICE, nullptr);
    auto t3 = Clock::now();
    umrt_get_stats(&d);
    device_capacity = d.device_capacity;
    if (s != UMRT_SUCCESS) {
      error = "umrt_prefetch: " + last_error_of(s);
      umrt_free(p);
      break;
    }
    exact = exact && p[0] == 0x5a && p[bytes / 2] == 0x5a && p[bytes - 1] == 0x5a;
    umrt_free(p);
    const double gc = static_cast<double>(bytes) / secs(t1 - t0) / 1e9;
    const double gd = static_cast<double>(bytes) / secs(t2 - t1) / 1e9;
    const double gw = static_cast<double>(bytes) / secs(t3 - t2) / 1e9;
    std::fprintf(stderr, "  [scale prefetch] run %u/%u%s: cold h->d %.2f GB/s, d->h %.2f GB/s, warm h->d %.2f GB/s\n", r + 1,
                 runs, r < o.warmup ? " (warm-up)" : "", gc, gd, gw);
    if (r < o.warmup) continue;
    cold.push_back(gc), d2h.push_back(gd), warm.push_back(gw);
    if (r == o.warmup) s_cold0 = a, s_cold1 = b, s_warm0 = m, s_warm1 = d;  // steps of the first measured run
  }
  // memcpy of the same size, 1 thread: into a populated destination, and into a fresh one
  std::vector<double> mc, mc_fresh;
  {
    void *sp = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    void *dp = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (sp == MAP_FAILED || dp == MAP_FAILED) {
      if (error.empty()) error = std::string("mmap for memcpy: ") + std::strerror(errno);
    } else {
      madvise(sp, bytes, MADV_NOHUGEPAGE);
      madvise(dp, bytes, MADV_NOHUGEPAGE);
      std::memset(sp, 0x5a, bytes);
      std::memset(dp, 0, bytes);
      for (unsigned r = 0; r < runs; ++r) {
        auto t0 = Clock::now();
        std::memcpy(dp, sp, bytes);
        const double g = static_cast<double>(bytes) / secs(Clock::now() - t0) / 1e9;
        void *fp = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        double gf = 0;
        if (fp != MAP_FAILED) {
          madvise(fp, bytes, MADV_NOHUGEPAGE);
          auto t1 = Clock::now();
          std::memcpy(fp, sp, bytes);
          gf = static_cast<double>(bytes) / secs(Clock::now() - t1) / 1e9;
          munmap(fp, bytes);
        }
        std::fprintf(stderr, "  [scale memcpy] run %u/%u%s: %.2f GB/s, into fresh memory %.2f GB/s\n", r + 1, runs,
                     r < o.warmup ? " (warm-up)" : "", g, gf);
        if (r >= o.warmup) mc.push_back(g), mc_fresh.push_back(gf);
      }
    }
    if (sp != MAP_FAILED) munmap(sp, bytes);
    if (dp != MAP_FAILED) munmap(dp, bytes);
  }
  const Stat sc = stat_of(cold), sw = stat_of(warm), sd = stat_of(d2h), sm = stat_of(mc), smf = stat_of(mc_fresh);
  std::printf("\n== scale 4: prefetch host->device of %s, cold and warm, against memcpy (medians of %u; device memory %s) ==\n",
              human_bytes(bytes).c_str(), o.reps, human_bytes(device_capacity ? device_capacity : c.device_memory).c_str());
  std::printf("  cold: a fresh runtime each run (umrt_shutdown + umrt_init), a fresh range first touched on the host, "
              "its first prefetch; warm: the same range prefetched to the host and again to the device\n");
  const bool ok = error.empty() && sc.n && sm.n;
  if (!error.empty()) std::printf("  FAILED: %s\n", error.c_str());
  double rc = 0, rw = 0;
  if (ok) {
    rc = sc.median / sm.median;
    rw = sw.median / sm.median;
    std::printf("  %-34s %7.2f GB/s [%.2f..%.2f]  ratio %.2f\n", "cold h->d (first prefetch)", sc.median, sc.min, sc.max, rc);
    std::printf("  %-34s %7.2f GB/s [%.2f..%.2f]\n", "d->h in between", sd.median, sd.min, sd.max);
    std::printf("  %-34s %7.2f GB/s [%.2f..%.2f]  ratio %.2f\n", "warm h->d (again)", sw.median, sw.min, sw.max, rw);
    std::printf("  %-34s %7.2f GB/s [%.2f..%.2f]  (the ratios' baseline)\n", "memcpy 1 thread, populated dst", sm.median,
                sm.min, sm.max);
    std::printf("  %-34s %7.2f GB/s [%.2f..%.2f]  (reference: cold h->d / this %.2f)\n", "memcpy 1 thread, fresh dst",
                smf.median, smf.min, smf.max, smf.median > 0 ? sc.median / smf.median : 0.0);
    std::printf("  data %s\n", exact ? "exact" : "WRONG");
    char a[48], b[48];
    std::snprintf(a, sizeof a, "cold: %.2f", rc);
    std::snprintf(b, sizeof b, "warm: %.2f", rw);
    char g[48];
    std::snprintf(g, sizeof g, "warm = x %.2f cold", rw / rc);
    add_row("prefetch h->d / memcpy, cold vs warm", a, b, g);
  }
  Target tc, tw;
  tc.name = "prefetch cold h->d >= 0.6x memcpy";
  tc.baseline = "memcpy 1 thread, same size";
  tc.want = 0.6;
  tw.name = "prefetch warm h->d >= 0.8x memcpy";
  tw.baseline = tc.baseline;
  tw.want = 0.8;
  if (ok) tc.value = rc, tw.value = rw;
  else tc.error = tw.error = error.empty() ? "no measured run" : error;
  targets.push_back(tc);
  targets.push_back(tw);
  json j{{"bytes", bytes},
         {"device_memory", device_capacity ? device_capacity : c.device_memory},
         {"data_exact", exact}};
  if (!error.empty()) j["error"] = error;
  j["cold_h2d_gbps"] = summary_json(cold);
  j["d2h_gbps"] = summary_json(d2h);
  j["warm_h2d_gbps"] = summary_json(warm);
  j["memcpy_1thread_gbps"] = summary_json(mc);
  j["memcpy_1thread_fresh_dst_gbps"] = summary_json(mc_fresh);
  j["ratio_cold_vs_memcpy"] = ok ? json(rc) : json(nullptr);
  j["ratio_warm_vs_memcpy"] = ok ? json(rw) : json(nullptr);
  if (ok && h.steps)
    j["steps"] = json{{"cold_h2d", h.steps(s_cold0, s_cold1)}, {"warm_h2d", h.steps(s_warm0, s_warm1)}};
  return j;
}

}  // namespace

unsigned usable_cpus() {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof set, &set) != 0) return 1;
  return static_cast<unsigned>(std::max(1, CPU_COUNT(&set)));
}

std::vector<unsigned> default_threads() {
  const unsigned top = 2 * usable_cpus();
  std::vector<unsigned> v;
  for (unsigned t = 1; t < top; t *= 2) v.push_back(t);
  v.push_back(top);
  return v;
}

json run(const Options &o, const Hooks &h, std::vector<Target> &targets) {
  summary_rows.clear();
  auto t0 = Clock::now();
  json live = part_live(o, h, targets);
  std::fflush(stdout);
  json sizes = part_sizes(o, h, targets);
  std::fflush(stdout);
  json faults = part_faults(o, h, targets);
  std::fflush(stdout);
  json pf = part_prefetch(o, h, targets);
  const char *b = umrt_backend_name();
  std::printf("\n== scale summary (%s backend; growth = last / first: \"flat\" if <= %.1fx, else \"grows x N\") ==\n",
              b ? b : "?", kFlat);
  size_t w0 = 6, w1 = 5, w2 = 4;
  for (const auto &r : summary_rows)
    w0 = std::max(w0, r.figure.size()), w1 = std::max(w1, r.first.size()), w2 = std::max(w2, r.last.size());
  std::printf("  %-*s  %-*s  %-*s  %s\n", static_cast<int>(w0), "figure", static_cast<int>(w1), "first",
              static_cast<int>(w2), "last", "growth");
  json rows = json::array();
  for (const auto &r : summary_rows) {
    std::printf("  %-*s  %-*s  %-*s  %s\n", static_cast<int>(w0), r.figure.c_str(), static_cast<int>(w1), r.first.c_str(),
                static_cast<int>(w2), r.last.c_str(), r.growth.c_str());
    rows.push_back(json{{"figure", r.figure}, {"first", r.first}, {"last", r.last}, {"growth", r.growth}});
  }
  std::fprintf(stderr, "scale: done in %.1f s\n", secs(Clock::now() - t0));
  return json{
      {"parameters",
       {{"counts", o.counts}, {"alloc_bytes", o.alloc_bytes}, {"pairs", o.pairs}, {"budget_s", o.budget_s},
        {"sizes", o.sizes}, {"threads", faults["threads"]}, {"prefetch_bytes", o.prefetch_bytes}, {"reps", o.reps},
        {"warmup", o.warmup}, {"usable_cpus", usable_cpus()}}},
      {"live_allocations", live},
      {"reserved_size", sizes},
      {"fault_seq_threads", faults},
      {"prefetch_cold_warm", pf},
      {"summary", rows},
      {"seconds", secs(Clock::now() - t0)},
      {"notes",
       "live_allocations: levels of live umrt_malloc(alloc_bytes) allocations (never touched), "
       "created in ascending order on one runtime; at each level `reps` blocks of `pairs` "
       "umrt_malloc+umrt_free of one more allocation, each pair timed (steady_clock): pair_ns over "
       "all pairs, pair_block_p50_ns over the blocks' medians; maps = lines of /proc/self/maps; "
       "VmRSS growth since before the first level (VmRSS comes from the kernel's rss counters, "
       "batched per CPU; smaps_rss is smaps_rollup's page-table walk). A level that could not be "
       "reached (an allocation failed: limit; or --scale-budget seconds of creation spent) is "
       "measured with what was held (at a limit, 1% and at least 64 given back first) and the "
       "larger levels are not measured. reserved_size: per run an untouched malloc+free (VmRSS "
       "right after malloc minus before) and a malloc, one write in the middle page, VmRSS, free. "
       "fault_seq_threads: umrt-bench fault-seq (256 MiB unless --size) at each reader count "
       "with the kernel's anonymous first touch at the same thread count. prefetch_cold_warm: "
       "a fresh runtime per run, a fresh range first touched on the host; cold = its first "
       "host->device prefetch (device memory never used), then to the host, then warm = to the "
       "device again; ratios against a 1-thread memcpy between populated buffers of the same size."}};
}

}  // namespace bench::scale
