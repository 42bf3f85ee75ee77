// runtime.h — the process-wide runtime: configuration, backend, userfaultfd, range table,
// device memory, fault service and statistics, created by umrt_init (or lazily).
#pragma once

#include <atomic>
#include <memory>
#include <thread>
#include <vector>

#include "backend.h"
#include "devmem.h"
#include "host_budget.h"
#include "host_pool.h"
#include "lanes.h"
#include "range.h"
#include "stat_segment.h"
#include "storage/discard.h"
#include "storage/swap.h"
#include "trace.h"
#include "uffd.h"

namespace umrt::rt {

struct Stats {
  std::atomic<uint64_t> cpu_faults{0}, bytes_to_device{0}, bytes_to_host{0}, batches{0},
      pages_to_device{0}, pages_to_host{0}, zero_fills{0}, pages_restored{0},
      pages_skipped_locked{0}, fault_groups{0}, write_faults{0}, write_cancels{0},
      pages_selected{0}, ns_collect{0}, ns_unmap{0}, ns_copy{0}, ns_finalize{0}, bytes_from_storage{0},
      bytes_to_storage{0}, swap_outs{0}, swap_ins{0}, pages_dropped_clean{0};
  void add(std::atomic<uint64_t> &c, uint64_t v) { c.fetch_add(v, std::memory_order_relaxed); }
};

// The fault service: `threads` threads that read userfaultfd messages and serve them (fault.cpp).
// One reads at a time and handles the process events it read before the next read (their
// order matters: an mremap's REMAP comes before the UNMAP of its old part); page faults are
// served outside that, concurrently, never two threads on the same device block at once.
class FaultService {
 public:
  int start(struct Runtime *rt, unsigned threads);
  void stop();
  // Wait (bounded) until the process events (munmap, mremap) the fault service has read are
  // handled: a munmap() returns once its event is read, a moment before it is served.
  void settle_events() const;
  unsigned threads() const { return static_cast<unsigned>(threads_.size()); }

  // An install: a batch checks a range's address and maps (or releases) pages at it. The
  // fault service's read of process events moves ranges (an mremap's REMAP), and once the event
  // is read the kernel lets page operations at the old address through again, where another
  // range may be by then: no read may happen between the check and the operation. enter()
  // waits while events are read or handled; a read waits for the installs under way (each an
  // ioctl or a madvise; callers block asynchronous signals around it, so that a handler on an
  // application thread cannot stop one half way and make the read wait for ever).
  class InstallGate {
   public:
    explicit InstallGate(FaultService &f) : f_(f) { f_.install_enter(); }
    ~InstallGate() { f_.installs_.fetch_sub(1, std::memory_order_seq_cst); }
    InstallGate(const InstallGate &) = delete;
    InstallGate &operator=(const InstallGate &) = delete;

   private:
    FaultService &f_;
  };

  struct Shared;  // state the fault-service threads share (fault.cpp)

 private:
  void loop();
  struct Runtime *rt_ = nullptr;
  int stop_fd_ = -1;
  std::vector<std::thread> threads_;
  std::shared_ptr<Shared> sh_;
  // settle_events: reading_ is set from before each read() of the uffd until its messages are
  // scanned, events_in_progress_ while a batch holding events is handled. A munmap() returns
  // once its event is dequeued, i.e. after reading_ was set: a caller that saw the munmap
  // return and then finds both clear knows the event was handled.
  std::atomic<bool> reading_{false};
  std::atomic<int> events_in_progress_{0};
  std::atomic<int> installs_{0};  // InstallGates open now
  void install_enter();
};

struct Runtime {
  umrt_config cfg{};
  std::unique_ptr<Backend> backend;
  Uffd uffd;
  RangeTable ranges;
  DevMem devmem;
  HostPool host_pool;  // host pages that left for the device, kept for the next ones home
  HostBudget budget;   // host pages held, and the reclaim thread (UMRT_HOST_MEMORY)
  PageMap pagemap;     // /proc/self/pagemap: discarded file pages (storage/discard.h)
  SwapFile swap;       // where anonymous pages go past the budget (opened on first use)
  FaultService faults;
  Lanes lanes;  // second lanes of multi-block spans (migrate.cpp)
  Stats stats;
  Trace trace;  // UMRT_TRACE
  StatPublisher stat;  // the live statistics segment for umrt-stat (UMRT_STAT)

  // Ranges the user munmap()ed whole: out of the table, device memory freed at the start of
  // the next API call (the fault service cannot wait for their batches to drain).
  std::mutex zombies_mu;
  std::vector<RangePtr> zombies;
  std::atomic<bool> zombies_waiting{false};  // zombies is not empty (checked without the lock)
  void add_zombie(RangePtr r);
  // Take r out of the table and into zombies, if it still is in the table (one step, under
  // zombies_mu, so that every_range() never misses it).
  void retire_unmapped(const RangePtr &r);
  // The table's ranges and the zombies: every range that may still hold device memory.
  std::vector<RangePtr> every_range();

  // The counters of umrt_stats as they are now (umrt_get_stats; the statistics publisher).
  void fill_stats(umrt_stats *out);

  umrt_status start(const umrt_config &c);  // sets last_error on failure
  // Every page of every range home (0), or the first error with *failed = its range: then
  // nothing else changed (what could not come home stays on the device; call again later).
  int bring_home(const Range **failed);
  // Device memory freed, ranges unregistered (they stay mapped as plain host memory and are
  // returned), threads joined. Call bring_home() first: pages still on the device are lost.
  std::vector<RangePtr> stop();
  // Unregister the range's still-mapped runs from userfaultfd and (unmap) munmap them.
  void release_host(Range &r, bool unmap);

  // Wait for a removed range's batches to drain and free its device memory.
  void retire(Range &r);
  void reap_zombies();
};

}  // namespace umrt::rt
