// fault.cpp — the fault service: its threads take turns reading userfaultfd messages in batches
// (the reader handles the process events it read before the next read; runtime.h), group page
// faults by (range, device block) and serve each group, one thread per block at a time
// (serve_exclusive), with one device->host batch covering
// the faulting pages plus a prefetch window that doubles on sequential access (per stream: a
// few streams per range are tracked, so several sequential readers each get their window).
// Windows never cross the faulting block: pages of a block the CPU has not touched stay where
// the user put them (docs/design.md, "Read-ahead: tried twice, not kept"). NONE pages in the
// window are zero-filled. Duplicate faults on pages already mapped are woken, not re-served.
// Write-protect faults on pages a host->device batch holds either cancel
// that page's migration (and let the writer go at once) or wait for the batch, per policy.
// UNMAP events mark the pages GONE. A page whose device copy keeps failing to come back is
// poisoned after kGiveUpAfter attempts (SIGBUS), never retried forever. Never throws; never
// touches managed memory itself.
#include <linux/userfaultfd.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <mutex>
#include <cerrno>
#include <cstring>
#include <string>
#include <unordered_map>
#include <vector>

#include "batch.h"
#include "nvtx.h"
#include "remap.h"
#include "storage/file_store.h"
#include "threads.h"

namespace umrt::rt {
namespace {

constexpr size_t kMaxMsgs = 64;
// A page whose device->host copy failed this many times in a row is given up: the faulting
// thread gets SIGBUS instead of re-faulting forever (a device in a sticky error state).
constexpr uint32_t kGiveUpAfter = 32;

struct Group {
  RangeRef ref;
  size_t block_first;
  std::vector<size_t> pages;
  bool write = false;  // a write fault among them
};

// A MISSING fault on a page that is HOST: its host copy was mapped (a duplicate fault: wake) or
// discarded by the user (MADV_DONTNEED: map zeros, as the kernel would give). UFFDIO_ZEROPAGE
// tells the two apart with EEXIST. The page is locked around it, so a host->device batch cannot
// publish and zap it in between (a zero page mapped after that zap would shadow the device
// copy). If a host->device batch holds the page (HOST|LOCKED: the user discarded a page while
// it was being copied, possibly under the very copy thread now faulting on it), that page's
// migration is cancelled first (CANCEL: the batch can no longer publish or zap it; it restores
// it) and then zeros are mapped: the discarded page reads as zero and the copier goes on.
// A device->host batch publishes HOST only pages it has already mapped, so an unmapped
// HOST|LOCKED page always belongs to a host->device batch.
// A file range's discarded page is the file's again (storage/discard.h): never zeros.
void serve_host_page(Runtime &rt, Range &r, size_t page) {
  Entry &e = r.entries[page];
  uint64_t old = 0;
  if (entry_try_lock(e, &old)) {
    // A file range's host page with nothing mapped (under the lock nothing maps it: not a late
    // message) was discarded by the program (MADV_DONTNEED): it is the file's again, as with a
    // private file mapping, read back by the thread's retry. A change not flushed goes with it,
    // as the program asked; zeros are never written to the file for it.
    // Mapped: a late message, nothing to do (never zeros: a discard racing this check faults
    // again).
    if (entry::loc(old) == Loc::HOST && r.file()) {
      uint64_t locked = old | entry::LOCKED;
      if (rt.pagemap.unmapped(r.addr(page)) && entry_transition(e, locked, entry::with_loc(old, Loc::NONE))) {
        if (DBlock *db = r.block_at(page)) rt.budget.sub(db, 1);
        rt.uffd.wake(r.addr(page), kPageSize);
        return;
      }
    } else if (entry::loc(old) == Loc::HOST) {
      size_t done = 0;
      rt.uffd.zeropage(r.addr(page), kPageSize, true, &done);  // anonymous: zeros, as the kernel gives
    }
    entry_unlock(e);
    rt.uffd.wake(r.addr(page), kPageSize);  // mapped now (or moved meanwhile): the thread retries
    return;
  }
  // Locked by someone else (below). A file range's discarded page is mapped with the file's bytes
  // (write-protected where writes are tracked: it is clean, as the file), never zeros.
  alignas(kPageSize) static const char zeros[kPageSize] = {};
  auto map_discarded = [&] {
    size_t done = 0;
    const char *src = zeros;
    if (r.file()) {
      char *stage = file_staging();  // this fault thread's: free here (its batches are done)
      uint64_t got = 0;
      size_t ok = 0;
      if (stage && read_file_pages(r, page, 1, stage, &got, &ok) == 0 && ok == 1) {
        rt.stats.add(rt.stats.bytes_from_storage, got);
        src = stage;
      }
    }
    if (src == zeros && !r.file()) rt.uffd.zeropage(r.addr(page), kPageSize, true, &done);
    else rt.uffd.copy(r.addr(page), src, kPageSize, true, &done, r.writable());
    rt.uffd.wake(r.addr(page), kPageSize);  // EEXIST: mapped meanwhile
  };
  // Locked by someone else. Only a page that really is not mapped may be cancelled: the message
  // may be a late one (its group's batch mapped the page and woke the thread, then a prefetch
  // locked it), and cancelling would silently keep that page from moving.
  // (pagemap, not mincore: a page the kernel swapped out is not resident, yet mapped.)
  if (!rt.pagemap.unmapped(r.addr(page))) return;
  uint64_t cur = e.load(std::memory_order_acquire);
  // A write-back holds it (storage/writeback.cpp) and reads it, perhaps on this very thread: the
  // page was discarded (MADV_DONTNEED). Marked CANCEL, which under a FLUSH lock says just that:
  // the write-back writes nothing for it and gives it back to the file (NONE). The reader gets
  // the file's bytes meanwhile, write-protected (a writer waits for the write-back).
  // Mapped first, marked after: a write-back that ends in between (no mark seen) leaves a clean
  // page holding the file's bytes, consistent; marked first, it could give the page back (NONE,
  // nothing mapped) before the bytes land, leaving a mapping the entry does not know.
  if (entry::locked(cur) && (cur & entry::FLUSH) && entry::loc(cur) == Loc::HOST) {
    map_discarded();
    cur = e.load(std::memory_order_acquire);
    while (entry::locked(cur) && (cur & entry::FLUSH) && !(cur & entry::CANCEL) &&
           !entry_transition(e, cur, cur | entry::CANCEL)) {
    }
    return;
  }
  // Held by a batch or the reclaim, perhaps reading it on this very thread: its move is
  // cancelled (the holder restores it). Anonymous memory reads zeros, as the kernel gives; a
  // file range's page the file's bytes, clean (what it holds is the file's now).
  while (entry::locked(cur) && entry::loc(cur) == Loc::HOST && !(cur & entry::GONE)) {
    if ((cur & entry::CANCEL) || entry_transition(e, cur, cur | entry::CANCEL)) {
      map_discarded();
      return;
    }
  }
  // DEVICE and locked: the owner, a batch, wakes its span when it is done. Unlocked meanwhile:
  // settled, the thread retries.
  if (!entry::locked(cur)) rt.uffd.wake(r.addr(page), kPageSize);
}

// Consecutive failed device->host copies per faulting page address, shared by the fault
// threads (`any` lets the common case, no failure anywhere, skip the lock).
struct FailCounts {
  std::mutex mu;
  std::unordered_map<uintptr_t, uint32_t> n;
  std::atomic<bool> any{false};
  // One more failure of the page at a; true when it is time to give up (the count restarts).
  bool failed(uintptr_t a) {
    std::lock_guard g(mu);
    any.store(true, std::memory_order_relaxed);
    if (n.size() > 4096) n.clear();  // stale addresses of freed ranges; bounded
    if (++n[a] < kGiveUpAfter) return false;
    n.erase(a);
    return true;
  }
  void served(uintptr_t a) {
    if (!any.load(std::memory_order_relaxed)) return;
    std::lock_guard g(mu);
    n.erase(a);
    if (n.empty()) any.store(false, std::memory_order_relaxed);
  }
};

void give_up(Runtime &rt, Range &r, size_t page, int rc) {
  std::string why = rt.backend->take_error_text();
  int prc = rt.uffd.poison(r.addr(page), kPageSize);
  const char *what = io_errno(rc) == -ENODATA ? "lies past the end of its file now (truncated while mapped)"
                     : is_io_error(rc)         ? "could not be read from storage (its file, or the swap file)"
                                               : "its device copy could not be brought back";
  log(Level::error, "page %p: %s (%s%s%s); the faulting thread gets SIGBUS%s", r.addr(page), what,
      strerror(-io_errno(rc)), why.empty() ? "" : ": ", why.c_str(), prc ? " (poisoning failed: it will keep faulting)" : "");
}

void serve_group(Runtime &rt, Group &g, FailCounts &fails) {
  Range &r = *g.ref.get();
  std::sort(g.pages.begin(), g.pages.end());
  g.pages.erase(std::unique(g.pages.begin(), g.pages.end()), g.pages.end());
  nvtx::Range range(Ev::fault_group, nvtx::Cat::fault, g.pages.size() * kPageSize);  // its batches nested
  const size_t lo = g.pages.front(), hi = g.pages.back() + 1;
  const size_t bend = r.block_end(lo);
  const uint32_t wmin = rt.cfg.prefetch_min_pages, wmax = rt.cfg.prefetch_max_pages;
  // A fault right after a stream's last window continues it (window doubles); any other fault
  // starts a new stream in the least recently used slot (window = minimum).
  // The streams are the range's, shared by the fault threads serving its blocks: a short
  // spin lock (fault threads only; never held across anything that blocks).
  while (r.streams_busy.exchange(true, std::memory_order_acquire)) {
  }
  Range::Stream *st = nullptr;
  for (Range::Stream &x : r.streams)
    if (x.next == lo) st = &x;
  if (st) {
    st->window = std::min<uint32_t>(st->window * 2, wmax);
  } else {
    st = &r.streams[0];
    for (Range::Stream &x : r.streams)
      if (x.used < st->used) st = &x;
    st->window = wmin;
  }
  st->used = ++r.stream_clock;
  const size_t end = std::min(bend, std::max(hi, lo + st->window));
  st->next = end;
  // A file range's stream at its full window that reached the block's end: the next block is
  // read in right after this one (below), while the reader works through this one; the stream
  // then continues after it. Only pages still in the file move (docs/design.md, "Storage tier").
  const bool ahead = r.file() && st->window >= wmax && end == bend && bend < r.npages &&
                     (!rt.budget.on() || rt.budget.pages() + kBlockPages < rt.budget.limit_pages());
  if (ahead) st->next = r.block_end(bend);
  r.streams_busy.store(false, std::memory_order_release);
  rt.stats.add(rt.stats.fault_groups, 1);
  rt.budget.throttle();  // far over the host budget: give the reclaim a moment (bounded)
  const int rc = run_batch(rt, r, lo, end - lo, Dir::to_host, g.write ? Why::fault_write : Why::fault, false, nullptr);
  // Faulting pages the batch did not map: HOST pages are duplicates (or discarded copies);
  // pages still locked or still on the device retry through the batch's wake, unless their
  // copy keeps failing.
  for (size_t p : g.pages) {
    uint64_t e = r.entries[p].load(std::memory_order_acquire);
    if (e & entry::GONE) continue;
    // (A file range's page still in its file fails the same way when it cannot be read; past
    // the file's end now, truncated while mapped, at once: SIGBUS, as mmap gives.)
    const bool in_file = r.file() && entry::loc(e) == Loc::NONE;
    const bool failed = rc && rc != -EAGAIN && (entry::loc(e) == Loc::DEVICE || entry::loc(e) == Loc::SWAP || in_file) &&
                        !entry::locked(e);
    const auto a = reinterpret_cast<uintptr_t>(r.addr(p));
    if (failed) {
      if ((in_file && io_errno(rc) == -ENODATA && page_past_end(r, p)) || fails.failed(a)) {
        give_up(rt, r, p, rc);
        continue;
      }
    } else {
      fails.served(a);
    }
    if (entry::loc(e) == Loc::HOST) serve_host_page(rt, r, p);
    else if (!entry::locked(e)) rt.uffd.wake(r.addr(p), kPageSize);
  }
  // The read-ahead: the faulting threads are awake already. A reader reaching the block before
  // it is in waits on its locked pages, as for any batch; errors are left to the fault there.
  if (ahead && rc == 0 && entry::loc(r.entries[bend].load(std::memory_order_acquire)) == Loc::NONE)
    run_batch(rt, r, bend, r.block_end(bend) - bend, Dir::to_host, Why::readahead, false, nullptr);
}

// A write-protect fault. The page is mapped (only present pages take WP faults), and a message
// is read before any wake-up of its thread could drop it, so it is never a late one.
//   - locked by a host->device batch that has not published it: cancel that page's migration
//     (policy cancel: lift the protection now, the writer goes on, the batch restores the page
//     and the prefetch moves it again) or leave the writer waiting for finalize (policy wait);
//   - locked and published to the device, or already cancelled: the batch lifts or zaps it and
//     wakes the writer;
//   - locked by a write-back (FLUSH): the writer waits; the write-back wakes it;
//   - not locked: no batch protects it any more, so the protection is stale (a batch whose
//     un-protect missed the page, e.g. the range moved under it), or the page is a writable
//     file range's clean page (its first write: it becomes DIRTY first): lift it under the
//     page lock.
void serve_wp(Runtime &rt, Range &r, size_t page) {
  Entry &e = r.entries[page];
  uint64_t cur = e.load(std::memory_order_acquire);
  if (!entry::locked(cur)) {
    uint64_t old = 0;
    if (entry_try_lock(e, &old)) {
      if (entry::loc(old) == Loc::HOST && r.writable() && !(old & entry::DIRTY)) entry_mark_dirty(e, old);
      if (entry::loc(old) == Loc::HOST) rt.uffd.write_protect(r.addr(page), kPageSize, false);
      // A DEVICE (or SWAP) page that is mapped: a stale host copy (a zap that missed it, see
      // remap.cpp); the device's (swap file's) copy is the one: drop the mapping, the writer's
      // retry faults the page home.
      // (A file range's NONE page that is mapped is as stale: the file's copy is the one.)
      if (entry::loc(old) == Loc::DEVICE || entry::loc(old) == Loc::SWAP || (entry::loc(old) == Loc::NONE && r.file()))
        madvise(r.addr(page), kPageSize, MADV_DONTNEED);
      entry_unlock(e);
    }
    rt.uffd.wake(r.addr(page), kPageSize);  // locked meanwhile: its batch wakes the writer too
    return;
  }
  if (entry::loc(cur) != Loc::HOST || (cur & (entry::CANCEL | entry::GONE | entry::FLUSH))) return;
  rt.stats.add(rt.stats.write_faults, 1);
  if (rt.cfg.write_fault != UMRT_WRITE_FAULT_CANCEL) return;  // finalize wakes the writer
  // (A writable file range's page written now is DIRTY from the cancel on.)
  const uint64_t dirty = r.writable() ? entry::DIRTY : 0;
  while (entry::locked(cur) && entry::loc(cur) == Loc::HOST && !(cur & (entry::CANCEL | entry::FLUSH))) {
    if (entry_transition(e, cur, cur | entry::CANCEL | dirty)) {
      // The batch will restore this page; its device copy may be torn but is discarded.
      rt.uffd.write_protect(r.addr(page), kPageSize, false);
      rt.stats.add(rt.stats.write_cancels, 1);
      return;
    }
  }
  if (!entry::locked(cur)) rt.uffd.wake(r.addr(page), kPageSize);  // the batch is done
}

// `before`: the range table's seq when the fault service woke up. A range created later was
// mmap()ed after this munmap returned (the munmap waits for its event to be read), so it may
// sit in the unmapped hole and must not be touched.
// Pages of [first, end) of r about to go GONE (a partial munmap): host pages stop counting
// against the host budget, and pages in the swap file give their slots back, now (a whole
// range's are given back when it is retired). Called before marking them; never waits.
void forget_unmapped(Runtime &rt, Range &r, size_t first, size_t end) {
  std::vector<size_t> swapped;
  for (size_t p = first; p < end; p = r.block_end(p)) {
    DBlock *db = r.dblock(p);
    if (!db) continue;  // never used
    uint32_t host = 0;
    for (size_t k = p; k < std::min(end, r.block_end(p)); ++k) {
      const uint64_t e = r.entries[k].load(std::memory_order_acquire);
      if (e & entry::GONE) continue;
      host += entry::loc(e) == Loc::HOST;
      if (entry::loc(e) == Loc::SWAP) swapped.push_back(k);
    }
    rt.budget.sub(db, host);
  }
  if (swapped.empty()) return;
  std::vector<uint64_t> slots;
  std::vector<size_t> held;
  for (size_t k : swapped) {
    uint64_t old = 0;
    if (!entry_try_lock(r.entries[k], &old)) continue;  // a batch has it: it comes home or stays
    if (entry::loc(old) == Loc::SWAP) {
      slots.push_back(entry::frame(old));
      held.push_back(k);
    } else {
      entry_unlock(r.entries[k]);
    }
  }
  if (!slots.empty()) rt.swap.release(slots.data(), slots.size());  // (while locked: finalize.cpp)
  for (size_t k : held) {
    uint64_t cur = r.entries[k].load(std::memory_order_acquire);
    while (!entry_transition(r.entries[k], cur, entry::with_loc(cur, Loc::NONE))) {
    }
  }
}

void serve_unmap(Runtime &rt, uintptr_t lo, uintptr_t hi, uint64_t before) {
  for (const RangePtr &r : rt.ranges.overlapping(lo, hi)) {
    if (r->seq > before) continue;
    uintptr_t a = std::max(lo, r->start()), b = std::min(hi, r->start() + r->map_bytes);
    const bool whole = lo <= r->start() && hi >= r->start() + r->map_bytes;
    if (!whole && a < b) forget_unmapped(rt, *r, r->page_of(a), std::min(r->npages, r->page_of(b - 1) + 1));
    r->mark_gone(lo, hi);
    if (r->all_gone()) {  // at once or piece by piece (mremap shrinks, partial munmaps)
      log(Level::warn, "managed range %p (%zu bytes) was munmap()ed by the user", (void *)r->start(), r->size);
      rt.retire_unmapped(r);
    } else {
      log(Level::info, "user munmap of %zu bytes inside managed range %p", b - a, (void *)r->start());
    }
  }
}

}  // namespace

struct FaultService::Shared {
  explicit Shared(Runtime &rt) : remaps(rt) {}
  // One reader at a time: a read and the handling of the events it brought, in order.
  std::mutex read_mu;
  Remaps remaps;  // under read_mu
  std::atomic<bool> evacuating{false};  // remaps.busy(), for the poll timeout
  FailCounts fails;
  // Device blocks a thread is serving faults of now, with the groups other threads found for
  // them meanwhile (served by the same thread right after, so no two serve one block at once).
  std::mutex busy_mu;
  std::unordered_map<const void *, std::vector<Group>> busy;
};

namespace {
// Serve g unless another thread is serving its block: then it is queued for that thread.
void serve_exclusive(Runtime &rt, FaultService::Shared &sh, Group &&g) {
  const void *key = g.ref->block_at(g.block_first);  // null (out of memory): no exclusion
  if (key) {
    std::lock_guard lk(sh.busy_mu);
    auto [it, mine] = sh.busy.try_emplace(key);
    if (!mine) {
      it->second.push_back(std::move(g));
      return;
    }
  }
  for (;;) {
    serve_group(rt, g, sh.fails);
    g.ref.reset();
    if (!key) return;
    std::lock_guard lk(sh.busy_mu);
    auto it = sh.busy.find(key);
    if (it->second.empty()) {
      sh.busy.erase(it);
      return;
    }
    g = std::move(it->second.back());
    it->second.pop_back();
  }
}
}  // namespace

void FaultService::install_enter() {
  for (;;) {
    installs_.fetch_add(1, std::memory_order_seq_cst);
    if (!reading_.load(std::memory_order_seq_cst) && events_in_progress_.load(std::memory_order_seq_cst) == 0) return;
    installs_.fetch_sub(1, std::memory_order_seq_cst);
    while (reading_.load() || events_in_progress_.load() > 0) std::this_thread::yield();
  }
}

void FaultService::settle_events() const {
  for (int i = 0; i < 1000000 && (reading_.load() || events_in_progress_.load() > 0); ++i)
    std::this_thread::yield();
}

int FaultService::start(Runtime *rt, unsigned threads) {
  rt_ = rt;
  stop_fd_ = eventfd(0, EFD_CLOEXEC);
  if (stop_fd_ < 0) return -errno;
  try {
    sh_ = std::make_shared<Shared>(*rt);
    for (unsigned i = 0; i < std::max(threads, 1u); ++i)
      threads_.push_back(start_thread("umrt-fault", [this] { loop(); }));
  } catch (...) {
    stop();
    return -EAGAIN;
  }
  return 0;
}

void FaultService::stop() {
  if (stop_fd_ < 0) return;
  uint64_t one = 1;
  ssize_t w = write(stop_fd_, &one, sizeof one);  // stays readable: every thread sees it
  (void)w;
  for (std::thread &t : threads_) t.join();
  threads_.clear();
  sh_.reset();
  close(stop_fd_);
  stop_fd_ = -1;
}

void FaultService::loop() {
  Runtime &rt = *rt_;
  Shared &sh = *sh_;
  Uffd::mark_fault_service_thread();
  uffd_msg msgs[kMaxMsgs];
  std::vector<Group> groups;
  std::vector<std::pair<RangeRef, size_t>> wps;
  pollfd pfd[2] = {{rt.uffd.fd(), POLLIN, 0}, {stop_fd_, POLLIN, 0}};
  for (;;) {
    int pr = poll(pfd, 2, sh.evacuating.load() ? 1 : -1);
    if (pr < 0) {
      if (errno == EINTR) continue;
      log(Level::error, "fault service: poll failed: %s", strerror(errno));
      return;
    }
    if (pfd[1].revents) return;
    std::unique_lock lk(sh.read_mu);
    if (pr == 0) {  // only evacuations waiting for their mremap to finish
      sh.remaps.rounds();
      sh.evacuating.store(sh.remaps.busy());
      continue;
    }
    const uint64_t seq_before = rt.ranges.seq();
    reading_.store(true, std::memory_order_seq_cst);
    // Installs that checked an address before this read finish first (InstallGate).
    while (installs_.load(std::memory_order_seq_cst) > 0) std::this_thread::yield();
    ssize_t got = read(rt.uffd.fd(), msgs, sizeof msgs);
    if (got < 0) {
      reading_.store(false);
      if (errno == EAGAIN || errno == EINTR) continue;  // another thread read them first
      log(Level::error, "fault service: read failed: %s", strerror(errno));
      return;
    }
    size_t nmsg = static_cast<size_t>(got) / sizeof(uffd_msg);
    const bool events = std::any_of(msgs, msgs + nmsg, [](const uffd_msg &m) { return m.event != UFFD_EVENT_PAGEFAULT; });
    if (events) events_in_progress_.fetch_add(1);
    reading_.store(false);
    groups.clear();
    for (size_t k = 0; k < nmsg; ++k) {
      const uffd_msg &m = msgs[k];
      if (m.event == UFFD_EVENT_UNMAP) {
        serve_unmap(rt, m.arg.remove.start, m.arg.remove.end, seq_before);
        continue;
      }
      if (m.event == UFFD_EVENT_REMAP) {
        sh.remaps.on_remap(m.arg.remap.from, m.arg.remap.to, m.arg.remap.len, seq_before);
        continue;
      }
      if (m.event != UFFD_EVENT_PAGEFAULT) continue;
      uintptr_t addr = m.arg.pagefault.address & ~(uintptr_t{kPageSize} - 1);
      rt.stats.add(rt.stats.cpu_faults, 1);
      RangeRef ref = rt.ranges.acquire(addr);
      if (!ref) {  // freed meanwhile (the thread retries), or a tail an mremap() added
        sh.remaps.on_stray_fault(addr);
        continue;
      }
      ref->faults.fetch_add(1, std::memory_order_relaxed);  // per allocation (umrt-stat)
      size_t page = ref->page_of(addr);
      if (m.arg.pagefault.flags & UFFD_PAGEFAULT_FLAG_WP) {
        wps.emplace_back(std::move(ref), page);
        continue;
      }
      size_t bf = ref->block_first(page);
      auto it = std::find_if(groups.begin(), groups.end(), [&](const Group &g) {
        return g.ref.get() == ref.get() && g.block_first == bf;
      });
      if (it == groups.end()) {
        groups.push_back(Group{std::move(ref), bf, {}});
        it = groups.end() - 1;
      }
      it->pages.push_back(page);
      if (m.arg.pagefault.flags & UFFD_PAGEFAULT_FLAG_WRITE) it->write = true;
    }
    if (events) events_in_progress_.fetch_sub(1);
    if (sh.remaps.busy()) sh.remaps.rounds();
    sh.evacuating.store(sh.remaps.busy());
    lk.unlock();  // the next read may start on another thread while these are served
    for (auto &[ref, page] : wps) serve_wp(rt, *ref.get(), page);
    wps.clear();
    for (Group &g : groups) serve_exclusive(rt, sh, std::move(g));
    groups.clear();  // drop the range references before blocking again
  }
}

}  // namespace umrt::rt
