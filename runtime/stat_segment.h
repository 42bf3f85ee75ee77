// stat_segment.h — the live statistics segment (umrt-stat, issue 12): its fixed layout, shared
// by the runtime that publishes it and the umrt-stat tool that reads it, the reader's helpers
// (header-only, so the tool needs nothing else of umrt), and the publisher (stat_segment.cpp).
//
// Each process using umrt holds one POSIX shared-memory object, /dev/shm/umrt.<pid>
// (shm_open("/umrt.<pid>")), created O_EXCL with mode 0400: only its owner (and root) can read
// it, nobody else can open it for writing. A publisher thread (umrt-stat) rewrites it four times
// a second under a seqlock; it is unlinked at umrt_shutdown and at exit (never by a fork child).
// A segment left by a process that was killed is recognised by its pid being dead or its
// process start time (/proc/<pid>/stat field 22) differing: readers ignore it, the next umrt
// process of the same user removes it. docs/design.md, "umrt-stat (issue 12)".
#pragma once

#include <umrt/umrt.h>

#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace umrt::stat {

constexpr uint64_t kMagic = 0x5441545354524d55ull;  // "UMRTSTAT" in memory order
constexpr uint32_t kVersion = 1;                     // bumped on any change of the layout below
constexpr uint32_t kAllocRows = 32;                  // the largest allocations listed
constexpr uint32_t kStatWords = 48;                  // room for umrt_stats (fields get appended)

// Names of umrt_stats' fields, in their order (JSON keys of umrt-stat --json).
inline constexpr const char *kStatNames[] = {
    "cpu_faults", "bytes_to_device", "bytes_to_host", "evictions", "batches", "pages_to_device",
    "pages_to_host", "zero_fills", "pages_restored", "pages_skipped_locked", "fault_groups",
    "write_faults", "write_cancels", "device_bytes_in_use", "device_capacity", "pages_selected",
    "ns_collect", "ns_unmap", "ns_copy", "ns_finalize", "host_pool_pages", "host_pages_reused",
    "bytes_from_storage", "bytes_to_storage", "host_pages", "swap_outs", "swap_ins",
    "pages_dropped_clean"};
constexpr uint32_t kStatCount = sizeof(umrt_stats) / sizeof(uint64_t);
static_assert(sizeof(umrt_stats) % sizeof(uint64_t) == 0, "umrt_stats: 64-bit fields only");
static_assert(sizeof(kStatNames) / sizeof(kStatNames[0]) == kStatCount,
              "a umrt_stats field was added: name it in kStatNames");
static_assert(kStatCount <= kStatWords, "umrt_stats outgrew the segment: raise kStatWords and kVersion");

// Alloc::flags bits.
constexpr uint64_t kFile = 1, kWritable = 2, kPacked = 4;

// One of the largest allocations.
struct Alloc {
  uint64_t address;        // its start (what umrt_malloc / umrt_map_file returned, or moved to)
  uint64_t size;           // bytes asked for
  uint64_t host_bytes;     // its pages in host memory now
  uint64_t device_bytes;   // ... on the device
  uint64_t storage_bytes;  // ... only in storage (a file's pages not read, or in the swap file)
  uint64_t faults;         // CPU page faults on it (userfaultfd messages)
  uint64_t evictions;      // device blocks of it evicted (a pack counts for each of its ranges)
  uint64_t refetches;      // evicted blocks of it brought back to the device: thrashing
  uint64_t flags;          // kFile | kWritable | kPacked
};

