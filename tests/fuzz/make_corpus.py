#!/usr/bin/env python3
"""make_corpus.py — writes the seed corpus of fuzz_api.cpp (tests/fuzz/corpus/): a dozen inputs
that each decode to a chosen operation sequence, together covering every operation.

It encodes the way LLVM's FuzzedDataProvider decodes: integers are read from the END of the input
(most significant byte first, as many bytes as the range needs, none for an empty range), raw
bytes from the front. The encoder mirrors fuzz_api.cpp's order of consumption, including the
choices that consume nothing (pick_alloc with one live allocation), so it must change with it;
check a file with `UMRT_FUZZ_TRACE=1 build-fuzz/fuzz_api tests/fuzz/corpus/<file>` (the trace
lists the operations). Usage: tests/fuzz/make_corpus.py [out-dir]
With --regressions it writes the hand-made reproducers of findings (handmade-*) into
tests/fuzz/regressions/ instead (see the README.md there).
"""
import os
import sys

KPAGE = 4096
KBLOCK = 2 << 20
MAXSIZE = 6 << 20

# op numbers of run_input's switch
MALLOC, FREE, WRITE, READ, PREFETCH, DEVWRITE, DONTNEED, ADVISE, DEVPTR, PAGELOC, \
    PREFETCH_BAD, FREE_BAD, MALLOC_BAD, INJECT, MISC, READ_ALL, EVENT = \
    0, 2, 3, 5, 6, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20


def nbytes(rng):
    n = 0
    while n < 8 and (rng >> (8 * n)) > 0:
        n += 1
    return n


