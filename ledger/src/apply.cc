#include "hookfs/apply.h"

#include <fcntl.h>
#include <linux/magic.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <csignal>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <deque>
#include <functional>
#include <optional>
#include <mutex>
#include <chrono>
#include <cerrno>
#include <cstring>
#include <thread>
#include <unordered_map>
#include <unordered_set>

#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include "hookfs/fsck.h"
#include "hookfs/hash.h"
#include "hookfs/pack.h"
#include "apply_times.h"
#include "apply_signatures.h"

namespace hookfs {

using nlohmann::json;

namespace {

// One blob or tree record of the pack as pass 1 found it. 48 bytes, and
// nothing else is kept per record: 4,194,304 records (the format's limit)
// fit the 256 MiB an apply may take (DESIGN.md §4). Trees are not kept
// decoded: they are read back from the pack file when needed.
enum : uint8_t { kStored = 0, kHashing = 1, kOk = 2, kBadHash = 3, kNotCanonical = 4 };
struct PackObject {
  ObjectId id;
  uint64_t offset = 0;     // of its bytes in the pack file
  uint64_t size : 48 = 0;  // declared bytes
  uint64_t tree : 1 = 0;
  uint64_t state : 3 = kStored;  // kStored: the store had the blob intact, so the pack's bytes were not hashed
};
static_assert(sizeof(PackObject) == 48);

// SHA-256 of large blobs on a second thread, so hashing overlaps reading.
// Chunk buffers come from a bounded pool: memory stays fixed however large
// the pack.
class Hasher {
 public:
  static constexpr size_t kPoolChunks = 64;  // 16 MiB in flight at most

  Hasher() : thread_([this] { Loop(); }) {}
  ~Hasher() { Stop(); }

  // Buffers are made on first need: a pack of small blobs never pays for the pool.
  std::unique_ptr<char[]> Buffer() {
    std::unique_lock<std::mutex> l(mu_);
    if (free_.empty() && allocated_ < kPoolChunks) {
      ++allocated_;
      return std::make_unique<char[]>(kChunkSize);
    }
    cv_free_.wait(l, [&] { return !free_.empty(); });
    auto b = std::move(free_.back());
    free_.pop_back();
    return b;
  }
  // Hashes `len` bytes of `buf` into `obj`; `end` finishes it (sets its state).
  void Push(PackObject* obj, std::unique_ptr<char[]> buf, size_t len, bool end) {
    std::lock_guard<std::mutex> l(mu_);
    work_.push_back({obj, std::move(buf), len, end});
    cv_work_.notify_one();
  }
  void Drain() {
    std::unique_lock<std::mutex> l(mu_);
    cv_free_.wait(l, [&] { return work_.empty() && !busy_; });
  }
  void Stop() {
    {
      std::lock_guard<std::mutex> l(mu_);
      if (stop_) return;
      stop_ = true;
      cv_work_.notify_one();
    }
    thread_.join();
  }

 private:
  struct Item {
    PackObject* obj;
    std::unique_ptr<char[]> buf;
    size_t len;
    bool end;
  };
  void Loop() {
    Sha256 sha;
    for (;;) {
      Item it;
      {
        std::unique_lock<std::mutex> l(mu_);
        cv_work_.wait(l, [&] { return stop_ || !work_.empty(); });
        if (work_.empty()) return;
        it = std::move(work_.front());
        work_.pop_front();
        busy_ = true;
      }
      if (it.buf) sha.Update(it.buf.get(), it.len);
      if (it.end) it.obj->state = sha.Finish() == it.obj->id ? kOk : kBadHash;
      std::lock_guard<std::mutex> l(mu_);
      if (it.buf) free_.push_back(std::move(it.buf));
      busy_ = false;
      cv_free_.notify_all();
    }
  }

  std::mutex mu_;
  std::condition_variable cv_work_, cv_free_;
  std::deque<Item> work_;
  std::vector<std::unique_ptr<char[]>> free_;
  size_t allocated_ = 0;
  bool busy_ = false;
  bool stop_ = false;
  std::thread thread_;
};

// Phase 1: one pass over the pack that verifies everything and writes
// nothing (no write txn, no lock others wait for): framing and trailer
// (ScanPack), the SHA-256 of every blob the store lacks, every tree's hash
// and canonical form. What is kept is the compact index above.
class Indexer : public PackVisitor {
 public:
  explicit Indexer(Store* store) : store_(store) {}

  std::unordered_map<std::string, HookDecl> hooks;
  std::vector<std::string> hook_order;
  std::deque<PackObject> objects;  // sorted by (id, tree) after Finish; a deque never moves an element
  std::vector<ReleaseRecord> releases;
  apply_times::Collector times;  // file mtimes, apart from the streaming

  Status OnTimes(const TimesRecord& t) override { return times.Add(t); }
  apply_sig::Collector signatures;  // DESIGN.md §8, judged in phase 2