// The segment. Plain 64-bit words only (char arrays in whole words), so that readers and the
// writer copy it word by word with atomic accesses (race-free for TSan as well) and a
// seqlock tells a reader whether its copy is one update's.
struct Segment {
  // Written once, before magic (magic last, with release order: a reader that sees kMagic sees
  // the rest of this block).
  uint64_t magic;
  uint32_t version;        // kVersion
  uint32_t bytes;          // sizeof(Segment)
  uint32_t stat_count;     // umrt_stats fields in stats[] (kStatCount of the writer)
  uint32_t alloc_rows;     // kAllocRows
  int64_t pid;
  uint64_t start_time;     // /proc/<pid>/stat field 22: clock ticks after boot
  uint64_t created_unix_ns;  // CLOCK_REALTIME at umrt_init
  char backend[16];        // "sim", "cuda"
  // Rewritten on every update, between seq becoming odd and becoming even again.
  uint64_t seq;            // odd while an update is being written
  uint64_t sum;            // the wrapping sum of every word after it: a check for readers
  uint64_t updated_ns;     // CLOCK_MONOTONIC of the last update (the heartbeat)
  uint64_t updates;        // updates so far
  uint64_t interval_ns;    // time between updates
  uint64_t nallocs;        // live allocations
  uint64_t alloc_bytes;    // their bytes
  uint64_t refetches;      // every evicted block brought back to the device (thrashing)
  uint64_t host_budget;    // UMRT_HOST_MEMORY bytes (0: none)
  uint64_t nrows;          // rows of allocs[] in use, largest first
  uint64_t stats[kStatWords];
  Alloc allocs[kAllocRows];
};
static_assert(sizeof(Segment) % sizeof(uint64_t) == 0);
static_assert(offsetof(Segment, seq) % sizeof(uint64_t) == 0);

constexpr size_t kWords = sizeof(Segment) / sizeof(uint64_t);

// Word-by-word copies for the seqlock, without fences (TSan does not model them): each store a
// release, so the odd count stored before is visible to whoever sees the word; each load an
// acquire, so the count read after is not read earlier. Plain moves on x86.
inline void load_words(uint64_t *dst, const uint64_t *src, size_t n) {
  for (size_t i = 0; i < n; ++i) dst[i] = __atomic_load_n(&src[i], __ATOMIC_ACQUIRE);
}
inline void store_words(uint64_t *dst, const uint64_t *src, size_t n) {
  for (size_t i = 0; i < n; ++i) __atomic_store_n(&dst[i], src[i], __ATOMIC_RELEASE);
}

// The sum Segment::sum holds (of the words after it).
inline uint64_t segment_sum(const Segment &s) {
  constexpr size_t first = offsetof(Segment, sum) / sizeof(uint64_t) + 1;
  uint64_t w[kWords];
  std::memcpy(w, &s, sizeof w);
  uint64_t v = 0;
  for (size_t i = first; i < kWords; ++i) v += w[i];
  return v;
}

inline std::string shm_name(long pid) { return "/umrt." + std::to_string(pid); }
inline constexpr const char *kShmDir = "/dev/shm";

// Field 22 of /proc/<pid>/stat (start time, clock ticks after boot); 0 if unreadable. The
// command name (field 2) may hold spaces and parentheses: fields are counted after its last ')'.
inline uint64_t process_start_time(long pid) {
  char path[64];
  std::snprintf(path, sizeof path, "/proc/%ld/stat", pid);
  FILE *f = std::fopen(path, "re");
  if (!f) return 0;
  char buf[1024];
  const size_t n = std::fread(buf, 1, sizeof buf - 1, f);
  std::fclose(f);
  buf[n] = '\0';
  const char *p = std::strrchr(buf, ')');
  if (!p) return 0;
  // After ") ": field 3 (state) is the first; field 22 is the 20th from there.
  int field = 2;
  for (++p; *p; ++p)
    if (*p == ' ' && ++field == 22) return std::strtoull(p + 1, nullptr, 10);
  return 0;
}

// The process exists (EPERM: it does, someone else's).
inline bool pid_alive(long pid) { return pid > 0 && (kill(static_cast<pid_t>(pid), 0) == 0 || errno == EPERM); }

enum class ReadResult {
  ok,
  missing,    // no segment for this pid
  denied,     // it exists, we may not read it (another user's)
  not_ready,  // being created, or every try raced an update
  bad,        // not a umrt segment (wrong magic or size)
  version,    // another layout version (a newer or older umrt)
  stale,      // its process is dead, or the pid belongs to another process now
};

