// host_budget.h — the host-memory budget (UMRT_HOST_MEMORY): the host pages managed ranges
// hold, counted per device block and in all, and the reclaim thread (umrt-reclaim) that pushes
// the coldest blocks out to storage while the count is over the budget (storage/spill.cpp:
// clean file pages dropped, dirty ones written back, anonymous pages to the swap file).
//
// "Coldest" is least recently brought home: umrt cannot see CPU accesses to mapped pages, so a
// block's clock is the last time a batch published pages HOST in it. Counting is lock-free (the
// fault path adds); the reclaim thread scans the blocks with host pages when it runs. Faults
// and prefetches bringing pages home wait (bounded) while the count is far over the budget, so
// a program touching more than the budget is held near it, never stopped: a wait ends after
// kThrottleMs whatever the count. Without a budget only the count is kept (umrt_stats.host_pages).
#pragma once

#include <atomic>
#include <cstdint>
#include <thread>

namespace umrt::rt {

struct DBlock;
struct Runtime;

class HostBudget {
 public:
  static constexpr int kThrottleMs = 50;
  // A block's clock (DBlock::host_used) when the kernel refused to let its pages go (mlock): not
  // tried again until pages come home to it (add() sets a fresh clock).
  static constexpr uint64_t kRefused = UINT64_MAX;

  // bytes 0: no budget (count only, no thread).
  int start(Runtime *rt, uint64_t bytes);
  void stop();
  bool on() const { return limit_ != 0; }
  uint64_t limit_pages() const { return limit_; }

  // n pages of b became HOST / stopped being HOST. Never blocks.
  void add(DBlock *b, uint32_t n);
  void sub(DBlock *b, uint32_t n);
  // b's range is going away: its pages stop counting.
  void forget(DBlock *b);
  uint64_t pages() const {
    const int64_t v = pages_.load(std::memory_order_relaxed);
    return v > 0 ? static_cast<uint64_t>(v) : 0;
  }
  // Odd while the reclaim pushes a block out, bumped at its start and end: a checker that reads
  // the same even value before and after looking saw no spill in between (umrt_validate).
  uint64_t spill_epoch() const { return spill_epoch_.load(std::memory_order_acquire); }
  // Called before a batch brings pages home (faults, to-host prefetches): waits, at most
  // kThrottleMs, while the count is past the hard mark (budget + an eighth) and the reclaim is
  // making progress (not when its last pass could free nothing: small allocations, mlocked
  // pages, a full swap file, a range being flushed). Not on the reclaim thread.
  void throttle();

 private:
  void loop();
  void kick();
  Runtime *rt_ = nullptr;
  uint64_t limit_ = 0, low_ = 0, hard_ = 0;  // pages: the budget, where reclaim stops, throttle
  std::atomic<int64_t> pages_{0};
  std::atomic<uint64_t> clock_{0};
  std::atomic<bool> kicked_{false};
  std::atomic<bool> stalled_{false};  // the reclaim's last pass freed nothing
  std::atomic<uint64_t> spill_epoch_{0};
  std::atomic<bool> stop_{false};
  int ev_fd_ = -1;
  std::thread thread_;
};

}  // namespace umrt::rt
