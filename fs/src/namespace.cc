#include "hookfs/namespace.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <ctime>

#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include "file_times.h"
#include "incoming.h"
#include "inode_table.h"
#include "hookfs/keys.h"

namespace hookfs::fs {

namespace {

constexpr double kForever = 86400.0;
// A bound on all temporaries together, whatever the per-user limit says.
constexpr size_t kMaxPending = 65536;

constexpr const char* kHookEntries[] = {"hook.json", "live", "history", "releases", "tags", "runs"};

// DESIGN.md §2: a temporary symlink is dot-named or coreutils ln's
// temporary (`Cu` and six more characters); nothing else is one.
bool IsTemporaryName(std::string_view name) {
  if (name.empty() || name == "." || name == "..") return false;
  if (name[0] == '.') return true;
  return name.size() == 8 && name.substr(0, 2) == "Cu";
}

bool IsFixedHookEntry(std::string_view name) {
  for (const char* n : kHookEntries) {
    if (name == n) return true;
  }
  return false;
}

// A tree entry's approximate footprint (TreeCache budget).
size_t TreeBytes(const Tree& t) {
  size_t n = sizeof(DecodedTree) + t.entries.capacity() * sizeof(TreeEntry);
  for (const TreeEntry& e : t.entries) {
    if (e.name.size() > 15) n += e.name.capacity();
    if (e.target.size() > 15) n += e.target.capacity();
  }
  return n;
}

}  // namespace

// ---- identities ------------------------------------------------------------

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

Result<ReleaseRef> ReleaseRef::FromTarget(const HookName& hook, std::string_view target,
                                          std::string_view prefix) {
  std::string want = std::string(prefix) + "releases/";
  std::optional<uint32_t> v;
  if (target.substr(0, want.size()) == want) v = ParseVersion(target.substr(want.size()));
  if (!v) return Status::InvalidArgument("'" + std::string(target) + "' is not " + want + "N");
  return ReleaseRef{hook, *v};
}

// ---- LedgerCatalog -----------------------------------------------------------

Result<std::vector<HookInfo>> LedgerCatalog::Hooks() { return ledger_->ListHooks(); }
Result<HookInfo> LedgerCatalog::Hook(const HookName& h) { return ledger_->GetHook(h.str()); }
Result<std::vector<ReleaseInfo>> LedgerCatalog::Releases(const HookName& h) {
  return ledger_->ListReleases(h.str());
}
Result<ReleaseInfo> LedgerCatalog::Release(const ReleaseRef& r) {
  return ledger_->GetRelease(r.hook.str(), r.version);
}
Result<std::optional<uint32_t>> LedgerCatalog::Live(const HookName& h) { return ledger_->GetLive(h.str()); }
Result<std::map<std::string, uint32_t>> LedgerCatalog::Tags(const HookName& h) {
  return ledger_->ListTags(h.str());
}
Result<std::vector<PointerMove>> LedgerCatalog::History(const HookName& h) {
  return ledger_->History(h.str());
}
Status LedgerCatalog::MoveLive(const ReleaseRef& to, const Actor& who) {
  return ledger_->MoveLive(to.hook.str(), to.version, who);
}
Status LedgerCatalog::SetTag(const TagName& tag, const ReleaseRef& to, const Actor& who) {
  return ledger_->SetTag(to.hook.str(), tag.str(), to.version, who);
}
Status LedgerCatalog::RemoveTag(const HookName& h, const TagName& tag, const Actor& who) {
  return ledger_->RemoveTag(h.str(), tag.str(), who);
}
Result<RunInfo> LedgerCatalog::StartRun(const HookName& h, const RunName& run, const Actor& who) {
  return ledger_->StartRun(h.str(), run.str(), who, host_);
}
Result<RunInfo> LedgerCatalog::FinishRun(const HookName& h, const RunName& run, const RunResult& result,
                                         const Actor& who) {
  return ledger_->FinishRun(h.str(), run.str(), result, who);
}
Result<RunInfo> LedgerCatalog::Run(const HookName& h, const RunName& run) {
  return ledger_->GetRun(h.str(), run.str());
}
Result<std::vector<RunInfo>> LedgerCatalog::Runs(const HookName& h) { return ledger_->ListRuns(h.str()); }
Status LedgerCatalog::ReadJournal(uint64_t from,
                                  const std::function<bool(uint64_t, std::string_view)>& fn) {
  return ledger_->ReadJournal(from, fn);
}

// ---- TreeCache ---------------------------------------------------------------

Result<TreePtr> TreeCache::Get(const ObjectId& id) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = index_.find(id);
    if (it != index_.end()) {
      lru_.splice(lru_.begin(), lru_, it->second);
      return *it->second;
    }
  }
  Result<Tree> tree = [&]() -> Result<Tree> {
    HOOKFS_ASSIGN_OR_RETURN(ReadView view, store_->Read());
    return view.GetTree(id);
  }();
  if (!tree.ok()) {
    // A tree something names is missing: damage, never "no such file".
    if (tree.status().Is(Code::kNotFound)) {
      Status s = Status::Corruption("tree " + id.Hex() + " is missing from the store");
      spdlog::error("{} (run hookctl fsck)", s.ToString());
      return s;
    }
    return tree.status();
  }
  auto d = std::make_shared<DecodedTree>();
  d->id = id;
  d->tree = std::move(tree).value();
  d->bytes = TreeBytes(d->tree);
  TreePtr ptr = std::move(d);
  if (ptr->bytes > budget_) return ptr;
  std::lock_guard<std::mutex> lock(mu_);
  if (index_.count(id)) return ptr;  // another thread decoded it meanwhile
  lru_.push_front(ptr);
  index_[id] = lru_.begin();
  bytes_ += ptr->bytes;
  while (bytes_ > budget_ && !lru_.empty()) {
    bytes_ -= lru_.back()->bytes;
    index_.erase(lru_.back()->id);
    lru_.pop_back();
  }
  return ptr;
}

