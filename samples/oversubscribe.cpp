// oversubscribe — a STREAM-like triad a = b + s * c over a working set larger than device memory.
// The arrays are processed chunk by chunk: prefetch the chunk's b, c and a to the device, run the
// triad there through device pointers, move on. Nothing is ever freed or prefetched back by hand:
// when device memory is full, umrt evicts the least recently used blocks (older chunks) to the
// host by itself. At the end the CPU checks every element (device-resident chunks fault back)
// and the sample prints the evictions and the rates.
//
// The triad depends on the backend (umrt_backend_name()):
// - cuda: the real GPU kernel umrt_kernels::triad (kernels/) on a cudaStream_t the sample
//   creates; each chunk is prefetched with umrt_prefetch(..., UMRT_LOCATION_DEVICE, stream) and
//   the kernel is queued right behind it on that stream. The sample waits for each chunk's kernel
//   before the next chunk, so that the table can split prefetch and kernel time.
// - sim: host threads over umrt_device_pointer() addresses (the sim backend's device memory is
//   host-addressable), after synchronous prefetches.
// The GPU path is compiled in when the sample is built with CUDA (UMRT_SAMPLES_CUDA, set by
// samples/CMakeLists.txt with umrt::kernels); then the backend is whatever UMRT_BACKEND picks
// (auto: cuda when a GPU is usable, else sim). Built without CUDA the sample asks for the sim
// backend unless UMRT_BACKEND names another, and refuses UMRT_BACKEND=cuda.
//
//   oversubscribe [--device-memory BYTES] [--size BYTES] [--chunk BYTES] [--threads T]
//     --device-memory  device capacity to configure (default 256M, also on a GPU)
//     --size           working set, all three arrays (default 3x the reported capacity)
//     --chunk          bytes of each array per step (default 32M)
//
// Exit status: 0 success, 1 a wrong element or no eviction happened, 2 a umrt or CUDA error (or
// bad arguments), 77 skipped: UMRT_BACKEND=cuda was asked for and no GPU is usable (the reason on
// stderr).
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
#define OVERSUBSCRIBE_GPU 1
#else
#define OVERSUBSCRIBE_GPU 0
#endif

