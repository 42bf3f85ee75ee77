#!/usr/bin/env bash
# fuzz.sh [seconds] — build the libFuzzer target tests/fuzz/fuzz_api.cpp with clang (ASan+UBSan,
# in build-fuzz/) and fuzz for the given time (default 120 s) from a copy of the seed corpus
# tests/fuzz/corpus/ (the committed corpus is never modified). Exits non-zero on any finding
# (crash, mismatch with the shadow model, sanitizer report, timeout, out-of-memory, leak) and
# copies the input that caused it into tests/fuzz/regressions/, which ctest fuzz.replay runs:
# commit it. Environment:
#   UMRT_FUZZ_BUILD_DIR      build directory (default build-fuzz)
#   UMRT_FUZZ_AVOID          tags of known findings to step around while exploring further
#                            (see fuzz_api.cpp; CI leaves it unset)
#   UMRT_FUZZ_PROCESS_EVENTS 1: also fuzz munmap/mremap of ranges (-DUMRT_FUZZ_PROCESS_EVENTS=ON)
#   UMRT_FUZZ_ARGS           extra libFuzzer arguments
set -uo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
seconds="${1:-120}"
if ! [[ "$seconds" =~ ^[0-9]+$ ]] || [[ "$seconds" -lt 1 ]]; then
  echo "usage: scripts/fuzz.sh [seconds]" >&2
  exit 2
fi
build="${UMRT_FUZZ_BUILD_DIR:-$root/build-fuzz}"
[[ "$build" = /* ]] || build="$root/$build"
events=OFF
[[ "${UMRT_FUZZ_PROCESS_EVENTS:-1}" == 1 ]] && events=ON

for tool in clang clang++ cmake; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "fuzz.sh: '$tool' not found (scripts/deps.sh installs clang and libFuzzer)" >&2
    exit 1
  fi
done

echo "=== fuzz.sh: build $build (clang, libFuzzer + ASan + UBSan) ==="
mkdir -p "$build"
if ! cmake -S "$root/tests/fuzz" -B "$build" -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ \
       -DUMRT_FUZZ_PROCESS_EVENTS="$events" >"$build/configure.log" 2>&1; then
  cat "$build/configure.log" >&2
  echo "fuzz.sh: configure failed" >&2
  exit 1
fi
if ! cmake --build "$build" -j 2 --target fuzz_api; then
  echo "fuzz.sh: build failed" >&2
  exit 1
fi

work="$(mktemp -d "${TMPDIR:-/tmp}/umrt-fuzz.XXXXXX")" || exit 1
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/corpus" "$work/artifacts"
cp "$root"/tests/fuzz/corpus/* "$work/corpus/"
echo "=== fuzz.sh: fuzzing for $seconds s from $(ls "$work/corpus" | wc -l) seeds${UMRT_FUZZ_AVOID:+ (avoiding: $UMRT_FUZZ_AVOID)} ==="
read -r -a extra <<<"${UMRT_FUZZ_ARGS:-}"
# -max_len: room for ~48 operations with their operands. The outer timeout only guards against
# a hang that libFuzzer's own -timeout could not report.
ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0}" \
UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}" \
  timeout -k 30 $((seconds + 300)) "$build/fuzz_api" "$work/corpus" \
    -max_total_time="$seconds" -timeout=20 -rss_limit_mb=4096 -max_len=1024 \
    -print_final_stats=1 -artifact_prefix="$work/artifacts/" "${extra[@]}" 2>&1 | tee "$work/fuzz.log"
rc=${PIPESTATUS[0]}

found=0
mkdir -p "$root/tests/fuzz/regressions"
for f in "$work"/artifacts/*; do
  [[ -f "$f" ]] || continue
  name="$(basename "$f")"
  if [[ "$name" == slow-unit-* ]]; then  # slow, not wrong: said, not counted (hangs are timeout-*)
    echo "fuzz.sh: note: a slow input ($name, over libFuzzer's -report_slow_units) was not kept"
    continue
  fi
  dest="$root/tests/fuzz/regressions/$name"
  cp "$f" "$dest"
  found=1
  echo "fuzz.sh: FINDING ($name): saved as ${dest#"$root"/}"
  echo "fuzz.sh:   reproduce: UMRT_FUZZ_TRACE=1 ${build#"$root"/}/fuzz_api ${dest#"$root"/}"
  echo "fuzz.sh:   commit it (git add ${dest#"$root"/}) so ctest fuzz.replay keeps checking it, and describe it in tests/fuzz/regressions/README.md"
done
# "#4050  DONE   cov: 1751 ft: 9359 corp: 561/67Kb lim: 227 exec/s: 33 rss: 366Mb"
stats="$(grep -E '^#[0-9]+[[:space:]]+DONE' "$work/fuzz.log" | tail -1 |
         sed -E 's/^#([0-9]+)[[:space:]]+DONE[[:space:]]+cov: ([0-9]+) ft: [0-9]+ corp: ([0-9]+)\/[^ ]+ .*exec\/s: ([0-9]+) rss: ([0-9]+Mb).*/\1 runs, \4 exec\/s, cov \2, corpus \3, rss \5/')"
if [[ $rc -ne 0 || $found -ne 0 ]]; then
  echo "fuzz.sh: FAIL (libFuzzer exit $rc${stats:+; $stats})"
  exit 1
fi
echo "fuzz.sh: PASS, no findings in $seconds s${stats:+ ($stats)}"
