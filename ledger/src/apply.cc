#include "hookfs/apply.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <deque>
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

namespace hookfs {

using nlohmann::json;

namespace {

struct PackBlob {
  ObjectId declared;
  uint64_t size = 0;
  bool written = false;  // streamed into this session's chunks
  bool ok = false;       // hashed to its declared id (set by the hasher)
  std::string why;
  std::vector<uint64_t> chunk_xxh3;
};

// SHA-256 of streamed blobs on a second thread, so hashing overlaps reading
// and writing. Chunk buffers come from a bounded pool: memory stays fixed
// however large the pack.
class Hasher {
 public:
  static constexpr size_t kPoolChunks = 64;  // 16 MiB in flight at most

  Hasher() : thread_([this] { Loop(); }) {
    for (size_t i = 0; i < kPoolChunks; ++i) free_.push_back(std::make_unique<char[]>(kChunkSize));
  }
  ~Hasher() { Stop(); }

  std::unique_ptr<char[]> Buffer() {
    std::unique_lock<std::mutex> l(mu_);
    cv_free_.wait(l, [&] { return !free_.empty(); });
    auto b = std::move(free_.back());
    free_.pop_back();
    return b;
  }
  // Hashes `len` bytes of `buf` into `blob`; `end` finishes the blob.
  void Push(PackBlob* blob, std::unique_ptr<char[]> buf, size_t len, bool end) {
    std::lock_guard<std::mutex> l(mu_);
    work_.push_back({blob, std::move(buf), len, end});
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
    PackBlob* blob;
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
      if (it.end) {
        ObjectId got = sha.Finish();
        if (got == it.blob->declared) it.blob->ok = true;
        else it.blob->why = "blob declared as " + it.blob->declared.Hex() + " hashes to " + got.Hex();
      }
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
  bool busy_ = false;
  bool stop_ = false;
  std::thread thread_;
};

struct PackTree {
  ObjectId declared;
  bool ok = false;
  std::string why;
  Tree tree;
};

// Phase 1: one streaming pass. ScanPack checks framing and trailer; blob
// data goes into this session's chunks as it arrives (reclaimed unless a
// release that reaches it commits) and through the hasher.
class Indexer : public PackVisitor {
 public:
  explicit Indexer(ChunkSession* session) : session_(session) {}

  std::unordered_map<std::string, HookDecl> hooks;
  std::vector<std::string> hook_order;
  std::unordered_map<ObjectId, size_t> blob_index;
  std::unordered_map<ObjectId, PackTree> trees;
  std::vector<ReleaseRecord> releases;
  apply_times::Collector times;  // file mtimes, apart from the streaming

  Status OnTimes(const TimesRecord& t) override { return times.Add(t); }
  Status OnHook(const HookDecl& d) override {
    if (hooks.count(d.name)) return Status::Malformed("hook '" + d.name + "' declared twice");
    hooks[d.name] = d;
    hook_order.push_back(d.name);
    return Status::OK();
  }
  Status OnBlobBegin(const ObjectId& id, uint64_t size, uint64_t) override {
    if (blob_index.count(id)) return Status::Malformed("blob " + id.Hex() + " appears twice");
    blob_index[id] = blobs.size();
    blobs.push_back(std::make_unique<PackBlob>());
    cur_ = blobs.back().get();
    cur_->declared = id;
    cur_->size = size;
    // A blob the store has is not needed from the pack: skip, unhashed.
    HOOKFS_ASSIGN_OR_RETURN(cur_->written, session_->BeginBlob(id, size));
    next_chunk_ = 0;
    fill_ = 0;
    if (cur_->written) buf_ = hasher_.Buffer();
    return Status::OK();
  }
  Status OnBlobData(const void* data, size_t n) override {
    if (!cur_->written) return Status::OK();
    auto p = static_cast<const char*>(data);
    while (n > 0) {
      size_t k = std::min(n, kChunkSize - fill_);
      std::memcpy(buf_.get() + fill_, p, k);
      fill_ += k;
      p += k;
      n -= k;
      if (fill_ == kChunkSize) HOOKFS_RETURN_IF_ERROR(EmitChunk(false));
    }
    return Status::OK();
  }
  Status OnBlobEnd() override {
    if (!cur_->written) return Status::OK();
    return EmitChunk(true);
  }
  Status OnTree(const ObjectId& id, std::string_view encoded, uint64_t) override {
    if (trees.count(id)) return Status::Malformed("tree " + id.Hex() + " appears twice");
    PackTree t;
    t.declared = id;
    ObjectId computed = Sha256::Of(encoded);
    auto decoded = DecodeTree(encoded);
    if (!decoded.ok()) {
      t.why = "tree " + id.Hex() + " is not canonical: " + decoded.status().message();
    } else if (computed != id) {
      t.why = "tree declared as " + id.Hex() + " hashes to " + computed.Hex();
    } else {
      t.ok = true;
      t.tree = std::move(decoded).value();
    }
    trees.emplace(id, std::move(t));
    return Status::OK();
  }
  Status OnRelease(const ReleaseRecord& r) override {
    if (releases.size() >= Limits::kMaxReleasesPerPack)
      return Status::Malformed("pack has more than " + std::to_string(Limits::kMaxReleasesPerPack) + " releases");
    releases.push_back(r);
    return Status::OK();
  }
  // Waits until every streamed blob is hashed.
  void Finish() { hasher_.Drain(); }

