// incoming/: packs being written (spool files in the store's staging dir)
// and the results of the packs applied (files in STORE/results/).
//
// Lifecycle (docs/mount.md "incoming/"):
//   create/open  -> a Spool: a file in staging/, flock'd while it exists so
//                   the store's Open (another process) never reclaims it
//   write        -> pwrite into the spool; marks it dirty
//   flush        -> dirty and not dot-named: apply it (Publish); the verdict
//                   is flush's answer, so close() returns it
//   release      -> the last writer of a spool never written to closed it:
//                   rejected (result written, name gone). Not at flush: a
//                   shell's `> FILE` closes a dup of the fd before writing.
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
#include <optional>
#include <string>
#include <vector>

#include "hookfs/apply.h"
#include "hookfs/ledger.h"
#include "hookfs/status.h"

namespace hookfs::fs {

// Live spools per creator: a Spool counts from its creation until its last
// handle goes (listed, staged, or unlisted but still open: each holds a
// descriptor in the daemon). Thread-safe.
class SpoolCounts {
 public:
  void Add(uid_t uid);
  void Drop(uid_t uid);
  size_t Of(uid_t uid) const;

 private:
  mutable std::mutex mu_;  // leaf lock
  std::map<uid_t, size_t> n_;
};

// What one publisher may hold in incoming/ (DESIGN.md §4, docs/security.md).
struct IncomingLimits {
  size_t max_packs_per_user = 64;               // -o max_packs_per_user=N
  std::chrono::seconds idle_timeout{600};       // -o pack_idle_timeout=SECONDS
};

class Spool {
 public:
  static Result<std::shared_ptr<Spool>> Create(const std::string& staging_dir, uint64_t serial,
                                               uid_t owner, gid_t group,
                                               std::shared_ptr<SpoolCounts> counts = nullptr);
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
  // When it was last created, written or truncated (idle expiry).
  std::chrono::steady_clock::time_point last_active() const {
    return std::chrono::steady_clock::time_point(std::chrono::steady_clock::duration(last_active_.load()));
  }
  void Touch() { last_active_.store(std::chrono::steady_clock::now().time_since_epoch().count()); }

  // Open-for-write handles (create, open O_WRONLY/O_RDWR).
  void AddWriter() { writers_.fetch_add(1); }
  // Drops one; true when that was the last writer.
  bool DropWriter() { return writers_.fetch_sub(1) == 1; }
  int writers() const { return writers_.load(); }

  // Serializes writes with the apply that reads the file. Lock order:
  // Spool::mu before Incoming::mu_ (an apply runs under it and then unlists
  // the spool); never the reverse.
  std::mutex mu;
  bool dirty = false;      // writes since the last flush (guarded by mu)
  bool consumed = false;   // applied, removed or displaced (guarded by mu)
  bool displaced = false;  // its name was taken by another create or rename
                           // before its verdict: its writer gets an error (guarded by mu)
  bool expired = false;    // nobody wrote to it for the idle timeout: rejected (guarded by mu)

 private:
  Spool(std::string path, int fd, uint64_t serial, uid_t owner, gid_t group,
        std::shared_ptr<SpoolCounts> counts);
  std::string path_;
  int fd_;
  uint64_t serial_;
  uid_t owner_;
  gid_t group_;
  int64_t mtime_;
  std::atomic<int> writers_{0};
  std::atomic<int64_t> last_active_{0};
  std::shared_ptr<SpoolCounts> counts_;
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
  void SetLimits(const IncomingLimits& limits) { limits_ = limits; }
  const IncomingLimits& limits() const { return limits_; }
  // -o require_signed: every hook is pinned (DESIGN.md §8). Before serving.
  void set_require_signed(bool on) { require_signed_ = on; }

  static bool IsStaging(const std::string& name) { return !name.empty() && name[0] == '.'; }
  static bool IsResultName(const std::string& name);
  // A name a pack may have in incoming/.
  static Status ValidatePackName(const std::string& name);

  std::shared_ptr<Spool> Find(const std::string& name) const;
  // A new spool under `name`. Unless `excl`, it replaces one of the same name,
  // which is then displaced: its writer's writes and close fail (EIO).
  // A spool or NAME.result of another user is not replaced unless `admin`
  // (PermissionDenied); past limits().max_packs_per_user live spools of
  // `owner`: Quota (EDQUOT), logged.
  Result<std::shared_ptr<Spool>> Create(const std::string& name, bool excl, uid_t owner, gid_t group,
                                        bool admin = false);
  // Rejects every listed spool nobody wrote to for limits().idle_timeout:
  // result written, name gone, its writer's next write fails. Runs at every
  // create and listing of incoming/. A spool busy in an apply is skipped.
  void ExpireIdle();
  // The uid owning NAME.result, if it exists.
  std::optional<uid_t> ResultOwner(const std::string& pack_name) const;
  // Removes the spool `name` (rm). NotFound if absent.
  Status Remove(const std::string& name);
  // Renames a spool (displacing a spool under `to`). Publishes when `to` is
  // not dot-named, as the spool's creator: the verdict. Unless `admin`, the
  // caller must own the spool, any spool under `to` and `to`.result.
  Status Rename(const std::string& from, const std::string& to, bool noreplace, uid_t caller, bool admin);
  // Applies the spool under `name` if it is dirty and not dot-named. The
  // verdict (OK, Malformed, NoSpace, IOError) is the flush's answer.
  Status FlushPublish(const std::shared_ptr<Spool>& spool, const std::string& name, const Actor& who);
  // Whether FlushPublish would apply now (dirty, listed, not dot-named).
  bool FlushWouldApply(const std::shared_ptr<Spool>& spool);
  // The last writer of `spool` (listed as `name`) closed it without writing a
  // byte: it is applied (and so rejected, its result written) at once. True
  // if it was.
  bool RejectUnwritten(const std::shared_ptr<Spool>& spool, const std::string& name, const Actor& who);
  // The name a spool is currently listed under ("" if none).
  std::string NameOf(const std::shared_ptr<Spool>& spool) const;

  // NAME.result files.
  Result<ResultStat> StatResult(const std::string& name) const;
  Result<int> OpenResult(const std::string& name) const;  // read-only fd
  Status RemoveResult(const std::string& name);

  std::vector<IncomingEntry> List();
  size_t active_spools() const;

 private:
  bool require_signed_ = false;
  Status Publish(const std::shared_ptr<Spool>& spool, const std::string& name, const Actor& who);
  Status WriteResult(const std::string& name, const std::string& json, uid_t owner);
  Status WriteResultOnce(const std::string& name, const std::string& json, uid_t owner);
  void KeepReserve();
  static void Displace(const std::shared_ptr<Spool>& spool, const std::string& name);

  Status Expire(const std::shared_ptr<Spool>& spool, const std::string& name);

  Ledger* ledger_;
  IncomingLimits limits_;
  std::shared_ptr<SpoolCounts> counts_ = std::make_shared<SpoolCounts>();
  std::string staging_dir_;
  std::string results_dir_;
  // Guards spools_ only; taken after Spool::mu, never before it.
  mutable std::mutex mu_;
  std::map<std::string, std::shared_ptr<Spool>> spools_;
  std::atomic<uint64_t> next_serial_{1};
};

}  // namespace hookfs::fs
