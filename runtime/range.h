// range.h — one managed allocation (a range) with its page state array, and the range table
// that maps an address to its range on the fault path.
//
// A range is [start, start + npages * 4 KiB), reserved with mmap, registered with userfaultfd
// (MISSING | WP), MADV_NOHUGEPAGE (residency is per 4 KiB page) and MADV_DONTFORK (a child
// never sees it: touching it there is SIGSEGV, never silently wrong data). Large ranges
// (>= 2 MiB) start 2 MiB-aligned and own a device window; smaller ones are packed into a
// shared 2 MiB device block (see devmem.h). Lifetime: shared_ptr; `inflight` counts the batches
// started through RangeTable::acquire, and umrt_free waits for it to drain.
#pragma once

#include <atomic>
#include <map>
#include <memory>
#include <shared_mutex>
#include <vector>

#include "backend.h"
#include "common.h"
#include "entry.h"
#include "lazy_array.h"

namespace umrt::rt {

struct DBlock;

struct Range : std::enable_shared_from_this<Range> {
  // Host address of page 0. Changes only when the user mremap()s the whole range elsewhere
  // (the fault service follows it, fault.cpp); every address is computed from it afresh.
  std::atomic<uintptr_t> start_{0};
  size_t size = 0;      // bytes asked for
  size_t npages = 0;    // pages covering size
  size_t map_bytes = 0; // bytes mapped at start (npages * 4 KiB)
  // One per page: the source of truth (see entry.h). Costs what is touched (lazy_array.h): a
  // reservation's untouched pages have entries that read as zero (NONE) and take no memory.
  LazyArray<Entry> entries;
  // Pages marked GONE so far (mark_page_gone): all_gone() and live_span() without a scan of
  // every entry when nothing (or everything) is gone.
  std::atomic<size_t> gone_pages{0};
  // live_span()'s last answer and the gone_pages count it was computed at (SIZE_MAX: none), so
  // calls on a range with a large cut part do not scan it each time (range.cpp).
  mutable std::atomic<size_t> span_tag_{SIZE_MAX}, span_first_{0}, span_end_{0};
  mutable std::atomic<bool> span_writing_{false};

  // Device side. Large: own window; block i covers pages [i*512, (i+1)*512), made on first use
  // (block_at) and owned by the range (deleted with it), listed from blocks_made.
  // Packed: the pack, pages live at pack_first.. in the pack's chunk.
  bool packed = false;
  DevWindow window;                         // large ranges only
  LazyArray<std::atomic<DBlock *>> blocks;  // large ranges: block i, or null (never used)
  std::atomic<DBlock *> blocks_made{nullptr};  // every block made, newest first (DBlock::next_made)
  DBlock *pack = nullptr;                   // packed ranges
  size_t pack_first = 0;                    // first page slot in the pack
  char *dev_base = nullptr;                 // device address of page 0

  // File-backed ranges (umrt_map_file): page p's bytes are at file_off + p * 4 KiB of file_fd
  // (owned, closed with the range), `size` bytes of them; a NONE entry means "still only in the
  // file" (STORAGE) instead of "never touched". -1: an anonymous range.
  int file_fd = -1;
  uint64_t file_off = 0;
  bool file() const { return file_fd >= 0; }
  // UMRT_MAP_WRITE: written pages (DIRTY, entry.h) go back to the file (storage/writeback.cpp).
  // file_fd is then opened read-write; file_fd_tail (owned; -1 when file_fd is buffered) is a
  // buffered descriptor of the same file for the last page's bytes when the range ends inside
  // a page (O_DIRECT writes whole blocks only).
  bool file_writable = false;
  int file_fd_tail = -1;
  std::atomic<int> tail_fd_late{-1};  // owned: the same, opened when a truncation needed one
  bool writable() const { return file_writable; }
  // Write-backs running on this range (umrt_flush): a page they cleaned may still be only in the
  // page cache until their fdatasync, so nothing may drop its host copy meanwhile.
  std::atomic<int> flushing{0};

