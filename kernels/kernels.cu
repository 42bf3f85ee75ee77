// kernels.cu — the CUDA kernels of umrt_kernels.h and their launchers: vector add, STREAM triad,
// strided page touch and a checksum reduction. Every loop is grid-stride, so any n runs on a
// bounded grid; every launcher returns the launch status (cudaError_t as int).
#include "umrt_kernels.h"

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

namespace umrt_kernels {
namespace {

constexpr unsigned kBlock = 256;          // threads per block (8 warps)
constexpr unsigned kBlocksPerSm = 8;      // enough resident blocks to hide memory latency
constexpr unsigned kFallbackGrid = 1024;  // grid cap when the SM count cannot be read

static_assert(kBlock % 32 == 0 && kBlock <= 1024, "whole warps, within the block limit");
static_assert(sizeof(unsigned long long) == sizeof(uint64_t), "atomicAdd works on 64-bit words");

cudaStream_t as_stream(void *stream) { return static_cast<cudaStream_t>(stream); }

// Blocks for `items` grid-stride items on the current device: enough to fill it, no more than
// the items need. *grid stays untouched on error.
cudaError_t grid_for(size_t items, unsigned *grid) {
  int dev = 0;
  cudaError_t err = cudaGetDevice(&dev);
  if (err != cudaSuccess) return err;
  int sms = 0;
  unsigned cap = kFallbackGrid;
  if (cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev) == cudaSuccess && sms > 0)
    cap = static_cast<unsigned>(sms) * kBlocksPerSm;
  else
    (void)cudaGetLastError();  // a failed query is not a launch error: clear it, use the fallback
  const size_t need = (items + kBlock - 1) / kBlock;
  *grid = static_cast<unsigned>(std::min<size_t>(need, cap));
  return cudaSuccess;
}

__device__ inline size_t first_index() {
  return static_cast<size_t>(blockIdx.x) * blockDim.x + threadIdx.x;
}
__device__ inline size_t grid_stride() { return static_cast<size_t>(gridDim.x) * blockDim.x; }

// No __restrict__ on the element-wise kernels: in-place use (c == a) is allowed.
__global__ void vector_add_kernel(const float *a, const float *b, float *c, size_t n) {
  for (size_t i = first_index(); i < n; i += grid_stride()) c[i] = a[i] + b[i];
}

// b + s * c with the product and the sum rounded separately: nvcc would otherwise contract them
// into one FMA, whose single rounding can differ from the CPU's b[i] + scalar * c[i].
__device__ inline double triad_op(double b, double s, double c) {
  return __dadd_rn(b, __dmul_rn(s, c));
}
__device__ inline float triad_op(float b, float s, float c) {
  return __fadd_rn(b, __fmul_rn(s, c));
}

template <typename T>
__global__ void triad_kernel(T *a, const T *b, const T *c, T scalar, size_t n) {
  for (size_t i = first_index(); i < n; i += grid_stride()) a[i] = triad_op(b[i], scalar, c[i]);
}

// Touch k writes touch_word(seed, k * stride) at byte offset k * stride, k < count.
__global__ void page_touch_kernel(unsigned char *p, size_t count, size_t stride, uint64_t seed) {
  for (size_t k = first_index(); k < count; k += grid_stride()) {
    const size_t off = k * stride;
    *reinterpret_cast<uint64_t *>(p + off) = touch_word(seed, off);
  }
}

// Each thread sums its grid-stride share of checksum terms; the block adds them up (warp
// shuffles, then one value per warp through shared memory) and its thread 0 adds the block's
// sum to *out with one atomicAdd. Unsigned 64-bit addition wraps and is associative and
// commutative, so the result equals host_checksum bit for bit whatever the order.
__global__ void checksum_kernel(const uint64_t *__restrict__ w, size_t words,
                                unsigned long long *out) {
  unsigned long long sum = 0;
  for (size_t i = first_index(); i < words; i += grid_stride()) sum += checksum_term(w[i], i);

  for (unsigned delta = 16; delta > 0; delta /= 2) sum += __shfl_down_sync(0xffffffffu, sum, delta);

  __shared__ unsigned long long warp_sums[kBlock / 32];
  const unsigned lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  if (lane == 0) warp_sums[warp] = sum;
  __syncthreads();
  if (warp == 0) {
    sum = lane < blockDim.x / 32 ? warp_sums[lane] : 0;
    for (unsigned delta = 16; delta > 0; delta /= 2)
      sum += __shfl_down_sync(0xffffffffu, sum, delta);
    if (lane == 0) atomicAdd(out, sum);
  }
}

bool aligned8(const void *p) { return reinterpret_cast<uintptr_t>(p) % 8 == 0; }

// The status of the launch just made (clears the runtime's last error, as it must be read once).
int launched() { return static_cast<int>(cudaGetLastError()); }

template <typename T>
int launch_triad(T *a, const T *b, const T *c, T scalar, size_t n, void *stream) {
  if (n == 0) return cudaSuccess;
  if (!a || !b || !c) return cudaErrorInvalidValue;
  unsigned grid = 0;
  if (cudaError_t err = grid_for(n, &grid); err != cudaSuccess) return err;
  triad_kernel<T><<<grid, kBlock, 0, as_stream(stream)>>>(a, b, c, scalar, n);
  return launched();
}

}  // namespace

