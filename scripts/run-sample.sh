#!/usr/bin/env bash
# run-sample.sh — install what is missing, build umrt (Release, in build/) and run the
# vector_add sample on the default backend. Arguments go to vector_add (e.g. --n 16M).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$root/scripts/deps.sh"

jobs="$(nproc 2>/dev/null || echo 2)"
cmake -S "$root" -B "$root/build" -DCMAKE_BUILD_TYPE=Release
cmake --build "$root/build" -j "$jobs"
exec "$root/build/samples/vector_add" "$@"
