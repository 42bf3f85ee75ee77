// remap.h — following the user's mremap() of managed memory (remap.cpp).
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "range.h"

namespace umrt::rt {

struct Runtime;

// The fault service's part of it (fault-service thread only).
class Remaps {
 public:
  explicit Remaps(Runtime &rt) : rt_(rt) {}
  // UFFD_EVENT_REMAP: [from, from + len) now at [to, to + len). `before`: the range table's seq
  // when the fault service woke up (ranges created later are not concerned).
  void on_remap(uintptr_t from, uintptr_t to, size_t len, uint64_t before);
  // A page fault at addr that no range claims (a tail an mremap() growth added, or a part being
  // evacuated).
  void on_stray_fault(uintptr_t addr);
  // Evacuations still in progress get another try; call after each round of messages.
  void rounds();
  bool busy() const { return !pending_.empty(); }

 private:
  // Part [lo, hi) of range r (old addresses) moved to [lo + delta, hi + delta).
  struct Evacuation {
    RangePtr r;
    uintptr_t lo, hi;
    intptr_t delta;
    uint64_t deadline;
    std::vector<size_t> held;  // device pages locked by the evacuation, to copy
    std::vector<size_t> todo;  // device pages a batch held at the move
    size_t moved, lost;
  };
  bool step(Evacuation &ev);  // true when done
  Runtime &rt_;
  std::vector<Evacuation> pending_;
};

// run_batch, when a batch on r ends (counterpart of ++r.batches at its start).
void batch_done(Range &r);
// After r moved: DEVICE pages still mapped at the new address lose that stale mapping.
void recheck_moved(Range &r);

}  // namespace umrt::rt
