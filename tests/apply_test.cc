#include <fcntl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <csignal>
#include <cstring>
#include <filesystem>
#include <mutex>
#include <numeric>
#include <set>
#include <thread>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "hookfs/apply.h"
#include "hookfs/hash.h"
#include "hookfs/ledger.h"
#include "packer.h"
#include "test_util.h"

namespace hookfs {
namespace {

using test::Counts;
using test::Dir;
using test::File;
using test::Link;
using test::PackSpec;
using test::TempDir;
using Kind = ReleaseOutcome::Kind;

using test::Big;

// Entries of one table, read with plain LMDB so that no recovery runs.
size_t RawEntries(const std::string& dir, const char* table) {
  MDB_env* env;
  EXPECT_EQ(mdb_env_create(&env), 0);
  mdb_env_set_maxdbs(env, 32);
  EXPECT_EQ(mdb_env_open(env, dir.c_str(), MDB_RDONLY, 0640), 0);
  MDB_txn* txn;
  EXPECT_EQ(mdb_txn_begin(env, nullptr, MDB_RDONLY, &txn), 0);
  MDB_dbi dbi;
  size_t n = 0;
  if (mdb_dbi_open(txn, table, 0, &dbi) == 0) {
    MDB_stat st;
    mdb_stat(txn, dbi, &st);
    n = st.ms_entries;
  }
  mdb_txn_abort(txn);
  mdb_env_close(env);
  return n;
}

class ApplyTest : public ::testing::Test {
 protected:
  void SetUp() override {
    // As hookctl: a file pack is sealed with a read lease, whose break
    // signals SIGIO (docs/integrity.md, "Sealed packs").
    std::signal(SIGIO, SIG_IGN);
    Reopen();
  }

  void Reopen(StoreOptions o = {}) {
    ledger_.reset();
    store_.reset();
    store_ = test::OpenStore(dir_ / "store", std::move(o));
    ASSERT_NE(store_, nullptr);
    ledger_ = std::make_unique<Ledger>(store_.get());
  }

  ApplyReport Apply(const PackSpec& spec) { return ApplyBytes(spec.Bytes()); }
  ApplyReport ApplyBytes(const std::string& bytes) {
    std::string path = dir_ / ("p" + std::to_string(++n_) + ".pack");
    test::WriteFile(path, bytes);
    return ApplyPackFile(ledger_.get(), path, {});
  }
  Counts Now() { return test::Count(*store_); }
  std::string BlobBytes(const ObjectId& id) {
    auto view = store_->Read();
    EXPECT_TRUE(view.ok());
    auto info = view->GetBlobInfo(id);
    EXPECT_TRUE(info.ok()) << info.status().ToString();
    std::vector<std::span<const uint8_t>> spans;
    EXPECT_TRUE(view->ReadBlob(id, 0, size_t(info.ok() ? info->size : 0), &spans).ok());
    std::string out;
    for (auto s : spans) out.append(reinterpret_cast<const char*>(s.data()), s.size());
    return out;
  }

  // A typical release: a multi-chunk file, a small one, a subdirectory, a symlink.
  PackSpec AppSpec(const std::string& hook = "app", char seed = 'a') {
    PackSpec spec;
    spec.hooks.push_back({hook, ""});
    std::string big = Big(3 * kChunkSize + 17, seed);
    std::string conf = std::string("conf ") + seed;
    spec.Blob(big);
    spec.Blob(conf);
    ObjectId etc = spec.AddTree({File("app.conf", conf)});
    ObjectId root = spec.AddTree({File("bin", big, true), Dir("etc", etc), Link("run", "bin")});
    spec.Release(hook, root);
    return spec;
  }

