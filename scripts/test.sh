#!/usr/bin/env bash
# Builds hookfs and runs every test. Run as root on Debian 12.
#  1. the pack fuzzer (clang libFuzzer + ASan + UBSan) for FUZZ_SECONDS (90);
#  2. the unit tests under AddressSanitizer and UndefinedBehaviorSanitizer;
#  3. the whole suite on the release build: unit, pack-format spec, mount
#     (real FUSE mounts driven with real tools), service, fleet (real etcd
#     cluster and Ceph radosgw, started by the tests) and package tests (the
#     Debian package built, lintian-checked, installed on this machine, run as
#     its unit does, purged: docs/packaging.md).
# The release suite runs last, so its ctest summary closes the output.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
jobs=$(nproc)
FUZZ_SECONDS=${FUZZ_SECONDS:-90} bash tests/fuzz/run.sh
cmake --preset asan >/dev/null
cmake --build --preset asan -j "$jobs" --target unit_tests
ctest --preset asan -j "$jobs" --timeout 900
cmake --preset default >/dev/null
cmake --build --preset default -j "$jobs"
ctest --preset default -j "$jobs" --timeout 600
