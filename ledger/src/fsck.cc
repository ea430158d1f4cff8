#include "hookfs/fsck.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <algorithm>
#include <map>
#include <set>
#include <sstream>
#include <unordered_map>
#include <unordered_set>

#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include "hookfs/hash.h"
#include "hookfs/release_times.h"

namespace hookfs {

using nlohmann::json;
using lmdb::Cursor;
using lmdb::Txn;

// ---- quarantine entries ---------------------------------------------------------

namespace quarantine {

std::string Encode(const Entry& e) {
  json rels = json::array();
  for (const auto& [hook, v] : e.releases) rels.push_back({{"hook", hook}, {"version", v}});
  return DumpJson(json{{"reason", e.reason}, {"releases", rels}, {"time", FormatTime(NowMs() / 1000)}});
}

Result<Entry> Decode(std::string_view bytes) {
  json j = json::parse(bytes, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return Status::Corruption("quarantine entry is not JSON");
  try {
    Entry e;
    e.reason = j.value("reason", std::string());
    for (const json& r : j.value("releases", json::array()))
      e.releases.emplace_back(r.at("hook").get<std::string>(), r.at("version").get<uint32_t>());
    return e;
  } catch (const std::exception& ex) {
    return Status::Corruption(std::string("quarantine entry: ") + ex.what());
  }
}

Status Heal(const Tables& t, Txn& txn, const std::vector<std::pair<char, ObjectId>>& healed,
            std::vector<std::string>* whole) {
  std::set<std::pair<std::string, uint32_t>> candidates;
  for (const auto& [kind, id] : healed) {
    const std::string key = QuarantineKey(kind, id);
    auto v = txn.Get(t.quarantine, key);
    if (!v.ok()) {
      if (v.status().Is(Code::kNotFound)) continue;
      return v.status();
    }
    auto e = Decode(*v);
    if (e.ok()) candidates.insert(e->releases.begin(), e->releases.end());
    HOOKFS_RETURN_IF_ERROR(txn.Del(t.quarantine, key));
  }
  if (candidates.empty()) return Status::OK();
  // A release stays damaged while any remaining entry lists it.
  HOOKFS_ASSIGN_OR_RETURN(Cursor c, Cursor::Open(txn, t.quarantine));
  HOOKFS_ASSIGN_OR_RETURN(bool more, c.First());
  while (more && !candidates.empty()) {
    auto e = Decode(c.value());
    if (e.ok())
      for (const auto& r : e->releases) candidates.erase(r);
    HOOKFS_ASSIGN_OR_RETURN(more, c.Next());
  }
  for (const auto& [hook, version] : candidates) {
    auto v = txn.Get(t.releases, ledger_txn::ReleaseKey(hook, version));
    if (!v.ok()) continue;
    auto rel = ledger_txn::DecodeReleaseRecord(*v);
    if (!rel.ok() || !rel->damaged) continue;
    rel->damaged = false;
    HOOKFS_RETURN_IF_ERROR(ledger_txn::PutRelease(t, txn, *rel));
    if (whole) whole->push_back(hook + "/" + std::to_string(version));
  }
  return Status::OK();
}

}  // namespace quarantine

// ---- report -----------------------------------------------------------------------

size_t FsckReport::damage() const {
  size_t n = 0;
  for (const FsckProblem& p : problems) n += !p.garbage && !p.fixed;
  return n;
}

json FsckReport::ToJson() const {
  json probs = json::array();
  for (const FsckProblem& p : problems)
    probs.push_back({{"kind", p.kind}, {"object", p.object}, {"what", p.what}, {"releases", p.releases},
                     {"garbage", p.garbage}, {"fixed", p.fixed}});
  json j = {{"clean", clean()},
            {"counts",
             {{"blobs", blobs}, {"chunks", chunks}, {"bytes", bytes}, {"trees", trees}, {"hooks", hooks},
              {"releases", releases}, {"pointers", pointers}, {"history", history}, {"runs", runs},
              {"journal", journal}}},
            {"problems", probs},
            {"damaged_releases", damaged_releases}};
  if (repaired)
    j["repair"] = {{"quarantined", quarantined}, {"unquarantined", unquarantined},
                   {"marked_damaged", marked_damaged}, {"marked_whole", marked_whole},
                   {"digests_rebuilt", digests_rebuilt}, {"chunks_deleted", chunks_deleted},
                   {"releases_fixed", releases_fixed}};
  return SafeJson(j);
}

std::string FsckReport::Summary() const {
  std::ostringstream s;
  s << "checked " << blobs << " blobs (" << bytes << " bytes in " << chunks << " chunks), " << trees << " trees, "
    << hooks << " hooks, " << releases << " releases, " << pointers << " pointers, " << history
    << " history lines, " << runs << " runs, " << journal << " journal lines\n";
  for (const FsckProblem& p : problems) {
    s << (p.fixed ? "fixed   " : p.garbage ? "garbage " : "DAMAGED ") << p.kind << " " << p.object << ": " << p.what;
    if (!p.releases.empty()) {
      s << "; reached by";
      for (const std::string& r : p.releases) s << " " << r;
    } else if (p.kind == "blob" || p.kind == "tree") {
      s << "; no release reaches it";
    }
    s << "\n";
  }
  if (!damaged_releases.empty()) {
    s << "damaged releases:";
    for (const std::string& r : damaged_releases) s << " " << r;
    s << "\n";
  }
  if (repaired)
    s << "repair: quarantined " << quarantined << " objects, lifted " << unquarantined << ", marked "
      << marked_damaged << " releases damaged and " << marked_whole << " whole, fixed " << releases_fixed
      << " release records, rebuilt " << digests_rebuilt << " digest entries, deleted " << chunks_deleted
      << " stray chunks\n";
  if (clean()) s << "clean\n";
  else
    s << damage() << " problem(s) found" << (repaired ? "; push a pack carrying the damaged objects to heal them" : "")
      << "\n";
  return s.str();
}

// ---- the checker ------------------------------------------------------------------

namespace {

constexpr size_t kBatch = 512;              // records per read txn
constexpr uint32_t kChunksPerTxn = 256;     // 64 MiB of chunks per read txn
constexpr size_t kWriteBatch = 1024;        // puts/deletes per repair txn
// The depth limit apply enforces below a release root (tree.h), so that fsck
// and apply agree on what is too deep.
constexpr size_t kMaxWalkDepth = Limits::kMaxDepth;

bool HasPrefix(std::string_view s, std::string_view p) { return s.substr(0, p.size()) == p; }

struct TreeMemo {
  std::vector<std::string> bad;  // quarantine keys of damaged objects reached (incl. itself)
  uint64_t files = 0, bytes = 0;
};

struct ReleaseRow {
  std::string key;
  ReleaseInfo info;
  bool want_damaged = false;
  bool fix_stats = false;
  uint64_t files = 0, bytes = 0;
};

class Checker {
 public:
  Checker(Store* s, const FsckOptions& o, FsckReport* r) : s_(s), t_(s->tables()), o_(o), r_(r) {}

