// uffd.cpp — userfaultfd platform layer: the only file that issues userfaultfd syscalls/ioctls.
#include "uffd.h"

#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <sched.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "common.h"

#ifndef UFFD_USER_MODE_ONLY
#define UFFD_USER_MODE_ONLY 1
#endif
#ifndef USERFAULTFD_IOC_NEW
#define USERFAULTFD_IOC_NEW _IO(0xAA, 0x00)
#endif
// UFFDIO_POISON arrived in Linux 6.6; Debian 12's headers are 6.1.
#ifndef UFFDIO_POISON
#define _UFFDIO_POISON (0x08)
struct uffdio_poison {
  struct uffdio_range range;
  __u64 mode;
  __s64 updated;
};
#define UFFDIO_POISON _IOWR(UFFDIO, _UFFDIO_POISON, struct uffdio_poison)
#endif

// UFFDIO_MOVE arrived in Linux 6.8.
#ifndef UFFD_FEATURE_MOVE
#define UFFD_FEATURE_MOVE (1 << 10)
#endif
#ifndef UFFDIO_MOVE
#define _UFFDIO_MOVE (0x05)
#define UFFDIO_MOVE_MODE_DONTWAKE ((__u64)1 << 0)
struct uffdio_move {
  __u64 dst;
  __u64 src;
  __u64 len;
  __u64 mode;
  __s64 move;
};
#define UFFDIO_MOVE _IOWR(UFFDIO, _UFFDIO_MOVE, struct uffdio_move)
#endif

namespace umrt::rt {

namespace {
// EAGAIN from COPY / ZEROPAGE / WRITEPROTECT means a non-cooperative event (a user munmap) is
// pending and the mm is changing. The event is only consumed when the fault service reads it,
// so the fault service must never wait for it: it gives up (the batch restores, the faulting
// thread retries). Any other thread yields and tries again.
thread_local bool t_fault_service = false;
bool retry_eagain() {
  if (t_fault_service) return false;
  sched_yield();
  return true;
}
}  // namespace

void Uffd::mark_fault_service_thread() { t_fault_service = true; }
bool Uffd::on_fault_service_thread() { return t_fault_service; }

Uffd::NoWaitScope::NoWaitScope(bool on) : prev_(t_fault_service) { t_fault_service = prev_ || on; }
Uffd::NoWaitScope::~NoWaitScope() { t_fault_service = prev_; }

Uffd::~Uffd() { close(); }

void Uffd::close() {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
}

namespace {
// A userfaultfd: /dev/userfaultfd first (kernel faults included where the device allows), then
// the syscall, then user-mode-only. *user_only says which. Returns the fd or -errno.
int open_fd(bool *user_only) {
  int fd = -1;
  int dev = ::open("/dev/userfaultfd", O_RDWR | O_CLOEXEC);
  if (dev >= 0) {
    fd = ioctl(dev, USERFAULTFD_IOC_NEW, O_CLOEXEC | O_NONBLOCK);
    ::close(dev);
  }
  if (fd < 0) fd = static_cast<int>(syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK));
  *user_only = false;
  if (fd >= 0) return fd;
  int err = errno;
  fd = static_cast<int>(syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK | UFFD_USER_MODE_ONLY));
  if (fd < 0) {
    int err2 = errno;
    log(Level::debug, "userfaultfd: %s; user-mode-only: %s", strerror(err), strerror(err2));
    return -err2;
  }
  *user_only = true;
  log(Level::warn,
      "userfaultfd with kernel faults refused (%s): falling back to user-mode-only; a managed "
      "buffer passed to read(2)/write(2) while its pages are on the device will fail with "
      "EFAULT (grant /dev/userfaultfd access or set vm.unprivileged_userfaultfd=1)",
      strerror(err));
  return fd;
}
}  // namespace

int Uffd::open() {
  // EVENT_REMAP: an mremap()ed range stays registered at its new address and is reported (without
  // it the kernel drops the registration there and device-resident pages would read as zeros).
  const uint64_t base = UFFD_FEATURE_PAGEFAULT_FLAG_WP | UFFD_FEATURE_EVENT_UNMAP |
                        UFFD_FEATURE_EVENT_REMAP | UFFD_FEATURE_THREAD_ID;
  // MOVE (Linux >= 6.8) where the kernel has it: host pages kept for reuse (host_pool.h). A
  // kernel that does not know the bit refuses the handshake, and a failed handshake cannot be
  // repeated on the same descriptor: then a fresh one without it.
  for (uint64_t features : {base | UFFD_FEATURE_MOVE, base}) {
    int fd = open_fd(&user_mode_only_);
    if (fd < 0) return fd;
    uffdio_api api{};
    api.api = UFFD_API;
    api.features = features;
    if (ioctl(fd, UFFDIO_API, &api) < 0) {
      int err = errno;
      ::close(fd);
      if (err == EINVAL && (features & UFFD_FEATURE_MOVE)) continue;
      return -err;
    }
    can_move_ = (features & UFFD_FEATURE_MOVE) != 0;
    if (!can_move_) log(Level::info, "userfaultfd: no UFFDIO_MOVE (Linux < 6.8): host pages are not kept for reuse");
    fd_ = fd;
    return 0;
  }
  return -EINVAL;
}

