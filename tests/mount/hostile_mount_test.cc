// Issue 9 through the mount, with real unprivileged users: no publisher can
// harm another (DESIGN.md §4, docs/security.md). Two members of
// publish_group (alice, bob) and one outsider, created per process.
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "mount_fixture.h"

namespace hookfs::mount_test {
namespace {

class HostileTest : public MountTest {
 protected:
  void SetUp() override {
    MountTest::SetUp();
    if (IsSkipped()) return;
    ASSERT_EQ(::geteuid(), 0u) << "these tests need root (useradd, groupadd, allow_other)";
    std::string tag = std::to_string(::getpid() % 100000);
    pub_ = "hfhpub" + tag;
    run_ = "hfhrun" + tag;
    alice_ = "hfhali" + tag;
    bob_ = "hfhbob" + tag;
    outsider_ = "hfhout" + tag;
    ASSERT_TRUE(Sh("groupadd " + pub_).ok());
    ASSERT_TRUE(Sh("groupadd " + run_).ok());
    created_ = true;
    for (const std::string& u : {alice_, bob_}) {
      Cmd c = Sh("useradd -M -N -g users -G " + pub_ + "," + run_ + " " + u);
      ASSERT_TRUE(c.ok()) << c.err;
    }
    Cmd c = Sh("useradd -M -N -g users " + outsider_);
    ASSERT_TRUE(c.ok()) << c.err;
  }
  void TearDown() override {
    MountTest::TearDown();
    if (created_) {
      for (const std::string& u : {alice_, bob_, outsider_}) Sh("userdel " + u);
      Sh("groupdel " + pub_);
      Sh("groupdel " + run_);
    }
  }
  void MountShared(const std::string& extra = "") {
    Mount("allow_other,publish_group=" + pub_ + ",run_group=" + run_ + (extra.empty() ? "" : "," + extra));
  }
  Cmd As(const std::string& user, const std::string& cmd) {
    return Sh("runuser -u " + user + " -- sh -c " + Q(cmd));
  }
  uint32_t Uid(const std::string& user) { return static_cast<uint32_t>(std::stoul(Sh("id -u " + user).out)); }
  nlohmann::json Json(const std::string& path) { return nlohmann::json::parse(ReadAll(path)); }
  // A readable pack of hook `hook` with one file.
  std::string SmallPack(const std::string& hook, const std::string& content) {
    std::string d = NewDir(hook + "-" + std::to_string(++n_));
    WriteAll(d + "/f", content);
    std::string p = Pack(hook, d);
    ::chmod(p.c_str(), 0644);
    return p;
  }
  std::string In(const std::string& name) const { return mnt_ + "/incoming/" + name; }