inline const char *read_result_string(ReadResult r) {
  switch (r) {
    case ReadResult::ok: return "ok";
    case ReadResult::missing: return "no umrt statistics segment";
    case ReadResult::denied: return "permission denied";
    case ReadResult::not_ready: return "segment not ready";
    case ReadResult::bad: return "not a umrt statistics segment";
    case ReadResult::version: return "layout version mismatch";
    case ReadResult::stale: return "stale (its process is gone)";
  }
  return "?";
}

// One consistent snapshot of a segment mapped at w (len bytes) into *out: `ok`, `not_ready`
// (being created, or every try raced an update), `bad` or `version`.
inline ReadResult read_mapped(const uint64_t *w, size_t len, Segment *out, uint32_t *found_version = nullptr) {
  if (len < 2 * sizeof(uint64_t)) return ReadResult::not_ready;
  const uint64_t magic = __atomic_load_n(&w[0], __ATOMIC_ACQUIRE);
  const uint64_t vb = __atomic_load_n(&w[1], __ATOMIC_RELAXED);
  const uint32_t version = static_cast<uint32_t>(vb), bytes = static_cast<uint32_t>(vb >> 32);
  if (found_version) *found_version = magic == kMagic ? version : 0;
  if (magic == 0) return ReadResult::not_ready;
  if (magic != kMagic) return ReadResult::bad;
  if (version != kVersion) return ReadResult::version;
  if (bytes != sizeof(Segment) || len < sizeof(Segment)) return ReadResult::bad;
  constexpr size_t seq_word = offsetof(Segment, seq) / sizeof(uint64_t);
  // Retried for up to a second: the writer may be preempted in the middle of an update.
  timespec t0, t;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  for (;;) {
    clock_gettime(CLOCK_MONOTONIC, &t);
    if ((t.tv_sec - t0.tv_sec) * 1000000000L + (t.tv_nsec - t0.tv_nsec) > 1000000000L) break;
    // Seqlock: an even count, the words, the same count again: no update ran in between.
    const uint64_t s1 = __atomic_load_n(&w[seq_word], __ATOMIC_ACQUIRE);
    if (s1 & 1) {
      usleep(100);
      continue;
    }
    uint64_t buf[kWords];
    load_words(buf, w, kWords);
    if (__atomic_load_n(&w[seq_word], __ATOMIC_RELAXED) == s1) {
      std::memcpy(static_cast<void *>(out), buf, sizeof buf);
      return ReadResult::ok;
    }
  }
  return ReadResult::not_ready;
}

// Whether the segment open at fd is still held by its creator, which keeps a shared flock on it
// for as long as it publishes (released by the kernel when it exits, is killed or execs). An
// exclusive try that succeeds: nobody holds it. Other errors: cannot tell, taken as held.
inline bool segment_held(int fd) {
  if (flock(fd, LOCK_EX | LOCK_NB) == 0) {
    flock(fd, LOCK_UN);
    return false;
  }
  return errno == EWOULDBLOCK;
}

// Open pid's segment to read it, warily (anyone may have put a file by that name in /dev/shm):
// never blocking (a FIFO), never through a symlink, only a regular file of whole size, owned by
// the owner of the process (or, the process gone, by us) and writable by nobody but its owner.
// Returns the fd, or -1 with *res saying why.
inline int open_segment(long pid, ReadResult *res) {
  const int fd = shm_open(shm_name(pid).c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC, 0);
  if (fd < 0) {
    *res = errno == EACCES ? ReadResult::denied : errno == ENOENT ? ReadResult::missing : ReadResult::bad;
    return -1;
  }
  struct stat st, owner;
  char proc[64];
  std::snprintf(proc, sizeof proc, "/proc/%ld", pid);
  const uid_t want = ::stat(proc, &owner) == 0 ? owner.st_uid : geteuid();
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || (st.st_mode & (S_IWGRP | S_IWOTH)) || st.st_uid != want) {
    close(fd);
    *res = ReadResult::bad;
    return -1;
  }
  if (static_cast<size_t>(st.st_size) < sizeof(Segment)) {
    close(fd);
    *res = st.st_size == 0 ? ReadResult::not_ready : ReadResult::bad;
    return -1;
  }
  return fd;
}

