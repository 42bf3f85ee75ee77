// devmem.cpp — chunk allocation, LRU eviction (oversubscription) and small-range packing.
#include "devmem.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <unordered_map>

#include "nvtx.h"

namespace umrt::rt {

void DevMem::init(Backend *be, EvictFn fn, void *ctx, uint64_t pool_bytes) {
  be_ = be;
  evict_ = fn;
  ctx_ = ctx;
  nchunks_ = static_cast<uint32_t>(be->capacity() / kBlockSize);
  pool_max_ = static_cast<uint32_t>(std::min<uint64_t>(pool_bytes / kBlockSize, nchunks_));
  free_.clear();
  bare_.clear();
  for (uint32_t c = nchunks_; c-- > 0;) bare_.push_back(c);  // low indices first
}

void DevMem::shutdown() {
  if (!packs_.empty()) be_->device_sync();  // pack chunks are freed below (see sync_before_release)
  std::lock_guard g(mu_);
  for (auto &[k, p] : packs_) {
    free_chunk_locked(p.get());  // a device VA range is freed only once nothing is mapped in it
    be_->window_destroy(&p->pack_window);
  }
  packs_.clear();
  room_.clear();
  lru_.clear();
  for (uint32_t c : free_) be_->chunk_release(c);  // the pool goes back to the system
  bare_.insert(bare_.end(), free_.begin(), free_.end());
  free_.clear();
}

int DevMem::setup_range(Range &r) {
  if (r.npages >= kBlockPages) {
    size_t nblocks = (r.npages + kBlockPages - 1) / kBlockPages;
    int rc = be_->window_create(nblocks * kBlockSize, &r.window);
    if (rc) return rc;
    r.packed = false;
    r.dev_base = static_cast<char *>(r.window.base);
    // Blocks are made on first use (Range::block_at): a reservation costs what is touched.
    if (r.blocks.init(nblocks)) {
      be_->window_destroy(&r.window);
      return -ENOMEM;
    }
    return 0;
  }
  // Small range: the pack whose longest free run fits it most tightly, first fit inside.
  std::lock_guard g(mu_);
  DBlock *pack = nullptr;
  size_t at = 0;
  auto it = room_.lower_bound({static_cast<uint32_t>(r.npages), nullptr});
  if (it != room_.end()) {
    pack = it->second;
    for (size_t i = 0, run = 0; i < kBlockPages; ++i) {
      run = pack->used[i] ? 0 : run + 1;
      if (run == r.npages) {
        at = i + 1 - run;
        break;
      }
    }
  } else {
    auto p = std::make_unique<DBlock>();
    p->is_pack = true;
    int rc = be_->window_create(kBlockSize, &p->pack_window);
    if (rc) return rc;
    p->win = &p->pack_window;
    pack = p.get();
    packs_.emplace(pack, std::move(p));
    room_.insert({pack->max_run, pack});
    at = 0;
  }
  for (size_t i = 0; i < r.npages; ++i) pack->used.set(at + i);
  update_room_locked(pack);
  pack->segs.push_back({&r, 0, r.npages});
  r.packed = true;
  r.pack = pack;
  r.pack_first = at;
  r.dev_base = static_cast<char *>(pack->pack_window.base) + at * kPageSize;
  return 0;
}

namespace {
// The longest run of free slots in pack p.
uint32_t longest_free_run(const DBlock &p) {
  uint32_t best = 0;
  for (uint32_t i = 0, run = 0; i < kBlockPages; ++i) {
    run = p.used[i] ? 0 : run + 1;
    best = std::max(best, run);
  }
  return best;
}
}  // namespace

void DevMem::update_room_locked(DBlock *p) {
  const uint32_t best = longest_free_run(*p);
  if (best == p->max_run) return;
  room_.erase({p->max_run, p});
  p->max_run = best;
  if (best) room_.insert({best, p});
}

void DevMem::put_free_locked(uint32_t c) {
  // Kept ready (its memory stays allocated: sim arena pages, a cuda handle) up to the pool's
  // watermark; past it the memory goes back to the system.
  if (free_.size() < pool_max_) {
    free_.push_back(c);
  } else {
    be_->chunk_release(c);
    bare_.push_back(c);
  }
}

void DevMem::free_chunk_locked(DBlock *b) {
  if (b->chunk == kNoChunk) return;
  be_->chunk_unmap(b->win, b->win_offset);
  put_free_locked(b->chunk);
  b->chunk = kNoChunk;
  lru_.erase(b->lru_it);
  cv_.notify_all();
}

// A chunk is unmapped only once the device work that could still touch it is done: on a GPU,
// unmapping memory a queued kernel reads or writes is a sticky illegal-address error in the
// application's context (cuMemUnmap does not wait). So a free that gives up chunks first waits
// for the device, as cudaFree does (umrt.h, umrt_free). Not under mu_: the wait may be long.
void DevMem::sync_before_release(Range &r) {
  bool holds = false;
  {
    std::lock_guard g(mu_);
    r.each_block([&](DBlock &b) {
      // A pack's chunk goes only with its last range.
      holds = holds || (b.chunk != kNoChunk && (!b.is_pack || b.segs.size() == 1));
    });
  }
  if (!holds) return;
  if (int rc = be_->device_sync())
    log(Level::warn, "freeing device memory: waiting for the device failed (%d); releasing anyway", rc);
}

void DevMem::teardown_range(Range &r) {
  sync_before_release(r);
  std::unique_lock lk(mu_);
  if (!r.packed) {
    r.each_block([&](DBlock &b) {
      wait_idle(lk, b);
      free_chunk_locked(&b);
    });
    lk.unlock();
    be_->window_destroy(&r.window);
    return;
  }
  DBlock *p = r.pack;
  if (!p) return;
  wait_idle(lk, *p);
  uint32_t mine = 0;
  for (size_t i = 0; i < r.npages; ++i)
    if (entry::loc(r.entries[i].load(std::memory_order_acquire)) == Loc::DEVICE) ++mine;
  p->resident.fetch_sub(mine, std::memory_order_acq_rel);
  for (size_t i = 0; i < r.npages; ++i) p->used.reset(r.pack_first + i);
  update_room_locked(p);
  auto &s = p->segs;
  s.erase(std::remove_if(s.begin(), s.end(), [&](const Segment &x) { return x.range == &r; }), s.end());
  r.pack = nullptr;
  if (s.empty()) {
    free_chunk_locked(p);
    be_->window_destroy(&p->pack_window);
    room_.erase({p->max_run, p});
    packs_.erase(p);
  }
}

void DevMem::wait_idle(std::unique_lock<std::mutex> &lk, DBlock &b) {
  while (b.busy.load() != 0) cv_.wait_for(lk, std::chrono::milliseconds(1));
}

void DevMem::begin(DBlock *b, bool to_device) {
  if (!to_device) {  // never waits: the fault path (see DBlock)
    b->busy.fetch_add(1);
    return;
  }
  std::unique_lock lk(mu_);
  cv_.wait(lk, [&] { return !b->evicting; });
  b->busy.fetch_add(1);
}

void DevMem::end(DBlock *b) {
  const int was = b->busy.fetch_sub(1);
  UMRT_CHECK(was > 0, "end() of a block that is not busy");
  if (was == 1) cv_.notify_all();  // without mu_: waiters re-check on a timeout (wait_idle)
}

void DevMem::touch(DBlock *b, uint64_t span) {
  std::lock_guard g(mu_);
  b->span = span;
  if (b->chunk != kNoChunk) lru_.splice(lru_.end(), lru_, b->lru_it);
}

void DevMem::got_chunk_locked(DBlock *b, uint32_t c) {
  b->chunk = c;
  b->lru_it = lru_.insert(lru_.end(), b);
  if (b->evicted_before) {  // it was evicted and is needed on the device again
    b->evicted_before = false;
    refetches_.fetch_add(1, std::memory_order_relaxed);
    for (const Segment &s : b->segs) s.range->refetches.fetch_add(1, std::memory_order_relaxed);
  }
}

int DevMem::ensure_chunk(DBlock *b, uint64_t span) {
  std::unique_lock lk(mu_);
  int failures = 0;
  int last_err = -ENOMEM;
  bool no_fresh = false;  // a fresh chunk failed: evict rather than try the next fresh one
  for (;;) {
    if (b->chunk != kNoChunk) return 0;
    // A ready chunk first (its memory is allocated already), else one never used or released.
    if (!free_.empty() || (!bare_.empty() && !no_fresh)) {
      std::vector<uint32_t> &from = free_.empty() ? bare_ : free_;
      uint32_t c = from.back();
      int rc = be_->chunk_map(b->win, b->win_offset, c, &from == &bare_);
      if (rc == -ENOMEM && &from == &bare_) {
        // The device has less memory than at init (another user took it): this chunk cannot be
        // had, capacity shrinks by it, and the batch evicts the least recently used block
        // instead (a later call may find fresh memory again).
        from.pop_back();
        const uint32_t lost = retired_.fetch_add(1, std::memory_order_relaxed) + 1;
        if (!warned_retired_) {
          warned_retired_ = true;
          log(Level::warn, "device memory: a 2 MiB chunk could not be created (out of memory: the application or "
              "another process took device memory after umrt_init); capacity now %llu MiB, evicting to make room",
              static_cast<unsigned long long>(uint64_t{nchunks_ - lost} * kBlockSize >> 20));
        }
        no_fresh = true;
        last_err = -ENOMEM;
        continue;
      }
      if (rc) return rc;
      from.pop_back();
      got_chunk_locked(b, c);
      return 0;
    }
    DBlock *v = nullptr;
    for (DBlock *d : lru_)
      if (d != b && d->busy == 0 && !d->evicting && (span == 0 || d->span != span)) {
        v = d;
        break;
      }
    if (!v) {
      // Every chunk is in use by a batch in flight: wait for one to finish (bounded; a batch
      // ending notifies without the lock, so the timeout also covers a missed notification).
      if (++failures > 500) return last_err;
      cv_.wait_for(lk, std::chrono::milliseconds(2));
      continue;
    }
    v->busy.fetch_add(1);
    v->evicting = true;
    std::vector<std::pair<RangePtr, Segment>> segs;
    for (const Segment &s : v->segs) segs.emplace_back(s.range->shared_from_this(), s);
    lk.unlock();
    int rc = 0;
    {
      uint64_t pages = 0;
      for (auto &seg : segs) pages += seg.second.npages;
      nvtx::Range range(Ev::eviction, nvtx::Cat::eviction, pages * kPageSize);  // its batches nested
      for (auto &[rp, s] : segs) {
        int e = evict_(ctx_, *rp, s.first, s.npages);
        if (e && !rc) rc = e;
      }
    }
    segs.clear();
    lk.lock();
    v->evicting = false;
    v->busy.fetch_sub(1);
    cv_.notify_all();
    if (v->busy == 0 && v->chunk != kNoChunk && v->resident.load(std::memory_order_acquire) == 0) {
      // The victim is empty: its chunk (memory and all) goes to b, or to the pool if another
      // batch on b gave b a chunk meanwhile.
      be_->chunk_unmap(v->win, v->win_offset);
      const uint32_t c = v->chunk;
      v->chunk = kNoChunk;
      lru_.erase(v->lru_it);
      evictions_.fetch_add(1, std::memory_order_relaxed);
      v->evicted_before = true;
      for (const Segment &s : v->segs) s.range->evictions.fetch_add(1, std::memory_order_relaxed);
      if (b->chunk == kNoChunk) {
        int mrc = be_->chunk_map(b->win, b->win_offset, c);
        if (mrc == 0) {
          got_chunk_locked(b, c);
          return 0;
        }
        last_err = mrc;
      }
      put_free_locked(c);
      continue;
    }
    // The victim kept pages (a copy failed, or a new batch raced in): try again, with the next
    // least recently used block first (a block whose copies keep failing must not be the only
    // candidate forever).
    if (rc) last_err = rc;
    if (v->chunk != kNoChunk) lru_.splice(lru_.end(), lru_, v->lru_it);
    if (++failures > 500) return last_err;
  }
}

uint64_t DevMem::bytes_in_use() {
  std::lock_guard g(mu_);
  return uint64_t{nchunks_ - retired_.load() - static_cast<uint32_t>(free_.size() + bare_.size())} * kBlockSize;
}

bool DevMem::validate(const std::vector<RangePtr> &ranges, std::string *why) {
  std::unique_lock g(mu_);
  // Quiescent state expected: let batches in flight (one that a reader's fault is waiting on
  // while a test validates from another thread, say) finish first (bounded).
  auto idle = [&] {
    for (auto &[k, p] : packs_)
      if (p->busy) return false;
    for (const RangePtr &r : ranges) {
      bool busy = false;
      r->each_block([&](DBlock &b) { busy = busy || b.busy; });
      if (busy) return false;
    }
    return true;
  };
  cv_.wait_for(g, std::chrono::seconds(5), idle);
  char buf[256];
  auto fail = [&](const char *fmt, auto... a) {
    if constexpr (sizeof...(a) == 0) snprintf(buf, sizeof buf, "%s", fmt);
    else snprintf(buf, sizeof buf, fmt, a...);
    *why = buf;
    return false;
  };
  std::vector<int> owner(nchunks_, 0);
  if (free_.size() > pool_max_) return fail("%zu chunks kept ready, above the pool's %u", free_.size(), pool_max_);
  for (uint32_t c : bare_) {
    if (c >= nchunks_) return fail("free chunk %u out of range", c);
    if (owner[c]++) return fail("chunk %u listed free twice", c);
  }
  for (uint32_t c : free_) {
    if (c >= nchunks_) return fail("free chunk %u out of range", c);
    if (owner[c]++) return fail("chunk %u listed free twice", c);
  }
  size_t in_lru = 0;
  std::unordered_map<const DBlock *, uint32_t> counted;
  auto check_block = [&](const DBlock *b) -> bool {
    if (b->chunk != kNoChunk) {
      if (b->chunk >= nchunks_) return fail("block chunk %u out of range", b->chunk);
      if (owner[b->chunk]++) return fail("chunk %u owned twice (or also free)", b->chunk);
      ++in_lru;
    }
    if (b->busy < 0) return fail("negative busy count");
    if (b->evicting && b->busy == 0) return fail("evicting block without busy");
    return true;
  };
  for (auto &[k, p] : packs_) {
    if (!check_block(p.get())) return false;
    const uint32_t best = longest_free_run(*p);
    if (best != p->max_run) return fail("pack's longest free run is %u, recorded %u", best, p->max_run);
    if ((best > 0) != (room_.count({best, p.get()}) > 0)) return fail("pack with %u free slots in a row %s the room index", best, best ? "missing from" : "listed in");
  }
  if (room_.size() > packs_.size()) return fail("room index lists %zu packs, there are %zu", room_.size(), packs_.size());
  // Is the page at a mapped without a userfaultfd write-protection (/proc/self/pagemap: bit 63
  // present, bit 57 uffd-wp)? Unknown (no pagemap) counts as no.
  int pagemap = -1;
  auto mapped_writable = [&](const void *a) {
    if (pagemap < 0) pagemap = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
    uint64_t v = 0;
    const off_t at = static_cast<off_t>(reinterpret_cast<uintptr_t>(a) / kPageSize * sizeof v);
    if (pagemap < 0 || pread(pagemap, &v, sizeof v, at) != sizeof v) return false;
    return (v >> 63 & 1) && !(v >> 57 & 1);
  };
  struct CloseFd {
    int &fd;
    ~CloseFd() {
      if (fd >= 0) close(fd);
    }
  } close_pagemap{pagemap};
  for (const RangePtr &r : ranges) {
    bool ok = true;
    r->each_block([&](DBlock &b) { ok = ok && (b.is_pack || check_block(&b)); });
    if (!ok) return false;
    // Entries the kernel never populated are zero (NONE): valid, unlocked, not on the device.
    r->entries.for_each_populated([&](size_t first, size_t end) {
      for (size_t i = first; ok && i < end && i < r->npages; ++i) {
        uint64_t e = r->entries[i].load(std::memory_order_acquire);
        const char *w = nullptr;
        if (!entry_valid(e, &w)) ok = fail("range %p page %zu: %s", (void *)r->start(), i, w);
        else if (entry::locked(e)) ok = fail("range %p page %zu locked while quiescent", (void *)r->start(), i);
        else if ((e & entry::DIRTY) && !r->writable())
          ok = fail("range %p page %zu DIRTY outside a writable file range", (void *)r->start(), i);
        else if (r->writable() && entry::loc(e) == Loc::DEVICE && !(e & entry::DIRTY))
          ok = fail("range %p page %zu: a writable file range's page on the device is not DIRTY", (void *)r->start(), i);
        else if (r->writable() && entry::loc(e) == Loc::HOST && !(e & (entry::DIRTY | entry::GONE)) &&
                 mapped_writable(r->addr(i)))
          ok = fail("range %p page %zu: a clean host page of a writable file range is not write-protected (a "
                    "write to it would not be written back)", (void *)r->start(), i);
        if (!ok || entry::loc(e) != Loc::DEVICE) continue;
        const DBlock *b = r->dblock(i);
        if (!b || b->chunk == kNoChunk)
          ok = fail("range %p page %zu on DEVICE but its block has no chunk", (void *)r->start(), i);
        else if (entry::frame(e) != r->frame(i, b->chunk))
          ok = fail("range %p page %zu frame %llu, block chunk says %llu", (void *)r->start(), i,
                    (unsigned long long)entry::frame(e), (unsigned long long)r->frame(i, b->chunk));
        else
          ++counted[b];
      }
    });
    if (!ok) return false;
  }
  if (in_lru != lru_.size()) return fail("LRU holds %zu blocks, %zu have chunks", lru_.size(), in_lru);
  auto check_resident = [&](const DBlock *b) -> bool {
    uint32_t want = counted.count(b) ? counted[b] : 0;
    if (b->busy == 0 && b->resident.load() != want)
      return fail("block resident %u, entries say %u", b->resident.load(), want);
    return true;
  };
  for (auto &[k, p] : packs_)
    if (!check_resident(p.get())) return false;
  for (const RangePtr &r : ranges) {
    bool ok = true;
    r->each_block([&](DBlock &b) { ok = ok && (b.is_pack || check_resident(&b)); });
    if (!ok) return false;
  }
  return true;
}

}  // namespace umrt::rt
