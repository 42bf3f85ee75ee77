// vector_add — the basic umrt round trip: managed allocations, first touch on the CPU, prefetch
// to the device, a "kernel" c = a + b through device pointers, then the CPU reads c and its pages
// come back through userfaultfd faults (no prefetch back, on purpose). Prints what moved and how
// fast, from umrt_get_stats().
//
// The kernel here is host code: T threads working on the addresses umrt_device_pointer() returns.
// That is how the sim backend's device memory is used (it is host-addressable, as GPU memory is
// to a GPU kernel). So this sample asks for the sim backend unless UMRT_BACKEND names another.
//
//   vector_add [--n N] [--threads T]      N elements per array (K/M/G suffixes, default 64M)
//
// Exit status: 0 success, 1 a wrong element, 2 a umrt error (or bad arguments).
#include <umrt/umrt.h>
#include <umrt/umrt.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <string>
#include <thread>
#include <vector>

namespace {

using clock_type = std::chrono::steady_clock;

double seconds_since(clock_type::time_point t0) {
  return std::chrono::duration<double>(clock_type::now() - t0).count();
}

double mib(uint64_t bytes) { return static_cast<double>(bytes) / (1024.0 * 1024.0); }

// GB/s as 10^9 bytes per second; 0 when nothing was timed.
double gbps(uint64_t bytes, double s) { return s > 0 ? static_cast<double>(bytes) / s / 1e9 : 0; }

// "64M" -> 64 * 2^20; K/M/G are binary multiples. False on anything else.
bool parse_count(const char *s, uint64_t *out) {
  if (!s || !*s || *s == '-') return false;
  char *end = nullptr;
  unsigned long long v = std::strtoull(s, &end, 10);
  if (end == s) return false;
  uint64_t mul = 1;
  switch (*end) {
    case '\0': break;
    case 'k': case 'K': mul = 1ull << 10; ++end; break;
    case 'm': case 'M': mul = 1ull << 20; ++end; break;
    case 'g': case 'G': mul = 1ull << 30; ++end; break;
    default: return false;
  }
  if (*end != '\0' || v == 0 || v > UINT64_MAX / mul) return false;
  *out = v * mul;
  return true;
}

// The values a and b get: small integers, so a + b is exact in float and c can be checked
// without reading a or b (which would fault them back too).
inline float a_value(std::size_t i) { return static_cast<float>(i & 1023); }
inline float b_value(std::size_t i) { return static_cast<float>((i >> 10) & 1023); }

// Runs body(first, last) on `threads` threads over [0, n), split at 2 MiB (block) boundaries so
// that two threads do not fault on the same block.
template <typename Body>
void parallel_for(std::size_t n, unsigned threads, Body body) {
  constexpr std::size_t align = (2u << 20) / sizeof(float);
  std::size_t per = (n + threads - 1) / threads;
  per = (per + align - 1) / align * align;
  std::vector<std::thread> pool;
  for (std::size_t first = 0; first < n; first += per)
    pool.emplace_back(body, first, std::min(n, first + per));
  for (std::thread &t : pool) t.join();
}

void usage(const char *argv0) {
  std::fprintf(stderr,
               "usage: %s [--n ELEMENTS] [--threads T]\n"
               "  --n        floats per array, K/M/G suffixes allowed (default 64M = 256 MiB)\n"
               "  --threads  host threads for init, kernel and read-back (default: all cores)\n",
               argv0);
}

}  // namespace

