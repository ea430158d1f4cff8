// The namespace layer without FUSE (hookfs/namespace.h): resolution, listings,
// attributes, the tree cache, identities, the daemon's own permission checks
// and the incoming/ protocol, driven with Caller values instead of a mount.
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <filesystem>
#include <thread>
#include <set>

#include <gtest/gtest.h>

#include "hookfs/apply.h"
#include "hookfs/ledger.h"
#include "hookfs/namespace.h"
#include "namespace_walk.h"
#include "incoming.h"
#include "inode_table.h"
#include "log_safe.h"
#include "publish_queue.h"
#include "reply_once.h"
#include "test_util.h"

namespace hookfs::fs {
namespace {

using test::Big;
using test::Dir;
using test::File;
using test::Link;
using test::PackSpec;
using test::TempDir;

constexpr uid_t kOwner = 1000;
constexpr gid_t kPublishGroup = 500;
constexpr gid_t kRunGroup = 501;

class RecordingNotifier : public Notifier {
 public:
  void EntryChanged(Ino dir, const std::string& name) override {
    std::lock_guard<std::mutex> l(mu);
    entries.insert({dir, name});
  }
  void InodeChanged(Ino ino) override {
    std::lock_guard<std::mutex> l(mu);
    inodes.insert(ino);
  }
  std::mutex mu;
  std::set<std::pair<Ino, std::string>> entries;
  std::set<Ino> inodes;
};

Caller Owner() { return Caller{kOwner, kOwner, 1, nullptr}; }
// In the publish group through a supplementary group only.
Caller Publisher() {
  return Caller{2000, 2000, 2, [] { return std::vector<gid_t>{42, kPublishGroup}; }};
}
Caller Runner() { return Caller{2001, kRunGroup, 3, nullptr}; }
Caller Outsider() { return Caller{3000, 3000, 4, [] { return std::vector<gid_t>{42}; }}; }
// A second publisher (issue 9: alice is Publisher(), bob is this one).
Caller Bob() { return Caller{2002, kPublishGroup, 5, nullptr}; }
Caller Root() { return Caller{0, 0, 6, nullptr}; }

class NamespaceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    store_ = test::OpenStore(dir_ / "store");
    ASSERT_NE(store_, nullptr);
    ledger_ = std::make_unique<Ledger>(store_.get());
    incoming_ = std::make_unique<Incoming>(ledger_.get(), store_->staging_dir(), store_->dir() + "/results");
    ASSERT_TRUE(incoming_->Init().ok());
    catalog_ = std::make_unique<LedgerCatalog>(ledger_.get());
    Make();
  }

  void Make(size_t tree_budget = 64u << 20, std::chrono::seconds temp_ttl = std::chrono::seconds(600)) {
    NamespaceOptions o;
    o.temp_link_ttl = temp_ttl;
    o.policy.owner_uid = kOwner;
    o.policy.owner_gid = kOwner;
    o.policy.publish_gid = kPublishGroup;
    o.policy.run_gid = kRunGroup;
    o.tree_cache_bytes = tree_budget;
    ns_.reset();
    ns_ = std::make_unique<Namespace>(o, store_.get(), catalog_.get(), incoming_.get(), &notes_);
  }

  PackSpec AppSpec(char seed, bool no_advance = false) {
    PackSpec spec;
    spec.hooks.push_back({"app", ""});
    std::string big = Big(300000, seed);
    std::string conf = std::string("conf ") + seed;
    spec.Blob(big);
    spec.Blob(conf);
    ObjectId etc = spec.AddTree({File("app.conf", conf)});
    root_ = spec.AddTree({File("bin", big, true), Dir("etc", etc), Link("run", "bin")});
    etc_ = etc;
    spec.Release("app", root_, no_advance);
    return spec;
  }

  void Apply(const PackSpec& spec) {
    std::string path = dir_ / ("p" + std::to_string(++n_) + ".pack");
    test::WriteFile(path, spec.Bytes());
    ApplyReport r = ApplyPackFile(ledger_.get(), path, {});
    ASSERT_TRUE(r.Verdict().ok()) << r.Verdict().ToString();
  }

  Result<Entry> Walk(const std::string& path) { return WalkPath(*ns_, path); }
  std::vector<std::string> Names(const std::string& path) { return ListNames(*ns_, path); }

  std::string ResultOf(const std::string& name) {
    return test::ReadFile(store_->dir() + "/results/" + name + ".result");
  }
  bool HasResult(const std::string& name) {
    return std::filesystem::exists(store_->dir() + "/results/" + name + ".result");
  }

  TempDir dir_;
  std::unique_ptr<Store> store_;
  std::unique_ptr<Ledger> ledger_;
  std::unique_ptr<Incoming> incoming_;
  std::unique_ptr<LedgerCatalog> catalog_;
  RecordingNotifier notes_;
  std::unique_ptr<Namespace> ns_;
  ObjectId root_, etc_;
  int n_ = 0;
};

