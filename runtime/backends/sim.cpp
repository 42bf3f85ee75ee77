// backends/sim.cpp — the simulated device: a first-class backend for machines without a GPU.
//
// Device memory is a memfd arena of `capacity` bytes; each device window is a PROT_NONE
// reservation into which 2 MiB arena chunks are mapped on demand (MAP_SHARED | MAP_FIXED), so
// device addresses are linear over an allocation and host code can read and write "device
// memory" directly, as a GPU kernel would. Copies run on copy-engine threads (the submitting
// thread helps) with an optional per-engine bandwidth limit and per-copy latency. Fault
// injection fails the nth next frame allocation or copy. Device->host copies are zero-copy:
// the arena is host memory, so the installer maps straight from the device window.
#include <fcntl.h>
#include <linux/falloc.h>
#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <mutex>
#include <thread>
#include <vector>

#include "../backend.h"

namespace umrt::rt {
namespace {

using Clock = std::chrono::steady_clock;

constexpr size_t kPieceBytes = 512 * 1024;  // ops are split so the engines share one run

// Host -> device copy. The source is user memory that a CPU writer may legitimately write while
// it is copied, after cancelling that page's migration (the torn copy is then discarded; see
// docs/design.md). ThreadSanitizer cannot see that protocol (the ordering is the kernel's
// write-protect), so under TSan the copy is an uninstrumented word loop instead of memcpy.
#if defined(__SANITIZE_THREAD__)
__attribute__((no_sanitize("thread"), noinline)) void copy_user_pages(void *dst, const void *src, size_t n) {
  auto *d = static_cast<volatile uint64_t *>(dst);
  auto *s = static_cast<const volatile uint64_t *>(src);
  for (size_t i = 0; i < n / sizeof(uint64_t); ++i) d[i] = s[i];
}
#else
inline void copy_user_pages(void *dst, const void *src, size_t n) { std::memcpy(dst, src, n); }
#endif

struct Submission {
  std::atomic<size_t> left{0};
  std::mutex m;
  std::condition_variable cv;
  bool done = false;
  Installer *inst = nullptr;
};

struct Piece {
  CopyOp *op;
  size_t off, len;
  bool fail;  // injected failure for the whole op (applied on its first piece)
  bool first;
  Submission *sub;
};

// Injection state: ops numbered from 1 after each inject() call; [from, from + count) fail.
struct Injector {
  std::mutex m;
  uint64_t seen = 0, from = 0, until = 0;
  void arm(uint64_t nth, uint64_t count) {
    std::lock_guard g(m);
    from = seen + nth;
    until = from + count;
  }
  bool hit() {
    std::lock_guard g(m);
    ++seen;
    return seen >= from && seen < until;
  }
};

class SimBackend final : public Backend {
 public:
  SimBackend(const SimOptions &o) : opt_(o) {}
  ~SimBackend() override {
    {
      std::lock_guard g(qm_);
      stop_ = true;
    }
    qcv_.notify_all();
    for (auto &t : engines_) t.join();
    if (fd_ >= 0) ::close(fd_);
  }

  int start() {
    fd_ = memfd_create("umrt-sim-arena", MFD_CLOEXEC);
    if (fd_ < 0) return -errno;
    if (ftruncate(fd_, static_cast<off_t>(opt_.capacity)) < 0) return -errno;
    unsigned n = opt_.engines ? opt_.engines : 1;
    for (unsigned i = 0; i < n; ++i) engines_.emplace_back([this] { engine_loop(); });
    return 0;
  }

 private:
  const char *do_name() const override { return "sim"; }
  uint64_t do_capacity() const override { return opt_.capacity; }

  int do_window_create(size_t bytes, DevWindow *w) override {
    void *p = mmap(nullptr, bytes, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) return -errno;
    madvise(p, bytes, MADV_DONTFORK);
    w->base = p;
    w->bytes = bytes;
    return 0;
  }
  void do_window_destroy(DevWindow *w) override { munmap(w->base, w->bytes); }

  int do_chunk_map(DevWindow *w, size_t offset, uint32_t chunk) override {
    char *at = static_cast<char *>(w->base) + offset;
    void *p = mmap(at, kBlockSize, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, fd_,
                   static_cast<off_t>(uint64_t{chunk} * kBlockSize));
    if (p == MAP_FAILED) return -errno;
    madvise(at, kBlockSize, MADV_DONTFORK);
    return 0;
  }
  int do_chunk_unmap(DevWindow *w, size_t offset) override {
    char *at = static_cast<char *>(w->base) + offset;
    void *p = mmap(at, kBlockSize, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED | MAP_NORESERVE,
                   -1, 0);
    if (p == MAP_FAILED) return -errno;
    madvise(at, kBlockSize, MADV_DONTFORK);
    return 0;
  }
  void do_chunk_release(uint32_t chunk) override {
    fallocate(fd_, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
              static_cast<off_t>(uint64_t{chunk} * kBlockSize), kBlockSize);
  }

