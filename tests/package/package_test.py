#!/usr/bin/env python3
"""The Debian package on this machine (docs/packaging.md).

usage: package_test.py OUTDIR   (OUTDIR holds hookfs_V_ARCH.deb: scripts/package.sh)

Installs the package with `apt-get install ./hookfs_*.deb`, checks what the
maintainer scripts did (groups, directories, conffile, nothing enabled), runs
the installed /usr/bin/hookfs exactly as hookfs.service's ExecStart= does
(systemd is not PID 1 here: the test is the notify socket, the unit's UMask=,
NoNewPrivileges= and CapabilityBoundingSet= via setpriv) until READY=1,
publishes with cp, reads back with sha256sum, stops it with SIGTERM, then
`apt-get remove` and `apt-get purge` and checks that nothing the package
installed is left and the machine is as before. The package leaves the groups
hookpub and hookrun (Debian practice); the test deletes them afterwards when
they did not exist before it ran.

Needs root and /dev/fuse (exit 77: skipped without /dev/fuse). A package a
previous run left installed is purged first. Whatever happens, no daemon and
no mount of this test outlive it.
"""
import ctypes
import glob
import os
import grp
import json
import select
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time

UNIT = "/lib/systemd/system/hookfs.service"
CONF = "/etc/hookfs/hookfs.conf"
STORE = "/var/lib/hookfs"
MOUNTPOINT = "/srv/hookfs"
GROUPS = ("hookpub", "hookrun")
# Marks a store this test made (so a later run may delete it after a crash).
MARKER = ".hookfs-package-test"
# What the package must own (dpkg -L) once installed.
EXPECTED = [
    "/usr/bin/hookfs", "/usr/bin/hookctl", UNIT, "/lib/systemd/system/hookfs@.service",
    "/usr/lib/sysusers.d/hookfs.conf", "/usr/lib/tmpfiles.d/hookfs.conf", CONF,
    "/usr/share/man/man8/hookfs.8.gz", "/usr/share/man/man1/hookctl.1.gz",
    "/usr/share/doc/hookfs/copyright", "/usr/share/doc/hookfs/changelog.gz",
]
# Where a file of the package or its maintainer scripts could be left.
SNAPSHOT_ROOTS = ["/etc", "/usr", "/var/lib", "/srv", "/run/systemd"]
APT = ["apt-get", "-y", "-q", "-o", "DPkg::Lock::Timeout=600", "--no-install-recommends"]

failures = []


def log(msg):
    print(msg, flush=True)


def check(cond, what):
    log(("ok   " if cond else "FAIL ") + what)
    if not cond:
        failures.append(what)
    return cond


def run(cmd, check_rc=True, **kw):
    """Runs cmd (a list or a shell string); returns (rc, stdout+stderr)."""
    shell = isinstance(cmd, str)
    log("$ " + (cmd if shell else " ".join(shlex.quote(c) for c in cmd)))
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    p = subprocess.run(cmd, shell=shell, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, **kw)
    p.stdout = "\n".join(l for l in p.stdout.splitlines() if not l.startswith("(Reading database ..."))
    if check_rc and p.returncode != 0:
        raise RuntimeError(f"exit {p.returncode}: {cmd}\n{p.stdout}")
    return p.returncode, p.stdout


def package_state():
    p = subprocess.run(["dpkg-query", "-W", "-f=${db:Status-Abbrev}", "hookfs"], stdout=subprocess.PIPE,
                       stderr=subprocess.DEVNULL, text=True)
    return p.stdout.strip() if p.returncode == 0 else ""


def fuse_mounted(path):
    with open("/proc/mounts") as f:
        return any(len(w) > 2 and w[1] == path and w[2].startswith("fuse") for w in (l.split() for l in f))


def snapshot():
    """Every path whose name mentions hookfs under the roots a package touches."""
    found = set()
    for root in SNAPSHOT_ROOTS:
        p = subprocess.run(["find", root, "-xdev", "-name", "*hookfs*"], stdout=subprocess.PIPE,
                           stderr=subprocess.DEVNULL, text=True)
        found.update(l for l in p.stdout.splitlines() if l)
    return found


def group_exists(g):
    try:
        grp.getgrnam(g)
        return True
    except KeyError:
        return False