  TempDir dir_;
  std::unique_ptr<Store> store_;
  std::unique_ptr<Ledger> ledger_;
  int n_ = 0;
};

TEST_F(ApplyTest, HappyPathWritesEverythingWithExactCounts) {
  PackSpec spec = AppSpec();
  ApplyReport rep = Apply(spec);
  ASSERT_TRUE(rep.Verdict().ok()) << rep.ToJson().dump(2);
  ASSERT_EQ(rep.releases.size(), 1u);
  EXPECT_EQ(rep.releases[0].kind, Kind::kAccepted);
  EXPECT_EQ(rep.releases[0].version, 1u);
  EXPECT_EQ(rep.releases[0].digest, spec.releases[0].root);
  EXPECT_EQ(rep.blobs_written, 2u);
  EXPECT_EQ(rep.chunks_written, 5u);  // 4 for the big file, 1 for the conf
  EXPECT_EQ(rep.trees_written, 2u);

  Counts c = Now();
  Counts want;
  want.blobs = 2;
  want.chunks = 5;
  want.trees = 2;
  want.hooks = 1;
  want.releases = 1;
  want.pointers = 1;
  want.history = 1;
  want.journal = 4;  // hook, release, live move, pack
  EXPECT_EQ(c, want) << test::ToString(c);

  EXPECT_EQ(BlobBytes(spec.blobs[0].first), spec.blobs[0].second);
  auto rel = ledger_->GetRelease("app", 1);
  ASSERT_TRUE(rel.ok());
  EXPECT_EQ(rel->files, 2u);
  EXPECT_EQ(rel->bytes, 3 * kChunkSize + 17 + 6);
  EXPECT_EQ(rel->source_ref, "git:abc123");
  auto live = ledger_->GetLive("app");
  ASSERT_TRUE(live.ok());
  EXPECT_EQ(live->value_or(0), 1u);
  auto json = rep.ToJson();
  EXPECT_EQ(json["status"], "ok");
  EXPECT_EQ(json["releases"][0]["result"], "accepted");
  EXPECT_EQ(json["releases"][0]["version"], 1);
}

TEST_F(ApplyTest, PoisonedBlobBlocksOnlyItsReleaseAndItsTrees) {
  PackSpec spec;
  spec.hooks.push_back({"bad", ""});
  spec.hooks.push_back({"good", ""});
  // "bad" reaches a blob whose content is not what its id says.
  ObjectId claimed = Sha256::Of("the real content");
  spec.blobs.emplace_back(claimed, "the fake content");  // same size, other bytes
  TreeEntry lie = File("payload", "the real content");
  ObjectId bad_sub = spec.AddTree({lie});
  ObjectId bad_root = spec.AddTree({Dir("sub", bad_sub), File("shared", "shared bytes")});
  spec.Blob("shared bytes");
  ObjectId good_root = spec.AddTree({File("shared", "shared bytes"), File("own", "own bytes")});
  spec.Blob("own bytes");
  spec.Release("bad", bad_root);
  spec.Release("good", good_root);

  ApplyReport rep = Apply(spec);
  ASSERT_TRUE(rep.status.ok()) << rep.status.ToString();
  ASSERT_EQ(rep.releases.size(), 2u);
  EXPECT_EQ(rep.releases[0].kind, Kind::kRejected);
  EXPECT_EQ(rep.releases[0].bad_objects, std::vector<ObjectId>{claimed});
  EXPECT_NE(rep.releases[0].reason.find("hashes to " + Sha256::Of("the fake content").Hex()), std::string::npos)
      << rep.releases[0].reason;
  EXPECT_EQ(rep.releases[1].kind, Kind::kAccepted);
  EXPECT_EQ(rep.Verdict().ToErrno(), EBADMSG);
  EXPECT_EQ(rep.ToJson()["status"], "rejected");

  Counts c = Now();
  EXPECT_EQ(c.blobs, 2u) << "only good's two blobs";
  EXPECT_EQ(c.chunks, 2u);
  EXPECT_EQ(c.trees, 1u) << "bad's trees must not be written";
  EXPECT_EQ(c.hooks, 1u) << "a hook whose only release was rejected is not created";
  EXPECT_EQ(c.releases, 1u);
  EXPECT_EQ(c.pending, 0u);
  auto view = store_->Read();
  EXPECT_FALSE(*view->HasTree(bad_root));
  EXPECT_FALSE(*view->HasTree(bad_sub));
  EXPECT_FALSE(*view->HasBlob(claimed));
  EXPECT_TRUE(ledger_->GetHook("bad").status().Is(Code::kNotFound));
}

TEST_F(ApplyTest, PoisonedTreeBlocksItsRelease) {
  PackSpec spec;
  spec.hooks.push_back({"app", ""});
  spec.Blob("x");
  auto enc = EncodeTree(Tree{{File("x", "x")}});
  ObjectId wrong = Sha256::Of("not the tree");
  spec.trees.emplace_back(wrong, *enc);
  spec.Release("app", wrong);
  ApplyReport rep = Apply(spec);
  ASSERT_EQ(rep.releases.size(), 1u);
  EXPECT_EQ(rep.releases[0].kind, Kind::kRejected);
  EXPECT_EQ(rep.releases[0].bad_objects, std::vector<ObjectId>{wrong});
  Counts c = Now();
  EXPECT_EQ(c.blobs + c.chunks + c.trees + c.releases + c.hooks + c.pending, 0u) << test::ToString(c);
}

// An I/O failure at any write step aborts the whole pack: nothing visible,
// every chunk reclaimed, even those of batches already committed.
TEST_F(ApplyTest, InjectedWriteFailureLeavesNothingBehind) {
  PackSpec spec;
  spec.hooks.push_back({"app", ""});
  std::string huge = Big(70u << 20, 'h');  // more than one 64 MiB chunk batch
  spec.Blob(huge);
  spec.Blob("small");
  spec.Release("app", spec.AddTree({File("huge", huge), File("small", "small")}));
  const std::string pack = spec.Bytes();

  struct Case {
    std::string step;
    int nth;
    Code code;
  };
  for (const Case& k : {Case{"chunk", 1, Code::kIOError}, Case{"chunk", 200, Code::kIOError},
                        Case{"chunk_commit", 1, Code::kNoSpace}, Case{"chunk_commit", 2, Code::kIOError},
                        Case{"final_commit", 1, Code::kIOError}}) {
    SCOPED_TRACE(k.step + " #" + std::to_string(k.nth));
    auto calls = std::make_shared<std::atomic<int>>(0);
    StoreOptions o;
    o.fault_injector = [k, calls](std::string_view step) {
      if (step == k.step && ++*calls == k.nth) return Status(k.code, "injected failure at " + std::string(step));
      return Status::OK();
    };
    Reopen(o);
    Counts before = Now();
    ApplyReport rep = ApplyBytes(pack);
    EXPECT_TRUE(rep.status.Is(k.code)) << rep.status.ToString();
    EXPECT_TRUE(rep.releases.empty());
    EXPECT_EQ(rep.ToJson()["status"], "error");
    Counts after = Now();
    before.journal += 1;  // the failed pack is recorded
    EXPECT_EQ(after, before) << test::ToString(after);
  }
  // And the same pack applies cleanly once the fault is gone.
  Reopen();
  ApplyReport rep = ApplyBytes(pack);
  ASSERT_TRUE(rep.Verdict().ok()) << rep.ToJson().dump();
  EXPECT_EQ(rep.releases[0].version, 1u);
  EXPECT_EQ(Now().chunks, 281u);
}

// kill -9 between the chunk batches and the final commit: the next open
// reclaims what the dead process wrote.
TEST_F(ApplyTest, CrashAfterChunksIsReclaimedAtNextOpen) {
  PackSpec spec = AppSpec();
  std::string path = spec.WriteTo(dir_ / "crash.pack");
  ledger_.reset();
  store_.reset();
  pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    StoreOptions o;
    o.dir = dir_ / "store";
    o.fault_injector = [](std::string_view step) {
      if (step == "final_commit") ::_exit(42);  // dies holding durable chunks
      return Status::OK();
    };
    auto s = Store::Open(o);
    if (!s.ok()) ::_exit(1);
    Ledger l(s->get());
    ApplyPackFile(&l, path, {});
    ::_exit(2);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status));
  ASSERT_EQ(WEXITSTATUS(status), 42);
  // The dead process left durable chunks and their pending records...
  EXPECT_EQ(RawEntries(dir_ / "store", "chunks"), 5u);
  EXPECT_GT(RawEntries(dir_ / "store", "pending_session"), 0u);
  EXPECT_EQ(RawEntries(dir_ / "store", "blobs"), 0u);
  // ...and the next open reclaims them.
  Reopen();
  Counts c = Now();
  EXPECT_EQ(c.chunks, 0u) << test::ToString(c);
  EXPECT_EQ(c.pending, 0u);
  EXPECT_EQ(c.blobs + c.trees + c.releases + c.hooks, 0u);
  // No staging file is left either.
  EXPECT_TRUE(std::filesystem::is_empty(dir_ / "store/staging"));
  ApplyReport rep = ApplyBytes(spec.Bytes());
  ASSERT_TRUE(rep.Verdict().ok());
  EXPECT_EQ(rep.releases[0].version, 1u);
}

