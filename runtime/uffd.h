// uffd.h — the platform layer over userfaultfd: open, register, and the ioctls the protocol
// uses (COPY, ZEROPAGE, WRITEPROTECT, WAKE, POISON, MOVE). Every call returns 0 or -errno; nothing throws.
#pragma once

#include <cstddef>
#include <cstdint>

namespace umrt::rt {

class Uffd {
 public:
  Uffd() = default;
  ~Uffd();
  Uffd(const Uffd &) = delete;
  Uffd &operator=(const Uffd &) = delete;

  // Open with kernel faults included where allowed (/dev/userfaultfd, then the syscall), else
  // user-mode-only with a warning. Negotiates MISSING + WP + EVENT_UNMAP + EVENT_REMAP +
  // THREAD_ID, and MOVE where the kernel has it (can_move()).
  int open();
  void close();
  int fd() const { return fd_; }
  bool user_mode_only() const { return user_mode_only_; }
  bool can_move() const { return can_move_; }

  int register_range(void *addr, size_t len);   // MISSING | WP
  // For UFFDIO_MOVE only (host_pool.h): registered write-protect mode, never protected, so no
  // access there ever reaches the fault service (a hole is filled by the kernel as usual).
  int register_for_move(void *addr, size_t len);
  int unregister_range(void *addr, size_t len);
  // (WP together with dontwake is refused by the kernel.)
  // Map len bytes from src at dst (atomically, waking faulting threads unless dontwake).
  // *done receives the bytes mapped even on failure.
  // wp: mapped write-protected (the range is registered WP): the first write faults.
  int copy(void *dst, const void *src, size_t len, bool dontwake, size_t *done, bool wp = false);
  // Move the len bytes of pages mapped at src (unmapping them there) to the hole at dst, in one
  // ioctl; no retry (EAGAIN: an event is pending). *done: the bytes moved, also on failure.
  int move(void *dst, void *src, size_t len, bool dontwake, size_t *done);
  int zeropage(void *dst, size_t len, bool dontwake, size_t *done);
  int write_protect(void *addr, size_t len, bool wp, bool dontwake = false);
  int wake(void *addr, size_t len);
  // Install poison markers (Linux >= 6.6): the faulting thread, and any later access, gets
  // SIGBUS. For pages whose only copy cannot be read back (a device that keeps failing).
  int poison(void *addr, size_t len);

  // Called once by the fault service thread: on it, EAGAIN (a user munmap in progress) is
  // returned instead of retried, since only this thread can let the munmap finish.
  static void mark_fault_service_thread();
  static bool on_fault_service_thread();
  // The same for work a copy engine does on the fault service's behalf (while it waits).
  class NoWaitScope {
   public:
    explicit NoWaitScope(bool on);
    ~NoWaitScope();
    NoWaitScope(const NoWaitScope &) = delete;
    NoWaitScope &operator=(const NoWaitScope &) = delete;

   private:
    bool prev_;
  };

 private:
  int fd_ = -1;
  bool user_mode_only_ = false;
  bool can_move_ = false;
};

}  // namespace umrt::rt
