// `hookctl pack --against MNT`: ask a mounted hookfs which objects it has, so
// that a pack can leave them out (a thin pack). Header-only and free of FUSE,
// so tools link nothing more than this include path (target hookfs_against).
//
// The mount answers a lookup of MNT/objects/blobs/HEX or MNT/objects/trees/HEX
// with the object if and only if the store holds it complete (a blob record
// exists only for a fully verified blob). Negative lookups there are never
// cached by the kernel, so a blob published a moment ago is seen at once.
#pragma once

#include <sys/stat.h>

#include <functional>
#include <memory>
#include <string>

#include "hookfs/object_id.h"

namespace hookfs {

// Returns a predicate that stats MNT/objects/{blobs,trees}/HEX. If MNT is not
// a hookfs mount (no MNT/objects/blobs directory), the predicate says false for
// everything, which makes the pack complete rather than wrong.
inline std::function<bool(const ObjectId&, bool is_tree)> MountHas(const std::string& mnt) {
  std::string base = mnt;
  while (base.size() > 1 && base.back() == '/') base.pop_back();
  base += "/objects/";
  struct stat st{};
  bool usable = ::stat((base + "blobs").c_str(), &st) == 0 && S_ISDIR(st.st_mode) &&
                ::stat((base + "trees").c_str(), &st) == 0 && S_ISDIR(st.st_mode);
  return [base, usable](const ObjectId& id, bool is_tree) {
    if (!usable) return false;
    std::string path = base + (is_tree ? "trees/" : "blobs/") + id.Hex();
    struct stat s{};
    if (::stat(path.c_str(), &s) != 0) return false;
    return is_tree ? S_ISDIR(s.st_mode) : S_ISREG(s.st_mode);
  };
}

}  // namespace hookfs
