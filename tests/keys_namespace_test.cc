// keys/, pruned releases, run.json provenance and the daemon's retention
// thread through the namespace layer (DESIGN.md §2, §4, §7, §8), without FUSE.
#include <sys/stat.h>

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <thread>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "hookfs/apply.h"
#include "hookfs/keys.h"
#include "hookfs/ledger.h"
#include "hookfs/namespace.h"
#include "namespace_walk.h"
#include "hookfs/retention.h"
#include "hookfs/signature.h"
#include "incoming.h"
#include "inode_table.h"
#include "retainer.h"
#include "test_util.h"

namespace hookfs::fs {
namespace {

using nlohmann::json;
using test::File;
using test::PackSpec;
using test::TempDir;

constexpr uid_t kOwner = 1000;
constexpr gid_t kPublishGroup = 500;
constexpr gid_t kRunGroup = 501;
constexpr gid_t kAdminGroup = 502;

class NullNotifier : public Notifier {
 public:
  void EntryChanged(Ino, const std::string&) override {}
  void InodeChanged(Ino) override {}
};

// In admin_group through a supplementary group only.
Caller Admin() { return Caller{2500, 2500, 5, [] { return std::vector<gid_t>{42, kAdminGroup}; }}; }
// May publish and run, but is no admin.
Caller Publisher() { return Caller{2000, kPublishGroup, 2, [] { return std::vector<gid_t>{kRunGroup}; }}; }

class KeysNamespaceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    store_ = test::OpenStore(dir_ / "store");
    ASSERT_NE(store_, nullptr);
    ledger_ = std::make_unique<Ledger>(store_.get());
    incoming_ = std::make_unique<Incoming>(ledger_.get(), store_->staging_dir(), store_->dir() + "/results");
    ASSERT_TRUE(incoming_->Init().ok());
    catalog_ = std::make_unique<LedgerCatalog>(ledger_.get(), "host-7");
    NamespaceOptions o;
    o.policy.owner_uid = kOwner;
    o.policy.owner_gid = kOwner;
    o.policy.publish_gid = kPublishGroup;
    o.policy.run_gid = kRunGroup;
    o.policy.admin_gid = kAdminGroup;
    ns_ = std::make_unique<Namespace>(o, store_.get(), catalog_.get(), incoming_.get(), &notes_);
    ASSERT_TRUE(GenerateKeyFiles(dir_ / "ci").ok());
    pem_ = test::ReadFile(dir_ / "ci.pub");
  }

  void Publish(const std::string& seed) {
    PackSpec spec;
    spec.hooks.push_back({"app", "feat"});
    spec.Blob("content " + seed);
    ObjectId root = spec.AddTree({File("run", "content " + seed, true)});
    spec.Release("app", root);
    spec.releases.back().source_ref = "git:" + seed;
    std::string path = dir_ / ("p" + seed + ".pack");
    spec.WriteTo(path);
    ApplyReport r = ApplyPackFile(ledger_.get(), path, {});
    ASSERT_TRUE(r.Verdict().ok()) << r.Verdict().ToString();
  }

  Result<Entry> Walk(const std::string& path) { return WalkPath(*ns_, path); }
  std::vector<std::string> Names(const std::string& path) { return ListNames(*ns_, path); }
  std::string Doc(std::vector<std::string> hooks) { return json{{"public_key", pem_}, {"hooks", hooks}}.dump(); }
  // What `cp doc MNT/keys/NAME` does: create, then commit on close.
  Status Write(const Caller& who, const std::string& name, const std::string& doc) {
    auto keys = Walk("keys");
    if (!keys.ok()) return keys.status();
    auto created = ns_->CreateKey(who, keys->ino, *keys->node, name);
    if (!created.ok()) return created.status();
    return ns_->CommitKey(who, *created->node, doc);
  }

  TempDir dir_;
  std::unique_ptr<Store> store_;
  std::unique_ptr<Ledger> ledger_;
  std::unique_ptr<Incoming> incoming_;
  std::unique_ptr<LedgerCatalog> catalog_;
  NullNotifier notes_;
  std::unique_ptr<Namespace> ns_;
  std::string pem_;
};

