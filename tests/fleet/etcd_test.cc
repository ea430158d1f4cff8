// EtcdClient against a real 3-member etcd cluster on loopback (fleet_cluster.h).
#include <cerrno>
#include <chrono>
#include <filesystem>
#include <map>
#include <set>
#include <thread>

#include <gtest/gtest.h>

#include "fleet_cluster.h"
#include "hookfs/etcd.h"

namespace hookfs::fleet_test {
namespace {

using namespace std::chrono_literals;
using SteadyClock = std::chrono::steady_clock;

double MsSince(SteadyClock::time_point t0) {
  return std::chrono::duration<double, std::milli>(SteadyClock::now() - t0).count();
}

std::unique_ptr<EtcdClient> Client(std::vector<std::string> endpoints,
                                   std::chrono::milliseconds timeout = 3000ms) {
  EtcdOptions o;
  o.endpoints = std::move(endpoints);
  o.timeout = timeout;
  auto c = EtcdClient::Open(o);
  EXPECT_TRUE(c.ok()) << c.status().ToString();
  return c.ok() ? std::move(c).value() : nullptr;
}

// One cluster for the tests that do not stop members.
class EtcdTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    cluster_ = new EtcdCluster(3);
    std::string e = cluster_->Start();
    if (!e.empty()) {  // stop and clean up now: do not rely on TearDownTestSuite after a failed SetUp
      delete cluster_;
      cluster_ = nullptr;
    }
    ASSERT_EQ(e, "");
    std::printf("[ fleet    ] 3-member etcd cluster ready in %.0f ms\n", cluster_->start_ms());
  }
  static void TearDownTestSuite() {
    delete cluster_;
    cluster_ = nullptr;
  }
  void SetUp() override {
    ASSERT_NE(cluster_, nullptr);
    prefix_ = std::string("/t/") + ::testing::UnitTest::GetInstance()->current_test_info()->name() + "/";
  }
  static EtcdCluster* cluster_;
  std::string prefix_;
};
EtcdCluster* EtcdTest::cluster_ = nullptr;

TEST_F(EtcdTest, PutGetPrefixDeleteAndOldRevision) {
  auto c = Client(cluster_->Endpoints());
  ASSERT_TRUE(c);
  auto r1 = c->Put(prefix_ + "a", "1");
  ASSERT_TRUE(r1.ok()) << r1.status().ToString();
  auto r2 = c->Put(prefix_ + "a", "2");
  ASSERT_TRUE(r2.ok());
  ASSERT_TRUE(c->Put(prefix_ + "b", "x").ok());
  ASSERT_TRUE(c->Put(prefix_.substr(0, prefix_.size() - 1) + "0", "outside").ok());  // sorts after the prefix

  auto g = c->Get(prefix_ + "a");
  ASSERT_TRUE(g.ok());
  ASSERT_EQ(g->kvs.size(), 1u);
  EXPECT_EQ(g->kvs[0].value, "2");
  EXPECT_EQ(g->kvs[0].version, 2);
  EXPECT_EQ(g->kvs[0].mod_revision, *r2);
  EXPECT_GE(g->revision, *r2);

  auto old = c->Get(prefix_ + "a", *r1);  // MVCC: the value at an older revision
  ASSERT_TRUE(old.ok());
  ASSERT_EQ(old->kvs.size(), 1u);
  EXPECT_EQ(old->kvs[0].value, "1");

  auto p = c->GetPrefix(prefix_);
  ASSERT_TRUE(p.ok());
  ASSERT_EQ(p->kvs.size(), 2u);
  EXPECT_EQ(p->kvs[0].key, prefix_ + "a");
  EXPECT_EQ(p->kvs[1].key, prefix_ + "b");

  auto missing = c->Get(prefix_ + "nope");
  ASSERT_TRUE(missing.ok());
  EXPECT_TRUE(missing->kvs.empty());

  auto d = c->Delete(prefix_, /*prefix=*/true);
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(*d, 2);
  EXPECT_TRUE(c->GetPrefix(prefix_)->kvs.empty());
}

