// backend.h — the one device interface every backend implements (sim, cuda).
//
// Shape after RAPIDS rmm: public non-virtual functions check arguments and trace, then call the
// private virtual do_* hooks. Device memory is handed out by DevMem in 2 MiB chunks identified
// by a chunk index; a backend maps a chunk into a device window (one VA reservation per range
// or pack) so device addresses are linear over an allocation. All calls return 0 or -errno.
#pragma once

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>

#include "common.h"

namespace umrt::rt {

struct DevWindow {
  void *base = nullptr;  // device address of the window's first byte
  size_t bytes = 0;      // a multiple of kBlockSize
};

// One coalesced run to move. H2D: host -> dev. D2H: dev -> host through `install` (which maps
// the staged bytes into the range with UFFDIO_COPY). ZERO: dev is zero-filled (no copy).
struct CopyOp {
  enum Dir : uint8_t { H2D, D2H, ZERO } dir;
  void *host;     // host address in the range (H2D source, D2H destination)
  void *dev;      // device address
  size_t len;
  int status;     // out: 0 or -errno
  size_t done;    // out: bytes completed (D2H: bytes installed)
  // H2D only: `host` lies in memory registered with pin_host() (a staging buffer, never the
  // user's range), so the device DMAs straight from it, with no copy through the backend's own
  // staging. The memory must stay unchanged until transfer() returns.
  bool pinned = false;
};

// Called by the backend for each D2H op once its bytes are readable at `staged` (host memory):
// maps them at op.host; returns 0 or -errno and sets op.done.
struct Installer {
  virtual int install(CopyOp &op, const void *staged) = 0;
 protected:
  ~Installer() = default;
};

enum class InjectKind { alloc = 1, copy = 2, chunk = 3 };

// Fault injection shared by the backends: operations are numbered from 1 after each arm();
// those in [from, from + count) fail.
struct Injector {
  std::mutex m;
  uint64_t seen = 0, from = 0, until = 0;
  // Saturating: nth or count near UINT64_MAX means "from then on, for ever", never a wrap that
  // would make the window empty.
  void arm(uint64_t nth, uint64_t count) {
    std::lock_guard g(m);
    from = nth > UINT64_MAX - seen ? UINT64_MAX : seen + nth;
    until = count > UINT64_MAX - from ? UINT64_MAX : from + count;
  }
  bool hit() {
    std::lock_guard g(m);
    if (seen < UINT64_MAX) ++seen;
    return seen >= from && (seen < until || until == UINT64_MAX);
  }
};

class Backend {
 public:
  virtual ~Backend() = default;

  const char *name() const { return do_name(); }
  uint64_t capacity() const { return do_capacity(); }  // bytes of device memory, chunk multiple

  int window_create(size_t bytes, DevWindow *w);
  void window_destroy(DevWindow *w);
  // fresh: the chunk has no memory yet (never used, or given back): the backend creates it
  // (cuda: cuMemCreate), which fails with -ENOMEM when others took the device's memory.
  int chunk_map(DevWindow *w, size_t offset, uint32_t chunk, bool fresh = false);
  int chunk_unmap(DevWindow *w, size_t offset);
  void chunk_release(uint32_t chunk) { do_chunk_release(chunk); }  // give physical memory back

  // A batch allocates its destination frames (fault injection point "alloc").
  int frames_alloc(size_t npages) { return do_frames_alloc(npages); }
  // Run every op (in parallel where the backend can); per-op status in ops[i].status.
  // Returns 0 when all succeeded, else the first error.
  int transfer(CopyOp *ops, size_t n, Installer *inst);
  // Make device-resident data stable: wait for device work that may still write it.
  int device_sync() { return do_device_sync(); }
  // Wait for the work queued on a user stream (a cudaStream_t on cuda; nullptr: no-op).
  int stream_sync(void *stream) { return stream ? do_stream_sync(stream) : 0; }
  int inject(InjectKind k, uint64_t nth, uint64_t count);
  // Register host memory (page aligned, len a page multiple) so the device can DMA it directly
  // (cuda: cudaHostRegister): 0, or -errno when refused (the memory is then copied as usual).
  // Every registration is undone with unpin_host() before the memory is freed or the backend
  // destroyed.
  int pin_host(void *p, size_t len);
  void unpin_host(void *p) { if (p) do_unpin_host(p); }
  // The device library's own words for the last failure (e.g. a CUDA error string), once: the
  // text is cleared by reading it; "" if none.
  std::string take_error_text() { return do_take_error_text(); }