  Status OnSignature(std::string_view body) override {
    signatures.Add(body);
    return Status::OK();
  }
  Status OnHook(const HookDecl& d) override {
    if (hooks.count(d.name)) return Status::Malformed("hook '" + d.name + "' declared twice");
    if (hooks.size() >= Limits::kMaxReleasesPerPack)
      return Status::Malformed("pack declares more than " + std::to_string(Limits::kMaxReleasesPerPack) + " hooks");
    hooks[d.name] = d;
    hook_order.push_back(d.name);
    return Status::OK();
  }
  Status OnBlobBegin(const ObjectId& id, uint64_t size, uint64_t offset) override {
    objects.push_back({});
    cur_ = &objects.back();
    cur_->id = id;
    cur_->offset = offset;
    cur_->size = size;
    // A blob the store has intact is not needed from the pack: not hashed.
    HOOKFS_ASSIGN_OR_RETURN(bool stored, StoredIntact(id));
    cur_->state = stored ? kStored : kHashing;
    fill_ = 0;
    if (stored) return Status::OK();
    if (size < kChunkSize) {
      inline_ = true;  // small: hashed here, no hand-off per blob
    } else {
      inline_ = false;
      buf_ = hasher_.Buffer();
    }
    return Status::OK();
  }
  Status OnBlobData(const void* data, size_t n) override {
    if (cur_->state == kStored) return Status::OK();
    if (inline_) {
      small_.Update(data, n);
      return Status::OK();
    }
    auto p = static_cast<const char*>(data);
    while (n > 0) {
      size_t k = std::min(n, kChunkSize - fill_);
      std::memcpy(buf_.get() + fill_, p, k);
      fill_ += k;
      p += k;
      n -= k;
      if (fill_ == kChunkSize) {
        hasher_.Push(cur_, std::move(buf_), fill_, false);
        buf_ = hasher_.Buffer();
        fill_ = 0;
      }
    }
    return Status::OK();
  }
  Status OnBlobEnd() override {
    if (cur_->state == kStored) return Status::OK();
    if (inline_) {
      cur_->state = small_.Finish() == cur_->id ? kOk : kBadHash;
      return Status::OK();
    }
    hasher_.Push(cur_, std::move(buf_), fill_, true);
    return Status::OK();
  }
  Status OnTree(const ObjectId& id, std::string_view encoded, uint64_t rec_offset) override {
    PackObject t;
    t.id = id;
    t.offset = rec_offset + 1 + ObjectId::kSize + 4;
    t.size = encoded.size();
    t.tree = 1;
    if (Sha256::Of(encoded) != id) t.state = kBadHash;
    else t.state = DecodeTree(encoded).ok() ? kOk : kNotCanonical;  // decoded only to check, then dropped
    objects.push_back(t);
    return Status::OK();
  }
  Status OnRelease(const ReleaseRecord& r) override {
    if (releases.size() >= Limits::kMaxReleasesPerPack)
      return Status::Malformed("pack has more than " + std::to_string(Limits::kMaxReleasesPerPack) + " releases");
    releases.push_back(r);
    return Status::OK();
  }
  // Waits until every blob is hashed, then sorts the index and refuses an
  // object that appears twice.
  Status Finish() {
    hasher_.Drain();
    view_.reset();
    std::sort(objects.begin(), objects.end(), Less);
    for (size_t i = 1; i < objects.size(); ++i)
      if (objects[i - 1].id == objects[i].id && objects[i - 1].tree == objects[i].tree)
        return Status::Malformed(std::string(objects[i].tree ? "tree " : "blob ") + objects[i].id.Hex() + " appears twice");
    return Status::OK();
  }
  void Stop() { hasher_.Drain(); }
  // Index of the pack's blob or tree `id`, or npos.
  size_t Find(bool tree, const ObjectId& id) const {
    PackObject key;
    key.id = id;
    key.tree = tree;
    auto it = std::lower_bound(objects.begin(), objects.end(), key, Less);
    if (it == objects.end() || it->id != id || it->tree != uint64_t(tree)) return npos;
    return size_t(it - objects.begin());
  }
  static constexpr size_t npos = size_t(-1);

 private:
  static bool Less(const PackObject& a, const PackObject& b) {
    if (a.id != b.id) return a.id < b.id;
    return a.tree < b.tree;
  }
  // A read txn renewed often: never a long snapshot while the pack streams in.
  Result<bool> StoredIntact(const ObjectId& id) {
    auto now = std::chrono::steady_clock::now();
    if (!view_ || ++view_uses_ > 1024 || now - view_since_ > std::chrono::milliseconds(100)) {
      view_.reset();
      HOOKFS_ASSIGN_OR_RETURN(ReadView v, store_->Read());
      view_.emplace(std::move(v));
      view_uses_ = 0;
      view_since_ = now;
    }
    auto info = view_->GetBlobInfo(id);
    if (info.ok()) return (info->flags & kBlobQuarantined) == 0;
    if (info.status().Is(Code::kNotFound) || info.status().Is(Code::kCorruption)) return false;
    return info.status();
  }

  Store* store_;
  std::optional<ReadView> view_;
  size_t view_uses_ = 0;
  std::chrono::steady_clock::time_point view_since_;
  Hasher hasher_;
  Sha256 small_;
  bool inline_ = false;
  PackObject* cur_ = nullptr;
  std::unique_ptr<char[]> buf_;
  size_t fill_ = 0;
};

// Reads exactly `n` bytes at `off` of the pack file.
Status ReadAt(int fd, uint64_t off, char* dst, size_t n) {
  while (n > 0) {
    ssize_t r = ::pread(fd, dst, n, off_t(off));
    if (r < 0) {
      if (errno == EINTR) continue;
      return Status::IOError(std::string("read pack: ") + std::strerror(errno));
    }
    if (r == 0) return Status::Malformed("the pack changed (shrank) while it was applied");
    dst += r;
    off += uint64_t(r);
    n -= size_t(r);
  }
  return Status::OK();
}

// How apply knows the pack's bytes cannot change between its two passes
// (docs/integrity.md, "Sealed packs"). Only then does pass 2 write the bytes
// pass 1 verified without hashing them again.
enum class Seal {
  kNone,   // anyone may write the file meanwhile: pass 2 hashes again
  kOwned,  // the caller's word (ApplyOptions::sealed) or our own private spool
  kLease,  // a read lease we hold: checked to be unbroken after the last read
};

// A read lease is granted only while no one has the file open for writing,
// and any later open for writing or truncate breaks it (F_GETLEASE then says
// F_UNLCK). That proves the bytes unchanged only where every change goes
// through this kernel: local filesystems, not FUSE, network or overlay ones.
// A break also signals the process (SIGIO, fatal by default), so a lease is
// taken only where the process ignores SIGIO (hookctl does); the daemon
// seals its spools otherwise (ApplyOptions::sealed).
bool TakeReadLease(int fd) {
  struct sigaction sa;
  if (::sigaction(SIGIO, nullptr, &sa) != 0 || (sa.sa_flags & SA_SIGINFO) || sa.sa_handler != SIG_IGN) return false;
  struct statfs fs;
  if (::fstatfs(fd, &fs) != 0) return false;
  switch (static_cast<unsigned long>(fs.f_type)) {
    case EXT4_SUPER_MAGIC:  // also ext2/ext3
    case XFS_SUPER_MAGIC:
    case BTRFS_SUPER_MAGIC:
    case TMPFS_MAGIC:
      break;
    default:
      return false;
  }
  return ::fcntl(fd, F_SETLEASE, F_RDLCK) == 0;
}

struct Plan {
  size_t release;            // index into Indexer::releases
  ReleaseOutcome outcome;
  std::vector<uint32_t> blobs;  // pack blobs (Indexer::objects) it needs written
  std::vector<uint32_t> trees;  // pack trees it reaches
  // Stored objects it relies on without the pack's copy: the final txn
  // re-checks they still exist (gc may have removed them meanwhile).
  std::vector<ObjectId> stored_trees, stored_blobs;
  uint64_t files = 0, bytes = 0;
  std::optional<SignedBy> signed_by;
};

template <typename T>
void SortUnique(std::vector<T>* v) {
  std::sort(v->begin(), v->end());
  v->erase(std::unique(v->begin(), v->end()), v->end());
}

class Applier {
 public:
  Applier(Ledger* ledger, const ApplyOptions& opts, ApplyReport* report, ChunkSession* session, Seal seal)
      : store_(ledger->store()), t_(store_->tables()), opts_(opts), report_(report), session_(session),
        ix_(store_), seal_(seal) {}

