// user_read.cpp — reading user pages safely: the host->device copies' source is memory the
// user may munmap(), mremap() or mprotect() while a copy engine reads it.
//
// Fast path: memcpy under a guard. A SIGSEGV/SIGBUS handler (installed at umrt_init, chaining
// to whatever handler was there before) siglongjmp()s out of a guarded copy on its own thread,
// and the copy reports -EFAULT. Any other fault goes to the previous handler (or the default
// action), exactly as if umrt's handler were not there. The guard is used only while umrt's
// handler is still the one installed (the application may install its own later): otherwise,
// and in sanitizer builds (whose own handlers and instrumented memcpy must not be jumped out
// of), the read goes through the kernel (process_vm_readv on this process), which reports a
// vanished page as EFAULT at about 0.8x memcpy's speed (docs/design.md).
#include <setjmp.h>
#include <signal.h>
#include <sys/uio.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>

#include "backend.h"

namespace umrt::rt {
namespace {

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
constexpr bool kGuardedMemcpy = false;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
constexpr bool kGuardedMemcpy = false;
#else
constexpr bool kGuardedMemcpy = true;
#endif
#else
constexpr bool kGuardedMemcpy = true;
#endif

thread_local sigjmp_buf *t_guard = nullptr;  // set while this thread copies under the guard
struct sigaction g_prev_segv, g_prev_bus;
std::atomic<bool> g_installed{false};

void on_fault(int sig, siginfo_t *si, void *uc) {
  if (sigjmp_buf *jb = t_guard) {
    t_guard = nullptr;
    siglongjmp(*jb, 1);
  }
  const struct sigaction &prev = sig == SIGSEGV ? g_prev_segv : g_prev_bus;
  if (prev.sa_flags & SA_SIGINFO) {
    if (prev.sa_sigaction) prev.sa_sigaction(sig, si, uc);
    return;
  }
  if (prev.sa_handler != SIG_DFL && prev.sa_handler != SIG_IGN) {
    prev.sa_handler(sig);
    return;
  }
  // The default action: put it back and raise the signal again (it is blocked in here unless
  // the fault repeats on return, which then also gets the default action).
  struct sigaction dfl {};
  dfl.sa_handler = SIG_DFL;
  sigemptyset(&dfl.sa_mask);
  sigaction(sig, &dfl, nullptr);
  raise(sig);
}

bool guard_current() {
  if (!g_installed.load(std::memory_order_acquire)) return false;
  struct sigaction a {}, b {};
  if (sigaction(SIGSEGV, nullptr, &a) != 0 || sigaction(SIGBUS, nullptr, &b) != 0) return false;
  return (a.sa_flags & SA_SIGINFO) && a.sa_sigaction == on_fault && (b.sa_flags & SA_SIGINFO) &&
         b.sa_sigaction == on_fault;
}

// noinline: the sigsetjmp frame must be this one; nothing here lives across the jump.
__attribute__((noinline)) int guarded_memcpy(void *dst, const void *src, size_t n) {
  sigjmp_buf jb;
  if (sigsetjmp(jb, 0) != 0) return -EFAULT;  // SA_NODEFER: no mask to restore
  t_guard = &jb;
  std::memcpy(dst, src, n);
  asm volatile("" ::: "memory");
  t_guard = nullptr;
  return 0;
}

int kernel_read(void *dst, const void *src, size_t n) {
  static const pid_t self = getpid();  // a forked child never copies (umrt is off there)
  size_t done = 0;
  while (done < n) {
    iovec local{static_cast<char *>(dst) + done, n - done};
    iovec remote{const_cast<char *>(static_cast<const char *>(src)) + done, n - done};
    ssize_t got = process_vm_readv(self, &local, 1, &remote, 1, 0);
    if (got < 0) {
      if (errno == EINTR) continue;
      return errno == ENOMEM || errno == EFAULT ? -EFAULT : -errno;
    }
    if (got == 0) return -EFAULT;
    done += static_cast<size_t>(got);  // partial: the next call reports the missing page
  }
  return 0;
}

}  // namespace

void user_read_guard_install() {
  if (!kGuardedMemcpy || g_installed.load()) return;
  struct sigaction sa {};
  sa.sa_sigaction = on_fault;
  sa.sa_flags = SA_SIGINFO | SA_NODEFER | SA_ONSTACK;
  sigemptyset(&sa.sa_mask);
  if (sigaction(SIGSEGV, &sa, &g_prev_segv) != 0) return;
  if (sigaction(SIGBUS, &sa, &g_prev_bus) != 0) {
    sigaction(SIGSEGV, &g_prev_segv, nullptr);
    return;
  }
  g_installed.store(true, std::memory_order_release);
}

void user_read_guard_remove() {
  if (!g_installed.load()) return;
  // Put the previous handlers back only where umrt's is still the one installed.
  struct sigaction cur {};
  if (sigaction(SIGSEGV, nullptr, &cur) == 0 && (cur.sa_flags & SA_SIGINFO) && cur.sa_sigaction == on_fault)
    sigaction(SIGSEGV, &g_prev_segv, nullptr);
  if (sigaction(SIGBUS, nullptr, &cur) == 0 && (cur.sa_flags & SA_SIGINFO) && cur.sa_sigaction == on_fault)
    sigaction(SIGBUS, &g_prev_bus, nullptr);
  g_installed.store(false, std::memory_order_release);
}

int read_user_pages(void *dst, const void *src, size_t n) {
  if (kGuardedMemcpy && guard_current()) return guarded_memcpy(dst, src, n);
  return kernel_read(dst, src, n);
}

}  // namespace umrt::rt