TEST_F(ApplyTest, ThinPackAgainstAStoreThatHasTheObjectsAndOneThatLacksThem) {
  TempDir src;
  test::WriteFile(src / "keep/a.txt", "unchanged a");
  test::WriteFile(src / "keep/b.txt", "unchanged b");
  test::WriteFile(src / "top.txt", "version 1");
  PackOptions o;
  o.hook = "app";
  StringSink full;
  ASSERT_TRUE(BuildPack(src.path(), o, &full).ok());
  ASSERT_TRUE(ApplyBytes(full.out).Verdict().ok());
  Counts after_v1 = Now();

  test::WriteFile(src / "top.txt", "version 2");
  o.has = [this](const ObjectId& id, bool is_tree) {
    auto view = store_->Read();
    return is_tree ? *view->HasTree(id) : *view->HasBlob(id);
  };
  StringSink thin;
  auto stats = BuildPack(src.path(), o, &thin);
  ASSERT_TRUE(stats.ok());
  EXPECT_EQ(stats->blobs_written, 1u);
  EXPECT_EQ(stats->trees_written, 1u);  // only the new root
  EXPECT_EQ(stats->trees_omitted, 1u);  // keep/ is in the store
  EXPECT_LT(thin.out.size(), full.out.size());

  ApplyReport rep = ApplyBytes(thin.out);
  ASSERT_TRUE(rep.Verdict().ok()) << rep.ToJson().dump(2);
  EXPECT_EQ(rep.releases[0].version, 2u);
  Counts c = Now();
  EXPECT_EQ(c.blobs, after_v1.blobs + 1);
  EXPECT_EQ(c.trees, after_v1.trees + 1);
  auto rel = ledger_->GetRelease("app", 2);
  ASSERT_TRUE(rel.ok());
  EXPECT_EQ(rel->files, 3u) << "files counted through trees the store already had";

  // The same thin pack into an empty store: rejected, naming what is missing.
  TempDir other;
  auto empty = test::OpenStore(other / "s");
  Ledger l2(empty.get());
  test::WriteFile(other / "thin.pack", thin.out);
  ApplyReport rep2 = ApplyPackFile(&l2, other / "thin.pack", {});
  ASSERT_EQ(rep2.releases.size(), 1u);
  EXPECT_EQ(rep2.releases[0].kind, Kind::kRejected);
  EXPECT_NE(rep2.releases[0].reason.find("neither in the pack nor in the store"), std::string::npos);
  EXPECT_FALSE(rep2.releases[0].bad_objects.empty());
  Counts e = test::Count(*empty);
  EXPECT_EQ(e.blobs + e.chunks + e.trees + e.releases + e.hooks + e.pending, 0u) << test::ToString(e);
}

