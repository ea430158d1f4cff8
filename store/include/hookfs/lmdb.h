// Thin RAII owners over LMDB, shared by store/ and ledger/.
//
// Every LMDB return code becomes a Status in exactly one place (LmdbStatus).
// A Txn aborts in its destructor unless committed. Read txns are per request,
// never per open file (a long reader pins old pages and grows the file).
#pragma once

#include <lmdb.h>

#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

#include "hookfs/status.h"

namespace hookfs::lmdb {

// The one translation of LMDB return codes. `context` says what was being done.
Status LmdbStatus(int rc, std::string_view context);

inline MDB_val Val(std::string_view s) {
  return MDB_val{s.size(), const_cast<char*>(s.data())};
}
inline std::string_view View(const MDB_val& v) {
  return {static_cast<const char*>(v.mv_data), v.mv_size};
}

class Txn {
 public:
  Txn() = default;
  Txn(Txn&& o) noexcept : txn_(o.txn_) { o.txn_ = nullptr; }
  Txn& operator=(Txn&& o) noexcept {
    if (this != &o) { Abort(); txn_ = o.txn_; o.txn_ = nullptr; }
    return *this;
  }
  Txn(const Txn&) = delete;
  Txn& operator=(const Txn&) = delete;
  ~Txn() { Abort(); }

  static Result<Txn> Begin(MDB_env* env, bool write);
  Status Commit();
  void Abort() {
    if (txn_) { mdb_txn_abort(txn_); txn_ = nullptr; }
  }
  MDB_txn* get() const { return txn_; }
  explicit operator bool() const { return txn_ != nullptr; }

  // NotFound when absent. The view points into the map: valid until this txn
  // ends or writes.
  Result<std::string_view> Get(MDB_dbi dbi, std::string_view key) const;
  Status Put(MDB_dbi dbi, std::string_view key, std::string_view value, unsigned flags = 0);
  // Space for `n` bytes under `key`, to fill before the next write in this txn.
  Result<char*> Reserve(MDB_dbi dbi, std::string_view key, size_t n);
  // OK if deleted or absent.
  Status Del(MDB_dbi dbi, std::string_view key);
  Result<bool> Has(MDB_dbi dbi, std::string_view key) const;

 private:
  MDB_txn* txn_ = nullptr;
};

// True when the filesystem holding `env` has (almost) no space left: what
// turns LMDB's EIO for a short write into NoSpace.
bool DiskNearlyFull(MDB_env* env);

class Cursor {
 public:
  static Result<Cursor> Open(const Txn& txn, MDB_dbi dbi);
  Cursor(Cursor&& o) noexcept : c_(o.c_) { o.c_ = nullptr; }
  Cursor(const Cursor&) = delete;
  Cursor& operator=(const Cursor&) = delete;
  ~Cursor() { if (c_) mdb_cursor_close(c_); }

  // Positions at the first key >= `key`. False at the end.
  Result<bool> Seek(std::string_view key);
  Result<bool> First();
  Result<bool> Last();
  Result<bool> Next();
  Result<bool> Prev();
  std::string_view key() const { return View(k_); }
  std::string_view value() const { return View(v_); }

 private:
  explicit Cursor(MDB_cursor* c) : c_(c) {}
  Result<bool> Op(MDB_cursor_op op);
  MDB_cursor* c_ = nullptr;
  MDB_val k_{0, nullptr}, v_{0, nullptr};
};

// Fixed-width big-endian keys sort numerically under LMDB's memcmp order.
inline void PutBE32(std::string* s, uint32_t v) {
  char b[4] = {char(v >> 24), char(v >> 16), char(v >> 8), char(v)};
  s->append(b, 4);
}
inline void PutBE64(std::string* s, uint64_t v) {
  PutBE32(s, uint32_t(v >> 32));
  PutBE32(s, uint32_t(v));
}
inline uint32_t GetBE32(const char* p) {
  auto u = reinterpret_cast<const unsigned char*>(p);
  return uint32_t(u[0]) << 24 | uint32_t(u[1]) << 16 | uint32_t(u[2]) << 8 | u[3];
}
inline uint64_t GetBE64(const char* p) {
  return uint64_t(GetBE32(p)) << 32 | GetBE32(p + 4);
}

}  // namespace hookfs::lmdb
