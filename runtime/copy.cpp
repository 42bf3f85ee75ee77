// copy.cpp — protocol step 3: allocate destination frames into dst[], coalesce contiguous
// selected pages into runs (one copy each), submit them through the backend in one batch, wait.
//
// to_device: the block's chunk (DevMem may evict LRU blocks for it), frames from the backend
//   (fault injection point), then HOST runs are copied and NONE runs zero-filled on the device
//   (a file range's NONE runs are read from the file into staging and copied from there).
// to_host:   DEVICE runs go device -> staging -> into the range: copied into kept host pages
//   and moved in (host_pool.h), else UFFDIO_COPY (fresh pages) (the backend calls
//   the installer as each run is staged; the ioctl maps atomically and the installer publishes
//   the mapped pages HOST, still locked, right after; faulting threads are woken once the batch
//   is finalized);
//   NONE runs (fault path) are mapped with UFFDIO_ZEROPAGE (read faults) or UFFDIO_COPY of
//   zeros (write faults: writable at once, no COW fault per page after); a file range's NONE
//   runs (fault path and prefetch) are read from the file and UFFDIO_COPYed (write-protected
//   when the range is writable: clean until written); GONE pages dropped.
// A failed allocation or copy clears MIGRATE for those pages only; they will be restored.
#include <sys/mman.h>

#include <cerrno>
#include <cstdio>

#include "batch.h"
#include "nvtx.h"
#include "storage/file_store.h"
#include "threads.h"