  Status Run(int fd);

 private:
  Status WalkRelease(const ReadView& view, const ObjectId& root, Plan* plan);
  Status WalkEntries(const ReadView& view, const ObjectId& tree_id, const Tree& tree, Plan* plan,
                     const std::function<void(const ObjectId&)>& child);
  // A pack tree read back from the pack file and checked again (the file
  // could have changed since pass 1).
  Result<std::string> PackTreeBytes(const PackObject& o);
  Result<Tree> PackTree(const PackObject& o);
  Result<std::string> Why(const PackObject& o);
  Status WriteBlobs(const std::vector<Plan>& plans);
  Status CheckSpace(uint64_t need);
  Status WriteObjects(lmdb::Txn& txn, const Plan& p, std::vector<std::pair<char, ObjectId>>* healed);
  Status Stats(const ReadView& view, const ObjectId& tree_id, uint64_t* files, uint64_t* bytes);
  void Reject(Plan* p, std::string reason, std::vector<ObjectId> bad) {
    if (p->outcome.kind == ReleaseOutcome::Kind::kRejected) {
      for (auto& b : bad) p->outcome.bad_objects.push_back(b);
      return;
    }
    p->outcome.kind = ReleaseOutcome::Kind::kRejected;
    p->outcome.reason = std::move(reason);
    p->outcome.bad_objects = std::move(bad);
  }
  Status Commit(std::vector<Plan>& plans, ChunkSession* session);
  // The signature verdict for release `i` with the keys and hook record of
  // `txn` (phase 2's snapshot, then the commit txn again).
  Result<apply_sig::Verdict> JudgeSignature(const lmdb::Txn& txn, size_t i, const std::vector<KeyInfo>& keys);

  Store* store_;
  const Tables& t_;
  const ApplyOptions& opts_;
  ApplyReport* report_;
  ChunkSession* session_;
  Indexer ix_;
  const Seal seal_;
  int fd_ = -1;
  std::unordered_map<ObjectId, std::pair<uint64_t, uint64_t>> stats_memo_;
  // Blobs written in this session's chunks: index -> first of its chunk
  // XXH3s in xxh_ (sorted by index once written).
  std::vector<std::pair<uint32_t, uint64_t>> written_;
  std::vector<uint64_t> xxh_;
  std::vector<uint32_t> committed_;  // pack blobs given a record
  std::unordered_set<uint32_t> trees_done_;
  bool damaged_store_ = false;  // the quarantine table has entries (phase 2's view)
};

Result<std::string> Applier::PackTreeBytes(const PackObject& o) {
  std::string bytes(size_t(o.size), '\0');
  HOOKFS_RETURN_IF_ERROR(ReadAt(fd_, o.offset, bytes.data(), bytes.size()));
  if (Sha256::Of(bytes) != o.id) return Status::Malformed("the pack changed while it was applied (tree " + o.id.Hex() + ")");
  return bytes;
}

Result<Tree> Applier::PackTree(const PackObject& o) {
  HOOKFS_ASSIGN_OR_RETURN(std::string bytes, PackTreeBytes(o));
  auto tree = DecodeTree(bytes);
  if (!tree.ok()) return Status::Malformed("the pack changed while it was applied (tree " + o.id.Hex() + ")");
  return tree;
}

// The reason a pack object failed its check, worked out again from the pack
// (pass 1 keeps only a state, so that its index stays small).
Result<std::string> Applier::Why(const PackObject& o) {
  const char* kind = o.tree ? "tree " : "blob ";
  std::string bytes(size_t(std::min<uint64_t>(o.size, kChunkSize)), '\0');
  Sha256 sha;
  std::string tree_bytes;
  for (uint64_t at = 0; at < o.size;) {
    size_t n = size_t(std::min<uint64_t>(bytes.size(), o.size - at));
    HOOKFS_RETURN_IF_ERROR(ReadAt(fd_, o.offset + at, bytes.data(), n));
    sha.Update(bytes.data(), n);
    if (o.tree) tree_bytes.append(bytes.data(), n);
    at += n;
  }
  ObjectId got = sha.Finish();
  if (got != o.id) return std::string(kind) + "declared as " + o.id.Hex() + " hashes to " + got.Hex();
  if (o.tree)
    if (auto decoded = DecodeTree(tree_bytes); !decoded.ok())
      return "tree " + o.id.Hex() + " is not canonical: " + decoded.status().message();
  return Status::Malformed("the pack changed while it was applied (" + std::string(kind) + o.id.Hex() + ")");
}

// Breadth first, so that at most one decoded tree is held at a time. A tree
// reached again deeper is walked again: the depth limit holds on every path.
Status Applier::WalkRelease(const ReadView& view, const ObjectId& root, Plan* plan) {
  std::unordered_map<ObjectId, uint32_t> depth_seen;
  std::deque<std::pair<ObjectId, uint32_t>> queue;
  queue.emplace_back(root, 0);
  depth_seen[root] = 0;
  while (!queue.empty()) {
    auto [id, depth] = queue.front();
    queue.pop_front();
    if (depth > Limits::kMaxDepth) {
      Reject(plan, "tree deeper than " + std::to_string(Limits::kMaxDepth) + " levels", {id});
      continue;
    }
    auto child = [&, d = depth](const ObjectId& c) {
      auto [it, fresh] = depth_seen.emplace(c, d + 1);
      if (!fresh) {
        if (it->second >= d + 1) return;
        it->second = d + 1;
      }
      queue.emplace_back(c, d + 1);
    };
    size_t ti = ix_.Find(true, id);
    if (ti == Indexer::npos) {
      HOOKFS_ASSIGN_OR_RETURN(bool have, view.HasTree(id));
      if (!have) {
        Reject(plan, "tree " + id.Hex() + " is neither in the pack nor in the store", {id});
        continue;
      }
      plan->stored_trees.push_back(id);
      if (!damaged_store_) continue;  // a stored tree's closure is complete (invariant 1)
      // A damaged store: a stored tree may reach quarantined objects; walk it.
      HOOKFS_ASSIGN_OR_RETURN(bool quarantined, view.IsQuarantined('t', id));
      if (quarantined) {
        Reject(plan, "tree " + id.Hex() + " is damaged in the store (quarantined) and not in the pack", {id});
        continue;
      }
      auto stored = view.GetTree(id);
      if (!stored.ok()) {
        if (!stored.status().Is(Code::kCorruption)) return stored.status();
        Reject(plan, stored.status().message(), {id});
        continue;
      }
      HOOKFS_RETURN_IF_ERROR(WalkEntries(view, id, *stored, plan, child));
      continue;
    }
    const PackObject& o = ix_.objects[ti];
    if (o.state != kOk) {
      HOOKFS_ASSIGN_OR_RETURN(std::string why, Why(o));
      Reject(plan, why, {id});
      continue;
    }
    plan->trees.push_back(uint32_t(ti));
    HOOKFS_ASSIGN_OR_RETURN(Tree tree, PackTree(o));
    HOOKFS_RETURN_IF_ERROR(WalkEntries(view, id, tree, plan, child));
  }
  SortUnique(&plan->trees);
  SortUnique(&plan->blobs);
  SortUnique(&plan->stored_trees);
  SortUnique(&plan->stored_blobs);
  return Status::OK();
}

Status Applier::WalkEntries(const ReadView& view, const ObjectId& id, const Tree& tree, Plan* plan,
                            const std::function<void(const ObjectId&)>& child) {
  for (const TreeEntry& e : tree.entries) {
    if (e.IsDir()) {
      child(e.id);
    } else if (e.IsFile()) {
      size_t bi = ix_.Find(false, e.id);
      const PackObject* b = bi == Indexer::npos ? nullptr : &ix_.objects[bi];
      auto stored = view.GetBlobInfo(e.id);
      const bool damaged = stored.ok() ? (stored->flags & kBlobQuarantined) != 0 : stored.status().Is(Code::kCorruption);
      if (damaged) {
        // The stored copy is damaged: the pack's copy heals it, if it has one.
        if (b && b->state != kStored && b->size == e.size) {
          plan->blobs.push_back(uint32_t(bi));
        } else {
          Reject(plan, "blob " + e.id.Hex() + " ('" + e.name + "') is damaged in the store (quarantined) and not in the pack",
                 {e.id});
        }
        continue;
      }
      if (stored.ok()) {
        if (stored->size != e.size)
          Reject(plan, "tree " + id.Hex() + " says '" + e.name + "' has " + std::to_string(e.size) +
                           " bytes, its blob has " + std::to_string(stored->size), {id});
        else
          plan->stored_blobs.push_back(e.id);
        continue;
      }
      if (!stored.status().Is(Code::kNotFound)) return stored.status();
      if (!b) {
        Reject(plan, "blob " + e.id.Hex() + " ('" + e.name + "') is neither in the pack nor in the store", {e.id});
        continue;
      }
      if (b->state == kStored) {
        // Skipped as stored while streaming, removed (gc) before this snapshot.
        Reject(plan, "blob " + e.id.Hex() + " ('" + e.name +
                         "') was in the store when the pack streamed in and was removed since (gc); push the pack again",
               {e.id});
        continue;
      }
      if (b->size != e.size) {
        Reject(plan, "tree " + id.Hex() + " says '" + e.name + "' has " + std::to_string(e.size) +
                         " bytes, its blob has " + std::to_string(uint64_t(b->size)), {id});
        continue;
      }
      plan->blobs.push_back(uint32_t(bi));
    }
  }
  return Status::OK();
}

Status Applier::Stats(const ReadView& view, const ObjectId& id, uint64_t* files, uint64_t* bytes) {
  if (auto m = stats_memo_.find(id); m != stats_memo_.end()) {
    *files += m->second.first;
    *bytes += m->second.second;
    return Status::OK();
  }
  uint64_t f = 0, b = 0;
  // Children counted, then the decoded tree dropped before descending: one
  // decoded tree at a time, not one per level.
  std::unordered_map<ObjectId, uint64_t> dirs;
  {
    Tree tree;
    if (size_t ti = ix_.Find(true, id); ti != Indexer::npos && ix_.objects[ti].state == kOk) {
      HOOKFS_ASSIGN_OR_RETURN(tree, PackTree(ix_.objects[ti]));
    } else {
      HOOKFS_ASSIGN_OR_RETURN(tree, view.GetTree(id));
    }
    for (const TreeEntry& e : tree.entries) {
      if (e.IsFile()) {
        ++f;
        b += e.size;
      } else if (e.IsDir()) {
        ++dirs[e.id];
      }
    }
  }
  for (const auto& [child, n] : dirs) {
    uint64_t cf = 0, cb = 0;
    HOOKFS_RETURN_IF_ERROR(Stats(view, child, &cf, &cb));
    f += n * cf;
    b += n * cb;
  }
  stats_memo_[id] = {f, b};
  *files += f;
  *bytes += b;
  return Status::OK();
}

double Seconds(std::chrono::steady_clock::time_point since) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - since).count();
}