TEST(IdentityTest, NamesAreValidatedAtConstruction) {
  EXPECT_TRUE(HookName::Make("app").ok());
  EXPECT_FALSE(HookName::Make("App").ok());
  EXPECT_FALSE(HookName::Make("a/b").ok());
  EXPECT_FALSE(HookName::Make("").ok());
  EXPECT_TRUE(RunName::Make("Run-1.x").ok());
  EXPECT_FALSE(RunName::Make("..").ok() && RunName::Make("a/b").ok());
  EXPECT_FALSE(TagName::Make("a/b").ok());
  HookName app = *HookName::Make("app");
  auto r = ReleaseRef::FromTarget(app, "../releases/12", "../");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->version, 12u);
  EXPECT_EQ(r->Target("../../"), "../../releases/12");
  EXPECT_FALSE(ReleaseRef::FromTarget(app, "releases/012", "").ok());
  EXPECT_FALSE(ReleaseRef::FromTarget(app, "releases/0", "").ok());
  EXPECT_FALSE(ReleaseRef::FromTarget(app, "../releases/1", "").ok());
  EXPECT_FALSE(ReleaseRef::FromTarget(app, "releases/4294967296", "").ok());
}

TEST_F(NamespaceTest, ResolvesListsAndDescribesAReleaseWithoutFuse) {
  Apply(AppSpec('a'));
  EXPECT_EQ(Names(""), (std::vector<std::string>{"hooks", "incoming", "objects", "journal", "keys"}));
  EXPECT_EQ(Names("hooks"), (std::vector<std::string>{"app"}));
  EXPECT_EQ(Names("hooks/app/releases/1"), (std::vector<std::string>{"bin", "etc", "run"}));
  auto live = Walk("hooks/app/live");
  ASSERT_TRUE(live.ok()) << live.status().ToString();
  EXPECT_EQ(ns_->Target(*live->node), "releases/1");
  EXPECT_TRUE(S_ISLNK(live->attr.st_mode));
  auto bin = Walk("hooks/app/live/../releases/1/bin");
  EXPECT_FALSE(bin.ok());  // ".." is the kernel's business, not a name here
  bin = Walk("hooks/app/releases/1/bin");
  ASSERT_TRUE(bin.ok()) << bin.status().ToString();
  EXPECT_EQ(bin->attr.st_size, 300000);
  EXPECT_EQ(bin->attr.st_mode, S_IFREG | 0755);
  auto x = ns_->Xattrs(*bin->node);
  ASSERT_EQ(x.size(), 1u);
  EXPECT_EQ(x[0].first, "user.hookfs.sha256");
  auto conf = Walk("hooks/app/releases/1/etc/app.conf");
  ASSERT_TRUE(conf.ok());
  EXPECT_EQ(conf->attr.st_size, 6);
  auto run = Walk("hooks/app/releases/1/run");
  ASSERT_TRUE(run.ok());
  EXPECT_EQ(ns_->Target(*run->node), "bin");
  auto missing = Walk("hooks/app/releases/1/nope");
  EXPECT_TRUE(missing.status().Is(Code::kNotFound));
  EXPECT_TRUE(Namespace::AbsenceIsForever(*Walk("hooks/app/releases/1")->node));
  EXPECT_FALSE(Walk("hooks/nope").ok());
  auto json = Walk("hooks/app/releases/1.json");
  ASSERT_TRUE(json.ok());
  auto content = ns_->Content(*json->node);
  ASSERT_TRUE(content.ok());
  EXPECT_NE(content->find("\"version\": 1"), std::string::npos) << *content;
  // Directories where the policy lets groups create entries show that group.
  auto incoming = Walk("incoming");
  ASSERT_TRUE(incoming.ok());
  EXPECT_EQ(incoming->attr.st_gid, kPublishGroup);
  EXPECT_EQ(incoming->attr.st_mode, S_IFDIR | 0775);
  EXPECT_EQ(Walk("hooks/app/runs")->attr.st_gid, kRunGroup);
}

TEST_F(NamespaceTest, DecodedTreesAreCachedByIdWithinTheBudget) {
  Apply(AppSpec('a'));
  auto rel = Walk("hooks/app/releases/1");
  ASSERT_TRUE(rel.ok());
  EXPECT_EQ(ns_->trees().size(), 0u);
  ASSERT_TRUE(ns_->Children(rel->ino, *rel->node).ok());
  EXPECT_EQ(ns_->trees().size(), 1u);
  auto a = ns_->trees().Get(root_);
  auto b = ns_->trees().Get(root_);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(a->get(), b->get()) << "the second get decoded again";
  EXPECT_EQ((*a)->id, root_);
  ASSERT_TRUE(Walk("hooks/app/releases/1/etc/app.conf").ok());
  EXPECT_EQ(ns_->trees().size(), 2u);

  // A budget smaller than one tree: answers, keeps nothing.
  TreeCache tiny(store_.get(), 16);
  auto t = tiny.Get(root_);
  ASSERT_TRUE(t.ok());
  EXPECT_EQ((*t)->tree.entries.size(), 3u);
  EXPECT_EQ(tiny.size(), 0u);
  // A budget of about one tree: the older one goes.
  TreeCache one(store_.get(), (*t)->bytes + 1);
  ASSERT_TRUE(one.Get(root_).ok());
  ASSERT_TRUE(one.Get(etc_).ok());
  EXPECT_LE(one.bytes(), (*t)->bytes + 1);
  EXPECT_EQ(one.size(), 1u);
}