  Status Run() {
    HOOKFS_RETURN_IF_ERROR(CheckMeta());
    HOOKFS_RETURN_IF_ERROR(CheckBlobs());
    HOOKFS_RETURN_IF_ERROR(CheckChunks());
    HOOKFS_RETURN_IF_ERROR(CheckHooks());
    HOOKFS_RETURN_IF_ERROR(CheckReleases());
    HOOKFS_RETURN_IF_ERROR(CheckTimes());
    HOOKFS_RETURN_IF_ERROR(CheckUnreachedTrees());
    HOOKFS_RETURN_IF_ERROR(CheckDigests());
    HOOKFS_RETURN_IF_ERROR(CheckPointers());
    HOOKFS_RETURN_IF_ERROR(CheckHistory());
    HOOKFS_RETURN_IF_ERROR(CheckRuns());
    HOOKFS_RETURN_IF_ERROR(CheckJournal());
    HOOKFS_RETURN_IF_ERROR(CheckPending());
    HOOKFS_RETURN_IF_ERROR(CheckQuarantine());
    for (auto& p : r_->problems) {
      std::sort(p.releases.begin(), p.releases.end());
      p.releases.erase(std::unique(p.releases.begin(), p.releases.end()), p.releases.end());
    }
    std::sort(r_->damaged_releases.begin(), r_->damaged_releases.end());
    if (o_.repair) HOOKFS_RETURN_IF_ERROR(Repair());
    return Status::OK();
  }

 private:
  void Problem(std::string kind, std::string object, std::string what, bool garbage = false) {
    r_->problems.push_back({std::move(kind), std::move(object), std::move(what), {}, garbage, false});
  }
  // A problem that repair fixes for good (derived records, stale marks).
  void Fixable(std::string kind, std::string object, std::string what) {
    fixable_.push_back(r_->problems.size());
    Problem(std::move(kind), std::move(object), std::move(what));
  }
  // Records a damaged (or missing) object once; returns its quarantine key.
  std::string Bad(char kind, const ObjectId& id, std::string what) {
    std::string key = QuarantineKey(kind, id);
    if (!bad_.count(key)) {
      bad_[key] = r_->problems.size();
      Problem(kind == 'b' ? "blob" : "tree", id.Hex(), std::move(what));
    }
    return key;
  }
  void Progress(std::string_view phase, uint64_t done, uint64_t total) {
    if (o_.progress) o_.progress(phase, done, total);
  }

  Status ForEach(MDB_dbi dbi, bool values,
                 const std::function<Status(const std::string& k, const std::string& v)>& fn) {
    return s_->ScanTable(dbi, values, kBatch, fn);
  }

  Status CheckMeta() {
    HOOKFS_ASSIGN_OR_RETURN(ReadView view, s_->Read());
    auto v = view.txn().Get(t_.meta, "format_version");
    if (!v.ok() || v->size() != 4 || lmdb::GetBE32(v->data()) != kStoreFormatVersion)
      Problem("meta", "format_version", "missing or not " + std::to_string(kStoreFormatVersion));
    return Status::OK();
  }

  // ---- objects ----

  Status CheckBlobs() {
    std::vector<ObjectId> ids;
    uint64_t total = 0;
    HOOKFS_RETURN_IF_ERROR(ForEach(t_.blobs, true, [&](const std::string& k, const std::string& v) {
      if (k.size() != ObjectId::kSize) {
        Problem("blob", "key of " + std::to_string(k.size()) + " bytes", "blob key is not an id");
        return Status::OK();
      }
      ids.push_back(ObjectId::FromBytes(k.data()));
      if (v.size() >= 8) total += lmdb::GetBE64(v.data());
      return Status::OK();
    }));
    total_bytes_ = total;
    for (const ObjectId& id : ids) HOOKFS_RETURN_IF_ERROR(VerifyBlob(id));
    return Status::OK();
  }

