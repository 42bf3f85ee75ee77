// test_gpu.cpp — the cuda backend with real kernels (kernels/umrt_kernels.h) on managed memory:
// kernel writes read back by CPU faults, checksums of prefetched data, vector add and triad end
// to end, oversubscription with eviction, stream order of umrt_prefetch and of CPU faults against
// queued kernels, and injected copy failures. Host code compiled by the host compiler: CUDA only
// through the runtime API (streams, cudaMemcpy) and the kernel launchers. Every test skips, with
// the reason, where no GPU is usable (cudaGetDeviceCount, or umrt_init answering NO_DEVICE).
#include <gtest/gtest.h>
#include <umrt/umrt.h>

#include <cuda_runtime_api.h>

#include <cstdint>
#include <cstring>
#include <ostream>
#include <string>
#include <thread>
#include <vector>

#include "test_util.h"
#include "umrt_kernels.h"

namespace {

using namespace umrt_test;
namespace uk = umrt_kernels;

std::string cuda_text(cudaError_t e) {
  return std::string(cudaGetErrorName(e)) + ": " + cudaGetErrorString(e);
}

// A CUDA runtime call that must succeed.
#define CUDA_ASSERT(expr)                                                        \
  do {                                                                           \
    const cudaError_t cuda_e_ = (expr);                                          \
    ASSERT_EQ(cuda_e_, cudaSuccess) << #expr << ": " << cuda_text(cuda_e_);      \
  } while (0)

// A launcher or uk::sync that must return 0 (cudaSuccess).
#define KERNEL_ASSERT(expr)                                                      \
  do {                                                                           \
    const int kernel_e_ = (expr);                                                \
    ASSERT_EQ(kernel_e_, 0) << #expr << ": " << uk::error_string(kernel_e_);     \
  } while (0)

// A stream of our own, non-blocking: no implicit order with the legacy default stream (which the
// runtime or cudaMemcpy may use), so the only order between our kernels and the runtime's copies
// is the one the runtime establishes. Synchronised and destroyed at scope exit: declare it after
// the managed buffers its work uses, so it goes first.
class Stream {
 public:
  Stream() : err_(cudaStreamCreateWithFlags(&s_, cudaStreamNonBlocking)) {}
  ~Stream() {
    if (err_ != cudaSuccess || !s_) return;
    cudaError_t e = cudaStreamSynchronize(s_);
    EXPECT_EQ(e, cudaSuccess) << "cudaStreamSynchronize at the end of the test: " << cuda_text(e);
    e = cudaStreamDestroy(s_);
    EXPECT_EQ(e, cudaSuccess) << "cudaStreamDestroy: " << cuda_text(e);
  }
  Stream(const Stream &) = delete;
  Stream &operator=(const Stream &) = delete;
  cudaError_t status() const { return err_; }
  void *get() const { return s_; }

 private:
  cudaStream_t s_ = nullptr;
  cudaError_t err_;
};

// One 8-byte word of plain device memory (cudaMalloc): the checksum kernel's output.
class DeviceWord {
 public:
  DeviceWord() : err_(cudaMalloc(&p_, sizeof(uint64_t))) {}
  ~DeviceWord() {
    if (err_ != cudaSuccess || !p_) return;
    cudaError_t e = cudaFree(p_);
    EXPECT_EQ(e, cudaSuccess) << "cudaFree: " << cuda_text(e);
  }
  DeviceWord(const DeviceWord &) = delete;
  DeviceWord &operator=(const DeviceWord &) = delete;
  cudaError_t status() const { return err_; }
  uint64_t *get() const { return static_cast<uint64_t *>(p_); }
  ::testing::AssertionResult read(uint64_t *out) const {
    cudaError_t e = cudaMemcpy(out, p_, sizeof *out, cudaMemcpyDeviceToHost);
    if (e != cudaSuccess) return ::testing::AssertionFailure() << "cudaMemcpy of the result: " << cuda_text(e);
    return ::testing::AssertionSuccess();
  }