int Uffd::register_range(void *addr, size_t len) {
  uffdio_register r{};
  r.range.start = reinterpret_cast<uintptr_t>(addr);
  r.range.len = len;
  r.mode = UFFDIO_REGISTER_MODE_MISSING | UFFDIO_REGISTER_MODE_WP;
  if (ioctl(fd_, UFFDIO_REGISTER, &r) < 0) return -errno;
  const uint64_t need = (uint64_t{1} << _UFFDIO_COPY) | (uint64_t{1} << _UFFDIO_ZEROPAGE) |
                        (uint64_t{1} << _UFFDIO_WRITEPROTECT) | (uint64_t{1} << _UFFDIO_WAKE);
  if ((r.ioctls & need) != need) {
    unregister_range(addr, len);
    return -EOPNOTSUPP;
  }
  return 0;
}

int Uffd::register_for_move(void *addr, size_t len) {
  uffdio_register r{};
  r.range.start = reinterpret_cast<uintptr_t>(addr);
  r.range.len = len;
  r.mode = UFFDIO_REGISTER_MODE_WP;
  if (ioctl(fd_, UFFDIO_REGISTER, &r) < 0) return -errno;
  if (!(r.ioctls & (uint64_t{1} << _UFFDIO_MOVE))) {
    unregister_range(addr, len);
    return -EOPNOTSUPP;
  }
  return 0;
}

int Uffd::unregister_range(void *addr, size_t len) {
  uffdio_range r{reinterpret_cast<uintptr_t>(addr), len};
  return ioctl(fd_, UFFDIO_UNREGISTER, &r) < 0 ? -errno : 0;
}

namespace {
// COPY and ZEROPAGE may stop part way (a pending event, a page already mapped) and report the
// bytes they did: go on from there after EAGAIN, stop on any other error. `once(offset, len)`
// issues one ioctl for [offset, offset + len) and returns 0 or errno, with the progress in *did.
// One ioctl must stay inside one VMA (ENOENT otherwise): a range whose mapping the user split
// (madvise, mprotect or mlock of a part of it) is then filled page by page from where it stopped.
template <typename Once>
int fill_loop(size_t len, size_t *done, Once once) {
  size_t total = 0, step = len;
  int rc = 0;
  while (total < len) {
    int64_t did = 0;
    const size_t n = std::min(step, len - total);
    int err = once(total, n, &did);
    if (err == 0) {
      total += n;
      continue;
    }
    if (did > 0) total += static_cast<size_t>(did);
    if (err == EAGAIN && retry_eagain()) continue;
    if (err == ENOENT && step > kPageSize) {
      step = kPageSize;
      continue;
    }
    rc = -err;
    break;
  }
  if (done) *done = total;
  return rc;
}
}  // namespace

int Uffd::copy(void *dst, const void *src, size_t len, bool dontwake, size_t *done, bool wp) {
  return fill_loop(len, done, [&](size_t off, size_t n, int64_t *did) {
    uffdio_copy c{};
    c.dst = reinterpret_cast<uintptr_t>(dst) + off;
    c.src = reinterpret_cast<uintptr_t>(src) + off;
    c.len = n;
    c.mode = (dontwake ? UFFDIO_COPY_MODE_DONTWAKE : 0) | (wp ? UFFDIO_COPY_MODE_WP : 0);
    int err = ioctl(fd_, UFFDIO_COPY, &c) == 0 ? 0 : errno;
    *did = c.copy;
    return err;
  });
}

int Uffd::move(void *dst, void *src, size_t len, bool dontwake, size_t *done) {
  uffdio_move m{};
  m.dst = reinterpret_cast<uintptr_t>(dst);
  m.src = reinterpret_cast<uintptr_t>(src);
  m.len = len;
  m.mode = dontwake ? UFFDIO_MOVE_MODE_DONTWAKE : 0;
  int err = ioctl(fd_, UFFDIO_MOVE, &m) == 0 ? 0 : errno;
  *done = err == 0 ? len : m.move > 0 ? static_cast<size_t>(m.move) : 0;
  return -err;
}

int Uffd::zeropage(void *dst, size_t len, bool dontwake, size_t *done) {
  return fill_loop(len, done, [&](size_t off, size_t n, int64_t *did) {
    uffdio_zeropage z{};
    z.range.start = reinterpret_cast<uintptr_t>(dst) + off;
    z.range.len = n;
    z.mode = dontwake ? UFFDIO_ZEROPAGE_MODE_DONTWAKE : 0;
    int err = ioctl(fd_, UFFDIO_ZEROPAGE, &z) == 0 ? 0 : errno;
    *did = z.zeropage;
    return err;
  });
}

int Uffd::write_protect(void *addr, size_t len, bool wp, bool dontwake) {
  uffdio_writeprotect w{};
  w.range.start = reinterpret_cast<uintptr_t>(addr);
  w.range.len = len;
  w.mode = (wp ? UFFDIO_WRITEPROTECT_MODE_WP : 0) | (dontwake ? UFFDIO_WRITEPROTECT_MODE_DONTWAKE : 0);
  for (;;) {
    if (ioctl(fd_, UFFDIO_WRITEPROTECT, &w) == 0) return 0;
    if (errno != EAGAIN || !retry_eagain()) return -errno;
  }
}

int Uffd::poison(void *addr, size_t len) {
  uffdio_poison p{};
  p.range.start = reinterpret_cast<uintptr_t>(addr);
  p.range.len = len;
  return ioctl(fd_, UFFDIO_POISON, &p) < 0 ? -errno : 0;
}

int Uffd::wake(void *addr, size_t len) {
  uffdio_range r{reinterpret_cast<uintptr_t>(addr), len};
  return ioctl(fd_, UFFDIO_WAKE, &r) < 0 ? -errno : 0;
}

}  // namespace umrt::rt
