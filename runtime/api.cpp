// api.cpp — the C API: argument validation, lazy initialisation, status + umrt_last_error()
// for every failure, thread safety (a shared lock for calls, an exclusive one for init and
// shutdown). Nothing here throws: allocation failures become UMRT_ERROR_OUT_OF_MEMORY.
#include <pthread.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <map>
#include <mutex>
#include <new>
#include <shared_mutex>
#include <string>
#include <thread>

#include "batch.h"
#include "config.h"
#include "runtime.h"
#include "storage/file_store.h"
#include "storage/ring.h"
#include "storage/writeback.h"

using namespace umrt::rt;

namespace {

std::shared_mutex g_life;             // shared: API calls; exclusive: init / shutdown
// Guarded by g_life. A plain pointer on purpose: a program that exits without umrt_shutdown()
// must not run the runtime's destructor (its threads are still running) during static
// destruction; the process is going away, and the kernel reclaims everything.
Runtime *g_rt = nullptr;
std::atomic<bool> g_in_child{false};  // set in a child after fork(): umrt is unusable there
std::once_flag g_atfork_once;

// Ranges left mapped by umrt_shutdown (plain host memory now); umrt_free unmaps them.
std::mutex g_orphans_mu;
std::map<uintptr_t, RangePtr> g_orphans;

constexpr size_t kMaxAlloc = size_t{1} << 46;  // 64 TiB: far beyond any machine, below VA limits

umrt_status init_locked(const umrt_config *user) {
  std::call_once(g_atfork_once, [] {
    pthread_atfork(nullptr, nullptr, [] { g_in_child.store(true); });
  });
  umrt_config c{};
  if (user) c = *user;
  umrt_status st = resolve_config(&c);
  if (st != UMRT_SUCCESS) return st;
  auto rt = std::unique_ptr<Runtime>(new (std::nothrow) Runtime());
  if (!rt) return set_error(UMRT_ERROR_OUT_OF_MEMORY, "out of host memory");
  st = rt->start(c);
  if (st != UMRT_SUCCESS) {
    rt->stop();
    return st;
  }
  g_rt = rt.release();
  return UMRT_SUCCESS;
}

// Holds the runtime for one API call, initialising it lazily.
class Call {
 public:
  Call() {
    if (g_in_child.load(std::memory_order_relaxed)) {
      st_ = set_error(UMRT_ERROR_NOT_SUPPORTED,
                      "umrt cannot be used in a child process after fork(): managed memory is "
                      "not inherited");
      return;
    }
    for (;;) {
      lk_ = std::shared_lock(g_life);
      if (g_rt) break;
      lk_.unlock();
      {
        std::unique_lock u(g_life);
        if (!g_rt) {
          st_ = init_locked(nullptr);
          if (st_ != UMRT_SUCCESS) return;
        }
      }
    }
    rt_ = g_rt;
    rt_->reap_zombies();  // ranges munmap()ed by the user: their device memory goes back now
  }
  bool ok() const { return rt_ != nullptr; }
  umrt_status status() const { return st_; }
  Runtime &rt() { return *rt_; }

