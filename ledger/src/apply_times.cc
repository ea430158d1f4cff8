#include "apply_times.h"

#include "hookfs/signature.h"

namespace hookfs::apply_times {

Status Collector::Add(const TimesRecord& rec) {
  Key key{rec.hook, rec.root};
  if (entries_.count(key))
    return Status::Malformed("two times records for release " + rec.hook + " " + rec.root.Hex());
  bytes_ += rec.mtimes.size();
  if (bytes_ > kMaxPackTimesBytes)
    return Status::Malformed("the pack's times records exceed " + std::to_string(kMaxPackTimesBytes >> 20) +
                             " MiB in all");
  Entry& e = entries_[key];
  e.count = rec.count;
  e.mtimes = std::string(rec.mtimes);
  // Now: Decide drops the raw times once encoded, and signatures are judged
  // again at commit.
  e.signed_digest = TimesDigest(rec.hook, rec.root, rec.count, rec.mtimes);
  return Status::OK();
}

Status Collector::CheckMatched(const std::vector<ReleaseRecord>& releases) const {
  for (const auto& [key, e] : entries_) {
    bool found = false;
    for (const ReleaseRecord& r : releases)
      if (r.hook == key.first && r.root == key.second) {
        found = true;
        break;
      }
    if (!found)
      return Status::Malformed("times record for " + key.first + " " + key.second.Hex() +
                               " matches no release record of the pack");
  }
  return Status::OK();
}

Result<std::string> Collector::Decide(PathCounter* counter, const ReleaseRecord& release) {
  auto it = entries_.find(Key{release.hook, release.root});
  if (it == entries_.end()) return std::string();
  Entry& e = it->second;
  if (!e.value.empty()) return std::string();  // an earlier record of the same release
  HOOKFS_ASSIGN_OR_RETURN(uint64_t paths, counter->Paths(release.root));
  if (paths != e.count)
    return "times record lists " + std::to_string(e.count) + " times; the release has " +
           (paths > kMaxTimesPerRelease ? "more than " + std::to_string(kMaxTimesPerRelease) : std::to_string(paths)) +
           " files and symlinks";
  TimesRecord rec;
  rec.hook = release.hook;
  rec.root = release.root;
  rec.count = e.count;
  rec.mtimes = e.mtimes;
  HOOKFS_ASSIGN_OR_RETURN(e.value, EncodeReleaseTimes(counter, release.root, rec));
  e.mtimes.clear();
  e.mtimes.shrink_to_fit();
  return std::string();
}

Status Collector::Write(const Tables& t, lmdb::Txn& txn, const ReleaseRecord& release, uint32_t version) const {
  auto it = entries_.find(Key{release.hook, release.root});
  if (it == entries_.end() || it->second.value.empty()) return Status::OK();
  return PutReleaseTimes(t, txn, release.hook, version, it->second.value);
}

ObjectId Collector::SignedDigest(const ReleaseRecord& release) const {
  auto it = entries_.find(Key(release.hook, release.root));
  if (it == entries_.end()) return TimesDigest(release.hook, release.root, 0, {});
  return it->second.signed_digest;
}

}  // namespace hookfs::apply_times
