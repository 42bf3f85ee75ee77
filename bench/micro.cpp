// micro.cpp — umrt-micro: Google Benchmark micro-benchmarks of the per-call costs that
// umrt-bench's throughput figures hide: the page-entry lock/unlock (the CAS every batch does per
// page), umrt_page_location, a host->device->host prefetch round trip of one page up to one
// block (the fixed cost of a batch), and an NVTX range with its nested step as every batch opens
// them (nvtx.h: no tool attached unless run under `nsys profile`). Runs on the backend UMRT_BACKEND selects (sim by default
// here: it sets UMRT_BACKEND=sim unless the variable is set). Exits 1 if a benchmark stopped on
// a umrt error.
//
//   umrt-micro [--benchmark_filter=REGEX] [--benchmark_min_time=SECONDS] ...
#include <benchmark/benchmark.h>
#include <umrt/umrt.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "entry.h"
#include "nvtx.h"

namespace {

bool g_failed = false;  // a benchmark stopped on a umrt error: exit 1 (bench.micro checks it)

void fail(benchmark::State &state) {
  g_failed = true;
  state.SkipWithError(umrt_last_error());
}

void BM_EntryLockUnlock(benchmark::State &state) {
  umrt::rt::Entry e{umrt::rt::entry::make(umrt::rt::Loc::HOST)};
  for (auto _ : state) {
    uint64_t old = 0;
    bool locked = umrt::rt::entry_try_lock(e, &old);
    benchmark::DoNotOptimize(locked);
    umrt::rt::entry_unlock(e);
  }
}
BENCHMARK(BM_EntryLockUnlock);

// A managed buffer for the API benchmarks; skips the benchmark with umrt's reason on failure.
struct Buffer {
  void *p = nullptr;
  Buffer(benchmark::State &state, size_t bytes) {
    if (umrt_malloc(&p, bytes) != UMRT_SUCCESS) {
      fail(state);
      p = nullptr;
      return;
    }
    std::memset(p, 1, bytes);
  }
  ~Buffer() {
    if (p) umrt_free(p);
  }
};

void BM_PageLocation(benchmark::State &state) {
  Buffer b(state, 1 << 20);
  if (!b.p) return;
  umrt_location loc;
  for (auto _ : state) {
    if (umrt_page_location(b.p, &loc) != UMRT_SUCCESS) {
      fail(state);
      break;
    }
    benchmark::DoNotOptimize(loc);
  }
}
BENCHMARK(BM_PageLocation);

// One umrt_prefetch to the device and one back, of range(0) bytes: two batches per iteration.
void BM_PrefetchRoundTrip(benchmark::State &state) {
  const size_t bytes = static_cast<size_t>(state.range(0));
  Buffer b(state, bytes);
  if (!b.p) return;
  for (auto _ : state) {
    if (umrt_prefetch(b.p, bytes, UMRT_LOCATION_DEVICE, nullptr) != UMRT_SUCCESS ||
        umrt_prefetch(b.p, bytes, UMRT_LOCATION_HOST, nullptr) != UMRT_SUCCESS) {
      fail(state);
      break;
    }
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) * static_cast<int64_t>(bytes) * 2);
}
BENCHMARK(BM_PrefetchRoundTrip)->RangeMultiplier(4)->Range(4 << 10, 4 << 20)->UseRealTime();

// A batch's NVTX range and one nested step (nvtx.h), as run_batch opens them: with no NVTX tool
// attached a load and a branch each (docs/design.md, "NVTX"); under `nsys profile` the tool's cost.
void BM_NvtxRange(benchmark::State &state) {
  namespace nv = umrt::rt::nvtx;
  for (auto _ : state) {
    nv::Range r(umrt::rt::Ev::fault_group, nv::Cat::fault, 4096);
    r.step(umrt::rt::Ev::collect);
    benchmark::ClobberMemory();
  }
  state.SetLabel(nv::on() ? "NVTX tool attached" : "no NVTX tool");
}
BENCHMARK(BM_NvtxRange);

}  // namespace

int main(int argc, char **argv) {
  setenv("UMRT_BACKEND", "sim", 0);
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 2;
  if (umrt_init(nullptr) != UMRT_SUCCESS) {
    std::fprintf(stderr, "umrt-micro: umrt_init: %s\n", umrt_last_error());
    return 2;
  }
  std::fprintf(stderr, "umrt-micro: backend %s\n", umrt_backend_name());
  const size_t ran = benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  umrt_shutdown();
  if (ran == 0) std::fprintf(stderr, "umrt-micro: no benchmark matched\n");
  return g_failed || ran == 0 ? 1 : 0;
}
