// map_file — file-backed managed memory: a file mapped with umrt_map_file, read by the CPU
// (pages come from the file through io_uring as they are touched), streamed to the device
// without a host copy, changed on the CPU, and written back with umrt_flush. With
// --host-memory, the host-memory budget: the file may be larger than it, and pages leave host
// memory again (clean ones dropped, written ones written back first). Prints what moved and how
// fast.
//
//   map_file [--file PATH] [--size N] [--host-memory N]
//     --file: an existing file to use (it is changed: every 4096th byte is incremented and
//             flushed); default: a temporary file of --size bytes (default 256M), removed after.
//
// Exit status: 0 success, 1 wrong data, 2 a umrt error or bad arguments.
#include <fcntl.h>
#include <unistd.h>

#include <vector>

#include "sample_util.h"

int main(int argc, char **argv) {
  const sample::Args args{argc, argv, "[--file PATH] [--size N] [--host-memory N]"};
  args.check_known({"file", "size", "host-memory"});
  std::string path = args.get("file") ? args.get("file") : "";
  const uint64_t want_size = args.size("size", 256ull << 20);
  umrt_config cfg{};
  sample::check(umrt_config_defaults(&cfg), "umrt_config_defaults");
  cfg.host_memory = args.size("host-memory", cfg.host_memory);
  sample::check(umrt_init(&cfg), "umrt_init");

  const bool temporary = path.empty();
  if (temporary) {  // a file of a known pattern: byte k is k * 7 mod 251
    const char *tmp = std::getenv("TMPDIR");
    path = std::string(tmp && *tmp ? tmp : "/tmp") + "/umrt-map-file-XXXXXX";
    const int fd = mkstemp(path.data());
    if (fd < 0) return std::perror("mkstemp"), 2;
    std::vector<unsigned char> block(1 << 20);
    for (uint64_t off = 0; off < want_size; off += block.size()) {
      for (size_t k = 0; k < block.size(); ++k) block[k] = static_cast<unsigned char>((off + k) * 7 % 251);
      if (pwrite(fd, block.data(), block.size(), static_cast<off_t>(off)) < 0) return std::perror("pwrite"), 2;
    }
    fsync(fd);
    posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);  // cold: not in the page cache
    close(fd);
  }

  void *p = nullptr;
  sample::check(umrt_map_file(path.c_str(), 0, 0, UMRT_MAP_READ | UMRT_MAP_WRITE, &p), "umrt_map_file");
  const int fd = open(path.c_str(), O_RDONLY);
  const uint64_t bytes = static_cast<uint64_t>(lseek(fd, 0, SEEK_END));
  close(fd);
  auto *c = static_cast<unsigned char *>(p);
  umrt_location where;
  sample::check(umrt_page_location(c, &where), "umrt_page_location");
  std::printf("%s: %.0f MiB mapped, first page in %s\n", path.c_str(), sample::mib(bytes),
              where == UMRT_LOCATION_STORAGE ? "STORAGE" : "memory");

  // 1. The CPU reads it all: faults bring it in from the file, in growing windows.
  umrt_stats a = sample::stats();
  auto t0 = sample::clock_type::now();
  uint64_t sum = 0;
  for (uint64_t k = 0; k < bytes; k += 64) sum += c[k];
  double s = sample::seconds_since(t0);
  umrt_stats b = sample::stats();
  bool exact = true;
  if (temporary)
    for (uint64_t k = 0; k < bytes && exact; k += 4093) exact = c[k] == static_cast<unsigned char>(k * 7 % 251);
  std::printf("CPU read:        %.2f GB/s, %llu faults, %.0f MiB from storage (checksum %llu)%s\n",
              sample::gbps(bytes, s), (unsigned long long)(b.cpu_faults - a.cpu_faults),
              sample::mib(b.bytes_from_storage - a.bytes_from_storage), (unsigned long long)sum,
              b.pages_dropped_clean > a.pages_dropped_clean ? ", clean pages dropped for the budget" : "");

  // 2. To the device: pages still in the file go file -> staging -> device, no host copy.
  a = sample::stats();
  t0 = sample::clock_type::now();
  sample::check(umrt_prefetch(c, bytes, UMRT_LOCATION_DEVICE, nullptr), "umrt_prefetch");
  s = sample::seconds_since(t0);
  b = sample::stats();
  std::printf("to the device:   %.2f GB/s (%.0f MiB from host memory, %.0f MiB from storage)\n",
              sample::gbps(bytes, s), sample::mib(b.bytes_to_device - a.bytes_to_device),
              sample::mib(b.bytes_from_storage - a.bytes_from_storage));

  // 3. The CPU changes one byte per page (the pages fault back), then umrt_flush writes what
  //    changed: pages written, or on the device (a kernel may have written them).
  for (uint64_t k = 0; k < bytes; k += 4096) c[k] = static_cast<unsigned char>(c[k] + 1);
  a = sample::stats();
  t0 = sample::clock_type::now();
  sample::check(umrt_flush(c, bytes), "umrt_flush");
  s = sample::seconds_since(t0);
  b = sample::stats();
  std::printf("umrt_flush:      %.0f MiB written in %.3f s, on disk (fdatasync)\n",
              sample::mib(b.bytes_to_storage - a.bytes_to_storage), s);
  if (b.swap_outs || b.pages_dropped_clean)
    std::printf("host budget:     %llu pages dropped clean, %llu swapped out, %llu back in; %.0f MiB on the host now\n",
                (unsigned long long)b.pages_dropped_clean, (unsigned long long)b.swap_outs,
                (unsigned long long)b.swap_ins, sample::mib(b.host_pages * 4096));

  sample::check(umrt_free(p), "umrt_free");  // (flushes first: nothing left to write)
  if (temporary) {  // the file now holds the pattern + 1 at every 4096th byte
    const int rfd = open(path.c_str(), O_RDONLY);
    for (uint64_t k = 0; k < bytes && exact; k += 4096 * 97) {
      unsigned char v = 0;
      exact = pread(rfd, &v, 1, static_cast<off_t>(k)) == 1 && v == static_cast<unsigned char>(k * 7 % 251 + 1);
    }
    close(rfd);
    unlink(path.c_str());
  }
  sample::check(umrt_shutdown(), "umrt_shutdown");
  std::printf("%s\n", exact ? "data exact" : "WRONG DATA");
  return exact ? 0 : 1;
}
