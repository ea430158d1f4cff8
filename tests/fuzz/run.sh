#!/usr/bin/env bash
# Builds the pack fuzzer with clang (libFuzzer + ASan + UBSan) in build-fuzz/
# and runs it for a bounded time on a copy of the seed corpus. Fails on any
# crash, leak, sanitizer report or oracle violation (fsck not clean).
#   FUZZ_SECONDS  run time (default 60)
#   FUZZ_JOBS     parallel fuzzing processes (default 1)
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$(pwd)
secs=${FUZZ_SECONDS:-60}
jobs=${FUZZ_JOBS:-1}
CC=clang CXX=clang++ cmake -S . -B build-fuzz -DHOOKFS_FUZZ=ON -DBUILD_TESTING=OFF \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build-fuzz -j "$(nproc)" --target pack_fuzz
work=$(mktemp -d /tmp/hookfs-fuzz-run-XXXXXX)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/corpus" "$work/artifacts"
cp tests/fuzz/corpus/* "$work/corpus/"
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
par=()
if [ "$jobs" -gt 1 ]; then par=(-jobs="$jobs" -workers="$jobs"); fi
status=0
(cd "$work" && "$root/build-fuzz/tests/fuzz/pack_fuzz" "$work/corpus" \
  -max_total_time="$secs" -timeout=30 -rss_limit_mb=2048 -max_len=65536 \
  "${par[@]}" -print_final_stats=1 \
  -artifact_prefix="$work/artifacts/") 2>&1 | tail -n 40 || status=$?
if [ "$status" -ne 0 ] || [ -n "$(ls -A "$work/artifacts")" ]; then
  echo "fuzz: FAILED (exit $status); reproducers:" >&2
  mkdir -p build-fuzz/artifacts
  cp "$work"/artifacts/* build-fuzz/artifacts/ 2>/dev/null || true
  ls -l build-fuzz/artifacts >&2 || true
  exit 1
fi
echo "fuzz: ${secs}s without a finding"
