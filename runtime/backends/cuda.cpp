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
// Contexts: umrt retains the primary context of its device once and makes it current only for
// the scope of its own calls (ContextGuard), restoring whatever the thread had; its own threads
// set it once (bind_thread). Waits for DMA use blocking-sync events: no thread spins a core.
//
// The driver API is reached through cudaGetDriverEntryPointByVersion, and the runtime is linked
// statically: nothing here needs libcuda.so at link or load time, so the same binaries run (on
// the sim backend) on machines without a driver.
#include <cuda.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cerrno>
#include <exception>
#include <new>
#include <cstdarg>
#include <cstdio>
#include <mutex>
#include <vector>

#include "../uffd.h"
#include "staging.h"

namespace umrt::rt {
namespace {

constexpr size_t kSlotBytes = size_t{1} << 20;  // one staging slot = one piece
constexpr unsigned kSlots = 4;                   // per lane: DMA of 3 pieces behind the CPU's
constexpr unsigned kSpareLanes = 4;              // lanes for submitting threads (1: the fault service's)

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
  decltype(&cuDevicePrimaryCtxRetain) DevicePrimaryCtxRetain = nullptr;
  decltype(&cuDevicePrimaryCtxRelease) DevicePrimaryCtxRelease = nullptr;
  decltype(&cuCtxGetCurrent) CtxGetCurrent = nullptr;
  decltype(&cuCtxSetCurrent) CtxSetCurrent = nullptr;
  decltype(&cuCtxPushCurrent) CtxPushCurrent = nullptr;
  decltype(&cuCtxPopCurrent) CtxPopCurrent = nullptr;

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
        {"cuDevicePrimaryCtxRetain", reinterpret_cast<void **>(&DevicePrimaryCtxRetain)},
        {"cuDevicePrimaryCtxRelease", reinterpret_cast<void **>(&DevicePrimaryCtxRelease)},
        {"cuCtxGetCurrent", reinterpret_cast<void **>(&CtxGetCurrent)},
        {"cuCtxSetCurrent", reinterpret_cast<void **>(&CtxSetCurrent)},
        {"cuCtxPushCurrent", reinterpret_cast<void **>(&CtxPushCurrent)},
        {"cuCtxPopCurrent", reinterpret_cast<void **>(&CtxPopCurrent)},
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

// Makes umrt's context (the primary context of its device, retained once at start) current on
// this thread for a scope, and leaves the thread's current context exactly as it was: nothing,
// umrt's own, or another one the application works in. No cudaSetDevice: since CUDA 12 that
// creates a context on a device the thread never used (and fails in exclusive-process mode).
// CUDA runtime calls made inside use the current context, so they reach umrt's device.
class ContextGuard {
 public:
  ContextGuard(const Driver &d, CUcontext ctx) : d_(d) {
    CUcontext cur = nullptr;
    if (!ctx || (d.CtxGetCurrent(&cur) == CUDA_SUCCESS && cur == ctx)) return;
    pushed_ = d.CtxPushCurrent(ctx) == CUDA_SUCCESS;
  }
  ~ContextGuard() {
    CUcontext popped = nullptr;
    if (pushed_) d_.CtxPopCurrent(&popped);
  }
  ContextGuard(const ContextGuard &) = delete;
  ContextGuard &operator=(const ContextGuard &) = delete;

 private:
  const Driver &d_;
  bool pushed_ = false;
};

class CudaBackend final : public Backend, private DmaOps {
 public:
  explicit CudaBackend(const CudaOptions &o) : opt_(o) {}
  ~CudaBackend() override {
    pipeline_.reset();  // engines joined
    if (!ctx_) return;
    {
      ContextGuard guard(drv_, ctx_);
      // Errors are ignored from here on: at process exit the runtime may already be unloading.
      for (auto &l : lanes_) free_lane(*l);
      for (CUmemGenericAllocationHandle &h : handles_)
        if (h) drv_.MemRelease(h);
    }
    drv_.DevicePrimaryCtxRelease(cudev_);
  }

