#include "hookfs/gc.h"

#include <set>
#include <sstream>
#include <unordered_set>

#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include "hookfs/ledger.h"
#include "hookfs/hash.h"
#include "hookfs/tree.h"

namespace hookfs {

using nlohmann::json;
using lmdb::Cursor;
using lmdb::Txn;

json GcReport::ToJson() const {
  return {{"releases", releases},           {"reachable_trees", reachable_trees},
          {"reachable_blobs", reachable_blobs}, {"trees_removed", trees_removed},
          {"blobs_removed", blobs_removed}, {"chunks_removed", chunks_removed},
          {"bytes_removed", bytes_removed}, {"orphan_chunks_removed", orphan_chunks_removed},
          {"spared", spared}};
}

std::string GcReport::Summary() const {
  std::ostringstream s;
  s << "gc: " << releases << " releases reach " << reachable_trees << " trees and " << reachable_blobs
    << " blobs; removed " << trees_removed << " trees, " << blobs_removed << " blobs (" << bytes_removed
    << " bytes, " << chunks_removed << " chunks) and " << orphan_chunks_removed << " orphan chunks";
  if (spared) s << "; spared " << spared << " objects a concurrent publish reached";
  s << "\n";
  return s.str();
}

namespace {

constexpr size_t kBatch = 512;


class Collector {
 public:
  Collector(Store* s, const GcOptions& o, GcReport* r) : s_(s), t_(s->tables()), o_(o), r_(r) {}

  Status Run() {
    // 1. Mark.
    std::vector<ObjectId> roots;
    HOOKFS_RETURN_IF_ERROR(Keys(t_.releases, true, [&](std::string_view k, std::string_view v) {
      marked_releases_.insert(std::string(k));
      auto rel = ledger_txn::DecodeReleaseRecord(v);
      if (!rel.ok()) return rel.status().Context("gc: release record");
      if (rel->pruned) return Status::OK();  // retention dropped it: its closure is garbage
      roots.push_back(rel->digest);
      return Status::OK();
    }));
    r_->releases = roots.size();
    for (const ObjectId& root : roots) HOOKFS_RETURN_IF_ERROR(MarkTree(root));
    // 2. Candidates.
    HOOKFS_RETURN_IF_ERROR(Keys(t_.trees, false, [&](std::string_view k, std::string_view) {
      if (k.size() == ObjectId::kSize && !trees_.count(ObjectId::FromBytes(k.data())))
        cand_trees_.push_back(ObjectId::FromBytes(k.data()));
      return Status::OK();
    }));
    HOOKFS_RETURN_IF_ERROR(Keys(t_.blobs, false, [&](std::string_view k, std::string_view) {
      if (k.size() == ObjectId::kSize && !blobs_.count(ObjectId::FromBytes(k.data())))
        cand_blobs_.push_back(ObjectId::FromBytes(k.data()));
      return Status::OK();
    }));
    HOOKFS_RETURN_IF_ERROR(OrphanChunks());
    r_->reachable_trees = trees_.size();
    r_->reachable_blobs = blobs_.size();
    // 3. Sweep.
    HOOKFS_RETURN_IF_ERROR(s_->Inject("gc_sweep"));
    return Sweep();
  }

 private:
  Status Keys(MDB_dbi dbi, bool values, const std::function<Status(std::string_view, std::string_view)>& fn) {
    return s_->ScanTable(dbi, values, kBatch, [&](const std::string& k, const std::string& v) { return fn(k, v); });
  }

  // Adds the closure of `root` to the reachable sets, reading each tree in
  // `txn` (the sweep's) or in a read txn of its own (the mark).
  Status Reach(const ObjectId& root, const Txn* txn) {
    std::vector<ObjectId> stack{root};
    while (!stack.empty()) {
      ObjectId id = stack.back();
      stack.pop_back();
      if (!trees_.insert(id).second) continue;
      Tree tree;
      {
        std::optional<ReadView> view;
        const Txn* in = txn;
        if (!in) {
          HOOKFS_ASSIGN_OR_RETURN(ReadView v, s_->Read());
          view.emplace(std::move(v));
          in = &view->txn();
        }
        auto rec = in->Get(t_.trees, id.AsKey());
        if (!rec.ok()) {
          // Missing: what it reaches is unknown, so nothing may be removed
          // (skipping it would sweep its whole closure). Issue 8d.
          if (rec.status().Is(Code::kNotFound))
            return Status::Corruption("gc: tree " + id.Hex() +
                                      " is reachable but missing from the store, so what it reaches is unknown; "
                                      "nothing removed (hookctl fsck names the releases; push a pack carrying it)");
          return rec.status();
        }
        auto bytes = TreeRecordBytes(*rec);
        auto decoded = bytes.ok() ? DecodeTree(*bytes) : Result<Tree>(bytes.status());
        if (!decoded.ok())
          return Status::Corruption("gc: tree " + id.Hex() +
                                    " is reachable but damaged, so what it reaches is unknown; nothing removed "
                                    "(heal it first: hookctl fsck --repair, then push a pack carrying it)");
        tree = std::move(decoded).value();
      }
      for (const TreeEntry& e : tree.entries) {
        if (e.IsDir()) stack.push_back(e.id);
        else if (e.IsFile()) blobs_.insert(e.id);
      }
      if (o_.progress && trees_.size() % 256 == 0) o_.progress("mark", trees_.size(), 0);
    }
    return Status::OK();
  }
  Status MarkTree(const ObjectId& root) { return Reach(root, nullptr); }

