#include "hookfs/lmdb.h"

#include <sys/statvfs.h>

#include <cerrno>

namespace hookfs::lmdb {

Status LmdbStatus(int rc, std::string_view context) {
  if (rc == MDB_SUCCESS) return Status::OK();
  std::string m(context);
  m += ": ";
  m += mdb_strerror(rc);
  switch (rc) {
    case MDB_NOTFOUND: return Status::NotFound(std::move(m));
    case MDB_KEYEXIST: return Status::Exists(std::move(m));
    case MDB_MAP_FULL:
    case ENOSPC:
    case EDQUOT: return Status::NoSpace(std::move(m));
    case MDB_CORRUPTED:
    case MDB_PAGE_NOTFOUND:
    case MDB_INVALID:
    case MDB_BAD_DBI: return Status::Corruption(std::move(m));
    case MDB_VERSION_MISMATCH: return Status::Unsupported(std::move(m));
    case MDB_READERS_FULL:
    case MDB_MAP_RESIZED: return Status::Busy(std::move(m));
    case EACCES: return Status::PermissionDenied(std::move(m));
    case EROFS: return Status::ReadOnly(std::move(m));
    default: return Status::IOError(std::move(m));  // MDB_PANIC, EIO, MDB_BAD_TXN, ...
  }
}

Result<Txn> Txn::Begin(MDB_env* env, bool write) {
  Txn t;
  int rc = mdb_txn_begin(env, nullptr, write ? 0 : MDB_RDONLY, &t.txn_);
  if (rc != MDB_SUCCESS) {
    t.txn_ = nullptr;
    return LmdbStatus(rc, write ? "begin write txn" : "begin read txn");
  }
  return t;
}

Status Txn::Commit() {
  if (!txn_) return Status::IOError("commit of a finished txn");
  MDB_env* env = mdb_txn_env(txn_);
  int rc = mdb_txn_commit(txn_);
  txn_ = nullptr;  // committed or freed either way
  // LMDB reports a short write (the disk filled mid-write) as EIO; a full
  // disk is NoSpace (ENOSPC) to every caller, never an I/O error.
  if (rc == EIO && DiskNearlyFull(env)) return Status::NoSpace("commit: short write, the store's disk is full");
  return LmdbStatus(rc, "commit");
}

bool DiskNearlyFull(MDB_env* env) {
  const char* path = nullptr;
  struct statvfs vfs;
  if (!env || mdb_env_get_path(env, &path) != MDB_SUCCESS || !path || ::statvfs(path, &vfs) != 0) return false;
  // Less than 1 MiB left (or a quota hit) explains a short write.
  return uint64_t(vfs.f_bavail) * vfs.f_frsize < (1u << 20);
}

Result<std::string_view> Txn::Get(MDB_dbi dbi, std::string_view key) const {
  MDB_val k = Val(key), v;
  int rc = mdb_get(txn_, dbi, &k, &v);
  if (rc != MDB_SUCCESS) return LmdbStatus(rc, "get");
  return View(v);
}

Result<bool> Txn::Has(MDB_dbi dbi, std::string_view key) const {
  MDB_val k = Val(key), v;
  int rc = mdb_get(txn_, dbi, &k, &v);
  if (rc == MDB_NOTFOUND) return false;
  if (rc != MDB_SUCCESS) return LmdbStatus(rc, "get");
  return true;
}

Status Txn::Put(MDB_dbi dbi, std::string_view key, std::string_view value, unsigned flags) {
  MDB_val k = Val(key), v = Val(value);
  return LmdbStatus(mdb_put(txn_, dbi, &k, &v, flags), "put");
}

Result<char*> Txn::Reserve(MDB_dbi dbi, std::string_view key, size_t n) {
  MDB_val k = Val(key), v{n, nullptr};
  int rc = mdb_put(txn_, dbi, &k, &v, MDB_RESERVE);
  if (rc != MDB_SUCCESS) return LmdbStatus(rc, "reserve");
  return static_cast<char*>(v.mv_data);
}

Status Txn::Del(MDB_dbi dbi, std::string_view key) {
  MDB_val k = Val(key);
  int rc = mdb_del(txn_, dbi, &k, nullptr);
  if (rc == MDB_NOTFOUND) return Status::OK();
  return LmdbStatus(rc, "delete");
}

Result<Cursor> Cursor::Open(const Txn& txn, MDB_dbi dbi) {
  MDB_cursor* c = nullptr;
  int rc = mdb_cursor_open(txn.get(), dbi, &c);
  if (rc != MDB_SUCCESS) return LmdbStatus(rc, "open cursor");
  return Cursor(c);
}

Result<bool> Cursor::Op(MDB_cursor_op op) {
  int rc = mdb_cursor_get(c_, &k_, &v_, op);
  if (rc == MDB_NOTFOUND) return false;
  if (rc != MDB_SUCCESS) return LmdbStatus(rc, "cursor");
  return true;
}

Result<bool> Cursor::Seek(std::string_view key) {
  k_ = Val(key);
  return Op(MDB_SET_RANGE);
}
Result<bool> Cursor::First() { return Op(MDB_FIRST); }
Result<bool> Cursor::Last() { return Op(MDB_LAST); }
Result<bool> Cursor::Next() { return Op(MDB_NEXT); }
Result<bool> Cursor::Prev() { return Op(MDB_PREV); }

}  // namespace hookfs::lmdb
