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
#include <exception>
#include <new>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <mutex>
#include <thread>
#include <vector>

#include "pieces.h"
#include "../threads.h"

namespace umrt::rt {
namespace {

std::atomic<int> g_sim_kernels{0};  // sim kernels begun and not ended (sim_kernel_begin)
std::atomic<uint64_t> g_pinned_bytes{0};  // copied straight from pinned memory (sim_pinned_bytes)
std::atomic<int64_t> g_pins_live{0};      // host registrations alive (sim_pins_live)

using Clock = std::chrono::steady_clock;

constexpr size_t kPieceBytes = 512 * 1024;  // ops are split so the engines share one run
#ifdef MADV_POPULATE_WRITE
constexpr int kMadvPopulateWrite = MADV_POPULATE_WRITE;
#else
constexpr int kMadvPopulateWrite = 23;  // Linux 5.14; Debian 12's headers predate it
#endif

class SimBackend final : public Backend {
 public:
  SimBackend(const SimOptions &o) : opt_(o) {}
  ~SimBackend() override {
    queue_.stop();
    for (auto &t : engines_) t.join();
    if (fd_ >= 0) ::close(fd_);
    // As a driver would keep pinned pages of a forgotten registration: counted, so a test sees
    // a registration outlive its backend (sim_pins_live stays above zero).
    if (!pins_.empty()) log(Level::warn, "sim: %zu host registrations alive at destruction", pins_.size());
  }

  int start() {
    fd_ = memfd_create("umrt-sim-arena", MFD_CLOEXEC);
    if (fd_ < 0) return -errno;
    if (ftruncate(fd_, static_cast<off_t>(opt_.capacity)) < 0) return -errno;
    unsigned n = opt_.engines ? opt_.engines : 1;
    for (unsigned i = 0; i < n; ++i) engines_.push_back(start_thread("umrt-sim-copy", [this] { engine_loop(); }));
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
    // The whole chunk in one call (as a GPU allocates a chunk's physical memory at once): arena
    // pages allocated where the chunk is new, page-table entries everywhere, instead of one
    // fault per 4 KiB page on the copies' first touch. Best effort (kernels before 5.14).
    madvise(at, kBlockSize, kMadvPopulateWrite);
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

  int do_frames_alloc(size_t) override { return inject_.alloc.hit() ? -ENOMEM : 0; }
  // Sim "kernels" are host code; those a test runs asynchronously (sim_kernel_begin) are waited
  // for here, sleeping, as a device-wide synchronisation waits for every queued kernel.
  int do_device_sync() override {
    while (g_sim_kernels.load(std::memory_order_acquire) > 0) std::this_thread::sleep_for(std::chrono::microseconds(20));
    return 0;
  }
  int do_stream_sync(void *) override { return 0; }

  int do_inject(InjectKind k, uint64_t nth, uint64_t count) override { return inject_.arm(k, nth, count); }

  // Host registrations, checked as a driver would: a pinned copy must come from one of them.
  int do_pin_host(void *p, size_t len) override {
    std::lock_guard g(pin_mu_);
    for (const Pin &q : pins_)
      if (static_cast<char *>(p) < q.base + q.len && q.base < static_cast<char *>(p) + len) return -EEXIST;
    pins_.push_back({static_cast<char *>(p), len});
    g_pins_live.fetch_add(1, std::memory_order_relaxed);
    return 0;
  }
  void do_unpin_host(void *p) override {
    std::lock_guard g(pin_mu_);
    for (size_t i = 0; i < pins_.size(); ++i)
      if (pins_[i].base == p) {
        pins_.erase(pins_.begin() + static_cast<ptrdiff_t>(i));
        g_pins_live.fetch_sub(1, std::memory_order_relaxed);
        return;
      }
  }
  bool pinned(const char *p, size_t len) {
    std::lock_guard g(pin_mu_);
    for (const Pin &q : pins_)
      if (p >= q.base && p + len <= q.base + q.len) return true;
    return false;
  }

  int do_transfer(CopyOp *ops, size_t n, Installer *inst) override {
    Submission sub;
    sub.inst = inst;
    std::vector<Piece> pieces = cut_pieces(ops, n, kPieceBytes, inject_.copy, sub);
    if (pieces.size() == 1) {
      run_piece(pieces[0]);
    } else {
      queue_.push(pieces);
      // The submitting thread helps with its own pieces, then waits for the rest.
      while (Piece *p = queue_.pop_own(&sub)) run_piece(*p);
      sub.wait();
    }
    for (size_t i = 0; i < n; ++i)
      if (ops[i].status) return ops[i].status;
    return 0;
  }

  void engine_loop() {
    while (Piece *p = queue_.pop(true)) run_piece(*p);
  }

  void run_piece(Piece &p) {
    CopyOp &op = *p.op;
    auto t0 = Clock::now();
    if (p.first() && opt_.latency_us) std::this_thread::sleep_for(std::chrono::microseconds(opt_.latency_us));
    if (p.fail) {
      if (p.first()) set_op_status(op, -EIO);
    } else {
      char *dev = static_cast<char *>(op.dev) + p.off;
      char *host = static_cast<char *>(op.host) + p.off;
      switch (op.dir) {
        case CopyOp::H2D:
          if (op.pinned) {  // a DMA straight from registered memory: no user-page read
            if (!pinned(host, p.len)) {
              log(Level::warn, "sim: a pinned copy from %p + %zu, which is not registered", static_cast<void *>(host), p.len);
              set_op_status(op, -EFAULT);
              break;
            }
            std::memcpy(dev, host, p.len);
            g_pinned_bytes.fetch_add(p.len, std::memory_order_relaxed);
          } else if (int rc = read_user_pages(dev, host, p.len)) {
            set_op_status(op, rc);
          }
          break;
        case CopyOp::ZERO: std::memset(dev, 0, p.len); break;
        case CopyOp::D2H: install_piece(p, dev); break;  // zero-copy: the arena is host memory
      }
      if (opt_.bandwidth_gbps > 0 && op.dir != CopyOp::ZERO) {
        auto want = std::chrono::duration<double>(static_cast<double>(p.len) / (opt_.bandwidth_gbps * 1e9));
        auto until = t0 + std::chrono::duration_cast<Clock::duration>(want);
        std::this_thread::sleep_until(until);
      }
    }
    p.sub->piece_done();
  }

  SimOptions opt_;
  int fd_ = -1;
  PieceQueue queue_;
  std::vector<std::thread> engines_;
  Injectors inject_;
  struct Pin {
    char *base;
    size_t len;
  };
  std::mutex pin_mu_;
  std::vector<Pin> pins_;
};

}  // namespace

uint64_t sim_pinned_bytes() { return g_pinned_bytes.load(std::memory_order_relaxed); }
int64_t sim_pins_live() { return g_pins_live.load(std::memory_order_relaxed); }

void sim_kernel_begin() { g_sim_kernels.fetch_add(1, std::memory_order_acq_rel); }
void sim_kernel_end() { g_sim_kernels.fetch_sub(1, std::memory_order_acq_rel); }

std::unique_ptr<Backend> make_sim_backend(const SimOptions &o, int *err) {
  try {  // threads and memory: nothing may throw through the C API
    auto b = std::make_unique<SimBackend>(o);
    *err = b->start();
    if (*err) return nullptr;
    return b;
  } catch (const std::bad_alloc &) {
    *err = -ENOMEM;
  } catch (const std::exception &) {
    *err = -EAGAIN;  // std::system_error from std::thread: no thread to be had
  }
  return nullptr;
}

}  // namespace umrt::rt