// Free pages inside data.mdb (LMDB reuses them before growing the file).
Result<uint64_t> FreePagesInMap(MDB_env* env) {
  HOOKFS_ASSIGN_OR_RETURN(lmdb::Txn txn, lmdb::Txn::Begin(env, false));
  MDB_cursor* c = nullptr;
  int rc = mdb_cursor_open(txn.get(), 0 /* FREE_DBI */, &c);
  if (rc != MDB_SUCCESS) return lmdb::LmdbStatus(rc, "open freelist");
  uint64_t pages = 0;
  MDB_val k, v;
  for (rc = mdb_cursor_get(c, &k, &v, MDB_FIRST); rc == MDB_SUCCESS; rc = mdb_cursor_get(c, &k, &v, MDB_NEXT))
    if (v.mv_size >= sizeof(size_t)) pages += *static_cast<const size_t*>(v.mv_data);  // an IDL: count first
  mdb_cursor_close(c);
  if (rc != MDB_NOTFOUND) return lmdb::LmdbStatus(rc, "read freelist");
  return pages;
}

// Refuses, before a byte is written, a pack whose new bytes cannot fit: on
// the store's disk, plus what data.mdb has free inside (issue 9.4/9.5).
Status Applier::CheckSpace(uint64_t need) {
  struct statvfs vfs;
  if (::statvfs(store_->dir().c_str(), &vfs) != 0) return Status::OK();  // cannot tell: LMDB will
  MDB_envinfo info;
  MDB_stat st;
  if (mdb_env_info(store_->env(), &info) != MDB_SUCCESS || mdb_env_stat(store_->env(), &st) != MDB_SUCCESS)
    return Status::OK();
  struct stat fst;
  uint64_t file = ::stat((store_->dir() + "/data.mdb").c_str(), &fst) == 0 ? uint64_t(fst.st_size) : 0;
  uint64_t used = (uint64_t(info.me_last_pgno) + 1) * st.ms_psize;
  HOOKFS_ASSIGN_OR_RETURN(uint64_t free_pages, FreePagesInMap(store_->env()));
  const uint64_t avail = uint64_t(vfs.f_bavail) * vfs.f_frsize + (file > used ? file - used : 0) + free_pages * st.ms_psize;
  // Chunks are overflow pages (256 KiB + a header page), plus B-tree and
  // copy-on-write pages of the batches, plus a reserve for the ledger.
  const uint64_t want = need + need / 32 + (16u << 20);
  if (want > avail)
    return Status::NoSpace("the pack needs about " + std::to_string(want >> 20) + " MiB in the store, " +
                           std::to_string(avail >> 20) + " MiB are free; nothing was written");
  return Status::OK();
}