 private:
  virtual const char *do_name() const = 0;
  virtual uint64_t do_capacity() const = 0;
  virtual int do_window_create(size_t bytes, DevWindow *w) = 0;
  virtual void do_window_destroy(DevWindow *w) = 0;
  virtual int do_chunk_map(DevWindow *w, size_t offset, uint32_t chunk) = 0;
  virtual int do_chunk_unmap(DevWindow *w, size_t offset) = 0;
  virtual void do_chunk_release(uint32_t chunk) = 0;
  virtual int do_frames_alloc(size_t npages) = 0;
  virtual int do_transfer(CopyOp *ops, size_t n, Installer *inst) = 0;
  virtual int do_device_sync() = 0;
  virtual int do_stream_sync(void *stream) = 0;
  virtual int do_inject(InjectKind k, uint64_t nth, uint64_t count) = 0;
  virtual std::string do_take_error_text() { return {}; }
  virtual int do_pin_host(void *, size_t) { return -EOPNOTSUPP; }  // a backend that cannot: copies
  virtual void do_unpin_host(void *) {}
  Injector chunk_inject_;  // InjectKind::chunk, for every backend (backend.cpp)
};

// The two injection points of each backend: frame allocations and copies (chunk creation is
// the Backend's own, the same for every backend).
struct Injectors {
  Injector alloc, copy;
  int arm(InjectKind k, uint64_t nth, uint64_t count) {
    if (nth == 0 || count == 0) return -EINVAL;
    (k == InjectKind::alloc ? alloc : copy).arm(nth, count);
    return 0;
  }
};

// Copy n bytes out of user memory (a host->device source) into dst: 0, or -EFAULT when part of
// the source is no longer readable. The user may munmap(), mremap() or mprotect() a range at any
// moment, also while a copy engine reads it: a vanished page is reported, never a SIGSEGV in a
// umrt thread (user_read.cpp, docs/design.md "Reading user pages"). A page discarded meanwhile
// (MADV_DONTNEED) faults into the fault service like any access. A CPU writer may legitimately
// write a page while it is copied, after cancelling that page's migration (the torn copy is then
// discarded).
int read_user_pages(void *dst, const void *src, size_t n);
// Runtime start/stop: install / remove the SIGSEGV and SIGBUS handler read_user_pages uses.
void user_read_guard_install();
void user_read_guard_remove();

struct SimOptions {
  uint64_t capacity;
  unsigned engines;
  double bandwidth_gbps;  // per engine, 0 = unlimited
  unsigned latency_us;
};
// Create the simulated device. Returns nullptr with *err set on failure.
std::unique_ptr<Backend> make_sim_backend(const SimOptions &o, int *err);
// Sim "kernels" queued asynchronously, for tests that stand in for device work running while
// the CPU faults (tests/test_device_wait.cpp): the sim's device_sync() waits (sleeping) until
// every kernel begun has ended, as cudaDeviceSynchronize waits for every queued kernel.
void sim_kernel_begin();
void sim_kernel_end();
// For tests: bytes the sim copied straight from pinned memory (CopyOp::pinned), and host
// registrations alive now, over every sim backend of the process.
uint64_t sim_pinned_bytes();
int64_t sim_pins_live();

struct CudaOptions {
  uint64_t capacity;  // bytes; 0 = 90% of the GPU's free memory
  unsigned engines;   // copy threads (each with its own stream and staging slots)
};
// Create the CUDA backend on the calling thread's current device. Returns nullptr with *why
// saying what is missing (no driver, no GPU, no virtual memory management, ...). Only defined
// when the library is built with the CUDA toolkit (UMRT_HAVE_CUDA).
std::unique_ptr<Backend> make_cuda_backend(const CudaOptions &o, std::string *why);

}  // namespace umrt::rt
