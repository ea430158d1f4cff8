// Integrity and recovery (docs/integrity.md): fsck finds and names damage,
// repair quarantines it, a later pack heals it, gc is safe beside applies,
// a full store rejects a pack without damage, kill -9 leaves all or nothing.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <filesystem>
#include <random>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "hookfs/apply.h"
#include "hookfs/fsck.h"
#include "hookfs/gc.h"
#include "hookfs/hash.h"
#include "hookfs/ledger.h"
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

class IntegrityTest : public ::testing::Test {
 protected:
  void SetUp() override { Reopen(); }

  void Reopen(StoreOptions o = {}) {
    ledger_.reset();
    store_.reset();
    store_ = test::OpenStore(dir_ / "store", std::move(o));
    ASSERT_NE(store_, nullptr);
    ledger_ = std::make_unique<Ledger>(store_.get());
  }
  void Close() {
    ledger_.reset();
    store_.reset();
  }

  ApplyReport Apply(const PackSpec& spec) { return ApplyBytes(spec.Bytes()); }
  ApplyReport ApplyBytes(const std::string& bytes) {
    std::string path = dir_ / ("p" + std::to_string(++n_) + ".pack");
    test::WriteFile(path, bytes);
    return ApplyPackFile(ledger_.get(), path, {});
  }
  FsckReport Check() {
    auto r = Fsck(store_.get(), {});
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    return r.ok() ? *r : FsckReport{};
  }
  // Closes the store, repairs it exclusively, reopens it shared.
  FsckReport Repair() {
    Close();
    StoreOptions o;
    o.dir = dir_ / "store";
    o.exclusive = true;
    auto s = Store::Open(o);
    EXPECT_TRUE(s.ok()) << s.status().ToString();
    FsckReport out;
    if (s.ok()) {
      FsckOptions fo;
      fo.repair = true;
      auto r = Fsck(s->get(), fo);
      EXPECT_TRUE(r.ok()) << r.status().ToString();
      if (r.ok()) out = *r;
    }
    s = Status::IOError("closed");
    Reopen();
    return out;
  }
  const FsckProblem* Find(const FsckReport& r, const std::string& kind, const ObjectId& id) {
    for (const FsckProblem& p : r.problems)
      if (p.kind == kind && p.object == id.Hex()) return &p;
    return nullptr;
  }
  Status ReadAll(const ObjectId& id, std::string* out) {
    auto view = store_->Read();
    if (!view.ok()) return view.status();
    auto info = view->GetBlobInfo(id);
    if (!info.ok()) return info.status();
    std::vector<std::span<const uint8_t>> spans;
    Status st = view->ReadBlob(id, 0, size_t(info->size), &spans);
    out->clear();
    for (auto s : spans) out->append(reinterpret_cast<const char*>(s.data()), s.size());
    return st;
  }

  // app/1 and app/2 share a 3-chunk blob and the etc/ tree; other/1 shares nothing.
  struct Fixture {
    std::string big = Big(3 * kChunkSize + 17, 'a');
    ObjectId big_id, etc_id, root1, root2, other_root;
    PackSpec v1, v2, other;
  };
  Fixture Publish() {
    Fixture f;
    f.v1.hooks.push_back({"app", ""});
    f.big_id = f.v1.Blob(f.big);
    f.v1.Blob("conf 1");
    f.etc_id = f.v1.AddTree({File("app.conf", "conf 1")});
    f.root1 = f.v1.AddTree({File("bin", f.big, true), Dir("etc", f.etc_id), Link("run", "bin")});
    f.v1.Release("app", f.root1);
    f.v2.hooks.push_back({"app", ""});
    f.v2.Blob(f.big);
    f.v2.Blob("conf 1");
    f.v2.Blob("v2");
    f.v2.AddTree({File("app.conf", "conf 1")});
    f.root2 = f.v2.AddTree({File("bin", f.big, true), Dir("etc", f.etc_id), File("v", "v2")});
    f.v2.Release("app", f.root2);
    f.other.hooks.push_back({"other", ""});
    f.other.Blob("other");
    f.other_root = f.other.AddTree({File("o", "other")});
    f.other.Release("other", f.other_root);
    for (const PackSpec* p : {&f.v1, &f.v2, &f.other}) {
      ApplyReport rep = Apply(*p);
      EXPECT_TRUE(rep.Verdict().ok()) << rep.ToJson().dump();
    }
    return f;
  }

