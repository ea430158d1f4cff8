#include "hookfs_fs.h"

#include "reply_once.h"
#include "hookfs/keys.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/uio.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cstring>
#include <ctime>
#include <optional>
#include <span>

#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

namespace hookfs::fs {

namespace {

constexpr size_t kMaxRunResult = 64 * 1024;

struct FdCloser {
  int fd = -1;
  FdCloser() = default;
  explicit FdCloser(int f) : fd(f) {}
  FdCloser(const FdCloser&) = delete;
  FdCloser& operator=(const FdCloser&) = delete;
  ~FdCloser() {
    if (fd >= 0) ::close(fd);
  }
};

bool IsWriteOpen(int flags) { return (flags & O_ACCMODE) != O_RDONLY; }

// Every reply of the adapter goes through Fuse::*: each claims the request
// first (ReplyScope), so no request is ever answered twice.
struct Fuse {
  static bool Claim(fuse_req_t req) {
    if (ReplyScope::Claim(req)) return true;
    spdlog::error("a second reply to one request suppressed");
    return false;
  }
  static int Err(fuse_req_t r, int e) { return Claim(r) ? fuse_reply_err(r, e) : -EALREADY; }
  static void None(fuse_req_t r) {
    if (Claim(r)) fuse_reply_none(r);
  }
  static int Entry(fuse_req_t r, const fuse_entry_param* e) { return Claim(r) ? fuse_reply_entry(r, e) : -EALREADY; }
  static int Create(fuse_req_t r, const fuse_entry_param* e, const fuse_file_info* fi) {
    return Claim(r) ? fuse_reply_create(r, e, fi) : -EALREADY;
  }
  static int Attr(fuse_req_t r, const struct stat* st, double t) {
    return Claim(r) ? fuse_reply_attr(r, st, t) : -EALREADY;
  }
  static int Readlink(fuse_req_t r, const char* l) { return Claim(r) ? fuse_reply_readlink(r, l) : -EALREADY; }
  static int Open(fuse_req_t r, const fuse_file_info* fi) { return Claim(r) ? fuse_reply_open(r, fi) : -EALREADY; }
  static int Write(fuse_req_t r, size_t n) { return Claim(r) ? fuse_reply_write(r, n) : -EALREADY; }
  static int Buf(fuse_req_t r, const char* b, size_t n) { return Claim(r) ? fuse_reply_buf(r, b, n) : -EALREADY; }
  static int Iov(fuse_req_t r, const iovec* v, int n) { return Claim(r) ? fuse_reply_iov(r, v, n) : -EALREADY; }
  static int Statfs(fuse_req_t r, const struct statvfs* sv) { return Claim(r) ? fuse_reply_statfs(r, sv) : -EALREADY; }
  static int Xattr(fuse_req_t r, size_t n) { return Claim(r) ? fuse_reply_xattr(r, n) : -EALREADY; }
};


}  // namespace

// An open file. Owned through fi->fh; deleted in Release.
struct HookFs::Handle {
  NodePtr node;
  // Leaf lock: guards content, dirty and journal; nothing is acquired and no
  // reply is sent while it is held (a reply may let RELEASE free the handle).
  std::mutex mu;
  std::string content;            // generated files, run result written
  std::shared_ptr<Spool> spool;   // incoming packs
  FdCloser fd;                    // incoming results
  bool writable = false;
  bool dirty = false;             // run result written since the last flush
  JournalCursor journal;
};

struct HookFs::DirHandle {
  // Leaf lock: held only to read or replace `entries`; binding and attributes
  // of the entries happen after it is released.
  std::mutex mu;
  std::shared_ptr<const std::vector<Node>> entries;
};

namespace {

// The kernel's caches, told through the invalidation thread.
class KernelNotifier : public Notifier {
 public:
  KernelNotifier(Invalidator* inv, Invalidator* pointers) : inv_(inv), pointers_(pointers) {}
  void EntryChanged(Ino dir, const std::string& name) override { inv_->Entry(dir, name); }
  void InodeChanged(Ino ino) override { inv_->Inode(ino); }
  // Pointers on their own thread: a publish waits for these (never for
  // items in incoming/, whose directory a waiting RENAME holds locked).
  void PointerChanged(Ino dir, const std::string& name, Ino old) override {
    pointers_->Entry(dir, name);
    if (old) pointers_->Inode(old);
  }

