// Apply's part of release times (release_times.h): collects the pack's times
// records, checks each against its release, and writes the accepted ones in
// the final commit txn. Kept apart from the streaming code of apply.cc.
#pragma once

#include <map>
#include <string>
#include <utility>
#include <vector>

#include "hookfs/pack.h"
#include "hookfs/release_times.h"
#include "hookfs/status.h"
#include "hookfs/store.h"

namespace hookfs::apply_times {

// Times records held for one pack. Memory is bounded by kMaxPackTimesBytes
// (a pack whose times records add up to more is malformed), not by the pack.
inline constexpr size_t kMaxPackTimesBytes = 64u << 20;

class Collector {
 public:
  // Phase 1: one times record (a second one for the same release, or too
  // many bytes in all, is Malformed).
  Status Add(const TimesRecord& rec);
  // After the scan: every times record must name a release record of the pack.
  Status CheckMatched(const std::vector<ReleaseRecord>& releases) const;
  // Phase 2, for a release that verified: empty if it has no times or they
  // fit its tree (the stored value is then ready), else why the release is
  // rejected.
  Result<std::string> Decide(PathCounter* counter, const ReleaseRecord& release);
  // What a release signature covers (signature.h, DESIGN.md §8): SHA-256 of
  // the release's times record body, or of an empty one without a record.
  ObjectId SignedDigest(const ReleaseRecord& release) const;
  // Phase 3, in the commit txn, for an accepted (not duplicate) release.
  Status Write(const Tables& t, lmdb::Txn& txn, const ReleaseRecord& release, uint32_t version) const;

 private:
  using Key = std::pair<std::string, ObjectId>;  // hook, declared root
  struct Entry {
    uint32_t count = 0;
    std::string mtimes;  // raw, as in the pack
    std::string value;   // the stored value, once decided
    ObjectId signed_digest;  // SignedDigest: SHA-256 of the record body
  };
  std::map<Key, Entry> entries_;
  size_t bytes_ = 0;
};

}  // namespace hookfs::apply_times
