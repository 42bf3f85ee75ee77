// design_probes.cpp — umrt-probes: the measurements behind design decisions (docs/design.md).
//
//   umrt-probes write-fault   a CPU writer racing host->device migrations: writer latency and
//                             throughput, migration throughput, under the cancel and the wait
//                             policy (UMRT_WRITE_FAULT).
//   umrt-probes window        CPU reads of device-resident memory, sequential and random, for
//                             several starting prefetch windows (UMRT_PREFETCH_MIN).
// Each prints one line per configuration. Uses only the public API.
#include <umrt/umrt.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <thread>
#include <vector>

namespace {

using Clock = std::chrono::steady_clock;

void check(umrt_status s, const char *what) {
  if (s != UMRT_SUCCESS) {
    std::fprintf(stderr, "%s: %s: %s\n", what, umrt_status_string(s), umrt_last_error());
    std::exit(2);
  }
}

double secs(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

double pct(std::vector<double> &v, double p) {
  if (v.empty()) return 0;
  size_t i = std::min(v.size() - 1, static_cast<size_t>(p * static_cast<double>(v.size())));
  std::nth_element(v.begin(), v.begin() + static_cast<long>(i), v.end());
  return v[i];
}

void start(umrt_write_fault_policy pol, uint32_t wmin) {
  umrt_shutdown();
  umrt_config c{};
  c.backend = UMRT_BACKEND_SIM;
  c.device_memory = 512ull << 20;
  c.write_fault = pol;
  c.prefetch_min_pages = wmin;
  check(umrt_init(&c), "umrt_init");
}

// A writer keeps writing a hot set (one word in each of 64 pages spread over the range) while
// the range is migrated to the device again and again. Reports the latency of the writes that
// stalled (> 2 us: they took a fault) and how much data the migrations moved.
void write_fault(const char *name, umrt_write_fault_policy pol) {
  start(pol, 0);
  const size_t bytes = 64ull << 20, pages = bytes / 4096, hot = 64;
  uint64_t *p = nullptr;
  check(umrt_malloc(reinterpret_cast<void **>(&p), bytes), "umrt_malloc");
  std::memset(p, 0, bytes);
  std::atomic<bool> stop{false};
  std::vector<double> stalls;
  uint64_t writes = 0;
  std::thread writer([&] {
    size_t k = 0;
    while (!stop.load(std::memory_order_relaxed)) {
      size_t pg = (k++ % hot) * (pages / hot);
      auto t0 = Clock::now();
      p[pg * 512] += 1;
      double us = secs(Clock::now() - t0) * 1e6;
      if (us > 2.0) stalls.push_back(us);
      ++writes;
    }
  });
  umrt_stats a{}, s{};
  check(umrt_get_stats(&a), "stats");
  auto t0 = Clock::now();
  const int rounds = 20;
  for (int i = 0; i < rounds; ++i) {
    check(umrt_prefetch(p, bytes, UMRT_LOCATION_DEVICE, nullptr), "prefetch device");
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  double el = secs(Clock::now() - t0);
  stop = true;
  writer.join();
  check(umrt_get_stats(&s), "stats");
  uint64_t sum = 0;
  for (size_t i = 0; i < pages; ++i) sum += p[i * 512];
  std::printf("write-fault %-6s writes/s %9.0f  stalled writes %6zu: p50 %7.1f us p99 %7.1f us "
              "max %7.1f us  bytes back to host %6.1f MiB  wp-faults %llu cancels %llu  counts %s\n",
              name, static_cast<double>(writes) / el, stalls.size(), pct(stalls, 0.5),
              pct(stalls, 0.99), pct(stalls, 1.0),
              static_cast<double>(s.bytes_to_host - a.bytes_to_host) / (1 << 20),
              static_cast<unsigned long long>(s.write_faults - a.write_faults),
              static_cast<unsigned long long>(s.write_cancels - a.write_cancels),
              sum == writes ? "exact" : "WRONG");
  check(umrt_free(p), "umrt_free");
}

void window(uint32_t wmin) {
  start(UMRT_WRITE_FAULT_DEFAULT, wmin);
  const size_t bytes = 256ull << 20, pages = bytes / 4096;
  char *p = nullptr;
  check(umrt_malloc(reinterpret_cast<void **>(&p), bytes), "umrt_malloc");
  std::memset(p, 1, bytes);
  // sequential
  check(umrt_prefetch(p, bytes, UMRT_LOCATION_DEVICE, nullptr), "prefetch");
  umrt_stats a{}, b{};
  check(umrt_get_stats(&a), "stats");
  auto t0 = Clock::now();
  long sum = 0;
  for (size_t i = 0; i < pages; ++i) sum += p[i * 4096];
  double seq = secs(Clock::now() - t0);
  check(umrt_get_stats(&b), "stats");
  uint64_t seq_faults = b.cpu_faults - a.cpu_faults;
  // random: one access at a random page of each block, blocks in random order: every access
  // faults; its latency and the bytes it brings back are the price of the window.
  check(umrt_prefetch(p, bytes, UMRT_LOCATION_DEVICE, nullptr), "prefetch");
  std::mt19937_64 rng(7);
  std::vector<size_t> blocks(pages / 512);
  for (size_t i = 0; i < blocks.size(); ++i) blocks[i] = i;
  std::shuffle(blocks.begin(), blocks.end(), rng);
  std::vector<double> lat;
  check(umrt_get_stats(&a), "stats");
  for (size_t blk : blocks) {
    size_t pg = blk * 512 + rng() % 512;
    auto t1 = Clock::now();
    sum += p[pg * 4096];
    lat.push_back(secs(Clock::now() - t1) * 1e6);
  }
  check(umrt_get_stats(&b), "stats");
  std::printf("window min %3u pages: seq %5.2f GB/s (%5llu faults)  random fault: p50 %6.1f us "
              "p99 %6.1f us, %6.1f KiB moved per fault  (%ld)\n",
              wmin, static_cast<double>(bytes) / seq / 1e9,
              static_cast<unsigned long long>(seq_faults), pct(lat, 0.5), pct(lat, 0.99),
              static_cast<double>(b.bytes_to_host - a.bytes_to_host) / static_cast<double>(blocks.size()) / 1024, sum);
  check(umrt_free(p), "umrt_free");
}

}  // namespace

int main(int argc, char **argv) {
  std::string what = argc > 1 ? argv[1] : "all";
  if (what == "write-fault" || what == "all") {
    write_fault("cancel", UMRT_WRITE_FAULT_CANCEL);
    write_fault("wait", UMRT_WRITE_FAULT_WAIT);
  }
  if (what == "window" || what == "all")
    for (uint32_t w : {1u, 4u, 16u, 64u, 512u}) window(w);
  umrt_shutdown();
  return 0;
}