 private:
  Invalidator* inv_;
  Invalidator* pointers_;
};

// How long a publish waits for the kernel to forget the pointers it moved
// before close()/rename() returns. It always ends well before (the pointer
// invalidator only waits for locks of hooks/NAME, held by handlers that never
// wait); the bound only guarantees a reply.
constexpr std::chrono::milliseconds kPointerWait{5000};

// A job's body: an exception becomes an IOError (the job must still reply).
template <typename F>
Status Guarded(F&& f) {
  try {
    return f();
  } catch (const std::exception& e) {
    spdlog::error("internal error in a publish: {}", e.what());
  } catch (...) {
    spdlog::error("internal error in a publish");
  }
  return Status::IOError("internal error");
}

Caller CallerOf(fuse_req_t req) {
  const fuse_ctx* ctx = fuse_req_ctx(req);
  Caller c;
  c.uid = ctx->uid;
  c.gid = ctx->gid;
  c.pid = static_cast<uint32_t>(ctx->pid);
  c.groups = [req, uid = c.uid] {
    std::vector<gid_t> groups(64);
    int n = fuse_req_getgroups(req, static_cast<int>(groups.size()), groups.data());
    if (n > static_cast<int>(groups.size())) {
      groups.resize(static_cast<size_t>(n));
      n = fuse_req_getgroups(req, n, groups.data());
    }
    if (n < 0) {
      // /proc could not be read (no descriptor left, the process is gone):
      // the groups this uid had at its last successful check (issue 9.1).
      auto known = RememberedGroups(uid);
      spdlog::warn("uid {}: cannot read supplementary groups ({}): using {}", uid, std::strerror(-n),
                   known ? "the last ones read" : "none");
      return known ? *known : std::vector<gid_t>{};
    }
    groups.resize(std::min<size_t>(static_cast<size_t>(n), groups.size()));
    RememberGroups(uid, groups);
    return groups;
  };
  return c;
}

}  // namespace

// ---- trampolines ------------------------------------------------------------

namespace {

template <auto M>
struct Tramp;

template <typename... Args, void (HookFs::*M)(fuse_req_t, Args...)>
struct Tramp<M> {
  static void Fn(fuse_req_t req, Args... args) {
    auto* self = static_cast<HookFs*>(fuse_req_userdata(req));
    ReplyScope scope(req);
    try {
      (self->*M)(req, args...);
    } catch (const std::exception& e) {
      spdlog::error("internal error in a FUSE handler: {}", e.what());
      Fuse::Err(req, EIO);  // only if the handler had not replied
    } catch (...) {
      spdlog::error("internal error in a FUSE handler");
      Fuse::Err(req, EIO);
    }
  }
};

void InitFn(void* userdata, fuse_conn_info* conn) {
  try {
    static_cast<HookFs*>(userdata)->Init(conn);
  } catch (...) {
    spdlog::error("internal error in init");
  }
}

// forget has no reply but "none": an exception must still end the request.
void ForgetFn(fuse_req_t req, fuse_ino_t ino, uint64_t n) {
  ReplyScope scope(req);
  try {
    static_cast<HookFs*>(fuse_req_userdata(req))->Forget(req, ino, n);
  } catch (...) {
    Fuse::None(req);
  }
}

void ForgetMultiFn(fuse_req_t req, size_t count, fuse_forget_data* f) {
  ReplyScope scope(req);
  try {
    static_cast<HookFs*>(fuse_req_userdata(req))->ForgetMulti(req, count, f);
  } catch (...) {
    Fuse::None(req);
  }
}

fuse_lowlevel_ops MakeOps() {
  fuse_lowlevel_ops ops{};
  ops.init = InitFn;
  ops.lookup = Tramp<&HookFs::Lookup>::Fn;
  ops.forget = ForgetFn;
  ops.forget_multi = ForgetMultiFn;
  ops.getattr = Tramp<&HookFs::GetAttr>::Fn;
  ops.setattr = Tramp<&HookFs::SetAttr>::Fn;
  ops.readlink = Tramp<&HookFs::ReadLink>::Fn;
  ops.mknod = Tramp<&HookFs::MkNod>::Fn;
  ops.mkdir = Tramp<&HookFs::MkDir>::Fn;
  ops.unlink = Tramp<&HookFs::Unlink>::Fn;
  ops.rmdir = Tramp<&HookFs::RmDir>::Fn;
  ops.symlink = Tramp<&HookFs::Symlink>::Fn;
  ops.rename = Tramp<&HookFs::Rename>::Fn;
  ops.link = Tramp<&HookFs::Link>::Fn;
  ops.open = Tramp<&HookFs::Open>::Fn;
  ops.read = Tramp<&HookFs::Read>::Fn;
  ops.write = Tramp<&HookFs::Write>::Fn;
  ops.flush = Tramp<&HookFs::Flush>::Fn;
  ops.release = Tramp<&HookFs::Release>::Fn;
  ops.fsync = Tramp<&HookFs::Fsync>::Fn;
  ops.opendir = Tramp<&HookFs::OpenDir>::Fn;
  ops.readdir = Tramp<&HookFs::ReadDir>::Fn;
  ops.readdirplus = Tramp<&HookFs::ReadDirPlus>::Fn;
  ops.releasedir = Tramp<&HookFs::ReleaseDir>::Fn;
  ops.fsyncdir = Tramp<&HookFs::FsyncDir>::Fn;
  ops.statfs = Tramp<&HookFs::StatFs>::Fn;
  ops.setxattr = Tramp<&HookFs::SetXattr>::Fn;
  ops.getxattr = Tramp<&HookFs::GetXattr>::Fn;
  ops.listxattr = Tramp<&HookFs::ListXattr>::Fn;
  ops.removexattr = Tramp<&HookFs::RemoveXattr>::Fn;
  ops.create = Tramp<&HookFs::Create>::Fn;
  return ops;
}

}  // namespace

const fuse_lowlevel_ops& HookFs::Ops() {
  static const fuse_lowlevel_ops ops = MakeOps();
  return ops;
}

// ---- setup -----------------------------------------------------------------

HookFs::HookFs(FsOptions options) : options_(std::move(options)) {}

HookFs::~HookFs() {
  StopPublishing();
  StopInvalidators();
}

void HookFs::StartInvalidators(fuse_session* se) {
  invalidator_.Start(se);
  // Moves made by another process on the same store (hookctl apply, gc):
  // look at the pointers the kernel holds whenever the store has a new
  // transaction, at most every 100 ms (docs/mount.md "Invalidation").
  // For a second after a change it checks every tick anyway: a LOOKUP that
  // read the old pointer may have replied after the invalidation went out.
  pointer_invalidator_.Start(se, [this] {
    MDB_envinfo info{};
    if (mdb_env_info(store_->env(), &info) != MDB_SUCCESS) return;
    auto now = std::chrono::steady_clock::now();
    if (info.me_last_txnid != seen_txn_) {
      seen_txn_ = info.me_last_txnid;
      last_change_ = now;
    } else if (now - last_change_ > std::chrono::seconds(1)) {
      return;
    }
    ns_->SyncPointers();
  });
}

void HookFs::StopInvalidators() {
  pointer_invalidator_.Stop();
  invalidator_.Stop();
}

void HookFs::WaitForPointers() {
  if (!pointer_invalidator_.WaitFor(pointer_invalidator_.Last(), kPointerWait)) {
    spdlog::warn("publish: the kernel was not told of a pointer move within {} ms", kPointerWait.count());
  }
}

void HookFs::Attach(Store* store, Ledger* ledger, Incoming* incoming) {
  store_ = store;
  notifier_ = std::make_unique<KernelNotifier>(&invalidator_, &pointer_invalidator_);
  catalog_ = std::make_unique<LedgerCatalog>(ledger, options_.host);
  NamespaceOptions no;
  no.policy = options_.policy;
  no.max_temp_links_per_user = options_.max_temp_links_per_user;
  no.temp_link_ttl = options_.temp_link_ttl;
  no.after_publish = options_.after_publish;
  ns_ = std::make_unique<Namespace>(std::move(no), store, catalog_.get(), incoming, notifier_.get());
  publish_ = std::make_unique<PublishQueue>(options_.publish_workers, options_.publish_queue);
  spool_writes_ = std::make_unique<PublishQueue>(options_.spool_writers, options_.spool_write_queue);
}

void HookFs::StopPublishing() {
  if (spool_writes_) spool_writes_->Stop();
  if (publish_) publish_->Stop();
}

void HookFs::Init(fuse_conn_info* conn) {
  auto want = [conn](unsigned cap) {
    if (conn->capable & cap) conn->want |= cap;
  };
  want(FUSE_CAP_CACHE_SYMLINKS);
  want(FUSE_CAP_READDIRPLUS);
  want(FUSE_CAP_ATOMIC_O_TRUNC);
  want(FUSE_CAP_ASYNC_READ);
  want(FUSE_CAP_PARALLEL_DIROPS);
  // Always readdirplus: every listed entry arrives with its attributes, so
  // `ls -l` and `find` need no LOOKUP per entry.
  conn->want &= ~FUSE_CAP_READDIRPLUS_AUTO;
  // Incoming writes must reach us synchronously (the verdict is in flush).
  conn->want &= ~FUSE_CAP_WRITEBACK_CACHE;
  // Replying from mapped memory with writev beats splicing (NOTES.md).
  conn->want &= ~(FUSE_CAP_SPLICE_READ | FUSE_CAP_SPLICE_WRITE | FUSE_CAP_SPLICE_MOVE);
  conn->max_write = 1u << 20;
  conn->max_readahead = options_.max_readahead_kb * 1024u;
  conn->time_gran = 1000000000;
  spdlog::debug("fuse init: proto {}.{}, capable {:#x}, want {:#x}", conn->proto_major,
                conn->proto_minor, conn->capable, conn->want);
}

// ---- replies ----------------------------------------------------------------

void HookFs::ReplyStatus(fuse_req_t req, const Status& s, const char* op) {
  if (s.ok()) {
    Fuse::Err(req, 0);
    return;
  }
  int err = s.ToErrno();
  if (s.Is(Code::kCorruption) || s.Is(Code::kIOError)) {
    spdlog::error("{}: {}", op, s.ToString());
  } else if (!s.Is(Code::kNotFound)) {
    spdlog::info("{}: {}", op, s.ToString());
  }
  Fuse::Err(req, err == 0 ? EIO : err);
}

void HookFs::ReplyEntry(fuse_req_t req, Result<Entry> r, const char* op) {
  if (!r.ok()) return ReplyStatus(req, r.status(), op);
  fuse_entry_param e{};
  e.ino = r->ino;
  e.generation = 0;
  e.attr = r->attr;
  e.attr_timeout = r->attr_timeout;
  e.entry_timeout = r->entry_timeout;
  if (Fuse::Entry(req, &e) != 0) ns_->Forget(r->ino, 1);
}

// ---- lookup / forget / attrs ----------------------------------------------------

void HookFs::Lookup(fuse_req_t req, fuse_ino_t parent, const char* name) {
  NodePtr dir = ns_->Get(parent);
  if (!dir) return (void)Fuse::Err(req, ESTALE);
  if (!dir->IsDir()) return (void)Fuse::Err(req, ENOTDIR);
  auto c = ns_->Child(parent, *dir, name);
  if (!c.ok()) {
    if (c.status().Is(Code::kNotFound)) {
      // Absence inside an immutable tree is forever too.
      if (Namespace::AbsenceIsForever(*dir)) {
        fuse_entry_param e{};
        e.ino = 0;
        e.entry_timeout = 86400.0;
        Fuse::Entry(req, &e);
        return;
      }
      return (void)Fuse::Err(req, ENOENT);
    }
    return ReplyStatus(req, c.status(), "lookup");
  }
  ReplyEntry(req, ns_->Bind(std::move(c).value()), "lookup");
}

void HookFs::Forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup) {
  ns_->Forget(ino, nlookup);
  Fuse::None(req);
}

