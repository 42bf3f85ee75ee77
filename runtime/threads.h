// threads.h — how umrt starts its own threads (fault service, copy engines, lanes): with every
// asynchronous signal blocked, so a process-directed signal is never delivered to a runtime
// thread and an application handler never runs there (one that touched managed memory on the
// fault-service thread would wait for itself). Synchronous signals (a fault in umrt's own
// code) stay deliverable. May throw std::system_error like std::thread: callers catch.
#pragma once

#include <pthread.h>
#include <signal.h>

#include <thread>
#include <utility>

namespace umrt::rt {

// The signal mask of every umrt thread: all but the synchronous ones.
inline sigset_t runtime_thread_sigmask() {
  sigset_t s;
  sigfillset(&s);
  for (int sig : {SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGTRAP, SIGSYS, SIGABRT}) sigdelset(&s, sig);
  return s;
}

// Blocks asynchronous signals on the calling thread for a scope. Taken (first, so that it ends
// last) around a lock that the fault service also takes, when an application thread may hold
// it: a handler that interrupted the holder and touched managed memory would wait for the fault
// service, which would wait for that lock. Two system calls; only around short sections.
class AsyncSignalsBlocked {
 public:
  AsyncSignalsBlocked() {
    const sigset_t s = runtime_thread_sigmask();
    pthread_sigmask(SIG_BLOCK, &s, &old_);
  }
  ~AsyncSignalsBlocked() { pthread_sigmask(SIG_SETMASK, &old_, nullptr); }
  AsyncSignalsBlocked(const AsyncSignalsBlocked &) = delete;
  AsyncSignalsBlocked &operator=(const AsyncSignalsBlocked &) = delete;

 private:
  sigset_t old_;
};

// name: at most 15 characters, "umrt-..." (seen in top, gdb, /proc/<pid>/task/*/comm).
template <typename F>
std::thread start_thread(const char *name, F &&f) {
  const sigset_t block = runtime_thread_sigmask();
  sigset_t old;
  pthread_sigmask(SIG_BLOCK, &block, &old);  // the new thread inherits the mask
  struct Restore {
    sigset_t *old;
    ~Restore() { pthread_sigmask(SIG_SETMASK, old, nullptr); }
  } restore{&old};
  std::thread t([fn = std::forward<F>(f)]() mutable { fn(); });
  pthread_setname_np(t.native_handle(), name);  // named before start_thread returns
  return t;
}

}  // namespace umrt::rt