  TempDir dir_;
  std::unique_ptr<Store> store_;
  std::unique_ptr<Ledger> ledger_;
  int n_ = 0;
};

TEST_F(IntegrityTest, FsckOfAHealthyStoreIsClean) {
  Publish();
  ASSERT_TRUE(ledger_->SetTag("app", "stable", 1, Actor::Current()).ok());
  ASSERT_TRUE(ledger_->StartRun("app", "r1", Actor::Current()).ok());
  FsckReport r = Check();
  EXPECT_TRUE(r.clean()) << r.Summary();
  EXPECT_EQ(r.blobs, 4u);
  EXPECT_EQ(r.trees, 4u);
  EXPECT_EQ(r.releases, 3u);
  EXPECT_EQ(r.hooks, 2u);
  EXPECT_EQ(r.runs, 1u);
  EXPECT_EQ(r.chunks, 4u + 3u);
  EXPECT_TRUE(r.damaged_releases.empty());
}

TEST_F(IntegrityTest, FlippedChunkIsFoundQuarantinedAndHealedByARepush) {
  Fixture f = Publish();
  test::FlipChunkByte(store_.get(), f.big_id, 1, 1000);

  // Reads of the damaged chunk fail; the rest of the file still reads.
  std::string got;
  Status st = ReadAll(f.big_id, &got);
  ASSERT_TRUE(st.Is(Code::kCorruption)) << st.ToString();
  EXPECT_NE(st.message().find("chunk 1"), std::string::npos);
  {
    auto view = store_->Read();
    std::vector<std::span<const uint8_t>> spans;
    EXPECT_TRUE(view->ReadBlob(f.big_id, 2 * kChunkSize, 100, &spans).ok());
  }

  FsckReport r = Check();
  EXPECT_FALSE(r.clean());
  const FsckProblem* p = Find(r, "blob", f.big_id);
  ASSERT_NE(p, nullptr) << r.Summary();
  EXPECT_NE(p->what.find("chunk 1 checksum mismatch"), std::string::npos) << p->what;
  EXPECT_EQ(p->releases, (std::vector<std::string>{"app/1", "app/2"}));
  EXPECT_EQ(r.damaged_releases, (std::vector<std::string>{"app/1", "app/2"}));
  EXPECT_EQ(r.damage(), 1u) << r.Summary();
  EXPECT_NE(r.Summary().find("reached by app/1 app/2"), std::string::npos) << r.Summary();

  // Repair quarantines the blob and marks both releases damaged.
  FsckReport rr = Repair();
  EXPECT_TRUE(rr.repaired);
  EXPECT_EQ(rr.quarantined, 1u);
  EXPECT_EQ(rr.marked_damaged, 2u);
  {
    auto view = store_->Read();
    EXPECT_TRUE(*view->IsQuarantined('b', f.big_id));
    EXPECT_TRUE(view->GetBlobInfo(f.big_id)->flags & kBlobQuarantined);
  }
  EXPECT_TRUE(ledger_->GetRelease("app", 1)->damaged);
  EXPECT_TRUE(ledger_->GetRelease("app", 2)->damaged);
  EXPECT_FALSE(ledger_->GetRelease("other", 1)->damaged);
  EXPECT_TRUE(ledger_->MoveLive("app", 1, Actor::Current()).Is(Code::kInvalidArgument));
  // Still damaged until healed: fsck still says so.
  FsckReport after = Check();
  EXPECT_FALSE(after.clean());
  EXPECT_NE(Find(after, "blob", f.big_id), nullptr);

  // A new release that needs the blob but does not carry it is refused.
  PackSpec thin;
  thin.hooks.push_back({"app", ""});
  thin.Blob("v3");
  thin.Release("app", thin.AddTree({File("bin", f.big, true), File("v", "v3")}));
  ApplyReport rep = Apply(thin);
  ASSERT_EQ(rep.releases.size(), 1u);
  EXPECT_EQ(rep.releases[0].kind, Kind::kRejected) << rep.ToJson().dump();
  EXPECT_EQ(rep.releases[0].bad_objects, std::vector<ObjectId>{f.big_id});

  // Re-pushing v1 (a duplicate) heals the blob; both releases become whole.
  rep = Apply(f.v1);
  ASSERT_TRUE(rep.Verdict().ok()) << rep.ToJson().dump();
  EXPECT_EQ(rep.releases[0].kind, Kind::kDuplicate);
  EXPECT_EQ(rep.objects_healed, 1u);
  EXPECT_EQ(rep.releases_healed, (std::vector<std::string>{"app/1", "app/2"}));
  EXPECT_FALSE(ledger_->GetRelease("app", 1)->damaged);
  EXPECT_FALSE(ledger_->GetRelease("app", 2)->damaged);
  ASSERT_TRUE(ReadAll(f.big_id, &got).ok());
  EXPECT_EQ(got, f.big);
  FsckReport healed = Check();
  EXPECT_TRUE(healed.clean()) << healed.Summary();
  EXPECT_EQ(test::Count(*store_).pending, 0u);
  EXPECT_TRUE(ledger_->MoveLive("app", 1, Actor::Current()).ok());
  // The journal recorded the repair and the heal.
  bool repair_line = false, heal_line = false;
  ASSERT_TRUE(ledger_->ReadJournal(1, [&](uint64_t, std::string_view line) {
    auto j = nlohmann::json::parse(line);
    repair_line |= j["event"] == "repair";
    heal_line |= j["event"] == "heal";
    return true;
  }).ok());
  EXPECT_TRUE(repair_line && heal_line);
}

