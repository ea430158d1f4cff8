// The hookfs namespace without FUSE: what every path of the mount is, what it
// lists, its attributes and xattrs, and the changes a caller may make
// (pointers, tags, runs, incoming/) with their permission checks
// (DESIGN.md §4, docs/namespace.md).
//
// Contract:
//  - Nothing here knows the kernel. Callers are described by a Caller value;
//    kernel cache invalidations go out through a Notifier; errors are Status
//    values the FUSE adapter (fs/src/hookfs_fs.cc) maps to errnos.
//  - Hooks, releases, pointers, runs and the journal come from a Catalog: the
//    seam where the fleet swaps the local ledger for etcd. Trees and blobs are
//    content-addressed and come from the Store through a TreeCache.
//  - A missing object that something names is Corruption (EIO, logged) and
//    never a cached absence.
//  - Every method may run on any thread. Lock order: see docs/namespace.md
//    and each mutex's comment; no method holds a lock while calling out to
//    the Catalog, the Store or the Notifier except where a comment says so.
#pragma once

#include <sys/stat.h>
#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <list>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "hookfs/identity.h"
#include "hookfs/ledger.h"
#include "hookfs/object_id.h"
#include "hookfs/status.h"
#include "hookfs/store.h"
#include "hookfs/tree.h"

namespace hookfs::fs {

class Incoming;
class Spool;
class InodeTable;

// Inode numbers; the root is 1 (FUSE_ROOT_ID).
using Ino = uint64_t;
constexpr Ino kRootIno = 1;

// ---- who asks ------------------------------------------------------------

struct Caller {
  uint32_t uid = 0;
  uint32_t gid = 0;
  uint32_t pid = 0;
  // Supplementary groups, asked only when a check needs them (a /proc read
  // under FUSE). Unset: none.
  std::function<std::vector<gid_t>()> groups;
};

enum class Right { kPublish, kRun };

struct Policy {
  uid_t owner_uid = 0;  // the mounting user (root under systemd)
  gid_t owner_gid = 0;
  std::optional<gid_t> publish_gid;
  std::optional<gid_t> run_gid;
  std::optional<gid_t> admin_gid;  // -o admin_group: may add and remove keys

  // keys/: root, the mounting user and members of admin_group (DESIGN.md §4).
  Status CheckAdmin(const Caller& who, std::string_view what) const;

  // Root and the mounting user may do all; members (primary or supplementary
  // group) of the right's group may do that. PermissionDenied otherwise.
  Status Check(const Caller& who, Right right, std::string_view what) const;

  // Root and the mounting user: may change what others created (their packs,
  // results, temporaries).
  bool IsAdmin(const Caller& who) const { return who.uid == 0 || who.uid == owner_uid; }

