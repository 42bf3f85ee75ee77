// unmap.cpp — protocol step 2: make the source copy of every selected page stable.
//
// Host source: UFFDIO_WRITEPROTECT each run of selected HOST pages, so CPU writers block in the
// fault handler (or cancel the page, see fault.cpp) while readers go on. NONE pages have no
// host copy to protect. Device source: wait for device work that may still write it (a batch
// with no DEVICE page selected does not wait). A run that cannot be protected loses MIGRATE
// (it will be restored).
#include "batch.h"

namespace umrt::rt {

void unmap(Batch &b) {
  if (b.dir == Dir::to_host) {
    // Only DEVICE sources wait for the device (NONE pages, zero or a file's, have nothing there).
    bool any_device = false;
    for (size_t i = 0; i < b.n && !any_device; ++i)
      any_device = (b.src[i] & entry::MIGRATE) && entry::loc(b.src[i]) == Loc::DEVICE;
    if (!any_device) return;
    int rc = b.rt->backend->device_sync();
    if (rc) {
      for (size_t i = 0; i < b.n; ++i) b.src[i] &= ~entry::MIGRATE;
      b.fail(rc);
    }
    return;
  }
  auto is_host_sel = [&](size_t i) {
    return (b.src[i] & entry::MIGRATE) && entry::loc(b.src[i]) == Loc::HOST;
  };
  for_runs(b.n, is_host_sel, [&](size_t i, size_t j) {
    int rc = b.rt->uffd.write_protect(b.r->addr(b.first + i), (j - i) * kPageSize, true);
    if (rc) {
      log(rc == -ENOENT ? Level::info : Level::warn, "write-protect of %zu pages at %p failed: %d", j - i,
          b.r->addr(b.first + i), rc);
      for (size_t k = i; k < j; ++k) b.src[k] &= ~entry::MIGRATE;
      b.fail(rc);
    }
  });
}

}  // namespace umrt::rt
