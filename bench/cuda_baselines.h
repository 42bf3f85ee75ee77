// cuda_baselines.h — the GPU limit and peers umrt-bench measures umrt against when the cuda
// backend is in use, written against the CUDA runtime API only (no umrt inside):
//
//   PinnedCopy    raw cudaMemcpyAsync between pinned host memory (cudaHostAlloc) and cudaMalloc
//                 memory, one call per direction: the limit of `prefetch`, each way.
//   Managed       cudaMallocManaged memory moved with cudaMemPrefetchAsync: the peer of
//                 `prefetch` (each way), of `fault-seq`/`fault-rand` (pages prefetched to the GPU,
//                 then read by CPU threads) and of `oversub` (with and without a prefetch per
//                 chunk).
//   Ballast       cudaMalloc memory held so that only a given amount of the GPU stays free: the
//                 oversub peers then see the same device memory capacity as umrt.
//   Stream, KernelTimer  a CUDA stream and event pairs timing the work between them.
//
// No CUDA type appears here (streams are `void *` holding a cudaStream_t, as in umrt.h and
// kernels/umrt_kernels.h), so umrt_bench.cpp needs no CUDA header. Built only when the build has
// CUDA (UMRT_BENCH_CUDA). Nothing throws: failures come back as nullptr / false / a negative time
// with `why` holding the call that failed and the CUDA error text.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace bench::gpu {

// The device the baselines run on (the current CUDA device, 0 unless changed) and what it is.
struct DeviceInfo {
  bool ok = false;
  std::string error;  // when !ok
  int ordinal = 0;
  std::string name;
  uint64_t total_memory = 0, free_memory = 0;
  int cc_major = 0, cc_minor = 0;
  int concurrent_managed_access = 0;  // needed by cudaMemPrefetchAsync to the GPU
  int pci_domain = 0, pci_bus = 0, pci_device = 0;
  int driver_version = 0, runtime_version = 0;  // CUDA's encoding, e.g. 13000
};
DeviceInfo device_info();

// A non-blocking CUDA stream on the current device.
class Stream {
 public:
  static std::unique_ptr<Stream> create(std::string &why);
  ~Stream();
  Stream(const Stream &) = delete;
  Stream &operator=(const Stream &) = delete;
  void *get() const { return s_; }
  // cudaStreamSynchronize; false and `why` on failure (an error of earlier work included).
  bool sync(std::string &why);

 private:
  Stream() = default;
  void *s_ = nullptr;
};

// Pinned host buffer and device buffer of `bytes` each; the host side holds a fill pattern.
class PinnedCopy {
 public:
  static std::unique_ptr<PinnedCopy> create(size_t bytes, std::string &why);
  ~PinnedCopy();
  PinnedCopy(const PinnedCopy &) = delete;
  PinnedCopy &operator=(const PinnedCopy &) = delete;
  // Seconds for one cudaMemcpyAsync of every byte and the stream synchronisation after it
  // (wall clock, as umrt's synchronous prefetch is timed); negative and `why` on failure.
  double h2d(std::string &why);
  double d2h(std::string &why);
  // After a round trip: clears the host buffer, copies the device buffer back and checks the
  // pattern. False with `why` on a CUDA failure or wrong data.
  bool exact(std::string &why);

 private:
  PinnedCopy() = default;
  double timed(bool to_device, std::string &why);
  size_t bytes_ = 0;
  char *host_ = nullptr;
  void *dev_ = nullptr;
  std::unique_ptr<Stream> stream_;
};

// cudaMallocManaged memory of `bytes` (populated by the caller, e.g. with memset on the CPU).
class Managed {
 public:
  static std::unique_ptr<Managed> create(size_t bytes, std::string &why);
  ~Managed();
  Managed(const Managed &) = delete;
  Managed &operator=(const Managed &) = delete;
  char *data() const { return p_; }
  size_t size() const { return bytes_; }
  // Enqueues cudaMemPrefetchAsync of [off, off + len) to the device (or the host) on `stream`
  // (nullptr: the legacy default stream). False and `why` on failure.
  bool prefetch(size_t off, size_t len, bool to_device, void *stream, std::string &why);

 private:
  Managed() = default;
  char *p_ = nullptr;
  size_t bytes_ = 0;
  int dev_ = 0;
};

// Holds cudaMalloc memory so that at most `leave_free` bytes of the GPU stay free (nothing is
// held when less than that is free already). Freed on destruction.
class Ballast {
 public:
  static std::unique_ptr<Ballast> leave_free(uint64_t leave_free, std::string &why);
  ~Ballast();
  Ballast(const Ballast &) = delete;
  Ballast &operator=(const Ballast &) = delete;
  uint64_t held() const { return held_; }
  uint64_t free_before() const { return free_before_; }
  uint64_t free_after() const { return free_after_; }

 private:
  Ballast() = default;
  std::vector<void *> blocks_;
  uint64_t held_ = 0, free_before_ = 0, free_after_ = 0;
};

// Event pairs around pieces of stream work (e.g. each kernel of a rep); total() after the stream
// has been synchronised sums their elapsed times. Events are created on first use and reused
// after reset().
class KernelTimer {
 public:
  KernelTimer() = default;
  ~KernelTimer();
  KernelTimer(const KernelTimer &) = delete;
  KernelTimer &operator=(const KernelTimer &) = delete;
  bool begin(void *stream, std::string &why);
  bool end(void *stream, std::string &why);
  // Seconds between every begin/end pair recorded since reset(); negative and `why` on failure.
  double total(std::string &why);
  void reset() { used_ = 0; }

 private:
  std::vector<void *> events_;  // start, stop, start, stop, ...
  size_t used_ = 0;
};

}  // namespace bench::gpu
