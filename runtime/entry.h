// entry.h — the page entry: the 64-bit state word of one page, the single source of truth of
// where that page's data is, and the one checked transition function that changes it.
//
// Layout (bit 0 = least significant):
//   [1:0]   location      NONE (never touched, reads as zero; a file range's: still only in
//                         its file) | HOST | DEVICE | SWAP (an anonymous page the host budget
//                         pushed out: in the swap file, slot = frame; storage/swap.h)
//   [2]     LOCKED        a batch or the fault service owns the page (CAS; first locker wins)
//   [3]     MIGRATE       batch arrays only (src[]/dst[]): this page is being moved
//   [4]     WRITE         batch arrays only: the source copy may be written (host source)
//   [5]     CANCEL        set by a CPU write fault on a page a host->device batch holds:
//                         finalize restores the page instead of publishing it
//   [6]     GONE          the user unmapped this page's host address (munmap of the range)
//   [7]     DIRTY         writable file ranges only (UMRT_MAP_WRITE): the page's data may differ
//                         from its file's (written by the CPU, or on the device: a page of such a
//                         range that went to the device counts as written); HOST or DEVICE only.
//                         A HOST page without DIRTY is write-protected (its first write faults
//                         and sets DIRTY); a DEVICE page is always DIRTY (a kernel may write
//                         it unseen); write-back (storage/writeback.cpp) clears it on HOST pages
//   [8]     FLUSH         with LOCKED only: the lock is a write-back's; CPU writers wait for it
//                         (never cancel it)
//   [11:9]  reserved (zero)
//   [63:12] frame         device frame number (chunk * 512 + page in chunk) when DEVICE, swap
//                         slot when SWAP
//
// Invariants of a state-array entry (checked by entry_valid() and the validator):
//   - frame != 0 only when DEVICE or SWAP;
//   - MIGRATE and WRITE never appear in the state array (they belong to batch arrays);
//   - CANCEL only while LOCKED, and only on a HOST page; FLUSH only while LOCKED;
//   - DIRTY only on HOST or DEVICE pages (and, checked by the validator, only in writable file
//     ranges);
//   - the location/frame of an entry change only in one transition: a locked entry is
//     published (given its new location) by the batch that locked it.
#pragma once

#include <atomic>
#include <cstdint>

namespace umrt::rt {

enum class Loc : uint64_t { NONE = 0, HOST = 1, DEVICE = 2, SWAP = 3 };

namespace entry {
constexpr uint64_t LOC_MASK = 0x3;
constexpr uint64_t LOCKED = uint64_t{1} << 2;
constexpr uint64_t MIGRATE = uint64_t{1} << 3;
constexpr uint64_t WRITE = uint64_t{1} << 4;
constexpr uint64_t CANCEL = uint64_t{1} << 5;
constexpr uint64_t GONE = uint64_t{1} << 6;
constexpr uint64_t DIRTY = uint64_t{1} << 7;
constexpr uint64_t FLUSH = uint64_t{1} << 8;
constexpr unsigned FRAME_SHIFT = 12;
constexpr uint64_t FLAGS_MASK = (uint64_t{1} << FRAME_SHIFT) - 1;
constexpr uint64_t MAX_FRAME = (uint64_t{1} << (64 - FRAME_SHIFT)) - 1;

constexpr Loc loc(uint64_t e) { return static_cast<Loc>(e & LOC_MASK); }
constexpr uint64_t frame(uint64_t e) { return e >> FRAME_SHIFT; }
constexpr bool locked(uint64_t e) { return e & LOCKED; }
constexpr uint64_t make(Loc l, uint64_t frame = 0) {
  return static_cast<uint64_t>(l) | (frame << FRAME_SHIFT);
}
// The same page with its location and frame replaced; GONE is kept, DIRTY too unless the page
// becomes NONE (no data of its own: a file's page in its file, or never touched).
constexpr uint64_t with_loc(uint64_t e, Loc l, uint64_t frame = 0) {
  return make(l, frame) | (e & GONE) | (l == Loc::NONE ? 0 : e & DIRTY);
}
}  // namespace entry

using Entry = std::atomic<uint64_t>;

// Is e a well-formed state-array entry? On false, *why names the broken invariant.
bool entry_valid(uint64_t e, const char **why);

// Is "from -> to" one of the allowed transitions of a state-array entry?
//   lock      unlocked X        -> X | LOCKED
//   lock      unlocked X        -> X | LOCKED (| FLUSH: a write-back's lock)
//   unlock    X | LOCKED        -> X (CANCEL and FLUSH dropped; DIRTY may be dropped: written back)
//   publish   X | LOCKED        -> Y, Y a different location, unlocked or still LOCKED
//                                  (GONE kept; CANCEL dropped; DIRTY may be set or dropped)
//   cancel    HOST | LOCKED     -> HOST | LOCKED | CANCEL (| DIRTY)
//   dirty     X | LOCKED        -> X | LOCKED | DIRTY (X HOST or DEVICE)
bool transition_allowed(uint64_t from, uint64_t to, const char **why);

// The one function that changes an entry: a checked compare-and-swap. On failure `expected`
// holds the current value. In debug builds an illegal transition aborts with the reason.
bool entry_transition(Entry &e, uint64_t &expected, uint64_t desired);

// Try-lock (collect, fault service): true and *old = the value before, if this caller took it.
inline bool entry_try_lock(Entry &e, uint64_t *old) {
  uint64_t cur = e.load(std::memory_order_acquire);
  while (!entry::locked(cur)) {
    if (entry_transition(e, cur, cur | entry::LOCKED)) {
      *old = cur;
      return true;
    }
  }
  return false;
}

// Unlock an entry this caller holds (location unchanged).
void entry_unlock(Entry &e);

// Mark DIRTY an entry this caller locked (old: its value before the lock, HOST or DEVICE). Only
// GONE can change meanwhile (a munmap), and then the page is gone anyway.
inline void entry_mark_dirty(Entry &e, uint64_t old) {
  uint64_t locked = old | entry::LOCKED;
  entry_transition(e, locked, locked | entry::DIRTY);
}

// Mark a page GONE (its host address was unmapped by the user); allowed in any state.
inline void entry_mark_gone(Entry &e) { e.fetch_or(entry::GONE, std::memory_order_acq_rel); }

const char *loc_name(Loc l);

}  // namespace umrt::rt