class Enc:
    def __init__(self, strict_host=False):
        self.back = bytearray()   # integer bytes in reading order
        self.front = bytearray()  # raw bytes (ConsumeBytes)
        self.sizes = []           # live allocations (sizes), in the fuzzer's order
        self.boolean(strict_host)

    # FuzzedDataProvider primitives
    def cir(self, lo, hi, v):
        assert lo <= v <= hi, (lo, hi, v)
        k = nbytes(hi - lo)
        r = v - lo
        self.back += r.to_bytes(k, "big") if k else b""

    def boolean(self, b):
        self.cir(0, 255, 1 if b else 0)

    def pick(self, n, i):
        self.cir(0, n - 1, i)

    def data(self):
        return bytes(self.front) + bytes(reversed(self.back))

    # fuzz_api.cpp helpers
    def op(self, n):
        self.cir(0, 20, n)

    def alloc(self, i):
        if self.sizes:
            self.cir(0, len(self.sizes) - 1, i)
        return self.sizes[i] if self.sizes else None

    def size(self, size):
        """pick_size, choosing the class that yields exactly `size`."""
        if size <= 64:
            self.cir(0, 6, 0); self.cir(1, 64, size)
        elif size <= 4 * KPAGE:
            self.cir(0, 6, 1); self.cir(1, 4 * KPAGE, size)
        elif size < KBLOCK:
            self.cir(0, 6, 2); self.cir(1, KBLOCK - 1, size)
        elif size in (KBLOCK, KBLOCK + 1, KBLOCK + KPAGE):
            self.cir(0, 6, 3); self.pick(6, [KBLOCK - KPAGE, KBLOCK - KPAGE + 1, KBLOCK - 1, KBLOCK, KBLOCK + 1, KBLOCK + KPAGE].index(size))
        else:
            self.cir(0, 6, 4); self.cir(KBLOCK + 1, MAXSIZE, size)

    def offset(self, size, off):
        """pick_offset, exact offset (class 1) or 0 (class 0)."""
        if off == 0:
            self.cir(0, 4, 0)
        else:
            self.cir(0, 4, 1); self.cir(0, size - 1, off)

    def span(self, size, off, n):
        """pick_span: whole allocation, or [off, off + n) (n clipped to the room)."""
        if off == 0 and n >= size:
            self.cir(0, 7, 0)
            return
        self.cir(0, 7, 1)
        self.offset(size, off)
        if n <= 16:
            self.cir(0, 4, 0); self.cir(1, 16, n)
        elif n <= KPAGE + 1:
            self.cir(0, 4, 1); self.cir(1, KPAGE + 1, n)
        elif n <= 64 * KPAGE:
            self.cir(0, 4, 2); self.cir(1, 64 * KPAGE, n)
        elif n <= 3 * KBLOCK:
            self.cir(0, 4, 3); self.cir(1, 3 * KBLOCK, n)
        else:
            self.cir(0, 4, 4)

    def fill(self, how, v):
        """make_bytes: ('byte', b) | ('seed', s) | ('bytes', b'...')."""
        if how == "byte":
            self.cir(0, 2, 0); self.cir(0, 255, v)
        elif how == "seed":
            self.cir(0, 2, 1); self.cir(0, 2**32 - 1, v)
        else:
            self.cir(0, 2, 2); self.cir(1, 64, len(v)); self.front += v

    # operations
    def malloc(self, size):
        self.op(MALLOC)
        if len(self.sizes) < 4:
            self.size(size)
            self.sizes.append(size)

    def free(self, i):
        self.op(FREE); self.cir(0, len(self.sizes) - 1, i); del self.sizes[i]

    def write(self, i, off, n, how="seed", v=1):
        self.op(WRITE); s = self.alloc(i); self.span(s, off, n); self.fill(how, v)

    def read(self, i, off, n):
        self.op(READ); s = self.alloc(i); self.span(s, off, n)

    def prefetch(self, i, off, n, device=True):
        self.op(PREFETCH); s = self.alloc(i); self.span(s, off, n); self.boolean(device)

    def devwrite(self, i, off, n, how="seed", v=2):
        self.op(DEVWRITE); s = self.alloc(i); self.span(s, off, n); self.fill(how, v)

    def dontneed(self, i, first, n):
        self.op(DONTNEED); s = self.alloc(i); np = (s + KPAGE - 1) // KPAGE
        self.cir(0, np - 1, first); self.cir(1, np - first, n)

    def advise(self, i, k, first, n):
        """k: madvise 0 NORMAL, 1 RANDOM, 2 SEQUENTIAL (these split the VMA), 3 WILLNEED, 4 COLD,
        5 PAGEOUT; 6 mlock, 7 munlock."""
        self.op(ADVISE); s = self.alloc(i); np = (s + KPAGE - 1) // KPAGE
        self.cir(0, 7, k); self.cir(0, np - 1, first); self.cir(1, np - first, n)

    def bad_pointer(self, i, case):  # pick_bad_pointer; never case 6 (stale: depends on addresses)
        assert case != 6
        self.alloc(i); self.cir(0, 10, case)

    def devptr(self, i, mode, off=0, bad_case=0):
        self.op(DEVPTR); self.cir(0, 3, mode); s = self.alloc(i)
        if mode == 0:
            self.offset(s, off)
        elif mode >= 2:
            self.bad_pointer(i, bad_case)

    def pageloc(self, i, mode, off=0, bad_case=0):
        self.op(PAGELOC); self.cir(0, 3, mode); s = self.alloc(i)
        if mode == 0:
            self.offset(s, off)
        elif mode >= 2:
            self.bad_pointer(i, bad_case)

    def prefetch_bad(self, i, case, arg=0, device=True, bad_case=0):
        self.op(PREFETCH_BAD); s = self.alloc(i); self.boolean(device); self.cir(0, 5, case)
        if case == 0:
            self.pick(7, arg)              # bad location
        elif case == 1:
            self.offset(s, arg)            # size 0
        elif case == 2:
            self.offset(s, arg); self.cir(1, 2 * KPAGE, 1)  # crosses the end by 1
        elif case == 3:
            self.pick(4, arg)              # huge sizes
        else:
            self.bad_pointer(i, bad_case); self.cir(1, 3 * KPAGE, 1)

    def free_bad(self, i, off):  # a pointer inside allocation i (never its start)
        self.op(FREE_BAD); s = self.alloc(i); self.cir(0, 2, 0); assert 0 < off < s; self.cir(1, s, off)

    def malloc_bad(self, case, arg=0):
        self.op(MALLOC_BAD); self.cir(0, 3, case)
        if case == 3:
            self.pick(3, arg)

    def inject(self, copy, nth, count):
        self.op(INJECT); self.cir(0, 3, 1); self.boolean(copy); self.cir(1, 8, nth); self.cir(1, 4, count)

    def disarm(self):
        self.op(INJECT); self.cir(0, 3, 0)

    def inject_bad(self, kind_i, nth_i, count_i):
        self.op(MISC); self.boolean(True); self.pick(6, kind_i); self.pick(2, nth_i); self.pick(2, count_i)

    def misc(self, case, arg=0):  # 0 get_stats(NULL), 1 status_string(pick arg of 9), 2 backend_name
        self.op(MISC); self.boolean(False); self.cir(0, 2, case)
        if case == 1:
            self.pick(9, arg)

    def read_all(self):
        self.op(READ_ALL)

    def event(self, i, kind, keep_pages=1):
        """kind 0: munmap of the whole range (forgotten), 1: mremap of the whole range elsewhere,
        2: mremap shrinking it to keep_pages (a no-op unless built with UMRT_FUZZ_PROCESS_EVENTS)."""
        self.op(EVENT); s = self.alloc(i); np = (s + KPAGE - 1) // KPAGE; self.cir(0, 2, kind)
        if kind == 2 and np >= 2:
            self.cir(1, np - 1, keep_pages)
        if kind == 0:
            del self.sizes[i]  # forgotten (in the default build it stays: keep this last)


