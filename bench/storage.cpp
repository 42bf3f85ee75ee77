// storage.cpp — umrt-bench's storage scenarios (storage.h): file-read, file-to-device, spill,
// each with its baselines measured in the same run (raw io_uring with liburing, mmap, the bare
// userfaultfd handler of baselines.h).
#include "storage.h"

#include <fcntl.h>
#include <liburing.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <stdexcept>

#include "baselines.h"

namespace bench::storage {
namespace {

using Clock = std::chrono::steady_clock;
double secs(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

[[noreturn]] void fail(const std::string &what) { throw std::runtime_error(what); }
void check(umrt_status s, const char *what) {
  if (s != UMRT_SUCCESS) fail(std::string(what) + ": " + umrt_status_string(s) + ": " + umrt_last_error());
}

double pct(std::vector<double> v, double q) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<size_t>(q * static_cast<double>(v.size())))];
}
double median(std::vector<double> v) { return pct(std::move(v), 0.5); }

std::string dir_of(const Options &o) {
  if (!o.dir.empty()) return o.dir;
  const char *t = std::getenv("TMPDIR");
  return t && *t ? t : "/tmp";
}

// A file of `bytes` of a pattern, on disk (fsynced), removed on destruction.
struct File {
  std::string path;
  size_t bytes;
  File(const std::string &dir, size_t n) : bytes(n) {
    path = dir + "/umrt-bench-file-XXXXXX";
    int fd = mkstemp(path.data());
    if (fd < 0) fail("cannot create a file in " + dir + ": " + strerror(errno));
    std::vector<char> buf(kBlock);
    std::mt19937_64 rng(7);
    for (size_t off = 0; off < n; off += buf.size()) {
      for (size_t k = 0; k < buf.size(); k += 8) {
        const uint64_t v = rng();
        std::memcpy(&buf[k], &v, 8);
      }
      const size_t len = std::min(buf.size(), n - off);
      if (pwrite(fd, buf.data(), len, static_cast<off_t>(off)) != static_cast<ssize_t>(len)) fail("write " + path);
    }
    fsync(fd);
    close(fd);
  }
  ~File() { unlink(path.c_str()); }
  // The page cache keeps none of it ("cold").
  void drop_cache() const {
    int fd = open(path.c_str(), O_RDONLY);
    if (fd < 0) return;
    fdatasync(fd);
    posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
    close(fd);
  }
};

// Raw io_uring O_DIRECT: the whole file (or `bytes` of it) in `chunk`-byte reads (or writes),
// `depth` in flight, into one aligned buffer per slot. Seconds.
double raw_uring(const std::string &path, size_t bytes, size_t chunk, unsigned depth, bool write) {
  int fd = open(path.c_str(), (write ? O_WRONLY : O_RDONLY) | O_DIRECT | O_CLOEXEC);
  if (fd < 0) fail("O_DIRECT open of " + path + ": " + strerror(errno));
  io_uring ring;
  if (io_uring_queue_init(depth * 2, &ring, 0) < 0) fail("io_uring_queue_init");
  std::vector<void *> bufs(depth);
  for (auto &b : bufs)
    if (posix_memalign(&b, 4096, chunk)) fail("posix_memalign");
  for (void *b : bufs) std::memset(b, 0x5a, chunk);
  const auto t0 = Clock::now();
  size_t next = 0, done = 0;
  unsigned inflight = 0;
  std::vector<unsigned> free_slots;
  for (unsigned i = 0; i < depth; ++i) free_slots.push_back(i);
  while (done < bytes) {
    while (!free_slots.empty() && next < bytes) {
      const unsigned s = free_slots.back();
      free_slots.pop_back();
      io_uring_sqe *sqe = io_uring_get_sqe(&ring);
      const unsigned len = static_cast<unsigned>(std::min(chunk, bytes - next));
      if (write) io_uring_prep_write(sqe, fd, bufs[s], len, next);
      else io_uring_prep_read(sqe, fd, bufs[s], len, next);
      io_uring_sqe_set_data64(sqe, s);
      next += len;
      ++inflight;
    }
    io_uring_submit(&ring);
    io_uring_cqe *cqe = nullptr;
    if (io_uring_wait_cqe(&ring, &cqe) < 0) fail("io_uring_wait_cqe");
    if (cqe->res <= 0) fail(std::string("raw io_uring op: ") + strerror(-cqe->res));
    done += static_cast<size_t>(cqe->res);
    free_slots.push_back(static_cast<unsigned>(io_uring_cqe_get_data64(cqe)));
    io_uring_cqe_seen(&ring, cqe);
    --inflight;
  }
  const double s = secs(Clock::now() - t0);
  io_uring_queue_exit(&ring);
  for (void *b : bufs) free(b);
  close(fd);
  return s;
}