// The daemon's own check, where the kernel (default_permissions) would let
// the write through: the caller has the directory's group only as a
// supplementary group, or not at all.
TEST_F(NamespaceTest, GroupsDecideWhoWrites) {
  Apply(AppSpec('a'));
  Apply(AppSpec('b', /*no_advance=*/true));
  auto hook = Walk("hooks/app");
  auto tags = Walk("hooks/app/tags");
  auto runs = Walk("hooks/app/runs");
  auto incoming = Walk("incoming");
  ASSERT_TRUE(hook.ok() && tags.ok() && runs.ok() && incoming.ok());

  auto denied = [](const Status& s) { return s.Is(Code::kPermissionDenied); };
  EXPECT_TRUE(denied(ns_->Symlink(Outsider(), "../releases/2", tags->ino, *tags->node, "stable").status()));
  EXPECT_TRUE(denied(ns_->Symlink(Outsider(), "releases/2", hook->ino, *hook->node, ".tmpL").status()));
  EXPECT_TRUE(denied(ns_->CreateSpool(Outsider(), incoming->ino, *incoming->node, "x.pack", true).status()));
  EXPECT_TRUE(denied(ns_->MakeRun(Outsider(), runs->ino, *runs->node, "r1").status()));
  // Publishing does not grant running, and the reverse.
  EXPECT_TRUE(denied(ns_->MakeRun(Publisher(), runs->ino, *runs->node, "r1").status()));
  EXPECT_TRUE(denied(ns_->Symlink(Runner(), "../releases/2", tags->ino, *tags->node, "stable").status()));
  EXPECT_EQ(catalog_->Tags(*HookName::Make("app"))->size(), 0u);

  auto tag = ns_->Symlink(Publisher(), "../releases/2", tags->ino, *tags->node, "stable");
  ASSERT_TRUE(tag.ok()) << tag.status().ToString();
  EXPECT_EQ(ns_->Target(*tag->node), "../releases/2");
  EXPECT_TRUE(denied(ns_->Unlink(Outsider(), tags->ino, *tags->node, "stable")));
  auto run = ns_->MakeRun(Runner(), runs->ino, *runs->node, "r1");
  ASSERT_TRUE(run.ok()) << run.status().ToString();
  EXPECT_EQ(run->node->release.version, 1u);
  auto result = Walk("hooks/app/runs/r1/result");
  ASSERT_TRUE(result.ok());
  EXPECT_TRUE(denied(ns_->CheckWriteRunResult(Outsider(), *result->node)));
  EXPECT_TRUE(ns_->CheckWriteRunResult(Runner(), *result->node).ok());
  auto spool = ns_->CreateSpool(Owner(), incoming->ino, *incoming->node, "y.pack", true);
  EXPECT_TRUE(spool.ok()) << spool.status().ToString();
}

// ln -sfn releases/2 live: a pending symlink renamed over live.
TEST_F(NamespaceTest, LiveMovesByRenameAndTheKernelIsTold) {
  Apply(AppSpec('a'));
  Apply(AppSpec('b', /*no_advance=*/true));
  auto hook = Walk("hooks/app");
  ASSERT_TRUE(hook.ok());
  ASSERT_TRUE(Walk("hooks/app/live").ok());
  auto tmp = ns_->Symlink(Publisher(), "releases/2", hook->ino, *hook->node, "CuXXXXXX");
  ASSERT_TRUE(tmp.ok()) << tmp.status().ToString();
  EXPECT_EQ(Names("hooks/app").back(), "CuXXXXXX");
  ASSERT_TRUE(ns_->Rename(Publisher(), hook->ino, *hook->node, "CuXXXXXX", "live", false).ok());
  EXPECT_EQ(*catalog_->Live(*HookName::Make("app")), std::optional<uint32_t>(2));
  EXPECT_TRUE(notes_.entries.count({hook->ino, "live"}));
  EXPECT_FALSE(Walk("hooks/app/CuXXXXXX").ok());
  EXPECT_EQ(ns_->Target(*Walk("hooks/app/live")->node), "releases/2");
  // Only releases/N: anything else is refused and changes nothing.
  ASSERT_TRUE(ns_->Symlink(Owner(), "/etc/passwd", hook->ino, *hook->node, "CuYYYYYY").ok());
  EXPECT_TRUE(ns_->Rename(Owner(), hook->ino, *hook->node, "CuYYYYYY", "live", false).Is(Code::kInvalidArgument));
  EXPECT_EQ(*catalog_->Live(*HookName::Make("app")), std::optional<uint32_t>(2));
  EXPECT_TRUE(ns_->Rename(Owner(), hook->ino, *hook->node, "hook.json", "x", false).Is(Code::kNotPermitted));
}

// The kernel caches live and tags for a day: a move that did not come
// through the namespace (a publish, another process) is found by
// SyncPointers and told; one already told, or unmoved, is not told again.
TEST_F(NamespaceTest, PointersMovedBehindItsBackAreFoundAndTold) {
  Apply(AppSpec('a'));
  Apply(AppSpec('b', /*no_advance=*/true));
  auto hook = Walk("hooks/app");
  ASSERT_TRUE(hook.ok());
  auto live = Walk("hooks/app/live");
  ASSERT_TRUE(live.ok());
  EXPECT_EQ(live->entry_timeout, 86400.0);
  auto tags = Walk("hooks/app/tags");
  ASSERT_TRUE(tags.ok());
  ASSERT_TRUE(ns_->Symlink(Owner(), "../releases/1", tags->ino, *tags->node, "stable").ok());
  auto stable = Walk("hooks/app/tags/stable");
  ASSERT_TRUE(stable.ok());
  EXPECT_EQ(ns_->SyncPointers(), 0u);  // nothing moved

  notes_.entries.clear();
  notes_.inodes.clear();
  Actor who{0, "root"};
  ASSERT_TRUE(catalog_->MoveLive(ReleaseRef{*HookName::Make("app"), 2}, who).ok());
  ASSERT_TRUE(catalog_->RemoveTag(*HookName::Make("app"), *TagName::Make("stable"), who).ok());
  EXPECT_EQ(ns_->SyncPointers(), 2u);
  EXPECT_TRUE(notes_.entries.count({hook->ino, "live"}));
  EXPECT_TRUE(notes_.inodes.count(live->ino));
  EXPECT_TRUE(notes_.entries.count({tags->ino, "stable"}));
  EXPECT_TRUE(notes_.inodes.count(stable->ino));
  EXPECT_EQ(ns_->SyncPointers(), 0u);  // told once
  // The next lookup makes a new inode showing the new target.
  auto moved = Walk("hooks/app/live");
  ASSERT_TRUE(moved.ok());
  EXPECT_NE(moved->ino, live->ino);
  EXPECT_EQ(ns_->Target(*moved->node), "releases/2");
}