TEST_F(ApplyTest, ReapplyingTheSamePackIsANoOpReportedAsDuplicate) {
  std::string pack = AppSpec().Bytes();
  ASSERT_TRUE(ApplyBytes(pack).Verdict().ok());
  Counts before = Now();
  ApplyReport rep = ApplyBytes(pack);
  ASSERT_TRUE(rep.Verdict().ok()) << rep.ToJson().dump(2);
  ASSERT_EQ(rep.releases.size(), 1u);
  EXPECT_EQ(rep.releases[0].kind, Kind::kDuplicate);
  EXPECT_EQ(rep.releases[0].version, 1u);
  EXPECT_EQ(rep.ToJson()["releases"][0]["duplicate_of"], 1);
  before.journal += 1;
  EXPECT_EQ(Now(), before);
}

TEST_F(ApplyTest, DigestIgnoresClientFieldsSoSameContentIsADuplicate) {
  PackSpec a = AppSpec();
  PackSpec b = AppSpec();
  b.releases[0].created_at = 42;
  b.releases[0].source_ref = "another ref";
  b.releases[0].message = "another message";
  ASSERT_TRUE(Apply(a).Verdict().ok());
  ApplyReport rep = Apply(b);
  ASSERT_EQ(rep.releases.size(), 1u);
  EXPECT_EQ(rep.releases[0].kind, Kind::kDuplicate);
  EXPECT_EQ(rep.releases[0].digest, a.releases[0].root);
}

