// S3Client against a real Ceph radosgw (one mon, one memstore OSD), started
// once for this binary by a gtest Environment: it takes ~15 s.
#include <openssl/evp.h>
#include <stdlib.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <random>

#include <gtest/gtest.h>

#include "fleet_cluster.h"
#include "hookfs/s3.h"

namespace hookfs::fleet_test {
namespace {

using namespace std::chrono_literals;

CephCluster* g_ceph = nullptr;

class CephEnv : public ::testing::Environment {
 public:
  void SetUp() override {
    g_ceph = new CephCluster();
    std::string e = g_ceph->Start();
    if (!e.empty()) g_ceph->StopAll();  // no daemon left running whatever gtest does next
    ASSERT_EQ(e, "") << "Ceph did not start";
    std::printf("[ fleet    ] mon + memstore OSD + radosgw + user + bucket ready in %.0f ms\n",
                g_ceph->start_ms());
  }
  void TearDown() override {
    delete g_ceph;
    g_ceph = nullptr;
  }
};
const auto* const g_env = ::testing::AddGlobalTestEnvironment(new CephEnv);

std::string Sha256Hex(std::string_view d) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  EVP_Digest(d.data(), d.size(), md, &n, EVP_sha256(), nullptr);
  std::string out;
  char b[3];
  for (unsigned i = 0; i < n; ++i) {
    snprintf(b, sizeof b, "%02x", md[i]);
    out += b;
  }
  return out;
}

std::string Random(size_t n, unsigned seed) {
  std::mt19937_64 rng(seed);
  std::string s(n, '\0');
  for (size_t i = 0; i + 8 <= n; i += 8) {
    uint64_t v = rng();
    memcpy(&s[i], &v, 8);
  }
  return s;
}

// What a host does with a fetched object: its key names its SHA-256.
Status Verify(const std::string& key, const std::string& bytes) {
  std::string want = key.substr(key.rfind('/') + 1);
  std::string got = Sha256Hex(bytes);
  if (got != want) return Status::Corruption("object " + want + " from the bucket hashes to " + got);
  return Status::OK();
}

std::unique_ptr<S3Client> Client(const std::string& access = "", const std::string& secret = "",
                                 const std::string& url = "", int list_page = 1000) {
  S3Options o;
  o.list_page = list_page;
  o.url = url.empty() ? g_ceph->bucket_url() : url;
  o.credentials = {access.empty() ? g_ceph->access_key() : access,
                   secret.empty() ? g_ceph->secret_key() : secret};
  o.connect_timeout = 1000ms;
  o.timeout = 30000ms;
  auto c = S3Client::Open(o);
  EXPECT_TRUE(c.ok()) << c.status().ToString();
  return c.ok() ? std::move(c).value() : nullptr;
}

TEST(S3Test, PutGetHeadAndIdempotentPut) {
  auto s3 = Client();
  ASSERT_TRUE(s3);
  std::string data = Random(100000, 1);
  std::string key = "objects/" + Sha256Hex(data);
  ASSERT_TRUE(s3->PutIfAbsent(key, data).ok());
  auto h = s3->Head(key);
  ASSERT_TRUE(h.ok()) << h.status().ToString();
  EXPECT_EQ(h->size, data.size());
  EXPECT_FALSE(h->etag.empty());
  auto g = s3->Get(key);
  ASSERT_TRUE(g.ok()) << g.status().ToString();
  EXPECT_TRUE(*g == data);
  EXPECT_TRUE(Verify(key, *g).ok());

  // The same key again: 412 from the server, success for us.
  ASSERT_TRUE(s3->PutIfAbsent(key, data).ok());
  // And an object is never overwritten, whatever a second writer sends.
  Status other = s3->PutIfAbsent(key, "different bytes");
  EXPECT_TRUE(other.ok()) << other.ToString();
  EXPECT_TRUE(*s3->Get(key) == data);

  auto r = s3->GetRange(key, 10, 20);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(*r, data.substr(10, 20));
  auto tail = s3->GetRange(key, data.size() - 5, 100);
  ASSERT_TRUE(tail.ok());
  EXPECT_EQ(*tail, data.substr(data.size() - 5));
  EXPECT_EQ(*s3->GetRange(key, data.size() + 10, 5), "");

  EXPECT_TRUE(s3->Get("objects/absent").status().Is(Code::kNotFound));
  EXPECT_TRUE(s3->Head("objects/absent").status().Is(Code::kNotFound));
  EXPECT_TRUE(s3->Get("bad key").status().Is(Code::kInvalidArgument));

  ASSERT_TRUE(s3->Delete(key).ok());
  EXPECT_TRUE(s3->Head(key).status().Is(Code::kNotFound));
  EXPECT_TRUE(s3->Delete(key).ok()) << "deleting an absent key is not an error";
}

// A bucket that sends more than asked for cannot make a host buffer it.
TEST(S3Test, GetIsBoundedByMaxGetBytes) {
  auto s3 = Client();
  ASSERT_TRUE(s3);
  std::string data = Random(3 << 20, 5);
  std::string key = "objects/" + Sha256Hex(data);
  ASSERT_TRUE(s3->PutIfAbsent(key, data).ok());
  S3Options o;
  o.url = g_ceph->bucket_url();
  o.credentials = {g_ceph->access_key(), g_ceph->secret_key()};
  o.max_get_bytes = 2 << 20;
  auto small = S3Client::Open(o);
  ASSERT_TRUE(small.ok());
  auto g = (*small)->Get(key);
  EXPECT_TRUE(g.status().Is(Code::kCorruption)) << g.status().ToString();
  auto r = (*small)->GetRange(key, 0, 1 << 20);  // a range within the bound is fine
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->size(), 1u << 20);
  EXPECT_TRUE(s3->Get(key).ok());
}

