#!/usr/bin/env bash
# test.sh — install what is missing, then build and run the whole test suite:
#   normal    build/       ctest
#   asan      build-asan/  ctest, ASan + UBSan (-DUMRT_SANITIZE=address)
#   tsan      build-tsan/  ctest, TSan (-DUMRT_SANITIZE=thread)
#   consumer  umrt used from outside: find_package(umrt CONFIG) after cmake --install,
#             add_subdirectory(), the README's C example with pkg-config, and samples/ built
#             standalone against the install
#   fuzz      scripts/fuzz.sh: libFuzzer (clang, build-fuzz/) for UMRT_FUZZ_SECONDS (120)
#   soak      scripts/soak.sh: umrt-soak for UMRT_SOAK_MINUTES (2) under ASan+UBSan from
#             build-asan/, then as long under TSan from build-tsan/ (configured here if missing)
# UMRT_TEST_CONFIGS selects (default "normal asan tsan consumer fuzz soak"); UMRT_CTEST_ARGS adds
# ctest arguments (e.g. "-L unit"). Every selected step runs; one summary line each; the exit
# status is non-zero when any failed.
set -uo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root" || exit 1
export DEBIAN_FRONTEND=noninteractive

if ! "$root/scripts/deps.sh"; then
  echo "test.sh: installing dependencies failed" >&2
  exit 1
fi

jobs="$(nproc 2>/dev/null || echo 2)"
configs="${UMRT_TEST_CONFIGS:-normal asan tsan consumer fuzz soak}"
read -r -a ctest_extra <<<"${UMRT_CTEST_ARGS:-}"
build_type=RelWithDebInfo
summary=()
failed=0

log() { printf '\n=== test.sh: %s ===\n' "$*"; }

# record NAME STATUS DETAIL
record() {
  summary+=("$(printf '%-9s %-4s %s' "$1" "$2" "$3")")
  [[ "$2" == PASS ]] || failed=1
}

# configure DIR [cmake args...]
configure() {
  local dir="$1"
  shift
  cmake -S "$root" -B "$dir" -DCMAKE_BUILD_TYPE="$build_type" \
        -DUMRT_BUILD_TESTS=ON -DUMRT_BUILD_SAMPLES=ON "$@"
}

# ctest_config NAME DIR SANITIZE [wrapper...]
ctest_config() {
  local name="$1" dir="$2" sanitize="$3"
  shift 3
  local t0=$SECONDS
  log "$name: configure (cmake --preset $name, CMakePresets.json) + build in $dir"
  if ! (cd "$root" && cmake --preset "$name" -DUMRT_SANITIZE="$sanitize") ||
     ! cmake --build "$root/$dir" -j "$jobs"; then
    record "$name" FAIL "build failed ($((SECONDS - t0)) s)"
    return
  fi
  local t1=$SECONDS
  log "$name: ctest"
  if "$@" ctest --test-dir "$root/$dir" --output-on-failure -j2 --no-tests=error --timeout 900 \
       "${ctest_extra[@]}"; then
    record "$name" PASS "build $((t1 - t0)) s, tests $((SECONDS - t1)) s"
  else
    record "$name" FAIL "tests failed (build $((t1 - t0)) s, tests $((SECONDS - t1)) s)"
  fi
}

run_normal() {
  ctest_config normal build ""
}

# Sanitizer options of the asan and tsan configurations (ctest and the soak alike).
# protect_shadow_gap=0: the CUDA driver maps memory where ASan keeps its shadow gap (GPU only).
asan_options="${ASAN_OPTIONS:-detect_leaks=1:protect_shadow_gap=0}"
# The CUDA driver's own allocations, which LeakSanitizer would report on a GPU (never umrt's).
export LSAN_OPTIONS="${LSAN_OPTIONS:-suppressions=$root/scripts/lsan-cuda.supp}"
ubsan_options="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"
# tests/tsan.supp, when the test suite has one, holds TSan suppressions.
tsan_options="halt_on_error=1:second_deadlock_stack=1"
if [[ -f "$root/tests/tsan.supp" ]]; then
  tsan_options+=":suppressions=$root/tests/tsan.supp"