TEST_F(ApplyTest, ConcurrentAppliesGetVersionsOneToNWithoutGaps) {
  constexpr int kThreads = 6, kPerThread = 4;
  std::vector<std::string> packs;
  for (int i = 0; i < kThreads * kPerThread; ++i) {
    PackSpec s;
    s.hooks.push_back({"app", ""});
    // Appended piecewise: GCC 12 at -O3 reports a false -Wrestrict for
    // "literal" + std::string + std::string.
    std::string content = "content ";
    content += std::to_string(i);
    content += Big(1000 + i, char('a' + i % 20));
    s.Blob(content);
    s.Release("app", s.AddTree({File("f", content)}));
    std::string name = "c";
    name += std::to_string(i);
    name += ".pack";
    std::string path = dir_ / name;
    test::WriteFile(path, s.Bytes());
    packs.push_back(path);
  }
  std::mutex mu;
  std::vector<uint32_t> versions;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t)
    threads.emplace_back([&, t] {
      for (int i = 0; i < kPerThread; ++i) {
        ApplyReport r = ApplyPackFile(ledger_.get(), packs[size_t(t * kPerThread + i)], {});
        std::lock_guard<std::mutex> g(mu);
        EXPECT_TRUE(r.Verdict().ok()) << r.ToJson().dump();
        if (!r.releases.empty()) versions.push_back(r.releases[0].version);
      }
    });
  for (auto& th : threads) th.join();
  std::sort(versions.begin(), versions.end());
  std::vector<uint32_t> want(kThreads * kPerThread);
  std::iota(want.begin(), want.end(), 1u);
  EXPECT_EQ(versions, want);
  auto rels = ledger_->ListReleases("app");
  ASSERT_TRUE(rels.ok());
  ASSERT_EQ(rels->size(), want.size());
  for (size_t i = 0; i < rels->size(); ++i) EXPECT_EQ((*rels)[i].version, i + 1);
  auto hist = ledger_->History("app");
  EXPECT_EQ(hist->size(), want.size());
}

TEST_F(ApplyTest, FeatureNeverChanges) {
  PackSpec a = AppSpec();
  a.hooks[0].feature = "shell";
  ASSERT_TRUE(Apply(a).Verdict().ok());
  EXPECT_EQ(ledger_->GetHook("app")->feature, "shell");

  PackSpec other = AppSpec("app", 'b');
  other.hooks[0].feature = "python";
  Counts before = Now();
  ApplyReport rep = Apply(other);
  ASSERT_EQ(rep.releases.size(), 1u);
  EXPECT_EQ(rep.releases[0].kind, Kind::kRejected);
  EXPECT_NE(rep.releases[0].reason.find("feature 'shell'"), std::string::npos) << rep.releases[0].reason;
  before.journal += 1;
  EXPECT_EQ(Now(), before);

  PackSpec none = AppSpec("app", 'b');  // names no feature: matches
  ApplyReport ok = Apply(none);
  ASSERT_TRUE(ok.Verdict().ok()) << ok.ToJson().dump();
  EXPECT_EQ(ok.releases[0].version, 2u);
  EXPECT_EQ(ledger_->GetHook("app")->feature, "shell");
}

TEST_F(ApplyTest, NoAdvanceKeepsLiveAndSeveralReleasesPerPackAreOrdered) {
  PackSpec s;
  s.hooks.push_back({"app", ""});
  s.Blob("one");
  s.Blob("two");
  s.Blob("three");
  s.Release("app", s.AddTree({File("f", "one")}));
  s.Release("app", s.AddTree({File("f", "two")}));
  s.Release("app", s.AddTree({File("f", "three")}), /*no_advance=*/true);
  ApplyReport rep = Apply(s);
  ASSERT_TRUE(rep.Verdict().ok());
  EXPECT_EQ(rep.releases[0].version, 1u);
  EXPECT_EQ(rep.releases[1].version, 2u);
  EXPECT_EQ(rep.releases[2].version, 3u);
  EXPECT_EQ(ledger_->GetLive("app")->value_or(0), 2u);
}

TEST_F(ApplyTest, SameDigestTwiceInOnePackMintsOneVersion) {
  PackSpec s;
  s.hooks.push_back({"app", ""});
  s.Blob("one");
  ObjectId root = s.AddTree({File("f", "one")});
  s.Release("app", root);
  s.Release("app", root);
  ApplyReport rep = Apply(s);
  ASSERT_TRUE(rep.Verdict().ok());
  EXPECT_EQ(rep.releases[0].kind, Kind::kAccepted);
  EXPECT_EQ(rep.releases[1].kind, Kind::kDuplicate);
  EXPECT_EQ(rep.releases[1].version, 1u);
  EXPECT_EQ(Now().releases, 1u);
}

TEST_F(ApplyTest, ReleaseWhoseRootIsABlobIsRejected) {
  PackSpec s;
  s.hooks.push_back({"app", ""});
  ObjectId blob = s.Blob("i am a file");
  s.Release("app", blob);
  ApplyReport rep = Apply(s);
  ASSERT_EQ(rep.releases.size(), 1u);
  EXPECT_EQ(rep.releases[0].kind, Kind::kRejected);
  EXPECT_NE(rep.releases[0].reason.find("is a blob, not a tree"), std::string::npos) << rep.releases[0].reason;
  Counts c = Now();
  EXPECT_EQ(c.blobs + c.chunks + c.trees + c.releases + c.hooks, 0u);
}

