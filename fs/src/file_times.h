// The times the mount shows inside a release (DESIGN.md §2): each file and
// symlink its mtime when packed (release_times.h), each directory the
// release's commit time. FUSE-free: the caller puts the result in its node.
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>

#include "hookfs/release_times.h"
#include "hookfs/status.h"
#include "hookfs/store.h"
#include "hookfs/tree.h"

namespace hookfs::fs {

class EntryTimes {
 public:
  // For the entries of the directory at walk index `dir_index` of release
  // hook/version (the release root is index 0). An empty hook or version 0
  // (objects/trees/), or a release packed without times, stamps nothing.
  // Valid while `view` is.
  static Result<EntryTimes> For(const ReadView& view, std::string_view hook, uint32_t version, uint64_t dir_index);

  struct Stamp {
    uint64_t index = 0;            // the entry's walk index (a directory's: its first)
    std::optional<int64_t> mtime;  // files and symlinks of a release with times
  };
  // Entry `i` of `tree` (the directory's tree). O(1) per entry when called
  // in ascending order, O(i) otherwise.
  Stamp At(const Tree& tree, size_t i);

 private:
  std::optional<ReleaseTimes> times_;
  uint64_t dir_index_ = 0;
  size_t next_ = 0;         // entry whose index is next_index_
  uint64_t next_index_ = 0;
};

}  // namespace hookfs::fs