fi
tsan_options="${TSAN_OPTIONS:-$tsan_options}"

run_asan() {
  ASAN_OPTIONS="$asan_options" UBSAN_OPTIONS="$ubsan_options" ctest_config asan build-asan address
}

run_tsan() {
  # GCC's TSan cannot map its shadow under high mmap randomisation (vm.mmap_rnd_bits > 28,
  # "unexpectedly found incompatible memory layout"): run without ASLR where that is allowed.
  local wrap=()
  if command -v setarch >/dev/null 2>&1 && setarch "$(uname -m)" -R true 2>/dev/null; then
    wrap=(setarch "$(uname -m)" -R)
  fi
  TSAN_OPTIONS="$tsan_options" ctest_config tsan build-tsan thread "${wrap[@]}"
}

# The consumer sub-steps; each stops at its first failing command.
consumer_install() {  # the installed package comes from the normal build (build/)
  if [[ ! -f "$root/build/CMakeCache.txt" ]]; then
    configure "$root/build" || return 1
  fi
  cmake --build "$root/build" -j "$jobs" --target umrt &&
    cmake --install "$root/build" --prefix "$prefix"
}
consumer_installed() {
  cmake -S "$root/scripts/consumer/installed" -B "$out/installed" -DCMAKE_PREFIX_PATH="$prefix" &&
    cmake --build "$out/installed" -j "$jobs" &&
    timeout 600 "$out/installed/consumer"
}
consumer_subdir() {
  cmake -S "$root/scripts/consumer/subdir" -B "$out/subdir" -DCMAKE_BUILD_TYPE="$build_type" &&
    cmake --build "$out/subdir" -j "$jobs" &&
    timeout 600 "$out/subdir/consumer"
}
consumer_pkgconfig() {  # the README's C example, built with pkg-config only (no CMake)
  local body
  body="$(sed -n '/^## Using it from C$/,/^```$/p' "$root/README.md" | sed -n '/^```c$/,/^```$/p' | sed '1d;$d')"
  if [[ "$body" != "$(sed '1,3d' "$root/scripts/consumer/pkgconfig/main.c")" ]]; then
    echo "consumer: scripts/consumer/pkgconfig/main.c differs from the README's C example" >&2
    return 1
  fi
  mkdir -p "$out/pkgconfig" &&
    # shellcheck disable=SC2046  # the flags are words
    cc -std=c11 -Wall -Werror -o "$out/pkgconfig/app" "$root/scripts/consumer/pkgconfig/main.c" \
       $(PKG_CONFIG_PATH="$prefix/lib/pkgconfig" pkg-config --cflags --libs umrt) &&
    timeout 600 "$out/pkgconfig/app"
}
consumer_samples() {
  cmake -S "$root/samples" -B "$out/samples" -DCMAKE_PREFIX_PATH="$prefix" &&
    cmake --build "$out/samples" -j "$jobs" &&
    timeout 600 "$out/samples/vector_add" --n 4M --threads 2 &&
    timeout 600 "$out/samples/oversubscribe" --device-memory 16M --chunk 2M --threads 2 &&
    timeout 600 "$out/samples/map_file" --size 24M --host-memory 8M
}