def unit_directives(path):
    out = {}
    for line in open(path):
        line = line.strip()
        if not line or line[0] in "#;[" or "=" not in line:
            continue
        k, v = line.split("=", 1)
        out.setdefault(k, []).append(v)
    return out


def conf_value(text, key):
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            k, v = (s.strip() for s in line.split("=", 1))
            if k == key:
                return v
    return None


class Daemon:
    """The installed hookfs, started as hookfs.service's ExecStart= would be."""

    def __init__(self, work):
        self.proc = None
        self.notes = []
        self.log_path = os.path.join(work, "daemon.log")
        self.sock_path = os.path.join(work, "notify.sock")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.sock_path)

    def start(self):
        d = unit_directives(UNIT)
        exec_start = shlex.split(d["ExecStart"][-1])
        check(exec_start[0] == "/usr/bin/hookfs", "ExecStart= runs /usr/bin/hookfs: " + " ".join(exec_start))
        argv = []
        if os.access("/usr/bin/setpriv", os.X_OK):
            caps = ",".join(["-all"] + ["+" + c.lower()[4:] for c in d.get("CapabilityBoundingSet", [""])[-1].split()])
            argv = ["/usr/bin/setpriv", "--bounding-set", caps, "--inh-caps", "-all"]
            if d.get("NoNewPrivileges", ["no"])[-1] == "yes":
                argv.insert(1, "--no-new-privs")
        argv += exec_start
        umask = int(d.get("UMask", ["0022"])[-1], 8)
        # systemd's environment for a system service, plus the notify socket.
        env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8",
               "NOTIFY_SOCKET": self.sock_path}
        for e in d.get("Environment", []):
            k, v = e.split("=", 1)
            env[k] = v
        log("$ " + " ".join(shlex.quote(a) for a in argv) + f"   (umask {umask:04o}, NOTIFY_SOCKET={self.sock_path})")
        logf = open(self.log_path, "ab")
        def child():
            os.umask(umask)
            # If this test is killed (a ctest timeout), the daemon gets SIGTERM and unmounts.
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG

        self.proc = subprocess.Popen(argv, env=env, cwd="/", stdin=subprocess.DEVNULL, stdout=logf, stderr=logf,
                                     preexec_fn=child)
        logf.close()

    def wait_note(self, word, seconds):
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if any(word in n for n in self.notes):
                return True
            r, _, _ = select.select([self.sock], [], [], 0.1)
            if r:
                self.notes.append(self.sock.recv(4096).decode(errors="replace"))
            elif self.proc.poll() is not None and not select.select([self.sock], [], [], 0)[0]:
                return any(word in n for n in self.notes)
        return False

    def stop(self, sig=signal.SIGTERM, seconds=30):
        """Signals the daemon and reaps it; returns its exit code (None if not running)."""
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(seconds)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()

    def log_text(self):
        try:
            return open(self.log_path, errors="replace").read()
        except OSError:
            return ""


def preflight():
    """Purges what a previous run left; refuses to touch what is not ours."""
    state = package_state()
    if state:
        log(f"hookfs is already known to dpkg ({state}): a previous run left it; purging it first")
        if fuse_mounted(MOUNTPOINT):
            raise RuntimeError(f"{MOUNTPOINT} is mounted: a running hookfs is not this test's to stop")
        run(APT + ["purge", "hookfs"])
    if os.path.exists(os.path.join(STORE, MARKER)):
        log(f"removing the store {STORE} a previous run of this test made")
        run(["rm", "-rf", "--one-file-system", STORE])
    for p in ["/usr/bin/hookfs", "/usr/bin/hookctl", "/etc/hookfs", STORE, MOUNTPOINT]:
        if os.path.lexists(p):
            raise RuntimeError(f"{p} exists and the hookfs package is not installed: the package would install "
                               "over it and purge would delete it; move it away first")


