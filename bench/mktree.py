#!/usr/bin/python3
"""bench/mktree.py: the reference trees of DESIGN.md §6, deterministic.

  mktree.py gen [--scale S] [--seed N] OUT
      OUT/tree: 20,000 x S files, log-normal sizes totalling ~490 MB x S,
                directories nested up to 7 deep, ~1% relative symlinks, ~5%
                executables, ~3% duplicate contents, ~1% empty files, a few
                names with spaces and non-ASCII; fixed mtimes.
      OUT/big:  4 files of 256 MiB x S of random bytes.
      The same (scale, seed) always gives the same bytes. OUT/.stamp records
      them; when it matches, nothing is regenerated.
  mktree.py mutate [--fraction F] [--seed N] TREE SAVE
      rewrite F (default 1%) of TREE's regular files in place with new random
      bytes (same size, new mtime), keeping the originals under SAVE.
  mktree.py restore TREE SAVE
      put the originals back (in place, original mtimes) and remove SAVE.

Standard library only.
"""
import argparse
import math
import os
import random
import shutil
import sys

FILES = 20000
TOTAL = 490_000_000
BIG_COUNT = 4
BIG_SIZE = 256 << 20
MAX_DEPTH = 7
MTIME = 1_700_000_000  # fixed: images and snapshots are reproducible


def randbytes(rng, n):
    # random.randbytes() overflows past 256 MiB; go in 16 MiB pieces
    out = bytearray()
    while n > 0:
        k = min(n, 16 << 20)
        out += rng.randbytes(k)
        n -= k
    return bytes(out)


def write_random(path, rng, n):
    with open(path, "wb") as f:
        while n > 0:
            k = min(n, 16 << 20)
            f.write(rng.randbytes(k))
            n -= k


WORDS = ("lib bin share data conf assets models include src doc locale plugins"
         " cache tmpl static vendor pkg util core extra").split()
ODD = ("with space", "naïve", "données", "été 2024", "x y z")


