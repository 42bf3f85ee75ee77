// scale.h — umrt-bench's `scale` scenario (issue 9): how umrt's costs grow with what it holds,
// measured in one process run on the backend in use:
//
//   1. umrt_malloc + umrt_free of one more small allocation (median ns per pair) against the
//      number of live allocations already held (1 .. 1M), with the time each level took to
//      create, the process's mapping count and its VmRSS growth; an allocation that fails is
//      reported as the limit reached (with umrt_last_error()) and the other parts go on;
//   2. umrt_malloc(size) + umrt_free time and resident-set growth against the reserved size
//      (1 MiB .. 1 TiB), and the growth after touching one page in the middle;
//   3. fault-seq against reader threads (umrt-bench's fault-seq, through a hook), each as a
//      ratio to the kernel's anonymous first touch at the same thread count;
//   4. cold (fresh runtime, fresh range, first prefetch) and warm (the same range back to the
//      host and again to the device) host->device prefetch, each as a ratio to memcpy.
//
// umrt_bench.cpp owns the runtime's lifetime, the fault-seq machinery and the targets list; it
// hands them in as Hooks. run() prints the tables to stdout, progress to stderr, and returns
// the scenario's JSON.
#pragma once

#include <umrt/umrt.h>

#include <cstddef>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace bench::scale {

using json = nlohmann::ordered_json;

struct Options {
  std::vector<size_t> counts{1, 10, 100, 1000, 10000, 100000, 1000000};  // live allocations
  size_t alloc_bytes = 4096;  // size of each live allocation and of the measured one
  unsigned pairs = 1000;      // measured malloc+free pairs per level
  double budget_s = 240;      // creating the live allocations stops after this many seconds
  std::vector<size_t> sizes{size_t{1} << 20, size_t{1} << 30, size_t{64} << 30, size_t{1} << 40};
  std::vector<unsigned> threads;  // fault-seq readers; empty: 1, 2, 4, ... up to 2x the CPUs
  size_t prefetch_bytes = size_t{256} << 20;
  unsigned reps = 5, warmup = 1;
};

struct Hooks {
  std::function<umrt_config()> config;               // the configuration every part starts with
  std::function<void(const umrt_config &)> restart;  // umrt_shutdown + umrt_init
  // fault-seq at these reader counts (no bare-handler variants, no issue-4 targets): its JSON
  std::function<json(const std::vector<unsigned> &)> fault_seq;
  // the per-step JSON ("steps") of the umrt_stats delta b - a
  std::function<json(const umrt_stats &a, const umrt_stats &b)> steps;
};

struct Target {
  std::string name, baseline;
  std::string unit;  // "": value is a ratio; else its unit (e.g. "ms", "KiB")
  double value = 0, want = 0;
  bool at_most = false;
  std::string error;  // the figure could not be measured: why (printed as ERROR)
  std::string miss;   // a MISS whatever the value (e.g. the level was never reached): why
};

// CPUs this process may run on (sched_getaffinity).
unsigned usable_cpus();
// 1, 2, 4, ... up to 2x usable_cpus() (that count itself included).
std::vector<unsigned> default_threads();

// Runs the four parts; targets (issue 9) are appended to `targets`.
json run(const Options &o, const Hooks &h, std::vector<Target> &targets);

}  // namespace bench::scale
