// lanes.h — threads that live for the runtime and run the second lane of multi-block spans
// (migrate.cpp), so that no API call creates a thread (issue "Scale", item 5).
//
// A span's caller runs lane 0 itself and hands lane 1 to an idle lane thread; when none is idle
// (more concurrent multi-block prefetches than lane threads) it runs both lanes itself, one
// after the other: a prefetch never waits for another one's lane. Only application threads
// (prefetch) and shutdown hand work here, never the fault service.
#pragma once

#include <condition_variable>
#include <mutex>
#include <thread>
#include <vector>

namespace umrt::rt {

// One piece of work for a lane thread, owned by the caller (on its stack) until wait() returns.
struct LaneJob {
  void (*fn)(void *ctx) = nullptr;
  void *ctx = nullptr;
  void wait();  // until a lane thread ran fn
 private:
  friend class Lanes;
  std::mutex mu_;
  std::condition_variable cv_;
  bool done_ = false;
};

class Lanes {
 public:
  int start(unsigned threads);  // 0 or -errno (no thread to be had)
  void stop();                  // joins the threads; jobs handed over before have run
  // Hand j to an idle lane thread (true: call j->wait() before j goes away); false when none is
  // idle now: the caller runs the work itself.
  bool try_run(LaneJob *j);
  unsigned threads() const { return static_cast<unsigned>(threads_.size()); }

 private:
  void loop();
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<LaneJob *> queue_;  // handed over, not yet taken
  unsigned idle_ = 0;             // threads waiting for work
  bool stop_ = false;
  std::vector<std::thread> threads_;
};

}  // namespace umrt::rt