  // "" on success, else why the backend cannot run.
  std::string start() {
    int count = 0;
    cudaError_t e = cudaGetDeviceCount(&count);
    if (e != cudaSuccess)
      return std::string("no usable GPU (is an NVIDIA driver installed and a device visible?): cudaGetDeviceCount: ") +
             cudaGetErrorString(e);
    if (count == 0) return "no CUDA device found";
    // umrt's device: the calling thread's current one (device 0 if it has none); asking does not
    // create a context, and the thread's state is left as it was.
    int dev = 0;
    if ((e = cudaGetDevice(&dev)) != cudaSuccess) return std::string("cudaGetDevice: ") + cudaGetErrorString(e);
    cudaDeviceProp prop{};
    if ((e = cudaGetDeviceProperties(&prop, dev)) != cudaSuccess)
      return std::string("cudaGetDeviceProperties: ") + cudaGetErrorString(e);
    if (std::string why = drv_.load(); !why.empty()) return "driver entry point " + why;
    CUdevice cudev = 0;
    if (CUresult r = drv_.DeviceGet(&cudev, dev); r != CUDA_SUCCESS) return std::string("cuDeviceGet: ") + drv_.text(r);
    // The primary context, the one the CUDA runtime (and so the application) uses on that device.
    if (CUresult r = drv_.DevicePrimaryCtxRetain(&ctx_, cudev); r != CUDA_SUCCESS) {
      ctx_ = nullptr;
      return std::string("cuDevicePrimaryCtxRetain: ") + drv_.text(r);
    }
    cudev_ = cudev;
    ContextGuard guard(drv_, ctx_);
    int vmm = 0;
    if (CUresult r = drv_.DeviceGetAttribute(&vmm, CU_DEVICE_ATTRIBUTE_VIRTUAL_MEMORY_MANAGEMENT_SUPPORTED, cudev);
        r != CUDA_SUCCESS)
      return std::string("cuDeviceGetAttribute(VIRTUAL_MEMORY_MANAGEMENT_SUPPORTED): ") + drv_.text(r);
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
      StagingLane &lane = *lanes_.emplace_back(std::make_unique<StagingLane>());
      if ((e = cudaStreamCreateWithFlags(reinterpret_cast<cudaStream_t *>(&lane.stream), cudaStreamNonBlocking)) != cudaSuccess)
        return std::string("cudaStreamCreate: ") + cudaGetErrorString(e);
      lane.slots.resize(kSlots);
      for (StagingSlot &s : lane.slots) {
        if ((e = cudaHostAlloc(&s.buf, kSlotBytes, cudaHostAllocPortable)) != cudaSuccess)
          return std::string("cudaHostAlloc of the staging ring: ") + cudaGetErrorString(e);
        // Blocking sync: a thread waiting for a piece's DMA sleeps instead of spinning a core
        // the application could use.
        if ((e = cudaEventCreateWithFlags(reinterpret_cast<cudaEvent_t *>(&s.event),
                                          cudaEventDisableTiming | cudaEventBlockingSync)) != cudaSuccess)
          return std::string("cudaEventCreate: ") + cudaGetErrorString(e);
      }
    }
    std::vector<StagingLane *> lanes;
    for (auto &l : lanes_) lanes.push_back(l.get());
    pipeline_ = std::make_unique<StagingPipeline>(static_cast<DmaOps &>(*this), kSlotBytes, std::move(lanes), engines);
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
  // The status of each call is taken where it is made; cudaGetLastError is never called (on an
  // application thread it would clear the application's own pending error).
  int fail_rt(const char *what, cudaError_t e, int rc = -EIO) {
    note("%s: %s", what, cudaGetErrorString(e));
    return rc;
  }
  int fail_drv(const char *what, CUresult r) {
    note("%s: %s", what, drv_.text(r));
    return r == CUDA_ERROR_OUT_OF_MEMORY ? -ENOMEM : -EIO;
  }

  int do_window_create(size_t bytes, DevWindow *w) override {
    ContextGuard guard(drv_, ctx_);
    CUdeviceptr p = 0;
    if (CUresult r = drv_.MemAddressReserve(&p, bytes, kBlockSize, 0, 0); r != CUDA_SUCCESS)
      return fail_drv("cuMemAddressReserve", r);
    w->base = reinterpret_cast<void *>(p);
    w->bytes = bytes;
    return 0;
  }
  void do_window_destroy(DevWindow *w) override {
    ContextGuard guard(drv_, ctx_);
    CUresult r = drv_.MemAddressFree(reinterpret_cast<CUdeviceptr>(w->base), w->bytes);
    if (r != CUDA_SUCCESS) fail_drv("cuMemAddressFree", r);
  }

  int do_chunk_map(DevWindow *w, size_t offset, uint32_t chunk) override {
    ContextGuard guard(drv_, ctx_);
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
    ContextGuard guard(drv_, ctx_);
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
    if (!inject_.alloc.hit()) return 0;
    note("frame allocation failed (fault injection)");
    return -ENOMEM;
  }
  int do_device_sync() override {
    ContextGuard guard(drv_, ctx_);
    cudaError_t e = cudaDeviceSynchronize();
    return e == cudaSuccess ? 0 : fail_rt("cudaDeviceSynchronize (waiting for device work)", e);
  }
  int do_stream_sync(void *stream) override {
    ContextGuard guard(drv_, ctx_);
    cudaError_t e = cudaStreamSynchronize(static_cast<cudaStream_t>(stream));
    return e == cudaSuccess ? 0 : fail_rt("cudaStreamSynchronize of the caller's stream", e);
  }
  int do_inject(InjectKind k, uint64_t nth, uint64_t count) override { return inject_.arm(k, nth, count); }

