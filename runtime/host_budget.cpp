// host_budget.cpp — host page counting and the reclaim thread of the host budget (host_budget.h).
#include "host_budget.h"

#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <vector>

#include "batch.h"
#include "storage/spill.h"
#include "threads.h"

namespace umrt::rt {

int HostBudget::start(Runtime *rt, uint64_t bytes) {
  rt_ = rt;
  if (!bytes || thread_.joinable()) return 0;
  stop_.store(false);
  kicked_.store(false);
  limit_ = bytes / kPageSize;
  // Reclaim stops a block or an eighth below the budget (whichever is more), so that it works
  // in bursts, not one block per page that comes home.
  low_ = limit_ - std::min<uint64_t>(limit_ / 2, std::max<uint64_t>(kBlockPages, limit_ / 8));
  hard_ = limit_ + std::max<uint64_t>(kBlockPages, limit_ / 8);
  ev_fd_ = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (ev_fd_ < 0) return -errno;
  try {
    thread_ = start_thread("umrt-reclaim", [this] { loop(); });
  } catch (...) {
    close(ev_fd_);
    ev_fd_ = -1;
    return -EAGAIN;
  }
  return 0;
}

void HostBudget::stop() {
  if (!thread_.joinable()) return;
  stop_.store(true);
  kick();
  kicked_.store(false);
  uint64_t one = 1;
  ssize_t w = write(ev_fd_, &one, sizeof one);
  (void)w;
  thread_.join();
  close(ev_fd_);
  ev_fd_ = -1;
}

void HostBudget::kick() {
  if (ev_fd_ < 0 || kicked_.exchange(true, std::memory_order_acq_rel)) return;
  uint64_t one = 1;
  ssize_t w = write(ev_fd_, &one, sizeof one);
  (void)w;
}

void HostBudget::add(DBlock *b, uint32_t n) {
  if (!n) return;
  b->host.fetch_add(n, std::memory_order_relaxed);
  b->host_used.store(clock_.fetch_add(1, std::memory_order_relaxed) + 1, std::memory_order_relaxed);
  const int64_t now = pages_.fetch_add(n, std::memory_order_relaxed) + n;
  if (limit_ && static_cast<uint64_t>(now) > limit_) kick();
}

void HostBudget::sub(DBlock *b, uint32_t n) {
  if (!n) return;
  // (A block's count may run low by its GONE pages, counted until the reclaim recounts it.)
  uint32_t cur = b->host.load(std::memory_order_relaxed);
  while (!b->host.compare_exchange_weak(cur, cur > n ? cur - n : 0, std::memory_order_relaxed)) {
  }
  pages_.fetch_sub(std::min(cur, n), std::memory_order_relaxed);
}

void HostBudget::forget(DBlock *b) { sub(b, b->host.load(std::memory_order_relaxed)); }

void HostBudget::throttle() {
  if (!limit_ || pages() <= hard_) return;
  kick();
  const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(kThrottleMs);
  while (pages() > hard_ && !stop_.load(std::memory_order_relaxed) && !stalled_.load(std::memory_order_relaxed) &&
         std::chrono::steady_clock::now() < until)
    std::this_thread::sleep_for(std::chrono::microseconds(200));
}

void HostBudget::loop() {
  Runtime &rt = *rt_;
  pollfd pfd{ev_fd_, POLLIN, 0};
  struct Candidate {
    uint64_t used;
    RangePtr r;
    size_t first;
  };
  std::vector<Candidate> cands;
  // After a pass that freed nothing, the next one waits until more pages came home (a block's
  // worth) or a second passed: pages that cannot leave are not read and written again and again.
  uint64_t stalled_pages = 0;
  auto stalled_until = std::chrono::steady_clock::now();
  while (!stop_.load()) {
    poll(&pfd, 1, 100);
    uint64_t v = 0;
    ssize_t got = read(ev_fd_, &v, sizeof v);
    (void)got;
    kicked_.store(false, std::memory_order_release);
    if (stalled_.load(std::memory_order_relaxed) && pages() < stalled_pages + kBlockPages &&
        std::chrono::steady_clock::now() < stalled_until)
      continue;
    while (!stop_.load() && pages() > low_) {
      // The coldest blocks with host pages (large ranges: a pack's pages belong to many ranges).
      cands.clear();
      for (RangePtr &r : rt.ranges.snapshot()) {
        if (r->packed) continue;
        r->each_block([&](DBlock &b) {
          if (b.host.load(std::memory_order_relaxed))
            cands.push_back({b.host_used.load(std::memory_order_relaxed), r, b.win_offset / kBlockSize * kBlockPages});
        });
      }
      if (cands.empty()) {  // nothing that can leave (small allocations only)
        stalled_.store(true, std::memory_order_relaxed);
        break;
      }
      const size_t take = std::min<size_t>(cands.size(), 16);
      std::partial_sort(cands.begin(), cands.begin() + static_cast<ptrdiff_t>(take), cands.end(),
                        [](const Candidate &a, const Candidate &b) { return a.used < b.used; });
      uint64_t freed = 0;
      for (size_t k = 0; k < take && pages() > low_ && !stop_.load(); ++k) {
        Range &r = *cands[k].r;
        // With the range's inflight count (umrt_free waits for it): only while it is still the
        // table's range at its address.
        size_t lf = 0, le = 0;
        r.live_span(&lf, &le);
        if (lf >= le) continue;
        RangeRef ref = rt.ranges.acquire(reinterpret_cast<uintptr_t>(r.addr(lf)));
        if (ref.get() != &r) continue;
        if (cands[k].used == kRefused) continue;  // mlocked: left alone (see kRefused)
        DBlock *db = r.dblock(cands[k].first);
        bool refused = false;
        spill_epoch_.fetch_add(1, std::memory_order_acq_rel);
        const uint32_t left = spill_block(rt, r, cands[k].first, r.block_end(cands[k].first) - cands[k].first, &refused);
        spill_epoch_.fetch_add(1, std::memory_order_acq_rel);
        // A block that kept its pages (written meanwhile, swap full or failing, being flushed) is
        // taken as just used: the next pass tries colder ones, not it again; one the kernel
        // refused (mlocked) is not tried again until pages come home to it.
        if (db && refused) db->host_used.store(kRefused, std::memory_order_relaxed);
        else if (db && !left) db->host_used.store(clock_.fetch_add(1, std::memory_order_relaxed) + 1, std::memory_order_relaxed);
        freed += left;
      }
      cands.clear();
      stalled_.store(!freed, std::memory_order_relaxed);
      if (!freed) {  // nothing could leave now: not a busy loop
        stalled_pages = pages();
        stalled_until = std::chrono::steady_clock::now() + std::chrono::seconds(1);
        break;
      }
    }
  }
}

}  // namespace umrt::rt
