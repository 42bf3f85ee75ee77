// batch.h — one run of the migration protocol over a span of one range within one device block:
// the src[]/dst[] arrays (upstream migrate_vma shape) and counters, and the protocol steps
//   collect -> unmap -> copy -> finalize
// each implemented in its own file (collect.cpp, unmap.cpp, copy.cpp, finalize.cpp) and driven
// by migrate.cpp.
//
// src[i] (page first + i): 0 if this batch does not hold the page; otherwise the entry value
// the batch locked (unlocked form) | LOCKED, plus MIGRATE while the page is still to move and
// WRITE when the source copy may be written (host source). dst[i]: the entry the page gets
// when it moves (location, frame) | MIGRATE once a destination is allocated.
// Invariant: MIGRATE in dst[i] implies MIGRATE in src[i]; a page leaves the batch either
// published (dst) or restored (src), never both, never neither.
#pragma once

#include <cerrno>
#include <chrono>
#include <thread>

#include "runtime.h"

namespace umrt::rt {

enum class Dir : uint8_t { to_device, to_host };
// fault_write: the fault group holds a write fault, so NONE pages are materialised writable
// (UFFDIO_COPY of zeros) instead of as the shared zero page (which the write would then COW).
// readahead: a file range's next block read in by the fault service behind a sequential
// stream (fault.cpp): only its pages still in the file (NONE) are selected, nothing else moves.
enum class Why : uint8_t { prefetch, fault, fault_write, evict, shutdown, readahead };
const char *why_name(Why w);  // "prefetch", "fault", ... (migrate.cpp)

struct Batch {
  Runtime *rt;
  Range *r;
  DBlock *db;
  size_t first, n;  // pages [first, first + n), all in one device block
  Dir dir;
  Why why;
  uint64_t span;  // the migrate_span call (to_device) this batch belongs to, 0 for none
  uint64_t src[kBlockPages];
  uint64_t dst[kBlockPages];
  bool installed[kBlockPages];  // to_host: the page was mapped into the range
  // counters
  uint32_t held = 0;           // pages locked by this batch
  uint32_t skipped_locked = 0; // pages another batch or the fault service held
  uint32_t published = 0;
  uint32_t restored = 0;
  uint32_t cancelled = 0;      // to_device: restored because a CPU writer cancelled them
  std::atomic<bool> moved{false};  // the range moved (mremap) during the copy: all to try again
  int error = 0;               // first error (-errno): -ENOMEM for device memory, -EIO copy

  void fail(int e) {
    if (!error) error = e;
  }
};

// Call fn(i, j) for each maximal run [i, j) of batch slots where pred(slot) holds.
template <typename Pred, typename Fn>
void for_runs(size_t n, Pred pred, Fn fn) {
  for (size_t i = 0; i < n;) {
    if (!pred(i)) {
      ++i;
      continue;
    }
    size_t j = i;
    while (j < n && pred(j)) ++j;
    fn(i, j);
    i = j;
  }
}

// Run once(&skipped) (one batch over one block; returns 0 or -errno, and the pages to try again)
// until nothing is skipped: pages held by another owner are retried until that owner is done
// (collect never waits). Returns once's error, or -EBUSY after 100000 rounds of skipped pages.
template <typename Once>
int retry_while_skipped(Once once) {
  for (unsigned attempt = 0;; ++attempt) {
    uint32_t skipped = 0;
    const int rc = once(&skipped);
    if (rc) return rc;
    if (skipped == 0) return 0;
    if (attempt > 100000) return -EBUSY;
    if (attempt > 16) std::this_thread::sleep_for(std::chrono::microseconds(50));
    else std::this_thread::yield();
  }
}

// The steps. Each returns nothing: failures clear MIGRATE for the pages concerned and record
// batch.error; finalize always runs and leaves every held page published or restored.
void collect(Batch &b);
void unmap(Batch &b);
void copy(Batch &b);
void finalize(Batch &b);

// Run one batch over [first, first + n) (inside one block). block_held: the caller already
// holds the block busy (eviction). Returns 0 or the first error; *skipped gets the pages to try
// again: skipped because another owner held them, or cancelled by a CPU writer.
int run_batch(Runtime &rt, Range &r, size_t first, size_t n, Dir dir, Why why, bool block_held,
              uint32_t *skipped, uint64_t span = 0);

// Move every page of [first, first + n) of r to dir, block by block (two lanes: even and odd
// blocks, concurrently), retrying pages held by others until they are free. Returns 0 or the
// first error; a lane stops at its error, the other finishes its blocks.
int migrate_span(Runtime &rt, Range &r, size_t first, size_t n, Dir dir, Why why);

// DevMem eviction callback: pages [first, first + n) of r to host (the block is held).
int evict_pages(void *rt, Range &r, size_t first, size_t n);

}  // namespace umrt::rt
