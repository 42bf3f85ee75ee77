// config.h — the resolved runtime configuration: umrt_config fields, then UMRT_* environment,
// then defaults. Parsing errors are reported, never guessed around.
#pragma once

#include "common.h"

namespace umrt::rt {

// Parse a byte count with an optional K/M/G/T suffix (powers of 1024). false on bad input.
bool parse_bytes(const char *s, uint64_t *out);

// Fill every zero field of cfg from the environment and the defaults. Returns
// UMRT_ERROR_INVALID_VALUE (with last_error set) for a malformed variable or field.
umrt_status resolve_config(umrt_config *cfg);

// UMRT_STAT: the live statistics segment for umrt-stat (stat_segment.h) on (the default: unset,
// empty, 1, on) or off (0, off); *on says which. false if malformed.
bool stat_env(bool *on);
// UMRT_STAT_INTERVAL: milliseconds between the segment's updates (1 to 10000; default 250).
bool stat_interval_env(uint32_t *ms);

// UMRT_SIM_FAIL_ALLOC / UMRT_SIM_FAIL_COPY: *nth = the count, 0 when unset; false if malformed.
bool inject_env(const char *name, uint64_t *nth);

// The default number of copy engines on this machine (UMRT_COPY_THREADS unset).
uint32_t default_copy_threads();

constexpr uint64_t kSimDefaultDeviceMemory = uint64_t{4} << 30;
constexpr uint64_t kDefaultHostPool = uint64_t{256} << 20;  // docs/design.md, "Host pages kept for reuse"
constexpr uint64_t kMinHostMemory = uint64_t{4} << 20;     // UMRT_HOST_MEMORY floor: a few blocks

}  // namespace umrt::rt
