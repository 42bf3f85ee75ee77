// range.cpp — the range table: ordered by start address, read-locked on the fault path.
#include "range.h"

#include <mutex>

namespace umrt::rt {

void RangeTable::insert(RangePtr r) {
  std::unique_lock g(mu_);
  map_.emplace(r->start, std::move(r));
}

RangePtr RangeTable::remove_exact(uintptr_t start) {
  std::unique_lock g(mu_);
  auto it = map_.find(start);
  if (it == map_.end()) return nullptr;
  RangePtr r = std::move(it->second);
  map_.erase(it);
  r->dead.store(true, std::memory_order_release);
  return r;
}

bool RangeTable::remove(const Range *r) {
  std::unique_lock g(mu_);
  auto it = map_.find(r->start);
  if (it == map_.end() || it->second.get() != r) return false;
  it->second->dead.store(true, std::memory_order_release);
  map_.erase(it);
  return true;
}

RangeRef RangeTable::acquire(uintptr_t addr) const {
  std::shared_lock g(mu_);
  auto it = map_.upper_bound(addr);
  if (it == map_.begin()) return {};
  --it;
  if (!it->second->contains(addr)) return {};
  it->second->inflight.fetch_add(1, std::memory_order_acq_rel);
  return RangeRef(it->second);
}

RangePtr RangeTable::find_exact(uintptr_t start) const {
  std::shared_lock g(mu_);
  auto it = map_.find(start);
  return it == map_.end() ? nullptr : it->second;
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
  auto it = map_.upper_bound(lo);
  if (it != map_.begin()) --it;
  for (; it != map_.end() && it->first < hi; ++it)
    if (it->second->start + it->second->map_bytes > lo) v.push_back(it->second);
  return v;
}

size_t RangeTable::size() const {
  std::shared_lock g(mu_);
  return map_.size();
}

}  // namespace umrt::rt
