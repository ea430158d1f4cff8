#!/usr/bin/env bash
# Builds hookfs and runs every test: the full suite (unit + mount) on the
# release build, then the unit tests again under AddressSanitizer and
# UndefinedBehaviorSanitizer, then the pack fuzzer (clang libFuzzer) for a
# bounded time (FUZZ_SECONDS, default 90). Run as root on Debian 12.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
jobs=$(nproc)
cmake --preset default >/dev/null
cmake --build --preset default -j "$jobs"
ctest --preset default -j "$jobs" --timeout 600
cmake --preset asan >/dev/null
cmake --build --preset asan -j "$jobs" --target unit_tests
ctest --preset asan -j "$jobs" --timeout 900
FUZZ_SECONDS=${FUZZ_SECONDS:-90} bash tests/fuzz/run.sh
