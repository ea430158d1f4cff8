#!/usr/bin/env bash
# Builds the Debian package (docs/packaging.md) from this tree into OUT
# (default build/package): hookfs_V_ARCH.deb, its -dbgsym, .buildinfo and
# .changes, then runs lintian on the .changes (the .debs with it): any error or
# warning fails. dpkg-buildpackage writes into the parent of the tree it builds, so
# it builds a copy, OUT/src/hookfs-V, never the checkout. A package built
# from identical sources (OUT/sources.sha256) is reused, not rebuilt.
# Needs: scripts/deps.sh (debhelper, lintian, the build dependencies).
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
out=$(mkdir -p "${1:-$top/build/package}" && cd "${1:-$top/build/package}" && pwd)
version=$(cd "$top" && dpkg-parsechangelog -S Version)
src="$out/src/hookfs-$version"

# The sources: what git tracks or would track (untracked files not ignored),
# so a build directory in the tree never goes into the package build.
cd "$top"
if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  files=$(git ls-files --cached --others --exclude-standard | while read -r f; do [ -e "$f" ] && echo "$f"; done)
else
  files=$(find . -path ./build -prune -o -path './build-*' -prune -o -type f -print | sed 's|^\./||')
fi
sum=$(printf '%s\n' "$files" | LC_ALL=C sort | tr '\n' '\0' | xargs -0 sha256sum | sha256sum | cut -d' ' -f1)
deb="$out/hookfs_${version}_$(dpkg-architecture -qDEB_HOST_ARCH).deb"
if [ -f "$deb" ] && [ "$(cat "$out/sources.sha256" 2>/dev/null)" = "$sum" ]; then
  echo "package: $deb is up to date (sources $sum)"
  exit 0
fi

rm -rf "$out/src" "$out"/hookfs_* "$out"/hookfs-dbgsym_* "$out/sources.sha256" "$out/build.log"
mkdir -p "$src"
printf '%s\n' "$files" | tr '\n' '\0' | xargs -0 cp --parents -P -t "$src"
start=$(date +%s)
echo "package: dpkg-buildpackage -b -us -uc in $src (log: $out/build.log)"
if ! (cd "$src" && dpkg-buildpackage -b -us -uc) >"$out/build.log" 2>&1; then
  tail -n 60 "$out/build.log" >&2
  echo "package: dpkg-buildpackage failed (log: $out/build.log)" >&2
  exit 1
fi
mv "$out"/src/hookfs_* "$out"/src/hookfs-dbgsym_* "$out"/
echo "package: built in $(( $(date +%s) - start )) s: $(cd "$out" && ls hookfs*_*.deb | tr '\n' ' ')"
changes=$(ls "$out"/hookfs_"${version}"_*.changes)
echo "package: lintian $changes"
root=()
[ "$(id -u)" = 0 ] && root=(--allow-root)
lintian "${root[@]}" --fail-on error,warning --display-info "$changes"
echo "$sum" > "$out/sources.sha256"
