#!/usr/bin/python3
"""Independent writer for the hookfs pack format, versions 1 and 2.

Written from docs/pack-format.md alone (no C++ sources consulted), to check
that the document is a sufficient contract.

    packwriter.py --hook NAME [--feature F] [--source-ref R] [--message M]
                  [--created-at N] [--no-advance] [--poison] [--no-mtimes]
                  [--times-count-off N] [--sign KEY.pem [--sign-tamper]] DIR OUT

Prints the release digest (the id of DIR's root tree) on stdout.

By default the pack is version 2 and carries a times record (§6a): the
mtime of every file and symlink, in walk order. --no-mtimes writes a
version-1 pack without it. --times-count-off N lists N times fewer (a times
record the store must reject).

--poison writes the data of one (non-empty) blob with one byte flipped while
keeping its declared id, size and a correct trailer: the pack is well framed
but the store must reject the release that reaches that blob.

--sign KEY.pem signs the release with an Ed25519 private key (PEM PKCS#8,
what `hookctl keygen` or `openssl genpkey -algorithm ed25519` writes) and
writes a version-2 pack with a signature record (docs/pack-format.md §6b).
--sign-tamper signs a message whose text differs from the release's by one
byte: the store must reject the release ("does not verify").

Record order (the document only says "hook declaration, then blobs, then
trees (children before parents), then the release, then its times record";
the finer order below is what tests/golden/sample-v2.ids shows):
  - blobs in order of first appearance in a depth-first walk of the tree,
    entries visited in their canonical (byte-sorted) order, each id once;
  - trees in post-order of the same walk (a directory's subtrees, in entry
    order, before the directory itself), each id once.
"""

import argparse
import hashlib
import os
import re
import stat
import struct
import sys
import time

import xxhash

MAGIC = b"HOOKPACK"
FORMAT_VERSION_NO_TIMES = 1
FORMAT_VERSION_TIMES = 2
R_SIGNATURE = 0x06
SIG_ED25519 = 1
SIG_DOMAIN = b"hookfs release signature v1\0"

T_FILE, T_EXEC, T_SYMLINK, T_DIR = 1, 2, 3, 4
R_END, R_HOOK, R_BLOB, R_TREE, R_RELEASE, R_TIMES = 0x00, 0x01, 0x02, 0x03, 0x04, 0x05
MAX_TIMES = 2097152

MAX_BLOB = 1 << 40
MAX_TREE = 16 * 1024 * 1024
MAX_ENTRIES = 100000
MAX_BODY = 65536
MAX_RECORDS = 4194304
MAX_DEPTH = 64
MAX_SOURCE_REF = 1024
MAX_MESSAGE = 4096

HOOK_RE = re.compile(rb"\A[a-z0-9][a-z0-9._-]{0,63}\Z")
FEATURE_RE = re.compile(rb"\A[A-Za-z0-9][A-Za-z0-9._:/+-]{0,63}\Z")

CHUNK = 1 << 20


class PackError(Exception):
    pass


def sha256_file(path):
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while True:
            b = f.read(CHUNK)
            if not b:
                break
            h.update(b)
            size += len(b)
    return h.digest(), size


