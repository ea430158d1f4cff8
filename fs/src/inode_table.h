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

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>
#include <utility>

#include "hookfs/namespace.h"

namespace hookfs::fs {

class InodeTable {
 public:
  InodeTable();

  // The node for `ino`, or nullptr if the kernel already forgot it.
  NodePtr Get(Ino ino) const;

  // Binds `node` under (node.parent, node.name): reuses the existing ino if it
  // shows the same thing, else makes a new one. Adds one lookup.
  std::pair<Ino, NodePtr> Bind(Node node);

  // Drops `n` lookups; the node goes at zero (the root never).
  void Forget(Ino ino, uint64_t n);

  // The ino currently bound under (parent, name), 0 if none.
  Ino Find(Ino parent, const std::string& name) const;

  size_t size() const;

  // Pointer nodes (live, tags) still bound under their name.
  std::vector<std::pair<Ino, NodePtr>> Pointers() const;
  // Unbinds the name of `ino` (if it still names `ino`): the next lookup of
  // that name makes a new node. The node itself lives until forgotten.
  void Unname(Ino ino);

 private:
  struct Slot {
    NodePtr node;
    uint64_t nlookup = 0;
  };
  // Leaf lock: nothing is acquired while it is held.
  mutable std::mutex mu_;
  std::unordered_map<Ino, Slot> nodes_;
  std::map<std::pair<Ino, std::string>, Ino> names_;
  std::unordered_set<Ino> pointers_;  // live and tag nodes bound by name
  Ino next_ = kRootIno + 1;
};

}  // namespace hookfs::fs
