// vector_add — the basic umrt round trip: managed allocations, first touch on the CPU, prefetch
// to the device, a kernel c = a + b through device pointers, then the CPU reads c and its pages
// come back through userfaultfd faults (no prefetch back, on purpose). Prints what moved and how
// fast, from umrt_get_stats().
//
// The kernel depends on the backend (umrt_backend_name()):
// - cuda: the real GPU kernel umrt_kernels::vector_add (kernels/), on a cudaStream_t the sample
//   creates; the arrays are prefetched with umrt_prefetch(..., UMRT_LOCATION_DEVICE, stream), so
//   the kernel queued behind the prefetches on that stream sees the data with no host wait.
// - sim: host code, T threads working on the addresses umrt_device_pointer() returns (the sim
//   backend's device memory is host-addressable, as GPU memory is to a GPU kernel).
// The GPU path is compiled in when the sample is built with CUDA (UMRT_SAMPLES_CUDA, set by
// samples/CMakeLists.txt with umrt::kernels); then the backend is whatever UMRT_BACKEND picks
// (auto: cuda when a GPU is usable, else sim). Built without CUDA the sample asks for the sim
// backend unless UMRT_BACKEND names another, and refuses UMRT_BACKEND=cuda.
//
//   vector_add [--n N] [--threads T]      N elements per array (K/M/G suffixes, default 64M)
//
// Exit status: 0 success, 1 a wrong element, 2 a umrt or CUDA error (or bad arguments),
// 77 skipped: UMRT_BACKEND=cuda was asked for and no GPU is usable (the reason on stderr).
#include <umrt/umrt.h>
#include <umrt/umrt.hpp>

#include "sample_util.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <initializer_list>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#if defined(UMRT_SAMPLES_CUDA) && UMRT_SAMPLES_CUDA
#include <cuda_runtime.h>
#include <umrt_kernels.h>
#define VECTOR_ADD_GPU 1
#else
#define VECTOR_ADD_GPU 0
#endif

