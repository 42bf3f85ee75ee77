// host_pool.cpp — host pages kept for reuse (host_pool.h): the pool's mapping, the choice of a
// slot, and the two moves (a published page out of the range, a page coming home into it).
#include "host_pool.h"

#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "uffd.h"

namespace umrt::rt {

int HostPool::init(Uffd *uffd, uint64_t bytes) {
  uffd_ = uffd;
  const size_t n = bytes / kBlockSize;
  if (n == 0 || !uffd->can_move()) return 0;
  bytes_ = n * kBlockSize;
  // PROT_NONE first: under mlockall(MCL_FUTURE) a new accessible mapping is populated (the
  // whole pool resident and locked at once). munlock takes the lock off before it can be.
  void *p = mmap(nullptr, bytes_, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (p == MAP_FAILED) return -errno;
  base_ = static_cast<char *>(p);
  syscall(SYS_munlock, base_, bytes_);  // raw: the sanitizers' munlock() does nothing
  // Small pages only (each moves on its own); not inherited by a child, so that a fork() leaves
  // kept pages exclusive to this process (UFFDIO_MOVE refuses shared pages).
  madvise(base_, bytes_, MADV_NOHUGEPAGE);
  madvise(base_, bytes_, MADV_DONTFORK);
  int rc = mprotect(base_, bytes_, PROT_READ | PROT_WRITE) ? -errno : uffd->register_for_move(base_, bytes_);
  if (rc) {
    munmap(base_, bytes_);
    base_ = nullptr;
    bytes_ = 0;
    return rc;
  }
  slots_ = std::vector<Slot>(n);
  for (size_t i = 0; i < n; ++i) slots_[i].base = base_ + i * kBlockSize;
  return 0;
}

void HostPool::stop() {
  if (!base_) return;
  uffd_->unregister_range(base_, bytes_);
  munmap(base_, bytes_);
  base_ = nullptr;
  bytes_ = 0;
  slots_.clear();
  pages_.store(0, std::memory_order_relaxed);
}

namespace {
// The bytes of a page coming home into a kept page. Their source (device memory, staging) was
// written before the fault or prefetch that asked for them, an order the kernel makes (the
// faulting thread, userfaultfd, the fault service) and ThreadSanitizer cannot see: under it the
// copy goes through the kernel, as UFFDIO_COPY's did.
void copy_in(void *dst, const void *src, size_t n) {
  if (kTsan) {
    iovec l{dst, n}, r{const_cast<void *>(src), n};
    if (process_vm_readv(getpid(), &l, 1, &r, 1, 0) == static_cast<ssize_t>(n)) return;
  }
  std::memcpy(dst, src, n);
}

// The free slot that maximises score (> 0), taken; nullptr if none. A slot another batch took
// between the scan and the exchange is skipped on the next scan (at most one scan per slot:
// each lost race means one more slot is taken). Never waits.
template <typename Score>
HostPool::Slot *take_best(std::vector<HostPool::Slot> &slots, bool stash, Score score) {
  for (size_t tries = 0; tries < slots.size(); ++tries) {
    HostPool::Slot *best = nullptr;
    uint32_t best_score = 0;
    for (HostPool::Slot &s : slots) {
      if (s.taken.load(std::memory_order_relaxed) || (stash && s.retired.load(std::memory_order_relaxed))) continue;
      const uint32_t sc = score(s.count.load(std::memory_order_relaxed));
      if (sc > best_score) best = &s, best_score = sc;
      if (sc >= kBlockPages) break;  // cannot do better
    }
    if (!best) return nullptr;
    if (!best->taken.exchange(true, std::memory_order_acquire)) return best;
  }
  return nullptr;
}
}  // namespace

// Stash into the fullest slot that has room, so that slots fill up whole and a fill finds most
// of what it needs in one; fill from the fullest.
HostPool::Slot *HostPool::take_for_stash() {
  return take_best(slots_, true, [](uint32_t c) { return c < kBlockPages ? c + 1 : 0; });
}

HostPool::Slot *HostPool::take_for_fill() {
  return take_best(slots_, false, [](uint32_t c) { return c; });
}

void HostPool::give(Slot *s) {
  if (s) s->taken.store(false, std::memory_order_release);
}

bool HostPool::clear(char *p, size_t len) {
  if (madvise(p, len, MADV_DONTNEED) == 0) return true;
  return errno == EINVAL && syscall(SYS_munlock, p, len) == 0 && madvise(p, len, MADV_DONTNEED) == 0;
}

void HostPool::retire(Slot &s) {
  if (s.retired.exchange(true)) return;
  // No more stashes into it (its holes are not holes); what it keeps still serves fills. The
  // pages that could not be freed stay mapped until shutdown unmaps the pool.
  log(Level::warn, "host pool: part of the 2 MiB at %p cannot be freed (locked?): nothing is kept there any more",
      (void *)s.base);
}

size_t HostPool::stash(Slot &s, void *user, size_t n) {
  const uint32_t c = s.count.load(std::memory_order_relaxed);
  const size_t k = std::min(n, kBlockPages - c);
  if (k == 0) return 0;
  size_t done = 0;
  // No DONTWAKE needed: nobody waits on the pool's addresses; the range's waiters are woken by
  // the batch. Holes are not allowed: a hole "moved" would leave a hole below count.
  int rc = uffd_->move(s.base + c * kPageSize, user, k * kPageSize, true, &done);
  if (rc == -EEXIST && done == 0) {
    // The kernel filled the holes (mlockall populates every mapping): free them, once.
    if (clear(s.base + c * kPageSize, (kBlockPages - c) * kPageSize)) {
      uffd_->move(s.base + c * kPageSize, user, k * kPageSize, true, &done);
    } else {
      retire(s);
      return 0;
    }
  }
  const size_t moved = done / kPageSize;
  s.count.store(c + static_cast<uint32_t>(moved), std::memory_order_relaxed);
  pages_.fetch_add(moved, std::memory_order_relaxed);
  return moved;
}

size_t HostPool::fill(Slot &s, void *dst, const void *src, size_t n, bool dontwake, bool *refused) {
  // Claim the top k pages of the stack (pieces of one batch may claim concurrently).
  uint32_t c = s.count.load(std::memory_order_relaxed);
  size_t k;
  do {
    k = std::min<size_t>(n / kPageSize, c);
    if (k == 0) return 0;
  } while (!s.count.compare_exchange_weak(c, c - static_cast<uint32_t>(k), std::memory_order_relaxed));
  char *pages = s.base + (c - k) * kPageSize;
  copy_in(pages, src, k * kPageSize);
  size_t done = 0;
  uffd_->move(dst, pages, k * kPageSize, dontwake, &done);
  pages_.fetch_sub(k, std::memory_order_relaxed);
  // What did not move (the range changed under us: a munmap or mremap pending, EAGAIN; a page
  // mapped there already, EEXIST; the range locked and the pool not, or the other way) is freed,
  // so that the claimed positions are holes again; where it cannot be, the slot is retired.
  if (done < k * kPageSize) {
    *refused = true;
    if (!clear(pages + done, k * kPageSize - done)) retire(s);
  }
  reused_.fetch_add(done / kPageSize, std::memory_order_relaxed);
  return done;
}

}  // namespace umrt::rt
