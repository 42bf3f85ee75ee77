#!/usr/bin/env bash
# deps.sh — install what building and testing umrt needs, and only what is missing
# (Debian 12 / Ubuntu 22.04+). Runs apt-get update only when something must be installed.
# Used by run-sample.sh and test.sh; UMRT_SKIP_DEPS=1 skips it.
set -euo pipefail

packages=(build-essential cmake liburing-dev libgtest-dev googletest libcli11-dev nlohmann-json3-dev libbenchmark-dev
          clang libclang-rt-dev pkg-config python3)
# clang + libFuzzer: scripts/fuzz.sh, and FuzzedDataProvider.h for ctest fuzz.replay. Debian 12
# ships libFuzzer (libclang_rt.fuzzer*.a) in libclang-rt-14-dev, pulled in by libclang-rt-dev;
# releases without that package (Ubuntu 22.04) have it in libclang-common-<v>-dev, which clang
# depends on, so libclang-rt-dev is dropped there when apt does not know it.
optional=(libclang-rt-dev)

if [[ "${UMRT_SKIP_DEPS:-0}" == 1 ]]; then
  echo "deps: skipped (UMRT_SKIP_DEPS=1)"
  exit 0
fi

if ! command -v dpkg-query >/dev/null 2>&1; then
  # Not Debian-like: say what is needed and go on if the tools are there.
  for tool in cmake c++ make; do
    if ! command -v "$tool" >/dev/null 2>&1; then
      echo "deps: '$tool' not found and this is not a Debian-like system; install:" \
           "a C/C++ toolchain, CMake >= 3.22, liburing and GoogleTest (optional for umrt-bench: CLI11, nlohmann-json)" >&2
      exit 1
    fi
  done
  echo "deps: not a Debian-like system; assuming liburing and GoogleTest are installed"
  exit 0
fi

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$p")
  fi
done
if [[ ${#missing[@]} -eq 0 ]]; then
  echo "deps: all present (${packages[*]})"
  exit 0
fi

sudo=()
if [[ "$(id -u)" -ne 0 ]]; then
  if command -v sudo >/dev/null 2>&1; then
    sudo=(sudo)
  else
    echo "deps: missing ${missing[*]}; run as root or install them" >&2
    exit 1
  fi
fi

echo "deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -q
for o in "${optional[@]}"; do
  if ! apt-cache show "$o" >/dev/null 2>&1; then
    echo "deps: $o is not known to apt here: skipped"
    missing=("${missing[@]/$o}")
  fi
done
read -r -a missing <<<"${missing[*]}"
"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
  apt-get install -y -q --no-install-recommends "${missing[@]}"
