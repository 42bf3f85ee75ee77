/* c_helpers.c — calls with out-of-range enum values, made from C where an enum object may hold
 * any int value (in C++ such a value is undefined behaviour in the test itself). The C API must
 * refuse them with UMRT_ERROR_INVALID_VALUE without undefined behaviour of its own. */
#include <umrt/umrt.h>

umrt_status umrt_test_prefetch_loc(const void *ptr, size_t size, int loc) {
  return umrt_prefetch(ptr, size, (umrt_location)loc, NULL);
}

umrt_status umrt_test_inject(int kind, uint64_t nth, uint64_t count) {
  return umrt_inject_failure((umrt_inject_kind)kind, nth, count);
}

const char *umrt_test_status_string(int s) { return umrt_status_string((umrt_status)s); }

void umrt_test_set_backend(umrt_config *cfg, int v) { cfg->backend = (umrt_backend_kind)v; }
void umrt_test_set_log_level(umrt_config *cfg, int v) { cfg->log_level = (umrt_log_level)v; }
void umrt_test_set_write_fault(umrt_config *cfg, int v) { cfg->write_fault = (umrt_write_fault_policy)v; }