void HookFs::ForgetMulti(fuse_req_t req, size_t count, fuse_forget_data* forgets) {
  for (size_t i = 0; i < count; ++i) ns_->Forget(forgets[i].ino, forgets[i].nlookup);
  spdlog::debug("forget {} inodes: {} nodes left", count, ns_->table().size());
  Fuse::None(req);
}

void HookFs::GetAttr(fuse_req_t req, fuse_ino_t ino, fuse_file_info*) {
  NodePtr n = ns_->Get(ino);
  if (!n) return (void)Fuse::Err(req, ESTALE);
  auto st = ns_->Attr(ino, *n);
  if (!st.ok()) return ReplyStatus(req, st.status(), "getattr");
  Fuse::Attr(req, &*st, Namespace::AttrTimeout(*n));
}

void HookFs::SetAttr(fuse_req_t req, fuse_ino_t ino, struct stat* attr, int to_set,
                     fuse_file_info* fi) {
  NodePtr n = ns_->Get(ino);
  if (!n) return (void)Fuse::Err(req, ESTALE);
  if (n->kind == Kind::kSpool) {
    auto spool = ns_->SpoolOf(*n);
    if (!spool) {
      if (fi) spool = reinterpret_cast<Handle*>(fi->fh)->spool;
      if (!spool) return (void)Fuse::Err(req, ENOENT);
    }
    if (to_set & FUSE_SET_ATTR_SIZE) {
      Status s = ns_->TruncateSpool(CallerOf(req), spool, static_cast<uint64_t>(attr->st_size));
      if (!s.ok()) return ReplyStatus(req, s, "truncate");
    }
    // Modes, owners and times of a pack in flight are accepted and ignored
    // (rsync and cp -p set them before the rename).
    auto st = ns_->Attr(ino, *n);
    if (!st.ok()) return ReplyStatus(req, st.status(), "setattr");
    return (void)Fuse::Attr(req, &*st, 0);
  }
  if (n->kind == Kind::kKey && to_set == FUSE_SET_ATTR_SIZE && attr->st_size == 0) {
    // O_TRUNC of keys/NAME: the document is replaced on close.
    Status s = ns_->CheckWriteKey(CallerOf(req), *n);
    if (!s.ok()) return ReplyStatus(req, s, "truncate key");
    auto st = ns_->Attr(ino, *n);
    if (!st.ok()) return ReplyStatus(req, st.status(), "setattr");
    return (void)Fuse::Attr(req, &*st, 0);
  }
  if (n->kind == Kind::kRunResult && to_set == FUSE_SET_ATTR_SIZE && attr->st_size == 0) {
    // O_TRUNC of an open-for-write: the run must still be running.
    Status s = ns_->CheckWriteRunResult(CallerOf(req), *n);
    if (!s.ok()) return ReplyStatus(req, s, "truncate result");
    auto st = ns_->Attr(ino, *n);
    if (!st.ok()) return ReplyStatus(req, st.status(), "setattr");
    return (void)Fuse::Attr(req, &*st, 0);
  }
  ReplyStatus(req, Namespace::ReadOnly(*n), "setattr");
}