  Status VerifyBlob(const ObjectId& id) {
    std::string rec;
    BlobInfo info;
    Sha256 sha;
    uint32_t idx = 0;
    bool first = true;
    for (;;) {
      HOOKFS_ASSIGN_OR_RETURN(ReadView view, s_->Read());
      auto cur = view.txn().Get(t_.blobs, id.AsKey());
      if (!cur.ok()) {
        if (cur.status().Is(Code::kNotFound)) return Status::OK();  // removed meanwhile (gc)
        return cur.status();
      }
      if (first) {
        rec = std::string(*cur);
        auto decoded = DecodeBlobInfo(rec);
        if (!decoded.ok()) {
          Bad('b', id, "record: " + decoded.status().message());
          return Status::OK();
        }
        info = *decoded;
        ++r_->blobs;
        if (info.flags & kBlobQuarantined) flagged_.insert(id);
        first = false;
      } else if (*cur != rec) {
        return Status::OK();  // rewritten meanwhile (healed): the writer verified it
      }
      for (uint32_t n = 0; idx < info.chunk_count && n < kChunksPerTxn; ++idx, ++n) {
        const size_t want = size_t(std::min<uint64_t>(kChunkSize, info.size - uint64_t(idx) * kChunkSize));
        auto chunk = view.txn().Get(t_.chunks, ChunkKey(id, info.writer, idx));
        if (!chunk.ok()) {
          if (!chunk.status().Is(Code::kNotFound)) return chunk.status();
          Bad('b', id, "chunk " + std::to_string(idx) + " missing");
          return Status::OK();
        }
        if (chunk->size() != want) {
          Bad('b', id, "chunk " + std::to_string(idx) + " has " + std::to_string(chunk->size()) +
                           " bytes, expected " + std::to_string(want));
          return Status::OK();
        }
        if (Xxh3_64(chunk->data(), chunk->size()) != BlobRecordChunkXxh3(rec, uint32_t(idx))) {
          Bad('b', id, "chunk " + std::to_string(idx) + " checksum mismatch");
          return Status::OK();
        }
        sha.Update(chunk->data(), chunk->size());
        ++r_->chunks;
        r_->bytes += want;
        Progress("blobs", r_->bytes, total_bytes_);
      }
      if (idx < info.chunk_count) continue;  // next read txn
      // Chunks of this blob the record does not use (beyond its size, or of
      // another writer that no apply in flight owns) are leftovers.
      HOOKFS_ASSIGN_OR_RETURN(Cursor c, Cursor::Open(view.txn(), t_.chunks));
      HOOKFS_ASSIGN_OR_RETURN(bool found, c.Seek(id.AsKey()));
      std::vector<std::string> extra;
      while (found && HasPrefix(c.key(), id.AsKey())) {
        const std::string_view k = c.key();
        const uint64_t w = k.size() == kChunkKeySize ? lmdb::GetBE64(k.data() + ObjectId::kSize) : 0;
        const uint32_t i = k.size() == kChunkKeySize ? lmdb::GetBE32(k.data() + ObjectId::kSize + 8) : 0;
        bool used = k.size() == kChunkKeySize && w == info.writer && i < info.chunk_count;
        if (!used && k.size() == kChunkKeySize && w != info.writer) {
          HOOKFS_ASSIGN_OR_RETURN(used, view.txn().Has(t_.pending_blob, PendingBlobKey(id, SessionName(w))));  // an apply in flight
        }
        if (!used) extra.emplace_back(k);
        HOOKFS_ASSIGN_OR_RETURN(found, c.Next());
      }
      if (!extra.empty()) {
        Problem("chunk", id.Hex(), std::to_string(extra.size()) + " chunk(s) the blob's record does not use", true);
        for (auto& k : extra) extra_chunks_.push_back(std::move(k));
      }
      break;
    }
    ObjectId got = sha.Finish();
    if (got != id) Bad('b', id, "content hashes to " + got.Hex());
    return Status::OK();
  }

  // Chunks whose blob has no record and no apply in flight: orphans.
  Status CheckChunks() {
    std::string seek;
    for (;;) {
      std::vector<ObjectId> orphans;
      size_t seen = 0;
      {
        HOOKFS_ASSIGN_OR_RETURN(ReadView view, s_->Read());
        HOOKFS_ASSIGN_OR_RETURN(Cursor c, Cursor::Open(view.txn(), t_.chunks));
        HOOKFS_ASSIGN_OR_RETURN(bool more, seek.empty() ? c.First() : c.Seek(seek));
        while (more && seen < kBatch) {
          ++seen;
          if (c.key().size() != kChunkKeySize) {
            Problem("chunk", "key of " + std::to_string(c.key().size()) + " bytes", "chunk key is malformed");
            seek = std::string(c.key()) + '\0';
            HOOKFS_ASSIGN_OR_RETURN(more, c.Seek(seek));
            continue;
          }
          ObjectId id = ObjectId::FromBytes(c.key().data());
          HOOKFS_ASSIGN_OR_RETURN(bool has_blob, view.txn().Has(t_.blobs, id.AsKey()));
          if (!has_blob) {
            HOOKFS_ASSIGN_OR_RETURN(Cursor p, Cursor::Open(view.txn(), t_.pending_blob));
            HOOKFS_ASSIGN_OR_RETURN(bool f, p.Seek(id.AsKey()));
            if (!(f && HasPrefix(p.key(), id.AsKey()))) orphans.push_back(id);
          }
          seek = std::string(id.AsKey()) + std::string(kChunkKeySize - ObjectId::kSize + 1, '\xff');  // past every chunk of this id
          HOOKFS_ASSIGN_OR_RETURN(more, c.Seek(seek));
        }
        if (!more) seen = 0;
      }
      for (const ObjectId& id : orphans) {
        Problem("chunk", id.Hex(), "chunks of a blob that has no record and no apply in flight", true);
        orphan_chunks_.push_back(id);
      }
      if (seen == 0) return Status::OK();
    }
  }