  Status OrphanChunks() {
    std::string seek;
    for (;;) {
      size_t seen = 0;
      bool more = false;
      {
        HOOKFS_ASSIGN_OR_RETURN(ReadView view, s_->Read());
        HOOKFS_ASSIGN_OR_RETURN(Cursor c, Cursor::Open(view.txn(), t_.chunks));
        HOOKFS_ASSIGN_OR_RETURN(more, seek.empty() ? c.First() : c.Seek(seek));
        while (more && seen < kBatch) {
          ++seen;
          if (c.key().size() < ObjectId::kSize) {
            seek = std::string(c.key()) + '\0';
          } else {
            ObjectId id = ObjectId::FromBytes(c.key().data());
            HOOKFS_ASSIGN_OR_RETURN(bool has_blob, view.txn().Has(t_.blobs, id.AsKey()));
            if (!has_blob) cand_orphans_.push_back(id);
            seek = std::string(id.AsKey()) + std::string(kChunkKeySize - ObjectId::kSize + 1, '\xff');
          }
          HOOKFS_ASSIGN_OR_RETURN(more, c.Seek(seek));
        }
      }
      if (!more) return Status::OK();
    }
  }

  Status Sweep() {
    HOOKFS_ASSIGN_OR_RETURN(Txn txn, s_->BeginWrite());
    // Releases committed since the mark may reach candidates (a thin pack
    // relied on them as stored): spare their closures.
    {
      const size_t trees_before = trees_.size(), blobs_before = blobs_.size();
      std::vector<ObjectId> fresh;
      HOOKFS_ASSIGN_OR_RETURN(Cursor c, Cursor::Open(txn, t_.releases));
      HOOKFS_ASSIGN_OR_RETURN(bool more, c.First());
      while (more) {
        if (!marked_releases_.count(std::string(c.key()))) {
          auto rel = ledger_txn::DecodeReleaseRecord(c.value());
          if (!rel.ok()) return rel.status().Context("gc: release record");
          if (!rel->pruned) fresh.push_back(rel->digest);
        }
        HOOKFS_ASSIGN_OR_RETURN(more, c.Next());
      }
      for (const ObjectId& root : fresh) HOOKFS_RETURN_IF_ERROR(Reach(root, &txn));
      if (trees_.size() != trees_before || blobs_.size() != blobs_before) {
        for (const ObjectId& id : cand_trees_) r_->spared += trees_.count(id);
        for (const ObjectId& id : cand_blobs_) r_->spared += blobs_.count(id);
      }
    }
    for (const ObjectId& id : cand_trees_) {
      if (trees_.count(id)) continue;
      HOOKFS_ASSIGN_OR_RETURN(bool have, txn.Has(t_.trees, id.AsKey()));
      if (!have) continue;
      HOOKFS_RETURN_IF_ERROR(txn.Del(t_.trees, id.AsKey()));
      ++r_->trees_removed;
    }
    for (const ObjectId& id : cand_blobs_) {
      if (blobs_.count(id)) continue;
      auto rec = txn.Get(t_.blobs, id.AsKey());
      if (!rec.ok()) {
        if (rec.status().Is(Code::kNotFound)) continue;
        return rec.status();
      }
      HOOKFS_ASSIGN_OR_RETURN(bool pending, BlobPending(t_, txn, id));
      if (pending) continue;  // an apply is rewriting it (healing)
      uint64_t size = rec->size() >= 8 ? lmdb::GetBE64(rec->data()) : 0;
      HOOKFS_RETURN_IF_ERROR(txn.Del(t_.blobs, id.AsKey()));
      HOOKFS_ASSIGN_OR_RETURN(uint64_t n, DeleteAllChunks(t_, txn, id));
      ++r_->blobs_removed;
      r_->chunks_removed += n;
      r_->bytes_removed += size;
    }
    for (const ObjectId& id : cand_orphans_) {
      HOOKFS_ASSIGN_OR_RETURN(bool has_blob, txn.Has(t_.blobs, id.AsKey()));
      if (has_blob) continue;
      HOOKFS_ASSIGN_OR_RETURN(bool pending, BlobPending(t_, txn, id));
      if (pending) continue;  // an apply in flight owns these chunks
      HOOKFS_ASSIGN_OR_RETURN(uint64_t n, DeleteAllChunks(t_, txn, id));
      r_->orphan_chunks_removed += n;
    }
    HOOKFS_RETURN_IF_ERROR(ledger_txn::AppendJournal(
        t_, txn,
        {{"event", "gc"}, {"time", FormatTime(NowMs() / 1000)}, {"uid", Actor::Current().uid},
         {"trees_removed", r_->trees_removed}, {"blobs_removed", r_->blobs_removed},
         {"bytes_removed", r_->bytes_removed}, {"orphan_chunks_removed", r_->orphan_chunks_removed}}));
    return txn.Commit().Context("gc sweep");
  }

  Store* s_;
  const Tables& t_;
  const GcOptions& o_;
  GcReport* r_;
  std::unordered_set<std::string> marked_releases_;
  std::unordered_set<ObjectId> trees_, blobs_;
  std::vector<ObjectId> cand_trees_, cand_blobs_, cand_orphans_;
};

}  // namespace

Result<GcReport> CollectGarbage(Store* store, const GcOptions& options) {
  GcReport report;
  Collector c(store, options, &report);
  HOOKFS_RETURN_IF_ERROR(c.Run());
  return report;
}

}  // namespace hookfs
