// backend.h — the one device interface every backend implements (sim, later cuda).
//
// Shape after RAPIDS rmm: public non-virtual functions check arguments and trace, then call the
// private virtual do_* hooks. Device memory is handed out by DevMem in 2 MiB chunks identified
// by a chunk index; a backend maps a chunk into a device window (one VA reservation per range
// or pack) so device addresses are linear over an allocation. All calls return 0 or -errno.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>

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
};

// Called by the backend for each D2H op once its bytes are readable at `staged` (host memory):
// maps them at op.host; returns 0 or -errno and sets op.done.
struct Installer {
  virtual int install(CopyOp &op, const void *staged) = 0;
 protected:
  ~Installer() = default;
};

enum class InjectKind { alloc = 1, copy = 2 };

class Backend {
 public:
  virtual ~Backend() = default;

  const char *name() const { return do_name(); }
  uint64_t capacity() const { return do_capacity(); }  // bytes of device memory, chunk multiple

  int window_create(size_t bytes, DevWindow *w);
  void window_destroy(DevWindow *w);
  int chunk_map(DevWindow *w, size_t offset, uint32_t chunk);
  int chunk_unmap(DevWindow *w, size_t offset);
  void chunk_release(uint32_t chunk) { do_chunk_release(chunk); }  // give physical memory back

  // A batch allocates its destination frames (fault injection point "alloc").
  int frames_alloc(size_t npages) { return do_frames_alloc(npages); }
  // Run every op (in parallel where the backend can); per-op status in ops[i].status.
  // Returns 0 when all succeeded, else the first error.
  int transfer(CopyOp *ops, size_t n, Installer *inst);
  // Make device-resident data stable: wait for device work that may still write it.
  int device_sync() { return do_device_sync(); }
  int inject(InjectKind k, uint64_t nth, uint64_t count) { return do_inject(k, nth, count); }

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
  virtual int do_inject(InjectKind k, uint64_t nth, uint64_t count) = 0;
};

struct SimOptions {
  uint64_t capacity;
  unsigned engines;
  double bandwidth_gbps;  // per engine, 0 = unlimited
  unsigned latency_us;
};
// Create the simulated device. Returns nullptr with *err set on failure.
std::unique_ptr<Backend> make_sim_backend(const SimOptions &o, int *err);

}  // namespace umrt::rt
