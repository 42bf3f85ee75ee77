// sample_util.h — what every umrt sample needs and no reader needs to see: "--name value"
// arguments with K/M/G sizes, timing, GB/s, and umrt errors turned into a message and exit 2.
// Header-only; C++20.
#pragma once

#include <umrt/umrt.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <initializer_list>
#include <string>

namespace sample {

using clock_type = std::chrono::steady_clock;
inline double seconds_since(clock_type::time_point t0) {
  return std::chrono::duration<double>(clock_type::now() - t0).count();
}
inline double mib(uint64_t bytes) { return static_cast<double>(bytes) / (1024.0 * 1024.0); }
inline double gbps(uint64_t bytes, double s) { return s > 0 ? static_cast<double>(bytes) / s / 1e9 : 0; }

// "64M" -> 64 * 2^20 (K/M/G binary). False on anything else, 0 included.
inline bool parse_size(const char *s, uint64_t *out) {
  if (!s || !*s || *s == '-') return false;
  char *end = nullptr;
  unsigned long long v = std::strtoull(s, &end, 10);
  if (end == s) return false;
  uint64_t mul = 1;
  switch (*end) {
    case '\0': break;
    case 'k': case 'K': mul = 1ull << 10; ++end; break;
    case 'm': case 'M': mul = 1ull << 20; ++end; break;
    case 'g': case 'G': mul = 1ull << 30; ++end; break;
    default: return false;
  }
  if (*end != '\0' || v == 0 || v > UINT64_MAX / mul) return false;
  *out = v * mul;
  return true;
}

// Arguments "--name value ..."; unknown names or bad values: usage and exit 2.
struct Args {
  int argc;
  char **argv;
  const char *usage;
  [[noreturn]] void bad(const char *what) const {
    std::fprintf(stderr, "%s: %s\nusage: %s %s\n", argv[0], what, argv[0], usage);
    std::exit(2);
  }
  // The value after --name, or nullptr; every argument must be a known "--name value" pair.
  const char *get(const char *name) const {
    for (int i = 1; i + 1 < argc; i += 2)
      if (std::strcmp(argv[i] + 2, name) == 0 && std::strncmp(argv[i], "--", 2) == 0) return argv[i + 1];
    return nullptr;
  }
  uint64_t size(const char *name, uint64_t def) const {
    const char *v = get(name);
    uint64_t out = def;
    if (v && !parse_size(v, &out)) bad((std::string("--") + name + ": not a size like 64M").c_str());
    return out;
  }
  void check_known(std::initializer_list<const char *> names) const {
    if (argc % 2 == 0) bad("arguments come in --name value pairs");
    for (int i = 1; i < argc; i += 2) {
      bool ok = false;
      for (const char *n : names) ok = ok || (std::strncmp(argv[i], "--", 2) == 0 && std::strcmp(argv[i] + 2, n) == 0);
      if (!ok) bad((std::string("unknown argument ") + argv[i]).c_str());
    }
  }
};

// A umrt call that must work: on failure, its status and umrt_last_error(), exit 2.
inline void check(umrt_status s, const char *what) {
  if (s == UMRT_SUCCESS) return;
  std::fprintf(stderr, "%s: %s (%s)\n", what, umrt_status_string(s), umrt_last_error());
  std::exit(2);
}

inline umrt_stats stats() {
  umrt_stats s{};
  check(umrt_get_stats(&s), "umrt_get_stats");
  return s;
}

}  // namespace sample
