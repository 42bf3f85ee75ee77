// trace.h — UMRT_TRACE=FILE: a Chrome trace (JSON array of "X" complete events) of every batch
// and its protocol steps, viewable in Perfetto (ui.perfetto.dev) or chrome://tracing.
// Writing is off unless the variable is set; when on, events are formatted on the calling
// thread and appended under a mutex. Never throws.
#pragma once

#include <cstdint>
#include <cstdio>
#include <mutex>

namespace umrt::rt {

uint64_t now_ns();  // steady clock

class Trace {
 public:
  ~Trace() { close(); }
  int open(const char *path);  // 0 or -errno
  void close();
  bool on() const { return f_ != nullptr; }
  // One complete event [t0, t0 + dur) on the calling thread; args_json: "" or "\"k\":v,...".
  void event(const char *name, const char *cat, uint64_t t0_ns, uint64_t dur_ns, const char *args_json);

 private:
  std::mutex mu_;
  FILE *f_ = nullptr;
  bool first_ = true;
  uint64_t origin_ns_ = 0;
};

}  // namespace umrt::rt
