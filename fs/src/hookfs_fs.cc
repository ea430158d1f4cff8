#include "hookfs_fs.h"

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

constexpr double kForever = 86400.0;
constexpr size_t kMaxPending = 4096;
constexpr auto kPendingTtl = std::chrono::minutes(10);
constexpr size_t kMaxRunResult = 64 * 1024;

// Fixed names.
constexpr const char* kHookEntries[] = {"hook.json", "live", "history", "releases", "tags", "runs"};

bool IsFixedHookEntry(const std::string& name) {
  for (const char* n : kHookEntries) {
    if (name == n) return true;
  }
  return false;
}

std::optional<uint32_t> ParseVersion(std::string_view s) {
  if (s.empty() || s.size() > 10 || s[0] == '0') return std::nullopt;
  uint64_t v = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return std::nullopt;
    v = v * 10 + static_cast<uint64_t>(c - '0');
  }
  if (v == 0 || v > 0xffffffffULL) return std::nullopt;
  return static_cast<uint32_t>(v);
}

// "releases/N" (prefix "") or "../releases/N" (prefix "../").
std::optional<uint32_t> ParsePointerTarget(std::string_view target, std::string_view prefix) {
  std::string want = std::string(prefix) + "releases/";
  if (target.substr(0, want.size()) != want) return std::nullopt;
  return ParseVersion(target.substr(want.size()));
}

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

}  // namespace

// An open file. Owned through fi->fh; deleted in Release.
struct HookFs::Handle {
  NodePtr node;
  std::mutex mu;
  std::string content;            // generated files, run result written
  std::shared_ptr<Spool> spool;   // incoming packs
  FdCloser fd;                    // incoming results
  bool writable = false;
  bool dirty = false;             // run result written since the last flush
  // Journal streaming: bytes [buf_off, buf_off + buf.size()) of the journal.
  uint64_t buf_off = 0;
  std::string buf;
  uint64_t next_seq = 0;
  bool eof = false;
};

struct HookFs::DirHandle {
  std::mutex mu;
  std::vector<Node> entries;
  bool filled = false;
};

// ---- trampolines ------------------------------------------------------------