  Result<const TreeMemo*> VisitTree(const ObjectId& id, int depth) {
    if (auto it = memo_.find(id); it != memo_.end()) return &it->second;
    TreeMemo m;
    Tree tree;
    bool ok = false;
    {
      HOOKFS_ASSIGN_OR_RETURN(ReadView view, s_->Read());
      auto rec = view.txn().Get(t_.trees, id.AsKey());
      if (!rec.ok()) {
        if (!rec.status().Is(Code::kNotFound)) return rec.status();
        m.bad.push_back(Bad('t', id, "missing"));
      } else if (auto checked = TreeRecordBytes(*rec); !checked.ok() && rec->size() < 8) {
        m.bad.push_back(Bad('t', id, checked.status().message()));
      } else {
        ++r_->trees;
        std::string_view bytes = checked.ok() ? *checked : std::string_view();
        auto decoded = DecodeTree(bytes);
        if (!checked.ok()) {
          m.bad.push_back(Bad('t', id, checked.status().message()));
        } else if (!decoded.ok()) {
          m.bad.push_back(Bad('t', id, "not canonical: " + decoded.status().message()));
        } else if (ObjectId got = Sha256::Of(bytes); got != id) {
          m.bad.push_back(Bad('t', id, "hashes to " + got.Hex()));
        } else {
          ok = true;
          tree = std::move(decoded).value();
          for (const TreeEntry& e : tree.entries) {
            if (!e.IsFile()) continue;
            ++m.files;
            m.bytes += e.size;
            auto brec = view.txn().Get(t_.blobs, e.id.AsKey());
            if (!brec.ok()) {
              if (!brec.status().Is(Code::kNotFound)) return brec.status();
              m.bad.push_back(Bad('b', e.id, "missing (named '" + e.name + "' in tree " + id.Hex() + ")"));
              continue;
            }
            std::string bkey = QuarantineKey('b', e.id);
            if (bad_.count(bkey)) m.bad.push_back(bkey);
            auto info = DecodeBlobInfo(*brec);
            if (info.ok() && info->size != e.size)
              m.bad.push_back(Bad('t', id, "entry '" + e.name + "' says " + std::to_string(e.size) +
                                               " bytes, its blob has " + std::to_string(info->size)));
          }
        }
      }
    }
    if (ok) {
      for (const TreeEntry& e : tree.entries) {
        if (!e.IsDir()) continue;
        if (size_t(depth) >= kMaxWalkDepth) {
          m.bad.push_back(Bad('t', id, "nested deeper than " + std::to_string(kMaxWalkDepth) + " levels"));
          break;
        }
        HOOKFS_ASSIGN_OR_RETURN(const TreeMemo* child, VisitTree(e.id, depth + 1));
        m.bad.insert(m.bad.end(), child->bad.begin(), child->bad.end());
        m.files += child->files;
        m.bytes += child->bytes;
      }
      if (++trees_done_ % 64 == 0) Progress("trees", trees_done_, 0);
    }
    std::sort(m.bad.begin(), m.bad.end());
    m.bad.erase(std::unique(m.bad.begin(), m.bad.end()), m.bad.end());
    return &(memo_[id] = std::move(m));
  }

  Status CheckUnreachedTrees() {
    std::vector<ObjectId> ids;
    HOOKFS_RETURN_IF_ERROR(ForEach(t_.trees, false, [&](const std::string& k, const std::string&) {
      if (k.size() != ObjectId::kSize) {
        Problem("tree", "key of " + std::to_string(k.size()) + " bytes", "tree key is not an id");
        return Status::OK();
      }
      ObjectId id = ObjectId::FromBytes(k.data());
      if (!memo_.count(id)) ids.push_back(id);
      return Status::OK();
    }));
    for (const ObjectId& id : ids) {
      auto m = VisitTree(id, 0);
      if (!m.ok()) return m.status();
    }
    return Status::OK();
  }

  // ---- ledger ----

  Status CheckHooks() {
    return ForEach(t_.hooks, true, [&](const std::string& k, const std::string& v) {
      ++r_->hooks;
      auto h = ledger_txn::DecodeHookRecord(v);
      if (!h.ok()) {
        Problem("hook", k, h.status().message());
      } else if (h->name != k || !ValidateHookName(k).ok() || !ValidateFeature(h->feature).ok()) {
        Problem("hook", k, "record names '" + h->name + "' with feature '" + h->feature + "'");
      }
      hooks_.insert(k);
      return Status::OK();
    });
  }

