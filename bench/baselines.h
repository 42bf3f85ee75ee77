// baselines.h — the peers umrt-bench measures umrt against on the same machine, without umrt:
//
//   BareUffd        a bare userfaultfd handler: a fresh anonymous range registered in MISSING
//                   mode, one service thread that answers each fault with one UFFDIO_COPY of
//                   the faulting page plus a fixed window (clipped to the 2 MiB block and the
//                   range) from a prepared source buffer. No page state, no locking, no
//                   batching by block: the floor for any userfaultfd runtime.
//   uffd_copy_floor a loop of UFFDIO_COPY of 2 MiB runs into a fresh registered range (no faults
//                   at all): the floor of installing device->host data with userfaultfd.
// (The third peer, the kernel's own anonymous first-touch fault path, is a plain mmap and lives in
// umrt_bench.cpp next to the access loops it shares.) Nothing here throws; failures come back as
// nullptr / a negative value with a message.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <thread>
#include <vector>

namespace bench {

inline constexpr size_t kPage = 4096;
inline constexpr size_t kBlock = 2u << 20;

// Opens a userfaultfd (kernel faults included when allowed, else user-mode only) and checks the
// API. Returns the fd or -errno; `why` says what failed.
int open_uffd(std::string &why);

class BareUffd {
 public:
  // A fresh range of `bytes` (a multiple of 4 KiB) whose faults are served from `src` with
  // `window_pages` pages per fault (>= 1). nullptr and `why` on failure.
  static std::unique_ptr<BareUffd> create(size_t bytes, const char *src, size_t window_pages,
                                          std::string &why);
  ~BareUffd();
  BareUffd(const BareUffd &) = delete;
  BareUffd &operator=(const BareUffd &) = delete;

  char *data() const { return base_; }
  uint64_t faults() const { return faults_.load(std::memory_order_relaxed); }
  uint64_t copies() const { return copies_.load(std::memory_order_relaxed); }
  uint64_t errors() const { return errors_.load(std::memory_order_relaxed); }

 private:
  BareUffd() = default;
  void serve();
  void serve_one(uint64_t addr);

  int uffd_ = -1;
  int stop_fd_ = -1;
  char *base_ = nullptr;
  size_t bytes_ = 0;
  const char *src_ = nullptr;
  size_t window_ = 1;
  std::thread thread_;
  std::atomic<uint64_t> faults_{0}, copies_{0}, errors_{0};
};

// Seconds to install `bytes` from `src` into a fresh registered range with UFFDIO_COPY of
// 2 MiB runs, `threads` threads splitting the range. Negative on failure (`why`).
double uffd_copy_floor(const char *src, size_t bytes, unsigned threads, std::string &why);

}  // namespace bench