size_t TreeCache::bytes() const {
  std::lock_guard<std::mutex> lock(mu_);
  return bytes_;
}

size_t TreeCache::size() const {
  std::lock_guard<std::mutex> lock(mu_);
  return index_.size();
}

// ---- Namespace: node model ------------------------------------------------------

Namespace::Namespace(NamespaceOptions options, Store* store, Catalog* catalog, Incoming* incoming,
                     Notifier* notifier)
    : options_(std::move(options)), store_(store), catalog_(catalog), incoming_(incoming),
      notifier_(notifier), table_(std::make_unique<InodeTable>()),
      trees_(store, options_.tree_cache_bytes), start_time_(std::time(nullptr)) {}

Namespace::~Namespace() = default;

NodePtr Namespace::Get(Ino ino) const { return table_->Get(ino); }
void Namespace::Forget(Ino ino, uint64_t n) { table_->Forget(ino, n); }

bool Namespace::Immutable(const Node& n) {
  switch (n.kind) {
    case Kind::kReleaseRoot: case Kind::kTreeDir: case Kind::kTreeFile: case Kind::kTreeSymlink:
    case Kind::kBlob: case Kind::kObjTree: case Kind::kHookJson: case Kind::kRunRelease:
      return true;
    default:
      return false;
  }
}

Status Namespace::ReadOnly(const Node& n) {
  switch (n.kind) {
    case Kind::kReleaseRoot: case Kind::kTreeDir: case Kind::kTreeFile: case Kind::kTreeSymlink:
    case Kind::kBlob: case Kind::kObjTree: case Kind::kObjectsDir: case Kind::kBlobsDir:
    case Kind::kTreesDir: case Kind::kReleasesDir: case Kind::kReleaseJson:
      return Status::ReadOnly(std::string(KindName(n.kind)) + " is read-only");
    default:
      return Status::NotPermitted(std::string("not allowed on ") + KindName(n.kind));
  }
}

double Namespace::EntryTimeout(const Node& n) {
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
    // A pointer's name is cached like the rest: every move is told to the
    // kernel (SyncPointers, InvalidatePointer), so a path walk through live
    // costs no LOOKUP (docs/mount.md "Caching and timeouts").
    case Kind::kLive: case Kind::kTag:
      return kForever;
    default:
      return 0;  // pending symlinks, spools, results
  }
}

double Namespace::AttrTimeout(const Node& n) {
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
    case Kind::kObjectsDir: case Kind::kBlobsDir: case Kind::kTreesDir: case Kind::kKeysDir:
      return kForever;  // mode, owner and group never change
    default:
      return 0;  // sizes and modes that follow the ledger
  }
}

std::string Namespace::Target(const Node& n) const {
  switch (n.kind) {
    case Kind::kLive: return n.release.Target("");
    case Kind::kTag: return n.release.Target("../");
    case Kind::kRunRelease: return n.release.Target("../../");
    case Kind::kTreeSymlink: case Kind::kPending: return n.target;
    default: return {};
  }
}

Result<std::string> Namespace::Content(const Node& n) {
  switch (n.kind) {
    case Kind::kHookJson: {
      HOOKFS_ASSIGN_OR_RETURN(HookInfo h, catalog_->Hook(n.hook()));
      return ToJson(h).dump(2) + "\n";
    }
    case Kind::kReleaseJson: {
      HOOKFS_ASSIGN_OR_RETURN(ReleaseInfo r, catalog_->Release(n.release));
      return ToJson(r).dump(2) + "\n";
    }
    case Kind::kRunJson: {
      HOOKFS_ASSIGN_OR_RETURN(RunInfo r, catalog_->Run(n.hook(), n.run));
      return ToJson(r).dump(2) + "\n";
    }
    case Kind::kRunResult: {
      HOOKFS_ASSIGN_OR_RETURN(RunInfo r, catalog_->Run(n.hook(), n.run));
      if (!r.sealed()) return std::string();
      nlohmann::json j = {{"status", r.status}, {"exit_code", r.exit_code},
                          {"oom_retries", r.oom_retries}};
      if (!r.note.empty()) j["note"] = r.note;
      return j.dump() + "\n";
    }
    case Kind::kKey: {
      HOOKFS_ASSIGN_OR_RETURN(KeyInfo k, KeyRing(store_).Get(n.name));
      return ToJson(k).dump(2) + "\n";
    }
    case Kind::kHistory: {
      HOOKFS_ASSIGN_OR_RETURN(std::vector<PointerMove> moves, catalog_->History(n.hook()));
      std::string out;
      for (const PointerMove& m : moves) out += ToJson(m).dump() + "\n";
      return out;
    }
    default:
      return Status::InvalidArgument(std::string("no generated content for ") + KindName(n.kind));
  }
}

Node Namespace::TreeChild(Ino dir_ino, const Node& dir, const TreeEntry& e, uint64_t tindex,
                          std::optional<int64_t> mtime) const {
  Node c;
  c.parent = dir_ino;
  c.name = e.name;
  c.release = dir.release;
  c.mtime = mtime.value_or(dir.mtime);  // directories: the commit time
  c.tindex = tindex;
  c.etype = e.type;
  switch (e.type) {
    case EntryType::kDirectory: c.kind = Kind::kTreeDir; c.id = e.id; break;
    case EntryType::kFile: case EntryType::kExecutable:
      c.kind = Kind::kTreeFile; c.id = e.id; c.size = e.size; break;
    case EntryType::kSymlink: c.kind = Kind::kTreeSymlink; c.target = e.target; break;
  }
  return c;
}

