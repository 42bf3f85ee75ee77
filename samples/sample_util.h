// sample_util.h — what every umrt sample needs and no reader needs to see: "--name value"
// arguments with K/M/G sizes, timing, GB/s, a phase table and the umrt_get_stats() line, host
// threads over an index range, the choice between the GPU kernel and its host stand-in, CUDA
// checks, and errors turned into a message and exit status 2. Header-only; C++20.
//
// The GPU path (SAMPLE_GPU) is compiled in when the sample is built with CUDA (UMRT_SAMPLES_CUDA,
// set by samples/CMakeLists.txt with umrt::kernels); the backend is then whatever UMRT_BACKEND
// picks (auto: cuda when a GPU is usable, else sim). Built without CUDA a sample asks for the sim
// backend unless UMRT_BACKEND names another, and refuses UMRT_BACKEND=cuda.
#pragma once

#include <umrt/umrt.h>
#include <umrt/umrt.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <initializer_list>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#if defined(UMRT_SAMPLES_CUDA) && UMRT_SAMPLES_CUDA
#include <cuda_runtime.h>
#include <umrt_kernels.h>
#define SAMPLE_GPU 1
#else
#define SAMPLE_GPU 0
#endif

namespace sample {

inline const char *prog = "sample";  // the program's name in messages (set by Args)
using ull = unsigned long long;       // for printing uint64_t counters with %llu

using clock_type = std::chrono::steady_clock;
inline double seconds_since(clock_type::time_point t0) {
  return std::chrono::duration<double>(clock_type::now() - t0).count();
}
inline double mib(uint64_t bytes) { return static_cast<double>(bytes) / (1024.0 * 1024.0); }
inline double gbps(uint64_t bytes, double s) { return s > 0 ? static_cast<double>(bytes) / s / 1e9 : 0; }

// "64M" -> 64 * 2^20 (K/M/G binary). False on anything else, 0 included.
inline bool parse_size(const char *s, uint64_t *out) {
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

// Arguments "--name value ..."; unknown names or bad values: usage and exit 2; --help or -h:
// usage and exit 0. Also makes stdout line-buffered (progress shows even when piped).
struct Args {
  int argc;
  char **argv;
  const char *usage;
  Args(int c, char **v, const char *u) : argc(c), argv(v), usage(u) {
    const char *slash = std::strrchr(argv[0], '/');
    prog = slash ? slash + 1 : argv[0];
    std::setvbuf(stdout, nullptr, _IOLBF, 0);
  }
  [[noreturn]] void bad(const char *what) const {
    std::fprintf(stderr, "%s: %s\nusage: %s %s\n", argv[0], what, argv[0], usage);
    std::exit(2);
  }
  // The value after --name, or nullptr; every argument must be a known "--name value" pair.
  const char *get(const char *name) const {
    for (int i = 1; i + 1 < argc; i += 2)
      if (std::strcmp(argv[i] + 2, name) == 0 && std::strncmp(argv[i], "--", 2) == 0) return argv[i + 1];
    return nullptr;
  }
  uint64_t size(const char *name, uint64_t def, uint64_t max = UINT64_MAX) const {
    const char *v = get(name);
    uint64_t out = def;
    if (v && (!parse_size(v, &out) || out > max))
      bad((std::string("--") + name + ": not a size like 64M" +
           (max < UINT64_MAX ? ", at most " + std::to_string(max) : "")).c_str());
    return out;
  }
  // --threads T: host threads (default: all cores, at most 1024).
  unsigned threads() const {
    return static_cast<unsigned>(size("threads", std::max(1u, std::thread::hardware_concurrency()), 1024));
  }
  void check_known(std::initializer_list<const char *> names) const {
    if (argc == 2 && (!std::strcmp(argv[1], "--help") || !std::strcmp(argv[1], "-h")))
      std::printf("usage: %s %s\n", argv[0], usage), std::exit(0);
    if (argc % 2 == 0) bad("arguments come in --name value pairs");
    for (int i = 1; i < argc; i += 2) {
      bool ok = false;
      for (const char *n : names) ok = ok || (std::strncmp(argv[i], "--", 2) == 0 && std::strcmp(argv[i] + 2, n) == 0);
      if (!ok) bad((std::string("unknown argument ") + argv[i]).c_str());
    }
  }
};

// A umrt call that must work: on failure, its status and umrt_last_error(), exit 2.
inline void check(umrt_status s, const char *what) {
  if (s == UMRT_SUCCESS) return;
  std::fprintf(stderr, "%s: %s (%s)\n", what, umrt_status_string(s), umrt_last_error());
  std::exit(2);
}

inline umrt_stats stats() {
  umrt_stats s{};
  check(umrt_get_stats(&s), "umrt_get_stats");
  return s;
}

// The phase table: a phase, its time, the bytes it moved or touched, their rate, a note.
inline void table_header() { std::printf("\n%-40s %10s %12s %10s\n", "phase", "time ms", "MiB", "GB/s"); }
__attribute__((format(printf, 4, 5))) inline void row(const char *phase, double s, uint64_t bytes,
                                                      const char *note, ...) {
  std::printf("%-40s %10.1f %12.1f %10.2f   ", phase, s * 1e3, mib(bytes), gbps(bytes, s));
  va_list ap;
  va_start(ap, note);
  std::vprintf(note, ap);
  va_end(ap);
  std::printf("\n");
}
// The totals since umrt_init, as the last lines of a sample's report.
inline void print_stats(const umrt_stats &s) {
  std::printf("\numrt_get_stats: bytes_to_device %llu, bytes_to_host %llu, cpu_faults %llu, fault_groups %llu, "
              "zero_fills %llu, evictions %llu (blocks), batches %llu, device in use %.1f of %.1f MiB\n",
              ull(s.bytes_to_device), ull(s.bytes_to_host), ull(s.cpu_faults), ull(s.fault_groups),
              ull(s.zero_fills), ull(s.evictions), ull(s.batches), mib(s.device_bytes_in_use),
              mib(s.device_capacity));
}

// body(i) for i in [0, n) on `threads` threads, split at multiples of `grain` elements (e.g. a
// 2 MiB block's worth, so that two threads do not fault on the same block).
template <typename Body>
void parallel_for(std::size_t n, unsigned threads, std::size_t grain, Body body) {
  const std::size_t per = ((n + threads - 1) / threads + grain - 1) / grain * grain;
  std::vector<std::thread> pool;
  for (std::size_t first = 0; first < n; first += per) {
    const std::size_t last = std::min(n, first + per);
    pool.emplace_back([=] { for (std::size_t i = first; i < last; ++i) body(i); });
  }
  for (std::thread &t : pool) t.join();
}

// The configuration: defaults + UMRT_* environment. Built without CUDA the kernels are host
// threads, which only the sim backend runs: sim unless UMRT_BACKEND names one; cuda refused.
inline umrt_config config() {
  umrt_config cfg{};
  umrt::check(umrt_config_defaults(&cfg), "umrt_config_defaults");
  if (!SAMPLE_GPU && cfg.backend == UMRT_BACKEND_CUDA)
    throw std::runtime_error("UMRT_BACKEND=cuda, but this sample was built without CUDA (no GPU kernel in it); "
                             "rebuild it with the CUDA toolkit, or use UMRT_BACKEND=sim");
  if (!SAMPLE_GPU && (cfg.backend == UMRT_BACKEND_DEFAULT || cfg.backend == UMRT_BACKEND_AUTO))
    cfg.backend = UMRT_BACKEND_SIM;
  return cfg;
}

// umrt_init (umrt::runtime: umrt_shutdown when it goes out of scope). UMRT_BACKEND=cuda with no
// usable GPU: SKIP and exit 77.
inline umrt::runtime start(const umrt_config &cfg) {
  try {
    return umrt::runtime(cfg);
  } catch (const umrt::error &e) {
    if (cfg.backend != UMRT_BACKEND_CUDA || e.status() != UMRT_ERROR_NO_DEVICE) throw;
    std::fprintf(stderr, "%s: SKIP: UMRT_BACKEND=cuda but no GPU is usable: %s\n", prog, e.what());
    std::exit(77);
  }
}

// True when the kernel runs on the GPU (backend cuda in a CUDA build), false when it is host
// threads over device addresses (backend sim: its device memory is host-addressable, as GPU
// memory is to a GPU kernel). Any other backend: an error.
inline bool kernel_on_gpu() {
  const char *backend = umrt_backend_name();
  if (!backend) umrt::check(UMRT_ERROR_NO_DEVICE, "umrt_backend_name");
  const bool gpu = SAMPLE_GPU && std::strcmp(backend, "cuda") == 0;
  if (!gpu && std::strcmp(backend, "sim") != 0)
    throw std::runtime_error(std::string("no kernel for backend ") + backend + " in this build; use UMRT_BACKEND=sim" +
                             (SAMPLE_GPU ? " or cuda" : ""));
  return gpu;
}

// What main's catch returns: the error on stderr, exit status 2.
inline int fail(const std::exception &e) {
  const auto *ue = dynamic_cast<const umrt::error *>(&e);
  std::fprintf(stderr, "%s: %s%s\n", prog, ue ? "umrt error: " : "error: ", e.what());
  if (ue && ue->status() == UMRT_ERROR_NOT_SUPPORTED)
    std::fprintf(stderr, "%s: umrt needs userfaultfd with write-protect (Linux >= 5.7) and root, access to "
                 "/dev/userfaultfd or vm.unprivileged_userfaultfd=1\n", prog);
  return 2;
}

#if SAMPLE_GPU
// A CUDA call or umrt_kernels launch/sync that must work: else an exception (exit status 2).
inline void check_cuda(int err, const char *what) {
  if (err != 0) throw std::runtime_error(std::string(what) + ": " + umrt_kernels::error_string(err));
}
// A cudaStream_t (when on the GPU; else none: get() is nullptr, i.e. synchronous) with two events
// for GPU time: mark(0) and mark(1) record them on the stream, seconds() is the time between.
class Stream {
 public:
  explicit Stream(bool on_gpu) {
    if (!on_gpu) return;
    check_cuda(cudaStreamCreate(&s_), "cudaStreamCreate");
    for (cudaEvent_t &e : e_) check_cuda(cudaEventCreate(&e), "cudaEventCreate");
  }
  ~Stream() {
    if (!s_) return;
    for (cudaEvent_t e : e_) cudaEventDestroy(e);
    if (cudaError_t err = cudaStreamDestroy(s_); err != cudaSuccess)
      std::fprintf(stderr, "%s: cudaStreamDestroy: %s\n", prog, cudaGetErrorString(err));
  }
  Stream(const Stream &) = delete;
  Stream &operator=(const Stream &) = delete;
  void *get() const { return s_; }
  void mark(int i) { check_cuda(cudaEventRecord(e_[i], s_), "cudaEventRecord"); }
  void wait(int i) { check_cuda(cudaEventSynchronize(e_[i]), "cudaEventSynchronize"); }
  double seconds() const {
    float ms = 0;
    check_cuda(cudaEventElapsedTime(&ms, e_[0], e_[1]), "cudaEventElapsedTime");
    return ms / 1e3;
  }

 private:
  cudaStream_t s_ = nullptr;
  cudaEvent_t e_[2] = {};
};
#else
struct Stream {  // no GPU path in this build: no stream, umrt_prefetch synchronous
  explicit Stream(bool) {}
  void *get() const { return nullptr; }
};
#endif

}  // namespace sample