void HookFs::ReadLink(fuse_req_t req, fuse_ino_t ino) {
  NodePtr n = ns_->Get(ino);
  if (!n) return (void)Fuse::Err(req, ESTALE);
  if (!n->IsSymlink()) return (void)Fuse::Err(req, EINVAL);
  Fuse::Readlink(req, ns_->Target(*n).c_str());
}

// ---- namespace changes ----------------------------------------------------------

void HookFs::MkNod(fuse_req_t req, fuse_ino_t parent, const char*, mode_t, dev_t) {
  NodePtr dir = ns_->Get(parent);
  if (!dir) return (void)Fuse::Err(req, ESTALE);
  ReplyStatus(req, Namespace::ReadOnly(*dir), "mknod");
}

void HookFs::Link(fuse_req_t req, fuse_ino_t, fuse_ino_t newparent, const char*) {
  NodePtr dir = ns_->Get(newparent);
  if (!dir) return (void)Fuse::Err(req, ESTALE);
  ReplyStatus(req, Namespace::ReadOnly(*dir), "link");
}

void HookFs::MkDir(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t) {
  NodePtr dir = ns_->Get(parent);
  if (!dir) return (void)Fuse::Err(req, ESTALE);
  ReplyEntry(req, ns_->MakeRun(CallerOf(req), parent, *dir, name), "mkdir");
}

void HookFs::RmDir(fuse_req_t req, fuse_ino_t parent, const char* name) {
  NodePtr dir = ns_->Get(parent);
  if (!dir) return (void)Fuse::Err(req, ESTALE);
  if (dir->kind == Kind::kRunsDir) {
    spdlog::info("rmdir runs/{}: runs are append-only", name);
    return (void)Fuse::Err(req, EPERM);
  }
  ReplyStatus(req, Namespace::ReadOnly(*dir), "rmdir");
}

void HookFs::Unlink(fuse_req_t req, fuse_ino_t parent, const char* name) {
  NodePtr dir = ns_->Get(parent);
  if (!dir) return (void)Fuse::Err(req, ESTALE);
  ReplyStatus(req, ns_->Unlink(CallerOf(req), parent, *dir, name), "unlink");
}

