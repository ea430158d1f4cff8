// incoming/: packs being written (spool files in the store's staging dir)
// and the results of the packs applied (files in STORE/results/).
//
// Lifecycle (docs/mount.md "incoming/"):
//   create/open  -> a Spool: a file in staging/, flock'd while it exists so
//                   the store's Open (another process) never reclaims it
//   write        -> pwrite into the spool; marks it dirty
//   flush        -> dirty and not dot-named: apply it (Publish); the verdict
//                   is flush's answer, so close() returns it
//   rename .x -> x  publishes the same way; the rename returns the verdict
// After a verdict the name disappears and NAME.result appears. Packs are
// never held in memory.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "hookfs/apply.h"
#include "hookfs/ledger.h"
#include "hookfs/status.h"

namespace hookfs::fs {

class Spool {
 public:
  static Result<std::shared_ptr<Spool>> Create(const std::string& staging_dir, uint64_t serial,
                                               uid_t owner, gid_t group);
  ~Spool();
  Spool(const Spool&) = delete;
  Spool& operator=(const Spool&) = delete;

  Status Write(const void* data, size_t n, off_t off);
  Status Truncate(off_t size);
  Result<size_t> Read(void* data, size_t n, off_t off);
  uint64_t Size() const;

  const std::string& path() const { return path_; }
  uint64_t serial() const { return serial_; }
  uid_t owner() const { return owner_; }
  gid_t group() const { return group_; }
  int64_t mtime() const { return mtime_; }

  // Serializes writes with the apply that reads the file.
  std::mutex mu;
  bool dirty = false;     // writes since the last flush (guarded by mu)
  bool consumed = false;  // applied or removed (guarded by mu)

 private:
  Spool(std::string path, int fd, uint64_t serial, uid_t owner, gid_t group);
  std::string path_;
  int fd_;
  uint64_t serial_;
  uid_t owner_;
  gid_t group_;
  int64_t mtime_;
};

struct IncomingEntry {
  std::string name;
  bool is_result = false;
  std::shared_ptr<Spool> spool;  // when !is_result
};

struct ResultStat {
  uint64_t size = 0;
  int64_t mtime = 0;
  uint64_t ino = 0;  // the file's inode in results/, names one incarnation
  uid_t uid = 0;
};

class Incoming {
 public:
  Incoming(Ledger* ledger, std::string staging_dir, std::string results_dir);
  Status Init();

  static bool IsStaging(const std::string& name) { return !name.empty() && name[0] == '.'; }
  static bool IsResultName(const std::string& name);
  // A name a pack may have in incoming/.
  static Status ValidatePackName(const std::string& name);

  std::shared_ptr<Spool> Find(const std::string& name) const;
  // A new spool under `name` (replacing one of the same name unless `excl`).
  Result<std::shared_ptr<Spool>> Create(const std::string& name, bool excl, uid_t owner, gid_t group);
  // Removes the spool `name` (rm). NotFound if absent.
  Status Remove(const std::string& name);
  // Renames a spool. Publishes when `to` is not dot-named: the verdict.
  Status Rename(const std::string& from, const std::string& to, bool noreplace, const Actor& who);
  // Applies the spool under `name` if it is dirty and not dot-named. The
  // verdict (OK, Malformed, NoSpace, IOError) is the flush's answer.
  Status FlushPublish(const std::shared_ptr<Spool>& spool, const std::string& name, const Actor& who);
  // The name a spool is currently listed under ("" if none).
  std::string NameOf(const std::shared_ptr<Spool>& spool) const;

  // NAME.result files.
  Result<ResultStat> StatResult(const std::string& name) const;
  Result<int> OpenResult(const std::string& name) const;  // read-only fd
  Status RemoveResult(const std::string& name);

  std::vector<IncomingEntry> List() const;
  size_t active_spools() const;

 private:
  Status Publish(const std::shared_ptr<Spool>& spool, const std::string& name, const Actor& who);
  Status WriteResult(const std::string& name, const std::string& json, uid_t owner);

  Ledger* ledger_;
  std::string staging_dir_;
  std::string results_dir_;
  mutable std::mutex mu_;
  std::map<std::string, std::shared_ptr<Spool>> spools_;
  std::atomic<uint64_t> next_serial_{1};
};

}  // namespace hookfs::fs
