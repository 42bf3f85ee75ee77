// cuda_baselines.cpp — the GPU limit and peers of umrt-bench on the CUDA runtime API (see
// cuda_baselines.h). Compiled by the host compiler against cuda_runtime_api.h; no kernels here
// (those come from kernels/, umrt::kernels).
#include "cuda_baselines.h"

#include <cuda_runtime_api.h>

#include <algorithm>
#include <chrono>
#include <cstring>

namespace bench::gpu {

namespace {

// "what: cudaErrorName: text" into `why`; returns false so callers can `return fail(...)`.
bool fail(std::string &why, const char *what, cudaError_t e) {
  why = std::string(what) + ": " + cudaGetErrorName(e) + ": " + cudaGetErrorString(e);
  return false;
}

cudaStream_t as_stream(void *s) { return static_cast<cudaStream_t>(s); }

constexpr unsigned char kFill = 0xa5;

}  // namespace

// ---- device ----------------------------------------------------------------------------------

DeviceInfo device_info() {
  DeviceInfo d;
  cudaError_t e;
  if ((e = cudaGetDevice(&d.ordinal)) != cudaSuccess) return fail(d.error, "cudaGetDevice", e), d;
  cudaDeviceProp p{};
  if ((e = cudaGetDeviceProperties(&p, d.ordinal)) != cudaSuccess)
    return fail(d.error, "cudaGetDeviceProperties", e), d;
  d.name = p.name;
  d.total_memory = p.totalGlobalMem;
  d.cc_major = p.major;
  d.cc_minor = p.minor;
  d.pci_domain = p.pciDomainID;
  d.pci_bus = p.pciBusID;
  d.pci_device = p.pciDeviceID;
  if ((e = cudaDeviceGetAttribute(&d.concurrent_managed_access, cudaDevAttrConcurrentManagedAccess,
                                  d.ordinal)) != cudaSuccess)
    return fail(d.error, "cudaDeviceGetAttribute(ConcurrentManagedAccess)", e), d;
  size_t free_b = 0, total_b = 0;
  if ((e = cudaMemGetInfo(&free_b, &total_b)) != cudaSuccess) return fail(d.error, "cudaMemGetInfo", e), d;
  d.free_memory = free_b;
  if ((e = cudaDriverGetVersion(&d.driver_version)) != cudaSuccess)
    return fail(d.error, "cudaDriverGetVersion", e), d;
  if ((e = cudaRuntimeGetVersion(&d.runtime_version)) != cudaSuccess)
    return fail(d.error, "cudaRuntimeGetVersion", e), d;
  d.ok = true;
  return d;
}

// ---- Stream ----------------------------------------------------------------------------------

std::unique_ptr<Stream> Stream::create(std::string &why) {
  std::unique_ptr<Stream> s(new Stream());
  cudaStream_t cs = nullptr;
  cudaError_t e = cudaStreamCreateWithFlags(&cs, cudaStreamNonBlocking);
  if (e != cudaSuccess) return fail(why, "cudaStreamCreateWithFlags", e), nullptr;
  s->s_ = cs;
  return s;
}

Stream::~Stream() {
  if (s_) cudaStreamDestroy(as_stream(s_));
}

bool Stream::sync(std::string &why) {
  cudaError_t e = cudaStreamSynchronize(as_stream(s_));
  return e == cudaSuccess || fail(why, "cudaStreamSynchronize", e);
}

// ---- PinnedCopy ------------------------------------------------------------------------------

std::unique_ptr<PinnedCopy> PinnedCopy::create(size_t bytes, std::string &why) {
  std::unique_ptr<PinnedCopy> c(new PinnedCopy());
  c->bytes_ = bytes;
  void *h = nullptr;
  cudaError_t e = cudaHostAlloc(&h, bytes, cudaHostAllocDefault);
  if (e != cudaSuccess) return fail(why, "cudaHostAlloc", e), nullptr;
  c->host_ = static_cast<char *>(h);
  std::memset(c->host_, kFill, bytes);  // populated before any timing
  if ((e = cudaMalloc(&c->dev_, bytes)) != cudaSuccess) return fail(why, "cudaMalloc", e), nullptr;
  c->stream_ = Stream::create(why);
  if (!c->stream_) return nullptr;
  return c;
}

PinnedCopy::~PinnedCopy() {
  stream_.reset();
  if (dev_) cudaFree(dev_);
  if (host_) cudaFreeHost(host_);
}

double PinnedCopy::timed(bool to_device, std::string &why) {
  auto t0 = std::chrono::steady_clock::now();
  cudaError_t e = to_device
                      ? cudaMemcpyAsync(dev_, host_, bytes_, cudaMemcpyHostToDevice, as_stream(stream_->get()))
                      : cudaMemcpyAsync(host_, dev_, bytes_, cudaMemcpyDeviceToHost, as_stream(stream_->get()));
  if (e != cudaSuccess) return fail(why, to_device ? "cudaMemcpyAsync h->d" : "cudaMemcpyAsync d->h", e), -1.0;
  if (!stream_->sync(why)) return -1.0;
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

double PinnedCopy::h2d(std::string &why) { return timed(true, why); }
double PinnedCopy::d2h(std::string &why) { return timed(false, why); }

bool PinnedCopy::exact(std::string &why) {
  std::memset(host_, 0, bytes_);
  if (timed(false, why) < 0) return false;
  char pattern[4096];
  std::memset(pattern, kFill, sizeof pattern);
  for (size_t off = 0; off < bytes_; off += sizeof pattern)
    if (std::memcmp(host_ + off, pattern, std::min(sizeof pattern, bytes_ - off)) != 0) {
      why = "pinned round trip: wrong data in the 4 KiB at offset " + std::to_string(off);
      return false;
    }
  return true;
}

// ---- Managed ---------------------------------------------------------------------------------

std::unique_ptr<Managed> Managed::create(size_t bytes, std::string &why) {
  std::unique_ptr<Managed> m(new Managed());
  cudaError_t e;
  if ((e = cudaGetDevice(&m->dev_)) != cudaSuccess) return fail(why, "cudaGetDevice", e), nullptr;
  void *p = nullptr;
  if ((e = cudaMallocManaged(&p, bytes, cudaMemAttachGlobal)) != cudaSuccess)
    return fail(why, "cudaMallocManaged", e), nullptr;
  m->p_ = static_cast<char *>(p);
  m->bytes_ = bytes;
  return m;
}

Managed::~Managed() {
  if (p_) {
    cudaDeviceSynchronize();  // no prefetch or kernel may still use it
    cudaFree(p_);
  }
}

bool Managed::prefetch(size_t off, size_t len, bool to_device, void *stream, std::string &why) {
  // CUDA 13: the destination is a cudaMemLocation (a device ordinal, or the host); flags must be 0.
  cudaMemLocation loc{};
  loc.type = to_device ? cudaMemLocationTypeDevice : cudaMemLocationTypeHost;
  loc.id = to_device ? dev_ : 0;
  cudaError_t e = cudaMemPrefetchAsync(p_ + off, len, loc, 0, as_stream(stream));
  return e == cudaSuccess ||
         fail(why, to_device ? "cudaMemPrefetchAsync to the device" : "cudaMemPrefetchAsync to the host", e);
}

// ---- Ballast ---------------------------------------------------------------------------------

std::unique_ptr<Ballast> Ballast::leave_free(uint64_t leave_free, std::string &why) {
  constexpr size_t kMin = size_t{2} << 20;
  std::unique_ptr<Ballast> b(new Ballast());
  size_t free_b = 0, total_b = 0;
  cudaError_t e = cudaMemGetInfo(&free_b, &total_b);
  if (e != cudaSuccess) return fail(why, "cudaMemGetInfo", e), nullptr;
  b->free_before_ = free_b;
  size_t piece = size_t{1} << 30;
  while (free_b > leave_free + kMin && piece >= kMin) {
    size_t want = std::min<size_t>(piece, (free_b - leave_free) / kMin * kMin);
    void *p = nullptr;
    e = cudaMalloc(&p, want);
    if (e == cudaErrorMemoryAllocation) {
      cudaGetLastError();  // not sticky: clear it and try smaller pieces
      piece /= 2;
      continue;
    }
    if (e != cudaSuccess) return fail(why, "cudaMalloc (ballast)", e), nullptr;
    b->blocks_.push_back(p);
    b->held_ += want;
    if ((e = cudaMemGetInfo(&free_b, &total_b)) != cudaSuccess) return fail(why, "cudaMemGetInfo", e), nullptr;
  }
  b->free_after_ = free_b;
  return b;
}

Ballast::~Ballast() {
  for (void *p : blocks_) cudaFree(p);
}

// ---- KernelTimer -----------------------------------------------------------------------------

KernelTimer::~KernelTimer() {
  for (void *ev : events_) cudaEventDestroy(static_cast<cudaEvent_t>(ev));
}

bool KernelTimer::begin(void *stream, std::string &why) {
  for (int k = 0; k < 2 && events_.size() < used_ + 2; ++k) {
    cudaEvent_t ev = nullptr;
    cudaError_t e = cudaEventCreate(&ev);
    if (e != cudaSuccess) return fail(why, "cudaEventCreate", e);
    events_.push_back(ev);
  }
  cudaError_t e = cudaEventRecord(static_cast<cudaEvent_t>(events_[used_]), as_stream(stream));
  if (e != cudaSuccess) return fail(why, "cudaEventRecord", e);
  ++used_;
  return true;
}

bool KernelTimer::end(void *stream, std::string &why) {
  if (used_ % 2 != 1) {
    why = "KernelTimer::end without begin";
    return false;
  }
  cudaError_t e = cudaEventRecord(static_cast<cudaEvent_t>(events_[used_]), as_stream(stream));
  if (e != cudaSuccess) return fail(why, "cudaEventRecord", e);
  ++used_;
  return true;
}

double KernelTimer::total(std::string &why) {
  double ms_sum = 0;
  for (size_t i = 0; i + 1 < used_; i += 2) {
    float ms = 0;
    cudaError_t e = cudaEventElapsedTime(&ms, static_cast<cudaEvent_t>(events_[i]),
                                         static_cast<cudaEvent_t>(events_[i + 1]));
    if (e != cudaSuccess) return fail(why, "cudaEventElapsedTime", e), -1.0;
    ms_sum += ms;
  }
  return ms_sum / 1e3;
}

}  // namespace bench::gpu
