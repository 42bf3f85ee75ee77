// backends/cuda.cpp — the CUDA backend: device memory through the driver's virtual memory API
// and batched DMA through pinned staging, on a real GPU.
//
// Device memory: each device window is one cuMemAddressReserve; a chunk is a 2 MiB physical
// allocation (cuMemCreate; the driver's granularity is queried and must divide 2 MiB) created
// when first mapped (cuMemMap + cuMemSetAccess) and released when DevMem frees it, so device
// addresses are linear over an allocation and eviction only unmaps. Capacity: the configured
// bytes, else 90% of the GPU's free memory.
//
// Copies: every op is cut into pieces of one staging slot. A lane is a non-blocking CUDA stream
// with a ring of pinned slots (cudaHostAlloc) and one event each; copy-engine threads own one
// lane each and the submitting thread borrows a spare one, so the CPU side of a piece (staging
// memcpy for host->device, UFFDIO_COPY for device->host) overlaps the DMA of the pieces queued
// behind it. Host->device: memcpy user pages into the slot, cudaMemcpyAsync, event. Device->
// host: cudaMemcpyAsync into the slot, event; when it completes the installer maps the slot's
// bytes into the range. Zero-fill: cudaMemsetAsync, never a copy. Every CUDA status is checked;
// a failed piece fails its op (-EIO) and its text is kept for umrt_last_error().
//
// The driver API is reached through cudaGetDriverEntryPointByVersion, and the runtime is linked
// statically: nothing here needs libcuda.so at link or load time, so the same binaries run (on
// the sim backend) on machines without a driver.
#include <cuda.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <cstdarg>
#include <cstdio>
#include <deque>
#include <mutex>
#include <thread>
#include <vector>

#include "pieces.h"

namespace umrt::rt {
namespace {

constexpr size_t kSlotBytes = size_t{1} << 20;  // one staging slot = one piece
constexpr unsigned kSlots = 4;                   // per lane: DMA of 3 pieces behind the CPU's
constexpr unsigned kSpareLanes = 4;              // lanes for submitting threads

// The driver entry points this backend uses (no link-time dependency on libcuda).
struct Driver {
  decltype(&cuDeviceGet) DeviceGet = nullptr;
  decltype(&cuDeviceGetAttribute) DeviceGetAttribute = nullptr;
  decltype(&cuMemGetAllocationGranularity) MemGetAllocationGranularity = nullptr;
  decltype(&cuMemAddressReserve) MemAddressReserve = nullptr;
  decltype(&cuMemAddressFree) MemAddressFree = nullptr;
  decltype(&cuMemCreate) MemCreate = nullptr;
  decltype(&cuMemRelease) MemRelease = nullptr;
  decltype(&cuMemMap) MemMap = nullptr;
  decltype(&cuMemUnmap) MemUnmap = nullptr;
  decltype(&cuMemSetAccess) MemSetAccess = nullptr;
  decltype(&cuGetErrorString) GetErrorString = nullptr;

