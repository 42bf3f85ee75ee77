// storage/swap.cpp — the host budget's swap file: creation (unlinked, O_DIRECT where taken),
// the slot bitmap, and batched reads and writes of pages through the thread's ring.
#include "swap.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "../common.h"
#include "file_store.h"
#include "ring.h"

namespace umrt::rt {

int SwapFile::open(const char *dir) {
  std::lock_guard g(open_mu_);
  if (open_rc_ != 1) return open_rc_;
  const char *d = dir;
  if (!d || !*d) d = std::getenv("UMRT_SWAP_DIR");
  if (!d || !*d) d = std::getenv("TMPDIR");
  if (!d || !*d) d = "/tmp";
  dir_ = d;
  if (int rc = bits_.init(kMaxSlots / 64)) return open_rc_ = rc;
  int fd = ::open(d, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
  if (fd < 0 && (errno == EOPNOTSUPP || errno == EISDIR || errno == EINVAL)) {
    // No O_TMPFILE on this file system: a named file, unlinked at once.
    std::string path = dir_ + "/umrt-swap-XXXXXX";
    fd = mkostemp(path.data(), O_CLOEXEC);
    if (fd >= 0) unlink(path.c_str());
  }
  if (fd < 0) {
    const int err = errno;
    log(Level::error, "swap file in %s: %s; anonymous pages cannot leave host memory (UMRT_SWAP_DIR)", d, strerror(err));
    return open_rc_ = -err;
  }
  direct_ = direct_if_taken(fd);
  fd_ = fd;
  log(Level::info, "swap file in %s (unlinked), %s I/O", d, direct_ ? "O_DIRECT" : "buffered");
  return open_rc_ = 0;
}

void SwapFile::close() {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
  bits_.reset();
}

int64_t SwapFile::alloc() {
  if (!on()) return -ENOSPC;
  const uint64_t words = kMaxSlots / 64;
  uint64_t w = cursor_.load(std::memory_order_relaxed);
  for (uint64_t tried = 0; tried < words; ++tried, w = (w + 1) % words) {
    std::atomic<uint64_t> &word = bits_[w];
    uint64_t cur = word.load(std::memory_order_acquire);
    while (cur != ~uint64_t{0}) {
      const int bit = __builtin_ctzll(~cur);
      if (word.compare_exchange_weak(cur, cur | (uint64_t{1} << bit), std::memory_order_acq_rel)) {
        cursor_.store(w, std::memory_order_relaxed);
        used_.fetch_add(1, std::memory_order_relaxed);
        return static_cast<int64_t>(w * 64 + static_cast<uint64_t>(bit));
      }
    }
  }
  return -ENOSPC;
}

void SwapFile::release(const uint64_t *slots, size_t n) {
  // Space back first (a punched hole), then the slot: a slot taken again is never punched.
  for (size_t i = 0; i < n;) {
    size_t j = i + 1;
    while (j < n && slots[j] == slots[j - 1] + 1) ++j;
    fallocate(fd_, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, static_cast<off_t>(slots[i] * kPageSize),
              static_cast<off_t>((j - i) * kPageSize));
    i = j;
  }
  for (size_t i = 0; i < n; ++i) {
    UMRT_CHECK(in_use(slots[i]), "release of a free swap slot");
    bits_[slots[i] / 64].fetch_and(~(uint64_t{1} << (slots[i] % 64)), std::memory_order_acq_rel);
    const uint64_t word = slots[i] / 64;
    if (word < cursor_.load(std::memory_order_relaxed)) cursor_.store(word, std::memory_order_relaxed);
  }
  used_.fetch_sub(n, std::memory_order_relaxed);
}

int SwapFile::io(bool write, const uint64_t *slots, const bool *sel, size_t n, char *buf, bool *ok, uint64_t *bytes) {
  *bytes = 0;
  for (size_t i = 0; i < n; ++i) ok[i] = false;
  if (!on()) return -ENOSPC;
  std::vector<IoOp> ops;
  std::vector<size_t> first;  // page index of each op's first page
  for (size_t i = 0; i < n;) {
    if (!sel[i]) {
      ++i;
      continue;
    }
    size_t j = i + 1;
    while (j < n && sel[j] && slots[j] == slots[j - 1] + 1) ++j;
    IoOp op;
    op.fd = fd_;
    op.write = write;
    op.buf = buf + i * kPageSize;
    op.len = (j - i) * kPageSize;
    op.off = slots[i] * kPageSize;
    ops.push_back(op);
    first.push_back(i);
    i = j;
  }
  if (ops.empty()) return 0;
  int err = 0;
  Ring *ring = storage_ring(&err);
  if (!ring) return io_error(err);
  ring->run(ops.data(), ops.size());
  int first_error = 0;
  for (size_t k = 0; k < ops.size(); ++k) {
    *bytes += ops[k].done;
    if (ops[k].status) {
      if (!first_error) first_error = io_error(ops[k].status);
      // Said the first times, then once in a thousand (a full swap file fails every try).
      static std::atomic<uint64_t> said{0};
      const uint64_t n = said.fetch_add(1, std::memory_order_relaxed);
      if (n < 8 || n % 1000 == 0)
        log(Level::warn, "swap %s of %zu bytes at %llu failed: %s (failure %llu; the pages stay where they were)",
            write ? "write" : "read", ops[k].len, static_cast<unsigned long long>(ops[k].off),
            strerror(-ops[k].status), static_cast<unsigned long long>(n + 1));
      continue;
    }
    for (size_t p = 0; p < ops[k].len / kPageSize; ++p) ok[first[k] + p] = true;
  }
  return first_error;
}

int SwapFile::write(const uint64_t *slots, const bool *sel, size_t n, const char *buf, bool *ok, uint64_t *bytes) {
  return io(true, slots, sel, n, const_cast<char *>(buf), ok, bytes);
}

int SwapFile::read(const uint64_t *slots, const bool *sel, size_t n, char *buf, bool *ok, uint64_t *bytes) {
  return io(false, slots, sel, n, buf, ok, bytes);
}

}  // namespace umrt::rt
