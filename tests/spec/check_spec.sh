#!/bin/bash
# Check docs/pack-format.md against the store using an independent writer.
#
#   check_spec.sh HOOKCTL PACKWRITER
#
# 1. golden:  the directory of docs/pack-format.md §11 (with its mtimes),
#             packed by PACKWRITER, must equal tests/golden/sample-v2.pack
#             byte for byte, and with --no-mtimes tests/golden/sample.pack.
# 2. accept:  a richer tree (nested dirs, a > 600 KiB file, executables, a
#             symlink) must be accepted by `hookctl apply`, and `hookctl show`
#             must report the digest PACKWRITER printed; `hookctl inspect`
#             must succeed.
# 3. poison:  a pack with one blob's data corrupted (declared id kept) must be
#             rejected by `hookctl apply` (exit 1, "rejected").
# 4. times:   the rich tree again with other mtimes is a duplicate of the same
#             digest; a times record one short rejects its release.
# 5. signed:  with a key made by `hookctl keygen` and trusted for the hook,
#             a pack signed by PACKWRITER (version 2, signature record) is
#             accepted and `signed_by` names the key; the same pack signed
#             over a changed message, an unsigned pack, and a pack signed by
#             a key generated with the openssl CLI that is not trusted are
#             each rejected, naming the key problem.
set -euo pipefail