  // "" on success, else which symbol could not be found.
  std::string load() {
    struct Sym { const char *name; void **fn; } syms[] = {
        {"cuDeviceGet", reinterpret_cast<void **>(&DeviceGet)},
        {"cuDeviceGetAttribute", reinterpret_cast<void **>(&DeviceGetAttribute)},
        {"cuMemGetAllocationGranularity", reinterpret_cast<void **>(&MemGetAllocationGranularity)},
        {"cuMemAddressReserve", reinterpret_cast<void **>(&MemAddressReserve)},
        {"cuMemAddressFree", reinterpret_cast<void **>(&MemAddressFree)},
        {"cuMemCreate", reinterpret_cast<void **>(&MemCreate)},
        {"cuMemRelease", reinterpret_cast<void **>(&MemRelease)},
        {"cuMemMap", reinterpret_cast<void **>(&MemMap)},
        {"cuMemUnmap", reinterpret_cast<void **>(&MemUnmap)},
        {"cuMemSetAccess", reinterpret_cast<void **>(&MemSetAccess)},
        {"cuGetErrorString", reinterpret_cast<void **>(&GetErrorString)},
    };
    for (const Sym &s : syms) {
      cudaDriverEntryPointQueryResult q{};
      cudaError_t e = cudaGetDriverEntryPointByVersion(s.name, s.fn, 12000, cudaEnableDefault, &q);
      if (e != cudaSuccess || q != cudaDriverEntryPointSuccess || !*s.fn)
        return std::string(s.name) + ": " + (e != cudaSuccess ? cudaGetErrorString(e) : "not found in the driver");
    }
    return {};
  }
  const char *text(CUresult r) const {
    const char *s = nullptr;
    if (GetErrorString && GetErrorString(r, &s) == CUDA_SUCCESS && s) return s;
    return "unknown driver error";
  }
};

// A staging slot and the piece whose DMA it carries (piece == nullptr: free).
struct Slot {
  void *buf = nullptr;
  cudaEvent_t ev = nullptr;
  Piece *piece = nullptr;
  cudaError_t err = cudaSuccess;  // from enqueueing the piece
};

// Invariant: the slots holding a piece are l.next, l.next+1, ... (mod kSlots) in the order the
// pieces were enqueued on the stream, so finishing from l.next is finishing in stream order.
struct Lane {
  cudaStream_t stream = nullptr;
  Slot slots[kSlots];
  unsigned next = 0;
  unsigned pending = 0;
};

const char *dir_name(CopyOp::Dir d) {
  switch (d) {
    case CopyOp::H2D: return "host->device copy";
    case CopyOp::D2H: return "device->host copy";
    case CopyOp::ZERO: return "device zero-fill";
  }
  return "?";
}

class CudaBackend final : public Backend {
 public:
  explicit CudaBackend(const CudaOptions &o) : opt_(o) {}
  ~CudaBackend() override {
    queue_.stop();
    for (auto &t : engines_) t.join();
    if (dev_ < 0) return;
    cudaSetDevice(dev_);
    // Errors are ignored from here on: at process exit the runtime may already be unloading.
    for (auto &l : lanes_) {
      for (Slot &s : l->slots) {
        if (s.ev) cudaEventDestroy(s.ev);
        if (s.buf) cudaFreeHost(s.buf);
      }
      if (l->stream) cudaStreamDestroy(l->stream);
    }
    for (CUmemGenericAllocationHandle &h : handles_)
      if (h) drv_.MemRelease(h);
  }

