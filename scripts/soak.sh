#!/usr/bin/env bash
# soak.sh [minutes] [build-dir] — run the soak program umrt-soak (tests/soak.cpp) for the given
# time (default 2 minutes) from the given CMake build directory (default build-soak; configured
# and built there if it has no umrt-soak yet; an existing build directory keeps its own options,
# e.g. build-asan or build-tsan with their sanitizer). Under TSan it runs without ASLR where
# allowed, as scripts/test.sh does for ctest. ASAN_OPTIONS / UBSAN_OPTIONS / TSAN_OPTIONS from
# the environment are kept (defaults as in test.sh); UMRT_SOAK_ARGS adds umrt-soak arguments
# (e.g. "--seed 123 --threads 8"). Exit status: umrt-soak's (0 only when no page was lost, no
# API call failed, umrt_validate() succeeded at the end and the watchdog stayed quiet).
set -uo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
minutes="${1:-2}"
build="${2:-build-soak}"
[[ "$build" = /* ]] || build="$root/$build"
if ! [[ "$minutes" =~ ^[0-9]+([.][0-9]+)?$ ]]; then
  echo "usage: scripts/soak.sh [minutes] [build-dir]" >&2
  exit 2
fi
seconds="$(awk -v m="$minutes" 'BEGIN { s = int(m * 60 + 0.5); print (s < 1 ? 1 : s) }')"

if [[ ! -f "$build/CMakeCache.txt" ]]; then
  echo "=== soak.sh: configure $build ==="
  cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DUMRT_BUILD_TESTS=ON \
        -DUMRT_BUILD_SAMPLES=OFF -DUMRT_BUILD_BENCH=OFF || exit 1
fi
echo "=== soak.sh: build umrt-soak in $build ==="
cmake --build "$build" -j 2 --target umrt-soak || exit 1
exe="$build/tests/umrt-soak"
[[ -x "$exe" ]] || { echo "soak.sh: $exe not built" >&2; exit 1; }

sanitize="$(sed -n 's/^UMRT_SANITIZE:[A-Z]*=//p' "$build/CMakeCache.txt")"
wrap=()
case "$sanitize" in
  address)
    export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:protect_shadow_gap=0}"
    export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"
    ;;
  thread)
    opts="halt_on_error=1:second_deadlock_stack=1"
    [[ -f "$root/tests/tsan.supp" ]] && opts+=":suppressions=$root/tests/tsan.supp"
    export TSAN_OPTIONS="${TSAN_OPTIONS:-$opts}"
    if command -v setarch >/dev/null 2>&1 && setarch "$(uname -m)" -R true 2>/dev/null; then
      wrap=(setarch "$(uname -m)" -R)
    fi
    ;;
esac

read -r -a extra <<<"${UMRT_SOAK_ARGS:-}"
echo "=== soak.sh: $exe for $seconds s${sanitize:+ (sanitizer: $sanitize)} ==="
# The program's own watchdog reports a hang after 60 s without progress; the outer timeout only
# catches a hang it could not report.
timeout -k 30 $((seconds + 240)) "${wrap[@]}" "$exe" --seconds "$seconds" "${extra[@]}"
rc=$?
if [[ $rc -eq 124 || $rc -eq 137 ]]; then
  echo "soak.sh: umrt-soak did not finish within $((seconds + 240)) s: killed (a hang)"
fi
exit "$rc"
