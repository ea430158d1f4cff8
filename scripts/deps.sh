#!/usr/bin/env bash
# Installs the Debian 12 packages hookfs builds, tests and benchmarks with.
# Idempotent; needs root (apt-get). docs/dependencies.md says why each is here.
set -euo pipefail
pkgs=(
  cmake g++ make pkg-config                      # build
  liblmdb-dev libfuse3-dev fuse3 libssl-dev libxxhash-dev
  libspdlog-dev libfmt-dev nlohmann-json3-dev libcli11-dev libsystemd-dev
  libgtest-dev libgmock-dev                      # tests
  attr rsync bc passwd util-linux                # tools the mount tests drive
  systemd man-db                                 # tests/service: systemd-analyze verify, sysusers, tmpfiles, man
  python3 python3-xxhash python3-cryptography  # tests/spec: the independent pack writer (signed packs too)
  build-essential debhelper lintian              # tests/package: dpkg-buildpackage, lintian
  clang libclang-rt-14-dev                       # tests/fuzz: libFuzzer, ASan, UBSan
  # fleet/ (DESIGN §9): etcd v3 over gRPC, protos from Debian's Go packages, S3 over libcurl
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler
  golang-etcd-server-dev golang-github-gogo-protobuf-dev golang-github-grpc-ecosystem-grpc-gateway-dev
  libcurl4-openssl-dev
  etcd-server etcd-client ceph-mon ceph-osd radosgw curl openssl   # tests/fleet: real servers
)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "deps: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