namespace {

using sample::gbps;
using sample::mib;

using clock_type = std::chrono::steady_clock;

double seconds_since(clock_type::time_point t0) {
  return std::chrono::duration<double>(clock_type::now() - t0).count();
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

// Steps 2 and 3 (prefetch to the device, the kernel): their times and the statistics after each.
struct device_phase {
  double t_prefetch = 0, t_kernel = 0;
  umrt_stats after_prefetch{}, after_kernel{};
  const char *kernel_label = "";
};

// True when the first and last page of every buffer is on the device.
bool on_device(std::initializer_list<const umrt::buffer<float> *> bufs) {
  for (const umrt::buffer<float> *buf : bufs) {
    if (buf->where(0) != umrt::location::device ||
        buf->where(buf->size() - 1) != umrt::location::device)
      return false;
  }
  return true;
}

// sim backend: prefetch synchronously, then the "kernel" as host threads over device addresses.
// Returns 1 when a page is not on the device after the prefetch, else 0.
int run_on_sim(const umrt::buffer<float> &a, const umrt::buffer<float> &b,
               const umrt::buffer<float> &c, std::size_t n, unsigned nthreads, device_phase *out) {
  // 2. Prefetch all three arrays to the device (stream nullptr: synchronous). a and b are
  //    copied; c was never touched, so its pages become zero-filled device pages, no copy.
  auto t0 = clock_type::now();
  a.prefetch(umrt::location::device);
  b.prefetch(umrt::location::device);
  c.prefetch(umrt::location::device);
  out->t_prefetch = seconds_since(t0);
  out->after_prefetch = umrt::runtime::stats();
  if (!on_device({&a, &b, &c})) {
    std::fprintf(stderr, "vector_add: a page is not on the device after umrt_prefetch\n");
    return 1;
  }

  // 3. The kernel, through device addresses only (on a GPU this is a kernel launch).
  const float *da = a.device_data();
  const float *db = b.device_data();
  float *dc = c.device_data();
  t0 = clock_type::now();
  parallel_for(n, nthreads, [&](std::size_t first, std::size_t last) {
    for (std::size_t i = first; i < last; ++i) dc[i] = da[i] + db[i];
  });
  out->t_kernel = seconds_since(t0);
  out->after_kernel = umrt::runtime::stats();
  out->kernel_label = "3 kernel c = a + b (device ptrs)";
  return 0;
}

#if VECTOR_ADD_GPU
// A failed CUDA call ends the sample (exit 2) with cudaGetErrorString's text.
void cuda_check(cudaError_t err, const char *what) {
  if (err != cudaSuccess)
    throw std::runtime_error(std::string(what) + ": " + cudaGetErrorString(err));
}

// A stream and an event owned for a scope; a failed destroy is reported, not thrown.
class cuda_stream {
 public:
  cuda_stream() { cuda_check(cudaStreamCreate(&s_), "cudaStreamCreate"); }
  ~cuda_stream() {
    if (cudaError_t err = cudaStreamDestroy(s_); err != cudaSuccess)
      std::fprintf(stderr, "vector_add: cudaStreamDestroy: %s\n", cudaGetErrorString(err));
  }
  cuda_stream(const cuda_stream &) = delete;
  cuda_stream &operator=(const cuda_stream &) = delete;
  cudaStream_t get() const { return s_; }

 private:
  cudaStream_t s_ = nullptr;
};

class cuda_event {
 public:
  cuda_event() { cuda_check(cudaEventCreate(&e_), "cudaEventCreate"); }
  ~cuda_event() {
    if (cudaError_t err = cudaEventDestroy(e_); err != cudaSuccess)
      std::fprintf(stderr, "vector_add: cudaEventDestroy: %s\n", cudaGetErrorString(err));
  }
  cuda_event(const cuda_event &) = delete;
  cuda_event &operator=(const cuda_event &) = delete;
  cudaEvent_t get() const { return e_; }

 private:
  cudaEvent_t e_ = nullptr;
};

// cuda backend: the prefetches and the kernel queued on `stream`, in that order; the host waits
// only to time the phases. The prefetch phase ends when the stream reaches the event recorded
// after the prefetches; the kernel time is GPU time between that event and the next.
// Returns 1 when a page is not on the device after the kernel, else 0; throws on an error.
int run_on_gpu(const umrt::buffer<float> &a, const umrt::buffer<float> &b,
               const umrt::buffer<float> &c, std::size_t n, const cuda_stream &stream,
               device_phase *out) {
  cuda_event prefetched, done;
  void *s = stream.get();

  // 2. Prefetch on the stream, like cudaMemPrefetchAsync: the kernel queued after it on the same
  //    stream sees the data. a and b are copied; c was never touched, so its pages become
  //    zero-filled device pages, no copy.
  auto t0 = clock_type::now();
  a.prefetch(umrt::location::device, 0, umrt::buffer<float>::npos, s);
  b.prefetch(umrt::location::device, 0, umrt::buffer<float>::npos, s);
  c.prefetch(umrt::location::device, 0, umrt::buffer<float>::npos, s);
  cuda_check(cudaEventRecord(prefetched.get(), stream.get()), "cudaEventRecord");

  // 3. The kernel on the GPU, through device addresses, right behind the prefetches.
  if (int err = umrt_kernels::vector_add(a.device_data(), b.device_data(), c.device_data(), n, s))
    throw std::runtime_error(std::string("vector_add kernel launch: ") +
                             umrt_kernels::error_string(err));
  cuda_check(cudaEventRecord(done.get(), stream.get()), "cudaEventRecord");

  cuda_check(cudaEventSynchronize(prefetched.get()), "cudaEventSynchronize (prefetch)");
  out->t_prefetch = seconds_since(t0);
  out->after_prefetch = umrt::runtime::stats();
  if (int err = umrt_kernels::sync(s))  // the kernel's own errors show up here
    throw std::runtime_error(std::string("vector_add kernel: ") + umrt_kernels::error_string(err));
  float ms = 0;
  cuda_check(cudaEventElapsedTime(&ms, prefetched.get(), done.get()), "cudaEventElapsedTime");
  out->t_kernel = ms / 1e3;
  out->after_kernel = umrt::runtime::stats();
  out->kernel_label = "3 kernel c = a + b (GPU events)";
  if (!on_device({&a, &b, &c})) {
    std::fprintf(stderr, "vector_add: a page is not on the device after umrt_prefetch and the "
                 "kernel\n");
    return 1;
  }
  return 0;
}
#endif

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
    if (!std::strcmp(arg, "--n") && sample::parse_size(val, &n)) {
      ++i;
    } else if (!std::strcmp(arg, "--threads") && sample::parse_size(val, &threads) && threads <= 1024) {
      ++i;
    } else {
      usage(argv[0]);
      return std::strcmp(arg, "--help") && std::strcmp(arg, "-h") ? 2 : 0;
    }
  }
  const unsigned nthreads = static_cast<unsigned>(threads);
  const uint64_t bytes = n * sizeof(float);