  std::vector<std::unique_ptr<PackBlob>> blobs;

 private:
  // Writes the buffered chunk (full, or the blob's last) and hands it to
  // the hasher; `end` closes the blob.
  Status EmitChunk(bool end) {
    if (fill_ > 0) {
      cur_->chunk_xxh3.push_back(Xxh3_64(buf_.get(), fill_));
      HOOKFS_RETURN_IF_ERROR(session_->PutChunk(cur_->declared, next_chunk_++, buf_.get(), fill_));
    }
    size_t len = fill_;
    fill_ = 0;
    hasher_.Push(cur_, std::move(buf_), len, end);
    if (!end) buf_ = hasher_.Buffer();
    return Status::OK();
  }

  ChunkSession* session_;
  Hasher hasher_;
  PackBlob* cur_ = nullptr;
  std::unique_ptr<char[]> buf_;
  size_t fill_ = 0;
  uint32_t next_chunk_ = 0;
};

struct Plan {
  size_t release;            // index into Indexer::releases
  ReleaseOutcome outcome;
  std::vector<size_t> blobs;  // pack blobs it needs written
  std::vector<ObjectId> trees;  // pack trees it reaches
  // Stored objects it relies on without the pack's copy: the final txn
  // re-checks they still exist (gc may have removed them meanwhile).
  std::vector<ObjectId> stored_trees, stored_blobs;
  uint64_t files = 0, bytes = 0;
};

class Applier {
 public:
  Applier(Ledger* ledger, const ApplyOptions& opts, ApplyReport* report, ChunkSession* session)
      : store_(ledger->store()), t_(store_->tables()), opts_(opts), report_(report), session_(session),
        ix_(session) {}

  Status Run(int fd);

 private:
  Status Walk(const ReadView& view, const ObjectId& tree_id, size_t depth, Plan* plan,
              std::unordered_set<ObjectId>* seen_trees);
  Status WalkEntries(const ReadView& view, const ObjectId& tree_id, const Tree& tree, size_t depth, Plan* plan,
                     std::unordered_set<ObjectId>* seen_trees);
  Status WriteObjects(lmdb::Txn& txn, const Plan& p, std::unordered_set<ObjectId>* trees_done,
                      std::vector<std::pair<char, ObjectId>>* healed);
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

