// vector_add — the basic umrt round trip: three managed arrays, first touch on the CPU, prefetch
// to the device, a kernel c = a + b through device pointers, then the CPU reads c and its pages
// come back through userfaultfd faults (no prefetch back, on purpose). Prints what moved and how
// fast, from umrt_get_stats().
//
// The kernel depends on the backend: on cuda, the GPU kernel umrt_kernels::vector_add (kernels/)
// queued on a stream right behind umrt_prefetch(..., UMRT_LOCATION_DEVICE, stream) on that
// stream, so it sees the data with no host wait; on sim, host threads over the addresses
// umrt_device_pointer() returns. (Which backend, and when the GPU path is built: sample_util.h.)
//
//   vector_add [--n N] [--threads T]   N floats per array (K/M/G, default 64M); T host threads
//
// Exit status: 0 success, 1 a wrong element, 2 a umrt or CUDA error (or bad arguments),
// 77 skipped: UMRT_BACKEND=cuda was asked for and no GPU is usable (the reason on stderr).
#include <umrt/umrt.hpp>

#include "sample_util.h"  // arguments, timing, CUDA checks, printing (and <atomic>, <thread>)

// Small integers, so a + b is exact in float and c can be checked without reading a or b
// (which would fault them back too).
static float a_value(std::size_t i) { return static_cast<float>(i & 1023); }
static float b_value(std::size_t i) { return static_cast<float>((i >> 10) & 1023); }

int main(int argc, char **argv) try {
  const sample::Args args{argc, argv, "[--n ELEMENTS] [--threads T]"};
  args.check_known({"n", "threads"});
  const uint64_t n = args.size("n", 64ull << 20), bytes = n * sizeof(float);
  const unsigned threads = args.threads();
  const std::size_t block = (2u << 20) / sizeof(float);  // threads split work at 2 MiB blocks

  umrt::runtime rt = sample::start(sample::config());  // umrt_init; umrt_shutdown at the end
  const bool on_gpu = sample::kernel_on_gpu();
  std::printf("umrt vector_add: backend %s, n = %llu floats (%.1f MiB per array, %.1f MiB in all), "
              "%u threads%s\n", umrt_backend_name(), sample::ull(n), sample::mib(bytes),
              sample::mib(3 * bytes), threads, on_gpu ? " (kernel on the GPU)" : "");
  sample::Stream stream(on_gpu);  // the GPU path's stream (declared before the buffers: outlives them)

  // Three managed arrays. Nothing is resident anywhere yet: every page reads as zero.
  umrt::buffer<float> a(n), b(n), c(n);

  // 1. First touch on the CPU: the pages fault in as zero-filled host pages.
  const umrt_stats s0 = sample::stats();
  auto t0 = sample::clock_type::now();
  sample::parallel_for(n, threads, block, [&](std::size_t i) {
    a[i] = a_value(i);
    b[i] = b_value(i);
  });
  const double t_init = sample::seconds_since(t0);
  const umrt_stats s1 = sample::stats();

  // 2. Prefetch all three arrays to the device (on the GPU ordered on the stream, like
  //    cudaMemPrefetchAsync; on sim synchronous). a and b are copied; c was never touched, so
  //    its pages become zero-filled device pages, no copy.
  t0 = sample::clock_type::now();
  for (const umrt::buffer<float> *buf : {&a, &b, &c}) buf->prefetch(umrt::location::device, 0, n, stream.get());
  for (const umrt::buffer<float> *buf : {&a, &b, &c})  // there now: first and last page
    if (buf->where(0) != umrt::location::device || buf->where(n - 1) != umrt::location::device)
      return std::fprintf(stderr, "vector_add: a page is not on the device after umrt_prefetch\n"), 1;

  // 3. The kernel c = a + b, through device addresses only.
  const float *da = a.device_data(), *db = b.device_data();
  float *dc = c.device_data();
  double t_prefetch = 0, t_kernel = 0;
  umrt_stats s2{};
  if (on_gpu) {
#if SAMPLE_GPU
    stream.mark(0);  // event 0 after the prefetches, then the kernel right behind them
    sample::check_cuda(umrt_kernels::vector_add(da, db, dc, n, stream.get()), "vector_add kernel launch");
    stream.mark(1);
    stream.wait(0);  // the prefetch phase ends when the stream passes the event after it
    t_prefetch = sample::seconds_since(t0);
    s2 = sample::stats();
    sample::check_cuda(umrt_kernels::sync(stream.get()), "vector_add kernel");  // its own errors
    t_kernel = stream.seconds();  // GPU time between the two events
#endif
  } else {
    t_prefetch = sample::seconds_since(t0);
    s2 = sample::stats();
    t0 = sample::clock_type::now();
    sample::parallel_for(n, threads, block, [&](std::size_t i) { dc[i] = da[i] + db[i]; });
    t_kernel = sample::seconds_since(t0);
  }
  const umrt_stats s3 = sample::stats();

  // 4. Read c on the CPU without prefetching it back: each access to a device-resident page
  //    faults, and the fault service migrates it (plus a growing prefetch window) home.
  std::atomic<uint64_t> wrong{0};
  t0 = sample::clock_type::now();
  sample::parallel_for(n, threads, block, [&](std::size_t i) {
    if (c[i] != a_value(i) + b_value(i)) ++wrong;
  });
  const double t_read = sample::seconds_since(t0);
  const umrt_stats s4 = sample::stats();

  using sample::ull;
  sample::table_header();
  sample::row("1 first touch a, b on CPU", t_init, 2 * bytes, "written; %llu zero-fills, %llu faults",
              ull(s1.zero_fills - s0.zero_fills), ull(s1.cpu_faults - s0.cpu_faults));
  sample::row("2 prefetch a, b, c -> device", t_prefetch, s2.bytes_to_device - s1.bytes_to_device,
              "copied to device; %llu batches", ull(s2.batches - s1.batches));
  sample::row(on_gpu ? "3 kernel c = a + b (GPU events)" : "3 kernel c = a + b (device ptrs)", t_kernel,
              3 * bytes, "read a, b + written c");
  sample::row("4 read c on CPU (fault back)", t_read, s4.bytes_to_host - s3.bytes_to_host,
              "copied to host; %llu faults in %llu groups", ull(s4.cpu_faults - s3.cpu_faults),
              ull(s4.fault_groups - s3.fault_groups));
  sample::print_stats(s4);

  if (wrong != 0) {
    std::size_t i = 0;
    while (c[i] == a_value(i) + b_value(i)) ++i;
    std::fprintf(stderr, "vector_add: FAILED: %llu wrong elements; first c[%zu] = %g, expected %g\n",
                 ull(wrong.load()), i, double(c[i]), double(a_value(i) + b_value(i)));
    return 1;
  }
  std::printf("vector_add: all %llu elements correct\n", ull(n));
  return 0;
} catch (const std::exception &e) {
  return sample::fail(e);
}
