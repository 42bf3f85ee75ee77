// storage/ring.cpp — io_uring through liburing: batched submission of runs of file I/O, the
// completion of short and interrupted ops, per-thread rings, and the O_DIRECT probe.
#include "ring.h"

#include <fcntl.h>
#include <liburing.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <mutex>
#include <cstdlib>
#include <memory>
#include <new>
#include <thread>
#include <vector>

namespace umrt::rt {

namespace {
constexpr unsigned kMaxRetries = 16;  // EINTR / EAGAIN / zero-byte writes, per op
constexpr size_t kShortUnit = 4096;   // an injected short op stops on a page boundary

// storage_inject: ops of each kind numbered from 1 after each arm; [from, until) fail.
struct GlobalInject {
  std::mutex m;
  std::atomic<bool> armed{false};
  uint64_t seen[3] = {}, from[3] = {}, until[3] = {};
  bool hit(IoKind k) {
    if (!armed.load(std::memory_order_relaxed)) return false;
    std::lock_guard g(m);
    const int i = static_cast<int>(k);
    ++seen[i];
    return from[i] && seen[i] >= from[i] && seen[i] < until[i];
  }
};
GlobalInject g_inject;
}  // namespace

void storage_inject_reset() {
  std::lock_guard g(g_inject.m);
  for (int i = 0; i < 3; ++i) g_inject.from[i] = g_inject.until[i] = 0;
  g_inject.armed.store(false);
}

void storage_inject(IoKind kind, uint64_t nth, uint64_t count) {
  std::lock_guard g(g_inject.m);
  const int i = static_cast<int>(kind);
  g_inject.from[i] = nth > UINT64_MAX - g_inject.seen[i] ? UINT64_MAX : g_inject.seen[i] + nth;
  g_inject.until[i] = count > UINT64_MAX - g_inject.from[i] ? UINT64_MAX : g_inject.from[i] + count;
  g_inject.armed.store(true);
}

Ring::~Ring() {
  if (ring_) io_uring_queue_exit(ring_);
  delete ring_;
}

int Ring::init(unsigned entries) {
  if (ring_) return 0;
  auto *r = new (std::nothrow) io_uring{};
  if (!r) return -ENOMEM;
  // SUBMIT_ALL (Linux 5.18): an SQE that fails at submission does not stop the ones after it.
#ifdef IORING_SETUP_SUBMIT_ALL
  int rc = io_uring_queue_init(entries, r, IORING_SETUP_SUBMIT_ALL);
  if (rc == -EINVAL) rc = io_uring_queue_init(entries, r, 0);
#else
  int rc = io_uring_queue_init(entries, r, 0);
#endif
  if (rc < 0) {
    delete r;
    return rc;
  }
  ring_ = r;
  entries_ = entries;
  buffers_refused = false;
  return 0;
}

int Ring::register_buffers(void *const *bases, const size_t *lens, unsigned n) {
  if (!ring_) return -EINVAL;
  if (nbufs_) {
    io_uring_unregister_buffers(ring_);
    nbufs_ = 0;
  }
  std::vector<iovec> iov(n);
  for (unsigned i = 0; i < n; ++i) iov[i] = {bases[i], lens[i]};
  int rc = io_uring_register_buffers(ring_, iov.data(), n);
  if (rc < 0) return rc;
  nbufs_ = n;
  for (unsigned i = 0; i < n && i < 4; ++i) bufs_[i] = {static_cast<const char *>(bases[i]), lens[i]};
  return 0;
}

int Ring::fixed_index(const void *p, size_t len) const {
  const char *c = static_cast<const char *>(p);
  for (unsigned i = 0; i < nbufs_ && i < 4; ++i)
    if (c >= bufs_[i].base && c + len <= bufs_[i].base + bufs_[i].len) return static_cast<int>(i);
  return -1;
}

void Ring::inject(IoInject kind, uint64_t nth, uint64_t count) {
  if (kind == IoInject::submit) {
    fail_submit_ = nth != 0;
    return;
  }
  inj_.kind = kind;
  inj_.from = nth ? ops_seen_ + nth : 0;
  inj_.to = !nth ? 0 : count > UINT64_MAX - inj_.from ? UINT64_MAX : inj_.from + count;
}

int Ring::take_injected(const IoOp &op) {
  if (g_inject.hit(op.sync ? IoKind::sync : op.write ? IoKind::write : IoKind::read)) return -EIO;
  const uint64_t k = ++ops_seen_;
  if (!inj_.from || k < inj_.from || k >= inj_.to) return 0;
  switch (inj_.kind) {
    case IoInject::eio: return -EIO;
    case IoInject::eagain: return -EAGAIN;
    case IoInject::short_io: return 1;  // submitted with a shorter length
    case IoInject::submit: return 0;
  }
  return 0;
}

int Ring::run(IoOp *ops, size_t n) {
  // fdatasyncs run once every other op is done (else one might run before writes it is meant
  // to cover): the others as one batch first, then the syncs.
  bool syncs = false;
  for (size_t i = 0; i < n; ++i) syncs |= ops[i].sync;
  const int rc = run_some(ops, n, false);
  if (!syncs) return rc;
  const int rs = run_some(ops, n, true);
  return rc ? rc : rs;
}

int Ring::run_some(IoOp *ops, size_t n, bool syncs) {
  if (!ring_) {
    for (size_t i = 0; i < n; ++i)
      if (ops[i].sync == syncs) ops[i].status = -EINVAL;
    return -EINVAL;
  }
  io_uring *ring = ring_;
  std::vector<uint8_t> tries(n, 0);
  std::vector<size_t> again;  // ops to submit (again) for what is left of them
  again.reserve(n);
  for (size_t i = n; i-- > 0;) {
    if (ops[i].sync != syncs) continue;
    ops[i].done = 0;
    ops[i].status = 0;
    if (ops[i].len || ops[i].sync) again.push_back(i);  // popped from the back: first op first
  }
  int first_error = 0;
  unsigned inflight = 0;
  auto finish = [&](size_t i, int status) {
    ops[i].status = status;
    if (status && !first_error) first_error = status;
  };
  auto complete = [&](size_t i, int res) {
    IoOp &op = ops[i];
    if (op.sync) {
      if (res >= 0) return;
      if ((res == -EINTR || res == -EAGAIN) && ++tries[i] <= kMaxRetries) {
        again.push_back(i);
        return;
      }
      return finish(i, res);
    }
    if (res > 0) {
      op.done += static_cast<size_t>(res);
      if (op.done == op.len) return;
      // A read that stops off a 512-byte boundary stopped at the end of the file (a regular
      // file's reads come back short nowhere else); resubmitting there would be an unaligned
      // O_DIRECT read, which some file systems refuse (EINVAL) instead of answering 0.
      if (!op.write && (op.off + op.done) % 512) return finish(i, -ENODATA);
      again.push_back(i);  // short: the rest
      return;
    }
    if (res == 0 && !op.write) return finish(i, -ENODATA);  // end of file
    if (res == 0 || res == -EINTR || res == -EAGAIN) {
      if (++tries[i] > kMaxRetries) return finish(i, res ? res : -EIO);
      if (res == -EAGAIN) std::this_thread::yield();
      again.push_back(i);
      return;
    }
    finish(i, res);
  };
  unsigned unsent = 0;  // SQEs in the submission queue the kernel has not taken yet
  unsigned idle_submits = 0;
  auto give_up = [&](int rc) {
    // The ring refused the submission itself: the ops not yet done fail, those in flight are
    // reaped (their buffers are the caller's), and the ring is dropped with whatever SQEs are
    // left in it (they would run at the next submit, into buffers the caller has let go).
    // Ring::mine() makes a fresh one next time.
    for (size_t i = 0; i < n; ++i)
      if (ops[i].sync == syncs && !ops[i].status && (ops[i].done < ops[i].len || ops[i].sync)) finish(i, rc);
    while (inflight) {
      io_uring_cqe *cqe = nullptr;
      if (io_uring_wait_cqe(ring, &cqe) == 0) {
        io_uring_cqe_seen(ring, cqe);
        --inflight;
      }
    }
    io_uring_queue_exit(ring);
    delete ring_;
    ring_ = nullptr;
    nbufs_ = 0;
    return first_error;
  };
  while (!again.empty() || inflight || unsent) {
    unsigned queued = 0;
    while (inflight + unsent + queued < entries_ && !again.empty()) {
      const size_t i = again.back();
      IoOp &op = ops[i];
      again.pop_back();
      size_t len = op.len - op.done;
      const int fake = take_injected(op);
      if (fake < 0) {  // answered without the kernel
        complete(i, fake);
        continue;
      }
      if (fake > 0 && len >= 2 * kShortUnit) len = len / 2 / kShortUnit * kShortUnit;
      io_uring_sqe *sqe = io_uring_get_sqe(ring);
      if (!sqe) {  // cannot happen below entries_; try again after reaping
        again.push_back(i);
        break;
      }
      char *buf = static_cast<char *>(op.buf) + op.done;
      const uint64_t off = op.off + op.done;
      // A registered buffer: the one named, else the one holding the op's bytes, if any.
      const int bi = op.buf_index >= 0 ? op.buf_index : fixed_index(buf, len);
      const bool fixed = bi >= 0 && static_cast<unsigned>(bi) < nbufs_;
      if (op.sync) io_uring_prep_fsync(sqe, op.fd, IORING_FSYNC_DATASYNC);
      else if (fixed && op.write) io_uring_prep_write_fixed(sqe, op.fd, buf, static_cast<unsigned>(len), off, bi);
      else if (fixed) io_uring_prep_read_fixed(sqe, op.fd, buf, static_cast<unsigned>(len), off, bi);
      else if (op.write) io_uring_prep_write(sqe, op.fd, buf, static_cast<unsigned>(len), off);
      else io_uring_prep_read(sqe, op.fd, buf, static_cast<unsigned>(len), off);
      io_uring_sqe_set_data64(sqe, i);
      ++queued;
    }
    if (queued || unsent) {
      int rc = fail_submit_ ? (fail_submit_ = false, -ENOMEM) : io_uring_submit(ring);
      if (queued) ++submits_;
      unsent += queued;
      if (rc > 0) {  // the kernel may take part of the queue: the rest goes at the next round
        inflight += static_cast<unsigned>(rc);
        unsent -= static_cast<unsigned>(rc);
        idle_submits = 0;
      } else if (rc == 0 || rc == -EINTR || rc == -EAGAIN || rc == -EBUSY) {
        // Nothing taken (short of request memory, or completions to reap first): reap what is in
        // flight and try again; with nothing in flight, a bounded number of times.
        if (!inflight) {
          if (++idle_submits > kMaxRetries) return give_up(rc ? rc : -EIO);
          std::this_thread::yield();
        }
      } else {
        return give_up(rc);
      }
    }
    if (!inflight) continue;
    io_uring_cqe *cqe = nullptr;
    int rc = io_uring_wait_cqe(ring, &cqe);
    if (rc == -EINTR) continue;
    if (rc < 0) continue;  // -EAGAIN and the like: wait again
    unsigned head, seen = 0;
    io_uring_for_each_cqe(ring, head, cqe) {
      const size_t i = static_cast<size_t>(io_uring_cqe_get_data64(cqe));
      ++seen;
      --inflight;
      if (i < n) complete(i, cqe->res);
    }
    io_uring_cq_advance(ring, seen);
  }
  return first_error;
}

Ring *Ring::mine(int *err) {
  thread_local std::unique_ptr<Ring> ring;
  thread_local int refused = 0;  // io_uring is not to be had here at all: not asked again
  if (ring && ring->ok()) return ring.get();
  if (refused) {
    *err = refused;
    return nullptr;
  }
  if (!ring) ring = std::make_unique<Ring>();
  // (A ring run() dropped after a refused submission is made afresh here.)
  if (int rc = ring->init()) {
    if (rc == -ENOSYS || rc == -EPERM || rc == -EINVAL) refused = rc;  // others may pass (EMFILE, ENOMEM)
    *err = rc;
    return nullptr;
  }
  return ring.get();
}

bool direct_if_taken(int fd) {
  const int fl = fcntl(fd, F_GETFL);
  if (fl < 0 || fcntl(fd, F_SETFL, fl | O_DIRECT) != 0) return false;
  struct stat st{};
  bool works = fstat(fd, &st) == 0 && st.st_size == 0;
  if (!works) {
    void *probe = nullptr;
    if (posix_memalign(&probe, 4096, 4096) == 0) {
      works = pread(fd, probe, 4096, 0) >= 0;
      free(probe);
    }
  }
  if (!works) fcntl(fd, F_SETFL, fl);
  return works;
}

int open_for_io(const char *path, bool writable, bool *direct, bool try_direct) {
  int fd = open(path, (writable ? O_RDWR : O_RDONLY) | O_CLOEXEC);
  if (fd < 0) return -errno;
  *direct = try_direct && direct_if_taken(fd);
  return fd;
}

}  // namespace umrt::rt