  int do_frames_alloc(size_t) override { return alloc_inject_.hit() ? -ENOMEM : 0; }
  int do_device_sync() override { return 0; }  // sim "kernels" are synchronous host code

  int do_inject(InjectKind k, uint64_t nth, uint64_t count) override {
    if (nth == 0 || count == 0) return -EINVAL;
    (k == InjectKind::alloc ? alloc_inject_ : copy_inject_).arm(nth, count);
    return 0;
  }

  int do_transfer(CopyOp *ops, size_t n, Installer *inst) override {
    Submission sub;
    sub.inst = inst;
    std::vector<Piece> pieces;
    for (size_t i = 0; i < n; ++i) {
      bool fail = copy_inject_.hit();
      size_t len = ops[i].len;
      for (size_t off = 0; off < len; off += kPieceBytes)
        pieces.push_back({&ops[i], off, std::min(kPieceBytes, len - off), fail, off == 0, &sub});
    }
    sub.left.store(pieces.size(), std::memory_order_relaxed);
    if (pieces.size() == 1) {
      run_piece(pieces[0]);
    } else {
      {
        std::lock_guard g(qm_);
        for (auto &p : pieces) queue_.push_back(&p);
      }
      qcv_.notify_all();
      // The submitting thread helps until the queue is drained, then waits for its pieces.
      while (Piece *p = pop(false)) run_piece(*p);
      std::unique_lock lk(sub.m);
      sub.cv.wait(lk, [&] { return sub.done; });
    }
    for (size_t i = 0; i < n; ++i)
      if (ops[i].status) return ops[i].status;
    return 0;
  }

  Piece *pop(bool block) {
    std::unique_lock lk(qm_);
    if (block) qcv_.wait(lk, [&] { return stop_ || !queue_.empty(); });
    if (queue_.empty()) return nullptr;
    Piece *p = queue_.front();
    queue_.pop_front();
    return p;
  }

  void engine_loop() {
    while (Piece *p = pop(true)) run_piece(*p);
  }

  static void set_status(CopyOp &op, int err) {
    int zero = 0;
    std::atomic_ref<int>(op.status).compare_exchange_strong(zero, err);
  }

  void run_piece(Piece &p) {
    CopyOp &op = *p.op;
    auto t0 = Clock::now();
    if (p.first && opt_.latency_us) std::this_thread::sleep_for(std::chrono::microseconds(opt_.latency_us));
    if (p.fail) {
      if (p.first) set_status(op, -EIO);
    } else {
      char *dev = static_cast<char *>(op.dev) + p.off;
      char *host = static_cast<char *>(op.host) + p.off;
      switch (op.dir) {
        case CopyOp::H2D: copy_user_pages(dev, host, p.len); break;
        case CopyOp::ZERO: std::memset(dev, 0, p.len); break;
        case CopyOp::D2H: {
          // (op.status / op.done are shared with the other pieces: never read them here)
          CopyOp piece{CopyOp::D2H, host, dev, p.len, 0, 0};
          int rc = p.sub->inst->install(piece, dev);
          std::atomic_ref<size_t>(op.done).fetch_add(piece.done);
          if (rc) set_status(op, rc);
          break;
        }
      }
      if (opt_.bandwidth_gbps > 0 && op.dir != CopyOp::ZERO) {
        auto want = std::chrono::duration<double>(static_cast<double>(p.len) / (opt_.bandwidth_gbps * 1e9));
        auto until = t0 + std::chrono::duration_cast<Clock::duration>(want);
        std::this_thread::sleep_until(until);
      }
    }
    Submission &s = *p.sub;
    if (s.left.fetch_sub(1, std::memory_order_acq_rel) == 1) {
      std::lock_guard g(s.m);
      s.done = true;
      s.cv.notify_all();
    }
  }

  SimOptions opt_;
  int fd_ = -1;
  std::mutex qm_;
  std::condition_variable qcv_;
  std::deque<Piece *> queue_;
  bool stop_ = false;
  std::vector<std::thread> engines_;
  Injector alloc_inject_, copy_inject_;
};

}  // namespace

std::unique_ptr<Backend> make_sim_backend(const SimOptions &o, int *err) {
  auto b = std::make_unique<SimBackend>(o);
  *err = b->start();
  if (*err) return nullptr;
  return b;
}

}  // namespace umrt::rt