namespace {

using sample::gbps;
using sample::mib;

using clock_type = std::chrono::steady_clock;

double seconds_since(clock_type::time_point t0) {
  return std::chrono::duration<double>(clock_type::now() - t0).count();
}

constexpr float kScalar = 3.0f;
// Small integers, so b + s * c is exact in float and a can be checked without reading b or c.
inline float b_value(std::size_t i) { return static_cast<float>(i & 1023); }
inline float c_value(std::size_t i) { return static_cast<float>((i >> 10) & 511); }

// Runs body(first, last) on `threads` threads over [first, last), split at page boundaries.
template <typename Body>
void parallel_for(std::size_t first, std::size_t last, unsigned threads, Body body) {
  constexpr std::size_t align = 4096 / sizeof(float);
  std::size_t per = (last - first + threads - 1) / threads;
  per = (per + align - 1) / align * align;
  std::vector<std::thread> pool;
  for (std::size_t f = first; f < last; f += per)
    pool.emplace_back(body, f, std::min(last, f + per));
  for (std::thread &t : pool) t.join();
}

// Seconds spent in the chunk loop's two phases, summed over the chunks.
struct loop_times {
  double prefetch = 0, kernel = 0;
};

// True when the first and last page of elements [first, first + count) of every buffer is on the
// device; else says which chunk is not.
bool chunk_on_device(std::initializer_list<const umrt::buffer<float> *> bufs, std::size_t first,
                     std::size_t count) {
  for (const umrt::buffer<float> *buf : bufs) {
    if (buf->where(first) != umrt::location::device ||
        buf->where(first + count - 1) != umrt::location::device) {
      std::fprintf(stderr, "oversubscribe: chunk at element %zu is not on the device after "
                   "umrt_prefetch\n", first);
      return false;
    }
  }
  return true;
}

// One chunk on the sim backend: synchronous prefetches, then the triad as host threads over the
// chunk's device addresses. Returns 1 when the chunk is not on the device, else 0.
int chunk_on_sim(const umrt::buffer<float> &a, const umrt::buffer<float> &b,
                 const umrt::buffer<float> &c, std::size_t first, std::size_t count,
                 unsigned nthreads, loop_times *t) {
  // Stage the chunk on the device; when device memory runs out umrt evicts older chunks.
  auto t0 = clock_type::now();
  b.prefetch(umrt::location::device, first, count);
  c.prefetch(umrt::location::device, first, count);
  a.prefetch(umrt::location::device, first, count);
  t->prefetch += seconds_since(t0);
  if (!chunk_on_device({&a, &b, &c}, first, count)) return 1;
  // The triad on the device: device addresses of this chunk (valid while it is resident).
  float *da = a.device_data(first);
  const float *db = b.device_data(first);
  const float *dc = c.device_data(first);
  t0 = clock_type::now();
  parallel_for(0, count, nthreads, [&](std::size_t f, std::size_t l) {
    for (std::size_t i = f; i < l; ++i) da[i] = db[i] + kScalar * dc[i];
  });
  t->kernel += seconds_since(t0);
  return 0;
}

#if OVERSUBSCRIBE_GPU
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
      std::fprintf(stderr, "oversubscribe: cudaStreamDestroy: %s\n", cudaGetErrorString(err));
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
      std::fprintf(stderr, "oversubscribe: cudaEventDestroy: %s\n", cudaGetErrorString(err));
  }
  cuda_event(const cuda_event &) = delete;
  cuda_event &operator=(const cuda_event &) = delete;
  cudaEvent_t get() const { return e_; }

 private:
  cudaEvent_t e_ = nullptr;
};

// What the GPU path runs on: one stream, and events around each chunk's kernel.
struct gpu_context {
  cuda_stream stream;
  cuda_event prefetched, done;
};

// One chunk on the GPU: the prefetches and the triad kernel queued on one stream, in that order.
// The host waits for the chunk's kernel before returning (to time the phases); the prefetch phase
// ends when the stream passes the event after the prefetches, the kernel time is GPU time between
// the two events. Returns 1 when the chunk is not on the device after its kernel, else 0; throws
// on an error.
int chunk_on_gpu(const umrt::buffer<float> &a, const umrt::buffer<float> &b,
                 const umrt::buffer<float> &c, std::size_t first, std::size_t count,
                 const gpu_context &gpu, loop_times *t) {
  void *s = gpu.stream.get();
  // Stage the chunk on the device, ordered on the stream; when device memory runs out umrt
  // evicts older chunks.
  const auto t0 = clock_type::now();
  b.prefetch(umrt::location::device, first, count, s);
  c.prefetch(umrt::location::device, first, count, s);
  a.prefetch(umrt::location::device, first, count, s);
  cuda_check(cudaEventRecord(gpu.prefetched.get(), gpu.stream.get()), "cudaEventRecord");
  // The triad kernel on the chunk's device addresses, behind the prefetches on the same stream.
  if (int err = umrt_kernels::triad(a.device_data(first), b.device_data(first),
                                    c.device_data(first), kScalar, count, s))
    throw std::runtime_error(std::string("triad kernel launch: ") +
                             umrt_kernels::error_string(err));
  cuda_check(cudaEventRecord(gpu.done.get(), gpu.stream.get()), "cudaEventRecord");

  cuda_check(cudaEventSynchronize(gpu.prefetched.get()), "cudaEventSynchronize (prefetch)");
  t->prefetch += seconds_since(t0);
  if (int err = umrt_kernels::sync(s))  // the kernel's own errors show up here
    throw std::runtime_error(std::string("triad kernel: ") + umrt_kernels::error_string(err));
  float ms = 0;
  cuda_check(cudaEventElapsedTime(&ms, gpu.prefetched.get(), gpu.done.get()),
             "cudaEventElapsedTime");
  t->kernel += ms / 1e3;
  return chunk_on_device({&a, &b, &c}, first, count) ? 0 : 1;
}
#endif