namespace umrt::rt {
namespace {

// 2 MiB that read as zero (the kernel's zero page behind a read-only mapping): the source of
// UFFDIO_COPY when NONE pages are materialised writable.
const void *zero_block() {
  static const void *z = [] {
    void *p = mmap(nullptr, kBlockSize, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    return p == MAP_FAILED ? nullptr : p;
  }();
  return z;
}

bool sel(const Batch &b, size_t i) { return b.src[i] & entry::MIGRATE; }

// The batch slot of a host address of an op. The ops of one copy step are all built from one
// snapshot of the range's address (host0 = page b.first then): the range may move (mremap) while
// they run, and an index computed from its start afresh would point at other pages.
size_t slot_of(const char *host0, const void *host) {
  return static_cast<size_t>(static_cast<const char *>(host) - host0) >> kPageShift;
}

// A storage read of a batch in the Chrome trace (UMRT_TRACE), inside its batch's copy step.
void trace_read(Batch &b, Ev name, uint64_t t0, size_t i, size_t j, uint64_t bytes, int rc) {
  char args[160];
  std::snprintf(args, sizeof args, "\"range\":\"%#lx\",\"first_page\":%zu,\"pages\":%zu,\"bytes\":%llu,\"error\":%d",
                static_cast<unsigned long>(b.r->start()), b.first + i, j - i, static_cast<unsigned long long>(bytes), rc);
  b.rt->trace.event(ev_name(name), "storage", t0, now_ns() - t0, args);
}

// Pages [i, j) of a file range's batch read from the file into stage + i pages (stage: the
// thread's staging buffer, nullptr when none could be had). Returns 0 or -errno (tagged io_error
// when the read failed); *ok: the first pages good all the same (file_store.h).
int read_file_run(Batch &b, char *stage, size_t i, size_t j, size_t *ok) {
  uint64_t got = 0;
  *ok = 0;
  const uint64_t t0 = b.rt->trace.on() ? now_ns() : 0;
  nvtx::Range range(Ev::read_file, nvtx::Cat::storage, (j - i) * kPageSize);
  const int rc = stage ? io_error(read_file_pages(*b.r, b.first + i, j - i, stage + i * kPageSize, &got, ok)) : -ENOMEM;
  b.rt->stats.add(b.rt->stats.bytes_from_storage, got);
  range.end();
  if (t0) trace_read(b, Ev::read_file, t0, i, j, got, rc);
  return rc;
}

// Pages [i, j) of an anonymous batch read from the swap file into stage + i pages. ok[k]: page k
// read. Returns 0 or the first error (tagged).
int read_swap_run(Batch &b, char *stage, size_t i, size_t j, bool *ok) {
  uint64_t slots[kBlockPages];
  bool want[kBlockPages];
  for (size_t k = 0; k < b.n; ++k) {
    want[k] = k >= i && k < j;
    slots[k] = want[k] ? entry::frame(b.src[k]) : 0;
  }
  uint64_t got = 0;
  const uint64_t t0 = b.rt->trace.on() ? now_ns() : 0;
  nvtx::Range range(Ev::read_swap, nvtx::Cat::storage, (j - i) * kPageSize);
  const int rc = b.rt->swap.read(slots, want, b.n, stage, ok, &got);
  b.rt->stats.add(b.rt->stats.bytes_from_storage, got);
  range.end();
  if (t0) trace_read(b, Ev::read_swap, t0, i, j, got, rc);
  return rc;
}

void drop(Batch &b, size_t i, size_t j) {
  for (size_t k = i; k < j; ++k) {
    b.src[k] &= ~entry::MIGRATE;
    b.dst[k] &= ~entry::MIGRATE;
  }
}

// Maps staged device->host runs into the range and publishes each mapped page HOST (still
// locked; finalize unlocks) right after the ioctl returns, with the statistics, so a page is
// mapped-but-not-yet-HOST only for the few microseconds of that loop, not for the rest of the
// batch. (Publishing *before* mapping would close even that, but an unmapped HOST|LOCKED page
// must keep meaning "the source of a host->device batch" to the fault service.) Runs on
// copy-engine threads too: pages of one batch are disjoint between calls, counters are atomic.
struct BatchInstaller final : Installer {
  Batch &b;
  char *host0;  // the address of page b.first the ops were built with
  // Kept host pages to map first (host_pool.h): slots this batch holds, enough for its pages
  // where the pool has them; shared by its pieces (each claims pages atomically).
  static constexpr size_t kMaxSlots = 4;
  HostPool::Slot *slots[kMaxSlots] = {};
  size_t nslots = 0;
  BatchInstaller(Batch &bb, char *h0) : b(bb), host0(h0) {}
  void take_slots(size_t pages) {
    HostPool &pool = b.rt->host_pool;
    if (!pool.on()) return;
    for (size_t got = 0; got < pages && nslots < kMaxSlots;) {
      HostPool::Slot *s = pool.take_for_fill();
      if (!s) break;
      slots[nslots++] = s;
      got += s->count.load(std::memory_order_relaxed);
    }
  }
  void give_slots() {
    for (size_t k = 0; k < nslots; ++k) b.rt->host_pool.give(slots[k]);
    nslots = 0;
  }
  int install(CopyOp &op, const void *staged) override {
    // Never wait out a pending munmap/mremap event here (EAGAIN): the fault service waits for
    // this copy and must read that event; and once it is read the range may be elsewhere, and
    // another range where it was (a retry at host0 would map this run into that one). The run
    // fails; a fault is retried by its thread, any other batch is retried at the range's
    // address of then (moved).
    const bool fault = b.why == Why::fault || b.why == Why::fault_write;
    Uffd::NoWaitScope nowait(true);
    AsyncSignalsBlocked nosig;  // (InstallGate)
    FaultService::InstallGate gate(b.rt->faults);
    const size_t p0 = slot_of(host0, op.host);
    // The range moved (mremap) since the ops were built: host0 may already be someone else's
    // memory, even another managed range. The run is not installed (its pages stay on the
    // device); the batch's caller tries them again at the new address.
    if (b.r->addr(b.first) != host0) {
      op.done = 0;
      b.moved.store(true, std::memory_order_relaxed);
      return -EAGAIN;
    }
    // Kept host pages first (filled, then moved in), fresh ones (UFFDIO_COPY) for the rest.
    size_t done = 0;
    bool refused = false;
    for (size_t k = 0; k < nslots && done < op.len && !refused; ++k)
      done += b.rt->host_pool.fill(*slots[k], static_cast<char *>(op.host) + done,
                                   static_cast<const char *>(staged) + done, op.len - done, true, &refused);
    int rc = 0;
    if (done < op.len) {
      size_t copied = 0;
      rc = b.rt->uffd.copy(static_cast<char *>(op.host) + done, static_cast<const char *>(staged) + done,
                           op.len - done, true, &copied);  // woken after finalize
      done += copied;
    }
    if (rc == -EAGAIN && !fault) b.moved.store(true, std::memory_order_relaxed);
    const size_t nd = done / kPageSize;
    for (size_t k = 0; k < nd; ++k) {
      b.installed[p0 + k] = true;
      Entry &e = b.r->entries[b.first + p0 + k];
      uint64_t cur = e.load(std::memory_order_acquire);
      while (!entry_transition(e, cur, entry::with_loc(cur, Loc::HOST) | entry::LOCKED)) {
      }
    }
    op.done = done;
    b.rt->stats.add(b.rt->stats.bytes_to_host, done);
    b.rt->stats.add(b.rt->stats.pages_to_host, nd);
    if (rc) log(Level::warn, "UFFDIO_COPY of %zu bytes at %p failed after %zu: %d", op.len, op.host, done, rc);
    return rc;
  }
};

void copy_to_device(Batch &b) {
  Runtime &rt = *b.rt;
  size_t nsel = 0;
  for (size_t i = 0; i < b.n; ++i) nsel += sel(b, i);
  if (nsel == 0) return;
  int rc = rt.devmem.ensure_chunk(b.db, b.span);
  if (!rc) rc = rt.backend->frames_alloc(nsel);
  if (rc) {
    drop(b, 0, b.n);
    b.fail(rc);
    return;
  }
  const uint32_t chunk = b.db->chunk;  // stable: this batch holds the block busy
  char *const host0 = b.r->addr(b.first);
  // A file range's NONE pages are in its file: read into staging (page i at stage + i pages)
  // and copied from there, never mapped on the host.
  // (SWAP pages the same way: read from the swap file into staging.)
  bool any_swap = false;
  for (size_t i = 0; i < b.n && !any_swap; ++i) any_swap = sel(b, i) && entry::loc(b.src[i]) == Loc::SWAP;
  // Staging registered with the device (io_staging.h) is copied from in place.
  bool pinned = false;
  char *const stage = b.r->file() || any_swap ? device_staging(&pinned) : nullptr;
  auto staged = [&](const void *p) {
    return stage && static_cast<const char *>(p) >= stage && static_cast<const char *>(p) < stage + kBlockSize;
  };
  CopyOp ops[kBlockPages];
  size_t nops = 0;
  for (size_t i = 0; i < b.n;) {
    if (!sel(b, i)) {
      ++i;
      continue;
    }
    const Loc l = entry::loc(b.src[i]);
    const bool none = l == Loc::NONE;
    size_t j = i;
    while (j < b.n && sel(b, j) && entry::loc(b.src[j]) == l) {
      b.dst[j] = entry::make(Loc::DEVICE, b.r->frame(b.first + j, chunk)) | entry::MIGRATE;
      ++j;
    }
    if (l == Loc::SWAP) {
      // In the swap file: read into staging (one submission), copied from there.
      bool ok[kBlockPages] = {};
      const int rc = stage ? read_swap_run(b, stage, i, j, ok) : -ENOMEM;
      for_runs(j - i, [&](size_t k) { return ok[i + k]; }, [&](size_t a, size_t z) {
        ops[nops++] = {CopyOp::H2D, stage + (i + a) * kPageSize, b.r->dev_addr(b.first + i + a), (z - a) * kPageSize, 0, 0, pinned};
      });
      size_t in = 0;
      for (size_t k = i; k < j; ++k) {
        if (!ok[k]) drop(b, k, k + 1);
        in += ok[k];
      }
      rt.stats.add(rt.stats.swap_ins, in);
      if (rc) b.fail(rc);
    } else if (none && b.r->file()) {
      size_t ok = 0;
      const int rc = read_file_run(b, stage, i, j, &ok);
      if (ok) ops[nops++] = {CopyOp::H2D, stage + i * kPageSize, b.r->dev_addr(b.first + i), ok * kPageSize, 0, 0, pinned};
      if (rc) {
        drop(b, i + ok, j);
        b.fail(rc);
      }
    } else {
      ops[nops++] = {none ? CopyOp::ZERO : CopyOp::H2D, host0 + i * kPageSize,
                     b.r->dev_addr(b.first + i), (j - i) * kPageSize, 0, 0};
    }
    i = j;
  }
  rt.backend->transfer(ops, nops, nullptr);
  if (b.r->addr(b.first) != host0) {
    // The range moved (mremap) while the copies ran: what they read at the old address after the
    // move may be someone else's memory. Nothing is published; the prefetch tries again.
    drop(b, 0, b.n);
    b.moved.store(true, std::memory_order_relaxed);
    return;
  }
  uint64_t zeroed = 0;  // bytes_to_device counts the pages that moved (finalize)
  for (size_t k = 0; k < nops; ++k) {
    const CopyOp &op = ops[k];
    const size_t i = slot_of(staged(op.host) ? stage : host0, op.host);
    if (op.status) {
      drop(b, i, i + op.len / kPageSize);
      b.fail(op.status);
    } else if (op.dir == CopyOp::ZERO) {
      zeroed += op.len / kPageSize;
    }
  }
  rt.stats.add(rt.stats.zero_fills, zeroed);
}

void copy_to_host(Batch &b) {
  Runtime &rt = *b.rt;
  char *const host0 = b.r->addr(b.first);
  CopyOp ops[kBlockPages];
  size_t nops = 0;
  uint64_t zeroed = 0;
  for (size_t i = 0; i < b.n;) {
    if (!sel(b, i)) {
      ++i;
      continue;
    }
    const uint64_t s = b.src[i];
    if (s & entry::GONE) {  // the host address is gone: release the frame, nothing to copy
      b.dst[i] = entry::with_loc(s, Loc::NONE) | entry::MIGRATE;
      b.installed[i] = true;
      ++i;
      continue;
    }
    const Loc l = entry::loc(s);
    size_t j = i;
    while (j < b.n && sel(b, j) && entry::loc(b.src[j]) == l && !(b.src[j] & entry::GONE)) {
      b.dst[j] = entry::make(Loc::HOST) | entry::MIGRATE;
      ++j;
    }
    if (l == Loc::SWAP || l == Loc::NONE) {
      // A file range's NONE pages are in its file, SWAP pages in the swap file: read into
      // staging first (outside the gate: I/O takes long), then mapped like zeros would be.
      const char *from = nullptr;
      if (l == Loc::SWAP) {
        char *stage = file_staging();
        bool ok[kBlockPages] = {};
        const int rc = stage ? read_swap_run(b, stage, i, j, ok) : -ENOMEM;
        if (rc) b.fail(rc);
        size_t good = 0;
        while (i + good < j && ok[i + good]) ++good;  // the first pages read are mapped, the rest restored
        if (!good) {
          i = j;
          continue;
        }
        j = i + good;
        from = stage + i * kPageSize;
      } else if (b.r->file()) {
        char *stage = file_staging();
        size_t ok = 0;
        const int rc = read_file_run(b, stage, i, j, &ok);
        if (rc) b.fail(rc);  // the pages read before the failure are mapped, the rest restored
        if (!ok) {
          i = j;
          continue;
        }
        j = i + ok;
        from = stage + i * kPageSize;
      }
      Uffd::NoWaitScope nowait(true);  // as in the installer: no retry at a stale address
      AsyncSignalsBlocked nosig;
      FaultService::InstallGate gate(rt.faults);
      if (b.r->addr(b.first) != host0) {  // moved since host0 was taken: try again there
        b.moved.store(true, std::memory_order_relaxed);
        i = j;
        continue;
      }
      // Unmapped by the user while the file was read (the address may be another's by now).
      bool gone = false;
      for (size_t k = i; from && k < j && !gone; ++k)
        gone = b.r->entries[b.first + k].load(std::memory_order_acquire) & entry::GONE;
      if (gone) {
        i = j;
        continue;
      }
      size_t done = 0;
      // A writable file range's pages come in clean, so write-protected: the first write
      // faults and marks the page DIRTY (fault.cpp serve_wp).
      int rc = from ? rt.uffd.copy(host0 + i * kPageSize, from, (j - i) * kPageSize, true, &done, l == Loc::NONE && b.r->writable())
               : b.why == Why::fault_write
                   ? rt.uffd.copy(host0 + i * kPageSize, zero_block(), (j - i) * kPageSize, true, &done)
                   : rt.uffd.zeropage(host0 + i * kPageSize, (j - i) * kPageSize, true, &done);
      if (rc == -EEXIST && !from) {  // already mapped (a duplicate fault raced us): count it as mapped
        done = (j - i) * kPageSize;
        rc = 0;
      }
      // A file's bytes: only the pages copied count; the one found mapped and the rest are
      // restored (NONE: read again by the next access), never said HOST over a hole.
      for (size_t k = 0; k < done / kPageSize; ++k) b.installed[i + k] = true;
      if (!from) zeroed += done / kPageSize;
      if (l == Loc::SWAP) rt.stats.add(rt.stats.swap_ins, done / kPageSize);
      if (rc == -EAGAIN && b.why != Why::fault && b.why != Why::fault_write)
        b.moved.store(true, std::memory_order_relaxed);
      if (rc) b.fail(rc);
    } else {
      ops[nops++] = {CopyOp::D2H, host0 + i * kPageSize, b.r->dev_addr(b.first + i),
                     (j - i) * kPageSize, 0, 0};
    }
    i = j;
  }
  BatchInstaller inst(b, host0);  // counts bytes_to_host / pages_to_host as it maps
  size_t d2h_pages = 0;
  for (size_t k = 0; k < nops; ++k) d2h_pages += ops[k].len / kPageSize;
  inst.take_slots(d2h_pages);
  rt.backend->transfer(ops, nops, &inst);
  inst.give_slots();
  for (size_t k = 0; k < nops; ++k)
    if (ops[k].status) b.fail(ops[k].status);
  for (size_t i = 0; i < b.n; ++i)
    if (sel(b, i) && !b.installed[i]) drop(b, i, i + 1);
  rt.stats.add(rt.stats.zero_fills, zeroed);
}

}  // namespace

void copy(Batch &b) {
  if (b.dir == Dir::to_device)
    copy_to_device(b);
  else
    copy_to_host(b);
}

}  // namespace umrt::rt