int vector_add(const float *a, const float *b, float *c, size_t n, void *stream) {
  if (n == 0) return cudaSuccess;
  if (!a || !b || !c) return cudaErrorInvalidValue;
  unsigned grid = 0;
  if (cudaError_t err = grid_for(n, &grid); err != cudaSuccess) return err;
  vector_add_kernel<<<grid, kBlock, 0, as_stream(stream)>>>(a, b, c, n);
  return launched();
}

int triad(double *a, const double *b, const double *c, double scalar, size_t n, void *stream) {
  return launch_triad(a, b, c, scalar, n, stream);
}

int triad(float *a, const float *b, const float *c, float scalar, size_t n, void *stream) {
  return launch_triad(a, b, c, scalar, n, stream);
}

int page_touch(void *p, size_t bytes, size_t stride, uint64_t seed, void *stream) {
  if (stride < 8 || stride % 8 != 0 || !aligned8(p)) return cudaErrorInvalidValue;
  // Offsets 0, stride, ... whose whole word lies below `bytes`.
  const size_t count = bytes < 8 ? 0 : (bytes - 8) / stride + 1;
  if (count == 0) return cudaSuccess;
  if (!p) return cudaErrorInvalidValue;
  unsigned grid = 0;
  if (cudaError_t err = grid_for(count, &grid); err != cudaSuccess) return err;
  page_touch_kernel<<<grid, kBlock, 0, as_stream(stream)>>>(static_cast<unsigned char *>(p), count,
                                                             stride, seed);
  return launched();
}

int checksum(const void *p, size_t bytes, uint64_t *out, void *stream) {
  if (!out || !aligned8(out) || !aligned8(p)) return cudaErrorInvalidValue;
  const size_t words = bytes / 8;
  if (words != 0 && !p) return cudaErrorInvalidValue;
  // The blocks accumulate into *out: it starts at zero, in stream order before the kernel.
  if (cudaError_t err = cudaMemsetAsync(out, 0, sizeof *out, as_stream(stream));
      err != cudaSuccess)
    return err;
  if (words == 0) return cudaSuccess;
  unsigned grid = 0;
  if (cudaError_t err = grid_for(words, &grid); err != cudaSuccess) return err;
  checksum_kernel<<<grid, kBlock, 0, as_stream(stream)>>>(
      static_cast<const uint64_t *>(p), words, reinterpret_cast<unsigned long long *>(out));
  return launched();
}

int sync(void *stream) {
  const cudaError_t err =
      stream ? cudaStreamSynchronize(as_stream(stream)) : cudaDeviceSynchronize();
  const cudaError_t last = cudaGetLastError();  // read (and clear) it in every case
  return static_cast<int>(err != cudaSuccess ? err : last);
}

const char *error_string(int err) { return cudaGetErrorString(static_cast<cudaError_t>(err)); }

int device_count(int *err) {
  int n = 0;
  const cudaError_t e = cudaGetDeviceCount(&n);
  if (err) *err = static_cast<int>(e);
  if (e != cudaSuccess) {
    (void)cudaGetLastError();  // no GPU is an answer here, not an error for the next launch
    return 0;
  }
  return n;
}

}  // namespace umrt_kernels