TEST_F(KeysNamespaceTest, AdminsTrustListShowAndRevokeKeys) {
  auto root = ns_->Children(kRootIno, *ns_->Get(kRootIno));
  ASSERT_TRUE(root.ok());
  EXPECT_EQ(root->back().name, "keys");
  auto keys = Walk("keys");
  ASSERT_TRUE(keys.ok());
  EXPECT_EQ(keys->attr.st_mode, S_IFDIR | 0775u);
  EXPECT_EQ(keys->attr.st_gid, kAdminGroup);
  EXPECT_TRUE(Names("keys").empty());

  // Not an admin: EACCES at create and at close, nothing changes.
  EXPECT_TRUE(Write(Publisher(), "ci", Doc({"app"})).Is(Code::kPermissionDenied));
  Node key;
  key.kind = Kind::kKey;
  key.name = "ci";
  EXPECT_TRUE(ns_->CheckWriteKey(Publisher(), key).Is(Code::kPermissionDenied));
  // Malformed documents, bad keys, bad patterns: EINVAL, nothing changes.
  for (const std::string& bad :
       {std::string(""), std::string("{"), Doc({"app/x"}), Doc({"[app"}), Doc({"ap^p"}),
        json{{"public_key", "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"}, {"hooks", {"app"}}}.dump(),
        json{{"public_key", pem_}, {"hooks", {"app"}}, {"extra", 1}}.dump()}) {
    EXPECT_TRUE(Write(Admin(), "ci", bad).Is(Code::kInvalidArgument)) << bad;
  }
  EXPECT_TRUE(Names("keys").empty());
  EXPECT_TRUE(Write(Admin(), "Bad/Name", Doc({"app"})).Is(Code::kInvalidArgument));

  ASSERT_TRUE(Write(Admin(), "ci", Doc({"app", "etl-*"})).ok());
  EXPECT_EQ(Names("keys"), std::vector<std::string>{"ci"});
  auto ci = Walk("keys/ci");
  ASSERT_TRUE(ci.ok());
  EXPECT_EQ(ci->attr.st_mode, S_IFREG | 0664u);
  EXPECT_EQ(ci->attr.st_gid, kAdminGroup);
  auto text = ns_->Content(*ci->node);
  ASSERT_TRUE(text.ok());
  EXPECT_EQ(ci->attr.st_size, static_cast<off_t>(text->size()));
  json j = json::parse(*text);
  EXPECT_EQ(j["name"], "ci");
  EXPECT_EQ(j["hooks"], json({"app", "etl-*"}));
  EXPECT_EQ(j["key_id"].get<std::string>().size(), 64u);
  EXPECT_EQ(j["added_by"], 2500);
  EXPECT_TRUE(j.contains("added_at"));
  // What cat shows can be written back as it is.
  EXPECT_TRUE(Write(Admin(), "ci", *text).ok());

  EXPECT_TRUE(ns_->Unlink(Publisher(), keys->ino, *keys->node, "ci").Is(Code::kPermissionDenied));
  EXPECT_EQ(Names("keys").size(), 1u);
  ASSERT_TRUE(ns_->Unlink(Admin(), keys->ino, *keys->node, "ci").ok());
  EXPECT_TRUE(Names("keys").empty());
  EXPECT_TRUE(Walk("keys/ci").status().Is(Code::kNotFound));
  EXPECT_TRUE(ns_->Unlink(Admin(), keys->ino, *keys->node, "ci").Is(Code::kNotFound));
}

TEST_F(KeysNamespaceTest, TrustingAKeyPinsTheHooksItCovers) {
  Publish("a");
  ASSERT_TRUE(Write(Admin(), "ci", Doc({"app"})).ok());
  auto hj = Walk("hooks/app/hook.json");
  ASSERT_TRUE(hj.ok());
  EXPECT_EQ(json::parse(*ns_->Content(*hj->node))["pinned"], true);
  auto rj = Walk("hooks/app/releases/1.json");
  ASSERT_TRUE(rj.ok());
  EXPECT_TRUE(json::parse(*ns_->Content(*rj->node))["signed_by"].is_null());
}