 private:
  std::shared_lock<std::shared_mutex> lk_;
  Runtime *rt_ = nullptr;
  umrt_status st_ = UMRT_SUCCESS;
};

// A runtime error code as a status + message; `be`: the backend whose own words (a CUDA error
// string) are appended when it has any.
umrt_status from_errno(int rc, const char *what, Backend *be = nullptr) {
  if (rc == 0) return UMRT_SUCCESS;
  if (is_io_error(rc)) {
    const int e = io_errno(rc);
    if (e == -ENODATA)
      return set_error(UMRT_ERROR_IO, "%s: the file is shorter than the range now (truncated while mapped)", what);
    return set_error(UMRT_ERROR_IO, "%s: file I/O failed: %s; nothing was lost (pages not read stay in the file, "
                     "pages not written stay dirty)", what, strerror(-e));
  }
  std::string detail = be ? be->take_error_text() : std::string();
  if (!detail.empty()) detail = std::string(" [") + be->name() + ": " + detail + "]";
  const char *d = detail.c_str();
  switch (rc) {
    case -ENOMEM:
      return set_error(UMRT_ERROR_OUT_OF_MEMORY,
                       "%s: device memory exhausted even after eviction (or frame allocation failed)%s", what, d);
    case -EIO: return set_error(UMRT_ERROR_BACKEND, "%s: a device operation failed; the pages stayed where they were%s", what, d);
    case -EBUSY: return set_error(UMRT_ERROR_BACKEND, "%s: pages stayed locked by another migration", what);
    case -EPERM:
      return set_error(UMRT_ERROR_BACKEND,
                       "%s: the kernel would not release the host copy of some pages (mlock()ed?): they "
                       "stayed on the host", what);
    default: return set_error(UMRT_ERROR_BACKEND, "%s: %s%s", what, strerror(-rc), d);
  }
}

// The range containing [p, p + size) entirely, with its inflight count held, and the offset of
// p in it (computed once: the range may be mremap()ed meanwhile, and then p is its old address).
umrt_status span_of(Runtime &rt, const void *p, size_t size, const char *fn, RangeRef *out, size_t *offset) {
  if (!p) return set_error(UMRT_ERROR_INVALID_VALUE, "%s: pointer is NULL", fn);
  uintptr_t a = reinterpret_cast<uintptr_t>(p);
  rt.faults.settle_events();  // a range munmap()ed or moved a moment ago is no longer known here
  size_t off = 0;
  RangeRef ref = rt.ranges.acquire(a, &off);
  if (!ref)
    return set_error(UMRT_ERROR_INVALID_VALUE, "%s: %p is not inside a managed allocation", fn, p);
  if (size > ref->size || off > ref->size - size)
    return set_error(UMRT_ERROR_INVALID_VALUE,
                     "%s: [%p, +%zu) crosses the end of the allocation [%p, +%zu)", fn, p, size,
                     reinterpret_cast<void *>(a - off), ref->size);
  // What is left after a shrink (mremap) or a munmap of its head or tail: the span must lie in it.
  size_t live_first = 0, live_end = 0;
  ref->live_span(&live_first, &live_end);
  const size_t live_lo = live_first << kPageShift, live_hi = std::min(ref->size, live_end << kPageShift);
  if (off < live_lo || size > live_hi - off)
    return set_error(UMRT_ERROR_INVALID_VALUE,
                     "%s: [%p, +%zu) crosses the end of what is left mapped of the allocation [%p, +%zu) "
                     "(the rest was unmapped or cut by mremap)", fn, p, size,
                     reinterpret_cast<void *>(a - off + live_lo), live_hi - live_lo);
  *out = std::move(ref);
  *offset = off;
  return UMRT_SUCCESS;
}

}  // namespace

