// stat_segment.cpp — the publisher of the live statistics segment (stat_segment.h): creates
// /dev/shm/umrt.<pid> at umrt_init, keeps it current from its own thread (umrt-stat, a few times
// a second: umrt_stats, and the largest allocations with their residency and counters), removes
// it at umrt_shutdown and at exit, and removes segments that killed processes of the same user
// left behind. Nothing on the fault path waits for it: it only reads counters (relaxed atomics),
// takes the range table's shared lock for a bounded share of its time, and DevMem's lock for one
// bytes_in_use().
#include "stat_segment.h"

#include <dirent.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <mutex>
#include <system_error>
#include <vector>

#include "runtime.h"
#include "threads.h"

namespace umrt::rt {

namespace {

uint64_t clock_ns(clockid_t id) {
  timespec ts;
  clock_gettime(id, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000000000ull + static_cast<uint64_t>(ts.tv_nsec);
}

// The segment to unlink at exit: its owner's pid (0: none; its name follows from it) and inode
// (only that file: the name may be another process's by then, in another pid namespace sharing
// /dev/shm). Atomics: exit() may run its handlers while another thread starts or stops umrt. A
// fork child sees its parent's pid here, never its own, so it never removes the parent's segment.
std::atomic<long> g_owner{0};
std::atomic<uint64_t> g_ino{0};
std::once_flag g_atexit_once;

void segment_name(long pid, char (&name)[40]) { std::snprintf(name, sizeof name, "/umrt.%ld", pid); }

// Unlink name if it is still the file with inode ino.
void unlink_if_same(const char *name, ino_t ino) {
  char path[64];
  std::snprintf(path, sizeof path, "%s%s", stat::kShmDir, name);
  struct stat st;
  if (lstat(path, &st) == 0 && st.st_ino == ino) shm_unlink(name);
}

void unlink_at_exit() {
  const long self = static_cast<long>(getpid());
  if (g_owner.load(std::memory_order_acquire) != self) return;
  char name[40];
  segment_name(self, name);
  unlink_if_same(name, static_cast<ino_t>(g_ino.load(std::memory_order_acquire)));
}

// The file at name if it is a segment nobody holds any more (its creator died, was killed or
// exec'd; or an older umrt's): unlinked, true. A live process's (in any pid namespace: it holds
// its flock), someone else's, or not a regular file: left alone, false.
bool remove_if_abandoned(const char *name, long pid, bool check_start_time) {
  const int fd = shm_open(name, O_RDONLY | O_NONBLOCK | O_CLOEXEC, 0);
  if (fd < 0) return errno == ENOENT;
  struct stat st;
  bool gone = false;
  if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && st.st_uid == geteuid() && !stat::segment_held(fd)) {
    gone = !stat::pid_alive(pid);
    if (!gone && check_start_time) {  // alive: the pid reused by another process?
      stat::Segment s;
      gone = stat::read_segment(pid, &s, false) == stat::ReadResult::ok &&
             (s.pid != pid || stat::process_start_time(pid) != s.start_time);
    }
    if (gone) unlink_if_same(name, st.st_ino);
  }
  close(fd);
  return gone;
}

// Segments of dead processes of this user (killed, so never unlinked): removed. Best effort.
void sweep_stale(long self) {
  DIR *d = opendir(stat::kShmDir);
  if (!d) return;
  while (dirent *e = readdir(d)) {
    const char *n = e->d_name;
    if (std::strncmp(n, "umrt.", 5) != 0 || !n[5]) continue;
    char *end = nullptr;
    const long pid = std::strtol(n + 5, &end, 10);
    if (*end || pid <= 0 || pid == self) continue;
    char name[sizeof(e->d_name) + 1];
    std::snprintf(name, sizeof name, "/%s", n);
    remove_if_abandoned(name, pid, true);
  }
  closedir(d);
}

// One allocation's row: where its pages are, and its counters.
void fill_row(const Range &r, bool swap_possible, stat::Alloc *a) {
  *a = stat::Alloc{};
  a->address = r.start();
  a->size = r.size;
  a->faults = r.faults.load(std::memory_order_relaxed);
  a->evictions = r.evictions.load(std::memory_order_relaxed);
  a->refetches = r.refetches.load(std::memory_order_relaxed);
  a->flags = (r.file() ? stat::kFile : 0) | (r.writable() ? stat::kWritable : 0) | (r.packed ? stat::kPacked : 0);
  uint64_t host = 0, dev = 0, sto = 0;
  auto count = [&](size_t p) {
    const uint64_t e = r.entries[p].load(std::memory_order_relaxed);
    if (e & entry::GONE) return;
    switch (entry::loc(e)) {
      case Loc::HOST: ++host; break;
      case Loc::DEVICE: ++dev; break;
      case Loc::SWAP: ++sto; break;
      case Loc::NONE: sto += r.file(); break;
    }
  };
  if (r.packed) {  // below 2 MiB: its own entries (the pack's counts are shared)
    for (size_t p = 0; p < r.npages; ++p) count(p);
  } else {
    // The blocks' counts; storage: a file range's pages neither home nor on the device are in
    // the file; an anonymous range's are in swap only where a block is not full (scanned then).
    r.each_block([&](const DBlock &b) {
      const uint32_t h = b.host.load(std::memory_order_relaxed), d = b.resident.load(std::memory_order_relaxed);
      host += h;
      dev += d;
      const size_t first = b.win_offset / kBlockSize * kBlockPages, end = r.block_end(first);
      if (swap_possible && !r.file() && h + d < end - first)
        for (size_t p = first; p < end; ++p) {
          const uint64_t e = r.entries[p].load(std::memory_order_relaxed);
          sto += entry::loc(e) == Loc::SWAP && !(e & entry::GONE);
        }
    });
    if (r.file()) {
      const uint64_t live = r.npages - std::min(r.npages, r.gone_pages.load(std::memory_order_relaxed));
      sto = live > host + dev ? live - host - dev : 0;
    }
  }
  a->host_bytes = host * kPageSize;
  a->device_bytes = dev * kPageSize;
  a->storage_bytes = sto * kPageSize;
}

}  // namespace

void StatPublisher::start(Runtime *rt, uint32_t interval_ms) {
  try {  // (std::string, std::thread: nothing may throw through the C API)
    start_segment(rt, interval_ms);
  } catch (const std::exception &e) {
    log(Level::info, "umrt-stat: no statistics segment (%s)", e.what());
    stop();
  }
}

void StatPublisher::start_segment(Runtime *rt, uint32_t interval_ms) {
  rt_ = rt;
  interval_ms_ = interval_ms;
  pid_ = static_cast<long>(getpid());
  sweep_stale(pid_);
  char name[40];
  segment_name(pid_, name);
  int fd = -1;
  for (int tries = 0; tries < 2 && fd < 0; ++tries) {
    // 0400: its owner (and root) may read it; nobody may open it for writing (the creator
    // writes through this descriptor's mapping).
    fd = shm_open(name, O_CREAT | O_EXCL | O_RDWR | O_CLOEXEC, 0400);
    // One by our pid already: a dead process's (removed), or a live one's in another pid
    // namespace sharing /dev/shm (left alone: we run without a segment).
    if (fd < 0 && (errno != EEXIST || !remove_if_abandoned(name, pid_, false))) break;
  }
  if (fd < 0) {
    log(Level::info, "umrt-stat: no statistics segment %s%s: %s", stat::kShmDir, name,
        errno == EEXIST ? "a live process of another pid namespace has that name" : strerror(errno));
    return;
  }
  // Held (shared flock) for as long as this process publishes: readers and sweepers tell a live
  // segment by it. Space allocated now: a full /dev/shm is an error here, not a SIGBUS at the
  // first store.
  struct stat st;
  void *m = MAP_FAILED;
  int err = flock(fd, LOCK_SH) == 0 && fstat(fd, &st) == 0 ? posix_fallocate(fd, 0, sizeof(stat::Segment)) : errno;
  if (err == 0) {
    m = mmap(nullptr, sizeof(stat::Segment), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (m == MAP_FAILED) err = errno;
  }
  if (m == MAP_FAILED) {
    shm_unlink(name);
    close(fd);
    log(Level::info, "umrt-stat: statistics segment %s%s: %s", stat::kShmDir, name, strerror(err));
    return;
  }
  fd_ = fd;
  ino_ = st.st_ino;
  std::unique_lock lk(update_mu_);
  seg_ = static_cast<stat::Segment *>(m);
  swap_possible_ = rt->cfg.host_memory != 0;
  local_ = stat::Segment{};
  local_.version = stat::kVersion;
  local_.bytes = sizeof(stat::Segment);
  local_.stat_count = stat::kStatCount;
  local_.alloc_rows = stat::kAllocRows;
  local_.pid = pid_;
  local_.start_time = stat::process_start_time(pid_);
  local_.created_unix_ns = clock_ns(CLOCK_REALTIME);
  std::snprintf(local_.backend, sizeof local_.backend, "%s", rt->backend->name());
  local_.interval_ns = uint64_t{interval_ms} * 1000000;
  local_.host_budget = rt->cfg.host_memory;
  next_scan_ns_ = 0;
  top_.clear();
  // Everything but magic, then magic (release): a reader seeing it sees a complete header.
  {
    uint64_t w[stat::kWords];
    std::memcpy(w, &local_, sizeof w);
    stat::store_words(reinterpret_cast<uint64_t *>(seg_) + 1, w + 1, stat::kWords - 1);
  }
  lk.unlock();
  update();
  __atomic_store_n(reinterpret_cast<uint64_t *>(seg_), stat::kMagic, __ATOMIC_RELEASE);
  g_ino.store(ino_, std::memory_order_release);
  g_owner.store(pid_, std::memory_order_release);
  std::call_once(g_atexit_once, [] { std::atexit(unlink_at_exit); });
  stop_ = false;
  try {
    thread_ = start_thread("umrt-stat", [this] { loop(); });
  } catch (const std::system_error &e) {
    log(Level::info, "umrt-stat: no publisher thread (%s): the segment is removed", e.what());
    stop();
  }
}

void StatPublisher::stop() {
  if (thread_.joinable()) {
    {
      std::lock_guard g(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }
  std::lock_guard g(update_mu_);
  if (!seg_) return;
  if (g_owner.load(std::memory_order_acquire) == pid_) {
    g_owner.store(0, std::memory_order_release);
    char name[40];
    segment_name(pid_, name);
    unlink_if_same(name, ino_);
  }
  munmap(seg_, sizeof(stat::Segment));
  seg_ = nullptr;
  if (fd_ >= 0) close(fd_);  // (the flock goes with it)
  fd_ = -1;
  top_.clear();
}

void StatPublisher::loop() {
  std::unique_lock lk(mu_);
  while (!cv_.wait_for(lk, std::chrono::milliseconds(interval_ms_), [this] { return stop_; })) {
    lk.unlock();
    update();
    lk.lock();
  }
}

void StatPublisher::scan_allocs() {
  // The kAllocRows largest ranges (older first among equals), without copying the table.
  struct Cand {
    size_t size;
    uint64_t seq;
    RangePtr r;
  };
  auto larger = [](const Cand &a, const Cand &b) { return a.size != b.size ? a.size > b.size : a.seq < b.seq; };
  std::vector<Cand> heap;  // a min-heap under `larger`: the smallest kept one on top
  heap.reserve(stat::kAllocRows + 1);
  uint64_t n = 0, bytes = 0;
  rt_->ranges.visit([&](const RangePtr &r) {
    ++n;
    bytes += r->size;
    if (heap.size() == stat::kAllocRows && !larger(Cand{r->size, r->seq, nullptr}, heap.front())) return;
    heap.push_back(Cand{r->size, r->seq, r});
    std::push_heap(heap.begin(), heap.end(), larger);
    if (heap.size() > stat::kAllocRows) {
      std::pop_heap(heap.begin(), heap.end(), larger);
      heap.pop_back();
    }
  });
  std::sort(heap.begin(), heap.end(), larger);
  local_.nallocs = n;
  local_.alloc_bytes = bytes;
  top_.clear();
  for (const Cand &c : heap) top_.push_back(c.r);
}

void StatPublisher::update() {
  try {
    update_segment();
  } catch (const std::exception &e) {  // (out of memory in the table walk: this update is skipped)
    log(Level::info, "umrt-stat: an update failed: %s", e.what());
  }
}

void StatPublisher::update_segment() {
  std::lock_guard g(update_mu_);
  if (!seg_) return;
  const uint64_t now = clock_ns(CLOCK_MONOTONIC);
  // The allocation table: rescanned at most every update, and less often when a scan is long
  // (a huge table): the scans take at most ~1% of the time. Between scans the rows of the
  // ranges found last time are refreshed.
  if (now >= next_scan_ns_) {
    scan_allocs();
    const uint64_t took = clock_ns(CLOCK_MONOTONIC) - now;
    next_scan_ns_ = now + std::min<uint64_t>(took * 100, 2000000000ull);  // at least every 2 s
  }
  umrt_stats st{};
  rt_->fill_stats(&st);
  std::memset(local_.stats, 0, sizeof local_.stats);
  std::memcpy(local_.stats, &st, sizeof st);
  local_.refetches = rt_->devmem.refetches();
  uint64_t rows = 0;
  for (const std::weak_ptr<Range> &w : top_)
    if (RangePtr r = w.lock()) fill_row(*r, swap_possible_, &local_.allocs[rows++]);
  for (uint64_t i = rows; i < stat::kAllocRows; ++i) local_.allocs[i] = stat::Alloc{};
  local_.nrows = rows;
  local_.updated_ns = clock_ns(CLOCK_MONOTONIC);
  ++local_.updates;
  local_.sum = stat::segment_sum(local_);
  // Seqlock: odd while the words after it are rewritten.
  constexpr size_t seq_word = offsetof(stat::Segment, seq) / sizeof(uint64_t);
  uint64_t w[stat::kWords];
  std::memcpy(w, &local_, sizeof w);
  auto *dst = reinterpret_cast<uint64_t *>(seg_);
  const uint64_t s = __atomic_load_n(&dst[seq_word], __ATOMIC_RELAXED);
  __atomic_store_n(&dst[seq_word], s + 1, __ATOMIC_RELAXED);  // ordered by the release stores after it
  stat::store_words(dst + seq_word + 1, w + seq_word + 1, stat::kWords - seq_word - 1);
  __atomic_store_n(&dst[seq_word], s + 2, __ATOMIC_RELEASE);
}

}  // namespace umrt::rt
