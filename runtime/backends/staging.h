// backends/staging.h — the staging pipeline of a DMA backend (cuda): how a transfer's pieces
// travel through pinned staging slots so that CPU work (the staging memcpy host->device, the
// UFFDIO_COPY install device->host) overlaps the DMAs queued behind it.
//
// A *lane* is one device stream with a ring of staging slots, one completion event per slot.
// Copy-engine threads own a lane each; a submitting thread borrows a spare lane and works too;
// transfers of at most one ring of pieces run entirely on the submitting thread (the fault
// path: no thread hop). On a lane, a piece is enqueued in the next slot (host->device: memcpy
// into the slot, then DMA; device->host: DMA into the slot; zero: a device memset), the slot's
// event recorded; when the ring is full or the queue is empty the oldest slot is finished:
// wait for its event, then (device->host) install the slot's bytes. Every device call goes
// through DmaOps, so the pipeline runs on the CPU against a fake device in the tests
// (tests/test_staging.cpp) and against CUDA in backends/cuda.cpp.
#pragma once

#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "pieces.h"

namespace umrt::rt {

// The device calls of the pipeline. Each returns 0 or a device error code (text() names it);
// the enqueue calls are asynchronous on `stream`, wait() blocks until everything recorded
// before `event` on its stream has completed (and returns an error of that work).
struct DmaOps {
  virtual void bind_thread() = 0;  // called on every thread before it uses the device
  virtual int h2d(void *dev, const void *staged, size_t len, void *stream) = 0;
  virtual int d2h(void *staged, const void *dev, size_t len, void *stream) = 0;
  virtual int zero(void *dev, size_t len, void *stream) = 0;
  virtual int record(void *event, void *stream) = 0;
  virtual int wait(void *event) = 0;
  virtual const char *text(int err) = 0;
  // A failure the pipeline gives up on (the op fails with -EIO): keep the message for
  // umrt_last_error().
  virtual void report(const char *msg) = 0;

 protected:
  ~DmaOps() = default;
};

struct StagingSlot {
  void *buf = nullptr;    // slot_bytes of host memory the device can DMA (pinned)
  void *event = nullptr;  // completion event of the piece in the slot
  Piece *piece = nullptr; // the piece whose work is in flight here; nullptr: free
  int err = 0;            // from enqueueing that piece
};

// Invariant: the slots holding a piece are next, next+1, ... (mod slots.size()), in the order
// the pieces were enqueued on the stream, `pending` of them; finishing from `next` is finishing
// in stream order.
struct StagingLane {
  void *stream = nullptr;
  std::vector<StagingSlot> slots;
  unsigned next = 0;
  unsigned pending = 0;
};

class StagingPipeline {
 public:
  // lanes[0, engines) get an engine thread each; the last lane is kept for urgent transfers;
  // the rest are spares for submitting threads. The lanes (and their streams, buffers, events)
  // belong to the caller and must outlive this. Needs engines + 1 lanes at least.
  StagingPipeline(DmaOps &dma, size_t slot_bytes, std::vector<StagingLane *> lanes, unsigned engines);
  ~StagingPipeline();  // stops and joins the engines
  StagingPipeline(const StagingPipeline &) = delete;
  StagingPipeline &operator=(const StagingPipeline &) = delete;

  // Backend::do_transfer: run every op (pieces of slot_bytes; each op draws once from
  // `inject`); per-op status in ops[i].status; returns 0 or the first error. `urgent` (the
  // fault service): every piece runs on this thread in the reserved lane, never behind another
  // transfer's pieces — which may be stuck until the fault service reads a munmap event.
  int transfer(CopyOp *ops, size_t n, Installer *inst, Injector &inject, bool urgent = false);

  size_t slot_bytes() const { return slot_bytes_; }

 private:
  void run_shared(std::vector<Piece> &pieces, Submission &sub);
  StagingLane *take_spare();
  void give_spare(StagingLane *l);
  void engine_loop(StagingLane &l);
  void start_piece(StagingLane &l, Piece &p);
  void finish_oldest(StagingLane &l);
  void drain(StagingLane &l);

  DmaOps &dma_;
  size_t slot_bytes_;
  std::vector<StagingLane *> lanes_;
  std::mutex spare_mu_;
  std::vector<StagingLane *> spare_;  // guarded by spare_mu_
  std::mutex urgent_mu_;               // holds the urgent lane
  StagingLane *urgent_ = nullptr;
  PieceQueue queue_;
  std::vector<std::thread> engines_;
};

}  // namespace umrt::rt
