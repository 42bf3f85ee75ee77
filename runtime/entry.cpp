// entry.cpp — validity rules and the checked transition function of page entries.
#include "entry.h"

#include "common.h"

namespace umrt::rt {

using namespace entry;

bool entry_valid(uint64_t e, const char **why) {
  const char *w = nullptr;
  if ((e & (MIGRATE | WRITE)) != 0) w = "MIGRATE/WRITE in a state-array entry";
  else if ((e & FLAGS_MASK & ~(LOC_MASK | LOCKED | CANCEL | GONE | DIRTY | FLUSH)) != 0) w = "reserved bits set";
  else if (loc(e) != Loc::DEVICE && loc(e) != Loc::SWAP && frame(e) != 0) w = "frame set on a page not on the device or in swap";
  else if ((e & CANCEL) && !(e & LOCKED)) w = "CANCEL without LOCKED";
  else if ((e & CANCEL) && loc(e) != Loc::HOST) w = "CANCEL on a page not on the host";
  else if ((e & FLUSH) && !(e & LOCKED)) w = "FLUSH without LOCKED";
  else if ((e & DIRTY) && loc(e) != Loc::HOST && loc(e) != Loc::DEVICE) w = "DIRTY on a page with no data of its own";
  if (why) *why = w;
  return w == nullptr;
}

bool transition_allowed(uint64_t from, uint64_t to, const char **why) {
  const char *w = nullptr;
  if (!entry_valid(from, &w) || !entry_valid(to, &w)) {
    // w names the broken invariant
  } else if ((from & GONE) != (to & GONE)) {
    w = "GONE changes only through entry_mark_gone";
  } else if (!locked(from)) {
    if (to != (from | LOCKED) && to != (from | LOCKED | FLUSH)) w = "an unlocked entry may only be locked";
  } else if (!locked(to)) {
    // unlock (same location; written back: DIRTY dropped) or publish (new location)
    if (loc(to) == loc(from) && (to & ~(CANCEL | DIRTY)) != (from & ~(LOCKED | CANCEL | FLUSH | DIRTY)))
      w = "unlock must keep location and frame";
    else if (loc(to) == loc(from) && (to & DIRTY) && !(from & DIRTY))
      w = "unlock may not set DIRTY";
  } else if (loc(to) != loc(from)) {
    // publish keeping the lock (host->device: the host copy is released before unlocking)
    if (to & (CANCEL | FLUSH)) w = "publish may not set CANCEL or FLUSH";
  } else if (to == (from | DIRTY)) {
    // locked -> locked, same location: the page was written (checked valid above)
  } else {
    // ... or setting CANCEL on a HOST page (with DIRTY: a writable file range's page)
    if ((to != (from | CANCEL) && to != (from | CANCEL | DIRTY)) || loc(from) != Loc::HOST)
      w = "locked entries may only gain CANCEL or DIRTY";
  }
  if (why) *why = w;
  return w == nullptr;
}

bool entry_transition(Entry &e, uint64_t &expected, uint64_t desired) {
#if UMRT_DEBUG_CHECKS
  const char *why = nullptr;
  if (!transition_allowed(expected, desired, &why)) check_failed("transition_allowed", __FILE__, __LINE__, why);
#endif
  return e.compare_exchange_strong(expected, desired, std::memory_order_acq_rel,
                                   std::memory_order_acquire);
}

void entry_unlock(Entry &e) {
  uint64_t cur = e.load(std::memory_order_acquire);
  UMRT_CHECK(locked(cur), "unlock of an entry that is not locked");
  while (!entry_transition(e, cur, cur & ~(LOCKED | CANCEL | FLUSH))) {
  }
}

const char *loc_name(Loc l) {
  switch (l) {
    case Loc::NONE: return "NONE";
    case Loc::HOST: return "HOST";
    case Loc::DEVICE: return "DEVICE";
    case Loc::SWAP: return "SWAP";
  }
  return "?";
}

}  // namespace umrt::rt