Result<Node> Namespace::Child(Ino dir_ino, const Node& dir, std::string_view sv) {
  std::string name(sv);
  Node c;
  c.parent = dir_ino;
  c.name = name;
  c.release.hook = dir.hook();
  c.mtime = start_time_;
  auto not_found = [&] { return Status::NotFound(name); };
  switch (dir.kind) {
    case Kind::kRoot:
      if (name == "hooks") c.kind = Kind::kHooksDir;
      else if (name == "incoming") c.kind = Kind::kIncomingDir;
      else if (name == "objects") c.kind = Kind::kObjectsDir;
      else if (name == "journal") c.kind = Kind::kJournal;
      else if (name == "keys") c.kind = Kind::kKeysDir;
      else return not_found();
      return c;
    case Kind::kHooksDir: {
      auto hook = HookName::Make(name);
      if (!hook.ok()) return not_found();
      HOOKFS_ASSIGN_OR_RETURN(HookInfo h, catalog_->Hook(*hook));
      c.kind = Kind::kHookDir;
      c.release.hook = *hook;
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
        HOOKFS_ASSIGN_OR_RETURN(std::optional<uint32_t> live, catalog_->Live(dir.hook()));
        if (!live) return not_found();
        c.kind = Kind::kLive;
        c.release.version = *live;
        return c;
      }
      auto p = TakePending(PendingKey{dir.hook(), false, name}, false);
      if (!p) return not_found();
      c.kind = Kind::kPending;
      c.target = p->target;
      return c;
    }
    case Kind::kReleasesDir: {
      bool json = name.size() > 5 && name.compare(name.size() - 5, 5, ".json") == 0;
      auto v = ParseVersion(json ? std::string_view(name).substr(0, name.size() - 5) : name);
      if (!v) return not_found();
      c.release.version = *v;
      HOOKFS_ASSIGN_OR_RETURN(ReleaseInfo r, catalog_->Release(c.release));
      // A pruned release keeps N.json; its tree is gone (DESIGN.md §7).
      if (r.pruned && !json) return not_found();
      c.kind = json ? Kind::kReleaseJson : Kind::kReleaseRoot;
      c.id = r.digest;
      c.mtime = r.committed_at;
      return c;
    }
    case Kind::kReleaseRoot: case Kind::kTreeDir: case Kind::kObjTree: {
      HOOKFS_ASSIGN_OR_RETURN(TreePtr tree, trees_.Get(dir.id));
      const TreeEntry* e = tree->tree.Find(name);
      if (!e) return not_found();
      HOOKFS_ASSIGN_OR_RETURN(ReadView view, store_->Read());
      HOOKFS_ASSIGN_OR_RETURN(EntryTimes times,
                              EntryTimes::For(view, dir.hook().str(), dir.release.version, dir.tindex));
      EntryTimes::Stamp t = times.At(tree->tree, size_t(e - tree->tree.entries.data()));
      return TreeChild(dir_ino, dir, *e, t.index, t.mtime);
    }
    case Kind::kTagsDir: {
      c.mtime = dir.mtime;
      HOOKFS_ASSIGN_OR_RETURN(auto tags, catalog_->Tags(dir.hook()));
      auto it = tags.find(name);
      if (it != tags.end()) {
        HOOKFS_ASSIGN_OR_RETURN(c.tag, TagName::Make(name));
        c.kind = Kind::kTag;
        c.release.version = it->second;
        return c;
      }
      auto p = TakePending(PendingKey{dir.hook(), true, name}, false);
      if (!p) return not_found();
      c.kind = Kind::kPending;
      c.target = p->target;
      return c;
    }
    case Kind::kKeysDir:
      return KeyChild(dir_ino, name);
    case Kind::kRunsDir: {
      auto run = RunName::Make(name);
      if (!run.ok()) return not_found();
      HOOKFS_ASSIGN_OR_RETURN(RunInfo r, catalog_->Run(dir.hook(), *run));
      c.kind = Kind::kRunDir;
      c.run = *run;
      c.release.version = r.version;
      c.mtime = r.started_at;
      return c;
    }
    case Kind::kRunDir:
      c.run = dir.run;
      c.release = dir.release;
      c.mtime = dir.mtime;
      if (name == "run.json") c.kind = Kind::kRunJson;
      else if (name == "release") c.kind = Kind::kRunRelease;
      else if (name == "result") c.kind = Kind::kRunResult;
      else return not_found();
      return c;
    case Kind::kIncomingDir: {
      if (auto spool = incoming_->Find(name)) {
        c.kind = Kind::kSpool;
        c.serial = spool->serial();
        return c;
      }
      HOOKFS_ASSIGN_OR_RETURN(ResultStat rs, incoming_->StatResult(name));
      c.kind = Kind::kResult;
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
      return Status(Code::kInvalidArgument, "not a directory");
  }
}

// Symlinks made by `ln -sfn` that wait for their rename over live or a tag.
void Namespace::AppendPending(Ino dir_ino, const Node& dir, bool in_tags, std::vector<Node>* out) {
  std::lock_guard<std::mutex> lock(pending_mu_);
  auto now = std::chrono::steady_clock::now();
  for (const auto& [k, p] : pending_) {
    if (k.hook != dir.hook() || k.in_tags != in_tags) continue;
    if (now - p.created > options_.temp_link_ttl) continue;
    Node c;
    c.kind = Kind::kPending;
    c.parent = dir_ino;
    c.name = k.name;
    c.release.hook = dir.hook();
    c.target = p.target;
    c.mtime = dir.mtime;
    out->push_back(std::move(c));
  }
}