void HookFs::Symlink(fuse_req_t req, const char* link, fuse_ino_t parent, const char* name) {
  NodePtr dir = ns_->Get(parent);
  if (!dir) return (void)Fuse::Err(req, ESTALE);
  ReplyEntry(req, ns_->Symlink(CallerOf(req), link, parent, *dir, name), "symlink");
}

void HookFs::Rename(fuse_req_t req, fuse_ino_t parent, const char* name, fuse_ino_t newparent,
                    const char* newname, unsigned int flags) {
  NodePtr dir = ns_->Get(parent);
  NodePtr newdir = ns_->Get(newparent);
  if (!dir || !newdir) return (void)Fuse::Err(req, ESTALE);
  if (flags & RENAME_EXCHANGE) return (void)Fuse::Err(req, EINVAL);
  if (parent != newparent) {
    bool writable = dir->kind == Kind::kIncomingDir || dir->kind == Kind::kHookDir ||
                    dir->kind == Kind::kTagsDir;
    if (writable) return (void)Fuse::Err(req, EXDEV);
    return ReplyStatus(req, Namespace::ReadOnly(*dir), "rename");
  }
  bool noreplace = flags & RENAME_NOREPLACE;
  if (dir->kind == Kind::kIncomingDir && !Incoming::IsStaging(newname)) {
    // Publishes: on the publish queue, which replies with the verdict.
    Caller who = CallerOf(req);
    std::string from = name, to = newname;
    Fuse::Claim(req);
    publish_->Submit([this, req, who, parent, dir, from, to, noreplace] {
      Status s = Guarded([&] { return ns_->Rename(who, parent, *dir, from, to, noreplace); });
      WaitForPointers();  // live moved by the publish is seen once rename() returns
      ReplyStatus(req, s, "rename");
    });
    return;
  }
  ReplyStatus(req, ns_->Rename(CallerOf(req), parent, *dir, name, newname, noreplace), "rename");
}

// ---- files --------------------------------------------------------------------

void HookFs::Create(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t,
                    fuse_file_info* fi) {
  NodePtr dir = ns_->Get(parent);
  if (!dir) return (void)Fuse::Err(req, ESTALE);
  if (dir->kind == Kind::kKeysDir) return CreateKey(req, parent, *dir, name, fi);
  auto created = ns_->CreateSpool(CallerOf(req), parent, *dir, name, fi->flags & O_EXCL);
  if (!created.ok()) return ReplyStatus(req, created.status(), "create");
  auto h = std::make_unique<Handle>();
  h->node = created->entry.node;
  h->spool = created->spool;
  h->writable = true;
  fuse_entry_param e{};
  e.ino = created->entry.ino;
  e.attr = created->entry.attr;
  fi->direct_io = 1;
  fi->fh = reinterpret_cast<uint64_t>(h.get());
  if (Fuse::Create(req, &e, fi) == 0) {
    h.release();
  } else {
    ns_->Forget(created->entry.ino, 1);
    ns_->ReleaseSpoolWriter(CallerOf(req), created->spool);
  }
}

void HookFs::CreateKey(fuse_req_t req, fuse_ino_t parent, const Node& dir, const char* name,
                       fuse_file_info* fi) {
  auto created = ns_->CreateKey(CallerOf(req), parent, dir, name);
  if (!created.ok()) return ReplyStatus(req, created.status(), "create key");
  auto h = std::make_unique<Handle>();
  h->node = created->node;
  h->writable = true;
  h->dirty = true;  // closing it unwritten commits an empty document: EINVAL
  fuse_entry_param e{};
  e.ino = created->ino;
  e.attr = created->attr;
  fi->direct_io = 1;
  fi->fh = reinterpret_cast<uint64_t>(h.get());
  if (Fuse::Create(req, &e, fi) == 0) {
    h.release();
  } else {
    ns_->Forget(created->ino, 1);
  }
}

void HookFs::Open(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  NodePtr n = ns_->Get(ino);
  if (!n) return (void)Fuse::Err(req, ESTALE);
  if (n->IsDir()) return (void)Fuse::Err(req, EISDIR);
  bool wr = IsWriteOpen(fi->flags);
  auto h = std::make_unique<Handle>();
  h->node = n;
  fi->direct_io = 1;
  switch (n->kind) {
    case Kind::kTreeFile: case Kind::kBlob:
      if (wr) return (void)Fuse::Err(req, EROFS);
      fi->direct_io = 0;
      fi->keep_cache = 1;
      fi->noflush = 1;
      fi->fh = 0;
      return (void)Fuse::Open(req, fi);
    case Kind::kSpool: {
      auto spool = ns_->OpenSpool(CallerOf(req), *n, wr, fi->flags & O_TRUNC);
      if (!spool.ok()) return ReplyStatus(req, spool.status(), "open");
      h->spool = *spool;
      h->writable = wr;
      break;
    }
    case Kind::kResult: {
      if (wr) return (void)Fuse::Err(req, EPERM);
      auto fd = ns_->incoming()->OpenResult(n->name);
      if (!fd.ok()) return ReplyStatus(req, fd.status(), "open");
      h->fd.fd = *fd;
      break;
    }
    case Kind::kRunResult: {
      if (wr) {
        Status s = ns_->CheckWriteRunResult(CallerOf(req), *n);
        if (!s.ok()) return ReplyStatus(req, s, "open");
        h->writable = true;
      } else {
        auto c = ns_->Content(*n);
        if (!c.ok()) return ReplyStatus(req, c.status(), "open");
        h->content = std::move(c).value();
      }
      break;
    }
    case Kind::kJournal:
      if (wr) return (void)Fuse::Err(req, EPERM);
      fi->noflush = 1;
      break;
    case Kind::kKey: {
      if (wr) {
        Status s = ns_->CheckWriteKey(CallerOf(req), *n);
        if (!s.ok()) return ReplyStatus(req, s, "open key");
        h->writable = true;
        h->dirty = (fi->flags & O_TRUNC) != 0;  // an empty document is committed (and refused)
      } else {
        auto c = ns_->Content(*n);
        if (!c.ok()) return ReplyStatus(req, c.status(), "open");
        h->content = std::move(c).value();
        fi->noflush = 1;
      }
      break;
    }
    case Kind::kHookJson: case Kind::kReleaseJson: case Kind::kRunJson: case Kind::kHistory: {
      if (wr) return ReplyStatus(req, Namespace::ReadOnly(*n), "open");
      auto c = ns_->Content(*n);
      if (!c.ok()) return ReplyStatus(req, c.status(), "open");
      h->content = std::move(c).value();
      // Sizes follow the ledger: no page cache across opens (direct_io).
      fi->noflush = 1;
      break;
    }
    default:
      return (void)Fuse::Err(req, EINVAL);
  }
  fi->fh = reinterpret_cast<uint64_t>(h.get());
  if (Fuse::Open(req, fi) == 0) {
    h.release();
  } else if (h->spool && h->writable) {
    ns_->ReleaseSpoolWriter(CallerOf(req), h->spool);
  }
}