  // What umrt-stat shows per allocation (stat_segment.h): counted with relaxed atomics, never
  // read on a hot path. faults: CPU page faults on it (fault.cpp); evictions: its device blocks
  // evicted; refetches: evicted blocks of it that got device memory again (thrashing; devmem.cpp).
  std::atomic<uint64_t> faults{0}, evictions{0}, refetches{0};

  uint64_t seq = 0;                         // insertion order (RangeTable::seq)
  uintptr_t key = 0;  // its key in the range table (table's lock): start, or after a move the
                      // start of what moved (the address mremap() returned to the user)
  std::atomic<int> inflight{0};
  // mremap (remap.cpp): batches running on this range now (run_batch), and a check owed once
  // they are done, for steps that a batch in flight did at the old address after the move.
  std::atomic<int> batches{0};
  std::atomic<bool> recheck_after_move{false};
  // Plain memory that an mremap() growth appended to the range, [tail_begin, tail_end) (0: none):
  // not managed, unmapped with the range by umrt_free. Set by the fault service only.
  std::atomic<uintptr_t> tail_begin{0};
  std::atomic<uintptr_t> tail_end{0};

  // Fault prefetch state (fault-service threads, under streams_busy): a few sequential streams, so that
  // several threads each walking their own part of the range all get growing windows.
  struct Stream {
    size_t next = SIZE_MAX;  // page right after this stream's last fault window
    uint32_t window = 0;     // its current window in pages
    uint64_t used = 0;       // last use (for replacement)
  };
  static constexpr int kStreams = 8;
  Stream streams[kStreams];
  uint64_t stream_clock = 0;
  std::atomic<bool> streams_busy{false};

  uintptr_t start() const { return start_.load(std::memory_order_acquire); }
  void set_start(uintptr_t a) { start_.store(a, std::memory_order_release); }
  char *addr(size_t page) const { return reinterpret_cast<char *>(start()) + (page << kPageShift); }
  char *dev_addr(size_t page) const { return dev_base + (page << kPageShift); }
  size_t page_of(uintptr_t a) const { return (a - start()) >> kPageShift; }
  bool contains(uintptr_t a) const {
    const uintptr_t s = start();
    return a >= s && a < s + map_bytes;
  }

  // Mark the pages of [lo, hi) ∩ this range GONE (their host addresses were unmapped).
  void mark_gone(uintptr_t lo, uintptr_t hi);
  // f(page) for every page of every block ever used (made blocks; all pages when packed).
  template <class F>
  void for_each_used_page(F &&f) const;
  // Nothing of the range is mapped any more (every page GONE).
  bool all_gone() const;
  // Pages [*first, *end) hold every page not GONE (first == end: none).
  void live_span(size_t *first, size_t *end) const;
  // The page at a (inside the range) is still mapped (not GONE).
  bool live_at(uintptr_t a) const {
    return contains(a) && !(entries[page_of(a)].load(std::memory_order_acquire) & entry::GONE);
  }

  Range() = default;
  ~Range();  // deletes the blocks made, closes file_fd (range.cpp)
  Range(const Range &) = delete;
  Range &operator=(const Range &) = delete;

