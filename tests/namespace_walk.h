// Path helpers for namespace tests: resolve a path from the root the way the
// kernel would (one Lookup, and so one lookup reference, per component).
#pragma once

#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "hookfs/namespace.h"

namespace hookfs::fs {

inline Result<Entry> WalkPath(Namespace& ns, const std::string& path) {
  Entry e;
  e.ino = kRootIno;
  e.node = ns.Get(kRootIno);
  size_t pos = 0;
  while (pos < path.size()) {
    size_t slash = path.find('/', pos);
    if (slash == std::string::npos) slash = path.size();
    HOOKFS_ASSIGN_OR_RETURN(e, ns.Lookup(e.ino, path.substr(pos, slash - pos)));
    pos = slash + 1;
  }
  return e;
}

// The names a directory lists; a failure is a test failure and an empty list.
inline std::vector<std::string> ListNames(Namespace& ns, const std::string& path) {
  auto e = WalkPath(ns, path);
  EXPECT_TRUE(e.ok()) << e.status().ToString();
  if (!e.ok()) return {};
  auto c = ns.Children(e->ino, *e->node);
  EXPECT_TRUE(c.ok()) << c.status().ToString();
  std::vector<std::string> out;
  if (c.ok()) {
    for (const Node& n : *c) out.push_back(n.name);
  }
  return out;
}

}  // namespace hookfs::fs
