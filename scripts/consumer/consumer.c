/* consumer.c — checks that a C program outside the umrt tree builds and links against umrt
 * (through add_subdirectory() or find_package(umrt CONFIG)) and that the basic contract holds:
 * fill 8 MiB on the CPU, prefetch it to the device, read it back through CPU faults; then
 * oversubscribe (16 MiB of device memory, 64 MiB prefetched) and check every byte.
 * Written against include/umrt/umrt.h only. Prints OK and exits 0 on success. */
#include <umrt/umrt.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CHECK(call)                                                                     \
  do {                                                                                  \
    umrt_status s_ = (call);                                                            \
    if (s_ != UMRT_SUCCESS) {                                                           \
      fprintf(stderr, "consumer: %s:%d: %s failed: %s (%s)\n", __FILE__, __LINE__, #call, \
              umrt_status_string(s_), umrt_last_error());                               \
      exit(2);                                                                          \
    }                                                                                   \
  } while (0)

#define EXPECT(cond)                                                                   \
  do {                                                                                 \
    if (!(cond)) {                                                                     \
      fprintf(stderr, "consumer: %s:%d: expected %s\n", __FILE__, __LINE__, #cond);    \
      exit(1);                                                                         \
    }                                                                                  \
  } while (0)

static uint64_t value_of(size_t i, uint64_t seed) { return (i * 0x9E3779B97F4A7C15ull) ^ seed; }

static void fill(uint64_t *p, size_t n, uint64_t seed) {
  for (size_t i = 0; i < n; ++i) p[i] = value_of(i, seed);
}

/* Index of the first wrong element, or n when all are right. */
static size_t first_wrong(const uint64_t *p, size_t n, uint64_t seed) {
  for (size_t i = 0; i < n; ++i)
    if (p[i] != value_of(i, seed)) return i;
  return n;
}

static void round_trip(void) {
  const size_t bytes = (size_t)8 << 20;
  const size_t n = bytes / sizeof(uint64_t);
  void *ptr = NULL;
  umrt_location loc;
  umrt_stats before, after;

  CHECK(umrt_init(NULL));
  EXPECT(umrt_backend_name() != NULL);
  printf("consumer: backend %s\n", umrt_backend_name());

  CHECK(umrt_malloc(&ptr, bytes));
  uint64_t *p = (uint64_t *)ptr;
  CHECK(umrt_page_location(p, &loc));
  EXPECT(loc == UMRT_LOCATION_HOST); /* never touched: reads as HOST */
  fill(p, n, 1);

  CHECK(umrt_prefetch(p, bytes, UMRT_LOCATION_DEVICE, NULL));
  CHECK(umrt_page_location(p, &loc));
  EXPECT(loc == UMRT_LOCATION_DEVICE);
  CHECK(umrt_page_location(p + n - 1, &loc));
  EXPECT(loc == UMRT_LOCATION_DEVICE);
  void *dptr = NULL;
  CHECK(umrt_device_pointer(p, &dptr));
  EXPECT(dptr != NULL);
  CHECK(umrt_validate());

  /* Read back on the CPU: no prefetch, the pages fault home. */
  CHECK(umrt_get_stats(&before));
  EXPECT(before.bytes_to_device >= bytes);
  size_t bad = first_wrong(p, n, 1);
  if (bad != n) {
    fprintf(stderr, "consumer: round trip: element %zu is %llx, expected %llx\n", bad,
            (unsigned long long)p[bad], (unsigned long long)value_of(bad, 1));
    exit(1);
  }
  CHECK(umrt_get_stats(&after));
  EXPECT(after.cpu_faults > before.cpu_faults);
  EXPECT(after.bytes_to_host > before.bytes_to_host);
  CHECK(umrt_page_location(p, &loc));
  EXPECT(loc == UMRT_LOCATION_HOST);
  CHECK(umrt_validate());

  CHECK(umrt_free(p));
  EXPECT(umrt_free(p) == UMRT_ERROR_INVALID_VALUE);
  CHECK(umrt_shutdown());
  printf("consumer: round trip of %zu MiB: %llu cpu faults, %llu bytes back to host\n",
         bytes >> 20, (unsigned long long)(after.cpu_faults - before.cpu_faults),
         (unsigned long long)(after.bytes_to_host - before.bytes_to_host));
}

static void oversubscribe(void) {
  const size_t bytes = (size_t)64 << 20;
  const size_t n = bytes / sizeof(uint64_t);
  umrt_config cfg;
  umrt_stats st;
  void *ptr = NULL;

  CHECK(umrt_config_defaults(&cfg));
  cfg.device_memory = (uint64_t)16 << 20;
  CHECK(umrt_init(&cfg));
  CHECK(umrt_get_stats(&st));
  EXPECT(st.device_capacity == cfg.device_memory);

  CHECK(umrt_malloc(&ptr, bytes));
  uint64_t *p = (uint64_t *)ptr;
  fill(p, n, 2);
  CHECK(umrt_prefetch(p, bytes, UMRT_LOCATION_DEVICE, NULL));
  CHECK(umrt_get_stats(&st));
  EXPECT(st.evictions > 0);
  EXPECT(st.device_bytes_in_use <= st.device_capacity);
  CHECK(umrt_validate());

  size_t bad = first_wrong(p, n, 2);
  if (bad != n) {
    fprintf(stderr, "consumer: oversubscribe: element %zu is %llx, expected %llx\n", bad,
            (unsigned long long)p[bad], (unsigned long long)value_of(bad, 2));
    exit(1);
  }
  CHECK(umrt_validate());
  CHECK(umrt_free(p));
  CHECK(umrt_shutdown());
  printf("consumer: oversubscribed %zu MiB over %llu MiB of device memory: %llu evictions\n",
         bytes >> 20, (unsigned long long)(cfg.device_memory >> 20),
         (unsigned long long)st.evictions);
}

int main(void) {
  setvbuf(stdout, NULL, _IOLBF, 0);
  round_trip();
  oversubscribe();
  printf("OK\n");
  return 0;
}