TEST(S3Test, ListWithPrefix) {
  auto s3 = Client();
  ASSERT_TRUE(s3);
  for (const char* k : {"list/b", "list/a", "list/c/d", "listx/e"}) ASSERT_TRUE(s3->PutIfAbsent(k, k).ok());
  auto l = s3->List("list/");
  ASSERT_TRUE(l.ok()) << l.status().ToString();
  ASSERT_EQ(l->size(), 3u);
  EXPECT_EQ((*l)[0].key, "list/a");
  EXPECT_EQ((*l)[1].key, "list/b");
  EXPECT_EQ((*l)[2].key, "list/c/d");
  EXPECT_EQ((*l)[2].size, 8u);
  auto all = s3->List("");
  ASSERT_TRUE(all.ok());
  EXPECT_GE(all->size(), 4u);
  // Pages of 2 keys: continuation tokens are signed and followed.
  auto paged = Client("", "", "", 2)->List("list");
  ASSERT_TRUE(paged.ok()) << paged.status().ToString();
  ASSERT_EQ(paged->size(), 4u);
  EXPECT_EQ((*paged)[3].key, "listx/e");
}

// radosgw's RADOS objects are capped at 128 MiB: larger objects go as parts.
TEST(S3Test, LargeObjectInParts) {
  auto s3 = Client();
  ASSERT_TRUE(s3);
  const uint64_t size = (129ull << 20) + 12345;
  std::string data = Random(size, 7);
  std::string key = "objects/" + Sha256Hex(data);
  auto t0 = std::chrono::steady_clock::now();
  Status st = s3->PutParts(key, size, [&](uint64_t off, char* buf, size_t len) {
    memcpy(buf, data.data() + off, len);
    return Status::OK();
  });
  ASSERT_TRUE(st.ok()) << st.ToString();
  double put_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  auto parts = s3->List(key + ".part0");  // not KEY.parts, the manifest
  ASSERT_TRUE(parts.ok());
  ASSERT_EQ(parts->size(), 3u);  // 64 + 64 + 1 MiB
  for (const auto& p : *parts) EXPECT_LE(p.size, S3Client::kDefaultPartSize);
  EXPECT_TRUE(s3->Head(S3Client::ManifestKey(key)).ok());

  std::string back;
  back.reserve(size);
  t0 = std::chrono::steady_clock::now();
  st = s3->GetParts(key, [&](uint64_t off, std::string_view b) {
    EXPECT_EQ(off, back.size());
    back.append(b);
    return Status::OK();
  });
  ASSERT_TRUE(st.ok()) << st.ToString();
  double get_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_TRUE(Verify(key, back).ok());
  std::printf("[ fleet    ] %llu bytes in parts: put %.0f ms, get %.0f ms\n",
              static_cast<unsigned long long>(size), put_ms, get_ms);

  // Publishing it again uploads nothing new and succeeds (412 per part).
  EXPECT_TRUE(s3->PutParts(key, size, [&](uint64_t off, char* buf, size_t len) {
    memcpy(buf, data.data() + off, len);
    return Status::OK();
  }).ok());
  // Small part size: many parts, same bytes.
  std::string small = Random(1000000, 9);
  std::string skey = "objects/" + Sha256Hex(small);
  ASSERT_TRUE(s3->PutParts(skey, small.size(), [&](uint64_t off, char* buf, size_t len) {
    memcpy(buf, small.data() + off, len);
    return Status::OK();
  }, 300000).ok());
  std::string sback;
  ASSERT_TRUE(s3->GetParts(skey, [&](uint64_t, std::string_view b) { sback.append(b); return Status::OK(); }).ok());
  EXPECT_TRUE(sback == small);
  // A truncated part is caught by size before any hashing.
  ASSERT_TRUE(s3->Delete(S3Client::PartKey(skey, 1)).ok());
  ASSERT_TRUE(s3->PutIfAbsent(S3Client::PartKey(skey, 1), "short").ok());
  Status bad = s3->GetParts(skey, [](uint64_t, std::string_view) { return Status::OK(); });
  EXPECT_TRUE(bad.Is(Code::kCorruption)) << bad.ToString();
  EXPECT_TRUE(s3->GetParts("objects/none", [](uint64_t, std::string_view) { return Status::OK(); })
                  .Is(Code::kNotFound));
}

