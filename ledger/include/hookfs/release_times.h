// Release times: the modification time each file and symlink of a release
// had when it was packed (DESIGN.md §2). Release metadata, never identity:
// they are not in any digest, and a duplicate keeps the first release's.
//
// One value per release in the `times` table (no per-file records), keyed
// like the releases table (name \0 u32be version), little-endian:
//   u8  format = 1
//   u64 count                     = paths(root)
//   u32 tree_count
//   tree_count x (id[32] u64 paths)   every tree the release reaches whose
//                                     paths > 0, ascending id (memcmp)
//   count x i64 mtime             the pack's times record, unchanged
// paths(T) counts the files, executables and symlinks below tree T, once per
// path. mtime[i] belongs to the i-th of them in a depth-first walk visiting
// each tree's entries in order (docs/pack-format.md §6a). The tree table
// lets a reader find any entry's index from its directory's index without
// walking the release. The mtimes are kept exactly as packed, so the times
// record a signature covers (DESIGN.md §8) can be rebuilt from the store.
// A release without a value shows its commit time on every file.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>

#include "hookfs/object_id.h"
#include "hookfs/pack.h"
#include "hookfs/status.h"
#include "hookfs/store.h"
#include "hookfs/tree.h"

namespace hookfs {

inline constexpr uint8_t kReleaseTimesFormat = 1;

// A tree by id: a pointer to the pack's decoded copy, or `scratch` filled
// from the store. NotFound when neither has it.
using TreeSource = std::function<Result<const Tree*>(const ObjectId& id, Tree* scratch)>;

// paths(T) for trees, memoized (shared subtrees are counted once per tree,
// used once per path). Saturates above kMaxTimesPerRelease: such a release
// cannot carry times.
class PathCounter {
 public:
  explicit PathCounter(TreeSource source) : source_(std::move(source)) {}
  Result<uint64_t> Paths(const ObjectId& tree);
  const TreeSource& source() const { return source_; }

 private:
  Result<uint64_t> Count(const ObjectId& id, size_t depth);
  TreeSource source_;
  std::unordered_map<ObjectId, uint64_t> memo_;
};

// The stored value for release `root` with the pack's times `rec`. The
// caller has checked rec.count == Paths(root).
Result<std::string> EncodeReleaseTimes(PathCounter* counter, const ObjectId& root, const TimesRecord& rec);

// Why `value` is not the right value for a release with root `root` (empty
// when it is): format, count, tree table all checked against the trees.
Result<std::string> CheckReleaseTimes(PathCounter* counter, const ObjectId& root, std::string_view value);

// A stored value, read in place: views into `value`, which must outlive it.
class ReleaseTimes {
 public:
  static Result<ReleaseTimes> Parse(std::string_view value);
  // nullopt when the release has no times. Views into the read txn's map.
  static Result<std::optional<ReleaseTimes>> Load(const Tables& t, const lmdb::Txn& txn, std::string_view hook,
                                                  uint32_t version);

  uint64_t count() const { return count_; }
  int64_t Mtime(uint64_t index) const;  // index < count()
  uint64_t Paths(const ObjectId& tree) const;  // 0 for a tree not listed
  // How many walk indexes an entry takes: 1 for a file or symlink, paths()
  // of a directory's tree.
  uint64_t Span(const TreeEntry& e) const { return e.IsDir() ? Paths(e.id) : 1; }
  // The mtimes as the pack's times record held them (count * 8 bytes).
  std::string_view raw_mtimes() const { return mtimes_; }

 private:
  uint64_t count_ = 0;
  std::string_view trees_;   // tree_count * 40 bytes
  std::string_view mtimes_;  // count * 8 bytes
};

Status PutReleaseTimes(const Tables& t, lmdb::Txn& txn, std::string_view hook, uint32_t version,
                       std::string_view value);

}  // namespace hookfs