TEST_F(IntegrityTest, DamagedTreeIsNamedWithItsReleasesAndHealedByAFullPack) {
  Fixture f = Publish();
  test::FlipTreeByte(store_.get(), f.etc_id, 6);
  FsckReport r = Check();
  const FsckProblem* p = Find(r, "tree", f.etc_id);
  ASSERT_NE(p, nullptr) << r.Summary();
  EXPECT_NE(p->what.find("checksum"), std::string::npos) << p->what;
  EXPECT_EQ(p->releases, (std::vector<std::string>{"app/1", "app/2"}));
  FsckReport rr = Repair();
  EXPECT_EQ(rr.quarantined, 1u);
  EXPECT_TRUE(ledger_->GetRelease("app", 2)->damaged);
  // A thin pack relying on the stored (damaged) tree is refused.
  PackSpec thin;
  thin.hooks.push_back({"app", ""});
  thin.Blob("v3");
  thin.Release("app", thin.AddTree({Dir("etc", f.etc_id), File("v", "v3")}));
  ApplyReport rep = Apply(thin);
  ASSERT_EQ(rep.releases.size(), 1u);
  EXPECT_EQ(rep.releases[0].kind, Kind::kRejected);
  EXPECT_EQ(rep.releases[0].bad_objects, std::vector<ObjectId>{f.etc_id});
  // The full v2 pack carries the tree: healed.
  rep = Apply(f.v2);
  ASSERT_TRUE(rep.Verdict().ok()) << rep.ToJson().dump();
  EXPECT_EQ(rep.objects_healed, 1u);
  FsckReport healed = Check();
  EXPECT_TRUE(healed.clean()) << healed.Summary();
  EXPECT_FALSE(ledger_->GetRelease("app", 1)->damaged);
}