  // Owner group and mode of a directory where `right` creates entries.
  gid_t GroupFor(Right right) const;
  mode_t WritableDirMode(Right right) const;
};

// The caller as the ledger records it (uid and user name).
Actor ActorOf(const Caller& who);
// A uid as the ledger records it. User names are cached: the lookup opens
// /etc/passwd (a descriptor), which a publisher must not be able to starve.
Actor ActorForUid(uid_t uid);

// Supplementary groups last read for a uid (from /proc, by the adapter):
// what a check uses when that read fails (no descriptor left, process gone).
void RememberGroups(uid_t uid, const std::vector<gid_t>& groups);
std::optional<std::vector<gid_t>> RememberedGroups(uid_t uid);

// ---- nodes ---------------------------------------------------------------

enum class Kind : uint8_t {
  kRoot,
  kHooksDir,     // hooks/
  kHookDir,      // hooks/NAME/
  kHookJson,     // hooks/NAME/hook.json
  kLive,         // hooks/NAME/live               (symlink to release)
  kHistory,      // hooks/NAME/history
  kReleasesDir,  // hooks/NAME/releases/
  kReleaseRoot,  // hooks/NAME/releases/N/        (tree dir)
  kReleaseJson,  // hooks/NAME/releases/N.json
  kTreeDir,      // a directory inside a release or objects/trees/SHA
  kTreeFile,     // a file inside a tree (etype file or executable)
  kTreeSymlink,  // a symlink inside a tree       (target)
  kTagsDir,      // hooks/NAME/tags/
  kTag,          // hooks/NAME/tags/T             (symlink to release; tag)
  kPending,      // a temporary symlink (ln -sfn) waiting for its rename (target)
  kRunsDir,      // hooks/NAME/runs/
  kRunDir,       // hooks/NAME/runs/RUN/          (run)
  kRunJson,      // hooks/NAME/runs/RUN/run.json
  kRunRelease,   // hooks/NAME/runs/RUN/release   (symlink to the pinned release)
  kRunResult,    // hooks/NAME/runs/RUN/result
  kIncomingDir,  // incoming/
  kSpool,        // incoming/NAME being written   (name, serial)
  kResult,       // incoming/NAME.result          (name, serial = file inode)
  kObjectsDir,   // objects/
  kBlobsDir,     // objects/blobs/
  kTreesDir,     // objects/trees/
  kBlob,         // objects/blobs/SHA
  kObjTree,      // objects/trees/SHA/
  kJournal,      // journal
  kKeysDir,      // keys/                         (DESIGN.md §8)
  kKey,          // keys/NAME                     (name; JSON of the trusted key)
};

const char* KindName(Kind k);

// An immutable description of one path. Each field has one meaning.
struct Node {
  Kind kind = Kind::kRoot;
  Ino parent = 0;
  std::string name;      // the entry name in parent (spools, results: the file name)
  ReleaseRef release;    // hook-scoped nodes: release.hook; release nodes, tree
                         // nodes and pointers: release.version too
  TagName tag;           // kTag
  RunName run;           // run nodes
  std::string target;    // kTreeSymlink, kPending: the symlink text
  ObjectId id;           // tree or blob id
  uint64_t size = 0;     // file size
  EntryType etype = EntryType::kDirectory;
  int64_t mtime = 0;     // Unix seconds shown as mtime/ctime/atime
  uint64_t tindex = 0;   // release tree nodes: walk index (file_times.h)
  uint64_t serial = 0;   // distinguishes incarnations (spools, results)

  const HookName& hook() const { return release.hook; }
  bool IsDir() const;
  bool IsSymlink() const;
  // Whether `other` shows the same thing (then a lookup may reuse this ino).
  bool SameAs(const Node& other) const;
};

using NodePtr = std::shared_ptr<const Node>;

// ---- what backs hooks, releases, pointers, runs ---------------------------

// The seam for the fleet: today LedgerCatalog (the local LMDB ledger), later
// etcd. Implementations are thread-safe. NotFound means "no such thing".
class Catalog {
 public:
  virtual ~Catalog() = default;
  virtual Result<std::vector<HookInfo>> Hooks() = 0;
  virtual Result<HookInfo> Hook(const HookName& hook) = 0;
  virtual Result<std::vector<ReleaseInfo>> Releases(const HookName& hook) = 0;
  virtual Result<ReleaseInfo> Release(const ReleaseRef& ref) = 0;
  virtual Result<std::optional<uint32_t>> Live(const HookName& hook) = 0;
  virtual Result<std::map<std::string, uint32_t>> Tags(const HookName& hook) = 0;
  virtual Result<std::vector<PointerMove>> History(const HookName& hook) = 0;
  virtual Status MoveLive(const ReleaseRef& to, const Actor& who) = 0;
  virtual Status SetTag(const TagName& tag, const ReleaseRef& to, const Actor& who) = 0;
  virtual Status RemoveTag(const HookName& hook, const TagName& tag, const Actor& who) = 0;
  virtual Result<RunInfo> StartRun(const HookName& hook, const RunName& run, const Actor& who) = 0;
  virtual Result<RunInfo> FinishRun(const HookName& hook, const RunName& run, const RunResult& result,
                                    const Actor& who) = 0;
  virtual Result<RunInfo> Run(const HookName& hook, const RunName& run) = 0;
  virtual Result<std::vector<RunInfo>> Runs(const HookName& hook) = 0;
  virtual Status ReadJournal(uint64_t from,
                             const std::function<bool(uint64_t seq, std::string_view line)>& fn) = 0;
};

class LedgerCatalog : public Catalog {
 public:
  // `host`: what run.json's `host` says (empty: the hostname).
  explicit LedgerCatalog(Ledger* ledger, std::string host = {}) : ledger_(ledger), host_(std::move(host)) {}
  Result<std::vector<HookInfo>> Hooks() override;
  Result<HookInfo> Hook(const HookName& hook) override;
  Result<std::vector<ReleaseInfo>> Releases(const HookName& hook) override;
  Result<ReleaseInfo> Release(const ReleaseRef& ref) override;
  Result<std::optional<uint32_t>> Live(const HookName& hook) override;
  Result<std::map<std::string, uint32_t>> Tags(const HookName& hook) override;
  Result<std::vector<PointerMove>> History(const HookName& hook) override;
  Status MoveLive(const ReleaseRef& to, const Actor& who) override;
  Status SetTag(const TagName& tag, const ReleaseRef& to, const Actor& who) override;
  Status RemoveTag(const HookName& hook, const TagName& tag, const Actor& who) override;
  Result<RunInfo> StartRun(const HookName& hook, const RunName& run, const Actor& who) override;
  Result<RunInfo> FinishRun(const HookName& hook, const RunName& run, const RunResult& result,
                            const Actor& who) override;
  Result<RunInfo> Run(const HookName& hook, const RunName& run) override;
  Result<std::vector<RunInfo>> Runs(const HookName& hook) override;
  Status ReadJournal(uint64_t from,
                     const std::function<bool(uint64_t seq, std::string_view line)>& fn) override;