// One consistent snapshot of pid's segment into *out, read with pread (a file truncated under
// the reader is a short read, never a SIGBUS): the seqlock count even and the same after the
// copy, and the copy's sum right. With check_alive, a segment nobody holds any more, whose
// process is dead, or whose start time differs from the process now holding the pid is `stale`.
// *found_version: the version the segment says (for messages).
inline ReadResult read_segment(long pid, Segment *out, bool check_alive = true, uint32_t *found_version = nullptr) {
  ReadResult res = ReadResult::missing;
  const int fd = open_segment(pid, &res);
  if (fd < 0) return res;
  constexpr size_t seq_off = offsetof(Segment, seq);
  timespec t0, t;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  res = ReadResult::not_ready;
  for (;;) {
    uint64_t buf[kWords], seq2 = 0;
    if (pread(fd, buf, sizeof buf, 0) != static_cast<ssize_t>(sizeof buf) ||
        pread(fd, &seq2, sizeof seq2, seq_off) != static_cast<ssize_t>(sizeof seq2)) {
      res = ReadResult::bad;
      break;
    }
    const uint32_t version = static_cast<uint32_t>(buf[1]), bytes = static_cast<uint32_t>(buf[1] >> 32);
    if (found_version) *found_version = buf[0] == kMagic ? version : 0;
    if (buf[0] == 0) res = ReadResult::not_ready;  // being created
    else if (buf[0] != kMagic) res = ReadResult::bad;
    else if (version != kVersion) res = ReadResult::version;
    else if (bytes != sizeof(Segment)) res = ReadResult::bad;
    else {
      std::memcpy(static_cast<void *>(out), buf, sizeof buf);
      // A copy that raced an update: again.
      res = (out->seq & 1) || out->seq != seq2 || segment_sum(*out) != out->sum ? ReadResult::not_ready : ReadResult::ok;
    }
    if (res != ReadResult::not_ready) break;
    clock_gettime(CLOCK_MONOTONIC, &t);
    if ((t.tv_sec - t0.tv_sec) * 1000000000L + (t.tv_nsec - t0.tv_nsec) > 1000000000L) break;
    if (check_alive && !segment_held(fd)) break;  // its writer is gone: it will not get ready
    usleep(200);
  }
  const bool held = segment_held(fd);
  close(fd);
  if (check_alive && (res == ReadResult::ok || res == ReadResult::not_ready) &&
      (!held || (res == ReadResult::ok && (out->pid != pid || !pid_alive(pid) || process_start_time(pid) != out->start_time))))
    res = ReadResult::stale;
  return res;
}

}  // namespace umrt::stat

namespace umrt::rt {

struct Runtime;

// The publisher: the segment and the thread that keeps it current. start() never fails the
// runtime (no segment: a line in the log, the program runs on); stop() joins and unlinks.
class StatPublisher {
 public:
  // interval_ms: between updates (UMRT_STAT_INTERVAL).
  void start(Runtime *rt, uint32_t interval_ms);
  void stop();
  bool on() const { return seg_ != nullptr; }
  // One update now (the thread does this every interval).
  void update();

 private:
  void start_segment(Runtime *rt, uint32_t interval_ms);
  void update_segment();
  void loop();
  void scan_allocs();
  Runtime *rt_ = nullptr;
  std::mutex update_mu_;          // one update at a time; seg_, local_, top_
  stat::Segment *seg_ = nullptr;  // the shared mapping
  int fd_ = -1;                   // its file, open (and flock()ed shared) while it is published
  ino_t ino_ = 0;                 // its inode: only that file is ever unlinked
  stat::Segment local_{};         // the next update, built here, then copied under the seqlock
  std::vector<std::weak_ptr<struct Range>> top_;  // the rows' ranges, largest first (last scan)
  bool swap_possible_ = false;    // a host budget: anonymous pages may be in the swap file
  long pid_ = 0;
  uint32_t interval_ms_ = 250;
  uint64_t next_scan_ns_ = 0;     // the allocation table is rescanned from then on (adaptive)
  std::thread thread_;
  std::mutex mu_;  // stop_ and the wait
  std::condition_variable cv_;
  bool stop_ = false;
};

}  // namespace umrt::rt