  // "" on success, else why the backend cannot run.
  std::string start() {
    int count = 0;
    cudaError_t e = cudaGetDeviceCount(&count);
    if (e != cudaSuccess)
      return std::string("no usable GPU (is an NVIDIA driver installed and a device visible?): cudaGetDeviceCount: ") +
             cudaGetErrorString(e);
    if (count == 0) return "no CUDA device found";
    int dev = 0;
    if ((e = cudaGetDevice(&dev)) != cudaSuccess) return std::string("cudaGetDevice: ") + cudaGetErrorString(e);
    if ((e = cudaSetDevice(dev)) != cudaSuccess) return std::string("cudaSetDevice: ") + cudaGetErrorString(e);
    if ((e = cudaFree(nullptr)) != cudaSuccess)  // creates the primary context the app shares
      return std::string("creating the CUDA context: ") + cudaGetErrorString(e);
    cudaDeviceProp prop{};
    if ((e = cudaGetDeviceProperties(&prop, dev)) != cudaSuccess)
      return std::string("cudaGetDeviceProperties: ") + cudaGetErrorString(e);
    gpu_ = prop.name;
    if (std::string why = drv_.load(); !why.empty()) return "driver entry point " + why;
    CUdevice cudev = 0;
    if (CUresult r = drv_.DeviceGet(&cudev, dev); r != CUDA_SUCCESS) return std::string("cuDeviceGet: ") + drv_.text(r);
    int vmm = 0;
    drv_.DeviceGetAttribute(&vmm, CU_DEVICE_ATTRIBUTE_VIRTUAL_MEMORY_MANAGEMENT_SUPPORTED, cudev);
    if (!vmm) return std::string(prop.name) + " does not support the virtual memory management API";
    prop_ = {};
    prop_.type = CU_MEM_ALLOCATION_TYPE_PINNED;
    prop_.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
    prop_.location.id = dev;
    access_ = {};
    access_.location = prop_.location;
    access_.flags = CU_MEM_ACCESS_FLAGS_PROT_READWRITE;
    size_t gran = 0;
    if (CUresult r = drv_.MemGetAllocationGranularity(&gran, &prop_, CU_MEM_ALLOC_GRANULARITY_MINIMUM); r != CUDA_SUCCESS)
      return std::string("cuMemGetAllocationGranularity: ") + drv_.text(r);
    if (gran == 0 || kBlockSize % gran != 0) {
      char b[160];
      std::snprintf(b, sizeof b, "allocation granularity %zu bytes does not divide the 2 MiB chunk", gran);
      return b;
    }
    size_t free_b = 0, total_b = 0;
    if ((e = cudaMemGetInfo(&free_b, &total_b)) != cudaSuccess) return std::string("cudaMemGetInfo: ") + cudaGetErrorString(e);
    uint64_t cap = opt_.capacity ? opt_.capacity : free_b / 10 * 9;
    if (opt_.capacity > free_b)
      log(Level::warn, "cuda: device memory %llu MiB asked, %zu MiB free on %s: chunk allocations may fail",
          static_cast<unsigned long long>(opt_.capacity >> 20), free_b >> 20, prop.name);
    capacity_ = cap / kBlockSize * kBlockSize;
    if (capacity_ == 0) return "less than one 2 MiB chunk of device memory available";
    handles_.assign(capacity_ / kBlockSize, 0);
    dev_ = dev;
    // Lanes: one per engine thread, then the spares for submitting threads.
    const unsigned engines = std::max(1u, opt_.engines);
    for (unsigned i = 0; i < engines + kSpareLanes; ++i) {
      auto l = std::make_unique<Lane>();
      if ((e = cudaStreamCreateWithFlags(&l->stream, cudaStreamNonBlocking)) != cudaSuccess)
        return std::string("cudaStreamCreate: ") + cudaGetErrorString(e);
      for (Slot &s : l->slots) {
        if ((e = cudaHostAlloc(&s.buf, kSlotBytes, cudaHostAllocPortable)) != cudaSuccess)
          return std::string("cudaHostAlloc of the staging ring: ") + cudaGetErrorString(e);
        if ((e = cudaEventCreateWithFlags(&s.ev, cudaEventDisableTiming)) != cudaSuccess)
          return std::string("cudaEventCreate: ") + cudaGetErrorString(e);
      }
      lanes_.push_back(std::move(l));
    }
    for (unsigned i = engines; i < lanes_.size(); ++i) spare_.push_back(lanes_[i].get());
    for (unsigned i = 0; i < engines; ++i) engines_.emplace_back([this, i] { engine_loop(*lanes_[i]); });
    log(Level::info, "cuda: %s, %zu MiB free of %zu MiB, capacity %llu MiB, granularity %zu KiB, %u lanes x %u x %zu KiB staging",
        prop.name, free_b >> 20, total_b >> 20, static_cast<unsigned long long>(capacity_ >> 20), gran >> 10,
        static_cast<unsigned>(lanes_.size()), kSlots, kSlotBytes >> 10);
    return {};
  }

 private:
  const char *do_name() const override { return "cuda"; }
  uint64_t do_capacity() const override { return capacity_; }

  std::string do_take_error_text() override {
    std::lock_guard g(err_mu_);
    std::string t;
    t.swap(err_);
    return t;
  }
  void note(const char *fmt, ...) __attribute__((format(printf, 2, 3))) {
    char b[512];
    va_list ap;
    va_start(ap, fmt);
    std::vsnprintf(b, sizeof b, fmt, ap);
    va_end(ap);
    log(Level::warn, "cuda: %s", b);
    std::lock_guard g(err_mu_);
    err_ = b;
  }
  int fail_rt(const char *what, cudaError_t e, int rc = -EIO) {
    note("%s: %s", what, cudaGetErrorString(e));
    (void)cudaGetLastError();  // the error is reported here: don't leave it to the app's next call
    return rc;
  }
  int fail_drv(const char *what, CUresult r) {
    note("%s: %s", what, drv_.text(r));
    return r == CUDA_ERROR_OUT_OF_MEMORY ? -ENOMEM : -EIO;
  }