TEST_F(NamespaceTest, AClosedPackIsPublishedAndItsVerdictReturned) {
  PackSpec spec = AppSpec('a');
  std::string bytes = spec.Bytes();
  auto incoming = Walk("incoming");
  ASSERT_TRUE(incoming.ok());
  auto c = ns_->CreateSpool(Publisher(), incoming->ino, *incoming->node, "a.pack", false);
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  ASSERT_TRUE(ns_->WriteSpool(c->spool, bytes.data(), bytes.size(), 0).ok());
  EXPECT_EQ(Names("incoming"), (std::vector<std::string>{"a.pack"}));
  EXPECT_EQ(c->entry.attr.st_uid, 2000u);
  Status v = ns_->FlushSpool(Publisher(), c->spool);
  EXPECT_TRUE(v.ok()) << v.ToString();
  ns_->ReleaseSpoolWriter(Publisher(), c->spool);
  EXPECT_EQ(Names("incoming"), (std::vector<std::string>{"a.pack.result"}));
  EXPECT_NE(ResultOf("a.pack").find("accepted"), std::string::npos) << ResultOf("a.pack");
  EXPECT_EQ(catalog_->Releases(*HookName::Make("app"))->size(), 1u);
  EXPECT_TRUE(notes_.entries.count({incoming->ino, "a.pack.result"}));

  // Garbage: the verdict is Malformed, the result says why.
  auto g = ns_->CreateSpool(Publisher(), incoming->ino, *incoming->node, "g.pack", false);
  ASSERT_TRUE(g.ok());
  ASSERT_TRUE(ns_->WriteSpool(g->spool, "garbage", 7, 0).ok());
  EXPECT_TRUE(ns_->FlushSpool(Publisher(), g->spool).Is(Code::kMalformed));
  EXPECT_TRUE(HasResult("g.pack"));

  // rsync: a dot name is staging; the rename publishes and returns the verdict.
  auto r = ns_->CreateSpool(Publisher(), incoming->ino, *incoming->node, ".b.pack.XYZ", true);
  ASSERT_TRUE(r.ok());
  std::string b2 = AppSpec('c').Bytes();
  ASSERT_TRUE(ns_->WriteSpool(r->spool, b2.data(), b2.size(), 0).ok());
  EXPECT_TRUE(ns_->FlushSpool(Publisher(), r->spool).ok());
  EXPECT_FALSE(HasResult(".b.pack.XYZ"));
  Status rv = ns_->Rename(Publisher(), incoming->ino, *incoming->node, ".b.pack.XYZ", "b.pack", false);
  EXPECT_TRUE(rv.ok()) << rv.ToString();
  EXPECT_TRUE(HasResult("b.pack"));
  EXPECT_EQ(catalog_->Releases(*HookName::Make("app"))->size(), 2u);
}

// Issue 8 (b): a create without O_EXCL, or a rename onto a staging name,
// replaced a spool still being written; the displaced writer's close then
// returned success with no apply and no result.
TEST_F(NamespaceTest, TwoWritersOfOneNameEachGetAVerdictOrAnError) {
  auto incoming = Walk("incoming");
  ASSERT_TRUE(incoming.ok());
  std::string a = AppSpec('a').Bytes(), b = AppSpec('b').Bytes();
  auto first = ns_->CreateSpool(Publisher(), incoming->ino, *incoming->node, "x.pack", false);
  ASSERT_TRUE(first.ok());
  ASSERT_TRUE(ns_->WriteSpool(first->spool, a.data(), a.size() / 2, 0).ok());
  auto second = ns_->CreateSpool(Owner(), incoming->ino, *incoming->node, "x.pack", false);
  ASSERT_TRUE(second.ok());
  ASSERT_TRUE(ns_->WriteSpool(second->spool, b.data(), b.size(), 0).ok());
  // The first writer goes on and closes after the second one.
  Status w = ns_->WriteSpool(first->spool, a.data() + a.size() / 2, a.size() - a.size() / 2, a.size() / 2);
  Status v2 = ns_->FlushSpool(Owner(), second->spool);
  EXPECT_TRUE(v2.ok()) << v2.ToString();
  Status v1 = ns_->FlushSpool(Publisher(), first->spool);
  ns_->ReleaseSpoolWriter(Owner(), second->spool);
  ns_->ReleaseSpoolWriter(Publisher(), first->spool);
  size_t releases = catalog_->Releases(*HookName::Make("app"))->size();
  // Either both packs were applied, or the first writer was told.
  EXPECT_TRUE(releases == 2 || !w.ok() || !v1.ok())
      << "the displaced writer's close returned success but its pack was never applied (" << releases
      << " release(s))";

  // rsync-style staging names: a rename onto .t replaces the spool there.
  auto t1 = ns_->CreateSpool(Publisher(), incoming->ino, *incoming->node, ".t", true);
  auto t2 = ns_->CreateSpool(Publisher(), incoming->ino, *incoming->node, ".u", true);
  ASSERT_TRUE(t1.ok() && t2.ok());
  std::string c = AppSpec('c').Bytes();
  ASSERT_TRUE(ns_->WriteSpool(t1->spool, c.data(), 100, 0).ok());
  ASSERT_TRUE(ns_->WriteSpool(t2->spool, c.data(), c.size(), 0).ok());
  ASSERT_TRUE(ns_->Rename(Publisher(), incoming->ino, *incoming->node, ".u", ".t", false).ok());
  Status tw = ns_->WriteSpool(t1->spool, c.data() + 100, c.size() - 100, 100);
  Status tv = ns_->FlushSpool(Publisher(), t1->spool);
  EXPECT_TRUE(!tw.ok() || !tv.ok()) << "the writer of the replaced .t was never told";
}