  std::string pub_, run_, alice_, bob_, outsider_;
  bool created_ = false;
  int n_ = 0;
};

// Issue 9.1: one member's creates in incoming/ starved the daemon of
// descriptors (1,010 files), and then everyone's cp, ln -sfn and mkdir failed.
TEST_F(HostileTest, OneMemberCreatingFilesIsRefusedAt65AndOthersStillWork) {
  ASSERT_NO_FATAL_FAILURE(MountShared());
  ASSERT_TRUE(Publish(SmallPack("app", "one\n"), "1.pack").ok());
  // The daemon raised its soft descriptor limit to the hard one.
  std::string limits = ReadAll("/proc/" + std::to_string(daemon_) + "/limits");
  std::istringstream ls(limits);
  std::string line, soft, hard;
  while (std::getline(ls, line)) {
    if (line.rfind("Max open files", 0) == 0) {
      std::istringstream f(line.substr(14));
      f >> soft >> hard;
    }
  }
  EXPECT_EQ(soft, hard) << limits;

  // Staged files (never published, never closed empty under a pack name).
  Cmd flood = As(alice_, "cd " + mnt_ + "/incoming && i=0; while [ $i -lt 80 ]; do i=$((i+1)); "
                 "true > .e$i 2>/dev/null || { echo refused at $i; true > .e$i; exit 0; }; done; echo never refused");
  EXPECT_EQ(flood.out, "refused at 65\n") << flood.err;
  EXPECT_NE(flood.err.find("Disk quota exceeded"), std::string::npos) << flood.err;
  EXPECT_NE(ReadAll(log_).find("EDQUOT: uid " + std::to_string(Uid(alice_))), std::string::npos);
  // Meanwhile bob publishes, moves live, starts a run.
  std::string p2 = SmallPack("app", "two\n");
  Cmd cp = As(bob_, "cp " + p2 + " " + In("b.pack"));
  EXPECT_TRUE(cp.ok()) << cp.err;
  Cmd ln = As(bob_, "ln -sfn releases/1 " + Hook("app") + "/live");
  EXPECT_TRUE(ln.ok()) << ln.err;
  Cmd mk = As(bob_, "mkdir " + Hook("app") + "/runs/x");
  EXPECT_TRUE(mk.ok()) << mk.err;
  EXPECT_EQ(Sh("readlink " + Q(Hook("app") + "/live")).out, "releases/1\n");
}

// Issue 9.1: a staged file nobody writes to is rejected after the idle
// timeout (-o pack_idle_timeout, 600 s by default): result, name gone.
TEST_F(HostileTest, AStagedFileNobodyWritesToExpires) {
  ASSERT_NO_FATAL_FAILURE(MountShared("pack_idle_timeout=1"));
  ASSERT_TRUE(As(alice_, ": > " + In(".idle")).ok());
  ::sleep(2);
  Cmd ls = Sh("ls -A " + Q(mnt_ + "/incoming"));
  EXPECT_EQ(ls.out, ".idle.result\n") << ls.err;
  EXPECT_EQ(Sh("stat -c %U " + Q(In(".idle.result"))).out, alice_ + "\n");
  EXPECT_NE(ReadAll(In(".idle.result")).find("nothing written to it for 1 s"), std::string::npos);
}

// Issue 9.7: alice's files in incoming/ are hers.
TEST_F(HostileTest, AnotherPublisherCannotTamperWithAPack) {
  ASSERT_NO_FATAL_FAILURE(MountShared());
  std::string mine = SmallPack("app", "alice\n"), evil = SmallPack("app", "bob\n");
  // alice cp x .a; bob cp evil .b && mv -f .b .a; alice mv .a a.pack
  ASSERT_TRUE(As(alice_, "cp " + mine + " " + In(".a")).ok());
  ASSERT_TRUE(As(bob_, "cp " + evil + " " + In(".b")).ok());
  Cmd mv = As(bob_, "mv -f " + In(".b") + " " + In(".a"));
  EXPECT_NE(mv.status, 0);
  EXPECT_NE(mv.err.find("Permission denied"), std::string::npos) << mv.err;
  Cmd rn = As(bob_, "mv " + In(".a") + " " + In("stolen.pack"));
  EXPECT_NE(rn.status, 0) << "bob renamed alice's pack";
  Cmd amv = As(alice_, "mv " + In(".a") + " " + In("a.pack"));
  ASSERT_TRUE(amv.ok()) << amv.err;
  EXPECT_EQ(ReadAll(Hook("app") + "/live/f"), "alice\n");
  EXPECT_EQ(Json(Hook("app") + "/releases/1.json")["published_by"], Uid(alice_));
  // Her result: bob cannot remove it, nor publish over its name.
  Cmd rm = As(bob_, "rm -f " + In("a.pack.result"));
  EXPECT_NE(rm.status, 0);
  EXPECT_EQ(::access(In("a.pack.result").c_str(), F_OK), 0);
  EXPECT_NE(As(bob_, "cp " + evil + " " + In("a.pack")).status, 0);
  // Bob's rm of her pack between her last write and her close.
  std::string flags = NewDir("flags");
  ::chmod(flags.c_str(), 0777);
  std::string done = flags + "/alice.done";
  // One descriptor, no dup (a dup's close would publish at once).
  std::string py = "import os, time; fd = os.open('" + In("h.pack") + "', os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644); "
                   "os.write(fd, open('" + evil + "', 'rb').read()); time.sleep(2); os.close(fd); "
                   "open('" + done + "', 'w').write('closed')";
  Sh("runuser -u " + alice_ + " -- python3 -c " + Q(py) + " >/dev/null 2>&1 &");
  ::usleep(700 * 1000);
  Cmd brm = As(bob_, "rm -f " + In("h.pack"));
  EXPECT_NE(brm.status, 0) << "bob removed alice's open pack";
  for (int i = 0; i < 100 && ::access(done.c_str(), F_OK) != 0; ++i) ::usleep(100 * 1000);
  EXPECT_EQ(::access(In("h.pack.result").c_str(), F_OK), 0) << "her close published it";
  EXPECT_EQ(Json(Hook("app") + "/releases/2.json")["published_by"], Uid(alice_));
  // Root may remove anyone's.
  EXPECT_TRUE(Sh("rm " + Q(In("a.pack.result"))).ok());
  ASSERT_TRUE(As(bob_, "rm -f " + In(".b")).ok());
}

// Issue 9.10: a descriptor alice opened, passed over a Unix socket to a
// non-member who writes and closes it: published as alice.
TEST_F(HostileTest, APassedDescriptorPublishesAsItsCreator) {
  ASSERT_NO_FATAL_FAILURE(MountShared());
  std::string pack = SmallPack("app", "passed\n");
  std::string script = base_ + "/pass.py";
  WriteAll(script, R"PY(
import os, socket, sys, pwd
path, pack, alice, outsider = sys.argv[1:5]
a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
def become(user):
    pw = pwd.getpwnam(user)
    os.setgroups(os.getgrouplist(user, pw.pw_gid))
    os.setgid(pw.pw_gid)
    os.setuid(pw.pw_uid)
if os.fork() == 0:
    become(alice)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    socket.send_fds(a, [b"x"], [fd])
    os._exit(0)
_, fds, _, _ = socket.recv_fds(b, 1, 1)
os.wait()
if os.fork() == 0:
    become(outsider)
    data = open(pack, "rb").read()
    os.write(fds[0], data)
    try:
        os.close(fds[0])
    except OSError as e:
        print("close:", e)
        os._exit(1)
    os._exit(0)
_, st = os.wait()
sys.exit(os.waitstatus_to_exitcode(st))
)PY");
  Cmd c = Sh("python3 " + Q(script) + " " + Q(In("passed.pack")) + " " + Q(pack) + " " + alice_ + " " + outsider_);
  ASSERT_TRUE(c.ok()) << c.out << c.err;
  EXPECT_EQ(Json(Hook("app") + "/releases/1.json")["published_by"], Uid(alice_));
  std::string journal = ReadAll(mnt_ + "/journal");
  EXPECT_NE(journal.find("\"uid\":" + std::to_string(Uid(alice_))), std::string::npos) << journal;
  EXPECT_EQ(journal.find("\"uid\":" + std::to_string(Uid(outsider_))), std::string::npos) << journal;
}

// Issues 9.8 and 9.9 through the mount.
TEST_F(HostileTest, TemporarySymlinksAreBoundedPerUserAndTagNamesChecked) {
  ASSERT_NO_FATAL_FAILURE(MountShared());
  ASSERT_TRUE(Publish(SmallPack("app", "one\n"), "1.pack").ok());
  Cmd up = As(alice_, "ln -s ../releases/1 " + Hook("app") + "/tags/UPPER");
  EXPECT_NE(up.status, 0);
  EXPECT_NE(up.err.find("Invalid argument"), std::string::npos) << up.err;
  EXPECT_EQ(Sh("ls " + Q(Hook("app") + "/tags")).out, "");
  Cmd flood = As(alice_, "cd " + Hook("app") + " && i=0; while [ $i -lt 80 ]; do i=$((i+1)); "
                 "ln -s releases/1 .t$i 2>/dev/null || { echo refused at $i; ln -s releases/1 .t$i; exit 0; }; done");
  EXPECT_EQ(flood.out, "refused at 65\n") << flood.err;
  EXPECT_NE(flood.err.find("Disk quota exceeded"), std::string::npos) << flood.err;
  Cmd ln = As(bob_, "ln -sfn releases/1 " + Hook("app") + "/live");
  EXPECT_TRUE(ln.ok()) << ln.err;
  Cmd rl = Sh("ln -sfn releases/1 " + Q(Hook("app") + "/live"));
  EXPECT_TRUE(rl.ok()) << rl.err;
  EXPECT_NE(As(bob_, "rm " + Hook("app") + "/.t1").status, 0);
}

// Issue 9.6: a pack name with a newline and a fake priority forged lines in
// the daemon's log.
TEST_F(HostileTest, AUserChosenNameNeverForgesALogLine) {
  ASSERT_NO_FATAL_FAILURE(MountShared());
  std::string forged = "2026-11-29T17:40:00.000 info FAKE: published by uid 0 in 0.01s";
  std::string name = "evil\n" + forged + "\n<3>x.pack";
  std::string path = In(name);
  As(alice_, "printf garbage > " + Q(path));  // a shell ignores the close's EBADMSG
  ::usleep(300 * 1000);
  std::string log = ReadAll(log_);
  std::istringstream in(log);
  std::string line;
  int escaped = 0;
  while (std::getline(in, line)) {
    EXPECT_NE(line.rfind(forged, 0), 0u) << "forged line: " << line;
    EXPECT_NE(line.rfind("<3>x", 0), 0u) << "forged priority: " << line;
    if (line.find("evil\\n2026-11-29T17:40:00.000 info FAKE") != std::string::npos) ++escaped;
  }
  EXPECT_GE(escaped, 1) << log;
}

// Issue 9.4 through the mount: a legitimate 60 MB pack on a 100 MiB store
// disk gave `cp: failed to close: Input/output error` and no .result. It is
// ENOSPC from close(), with a .result saying NoSpace.
class FullDiskTest : public MountTest {
 protected:
  void TearDown() override {
    MountTest::TearDown();
    if (disk_mounted_) {
      Sh("umount -l " + Q(disk_));
      std::error_code ec;
      std::filesystem::remove_all(base_, ec);
    }
  }
  std::string disk_;
  bool disk_mounted_ = false;
};

TEST_F(FullDiskTest, APackThatDoesNotFitIsNoSpaceWithAResult) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to mount a small tmpfs";
  disk_ = NewDir("disk");
  ASSERT_TRUE(Sh("mount -t tmpfs -o size=100m hookfs-test " + Q(disk_)).ok());
  disk_mounted_ = true;
  store_ = disk_ + "/store";
  ASSERT_EQ(::mkdir(store_.c_str(), 0755), 0);
  std::string src = NewDir("big");
  ASSERT_TRUE(Sh("head -c 62914560 /dev/urandom > " + Q(src + "/big.bin")).ok());
  std::string pack = Pack("big", src);
  ASSERT_NO_FATAL_FAILURE(Mount());
  Cmd cp = Sh("cp " + Q(pack) + " " + Q(mnt_ + "/incoming/big60.pack"));
  EXPECT_NE(cp.status, 0);
  EXPECT_NE(cp.err.find("No space left on device"), std::string::npos) << cp.err;
  EXPECT_EQ(cp.err.find("Input/output error"), std::string::npos) << cp.err;
  std::string result = ReadAll(mnt_ + "/incoming/big60.pack.result");
  EXPECT_NE(result.find("NoSpace"), std::string::npos) << result;
  EXPECT_EQ(ReadAll(log_).find("writing big60.pack.result"), std::string::npos) << ReadAll(log_);
}

}  // namespace
}  // namespace hookfs::mount_test