// Raw tree bytes with a correct id but a non-canonical body.
std::string RawTree(const std::vector<std::pair<std::string, std::string>>& entries) {
  std::string s;
  uint32_t n = uint32_t(entries.size());
  s.append(reinterpret_cast<const char*>(&n), 4);  // little-endian host
  for (const auto& [name, content] : entries) {
    s.push_back(1);
    s.push_back(char(name.size()));
    s += name;
    s.append(Sha256::Of(content).AsKey());
    uint64_t size = content.size();
    s.append(reinterpret_cast<const char*>(&size), 8);
  }
  return s;
}

TEST_F(ApplyTest, MalformedInputGivesAClearErrorAndWritesNothing) {
  std::string good = AppSpec().Bytes();
  std::vector<std::pair<std::string, std::string>> framing = {
      {"truncated header", good.substr(0, 10)},
      {"truncated in blob data", good.substr(0, 200)},
      {"truncated in trailer", good.substr(0, good.size() - 3)},
      {"bad trailer", good.substr(0, good.size() - 1) + char(good.back() ^ 1)},
      {"empty file", ""},
  };
  std::string v2 = good;  // a version this hookfs does not read
  v2[8] = 9;
  framing.emplace_back("unknown format version", v2);

  Counts empty = Now();
  for (const auto& [what, bytes] : framing) {
    SCOPED_TRACE(what);
    ApplyReport rep = ApplyBytes(bytes);
    EXPECT_TRUE(rep.status.Is(Code::kMalformed)) << rep.status.ToString();
    EXPECT_EQ(rep.Verdict().ToErrno(), EBADMSG);
    EXPECT_FALSE(rep.status.message().empty());
    empty.journal += 1;
    EXPECT_EQ(Now(), empty) << test::ToString(Now());
  }
  ApplyReport v2rep = ApplyBytes(v2);
  EXPECT_NE(v2rep.status.message().find("version 9"), std::string::npos) << v2rep.status.message();
  EXPECT_NE(v2rep.status.message().find("versions 1 and 2"), std::string::npos) << v2rep.status.message();
  empty.journal += 1;

  // Trees that hash to their id but are not canonical: the release is rejected.
  std::vector<std::pair<std::string, std::string>> trees = {
      {"dotdot", RawTree({{"..", "x"}})},
      {"dot", RawTree({{".", "x"}})},
      {"slash", RawTree({{"a/b", "x"}})},
      {"empty name", RawTree({{"", "x"}})},
      {"nul", RawTree({{std::string("a\0b", 3), "x"}})},
      {"duplicate", RawTree({{"a", "x"}, {"a", "x"}})},
      {"unsorted", RawTree({{"b", "x"}, {"a", "x"}})},
  };
  for (const auto& [what, raw] : trees) {
    SCOPED_TRACE(what);
    PackSpec s;
    s.hooks.push_back({"app", ""});
    s.Blob("x");
    ObjectId id = Sha256::Of(raw);
    s.trees.emplace_back(id, raw);
    s.Release("app", id);
    ApplyReport rep = Apply(s);
    ASSERT_EQ(rep.releases.size(), 1u);
    EXPECT_EQ(rep.releases[0].kind, Kind::kRejected);
    EXPECT_NE(rep.releases[0].reason.find("not canonical"), std::string::npos) << rep.releases[0].reason;
    EXPECT_EQ(rep.releases[0].bad_objects, std::vector<ObjectId>{id});
    empty.journal += 1;
    EXPECT_EQ(Now(), empty) << test::ToString(Now());
  }

  // A tree entry that claims more bytes than its blob has.
  PackSpec liar;
  liar.hooks.push_back({"app", ""});
  liar.Blob("short");
  TreeEntry e = File("f", "short");
  e.size = 1000;
  liar.Release("app", liar.AddTree({e}));
  ApplyReport rep = Apply(liar);
  ASSERT_EQ(rep.releases.size(), 1u);
  EXPECT_EQ(rep.releases[0].kind, Kind::kRejected);
  EXPECT_NE(rep.releases[0].reason.find("1000 bytes"), std::string::npos) << rep.releases[0].reason;
  empty.journal += 1;
  EXPECT_EQ(Now(), empty);

  // A release naming a hook the pack does not declare.
  PackSpec undeclared = AppSpec();
  undeclared.hooks.clear();
  ApplyReport u = Apply(undeclared);
  EXPECT_TRUE(u.status.Is(Code::kMalformed)) << u.status.ToString();
  empty.journal += 1;
  EXPECT_EQ(Now(), empty);
}