// Latencies (us) of single 4 KiB O_DIRECT reads through io_uring at the given pages.
std::vector<double> raw_random_us(const std::string &path, const std::vector<size_t> &pages) {
  int fd = open(path.c_str(), O_RDONLY | O_DIRECT | O_CLOEXEC);
  if (fd < 0) fail("O_DIRECT open: " + std::string(strerror(errno)));
  io_uring ring;
  if (io_uring_queue_init(4, &ring, 0) < 0) fail("io_uring_queue_init");
  void *buf = nullptr;
  if (posix_memalign(&buf, 4096, 4096)) fail("posix_memalign");
  std::vector<double> us;
  for (size_t p : pages) {
    const auto t0 = Clock::now();
    io_uring_sqe *sqe = io_uring_get_sqe(&ring);
    io_uring_prep_read(sqe, fd, buf, 4096, p * kPage);
    io_uring_submit(&ring);
    io_uring_cqe *cqe = nullptr;
    io_uring_wait_cqe(&ring, &cqe);
    io_uring_cqe_seen(&ring, cqe);
    us.push_back(std::chrono::duration<double, std::micro>(Clock::now() - t0).count());
  }
  io_uring_queue_exit(&ring);
  free(buf);
  close(fd);
  return us;
}

uint64_t touch_seq(const volatile char *p, size_t bytes) {
  uint64_t s = 0;
  for (size_t off = 0; off < bytes; off += kPage) s += static_cast<unsigned char>(p[off]);
  return s;
}

scale::Target target(std::string name, std::string baseline, double value, double want, bool at_most) {
  scale::Target t;
  t.name = std::move(name);
  t.baseline = std::move(baseline);
  t.value = value;
  t.want = want;
  t.at_most = at_most;
  return t;
}

