// baselines.cpp — the bare userfaultfd handler and the UFFDIO_COPY floor (see baselines.h).
#include "baselines.h"

#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>

#ifndef UFFD_USER_MODE_ONLY
#define UFFD_USER_MODE_ONLY 1
#endif

namespace bench {

namespace {

std::string err(const char *what) { return std::string(what) + ": " + std::strerror(errno); }

// A fresh anonymous range registered MISSING with `uffd`; nullptr on failure.
char *map_registered(int uffd, size_t bytes, std::string &why) {
  void *p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                 -1, 0);
  if (p == MAP_FAILED) {
    why = err("mmap");
    return nullptr;
  }
  madvise(p, bytes, MADV_NOHUGEPAGE);  // 4 KiB pages, as umrt installs them
  uffdio_register reg{};
  reg.range.start = reinterpret_cast<uint64_t>(p);
  reg.range.len = bytes;
  reg.mode = UFFDIO_REGISTER_MODE_MISSING;
  if (ioctl(uffd, UFFDIO_REGISTER, &reg) != 0) {
    why = err("UFFDIO_REGISTER");
    munmap(p, bytes);
    return nullptr;
  }
  return static_cast<char *>(p);
}

}  // namespace

int open_uffd(std::string &why) {
  int fd = static_cast<int>(syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK));
  if (fd < 0 && errno == EPERM)
    fd = static_cast<int>(syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK | UFFD_USER_MODE_ONLY));
  if (fd < 0) {
    why = err("userfaultfd");
    return -errno;
  }
  uffdio_api api{};
  api.api = UFFD_API;
  if (ioctl(fd, UFFDIO_API, &api) != 0) {
    why = err("UFFDIO_API");
    int e = errno;
    close(fd);
    return -e;
  }
  return fd;
}

std::unique_ptr<BareUffd> BareUffd::create(size_t bytes, const char *src, size_t window_pages,
                                           std::string &why) {
  std::unique_ptr<BareUffd> h(new BareUffd());
  h->bytes_ = bytes;
  h->src_ = src;
  h->window_ = std::max<size_t>(1, window_pages);
  h->uffd_ = open_uffd(why);
  if (h->uffd_ < 0) return nullptr;
  h->stop_fd_ = eventfd(0, EFD_CLOEXEC);
  if (h->stop_fd_ < 0) {
    why = err("eventfd");
    return nullptr;
  }
  h->base_ = map_registered(h->uffd_, bytes, why);
  if (!h->base_) return nullptr;
  h->thread_ = std::thread([p = h.get()] { p->serve(); });
  return h;
}

BareUffd::~BareUffd() {
  if (thread_.joinable()) {
    uint64_t one = 1;
    if (write(stop_fd_, &one, sizeof one) != sizeof one) errors_.fetch_add(1);
    thread_.join();
  }
  if (base_) munmap(base_, bytes_);
  if (stop_fd_ >= 0) close(stop_fd_);
  if (uffd_ >= 0) close(uffd_);
}

void BareUffd::serve() {
  uffd_msg msgs[64];
  pollfd fds[2] = {{uffd_, POLLIN, 0}, {stop_fd_, POLLIN, 0}};
  for (;;) {
    if (poll(fds, 2, -1) < 0) {
      if (errno == EINTR) continue;
      errors_.fetch_add(1);
      return;
    }
    if (fds[1].revents) return;
    ssize_t n = read(uffd_, msgs, sizeof msgs);
    if (n < 0) {
      if (errno == EAGAIN || errno == EINTR) continue;
      errors_.fetch_add(1);
      return;
    }
    for (size_t i = 0; i < static_cast<size_t>(n) / sizeof(uffd_msg); ++i) {
      if (msgs[i].event != UFFD_EVENT_PAGEFAULT) continue;
      faults_.fetch_add(1, std::memory_order_relaxed);
      serve_one(msgs[i].arg.pagefault.address & ~uint64_t{kPage - 1});
    }
  }
}

// One UFFDIO_COPY of the faulting page and the window after it, clipped to its 2 MiB block and
// the range. A page that already exists ends the copy early (EEXIST): the faulting page was
// copied (and its thread woken) if any byte was; if none was, it exists already (another
// thread's fault or window installed it) and the faulting thread is only woken.
void BareUffd::serve_one(uint64_t addr) {
  const uint64_t base = reinterpret_cast<uint64_t>(base_);
  const uint64_t off = addr - base;
  const uint64_t block_end = (off / kBlock + 1) * kBlock;
  const uint64_t end = std::min<uint64_t>({off + window_ * kPage, block_end, bytes_});
  for (;;) {
    uffdio_copy c{};
    c.dst = addr;
    c.src = reinterpret_cast<uint64_t>(src_ + off);
    c.len = end - off;
    c.mode = 0;
    if (ioctl(uffd_, UFFDIO_COPY, &c) == 0) {
      copies_.fetch_add(1, std::memory_order_relaxed);
      return;
    }
    if (errno == EAGAIN) continue;  // the mapping changed under us: try again
    if (errno == EEXIST) {
      if (c.copy > 0) {
        copies_.fetch_add(1, std::memory_order_relaxed);
        return;
      }
      uffdio_range r{addr, kPage};
      if (ioctl(uffd_, UFFDIO_WAKE, &r) != 0) errors_.fetch_add(1);
      return;
    }
    errors_.fetch_add(1);
    uffdio_range r{addr, kPage};
    ioctl(uffd_, UFFDIO_WAKE, &r);
    return;
  }
}

double uffd_copy_floor(const char *src, size_t bytes, unsigned threads, std::string &why) {
  int uffd = open_uffd(why);
  if (uffd < 0) return -1;
  char *dst = map_registered(uffd, bytes, why);
  if (!dst) {
    close(uffd);
    return -1;
  }
  threads = std::max(1u, threads);
  std::atomic<bool> go{false};
  std::atomic<int> failed{0};
  std::vector<std::thread> ts;
  const size_t blocks = (bytes + kBlock - 1) / kBlock;
  for (unsigned t = 0; t < threads; ++t)
    ts.emplace_back([&, t] {
      while (!go.load(std::memory_order_acquire)) {
      }
      for (size_t b = t * blocks / threads; b < (t + 1) * blocks / threads; ++b) {
        size_t off = b * kBlock, len = std::min(kBlock, bytes - off);
        uffdio_copy c{};
        c.dst = reinterpret_cast<uint64_t>(dst + off);
        c.src = reinterpret_cast<uint64_t>(src + off);
        c.len = len;
        c.mode = UFFDIO_COPY_MODE_DONTWAKE;  // nobody waits: no faults in this loop
        while (ioctl(uffd, UFFDIO_COPY, &c) != 0) {
          if (errno != EAGAIN) {
            failed.store(errno);
            return;
          }
          // partial copy: go on after what was copied
          if (c.copy > 0) {
            c.dst += static_cast<uint64_t>(c.copy);
            c.src += static_cast<uint64_t>(c.copy);
            c.len -= static_cast<uint64_t>(c.copy);
          }
          c.copy = 0;
        }
      }
    });
  auto t0 = std::chrono::steady_clock::now();
  go.store(true, std::memory_order_release);
  for (auto &t : ts) t.join();
  double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  munmap(dst, bytes);
  close(uffd);
  if (failed.load()) {
    errno = failed.load();
    why = err("UFFDIO_COPY");
    return -1;
  }
  return s;
}

}  // namespace bench