 private:
  Ledger* ledger_;
  std::string host_;
};

// ---- decoded trees ---------------------------------------------------------

// A decoded tree: immutable, carries its id.
struct DecodedTree {
  ObjectId id;
  Tree tree;
  size_t bytes = 0;  // approximate memory it holds
};
using TreePtr = std::shared_ptr<const DecodedTree>;

// Decoded trees by id, least recently used first out once `budget` bytes are
// held. A tree larger than the budget is returned but not kept. A missing
// tree is Corruption (something named it) and is not remembered.
class TreeCache {
 public:
  TreeCache(Store* store, size_t budget_bytes) : store_(store), budget_(budget_bytes) {}
  Result<TreePtr> Get(const ObjectId& id);
  size_t bytes() const;
  size_t size() const;

 private:
  Store* store_;
  size_t budget_;
  // Leaf lock: held only to look up, insert and evict; decoding runs outside.
  mutable std::mutex mu_;
  std::list<TreePtr> lru_;  // front: most recent
  std::unordered_map<ObjectId, std::list<TreePtr>::iterator> index_;
  size_t bytes_ = 0;
};

// ---- kernel caches -----------------------------------------------------------

// Where the namespace says "this name / this inode changed" (the FUSE adapter
// queues kernel invalidations; tests record). Must not call back into the
// namespace and must not block.
class Notifier {
 public:
  virtual ~Notifier() = default;
  virtual void EntryChanged(Ino dir, const std::string& name) = 0;
  virtual void InodeChanged(Ino ino) = 0;
  // A pointer (live, a tag) named `name` in `dir` now shows another release
  // or none; `old` is the inode the kernel may still hold for it (0: none).
  // The kernel caches pointer names for a day, so this is what makes a move
  // visible: the adapter notifies on its own thread (and a publish waits for it).
  virtual void PointerChanged(Ino dir, const std::string& name, Ino old) {
    EntryChanged(dir, name);
    if (old) InodeChanged(old);
  }
};

// ---- the namespace ------------------------------------------------------------

struct NamespaceOptions {
  Policy policy;
  size_t tree_cache_bytes = 64u << 20;
  // Temporary symlinks (DESIGN.md §2, §4): per user at most this many
  // (-o max_temp_links_per_user=N), each gone after the TTL
  // (-o temp_link_ttl=SECONDS).
  size_t max_temp_links_per_user = 64;
  std::chrono::seconds temp_link_ttl{600};
  // Called after every publish verdict (main: STATUS=). Any thread.
  std::function<void()> after_publish;
};

// A lookup's answer: the bound inode, its node and attributes, how long the
// kernel may trust them.
struct Entry {
  Ino ino = 0;
  NodePtr node;
  struct stat attr {};
  double attr_timeout = 0;
  double entry_timeout = 0;
};

// Reads of the journal file: a cursor per open file.
struct JournalCursor {
  uint64_t buf_off = 0;  // bytes [buf_off, buf_off + buf.size()) of the journal
  std::string buf;
  uint64_t next_seq = 0;
  bool eof = false;
};

class Namespace {
 public:
  Namespace(NamespaceOptions options, Store* store, Catalog* catalog, Incoming* incoming,
            Notifier* notifier);
  ~Namespace();
  Namespace(const Namespace&) = delete;
  Namespace& operator=(const Namespace&) = delete;