// Phase 3a: the new blobs accepted releases need, read back from the pack,
// hashed again unless the pack is sealed (then they are the bytes pass 1
// verified), and queued into this session's chunks, which it writes in short
// txns. No write txn is open while the pack is read.
Status Applier::WriteBlobs(const std::vector<Plan>& plans) {
  std::vector<uint32_t> need;
  std::vector<uint32_t> trees;
  for (const Plan& p : plans) {
    if (p.outcome.kind != ReleaseOutcome::Kind::kAccepted) continue;
    need.insert(need.end(), p.blobs.begin(), p.blobs.end());
    trees.insert(trees.end(), p.trees.begin(), p.trees.end());
  }
  SortUnique(&need);
  SortUnique(&trees);
  uint64_t bytes = 0;
  for (uint32_t bi : need) bytes += ix_.objects[bi].size;
  for (uint32_t ti : trees) bytes += ix_.objects[ti].size;
  if (need.empty() && trees.empty()) return Status::OK();
  HOOKFS_RETURN_IF_ERROR(CheckSpace(bytes));
  std::sort(need.begin(), need.end(),
            [&](uint32_t a, uint32_t b) { return ix_.objects[a].offset < ix_.objects[b].offset; });
  std::unique_ptr<char[]> buf(new char[kChunkSize]);
  Sha256 sha;
  const bool rehash = seal_ == Seal::kNone;
  for (uint32_t bi : need) {
    const PackObject& o = ix_.objects[bi];
    HOOKFS_ASSIGN_OR_RETURN(bool fresh, session_->BeginBlob(o.id, o.size));
    if (!fresh) continue;  // committed meanwhile by another pack
    const uint64_t first = xxh_.size();
    uint32_t index = 0;
    for (uint64_t at = 0; at < o.size; at += kChunkSize, ++index) {
      size_t n = size_t(std::min<uint64_t>(kChunkSize, o.size - at));
      HOOKFS_RETURN_IF_ERROR(ReadAt(fd_, o.offset + at, buf.get(), n));
      if (rehash) sha.Update(buf.get(), n);
      xxh_.push_back(Xxh3_64(buf.get(), n));
      HOOKFS_RETURN_IF_ERROR(session_->PutChunk(o.id, index, buf.get(), n));
    }
    // Checked again: the bytes written are the bytes verified.
    if (rehash && sha.Finish() != o.id)
      return Status::Malformed("the pack changed while it was applied (blob " + o.id.Hex() + ")");
    written_.emplace_back(bi, first);
  }
  // Every byte written has been read: the lease must have held until now.
  if (seal_ == Seal::kLease && ::fcntl(fd_, F_GETLEASE) != F_RDLCK)
    return Status::Malformed("the pack file was opened for writing while it was applied; nothing was committed");
  std::sort(written_.begin(), written_.end());
  return session_->Flush();
}

Status Applier::Run(int fd) {
  auto t0 = std::chrono::steady_clock::now();
  fd_ = fd;
  ::posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
  HOOKFS_ASSIGN_OR_RETURN(uint64_t data_bytes, PackDataBytes(fd));
  // Phase 1: one verifying pass over the pack; nothing is written.
  auto summary = ScanPack(fd, &ix_, data_bytes);
  if (!summary.ok()) {
    ix_.Stop();
    if (summary.status().Is(Code::kUnsupported)) return Status::Malformed(summary.status().message());
    return summary.status();
  }
  HOOKFS_RETURN_IF_ERROR(ix_.Finish());
  for (const ReleaseRecord& r : ix_.releases)
    if (!ix_.hooks.count(r.hook)) return Status::Malformed("release of hook '" + r.hook + "' without a hook declaration");
  HOOKFS_RETURN_IF_ERROR(ix_.times.CheckMatched(ix_.releases));
  const double stream_s = Seconds(t0);
  auto t1 = std::chrono::steady_clock::now();

  // Phase 2: decide per release, from a snapshot, without the write lock.
  std::vector<Plan> plans(ix_.releases.size());
  {
    HOOKFS_ASSIGN_OR_RETURN(ReadView view, store_->Read());
    HOOKFS_ASSIGN_OR_RETURN(damaged_store_, view.AnyQuarantined());
    PathCounter paths([&](const ObjectId& id, Tree* scratch) -> Result<const Tree*> {
      // Pack trees are read back from the pack (none is kept decoded).
      if (size_t ti = ix_.Find(true, id); ti != Indexer::npos && ix_.objects[ti].state == kOk) {
        HOOKFS_ASSIGN_OR_RETURN(*scratch, PackTree(ix_.objects[ti]));
        return scratch;
      }
      HOOKFS_ASSIGN_OR_RETURN(*scratch, view.GetTree(id));
      return scratch;
    });
    HOOKFS_ASSIGN_OR_RETURN(const std::vector<KeyInfo> keys, keys_txn::LoadAll(t_, view.txn()));
    for (size_t i = 0; i < plans.size(); ++i) {
      const ReleaseRecord& r = ix_.releases[i];
      Plan& p = plans[i];
      p.release = i;
      p.outcome.hook = r.hook;
      p.outcome.digest = r.root;
      p.outcome.kind = ReleaseOutcome::Kind::kAccepted;
      HOOKFS_ASSIGN_OR_RETURN(std::optional<HookInfo> existing, ledger_txn::GetHook(t_, view.txn(), r.hook));
      const HookDecl& decl = ix_.hooks[r.hook];
      if (existing && !decl.feature.empty() && decl.feature != existing->feature) {
        Reject(&p, "hook '" + r.hook + "' has feature '" + existing->feature + "'; the pack names '" + decl.feature + "'", {});
        continue;
      }
      HOOKFS_ASSIGN_OR_RETURN(apply_sig::Verdict sig, JudgeSignature(view.txn(), i, keys));
      if (!sig.ok) {
        Reject(&p, sig.reason, {});
        continue;
      }
      bool root_is_tree = ix_.Find(true, r.root) != Indexer::npos;
      if (!root_is_tree) {
        HOOKFS_ASSIGN_OR_RETURN(root_is_tree, view.HasTree(r.root));
      }
      if (!root_is_tree) {
        HOOKFS_ASSIGN_OR_RETURN(bool stored_blob, view.HasBlob(r.root));
        if (ix_.Find(false, r.root) != Indexer::npos || stored_blob)
          Reject(&p, "release root " + r.root.Hex() + " is a blob, not a tree", {r.root});
        else
          Reject(&p, "release root tree " + r.root.Hex() + " is neither in the pack nor in the store", {r.root});
        continue;
      }
      HOOKFS_RETURN_IF_ERROR(WalkRelease(view, r.root, &p));
      for (uint32_t bi : p.blobs) {
        const PackObject& b = ix_.objects[bi];
        if (b.state != kOk) {
          HOOKFS_ASSIGN_OR_RETURN(std::string why, Why(b));
          Reject(&p, why, {b.id});
        }
      }
      if (p.outcome.kind == ReleaseOutcome::Kind::kRejected) {
        SortUnique(&p.outcome.bad_objects);
        continue;
      }
      HOOKFS_RETURN_IF_ERROR(Stats(view, p.outcome.digest, &p.files, &p.bytes));
      HOOKFS_ASSIGN_OR_RETURN(std::string times_problem, ix_.times.Decide(&paths, r));
      if (!times_problem.empty()) Reject(&p, times_problem, {});
    }
  }
  stats_memo_.clear();
  const double decide_s = Seconds(t1);
  auto t2 = std::chrono::steady_clock::now();

  // Phase 3a: new blobs into chunks, in short txns.
  HOOKFS_RETURN_IF_ERROR(WriteBlobs(plans));
  // Phase 3b: the one short txn that makes it all visible.
  HOOKFS_RETURN_IF_ERROR(store_->Inject("decided"));
  HOOKFS_RETURN_IF_ERROR(Commit(plans, session_));
  spdlog::debug("apply {}: verify {:.3f}s, decide {:.3f}s, write+commit {:.3f}s ({} MiB new)", report_->pack, stream_s,
                decide_s, Seconds(t2), report_->bytes_written >> 20);
  report_->chunks_written = 0;
  for (uint32_t bi : committed_) report_->chunks_written += ChunkCount(ix_.objects[bi].size);
  session_->Committed();
  for (Plan& p : plans) report_->releases.push_back(std::move(p.outcome));
  return Status::OK();
}