run_consumer() {
  local t0=$SECONDS bad=()
  out="$root/build-consumer"
  prefix="$(mktemp -d "${TMPDIR:-/tmp}/umrt-install.XXXXXX")" || {
    record consumer FAIL "mktemp failed"
    return
  }
  log "consumer: build umrt in build/ and install it to $prefix"
  if ! consumer_install; then
    record consumer FAIL "building or installing umrt failed"
    rm -rf "$prefix"
    return
  fi
  log "consumer: find_package(umrt CONFIG)"
  consumer_installed || bad+=(installed)
  log "consumer: add_subdirectory(umrt)"
  consumer_subdir || bad+=(subdir)
  log "consumer: the README's C example with pkg-config --cflags --libs umrt"
  consumer_pkgconfig || bad+=(pkg-config)
  log "consumer: samples/ standalone against the install"
  consumer_samples || bad+=(samples)
  rm -rf "$prefix"
  if [[ ${#bad[@]} -eq 0 ]]; then
    record consumer PASS "find_package, add_subdirectory, pkg-config, standalone samples ($((SECONDS - t0)) s)"
  else
    record consumer FAIL "failed: ${bad[*]} ($((SECONDS - t0)) s)"
  fi
}

run_fuzz() {
  local t0=$SECONDS out rc line found
  log "fuzz: scripts/fuzz.sh ${UMRT_FUZZ_SECONDS:-120} (clang + libFuzzer in build-fuzz/)"
  out="$(mktemp "${TMPDIR:-/tmp}/umrt-fuzz-log.XXXXXX")" || { record fuzz FAIL "mktemp failed"; return; }
  "$root/scripts/fuzz.sh" "${UMRT_FUZZ_SECONDS:-120}" 2>&1 | tee "$out"
  rc=${PIPESTATUS[0]}
  line="$(grep -E '^fuzz\.sh: (PASS|FAIL)' "$out" | tail -1)"
  line="${line#fuzz.sh: }"
  found="$(sed -n 's/^fuzz\.sh: FINDING (\(.*\)): saved as .*/\1/p' "$out" | tr '\n' ' ')"
  rm -f "$out"
  if [[ $rc -eq 0 ]]; then
    record fuzz PASS "${line#PASS, } ($((SECONDS - t0)) s)"
  else
    record fuzz FAIL "${line:-fuzz.sh exit $rc} ($((SECONDS - t0)) s)${found:+; saved in tests/fuzz/regressions/: $found}"
  fi
}

# soak_run NAME DIR SANITIZE: prints umrt-soak's summary; returns its status.
soak_run() {
  local name="$1" dir="$2" sanitize="$3" out rc
  if [[ ! -f "$root/$dir/CMakeCache.txt" ]]; then
    log "soak: configure $dir (as the $name configuration does)" >&2
    configure "$root/$dir" -DUMRT_SANITIZE="$sanitize" >&2 || { echo "$name: configure of $dir failed"; return 1; }
  fi
  log "soak: scripts/soak.sh ${UMRT_SOAK_MINUTES:-2} $dir" >&2
  out="$(mktemp "${TMPDIR:-/tmp}/umrt-soak-log.XXXXXX")" || return 1
  ASAN_OPTIONS="$asan_options" UBSAN_OPTIONS="$ubsan_options" TSAN_OPTIONS="$tsan_options" \
    "$root/scripts/soak.sh" "${UMRT_SOAK_MINUTES:-2}" "$root/$dir" >"$out" 2>&1
  rc=$?
  cat "$out" >&2
  grep -E '^soak: summary:' "$out" | tail -1 | sed -e 's/^soak: summary: //' -e "s/^/$name: /" >"$out.line"
  [[ -s "$out.line" ]] || echo "$name: no summary (exit $rc)" >"$out.line"
  cat "$out.line"
  rm -f "$out" "$out.line"
  return "$rc"
}

run_soak() {
  local t0=$SECONDS a t ok=1
  a="$(soak_run asan build-asan address)" || ok=0
  t="$(soak_run tsan build-tsan thread)" || ok=0
  if [[ $ok -eq 1 ]]; then
    record soak PASS "$a; $t ($((SECONDS - t0)) s)"
  else
    record soak FAIL "$a; $t ($((SECONDS - t0)) s)"
  fi
}

for config in $configs; do
  case "$config" in
    normal) run_normal ;;
    asan) run_asan ;;
    tsan) run_tsan ;;
    consumer) run_consumer ;;
    fuzz) run_fuzz ;;
    soak) run_soak ;;
    *) record "$config" FAIL "unknown configuration (known: normal asan tsan consumer fuzz soak)" ;;
  esac
done

printf '\n=== test.sh summary ===\n'
printf '%s\n' "${summary[@]}"
exit "$failed"
