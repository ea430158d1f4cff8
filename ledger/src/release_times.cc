#include "hookfs/release_times.h"

#include <algorithm>
#include <cstring>
#include <unordered_set>
#include <utility>
#include <vector>

#include "hookfs/ledger.h"

namespace hookfs {

namespace {

constexpr size_t kHeader = 1 + 8 + 4;
constexpr size_t kTreeRow = ObjectId::kSize + 8;
constexpr uint64_t kSaturated = kMaxTimesPerRelease + 1;

uint64_t GetLE(const char* p, int n) {
  uint64_t v = 0;
  for (int i = n - 1; i >= 0; --i) v = v << 8 | uint8_t(p[i]);
  return v;
}
void PutLE(std::string* s, uint64_t v, int n) {
  for (int i = 0; i < n; ++i) s->push_back(char(uint8_t(v >> (8 * i))));
}

// Every tree the release reaches with paths > 0, ascending id.
Status ListTrees(PathCounter* counter, const ObjectId& root, std::vector<std::pair<ObjectId, uint64_t>>* out) {
  std::unordered_set<ObjectId> seen;
  std::vector<ObjectId> stack{root};
  seen.insert(root);
  while (!stack.empty()) {
    ObjectId id = stack.back();
    stack.pop_back();
    HOOKFS_ASSIGN_OR_RETURN(uint64_t paths, counter->Paths(id));
    if (paths == 0) continue;  // nothing below needs a time
    out->emplace_back(id, paths);
    Tree scratch;
    HOOKFS_ASSIGN_OR_RETURN(const Tree* tree, counter->source()(id, &scratch));
    for (const TreeEntry& e : tree->entries)
      if (e.IsDir() && seen.insert(e.id).second) stack.push_back(e.id);
  }
  std::sort(out->begin(), out->end());  // ObjectId orders as memcmp does
  return Status::OK();
}

}  // namespace

Result<uint64_t> PathCounter::Paths(const ObjectId& tree) { return Count(tree, 0); }

Result<uint64_t> PathCounter::Count(const ObjectId& id, size_t depth) {
  if (auto it = memo_.find(id); it != memo_.end()) return it->second;
  if (depth > Limits::kMaxDepth) return Status::Corruption("tree " + id.Hex() + " nested deeper than the limit");
  Tree scratch;
  HOOKFS_ASSIGN_OR_RETURN(const Tree* tree, source_(id, &scratch));
  // Copy the entries we recurse into: `tree` may point into scratch only.
  uint64_t n = 0;
  std::vector<ObjectId> dirs;
  for (const TreeEntry& e : tree->entries) {
    if (e.IsDir()) dirs.push_back(e.id);
    else ++n;
  }
  for (const ObjectId& d : dirs) {
    HOOKFS_ASSIGN_OR_RETURN(uint64_t below, Count(d, depth + 1));
    n = std::min(kSaturated, n + below);
  }
  n = std::min(kSaturated, n);
  memo_[id] = n;
  return n;
}

Result<std::string> EncodeReleaseTimes(PathCounter* counter, const ObjectId& root, const TimesRecord& rec) {
  std::vector<std::pair<ObjectId, uint64_t>> trees;
  HOOKFS_RETURN_IF_ERROR(ListTrees(counter, root, &trees));
  std::string v;
  v.reserve(kHeader + trees.size() * kTreeRow + rec.mtimes.size());
  v.push_back(char(kReleaseTimesFormat));
  PutLE(&v, rec.count, 8);
  PutLE(&v, trees.size(), 4);
  for (const auto& [id, paths] : trees) {
    v.append(id.AsKey());
    PutLE(&v, paths, 8);
  }
  v.append(rec.mtimes);
  return v;
}

Result<std::string> CheckReleaseTimes(PathCounter* counter, const ObjectId& root, std::string_view value) {
  auto parsed = ReleaseTimes::Parse(value);
  if (!parsed.ok()) return parsed.status().message();
  HOOKFS_ASSIGN_OR_RETURN(uint64_t paths, counter->Paths(root));
  if (parsed->count() != paths)
    return "lists " + std::to_string(parsed->count()) + " times; the release has " + std::to_string(paths) +
           " files and symlinks";
  TimesRecord rec;
  rec.count = uint32_t(parsed->count());
  rec.mtimes = parsed->raw_mtimes();
  HOOKFS_ASSIGN_OR_RETURN(std::string want, EncodeReleaseTimes(counter, root, rec));
  if (want != value) return std::string("tree table does not match the release's trees");
  return std::string();
}

Result<ReleaseTimes> ReleaseTimes::Parse(std::string_view v) {
  if (v.size() < kHeader || uint8_t(v[0]) != kReleaseTimesFormat)
    return Status::Corruption("times record of unknown format");
  ReleaseTimes t;
  t.count_ = GetLE(v.data() + 1, 8);
  uint64_t trees = GetLE(v.data() + 9, 4);
  if (t.count_ > kMaxTimesPerRelease || v.size() != kHeader + trees * kTreeRow + t.count_ * 8)
    return Status::Corruption("times record has the wrong length");
  t.trees_ = v.substr(kHeader, trees * kTreeRow);
  t.mtimes_ = v.substr(kHeader + trees * kTreeRow);
  return t;
}

Result<std::optional<ReleaseTimes>> ReleaseTimes::Load(const Tables& t, const lmdb::Txn& txn, std::string_view hook,
                                                       uint32_t version) {
  auto v = txn.Get(t.times, ledger_txn::ReleaseKey(hook, version));
  if (!v.ok()) {
    if (v.status().Is(Code::kNotFound)) return std::optional<ReleaseTimes>();
    return v.status();
  }
  auto parsed = Parse(*v);
  if (!parsed.ok()) return parsed.status().Context(std::string(hook) + "/" + std::to_string(version));
  return std::optional<ReleaseTimes>(*parsed);
}

int64_t ReleaseTimes::Mtime(uint64_t index) const { return int64_t(GetLE(mtimes_.data() + 8 * index, 8)); }

uint64_t ReleaseTimes::Paths(const ObjectId& tree) const {
  size_t lo = 0, hi = trees_.size() / kTreeRow;
  const std::string_view key = tree.AsKey();
  while (lo < hi) {
    size_t mid = (lo + hi) / 2;
    int c = std::memcmp(trees_.data() + mid * kTreeRow, key.data(), ObjectId::kSize);
    if (c == 0) return GetLE(trees_.data() + mid * kTreeRow + ObjectId::kSize, 8);
    if (c < 0) lo = mid + 1;
    else hi = mid;
  }
  return 0;
}

Status PutReleaseTimes(const Tables& t, lmdb::Txn& txn, std::string_view hook, uint32_t version,
                       std::string_view value) {
  return txn.Put(t.times, ledger_txn::ReleaseKey(hook, version), value);
}

}  // namespace hookfs
