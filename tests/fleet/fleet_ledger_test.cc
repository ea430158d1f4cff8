// FleetLedger against real servers: a 3-member etcd and one Ceph radosgw,
// started once for this binary (Ceph: ~15 s). Three FleetLedgers with their
// own etcd and S3 clients stand for three hosts. Each test uses its own fleet
// name, so tests do not see each other's keys or objects.
#include <cerrno>
#include <chrono>
#include <map>
#include <mutex>
#include <set>
#include <thread>

#include <gtest/gtest.h>

#include "fleet_cluster.h"
#include "hookfs/fleet_ledger.h"
#include "hookfs/hash.h"

namespace hookfs::fleet_test {
namespace {

using namespace std::chrono_literals;
using SteadyClock = std::chrono::steady_clock;

EtcdCluster* g_etcd = nullptr;
CephCluster* g_ceph = nullptr;

class ServersEnv : public ::testing::Environment {
 public:
  void SetUp() override {
    g_etcd = new EtcdCluster(3);
    std::string e = g_etcd->Start();
    if (e.empty()) {
      g_ceph = new CephCluster();
      e = g_ceph->Start();
    }
    if (!e.empty()) TearDown();  // nothing left running whatever gtest does next
    ASSERT_EQ(e, "");
    std::printf("[ fleet    ] etcd ready in %.0f ms, Ceph in %.0f ms\n", g_etcd->start_ms(), g_ceph->start_ms());
  }
  void TearDown() override {
    delete g_ceph;
    g_ceph = nullptr;
    delete g_etcd;
    g_etcd = nullptr;
  }
};
const auto* const g_env = ::testing::AddGlobalTestEnvironment(new ServersEnv);

double MsSince(SteadyClock::time_point t0) {
  return std::chrono::duration<double, std::milli>(SteadyClock::now() - t0).count();
}

// One host's clients and ledger.
struct Host {
  std::unique_ptr<EtcdClient> etcd;
  std::unique_ptr<S3Client> s3;
  std::unique_ptr<FleetLedger> ledger;
};

std::unique_ptr<Host> MakeHost(const std::string& fleet, const std::string& id,
                               std::chrono::milliseconds etcd_timeout = 3000ms) {
  auto h = std::make_unique<Host>();
  EtcdOptions eo;
  eo.endpoints = g_etcd->Endpoints();
  eo.timeout = etcd_timeout;
  auto e = EtcdClient::Open(eo);
  EXPECT_TRUE(e.ok()) << e.status().ToString();
  if (!e.ok()) return nullptr;
  h->etcd = std::move(e).value();
  S3Options so;
  so.url = g_ceph->bucket_url();
  so.credentials = {g_ceph->access_key(), g_ceph->secret_key()};
  auto s = S3Client::Open(so);
  EXPECT_TRUE(s.ok()) << s.status().ToString();
  if (!s.ok()) return nullptr;
  h->s3 = std::move(s).value();
  h->ledger = std::make_unique<FleetLedger>(h->etcd.get(), h->s3.get(), FleetOptions{fleet, id, 5000ms});
  return h;
}

std::string FleetName() {
  return std::string("t-") + ::testing::UnitTest::GetInstance()->current_test_info()->name();
}

ObjectId Digest(int i) { return Sha256::Of("release-" + std::to_string(i)); }

TEST(FleetLedger, ObjectsRoundTripAndACorruptObjectIsNeverReturned) {
  auto a = MakeHost(FleetName(), "a"), b = MakeHost(FleetName(), "b");
  ASSERT_TRUE(a && b);
  std::string content = "#!/bin/sh\necho hello from the fleet\n";
  auto id = a->ledger->UploadObject(content);
  ASSERT_TRUE(id.ok()) << id.status().ToString();
  EXPECT_EQ(*id, Sha256::Of(content));
  EXPECT_EQ(a->ledger->ObjectKey(*id), FleetName() + "/objects/" + Sha256::Of(content).Hex());
  ASSERT_TRUE(a->ledger->UploadObject(content).ok());  // again: already there, fine
  auto got = b->ledger->FetchObject(*id);
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  EXPECT_EQ(*got, content);

  // A bucket writer stores wrong bytes under another object's key.
  std::string good = "the real bytes\n";
  ObjectId gid = Sha256::Of(good);
  std::string bad = good;
  bad[3] ^= 1;
  ASSERT_TRUE(a->s3->PutIfAbsent(a->ledger->ObjectKey(gid), bad).ok());
  auto refused = b->ledger->FetchObject(gid);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), Code::kCorruption) << refused.status().ToString();

