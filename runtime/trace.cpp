// trace.cpp — the Chrome trace writer behind UMRT_TRACE (see trace.h).
#include "trace.h"

#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <ctime>

namespace umrt::rt {

uint64_t now_ns() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1'000'000'000u + static_cast<uint64_t>(ts.tv_nsec);
}

const char *ev_name(Ev e) {
  switch (e) {
    case Ev::batch_to_device: return "batch to device";
    case Ev::batch_to_host: return "batch to host";
    case Ev::collect: return "collect";
    case Ev::unmap: return "unmap";
    case Ev::copy: return "copy";
    case Ev::finalize: return "finalize";
    case Ev::fault_group: return "fault group";
    case Ev::eviction: return "eviction";
    case Ev::read_file: return "read file";
    case Ev::read_swap: return "read swap";
    case Ev::write_back: return "write-back";
    case Ev::spill_to_swap: return "spill to swap";
    case Ev::spill_to_file: return "spill to file";
    case Ev::count: break;
  }
  return "?";
}

int Trace::open(const char *path) {
  std::lock_guard g(mu_);
  f_ = std::fopen(path, "w");
  if (!f_) return -errno;
  std::fputs("[\n", f_);
  first_ = true;
  origin_ns_ = now_ns();
  return 0;
}

void Trace::close() {
  std::lock_guard g(mu_);
  if (!f_) return;
  std::fputs("\n]\n", f_);
  std::fclose(f_);
  f_ = nullptr;
}

void Trace::event(const char *name, const char *cat, uint64_t t0_ns, uint64_t dur_ns,
                  const char *args_json) {
  static thread_local long tid = syscall(SYS_gettid);
  char buf[512];
  double ts = static_cast<double>(t0_ns - origin_ns_) / 1e3, dur = static_cast<double>(dur_ns) / 1e3;
  int n = std::snprintf(buf, sizeof buf,
                        "{\"name\":\"%s\",\"cat\":\"%s\",\"ph\":\"X\",\"ts\":%.3f,\"dur\":%.3f,"
                        "\"pid\":%d,\"tid\":%ld,\"args\":{%s}}",
                        name, cat, ts, dur, static_cast<int>(getpid()), tid, args_json ? args_json : "");
  if (n <= 0) return;
  std::lock_guard g(mu_);
  if (!f_) return;
  if (!first_) std::fputs(",\n", f_);
  first_ = false;
  std::fwrite(buf, 1, static_cast<size_t>(std::min<int>(n, sizeof buf - 1)), f_);
}

}  // namespace umrt::rt
