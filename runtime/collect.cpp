// collect.cpp — protocol step 1: one pass over the span's entries selecting the pages to move.
//
// Pages already at the destination are skipped; the others are try-locked (CAS of LOCKED):
// a page another batch or the fault service holds is skipped — first locker wins, collect
// never waits. For a prefetch every locked page counts as skipped (so the prefetch retries it),
// also one that looks already at the destination: its owner may be moving it away. Selected pages get MIGRATE (+ WRITE for a host source) in src[].
//   to_device: HOST pages (copied), NONE pages (zero-filled on the device, no copy; a file
//              range's read from the file) and SWAP pages (read from the swap file).
//   to_host:   DEVICE and SWAP pages (copied back); NONE pages only on the fault path (zero-filled,
//              no copy — a prefetch leaves them NONE, which already reads as zero on the host),
//              and a file range's NONE pages (STORAGE: read from the file) on a prefetch too;
//              DEVICE and SWAP pages whose host address the user unmapped (GONE) are dropped.
//   A file range's HOST page the program discarded (nothing mapped) is taken as NONE: read from
//   the file (storage/discard.h).
#include "batch.h"
#include "storage/discard.h"

namespace umrt::rt {

void collect(Batch &b) {
  Entry *ents = b.r->entries.get();
  for (size_t i = 0; i < b.n; ++i) {
    b.src[i] = 0;
    b.dst[i] = 0;
    b.installed[i] = false;
    Entry &e = ents[b.first + i];
    uint64_t cur = e.load(std::memory_order_acquire);
    for (;;) {
      Loc l = entry::loc(cur);
      bool gone = cur & entry::GONE;
      bool want;
      if (b.dir == Dir::to_device)
        want = !gone && l != Loc::DEVICE;
      else
        want = ((l == Loc::DEVICE || l == Loc::SWAP) && b.why != Why::readahead) ||
               (l == Loc::NONE && !gone &&
                (b.why == Why::fault || b.why == Why::fault_write ||
                 ((b.why == Why::prefetch || b.why == Why::readahead) && b.r->file())));
      if (entry::locked(cur)) {
        // Held by another batch: skipped (first locker wins). A prefetch counts it even when
        // it seems to be at the destination already: a DEVICE page locked by a device->host
        // batch is on its way out, so "already there" would be a broken promise (the caller
        // retries skipped pages until their owner is done).
        if (want || b.why == Why::prefetch) ++b.skipped_locked;
        break;
      }
      if (!want) break;
      if (entry_transition(e, cur, cur | entry::LOCKED)) {
        b.src[i] = cur | entry::LOCKED | entry::MIGRATE | (l == Loc::HOST ? entry::WRITE : 0);
        ++b.held;
        break;
      }
      // cur was reloaded by the failed CAS: decide again
    }
  }
  // A file range's host pages the program discarded are read from the file, not copied (their
  // read would fault in zeros): NONE now, still held (storage/discard.h).
  if (b.dir == Dir::to_device && b.r->file() && b.held) {
    bool disc[kBlockPages];
    if (take_back_discarded(*b.rt, *b.r, b.first, b.n, b.src, true, disc))
      for (size_t i = 0; i < b.n; ++i)
        if (disc[i]) b.src[i] = ents[b.first + i].load(std::memory_order_acquire) | entry::MIGRATE;
  }
}

}  // namespace umrt::rt