  Status CheckReleases() {
    std::map<std::string, std::vector<uint32_t>> versions;
    HOOKFS_RETURN_IF_ERROR(ForEach(t_.releases, true, [&](const std::string& k, const std::string& v) {
      ++r_->releases;
      auto nul = k.find('\0');
      std::string hook = k.substr(0, nul);
      if (nul == std::string::npos || k.size() != nul + 5) {
        Problem("release", hook, "malformed release key");
        return Status::OK();
      }
      uint32_t version = lmdb::GetBE32(k.data() + nul + 1);
      const std::string name = hook + "/" + std::to_string(version);
      versions[hook].push_back(version);
      auto rel = ledger_txn::DecodeReleaseRecord(v);
      if (!rel.ok()) {
        Problem("release", name, rel.status().message());
        return Status::OK();
      }
      if (rel->hook != hook || rel->version != version) {
        Problem("release", name, "record says " + rel->hook + "/" + std::to_string(rel->version));
        return Status::OK();
      }
      if (!hooks_.count(hook)) Problem("release", name, "its hook has no record");
      release_digests_[{hook, version}] = rel->digest;
      // Retention dropped a pruned release's files on purpose: not damage,
      // and out of the digest index (its content may be a later version).
      if (rel->pruned) {
        pruned_.insert({hook, version});
        return Status::OK();
      }
      ReleaseRow row{k, *rel};
      HOOKFS_ASSIGN_OR_RETURN(const TreeMemo* m, VisitTree(rel->digest, 0));
      for (const std::string& b : m->bad) {
        r_->problems[bad_.at(b)].releases.push_back(name);
        bad_releases_[b].emplace_back(hook, version);
      }
      row.want_damaged = !m->bad.empty();
      if (row.want_damaged) r_->damaged_releases.push_back(name);
      if (rel->damaged && !row.want_damaged)
        Fixable("release", name, "marked damaged but its closure is whole (repair clears the mark)");
      if (!row.want_damaged && (rel->files != m->files || rel->bytes != m->bytes)) {
        Fixable("release", name,
                "record says " + std::to_string(rel->files) + " files, " + std::to_string(rel->bytes) +
                    " bytes; its tree has " + std::to_string(m->files) + ", " + std::to_string(m->bytes));
        row.fix_stats = true;
        row.files = m->files;
        row.bytes = m->bytes;
      }
      auto [it, fresh] = first_digest_.try_emplace(ledger_txn::HookPrefix(hook) + std::string(rel->digest.AsKey()),
                                                   version);
      if (!fresh) Problem("release", name, "same digest as " + hook + "/" + std::to_string(it->second));
      rows_.push_back(std::move(row));
      return Status::OK();
    }));
    for (const auto& [hook, vs] : versions)
      for (size_t i = 0; i < vs.size(); ++i)
        if (vs[i] != i + 1) {
          Problem("release", hook, "versions are not 1.." + std::to_string(vs.size()) + " without gaps (" +
                                       std::to_string(vs[i]) + " at position " + std::to_string(i + 1) + ")");
          break;
        }
    return Status::OK();
  }

  // The times table (release_times.h): one value per existing release, whose
  // count and tree table fit its tree. Repair drops orphans and bad values
  // (the files then show the commit time): times are metadata, not content.
  Status CheckTimes() {
    std::set<std::string> damaged(r_->damaged_releases.begin(), r_->damaged_releases.end());
    PathCounter paths([&](const ObjectId& id, Tree* scratch) -> Result<const Tree*> {
      HOOKFS_ASSIGN_OR_RETURN(ReadView view, s_->Read());
      HOOKFS_ASSIGN_OR_RETURN(*scratch, view.GetTree(id));
      return scratch;
    });
    return ForEach(t_.times, true, [&](const std::string& k, const std::string& v) {
      auto nul = k.find('\0');
      std::string hook = k.substr(0, nul);
      if (nul == std::string::npos || k.size() != nul + 5) {
        Fixable("times", hook, "malformed times key");
        bad_times_.push_back(k);
        return Status::OK();
      }
      uint32_t version = lmdb::GetBE32(k.data() + nul + 1);
      const std::string name = hook + "/" + std::to_string(version);
      auto rel = release_digests_.find({hook, version});
      if (rel == release_digests_.end()) {
        Fixable("times", name, "times of a release that does not exist");
        bad_times_.push_back(k);
        return Status::OK();
      }
      if (damaged.count(name)) return Status::OK();  // its trees' damage is reported already
      auto problem = CheckReleaseTimes(&paths, rel->second, v);
      if (!problem.ok()) {
        if (problem.status().Is(Code::kCorruption) || problem.status().Is(Code::kNotFound)) return Status::OK();
        return problem.status();
      }
      if (!problem->empty()) {
        Fixable("times", name, *problem + " (repair drops them: the files show the commit time)");
        bad_times_.push_back(k);
      }
      return Status::OK();
    });
  }