// Issue 8 (h): a file closed for the last time without a byte written is
// rejected at once (result written, name gone), not left forever.
TEST_F(NamespaceTest, AnEmptyPackIsRejectedWhenItsLastWriterCloses) {
  auto incoming = Walk("incoming");
  ASSERT_TRUE(incoming.ok());
  auto c = ns_->CreateSpool(Publisher(), incoming->ino, *incoming->node, "e.pack", false);
  ASSERT_TRUE(c.ok());
  auto again = ns_->OpenSpool(Publisher(), *c->entry.node, /*write=*/true, /*trunc=*/false);
  ASSERT_TRUE(again.ok());
  EXPECT_TRUE(ns_->FlushSpool(Publisher(), c->spool).ok());
  ns_->ReleaseSpoolWriter(Publisher(), c->spool);
  EXPECT_EQ(Names("incoming"), (std::vector<std::string>{"e.pack"})) << "a writer still holds it open";
  EXPECT_TRUE(ns_->FlushSpool(Publisher(), *again).ok());
  ns_->ReleaseSpoolWriter(Publisher(), *again);
  EXPECT_EQ(Names("incoming"), (std::vector<std::string>{"e.pack.result"}));
  EXPECT_NE(ResultOf("e.pack").find("error"), std::string::npos) << ResultOf("e.pack");
  // A staging name waits for its rename, empty or not.
  auto d = ns_->CreateSpool(Publisher(), incoming->ino, *incoming->node, ".d", false);
  ASSERT_TRUE(d.ok());
  EXPECT_TRUE(ns_->FlushSpool(Publisher(), d->spool).ok());
  ns_->ReleaseSpoolWriter(Publisher(), d->spool);
  // Two writers: the release of the last one rejects it.
  auto f = ns_->CreateSpool(Publisher(), incoming->ino, *incoming->node, "f.pack", false);
  ASSERT_TRUE(f.ok());
  auto f2 = ns_->OpenSpool(Publisher(), *f->entry.node, true, false);
  ASSERT_TRUE(f2.ok());
  EXPECT_TRUE(ns_->FlushSpool(Publisher(), f->spool).ok());
  EXPECT_TRUE(ns_->FlushSpool(Publisher(), *f2).ok());
  ns_->ReleaseSpoolWriter(Publisher(), f->spool);
  ns_->ReleaseSpoolWriter(Publisher(), *f2);
  EXPECT_TRUE(HasResult("f.pack"));
  EXPECT_EQ(Names("incoming"), (std::vector<std::string>{".d", "e.pack.result", "f.pack.result"}));
}