class Builder:
    def __init__(self):
        self.blobs = []        # [(id, size, path)] in first-appearance order
        self.blob_ids = set()
        self.trees = []        # [(id, tree_bytes)] post-order
        self.tree_ids = set()
        self.mtimes = []       # files and symlinks, depth-first walk order

    def check_name(self, name, where):
        if not (1 <= len(name) <= 255) or name in (b".", b"..") \
                or b"/" in name or b"\0" in name:
            raise PackError("invalid entry name %r in %s" % (name, where))

    def tree(self, path, depth):
        """Encode directory PATH; returns its id. depth: levels below root."""
        if depth > MAX_DEPTH:
            raise PackError("%s: nested more than %d levels below the root"
                            % (os.fsdecode(path), MAX_DEPTH))
        names = sorted(os.listdir(path))  # bytes: sorted as unsigned bytes
        if len(names) > MAX_ENTRIES:
            raise PackError("%s: more than %d entries" % (os.fsdecode(path), MAX_ENTRIES))
        out = [struct.pack("<I", len(names))]
        for name in names:
            self.check_name(name, os.fsdecode(path))
            full = os.path.join(path, name)
            st = os.lstat(full)
            m = st.st_mode
            if not stat.S_ISDIR(m):
                # whole seconds, rounded down (also before 1970)
                self.mtimes.append(st.st_mtime_ns // 1000000000)
            if stat.S_ISLNK(m):
                target = os.readlink(full)
                if not (1 <= len(target) <= 4095) or b"\0" in target:
                    raise PackError("%s: bad symlink target" % os.fsdecode(full))
                out.append(struct.pack("<BB", T_SYMLINK, len(name)) + name
                           + struct.pack("<H", len(target)) + target)
            elif stat.S_ISDIR(m):
                sub = self.tree(full, depth + 1)
                out.append(struct.pack("<BB", T_DIR, len(name)) + name + sub)
            elif stat.S_ISREG(m):
                bid, size = sha256_file(full)
                if size > MAX_BLOB:
                    raise PackError("%s: larger than 2^40 bytes" % os.fsdecode(full))
                if bid not in self.blob_ids:
                    self.blob_ids.add(bid)
                    self.blobs.append((bid, size, full))
                typ = T_EXEC if (m & 0o111) else T_FILE
                out.append(struct.pack("<BB", typ, len(name)) + name
                           + bid + struct.pack("<Q", size))
            else:
                raise PackError("%s: unsupported file type" % os.fsdecode(full))
        data = b"".join(out)
        if len(data) > MAX_TREE:
            raise PackError("%s: encoded tree larger than 16 MiB" % os.fsdecode(path))
        tid = hashlib.sha256(data).digest()
        if tid not in self.tree_ids:
            self.tree_ids.add(tid)
            self.trees.append((tid, data))
        return tid


class HashingWriter:
    def __init__(self, f):
        self.f = f
        self.h = xxhash.xxh3_128(seed=0)

    def write(self, b):
        self.h.update(b)
        self.f.write(b)


def main(argv):
    ap = argparse.ArgumentParser(description="write a hookfs pack (v2 with times, v1 without) from a directory")
    ap.add_argument("--hook", required=True)
    ap.add_argument("--feature", default="")
    ap.add_argument("--source-ref", default="")
    ap.add_argument("--message", default="")
    ap.add_argument("--created-at", type=int, default=None)
    ap.add_argument("--no-advance", action="store_true")
    ap.add_argument("--poison", action="store_true")
    ap.add_argument("--no-mtimes", action="store_true")
    ap.add_argument("--times-count-off", type=int, default=0)
    ap.add_argument("--sign", default=None)
    ap.add_argument("--sign-tamper", action="store_true")
    ap.add_argument("dir")
    ap.add_argument("out")
    a = ap.parse_args(argv)

    hook = os.fsencode(a.hook)
    feature = os.fsencode(a.feature)
    source_ref = os.fsencode(a.source_ref)
    message = os.fsencode(a.message)
    created_at = int(time.time()) if a.created_at is None else a.created_at

    if not HOOK_RE.match(hook):
        raise PackError("invalid hook name %r" % a.hook)
    if feature and not FEATURE_RE.match(feature):
        raise PackError("invalid feature %r" % a.feature)
    if len(source_ref) > MAX_SOURCE_REF:
        raise PackError("source_ref longer than %d bytes" % MAX_SOURCE_REF)
    if len(message) > MAX_MESSAGE:
        raise PackError("message longer than %d bytes" % MAX_MESSAGE)
    if not -(1 << 63) <= created_at < (1 << 63):
        raise PackError("created_at out of i64 range")

    root_dir = os.fsencode(a.dir)
    if not os.path.isdir(root_dir):
        raise PackError("%s is not a directory" % a.dir)

    b = Builder()
    root = b.tree(root_dir, 0)

    poison_id = None
    if a.poison:
        for bid, size, _ in b.blobs:
            if size > 0:
                poison_id = bid
                break
        if poison_id is None:
            raise PackError("--poison needs at least one non-empty file")

    hook_decl = struct.pack("<B", len(hook)) + hook + struct.pack("<B", len(feature)) + feature
    release_rec = (struct.pack("<B", len(hook)) + hook + root
                   + struct.pack("<B", 1 if a.no_advance else 0)
                   + struct.pack("<q", created_at)
                   + struct.pack("<H", len(source_ref)) + source_ref
                   + struct.pack("<H", len(message)) + message)
    assert len(hook_decl) <= MAX_BODY and len(release_rec) <= MAX_BODY

    times_rec = None
    if not a.no_mtimes:
        mtimes = b.mtimes[:len(b.mtimes) - a.times_count_off]
        if len(mtimes) > MAX_TIMES:
            raise PackError("more than %d files and symlinks: no times" % MAX_TIMES)
        times_rec = (struct.pack("<B", len(hook)) + hook + root
                     + struct.pack("<I", len(mtimes))
                     + b"".join(struct.pack("<q", t) for t in mtimes))

    signature_rec = None
    if a.sign:
        # Imported here: unsigned packs need nothing beyond xxhash.
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ed25519
        with open(a.sign, "rb") as kf:
            key = serialization.load_pem_private_key(kf.read(), password=None)
        if not isinstance(key, ed25519.Ed25519PrivateKey):
            raise PackError("%s is not an Ed25519 private key" % a.sign)
        raw_pub = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        key_id = hashlib.sha256(raw_pub).digest()
        # The times record as written; without one, that of an empty list.
        times_sha = hashlib.sha256(times_rec if times_rec is not None else
                                   struct.pack("<B", len(hook)) + hook + root + struct.pack("<I", 0)).digest()
        signed_message = message + (b"!" if a.sign_tamper else b"")
        msg = (SIG_DOMAIN
               + struct.pack("<B", len(hook)) + hook
               + struct.pack("<B", len(feature)) + feature
               + root
               + struct.pack("<B", 1 if a.no_advance else 0)
               + struct.pack("<q", created_at)
               + struct.pack("<H", len(source_ref)) + source_ref
               + struct.pack("<H", len(signed_message)) + signed_message
               + times_sha)
        sig = key.sign(msg)
        signature_rec = (struct.pack("<B", len(hook)) + hook + root
                         + struct.pack("<B", SIG_ED25519) + key_id
                         + struct.pack("<H", len(sig)) + sig)

    version = FORMAT_VERSION_NO_TIMES if times_rec is None and signature_rec is None else FORMAT_VERSION_TIMES

    count = 1 + len(b.blobs) + len(b.trees) + 1 + (times_rec is not None) + (signature_rec is not None)
    if count > MAX_RECORDS:
        raise PackError("more than %d records" % MAX_RECORDS)

    tmp = a.out + ".tmp%d" % os.getpid()
    try:
        with open(tmp, "wb") as f:
            w = HashingWriter(f)
            w.write(MAGIC + struct.pack("<II", version, 0))
            w.write(struct.pack("<BI", R_HOOK, len(hook_decl)) + hook_decl)
            for bid, size, path in b.blobs:
                w.write(struct.pack("<B", R_BLOB) + bid + struct.pack("<Q", size))
                written = 0
                first = True
                with open(path, "rb") as src:
                    while True:
                        chunk = src.read(CHUNK)
                        if not chunk:
                            break
                        if bid == poison_id and first:
                            chunk = bytes([chunk[0] ^ 0x01]) + chunk[1:]
                        first = False
                        w.write(chunk)
                        written += len(chunk)
                if written != size:
                    raise PackError("%s changed while packing" % os.fsdecode(path))
            for tid, data in b.trees:
                w.write(struct.pack("<B", R_TREE) + tid + struct.pack("<I", len(data)) + data)
            w.write(struct.pack("<BI", R_RELEASE, len(release_rec)) + release_rec)
            if times_rec is not None:
                w.write(struct.pack("<BI", R_TIMES, len(times_rec)) + times_rec)
            if signature_rec:
                w.write(struct.pack("<BI", R_SIGNATURE, len(signature_rec)) + signature_rec)
            w.write(struct.pack("<B", R_END))
            w.write(struct.pack("<Q", count))
            # python-xxhash's digest() is the canonical form: high 64 bits
            # big-endian, then low 64 bits big-endian.
            f.write(w.h.digest())
        os.replace(tmp, a.out)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise

    print(root.hex())
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except (PackError, OSError) as e:
        print("packwriter: %s" % e, file=sys.stderr)
        sys.exit(1)
