// Packer: turns a directory into a pack (hookctl pack).
//
// Walks DIR without following symlinks, hashes every file (in parallel),
// builds canonical trees bottom-up, and writes one hook declaration, the
// blobs and trees the target store lacks (all of them unless `has` is set),
// one release record and its times record (each file's and symlink's
// mtime). Output is deterministic for a given directory (with its mtimes)
// and options: blobs in first-seen depth-first order, trees children first.
#pragma once

#include <cstdint>
#include <functional>
#include <string>

#include "hookfs/object_id.h"
#include "hookfs/pack.h"
#include "hookfs/signature.h"
#include "hookfs/status.h"

namespace hookfs {

struct PackOptions {
  std::string hook;
  std::string feature;
  std::string source_ref;
  std::string message;
  bool no_advance = false;
  int64_t created_at = 0;
  // Record each file's and symlink's mtime (a times record, pack format
  // version 2). Off: a version-1 pack; the files show the commit time.
  bool mtimes = true;
  // For a thin pack: true if the target store already has this object.
  std::function<bool(const ObjectId& id, bool is_tree)> has;
  unsigned threads = 0;   // 0: one per core
  // Remember file ids by inode and timestamps (hash_cache.h); empty: off.
  std::string hash_cache_dir;
  int64_t hash_cache_settle_ns = 2'000'000'000;
  bool progress = false;  // a progress line on stderr
  // --sign: sign the release with this key (a version-2 pack); null: unsigned (version 1).
  const SigningKey* signer = nullptr;
};

struct PackStats {
  ObjectId digest;
  uint64_t files = 0, bytes = 0;
  uint64_t blobs_written = 0, blobs_omitted = 0;
  uint64_t trees_written = 0, trees_omitted = 0;
  uint64_t pack_bytes = 0;
  uint64_t files_hashed = 0;  // the rest came from the hash cache
  bool times = false;         // the pack carries the files' mtimes
};

Result<PackStats> BuildPack(const std::string& dir, const PackOptions& options, ByteSink* out);

// `has` for --against MNT: asks the mount by stat of MNT/objects/{blobs,trees}/HEX.
std::function<bool(const ObjectId&, bool)> MountHas(const std::string& mountpoint);

}  // namespace hookfs