// Issue 9.1: every staged or open pack holds a descriptor in the daemon; one
// publisher made 1,010 and starved everyone. At most max_packs_per_user
// (64) per user, EDQUOT past it; another user is unaffected; a spool nobody
// writes to for the idle timeout is rejected (result written, name gone).
TEST_F(NamespaceTest, OnePublisherHoldsAtMost64PacksAndIdleOnesExpire) {
  auto incoming = Walk("incoming");
  ASSERT_TRUE(incoming.ok());
  std::vector<std::shared_ptr<Spool>> held;
  for (int i = 1; i <= 64; ++i) {
    auto c = ns_->CreateSpool(Publisher(), incoming->ino, *incoming->node, ".e" + std::to_string(i), true);
    ASSERT_TRUE(c.ok()) << i << ": " << c.status().ToString();
    ns_->ReleaseSpoolWriter(Publisher(), c->spool);  // closed, still staged
  }
  auto over = ns_->CreateSpool(Publisher(), incoming->ino, *incoming->node, ".e65", true);
  ASSERT_FALSE(over.ok());
  EXPECT_TRUE(over.status().Is(Code::kQuota)) << over.status().ToString();
  EXPECT_EQ(over.status().ToErrno(), EDQUOT);
  // Someone else still publishes.
  std::string bytes = AppSpec('a').Bytes();
  auto b = ns_->CreateSpool(Bob(), incoming->ino, *incoming->node, "b.pack", true);
  ASSERT_TRUE(b.ok()) << b.status().ToString();
  ASSERT_TRUE(ns_->WriteSpool(b->spool, bytes.data(), bytes.size(), 0).ok());
  EXPECT_TRUE(ns_->FlushSpool(Bob(), b->spool).ok());
  ns_->ReleaseSpoolWriter(Bob(), b->spool);
  // Removing one gives the slot back.
  ASSERT_TRUE(ns_->Unlink(Publisher(), incoming->ino, *incoming->node, ".e1").ok());
  auto again = ns_->CreateSpool(Publisher(), incoming->ino, *incoming->node, ".e65", true);
  ASSERT_TRUE(again.ok()) << again.status().ToString();
  ns_->ReleaseSpoolWriter(Publisher(), again->spool);

  // Idle expiry (1 s here): every staged spool of the publisher goes, with a
  // result saying why; a writer still holding one gets EIO on its next write.
  IncomingLimits limits;
  limits.idle_timeout = std::chrono::seconds(1);
  incoming_->SetLimits(limits);
  auto open = ns_->CreateSpool(Publisher(), incoming->ino, *incoming->node, "slow.pack", true);
  ASSERT_FALSE(open.ok()) << "still at 64";
  std::this_thread::sleep_for(std::chrono::milliseconds(1100));
  std::vector<std::string> names = Names("incoming");
  EXPECT_EQ(std::count_if(names.begin(), names.end(), [](const std::string& n) { return n.ends_with(".result"); }),
            65) << "64 expired staged packs and b.pack";
  EXPECT_TRUE(HasResult(".e2"));
  EXPECT_NE(ResultOf(".e2").find("nothing written to it for 1 s"), std::string::npos) << ResultOf(".e2");
  auto slow = ns_->CreateSpool(Publisher(), incoming->ino, *incoming->node, "slow.pack", true);
  ASSERT_TRUE(slow.ok()) << slow.status().ToString();
  std::this_thread::sleep_for(std::chrono::milliseconds(1100));
  (void)Names("incoming");
  Status w = ns_->WriteSpool(slow->spool, bytes.data(), bytes.size(), 0);
  EXPECT_TRUE(w.Is(Code::kIOError)) << w.ToString();
  EXPECT_TRUE(HasResult("slow.pack"));
  ns_->ReleaseSpoolWriter(Publisher(), slow->spool);
}

// Issue 9.7: alice `cp x .a`; bob `cp evil .b && mv -f .b .a`; alice `mv .a
// a.pack` committed bob's content as alice. Bob could also rm her pack before
// her close, rm her .result, rename her pack mid-write. A file in incoming/
// belongs to its creator; root (and the mounting user) may change it.
TEST_F(NamespaceTest, APackAndItsResultBelongToTheirCreator) {
  Apply(AppSpec('z'));  // the hook exists
  auto incoming = Walk("incoming");
  ASSERT_TRUE(incoming.ok());
  Ino in = incoming->ino;
  const Node& dir = *incoming->node;
  std::string mine = AppSpec('a').Bytes();
  ObjectId mine_root = root_;
  std::string evil = AppSpec('e').Bytes();
  auto a = ns_->CreateSpool(Publisher(), in, dir, ".a", true);
  ASSERT_TRUE(a.ok());
  ASSERT_TRUE(ns_->WriteSpool(a->spool, mine.data(), mine.size(), 0).ok());
  auto b = ns_->CreateSpool(Bob(), in, dir, ".b", true);
  ASSERT_TRUE(b.ok());
  ASSERT_TRUE(ns_->WriteSpool(b->spool, evil.data(), evil.size(), 0).ok());
  // mv -f .b .a, a create over her name, opening or truncating hers, rm.
  EXPECT_TRUE(ns_->Rename(Bob(), in, dir, ".b", ".a", false).Is(Code::kPermissionDenied));
  EXPECT_TRUE(ns_->CreateSpool(Bob(), in, dir, ".a", false).status().Is(Code::kPermissionDenied));
  auto node_a = Walk("incoming/.a");
  ASSERT_TRUE(node_a.ok());
  EXPECT_TRUE(ns_->OpenSpool(Bob(), *node_a->node, true, true).status().Is(Code::kPermissionDenied));
  EXPECT_TRUE(ns_->TruncateSpool(Bob(), a->spool, 0).Is(Code::kPermissionDenied));
  EXPECT_TRUE(ns_->Unlink(Bob(), in, dir, ".a").Is(Code::kPermissionDenied));
  // Renaming her pack (mid-write or not) to publish it.
  EXPECT_TRUE(ns_->Rename(Bob(), in, dir, ".a", "x.pack", false).Is(Code::kPermissionDenied));
  EXPECT_TRUE(ns_->FlushSpool(Publisher(), a->spool).ok());
  ns_->ReleaseSpoolWriter(Publisher(), a->spool);
  Status v = ns_->Rename(Publisher(), in, dir, ".a", "a.pack", false);
  ASSERT_TRUE(v.ok()) << v.ToString();
  auto rel = catalog_->Release(ReleaseRef{*HookName::Make("app"), 2});
  ASSERT_TRUE(rel.ok()) << rel.status().ToString();
  EXPECT_EQ(rel->digest, mine_root) << "her content";
  EXPECT_EQ(rel->published_by, 2000u);
  // Her result: bob can neither remove it nor publish over it.
  EXPECT_TRUE(ns_->Unlink(Bob(), in, dir, "a.pack.result").Is(Code::kPermissionDenied));
  EXPECT_TRUE(HasResult("a.pack"));
  EXPECT_TRUE(ns_->CreateSpool(Bob(), in, dir, "a.pack", true).status().Is(Code::kPermissionDenied));
  EXPECT_TRUE(ns_->Rename(Bob(), in, dir, ".b", "a.pack", false).Is(Code::kPermissionDenied));
  // Root may.
  EXPECT_TRUE(ns_->Unlink(Root(), in, dir, ".b").ok());
  EXPECT_TRUE(ns_->Unlink(Root(), in, dir, "a.pack.result").ok());
  EXPECT_FALSE(HasResult("a.pack"));
  ns_->ReleaseSpoolWriter(Bob(), b->spool);
}