  const Policy& policy() const { return options_.policy; }
  InodeTable& table() { return *table_; }
  TreeCache& trees() { return trees_; }
  Incoming* incoming() { return incoming_; }
  Store* store() { return store_; }

  // ---- resolution (no permission needed: the tree is world-readable) ----
  NodePtr Get(Ino ino) const;
  void Forget(Ino ino, uint64_t n);
  // The child `name` of `dir` (not bound). NotFound when absent.
  Result<Node> Child(Ino dir_ino, const Node& dir, std::string_view name);
  // Every child of `dir`, in listing order (not bound).
  Result<std::vector<Node>> Children(Ino dir_ino, const Node& dir);
  // Binds `node` (one lookup reference) and computes its attributes; on error
  // nothing stays bound.
  Result<Entry> Bind(Node node);
  // Lookup: Child + Bind.
  Result<Entry> Lookup(Ino parent, std::string_view name);
  Result<struct stat> Attr(Ino ino, const Node& n);
  std::string Target(const Node& n) const;
  Result<std::string> Content(const Node& n);
  std::vector<std::pair<std::string, std::string>> Xattrs(const Node& n) const;

  // Compares every pointer (live, tag) the kernel holds an entry for with the
  // Catalog and reports those that moved or went (Notifier::PointerChanged).
  // After every publish, and whenever another process may have written the
  // store (the adapter polls). Returns how many it reported.
  size_t SyncPointers();

  static bool Immutable(const Node& n);
  // Absence under `dir` is forever (the kernel may cache it).
  static bool AbsenceIsForever(const Node& dir) { return Immutable(dir); }
  static double EntryTimeout(const Node& n);
  static double AttrTimeout(const Node& n);
  // What a change to a read-only node answers: EROFS or EPERM.
  static Status ReadOnly(const Node& n);

  // ---- changes (each checks the caller's right first) ----
  Result<Entry> MakeRun(const Caller& who, Ino parent, const Node& dir, std::string_view name);
  Status Unlink(const Caller& who, Ino parent, const Node& dir, std::string_view name);
  Result<Entry> Symlink(const Caller& who, std::string_view link, Ino parent, const Node& dir,
                        std::string_view name);
  // Rename within one directory (the adapter refuses cross-directory moves).
  // Renaming a spool to a non-dot name publishes it: the verdict.
  Status Rename(const Caller& who, Ino parent, const Node& dir, std::string_view name,
                std::string_view newname, bool noreplace);