 private:
  void *p_ = nullptr;
  cudaError_t err_;
};

// The checksum kernel over the device copy of the managed bytes [p, p + bytes) (device-resident,
// bytes a multiple of 8), run on `stream`, waited for; the result in *out.
::testing::AssertionResult gpu_checksum(const void *p, size_t bytes, void *stream, uint64_t *out) {
  void *d = nullptr;
  umrt_status s = umrt_device_pointer(p, &d);
  if (s != UMRT_SUCCESS)
    return ::testing::AssertionFailure() << "umrt_device_pointer: " << str(s) << ": " << last_error();
  DeviceWord w;
  if (w.status() != cudaSuccess) return ::testing::AssertionFailure() << "cudaMalloc: " << cuda_text(w.status());
  if (int e = uk::checksum(d, bytes, w.get(), stream))
    return ::testing::AssertionFailure() << "checksum launch: " << uk::error_string(e);
  if (int e = uk::sync(stream)) return ::testing::AssertionFailure() << "checksum kernel: " << uk::error_string(e);
  return w.read(out);
}

// Applies to a host image of a buffer what page_touch(image, bytes, stride, seed) does on the GPU.
void touch_image(std::vector<uint8_t> &img, size_t stride, uint64_t seed, size_t from = 0, size_t bytes = SIZE_MAX) {
  if (bytes == SIZE_MAX) bytes = img.size() - from;
  for (size_t off = 0; off + 8 <= bytes; off += stride) {
    const uint64_t w = uk::touch_word(seed, off);
    std::memcpy(img.data() + from + off, &w, 8);
  }
}

// gtest assertion: the bytes at `got` (managed memory: read on the CPU, faulting) equal `want`.
::testing::AssertionResult same_bytes(const void *got, const std::vector<uint8_t> &want) {
  const auto *g = static_cast<const uint8_t *>(got);
  if (std::memcmp(g, want.data(), want.size()) == 0) return ::testing::AssertionSuccess();
  size_t i = 0;
  while (i < want.size() && g[i] == want[i]) ++i;
  if (i == want.size())
    return ::testing::AssertionFailure() << "the bytes changed while being compared (a writer still running?)";
  size_t bad = 0;
  for (size_t k = i; k < want.size(); ++k) bad += g[k] != want[k];
  return ::testing::AssertionFailure() << bad << " of " << want.size() << " bytes differ; the first at byte " << i
                                       << " (page " << i / kPage << ", offset " << i % kPage << "): expected "
                                       << hexbyte(want[i]) << ", got " << hexbyte(g[i]);
}

// cudaStreamQuery as "still running?" (recorded to show whether a race was really exercised);
// a real error fails the test.
::testing::AssertionResult stream_busy(void *stream, bool *busy) {
  cudaError_t e = cudaStreamQuery(static_cast<cudaStream_t>(stream));
  if (e != cudaSuccess && e != cudaErrorNotReady)
    return ::testing::AssertionFailure() << "cudaStreamQuery: " << cuda_text(e);
  *busy = e == cudaErrorNotReady;
  if (*busy) {
    // "Not ready" is an answer, not an error: make sure it is not left as this thread's last
    // error for the launchers and uk::sync, which report cudaGetLastError().
    cudaError_t last = cudaGetLastError();
    if (last != cudaSuccess && last != cudaErrorNotReady)
      return ::testing::AssertionFailure() << "cudaGetLastError after cudaStreamQuery: " << cuda_text(last);
  }
  return ::testing::AssertionSuccess();
}

// The fixture: the cuda backend whatever UMRT_TEST_BACKEND says; skips first when the CUDA runtime
// sees no device (with its error), then when umrt_init answers NO_DEVICE (with umrt's reason).
class Gpu : public UmrtTest {
 protected:
  bool TestBackend(Backend *b, std::string *) const override {
    *b = Backend::cuda;
    return true;
  }
  bool ValidateAtEnd() const override { return true; }
  std::chrono::seconds TimeLimit() const override { return std::chrono::seconds(90); }