// Issue 9.10: alice opened a pack and passed the descriptor to a non-member,
// whose writes and close committed with the non-member's uid. A pack is
// published as its creator, whoever writes or closes it.
TEST_F(NamespaceTest, APackIsPublishedAsItsCreator) {
  auto incoming = Walk("incoming");
  ASSERT_TRUE(incoming.ok());
  std::string bytes = AppSpec('a').Bytes();
  auto c = ns_->CreateSpool(Publisher(), incoming->ino, *incoming->node, "passed.pack", true);
  ASSERT_TRUE(c.ok());
  ASSERT_TRUE(ns_->WriteSpool(c->spool, bytes.data(), bytes.size(), 0).ok());
  Status v = ns_->FlushSpool(Outsider(), c->spool);  // the descriptor's new holder closes
  ASSERT_TRUE(v.ok()) << v.ToString();
  ns_->ReleaseSpoolWriter(Outsider(), c->spool);
  auto rel = catalog_->Release(ReleaseRef{*HookName::Make("app"), 1});
  ASSERT_TRUE(rel.ok());
  EXPECT_EQ(rel->published_by, 2000u);
  std::string journal;
  ASSERT_TRUE(catalog_->ReadJournal(0, [&](uint64_t, std::string_view l) {
    journal += std::string(l) + "\n";
    return true;
  }).ok());
  EXPECT_NE(journal.find("\"uid\":2000"), std::string::npos) << journal;
  EXPECT_EQ(journal.find("\"uid\":3000"), std::string::npos) << journal;
}

// Issue 9.8 and 9.9: temporaries are dot-names or CuXXXXXX, at most 64 per
// user (EDQUOT), only their creator renames or removes them, gone after the
// TTL; any other non-pointer name is EINVAL (`ln -s ../releases/1 tags/UPPER`).
TEST_F(NamespaceTest, TemporarySymlinksArePerUserAndOtherNamesAreRefused) {
  Apply(AppSpec('a'));
  Make(64u << 20, std::chrono::seconds(1));
  auto hook = Walk("hooks/app");
  auto tags = Walk("hooks/app/tags");
  ASSERT_TRUE(hook.ok() && tags.ok());
  auto upper = ns_->Symlink(Publisher(), "../releases/1", tags->ino, *tags->node, "UPPER");
  EXPECT_TRUE(upper.status().Is(Code::kInvalidArgument)) << upper.status().ToString();
  EXPECT_TRUE(Names("hooks/app/tags").empty());
  EXPECT_TRUE(ns_->Symlink(Publisher(), "releases/1", hook->ino, *hook->node, "other").status()
                  .Is(Code::kInvalidArgument));
  EXPECT_TRUE(ns_->Symlink(Publisher(), "releases/1", hook->ino, *hook->node, "CuABC").status()
                  .Is(Code::kInvalidArgument)) << "Cu and fewer than six characters is no temporary";
  for (int i = 0; i < 64; ++i) {
    auto t = ns_->Symlink(Publisher(), "releases/1", hook->ino, *hook->node, ".t" + std::to_string(i));
    ASSERT_TRUE(t.ok()) << i << ": " << t.status().ToString();
  }
  auto over = ns_->Symlink(Publisher(), "releases/1", hook->ino, *hook->node, "CuOVER64");
  EXPECT_TRUE(over.status().Is(Code::kQuota)) << over.status().ToString();
  // Another user (root too) still moves live through a temporary.
  ASSERT_TRUE(ns_->Symlink(Bob(), "releases/1", hook->ino, *hook->node, "CuBOB123").ok());
  EXPECT_TRUE(ns_->Rename(Bob(), hook->ino, *hook->node, "CuBOB123", "live", false).ok());
  // Bob may not take or remove alice's.
  EXPECT_TRUE(ns_->Rename(Bob(), hook->ino, *hook->node, ".t0", "live", false).Is(Code::kPermissionDenied));
  EXPECT_TRUE(ns_->Unlink(Bob(), hook->ino, *hook->node, ".t1").Is(Code::kPermissionDenied));
  EXPECT_TRUE(ns_->Rename(Publisher(), hook->ino, *hook->node, ".t2", "NotTemp", false).Is(Code::kInvalidArgument));
  EXPECT_TRUE(ns_->Unlink(Publisher(), hook->ino, *hook->node, ".t1").ok());
  // After the TTL they are gone, and the quota with them.
  std::this_thread::sleep_for(std::chrono::milliseconds(1100));
  EXPECT_FALSE(Walk("hooks/app/.t3").ok());
  auto after = ns_->Symlink(Publisher(), "../releases/1", tags->ino, *tags->node, ".s");
  EXPECT_TRUE(after.ok()) << after.status().ToString();
}

