// storage/swap.h — the swap file of the host budget (UMRT_HOST_MEMORY): anonymous pages pushed
// out of host memory live there (entry location SWAP, slot in the frame field) until a fault or
// a prefetch reads them back. One file per runtime in UMRT_SWAP_DIR (default $TMPDIR or /tmp),
// unlinked at creation (O_TMPFILE), O_DIRECT where the file system takes it, opened by the first
// page pushed out. A slot is one 4 KiB page at slot * 4 KiB; its space is given back (a punched
// hole) as its page comes home. Slots are a bitmap that costs what is used (lazy_array.h).
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <string>

#include "../lazy_array.h"

namespace umrt::rt {

class SwapFile {
 public:
  static constexpr uint64_t kMaxSlots = uint64_t{1} << 28;  // 1 TiB of swap

  SwapFile() = default;
  ~SwapFile() { close(); }
  SwapFile(const SwapFile &) = delete;
  SwapFile &operator=(const SwapFile &) = delete;

  // Open (once; later calls return the first answer). dir nullptr: $UMRT_SWAP_DIR, else
  // $TMPDIR, else /tmp. -errno with a log line saying why when it cannot be had.
  int open(const char *dir = nullptr);
  void close();
  bool on() const { return fd_ >= 0; }
  const std::string &dir() const { return dir_; }

  // A free slot, or -ENOSPC. Any thread (a CAS per bit).
  int64_t alloc();
  // Give slots back (their pages came home or were dropped): the file's space is released.
  void release(const uint64_t *slots, size_t n);
  uint64_t used() const { return used_.load(std::memory_order_relaxed); }
  bool in_use(uint64_t slot) const {
    return slot < kMaxSlots && bits_ && (bits_[slot / 64].load(std::memory_order_acquire) >> (slot % 64) & 1);
  }

  // Pages [0, n) between buf (page i at buf + i pages) and slots[i], in one ring submission
  // (contiguous slots merged into one op). ok[i]: page i transferred. Returns 0 or the first
  // error (io_error-tagged); *bytes: bytes transferred.
  int write(const uint64_t *slots, const bool *sel, size_t n, const char *buf, bool *ok, uint64_t *bytes);
  int read(const uint64_t *slots, const bool *sel, size_t n, char *buf, bool *ok, uint64_t *bytes);

 private:
  int io(bool write, const uint64_t *slots, const bool *sel, size_t n, char *buf, bool *ok, uint64_t *bytes);
  std::mutex open_mu_;
  int fd_ = -1;
  int open_rc_ = 1;  // 1: not tried yet
  bool direct_ = false;
  std::string dir_;
  LazyArray<std::atomic<uint64_t>> bits_;  // bit s: slot s in use
  std::atomic<uint64_t> cursor_{0};        // where alloc() looks first (a word index)
  std::atomic<uint64_t> used_{0};
};

}  // namespace umrt::rt