TEST_F(IntegrityTest, MissingBlobAndBadDigestIndexAreFoundAndRepaired) {
  Fixture f = Publish();
  ObjectId v2_blob = Sha256::Of("v2");
  {
    const uint64_t writer = store_->Read()->GetBlobInfo(v2_blob)->writer;
    auto txn = store_->BeginWrite();
    ASSERT_TRUE(txn->Del(store_->tables().blobs, v2_blob.AsKey()).ok());
    ASSERT_TRUE(txn->Del(store_->tables().chunks, ChunkKey(v2_blob, writer, 0)).ok());
    ASSERT_TRUE(txn->Del(store_->tables().digests, ledger_txn::HookPrefix("other") + std::string(f.other_root.AsKey())).ok());
    ASSERT_TRUE(txn->Commit().ok());
  }
  FsckReport r = Check();
  const FsckProblem* p = Find(r, "blob", v2_blob);
  ASSERT_NE(p, nullptr) << r.Summary();
  EXPECT_NE(p->what.find("missing"), std::string::npos);
  EXPECT_EQ(p->releases, std::vector<std::string>{"app/2"});
  EXPECT_TRUE(std::any_of(r.problems.begin(), r.problems.end(), [](const FsckProblem& q) { return q.kind == "digests"; }))
      << r.Summary();
  FsckReport rr = Repair();
  EXPECT_EQ(rr.digests_rebuilt, 3u);
  EXPECT_EQ(rr.damage(), 1u) << rr.Summary();  // the blob is still missing
  EXPECT_TRUE(ledger_->GetRelease("app", 2)->damaged);
  EXPECT_FALSE(ledger_->GetRelease("app", 1)->damaged);
  // The digest index works again: re-pushing other is a duplicate.
  ApplyReport rep = Apply(f.other);
  EXPECT_EQ(rep.releases[0].kind, Kind::kDuplicate);
  rep = Apply(f.v2);
  ASSERT_TRUE(rep.Verdict().ok()) << rep.ToJson().dump();
  EXPECT_EQ(rep.releases[0].kind, Kind::kDuplicate);
  EXPECT_EQ(rep.releases_healed, std::vector<std::string>{"app/2"});
  EXPECT_TRUE(Check().clean());
}

// Issue 8g: the digest index was rebuilt in two txns (empty, then refill):
// a crash between them left no duplicate detection at all. One txn: a
// failure before it commits leaves the index as it was.
TEST_F(IntegrityTest, DigestRebuildIsOneTxn) {
  Fixture f = Publish();
  {
    auto txn = store_->BeginWrite();
    ASSERT_TRUE(txn->Del(store_->tables().digests, ledger_txn::HookPrefix("other") + std::string(f.other_root.AsKey())).ok());
    ASSERT_TRUE(txn->Commit().ok());
  }
  ASSERT_EQ(test::Count(*store_).releases, 3u);
  Close();
  {
    StoreOptions o;
    o.dir = dir_ / "store";
    o.exclusive = true;
    o.fault_injector = [](std::string_view step) {
      if (step == "repair_digests") return Status::IOError("injected crash during the digest rebuild");
      return Status::OK();
    };
    auto s = Store::Open(o);
    ASSERT_TRUE(s.ok()) << s.status().ToString();
    FsckOptions fo;
    fo.repair = true;
    auto r = Fsck(s->get(), fo);
    EXPECT_FALSE(r.ok());
  }
  Reopen();
  // app's two releases are still found as duplicates: the index was not emptied.
  ApplyReport rep = Apply(f.v1);
  ASSERT_EQ(rep.releases.size(), 1u);
  EXPECT_EQ(rep.releases[0].kind, Kind::kDuplicate) << rep.ToJson().dump();
  EXPECT_EQ(test::Count(*store_).releases, 3u);
}

