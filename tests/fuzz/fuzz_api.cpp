// fuzz_api.cpp — fuzz target over the public C API (umrt.h only). The input is turned (LLVM's
// FuzzedDataProvider) into a sequence of at most kMaxSteps operations on at most 4 allocations
// of 1 byte .. ~6 MiB (packed < 2 MiB ranges and multi-block ranges): umrt_malloc/free, CPU
// reads and writes, "kernel" writes through the device pointer (sim: host-addressable), prefetch
// of sub-spans to host/device, page_location, device_pointer, madvise (DONTNEED and harmless
// advice, mlock/munlock), injected ALLOC/COPY failures, stats, and boundary values (NULL, size 0, pointers just
// outside an allocation, freed pointers, out-of-range enums). A plain shadow model (one
// std::vector<uint8_t> per allocation) is checked after EVERY step against every byte of every
// live allocation, and umrt_validate() must succeed. A failed call must change nothing: the
// shadow stays as it was and the data still reads back. Every input frees what it allocated and
// disarms its injections; device memory in use must then be 0 (a leak across inputs is a
// finding). Any mismatch prints what was expected, the operations of the input, and traps.
//
// Built two ways: by clang with libFuzzer (tests/fuzz/CMakeLists.txt, scripts/fuzz.sh), and by
// the normal CMake build with replay_main.cpp (ctest fuzz.replay: runs tests/fuzz/corpus and
// tests/fuzz/regressions). UMRT_FUZZ_TRACE=1 prints each operation as it runs;
// UMRT_FUZZ_SELF_TEST=1 makes the model wrong on purpose after the first write (a check must then
// trap: proof that the checks can fail).
//
// MADV_DONTNEED model (what the runtime does today and what docs/design.md "Faults" states): a
// HOST page discarded by the user reads as zeros afterwards (as the kernel gives for anonymous
// memory); a DEVICE page has no host mapping, so the kernel has nothing to discard: the model
// accepts either the old bytes or zeros for it (the whole page one way), decided at the next
// check and fixed from then on.
//
// -DUMRT_FUZZ_PROCESS_EVENTS=1 adds munmap and mremap of ranges (semantics being fixed in
// runtime/: off by default).
#include <umrt/umrt.h>
#include "../../kernels/umrt_kernels.h"

#include <fuzzer/FuzzedDataProvider.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cinttypes>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#ifndef UMRT_FUZZ_PROCESS_EVENTS
#define UMRT_FUZZ_PROCESS_EVENTS 1
#endif

extern "C" {
umrt_status umrt_fuzz_prefetch(const void *ptr, size_t size, int loc);
umrt_status umrt_fuzz_inject(int kind, uint64_t nth, uint64_t count);
const char *umrt_fuzz_status_string(int s);
}

