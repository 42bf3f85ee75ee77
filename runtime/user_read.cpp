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

constexpr bool kGuardedMemcpy = !kAsan && !kTsan;

// Set while this thread copies under the guard. initial-exec: read from a signal handler, it must
// never need a lazy TLS allocation.
__attribute__((tls_model("initial-exec"))) thread_local sigjmp_buf *t_guard = nullptr;
struct sigaction g_prev_segv, g_prev_bus;
std::atomic<bool> g_installed{false};

void on_fault(int sig, siginfo_t *si, void *uc) {
  // Only a fault of this thread's guarded copy (si_code > 0: raised by the kernel for an access,
  // not sent by kill()) jumps out.
  sigjmp_buf *jb = t_guard;
  std::atomic_signal_fence(std::memory_order_acquire);
  if (jb && si && si->si_code > 0) {
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
  // The default action (SIG_IGN of a fault is not honoured by the kernel either): put it back and
  // raise the signal again; it is delivered when this handler returns (or the faulting access
  // repeats and gets the default action).
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
  std::atomic_signal_fence(std::memory_order_seq_cst);  // the guard is set before the first access
  std::memcpy(dst, src, n);
  std::atomic_signal_fence(std::memory_order_seq_cst);  // and cleared only after the last
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


// The previous handlers go back where umrt's is still the one installed. If the application
// installed its own meanwhile (which may chain to umrt's), umrt's stays installed for good: taking
// it away would break that chain, and installing it again later would record the application's
// handler as "previous", and the two would call each other for ever.
void user_read_guard_remove() {
  if (!guard_current()) return;
  sigaction(SIGSEGV, &g_prev_segv, nullptr);
  sigaction(SIGBUS, &g_prev_bus, nullptr);
  g_installed.store(false, std::memory_order_release);
}

int read_user_pages(void *dst, const void *src, size_t n) {
  if (kGuardedMemcpy && guard_current()) return guarded_memcpy(dst, src, n);
  return kernel_read(dst, src, n);
}

}  // namespace umrt::rt
