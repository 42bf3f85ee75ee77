// storage/ring.h — io_uring (liburing) for the storage tier: one ring per thread that uses it
// (Ring::mine()), runs of file I/O submitted as one batch (one io_uring_submit for as many ops as
// the submission queue holds), and every way an op can come back short handled here, not by
// callers: a short read or write is resubmitted for the rest, EINTR and EAGAIN are retried
// (bounded), end of file on a read is -ENODATA with the bytes before it kept, any other error is
// the op's status. Nothing throws; everything returns 0 or -errno.
#pragma once

#include <cstddef>
#include <cstdint>

struct io_uring;

namespace umrt::rt {

struct IoOp {
  int fd = -1;
  bool write = false;
  bool sync = false;    // an fdatasync of fd (buf, len, off unused), once every other op of
                        // the same run() has completed
  void *buf = nullptr;  // O_DIRECT: 4 KiB aligned, as are len and off
  int buf_index = -1;   // >= 0: buf lies inside that registered buffer (read/write_fixed);
                        // -1: the ring looks for one holding it (fixed_index), else none
  size_t len = 0;
  uint64_t off = 0;
  // results
  size_t done = 0;  // bytes transferred (also on failure: a prefix)
  int status = 0;   // 0, -ENODATA (a read reached the end of the file), or -errno
};

// Test hooks (InjectKind-like): the nth next op (counting from 1, per ring) completes as if the
// kernel had answered so; `count` ops from there (UINT64_MAX: all).
// submit: the next io_uring_submit fails as the ring refusing it (-ENOMEM): run() drops the
// ring, Ring::mine() makes a fresh one.
enum class IoInject : uint8_t { eio, short_io, eagain, submit };

// Process-wide fault injection (umrt_inject_failure's storage kinds): the nth next read, write
// or fdatasync op of any ring fails with -EIO, count times in a row.
enum class IoKind : uint8_t { read, write, sync };
void storage_inject(IoKind kind, uint64_t nth, uint64_t count);
// Nothing armed any more (umrt_shutdown: injections are the runtime's, as the backend's are).
void storage_inject_reset();

class Ring {
 public:
  static constexpr unsigned kEntries = 64;
  Ring() = default;
  ~Ring();
  Ring(const Ring &) = delete;
  Ring &operator=(const Ring &) = delete;

  int init(unsigned entries = kEntries);  // -errno (-ENOSYS, -EPERM: io_uring refused here)
  bool ok() const { return ring_ != nullptr; }

  // Runs every op to completion. Returns 0 when all succeeded, else the first failing op's
  // status (each op has its own).
  int run(IoOp *ops, size_t n);

  // Buffers the kernel pins once instead of per op (ops name them by buf_index). They must stay
  // mapped until the ring is gone or they are replaced (one set per ring). -errno: refused
  // (e.g. memory the kernel cannot pin); ops then go without (buf_index ignored).
  int register_buffers(void *const *bases, const size_t *lens, unsigned n);
  bool has_buffers() const { return nbufs_ > 0; }
  // The caller tried register_buffers on this ring (instance) and was refused: not again.
  bool buffers_refused = false;
  // The registered buffer holding [p, p + len), or -1 (then the op goes unregistered).
  int fixed_index(const void *p, size_t len) const;

  void inject(IoInject kind, uint64_t nth, uint64_t count = 1);
  uint64_t submits() const { return submits_; }  // io_uring_submit calls so far

  // This thread's ring, created on first use; nullptr (with *err) when io_uring is refused.
  static Ring *mine(int *err);

 private:
  int run_some(IoOp *ops, size_t n, bool syncs);  // run()'s ops with op.sync == syncs
  int take_injected(const IoOp &op);  // 0, or the result to fake for the next op
  io_uring *ring_ = nullptr;  // owned (heap), torn down with the ring
  struct Buf {
    const char *base;
    size_t len;
  };
  Buf bufs_[4] = {};  // what register_buffers registered (the first 4)
  unsigned entries_ = 0;
  unsigned nbufs_ = 0;
  bool fail_submit_ = false;
  uint64_t submits_ = 0;
  uint64_t ops_seen_ = 0;
  struct {
    IoInject kind = IoInject::eio;
    uint64_t from = 0, to = 0;  // ops_seen_ in [from, to) are faked; from 0: none
  } inj_;
};

// Open path for storage I/O: O_DIRECT where the file system accepts it (an aligned probe read
// of the first block succeeds, or the file is empty) and try_direct, else buffered. *direct says
// which. Returns the fd or -errno. (tmpfs takes O_DIRECT since Linux 6.6.)
int open_for_io(const char *path, bool writable, bool *direct, bool try_direct = true);
// Turn O_DIRECT on for an open fd when the file system takes it (the same probe); false: left
// as it was (buffered).
bool direct_if_taken(int fd);

}  // namespace umrt::rt
