// backends/pieces.h — the transfer machinery the sim and cuda backends share: ops cut into
// pieces (so several copy engines share one long run), a submission that counts its pieces
// down, the work queue the engines pop from, and the updates that the pieces of one op share
// (first error wins; device->host bytes installed add up).
#pragma once

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <vector>

#include "../backend.h"
#include "../threads.h"

namespace umrt::rt {

// One backend->transfer() call. Its pieces may finish on any thread; wait() returns when all
// have.
struct Submission {
  std::atomic<size_t> left{0};
  std::mutex m;
  std::condition_variable cv;
  bool done = false;
  Installer *inst = nullptr;

  void piece_done() {
    if (left.fetch_sub(1, std::memory_order_acq_rel) == 1) {
      std::lock_guard g(m);
      done = true;
      cv.notify_all();
    }
  }
  void wait() {
    std::unique_lock lk(m);
    cv.wait(lk, [&] { return done; });
  }
};

struct Piece {
  CopyOp *op;
  size_t off, len;
  bool fail;  // injected failure of the whole op (reported by its first piece)
  Submission *sub;
  bool first() const { return off == 0; }
};

// The ops as pieces of at most `piece_bytes`; each op draws once from the copy injector.
// Sets sub.left.
inline std::vector<Piece> cut_pieces(CopyOp *ops, size_t n, size_t piece_bytes, Injector &inject,
                                     Submission &sub) {
  std::vector<Piece> pieces;
  for (size_t i = 0; i < n; ++i) {
    const bool fail = inject.hit();
    for (size_t off = 0; off < ops[i].len; off += piece_bytes)
      pieces.push_back({&ops[i], off, std::min(piece_bytes, ops[i].len - off), fail, &sub});
  }
  sub.left.store(pieces.size(), std::memory_order_relaxed);
  return pieces;
}

// The op's status, shared by its pieces: the first error is kept.
inline void set_op_status(CopyOp &op, int err) {
  int zero = 0;
  std::atomic_ref<int>(op.status).compare_exchange_strong(zero, err);
}

// A device->host piece whose bytes are readable at `staged`: map them into the range.
// (op.status / op.done are shared with the op's other pieces: never read them here.)
inline void install_piece(const Piece &p, const void *staged) {
  CopyOp &op = *p.op;
  CopyOp piece{CopyOp::D2H, static_cast<char *>(op.host) + p.off, static_cast<char *>(op.dev) + p.off, p.len, 0, 0};
  int rc = p.sub->inst->install(piece, staged);
  std::atomic_ref<size_t>(op.done).fetch_add(piece.done);
  if (rc) set_op_status(op, rc);
}

// Pieces waiting for a copy engine. pop(true) sleeps until there is one or the queue stops.
class PieceQueue {
 public:
  void push(std::vector<Piece> &pieces) {
    {
      AsyncSignalsBlocked nosig;  // submitters may be application threads (threads.h)
      std::lock_guard g(m_);
      for (Piece &p : pieces) q_.push_back(&p);
    }
    cv_.notify_all();
  }
  Piece *pop(bool block) {
    std::unique_lock lk(m_);
    if (block) cv_.wait(lk, [&] { return stop_ || !q_.empty(); });
    if (q_.empty()) return nullptr;
    Piece *p = q_.front();
    q_.pop_front();
    return p;
  }
  // A piece of submission s, for the thread that submitted it and helps while it waits. Only its
  // own: that thread may be an application thread, which a signal handler can stop at any
  // moment; had it taken a piece of the fault service's, the handler touching managed memory
  // would wait for the fault service, which would wait for that piece.
  Piece *pop_own(const Submission *s) {
    AsyncSignalsBlocked nosig;
    std::lock_guard g(m_);
    for (auto it = q_.begin(); it != q_.end(); ++it)
      if ((*it)->sub == s) {
        Piece *p = *it;
        q_.erase(it);
        return p;
      }
    return nullptr;
  }
  void stop() {
    {
      std::lock_guard g(m_);
      stop_ = true;
    }
    cv_.notify_all();
  }
  bool stopped_and_empty() {
    std::lock_guard g(m_);
    return stop_ && q_.empty();
  }

 private:
  std::mutex m_;
  std::condition_variable cv_;
  std::deque<Piece *> q_;
  bool stop_ = false;
};

}  // namespace umrt::rt