Status Applier::Commit(std::vector<Plan>& plans, ChunkSession* session) {
  HOOKFS_ASSIGN_OR_RETURN(lmdb::Txn txn, store_->BeginWrite());
  const int64_t now = NowMs() / 1000;
  // Signatures again, with the keys as they are now: a key revoked or added
  // since phase 2 counts. Before hooks are created, so that a hook whose
  // releases all fail here is not created either.
  HOOKFS_ASSIGN_OR_RETURN(const std::vector<KeyInfo> keys, keys_txn::LoadAll(t_, txn));
  for (Plan& p : plans) {
    if (p.outcome.kind != ReleaseOutcome::Kind::kAccepted) continue;
    HOOKFS_ASSIGN_OR_RETURN(apply_sig::Verdict sig, JudgeSignature(txn, p.release, keys));
    if (!sig.ok) Reject(&p, sig.reason, {});
    else p.signed_by = sig.signed_by;
  }
  // Hooks: create declared ones that have an accepted release or none at all.
  std::unordered_map<std::string, bool> has_release, has_accepted;
  for (const Plan& p : plans) {
    has_release[p.outcome.hook] = true;
    if (p.outcome.kind == ReleaseOutcome::Kind::kAccepted) has_accepted[p.outcome.hook] = true;
  }
  for (const std::string& name : ix_.hook_order) {
    HOOKFS_ASSIGN_OR_RETURN(std::optional<HookInfo> existing, ledger_txn::GetHook(t_, txn, name));
    const HookDecl& decl = ix_.hooks[name];
    if (existing) {
      // Created meanwhile by a concurrent apply: the feature rule applies again.
      if (!decl.feature.empty() && decl.feature != existing->feature)
        for (Plan& p : plans)
          if (p.outcome.hook == name && p.outcome.kind == ReleaseOutcome::Kind::kAccepted)
            Reject(&p, "hook '" + name + "' has feature '" + existing->feature + "'; the pack names '" + decl.feature + "'", {});
      continue;
    }
    if (has_release[name] && !has_accepted[name]) continue;
    HookInfo h{name, decl.feature, now, opts_.actor.uid};
    HOOKFS_RETURN_IF_ERROR(ledger_txn::PutHook(t_, txn, h));
    HOOKFS_RETURN_IF_ERROR(ledger_txn::AppendJournal(
        t_, txn, {{"event", "hook"}, {"time", FormatTime(now)}, {"hook", name}, {"feature", decl.feature}, {"uid", opts_.actor.uid}}));
  }
  // Objects first: blob records (their chunks are durable), then trees.
  std::vector<std::pair<char, ObjectId>> healed;
  for (Plan& p : plans) {
    if (p.outcome.kind != ReleaseOutcome::Kind::kAccepted) continue;
    // Duplicate of an existing release (possibly committed a moment ago, or
    // earlier in this very pack)? Its objects still heal damaged copies.
    HOOKFS_ASSIGN_OR_RETURN(std::optional<uint32_t> dup, ledger_txn::FindDigest(t_, txn, p.outcome.hook, p.outcome.digest));
    if (dup) {
      p.outcome.kind = ReleaseOutcome::Kind::kDuplicate;
      p.outcome.version = *dup;
      HOOKFS_RETURN_IF_ERROR(WriteObjects(txn, p, &healed));
      continue;
    }
    // What phase 2 found stored must still be: gc may have removed an
    // object no release reached before this one (docs/integrity.md).
    for (const ObjectId& id : p.stored_trees) {
      HOOKFS_ASSIGN_OR_RETURN(bool have, txn.Has(t_.trees, id.AsKey()));
      if (!have) Reject(&p, "tree " + id.Hex() + " was removed from the store (gc) while this pack was applied; push it again", {id});
    }
    for (const ObjectId& id : p.stored_blobs) {
      HOOKFS_ASSIGN_OR_RETURN(bool have, txn.Has(t_.blobs, id.AsKey()));
      if (!have) Reject(&p, "blob " + id.Hex() + " was removed from the store (gc) while this pack was applied; push it again", {id});
    }
    // Pack blobs another pack committed before ours streamed (so ours were
    // not written) must still be there too.
    for (uint32_t bi : p.blobs) {
      if (std::binary_search(written_.begin(), written_.end(), std::make_pair(bi, uint64_t(0)),
                             [](const auto& a, const auto& b) { return a.first < b.first; }))
        continue;
      const ObjectId& id = ix_.objects[bi].id;
      HOOKFS_ASSIGN_OR_RETURN(bool have, txn.Has(t_.blobs, id.AsKey()));
      if (!have) Reject(&p, "blob " + id.Hex() + " was removed from the store (gc) while this pack was applied; push it again", {id});
    }
    if (p.outcome.kind == ReleaseOutcome::Kind::kRejected) continue;
    HOOKFS_RETURN_IF_ERROR(WriteObjects(txn, p, &healed));
    // Then the release and its pointer.
    const ReleaseRecord& r = ix_.releases[p.release];
    HOOKFS_RETURN_IF_ERROR(apply_sig::PinIfCovered(t_, txn, r.hook, keys));
    HOOKFS_ASSIGN_OR_RETURN(uint32_t last, ledger_txn::LastVersion(t_, txn, r.hook));
    ReleaseInfo info;
    info.hook = r.hook;
    info.version = last + 1;
    info.digest = p.outcome.digest;
    info.source_ref = r.source_ref;
    info.message = r.message;
    info.published_by = opts_.actor.uid;
    info.created_at = r.created_at;
    info.committed_at = now;
    info.files = p.files;
    info.bytes = p.bytes;
    info.signed_by = p.signed_by;
    HOOKFS_RETURN_IF_ERROR(ledger_txn::PutRelease(t_, txn, info));
    HOOKFS_RETURN_IF_ERROR(ix_.times.Write(t_, txn, r, info.version));
    p.outcome.version = info.version;
    HOOKFS_RETURN_IF_ERROR(ledger_txn::AppendJournal(
        t_, txn, {{"event", "release"}, {"time", FormatTime(now)}, {"hook", r.hook}, {"version", info.version},
                  {"digest", info.digest.Hex()}, {"pack", report_->pack}, {"uid", opts_.actor.uid}}));
    if (!r.no_advance)
      HOOKFS_RETURN_IF_ERROR(ledger_txn::MovePointer(t_, txn, r.hook, "live", info.version, opts_.actor, now));
  }
  if (!healed.empty()) {
    std::vector<std::string> whole;
    HOOKFS_RETURN_IF_ERROR(quarantine::Heal(t_, txn, healed, &whole));
    json objs = json::array();
    for (const auto& [kind, id] : healed) objs.push_back(std::string(kind == 'b' ? "blob " : "tree ") + id.Hex());
    HOOKFS_RETURN_IF_ERROR(ledger_txn::AppendJournal(
        t_, txn, {{"event", "heal"}, {"time", FormatTime(now)}, {"pack", report_->pack}, {"uid", opts_.actor.uid},
                  {"objects", objs}, {"whole", whole}}));
    report_->objects_healed = healed.size();
    report_->releases_healed = whole;
  }
  HOOKFS_RETURN_IF_ERROR(session->Release(txn));
  size_t counts[3] = {0, 0, 0};
  for (const Plan& p : plans) ++counts[size_t(p.outcome.kind)];
  HOOKFS_RETURN_IF_ERROR(ledger_txn::AppendJournal(
      t_, txn, {{"event", "pack"}, {"time", FormatTime(now)}, {"pack", report_->pack}, {"uid", opts_.actor.uid},
                {"accepted", counts[0]}, {"duplicate", counts[1]}, {"rejected", counts[2]}}));
  HOOKFS_RETURN_IF_ERROR(store_->Inject("final_commit"));
  return txn.Commit().Context("commit pack");
}

