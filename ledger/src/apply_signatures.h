// Apply's signature check (DESIGN.md §8), kept apart from the streaming code.
//
// The pack's signature records are collected as they pass (a body that does
// not decode, or of another algorithm, counts as no signature). For each
// release of a pinned hook, Judge() accepts it only if one of its signatures
// is by a trusted key whose patterns cover the hook and verifies over
// SignedMessage(); otherwise it names the key problem. Apply judges in the
// decide phase (read snapshot) and again in the commit txn, with the keys
// as they are then, so a key revoked or added meanwhile is honoured.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "hookfs/keys.h"
#include "hookfs/ledger.h"
#include "hookfs/pack.h"
#include "hookfs/signature.h"

namespace hookfs::apply_sig {

struct Verdict {
  bool ok = false;
  std::string reason;                  // when !ok
  std::optional<SignedBy> signed_by;   // when ok and the hook is pinned
};

class Collector {
 public:
  void Add(std::string_view body);
  Verdict Judge(const std::vector<KeyInfo>& keys, bool pinned, const ReleaseRecord& r, std::string_view feature,
                const ObjectId& times_sha256) const;

 private:
  // hook \0 root -> the records naming that release
  std::unordered_map<std::string, std::vector<SignatureRecord>> by_release_;
  size_t undecodable_ = 0;
};

// In the commit txn: marks `hook` pinned if a trusted key covers it now.
Status PinIfCovered(const Tables& t, lmdb::Txn& txn, std::string_view hook, const std::vector<KeyInfo>& keys);

}  // namespace hookfs::apply_sig
