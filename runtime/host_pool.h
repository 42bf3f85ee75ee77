// host_pool.h — host pages a host->device batch vacated, kept to back the next device->host
// pages instead of being freed and allocated again. A published host page leaves the range by
// UFFDIO_MOVE into the pool (no page freed, where MADV_DONTNEED would free it); a page coming
// home is copied into a pool page and moved into the range (no page allocated, where UFFDIO_COPY
// would allocate one). docs/design.md, "Host pages kept for reuse", has the measurements.
//
// Shape: `slots` of 2 MiB of the pool's own mapping (MAP_NORESERVE, registered with the
// runtime's userfaultfd in write-protect mode and never protected: UFFDIO_MOVE only moves into a
// registered range, and no access to the pool ever reaches the fault service), each a stack.
// Invariant (per slot): pages [0, count) are mapped, pages [count, 512) are holes (umrt never
// touches one; the kernel may fill them behind umrt's back, mlockall(MCL_CURRENT) does: a move
// into a filled hole is refused (EEXIST), the holes are cleared and the move tried again, and a
// slot whose holes cannot be freed (locked) is retired: nothing stashed there again, what it
// keeps still taken).
// A batch takes a slot for itself (take: a CAS on the slot's flag, no lock, so an application
// thread stopped by a signal while it holds a slot blocks nobody: others pick another slot or
// none), works on it, and gives it back.
// Everything returns 0 / a count; a failed move leaves the caller on its old path (DONTNEED or
// UFFDIO_COPY), so the pool can only make a batch cheaper, never change what it does.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "common.h"

namespace umrt::rt {

class Uffd;

class HostPool {
 public:
  struct Slot {
    char *base = nullptr;
    std::atomic<uint32_t> count{0};  // mapped pages [0, count)
    std::atomic<bool> taken{false};  // a batch works on it
    std::atomic<bool> retired{false};  // its holes could not be freed: never stashed into again
  };

  // bytes rounded down to 2 MiB slots; fewer than one slot, or no UFFDIO_MOVE: no pool
  // (every call then finds nothing). Returns 0 or -errno (then no pool either).
  int init(Uffd *uffd, uint64_t bytes);
  // Frees every kept page (munmap). No batch may be running.
  void stop();
  bool on() const { return !slots_.empty(); }

  // A slot for one batch alone: stash wants the one with most room, fill the one with most
  // pages. nullptr: none (no pool, or every slot is full / empty / taken).
  Slot *take_for_stash();  // (pages it holds are counted by position: a zero-page mapping a
                           // read-only page had moves in as one, without memory behind it)
  Slot *take_for_fill();
  void give(Slot *s);

  // Move the n pages at user (mapped, in one VMA) into s. Returns the pages moved, a prefix of
  // the run: the rest are still mapped at user (no room, or the kernel refused: shared with a
  // child after fork, mlocked, a hole). Single-threaded per slot.
  size_t stash(Slot &s, void *user, size_t n);
  // Map n bytes (whole pages) at dst (a hole in the range) holding the bytes at src: pool pages,
  // filled and moved. Returns the bytes mapped (a prefix); the rest is the caller's
  // (UFFDIO_COPY). *refused: the kernel refused a move (the pages claimed for it are freed);
  // other slots would be refused too. May run on several threads at once for one slot (the
  // pieces of one batch).
  size_t fill(Slot &s, void *dst, const void *src, size_t n, bool dontwake, bool *refused);

  uint64_t pages() const { return pages_.load(std::memory_order_relaxed); }
  uint64_t reused() const { return reused_.load(std::memory_order_relaxed); }

 private:
  // Free [p, p + len) of the pool: MADV_DONTNEED, and munlock first when the application locked
  // the pool (mlockall). false: the pages stay mapped.
  bool clear(char *p, size_t len);
  void retire(Slot &s);
  Uffd *uffd_ = nullptr;
  char *base_ = nullptr;
  size_t bytes_ = 0;
  std::vector<Slot> slots_;  // fixed after init
  std::atomic<uint64_t> pages_{0};   // pages kept now (all slots)
  std::atomic<uint64_t> reused_{0};  // pages that came home into a kept page
};

}  // namespace umrt::rt
