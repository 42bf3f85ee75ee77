// storage/discard.h — a file range's host pages the program discarded (madvise MADV_DONTNEED):
// the state array says HOST, yet nothing is mapped there. Under the page's lock nothing else
// maps it, so /proc/self/pagemap tells it reliably; such a page is the file's again (NONE), as
// with a private file mapping, and is read from the file when next needed — never taken as the
// zeros a read of it would fault in. Checked by the fault service and by every step that would
// read a file range's host page: a batch to the device (collect), the reclaim (spill.cpp), a
// write-back (writeback.cpp) and a part moved by mremap (remap.cpp).
#pragma once

#include <cstddef>
#include <cstdint>

namespace umrt::rt {

struct Runtime;
struct Range;

// This process's /proc/self/pagemap, open while a runtime runs.
class PageMap {
 public:
  void open();
  void close();
  // Whether page-aligned a has nothing mapped (no page, no swap entry). Without pagemap: false
  // when mincore says resident, else true (a page the kernel swapped out then looks discarded:
  // only there, and only for the cases that cannot otherwise be told).
  bool unmapped(const void *a) const;
  // The same for n pages from a: out[i] for page i (one read). False when pagemap is unavailable
  // (nothing is taken as discarded then).
  bool unmapped_run(const void *a, size_t n, bool *out) const;

 private:
  int fd_ = -1;
};

// Of pages [first, first + n) of file range r, those this caller holds locked as HOST (src[i]:
// nonzero and HOST for a page held; 0: not held) with nothing mapped: published NONE (still
// locked if keep_lock, else unlocked; DIRTY dropped), the block's host count lowered, disc[i]
// set. Returns how many.
size_t take_back_discarded(Runtime &rt, Range &r, size_t first, size_t n, const uint64_t *src, bool keep_lock,
                           bool *disc);

}  // namespace umrt::rt