void HookFs::ReadBlob(fuse_req_t req, const ObjectId& id, size_t size, off_t off) {
  // One read txn for this request only: the spans point into the map and die
  // with the view, right after the reply has been written to the device.
  auto view = store_->Read();
  if (!view.ok()) return ReplyStatus(req, view.status(), "read");
  std::vector<std::span<const uint8_t>> spans;
  Status s = ns_->ReadBlob(*view, id, static_cast<uint64_t>(off), size, &spans);
  if (!s.ok()) {
    if (s.Is(Code::kCorruption)) spdlog::error("read blob {}: {} -> EIO", id.Hex(), s.ToString());
    return ReplyStatus(req, s, "read");
  }
  if (spans.empty()) return (void)Fuse::Buf(req, nullptr, 0);
  std::vector<iovec> iov(spans.size());
  for (size_t i = 0; i < spans.size(); ++i) {
    iov[i].iov_base = const_cast<uint8_t*>(spans[i].data());
    iov[i].iov_len = spans[i].size();
  }
  // fuse_reply_iov writes header + spans with one writev: no copy in user
  // space (fuse_reply_data copies as soon as there is more than one buffer).
  Fuse::Iov(req, iov.data(), static_cast<int>(iov.size()));
}

void HookFs::Read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info* fi) {
  if (off < 0) return (void)Fuse::Err(req, EINVAL);
  auto* h = reinterpret_cast<Handle*>(fi->fh);
  NodePtr n = h ? h->node : ns_->Get(ino);
  if (!n) return (void)Fuse::Err(req, ESTALE);
  switch (n->kind) {
    case Kind::kTreeFile: case Kind::kBlob:
      return ReadBlob(req, n->id, size, off);
    case Kind::kJournal: {
      std::string out;
      Status st;
      {
        std::lock_guard<std::mutex> lock(h->mu);
        st = ns_->ReadJournal(&h->journal, size, static_cast<uint64_t>(off), &out);
      }
      if (!st.ok()) return ReplyStatus(req, st, "read journal");
      return (void)Fuse::Buf(req, out.data(), out.size());
    }
    case Kind::kSpool: {
      std::vector<char> buf(size);
      auto r = h->spool->Read(buf.data(), size, off);
      if (!r.ok()) return ReplyStatus(req, r.status(), "read");
      return (void)Fuse::Buf(req, buf.data(), *r);
    }
    case Kind::kResult: {
      std::vector<char> buf(size);
      ssize_t r = ::pread(h->fd.fd, buf.data(), size, off);
      if (r < 0) return (void)Fuse::Err(req, errno);
      return (void)Fuse::Buf(req, buf.data(), static_cast<size_t>(r));
    }
    default: {
      std::string out;
      {
        std::lock_guard<std::mutex> lock(h->mu);
        if (static_cast<uint64_t>(off) < h->content.size()) {
          out = h->content.substr(static_cast<size_t>(off), size);
        }
      }
      return (void)Fuse::Buf(req, out.data(), out.size());
    }
  }
}

