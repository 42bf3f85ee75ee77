// storage/io_staging.cpp — each thread's I/O staging buffer and its two registrations (see
// io_staging.h): with the thread's ring, and with the running backend's device.
#include "io_staging.h"

#include <atomic>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <vector>

#include "../backend.h"
#include "../common.h"
#include "../threads.h"
#include "ring.h"

namespace umrt::rt {
namespace {

// The buffers registered with the device and the backend they are registered with.
// Invariant: every buffer in `bufs` is registered with `backend` (non-null) and not freed;
// `gen` changes at each open and close, so a thread's "tried under this runtime" goes stale.
struct Pins {
  std::mutex m;
  Backend *backend = nullptr;
  std::atomic<uint64_t> gen{0};
  std::vector<char *> bufs;
};
// Never destroyed: threads may exit (and free their buffers) after static destructors ran.
Pins &pins() {
  static Pins *p = new Pins;
  return *p;
}

// Undo the buffer's device registration, if it has one (a thread's exit, before the free).
void unpin(char *buf) {
  Pins &P = pins();
  AsyncSignalsBlocked nosig;  // the fault service may wait for this lock (device_staging)
  std::lock_guard g(P.m);
  for (size_t i = 0; i < P.bufs.size(); ++i)
    if (P.bufs[i] == buf) {
      P.backend->unpin_host(buf);
      P.bufs[i] = P.bufs.back();
      P.bufs.pop_back();
      return;
    }
}

struct Free {
  void operator()(char *p) const {
    unpin(p);
    std::free(p);
  }
};
thread_local std::unique_ptr<char, Free> t_buf;
thread_local uint64_t t_tried_gen = 0;  // Pins::gen when this thread last tried to pin
thread_local bool t_pinned = false;     // what that try gave

}  // namespace

char *file_staging() {
  if (!t_buf) {
    void *p = nullptr;
    if (posix_memalign(&p, kPageSize, kBlockSize) != 0) return nullptr;
    t_buf.reset(static_cast<char *>(p));
  }
  return t_buf.get();
}

char *device_staging(bool *pinned) {
  *pinned = false;
  char *buf = file_staging();
  if (!buf) return nullptr;
  Pins &P = pins();
  const uint64_t gen = P.gen.load(std::memory_order_acquire);
  if (t_tried_gen != gen) {
    AsyncSignalsBlocked nosig;  // a handler on this thread must not find the lock held
    std::lock_guard g(P.m);
    t_pinned = false;
    if (P.backend && P.gen.load(std::memory_order_relaxed) == gen) {
      bool have = false;
      for (char *b : P.bufs) have = have || b == buf;
      t_pinned = have || P.backend->pin_host(buf, kBlockSize) == 0;
      if (t_pinned && !have) P.bufs.push_back(buf);
    }
    t_tried_gen = gen;
  }
  *pinned = t_pinned;
  return buf;
}

Ring *storage_ring(int *err) {
  Ring *ring = Ring::mine(err);
  if (!ring || ring->has_buffers() || ring->buffers_refused) return ring;
  char *stage = file_staging();
  void *base = stage;
  const size_t len = kBlockSize;
  if (!stage || ring->register_buffers(&base, &len, 1) != 0) {
    ring->buffers_refused = true;
    log(Level::info, "io_uring: the staging buffer could not be registered; I/O goes without fixed buffers");
  }
  return ring;
}

void staging_pins_open(Backend *b) {
  Pins &P = pins();
  std::lock_guard g(P.m);
  UMRT_CHECK(P.bufs.empty(), "staging registered with a backend that is gone");
  P.backend = b;
  P.gen.fetch_add(1, std::memory_order_acq_rel);
}

void staging_pins_close() {
  Pins &P = pins();
  AsyncSignalsBlocked nosig;
  std::lock_guard g(P.m);
  for (char *b : P.bufs) P.backend->unpin_host(b);
  P.bufs.clear();
  P.backend = nullptr;
  P.gen.fetch_add(1, std::memory_order_acq_rel);
}

}  // namespace umrt::rt