  Status CheckDigests() {
    std::map<std::string, uint32_t> expect(first_digest_.begin(), first_digest_.end());
    HOOKFS_RETURN_IF_ERROR(ForEach(t_.digests, true, [&](const std::string& k, const std::string& v) {
      auto it = expect.find(k);
      std::string name = k.substr(0, k.find('\0'));
      if (it == expect.end()) {
        Fixable("digests", name, "index entry for a digest no release has");
        digests_bad_ = true;
      } else {
        if (v.size() != 4 || lmdb::GetBE32(v.data()) != it->second) {
          Fixable("digests", name + "/" + std::to_string(it->second), "index entry points elsewhere");
          digests_bad_ = true;
        }
        expect.erase(it);
      }
      return Status::OK();
    }));
    for (const auto& [k, v] : expect) {
      Fixable("digests", k.substr(0, k.find('\0')) + "/" + std::to_string(v), "release missing from the digest index");
      digests_bad_ = true;
    }
    return Status::OK();
  }

  Status CheckPointers() {
    return ForEach(t_.pointers, true, [&](const std::string& k, const std::string& v) {
      ++r_->pointers;
      auto nul = k.find('\0');
      std::string hook = k.substr(0, nul), pointer = nul == std::string::npos ? "" : k.substr(nul + 1);
      if (v.size() != 4) {
        Problem("pointer", hook + " " + pointer, "value is not a version");
        return Status::OK();
      }
      uint32_t to = lmdb::GetBE32(v.data());
      pointers_[{hook, pointer}] = to;
      if (!hooks_.count(hook)) Problem("pointer", hook + " " + pointer, "its hook has no record");
      if (pointer != "live" && !(HasPrefix(pointer, "tags/") && ValidateTagName(pointer.substr(5)).ok()))
        Problem("pointer", hook + " " + pointer, "unknown pointer name");
      if (!release_digests_.count({hook, to}))
        Problem("pointer", hook + " " + pointer, "points to release " + std::to_string(to) + ", which does not exist");
      else if (pruned_.count({hook, to}))
        Problem("pointer", hook + " " + pointer, "points to release " + std::to_string(to) + ", which was pruned");
      return Status::OK();
    });
  }

  Status CheckHistory() {
    std::map<std::string, uint64_t> last_seq;
    std::map<std::pair<std::string, std::string>, uint32_t> last_to;
    HOOKFS_RETURN_IF_ERROR(ForEach(t_.history, true, [&](const std::string& k, const std::string& v) {
      ++r_->history;
      auto nul = k.find('\0');
      std::string hook = k.substr(0, nul);
      if (nul == std::string::npos || k.size() != nul + 9) {
        Problem("history", hook, "malformed history key");
        return Status::OK();
      }
      uint64_t seq = lmdb::GetBE64(k.data() + nul + 1);
      uint64_t& prev = last_seq[hook];
      if (seq != prev + 1) Problem("history", hook, "line " + std::to_string(seq) + " follows " + std::to_string(prev));
      prev = seq;
      auto m = ledger_txn::DecodeHistoryRecord(v);
      if (!m.ok()) {
        Problem("history", hook + " #" + std::to_string(seq), m.status().message());
        return Status::OK();
      }
      if (m->seq != seq) Problem("history", hook + " #" + std::to_string(seq), "record says #" + std::to_string(m->seq));
      last_to[{hook, m->pointer}] = m->to;
      return Status::OK();
    }));
    for (const auto& [key, to] : last_to) {
      auto it = pointers_.find(key);
      uint32_t now = it == pointers_.end() ? 0 : it->second;
      if (now != to)
        Problem("history", key.first + " " + key.second,
                "last move went to " + std::to_string(to) + " but the pointer is at " + std::to_string(now));
    }
    for (const auto& [key, to] : pointers_)
      if (!last_to.count(key))
        Problem("history", key.first + " " + key.second, "pointer at " + std::to_string(to) + " has no history");
    return Status::OK();
  }

  Status CheckRuns() {
    return ForEach(t_.runs, true, [&](const std::string& k, const std::string& v) {
      ++r_->runs;
      auto nul = k.find('\0');
      std::string hook = k.substr(0, nul), run = nul == std::string::npos ? "" : k.substr(nul + 1);
      auto r = ledger_txn::DecodeRunRecord(v);
      if (!r.ok()) {
        Problem("run", hook + " " + run, r.status().message());
        return Status::OK();
      }
      if (r->hook != hook || r->run != run) Problem("run", hook + " " + run, "record names " + r->hook + " " + r->run);
      auto rel = release_digests_.find({hook, r->version});
      if (rel == release_digests_.end())
        Problem("run", hook + " " + run, "pinned to release " + std::to_string(r->version) + ", which does not exist");
      else if (rel->second != r->digest)
        Problem("run", hook + " " + run, "digest differs from its release's");
      return Status::OK();
    });
  }

  Status CheckJournal() {
    uint64_t prev = 0;
    return ForEach(t_.journal, true, [&](const std::string& k, const std::string& v) {
      ++r_->journal;
      if (k.size() != 8) {
        Problem("journal", "key of " + std::to_string(k.size()) + " bytes", "malformed journal key");
        return Status::OK();
      }
      uint64_t seq = lmdb::GetBE64(k.data());
      if (seq != prev + 1) Problem("journal", std::to_string(seq), "follows " + std::to_string(prev));
      prev = seq;
      json j = json::parse(v, nullptr, false);
      if (j.is_discarded() || !j.is_object() || !j.contains("seq") || j["seq"] != seq)
        Problem("journal", std::to_string(seq), "line is not a JSON event with its seq");
      return Status::OK();
    });
  }

