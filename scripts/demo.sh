#!/usr/bin/env bash
# The main job: build hookfs, mount a store, publish the sample hook with cp,
# and show it with ordinary tools. Run as root on Debian 12.
#   HOOKFS_MNT   mountpoint (default /mnt/hookfs)
#   HOOKFS_STORE store directory (default /var/lib/hookfs-demo)
# Unmount with: fusermount3 -u /mnt/hookfs
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
cmake --preset default >/dev/null
cmake --build --preset default -j "$(nproc)" --target hookfs hookctl
mnt=${HOOKFS_MNT:-/mnt/hookfs}
store=${HOOKFS_STORE:-/var/lib/hookfs-demo}
hookfs=build/fs/hookfs
hookctl=build/tools/hookctl
mkdir -p "$mnt" "$store"
if grep -q " $mnt fuse" /proc/mounts; then fusermount3 -u "$mnt" || fusermount3 -uz "$mnt"; fi

set -x
"$hookfs" --store "$store" "$mnt"
for _ in $(seq 50); do grep -q " $mnt fuse" /proc/mounts && break; sleep 0.1; done
"$hookctl" pack --hook hello --feature shell --source-ref "examples/hello" \
  --message "sample hook" -o /tmp/hello.pack examples/hello
cp /tmp/hello.pack "$mnt/incoming/" || true   # a duplicate on re-runs is fine
cat "$mnt/incoming/hello.pack.result"
ls -l "$mnt/hooks/hello" "$mnt/hooks/hello/releases"
readlink "$mnt/hooks/hello/live"
cat "$mnt/hooks/hello/live/VERSION" "$mnt/hooks/hello/live/etc/hello.conf"
"$mnt/hooks/hello/live/bin/run"
sha256sum "$mnt/hooks/hello/live/bin/run"
getfattr -n user.hookfs.sha256 "$mnt/hooks/hello/live/bin/run"
cat "$mnt/hooks/hello/hook.json" "$mnt/hooks/hello/releases/1.json"
tail -n 3 "$mnt/journal"
set +x
echo
echo "hookfs is mounted at $mnt (store $store). Unmount with: fusermount3 -u $mnt"