def main():
    # SIGTERM (ctest, a CI runner) unwinds like an exception, so the cleanup runs.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("terminated"))
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    if not os.path.exists("/dev/fuse"):
        log("SKIP: /dev/fuse is missing")
        sys.exit(77)
    if os.geteuid() != 0:
        sys.exit("the package test needs root (apt-get install)")
    debs = [d for d in glob.glob(os.path.join(os.path.abspath(sys.argv[1]), "hookfs_*.deb"))]
    if len(debs) != 1:
        sys.exit(f"expected one hookfs_*.deb in {sys.argv[1]}, found {debs}: run scripts/package.sh")
    deb = debs[0]
    t0 = time.monotonic()
    work = tempfile.mkdtemp(prefix="hookfs-pkgtest-")
    os.chmod(work, 0o755)
    daemon = None
    groups_before = {g: group_exists(g) for g in GROUPS}
    try:
        preflight()
        before = snapshot()

        # ---- install ----
        rc, out = run(APT + ["install", deb])
        log(out)
        check(package_state() == "ii", "installed: dpkg says ii")
        _, listing = run(["dpkg", "-L", "hookfs"])
        owned = [l for l in listing.splitlines() if l and l != "/."]
        for f in EXPECTED:
            check(f in owned and os.path.isfile(f), f"the package installs {f}")
        _, conffiles = run(["dpkg-query", "-W", "-f=${Conffiles}", "hookfs"])
        check(CONF in conffiles, f"{CONF} is a conffile")
        for g in GROUPS:
            check(group_exists(g), f"postinst made group {g} (systemd-sysusers)")
        st = os.stat(STORE) if os.path.isdir(STORE) else None
        check(st is not None and st.st_mode & 0o7777 == 0o750, f"postinst made {STORE} 0750 (systemd-tmpfiles)")
        check(os.path.isdir(MOUNTPOINT), f"postinst made {MOUNTPOINT} (systemd-tmpfiles)")
        check(not os.path.lexists("/etc/systemd/system/multi-user.target.wants/hookfs.service"),
              "hookfs.service is not enabled on install")
        rc, out = run("MANPATH=/usr/share/man man -w hookfs hookctl", check_rc=False)
        check(rc == 0, "man hookfs, man hookctl: " + out.strip())
        rc, out = run(["systemd-analyze", "verify", UNIT], check_rc=False)
        check(rc == 0 and out.strip() == "", "systemd-analyze verify of the installed unit is silent: " + out.strip())
        conf_text = open(CONF).read()
        check(conf_value(conf_text, "store") == STORE and conf_value(conf_text, "mountpoint") == MOUNTPOINT,
              f"the installed configuration serves {STORE} on {MOUNTPOINT}")
        # Mark the store as this test's before anything is in it.
        open(os.path.join(STORE, MARKER), "w").close()

        # ---- run as the unit does ----
        daemon = Daemon(work)
        t_start = time.monotonic()
        daemon.start()
        ready = daemon.wait_note("READY=1", 60)
        check(ready, f"READY=1 in {time.monotonic() - t_start:.2f} s")
        if not ready:
            raise RuntimeError("no READY=1:\n" + daemon.log_text())
        check(fuse_mounted(MOUNTPOINT), f"{MOUNTPOINT} is a FUSE mount")
        _, ls = run(["ls", MOUNTPOINT])
        check({"hooks", "incoming"} <= set(ls.split()), "ls shows hooks/ and incoming/: " + " ".join(ls.split()))
        _, g = run(["stat", "-c", "%G", MOUNTPOINT + "/incoming"])
        check(g.strip() == conf_value(conf_text, "publish_group"), "incoming/ belongs to publish_group: " + g.strip())

        # A hook with a file larger than one chunk (256 KiB) and a script.
        src = os.path.join(work, "src")
        os.makedirs(src + "/bin")
        with open(src + "/data.bin", "wb") as f:
            f.write(os.urandom(700 * 1024))
        with open(src + "/bin/run", "w") as f:
            f.write("#!/bin/sh\necho package test\n")
        os.chmod(src + "/bin/run", 0o755)
        pack = os.path.join(work, "pkgtest.pack")
        run(["/usr/bin/hookctl", "pack", "--hook", "pkgtest", "--no-cache", "--message", "package test", "-o", pack,
             src])
        run(["cp", pack, MOUNTPOINT + "/incoming/pkgtest.pack"])
        _, result = run(["cat", MOUNTPOINT + "/incoming/pkgtest.pack.result"], check_rc=False)
        try:
            releases = json.loads(result).get("releases", [])
        except ValueError:
            releases = []
        check([(r.get("hook"), r.get("result"), r.get("version")) for r in releases] == [("pkgtest", "accepted", 1)],
              "the publish is accepted as pkgtest release 1: " + " ".join(result.split()))
        sums = "find . -type f | LC_ALL=C sort | xargs sha256sum"
        _, want = run(f"cd {shlex.quote(src)} && {sums}")
        _, got = run(f"cd {MOUNTPOINT}/hooks/pkgtest/live/ && {sums}")
        check(got == want and len(want.splitlines()) == 2, "sha256sum through the mount equals the source's")
        rc, out = run([MOUNTPOINT + "/hooks/pkgtest/live/bin/run"], check_rc=False)
        check(rc == 0 and out.strip() == "package test", f"the published script runs from the mount: exit {rc}: {out!r}")

        # ---- stop as systemd does: SIGTERM, then ExecStopPost= ----
        code = daemon.stop()
        check(code == 0, f"SIGTERM: exit {code}")
        check(daemon.wait_note("STOPPING=1", 1), "STOPPING=1 sent")
        check(not fuse_mounted(MOUNTPOINT), f"{MOUNTPOINT} is unmounted")
        post = shlex.split(unit_directives(UNIT)["ExecStopPost"][-1])
        rc, out = run(post, check_rc=False)
        check(rc == 0, "ExecStopPost= after a clean stop succeeds: " + out.strip())
        check(os.path.isfile(os.path.join(STORE, "data.mdb")), f"the store {STORE} holds the release")

        # ---- remove: binaries go, configuration and store stay ----
        run(APT + ["remove", "hookfs"])
        check(package_state() == "rc", "removed: dpkg says rc")
        check(not os.path.exists("/usr/bin/hookfs") and not os.path.exists(UNIT), "remove deletes binaries and units")
        check(os.path.isfile(CONF), f"remove keeps {CONF}")
        check(os.path.isfile(os.path.join(STORE, "data.mdb")), f"remove keeps the store {STORE}")

        # ---- purge: configuration goes; a store with releases stays, and purge says so ----
        _, out = run(APT + ["purge", "hookfs"])
        log(out)
        check(package_state() == "", "purged: dpkg no longer knows hookfs")
        check(not os.path.lexists("/etc/hookfs"), "purge deletes /etc/hookfs")
        check(not os.path.lexists(MOUNTPOINT), f"purge deletes the empty mountpoint {MOUNTPOINT}")
        check(os.path.isfile(os.path.join(STORE, "data.mdb")), f"purge keeps the store {STORE} (it holds releases)")
        check(f"purge keeps the store {STORE}" in out, "purge says it keeps the store")
        run(["rm", "-rf", "--one-file-system", STORE])  # the test's own store

        for f in owned:
            if f not in before and not os.path.isdir(f):
                check(not os.path.lexists(f), f"gone after purge: {f}")
        left = sorted(f for f in owned if os.path.lexists(f) and not os.path.isdir(f))
        check(not left, "no file of the package is left: " + " ".join(left))
        after = snapshot()
        check(after == before, "no path named *hookfs* appeared or vanished under " + " ".join(SNAPSHOT_ROOTS) +
              ": " + " ".join(sorted(after ^ before)))
        for g in GROUPS:
            check(group_exists(g), f"purge leaves group {g} (Debian practice)")
    except Exception as e:  # noqa: BLE001 - reported as a failure, cleanup follows
        failures.append(str(e))
        log("FAIL " + str(e))
    finally:
        # Never leave a daemon, a mount, the package or the test's store behind.
        if daemon is not None:
            if daemon.stop(signal.SIGTERM, 30) not in (None, 0) or failures:
                log("---- daemon log ----\n" + daemon.log_text() + "----")
            daemon.sock.close()
        if fuse_mounted(MOUNTPOINT) and daemon is not None and daemon.proc is not None:
            subprocess.run(["fusermount3", "-uz", MOUNTPOINT])
        if package_state():
            subprocess.run(APT + ["purge", "hookfs"], stdout=subprocess.DEVNULL, env=dict(os.environ,
                           DEBIAN_FRONTEND="noninteractive"))
        if os.path.exists(os.path.join(STORE, MARKER)):
            subprocess.run(["rm", "-rf", "--one-file-system", STORE])
        for g, existed in groups_before.items():
            if not existed and group_exists(g):
                subprocess.run(["groupdel", g])
                log(f"deleted group {g} (the package made it; it did not exist before the test)")
        subprocess.run(["rm", "-rf", "--one-file-system", work])
    log(f"package test: {time.monotonic() - t0:.1f} s, {len(failures)} failure(s)")
    for f in failures:
        log("  " + f.splitlines()[0])
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