void HookFs::Write(fuse_req_t req, fuse_ino_t, const char* buf, size_t size, off_t off,
                   fuse_file_info* fi) {
  auto* h = reinterpret_cast<Handle*>(fi->fh);
  if (!h || !h->writable) return (void)Fuse::Err(req, EBADF);
  if (off < 0) return (void)Fuse::Err(req, EINVAL);
  if (h->node->kind == Kind::kSpool) {
    // On the spool writers, not here: ten packs copied at once block in the
    // kernel's dirty-page throttling and would hold every FUSE worker, so
    // reads would wait (bench/load). The bytes are copied: `buf` is the
    // worker's request buffer. The job replies.
    auto data = std::make_shared<std::string>(buf, size);
    std::shared_ptr<Spool> spool = h->spool;
    std::string name = h->node->name;
    Fuse::Claim(req);
    spool_writes_->Submit([this, req, data, spool, name, off] {
      Status s = Guarded([&] { return ns_->WriteSpool(spool, data->data(), data->size(), static_cast<uint64_t>(off)); });
      if (!s.ok()) {
        spdlog::warn("write to incoming/{}: {}", name, s.ToString());
        return ReplyStatus(req, s, "write");
      }
      Fuse::Write(req, data->size());
    });
    return;
  }
  if (h->node->kind == Kind::kRunResult || h->node->kind == Kind::kKey) {
    uint64_t end = static_cast<uint64_t>(off) + size;
    if (end > (h->node->kind == Kind::kKey ? kMaxKeyDocument : kMaxRunResult)) {
      return (void)Fuse::Err(req, EFBIG);
    }
    {
      std::lock_guard<std::mutex> lock(h->mu);
      if (h->content.size() < end) h->content.resize(end);
      std::memcpy(h->content.data() + off, buf, size);
      h->dirty = true;
    }
    return (void)Fuse::Write(req, size);
  }
  Fuse::Err(req, EBADF);
}

void HookFs::Flush(fuse_req_t req, fuse_ino_t, fuse_file_info* fi) {
  auto* h = reinterpret_cast<Handle*>(fi->fh);
  if (!h || !h->writable) return (void)Fuse::Err(req, 0);
  if (h->node->kind == Kind::kSpool) {
    // The verdict: what close() returns (EBADMSG, ENOSPC, EIO). An apply runs
    // on the publish queue, which replies; this worker goes back to reads.
    if (!ns_->FlushWouldApply(h->spool)) {
      return ReplyStatus(req, ns_->FlushSpool(CallerOf(req), h->spool), "publish");
    }
    std::shared_ptr<Spool> spool = h->spool;
    Caller who = CallerOf(req);
    Fuse::Claim(req);  // handed off: the job replies
    publish_->Submit([this, req, who, spool] {
      Status s = Guarded([&] { return ns_->FlushSpool(who, spool); });
      WaitForPointers();  // live moved by the publish is seen once close() returns
      ReplyStatus(req, s, "publish");
    });
    return;
  }
  if (h->node->kind == Kind::kRunResult || h->node->kind == Kind::kKey) {
    std::string text;
    bool dirty;
    {
      std::lock_guard<std::mutex> lock(h->mu);
      dirty = h->dirty;
      h->dirty = false;
      text = h->content;
    }
    if (!dirty) return (void)Fuse::Err(req, 0);
    if (h->node->kind == Kind::kKey) return ReplyStatus(req, ns_->CommitKey(CallerOf(req), *h->node, text), "add key");
    return ReplyStatus(req, ns_->FinishRun(CallerOf(req), *h->node, text), "finish run");
  }
  Fuse::Err(req, 0);
}

void HookFs::Release(fuse_req_t req, fuse_ino_t, fuse_file_info* fi) {
  std::unique_ptr<Handle> h(reinterpret_cast<Handle*>(fi->fh));
  if (h && h->spool && h->writable) ns_->ReleaseSpoolWriter(CallerOf(req), h->spool);
  Fuse::Err(req, 0);
}

void HookFs::Fsync(fuse_req_t req, fuse_ino_t, int, fuse_file_info*) { Fuse::Err(req, 0); }

// ---- directories ---------------------------------------------------------------

void HookFs::OpenDir(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  NodePtr n = ns_->Get(ino);
  if (!n) return (void)Fuse::Err(req, ESTALE);
  if (!n->IsDir()) return (void)Fuse::Err(req, ENOTDIR);
  auto d = std::make_unique<DirHandle>();
  if (Namespace::Immutable(*n)) {
    // Both flags, or the kernel drops the readdir cache on every opendir.
    fi->cache_readdir = 1;
    fi->keep_cache = 1;
  }
  fi->fh = reinterpret_cast<uint64_t>(d.get());
  if (Fuse::Open(req, fi) == 0) d.release();
}