json file_read(const Options &o, const Hooks &h, std::vector<scale::Target> &targets) {
  // One file per contender: on a VM the disk's host keeps what was read last, so a second
  // reader of the same file would find it warm there whatever the guest's page cache says.
  File f(dir_of(o), o.file_bytes), fm(dir_of(o), o.file_bytes), fr(dir_of(o), o.file_bytes);
  const size_t bytes = f.bytes;
  std::fprintf(stderr, "file-read: %zu MiB file in %s\n", bytes >> 20, dir_of(o).c_str());
  umrt_config c = h.config();
  h.restart(c);
  std::vector<double> gu, gm, gr;
  for (unsigned r = 0; r < o.warmup + o.reps; ++r) {
    f.drop_cache();
    void *p = nullptr;
    check(umrt_map_file(f.path.c_str(), 0, 0, UMRT_MAP_READ, &p), "umrt_map_file");
    auto t0 = Clock::now();
    touch_seq(static_cast<char *>(p), bytes);
    const double su = secs(Clock::now() - t0);
    check(umrt_free(p), "umrt_free");
    fm.drop_cache();
    int fd = open(fm.path.c_str(), O_RDONLY);
    void *m = mmap(nullptr, bytes, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (m == MAP_FAILED) fail("mmap");
    t0 = Clock::now();
    touch_seq(static_cast<char *>(m), bytes);
    const double sm = secs(Clock::now() - t0);
    munmap(m, bytes);
    const double sr = raw_uring(fr.path, bytes, kBlock, 4, false);
    std::fprintf(stderr, "  [file-read seq] rep %u/%u: umrt %.2f GB/s, mmap %.2f GB/s, raw io_uring %.2f GB/s\n", r + 1,
                 o.warmup + o.reps, bytes / su / 1e9, bytes / sm / 1e9, bytes / sr / 1e9);
    if (r < o.warmup) continue;
    gu.push_back(bytes / su / 1e9);
    gm.push_back(bytes / sm / 1e9);
    gr.push_back(bytes / sr / 1e9);
  }
  // Random 4 KiB first touches, fault window 1.
  umrt_config cr = c;
  cr.prefetch_min_pages = 1;
  cr.prefetch_max_pages = 1;
  h.restart(cr);
  std::mt19937_64 rng(o.seed);
  std::vector<size_t> pages(std::min(o.random_reads, bytes / kPage));
  for (auto &pg : pages) pg = rng() % (bytes / kPage);
  std::sort(pages.begin(), pages.end());
  pages.erase(std::unique(pages.begin(), pages.end()), pages.end());
  std::shuffle(pages.begin(), pages.end(), rng);
  std::vector<double> lu, lr, lb;
  for (unsigned r = 0; r < o.warmup + o.reps; ++r) {
    f.drop_cache();
    void *p = nullptr;
    check(umrt_map_file(f.path.c_str(), 0, 0, UMRT_MAP_READ, &p), "umrt_map_file");
    std::vector<double> u;
    for (size_t pg : pages) {
      const auto t0 = Clock::now();
      (void)*static_cast<volatile char *>(static_cast<char *>(p) + pg * kPage);
      u.push_back(std::chrono::duration<double, std::micro>(Clock::now() - t0).count());
    }
    check(umrt_free(p), "umrt_free");
    std::vector<double> rr = raw_random_us(fr.path, pages);
    std::vector<char> src(bytes / 16 / kBlock * kBlock + kBlock, 1);
    std::string why;
    auto bare = BareUffd::create(src.size(), src.data(), 1, why);
    if (!bare) fail("bare handler: " + why);
    std::vector<double> b;
    for (size_t k = 0; k < std::min<size_t>(pages.size(), 500); ++k) {
      const size_t pg = pages[k] % (src.size() / kPage);
      const auto t0 = Clock::now();
      (void)*static_cast<volatile char *>(bare->data() + pg * kPage);
      b.push_back(std::chrono::duration<double, std::micro>(Clock::now() - t0).count());
    }
    std::fprintf(stderr, "  [file-read random] rep %u/%u: umrt p50 %.1f us, raw O_DIRECT 4K p50 %.1f us, bare uffd p50 %.1f us\n",
                 r + 1, o.warmup + o.reps, median(u), median(rr), median(b));
    if (r < o.warmup) continue;
    lu.insert(lu.end(), u.begin(), u.end());
    lr.insert(lr.end(), rr.begin(), rr.end());
    lb.insert(lb.end(), b.begin(), b.end());
  }
  h.restart(c);
  const double mu = median(gu), mm = median(gm), mr = median(gr);
  const double bound = median(lr) + 1.5 * median(lb);
  std::printf("\n== file-read (%zu MiB file, cold: page cache dropped) ==\n", bytes >> 20);
  std::printf("  sequential first touch   umrt %6.2f GB/s   mmap %6.2f GB/s   raw io_uring O_DIRECT (2 MiB x4) %6.2f GB/s\n",
              mu, mm, mr);
  std::printf("  random 4 KiB (window 1)  umrt p50 %6.1f us  p99 %6.1f us   raw 4 KiB O_DIRECT p50 %6.1f us   bare uffd p50 %6.1f us\n",
              median(lu), pct(lu, 0.99), median(lr), median(lb));
  targets.push_back(target("file-read seq >= 0.8x raw io_uring O_DIRECT", "raw io_uring, 2 MiB reads, 4 in flight", mu / mr, 0.8, false));
  targets.push_back(target("file-read seq >= 1.0x mmap first touch", "mmap MAP_PRIVATE of the cold file", mu / mm, 1.0, false));
  targets.push_back(target("file-read random p50 <= raw 4K + 1.5x bare uffd", "raw O_DIRECT 4 KiB read + 1.5x bare round trip",
                           median(lu) / bound, 1.0, true));
  return json{{"bytes", bytes},
              {"seq_gbps", {{"umrt", mu}, {"mmap", mm}, {"raw_io_uring", mr}}},
              {"random_us", {{"umrt_p50", median(lu)}, {"umrt_p99", pct(lu, 0.99)}, {"raw_p50", median(lr)},
                             {"bare_uffd_p50", median(lb)}, {"accesses", lu.size()}}}};
}

json file_to_device(const Options &o, const Hooks &h, std::vector<scale::Target> &targets) {
  File f(dir_of(o), o.file_bytes), fr(dir_of(o), o.file_bytes);  // one each (file_read says why)
  const size_t bytes = f.bytes;
  umrt_config c = h.config();
  c.device_memory = std::max<uint64_t>(c.device_memory, bytes + (64u << 20));
  h.restart(c);
  std::fprintf(stderr, "file-to-device: %zu MiB file in %s\n", bytes >> 20, dir_of(o).c_str());
  std::vector<double> gu, gr;
  umrt_stats a{}, b{};
  for (unsigned r = 0; r < o.warmup + o.reps; ++r) {
    f.drop_cache();
    void *p = nullptr;
    check(umrt_map_file(f.path.c_str(), 0, 0, UMRT_MAP_READ, &p), "umrt_map_file");
    check(umrt_get_stats(&a), "stats");
    const auto t0 = Clock::now();
    check(umrt_prefetch(p, bytes, UMRT_LOCATION_DEVICE, nullptr), "umrt_prefetch");
    const double su = secs(Clock::now() - t0);
    check(umrt_get_stats(&b), "stats");
    check(umrt_free(p), "umrt_free");
    const double sr = raw_uring(fr.path, bytes, kBlock, 4, false);
    std::fprintf(stderr, "  [file-to-device] rep %u/%u: umrt %.2f GB/s, raw io_uring %.2f GB/s\n", r + 1, o.warmup + o.reps,
                 bytes / su / 1e9, bytes / sr / 1e9);
    if (r < o.warmup) continue;
    gu.push_back(bytes / su / 1e9);
    gr.push_back(bytes / sr / 1e9);
  }
  const double mu = median(gu), mr = median(gr);
  std::printf("\n== file-to-device (%zu MiB file, cold, on %s) ==\n", bytes >> 20, umrt_backend_name());
  std::printf("  umrt prefetch %6.2f GB/s (read %llu MiB from storage)   raw io_uring O_DIRECT (2 MiB x4) %6.2f GB/s\n", mu,
              static_cast<unsigned long long>((b.bytes_from_storage - a.bytes_from_storage) >> 20), mr);
  targets.push_back(target("file-to-device >= 0.8x raw io_uring O_DIRECT", "raw io_uring, 2 MiB reads, 4 in flight", mu / mr, 0.8, false));
  return json{{"bytes", bytes}, {"gbps", {{"umrt", mu}, {"raw_io_uring", mr}}}};
}

json spill(const Options &o, const Hooks &h, std::vector<scale::Target> &targets) {
  const size_t budget = o.spill_budget, ws = 2 * budget;
  umrt_config c = h.config();
  c.host_memory = budget;
  h.restart(c);
  std::fprintf(stderr, "spill: working set %zu MiB, UMRT_HOST_MEMORY %zu MiB\n", ws >> 20, budget >> 20);
  void *p = nullptr;
  check(umrt_malloc(&p, ws), "umrt_malloc");
  auto *w = static_cast<volatile uint64_t *>(p);
  for (size_t k = 0; k < ws / 8; k += kPage / 8) w[k] = k;  // first pass: every page made
  std::vector<double> gu, gr;
  bool exact = true;
  for (unsigned r = 0; r < o.warmup + o.reps; ++r) {
    umrt_stats a{}, b{};
    check(umrt_get_stats(&a), "stats");
    const auto t0 = Clock::now();
    for (size_t k = 0; k < ws / 8; k += kPage / 8) {  // read and write every page, in order
      exact = exact && w[k] == k;
      w[k] = k;
    }
    const double su = secs(Clock::now() - t0);
    check(umrt_get_stats(&b), "stats");
    const double io = static_cast<double>((b.bytes_to_storage - a.bytes_to_storage) + (b.bytes_from_storage - a.bytes_from_storage));
    // Raw: write then read the same amount in the swap directory, O_DIRECT, 2 MiB x4.
    const char *sd = std::getenv("UMRT_SWAP_DIR");
    File raw(sd && *sd ? sd : dir_of(o), budget);
    const double tw = raw_uring(raw.path, budget, kBlock, 4, true);
    const double tr = raw_uring(raw.path, budget, kBlock, 4, false);
    const double rawg = 2.0 * budget / (tw + tr) / 1e9;
    std::fprintf(stderr, "  [spill] rep %u/%u: a pass %.2f s, storage traffic %.2f GB/s (%.0f MiB); raw write+read %.2f GB/s\n",
                 r + 1, o.warmup + o.reps, su, io / su / 1e9, io / (1 << 20), rawg);
    if (r < o.warmup) continue;
    gu.push_back(io / su / 1e9);
    gr.push_back(rawg);
  }
  umrt_stats s{};
  check(umrt_get_stats(&s), "stats");
  check(umrt_free(p), "umrt_free");
  h.restart(h.config());
  const double mu = median(gu), mr = median(gr);
  std::printf("\n== spill (working set %zu MiB = 2x UMRT_HOST_MEMORY, anonymous, read+write passes) ==\n", ws >> 20);
  std::printf("  umrt storage traffic %6.2f GB/s (swap-outs %llu, swap-ins %llu) %s   raw O_DIRECT write+read %6.2f GB/s\n", mu,
              static_cast<unsigned long long>(s.swap_outs), static_cast<unsigned long long>(s.swap_ins),
              exact ? "exact" : "WRONG", mr);
  targets.push_back(target("spill at 2x budget >= 0.5x raw write+read", "raw io_uring O_DIRECT write then read, 2 MiB x4", mu / mr,
                           0.5, false));
  return json{{"working_set", ws}, {"budget", budget}, {"gbps", {{"umrt", mu}, {"raw_write_read", mr}}}, {"exact", exact},
              {"swap_outs", s.swap_outs}, {"swap_ins", s.swap_ins}};
}

}  // namespace

json run(const std::string &scenario, const Options &o, const Hooks &h, std::vector<scale::Target> &targets) {
  try {
    if (scenario == "file-read") return file_read(o, h, targets);
    if (scenario == "file-to-device") return file_to_device(o, h, targets);
    if (scenario == "spill") return spill(o, h, targets);
  } catch (const std::exception &e) {
    std::fprintf(stderr, "umrt-bench %s: %s\n", scenario.c_str(), e.what());
    scale::Target t;
    t.name = scenario;
    t.error = e.what();
    targets.push_back(t);
    return json{{"failed", true}, {"error", e.what()}};
  }
  return json{{"failed", true}, {"error", "unknown storage scenario"}};
}

}  // namespace bench::storage