  Status CheckPending() {
    std::set<std::string> sessions;
    HOOKFS_RETURN_IF_ERROR(ForEach(t_.pending_session, true, [&](const std::string& k, const std::string&) {
      if (k.size() <= ObjectId::kSize) {
        Problem("pending", "session key", "malformed pending key");
        return Status::OK();
      }
      sessions.insert(k.substr(0, k.size() - ObjectId::kSize));
      return Status::OK();
    }));
    for (const std::string& s : sessions) {
      std::string lock = s_->staging_dir() + "/session-" + s + ".lock";
      int fd = ::open(lock.c_str(), O_RDONLY | O_CLOEXEC);
      bool alive = fd >= 0 && ::flock(fd, LOCK_SH | LOCK_NB) != 0;
      if (fd >= 0) ::close(fd);
      if (!alive) {
        Problem("pending", "session " + s, "chunks of an abandoned apply (reclaimed at the next open)", true);
        abandoned_ = true;
      }
    }
    return Status::OK();
  }

  Status CheckQuarantine() {
    return ForEach(t_.quarantine, true, [&](const std::string& k, const std::string& v) {
      if (k.size() != 1 + ObjectId::kSize || (k[0] != 'b' && k[0] != 't')) {
        Problem("quarantine", "key", "malformed quarantine key");
        return Status::OK();
      }
      ObjectId id = ObjectId::FromBytes(k.data() + 1);
      if (!bad_.count(k)) {
        Fixable("quarantine", id.Hex(), "quarantined but verifies now (repair lifts the quarantine)");
        stale_quarantine_.push_back(k);
      } else if (!quarantine::Decode(v).ok()) {
        Problem("quarantine", id.Hex(), "entry does not decode");
      }
      return Status::OK();
    });
  }

  // ---- repair ----

  // Applies `ops` in write txns of kWriteBatch operations each.
  Status InBatches(size_t n, const std::function<Status(Txn&, size_t)>& op) {
    for (size_t i = 0; i < n;) {
      HOOKFS_ASSIGN_OR_RETURN(Txn txn, s_->BeginWrite());
      for (size_t k = 0; k < kWriteBatch && i < n; ++k, ++i) HOOKFS_RETURN_IF_ERROR(op(txn, i));
      HOOKFS_RETURN_IF_ERROR(txn.Commit().Context("repair"));
    }
    return Status::OK();
  }

  Status SetBlobFlag(Txn& txn, const ObjectId& id, bool on) {
    auto rec = txn.Get(t_.blobs, id.AsKey());
    if (!rec.ok()) return rec.status().Is(Code::kNotFound) ? Status::OK() : rec.status();
    if (rec->size() < 16) return Status::OK();
    uint32_t flags = lmdb::GetBE32(rec->data() + 12);
    uint32_t want = on ? (flags | kBlobQuarantined) : (flags & ~kBlobQuarantined);
    if (want == flags) return Status::OK();
    std::string updated = WithBlobFlags(*rec, want);
    return txn.Put(t_.blobs, id.AsKey(), updated);
  }