// A hostile or broken bucket: bytes under a content key that are not that
// content. The client returns what it got; the caller's SHA-256 check refuses it.
TEST(S3Test, CorruptedObjectIsDetectedByTheCallersCheck) {
  auto s3 = Client();
  ASSERT_TRUE(s3);
  std::string good = Random(50000, 3);
  std::string key = "objects/" + Sha256Hex(good);
  std::string evil = good;
  evil[12345] ^= 1;  // one bit
  ASSERT_TRUE(s3->PutIfAbsent(key, evil).ok());
  auto g = s3->Get(key);
  ASSERT_TRUE(g.ok());
  Status v = Verify(key, *g);
  EXPECT_TRUE(v.Is(Code::kCorruption)) << v.ToString();
  EXPECT_TRUE(Verify(key, good).ok());
}

TEST(S3Test, WrongCredentialsFailWithoutLeakingTheSecret) {
  const std::string bad_secret = "Sup3rSecretValueThatMustNeverBeLogged0123";
  // The right access key with a wrong secret: SignatureDoesNotMatch.
  auto s3 = Client(g_ceph->access_key(), bad_secret);
  ASSERT_TRUE(s3);
  auto g = s3->Get("objects/anything");
  ASSERT_FALSE(g.ok());
  EXPECT_TRUE(g.status().Is(Code::kPermissionDenied)) << g.status().ToString();
  EXPECT_EQ(g.status().ToString().find(bad_secret), std::string::npos) << g.status().ToString();
  EXPECT_EQ(g.status().ToString().find(g_ceph->secret_key()), std::string::npos);
  Status p = s3->PutIfAbsent("objects/x", "x");
  EXPECT_TRUE(p.Is(Code::kPermissionDenied)) << p.ToString();
  EXPECT_EQ(p.ToString().find(bad_secret), std::string::npos);
  // An unknown access key.
  auto s3b = Client("NOSUCHACCESSKEY00000", bad_secret);
  auto h = s3b->Get("objects/anything");
  EXPECT_TRUE(h.status().Is(Code::kPermissionDenied)) << h.status().ToString();
  EXPECT_EQ(h.status().ToString().find(bad_secret), std::string::npos);
  std::printf("[ fleet    ] wrong secret: %s\n", g.status().ToString().c_str());
}

TEST(S3Test, UnreachableBucketTimesOut) {
  int port = FreePortBase(1);
  auto s3 = Client("", "", "http://127.0.0.1:" + std::to_string(port) + "/hookfs-test");
  ASSERT_TRUE(s3);
  auto t0 = std::chrono::steady_clock::now();
  Status p = s3->PutIfAbsent("objects/x", "x");
  EXPECT_TRUE(p.Is(Code::kTimedOut)) << p.ToString();
  EXPECT_EQ(p.ToErrno(), ETIMEDOUT);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 2s);
}

TEST(S3CredentialsTest, FromEnvironmentAndFile) {
  ::setenv("AWS_ACCESS_KEY_ID", "AKID", 1);
  ::setenv("AWS_SECRET_ACCESS_KEY", "SECRETVALUE", 1);
  auto e = LoadS3Credentials();
  ASSERT_TRUE(e.ok());
  EXPECT_EQ(e->access_key, "AKID");
  EXPECT_EQ(e->secret_key, "SECRETVALUE");
  ::unsetenv("AWS_SECRET_ACCESS_KEY");
  auto none = LoadS3Credentials();
  EXPECT_TRUE(none.status().Is(Code::kInvalidArgument));
  ::unsetenv("AWS_ACCESS_KEY_ID");

  std::string d = MakeTempDir("s3cred");
  {
    std::ofstream f(d + "/credentials");
    f << "[other]\naws_access_key_id = NO\naws_secret_access_key = NO\n"
      << "[default]\n# comment\naws_access_key_id = FILEKEY\naws_secret_access_key=FILESECRET\n";
  }
  auto f = LoadS3Credentials(d + "/credentials");
  ASSERT_TRUE(f.ok()) << f.status().ToString();
  EXPECT_EQ(f->access_key, "FILEKEY");
  EXPECT_EQ(f->secret_key, "FILESECRET");
  {
    std::ofstream g(d + "/partial");
    g << "[default]\naws_access_key_id = K\n";
  }
  auto p = LoadS3Credentials(d + "/partial");
  EXPECT_TRUE(p.status().Is(Code::kInvalidArgument));
  EXPECT_TRUE(LoadS3Credentials(d + "/missing").status().Is(Code::kInvalidArgument));
  std::system(("rm -rf " + d).c_str());
}

}  // namespace
}  // namespace hookfs::fleet_test