Result<std::vector<Node>> Namespace::Children(Ino dir_ino, const Node& dir) {
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
      for (const char* n : {"hooks", "incoming", "objects", "journal", "keys"}) HOOKFS_RETURN_IF_ERROR(add(n));
      break;
    case Kind::kHooksDir: {
      HOOKFS_ASSIGN_OR_RETURN(std::vector<HookInfo> hooks, catalog_->Hooks());
      for (const HookInfo& h : hooks) {
        auto name = HookName::Make(h.name);
        if (!name.ok()) continue;  // the ledger never stores one; never show one
        Node c;
        c.kind = Kind::kHookDir;
        c.parent = dir_ino;
        c.name = h.name;
        c.release.hook = *name;
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
      HOOKFS_ASSIGN_OR_RETURN(auto releases, catalog_->Releases(dir.hook()));
      for (const ReleaseInfo& r : releases) {
        for (bool json : {false, true}) {
          if (r.pruned && !json) continue;  // N.json only (DESIGN.md §7)
          Node c;
          c.kind = json ? Kind::kReleaseJson : Kind::kReleaseRoot;
          c.parent = dir_ino;
          c.name = std::to_string(r.version) + (json ? ".json" : "");
          c.release = ReleaseRef{dir.hook(), r.version};
          c.id = r.digest;
          c.mtime = r.committed_at;
          out.push_back(std::move(c));
        }
      }
      break;
    }
    case Kind::kReleaseRoot: case Kind::kTreeDir: case Kind::kObjTree: {
      HOOKFS_ASSIGN_OR_RETURN(TreePtr tree, trees_.Get(dir.id));
      HOOKFS_ASSIGN_OR_RETURN(ReadView view, store_->Read());
      HOOKFS_ASSIGN_OR_RETURN(EntryTimes times,
                              EntryTimes::For(view, dir.hook().str(), dir.release.version, dir.tindex));
      out.reserve(tree->tree.entries.size());
      for (size_t i = 0; i < tree->tree.entries.size(); ++i) {
        EntryTimes::Stamp t = times.At(tree->tree, i);
        out.push_back(TreeChild(dir_ino, dir, tree->tree.entries[i], t.index, t.mtime));
      }
      break;
    }
    case Kind::kTagsDir: {
      HOOKFS_ASSIGN_OR_RETURN(auto tags, catalog_->Tags(dir.hook()));
      for (const auto& [name, version] : tags) {
        auto tag = TagName::Make(name);
        if (!tag.ok()) continue;
        Node c;
        c.kind = Kind::kTag;
        c.parent = dir_ino;
        c.name = name;
        c.release = ReleaseRef{dir.hook(), version};
        c.tag = *tag;
        c.mtime = dir.mtime;
        out.push_back(std::move(c));
      }
      AppendPending(dir_ino, dir, /*in_tags=*/true, &out);
      break;
    }
    case Kind::kKeysDir: {
      HOOKFS_ASSIGN_OR_RETURN(out, KeyChildren(dir_ino));
      break;
    }
    case Kind::kRunsDir: {
      HOOKFS_ASSIGN_OR_RETURN(auto runs, catalog_->Runs(dir.hook()));
      for (const RunInfo& r : runs) {
        auto run = RunName::Make(r.run);
        if (!run.ok()) continue;
        Node c;
        c.kind = Kind::kRunDir;
        c.parent = dir_ino;
        c.name = r.run;
        c.release = ReleaseRef{dir.hook(), r.version};
        c.run = *run;
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

Result<struct stat> Namespace::Attr(Ino ino, const Node& n) {
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
      case Kind::kKeysDir:  // root and admin_group write here (DESIGN.md §4)
        st.st_gid = pol.admin_gid.value_or(pol.owner_gid);
        st.st_mode = S_IFDIR | (pol.admin_gid ? 0775 : 0755);
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
      HOOKFS_ASSIGN_OR_RETURN(RunInfo r, catalog_->Run(n.hook(), n.run));
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
    case Kind::kKey: {
      st.st_gid = pol.admin_gid.value_or(pol.owner_gid);
      st.st_mode = S_IFREG | (pol.admin_gid ? 0664 : 0644);
      auto content = Content(n);
      if (content.ok()) {
        st.st_size = static_cast<off_t>(content->size());
      } else if (!content.status().Is(Code::kNotFound)) {
        return content.status();  // NotFound: created, not yet committed (size 0)
      }
      break;
    }
    case Kind::kJournal:
      st.st_size = 0;  // streamed (direct_io): read it to the end
      st.st_mtim.tv_sec = st.st_ctim.tv_sec = std::time(nullptr);
      break;
    case Kind::kSpool: {
      if (auto spool = SpoolOf(n)) {
        st.st_size = static_cast<off_t>(spool->Size());
        st.st_uid = spool->owner();
        st.st_gid = spool->group();
        st.st_mtim.tv_sec = st.st_ctim.tv_sec = spool->mtime();
      }
      break;
    }
    case Kind::kResult: {
      st.st_size = static_cast<off_t>(n.size);
      auto rs = incoming_->StatResult(n.name);
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

std::vector<std::pair<std::string, std::string>> Namespace::Xattrs(const Node& n) const {
  std::vector<std::pair<std::string, std::string>> out;
  switch (n.kind) {
    case Kind::kTreeFile: case Kind::kBlob:
      out.emplace_back("user.hookfs.sha256", n.id.Hex());
      break;
    case Kind::kReleaseRoot:
      out.emplace_back("user.hookfs.tree", n.id.Hex());
      out.emplace_back("user.hookfs.version", std::to_string(n.release.version));
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

Result<Entry> Namespace::Bind(Node node) {
  auto [ino, ptr] = table_->Bind(std::move(node));
  auto st = Attr(ino, *ptr);
  if (!st.ok()) {
    table_->Forget(ino, 1);
    return st.status();
  }
  Entry e;
  e.ino = ino;
  e.node = ptr;
  e.attr = *st;
  e.attr_timeout = AttrTimeout(*ptr);
  e.entry_timeout = EntryTimeout(*ptr);
  return e;
}

Result<Entry> Namespace::Lookup(Ino parent, std::string_view name) {
  NodePtr dir = table_->Get(parent);
  if (!dir) return Status::NotFound("stale directory inode");
  uint64_t epoch = pointer_epoch_.load();
  HOOKFS_ASSIGN_OR_RETURN(Node c, Child(parent, *dir, name));
  HOOKFS_ASSIGN_OR_RETURN(Entry e, Bind(std::move(c)));
  // A pointer read before a move whose invalidation went out meanwhile must
  // not be cached for a day: this answer is then revalidated next time (and
  // the follow-up SyncPointers catches the rest of that window).
  if ((e.node->kind == Kind::kLive || e.node->kind == Kind::kTag) && pointer_epoch_.load() != epoch) {
    e.entry_timeout = 0;
  }
  return e;
}

// ---- pointers and tags ------------------------------------------------------------

std::optional<Namespace::Pending> Namespace::TakePending(const PendingKey& k, bool erase) {
  std::lock_guard<std::mutex> lock(pending_mu_);
  auto it = pending_.find(k);
  if (it == pending_.end()) return std::nullopt;
  if (std::chrono::steady_clock::now() - it->second.created > options_.temp_link_ttl) {
    pending_.erase(it);  // vanished: older than the TTL
    return std::nullopt;
  }
  Pending p = it->second;
  if (erase) pending_.erase(it);
  return p;
}

Status Namespace::AddPending(const PendingKey& k, std::string target, uid_t owner) {
  std::lock_guard<std::mutex> lock(pending_mu_);
  auto now = std::chrono::steady_clock::now();
  size_t mine = 0;
  for (auto it = pending_.begin(); it != pending_.end();) {
    if (now - it->second.created > options_.temp_link_ttl) {
      it = pending_.erase(it);
    } else {
      mine += it->second.owner == owner;
      ++it;
    }
  }
  if (pending_.count(k)) return Status::Exists(k.name);
  // Per user (DESIGN.md §4): one publisher's temporaries never block another's.
  if (mine >= options_.max_temp_links_per_user) {
    spdlog::warn("EDQUOT: uid {} may not create {}/{}{}: {} temporary symlinks (max_temp_links_per_user)",
                 owner, k.hook.str(), k.in_tags ? "tags/" : "", k.name, mine);
    return Status::Quota("uid " + std::to_string(owner) + " has " + std::to_string(mine) +
                         " temporary symlinks");
  }
  if (pending_.size() >= kMaxPending) return Status::NoSpace("too many temporary symlinks");
  pending_[k] = Pending{std::move(target), now, owner};
  return Status::OK();
}

void Namespace::InvalidatePointer(Ino dir_ino, const std::string& name) {
  ++pointer_epoch_;
  Ino old = table_->Find(dir_ino, name);
  if (old) table_->Unname(old);
  notifier_->PointerChanged(dir_ino, name, old);
}

size_t Namespace::SyncPointers() {
  ++pointer_epoch_;
  size_t n = 0;
  for (const auto& [ino, node] : table_->Pointers()) {
    std::optional<uint32_t> now;
    if (node->kind == Kind::kLive) {
      auto live = catalog_->Live(node->hook());
      if (!live.ok()) continue;  // unknown: leave it (a store error is logged where it matters)
      now = *live;
    } else {
      auto tags = catalog_->Tags(node->hook());
      if (!tags.ok()) continue;
      auto it = tags->find(node->tag.str());
      if (it != tags->end()) now = it->second;
    }
    if (now == node->release.version) continue;
    table_->Unname(ino);
    notifier_->PointerChanged(node->parent, node->name, ino);
    ++n;
  }
  return n;
}

// Sets live (in a hook dir) or a tag (in tags/) to `target`.
Status Namespace::CommitPointer(const Caller& who, Ino dir_ino, const Node& dir, const std::string& name,
                                const std::string& target) {
  bool in_tags = dir.kind == Kind::kTagsDir;
  HOOKFS_ASSIGN_OR_RETURN(ReleaseRef to, ReleaseRef::FromTarget(dir.hook(), target, in_tags ? "../" : ""));
  Actor actor = ActorOf(who);
  Status s;
  if (in_tags) {
    HOOKFS_ASSIGN_OR_RETURN(TagName tag, TagName::Make(name));
    s = catalog_->SetTag(tag, to, actor);
  } else {
    if (name != "live") return Status::NotPermitted("only live may point at a release here");
    s = catalog_->MoveLive(to, actor);
  }
  if (s.ok()) {
    spdlog::info("{}/{}{} -> {} by uid {}", dir.hook().str(), in_tags ? "tags/" : "", name, to.version,
                 who.uid);
    InvalidatePointer(dir_ino, name);
  }
  return s;
}

Result<Entry> Namespace::MakeRun(const Caller& who, Ino parent, const Node& dir, std::string_view name) {
  if (dir.kind != Kind::kRunsDir) return ReadOnly(dir);
  HOOKFS_RETURN_IF_ERROR(options_.policy.Check(who, Right::kRun, "start runs"));
  HOOKFS_ASSIGN_OR_RETURN(RunName run, RunName::Make(name));
  HOOKFS_ASSIGN_OR_RETURN(RunInfo info, catalog_->StartRun(dir.hook(), run, ActorOf(who)));
  spdlog::info("run {}/{} started on release {} by uid {}", dir.hook().str(), run.str(), info.version,
               who.uid);
  Node c;
  c.kind = Kind::kRunDir;
  c.parent = parent;
  c.name = run.str();
  c.release = ReleaseRef{dir.hook(), info.version};
  c.run = run;
  c.mtime = info.started_at;
  return Bind(std::move(c));
}

Status Namespace::Unlink(const Caller& who, Ino parent, const Node& dir, std::string_view sv) {
  std::string name(sv);
  switch (dir.kind) {
    case Kind::kIncomingDir: {
      HOOKFS_RETURN_IF_ERROR(options_.policy.Check(who, Right::kPublish, "remove from incoming/"));
      const bool admin = options_.policy.IsAdmin(who);
      if (auto spool = incoming_->Find(name)) {
        if (!admin && spool->owner() != who.uid) return NotYours(who, "incoming/" + name, spool->owner());
        return incoming_->Remove(name);
      }
      if (!admin) {
        auto rs = incoming_->StatResult(name);
        if (rs.ok() && rs->uid != who.uid) return NotYours(who, "incoming/" + name, rs->uid);
      }
      return incoming_->RemoveResult(name);
    }
    case Kind::kTagsDir: case Kind::kHookDir: {
      bool in_tags = dir.kind == Kind::kTagsDir;
      HOOKFS_RETURN_IF_ERROR(options_.policy.Check(who, Right::kPublish, "move pointers"));
      if (auto p = TakePending(PendingKey{dir.hook(), in_tags, name}, false)) {
        if (!MayTouchPending(who, *p)) return NotYours(who, dir.hook().str() + "/" + name, p->owner);
        TakePending(PendingKey{dir.hook(), in_tags, name}, true);
        return Status::OK();
      }
      if (!in_tags) {
        if (IsFixedHookEntry(name)) return Status::NotPermitted(name + " cannot be removed");
        return Status::NotFound(name);
      }
      auto tag = TagName::Make(name);
      if (!tag.ok()) return Status::NotFound(name);
      Status s = catalog_->RemoveTag(dir.hook(), *tag, ActorOf(who));
      if (s.ok()) {
        spdlog::info("{}/tags/{} removed by uid {}", dir.hook().str(), name, who.uid);
        InvalidatePointer(parent, name);
      }
      return s;
    }
    case Kind::kRunsDir:
      return Status::NotPermitted("runs are append-only");
    case Kind::kKeysDir:
      return RemoveKey(who, parent, name);
    default:
      return ReadOnly(dir);
  }
}

Result<Entry> Namespace::Symlink(const Caller& who, std::string_view link, Ino parent, const Node& dir,
                                 std::string_view sv) {
  if (dir.kind != Kind::kHookDir && dir.kind != Kind::kTagsDir) return ReadOnly(dir);
  std::string name(sv);
  bool in_tags = dir.kind == Kind::kTagsDir;
  HOOKFS_RETURN_IF_ERROR(options_.policy.Check(who, Right::kPublish, "move pointers"));
  auto existing = Child(parent, dir, name);
  if (existing.ok()) return Status::Exists(name);
  if (!existing.status().Is(Code::kNotFound)) return existing.status();

  bool direct = in_tags ? ValidateTagName(name).ok() : name == "live";
  if (direct) {
    // `ln -s releases/2 live` on a hook without live, `ln -s ../releases/2 tags/stable`.
    HOOKFS_RETURN_IF_ERROR(CommitPointer(who, parent, dir, name, std::string(link)));
  } else if (IsTemporaryName(name)) {
    // A temporary (ln -sfn's CuXXXXXX, a dot-name): held until renamed over
    // the pointer, or until it expires.
    HOOKFS_RETURN_IF_ERROR(ValidateEntryName(name));
    HOOKFS_RETURN_IF_ERROR(AddPending(PendingKey{dir.hook(), in_tags, name}, std::string(link), who.uid));
  } else {
    // DESIGN.md §2: not live, not a valid tag name, not a temporary.
    spdlog::info("EINVAL: uid {}: symlink {}/{}{}: not {} nor a temporary name", who.uid, dir.hook().str(),
                 in_tags ? "tags/" : "", name, in_tags ? "a valid tag name" : "live");
    return Status::InvalidArgument("'" + name + "': " +
                                   (in_tags ? "a tag name follows the hook-name rule [a-z0-9][a-z0-9._-]{0,63}"
                                            : "only live, or a temporary (.NAME, CuXXXXXX), is a symlink here"));
  }
  HOOKFS_ASSIGN_OR_RETURN(Node c, Child(parent, dir, name));
  return Bind(std::move(c));
}

Status Namespace::Rename(const Caller& who, Ino parent, const Node& dir, std::string_view sname,
                         std::string_view snewname, bool noreplace) {
  std::string name(sname), newname(snewname);
  switch (dir.kind) {
    case Kind::kIncomingDir: {
      HOOKFS_RETURN_IF_ERROR(options_.policy.Check(who, Right::kPublish, "publish"));
      if (!incoming_->Find(name)) {
        if (incoming_->StatResult(name).ok()) return Status::NotPermitted("a result cannot be renamed");
        return Status::NotFound("incoming/" + name);
      }
      Status s = incoming_->Rename(name, newname, noreplace, who.uid, options_.policy.IsAdmin(who));
      if (s.Is(Code::kPermissionDenied)) spdlog::warn("EACCES: uid {}: rename incoming/{}: {}", who.uid, name, s.message());
      if (!Incoming::IsStaging(newname)) AfterPublish(newname);
      return s;
    }
    case Kind::kHookDir: case Kind::kTagsDir: {
      bool in_tags = dir.kind == Kind::kTagsDir;
      HOOKFS_RETURN_IF_ERROR(options_.policy.Check(who, Right::kPublish, "move pointers"));
      HOOKFS_ASSIGN_OR_RETURN(Node src, Child(parent, dir, name));
      if (src.kind != Kind::kPending && src.kind != Kind::kTag) {
        return Status::NotPermitted(name + " cannot be renamed");  // live, hook.json, releases, ...
      }
      if (name == newname) return Status::OK();
      auto dst = Child(parent, dir, newname);
      bool dst_exists = dst.ok();
      if (!dst_exists && !dst.status().Is(Code::kNotFound)) return dst.status();
      if (dst_exists && noreplace) return Status::Exists(newname);
      bool dst_pointer = in_tags ? ValidateTagName(newname).ok() : newname == "live";
      if (!dst_pointer) {
        if (dst_exists && dst->kind != Kind::kPending) return Status::NotPermitted(newname);
        if (src.kind != Kind::kPending) return Status::InvalidArgument("a tag renamed to a non-tag name");
        if (!IsTemporaryName(newname)) {
          return Status::InvalidArgument("'" + newname + "': neither a pointer nor a temporary name");
        }
        // Pending to pending: just a new temporary name.
        auto p = TakePending(PendingKey{dir.hook(), in_tags, name}, false);
        if (!p) return Status::NotFound(name);
        if (!MayTouchPending(who, *p)) return NotYours(who, dir.hook().str() + "/" + name, p->owner);
        if (dst_exists) {
          auto d = TakePending(PendingKey{dir.hook(), in_tags, newname}, false);
          if (d && !MayTouchPending(who, *d)) return NotYours(who, dir.hook().str() + "/" + newname, d->owner);
        }
        HOOKFS_RETURN_IF_ERROR(ValidateEntryName(newname));
        TakePending(PendingKey{dir.hook(), in_tags, name}, true);
        TakePending(PendingKey{dir.hook(), in_tags, newname}, true);
        return AddPending(PendingKey{dir.hook(), in_tags, newname}, p->target, p->owner);
      }
      if (src.kind == Kind::kPending) {
        auto p = TakePending(PendingKey{dir.hook(), in_tags, name}, false);
        if (p && !MayTouchPending(who, *p)) return NotYours(who, dir.hook().str() + "/" + name, p->owner);
      }
      HOOKFS_RETURN_IF_ERROR(CommitPointer(who, parent, dir, newname, Target(src)));
      if (src.kind == Kind::kPending) {
        TakePending(PendingKey{dir.hook(), in_tags, name}, true);
        return Status::OK();
      }
      Status s = catalog_->RemoveTag(dir.hook(), src.tag, ActorOf(who));  // mv tags/a tags/b
      if (s.ok()) InvalidatePointer(parent, name);
      return s;
    }
    case Kind::kRunsDir: case Kind::kRunDir:
      return Status::NotPermitted("runs are append-only");
    default:
      return ReadOnly(dir);
  }
}

void Namespace::AfterPublish(const std::string& pack_name) {
  SyncPointers();  // a publish may have advanced live
  Ino inc = table_->Find(kRootIno, "incoming");
  if (inc) {
    notifier_->EntryChanged(inc, pack_name);
    notifier_->EntryChanged(inc, pack_name + ".result");
  }
  if (options_.after_publish) options_.after_publish();
}

// ---- incoming/ ------------------------------------------------------------------

// A pack, result or temporary of another user (DESIGN.md §4: it belongs to
// its creator).
Status Namespace::NotYours(const Caller& who, const std::string& name, uid_t owner) {
  std::string msg = name + " belongs to uid " + std::to_string(owner);
  spdlog::warn("EACCES: uid {} may not change {}", who.uid, msg);
  return Status::PermissionDenied(std::move(msg));
}

std::shared_ptr<Spool> Namespace::SpoolOf(const Node& n) const {
  auto spool = incoming_->Find(n.name);
  if (!spool || spool->serial() != n.serial) return nullptr;
  return spool;
}

Result<Namespace::CreatedSpool> Namespace::CreateSpool(const Caller& who, Ino parent, const Node& dir,
                                                       std::string_view name, bool excl) {
  if (dir.kind != Kind::kIncomingDir) {
    if (dir.kind == Kind::kRunDir) return Status::NotPermitted("run directories are fixed");
    return ReadOnly(dir);
  }
  HOOKFS_RETURN_IF_ERROR(options_.policy.Check(who, Right::kPublish, "write incoming/"));
  HOOKFS_ASSIGN_OR_RETURN(std::shared_ptr<Spool> spool,
                          incoming_->Create(std::string(name), excl, who.uid,
                                            options_.policy.GroupFor(Right::kPublish),
                                            options_.policy.IsAdmin(who)));
  Node c;
  c.kind = Kind::kSpool;
  c.parent = parent;
  c.name = std::string(name);
  c.serial = spool->serial();
  HOOKFS_ASSIGN_OR_RETURN(Entry e, Bind(std::move(c)));
  spool->AddWriter();
  return CreatedSpool{std::move(e), std::move(spool)};
}

Result<std::shared_ptr<Spool>> Namespace::OpenSpool(const Caller& who, const Node& n, bool write,
                                                    bool trunc) {
  auto spool = SpoolOf(n);
  if (!spool) return Status::NotFound("incoming/" + n.name);
  if (write) {
    HOOKFS_RETURN_IF_ERROR(options_.policy.Check(who, Right::kPublish, "write incoming/"));
    if (!options_.policy.IsAdmin(who) && spool->owner() != who.uid) return NotYours(who, "incoming/" + n.name, spool->owner());
    if (trunc) {
      std::lock_guard<std::mutex> lock(spool->mu);
      HOOKFS_RETURN_IF_ERROR(spool->Truncate(0));
      spool->dirty = true;
    }
    spool->AddWriter();
  }
  return spool;
}

Status Namespace::TruncateSpool(const Caller& who, const std::shared_ptr<Spool>& spool, uint64_t size) {
  HOOKFS_RETURN_IF_ERROR(options_.policy.Check(who, Right::kPublish, "write incoming/"));
  if (!options_.policy.IsAdmin(who) && spool->owner() != who.uid) {
    return NotYours(who, "incoming/" + incoming_->NameOf(spool), spool->owner());
  }
  std::lock_guard<std::mutex> lock(spool->mu);
  HOOKFS_RETURN_IF_ERROR(spool->Truncate(static_cast<off_t>(size)));
  spool->dirty = true;
  return Status::OK();
}

Status Namespace::WriteSpool(const std::shared_ptr<Spool>& spool, const void* data, size_t n,
                             uint64_t off) {
  std::lock_guard<std::mutex> lock(spool->mu);
  if (spool->displaced) return Status::IOError("replaced by another create or rename of its name");
  if (spool->expired) return Status::IOError("rejected: nothing was written to it for too long");
  if (spool->consumed) return Status::IOError("pack already applied");
  HOOKFS_RETURN_IF_ERROR(spool->Write(data, n, static_cast<off_t>(off)));
  spool->dirty = true;
  return Status::OK();
}

bool Namespace::FlushWouldApply(const std::shared_ptr<Spool>& spool) {
  return incoming_->FlushWouldApply(spool);
}

Status Namespace::FlushSpool(const Caller& who, const std::shared_ptr<Spool>& spool) {
  std::string name = incoming_->NameOf(spool);
  // Published as the spool's creator, whoever holds the descriptor (a
  // descriptor passed to a non-member still publishes as its creator).
  (void)who;
  Status s = incoming_->FlushPublish(spool, name, ActorForUid(spool->owner()));
  if (!name.empty() && !Incoming::IsStaging(name)) AfterPublish(name);
  return s;
}

void Namespace::ReleaseSpoolWriter(const Caller& who, const std::shared_ptr<Spool>& spool) {
  if (!spool->DropWriter()) return;  // other writers still hold it open
  std::string name = incoming_->NameOf(spool);
  if (name.empty() || Incoming::IsStaging(name)) return;
  (void)who;
  if (incoming_->RejectUnwritten(spool, name, ActorForUid(spool->owner()))) AfterPublish(name);
}

// ---- runs -------------------------------------------------------------------------

Status Namespace::CheckWriteRunResult(const Caller& who, const Node& n) {
  HOOKFS_RETURN_IF_ERROR(options_.policy.Check(who, Right::kRun, "finish runs"));
  HOOKFS_ASSIGN_OR_RETURN(RunInfo r, catalog_->Run(n.hook(), n.run));
  if (r.sealed()) {
    spdlog::info("runs/{}/result of {}: sealed", n.run.str(), n.hook().str());
    return Status::NotPermitted("run " + n.run.str() + " is sealed");
  }
  return Status::OK();
}

Status Namespace::FinishRun(const Caller& who, const Node& n, const std::string& text) {
  HOOKFS_ASSIGN_OR_RETURN(RunResult result, RunResult::FromJson(text));
  Actor actor = ActorOf(who);
  HOOKFS_ASSIGN_OR_RETURN(RunInfo run, catalog_->FinishRun(n.hook(), n.run, result, actor));
  spdlog::info("run {}/{} finished: {} (exit code {}) by uid {}", n.hook().str(), n.run.str(), run.status,
               run.exit_code, who.uid);
  if (Ino i = table_->Find(n.parent, "run.json")) notifier_->InodeChanged(i);
  if (Ino i = table_->Find(n.parent, "result")) notifier_->InodeChanged(i);
  return Status::OK();
}

// ---- blobs ------------------------------------------------------------------------

Status Namespace::ReadBlob(const ReadView& view, const ObjectId& id, uint64_t off, size_t len,
                           std::vector<std::span<const uint8_t>>* out) {
  Status s = view.ReadBlob(id, off, len, out);
  if (s.Is(Code::kNotFound)) {
    s = Status::Corruption("blob " + id.Hex() + " is missing from the store");
    spdlog::error("{} (run hookctl fsck)", s.ToString());
  }
  return s;
}

// ---- journal ----------------------------------------------------------------------

Status Namespace::ReadJournal(JournalCursor* h, size_t size, uint64_t uoff, std::string* out) {
  if (uoff < h->buf_off) {  // a seek backwards: start again from the top
    *h = JournalCursor{};
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
    Status s = catalog_->ReadJournal(h->next_seq, [&](uint64_t seq, std::string_view line) {
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

}  // namespace hookfs::fs
