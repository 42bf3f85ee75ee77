// storage/discard.cpp — a file range's discarded host pages back to the file (see discard.h).
#include "discard.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>

#include "../runtime.h"

namespace umrt::rt {

void PageMap::open() {
  if (fd_ < 0) fd_ = ::open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
}

void PageMap::close() {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
}

bool PageMap::unmapped(const void *a) const {
  bool out = false;
  if (unmapped_run(a, 1, &out)) return out;
  unsigned char resident = 0;
  return mincore(const_cast<void *>(a), kPageSize, &resident) == 0 && !(resident & 1);
}

bool PageMap::unmapped_run(const void *a, size_t n, bool *out) const {
  if (fd_ < 0) return false;
  uint64_t v[kBlockPages];
  for (size_t done = 0; done < n;) {
    const size_t k = std::min(n - done, kBlockPages);
    const uintptr_t page = reinterpret_cast<uintptr_t>(a) / kPageSize + done;
    const ssize_t got = pread(fd_, v, k * sizeof v[0], static_cast<off_t>(page * sizeof v[0]));
    if (got != static_cast<ssize_t>(k * sizeof v[0])) return false;
    for (size_t i = 0; i < k; ++i) out[done + i] = !(v[i] >> 63 & 1) && !(v[i] >> 62 & 1);
    done += k;
  }
  return true;
}

size_t take_back_discarded(Runtime &rt, Range &r, size_t first, size_t n, const uint64_t *src, bool keep_lock,
                           bool *disc) {
  for (size_t i = 0; i < n; ++i) disc[i] = false;
  if (!r.file()) return 0;
  bool any = false;
  for (size_t i = 0; i < n && !any; ++i) any = src[i] && entry::loc(src[i]) == Loc::HOST;
  bool gone[kBlockPages];
  if (!any || !rt.pagemap.unmapped_run(r.addr(first), n, gone)) return 0;
  size_t count = 0;
  for (size_t i = 0; i < n; ++i) {
    if (!src[i] || entry::loc(src[i]) != Loc::HOST || !gone[i]) continue;
    Entry &e = r.entries[first + i];
    uint64_t cur = e.load(std::memory_order_acquire);  // only GONE may have changed
    if (cur & entry::GONE) continue;
    const uint64_t to = entry::with_loc(cur, Loc::NONE) | (keep_lock ? entry::LOCKED : 0);
    if (!entry_transition(e, cur, to)) continue;  // GONE meanwhile: left to its owner
    disc[i] = true;
    ++count;
  }
  if (count)
    if (DBlock *db = r.block_at(first)) rt.budget.sub(db, static_cast<uint32_t>(count));
  return count;
}

}  // namespace umrt::rt