TEST_F(EtcdTest, TxnCompareBranches) {
  auto c = Client(cluster_->Endpoints());
  ASSERT_TRUE(c);
  const std::string k = prefix_ + "live";
  // Create only if absent: first wins, second sees the failure branch's read.
  auto t1 = c->Txn({Compare::Absent(k)}, {TxnOp::Put(k, "releases/1")}, {TxnOp::Get(k)});
  ASSERT_TRUE(t1.ok()) << t1.status().ToString();
  EXPECT_TRUE(t1->succeeded);
  auto t2 = c->Txn({Compare::Absent(k)}, {TxnOp::Put(k, "releases/9")}, {TxnOp::Get(k)});
  ASSERT_TRUE(t2.ok());
  EXPECT_FALSE(t2->succeeded);
  ASSERT_EQ(t2->ranges.size(), 1u);
  ASSERT_EQ(t2->ranges[0].kvs.size(), 1u);
  EXPECT_EQ(t2->ranges[0].kvs[0].value, "releases/1");
  // Value compare-and-set, as ln -sfn will do.
  auto t3 = c->Txn({Compare::Value(k, Compare::Op::kEqual, "releases/1")}, {TxnOp::Put(k, "releases/2")});
  ASSERT_TRUE(t3.ok());
  EXPECT_TRUE(t3->succeeded);
  auto t4 = c->Txn({Compare::Value(k, Compare::Op::kEqual, "releases/1")}, {TxnOp::Put(k, "releases/3")});
  ASSERT_TRUE(t4.ok());
  EXPECT_FALSE(t4->succeeded);
  // Version compare.
  auto t5 = c->Txn({Compare::Version(k, Compare::Op::kEqual, 2)}, {TxnOp::Delete(k)});
  ASSERT_TRUE(t5.ok());
  EXPECT_TRUE(t5->succeeded);
  EXPECT_TRUE(c->Get(k)->kvs.empty());
}

// The publish protocol's core: versions from a CAS on a per-hook sequence,
// 4 threads on 3 different members, every version exactly once, no gap.
TEST_F(EtcdTest, TxnCasCounterIsGapFreeUnderConcurrency) {
  const int kThreads = 4, kEach = 10;
  const std::string seq = prefix_ + "seq", rel = prefix_ + "releases/";
  std::atomic<int> conflicts{0};
  std::vector<std::thread> ts;
  std::vector<std::string> errors(kThreads);
  for (int t = 0; t < kThreads; ++t) {
    ts.emplace_back([&, t] {
      auto c = Client({cluster_->Endpoint(t % 3)});
      if (!c) return;
      for (int done = 0; done < kEach;) {
        auto cur = c->Get(seq);
        if (!cur.ok()) { errors[t] = cur.status().ToString(); return; }
        int64_t seen = cur->kvs.empty() ? 0 : cur->kvs[0].mod_revision;
        int64_t n = cur->kvs.empty() ? 1 : std::stoll(cur->kvs[0].value) + 1;
        auto r = c->Txn({Compare::ModRevision(seq, Compare::Op::kEqual, seen)},
                        {TxnOp::Put(seq, std::to_string(n)),
                         TxnOp::Put(rel + std::to_string(n), "thread" + std::to_string(t))});
        if (!r.ok()) { errors[t] = r.status().ToString(); return; }
        if (r->succeeded) ++done; else ++conflicts;
      }
    });
  }
  for (auto& t : ts) t.join();
  for (auto& e : errors) EXPECT_EQ(e, "");
  auto c = Client(cluster_->Endpoints());
  auto all = c->GetPrefix(rel);
  ASSERT_TRUE(all.ok());
  std::set<int> versions;
  std::map<std::string, int> per_thread;
  for (const auto& kv : all->kvs) {
    versions.insert(std::stoi(kv.key.substr(rel.size())));
    ++per_thread[kv.value];
    EXPECT_EQ(kv.version, 1) << kv.key << " written twice";
  }
  ASSERT_EQ(versions.size(), static_cast<size_t>(kThreads * kEach));
  EXPECT_EQ(*versions.begin(), 1);
  EXPECT_EQ(*versions.rbegin(), kThreads * kEach);
  for (auto& [who, n] : per_thread) EXPECT_EQ(n, kEach) << who;
  EXPECT_EQ(c->Get(seq)->kvs[0].value, std::to_string(kThreads * kEach));
  std::printf("[ fleet    ] %d versions, %d CAS conflicts retried\n", kThreads * kEach, conflicts.load());
}

