// oversubscribe — a STREAM-like triad a = b + s * c over a working set larger than device memory.
// The arrays are processed chunk by chunk: prefetch the chunk's b, c and a to the device, run the
// triad there through device pointers, move on. Nothing is ever freed or prefetched back by hand:
// when device memory is full, umrt evicts the least recently used blocks (older chunks) to the
// host by itself. At the end the CPU checks every element (device-resident chunks fault back)
// and the sample prints the evictions and the rates. With UMRT_TRACE=file.json the run is a
// trace that scripts/plot_trace.py draws as block residency over time.
//
// The triad depends on the backend: on cuda, the GPU kernel umrt_kernels::triad (kernels/)
// queued on a stream right behind the chunk's umrt_prefetch(..., stream) calls (the sample waits
// for each chunk's kernel, to time prefetch and kernel apart); on sim, host threads over the
// umrt_device_pointer() addresses. (Which backend, and when the GPU path is built: sample_util.h.)
//
//   oversubscribe [--device-memory N] [--size N] [--chunk N] [--threads T] [--passes N]
//     --device-memory  device capacity to configure (default 256M, also on a GPU)
//     --size           working set, all three arrays (default 3x the reported capacity)
//     --chunk          bytes of each array per step (default 32M)
//     --passes         walks of the triad over the working set (default 1; more: a run to watch)
//
// Exit status: 0 success, 1 a wrong element or no eviction happened, 2 a umrt or CUDA error (or
// bad arguments), 77 skipped: UMRT_BACKEND=cuda was asked for and no GPU is usable.
#include <umrt/umrt.hpp>

#include "sample_util.h"  // arguments, timing, CUDA checks, printing (and <atomic>, <thread>)

constexpr float kScalar = 3.0f;
// Small integers, so b + s * c is exact in float and a can be checked without reading b or c.
static float b_value(std::size_t i) { return static_cast<float>(i & 1023); }
static float c_value(std::size_t i) { return static_cast<float>((i >> 10) & 511); }