Result<apply_sig::Verdict> Applier::JudgeSignature(const lmdb::Txn& txn, size_t i, const std::vector<KeyInfo>& keys) {
  const ReleaseRecord& r = ix_.releases[i];
  HOOKFS_ASSIGN_OR_RETURN(std::optional<HookInfo> hook, ledger_txn::GetHook(t_, txn, r.hook));
  const bool pinned = keys_txn::Pinned(hook, r.hook, keys, opts_.require_signed);
  const ObjectId times = ix_.times.SignedDigest(r);  // docs/pack-format.md §6b
  return ix_.signatures.Judge(keys, pinned, r, ix_.hooks[r.hook].feature, times);
}

// Writes the plan's objects the store lacks or holds damaged (quarantined);
// records those that heal a damaged or missing copy.
Status Applier::WriteObjects(lmdb::Txn& txn, const Plan& p, std::vector<std::pair<char, ObjectId>>* healed) {
  for (uint32_t bi : p.blobs) {
    auto w = std::lower_bound(written_.begin(), written_.end(), std::make_pair(bi, uint64_t(0)),
                              [](const auto& a, const auto& b) { return a.first < b.first; });
    if (w == written_.end() || w->first != bi) continue;  // not streamed by us
    if (std::binary_search(committed_.begin(), committed_.end(), bi)) continue;
    const PackObject& b = ix_.objects[bi];
    auto rec = txn.Get(t_.blobs, b.id.AsKey());
    bool replace = false;
    std::optional<BlobInfo> old;
    if (rec.ok()) {
      auto info = DecodeBlobInfo(*rec);
      if (info.ok() && !(info->flags & kBlobQuarantined)) continue;  // committed meanwhile by another pack
      replace = true;
      if (info.ok()) old = *info;
    } else if (!rec.status().Is(Code::kNotFound)) {
      return rec.status();
    }
    const uint32_t n = ChunkCount(b.size);
    std::vector<uint64_t> hashes(xxh_.begin() + w->second, xxh_.begin() + w->second + n);
    HOOKFS_RETURN_IF_ERROR(txn.Put(t_.blobs, b.id.AsKey(), EncodeBlobRecord(b.size, session_->writer(), hashes)));
    // A healed blob's damaged chunks are of another writer: drop them.
    if (old && old->writer != session_->writer())
      for (uint32_t i = 0; i < old->chunk_count; ++i)
        HOOKFS_RETURN_IF_ERROR(txn.Del(t_.chunks, ChunkKey(b.id, old->writer, i)));
    HOOKFS_ASSIGN_OR_RETURN(bool listed, txn.Has(t_.quarantine, QuarantineKey('b', b.id)));
    if (replace || listed) healed->emplace_back('b', b.id);
    committed_.insert(std::upper_bound(committed_.begin(), committed_.end(), bi), bi);
    ++report_->blobs_written;
    report_->bytes_written += b.size;
  }
  for (uint32_t ti : p.trees) {
    if (!trees_done_.insert(ti).second) continue;
    const ObjectId& tid = ix_.objects[ti].id;
    HOOKFS_ASSIGN_OR_RETURN(bool have, txn.Has(t_.trees, tid.AsKey()));
    HOOKFS_ASSIGN_OR_RETURN(bool listed, txn.Has(t_.quarantine, QuarantineKey('t', tid)));
    if (have && !listed) continue;
    // Canonical bytes as the pack has them (checked again as they are read).
    HOOKFS_ASSIGN_OR_RETURN(std::string bytes, PackTreeBytes(ix_.objects[ti]));
    HOOKFS_RETURN_IF_ERROR(txn.Put(t_.trees, tid.AsKey(), EncodeTreeRecord(bytes)));
    if (listed) healed->emplace_back('t', tid);
    ++report_->trees_written;
  }
  return Status::OK();
}

