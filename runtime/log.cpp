// log.cpp — logging to stderr, the thread-local last-error message, debug check failures.
#include "common.h"

#include <atomic>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>

namespace umrt::rt {

namespace {
std::atomic<int> g_level{static_cast<int>(Level::warn)};
thread_local char t_error[512] = "no error";
const char *level_name(Level l) {
  switch (l) {
    case Level::error: return "error";
    case Level::warn: return "warn";
    case Level::info: return "info";
    case Level::debug: return "debug";
  }
  return "?";
}
}  // namespace

void set_log_level(Level l) { g_level.store(static_cast<int>(l), std::memory_order_relaxed); }
bool log_enabled(Level l) { return static_cast<int>(l) <= g_level.load(std::memory_order_relaxed); }

void log(Level l, const char *fmt, ...) {
  if (!log_enabled(l)) return;
  char buf[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  std::fprintf(stderr, "umrt %s: %s\n", level_name(l), buf);
}

umrt_status set_error(umrt_status s, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(t_error, sizeof t_error, fmt, ap);
  va_end(ap);
  log(Level::debug, "%s: %s", umrt_status_string(s), t_error);
  return s;
}

const char *last_error() { return t_error; }
void clear_error() { snprintf(t_error, sizeof t_error, "no error"); }

#if UMRT_DEBUG_CHECKS
void check_failed(const char *expr, const char *file, int line, const char *msg) {
  std::fprintf(stderr, "umrt: invariant violated at %s:%d: %s (%s)\n", file, line, expr, msg);
  std::abort();
}
#endif

}  // namespace umrt::rt
