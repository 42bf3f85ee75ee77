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

// The named events of umrt's work: the Chrome trace's event names and NVTX's registered strings
// (nvtx.h) both come from this one table, so the two traces name the same thing the same way.
enum class Ev : uint8_t {
  batch_to_device, batch_to_host,       // a batch (run_batch) and its steps:
  collect, unmap, copy, finalize,       //   collect -> unmap -> copy -> finalize
  fault_group,                          // the fault service serving one group of faults (NVTX only)
  eviction,                             // DevMem pushing a victim block back to host (NVTX only)
  read_file, read_swap,                 // storage reads inside a batch's copy step
  write_back, spill_to_swap, spill_to_file,
  count
};
const char *ev_name(Ev e);

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
