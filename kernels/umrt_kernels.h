// umrt_kernels.h — the CUDA kernels shared by samples, umrt-bench and the GPU tests, behind a
// plain C++ interface (no CUDA headers needed to call them: streams are `void *` holding a
// cudaStream_t, nullptr = the legacy default stream).
//
// Every launcher enqueues its kernel on `stream` and returns at once with a cudaError_t as int
// (0 = success; launch errors only: errors of the kernel itself show up at the next
// synchronisation, see sync()). Pointers are device addresses (umrt_device_pointer(),
// cudaMalloc or cudaMallocManaged memory). The host_* functions are CPU references computing
// exactly what the matching kernel computes, for checking results. An empty range (n or bytes 0)
// launches nothing and returns 0; a null pointer with a non-empty range returns
// cudaErrorInvalidValue.
#pragma once

#include <cstddef>
#include <cstdint>

#if defined(__CUDACC__)
#define UMRT_KERNELS_HD __host__ __device__
#else
#define UMRT_KERNELS_HD
#endif

namespace umrt_kernels {

// c[i] = a[i] + b[i], i < n. In place (c == a or c == b) is fine, as for triad.
int vector_add(const float *a, const float *b, float *c, size_t n, void *stream);
// a[i] = b[i] + scalar * c[i], i < n (STREAM triad). Product and sum are rounded separately (no
// FMA), so the result equals that expression computed on the CPU (unfused), bit for bit.
int triad(double *a, const double *b, const double *c, double scalar, size_t n, void *stream);
// The same in float (samples/oversubscribe works on float arrays).
int triad(float *a, const float *b, const float *c, float scalar, size_t n, void *stream);
// Writes the 8-byte word touch_word(seed, off) at every byte offset off = 0, stride, 2*stride...
// below `bytes` (stride a multiple of 8, >= 8; p 8-byte aligned). With stride 4096 each page is
// touched once. Only words that lie wholly below `bytes` are written (off + 8 <= bytes).
// Bad stride or alignment: cudaErrorInvalidValue, nothing launched.
int page_touch(void *p, size_t bytes, size_t stride, uint64_t seed, void *stream);
// *out (device memory, 8 bytes) = checksum of the first bytes/8 words of p (bytes a multiple of
// 8, p 8-byte aligned): the wrapping sum of checksum_term(word i, i). Order-free, so a parallel
// reduction and the CPU agree exactly. *out is zeroed on the stream first (cudaMemsetAsync), so
// it need not be initialised; misaligned p or out: cudaErrorInvalidValue.
int checksum(const void *p, size_t bytes, uint64_t *out, void *stream);

// Waits for the stream (nullptr: the whole device); returns the first error, launch or kernel.
int sync(void *stream);
// cudaGetErrorString of an error returned above.
const char *error_string(int err);
// Number of usable CUDA devices (0 when there is no GPU or driver); *err gets the CUDA error.
int device_count(int *err);

// ---- CPU references (the kernels use these very functions)  ------------------------------------------------------------------------------
UMRT_KERNELS_HD inline uint64_t mix(uint64_t x) {
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ull;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebull;
  x ^= x >> 31;
  return x;
}
UMRT_KERNELS_HD inline uint64_t touch_word(uint64_t seed, size_t off) { return mix(seed * 0x9e3779b97f4a7c15ull + off); }
UMRT_KERNELS_HD inline uint64_t checksum_term(uint64_t word, size_t index) { return mix(word ^ (index * 0x9e3779b97f4a7c15ull)); }
inline uint64_t host_checksum(const void *p, size_t bytes) {
  const auto *w = static_cast<const uint64_t *>(p);
  uint64_t s = 0;
  for (size_t i = 0; i < bytes / 8; ++i) s += checksum_term(w[i], i);
  return s;
}

}  // namespace umrt_kernels