int main(int argc, char **argv) try {
  const sample::Args args{argc, argv, "[--device-memory BYTES] [--size BYTES] [--chunk BYTES] [--threads T] [--passes N]"};
  args.check_known({"device-memory", "size", "chunk", "threads", "passes"});
  const uint64_t passes = args.size("passes", 1);
  const uint64_t size = args.size("size", 0), want_chunk = args.size("chunk", 32ull << 20);
  const unsigned threads = args.threads();
  const std::size_t page = 4096 / sizeof(float);  // threads split work at page boundaries

  umrt_config cfg = sample::config();
  cfg.device_memory = args.size("device-memory", 256ull << 20);
  umrt::runtime rt = sample::start(cfg);  // umrt_init; umrt_shutdown at the end
  const bool on_gpu = sample::kernel_on_gpu();
  const uint64_t capacity = sample::stats().device_capacity;
  if (capacity == 0) throw std::runtime_error("umrt_get_stats() reports a device capacity of 0");
  // Per array: a third of the working set, whole pages. Per chunk: at most a quarter of the
  // capacity (three arrays' chunks must fit on the device at once), whole 2 MiB blocks when
  // possible so that chunks do not share blocks.
  const uint64_t array_bytes = (size ? size : 3 * capacity) / 3 / 4096 * 4096;
  if (array_bytes == 0) throw std::runtime_error("--size: less than 3 pages");
  const uint64_t quarter = capacity / 4, unit = quarter >= (2u << 20) ? (2u << 20) : 4096;
  const uint64_t chunk_bytes = std::max<uint64_t>(4096, std::min({want_chunk, quarter / unit * unit, array_bytes}) / 4096 * 4096);
  const std::size_t n = array_bytes / sizeof(float), chunk = chunk_bytes / sizeof(float);
  std::printf("umrt oversubscribe: backend %s, device capacity %.1f MiB, working set %.1f MiB (3 arrays "
              "of %.1f MiB = %.2fx capacity), chunk %.1f MiB per array, %u threads%s\n",
              umrt_backend_name(), sample::mib(capacity), sample::mib(3 * array_bytes),
              sample::mib(array_bytes), 3.0 * double(array_bytes) / double(capacity),
              sample::mib(chunk_bytes), threads, on_gpu ? " (triad on the GPU)" : "");

  sample::Stream stream(on_gpu);  // the GPU path's stream (declared before the buffers: outlives them)
  umrt::buffer<float> a(n), b(n), c(n);

  // b and c start on the CPU (first touch); a is never touched by the CPU before the triad,
  // so its pages become zero-filled device pages when prefetched.
  auto t0 = sample::clock_type::now();
  sample::parallel_for(n, threads, page, [&](std::size_t i) {
    b[i] = b_value(i);
    c[i] = c_value(i);
  });
  const double t_init = sample::seconds_since(t0);
  const umrt_stats s0 = sample::stats();

  double t_prefetch = 0, t_kernel = 0;
  const auto t_loop = sample::clock_type::now();
  for (uint64_t pass = 0; pass < passes; ++pass)  // (--passes: each pass the same triad again)
  for (std::size_t first = 0; first < n; first += chunk) {
    const std::size_t count = std::min(chunk, n - first);
    // Stage the chunk on the device; when device memory runs out umrt evicts older chunks.
    t0 = sample::clock_type::now();
    for (const umrt::buffer<float> *buf : {&b, &c, &a})
      buf->prefetch(umrt::location::device, first, count, stream.get());
    for (const umrt::buffer<float> *buf : {&a, &b, &c})  // there now: first and last page
      if (buf->where(first) != umrt::location::device || buf->where(first + count - 1) != umrt::location::device)
        return std::fprintf(stderr, "oversubscribe: chunk at element %zu is not on the device after umrt_prefetch\n",
                            first), 1;
    // The triad on the chunk's device addresses (valid while it is resident).
    float *da = a.device_data(first);
    const float *db = b.device_data(first), *dc = c.device_data(first);
    if (on_gpu) {
#if SAMPLE_GPU
      stream.mark(0);  // event 0 after the prefetches, then the kernel right behind them
      sample::check_cuda(umrt_kernels::triad(da, db, dc, kScalar, count, stream.get()), "triad kernel launch");
      stream.mark(1);
      stream.wait(0);  // the prefetch phase ends when the stream passes the event after it
      t_prefetch += sample::seconds_since(t0);
      sample::check_cuda(umrt_kernels::sync(stream.get()), "triad kernel");  // its own errors
      t_kernel += stream.seconds();  // GPU time between the two events
#endif
    } else {
      t_prefetch += sample::seconds_since(t0);
      t0 = sample::clock_type::now();
      sample::parallel_for(count, threads, page, [&](std::size_t i) { da[i] = db[i] + kScalar * dc[i]; });
      t_kernel += sample::seconds_since(t0);
    }
  }
  const double t_total = sample::seconds_since(t_loop);
  const umrt_stats s1 = sample::stats();

  // Check every element of a on the CPU: evicted chunks are already home, the chunks still on
  // the device fault back.
  std::atomic<uint64_t> wrong{0};
  t0 = sample::clock_type::now();
  sample::parallel_for(n, threads, page, [&](std::size_t i) {
    if (a[i] != b_value(i) + kScalar * c_value(i)) ++wrong;
  });
  const double t_check = sample::seconds_since(t0);
  const umrt_stats s2 = sample::stats();

  const uint64_t triad_bytes = 3 * array_bytes;  // read b, c; write a
  const uint64_t to_device = s1.bytes_to_device - s0.bytes_to_device, evicted = s1.bytes_to_host - s0.bytes_to_host;
  sample::table_header();
  sample::row("first touch b, c on CPU", t_init, 2 * array_bytes, "written");
  sample::row("prefetch chunks (with evictions)", t_prefetch, to_device + evicted,
              "to device %.1f MiB, evicted to host %.1f MiB", sample::mib(to_device), sample::mib(evicted));
  sample::row(on_gpu ? "triad on GPU (kernel time, events)" : "triad on device (kernel time only)", t_kernel,
              triad_bytes, "read b, c + written a");
  sample::row("triad end to end (prefetch + kernel)", t_total, triad_bytes, "read b, c + written a");
  sample::row("check a on CPU (fault back)", t_check, s2.bytes_to_host - s1.bytes_to_host,
              "copied to host; %llu faults", sample::ull(s2.cpu_faults - s1.cpu_faults));
  sample::print_stats(s2);

  if (wrong != 0) {
    std::size_t i = 0;
    while (a[i] == b_value(i) + kScalar * c_value(i)) ++i;
    std::fprintf(stderr, "oversubscribe: FAILED: %llu wrong elements; first a[%zu] = %g, expected %g\n",
                 sample::ull(wrong.load()), i, double(a[i]), double(b_value(i) + kScalar * c_value(i)));
    return 1;
  }
  if (3 * array_bytes > capacity && s1.evictions == s0.evictions) {
    std::fprintf(stderr, "oversubscribe: FAILED: the working set exceeds device memory but nothing was evicted\n");
    return 1;
  }
  std::printf("oversubscribe: all %zu elements correct\n", n);
  return 0;
} catch (const std::exception &e) {
  return sample::fail(e);
}
