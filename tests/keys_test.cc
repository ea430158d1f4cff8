// Signed releases and scoped keys (DESIGN.md §8), retention (§7) and run
// provenance (§2) below the FUSE layer.
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <set>
#include <thread>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <openssl/evp.h>
#include <openssl/pem.h>

#include "hookfs/apply.h"
#include "hookfs/fsck.h"
#include "hookfs/keys.h"
#include "hookfs/ledger.h"
#include "hookfs/retention.h"
#include "hookfs/signature.h"
#include "test_util.h"

namespace hookfs {
namespace {

using nlohmann::json;
using test::Dir;
using test::File;
using test::PackSpec;
using test::TempDir;
using Kind = ReleaseOutcome::Kind;

ObjectId NoTimes(const ReleaseRecord& r) { return TimesDigest(r.hook, r.root, 0, {}); }

// PEM of a freshly generated key of another algorithm (X25519 is the
// dangerous look-alike: 32 raw bytes too).
std::string OtherKeyPem(const char* alg) {
  EVP_PKEY* k = std::string(alg) == "EC" ? EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-256")
                                          : EVP_PKEY_Q_keygen(nullptr, nullptr, alg);
  if (!k) {
    ADD_FAILURE() << "cannot generate a " << alg << " key";
    return "";
  }
  BIO* b = BIO_new(BIO_s_mem());
  PEM_write_bio_PUBKEY(b, k);
  char* p = nullptr;
  long n = BIO_get_mem_data(b, &p);
  std::string out(p, size_t(n));
  BIO_free(b);
  EVP_PKEY_free(k);
  return out;
}

class KeysTest : public ::testing::Test {
 protected:
  void SetUp() override {
    Open();
    ci_ = MakeKey("ci");
    other_ = MakeKey("other");
  }
  void Open(StoreOptions o = {}) {
    ring_.reset();
    ledger_.reset();
    store_.reset();
    store_ = test::OpenStore(dir_ / "store", std::move(o));
    ASSERT_NE(store_, nullptr);
    ledger_ = std::make_unique<Ledger>(store_.get());
    ring_ = std::make_unique<KeyRing>(store_.get());
  }

  SigningKey MakeKey(const std::string& name) {
    auto pub = GenerateKeyFiles(dir_ / name);
    EXPECT_TRUE(pub.ok()) << pub.status().ToString();
    auto k = SigningKey::Load(dir_ / (name + ".key"));
    EXPECT_TRUE(k.ok()) << k.status().ToString();
    return *k;
  }
  std::string Doc(const SigningKey& k, std::vector<std::string> hooks) {
    return json{{"public_key", k.public_key().Pem()}, {"hooks", hooks}}.dump();
  }
  void Trust(const std::string& name, const SigningKey& k, std::vector<std::string> hooks) {
    auto r = ring_->Add(name, Doc(k, hooks), Actor{0, "root"});
    ASSERT_TRUE(r.ok()) << r.status().ToString();
  }

  // A one-file release of `hook` whose content differs with `seed`.
  PackSpec Spec(const std::string& hook, const std::string& seed, const std::string& feature = "") {
    PackSpec spec;
    spec.hooks.push_back({hook, feature});
    spec.Blob("content " + seed);
    ObjectId sub = spec.AddTree({File("x", "content " + seed)});
    ObjectId root = spec.AddTree({File("run", "content " + seed, true), Dir("sub", sub)});
    spec.Release(hook, root);
    spec.releases.back().message = "msg " + seed;
    spec.releases.back().source_ref = "git:" + seed;
    return spec;
  }
  static std::string Feature(const PackSpec& spec, const std::string& hook) {
    for (const auto& h : spec.hooks)
      if (h.name == hook) return h.feature;
    return "";
  }
  // Signs release i of `spec` with `k` (as the spec stands now).
  void Sign(PackSpec* spec, const SigningKey& k, size_t i = 0) {
    const ReleaseRecord& r = spec->releases[i];
    ObjectId times = NoTimes(r);
    for (const auto& t : spec->times)
      if (t.hook == r.hook && t.root == r.root) times = Sha256::Of(EncodeTimes(t.hook, t.root, t.mtimes));
    auto s = k.SignRelease(r, Feature(*spec, r.hook), times);
    ASSERT_TRUE(s.ok());
    spec->signatures.push_back(EncodeSignature(*s));
  }

