// remap.cpp — what umrt does when the user mremap()s managed memory (docs/design.md, "mremap").
//
//   The whole range moved (UFFD_EVENT_REMAP covering it): the range follows. It is re-keyed in
//     the range table at its new start, so faults, prefetches and umrt_free work there, and the
//     old address is unknown to umrt. The page tables moved with the mapping (host pages, and
//     their write-protection) and device pages never were in them, so no data moves. Batches
//     in flight compute each address from the range's start afresh; a step one of them issued
//     at the old address after the kernel moved the pages and before the range followed is
//     checked for once they are done (recheck_moved): a zap that missed leaves a DEVICE page
//     mapped at the new address (its copy there is the one that was copied, write-protected,
//     so it is dropped), and an un-protect that missed leaves a stale write-protection that the
//     fault service lifts on the writer's fault (fault.cpp, serve_wp).
//   Part of a range moved: that part leaves umrt with its data (an Evacuation). Its device pages
//     (and its pages in storage: swap slots, a file range's pages not read yet) are locked at
//     once (so no eviction drops them when the UNMAP event of the old part marks them GONE),
//     copied (read) to the new address once the kernel lets us (the mremap is still in
//     progress while its events are being read: UFFDIO_COPY says EAGAIN until then, so the
//     fault service retries on its next rounds instead of waiting), then the part is
//     unregistered at the new address (plain memory from then on; threads that faulted there
//     meanwhile are woken by it) and its pages are GONE in the range, as after a munmap.
//   The range grew (in place: no event; or with the move): the kernel extends the registered
//     mapping. The first fault in the added tail finds no range (serve_stray): the tail is
//     unregistered (plain memory, zero-filled by the kernel) and remembered, so that umrt_free
//     unmaps it with the range.
// Runs on the fault-service thread (Remaps) and at the end of batches (batch_done). Never throws.
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <thread>
#include <vector>

#include "batch.h"
#include "remap.h"
#include "storage/file_store.h"
#include "storage/swap.h"

