// design_probes.cpp — umrt-probes: the measurements behind design decisions (docs/design.md).
//
//   umrt-probes write-fault   a CPU write into a page a host->device batch holds: the writer's
//                             latency under the cancel and the wait policy (UMRT_WRITE_FAULT).
//   umrt-probes window        CPU reads of device-resident memory, sequential and random, for
//                             several starting prefetch windows (UMRT_PREFETCH_MIN).
//   umrt-probes read-user     what reading user pages through the kernel costs: memcpy against
//                             process_vm_readv on this process, 2 MiB and 512 KiB (the sim's
//                             piece), hot in cache ("Reading user pages").
//   umrt-probes host-pool     256 MiB prefetched to the device and back, with the host pool off
//                             and on (UMRT_HOST_POOL), rounds interleaved: per-batch finalize
//                             (h->d) and copy (d->h) times, GB/s, and the first d->h after init
//                             ("Host pages kept for reuse").
// Each prints one line per configuration. Uses only the public API.
#include <sys/mman.h>
#include <sys/uio.h>
#include <unistd.h>
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

// For each 2 MiB block in turn: the block is prefetched to the device over a slow link (sim
// bandwidth limit, so the batch holds its pages for milliseconds) while a writer thread writes
// one word of it 300 us into the batch, i.e. into a page the batch has write-protected. The
// write's latency is what the policy costs the writer; "pages kept on host" counts the written
// pages the batch left on the host.
void write_fault(const char *name, umrt_write_fault_policy pol) {
  umrt_shutdown();
  umrt_config c{};
  c.backend = UMRT_BACKEND_SIM;
  c.device_memory = 512ull << 20;
  c.write_fault = pol;
  c.sim_bandwidth_gbps = 0.25;
  check(umrt_init(&c), "umrt_init");
  const size_t blocks = 32, bytes = blocks << 21;
  uint64_t *p = nullptr;
  check(umrt_malloc(reinterpret_cast<void **>(&p), bytes), "umrt_malloc");
  std::memset(p, 0, bytes);
  std::vector<double> lat;
  size_t kept = 0;
  umrt_stats a{}, s{};
  check(umrt_get_stats(&a), "stats");
  auto t0 = Clock::now();
  for (size_t blk = 0; blk < blocks; ++blk) {
    uint64_t *word = p + blk * (1 << 18) + 100 * 512;  // page 100 of the block
    std::thread writer([&] {
      std::this_thread::sleep_for(std::chrono::microseconds(300));
      auto t1 = Clock::now();
      *word += 1;
      lat.push_back(secs(Clock::now() - t1) * 1e6);
    });
    check(umrt_prefetch(p + blk * (1 << 18), 2u << 20, UMRT_LOCATION_DEVICE, nullptr), "prefetch");
    writer.join();
    umrt_location l{};
    check(umrt_page_location(word, &l), "location");
    kept += l == UMRT_LOCATION_HOST;
  }
  double el = secs(Clock::now() - t0);
  check(umrt_get_stats(&s), "stats");
  uint64_t sum = 0;
  for (size_t i = 0; i < bytes / 8; ++i) sum += p[i];
  std::printf("write-fault %-6s write latency p50 %8.1f us  p99 %8.1f us  max %8.1f us  pages kept "
              "on host %2zu/%zu  wp-faults %llu cancels %llu  bytes back to host %5.1f KiB  "
              "%.2f s  sum %s\n",
              name, pct(lat, 0.5), pct(lat, 0.99), pct(lat, 1.0), kept, blocks,
              static_cast<unsigned long long>(s.write_faults - a.write_faults),
              static_cast<unsigned long long>(s.write_cancels - a.write_cancels),
              static_cast<double>(s.bytes_to_host - a.bytes_to_host) / 1024, el,
              sum == blocks ? "exact" : "WRONG");
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

void read_user() {
  for (size_t n : {size_t{2} << 20, size_t{512} << 10}) {
    const int reps = static_cast<int>((size_t{4} << 30) / n);
    auto *src = static_cast<char *>(mmap(nullptr, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
    auto *dst = static_cast<char *>(mmap(nullptr, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
    if (src == MAP_FAILED || dst == MAP_FAILED) std::exit(2);
    std::memset(src, 1, n);
    std::memset(dst, 2, n);
    auto t0 = Clock::now();
    for (int i = 0; i < reps; ++i) {
      std::memcpy(dst, src, n);
      asm volatile("" ::: "memory");
    }
    double a = secs(Clock::now() - t0);
    t0 = Clock::now();
    for (int i = 0; i < reps; ++i) {
      iovec l{dst, n}, r{src, n};
      if (process_vm_readv(getpid(), &l, 1, &r, 1, 0) != static_cast<ssize_t>(n)) std::exit(2);
    }
    double b = secs(Clock::now() - t0);
    std::printf("read-user %4zu KiB: memcpy %6.2f GB/s  process_vm_readv %6.2f GB/s  (%.2fx)\n", n >> 10,
                static_cast<double>(n) * reps / a / 1e9, static_cast<double>(n) * reps / b / 1e9, a / b);
    munmap(src, n);
    munmap(dst, n);
  }
}

// One round: init with the pool off or on, 256 MiB touched on the host, then `reps` times to the
// device and back. Medians over the reps; "first" is the first d->h after init (every page
// coming home is new to the process when the pool is off).
struct PoolRound {
  double hd_gbps, dh_gbps, fin_us, dh_copy_us, first_dh_gbps, reused_frac;
};
PoolRound pool_round(bool on, int reps) {
  umrt_shutdown();
  umrt_config c{};
  c.backend = UMRT_BACKEND_SIM;
  c.device_memory = 512ull << 20;
  c.host_pool = on ? 256ull << 20 : 1;  // 1: below one slot, none
  check(umrt_init(&c), "umrt_init");
  const size_t bytes = 256ull << 20;
  char *p = nullptr;
  check(umrt_malloc(reinterpret_cast<void **>(&p), bytes), "umrt_malloc");
  std::memset(p, 1, bytes);
  std::vector<double> hd, dh, fin, dcp;
  double first = 0;
  uint64_t reused = 0, home = 0;
  for (int r = 0; r < reps; ++r) {
    umrt_stats a{}, b{}, d{};
    check(umrt_get_stats(&a), "stats");
    auto t0 = Clock::now();
    check(umrt_prefetch(p, bytes, UMRT_LOCATION_DEVICE, nullptr), "prefetch to device");
    auto t1 = Clock::now();
    check(umrt_get_stats(&b), "stats");
    check(umrt_prefetch(p, bytes, UMRT_LOCATION_HOST, nullptr), "prefetch to host");
    auto t2 = Clock::now();
    check(umrt_get_stats(&d), "stats");
    hd.push_back(static_cast<double>(bytes) / secs(t1 - t0) / 1e9);
    dh.push_back(static_cast<double>(bytes) / secs(t2 - t1) / 1e9);
    if (r == 0) first = dh.back();
    fin.push_back(static_cast<double>(b.ns_finalize - a.ns_finalize) / 1e3 / static_cast<double>(b.batches - a.batches));
    dcp.push_back(static_cast<double>(d.ns_copy - b.ns_copy) / 1e3 / static_cast<double>(d.batches - b.batches));
    reused += d.host_pages_reused - b.host_pages_reused;
    home += d.pages_to_host - b.pages_to_host;
  }
  if (p[0] != 1 || p[bytes - 1] != 1) {
    std::fprintf(stderr, "host-pool: data changed\n");
    std::exit(2);
  }
  check(umrt_free(p), "umrt_free");
  return {pct(hd, 0.5), pct(dh, 0.5), pct(fin, 0.5), pct(dcp, 0.5), first,
          home ? static_cast<double>(reused) / static_cast<double>(home) : 0};
}

void host_pool() {
  const int rounds = 5, reps = 5;
  std::vector<double> v[2][6];
  for (int k = 0; k < rounds; ++k)
    for (int on = 0; on < 2; ++on) {
      PoolRound r = pool_round(on, reps);
      double x[6] = {r.hd_gbps, r.dh_gbps, r.fin_us, r.dh_copy_us, r.first_dh_gbps, r.reused_frac};
      for (int i = 0; i < 6; ++i) v[on][i].push_back(x[i]);
    }
  for (int on = 0; on < 2; ++on)
    std::printf("host-pool %-4s: h->d %5.2f GB/s (finalize %5.1f us/batch)  d->h %5.2f GB/s (copy %5.1f "
                "us/batch)  first d->h %5.2f GB/s  reused %3.0f%%  [medians of %d rounds x %d reps]\n",
                on ? "on" : "off", pct(v[on][0], 0.5), pct(v[on][2], 0.5), pct(v[on][1], 0.5),
                pct(v[on][3], 0.5), pct(v[on][4], 0.5), 100 * pct(v[on][5], 0.5), rounds, reps);
}

}  // namespace

int main(int argc, char **argv) {
  std::string what = argc > 1 ? argv[1] : "all";
  if (what == "write-fault" || what == "all") {
    write_fault("cancel", UMRT_WRITE_FAULT_CANCEL);
    write_fault("wait", UMRT_WRITE_FAULT_WAIT);
  }
  if (what == "read-user" || what == "all") read_user();
  if (what == "host-pool" || what == "all") host_pool();
  if (what == "window" || what == "all")
    for (uint32_t w : {1u, 4u, 16u, 64u, 512u}) window(w);
  umrt_shutdown();
  return 0;
}
