// File modification times (DESIGN.md §2): packed, stored per release,
// outside the digest; duplicates keep the first release's; fsck checks them.
#include <fcntl.h>
#include <sys/stat.h>

#include <filesystem>
#include <map>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "hookfs/apply.h"
#include "hookfs/fsck.h"
#include "hookfs/hash.h"
#include "hookfs/release_times.h"
#include "packer.h"
#include "test_util.h"

namespace hookfs {
namespace {

using test::Dir;
using test::File;
using test::Link;
using test::PackSpec;
using test::TempDir;
using Kind = ReleaseOutcome::Kind;

class TimesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    store_ = test::OpenStore(dir_ / "store");
    ASSERT_NE(store_, nullptr);
    ledger_ = std::make_unique<Ledger>(store_.get());
  }
  ApplyReport Apply(const std::string& bytes) {
    std::string path = dir_ / ("p" + std::to_string(++n_) + ".pack");
    test::WriteFile(path, bytes);
    return ApplyPackFile(ledger_.get(), path, {});
  }
  // path -> mtime as a reader finds it: walking the stored tree from the
  // root, each entry's index from its directory's (what the mount does).
  std::map<std::string, int64_t> Shown(const std::string& hook, uint32_t version) {
    std::map<std::string, int64_t> out;
    auto view = store_->Read();
    EXPECT_TRUE(view.ok());
    auto times = ReleaseTimes::Load(view->tables(), view->txn(), hook, version);
    EXPECT_TRUE(times.ok()) << times.status().ToString();
    if (!times.ok() || !*times) return out;
    auto rel = ledger_->GetRelease(hook, version);
    EXPECT_TRUE(rel.ok());
    Walk(*view, **times, rel->digest, 0, "", &out);
    return out;
  }
  void Walk(const ReadView& view, const ReleaseTimes& t, const ObjectId& id, uint64_t base, const std::string& prefix,
            std::map<std::string, int64_t>* out) {
    auto tree = view.GetTree(id);
    ASSERT_TRUE(tree.ok());
    uint64_t index = base;
    for (const TreeEntry& e : tree->entries) {
      if (e.IsDir()) Walk(view, t, e.id, index, prefix + e.name + "/", out);
      else (*out)[prefix + e.name] = t.Mtime(index);
      index += t.Span(e);
    }
  }
  size_t TimesEntries() {
    auto view = store_->Read();
    MDB_stat st;
    mdb_stat(view->txn().get(), view->tables().times, &st);
    return st.ms_entries;
  }

  TempDir dir_;
  std::unique_ptr<Store> store_;
  std::unique_ptr<Ledger> ledger_;
  int n_ = 0;
};

// A shared subtree at two paths, a symlink, an empty directory, nesting.
PackSpec SharedSpec(std::vector<int64_t> mtimes) {
  PackSpec spec;
  spec.hooks.push_back({"app", ""});
  spec.Blob("one\n");
  spec.Blob("two\n");
  ObjectId empty = spec.AddTree({});
  ObjectId lib = spec.AddTree({File("a.py", "one\n"), Link("cur", "a.py"), Dir("none", empty)});
  ObjectId root = spec.AddTree({Dir("lib", lib), Dir("lib2", lib), File("run", "two\n", true), Dir("z", empty)});
  spec.Release("app", root);
  spec.times.push_back({"app", root, std::move(mtimes)});
  return spec;
}

TEST_F(TimesTest, EveryPathShowsItsOwnTimeEvenInSharedSubtrees) {
  auto rep = Apply(SharedSpec({100, 101, 200, 201, -5}).Bytes());
  ASSERT_TRUE(rep.Verdict().ok()) << rep.ToJson().dump();
  std::map<std::string, int64_t> want = {
      {"lib/a.py", 100}, {"lib/cur", 101}, {"lib2/a.py", 200}, {"lib2/cur", 201}, {"run", -5}};
  EXPECT_EQ(Shown("app", 1), want);
  auto fsck = Fsck(store_.get(), {});
  ASSERT_TRUE(fsck.ok());
  EXPECT_TRUE(fsck->clean()) << fsck->Summary();
}

TEST_F(TimesTest, SameContentOtherTimesIsADuplicateThatKeepsTheFirstTimes) {
  auto first = Apply(SharedSpec({100, 101, 200, 201, -5}).Bytes());
  ASSERT_EQ(first.releases.size(), 1u);
  ASSERT_EQ(first.releases[0].kind, Kind::kAccepted);
  auto again = Apply(SharedSpec({7, 7, 7, 7, 7}).Bytes());
  ASSERT_EQ(again.releases.size(), 1u);
  EXPECT_EQ(again.releases[0].kind, Kind::kDuplicate);
  EXPECT_EQ(again.releases[0].version, 1u);
  EXPECT_EQ(again.releases[0].digest, first.releases[0].digest);
  // ...and the digest is what it was without times (a version-1 pack).
  PackSpec v1 = SharedSpec({});
  v1.times.clear();
  EXPECT_EQ(v1.releases[0].root, first.releases[0].digest);
  EXPECT_EQ(Shown("app", 1)["lib/a.py"], 100);
  EXPECT_EQ(TimesEntries(), 1u);
}

TEST_F(TimesTest, AVersion1PackStoresNoTimes) {
  PackSpec v1 = SharedSpec({});
  v1.times.clear();
  auto rep = Apply(v1.Bytes());
  ASSERT_TRUE(rep.Verdict().ok());
  EXPECT_EQ(TimesEntries(), 0u);
  EXPECT_TRUE(Shown("app", 1).empty());
}