namespace {

template <auto M>
struct Tramp;

template <typename... Args, void (HookFs::*M)(fuse_req_t, Args...)>
struct Tramp<M> {
  static void Fn(fuse_req_t req, Args... args) {
    auto* self = static_cast<HookFs*>(fuse_req_userdata(req));
    try {
      (self->*M)(req, args...);
    } catch (const std::exception& e) {
      spdlog::error("internal error in a FUSE handler: {}", e.what());
      fuse_reply_err(req, EIO);
    } catch (...) {
      spdlog::error("internal error in a FUSE handler");
      fuse_reply_err(req, EIO);
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
  try {
    static_cast<HookFs*>(fuse_req_userdata(req))->Forget(req, ino, n);
  } catch (...) {
    fuse_reply_none(req);
  }
}

void ForgetMultiFn(fuse_req_t req, size_t count, fuse_forget_data* f) {
  try {
    static_cast<HookFs*>(fuse_req_userdata(req))->ForgetMulti(req, count, f);
  } catch (...) {
    fuse_reply_none(req);
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

HookFs::HookFs(FsOptions options) : options_(std::move(options)), start_time_(std::time(nullptr)) {}

HookFs::~HookFs() { invalidator_.Stop(); }

void HookFs::Attach(Store* store, Ledger* ledger, Incoming* incoming) {
  store_ = store;
  ledger_ = ledger;
  incoming_ = incoming;
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

// ---- node model ------------------------------------------------------------

bool HookFs::Immutable(const Node& n) {
  switch (n.kind) {
    case Kind::kReleaseRoot: case Kind::kTreeDir: case Kind::kTreeFile: case Kind::kTreeSymlink:
    case Kind::kBlob: case Kind::kObjTree: case Kind::kHookJson: case Kind::kRunRelease:
      return true;
    default:
      return false;
  }
}

int HookFs::ReadOnlyErrno(const Node& n) {
  switch (n.kind) {
    case Kind::kReleaseRoot: case Kind::kTreeDir: case Kind::kTreeFile: case Kind::kTreeSymlink:
    case Kind::kBlob: case Kind::kObjTree: case Kind::kObjectsDir: case Kind::kBlobsDir:
    case Kind::kTreesDir: case Kind::kReleasesDir: case Kind::kReleaseJson:
      return EROFS;
    default:
      return EPERM;
  }
}

double HookFs::EntryTimeout(const Node& n) const {
  // An object's bytes never change, but `hookctl gc` may drop it: its name is
  // revalidated, so `--against` never trusts a stale positive entry.
  if (n.kind == Kind::kBlob || n.kind == Kind::kObjTree) return 0;
  if (Immutable(n)) return kForever;
  switch (n.kind) {
    // Entries that exist forever once they exist (their contents may change).
    case Kind::kRoot: case Kind::kHooksDir: case Kind::kHookDir: case Kind::kReleasesDir:
    case Kind::kTagsDir: case Kind::kRunsDir: case Kind::kRunDir: case Kind::kIncomingDir:
    case Kind::kObjectsDir: case Kind::kBlobsDir: case Kind::kTreesDir: case Kind::kHistory:
    case Kind::kRunJson: case Kind::kRunResult: case Kind::kJournal: case Kind::kReleaseJson:
      return kForever;
    default:
      return 0;  // live, tags, pending symlinks, spools, results
  }
}

double HookFs::AttrTimeout(const Node& n) const {
  if (Immutable(n)) return kForever;
  switch (n.kind) {
    // A pointer's inode shows one target for its whole life (a move makes a
    // new inode), so its attributes never go stale: no GETATTR per path walk
    // through live (default_permissions checks them on every walk). Only the
    // name is revalidated (entry timeout 0).
    case Kind::kLive: case Kind::kTag: case Kind::kPending:
      return kForever;
    case Kind::kRoot: case Kind::kHooksDir: case Kind::kHookDir: case Kind::kReleasesDir:
    case Kind::kTagsDir: case Kind::kRunsDir: case Kind::kRunDir: case Kind::kIncomingDir:
    case Kind::kObjectsDir: case Kind::kBlobsDir: case Kind::kTreesDir:
      return kForever;  // mode, owner and group never change
    default:
      return 0;  // sizes and modes that follow the ledger
  }
}

std::string HookFs::Target(const Node& n) const {
  switch (n.kind) {
    case Kind::kLive: return "releases/" + std::to_string(n.version);
    case Kind::kTag: return "../releases/" + std::to_string(n.version);
    case Kind::kRunRelease: return "../../releases/" + std::to_string(n.version);
    default: return n.aux;
  }
}

Result<std::string> HookFs::Content(const Node& n) {
  switch (n.kind) {
    case Kind::kHookJson: {
      HOOKFS_ASSIGN_OR_RETURN(HookInfo h, ledger_->GetHook(n.hook));
      return ToJson(h).dump(2) + "\n";
    }
    case Kind::kReleaseJson: {
      HOOKFS_ASSIGN_OR_RETURN(ReleaseInfo r, ledger_->GetRelease(n.hook, n.version));
      return ToJson(r).dump(2) + "\n";
    }
    case Kind::kRunJson: {
      HOOKFS_ASSIGN_OR_RETURN(RunInfo r, ledger_->GetRun(n.hook, n.aux));
      return ToJson(r).dump(2) + "\n";
    }
    case Kind::kRunResult: {
      HOOKFS_ASSIGN_OR_RETURN(RunInfo r, ledger_->GetRun(n.hook, n.aux));
      if (!r.sealed()) return std::string();
      nlohmann::json j = {{"status", r.status}, {"exit_code", r.exit_code},
                          {"oom_retries", r.oom_retries}};
      if (!r.note.empty()) j["note"] = r.note;
      return j.dump() + "\n";
    }
    case Kind::kHistory: {
      HOOKFS_ASSIGN_OR_RETURN(std::vector<PointerMove> moves, ledger_->History(n.hook));
      std::string out;
      for (const PointerMove& m : moves) out += ToJson(m).dump() + "\n";
      return out;
    }
    default:
      return Status::InvalidArgument(std::string("no generated content for ") + KindName(n.kind));
  }
}

Result<Node> HookFs::TreeChild(fuse_ino_t dir_ino, const Node& dir, const TreeEntry& e,
                               const EntryTimes::Stamp& times) {
  Node c;
  c.parent = dir_ino;
  c.name = e.name;
  c.hook = dir.hook;
  c.version = dir.version;
  c.mtime = times.mtime.value_or(dir.mtime);  // directories: the commit time
  c.tindex = times.index;
  c.etype = e.type;
  switch (e.type) {
    case EntryType::kDirectory: c.kind = Kind::kTreeDir; c.id = e.id; break;
    case EntryType::kFile: case EntryType::kExecutable:
      c.kind = Kind::kTreeFile; c.id = e.id; c.size = e.size; break;
    case EntryType::kSymlink: c.kind = Kind::kTreeSymlink; c.aux = e.target; break;
  }
  return c;
}

Result<Node> HookFs::Child(fuse_ino_t dir_ino, const Node& dir, const std::string& name) {
  Node c;
  c.parent = dir_ino;
  c.name = name;
  c.hook = dir.hook;
  c.mtime = start_time_;
  auto not_found = [&] { return Status::NotFound(name); };
  switch (dir.kind) {
    case Kind::kRoot:
      if (name == "hooks") c.kind = Kind::kHooksDir;
      else if (name == "incoming") c.kind = Kind::kIncomingDir;
      else if (name == "objects") c.kind = Kind::kObjectsDir;
      else if (name == "journal") c.kind = Kind::kJournal;
      else return not_found();
      return c;
    case Kind::kHooksDir: {
      if (!ValidateHookName(name).ok()) return not_found();
      HOOKFS_ASSIGN_OR_RETURN(HookInfo h, ledger_->GetHook(name));
      c.kind = Kind::kHookDir;
      c.hook = name;
      c.mtime = h.created_at;
      return c;
    }
    case Kind::kHookDir: {
      c.mtime = dir.mtime;
      if (name == "hook.json") { c.kind = Kind::kHookJson; return c; }
      if (name == "history") { c.kind = Kind::kHistory; return c; }
      if (name == "releases") { c.kind = Kind::kReleasesDir; return c; }
      if (name == "tags") { c.kind = Kind::kTagsDir; return c; }
      if (name == "runs") { c.kind = Kind::kRunsDir; return c; }
      if (name == "live") {
        HOOKFS_ASSIGN_OR_RETURN(std::optional<uint32_t> live, ledger_->GetLive(dir.hook));
        if (!live) return not_found();
        c.kind = Kind::kLive;
        c.version = *live;
        return c;
      }
      auto p = TakePending(PendingKey{dir.hook, false, name}, false);
      if (!p) return not_found();
      c.kind = Kind::kPending;
      c.aux = p->target;
      return c;
    }
    case Kind::kReleasesDir: {
      bool json = name.size() > 5 && name.compare(name.size() - 5, 5, ".json") == 0;
      auto v = ParseVersion(json ? std::string_view(name).substr(0, name.size() - 5) : name);
      if (!v) return not_found();
      HOOKFS_ASSIGN_OR_RETURN(ReleaseInfo r, ledger_->GetRelease(dir.hook, *v));
      c.kind = json ? Kind::kReleaseJson : Kind::kReleaseRoot;
      c.version = *v;
      c.id = r.digest;
      c.mtime = r.committed_at;
      return c;
    }
    case Kind::kReleaseRoot: case Kind::kTreeDir: case Kind::kObjTree: {
      HOOKFS_ASSIGN_OR_RETURN(ReadView view, store_->Read());
      HOOKFS_ASSIGN_OR_RETURN(Tree tree, view.GetTree(dir.id));
      const TreeEntry* e = tree.Find(name);
      if (!e) return not_found();
      HOOKFS_ASSIGN_OR_RETURN(EntryTimes times, EntryTimes::For(view, dir.hook, dir.version, dir.tindex));
      return TreeChild(dir_ino, dir, *e, times.At(tree, size_t(e - tree.entries.data())));
    }
    case Kind::kTagsDir: {
      c.mtime = dir.mtime;
      HOOKFS_ASSIGN_OR_RETURN(auto tags, ledger_->ListTags(dir.hook));
      auto it = tags.find(name);
      if (it != tags.end()) {
        c.kind = Kind::kTag;
        c.aux = name;
        c.version = it->second;
        return c;
      }
      auto p = TakePending(PendingKey{dir.hook, true, name}, false);
      if (!p) return not_found();
      c.kind = Kind::kPending;
      c.aux = p->target;
      return c;
    }
    case Kind::kRunsDir: {
      if (!ValidateRunName(name).ok()) return not_found();
      HOOKFS_ASSIGN_OR_RETURN(RunInfo r, ledger_->GetRun(dir.hook, name));
      c.kind = Kind::kRunDir;
      c.aux = name;
      c.version = r.version;
      c.mtime = r.started_at;
      return c;
    }
    case Kind::kRunDir:
      c.aux = dir.aux;
      c.version = dir.version;
      c.mtime = dir.mtime;
      if (name == "run.json") c.kind = Kind::kRunJson;
      else if (name == "release") c.kind = Kind::kRunRelease;
      else if (name == "result") c.kind = Kind::kRunResult;
      else return not_found();
      return c;
    case Kind::kIncomingDir: {
      if (auto spool = incoming_->Find(name)) {
        c.kind = Kind::kSpool;
        c.aux = name;
        c.serial = spool->serial();
        return c;
      }
      HOOKFS_ASSIGN_OR_RETURN(ResultStat rs, incoming_->StatResult(name));
      c.kind = Kind::kResult;
      c.aux = name;
      c.size = rs.size;
      c.mtime = rs.mtime;
      c.serial = rs.ino;
      return c;
    }
    case Kind::kObjectsDir:
      if (name == "blobs") c.kind = Kind::kBlobsDir;
      else if (name == "trees") c.kind = Kind::kTreesDir;
      else return not_found();
      return c;
    case Kind::kBlobsDir: case Kind::kTreesDir: {
      auto id = ObjectId::FromHex(name);
      if (!id) return not_found();
      HOOKFS_ASSIGN_OR_RETURN(ReadView view, store_->Read());
      c.id = *id;
      c.mtime = 0;
      if (dir.kind == Kind::kBlobsDir) {
        HOOKFS_ASSIGN_OR_RETURN(BlobInfo info, view.GetBlobInfo(*id));
        c.kind = Kind::kBlob;
        c.etype = EntryType::kFile;
        c.size = info.size;
      } else {
        HOOKFS_ASSIGN_OR_RETURN(bool has, view.HasTree(*id));
        if (!has) return not_found();
        c.kind = Kind::kObjTree;
      }
      return c;
    }
    default:
      return Status(Code::kInvalidArgument, "not a directory");  // ENOTDIR below
  }
}

// The keys of the ledger's hooks table (ledger.h: name -> HookInfo), in order.
// (Ledger::ListHooks seeks to an empty key, which LMDB refuses with
// MDB_BAD_VALSIZE in this version of the core; a plain cursor walk avoids it.)
Result<std::vector<std::string>> HookFs::HookNames() {
  std::vector<std::string> names;
  HOOKFS_ASSIGN_OR_RETURN(ReadView view, store_->Read());
  HOOKFS_ASSIGN_OR_RETURN(lmdb::Cursor c, lmdb::Cursor::Open(view.txn(), view.tables().hooks));
  HOOKFS_ASSIGN_OR_RETURN(bool more, c.First());
  while (more) {
    names.emplace_back(c.key());
    HOOKFS_ASSIGN_OR_RETURN(more, c.Next());
  }
  return names;
}

// Symlinks made by `ln -sfn` that wait for their rename over live or a tag.
void HookFs::AppendPending(fuse_ino_t dir_ino, const Node& dir, bool in_tags, std::vector<Node>* out) {
  std::lock_guard<std::mutex> lock(pending_mu_);
  for (const auto& [k, p] : pending_) {
    if (k.hook != dir.hook || k.in_tags != in_tags) continue;
    Node c;
    c.kind = Kind::kPending;
    c.parent = dir_ino;
    c.name = k.name;
    c.hook = dir.hook;
    c.aux = p.target;
    c.mtime = dir.mtime;
    out->push_back(std::move(c));
  }
}

Result<std::vector<Node>> HookFs::Children(fuse_ino_t dir_ino, const Node& dir) {
  std::vector<Node> out;
  auto add = [&](const std::string& name) -> Status {
    auto c = Child(dir_ino, dir, name);
    if (c.ok()) {
      out.push_back(std::move(c).value());
      return Status::OK();
    }
    if (c.status().Is(Code::kNotFound)) return Status::OK();  // went away meanwhile
    return c.status();
  };
  switch (dir.kind) {
    case Kind::kRoot:
      for (const char* n : {"hooks", "incoming", "objects", "journal"}) HOOKFS_RETURN_IF_ERROR(add(n));
      break;
    case Kind::kHooksDir: {
      HOOKFS_ASSIGN_OR_RETURN(std::vector<std::string> names, HookNames());
      for (const std::string& name : names) {
        auto hr = ledger_->GetHook(name);
        if (!hr.ok()) {
          if (hr.status().Is(Code::kNotFound)) continue;
          return hr.status();
        }
        const HookInfo& h = *hr;
        Node c;
        c.kind = Kind::kHookDir;
        c.parent = dir_ino;
        c.name = h.name;
        c.hook = h.name;
        c.mtime = h.created_at;
        out.push_back(std::move(c));
      }
      break;
    }
    case Kind::kHookDir: {
      for (const char* n : kHookEntries) HOOKFS_RETURN_IF_ERROR(add(n));
      AppendPending(dir_ino, dir, /*in_tags=*/false, &out);
      break;
    }
    case Kind::kReleasesDir: {
      HOOKFS_ASSIGN_OR_RETURN(auto releases, ledger_->ListReleases(dir.hook));
      for (const ReleaseInfo& r : releases) {
        for (bool json : {false, true}) {
          Node c;
          c.kind = json ? Kind::kReleaseJson : Kind::kReleaseRoot;
          c.parent = dir_ino;
          c.name = std::to_string(r.version) + (json ? ".json" : "");
          c.hook = dir.hook;
          c.version = r.version;
          c.id = r.digest;
          c.mtime = r.committed_at;
          out.push_back(std::move(c));
        }
      }
      break;
    }
    case Kind::kReleaseRoot: case Kind::kTreeDir: case Kind::kObjTree: {
      HOOKFS_ASSIGN_OR_RETURN(ReadView view, store_->Read());
      HOOKFS_ASSIGN_OR_RETURN(Tree tree, view.GetTree(dir.id));
      out.reserve(tree.entries.size());
      HOOKFS_ASSIGN_OR_RETURN(EntryTimes times, EntryTimes::For(view, dir.hook, dir.version, dir.tindex));
      for (size_t i = 0; i < tree.entries.size(); ++i) {
        HOOKFS_ASSIGN_OR_RETURN(Node c, TreeChild(dir_ino, dir, tree.entries[i], times.At(tree, i)));
        out.push_back(std::move(c));
      }
      break;
    }
    case Kind::kTagsDir: {
      HOOKFS_ASSIGN_OR_RETURN(auto tags, ledger_->ListTags(dir.hook));
      for (const auto& [name, version] : tags) {
        Node c;
        c.kind = Kind::kTag;
        c.parent = dir_ino;
        c.name = name;
        c.hook = dir.hook;
        c.aux = name;
        c.version = version;
        c.mtime = dir.mtime;
        out.push_back(std::move(c));
      }
      AppendPending(dir_ino, dir, /*in_tags=*/true, &out);
      break;
    }
    case Kind::kRunsDir: {
      HOOKFS_ASSIGN_OR_RETURN(auto runs, ledger_->ListRuns(dir.hook));
      for (const RunInfo& r : runs) {
        Node c;
        c.kind = Kind::kRunDir;
        c.parent = dir_ino;
        c.name = r.run;
        c.hook = dir.hook;
        c.aux = r.run;
        c.version = r.version;
        c.mtime = r.started_at;
        out.push_back(std::move(c));
      }
      break;
    }
    case Kind::kRunDir:
      for (const char* n : {"run.json", "release", "result"}) HOOKFS_RETURN_IF_ERROR(add(n));
      break;
    case Kind::kIncomingDir:
      for (const IncomingEntry& e : incoming_->List()) HOOKFS_RETURN_IF_ERROR(add(e.name));
      break;
    case Kind::kObjectsDir:
      for (const char* n : {"blobs", "trees"}) HOOKFS_RETURN_IF_ERROR(add(n));
      break;
    case Kind::kBlobsDir: case Kind::kTreesDir:
      break;  // lookup by id only
    default:
      return Status(Code::kInvalidArgument, "not a directory");
  }
  return out;
}

Result<struct stat> HookFs::Attr(fuse_ino_t ino, const Node& n) {
  const Policy& pol = options_.policy;
  struct stat st{};
  st.st_ino = ino;
  st.st_uid = pol.owner_uid;
  st.st_gid = pol.owner_gid;
  st.st_nlink = 1;
  st.st_blksize = 1 << 20;  // cp and cat size their buffers by it: 1 MiB requests
  int64_t mtime = n.kind == Kind::kRoot ? start_time_ : n.mtime;
  st.st_mtim.tv_sec = mtime;
  st.st_ctim.tv_sec = mtime;
  st.st_atim.tv_sec = mtime;
  if (n.IsDir()) {
    st.st_mode = S_IFDIR | 0755;
    switch (n.kind) {
      case Kind::kIncomingDir: case Kind::kHookDir: case Kind::kTagsDir:
        st.st_gid = pol.GroupFor(Right::kPublish);
        st.st_mode = S_IFDIR | pol.WritableDirMode(Right::kPublish);
        break;
      case Kind::kRunsDir:
        st.st_gid = pol.GroupFor(Right::kRun);
        st.st_mode = S_IFDIR | pol.WritableDirMode(Right::kRun);
        break;
      default:
        break;
    }
    return st;
  }
  if (n.IsSymlink()) {
    st.st_mode = S_IFLNK | 0777;
    st.st_size = static_cast<off_t>(Target(n).size());
    return st;
  }
  st.st_mode = S_IFREG | 0644;
  switch (n.kind) {
    case Kind::kTreeFile: case Kind::kBlob:
      st.st_size = static_cast<off_t>(n.size);
      if (n.etype == EntryType::kExecutable) st.st_mode = S_IFREG | 0755;
      break;
    case Kind::kHookJson: case Kind::kReleaseJson: case Kind::kRunJson: case Kind::kHistory: {
      HOOKFS_ASSIGN_OR_RETURN(std::string content, Content(n));
      st.st_size = static_cast<off_t>(content.size());
      break;
    }
    case Kind::kRunResult: {
      HOOKFS_ASSIGN_OR_RETURN(RunInfo r, ledger_->GetRun(n.hook, n.aux));
      if (r.sealed()) {
        st.st_mode = S_IFREG | 0444;
        HOOKFS_ASSIGN_OR_RETURN(std::string content, Content(n));
        st.st_size = static_cast<off_t>(content.size());
        st.st_mtim.tv_sec = st.st_ctim.tv_sec = r.finished_at;
      } else {
        st.st_gid = pol.GroupFor(Right::kRun);
        st.st_mode = S_IFREG | (pol.run_gid ? 0664 : 0644);
      }
      break;
    }
    case Kind::kJournal:
      st.st_size = 0;  // streamed (direct_io): read it to the end
      st.st_mtim.tv_sec = st.st_ctim.tv_sec = std::time(nullptr);
      break;
    case Kind::kSpool: {
      auto spool = incoming_->Find(n.aux);
      if (spool && spool->serial() == n.serial) {
        st.st_size = static_cast<off_t>(spool->Size());
        st.st_uid = spool->owner();
        st.st_gid = spool->group();
        st.st_mtim.tv_sec = st.st_ctim.tv_sec = spool->mtime();
      }
      break;
    }
    case Kind::kResult: {
      st.st_size = static_cast<off_t>(n.size);
      auto rs = incoming_->StatResult(n.aux);
      if (rs.ok() && rs->ino == n.serial) {
        st.st_size = static_cast<off_t>(rs->size);
        st.st_uid = rs->uid;
      }
      st.st_gid = pol.GroupFor(Right::kPublish);
      break;
    }
    default:
      break;
  }
  st.st_blocks = (st.st_size + 511) / 512;
  return st;
}

// ---- replies ----------------------------------------------------------------

void HookFs::ReplyStatus(fuse_req_t req, const Status& s, const char* op) {
  if (s.ok()) {
    fuse_reply_err(req, 0);
    return;
  }
  int err = s.ToErrno();
  if (s.Is(Code::kCorruption) || s.Is(Code::kIOError)) {
    spdlog::error("{}: {}", op, s.ToString());
  } else if (!s.Is(Code::kNotFound)) {
    spdlog::info("{}: {}", op, s.ToString());
  }
  fuse_reply_err(req, err == 0 ? EIO : err);
}

void HookFs::ReplyEntry(fuse_req_t req, Node node) {
  auto [ino, ptr] = table_.Bind(std::move(node));
  auto st = Attr(ino, *ptr);
  if (!st.ok()) {
    table_.Forget(ino, 1);
    ReplyStatus(req, st.status(), "lookup");
    return;
  }
  fuse_entry_param e{};
  e.ino = ino;
  e.generation = 0;
  e.attr = *st;
  e.attr_timeout = AttrTimeout(*ptr);
  e.entry_timeout = EntryTimeout(*ptr);
  if (fuse_reply_entry(req, &e) != 0) table_.Forget(ino, 1);
}

// ---- lookup / forget / attrs ----------------------------------------------------

void HookFs::Lookup(fuse_req_t req, fuse_ino_t parent, const char* name) {
  NodePtr dir = table_.Get(parent);
  if (!dir) return (void)fuse_reply_err(req, ESTALE);
  if (!dir->IsDir()) return (void)fuse_reply_err(req, ENOTDIR);
  auto c = Child(parent, *dir, name);
  if (!c.ok()) {
    if (c.status().Is(Code::kNotFound)) {
      // Absence inside an immutable tree is forever too.
      if (Immutable(*dir)) {
        fuse_entry_param e{};
        e.ino = 0;
        e.entry_timeout = kForever;
        fuse_reply_entry(req, &e);
        return;
      }
      return (void)fuse_reply_err(req, ENOENT);
    }
    return ReplyStatus(req, c.status(), "lookup");
  }
  ReplyEntry(req, std::move(c).value());
}

void HookFs::Forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup) {
  table_.Forget(ino, nlookup);
  fuse_reply_none(req);
}

void HookFs::ForgetMulti(fuse_req_t req, size_t count, fuse_forget_data* forgets) {
  for (size_t i = 0; i < count; ++i) table_.Forget(forgets[i].ino, forgets[i].nlookup);
  spdlog::debug("forget {} inodes: {} nodes left", count, table_.size());
  fuse_reply_none(req);
}

void HookFs::GetAttr(fuse_req_t req, fuse_ino_t ino, fuse_file_info*) {
  NodePtr n = table_.Get(ino);
  if (!n) return (void)fuse_reply_err(req, ESTALE);
  auto st = Attr(ino, *n);
  if (!st.ok()) return ReplyStatus(req, st.status(), "getattr");
  fuse_reply_attr(req, &*st, AttrTimeout(*n));
}

void HookFs::SetAttr(fuse_req_t req, fuse_ino_t ino, struct stat* attr, int to_set,
                     fuse_file_info* fi) {
  NodePtr n = table_.Get(ino);
  if (!n) return (void)fuse_reply_err(req, ESTALE);
  if (n->kind == Kind::kSpool) {
    auto spool = incoming_->Find(n->aux);
    if (!spool || spool->serial() != n->serial) {
      if (fi) spool = reinterpret_cast<Handle*>(fi->fh)->spool;
      if (!spool) return (void)fuse_reply_err(req, ENOENT);
    }
    if (to_set & FUSE_SET_ATTR_SIZE) {
      Status s = options_.policy.Check(req, Right::kPublish, "write incoming/");
      if (s.ok()) {
        std::lock_guard<std::mutex> lock(spool->mu);
        s = spool->Truncate(attr->st_size);
        if (s.ok()) spool->dirty = true;
      }
      if (!s.ok()) return ReplyStatus(req, s, "truncate");
    }
    // Modes, owners and times of a pack in flight are accepted and ignored
    // (rsync and cp -p set them before the rename).
    auto st = Attr(ino, *n);
    if (!st.ok()) return ReplyStatus(req, st.status(), "setattr");
    return (void)fuse_reply_attr(req, &*st, 0);
  }
  if (n->kind == Kind::kRunResult && to_set == FUSE_SET_ATTR_SIZE && attr->st_size == 0) {
    // O_TRUNC of an open-for-write: the run must still be running.
    auto r = ledger_->GetRun(n->hook, n->aux);
    if (!r.ok()) return ReplyStatus(req, r.status(), "truncate result");
    if (r->sealed()) return (void)fuse_reply_err(req, EPERM);
    Status s = options_.policy.Check(req, Right::kRun, "finish runs");
    if (!s.ok()) return ReplyStatus(req, s, "truncate result");
    auto st = Attr(ino, *n);
    if (!st.ok()) return ReplyStatus(req, st.status(), "setattr");
    return (void)fuse_reply_attr(req, &*st, 0);
  }
  fuse_reply_err(req, ReadOnlyErrno(*n));
}

void HookFs::ReadLink(fuse_req_t req, fuse_ino_t ino) {
  NodePtr n = table_.Get(ino);
  if (!n) return (void)fuse_reply_err(req, ESTALE);
  if (!n->IsSymlink()) return (void)fuse_reply_err(req, EINVAL);
  fuse_reply_readlink(req, Target(*n).c_str());
}

// ---- namespace changes ----------------------------------------------------------

void HookFs::MkNod(fuse_req_t req, fuse_ino_t parent, const char*, mode_t, dev_t) {
  NodePtr dir = table_.Get(parent);
  if (!dir) return (void)fuse_reply_err(req, ESTALE);
  fuse_reply_err(req, ReadOnlyErrno(*dir));
}

void HookFs::Link(fuse_req_t req, fuse_ino_t, fuse_ino_t newparent, const char*) {
  NodePtr dir = table_.Get(newparent);
  if (!dir) return (void)fuse_reply_err(req, ESTALE);
  fuse_reply_err(req, ReadOnlyErrno(*dir));
}

void HookFs::MkDir(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t) {
  NodePtr dir = table_.Get(parent);
  if (!dir) return (void)fuse_reply_err(req, ESTALE);
  if (dir->kind != Kind::kRunsDir) return (void)fuse_reply_err(req, ReadOnlyErrno(*dir));
  Status s = options_.policy.Check(req, Right::kRun, "start runs");
  if (!s.ok()) return ReplyStatus(req, s, "mkdir");
  s = ValidateRunName(name);
  if (!s.ok()) return ReplyStatus(req, s, "mkdir");
  Actor who = ActorOf(req);
  auto run = ledger_->StartRun(dir->hook, name, who);
  if (!run.ok()) return ReplyStatus(req, run.status(), "mkdir");
  spdlog::info("run {}/{} started on release {} by uid {}", dir->hook, name, run->version, who.uid);
  Node c;
  c.kind = Kind::kRunDir;
  c.parent = parent;
  c.name = name;
  c.hook = dir->hook;
  c.aux = name;
  c.version = run->version;
  c.mtime = run->started_at;
  ReplyEntry(req, std::move(c));
}

void HookFs::RmDir(fuse_req_t req, fuse_ino_t parent, const char* name) {
  NodePtr dir = table_.Get(parent);
  if (!dir) return (void)fuse_reply_err(req, ESTALE);
  if (dir->kind == Kind::kRunsDir) {
    spdlog::info("rmdir runs/{}: runs are append-only", name);
    return (void)fuse_reply_err(req, EPERM);
  }
  fuse_reply_err(req, ReadOnlyErrno(*dir));
}

void HookFs::Unlink(fuse_req_t req, fuse_ino_t parent, const char* cname) {
  NodePtr dir = table_.Get(parent);
  if (!dir) return (void)fuse_reply_err(req, ESTALE);
  std::string name = cname;
  switch (dir->kind) {
    case Kind::kIncomingDir: {
      Status s = options_.policy.Check(req, Right::kPublish, "remove from incoming/");
      if (!s.ok()) return ReplyStatus(req, s, "unlink");
      if (incoming_->Find(name)) s = incoming_->Remove(name);
      else s = incoming_->RemoveResult(name);
      return ReplyStatus(req, s, "unlink");
    }
    case Kind::kTagsDir: case Kind::kHookDir: {
      bool in_tags = dir->kind == Kind::kTagsDir;
      Status s = options_.policy.Check(req, Right::kPublish, "move pointers");
      if (!s.ok()) return ReplyStatus(req, s, "unlink");
      if (TakePending(PendingKey{dir->hook, in_tags, name}, true)) return (void)fuse_reply_err(req, 0);
      if (!in_tags) return (void)fuse_reply_err(req, IsFixedHookEntry(name) ? EPERM : ENOENT);
      Actor who = ActorOf(req);
      s = ledger_->RemoveTag(dir->hook, name, who);
      if (s.ok()) {
        spdlog::info("{}/tags/{} removed by uid {}", dir->hook, name, who.uid);
        InvalidatePointer(parent, name);
      }
      return ReplyStatus(req, s, "unlink");
    }
    default:
      return (void)fuse_reply_err(req, ReadOnlyErrno(*dir));
  }
}

std::optional<HookFs::Pending> HookFs::TakePending(const PendingKey& k, bool erase) {
  std::lock_guard<std::mutex> lock(pending_mu_);
  auto it = pending_.find(k);
  if (it == pending_.end()) return std::nullopt;
  Pending p = it->second;
  if (erase) pending_.erase(it);
  return p;
}

Status HookFs::AddPending(const PendingKey& k, std::string target) {
  std::lock_guard<std::mutex> lock(pending_mu_);
  auto now = std::chrono::steady_clock::now();
  for (auto it = pending_.begin(); it != pending_.end();) {
    if (now - it->second.created > kPendingTtl) it = pending_.erase(it);
    else ++it;
  }
  if (pending_.count(k)) return Status::Exists(k.name);
  if (pending_.size() >= kMaxPending) return Status::NoSpace("too many pending symlinks");
  pending_[k] = Pending{std::move(target), now};
  return Status::OK();
}

void HookFs::InvalidatePointer(fuse_ino_t dir_ino, const std::string& name) {
  fuse_ino_t old = table_.Find(dir_ino, name);
  invalidator_.Entry(dir_ino, name);
  if (old) invalidator_.Inode(old);
}

// Sets live (in a hook dir) or a tag (in tags/) to `target`.
Status HookFs::CommitPointer(fuse_req_t req, fuse_ino_t dir_ino, const Node& dir,
                             const std::string& name, const std::string& target) {
  bool in_tags = dir.kind == Kind::kTagsDir;
  auto v = ParsePointerTarget(target, in_tags ? "../" : "");
  if (!v) {
    return Status::InvalidArgument("'" + target + "' is not " +
                                   (in_tags ? "../releases/N" : "releases/N"));
  }
  Actor who = ActorOf(req);
  Status s;
  if (in_tags) {
    HOOKFS_RETURN_IF_ERROR(ValidateTagName(name));
    s = ledger_->SetTag(dir.hook, name, *v, who);
  } else {
    if (name != "live") return Status::NotPermitted("only live may point at a release here");
    s = ledger_->MoveLive(dir.hook, *v, who);
  }
  if (s.ok()) {
    spdlog::info("{}/{}{} -> {} by uid {}", dir.hook, in_tags ? "tags/" : "", name, *v, who.uid);
    InvalidatePointer(dir_ino, name);
  }
  return s;
}

void HookFs::Symlink(fuse_req_t req, const char* link, fuse_ino_t parent, const char* cname) {
  NodePtr dir = table_.Get(parent);
  if (!dir) return (void)fuse_reply_err(req, ESTALE);
  if (dir->kind != Kind::kHookDir && dir->kind != Kind::kTagsDir) {
    return (void)fuse_reply_err(req, ReadOnlyErrno(*dir));
  }
  std::string name = cname;
  bool in_tags = dir->kind == Kind::kTagsDir;
  Status s = options_.policy.Check(req, Right::kPublish, "move pointers");
  if (!s.ok()) return ReplyStatus(req, s, "symlink");
  auto existing = Child(parent, *dir, name);
  if (existing.ok()) return (void)fuse_reply_err(req, EEXIST);
  if (!existing.status().Is(Code::kNotFound)) return ReplyStatus(req, existing.status(), "symlink");

  bool direct = in_tags ? ValidateTagName(name).ok() : name == "live";
  if (direct) {
    // `ln -s releases/2 live` on a hook without live, `ln -s ../releases/2 tags/stable`.
    s = CommitPointer(req, parent, *dir, name, link);
    if (!s.ok()) return ReplyStatus(req, s, "symlink");
  } else {
    // A temporary name (ln -sfn's CuXXXXXX): held until renamed over the pointer.
    s = ValidateEntryName(name);
    if (s.ok()) s = AddPending(PendingKey{dir->hook, in_tags, name}, link);
    if (!s.ok()) return ReplyStatus(req, s, "symlink");
  }
  auto c = Child(parent, *dir, name);
  if (!c.ok()) return ReplyStatus(req, c.status(), "symlink");
  ReplyEntry(req, std::move(c).value());
}

void HookFs::Rename(fuse_req_t req, fuse_ino_t parent, const char* cname, fuse_ino_t newparent,
                    const char* cnewname, unsigned int flags) {
  NodePtr dir = table_.Get(parent);
  NodePtr newdir = table_.Get(newparent);
  if (!dir || !newdir) return (void)fuse_reply_err(req, ESTALE);
  std::string name = cname, newname = cnewname;
  if (flags & RENAME_EXCHANGE) return (void)fuse_reply_err(req, EINVAL);
  bool noreplace = flags & RENAME_NOREPLACE;
  if (parent != newparent) {
    bool writable = dir->kind == Kind::kIncomingDir || dir->kind == Kind::kHookDir ||
                    dir->kind == Kind::kTagsDir;
    return (void)fuse_reply_err(req, writable ? EXDEV : ReadOnlyErrno(*dir));
  }
  switch (dir->kind) {
    case Kind::kIncomingDir: {
      Status s = options_.policy.Check(req, Right::kPublish, "publish");
      if (!s.ok()) return ReplyStatus(req, s, "rename");
      if (!incoming_->Find(name)) {
        return (void)fuse_reply_err(req, incoming_->StatResult(name).ok() ? EPERM : ENOENT);
      }
      s = incoming_->Rename(name, newname, noreplace, ActorOf(req));
      if (!Incoming::IsStaging(newname)) AfterPublish(newname);
      return ReplyStatus(req, s, "rename");
    }
    case Kind::kHookDir: case Kind::kTagsDir: {
      bool in_tags = dir->kind == Kind::kTagsDir;
      Status s = options_.policy.Check(req, Right::kPublish, "move pointers");
      if (!s.ok()) return ReplyStatus(req, s, "rename");
      auto src = Child(parent, *dir, name);
      if (!src.ok()) return ReplyStatus(req, src.status(), "rename");
      if (src->kind != Kind::kPending && src->kind != Kind::kTag) {
        return (void)fuse_reply_err(req, EPERM);  // live, hook.json, releases, ...
      }
      if (name == newname) return (void)fuse_reply_err(req, 0);
      auto dst = Child(parent, *dir, newname);
      bool dst_exists = dst.ok();
      if (!dst_exists && !dst.status().Is(Code::kNotFound)) return ReplyStatus(req, dst.status(), "rename");
      if (dst_exists && noreplace) return (void)fuse_reply_err(req, EEXIST);
      bool dst_pointer = in_tags ? ValidateTagName(newname).ok() : newname == "live";
      if (!dst_pointer) {
        if (dst_exists && dst->kind != Kind::kPending) return (void)fuse_reply_err(req, EPERM);
        if (src->kind != Kind::kPending) return (void)fuse_reply_err(req, EINVAL);
        // Pending to pending: just a new temporary name.
        auto p = TakePending(PendingKey{dir->hook, in_tags, name}, true);
        if (!p) return (void)fuse_reply_err(req, ENOENT);
        TakePending(PendingKey{dir->hook, in_tags, newname}, true);
        s = ValidateEntryName(newname);
        if (s.ok()) s = AddPending(PendingKey{dir->hook, in_tags, newname}, p->target);
        return ReplyStatus(req, s, "rename");
      }
      s = CommitPointer(req, parent, *dir, newname, Target(*src));
      if (!s.ok()) return ReplyStatus(req, s, "rename");
      if (src->kind == Kind::kPending) {
        TakePending(PendingKey{dir->hook, in_tags, name}, true);
      } else {
        s = ledger_->RemoveTag(dir->hook, name, ActorOf(req));  // mv tags/a tags/b
        if (s.ok()) InvalidatePointer(parent, name);
      }
      return ReplyStatus(req, s, "rename");
    }
    case Kind::kRunsDir: case Kind::kRunDir:
      return (void)fuse_reply_err(req, EPERM);
    default:
      return (void)fuse_reply_err(req, ReadOnlyErrno(*dir));
  }
}

void HookFs::AfterPublish(const std::string& pack_name) {
  fuse_ino_t inc = table_.Find(FUSE_ROOT_ID, "incoming");
  if (inc) {
    invalidator_.Entry(inc, pack_name);
    invalidator_.Entry(inc, pack_name + ".result");
  }
  if (options_.after_publish) options_.after_publish();
}

// ---- files --------------------------------------------------------------------

void HookFs::Create(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t,
                    fuse_file_info* fi) {
  NodePtr dir = table_.Get(parent);
  if (!dir) return (void)fuse_reply_err(req, ESTALE);
  if (dir->kind != Kind::kIncomingDir) {
    if (dir->kind == Kind::kRunDir) return (void)fuse_reply_err(req, EPERM);
    return (void)fuse_reply_err(req, ReadOnlyErrno(*dir));
  }
  Status s = options_.policy.Check(req, Right::kPublish, "write incoming/");
  if (!s.ok()) return ReplyStatus(req, s, "create");
  const fuse_ctx* ctx = fuse_req_ctx(req);
  auto spool = incoming_->Create(name, fi->flags & O_EXCL, ctx->uid,
                                 options_.policy.GroupFor(Right::kPublish));
  if (!spool.ok()) return ReplyStatus(req, spool.status(), "create");
  Node c;
  c.kind = Kind::kSpool;
  c.parent = parent;
  c.name = name;
  c.aux = name;
  c.serial = (*spool)->serial();
  auto [ino, ptr] = table_.Bind(std::move(c));
  auto st = Attr(ino, *ptr);
  if (!st.ok()) {
    table_.Forget(ino, 1);
    return ReplyStatus(req, st.status(), "create");
  }
  auto h = std::make_unique<Handle>();
  h->node = ptr;
  h->spool = *spool;
  h->writable = true;
  fuse_entry_param e{};
  e.ino = ino;
  e.attr = *st;
  fi->direct_io = 1;
  fi->fh = reinterpret_cast<uint64_t>(h.get());
  if (fuse_reply_create(req, &e, fi) == 0) {
    h.release();
  } else {
    table_.Forget(ino, 1);
  }
}

void HookFs::Open(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  NodePtr n = table_.Get(ino);
  if (!n) return (void)fuse_reply_err(req, ESTALE);
  if (n->IsDir()) return (void)fuse_reply_err(req, EISDIR);
  bool wr = IsWriteOpen(fi->flags);
  switch (n->kind) {
    case Kind::kTreeFile: case Kind::kBlob:
      if (wr) return (void)fuse_reply_err(req, EROFS);
      fi->keep_cache = 1;
      fi->noflush = 1;
      fi->fh = 0;
      return (void)fuse_reply_open(req, fi);
    case Kind::kSpool: {
      auto spool = incoming_->Find(n->aux);
      if (!spool || spool->serial() != n->serial) return (void)fuse_reply_err(req, ENOENT);
      if (wr) {
        Status s = options_.policy.Check(req, Right::kPublish, "write incoming/");
        if (!s.ok()) return ReplyStatus(req, s, "open");
        if (fi->flags & O_TRUNC) {
          {
            std::lock_guard<std::mutex> lock(spool->mu);
            s = spool->Truncate(0);
            if (s.ok()) spool->dirty = true;
          }
          if (!s.ok()) return ReplyStatus(req, s, "open");
        }
      }
      auto h = std::make_unique<Handle>();
      h->node = n;
      h->spool = spool;
      h->writable = wr;
      fi->direct_io = 1;
      fi->fh = reinterpret_cast<uint64_t>(h.get());
      if (fuse_reply_open(req, fi) == 0) h.release();
      return;
    }
    case Kind::kResult: {
      if (wr) return (void)fuse_reply_err(req, EPERM);
      auto fd = incoming_->OpenResult(n->aux);
      if (!fd.ok()) return ReplyStatus(req, fd.status(), "open");
      auto h = std::make_unique<Handle>();
      h->node = n;
      h->fd.fd = *fd;
      fi->direct_io = 1;
      fi->fh = reinterpret_cast<uint64_t>(h.get());
      if (fuse_reply_open(req, fi) == 0) h.release();
      return;
    }
    case Kind::kRunResult: {
      auto h = std::make_unique<Handle>();
      h->node = n;
      if (wr) {
        Status s = options_.policy.Check(req, Right::kRun, "finish runs");
        if (!s.ok()) return ReplyStatus(req, s, "open");
        auto r = ledger_->GetRun(n->hook, n->aux);
        if (!r.ok()) return ReplyStatus(req, r.status(), "open");
        if (r->sealed()) {
          spdlog::info("runs/{}/result of {}: sealed", n->aux, n->hook);
          return (void)fuse_reply_err(req, EPERM);
        }
        h->writable = true;
      } else {
        auto c = Content(*n);
        if (!c.ok()) return ReplyStatus(req, c.status(), "open");
        h->content = std::move(c).value();
      }
      fi->direct_io = 1;
      fi->fh = reinterpret_cast<uint64_t>(h.get());
      if (fuse_reply_open(req, fi) == 0) h.release();
      return;
    }
    case Kind::kJournal: {
      if (wr) return (void)fuse_reply_err(req, EPERM);
      auto h = std::make_unique<Handle>();
      h->node = n;
      fi->direct_io = 1;
      fi->noflush = 1;
      fi->fh = reinterpret_cast<uint64_t>(h.get());
      if (fuse_reply_open(req, fi) == 0) h.release();
      return;
    }
    case Kind::kHookJson: case Kind::kReleaseJson: case Kind::kRunJson: case Kind::kHistory: {
      if (wr) return (void)fuse_reply_err(req, ReadOnlyErrno(*n));
      auto c = Content(*n);
      if (!c.ok()) return ReplyStatus(req, c.status(), "open");
      auto h = std::make_unique<Handle>();
      h->node = n;
      h->content = std::move(c).value();
      // Sizes follow the ledger: no page cache across opens.
      fi->direct_io = 1;
      fi->noflush = 1;
      fi->fh = reinterpret_cast<uint64_t>(h.get());
      if (fuse_reply_open(req, fi) == 0) h.release();
      return;
    }
    default:
      return (void)fuse_reply_err(req, EINVAL);
  }
}

void HookFs::ReadBlob(fuse_req_t req, const ObjectId& id, size_t size, off_t off) {
  // One read txn for this request only: the spans point into the map and die
  // with the view, right after the reply has been written to the device.
  auto view = store_->Read();
  if (!view.ok()) return ReplyStatus(req, view.status(), "read");
  std::vector<std::span<const uint8_t>> spans;
  Status s = view->ReadBlob(id, static_cast<uint64_t>(off), size, &spans);
  if (!s.ok()) {
    if (s.Is(Code::kCorruption)) spdlog::error("read blob {}: {} -> EIO", id.Hex(), s.ToString());
    return ReplyStatus(req, s, "read");
  }
  if (spans.empty()) return (void)fuse_reply_buf(req, nullptr, 0);
  std::vector<iovec> iov(spans.size());
  for (size_t i = 0; i < spans.size(); ++i) {
    iov[i].iov_base = const_cast<uint8_t*>(spans[i].data());
    iov[i].iov_len = spans[i].size();
  }
  // fuse_reply_iov writes header + spans with one writev: no copy in user
  // space (fuse_reply_data copies as soon as there is more than one buffer).
  fuse_reply_iov(req, iov.data(), static_cast<int>(iov.size()));
}

void HookFs::ReadJournal(fuse_req_t req, Handle* h, size_t size, off_t off) {
  std::string out;
  Status st;
  {
    std::lock_guard<std::mutex> lock(h->mu);
    st = FillJournal(h, size, off, &out);
  }
  if (!st.ok()) return ReplyStatus(req, st, "read journal");
  fuse_reply_buf(req, out.data(), out.size());
}

Status HookFs::FillJournal(Handle* h, size_t size, off_t off, std::string* out) {
  uint64_t uoff = static_cast<uint64_t>(off);
  if (uoff < h->buf_off) {  // a seek backwards: start again from the top
    h->buf_off = 0;
    h->buf.clear();
    h->next_seq = 0;
    h->eof = false;
  }
  // Drop what lies before the request.
  auto drop_before = [&] {
    if (uoff > h->buf_off) {
      uint64_t n = std::min<uint64_t>(uoff - h->buf_off, h->buf.size());
      h->buf.erase(0, n);
      h->buf_off += n;
    }
  };
  drop_before();
  while (!h->eof && h->buf_off + h->buf.size() < uoff + size) {
    size_t want = size + (uoff - h->buf_off) + 65536;
    bool any = false;
    Status s = ledger_->ReadJournal(h->next_seq, [&](uint64_t seq, std::string_view line) {
      any = true;
      h->buf.append(line);
      h->buf.push_back('\n');
      h->next_seq = seq + 1;
      return h->buf.size() < want;
    });
    if (!s.ok()) return s;
    if (!any) h->eof = true;
    drop_before();
  }
  if (uoff < h->buf_off) return Status::OK();
  size_t start = static_cast<size_t>(uoff - h->buf_off);
  if (start < h->buf.size()) *out = h->buf.substr(start, size);
  return Status::OK();
}

void HookFs::Read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info* fi) {
  if (off < 0) return (void)fuse_reply_err(req, EINVAL);
  auto* h = reinterpret_cast<Handle*>(fi->fh);
  NodePtr n = h ? h->node : table_.Get(ino);
  if (!n) return (void)fuse_reply_err(req, ESTALE);
  switch (n->kind) {
    case Kind::kTreeFile: case Kind::kBlob:
      return ReadBlob(req, n->id, size, off);
    case Kind::kJournal:
      return ReadJournal(req, h, size, off);
    case Kind::kSpool: {
      std::vector<char> buf(size);
      auto r = h->spool->Read(buf.data(), size, off);
      if (!r.ok()) return ReplyStatus(req, r.status(), "read");
      return (void)fuse_reply_buf(req, buf.data(), *r);
    }
    case Kind::kResult: {
      std::vector<char> buf(size);
      ssize_t r = ::pread(h->fd.fd, buf.data(), size, off);
      if (r < 0) return (void)fuse_reply_err(req, errno);
      return (void)fuse_reply_buf(req, buf.data(), static_cast<size_t>(r));
    }
    default: {
      // Never reply while holding a handle's lock: the reply lets the kernel
      // send RELEASE, which frees the handle.
      std::string out;
      {
        std::lock_guard<std::mutex> lock(h->mu);
        if (static_cast<uint64_t>(off) < h->content.size()) {
          out = h->content.substr(static_cast<size_t>(off), size);
        }
      }
      return (void)fuse_reply_buf(req, out.data(), out.size());
    }
  }
}

void HookFs::Write(fuse_req_t req, fuse_ino_t, const char* buf, size_t size, off_t off,
                   fuse_file_info* fi) {
  auto* h = reinterpret_cast<Handle*>(fi->fh);
  if (!h || !h->writable) return (void)fuse_reply_err(req, EBADF);
  if (off < 0) return (void)fuse_reply_err(req, EINVAL);
  if (h->node->kind == Kind::kSpool) {
    std::shared_ptr<Spool> spool = h->spool;
    Status s;
    {
      std::lock_guard<std::mutex> lock(spool->mu);
      if (spool->consumed) {
        spdlog::warn("write to incoming/{} after its verdict", h->node->aux);
        s = Status::IOError("pack already applied");
      } else {
        s = spool->Write(buf, size, off);
        if (s.ok()) spool->dirty = true;
      }
    }
    if (!s.ok()) return ReplyStatus(req, s, "write");
    return (void)fuse_reply_write(req, size);
  }
  if (h->node->kind == Kind::kRunResult) {
    uint64_t end = static_cast<uint64_t>(off) + size;
    if (end > kMaxRunResult) return (void)fuse_reply_err(req, EFBIG);
    {
      std::lock_guard<std::mutex> lock(h->mu);
      if (h->content.size() < end) h->content.resize(end);
      std::memcpy(h->content.data() + off, buf, size);
      h->dirty = true;
    }
    return (void)fuse_reply_write(req, size);
  }
  fuse_reply_err(req, EBADF);
}

void HookFs::Flush(fuse_req_t req, fuse_ino_t, fuse_file_info* fi) {
  auto* h = reinterpret_cast<Handle*>(fi->fh);
  if (!h || !h->writable) return (void)fuse_reply_err(req, 0);
  if (h->node->kind == Kind::kSpool) {
    std::string name = incoming_->NameOf(h->spool);
    Status s = incoming_->FlushPublish(h->spool, name, ActorOf(req));
    if (!name.empty() && !Incoming::IsStaging(name)) AfterPublish(name);
    // The verdict: what close() returns (EBADMSG, ENOSPC, EIO).
    return ReplyStatus(req, s, "publish");
  }
  if (h->node->kind == Kind::kRunResult) {
    std::string text;
    bool dirty;
    {
      std::lock_guard<std::mutex> lock(h->mu);
      dirty = h->dirty;
      h->dirty = false;
      text = h->content;
    }
    if (!dirty) return (void)fuse_reply_err(req, 0);
    auto result = RunResult::FromJson(text);
    if (!result.ok()) return ReplyStatus(req, result.status(), "finish run");
    Actor who = ActorOf(req);
    auto run = ledger_->FinishRun(h->node->hook, h->node->aux, *result, who);
    if (!run.ok()) return ReplyStatus(req, run.status(), "finish run");
    spdlog::info("run {}/{} finished: {} (exit code {}) by uid {}", h->node->hook, h->node->aux,
                 run->status, run->exit_code, who.uid);
    invalidator_.Inode(table_.Find(h->node->parent, "run.json"));
    invalidator_.Inode(table_.Find(h->node->parent, "result"));
    return (void)fuse_reply_err(req, 0);
  }
  fuse_reply_err(req, 0);
}

void HookFs::Release(fuse_req_t req, fuse_ino_t, fuse_file_info* fi) {
  std::unique_ptr<Handle> h(reinterpret_cast<Handle*>(fi->fh));
  fuse_reply_err(req, 0);
}

void HookFs::Fsync(fuse_req_t req, fuse_ino_t, int, fuse_file_info*) { fuse_reply_err(req, 0); }

// ---- directories ---------------------------------------------------------------

void HookFs::OpenDir(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  NodePtr n = table_.Get(ino);
  if (!n) return (void)fuse_reply_err(req, ESTALE);
  if (!n->IsDir()) return (void)fuse_reply_err(req, ENOTDIR);
  auto d = std::make_unique<DirHandle>();
  if (Immutable(*n)) {
    // Both flags, or the kernel drops the readdir cache on every opendir.
    fi->cache_readdir = 1;
    fi->keep_cache = 1;
  }
  fi->fh = reinterpret_cast<uint64_t>(d.get());
  if (fuse_reply_open(req, fi) == 0) d.release();
}

void HookFs::DirReply(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info* fi,
                      bool plus) {
  auto* d = reinterpret_cast<DirHandle*>(fi->fh);
  NodePtr n = table_.Get(ino);
  if (!n || !d) return (void)fuse_reply_err(req, ESTALE);
  std::vector<char> buf(size);
  size_t used = 0;
  Status st = FillDir(req, d, ino, *n, off, plus, &buf, &used);
  // Replied outside the handle's lock: the reply may let RELEASEDIR free it.
  if (!st.ok()) return ReplyStatus(req, st, plus ? "readdirplus" : "readdir");
  fuse_reply_buf(req, buf.data(), used);
}

Status HookFs::FillDir(fuse_req_t req, DirHandle* d, fuse_ino_t ino, const Node& dnode, off_t off,
                       bool plus, std::vector<char>* out, size_t* used_out) {
  const Node* n = &dnode;
  std::vector<char>& buf = *out;
  size_t size = buf.size();
  size_t& used = *used_out;
  std::lock_guard<std::mutex> lock(d->mu);
  if (!d->filled || off == 0) {
    HOOKFS_ASSIGN_OR_RETURN(d->entries, Children(ino, *n));
    d->filled = true;
  }
  // Offsets: 1 ".", 2 "..", 3 + i the i-th entry.
  size_t total = d->entries.size() + 2;
  for (size_t i = static_cast<size_t>(off); i < total; ++i) {
    const char* name;
    Node child;
    fuse_ino_t child_ino = 0;
    bool dots = i < 2;
    if (dots) {
      name = i == 0 ? "." : "..";
      child_ino = i == 0 ? ino : n->parent;
    } else {
      name = d->entries[i - 2].name.c_str();
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
        auto [cino, ptr] = table_.Bind(d->entries[i - 2]);
        auto st = Attr(cino, *ptr);
        if (!st.ok()) {
          table_.Forget(cino, 1);
          if (used == 0) return st.status();
          break;
        }
        e.ino = cino;
        e.attr = *st;
        e.attr_timeout = AttrTimeout(*ptr);
        e.entry_timeout = EntryTimeout(*ptr);
      }
      used += fuse_add_direntry_plus(req, buf.data() + used, rem, name, &e, next);
    } else {
      struct stat st{};
      if (dots) {
        st.st_ino = child_ino;
        st.st_mode = S_IFDIR;
      } else {
        const Node& c = d->entries[i - 2];
        fuse_ino_t known = table_.Find(ino, c.name);
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
  return Status::OK();
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
  fuse_reply_err(req, 0);
}

void HookFs::FsyncDir(fuse_req_t req, fuse_ino_t, int, fuse_file_info*) { fuse_reply_err(req, 0); }

void HookFs::StatFs(fuse_req_t req, fuse_ino_t) {
  struct statvfs sv{};
  if (::statvfs(store_->dir().c_str(), &sv) != 0) return (void)fuse_reply_err(req, errno);
  sv.f_namemax = Limits::kMaxNameBytes;
  fuse_reply_statfs(req, &sv);
}

// ---- extended attributes -----------------------------------------------------------

namespace {

std::vector<std::pair<std::string, std::string>> XattrsOf(const Node& n) {
  std::vector<std::pair<std::string, std::string>> out;
  switch (n.kind) {
    case Kind::kTreeFile: case Kind::kBlob:
      out.emplace_back("user.hookfs.sha256", n.id.Hex());
      break;
    case Kind::kReleaseRoot:
      out.emplace_back("user.hookfs.tree", n.id.Hex());
      out.emplace_back("user.hookfs.version", std::to_string(n.version));
      out.emplace_back("user.hookfs.digest", n.id.Hex());
      break;
    case Kind::kTreeDir: case Kind::kObjTree:
      out.emplace_back("user.hookfs.tree", n.id.Hex());
      break;
    default:
      break;
  }
  return out;
}

}  // namespace

void HookFs::GetXattr(fuse_req_t req, fuse_ino_t ino, const char* name, size_t size) {
  NodePtr n = table_.Get(ino);
  if (!n) return (void)fuse_reply_err(req, ESTALE);
  // Only the user namespace exists here. EOPNOTSUPP (not ENODATA) for
  // security.* and system.posix_acl_*: `ls -l` then stops asking for every
  // other file of this filesystem (coreutils caches "unsupported" per st_dev),
  // which halves the round trips of `ls -lR`.
  if (std::strncmp(name, "user.", 5) != 0) return (void)fuse_reply_err(req, EOPNOTSUPP);
  for (const auto& [k, v] : XattrsOf(*n)) {
    if (k != name) continue;
    if (size == 0) return (void)fuse_reply_xattr(req, v.size());
    if (size < v.size()) return (void)fuse_reply_err(req, ERANGE);
    return (void)fuse_reply_buf(req, v.data(), v.size());
  }
  fuse_reply_err(req, ENODATA);
}

void HookFs::ListXattr(fuse_req_t req, fuse_ino_t ino, size_t size) {
  NodePtr n = table_.Get(ino);
  if (!n) return (void)fuse_reply_err(req, ESTALE);
  std::string names;
  for (const auto& [k, v] : XattrsOf(*n)) {
    names += k;
    names.push_back('\0');
  }
  if (size == 0) return (void)fuse_reply_xattr(req, names.size());
  if (size < names.size()) return (void)fuse_reply_err(req, ERANGE);
  fuse_reply_buf(req, names.data(), names.size());
}

void HookFs::SetXattr(fuse_req_t req, fuse_ino_t ino, const char*, const char*, size_t, int) {
  NodePtr n = table_.Get(ino);
  if (!n) return (void)fuse_reply_err(req, ESTALE);
  // Packs in flight carry no attributes (cp -a tolerates EOPNOTSUPP).
  if (n->kind == Kind::kSpool || n->kind == Kind::kIncomingDir) return (void)fuse_reply_err(req, EOPNOTSUPP);
  fuse_reply_err(req, ReadOnlyErrno(*n));
}

void HookFs::RemoveXattr(fuse_req_t req, fuse_ino_t ino, const char*) {
  NodePtr n = table_.Get(ino);
  if (!n) return (void)fuse_reply_err(req, ESTALE);
  if (n->kind == Kind::kSpool) return (void)fuse_reply_err(req, EOPNOTSUPP);
  fuse_reply_err(req, ReadOnlyErrno(*n));
}

}  // namespace hookfs::fs
