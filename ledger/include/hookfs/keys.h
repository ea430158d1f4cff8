// Trusted signing keys and pinned hooks (DESIGN.md §8; docs/keys.md).
//
// Tables (store.h):
//   keys         name        -> JSON KeyInfo
//   key_history  u64be seq   -> JSON {seq, time, uid, action, key, key_id, hooks}
// A key is trusted for the hooks its fnmatch(3) patterns name. Adding,
// replacing and removing a key each write the key record, a key_history line
// and a journal line in one txn. Adding a key pins (HookInfo::pinned) every
// existing hook it covers in the same txn; apply pins a hook it creates
// under a covering key. Pinned is forever: removing a key never unpins.
//
// Pattern rule (a bad one is InvalidArgument): 1..255 bytes of hook-name
// characters [a-z0-9._-] and `*`, `?`, and bracket expressions `[...]` whose
// members are hook-name characters (ranges with `-`), optionally negated by
// `!` right after `[`; an empty or unterminated bracket is bad; `^`, `\`,
// `/` and every other byte are bad. Key names follow the hook-name rule.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "hookfs/ledger.h"
#include "hookfs/signature.h"
#include "hookfs/status.h"
#include "hookfs/store.h"

namespace hookfs {

inline constexpr size_t kMaxKeyDocument = 64 * 1024;
inline constexpr size_t kMaxKeyPatterns = 256;
inline constexpr size_t kMaxPatternBytes = 255;

struct KeyInfo {
  std::string name;
  PublicKey public_key;
  std::string key_id;  // lowercase hex SHA-256 of the raw key
  std::vector<std::string> hooks;  // fnmatch(3) patterns
  int64_t added_at = 0;
  uint32_t added_by = 0;
  bool Covers(std::string_view hook) const;  // some pattern matches
};

// What `cat MNT/keys/NAME` shows: name, public_key (PEM), key_id, hooks,
// added_at, added_by.
nlohmann::json ToJson(const KeyInfo& k);

Status ValidateKeyName(std::string_view name);
Status ValidateHookPattern(std::string_view pattern);
bool PatternMatches(std::string_view pattern, std::string_view hook);

// Parses a key document as written to MNT/keys/NAME: {"public_key": PEM,
// "hooks": [patterns]}; `name`, `key_id`, `added_at`, `added_by` may be
// present (a copy of what `cat` shows) and are ignored, except that a
// key_id must match the key. Any other member, a key that is not Ed25519,
// or a bad pattern is InvalidArgument.
Result<KeyInfo> ParseKeyDocument(std::string_view name, std::string_view text);

class KeyRing {
 public:
  explicit KeyRing(Store* store) : store_(store) {}

  // Trusts (or replaces) key `name`. InvalidArgument for a malformed
  // document or when the same key is already trusted under another name.
  Result<KeyInfo> Add(std::string_view name, std::string_view document, const Actor& who);
  // Revokes it: NotFound if there is no such key.
  Status Remove(std::string_view name, const Actor& who);
  Result<KeyInfo> Get(std::string_view name) const;
  Result<std::vector<KeyInfo>> List() const;
  Result<std::vector<nlohmann::json>> History() const;

 private:
  Store* store_;
};

namespace keys_txn {
Result<std::vector<KeyInfo>> LoadAll(const Tables& t, const lmdb::Txn& txn);
// Pinned: the hook's record says so, or a key in `keys` covers it, or
// `require_signed`. `hook` may be nullopt (a hook the pack creates).
bool Pinned(const std::optional<HookInfo>& hook, std::string_view name, const std::vector<KeyInfo>& keys,
            bool require_signed);
}  // namespace keys_txn

}  // namespace hookfs