TEST_F(KeysNamespaceTest, APrunedReleaseKeepsItsJsonAndIsNoPointerTarget) {
  Publish("a");
  Publish("b");
  Publish("c");
  RetentionOptions ro;
  ro.keep = 1;
  auto pr = PruneReleases(store_.get(), ro);
  ASSERT_TRUE(pr.ok()) << pr.status().ToString();
  EXPECT_EQ(Names("hooks/app/releases"), (std::vector<std::string>{"1.json", "2.json", "3", "3.json"}));
  EXPECT_TRUE(Walk("hooks/app/releases/1").status().Is(Code::kNotFound));
  auto j1 = Walk("hooks/app/releases/1.json");
  ASSERT_TRUE(j1.ok());
  EXPECT_EQ(json::parse(*ns_->Content(*j1->node))["pruned"], true);
  auto hook = Walk("hooks/app");
  ASSERT_TRUE(hook.ok());
  ASSERT_TRUE(ns_->Symlink(Publisher(), "releases/1", hook->ino, *hook->node, "CuXXXXXX").ok());
  EXPECT_TRUE(ns_->Rename(Publisher(), hook->ino, *hook->node, "CuXXXXXX", "live", false).Is(Code::kInvalidArgument));
  EXPECT_EQ(*catalog_->Live(*HookName::Make("app")), std::optional<uint32_t>(3));
}

TEST_F(KeysNamespaceTest, RunJsonCarriesEveryProvenanceField) {
  Publish("a");
  auto runs = Walk("hooks/app/runs");
  ASSERT_TRUE(runs.ok());
  ASSERT_TRUE(ns_->MakeRun(Publisher(), runs->ino, *runs->node, "r1").ok());
  auto rj = Walk("hooks/app/runs/r1/run.json");
  ASSERT_TRUE(rj.ok());
  json j = json::parse(*ns_->Content(*rj->node));
  for (const char* k : {"hook", "run", "version", "digest", "feature", "source_ref", "host", "started_at",
                        "started_by", "status", "finished_at", "duration_s", "exit_code", "oom_retries", "note"}) {
    EXPECT_TRUE(j.contains(k)) << k;
  }
  EXPECT_EQ(j["hook"], "app");
  EXPECT_EQ(j["run"], "r1");
  EXPECT_EQ(j["version"], 1);
  EXPECT_EQ(j["feature"], "feat");
  EXPECT_EQ(j["source_ref"], "git:a");
  EXPECT_EQ(j["host"], "host-7");
  EXPECT_EQ(j["started_by"], 2000);
}

TEST_F(KeysNamespaceTest, TheRetainerPrunesAtStartAndAfterEachKick) {
  Publish("a");
  Publish("b");
  std::mutex mu;
  std::condition_variable cv;
  uint64_t passes = 0;
  Retainer r(store_.get(), 1, [&] {
    std::lock_guard<std::mutex> l(mu);
    ++passes;
    cv.notify_all();
  });
  auto wait = [&](uint64_t n) {
    std::unique_lock<std::mutex> l(mu);
    return cv.wait_for(l, std::chrono::seconds(30), [&] { return passes >= n; });
  };
  ASSERT_TRUE(wait(1));
  EXPECT_TRUE(ledger_->GetRelease("app", 1)->pruned);
  EXPECT_FALSE(ledger_->GetRelease("app", 2)->pruned);
  Publish("c");
  r.Kick();
  ASSERT_TRUE(wait(2));
  EXPECT_TRUE(ledger_->GetRelease("app", 2)->pruned);
  EXPECT_FALSE(ledger_->GetRelease("app", 3)->pruned);
}

}  // namespace
}  // namespace hookfs::fs
