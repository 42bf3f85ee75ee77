// storage/ring.cpp — io_uring through liburing: batched submission of runs of file I/O, the
// completion of short and interrupted ops, per-thread rings, and the O_DIRECT probe.
#include "ring.h"

#include <fcntl.h>
#include <liburing.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <memory>
#include <new>
#include <thread>
#include <vector>

namespace umrt::rt {

namespace {
constexpr unsigned kMaxRetries = 16;  // EINTR / EAGAIN / zero-byte writes, per op
constexpr size_t kShortUnit = 4096;   // an injected short op stops on a page boundary
}  // namespace

Ring::~Ring() {
  if (ring_) io_uring_queue_exit(ring_);
  delete ring_;
}

int Ring::init(unsigned entries) {
  if (ring_) return 0;
  auto *r = new (std::nothrow) io_uring{};
  if (!r) return -ENOMEM;
  int rc = io_uring_queue_init(entries, r, 0);
  if (rc < 0) {
    delete r;
    return rc;
  }
  ring_ = r;
  entries_ = entries;
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
  return 0;
}

void Ring::inject(IoInject kind, uint64_t nth, uint64_t count) {
  inj_.kind = kind;
  inj_.from = nth ? ops_seen_ + nth : 0;
  inj_.to = !nth ? 0 : count > UINT64_MAX - inj_.from ? UINT64_MAX : inj_.from + count;
}

int Ring::take_injected() {
  const uint64_t k = ++ops_seen_;
  if (!inj_.from || k < inj_.from || k >= inj_.to) return 0;
  switch (inj_.kind) {
    case IoInject::eio: return -EIO;
    case IoInject::eagain: return -EAGAIN;
    case IoInject::short_io: return 1;  // submitted with a shorter length
  }
  return 0;
}

int Ring::run(IoOp *ops, size_t n) {
  if (!ring_) return -EINVAL;
  io_uring *ring = ring_;
  std::vector<uint8_t> tries(n, 0);
  std::vector<size_t> again;  // ops to submit (again) for what is left of them
  again.reserve(n);
  for (size_t i = n; i-- > 0;) {
    ops[i].done = 0;
    ops[i].status = 0;
    if (ops[i].len) again.push_back(i);  // popped from the back: first op first
  }
  int first_error = 0;
  unsigned inflight = 0;
  auto finish = [&](size_t i, int status) {
    ops[i].status = status;
    if (status && !first_error) first_error = status;
  };
  auto complete = [&](size_t i, int res) {
    IoOp &op = ops[i];
    if (res > 0) {
      op.done += static_cast<size_t>(res);
      if (op.done < op.len) again.push_back(i);  // short: the rest
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
  while (!again.empty() || inflight) {
    unsigned queued = 0;
    while (inflight + queued < entries_ && !again.empty()) {
      const size_t i = again.back();
      again.pop_back();
      IoOp &op = ops[i];
      size_t len = op.len - op.done;
      const int fake = take_injected();
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
      const bool fixed = op.buf_index >= 0 && static_cast<unsigned>(op.buf_index) < nbufs_;
      if (fixed && op.write) io_uring_prep_write_fixed(sqe, op.fd, buf, static_cast<unsigned>(len), off, op.buf_index);
      else if (fixed) io_uring_prep_read_fixed(sqe, op.fd, buf, static_cast<unsigned>(len), off, op.buf_index);
      else if (op.write) io_uring_prep_write(sqe, op.fd, buf, static_cast<unsigned>(len), off);
      else io_uring_prep_read(sqe, op.fd, buf, static_cast<unsigned>(len), off);
      io_uring_sqe_set_data64(sqe, i);
      ++queued;
    }
    if (queued) {
      int rc;
      do rc = io_uring_submit(ring);
      while (rc == -EINTR || rc == -EAGAIN);
      ++submits_;
      if (rc < 0) {
        // The ring itself refused (no memory for the submission): nothing of these queued ops
        // reached the kernel; their SQEs stay in the ring and would run at the next submit, so
        // the ring is given up after the ops already in flight are reaped.
        for (size_t i = 0; i < n; ++i)
          if (!ops[i].status && ops[i].done < ops[i].len) finish(i, rc);
        again.clear();
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
      }
      inflight += queued;
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
  thread_local int failed = 0;
  if (ring) return ring.get();
  if (failed) {
    *err = failed;
    return nullptr;
  }
  auto r = std::make_unique<Ring>();
  if (int rc = r->init()) {
    failed = rc;
    *err = rc;
    return nullptr;
  }
  ring = std::move(r);
  return ring.get();
}

int open_for_io(const char *path, bool writable, bool *direct, bool try_direct) {
  const int mode = (writable ? O_RDWR : O_RDONLY) | O_CLOEXEC;
  *direct = false;
  int fd = try_direct ? open(path, mode | O_DIRECT) : -1;
  if (fd >= 0) {
    struct stat st{};
    bool works = fstat(fd, &st) == 0 && st.st_size == 0;
    if (!works) {
      void *probe = nullptr;
      if (posix_memalign(&probe, 4096, 4096) == 0) {
        works = pread(fd, probe, 4096, 0) >= 0;
        free(probe);
      }
    }
    if (works) {
      *direct = true;
      return fd;
    }
    close(fd);
  }
  fd = open(path, mode);
  return fd >= 0 ? fd : -errno;
}

}  // namespace umrt::rt
