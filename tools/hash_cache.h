// HashCache: file ids remembered by inode and timestamps, so that packing a
// tree again hashes only what changed (like git's index).
//
// An entry is (st_dev, st_ino) -> (size, mtime ns, ctime ns, id) and is used
// only if all three still match lstat. Entries are recorded only for files
// whose mtime and ctime are older than the start of the run minus a settle
// window, so a file rewritten within one timestamp tick of being hashed is
// never trusted (the "racy git" problem). The cache is advisory: any failure
// to open, read or write it just means hashing. A wrong id could only make
// the store reject the pack, never store wrong bytes: the store re-hashes.
#pragma once

#include <sys/stat.h>

#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>

#include "hookfs/object_id.h"

namespace hookfs {

class HashCache {
 public:
  // `dir` is created if missing; nullptr if the cache cannot be used.
  static std::unique_ptr<HashCache> Open(const std::string& dir, int64_t settle_ns);
  // $HOOKFS_HASH_CACHE, else ${XDG_CACHE_HOME:-~/.cache}/hookfs.
  static std::string DefaultDir();
  ~HashCache();

  // Thread-safe.
  std::optional<ObjectId> Get(const struct stat& st) const;
  void Put(const struct stat& st, const ObjectId& id);
  // Writes this run's new entries in one transaction.
  void Save();

  size_t hits() const { return hits_; }

 private:
  struct Entry {
    uint64_t size, mtime_ns, ctime_ns;
    ObjectId id;
  };
  struct KeyHash {
    size_t operator()(const std::pair<uint64_t, uint64_t>& k) const { return k.first * 0x9e3779b97f4a7c15ull ^ k.second; }
  };
  using Key = std::pair<uint64_t, uint64_t>;
  HashCache() = default;

  void* env_ = nullptr;  // MDB_env
  unsigned dbi_ = 0;
  int64_t cutoff_ns_ = 0;
  mutable std::mutex mu_;
  std::unordered_map<Key, Entry, KeyHash> loaded_, fresh_;
  mutable size_t hits_ = 0;
};

}  // namespace hookfs
