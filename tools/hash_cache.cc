#include "hash_cache.h"

#include <lmdb.h>
#include <sys/time.h>

#include <cstdlib>
#include <filesystem>

#include "hookfs/lmdb.h"

namespace hookfs {

namespace {
constexpr size_t kValueSize = 8 * 3 + ObjectId::kSize;
constexpr size_t kMaxEntries = 4u << 20;  // past this, keep only the latest run

uint64_t Ns(const struct timespec& ts) { return uint64_t(ts.tv_sec) * 1000000000ull + uint64_t(ts.tv_nsec); }

std::string KeyBytes(uint64_t dev, uint64_t ino) {
  std::string k;
  lmdb::PutBE64(&k, dev);
  lmdb::PutBE64(&k, ino);
  return k;
}
}  // namespace

std::string HashCache::DefaultDir() {
  if (const char* d = std::getenv("HOOKFS_HASH_CACHE"); d && *d) return d;
  if (const char* x = std::getenv("XDG_CACHE_HOME"); x && *x) return std::string(x) + "/hookfs";
  const char* home = std::getenv("HOME");
  return std::string(home && *home ? home : "/tmp") + "/.cache/hookfs";
}

std::unique_ptr<HashCache> HashCache::Open(const std::string& dir, int64_t settle_ns) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  std::unique_ptr<HashCache> c(new HashCache());
  struct timeval tv;
  ::gettimeofday(&tv, nullptr);
  c->cutoff_ns_ = int64_t(tv.tv_sec) * 1000000000ll + tv.tv_usec * 1000ll - settle_ns;
  MDB_env* env = nullptr;
  if (mdb_env_create(&env) != 0) return nullptr;
  mdb_env_set_mapsize(env, 1ull << 30);
  if (mdb_env_open(env, (dir + "/hashes.mdb").c_str(), MDB_NOSUBDIR | MDB_NOTLS, 0600) != 0) {
    mdb_env_close(env);
    return nullptr;
  }
  c->env_ = env;
  MDB_txn* txn = nullptr;
  if (mdb_txn_begin(env, nullptr, 0, &txn) != 0) return nullptr;
  MDB_dbi dbi;
  if (mdb_dbi_open(txn, nullptr, 0, &dbi) != 0) {
    mdb_txn_abort(txn);
    return nullptr;
  }
  c->dbi_ = dbi;
  MDB_cursor* cur = nullptr;
  if (mdb_cursor_open(txn, dbi, &cur) == 0) {
    MDB_val k, v;
    for (int rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0; rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
      if (k.mv_size != 16 || v.mv_size != kValueSize) continue;  // not ours: ignore
      auto kp = static_cast<const char*>(k.mv_data);
      auto vp = static_cast<const char*>(v.mv_data);
      c->loaded_[{lmdb::GetBE64(kp), lmdb::GetBE64(kp + 8)}] =
          Entry{lmdb::GetBE64(vp), lmdb::GetBE64(vp + 8), lmdb::GetBE64(vp + 16), ObjectId::FromBytes(vp + 24)};
    }
    mdb_cursor_close(cur);
  }
  mdb_txn_commit(txn);
  return c;
}

HashCache::~HashCache() {
  if (env_) mdb_env_close(static_cast<MDB_env*>(env_));
}

std::optional<ObjectId> HashCache::Get(const struct stat& st) const {
  auto it = loaded_.find({uint64_t(st.st_dev), uint64_t(st.st_ino)});
  if (it == loaded_.end()) return std::nullopt;
  const Entry& e = it->second;
  if (e.size != uint64_t(st.st_size) || e.mtime_ns != Ns(st.st_mtim) || e.ctime_ns != Ns(st.st_ctim)) return std::nullopt;
  std::lock_guard<std::mutex> g(mu_);
  ++hits_;
  return e.id;
}

void HashCache::Put(const struct stat& st, const ObjectId& id) {
  // Too young to trust: a rewrite within the same timestamp tick would look unchanged.
  if (int64_t(Ns(st.st_mtim)) >= cutoff_ns_ || int64_t(Ns(st.st_ctim)) >= cutoff_ns_) return;
  std::lock_guard<std::mutex> g(mu_);
  fresh_[{uint64_t(st.st_dev), uint64_t(st.st_ino)}] =
      Entry{uint64_t(st.st_size), Ns(st.st_mtim), Ns(st.st_ctim), id};
}

void HashCache::Save() {
  if (fresh_.empty()) return;
  auto env = static_cast<MDB_env*>(env_);
  MDB_txn* txn = nullptr;
  if (mdb_txn_begin(env, nullptr, 0, &txn) != 0) return;
  if (loaded_.size() + fresh_.size() > kMaxEntries) mdb_drop(txn, dbi_, 0);
  for (const auto& [key, e] : fresh_) {
    std::string k = KeyBytes(key.first, key.second), v;
    lmdb::PutBE64(&v, e.size);
    lmdb::PutBE64(&v, e.mtime_ns);
    lmdb::PutBE64(&v, e.ctime_ns);
    v.append(e.id.AsKey());
    MDB_val mk = lmdb::Val(k), mv = lmdb::Val(v);
    if (mdb_put(txn, dbi_, &mk, &mv, 0) != 0) {
      mdb_txn_abort(txn);
      return;
    }
  }
  mdb_txn_commit(txn);
}

}  // namespace hookfs