namespace {

constexpr size_t kPage = 4096;
constexpr size_t kBlock = size_t{2} << 20;
constexpr size_t kMaxAllocs = 4;
constexpr size_t kMaxSize = 6 * (size_t{1} << 20);
constexpr int kMaxSteps = 48;
constexpr uint64_t kDeviceMemory = 8 << 20;

size_t round_up(size_t v, size_t a) { return (v + a - 1) / a * a; }

using umrt_kernels::mix;  // the kernels' own bit mixer (kernels/umrt_kernels.h: plain C++ here)

struct Alloc {
  uint8_t *p = nullptr;
  size_t size = 0;
  uint8_t *dev = nullptr;             // umrt_device_pointer(p): device address of byte 0
  std::vector<uint8_t> shadow;        // what every byte must read as
  std::vector<uint8_t> maybe_zero;    // per page: discarded while on the device (old or zero)
  bool shrunk = false;                // process events: shrunk by mremap
  std::vector<uint8_t> mlocked;       // per page: mlock()ed (umrt cannot move it to the device)
  bool split = false;                 // advice or mlock on part of it may have split its mapping
  size_t npages() const { return (size + kPage - 1) / kPage; }
  size_t map_bytes() const { return npages() * kPage; }
  bool contains(uintptr_t a) const {
    return a >= reinterpret_cast<uintptr_t>(p) && a < reinterpret_cast<uintptr_t>(p) + size;
  }
};

struct State {
  std::vector<Alloc> allocs;
  std::vector<uintptr_t> stale;      // starts of freed allocations (for double-free checks)
  bool armed = false;                // an injection may still fire
  bool strict_host = false;          // check by reading the host address only (pulls pages home)
  umrt_stats last{};                 // for monotonicity of the counters
  std::vector<std::string> log;      // the operations of this input
  int step = 0;
};

State *g_st = nullptr;
bool g_trace = false;
bool g_self_test = false;
// UMRT_FUZZ_AVOID: comma-separated tags of known, reported findings to step around while
// exploring further (also read by scripts/fuzz.sh's run; CI never sets it):
//   status-string  umrt_status_string() only gets in-range values
//   fault-settle   umrt_validate() right after a CPU access may be retried for up to 100 ms
//                  (a faulting thread can resume before its fault batch has unlocked the page)
//   self-evict     after a successful prefetch to the device, pages of the span found on the
//                  host are tolerated (the prefetch can evict its own span's other blocks)
//   shrunk-move    (process events) moving all that is left of a range shrunk by mremap is
//                  taken as a partial move: the pages leave umrt with their data
//   piecewise-unmap (process events) umrt_free of a range munmap()ed in pieces (shrunk first)
//                  may return SUCCESS as well as INVALID_VALUE
//   mlock          no mlock/munlock (fixed: a prefetch of mlock()ed pages to the device fails
//                  with UMRT_ERROR_BACKEND and they stay on the host; it used to "succeed")
//   vma-split      no advice that changes VMA flags (NORMAL/RANDOM/SEQUENTIAL split the range's
//                  VMA; a later UFFDIO_COPY across the split fails with ENOENT)
std::string g_avoid;
bool avoid(const char *tag) {
  const std::string t = std::string(",") + tag + ",";
  return (std::string(",") + g_avoid + ",").find(t) != std::string::npos;
}

void dump_log() {
  if (!g_st) return;
  std::fprintf(stderr, "fuzz_api: operations of this input (%zu):\n", g_st->log.size());
  for (size_t i = 0; i < g_st->log.size(); ++i) std::fprintf(stderr, "  %3zu  %s\n", i, g_st->log[i].c_str());
}

[[noreturn]] __attribute__((format(printf, 1, 2))) void fail(const char *fmt, ...) {
  std::fprintf(stderr, "\nfuzz_api: FINDING at step %d: ", g_st ? g_st->step : -1);
  va_list ap;
  va_start(ap, fmt);
  std::vfprintf(stderr, fmt, ap);
  va_end(ap);
  const char *e = umrt_last_error();
  std::fprintf(stderr, "\nfuzz_api: umrt_last_error() (this thread's last failure, maybe an earlier call's): %s\n", e ? e : "(null)");
  dump_log();
  std::fflush(stderr);
  __builtin_trap();
}

__attribute__((format(printf, 1, 2))) void note(const char *fmt, ...) {
  char buf[512];
  va_list ap;
  va_start(ap, fmt);
  std::vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  g_st->log.emplace_back(buf);
  if (g_trace) std::fprintf(stderr, "fuzz_api: [%d] %s\n", g_st->step, buf);
}

const char *sname(umrt_status s) {
  const char *n = umrt_status_string(s);
  return n ? n : "(null)";
}

void expect_status(umrt_status got, umrt_status want, const char *what) {
  if (got != want) fail("%s returned %s, expected %s", what, sname(got), sname(want));
}

// ---- the model ---------------------------------------------------------------------------------

int find_alloc(State &st, uintptr_t a) {
  for (size_t i = 0; i < st.allocs.size(); ++i)
    if (st.allocs[i].contains(a)) return static_cast<int>(i);
  return -1;
}
int find_start(State &st, uintptr_t a) {
  for (size_t i = 0; i < st.allocs.size(); ++i)
    if (reinterpret_cast<uintptr_t>(st.allocs[i].p) == a) return static_cast<int>(i);
  return -1;
}

// Does [a, a + n) lie in one live allocation (what umrt_prefetch accepts)?
bool span_valid(State &st, uintptr_t a, size_t n) {
  if (a == 0 || n == 0) return false;
  int i = find_alloc(st, a);
  if (i < 0) return false;
  const Alloc &al = st.allocs[static_cast<size_t>(i)];
  return n <= al.size - (a - reinterpret_cast<uintptr_t>(al.p));
}

umrt_location location(const Alloc &a, size_t page) {
  umrt_location loc = UMRT_LOCATION_HOST;
  umrt_status s = umrt_page_location(a.p + page * kPage, &loc);
  if (s != UMRT_SUCCESS) fail("umrt_page_location(%p = alloc %p page %zu) returned %s", (void *)(a.p + page * kPage), (void *)a.p, page, sname(s));
  if (loc != UMRT_LOCATION_HOST && loc != UMRT_LOCATION_DEVICE) fail("umrt_page_location returned location %d", static_cast<int>(loc));
  return loc;
}

// Compare bytes [off, off + n) of allocation a read at `src` (its host or device address of
// byte off) with the shadow; resolve pages discarded while on the device.
void check_bytes(Alloc &a, const uint8_t *src, size_t off, size_t n, const char *via) {
  if (n == 0) return;
  if (std::memcmp(src, a.shadow.data() + off, n) == 0) return;
  for (size_t k = 0; k < n; ++k) {
    if (src[k] != a.shadow[off + k]) {
      size_t b = off + k;
      fail("byte %zu (page %zu, offset %zu in page) of allocation %p (%zu bytes) read through the %s address %p is 0x%02x, expected 0x%02x",
           b, b / kPage, b % kPage, (void *)a.p, a.size, via, (const void *)(src + k), src[k], a.shadow[b]);
    }
  }
}

// Page `pg` of a, read at `src` (page-aligned address of that page, host or device).
void check_page(Alloc &a, size_t pg, const uint8_t *src, const char *via) {
  const size_t off = pg * kPage, n = std::min(kPage, a.size - off);
  if (a.maybe_zero[pg]) {
    // Discarded while on the device: all old bytes, or all zeros.
    bool old = std::memcmp(src, a.shadow.data() + off, n) == 0;
    bool zero = true;
    for (size_t k = 0; k < n && zero; ++k) zero = src[k] == 0;
    if (!old && !zero)
      fail("page %zu of allocation %p (discarded with MADV_DONTNEED while on the device) reads neither as its old bytes nor as zeros (through the %s address)",
           pg, (void *)a.p, via);
    if (!old) std::memset(a.shadow.data() + off, 0, n);
    a.maybe_zero[pg] = 0;
    return;
  }
  check_bytes(a, src, off, n, via);
}

bool any_device_pages() {
  umrt_stats s{};
  if (umrt_get_stats(&s) != UMRT_SUCCESS) fail("umrt_get_stats failed");
  return s.device_bytes_in_use != 0;
}

void check_alloc(State &st, Alloc &a) {
  const bool device_aware = !st.strict_host && any_device_pages();
  for (size_t pg = 0; pg < a.npages(); ++pg) {
    if (device_aware && location(a, pg) == UMRT_LOCATION_DEVICE) check_page(a, pg, a.dev + pg * kPage, "device");
    else check_page(a, pg, a.p + pg * kPage, "host");
  }
}

void check_stats(State &st) {
  umrt_stats s{};
  expect_status(umrt_get_stats(&s), UMRT_SUCCESS, "umrt_get_stats");
  if (s.device_capacity != kDeviceMemory)
    fail("device_capacity is %" PRIu64 ", configured %" PRIu64, s.device_capacity, kDeviceMemory);
  if (s.device_bytes_in_use > s.device_capacity || s.device_bytes_in_use % kBlock)
    fail("device_bytes_in_use %" PRIu64 " (capacity %" PRIu64 ")", s.device_bytes_in_use, s.device_capacity);
  if (s.bytes_to_device != s.pages_to_device * kPage || s.bytes_to_host != s.pages_to_host * kPage)
    fail("bytes/pages counters disagree: to device %" PRIu64 " B / %" PRIu64 " pages, to host %" PRIu64 " B / %" PRIu64 " pages",
         s.bytes_to_device, s.pages_to_device, s.bytes_to_host, s.pages_to_host);
  static_assert(sizeof(umrt_stats) % sizeof(uint64_t) == 0);
  uint64_t now[sizeof(umrt_stats) / 8], was[sizeof(umrt_stats) / 8];
  std::memcpy(now, &s, sizeof s);
  std::memcpy(was, &st.last, sizeof s);
  // Monotonic counters: cpu_faults .. write_cancels (fields 0..12), pages_selected and the
  // protocol step times (15..19); device_bytes_in_use and device_capacity (13, 14) are levels.
  for (int i : {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 15, 16, 17, 18, 19})
    if (now[i] < was[i]) fail("statistics counter #%d went down: %" PRIu64 " -> %" PRIu64, i, was[i], now[i]);
  st.last = s;
}

void check_all(State &st) {
  for (Alloc &a : st.allocs) check_alloc(st, a);
  umrt_status v = umrt_validate();
  for (int k = 0; v != UMRT_SUCCESS && k < 50 && avoid("fault-settle"); ++k) {
    usleep(2000);
    v = umrt_validate();
  }
  if (v != UMRT_SUCCESS) fail("umrt_validate() returned %s", sname(v));
  check_stats(st);
}

// ---- choosing operands -------------------------------------------------------------------------

size_t pick_size(FuzzedDataProvider &in) {
  switch (in.ConsumeIntegralInRange<int>(0, 6)) {
    case 0: return in.ConsumeIntegralInRange<size_t>(1, 64);
    case 1: return in.ConsumeIntegralInRange<size_t>(1, 4 * kPage);
    case 2: return in.ConsumeIntegralInRange<size_t>(1, kBlock - 1);
    case 3: {  // around 2 MiB: the packed / large boundary
      static const size_t v[] = {kBlock - kPage, kBlock - kPage + 1, kBlock - 1, kBlock, kBlock + 1, kBlock + kPage};
      return in.PickValueInArray(v);
    }
    case 4: return in.ConsumeIntegralInRange<size_t>(kBlock + 1, kMaxSize);
    case 5: return in.ConsumeIntegralInRange<size_t>(1, 64) * kPage;
    default: {
      static const size_t v[] = {1, kPage - 1, kPage, kPage + 1, 2 * kBlock, 3 * kBlock - 1, kMaxSize};
      return in.PickValueInArray(v);
    }
  }
}

size_t pick_offset(FuzzedDataProvider &in, size_t size) {
  switch (in.ConsumeIntegralInRange<int>(0, 4)) {
    case 0: return 0;
    case 1: return in.ConsumeIntegralInRange<size_t>(0, size - 1);
    case 2: {  // near a page boundary
      size_t pg = in.ConsumeIntegralInRange<size_t>(0, (size - 1) / kPage) * kPage;
      size_t d = in.ConsumeIntegralInRange<size_t>(0, 8);
      return pg >= d && in.ConsumeBool() ? pg - d : std::min(size - 1, pg + d);
    }
    case 3: {  // near a block boundary
      size_t b = in.ConsumeIntegralInRange<size_t>(0, (size - 1) / kBlock) * kBlock;
      size_t d = in.ConsumeIntegralInRange<size_t>(0, 2 * kPage);
      return b >= d && in.ConsumeBool() ? b - d : std::min(size - 1, b + d);
    }
    default: return size - 1 - std::min(size - 1, in.ConsumeIntegralInRange<size_t>(0, 16));
  }
}

// A non-empty span [off, off + len) of an allocation of `size` bytes.
void pick_span(FuzzedDataProvider &in, size_t size, size_t *off, size_t *len) {
  if (in.ConsumeIntegralInRange<int>(0, 7) == 0) {
    *off = 0;
    *len = size;
    return;
  }
  *off = pick_offset(in, size);
  const size_t room = size - *off;
  size_t n;
  switch (in.ConsumeIntegralInRange<int>(0, 4)) {
    case 0: n = in.ConsumeIntegralInRange<size_t>(1, 16); break;
    case 1: n = in.ConsumeIntegralInRange<size_t>(1, kPage + 1); break;
    case 2: n = in.ConsumeIntegralInRange<size_t>(1, 64 * kPage); break;
    case 3: n = in.ConsumeIntegralInRange<size_t>(1, 3 * kBlock); break;
    default: n = room; break;
  }
  *len = std::min(n, room);
}

Alloc *pick_alloc(State &st, FuzzedDataProvider &in) {
  if (st.allocs.empty()) return nullptr;
  return &st.allocs[in.ConsumeIntegralInRange<size_t>(0, st.allocs.size() - 1)];
}

// Bytes to write: a byte value, a pattern from a seed, or bytes of the input repeated.
void make_bytes(FuzzedDataProvider &in, size_t off, size_t len, std::vector<uint8_t> *out) {
  out->resize(len);
  switch (in.ConsumeIntegralInRange<int>(0, 2)) {
    case 0: std::memset(out->data(), in.ConsumeIntegral<uint8_t>(), len); break;
    case 1: {
      uint64_t seed = in.ConsumeIntegral<uint32_t>();
      for (size_t k = 0; k < len; ++k) (*out)[k] = static_cast<uint8_t>(mix(seed * 0x9e3779b97f4a7c15ull + off + k) >> 17);
      break;
    }
    default: {
      std::vector<uint8_t> piece = in.ConsumeBytes<uint8_t>(in.ConsumeIntegralInRange<size_t>(1, 64));
      if (piece.empty()) piece.push_back(0xa5);
      for (size_t k = 0; k < len; ++k) (*out)[k] = piece[k % piece.size()];
      break;
    }
  }
}

// A pointer the model says is NOT usable (or, rarely, one that happens to be: the caller checks
// with the model either way).
uintptr_t pick_bad_pointer(State &st, FuzzedDataProvider &in, const void *stack_addr) {
  static std::vector<uint8_t> heap(64);
  Alloc *a = pick_alloc(st, in);
  const uintptr_t base = a ? reinterpret_cast<uintptr_t>(a->p) : 0;
  switch (in.ConsumeIntegralInRange<int>(0, 10)) {
    case 0: return 0;
    case 1: return a ? base - 1 : 0;
    case 2: return a ? base - kPage : 0;
    case 3: return a ? base + a->size : 0;                       // one past the last byte
    case 4: return a ? base + a->map_bytes() : 0;                // past the last page
    case 5: return a ? base + a->map_bytes() + kPage : 0;
    case 6: return st.stale.empty() ? 1 : st.stale[in.ConsumeIntegralInRange<size_t>(0, st.stale.size() - 1)];
    case 7: return reinterpret_cast<uintptr_t>(stack_addr);
    case 8: return reinterpret_cast<uintptr_t>(heap.data());
    case 9: return ~uintptr_t{0} - kPage + 1;
    default: return uintptr_t{0xffff800000000000ull};
  }
}

// ---- operations --------------------------------------------------------------------------------

void op_malloc(State &st, FuzzedDataProvider &in) {
  if (st.allocs.size() >= kMaxAllocs) return;
  const size_t size = pick_size(in);
  void *p = reinterpret_cast<void *>(uintptr_t{0xdead0000});
  note("malloc(%zu)", size);
  umrt_status s = umrt_malloc(&p, size);
  expect_status(s, UMRT_SUCCESS, "umrt_malloc");
  if (!p || reinterpret_cast<uintptr_t>(p) == 0xdead0000) fail("umrt_malloc succeeded without a pointer (%p)", p);
  const uintptr_t a = reinterpret_cast<uintptr_t>(p);
  for (Alloc &o : st.allocs) {
    const uintptr_t b = reinterpret_cast<uintptr_t>(o.p);
    if (a < b + o.map_bytes() && b < a + round_up(size, kPage))
      fail("umrt_malloc(%zu) returned %p, overlapping the live allocation %p (%zu bytes)", size, p, (void *)o.p, o.size);
  }
  Alloc al;
  al.p = static_cast<uint8_t *>(p);
  al.size = size;
  al.shadow.assign(size, 0);  // never-touched memory reads as zero
  al.maybe_zero.assign(al.npages(), 0);
  al.mlocked.assign(al.npages(), 0);
  void *d = nullptr;
  expect_status(umrt_device_pointer(p, &d), UMRT_SUCCESS, "umrt_device_pointer(new allocation)");
  if (!d) fail("umrt_device_pointer of a new allocation is NULL");
  al.dev = static_cast<uint8_t *>(d);
  st.stale.erase(std::remove_if(st.stale.begin(), st.stale.end(),
                                [&](uintptr_t x) { return x >= a && x < a + round_up(size, kPage); }),
                 st.stale.end());
  st.allocs.push_back(std::move(al));
  note("  -> %p (device %p)", p, d);
}

void forget(State &st, size_t i) {
  st.stale.push_back(reinterpret_cast<uintptr_t>(st.allocs[i].p));
  if (st.stale.size() > 8) st.stale.erase(st.stale.begin());
  st.allocs.erase(st.allocs.begin() + static_cast<long>(i));
}

void do_free(State &st, size_t i) {
  Alloc &a = st.allocs[i];
  note("free(%p) [%zu bytes]", (void *)a.p, a.size);
  expect_status(umrt_free(a.p), UMRT_SUCCESS, "umrt_free");
  // The host range is returned to the system: nothing may stay mapped there.
  unsigned char v[1];
  for (size_t pg = 0; pg < a.npages(); pg += std::max<size_t>(1, a.npages() / 16)) {
    if (mincore(a.p + pg * kPage, kPage, v) == 0 || errno != ENOMEM)
      fail("page %zu of the freed allocation %p (%zu bytes) is still mapped after umrt_free", pg, (void *)a.p, a.size);
  }
  forget(st, i);
}

void op_free(State &st, FuzzedDataProvider &in) {
  if (st.allocs.empty()) return;
  do_free(st, in.ConsumeIntegralInRange<size_t>(0, st.allocs.size() - 1));
}

void op_write(State &st, FuzzedDataProvider &in) {
  Alloc *a = pick_alloc(st, in);
  if (!a) return;
  size_t off, len;
  pick_span(in, a->size, &off, &len);
  std::vector<uint8_t> bytes;
  make_bytes(in, off, len, &bytes);
  note("write %p +%zu, %zu bytes (first 0x%02x)", (void *)a->p, off, len, bytes[0]);
  std::memcpy(a->p + off, bytes.data(), len);
  std::memcpy(a->shadow.data() + off, bytes.data(), len);
  if (g_self_test) a->shadow[off] ^= 1;
}

void op_read(State &st, FuzzedDataProvider &in) {
  Alloc *a = pick_alloc(st, in);
  if (!a) return;
  size_t off, len;
  pick_span(in, a->size, &off, &len);
  note("read %p +%zu, %zu bytes", (void *)a->p, off, len);
  check_bytes(*a, a->p + off, off, len, "host");
}

void op_read_all_host(State &st) {
  note("read every byte through the host addresses");
  for (Alloc &a : st.allocs)
    for (size_t pg = 0; pg < a.npages(); ++pg) check_page(a, pg, a.p + pg * kPage, "host");
}

void op_prefetch(State &st, FuzzedDataProvider &in) {
  Alloc *a = pick_alloc(st, in);
  if (!a) return;
  size_t off, len;
  pick_span(in, a->size, &off, &len);
  const umrt_location dst = in.ConsumeBool() ? UMRT_LOCATION_DEVICE : UMRT_LOCATION_HOST;
  note("prefetch %p +%zu, %zu bytes -> %s%s", (void *)a->p, off, len, dst == UMRT_LOCATION_DEVICE ? "device" : "host",
       st.armed ? " (injection armed)" : "");
  umrt_status s = umrt_prefetch(a->p + off, len, dst, nullptr);
  if (s != UMRT_SUCCESS) {
    if (st.armed && (s == UMRT_ERROR_BACKEND || s == UMRT_ERROR_OUT_OF_MEMORY)) {
      note("  -> %s (injected): %s", sname(s), umrt_last_error());
      return;  // nothing may have changed: the check after this step reads every byte
    }
    bool locked = false;  // README: mlock()ed pages cannot go to the device: BACKEND, they stay
    for (size_t pg = off / kPage; pg <= (off + len - 1) / kPage; ++pg) locked |= a->mlocked[pg] != 0;
    if (locked && dst == UMRT_LOCATION_DEVICE && s == UMRT_ERROR_BACKEND) {
      note("  -> %s (mlock()ed pages): %s", sname(s), umrt_last_error());
      return;
    }
    fail("umrt_prefetch(%p +%zu, %zu, %s) returned %s%s", (void *)a->p, off, len,
         dst == UMRT_LOCATION_DEVICE ? "DEVICE" : "HOST", sname(s), st.armed ? "" : " with no injection armed");
  }
  // Success: every page of the span is at dst; on the device it holds the data.
  for (size_t pg = off / kPage; pg <= (off + len - 1) / kPage; ++pg) {
    umrt_location l = location(*a, pg);
    if (l != dst && dst == UMRT_LOCATION_DEVICE && avoid("self-evict")) continue;
    if (l != dst)
      fail("umrt_prefetch(%p +%zu, %zu, %s) succeeded but page %zu is on the %s", (void *)a->p, off, len,
           dst == UMRT_LOCATION_DEVICE ? "DEVICE" : "HOST", pg, l == UMRT_LOCATION_DEVICE ? "device" : "host");
    if (dst == UMRT_LOCATION_DEVICE) check_page(*a, pg, a->dev + pg * kPage, "device");
  }
}

// A device "kernel": writes through the device pointer to the pages of the span that are on the
// device (sim: device memory is host-addressable).
void op_device_write(State &st, FuzzedDataProvider &in) {
  Alloc *a = pick_alloc(st, in);
  if (!a) return;
  size_t off, len;
  pick_span(in, a->size, &off, &len);
  std::vector<uint8_t> bytes;
  make_bytes(in, off, len, &bytes);
  size_t wrote = 0;
  for (size_t pg = off / kPage; pg <= (off + len - 1) / kPage; ++pg) {
    if (location(*a, pg) != UMRT_LOCATION_DEVICE) continue;
    const size_t lo = std::max(off, pg * kPage), hi = std::min(off + len, std::min(a->size, (pg + 1) * kPage));
    std::memcpy(a->dev + lo, bytes.data() + (lo - off), hi - lo);
    std::memcpy(a->shadow.data() + lo, bytes.data() + (lo - off), hi - lo);
    wrote += hi - lo;
  }
  note("device write %p +%zu, %zu bytes: %zu on device pages written", (void *)a->p, off, len, wrote);
}

void op_dontneed(State &st, FuzzedDataProvider &in) {
  Alloc *a = pick_alloc(st, in);
  if (!a) return;
  const size_t first = in.ConsumeIntegralInRange<size_t>(0, a->npages() - 1);
  const size_t n = in.ConsumeIntegralInRange<size_t>(1, a->npages() - first);
  std::vector<umrt_location> where(n);
  for (size_t k = 0; k < n; ++k) where[k] = location(*a, first + k);
  note("madvise(%p page %zu, %zu pages, MADV_DONTNEED)", (void *)a->p, first, n);
  bool locked = false;  // the kernel refuses to discard mlock()ed pages (EINVAL): nothing changes
  for (size_t k = 0; k < n; ++k) locked |= a->mlocked[first + k] != 0;
  if (madvise(a->p + first * kPage, n * kPage, MADV_DONTNEED) != 0) {
    if (locked && errno == EINVAL) {
      // The kernel works through the span's mappings in order and stops at the first locked one:
      // pages before it may be discarded already (zeros), the others keep their data.
      note("  -> EINVAL (mlock()ed pages in the span): pages before them may read as zeros");
      for (size_t k = 0; k < n && !a->mlocked[first + k]; ++k) a->maybe_zero[first + k] = 1;
      return;
    }
    fail("madvise(MADV_DONTNEED) on a managed range failed: %s", std::strerror(errno));
  }
  for (size_t k = 0; k < n; ++k) {
    const size_t pg = first + k, po = pg * kPage, len = std::min(kPage, a->size - po);
    if (where[k] == UMRT_LOCATION_HOST) {
      std::memset(a->shadow.data() + po, 0, len);  // discarded host page: zeros
      a->maybe_zero[pg] = 0;
    } else {
      a->maybe_zero[pg] = 1;  // on the device: old bytes or zeros
    }
  }
}

void op_advise(State &st, FuzzedDataProvider &in) {
  Alloc *a = pick_alloc(st, in);
  if (!a) return;
  static const int advice[] = {MADV_NORMAL, MADV_RANDOM, MADV_SEQUENTIAL, MADV_WILLNEED, MADV_COLD, MADV_PAGEOUT};
  static const char *names[] = {"madvise NORMAL", "madvise RANDOM", "madvise SEQUENTIAL", "madvise WILLNEED",
                                "madvise COLD", "madvise PAGEOUT", "mlock", "munlock"};
  size_t k = in.ConsumeIntegralInRange<size_t>(0, 7);
  if (avoid("vma-split") && k < 3) k += 3;
  if (avoid("mlock") && k >= 6) k -= 3;
  const size_t first = in.ConsumeIntegralInRange<size_t>(0, a->npages() - 1);
  const size_t n = in.ConsumeIntegralInRange<size_t>(1, a->npages() - first);
  uint8_t *at = a->p + first * kPage;
  // mlock/munlock as raw system calls: the sanitizers' interceptors turn mlock() into a no-op.
  const long rc = k == 6 ? syscall(SYS_mlock, at, n * kPage)
                  : k == 7 ? syscall(SYS_munlock, at, n * kPage)
                           : madvise(at, n * kPage, advice[k]);
  note("%s(%p page %zu, %zu pages) = %ld", names[k], (void *)a->p, first, n, rc);
  if (rc == 0 && (k == 1 || k == 2 || k >= 6)) a->split = true;  // flags of part of a mapping
  if (rc == 0 && k >= 6)
    for (size_t pg = first; pg < first + n; ++pg) a->mlocked[pg] = k == 6;
  // Whatever the kernel says, the data must not change (checked after the step).
}

void op_device_pointer(State &st, FuzzedDataProvider &in, const void *stack_addr) {
  const int mode = in.ConsumeIntegralInRange<int>(0, 3);
  Alloc *a = pick_alloc(st, in);
  if (mode == 0 && a) {  // a byte of an allocation: the linear device address
    size_t off = pick_offset(in, a->size);
    void *d = nullptr;
    note("device_pointer(%p +%zu)", (void *)a->p, off);
    expect_status(umrt_device_pointer(a->p + off, &d), UMRT_SUCCESS, "umrt_device_pointer");
    if (d != a->dev + off) fail("umrt_device_pointer(%p +%zu) = %p, expected %p (linear over the range)", (void *)a->p, off, d, (void *)(a->dev + off));
    return;
  }
  if (mode == 1 && a) {  // NULL dptr
    note("device_pointer(%p, NULL)", (void *)a->p);
    expect_status(umrt_device_pointer(a->p, nullptr), UMRT_ERROR_INVALID_VALUE, "umrt_device_pointer(dptr NULL)");
    return;
  }
  const uintptr_t bad = pick_bad_pointer(st, in, stack_addr);
  void *d = reinterpret_cast<void *>(uintptr_t{0x5a5a5a5a});
  note("device_pointer(%p) [bad pointer]", (void *)bad);
  umrt_status s = umrt_device_pointer(reinterpret_cast<void *>(bad), &d);
  int i = find_alloc(st, bad);
  if (i >= 0) {
    expect_status(s, UMRT_SUCCESS, "umrt_device_pointer(live byte)");
    const Alloc &x = st.allocs[static_cast<size_t>(i)];
    if (d != x.dev + (bad - reinterpret_cast<uintptr_t>(x.p))) fail("umrt_device_pointer(%p) = %p: not linear", (void *)bad, d);
  } else {
    expect_status(s, UMRT_ERROR_INVALID_VALUE, "umrt_device_pointer(pointer outside every allocation)");
    if (d != reinterpret_cast<void *>(uintptr_t{0x5a5a5a5a})) fail("a failed umrt_device_pointer wrote *dptr = %p", d);
  }
}

void op_page_location(State &st, FuzzedDataProvider &in, const void *stack_addr) {
  const int mode = in.ConsumeIntegralInRange<int>(0, 3);
  Alloc *a = pick_alloc(st, in);
  if (mode == 0 && a) {
    size_t off = pick_offset(in, a->size);
    note("page_location(%p +%zu)", (void *)a->p, off);
    (void)location(*a, off / kPage);
    umrt_location l{};
    expect_status(umrt_page_location(a->p + off, &l), UMRT_SUCCESS, "umrt_page_location(byte inside)");
    return;
  }
  if (mode == 1 && a) {
    note("page_location(%p, NULL)", (void *)a->p);
    expect_status(umrt_page_location(a->p, nullptr), UMRT_ERROR_INVALID_VALUE, "umrt_page_location(loc NULL)");
    return;
  }
  const uintptr_t bad = pick_bad_pointer(st, in, stack_addr);
  int raw = 0x5a5a5a5a;
  umrt_location l;
  std::memcpy(&l, &raw, sizeof l);
  note("page_location(%p) [bad pointer]", (void *)bad);
  umrt_status s = umrt_page_location(reinterpret_cast<void *>(bad), &l);
  if (find_alloc(st, bad) >= 0) {
    expect_status(s, UMRT_SUCCESS, "umrt_page_location(live byte)");
  } else {
    expect_status(s, UMRT_ERROR_INVALID_VALUE, "umrt_page_location(pointer outside every allocation)");
    int after;
    std::memcpy(&after, &l, sizeof after);
    if (after != raw) fail("a failed umrt_page_location wrote *loc = %d", after);
  }
}

void op_prefetch_bad(State &st, FuzzedDataProvider &in, const void *stack_addr) {
  Alloc *a = pick_alloc(st, in);
  uintptr_t p;
  size_t n;
  int loc = in.ConsumeBool() ? UMRT_LOCATION_DEVICE : UMRT_LOCATION_HOST;
  switch (in.ConsumeIntegralInRange<int>(0, 5)) {
    case 0:  // bad location on a good span
      if (!a) return;
      p = reinterpret_cast<uintptr_t>(a->p);
      n = a->size;
      loc = in.PickValueInArray({2, 3, -1, 7, 100, 0x7fffffff, -0x7fffffff - 1});
      break;
    case 1:  // size 0
      if (!a) return;
      p = reinterpret_cast<uintptr_t>(a->p) + pick_offset(in, a->size);
      n = 0;
      break;
    case 2:  // crosses the end by a little
      if (!a) return;
      {
        size_t off = pick_offset(in, a->size);
        p = reinterpret_cast<uintptr_t>(a->p) + off;
        n = a->size - off + in.ConsumeIntegralInRange<size_t>(1, 2 * kPage);
      }
      break;
    case 3:  // huge sizes
      if (!a) return;
      p = reinterpret_cast<uintptr_t>(a->p);
      n = in.PickValueInArray({~size_t{0}, ~size_t{0} - kPage, size_t{1} << 46, a->map_bytes() + 1});
      break;
    default:  // bad pointer
      p = pick_bad_pointer(st, in, stack_addr);
      n = in.ConsumeIntegralInRange<size_t>(1, 3 * kPage);
      break;
  }
  const bool valid = (loc == UMRT_LOCATION_HOST || loc == UMRT_LOCATION_DEVICE) && span_valid(st, p, n);
  note("prefetch(%p, %zu, location %d) [boundary; model: %s]", (void *)p, n, loc, valid ? "valid" : "invalid");
  umrt_status s = umrt_fuzz_prefetch(reinterpret_cast<void *>(p), n, loc);
  if (!valid) {
    expect_status(s, UMRT_ERROR_INVALID_VALUE, "umrt_prefetch(boundary arguments)");
  } else if (s != UMRT_SUCCESS && !(st.armed && (s == UMRT_ERROR_BACKEND || s == UMRT_ERROR_OUT_OF_MEMORY))) {
    fail("umrt_prefetch(%p, %zu, %d) on a valid span returned %s", (void *)p, n, loc, sname(s));
  }
}

void op_free_bad(State &st, FuzzedDataProvider &in, const void *stack_addr) {
  Alloc *a = pick_alloc(st, in);
  uintptr_t p;
  switch (in.ConsumeIntegralInRange<int>(0, 2)) {
    case 0:
      if (!a) return;
      p = reinterpret_cast<uintptr_t>(a->p) + in.ConsumeIntegralInRange<size_t>(1, a->size);  // inside / one past
      break;
    case 1:
      if (!a || a->npages() < 2) return;
      p = reinterpret_cast<uintptr_t>(a->p) + in.ConsumeIntegralInRange<size_t>(1, a->npages() - 1) * kPage;  // a later page
      break;
    default: p = pick_bad_pointer(st, in, stack_addr); break;
  }
  int i = find_start(st, p);
  note("free(%p) [boundary; model: %s]", (void *)p, i >= 0 ? "a live allocation" : "invalid");
  if (i >= 0) {
    do_free(st, static_cast<size_t>(i));
    return;
  }
  expect_status(umrt_free(reinterpret_cast<void *>(p)), UMRT_ERROR_INVALID_VALUE, "umrt_free(not an allocation start)");
}

void op_malloc_bad(FuzzedDataProvider &in) {
  void *p = reinterpret_cast<void *>(uintptr_t{0x5a5a5a5a});
  switch (in.ConsumeIntegralInRange<int>(0, 3)) {
    case 0:
      note("malloc(NULL, 4096)");
      expect_status(umrt_malloc(nullptr, kPage), UMRT_ERROR_INVALID_VALUE, "umrt_malloc(NULL)");
      return;
    case 1:
      note("malloc(size 0)");
      expect_status(umrt_malloc(&p, 0), UMRT_ERROR_INVALID_VALUE, "umrt_malloc(0)");
      break;
    case 2:
      note("malloc(SIZE_MAX)");
      expect_status(umrt_malloc(&p, ~size_t{0}), UMRT_ERROR_INVALID_VALUE, "umrt_malloc(SIZE_MAX)");
      break;
    default: {
      size_t n = in.PickValueInArray({~size_t{0} - kPage + 2, (size_t{1} << 46) + 1, size_t{1} << 63});
      note("malloc(%zu)", n);
      expect_status(umrt_malloc(&p, n), UMRT_ERROR_INVALID_VALUE, "umrt_malloc(beyond the size limit)");
      break;
    }
  }
  if (p != reinterpret_cast<void *>(uintptr_t{0x5a5a5a5a})) fail("a failed umrt_malloc wrote *ptr = %p", p);
}

void op_inject(State &st, FuzzedDataProvider &in) {
  const int kind = in.ConsumeBool() ? UMRT_INJECT_COPY : UMRT_INJECT_ALLOC;
  const uint64_t nth = in.ConsumeIntegralInRange<uint64_t>(1, 8);
  // At most 4 in a row: the fault path retries a failed device->host copy up to 32 times before
  // it gives up on the page (SIGBUS), so every armed failure is eventually overcome.
  const uint64_t count = in.ConsumeIntegralInRange<uint64_t>(1, 4);
  note("inject_failure(%s, nth %" PRIu64 ", count %" PRIu64 ")", kind == UMRT_INJECT_COPY ? "COPY" : "ALLOC", nth, count);
  expect_status(umrt_fuzz_inject(kind, nth, count), UMRT_SUCCESS, "umrt_inject_failure");
  st.armed = true;
}

// Disarm: the (2^64 - 1)th next operation never comes.
void disarm(State &st) {
  expect_status(umrt_fuzz_inject(UMRT_INJECT_ALLOC, ~uint64_t{0}, 1), UMRT_SUCCESS, "umrt_inject_failure(ALLOC, UINT64_MAX, 1)");
  expect_status(umrt_fuzz_inject(UMRT_INJECT_COPY, ~uint64_t{0}, 1), UMRT_SUCCESS, "umrt_inject_failure(COPY, UINT64_MAX, 1)");
  st.armed = false;
}

void op_inject_bad(FuzzedDataProvider &in) {
  // (4..6 are the storage kinds, UMRT_INJECT_READ/WRITE/SYNC: valid.)
  int kind = in.PickValueInArray({0, 7, -1, 99, static_cast<int>(UMRT_INJECT_ALLOC), static_cast<int>(UMRT_INJECT_COPY)});
  uint64_t nth = in.PickValueInArray({uint64_t{0}, uint64_t{1}});
  uint64_t count = in.PickValueInArray({uint64_t{0}, uint64_t{1}});
  if ((kind == UMRT_INJECT_ALLOC || kind == UMRT_INJECT_COPY) && nth && count) nth = 0;
  note("inject_failure(kind %d, nth %" PRIu64 ", count %" PRIu64 ") [boundary]", kind, nth, count);
  expect_status(umrt_fuzz_inject(kind, nth, count), UMRT_ERROR_INVALID_VALUE, "umrt_inject_failure(bad arguments)");
}

void op_misc(FuzzedDataProvider &in) {
  switch (in.ConsumeIntegralInRange<int>(0, 2)) {
    case 0:
      note("get_stats(NULL)");
      expect_status(umrt_get_stats(nullptr), UMRT_ERROR_INVALID_VALUE, "umrt_get_stats(NULL)");
      break;
    case 1: {
      int v = in.PickValueInArray({0, 1, 5, 6, 7, 8, 100, -1, 0x7fffffff});
      if (avoid("status-string")) v = static_cast<int>(static_cast<unsigned>(v) % 6);
      note("status_string(%d)", v);
      const char *s = umrt_fuzz_status_string(v);
      if (!s || !*s) fail("umrt_status_string(%d) returned %s", v, s ? "\"\"" : "NULL");
      break;
    }
    default: {
      note("backend_name()");
      const char *n = umrt_backend_name();
      if (!n || std::strcmp(n, "sim") != 0) fail("umrt_backend_name() = %s, expected sim", n ? n : "NULL");
      break;
    }
  }
}

// Process events (the semantics of munmap/mremap of ranges are being fixed in runtime/): acts
// only when built with UMRT_FUZZ_PROCESS_EVENTS=1, but consumes its operands either way, so an
// input decodes to the same operations in both builds.
void op_process_event(State &st, FuzzedDataProvider &in) {
  if (st.allocs.empty()) return;
  const size_t i = in.ConsumeIntegralInRange<size_t>(0, st.allocs.size() - 1);
  Alloc &a = st.allocs[i];
  const size_t len = a.map_bytes();
  const int kind = in.ConsumeIntegralInRange<int>(0, 2);
  const size_t keep = kind == 2 && a.npages() >= 2 ? in.ConsumeIntegralInRange<size_t>(1, a.npages() - 1) : 0;
  if (!UMRT_FUZZ_PROCESS_EVENTS) {
    note("process event %d on %p: not built in (UMRT_FUZZ_PROCESS_EVENTS=0)", kind, (void *)a.p);
    return;
  }
  switch (kind) {
    case 0: {  // munmap of the whole range: umrt forgets it
      note("munmap(%p, %zu) [whole range]", (void *)a.p, len);
      if (munmap(a.p, len) != 0) fail("munmap: %s", std::strerror(errno));
      uint8_t *p = a.p;
      const bool pieces = a.shrunk;
      forget(st, i);
      umrt_status v = umrt_validate();
      if (v != UMRT_SUCCESS) fail("umrt_validate() right after munmap of a whole range returned %s", sname(v));
      umrt_status f = umrt_free(p);
      if (!(pieces && avoid("piecewise-unmap") && f == UMRT_SUCCESS))
        expect_status(f, UMRT_ERROR_INVALID_VALUE, "umrt_free(munmap()ed range)");
      break;
    }
    case 1: {  // the whole range moved elsewhere: it follows
      const size_t align = len >= kBlock ? kBlock : kPage;
      void *hole = mmap(nullptr, len + align, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
      if (hole == MAP_FAILED) return;
      uint8_t *to = reinterpret_cast<uint8_t *>(round_up(reinterpret_cast<uintptr_t>(hole), align));
      note("mremap(%p, %zu -> %p) [whole range moved]", (void *)a.p, len, (void *)to);
      void *r = mremap(a.p, len, len, MREMAP_MAYMOVE | MREMAP_FIXED, to);
      if (r == MAP_FAILED && errno == EFAULT && a.split) {
        // Advice or mlock on part of the range split its mapping: the kernel moves one mapping
        // per call, so nothing moved and the range is still where it was.
        note("  -> EFAULT (the range's mapping was split by advice): nothing moved");
        munmap(hole, len + align);
        void *d = nullptr;
        expect_status(umrt_device_pointer(a.p, &d), UMRT_SUCCESS, "umrt_device_pointer(range after a refused mremap)");
        break;
      }
      if (r == MAP_FAILED) fail("mremap: %s", std::strerror(errno));
      if (to > hole) munmap(hole, static_cast<size_t>(to - static_cast<uint8_t *>(hole)));
      if (to + len < static_cast<uint8_t *>(hole) + len + align)
        munmap(to + len, static_cast<size_t>(static_cast<uint8_t *>(hole) + len + align - (to + len)));
      uint8_t *old = a.p;
      if (a.shrunk && avoid("shrunk-move")) {  // a partial move: the data leaves umrt
        note("  (taken as a partial move: the pages leave umrt with their data)");
        for (size_t pg = 0; pg < a.npages(); ++pg) check_page(a, pg, to + pg * kPage, "moved");
        umrt_location l;
        expect_status(umrt_page_location(to, &l), UMRT_ERROR_INVALID_VALUE, "umrt_page_location(pages moved out of a range)");
        munmap(to, len);
        uint8_t *p = a.p;
        forget(st, i);
        umrt_status f = umrt_free(p);
        note("  umrt_free(old start) = %s", sname(f));
        if (f == UMRT_SUCCESS) {
          umrt_status v = umrt_validate();
          if (v != UMRT_SUCCESS) fail("umrt_validate() after freeing a range whose pages moved out returned %s", sname(v));
        }
        break;
      }
      a.p = to;
      umrt_location l;
      expect_status(umrt_page_location(old, &l), UMRT_ERROR_INVALID_VALUE, "umrt_page_location(old address after mremap)");
      void *d = nullptr;
      expect_status(umrt_device_pointer(a.p, &d), UMRT_SUCCESS, "umrt_device_pointer(new address after mremap)");
      a.dev = static_cast<uint8_t *>(d);
      break;
    }
    default: {  // shrink: the cut pages are gone
      if (a.npages() < 2) return;
      note("mremap(%p, %zu -> %zu) [shrink]", (void *)a.p, len, keep * kPage);
      if (mremap(a.p, len, keep * kPage, 0) == MAP_FAILED) fail("mremap shrink: %s", std::strerror(errno));
      a.size = std::min(a.size, keep * kPage);
      a.shrunk = true;
      a.shadow.resize(a.size);
      a.maybe_zero.resize(a.npages());
      break;
    }
  }
}

void run_input(State &st, FuzzedDataProvider &in) {
  int stack_byte = 0;
  st.strict_host = in.ConsumeBool();
  note("check mode: %s", st.strict_host ? "host addresses only" : "device pages through the device pointer");
  while (in.remaining_bytes() > 0 && st.step < kMaxSteps) {
    ++st.step;
    const int op = in.ConsumeIntegralInRange<int>(0, 20);
    switch (op) {
      case 0: case 1: op_malloc(st, in); break;
      case 2: op_free(st, in); break;
      case 3: case 4: op_write(st, in); break;
      case 5: op_read(st, in); break;
      case 6: case 7: case 8: op_prefetch(st, in); break;
      case 9: op_device_write(st, in); break;
      case 10: op_dontneed(st, in); break;
      case 11: op_advise(st, in); break;
      case 12: op_device_pointer(st, in, &stack_byte); break;
      case 13: op_page_location(st, in, &stack_byte); break;
      case 14: op_prefetch_bad(st, in, &stack_byte); break;
      case 15: op_free_bad(st, in, &stack_byte); break;
      case 16: op_malloc_bad(in); break;
      case 17: if (in.ConsumeIntegralInRange<int>(0, 3) == 0) { note("disarm injections"); disarm(st); } else op_inject(st, in); break;
      case 18: if (in.ConsumeBool()) op_inject_bad(in); else op_misc(in); break;
      case 19: op_read_all_host(st); break;
      default: op_process_event(st, in); break;
    }
    check_all(st);
  }
  // End of the input: disarm, free everything, nothing may be left behind.
  ++st.step;
  note("end: disarm, free all");
  disarm(st);
  while (!st.allocs.empty()) do_free(st, st.allocs.size() - 1);
  umrt_status v = umrt_validate();
  if (v != UMRT_SUCCESS) fail("umrt_validate() after freeing everything returned %s", sname(v));
  umrt_stats s{};
  expect_status(umrt_get_stats(&s), UMRT_SUCCESS, "umrt_get_stats");
  if (s.device_bytes_in_use != 0)
    fail("%" PRIu64 " bytes of device memory still in use after every allocation was freed (a leak)", s.device_bytes_in_use);
}

bool init_once() {
  static int state = 0;  // 0: not yet, 1: up, -1: refused
  if (state) return state > 0;
  g_trace = std::getenv("UMRT_FUZZ_TRACE") && *std::getenv("UMRT_FUZZ_TRACE") == '1';
  if (const char *a = std::getenv("UMRT_FUZZ_AVOID")) g_avoid = a;
  g_self_test = std::getenv("UMRT_FUZZ_SELF_TEST") && *std::getenv("UMRT_FUZZ_SELF_TEST") == '1';
  umrt_config cfg;
  std::memset(&cfg, 0, sizeof cfg);
  cfg.backend = UMRT_BACKEND_SIM;
  cfg.device_memory = kDeviceMemory;
  if (!std::getenv("UMRT_LOG")) cfg.log_level = UMRT_LOG_ERROR;
  umrt_status s = umrt_init(&cfg);
  if (s != UMRT_SUCCESS) {
    std::fprintf(stderr, "fuzz_api: umrt_init(sim, 8 MiB) failed: %s (%s)\n", sname(s), umrt_last_error());
    state = -1;
    return false;
  }
  state = 1;
  return true;
}

}  // namespace

// Replay builds ask whether the runtime could start (to skip when userfaultfd is refused).
extern "C" int umrt_fuzz_ready() { return init_once() ? 1 : 0; }

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (!init_once()) {
    std::fprintf(stderr, "fuzz_api: the runtime cannot start here; nothing to fuzz\n");
    std::abort();
  }
  State st;
  // The previous input left counters behind: start from them.
  if (umrt_get_stats(&st.last) != UMRT_SUCCESS) fail("umrt_get_stats failed");
  g_st = &st;
  FuzzedDataProvider in(data, size);
  run_input(st, in);
  g_st = nullptr;
  return 0;
}
