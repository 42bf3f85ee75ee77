// config.cpp — umrt_config resolution: explicit fields win, then UMRT_* variables, then defaults.
#include "config.h"

#include <sched.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>

namespace umrt::rt {

bool parse_bytes(const char *s, uint64_t *out) {
  if (!s || !*s) return false;
  errno = 0;
  char *end = nullptr;
  unsigned long long v = std::strtoull(s, &end, 10);
  if (errno || end == s || s[0] == '-') return false;
  uint64_t mul = 1;
  switch (*end) {
    case '\0': break;
    case 'k': case 'K': mul = 1ull << 10; ++end; break;
    case 'm': case 'M': mul = 1ull << 20; ++end; break;
    case 'g': case 'G': mul = 1ull << 30; ++end; break;
    case 't': case 'T': mul = 1ull << 40; ++end; break;
    default: return false;
  }
  if (*end == 'i' || *end == 'I') ++end;
  if (*end == 'b' || *end == 'B') ++end;
  if (*end != '\0') return false;
  if (v > UINT64_MAX / mul) return false;
  *out = v * mul;
  return true;
}

namespace {

bool parse_u32(const char *s, uint32_t *out) {
  errno = 0;
  char *end = nullptr;
  unsigned long v = std::strtoul(s, &end, 10);
  if (errno || end == s || *end || s[0] == '-' || v > UINT32_MAX) return false;
  *out = static_cast<uint32_t>(v);
  return true;
}

umrt_status bad_env(const char *name, const char *value, const char *expect) {
  return set_error(UMRT_ERROR_INVALID_VALUE, "%s=\"%s\" is not valid: expected %s", name, value,
                   expect);
}

}  // namespace

// One copy engine per usable CPU but one (the submitting threads copy too), 1 to 8:
// docs/design.md, "Copy engines".
long usable_cpus() {
  cpu_set_t set;
  CPU_ZERO(&set);
  return sched_getaffinity(0, sizeof set, &set) == 0 ? CPU_COUNT(&set) : sysconf(_SC_NPROCESSORS_ONLN);
}

uint32_t default_copy_threads() {
  const long cpus = usable_cpus();
  if (cpus < 2) return 1;
  return static_cast<uint32_t>(std::min<long>(cpus - 1, 8));
}

// Fault-service threads: one per usable CPU (faults of different blocks are served at once),
// at most 8 by default (they sleep in poll() when no fault comes).
uint32_t default_fault_threads() {
  return static_cast<uint32_t>(std::clamp<long>(usable_cpus(), 1, 8));
}

bool inject_env(const char *name, uint64_t *nth) {
  const char *v = std::getenv(name);
  *nth = 0;
  if (!v || !*v) return true;
  return parse_bytes(v, nth) && *nth != 0;
}

bool stat_env(bool *on) {
  const char *v = std::getenv("UMRT_STAT");
  *on = true;
  if (!v || !*v || !std::strcmp(v, "1") || !std::strcmp(v, "on")) return true;
  if (!std::strcmp(v, "0") || !std::strcmp(v, "off")) {
    *on = false;
    return true;
  }
  return false;
}

bool stat_interval_env(uint32_t *ms) {
  const char *v = std::getenv("UMRT_STAT_INTERVAL");
  *ms = 250;
  if (!v || !*v) return true;
  return parse_u32(v, ms) && *ms >= 1 && *ms <= 10000;
}

umrt_status resolve_config(umrt_config *c) {
  const char *v;
  if (bool stat_on; !stat_env(&stat_on)) return bad_env("UMRT_STAT", std::getenv("UMRT_STAT"), "1, on, 0 or off");
  if (uint32_t ms; !stat_interval_env(&ms))
    return bad_env("UMRT_STAT_INTERVAL", std::getenv("UMRT_STAT_INTERVAL"), "milliseconds, 1 to 10000");
  if (enum_int(c->backend) == UMRT_BACKEND_DEFAULT) {
    c->backend = UMRT_BACKEND_AUTO;
    if ((v = std::getenv("UMRT_BACKEND")) && *v) {
      if (!std::strcmp(v, "auto")) c->backend = UMRT_BACKEND_AUTO;
      else if (!std::strcmp(v, "sim")) c->backend = UMRT_BACKEND_SIM;
      else if (!std::strcmp(v, "cuda")) c->backend = UMRT_BACKEND_CUDA;
      else return bad_env("UMRT_BACKEND", v, "auto, cuda or sim");
    }
  } else if (enum_int(c->backend) < UMRT_BACKEND_AUTO || enum_int(c->backend) > UMRT_BACKEND_CUDA) {
    return set_error(UMRT_ERROR_INVALID_VALUE, "umrt_config.backend %d is not a backend kind",
                     enum_int(c->backend));
  }
  if (c->device_memory == 0 && (v = std::getenv("UMRT_DEVICE_MEMORY")) && *v) {
    if (!parse_bytes(v, &c->device_memory) || c->device_memory == 0)
      return bad_env("UMRT_DEVICE_MEMORY", v, "a byte count such as 512M or 8G");
  }
  // 0 = the backend's default. umrt_init refuses nothing that umrt_config_defaults accepted.
  if (c->device_memory && c->device_memory < kBlockSize)
    return set_error(UMRT_ERROR_INVALID_VALUE, "device memory %llu bytes is below one 2 MiB chunk",
                     static_cast<unsigned long long>(c->device_memory));
  if (c->device_memory / kBlockSize > UINT32_MAX - 1)
    return set_error(UMRT_ERROR_INVALID_VALUE, "device memory %llu bytes is too large",
                     static_cast<unsigned long long>(c->device_memory));
  for (const char *name : {"UMRT_SIM_FAIL_ALLOC", "UMRT_SIM_FAIL_COPY"}) {
    uint64_t nth = 0;
    if ((v = std::getenv(name)) && *v && !inject_env(name, &nth))
      return bad_env(name, v, "a count >= 1");
  }
  if (enum_int(c->log_level) == UMRT_LOG_DEFAULT) {
    c->log_level = UMRT_LOG_WARN;
    if ((v = std::getenv("UMRT_LOG")) && *v) {
      if (!std::strcmp(v, "error")) c->log_level = UMRT_LOG_ERROR;
      else if (!std::strcmp(v, "warn")) c->log_level = UMRT_LOG_WARN;
      else if (!std::strcmp(v, "info")) c->log_level = UMRT_LOG_INFO;
      else if (!std::strcmp(v, "debug")) c->log_level = UMRT_LOG_DEBUG;
      else return bad_env("UMRT_LOG", v, "error, warn, info or debug");
    }
  } else if (enum_int(c->log_level) < UMRT_LOG_ERROR || enum_int(c->log_level) > UMRT_LOG_DEBUG) {
    return set_error(UMRT_ERROR_INVALID_VALUE, "umrt_config.log_level %d is not a level",
                     enum_int(c->log_level));
  }
  struct U32 { uint32_t *field; const char *env; uint32_t def; uint32_t lo, hi; };
  const U32 u32s[] = {
      {&c->copy_threads, "UMRT_COPY_THREADS", default_copy_threads(), 1, 64},
      {&c->fault_threads, "UMRT_FAULT_THREADS", default_fault_threads(), 1, 64},
      {&c->prefetch_min_pages, "UMRT_PREFETCH_MIN", 4, 1, 512},
      {&c->prefetch_max_pages, "UMRT_PREFETCH_MAX", 512, 1, 512},
      {&c->sim_latency_us, "UMRT_SIM_LATENCY_US", 0, 0, 10'000'000},
  };
  for (const U32 &u : u32s) {
    bool from_field = *u.field != 0;
    if (!from_field && (v = std::getenv(u.env)) && *v) {
      if (!parse_u32(v, u.field)) return bad_env(u.env, v, "a non-negative integer");
    }
    if (*u.field == 0) *u.field = u.def;
    if (*u.field < u.lo || *u.field > u.hi)
      return set_error(UMRT_ERROR_INVALID_VALUE, "%s = %u is out of range [%u, %u]", u.env,
                       *u.field, u.lo, u.hi);
  }
  if (c->prefetch_min_pages > c->prefetch_max_pages)
    return set_error(UMRT_ERROR_INVALID_VALUE, "prefetch window: min %u pages > max %u pages",
                     c->prefetch_min_pages, c->prefetch_max_pages);
  if (enum_int(c->write_fault) == UMRT_WRITE_FAULT_DEFAULT) {
    c->write_fault = UMRT_WRITE_FAULT_CANCEL;
    if ((v = std::getenv("UMRT_WRITE_FAULT")) && *v) {
      if (!std::strcmp(v, "cancel")) c->write_fault = UMRT_WRITE_FAULT_CANCEL;
      else if (!std::strcmp(v, "wait")) c->write_fault = UMRT_WRITE_FAULT_WAIT;
      else return bad_env("UMRT_WRITE_FAULT", v, "cancel or wait");
    }
  } else if (enum_int(c->write_fault) != UMRT_WRITE_FAULT_CANCEL &&
             enum_int(c->write_fault) != UMRT_WRITE_FAULT_WAIT) {
    return set_error(UMRT_ERROR_INVALID_VALUE, "umrt_config.write_fault %d is not a policy",
                     enum_int(c->write_fault));
  }
  if (c->device_pool == 0 && (v = std::getenv("UMRT_DEVICE_POOL")) && *v) {
    if (!std::strcmp(v, "none")) c->device_pool = 1;  // below one chunk: keep none
    else if (!parse_bytes(v, &c->device_pool) || c->device_pool == 0)
      return bad_env("UMRT_DEVICE_POOL", v, "a byte count such as 256M, or none");
  }
  if (c->host_pool == 0) {
    c->host_pool = kDefaultHostPool;
    if ((v = std::getenv("UMRT_HOST_POOL")) && *v) {
      if (!std::strcmp(v, "none")) c->host_pool = 1;  // below one slot: keep none
      else if (!parse_bytes(v, &c->host_pool) || c->host_pool == 0)
        return bad_env("UMRT_HOST_POOL", v, "a byte count such as 256M, or none");
    }
  }
  if (c->host_memory == 0 && (v = std::getenv("UMRT_HOST_MEMORY")) && *v) {
    if (!parse_bytes(v, &c->host_memory) || c->host_memory == 0)
      return bad_env("UMRT_HOST_MEMORY", v, "a byte count such as 8G (at least 4M)");
    if (c->host_memory < kMinHostMemory) return bad_env("UMRT_HOST_MEMORY", v, "at least 4M");
  }
  if (c->host_memory != 0 && c->host_memory < kMinHostMemory)
    return set_error(UMRT_ERROR_INVALID_VALUE, "umrt_config.host_memory %llu is below 4 MiB (0: no budget)",
                     static_cast<unsigned long long>(c->host_memory));
  if (c->sim_bandwidth_gbps == 0 && (v = std::getenv("UMRT_SIM_BANDWIDTH")) && *v) {
    char *end = nullptr;
    double d = std::strtod(v, &end);
    if (end == v || *end || !(d >= 0)) return bad_env("UMRT_SIM_BANDWIDTH", v, "GB/s >= 0");
    c->sim_bandwidth_gbps = d;
  }
  if (!(c->sim_bandwidth_gbps >= 0) || c->sim_bandwidth_gbps > 1e6)
    return set_error(UMRT_ERROR_INVALID_VALUE, "umrt_config.sim_bandwidth_gbps must be >= 0");
  return UMRT_SUCCESS;
}

}  // namespace umrt::rt
