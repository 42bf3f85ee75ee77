// lanes.cpp — the runtime's lane threads (lanes.h).
#include "lanes.h"

#include <cerrno>

#include "threads.h"

namespace umrt::rt {

void LaneJob::wait() {
  std::unique_lock lk(mu_);
  cv_.wait(lk, [&] { return done_; });
}

int Lanes::start(unsigned n) {
  try {
    for (unsigned i = 0; i < n; ++i) threads_.push_back(start_thread("umrt-lane", [this] { loop(); }));
  } catch (...) {
    stop();
    return -EAGAIN;
  }
  return 0;
}

void Lanes::stop() {
  {
    std::lock_guard g(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  for (std::thread &t : threads_) t.join();
  threads_.clear();
  std::lock_guard g(mu_);
  stop_ = false;
  idle_ = 0;
}

bool Lanes::try_run(LaneJob *j) {
  {
    std::lock_guard g(mu_);
    // Idle threads not yet promised a job: each job handed over has one waiting for it.
    if (stop_ || idle_ <= queue_.size()) return false;
    try {
      queue_.push_back(j);
    } catch (...) {
      return false;
    }
  }
  cv_.notify_one();
  return true;
}

void Lanes::loop() {
  std::unique_lock lk(mu_);
  for (;;) {
    ++idle_;
    cv_.wait(lk, [&] { return stop_ || !queue_.empty(); });
    --idle_;
    if (queue_.empty()) return;  // stopping, and nothing left that was handed over
    LaneJob *j = queue_.back();
    queue_.pop_back();
    lk.unlock();
    j->fn(j->ctx);
    {
      std::lock_guard g(j->mu_);
      j->done_ = true;
      j->cv_.notify_all();
    }
    lk.lock();
  }
}

}  // namespace umrt::rt
