// range.cpp — the range table: ordered by start address, read-locked on the fault path.
#include "range.h"

#include "devmem.h"
#include "threads.h"

#include <unistd.h>

#include <algorithm>
#include <mutex>

namespace umrt::rt {

Range::~Range() {
  if (file_fd >= 0) close(file_fd);
  if (file_fd_tail >= 0) close(file_fd_tail);
  if (tail_fd_late.load() >= 0) close(tail_fd_late.load());
  for (DBlock *b = blocks_made.load(); b;) {
    DBlock *next = b->next_made;
    delete b;
    b = next;
  }
}

DBlock *Range::block_at(size_t page) {
  if (packed) return pack;
  std::atomic<DBlock *> &slot = blocks[page / kBlockPages];
  DBlock *b = slot.load(std::memory_order_acquire);
  if (b) return b;
  const size_t i = page / kBlockPages;
  auto *made = new (std::nothrow) DBlock();
  if (!made) return nullptr;
  made->win = &window;
  made->win_offset = i * kBlockSize;
  try {
    made->segs.push_back({this, i * kBlockPages, std::min(kBlockPages, npages - i * kBlockPages)});
  } catch (...) {
    delete made;
    return nullptr;
  }
  if (!slot.compare_exchange_strong(b, made, std::memory_order_acq_rel)) {
    delete made;  // another thread made it first
    return b;
  }
  made->next_made = blocks_made.load(std::memory_order_acquire);
  while (!blocks_made.compare_exchange_weak(made->next_made, made, std::memory_order_acq_rel)) {
  }
  return made;
}

void Range::mark_gone(uintptr_t lo, uintptr_t hi) {
  if (lo <= start() && hi >= start() + map_bytes) {
    // All of it (a munmap of the whole range): only pages of blocks ever used are marked, the
    // others were never touched and hold nothing. The count says every page is gone.
    for_each_used_page([&](size_t p) { mark_page_gone(p); });
    gone_pages.store(npages, std::memory_order_release);
    return;
  }
  // Part of it: every page of the part (a cost of 8 bytes of page state per page unmapped).
  const uintptr_t a = std::max(lo, start()), b = std::min(hi, start() + map_bytes);
  for (size_t p = a < b ? page_of(a) : npages; p < npages && start() + (p << kPageShift) < b; ++p)
    mark_page_gone(p);
}

bool Range::all_gone() const { return gone_pages.load(std::memory_order_acquire) >= npages; }

void Range::live_span(size_t *first, size_t *end) const {
  const size_t gone = gone_pages.load(std::memory_order_acquire);
  if (gone == 0 || gone >= npages) {  // nothing gone: all of it; everything: none
    *first = 0;
    *end = gone ? 0 : npages;
    return;
  }
  // The span computed last, if no page went GONE since (a seqlock: the tag is invalid while a
  // writer updates it, and one writer at a time publishes).
  if (span_tag_.load() == gone) {
    const size_t a = span_first_.load(), b = span_end_.load();
    if (span_tag_.load() == gone) {
      *first = a;
      *end = b;
      return;
    }
  }
  auto live = [&](size_t p) { return !(entries[p].load(std::memory_order_acquire) & entry::GONE); };
  size_t a = 0, b = npages;
  while (a < b && !live(a)) ++a;
  while (b > a && !live(b - 1)) --b;
  *first = a;
  *end = b;
  if (!span_writing_.exchange(true)) {
    span_tag_.store(SIZE_MAX);
    span_first_.store(a);
    span_end_.store(b);
    span_tag_.store(gone);
    span_writing_.store(false);
  }
}

std::vector<RangePtr> RangeTable::insert(RangePtr r) {
  AsyncSignalsBlocked nosig;  // the fault service reads the table (threads.h)
  std::unique_lock g(mu_);
  r->seq = ++seq_;
  const uintptr_t lo = r->start(), hi = lo + r->map_bytes;
  r->key = lo;
  return place_locked(std::move(r), lo, hi);
}

std::vector<RangePtr> RangeTable::move(const RangePtr &r, uintptr_t new_start) {
  AsyncSignalsBlocked nosig;  // the fault service reads the table (threads.h)
  std::unique_lock g(mu_);
  auto it = find_locked(r.get());
  r->set_start(new_start);
  if (it == map_.end()) return {};  // being freed: follow, stay out
  map_.erase(it);
  size_t first = 0, end = 0;
  r->live_span(&first, &end);
  const uintptr_t lo = new_start + (first << kPageShift);
  r->key = lo;
  return place_locked(r, lo, new_start + (end << kPageShift));
}

std::vector<RangePtr> RangeTable::place_locked(RangePtr r, uintptr_t lo, uintptr_t hi) {
  // The kernel just gave r's addresses to umrt, so any range still listed over them was
  // munmap()ed by the user and its UNMAP event is not processed yet: those pages are GONE, and
  // a range left with nothing mapped leaves the table (returned, for the caller to retire).
  // API calls settle the events already read first and munmap() returns only once its event
  // is read, so this is a defence, bounded to the few ranges just below lo (cost flat in the
  // number of ranges); the event handlers use overlapping(), which misses none.
  std::vector<RangePtr> displaced;
  max_span_ = std::max(max_span_, r->map_bytes);
  auto it = map_.upper_bound(lo);
  for (int back = 0; back < 8 && it != map_.begin(); ++back) --it;
  while (it != map_.end() && it->first < hi) {
    Range &o = *it->second;
    if (o.start() + o.map_bytes <= lo || o.start() >= hi) {
      ++it;
      continue;
    }
    o.mark_gone(lo, hi);
    if (o.all_gone()) {
      displaced.push_back(std::move(it->second));
      it = map_.erase(it);
    } else {
      ++it;
    }
  }
  const uintptr_t key = r->key;
  map_.emplace(key, std::move(r));
  return displaced;
}

std::multimap<uintptr_t, RangePtr>::iterator RangeTable::find_locked(const Range *r) {
  auto [a, b] = map_.equal_range(r->key);
  for (; a != b; ++a)
    if (a->second.get() == r) return a;
  return map_.end();
}

std::multimap<uintptr_t, RangePtr>::const_iterator RangeTable::first_reaching(uintptr_t lo) const {
  return map_.lower_bound(lo > max_span_ ? lo - max_span_ : 0);
}

RangePtr RangeTable::remove_exact(uintptr_t start) {
  AsyncSignalsBlocked nosig;  // the fault service reads the table (threads.h)
  std::unique_lock g(mu_);
  // Of ranges sharing the key, the one still mapped there.
  auto [it, last] = map_.equal_range(start);
  if (it == last) return nullptr;
  for (auto k = it; k != last; ++k)
    if (k->second->live_at(start)) it = k;
  RangePtr r = std::move(it->second);
  map_.erase(it);
  freeing_.push_back(r);
  return r;
}

void RangeTable::forget(const Range *r) {
  AsyncSignalsBlocked nosig;  // the fault service reads the table (threads.h)
  std::unique_lock g(mu_);
  std::erase_if(freeing_, [&](const RangePtr &x) { return x.get() == r; });
}

bool RangeTable::being_freed(uintptr_t addr) const {
  std::shared_lock g(mu_);
  for (const RangePtr &r : freeing_)
    if (r->contains(addr)) return true;
  return false;
}

bool RangeTable::remove(const Range *r) {
  AsyncSignalsBlocked nosig;  // the fault service reads the table (threads.h)
  std::unique_lock g(mu_);
  auto it = find_locked(r);
  if (it == map_.end()) return false;
  map_.erase(it);
  return true;
}

RangeRef RangeTable::acquire(uintptr_t addr, size_t *offset) const {
  std::shared_lock g(mu_);
  auto it = map_.upper_bound(addr);
  // Normally the range just below addr. A range whose page at addr is GONE (a user munmap left
  // a hole that a newer range now fills) yields to the one below it that maps addr.
  for (int tries = 0; it != map_.begin() && tries < 8; ++tries) {
    --it;
    Range &r = *it->second;
    if (!r.contains(addr)) continue;
    if (r.entries[r.page_of(addr)].load(std::memory_order_acquire) & entry::GONE) continue;
    r.inflight.fetch_add(1, std::memory_order_acq_rel);
    if (offset) *offset = addr - r.start();  // stable: moves take the table exclusively
    return RangeRef(it->second);
  }
  return {};
}

std::vector<RangePtr> RangeTable::snapshot() const {
  std::shared_lock g(mu_);
  std::vector<RangePtr> v;
  v.reserve(map_.size());
  for (auto &kv : map_) v.push_back(kv.second);
  return v;
}

std::vector<RangePtr> RangeTable::overlapping(uintptr_t lo, uintptr_t hi) const {
  std::shared_lock g(mu_);
  std::vector<RangePtr> v;
  for (auto it = first_reaching(lo); it != map_.end() && it->first < hi; ++it)
    if (it->second->start() + it->second->map_bytes > lo && it->second->start() < hi) v.push_back(it->second);
  return v;
}

uint64_t RangeTable::seq() const {
  std::shared_lock g(mu_);
  return seq_;
}

}  // namespace umrt::rt