TEST_F(ApplyTest, UnreachableObjectsInAPackAreNotKept) {
  PackSpec s = AppSpec();
  s.Blob("nobody points at me");
  s.AddTree({File("orphan", "nobody points at me")});
  ApplyReport rep = Apply(s);
  ASSERT_TRUE(rep.Verdict().ok());
  Counts c = Now();
  EXPECT_EQ(c.blobs, 2u);
  EXPECT_EQ(c.trees, 2u);
  EXPECT_EQ(c.chunks, 5u);
}

long PeakRssKiB() {
  struct rusage ru;
  ::getrusage(RUSAGE_SELF, &ru);
  return ru.ru_maxrss;
}

// A pack is streamed: applying 384 MiB must not need anything like 384 MiB.
TEST_F(ApplyTest, MemoryDoesNotGrowWithPackSize) {
  constexpr size_t kPiece = 1 << 20, kPieces = 384;
  auto piece = [](size_t i) {
    std::string s(kPiece, '\0');
    for (size_t j = 0; j < kPiece; j += 8) std::memcpy(&s[j], &i, sizeof i), s[j + 7] = char(j);
    return s;
  };
  Sha256 sha;
  for (size_t i = 0; i < kPieces; ++i) sha.Update(piece(i));
  ObjectId id = sha.Finish();
  const std::string path = dir_ / "big.pack";
  {
    int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    ASSERT_GE(fd, 0);
    FdSink sink(fd, path);
    PackWriter w(&sink);
    ASSERT_TRUE(w.AddHook({"big", ""}).ok());
    ASSERT_TRUE(w.BeginBlob(id, kPiece * kPieces).ok());
    for (size_t i = 0; i < kPieces; ++i) ASSERT_TRUE(w.BlobData(piece(i).data(), kPiece).ok());
    TreeEntry e;
    e.name = "model.bin";
    e.id = id;
    e.size = kPiece * kPieces;
    auto enc = EncodeTree(Tree{{e}});
    ObjectId root = Sha256::Of(*enc);
    ASSERT_TRUE(w.AddTree(root, *enc).ok());
    ASSERT_TRUE(w.AddRelease(test::MakeRelease("big", root)).ok());
    ASSERT_TRUE(w.Finish().ok());
    ::close(fd);
  }
  const long before = PeakRssKiB();
  ApplyReport rep = ApplyPackFile(ledger_.get(), path, {});
  ASSERT_TRUE(rep.Verdict().ok()) << rep.ToJson().dump();
  const long grown_mib = (PeakRssKiB() - before) / 1024;
  EXPECT_LT(grown_mib, 128) << "applying a 384 MiB pack grew the peak RSS by " << grown_mib << " MiB";
  EXPECT_EQ(rep.bytes_written, kPiece * kPieces);
}

// Two applies stream the same new blob at once and one carries poisoned
// bytes: chunks are keyed by writer, so the poisoned stream can neither
// overwrite the good one's chunks nor take them away when it is reclaimed.
TEST_F(ApplyTest, APoisonedConcurrentStreamOfTheSameBlobCannotTouchAGoodOne) {
  PackSpec good = AppSpec();
  const ObjectId big = good.blobs[0].first;
  const std::string content = good.blobs[0].second;
  std::unique_ptr<ChunkSession> rogue;
  StoreOptions o;
  o.fault_injector = [&](std::string_view step) {
    // After the good apply streamed its chunks, before its final txn: a
    // rogue session streams different bytes for the same blob id.
    if (step != "decided" || rogue) return Status::OK();
    auto s = ChunkSession::Begin(store_.get());
    EXPECT_TRUE(s.ok());
    rogue = std::move(s).value();
    auto fresh = rogue->BeginBlob(big, content.size());
    EXPECT_TRUE(fresh.ok() && *fresh);
    std::string bad(kChunkSize, 'X');
    for (uint32_t i = 0; i < ChunkCount(content.size()); ++i)
      EXPECT_TRUE(rogue->PutChunk(big, i, bad.data(), std::min<size_t>(kChunkSize, content.size() - i * kChunkSize)).ok());
    EXPECT_TRUE(rogue->Flush().ok());
    return Status::OK();
  };
  Reopen(o);
  ApplyReport rep = Apply(good);
  ASSERT_TRUE(rep.Verdict().ok()) << rep.ToJson().dump();
  ASSERT_NE(rogue, nullptr);
  EXPECT_EQ(BlobBytes(big), content) << "the good release reads another stream's bytes";
  ASSERT_TRUE(rogue->Abort().ok());  // the poisoned stream is reclaimed...
  EXPECT_EQ(BlobBytes(big), content) << "...without taking the good chunks with it";
  Counts c = Now();
  EXPECT_EQ(c.chunks, 5u) << test::ToString(c);
  EXPECT_EQ(c.pending, 0u);
}