// Issue 9.6: a name with a newline and a fake `<N>` priority must not forge a
// log line: one escaped line.
TEST(LogSafeTest, ControlCharactersAreEscaped) {
  EXPECT_EQ(LogSafe("evil\n<3>2026-11-29T17:40:00.000 info FAKE\r\t\x1b[1m\\"),
            "evil\\n<3>2026-11-29T17:40:00.000 info FAKE\\r\\t\\x1b[1m\\\\");
  EXPECT_EQ(LogSafe("app-1.pack"), "app-1.pack");
  EXPECT_EQ(LogSafe(std::string("a\0b", 3)), "a\\x00b");
  EXPECT_EQ(LogSafe("\x7f"), "\\x7f");
}

// Issue 8 (e): a missing object that a release names is damage: EIO (logged),
// never "no such file", never remembered.
TEST_F(NamespaceTest, AMissingObjectIsAnErrorNotAnAbsence) {
  Apply(AppSpec('a'));
  auto bin = Walk("hooks/app/releases/1/bin");
  ASSERT_TRUE(bin.ok());
  ObjectId blob = bin->node->id;
  {
    auto txn = store_->BeginWrite();
    ASSERT_TRUE(txn.ok());
    ASSERT_TRUE(txn->Del(store_->tables().trees, etc_.AsKey()).ok());
    ASSERT_TRUE(txn->Del(store_->tables().blobs, blob.AsKey()).ok());
    ASSERT_TRUE(txn->Commit().ok());
  }
  auto conf = Walk("hooks/app/releases/1/etc/app.conf");
  EXPECT_TRUE(conf.status().Is(Code::kCorruption)) << conf.status().ToString();
  auto etc = Walk("hooks/app/releases/1/etc");
  ASSERT_TRUE(etc.ok());
  EXPECT_TRUE(ns_->Children(etc->ino, *etc->node).status().Is(Code::kCorruption));
  auto view = store_->Read();
  ASSERT_TRUE(view.ok());
  std::vector<std::span<const uint8_t>> spans;
  Status r = ns_->ReadBlob(*view, blob, 0, 4096, &spans);
  EXPECT_TRUE(r.Is(Code::kCorruption)) << r.ToString();
  // Nothing was remembered: once the tree is back, the path resolves.
  Apply(AppSpec('a'));
  conf = Walk("hooks/app/releases/1/etc/app.conf");
  EXPECT_TRUE(conf.ok()) << conf.status().ToString();
}

// Issue 8 (j): the trampolines' catch-all replied EIO even when the handler
// had already replied and then threw. This is the trampoline's shape
// (hookfs_fs.cc Tramp::Fn) over the guard every adapter reply goes through.
TEST(ReplyOnceTest, TheCatchAllRepliesOnlyWhenTheHandlerHadNot) {
  int req = 0, other = 0;
  std::vector<std::string> sent;
  auto reply = [&](const void* r, const char* what) {
    if (ReplyScope::Claim(r)) sent.push_back(what);
  };
  auto trampoline = [&](const std::function<void()>& handler) {
    ReplyScope scope(&req);
    try {
      handler();
    } catch (...) {
      reply(&req, "EIO");
    }
  };
  trampoline([&] {
    reply(&req, "entry");
    throw std::runtime_error("thrown after the reply");
  });
  EXPECT_EQ(sent, (std::vector<std::string>{"entry"}));
  trampoline([&] { throw std::runtime_error("thrown before any reply"); });
  EXPECT_EQ(sent, (std::vector<std::string>{"entry", "EIO"}));
  // A handler that hands its request to another thread claims it; the job
  // there answers it once.
  trampoline([&] {
    ReplyScope::Claim(&req);
    std::thread([&] { reply(&req, "verdict"); }).join();
    throw std::runtime_error("thrown after the hand-off");
  });
  EXPECT_EQ(sent, (std::vector<std::string>{"entry", "EIO", "verdict"}));
  // Another request's reply from inside a handler is not this one's.
  trampoline([&] {
    reply(&other, "other");
    reply(&req, "mine");
  });
  EXPECT_EQ(sent.back(), "mine");
}

TEST(PublishQueueTest, JobsRunOffTheCallerBoundedAndDrainedOnStop) {
  PublishQueue q(2, 2);
  std::mutex mu;
  std::condition_variable cv;
  bool go = false;
  std::atomic<int> done{0};
  std::set<std::thread::id> threads;
  for (int i = 0; i < 2; ++i) {
    q.Submit([&] {
      {
        std::unique_lock<std::mutex> l(mu);
        threads.insert(std::this_thread::get_id());
        cv.wait(l, [&] { return go; });
      }
      ++done;
    });
  }
  // Both workers are busy; two more wait in the queue; Submit did not block.
  q.Submit([&] { ++done; });
  q.Submit([&] { ++done; });
  EXPECT_EQ(done.load(), 0);
  {
    std::lock_guard<std::mutex> l(mu);
    go = true;
  }
  cv.notify_all();
  q.Stop();
  EXPECT_EQ(done.load(), 4);
  EXPECT_FALSE(threads.count(std::this_thread::get_id()));
  q.Submit([&] { ++done; });  // after Stop: runs on the caller
  EXPECT_EQ(done.load(), 5);
}

}  // namespace
}  // namespace hookfs::fs
