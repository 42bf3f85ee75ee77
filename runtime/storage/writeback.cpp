// storage/writeback.cpp — write-back of a writable file range's DIRTY pages, one batch per
// device block, by the protocol's steps (the pages' location does not change, only DIRTY):
//   collect:  DIRTY pages no one holds are locked with FLUSH (CPU writers wait for a FLUSH
//             lock, they never cancel it: what is written is what the page held);
//   unmap:    their host copies write-protected (stable; the next write faults and marks the
//             page DIRTY again), device copies waited for (device_sync);
//   copy:     host runs copied into the thread's staging (read_user_pages), device runs copied
//             there (D2H), then every run written in one io_uring submission (O_DIRECT where
//             the file takes it; a last page the range covers in part through the buffered
//             descriptor, only up to the range's end: the file never grows);
//   finalize: host pages written are unlocked clean (still write-protected), the others
//             DIRTY (device pages always stay so: a kernel may write them unseen); a host page
//             the program discarded (MADV_DONTNEED: the fault service marks it CANCEL when the
//             copy faults on it) is not written and is the file's again (NONE); writers
//             waiting on the span are woken.
// Pages locked by others (a batch moving them) are retried until free, as a prefetch does.
// flush_span then fdatasyncs the file; a failed fdatasync makes the span's pages DIRTY again.
#include "writeback.h"

#include <sys/mman.h>

#include <cstdio>
#include <cstring>
#include <thread>

#include "../batch.h"
#include "../nvtx.h"
#include "../remap.h"
#include "../threads.h"
#include "discard.h"
#include "file_store.h"
#include "ring.h"

