// Helpers for the unit tests: temp dirs, hand-built packs, table counts.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "hookfs/ledger.h"
#include "hookfs/pack.h"
#include "hookfs/store.h"
#include "hookfs/tree.h"

namespace hookfs::test {

// A fresh directory under $TMPDIR, removed with everything in it.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }
  std::string operator/(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

void WriteFile(const std::string& path, std::string_view content, int mode = 0644);
// n deterministic bytes that differ with `seed`.
std::string Big(size_t n, char seed);
std::string ReadFile(const std::string& path);

TreeEntry File(std::string name, std::string_view content, bool exec = false);
TreeEntry Dir(std::string name, const ObjectId& tree);
TreeEntry Link(std::string name, std::string target);

// A pack assembled record by record, so tests can lie in it on purpose.
struct PackSpec {
  std::vector<HookDecl> hooks;
  std::vector<std::pair<ObjectId, std::string>> blobs;  // declared id, content
  std::vector<std::pair<ObjectId, std::string>> trees;  // declared id, encoding
  std::vector<ReleaseRecord> releases;
  struct Times {
    std::string hook;
    ObjectId root;
    std::vector<int64_t> mtimes;
  };
  std::vector<Times> times;  // any: a version-2 pack
  // Encoded signature records (signature.h), written after the releases;
  // any makes the pack version 2.
  std::vector<std::string> signatures;

  // Adds a correctly named blob; returns its id.
  ObjectId Blob(std::string_view content);
  // Adds a correctly named tree from entries; returns its id.
  ObjectId AddTree(std::vector<TreeEntry> entries);
  void Release(const std::string& hook, const ObjectId& root, bool no_advance = false);
  std::string Bytes() const;
  // Writes Bytes() to `path`, returns path.
  std::string WriteTo(const std::string& path) const;
};

ReleaseRecord MakeRelease(const std::string& hook, const ObjectId& root);

struct Counts {
  size_t blobs = 0, chunks = 0, trees = 0, hooks = 0, releases = 0, pointers = 0, history = 0, runs = 0,
         pending = 0, journal = 0;
  bool operator==(const Counts&) const = default;
};
Counts Count(const Store& store);
std::string ToString(const Counts& c);

// Damage behind the store's back (integrity tests): flips one byte of chunk
// `index` of blob `id`, or of a stored tree's canonical bytes (not its checksum).
void FlipChunkByte(Store* store, const ObjectId& blob, uint32_t index, size_t offset);
void FlipTreeByte(Store* store, const ObjectId& tree, size_t offset);

// Opens (creating) a store in `dir`.
std::unique_ptr<Store> OpenStore(const std::string& dir, StoreOptions opts = {});

}  // namespace hookfs::test
