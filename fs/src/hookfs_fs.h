// HookFs: the FUSE low-level operations of the hookfs mount.
//
// Every handler lives in the one fuse_lowlevel_ops table returned by Ops();
// each is a thin layer over Store (reads), Ledger (pointers, runs) and
// Incoming (publishing). No exception leaves a handler: the trampolines turn
// one into EIO and a log line. See docs/mount.md for the inode scheme,
// caching, invalidation, lock order and permission model.
#pragma once

#define FUSE_USE_VERSION 312
#include <fuse_lowlevel.h>

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <tuple>
#include <vector>

#include "hookfs/ledger.h"
#include "hookfs/store.h"
#include "file_times.h"
#include "incoming.h"
#include "inode_table.h"
#include "invalidator.h"
#include "policy.h"

namespace hookfs::fs {

struct FsOptions {
  Policy policy;
  unsigned max_readahead_kb = 1024;
  // Called on the worker thread after every publish verdict (main: STATUS=).
  std::function<void()> after_publish;
};

class HookFs {
 public:
  explicit HookFs(FsOptions options);
  ~HookFs();
  HookFs(const HookFs&) = delete;
  HookFs& operator=(const HookFs&) = delete;

  // The store, ledger and incoming area the handlers serve. Before the loop.
  void Attach(Store* store, Ledger* ledger, Incoming* incoming);

  static const fuse_lowlevel_ops& Ops();
  Invalidator& invalidator() { return invalidator_; }
  InodeTable& table() { return table_; }

  // ---- handlers (public for the trampolines; not an API) ----
  void Init(fuse_conn_info* conn);
  void Lookup(fuse_req_t req, fuse_ino_t parent, const char* name);
  void Forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup);
  void ForgetMulti(fuse_req_t req, size_t count, fuse_forget_data* forgets);
  void GetAttr(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi);
  void SetAttr(fuse_req_t req, fuse_ino_t ino, struct stat* attr, int to_set, fuse_file_info* fi);
  void ReadLink(fuse_req_t req, fuse_ino_t ino);
  void MkNod(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode, dev_t rdev);
  void MkDir(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode);
  void Unlink(fuse_req_t req, fuse_ino_t parent, const char* name);
  void RmDir(fuse_req_t req, fuse_ino_t parent, const char* name);
  void Symlink(fuse_req_t req, const char* link, fuse_ino_t parent, const char* name);
  void Rename(fuse_req_t req, fuse_ino_t parent, const char* name, fuse_ino_t newparent,
              const char* newname, unsigned int flags);
  void Link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t newparent, const char* newname);
  void Open(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi);
  void Read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info* fi);
  void Write(fuse_req_t req, fuse_ino_t ino, const char* buf, size_t size, off_t off,
             fuse_file_info* fi);
  void Flush(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi);
  void Release(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi);
  void Fsync(fuse_req_t req, fuse_ino_t ino, int datasync, fuse_file_info* fi);
  void OpenDir(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi);
  void ReadDir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info* fi);
  void ReadDirPlus(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info* fi);
  void ReleaseDir(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi);
  void FsyncDir(fuse_req_t req, fuse_ino_t ino, int datasync, fuse_file_info* fi);
  void StatFs(fuse_req_t req, fuse_ino_t ino);
  void SetXattr(fuse_req_t req, fuse_ino_t ino, const char* name, const char* value, size_t size,
                int flags);
  void GetXattr(fuse_req_t req, fuse_ino_t ino, const char* name, size_t size);
  void ListXattr(fuse_req_t req, fuse_ino_t ino, size_t size);
  void RemoveXattr(fuse_req_t req, fuse_ino_t ino, const char* name);
  void Create(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode, fuse_file_info* fi);

 private:
  struct Handle;
  struct DirHandle;
  struct PendingKey {
    std::string hook;
    bool in_tags;
    std::string name;
    auto operator<=>(const PendingKey&) const = default;
  };
  struct Pending {
    std::string target;
    std::chrono::steady_clock::time_point created;
  };

  // Resolution.
  Result<Node> Child(fuse_ino_t dir_ino, const Node& dir, const std::string& name);
  Result<std::vector<Node>> Children(fuse_ino_t dir_ino, const Node& dir);
  void AppendPending(fuse_ino_t dir_ino, const Node& dir, bool in_tags, std::vector<Node>* out);
  Result<std::vector<std::string>> HookNames();
  Result<Node> TreeChild(fuse_ino_t dir_ino, const Node& dir, const TreeEntry& e, const EntryTimes::Stamp& times);
  Result<std::string> Content(const Node& n);
  std::string Target(const Node& n) const;
  Result<struct stat> Attr(fuse_ino_t ino, const Node& n);
  double EntryTimeout(const Node& n) const;
  double AttrTimeout(const Node& n) const;
  static bool Immutable(const Node& n);
  static int ReadOnlyErrno(const Node& n);

  // Binds and replies an entry (forgets it again if the reply fails).
  void ReplyEntry(fuse_req_t req, Node node);
  void ReplyStatus(fuse_req_t req, const Status& s, const char* op);

  // Pointers.
  Status CommitPointer(fuse_req_t req, fuse_ino_t dir_ino, const Node& dir, const std::string& name,
                       const std::string& target);
  void InvalidatePointer(fuse_ino_t dir_ino, const std::string& name);
  std::optional<Pending> TakePending(const PendingKey& k, bool erase);
  Status AddPending(const PendingKey& k, std::string target);
  void AfterPublish(const std::string& pack_name);

  // Reads.
  void ReadBlob(fuse_req_t req, const ObjectId& id, size_t size, off_t off);
  void ReadJournal(fuse_req_t req, Handle* h, size_t size, off_t off);
  Status FillJournal(Handle* h, size_t size, off_t off, std::string* out);
  Status FillDir(fuse_req_t req, DirHandle* d, fuse_ino_t ino, const Node& dir, off_t off, bool plus,
                 std::vector<char>* buf, size_t* used);
  void DirReply(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info* fi, bool plus);

  FsOptions options_;
  Store* store_ = nullptr;
  Ledger* ledger_ = nullptr;
  Incoming* incoming_ = nullptr;
  InodeTable table_;
  Invalidator invalidator_;
  int64_t start_time_;

  std::mutex pending_mu_;
  std::map<PendingKey, Pending> pending_;
};

}  // namespace hookfs::fs