def corpus():
    out = {}

    e = Enc()  # the basics on one small allocation
    e.malloc(100); e.write(0, 0, 100, "byte", 0x11); e.read(0, 0, 100); e.write(0, 10, 5, "bytes", b"umrt!")
    e.read(0, 8, 16); e.free(0)
    out["01-basic"] = e

    e = Enc()  # packed ranges: several small allocations share one device block
    for s in (5000, 12288, 300):
        e.malloc(s)
    for i, s in enumerate((5000, 12288, 300)):
        e.write(i, 0, s, "seed", 7 + i)
    e.prefetch(0, 0, 5000); e.prefetch(1, 0, 12288); e.prefetch(2, 0, 300)
    e.devwrite(1, 4000, 300, "byte", 0xee); e.prefetch(1, 0, 12288, device=False); e.read(1, 0, 12288)
    e.free(1); e.free(0); e.free(0)
    out["02-packed"] = e

    e = Enc()  # a multi-block range: whole and sub-span moves
    e.malloc(MAXSIZE); e.write(0, 0, MAXSIZE, "seed", 3); e.prefetch(0, 0, MAXSIZE)
    e.read(0, KBLOCK - 8, 16); e.prefetch(0, KBLOCK + 100, KBLOCK, device=False)
    e.prefetch(0, 0, MAXSIZE); e.read_all(); e.free(0)
    out["03-multiblock"] = e

    e = Enc()  # oversubscription: 3 x 4 MiB through 8 MiB of device memory
    for i in range(3):
        e.malloc(4 << 20); e.write(i, 0, 4 << 20, "seed", 20 + i)
    for i in (0, 1, 2, 0, 1):
        e.prefetch(i, 0, 4 << 20)
    e.devwrite(1, 12345, 100000, "byte", 0x5c)
    e.prefetch(2, 0, 4 << 20)
    e.read_all()
    for i in (2, 1, 0):
        e.free(i)
    out["04-eviction"] = e

    e = Enc()  # MADV_DONTNEED of host pages (zeros) and of device pages (kept)
    e.malloc(40000); e.write(0, 0, 40000, "seed", 5); e.dontneed(0, 2, 3)
    e.prefetch(0, 0, 20000); e.dontneed(0, 0, 10); e.read(0, 0, 40000); e.write(0, 9000, 200, "byte", 1)
    e.dontneed(0, 9, 1); e.free(0)
    out["05-dontneed"] = e

    e = Enc()  # harmless advice: WILLNEED, COLD, PAGEOUT on host and device pages
    e.malloc(3 << 20); e.write(0, 0, 3 << 20, "seed", 9); e.prefetch(0, 0, 1 << 20)
    e.advise(0, 3, 0, 768); e.advise(0, 4, 10, 300); e.advise(0, 5, 200, 400); e.read_all(); e.free(0)
    out["06-advice"] = e

    e = Enc()  # injected failures: prefetches that fail change nothing; disarmed, they succeed
    e.malloc(300000); e.write(0, 0, 300000, "seed", 11)
    e.inject(True, 1, 2); e.prefetch(0, 0, 300000); e.prefetch(0, 0, 300000); e.read(0, 0, 300000)
    e.prefetch(0, 0, 300000); e.inject(True, 1, 3); e.read_all()
    e.inject(False, 2, 1); e.prefetch(0, 0, 300000); e.disarm(); e.prefetch(0, 0, 300000)
    e.prefetch(0, 0, 300000, device=False); e.free(0)
    out["07-inject"] = e

    e = Enc()  # boundary arguments
    e.malloc(10000); e.malloc(3000)
    for k in range(7):
        e.prefetch_bad(0, 0, k)
    e.prefetch_bad(0, 1, 17); e.prefetch_bad(1, 2, 100); e.prefetch_bad(0, 3, 0); e.prefetch_bad(0, 3, 3)
    for c in (0, 1, 2, 5, 7, 8, 9, 10):
        e.prefetch_bad(1, 4, bad_case=c)
    e.devptr(0, 0, 9999); e.devptr(1, 1); e.devptr(0, 2, bad_case=1); e.devptr(1, 3, bad_case=3)
    e.pageloc(0, 0, 4096); e.pageloc(0, 1); e.pageloc(1, 2, bad_case=2); e.pageloc(0, 3, bad_case=9)
    e.malloc_bad(0); e.malloc_bad(1); e.malloc_bad(2); e.malloc_bad(3, 1); e.malloc_bad(3, 2)
    e.free_bad(0, 1); e.free_bad(0, 4096); e.free_bad(1, 2999)
    e.inject_bad(0, 1, 1); e.inject_bad(4, 0, 1); e.inject_bad(5, 1, 0)
    e.misc(0); e.misc(1, 1); e.misc(2)
    e.free(1); e.free(0)
    out["08-boundaries"] = e

    e = Enc()  # sizes at the packed / large boundary, spans across block boundaries
    e.malloc(KBLOCK - 1); e.malloc(KBLOCK); e.malloc(KBLOCK + 1); e.malloc(KBLOCK + KPAGE)
    for i, s in enumerate((KBLOCK - 1, KBLOCK, KBLOCK + 1, KBLOCK + KPAGE)):
        e.write(i, 0, s, "seed", 40 + i)
        e.prefetch(i, max(0, s - 5000), 5000)
    e.write(2, KBLOCK - 2, 3, "byte", 0x77); e.prefetch(3, KBLOCK - 4096, 8192); e.read_all()
    for i in (3, 2, 1, 0):
        e.free(i)
    out["09-block-boundary"] = e

    e = Enc(strict_host=True)  # host-address-only checks: every step pulls the pages home
    e.malloc(70000); e.write(0, 0, 70000, "seed", 13); e.prefetch(0, 0, 70000)
    e.devwrite(0, 100, 60000, "seed", 14); e.prefetch(0, 5000, 20000); e.dontneed(0, 3, 4); e.free(0)
    out["10-strict-host"] = e

    e = Enc()  # device "kernels" on device pages, then home again
    e.malloc(1 << 20); e.malloc(5 << 20)
    e.write(0, 0, 1 << 20, "seed", 15); e.prefetch(0, 0, 1 << 20); e.prefetch(1, 0, 5 << 20)
    e.devwrite(0, 0, 1 << 20, "seed", 16); e.devwrite(1, 3 << 20, 1 << 20, "byte", 0x42)
    e.pageloc(1, 0, 3 << 20); e.devptr(1, 0, 4 << 20)
    e.prefetch(1, 0, 5 << 20, device=False); e.read(0, 0, 1 << 20); e.read_all(); e.free(0); e.free(0)
    out["11-device-write"] = e

    e = Enc()  # churn: allocations come and go, with data moving in between
    for r in range(4):
        e.malloc(8192 * (r + 1)); e.malloc((r + 1) << 20)
        e.write(1, 0, (r + 1) << 20, "seed", 50 + r); e.prefetch(1, 0, (r + 1) << 20)
        e.write(0, 0, 8192 * (r + 1), "byte", r); e.free(1); e.free(0)
    out["12-churn"] = e

    e = Enc()  # process events (only with -DUMRT_FUZZ_PROCESS_EVENTS=ON; no-ops otherwise)
    e.malloc(3 << 20); e.malloc(50000); e.write(0, 0, 3 << 20, "seed", 60); e.write(1, 0, 50000, "seed", 61)
    e.prefetch(0, 0, 1 << 20); e.event(0, 1); e.read(0, 0, 3 << 20); e.prefetch(0, 0, 3 << 20)
    e.prefetch(1, 0, 50000); e.event(1, 2, 5); e.read(1, 0, 5 * KPAGE); e.event(0, 0)
    out["13-process-events"] = e
    return out


