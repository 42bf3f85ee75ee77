// remap.h — following the user's mremap() of managed memory (remap.cpp).
#pragma once

#include <cstddef>
#include <cstdint>
#include <unordered_map>
#include <utility>
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
  // Pages [p0, p1) of range r moved to [dst, dst + (p1 - p0) pages): page indices and the
  // absolute destination, since the rest of r may move again meanwhile. Holds r's inflight
  // count (umrt_free and the zombie reaper wait for it before freeing device memory).
  struct Evacuation {
    RangePtr r;
    size_t p0, p1;
    uintptr_t dst;
    uint64_t deadline;
    std::vector<size_t> held;  // device pages locked by the evacuation, to copy
    std::vector<size_t> held_io;  // pages in storage (swap slot, or a file range's unread ones) locked, to read
    std::vector<size_t> todo;  // pages away from the host not locked yet (a batch held them)
    std::vector<std::pair<size_t, size_t>> runs;  // [first, end) of r's pages that moved (not GONE)
    size_t moved, lost;
    unsigned dead_rounds = 0;  // rounds in a row whose copies to dst failed for good (not EAGAIN)
  };
  bool step(Evacuation &ev);  // true when done
  void read_in(Evacuation &ev);  // held_io pages read and mapped at the new address
  Runtime &rt_;
  std::vector<Evacuation> pending_;
  std::unordered_map<uintptr_t, uint32_t> unclaimed_;  // stray faults seen with no tail to claim them
};

// run_batch, when a batch on r ends (counterpart of ++r.batches at its start).
void batch_done(Range &r);
// After r moved: DEVICE pages still mapped at the new address lose that stale mapping.
void recheck_moved(Range &r);

}  // namespace umrt::rt