// Pass 2 writes without hashing again only when the bytes cannot have
// changed since pass 1 (docs/integrity.md, "Sealed packs"). Here another
// process holds the pack open for writing (so no lease can seal it) and
// rewrites a chunk of the big blob after pass 1 verified it: refused, nothing
// committed.
TEST_F(ApplyTest, APackRewrittenBetweenThePassesIsRefused) {
  PackSpec spec = AppSpec();
  const std::string bytes = spec.Bytes();
  const size_t at = bytes.find(spec.blobs[0].second);
  ASSERT_NE(at, std::string::npos);
  const std::string path = dir_ / "rewritten.pack";
  test::WriteFile(path, bytes);
  int writer = ::open(path.c_str(), O_RDWR | O_CLOEXEC);
  ASSERT_GE(writer, 0);
  bool rewrote = false;
  StoreOptions o;
  o.fault_injector = [&](std::string_view step) {
    if (step != "chunk" || rewrote) return Status::OK();
    rewrote = true;  // the first chunk is read; the last is not yet
    EXPECT_EQ(::pwrite(writer, "Z", 1, off_t(at + 3 * kChunkSize + 1)), 1);
    return Status::OK();
  };
  Reopen(o);
  ApplyReport rep = ApplyPackFile(ledger_.get(), path, {});
  ::close(writer);
  ASSERT_TRUE(rewrote);
  EXPECT_TRUE(rep.status.Is(Code::kMalformed)) << rep.ToJson().dump();
  EXPECT_NE(rep.status.message().find("changed while it was applied"), std::string::npos) << rep.status.ToString();
  Counts c = Now();
  EXPECT_EQ(c.releases, 0u);
  EXPECT_EQ(c.blobs, 0u);
  EXPECT_EQ(c.chunks, 0u);
}

// A pack file no one has open for writing is sealed with a read lease: an
// open for writing while it is applied fails (the lease is held) and breaks
// the lease, and the apply then commits nothing. The next apply works.
TEST_F(ApplyTest, APackOpenedForWritingWhileItIsAppliedIsRefused) {
  PackSpec spec = AppSpec();
  const std::string path = dir_ / "leased.pack";
  test::WriteFile(path, spec.Bytes());
  bool tried = false;
  StoreOptions o;
  o.fault_injector = [&](std::string_view step) {
    if (step != "chunk" || tried) return Status::OK();
    tried = true;
    int w = ::open(path.c_str(), O_WRONLY | O_NONBLOCK | O_CLOEXEC);
    int err = errno;
    EXPECT_LT(w, 0) << "the pack could be opened for writing while it was applied";
    EXPECT_EQ(err, EWOULDBLOCK);
    if (w >= 0) ::close(w);
    return Status::OK();
  };
  Reopen(o);
  ApplyReport rep = ApplyPackFile(ledger_.get(), path, {});
  ASSERT_TRUE(tried);
  EXPECT_TRUE(rep.status.Is(Code::kMalformed)) << rep.ToJson().dump();
  EXPECT_NE(rep.status.message().find("opened for writing"), std::string::npos) << rep.status.ToString();
  Counts c = Now();
  EXPECT_EQ(c.releases, 0u);
  EXPECT_EQ(c.chunks, 0u);
  rep = ApplyPackFile(ledger_.get(), path, {});
  ASSERT_TRUE(rep.Verdict().ok()) << rep.ToJson().dump();
  EXPECT_EQ(BlobBytes(spec.blobs[0].first), spec.blobs[0].second);
}

TEST_F(ApplyTest, MissingPackFileIsAClearError) {
  ApplyReport rep = ApplyPackFile(ledger_.get(), dir_ / "no-such.pack", {});
  EXPECT_TRUE(rep.status.Is(Code::kNotFound)) << rep.status.ToString();
  EXPECT_NE(rep.status.message().find("no-such.pack"), std::string::npos);
}

}  // namespace
}  // namespace hookfs