def regressions():
    """Hand-made, more reliable reproducers of findings (tests/fuzz/regressions/README.md)."""
    out = {}
    M = 1 << 20
    # umrt_status_string(100): the runtime switches on an out-of-range enum value (UB; clang's
    # UBSan reports it).
    e = Enc()
    e.misc(1, 6)
    out["handmade-status-string-out-of-range-enum"] = e
    # 2 pages on the device, MADV_RANDOM on page 1 splits the VMA, reading page 0: SIGBUS (the
    # fault batch's UFFDIO_COPY across the VMA boundary fails with ENOENT, 32 times).
    e = Enc()
    e.malloc(4097); e.write(0, 0, 4097, "byte", 0x3c); e.prefetch(0, 0, 4097); e.advise(0, 1, 1, 1)
    e.read(0, 0, 4097)
    out["handmade-sigbus-after-madvise-splits-vma"] = e
    # First touches of small ranges, each followed by umrt_validate(): now and then a page is
    # still locked by its fault batch when the access has returned (a race: run it many times,
    # e.g. build-fuzz/fuzz_api -runs=20000 <file>).
    e = Enc(strict_host=True)
    e.malloc(5); e.malloc(69632)
    out["handmade-validate-page-locked-after-fault-race"] = e
    # A prefetch of a 2-block range to the device returns SUCCESS with one of its blocks on the
    # host: it evicted its own, least recently used, other block. 4 + 4 + 2 MiB through 8 MiB.
    e = Enc()
    e.malloc(4 * M); e.write(0, 0, 4 * M, "seed", 1); e.malloc(4 * M); e.malloc(2 * M)
    for _ in range(12):
        e.prefetch(0, 0, 4 * M); e.prefetch(1, 0, 4 * M); e.prefetch(2, 0, 2 * M)
    out["handmade-prefetch-to-device-evicts-its-own-span"] = e
    # Only with -DUMRT_FUZZ_PROCESS_EVENTS=ON (a no-op otherwise): a range shrunk with mremap, then
    # its remaining pages moved elsewhere with mremap: does the range follow (as a whole-range
    # move) or leave umrt (as a partial move)? Today it leaves umrt.
    e = Enc()
    e.malloc(50000); e.write(0, 0, 50000, "seed", 2); e.event(0, 2, 5); e.event(0, 1); e.read_all()
    out["handmade-events-shrink-then-move"] = e
    # mlock() of a range, then a prefetch to the device: SUCCESS, the page reported on the device,
    # but MADV_DONTNEED fails (EINVAL on a VM_LOCKED range) and the host copy stays mapped; the
    # CPU write that follows never completes (a hang at 4cdc6ff, a fault loop in later trees).
    e = Enc(strict_host=True)
    e.malloc(8192); e.write(0, 0, 8192, "byte", 0x11); e.advise(0, 6, 0, 2); e.prefetch(0, 0, 8192)
    e.write(0, 0, 1, "byte", 0x22)
    out["handmade-mlock-then-prefetch-hangs-cpu-write"] = e
    # Only with -DUMRT_FUZZ_PROCESS_EVENTS=ON: a range unmapped in two pieces (mremap shrink, then
    # munmap of the rest) is fully munmap()ed, yet umrt_free returns SUCCESS (semantics.md item
    # 2: INVALID_VALUE on a fully munmap()ed range).
    e = Enc()
    e.malloc(50000); e.write(0, 0, 50000, "seed", 3); e.event(0, 2, 1); e.event(0, 0)
    out["handmade-events-unmapped-in-pieces-then-free"] = e
    return out


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    which = corpus
    args = sys.argv[1:]
    if args and args[0] == "--regressions":
        which = regressions
        args = args[1:]
    out_dir = args[0] if args else os.path.join(here, "corpus" if which is corpus else "regressions")
    os.makedirs(out_dir, exist_ok=True)
    for name, e in which().items():
        with open(os.path.join(out_dir, name), "wb") as f:
            f.write(e.data())
        print(f"{name}: {len(e.data())} bytes")


if __name__ == "__main__":
    main()