TEST_F(EtcdTest, WatchSeesAPutMadeThroughAnotherMember) {
  auto watcher = Client({cluster_->Endpoint(0)});
  auto writer = Client({cluster_->Endpoint(1)});
  ASSERT_TRUE(watcher && writer);
  auto w = watcher->Watch({prefix_, true, 0, true});
  ASSERT_TRUE(w.ok()) << w.status().ToString();
  auto t0 = SteadyClock::now();
  auto put = writer->Put(prefix_ + "hooks/app/live", "releases/7");
  ASSERT_TRUE(put.ok());
  auto b = (*w)->Next(5000ms);
  double ms = MsSince(t0);
  ASSERT_TRUE(b.ok()) << b.status().ToString();
  ASSERT_EQ(b->events.size(), 1u);
  EXPECT_EQ(b->events[0].type, WatchEvent::Type::kPut);
  EXPECT_EQ(b->events[0].kv.key, prefix_ + "hooks/app/live");
  EXPECT_EQ(b->events[0].kv.value, "releases/7");
  EXPECT_EQ(b->events[0].kv.mod_revision, *put);
  std::printf("[ fleet    ] watch on m0 saw a put on m1 after %.1f ms\n", ms);

  ASSERT_TRUE(writer->Delete(prefix_ + "hooks/app/live").ok());
  b = (*w)->Next(5000ms);
  ASSERT_TRUE(b.ok()) << b.status().ToString();
  ASSERT_EQ(b->events.size(), 1u);
  EXPECT_EQ(b->events[0].type, WatchEvent::Type::kDelete);

  // Nothing else happens under the prefix: Next times out, the stream lives.
  auto none = (*w)->Next(200ms);
  EXPECT_TRUE(none.status().Is(Code::kTimedOut)) << none.status().ToString();
  // A progress notification tells a live stream from a stale one.
  ASSERT_TRUE((*w)->RequestProgress().ok());
  auto p = (*w)->Next(5000ms);
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  EXPECT_TRUE(p->progress);
  EXPECT_GE(p->revision, *put + 1);
}

TEST_F(EtcdTest, WatchFromARevisionResumesAndReportsCompaction) {
  auto c = Client(cluster_->Endpoints());
  ASSERT_TRUE(c);
  const std::string k = prefix_ + "k";
  std::vector<int64_t> revs;
  for (int i = 1; i <= 4; ++i) revs.push_back(*c->Put(k, std::to_string(i)));

  // Resume from an applied revision: every change after it, in order.
  auto w = c->Watch({k, false, revs[1] + 1, false});
  ASSERT_TRUE(w.ok());
  std::vector<std::string> seen;
  while (seen.size() < 2) {
    auto b = (*w)->Next(5000ms);
    ASSERT_TRUE(b.ok()) << b.status().ToString();
    for (auto& e : b->events) seen.push_back(e.kv.value);
  }
  EXPECT_EQ(seen, (std::vector<std::string>{"3", "4"}));

  ASSERT_TRUE(c->Compact(revs[2]).ok());
  // A host that had applied only revs[0] must learn that it has to re-read.
  auto stale = c->Watch({k, false, revs[0] + 1, false});
  ASSERT_TRUE(stale.ok()) << stale.status().ToString();
  auto b = (*stale)->Next(5000ms);
  ASSERT_TRUE(b.ok()) << b.status().ToString();
  EXPECT_EQ(b->compact_revision, revs[2]);
  EXPECT_TRUE(b->events.empty());
  auto after = (*stale)->Next(1000ms);  // the stream has ended
  EXPECT_FALSE(after.ok());
  EXPECT_FALSE(after.status().Is(Code::kTimedOut)) << after.status().ToString();
  // A read at the compacted revision says so too.
  auto old = c->Get(k, revs[0]);
  EXPECT_TRUE(old.status().Is(Code::kInvalidArgument)) << old.status().ToString();
  EXPECT_NE(old.status().message().find("compacted"), std::string::npos) << old.status().ToString();
  // Re-read, then watch from there + 1: the documented recovery.
  auto now = c->Get(k);
  ASSERT_TRUE(now.ok());
  EXPECT_EQ(now->kvs[0].value, "4");
  auto fresh = c->Watch({k, false, now->revision + 1, false});
  ASSERT_TRUE(fresh.ok());
  ASSERT_TRUE(c->Put(k, "5").ok());
  auto b5 = (*fresh)->Next(5000ms);
  ASSERT_TRUE(b5.ok());
  ASSERT_EQ(b5->events.size(), 1u);
  EXPECT_EQ(b5->events[0].kv.value, "5");
}