TEST_F(IntegrityTest, RepairIsRefusedWhileTheStoreIsOpenAndOpenIsRefusedDuringRepair) {
  Publish();
  StoreOptions o;
  o.dir = dir_ / "store";
  o.exclusive = true;
  auto s = Store::Open(o);  // store_ (like a mounted daemon) holds it shared
  ASSERT_TRUE(s.status().Is(Code::kBusy)) << s.status().ToString();
  EXPECT_NE(s.status().message().find("unmount"), std::string::npos);
  // Repair without an exclusive store is refused too.
  FsckOptions fo;
  fo.repair = true;
  EXPECT_TRUE(Fsck(store_.get(), fo).status().Is(Code::kInvalidArgument));
  Close();
  auto ex = Store::Open(o);
  ASSERT_TRUE(ex.ok()) << ex.status().ToString();
  StoreOptions shared;
  shared.dir = dir_ / "store";
  auto other = Store::Open(shared);
  EXPECT_TRUE(other.status().Is(Code::kBusy)) << other.status().ToString();
}

// Found by the fuzzer: bytes that are not UTF-8 in a pack's names or
// messages used to make the journal's JSON serialiser throw (a crash of the
// daemon). Now a bad name is Malformed and a message is stored with U+FFFD.
TEST_F(IntegrityTest, BytesThatAreNotUtf8InAPackNeitherCrashNorCorrupt) {
  PackSpec spec;
  spec.hooks.push_back({"app", ""});
  spec.Blob("x");
  spec.Release("app", spec.AddTree({File("x", "x")}));
  spec.releases[0].message = std::string("caf\xe9 \xff\xfe");
  spec.releases[0].source_ref = std::string("ref\xc3");
  ApplyReport rep = Apply(spec);
  ASSERT_TRUE(rep.Verdict().ok()) << rep.ToJson().dump();
  auto rel = ledger_->GetRelease("app", 1);
  ASSERT_TRUE(rel.ok()) << rel.status().ToString();
  EXPECT_EQ(rel->message, "caf\xef\xbf\xbd \xef\xbf\xbd\xef\xbf\xbd");
  (void)ToJson(*rel).dump();

  std::string bytes = spec.Bytes();
  auto at = bytes.find("\x03" "app");  // the hook declaration's name
  ASSERT_NE(at, std::string::npos);
  bytes[at + 2] = '\xf4';
  // Fix up nothing: the trailer no longer matches, so the pack is malformed
  // either way; the journal line quoting it must still be written.
  rep = ApplyBytes(bytes);
  EXPECT_TRUE(rep.status.Is(Code::kMalformed)) << rep.status.ToString();
  (void)rep.ToJson().dump();
  EXPECT_TRUE(Check().clean());
}

// ---- gc ----

// Drops every ledger record of `hook` behind the store's back, leaving its
// objects unreachable (as a future release-pruning command would).
void ForgetHook(Store* store, const std::string& hook) {
  const Tables& t = store->tables();
  auto txn = store->BeginWrite();
  ASSERT_TRUE(txn.ok());
  ASSERT_TRUE(txn->Del(t.hooks, hook).ok());
  for (MDB_dbi dbi : {t.releases, t.digests, t.pointers, t.history, t.runs}) {
    std::vector<std::string> keys;
    auto c = lmdb::Cursor::Open(*txn, dbi);
    ASSERT_TRUE(c.ok());
    auto more = c->Seek(ledger_txn::HookPrefix(hook));
    while (more.ok() && *more && c->key().substr(0, hook.size() + 1) == ledger_txn::HookPrefix(hook)) {
      keys.emplace_back(c->key());
      more = c->Next();
    }
    for (const auto& k : keys) ASSERT_TRUE(txn->Del(dbi, k).ok());
  }
  ASSERT_TRUE(txn->Commit().ok());
}