extern "C" {

umrt_status umrt_config_defaults(umrt_config *cfg) {
  if (!cfg) return set_error(UMRT_ERROR_INVALID_VALUE, "umrt_config_defaults: cfg is NULL");
  umrt_config c{};
  umrt_status st = resolve_config(&c);
  if (st == UMRT_SUCCESS) *cfg = c;
  return st;
}

umrt_status umrt_init(const umrt_config *cfg) {
  if (g_in_child.load()) return Call().status();
  std::unique_lock u(g_life);
  if (g_rt) {
    if (!cfg) return UMRT_SUCCESS;
    return set_error(UMRT_ERROR_INVALID_VALUE,
                     "umrt_init: already initialised; call umrt_shutdown() before re-initialising "
                     "with a configuration");
  }
  return init_locked(cfg);
}

umrt_status umrt_shutdown(void) {
  if (g_in_child.load()) return Call().status();
  std::unique_lock u(g_life);
  if (!g_rt) return UMRT_SUCCESS;
  // Writable file ranges' written pages go to their files first: once the ranges are plain
  // memory, nothing tracks their writes any more.
  for (const RangePtr &r : g_rt->ranges.snapshot()) {
    if (!r->writable()) continue;
    if (int rc = flush_span(*g_rt, *r, 0, r->npages, true)) {
      umrt_status st = from_errno(rc, "umrt_shutdown: writing back a file range", g_rt->backend.get());
      const std::string why = last_error();
      return set_error(st, "%s (allocation %p); umrt is still running: call umrt_shutdown() again", why.c_str(),
                       reinterpret_cast<void *>(r->start()));
    }
  }
  const Range *failed = nullptr;
  Backend *be = g_rt->backend.get();
  (void)be->take_error_text();
  g_rt->budget.stop();  // no page leaves for storage while everything comes home
  if (int rc = g_rt->bring_home(&failed)) {
    g_rt->budget.start(g_rt, g_rt->cfg.host_memory);
    // umrt.h: "all pages back to host". Not possible now: the runtime stays up with the data
    // where it is, and a later umrt_shutdown() tries again.
    umrt_status st = from_errno(rc, "umrt_shutdown: pages could not be brought home", be);
    const std::string why = last_error();
    return set_error(st, "%s (allocation %p); umrt is still running with those pages on the device: "
                     "call umrt_shutdown() again once the device works", why.c_str(),
                     failed ? reinterpret_cast<void *>(failed->start()) : nullptr);
  }
  std::vector<RangePtr> left = g_rt->stop();
  delete g_rt;
  g_rt = nullptr;
  std::lock_guard g(g_orphans_mu);
  for (RangePtr &r : left) g_orphans[r->start()] = std::move(r);
  return UMRT_SUCCESS;
}

namespace {
// A managed range of `size` bytes (a file range when file_fd >= 0: the range owns the fd, also
// when this fails). fn names the caller in messages.
struct FileArgs {
  int fd = -1, tail_fd = -1;  // owned by new_range (closed when it fails)
  uint64_t off = 0;
  bool writable = false;
};

umrt_status new_range(Runtime &rt, size_t size, const char *fn, const FileArgs &fa, void **ptr) {
  auto r = std::shared_ptr<Range>(new (std::nothrow) Range());
  if (!r) {
    if (fa.fd >= 0) close(fa.fd);
    if (fa.tail_fd >= 0) close(fa.tail_fd);
    return set_error(UMRT_ERROR_OUT_OF_MEMORY, "%s: out of host memory", fn);
  }
  r->file_fd = fa.fd;  // owned by the range from here (closed with it)
  r->file_fd_tail = fa.tail_fd;
  r->file_off = fa.off;
  r->file_writable = fa.writable;
  r->size = size;
  r->npages = pages_of(size);
  r->map_bytes = r->npages * kPageSize;
  if (r->entries.init(r->npages)) return set_error(UMRT_ERROR_OUT_OF_MEMORY, "%s: out of host memory for page state", fn);

  // Large ranges start 2 MiB-aligned so blocks line up with device chunks.
  const bool large = r->npages >= kBlockPages;
  const size_t reserve = large ? r->map_bytes + kBlockSize : r->map_bytes;
  char *p = static_cast<char *>(
      mmap(nullptr, reserve, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0));
  if (p == MAP_FAILED)
    return set_error(UMRT_ERROR_OUT_OF_MEMORY, "%s: mmap of %zu bytes: %s", fn, reserve, strerror(errno));
  char *start = p;
  if (large) {
    start = reinterpret_cast<char *>(round_up(reinterpret_cast<uintptr_t>(p), kBlockSize));
    if (start > p) munmap(p, static_cast<size_t>(start - p));
    char *end = start + r->map_bytes;
    if (p + reserve > end) munmap(end, static_cast<size_t>(p + reserve - end));
  }
  // A range the user mremap()ed or munmap()ed a moment ago may have left exactly this hole:
  // its event is handled first, so the table never mistakes that range for a stale one here.
  rt.faults.settle_events();
  madvise(start, r->map_bytes, MADV_NOHUGEPAGE);
  madvise(start, r->map_bytes, MADV_DONTFORK);
  r->set_start(reinterpret_cast<uintptr_t>(start));
  int rc = rt.uffd.register_range(start, r->map_bytes);
  if (rc) {
    munmap(start, r->map_bytes);
    return set_error(rc == -ENOMEM ? UMRT_ERROR_OUT_OF_MEMORY : UMRT_ERROR_NOT_SUPPORTED,
                     "%s: userfaultfd registration: %s", fn, strerror(-rc));
  }
  rc = rt.devmem.setup_range(*r);
  if (rc) {
    rt.uffd.unregister_range(start, r->map_bytes);
    munmap(start, r->map_bytes);
    std::string d = rt.backend->take_error_text();
    return set_error(rc == -ENOMEM ? UMRT_ERROR_OUT_OF_MEMORY : UMRT_ERROR_BACKEND, "%s: device window: %s%s%s", fn,
                     strerror(-rc), d.empty() ? "" : ": ", d.c_str());
  }
  std::vector<RangePtr> stale = rt.ranges.insert(r);
  if (!stale.empty()) {
    for (RangePtr &z : stale) rt.add_zombie(std::move(z));
  }
  *ptr = start;
  return UMRT_SUCCESS;
}

}  // namespace

umrt_status umrt_malloc(void **ptr, size_t size) {
  if (!ptr) return set_error(UMRT_ERROR_INVALID_VALUE, "umrt_malloc: ptr is NULL");
  if (size == 0) return set_error(UMRT_ERROR_INVALID_VALUE, "umrt_malloc: size is 0");
  if (size > kMaxAlloc)
    return set_error(UMRT_ERROR_INVALID_VALUE, "umrt_malloc: size %zu exceeds the limit of %zu bytes", size, kMaxAlloc);
  Call call;
  if (!call.ok()) return call.status();
  return new_range(call.rt(), size, "umrt_malloc", FileArgs{}, ptr);
}

umrt_status umrt_map_file(const char *path, uint64_t offset, size_t size, unsigned flags, void **ptr) {
  if (!ptr) return set_error(UMRT_ERROR_INVALID_VALUE, "umrt_map_file: ptr is NULL");
  if (!path || !*path) return set_error(UMRT_ERROR_INVALID_VALUE, "umrt_map_file: path is NULL or empty");
  if (!(flags & UMRT_MAP_READ) || (flags & ~unsigned{UMRT_MAP_READ | UMRT_MAP_WRITE}))
    return set_error(UMRT_ERROR_INVALID_VALUE, "umrt_map_file: flags %#x: UMRT_MAP_READ, optionally with UMRT_MAP_WRITE", flags);
  if (size > kMaxAlloc)
    return set_error(UMRT_ERROR_INVALID_VALUE, "umrt_map_file: size %zu exceeds the limit of %zu bytes", size, kMaxAlloc);
  Call call;
  if (!call.ok()) return call.status();
  int err = 0;
  if (!Ring::mine(&err))
    return set_error(UMRT_ERROR_NOT_SUPPORTED, "umrt_map_file: io_uring is not available here: %s", strerror(-err));
  uint64_t bytes = size;
  std::string why;
  FileArgs fa;
  fa.writable = flags & UMRT_MAP_WRITE;
  fa.off = offset;
  fa.fd = open_file_range(path, offset, &bytes, fa.writable, &fa.tail_fd, &why);
  if (fa.fd < 0)
    return set_error(fa.fd == -ENOMEM ? UMRT_ERROR_OUT_OF_MEMORY : UMRT_ERROR_INVALID_VALUE, "umrt_map_file: %s: %s",
                     path, why.c_str());
  if (bytes > kMaxAlloc) {
    close(fa.fd);
    if (fa.tail_fd >= 0) close(fa.tail_fd);
    return set_error(UMRT_ERROR_INVALID_VALUE, "umrt_map_file: %s: %llu bytes exceed the limit of %zu", path,
                     static_cast<unsigned long long>(bytes), kMaxAlloc);
  }
  return new_range(call.rt(), static_cast<size_t>(bytes), "umrt_map_file", fa, ptr);
}

umrt_status umrt_free(void *ptr) {
  if (!ptr) return set_error(UMRT_ERROR_INVALID_VALUE, "umrt_free: ptr is NULL");
  Call call;
  if (!call.ok()) return call.status();
  Runtime &rt = call.rt();
  // A range the user munmap()ed just before: its event is handled first, so umrt never unmaps
  // an address that is no longer its own.
  rt.faults.settle_events();
  uintptr_t a = reinterpret_cast<uintptr_t>(ptr);
  // A writable file range's written pages go to the file first; if they cannot, the range is
  // not freed (its data would be lost): the caller is told and may free it again later.
  {
    size_t off = 1;
    RangeRef w = rt.ranges.acquire(a, &off);
    if (w && off == 0 && w->writable()) {
      if (int rc = flush_span(rt, *w.get(), 0, w->npages, true)) {
        umrt_status st = from_errno(rc, "umrt_free: writing back the file range", rt.backend.get());
        const std::string why = last_error();
        return set_error(st, "%s; the allocation %p is still allocated (free it again to retry)", why.c_str(), ptr);
      }
    }
  }
  RangePtr r = rt.ranges.remove_exact(a);
  if (!r) {
    {
      std::lock_guard g(g_orphans_mu);
      auto it = g_orphans.find(a);
      if (it != g_orphans.end()) {  // left by umrt_shutdown: plain host memory now
        rt.release_host(*it->second, true);
        g_orphans.erase(it);
        return UMRT_SUCCESS;
      }
    }
    if (RangeRef in = rt.ranges.acquire(a))
      return set_error(UMRT_ERROR_INVALID_VALUE,
                       "umrt_free: %p points inside the allocation at %p, not at its start", ptr,
                       reinterpret_cast<void *>(in->start()));
    return set_error(UMRT_ERROR_INVALID_VALUE,
                     "umrt_free: %p is not from umrt_malloc, was already freed, or was munmap()ed", ptr);
  }
  rt.retire(*r);
  rt.release_host(*r, true);
  rt.ranges.forget(r.get());
  return UMRT_SUCCESS;
}

// Stream order (cuda; on sim device work is synchronous host code): to the device, the call
// returns once the data is there, so every kernel enqueued on `stream` afterwards sees it; to the
// host, the call first waits for the work already queued on `stream` (the device source step of
// every to-host batch then waits for all device work, which covers the other streams).
umrt_status umrt_prefetch(const void *ptr, size_t size, umrt_location dst, void *stream) {
  const int where = enum_int(dst);
  if (where != UMRT_LOCATION_HOST && where != UMRT_LOCATION_DEVICE)
    return set_error(UMRT_ERROR_INVALID_VALUE, "umrt_prefetch: location %d is neither HOST nor DEVICE", where);
  if (size == 0) return set_error(UMRT_ERROR_INVALID_VALUE, "umrt_prefetch: size is 0");
  Call call;
  if (!call.ok()) return call.status();
  RangeRef ref;
  size_t off = 0;
  if (umrt_status st = span_of(call.rt(), ptr, size, "umrt_prefetch", &ref, &off); st != UMRT_SUCCESS) return st;
  const size_t first = off >> kPageShift, last = (off + size - 1) >> kPageShift;
  Backend *be = call.rt().backend.get();
  (void)be->take_error_text();  // an earlier, unrelated failure's text must not be reported here
  if (where == UMRT_LOCATION_HOST) {
    if (int rc = be->stream_sync(stream)) return from_errno(rc, "umrt_prefetch: waiting for the stream", be);
  }
  int rc = migrate_span(call.rt(), *ref.get(), first, last + 1 - first,
                        where == UMRT_LOCATION_DEVICE ? Dir::to_device : Dir::to_host, Why::prefetch);
  return from_errno(rc, "umrt_prefetch", be);
}

umrt_status umrt_flush(const void *ptr, size_t size) {
  if (size == 0) return set_error(UMRT_ERROR_INVALID_VALUE, "umrt_flush: size is 0");
  Call call;
  if (!call.ok()) return call.status();
  RangeRef ref;
  size_t off = 0;
  if (umrt_status st = span_of(call.rt(), ptr, size, "umrt_flush", &ref, &off); st != UMRT_SUCCESS) return st;
  if (!ref->file())
    return set_error(UMRT_ERROR_INVALID_VALUE,
                     "umrt_flush: %p is in an anonymous allocation (umrt_malloc), not a file range: nothing to "
                     "write it to", ptr);
  const size_t first = off >> kPageShift, last = (off + size - 1) >> kPageShift;
  Backend *be = call.rt().backend.get();
  (void)be->take_error_text();
  return from_errno(flush_span(call.rt(), *ref.get(), first, last + 1 - first, true), "umrt_flush", be);
}

umrt_status umrt_device_pointer(const void *ptr, void **dptr) {
  if (!dptr) return set_error(UMRT_ERROR_INVALID_VALUE, "umrt_device_pointer: dptr is NULL");
  Call call;
  if (!call.ok()) return call.status();
  RangeRef ref;
  size_t off = 0;
  if (umrt_status st = span_of(call.rt(), ptr, 1, "umrt_device_pointer", &ref, &off); st != UMRT_SUCCESS) return st;
  *dptr = ref->dev_base + off;
  return UMRT_SUCCESS;
}

umrt_status umrt_page_location(const void *ptr, umrt_location *loc) {
  if (!loc) return set_error(UMRT_ERROR_INVALID_VALUE, "umrt_page_location: loc is NULL");
  Call call;
  if (!call.ok()) return call.status();
  RangeRef ref;
  size_t off = 0;
  if (umrt_status st = span_of(call.rt(), ptr, 1, "umrt_page_location", &ref, &off); st != UMRT_SUCCESS) return st;
  uint64_t e = ref->entries[off >> kPageShift].load(std::memory_order_acquire);
  *loc = entry::loc(e) == Loc::DEVICE                                                      ? UMRT_LOCATION_DEVICE
         : entry::loc(e) == Loc::SWAP || (entry::loc(e) == Loc::NONE && ref->file()) ? UMRT_LOCATION_STORAGE
                                                                                      : UMRT_LOCATION_HOST;
  return UMRT_SUCCESS;
}

umrt_status umrt_get_stats(umrt_stats *out) {
  if (!out) return set_error(UMRT_ERROR_INVALID_VALUE, "umrt_get_stats: out is NULL");
  Call call;
  if (!call.ok()) return call.status();
  Runtime &rt = call.rt();
  rt.faults.settle_events();  // device memory of a range munmap()ed just before is counted back
  rt.reap_zombies();
  rt.fill_stats(out);
  return UMRT_SUCCESS;
}

const char *umrt_status_string(umrt_status status) {
  // Any int may arrive here from C: read it as an int (loading an out-of-range enum is UB).
  switch (enum_int(status)) {
    case UMRT_SUCCESS: return "UMRT_SUCCESS";
    case UMRT_ERROR_INVALID_VALUE: return "UMRT_ERROR_INVALID_VALUE";
    case UMRT_ERROR_OUT_OF_MEMORY: return "UMRT_ERROR_OUT_OF_MEMORY";
    case UMRT_ERROR_NOT_SUPPORTED: return "UMRT_ERROR_NOT_SUPPORTED";
    case UMRT_ERROR_NO_DEVICE: return "UMRT_ERROR_NO_DEVICE";
    case UMRT_ERROR_BACKEND: return "UMRT_ERROR_BACKEND";
    case UMRT_ERROR_IO: return "UMRT_ERROR_IO";
  }
  return "UMRT_ERROR_UNKNOWN";
}

const char *umrt_last_error(void) { return last_error(); }

const char *umrt_backend_name(void) {
  Call call;
  if (!call.ok()) return nullptr;
  return call.rt().backend->name();
}

umrt_status umrt_inject_failure(umrt_inject_kind kind, uint64_t nth, uint64_t count) {
  const int k = enum_int(kind);
  if (k < UMRT_INJECT_ALLOC || k > UMRT_INJECT_SYNC)
    return set_error(UMRT_ERROR_INVALID_VALUE, "umrt_inject_failure: kind %d is not an injection kind", k);
  if (nth == 0 || count == 0)
    return set_error(UMRT_ERROR_INVALID_VALUE, "umrt_inject_failure: nth and count must be >= 1");
  Call call;
  if (!call.ok()) return call.status();
  if (k >= UMRT_INJECT_READ) {  // storage I/O: every ring, whichever backend
    storage_inject(k == UMRT_INJECT_READ ? IoKind::read : k == UMRT_INJECT_WRITE ? IoKind::write : IoKind::sync, nth,
                   count);
    return UMRT_SUCCESS;
  }
  const InjectKind ik = k == UMRT_INJECT_ALLOC ? InjectKind::alloc : k == UMRT_INJECT_COPY ? InjectKind::copy : InjectKind::chunk;
  int rc = call.rt().backend->inject(ik, nth, count);
  if (rc == -EOPNOTSUPP)
    return set_error(UMRT_ERROR_NOT_SUPPORTED, "umrt_inject_failure: the %s backend has no fault injection", call.rt().backend->name());
  return rc ? set_error(UMRT_ERROR_INVALID_VALUE, "umrt_inject_failure: %s", strerror(-rc)) : UMRT_SUCCESS;
}

umrt_status umrt_validate(void) {
  Call call;
  if (!call.ok()) return call.status();
  Runtime &rt = call.rt();
  rt.faults.settle_events();  // a munmap() that just returned is accounted for
  rt.reap_zombies();
  std::string why;
  // A page may stay locked a moment after the access that faulted it returned: the faulting
  // thread can see the page mapped before its batch (or the fault service's duplicate check)
  // unlocks it. Locks that persist are reported; passing ones are waited out (bounded).
  // Pages in the swap file: only anonymous ranges', each on a slot in use, as many as are used.
  bool transient = false;  // the counts differed while the reclaim was pushing a block out
  auto swap_ok = [&](const std::vector<RangePtr> &ranges) {
    const uint64_t epoch = rt.budget.spill_epoch();
    uint64_t n = 0;
    bool locked_seen = false;
    for (const RangePtr &r : ranges) {
      bool ok = true;
      r->for_each_used_page([&](size_t p) {
        const uint64_t e = r->entries[p].load(std::memory_order_acquire);
        if (!ok || entry::loc(e) != Loc::SWAP) return;
        ++n;
        locked_seen |= entry::locked(e);  // a batch bringing it back may have given its slot already
        if (r->file()) why = "a file range's page is in the swap file", ok = false;
        else if (!rt.swap.in_use(entry::frame(e))) why = "a page in the swap file on a free slot", ok = false;
      });
      if (!ok) return false;
    }
    if (n != rt.swap.used()) {
      why = "pages in swap " + std::to_string(n) + ", slots in use " + std::to_string(rt.swap.used());
      // A spill takes its slots before its pages say SWAP: waited out like a passing lock.
      const uint64_t now = rt.budget.spill_epoch();
      transient = (epoch & 1) || now != epoch || locked_seen;
      return false;
    }
    return true;
  };
  for (int tries = 0; tries < 200; ++tries) {
    why.clear();
    transient = false;
    const std::vector<RangePtr> ranges = rt.every_range();
    if (rt.devmem.validate(ranges, &why) && swap_ok(ranges)) return UMRT_SUCCESS;
    if (!transient && why.find("locked while quiescent") == std::string::npos) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return set_error(UMRT_ERROR_INVALID_VALUE, "umrt_validate: %s", why.c_str());
}

}  // extern "C"
