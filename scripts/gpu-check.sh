#!/usr/bin/env bash
# gpu-check.sh — on a machine with a GPU: run everything that needs one against the cuda backend
# and print a short table. Steps:
#   1. build (Release, tests + samples + bench) in BUILD_DIR unless it already holds test_gpu;
#   2. three first-run probes (test_gpu's GpuFirstRun.*: umrt from a thread that made no CUDA
#      call; a cudaMalloc ballast after umrt_init, then a prefetch past what is left; sixteen
#      queued kernels, then an immediate umrt_free), one row each; then the conformance suites
#      (UMRT_TEST_BACKEND=cuda) and test_gpu, run as plain gtest binaries with the `gpu` ctest
#      label's filters (the SIM_RUN_ONLY cases of tests/CMakeLists.txt left out; no ctest: a build
#      folder carried to another machine keeps working);
#   3. the samples with UMRT_BACKEND=cuda;
#   4. umrt-bench prefetch, fault-seq, fault-latency, oversub, batch-sweep on cuda, JSON kept.
# On a GPU machine a skipped GPU test counts as a failure (the GPU should have been usable).
# Ends with one table and a single verdict line.
#
#   scripts/gpu-check.sh [BUILD_DIR]        (default: build-gpu/)
#   UMRT_GPU_BENCH_SIZE=1G  prefetch size;  UMRT_GPU_OUT=DIR  logs and JSON (default BUILD_DIR/gpu-check)
# Exit status: 0 all passed, 1 something failed, 2 no usable GPU here.
set -uo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${1:-$root/build-gpu}"
out="${UMRT_GPU_OUT:-$build/gpu-check}"
size="${UMRT_GPU_BENCH_SIZE:-1G}"
jobs="$(nproc 2>/dev/null || echo 2)"

if [[ ! -x "$build/tests/test_gpu" ]]; then
  echo "gpu-check: building in $build" >&2
  cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release -DUMRT_BUILD_TESTS=ON \
        -DUMRT_BUILD_SAMPLES=ON -DUMRT_BUILD_BENCH=ON || exit 1
  cmake --build "$build" -j "$jobs" || exit 1
fi
if [[ ! -x "$build/tests/test_gpu" ]]; then
  echo "gpu-check: $build/tests/test_gpu was not built (no CUDA toolkit at build time?)" >&2
  exit 1
fi
mkdir -p "$out"

gpu="$(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null | head -1)"
if [[ -z "$gpu" ]]; then
  echo "gpu-check: no GPU visible (nvidia-smi found none); nothing to check here" >&2
  exit 2
fi
echo "gpu-check: $gpu" >&2

rows=()
failed=0
row() { rows+=("$(printf '%-28s %-5s %s' "$1" "$2" "$3")"); [[ "$2" == PASS ]] || failed=1; }

# The gtest filter of BINARY on cuda, the same as the `gpu` ctest label's: tests/CMakeLists.txt
# marks the sim-only cases of a CUDA_RUN suite with SIM_RUN_ONLY "<patterns>"; they skip
# themselves on cuda by design, so they are left out here rather than counted as failures.
gpu_filter() {
  local pat
  pat="$(sed -n "s/^umrt_add_test($1 .*CUDA_RUN SIM_RUN_ONLY \"\([^\"]*\)\".*/\1/p" "$root/tests/CMakeLists.txt")"
  if [[ -n "$pat" ]]; then echo "-$pat"; else echo "*"; fi
}

# gtest BINARY [FILTER] [NAME]: PASS only when every test selected ran and passed (a skip means
# the GPU was not usable).
gtest() {
  local bin="$1" filter="${2:-$(gpu_filter "$1")}" name="${3:-$1}"
  local log="$out/$name.log"
  local t0=$SECONDS
  UMRT_TEST_BACKEND=cuda UMRT_BACKEND=cuda "$build/tests/$bin" --gtest_color=no --gtest_filter="$filter" >"$log" 2>&1
  local rc=$?
  local passed skipped failed_n
  passed="$(sed -n 's/^\[  PASSED  \] \([0-9]*\) test.*/\1/p' "$log" | tail -1)"
  skipped="$(sed -n 's/^\[  SKIPPED \] \([0-9]*\) test.*/\1/p' "$log" | tail -1)"
  failed_n="$(sed -n 's/^\[  FAILED  \] \([0-9]*\) test.*/\1/p' "$log" | tail -1)"
  local detail="passed ${passed:-0}, skipped ${skipped:-0}, failed ${failed_n:-0} ($((SECONDS - t0)) s)"
  if [[ $rc -eq 0 && -z "$skipped" && -n "$passed" ]]; then row "$name" PASS "$detail"; else row "$name" FAIL "$detail, see $log"; fi
}

# First-run probes: what a real driver punishes and the fake device cannot show (issue 10).
gtest test_gpu "GpuFirstRun.PrefetchFromAThreadWithoutCuda" "probe: thread without CUDA"
gtest test_gpu "GpuFirstRun.BallastAfterInitThenPrefetchPastWhatIsLeft" "probe: ballast, then prefetch"
gtest test_gpu "GpuFirstRun.QueuedKernelsThenImmediateFree" "probe: kernels, then free"

for t in test_gpu test_migrate test_host_pool test_inject test_fault test_oversub test_stress test_api; do
  [[ -x "$build/tests/$t" ]] && gtest "$t"
done

sample() {
  local name="$1"
  shift
  local log="$out/sample.$name.log" t0=$SECONDS
  if UMRT_BACKEND=cuda "$build/samples/$name" "$@" >"$log" 2>&1; then
    row "sample $name" PASS "$(tail -1 "$log") ($((SECONDS - t0)) s)"
  else
    row "sample $name" FAIL "exit $? , see $log"
  fi
}
sample vector_add --n 64M
sample oversubscribe --device-memory 1G --chunk 64M

bench_log="$out/umrt-bench.log"
if [[ -x "$build/bench/umrt-bench" ]]; then
  for sc in prefetch fault-seq fault-latency oversub batch-sweep; do
    t0=$SECONDS
    sz=()
    [[ "$sc" == prefetch ]] && sz=(--size "$size")
    if UMRT_BACKEND=cuda "$build/bench/umrt-bench" "$sc" "${sz[@]}" --reps 3 --json "$out/bench-$sc.json" \
         >>"$bench_log" 2>&1; then
      row "umrt-bench $sc" PASS "ran ($((SECONDS - t0)) s), JSON $out/bench-$sc.json"
    else
      row "umrt-bench $sc" FAIL "exit status $?, see $bench_log"
    fi
  done
fi

echo
echo "gpu-check on: $gpu"
printf '%s\n' "${rows[@]}"
if [[ -f "$bench_log" ]]; then
  echo
  echo "umrt-bench targets (from $bench_log):"
  grep -E '^(PASS|MISS)' "$bench_log" || echo "(no target lines)"
fi
echo
if [[ $failed -eq 0 ]]; then echo "gpu-check verdict: PASS (${#rows[@]} checks)"; else echo "gpu-check verdict: FAIL"; fi
exit "$failed"