TEST_F(IntegrityTest, GcRemovesExactlyWhatNoReleaseReaches) {
  Fixture f = Publish();
  Counts before = test::Count(*store_);
  ForgetHook(store_.get(), "other");
  auto gc = CollectGarbage(store_.get(), {});
  ASSERT_TRUE(gc.ok()) << gc.status().ToString();
  EXPECT_EQ(gc->blobs_removed, 1u);
  EXPECT_EQ(gc->trees_removed, 1u);
  EXPECT_EQ(gc->chunks_removed, 1u);
  Counts after = test::Count(*store_);
  EXPECT_EQ(after.blobs, before.blobs - 1);
  EXPECT_EQ(after.trees, before.trees - 1);
  EXPECT_TRUE(Check().clean());
  // A second gc finds nothing.
  gc = CollectGarbage(store_.get(), {});
  ASSERT_TRUE(gc.ok());
  EXPECT_EQ(gc->blobs_removed + gc->trees_removed + gc->chunks_removed, 0u);
  std::string got;
  ASSERT_TRUE(ReadAll(f.big_id, &got).ok());
  EXPECT_EQ(got, f.big);
}

// Issue 8d: a reachable tree whose record is missing was skipped, and gc
// then deleted everything reachable only through it. It must stop gc,
// named, with nothing removed.
TEST_F(IntegrityTest, GcStopsAtAMissingReachableTreeAndRemovesNothing) {
  Fixture f = Publish();
  ForgetHook(store_.get(), "other");  // gc has real garbage to remove too
  {
    auto txn = store_->BeginWrite();
    ASSERT_TRUE(txn->Del(store_->tables().trees, f.etc_id.AsKey()).ok());
    ASSERT_TRUE(txn->Commit().ok());
  }
  Counts before = test::Count(*store_);
  auto gc = CollectGarbage(store_.get(), {});
  ASSERT_FALSE(gc.ok()) << "gc ran over a missing reachable tree";
  EXPECT_TRUE(gc.status().Is(Code::kCorruption)) << gc.status().ToString();
  EXPECT_NE(gc.status().message().find(f.etc_id.Hex()), std::string::npos) << gc.status().ToString();
  EXPECT_NE(gc.status().message().find("missing"), std::string::npos) << gc.status().ToString();
  Counts after = test::Count(*store_);
  EXPECT_EQ(after, before) << test::ToString(after);
  EXPECT_TRUE(store_->Read()->HasBlob(Sha256::Of("conf 1")).value()) << "gc deleted a blob reachable only through the missing tree";
}

// A thin pack for `hook` that reaches the stored (unreachable) `other` tree
// and blob without carrying them.
PackSpec ThinOverOther(const ObjectId& other_root) {
  PackSpec thin;
  thin.hooks.push_back({"newer", ""});
  thin.Blob("fresh");
  thin.Release("newer", thin.AddTree({File("fresh", "fresh"), File("o2", "other"), Dir("old", other_root)}));
  return thin;
}

// gc's sweep lands between an apply's decision ("the store has it") and its
// final txn: the apply must not commit a release whose closure lost objects.
TEST_F(IntegrityTest, GcBetweenApplyDecisionAndCommitRejectsTheReleaseInsteadOfDangling) {
  Fixture f = Publish();
  Close();
  auto gc_ran = std::make_shared<std::atomic<bool>>(false);
  StoreOptions o;
  Store** self = new Store*(nullptr);
  o.fault_injector = [gc_ran, self](std::string_view step) {
    if (step == "decided" && !gc_ran->exchange(true)) {
      auto gc = CollectGarbage(*self, {});
      EXPECT_TRUE(gc.ok()) << gc.status().ToString();
      EXPECT_EQ(gc->trees_removed, 1u);
      EXPECT_EQ(gc->blobs_removed, 1u);
    }
    return Status::OK();
  };
  Reopen(o);
  *self = store_.get();
  ForgetHook(store_.get(), "other");
  ApplyReport rep = Apply(ThinOverOther(f.other_root));
  ASSERT_TRUE(gc_ran->load());
  ASSERT_EQ(rep.releases.size(), 1u);
  EXPECT_EQ(rep.releases[0].kind, Kind::kRejected) << rep.ToJson().dump();
  EXPECT_NE(rep.releases[0].reason.find("gc"), std::string::npos) << rep.releases[0].reason;
  FsckReport r = Check();
  EXPECT_TRUE(r.clean()) << r.Summary();
  EXPECT_EQ(test::Count(*store_).pending, 0u);
  Close();
  delete self;
}

