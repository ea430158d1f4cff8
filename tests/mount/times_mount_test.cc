// Modification times through the mount (DESIGN.md §2): files and symlinks
// show the mtime they had when packed, directories the commit time; Python
// uses a release's .pyc files instead of recompiling.
#include <filesystem>

#include <gtest/gtest.h>

#include "mount_fixture.h"

namespace hookfs::mount_test {
namespace {

std::string Trim(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  return s;
}

// "path mtime" of every file and symlink below `dir`, sorted.
std::string Mtimes(const std::string& dir) {
  Cmd c = Sh("cd " + Q(dir) + " && find . ! -type d -print0 | sort -z | xargs -0 stat -c '%n %Y'");
  EXPECT_TRUE(c.ok()) << c.err;
  return c.out;
}

std::string MakeTimedSource(const std::string& root) {
  namespace fs = std::filesystem;
  fs::create_directories(root + "/bin");
  fs::create_directories(root + "/lib/a/b");
  fs::create_directories(root + "/twin1");
  fs::create_directories(root + "/twin2");
  WriteAll(root + "/bin/run", "#!/bin/sh\necho hi\n", 0755);
  WriteAll(root + "/lib/a/b/deep.txt", "deep\n");
  WriteAll(root + "/lib/top.txt", "top\n");
  WriteAll(root + "/twin1/same.txt", "same\n");
  WriteAll(root + "/twin2/same.txt", "same\n");
  WriteAll(root + "/zero", "");
  fs::create_symlink("bin/run", root + "/link");
  // Distinct times, not in walk order; identical subtrees with other times.
  Cmd t = Sh("cd " + Q(root) + " && touch -d @1500000000 bin/run && touch -d @1600000007 lib/a/b/deep.txt && "
             "touch -d @1400000003 lib/top.txt && touch -d @1700000000 twin1/same.txt && "
             "touch -d @1300000000 twin2/same.txt && touch -d @86400 zero && touch -h -d @1650000000 link");
  EXPECT_TRUE(t.ok()) << t.err;
  return root;
}

TEST_F(MountTest, StatShowsEachFilesPackedMtimeAndDirectoriesTheCommitTime) {
  ASSERT_NO_FATAL_FAILURE(Mount());
  std::string src = MakeTimedSource(NewDir("src"));
  ASSERT_TRUE(Publish(Pack("app", src), "app.pack").ok());
  const std::string rel = Hook("app") + "/releases/1";
  EXPECT_EQ(Mtimes(rel), Mtimes(src));
  EXPECT_EQ(Trim(Sh("stat -c %Y " + Q(rel + "/lib/a/b/deep.txt")).out), "1600000007");
  EXPECT_EQ(Trim(Sh("stat -c %Y " + Q(src + "/lib/a/b/deep.txt")).out), "1600000007");
  // atime and ctime show the same time, as squashfs does.
  EXPECT_EQ(Trim(Sh("stat -c '%X %Y %Z' " + Q(rel + "/bin/run")).out), "1500000000 1500000000 1500000000");
  // Directories: the release's commit time, like the release root.
  std::string committed = Trim(Sh("stat -c %Y " + Q(rel)).out);
  EXPECT_GT(std::stoll(committed), 1700000000);
  EXPECT_EQ(Trim(Sh("stat -c %Y " + Q(rel + "/lib/a")).out), committed);
  // Through live and a run's pinned release alike.
  EXPECT_EQ(Mtimes(Hook("app") + "/live/"), Mtimes(src));

  // Other times, same content: a duplicate that keeps the first times.
  ASSERT_TRUE(Sh("touch -d @1234567890 " + Q(src + "/lib/top.txt")).ok());
  ASSERT_TRUE(Publish(Pack("app", src), "again.pack").ok());
  EXPECT_NE(ReadAll(mnt_ + "/incoming/again.pack.result").find("\"duplicate\""), std::string::npos);
  EXPECT_EQ(Trim(Sh("stat -c %Y " + Q(rel + "/lib/top.txt")).out), "1400000003");
  EXPECT_FALSE(std::filesystem::exists(Hook("app") + "/releases/2"));

  // A version-1 pack (no times): every file shows the commit time.
  WriteAll(src + "/new.txt", "changed\n");
  ASSERT_TRUE(Publish(Pack("app", src, "--no-mtimes"), "old.pack").ok());
  const std::string rel2 = Hook("app") + "/releases/2";
  EXPECT_EQ(Trim(Sh("stat -c %Y " + Q(rel2 + "/lib/top.txt")).out), Trim(Sh("stat -c %Y " + Q(rel2)).out));
}

// A Python hook imports from its release: with the packed mtimes the .pyc
// files compiled before packing are valid and used; nothing recompiles.
// (The --no-mtimes half is the control: there every module is stale.)
TEST_F(MountTest, PythonUsesTheReleasesBytecode) {
  if (!Sh("command -v python3").ok()) GTEST_SKIP() << "no python3";
  ASSERT_NO_FATAL_FAILURE(Mount());
  std::string src = NewDir("py");
  std::filesystem::create_directories(src + "/pkg");
  WriteAll(src + "/pkg/__init__.py", "from . import mod\n");
  WriteAll(src + "/pkg/mod.py", "def hello():\n    return 'hello'\n");
  // Sources older than any commit, as in a real checkout or install.
  ASSERT_TRUE(Sh("touch -d @1600000000 " + Q(src + "/pkg/__init__.py") + " " + Q(src + "/pkg/mod.py")).ok());
  Cmd cc = Sh("python3 -m compileall -q " + Q(src));
  ASSERT_TRUE(cc.ok()) << cc.err;
  ASSERT_TRUE(Publish(Pack("py", src), "py.pack").ok());
  ASSERT_TRUE(Publish(Pack("pyold", src, "--no-mtimes"), "pyold.pack").ok());

  auto import = [&](const std::string& hook) {
    return Sh("cd / && PYTHONDONTWRITEBYTECODE=1 PYTHONPATH=" + Q(Hook(hook) + "/live") +
              " python3 -v -c 'import pkg; assert pkg.mod.hello() == \"hello\"' 2>&1");
  };
  Cmd py = import("py");
  ASSERT_TRUE(py.ok()) << py.out;
  const std::string cache = Hook("py") + "/live/pkg/__pycache__/";
  EXPECT_NE(py.out.find("code object from '" + cache + "__init__."), std::string::npos) << py.out;
  EXPECT_NE(py.out.find("code object from '" + cache + "mod."), std::string::npos) << py.out;
  EXPECT_EQ(py.out.find("bytecode is stale"), std::string::npos) << py.out;

  Cmd old = import("pyold");
  ASSERT_TRUE(old.ok()) << old.out;
  EXPECT_NE(old.out.find("bytecode is stale"), std::string::npos)
      << "the control no longer shows the problem this test guards against:\n" << old.out;
}

}  // namespace
}  // namespace hookfs::mount_test