std::string BaseName(const std::string& path) {
  auto slash = path.rfind('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

}  // namespace

Status ApplyReport::Verdict() const {
  if (!status.ok()) return status;
  size_t rejected = 0;
  for (const ReleaseOutcome& r : releases) rejected += r.kind == ReleaseOutcome::Kind::kRejected;
  if (rejected)
    return Status::Malformed(std::to_string(rejected) + " of " + std::to_string(releases.size()) +
                             " releases in pack '" + pack + "' rejected");
  return Status::OK();
}

json ApplyReport::ToJson() const {
  json j;
  j["pack"] = pack;
  size_t rejected = 0;
  for (const ReleaseOutcome& r : releases) rejected += r.kind == ReleaseOutcome::Kind::kRejected;
  j["status"] = !status.ok() ? "error" : rejected ? "rejected" : "ok";
  if (!status.ok()) j["error"] = status.ToString();
  json rels = json::array();
  for (const ReleaseOutcome& r : releases) {
    json e = {{"hook", r.hook}, {"digest", r.digest.Hex()}};
    switch (r.kind) {
      case ReleaseOutcome::Kind::kAccepted:
        e["result"] = "accepted";
        e["version"] = r.version;
        break;
      case ReleaseOutcome::Kind::kDuplicate:
        e["result"] = "duplicate";
        e["duplicate_of"] = r.version;
        break;
      case ReleaseOutcome::Kind::kRejected: {
        e["result"] = "rejected";
        e["reason"] = r.reason;
        json bad = json::array();
        for (const ObjectId& id : r.bad_objects) bad.push_back(id.Hex());
        e["bad_objects"] = bad;
        break;
      }
    }
    rels.push_back(std::move(e));
  }
  j["releases"] = rels;
  if (objects_healed) j["healed"] = {{"objects", objects_healed}, {"releases", releases_healed}};
  j["written"] = {{"blobs", blobs_written}, {"chunks", chunks_written}, {"trees", trees_written}, {"bytes", bytes_written}};
  return SafeJson(j);  // names and reasons may quote bytes that are not UTF-8
}

// A pack from a pipe is received into an anonymous file in staging/ first
// (no lock held): the apply verifies it whole before writing, then reads
// back what it writes.
Result<int> SpoolPipe(Store* store, int in) {
  // Locked before it has a name (or re-checked after), then unlinked: it
  // vanishes with the fd, whatever happens to this process.
  static std::atomic<uint64_t> seq{0};
  const std::string name = "apply-" + std::to_string(::getpid()) + "-" + std::to_string(seq++) + ".spool";
  HOOKFS_ASSIGN_OR_RETURN(int fd, store->CreateStagingFile(name));
  store->io()->Unlink((store->staging_dir() + "/" + name).c_str());
  std::vector<char> buf(1 << 20);
  for (;;) {
    ssize_t r = ::read(in, buf.data(), buf.size());
    if (r < 0) {
      if (errno == EINTR) continue;
      int err = errno;
      ::close(fd);
      return Status::IOError(std::string("read pack: ") + std::strerror(err));
    }
    if (r == 0) break;
    for (ssize_t off = 0; off < r;) {
      ssize_t w = store->io()->Write(fd, buf.data() + off, size_t(r - off));
      if (w < 0) {
        if (errno == EINTR) continue;
        int err = errno;
        ::close(fd);
        return Status::FromErrno(err, "spool pack into " + store->staging_dir());
      }
      off += w;
    }
  }
  return fd;
}

ApplyReport ApplyPack(Ledger* ledger, int fd, const ApplyOptions& options) {
  ApplyReport report;
  report.pack = options.pack_name.empty() ? "pack" : options.pack_name;
  Status st;
  int spool = -1;
  Seal seal = options.sealed ? Seal::kOwned : Seal::kNone;
  bool leased = false;
  struct stat sb;
  if (::fstat(fd, &sb) == 0 && !S_ISREG(sb.st_mode)) {
    auto s = SpoolPipe(ledger->store(), fd);
    if (s.ok()) fd = spool = *s;
    else st = s.status();
    seal = Seal::kOwned;  // unlinked at once; only this process holds it
  } else if (seal == Seal::kNone && TakeReadLease(fd)) {
    seal = Seal::kLease;
    leased = true;
  }
  if (st.ok()) {
    auto session = ChunkSession::Begin(ledger->store());
    if (session.ok()) {
      Applier applier(ledger, options, &report, session->get(), seal);
      st = applier.Run(fd);
    } else {
      st = session.status();
    }
  }  // an uncommitted session reclaims its chunks here
  if (leased) ::fcntl(fd, F_SETLEASE, F_UNLCK);  // a writer waiting on it proceeds
  if (spool >= 0) ::close(spool);
  if (!st.ok()) {
    if (st.Is(Code::kNoSpace))
      st = Status::NoSpace("the store is full (no room left in its LMDB map or on its disk); nothing of the pack "
                           "was committed: " + st.message());
    report.status = st.Context("pack '" + report.pack + "'");
    report.releases.clear();
    report.blobs_written = report.chunks_written = report.trees_written = report.bytes_written = 0;
    // Record the outcome; a store that cannot write this cannot have committed anything either.
    auto txn = ledger->store()->BeginWrite();
    if (txn.ok()) {
      Status jst = ledger_txn::AppendJournal(
          ledger->store()->tables(), *txn,
          {{"event", "pack"}, {"time", FormatTime(NowMs() / 1000)}, {"pack", report.pack}, {"uid", options.actor.uid},
           {"error", report.status.ToString()}});
      if (jst.ok()) jst = txn->Commit();
      if (!jst.ok()) spdlog::warn("journal: could not record failed pack {}: {}", report.pack, jst.ToString());
    }
  }
  return report;
}

ApplyReport ApplyPackFile(Ledger* ledger, const std::string& path, const ApplyOptions& options) {
  ApplyOptions o = options;
  if (o.pack_name.empty()) o.pack_name = BaseName(path);
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    ApplyReport report;
    report.pack = o.pack_name;
    report.status = Status::FromErrno(errno, "open pack " + path);
    return report;
  }
  ApplyReport report = ApplyPack(ledger, fd, o);
  ::close(fd);
  return report;
}

}  // namespace hookfs