  Status Repair() {
    if (!s_->exclusive()) return Status::InvalidArgument("repair needs a store opened exclusively");
    // Quarantine every damaged object, listing the releases that reach it.
    std::vector<std::string> keys;
    for (const auto& [k, idx] : bad_) keys.push_back(k);
    std::sort(keys.begin(), keys.end());
    HOOKFS_RETURN_IF_ERROR(InBatches(keys.size(), [&](Txn& txn, size_t i) {
      const std::string& k = keys[i];
      ObjectId id = ObjectId::FromBytes(k.data() + 1);
      quarantine::Entry e;
      e.reason = r_->problems[bad_[k]].what;
      e.releases = bad_releases_[k];
      std::sort(e.releases.begin(), e.releases.end());
      HOOKFS_ASSIGN_OR_RETURN(bool had, txn.Has(t_.quarantine, k));
      r_->quarantined += !had;
      HOOKFS_RETURN_IF_ERROR(txn.Put(t_.quarantine, k, quarantine::Encode(e)));
      if (k[0] == 'b') HOOKFS_RETURN_IF_ERROR(SetBlobFlag(txn, id, true));
      return Status::OK();
    }));
    // Lift quarantine from what verifies again.
    std::vector<std::pair<char, ObjectId>> lift;
    for (const std::string& k : stale_quarantine_) lift.emplace_back(k[0], ObjectId::FromBytes(k.data() + 1));
    for (const ObjectId& id : flagged_)
      if (!bad_.count(QuarantineKey('b', id))) lift.emplace_back('b', id);
    HOOKFS_RETURN_IF_ERROR(InBatches(lift.size(), [&](Txn& txn, size_t i) {
      const auto& [kind, id] = lift[i];
      HOOKFS_RETURN_IF_ERROR(txn.Del(t_.quarantine, QuarantineKey(kind, id)));
      if (kind == 'b') HOOKFS_RETURN_IF_ERROR(SetBlobFlag(txn, id, false));
      ++r_->unquarantined;
      return Status::OK();
    }));
    // Releases: damaged exactly when their closure reaches damage.
    std::vector<const ReleaseRow*> change;
    for (const ReleaseRow& row : rows_)
      if (row.info.damaged != row.want_damaged || row.fix_stats) change.push_back(&row);
    HOOKFS_RETURN_IF_ERROR(InBatches(change.size(), [&](Txn& txn, size_t i) {
      ReleaseInfo info = change[i]->info;
      if (info.damaged != change[i]->want_damaged) (change[i]->want_damaged ? r_->marked_damaged : r_->marked_whole)++;
      info.damaged = change[i]->want_damaged;
      if (change[i]->fix_stats) {
        info.files = change[i]->files;
        info.bytes = change[i]->bytes;
        ++r_->releases_fixed;
      }
      return ledger_txn::PutRelease(t_, txn, info);
    }));
    // The digests index is derived: rebuild it from the releases, in one txn
    // (a crash between emptying and refilling it would disable duplicate
    // detection; issue 8g).
    if (digests_bad_) {
      HOOKFS_ASSIGN_OR_RETURN(Txn txn, s_->BeginWrite());
      HOOKFS_RETURN_IF_ERROR(lmdb::LmdbStatus(mdb_drop(txn.get(), t_.digests, 0), "empty the digest index"));
      uint64_t rebuilt = 0;
      for (const auto& [key, version] : first_digest_) {
        std::string v;
        lmdb::PutBE32(&v, version);
        HOOKFS_RETURN_IF_ERROR(txn.Put(t_.digests, key, v));
        ++rebuilt;
      }
      HOOKFS_RETURN_IF_ERROR(s_->Inject("repair_digests"));
      HOOKFS_RETURN_IF_ERROR(txn.Commit().Context("repair: rebuild the digest index"));
      r_->digests_rebuilt += rebuilt;
    }
    // Stray chunks: beyond a blob's size, or of no blob and no apply in flight.
    HOOKFS_RETURN_IF_ERROR(InBatches(extra_chunks_.size() + orphan_chunks_.size(), [&](Txn& txn, size_t i) {
      if (i < extra_chunks_.size()) {
        HOOKFS_RETURN_IF_ERROR(txn.Del(t_.chunks, extra_chunks_[i]));
        ++r_->chunks_deleted;
        return Status::OK();
      }
      ObjectId id;
      {
        id = orphan_chunks_[i - extra_chunks_.size()];
        HOOKFS_ASSIGN_OR_RETURN(bool has_blob, txn.Has(t_.blobs, id.AsKey()));
        if (has_blob) return Status::OK();
        HOOKFS_ASSIGN_OR_RETURN(bool pending, BlobPending(t_, txn, id));
        if (pending) return Status::OK();  // an apply in flight owns these chunks
      }
      HOOKFS_ASSIGN_OR_RETURN(uint64_t n, DeleteAllChunks(t_, txn, id));
      r_->chunks_deleted += n;
      return Status::OK();
    }));
    HOOKFS_RETURN_IF_ERROR(InBatches(bad_times_.size(), [&](Txn& txn, size_t i) { return txn.Del(t_.times, bad_times_[i]); }));
    if (abandoned_) HOOKFS_RETURN_IF_ERROR(s_->ReclaimAbandoned());
    // Problems repair fixed for good are no longer damage.
    for (size_t i : fixable_) r_->problems[i].fixed = true;
    r_->repaired = true;
    HOOKFS_ASSIGN_OR_RETURN(Txn txn, s_->BeginWrite());
    HOOKFS_RETURN_IF_ERROR(ledger_txn::AppendJournal(
        t_, txn,
        {{"event", "repair"}, {"time", FormatTime(NowMs() / 1000)}, {"uid", Actor::Current().uid},
         {"quarantined", r_->quarantined}, {"unquarantined", r_->unquarantined},
         {"damaged_releases", r_->damaged_releases}, {"marked_whole", r_->marked_whole}}));
    return txn.Commit().Context("repair");
  }

  Store* s_;
  const Tables& t_;
  const FsckOptions& o_;
  FsckReport* r_;
  uint64_t total_bytes_ = 0, trees_done_ = 0;
  std::unordered_map<std::string, size_t> bad_;  // quarantine key -> problem index
  std::unordered_map<std::string, std::vector<std::pair<std::string, uint32_t>>> bad_releases_;
  std::unordered_map<ObjectId, TreeMemo> memo_;
  std::unordered_set<ObjectId> flagged_;
  std::vector<std::string> extra_chunks_;  // exact chunk keys
  std::vector<ObjectId> orphan_chunks_;
  std::vector<std::string> stale_quarantine_;
  std::set<std::string> hooks_;
  std::vector<std::string> bad_times_;  // times keys repair deletes
  std::map<std::pair<std::string, uint32_t>, ObjectId> release_digests_;
  std::set<std::pair<std::string, uint32_t>> pruned_;  // retention's, not damage
  std::unordered_map<std::string, uint32_t> first_digest_;
  std::map<std::pair<std::string, std::string>, uint32_t> pointers_;
  std::vector<ReleaseRow> rows_;
  std::vector<size_t> fixable_;
  bool digests_bad_ = false, abandoned_ = false;
};

}  // namespace

Result<FsckReport> Fsck(Store* store, const FsckOptions& options) {
  if (options.repair && !store->exclusive())
    return Status::InvalidArgument("fsck --repair needs the store opened exclusively (StoreOptions::exclusive)");
  FsckReport report;
  Checker c(store, options, &report);
  HOOKFS_RETURN_IF_ERROR(c.Run());
  return report;
}

}  // namespace hookfs
