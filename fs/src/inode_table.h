// The inode table: every path of the mounted tree gets its own inode number.
//
// A Node is an immutable description of one path (what it is, which hook,
// release, object or pointer target it shows). The table maps ino -> node and
// (parent ino, name) -> ino. Inode numbers come from a 64-bit counter and are
// never reused, so generation is always 0. A node lives while the kernel holds
// a lookup count on it (lookup, create, mkdir, symlink, readdirplus each add
// one; forget subtracts): memory follows the kernel's inode cache, not the
// store's size.
//
// A (parent, name) whose meaning changes (live after a move, a tag, a result
// file published again) gets a *new* node and ino when next looked up; the
// old node stays until the kernel forgets it, so a reader holding it open
// keeps what it opened.
#pragma once

#define FUSE_USE_VERSION 312
#include <fuse_lowlevel.h>

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <utility>

#include "hookfs/object_id.h"
#include "hookfs/tree.h"

namespace hookfs::fs {

enum class Kind : uint8_t {
  kRoot,
  kHooksDir,     // hooks/
  kHookDir,      // hooks/NAME/
  kHookJson,     // hooks/NAME/hook.json
  kLive,         // hooks/NAME/live               (symlink, version = target)
  kHistory,      // hooks/NAME/history
  kReleasesDir,  // hooks/NAME/releases/
  kReleaseRoot,  // hooks/NAME/releases/N/        (tree dir, version = N)
  kReleaseJson,  // hooks/NAME/releases/N.json
  kTreeDir,      // a directory inside a release or objects/trees/SHA
  kTreeFile,     // a file inside a tree (etype file or executable)
  kTreeSymlink,  // a symlink inside a tree
  kTagsDir,      // hooks/NAME/tags/
  kTag,          // hooks/NAME/tags/T             (symlink, version = target)
  kPending,      // a temporary symlink (ln -sfn) waiting for its rename
  kRunsDir,      // hooks/NAME/runs/
  kRunDir,       // hooks/NAME/runs/RUN/
  kRunJson,      // hooks/NAME/runs/RUN/run.json
  kRunRelease,   // hooks/NAME/runs/RUN/release   (symlink, version = pinned)
  kRunResult,    // hooks/NAME/runs/RUN/result
  kIncomingDir,  // incoming/
  kSpool,        // incoming/NAME being written
  kResult,       // incoming/NAME.result
  kObjectsDir,   // objects/
  kBlobsDir,     // objects/blobs/
  kTreesDir,     // objects/trees/
  kBlob,         // objects/blobs/SHA
  kObjTree,      // objects/trees/SHA/
  kJournal,      // journal
};

const char* KindName(Kind k);

struct Node {
  Kind kind = Kind::kRoot;
  fuse_ino_t parent = 0;
  std::string name;     // the entry name in parent
  std::string hook;     // hook-scoped nodes
  std::string aux;      // run name, tag name, symlink target, spool/result name
  uint32_t version = 0; // release version (tree nodes, release nodes, pointers)
  ObjectId id;          // tree or blob id
  uint64_t size = 0;    // file size
  EntryType etype = EntryType::kDirectory;
  int64_t mtime = 0;    // Unix seconds shown as mtime/ctime/atime
  uint64_t tindex = 0;  // release tree nodes: walk index (file_times.h)
  uint64_t serial = 0;  // distinguishes incarnations (spools, results, runs)

  bool IsDir() const;
  bool IsSymlink() const;
  // Whether `other` shows the same thing (then a lookup may reuse this ino).
  bool SameAs(const Node& other) const;
};

using NodePtr = std::shared_ptr<const Node>;

class InodeTable {
 public:
  InodeTable();

  // The node for `ino`, or nullptr if the kernel already forgot it.
  NodePtr Get(fuse_ino_t ino) const;

  // Binds `node` under (node.parent, node.name): reuses the existing ino if it
  // shows the same thing, else makes a new one. Adds one lookup.
  std::pair<fuse_ino_t, NodePtr> Bind(Node node);

  // Drops `n` lookups; the node goes at zero (the root never).
  void Forget(fuse_ino_t ino, uint64_t n);

  // The ino currently bound under (parent, name), 0 if none.
  fuse_ino_t Find(fuse_ino_t parent, const std::string& name) const;

  size_t size() const;

 private:
  struct Slot {
    NodePtr node;
    uint64_t nlookup = 0;
  };
  mutable std::mutex mu_;
  std::unordered_map<fuse_ino_t, Slot> nodes_;
  std::map<std::pair<fuse_ino_t, std::string>, fuse_ino_t> names_;
  fuse_ino_t next_ = FUSE_ROOT_ID + 1;
};

}  // namespace hookfs::fs