  int do_window_create(size_t bytes, DevWindow *w) override {
    cudaSetDevice(dev_);
    CUdeviceptr p = 0;
    if (CUresult r = drv_.MemAddressReserve(&p, bytes, kBlockSize, 0, 0); r != CUDA_SUCCESS)
      return fail_drv("cuMemAddressReserve", r);
    w->base = reinterpret_cast<void *>(p);
    w->bytes = bytes;
    return 0;
  }
  void do_window_destroy(DevWindow *w) override {
    CUresult r = drv_.MemAddressFree(reinterpret_cast<CUdeviceptr>(w->base), w->bytes);
    if (r != CUDA_SUCCESS) fail_drv("cuMemAddressFree", r);
  }

  int do_chunk_map(DevWindow *w, size_t offset, uint32_t chunk) override {
    cudaSetDevice(dev_);
    CUmemGenericAllocationHandle h = 0;
    {
      std::lock_guard g(hmu_);
      if (!handles_[chunk]) {
        if (CUresult r = drv_.MemCreate(&handles_[chunk], kBlockSize, &prop_, 0); r != CUDA_SUCCESS) {
          handles_[chunk] = 0;
          return fail_drv("cuMemCreate of a 2 MiB chunk", r);
        }
      }
      h = handles_[chunk];
    }
    auto at = reinterpret_cast<CUdeviceptr>(w->base) + offset;
    if (CUresult r = drv_.MemMap(at, kBlockSize, 0, h, 0); r != CUDA_SUCCESS) return fail_drv("cuMemMap", r);
    if (CUresult r = drv_.MemSetAccess(at, kBlockSize, &access_, 1); r != CUDA_SUCCESS) {
      drv_.MemUnmap(at, kBlockSize);
      return fail_drv("cuMemSetAccess", r);
    }
    return 0;
  }
  int do_chunk_unmap(DevWindow *w, size_t offset) override {
    auto at = reinterpret_cast<CUdeviceptr>(w->base) + offset;
    if (CUresult r = drv_.MemUnmap(at, kBlockSize); r != CUDA_SUCCESS) return fail_drv("cuMemUnmap", r);
    return 0;
  }
  void do_chunk_release(uint32_t chunk) override {
    std::lock_guard g(hmu_);
    if (handles_[chunk]) {
      if (CUresult r = drv_.MemRelease(handles_[chunk]); r != CUDA_SUCCESS) fail_drv("cuMemRelease", r);
      handles_[chunk] = 0;
    }
  }

  int do_frames_alloc(size_t) override {
    if (!alloc_inject_.hit()) return 0;
    note("frame allocation failed (fault injection)");
    return -ENOMEM;
  }
  int do_device_sync() override {
    cudaSetDevice(dev_);
    cudaError_t e = cudaDeviceSynchronize();
    return e == cudaSuccess ? 0 : fail_rt("cudaDeviceSynchronize (waiting for device work)", e);
  }
  int do_stream_sync(void *stream) override {
    cudaSetDevice(dev_);
    cudaError_t e = cudaStreamSynchronize(static_cast<cudaStream_t>(stream));
    return e == cudaSuccess ? 0 : fail_rt("cudaStreamSynchronize of the caller's stream", e);
  }
  int do_inject(InjectKind k, uint64_t nth, uint64_t count) override {
    if (nth == 0 || count == 0) return -EINVAL;
    (k == InjectKind::alloc ? alloc_inject_ : copy_inject_).arm(nth, count);
    return 0;
  }

  // ---- copies ----------------------------------------------------------------------------------

  int do_transfer(CopyOp *ops, size_t n, Installer *inst) override {
    cudaSetDevice(dev_);
    Submission sub;
    sub.inst = inst;
    std::vector<Piece> pieces = cut_pieces(ops, n, kSlotBytes, copy_inject_, sub);
    Lane *mine = take_spare();
    if (mine && pieces.size() <= kSlots) {
      // Small transfers (fault service): run here, no thread hop.
      for (Piece &p : pieces) start_piece(*mine, p);
      drain(*mine);
    } else {
      queue_.push(pieces);
      if (mine) {
        while (Piece *p = queue_.pop(false)) start_piece(*mine, *p);
        drain(*mine);
      }
      sub.wait();
    }
    if (mine) give_spare(mine);
    for (size_t i = 0; i < n; ++i)
      if (ops[i].status) return ops[i].status;
    return 0;
  }