  ApplyReport Apply(const PackSpec& spec, ApplyOptions o = {}) {
    std::string path = dir_ / ("p" + std::to_string(++n_) + ".pack");
    spec.WriteTo(path);
    return ApplyPackFile(ledger_.get(), path, o);
  }
  void ExpectRejected(const ApplyReport& rep, size_t i, const std::string& why) {
    ASSERT_GT(rep.releases.size(), i) << rep.ToJson().dump(2);
    EXPECT_EQ(rep.releases[i].kind, Kind::kRejected) << rep.ToJson().dump(2);
    EXPECT_NE(rep.releases[i].reason.find(why), std::string::npos) << rep.releases[i].reason;
  }
  void ExpectClean() {
    auto f = Fsck(store_.get(), {});
    ASSERT_TRUE(f.ok()) << f.status().ToString();
    EXPECT_TRUE(f->clean()) << f->Summary();
  }

  TempDir dir_;
  std::unique_ptr<Store> store_;
  std::unique_ptr<Ledger> ledger_;
  std::unique_ptr<KeyRing> ring_;
  SigningKey ci_, other_;
  int n_ = 0;
};

// ---- keys and signatures, below the store ------------------------------------------

TEST_F(KeysTest, KeygenWritesAPrivateKeyOnlyTheOwnerReadsAndNeverOverwrites) {
  struct stat st;
  ASSERT_EQ(::stat((dir_ / "ci.key").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0600u);
  std::string pem = test::ReadFile(dir_ / "ci.key");
  EXPECT_NE(pem.find("-----BEGIN PRIVATE KEY-----"), std::string::npos);  // PKCS#8
  EXPECT_NE(test::ReadFile(dir_ / "ci.pub").find("-----BEGIN PUBLIC KEY-----"), std::string::npos);
  auto again = GenerateKeyFiles(dir_ / "ci");
  ASSERT_FALSE(again.ok());
  EXPECT_TRUE(again.status().Is(Code::kExists)) << again.status().ToString();
  EXPECT_EQ(test::ReadFile(dir_ / "ci.key"), pem);
  auto pub = PublicKey::FromPem(test::ReadFile(dir_ / "ci.pub"));
  ASSERT_TRUE(pub.ok());
  EXPECT_EQ(pub->raw, ci_.public_key().raw);
  EXPECT_EQ(pub->KeyId(), Sha256::Of(pub->raw.data(), pub->raw.size()));
}

TEST_F(KeysTest, EverySignedFieldBreaksTheSignature) {
  ReleaseRecord r = test::MakeRelease("app", Sha256::Of("root"));
  r.created_at = 1767225600;
  r.source_ref = "git:1";
  r.message = "m";
  const ObjectId times = NoTimes(r);
  auto sig = ci_.Sign(SignedMessage(r, "feat", times));
  ASSERT_TRUE(sig.ok());
  EXPECT_TRUE(ci_.public_key().Verify(SignedMessage(r, "feat", times), *sig));
  EXPECT_FALSE(other_.public_key().Verify(SignedMessage(r, "feat", times), *sig));
  auto changed = [&](auto mutate, const std::string& feature = "feat", ObjectId t = ObjectId()) {
    ReleaseRecord c = r;
    mutate(c);
    return !ci_.public_key().Verify(SignedMessage(c, feature, t == ObjectId() ? NoTimes(c) : t), *sig);
  };
  EXPECT_TRUE(changed([](ReleaseRecord& c) { c.hook = "apq"; }));
  EXPECT_TRUE(changed([](ReleaseRecord& c) { c.root = Sha256::Of("other"); }));
  EXPECT_TRUE(changed([](ReleaseRecord& c) { c.no_advance = true; }));
  EXPECT_TRUE(changed([](ReleaseRecord& c) { c.created_at += 1; }));
  EXPECT_TRUE(changed([](ReleaseRecord& c) { c.source_ref = "git:2"; }));
  EXPECT_TRUE(changed([](ReleaseRecord& c) { c.message = "M"; }));
  EXPECT_TRUE(changed([](ReleaseRecord&) {}, "feaT"));
  EXPECT_TRUE(changed([](ReleaseRecord&) {}, ""));
  // One file's modification time: the times hash differs.
  std::string one(8, '\0');
  one[0] = 1;
  EXPECT_TRUE(changed([](ReleaseRecord&) {}, "feat", TimesDigest(r.hook, r.root, 1, one)));
  // Length prefixes: moving a byte from source_ref to message is a change.
  EXPECT_TRUE(changed([](ReleaseRecord& c) {
    c.source_ref = "git:";
    c.message = "1m";
  }));
  // Not malleable into another signature.
  std::string bad = *sig;
  bad[10] ^= 1;
  EXPECT_FALSE(ci_.public_key().Verify(SignedMessage(r, "feat", times), bad));
  EXPECT_FALSE(ci_.public_key().Verify(SignedMessage(r, "feat", times), sig->substr(0, 63)));
}

TEST_F(KeysTest, MalformedKeyDocumentsAndPatternsAreInvalidArgument) {
  const std::string pem = ci_.public_key().Pem();
  auto bad = [&](const std::string& name, const std::string& doc) {
    auto r = ring_->Add(name, doc, Actor{0, "root"});
    EXPECT_TRUE(!r.ok() && r.status().Is(Code::kInvalidArgument)) << name << " " << doc << " -> "
                                                                  << (r.ok() ? "ok" : r.status().ToString());
  };
  bad("ci", "not json");
  bad("ci", "[]");
  bad("ci", json{{"hooks", {"app"}}}.dump());
  bad("ci", json{{"public_key", pem}}.dump());
  bad("ci", json{{"public_key", pem}, {"hooks", json::array()}}.dump());
  bad("ci", json{{"public_key", pem}, {"hooks", {1}}}.dump());
  bad("ci", json{{"public_key", pem}, {"hooks", {"app"}}, {"hook", "x"}}.dump());  // unknown member
  bad("ci", json{{"public_key", pem}, {"hooks", {"app"}}, {"key_id", std::string(64, '0')}}.dump());
  bad("ci", json{{"public_key", test::ReadFile(dir_ / "ci.key")}, {"hooks", {"app"}}}.dump());  // private key
  bad("ci", json{{"public_key", pem + pem}, {"hooks", {"app"}}}.dump());  // two blocks
  bad("ci", json{{"public_key", "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"}, {"hooks", {"app"}}}.dump());
  bad("ci", json{{"public_key", OtherKeyPem("X25519")}, {"hooks", {"app"}}}.dump());
  bad("ci", json{{"public_key", OtherKeyPem("ED448")}, {"hooks", {"app"}}}.dump());
  bad("ci", json{{"public_key", OtherKeyPem("EC")}, {"hooks", {"app"}}}.dump());
  bad("CI", Doc(ci_, {"app"}));
  bad(".ci", Doc(ci_, {"app"}));
  bad("c/i", Doc(ci_, {"app"}));
  for (const char* p : {"", "App", "a/b", "[abc", "[", "a]", "[]", "[!]", "a^", "[^a]pp", "a\\*", "a b", "a\nb",
                        "[a*]", "[a[]", "x{a,b}"})
    bad("ci", Doc(ci_, {"app", p}));
  bad("ci", Doc(ci_, {std::string(256, 'a')}));
  EXPECT_TRUE(ring_->List()->empty());
  for (const char* p : {"app", "*", "etl-*", "a?p", "[a-c]pp", "[!b]pp", "x.y_z-1", "[.]"})
    EXPECT_TRUE(ValidateHookPattern(p).ok()) << p;
  EXPECT_TRUE(PatternMatches("etl-*", "etl-daily"));
  EXPECT_FALSE(PatternMatches("etl-*", "etl"));
  EXPECT_TRUE(PatternMatches("[!b]pp", "app"));
  EXPECT_FALSE(PatternMatches("[!b]pp", "bpp"));
  // The same key under a second name is refused; under its own name it is replaced.
  Trust("ci", ci_, {"app"});
  bad("ci2", Doc(ci_, {"db"}));
  Trust("ci", ci_, {"app", "db"});
  EXPECT_EQ(ring_->Get("ci")->hooks, (std::vector<std::string>{"app", "db"}));
  // What `cat` shows can be written back.
  auto shown = ToJson(*ring_->Get("ci"));
  EXPECT_EQ(shown["key_id"], ci_.public_key().KeyId().Hex());
  EXPECT_TRUE(ring_->Add("ci", shown.dump(), Actor{0, "root"}).ok());
}

TEST_F(KeysTest, AddAndRemoveAreJournaledAndInHistory) {
  Trust("ci", ci_, {"app"});
  ASSERT_TRUE(ring_->Remove("ci", Actor{7, "u"}).ok());
  EXPECT_TRUE(ring_->Remove("ci", Actor{7, "u"}).Is(Code::kNotFound));
  auto h = ring_->History();
  ASSERT_TRUE(h.ok());
  ASSERT_EQ(h->size(), 2u);
  EXPECT_EQ((*h)[0]["action"], "add");
  EXPECT_EQ((*h)[1]["action"], "remove");
  EXPECT_EQ((*h)[1]["uid"], 7);
  EXPECT_EQ((*h)[1]["key_id"], ci_.public_key().KeyId().Hex());
  int keys = 0;
  ASSERT_TRUE(ledger_->ReadJournal(1, [&](uint64_t, std::string_view line) {
    keys += json::parse(line).value("event", "") == "key";
    return true;
  }).ok());
  EXPECT_EQ(keys, 2);
}

// ---- apply ----------------------------------------------------------------------

TEST_F(KeysTest, UnpinnedHooksNeedNoSignature) {
  ApplyReport rep = Apply(Spec("app", "1"));
  ASSERT_TRUE(rep.Verdict().ok()) << rep.ToJson().dump(2);
  auto rel = ledger_->GetRelease("app", 1);
  ASSERT_TRUE(rel.ok());
  EXPECT_FALSE(rel->signed_by);
  EXPECT_TRUE(ToJson(*rel)["signed_by"].is_null());
  EXPECT_FALSE(ledger_->GetHook("app")->pinned);
}

TEST_F(KeysTest, PinnedHookAcceptsOnlyAValidSignatureByACoveringKey) {
  Trust("ci", ci_, {"app", "etl-*"});
  Trust("other", other_, {"db"});
  // Unsigned.
  ExpectRejected(Apply(Spec("app", "1")), 0, "no signature");
  // Signed by a key the store does not know.
  SigningKey stranger = MakeKey("stranger");
  PackSpec s = Spec("app", "1");
  Sign(&s, stranger);
  ExpectRejected(Apply(s), 0, "not trusted");
  // Signed by a trusted key scoped to another hook.
  s = Spec("app", "1");
  Sign(&s, other_);
  ExpectRejected(Apply(s), 0, "signed by key 'other' which does not cover hook 'app'");
  // A signature over a changed message, source_ref, created_at, no_advance, feature.
  for (int field = 0; field < 5; ++field) {
    s = Spec("app", "1");
    Sign(&s, ci_);
    ReleaseRecord& r = s.releases[0];
    if (field == 0) r.message += "!";
    if (field == 1) r.source_ref += "!";
    if (field == 2) r.created_at += 1;
    if (field == 3) r.no_advance = true;
    if (field == 4) s.hooks[0].feature = "other";
    ExpectRejected(Apply(s), 0, "does not verify");
  }
  // A signature over another digest: the record names the signed root, the
  // release another one.
  s = Spec("app", "1");
  PackSpec t = Spec("app", "2");
  Sign(&t, ci_);
  auto sig = DecodeSignature(t.signatures[0]);
  ASSERT_TRUE(sig.ok());
  sig->root = s.releases[0].root;
  s.signatures.push_back(EncodeSignature(*sig));
  ExpectRejected(Apply(s), 0, "does not verify");
  // Another algorithm, or a record that does not decode, counts as none.
  s = Spec("app", "1");
  Sign(&s, ci_);
  auto alg = DecodeSignature(s.signatures[0]);
  alg->algorithm = 2;
  s.signatures[0] = EncodeSignature(*alg);
  s.signatures.push_back("garbage");
  ExpectRejected(Apply(s), 0, "counts as none");
  EXPECT_FALSE(ledger_->GetRelease("app", 1).ok());
  // And the real thing.
  s = Spec("app", "1");
  Sign(&s, ci_);
  ApplyReport ok = Apply(s);
  ASSERT_TRUE(ok.Verdict().ok()) << ok.ToJson().dump(2);
  auto rel = ledger_->GetRelease("app", 1);
  ASSERT_TRUE(rel.ok() && rel->signed_by);
  EXPECT_EQ(rel->signed_by->key, "ci");
  EXPECT_EQ(rel->signed_by->key_id, ci_.public_key().KeyId().Hex());
  EXPECT_EQ(ToJson(*rel)["signed_by"]["key"], "ci");
  EXPECT_TRUE(ledger_->GetHook("app")->pinned);  // created under a covering key
  EXPECT_TRUE(ToJson(*ledger_->GetHook("app"))["pinned"].get<bool>());
  ExpectClean();
}

TEST_F(KeysTest, ASignatureCoversTheFilesModificationTimes) {
  Trust("ci", ci_, {"app"});
  auto with_times = [&](const std::string& seed, std::vector<int64_t> mtimes) {
    PackSpec s = Spec("app", seed);
    s.times.push_back({"app", s.releases[0].root, std::move(mtimes)});
    return s;
  };
  // Times changed after signing.
  PackSpec s = with_times("1", {100, 200});
  Sign(&s, ci_);
  s.times[0].mtimes[1] = 201;
  ExpectRejected(Apply(s), 0, "does not verify");
  // Times stripped after signing.
  s = with_times("1", {100, 200});
  Sign(&s, ci_);
  s.times.clear();
  ExpectRejected(Apply(s), 0, "does not verify");
  // Times added to a release signed without.
  s = Spec("app", "1");
  Sign(&s, ci_);
  s.times.push_back({"app", s.releases[0].root, {100, 200}});
  ExpectRejected(Apply(s), 0, "does not verify");
  // As signed.
  s = with_times("1", {100, 200});
  Sign(&s, ci_);
  ApplyReport rep = Apply(s);
  ASSERT_TRUE(rep.Verdict().ok()) << rep.ToJson().dump(2);
  EXPECT_EQ(ledger_->GetRelease("app", 1)->signed_by->key, "ci");
}

TEST_F(KeysTest, APackMixingGoodAndBadSignaturesCommitsTheGoodRelease) {
  Trust("ci", ci_, {"app", "db"});
  PackSpec a = Spec("app", "1"), d = Spec("db", "2");  // distinct objects: no id twice
  PackSpec s = a;
  s.hooks.push_back(d.hooks[0]);
  for (auto& b : d.blobs) s.blobs.push_back(b);
  for (auto& t : d.trees) s.trees.push_back(t);
  s.releases.push_back(d.releases[0]);
  Sign(&s, ci_, 0);
  Sign(&s, ci_, 1);
  s.releases[1].message = "changed after signing";
  ApplyReport rep = Apply(s);
  EXPECT_TRUE(rep.Verdict().Is(Code::kMalformed));
  ASSERT_EQ(rep.releases.size(), 2u) << rep.ToJson().dump(2);
  EXPECT_EQ(rep.releases[0].kind, Kind::kAccepted) << rep.ToJson().dump(2);
  ExpectRejected(rep, 1, "does not verify");
  EXPECT_TRUE(ledger_->GetRelease("app", 1).ok());
  EXPECT_FALSE(ledger_->GetHook("db").ok());  // all its releases rejected: not created
  ExpectClean();
}

TEST_F(KeysTest, RevocationRefusesNewReleasesKeepsCommittedOnesAndNeverUnpins) {
  ASSERT_TRUE(Apply(Spec("app", "0")).Verdict().ok());  // before any key: unsigned
  Trust("ci", ci_, {"app"});
  EXPECT_TRUE(ledger_->GetHook("app")->pinned);  // an existing hook is pinned by the key
  PackSpec s = Spec("app", "1");
  Sign(&s, ci_);
  ASSERT_TRUE(Apply(s).Verdict().ok());
  ASSERT_TRUE(ring_->Remove("ci", Actor{0, "root"}).ok());
  // Committed releases stay, with their signer.
  auto rel = ledger_->GetRelease("app", 2);
  ASSERT_TRUE(rel.ok() && rel->signed_by);
  EXPECT_EQ(rel->signed_by->key, "ci");
  // Ever pinned stays pinned: neither signed by the revoked key nor unsigned.
  PackSpec s2 = Spec("app", "2");
  Sign(&s2, ci_);
  ExpectRejected(Apply(s2), 0, "not trusted (unknown or revoked)");
  ExpectRejected(Apply(Spec("app", "3")), 0, "no signature");
  EXPECT_TRUE(ledger_->GetHook("app")->pinned);
  // Rotation: a new key covering the hook.
  Trust("other", other_, {"a*"});
  PackSpec s3 = Spec("app", "3");
  Sign(&s3, other_);
  ASSERT_TRUE(Apply(s3).Verdict().ok());
  EXPECT_EQ(ledger_->GetRelease("app", 3)->signed_by->key, "other");
  ExpectClean();
}

TEST_F(KeysTest, AKeyRevokedWhileAPackIsAppliedCounts) {
  Trust("ci", ci_, {"app"});
  std::atomic<bool> armed{false};
  StoreOptions o;
  o.fault_injector = [&](std::string_view step) {
    if (step == "decided" && armed.exchange(false)) {
      KeyRing ring(store_.get());
      EXPECT_TRUE(ring.Remove("ci", Actor{0, "root"}).ok());
    }
    return Status::OK();
  };
  Open(o);
  PackSpec s = Spec("app", "1");
  Sign(&s, ci_);
  ASSERT_TRUE(Apply(s).Verdict().ok());  // the hook exists, pinned
  armed = true;
  s = Spec("app", "2");
  Sign(&s, ci_);
  ExpectRejected(Apply(s), 0, "not trusted");
  EXPECT_FALSE(armed);
  EXPECT_FALSE(ledger_->GetRelease("app", 2).ok());
}

TEST_F(KeysTest, AKeyAddedWhileAPackIsAppliedPinsItsHooksForThatPack) {
  StoreOptions o;
  o.fault_injector = [&](std::string_view step) {
    if (step == "decided") {
      KeyRing ring(store_.get());
      EXPECT_TRUE(ring.Add("ci", Doc(ci_, {"app"}), Actor{0, "root"}).ok());
    }
    return Status::OK();
  };
  Open(o);
  ExpectRejected(Apply(Spec("app", "1")), 0, "no signature");
  EXPECT_FALSE(ledger_->GetHook("app").ok());  // all its releases rejected: not created
}

TEST_F(KeysTest, ASignatureRecordInAVersionOnePackIsMalformed) {
  PackSpec s = Spec("app", "1");
  Sign(&s, ci_);
  std::string bytes = s.Bytes();
  ASSERT_EQ(bytes[8], 2);
  bytes[8] = 1;
  Xxh3_128 h;
  h.Update(bytes.data(), bytes.size() - 16);
  auto d = h.Digest();
  std::memcpy(bytes.data() + bytes.size() - 16, d.data(), 16);
  test::WriteFile(dir_ / "v1.pack", bytes);
  ApplyReport rep = ApplyPackFile(ledger_.get(), dir_ / "v1.pack", {});
  EXPECT_TRUE(rep.status.Is(Code::kMalformed)) << rep.status.ToString();
  EXPECT_NE(rep.status.message().find("signatures need version 2"), std::string::npos) << rep.status.message();
}

TEST_F(KeysTest, RequireSignedPinsEveryHook) {
  ApplyOptions o;
  o.require_signed = true;
  ExpectRejected(Apply(Spec("app", "1"), o), 0, "no signature");
  PackSpec s = Spec("app", "1");
  Sign(&s, ci_);
  ExpectRejected(Apply(s, o), 0, "not trusted");
  Trust("ci", ci_, {"app"});
  ASSERT_TRUE(Apply(s, o).Verdict().ok());
  // Without the option, a hook no key ever covered needs no signature.
  ASSERT_TRUE(Apply(Spec("db", "1")).Verdict().ok());
}

// ---- retention ----------------------------------------------------------------------

class RetentionTest : public KeysTest {
 protected:
  uint32_t Publish(const std::string& hook, const std::string& seed, bool no_advance = false) {
    PackSpec s = Spec(hook, seed);
    s.releases[0].no_advance = no_advance;
    ApplyReport rep = Apply(s);
    EXPECT_TRUE(rep.Verdict().ok()) << rep.ToJson().dump(2);
    return rep.releases.empty() ? 0 : rep.releases[0].version;
  }
  std::set<uint32_t> Pruned(const std::string& hook) {
    std::set<uint32_t> out;
    auto rels = ledger_->ListReleases(hook);
    EXPECT_TRUE(rels.ok());
    for (const ReleaseInfo& r : rels.value())
      if (r.pruned) out.insert(r.version);
    return out;
  }
  Result<RetentionReport> Keep(uint32_t n, int64_t now = 0) {
    RetentionOptions o;
    o.keep = n;
    o.now = now;
    return ApplyRetention(store_.get(), o);
  }
};

TEST_F(RetentionTest, KeepsNewestLiveTagsOpenAndRecentRunsAndPrunesTheRest) {
  for (int i = 1; i <= 6; ++i) ASSERT_EQ(Publish("app", std::to_string(i)), uint32_t(i));
  Publish("db", "1");
  const Actor me{0, "root"};
  ASSERT_TRUE(ledger_->MoveLive("app", 1, me).ok());
  ASSERT_TRUE(ledger_->StartRun("app", "recent", me).ok());
  ASSERT_TRUE(ledger_->FinishRun("app", "recent", {"succeeded", 0, 0, ""}, me).ok());
  ASSERT_TRUE(ledger_->MoveLive("app", 4, me).ok());
  ASSERT_TRUE(ledger_->StartRun("app", "open", me).ok());
  ASSERT_TRUE(ledger_->SetTag("app", "stable", 3, me).ok());
  ASSERT_TRUE(ledger_->MoveLive("app", 2, me).ok());
  const ObjectId digest5 = ledger_->GetRelease("app", 5)->digest;

  auto rep = Keep(1);
  ASSERT_TRUE(rep.ok()) << rep.status().ToString();
  EXPECT_EQ(Pruned("app"), (std::set<uint32_t>{5}));
  EXPECT_TRUE(Pruned("db").empty());
  EXPECT_EQ(rep->prune.pruned, (std::vector<std::string>{"app/5"}));
  EXPECT_GT(rep->gc.trees_removed, 0u);
  EXPECT_TRUE(ToJson(*ledger_->GetRelease("app", 5))["pruned"].get<bool>());
  {  // its objects are gone, the others' are not
    auto view = store_->Read();
    EXPECT_FALSE(*view->HasTree(digest5));
    EXPECT_TRUE(*view->HasTree(ledger_->GetRelease("app", 6)->digest));
  }
  // A pruned release is no pointer target.
  EXPECT_TRUE(ledger_->MoveLive("app", 5, me).Is(Code::kInvalidArgument));
  EXPECT_TRUE(ledger_->SetTag("app", "canary", 5, me).Is(Code::kInvalidArgument));
  ExpectClean();
  bool journaled = false;
  ASSERT_TRUE(ledger_->ReadJournal(1, [&](uint64_t, std::string_view line) {
    json j = json::parse(line);
    journaled |= j["event"] == "prune" && j["version"] == 5;
    return true;
  }).ok());
  EXPECT_TRUE(journaled);

  // Eight days later the finished run no longer holds release 1; the open one still holds 4.
  rep = Keep(1, NowMs() / 1000 + 8 * 24 * 3600);
  ASSERT_TRUE(rep.ok());
  EXPECT_EQ(Pruned("app"), (std::set<uint32_t>{1, 5}));
  // Versions are never reused; publishing pruned content again mints a new one.
  EXPECT_EQ(Publish("app", "5"), 7u);
  EXPECT_EQ(ledger_->GetRelease("app", 7)->digest, digest5);
  EXPECT_EQ(Publish("app", "7"), 8u);
  ExpectClean();
  // keep=0 is refused.
  EXPECT_TRUE(Keep(0).status().Is(Code::kInvalidArgument));
}

TEST_F(RetentionTest, PruningNeverRacesMovesRunStartsOrPublishes) {
  for (int i = 1; i <= 4; ++i) Publish("app", std::to_string(i));
  const Actor me{0, "root"};
  std::atomic<bool> stop{false};
  std::atomic<int> moves{0}, runs{0}, publishes{0}, refused{0};
  std::vector<std::thread> threads;
  // Moves live and a tag to random versions (some pruned by then: refused).
  threads.emplace_back([&] {
    unsigned seed = 1;
    while (!stop) {
      auto last = ledger_->ListReleases("app");
      uint32_t v = 1 + rand_r(&seed) % uint32_t(last->size());
      Status st = seed % 2 ? ledger_->MoveLive("app", v, me) : ledger_->SetTag("app", "t", v, me);
      if (st.ok()) ++moves;
      else if (st.Is(Code::kInvalidArgument)) ++refused;
      else ADD_FAILURE() << st.ToString();
    }
  });
  threads.emplace_back([&] {
    int i = 0;
    while (!stop) {
      auto r = ledger_->StartRun("app", "r" + std::to_string(i++), me);
      if (!r.ok()) {
        ADD_FAILURE() << r.status().ToString();
        continue;
      }
      ++runs;
      if (i % 2) {
        EXPECT_TRUE(ledger_->FinishRun("app", r->run, {"succeeded", 0, 0, ""}, me).ok());
      }
    }
  });
  threads.emplace_back([&] {
    for (int i = 5; !stop; ++i) {
      PackSpec s = Spec("app", std::to_string(i));
      s.releases[0].no_advance = i % 3 == 0;
      ApplyReport rep = Apply(s);
      // A release may only lose a stored object to gc (and say so), never commit without it.
      if (rep.Verdict().ok()) ++publishes;
      else
        for (const auto& r : rep.releases) EXPECT_NE(r.reason.find("gc"), std::string::npos) << r.reason;
    }
  });
  for (int round = 0; round < 30; ++round) {
    auto rep = Keep(1, NowMs() / 1000 + 30 * 24 * 3600);  // finished runs are all old
    ASSERT_TRUE(rep.ok()) << rep.status().ToString();
  }
  stop = true;
  for (auto& t : threads) t.join();
  EXPECT_GT(moves.load(), 0);
  EXPECT_GT(runs.load(), 0);
  EXPECT_GT(publishes.load(), 0);
  // Nothing anything points at, or an open run uses, was pruned.
  std::set<uint32_t> pruned = Pruned("app");
  EXPECT_FALSE(pruned.empty());
  EXPECT_FALSE(pruned.count(**ledger_->GetLive("app")));
  auto tags = ledger_->ListTags("app");
  ASSERT_TRUE(tags.ok());
  for (const auto& [tag, v] : tags.value()) EXPECT_FALSE(pruned.count(v)) << tag;
  auto all_runs = ledger_->ListRuns("app");
  ASSERT_TRUE(all_runs.ok());
  for (const RunInfo& r : all_runs.value()) {
    if (!r.sealed()) {
      EXPECT_FALSE(pruned.count(r.version)) << r.run;
    }
  }
  ASSERT_TRUE(Keep(1, NowMs() / 1000 + 30 * 24 * 3600).ok());
  ExpectClean();
  std::printf("race: %d moves (%d refused), %d runs, %d publishes, %zu pruned\n", moves.load(), refused.load(),
              runs.load(), publishes.load(), pruned.size());
}

// ---- provenance ------------------------------------------------------------------------

TEST_F(KeysTest, RunJsonCarriesTheWholeProvenance) {
  PackSpec s = Spec("app", "1", "etl:v2");
  s.releases[0].source_ref = "git:abc123";
  ASSERT_TRUE(Apply(s).Verdict().ok());
  auto r = ledger_->StartRun("app", "r1", Actor{5, "u"}, "host-7");
  ASSERT_TRUE(r.ok());
  json j = ToJson(*ledger_->GetRun("app", "r1"));
  EXPECT_EQ(j["hook"], "app");
  EXPECT_EQ(j["run"], "r1");
  EXPECT_EQ(j["version"], 1);
  EXPECT_EQ(j["digest"], s.releases[0].root.Hex());
  EXPECT_EQ(j["feature"], "etl:v2");
  EXPECT_EQ(j["source_ref"], "git:abc123");
  EXPECT_EQ(j["host"], "host-7");
  for (const char* k : {"started_at", "started_by", "status", "finished_at", "duration_s", "exit_code", "oom_retries",
                        "note"})
    EXPECT_TRUE(j.contains(k)) << k;
  auto r2 = ledger_->StartRun("app", "r2", Actor{5, "u"});
  ASSERT_TRUE(r2.ok());
  EXPECT_EQ(r2->host, HostName());
  EXPECT_FALSE(r2->host.empty());
}

}  // namespace
}  // namespace hookfs