  void SetUp() override {
    int err = 0;
    const int n = uk::device_count(&err);
    if (n <= 0) {
      if (err != 0) GTEST_SKIP() << "no usable GPU: cudaGetDeviceCount: " << uk::error_string(err);
      GTEST_SKIP() << "no usable GPU: cudaGetDeviceCount found no CUDA device";
    }
    UmrtTest::SetUp();
  }
};

// ---- kernel writes read back by CPU faults ---------------------------------------------------

struct TouchCase {
  size_t stride;
  size_t bytes;      // a multiple of 8, not of 2 MiB
  bool host_data;    // filled on the CPU first (else never touched: zero-filled on the device)
};

// How ctest and gtest name a case (without it gtest prints the struct's raw bytes, padding included).
std::ostream &operator<<(std::ostream &o, const TouchCase &c) {
  return o << "stride " << c.stride << ", " << c.bytes << " bytes, " << (c.host_data ? "host data" : "untouched");
}

class GpuTouch : public Gpu, public ::testing::WithParamInterface<TouchCase> {};

// The CPU fills (or not), the range moves to the device, a kernel writes one word every `stride`
// bytes through the device pointer; CPU reads then fault every page home and must see exactly the
// kernel's words over the earlier contents.
TEST_P(GpuTouch, KernelWritesReadBackByCpuFaults) {
  const TouchCase c = GetParam();
  Managed m(c.bytes);
  ASSERT_TRUE(m);
  std::vector<uint8_t> want(c.bytes, 0);
  if (c.host_data) {
    fill_pattern(m.get(), c.bytes, 1);
    fill_pattern(want.data(), c.bytes, 1);
  }
  ASSERT_EQ(umrt_prefetch(m.get(), c.bytes, UMRT_LOCATION_DEVICE, nullptr), UMRT_SUCCESS) << last_error();
  ASSERT_TRUE(all_pages_at(m.get(), c.bytes, UMRT_LOCATION_DEVICE));
  Stream s;
  CUDA_ASSERT(s.status());
  const uint64_t seed = 0x7011c4 + c.stride;
  KERNEL_ASSERT(uk::page_touch(dev(m.get()), c.bytes, c.stride, seed, s.get()));
  KERNEL_ASSERT(uk::sync(s.get()));
  touch_image(want, c.stride, seed);

  umrt_stats s0 = get_stats();
  EXPECT_TRUE(same_bytes(m.get(), want)) << "CPU read of the kernel's output";
  umrt_stats s1 = get_stats();
  EXPECT_GT(s1.cpu_faults, s0.cpu_faults) << "the pages came home without a CPU fault";
  EXPECT_EQ(s1.pages_to_host - s0.pages_to_host, m.pages()) << "every page is copied home once";
  EXPECT_EQ(s1.bytes_to_host - s0.bytes_to_host, m.pages() * kPage);
  EXPECT_TRUE(all_pages_at(m.get(), c.bytes, UMRT_LOCATION_HOST));
}

INSTANTIATE_TEST_SUITE_P(
    StridesAndSizes, GpuTouch,
    ::testing::Values(TouchCase{4 * KiB, 2 * MiB + 4 * KiB, true},   // one page past a block
                      TouchCase{4 * KiB, 3 * MiB + 1000, false},     // partial last page, zero-filled
                      TouchCase{64 * KiB, 5 * MiB + 36 * KiB, true},
                      TouchCase{64 * KiB, 7 * MiB + 8, false}),
    [](const ::testing::TestParamInfo<TouchCase> &i) {
      return "Stride" + std::to_string(i.param.stride / KiB) + "K_Bytes" + std::to_string(i.param.bytes) +
             (i.param.host_data ? "_HostData" : "_Untouched");
    });

// ---- kernels reading prefetched data ---------------------------------------------------------

// The checksum kernel over prefetched data equals the CPU's checksum of the same bytes; after a
// CPU write to one page and a second prefetch (only what came home moves again) it equals the new
// CPU checksum.
TEST_F(Gpu, ChecksumOfPrefetchedDataEqualsCpu) {
  const size_t size = 6 * MiB + 8 * KiB + 24;
  Managed m(size);
  ASSERT_TRUE(m);
  fill_pattern(m.get(), size, 2);
  std::vector<uint8_t> shadow(size);
  fill_pattern(shadow.data(), size, 2);
  const uint64_t want = uk::host_checksum(shadow.data(), size);
  const std::vector<uint8_t> zeros(size, 0);
  ASSERT_NE(want, uk::host_checksum(zeros.data(), size)) << "the checksum must tell data from zeros";

  ASSERT_EQ(umrt_prefetch(m.get(), size, UMRT_LOCATION_DEVICE, nullptr), UMRT_SUCCESS) << last_error();
  ASSERT_TRUE(all_pages_at(m.get(), size, UMRT_LOCATION_DEVICE));
  Stream s;
  CUDA_ASSERT(s.status());
  uint64_t got = 0;
  ASSERT_TRUE(gpu_checksum(m.get(), size, s.get(), &got));
  EXPECT_EQ(got, want) << "the kernel read other bytes than the CPU wrote";

  const size_t off = 17 * kPage + 40;
  m.get()[off] ^= 0x5a;  // a write fault brings (at least) that page home
  shadow[off] ^= 0x5a;
  const uint64_t want2 = uk::host_checksum(shadow.data(), size);
  ASSERT_NE(want2, want);
  EXPECT_EQ(location_of(m + off), UMRT_LOCATION_HOST);
  umrt_stats s0 = get_stats();
  ASSERT_EQ(umrt_prefetch(m.get(), size, UMRT_LOCATION_DEVICE, nullptr), UMRT_SUCCESS) << last_error();
  umrt_stats s1 = get_stats();
  EXPECT_GT(s1.bytes_to_device, s0.bytes_to_device);
  EXPECT_LT(s1.bytes_to_device - s0.bytes_to_device, size) << "pages already on the device were copied again";
  ASSERT_TRUE(all_pages_at(m.get(), size, UMRT_LOCATION_DEVICE));
  uint64_t got2 = 0;
  ASSERT_TRUE(gpu_checksum(m.get(), size, s.get(), &got2));
  EXPECT_EQ(got2, want2) << "the CPU's write did not reach the device copy";
}

float va_a(size_t i) { return static_cast<float>(i) * 0.5f; }
float va_b(size_t i, size_t n) { return static_cast<float>(n - i) * 0.25f; }

// c = a + b through three managed buffers: a and b filled on the CPU, c never touched (zero-filled
// on the device), the kernel on a stream, c read back on the CPU.
TEST_F(Gpu, VectorAddEndToEnd) {
  const size_t n = 3'000'123;  // 12 MB a buffer: neither a page nor a block multiple
  Managed a(n * sizeof(float)), b(n * sizeof(float)), c(n * sizeof(float));
  ASSERT_TRUE(a && b && c);
  auto *ha = reinterpret_cast<float *>(a.get());
  auto *hb = reinterpret_cast<float *>(b.get());
  auto *hc = reinterpret_cast<const float *>(c.get());
  for (size_t i = 0; i < n; ++i) {
    ha[i] = va_a(i);
    hb[i] = va_b(i, n);
  }
  for (const Managed *m : {&a, &b, &c})
    ASSERT_EQ(umrt_prefetch(m->get(), m->bytes(), UMRT_LOCATION_DEVICE, nullptr), UMRT_SUCCESS) << last_error();
  Stream s;
  CUDA_ASSERT(s.status());
  KERNEL_ASSERT(uk::vector_add(reinterpret_cast<const float *>(dev(a.get())),
                               reinterpret_cast<const float *>(dev(b.get())),
                               reinterpret_cast<float *>(dev(c.get())), n, s.get()));
  KERNEL_ASSERT(uk::sync(s.get()));
  umrt_stats s0 = get_stats();
  size_t bad = 0, first = n;
  for (size_t i = 0; i < n; ++i)
    if (hc[i] != va_a(i) + va_b(i, n)) {  // same IEEE single additions as the GPU's
      if (bad++ == 0) first = i;
    }
  EXPECT_EQ(bad, 0u) << "first wrong element " << first << ": got " << (first < n ? hc[first] : 0.0f)
                     << ", expected " << (first < n ? va_a(first) + va_b(first, n) : 0.0f);
  EXPECT_GT(get_stats().cpu_faults, s0.cpu_faults);
  EXPECT_TRUE(all_pages_at(c.get(), c.bytes(), UMRT_LOCATION_HOST));
  for (size_t i = 0; i < n; i += 4099) {  // the inputs come home intact too
    ASSERT_EQ(ha[i], va_a(i)) << i;
    ASSERT_EQ(hb[i], va_b(i, n)) << i;
  }
}

// a = b + 3 c (STREAM triad, doubles) through managed buffers. The operands are small multiples of
// 1/4, so every product and sum is exact: the expected value is exact whatever the rounding.
TEST_F(Gpu, TriadEndToEnd) {
  const size_t n = 2 * 1024 * 1024 + 777;
  const double scalar = 3.0;
  Managed a(n * sizeof(double)), b(n * sizeof(double)), c(n * sizeof(double));
  ASSERT_TRUE(a && b && c);
  auto *ha = reinterpret_cast<double *>(a.get());
  auto *hb = reinterpret_cast<double *>(b.get());
  auto *hc = reinterpret_cast<double *>(c.get());
  auto bv = [](size_t i) { return static_cast<double>(i); };
  auto cv = [](size_t i) { return static_cast<double>(i % 1024) * 0.25; };
  for (size_t i = 0; i < n; ++i) {
    ha[i] = -1.0;  // the kernel must overwrite every element
    hb[i] = bv(i);
    hc[i] = cv(i);
  }
  for (const Managed *m : {&a, &b, &c})
    ASSERT_EQ(umrt_prefetch(m->get(), m->bytes(), UMRT_LOCATION_DEVICE, nullptr), UMRT_SUCCESS) << last_error();
  Stream s;
  CUDA_ASSERT(s.status());
  KERNEL_ASSERT(uk::triad(reinterpret_cast<double *>(dev(a.get())), reinterpret_cast<const double *>(dev(b.get())),
                          reinterpret_cast<const double *>(dev(c.get())), scalar, n, s.get()));
  KERNEL_ASSERT(uk::sync(s.get()));
  size_t bad = 0, first = n;
  for (size_t i = 0; i < n; ++i)
    if (ha[i] != bv(i) + scalar * cv(i)) {
      if (bad++ == 0) first = i;
    }
  EXPECT_EQ(bad, 0u) << "first wrong element " << first << ": got " << (first < n ? ha[first] : 0.0)
                     << ", expected " << (first < n ? bv(first) + scalar * cv(first) : 0.0);
  EXPECT_TRUE(all_pages_at(a.get(), a.bytes(), UMRT_LOCATION_HOST));
  EXPECT_EQ(hb[n - 1], bv(n - 1));
  EXPECT_EQ(hc[n - 1], cv(n - 1));
}

// ---- oversubscription --------------------------------------------------------------------------

constexpr int kPasses = 16;  // kernels queued back to back, so the stream is still busy afterwards

class GpuOversub : public Gpu {
 protected:
  void Configure(umrt_config &cfg) override { cfg.device_memory = kDeviceMemory; }
  static constexpr size_t kDeviceMemory = 64 * MiB;
  static constexpr size_t kSize = 3 * kDeviceMemory;  // the working set
  static constexpr size_t kChunk = 16 * MiB;
  static constexpr size_t kChunks = kSize / kChunk;
  static constexpr size_t kResident = kDeviceMemory / kChunk;  // chunks that fit at once
  static uint64_t seed_of(size_t chunk) { return 0x0e5b00 + chunk; }
  static uint64_t late_seed(size_t chunk, int pass) { return 0x1a7e00 + 100 * chunk + pass; }

