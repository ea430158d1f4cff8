// Trees: the canonical directory listing that names a directory's content.
//
// Encoding (docs/pack-format.md §4), all integers little-endian:
//   u32 entry_count, then entries in strictly ascending memcmp order of name:
//   u8 type | u8 name_len | name | payload
//     type 1 file (0644), 2 executable (0755): 32-byte blob id, u64 size
//     type 3 symlink: u16 target_len | target bytes
//     type 4 directory: 32-byte tree id
// A tree's id is the SHA-256 of exactly these bytes, so equal directories
// have equal ids and an id fixes every byte below it. DecodeTree accepts only
// the canonical form: anything else (unsorted, duplicate, bad name, trailing
// bytes) is Malformed, so one listing never has two ids.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "hookfs/object_id.h"
#include "hookfs/status.h"

namespace hookfs {

enum class EntryType : uint8_t {
  kFile = 1,
  kExecutable = 2,
  kSymlink = 3,
  kDirectory = 4,
};

struct Limits {
  static constexpr size_t kMaxNameBytes = 255;         // NAME_MAX
  static constexpr size_t kMaxSymlinkTarget = 4095;    // PATH_MAX - 1
  static constexpr size_t kMaxTreeEntries = 100000;
  static constexpr size_t kMaxTreeBytes = 16u << 20;   // encoded size
  static constexpr size_t kMaxDepth = 64;              // directories below a root
  static constexpr uint64_t kMaxBlobSize = 1ull << 40; // 1 TiB
  static constexpr size_t kMaxHookName = 64;
  static constexpr size_t kMaxFeature = 64;
  static constexpr size_t kMaxSourceRef = 1024;
  static constexpr size_t kMaxMessage = 4096;
  static constexpr size_t kMaxRecordsPerPack = 4u << 20;  // bounds apply's index
  static constexpr size_t kMaxReleasesPerPack = 4096;
};

struct TreeEntry {
  std::string name;
  EntryType type = EntryType::kFile;
  ObjectId id;          // blob id (file, executable) or tree id (directory)
  uint64_t size = 0;    // file size; 0 for directories and symlinks
  std::string target;   // symlink target

  bool IsDir() const { return type == EntryType::kDirectory; }
  bool IsFile() const { return type == EntryType::kFile || type == EntryType::kExecutable; }
  bool IsSymlink() const { return type == EntryType::kSymlink; }
};

struct Tree {
  std::vector<TreeEntry> entries;  // sorted by name (memcmp)

  // Binary search; nullptr when absent.
  const TreeEntry* Find(std::string_view name) const;
};

// A directory-entry name: 1..255 bytes, no '/', no NUL, not "." or "..".
Status ValidateEntryName(std::string_view name);
// A hook name: [a-z0-9][a-z0-9._-]{0,63}.
Status ValidateHookName(std::string_view name);
// A feature: empty, or [A-Za-z0-9][A-Za-z0-9._:/+-]{0,63}.
Status ValidateFeature(std::string_view feature);

// Sorts entries, then encodes; fails on a bad or duplicate name.
Result<std::string> EncodeTree(Tree tree);
// Parses and validates the canonical form.
Result<Tree> DecodeTree(std::string_view bytes);

}  // namespace hookfs