TEST_F(TimesTest, AWrongNumberOfTimesRejectsTheRelease) {
  auto rep = Apply(SharedSpec({1, 2, 3}).Bytes());
  ASSERT_EQ(rep.releases.size(), 1u);
  EXPECT_EQ(rep.releases[0].kind, Kind::kRejected);
  EXPECT_NE(rep.releases[0].reason.find("lists 3 times; the release has 5"), std::string::npos)
      << rep.releases[0].reason;
  EXPECT_EQ(TimesEntries(), 0u);
  EXPECT_FALSE(ledger_->GetRelease("app", 1).ok());
}

TEST_F(TimesTest, TimesForNoReleaseOrTwiceIsMalformed) {
  PackSpec orphan = SharedSpec({1, 2, 3, 4, 5});
  orphan.times[0].root = Sha256::Of("no such release");
  auto rep = Apply(orphan.Bytes());
  EXPECT_TRUE(rep.status.Is(Code::kMalformed)) << rep.status.ToString();
  EXPECT_NE(rep.status.message().find("matches no release"), std::string::npos) << rep.status.ToString();
  PackSpec twice = SharedSpec({1, 2, 3, 4, 5});
  twice.times.push_back(twice.times[0]);
  auto rep2 = Apply(twice.Bytes());
  EXPECT_TRUE(rep2.status.Is(Code::kMalformed)) << rep2.status.ToString();
  EXPECT_EQ(TimesEntries(), 0u);
}

// A thin pack: the subtree comes from the store, the times from the pack.
TEST_F(TimesTest, ThinPackTimesCountStoredSubtrees) {
  ASSERT_TRUE(Apply(SharedSpec({1, 2, 3, 4, 5}).Bytes()).Verdict().ok());
  PackSpec thin;
  thin.hooks.push_back({"app", ""});
  ObjectId lib = test::PackSpec().AddTree({File("a.py", "one\n"), Link("cur", "a.py"),
                                            Dir("none", test::PackSpec().AddTree({}))});
  ObjectId root = thin.AddTree({Dir("lib", lib), File("x", "", false)});
  thin.Blob("");
  thin.Release("app", root);
  thin.times.push_back({"app", root, {10, 11, 12}});
  auto rep = Apply(thin.Bytes());
  ASSERT_TRUE(rep.Verdict().ok()) << rep.ToJson().dump();
  std::map<std::string, int64_t> want = {{"lib/a.py", 10}, {"lib/cur", 11}, {"x", 12}};
  EXPECT_EQ(Shown("app", 2), want);
}

TEST_F(TimesTest, FsckFindsBadAndOrphanTimesAndRepairDropsThem) {
  ASSERT_TRUE(Apply(SharedSpec({1, 2, 3, 4, 5}).Bytes()).Verdict().ok());
  {
    auto txn = store_->BeginWrite();
    ASSERT_TRUE(txn.ok());
    auto v = txn->Get(store_->tables().times, ledger_txn::ReleaseKey("app", 1));
    ASSERT_TRUE(v.ok());
    std::string bad(*v);
    bad[1] = 4;  // count 4: one short of the tree
    ASSERT_TRUE(txn->Put(store_->tables().times, ledger_txn::ReleaseKey("app", 1), bad).ok());
    ASSERT_TRUE(txn->Put(store_->tables().times, ledger_txn::ReleaseKey("app", 9), *v).ok());
    ASSERT_TRUE(txn->Commit().ok());
  }
  auto report = Fsck(store_.get(), {});
  ASSERT_TRUE(report.ok());
  size_t times_problems = 0;
  for (const auto& p : report->problems) times_problems += p.kind == "times";
  EXPECT_EQ(times_problems, 2u) << report->Summary();
  EXPECT_FALSE(report->clean());
  ledger_.reset();
  store_.reset();
  StoreOptions o;
  o.exclusive = true;
  store_ = test::OpenStore(dir_ / "store", o);
  ASSERT_NE(store_, nullptr);
  FsckOptions fo;
  fo.repair = true;
  auto repaired = Fsck(store_.get(), fo);
  ASSERT_TRUE(repaired.ok());
  EXPECT_TRUE(repaired->clean()) << repaired->Summary();
  EXPECT_EQ(TimesEntries(), 0u);
}

// hookctl pack records lstat's mtime of every file and symlink.
TEST_F(TimesTest, PackerRecordsFileAndSymlinkMtimes) {
  test::WriteFile(dir_ / "src/bin/run", "#!/bin/sh\n", 0755);
  test::WriteFile(dir_ / "src/a.txt", "a\n");
  std::filesystem::create_symlink("a.txt", dir_ / "src/link");
  const std::map<std::string, int64_t> want = {{"a.txt", 1111}, {"bin/run", 2222}, {"link", 3333}};
  for (const auto& [p, t] : want) {
    struct timespec ts[2] = {{t, 0}, {t, 0}};
    ASSERT_EQ(::utimensat(AT_FDCWD, (dir_ / ("src/" + p)).c_str(), ts, AT_SYMLINK_NOFOLLOW), 0);
  }
  PackOptions o;
  o.hook = "app";
  StringSink sink;
  auto stats = BuildPack(dir_ / "src", o, &sink);
  ASSERT_TRUE(stats.ok()) << stats.status().ToString();
  ASSERT_TRUE(Apply(sink.out).Verdict().ok());
  EXPECT_EQ(Shown("app", 1), want);
}

}  // namespace
}  // namespace hookfs