  // What the buffer holds after the CPU fill (seed 3), one page_touch (stride 4 KiB) per chunk and,
  // with `late`, kPasses stride-8 passes over each chunk that a later chunk's prefetch evicts.
  static std::vector<uint8_t> expected(bool late) {
    std::vector<uint8_t> want(kSize);
    fill_pattern(want.data(), kSize, 3);
    for (size_t c = 0; c < kChunks; ++c) {
      touch_image(want, kPage, seed_of(c), c * kChunk, kChunk);
      if (late && c + kResident < kChunks) touch_image(want, 8, late_seed(c, kPasses - 1), c * kChunk, kChunk);
    }
    return want;
  }

  void check_after(const Managed &m, bool late) {
    umrt_stats st = get_stats();
    EXPECT_EQ(st.device_capacity, kDeviceMemory);
    EXPECT_GT(st.evictions, 0u);
    EXPECT_GE(st.evictions, (kSize - st.device_capacity) / kBlock) << "the blocks that passed through must have left";
    EXPECT_LE(st.device_bytes_in_use, st.device_capacity);
    EXPECT_TRUE(all_pages_at(m + (kSize - kChunk), kChunk, UMRT_LOCATION_DEVICE)) << "the last chunk stays";
    EXPECT_EQ(location_of(m.get()), UMRT_LOCATION_HOST) << "the first chunk was evicted";
    // Every byte on the CPU: evicted blocks carried the kernels' words home, the rest faults.
    EXPECT_TRUE(same_bytes(m.get(), expected(late)));
  }
};

// Chunk by chunk: prefetch, kernel, wait. Device memory holds a third of the working set, so
// earlier chunks are evicted with the kernels' data in them.
TEST_F(GpuOversub, KernelOnEachChunkThreeTimesDeviceMemory) {
  Managed m(kSize);
  ASSERT_TRUE(m);
  fill_pattern(m.get(), kSize, 3);
  Stream s;
  CUDA_ASSERT(s.status());
  for (size_t c = 0; c < kChunks; ++c) {
    SCOPED_TRACE("chunk " + std::to_string(c));
    uint8_t *p = m + c * kChunk;
    ASSERT_EQ(umrt_prefetch(p, kChunk, UMRT_LOCATION_DEVICE, nullptr), UMRT_SUCCESS) << last_error();
    ASSERT_TRUE(all_pages_at(p, kChunk, UMRT_LOCATION_DEVICE));
    KERNEL_ASSERT(uk::page_touch(dev(p), kChunk, kPage, seed_of(c), s.get()));
    KERNEL_ASSERT(uk::sync(s.get()));
    ASSERT_LE(get_stats().device_bytes_in_use, kDeviceMemory);
  }
  check_after(m, false);
}

// Stream order only: prefetches and kernels on one stream, one wait at the end. Before each
// prefetch that must evict, kernels are queued that write the least recently prefetched chunk
// (the eviction's victim): the eviction has to wait for them (the device source of a batch is
// made stable first), or their words are lost, or land in a chunk that now holds another block.
TEST_F(GpuOversub, StreamOrderedChunksWithEvictionOfBusyChunks) {
  Managed m(kSize);
  ASSERT_TRUE(m);
  fill_pattern(m.get(), kSize, 3);
  Stream s;
  CUDA_ASSERT(s.status());
  int busy_evictions = 0;
  for (size_t c = 0; c < kChunks; ++c) {
    SCOPED_TRACE("chunk " + std::to_string(c));
    uint8_t *p = m + c * kChunk;
    if (c >= kResident) {  // the device is full: chunk c - kResident goes next
      uint8_t *victim = m + (c - kResident) * kChunk;
      for (int k = 0; k < kPasses; ++k)
        KERNEL_ASSERT(uk::page_touch(dev(victim), kChunk, 8, late_seed(c - kResident, k), s.get()));
      bool busy = false;
      ASSERT_TRUE(stream_busy(s.get(), &busy));
      busy_evictions += busy;
    }
    ASSERT_EQ(umrt_prefetch(p, kChunk, UMRT_LOCATION_DEVICE, s.get()), UMRT_SUCCESS) << last_error();
    KERNEL_ASSERT(uk::page_touch(dev(p), kChunk, kPage, seed_of(c), s.get()));
  }
  KERNEL_ASSERT(uk::sync(s.get()));
  check_after(m, true);
  RecordProperty("stream_busy_before_evicting_prefetch", busy_evictions);
}

// ---- stream order ----------------------------------------------------------------------------

// Queues kPasses page_touch kernels with stride 8 (every word) over the device copy of m; the
// last pass decides every word. Returns the expected final image.
std::vector<uint8_t> queue_passes(const Managed &m, void *stream, uint64_t seed0, bool *ok) {
  *ok = false;
  std::vector<uint8_t> want(m.bytes());
  for (int k = 0; k < kPasses; ++k) {
    int e = uk::page_touch(dev(m.get()), m.bytes(), 8, seed0 + k, stream);
    EXPECT_EQ(e, 0) << "page_touch launch " << k << ": " << uk::error_string(e);
    if (e) return want;
  }
  touch_image(want, 8, seed0 + kPasses - 1);
  *ok = true;
  return want;
}

// umrt_prefetch(..., DEVICE, stream) then a kernel on that stream, nothing in between: the kernel
// sees the data.
TEST_F(Gpu, PrefetchToDeviceOnStreamThenKernel) {
  const size_t size = 48 * MiB + 4 * KiB;
  Managed m(size);
  ASSERT_TRUE(m);
  fill_pattern(m.get(), size, 4);
  std::vector<uint8_t> shadow(size);
  fill_pattern(shadow.data(), size, 4);
  const uint64_t want = uk::host_checksum(shadow.data(), size);
  Stream s;
  CUDA_ASSERT(s.status());
  DeviceWord out;
  CUDA_ASSERT(out.status());
  ASSERT_EQ(umrt_prefetch(m.get(), size, UMRT_LOCATION_DEVICE, s.get()), UMRT_SUCCESS) << last_error();
  KERNEL_ASSERT(uk::checksum(dev(m.get()), size, out.get(), s.get()));
  KERNEL_ASSERT(uk::sync(s.get()));
  uint64_t got = 0;
  ASSERT_TRUE(out.read(&got));
  EXPECT_EQ(got, want) << "the kernel ran before the prefetched data was on the device";
  EXPECT_TRUE(all_pages_at(m.get(), size, UMRT_LOCATION_DEVICE));
}

// Kernels on a stream write the data; umrt_prefetch(..., HOST, stream) right after, without any
// synchronisation by the test, brings the kernels' final data home.
TEST_F(Gpu, KernelThenPrefetchToHostOnStream) {
  const size_t size = 32 * MiB + 4 * KiB;
  Managed m(size);
  ASSERT_TRUE(m);
  fill_pattern(m.get(), size, 5);
  ASSERT_EQ(umrt_prefetch(m.get(), size, UMRT_LOCATION_DEVICE, nullptr), UMRT_SUCCESS) << last_error();
  Stream s;
  CUDA_ASSERT(s.status());
  bool ok = false;
  const std::vector<uint8_t> want = queue_passes(m, s.get(), 0x5eed50, &ok);
  ASSERT_TRUE(ok);
  bool busy = false;
  ASSERT_TRUE(stream_busy(s.get(), &busy));
  ASSERT_EQ(umrt_prefetch(m.get(), size, UMRT_LOCATION_HOST, s.get()), UMRT_SUCCESS) << last_error();
  EXPECT_TRUE(same_bytes(m.get(), want)) << "the prefetch home did not wait for the kernels on its stream";
  KERNEL_ASSERT(uk::sync(s.get()));
  EXPECT_TRUE(all_pages_at(m.get(), size, UMRT_LOCATION_HOST));
  RecordProperty("stream_busy_at_prefetch", busy ? 1 : 0);
}

// A CPU read right after launching kernels that write the pages, no synchronisation by the test:
// the fault must wait for that work and see its final words.
TEST_F(Gpu, CpuReadRightAfterKernelLaunch) {
  const size_t size = 32 * MiB + 4 * KiB;
  Managed m(size);
  ASSERT_TRUE(m);
  fill_pattern(m.get(), size, 6);
  ASSERT_EQ(umrt_prefetch(m.get(), size, UMRT_LOCATION_DEVICE, nullptr), UMRT_SUCCESS) << last_error();
  Stream s;
  CUDA_ASSERT(s.status());
  umrt_stats s0 = get_stats();
  bool ok = false;
  const std::vector<uint8_t> want = queue_passes(m, s.get(), 0x5eed60, &ok);
  ASSERT_TRUE(ok);
  bool busy = false;
  ASSERT_TRUE(stream_busy(s.get(), &busy));
  uint64_t first = 0;
  std::memcpy(&first, m.get(), 8);  // the fault, at once
  EXPECT_EQ(first, uk::touch_word(0x5eed60 + kPasses - 1, 0)) << "the first CPU read saw data before the last kernel";
  EXPECT_TRUE(same_bytes(m.get(), want));
  KERNEL_ASSERT(uk::sync(s.get()));
  EXPECT_GT(get_stats().cpu_faults, s0.cpu_faults);
  EXPECT_TRUE(all_pages_at(m.get(), size, UMRT_LOCATION_HOST));
  RecordProperty("stream_busy_at_fault", busy ? 1 : 0);
}

// The same with a CPU write: the fault waits for the kernels, then the write lands on top of their
// data (and is not overwritten by them afterwards).
TEST_F(Gpu, CpuWriteRightAfterKernelLaunch) {
  const size_t size = 16 * MiB;
  Managed m(size);
  ASSERT_TRUE(m);
  fill_pattern(m.get(), size, 7);
  ASSERT_EQ(umrt_prefetch(m.get(), size, UMRT_LOCATION_DEVICE, nullptr), UMRT_SUCCESS) << last_error();
  Stream s;
  CUDA_ASSERT(s.status());
  bool ok = false;
  std::vector<uint8_t> want = queue_passes(m, s.get(), 0x5eed70, &ok);
  ASSERT_TRUE(ok);
  bool busy = false;
  ASSERT_TRUE(stream_busy(s.get(), &busy));
  const size_t off = 5 * MiB + 3 * kPage + 16;
  const uint64_t mine = 0xc0ffee0123456789ull;
  std::memcpy(m + off, &mine, 8);  // the write fault, at once
  std::memcpy(want.data() + off, &mine, 8);
  KERNEL_ASSERT(uk::sync(s.get()));  // nothing may still be running to overwrite it
  EXPECT_TRUE(same_bytes(m.get(), want));
  RecordProperty("stream_busy_at_fault", busy ? 1 : 0);
}

// ---- injected copy failures ------------------------------------------------------------------

// A failed host->device copy: UMRT_ERROR_BACKEND, the failed run stays on the host with its data,
// nothing is lost; the retry moves everything and the kernel sees the data.
TEST_F(Gpu, InjectedCopyFailureToDevice) {
  const size_t size = 4 * MiB + 12 * KiB;
  Managed m(size);
  ASSERT_TRUE(m);
  fill_pattern(m.get(), size, 8);
  std::vector<uint8_t> shadow(size);
  fill_pattern(shadow.data(), size, 8);
  umrt_stats s0 = get_stats();
  ASSERT_EQ(umrt_inject_failure(UMRT_INJECT_COPY, 1, 1), UMRT_SUCCESS) << last_error();
  umrt_status st = umrt_prefetch(m.get(), size, UMRT_LOCATION_DEVICE, nullptr);
  const std::string err = last_error();
  EXPECT_EQ(st, UMRT_ERROR_BACKEND) << str(st);
  EXPECT_FALSE(err.empty()) << "no reason given for the failure";
  umrt_stats s1 = get_stats();
  EXPECT_GT(count_pages_at(m.get(), size, UMRT_LOCATION_HOST), 0u) << "the failed copy's pages must stay home";
  EXPECT_GT(s1.pages_restored, s0.pages_restored);
  EXPECT_EQ(s1.pages_to_device - s0.pages_to_device, count_pages_at(m.get(), size, UMRT_LOCATION_DEVICE));
  EXPECT_EQ(umrt_validate(), UMRT_SUCCESS) << last_error();
  EXPECT_TRUE(same_bytes(m.get(), shadow)) << "data lost by the failed copy";

  ASSERT_EQ(umrt_prefetch(m.get(), size, UMRT_LOCATION_DEVICE, nullptr), UMRT_SUCCESS) << last_error();
  ASSERT_TRUE(all_pages_at(m.get(), size, UMRT_LOCATION_DEVICE));
  Stream s;
  CUDA_ASSERT(s.status());
  uint64_t got = 0;
  ASSERT_TRUE(gpu_checksum(m.get(), size, s.get(), &got));
  EXPECT_EQ(got, uk::host_checksum(shadow.data(), size));
}

// A failed device->host copy of kernel-written data (one run, one copy): UMRT_ERROR_BACKEND, every
// page stays on the device with the kernel's data; the CPU then gets it.
TEST_F(Gpu, InjectedCopyFailureToHost) {
  const size_t size = 1 * MiB;
  Managed m(size);
  ASSERT_TRUE(m);
  fill_pattern(m.get(), size, 9);
  ASSERT_EQ(umrt_prefetch(m.get(), size, UMRT_LOCATION_DEVICE, nullptr), UMRT_SUCCESS) << last_error();
  Stream s;
  CUDA_ASSERT(s.status());
  KERNEL_ASSERT(uk::page_touch(dev(m.get()), size, kPage, 0x1badc0, s.get()));
  KERNEL_ASSERT(uk::sync(s.get()));
  std::vector<uint8_t> want(size);
  fill_pattern(want.data(), size, 9);
  touch_image(want, kPage, 0x1badc0);

  umrt_stats s0 = get_stats();
  ASSERT_EQ(umrt_inject_failure(UMRT_INJECT_COPY, 1, 1), UMRT_SUCCESS) << last_error();
  umrt_status st = umrt_prefetch(m.get(), size, UMRT_LOCATION_HOST, nullptr);
  const std::string err = last_error();
  EXPECT_EQ(st, UMRT_ERROR_BACKEND) << str(st);
  EXPECT_FALSE(err.empty()) << "no reason given for the failure";
  umrt_stats s1 = get_stats();
  EXPECT_TRUE(all_pages_at(m.get(), size, UMRT_LOCATION_DEVICE));
  EXPECT_EQ(s1.pages_restored - s0.pages_restored, m.pages());
  EXPECT_EQ(s1.bytes_to_host, s0.bytes_to_host) << "a failed copy must not count as copied";
  EXPECT_EQ(s1.device_bytes_in_use, s0.device_bytes_in_use) << "the device copy must be kept";
  EXPECT_EQ(umrt_validate(), UMRT_SUCCESS) << last_error();
  uint64_t got = 0;
  ASSERT_TRUE(gpu_checksum(m.get(), size, s.get(), &got));
  EXPECT_EQ(got, uk::host_checksum(want.data(), size)) << "the device copy changed";
  EXPECT_TRUE(same_bytes(m.get(), want)) << "the kernel's data did not come home after the failure";
}

}  // namespace