  // page's device block, or null if it was never used (a large range's block not made yet).
  DBlock *dblock(size_t page) const {
    return packed ? pack : blocks[page / kBlockPages].load(std::memory_order_acquire);
  }
  // page's device block, made now if it does not exist yet (lock-free; null only when out of
  // host memory). Every batch gets its block through this.
  DBlock *block_at(size_t page);
  // f(DBlock &) for every block the range has (made ones only; its pack when packed).
  template <class F>
  void each_block(F &&f) const;
  // Mark page p GONE (counted once).
  void mark_page_gone(size_t p) {
    if (!(entries[p].fetch_or(entry::GONE, std::memory_order_acq_rel) & entry::GONE))
      gone_pages.fetch_add(1, std::memory_order_acq_rel);
  }
  // Pages [first, end) that share page's device block.
  size_t block_first(size_t page) const { return packed ? 0 : page / kBlockPages * kBlockPages; }
  size_t block_end(size_t page) const {
    return packed ? npages : std::min(npages, block_first(page) + kBlockPages);
  }
  // Device frame of page when its block holds chunk `chunk`.
  uint64_t frame(size_t page, uint32_t chunk) const {
    return uint64_t{chunk} * kBlockPages + (packed ? pack_first + page : page % kBlockPages);
  }
};

using RangePtr = std::shared_ptr<Range>;

// Holds a range's inflight count for the duration of a call (released on destruction).
class RangeRef {
 public:
  RangeRef() = default;
  explicit RangeRef(RangePtr r) : r_(std::move(r)) {}
  ~RangeRef() { reset(); }
  RangeRef(RangeRef &&o) noexcept : r_(std::move(o.r_)) {}
  RangeRef &operator=(RangeRef &&o) noexcept {
    reset();
    r_ = std::move(o.r_);
    return *this;
  }
  void reset() {
    if (r_) r_->inflight.fetch_sub(1, std::memory_order_acq_rel);
    r_.reset();
  }
  Range *get() const { return r_.get(); }
  Range *operator->() const { return r_.get(); }
  explicit operator bool() const { return bool(r_); }

 private:
  RangePtr r_;
};

class RangeTable {
 public:
  // Insert r; returns ranges it displaced (stale: munmap()ed by the user, event not yet seen).
  std::vector<RangePtr> insert(RangePtr r);
  // Remove the range whose key is start (umrt_free; the pointer umrt_malloc or mremap() gave);
  // nullptr if none. It stays listed as
  // being freed until forget(): a fault there meanwhile is not a stray one (remap.cpp).
  RangePtr remove_exact(uintptr_t start);
  void forget(const Range *r);
  bool being_freed(uintptr_t addr) const;
  // Remove the range r if it is still in the table.
  bool remove(const Range *r);
  // r (in the table) now starts at new_start (the user mremap()ed it); returns ranges it
  // displaced there, as insert does. Only what moved claims addresses: r's pages not GONE (a
  // shrink or munmap took the others, and other ranges may live where they would now fall).
  std::vector<RangePtr> move(const RangePtr &r, uintptr_t new_start);
  // The range mapping addr (its page there not GONE) with its inflight count taken; *offset (if
  // given) = addr - its start, taken together (the range may move right after: mremap).
  RangeRef acquire(uintptr_t addr, size_t *offset = nullptr) const;
  std::vector<RangePtr> snapshot() const;
  // f(const RangePtr &) for every range, under the table's shared lock (f must be short and take
  // no umrt lock: the statistics publisher, stat_segment.cpp, looks at each range without copying
  // the table).
  template <class F>
  void visit(F &&f) const {
    std::shared_lock g(mu_);
    for (const auto &kv : map_) f(kv.second);
  }
  // Ranges overlapping [lo, hi).
  std::vector<RangePtr> overlapping(uintptr_t lo, uintptr_t hi) const;
  // Ranges inserted so far. A range with seq > this value was created after the call.
  uint64_t seq() const;

 private:
  // Places r, claiming [lo, hi) of the address space from ranges still listed there.
  std::vector<RangePtr> place_locked(RangePtr r, uintptr_t lo, uintptr_t hi);
  mutable std::shared_mutex mu_;
  // key -> range. A multimap: a range re-keyed by a move may share its key with a range whose
  // pages there are GONE. Ranges overlap only where at most one of them is not GONE.
  std::multimap<uintptr_t, RangePtr> map_;
  size_t max_span_ = 0;  // largest map_bytes ever placed: how far below lo a range may reach
  std::multimap<uintptr_t, RangePtr>::iterator find_locked(const Range *r);
  std::multimap<uintptr_t, RangePtr>::const_iterator first_reaching(uintptr_t lo) const;
  std::vector<RangePtr> freeing_;      // removed by umrt_free, host mapping not yet released
  uint64_t seq_ = 0;
};

}  // namespace umrt::rt
