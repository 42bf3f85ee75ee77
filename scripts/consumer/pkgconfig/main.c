/* main.c — the C example of the README ("Using it from C"), built by scripts/test.sh's consumer
 * step with `pkg-config --cflags --libs umrt` against the installed package. Kept identical to
 * the README's (the consumer step checks that). */
#include <umrt/umrt.h>
#include <stdio.h>

int main(void) {
  const size_t n = 1 << 20, bytes = n * sizeof(float);
  void *p, *dp;
  umrt_status s = umrt_malloc(&p, bytes);        /* the first call initialises umrt */
  if (s != UMRT_SUCCESS) {
    fprintf(stderr, "umrt_malloc: %s (%s)\n", umrt_status_string(s), umrt_last_error());
    return 1;
  }
  float *x = p;
  for (size_t i = 0; i < n; ++i) x[i] = (float)i;               /* first touch on the CPU */

  s = umrt_prefetch(x, bytes, UMRT_LOCATION_DEVICE, NULL);       /* stream NULL: synchronous */
  if (s == UMRT_SUCCESS) s = umrt_device_pointer(x, &dp);
  if (s != UMRT_SUCCESS) {
    fprintf(stderr, "%s (%s)\n", umrt_status_string(s), umrt_last_error());
    return 1;
  }
  /* ... run a kernel on the device address dp ... */

  printf("%f\n", x[12345]);        /* the CPU touches it again: the page faults back */
  umrt_free(x);
  umrt_shutdown();
  return 0;
}
