// finalize.cpp — protocol step 4: publish what moved, restore what could not, release sources,
// unlock, wake waiters. At every instant exactly one authoritative copy of each page is
// recorded in its entry: nothing is ever lost.
//
// to_device: publish (CAS, keeping LOCKED: fails if a CPU writer cancelled the page or the
//   user unmapped it; a writable file range's page is DIRTY from there on) -> take the published runs' host pages out (UFFDIO_MOVE into the host
//   pool, else MADV_DONTNEED: the next CPU access faults) ->
//   restore the others (lift the write-protect, waking blocked writers) -> unlock. Published
//   frames count as resident.
// to_host:   installed pages are already mapped (not yet woken) and, if copied, already
//   published HOST by the installer: unlock them (zero-filled pages: publish HOST; dropped GONE
//   pages: NONE), free their frames, unlock the rest.
// Then run_batch wakes the whole span: threads that faulted on the batch's pages resume (or
// retry) only once every entry and counter is settled.
#include <sys/mman.h>

#include <cerrno>

#include "batch.h"
#include "threads.h"

namespace umrt::rt {
namespace {

constexpr uint64_t kBatchFlags = entry::MIGRATE | entry::WRITE;

// Release the host copies of the published pages: moved into the host pool where it has room
// (kept for the next pages coming home, host_pool.h), the rest zapped. ENOMEM: the user
// unmapped or moved the range meanwhile (remap.cpp rechecks moves). Any other failure (EINVAL:
// the user mlock()ed the pages) leaves the host copy mapped, so those pages cannot move: their
// publication is taken back (the entry says HOST again, still locked; published[k] false) and
// the caller restores them. (A page the pool refuses, mlocked or gone, is left for the zap.)
void release_host_copies(Batch &b, bool *published) {
  Runtime &rt = *b.rt;
  Entry *ents = b.r->entries.get();
  HostPool &pool = rt.host_pool;
  HostPool::Slot *slot = nullptr;
  bool no_slot = !pool.on();
  // The range's address and what is mapped there agree for the whole release: no mremap event
  // is read meanwhile (else the old address may be another range's by the time of the zap).
  AsyncSignalsBlocked nosig;
  FaultService::InstallGate gate(rt.faults);
  for_runs(b.n, [&](size_t i) { return published[i] && entry::loc(b.src[i]) == Loc::HOST; },
           [&](size_t i, size_t j) {
             while (i < j && !no_slot) {
               if (!slot && !(slot = pool.take_for_stash())) {
                 no_slot = true;
                 break;
               }
               const size_t moved = pool.stash(*slot, b.r->addr(b.first + i), j - i);
               i += moved;
               if (i == j) break;
               // The slot is full (take another), or the kernel refused the next page (shared,
               // mlocked, gone): then it would refuse again; zap the rest of the batch.
               pool.give(slot);
               slot = nullptr;
               if (moved == 0) no_slot = true;
             }
             if (i == j) return;
             if (madvise(b.r->addr(b.first + i), (j - i) * kPageSize, MADV_DONTNEED) == 0) return;
             int err = errno;
             if (err == ENOMEM) {
               log(Level::info, "MADV_DONTNEED of %zu pages at %p failed: %d", j - i, b.r->addr(b.first + i), -err);
               return;
             }
             // The kernel stops at the first piece of the mapping it refuses and may have zapped
             // pages before it: page by page, so that only pages that kept their host copy are
             // taken back (a zapped page's only copy is the device one).
             size_t kept = 0;
             for (size_t k = i; k < j; ++k) {
               if (madvise(b.r->addr(b.first + k), kPageSize, MADV_DONTNEED) == 0 || errno == ENOMEM) continue;
               err = errno;
               uint64_t cur = ents[b.first + k].load(std::memory_order_acquire);
               while (!entry_transition(ents[b.first + k], cur, (b.src[k] & ~kBatchFlags) | (cur & entry::GONE))) {
               }
               published[k] = false;
               ++kept;
             }
             if (kept) {
               log(Level::warn, "MADV_DONTNEED refused %zu pages at %p (%d): they stay on the host", kept,
                   b.r->addr(b.first + i), -err);
               b.fail(-EPERM);
             }
           });
  pool.give(slot);
}

void finalize_to_device(Batch &b) {
  Runtime &rt = *b.rt;
  Entry *ents = b.r->entries.get();
  bool published[kBlockPages];
  for (size_t i = 0; i < b.n; ++i) {
    published[i] = false;
    if (!(b.src[i] & entry::LOCKED)) continue;
    if (b.dst[i] & entry::MIGRATE) {
      uint64_t expected = b.src[i] & ~kBatchFlags;
      // A writable file range's page on the device counts as written (a kernel may write it).
      uint64_t desired = (b.dst[i] & ~kBatchFlags) | entry::LOCKED | (b.r->writable() ? entry::DIRTY : 0);
      published[i] = entry_transition(ents[b.first + i], expected, desired);
    }
  }
  release_host_copies(b, published);
  // Restore: lift the write-protect of host pages that stay (wakes blocked writers). A clean
  // page of a writable file range stays protected (its first write must mark it DIRTY): its
  // waiting writers are woken by run_batch and fault again, on an unlocked page.
  const bool track = b.r->writable();
  for_runs(b.n,
           [&](size_t i) {
             return (b.src[i] & entry::LOCKED) && !published[i] && entry::loc(b.src[i]) == Loc::HOST &&
                    (!track || (ents[b.first + i].load(std::memory_order_acquire) & entry::DIRTY));
           },
           [&](size_t i, size_t j) {
             int rc = rt.uffd.write_protect(b.r->addr(b.first + i), (j - i) * kPageSize, false);
             // ENOENT: unmapped or moved meanwhile (a stale protection is lifted on its fault).
             if (rc && !(ents[b.first + i].load() & entry::GONE))
               log(rc == -ENOENT ? Level::info : Level::error, "un-write-protect at %p failed: %d",
                   b.r->addr(b.first + i), rc);
           });
  // Swap slots of pages published (read from the swap file) go back while still locked, so that
  // no one sees a page off its slot with the slot in use, or the other way round.
  uint64_t slots[kBlockPages];
  size_t nslots = 0;
  for (size_t i = 0; i < b.n; ++i)
    if (published[i] && entry::loc(b.src[i]) == Loc::SWAP) slots[nslots++] = entry::frame(b.src[i]);
  if (nslots) rt.swap.release(slots, nslots);
  uint32_t npub = 0, copied = 0;
  for (size_t i = 0; i < b.n; ++i) {
    if (!(b.src[i] & entry::LOCKED)) continue;
    if (!published[i] && (ents[b.first + i].load(std::memory_order_acquire) & entry::CANCEL))
      ++b.cancelled;
    entry_unlock(ents[b.first + i]);
    if (published[i]) {
      ++npub;
      copied += entry::loc(b.src[i]) == Loc::HOST;
    } else {
      ++b.restored;
    }
  }
  b.published = npub;
  if (npub) b.db->resident.fetch_add(npub, std::memory_order_acq_rel);
  rt.budget.sub(b.db, copied);  // those host pages are gone
  // Pages that moved: a copy whose page was then cancelled or could not be released is not counted.
  rt.stats.add(rt.stats.pages_to_device, copied);
  rt.stats.add(rt.stats.bytes_to_device, uint64_t{copied} * kPageSize);
}

void finalize_to_host(Batch &b) {
  Entry *ents = b.r->entries.get();
  uint32_t npub = 0, freed = 0, home = 0;
  uint64_t slots[kBlockPages];  // (released while the pages are still locked, as to_device)
  size_t nslots = 0;
  for (size_t i = 0; i < b.n; ++i)
    if ((b.src[i] & entry::LOCKED) && (b.dst[i] & entry::MIGRATE) && entry::loc(b.src[i]) == Loc::SWAP)
      slots[nslots++] = entry::frame(b.src[i]);
  if (nslots) b.rt->swap.release(slots, nslots);
  for (size_t i = 0; i < b.n; ++i) {
    if (!(b.src[i] & entry::LOCKED)) continue;
    Entry &e = ents[b.first + i];
    if (b.dst[i] & entry::MIGRATE) {
      // The page is mapped now: its host copy is authoritative. Copied pages were published
      // HOST by the installer (still locked): unlock. Zero-filled and dropped pages: publish.
      uint64_t cur = e.load(std::memory_order_acquire);
      Loc to = entry::loc(b.dst[i]);
      while (!entry_transition(e, cur, entry::with_loc(cur, to))) {
      }
      ++npub;
      home += to == Loc::HOST;
      if (entry::loc(b.src[i]) == Loc::DEVICE) ++freed;
    } else {
      entry_unlock(e);
      ++b.restored;
    }
  }
  b.published = npub;
  if (freed) b.db->resident.fetch_sub(freed, std::memory_order_acq_rel);
  b.rt->budget.add(b.db, home);
}

}  // namespace

void finalize(Batch &b) {
  if (b.dir == Dir::to_device)
    finalize_to_device(b);
  else
    finalize_to_host(b);
  b.rt->stats.add(b.rt->stats.pages_restored, b.restored);
}

}  // namespace umrt::rt