void usage(const char *argv0) {
  std::fprintf(stderr,
               "usage: %s [--device-memory BYTES] [--size BYTES] [--chunk BYTES] [--threads T]\n"
               "  --device-memory  device capacity (default 256M)\n"
               "  --size           working set of the three arrays (default 3x the capacity)\n"
               "  --chunk          bytes of each array per step (default 32M)\n"
               "  --threads        host threads (default: all cores)\n",
               argv0);
}

}  // namespace

int main(int argc, char **argv) {
  std::setvbuf(stdout, nullptr, _IOLBF, 0);  // progress shows even when piped
  uint64_t device_memory = 256ull << 20;
  uint64_t size = 0;
  uint64_t chunk_bytes = 32ull << 20;
  uint64_t threads = std::max(1u, std::thread::hardware_concurrency());
  for (int i = 1; i < argc; ++i) {
    const char *arg = argv[i];
    const char *val = i + 1 < argc ? argv[i + 1] : nullptr;
    if (!std::strcmp(arg, "--device-memory") && sample::parse_size(val, &device_memory)) {
      ++i;
    } else if (!std::strcmp(arg, "--size") && sample::parse_size(val, &size)) {
      ++i;
    } else if (!std::strcmp(arg, "--chunk") && sample::parse_size(val, &chunk_bytes)) {
      ++i;
    } else if (!std::strcmp(arg, "--threads") && sample::parse_size(val, &threads) && threads <= 1024) {
      ++i;
    } else {
      usage(argv[0]);
      return std::strcmp(arg, "--help") && std::strcmp(arg, "-h") ? 2 : 0;
    }
  }
  const unsigned nthreads = static_cast<unsigned>(threads);

  try {
    umrt_config cfg{};
    umrt::check(umrt_config_defaults(&cfg), "umrt_config_defaults");
    const bool cuda_requested = cfg.backend == UMRT_BACKEND_CUDA;
#if !OVERSUBSCRIBE_GPU
    // Without the GPU path the triad is host threads, which only the sim backend can run.
    if (cuda_requested) {
      std::fprintf(stderr, "oversubscribe: UMRT_BACKEND=cuda, but this sample was built without "
                   "CUDA (no GPU kernel in it); rebuild it with the CUDA toolkit, or use "
                   "UMRT_BACKEND=sim\n");
      return 2;
    }
    if (cfg.backend == UMRT_BACKEND_DEFAULT || cfg.backend == UMRT_BACKEND_AUTO)
      cfg.backend = UMRT_BACKEND_SIM;
#endif
    cfg.device_memory = device_memory;
    std::optional<umrt::runtime> rt;  // umrt_init; umrt_shutdown when it goes out of scope
    try {
      rt.emplace(cfg);
    } catch (const umrt::error &e) {
      if (cuda_requested && e.status() == UMRT_ERROR_NO_DEVICE) {
        std::fprintf(stderr, "oversubscribe: SKIP: UMRT_BACKEND=cuda but no GPU is usable: %s\n",
                     e.what());
        return 77;
      }
      throw;
    }

    const char *backend = umrt_backend_name();
    if (!backend) umrt::check(UMRT_ERROR_NO_DEVICE, "umrt_backend_name");
    const bool on_gpu = OVERSUBSCRIBE_GPU && std::strcmp(backend, "cuda") == 0;
    if (!on_gpu && std::strcmp(backend, "sim") != 0) {
      std::fprintf(stderr, "oversubscribe: no triad for backend %s in this build; use "
                   "UMRT_BACKEND=sim%s\n", backend, OVERSUBSCRIBE_GPU ? " or cuda" : "");
      return 2;
    }

    const uint64_t capacity = umrt::runtime::stats().device_capacity;
    if (capacity == 0) {
      std::fprintf(stderr, "oversubscribe: umrt_get_stats() reports a device capacity of 0\n");
      return 2;
    }
    if (size == 0) size = 3 * capacity;
    // Per array: a third of the working set, whole pages. Per chunk: at most a quarter of the
    // capacity (three arrays' chunks must fit on the device at once), whole 2 MiB blocks when
    // possible so that chunks do not share blocks.
    const uint64_t array_bytes = size / 3 / 4096 * 4096;
    if (array_bytes == 0) {
      usage(argv[0]);
      return 2;
    }
    uint64_t max_chunk = capacity / 4;
    max_chunk = max_chunk >= (2u << 20) ? max_chunk / (2u << 20) * (2u << 20)
                                        : std::max<uint64_t>(4096, max_chunk / 4096 * 4096);
    chunk_bytes = std::min({chunk_bytes, max_chunk, array_bytes});
    chunk_bytes = std::max<uint64_t>(4096, chunk_bytes / 4096 * 4096);
    const std::size_t n = array_bytes / sizeof(float);
    const std::size_t chunk = chunk_bytes / sizeof(float);

    std::printf("umrt oversubscribe: backend %s, device capacity %.1f MiB, working set %.1f MiB "
                "(3 arrays of %.1f MiB = %.2fx capacity), chunk %.1f MiB per array, %u "
                "threads%s\n",
                backend, mib(capacity), mib(3 * array_bytes), mib(array_bytes),
                3.0 * static_cast<double>(array_bytes) / static_cast<double>(capacity),
                mib(chunk_bytes), nthreads, on_gpu ? " (triad on the GPU)" : "");

#if OVERSUBSCRIBE_GPU
    // The GPU path's stream and events; they live until after the buffers are freed.
    std::optional<gpu_context> gpu;
    if (on_gpu) gpu.emplace();
#endif
    umrt::buffer<float> a(n), b(n), c(n);

    // b and c start on the CPU (first touch); a is never touched by the CPU before the triad,
    // so its pages become zero-filled device pages when prefetched.
    auto t0 = clock_type::now();
    parallel_for(0, n, nthreads, [&](std::size_t first, std::size_t last) {
      for (std::size_t i = first; i < last; ++i) {
        b[i] = b_value(i);
        c[i] = c_value(i);
      }
    });
    const double t_init = seconds_since(t0);
    const umrt_stats s0 = umrt::runtime::stats();

    loop_times loop;
    const auto t_loop = clock_type::now();
    for (std::size_t first = 0; first < n; first += chunk) {
      const std::size_t count = std::min(chunk, n - first);
#if OVERSUBSCRIBE_GPU
      const int rc = on_gpu ? chunk_on_gpu(a, b, c, first, count, *gpu, &loop)
                            : chunk_on_sim(a, b, c, first, count, nthreads, &loop);
#else
      const int rc = chunk_on_sim(a, b, c, first, count, nthreads, &loop);
#endif
      if (rc != 0) return rc;
    }
    const double t_total = seconds_since(t_loop);
    const double t_prefetch = loop.prefetch, t_kernel = loop.kernel;
    const umrt_stats s1 = umrt::runtime::stats();

    // Check every element of a on the CPU: evicted chunks are already home, the chunks still on
    // the device fault back.
    std::atomic<uint64_t> wrong{0};
    std::atomic<uint64_t> first_wrong{UINT64_MAX};
    t0 = clock_type::now();
    parallel_for(0, n, nthreads, [&](std::size_t first, std::size_t last) {
      uint64_t bad = 0;
      for (std::size_t i = first; i < last; ++i) {
        if (a[i] != b_value(i) + kScalar * c_value(i) && bad++ == 0) {
          uint64_t cur = first_wrong.load();
          while (i < cur && !first_wrong.compare_exchange_weak(cur, i)) {
          }
        }
      }
      wrong += bad;
    });
    const double t_check = seconds_since(t0);
    const umrt_stats s2 = umrt::runtime::stats();

    const uint64_t triad_bytes = 3 * array_bytes;  // read b, c; write a
    const uint64_t moved = (s1.bytes_to_device - s0.bytes_to_device) +
                           (s1.bytes_to_host - s0.bytes_to_host);
    std::printf("\n%-40s %10s %12s %10s\n", "phase", "time ms", "MiB", "GB/s");
    std::printf("%-40s %10.1f %12.1f %10.2f\n", "first touch b, c on CPU", t_init * 1e3,
                mib(2 * array_bytes), gbps(2 * array_bytes, t_init));
    std::printf("%-40s %10.1f %12.1f %10.2f   to device %.1f MiB, evicted to host %.1f MiB\n",
                "prefetch chunks (with evictions)", t_prefetch * 1e3, mib(moved),
                gbps(moved, t_prefetch), mib(s1.bytes_to_device - s0.bytes_to_device),
                mib(s1.bytes_to_host - s0.bytes_to_host));
    std::printf("%-40s %10.1f %12.1f %10.2f\n",
                on_gpu ? "triad on GPU (kernel time, events)"
                       : "triad on device (kernel time only)",
                t_kernel * 1e3, mib(triad_bytes), gbps(triad_bytes, t_kernel));
    std::printf("%-40s %10.1f %12.1f %10.2f\n", "triad end to end (prefetch + kernel)",
                t_total * 1e3, mib(triad_bytes), gbps(triad_bytes, t_total));
    std::printf("%-40s %10.1f %12.1f %10.2f   copied to host; %llu faults\n",
                "check a on CPU (fault back)", t_check * 1e3,
                mib(s2.bytes_to_host - s1.bytes_to_host),
                gbps(s2.bytes_to_host - s1.bytes_to_host, t_check),
                static_cast<unsigned long long>(s2.cpu_faults - s1.cpu_faults));
    std::printf("\numrt_get_stats: evictions %llu (blocks), bytes_to_device %llu, bytes_to_host "
                "%llu, cpu_faults %llu, batches %llu, device in use %.1f of %.1f MiB\n",
                static_cast<unsigned long long>(s2.evictions),
                static_cast<unsigned long long>(s2.bytes_to_device),
                static_cast<unsigned long long>(s2.bytes_to_host),
                static_cast<unsigned long long>(s2.cpu_faults),
                static_cast<unsigned long long>(s2.batches), mib(s2.device_bytes_in_use),
                mib(s2.device_capacity));

    if (wrong.load() != 0) {
      const uint64_t i = first_wrong.load();
      std::fprintf(stderr, "oversubscribe: FAILED: %llu wrong elements; first a[%llu] = %g, "
                   "expected %g\n",
                   static_cast<unsigned long long>(wrong.load()),
                   static_cast<unsigned long long>(i), static_cast<double>(a[i]),
                   static_cast<double>(b_value(i) + kScalar * c_value(i)));
      return 1;
    }
    if (3 * array_bytes > capacity && s1.evictions == s0.evictions) {
      std::fprintf(stderr, "oversubscribe: FAILED: the working set exceeds device memory but "
                   "nothing was evicted\n");
      return 1;
    }
    std::printf("oversubscribe: all %zu elements correct\n", n);
    return 0;
  } catch (const umrt::error &e) {
    std::fprintf(stderr, "oversubscribe: umrt error: %s\n", e.what());
    if (e.status() == UMRT_ERROR_NOT_SUPPORTED)
      std::fprintf(stderr, "oversubscribe: umrt needs userfaultfd with write-protect (Linux >= "
                   "5.7) and root, access to /dev/userfaultfd or vm.unprivileged_userfaultfd=1\n");
    return 2;
  } catch (const std::exception &e) {
    std::fprintf(stderr, "oversubscribe: error: %s\n", e.what());
    return 2;
  }
}
