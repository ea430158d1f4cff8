#include <lmdb.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <thread>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "hookfs/apply.h"
#include "hookfs/env.h"
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

// Issue 8c: without O_TMPFILE, another process's sweep at Store::Open could
// lock and unlink a session's lock file between its O_CREAT and its flock;
// the next Open then found no lock file and reclaimed the live session's
// chunks. The Env seam forces the fallback and runs the sweep exactly there.
class SweepBetweenCreateAndLock : public EnvWrapper {
 public:
  SweepBetweenCreateAndLock() : EnvWrapper(Env::Default()) {}
  Store* store = nullptr;
  int sweeps = 0;
  int Open(const char* path, int flags, mode_t mode) override {
    if ((flags & O_TMPFILE) == O_TMPFILE) {
      errno = EOPNOTSUPP;  // a filesystem without O_TMPFILE
      return -1;
    }
    return EnvWrapper::Open(path, flags, mode);
  }
  int Flock(int fd, int op) override {
    if (store && op == LOCK_EX && sweeps == 0) {
      ++sweeps;
      EXPECT_TRUE(store->ReclaimAbandoned().ok());  // "another process" opens the store right now
    }
    return EnvWrapper::Flock(fd, op);
  }
};

TEST(StoreTest, SweepBetweenCreateAndLockCannotTakeALiveSession) {
  TempDir dir;
  SweepBetweenCreateAndLock env;
  StoreOptions o;
  o.env = &env;
  auto store = test::OpenStore(dir / "store", o);
  ASSERT_NE(store, nullptr);
  env.store = store.get();
  auto session = ChunkSession::Begin(store.get());
  ASSERT_TRUE(session.ok()) << session.status().ToString();
  EXPECT_EQ(env.sweeps, 1);
  env.store = nullptr;
  const std::string content = "live chunk";
  ObjectId id = Sha256::Of(content);
  auto fresh = (*session)->BeginBlob(id, content.size());
  ASSERT_TRUE(fresh.ok() && *fresh);
  ASSERT_TRUE((*session)->PutChunk(id, 0, content.data(), content.size()).ok());
  ASSERT_TRUE((*session)->Flush().ok());
  // The next Open's recovery must see the session as alive.
  ASSERT_TRUE(store->ReclaimAbandoned().ok());
  test::Counts c = test::Count(*store);
  EXPECT_EQ(c.chunks, 1u) << "a live session's chunks were reclaimed: " << test::ToString(c);
  EXPECT_GT(c.pending, 0u);
}

// Spooling a piped pack into staging/ on a full disk: NoSpace (ENOSPC), and
// nothing is left behind.
class FullDiskWrites : public EnvWrapper {
 public:
  FullDiskWrites() : EnvWrapper(Env::Default()) {}
  ssize_t Write(int, const void*, size_t) override {
    errno = ENOSPC;
    return -1;
  }
};

TEST(StoreTest, PipedPackOnAFullDiskIsNoSpace) {
  TempDir dir;
  FullDiskWrites env;
  StoreOptions o;
  o.env = &env;
  auto store = test::OpenStore(dir / "store", o);
  ASSERT_NE(store, nullptr);
  Ledger ledger(store.get());
  test::PackSpec spec;
  spec.hooks.push_back({"p", ""});
  spec.Release("p", spec.AddTree({test::File("f", "x")}));
  spec.Blob("x");
  const std::string bytes = spec.Bytes();
  int p[2];
  ASSERT_EQ(::pipe(p), 0);
  std::thread w([&] {
    (void)!::write(p[1], bytes.data(), bytes.size());
    ::close(p[1]);
  });
  ApplyReport rep = ApplyPack(&ledger, p[0], {});
  w.join();
  ::close(p[0]);
  EXPECT_TRUE(rep.status.Is(Code::kNoSpace)) << rep.status.ToString();
  EXPECT_EQ(rep.status.ToErrno(), ENOSPC);
  test::Counts c = test::Count(*store);
  EXPECT_EQ(c.chunks + c.blobs + c.pending + c.releases, 0u) << test::ToString(c);
}

}  // namespace
}  // namespace hookfs
