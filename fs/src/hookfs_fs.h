// HookFs: the FUSE adapter of the hookfs mount.
//
// Every handler lives in the one fuse_lowlevel_ops table returned by Ops();
// each only translates a request into a call of the Namespace
// (hookfs/namespace.h: resolution, attributes, permission checks, pointers,
// runs, incoming/) and its answer into a reply; blob reads go straight to the
// Store. No exception leaves a handler: the trampolines turn one into EIO and
// a log line, and never reply twice. See docs/namespace.md and docs/mount.md.
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
#include "hookfs/namespace.h"
#include "hookfs/store.h"
#include "incoming.h"
#include "inode_table.h"
#include "invalidator.h"
#include "policy.h"
#include "publish_queue.h"

namespace hookfs::fs {

struct FsOptions {
  Policy policy;
  unsigned max_readahead_kb = 1024;
  // Called on the apply worker after every publish verdict (main: STATUS=).
  std::function<void()> after_publish;
  // Apply workers and queued publishes beyond them (docs/namespace.md).
  size_t publish_workers = 2;
  size_t publish_queue = 64;
  // Threads that write incoming/ spools, and writes (<= 1 MiB each) queued.
  size_t spool_writers = 2;
  size_t spool_write_queue = 16;
  // Temporary symlinks per user and their TTL (NamespaceOptions).
  size_t max_temp_links_per_user = 64;
  std::chrono::seconds temp_link_ttl{600};
  // --host: run.json's `host` (empty: the hostname).
  std::string host;
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
  // After the loop, before the session goes: runs the queued publishes and
  // stops the apply workers (their replies need the session).
  void StopPublishing();
  // The invalidation threads (docs/mount.md "Invalidation"): after the
  // session is mounted, and stopped before it goes.
  void StartInvalidators(fuse_session* se);
  void StopInvalidators();
  Namespace& ns() { return *ns_; }

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

  void ReplyEntry(fuse_req_t req, Result<Entry> e, const char* op);
  void ReplyStatus(fuse_req_t req, const Status& s, const char* op);
  void ReadBlob(fuse_req_t req, const ObjectId& id, size_t size, off_t off);
  // Blocks a publish job until the kernel was told of every pointer move so far.
  void WaitForPointers();
  void DirReply(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info* fi, bool plus);
  void CreateKey(fuse_req_t req, fuse_ino_t parent, const Node& dir, const char* name, fuse_file_info* fi);

  FsOptions options_;
  Store* store_ = nullptr;
  Invalidator invalidator_;          // incoming/, runs
  Invalidator pointer_invalidator_;  // live and tags; polls the store for other writers
  uint64_t seen_txn_ = 0;            // pointer_invalidator_'s thread only
  std::chrono::steady_clock::time_point last_change_;  // idem
  std::unique_ptr<Notifier> notifier_;
  std::unique_ptr<Catalog> catalog_;
  std::unique_ptr<Namespace> ns_;
  std::unique_ptr<PublishQueue> publish_;
  std::unique_ptr<PublishQueue> spool_writes_;
};

}  // namespace hookfs::fs