def gen_tree(root, nfiles, total, rng):
    os.makedirs(root)
    # directories: a random tree, one chain guaranteed to reach MAX_DEPTH
    dirs = [("", 0)]
    ndirs = max(8, nfiles // 16)
    chain = ""
    for d in range(1, MAX_DEPTH + 1):
        chain = os.path.join(chain, "deep%d" % d)
        dirs.append((chain, d))
    while len(dirs) < ndirs:
        parent, depth = dirs[rng.randrange(len(dirs))]
        if depth >= MAX_DEPTH:
            continue
        if rng.random() < 0.01:
            name = rng.choice(ODD) + " %d" % len(dirs)
        else:
            name = "%s%d" % (rng.choice(WORDS), len(dirs))
        dirs.append((os.path.join(parent, name), depth + 1))
    for d, _ in dirs:
        os.makedirs(os.path.join(root, d), exist_ok=True)

    # sizes: log-normal (median ~6.8 KB, sigma 1.6), scaled to the total
    sigma = 1.6
    mu = math.log(total / nfiles) - sigma * sigma / 2
    sizes = [int(rng.lognormvariate(mu, sigma)) for _ in range(nfiles)]
    for i in range(nfiles):
        if rng.random() < 0.01:
            sizes[i] = 0
    factor = total / max(1, sum(sizes))
    sizes = [int(s * factor) for s in sizes]

    paths = []
    for i in range(nfiles):
        d, _ = dirs[rng.randrange(len(dirs))]
        ext = rng.choice((".so", ".py", ".json", ".bin", ".txt", ".dat", ""))
        name = "f%05d%s" % (i, ext)
        if rng.random() < 0.002:
            name = rng.choice(ODD) + " " + name
        paths.append(os.path.join(d, name))

    written = []  # (path, size) of regular files with their own content
    nsym = 0
    for i, (p, size) in enumerate(zip(paths, sizes)):
        full = os.path.join(root, p)
        r = rng.random()
        if r < 0.01 and written:
            # relative symlink to an earlier file
            tgt, _ = written[rng.randrange(len(written))]
            os.symlink(os.path.relpath(os.path.join(root, tgt),
                                       os.path.dirname(full)), full)
            nsym += 1
            continue
        if r < 0.04 and written:
            # duplicate of an earlier file's content
            src, _ = written[rng.randrange(len(written))]
            shutil.copyfile(os.path.join(root, src), full)
        else:
            write_random(full, rng, size)
            written.append((p, size))
        os.chmod(full, 0o755 if rng.random() < 0.05 else 0o644)
        os.utime(full, (MTIME, MTIME))
    # a couple of directory symlinks and a dangling one
    os.symlink("deep1/deep2", os.path.join(root, "shortcut"))
    os.symlink("does/not/exist", os.path.join(root, "dangling"))
    for d, _ in sorted(dirs, key=lambda x: -x[1]):
        os.utime(os.path.join(root, d), (MTIME, MTIME))
    return nsym


def cmd_gen(a):
    stamp = "scale=%s seed=%d v=1\n" % (a.scale, a.seed)
    stamp_path = os.path.join(a.out, ".stamp")
    try:
        with open(stamp_path) as f:
            if f.read() == stamp:
                print("mktree: %s already holds the trees (%s)" % (a.out, stamp.strip()))
                return 0
    except FileNotFoundError:
        pass
    for sub in ("tree", "big", ".stamp"):
        p = os.path.join(a.out, sub)
        if os.path.isdir(p) and not os.path.islink(p):
            shutil.rmtree(p)
        elif os.path.lexists(p):
            os.unlink(p)
    os.makedirs(a.out, exist_ok=True)
    rng = random.Random(a.seed)
    nfiles = max(100, int(FILES * a.scale))
    nsym = gen_tree(os.path.join(a.out, "tree"), nfiles, int(TOTAL * a.scale), rng)
    big = os.path.join(a.out, "big")
    os.makedirs(big)
    bsize = max(1 << 20, (int(BIG_SIZE * a.scale) >> 20) << 20)
    for i in range(1, BIG_COUNT + 1):
        p = os.path.join(big, "blob%d.bin" % i)
        write_random(p, rng, bsize)
        os.utime(p, (MTIME, MTIME))
    with open(stamp_path, "w") as f:
        f.write(stamp)
    print("mktree: %s: tree of %d entries (%d symlinks), big %d x %d MiB"
          % (a.out, nfiles, nsym, BIG_COUNT, bsize >> 20))
    return 0


def regular_files(tree):
    out = []
    for dp, dn, fn in os.walk(tree):
        dn.sort()
        for n in sorted(fn):
            p = os.path.join(dp, n)
            if not os.path.islink(p):
                out.append(os.path.relpath(p, tree))
    return out


def cmd_mutate(a):
    files = regular_files(a.tree)
    rng = random.Random(a.seed)
    pick = rng.sample(files, max(1, int(len(files) * a.fraction)))
    if os.path.exists(a.save):
        sys.exit("mktree: %s exists: restore first" % a.save)
    os.makedirs(a.save)
    nbytes = 0
    with open(os.path.join(a.save, ".list"), "w") as lst:
        for i, rel in enumerate(pick):
            full = os.path.join(a.tree, rel)
            shutil.copy2(full, os.path.join(a.save, str(i)))
            lst.write(rel + "\0")
            size = os.path.getsize(full)
            with open(full, "r+b") as f:  # in place: same inode
                f.write(randbytes(rng, max(size, 1)))
                f.truncate()
            nbytes += max(size, 1)
    print("mktree: changed %d of %d files (%d bytes)" % (len(pick), len(files), nbytes))
    return 0


def cmd_restore(a):
    with open(os.path.join(a.save, ".list")) as f:
        rels = [r for r in f.read().split("\0") if r]
    for i, rel in enumerate(rels):
        full = os.path.join(a.tree, rel)
        saved = os.path.join(a.save, str(i))
        with open(saved, "rb") as s, open(full, "r+b") as d:
            shutil.copyfileobj(s, d, 1 << 20)
            d.truncate()
        shutil.copystat(saved, full)
    shutil.rmtree(a.save)
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("gen")
    g.add_argument("--scale", type=float, default=1.0)
    g.add_argument("--seed", type=int, default=20240601)
    g.add_argument("out")
    m = sub.add_parser("mutate")
    m.add_argument("--fraction", type=float, default=0.01)
    m.add_argument("--seed", type=int, default=7)
    m.add_argument("tree")
    m.add_argument("save")
    r = sub.add_parser("restore")
    r.add_argument("tree")
    r.add_argument("save")
    a = ap.parse_args()
    return {"gen": cmd_gen, "mutate": cmd_mutate, "restore": cmd_restore}[a.cmd](a)


if __name__ == "__main__":
    sys.exit(main())
