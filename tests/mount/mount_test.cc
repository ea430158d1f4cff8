// The mount as users meet it: real daemon, real tools (DESIGN.md §2–§4).
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <random>
#include <set>
#include <sstream>
#include <thread>
#include <chrono>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "hookfs/against.h"
#include "hookfs/hash.h"
#include "hookfs/pack.h"
#include "hookfs/tree.h"
#include "mount_fixture.h"

namespace hookfs::mount_test {
namespace {

std::string RandomBytes(size_t n, uint32_t seed) {
  std::mt19937_64 rng(seed);
  std::string s(n, '\0');
  for (size_t i = 0; i < n; i += 8) {
    uint64_t v = rng();
    std::memcpy(s.data() + i, &v, std::min<size_t>(8, n - i));
  }
  return s;
}

nlohmann::json ReadJson(const std::string& path) {
  std::string text = ReadAll(path);
  auto j = nlohmann::json::parse(text, nullptr, false);
  EXPECT_FALSE(j.is_discarded()) << path << ": not JSON:\n" << text;
  return j;
}

// The tree the issue asks for: symlinks, executables, empty directories,
// names with spaces and non-ASCII, a 0-byte file, a file of several chunks,
// and two identical subtrees.
std::string MakeSource(const std::string& root, const std::string& flavour) {
  namespace fs = std::filesystem;
  fs::create_directories(root + "/bin");
  fs::create_directories(root + "/empty dir");
  fs::create_directories(root + "/data/nested/deeper");
  fs::create_directories(root + "/twin a/x");
  fs::create_directories(root + "/twin b/x");
  WriteAll(root + "/README", "hook " + flavour + "\n");
  WriteAll(root + "/bin/run.sh", "#!/bin/sh\necho " + flavour + "\n", 0755);
  WriteAll(root + "/zero", "");
  WriteAll(root + "/with space.txt", "spaces\n");
  WriteAll(root + "/données-ü.txt", "non-ascii\n");
  WriteAll(root + "/data/nested/deeper/big.bin", RandomBytes(5 * 256 * 1024 + 12345, 7));
  WriteAll(root + "/twin a/x/same.txt", "twin\n");
  WriteAll(root + "/twin b/x/same.txt", "twin\n");
  fs::create_symlink("README", root + "/link-to-readme");
  fs::create_symlink("../bin/run.sh", root + "/data/run-link");
  fs::create_symlink("/nonexistent/target", root + "/dangling");
  return root;
}

// ---- publishing ---------------------------------------------------------------

TEST_F(MountTest, CpPublishesAndLeavesResult) {
  ASSERT_NO_FATAL_FAILURE(Mount());
  std::string src = MakeSource(NewDir("src"), "one");
  std::string pack = Pack("app", src);
  Cmd cp = Publish(pack, "app.pack");
  ASSERT_TRUE(cp.ok()) << cp.err;

  // The pack is gone, its verdict is there.
  Cmd ls = Sh("ls " + Q(mnt_ + "/incoming"));
  EXPECT_EQ(ls.out, "app.pack.result\n");
  auto result = ReadJson(mnt_ + "/incoming/app.pack.result");
  ASSERT_EQ(result["releases"].size(), 1u) << result.dump(2);
  EXPECT_EQ(result["releases"][0]["result"], "accepted");
  EXPECT_EQ(result["releases"][0]["hook"], "app");
  EXPECT_EQ(result["releases"][0]["version"], 1);

  EXPECT_EQ(Sh("readlink " + Q(Hook("app") + "/live")).out, "releases/1\n");
  auto hook = ReadJson(Hook("app") + "/hook.json");
  EXPECT_EQ(hook["name"], "app");
  auto rel = ReadJson(Hook("app") + "/releases/1.json");
  EXPECT_EQ(rel["version"], 1);
  EXPECT_EQ(rel["digest"], result["releases"][0]["digest"]);

  // The same content again is a duplicate, not a new version.
  ASSERT_TRUE(Publish(pack, "again.pack").ok());
  auto dup = ReadJson(mnt_ + "/incoming/again.pack.result");
  EXPECT_EQ(dup["releases"][0]["result"], "duplicate");
  EXPECT_EQ(Sh("ls " + Q(Hook("app") + "/releases")).out, "1\n1.json\n");

  // cp -a (xattrs, times, modes) publishes too.
  Cmd cpa = Sh("cp -a " + Q(pack) + " " + Q(mnt_ + "/incoming/cpa.pack"));
  EXPECT_TRUE(cpa.ok()) << cpa.err;
  EXPECT_EQ(ReadJson(mnt_ + "/incoming/cpa.pack.result")["releases"][0]["result"], "duplicate");
  ASSERT_TRUE(Sh("rm " + Q(mnt_ + "/incoming/cpa.pack.result")).ok());

  // The publisher removes a verdict with rm.
  ASSERT_TRUE(Sh("rm " + Q(mnt_ + "/incoming/app.pack.result")).ok());
  EXPECT_EQ(Sh("ls " + Q(mnt_ + "/incoming")).out, "again.pack.result\n");

  // The journal has the story, one JSON object per line.
  std::istringstream journal(ReadAll(mnt_ + "/journal"));
  std::string line;
  int releases = 0, packs = 0;
  while (std::getline(journal, line)) {
    auto ev = nlohmann::json::parse(line, nullptr, false);
    ASSERT_FALSE(ev.is_discarded()) << line;
    if (ev["event"] == "release") ++releases;
    if (ev["event"] == "pack") ++packs;
  }
  EXPECT_EQ(releases, 1);
  EXPECT_EQ(packs, 3);
}

TEST_F(MountTest, ResultsSurviveRestart) {
  ASSERT_NO_FATAL_FAILURE(Mount());
  std::string pack = Pack("app", MakeSource(NewDir("src"), "one"));
  ASSERT_TRUE(Publish(pack, "x.pack").ok());
  EXPECT_EQ(Unmount(), 0);
  EXPECT_FALSE(IsMounted(mnt_));
  ASSERT_NO_FATAL_FAILURE(Mount());
  EXPECT_EQ(Sh("ls " + Q(mnt_ + "/incoming")).out, "x.pack.result\n");
  EXPECT_EQ(Sh("readlink " + Q(Hook("app") + "/live")).out, "releases/1\n");
}

TEST_F(MountTest, ShellRedirectionPublishes) {
  ASSERT_NO_FATAL_FAILURE(Mount());
  std::string src = MakeSource(NewDir("src"), "redirect");
  Cmd c = Sh(std::string(HOOKCTL_BIN) + " pack --hook redir -o - " + Q(src) + " > " +
             Q(mnt_ + "/incoming/r.pack"));
  ASSERT_TRUE(c.ok()) << c.err;
  auto result = ReadJson(mnt_ + "/incoming/r.pack.result");
  EXPECT_EQ(result["releases"][0]["result"], "accepted");
  EXPECT_EQ(Sh("diff -r --no-dereference " + Q(src) + " " + Q(Hook("redir") + "/live/")).status, 0);
}

TEST_F(MountTest, RsyncPublishesThroughDotName) {
  ASSERT_NO_FATAL_FAILURE(Mount());
  std::string pack = Pack("synced", MakeSource(NewDir("src"), "rsync"));
  std::string named = base_ + "/synced.pack";
  std::filesystem::rename(pack, named);
  Cmd c = Sh("rsync -a " + Q(named) + " " + Q(mnt_ + "/incoming/"));
  ASSERT_TRUE(c.ok()) << c.err;
  EXPECT_EQ(Sh("ls -A " + Q(mnt_ + "/incoming")).out, "synced.pack.result\n");
  EXPECT_EQ(ReadJson(mnt_ + "/incoming/synced.pack.result")["releases"][0]["result"], "accepted");
  EXPECT_EQ(Sh("readlink " + Q(Hook("synced") + "/live")).out, "releases/1\n");
}

// Issue 8 (k): hookctl pack -o MNT/incoming/x.pack writes through a
// dot-named temporary, so the rename publishes and returns the verdict.
TEST_F(MountTest, HookctlPackStraightIntoIncoming) {
  ASSERT_NO_FATAL_FAILURE(Mount());
  std::string src = MakeSource(NewDir("src"), "direct");
  Cmd c = Sh(std::string(HOOKCTL_BIN) + " pack --hook direct -o " + Q(mnt_ + "/incoming/x.pack") + " " + Q(src));
  EXPECT_EQ(c.status, 0) << c.err;
  EXPECT_EQ(Sh("ls -A " + Q(mnt_ + "/incoming")).out, "x.pack.result\n");
  EXPECT_EQ(ReadJson(mnt_ + "/incoming/x.pack.result")["releases"][0]["result"], "accepted");
  EXPECT_EQ(Sh("ls " + Q(Hook("direct") + "/releases")).out, "1\n1.json\n");
  // A bad pack: the rename carries the refusal, hookctl exits non-zero.
  std::string garbage = NewDir("g") + "/empty-dir";
  std::filesystem::create_directories(garbage);
  Cmd bad = Sh(std::string(HOOKCTL_BIN) + " pack --hook 'Bad Name' -o " + Q(mnt_ + "/incoming/y.pack") + " " + Q(src));
  EXPECT_NE(bad.status, 0);
  EXPECT_EQ(Sh("ls -A " + Q(mnt_ + "/incoming")).out, "x.pack.result\n") << "no temporary left behind";
}

// Issue 8 (h): an empty file copied into incoming/ is rejected at once: its
// result is written and the name is gone (it used to stay forever).
TEST_F(MountTest, EmptyFileIsRejectedAtOnce) {
  ASSERT_NO_FATAL_FAILURE(Mount());
  std::string empty = NewDir("e") + "/empty.pack";
  WriteAll(empty, "");
  // The last close (RELEASE) rejects it; the kernel sends RELEASE after
  // close() has returned, so wait a little for it.
  auto listing_becomes = [&](const std::string& want) {
    std::string got;
    for (int i = 0; i < 100; ++i) {
      got = Sh("ls -A " + Q(mnt_ + "/incoming")).out;
      if (got == want) break;
      ::usleep(20000);
    }
    return got;
  };
  Cmd cp = Sh("cp " + Q(empty) + " " + Q(mnt_ + "/incoming/e.pack"));
  EXPECT_TRUE(cp.ok()) << cp.err;
  EXPECT_EQ(listing_becomes("e.pack.result\n"), "e.pack.result\n");
  auto r = ReadJson(mnt_ + "/incoming/e.pack.result");
  EXPECT_NE(r.dump().find("truncated"), std::string::npos) << r.dump(2);
  EXPECT_TRUE(Sh("touch " + Q(mnt_ + "/incoming/t.pack")).ok());
  EXPECT_EQ(listing_becomes("e.pack.result\nt.pack.result\n"), "e.pack.result\nt.pack.result\n");
}

// Issue 8 (b): a rename onto a staging name replaced a spool still being
// written; its writer's writes and close then succeeded with nothing applied.
TEST_F(MountTest, ARenameOntoASpoolBeingWrittenFailsItsWriter) {
  ASSERT_NO_FATAL_FAILURE(Mount());
  std::string pack = ReadAll(Pack("two", MakeSource(NewDir("src"), "two")));
  std::string in = mnt_ + "/incoming/";
  int a = ::open((in + ".a").c_str(), O_WRONLY | O_CREAT | O_EXCL, 0644);
  ASSERT_GE(a, 0);
  ASSERT_EQ(::write(a, pack.data(), 1000), 1000);
  int b = ::open((in + ".b").c_str(), O_WRONLY | O_CREAT | O_EXCL, 0644);
  ASSERT_GE(b, 0);
  ASSERT_EQ(::write(b, pack.data(), pack.size()), static_cast<ssize_t>(pack.size()));
  ASSERT_EQ(::close(b), 0);
  ASSERT_EQ(::rename((in + ".b").c_str(), (in + ".a").c_str()), 0);
  ssize_t w = ::write(a, pack.data() + 1000, pack.size() - 1000);
  int werr = errno;
  int c = ::close(a);
  int cerr = errno;
  EXPECT_TRUE(w < 0 || c != 0) << "the displaced writer was told nothing";
  if (w < 0) {
    EXPECT_EQ(werr, EIO);
  }
  if (c != 0) {
    EXPECT_EQ(cerr, EIO);
  }
  // What now has the name is the second writer's pack, whole.
  ASSERT_EQ(::rename((in + ".a").c_str(), (in + "two.pack").c_str()), 0);
  EXPECT_EQ(ReadJson(in + "two.pack.result")["releases"][0]["result"], "accepted");
}

TEST_F(MountTest, DotNameWaitsForRename) {
  ASSERT_NO_FATAL_FAILURE(Mount());
  std::string pack = Pack("staged", MakeSource(NewDir("src"), "staged"));
  ASSERT_TRUE(Publish(pack, ".staged.tmp").ok());
  // Nothing committed yet, the staging file is listed with its size.
  EXPECT_NE(Sh("ls " + Q(Hook("staged"))).status, 0);
  struct stat st{}, want{};
  ASSERT_EQ(::stat((mnt_ + "/incoming/.staged.tmp").c_str(), &st), 0);
  ASSERT_EQ(::stat(pack.c_str(), &want), 0);
  EXPECT_EQ(st.st_size, want.st_size);
  EXPECT_EQ(Sh("cmp " + Q(pack) + " " + Q(mnt_ + "/incoming/.staged.tmp")).status, 0);
  Cmd mv = Sh("mv " + Q(mnt_ + "/incoming/.staged.tmp") + " " + Q(mnt_ + "/incoming/staged.pack"));
  ASSERT_TRUE(mv.ok()) << mv.err;
  EXPECT_EQ(Sh("ls -A " + Q(mnt_ + "/incoming")).out, "staged.pack.result\n");
  EXPECT_EQ(Sh("readlink " + Q(Hook("staged") + "/live")).out, "releases/1\n");
}

// A pack whose blob does not hash to its declared id, next to a sound release.
std::string WritePoisonedPack(const std::string& path) {
  std::string good = "good content\n";
  ObjectId good_id = Sha256::Of(good);
  Tree t1;
  t1.entries.push_back(TreeEntry{"f.txt", EntryType::kFile, good_id, good.size(), ""});
  std::string enc1 = EncodeTree(t1).value();
  ObjectId root1 = Sha256::Of(enc1);

  std::string claimed = "innocent content\n";
  std::string actual = "EVIL content!!!!\n";  // same size, other bytes
  ObjectId bad_id = Sha256::Of(claimed);
  Tree t2;
  t2.entries.push_back(TreeEntry{"f.txt", EntryType::kFile, bad_id, actual.size(), ""});
  std::string enc2 = EncodeTree(t2).value();
  ObjectId root2 = Sha256::Of(enc2);

  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  EXPECT_GE(fd, 0);
  {
    FdSink sink(fd, path);
    PackWriter w(&sink);
    EXPECT_TRUE(w.AddHook(HookDecl{"sound", ""}).ok());
    EXPECT_TRUE(w.AddHook(HookDecl{"poisoned", ""}).ok());
    EXPECT_TRUE(w.AddBlob(good_id, good).ok());
    EXPECT_TRUE(w.AddBlob(bad_id, actual).ok());
    EXPECT_TRUE(w.AddTree(root1, enc1).ok());
    EXPECT_TRUE(w.AddTree(root2, enc2).ok());
    ReleaseRecord r1;
    r1.hook = "sound";
    r1.root = root1;
    r1.created_at = 1700000000;
    ReleaseRecord r2 = r1;
    r2.hook = "poisoned";
    r2.root = root2;
    EXPECT_TRUE(w.AddRelease(r1).ok());
    EXPECT_TRUE(w.AddRelease(r2).ok());
    EXPECT_TRUE(w.Finish().ok());
  }
  ::close(fd);
  return bad_id.Hex();
}

TEST_F(MountTest, PoisonedPackFailsCpButSoundReleaseCommits) {
  ASSERT_NO_FATAL_FAILURE(Mount());
  std::string pack = base_ + "/poison.pack";
  std::string bad = WritePoisonedPack(pack);
  Cmd cp = Publish(pack, "poison.pack");
  EXPECT_NE(cp.status, 0);
  EXPECT_NE(cp.err.find("Bad message"), std::string::npos) << cp.err;

  auto result = ReadJson(mnt_ + "/incoming/poison.pack.result");
  std::map<std::string, nlohmann::json> by_hook;
  for (const auto& r : result["releases"]) by_hook[r["hook"]] = r;
  ASSERT_EQ(by_hook.size(), 2u) << result.dump(2);
  EXPECT_EQ(by_hook["sound"]["result"], "accepted");
  EXPECT_EQ(by_hook["poisoned"]["result"], "rejected");
  EXPECT_NE(by_hook["poisoned"].dump().find(bad), std::string::npos)
      << "the verdict names the bad object: " << by_hook["poisoned"].dump();
  EXPECT_EQ(ReadAll(Hook("sound") + "/live/f.txt"), "good content\n");
  EXPECT_NE(Sh("ls " + Q(Hook("poisoned") + "/releases/1")).status, 0);
  EXPECT_NE(::access((mnt_ + "/objects/blobs/" + bad).c_str(), F_OK), 0);
  EXPECT_EQ(Sh("ls " + Q(mnt_ + "/incoming")).out, "poison.pack.result\n");

  // The same through a staging name: the rename returns the verdict (mv
  // fails too, though it words it as the source having gone).
  ASSERT_TRUE(Publish(pack, ".poison2").ok());
  errno = 0;
  EXPECT_NE(::rename((mnt_ + "/incoming/.poison2").c_str(), (mnt_ + "/incoming/poison2.pack").c_str()), 0);
  EXPECT_EQ(errno, EBADMSG);
  EXPECT_EQ(ReadJson(mnt_ + "/incoming/poison2.pack.result")["releases"].size(), 2u);
  ASSERT_TRUE(Publish(pack, ".poison3").ok());
  EXPECT_NE(Sh("mv " + Q(mnt_ + "/incoming/.poison3") + " " + Q(mnt_ + "/incoming/poison3.pack")).status, 0);
}

TEST_F(MountTest, GarbageFailsCpWithBadMessage) {
  ASSERT_NO_FATAL_FAILURE(Mount());
  WriteAll(base_ + "/junk", "this is not a pack at all\n");
  Cmd cp = Publish(base_ + "/junk", "junk.pack");
  EXPECT_NE(cp.status, 0);
  EXPECT_NE(cp.err.find("Bad message"), std::string::npos) << cp.err;
  auto result = ReadJson(mnt_ + "/incoming/junk.pack.result");
  EXPECT_NE(result["status"], "ok") << result.dump(2);
  EXPECT_EQ(Sh("ls " + Q(mnt_ + "/hooks")).out, "");
}

TEST_F(MountTest, ConcurrentCpGiveVersionsWithoutGaps) {
  ASSERT_NO_FATAL_FAILURE(Mount());
  constexpr int kPacks = 6;
  std::string script;
  for (int i = 0; i < kPacks; ++i) {
    std::string src = NewDir("src" + std::to_string(i));
    WriteAll(src + "/content", "variant " + std::to_string(i) + "\n");
    WriteAll(src + "/blob.bin", RandomBytes(300 * 1024, 100 + i));
    std::string pack = Pack("busy", src);
    script += "( cp " + Q(pack) + " " + Q(mnt_ + "/incoming/p" + std::to_string(i) + ".pack") +
              "; echo $? > " + Q(base_ + "/rc" + std::to_string(i)) + " ) & ";
  }
  script += "wait";
  ASSERT_TRUE(Sh(script).ok());
  std::set<int> versions;
  for (int i = 0; i < kPacks; ++i) {
    EXPECT_EQ(ReadAll(base_ + "/rc" + std::to_string(i)), "0\n") << "cp " << i;
    auto r = ReadJson(mnt_ + "/incoming/p" + std::to_string(i) + ".pack.result");
    EXPECT_EQ(r["releases"][0]["result"], "accepted");
    versions.insert(r["releases"][0]["version"].get<int>());
  }
  std::set<int> want;
  for (int v = 1; v <= kPacks; ++v) want.insert(v);
  EXPECT_EQ(versions, want);
  std::string listing = Sh("ls " + Q(Hook("busy") + "/releases") + " | grep -v json | sort -n | tr '\\n' ' '").out;
  EXPECT_EQ(listing, "1 2 3 4 5 6 ");
}

// ---- reading -------------------------------------------------------------------

TEST_F(MountTest, ReleaseIsItsSourceTree) {
  ASSERT_NO_FATAL_FAILURE(Mount());
  std::string src = MakeSource(NewDir("src"), "tree");
  ASSERT_TRUE(Publish(Pack("tree", src), "t.pack").ok());
  std::string rel = Hook("tree") + "/releases/1";

  Cmd diff = Sh("diff -r --no-dereference " + Q(src) + " " + Q(rel));
  EXPECT_EQ(diff.status, 0) << diff.out << diff.err;

  // Modes and sizes exactly, symlinks as symlinks, no special bits.
  Cmd st = Sh("cd " + Q(rel) + " && stat -c '%n %A %s' README bin/run.sh zero link-to-readme 'empty dir'");
  EXPECT_EQ(st.out,
            "README -rw-r--r-- 10\n"
            "bin/run.sh -rwxr-xr-x 20\n"
            "zero -rw-r--r-- 0\n"
            "link-to-readme lrwxrwxrwx 6\n"
            "empty dir drwxr-xr-x 0\n");
  EXPECT_EQ(Sh("find " + Q(rel) + " -perm /7000").out, "");
  Cmd ls = Sh("ls -lA " + Q(rel) + " | tail -n +2 | cut -c1-10 | LC_ALL=C sort | uniq -c | sed 's/^ *//'");
  EXPECT_EQ(ls.out, "4 -rw-r--r--\n5 drwxr-xr-x\n2 lrwxrwxrwx\n") << ls.err;
  EXPECT_EQ(Sh("ls -l " + Q(rel + "/bin")).out.substr(0, 10 + 8), "total 1\n-rwxr-xr-x");
  EXPECT_EQ(Sh("readlink " + Q(rel + "/data/run-link")).out, "../bin/run.sh\n");
  EXPECT_EQ(Sh(Q(rel + "/bin/run.sh")).out, "tree\n");

  // sha256sum of every file equals its user.hookfs.sha256.
  Cmd files = Sh("cd " + Q(rel) + " && find . -type f | sort");
  std::istringstream fl(files.out);
  std::string f;
  int checked = 0;
  while (std::getline(fl, f)) {
    std::string path = rel + "/" + f;
    std::string sum = Sh("sha256sum " + Q(path) + " | cut -c1-64").out;
    std::string attr = Sh("getfattr --only-values -n user.hookfs.sha256 " + Q(path)).out;
    EXPECT_EQ(sum, attr + "\n") << f;
    ++checked;
  }
  EXPECT_EQ(checked, 8);

  // Release attributes.
  auto rel_json = ReadJson(Hook("tree") + "/releases/1.json");
  EXPECT_EQ(Sh("getfattr --only-values -n user.hookfs.version " + Q(rel)).out, "1");
  EXPECT_EQ(Sh("getfattr --only-values -n user.hookfs.digest " + Q(rel)).out,
            rel_json["digest"].get<std::string>());
  EXPECT_EQ(Sh("getfattr --only-values -n user.hookfs.tree " + Q(rel)).out,
            rel_json["digest"].get<std::string>());
  EXPECT_EQ(Sh("getfattr --only-values -n user.hookfs.tree " + Q(rel + "/data")).status, 0);

  // find and du walk it without a word on stderr; du counts the bytes.
  Cmd find = Sh("find " + Q(mnt_) + " > /dev/null");
  EXPECT_TRUE(find.ok() && find.err.empty()) << find.err;
  Cmd du = Sh("du -sb " + Q(rel));
  EXPECT_TRUE(du.ok() && du.err.empty()) << du.err;
  // Exact sizes, and st_blocks that du can add up.
  auto sizes = [](const std::string& dir) {
    return Sh("cd " + Q(dir) + " && find . -type f -printf '%s %P\\n' | sort").out;
  };
  EXPECT_EQ(sizes(rel), sizes(src));
  EXPECT_GE(std::stoll(Sh("du -sk " + Q(rel + "/data") + " | cut -f1").out), 1292);

  // Every path its own inode, even identical subtrees.
  std::string ino_a = Sh("stat -c %i " + Q(rel + "/twin a/x")).out;
  std::string ino_b = Sh("stat -c %i " + Q(rel + "/twin b/x")).out;
  EXPECT_NE(ino_a, ino_b);
  Cmd all_inos = Sh("find " + Q(rel) + " -printf '%i\\n' | sort | uniq -d");
  EXPECT_EQ(all_inos.out, "");
}

TEST_F(MountTest, LargeFileReadsExactly) {
  ASSERT_NO_FATAL_FAILURE(Mount());
  std::string src = NewDir("src");
  std::string data = RandomBytes(3 * 1024 * 1024 + 777, 42);
  WriteAll(src + "/big", data);
  ASSERT_TRUE(Publish(Pack("big", src), "b.pack").ok());
  std::string path = Hook("big") + "/live/big";
  EXPECT_EQ(ReadAll(path), data);
  // Unaligned reads across chunk boundaries.
  int fd = ::open(path.c_str(), O_RDONLY);
  ASSERT_GE(fd, 0);
  for (off_t off : {off_t(0), off_t(256 * 1024 - 3), off_t(1024 * 1024 + 1), off_t(data.size() - 10)}) {
    char buf[4096];
    ssize_t n = ::pread(fd, buf, sizeof buf, off);
    ASSERT_GT(n, 0);
    EXPECT_EQ(std::string(buf, n), data.substr(off, n)) << "offset " << off;
  }
  ::close(fd);
}

TEST_F(MountTest, ObjectsByIdAndAgainst) {
  ASSERT_NO_FATAL_FAILURE(Mount());
  std::string src = MakeSource(NewDir("src"), "objects");
  ASSERT_TRUE(Publish(Pack("obj", src), "o.pack").ok());
  std::string sum = Sh("sha256sum " + Q(src + "/README") + " | cut -c1-64").out;
  sum.pop_back();
  EXPECT_EQ(ReadAll(mnt_ + "/objects/blobs/" + sum), ReadAll(src + "/README"));
  std::string digest = ReadJson(Hook("obj") + "/releases/1.json")["digest"];
  EXPECT_EQ(Sh("ls " + Q(mnt_ + "/objects/trees/" + digest) + " | head -2").out, "README\nbin\n");
  EXPECT_EQ(Sh("ls " + Q(mnt_ + "/objects/blobs")).out, "");
  std::string missing(64, 'a');
  EXPECT_NE(::access((mnt_ + "/objects/blobs/" + missing).c_str(), F_OK), 0);

  auto has = MountHas(mnt_);
  EXPECT_TRUE(has(*ObjectId::FromHex(sum), false));
  EXPECT_TRUE(has(*ObjectId::FromHex(digest), true));
  EXPECT_FALSE(has(*ObjectId::FromHex(digest), false));
  EXPECT_FALSE(has(*ObjectId::FromHex(missing), false));
  EXPECT_FALSE(MountHas(base_)(*ObjectId::FromHex(sum), false));

  // A thin pack against the mount leaves out what the store has and still
  // commits.
  std::string src2 = base_ + "/src2";
  Sh("cp -a " + Q(src) + " " + Q(src2));
  WriteAll(src2 + "/README", "changed\n");
  std::string thin = base_ + "/thin.pack";
  Cmd p = Sh(std::string(HOOKCTL_BIN) + " pack --hook obj --against " + Q(mnt_) + " -o " + Q(thin) +
             " " + Q(src2));
  ASSERT_TRUE(p.ok()) << p.err;
  std::string full = Pack("obj", src2);
  EXPECT_LT(std::filesystem::file_size(thin), std::filesystem::file_size(full) / 2);
  ASSERT_TRUE(Publish(thin, "thin.pack").ok());
  EXPECT_EQ(Sh("diff -r --no-dereference " + Q(src2) + " " + Q(Hook("obj") + "/releases/2")).status, 0);
}

TEST_F(MountTest, CorruptChunkReadsAsEIO) {
  ASSERT_NO_FATAL_FAILURE(Mount());
  std::string src = NewDir("src");
  std::string data = RandomBytes(600 * 1024, 99);
  WriteAll(src + "/victim", data);
  WriteAll(src + "/bystander", "fine\n");
  ASSERT_TRUE(Publish(Pack("victim", src), "v.pack").ok());
  ASSERT_EQ(Unmount(), 0);

  // Flip one byte of the stored chunk in data.mdb, behind the store's back.
  std::string db = ReadAll(store_ + "/data.mdb");
  std::string needle = data.substr(300 * 1024, 64);  // inside chunk 1
  size_t pos = db.find(needle);
  ASSERT_NE(pos, std::string::npos);
  int fd = ::open((store_ + "/data.mdb").c_str(), O_WRONLY);
  ASSERT_GE(fd, 0);
  char flipped = static_cast<char>(db[pos + 10] ^ 0x5a);
  ASSERT_EQ(::pwrite(fd, &flipped, 1, static_cast<off_t>(pos + 10)), 1);
  ::close(fd);

  ASSERT_NO_FATAL_FAILURE(Mount());
  Cmd cat = Sh("cat " + Q(Hook("victim") + "/live/victim") + " > /dev/null");
  EXPECT_NE(cat.status, 0);
  EXPECT_NE(cat.err.find("Input/output error"), std::string::npos) << cat.err;
  // The chunk before it is intact and still readable; so is the other file.
  int vfd = ::open((Hook("victim") + "/live/victim").c_str(), O_RDONLY);
  ASSERT_GE(vfd, 0);
  char buf[4096];
  ASSERT_EQ(::pread(vfd, buf, sizeof buf, 0), static_cast<ssize_t>(sizeof buf));
  EXPECT_EQ(std::string(buf, sizeof buf), data.substr(0, sizeof buf));
  ::close(vfd);
  EXPECT_EQ(ReadAll(Hook("victim") + "/live/bystander"), "fine\n");
}

// ---- pointers ------------------------------------------------------------------

TEST_F(MountTest, LnSfnRollsLiveBackAndForth) {
  ASSERT_NO_FATAL_FAILURE(Mount());
  std::string v1 = NewDir("v1"), v2 = NewDir("v2");
  WriteAll(v1 + "/version", "one\n");
  WriteAll(v2 + "/version", "two\n");
  ASSERT_TRUE(Publish(Pack("ptr", v1), "1.pack").ok());
  ASSERT_TRUE(Publish(Pack("ptr", v2), "2.pack").ok());
  std::string live = Hook("ptr") + "/live";
  EXPECT_EQ(Sh("readlink " + Q(live)).out, "releases/2\n");
  EXPECT_EQ(ReadAll(live + "/version"), "two\n");

  Cmd ln = Sh("ln -sfn releases/1 " + Q(live));
  ASSERT_TRUE(ln.ok()) << ln.err;
  EXPECT_EQ(Sh("readlink " + Q(live)).out, "releases/1\n");
  EXPECT_EQ(ReadAll(live + "/version"), "one\n");
  EXPECT_EQ(Sh("cat " + Q(live + "/version")).out, "one\n");

  // Invalid targets: EINVAL, nothing changes.
  for (const char* bad : {"releases/9", "releases/01", "/etc", "../releases/2", "releases/2/x"}) {
    Cmd c = Sh(std::string("ln -sfn ") + bad + " " + Q(live));
    EXPECT_NE(c.status, 0) << bad;
    EXPECT_NE(c.err.find("Invalid argument"), std::string::npos) << bad << ": " << c.err;
    EXPECT_EQ(Sh("readlink " + Q(live)).out, "releases/1\n");
  }
  EXPECT_EQ(Sh("ls -A " + Q(Hook("ptr"))).out, "history\nhook.json\nlive\nreleases\nruns\ntags\n");

  // mv of a temporary made beside it works too; any other name is EINVAL
  // (DESIGN.md §2).
  EXPECT_NE(Sh("ln -s releases/2 " + Q(Hook("ptr") + "/next")).status, 0);
  ASSERT_TRUE(Sh("ln -s releases/2 " + Q(Hook("ptr") + "/.next")).ok());
  Cmd mv = Sh("mv -T " + Q(Hook("ptr") + "/.next") + " " + Q(live));
  ASSERT_TRUE(mv.ok()) << mv.err;
  EXPECT_EQ(Sh("readlink " + Q(live)).out, "releases/2\n");
  EXPECT_EQ(ReadAll(live + "/version"), "two\n");

  // Every move is in history.
  std::istringstream hist(ReadAll(Hook("ptr") + "/history"));
  std::string line;
  std::vector<int> tos;
  while (std::getline(hist, line)) tos.push_back(nlohmann::json::parse(line)["to"].get<int>());
  EXPECT_EQ(tos, (std::vector<int>{1, 2, 1, 2}));

  // live itself cannot be removed or renamed away.
  EXPECT_NE(Sh("rm " + Q(live)).status, 0);
  EXPECT_NE(Sh("mv " + Q(live) + " " + Q(Hook("ptr") + "/old")).status, 0);
  EXPECT_EQ(Sh("readlink " + Q(live)).out, "releases/2\n");
}

TEST_F(MountTest, TagsLikeLivePlusRm) {
  ASSERT_NO_FATAL_FAILURE(Mount());
  std::string v1 = NewDir("v1"), v2 = NewDir("v2");
  WriteAll(v1 + "/version", "one\n");
  WriteAll(v2 + "/version", "two\n");
  ASSERT_TRUE(Publish(Pack("tg", v1), "1.pack").ok());
  ASSERT_TRUE(Publish(Pack("tg", v2), "2.pack").ok());
  std::string tags = Hook("tg") + "/tags";
  ASSERT_TRUE(Sh("ln -s ../releases/1 " + Q(tags + "/stable")).ok());
  EXPECT_EQ(Sh("readlink " + Q(tags + "/stable")).out, "../releases/1\n");
  EXPECT_EQ(ReadAll(tags + "/stable/version"), "one\n");
  ASSERT_TRUE(Sh("ln -sfn ../releases/2 " + Q(tags + "/stable")).ok());
  EXPECT_EQ(ReadAll(tags + "/stable/version"), "two\n");
  EXPECT_NE(Sh("ln -sfn releases/2 " + Q(tags + "/stable")).status, 0);  // wrong form for tags
  EXPECT_NE(Sh("ln -s ../releases/7 " + Q(tags + "/canary")).status, 0);
  EXPECT_EQ(Sh("ls " + Q(tags)).out, "stable\n");
  ASSERT_TRUE(Sh("rm " + Q(tags + "/stable")).ok());
  EXPECT_EQ(Sh("ls " + Q(tags)).out, "");
  EXPECT_NE(::access((tags + "/stable").c_str(), F_OK), 0);
}

// live and tags are cached by the kernel like the rest (entry timeout of a
// day: no LOOKUP of live per path walk); every move must still be seen by the
// next open at once. Each step below reads through the pointer first, so its
// dentry is cached when it moves.
TEST_F(MountTest, CachedPointersFollowEveryMoveAtOnce) {
  ASSERT_NO_FATAL_FAILURE(Mount());
  std::vector<std::string> packs;
  for (const char* v : {"one", "two", "three", "four", "five"}) {
    std::string d = NewDir(v);
    WriteAll(d + "/version", std::string(v) + "\n");
    packs.push_back(Pack("pc", d));
  }
  std::string live = Hook("pc") + "/live", tags = Hook("pc") + "/tags";
  ASSERT_TRUE(Publish(packs[0], "1.pack").ok());
  EXPECT_EQ(ReadAll(live + "/version"), "one\n");
  // A publish through incoming/ (close() returns once committed) moves live.
  ASSERT_TRUE(Publish(packs[1], "2.pack").ok());
  EXPECT_EQ(Sh("cat " + Q(live + "/version")).out, "two\n");
  EXPECT_EQ(Sh("readlink " + Q(live)).out, "releases/2\n");
  // So does a publish by rename (rsync's way).
  ASSERT_TRUE(Sh("cp " + Q(packs[2]) + " " + Q(mnt_ + "/incoming/.3.pack") + " && mv " +
                 Q(mnt_ + "/incoming/.3.pack") + " " + Q(mnt_ + "/incoming/3.pack")).ok());
  EXPECT_EQ(Sh("cat " + Q(live + "/version")).out, "three\n");
  // ln -sfn back and forth.
  ASSERT_TRUE(Sh("ln -sfn releases/1 " + Q(live)).ok());
  EXPECT_EQ(Sh("cat " + Q(live + "/version")).out, "one\n");
  ASSERT_TRUE(Sh("ln -sfn releases/3 " + Q(live)).ok());
  EXPECT_EQ(Sh("cat " + Q(live + "/version")).out, "three\n");
  // Tags: set, moved, renamed, removed.
  ASSERT_TRUE(Sh("ln -s ../releases/1 " + Q(tags + "/stable")).ok());
  EXPECT_EQ(Sh("cat " + Q(tags + "/stable/version")).out, "one\n");
  ASSERT_TRUE(Sh("ln -sfn ../releases/2 " + Q(tags + "/stable")).ok());
  EXPECT_EQ(Sh("cat " + Q(tags + "/stable/version")).out, "two\n");
  ASSERT_TRUE(Sh("mv " + Q(tags + "/stable") + " " + Q(tags + "/old")).ok());
  EXPECT_NE(::access((tags + "/stable/version").c_str(), F_OK), 0);
  EXPECT_EQ(Sh("cat " + Q(tags + "/old/version")).out, "two\n");
  ASSERT_TRUE(Sh("rm " + Q(tags + "/old")).ok());
  EXPECT_NE(::access((tags + "/old/version").c_str(), F_OK), 0);
  // Another process writing the store (hookctl apply beside the daemon):
  // seen within the daemon's poll of the store (100 ms), well under a second.
  EXPECT_EQ(Sh("cat " + Q(live + "/version")).out, "three\n");
  Cmd apply = Sh(std::string(HOOKCTL_BIN) + " apply --store " + Q(store_) + " " + Q(packs[3]));
  ASSERT_TRUE(apply.ok()) << apply.out << apply.err;
  std::string got;
  for (int i = 0; i < 100 && got != "four\n"; ++i) {
    got = ReadAll(live + "/version");
    if (got != "four\n") std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_EQ(got, "four\n");
}

TEST_F(MountTest, OpenReaderKeepsItsReleaseAcrossLiveMove) {
  ASSERT_NO_FATAL_FAILURE(Mount());
  std::string v1 = NewDir("v1"), v2 = NewDir("v2");
  std::string d1 = RandomBytes(700 * 1024, 1), d2 = RandomBytes(700 * 1024, 2);
  WriteAll(v1 + "/model.bin", d1);
  WriteAll(v2 + "/model.bin", d2);
  ASSERT_TRUE(Publish(Pack("rd", v1), "1.pack").ok());
  ASSERT_TRUE(Publish(Pack("rd", v2), "2.pack").ok());
  std::string path = Hook("rd") + "/live/model.bin";

  int fd = ::open(path.c_str(), O_RDONLY);
  ASSERT_GE(fd, 0);
  std::string got(d2.size(), '\0');
  ASSERT_EQ(::pread(fd, got.data(), 1000, 0), 1000);
  ASSERT_TRUE(Sh("ln -sfn releases/1 " + Q(Hook("rd") + "/live")).ok());
  // The open file still reads release 2 to its end; a new open sees release 1.
  ssize_t n = ::pread(fd, got.data() + 1000, got.size() - 1000, 1000);
  ASSERT_EQ(n, static_cast<ssize_t>(got.size() - 1000));
  EXPECT_TRUE(got == d2);
  ::close(fd);
  EXPECT_TRUE(ReadAll(path) == d1);
}

// ---- runs ------------------------------------------------------------------------

TEST_F(MountTest, RunsArePinnedAndSealed) {
  ASSERT_NO_FATAL_FAILURE(Mount());
  std::string v1 = NewDir("v1"), v2 = NewDir("v2");
  WriteAll(v1 + "/version", "one\n");
  WriteAll(v2 + "/version", "two\n");
  ASSERT_TRUE(Publish(Pack("job", v1), "1.pack").ok());
  std::string runs = Hook("job") + "/runs";
  ASSERT_TRUE(Sh("mkdir " + Q(runs + "/r1")).ok());
  ASSERT_TRUE(Publish(Pack("job", v2), "2.pack").ok());  // live moves on to 2

  EXPECT_EQ(Sh("readlink " + Q(runs + "/r1/release")).out, "../../releases/1\n");
  EXPECT_EQ(ReadAll(runs + "/r1/release/version"), "one\n");
  auto run = ReadJson(runs + "/r1/run.json");
  EXPECT_EQ(run["version"], 1);
  EXPECT_EQ(run["status"], "running");
  EXPECT_EQ(Sh("ls " + Q(runs + "/r1")).out, "release\nresult\nrun.json\n");

  EXPECT_NE(Sh("mkdir " + Q(runs + "/r1")).status, 0);           // unique per hook
  EXPECT_NE(Sh("mkdir " + Q(runs + "/bad name")).status, 0);     // RUN charset

  Cmd fin = Sh("echo '{\"status\":\"succeeded\",\"exit_code\":0,\"oom_retries\":1}' > " + Q(runs + "/r1/result"));
  ASSERT_TRUE(fin.ok()) << fin.err;
  run = ReadJson(runs + "/r1/run.json");
  EXPECT_EQ(run["status"], "succeeded");
  EXPECT_EQ(run["oom_retries"], 1);
  EXPECT_EQ(ReadJson(runs + "/r1/result")["status"], "succeeded");

  // Sealed: no second write, no rm, rmdir or rename.
  Cmd again = Sh("echo '{\"status\":\"failed\",\"exit_code\":1}' > " + Q(runs + "/r1/result"));
  EXPECT_NE(again.status, 0);
  Cmd rm = Sh("rm -f " + Q(runs + "/r1/result"));
  EXPECT_NE(rm.status, 0);
  EXPECT_NE(rm.err.find("Operation not permitted"), std::string::npos) << rm.err;
  EXPECT_NE(Sh("rmdir " + Q(runs + "/r1")).status, 0);
  EXPECT_NE(Sh("mv " + Q(runs + "/r1") + " " + Q(runs + "/r2")).status, 0);
  EXPECT_EQ(ReadJson(runs + "/r1/run.json")["status"], "succeeded");

  // A bad result fails close() (cp and tee report it; a shell redirection
  // ignores close errors) and leaves the run running.
  ASSERT_TRUE(Sh("mkdir " + Q(runs + "/r3")).ok());
  WriteAll(base_ + "/bad1", "not json\n");
  WriteAll(base_ + "/bad2", "{\"status\":\"exploded\"}\n");
  Cmd bad1 = Sh("cp " + Q(base_ + "/bad1") + " " + Q(runs + "/r3/result"));
  EXPECT_NE(bad1.status, 0);
  EXPECT_NE(bad1.err.find("Invalid argument"), std::string::npos) << bad1.err;
  EXPECT_NE(Sh("tee " + Q(runs + "/r3/result") + " < " + Q(base_ + "/bad2")).status, 0);
  EXPECT_EQ(ReadJson(runs + "/r3/run.json")["status"], "running");
  EXPECT_EQ(ReadJson(runs + "/r3/run.json")["version"], 2);

  // No live release: ENOENT.
  std::string v3 = NewDir("v3");
  WriteAll(v3 + "/x", "x\n");
  ASSERT_TRUE(Publish(Pack("dormant", v3, "--no-advance"), "3.pack").ok());
  Cmd mk = Sh("mkdir " + Q(Hook("dormant") + "/runs/r1"));
  EXPECT_NE(mk.status, 0);
  EXPECT_NE(mk.err.find("No such file or directory"), std::string::npos) << mk.err;
}

// ---- read-only -------------------------------------------------------------------

TEST_F(MountTest, EverythingElseIsReadOnly) {
  ASSERT_NO_FATAL_FAILURE(Mount());
  std::string src = MakeSource(NewDir("src"), "ro");
  ASSERT_TRUE(Publish(Pack("ro", src), "ro.pack").ok());
  std::string rel = Hook("ro") + "/releases/1";
  struct Case {
    std::string cmd;
    const char* error;
  };
  std::vector<Case> cases = {
      {"echo x > " + Q(rel + "/README"), "Read-only file system"},
      {"echo x > " + Q(rel + "/new"), "Read-only file system"},
      {"touch " + Q(rel + "/README"), "Read-only file system"},
      {"rm " + Q(rel + "/README"), "Read-only file system"},
      {"mkdir " + Q(rel + "/d"), "Read-only file system"},
      {"chmod 777 " + Q(rel + "/README"), "Read-only file system"},
      {"mv " + Q(rel) + " " + Q(Hook("ro") + "/releases/7"), "Read-only file system"},
      {"rm -r " + Q(rel), "Read-only file system"},
      {"mkdir " + Q(mnt_ + "/hooks/newhook"), "Operation not permitted"},
      {"rmdir " + Q(Hook("ro") + "/runs"), "Operation not permitted"},
      {"echo x > " + Q(Hook("ro") + "/hook.json"), "Operation not permitted"},
      {"rm " + Q(Hook("ro") + "/history"), "Operation not permitted"},
      {"echo x > " + Q(mnt_ + "/journal"), "Operation not permitted"},
      {"echo x > " + Q(mnt_ + "/objects/blobs/x"), "Read-only file system"},
      {"echo x > " + Q(mnt_ + "/incoming/x.pack.result"), "Invalid argument"},
  };
  for (const Case& c : cases) {
    Cmd r = Sh(c.cmd);
    EXPECT_NE(r.status, 0) << c.cmd;
    EXPECT_NE(r.err.find(c.error), std::string::npos) << c.cmd << ": " << r.err;
  }
  EXPECT_EQ(Sh("diff -r --no-dereference " + Q(src) + " " + Q(rel)).status, 0);
  EXPECT_EQ(Sh("ls " + Q(mnt_ + "/hooks")).out, "ro\n");
}

// ---- lifecycle ---------------------------------------------------------------------

TEST_F(MountTest, SigtermUnmountsAndStaleMountIsRecovered) {
  ASSERT_NO_FATAL_FAILURE(Mount());
  ASSERT_TRUE(Publish(Pack("life", MakeSource(NewDir("src"), "life")), "l.pack").ok());
  EXPECT_EQ(Unmount(), 0);
  EXPECT_FALSE(IsMounted(mnt_));

  ASSERT_NO_FATAL_FAILURE(Mount());
  Crash();
  EXPECT_TRUE(IsMounted(mnt_));
  Cmd ls = Sh("ls " + Q(mnt_));
  EXPECT_NE(ls.err.find("Transport endpoint is not connected"), std::string::npos) << ls.err;
  ASSERT_NO_FATAL_FAILURE(Mount());  // recovers the stale mountpoint
  EXPECT_EQ(Sh("readlink " + Q(Hook("life") + "/live")).out, "releases/1\n");
  EXPECT_EQ(Unmount(), 0);
  EXPECT_FALSE(IsMounted(mnt_));
}

// ---- permissions (DESIGN.md §4) -------------------------------------------------------

class PermissionTest : public MountTest {
 protected:
  void SetUp() override {
    MountTest::SetUp();
    if (IsSkipped()) return;
    // Only a missing /dev/fuse may skip: without root this is a failure.
    ASSERT_EQ(::geteuid(), 0u) << "the permission tests need root (useradd, groupadd, allow_other)";
    std::string tag = std::to_string(::getpid() % 100000);
    pub_ = "hfspub" + tag;
    run_ = "hfsrun" + tag;
    member_ = "hfsmem" + tag;
    outsider_ = "hfsout" + tag;
    ASSERT_TRUE(Sh("groupadd " + pub_).ok());
    ASSERT_TRUE(Sh("groupadd " + run_).ok());
    created_ = true;
    Cmd u1 = Sh("useradd -M -N -g users -G " + pub_ + "," + run_ + " " + member_);
    ASSERT_TRUE(u1.ok()) << u1.err;
    Cmd u2 = Sh("useradd -M -N -g users " + outsider_);
    ASSERT_TRUE(u2.ok()) << u2.err;
  }
  void TearDown() override {
    MountTest::TearDown();
    if (created_) {
      Sh("userdel " + member_);
      Sh("userdel " + outsider_);
      Sh("groupdel " + pub_);
      Sh("groupdel " + run_);
    }
  }
  Cmd As(const std::string& user, const std::string& cmd) {
    return Sh("runuser -u " + user + " -- sh -c " + Q(cmd));
  }
  std::string pub_, run_, member_, outsider_;
  bool created_ = false;
};

TEST_F(PermissionTest, GroupsDecideWhoWrites) {
  ASSERT_NO_FATAL_FAILURE(Mount("allow_other,publish_group=" + pub_ + ",run_group=" + run_));
  std::string v1 = NewDir("v1"), v2 = NewDir("v2");
  WriteAll(v1 + "/version", "one\n");
  WriteAll(v2 + "/version", "two\n");
  ASSERT_TRUE(Publish(Pack("perm", v1), "1.pack").ok());
  std::string p2 = Pack("perm", v2);
  std::string p2b = Pack("perm", v2, "--message other");

  // ls -l shows the policy.
  EXPECT_EQ(Sh("stat -c '%A %U %G' " + Q(mnt_ + "/incoming")).out, "drwxrwxr-x root " + pub_ + "\n");
  EXPECT_EQ(Sh("stat -c '%A %G' " + Q(Hook("perm"))).out, "drwxrwxr-x " + pub_ + "\n");
  EXPECT_EQ(Sh("stat -c '%A %G' " + Q(Hook("perm") + "/tags")).out, "drwxrwxr-x " + pub_ + "\n");
  EXPECT_EQ(Sh("stat -c '%A %G' " + Q(Hook("perm") + "/runs")).out, "drwxrwxr-x " + run_ + "\n");

  // Everyone reads.
  EXPECT_EQ(As(outsider_, "cat " + Hook("perm") + "/live/version").out, "one\n");

  // The outsider may not publish, move pointers or start runs.
  Cmd cp = As(outsider_, "cp " + p2 + " " + mnt_ + "/incoming/o.pack");
  EXPECT_NE(cp.status, 0);
  EXPECT_NE(cp.err.find("Permission denied"), std::string::npos) << cp.err;
  Cmd ln = As(outsider_, "ln -sfn releases/1 " + Hook("perm") + "/live");
  EXPECT_NE(ln.status, 0);
  EXPECT_NE(ln.err.find("Permission denied"), std::string::npos) << ln.err;
  Cmd mk = As(outsider_, "mkdir " + Hook("perm") + "/runs/x");
  EXPECT_NE(mk.status, 0);
  EXPECT_NE(mk.err.find("Permission denied"), std::string::npos) << mk.err;
  EXPECT_EQ(Sh("ls " + Q(Hook("perm") + "/releases")).out, "1\n1.json\n");
  EXPECT_EQ(Sh("ls " + Q(Hook("perm") + "/runs")).out, "");

  // The member may.
  Cmd mcp = As(member_, "cp " + p2 + " " + mnt_ + "/incoming/m.pack");
  ASSERT_TRUE(mcp.ok()) << mcp.err;
  EXPECT_EQ(Sh("readlink " + Q(Hook("perm") + "/live")).out, "releases/2\n");
  EXPECT_EQ(Sh("stat -c %U " + Q(mnt_ + "/incoming/m.pack.result")).out, member_ + "\n");
  Cmd mln = As(member_, "ln -sfn releases/1 " + Hook("perm") + "/live");
  ASSERT_TRUE(mln.ok()) << mln.err;
  EXPECT_EQ(Sh("readlink " + Q(Hook("perm") + "/live")).out, "releases/1\n");
  ASSERT_TRUE(As(member_, "mkdir " + Hook("perm") + "/runs/m1").ok());
  Cmd fin = As(member_, "echo '{\"status\":\"failed\",\"exit_code\":3}' > " + Hook("perm") + "/runs/m1/result");
  ASSERT_TRUE(fin.ok()) << fin.err;
  EXPECT_EQ(ReadJson(Hook("perm") + "/runs/m1/run.json")["exit_code"], 3);
  // rsync as the member, and rm of its result.
  Cmd rs = As(member_, "cd " + base_ + " && rsync " + p2b + " " + mnt_ + "/incoming/rs.pack");
  EXPECT_TRUE(rs.ok()) << rs.err;
  EXPECT_TRUE(As(member_, "rm " + mnt_ + "/incoming/rs.pack.result").ok());
  // The outsider cannot remove the member's result.
  EXPECT_NE(As(outsider_, "rm -f " + mnt_ + "/incoming/m.pack.result").status, 0);
  EXPECT_EQ(::access((mnt_ + "/incoming/m.pack.result").c_str(), F_OK), 0);
}

}  // namespace
}  // namespace hookfs::mount_test
