// keys/, signed publishes, -o keep=N and run.json provenance through a real
// mount with real tools (DESIGN.md §2, §4, §7, §8). Permission cases run as
// real unprivileged users created here.
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <thread>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "mount_fixture.h"

namespace hookfs::mount_test {
namespace {

using nlohmann::json;

json ReadJsonFile(const std::string& path) { return json::parse(ReadAll(path), nullptr, false); }

class KeysMountTest : public MountTest {
 protected:
  void SetUp() override {
    MountTest::SetUp();
    if (IsSkipped()) return;
    ASSERT_EQ(::geteuid(), 0u) << "the keys/ permission tests need root (useradd, groupadd, allow_other)";
    std::string tag = std::to_string(::getpid() % 100000);
    adm_ = "hfsadm" + tag;
    admin_ = "hfsadu" + tag;
    outsider_ = "hfsoku" + tag;
    ASSERT_TRUE(Sh("groupadd " + adm_).ok());
    created_ = true;
    Cmd u1 = Sh("useradd -M -N -g users -G " + adm_ + " " + admin_);
    ASSERT_TRUE(u1.ok()) << u1.err;
    Cmd u2 = Sh("useradd -M -N -g users " + outsider_);
    ASSERT_TRUE(u2.ok()) << u2.err;
    ::chmod(base_.c_str(), 0755);
  }
  void TearDown() override {
    MountTest::TearDown();
    if (created_) {
      Sh("userdel " + admin_);
      Sh("userdel " + outsider_);
      Sh("groupdel " + adm_);
    }
  }
  Cmd As(const std::string& user, const std::string& cmd) {
    return Sh("runuser -u " + user + " -- sh -c " + Q(cmd));
  }
  std::string adm_, admin_, outsider_;
  bool created_ = false;
};

TEST_F(KeysMountTest, AdminsTrustKeysAndPinnedHooksTakeOnlySignedPacks) {
  ASSERT_NO_FATAL_FAILURE(Mount("allow_other,admin_group=" + adm_));
  Cmd kg = Sh(std::string(HOOKCTL_BIN) + " keygen -o " + Q(base_ + "/ci"));
  ASSERT_TRUE(kg.ok()) << kg.err;
  std::string pem = ReadAll(base_ + "/ci.pub");
  WriteAll(base_ + "/ci.json", json{{"public_key", pem}, {"hooks", {"app", "etl-*"}}}.dump());
  WriteAll(base_ + "/bad.json", json{{"public_key", pem}, {"hooks", {"app/.."}}}.dump());
  WriteAll(base_ + "/garbage.json", "{not json");
  std::string keys = mnt_ + "/keys";

  // ls -l shows the policy: admin_group writes keys/.
  EXPECT_EQ(Sh("stat -c '%A %U %G' " + Q(keys)).out, "drwxrwxr-x root " + adm_ + "\n");
  // Not an admin: EACCES, nothing changes.
  Cmd o = As(outsider_, "cp " + base_ + "/ci.json " + keys + "/ci");
  EXPECT_NE(o.status, 0);
  EXPECT_NE(o.err.find("Permission denied"), std::string::npos) << o.err;
  EXPECT_EQ(Sh("ls " + Q(keys)).out, "");
  // Malformed documents and bad patterns: EINVAL, nothing changes.
  for (const char* bad : {"bad.json", "garbage.json"}) {
    Cmd b = As(admin_, "cp " + base_ + "/" + bad + " " + keys + "/ci");
    EXPECT_NE(b.status, 0) << bad;
    EXPECT_NE(b.err.find("Invalid argument"), std::string::npos) << b.err;
  }
  EXPECT_EQ(Sh("ls " + Q(keys)).out, "");

  Cmd a = As(admin_, "cp " + base_ + "/ci.json " + keys + "/ci");
  ASSERT_TRUE(a.ok()) << a.err;
  EXPECT_EQ(Sh("ls " + Q(keys)).out, "ci\n");
  EXPECT_EQ(Sh("stat -c '%A %G' " + Q(keys + "/ci")).out, "-rw-rw-r-- " + adm_ + "\n");
  json k = ReadJsonFile(keys + "/ci");
  EXPECT_EQ(k["hooks"], json({"app", "etl-*"})) << k.dump();
  EXPECT_EQ(k["key_id"].get<std::string>().size(), 64u) << k.dump();
  EXPECT_EQ(k["added_by"], std::stoi(Sh("id -u " + admin_).out));
  EXPECT_TRUE(k.contains("added_at"));

  // app is pinned: an unsigned pack is refused (EBADMSG) with the key problem named.
  std::string v1 = NewDir("v1"), v2 = NewDir("v2");
  WriteAll(v1 + "/version", "one\n");
  WriteAll(v2 + "/version", "two\n");
  Cmd u = Publish(Pack("app", v1), "unsigned.pack");
  EXPECT_NE(u.status, 0);
  EXPECT_NE(u.err.find("Bad message"), std::string::npos) << u.err;
  json ur = ReadJsonFile(mnt_ + "/incoming/unsigned.pack.result");
  ASSERT_EQ(ur["releases"].size(), 1u) << ur.dump(2);
  EXPECT_EQ(ur["releases"][0]["result"], "rejected");
  std::string reason = ur["releases"][0]["reason"].dump();
  EXPECT_NE(reason.find("sign"), std::string::npos) << reason;
  // Signed with the trusted key: accepted, signed_by shown, hook.json pinned.
  Cmd s = Publish(Pack("app", v1, "--sign " + Q(base_ + "/ci.key")), "signed.pack");
  ASSERT_TRUE(s.ok()) << s.err;
  json r1 = ReadJsonFile(mnt_ + "/hooks/app/releases/1.json");
  EXPECT_EQ(r1["signed_by"]["key"], "ci") << r1.dump();
  EXPECT_EQ(r1["signed_by"]["key_id"], k["key_id"]);
  EXPECT_EQ(ReadJsonFile(mnt_ + "/hooks/app/hook.json")["pinned"], true);

  // The outsider cannot revoke; the admin can, and the hook stays pinned.
  EXPECT_NE(As(outsider_, "rm -f " + keys + "/ci").status, 0);
  EXPECT_EQ(Sh("ls " + Q(keys)).out, "ci\n");
  Cmd rm = As(admin_, "rm " + keys + "/ci");
  ASSERT_TRUE(rm.ok()) << rm.err;
  EXPECT_EQ(Sh("ls " + Q(keys)).out, "");
  Cmd s2 = Publish(Pack("app", v2, "--sign " + Q(base_ + "/ci.key")), "revoked.pack");
  EXPECT_NE(s2.status, 0);
  EXPECT_NE(s2.err.find("Bad message"), std::string::npos) << s2.err;
  EXPECT_EQ(Sh("ls " + Q(mnt_ + "/hooks/app/releases")).out, "1\n1.json\n");
}

TEST_F(MountTest, KeepPrunesInTheBackgroundAndRunJsonHasProvenance) {
  ASSERT_NO_FATAL_FAILURE(Mount("keep=1"));
  for (const char* v : {"one", "two", "three"}) {
    std::string d = NewDir(v);
    WriteAll(d + "/version", std::string(v) + "\n");
    Cmd c = Publish(Pack("app", d, "--source-ref git:" + std::string(v)), std::string(v) + ".pack");
    ASSERT_TRUE(c.ok()) << c.err;
  }
  std::string rel = Hook("app") + "/releases";
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (Sh("ls " + Q(rel)).out != "1.json\n2.json\n3\n3.json\n" && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  EXPECT_EQ(Sh("ls " + Q(rel)).out, "1.json\n2.json\n3\n3.json\n");
  EXPECT_NE(::access((rel + "/1").c_str(), F_OK), 0);
  EXPECT_EQ(errno, ENOENT);
  EXPECT_EQ(ReadJsonFile(rel + "/1.json")["pruned"], true);
  EXPECT_EQ(ReadJsonFile(rel + "/3.json")["pruned"], false);
  Cmd ln = Sh("ln -sfn releases/1 " + Q(Hook("app") + "/live"));
  EXPECT_NE(ln.status, 0);
  EXPECT_NE(ln.err.find("Invalid argument"), std::string::npos) << ln.err;
  EXPECT_EQ(Sh("readlink " + Q(Hook("app") + "/live")).out, "releases/3\n");
  Cmd tag = Sh("ln -sfn ../releases/2 " + Q(Hook("app") + "/tags/old"));
  EXPECT_NE(tag.status, 0);
  EXPECT_NE(tag.err.find("Invalid argument"), std::string::npos) << tag.err;

  ASSERT_TRUE(Sh("mkdir " + Q(Hook("app") + "/runs/r1")).ok());
  json run = ReadJsonFile(Hook("app") + "/runs/r1/run.json");
  for (const char* k : {"hook", "run", "version", "digest", "feature", "source_ref", "host", "started_at",
                        "started_by", "status", "finished_at", "duration_s", "exit_code", "oom_retries", "note"}) {
    EXPECT_TRUE(run.contains(k)) << k << " " << run.dump();
  }
  EXPECT_EQ(run["version"], 3);
  EXPECT_EQ(run["source_ref"], "git:three");
  char host[256] = {};
  ::gethostname(host, sizeof host - 1);
  EXPECT_EQ(run["host"], std::string(host));
  EXPECT_EQ(run["digest"], ReadJsonFile(rel + "/3.json")["digest"]);
}

}  // namespace
}  // namespace hookfs::mount_test