void HookFs::DirReply(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info* fi,
                      bool plus) {
  auto* d = reinterpret_cast<DirHandle*>(fi->fh);
  NodePtr n = ns_->Get(ino);
  if (!n || !d) return (void)Fuse::Err(req, ESTALE);
  // The listing is taken at offset 0 and kept for the handle's later pages.
  std::shared_ptr<const std::vector<Node>> entries;
  {
    std::lock_guard<std::mutex> lock(d->mu);
    entries = d->entries;
  }
  if (!entries || off == 0) {
    auto c = ns_->Children(ino, *n);
    if (!c.ok()) return ReplyStatus(req, c.status(), plus ? "readdirplus" : "readdir");
    entries = std::make_shared<const std::vector<Node>>(std::move(c).value());
    std::lock_guard<std::mutex> lock(d->mu);
    d->entries = entries;
  }
  std::vector<char> buf(size);
  size_t used = 0;
  // Offsets: 1 ".", 2 "..", 3 + i the i-th entry.
  size_t total = entries->size() + 2;
  for (size_t i = static_cast<size_t>(off); i < total; ++i) {
    const char* name;
    fuse_ino_t child_ino = 0;
    bool dots = i < 2;
    if (dots) {
      name = i == 0 ? "." : "..";
      child_ino = i == 0 ? ino : n->parent;
    } else {
      name = (*entries)[i - 2].name.c_str();
    }
    off_t next = static_cast<off_t>(i + 1);
    size_t rem = size - used;
    if (plus) {
      size_t need = fuse_add_direntry_plus(req, nullptr, 0, name, nullptr, 0);
      if (need > rem) break;
      fuse_entry_param e{};
      if (dots) {
        // The kernel takes no lookup reference on "." and "..".
        e.attr.st_ino = child_ino;
        e.attr.st_mode = S_IFDIR;
      } else {
        auto bound = ns_->Bind((*entries)[i - 2]);
        if (!bound.ok()) {
          if (used == 0) return ReplyStatus(req, bound.status(), "readdirplus");
          break;
        }
        e.ino = bound->ino;
        e.attr = bound->attr;
        e.attr_timeout = bound->attr_timeout;
        e.entry_timeout = bound->entry_timeout;
        // The listing may predate a move (it is taken at offset 0): a pointer
        // listed here is revalidated at its next walk, cached from its LOOKUP.
        if (bound->node->kind == Kind::kLive || bound->node->kind == Kind::kTag) e.entry_timeout = 0;
      }
      used += fuse_add_direntry_plus(req, buf.data() + used, rem, name, &e, next);
    } else {
      struct stat st{};
      if (dots) {
        st.st_ino = child_ino;
        st.st_mode = S_IFDIR;
      } else {
        const Node& c = (*entries)[i - 2];
        fuse_ino_t known = ns_->table().Find(ino, c.name);
        // Not yet looked up: a stable stand-in (the kernel uses the real one
        // from lookup for stat; d_ino is only a hint).
        st.st_ino = known ? known : (std::hash<std::string>{}(c.name) | (1ull << 63));
        st.st_mode = c.IsDir() ? S_IFDIR : c.IsSymlink() ? S_IFLNK : S_IFREG;
      }
      size_t need = fuse_add_direntry(req, nullptr, 0, name, &st, next);
      if (need > rem) break;
      used += fuse_add_direntry(req, buf.data() + used, rem, name, &st, next);
    }
  }
  Fuse::Buf(req, buf.data(), used);
}

void HookFs::ReadDir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info* fi) {
  DirReply(req, ino, size, off, fi, false);
}

void HookFs::ReadDirPlus(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                         fuse_file_info* fi) {
  DirReply(req, ino, size, off, fi, true);
}

void HookFs::ReleaseDir(fuse_req_t req, fuse_ino_t, fuse_file_info* fi) {
  std::unique_ptr<DirHandle> d(reinterpret_cast<DirHandle*>(fi->fh));
  Fuse::Err(req, 0);
}

void HookFs::FsyncDir(fuse_req_t req, fuse_ino_t, int, fuse_file_info*) { Fuse::Err(req, 0); }

void HookFs::StatFs(fuse_req_t req, fuse_ino_t) {
  struct statvfs sv{};
  if (::statvfs(store_->dir().c_str(), &sv) != 0) return (void)Fuse::Err(req, errno);
  sv.f_namemax = Limits::kMaxNameBytes;
  Fuse::Statfs(req, &sv);
}

// ---- extended attributes -----------------------------------------------------------

void HookFs::GetXattr(fuse_req_t req, fuse_ino_t ino, const char* name, size_t size) {
  NodePtr n = ns_->Get(ino);
  if (!n) return (void)Fuse::Err(req, ESTALE);
  // Only the user namespace exists here. EOPNOTSUPP (not ENODATA) for
  // security.* and system.posix_acl_*: `ls -l` then stops asking for every
  // other file of this filesystem (coreutils caches "unsupported" per st_dev),
  // which halves the round trips of `ls -lR`.
  if (std::strncmp(name, "user.", 5) != 0) return (void)Fuse::Err(req, EOPNOTSUPP);
  for (const auto& [k, v] : ns_->Xattrs(*n)) {
    if (k != name) continue;
    if (size == 0) return (void)Fuse::Xattr(req, v.size());
    if (size < v.size()) return (void)Fuse::Err(req, ERANGE);
    return (void)Fuse::Buf(req, v.data(), v.size());
  }
  Fuse::Err(req, ENODATA);
}

void HookFs::ListXattr(fuse_req_t req, fuse_ino_t ino, size_t size) {
  NodePtr n = ns_->Get(ino);
  if (!n) return (void)Fuse::Err(req, ESTALE);
  std::string names;
  for (const auto& [k, v] : ns_->Xattrs(*n)) {
    names += k;
    names.push_back('\0');
  }
  if (size == 0) return (void)Fuse::Xattr(req, names.size());
  if (size < names.size()) return (void)Fuse::Err(req, ERANGE);
  Fuse::Buf(req, names.data(), names.size());
}

void HookFs::SetXattr(fuse_req_t req, fuse_ino_t ino, const char*, const char*, size_t, int) {
  NodePtr n = ns_->Get(ino);
  if (!n) return (void)Fuse::Err(req, ESTALE);
  // Packs in flight carry no attributes (cp -a tolerates EOPNOTSUPP).
  if (n->kind == Kind::kSpool || n->kind == Kind::kIncomingDir) return (void)Fuse::Err(req, EOPNOTSUPP);
  ReplyStatus(req, Namespace::ReadOnly(*n), "setxattr");
}

void HookFs::RemoveXattr(fuse_req_t req, fuse_ino_t ino, const char*) {
  NodePtr n = ns_->Get(ino);
  if (!n) return (void)Fuse::Err(req, ESTALE);
  if (n->kind == Kind::kSpool) return (void)Fuse::Err(req, EOPNOTSUPP);
  ReplyStatus(req, Namespace::ReadOnly(*n), "removexattr");
}

}  // namespace hookfs::fs