// The apply commits between gc's mark and its sweep: gc must spare what the
// new release reaches.
TEST_F(IntegrityTest, ApplyBetweenGcMarkAndSweepIsSpared) {
  Fixture f = Publish();
  Close();
  std::string pack = ThinOverOther(f.other_root).Bytes();
  test::WriteFile(dir_ / "thin.pack", pack);
  auto applied = std::make_shared<std::atomic<bool>>(false);
  Store** self = new Store*(nullptr);
  const std::string path = dir_ / "thin.pack";
  StoreOptions o;
  o.fault_injector = [applied, self, path](std::string_view step) {
    if (step == "gc_sweep" && !applied->exchange(true)) {
      Ledger l(*self);
      ApplyReport rep = ApplyPackFile(&l, path, {});
      EXPECT_TRUE(rep.Verdict().ok()) << rep.ToJson().dump();
    }
    return Status::OK();
  };
  Reopen(o);
  *self = store_.get();
  ForgetHook(store_.get(), "other");
  auto gc = CollectGarbage(store_.get(), {});
  ASSERT_TRUE(gc.ok()) << gc.status().ToString();
  ASSERT_TRUE(applied->load());
  EXPECT_EQ(gc->trees_removed + gc->blobs_removed, 0u);
  EXPECT_EQ(gc->spared, 2u);
  ASSERT_TRUE(ledger_->GetRelease("newer", 1).ok());
  FsckReport r = Check();
  EXPECT_TRUE(r.clean()) << r.Summary();
  Close();
  delete self;
}

// ---- full store ----

TEST_F(IntegrityTest, AFullMapRejectsThePackWithNoSpaceAndDamagesNothing) {
  StoreOptions small;
  small.map_size = 8u << 20;
  Reopen(small);
  PackSpec first;
  first.hooks.push_back({"app", ""});
  first.Release("app", first.AddTree({File("a", "a small file")}));
  first.Blob("a small file");
  ASSERT_TRUE(Apply(first).Verdict().ok());
  Counts before = test::Count(*store_);

  PackSpec huge;
  huge.hooks.push_back({"app", ""});
  std::string content = Big(16u << 20, 'z');
  huge.Blob(content);
  huge.Release("app", huge.AddTree({File("huge", content)}));
  ApplyReport rep = Apply(huge);
  ASSERT_TRUE(rep.status.Is(Code::kNoSpace)) << rep.ToJson().dump();
  EXPECT_EQ(rep.status.ToErrno(), ENOSPC);
  EXPECT_NE(rep.status.message().find("full"), std::string::npos) << rep.status.message();
  EXPECT_TRUE(rep.releases.empty());

  Reopen(small);
  Counts after = test::Count(*store_);
  EXPECT_EQ(after.pending, 0u);
  EXPECT_EQ(after.blobs, before.blobs);
  EXPECT_EQ(after.chunks, before.chunks);
  EXPECT_EQ(after.releases, 1u);
  FsckReport r = Check();
  EXPECT_TRUE(r.clean()) << r.Summary();
  // The store still takes packs that fit.
  PackSpec next;
  next.hooks.push_back({"app", ""});
  next.Blob("second");
  next.Release("app", next.AddTree({File("a", "second")}));
  rep = Apply(next);
  ASSERT_TRUE(rep.Verdict().ok()) << rep.ToJson().dump();
  EXPECT_EQ(rep.releases[0].version, 2u);
}

