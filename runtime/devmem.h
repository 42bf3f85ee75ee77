// devmem.h — device memory manager: a fixed capacity handed out in 2 MiB chunks, one chunk per
// device block that holds device-resident pages, LRU eviction of whole blocks to host when a
// batch needs a chunk and none is free (oversubscription), and packing of small allocations.
//
// A device block (DBlock) is either one 2 MiB-aligned block of a large range (mapped at its
// offset in the range's device window) or a *pack*: a 2 MiB device window shared by several
// small ranges (< 2 MiB), each holding a contiguous slot of pages. Device addresses are fixed
// for a range's lifetime; only the physical chunk behind a block comes and goes.
#pragma once

#include <bitset>
#include <condition_variable>
#include <list>
#include <mutex>
#include <set>
#include <unordered_map>
#include <vector>

#include "backend.h"
#include "range.h"

namespace umrt::rt {

constexpr uint32_t kNoChunk = UINT32_MAX;

struct Segment {
  Range *range;   // alive while the segment is listed (umrt_free removes it under the lock)
  size_t first;   // first page of the range on this block
  size_t npages;
};

// Invariants (checked by DevMem::validate when quiescent):
//   - chunk == kNoChunk  <=>  not in the LRU list; a chunk belongs to at most one block;
//   - resident == number of DEVICE entries of the block's segments, each with
//     frame == range->frame(page, chunk); resident > 0 implies chunk != kNoChunk;
//   - busy counts the batches using this block now; a block with busy > 0 is never chosen for
//     eviction (a device->host batch may join an eviction in progress: both only bring pages
//     home, each page locked by one of them);
//   - evicting is true only while an eviction holds busy.
// busy is atomic: device->host batches (the fault path) count themselves in and out without
// DevMem::mu_, which application threads hold (a signal handler interrupting one must not make
// the fault service wait for it); waiters for busy == 0 re-check on a short timeout.
struct DBlock {
  DBlock *next_made = nullptr;  // large ranges: the block made before it (Range::blocks_made)
  DevWindow *win = nullptr;  // the window the chunk is mapped into
  size_t win_offset = 0;
  uint32_t chunk = kNoChunk;
  std::atomic<int> busy{0};  // see above
  bool evicting = false;     // guarded by DevMem::mu_
  std::atomic<uint32_t> resident{0};
  // The host budget (host_budget.h): pages of this block on the host (HOST entries, GONE ones
  // until the next count), and when pages last came home to it (its clock).
  std::atomic<uint32_t> host{0};
  std::atomic<uint64_t> host_used{0};
  std::list<DBlock *>::iterator lru_it;
  uint64_t span = 0;         // guarded by DevMem::mu_: the prefetch that last filled it
  bool evicted_before = false;  // guarded by DevMem::mu_: evicted since it last got a chunk
  std::vector<Segment> segs;  // guarded by DevMem::mu_
  // packs only
  bool is_pack = false;
  DevWindow pack_window;
  std::bitset<kBlockPages> used;
  uint32_t max_run = kBlockPages;  // longest run of free slots (its key in DevMem::room_)
};

template <class F>
void Range::each_block(F &&f) const {
  if (packed) {
    if (pack) f(*pack);
    return;
  }
  for (DBlock *b = blocks_made.load(std::memory_order_acquire); b; b = b->next_made) f(*b);
}

template <class F>
void Range::for_each_used_page(F &&f) const {
  if (packed) {
    for (size_t p = 0; p < npages; ++p) f(p);
    return;
  }
  each_block([&](const DBlock &b) {
    const size_t first = b.win_offset / kBlockSize * kBlockPages;
    for (size_t p = first; p < block_end(first); ++p) f(p);
  });
}

class DevMem {
 public:
  // Evicts pages [first, first+n) of r to host; the block's busy is already held.
  using EvictFn = int (*)(void *ctx, Range &r, size_t first, size_t n);

  // pool_bytes: released device memory kept ready for reuse (the pool's watermark).
  void init(Backend *be, EvictFn fn, void *ctx, uint64_t pool_bytes);
  void shutdown();

  int setup_range(Range &r);       // device window or pack slot (no physical memory yet)
  void teardown_range(Range &r);   // waits for the range's blocks to go idle, frees chunks

  // A batch starts/ends using a block. For host->device, waits while the block is evicted.
  void begin(DBlock *b, bool to_device);
  void end(DBlock *b);
  // Give block b (busy held by the caller) a mapped chunk, evicting LRU blocks if needed.
  // span: the prefetch (migrate_span call) the batch belongs to; blocks it filled already are
  // not evicted for it (a prefetch that does not fit fails instead of evicting itself). 0: none.
  int ensure_chunk(DBlock *b, uint64_t span);
  void touch(DBlock *b, uint64_t span);  // most recently used, filled by that span

  // What can be had: less than at init once chunks could not be created (memory taken by others).
  uint64_t capacity() const { return uint64_t{nchunks_ - retired_.load(std::memory_order_relaxed)} * kBlockSize; }
  uint64_t bytes_in_use();
  uint64_t evictions() const { return evictions_.load(std::memory_order_relaxed); }
  // Evicted blocks that got device memory again (each a block that had to come back: thrashing).
  uint64_t refetches() const { return refetches_.load(std::memory_order_relaxed); }
  // Check every invariant above; on failure *why says which (quiescent state expected).
  bool validate(const std::vector<RangePtr> &ranges, std::string *why);

 private:
  void free_chunk_locked(DBlock *b);
  void sync_before_release(Range &r);  // device work done before r's chunks are unmapped
  void put_free_locked(uint32_t c);  // a chunk no block holds (unmapped): to the pool or back
  void wait_idle(std::unique_lock<std::mutex> &lk, DBlock &b);  // until b.busy == 0
  Backend *be_ = nullptr;
  EvictFn evict_ = nullptr;
  void *ctx_ = nullptr;
  std::mutex mu_;
  std::condition_variable cv_;
  uint32_t nchunks_ = 0;
  // Free chunks: ready ones (memory still allocated by the backend, at most pool_max_) are
  // taken first; bare ones were never used or gave their memory back (chunk_release).
  std::vector<uint32_t> free_;
  std::vector<uint32_t> bare_;
  uint32_t pool_max_ = 0;
  std::atomic<uint32_t> retired_{0};  // chunks whose creation failed: out of circulation
  bool warned_retired_ = false;       // under mu_: the log says it once
  std::list<DBlock *> lru_;                    // blocks holding a chunk, least recent first
  // Packs, and the packs with free slots ordered by their longest free run: a small range
  // takes the pack with the shortest run that fits (best fit, O(log packs)), so the cost of
  // umrt_malloc does not grow with the number of allocations.
  std::unordered_map<DBlock *, std::unique_ptr<DBlock>> packs_;
  std::set<std::pair<uint32_t, DBlock *>> room_;
  void update_room_locked(DBlock *p);
  void got_chunk_locked(DBlock *b, uint32_t c);  // b holds chunk c now (LRU, refetch count)
  std::atomic<uint64_t> evictions_{0};
  std::atomic<uint64_t> refetches_{0};
};

}  // namespace umrt::rt