int main(int argc, char **argv) {
  std::setvbuf(stdout, nullptr, _IOLBF, 0);  // progress shows even when piped
  uint64_t n = 64ull << 20;
  uint64_t threads = std::max(1u, std::thread::hardware_concurrency());
  for (int i = 1; i < argc; ++i) {
    const char *arg = argv[i];
    const char *val = i + 1 < argc ? argv[i + 1] : nullptr;
    if (!std::strcmp(arg, "--n") && parse_count(val, &n)) {
      ++i;
    } else if (!std::strcmp(arg, "--threads") && parse_count(val, &threads) && threads <= 1024) {
      ++i;
    } else {
      usage(argv[0]);
      return std::strcmp(arg, "--help") && std::strcmp(arg, "-h") ? 2 : 0;
    }
  }
  const unsigned nthreads = static_cast<unsigned>(threads);
  const uint64_t bytes = n * sizeof(float);

  try {
    // Configuration: defaults + UMRT_* environment; the host-thread kernel needs the sim backend.
    umrt_config cfg{};
    umrt::check(umrt_config_defaults(&cfg), "umrt_config_defaults");
    if (cfg.backend == UMRT_BACKEND_DEFAULT || cfg.backend == UMRT_BACKEND_AUTO)
      cfg.backend = UMRT_BACKEND_SIM;
    umrt::runtime rt(cfg);  // umrt_init; umrt_shutdown when it goes out of scope

    const char *backend = umrt_backend_name();
    if (!backend) umrt::check(UMRT_ERROR_NO_DEVICE, "umrt_backend_name");
    std::printf("umrt vector_add: backend %s, n = %llu floats (%.1f MiB per array, %.1f MiB in "
                "all), %u threads\n",
                backend, static_cast<unsigned long long>(n), mib(bytes), mib(3 * bytes),
                nthreads);
    if (std::strcmp(backend, "sim") != 0) {
      std::fprintf(stderr,
                   "vector_add: the kernel of this sample is host threads over device pointers, "
                   "which only the sim backend can run; use UMRT_BACKEND=sim\n");
      return 2;
    }

    // Three managed arrays. Nothing is resident anywhere yet: every page reads as zero.
    umrt::buffer<float> a(n), b(n), c(n);

    // 1. First touch on the CPU: the pages fault in as zero-filled host pages.
    umrt_stats s0 = umrt::runtime::stats();
    auto t0 = clock_type::now();
    parallel_for(n, nthreads, [&](std::size_t first, std::size_t last) {
      for (std::size_t i = first; i < last; ++i) {
        a[i] = a_value(i);
        b[i] = b_value(i);
      }
    });
    const double t_init = seconds_since(t0);
    umrt_stats s1 = umrt::runtime::stats();

    // 2. Prefetch all three arrays to the device (stream nullptr: synchronous). a and b are
    //    copied; c was never touched, so its pages become zero-filled device pages, no copy.
    t0 = clock_type::now();
    a.prefetch(umrt::location::device);
    b.prefetch(umrt::location::device);
    c.prefetch(umrt::location::device);
    const double t_prefetch = seconds_since(t0);
    umrt_stats s2 = umrt::runtime::stats();
    for (const umrt::buffer<float> *buf : {&a, &b, &c}) {
      if (buf->where(0) != umrt::location::device ||
          buf->where(buf->size() - 1) != umrt::location::device) {
        std::fprintf(stderr, "vector_add: a page is not on the device after umrt_prefetch\n");
        return 1;
      }
    }

    // 3. The kernel, through device addresses only (on a GPU this would be a kernel launch).
    const float *da = a.device_data();
    const float *db = b.device_data();
    float *dc = c.device_data();
    t0 = clock_type::now();
    parallel_for(n, nthreads, [&](std::size_t first, std::size_t last) {
      for (std::size_t i = first; i < last; ++i) dc[i] = da[i] + db[i];
    });
    const double t_kernel = seconds_since(t0);
    umrt_stats s3 = umrt::runtime::stats();

    // 4. Read c on the CPU without prefetching it back: each access to a device-resident page
    //    faults, and the fault service migrates it (plus a growing prefetch window) home.
    std::atomic<uint64_t> wrong{0};
    std::atomic<uint64_t> first_wrong{UINT64_MAX};
    t0 = clock_type::now();
    parallel_for(n, nthreads, [&](std::size_t first, std::size_t last) {
      uint64_t bad = 0;
      for (std::size_t i = first; i < last; ++i) {
        if (c[i] != a_value(i) + b_value(i)) {
          if (bad++ == 0) {
            uint64_t cur = first_wrong.load();
            while (i < cur && !first_wrong.compare_exchange_weak(cur, i)) {
            }
          }
        }
      }
      wrong += bad;
    });
    const double t_read = seconds_since(t0);
    umrt_stats s4 = umrt::runtime::stats();

    std::printf("\n%-34s %10s %14s %10s\n", "phase", "time ms", "MiB", "GB/s");
    std::printf("%-34s %10.1f %14.1f %10.2f   written; %llu zero-fills, %llu faults\n",
                "1 first touch a, b on CPU", t_init * 1e3, mib(2 * bytes),
                gbps(2 * bytes, t_init),
                static_cast<unsigned long long>(s1.zero_fills - s0.zero_fills),
                static_cast<unsigned long long>(s1.cpu_faults - s0.cpu_faults));
    const uint64_t to_dev = s2.bytes_to_device - s1.bytes_to_device;
    std::printf("%-34s %10.1f %14.1f %10.2f   copied to device; %llu batches\n",
                "2 prefetch a, b, c -> device", t_prefetch * 1e3, mib(to_dev),
                gbps(to_dev, t_prefetch),
                static_cast<unsigned long long>(s2.batches - s1.batches));
    std::printf("%-34s %10.1f %14.1f %10.2f   read a, b + written c\n",
                "3 kernel c = a + b (device ptrs)", t_kernel * 1e3, mib(3 * bytes),
                gbps(3 * bytes, t_kernel));
    const uint64_t to_host = s4.bytes_to_host - s3.bytes_to_host;
    std::printf("%-34s %10.1f %14.1f %10.2f   copied to host; %llu faults in %llu groups\n",
                "4 read c on CPU (fault back)", t_read * 1e3, mib(to_host),
                gbps(to_host, t_read),
                static_cast<unsigned long long>(s4.cpu_faults - s3.cpu_faults),
                static_cast<unsigned long long>(s4.fault_groups - s3.fault_groups));

    std::printf("\numrt_get_stats: bytes_to_device %llu, bytes_to_host %llu, cpu_faults %llu, "
                "fault_groups %llu, zero_fills %llu, evictions %llu, batches %llu\n",
                static_cast<unsigned long long>(s4.bytes_to_device),
                static_cast<unsigned long long>(s4.bytes_to_host),
                static_cast<unsigned long long>(s4.cpu_faults),
                static_cast<unsigned long long>(s4.fault_groups),
                static_cast<unsigned long long>(s4.zero_fills),
                static_cast<unsigned long long>(s4.evictions),
                static_cast<unsigned long long>(s4.batches));

    if (wrong.load() != 0) {
      const uint64_t i = first_wrong.load();
      std::fprintf(stderr, "vector_add: FAILED: %llu wrong elements; first c[%llu] = %g, "
                   "expected %g\n",
                   static_cast<unsigned long long>(wrong.load()),
                   static_cast<unsigned long long>(i), static_cast<double>(c[i]),
                   static_cast<double>(a_value(i) + b_value(i)));
      return 1;
    }
    std::printf("vector_add: all %llu elements correct\n", static_cast<unsigned long long>(n));
    return 0;
  } catch (const umrt::error &e) {
    std::fprintf(stderr, "vector_add: umrt error: %s\n", e.what());
    if (e.status() == UMRT_ERROR_NOT_SUPPORTED)
      std::fprintf(stderr, "vector_add: umrt needs userfaultfd with write-protect (Linux >= 5.7) "
                   "and root, access to /dev/userfaultfd or vm.unprivileged_userfaultfd=1\n");
    return 2;
  } catch (const std::exception &e) {
    std::fprintf(stderr, "vector_add: error: %s\n", e.what());
    return 2;
  }
}