// ---- crash ----

// kill -9 at random instants of a large pack's apply, in a loop bounded in
// time: after each, the next open leaves a clean store holding the whole
// pack or none of it, with nothing pending and staging empty.
TEST_F(IntegrityTest, KillNineDuringALargeApplyLeavesAllOrNothing) {
  PackSpec spec;
  spec.hooks.push_back({"app", ""});
  std::string a = Big(40u << 20, 'k'), b = Big(40u << 20, 'm');
  spec.Blob(a);
  spec.Blob(b);
  spec.Release("app", spec.AddTree({File("a", a), File("b", b), File("c", "small")}));
  spec.Blob("small");
  const std::string pack = spec.WriteTo(dir_ / "big.pack");
  const ObjectId root = spec.releases[0].root;
  Close();

  // How long one apply takes here, to spread the kills over it.
  double apply_s;
  {
    TempDir d;
    auto s = test::OpenStore(d / "s");
    Ledger l(s.get());
    auto t0 = std::chrono::steady_clock::now();
    ASSERT_TRUE(ApplyPackFile(&l, pack, {}).Verdict().ok());
    apply_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  }
  std::mt19937 rng(12345);
  std::uniform_real_distribution<double> when(0.0, apply_s * 1.2);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(15);
  int rounds = 0, whole = 0, absent = 0;
  while (std::chrono::steady_clock::now() < deadline || rounds < 5) {
    TempDir d;
    const std::string store_dir = d / "s";
    { ASSERT_NE(test::OpenStore(store_dir), nullptr); }
    pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      StoreOptions o;
      o.dir = store_dir;
      auto s = Store::Open(o);
      if (!s.ok()) ::_exit(1);
      Ledger l(s->get());
      ApplyReport rep = ApplyPackFile(&l, pack, {});
      ::_exit(rep.Verdict().ok() ? 0 : 3);
    }
    ::usleep(useconds_t(when(rng) * 1e6));
    ::kill(pid, SIGKILL);
    int status = 0;
    ASSERT_EQ(::waitpid(pid, &status, 0), pid);
    if (WIFEXITED(status)) {
      ASSERT_EQ(WEXITSTATUS(status), 0) << "child failed before the kill";
    }
    ++rounds;

    auto s = test::OpenStore(store_dir);
    ASSERT_NE(s, nullptr);
    Counts c = test::Count(*s);
    EXPECT_EQ(c.pending, 0u) << test::ToString(c);
    EXPECT_TRUE(std::filesystem::is_empty(store_dir + "/staging"));
    auto fr = Fsck(s.get(), {});
    ASSERT_TRUE(fr.ok()) << fr.status().ToString();
    EXPECT_TRUE(fr->clean()) << fr->Summary();
    EXPECT_EQ(fr->problems.size(), 0u) << fr->Summary();
    Ledger l(s.get());
    auto rel = l.GetRelease("app", 1);
    if (rel.ok()) {
      ++whole;
      EXPECT_EQ(rel->digest, root);
      EXPECT_EQ(c.blobs, 3u);
      EXPECT_EQ(c.chunks, 321u);
      EXPECT_EQ(c.trees, 1u);
    } else {
      ++absent;
      EXPECT_EQ(c.blobs + c.chunks + c.trees + c.releases + c.hooks, 0u) << test::ToString(c);
    }
    if (HasFailure()) break;
  }
  RecordProperty("rounds", rounds);
  std::printf("kill -9 rounds: %d (pack whole %d, absent %d; one apply %.2f s)\n", rounds, whole, absent, apply_s);
  EXPECT_GT(absent, 0);
}

}  // namespace
}  // namespace hookfs