  // umrt's I/O staging (anonymous memory, also registered with io_uring) registered with CUDA, so
  // a file or swap read lands where the DMA engine reads it: no copy through the pinned ring.
  // A refusal is not an error: the copies then go through the ring as for user pages.
  int do_pin_host(void *p, size_t len) override {
    ContextGuard guard(drv_, ctx_);
    cudaError_t e = cudaHostRegister(p, len, cudaHostRegisterPortable);
    if (e == cudaSuccess) return 0;
    log(Level::info, "cuda: cudaHostRegister of a %zu KiB staging buffer: %s; its copies go through the pinned ring",
        len >> 10, cudaGetErrorString(e));
    return -EIO;
  }
  void do_unpin_host(void *p) override {
    ContextGuard guard(drv_, ctx_);
    if (cudaError_t e = cudaHostUnregister(p); e != cudaSuccess) fail_rt("cudaHostUnregister of a staging buffer", e);
  }

  // ---- copies: the staging pipeline over CUDA streams and events ------------------------------

  int do_transfer(CopyOp *ops, size_t n, Installer *inst) override {
    ContextGuard guard(drv_, ctx_);  // the pipeline's bind_thread() then finds it current
    return pipeline_->transfer(ops, n, inst, inject_.copy, Uffd::on_fault_service_thread());
  }

  // umrt's own threads (copy engines) make umrt's context current once; on a thread already in a
  // ContextGuard (do_transfer) it is current and nothing changes.
  void bind_thread() override {
    CUcontext cur = nullptr;
    if (drv_.CtxGetCurrent(&cur) != CUDA_SUCCESS || cur != ctx_) drv_.CtxSetCurrent(ctx_);
  }
  int h2d(void *dev, const void *staged, size_t len, void *stream) override {
    return cudaMemcpyAsync(dev, staged, len, cudaMemcpyHostToDevice, static_cast<cudaStream_t>(stream));
  }
  int d2h(void *staged, const void *dev, size_t len, void *stream) override {
    return cudaMemcpyAsync(staged, dev, len, cudaMemcpyDeviceToHost, static_cast<cudaStream_t>(stream));
  }
  int zero(void *dev, size_t len, void *stream) override {
    return cudaMemsetAsync(dev, 0, len, static_cast<cudaStream_t>(stream));
  }
  int record(void *event, void *stream) override {
    return cudaEventRecord(static_cast<cudaEvent_t>(event), static_cast<cudaStream_t>(stream));
  }
  int wait(void *event) override { return cudaEventSynchronize(static_cast<cudaEvent_t>(event)); }
  const char *text(int err) override { return cudaGetErrorString(static_cast<cudaError_t>(err)); }
  void report(const char *msg) override { note("%s", msg); }

  static void free_lane(StagingLane &l) {
    for (StagingSlot &s : l.slots) {
      if (s.event) cudaEventDestroy(static_cast<cudaEvent_t>(s.event));
      if (s.buf) cudaFreeHost(s.buf);
    }
    if (l.stream) cudaStreamDestroy(static_cast<cudaStream_t>(l.stream));
  }

  CudaOptions opt_;
  Driver drv_;
  int dev_ = -1;
  CUdevice cudev_ = 0;
  CUcontext ctx_ = nullptr;  // umrt's device's primary context, retained from start to the end
  uint64_t capacity_ = 0;
  CUmemAllocationProp prop_{};
  CUmemAccessDesc access_{};
  std::mutex hmu_;
  std::vector<CUmemGenericAllocationHandle> handles_;  // per chunk; 0 = no physical memory
  std::vector<std::unique_ptr<StagingLane>> lanes_;  // streams, pinned slots, events
  std::unique_ptr<StagingPipeline> pipeline_;        // declared after lanes_: joined first
  Injectors inject_;
  std::mutex err_mu_;
  std::string err_;
};

}  // namespace

std::unique_ptr<Backend> make_cuda_backend(const CudaOptions &o, std::string *why) {
  try {  // threads and memory: nothing may throw through the C API
    auto b = std::make_unique<CudaBackend>(o);
    *why = b->start();
    if (!why->empty()) return nullptr;
    return b;
  } catch (const std::exception &e) {
    *why = std::string("starting the cuda backend: ") + e.what();
    return nullptr;
  }
}

}  // namespace umrt::rt