namespace umrt::rt {
namespace {

// The mapping (VMA) of this process that contains addr, from /proc/self/maps. Slow (a file
// read): only for faults no range claims, which happen once per grown tail.
bool find_mapping(uintptr_t addr, uintptr_t *lo, uintptr_t *hi) {
  int fd = ::open("/proc/self/maps", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  std::string text;
  char buf[65536];
  for (;;) {
    ssize_t got = ::read(fd, buf, sizeof buf);
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0) break;
    text.append(buf, static_cast<size_t>(got));
  }
  ::close(fd);
  for (size_t at = 0; at < text.size();) {
    size_t eol = text.find('\n', at);
    if (eol == std::string::npos) eol = text.size();
    unsigned long a = 0, b = 0;
    if (std::sscanf(text.c_str() + at, "%lx-%lx", &a, &b) == 2 && addr >= a && addr < b) {
      *lo = a;
      *hi = b;
      return true;
    }
    at = eol + 1;
  }
  return false;
}

// Maps the staged bytes of a device page at its new (moved) address, one try (the fault service
// never waits out a pending event: EAGAIN goes back to the caller, which tries again later).
struct MoveInstaller final : Installer {
  Runtime &rt;
  explicit MoveInstaller(Runtime &r) : rt(r) {}
  int install(CopyOp &op, const void *staged) override {
    Uffd::NoWaitScope nowait(true);
    size_t done = 0;
    int rc = rt.uffd.copy(op.host, staged, op.len, false, &done);
    if (rc == -EEXIST) rc = 0;  // mapped already: the write-protected copy of a batch in flight
    op.done = rc ? done : op.len;
    return rc;
  }
};

constexpr uint64_t kEvacuationTimeNs = 5'000'000'000;  // then what is left is reported lost

// Whether a page's data is somewhere else than in host memory: on the device, in the swap file,
// or (a file range's page not read yet) in its file. An anonymous NONE page is zeros: nothing
// to bring.
bool away_from_host(const Range &r, uint64_t v) {
  const Loc l = entry::loc(v);
  return l == Loc::DEVICE || l == Loc::SWAP || (l == Loc::NONE && r.file());
}

}  // namespace

void recheck_moved(Range &r) {
  // Only the range's own pages: those not GONE, inside its live span. A shrunk range's cut pages
  // may still say DEVICE (their device memory goes later), and at the new address other
  // mappings may lie where they would fall: a mapping there is someone else's, never zapped.
  size_t lf = 0, le = 0;
  r.live_span(&lf, &le);
  if (lf >= le) return;
  std::vector<unsigned char> vec(kBlockPages);
  r.each_block([&](const DBlock &db) {  // blocks never made hold no device pages
    // (nor swapped ones: those were host pages first, and a block that had some has a clock)
    if (db.resident.load(std::memory_order_acquire) == 0 && db.host_used.load(std::memory_order_relaxed) == 0) return;
    const size_t b0 = r.packed ? 0 : db.win_offset / kBlockSize * kBlockPages;
    const size_t bf = std::max(b0, lf), be = std::min(r.block_end(b0), le);
    if (bf >= be || mincore(r.addr(bf), (be - bf) * kPageSize, vec.data()) != 0) return;
    for (size_t p = bf; p < be; ++p) {
      if (!(vec[p - bf] & 1)) continue;
      Entry &e = r.entries[p];
      uint64_t old = 0;
      const uint64_t cur = e.load(std::memory_order_acquire);
      // A page in the swap file mapped all the same is as stale as a device page's mapping.
      auto away = [](uint64_t v) { return entry::loc(v) == Loc::DEVICE || entry::loc(v) == Loc::SWAP; };
      if ((cur & entry::GONE) || !away(cur) || !entry_try_lock(e, &old)) continue;
      if (away(old) && !(old & entry::GONE)) madvise(r.addr(p), kPageSize, MADV_DONTNEED);
      entry_unlock(e);
    }
  });
}

void batch_done(Range &r) {
  if (r.batches.fetch_sub(1) == 1 && r.recheck_after_move.load() && r.recheck_after_move.exchange(false))
    recheck_moved(r);
}

void Remaps::on_remap(uintptr_t from, uintptr_t to, size_t len, uint64_t before) {
  const intptr_t delta = static_cast<intptr_t>(to - from);
  // A part moved out before (its evacuation under way) moved again, as a whole: what is still to
  // come follows it to its new address. (Moved in part: the rest arrives where it was.)
  for (Evacuation &ev : pending_) {
    const uintptr_t d0 = ev.dst, d1 = ev.dst + ((ev.p1 - ev.p0) << kPageShift);
    if (from <= d0 && d1 <= from + len) ev.dst += delta;
  }
  for (const RangePtr &r : rt_.ranges.overlapping(from, from + len)) {
    if (r->seq > before) continue;
    const uintptr_t s = r->start(), e = s + r->map_bytes;
    // The whole range, or all that is left of it (a shrink or a munmap took the rest: GONE).
    size_t live_first = 0, live_end = 0;
    r->live_span(&live_first, &live_end);
    const uintptr_t ls = s + (live_first << kPageShift), le = s + (live_end << kPageShift);
    if (ls < le && from <= ls && le <= from + len) {
      for (RangePtr &z : rt_.ranges.move(r, s + delta)) rt_.add_zombie(std::move(z));
      r->tail_end.store(0);  // a grown tail is a mapping of its own: it stayed where it was
      r->tail_begin.store(0);
      log(Level::info, "managed range %p (%zu bytes) was mremap()ed to %p: following it", (void *)s,
          r->size, (void *)(s + delta));
      r->recheck_after_move.store(true);
      if (r->batches.load() == 0 && r->recheck_after_move.exchange(false)) recheck_moved(*r);
      continue;
    }
    // Only r's pages still mapped: its GONE ones there may be another range's (adjacent
    // registered mappings merge, so one mremap can take parts of two ranges).
    const uintptr_t lo = std::max(from, s), hi = std::min(from + len, e);
    Evacuation ev{r, r->page_of(lo), r->page_of(hi - 1) + 1, lo + delta, now_ns() + kEvacuationTimeNs, {}, {}, {}, {}, 0, 0, 0};
    // A file range's host pages with nothing mapped at the new address were discarded by the
    // program: the file's bytes go there (storage/discard.h).
    std::unique_ptr<bool[]> unmapped(new bool[ev.p1 - ev.p0]());
    if (r->file() && !rt_.pagemap.unmapped_run(reinterpret_cast<void *>(ev.dst), ev.p1 - ev.p0, unmapped.get()))
      std::fill(unmapped.get(), unmapped.get() + (ev.p1 - ev.p0), false);
    for (size_t p = ev.p0; p < ev.p1; ++p) {
      const uint64_t v = r->entries[p].load(std::memory_order_acquire);
      if (v & entry::GONE) continue;
      if (ev.runs.empty() || ev.runs.back().second != p) ev.runs.emplace_back(p, p + 1);
      else ev.runs.back().second = p + 1;
      if (away_from_host(*r, v) || (entry::loc(v) == Loc::HOST && unmapped[p - ev.p0])) ev.todo.push_back(p);
    }
    if (ev.runs.empty()) continue;
    r->inflight.fetch_add(1);  // released when the evacuation ends (step)
    pending_.push_back(std::move(ev));
  }
  rounds();  // locks the device pages at once (before the UNMAP event of the old part comes)
}

bool Remaps::step(Evacuation &ev) {
  Range &r = *ev.r;
  const bool late = now_ns() > ev.deadline;
  // Device pages of the part, locked as soon as no batch holds them, if they are still (or
  // again) on the device.
  for (size_t k = 0; k < ev.todo.size();) {
    uint64_t old = 0;
    Entry &e = r.entries[ev.todo[k]];
    if (entry_try_lock(e, &old)) {
      bool unmapped = false;  // a discarded host page of a file range, still with nothing at the new address
      if (entry::loc(old) == Loc::HOST && r.file())
        rt_.pagemap.unmapped_run(reinterpret_cast<void *>(ev.dst + ((ev.todo[k] - ev.p0) << kPageShift)), 1, &unmapped);
      if (entry::loc(old) == Loc::DEVICE) ev.held.push_back(ev.todo[k]);
      else if (away_from_host(r, old) || unmapped) ev.held_io.push_back(ev.todo[k]);
      else entry_unlock(e);
      ev.todo[k] = ev.todo.back();
      ev.todo.pop_back();
    } else {
      ++k;
    }
  }
  if (ev.held.size() && rt_.backend->device_sync() == 0) {
    while (!ev.held.empty()) {
      const size_t p = ev.held.back();
      CopyOp op{CopyOp::D2H, reinterpret_cast<char *>(ev.dst + ((p - ev.p0) << kPageShift)), r.dev_addr(p),
                kPageSize, 0, 0};
      MoveInstaller inst(rt_);
      int rc = rt_.backend->transfer(&op, 1, &inst);
      if (rc && !late) break;  // the mremap is still in progress (EAGAIN) or a copy failed: next round
      Entry &e = r.entries[p];
      if (rc == 0) {
        uint64_t cur = e.load(std::memory_order_acquire);
        while (!entry_transition(e, cur, entry::with_loc(cur, Loc::NONE) | entry::LOCKED)) {
        }
        r.dblock(p)->resident.fetch_sub(1, std::memory_order_acq_rel);
        rt_.stats.add(rt_.stats.bytes_to_host, kPageSize);
        rt_.stats.add(rt_.stats.pages_to_host, 1);
        ++ev.moved;
      } else {
        ++ev.lost;
      }
      entry_unlock(e);
      ev.held.pop_back();
    }
  }
  read_in(ev);
  if (!late && (!ev.held.empty() || !ev.held_io.empty() || !ev.todo.empty())) return false;
  ev.lost += ev.held.size() + ev.held_io.size() + ev.todo.size();
  for (size_t p : ev.held) entry_unlock(r.entries[p]);
  for (size_t p : ev.held_io) entry_unlock(r.entries[p]);
  // Plain memory from now on; the threads that faulted there meanwhile are woken (also if the
  // user unmapped the destination already and there is nothing to unregister).
  size_t bytes = 0;
  for (auto [a, b] : ev.runs) {
    for (size_t p = a; p < b; ++p) r.mark_page_gone(p);
    void *at = reinterpret_cast<void *>(ev.dst + ((a - ev.p0) << kPageShift));
    rt_.uffd.unregister_range(at, (b - a) << kPageShift);
    rt_.uffd.wake(at, (b - a) << kPageShift);
    bytes += (b - a) << kPageShift;
  }
  if (ev.lost)
    log(Level::error,
        "mremap moved %zu bytes out of managed range %p: %zu device or storage pages could not be "
        "brought to the new address %p (their contents there read as zeros)",
        bytes, reinterpret_cast<void *>(r.start()), ev.lost, reinterpret_cast<void *>(ev.dst));
  else
    log(Level::info, "mremap moved %zu bytes out of managed range %p to %p (%zu device or storage pages copied)",
        bytes, reinterpret_cast<void *>(r.start()), reinterpret_cast<void *>(ev.dst), ev.moved);
  if (r.all_gone()) rt_.retire_unmapped(ev.r);
  r.inflight.fetch_sub(1);
  return true;
}

// The held storage pages, in runs of one kind (swap / file) inside one block's worth of pages:
// each run read into staging in one submission, then mapped at the new address in one try (the
// mremap still in progress: EAGAIN, the run is read again next round). Swap slots are given back
// (before the unlock, as finalize does) and the pages say NONE; a read that fails leaves the run
// for the next round (reported lost at the deadline).
void Remaps::read_in(Evacuation &ev) {
  if (ev.held_io.empty()) return;
  Range &r = *ev.r;
  char *stage = file_staging();
  if (!stage) return;
  std::sort(ev.held_io.begin(), ev.held_io.end());
  std::vector<size_t> left;
  bool dead_round = false;
  for (size_t k = 0; k < ev.held_io.size();) {
    const size_t first = ev.held_io[k];
    const bool swap = entry::loc(r.entries[first].load(std::memory_order_acquire)) == Loc::SWAP;
    size_t z = k + 1;
    while (z < ev.held_io.size() && ev.held_io[z] == ev.held_io[z - 1] + 1 && ev.held_io[z] - first < kBlockPages &&
           (entry::loc(r.entries[ev.held_io[z]].load(std::memory_order_acquire)) == Loc::SWAP) == swap)
      ++z;
    const size_t n = z - k;
    bool ok[kBlockPages] = {};
    uint64_t slots[kBlockPages];
    uint64_t got = 0;
    if (swap) {
      bool want[kBlockPages];
      for (size_t i = 0; i < n; ++i) {
        want[i] = true;
        slots[i] = entry::frame(r.entries[first + i].load(std::memory_order_acquire));
      }
      rt_.swap.read(slots, want, n, stage, ok, &got);
    } else {
      size_t good = 0;
      read_file_pages(r, first, n, stage, &got, &good);
      for (size_t i = 0; i < good; ++i) ok[i] = true;
    }
    rt_.stats.add(rt_.stats.bytes_from_storage, got);
    for (size_t i = 0; i < n;) {
      if (!ok[i]) {
        left.push_back(first + i++);
        continue;
      }
      size_t j = i;
      while (j < n && ok[j]) ++j;
      size_t done = 0;
      int rc = 0;
      {
        Uffd::NoWaitScope nowait(true);
        rc = rt_.uffd.copy(reinterpret_cast<char *>(ev.dst + ((first + i - ev.p0) << kPageShift)), stage + i * kPageSize,
                           (j - i) * kPageSize, false, &done);
      }
      // EEXIST: the page after those copied is mapped there already (taken as there; the rest
      // next round). Another error than EAGAIN (the mremap still under way) or EEXIST: nothing is
      // at the new address. Either it moved again (its REMAP is read before the next round, and
      // dst follows) or the program unmapped it: failing again on the next round, those pages
      // are lost then, not read again and again for 5 s.
      const size_t mapped = std::min(j - i, done / kPageSize + (rc == -EEXIST ? 1 : 0));
      const bool dead = rc && rc != -EAGAIN && rc != -EEXIST;
      dead_round = dead_round || dead;
      const bool hopeless = dead && ev.dead_rounds >= 1;
      for (size_t m = i; m < j; ++m) {
        const size_t p = first + m;
        if (m >= i + mapped && !hopeless) {
          left.push_back(p);
          continue;
        }
        if (m >= i + mapped) {
          Entry &e = r.entries[p];
          if (swap) {  // the slot goes back: its page has nowhere to go
            uint64_t cur = e.load(std::memory_order_acquire);
            rt_.swap.release(&slots[m], 1);
            while (!entry_transition(e, cur, entry::with_loc(cur, Loc::NONE) | entry::LOCKED)) {
            }
          }
          ++ev.lost;
          entry_unlock(e);
          continue;
        }
        Entry &e = r.entries[p];
        uint64_t cur = e.load(std::memory_order_acquire);
        if (swap) {
          rt_.swap.release(&slots[m], 1);
          while (!entry_transition(e, cur, entry::with_loc(cur, Loc::NONE) | entry::LOCKED)) {
          }
          rt_.stats.add(rt_.stats.swap_ins, 1);
        }
        ++ev.moved;
        entry_unlock(e);
      }
      i = j;
    }
    k = z;
  }
  ev.held_io.swap(left);
  ev.dead_rounds = dead_round ? ev.dead_rounds + 1 : 0;
}

void Remaps::rounds() {
  for (size_t k = 0; k < pending_.size();) {
    if (step(pending_[k])) pending_.erase(pending_.begin() + static_cast<long>(k));
    else ++k;
  }
}

void Remaps::on_stray_fault(uintptr_t addr) {
  void *page = reinterpret_cast<void *>(addr);
  for (const Evacuation &ev : pending_)
    for (auto [a, b] : ev.runs)
      if (addr >= ev.dst + ((a - ev.p0) << kPageShift) && addr < ev.dst + ((b - ev.p0) << kPageShift))
        return;  // woken when done
  // A range umrt_free is releasing: the thread retries until its mapping is gone (then SIGSEGV,
  // as for any freed memory), never reads it as fresh zeros.
  if (rt_.ranges.being_freed(addr)) {
    rt_.uffd.wake(page, kPageSize);
    return;
  }
  uintptr_t lo = 0, hi = 0;
  if (!find_mapping(addr, &lo, &hi)) {  // unmapped meanwhile: the thread retries (and gets SIGSEGV)
    rt_.uffd.wake(page, kPageSize);
    return;
  }
  RangePtr below;
  for (const RangePtr &r : rt_.ranges.overlapping(lo, hi)) {
    // What the range still maps: its GONE pages (a shrink's, a munmap's, or beyond what a move
    // took) are not its own, and a growth may have put this very tail there.
    size_t first = 0, end = 0;
    r->live_span(&first, &end);
    if (first == end) continue;
    const uintptr_t s = r->start() + (first << kPageShift), e = r->start() + (end << kPageShift);
    if (s <= addr && addr < e && !r->live_at(addr)) continue;  // a hole in it: someone else's
    if (e <= addr) {
      if (e >= lo) {
        lo = e;
        below = r;
      }
    } else if (s > addr) {
      hi = std::min(hi, s);
    } else {  // a range claims it after all (just inserted or moved): the thread retries
      rt_.uffd.wake(page, kPageSize);
      return;
    }
  }
  // below, if any, is the range whose live pages end exactly at lo (the loop moved lo there).
  if (!below) {
    // No range ends where this free part of the mapping begins: not a grown tail. A fault at a
    // range's new address before its REMAP event is handled, or in a range being created, looks
    // the same for a moment: the thread retries. Only a fault that keeps coming back unclaimed
    // is served as the kernel would (a zero page), never by unregistering someone's range.
    if (++unclaimed_[addr] < 100000) {
      if (unclaimed_.size() > 4096) unclaimed_.clear();
      rt_.uffd.wake(page, kPageSize);
      return;
    }
    unclaimed_.erase(addr);
    size_t done = 0;
    rt_.uffd.zeropage(page, kPageSize, false, &done);
    log(Level::warn, "fault at %p outside every managed range, unclaimed: served as a zero page", page);
    return;
  }
  if (int rc = rt_.uffd.unregister_range(reinterpret_cast<void *>(lo), hi - lo)) {
    size_t done = 0;  // cannot let it go: serve it as the kernel would, one zero page
    rt_.uffd.zeropage(page, kPageSize, false, &done);
    log(Level::warn, "fault at %p outside every managed range; unregistering [%p, %p) failed: %s",
        page, (void *)lo, (void *)hi, strerror(-rc));
  } else {
    // One tail per range: the first growth sets where it begins, later ones extend it.
    if (below->tail_end.load() == 0) below->tail_begin.store(lo);
    if (below->tail_end.load() < hi) below->tail_end.store(hi);
    log(Level::info, "managed range %p grew by mremap(): [%p, %p) is plain memory", (void *)below->start(),
        (void *)lo, (void *)hi);
  }
  rt_.uffd.wake(page, kPageSize);
}

}  // namespace umrt::rt