  Lane *take_spare() {
    std::lock_guard g(spare_mu_);
    if (spare_.empty()) return nullptr;
    Lane *l = spare_.back();
    spare_.pop_back();
    return l;
  }
  void give_spare(Lane *l) {
    std::lock_guard g(spare_mu_);
    spare_.push_back(l);
  }

  void engine_loop(Lane &l) {
    cudaSetDevice(dev_);
    for (;;) {
      Piece *p = queue_.pop(l.pending == 0);  // never sleep on the queue with DMA in flight
      if (p) start_piece(l, *p);
      else if (l.pending) drain(l);
      else if (queue_.stopped_and_empty()) return;
    }
  }

  // Enqueue a piece on the lane's stream in the next slot (finishing that slot's piece first).
  void start_piece(Lane &l, Piece &p) {
    Slot &s = l.slots[(l.next + l.pending) % kSlots];
    if (l.pending == kSlots) finish_oldest(l);  // that is s: the ring is full
    ++l.pending;
    s.piece = &p;
    s.err = cudaSuccess;
    if (p.fail) return;
    CopyOp &op = *p.op;
    char *dev = static_cast<char *>(op.dev) + p.off;
    char *host = static_cast<char *>(op.host) + p.off;
    cudaError_t e = cudaSuccess;
    switch (op.dir) {
      case CopyOp::H2D:
        copy_user_pages(s.buf, host, p.len);
        e = cudaMemcpyAsync(dev, s.buf, p.len, cudaMemcpyHostToDevice, l.stream);
        break;
      case CopyOp::D2H: e = cudaMemcpyAsync(s.buf, dev, p.len, cudaMemcpyDeviceToHost, l.stream); break;
      case CopyOp::ZERO: e = cudaMemsetAsync(dev, 0, p.len, l.stream); break;
    }
    if (e == cudaSuccess) e = cudaEventRecord(s.ev, l.stream);
    s.err = e;
  }

  void finish_oldest(Lane &l) {
    Slot &s = l.slots[l.next];
    l.next = (l.next + 1) % kSlots;
    --l.pending;
    Piece &p = *s.piece;
    s.piece = nullptr;
    CopyOp &op = *p.op;
    cudaError_t e = s.err;
    if (!p.fail && e == cudaSuccess) e = cudaEventSynchronize(s.ev);
    if (p.fail) {
      if (p.first()) {
        note("%s of %zu bytes failed (fault injection)", dir_name(op.dir), op.len);
        set_op_status(op, -EIO);
      }
    } else if (e != cudaSuccess) {
      note("%s of %zu bytes at device %p failed: %s", dir_name(op.dir), p.len,
           static_cast<void *>(static_cast<char *>(op.dev) + p.off), cudaGetErrorString(e));
      (void)cudaGetLastError();
      set_op_status(op, -EIO);
    } else if (op.dir == CopyOp::D2H) {
      install_piece(p, s.buf);
    }
    p.sub->piece_done();
  }

  void drain(Lane &l) {
    while (l.pending) finish_oldest(l);
  }

  CudaOptions opt_;
  Driver drv_;
  std::string gpu_;  // the device's name
  int dev_ = -1;
  uint64_t capacity_ = 0;
  CUmemAllocationProp prop_{};
  CUmemAccessDesc access_{};
  std::mutex hmu_;
  std::vector<CUmemGenericAllocationHandle> handles_;  // per chunk; 0 = no physical memory
  std::vector<std::unique_ptr<Lane>> lanes_;
  std::mutex spare_mu_;
  std::vector<Lane *> spare_;  // guarded by spare_mu_
  PieceQueue queue_;
  std::vector<std::thread> engines_;
  Injector alloc_inject_, copy_inject_;
  std::mutex err_mu_;
  std::string err_;
};

}  // namespace

std::unique_ptr<Backend> make_cuda_backend(const CudaOptions &o, std::string *why) {
  auto b = std::make_unique<CudaBackend>(o);
  *why = b->start();
  if (!why->empty()) return nullptr;
  return b;
}

}  // namespace umrt::rt