TEST_F(EtcdTest, LeaseExpiresWithoutKeepAliveAndLivesWithIt) {
  auto c = Client(cluster_->Endpoints());
  ASSERT_TRUE(c);
  const std::string dead = prefix_ + "hosts/dead", kept = prefix_ + "hosts/kept", gone = prefix_ + "hosts/revoked";
  auto l1 = c->LeaseGrant(2);
  auto l2 = c->LeaseGrant(2);
  auto l3 = c->LeaseGrant(30);
  ASSERT_TRUE(l1.ok() && l2.ok() && l3.ok()) << l1.status().ToString();
  ASSERT_TRUE(c->Put(dead, "x", *l1).ok());
  ASSERT_TRUE(c->Put(kept, "x", *l2).ok());
  ASSERT_TRUE(c->Put(gone, "x", *l3).ok());
  EXPECT_EQ(c->Get(dead)->kvs.at(0).lease, *l1);
  auto ttl = c->LeaseKeepAliveOnce(*l2);
  ASSERT_TRUE(ttl.ok()) << ttl.status().ToString();
  EXPECT_EQ(*ttl, 2);
  auto keeper = c->KeepAlive(*l2, 2);
  ASSERT_TRUE(keeper.ok());

  ASSERT_TRUE(c->LeaseRevoke(*l3).ok());
  EXPECT_TRUE(c->Get(gone)->kvs.empty());

  // dead expires within its TTL (+ etcd's lease checking slack); kept does not.
  auto t0 = SteadyClock::now();
  while (!c->Get(dead)->kvs.empty() && MsSince(t0) < 8000) std::this_thread::sleep_for(100ms);
  EXPECT_TRUE(c->Get(dead)->kvs.empty());
  std::printf("[ fleet    ] a 2 s lease expired after %.0f ms\n", MsSince(t0));
  std::this_thread::sleep_for(std::chrono::milliseconds(std::max<int64_t>(0, 4000 - static_cast<int64_t>(MsSince(t0)))));
  EXPECT_FALSE(c->Get(kept)->kvs.empty()) << "the keeper did not keep its lease";
  EXPECT_TRUE((*keeper)->alive());
  EXPECT_TRUE(c->LeaseKeepAliveOnce(*l1).status().Is(Code::kNotFound));

  keeper->reset();  // the host stops: its liveness key goes
  t0 = SteadyClock::now();
  while (!c->Get(kept)->kvs.empty() && MsSince(t0) < 8000) std::this_thread::sleep_for(100ms);
  EXPECT_TRUE(c->Get(kept)->kvs.empty());
}

// ---------------------------------------------------------------- failures