if [ $# -ne 2 ]; then
    echo "usage: $0 HOOKCTL PACKWRITER" >&2
    exit 2
fi
HOOKCTL=$1
PACKWRITER=$2
PY=/usr/bin/python3

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
GOLDEN=$here/../golden/sample-v2.pack
GOLDEN_V1=$here/../golden/sample.pack

TMP=$(mktemp -d "${TMPDIR:-/tmp}/check_spec.XXXXXX")
trap 'rm -rf "$TMP"' EXIT

passed=0
failed=0
pass() { echo "PASS: $1"; passed=$((passed + 1)); }
fail() { echo "FAIL: $1" >&2; failed=$((failed + 1)); }

# ---------------------------------------------------------------- 1. golden
check_golden() {
    local d=$TMP/golden
    mkdir -p "$d/bin" "$d/empty" "$d/etc"
    printf '#!/bin/sh\necho hello\n' >"$d/bin/run"
    printf 'name = golden\n' >"$d/dup.txt"
    printf 'name = golden\n' >"$d/etc/app.conf"
    ln -s bin/run "$d/link"
    printf 'spaces\n' >"$d/name with space.txt"
    # "ünïcode.txt" as NFC UTF-8 bytes: c3 bc 'n' c3 af 'code.txt'
    printf 'utf-8\n' >"$d/$(printf '\303\274n\303\257code.txt')"
    : >"$d/zero"
    chmod 0755 "$d/bin/run"
    chmod 0644 "$d/dup.txt" "$d/etc/app.conf" "$d/name with space.txt" \
        "$d/$(printf '\303\274n\303\257code.txt')" "$d/zero"
    # The mtimes of docs/pack-format.md §11.
    touch -d @1700000000 "$d/bin/run"
    touch -d @1600000000 "$d/dup.txt"
    touch -d @1500000000 "$d/etc/app.conf"
    touch -h -d @1767225599 "$d/link"
    touch -d @1 "$d/name with space.txt"
    touch -d @-86400 "$d/zero"
    touch -d @1767225600 "$d/$(printf '\303\274n\303\257code.txt')"

    local digest
    if ! digest=$("$PY" "$PACKWRITER" --hook golden --feature shell \
            --source-ref git:0123abcd --message 'golden pack' \
            --created-at 1767225600 "$d" "$TMP/golden.pack"); then
        fail "golden: packwriter failed"
        return
    fi
    if [ "$digest" != da7868de09764f35e3d85e5612cd5828fd192c1d77b4880f4ebeb544a3bb99f2 ]; then
        fail "golden: digest $digest differs from the document's"
        return
    fi
    if ! cmp "$TMP/golden.pack" "$GOLDEN"; then
        fail "golden: pack differs from $GOLDEN"
        return
    fi
    pass "golden: byte-identical to tests/golden/sample-v2.pack ($digest)"
    if ! "$PY" "$PACKWRITER" --hook golden --feature shell --no-mtimes \
            --source-ref git:0123abcd --message 'golden pack' \
            --created-at 1767225600 "$d" "$TMP/golden-v1.pack" >/dev/null; then
        fail "golden v1: packwriter failed"
        return
    fi
    if ! cmp "$TMP/golden-v1.pack" "$GOLDEN_V1"; then
        fail "golden v1: pack differs from $GOLDEN_V1"
        return
    fi
    pass "golden v1: byte-identical to tests/golden/sample.pack"
}

# A richer tree for checks 2 and 3.
make_rich_tree() {
    local d=$1
    mkdir -p "$d/a/b/c/d" "$d/bin" "$d/data" "$d/empty" "$d/a/b/empty2"
    printf '#!/bin/sh\nexec "$(dirname "$0")/helper" "$@"\n' >"$d/bin/start"
    printf '#!/bin/sh\necho helper\n' >"$d/bin/helper"
    chmod 0755 "$d/bin/start"
    chmod 0700 "$d/bin/helper"     # any x bit means executable
    # > 600 KiB, not a multiple of any power of two, not all one byte
    "$PY" -c '
import hashlib, sys
out = bytearray()
i = 0
while len(out) < 700 * 1024 + 123:
    out += hashlib.sha256(str(i).encode()).digest()
    i += 1
sys.stdout.buffer.write(bytes(out[:700 * 1024 + 123]))
' >"$d/data/big.bin"
    printf 'deep\n' >"$d/a/b/c/d/leaf.txt"
    printf 'mid\n' >"$d/a/b/mid.txt"
    printf 'deep\n' >"$d/a/dup-of-leaf.txt"
    printf 'x\n' >"$d/a/b/c/x"
    chmod 0644 "$d/data/big.bin" "$d/a/b/c/d/leaf.txt" "$d/a/b/mid.txt" \
        "$d/a/dup-of-leaf.txt" "$d/a/b/c/x"
    ln -s ../data/big.bin "$d/bin/big-link"
    ln -s /etc/hostname "$d/abs-link"
    printf 'top\n' >"$d/README"
    chmod 0644 "$d/README"
    : >"$d/a/b/c/empty-file"
}

# ---------------------------------------------------------------- 2. accept
check_accept() {
    local d=$TMP/rich store=$TMP/store-accept pack=$TMP/rich.pack
    make_rich_tree "$d"
    local digest
    if ! digest=$("$PY" "$PACKWRITER" --hook richapp --feature test:spec \
            --source-ref 'spec/check' --message 'rich tree' \
            --created-at 1767225601 "$d" "$pack"); then
        fail "accept: packwriter failed"
        return
    fi
    local out rc=0
    out=$("$HOOKCTL" inspect "$pack" 2>&1) || rc=$?
    if [ $rc -ne 0 ]; then
        echo "$out" >&2
        fail "accept: hookctl inspect exited $rc"
        return
    fi
    rc=0
    out=$("$HOOKCTL" apply --store "$store" "$pack" 2>&1) || rc=$?
    if [ $rc -ne 0 ] || ! grep -q '"accepted"' <<<"$out"; then
        echo "$out" >&2
        fail "accept: hookctl apply exited $rc / not accepted"
        return
    fi
    if ! grep -q "$digest" <<<"$out"; then
        echo "$out" >&2
        fail "accept: apply output does not name digest $digest"
        return
    fi
    rc=0
    out=$("$HOOKCTL" show --store "$store" richapp/1 2>&1) || rc=$?
    if [ $rc -ne 0 ] || ! grep -q "$digest" <<<"$out"; then
        echo "$out" >&2
        fail "accept: hookctl show richapp/1 exited $rc or lacks digest $digest"
        return
    fi
    pass "accept: richapp/1 accepted with digest $digest"
}

# ---------------------------------------------------------------- 3. poison
check_poison() {
    local d=$TMP/rich-poison store=$TMP/store-poison pack=$TMP/poison.pack
    make_rich_tree "$d"
    if ! "$PY" "$PACKWRITER" --hook richapp --poison --created-at 1767225602 \
            "$d" "$pack" >/dev/null; then
        fail "poison: packwriter failed"
        return
    fi
    local out rc=0
    out=$("$HOOKCTL" apply --store "$store" "$pack" 2>&1) || rc=$?
    if [ $rc -ne 1 ] || ! grep -q 'rejected' <<<"$out"; then
        echo "$out" >&2
        fail "poison: hookctl apply exited $rc (want 1) / no \"rejected\""
        return
    fi
    pass "poison: rejected (exit 1)"
}

# ---------------------------------------------------------------- 4. times
check_times() {
    local d=$TMP/rich-times store=$TMP/store-times
    make_rich_tree "$d"
    find "$d" ! -type d -exec touch -h -d @1600000000 {} +
    local digest out rc=0
    digest=$("$PY" "$PACKWRITER" --hook richapp --created-at 1 "$d" "$TMP/t1.pack") || { fail "times: packwriter"; return; }
    out=$("$HOOKCTL" apply --store "$store" "$TMP/t1.pack" 2>&1) || rc=$?
    if [ $rc -ne 0 ] || ! grep -q '"accepted"' <<<"$out"; then
        echo "$out" >&2; fail "times: first pack not accepted (exit $rc)"; return
    fi
    find "$d" ! -type d -exec touch -h -d @1700000000 {} +
    local digest2
    digest2=$("$PY" "$PACKWRITER" --hook richapp --created-at 2 "$d" "$TMP/t2.pack") || { fail "times: packwriter"; return; }
    rc=0
    out=$("$HOOKCTL" apply --store "$store" "$TMP/t2.pack" 2>&1) || rc=$?
    if [ $rc -ne 0 ] || [ "$digest2" != "$digest" ] || ! grep -q '"duplicate"' <<<"$out"; then
        echo "$out" >&2; fail "times: other mtimes not a duplicate of $digest (exit $rc, digest $digest2)"; return
    fi
    pass "times: other mtimes, same digest, duplicate"
    echo new >"$d/README"
    "$PY" "$PACKWRITER" --hook richapp --times-count-off 1 "$d" "$TMP/t3.pack" >/dev/null || { fail "times: packwriter"; return; }
    rc=0
    out=$("$HOOKCTL" apply --store "$store" "$TMP/t3.pack" 2>&1) || rc=$?
    if [ $rc -ne 1 ] || ! grep -q 'times record lists' <<<"$out"; then
        echo "$out" >&2; fail "times: a short times record was not rejected (exit $rc)"; return
    fi
    pass "times: a times record one short is rejected"
}

# ---------------------------------------------------------------- 5. signed
check_signed() {
    local d=$TMP/rich-signed store=$TMP/store-signed
    make_rich_tree "$d"
    if ! "$HOOKCTL" keygen -o "$TMP/ci" >/dev/null 2>&1 ||
            ! "$HOOKCTL" key add ci --store "$store" --pub "$TMP/ci.pub" --hook 'rich*' >/dev/null; then
        fail "signed: hookctl keygen / key add failed"
        return
    fi
    local out rc=0
    "$PY" "$PACKWRITER" --hook richapp --sign "$TMP/ci.key" --message signed \
        --created-at 1767225603 "$d" "$TMP/signed.pack" >/dev/null || rc=$?
    if [ $rc -ne 0 ]; then
        fail "signed: packwriter --sign failed (python3-cryptography missing?)"
        return
    fi
    out=$("$HOOKCTL" apply --store "$store" "$TMP/signed.pack" 2>&1) || rc=$?
    if [ $rc -ne 0 ] || ! grep -q '"accepted"' <<<"$out"; then
        echo "$out" >&2
        fail "signed: a well-signed pack was not accepted (exit $rc)"
        return
    fi
    out=$("$HOOKCTL" show --store "$store" richapp/1 2>&1)
    if ! grep -q '"key": "ci"' <<<"$out"; then
        echo "$out" >&2
        fail "signed: richapp/1 does not show signed_by ci"
        return
    fi
    echo changed >"$d/README"
    local what
    for what in tamper unsigned untrusted; do
        local args=(--sign "$TMP/ci.key")
        case $what in
            tamper) args+=(--sign-tamper) ;;
            unsigned) args=() ;;
            untrusted)
                openssl genpkey -algorithm ed25519 -out "$TMP/other.pem" 2>/dev/null
                args=(--sign "$TMP/other.pem") ;;
        esac
        "$PY" "$PACKWRITER" --hook richapp "${args[@]}" --message signed \
            --created-at 1767225604 "$d" "$TMP/$what.pack" >/dev/null
        rc=0
        out=$("$HOOKCTL" apply --store "$store" "$TMP/$what.pack" 2>&1) || rc=$?
        local want
        case $what in
            tamper) want='does not verify' ;;
            unsigned) want='no signature' ;;
            untrusted) want='not trusted' ;;
        esac
        if [ $rc -ne 1 ] || ! grep -q "$want" <<<"$out"; then
            echo "$out" >&2
            fail "signed: $what pack exited $rc (want 1) without \"$want\""
            return
        fi
    done
    pass "signed: signed pack accepted (signed_by ci); tampered, unsigned, untrusted rejected"
}

check_golden
check_accept
check_poison
check_times
check_signed

echo "spec: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
