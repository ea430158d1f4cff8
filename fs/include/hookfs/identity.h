// Identities of the namespace as value types, validated at construction (in
// the spirit of EdenFS eden/fs/model): a HookName, TagName or RunName that
// exists is well formed, so code that holds one never re-checks it, and a
// ReleaseRef is a hook plus a version, never an ad-hoc "hook/N" string.
// A default-constructed name is empty and means "none" (nodes outside a hook).
#pragma once

#include <compare>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "hookfs/ledger.h"
#include "hookfs/status.h"
#include "hookfs/tree.h"

namespace hookfs::fs {

template <Status (*Validate)(std::string_view)>
class ValidatedName {
 public:
  ValidatedName() = default;
  static Result<ValidatedName> Make(std::string_view s) {
    HOOKFS_RETURN_IF_ERROR(Validate(s));
    ValidatedName n;
    n.s_ = std::string(s);
    return n;
  }
  const std::string& str() const { return s_; }
  bool empty() const { return s_.empty(); }
  auto operator<=>(const ValidatedName&) const = default;

 private:
  std::string s_;
};

using HookName = ValidatedName<ValidateHookName>;
using TagName = ValidatedName<ValidateTagName>;
using RunName = ValidatedName<ValidateRunName>;

// A version: decimal, no leading zero, 1..2^32-1.
std::optional<uint32_t> ParseVersion(std::string_view s);

// One release of one hook.
struct ReleaseRef {
  HookName hook;
  uint32_t version = 0;

  // A pointer's symlink text: `prefix` + "releases/N" (live: "", a tag: "../",
  // a run's release: "../../"). InvalidArgument if it is anything else.
  static Result<ReleaseRef> FromTarget(const HookName& hook, std::string_view target,
                                       std::string_view prefix);
  std::string Target(std::string_view prefix) const {
    return std::string(prefix) + "releases/" + std::to_string(version);
  }
  std::string ToString() const { return hook.str() + " release " + std::to_string(version); }
  auto operator<=>(const ReleaseRef&) const = default;
};

}  // namespace hookfs::fs