// The worst case of a member dying: the leader, listed first. The request
// then lands on a follower that holds it until etcd's own timeout (> 5 s)
// instead of re-proposing it to the new leader: the client must move on.
TEST(EtcdFailureTest, FailsOverWhenTheLeaderDies) {
  EtcdCluster cluster(3);
  ASSERT_EQ(cluster.Start(), "");
  int leader = cluster.Leader();
  ASSERT_GE(leader, 0);
  std::vector<std::string> eps = {cluster.Endpoint(leader)};
  for (int i = 0; i < 3; ++i)
    if (i != leader) eps.push_back(cluster.Endpoint(i));
  auto c = Client(eps);
  ASSERT_TRUE(c);
  ASSERT_TRUE(c->Put("/f/a", "1").ok());  // connected to the leader
  cluster.Kill(leader);
  auto t0 = SteadyClock::now();
  auto r = c->Put("/f/a", "2");
  ASSERT_TRUE(r.ok()) << r.status().ToString() << " (killed leader " << cluster.Endpoint(leader) << ")";
  std::printf("[ fleet    ] put after SIGKILL of the leader (first endpoint): %.0f ms\n", MsSince(t0));
  EXPECT_EQ(c->Get("/f/a")->kvs.at(0).value, "2");
  auto w = c->Watch({"/f/", true, 0, false});
  ASSERT_TRUE(w.ok()) << w.status().ToString();
}

// §9: without quorum, writes fail within the deadline with ETIMEDOUT (not a
// hang); serializable reads still answer; writes work again once a member
// is back.
TEST(EtcdFailureTest, NoQuorumTimesOutThenRecovers) {
  EtcdCluster cluster(3);
  ASSERT_EQ(cluster.Start(), "");
  auto c = Client(cluster.Endpoints(), 2000ms);
  ASSERT_TRUE(c);
  ASSERT_TRUE(c->Put("/q/before", "1").ok());
  cluster.Stop(1);
  cluster.Stop(2);
  // Let m0 notice it lost the quorum (election timeout 500 ms): a proposal it
  // accepted while still leader could otherwise commit once quorum returns.
  std::this_thread::sleep_for(1500ms);

  auto t0 = SteadyClock::now();
  auto p = c->Put("/q/lost", "x");
  double put_ms = MsSince(t0);
  ASSERT_FALSE(p.ok());
  EXPECT_TRUE(p.status().Is(Code::kTimedOut)) << p.status().ToString();
  EXPECT_EQ(p.status().ToErrno(), ETIMEDOUT);
  EXPECT_LT(put_ms, 2500) << "the deadline did not bound the call";
  t0 = SteadyClock::now();
  auto t = c->Txn({Compare::Absent("/q/seq")}, {TxnOp::Put("/q/seq", "1")});
  EXPECT_TRUE(t.status().Is(Code::kTimedOut)) << t.status().ToString();
  EXPECT_LT(MsSince(t0), 2500);
  auto lin = c->Get("/q/before");
  EXPECT_TRUE(lin.status().Is(Code::kTimedOut)) << lin.status().ToString();
  std::printf("[ fleet    ] no quorum: put failed after %.0f ms (deadline 2000 ms)\n", put_ms);

  auto only0 = Client({cluster.Endpoint(0)}, 2000ms);
  auto ser = only0->Get("/q/before", 0, /*serializable=*/true);
  ASSERT_TRUE(ser.ok()) << ser.status().ToString();
  EXPECT_EQ(ser->kvs.at(0).value, "1");

  ASSERT_EQ(cluster.Restart(1), "");
  t0 = SteadyClock::now();
  Result<int64_t> again = Status::TimedOut("not tried");
  while (MsSince(t0) < 10000 && !(again = c->Put("/q/after", "y")).ok()) std::this_thread::sleep_for(100ms);
  ASSERT_TRUE(again.ok()) << again.status().ToString();
  std::printf("[ fleet    ] quorum back: first put %.0f ms after the restart\n", MsSince(t0));
  EXPECT_TRUE(c->Get("/q/lost")->kvs.empty()) << "a timed-out put was applied";
  EXPECT_TRUE(c->Get("/q/seq")->kvs.empty()) << "a timed-out txn was applied";
}

TEST(EtcdFailureTest, NoEndpointReachableTimesOut) {
  int base = FreePortBase(2);
  ASSERT_GT(base, 0);
  auto c = Client({"http://127.0.0.1:" + std::to_string(base), "http://127.0.0.1:" + std::to_string(base + 1)},
                  1000ms);
  auto t0 = SteadyClock::now();
  auto r = c->Get("/x");
  EXPECT_TRUE(r.status().Is(Code::kTimedOut)) << r.status().ToString();
  EXPECT_LT(MsSince(t0), 1500);
  auto w = c->Watch({"/x", false, 0, false});
  EXPECT_TRUE(w.status().Is(Code::kTimedOut)) << w.status().ToString();
  EXPECT_LT(MsSince(t0), 3000);
}

