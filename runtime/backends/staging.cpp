// backends/staging.cpp — the staging pipeline (see staging.h): lanes, slots, engine threads.
#include "staging.h"

#include "../threads.h"

#include <cerrno>
#include <cstdio>
#include <cstring>

namespace umrt::rt {
namespace {

const char *dir_name(CopyOp::Dir d) {
  switch (d) {
    case CopyOp::H2D: return "host->device copy";
    case CopyOp::D2H: return "device->host copy";
    case CopyOp::ZERO: return "device zero-fill";
  }
  return "?";
}

}  // namespace

StagingPipeline::StagingPipeline(DmaOps &dma, size_t slot_bytes, std::vector<StagingLane *> lanes,
                                 unsigned engines)
    : dma_(dma), slot_bytes_(slot_bytes), lanes_(std::move(lanes)) {
  UMRT_CHECK(engines + 1 <= lanes_.size(), "needs a lane per engine and the urgent lane");
  urgent_ = lanes_.back();
  for (size_t i = engines; i + 1 < lanes_.size(); ++i) spare_.push_back(lanes_[i]);
  try {
    for (unsigned i = 0; i < engines; ++i) engines_.push_back(start_thread("umrt-dma", [this, i] { engine_loop(*lanes_[i]); }));
  } catch (...) {  // no destructor runs for a half-built object: join what started, pass it on
    queue_.stop();
    for (auto &t : engines_) t.join();
    throw;
  }
}

StagingPipeline::~StagingPipeline() {
  queue_.stop();
  for (auto &t : engines_) t.join();
}

int StagingPipeline::transfer(CopyOp *ops, size_t n, Installer *inst, Injector &inject, bool urgent) {
  dma_.bind_thread();
  Submission sub;
  sub.inst = inst;
  std::vector<Piece> pieces = cut_pieces(ops, n, slot_bytes_, inject, sub);
  if (urgent) {
    std::lock_guard g(urgent_mu_);
    for (Piece &p : pieces) start_piece(*urgent_, p);  // a full ring finishes its oldest first
    drain(*urgent_);
  } else {
    run_shared(pieces, sub);
  }
  for (size_t i = 0; i < n; ++i)
    if (ops[i].status) return ops[i].status;
  return 0;
}

void StagingPipeline::run_shared(std::vector<Piece> &pieces, Submission &sub) {
  if (pieces.empty()) return;
  StagingLane *mine = take_spare();
  if (mine && pieces.size() <= mine->slots.size()) {
    // Small transfers: all on this thread, no hop to an engine.
    for (Piece &p : pieces) start_piece(*mine, p);
    drain(*mine);
  } else {
    queue_.push(pieces);
    if (mine) {
      while (Piece *p = queue_.pop_own(&sub)) start_piece(*mine, *p);
      drain(*mine);
    }
    sub.wait();
  }
  if (mine) give_spare(mine);
}

StagingLane *StagingPipeline::take_spare() {
  std::lock_guard g(spare_mu_);
  if (spare_.empty()) return nullptr;
  StagingLane *l = spare_.back();
  spare_.pop_back();
  return l;
}

void StagingPipeline::give_spare(StagingLane *l) {
  std::lock_guard g(spare_mu_);
  spare_.push_back(l);
}

void StagingPipeline::engine_loop(StagingLane &l) {
  dma_.bind_thread();
  for (;;) {
    Piece *p = queue_.pop(l.pending == 0);  // never sleep on the queue with DMA in flight
    if (p) start_piece(l, *p);
    else if (l.pending) drain(l);
    else if (queue_.stopped_and_empty()) return;
  }
}

void StagingPipeline::start_piece(StagingLane &l, Piece &p) {
  const unsigned nslots = static_cast<unsigned>(l.slots.size());
  if (l.pending == nslots) finish_oldest(l);  // the ring is full: free its oldest slot
  StagingSlot &s = l.slots[(l.next + l.pending) % nslots];
  UMRT_CHECK(s.piece == nullptr, "staging slot still in use");
  ++l.pending;
  s.piece = &p;
  s.err = 0;
  if (p.fail) return;
  CopyOp &op = *p.op;
  char *dev = static_cast<char *>(op.dev) + p.off;
  char *host = static_cast<char *>(op.host) + p.off;
  int e = 0;
  switch (op.dir) {
    case CopyOp::H2D:
      if (op.pinned) {  // registered memory (pin_host): the DMA reads it in place, the slot idles
        e = dma_.h2d(dev, host, p.len, l.stream);
        break;
      }
      e = read_user_pages(s.buf, host, p.len);
      if (e == 0) e = dma_.h2d(dev, s.buf, p.len, l.stream);
      break;
    case CopyOp::D2H: e = dma_.d2h(s.buf, dev, p.len, l.stream); break;
    case CopyOp::ZERO: e = dma_.zero(dev, p.len, l.stream); break;
  }
  if (e == 0) e = dma_.record(s.event, l.stream);
  s.err = e;
}

void StagingPipeline::finish_oldest(StagingLane &l) {
  StagingSlot &s = l.slots[l.next];
  l.next = (l.next + 1) % static_cast<unsigned>(l.slots.size());
  --l.pending;
  Piece &p = *s.piece;
  s.piece = nullptr;
  CopyOp &op = *p.op;
  int e = s.err;
  if (!p.fail && e == 0) e = dma_.wait(s.event);
  char msg[256];
  if (p.fail) {
    if (p.first()) {
      std::snprintf(msg, sizeof msg, "%s of %zu bytes failed (fault injection)", dir_name(op.dir), op.len);
      dma_.report(msg);
      set_op_status(op, -EIO);
    }
  } else if (e < 0) {  // -errno from the host side: the user's source pages could not be read
    std::snprintf(msg, sizeof msg, "%s of %zu bytes: the source pages at %p could not be read (%s: unmapped or "
                  "protected by the application meanwhile)", dir_name(op.dir), p.len,
                  static_cast<void *>(static_cast<char *>(op.host) + p.off), std::strerror(-e));
    dma_.report(msg);
    set_op_status(op, e);
  } else if (e != 0) {
    std::snprintf(msg, sizeof msg, "%s of %zu bytes at device %p failed: %s", dir_name(op.dir), p.len,
                  static_cast<void *>(static_cast<char *>(op.dev) + p.off), dma_.text(e));
    dma_.report(msg);
    set_op_status(op, -EIO);
  } else if (op.dir == CopyOp::D2H) {
    install_piece(p, s.buf);
  }
  p.sub->piece_done();
}

void StagingPipeline::drain(StagingLane &l) {
  while (l.pending) finish_oldest(l);
}

}  // namespace umrt::rt
