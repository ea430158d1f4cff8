#include <lmdb.h>
#include <sys/stat.h>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "hookfs/apply.h"
#include "hookfs/hash.h"
#include "hookfs/store.h"
#include "test_util.h"

namespace hookfs {
namespace {

using test::TempDir;

// Writes meta/format_version straight through LMDB, as a future hookfs would.
void SetRawFormatVersion(const std::string& dir, uint32_t version) {
  MDB_env* env;
  ASSERT_EQ(mdb_env_create(&env), 0);
  mdb_env_set_maxdbs(env, 32);
  ASSERT_EQ(mdb_env_open(env, dir.c_str(), 0, 0640), 0);
  MDB_txn* txn;
  ASSERT_EQ(mdb_txn_begin(env, nullptr, 0, &txn), 0);
  MDB_dbi meta;
  ASSERT_EQ(mdb_dbi_open(txn, "meta", MDB_CREATE, &meta), 0);
  std::string v;
  lmdb::PutBE32(&v, version);
  MDB_val k{14, const_cast<char*>("format_version")}, d{4, v.data()};
  ASSERT_EQ(mdb_put(txn, meta, &k, &d, 0), 0);
  ASSERT_EQ(mdb_txn_commit(txn), 0);
  mdb_env_close(env);
}

TEST(Store, CreatesOnFirstUseAndReopens) {
  TempDir dir;
  { ASSERT_NE(test::OpenStore(dir / "s"), nullptr); }
  struct stat st;
  EXPECT_EQ(::stat((dir / "s/data.mdb").c_str(), &st), 0);
  EXPECT_EQ(::stat((dir / "s/staging").c_str(), &st), 0);
  auto again = test::OpenStore(dir / "s");
  ASSERT_NE(again, nullptr);
  EXPECT_EQ(test::Count(*again), test::Counts{});
}

TEST(Store, MissingStoreIsNotFoundWithoutCreate) {
  TempDir dir;
  StoreOptions o;
  o.dir = dir / "absent";
  o.create_if_missing = false;
  auto s = Store::Open(o);
  EXPECT_TRUE(s.status().Is(Code::kNotFound)) << s.status().ToString();
}

TEST(Store, RefusesUnknownFormatVersionAndWritesNothing) {
  TempDir dir;
  { ASSERT_NE(test::OpenStore(dir / "s"), nullptr); }
  SetRawFormatVersion(dir / "s", 2);
  const std::string before = test::ReadFile(dir / "s/data.mdb");
  StoreOptions o;
  o.dir = dir / "s";
  auto s = Store::Open(o);
  ASSERT_TRUE(s.status().Is(Code::kUnsupported)) << s.status().ToString();
  EXPECT_NE(s.status().message().find("format version 2"), std::string::npos) << s.status().message();
  EXPECT_NE(s.status().message().find("version 1"), std::string::npos) << s.status().message();
  EXPECT_EQ(test::ReadFile(dir / "s/data.mdb"), before) << "a refused store was written to";
}

TEST(Store, RefusesAForeignLmdbEnvironment) {
  TempDir dir;
  ::mkdir((dir / "foreign").c_str(), 0700);
  MDB_env* env;
  ASSERT_EQ(mdb_env_create(&env), 0);
  ASSERT_EQ(mdb_env_open(env, (dir / "foreign").c_str(), 0, 0640), 0);
  MDB_txn* txn;
  ASSERT_EQ(mdb_txn_begin(env, nullptr, 0, &txn), 0);
  MDB_dbi dbi;
  ASSERT_EQ(mdb_dbi_open(txn, nullptr, 0, &dbi), 0);
  MDB_val k{3, const_cast<char*>("key")}, v{3, const_cast<char*>("val")};
  ASSERT_EQ(mdb_put(txn, dbi, &k, &v, 0), 0);
  ASSERT_EQ(mdb_txn_commit(txn), 0);
  mdb_env_close(env);
  StoreOptions o;
  o.dir = dir / "foreign";
  auto s = Store::Open(o);
  EXPECT_TRUE(s.status().Is(Code::kUnsupported)) << s.status().ToString();
}

TEST(Store, ReadsSpanChunksAndCheckEachChunk) {
  TempDir dir;
  auto store = test::OpenStore(dir / "s");
  std::string big;
  for (size_t i = 0; i < 3 * kChunkSize + 1000; ++i) big.push_back(char('a' + (i * 7919) % 26));
  test::PackSpec spec;
  spec.hooks.push_back({"app", ""});
  ObjectId blob = spec.Blob(big);
  spec.Release("app", spec.AddTree({test::File("big", big)}));
  Ledger ledger(store.get());
  ApplyReport rep = ApplyPackFile(&ledger, spec.WriteTo(dir / "p.pack"), {});
  ASSERT_TRUE(rep.Verdict().ok()) << rep.ToJson().dump();

  auto read = [&](uint64_t off, size_t len, std::string* out) {
    auto view = store->Read();
    EXPECT_TRUE(view.ok());
    std::vector<std::span<const uint8_t>> spans;
    Status st = view->ReadBlob(blob, off, len, &spans);
    out->clear();
    for (auto s : spans) out->append(reinterpret_cast<const char*>(s.data()), s.size());
    return st;
  };
  std::string got;
  ASSERT_TRUE(read(kChunkSize - 10, 2 * kChunkSize, &got).ok());
  EXPECT_EQ(got, big.substr(kChunkSize - 10, 2 * kChunkSize));
  ASSERT_TRUE(read(big.size() - 5, 100, &got).ok());
  EXPECT_EQ(got, big.substr(big.size() - 5));
  ASSERT_TRUE(read(big.size() + 1, 10, &got).ok());
  EXPECT_TRUE(got.empty());

  // Flip one byte of chunk 1 behind the store's back.
  const uint64_t writer = store->Read()->GetBlobInfo(blob)->writer;
  {
    auto txn = store->BeginWrite();
    ASSERT_TRUE(txn.ok());
    auto cur = txn->Get(store->tables().chunks, ChunkKey(blob, writer, 1));
    ASSERT_TRUE(cur.ok());
    std::string bad(*cur);
    bad[100] ^= 0x01;
    ASSERT_TRUE(txn->Put(store->tables().chunks, ChunkKey(blob, writer, 1), bad).ok());
    ASSERT_TRUE(txn->Commit().ok());
  }
  Status st = read(kChunkSize - 10, 20, &got);  // touches chunks 0 and 1
  ASSERT_TRUE(st.Is(Code::kCorruption)) << st.ToString();
  EXPECT_NE(st.message().find(blob.Hex()), std::string::npos);
  EXPECT_NE(st.message().find("chunk 1"), std::string::npos);
  EXPECT_TRUE(got.empty()) << "corrupt read handed out bytes";
  EXPECT_EQ(st.ToErrno(), EIO);
  // The rest of the file still reads.
  ASSERT_TRUE(read(2 * kChunkSize, 100, &got).ok());
  EXPECT_EQ(got, big.substr(2 * kChunkSize, 100));
}

}  // namespace
}  // namespace hookfs
