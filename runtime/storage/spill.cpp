// storage/spill.cpp — a block's host pages out of host memory (the host budget), by the
// protocol's steps, as a host->device batch does with storage as the destination:
//   collect:  HOST pages no one holds are locked (plain LOCKED: a CPU writer cancels the page's
//             move, as for host->device, so it never waits for I/O);
//   unmap:    write-protected (the source is stable; writers fault);
//   copy:     anonymous pages: a swap slot each, the pages read into staging, written to the
//             swap file in one submission; a file range's dirty pages written back to the file
//             (clean ones need nothing: the file has them);
//   finalize: publish (CAS from what was locked: fails for a page a writer cancelled) SWAP with
//             the slot, or NONE (in the file); the published pages' host copies zapped (inside
//             the install gate); the rest restored (protection lifted unless a clean file page,
//             unused slots released); unlocked; the span woken.
#include "spill.h"

#include <sys/mman.h>

#include <cerrno>
#include <cstdio>

#include "../batch.h"
#include "../nvtx.h"
#include "../remap.h"
#include "../threads.h"
#include "file_store.h"
#include "swap.h"

namespace umrt::rt {

uint32_t spill_block(Runtime &rt, Range &r, size_t first, size_t n, bool *refused) {
  if (refused) *refused = false;
  DBlock *db = r.dblock(first);
  if (!db) return 0;
  // A flush's clean pages may be only in the page cache until its fdatasync: not dropped now.
  if (r.file() && r.flushing.load(std::memory_order_acquire)) return 0;
  if (!r.file() && rt.swap.open() != 0) return 0;  // no swap file: anonymous pages cannot leave
  r.batches.fetch_add(1);  // seen by an mremap of r (remap.cpp)
  rt.devmem.begin(db, false);
  Entry *ents = r.entries.get();
  uint64_t src[kBlockPages];
  uint64_t slot[kBlockPages];
  bool held[kBlockPages], io[kBlockPages], good[kBlockPages], published[kBlockPages];
  uint32_t nheld = 0;
  const uint64_t t0 = now_ns();
  nvtx::Range range(r.file() ? Ev::spill_to_file : Ev::spill_to_swap, nvtx::Cat::storage, n * kPageSize);
  // collect
  uint32_t host_seen = 0;
  for (size_t i = 0; i < n; ++i) {
    held[i] = io[i] = good[i] = published[i] = false;
    src[i] = 0;
    slot[i] = UINT64_MAX;
    Entry &e = ents[first + i];
    uint64_t cur = e.load(std::memory_order_acquire);
    while (entry::loc(cur) == Loc::HOST && !(cur & entry::GONE)) {
      if (entry::locked(cur)) {
        ++host_seen;
        break;
      }
      if (entry_transition(e, cur, cur | entry::LOCKED)) {
        src[i] = cur;
        held[i] = true;
        ++nheld;
        ++host_seen;
        break;
      }
    }
  }
  // The block's count from what its entries say (GONE pages it still counted drop out).
  {
    const uint32_t counted = db->host.load(std::memory_order_relaxed);
    if (counted > host_seen) rt.budget.sub(db, counted - host_seen);
  }
  uint32_t npub = 0, nswap = 0, nclean = 0;
  uint64_t written = 0;
  if (nheld) {
    char *const host0 = r.addr(first);
    // unmap
    for_runs(n, [&](size_t i) { return held[i]; }, [&](size_t i, size_t j) {
      if (rt.uffd.write_protect(host0 + i * kPageSize, (j - i) * kPageSize, true) == 0)
        for (size_t k = i; k < j; ++k) good[k] = true;
    });
    // copy
    char *stage = file_staging();
    const bool anon = !r.file();
    // A file range's pages the program discarded are not written (their read would fault in
    // zeros): published NONE below like clean ones (storage/discard.h).
    bool gone[kBlockPages] = {};
    if (!anon && !rt.pagemap.unmapped_run(host0, n, gone))
      for (size_t i = 0; i < n; ++i) gone[i] = false;
    for (size_t i = 0; i < n; ++i) {
      if (!good[i]) continue;
      io[i] = anon || ((src[i] & entry::DIRTY) && !gone[i]);
      if (io[i] && anon) {
        const int64_t s = rt.swap.alloc();
        if (s < 0) {
          good[i] = io[i] = false;
          continue;
        }
        slot[i] = static_cast<uint64_t>(s);
      }
    }
    if (!stage) {
      for (size_t i = 0; i < n; ++i) good[i] = good[i] && !io[i];
    } else {
      for_runs(n, [&](size_t i) { return io[i]; }, [&](size_t i, size_t j) {
        if (read_user_pages(stage + i * kPageSize, host0 + i * kPageSize, (j - i) * kPageSize) != 0)
          for (size_t k = i; k < j; ++k) io[k] = good[k] = false;
      });
      bool ok[kBlockPages];
      if (anon) rt.swap.write(slot, io, n, stage, ok, &written);
      else write_file_pages(r, first, n, io, stage, ok, &written);
      for (size_t i = 0; i < n; ++i)
        if (io[i] && !ok[i]) good[i] = false;
    }
    // finalize: publish, and the host copies of what was published go. The address check, the
    // publication and the zap in one install gate: no mremap event is read in between, so the
    // pages zapped are the ones published (remap.cpp).
    {
      AsyncSignalsBlocked nosig;
      FaultService::InstallGate gate(rt.faults);
      if (r.addr(first) != host0)  // moved (mremap) since it was read: what was read may be another's
        for (size_t i = 0; i < n; ++i) good[i] = false;
      for (size_t i = 0; i < n; ++i) {
        if (!good[i]) continue;
        uint64_t expected = src[i] | entry::LOCKED;
        const uint64_t to = anon ? entry::make(Loc::SWAP, slot[i]) : entry::with_loc(src[i], Loc::NONE);
        published[i] = entry_transition(ents[first + i], expected, to | entry::LOCKED);
      }
      for_runs(n, [&](size_t i) { return published[i]; }, [&](size_t i, size_t j) {
        if (madvise(host0 + i * kPageSize, (j - i) * kPageSize, MADV_DONTNEED) == 0) return;
        // Refused (mlock()ed): page by page, the ones that keep their host copy are taken back.
        for (size_t k = i; k < j; ++k) {
          if (madvise(host0 + k * kPageSize, kPageSize, MADV_DONTNEED) == 0) continue;
          uint64_t cur = ents[first + k].load(std::memory_order_acquire);
          while (!entry_transition(ents[first + k], cur, src[k] | entry::LOCKED | (cur & entry::GONE))) {
          }
          published[k] = false;
          if (refused) *refused = true;
        }
      });
    }
    // restore, unlock, release unused slots
    uint64_t unused[kBlockPages];
    size_t nunused = 0;
    // (A writable file range's clean pages keep theirs. At the range's address of now: if it
    // moved, its pages and their protection did too.)
    for_runs(n,
             [&](size_t i) {
               return held[i] && !published[i] &&
                      (!r.writable() || (ents[first + i].load(std::memory_order_acquire) & entry::DIRTY));
             },
             [&](size_t i, size_t j) { rt.uffd.write_protect(r.addr(first + i), (j - i) * kPageSize, false); });
    for (size_t i = 0; i < n; ++i)
      if (held[i] && !published[i] && slot[i] != UINT64_MAX) unused[nunused++] = slot[i];  // taken, not used
    if (nunused) rt.swap.release(unused, nunused);  // (before the unlock: see finalize.cpp)
    for (size_t i = 0; i < n; ++i) {
      if (!held[i]) continue;
      entry_unlock(ents[first + i]);
      if (published[i]) {
        ++npub;
        if (anon) ++nswap;
        else if (!(src[i] & entry::DIRTY)) ++nclean;
      }
    }
    rt.budget.sub(db, npub);
    rt.stats.add(rt.stats.bytes_to_storage, written);
    rt.stats.add(rt.stats.swap_outs, nswap);
    rt.stats.add(rt.stats.pages_dropped_clean, nclean);
    if (rt.trace.on()) {
      char args[160];
      std::snprintf(args, sizeof args, "\"range\":\"%#lx\",\"first_page\":%zu,\"selected\":%u,\"left\":%u,\"bytes\":%llu",
                    static_cast<unsigned long>(r.start()), first, nheld, npub, static_cast<unsigned long long>(written));
      rt.trace.event(ev_name(anon ? Ev::spill_to_swap : Ev::spill_to_file), "storage", t0, now_ns() - t0, args);
    }
  }
  range.end();
  rt.devmem.end(db);
  if (nheld) rt.uffd.wake(r.addr(first), n * kPageSize);
  batch_done(r);
  return npub;
}

}  // namespace umrt::rt
