// common.h — constants, logging and error reporting shared by every runtime file.
//
// Errors inside the runtime travel as -errno ints (0 = success) on the hot paths, as in
// liburing; only the C API layer (api.cpp) turns them into umrt_status + umrt_last_error().
#pragma once

#include <umrt/umrt.h>

#include <cstddef>
#include <cstdint>
#include <string>

// Sanitizer builds (gcc defines __SANITIZE_*__, clang answers __has_feature).
#if defined(__SANITIZE_ADDRESS__)
#define UMRT_ASAN 1
#endif
#if defined(__SANITIZE_THREAD__)
#define UMRT_TSAN 1
#endif
#if defined(__has_feature)
#if __has_feature(address_sanitizer) && !defined(UMRT_ASAN)
#define UMRT_ASAN 1
#endif
#if __has_feature(thread_sanitizer) && !defined(UMRT_TSAN)
#define UMRT_TSAN 1
#endif
#endif

namespace umrt::rt {

#if defined(UMRT_ASAN)
constexpr bool kAsan = true;
#else
constexpr bool kAsan = false;
#endif
#if defined(UMRT_TSAN)
constexpr bool kTsan = true;
#else
constexpr bool kTsan = false;
#endif

constexpr size_t kPageShift = 12;
constexpr size_t kPageSize = size_t{1} << kPageShift;     // 4 KiB: the unit of residency
constexpr size_t kBlockPages = 512;                         // pages per block
constexpr size_t kBlockSize = kPageSize * kBlockPages;      // 2 MiB: batching, chunks

inline constexpr size_t pages_of(size_t bytes) { return (bytes + kPageSize - 1) >> kPageShift; }
inline constexpr size_t round_up(size_t v, size_t a) { return (v + a - 1) / a * a; }

// The integer in an enum value that came from a user: it may hold any value, and loading an
// out-of-range value as the enum type is undefined behaviour, so read the bytes.
template <typename E>
inline int enum_int(const E &e) {
  static_assert(sizeof(E) == sizeof(int));
  int v;
  __builtin_memcpy(&v, &e, sizeof v);
  return v;
}

// Storage I/O failures (a file's or the swap file's read, write or fdatasync) travel tagged, so
// that the API reports them as UMRT_ERROR_IO and not as a device failure: io_error(-EIO) is
// -EIO - kIoTag; io_errno() gives the errno back. Untagged codes pass through both unchanged.
constexpr int kIoTag = 1 << 12;
inline constexpr int io_error(int rc) { return rc < 0 && rc > -kIoTag ? rc - kIoTag : rc; }
inline constexpr bool is_io_error(int rc) { return rc <= -kIoTag; }
inline constexpr int io_errno(int rc) { return is_io_error(rc) ? rc + kIoTag : rc; }

// Logging: level from the configuration (UMRT_LOG). Never throws.
enum class Level { error = 1, warn = 2, info = 3, debug = 4 };
void set_log_level(Level l);
bool log_enabled(Level l);
void log(Level l, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

// Thread-local failure detail returned by umrt_last_error(); set_error returns s for chaining.
umrt_status set_error(umrt_status s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
const char *last_error();
void clear_error();

#if UMRT_DEBUG_CHECKS
[[noreturn]] void check_failed(const char *expr, const char *file, int line, const char *msg);
#define UMRT_CHECK(cond, msg) \
  ((cond) ? (void)0 : ::umrt::rt::check_failed(#cond, __FILE__, __LINE__, (msg)))
#else
#define UMRT_CHECK(cond, msg) ((void)0)
#endif

}  // namespace umrt::rt