  Store* store_;
  const Tables& t_;
  const ApplyOptions& opts_;
  ApplyReport* report_;
  ChunkSession* session_;
  Indexer ix_;
  std::unordered_map<ObjectId, std::pair<uint64_t, uint64_t>> stats_memo_;
  std::unordered_set<size_t> committed_blobs_;  // pack blobs given a record
  bool damaged_store_ = false;  // the quarantine table has entries (phase 2's view)
};

Status Applier::Walk(const ReadView& view, const ObjectId& id, size_t depth, Plan* plan,
                     std::unordered_set<ObjectId>* seen) {
  if (depth > Limits::kMaxDepth) {
    Reject(plan, "tree deeper than " + std::to_string(Limits::kMaxDepth) + " levels", {id});
    return Status::OK();
  }
  if (!seen->insert(id).second) return Status::OK();
  auto it = ix_.trees.find(id);
  if (it == ix_.trees.end()) {
    HOOKFS_ASSIGN_OR_RETURN(bool have, view.HasTree(id));
    if (!have) {
      Reject(plan, "tree " + id.Hex() + " is neither in the pack nor in the store", {id});
      return Status::OK();
    }
    plan->stored_trees.push_back(id);
    if (!damaged_store_) return Status::OK();  // a stored tree's closure is complete (invariant 1)
    // A damaged store: a stored tree may reach quarantined objects; walk it.
    HOOKFS_ASSIGN_OR_RETURN(bool quarantined, view.IsQuarantined('t', id));
    if (quarantined) {
      Reject(plan, "tree " + id.Hex() + " is damaged in the store (quarantined) and not in the pack", {id});
      return Status::OK();
    }
    auto stored = view.GetTree(id);
    if (!stored.ok()) {
      if (!stored.status().Is(Code::kCorruption)) return stored.status();
      Reject(plan, stored.status().message(), {id});
      return Status::OK();
    }
    return WalkEntries(view, id, *stored, depth, plan, seen);
  }
  if (!it->second.ok) {
    Reject(plan, it->second.why, {id});
    return Status::OK();
  }
  plan->trees.push_back(id);
  return WalkEntries(view, id, it->second.tree, depth, plan, seen);
}

Status Applier::WalkEntries(const ReadView& view, const ObjectId& id, const Tree& tree, size_t depth, Plan* plan,
                            std::unordered_set<ObjectId>* seen) {
  for (const TreeEntry& e : tree.entries) {
    if (e.IsDir()) {
      HOOKFS_RETURN_IF_ERROR(Walk(view, e.id, depth + 1, plan, seen));
    } else if (e.IsFile()) {
      auto bi = ix_.blob_index.find(e.id);
      auto stored = view.GetBlobInfo(e.id);
      const bool damaged = stored.ok() ? (stored->flags & kBlobQuarantined) != 0 : stored.status().Is(Code::kCorruption);
      if (damaged) {
        // The stored copy is damaged: the pack's copy heals it, if it has one.
        if (bi != ix_.blob_index.end() && ix_.blobs[bi->second]->written && ix_.blobs[bi->second]->size == e.size) {
          plan->blobs.push_back(bi->second);
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
      if (bi == ix_.blob_index.end()) {
        Reject(plan, "blob " + e.id.Hex() + " ('" + e.name + "') is neither in the pack nor in the store", {e.id});
        continue;
      }
      const PackBlob& b = *ix_.blobs[bi->second];
      if (!b.written) {
        // Skipped as stored while streaming, removed (gc) before this snapshot.
        Reject(plan, "blob " + e.id.Hex() + " ('" + e.name +
                         "') was in the store when the pack streamed in and was removed since (gc); push the pack again",
               {e.id});
        continue;
      }
      if (b.size != e.size) {
        Reject(plan, "tree " + id.Hex() + " says '" + e.name + "' has " + std::to_string(e.size) +
                         " bytes, its blob has " + std::to_string(b.size), {id});
        continue;
      }
      plan->blobs.push_back(bi->second);
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
  Tree stored;
  const Tree* tree;
  if (auto it = ix_.trees.find(id); it != ix_.trees.end() && it->second.ok) {
    tree = &it->second.tree;
  } else {
    HOOKFS_ASSIGN_OR_RETURN(stored, view.GetTree(id));
    tree = &stored;
  }
  uint64_t f = 0, b = 0;
  for (const TreeEntry& e : tree->entries) {
    if (e.IsFile()) {
      ++f;
      b += e.size;
    } else if (e.IsDir()) {
      HOOKFS_RETURN_IF_ERROR(Stats(view, e.id, &f, &b));
    }
  }
  stats_memo_[id] = {f, b};
  *files += f;
  *bytes += b;
  return Status::OK();
}

double Seconds(std::chrono::steady_clock::time_point since) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - since).count();
}

Status Applier::Run(int fd) {
  auto t0 = std::chrono::steady_clock::now();
  ::posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
  // Phase 1: one pass over the pack. Nothing of it is visible until phase 3,
  // and every chunk streamed here is reclaimed unless phase 3 commits it.
  auto summary = ScanPack(fd, &ix_);
  ix_.Finish();
  if (!summary.ok()) {
    if (summary.status().Is(Code::kUnsupported)) return Status::Malformed(summary.status().message());
    return summary.status();
  }
  for (const ReleaseRecord& r : ix_.releases)
    if (!ix_.hooks.count(r.hook)) return Status::Malformed("release of hook '" + r.hook + "' without a hook declaration");
  HOOKFS_RETURN_IF_ERROR(ix_.times.CheckMatched(ix_.releases));
  HOOKFS_RETURN_IF_ERROR(session_->Flush());
  const double stream_s = Seconds(t0);
  auto t1 = std::chrono::steady_clock::now();

  // Phase 2: decide per release, from a snapshot, without the write lock.
  std::vector<Plan> plans(ix_.releases.size());
  {
    HOOKFS_ASSIGN_OR_RETURN(ReadView view, store_->Read());
    HOOKFS_ASSIGN_OR_RETURN(damaged_store_, view.AnyQuarantined());
    PathCounter paths([&](const ObjectId& id, Tree* scratch) -> Result<const Tree*> {
      if (auto it = ix_.trees.find(id); it != ix_.trees.end() && it->second.ok) return &it->second.tree;
      HOOKFS_ASSIGN_OR_RETURN(*scratch, view.GetTree(id));
      return scratch;
    });
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
      bool root_is_tree = ix_.trees.count(r.root) > 0;
      if (!root_is_tree) {
        HOOKFS_ASSIGN_OR_RETURN(root_is_tree, view.HasTree(r.root));
      }
      if (!root_is_tree) {
        HOOKFS_ASSIGN_OR_RETURN(bool stored_blob, view.HasBlob(r.root));
        if (ix_.blob_index.count(r.root) || stored_blob)
          Reject(&p, "release root " + r.root.Hex() + " is a blob, not a tree", {r.root});
        else
          Reject(&p, "release root tree " + r.root.Hex() + " is neither in the pack nor in the store", {r.root});
        continue;
      }
      std::unordered_set<ObjectId> seen;
      HOOKFS_RETURN_IF_ERROR(Walk(view, r.root, 0, &p, &seen));
      for (size_t bi : p.blobs) {
        const PackBlob& b = *ix_.blobs[bi];
        if (!b.ok) Reject(&p, b.why, {b.declared});
      }
      if (p.outcome.kind == ReleaseOutcome::Kind::kRejected) {
        std::sort(p.outcome.bad_objects.begin(), p.outcome.bad_objects.end());
        p.outcome.bad_objects.erase(std::unique(p.outcome.bad_objects.begin(), p.outcome.bad_objects.end()),
                                    p.outcome.bad_objects.end());
        continue;
      }
      HOOKFS_RETURN_IF_ERROR(Stats(view, p.outcome.digest, &p.files, &p.bytes));
      HOOKFS_ASSIGN_OR_RETURN(std::string times_problem, ix_.times.Decide(&paths, r));
      if (!times_problem.empty()) Reject(&p, times_problem, {});
    }
  }
  const double decide_s = Seconds(t1);
  auto t2 = std::chrono::steady_clock::now();

  // Phase 3: the one short txn that makes it all visible.
  HOOKFS_RETURN_IF_ERROR(store_->Inject("decided"));
  HOOKFS_RETURN_IF_ERROR(Commit(plans, session_));
  spdlog::debug("apply {}: stream {:.3f}s, decide {:.3f}s, commit {:.3f}s ({} MiB new)", report_->pack, stream_s,
                decide_s, Seconds(t2), report_->bytes_written >> 20);
  report_->chunks_written = 0;
  for (size_t bi = 0; bi < ix_.blobs.size(); ++bi)
    if (committed_blobs_.count(bi)) report_->chunks_written += ix_.blobs[bi]->chunk_xxh3.size();
  session_->Committed();
  for (Plan& p : plans) report_->releases.push_back(std::move(p.outcome));
  return Status::OK();
}

Status Applier::Commit(std::vector<Plan>& plans, ChunkSession* session) {
  HOOKFS_ASSIGN_OR_RETURN(lmdb::Txn txn, store_->BeginWrite());
  const int64_t now = NowMs() / 1000;
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
  std::unordered_set<ObjectId> trees_done;
  std::vector<std::pair<char, ObjectId>> healed;
  for (Plan& p : plans) {
    if (p.outcome.kind != ReleaseOutcome::Kind::kAccepted) continue;
    // Duplicate of an existing release (possibly committed a moment ago, or
    // earlier in this very pack)? Its objects still heal damaged copies.
    HOOKFS_ASSIGN_OR_RETURN(std::optional<uint32_t> dup, ledger_txn::FindDigest(t_, txn, p.outcome.hook, p.outcome.digest));
    if (dup) {
      p.outcome.kind = ReleaseOutcome::Kind::kDuplicate;
      p.outcome.version = *dup;
      HOOKFS_RETURN_IF_ERROR(WriteObjects(txn, p, &trees_done, &healed));
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
    if (p.outcome.kind == ReleaseOutcome::Kind::kRejected) continue;
    HOOKFS_RETURN_IF_ERROR(WriteObjects(txn, p, &trees_done, &healed));
    // Then the release and its pointer.
    const ReleaseRecord& r = ix_.releases[p.release];
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

// Writes the plan's objects the store lacks or holds damaged (quarantined);
// records those that heal a damaged or missing copy.
Status Applier::WriteObjects(lmdb::Txn& txn, const Plan& p, std::unordered_set<ObjectId>* trees_done,
                             std::vector<std::pair<char, ObjectId>>* healed) {
  for (size_t bi : p.blobs) {
    const PackBlob& b = *ix_.blobs[bi];
    if (!b.written || committed_blobs_.count(bi)) continue;
    auto rec = txn.Get(t_.blobs, b.declared.AsKey());
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
    HOOKFS_RETURN_IF_ERROR(txn.Put(t_.blobs, b.declared.AsKey(), EncodeBlobRecord(b.size, session_->writer(), b.chunk_xxh3)));
    // A healed blob's damaged chunks are of another writer: drop them.
    if (old && old->writer != session_->writer())
      for (uint32_t i = 0; i < old->chunk_count; ++i)
        HOOKFS_RETURN_IF_ERROR(txn.Del(t_.chunks, ChunkKey(b.declared, old->writer, i)));
    HOOKFS_ASSIGN_OR_RETURN(bool listed, txn.Has(t_.quarantine, QuarantineKey('b', b.declared)));
    if (replace || listed) healed->emplace_back('b', b.declared);
    committed_blobs_.insert(bi);
    ++report_->blobs_written;
    report_->bytes_written += b.size;
  }
  for (const ObjectId& tid : p.trees) {
    if (!trees_done->insert(tid).second) continue;
    HOOKFS_ASSIGN_OR_RETURN(bool have, txn.Has(t_.trees, tid.AsKey()));
    HOOKFS_ASSIGN_OR_RETURN(bool listed, txn.Has(t_.quarantine, QuarantineKey('t', tid)));
    if (have && !listed) continue;
    HOOKFS_ASSIGN_OR_RETURN(std::string bytes, EncodeTree(ix_.trees[tid].tree));
    std::string rec;
    lmdb::PutBE64(&rec, Xxh3_64(bytes.data(), bytes.size()));
    rec += bytes;
    HOOKFS_RETURN_IF_ERROR(txn.Put(t_.trees, tid.AsKey(), rec));
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

ApplyReport ApplyPack(Ledger* ledger, int fd, const ApplyOptions& options) {
  ApplyReport report;
  report.pack = options.pack_name.empty() ? "pack" : options.pack_name;
  Status st;
  {
    auto session = ChunkSession::Begin(ledger->store());
    if (session.ok()) {
      Applier applier(ledger, options, &report, session->get());
      st = applier.Run(fd);
    } else {
      st = session.status();
    }
  }  // an uncommitted session reclaims its chunks here
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