  // incoming/.
  struct CreatedSpool {
    Entry entry;
    std::shared_ptr<Spool> spool;
  };
  Result<CreatedSpool> CreateSpool(const Caller& who, Ino parent, const Node& dir, std::string_view name,
                                   bool excl);
  // Opens an existing spool (truncating it for O_TRUNC).
  Result<std::shared_ptr<Spool>> OpenSpool(const Caller& who, const Node& n, bool write, bool trunc);
  Status TruncateSpool(const Caller& who, const std::shared_ptr<Spool>& spool, uint64_t size);
  Status WriteSpool(const std::shared_ptr<Spool>& spool, const void* data, size_t n, uint64_t off);
  // The spool `n` shows, if it is still the same incarnation.
  std::shared_ptr<Spool> SpoolOf(const Node& n) const;
  // Whether FlushSpool would apply (or refuse a displaced spool): then the
  // adapter runs it on the publish queue.
  bool FlushWouldApply(const std::shared_ptr<Spool>& spool);
  // close() of a writer: applies the spool if written since the last flush
  // and listed under a non-dot name. Runs the apply on the calling thread.
  Status FlushSpool(const Caller& who, const std::shared_ptr<Spool>& spool);
  // The last writer closed: a spool never written to is rejected at once
  // (result written, name gone; DESIGN.md §4).
  void ReleaseSpoolWriter(const Caller& who, const std::shared_ptr<Spool>& spool);

  // runs/RUN/result.
  Status CheckWriteRunResult(const Caller& who, const Node& n);
  Status FinishRun(const Caller& who, const Node& n, const std::string& text);

  // Bytes [off, off + len) of blob `id` as spans into `view`'s map. A blob
  // that a tree names but the store lacks is Corruption (EIO), logged.
  Status ReadBlob(const ReadView& view, const ObjectId& id, uint64_t off, size_t len,
                  std::vector<std::span<const uint8_t>>* out);

  // The journal file.
  Status ReadJournal(JournalCursor* c, size_t size, uint64_t off, std::string* out);

  // keys/ (fs/src/keys_node.cc). Writing keys/NAME buffers the document in
  // the open file; its close commits it through KeyRing::Add (EINVAL and no
  // change for a malformed one). Every step checks Policy::CheckAdmin.
  Result<Entry> CreateKey(const Caller& who, Ino parent, const Node& dir, std::string_view name);
  Status CheckWriteKey(const Caller& who, const Node& n);
  Status CommitKey(const Caller& who, const Node& n, const std::string& document);
  Status RemoveKey(const Caller& who, Ino parent, std::string_view name);

 private:
  struct PendingKey {
    HookName hook;
    bool in_tags;
    std::string name;
    auto operator<=>(const PendingKey&) const = default;
  };
  struct Pending {
    std::string target;
    std::chrono::steady_clock::time_point created;
    uid_t owner = 0;  // its creator: only they (and admins) rename or remove it
  };
  bool MayTouchPending(const Caller& who, const Pending& p) const {
    return p.owner == who.uid || options_.policy.IsAdmin(who);
  }

  // `tindex`, `mtime`: the entry's walk index and packed mtime (file_times.h).
  Node TreeChild(Ino dir_ino, const Node& dir, const TreeEntry& e, uint64_t tindex,
                 std::optional<int64_t> mtime) const;
  void AppendPending(Ino dir_ino, const Node& dir, bool in_tags, std::vector<Node>* out);
  std::optional<Pending> TakePending(const PendingKey& k, bool erase);
  Status AddPending(const PendingKey& k, std::string target, uid_t owner);
  Status CommitPointer(const Caller& who, Ino dir_ino, const Node& dir, const std::string& name,
                       const std::string& target);
  void InvalidatePointer(Ino dir_ino, const std::string& name);
  void AfterPublish(const std::string& pack_name);
  static Status NotYours(const Caller& who, const std::string& name, uid_t owner);
  // keys/ resolution (keys_node.cc).
  Result<Node> KeyChild(Ino dir_ino, const std::string& name);
  Result<std::vector<Node>> KeyChildren(Ino dir_ino);

  NamespaceOptions options_;
  Store* store_;
  Catalog* catalog_;
  Incoming* incoming_;
  Notifier* notifier_;
  std::unique_ptr<InodeTable> table_;
  TreeCache trees_;
  int64_t start_time_;

  // Bumped before every pointer check or move: a lookup of a pointer that
  // raced one is answered with entry timeout 0.
  std::atomic<uint64_t> pointer_epoch_{0};

  // Leaf lock: nothing is acquired while it is held.
  std::mutex pending_mu_;
  std::map<PendingKey, Pending> pending_;
};

}  // namespace hookfs::fs