// ---------------------------------------------------------------- TLS

// --etcd-ca/--etcd-cert/--etcd-key: members that require a client
// certificate signed by a CA the test makes with openssl.
TEST(EtcdTlsTest, ClientCertificatesAreRequiredAndWork) {
  std::string d = MakeTempDir("etcd-tls");
  ASSERT_FALSE(d.empty());
  struct RemoveDir {
    std::string d;
    ~RemoveDir() {
      std::error_code ec;
      std::filesystem::remove_all(d, ec);
    }
  } remove_dir{d};  // also when an ASSERT returns early
  auto gen = [&](const std::string& name, const std::string& subj, const std::string& ext,
                 const std::string& ca) {
    std::string cmd =
        "cd " + d + " && openssl req -newkey rsa:2048 -nodes -keyout " + name + ".key -subj '" + subj +
        "' -out " + name + ".csr 2>/dev/null && printf '" + ext + "' > " + name + ".ext && " +
        "openssl x509 -req -in " + name + ".csr -CA " + ca + ".crt -CAkey " + ca + ".key -CAcreateserial -days 2 "
        "-extfile " + name + ".ext -out " + name + ".crt 2>/dev/null";
    return Sh(cmd);
  };
  for (const char* ca : {"ca", "otherca"})
    ASSERT_EQ(Sh("cd " + d + " && openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj '/CN=hookfs test " +
                 ca + "' -keyout " + ca + ".key -out " + ca + ".crt 2>/dev/null"), 0);
  ASSERT_EQ(gen("server", "/CN=etcd", "subjectAltName=IP:127.0.0.1\\nextendedKeyUsage=serverAuth,clientAuth\\n", "ca"), 0);
  ASSERT_EQ(gen("client", "/CN=host1", "extendedKeyUsage=clientAuth\\n", "ca"), 0);
  ASSERT_EQ(gen("rogue", "/CN=rogue", "extendedKeyUsage=clientAuth\\n", "otherca"), 0);

  EtcdTlsFiles f{d + "/ca.crt", d + "/server.crt", d + "/server.key", d + "/client.crt", d + "/client.key"};
  {
    EtcdCluster cluster(1, &f);
    ASSERT_EQ(cluster.Start(), "");
    auto open = [&](const std::string& ca, const std::string& cert, const std::string& key) {
      EtcdOptions o;
      o.endpoints = cluster.Endpoints();
      o.ca_file = ca;
      o.cert_file = cert;
      o.key_file = key;
      o.timeout = 1500ms;
      return EtcdClient::Open(o);
    };
    auto good = open(f.ca, f.client_cert, f.client_key);
    ASSERT_TRUE(good.ok()) << good.status().ToString();
    ASSERT_TRUE((*good)->Put("/tls/k", "v").ok());
    EXPECT_EQ((*good)->Get("/tls/k")->kvs.at(0).value, "v");

    auto nocert = open(f.ca, "", "");
    ASSERT_TRUE(nocert.ok());
    EXPECT_FALSE((*nocert)->Put("/tls/k", "nocert").ok());
    auto rogue = open(f.ca, d + "/rogue.crt", d + "/rogue.key");
    ASSERT_TRUE(rogue.ok());
    EXPECT_FALSE((*rogue)->Put("/tls/k", "rogue").ok());
    auto wrongca = open(d + "/otherca.crt", f.client_cert, f.client_key);  // server not trusted
    ASSERT_TRUE(wrongca.ok());
    EXPECT_FALSE((*wrongca)->Get("/tls/k").ok());
    EXPECT_EQ((*good)->Get("/tls/k")->kvs.at(0).value, "v");

    EXPECT_FALSE(open(f.ca, f.client_cert, "").ok()) << "cert without key must be refused";
    EXPECT_FALSE(open(d + "/missing.crt", "", "").ok());
  }
}

}  // namespace
}  // namespace hookfs::fleet_test