  auto missing = b->ledger->FetchObject(Sha256::Of("never uploaded"));
  EXPECT_EQ(missing.status().code(), Code::kNotFound) << missing.status().ToString();
}

TEST(FleetLedger, ConcurrentPublishesFromThreeHostsAreGapFreeAndDuplicatesFleetWide) {
  std::vector<std::unique_ptr<Host>> hosts;
  for (int i = 0; i < 3; ++i) hosts.push_back(MakeHost(FleetName(), "h" + std::to_string(i)));
  for (auto& h : hosts) ASSERT_TRUE(h);
  constexpr int kPerHost = 4;
  std::map<uint32_t, std::string> got;  // version -> digest hex
  std::mutex mu;
  std::vector<std::string> errors;
  std::vector<std::thread> threads;
  auto t0 = SteadyClock::now();
  for (int h = 0; h < 3; ++h) {
    threads.emplace_back([&, h] {
      for (int k = 0; k < kPerHost; ++k) {
        ObjectId d = Digest(h * kPerHost + k);
        auto r = hosts[h]->ledger->AssignVersion("app", d, {{"message", "m"}});
        std::lock_guard<std::mutex> l(mu);
        if (!r.ok()) {
          errors.push_back(r.status().ToString());
        } else if (r->duplicate) {
          errors.push_back("unexpected duplicate");
        } else if (!got.emplace(r->version, d.Hex()).second) {
          errors.push_back("version given twice: " + std::to_string(r->version));
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  std::printf("[ fleet    ] %d publishes from 3 hosts in %.0f ms\n", 3 * kPerHost, MsSince(t0));
  EXPECT_TRUE(errors.empty()) << errors.front();
  ASSERT_EQ(got.size(), 3u * kPerHost);
  EXPECT_EQ(got.begin()->first, 1u);
  EXPECT_EQ(got.rbegin()->first, 3u * kPerHost);  // 1..N: no gap
  // Every host reads the same digest for every version.
  for (const auto& [v, hex] : got) {
    for (auto& h : hosts) {
      auto rec = h->ledger->GetRelease("app", v);
      ASSERT_TRUE(rec.ok()) << rec.status().ToString();
      EXPECT_EQ((*rec)["digest"], hex);
      EXPECT_EQ((*rec)["version"], v);
    }
  }
  // The same digest published again, from another host: the same version, nothing written.
  auto again = hosts[2]->ledger->AssignVersion("app", Digest(0), {});
  ASSERT_TRUE(again.ok());
  EXPECT_TRUE(again->duplicate);
  uint32_t first = 0;
  for (const auto& [v, hex] : got) {
    if (hex == Digest(0).Hex()) first = v;
  }
  EXPECT_EQ(again->version, first);
  // live went to one of the versions; no-advance leaves it alone.
  auto live = hosts[0]->ledger->GetPointer("app", "live");
  ASSERT_TRUE(live.ok() && live->has_value());
  auto quiet = hosts[1]->ledger->AssignVersion("app", Digest(100), {}, /*advance=*/false);
  ASSERT_TRUE(quiet.ok());
  EXPECT_EQ(quiet->version, 3u * kPerHost + 1);
  auto live2 = hosts[0]->ledger->GetPointer("app", "live");
  ASSERT_TRUE(live2.ok());
  EXPECT_EQ(*live2, *live);
}

TEST(FleetLedger, PointerMovesAreCheckedAndFollowersSeeThemInOrder) {
  auto a = MakeHost(FleetName(), "a"), b = MakeHost(FleetName(), "b");
  ASSERT_TRUE(a && b);
  FleetFollower follower(b->ledger.get(), 0);
  auto snap = follower.Next(100ms);
  ASSERT_TRUE(snap.ok()) << snap.status().ToString();
  EXPECT_TRUE(snap->full);
  EXPECT_TRUE(snap->changes.empty());

  ASSERT_TRUE(a->ledger->AssignVersion("app", Digest(1), {}).ok());
  ASSERT_TRUE(a->ledger->AssignVersion("app", Digest(2), {}).ok());
  auto bad = a->ledger->MovePointer("app", "live", 9);
  EXPECT_EQ(bad.status().code(), Code::kInvalidArgument);
  auto t0 = SteadyClock::now();
  auto moved = a->ledger->MovePointer("app", "live", 1);
  ASSERT_TRUE(moved.ok()) << moved.status().ToString();
  ASSERT_TRUE(a->ledger->MovePointer("app", "tags/stable", 2).ok());
  ASSERT_TRUE(a->ledger->MovePointer("app", "tags/stable", 0).ok());
  EXPECT_EQ(a->ledger->MovePointer("app", "live", 0).status().code(), Code::kNotPermitted);

  // Delta batches, in revision order, until the last move is seen.
  std::vector<std::string> seen;
  double live_ms = -1;
  while (MsSince(t0) < 5000 && (seen.empty() || seen.back() != "tags/stable->0")) {
    auto batch = follower.Next(200ms);
    ASSERT_TRUE(batch.ok()) << batch.status().ToString();
    EXPECT_FALSE(batch->full);
    for (const auto& c : batch->changes) {
      if (c.kind == FleetChange::Kind::kRelease) {
        seen.push_back("release " + std::to_string(c.version) + " " + c.record["digest"].get<std::string>());
      } else {
        seen.push_back(c.pointer + "->" + std::to_string(c.version));
        if (c.revision == *moved && live_ms < 0) live_ms = MsSince(t0);
      }
    }
  }
  std::vector<std::string> want = {"release 1 " + Digest(1).Hex(), "live->1", "release 2 " + Digest(2).Hex(),
                                   "live->2", "live->1", "tags/stable->2", "tags/stable->0"};
  EXPECT_EQ(seen, want);
  std::printf("[ fleet    ] a live move reached the other host's follower in %.1f ms\n", live_ms);
  EXPECT_GE(live_ms, 0);
  EXPECT_LT(live_ms, 1000);
}

TEST(FleetLedger, AFollowerBehindACompactionReReadsEverything) {
  auto a = MakeHost(FleetName(), "a");
  ASSERT_TRUE(a);
  ASSERT_TRUE(a->ledger->AssignVersion("app", Digest(1), {}).ok());
  auto second = a->ledger->AssignVersion("app", Digest(2), {});
  ASSERT_TRUE(second.ok());
  auto r = a->ledger->MovePointer("app", "live", 1);
  ASSERT_TRUE(r.ok());
  ASSERT_TRUE(a->etcd->Compact(*r).ok());
  // Applied only through the first publish: its next revision is gone.
  FleetFollower follower(a->ledger.get(), second->revision - 1);
  auto b = follower.Next(1000ms);
  ASSERT_TRUE(b.ok()) << b.status().ToString();
  EXPECT_TRUE(b->full);
  EXPECT_GE(b->revision, *r);
  std::set<std::string> got;
  for (const auto& c : b->changes) {
    got.insert(c.kind == FleetChange::Kind::kRelease ? "release " + std::to_string(c.version)
                                                     : c.pointer + "->" + std::to_string(c.version));
  }
  EXPECT_EQ(got, (std::set<std::string>{"release 1", "release 2", "live->1"}));
  // And it continues with deltas from there.
  ASSERT_TRUE(a->ledger->MovePointer("app", "live", 2).ok());
  auto d = follower.Next(2000ms);
  ASSERT_TRUE(d.ok());
  EXPECT_FALSE(d->full);
  ASSERT_EQ(d->changes.size(), 1u);
  EXPECT_EQ(d->changes[0].version, 2u);
}

// Last: it stops two members (and restarts them).
TEST(FleetLedger, WithoutQuorumAPublishFailsWithinFiveSecondsAndNothingIsConsumed) {
  auto a = MakeHost(FleetName(), "a", 2000ms);
  ASSERT_TRUE(a);
  ASSERT_TRUE(a->ledger->AssignVersion("app", Digest(1), {}).ok());
  g_etcd->Stop(1);
  g_etcd->Stop(2);
  auto t0 = SteadyClock::now();
  auto r = a->ledger->AssignVersion("app", Digest(2), {});
  double ms = MsSince(t0);
  std::printf("[ fleet    ] publish without quorum failed after %.0f ms\n", ms);
  EXPECT_EQ(r.status().code(), Code::kTimedOut) << r.status().ToString();
  EXPECT_EQ(r.status().ToErrno(), ETIMEDOUT);
  EXPECT_LT(ms, 5000);
  ASSERT_EQ(g_etcd->Restart(1), "");
  ASSERT_EQ(g_etcd->Restart(2), "");
  // The read of the failed attempt timed out before any txn: no version consumed.
  auto next = a->ledger->AssignVersion("app", Digest(3), {});
  ASSERT_TRUE(next.ok()) << next.status().ToString();
  EXPECT_EQ(next->version, 2u);
}

}  // namespace
}  // namespace hookfs::fleet_test
