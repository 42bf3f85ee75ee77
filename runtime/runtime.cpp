// runtime.cpp — start and stop of the process-wide runtime: backend selection, userfaultfd,
// device memory, fault service; on stop every page goes home and every thread is joined.
#include "runtime.h"

#include "storage/io_staging.h"
#include "storage/ring.h"

#include <sys/mman.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <thread>

#include "batch.h"
#include "config.h"
#include "nvtx.h"
#include "threads.h"

namespace umrt::rt {

umrt_status Runtime::start(const umrt_config &c) {
  cfg = c;
  set_log_level(static_cast<Level>(cfg.log_level));
  user_read_guard_install();  // copy engines read user pages under it (user_read.cpp)
  int rc = uffd.open();
  if (rc)
    return set_error(UMRT_ERROR_NOT_SUPPORTED,
                     "userfaultfd is not available: %s (needs Linux >= 5.7 with write-protect "
                     "support, and root, /dev/userfaultfd access or vm.unprivileged_userfaultfd=1)",
                     strerror(-rc));
  const uint64_t asked = cfg.device_memory / kBlockSize * kBlockSize;  // 0: the backend's default
  // auto: cuda when a GPU is usable, else sim. cuda asked for and unusable: NO_DEVICE, why.
  if (cfg.backend == UMRT_BACKEND_CUDA || cfg.backend == UMRT_BACKEND_AUTO) {
#if UMRT_HAVE_CUDA
    std::string why;
    backend = make_cuda_backend(CudaOptions{asked, cfg.copy_threads}, &why);
    if (!backend) {
      if (cfg.backend == UMRT_BACKEND_CUDA)
        return set_error(UMRT_ERROR_NO_DEVICE, "UMRT_BACKEND=cuda: %s", why.c_str());
      log(Level::info, "auto: cuda backend not usable (%s): using sim", why.c_str());
    }
#else
    if (cfg.backend == UMRT_BACKEND_CUDA)
      return set_error(UMRT_ERROR_NO_DEVICE,
                       "UMRT_BACKEND=cuda: this build has no CUDA backend (built without the CUDA "
                       "toolkit); use UMRT_BACKEND=sim or auto");
#endif
  }
  if (!backend) {
    const uint64_t cap = asked ? asked : kSimDefaultDeviceMemory;
    SimOptions so{cap, cfg.copy_threads, cfg.sim_bandwidth_gbps, cfg.sim_latency_us};
    backend = make_sim_backend(so, &rc);
    if (!backend)
      return set_error(UMRT_ERROR_NO_DEVICE, "sim backend: arena of %llu bytes: %s",
                       static_cast<unsigned long long>(cap), strerror(-rc));
  }
  const uint64_t cap = backend->capacity();
  cfg.device_memory = cap;
  staging_pins_open(backend.get());  // threads' I/O staging may register with it from now
  pagemap.open();
  // Test hooks for programs that cannot call umrt_inject_failure: fail the nth allocation / copy.
  struct Hook { const char *env; InjectKind kind; } hooks[] = {
      {"UMRT_SIM_FAIL_ALLOC", InjectKind::alloc}, {"UMRT_SIM_FAIL_COPY", InjectKind::copy}};
  for (const Hook &h : hooks) {
    uint64_t nth = 0;
    if (!inject_env(h.env, &nth))  // resolve_config refused it already; checked again all the same
      return set_error(UMRT_ERROR_INVALID_VALUE, "%s is not valid: expected a count >= 1", h.env);
    if (nth == 0) continue;
    backend->inject(h.kind, nth, 1);
    log(Level::warn, "%s=%llu: that operation will fail (fault injection)", h.env,
        static_cast<unsigned long long>(nth));
  }
  if (const char *path = std::getenv("UMRT_TRACE"); path && *path) {
    if (int trc = trace.open(path))
      return set_error(UMRT_ERROR_INVALID_VALUE, "UMRT_TRACE=%s: cannot write: %s", path, strerror(-trc));
    log(Level::info, "tracing batches to %s (Chrome trace JSON)", path);
  }
  nvtx::setup();  // NVTX ranges for Nsight Systems, when a tool is attached (nvtx.h)
  if (cfg.device_pool == 0) cfg.device_pool = cap / 4;
  devmem.init(backend.get(), &evict_pages, this, cfg.device_pool);
  // Kept host pages are host memory too: with a budget, the pool is at most an eighth of it.
  if (cfg.host_memory && cfg.host_pool > cfg.host_memory / 8) cfg.host_pool = cfg.host_memory / 8;
  if (int prc = host_pool.init(&uffd, cfg.host_pool))
    log(Level::warn, "host page pool of %llu MiB: %s; pages are freed and allocated instead",
        static_cast<unsigned long long>(cfg.host_pool >> 20), strerror(-prc));
  // Two: enough for two multi-block prefetches at once to get their second lane; a third runs
  // its lanes one after the other (docs/design.md, "Two lanes for long spans").
  if (lanes.start(2)) return set_error(UMRT_ERROR_OUT_OF_MEMORY, "lane threads: no thread to be had");
  if (int brc = budget.start(this, cfg.host_memory))
    return set_error(UMRT_ERROR_OUT_OF_MEMORY, "host budget: reclaim thread: %s", strerror(-brc));
  if (cfg.host_memory)
    log(Level::info, "host budget %llu MiB (reclaim to storage past it)", static_cast<unsigned long long>(cfg.host_memory >> 20));
  rc = faults.start(this, cfg.fault_threads);
  if (rc) return set_error(UMRT_ERROR_NOT_SUPPORTED, "fault service: %s", strerror(-rc));
  if (bool stat_on = true; stat_env(&stat_on) && stat_on) {  // umrt-stat's segment (stat_segment.h)
    uint32_t ms = 250;
    (void)stat_interval_env(&ms);  // resolve_config checked it
    stat.start(this, ms);
  }
  log(Level::info, "started: backend %s, device memory %llu MiB, %u copy engines, %u fault threads%s", backend->name(),
      static_cast<unsigned long long>(cap >> 20), cfg.copy_threads, cfg.fault_threads,
      uffd.user_mode_only() ? ", user-mode-only faults" : "");
  return UMRT_SUCCESS;
}

void Runtime::fill_stats(umrt_stats *out) {
  const Stats &s = stats;
  auto ld = [](const std::atomic<uint64_t> &v) { return v.load(std::memory_order_relaxed); };
  umrt_stats o{};
  o.cpu_faults = ld(s.cpu_faults);
  o.bytes_to_device = ld(s.bytes_to_device);
  o.bytes_to_host = ld(s.bytes_to_host);
  o.evictions = devmem.evictions();
  o.batches = ld(s.batches);
  o.pages_to_device = ld(s.pages_to_device);
  o.pages_to_host = ld(s.pages_to_host);
  o.zero_fills = ld(s.zero_fills);
  o.pages_restored = ld(s.pages_restored);
  o.pages_skipped_locked = ld(s.pages_skipped_locked);
  o.fault_groups = ld(s.fault_groups);
  o.write_faults = ld(s.write_faults);
  o.write_cancels = ld(s.write_cancels);
  o.device_bytes_in_use = devmem.bytes_in_use();
  o.device_capacity = devmem.capacity();
  o.pages_selected = ld(s.pages_selected);
  o.ns_collect = ld(s.ns_collect);
  o.ns_unmap = ld(s.ns_unmap);
  o.ns_copy = ld(s.ns_copy);
  o.ns_finalize = ld(s.ns_finalize);
  o.host_pool_pages = host_pool.pages();
  o.host_pages_reused = host_pool.reused();
  o.bytes_from_storage = ld(s.bytes_from_storage);
  o.bytes_to_storage = ld(s.bytes_to_storage);
  o.host_pages = budget.pages();
  o.swap_outs = ld(s.swap_outs);
  o.swap_ins = ld(s.swap_ins);
  o.pages_dropped_clean = ld(s.pages_dropped_clean);
  *out = o;
}

void Runtime::retire(Range &r) {
  while (r.inflight.load(std::memory_order_acquire) != 0)
    std::this_thread::sleep_for(std::chrono::microseconds(20));
  // Host pages stop counting; pages in the swap file give their slots back.
  std::vector<uint64_t> slots;
  if (!r.packed) {
    r.each_block([&](DBlock &b) { budget.forget(&b); });
  } else if (DBlock *pack = r.pack) {  // the pack is shared: only this range's own host pages
    uint32_t mine = 0;
    for (size_t p = 0; p < r.npages; ++p) {
      const uint64_t e = r.entries[p].load(std::memory_order_acquire);
      mine += entry::loc(e) == Loc::HOST && !(e & entry::GONE);
    }
    budget.sub(pack, mine);
  }
  if (swap.on())
    r.for_each_used_page([&](size_t p) {
      const uint64_t e = r.entries[p].load(std::memory_order_acquire);
      if (entry::loc(e) == Loc::SWAP) slots.push_back(entry::frame(e));
    });
  if (!slots.empty()) swap.release(slots.data(), slots.size());
  devmem.teardown_range(r);
}

void Runtime::add_zombie(RangePtr r) {
  AsyncSignalsBlocked nosig;  // the fault service adds zombies (threads.h)
  std::lock_guard g(zombies_mu);
  zombies.push_back(std::move(r));
  zombies_waiting.store(true, std::memory_order_release);
}

void Runtime::retire_unmapped(const RangePtr &r) {
  AsyncSignalsBlocked nosig;  // the fault service adds zombies (threads.h)
  std::lock_guard g(zombies_mu);
  if (!ranges.remove(r.get())) return;
  zombies.push_back(r);
  zombies_waiting.store(true, std::memory_order_release);
}

std::vector<RangePtr> Runtime::every_range() {
  AsyncSignalsBlocked nosig;  // the fault service adds zombies (threads.h)
  std::lock_guard g(zombies_mu);
  std::vector<RangePtr> v = ranges.snapshot();
  v.insert(v.end(), zombies.begin(), zombies.end());
  return v;
}

void Runtime::reap_zombies() {
  if (!zombies_waiting.load(std::memory_order_acquire)) return;
  std::vector<RangePtr> z;
  {
    AsyncSignalsBlocked nosig;  // the fault service adds zombies (threads.h)
  std::lock_guard g(zombies_mu);
    z.swap(zombies);
    zombies_waiting.store(false, std::memory_order_release);
  }
  for (RangePtr &r : z) retire(*r);  // the host mapping is already gone
}

void Runtime::release_host(Range &r, bool unmap) {
  // Only what is still mapped: a hole the user unmapped (GONE) may hold someone else's mapping.
  auto present = [&](size_t i) { return !(r.entries[i].load(std::memory_order_acquire) & entry::GONE); };
  auto release = [&](size_t i, size_t j) {
    // Freed: inaccessible first, so that a thread still reading it (a use after free) gets
    // SIGSEGV rather than the fresh zeros of a mapping that is no longer registered.
    if (unmap) mprotect(r.addr(i), (j - i) * kPageSize, PROT_NONE);
    uffd.unregister_range(r.addr(i), (j - i) * kPageSize);
    if (unmap) munmap(r.addr(i), (j - i) * kPageSize);
  };
  // Nothing GONE: one run, no pass over the entries.
  if (r.gone_pages.load(std::memory_order_acquire) == 0) release(0, r.npages);
  else for_runs(r.npages, present, release);
  // A file range left as plain memory (shutdown): its pages still only in the file (NONE) get
  // the file mapped over them (MAP_PRIVATE, the same view), so they go on reading its bytes.
  if (!unmap && r.file()) {
    auto in_file = [&](size_t i) {
      const uint64_t e = r.entries[i].load(std::memory_order_acquire);
      return entry::loc(e) == Loc::NONE && !(e & entry::GONE);
    };
    // A last page the range covers only in part (r.size not a multiple of 4 KiB) is not mapped
    // from the file (the file's bytes after r.size would show; umrt showed zeros): its bytes are
    // read into it instead, the rest stays zero.
    const size_t whole = r.size / kPageSize;
    for_runs(r.npages, in_file, [&](size_t i, size_t j) {
      const size_t je = std::min(j, whole);
      if (je > i && mmap(r.addr(i), (je - i) * kPageSize, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_FIXED, r.file_fd,
                         static_cast<off_t>(r.file_off + i * kPageSize)) == MAP_FAILED)
        log(Level::error, "shutdown: mapping the file over %zu pages at %p failed: %s (they read as zero)", je - i,
            (void *)r.addr(i), strerror(errno));
      if (j > whole) {  // a whole aligned page read (the fd may be O_DIRECT), its first bytes kept
        const size_t tail = r.size - whole * kPageSize;
        alignas(kPageSize) static thread_local char page[kPageSize];
        const ssize_t got = pread(r.file_fd, page, kPageSize, static_cast<off_t>(r.file_off + whole * kPageSize));
        if (got > 0) std::memcpy(r.addr(whole), page, std::min(tail, static_cast<size_t>(got)));
        if (got < static_cast<ssize_t>(tail))
          log(Level::error, "shutdown: reading the last %zu bytes of a file range failed (they read as zero)", tail);
      }
    });
  }
  // Plain memory an mremap() growth appended (remap.cpp): part of the user's mapping.
  const uintptr_t begin = r.tail_begin.load(), tail = r.tail_end.load();
  if (unmap && begin && tail > begin) munmap(reinterpret_cast<void *>(begin), tail - begin);
}

int Runtime::bring_home(const Range **failed) {
  // Every range gets its chance (shutdown batches go on past a failed block); the first
  // failure is reported. Nothing is torn down here: on failure the data stays on the device.
  int first = 0;
  for (const RangePtr &r : ranges.snapshot()) {
    int rc = migrate_span(*this, *r, 0, r->npages, Dir::to_host, Why::shutdown);
    if (rc && !first) {
      first = rc;
      if (failed) *failed = r.get();
    }
  }
  return first;
}

std::vector<RangePtr> Runtime::stop() {
  // Ranges become plain host memory: device memory freed, userfaultfd unregistered. The caller
  // brought every page home first (bring_home); whatever is still on the device is lost.
  stat.stop();    // first: it looks at the ranges; its segment is unlinked
  budget.stop();  // nothing leaves for storage any more (shutdown brought it all home)
  std::vector<RangePtr> left = ranges.snapshot();
#if UMRT_DEBUG_CHECKS
  // A pass over every block used: only where invariants are checked (callers hold g_life
  // exclusively after a successful bring_home, so nothing can have gone back to the device).
  for (const RangePtr &r : left)
    r->each_block([&](const DBlock &b) {
      if (b.resident.load() && !r->all_gone())
        log(Level::error, "stop: range %p holds %u pages on the device: their data is dropped",
            (void *)r->start(), b.resident.load());
    });
#endif
  for (const RangePtr &r : left) {
    ranges.remove(r.get());
    retire(*r);
    release_host(*r, false);
  }
  reap_zombies();
  lanes.stop();
  faults.stop();
  devmem.shutdown();
  host_pool.stop();
  swap.close();
  storage_inject_reset();
  staging_pins_close();  // every staging registration undone while its backend exists
  pagemap.close();
  backend.reset();
  user_read_guard_remove();
  uffd.close();
  trace.close();
  return left;
}

}  // namespace umrt::rt