namespace umrt::rt {
namespace {

// D2H copies of a write-back land in staging, not in the range: op.host is the staging address.
struct StageInstaller final : Installer {
  int install(CopyOp &op, const void *staged) override {
    std::memcpy(op.host, staged, op.len);
    op.done = op.len;
    return 0;
  }
};

struct WriteBack {
  Runtime &rt;
  Range &r;
  size_t first, n;
  uint64_t src[kBlockPages];   // the entry locked (unlocked form), 0: not held
  bool good[kBlockPages];      // staged (copy) / written (after the I/O)
  bool discarded[kBlockPages] = {};  // a host page found discarded by the program (copy)
  bool drop = false;           // eviction: DEVICE pages only, and once written they leave the
                               // device (NONE: in the file again)
  uint32_t held = 0, skipped = 0, dropped = 0, gave_back = 0;
  uint64_t written = 0;        // bytes written to the file
  int error = 0;
  void fail(int e) {
    if (!error) error = e;
  }
};

void wb_collect(WriteBack &w) {
  Entry *ents = w.r.entries.get();
  for (size_t i = 0; i < w.n; ++i) {
    w.src[i] = 0;
    w.good[i] = false;
    Entry &e = ents[w.first + i];
    uint64_t cur = e.load(std::memory_order_acquire);
    for (;;) {
      if (cur & entry::GONE) break;  // unmapped by the user: nothing of it is left to write
      if (entry::locked(cur)) {
        // Held by a batch moving it (it may be DIRTY once that one is done, a host page going to
        // the device even becomes so) or by another write-back: tried again. A page held while
        // it is read from the file is clean.
        if (entry::loc(cur) != Loc::NONE) ++w.skipped;
        break;
      }
      if (!(cur & entry::DIRTY) || (w.drop && entry::loc(cur) != Loc::DEVICE)) break;
      if (entry_transition(e, cur, cur | entry::LOCKED | entry::FLUSH)) {
        w.src[i] = cur;
        ++w.held;
        break;
      }
    }
  }
  // Host pages the program discarded: nothing to write, the file's again (storage/discard.h).
  bool disc[kBlockPages];
  if (w.held && take_back_discarded(w.rt, w.r, w.first, w.n, w.src, false, disc))
    for (size_t i = 0; i < w.n; ++i)
      if (disc[i]) {
        w.src[i] = 0;
        --w.held;
      }
}

// Pages [i, j) leave the write-back unwritten (they stay DIRTY).
void wb_drop(WriteBack &w, size_t i, size_t j) {
  for (size_t k = i; k < j; ++k) w.good[k] = false;
}

bool held_at(const WriteBack &w, size_t i, Loc l) { return w.src[i] && entry::loc(w.src[i]) == l; }

void wb_unmap(WriteBack &w) {
  for (size_t i = 0; i < w.n; ++i) w.good[i] = w.src[i] != 0;
  for_runs(w.n, [&](size_t i) { return held_at(w, i, Loc::HOST); }, [&](size_t i, size_t j) {
    if (int rc = w.rt.uffd.write_protect(w.r.addr(w.first + i), (j - i) * kPageSize, true)) {
      log(rc == -ENOENT ? Level::info : Level::warn, "write-back: write-protect of %zu pages at %p failed: %d", j - i,
          w.r.addr(w.first + i), rc);
      wb_drop(w, i, j);
      w.fail(rc);
    }
  });
  bool device = false;
  for (size_t i = 0; i < w.n && !device; ++i) device = held_at(w, i, Loc::DEVICE);
  if (device) {
    if (int rc = w.rt.backend->device_sync()) {
      for (size_t i = 0; i < w.n; ++i)
        if (held_at(w, i, Loc::DEVICE)) w.good[i] = false;
      w.fail(rc);
    }
  }
}

void wb_copy(WriteBack &w) {
  char *stage = file_staging();
  if (!stage) {
    wb_drop(w, 0, w.n);
    w.fail(-ENOMEM);
    return;
  }
  char *const host0 = w.r.addr(w.first);
  CopyOp ops[kBlockPages];
  size_t nops = 0;
  for_runs(w.n, [&](size_t i) { return w.good[i]; }, [&](size_t i, size_t j) {
    // Runs of one location each.
    for (size_t a = i; a < j;) {
      const Loc l = entry::loc(w.src[a]);
      size_t b = a;
      while (b < j && entry::loc(w.src[b]) == l) ++b;
      if (l == Loc::HOST) {
        if (read_user_pages(stage + a * kPageSize, host0 + a * kPageSize, (b - a) * kPageSize) != 0) {
          // Unreadable (mprotect PROT_NONE, or unmapped under us): not written, still DIRTY.
          log(Level::warn, "write-back: %zu pages at %p cannot be read (PROT_NONE?); they stay dirty", b - a,
              host0 + a * kPageSize);
          wb_drop(w, a, b);
          w.fail(io_error(-EFAULT));
        }
      } else {
        ops[nops++] = {CopyOp::D2H, stage + a * kPageSize, w.r.dev_addr(w.first + a), (b - a) * kPageSize, 0, 0};
      }
      a = b;
    }
  });
  if (nops) {
    StageInstaller inst;
    w.rt.backend->transfer(ops, nops, &inst);
    for (size_t k = 0; k < nops; ++k)
      if (ops[k].status) {
        const size_t i = static_cast<size_t>(static_cast<char *>(ops[k].host) - stage) >> kPageShift;
        wb_drop(w, i, i + ops[k].len / kPageSize);
        w.fail(ops[k].status);
      }
  }
  // Host pages the program discarded: what was read for them is zeros it never wrote. (The
  // fault service marks them while the read above faults on them: seen now.)
  Entry *ents = w.r.entries.get();
  for (size_t i = 0; i < w.n; ++i) {
    w.discarded[i] = held_at(w, i, Loc::HOST) && (ents[w.first + i].load(std::memory_order_acquire) & entry::CANCEL);
    if (w.discarded[i]) w.good[i] = false;
  }
  // The range moved (mremap) while its pages were read: what was read at the old address may be
  // another's memory. Those pages are tried again at the new address.
  if (w.r.addr(w.first) != host0) {
    for (size_t i = 0; i < w.n; ++i)
      if (w.good[i] && held_at(w, i, Loc::HOST)) {
        w.good[i] = false;
        ++w.skipped;
      }
  }
  // The I/O: runs of staged pages, one submission.
  bool ok[kBlockPages];
  const int rc = write_file_pages(w.r, w.first, w.n, w.good, stage, ok, &w.written);
  for (size_t i = 0; i < w.n; ++i) w.good[i] = w.good[i] && ok[i];
  if (rc) w.fail(rc);
}

void wb_finalize(WriteBack &w) {
  Entry *ents = w.r.entries.get();
  // Discarded pages go back to the file: published NONE and the zeros read meanwhile zapped, in
  // one install gate at an unchanged address (as the spill does: remap.cpp). Moved meanwhile:
  // they stay as they are (DIRTY, the zeros mapped).
  // (Also those discarded while their write was under way: marked since the copy step looked.)
  bool any = false;
  for (size_t i = 0; i < w.n; ++i) {
    w.discarded[i] = w.discarded[i] ||
                     (held_at(w, i, Loc::HOST) && (ents[w.first + i].load(std::memory_order_acquire) & entry::CANCEL));
    any = any || (w.src[i] && w.discarded[i]);
  }
  if (any) {
    AsyncSignalsBlocked nosig;
    FaultService::InstallGate gate(w.rt.faults);
    char *const host0 = w.r.addr(w.first);
    for (size_t i = 0; i < w.n; ++i) {
      if (!w.src[i] || !w.discarded[i]) continue;
      w.discarded[i] = false;
      if (host0 != w.r.addr(w.first)) continue;
      Entry &e = ents[w.first + i];
      uint64_t cur = e.load(std::memory_order_acquire);
      while (!entry_transition(e, cur, entry::with_loc(cur, Loc::NONE))) {
      }
      if (!(cur & entry::GONE)) madvise(host0 + i * kPageSize, kPageSize, MADV_DONTNEED);  // GONE: not ours
      w.src[i] = 0;
      ++w.gave_back;
    }
  }
  for (size_t i = 0; i < w.n; ++i) {
    if (!w.src[i]) continue;
    Entry &e = ents[w.first + i];
    uint64_t cur = e.load(std::memory_order_acquire);  // only GONE may have changed
    // A page on the device stays DIRTY even when written: a kernel may write it again at any
    // time, unseen (and it comes home writable).
    if (w.drop && w.good[i]) {  // written: off the device, in the file again
      while (!entry_transition(e, cur, entry::with_loc(cur, Loc::NONE))) {
      }
      ++w.dropped;
      continue;
    }
    const bool clean = w.good[i] && entry::loc(cur) == Loc::HOST;
    const uint64_t drop = entry::LOCKED | entry::FLUSH | entry::CANCEL | (clean ? entry::DIRTY : 0);
    while (!entry_transition(e, cur, cur & ~drop)) {
    }
  }
}

// One write-back batch over [first, first + n) (inside one block). *skipped: pages to try again.
int write_back_block(Runtime &rt, Range &r, size_t first, size_t n, uint32_t *skipped, bool drop = false,
                     uint32_t *dropped = nullptr) {
  DBlock *db = r.dblock(first);
  *skipped = 0;
  if (!db) return 0;  // a block never used holds no page of its own: nothing DIRTY
  r.batches.fetch_add(1);  // seen by an mremap of r (remap.cpp)
  rt.devmem.begin(db, false);
  WriteBack w{rt, r, first, n, {}, {}};
  w.drop = drop;
  const uint64_t t0 = now_ns();
  nvtx::Range range(Ev::write_back, nvtx::Cat::storage, n * kPageSize);
  wb_collect(w);
  if (w.held) {
    wb_unmap(w);
    wb_copy(w);
    wb_finalize(w);
    if (w.dropped) db->resident.fetch_sub(w.dropped, std::memory_order_acq_rel);
    if (w.gave_back) rt.budget.sub(db, w.gave_back);
    rt.stats.add(rt.stats.bytes_to_storage, w.written);
    if (rt.trace.on()) {
      char args[160];
      std::snprintf(args, sizeof args, "\"range\":\"%#lx\",\"first_page\":%zu,\"pages\":%u,\"bytes\":%llu,\"error\":%d",
                    static_cast<unsigned long>(r.start()), first, w.held, static_cast<unsigned long long>(w.written),
                    w.error);
      rt.trace.event(ev_name(Ev::write_back), "storage", t0, now_ns() - t0, args);
    }
  }
  range.end();
  rt.devmem.end(db);
  if (w.held) rt.uffd.wake(r.addr(first), n * kPageSize);
  batch_done(r);
  *skipped = w.skipped;
  if (dropped) *dropped = w.dropped;
  return w.error;
}

// After a failed fdatasync: every page of the span with data of its own is DIRTY again (some
// were clean before: written once more, harmless). Pages held by others are left: a batch
// moving a page keeps DIRTY, a write-back running writes it.
void redirty(Range &r, size_t first, size_t end) {
  for (size_t p = first; p < end; p = r.block_end(p)) {
    if (!r.dblock(p)) continue;
    for (size_t k = p; k < std::min(end, r.block_end(p)); ++k) {
      Entry &e = r.entries[k];
      uint64_t old = 0;
      const uint64_t cur = e.load(std::memory_order_acquire);
      const Loc l = entry::loc(cur);
      if ((cur & (entry::DIRTY | entry::GONE)) || l == Loc::NONE || !entry_try_lock(e, &old)) continue;
      if (entry::loc(old) != Loc::NONE) entry_mark_dirty(e, old);
      entry_unlock(e);
    }
  }
}

}  // namespace

uint32_t write_back_device_pages(Runtime &rt, Range &r, size_t first, size_t n) {
  if (!r.writable()) return 0;
  uint32_t skipped = 0, dropped = 0;
  write_back_block(rt, r, first, n, &skipped, true, &dropped);
  return dropped;
}

int flush_span(Runtime &rt, Range &r, size_t first, size_t n, bool sync) {
  if (!r.writable()) return 0;
  r.flushing.fetch_add(1, std::memory_order_acq_rel);
  const size_t end = first + n;
  int first_error = 0;
  for (size_t p = first; p < end;) {
    const size_t stop = std::min(end, r.block_end(p));
    const int rc = retry_while_skipped([&](uint32_t *skipped) { return write_back_block(rt, r, p, stop - p, skipped); });
    if (rc && !first_error) first_error = rc;
    p = stop;
  }
  if (sync) {
    int err = 0;
    Ring *ring = Ring::mine(&err);
    IoOp op;
    op.fd = r.file_fd;
    op.sync = true;
    const int rc = ring ? ring->run(&op, 1) : err;
    if (rc) {
      log(Level::warn, "fdatasync of a file range failed: %s; its pages stay dirty", strerror(-rc));
      redirty(r, first, end);
      if (!first_error) first_error = io_error(rc);
    }
  }
  r.flushing.fetch_sub(1, std::memory_order_acq_rel);
  return first_error;
}

}  // namespace umrt::rt