  try {
    // Configuration: defaults + UMRT_* environment.
    umrt_config cfg{};
    umrt::check(umrt_config_defaults(&cfg), "umrt_config_defaults");
    const bool cuda_requested = cfg.backend == UMRT_BACKEND_CUDA;
#if !VECTOR_ADD_GPU
    // Without the GPU path the kernel is host threads, which only the sim backend can run.
    if (cuda_requested) {
      std::fprintf(stderr, "vector_add: UMRT_BACKEND=cuda, but this sample was built without "
                   "CUDA (no GPU kernel in it); rebuild it with the CUDA toolkit, or use "
                   "UMRT_BACKEND=sim\n");
      return 2;
    }
    if (cfg.backend == UMRT_BACKEND_DEFAULT || cfg.backend == UMRT_BACKEND_AUTO)
      cfg.backend = UMRT_BACKEND_SIM;
#endif
    std::optional<umrt::runtime> rt;  // umrt_init; umrt_shutdown when it goes out of scope
    try {
      rt.emplace(cfg);
    } catch (const umrt::error &e) {
      if (cuda_requested && e.status() == UMRT_ERROR_NO_DEVICE) {
        std::fprintf(stderr, "vector_add: SKIP: UMRT_BACKEND=cuda but no GPU is usable: %s\n",
                     e.what());
        return 77;
      }
      throw;
    }

    const char *backend = umrt_backend_name();
    if (!backend) umrt::check(UMRT_ERROR_NO_DEVICE, "umrt_backend_name");
    const bool on_gpu = VECTOR_ADD_GPU && std::strcmp(backend, "cuda") == 0;
    std::printf("umrt vector_add: backend %s, n = %llu floats (%.1f MiB per array, %.1f MiB in "
                "all), %u threads%s\n",
                backend, static_cast<unsigned long long>(n), mib(bytes), mib(3 * bytes),
                nthreads, on_gpu ? " (kernel on the GPU)" : "");
    if (!on_gpu && std::strcmp(backend, "sim") != 0) {
      std::fprintf(stderr, "vector_add: no kernel for backend %s in this build; use "
                   "UMRT_BACKEND=sim%s\n", backend, VECTOR_ADD_GPU ? " or cuda" : "");
      return 2;
    }

#if VECTOR_ADD_GPU
    // The stream the GPU path prefetches and runs the kernel on; it lives until after the
    // buffers are freed (declared before them).
    std::optional<cuda_stream> stream;
    if (on_gpu) stream.emplace();
#endif

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

    // 2. Prefetch a, b, c to the device and 3. run the kernel c = a + b there.
    device_phase dev;
#if VECTOR_ADD_GPU
    const int rc = on_gpu ? run_on_gpu(a, b, c, n, *stream, &dev)
                          : run_on_sim(a, b, c, n, nthreads, &dev);
#else
    const int rc = run_on_sim(a, b, c, n, nthreads, &dev);
#endif
    if (rc != 0) return rc;
    const double t_prefetch = dev.t_prefetch, t_kernel = dev.t_kernel;
    const umrt_stats s2 = dev.after_prefetch, s3 = dev.after_kernel;

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
                dev.kernel_label, t_kernel * 1e3, mib(3 * bytes),
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
