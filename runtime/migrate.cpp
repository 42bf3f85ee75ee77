// migrate.cpp — drives the protocol: one batch per device block (collect -> unmap -> copy ->
// finalize), spans split block by block, pages held by other owners retried, and the eviction
// callback DevMem uses to push a victim block back to host.
#include <cerrno>
#include <cstdio>
#include <thread>

#include "batch.h"
#include "nvtx.h"
#include "remap.h"
#include "storage/writeback.h"
#include "threads.h"

namespace umrt::rt {

const char *why_name(Why w) {
  switch (w) {
    case Why::prefetch: return "prefetch";
    case Why::fault: return "fault";
    case Why::fault_write: return "fault_write";
    case Why::evict: return "evict";
    case Why::shutdown: return "shutdown";
    case Why::readahead: return "readahead";
  }
  return "?";
}

namespace {
// A batch's NVTX category: a fault's or an eviction's work, or a migration (prefetch, shutdown).
nvtx::Cat batch_cat(Why w) {
  switch (w) {
    case Why::fault:
    case Why::fault_write:
    case Why::readahead: return nvtx::Cat::fault;
    case Why::evict: return nvtx::Cat::eviction;
    case Why::prefetch:
    case Why::shutdown: break;
  }
  return nvtx::Cat::migrate;
}

void trace_batch(Runtime &rt, const Batch &b, uint64_t t0, uint64_t t1, uint64_t t2, uint64_t t3,
                 uint64_t t4) {
  char args[256];
  std::snprintf(args, sizeof args,
                "\"range\":\"%#lx\",\"first_page\":%zu,\"pages\":%zu,\"selected\":%u,"
                "\"published\":%u,\"restored\":%u,\"skipped_locked\":%u,\"why\":\"%s\",\"error\":%d",
                static_cast<unsigned long>(b.r->start()), b.first, b.n, b.held, b.published, b.restored,
                b.skipped_locked, why_name(b.why), b.error);
  const char *cat = b.dir == Dir::to_device ? "to_device" : "to_host";
  rt.trace.event(ev_name(b.dir == Dir::to_device ? Ev::batch_to_device : Ev::batch_to_host), cat, t0, t4 - t0, args);
  rt.trace.event(ev_name(Ev::collect), cat, t0, t1 - t0, "");
  rt.trace.event(ev_name(Ev::unmap), cat, t1, t2 - t1, "");
  rt.trace.event(ev_name(Ev::copy), cat, t2, t3 - t2, "");
  rt.trace.event(ev_name(Ev::finalize), cat, t3, t4 - t3, "");
}
}  // namespace

int run_batch(Runtime &rt, Range &r, size_t first, size_t n, Dir dir, Why why, bool block_held,
              uint32_t *skipped, uint64_t span) {
  UMRT_CHECK(n > 0 && n <= kBlockPages, "batch size");
  UMRT_CHECK(r.block_first(first) == r.block_first(first + n - 1), "batch spans two blocks");
  DBlock *db = r.block_at(first);
  if (!db) return -ENOMEM;  // no host memory for the block's bookkeeping
  r.batches.fetch_add(1);  // seen by an mremap of r (remap.cpp)
  if (!block_held) rt.devmem.begin(db, dir == Dir::to_device);
  Batch b{};
  b.rt = &rt;
  b.r = &r;
  b.db = db;
  b.first = first;
  b.n = n;
  b.dir = dir;
  b.why = why;
  b.span = span;
  // The batch's NVTX range and its steps' open where the Chrome trace's timestamps are taken.
  nvtx::Range range(nvtx::batch_msg(dir, why), batch_cat(why), n * kPageSize);
  const uint64_t t0 = now_ns();
  range.step(Ev::collect);
  collect(b);
  const uint64_t t1 = now_ns();
  if (b.held) {
    range.step(Ev::unmap);
    unmap(b);
    const uint64_t t2 = now_ns();
    range.step(Ev::copy);
    copy(b);
    const uint64_t t3 = now_ns();
    range.step(Ev::finalize);
    finalize(b);
    const uint64_t t4 = now_ns();
    range.end();
    rt.stats.add(rt.stats.pages_selected, b.held);
    rt.stats.add(rt.stats.ns_collect, t1 - t0);
    rt.stats.add(rt.stats.ns_unmap, t2 - t1);
    rt.stats.add(rt.stats.ns_copy, t3 - t2);
    rt.stats.add(rt.stats.ns_finalize, t4 - t3);
    if (rt.trace.on()) trace_batch(rt, b, t0, t1, t2, t3, t4);
#if UMRT_DEBUG_CHECKS
    for (size_t i = 0; i < n; ++i) {
      const char *why = nullptr;
      UMRT_CHECK(entry_valid(r.entries[first + i].load(std::memory_order_acquire), &why), why);
      UMRT_CHECK(!(b.dst[i] & entry::MIGRATE) || (b.src[i] & entry::MIGRATE), "dst MIGRATE without src MIGRATE");
    }
#endif
    rt.stats.add(rt.stats.batches, 1);
  }
  range.end();
  // Most recently used, and part of this prefetch (not evicted to make room for it), also when
  // its pages were on the device already; marked while the batch still holds the block busy.
  if (dir == Dir::to_device && (b.published || (span && !b.error))) rt.devmem.touch(db, span);
  if (!block_held) rt.devmem.end(db);
  rt.stats.add(rt.stats.pages_skipped_locked, b.skipped_locked);
  if (b.held) rt.uffd.wake(r.addr(first), n * kPageSize);
  batch_done(r);
  // Pages to try again: held by others, cancelled by a writer, or all of them if the range moved
  // under the copy (their restore is not an error).
  if (skipped) *skipped = b.skipped_locked + b.cancelled + (b.moved.load() ? b.restored : 0);
  if (b.moved.load() && b.error == -EAGAIN) b.error = 0;
  return b.error;
}

namespace {
// Blocks lane, lane + lanes, lane + 2*lanes, ... of [first, end); stops at the first error.
int migrate_lane(Runtime &rt, Range &r, size_t first, size_t end, Dir dir, Why why, unsigned lane,
                 unsigned lanes, uint64_t span) {
  // Shutdown goes on past a failed block: every other block still gets its chance to come home
  // before device memory is freed.
  int first_error = 0;
  unsigned k = 0;
  for (size_t p = first; p < end; ++k) {
    size_t stop = std::min(end, r.block_end(p));
    // A block never made holds nothing on the device: nothing to bring home (a to-host
    // prefetch leaves untouched pages NONE), and no page state to create for it; unless the
    // range is a file's, whose NONE pages a to-host prefetch reads.
    if (k % lanes == lane && (dir == Dir::to_device || why == Why::fault || why == Why::fault_write || r.dblock(p) ||
                              (why == Why::prefetch && r.file()))) {
      // Pages held by another batch or the fault service are retried until that owner is done:
      // a synchronous prefetch promises the whole span (collect itself never waits).
      if (dir == Dir::to_host && why == Why::prefetch) rt.budget.throttle();
      const int rc = retry_while_skipped(
          [&](uint32_t *skipped) { return run_batch(rt, r, p, stop - p, dir, why, false, skipped, span); });
      if (rc) {
        if (why != Why::shutdown) return rc;
        if (!first_error) first_error = rc;
      }
    }
    p = stop;
  }
  return first_error;
}
}  // namespace

// Spans of more than one block run in two lanes (even and odd blocks) so that one batch's
// serial steps (write-protect, zap, unlock) overlap the other's copy: docs/design.md.
int migrate_span(Runtime &rt, Range &r, size_t first, size_t n, Dir dir, Why why) {
  const size_t end = first + n;
  // One id per call to the device: its own blocks are never evicted to make room for it, so
  // it returns with all of it there. A span larger than device memory cannot be: it streams
  // (its own oldest blocks make room, it returns with its last part on the device).
  static std::atomic<uint64_t> spans{0};
  const uint64_t blocks = r.packed ? 1 : (first + n - 1) / kBlockPages - first / kBlockPages + 1;
  const bool fits = blocks * kBlockSize <= rt.devmem.capacity();
  const uint64_t span = dir == Dir::to_device && fits ? spans.fetch_add(1) + 1 : 0;
  if (r.block_end(first) >= end) return migrate_lane(rt, r, first, end, dir, why, 0, 1, span);
  // Lane 1 on one of the runtime's lane threads (none idle: this thread runs both lanes).
  struct Lane1 {
    Runtime &rt;
    Range &r;
    size_t first, end;
    Dir dir;
    Why why;
    uint64_t span;
    int rc = 0;
  } l1{rt, r, first, end, dir, why, span};
  LaneJob job;
  job.ctx = &l1;
  job.fn = [](void *c) {
    auto &l = *static_cast<Lane1 *>(c);
    l.rc = migrate_lane(l.rt, l.r, l.first, l.end, l.dir, l.why, 1, 2, l.span);
  };
  if (!rt.lanes.try_run(&job)) return migrate_lane(rt, r, first, end, dir, why, 0, 1, span);
  int rc0 = migrate_lane(rt, r, first, end, dir, why, 0, 2, span);
  job.wait();
  return rc0 ? rc0 : l1.rc;
}

int evict_pages(void *ctx, Range &r, size_t first, size_t n) {
  Runtime &rt = *static_cast<Runtime *>(ctx);
  // Pages another owner holds are moving anyway (a fault brings them home) or will be put
  // back; DevMem checks the block's resident count afterwards and picks again if needed.
  uint32_t skipped = 0;
  // A writable file range's pages go to their file instead when host memory is at its budget.
  if (r.writable() && rt.budget.on() && rt.budget.pages() + n >= rt.budget.limit_pages())
    write_back_device_pages(rt, r, first, n);
  return run_batch(rt, r, first, n, Dir::to_host, Why::evict, true, &skipped);
}

}  // namespace umrt::rt
