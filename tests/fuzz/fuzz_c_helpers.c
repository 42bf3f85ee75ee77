/* fuzz_c_helpers.c — for fuzz_api.cpp: calls that pass arbitrary ints where umrt.h takes an
 * enum. A C enum object may hold any int value; in C++ loading such a value is undefined
 * behaviour in the caller, so the out-of-range values the fuzzer tries are passed from here. */
#include <umrt/umrt.h>

umrt_status umrt_fuzz_prefetch(const void *ptr, size_t size, int loc) {
  return umrt_prefetch(ptr, size, (umrt_location)loc, NULL);
}

umrt_status umrt_fuzz_inject(int kind, uint64_t nth, uint64_t count) {
  return umrt_inject_failure((umrt_inject_kind)kind, nth, count);
}

const char *umrt_fuzz_status_string(int s) { return umrt_status_string((umrt_status)s); }