// ---- first-run probes (scripts/gpu-check.sh runs each as a row of its table) ------------------

namespace {

class GpuFirstRun : public Gpu {
 protected:
  void Configure(umrt_config &cfg) override { cfg.device_memory = 1 * GiB; }
};

// umrt called from a thread that has made no CUDA call: umrt makes its own context current for
// its calls and leaves the thread as it was; the data reaches the device (checksum kernel).
TEST_F(GpuFirstRun, PrefetchFromAThreadWithoutCuda) {
  const size_t size = 8 * MiB;
  Managed m(size);
  ASSERT_TRUE(m);
  umrt_status st = UMRT_ERROR_BACKEND;
  std::string why;
  std::thread t([&] {
    fill_pattern(m.get(), size, 90);
    st = umrt_prefetch(m.get(), size, UMRT_LOCATION_DEVICE, nullptr);
    if (st != UMRT_SUCCESS) why = last_error();
  });
  t.join();
  ASSERT_EQ(st, UMRT_SUCCESS) << why;
  std::vector<uint8_t> shadow(size);
  fill_pattern(shadow.data(), size, 90);
  Stream s;
  CUDA_ASSERT(s.status());
  uint64_t got = 0;
  ASSERT_TRUE(gpu_checksum(m.get(), size, s.get(), &got));
  EXPECT_EQ(got, uk::host_checksum(shadow.data(), size));
}

// Device memory taken after umrt_init (a cudaMalloc ballast leaves 256 MiB free): a prefetch past
// what is left evicts and goes on (capacity shrinks), it does not fail, and every byte stays.
TEST_F(GpuFirstRun, BallastAfterInitThenPrefetchPastWhatIsLeft) {
  size_t free_b = 0, total_b = 0;
  CUDA_ASSERT(cudaMemGetInfo(&free_b, &total_b));
  if (free_b < 512 * MiB) GTEST_SKIP() << "less than 512 MiB of GPU memory free";
  void *ballast = nullptr;
  CUDA_ASSERT(cudaMalloc(&ballast, free_b - 256 * MiB));
  const size_t size = 512 * MiB;
  {
    Managed m(size);
    ASSERT_TRUE(m);
    fill_pattern(m.get(), size, 91);
    const umrt_status st = umrt_prefetch(m.get(), size, UMRT_LOCATION_DEVICE, nullptr);
    EXPECT_EQ(st, UMRT_SUCCESS) << last_error();
    EXPECT_LT(get_stats().device_capacity, 1 * GiB) << "the capacity should shrink to what could be had";
    EXPECT_TRUE(check_pattern(m.get(), size, 91));
  }
  CUDA_ASSERT(cudaFree(ballast));
}

// Sixteen page-touch kernels queued on the range, then an immediate umrt_free, then the stream
// is waited for: no illegal address (the free waits for the device before unmapping chunks).
TEST_F(GpuFirstRun, QueuedKernelsThenImmediateFree) {
  const size_t size = 64 * MiB;
  void *p = nullptr;
  ASSERT_EQ(umrt_malloc(&p, size), UMRT_SUCCESS) << last_error();
  ASSERT_EQ(umrt_prefetch(p, size, UMRT_LOCATION_DEVICE, nullptr), UMRT_SUCCESS) << last_error();
  void *d = nullptr;
  ASSERT_EQ(umrt_device_pointer(p, &d), UMRT_SUCCESS) << last_error();
  Stream s;
  CUDA_ASSERT(s.status());
  for (int k = 0; k < 16; ++k) KERNEL_ASSERT(uk::page_touch(d, size, kPage, 100 + k, s.get()));
  EXPECT_EQ(umrt_free(p), UMRT_SUCCESS) << last_error();
  KERNEL_ASSERT(uk::sync(s.get()));
}

}  // namespace
